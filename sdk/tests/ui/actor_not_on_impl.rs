use bunraku_sdk::prelude::*;

#[actor]
#[derive(Default)]
struct Greeter;

fn main() {}
