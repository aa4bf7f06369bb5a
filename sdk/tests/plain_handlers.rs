//! Handlers that are plain `fn`s: the executor runs them at once, without a task. What a user
//! can see of that: they reply and send like `async` handlers, they wait for the state while an
//! `async` handler holds it across an await, and the tasks they wake run.

use std::cell::RefCell;

use bunraku_sdk::prelude::*;
use bunraku_sdk::testing::TestActor;
use futures::channel::oneshot;

/// Records `step` in the log; replies with the log's length.
#[derive(Serialize, Deserialize, Message)]
#[message(reply = usize)]
struct Step(String);

/// Answers with a `Step` to the sender, with `try_send`.
#[derive(Serialize, Deserialize, Message, Debug, PartialEq)]
struct Echo(u32);

/// Holds the state mutably while a send to `peer` waits for room.
#[derive(Serialize, Deserialize, Message)]
struct Hold;

/// Waits for a `Release`, then records it.
#[derive(Serialize, Deserialize, Message)]
struct Wait;

/// Completes what `Wait` waits for.
#[derive(Serialize, Deserialize, Message)]
struct Release;

/// Records what the handler sees of its envelope.
#[derive(Serialize, Deserialize, Message)]
struct Note(u32);

#[derive(Default)]
struct Plain {
    log: Vec<String>,
    release: RefCell<Option<oneshot::Sender<()>>>,
}

#[actor]
impl Plain {
    #[handler]
    fn step(&mut self, _ctx: &Ctx, Step(step): Step) -> usize {
        self.log.push(step);
        self.log.len()
    }

    #[handler]
    fn echo(&self, ctx: &Ctx, Echo(n): Echo) {
        let to = ctx.sender().unwrap_or_default();
        ctx.try_send(to, &Echo(n + 1)).expect("room for the echo");
    }

    #[handler]
    async fn hold(&mut self, ctx: &Ctx, _msg: Hold) {
        self.log.push("hold".into());
        ctx.send("peer", &Echo(0))
            .await
            .expect("sent once there is room");
        self.log.push("held".into());
    }

    #[handler]
    async fn wait(&self, _ctx: &Ctx, _msg: Wait) {
        let (tx, rx) = oneshot::channel();
        *self.release.borrow_mut() = Some(tx);
        // The state stays borrowed, shared: `release` takes `&self` too.
        rx.await.expect("released");
    }

    #[handler]
    fn note(&mut self, ctx: &Ctx, Note(n): Note) {
        let ext = ctx
            .ext("k")
            .map(|v| String::from_utf8_lossy(v).into_owned());
        self.log.push(format!(
            "{n}: {:?} {:?} {:?} {ext:?}",
            ctx.sender(),
            ctx.subject(),
            ctx.idempotency_key(),
        ));
    }

    #[handler]
    fn release(&self, _ctx: &Ctx, _msg: Release) {
        if let Some(tx) = self.release.borrow_mut().take() {
            tx.send(()).expect("`Wait` waits");
        }
    }
}

#[test]
fn a_plain_fn_handler_replies_and_changes_the_state() {
    let mut t = TestActor::<Plain>::start_default();
    assert_eq!(t.call(&Step("one".into())).unwrap(), 1);
    assert_eq!(t.call(&Step("two".into())).unwrap(), 2);
    assert_eq!(t.actor().log, ["one", "two"]);
}

#[test]
fn a_plain_fn_handler_sends_to_the_sender() {
    let mut t = TestActor::<Plain>::start_default();
    t.send(&Echo(1)).unwrap();
    assert_eq!(t.sent_to::<Echo>("test"), [Echo(2)]);
}

#[test]
fn a_plain_fn_handler_waits_while_an_async_handler_holds_the_state() {
    let mut t = TestActor::<Plain>::builder()
        .concurrency(2)
        .mailbox_full("peer")
        .start_default();
    t.send(&Hold).unwrap();
    // `hold` keeps the state borrowed while its send waits: the step waits for the state.
    let waiting = t.call(&Step("after".into())).unwrap_err();
    assert_eq!(waiting.code(), ErrorCode::Timeout, "{waiting}");
    assert_eq!(
        t.in_flight(),
        2,
        "`hold`, and the step waiting for the state"
    );
    // Room for the send: `hold` finishes and lets go, then the step runs.
    t.set_mailbox_full("peer", false);
    assert_eq!(t.in_flight(), 0);
    assert_eq!(t.actor().log, ["hold", "held", "after"]);
}

#[test]
fn a_task_that_a_plain_fn_handler_wakes_runs_to_its_end() {
    let mut t = TestActor::<Plain>::builder().concurrency(2).start_default();
    t.send(&Wait).unwrap();
    assert_eq!(t.in_flight(), 1, "`wait` waits for its release");
    t.send(&Release).unwrap();
    assert_eq!(t.in_flight(), 0, "`wait` finished");
}

#[test]
fn a_plain_fn_handler_sees_its_envelope() {
    let mut t = TestActor::<Plain>::start_default();
    t.send_with_ext(&Note(1), &[("k", "one")]).unwrap();
    t.send_keyed(&Note(2), "key-two").unwrap();
    t.deliver("news.three", &Note(3)).unwrap();
    assert_eq!(
        t.actor().log,
        [
            r#"1: Some("test") None None Some("one")"#,
            r#"2: Some("test") None Some("key-two") None"#,
            r#"3: Some("test") Some("news.three") None None"#,
        ]
    );
}

#[test]
fn a_plain_fn_handler_that_waits_for_the_state_sees_its_own_envelope_after_later_events() {
    let mut t = TestActor::<Plain>::builder()
        .concurrency(4)
        .mailbox_full("peer")
        .start_default();
    t.send(&Hold).unwrap();
    // Each waits for the state; every later event overwrites the buffer the earlier ones were
    // read from, so what each handler sees must be its own copy.
    t.send_with_ext(&Note(1), &[("k", "one")]).unwrap();
    t.send_keyed(&Note(2), "key-two").unwrap();
    t.deliver("news.three", &Note(3)).unwrap();
    assert_eq!(
        t.in_flight(),
        4,
        "`hold`, and three notes waiting for the state"
    );
    t.set_mailbox_full("peer", false);
    assert_eq!(t.in_flight(), 0);
    assert_eq!(
        t.actor().log,
        [
            "hold",
            "held",
            r#"1: Some("test") None None Some("one")"#,
            r#"2: Some("test") None Some("key-two") None"#,
            r#"3: Some("test") Some("news.three") None None"#,
        ]
    );
}
