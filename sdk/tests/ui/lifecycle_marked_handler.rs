use bunraku_sdk::prelude::*;

#[derive(Default)]
struct Greeter;

#[actor]
impl Greeter {
    #[handler]
    async fn on_stop(&mut self, _ctx: &Ctx) {}
}

fn main() {}
