//! Fan-out for `bench/benches/fanout.rs`: one module, deployed as the publisher and as every
//! subscriber (each subscriber its own actor, subscribed through its manifest entry).
//!
//! The host asks the publisher for a [`Burst`]; it publishes `count` [`Item`]s in a loop with
//! `ctx.publish(..).await` (waiting for room where a subscriber's mailbox is full) and then
//! replies. Subscribers count the items; [`Seen`] asks how many, and since a mailbox is FIFO its
//! reply means every earlier item was handled.

use bunraku_sdk::prelude::*;

/// Publish `count` items on `subject`; replies with the number published.
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(name = "bench.burst", reply = u64)]
pub struct Burst {
    pub subject: String,
    pub count: u64,
}

/// A published item.
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(name = "bench.item")]
pub struct Item {
    pub seq: u64,
}

/// How many items this subscriber handled.
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(name = "bench.seen", reply = u64)]
pub struct Seen {}

#[derive(Default)]
pub struct Fanout {
    seen: u64,
    next: u64,
}

#[actor]
impl Fanout {
    #[handler]
    async fn burst(&mut self, ctx: &Ctx, msg: Burst) -> u64 {
        let mut published = 0;
        for _ in 0..msg.count {
            self.next += 1;
            match ctx.publish(&msg.subject, &Item { seq: self.next }).await {
                Ok(()) => published += 1,
                Err(e) => ctx.error(format_args!("publish to {} failed: {e}", msg.subject)),
            }
        }
        published
    }

    #[handler]
    async fn item(&mut self, _ctx: &Ctx, _msg: Item) {
        self.seen += 1;
    }

    #[handler]
    async fn seen(&mut self, _ctx: &Ctx, _msg: Seen) -> u64 {
        self.seen
    }
}
