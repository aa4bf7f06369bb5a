//! Shows what the standard library gives an actor under bunraku's WASI.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};

use bunraku_sdk::prelude::*;

/// Run every probe except the blocking sleep.
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(reply = ProbeReport)]
pub struct Probe {}

/// What each probe gave.
#[derive(Debug, Serialize, Deserialize)]
pub struct ProbeReport {
    /// `HashMap` works (it is seeded from `random_get`).
    pub hashmap: u64,
    /// `SystemTime::now()` as milliseconds since the Unix epoch (the host clock).
    pub unix_ms: u64,
    /// `Instant` moved forward across a short busy loop.
    pub monotonic_advanced: bool,
    /// What `std::fs::read_to_string("/etc/hostname")` returned.
    pub fs_read: String,
    /// What `std::fs::write("out.txt", ..)` returned.
    pub fs_write: String,
    /// What `std::env::args().count()` and `vars().count()` returned.
    pub args: usize,
    /// Environment variables visible.
    pub env_vars: usize,
    /// How many times the module's static constructor ran so far (once: the host calls
    /// `_initialize`, and no export runs the constructors again).
    pub constructor_runs: u32,
}

/// Runs of [`constructor`].
static CONSTRUCTOR_RUNS: AtomicU32 = AtomicU32::new(0);

/// A static constructor, as C++ globals and crates such as `ctor` or `inventory` make them: the
/// linker calls every function in `.init_array` from `__wasm_call_ctors`.
extern "C" fn constructor() {
    CONSTRUCTOR_RUNS.fetch_add(1, Ordering::Relaxed);
}

#[used]
#[unsafe(link_section = ".init_array")]
static CONSTRUCTOR: extern "C" fn() = constructor;

/// Call `std::thread::sleep` (a blocking wait: the host refuses it).
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(reply = String)]
pub struct Sleep {}

#[derive(Default)]
pub struct WasiProbe;

#[actor]
impl WasiProbe {
    #[handler]
    async fn probe(&mut self, _ctx: &Ctx, _msg: Probe) -> ProbeReport {
        println!("println from the wasi probe");
        eprintln!("eprintln from the wasi probe");
        let mut map = HashMap::new();
        for i in 0..100u64 {
            map.insert(i, i * 2);
        }
        let start = std::time::Instant::now();
        // Bounded: under a host's manual clock, time does not move by itself.
        for i in 0..10_000u64 {
            std::hint::black_box(i);
            if start.elapsed().as_nanos() > 0 {
                break;
            }
        }
        ProbeReport {
            hashmap: map.values().sum(),
            unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            monotonic_advanced: start.elapsed().as_nanos() > 0,
            fs_read: format!(
                "{:?}",
                std::fs::read_to_string("/etc/hostname").map_err(|e| e.kind())
            ),
            fs_write: format!(
                "{:?}",
                std::fs::write("out.txt", b"x").map_err(|e| e.kind())
            ),
            args: std::env::args().count(),
            env_vars: std::env::vars().count(),
            constructor_runs: CONSTRUCTOR_RUNS.load(Ordering::Relaxed),
        }
    }

    #[handler]
    async fn sleep(&mut self, _ctx: &Ctx, _msg: Sleep) -> String {
        std::thread::sleep(std::time::Duration::from_millis(10));
        "slept".into()
    }
}
