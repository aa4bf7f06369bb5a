//! Self-check of the request-response example: many concurrent-looking requests, each checked
//! against its own reply; a timeout; an unknown actor.

use bunraku_sdk::prelude::*;
use protocol::{Echo, Slow, Smoke, SmokeReport};

#[derive(Default)]
pub struct Client {
    config: Config,
}

#[derive(Default, Deserialize)]
pub struct Config {
    server: String,
    requests: u64,
}

#[actor]
impl Client {
    async fn on_start(&mut self, _ctx: &Ctx, config: Config) {
        self.config = config;
    }

    #[handler]
    async fn smoke(&mut self, ctx: &Ctx, _msg: Smoke) -> SmokeReport {
        let mut report = SmokeReport::default();
        let server = self.config.server.clone();
        let mut matched = 0;
        let mut mismatched = Vec::new();
        for i in 0..self.config.requests {
            let text = format!("request-{i}");
            match ctx.request(&server, &Echo { text: text.clone() }).await {
                Ok(reply) if reply.ends_with(&text) => matched += 1,
                Ok(reply) => mismatched.push(format!("{text} got {reply}")),
                Err(e) => mismatched.push(format!("{text} failed: {e}")),
            }
        }
        report.check(
            "every request gets its own reply",
            matched == self.config.requests && mismatched.is_empty(),
            format!("{matched}/{} matched {mismatched:?}", self.config.requests),
        );
        let slow = ctx
            .request_with_timeout(&server, &Slow { ms: 500 }, Duration::from_millis(50))
            .await;
        report.check(
            "a slow reply past the deadline gives a timeout",
            matches!(&slow, Err(e) if e.code() == ErrorCode::Timeout),
            format!("{slow:?}"),
        );
        let unknown = ctx
            .request(
                "nobody-home",
                &Echo {
                    text: "hello?".into(),
                },
            )
            .await;
        report.check(
            "an unknown actor gives no-such-actor",
            matches!(&unknown, Err(e) if e.code() == ErrorCode::NoSuchActor),
            format!("{unknown:?}"),
        );
        // The server is busy with the slow request for a moment; it still answers afterwards.
        let after = ctx
            .request(
                &server,
                &Echo {
                    text: "after".into(),
                },
            )
            .await;
        report.check(
            "the server answers after a timeout",
            after.is_ok(),
            format!("{after:?}"),
        );
        report.finish("request-response")
    }
}
