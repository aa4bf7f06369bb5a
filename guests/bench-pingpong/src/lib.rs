//! Ping-pong for `bench/benches/pingpong.rs`: deployed twice, as `a` and `b`.
//!
//! The host asks `a` to [`Go`]; `a` sends [`Ping`] `1` to the peer, the peer answers every
//! `Ping{n}` with `Pong{n}` to its sender, and `a` answers every `Pong{n}` with `Ping{n + 1}` until
//! `n` reaches the number of rounds; then `Go` replies. Both messages are plain one-way sends.
//!
//! `Go` must stay pending while the pongs arrive, so `a` runs with `concurrency = 2` and every
//! handler takes `&self`. The SDK has no way for one handler to wake another, so `Go` waits on a
//! latch built from the SDK's state-borrow waiters (`bunraku_sdk::__private::borrow_mut`, the
//! mechanism behind `&mut self` handlers): it holds a second `RefCell` mutably while the rally
//! runs and waits to borrow it again; the last `Pong` lets go. Its cost is one extra poll of the
//! waiting `Go` task after each `Pong` on `a` (not on `b`).
//!
//! [`Noop`] does nothing, for the per-stage breakdown (`bench/benches/breakdown.rs`).

use std::cell::{Cell, RefCell, RefMut};

use bunraku_sdk::prelude::*;

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
}

thread_local! {
    /// The latch `Go` waits on; leaked so that its borrows are `'static`.
    static GATE: &'static RefCell<()> = Box::leak(Box::new(RefCell::new(())));
    /// Held while a rally runs.
    static HELD: RefCell<Option<RefMut<'static, ()>>> = const { RefCell::new(None) };
}

fn gate() -> &'static RefCell<()> {
    GATE.with(|g| *g)
}

fn release() {
    HELD.with(|h| h.borrow_mut().take());
}

#[actor]
impl PingPong {
    #[handler]
    async fn go(&self, ctx: &Ctx, msg: Go) -> u64 {
        self.rounds.set(msg.rounds);
        self.last.set(0);
        if msg.rounds == 0 {
            return 0;
        }
        HELD.with(|h| *h.borrow_mut() = Some(gate().borrow_mut()));
        if let Err(e) = ctx.send(&msg.peer, &Ping { n: 1 }).await {
            ctx.error(format_args!(
                "cannot start the rally with {}: {e}",
                msg.peer
            ));
            release();
            return 0;
        }
        drop(bunraku_sdk::__private::borrow_mut(gate()).await);
        self.last.get()
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
        self.last.set(msg.n);
        if msg.n >= self.rounds.get() {
            release();
            return;
        }
        let to = ctx.sender().unwrap_or_default();
        if let Err(e) = ctx.send(to, &Ping { n: msg.n + 1 }).await {
            ctx.error(format_args!("ping to {to} failed: {e}"));
            release();
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
