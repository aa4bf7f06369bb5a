//! The runtime's test bench: traps, runaway loops, floods, relays and deadlocks on demand.

use bunraku_sdk::prelude::*;

/// Reply "pong".
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(reply = String)]
pub struct Ping {}

/// Panic (traps the instance).
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(reply = String)]
pub struct Panic {}

/// Loop forever (stopped by the time budget).
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(reply = String)]
pub struct Spin {}

/// Busy for `ms` milliseconds.
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(reply = u64)]
pub struct Busy {
    pub ms: u64,
}

/// Request `Ping` from `to` and reply with the answer, or the error's code name.
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(reply = Result<String, String>)]
pub struct Relay {
    pub to: String,
    pub timeout_ms: Option<u64>,
}

/// Ask `via` to relay a ping back to this actor (A -> B -> A: a deadlock the host refuses).
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(reply = Result<Result<String, String>, String>)]
pub struct Bounce {
    pub via: String,
}

/// Send `count` `Noop`s to `to` with `send().await`; reply with the number sent.
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(reply = u64)]
pub struct Flood {
    pub to: String,
    pub count: u64,
}

/// `try_send` `count` `Noop`s to `to`; reply with (accepted, refused as full).
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(reply = (u64, u64))]
pub struct TryFlood {
    pub to: String,
    pub count: u64,
}

/// A one-way message that is only counted.
#[derive(Debug, Serialize, Deserialize, Message)]
pub struct Noop {
    pub i: u64,
}

/// Counters of this instance.
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(reply = Stats)]
pub struct GetStats {}

/// What `GetStats` replies.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Stats {
    pub started: u64,
    pub noops: u64,
    pub last_noop: Option<u64>,
    pub in_order: bool,
    pub held_bytes: u64,
}

/// Allocate and keep `kib` KiB (grows linear memory).
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(reply = u64)]
pub struct Grow {
    pub kib: u64,
}

#[derive(Default)]
pub struct Testbed {
    stats: Stats,
    held: Vec<Vec<u8>>,
}

/// Settings from the manifest.
#[derive(Debug, Default, Deserialize)]
pub struct Config {
    /// KiB to reserve and hold at start (grows the heap once; only the first page is touched).
    #[serde(default)]
    pub grow_kib: u64,
}

#[actor]
impl Testbed {
    async fn on_start(&mut self, _ctx: &Ctx, config: Config) {
        self.stats.started += 1;
        self.stats.in_order = true;
        if config.grow_kib > 0 {
            // Reserve (memory.grow) but touch only the first byte: the heap has grown, and the
            // host pays for what the actor really uses.
            let mut chunk = Vec::with_capacity((config.grow_kib * 1024) as usize);
            chunk.push(1u8);
            self.stats.held_bytes += chunk.capacity() as u64;
            self.held.push(chunk);
        }
    }

    #[handler]
    async fn ping(&mut self, _ctx: &Ctx, _msg: Ping) -> String {
        "pong".into()
    }

    #[handler]
    async fn panic(&mut self, _ctx: &Ctx, _msg: Panic) -> String {
        panic!("testbed was asked to panic")
    }

    #[handler]
    async fn spin(&mut self, _ctx: &Ctx, _msg: Spin) -> String {
        let mut i: u64 = 0;
        loop {
            i = std::hint::black_box(i.wrapping_add(1));
        }
    }

    #[handler]
    async fn busy(&mut self, _ctx: &Ctx, msg: Busy) -> u64 {
        let start = std::time::Instant::now();
        while start.elapsed().as_millis() < msg.ms as u128 {
            std::hint::spin_loop();
        }
        msg.ms
    }

    #[handler]
    async fn relay(&mut self, ctx: &Ctx, msg: Relay) -> Result<String, String> {
        let reply = match msg.timeout_ms {
            Some(ms) => {
                ctx.request_with_timeout(&msg.to, &Ping {}, Duration::from_millis(ms))
                    .await
            }
            None => ctx.request(&msg.to, &Ping {}).await,
        };
        reply.map_err(|e| e.code().as_str().to_owned())
    }

    #[handler]
    async fn bounce(&mut self, ctx: &Ctx, msg: Bounce) -> Result<Result<String, String>, String> {
        let me = ctx.name().to_owned();
        ctx.request(
            &msg.via,
            &Relay {
                to: me,
                timeout_ms: None,
            },
        )
        .await
        .map_err(|e| e.code().as_str().to_owned())
    }

    #[handler]
    async fn flood(&mut self, ctx: &Ctx, msg: Flood) -> u64 {
        let mut sent = 0;
        for i in 0..msg.count {
            if ctx.send(&msg.to, &Noop { i }).await.is_ok() {
                sent += 1;
            }
        }
        sent
    }

    #[handler]
    async fn try_flood(&mut self, ctx: &Ctx, msg: TryFlood) -> (u64, u64) {
        let (mut ok, mut full) = (0, 0);
        for i in 0..msg.count {
            match ctx.try_send(&msg.to, &Noop { i }) {
                Ok(()) => ok += 1,
                Err(e) if e.code() == ErrorCode::MailboxFull => full += 1,
                Err(e) => panic!("unexpected error {e}"),
            }
        }
        (ok, full)
    }

    #[handler]
    async fn noop(&mut self, _ctx: &Ctx, msg: Noop) {
        if let Some(last) = self.stats.last_noop
            && msg.i != last + 1
        {
            self.stats.in_order = false;
        }
        self.stats.noops += 1;
        self.stats.last_noop = Some(msg.i);
    }

    #[handler]
    async fn get_stats(&mut self, _ctx: &Ctx, _msg: GetStats) -> Stats {
        self.stats.clone()
    }

    #[handler]
    async fn grow(&mut self, _ctx: &Ctx, msg: Grow) -> u64 {
        let chunk = vec![1u8; (msg.kib * 1024) as usize];
        self.stats.held_bytes += chunk.len() as u64;
        self.held.push(chunk);
        self.stats.held_bytes
    }
}
