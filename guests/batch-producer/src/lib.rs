//! The batching example's producer: on `Produce { to, count }` it sends `count` small `Write`s
//! to `to`, one message each, waiting whenever the writer's mailbox is full, and replies with
//! the number sent.

use bunraku_sdk::prelude::*;
use protocol::{Produce, Write};

#[derive(Default)]
pub struct Producer;

#[actor]
impl Producer {
    #[handler]
    async fn produce(&mut self, ctx: &Ctx, msg: Produce) -> u64 {
        let mut sent = 0;
        for seq in 1..=msg.count {
            let write = Write {
                producer: ctx.name().to_owned(),
                seq,
                value: seq % 100,
            };
            match ctx.send(&msg.to, &write).await {
                Ok(()) => sent += 1,
                Err(e) => {
                    ctx.error(format_args!("write {seq} to {} failed: {e}", msg.to));
                    break;
                }
            }
        }
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bunraku_sdk::testing::TestActor;

    #[test]
    fn sends_numbered_writes_to_the_target() {
        let mut producer = TestActor::<Producer>::start_default();
        let sent = producer
            .call(&Produce {
                to: "writer".into(),
                count: 3,
            })
            .unwrap();
        assert_eq!(sent, 3);
        let writes = producer.sent_to::<Write>("writer");
        let seqs: Vec<u64> = writes.iter().map(|w| w.seq).collect();
        assert_eq!(seqs, [1, 2, 3]);
    }
}
