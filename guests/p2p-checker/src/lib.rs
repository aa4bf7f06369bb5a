//! Self-check of the peer-to-peer example: sends increments to the peers (it takes no part in the
//! gossip), then asks each peer for its view until all agree on the sum of all increments.

use bunraku_sdk::prelude::*;
use protocol::{Increment, Slots, Smoke, SmokeReport, View};

#[derive(Default)]
pub struct Checker {
    config: Config,
}

#[derive(Default, Deserialize)]
pub struct Config {
    peers: Vec<String>,
    rounds: u64,
}

#[actor]
impl Checker {
    async fn on_start(&mut self, _ctx: &Ctx, config: Config) {
        self.config = config;
    }

    #[handler]
    async fn smoke(&mut self, ctx: &Ctx, _msg: Smoke) -> SmokeReport {
        let mut report = SmokeReport::default();
        let mut expected = 0;
        for round in 0..self.config.rounds {
            for (i, peer) in self.config.peers.iter().enumerate() {
                let n = 1 + (round + i as u64) % 3;
                expected += n;
                if let Err(e) = ctx.send(peer, &Increment { n }).await {
                    report.check(&format!("increment reaches {peer}"), false, e.to_string());
                }
            }
        }
        // Gossip is asynchronous: ask until every view shows the full sum (bounded attempts).
        let mut views: Vec<(String, Slots)> = Vec::new();
        for _attempt in 0..200 {
            views.clear();
            for peer in &self.config.peers {
                match ctx.request(peer, &View {}).await {
                    Ok(v) => views.push((peer.clone(), v)),
                    Err(e) => ctx.warn(format!("view of {peer}: {e}")),
                }
            }
            if views.len() == self.config.peers.len()
                && views.iter().all(|(_, v)| v.total() == expected)
            {
                break;
            }
        }
        for (peer, view) in &views {
            report.check(
                &format!("{peer} converged to the sum of all increments"),
                view.total() == expected,
                format!("{} of {expected}", view.total()),
            );
        }
        let agree = views.windows(2).all(|w| w[0].1 == w[1].1);
        report.check(
            "all peers hold the same replicated state",
            agree && !views.is_empty(),
            "",
        );
        report.finish("p2p")
    }
}
