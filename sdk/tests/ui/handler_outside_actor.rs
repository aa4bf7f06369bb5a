use bunraku_sdk::prelude::*;

#[derive(Serialize, Deserialize, Message)]
struct Reset;

#[handler]
async fn reset(_ctx: &Ctx, _msg: Reset) {}

fn main() {}
