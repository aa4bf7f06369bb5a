//! Publish-subscribe: fan-out, wildcards, delivery policies.

use std::time::Duration;

use bunraku_abi::Policy;
use bunraku_runtime::ClientMessage;
use bunraku_runtime::manifest::SubscriptionSpec;
use bunraku_tests::*;
use serde_json::{Value, json};

fn subscriber(host: &bunraku_runtime::Host, name: &str, patterns: &[&str]) {
    deploy_spec(host, &subscribed(spec(name, "pubsub-subscriber"), patterns));
}

async fn seen(host: &bunraku_runtime::Host, name: &str) -> Vec<(String, u64)> {
    let v = host
        .call_json(name, Some("Report"), json!({}))
        .await
        .unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["subject"].as_str().unwrap().to_owned(),
                s["seq"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subscriber_gets_every_message_once_in_order() {
    let host = host();
    deploy(&host, "publisher", "pubsub-publisher");
    let names: Vec<String> = (0..200).map(|i| format!("sub-{i}")).collect();
    for n in &names {
        subscriber(&host, n, &["load.>"]);
    }
    let sent = host
        .call_json(
            "publisher",
            Some("PublishBurst"),
            json!({"subject": "load.x", "count": 50}),
        )
        .await
        .unwrap();
    assert_eq!(sent, json!(50));
    let expected: Vec<(String, u64)> = (1..=50).map(|s| ("load.x".to_owned(), s)).collect();
    for n in &names {
        assert_eq!(seen(&host, n).await, expected, "{n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_subscribers_get_exactly_the_matching_subjects() {
    let host = host();
    deploy(&host, "publisher", "pubsub-publisher");
    let cases: [(&str, &str, &[&str]); 5] = [
        ("exact", "a.b", &["a.b"]),
        ("star", "a.*", &["a.b", "a.c"]),
        ("tail", "a.>", &["a.b", "a.c", "a.b.c"]),
        ("first", "*.b", &["a.b", "x.b"]),
        ("all", ">", &["a", "a.b", "a.c", "a.b.c", "x.b"]),
    ];
    for (name, pattern, _) in &cases {
        subscriber(&host, name, &[pattern]);
    }
    for subject in ["a", "a.b", "a.c", "a.b.c", "x.b"] {
        host.call_json(
            "publisher",
            Some("PublishBurst"),
            json!({"subject": subject, "count": 1}),
        )
        .await
        .unwrap();
    }
    for (name, pattern, subjects) in &cases {
        let got: Vec<String> = seen(&host, name)
            .await
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(got, *subjects, "{name} subscribed to {pattern}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_newest_policy_drops_and_counts_when_the_subscriber_is_full() {
    let host = host();
    let mut slow = spec("slow", "testbed");
    slow.limits.mailbox = 4;
    // `Busy` must outlast the 20 publishes below on a loaded machine: 2 s, within 10 s.
    slow.limits.time_budget = Duration::from_secs(10);
    slow.subscriptions = vec![SubscriptionSpec {
        pattern: "feed.*".into(),
        policy: Policy::DropNewest,
    }];
    deploy_spec(&host, &slow);
    let h = host.clone();
    let busy =
        tokio::spawn(async move { h.call_json("slow", Some("Busy"), json!({"ms": 2000})).await });
    eventually(Duration::from_secs(30), || {
        (host.actor("slow")[0].handled == 1).then_some(())
    })
    .await
    .unwrap();
    let mut delivered = 0;
    let mut dropped = 0;
    for i in 0..20 {
        let msg = ClientMessage::json("feed.x", Some("Noop"), &json!({"i": i}));
        let report = host.publish(msg).await.unwrap();
        delivered += report.delivered;
        dropped += report.dropped;
    }
    assert_eq!((delivered, dropped), (4, 16));
    busy.await.unwrap().unwrap();
    let stats: Value = host
        .call_json("slow", Some("GetStats"), json!({}))
        .await
        .unwrap();
    assert_eq!(stats["noops"], json!(4));
    assert_eq!(
        stats["last_noop"],
        json!(3),
        "the oldest stayed, the newest were dropped"
    );
    assert_eq!(host.actor("slow")[0].dead_letters, 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_to_a_wildcard_subject_is_refused() {
    let host = host();
    let err = host
        .publish(ClientMessage::json("a.*", Some("Noop"), &json!({})))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "subject `a.*` contains a wildcard; publish to a concrete subject"
    );
}
