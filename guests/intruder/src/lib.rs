//! An actor that tries whatever it is told to, for the capability tests: on `Attempt {function,
//! target}` it calls host function `function` (named as in the ABI table) on `target` and answers
//! with the outcome, `"ok"` or the error code's name (`"denied"`). A function it has no way to
//! try is answered `"uncovered: NAME"`, so a test that walks the ABI table fails when a new
//! gated host function is added without teaching the intruder to try it.
//!
//! It goes through the SDK (`ctx.send`, `ctx.request`, `ctx.publish`, `ctx.subscribe`,
//! `ctx.save`, `ctx.load`) wherever the SDK can express the attempt, so the outcome is the typed
//! error a real actor sees. Handles it makes up (a subscription id, a reply handle) cannot be
//! expressed through the SDK, which only passes on handles the host issued; those attempts,
//! `spawn` (which the SDK does not offer yet) and the event-log functions (which the SDK reaches
//! only through a whole `Journal`), call the raw `bunraku` imports, which exist only in wasm.
//!
//! It also records the ticks its own subscriptions deliver (`Report`), and answers `Echo`, to show
//! it keeps working after a denial.

use bunraku_sdk::prelude::*;
use protocol::{Add, Echo, Report, Seen, Tick};

/// Try host function `function` on `target`: an actor name (`send`, `request`, `watch`), a
/// subject (`publish`), a pattern (`subscribe`), a handle number the host never issued (`reply`,
/// `unsubscribe`; an empty target unsubscribes the latest subscription this actor holds), a
/// spawnable module (`spawn`, as `MODULE-child`), nothing (`state_load`, `state_save`), an actor
/// name (`actor_ref`), a reference handle the host may never have issued (`send_ref`: send an
/// `Echo` through it; `attach`: send an `Echo` to this actor with it attached), nothing
/// (`timer_set`: an `Echo` to itself in an hour; `sleep`: a millisecond), a timer id the host may never have issued
/// (`timer_cancel`), an actor name (`stream_open`: a stream of `u64` opened with an `Echo`), a
/// stream handle the host may never have issued (`stream_credit`). Answered with `"ok"` or the
/// error code's name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
#[message(reply = String)]
pub struct Attempt {
    pub function: String,
    #[serde(default)]
    pub target: String,
}

/// What the intruder answers for a function it cannot try.
pub const UNCOVERED: &str = "uncovered";

#[derive(Default)]
pub struct Intruder {
    subscriptions: Vec<SubscriptionId>,
    seen: Vec<Seen>,
    published: u64,
}

fn outcome<T>(result: Result<T, Error>) -> String {
    match result {
        Ok(_) => "ok".into(),
        Err(e) => e.code().as_str().into(),
    }
}

#[actor]
impl Intruder {
    #[handler]
    async fn attempt(&mut self, ctx: &Ctx, msg: Attempt) -> String {
        let target = msg.target.as_str();
        match msg.function.as_str() {
            "send" => outcome(ctx.send(target, &Add { n: 1 }).await),
            "request" => {
                let text = format!("from {}", ctx.name());
                outcome(ctx.request(target, &Echo { text }).await)
            }
            "publish" => {
                self.published += 1;
                let tick = Tick {
                    publisher: ctx.name().to_owned(),
                    seq: self.published,
                };
                outcome(ctx.publish(target, &tick).await)
            }
            "subscribe" => {
                let id = ctx.subscribe(target);
                if let Ok(id) = id {
                    self.subscriptions.push(id);
                }
                outcome(id)
            }
            "unsubscribe" if target.is_empty() => match self.subscriptions.pop() {
                Some(id) => outcome(ctx.unsubscribe(id)),
                None => "no subscription held".into(),
            },
            "unsubscribe" => match target.parse::<u64>() {
                Ok(id) => raw::outcome(raw::unsubscribe(id)),
                Err(_) => format!("`{target}` is not a subscription id"),
            },
            "reply" => match target.parse::<u32>() {
                Ok(handle) => raw::outcome(raw::reply(handle)),
                Err(_) => format!("`{target}` is not a reply handle"),
            },
            "state_save" => outcome(ctx.save(&format!("{} was here", ctx.name())).await),
            "state_load" => outcome(ctx.load::<String>()),
            "watch" => outcome(ctx.watch(target)),
            "spawn" => raw::outcome(raw::spawn(target)),
            "actor_ref" => outcome(ctx.actor_ref(target)),
            "sleep" => outcome(ctx.sleep(Duration::from_millis(1)).await),
            "stream_open" => {
                let open = Echo {
                    text: "stream".into(),
                };
                outcome(ctx.open_stream::<u64, _>(target, &open))
            }
            "stream_credit" => match target.parse::<u32>() {
                Ok(id) => raw::outcome(raw::stream_credit(id)),
                Err(_) => format!("`{target}` is not a stream handle"),
            },
            "events_append" => raw::outcome(raw::events_append()),
            "events_read" => raw::outcome(raw::events_read()),
            "events_snapshot" => raw::outcome(raw::events_snapshot()),
            "reminder_set" => outcome(
                ctx.remind(
                    "intruder",
                    Duration::from_secs(3600),
                    &Echo {
                        text: "later".into(),
                    },
                )
                .await,
            ),
            "reminder_cancel" => outcome(ctx.cancel_reminder("intruder").await),
            "timer_set" => outcome(ctx.after(
                Duration::from_secs(3600),
                &Echo {
                    text: "later".into(),
                },
            )),
            "timer_cancel" => match target.parse::<u64>() {
                Ok(id) => raw::outcome(raw::timer_cancel(id)),
                Err(_) => format!("`{target}` is not a timer id"),
            },
            "drop_ref" => match target.parse::<u32>() {
                Ok(handle) => raw::outcome(raw::drop_ref(handle)),
                Err(_) => format!("`{target}` is not a reference handle"),
            },
            "send_ref" | "attach" => match target.parse::<u32>() {
                Ok(handle) if msg.function == "send_ref" => {
                    raw::outcome(raw::send_echo("", Some(handle), &[]))
                }
                Ok(handle) => raw::outcome(raw::send_echo(ctx.name(), None, &[handle])),
                Err(_) => format!("`{target}` is not a reference handle"),
            },
            other => format!("{UNCOVERED}: {other}"),
        }
    }

