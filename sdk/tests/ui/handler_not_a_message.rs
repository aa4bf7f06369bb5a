use bunraku_sdk::prelude::*;

#[derive(Serialize, Deserialize)]
struct Plain;

#[derive(Default)]
struct Greeter;

#[actor]
impl Greeter {
    #[handler]
    async fn plain(&mut self, _ctx: &Ctx, _msg: Plain) {}
}

fn main() {}
