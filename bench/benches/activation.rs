//! Virtual actor activation, spawn time, and resident memory per idle actor holding state.
//!
//! `cargo bench -p bunraku-bench --bench activation` (`BUNRAKU_BENCH_KEYS=n` sets the keys timed,
//! default 2,000; `BUNRAKU_BENCH_DENSITY=10000,100000` the memory cases).
//!
//! - activation: a default host with guest `stateful` (a std counter) deployed as the virtual
//!   type `counter`. For each new key, a request `Get` to `counter/KEY` from the bench's client:
//!   the registry misses, the activation is registered, its task instantiates the module, runs
//!   `on_start` (which loads the key's state: none, answered from the store's index of saved
//!   state without a read) and the handler, and the reply comes back.
//!   Held against the same request to an already active key, alternating in the same run; the
//!   difference of the medians is the activation itself. Two more hosts take the same new keys
//!   in the same loop, so the three are compared side by side: one that prepares no instances
//!   ahead (`prepared_instances = 0`), and one that has no warm slots either (`warm_slots = 0`:
//!   every new instance page-faults on fresh memory). Also stage by stage (creating the
//!   `Store`, instantiating, the first entry with `on_start`, from the host's own figures,
//!   `Host::totals`). Then, on the default host alone, keys that saved state before (written
//!   through its store first), whose `load` reads the file, alternating with more new keys and
//!   the active key.
//!   Then the keys of the first loop again, once idle and trimmed (`HostConfig::idle_trim`): the
//!   request brings the instance's pages back (image pages copied, patches applied) before the
//!   handler runs. Then the first entry's one-time work ahead or behind: the default host
//!   against one that fills function tables on first use and enters no prepared instance
//!   ahead (`lazy_tables = true`, `warm_prepared = false`), each host's active key then a new
//!   key, which host first alternating.
//! - first entry: on bare wasmtime (`bunraku_bench::bare`), a fresh instance's first entry
//!   (`Start` and one `Get`) against its second, and against the first entry of an instance
//!   entered once before with no event; right after each instance was made, and after all of
//!   them were (out of the caches); on an engine that fills function tables at instantiation
//!   (the host's) and on one that fills them on first use, alternating.
//! - spawn: guest `testbed` asks the host to spawn a `testbed` (`ctx.spawn`), then the new actor
//!   answers a `Ping`; the time of both requests, from the bench's client. Alternating, the same
//!   on a second host whose spawnable module prepares no instances (`prepared_instances = 0`).
//! - memory: in a child process per case, N keys each activated by an `Add` (instantiated, has
//!   handled a message, holds state in the store); (RSS after − RSS before) / N including every
//!   host structure; then the same once every key was idle long enough to be trimmed
//!   (`HostConfig::idle_trim`, set past the end of the activations: its zero pages, the
//!   unchanged pages of its data segments and, as patches, the pages that changed a little
//!   given back); then, after the idle timeout deactivated
//!   and evicted them, the same per idle key (what is left: memory the allocator kept, the
//!   store's page cache). Each figure is split into linear memory (the slot chunks' `Rss` in
//!   `/proc/self/smaps`) and the rest. Next to it the floor: N bare wasmtime instances of the
//!   same module (`bunraku_bench::bare`), started, then trimmed the same way, then restored
//!   (the trims and the restores timed per instance).

use std::process::Command;
use std::time::{Duration, Instant};

use bunraku_bench::procfs::{minor_faults, rss_kib, rss_of_mappings_kib};
use bunraku_runtime::manifest::ActorSpec;
use bunraku_runtime::{ClientMessage, Host, HostConfig};
use serde_json::json;

const CHILD: &str = "BUNRAKU_ACTIVATION_CHILD";

/// A host the activation case compares: its data directory's tag, its label, and how it
/// changes the default configuration.
type Variant = (&'static str, &'static str, fn(&mut HostConfig));

