//! The [`Engine`]: one wasmtime engine per process, configured for many small
//! actors.
//!
//! * **Memory**: every linear memory lives in a fixed slot handed out by a
//!   [`SlotAllocator`] (see [`crate::memory`]). The wasmtime settings that
//!   make this sound are fixed here:
//!   - `memory_guard_size(0)` and `guard_before_linear_memory(false)`: slots
//!     have no guard pages.
//!   - `memory_reservation(0)`: with a non-zero reservation *R* and
//!     `memory_may_move(false)`, Cranelift bounds-checks accesses against *R*
//!     instead of the current memory size and relies on the pages past
//!     `memory.size` being inaccessible. A slot is read-write throughout, so
//!     that would let a guest use its whole slot without growing (uncharged
//!     to the host budget) instead of trapping. With a zero reservation every
//!     access is checked against the current size.
//!   - `memory_may_move(false)`: slot bases never move, so compiled code may
//!     keep the base pointer in a register across calls.
//!   - `memory_reservation_for_growth(0)`, `memory_init_cow(false)` (slots are
//!     plain memory, not mmaps wasmtime can remap), and the threads proposal
//!     off (shared memories cannot live in slots).
//! * **Tables**: `table_lazy_init(false)` unless [`EngineConfig::lazy_tables`]:
//!   an instance's function tables are filled when it is instantiated, which a
//!   prepared instance does ahead of its activation, so the first entry does
//!   not call out to wasmtime's runtime for each function it first reaches
//!   through a table.
//! * **Interruption**: `epoch_interruption(true)`; a plain thread increments
//!   the epoch every [`EngineConfig::epoch_tick`] and exits when the last
//!   clone of the [`Engine`] is dropped. Stores set their deadline in ticks.
//! * **Synchronous guests**: no wasmtime async support; every guest call runs
//!   to completion (or to its epoch deadline) on the calling thread.
//! * **Compilation** goes through the on-disk [`ModuleCache`] when
//!   [`EngineConfig::cache_dir`] is set.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::cache::{CacheError, CacheOutcome, ModuleCache};
use crate::memory::{MemoryError, MemoryStats, SlotAllocator, SlotConfig};

/// Default epoch tick: 10 ms.
pub const DEFAULT_EPOCH_TICK: Duration = Duration::from_millis(10);

/// Default maximum wasm stack: 512 KiB, plenty for actor message handlers
/// while keeping runaway recursion cheap to stop.
pub const DEFAULT_MAX_WASM_STACK: usize = 512 << 10;

const WASM_MAGIC: &[u8; 4] = b"\0asm";

/// Configuration of an [`Engine`]. Build it with struct update syntax from
/// [`EngineConfig::default()`].
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Slot size, slot budget, chunk size and host memory budget; see
    /// [`SlotConfig`] for the defaults (16 MiB slots, a budget of physical RAM).
    pub memory: SlotConfig,
    /// How often the epoch advances. Default: [`DEFAULT_EPOCH_TICK`] (10 ms).
    pub epoch_tick: Duration,
    /// Directory of the compiled-module cache; `None` (the default) disables
    /// the cache.
    pub cache_dir: Option<PathBuf>,
    /// Cranelift optimization level. Default: `OptLevel::Speed`.
    pub opt_level: wasmtime::OptLevel,
    /// Maximum native stack used by wasm, in bytes. Default:
    /// [`DEFAULT_MAX_WASM_STACK`] (512 KiB).
    pub max_wasm_stack: usize,
    /// Write the address and name of every compiled guest function to `/tmp/perf-<pid>.map`
    /// (wasmtime's perf map profiler), so that `perf report` names the guests' functions instead
    /// of showing `[unknown]` addresses. Modules loaded from the cache are listed too. Default:
    /// off (the file grows with every module loaded).
    pub perf_map: bool,
    /// Fill an instance's function tables on first use of each entry instead of when it is
    /// instantiated (wasmtime's [`table_lazy_init`](wasmtime::Config::table_lazy_init)).
    /// Default: `false`. Filling them at instantiation moves the work to the instantiation,
    /// which a prepared instance does ahead of its activation, and saves the first entry a call
    /// out to wasmtime's runtime for every function it first reaches through a table (the SDK's
    /// futures, wakers and trait objects): BENCHMARKS.md §5.
    pub lazy_tables: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            memory: SlotConfig::default(),
            epoch_tick: DEFAULT_EPOCH_TICK,
            cache_dir: None,
            opt_level: wasmtime::OptLevel::Speed,
            max_wasm_stack: DEFAULT_MAX_WASM_STACK,
            perf_map: false,
            lazy_tables: false,
        }
    }
}

