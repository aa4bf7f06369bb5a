//! Density: resident memory and kernel mappings per live actor, and the time to start them.
//!
//! `cargo bench -p bunraku-bench --bench density` (`BUNRAKU_BENCH_DENSITY=10000,100000` sets the
//! actor counts; that is the default).
//!
//! Each case runs in a child process of its own (this program re-executed), so that every
//! measurement starts from a fresh heap:
//!
//! - `host N`: a default host; one warm-up actor first (compiles the module, starts the threads,
//!   maps the first slot chunk), then one `ActorSpec` of guest `testbed` with `instances = N` and
//!   config `{"grow_kib": 64}` (`on_start` allocates and keeps 64 KiB, growing the heap once),
//!   default limits (16 MiB of linear memory each). Started = every instance ran `on_start`,
//!   read from the slot allocator's committed bytes. Per actor = (RSS after − RSS before) / N,
//!   which includes every host structure (cell, mailbox, task, store, instance, linear memory).
//! - `bare N`: the floor: N wasmtime instances of the same module on the same kind of engine,
//!   each in a `Store` holding nothing else, each started the same way (see
//!   [`bunraku_bench::bare`]), with no mailbox, task or cell.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bunraku_abi::Event;
use bunraku_bench::bare::BareModule;
use bunraku_bench::procfs::{maps_count, max_map_count, rss_kib};
use bunraku_runtime::ClientMessage;
use serde::{Deserialize, Serialize};
use serde_json::json;

const CHILD: &str = "BUNRAKU_DENSITY_CHILD";
const WASM: &str = "BUNRAKU_DENSITY_WASM";
const CONFIG: &[u8] = br#"{"grow_kib":64}"#;

#[derive(Debug, Serialize, Deserialize)]
struct Outcome {
    case: String,
    requested: usize,
    started: usize,
    seconds: f64,
    rss_before_kib: u64,
    rss_after_kib: u64,
    maps_before: usize,
    maps_after: usize,
    committed_per_actor: u64,
    committed_total: u64,
    budget: u64,
    wall: Option<String>,
}

