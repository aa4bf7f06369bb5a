//! Virtual actor activation, spawn time, and resident memory per idle actor holding state.
//!
//! `cargo bench -p bunraku-bench --bench activation` (`BUNRAKU_BENCH_KEYS=n` sets the keys timed,
//! default 2,000; `BUNRAKU_BENCH_DENSITY=10000,100000` the memory cases).
//!
//! - activation: a default host with guest `stateful` (a std counter) deployed as the virtual
//!   type `counter`. For each new key, a request `Get` to `counter/KEY` from the bench's client:
//!   the registry misses, the activation is registered, its task instantiates the module, runs
//!   `on_start` (which loads the key's state: none) and the handler, and the reply comes back.
//!   Held against the same request to an already active key, alternating in the same run; the
//!   difference of the medians is the activation itself. A second host with the slot
//!   allocator's warm pool off (`warm_slots = 0`: every new instance page-faults on fresh
//!   memory) takes the same new keys in the same loop, so the two are compared side by side,
//!   also stage by stage (creating the `Store`, instantiating, the first entry with `on_start`,
//!   from the host's own figures, `Host::totals`).
//! - spawn: guest `testbed` asks the host to spawn a `testbed` (`ctx.spawn`), then the new actor
//!   answers a `Ping`; the time of both requests, from the bench's client.
//! - memory: in a child process per case, N keys each activated by an `Add` (instantiated, has
//!   handled a message, holds state in the store); (RSS after − RSS before) / N including every
//!   host structure; then, after the idle timeout deactivated and evicted them, the same per
//!   idle key (what is left: memory the allocator kept, the store's page cache).

use std::process::Command;
use std::time::{Duration, Instant};

use bunraku_bench::procfs::rss_kib;
use bunraku_runtime::{ClientMessage, Host, HostConfig};
use serde_json::json;

const CHILD: &str = "BUNRAKU_ACTIVATION_CHILD";

fn data_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("bunraku-bench-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn host_with_counter(idle: Duration, dir: &std::path::Path) -> Host {
    host_with_counter_on(idle, dir, HostConfig::default())
}

fn host_with_counter_on(idle: Duration, dir: &std::path::Path, base: HostConfig) -> Host {
    let config = HostConfig {
        guest_threads: bunraku_bench::guest_threads(),
        data_dir: Some(dir.to_path_buf()),
        ..base
    };
    let host = Host::new(config).expect("host starts");
    let wasm = bunraku_bench::guest("stateful");
    let mut counter = bunraku_bench::spec("counter", &wasm);
    counter.virtual_idle = Some(idle);
    bunraku_bench::deploy(&host, &counter);
    host
}

async fn get(host: &Host, key: &str) -> Duration {
    let start = Instant::now();
    host.call_json(key, Some("Get"), json!({}))
        .await
        .expect("get");
    start.elapsed()
}

