//! A gossip peer holding a replicated grow-only counter. It knows only its peers' names (from its
//! config); there is no coordinator. An increment bumps its own slot and gossips the state to
//! every peer; a peer that learns something new gossips it on, so all converge to the sum.

use bunraku_sdk::prelude::*;
use protocol::{Gossip, Increment, Slots, View};

#[derive(Default)]
pub struct Peer {
    peers: Vec<String>,
    slots: Slots,
}

#[derive(Default, Deserialize)]
pub struct Config {
    peers: Vec<String>,
}

impl Peer {
    async fn gossip(&self, ctx: &Ctx) {
        let msg = Gossip {
            from: ctx.name().to_owned(),
            slots: self.slots.clone(),
        };
        for peer in &self.peers {
            if let Err(e) = ctx.send(peer, &msg).await {
                ctx.warn(format!("gossip to {peer} failed: {e}"));
            }
        }
    }
}

#[actor]
impl Peer {
    async fn on_start(&mut self, _ctx: &Ctx, config: Config) {
        self.peers = config.peers;
    }

    #[handler]
    async fn increment(&mut self, ctx: &Ctx, msg: Increment) {
        let me = ctx.name().to_owned();
        let mine = self.slots.get(&me) + msg.n;
        self.slots.set(&me, mine);
        self.gossip(ctx).await;
    }

    #[handler]
    async fn gossip_in(&mut self, ctx: &Ctx, msg: Gossip) {
        if self.slots.merge(&msg.slots) {
            self.gossip(ctx).await;
        }
    }

    #[handler]
    async fn view(&mut self, _ctx: &Ctx, _msg: View) -> Slots {
        self.slots.clone()
    }
}