fn main() {
    if let Ok(case) = std::env::var(CHILD) {
        let (kind, n) = case.split_once(':').expect("kind:n");
        let n: usize = n.parse().expect("count");
        let wasm = std::fs::read(std::env::var(WASM).expect("module path")).expect("module");
        let outcome = match kind {
            "host" => host_case(n),
            _ => bare_case(&wasm, n),
        };
        println!("RESULT {}", serde_json::to_string(&outcome).unwrap());
        // Skip tearing down 100,000 instances.
        std::process::exit(0);
    }

    bunraku_bench::init_logging();
    let counts: Vec<usize> = std::env::var("BUNRAKU_BENCH_DENSITY")
        .unwrap_or_else(|_| "10000,100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let wasm = bunraku_bench::guest("testbed");
    let exe = std::env::current_exe().expect("own path");
    let mut outcomes = Vec::new();
    for &n in &counts {
        for kind in ["host", "bare"] {
            eprintln!("density: {kind} {n}");
            let out = Command::new(&exe)
                .env(CHILD, format!("{kind}:{n}"))
                .env(WASM, &wasm)
                .output()
                .expect("child runs");
            let stdout = String::from_utf8_lossy(&out.stdout);
            match stdout.lines().find_map(|l| l.strip_prefix("RESULT ")) {
                Some(json) => outcomes.push(serde_json::from_str::<Outcome>(json).unwrap()),
                None => eprintln!(
                    "density {kind} {n} failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                        .lines()
                        .rev()
                        .take(20)
                        .collect::<Vec<_>>()
                        .join("\n")
                ),
            }
        }
    }

    println!("## density ({})", bunraku_bench::machine_line());
    println!(
        "guest `testbed`, config {}, 16 MiB slots; vm.max_map_count = {}\n",
        String::from_utf8_lossy(CONFIG),
        max_map_count()
    );
    println!(
        "| case | actors | started | RSS per actor | mappings before → after | linear memory per actor | committed / budget | start time per actor | total | wall |\n\
         |---|---|---|---|---|---|---|---|---|---|"
    );
    for o in &outcomes {
        let per =
            (o.rss_after_kib.saturating_sub(o.rss_before_kib)) as f64 / o.started.max(1) as f64;
        println!(
            "| {} | {} | {} | {:.0} KiB | {} → {} | {} KiB | {} / {} MiB | {:.0} µs | {:.1} s | {} |",
            o.case,
            o.requested,
            o.started,
            per,
            o.maps_before,
            o.maps_after,
            o.committed_per_actor / 1024,
            o.committed_total >> 20,
            o.budget >> 20,
            o.seconds * 1e6 / o.started.max(1) as f64,
            o.seconds,
            o.wall.as_deref().unwrap_or("none")
        );
    }
}

fn host_case(n: usize) -> Outcome {
    bunraku_bench::init_logging();
    let path = std::env::var(WASM).unwrap();
    let host = bunraku_bench::host();
    let ctl = bunraku_bench::control_runtime();
    let config: serde_json::Value = serde_json::from_slice(CONFIG).unwrap();

    // Warm up: the module compiled and loaded, threads started, the first chunk mapped.
    let committed = || host.engine().memory_stats().committed_bytes;
    let mut warm = bunraku_bench::spec("warm", path.as_ref());
    warm.config = config.clone();
    bunraku_bench::deploy(&host, &warm);
    let stats = ctl
        .block_on(host.request(ClientMessage::json("warm", Some("GetStats"), &json!({}))))
        .expect("warm-up actor answers");
    assert_eq!(stats.json().unwrap()["held_bytes"], json!(64 * 1024));
    let per_actor = committed();

    let rss_before = rss_kib();
    let maps_before = maps_count();
    let base = committed();
    let start = Instant::now();
    let mut spec = bunraku_bench::spec("t", path.as_ref());
    spec.instances = n as u32;
    spec.config = config;
    bunraku_bench::deploy(&host, &spec);
    let target = base + n as u64 * per_actor;
    let mut last = (committed(), Instant::now());
    let mut done_at = None;
    loop {
        std::thread::sleep(Duration::from_millis(5));
        let now = committed();
        if now >= target {
            done_at = Some(Instant::now());
            break;
        }
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(5) {
            break;
        }
    }
    // Stalled: the time is until the last progress.
    let elapsed = done_at.unwrap_or(last.1) - start;
    let rss_after = rss_kib();
    let maps_after = maps_count();
    let stats = host.engine().memory_stats();
    let started = ((stats.committed_bytes - base) / per_actor) as usize;
    let f = stats.failures;
    let wall = [
        ("slot budget", f.slot_budget),
        ("host memory budget", f.host_budget),
        ("slot size", f.slot_size),
        ("mmap", f.mmap),
    ]
    .iter()
    .filter(|(_, c)| *c > 0)
    .map(|(w, c)| {
        format!(
            "{w} ({c} refusals; budget {} MiB, committed {} MiB)",
            stats.budget_bytes >> 20,
            stats.committed_bytes >> 20
        )
    })
    .collect::<Vec<_>>();
    Outcome {
        case: "host".into(),
        requested: n,
        started,
        seconds: elapsed.as_secs_f64(),
        rss_before_kib: rss_before,
        rss_after_kib: rss_after,
        maps_before,
        maps_after,
        committed_per_actor: per_actor,
        committed_total: stats.committed_bytes,
        budget: stats.budget_bytes,
        wall: (!wall.is_empty()).then(|| wall.join(", ")),
    }
}

fn bare_case(wasm: &[u8], n: usize) -> Outcome {
    let engine = bunraku_runtime::engine::Engine::new(Default::default()).expect("engine");
    let module = BareModule::load(engine.wasmtime(), wasm, engine.store_limits(16 << 20));
    let script = Arc::new(Vec::new());
    let start_event = |instance: u32| Event::Start {
        name: "t".into(),
        instance,
        config: CONFIG.to_vec(),
    };
    let mut warm = module.instantiate(start_event(0), script.clone());
    warm.run(0);
    let per_actor = engine.memory_stats().committed_bytes;

    let mut instances = Vec::with_capacity(n);
    let rss_before = rss_kib();
    let maps_before = maps_count();
    let start = Instant::now();
    let mut wall = None;
    for i in 0..n {
        let started = module
            .try_instantiate(start_event(i as u32), script.clone())
            .and_then(|mut inst| inst.try_run(0).map(|_| inst));
        match started {
            Ok(inst) => instances.push(inst),
            Err(e) => {
                wall = Some(e);
                break;
            }
        }
    }
    let elapsed = start.elapsed();
    let rss_after = rss_kib();
    let maps_after = maps_count();
    let stats = engine.memory_stats();
    Outcome {
        case: "bare".into(),
        requested: n,
        started: instances.len(),
        seconds: elapsed.as_secs_f64(),
        rss_before_kib: rss_before,
        rss_after_kib: rss_after,
        maps_before,
        maps_after,
        committed_per_actor: per_actor,
        committed_total: stats.committed_bytes,
        budget: stats.budget_bytes,
        wall: wall.map(|e| {
            e.lines()
                .next()
                .unwrap_or_default()
                .chars()
                .take(160)
                .collect()
        }),
    }
}
