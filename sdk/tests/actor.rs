//! Actors written as users write them, run through the native harness: dispatch, codecs,
//! lifecycle, the context's operations, and the executor's suspension points.

use std::time::Duration;

use bunraku_sdk::abi::{HandlerKind, Policy};
use bunraku_sdk::prelude::*;
use bunraku_sdk::testing::TestActor;
use serde_json::json;

#[derive(Serialize, Deserialize, Message, Debug, PartialEq)]
#[message(reply = String)]
struct Greet {
    name: String,
}

#[derive(Serialize, Deserialize, Message)]
#[message(name = "greeter.reset")]
struct Reset;

#[derive(Serialize, Deserialize, Message)]
#[message(reply = u64)]
struct Count;

#[derive(Serialize, Deserialize, Default)]
#[serde(default)]
struct GreeterConfig {
    greeting: Option<String>,
    fail: bool,
}

#[derive(Default)]
struct Greeter {
    greeting: String,
    greeted: u64,
    stopped: bool,
}

#[actor]
impl Greeter {
    async fn on_start(&mut self, ctx: &Ctx, config: GreeterConfig) -> Result<(), Error> {
        if config.fail {
            return Err(Error::application("asked to fail"));
        }
        self.greeting = config.greeting.unwrap_or_else(|| "hello".into());
        ctx.info(format_args!("started as {}/{}", ctx.name(), ctx.instance()));
        Ok(())
    }

    async fn on_stop(&mut self, ctx: &Ctx) {
        self.stopped = true;
        assert_eq!(ctx.message_id(), None);
    }

    #[handler]
    async fn greet(&mut self, ctx: &Ctx, msg: Greet) -> String {
        self.greeted += 1;
        assert_eq!(ctx.sender(), Some("test"));
        format!("{}, {}", self.greeting, msg.name)
    }

    #[handler]
    async fn reset(&mut self, _ctx: &Ctx, _msg: Reset) {
        self.greeted = 0;
    }

    /// Not async, and only reads the state.
    #[handler]
    fn count(&self, _ctx: &Ctx, _msg: Count) -> u64 {
        self.greeted
    }

    /// A helper that is not a handler.
    fn unused_helper(&self) -> u64 {
        self.greeted
    }
}

#[test]
fn requests_and_messages_reach_their_handlers() {
    let mut t = TestActor::<Greeter>::start(json!({ "greeting": "hi" }));
    assert_eq!(t.call(&Greet { name: "ann".into() }).unwrap(), "hi, ann");
    assert_eq!(t.call(&Count).unwrap(), 1);
    t.send(&Reset).unwrap();
    assert_eq!(t.call(&Count).unwrap(), 0);
    assert_eq!(t.actor().unused_helper(), 0);
    assert_eq!(t.logs()[0].message, "started as Greeter/0");
}

#[test]
fn a_request_sent_one_way_drops_its_reply() {
    let mut t = TestActor::<Greeter>::start_default();
    t.send(&Greet { name: "ann".into() }).unwrap();
    assert_eq!(t.actor().greeted, 1);
}