/// Errors from creating an [`Engine`] or compiling a module.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The bytes do not start with the wasm magic number.
    #[error(
        "not a wasm module: expected the magic bytes 00 61 73 6d (\"\\0asm\"), found {}",
        describe_prefix(.first_bytes, *.len)
    )]
    NotWasm {
        /// Up to the first 8 bytes of the input.
        first_bytes: Vec<u8>,
        /// Length of the input.
        len: usize,
    },
    /// The bytes are wasm but wasmtime rejected them.
    #[error("invalid wasm module: {message}")]
    InvalidWasm {
        /// wasmtime's message, with its causes.
        message: String,
    },
    /// The configuration was rejected (by us or by wasmtime).
    #[error("invalid engine configuration: {0}")]
    Config(String),
    /// The memory configuration was rejected.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// The module cache directory could not be set up.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// The epoch ticker thread could not be started.
    #[error("failed to start the epoch ticker thread: {0}")]
    Ticker(#[source] io::Error),
}

fn describe_prefix(first_bytes: &[u8], len: usize) -> String {
    if len == 0 {
        return "an empty input".into();
    }
    let hex: Vec<String> = first_bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut s = format!("{} ({len} bytes in total)", hex.join(" "));
    if first_bytes.trim_ascii_start().starts_with(b"(") {
        s.push_str("; this looks like WAT text, which must be compiled to binary first");
    }
    s
}

/// The runtime's shared engine: wasmtime engine, slot allocator, module
/// cache and epoch ticker. Cheap to clone; create one per process.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    wasmtime: wasmtime::Engine,
    slots: SlotAllocator,
    cache: Option<ModuleCache>,
    epoch_tick: Duration,
    // Declared last so it stops after the rest is gone; it holds no strong
    // reference to anything above.
    _ticker: Ticker,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("slots", &self.inner.slots)
            .field("cache", &self.inner.cache)
            .field("epoch_tick", &self.inner.epoch_tick)
            .finish_non_exhaustive()
    }
}

