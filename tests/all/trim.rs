//! Idle trimming (`runtime/src/trim.rs`): an actor that has not entered the guest for
//! `idle_trim` gives back its zero pages, its empty stack, the unchanged pages of its data
//! segments and, kept as patches of their changed words, the pages that changed a little (its
//! state among them), and gets them back before it runs again, so that what it answers does not
//! change.

use std::sync::Arc;
use std::time::Duration;

use bunraku_runtime::engine::{Engine, EngineConfig};
use bunraku_runtime::{Host, HostConfig};
use bunraku_tests::*;

const WAIT: Duration = Duration::from_secs(30);

/// A host on an engine of its own (so that the trim counters are this host's alone).
fn host_trimming(idle_trim: Option<Duration>) -> (Engine, Arc<Host>) {
    let engine = Engine::new(EngineConfig::default()).expect("engine");
    let host = host_with(HostConfig {
        engine: Some(engine.clone()),
        idle_trim,
        ..HostConfig::default()
    });
    (engine, host)
}

/// Waits until the engine counted `n` trims in all.
async fn until_trims(engine: &Engine, n: u64) {
    eventually(WAIT, || (engine.memory_stats().trims >= n).then_some(()))
        .await
        .unwrap_or_else(|| panic!("not {n} trims: {:?}", engine.memory_stats()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_actor_gives_back_its_rebuildable_pages_and_answers_as_before_once_they_are_back() {
    let (engine, host) = host_trimming(Some(Duration::from_millis(50)));
    deploy(&host, "counter", "stateful");
    counter_add(&host, "counter", 5).await;
    assert_eq!(counter_get(&host, "counter").await, 5);

    until_trims(&engine, 1).await;
    let trimmed = engine.memory_stats();
    // A std guest's read-only data alone is several pages that no handler changes.
    assert!(
        trimmed.pages_trimmed >= 4,
        "few pages given back: {trimmed:?}"
    );
    assert_eq!(trimmed.pages_restored, 0, "nothing ran since: {trimmed:?}");
    // The pages that hold the count changed: they are given back too, kept as patches.
    assert!(trimmed.pages_patched >= 1, "nothing patched: {trimmed:?}");

    // The next message finds the memory as it was: the pages are copied back and patched first.
    assert_eq!(counter_get(&host, "counter").await, 5);
    counter_add(&host, "counter", 2).await;
    assert_eq!(counter_get(&host, "counter").await, 7);
    let restored = engine.memory_stats();
    assert!(restored.pages_restored > 0, "{restored:?}");
    assert!(restored.pages_restored <= trimmed.pages_trimmed);

    // Idle again: trimmed again, and again it answers as before.
    until_trims(&engine, 2).await;
    assert_eq!(counter_get(&host, "counter").await, 7);
    let s = &host.actor("counter")[0];
    assert_eq!((s.phase.as_str(), s.failures), ("running", 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trimmed_virtual_actor_is_deactivated_and_reactivated_with_its_state() {
    let (engine, host) = host_trimming(Some(Duration::from_millis(20)));
    let mut account = spec("account", "stateful");
    // Long enough that the key is trimmed before it is deactivated.
    account.virtual_idle = Some(Duration::from_millis(500));
    deploy_spec(&host, &account);
    counter_add(&host, "account/alice", 3).await;
    assert_eq!(counter_get(&host, "account/alice").await, 3);
    until_trims(&engine, 1).await;

    // Deactivation enters the trimmed instance once more (`on_stop`), then evicts it.
    eventually(WAIT, || {
        host.actor("account/alice").is_empty().then_some(())
    })
    .await
    .expect("account/alice is evicted once idle");
    assert_eq!(counter_get(&host, "account/alice").await, 3);
    let s = &host.actor("account/alice")[0];
    assert_eq!((s.restarts, s.failures), (0, 0));
    assert!(engine.memory_stats().pages_restored > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_without_idle_trim_keeps_idle_memory_resident() {
    let (engine, host) = host_trimming(None);
    deploy(&host, "counter", "stateful");
    counter_add(&host, "counter", 1).await;
    assert_eq!(counter_get(&host, "counter").await, 1);
    // Well past the shortest trim period a host can have (5 ms between looks).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(counter_get(&host, "counter").await, 1);
    let stats = engine.memory_stats();
    assert_eq!((stats.trims, stats.pages_trimmed), (0, 0), "{stats:?}");
}
