use bunraku_sdk::prelude::*;

#[derive(Deserialize)]
struct Config {
    _port: u16,
}

#[derive(Default)]
struct Greeter;

#[actor]
impl Greeter {
    async fn on_start(&mut self, _ctx: &Ctx, _config: Config) {}
}

fn main() {}
