//! The ping-pong exchange, as actors on a host and as plain tokio tasks (used by the `pingpong`
//! and `breakdown` benches).
//!
//! Wasm: guest `bench-pingpong` deployed as `a` (concurrency 2, so that its `Go` request can wait
//! while pongs arrive) and `b`; one request `Go{peer: "b", rounds}` to `a` starts the rally and is
//! answered after the last pong (`GoNow` the same with plain `fn` handlers for ping and pong). Tokio: tasks `a` and `b` on a runtime built like the host's guest
//! runtime, exchanging `Ping{n}`/`Pong{n}` structs over `mpsc` channels of the mailboxes'
//! capacity. A rally of `rounds` round trips is `2 * rounds` messages either way.
//!
//! The host's floor: guest `bench-raw`, the same exchange written against the ABI alone (no SDK),
//! deployed on the same host as `raw-a` (concurrency 2) and `raw-b`.

use std::time::{Duration, Instant};

use bunraku_runtime::manifest::Limits;
use bunraku_runtime::{ClientMessage, Host};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

/// The tokio side's ping.
#[derive(Debug)]
pub struct Ping {
    /// Round number.
    pub n: u64,
}

/// The tokio side's pong.
#[derive(Debug)]
pub struct Pong {
    /// Round number.
    pub n: u64,
}

#[derive(Debug)]
enum ToA {
    Go {
        rounds: u64,
        done: oneshot::Sender<u64>,
    },
    Pong(Pong),
}

/// Both variants, ready to run rallies.
pub struct Rally {
    /// The host running `a` and `b`.
    pub host: Host,
    _baseline: tokio::runtime::Runtime,
    ctl: tokio::runtime::Runtime,
    to_a: mpsc::Sender<ToA>,
    /// The mailbox (and channel) capacity.
    pub capacity: usize,
}

impl Rally {
    /// Builds both guests, starts a default host with `a` and `b` (SDK) and `raw-a` and `raw-b`
    /// (no SDK), and the tokio pair.
    pub fn new() -> Self {
        let host = crate::host();
        let capacity = Limits::default().mailbox;
        for (guest, a, b) in [
            ("bench-pingpong", "a", "b"),
            ("bench-raw", "raw-a", "raw-b"),
        ] {
            let wasm = crate::guest(guest);
            let mut a = crate::spec(a, &wasm);
            a.limits.concurrency = 2;
            crate::deploy(&host, &a);
            crate::deploy(&host, &crate::spec(b, &wasm));
        }
        let baseline = crate::baseline_runtime(crate::guest_threads());
        let to_a = spawn_tokio_pair(&baseline, capacity);
        Self {
            host,
            _baseline: baseline,
            ctl: crate::control_runtime(),
            to_a,
            capacity,
        }
    }

    /// One rally between the actors.
    pub fn wasm(&self, rounds: u64) -> Duration {
        self.rally("a", "b", rounds)
    }

    /// One rally between the same actors whose ping and pong handlers are plain `fn`s
    /// (`bench.go_now`): the SDK runs them without a task.
    pub fn wasm_fn(&self, rounds: u64) -> Duration {
        self.rally_with("a", "b", "bench.go_now", rounds)
    }

    /// One rally between the actors without the SDK (`bench-raw`).
    pub fn raw(&self, rounds: u64) -> Duration {
        self.rally("raw-a", "raw-b", rounds)
    }

    fn rally(&self, a: &str, b: &str, rounds: u64) -> Duration {
        self.rally_with(a, b, "bench.go", rounds)
    }

    fn rally_with(&self, a: &str, b: &str, go: &str, rounds: u64) -> Duration {
        let msg = ClientMessage::json(a, Some(go), &json!({"peer": b, "rounds": rounds}))
            .with_timeout(Duration::from_secs(120));
        let start = Instant::now();
        let reply = self.ctl.block_on(self.host.request(msg)).expect("rally");
        let elapsed = start.elapsed();
        assert_eq!(
            reply.json().unwrap(),
            json!(rounds),
            "every round trip completed"
        );
        elapsed
    }

    /// One rally between the tokio tasks.
    pub fn tokio(&self, rounds: u64) -> Duration {
        let start = Instant::now();
        let last = self.ctl.block_on(async {
            let (done, rx) = oneshot::channel();
            self.to_a
                .send(ToA::Go { rounds, done })
                .await
                .expect("a runs");
            rx.await.expect("rally")
        });
        let elapsed = start.elapsed();
        assert_eq!(last, rounds);
        elapsed
    }

    /// Warms both up and returns the rounds for which a wasm rally takes about `target`.
    pub fn calibrate(&self, target: Duration) -> u64 {
        let probe = 2_000;
        self.tokio(probe);
        let t = self.wasm(probe);
        let rounds = ((probe as f64 * target.as_secs_f64() / t.as_secs_f64()) as u64).max(1_000);
        self.wasm(rounds);
        self.wasm_fn(rounds);
        self.raw(rounds);
        self.tokio(rounds);
        rounds
    }
}

impl Default for Rally {
    fn default() -> Self {
        Self::new()
    }
}

/// Spawns the tokio pair; returns `a`'s inbox.
fn spawn_tokio_pair(rt: &tokio::runtime::Runtime, capacity: usize) -> mpsc::Sender<ToA> {
    let (to_a, mut a_rx) = mpsc::channel::<ToA>(capacity);
    let (to_b, mut b_rx) = mpsc::channel::<Ping>(capacity);
    let a_from_b = to_a.clone();
    rt.spawn(async move {
        while let Some(ping) = b_rx.recv().await {
            if a_from_b.send(ToA::Pong(Pong { n: ping.n })).await.is_err() {
                return;
            }
        }
    });
    rt.spawn(async move {
        let mut rounds = 0;
        let mut done = None;
        while let Some(msg) = a_rx.recv().await {
            match msg {
                ToA::Go { rounds: r, done: d } => {
                    rounds = r;
                    done = Some(d);
                    let _ = to_b.send(Ping { n: 1 }).await;
                }
                ToA::Pong(pong) if pong.n >= rounds => {
                    if let Some(d) = done.take() {
                        let _ = d.send(pong.n);
                    }
                }
                ToA::Pong(pong) => {
                    let _ = to_b.send(Ping { n: pong.n + 1 }).await;
                }
            }
        }
    });
    to_a
}
