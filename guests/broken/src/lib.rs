//! A deliberately broken example actor: its self-check reports a failed fact, so
//! `bunraku run --smoke` must exit non-zero.

use bunraku_sdk::prelude::*;
use protocol::{Smoke, SmokeReport};

#[derive(Default)]
pub struct Broken;

#[actor]
impl Broken {
    #[handler]
    async fn smoke(&mut self, _ctx: &Ctx, _msg: Smoke) -> SmokeReport {
        let mut report = SmokeReport::default();
        report.check(
            "one plus one is three",
            1 + 1 == 3,
            "arithmetic still works",
        );
        report.finish("broken")
    }
}
