//! Density: 100,000 live actors of a std guest in one process, without changing sysctls.
//!
//! Default 4 GiB reservations stop a process near 32,000 instances, and layouts that leave an
//! inaccessible tail per memory run out of `vm.max_map_count` near the same count. The slot
//! allocator keeps the mapping count flat; this test holds it to that.

use std::time::{Duration, Instant};

use bunraku_tests::*;
use serde_json::json;

fn maps() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .count()
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_actors_live_in_one_process_with_a_flat_mapping_count() {
    let n: u32 = std::env::var("BUNRAKU_DENSITY").map_or(100_000, |v| v.parse().unwrap());
    #[allow(non_snake_case)]
    let N = n;
    let _alone = exclusive().await;
    let host = host();
    let mut testbed = spec("dense", "testbed");
    testbed.instances = N;
    testbed.config = json!({"grow_kib": 64});
    assert!(
        testbed.limits.memory >= 1 << 20,
        "each actor may use at least 1 MiB"
    );
    // Load the module first so its code is not counted as per-actor memory.
    deploy(&host, "warmup", "testbed");
    let (maps_before, rss_before) = (maps(), rss_kib());
    let start = Instant::now();
    deploy_spec(&host, &testbed);
    // Every instance has started and grown its heap past the two initial pages.
    // Polled slowly: a status snapshot of 100,000 instances is itself work.
    let mut grown = None;
    for _ in 0..1200 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let all = host.actor("dense");
        if let Some(failed) = all.iter().find(|s| s.failures > 0) {
            panic!(
                "instance {} failed: {:?}",
                failed.instance, failed.last_failure
            );
        }
        let n = all
            .iter()
            .filter(|s| s.phase == "running" && s.memory > 2 * 65536)
            .count();
        if n == N as usize {
            grown = Some(n);
            break;
        }
    }
    assert_eq!(grown, Some(N as usize), "not every actor started and grew");
    let elapsed = start.elapsed();
    let (maps_after, rss_after) = (maps(), rss_kib());
    eprintln!(
        "{N} actors in {elapsed:?}: maps {maps_before} -> {maps_after}, \
         RSS {:.1} KiB per actor (host structures included)",
        (rss_after - rss_before) as f64 / N as f64
    );
    // Other tests in this binary map and unmap too, so the count may also fall.
    let grew = maps_after.saturating_sub(maps_before);
    assert!(grew < 200, "mapping count grew by {grew}");
    // They are live: the instance a client's messages go to answers.
    let stats = host
        .call_json("dense", Some("GetStats"), json!({}))
        .await
        .unwrap();
    assert_eq!(stats["started"], json!(1));
    assert!(host.engine().memory_stats().slots_in_use > N as usize);
}