    #[handler]
    async fn tick(&mut self, ctx: &Ctx, msg: Tick) {
        self.seen.push(Seen {
            subject: ctx.subject().unwrap_or_default().to_owned(),
            publisher: msg.publisher,
            seq: msg.seq,
        });
    }

    #[handler]
    async fn report(&mut self, _ctx: &Ctx, _msg: Report) -> Vec<Seen> {
        self.seen.clone()
    }

    #[handler]
    async fn echo(&mut self, _ctx: &Ctx, msg: Echo) -> String {
        msg.text
    }
}

/// The raw `bunraku` imports, for handles the SDK cannot forge.
#[cfg(target_arch = "wasm32")]
mod raw {
    use bunraku_sdk::Message;
    use bunraku_sdk::abi::{Codec, Outbound, ReplyBody, Spawn, decode_result, encode, mode};
    use protocol::Echo;

    #[link(wasm_import_module = "bunraku")]
    unsafe extern "C" {
        #[link_name = "send"]
        fn bunraku_send(ptr: u32, len: u32, mode: u32) -> i64;
        #[link_name = "drop_ref"]
        fn bunraku_drop_ref(handle: u32) -> i64;
        #[link_name = "timer_cancel"]
        fn bunraku_timer_cancel(id: u64) -> i64;
        #[link_name = "stream_credit"]
        fn bunraku_stream_credit(stream: u32) -> i64;
        #[link_name = "unsubscribe"]
        fn bunraku_unsubscribe(id: u64) -> i64;
        #[link_name = "reply"]
        fn bunraku_reply(handle: u32, ptr: u32, len: u32) -> i64;
        #[link_name = "spawn"]
        fn bunraku_spawn(ptr: u32, len: u32) -> i64;
        #[link_name = "events_append"]
        fn bunraku_events_append(ptr: u32, len: u32) -> i64;
        #[link_name = "events_read"]
        fn bunraku_events_read(ptr: u32, len: u32) -> i64;
        #[link_name = "events_snapshot"]
        fn bunraku_events_snapshot(ptr: u32, len: u32) -> i64;
    }

    /// Calls an import that reads `bytes` and answers an operation id (its completion, if the
    /// host starts it, is dropped by the SDK as unknown).
    fn with_bytes(bytes: &[u8], import: unsafe extern "C" fn(u32, u32) -> i64) -> i64 {
        // SAFETY: the host only reads `bytes`, which lives for the call; wasm32 addresses and
        // lengths fit in u32.
        unsafe { import(bytes.as_ptr().addr() as u32, bytes.len() as u32) }
    }

