//! Ping-pong for `bench/benches/pingpong.rs`: deployed twice, as `a` and `b`.
//!
//! The host asks `a` to [`Go`]; `a` sends [`Ping`] `1` to the peer, the peer answers every
//! `Ping{n}` with `Pong{n}` to its sender, and `a` answers every `Pong{n}` with `Ping{n + 1}` until
//! `n` reaches the number of rounds; then `Go` replies. Both messages are plain one-way sends.
//!
//! `Go` must stay pending while the pongs arrive, so `a` runs with `concurrency = 2` and every
//! handler takes `&self`. `Go` waits on a oneshot channel (`futures-channel`) that the last
//! `Pong` completes: the SDK's executor wakes a task the standard way, so one handler can wait
//! for another with any waker-based primitive.
//!
//! [`GoNow`] runs the same rally with [`PingNow`] and [`PongNow`], whose handlers are plain
//! `fn`s: the SDK runs them at once, without a task, and they send with `try_send` (one message
//! is in flight, so the peer's mailbox is never full).
//!
//! [`Noop`] does nothing, for the per-stage breakdown (`bench/benches/breakdown.rs`).

use std::cell::{Cell, RefCell};

use bunraku_sdk::prelude::*;
use futures_channel::oneshot;

/// Start a rally of `rounds` round trips with `peer`; replies with the last `n` seen.
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(name = "bench.go", reply = u64)]
pub struct Go {
    pub peer: String,
    pub rounds: u64,
}

/// One way.
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(name = "bench.ping")]
pub struct Ping {
    pub n: u64,
}

/// The other way.
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(name = "bench.pong")]
pub struct Pong {
    pub n: u64,
}

/// [`Go`], with plain `fn` handlers for the rally.
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(name = "bench.go_now", reply = u64)]
pub struct GoNow {
    pub peer: String,
    pub rounds: u64,
}

/// [`Ping`], handled by a plain `fn`.
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(name = "bench.ping_now")]
pub struct PingNow {
    pub n: u64,
}

/// [`Pong`], handled by a plain `fn`.
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(name = "bench.pong_now")]
pub struct PongNow {
    pub n: u64,
}

/// Does nothing (measures dispatch).
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(name = "bench.noop")]
pub struct Noop {
    pub n: u64,
}

/// How many `Noop`s this instance handled.
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(name = "bench.noops", reply = u64)]
pub struct Noops {}

#[derive(Default)]
pub struct PingPong {
    rounds: Cell<u64>,
    last: Cell<u64>,
    noops: Cell<u64>,
    /// Completed by the last `Pong` of the rally, which `Go` waits for.
    done: RefCell<Option<oneshot::Sender<()>>>,
}

impl PingPong {
    /// Starts a rally of `rounds`: what the last pong completes, or `None` for no rounds.
    fn begin(&self, rounds: u64) -> Option<oneshot::Receiver<()>> {
        self.rounds.set(rounds);
        self.last.set(0);
        if rounds == 0 {
            return None;
        }
        let (done, finished) = oneshot::channel();
        *self.done.borrow_mut() = Some(done);
        Some(finished)
    }

    /// Waits for the rally the first ping `started` with `peer` to end; the last pong's number,
    /// or 0 when it did not start.
    async fn rally(
        &self,
        ctx: &Ctx,
        peer: &str,
        started: Result<(), Error>,
        finished: oneshot::Receiver<()>,
    ) -> u64 {
        if let Err(e) = started {
            ctx.error(format_args!("cannot start the rally with {peer}: {e}"));
            return 0;
        }
        // An error only when the sender went unused (a second `Go` replaced it): reply anyway.
        let _ = finished.await;
        self.last.get()
    }

    /// Records pong `n`: the next ping's number, or `None` when the rally is over (and `Go`
    /// replies).
    fn next_ping(&self, n: u64) -> Option<u64> {
        self.last.set(n);
        if n >= self.rounds.get() {
            self.finish();
            return None;
        }
        Some(n + 1)
    }

    /// Ends the rally: `Go` replies.
    fn finish(&self) {
        if let Some(done) = self.done.borrow_mut().take() {
            let _ = done.send(());
        }
    }
}

#[actor]
impl PingPong {
    #[handler]
    async fn go(&self, ctx: &Ctx, msg: Go) -> u64 {
        let Some(finished) = self.begin(msg.rounds) else {
            return 0;
        };
        let started = ctx.send(&msg.peer, &Ping { n: 1 }).await;
        self.rally(ctx, &msg.peer, started, finished).await
    }

    #[handler]
    async fn ping(&self, ctx: &Ctx, msg: Ping) {
        let to = ctx.sender().unwrap_or_default();
        if let Err(e) = ctx.send(to, &Pong { n: msg.n }).await {
            ctx.error(format_args!("pong to {to} failed: {e}"));
        }
    }

    #[handler]
    async fn pong(&self, ctx: &Ctx, msg: Pong) {
        let Some(n) = self.next_ping(msg.n) else {
            return;
        };
        let to = ctx.sender().unwrap_or_default();
        if let Err(e) = ctx.send(to, &Ping { n }).await {
            ctx.error(format_args!("ping to {to} failed: {e}"));
            self.finish();
        }
    }

    #[handler]
    async fn go_now(&self, ctx: &Ctx, msg: GoNow) -> u64 {
        let Some(finished) = self.begin(msg.rounds) else {
            return 0;
        };
        let started = ctx.try_send(&msg.peer, &PingNow { n: 1 });
        self.rally(ctx, &msg.peer, started, finished).await
    }

    #[handler]
    fn ping_now(&self, ctx: &Ctx, msg: PingNow) {
        let to = ctx.sender().unwrap_or_default();
        if let Err(e) = ctx.try_send(to, &PongNow { n: msg.n }) {
            ctx.error(format_args!("pong to {to} failed: {e}"));
        }
    }

    #[handler]
    fn pong_now(&self, ctx: &Ctx, msg: PongNow) {
        let Some(n) = self.next_ping(msg.n) else {
            return;
        };
        let to = ctx.sender().unwrap_or_default();
        if let Err(e) = ctx.try_send(to, &PingNow { n }) {
            ctx.error(format_args!("ping to {to} failed: {e}"));
            self.finish();
        }
    }

    #[handler]
    async fn noop(&self, _ctx: &Ctx, _msg: Noop) {
        self.noops.set(self.noops.get() + 1);
    }

    #[handler]
    async fn noops(&self, _ctx: &Ctx, _msg: Noops) -> u64 {
        self.noops.get()
    }
}
