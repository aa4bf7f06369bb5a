//! Direct send and request-response between real guests.

use bunraku_tests::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_replies_to_a_json_request() {
    let host = host();
    deploy(&host, "echo", "echo");
    let reply = host.call_json("echo", Some("Echo"), json!({"text": "hello"})).await.unwrap();
    assert_eq!(reply, json!("hello"));
}
