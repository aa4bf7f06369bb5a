//! A counter: `Add` increments, `Get` reads. Starts at `config.initial`.

use bunraku_sdk::prelude::*;
use protocol::{Add, Get};

#[derive(Default)]
pub struct Counter {
    value: u64,
}

#[derive(Default, Deserialize)]
pub struct Config {
    #[serde(default)]
    initial: u64,
}

#[actor]
impl Counter {
    async fn on_start(&mut self, _ctx: &Ctx, config: Config) {
        self.value = config.initial;
    }

    #[handler]
    async fn add(&mut self, _ctx: &Ctx, msg: Add) {
        self.value += msg.n;
    }

    #[handler]
    async fn get(&mut self, _ctx: &Ctx, _msg: Get) -> u64 {
        self.value
    }
}