    /// Appends one event to the intruder's own log.
    pub fn events_append() -> Result<i64, &'static str> {
        let append = encode(&bunraku_sdk::abi::Append {
            expected: 0,
            events: vec![bunraku_sdk::abi::NewEvent {
                version: 1,
                payload: vec![1],
            }],
        });
        Ok(with_bytes(&append, bunraku_events_append))
    }

    /// Reads the intruder's own log.
    pub fn events_read() -> Result<i64, &'static str> {
        let read = encode(&bunraku_sdk::abi::ReadEvents {
            log: bunraku_sdk::abi::Log::Own,
            from: 0,
            until: bunraku_sdk::abi::Until::Latest,
            snapshot: false,
            max_bytes: 4096,
            wait: false,
        });
        Ok(with_bytes(&read, bunraku_events_read))
    }

    /// Stores a snapshot of the intruder's (empty) log.
    pub fn events_snapshot() -> Result<i64, &'static str> {
        let snapshot = encode(&bunraku_sdk::abi::Snapshot {
            seq: 0,
            version: 1,
            state: Vec::new(),
        });
        Ok(with_bytes(&snapshot, bunraku_events_snapshot))
    }

    /// Spawns an actor from `module` under the name `MODULE-child`.
    pub fn spawn(module: &str) -> Result<i64, &'static str> {
        let spawn = encode(&Spawn {
            module: module.to_owned(),
            name: format!("{module}-child"),
            config: Vec::new(),
        });
        // SAFETY: the host only reads `spawn`, which lives for the call; wasm32 addresses and
        // lengths fit in u32.
        Ok(unsafe { bunraku_spawn(spawn.as_ptr().addr() as u32, spawn.len() as u32) })
    }

    /// Sends an `Echo` to `target`, or through reference `to_ref`, with `attachments`: handles
    /// the host may never have issued.
    pub fn send_echo(
        target: &str,
        to_ref: Option<u32>,
        attachments: &[u32],
    ) -> Result<i64, &'static str> {
        let out = encode(&Outbound {
            target: target.to_owned(),
            msg_type: Echo::NAME.to_owned(),
            payload: encode(&Echo { text: "hi".into() }),
            to_ref,
            attachments: attachments.to_vec(),
            ..Outbound::default()
        });
        // SAFETY: the host only reads `out`, which lives for the call; wasm32 addresses and
        // lengths fit in u32.
        Ok(unsafe { bunraku_send(out.as_ptr().addr() as u32, out.len() as u32, mode::TRY) })
    }

    /// Asks for the credit of stream `id`, which the host may never have issued.
    pub fn stream_credit(id: u32) -> Result<i64, &'static str> {
        // SAFETY: takes only an integer.
        Ok(unsafe { bunraku_stream_credit(id) })
    }

    /// Cancels timer `id`, which the host may never have issued.
    pub fn timer_cancel(id: u64) -> Result<i64, &'static str> {
        // SAFETY: takes only an integer.
        Ok(unsafe { bunraku_timer_cancel(id) })
    }

    /// Releases reference `handle`, which the host may never have issued.
    pub fn drop_ref(handle: u32) -> Result<i64, &'static str> {
        // SAFETY: takes only an integer.
        Ok(unsafe { bunraku_drop_ref(handle) })
    }

    /// Drops subscription `id`, which the host may never have issued.
    pub fn unsubscribe(id: u64) -> Result<i64, &'static str> {
        // SAFETY: takes only an integer.
        Ok(unsafe { bunraku_unsubscribe(id) })
    }

    /// Replies (with an empty payload) through reply handle `handle`, which the host may never
    /// have issued.
    pub fn reply(handle: u32) -> Result<i64, &'static str> {
        let body = encode(&ReplyBody::Ok {
            codec: Codec::Postcard,
            payload: Vec::new(),
        });
        // SAFETY: the host only reads `body`, which lives for the call; wasm32 addresses and
        // lengths fit in u32.
        Ok(unsafe { bunraku_reply(handle, body.as_ptr().addr() as u32, body.len() as u32) })
    }

    /// `"ok"` or the error code's name.
    pub fn outcome(raw: Result<i64, &'static str>) -> String {
        match raw.map(decode_result) {
            Ok(Ok(_)) => "ok".into(),
            Ok(Err(code)) => code.as_str().into(),
            Err(why) => why.into(),
        }
    }
}

/// Natively there are no `bunraku` imports: the test harness's host is reached only through
/// `Ctx`, which passes on no made-up handle. The attempts say so instead of running.
#[cfg(not(target_arch = "wasm32"))]
mod raw {
    /// Why a raw attempt did not run natively.
    pub const NATIVE: &str = "raw host calls exist only in wasm";

