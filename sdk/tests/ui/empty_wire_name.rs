use bunraku_sdk::prelude::*;

#[derive(Serialize, Deserialize, Message)]
#[message(name = "")]
struct Greet;

fn main() {}
