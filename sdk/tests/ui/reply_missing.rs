use bunraku_sdk::prelude::*;

#[derive(Serialize, Deserialize, Message)]
#[message(reply = String)]
struct Greet;

#[derive(Default)]
struct Greeter;

#[actor]
impl Greeter {
    #[handler]
    async fn greet(&mut self, _ctx: &Ctx, _msg: Greet) {}
}

fn main() {}
