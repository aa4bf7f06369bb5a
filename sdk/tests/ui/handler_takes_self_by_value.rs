use bunraku_sdk::prelude::*;

#[derive(Serialize, Deserialize, Message)]
struct Reset;

#[derive(Default)]
struct Greeter;

#[actor]
impl Greeter {
    #[handler]
    async fn reset(self, _ctx: &Ctx, _msg: Reset) {}
}

fn main() {}
