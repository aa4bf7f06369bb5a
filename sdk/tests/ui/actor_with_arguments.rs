use bunraku_sdk::prelude::*;

#[derive(Default)]
struct Greeter;

#[actor(name = "greeter")]
impl Greeter {}

fn main() {}
