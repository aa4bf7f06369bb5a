//! Records every tick it receives (its subscriptions come from the manifest).

use bunraku_sdk::prelude::*;
use protocol::{Report, Seen, Tick};

#[derive(Default)]
pub struct Subscriber {
    seen: Vec<Seen>,
}

#[actor]
impl Subscriber {
    #[handler]
    async fn tick(&mut self, ctx: &Ctx, msg: Tick) {
        let subject = ctx.subject().unwrap_or_default().to_owned();
        self.seen.push(Seen {
            subject,
            publisher: msg.publisher,
            seq: msg.seq,
        });
    }

    #[handler]
    async fn report(&mut self, _ctx: &Ctx, _msg: Report) -> Vec<Seen> {
        self.seen.clone()
    }
}
