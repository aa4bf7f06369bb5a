//! Shared pieces of the bunraku benchmarks (`bench/benches/*.rs`, run with `cargo bench -p
//! bunraku-bench --bench NAME`; BENCHMARKS.md at the repository root has the commands and the
//! latest results).
//!
//! - Every bench runs the host as `bunraku run` does: [`HostConfig::default()`] (its own engine
//!   with the slot allocator and epoch interruption, `guest_threads` = cores) and a
//!   `tracing_subscriber` fmt subscriber at `info` ([`init_logging`]).
//! - Comparisons with plain tokio run in the same process, on a runtime built like the host's
//!   guest runtime ([`baseline_runtime`]), and alternate sample by sample; [`Paired`] turns the
//!   pairs into medians and the per-pair ratio with its range.
//! - [`bare`] runs a guest module on plain wasmtime with stub host functions: the cost of the
//!   guest alone (breakdown) and the memory floor of an instance (density).
//! - [`procfs`] reads resident memory and the mapping count of this process.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bunraku_runtime::build::{BuildOptions, build_guest};
use bunraku_runtime::engine::EngineConfig;
use bunraku_runtime::manifest::{ActorSpec, ModuleSource};
use bunraku_runtime::{Host, HostConfig};

pub mod bare;
pub mod pingpong;
pub mod procfs;

/// Installs the subscriber `bunraku run` uses by default: fmt at `info` (to stderr, so stdout
/// keeps only results). Nothing in the runtime logs per message at `info`.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::stderr)
        .try_init();
}

/// Whether a longer run was asked for (`BUNRAKU_BENCH_LONG=1`): more samples, longer samples.
pub fn long() -> bool {
    std::env::var("BUNRAKU_BENCH_LONG").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// An integer setting from the environment, or `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The repository root.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ has a parent")
}

/// The `.wasm` of guest crate `guests/<name>`, built (release, `wasm32-wasip1`) when stale.
pub fn guest(name: &str) -> PathBuf {
    let opts = BuildOptions {
        install_target: true,
        quiet: true,
    };
    build_guest(&repo().join("guests").join(name), &opts)
        .unwrap_or_else(|e| panic!("building guest {name}: {e}"))
}

/// A host as `bunraku run` makes it (`BUNRAKU_BENCH_GUEST_THREADS` overrides its worker count,
/// for experiments only).
pub fn host() -> Host {
    let config = HostConfig {
        guest_threads: guest_threads(),
        engine_config: EngineConfig {
            // A profiling aid that changes nothing measured: `perf report` then names the
            // guests' functions.
            perf_map: std::env::var_os("BUNRAKU_BENCH_PERFMAP").is_some(),
            ..EngineConfig::default()
        },
        ..HostConfig::default()
    };
    Host::new(config).expect("host starts")
}

/// The guest worker count of a default host (or `BUNRAKU_BENCH_GUEST_THREADS`).
pub fn guest_threads() -> usize {
    env_usize(
        "BUNRAKU_BENCH_GUEST_THREADS",
        HostConfig::default().guest_threads,
    )
}

/// A runtime built the way [`Host::new`] builds its guest runtime, for the plain tokio baselines.
pub fn baseline_runtime(threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name("baseline")
        .enable_all()
        .build()
        .expect("baseline runtime")
}

/// The runtime the bench drives requests from (like the CLI's control runtime: not the guests').
pub fn control_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("control runtime")
}

/// A spec for a built guest module.
pub fn spec(name: &str, wasm: &Path) -> ActorSpec {
    ActorSpec::new(name, ModuleSource::Wasm(wasm.to_path_buf()))
        .with_grants(bunraku_runtime::Grants::all())
}

/// Deploys a spec, panicking with the error.
pub fn deploy(host: &Host, spec: &ActorSpec) {
    let ModuleSource::Wasm(path) = &spec.module else {
        panic!("benches deploy built modules")
    };
    host.deploy(spec, path)
        .unwrap_or_else(|e| panic!("deploying {}: {e}", spec.name));
}

/// Sends `Add { n: 1 }` to the virtual keys `counter/k{i}` for every `i` in `keys`, all at
/// once, and waits until each is in its mailbox (the `stateful` guest as the type `counter`).
pub async fn add_one_to_keys(host: &Host, keys: &[usize]) {
    let adds = keys.iter().map(|i| async move {
        let add = bunraku_runtime::ClientMessage::json(
            format!("counter/k{i}"),
            Some("Add"),
            &serde_json::json!({"n": 1}),
        );
        host.send(add).await.expect("add");
    });
    futures::future::join_all(adds).await;
}

/// The median of some values (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Alternating samples of a wasm variant and its plain tokio baseline (higher is better).
#[derive(Debug, Default, Clone)]
pub struct Paired {
    /// The wasm variant's samples.
    pub wasm: Vec<f64>,
    /// The baseline's samples, `tokio[i]` taken right after `wasm[i]`.
    pub tokio: Vec<f64>,
}

impl Paired {
    /// Records one pair.
    pub fn push(&mut self, wasm: f64, tokio: f64) {
        self.wasm.push(wasm);
        self.tokio.push(tokio);
    }

    /// `wasm[i] / tokio[i]` for each pair.
    pub fn ratios(&self) -> Vec<f64> {
        self.wasm
            .iter()
            .zip(&self.tokio)
            .map(|(w, t)| w / t)
            .collect()
    }

    /// A markdown table row: label, pairs, median wasm, median tokio, median ratio, min–max.
    pub fn row(&self, label: &str, unit: &str) -> String {
        let r = self.ratios();
        let (lo, hi) = r
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
                (lo.min(x), hi.max(x))
            });
        format!(
            "| {label} | {} | {} {unit} | {} {unit} | {:.2} | {:.2}–{:.2} |",
            r.len(),
            si(median(&self.wasm)),
            si(median(&self.tokio)),
            median(&r),
            lo,
            hi
        )
    }

    /// The header for [`Paired::row`].
    pub fn header() -> &'static str {
        "| case | pairs | wasm (median) | tokio (median) | ratio (median) | ratio min–max |\n\
         |---|---|---|---|---|---|"
    }
}

/// A rate with an SI suffix: `1.23 M`.
pub fn si(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1} k", x / 1e3)
    } else {
        format!("{x:.1}")
    }
}

/// Events per second.
pub fn rate(events: u64, elapsed: Duration) -> f64 {
    events as f64 / elapsed.as_secs_f64()
}

/// The date today (UTC), for result headers.
pub fn today() -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// One line describing where and how a bench ran.
pub fn machine_line() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown cpu".into());
    format!(
        "{} ({} cores), guest_threads = {}, {}",
        cpu,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        guest_threads(),
        today()
    )
}