#[test]
fn json_reaches_the_same_typed_handler() {
    let mut t = TestActor::<Greeter>::start_default();
    assert_eq!(
        t.call_json("Greet", r#"{"name":"bo"}"#).unwrap(),
        json!("hello, bo")
    );
    // A unit message needs no body; a one-way message answers a call with `null`.
    assert_eq!(t.call_json("greeter.reset", "").unwrap(), json!(null));
    assert_eq!(t.call_json("Count", "null").unwrap(), json!(0));
}

#[test]
fn a_malformed_payload_is_refused_and_the_actor_keeps_running() {
    let mut t = TestActor::<Greeter>::start_default();
    let err = t.call_json("Greet", r#"{"nom":"bo"}"#).unwrap_err();
    assert_eq!(err.code(), ErrorCode::Malformed);
    assert!(err.message().contains("missing field `name`"), "{err}");
    let warning = t.logs().pop().unwrap();
    assert_eq!(warning.level, Level::Warn);
    assert!(
        warning.message.contains("`Greet` does not decode as json"),
        "{}",
        warning.message
    );
    assert_eq!(t.call(&Greet { name: "ann".into() }).unwrap(), "hello, ann");
}

#[test]
fn an_unknown_type_is_refused_with_or_without_a_reply_handle() {
    #[derive(Serialize, Deserialize, Message)]
    #[message(reply = ())]
    struct Other;

    let mut t = TestActor::<Greeter>::start_default();
    assert_eq!(t.call(&Other).unwrap_err().code(), ErrorCode::UnknownType);
    let err = t.send(&Other).unwrap_err();
    assert_eq!(err.code(), ErrorCode::UnknownType);
    assert_eq!(
        err.to_string(),
        "unknown message type: no handler for message type `Other`"
    );
}

#[test]
fn the_descriptor_lists_requests_and_messages() {
    let d = Greeter::descriptor();
    assert_eq!(d.abi_version, bunraku_sdk::abi::ABI_VERSION);
    assert_eq!(d.actor, "Greeter");
    let kinds: Vec<_> = d
        .messages
        .iter()
        .map(|m| (m.name.as_str(), m.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            ("Greet", HandlerKind::Request),
            ("greeter.reset", HandlerKind::Message),
            ("Count", HandlerKind::Request),
        ]
    );
}

#[test]
fn on_stop_runs_on_stop() {
    let mut t = TestActor::<Greeter>::start_default();
    t.stop();
    assert!(t.actor().stopped);
}

#[test]
fn start_with_a_name_and_instance() {
    let t = TestActor::<Greeter>::builder()
        .name("greeter")
        .instance(3)
        .start_default();
    assert_eq!(t.logs()[0].message, "started as greeter/3");
}

#[test]
#[should_panic(expected = "`on_start` failed: application error: asked to fail")]
fn an_on_start_error_traps() {
    TestActor::<Greeter>::start(json!({ "fail": true }));
}

#[test]
#[should_panic(expected = "the configuration does not decode")]
fn a_configuration_that_does_not_decode_traps() {
    TestActor::<Greeter>::start(json!({ "greeting": 7 }));
}

// --- the context's operations -------------------------------------------------------------------

#[derive(Serialize, Deserialize, Message, Debug, PartialEq)]
struct Ping(u32);

#[derive(Serialize, Deserialize, Message)]
#[message(reply = Vec<String>)]
struct Relay {
    to: String,
    mode: String,
}

#[derive(Serialize, Deserialize, Message)]
#[message(name = "relay.subscribe", reply = Result<u64, String>)]
struct Sub(String);

#[derive(Serialize, Deserialize, Message)]
#[message(name = "relay.unsubscribe")]
struct Unsub;

#[derive(Default)]
struct Relayer {
    subscriptions: Vec<SubscriptionId>,
}

#[actor]
impl Relayer {
    #[handler]
    async fn relay(&mut self, ctx: &Ctx, msg: Relay) -> Vec<String> {
        let mut out = Vec::new();
        let mut note = |r: Result<String, Error>| out.push(r.unwrap_or_else(|e| e.to_string()));
        match msg.mode.as_str() {
            "send" => note(ctx.send(&msg.to, &Ping(1)).await.map(|()| "sent".into())),
            "try_send" => note(ctx.try_send(&msg.to, &Ping(2)).map(|()| "sent".into())),
            "publish" => note(
                ctx.publish(&msg.to, &Ping(3))
                    .await
                    .map(|()| "published".into()),
            ),
            "try_publish" => {
                note(
                    ctx.try_publish(&msg.to, &Ping(4))
                        .map(|()| "published".into()),
                );
            }
            "request" => {
                note(
                    ctx.request(
                        &msg.to,
                        &Greet {
                            name: "relay".into(),
                        },
                    )
                    .await,
                );
                let timeout = Duration::from_micros(1500);
                note(
                    ctx.request_with_timeout(&msg.to, &Greet { name: "t".into() }, timeout)
                        .await,
                );
            }
            _ => note(Err(Error::new(ErrorCode::Invalid, msg.mode))),
        }
        out
    }

    #[handler]
    async fn subscribe(&mut self, ctx: &Ctx, msg: Sub) -> Result<u64, String> {
        let id = ctx
            .subscribe_with(&msg.0, Policy::DropNewest)
            .map_err(|e| e.to_string())?;
        self.subscriptions.push(id);
        Ok(id.get())
    }

    #[handler]
    async fn unsubscribe(&mut self, ctx: &Ctx, _msg: Unsub) {
        if let Some(id) = self.subscriptions.pop() {
            ctx.unsubscribe(id).unwrap();
        }
    }

    #[handler]
    async fn ping(&mut self, ctx: &Ctx, msg: Ping) {
        ctx.info(format_args!(
            "ping {} on {}",
            msg.0,
            ctx.subject().unwrap_or("-")
        ));
    }
}

#[test]
fn subscriptions_are_recorded_and_deliveries_carry_the_subject() {
    let mut t = TestActor::<Relayer>::start_default();
    assert_eq!(t.call(&Sub("news.*".into())).unwrap(), Ok(1));
    assert_eq!(
        t.call(&Sub("a..b".into())).unwrap(),
        Err("invalid argument".into())
    );
    assert_eq!(t.call(&Sub("sport.>".into())).unwrap(), Ok(2));
    let subs = t.subscriptions();
    assert_eq!(
        (subs[0].pattern.as_str(), subs[0].policy),
        ("news.*", Policy::DropNewest)
    );
    t.send(&Unsub).unwrap();
    assert_eq!(t.subscriptions().len(), 1);

    t.deliver("news.today", &Ping(9)).unwrap();
    t.send(&Ping(10)).unwrap();
    let logs: Vec<_> = t.logs().into_iter().map(|l| l.message).collect();
    assert_eq!(logs, ["ping 9 on news.today", "ping 10 on -"]);
}

fn relay(t: &mut TestActor<Relayer>, to: &str, mode: &str) -> Vec<String> {
    t.call(&Relay {
        to: to.into(),
        mode: mode.into(),
    })
    .unwrap()
}

#[test]
fn sends_and_publishes_are_recorded() {
    let mut t = TestActor::<Relayer>::start_default();
    assert_eq!(relay(&mut t, "peer", "send"), ["sent"]);
    assert_eq!(relay(&mut t, "peer", "try_send"), ["sent"]);
    assert_eq!(relay(&mut t, "news.today", "publish"), ["published"]);
    assert_eq!(relay(&mut t, "news.today", "try_publish"), ["published"]);
    assert_eq!(t.sent_to::<Ping>("peer"), [Ping(1), Ping(2)]);
    assert_eq!(t.published::<Ping>("news.today"), [Ping(3), Ping(4)]);
    assert_eq!(t.sent().len(), 2);
    assert_eq!(t.publications()[0].msg_type, "Ping");
    assert_eq!(
        relay(&mut t, "bad..subject", "publish"),
        ["invalid argument"]
    );
}

#[test]
fn a_full_mailbox_suspends_send_until_there_is_room() {
    let mut t = TestActor::<Relayer>::start_default();
    t.set_mailbox_full("peer", true);
    assert_eq!(relay(&mut t, "peer", "try_send"), ["mailbox full"]);

    let err = t
        .call(&Relay {
            to: "peer".into(),
            mode: "send".into(),
        })
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Timeout, "{err}");
    assert_eq!(t.in_flight(), 1);
    assert!(t.sent().is_empty());

    t.set_mailbox_full("peer", false);
    assert_eq!(t.in_flight(), 0);
    assert_eq!(t.sent_to::<Ping>("peer"), [Ping(1)]);
}

#[test]
fn requests_are_answered_by_responders() {
    let mut t = TestActor::<Relayer>::start_default();
    assert_eq!(
        relay(&mut t, "nobody", "request"),
        ["no such actor", "no such actor"]
    );

    let mut calls = 0;
    t.respond::<Greet>("greeter", move |g| {
        calls += 1;
        format!("{} #{calls}", g.name)
    });
    assert_eq!(relay(&mut t, "greeter", "request"), ["relay #1", "t #2"]);
    let timeouts: Vec<_> = t.requests().iter().map(|r| r.timeout_ms).collect();
    assert_eq!(timeouts, [None, Some(2), None, Some(2)]);
    assert_eq!(
        t.requested::<Greet>("greeter")[1],
        Greet { name: "t".into() }
    );

    t.respond_with::<Greet>("greeter", |_| Err(Error::new(ErrorCode::Denied, "go away")));
    assert_eq!(
        relay(&mut t, "greeter", "request"),
        ["denied: go away", "denied: go away"]
    );
}

#[test]
fn a_responder_can_be_another_test_actor() {
    let mut greeter = TestActor::<Greeter>::start(json!({ "greeting": "yo" }));
    greeter
        .call(&Greet {
            name: "first".into(),
        })
        .unwrap();
    let mut t = TestActor::<Relayer>::start_default();
    t.respond::<Greet>("greeter", move |g| greeter.call(&g).unwrap());
    assert_eq!(relay(&mut t, "greeter", "request"), ["yo, relay", "yo, t"]);
}

// --- concurrency --------------------------------------------------------------------------------

#[derive(Serialize, Deserialize, Message)]
struct Work(String);

#[derive(Default)]
struct Worker {
    log: Vec<String>,
}

#[actor]
impl Worker {
    /// Holds the state across an await that waits while `peer` is full.
    #[handler]
    async fn work(&mut self, ctx: &Ctx, msg: Work) {
        self.log.push(format!("start {}", msg.0));
        ctx.send("peer", &Ping(0)).await.unwrap();
        self.log.push(format!("end {}", msg.0));
    }
}

#[test]
fn with_concurrency_one_the_next_message_waits_for_the_handler() {
    let mut t = TestActor::<Worker>::start_default();
    t.set_mailbox_full("peer", true);
    t.send(&Work("a".into())).unwrap();
    t.send(&Work("b".into())).unwrap();
    assert_eq!(t.in_flight(), 1);
    t.set_mailbox_full("peer", false);
    assert_eq!(t.in_flight(), 0);
    assert_eq!(t.actor().log, ["start a", "end a", "start b", "end b"]);
}

#[test]
fn concurrent_handlers_wait_for_the_state_instead_of_panicking() {
    let mut t = TestActor::<Worker>::start_default();
    t.set_concurrency(2);
    t.set_mailbox_full("peer", true);
    t.send(&Work("a".into())).unwrap();
    t.send(&Work("b".into())).unwrap();
    assert_eq!(
        t.in_flight(),
        2,
        "both handlers started; b waits for the state"
    );
    t.set_mailbox_full("peer", false);
    assert_eq!(t.in_flight(), 0);
    assert_eq!(t.actor().log, ["start a", "end a", "start b", "end b"]);
    assert_eq!(t.sent_to::<Ping>("peer").len(), 2);
}
