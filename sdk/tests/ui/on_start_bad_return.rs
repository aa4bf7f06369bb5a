use bunraku_sdk::prelude::*;

#[derive(Default)]
struct Greeter;

#[actor]
impl Greeter {
    async fn on_start(&mut self, _ctx: &Ctx) -> u32 {
        0
    }
}

fn main() {}
