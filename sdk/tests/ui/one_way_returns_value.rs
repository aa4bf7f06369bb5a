use bunraku_sdk::prelude::*;

#[derive(Serialize, Deserialize, Message)]
struct Reset;

#[derive(Default)]
struct Greeter;

#[actor]
impl Greeter {
    #[handler]
    async fn reset(&mut self, _ctx: &Ctx, _msg: Reset) -> bool {
        true
    }
}

fn main() {}
