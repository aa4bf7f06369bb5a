//! Persisted actor state in the embedded SQLite store (issue 3, "Actor state"): `ctx.load()` in
//! `on_start` finds what `ctx.save()` made durable before a trap or a host restart; actors keep
//! separate state; the file is WAL with `synchronous=FULL`; an oversized state is refused with a
//! typed error; concurrent saves of many actors share commits.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use bunraku_runtime::store::FILE_NAME;
use bunraku_runtime::{ClientMessage, Host, HostConfig};
use bunraku_tests::*;
use serde_json::{Value, json};

async fn status(host: &Host, to: &str) -> Value {
    host.call_json(to, Some("GetStateStatus"), json!({}))
        .await
        .unwrap()
}

fn shut_down(host: Arc<Host>) {
    host.shutdown(Duration::from_secs(10));
    drop(host);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actor_that_never_saved_loads_nothing() {
    let host = host();
    deploy(&host, "fresh", "stateful");
    let s = status(&host, "fresh").await;
    assert_eq!(s["loaded"], Value::Null, "{s}");
    assert_eq!(s["load_error"], Value::Null, "{s}");
    assert_eq!(s["value"], json!(0));
    let stats = host.store().unwrap().stats();
    assert_eq!(stats.writes, 0);
    assert_eq!(
        stats.loads_skipped, 1,
        "its load was answered from the index of saved state, without a read"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_host_on_the_same_data_directory_is_refused_storage_as_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let first = host_in(dir.path());
    deploy(&first, "counter", "stateful");
    counter_add(&first, "counter", 5).await;
    // Answered after `on_start`, whose `load` opened the first host's store and locked the
    // directory.
    assert_eq!(status(&first, "counter").await["value"], json!(5));

    let second = host_in(dir.path());
    deploy(&second, "counter", "stateful");
    // Its `load` waited 200 ms for the data directory's lock, then gave up.
    let s = status(&second, "counter").await;
    assert_eq!(s["load_error"], json!("storage unavailable"), "{s}");
    assert_eq!(s["value"], json!(0));
    let err = second.store().unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "the data directory {} is in use by another host: stop it, or give this host another data directory",
            dir.path().display()
        )
    );
    let saved = second
        .call_json("counter", Some("SavePadded"), json!({ "pad": 0 }))
        .await
        .unwrap();
    assert_eq!(saved, json!({ "Err": "storage unavailable" }));

    // The first host lost nothing and keeps saving.
    counter_add(&first, "counter", 1).await;
    assert_eq!(counter_get(&first, "counter").await, 6);
    shut_down(first);
    shut_down(second);
    let host = host_in(dir.path());
    deploy(&host, "counter", "stateful");
    assert_eq!(status(&host, "counter").await["loaded"], json!(6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_instance_loads_the_state_saved_before_the_trap() {
    let host = host();
    let mut counter = spec("counter", "stateful");
    counter.restart.backoff_initial = Duration::from_millis(10);
    deploy_spec(&host, &counter);
    counter_add(&host, "counter", 2).await;
    counter_add(&host, "counter", 3).await;
    assert_eq!(counter_get(&host, "counter").await, 5);

    host.send(ClientMessage::json("counter", Some("Crash"), &json!({})))
        .await
        .unwrap();
    eventually(Duration::from_secs(30), || {
        (host.actor("counter")[0].restarts == 1).then_some(())
    })
    .await
    .expect("the trapped instance is restarted");

    let s = status(&host, "counter").await;
    assert_eq!(
        s["loaded"],
        json!(5),
        "the new instance loaded the saved state: {s}"
    );
    counter_add(&host, "counter", 1).await;
    assert_eq!(counter_get(&host, "counter").await, 6);
    let failure = host.actor("counter")[0].last_failure.clone().unwrap();
    assert!(failure.contains("while handling `Crash`"), "{failure}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_a_host_restart_and_actors_keep_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path());
    deploy(&host, "a", "stateful");
    deploy(&host, "b", "stateful");
    let mut replicated = spec("c", "stateful");
    replicated.instances = 2;
    deploy_spec(&host, &replicated);
    counter_add(&host, "a", 1).await;
    counter_add(&host, "b", 20).await;
    // Every message from the CLI goes to the same instance of `c`.
    counter_add(&host, "c", 300).await;
    assert_eq!(counter_get(&host, "a").await, 1);
    assert_eq!(counter_get(&host, "b").await, 20);
    assert_eq!(counter_get(&host, "c").await, 300);
    let instance = status(&host, "c").await["instance"].as_u64().unwrap() as u32;
    shut_down(host);

    let host = host_in(dir.path());
    deploy(&host, "a", "stateful");
    deploy(&host, "b", "stateful");
    deploy_spec(&host, &replicated);
    assert_eq!(status(&host, "a").await["loaded"], json!(1));
    assert_eq!(status(&host, "b").await["loaded"], json!(20));
    let c = status(&host, "c").await;
    assert_eq!(
        (&c["instance"], &c["loaded"]),
        (&json!(instance), &json!(300))
    );
    // The other instance of `c` has state of its own: none.
    let store = host.store().unwrap();
    assert!(store.load("c", instance).unwrap().is_some());
    assert_eq!(store.load("c", 1 - instance).unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_is_a_private_wal_file_synced_in_full() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let host = host_in(&data);
    assert!(
        !data.exists(),
        "nothing is created before an actor uses storage"
    );
    deploy(&host, "counter", "stateful");
    counter_add(&host, "counter", 1).await;
    assert_eq!(counter_get(&host, "counter").await, 1);

    let store = host.store().unwrap();
    assert_eq!(store.path(), data.join(FILE_NAME));
    let mode = std::fs::metadata(&data).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "the data directory is private");
    // What the live writer connection runs with (a kill -9 cannot reveal a missing fsync).
    let durability = store.durability().await.unwrap();
    assert_eq!(durability.journal_mode, "wal");
    assert_eq!(durability.synchronous, 2, "synchronous=FULL");
    // WAL is recorded in the file itself: header bytes 18 and 19 (write and read versions) are 2.
    let header = std::fs::read(store.path()).unwrap();
    assert_eq!(&header[..16], b"SQLite format 3\0");
    assert_eq!((header[18], header[19]), (2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_over_the_size_limit_is_refused_and_the_actor_keeps_running() {
    let host = host();
    let mut small = spec("small", "stateful");
    small.limits.max_message_bytes = 4096;
    deploy_spec(&host, &small);
    counter_add(&host, "small", 3).await;

    let save = |pad: u64| host.call_json("small", Some("SavePadded"), json!({ "pad": pad }));
    assert_eq!(save(8192).await.unwrap(), json!({ "Err": "too large" }));
    assert_eq!(
        counter_get(&host, "small").await,
        3,
        "the actor keeps running"
    );
    assert_eq!(save(100).await.unwrap(), json!({ "Ok": null }));
    assert_eq!(host.actor("small")[0].failures, 0);
    let saved = host.store().unwrap().load("small", 0).unwrap().unwrap();
    assert!(saved.len() > 100 && saved.len() < 4096, "{}", saved.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_without_data_directory_refuses_storage_with_a_typed_error() {
    let host = Arc::new(
        Host::new(HostConfig {
            engine: Some(engine()),
            guest_threads: 2,
            ..HostConfig::default()
        })
        .unwrap(),
    );
    assert_eq!(host.data_dir(), None);
    deploy(&host, "nowhere", "stateful");
    let s = status(&host, "nowhere").await;
    assert_eq!(s["load_error"], json!("storage unavailable"), "{s}");
    let saved = host
        .call_json("nowhere", Some("SavePadded"), json!({ "pad": 0 }))
        .await
        .unwrap();
    assert_eq!(saved, json!({ "Err": "storage unavailable" }));
    assert_eq!(
        counter_get(&host, "nowhere").await,
        0,
        "the actor keeps running"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_saves_of_many_actors_share_commits() {
    const N: usize = 200;
    let host = host();
    for i in 0..N {
        deploy(&host, &format!("s{i}"), "stateful");
    }
    // Every instance has started (and loaded nothing) before the saves begin.
    for i in 0..N {
        assert_eq!(counter_get(&host, &format!("s{i}")).await, 0);
    }
    let before = host.store().unwrap().stats();
    for i in 0..N {
        counter_add(&host, &format!("s{i}"), 1).await;
    }
    for i in 0..N {
        assert_eq!(counter_get(&host, &format!("s{i}")).await, 1);
    }
    let after = host.store().unwrap().stats();
    let (writes, commits) = (after.writes - before.writes, after.commits - before.commits);
    eprintln!("{writes} saves of {N} actors in {commits} commits");
    assert_eq!(writes, N as u64);
    assert!(
        commits < writes,
        "{writes} saves took {commits} commits: the writer did not group them"
    );
    assert_eq!(after.failed_writes, 0);
}
