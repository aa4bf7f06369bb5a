use bunraku_sdk::prelude::*;

#[derive(Default)]
struct Greeter;

trait Greets {}

#[actor]
impl Greets for Greeter {}

fn main() {}
