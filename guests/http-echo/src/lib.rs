//! The gateway benchmark's actor: `echo` with `{"data": ..}` answers the same payload. Nothing
//! else: no state, no logging per message.

use bunraku_sdk::prelude::*;
use protocol::http::EchoPayload;

#[derive(Default)]
pub struct HttpEcho;

#[actor]
impl HttpEcho {
    #[handler]
    fn echo(&self, _ctx: &Ctx, msg: EchoPayload) -> EchoPayload {
        msg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bunraku_sdk::testing::TestActor;
    use serde_json::json;

    #[test]
    fn echo_answers_the_same_json() {
        let mut t = TestActor::<HttpEcho>::start_default();
        let reply = t.call_json("echo", r#"{"data":"hello"}"#).unwrap();
        assert_eq!(reply, json!({"data": "hello"}));
        // Query parameters the gateway merges in are not part of the payload.
        let reply = t.call_json("echo", r#"{"data":"x","trace":"1"}"#).unwrap();
        assert_eq!(reply, json!({"data": "x"}));
        assert_eq!(t.call_json("echo", "{}").unwrap(), json!({"data": ""}));
        assert!(t.logs().is_empty());
    }

    #[test]
    fn echo_answers_actors_too() {
        let mut t = TestActor::<HttpEcho>::start_default();
        let msg = EchoPayload {
            data: "ü".repeat(1000),
        };
        assert_eq!(t.call(&msg).unwrap(), msg);
    }
}