    pub fn unsubscribe(_id: u64) -> Result<i64, &'static str> {
        Err(NATIVE)
    }

    pub fn reply(_handle: u32) -> Result<i64, &'static str> {
        Err(NATIVE)
    }

    pub fn spawn(_module: &str) -> Result<i64, &'static str> {
        Err(NATIVE)
    }

    pub fn events_append() -> Result<i64, &'static str> {
        Err(NATIVE)
    }

    pub fn events_read() -> Result<i64, &'static str> {
        Err(NATIVE)
    }

    pub fn events_snapshot() -> Result<i64, &'static str> {
        Err(NATIVE)
    }

    pub fn send_echo(
        _target: &str,
        _to_ref: Option<u32>,
        _attachments: &[u32],
    ) -> Result<i64, &'static str> {
        Err(NATIVE)
    }

    pub fn drop_ref(_handle: u32) -> Result<i64, &'static str> {
        Err(NATIVE)
    }

    pub fn timer_cancel(_id: u64) -> Result<i64, &'static str> {
        Err(NATIVE)
    }

    pub fn stream_credit(_id: u32) -> Result<i64, &'static str> {
        Err(NATIVE)
    }

    pub fn outcome(raw: Result<i64, &'static str>) -> String {
        match raw {
            Ok(_) => "ok".into(),
            Err(why) => why.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bunraku_sdk::testing::TestActor;

    fn attempt(t: &mut TestActor<Intruder>, function: &str, target: &str) -> String {
        t.call(&Attempt {
            function: function.into(),
            target: target.into(),
        })
        .unwrap()
    }

    #[test]
    fn each_attempt_reaches_the_host_as_the_named_operation() {
        let mut t = TestActor::<Intruder>::builder()
            .name("intruder")
            .respond::<Echo>("echo", |e| e.text)
            .start_default();
        assert_eq!(attempt(&mut t, "send", "counter"), "ok");
        assert_eq!(t.sent_to::<Add>("counter"), [Add { n: 1 }]);
        assert_eq!(attempt(&mut t, "request", "echo"), "ok");
        assert_eq!(t.requested::<Echo>("echo")[0].text, "from intruder");
        assert_eq!(attempt(&mut t, "publish", "a.b"), "ok");
        assert_eq!(t.published::<Tick>("a.b")[0].publisher, "intruder");
        assert_eq!(attempt(&mut t, "subscribe", "a.*"), "ok");
        assert_eq!(t.subscriptions()[0].pattern, "a.*");
        assert_eq!(attempt(&mut t, "unsubscribe", ""), "ok");
        assert!(t.subscriptions().is_empty());
        assert_eq!(attempt(&mut t, "unsubscribe", ""), "no subscription held");
        assert_eq!(attempt(&mut t, "state_save", ""), "ok");
        assert!(t.saved_bytes().is_some());
        assert_eq!(attempt(&mut t, "state_load", ""), "ok");
    }

    #[test]
    fn a_failed_attempt_answers_with_the_error_code() {
        let mut t = TestActor::<Intruder>::start_default();
        // Nobody answers requests to `nobody` in the test host.
        assert_eq!(attempt(&mut t, "request", "nobody"), "no such actor");
        assert_eq!(attempt(&mut t, "subscribe", "a..b"), "invalid argument");
    }

    #[test]
    fn a_function_it_cannot_try_is_uncovered_and_raw_attempts_need_wasm() {
        let mut t = TestActor::<Intruder>::start_default();
        assert_eq!(attempt(&mut t, "frobnicate", ""), "uncovered: frobnicate");
        assert_eq!(attempt(&mut t, "reply", "7"), raw::NATIVE);
        assert_eq!(attempt(&mut t, "spawn", "echo"), raw::NATIVE);
        assert_eq!(attempt(&mut t, "unsubscribe", "7"), raw::NATIVE);
        assert_eq!(attempt(&mut t, "reply", "x"), "`x` is not a reply handle");
    }

    #[test]
    fn delivered_ticks_are_reported_and_echo_still_answers() {
        let mut t = TestActor::<Intruder>::start_default();
        t.deliver(
            "a.b",
            &Tick {
                publisher: "p".into(),
                seq: 1,
            },
        )
        .unwrap();
        assert_eq!(
            t.call(&Report {}).unwrap(),
            [Seen {
                subject: "a.b".into(),
                publisher: "p".into(),
                seq: 1
            }]
        );
        assert_eq!(t.call(&Echo { text: "hi".into() }).unwrap(), "hi");
    }
}
