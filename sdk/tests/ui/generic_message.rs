use bunraku_sdk::prelude::*;

#[derive(Serialize, Deserialize, Message)]
struct Wrapped<T> {
    inner: T,
}

fn main() {}
