use bunraku_sdk::prelude::*;

#[derive(Serialize, Deserialize, Message)]
#[message(nmae = "greeter.greet")]
struct Greet;

fn main() {}