fn data_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("bunraku-bench-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A host per variant with the counter deployed (idle timeout one hour), each with its own data
/// directory.
fn start_hosts(variants: &[Variant]) -> Vec<(std::path::PathBuf, Host)> {
    variants
        .iter()
        .map(|(tag, _, configure)| {
            let dir = data_dir(tag);
            let mut config = HostConfig::default();
            configure(&mut config);
            let host = host_with_counter_on(Duration::from_secs(3600), &dir, config);
            (dir, host)
        })
        .collect()
}

/// Stops the hosts of [`start_hosts`] and removes their data directories.
fn stop_hosts(hosts: Vec<(std::path::PathBuf, Host)>) {
    for (dir, host) in hosts {
        drop(host);
        let _ = std::fs::remove_dir_all(&dir);
    }
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
        match case.strip_prefix("bare:") {
            Some(n) => bare_memory_case(n.parse().expect("count")),
            None => memory_case(case.parse().expect("count")),
        }
        std::process::exit(0);
    }
    bunraku_bench::init_logging();
    let keys = bunraku_bench::env_usize("BUNRAKU_BENCH_KEYS", 2000);
    let ctl = bunraku_bench::control_runtime();

    // Activation against an active key, alternating, on three hosts side by side: the default
    // one (warm slots, prepared instances), one that prepares no instances, and one that has
    // neither (every instance made on the spot in fresh memory).
    let variants: [Variant; 3] = [
        ("activation", "default host", |_| {}),
        (
            "activation-unprepared",
            "no prepared instances (`prepared_instances = 0`)",
            |c| c.prepared_instances = 0,
        ),
        (
            "activation-cold",
            "neither prepared instances nor warm slots (`warm_slots = 0`)",
            |c| {
                c.prepared_instances = 0;
                c.engine_config.memory.warm_slots = 0;
            },
        ),
    ];
    let hosts = start_hosts(&variants);
    let mut new_key: Vec<Vec<Duration>> = vec![Vec::new(); hosts.len()];
    let mut active_key = Vec::new();
    // Minor page faults of the whole process during each kind of request (they include what
    // runs meanwhile, such as a pool refilling after a take).
    let mut new_key_faults = vec![0u64; hosts.len()];
    let mut active_key_faults = 0u64;
    ctl.block_on(async {
        for (_, host) in &hosts {
            get(host, "counter/warm").await;
        }
        for i in 0..keys {
            for (((_, host), times), faults) in
                hosts.iter().zip(&mut new_key).zip(&mut new_key_faults)
            {
                let before = minor_faults();
                times.push(get(host, &format!("counter/k{i}")).await);
                *faults += minor_faults() - before;
            }
            let before = minor_faults();
            active_key.push(get(&hosts[0].1, "counter/warm").await);
            active_key_faults += minor_faults() - before;
        }
    });
    let slots = hosts[0].1.engine().memory_stats();
    // Where an instance's start went, stage by stage, on each host (every instance of each
    // host: the new keys and the one active key).
    let starts: Vec<_> = hosts.iter().map(|(_, h)| h.totals().starts).collect();

    // Keys that saved state before (a previous run, an evicted activation): their `load` reads
    // the file, where a new key's is answered from the store's index of saved state. On the
    // default host alone, alternating with new keys and the active key.
    let default_host = &hosts[0].1;
    let store = default_host.store().expect("store");
    let (mut saved_key, mut new_key_2, mut active_key_2) = (Vec::new(), Vec::new(), Vec::new());
    let mut second_loop_prepared = (0, 0);
    ctl.block_on(async {
        for i in 0..keys {
            // The counter's `Saved { value: 7, pad: [] }` in postcard.
            let saved = store.save(format!("counter/s{i}").into(), 0, vec![7, 0]);
            saved.await.expect("save");
        }
        let skipped = store.stats().loads_skipped;
        let starts = default_host.totals().starts;
        for i in 0..keys {
            saved_key.push(get(default_host, &format!("counter/s{i}")).await);
            new_key_2.push(get(default_host, &format!("counter/n{i}")).await);
            active_key_2.push(get(default_host, "counter/warm").await);
        }
        let after = default_host.totals().starts;
        second_loop_prepared = (after.prepared - starts.prepared, after.count - starts.count);
        assert_eq!(
            store.stats().loads_skipped - skipped,
            keys as u64,
            "every new key's load, and none of the saved keys', is answered from the index"
        );
    });
    let saved_vs_new = (
        median_us(&saved_key) - median_us(&active_key_2),
        median_us(&new_key_2) - median_us(&active_key_2),
    );

    // Keys of the first loop, idle since and trimmed (`HostConfig::idle_trim`, 1 s by default):
    // their next request copies their image pages back first. Alternating with the active key.
    let trims = || default_host.engine().memory_stats();
    let deadline = Instant::now() + Duration::from_secs(30);
    while trims().trims < keys as u64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let before_trimmed = trims();
    let (mut trimmed_key, mut active_key_3) = (Vec::new(), Vec::new());
    ctl.block_on(async {
        for i in 0..keys {
            trimmed_key.push(get(default_host, &format!("counter/k{i}")).await);
            active_key_3.push(get(default_host, "counter/warm").await);
        }
    });
    let after_trimmed = trims();
    let restored_per_key =
        (after_trimmed.pages_restored - before_trimmed.pages_restored) as f64 / keys as f64;
    let trimmed_extra = median_us(&trimmed_key) - median_us(&active_key_3);
    stop_hosts(hosts);
    let activation: Vec<f64> = new_key
        .iter()
        .map(|new| median_us(new) - median_us(&active_key))
        .collect();

    // The first entry's one-time work moved ahead: the default host against one that fills
    // function tables on first use and hands out prepared instances never entered (as before
    // both were changed), side by side. Each host gets its active key, then a new key, after
    // eight untimed requests; which host goes first alternates.
    let pair = start_hosts(&[
        ("activation-ahead", "default host", |_| {}),
        (
            "activation-behind",
            "one-time work in the first entry",
            |c| {
                c.engine_config.lazy_tables = true;
                c.warm_prepared = false;
            },
        ),
    ]);
    let (mut pair_new, mut pair_active) = (vec![Vec::new(); 2], vec![Vec::new(); 2]);
    ctl.block_on(async {
        for (_, host) in &pair {
            get(host, "counter/warm").await;
        }
        for i in 0..keys {
            for h in [i % 2, 1 - i % 2] {
                let host = &pair[h].1;
                // Untimed: the refill the last activation asked for (an instantiation and, on
                // the default host, the entry ahead: 50–150 µs) runs meanwhile, with both cores
                // still busy (idle cores of this VM wake slowly).
                for _ in 0..8 {
                    get(host, "counter/warm").await;
                }
                pair_active[h].push(get(host, "counter/warm").await);
                pair_new[h].push(get(host, &format!("counter/k{i}")).await);
            }
        }
    });
    let pair_first_entry: Vec<f64> = pair
        .iter()
        .map(|(_, h)| h.totals().starts.mean_us()[2].1)
        .collect();
    let pair_prepared: Vec<(u64, u64)> = pair
        .iter()
        .map(|(_, h)| (h.totals().starts.prepared, h.totals().starts.count))
        .collect();
    stop_hosts(pair);
    let pair_activation: Vec<f64> = pair_new
        .iter()
        .zip(&pair_active)
        .map(|(new, active)| median_us(new) - median_us(active))
        .collect();

    // Spawn: a testbed spawns a testbed, which then answers; from the module's prepared
    // instances (the default) and, alternating, on a second host, from a module that prepares
    // none. (On one host, the refill after a prepared spawn would run on the lane right before
    // the next spawn, which then waited for it.)
    let testbed = bunraku_bench::guest("testbed");
    let template = bunraku_bench::spec("worker", &testbed);
    let spawn_hosts: Vec<Host> = [None, Some(0)]
        .into_iter()
        .map(|prepared_instances| {
            let host = bunraku_bench::host();
            bunraku_bench::deploy(&host, &bunraku_bench::spec("boss", &testbed));
            let template = ActorSpec {
                prepared_instances,
                ..template.clone()
            };
            host.define_spawnable("worker", &template, &testbed)
                .expect("spawnable");
            host
        })
        .collect();
    let mut spawn = [Vec::new(), Vec::new()];
    ctl.block_on(async {
        for i in 0..keys {
            for (host, times) in spawn_hosts.iter().zip(&mut spawn) {
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
                times.push(start.elapsed());
            }
        }
    });
    drop(spawn_hosts);

    println!("## activation ({})", bunraku_bench::machine_line());
    println!("| case | samples | p50 | p90 | p99 |\n|---|---|---|---|---|");
    for ((_, case, _), times) in variants.iter().zip(new_key) {
        println!(
            "{}",
            row(
                &format!(
                    "`Get` to a new key (activation, `on_start` with `load`, handler), {case}"
                ),
                times
            )
        );
    }
    println!("{}", row("`Get` to an active key", active_key));
    println!(
        "{}",
        row(
            "`Get` to a key with saved state (activation, `on_start` with a `load` that reads the file, handler), default host, second loop",
            saved_key
        )
    );
    println!(
        "{}",
        row("`Get` to a new key, default host, second loop", new_key_2)
    );
    println!(
        "{}",
        row("`Get` to an active key, second loop", active_key_2)
    );
    println!(
        "{}",
        row(
            "`Get` to a key idle and trimmed (its pages brought back first), default host, third loop",
            trimmed_key
        )
    );
    println!(
        "{}",
        row("`Get` to an active key, third loop", active_key_3)
    );
    let spawn_p50 = [median_us(&spawn[0]), median_us(&spawn[1])];
    let [spawn_prepared, spawn_unprepared] = spawn;
    println!(
        "{}",
        row(
            "spawn (`SpawnChild` request) + first `Ping` of the child",
            spawn_prepared
        )
    );
    println!(
        "{}",
        row(
            "the same on a host whose module prepares no instances (`prepared_instances = 0`)",
            spawn_unprepared
        )
    );

    println!(
        "\nactivation (p50 new key − p50 active key): {:.1} µs on the default host; {:.1} µs \
         without prepared instances (ratio {:.2}); {:.1} µs without either (ratio {:.2}); \
         warm slots handed out {} of the default host's instances, {} prefaulted",
        activation[0],
        activation[1],
        activation[0] / activation[1],
        activation[2],
        activation[0] / activation[2],
        slots.warm_hits,
        slots.prefaulted,
    );
    println!(
        "\nspawn (p50), from the module's prepared instances against instantiating, alternating: \
         {:.1} against {:.1} µs (ratio {:.2})",
        spawn_p50[0],
        spawn_p50[1],
        spawn_p50[0] / spawn_p50[1],
    );
    let per = |faults: u64| faults as f64 / keys as f64;
    println!(
        "\nminor page faults per request, whole process: new key {:.1} on the default host, {:.1} \
         without prepared instances, {:.1} without either; active key {:.1}",
        per(new_key_faults[0]),
        per(new_key_faults[1]),
        per(new_key_faults[2]),
        per(active_key_faults),
    );
    println!(
        "\none-time work ahead (default host) against behind (`lazy_tables = true`, \
         `warm_prepared = false`), side by side: new key p50 {:.1} against {:.1} µs (ratio {:.2}); \
         active key p50 {:.1} against {:.1} µs; activation {:.1} against {:.1} µs (ratio {:.2}); \
         first entry, mean, {:.1} against {:.1} µs; starts that took a prepared instance {} of {} \
         against {} of {}",
        median_us(&pair_new[0]),
        median_us(&pair_new[1]),
        median_us(&pair_new[0]) / median_us(&pair_new[1]),
        median_us(&pair_active[0]),
        median_us(&pair_active[1]),
        pair_activation[0],
        pair_activation[1],
        pair_activation[0] / pair_activation[1],
        pair_first_entry[0],
        pair_first_entry[1],
        pair_prepared[0].0,
        pair_prepared[0].1,
        pair_prepared[1].0,
        pair_prepared[1].1,
    );
    println!(
        "\nsecond loop (default host): activation of a key with saved state {:.1} µs, of a new key \
         {:.1} µs (ratio {:.2}; a new key's `load` is answered from the index of saved state); \
         starts that took a prepared instance: {} of {}",
        saved_vs_new.0,
        saved_vs_new.1,
        saved_vs_new.1 / saved_vs_new.0,
        second_loop_prepared.0,
        second_loop_prepared.1,
    );
    println!(
        "\nthird loop (default host): a trimmed key's request costs {trimmed_extra:.1} µs more \
         than the active key's at the median ({restored_per_key:.1} pages brought back per key; \
         {} trims with {:.1} pages given back each, {:.1} of them patched, before the loop)",
        before_trimmed.trims,
        before_trimmed.pages_trimmed as f64 / before_trimmed.trims.max(1) as f64,
        before_trimmed.pages_patched as f64 / before_trimmed.trims.max(1) as f64,
    );
    println!(
        "\nInstance start by stage, mean per instance (`Host::totals`, \
         `bunraku_instance_start_seconds_total`); starts that took a prepared instance: {} of {} \
         on the default host:\n",
        starts[0].prepared, starts[0].count
    );
    println!(
        "| stage | {} |\n|---|---|---|---|",
        variants.map(|(_, case, _)| case).join(" | ")
    );
    for stage in 0..3 {
        let means: Vec<String> = starts
            .iter()
            .map(|s| format!("{:.1} µs", s.mean_us()[stage].1))
            .collect();
        println!(
            "| {} | {} |",
            starts[0].mean_us()[stage].0,
            means.join(" | ")
        );
    }

    first_entry_case(keys);

    let exe = std::env::current_exe().expect("own path");
    let counts: Vec<usize> = std::env::var("BUNRAKU_BENCH_DENSITY")
        .unwrap_or_else(|_| "10000,100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    println!(
        "\n| keys | RSS per active key (instance + state) | the same once idle and trimmed | RSS per idle key (evicted) | activation time per key (batch) |\n|---|---|---|---|---|"
    );
    for n in counts {
        for case in [n.to_string(), format!("bare:{n}")] {
            let out = Command::new(&exe)
                .env(CHILD, &case)
                .output()
                .expect("child runs");
            let stdout = String::from_utf8_lossy(&out.stdout);
            match stdout.lines().find_map(|l| l.strip_prefix("RESULT ")) {
                Some(line) => println!("{line}"),
                None => eprintln!(
                    "memory case {case} failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                ),
            }
        }
    }
}

/// The first entry of a fresh instance (`Start`, `on_start`, one `Get`) against its second (one
/// `Get`), on bare wasmtime with the host's engine (`bunraku_bench::bare`, whose `load` stub
/// answers `NotFound`, as the host does for a new key): the one-time work of an activation's
/// first entry without the host around it. Alternating in the same loop, the same entry on an
/// instance that was first entered once with no event (`BareInstance::warm_up`, which sets up the
/// SDK's executor), and all of it on two engines side by side: the host's (function tables filled
/// at instantiation) and one that fills them on first use (`lazy_tables`). Twice: each instance
/// entered right after it was made, and every instance entered after all `keys` of them were
/// made (its memory and host structures out of the caches, as a prepared instance's may be).
fn first_entry_case(keys: usize) {
    use std::sync::Arc;

    use bunraku_abi::{Codec, Envelope, Event};
    use bunraku_bench::bare::{BareInstance, BareModule};
    use bunraku_runtime::engine::{Engine, EngineConfig};

    let wasm = std::fs::read(bunraku_bench::guest("stateful")).expect("module");
    let engines: Vec<(&str, Engine)> = [
        ("filled at instantiation", false),
        ("filled on first use", true),
    ]
    .into_iter()
    .map(|(label, lazy_tables)| {
        let config = EngineConfig {
            lazy_tables,
            ..EngineConfig::default()
        };
        (label, Engine::new(config).expect("engine"))
    })
    .collect();
    let modules: Vec<BareModule> = engines
        .iter()
        .map(|(_, e)| BareModule::load(e.wasmtime(), &wasm, e.store_limits(16 << 20)))
        .collect();
    let get = Envelope {
        id: 1,
        msg_type: "Get".into(),
        codec: Codec::Postcard,
        reply: Some(1),
        deadline_ms: None,
        chain: Vec::new(),
        trace: None,
        sender: Some("client".into()),
        subject: None,
        idempotency_key: None,
        attachments: Vec::new(),
        ext: Vec::new(),
        payload: Vec::new(),
        stream: None,
    };
    let script = Arc::new(vec![bunraku_abi::view::encode_event(&Event::Message(get))]);
    let instance = |module: &BareModule| {
        let start = Event::Start {
            name: "counter/k".into(),
            instance: 0,
            config: b"null".to_vec(),
        };
        module.instantiate(start, script.clone())
    };
    let timed = |i: &mut BareInstance, into: &mut Vec<Duration>| {
        let start = Instant::now();
        i.run(1);
        into.push(start.elapsed());
    };
    println!(
        "\nFirst entry of a fresh instance on bare wasmtime (guest `stateful`, {keys} instances \
         per row, the two engines alternating):\n\n| instances entered | function tables | first \
         entry (`Start` + `Get`), p50 | second entry (`Get`), p50 | first entry after a warm-up \
         entry, p50 |\n|---|---|---|---|---|"
    );
    for cold in [false, true] {
        // Per engine: first entries, second entries, first entries after a warm-up.
        let mut times = vec![(Vec::new(), Vec::new(), Vec::new()); modules.len()];
        let mut made = Vec::with_capacity(keys * modules.len());
        for _ in 0..keys {
            for (m, module) in modules.iter().enumerate() {
                let (mut plain, mut warm) = (instance(module), instance(module));
                warm.warm_up();
                if !cold {
                    let (first, second, warmed) = &mut times[m];
                    timed(&mut plain, first);
                    timed(&mut warm, warmed);
                    timed(&mut plain, second);
                }
                made.push((m, plain, warm));
            }
        }
        if cold {
            for (m, plain, warm) in &mut made {
                let (first, _, warmed) = &mut times[*m];
                timed(plain, first);
                timed(warm, warmed);
            }
            for (m, plain, _) in &mut made {
                timed(plain, &mut times[*m].1);
            }
        }
        for ((label, _), (first, second, warmed)) in engines.iter().zip(&times) {
            println!(
                "| {} | {label} | {:.1} µs | {:.1} µs | {:.1} µs |",
                if cold {
                    "after all were made"
                } else {
                    "each right after it was made"
                },
                median_us(first),
                median_us(second),
                median_us(warmed),
            );
        }
    }
}

/// The guests' linear memory: the resident KiB of the slot chunks (the process's only mappings of
/// `slot_size × slots_per_chunk` bytes, 64 GiB by default).
fn linear_kib() -> u64 {
    let slots = bunraku_runtime::memory::SlotConfig::default();
    rss_of_mappings_kib((slots.slot_size * slots.slots_per_chunk) as u64)
}

/// The floor, in a fresh process: N bare wasmtime instances of the same module on an engine
/// like the host's (`bunraku_bench::bare`: each store holds nothing else, the imports are
/// stubs), each started (`on_start`, whose `load` the stub answers `NotFound`), then each
/// trimmed as the host trims an idle instance.
fn bare_memory_case(n: usize) {
    use bunraku_runtime::memory::PageImage;
    let engine = bunraku_runtime::engine::Engine::new(Default::default()).expect("engine");
    let wasm = std::fs::read(bunraku_bench::guest("stateful")).expect("guest");
    let module = bunraku_bench::bare::BareModule::load(
        engine.wasmtime(),
        &wasm,
        engine.store_limits(16 << 20),
    );
    let script = std::sync::Arc::new(Vec::new());
    let start_event = || bunraku_abi::Event::Start {
        name: "counter".into(),
        instance: 0,
        config: b"null".to_vec(),
    };
    // The image as the host takes it: the first instance right after `_initialize`.
    let mut first = module.instantiate(start_event(), script.clone());
    let stack = first.stack().unwrap_or(0..0);
    let image = PageImage::capture(first.memory_mut(), engine.slots().page_size()).with_dead(stack);
    first.run(0);
    let (before, linear_before) = (rss_kib(), linear_kib());
    let start = Instant::now();
    let mut instances: Vec<_> = (0..n)
        .map(|_| {
            let mut instance = module.instantiate(start_event(), script.clone());
            instance.run(0);
            instance
        })
        .collect();
    let elapsed = start.elapsed();
    let (started, started_linear) = (rss_kib(), linear_kib());
    let trimming = Instant::now();
    let trimmed: Vec<_> = instances
        .iter_mut()
        .map(|i| engine.slots().trim(i.memory_mut(), &image).expect("trim"))
        .collect();
    let trim_us = trimming.elapsed().as_secs_f64() * 1e6 / n as f64;
    let (after, after_linear) = (rss_kib(), linear_kib());
    let per = |kib: u64, base: u64| kib.saturating_sub(base) as f64 / n as f64;
    let stats = engine.memory_stats();
    // Brought back, as before an instance's next entry: the copies and patches, and the page
    // faults of the pages they fill.
    let restoring = Instant::now();
    for (instance, trimmed) in instances.iter_mut().zip(trimmed) {
        engine
            .slots()
            .restore(trimmed, instance.memory_mut(), &image);
    }
    let restore_us = restoring.elapsed().as_secs_f64() * 1e6 / n as f64;
    println!(
        "RESULT | {n}, bare instance (floor) | {:.1} KiB, linear memory {:.1} KiB | {:.1} KiB, linear memory {:.1} KiB ({} trimmed, {:.1} pages each, {:.1} of them patched, {trim_us:.1} µs per trim, {restore_us:.1} µs per restore) | – | {:.0} µs |",
        per(started, before),
        per(started_linear, linear_before),
        per(after, before),
        per(after_linear, linear_before),
        stats.trims,
        stats.pages_trimmed as f64 / stats.trims.max(1) as f64,
        stats.pages_patched as f64 / stats.trims.max(1) as f64,
        elapsed.as_secs_f64() * 1e6 / n as f64
    );
}

/// One memory case in a fresh process: N keys activated, then deactivated.
fn memory_case(n: usize) {
    bunraku_bench::init_logging();
    // Long enough that no key is trimmed before the `Get` round ended, and none is deactivated
    // before every key was trimmed.
    let trim = Duration::from_secs(2) + Duration::from_micros(250) * n as u32;
    let idle = Duration::from_secs(5) + Duration::from_micros(600) * n as u32;
    let dir = data_dir(&format!("memory-{n}"));
    let host = host_with_counter_on(
        idle,
        &dir,
        HostConfig {
            idle_trim: Some(trim),
            ..HostConfig::default()
        },
    );
    let trims = || host.engine().memory_stats().trims;
    let ctl = bunraku_bench::control_runtime();
    ctl.block_on(get(&host, "counter/warm"));
    let before = rss_kib();
    let linear_before = linear_kib();
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
    let active_linear = linear_kib();
    let trimmed_early = trims();
    // Wait for every key (and the warm-up key) to be trimmed.
    let deadline = Instant::now() + trim * 3;
    while Instant::now() < deadline && trims() < n as u64 + 1 {
        std::thread::sleep(Duration::from_millis(100));
    }
    let trimmed = rss_kib();
    let trimmed_linear = linear_kib();
    let stats = host.engine().memory_stats();
    // Wait for the eviction of every key (idle timeout, `on_stop`, then out of the registry).
    let deadline = Instant::now() + idle * 6 + Duration::from_secs(n as u64 / 1000);
    while Instant::now() < deadline && host.totals().evictions < n as u64 {
        std::thread::sleep(Duration::from_millis(200));
    }
    let evicted = host.totals().evictions;
    let after = rss_kib();
    let per = |kib: u64| kib.saturating_sub(before) as f64 / n as f64;
    let per_linear = |kib: u64| kib.saturating_sub(linear_before) as f64 / n as f64;
    println!(
        "RESULT | {n} | {:.1} KiB, linear memory {:.1} KiB ({trimmed_early} trimmed) | {:.1} KiB, linear memory {:.1} KiB ({} trimmed, {:.1} pages each, {:.1} of them patched) | {:.1} KiB ({evicted} of {n} evicted) | {:.0} µs |",
        per(active),
        per_linear(active_linear),
        per(trimmed),
        per_linear(trimmed_linear),
        stats.trims,
        stats.pages_trimmed as f64 / stats.trims.max(1) as f64,
        stats.pages_patched as f64 / stats.trims.max(1) as f64,
        per(after),
        elapsed.as_secs_f64() * 1e6 / n as f64
    );
    let _ = std::fs::remove_dir_all(&dir);
}
