//! Timers: `ctx.after` and `ctx.every` on the host's clock (a manual clock here, so the tests
//! decide when time passes), cancellation, and timers ending with their instance.

use std::sync::Arc;
use std::time::Duration;

use bunraku_runtime::clock::ManualClock;
use bunraku_runtime::{Grants, Host};
use bunraku_tests::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

fn timed_host() -> (Arc<Host>, ManualClock) {
    let (host, clock) = host_on_manual_clock();
    deploy(&host, "ticker", "testbed");
    (host, clock)
}

async fn start(host: &Host, tag: &str, delay_ms: u64, period_ms: Option<u64>) -> Value {
    host.call_json(
        "ticker",
        Some("StartTimer"),
        json!({"tag": tag, "delay_ms": delay_ms, "period_ms": period_ms}),
    )
    .await
    .unwrap()
}

/// The firings handled so far. A request after `advance` is handled after the firings that
/// advance made due: the instance hands out due timers before its mailbox.
async fn fired(host: &Host) -> Vec<String> {
    let v = host
        .call_json("ticker", Some("GetFired"), json!({}))
        .await
        .unwrap();
    serde_json::from_value(v).unwrap()
}

async fn fired_until(host: &Host, n: usize) -> Vec<String> {
    let mut last = Vec::new();
    for _ in 0..3000 {
        last = fired(host).await;
        if last.len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_timers_fire_once_in_deadline_order() {
    let (host, clock) = timed_host();
    for (tag, delay) in [("c", 30), ("a", 10), ("b", 20)] {
        assert!(start(&host, tag, delay, None).await["Ok"].is_u64());
    }
    clock.advance(Duration::from_millis(5));
    assert_eq!(fired(&host).await, Vec::<String>::new());
    clock.advance(Duration::from_millis(25));
    assert_eq!(fired_until(&host, 3).await, ["a", "b", "c"]);
    clock.advance(Duration::from_secs(60));
    assert_eq!(fired(&host).await, ["a", "b", "c"], "each fired once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_periodic_timer_fires_every_period_until_cancelled() {
    let (host, clock) = timed_host();
    let id = start(&host, "tick", 0, Some(10)).await["Ok"]
        .as_u64()
        .unwrap();
    for n in 1..=3 {
        clock.advance(Duration::from_millis(10));
        assert_eq!(fired_until(&host, n).await.len(), n);
    }
    let r = host
        .call_json("ticker", Some("CancelTimer"), json!({"id": id}))
        .await
        .unwrap();
    assert_eq!(r, json!({"Ok": null}));
    clock.advance(Duration::from_millis(100));
    assert_eq!(fired(&host).await.len(), 3);
    // A cancelled timer is gone: cancelling it again is an error.
    let again = host
        .call_json("ticker", Some("CancelTimer"), json!({"id": id}))
        .await
        .unwrap();
    assert_eq!(again, json!({"Err": "invalid argument"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_periodic_timer_whose_actor_is_busy_merges_its_firings() {
    let (host, clock) = timed_host();
    // `blocker` spins on the manual clock until the test moves it, which waits for the relayed
    // ping to reach it: on a loaded machine that can take longer than the default time budget
    // (1 s of real time), and a trapped blocker would end the wait early.
    let mut blocker = spec("blocker", "testbed");
    blocker.limits.time_budget = Duration::from_secs(60);
    deploy_spec(&host, &blocker);
    start(&host, "tick", 0, Some(10)).await;
    // `blocker` spins until 50 ms of (manual) time have passed; `ticker` waits on it inside a
    // handler, so with a concurrency of 1 it cannot take its timer's firings meanwhile.
    let handled = host.actor("blocker")[0].handled;
    let busy = {
        let host = host.clone();
        tokio::spawn(async move {
            host.call_json("blocker", Some("Busy"), json!({"ms": 50}))
                .await
        })
    };
    // The relayed ping must queue behind `Busy`, so `Busy` is in the guest before it is sent.
    eventually(WAIT, || {
        (host.actor("blocker")[0].handled == handled + 1).then_some(())
    })
    .await
    .expect("blocker busy");
    let relay = {
        let host = host.clone();
        tokio::spawn(async move {
            host.call_json("ticker", Some("Relay"), json!({"to": "blocker"}))
                .await
        })
    };
    eventually(WAIT, || {
        (host.actor("blocker")[0].mailbox == 1).then_some(())
    })
    .await
    .expect("blocker busy, the relayed ping behind it");
    for _ in 0..6 {
        clock.advance(Duration::from_millis(10));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    busy.await.unwrap().unwrap();
    assert_eq!(relay.await.unwrap().unwrap(), json!({"Ok": "pong"}));
    // Six periods passed while the ticker was busy: its firings merged into one (or two, when
    // the last period ended just after the relay finished), not six.
    let n = fired_until(&host, 1).await.len();
    assert!((1..=2).contains(&n), "{n} firings handled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_end_with_their_instance_and_cancelling_releases_the_wait() {
    let (host, clock) = timed_host();
    let baseline = clock.pending_sleeps();
    let id = start(&host, "later", 60_000, None).await["Ok"]
        .as_u64()
        .unwrap();
    start(&host, "tick", 0, Some(1_000)).await;
    eventually(WAIT, || {
        (clock.pending_sleeps() == baseline + 2).then_some(())
    })
    .await
    .expect("both timers armed");
    host.call_json("ticker", Some("CancelTimer"), json!({"id": id}))
        .await
        .unwrap();
    eventually(WAIT, || {
        (clock.pending_sleeps() == baseline + 1).then_some(())
    })
    .await
    .expect("a cancelled timer holds no sleep");
    host.stop_actor("ticker").unwrap();
    eventually(WAIT, || (clock.pending_sleeps() == baseline).then_some(()))
        .await
        .expect("the periodic timer ended with its instance");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_need_the_timers_grant() {
    let host = host();
    let mut ticker = spec("ticker", "testbed");
    ticker.grants = Grants::none();
    deploy_spec(&host, &ticker);
    assert_eq!(start(&host, "x", 10, None).await, json!({"Err": "denied"}));
}
