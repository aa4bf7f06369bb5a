use bunraku_sdk::prelude::*;

mod v1 {
    use bunraku_sdk::prelude::*;

    #[derive(Serialize, Deserialize, Message)]
    pub struct Reset;
}

#[derive(Serialize, Deserialize, Message)]
struct Reset;

#[derive(Default)]
struct Greeter;

#[actor]
impl Greeter {
    #[handler]
    async fn reset(&mut self, _ctx: &Ctx, _msg: Reset) {}

    #[handler]
    async fn reset_v1(&mut self, _ctx: &Ctx, _msg: v1::Reset) {}
}

fn main() {}
