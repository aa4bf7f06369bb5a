//! Virtual actor churn: a million keys, each activated and holding state, at most 100,000 active.
//!
//! `cargo bench -p bunraku-bench --bench churn` (`BUNRAKU_BENCH_CHURN_KEYS=n`, default
//! 1,000,000; `BUNRAKU_BENCH_CHURN_ACTIVE=m`, default 100,000; `BUNRAKU_BENCH_CHURN_IDLE_MS`,
//! default 2,000).
//!
//! A default host with guest `stateful` (a std counter that saves after each `Add`) deployed as
//! the virtual type `counter`, its store in a temporary directory. The bench's client sends one
//! `Add` to each key `counter/k0`, `counter/k1`, ... in chunks of 1,000, and holds back while
//! `activations − evictions` (the host's counters) is within a chunk of the active bound; idle
//! keys are deactivated and evicted after the idle timeout. It reports the peak of active keys,
//! the peak resident memory (sampled every chunk and every 100 ms while held back), the memory
//! after every key was evicted, and checks a sample of keys (every 997th) for its saved value.

use std::time::{Duration, Instant};

use bunraku_bench::procfs::rss_kib;
use bunraku_runtime::{Host, HostConfig};
use serde_json::json;

fn main() {
    bunraku_bench::init_logging();
    let keys = bunraku_bench::env_usize("BUNRAKU_BENCH_CHURN_KEYS", 1_000_000);
    let max_active = bunraku_bench::env_usize("BUNRAKU_BENCH_CHURN_ACTIVE", 100_000) as u64;
    let idle =
        Duration::from_millis(bunraku_bench::env_usize("BUNRAKU_BENCH_CHURN_IDLE_MS", 2000) as u64);
    const CHUNK: usize = 1000;

    let dir = std::env::temp_dir().join(format!("bunraku-bench-churn-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let host = Host::new(HostConfig {
        guest_threads: bunraku_bench::guest_threads(),
        data_dir: Some(dir.clone()),
        ..HostConfig::default()
    })
    .expect("host starts");
    let wasm = bunraku_bench::guest("stateful");
    let mut counter = bunraku_bench::spec("counter", &wasm);
    counter.virtual_idle = Some(idle);
    bunraku_bench::deploy(&host, &counter);
    let ctl = bunraku_bench::control_runtime();

    let active = |host: &Host| {
        let t = host.totals();
        t.activations.saturating_sub(t.evictions)
    };
    let before = rss_kib();
    let (mut peak_rss, mut peak_active, mut held) = (before, 0u64, Duration::ZERO);
    let start = Instant::now();
    ctl.block_on(async {
        for (c, chunk) in (0..keys).collect::<Vec<_>>().chunks(CHUNK).enumerate() {
            let hold = Instant::now();
            while active(&host) + CHUNK as u64 > max_active {
                peak_rss = peak_rss.max(rss_kib());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            held += hold.elapsed();
            bunraku_bench::add_one_to_keys(&host, chunk).await;
            peak_active = peak_active.max(active(&host));
            peak_rss = peak_rss.max(rss_kib());
            if c % 100 == 99 {
                eprintln!(
                    "{} keys sent, {} active, RSS {} MiB, {:.0} s",
                    (c + 1) * CHUNK,
                    active(&host),
                    rss_kib() / 1024,
                    start.elapsed().as_secs_f64()
                );
            }
        }
    });
    let sent = start.elapsed();
    // Every key evicted: only the store holds them.
    let deadline = Instant::now() + idle * 10 + Duration::from_secs(60);
    while Instant::now() < deadline && active(&host) > 0 {
        peak_rss = peak_rss.max(rss_kib());
        std::thread::sleep(Duration::from_millis(100));
    }
    let all_idle = rss_kib();
    let totals = host.totals();
    // A sample of keys, each activated again from the store: one `Add` each, so 1.
    let mut wrong = 0;
    let sample: Vec<usize> = (0..keys).step_by(997).collect();
    ctl.block_on(async {
        for i in &sample {
            let v = host
                .call_json(&format!("counter/k{i}"), Some("Get"), json!({}))
                .await
                .expect("get");
            if v != json!(1) {
                wrong += 1;
            }
        }
    });
    let db = std::fs::metadata(dir.join("state.sqlite3")).map_or(0, |m| m.len());
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!("## churn ({})", bunraku_bench::machine_line());
    println!(
        "| keys | active bound | peak active | RSS before | peak RSS | RSS with all evicted | store file | time (held back) | activations | evictions | sampled keys wrong |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {keys} | {max_active} | {peak_active} | {:.0} MiB | {:.0} MiB | {:.0} MiB | {:.0} MiB | {:.0} s ({:.0} s) | {} | {} | {wrong} of {} |",
        mib(before),
        mib(peak_rss),
        mib(all_idle),
        db as f64 / (1 << 20) as f64,
        sent.as_secs_f64(),
        held.as_secs_f64(),
        totals.activations,
        totals.evictions,
        sample.len(),
    );
    drop(host);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(wrong, 0, "sampled keys lost their state");
}
