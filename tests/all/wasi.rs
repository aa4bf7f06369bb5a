//! What the standard library gives an actor: logging, clocks and randomness from the host, no
//! file system, no environment, and no blocking sleep.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bunraku_runtime::clock::{Clock, ManualClock, SeededEntropy};
use bunraku_runtime::{CallError, HostConfig};
use bunraku_tests::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn std_in_a_guest_logs_reads_host_time_runs_constructors_once_and_has_no_file_system() {
    let host = host();
    deploy(&host, "probe", "wasi-probe");
    let report = host
        .call_json("probe", Some("Probe"), json!({}))
        .await
        .unwrap();
    // HashMap works (its seed comes from random_get).
    assert_eq!(report["hashmap"], json!(9900));
    // SystemTime is the host's wall clock; Instant moves.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let guest_now = report["unix_ms"].as_u64().unwrap();
    assert!(
        now.abs_diff(guest_now) < 60_000,
        "guest clock {guest_now} vs host {now}"
    );
    assert_eq!(report["monotonic_advanced"], json!(true));
    // No file system: reads and writes fail with an error the guest can handle.
    assert!(
        report["fs_read"].as_str().unwrap().starts_with("Err("),
        "{report}"
    );
    assert!(
        report["fs_write"].as_str().unwrap().starts_with("Err("),
        "{report}"
    );
    // No arguments, no environment.
    assert_eq!(
        (report["args"].clone(), report["env_vars"].clone()),
        (json!(0), json!(0))
    );
    // The module's static constructors ran once, at `_initialize`: not again around each entry
    // (as wasm-ld's wrappers for a command module's exports would run them).
    assert_eq!(report["constructor_runs"], json!(1), "{report}");
    let again = host
        .call_json("probe", Some("Probe"), json!({}))
        .await
        .unwrap();
    assert_eq!(again["constructor_runs"], json!(1), "{again}");
    // println! and eprintln! become the actor's log lines.
    let (logs, _) = host.logs().follow();
    let lines: Vec<_> = logs.iter().filter(|l| l.actor == "probe").collect();
    assert!(
        lines
            .iter()
            .any(|l| l.level == "info" && l.message == "println from the wasi probe")
    );
    assert!(
        lines
            .iter()
            .any(|l| l.level == "warn" && l.message == "eprintln from the wasi probe")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_sleep_traps_with_advice_to_use_timers() {
    let host = host();
    deploy(&host, "probe", "wasi-probe");
    let err = host
        .call_json("probe", Some("Sleep"), json!({}))
        .await
        .unwrap_err();
    assert_eq!(err, CallError::TargetFailed);
    let failure = host.actor("probe")[0].last_failure.clone().unwrap();
    assert!(failure.contains("the actor tried to block"), "{failure}");
    assert!(failure.contains("timers"), "{failure}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_time_and_randomness_come_from_the_host_clock_and_entropy() {
    let clock = ManualClock::new();
    let host = host_with(HostConfig {
        clock: Arc::new(clock.clone()),
        entropy: Arc::new(SeededEntropy::new(42)),
        ..HostConfig::default()
    });
    deploy(&host, "probe", "wasi-probe");
    clock.advance(Duration::from_secs(90));
    let report = host.call_json("probe", Some("Probe"), json!({})).await;
    let report =
        report.unwrap_or_else(|e| panic!("{e}: {:?}", host.actor("probe")[0].last_failure));
    assert_eq!(
        report["unix_ms"].as_u64().unwrap(),
        clock.unix_now().as_millis() as u64
    );
}
