//! Publishes bursts of numbered ticks when asked.

use bunraku_sdk::prelude::*;
use protocol::{PublishBurst, Tick};

#[derive(Default)]
pub struct Publisher {
    next: u64,
}

#[actor]
impl Publisher {
    #[handler]
    async fn burst(&mut self, ctx: &Ctx, msg: PublishBurst) -> u64 {
        for _ in 0..msg.count {
            self.next += 1;
            let tick = Tick {
                publisher: ctx.name().to_owned(),
                seq: self.next,
            };
            if let Err(e) = ctx.publish(&msg.subject, &tick).await {
                ctx.error(format!("publish to {} failed: {e}", msg.subject));
            }
        }
        ctx.info(format!("published {} ticks to {}", msg.count, msg.subject));
        msg.count
    }
}
