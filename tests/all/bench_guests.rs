//! The benchmark guests do what the benchmarks count on (the numbers live in BENCHMARKS.md).

use bunraku_abi::Policy;
use bunraku_runtime::manifest::SubscriptionSpec;
use bunraku_tests::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_pingpong_rally_completes_every_round() {
    let host = host();
    for name in ["a", "b"] {
        // `go` waits in A while A's `pong` handler keeps the rally going.
        let mut s = spec(name, "bench-pingpong");
        s.limits.concurrency = 2;
        deploy_spec(&host, &s);
    }
    let last = host
        .call_json("a", Some("bench.go"), json!({"peer": "b", "rounds": 100}))
        .await;
    assert_eq!(last.unwrap(), json!(100));
    assert_eq!(host.actor("b")[0].handled, 100, "b saw one ping per round");
    // The same rally with plain `fn` handlers for ping and pong.
    let last = host
        .call_json(
            "a",
            Some("bench.go_now"),
            json!({"peer": "b", "rounds": 100}),
        )
        .await;
    assert_eq!(last.unwrap(), json!(100));
    assert_eq!(
        host.actor("b")[0].handled,
        200,
        "b saw one more ping per round"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_raw_rallies_without_the_sdk_and_with_the_sdk_guest() {
    let host = host();
    // `a` waits with `bench.go` in flight while its pongs arrive, as `bench-pingpong` does.
    for (name, guest, concurrency) in [
        ("a", "bench-raw", 2),
        ("b", "bench-raw", 1),
        ("sdk", "bench-pingpong", 1),
    ] {
        let mut s = spec(name, guest);
        s.limits.concurrency = concurrency;
        deploy_spec(&host, &s);
    }
    let go = |peer: &str, rounds: u64| {
        host.call_json(
            "a",
            Some("bench.go"),
            json!({"peer": peer, "rounds": rounds}),
        )
    };
    assert_eq!(go("b", 100).await.unwrap(), json!(100));
    assert_eq!(host.actor("b")[0].handled, 100, "b saw one ping per round");
    // The same protocol as `bench-pingpong`: a rally with an SDK guest as the peer.
    assert_eq!(go("sdk", 50).await.unwrap(), json!(50));
    assert_eq!(host.actor("sdk")[0].handled, 50);
    // No rounds: answered at once, without a ping.
    assert_eq!(go("b", 0).await.unwrap(), json!(0));
    assert_eq!(host.actor("b")[0].handled, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_fanout_reaches_every_subscriber() {
    let host = host();
    deploy(&host, "publisher", "bench-fanout");
    for i in 0..3 {
        let mut s = spec(&format!("sub-{i}"), "bench-fanout");
        s.subscriptions = vec![SubscriptionSpec {
            pattern: "bench.>".into(),
            policy: Policy::Wait,
        }];
        deploy_spec(&host, &s);
    }
    let sent = host
        .call_json(
            "publisher",
            Some("bench.burst"),
            json!({"subject": "bench.items", "count": 20}),
        )
        .await
        .unwrap();
    assert_eq!(sent, json!(20));
    for i in 0..3 {
        let seen = host
            .call_json(&format!("sub-{i}"), Some("bench.seen"), json!({}))
            .await;
        assert_eq!(seen.unwrap(), json!(20));
    }
}
