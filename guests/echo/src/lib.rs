//! Echoes text back; `Slow` keeps it busy (for timeouts).

use bunraku_sdk::prelude::*;
use protocol::{Echo, Slow};

#[derive(Default)]
pub struct EchoActor {
    greeting: String,
}

#[derive(Default, Deserialize)]
pub struct Config {
    #[serde(default)]
    greeting: String,
}

#[actor]
impl EchoActor {
    async fn on_start(&mut self, ctx: &Ctx, config: Config) {
        self.greeting = config.greeting;
        ctx.info(format!("echo {} ready", ctx.name()));
    }

    #[handler]
    async fn echo(&mut self, _ctx: &Ctx, msg: Echo) -> String {
        format!("{}{}", self.greeting, msg.text)
    }

    #[handler]
    async fn slow(&mut self, _ctx: &Ctx, msg: Slow) -> u64 {
        let start = std::time::Instant::now();
        while start.elapsed().as_millis() < msg.ms as u128 {
            std::hint::spin_loop();
        }
        msg.ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bunraku_sdk::testing::TestActor;

    #[test]
    fn echo_prefixes_the_configured_greeting() {
        let mut t = TestActor::<EchoActor>::start(serde_json::json!({"greeting": "> "}));
        assert_eq!(t.call(&Echo { text: "hi".into() }).unwrap(), "> hi");
    }
}
