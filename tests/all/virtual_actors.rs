//! Virtual actors: addressed as `TYPE/KEY`, activated by their first message, deactivated when
//! idle (only when they persist state) and activated again with their saved state; one
//! activation per key, however many first messages race.

use std::sync::Arc;
use std::time::Duration;

use bunraku_runtime::{CallError, ClientMessage, Host, HostConfig};
use bunraku_tests::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

/// A host with the `stateful` guest deployed as the virtual type `account`.
fn accounts(idle: Duration) -> Arc<Host> {
    accounts_on(HostConfig::default(), idle)
}

/// [`accounts`] on an engine of its own (so that its slot figures are this host's alone), with
/// `warm_slots` warm slots and `prepared` instances prepared per type.
fn accounts_alone(
    warm_slots: usize,
    prepared: usize,
    idle: Duration,
) -> (bunraku_runtime::engine::Engine, Arc<Host>) {
    let (engine, config) = engine_alone(warm_slots, prepared);
    (engine, accounts_on(config, idle))
}

/// A host configuration on an engine of its own (so its memory figures are the host's), with
/// `warm_slots` warm slots and `prepared` instances prepared per type unless a type says
/// otherwise.
fn engine_alone(
    warm_slots: usize,
    prepared: usize,
) -> (bunraku_runtime::engine::Engine, HostConfig) {
    let engine = bunraku_runtime::engine::Engine::new(bunraku_runtime::engine::EngineConfig {
        memory: bunraku_runtime::memory::SlotConfig {
            warm_slots,
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap();
    let config = HostConfig {
        engine: Some(engine.clone()),
        prepared_instances: prepared,
        ..Default::default()
    };
    (engine, config)
}

/// [`accounts`] on a host with a configuration of its own.
fn accounts_on(config: HostConfig, idle: Duration) -> Arc<Host> {
    accounts_preparing(config, idle, None)
}

/// [`accounts_on`], with the type's own `prepared_instances`.
fn accounts_preparing(config: HostConfig, idle: Duration, prepared: Option<usize>) -> Arc<Host> {
    let host = host_with(config);
    let mut account = spec("account", "stateful");
    account.virtual_idle = Some(idle);
    account.prepared_instances = prepared;
    deploy_spec(&host, &account);
    host
}

async fn status(host: &Host, to: &str) -> Value {
    host.call_json(to, Some("GetStateStatus"), json!({}))
        .await
        .unwrap()
}

fn phase(host: &Host, name: &str) -> Option<String> {
    host.actor(name).first().map(|s| s.phase.clone())
}

async fn until_phase(host: &Host, name: &str, want: &str) {
    eventually(WAIT, || {
        (phase(host, name).as_deref() == Some(want)).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("{name} is {:?}, not {want}", phase(host, name)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_key_is_deactivated_and_its_next_message_reactivates_it_with_its_state() {
    let host = accounts(Duration::from_millis(200));
    assert!(
        host.actor("account/alice").is_empty(),
        "nothing runs before a message"
    );

    counter_add(&host, "account/alice", 5).await;
    counter_add(&host, "account/alice", 2).await;
    let first = status(&host, "account/alice").await;
    assert_eq!(
        (first["value"].clone(), first["loaded"].clone()),
        (json!(7), Value::Null)
    );

    // Deactivated, then evicted: an idle key has no address, cell or task left.
    eventually(WAIT, || {
        host.actor("account/alice").is_empty().then_some(())
    })
    .await
    .expect("account/alice is evicted once idle");
    // The next message makes a new activation, which loads what the last one saved.
    let again = status(&host, "account/alice").await;
    assert_eq!(
        (again["value"].clone(), again["loaded"].clone()),
        (json!(7), json!(7))
    );
    let s = &host.actor("account/alice")[0];
    assert_eq!(
        (s.phase.as_str(), s.restarts, s.failures),
        ("running", 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_holding_an_evicted_address_reaches_the_next_activation() {
    let host = accounts(Duration::from_millis(200));
    deploy(&host, "client", "testbed");
    let add_to = |n: u64| {
        let host = host.clone();
        async move {
            host.call_json(
                "client",
                Some("AddTo"),
                json!({"to": "account/gina", "n": n}),
            )
            .await
            .unwrap()
        }
    };
    // The client's instance keeps the address it resolved for its next sends.
    assert_eq!(add_to(2).await, json!({"Ok": null}));
    eventually(WAIT, || host.actor("account/gina").is_empty().then_some(()))
        .await
        .expect("account/gina is evicted once idle");
    // Its cached address now has a closed mailbox: the send follows the name to a new
    // activation instead of failing with `no such actor`.
    assert_eq!(add_to(3).await, json!({"Ok": null}));
    let s = status(&host, "account/gina").await;
    assert_eq!(
        (s["value"].clone(), s["loaded"].clone()),
        (json!(5), json!(2))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timer_firings_do_not_keep_a_key_active() {
    let host = accounts(Duration::from_millis(200));
    counter_add(&host, "account/hank", 4).await;
    let r = host
        .call_json(
            "account/hank",
            Some("StartBeating"),
            json!({"period_ms": 10}),
        )
        .await
        .unwrap();
    assert_eq!(r, json!({"Ok": null}));
    // Beats arrive every 10 ms, yet the key is idle after 200 ms without messages, and its
    // timer ends with its instance.
    eventually(WAIT, || host.actor("account/hank").is_empty().then_some(()))
        .await
        .expect("account/hank is evicted although its timer keeps firing");
    assert_eq!(status(&host, "account/hank").await["value"], json!(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_key_is_deactivated_but_keeps_its_address() {
    let host = accounts(Duration::from_millis(200));
    deploy(&host, "watcher", "testbed");
    counter_add(&host, "account/frank", 3).await;
    let watch = host
        .call_json("watcher", Some("Watch"), json!({"actor": "account/frank"}))
        .await
        .unwrap();
    assert!(watch["Ok"].is_u64(), "{watch}");
    // The watch list lives with the address: deactivated (no instance), not evicted.
    until_phase(&host, "account/frank", "idle").await;
    let again = status(&host, "account/frank").await;
    assert_eq!(
        (again["value"].clone(), again["loaded"].clone()),
        (json!(3), json!(3))
    );
    // A deactivation is not an exit: the watcher heard nothing.
    let downs = host
        .call_json("watcher", Some("GetDowns"), json!({}))
        .await
        .unwrap();
    assert_eq!(downs, json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_racing_evictions_are_neither_lost_nor_counted_twice() {
    // A 1 ms idle timeout: every pause of the sender lets the key be deactivated and evicted,
    // so sends keep meeting evictions half-way (a closed mailbox, or a message taken out of a
    // closing one). A lost message, or two activations of one key at once (each loading the
    // same state and saving its own sum), would show in the totals.
    let host = accounts(Duration::from_millis(1));
    let keys: [&'static str; 3] = ["account/r0", "account/r1", "account/r2"];
    let senders: Vec<_> = keys
        .into_iter()
        .enumerate()
        .map(|(i, key)| {
            let host = host.clone();
            tokio::spawn(async move {
                for round in 0..150u64 {
                    counter_add(&host, key, 1).await;
                    // Pauses around the scan period (5 ms), different per key and round.
                    let pause = (round * 7 + i as u64 * 3) % 11;
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
            })
        })
        .collect();
    for s in senders {
        s.await.unwrap();
    }
    for key in keys {
        let s = host
            .request(
                ClientMessage::json(key, Some("GetStateStatus"), &json!({})).with_timeout(WAIT),
            )
            .await
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(s["value"], json!(150), "{key}: {s}");
    }
    // The race was met: keys were evicted and activated again along the way.
    let totals = host.totals();
    assert!(totals.evictions > 0 && totals.activations > 3, "{totals:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_separate_activations_with_separate_state() {
    let host = accounts(Duration::from_secs(60));
    counter_add(&host, "account/alice", 1).await;
    counter_add(&host, "account/bob", 10).await;
    assert_eq!(status(&host, "account/alice").await["value"], json!(1));
    assert_eq!(status(&host, "account/bob").await["value"], json!(10));
    let names: Vec<String> = host.actors().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["account/alice", "account/bob"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_messages_make_one_activation() {
    let host = accounts(Duration::from_secs(60));
    let sends: Vec<_> = (0..50)
        .map(|_| {
            let host = host.clone();
            tokio::spawn(async move { counter_add(&host, "account/carol", 1).await })
        })
        .collect();
    for s in sends {
        s.await.unwrap();
    }
    let carol = status(&host, "account/carol").await;
    // One instance saw all 50, starting from nothing: one activation.
    assert_eq!(
        (carol["value"].clone(), carol["loaded"].clone()),
        (json!(50), Value::Null)
    );
    assert_eq!(host.actor("account/carol").len(), 1);
    assert_eq!(host.actor("account/carol")[0].restarts, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_never_persisted_state_stays_active() {
    let host = accounts(Duration::from_millis(50));
    // `GetStateStatus` loads nothing (the key has no state) and saves nothing.
    assert_eq!(status(&host, "account/dave").await["loaded"], Value::Null);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(phase(&host, "account/dave").as_deref(), Some("running"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_types_and_bad_keys_are_no_such_actor() {
    let host = accounts(Duration::from_secs(60));
    for name in ["nope/x", "account/", "account/a b", "account"] {
        let r = host.call_json(name, Some("Get"), json!({})).await;
        assert!(matches!(r, Err(CallError::NoSuchActor(_))), "{name}: {r:?}");
    }
    assert!(host.actors().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_for_the_type_covers_its_keys() {
    let host = accounts(Duration::from_secs(60));
    let mut client = spec("client", "testbed");
    client.grants = bunraku_runtime::Grants::none().send_to("account");
    deploy_spec(&host, &client);
    // `Relay` requests `Ping`, which the stateful guest does not handle: the typed error shows
    // the request got through the grant and reached an activation.
    let r = host
        .call_json("client", Some("Relay"), json!({"to": "account/erin"}))
        .await
        .unwrap();
    assert_eq!(r, json!({"Err": "unknown message type"}));
    assert_eq!(host.actor("account/erin").len(), 1);
    let r = host
        .call_json("client", Some("Relay"), json!({"to": "other/erin"}))
        .await
        .unwrap();
    assert_eq!(r, json!({"Err": "denied"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activations_reuse_warm_slots_that_hold_nothing_of_the_keys_before_them() {
    // No other test's memories come and go in its slot pool, and every instance comes and goes
    // with its key: none waits prepared in a slot.
    let (engine, host) = accounts_alone(4, 0, Duration::from_millis(100));
    let keys = |wave: &'static str| (0..6).map(move |i| format!("account/{wave}{i}"));

    for (i, key) in keys("old").enumerate() {
        counter_add(&host, &key, 100 + i as u64).await;
    }
    eventually(WAIT, || host.actors().is_empty().then_some(()))
        .await
        .expect("every key is evicted once idle");
    let before = engine.memory_stats();
    assert!(
        before.warm_slots > 0 && before.slots_in_use == 0,
        "{before:?}"
    );

    // New keys start from nothing, however warm their slots are.
    for key in keys("new") {
        let s = status(&host, &key).await;
        assert_eq!(
            (s["value"].clone(), s["loaded"].clone()),
            (json!(0), Value::Null)
        );
    }
    let after = engine.memory_stats();
    assert!(
        after.warm_hits > before.warm_hits,
        "no activation got a warm slot: {after:?}"
    );
    // The old keys come back with what they saved, and only that.
    for (i, key) in keys("old").enumerate() {
        let s = status(&host, &key).await;
        assert_eq!(s["loaded"], json!(100 + i as u64), "{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activations_take_instances_the_type_prepared_ahead() {
    activations_take_prepared_instances(&accounts(Duration::from_secs(60))).await;
}

/// As above, with prepared instances that were never entered before their activation (the SDK
/// sets itself up in the activation's first entry instead).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activations_take_prepared_instances_that_were_not_entered_ahead() {
    let config = HostConfig {
        warm_prepared: false,
        ..Default::default()
    };
    activations_take_prepared_instances(&accounts_on(config, Duration::from_secs(60))).await;
}

/// Activates keys of `account` until one took a prepared instance; every key starts from nothing,
/// and the one with the prepared instance has its own address, messages and figures.
async fn activations_take_prepared_instances(host: &Host) {
    // The pool fills in the background after the deploy; keys activated meanwhile make their
    // own instances. Each new key starts from nothing either way.
    let mut keys = 0;
    while host.totals().starts.prepared == 0 {
        assert!(keys < 200, "no activation took a prepared instance");
        tokio::time::sleep(Duration::from_millis(5)).await;
        let key = format!("account/p{keys}");
        counter_add(host, &key, keys + 1).await;
        let s = status(host, &key).await;
        assert_eq!(
            (s["value"].clone(), s["loaded"].clone()),
            (json!(keys + 1), Value::Null),
            "{key}"
        );
        keys += 1;
    }
    // The last key took a prepared instance, bound to it: its own address, messages and figures.
    let key = format!("account/p{}", keys - 1);
    let s = &host.actor(&key)[0];
    assert_eq!(
        (s.phase.as_str(), s.handled, s.restarts, s.failures),
        ("running", 2, 0, 0)
    );
    assert_eq!(status(host, &key).await["instance"], json!(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_with_no_prepared_instances_makes_each_activation_its_own() {
    let host = accounts_on(
        HostConfig {
            prepared_instances: 0,
            ..Default::default()
        },
        Duration::from_secs(60),
    );
    five_activations_of_their_own(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_that_prepares_no_instances_makes_each_activation_its_own_on_a_host_that_would() {
    let host = accounts_preparing(HostConfig::default(), Duration::from_secs(60), Some(0));
    five_activations_of_their_own(&host).await;
}

/// Activates five keys of `account` and checks that none took a prepared instance.
async fn five_activations_of_their_own(host: &Host) {
    for i in 0..5 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        status(host, &format!("account/n{i}")).await;
    }
    assert_eq!(started(host, 5).await.prepared, 0);
}

/// The host's start figures once `n` starts are counted. A start is counted when its first
/// entry returns, which can be just after the reply that entry sent arrived.
async fn started(host: &Host, n: u64) -> bunraku_runtime::metrics::StartTimes {
    eventually(WAIT, || {
        let starts = host.totals().starts;
        (starts.count == n).then_some(starts)
    })
    .await
    .unwrap_or_else(|| panic!("{n} starts not counted: {:?}", host.totals().starts))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_prepares_the_instances_its_spec_asks_for_on_a_host_that_would_not() {
    let (engine, config) = engine_alone(bunraku_runtime::memory::DEFAULT_WARM_SLOTS, 0);
    let host = accounts_preparing(config, Duration::from_secs(60), Some(3));
    eventually(WAIT, || {
        (engine.memory_stats().slots_in_use == 3).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("not three prepared: {:?}", engine.memory_stats()));
    // The next activation takes one of them; the pool makes a fourth to stay at three.
    assert_eq!(status(&host, "account/p").await["loaded"], Value::Null);
    assert_eq!(started(&host, 1).await.prepared, 1);
    eventually(WAIT, || {
        (engine.memory_stats().slots_in_use == 4).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("the pool was not refilled: {:?}", engine.memory_stats()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_host_frees_the_instances_it_had_prepared() {
    let (engine, host) = accounts_alone(
        bunraku_runtime::memory::DEFAULT_WARM_SLOTS,
        3,
        Duration::from_secs(60),
    );
    eventually(WAIT, || {
        (engine.memory_stats().slots_in_use == 3).then_some(())
    })
    .await
    .expect("three instances prepared, each in its own slot");
    // The prepared instances hold the host; dropping it must still free them.
    drop(host);
    eventually(WAIT, || {
        (engine.memory_stats().slots_in_use == 0).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("slots still held: {:?}", engine.memory_stats()));
}