fn median_us(v: &[Duration]) -> f64 {
    let mut v = v.to_vec();
    v.sort();
    percentile(&v, 0.5).as_secs_f64() * 1e6
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn row(label: &str, mut v: Vec<Duration>) -> String {
    v.sort();
    format!(
        "| {label} | {} | {:.1} µs | {:.1} µs | {:.1} µs |",
        v.len(),
        percentile(&v, 0.5).as_secs_f64() * 1e6,
        percentile(&v, 0.9).as_secs_f64() * 1e6,
        percentile(&v, 0.99).as_secs_f64() * 1e6,
    )
}

fn main() {
    if let Ok(case) = std::env::var(CHILD) {
        memory_case(case.parse().expect("count"));
        std::process::exit(0);
    }
    bunraku_bench::init_logging();
    let keys = bunraku_bench::env_usize("BUNRAKU_BENCH_KEYS", 2000);
    let ctl = bunraku_bench::control_runtime();

    // Activation against an active key, alternating; and on a host without warm slots.
    let dir = data_dir("activation");
    let cold_dir = data_dir("activation-cold");
    let host = host_with_counter(Duration::from_secs(3600), &dir);
    let mut cold_config = HostConfig::default();
    cold_config.engine_config.memory.warm_slots = 0;
    let cold = host_with_counter_on(Duration::from_secs(3600), &cold_dir, cold_config);
    let (mut new_key, mut active_key, mut new_key_cold) = (Vec::new(), Vec::new(), Vec::new());
    ctl.block_on(async {
        get(&host, "counter/warm").await;
        get(&cold, "counter/warm").await;
        for i in 0..keys {
            new_key.push(get(&host, &format!("counter/k{i}")).await);
            new_key_cold.push(get(&cold, &format!("counter/k{i}")).await);
            active_key.push(get(&host, "counter/warm").await);
        }
    });
    let slots = host.engine().memory_stats();
    // Where an instance's start went, stage by stage, on both hosts (every instance of each
    // host: the new keys and the one active key).
    let (starts, cold_starts) = (host.totals().starts, cold.totals().starts);
    drop(host);
    drop(cold);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&cold_dir);
    let activation = |new: &[Duration]| median_us(new) - median_us(&active_key);
    let (warm_activation, cold_activation) = (activation(&new_key), activation(&new_key_cold));

    // Spawn: a testbed spawns a testbed, which then answers.
    let host = bunraku_bench::host();
    let testbed = bunraku_bench::guest("testbed");
    bunraku_bench::deploy(&host, &bunraku_bench::spec("boss", &testbed));
    host.define_spawnable("worker", &bunraku_bench::spec("worker", &testbed), &testbed)
        .expect("spawnable");
    let mut spawn = Vec::new();
    ctl.block_on(async {
        for i in 0..keys {
            let name = format!("w{i}");
            let start = Instant::now();
            let r = host
                .call_json(
                    "boss",
                    Some("SpawnChild"),
                    json!({"module": "worker", "name": name, "config": null}),
                )
                .await
                .expect("spawn request");
            assert_eq!(r, json!({"Ok": null}), "spawn of {name}");
            host.call_json(&name, Some("Ping"), json!({}))
                .await
                .expect("ping");
            spawn.push(start.elapsed());
        }
    });
    drop(host);

    println!("## activation ({})", bunraku_bench::machine_line());
    println!("| case | samples | p50 | p90 | p99 |\n|---|---|---|---|---|");
    println!(
        "{}",
        row(
            "`Get` to a new key (activation, `on_start` with `load`, handler)",
            new_key
        )
    );
    println!(
        "{}",
        row(
            "`Get` to a new key, slot allocator without warm slots (`warm_slots = 0`)",
            new_key_cold
        )
    );
    println!("{}", row("`Get` to an active key", active_key));
    println!(
        "{}",
        row(
            "spawn (`SpawnChild` request) + first `Ping` of the child",
            spawn
        )
    );

    println!(
        "\nactivation (p50 new key − p50 active key): {warm_activation:.1} µs; without warm slots \
         {cold_activation:.1} µs (ratio {:.2}); warm slots handed out {} of {} instances, {} prefaulted",
        warm_activation / cold_activation,
        slots.warm_hits,
        keys + 1,
        slots.prefaulted,
    );

    println!(
        "\nInstance start by stage, mean per instance over {} and {} starts (`Host::totals`, \
         `bunraku_instance_start_seconds_total`):\n\n\
         | stage | warm slots | without (`warm_slots = 0`) | ratio |\n|---|---|---|---|",
        starts.count, cold_starts.count
    );
    for ((stage, warm), (_, cold)) in starts.mean_us().into_iter().zip(cold_starts.mean_us()) {
        println!(
            "| {stage} | {warm:.1} µs | {cold:.1} µs | {:.2} |",
            warm / cold
        );
    }

    let exe = std::env::current_exe().expect("own path");
    let counts: Vec<usize> = std::env::var("BUNRAKU_BENCH_DENSITY")
        .unwrap_or_else(|_| "10000,100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    println!(
        "\n| keys | RSS per active key (instance + state) | RSS per idle key (evicted) | activation time per key (batch) |\n|---|---|---|---|"
    );
    for n in counts {
        let out = Command::new(&exe)
            .env(CHILD, n.to_string())
            .output()
            .expect("child runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        match stdout.lines().find_map(|l| l.strip_prefix("RESULT ")) {
            Some(line) => println!("{line}"),
            None => eprintln!(
                "memory case {n} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }
}

/// One memory case in a fresh process: N keys activated, then deactivated.
fn memory_case(n: usize) {
    bunraku_bench::init_logging();
    // Long enough that no key goes idle before the `Get` round reaches it.
    let idle = Duration::from_secs(5) + Duration::from_micros(300) * n as u32;
    let dir = data_dir(&format!("memory-{n}"));
    let host = host_with_counter(idle, &dir);
    let ctl = bunraku_bench::control_runtime();
    ctl.block_on(get(&host, "counter/warm"));
    let before = rss_kib();
    let start = Instant::now();
    ctl.block_on(async {
        // Batches, so mailboxes and the store's queue stay small.
        for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
            bunraku_bench::add_one_to_keys(&host, chunk).await;
        }
        // Every key handled its `Add` (and saved): `Get` behind it on each.
        for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
            let gets = chunk.iter().map(|i| {
                let host = &host;
                async move {
                    // Behind an `Add` whose save waits for its group commit, on a loaded host.
                    let get = ClientMessage::json(format!("counter/k{i}"), Some("Get"), &json!({}))
                        .with_timeout(Duration::from_secs(120));
                    host.request(get).await.expect("get");
                }
            });
            futures::future::join_all(gets).await;
        }
    });
    let elapsed = start.elapsed();
    let active = rss_kib();
    // Wait for the eviction of every key (idle timeout, `on_stop`, then out of the registry).
    let deadline = Instant::now() + idle * 6 + Duration::from_secs(n as u64 / 1000);
    while Instant::now() < deadline && host.totals().evictions < n as u64 {
        std::thread::sleep(Duration::from_millis(200));
    }
    let evicted = host.totals().evictions;
    let after = rss_kib();
    let per = |kib: u64| kib.saturating_sub(before) as f64 / n as f64;
    println!(
        "RESULT | {n} | {:.1} KiB | {:.1} KiB ({evicted} of {n} evicted) | {:.0} µs |",
        per(active),
        per(after),
        elapsed.as_secs_f64() * 1e6 / n as f64
    );
    let _ = std::fs::remove_dir_all(&dir);
}
