//! Streams between two real guests: order, backpressure within the credit window, and typed
//! endings when either side traps, aborts or closes.

use std::sync::Arc;
use std::time::Duration;

use bunraku_runtime::Host;
use bunraku_tests::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

/// `producer` and `consumer` (both `testbed`), the consumer with a credit window of `window`.
fn pair(window: usize) -> Arc<Host> {
    let host = host();
    let mut producer = spec("producer", "testbed");
    producer.limits.concurrency = 2;
    deploy_spec(&host, &producer);
    let mut consumer = spec("consumer", "testbed");
    consumer.limits.stream_window = window;
    consumer.limits.concurrency = 2;
    deploy_spec(&host, &consumer);
    host
}

async fn stats(host: &Host, actor: &str) -> Value {
    host.call_json(actor, Some("GetStreamStats"), json!({}))
        .await
        .unwrap()
}

/// Streams `count` items and waits for the reply of the producer's `StreamTo`.
async fn stream(host: &Host, count: u64, consume: Value, extra: Value) -> Value {
    let mut msg = json!({"to": "consumer", "count": count, "consume": consume, "trap_at": null});
    msg.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let req =
        bunraku_runtime::ClientMessage::json("producer", Some("StreamTo"), &msg).with_timeout(WAIT);
    match host.request(req).await {
        Ok(reply) => reply.json().unwrap(),
        Err(e) => json!({"call failed": e.to_string()}),
    }
}

async fn consumer_ended(host: &Host) -> Value {
    for _ in 0..6000 {
        let s = stats(host, "consumer").await;
        if s["ending"] != json!("") {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stats(host, "consumer").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_items_arrive_in_order_then_the_end() {
    let host = pair(256);
    let r = stream(&host, 100_000, json!({}), json!({})).await;
    assert_eq!(r, json!({"Ok": 100_000}));
    let s = consumer_ended(&host).await;
    assert_eq!(
        (
            s["consumed"].clone(),
            s["in_order"].clone(),
            s["ending"].clone()
        ),
        (json!(100_000), json!(true), json!("closed"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_producer_stays_within_the_window_of_its_slow_consumer() {
    const WINDOW: u64 = 16;
    const COUNT: u64 = 2_000;
    let host = pair(WINDOW as usize);
    // The figure is written when the producer's first entry (`on_start`) returns.
    let memory_before = eventually(WAIT, || {
        let memory = host.actor("producer")[0].memory;
        (memory > 0).then_some(memory)
    })
    .await
    .expect("the producer started");
    // The consumer sleeps 2 ms (host clock) after every 10 items it reads. The producer's last
    // `send().await` can complete only once the consumer has read all but a window of items,
    // which takes at least (COUNT - WINDOW) / 10 of those sleeps: a producer that ran ahead of
    // its credit would be done long before. (A lower bound: load can only make it longer.)
    let start = std::time::Instant::now();
    let r = stream(&host, COUNT, json!({"every": 10, "sleep_ms": 2}), json!({})).await;
    let took = start.elapsed();
    assert_eq!(r, json!({"Ok": COUNT}));
    let floor = Duration::from_millis(2 * (COUNT - WINDOW) / 10);
    assert!(
        took >= floor,
        "{COUNT} sends completed in {took:?}, before the consumer could have read {}",
        COUNT - WINDOW
    );
    let s = consumer_ended(&host).await;
    assert_eq!(
        (
            s["consumed"].clone(),
            s["in_order"].clone(),
            s["ending"].clone()
        ),
        (json!(COUNT), json!(true), json!("closed"))
    );
    // The producer's memory did not grow with what it wrote.
    assert_eq!(host.actor("producer")[0].memory, memory_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_that_traps_ends_the_stream_with_peer_failed() {
    let host = pair(64);
    let r = stream(&host, 1_000, json!({}), json!({"trap_at": 500})).await;
    assert_eq!(
        r,
        json!({"call failed": "target failed: the actor trapped or stopped while handling the message"})
    );
    let s = consumer_ended(&host).await;
    assert_eq!(
        (s["ending"].clone(), s["in_order"].clone()),
        (json!("peer failed"), json!(true))
    );
    assert!(s["consumed"].as_u64().unwrap() <= 500, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_traps_ends_the_producers_sends_with_peer_failed() {
    let host = pair(16);
    let r = stream(&host, 10_000, json!({"trap_at": 100}), json!({})).await;
    assert_eq!(r, json!({"Err": "peer failed"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_stream_delivers_its_items_then_aborted() {
    let host = pair(64);
    let r = stream(&host, 300, json!({}), json!({"abort": true})).await;
    assert_eq!(r, json!({"Ok": 300}));
    let s = consumer_ended(&host).await;
    assert_eq!(
        (s["consumed"].clone(), s["ending"].clone()),
        (json!(300), json!("aborted"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_writer_keeps_several_streams_open_at_once() {
    let host = host();
    deploy(&host, "producer", "testbed");
    for c in ["c1", "c2", "c3"] {
        let mut consumer = spec(c, "testbed");
        consumer.limits.stream_window = 8;
        deploy_spec(&host, &consumer);
    }
    // Small windows: the writer waits on each stream's credit in turn, with all three open.
    let r = host
        .call_json(
            "producer",
            Some("StreamToMany"),
            json!({"to": ["c1", "c2", "c3"], "count": 3_000}),
        )
        .await
        .unwrap();
    assert_eq!(r, json!({"Ok": 9_000}));
    for c in ["c1", "c2", "c3"] {
        let mut s = stats(&host, c).await;
        for _ in 0..6000 {
            if s["ending"] != json!("") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            s = stats(&host, c).await;
        }
        assert_eq!(
            (
                s["consumed"].clone(),
                s["in_order"].clone(),
                s["ending"].clone()
            ),
            (json!(3_000), json!(true), json!("closed")),
            "{c}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_finished_a_stream_releases_its_handle() {
    // More streams, one after the other, than an instance may hold at once (1,024): each
    // finished stream must give its handle back on both sides.
    let host = pair(4);
    for n in 0..1_100 {
        let r = stream(&host, 1, json!({}), json!({})).await;
        assert_eq!(r, json!({"Ok": 1}), "stream {n}");
    }
    let mut s = stats(&host, "consumer").await;
    for _ in 0..6000 {
        if s["consumed"] == json!(1_100) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        s = stats(&host, "consumer").await;
    }
    assert_eq!(
        (s["consumed"].clone(), s["ending"].clone()),
        (json!(1_100), json!("closed"))
    );
}