/// Stops and joins the epoch thread when dropped.
struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    fn spawn(engine: wasmtime::EngineWeak, tick: Duration) -> io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("bunraku-epoch".into())
            .spawn(move || {
                let mut next = Instant::now() + tick;
                loop {
                    // Parking can wake early (spuriously or to stop), so
                    // sleep until the deadline unless asked to stop.
                    let now = Instant::now();
                    if now < next {
                        std::thread::park_timeout(next - now);
                    }
                    if stop_flag.load(Ordering::Acquire) {
                        return;
                    }
                    if Instant::now() < next {
                        continue;
                    }
                    match engine.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => return,
                    }
                    next += tick;
                    // After a long stall (suspended process), don't burst.
                    let now = Instant::now();
                    if next < now {
                        next = now + tick;
                    }
                }
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

impl Engine {
    /// Creates the engine, its slot allocator and cache directory, and starts
    /// the epoch ticker.
    pub fn new(cfg: EngineConfig) -> Result<Self, EngineError> {
        if cfg.epoch_tick.is_zero() {
            return Err(EngineError::Config("epoch tick must be non-zero".into()));
        }
        if cfg.max_wasm_stack == 0 {
            return Err(EngineError::Config(
                "max wasm stack must be non-zero".into(),
            ));
        }
        let slots = SlotAllocator::new(cfg.memory.clone())?;

        let mut config = wasmtime::Config::new();
        config
            .with_host_memory(Arc::new(slots.clone()))
            .memory_reservation(0)
            .memory_guard_size(0)
            .guard_before_linear_memory(false)
            .memory_reservation_for_growth(0)
            .memory_may_move(false)
            .memory_init_cow(false)
            .table_lazy_init(cfg.lazy_tables)
            // Shared memories cannot live in slots. (The `threads` cargo
            // feature is off, so this is already the default; say it anyway.)
            .wasm_features(wasmtime::WasmFeatures::THREADS, false)
            .epoch_interruption(true)
            .max_wasm_stack(cfg.max_wasm_stack)
            .cranelift_opt_level(cfg.opt_level);
        if cfg.perf_map {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let wasmtime =
            wasmtime::Engine::new(&config).map_err(|e| EngineError::Config(format!("{e:#}")))?;

        let cache = cfg
            .cache_dir
            .map(|dir| ModuleCache::open(dir, &wasmtime))
            .transpose()?;
        let ticker = Ticker::spawn(wasmtime.weak(), cfg.epoch_tick).map_err(EngineError::Ticker)?;

        Ok(Self {
            inner: Arc::new(Inner {
                wasmtime,
                slots,
                cache,
                epoch_tick: cfg.epoch_tick,
                _ticker: ticker,
            }),
        })
    }

    /// The underlying wasmtime engine, for creating stores and linkers.
    pub fn wasmtime(&self) -> &wasmtime::Engine {
        &self.inner.wasmtime
    }

    /// Compiles a binary wasm module, through the cache when one is
    /// configured. WAT text is refused ([`EngineError::NotWasm`]).
    pub fn compile(&self, wasm: &[u8]) -> Result<(wasmtime::Module, CacheOutcome), EngineError> {
        if !wasm.starts_with(WASM_MAGIC) {
            return Err(EngineError::NotWasm {
                first_bytes: wasm[..wasm.len().min(8)].to_vec(),
                len: wasm.len(),
            });
        }
        let engine = &self.inner.wasmtime;
        let compile = || {
            wasmtime::Module::from_binary(engine, wasm).map_err(|e| EngineError::InvalidWasm {
                message: format!("{e:#}"),
            })
        };
        match &self.inner.cache {
            Some(cache) => cache.get_or_compile(engine, wasm, compile),
            None => Ok((compile()?, CacheOutcome::Uncached)),
        }
    }

    /// How often the epoch advances; epoch deadlines are in these ticks.
    pub fn epoch_tick(&self) -> Duration {
        self.inner.epoch_tick
    }

    /// Counters of the slot allocator: slots in use, committed bytes,
    /// mappings, failures per wall.
    pub fn memory_stats(&self) -> MemoryStats {
        self.inner.slots.stats()
    }

    /// The slot allocator every linear memory of this engine lives in.
    pub fn slots(&self) -> &SlotAllocator {
        &self.inner.slots
    }

    /// The most linear memory one actor can have: the slot size, in bytes.
    /// Per-store limits must not exceed it.
    pub fn max_memory_per_actor(&self) -> u64 {
        self.inner.slots.slot_size() as u64
    }

    /// A `ResourceLimiter` for one actor's store: each linear memory may grow
    /// to `memory_limit` bytes, clamped to the slot size, and an instance may
    /// have at most one memory (each memory takes a slot).
    ///
    /// Install it with `Store::limiter`.
    pub fn store_limits(&self, memory_limit: u64) -> wasmtime::StoreLimits {
        let limit = memory_limit.min(self.max_memory_per_actor());
        wasmtime::StoreLimitsBuilder::new()
            .memory_size(usize::try_from(limit).unwrap_or(usize::MAX))
            .memories(1)
            .build()
    }

    /// Like [`store_limits`](Self::store_limits), remembering refused growth for error messages.
    pub fn memory_limiter(&self, memory_limit: u64) -> MemoryLimiter {
        let limit = memory_limit.min(self.max_memory_per_actor());
        MemoryLimiter {
            limits: self.store_limits(limit),
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            refused: None,
            resized: None,
        }
    }
}

/// An actor store's resource limiter: [`Engine::store_limits`] plus a record of the last growth
/// it refused, so that the trap that usually follows (a guest allocator aborts when `memory.grow`
/// fails) can say which wall was hit.
#[derive(Debug)]
pub struct MemoryLimiter {
    limits: wasmtime::StoreLimits,
    limit: usize,
    refused: Option<String>,
    /// The size the memory was created with or grew to, until taken.
    resized: Option<usize>,
}

impl MemoryLimiter {
    /// Why the last refused growth was refused, if one was.
    pub fn refused(&self) -> Option<&str> {
        self.refused.as_deref()
    }

    /// The memory's size in bytes if it was created or grew since the last call: wasmtime asks
    /// the limiter for both, so the size is known without asking the memory after every entry.
    pub fn take_resized(&mut self) -> Option<usize> {
        self.resized.take()
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        if allowed {
            self.resized = Some(desired);
        } else {
            self.refused = Some(format!(
                "its memory limit of {} KiB refused growing linear memory from {} KiB to {} KiB",
                self.limit / 1024,
                current / 1024,
                desired / 1024
            ));
        }
        Ok(allowed)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        // Allowed, then failed: the size did not change.
        self.resized = None;
        // The slot allocator's error names the wall (host memory budget, slots, mappings).
        self.refused = Some(format!(
            "the host refused to grow its linear memory: {error}"
        ));
        self.limits.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::{Instance, Store};

    #[test]
    fn not_wasm_is_a_typed_error_with_the_first_bytes() {
        let engine = Engine::new(EngineConfig::default()).unwrap();
        let err = engine.compile(b"\x7fELF\x02\x01\x01\x00rest").unwrap_err();
        assert!(
            matches!(err, EngineError::NotWasm { len: 12, .. }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "not a wasm module: expected the magic bytes 00 61 73 6d (\"\\0asm\"), \
             found 7f 45 4c 46 02 01 01 00 (12 bytes in total)"
        );
        let err = engine.compile(b"").unwrap_err();
        assert!(err.to_string().ends_with("found an empty input"), "{err}");
        let err = engine.compile(b"(module)").unwrap_err();
        assert!(err.to_string().contains("looks like WAT text"), "{err}");
    }

    #[test]
    fn invalid_wasm_carries_wasmtime_message() {
        let engine = Engine::new(EngineConfig::default()).unwrap();
        let mut wasm = wat::parse_str("(module (func (result i32) i32.const 1))").unwrap();
        // Break the function body: change `i32.const` into an unknown opcode.
        let pos = wasm.iter().rposition(|&b| b == 0x41).unwrap();
        wasm[pos] = 0xff;
        let err = engine.compile(&wasm).unwrap_err();
        assert!(matches!(err, EngineError::InvalidWasm { .. }), "{err:?}");
        assert!(
            err.to_string().starts_with("invalid wasm module: "),
            "{err}"
        );
    }

    #[test]
    fn compile_without_cache_is_uncached() {
        let engine = Engine::new(EngineConfig::default()).unwrap();
        let wasm = wat::parse_str("(module)").unwrap();
        assert_eq!(engine.compile(&wasm).unwrap().1, CacheOutcome::Uncached);
    }

    #[test]
    fn bad_configuration_is_rejected() {
        let err = Engine::new(EngineConfig {
            epoch_tick: Duration::ZERO,
            ..EngineConfig::default()
        })
        .unwrap_err();
        assert!(matches!(err, EngineError::Config(_)), "{err}");
        let err = Engine::new(EngineConfig {
            memory: SlotConfig {
                slot_size: 1000,
                ..SlotConfig::default()
            },
            ..EngineConfig::default()
        })
        .unwrap_err();
        assert!(matches!(err, EngineError::Memory(_)), "{err}");
    }

    #[test]
    fn epoch_deadline_interrupts_an_infinite_loop() {
        let engine = Engine::new(EngineConfig {
            epoch_tick: Duration::from_millis(1),
            ..EngineConfig::default()
        })
        .unwrap();
        let wasm = wat::parse_str(r#"(module (func (export "spin") (loop (br 0))))"#).unwrap();
        let (module, _) = engine.compile(&wasm).unwrap();
        let mut store = Store::new(engine.wasmtime(), ());
        store.set_epoch_deadline(5);
        let instance = Instance::new(&mut store, &module, &[]).unwrap();
        let spin = instance
            .get_typed_func::<(), ()>(&mut store, "spin")
            .unwrap();
        let started = Instant::now();
        let err = spin.call(&mut store, ()).unwrap_err();
        assert_eq!(
            err.downcast_ref::<wasmtime::Trap>(),
            Some(&wasmtime::Trap::Interrupt)
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn ticker_stops_when_the_engine_is_dropped() {
        let engine = Engine::new(EngineConfig::default()).unwrap();
        let weak = engine.wasmtime().weak();
        let clone = engine.clone();
        drop(engine);
        assert!(weak.upgrade().is_some(), "a clone keeps the engine alive");
        // Dropping the last clone joins the ticker thread; a store still
        // holding the wasmtime engine does not keep it running.
        let store = Store::new(clone.wasmtime(), ());
        drop(clone);
        assert!(weak.upgrade().is_some());
        drop(store);
        assert!(weak.upgrade().is_none());
    }

    #[test]
    fn perf_map_names_the_guest_functions_of_compiled_and_cached_modules() {
        // A name no other test compiles, so that another engine's entries cannot satisfy this.
        let wasm = |name: &str| {
            wat::parse_str(format!(r#"(module (func ${name} (export "f")))"#)).unwrap()
        };
        let map = PathBuf::from(format!("/tmp/perf-{}.map", std::process::id()));
        let listed = |name: &str| {
            std::fs::read_to_string(&map).is_ok_and(|text| text.lines().any(|l| l.contains(name)))
        };
        let dir = tempfile::tempdir().unwrap();
        let config = || EngineConfig {
            perf_map: true,
            cache_dir: Some(dir.path().to_path_buf()),
            ..EngineConfig::default()
        };
        let engine = Engine::new(config()).unwrap();
        let compiled = "bunraku_perf_map_compiled_7f3a";
        assert_eq!(
            engine.compile(&wasm(compiled)).unwrap().1,
            CacheOutcome::Miss
        );
        assert!(listed(compiled), "{} lists `{compiled}`", map.display());

        // A second engine loads the first one's module from the cache.
        let cached = "bunraku_perf_map_cached_7f3a";
        Engine::new(EngineConfig {
            cache_dir: Some(dir.path().to_path_buf()),
            ..EngineConfig::default()
        })
        .unwrap()
        .compile(&wasm(cached))
        .unwrap();
        assert!(!listed(cached), "an engine without perf_map writes nothing");
        let again = Engine::new(config()).unwrap();
        assert_eq!(again.compile(&wasm(cached)).unwrap().1, CacheOutcome::Hit);
        assert!(
            listed(cached),
            "{} lists `{cached}` loaded from the cache",
            map.display()
        );
    }

    #[test]
    fn deep_recursion_overflows_the_wasm_stack_cleanly() {
        let engine = Engine::new(EngineConfig::default()).unwrap();
        let wasm = wat::parse_str(
            r#"(module (func $f (export "f") (param i32) (result i32)
                 local.get 0 i32.const 1 i32.add call $f))"#,
        )
        .unwrap();
        let (module, _) = engine.compile(&wasm).unwrap();
        let mut store = Store::new(engine.wasmtime(), ());
        store.set_epoch_deadline(u64::MAX / 2);
        let instance = Instance::new(&mut store, &module, &[]).unwrap();
        let f = instance
            .get_typed_func::<i32, i32>(&mut store, "f")
            .unwrap();
        let err = f.call(&mut store, 0).unwrap_err();
        assert_eq!(
            err.downcast_ref::<wasmtime::Trap>(),
            Some(&wasmtime::Trap::StackOverflow)
        );
    }
}
