//! Linear memory for actors: fixed-size slots carved from large `MAP_NORESERVE`
//! mappings, handed to wasmtime through [`wasmtime::MemoryCreator`].
//!
//! # Why not wasmtime's own allocators
//!
//! wasmtime's default on-demand allocator reserves 4 GiB (+ guards) of address
//! space per linear memory, which stops a process near 32,000 instances. Any
//! layout that keeps an inaccessible tail per memory (the pooling allocator,
//! or on-demand memories with growth headroom) costs at least one extra kernel
//! mapping (VMA) per instance, and `vm.max_map_count` (65530 by default) stops
//! those near the same count.
//!
//! # How it works
//!
//! * [`SlotAllocator`] maps *chunks* of [`SlotConfig::slots_per_chunk`] slots
//!   at a time, each one anonymous, private, `MAP_NORESERVE` and fully
//!   read-write, and marks them `MADV_NOHUGEPAGE` (with transparent huge pages
//!   set to `always`, touching one wasm page could otherwise commit 2 MiB). The
//!   number of mappings therefore grows by one per chunk, not per instance.
//! * Every linear memory gets one slot of [`SlotConfig::slot_size`] bytes. Its
//!   base never moves; it can grow up to the slot size. Nothing in the slot is
//!   protected, so the engine must be configured without guard pages and with
//!   a zero memory reservation, which makes Cranelift emit an explicit bounds
//!   check against the *current* memory size on every access (see
//!   [`crate::engine`] for the exact settings and why the reservation is 0 and
//!   not the slot size).
//! * When the memory is dropped, its slot is zeroed and reused (last in,
//!   first out). Up to [`SlotConfig::warm_slots`] slots are kept *warm*: the
//!   pages the instance had touched are zeroed in place and stay resident, so
//!   the next instance copies its data segments and runs its first handlers
//!   without page faults (a fault with zeroing costs 1–3 µs on a VM, and a Rust
//!   guest touches ~20 pages on its way to its first reply). Which pages are
//!   resident, and which were swapped out, comes from `/proc/self/pagemap`;
//!   pages swapped out or shared (the zero page) are dropped with
//!   `madvise(MADV_DONTNEED)` instead, so nothing of the previous guest can
//!   come back. Past the warm pool, or without `/proc`, a slot's pages are
//!   all released with `madvise(MADV_DONTNEED)`.
//! * A background thread keeps the warm pool filled when there are more new
//!   instances than released ones: it takes never-used (or released) slots
//!   and touches the pages a recent instance had touched (its *footprint*).
//!   One memory in [`FOOTPRINT_SAMPLE_EVERY`] gets a cold slot instead of a
//!   warm one, and the pages resident in it at the next allocation (read from
//!   `/proc/self/pagemap`) become the footprint: sampling a warm slot would
//!   count the pages prefaulted into it, and the footprint would only ever
//!   grow. That moves the page faults of a new instance off the path
//!   of its first message. A warm slot keeps at most its first 1 MiB resident
//!   (further pages are dropped on release), so the pool holds at most
//!   `warm_slots` MiB, outside the host budget below (which charges live
//!   memories only).
//! * An idle memory can be *trimmed* ([`SlotAllocator::trim`]): its resident pages that are
//!   all zero or equal to a reference image ([`PageImage`], the data segments) are dropped with
//!   `MADV_DONTNEED`, and so are the pages that differ from it (or from zero) in a few words,
//!   which are kept as patches of those words. [`SlotAllocator::restore`] copies the image
//!   pages back and applies the patches before the guest runs again. The host does this for
//!   instances idle for a while (`crate::trim`).
//! * A host-wide budget caps the bytes of linear memory that are *accessible*
//!   (the sum of every memory's current size, i.e. what the guests could
//!   commit). With `MAP_NORESERVE` the kernel does not account for these pages
//!   up front, so running out of RAM would mean the OOM killer; the budget turns
//!   that into a failed `memory.grow` (which returns -1 to the guest) or a
//!   failed instantiation instead.
//!
//! # Walls
//!
//! Every failure is a [`MemoryError`] naming the limit that was hit
//! ([`MemoryWall`]) and is counted in [`MemoryStats::failures`]. Failures while
//! instantiating cross wasmtime as strings, so use [`wall_of`] to recover the
//! wall from a `wasmtime::Error`.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};

use rustix::mm::{self, Advice, MapFlags, ProtFlags};
use wasmtime::{LinearMemory, MemoryCreator, MemoryType};

/// The size of a (default-sized) WebAssembly page: 64 KiB.
pub const WASM_PAGE_SIZE: usize = 1 << 16;

/// Default slot size, and so the default maximum linear memory per actor:
/// 16 MiB.
///
/// Actors are meant to be small and numerous; 16 MiB is room for a Rust guest
/// with a few MiB of heap and its stack, and a million slots still fit in
/// 16 TiB of address space (an eighth of the 128 TiB user space on x86-64).
pub const DEFAULT_SLOT_SIZE: usize = 16 << 20;

/// Default number of slots per `mmap` chunk: 4096 (64 GiB of address space
/// at the default slot size, so a million instances need about 245 mappings).
pub const DEFAULT_SLOTS_PER_CHUNK: usize = 4096;

/// Address space the slots may use by default: 64 TiB, half of the x86-64
/// user address space. The default slot budget is this divided by the slot
/// size (4,194,304 slots at 16 MiB).
pub const DEFAULT_ADDRESS_SPACE: u64 = 64 << 40;

/// Largest supported slot: 4 GiB, the most a 32-bit linear memory can address.
pub const MAX_SLOT_SIZE: usize = 1 << 32;

/// Default number of warm slots: zeroed slots kept with their pages resident
/// for the next instances (see the [module documentation](self)).
pub const DEFAULT_WARM_SLOTS: usize = 32;

/// One memory in this many gets a cold slot (not a warm one) whose resident
/// pages, read at the next allocation, become the footprint the background
/// thread prefaults.
pub const FOOTPRINT_SAMPLE_EVERY: u64 = 32;

/// The part of a slot whose pages a footprint covers: the first 1 MiB.
const FOOTPRINT_SPAN: usize = 1 << 20;

/// Budget used when physical memory cannot be read from `/proc/meminfo`.
const FALLBACK_MEMORY_BUDGET: u64 = 4 << 30;

/// Configuration of a [`SlotAllocator`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotConfig {
    /// Bytes per slot, the hard maximum of any one linear memory. A multiple
    /// of 64 KiB, at most 4 GiB. Default: [`DEFAULT_SLOT_SIZE`] (16 MiB).
    pub slot_size: usize,
    /// Slots mapped per `mmap` call. Default: [`DEFAULT_SLOTS_PER_CHUNK`].
    pub slots_per_chunk: usize,
    /// Most slots (so linear memories) alive at once. `None` (the default)
    /// means [`DEFAULT_ADDRESS_SPACE`] divided by the slot size.
    pub max_slots: Option<usize>,
    /// Host-wide budget, in bytes, for accessible linear memory across all
    /// instances. `None` (the default) means [`default_memory_budget`]: half
    /// of physical RAM, or of the cgroup memory limit if that is lower.
    pub memory_budget: Option<u64>,
    /// Zeroed slots kept with their pages resident, so that new instances do
    /// not page-fault on the pages instances typically touch. Default:
    /// [`DEFAULT_WARM_SLOTS`]; 0 releases every slot's pages to the kernel
    /// and starts no background thread.
    pub warm_slots: usize,
}

impl Default for SlotConfig {
    fn default() -> Self {
        Self {
            slot_size: DEFAULT_SLOT_SIZE,
            slots_per_chunk: DEFAULT_SLOTS_PER_CHUNK,
            max_slots: None,
            memory_budget: None,
            warm_slots: DEFAULT_WARM_SLOTS,
        }
    }
}

/// The limit a failed memory allocation or growth ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MemoryWall {
    /// Every slot allowed by [`SlotConfig::max_slots`] is in use.
    SlotBudget,
    /// The host-wide [`SlotConfig::memory_budget`] is used up.
    HostBudget,
    /// One memory asked for more than a slot holds.
    SlotSize,
    /// The kernel refused to map a new chunk (mapping count or address space).
    Mmap,
}

impl fmt::Display for MemoryWall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MemoryWall::SlotBudget => "slot budget",
            MemoryWall::HostBudget => "host memory budget",
            MemoryWall::SlotSize => "slot size",
            MemoryWall::Mmap => "mmap",
        })
    }
}

/// Errors from the slot allocator. Each names the wall that was hit.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MemoryError {
    /// Every slot allowed by the slot budget is in use.
    #[error("slot budget exhausted: {in_use} of {max} slots in use")]
    SlotBudgetExhausted {
        /// Slots in use when the request failed.
        in_use: usize,
        /// The slot budget.
        max: usize,
    },
    /// Growing or creating a memory would exceed the host-wide memory budget.
    #[error(
        "host memory budget exhausted: {requested} more bytes requested, \
         {committed} of {budget} bytes of linear memory already committed"
    )]
    HostBudgetExhausted {
        /// Bytes the failed request needed.
        requested: u64,
        /// Bytes committed across all instances at the time.
        committed: u64,
        /// The host-wide budget.
        budget: u64,
    },
    /// A memory asked for more bytes than a slot holds.
    #[error("slot size exceeded: memory of {requested} bytes does not fit a {slot_size}-byte slot")]
    SlotSizeExceeded {
        /// Bytes requested.
        requested: u64,
        /// The slot size.
        slot_size: usize,
    },
    /// `mmap` of a new chunk failed.
    #[error("mmap of {bytes} bytes for {slots} slots failed: {error}; {hint}")]
    Mmap {
        /// Length of the attempted mapping.
        bytes: usize,
        /// Slots the mapping would have held.
        slots: usize,
        /// The error from the kernel (with its errno).
        error: io::Error,
        /// Which limit was most likely hit: `vm.max_map_count` or the address space.
        hint: String,
    },
    /// The configuration (or the engine handing out memories) is inconsistent.
    #[error("invalid memory configuration: {0}")]
    InvalidConfig(String),
}

impl MemoryError {
    /// The wall this error ran into, or `None` for a configuration error.
    pub fn wall(&self) -> Option<MemoryWall> {
        match self {
            MemoryError::SlotBudgetExhausted { .. } => Some(MemoryWall::SlotBudget),
            MemoryError::HostBudgetExhausted { .. } => Some(MemoryWall::HostBudget),
            MemoryError::SlotSizeExceeded { .. } => Some(MemoryWall::SlotSize),
            MemoryError::Mmap { .. } => Some(MemoryWall::Mmap),
            MemoryError::InvalidConfig(_) => None,
        }
    }
}

/// Message prefixes of the [`MemoryError`] variants, used by [`wall_of`] when
/// the typed error was flattened to a string (as `MemoryCreator` requires).
const WALL_PREFIXES: [(&str, MemoryWall); 4] = [
    ("slot budget exhausted", MemoryWall::SlotBudget),
    ("host memory budget exhausted", MemoryWall::HostBudget),
    ("slot size exceeded", MemoryWall::SlotSize),
    ("mmap of ", MemoryWall::Mmap),
];

/// Finds which memory wall, if any, caused a wasmtime error.
///
/// Works for errors from `memory.grow` (as passed to
/// `ResourceLimiter::memory_grow_failed`, where the [`MemoryError`] is still
/// typed) and for instantiation errors (where wasmtime has flattened it into
/// a message).
pub fn wall_of(error: &wasmtime::Error) -> Option<MemoryWall> {
    error.chain().find_map(|cause| {
        if let Some(e) = cause.downcast_ref::<MemoryError>() {
            return e.wall();
        }
        let message = cause.to_string();
        WALL_PREFIXES
            .iter()
            .find(|(prefix, _)| message.starts_with(prefix))
            .map(|&(_, wall)| wall)
    })
}

/// How many times each wall was hit since the allocator was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WallCounts {
    /// Allocations refused because the slot budget was exhausted.
    pub slot_budget: u64,
    /// Allocations or growths refused by the host memory budget.
    pub host_budget: u64,
    /// Allocations or growths larger than a slot.
    pub slot_size: u64,
    /// Failed `mmap` calls.
    pub mmap: u64,
}

/// A snapshot of the allocator's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryStats {
    /// Bytes per slot (the maximum linear memory per instance).
    pub slot_size: usize,
    /// Slots currently holding a live linear memory.
    pub slots_in_use: usize,
    /// Slots mapped so far (in use, free, or leaked).
    pub slots_mapped: usize,
    /// The slot budget.
    pub max_slots: usize,
    /// Bytes of linear memory currently accessible to guests, summed over all
    /// instances (what the host budget is charged with).
    pub committed_bytes: u64,
    /// The host memory budget in bytes.
    pub budget_bytes: u64,
    /// `mmap` calls made (chunks); the process mapping count grows by at most
    /// this much because of slots.
    pub mappings: usize,
    /// Slots withheld from reuse because releasing their pages failed.
    pub slots_leaked: usize,
    /// Warm slots ready now: zeroed, with resident pages, not in use.
    pub warm_slots: usize,
    /// Memories that got a warm slot since the allocator was created.
    pub warm_hits: u64,
    /// Slots the background thread made warm (pages touched in advance).
    pub prefaulted: u64,
    /// Host pages of linear memory a recent instance had resident when sampled (its first
    /// handlers done): what the background thread touches in advance. 0 until sampled.
    pub footprint_pages: usize,
    /// Idle memories trimmed ([`SlotAllocator::trim`]).
    pub trims: u64,
    /// Host pages those trims gave back to the kernel.
    pub pages_trimmed: u64,
    /// Of those, pages that differed a little from their image page (or from zero) and were
    /// kept as a patch of their changed words, a few hundred bytes instead of a page.
    pub pages_patched: u64,
    /// Trimmed pages brought back (copied from their module's image, patched, or both) before
    /// the guest ran again; the others were zero and come back as zero pages when touched.
    pub pages_restored: u64,
    /// Failures per wall.
    pub failures: WallCounts,
}

/// Hands out fixed-size, read-write linear memory slots; cheap to clone
/// (clones share the same slots and counters).
///
/// Implements [`wasmtime::MemoryCreator`]; install it with
/// `Config::with_host_memory` together with the settings described in the
/// [module documentation](self).
#[derive(Clone)]
pub struct SlotAllocator {
    shared: Arc<Shared>,
}

struct Shared {
    slot_size: usize,
    slots_per_chunk: usize,
    max_slots: usize,
    budget: u64,
    committed: AtomicU64,
    in_use: AtomicUsize,
    mappings: AtomicUsize,
    leaked: AtomicUsize,
    fail_slot_budget: AtomicU64,
    fail_host_budget: AtomicU64,
    fail_slot_size: AtomicU64,
    fail_mmap: AtomicU64,
    state: Mutex<State>,
    /// Most warm slots kept.
    warm_cap: usize,
    /// The host's page size.
    page: usize,
    /// `/proc/self/pagemap`, or `None` where it cannot be read (no warm slots and no idle
    /// trimming then).
    pagemap: Option<File>,
    /// Page indices (within a slot) a recent instance had resident.
    footprint: Mutex<Arc<[u32]>>,
    allocations: AtomicU64,
    /// Base of the cold slot to sample at the next allocation (0: none).
    probe_base: AtomicUsize,
    warm_hits: AtomicU64,
    prefaulted: AtomicU64,
    prefaulter: Arc<Prefaulter>,
    trims: AtomicU64,
    pages_trimmed: AtomicU64,
    pages_patched: AtomicU64,
    pages_restored: AtomicU64,
}

/// Wakes the thread that fills the warm pool; shared with it apart from [`Shared`], which the
/// thread only holds weakly.
#[derive(Default)]
struct Prefaulter {
    signal: Mutex<PrefaultSignal>,
    wake: Condvar,
    started: AtomicBool,
}

impl Prefaulter {
    /// Changes the signal and wakes the thread if it waits. A busy thread looks at the signal
    /// before it waits again, so only a waiting one needs the system call.
    fn tell(&self, change: impl FnOnce(&mut PrefaultSignal)) {
        let mut signal = self.signal.lock().unwrap_or_else(|e| e.into_inner());
        change(&mut signal);
        if signal.waiting {
            self.wake.notify_one();
        }
    }
}

#[derive(Default)]
struct PrefaultSignal {
    /// The warm pool may need refilling.
    pending: bool,
    /// The thread is waiting on the condition variable.
    waiting: bool,
    shutdown: bool,
}

#[derive(Default)]
struct State {
    /// Every chunk ever mapped, as (address, length), unmapped on drop.
    chunks: Vec<(usize, usize)>,
    /// Released (zeroed) slots whose pages went back to the kernel, reused last in, first out.
    free: Vec<usize>,
    /// Zeroed slots with resident pages, reused first (last in, first out).
    warm: Vec<usize>,
    /// Slots the background thread is touching (neither free, warm nor in use).
    prefaulting: usize,
    /// Next never-used slot in the newest chunk, and the end of that chunk.
    fresh: usize,
    fresh_end: usize,
    slots_mapped: usize,
}

impl fmt::Debug for SlotAllocator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlotAllocator")
            .field("stats", &self.stats())
            .finish()
    }
}

impl SlotAllocator {
    /// Validates `config` and creates an allocator. Nothing is mapped until
    /// the first slot is needed.
    pub fn new(config: SlotConfig) -> Result<Self, MemoryError> {
        let SlotConfig {
            slot_size,
            slots_per_chunk,
            max_slots,
            memory_budget,
            warm_slots,
        } = config;
        // A multiple of 64 KiB is also a multiple of every host page size
        // Linux supports (4, 16 or 64 KiB), so slots are page-aligned.
        if slot_size == 0 || slot_size % WASM_PAGE_SIZE != 0 || slot_size > MAX_SLOT_SIZE {
            return Err(MemoryError::InvalidConfig(format!(
                "slot size {slot_size} must be a non-zero multiple of 64 KiB and at most 4 GiB"
            )));
        }
        if slots_per_chunk == 0 {
            return Err(MemoryError::InvalidConfig(
                "slots per chunk must be at least 1".into(),
            ));
        }
        if slots_per_chunk.checked_mul(slot_size).is_none() {
            return Err(MemoryError::InvalidConfig(format!(
                "a chunk of {slots_per_chunk} slots of {slot_size} bytes overflows the address space"
            )));
        }
        let max_slots = max_slots.unwrap_or((DEFAULT_ADDRESS_SPACE / slot_size as u64) as usize);
        if max_slots == 0 {
            return Err(MemoryError::InvalidConfig(
                "max slots must be at least 1".into(),
            ));
        }
        let budget = memory_budget.unwrap_or_else(default_memory_budget);
        if budget == 0 {
            return Err(MemoryError::InvalidConfig(
                "memory budget must be at least 1 byte".into(),
            ));
        }
        Ok(Self {
            shared: Arc::new(Shared {
                slot_size,
                slots_per_chunk,
                max_slots,
                budget,
                committed: AtomicU64::new(0),
                in_use: AtomicUsize::new(0),
                mappings: AtomicUsize::new(0),
                leaked: AtomicUsize::new(0),
                fail_slot_budget: AtomicU64::new(0),
                fail_host_budget: AtomicU64::new(0),
                fail_slot_size: AtomicU64::new(0),
                fail_mmap: AtomicU64::new(0),
                state: Mutex::new(State::default()),
                warm_cap: warm_slots,
                page: rustix::param::page_size(),
                // Read by the warm pool and by idle trimming ([`SlotAllocator::trim`]).
                pagemap: File::open("/proc/self/pagemap").ok(),
                footprint: Mutex::new(Arc::from(Vec::new())),
                allocations: AtomicU64::new(0),
                probe_base: AtomicUsize::new(0),
                warm_hits: AtomicU64::new(0),
                prefaulted: AtomicU64::new(0),
                prefaulter: Arc::default(),
                trims: AtomicU64::new(0),
                pages_trimmed: AtomicU64::new(0),
                pages_patched: AtomicU64::new(0),
                pages_restored: AtomicU64::new(0),
            }),
        })
    }

    /// Bytes per slot: the most any one linear memory can hold.
    pub fn slot_size(&self) -> usize {
        self.shared.slot_size
    }

    /// The host's page size in bytes: the unit of [`SlotAllocator::trim`].
    pub fn page_size(&self) -> usize {
        self.shared.page
    }

    /// The host memory budget in bytes.
    pub fn budget(&self) -> u64 {
        self.shared.budget
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> MemoryStats {
        let s = &self.shared;
        let (slots_mapped, warm_slots) = {
            let state = s.lock();
            (state.slots_mapped, state.warm.len())
        };
        MemoryStats {
            slot_size: s.slot_size,
            slots_in_use: s.in_use.load(Ordering::Relaxed),
            slots_mapped,
            warm_slots,
            warm_hits: s.warm_hits.load(Ordering::Relaxed),
            prefaulted: s.prefaulted.load(Ordering::Relaxed),
            footprint_pages: s.footprint.lock().unwrap_or_else(|e| e.into_inner()).len(),
            trims: s.trims.load(Ordering::Relaxed),
            pages_trimmed: s.pages_trimmed.load(Ordering::Relaxed),
            pages_patched: s.pages_patched.load(Ordering::Relaxed),
            pages_restored: s.pages_restored.load(Ordering::Relaxed),
            max_slots: s.max_slots,
            committed_bytes: s.committed.load(Ordering::Relaxed),
            budget_bytes: s.budget,
            mappings: s.mappings.load(Ordering::Relaxed),
            slots_leaked: s.leaked.load(Ordering::Relaxed),
            failures: WallCounts {
                slot_budget: s.fail_slot_budget.load(Ordering::Relaxed),
                host_budget: s.fail_host_budget.load(Ordering::Relaxed),
                slot_size: s.fail_slot_size.load(Ordering::Relaxed),
                mmap: s.fail_mmap.load(Ordering::Relaxed),
            },
        }
    }

    /// Takes a slot and makes its first `minimum` bytes accessible, charging
    /// them to the host budget. The memory is zeroed.
    pub fn allocate(&self, minimum: usize) -> Result<SlotMemory, MemoryError> {
        let s = &self.shared;
        if minimum > s.slot_size {
            s.fail_slot_size.fetch_add(1, Ordering::Relaxed);
            return Err(MemoryError::SlotSizeExceeded {
                requested: minimum as u64,
                slot_size: s.slot_size,
            });
        }
        s.charge(minimum as u64)?;
        let sampling = s.warm_cap > 0 && s.pagemap.is_some();
        let n = s.allocations.fetch_add(1, Ordering::Relaxed);
        let probe = sampling && n.is_multiple_of(FOOTPRINT_SAMPLE_EVERY);
        let base = match s.take_slot(!probe) {
            Ok(base) => base,
            Err(e) => {
                s.committed.fetch_sub(minimum as u64, Ordering::Relaxed);
                return Err(e);
            }
        };
        if probe {
            s.probe_base.store(base, Ordering::Relaxed);
        } else if sampling && n % FOOTPRINT_SAMPLE_EVERY == 1 {
            // The probe's instance has usually run its first handlers by now: what it touched
            // is what the next ones will touch.
            let probed = s.probe_base.swap(0, Ordering::Relaxed);
            if probed != 0 {
                self.sample_footprint(probed);
            }
        }
        Ok(SlotMemory {
            allocator: self.clone(),
            // SAFETY: slot addresses come from a successful mmap, never null.
            base: SlotBase(unsafe { NonNull::new_unchecked(base as *mut u8) }),
            size: minimum,
        })
    }
}

impl SlotAllocator {
    /// Records which pages of the slot at `base` are resident as the footprint to prefault,
    /// and starts the background thread once there is one.
    fn sample_footprint(&self, base: usize) {
        let s = &self.shared;
        let span = s.slot_size.min(FOOTPRINT_SPAN);
        let Ok(entries) = s.page_entries(base, span) else {
            return;
        };
        let pages: Vec<u32> = entries
            .iter()
            .enumerate()
            .filter(|(_, e)| **e & PM_PRESENT != 0)
            .map(|(i, _)| i as u32)
            .collect();
        if pages.is_empty() {
            return;
        }
        *s.footprint.lock().unwrap_or_else(|e| e.into_inner()) = Arc::from(pages);
        if !s.prefaulter.started.swap(true, Ordering::Relaxed) {
            let weak = Arc::downgrade(s);
            let prefaulter = s.prefaulter.clone();
            let spawned = std::thread::Builder::new()
                .name("bunraku-prefault".into())
                .spawn(move || prefault_loop(&weak, &prefaulter));
            if let Err(e) = spawned {
                tracing::warn!("cannot start the slot prefault thread: {e}");
                return;
            }
        }
        s.wake_prefaulter();
    }
}

/// Reference contents for the pages of a module's linear memory: the pages of its first instance
/// that were not zero right after instantiation and `_initialize` (its data segments).
///
/// [`SlotAllocator::trim`] drops the resident pages of an idle memory that equal their page here
/// (or differ from it in a few words, kept as a patch) and [`SlotAllocator::restore`] copies them
/// back (and patches them) before the guest runs again. Any reference would be correct (a page
/// is only dropped when it can get exactly its contents back); the data segments are the one
/// that matches best: most of them are read-only data that no instance changes, copied into
/// every instance.
#[derive(Debug)]
pub struct PageImage {
    page: usize,
    /// Indexed by page number; `None` for pages that were zero.
    pages: Vec<Option<Box<[u8]>>>,
    /// Pages that hold nothing while the instance is idle (its empty shadow stack): given back
    /// whatever they hold, and zero afterwards.
    dead: std::ops::Range<usize>,
}

impl PageImage {
    /// Most bytes of a memory an image covers: 1 MiB. Pages further in are never restored from
    /// an image (they are still trimmed when zero).
    pub const SPAN: usize = 1 << 20;

    /// The image of `memory`, a linear memory right after instantiation (and `_initialize`), in
    /// host pages of `page` bytes.
    pub fn capture(memory: &[u8], page: usize) -> Self {
        let covered = &memory[..memory.len().min(Self::SPAN)];
        let mut pages: Vec<Option<Box<[u8]>>> = covered
            .chunks(page)
            .map(|p| (!is_zero(p)).then(|| p.into()))
            .collect();
        while matches!(pages.last(), Some(None)) {
            pages.pop();
        }
        Self {
            page,
            pages,
            dead: 0..0,
        }
    }

    /// Declares the bytes `dead` of the memory (the guest's shadow stack, which is empty
    /// between entries) as holding nothing while the instance is idle: trimming gives back
    /// every page wholly inside, whatever it holds, and it reads as zero afterwards. The guest
    /// must never read those bytes before writing them in a later entry.
    pub fn with_dead(mut self, dead: std::ops::Range<usize>) -> Self {
        self.dead = dead.start.div_ceil(self.page)..dead.end / self.page;
        self
    }

    /// Host pages the image holds (the non-zero ones).
    pub fn pages(&self) -> usize {
        self.pages.iter().flatten().count()
    }

    fn get(&self, index: usize) -> Option<&[u8]> {
        self.pages.get(index).and_then(|p| p.as_deref())
    }
}

fn is_zero(bytes: &[u8]) -> bool {
    // Word by word: a few hundred nanoseconds for a 4 KiB page.
    let (head, words, tail) = unsafe {
        // SAFETY: every bit pattern is a valid u64.
        bytes.align_to::<u64>()
    };
    head.iter().all(|&b| b == 0) && words.iter().all(|&w| w == 0) && tail.iter().all(|&b| b == 0)
}

/// What [`SlotAllocator::trim`] gave back: the pages to bring back before the memory is used
/// again, and the patches of the pages that had changed.
#[derive(Debug)]
#[must_use = "the dropped image and patched pages read as zero until restored"]
pub struct Trimmed {
    /// Host pages dropped, zero pages and patched pages included.
    pub dropped: usize,
    /// Of those, pages that differed a little from their reference (their image page, or zero)
    /// and are kept as a patch of their changed words.
    pub patched: usize,
    /// Dropped pages to make resident again, ascending: each gets its image page (or stays
    /// zero), then its patch if it has one.
    restore: Vec<u32>,
    /// The patches of the patched pages, in `restore`'s order (see `Patch`).
    patches: Vec<u8>,
}

impl Trimmed {
    /// Whether the memory must be restored before it is used again.
    pub fn needs_restore(&self) -> bool {
        !self.restore.is_empty()
    }

    /// Bytes of host memory the patches take.
    pub fn patch_bytes(&self) -> usize {
        self.patches.capacity()
    }
}

/// The 8-byte words in which a page differs from its reference (its image page, or zero),
/// appended to a byte buffer: the page's index (`u32`), the number of runs (`u16`), and per run
/// of changed words its first word (`u16`), its length in words (`u16`) and the words. All
/// little-endian. A page whose patch would take more than half a page is not patched, only
/// kept: an idle actor's changed pages are mostly untouched zeros and data (its state, the
/// allocator's bookkeeping, an event buffer), a few hundred bytes each.
struct Patch;

impl Patch {
    /// Appends the patch that turns `reference` (zero when `None`) into `page` to `out`; returns
    /// `false`, and leaves `out` as it was, when it would take more than half a page.
    fn encode(index: usize, page: &[u8], reference: Option<&[u8]>, out: &mut Vec<u8>) -> bool {
        let words = page.len() / 8;
        if !page.len().is_multiple_of(8) || words > usize::from(u16::MAX) {
            return false;
        }
        // Whether the `n` bytes at `at` differ from the reference.
        let differ = |at: usize, n: usize| match reference {
            Some(r) => page[at..at + n] != r[at..at + n],
            None => !is_zero(&page[at..at + n]),
        };
        let changed = |i: usize| differ(i * 8, 8);
        let start = out.len();
        let limit = start + page.len() / 2;
        out.extend_from_slice(&(index as u32).to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        let mut runs = 0u16;
        let mut i = 0;
        while i < words {
            // Most of the page is unchanged: skip it 64 bytes at a time.
            if i % 8 == 0 && i + 8 <= words && !differ(i * 8, 64) {
                i += 8;
                continue;
            }
            if !changed(i) {
                i += 1;
                continue;
            }
            let first = i;
            while i < words && changed(i) {
                i += 1;
            }
            if out.len() + 4 + (i - first) * 8 > limit {
                out.truncate(start);
                return false;
            }
            out.extend_from_slice(&(first as u16).to_le_bytes());
            out.extend_from_slice(&((i - first) as u16).to_le_bytes());
            out.extend_from_slice(&page[first * 8..i * 8]);
            runs += 1;
        }
        out[start + 4..start + 6].copy_from_slice(&runs.to_le_bytes());
        true
    }

    /// Applies the patch at the start of `patches` to `memory` (pages of `page` bytes); returns
    /// the rest of `patches`.
    fn apply<'a>(patches: &'a [u8], memory: &mut [u8], page: usize) -> &'a [u8] {
        let (head, mut rest) = patches.split_at(6);
        let index = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
        let runs = u16::from_le_bytes(head[4..].try_into().expect("2 bytes"));
        let target = &mut memory[index * page..(index + 1) * page];
        for _ in 0..runs {
            let first = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
            let words = usize::from(u16::from_le_bytes([rest[2], rest[3]]));
            let bytes = &rest[4..4 + words * 8];
            target[first * 8..(first + words) * 8].copy_from_slice(bytes);
            rest = &rest[4 + words * 8..];
        }
        rest
    }
}

impl SlotAllocator {
    /// Brings back the pages a [`SlotAllocator::trim`] dropped into `memory` (the memory that
    /// was trimmed, at the same or a larger size, with the same `image`): their image pages are
    /// copied back and the patched pages patched, so that it holds exactly what it held before
    /// the trim. Zero pages need nothing: they read as zero.
    ///
    /// # Panics
    /// When `memory` is smaller than the trimmed memory, or `image` lacks a page the trim took
    /// from it.
    pub fn restore(&self, trimmed: Trimmed, memory: &mut [u8], image: &PageImage) {
        let Trimmed {
            restore, patches, ..
        } = trimmed;
        // Fault each run of pages in with one system call rather than one fault per page.
        let mut run = 0;
        while run < restore.len() {
            let first = restore[run] as usize;
            let mut end = run + 1;
            while end < restore.len() && restore[end] as usize == first + (end - run) {
                end += 1;
            }
            let start = first * image.page;
            let bytes = ((end - run) * image.page).min(memory.len() - start);
            // SAFETY: the range lies in `memory`, borrowed mutably; MADV_POPULATE_WRITE only
            // makes its (zero) pages resident and writable. Where it fails (a kernel before
            // 5.14), the copy below faults the pages in one by one instead.
            let _ = unsafe {
                mm::madvise(
                    memory[start..].as_mut_ptr().cast(),
                    bytes,
                    Advice::LinuxPopulateWrite,
                )
            };
            run = end;
        }
        for &index in &restore {
            // A patched page of a zero reference has no image page: it stays zero until patched.
            if let Some(page) = image.get(index as usize) {
                let start = index as usize * image.page;
                memory[start..start + page.len()].copy_from_slice(page);
            }
        }
        let mut rest = &patches[..];
        while !rest.is_empty() {
            rest = Patch::apply(rest, memory, image.page);
        }
        self.shared
            .pages_restored
            .fetch_add(restore.len() as u64, Ordering::Relaxed);
    }
}

impl SlotAllocator {
    /// Gives back to the kernel the resident pages of an idle linear memory that can be rebuilt:
    /// pages that are all zero or that hold nothing while idle ([`PageImage::with_dead`]), pages
    /// equal to their page of `image`, and pages that differ from it (or from zero, past the
    /// image) in words that take at most half a page to write down, which are kept as a patch
    /// in the returned [`Trimmed`]. The first read as zero again when touched; the others must
    /// be brought back with [`SlotAllocator::restore`] before anything reads the memory again.
    /// Pages that differ more are kept, and so is every page that is swapped out (reading it
    /// would swap it in).
    ///
    /// `memory` must be a memory of this allocator (its whole accessible size). Trimming costs a
    /// read of `/proc/self/pagemap` and a comparison of each resident page; it fails when the
    /// pagemap cannot be read or `memory` is not in one of this allocator's slots, and then
    /// changes nothing. The mapping count does not change: `MADV_DONTNEED` does not split a
    /// mapping.
    pub fn trim(&self, memory: &mut [u8], image: &PageImage) -> io::Result<Trimmed> {
        let s = &self.shared;
        let base = memory.as_mut_ptr() as usize;
        let len = memory.len();
        let ours = s.lock().chunks.iter().any(|&(start, bytes)| {
            base >= start
                && base + len <= start + bytes
                && (base - start).is_multiple_of(s.slot_size)
        });
        if !ours || !base.is_multiple_of(s.page) || image.page != s.page {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a memory of this slot allocator",
            ));
        }
        let entries = s.page_entries(base, len)?;
        // The patches of the pages that changed a little, as planned; only those of pages that
        // are dropped go into `trimmed`.
        let mut planned_patches = Vec::new();
        // What each resident page can be rebuilt from, if anything.
        let mut rebuild = |index: usize| -> Option<Rebuild> {
            // Only pages of our own: the shared zero page (a page only ever read) costs nothing.
            if entries[index] & PM_PRESENT == 0 || entries[index] & PM_EXCLUSIVE == 0 {
                return None;
            }
            let page = &memory[index * s.page..((index + 1) * s.page).min(len)];
            let reference = image.get(index);
            if image.dead.contains(&index) || is_zero(page) {
                Some(Rebuild::Zero)
            } else if reference == Some(page) {
                Some(Rebuild::Image)
            } else if page.len() == s.page && reference.is_none_or(|r| r.len() == s.page) {
                let at = planned_patches.len();
                Patch::encode(index, page, reference, &mut planned_patches)
                    .then_some(Rebuild::Patched(at..planned_patches.len()))
            } else {
                // A partial page (never, for a wasm memory): kept.
                None
            }
        };
        let plan: Vec<Option<Rebuild>> = (0..entries.len()).map(&mut rebuild).collect();
        let mut trimmed = Trimmed {
            dropped: 0,
            patched: 0,
            restore: Vec::new(),
            patches: Vec::new(),
        };
        let mut index = 0;
        while index < plan.len() {
            if plan[index].is_none() {
                index += 1;
                continue;
            }
            let end = (index..plan.len())
                .find(|&i| plan[i].is_none())
                .unwrap_or(plan.len());
            let start = index * s.page;
            let bytes = (end * s.page).min(len) - start;
            // SAFETY: the range lies in `memory`, which is borrowed mutably, in a private
            // anonymous mapping of this allocator: MADV_DONTNEED zero-fills its pages on their
            // next touch, and the image pages among them are restored from `image` before the
            // memory is read again (`Trimmed` lists them).
            let advised = unsafe {
                mm::madvise(
                    memory[start..].as_mut_ptr().cast(),
                    bytes,
                    Advice::LinuxDontNeed,
                )
            };
            if let Err(errno) = advised {
                // Nothing of this run was dropped; what was dropped before it is in `trimmed`.
                tracing::warn!(%errno, "madvise(MADV_DONTNEED) failed while trimming an idle memory");
                break;
            }
            trimmed.dropped += end - index;
            for (i, rebuild) in plan.iter().enumerate().take(end).skip(index) {
                match rebuild {
                    Some(Rebuild::Image) => trimmed.restore.push(i as u32),
                    Some(Rebuild::Patched(patch)) => {
                        trimmed.restore.push(i as u32);
                        trimmed.patched += 1;
                        trimmed
                            .patches
                            .extend_from_slice(&planned_patches[patch.clone()]);
                    }
                    _ => {}
                }
            }
            index = end;
        }
        // Held while the instance is idle: no spare capacity.
        trimmed.restore.shrink_to_fit();
        trimmed.patches.shrink_to_fit();
        s.trims.fetch_add(1, Ordering::Relaxed);
        s.pages_trimmed
            .fetch_add(trimmed.dropped as u64, Ordering::Relaxed);
        s.pages_patched
            .fetch_add(trimmed.patched as u64, Ordering::Relaxed);
        Ok(trimmed)
    }
}

/// How a dropped page comes back.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rebuild {
    /// It was zero: the kernel's zero fill is enough.
    Zero,
    /// It equalled its image page: copied back before the memory is used.
    Image,
    /// It differed a little from its image page (or from zero): copied back (or left zero),
    /// then patched with the [`Patch`] at this range of the planned patches.
    Patched(std::ops::Range<usize>),
}

/// `/proc/self/pagemap`: the page is present in RAM.
const PM_PRESENT: u64 = 1 << 63;
/// The page is swapped out.
const PM_SWAPPED: u64 = 1 << 62;
/// The page is mapped only here (not the shared zero page, not shared with another process).
const PM_EXCLUSIVE: u64 = 1 << 56;

/// What the background thread does: whenever the warm pool runs low and a footprint is known,
/// take slots that are neither in use nor warm, touch the footprint's pages, and make them warm.
fn prefault_loop(shared: &Weak<Shared>, prefaulter: &Prefaulter) {
    loop {
        {
            let mut signal = prefaulter.signal.lock().unwrap_or_else(|e| e.into_inner());
            while !signal.pending && !signal.shutdown {
                signal.waiting = true;
                signal = prefaulter
                    .wake
                    .wait(signal)
                    .unwrap_or_else(|e| e.into_inner());
                signal.waiting = false;
            }
            if signal.shutdown {
                return;
            }
            signal.pending = false;
        }
        let Some(s) = shared.upgrade() else { return };
        let footprint = s
            .footprint
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        while let Some(base) = s.take_for_prefault() {
            for &page in footprint.iter() {
                // SAFETY: the slot was taken for this thread alone (neither free, warm nor in
                // use) and the page lies in its first `FOOTPRINT_SPAN` bytes; writing a zero
                // into zeroed memory only makes the page resident.
                unsafe {
                    ((base + page as usize * s.page) as *mut u8).write_volatile(0);
                }
            }
            s.prefaulted.fetch_add(1, Ordering::Relaxed);
            let mut state = s.lock();
            state.prefaulting -= 1;
            state.warm.push(base);
        }
    }
}

impl Shared {
    /// The pagemap entries of the `len` bytes from `base` (page-aligned), one per page.
    fn page_entries(&self, base: usize, len: usize) -> io::Result<Vec<u64>> {
        let Some(pagemap) = &self.pagemap else {
            return Err(io::ErrorKind::Unsupported.into());
        };
        let pages = len.div_ceil(self.page);
        let mut bytes = vec![0u8; pages * 8];
        pagemap.read_exact_at(&mut bytes, (base / self.page * 8) as u64)?;
        Ok(bytes
            .chunks_exact(8)
            .map(|b| u64::from_ne_bytes(b.try_into().expect("8 bytes")))
            .collect())
    }

    /// Zeroes the first `len` bytes of a released slot and leaves its pages resident: pages
    /// present and private in the first `FOOTPRINT_SPAN` bytes are zeroed in place; pages
    /// swapped out, shared, or further in are dropped with `MADV_DONTNEED` (so they read as
    /// zero again). Fails when the pagemap cannot be read or `madvise` fails; the caller then
    /// releases every page of the slot instead.
    fn zero_keeping_resident(&self, base: usize, len: usize) -> io::Result<()> {
        let entries = self.page_entries(base, len)?;
        // Past the footprint span, pages are dropped rather than kept: a warm slot keeps at
        // most `FOOTPRINT_SPAN` bytes resident.
        let span = FOOTPRINT_SPAN / self.page;
        let mut i = 0;
        while i < entries.len() {
            let kind = |page: usize| {
                let e = entries[page];
                if e & PM_PRESENT != 0 && e & PM_EXCLUSIVE != 0 && page < span {
                    1 // resident and ours: zero in place
                } else if e & (PM_PRESENT | PM_SWAPPED) != 0 {
                    2 // swapped out or shared: drop
                } else {
                    0 // never touched, or already dropped: zero
                }
            };
            let k = kind(i);
            let mut j = i + 1;
            while j < entries.len() && kind(j) == k {
                j += 1;
            }
            let (start, end) = (base + i * self.page, (base + j * self.page).min(base + len));
            match k {
                // SAFETY: the slot belongs to a memory being dropped; nothing else refers to
                // its contents, and the range lies within its accessible bytes.
                1 => unsafe { std::ptr::write_bytes(start as *mut u8, 0, end - start) },
                // SAFETY: as above; MADV_DONTNEED on private anonymous memory zero-fills the
                // pages on their next touch.
                2 => unsafe { mm::madvise(start as *mut _, end - start, Advice::LinuxDontNeed) }
                    .map_err(io::Error::from)?,
                _ => {}
            }
            i = j;
        }
        Ok(())
    }

    /// A slot for the background thread to prefault, counted in `prefaulting`: a released one,
    /// or the next never-used one of the newest chunk (it maps no chunk of its own). `None` when
    /// the warm pool is full, there is no such slot, or taking one could make an allocation fail.
    fn take_for_prefault(&self) -> Option<usize> {
        let mut state = self.lock();
        let in_use = self.in_use.load(Ordering::Relaxed);
        if state.warm.len() + state.prefaulting >= self.warm_cap
            || in_use + state.warm.len() + state.prefaulting + 1 >= self.max_slots
        {
            return None;
        }
        let slot = if let Some(slot) = state.free.pop() {
            slot
        } else if state.fresh < state.fresh_end {
            let slot = state.fresh;
            state.fresh += self.slot_size;
            slot
        } else {
            return None;
        };
        state.prefaulting += 1;
        Some(slot)
    }

    /// Asks the background thread (if started) to refill the warm pool.
    fn wake_prefaulter(&self) {
        if !self.prefaulter.started.load(Ordering::Relaxed) {
            return;
        }
        self.prefaulter.tell(|signal| signal.pending = true);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is only mutated by infallible bookkeeping, so a panic
        // elsewhere while holding the lock cannot leave it inconsistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Charges `bytes` to the host budget, or fails without charging.
    fn charge(&self, bytes: u64) -> Result<(), MemoryError> {
        let mut committed = self.committed.load(Ordering::Relaxed);
        loop {
            let next = committed.saturating_add(bytes);
            if next > self.budget {
                self.fail_host_budget.fetch_add(1, Ordering::Relaxed);
                return Err(MemoryError::HostBudgetExhausted {
                    requested: bytes,
                    committed,
                    budget: self.budget,
                });
            }
            match self.committed.compare_exchange_weak(
                committed,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => committed = actual,
            }
        }
    }

    /// Pops a warm slot (if `warm` allows), else a free one, else the next fresh one, mapping a
    /// new chunk if needed.
    fn take_slot(&self, warm: bool) -> Result<usize, MemoryError> {
        let mut state = self.lock();
        let in_use = self.in_use.load(Ordering::Relaxed);
        if in_use >= self.max_slots {
            self.fail_slot_budget.fetch_add(1, Ordering::Relaxed);
            return Err(MemoryError::SlotBudgetExhausted {
                in_use,
                max: self.max_slots,
            });
        }
        let warm_slot = if warm { state.warm.pop() } else { None };
        let (slot, refill) = if let Some(slot) = warm_slot {
            self.warm_hits.fetch_add(1, Ordering::Relaxed);
            // Refilled one slot at a time, as they are taken, rather than in bursts that would
            // compete with the guests for a while.
            (slot, true)
        } else if let Some(slot) = state.free.pop() {
            (slot, self.warm_cap > 0)
        } else {
            if state.fresh == state.fresh_end {
                self.map_chunk(&mut state, in_use)?;
            }
            let slot = state.fresh;
            state.fresh += self.slot_size;
            (slot, self.warm_cap > 0)
        };
        self.in_use.store(in_use + 1, Ordering::Relaxed);
        drop(state);
        if refill {
            self.wake_prefaulter();
        }
        Ok(slot)
    }

    fn map_chunk(&self, state: &mut State, in_use: usize) -> Result<(), MemoryError> {
        // Slots leaked after a failed release still count as mapped, so the
        // budget can be reached with fewer than `max_slots` in use.
        let slots = self
            .slots_per_chunk
            .min(self.max_slots.saturating_sub(state.slots_mapped));
        if slots == 0 {
            self.fail_slot_budget.fetch_add(1, Ordering::Relaxed);
            return Err(MemoryError::SlotBudgetExhausted {
                in_use,
                max: self.max_slots,
            });
        }
        let bytes = slots * self.slot_size;
        // SAFETY: a fresh anonymous mapping at a kernel-chosen address aliases
        // nothing.
        let result = unsafe {
            mm::mmap_anonymous(
                std::ptr::null_mut(),
                bytes,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE | MapFlags::NORESERVE,
            )
        };
        let base = match result {
            Ok(base) => base,
            Err(errno) => {
                self.fail_mmap.fetch_add(1, Ordering::Relaxed);
                let reserved = state.slots_mapped * self.slot_size;
                return Err(MemoryError::Mmap {
                    bytes,
                    slots,
                    error: errno.into(),
                    hint: mmap_hint(errno, reserved),
                });
            }
        };
        // SAFETY: the range is the mapping just created. Failure (a kernel
        // without transparent huge pages) only costs memory, so it is logged.
        if let Err(errno) = unsafe { mm::madvise(base, bytes, Advice::LinuxNoHugepage) } {
            tracing::debug!(%errno, "madvise(MADV_NOHUGEPAGE) on a slot chunk failed");
        }
        self.mappings.fetch_add(1, Ordering::Relaxed);
        state.chunks.push((base as usize, bytes));
        state.fresh = base as usize;
        state.fresh_end = base as usize + bytes;
        state.slots_mapped += slots;
        Ok(())
    }

    /// Zeroes a slot whose first `size` bytes were accessible and puts it back: warm (pages
    /// kept) while the warm pool has room, else with its pages released to the kernel.
    fn release(&self, base: usize, size: usize) {
        let warm_room = self.warm_cap > 0 && self.pagemap.is_some() && {
            let state = self.lock();
            state.warm.len() + state.prefaulting < self.warm_cap
        };
        if warm_room && self.zero_keeping_resident(base, size).is_ok() {
            self.committed.fetch_sub(size as u64, Ordering::Relaxed);
            self.lock().warm.push(base);
            self.in_use.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        // The kernel rounds the length up to whole pages.
        let len = size;
        let released = if len == 0 {
            Ok(())
        } else {
            // SAFETY: the slot belongs to a memory that is being dropped, so
            // nothing references its contents any more; MADV_DONTNEED on a
            // private anonymous mapping drops the pages and zero-fills them on
            // the next touch.
            unsafe { mm::madvise(base as *mut _, len, Advice::LinuxDontNeed) }
        };
        self.committed.fetch_sub(size as u64, Ordering::Relaxed);
        let mut state = self.lock();
        match released {
            Ok(()) => state.free.push(base),
            Err(errno) => {
                // The slot may still hold the previous guest's data; never hand
                // it out again.
                self.leaked.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%errno, base, len, "madvise(MADV_DONTNEED) failed; slot leaked");
            }
        }
        self.in_use.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.prefaulter.tell(|signal| signal.shutdown = true);
        // Every `SlotMemory` holds a clone of the allocator, so by now no
        // memory points into the chunks.
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        for &(base, len) in &state.chunks {
            // SAFETY: each chunk was mapped by `map_chunk` and is unmapped once.
            if let Err(errno) = unsafe { mm::munmap(base as *mut _, len) } {
                tracing::error!(%errno, base, len, "munmap of a slot chunk failed");
            }
        }
    }
}

/// Explains an `mmap` failure: which of the kernel's limits was likely hit.
fn mmap_hint(errno: rustix::io::Errno, reserved: usize) -> String {
    let max_map_count = read_trimmed("/proc/sys/vm/max_map_count");
    let mappings = std::fs::read_to_string("/proc/self/maps")
        .map(|m| m.lines().count().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let address_space = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|line| line.starts_with("Max address space"))
                .and_then(|line| line.split_whitespace().nth(3).map(str::to_owned))
        })
        .unwrap_or_else(|| "unknown".into());
    let near_map_limit = matches!(
        (mappings.parse::<u64>(), max_map_count.parse::<u64>()),
        (Ok(m), Ok(max)) if m + 16 >= max
    );
    let counts = format!(
        "vm.max_map_count = {max_map_count} with {mappings} mappings in this process; \
         address space limit (RLIMIT_AS) = {address_space} with {reserved} bytes already reserved for slots"
    );
    if errno != rustix::io::Errno::NOMEM {
        counts
    } else if near_map_limit {
        format!("hint: the process mapping limit was reached ({counts})")
    } else {
        format!(
            "hint: the address space is exhausted, lower the slot size or slot budget ({counts})"
        )
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// The default host memory budget: physical RAM (`MemTotal` in
/// `/proc/meminfo`), or the cgroup v2 `memory.max` when that is lower. Falls
/// back to 4 GiB when neither can be read.
///
/// The budget counts *accessible* linear memory, an upper bound on what guests
/// can touch: with it no set of guests can commit more than the machine has,
/// so growth fails in the guest before the OOM killer would act. Half of RAM
/// (the first choice) refused 100,000 actors of a std guest that had each grown
/// once (192 KiB accessible, about 10 KiB touched each) on a 24 GiB machine.
pub fn default_memory_budget() -> u64 {
    let mem_total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find_map(|line| line.strip_prefix("MemTotal:"))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kib| kib * 1024)
    });
    let cgroup_max = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    match (mem_total, cgroup_max) {
        (Some(ram), Some(cg)) => ram.min(cg),
        (Some(ram), None) => ram,
        (None, Some(cg)) => cg,
        (None, None) => {
            tracing::warn!("physical memory size unknown; memory budget set to 4 GiB");
            FALLBACK_MEMORY_BUDGET
        }
    }
}

/// The base address of a slot.
struct SlotBase(NonNull<u8>);

// SAFETY: the pointer is an address inside a mapping owned by the allocator,
// valid for the slot's whole life; wasmtime synchronises access to the
// memory's contents.
unsafe impl Send for SlotBase {}
// SAFETY: as above; `SlotMemory` never dereferences the pointer itself.
unsafe impl Sync for SlotBase {}

/// One linear memory living in a slot. Returns the slot to its allocator
/// (pages released and zeroed) when dropped.
pub struct SlotMemory {
    allocator: SlotAllocator,
    base: SlotBase,
    size: usize,
}

impl fmt::Debug for SlotMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlotMemory")
            .field("base", &self.base.0)
            .field("size", &self.size)
            .finish()
    }
}

impl SlotMemory {
    /// Grows the accessible part to `new_size` bytes, charging the growth to
    /// the host budget. Shrinking is a no-op.
    pub fn grow(&mut self, new_size: usize) -> Result<(), MemoryError> {
        let s = &self.allocator.shared;
        if new_size <= self.size {
            return Ok(());
        }
        if new_size > s.slot_size {
            s.fail_slot_size.fetch_add(1, Ordering::Relaxed);
            return Err(MemoryError::SlotSizeExceeded {
                requested: new_size as u64,
                slot_size: s.slot_size,
            });
        }
        s.charge((new_size - self.size) as u64)?;
        self.size = new_size;
        Ok(())
    }
}

impl Drop for SlotMemory {
    fn drop(&mut self) {
        self.allocator
            .shared
            .release(self.base.0.as_ptr() as usize, self.size);
    }
}

// SAFETY: the memory is `slot_size` bytes of read-write, page-aligned, private
// memory owned by this value alone until it is dropped; the base never moves
// and growth within the slot only changes the accessible size. There is no
// guard region: `SlotAllocator::new_memory` refuses any request that asks
// for one, so compiled code always checks bounds explicitly.
unsafe impl LinearMemory for SlotMemory {
    fn byte_size(&self) -> usize {
        self.size
    }

    fn byte_capacity(&self) -> usize {
        self.allocator.shared.slot_size
    }

    fn grow_to(&mut self, new_size: usize) -> wasmtime::Result<()> {
        self.grow(new_size).map_err(wasmtime::Error::new)
    }

    fn as_ptr(&self) -> *mut u8 {
        self.base.0.as_ptr()
    }
}

// SAFETY: every memory handed out is zeroed, exclusively owned, and at least
// `minimum` bytes long; requests whose compiled code would rely on a guard
// region or on a reservation (instead of explicit checks against the current
// size) are refused.
unsafe impl MemoryCreator for SlotAllocator {
    fn new_memory(
        &self,
        ty: MemoryType,
        minimum: usize,
        _maximum: Option<usize>,
        reserved_size_in_bytes: Option<usize>,
        guard_size_in_bytes: usize,
    ) -> Result<Box<dyn LinearMemory>, String> {
        if ty.is_shared() {
            return Err(MemoryError::InvalidConfig(
                "shared memories are not supported by slot memories".into(),
            )
            .to_string());
        }
        // Compiled code skips the bounds checks a guard region covers, and
        // with a non-zero reservation it checks accesses against the
        // reservation rather than the current size, trusting the pages past
        // the size to fault. Slot pages never fault, so both must be zero.
        if guard_size_in_bytes != 0 || reserved_size_in_bytes.is_some_and(|r| r != 0) {
            return Err(MemoryError::InvalidConfig(format!(
                "engine asks for a {} byte reservation and a {guard_size_in_bytes} byte guard; \
                 slot memories need both to be 0 (memory_reservation(0), memory_guard_size(0))",
                reserved_size_in_bytes.unwrap_or(0),
            ))
            .to_string());
        }
        self.allocate(minimum)
            .map(|m| Box::new(m) as Box<dyn LinearMemory>)
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;
    const PAGE: usize = WASM_PAGE_SIZE;

    fn small(
        slot_size: usize,
        slots_per_chunk: usize,
        max_slots: usize,
        budget: u64,
    ) -> SlotAllocator {
        SlotAllocator::new(SlotConfig {
            slot_size,
            slots_per_chunk,
            max_slots: Some(max_slots),
            memory_budget: Some(budget),
            warm_slots: 0,
        })
        .unwrap()
    }

    #[test]
    fn rejects_bad_slot_sizes() {
        for slot_size in [0, 4096, WASM_PAGE_SIZE + 1, MAX_SLOT_SIZE + WASM_PAGE_SIZE] {
            let err = SlotAllocator::new(SlotConfig {
                slot_size,
                ..SlotConfig::default()
            })
            .unwrap_err();
            assert!(matches!(err, MemoryError::InvalidConfig(_)), "{err}");
        }
    }

    #[test]
    fn slots_are_reused_last_in_first_out_and_zeroed() {
        let alloc = small(MIB, 4, 8, 64 * MIB as u64);
        let mut a = alloc.allocate(WASM_PAGE_SIZE).unwrap();
        let base = a.as_ptr();
        // SAFETY: the first page of `a` is accessible and exclusively ours.
        unsafe { base.write_bytes(0xAB, WASM_PAGE_SIZE) };
        a.grow(2 * WASM_PAGE_SIZE).unwrap();
        assert_eq!(alloc.stats().committed_bytes, 2 * WASM_PAGE_SIZE as u64);
        drop(a);
        let stats = alloc.stats();
        assert_eq!((stats.slots_in_use, stats.committed_bytes), (0, 0));
        let b = alloc.allocate(WASM_PAGE_SIZE).unwrap();
        assert_eq!(b.as_ptr(), base, "the released slot is handed out again");
        // SAFETY: the first page of `b` is accessible.
        let page = unsafe { std::slice::from_raw_parts(b.as_ptr(), WASM_PAGE_SIZE) };
        assert!(page.iter().all(|&byte| byte == 0), "reused slot is zeroed");
    }

    fn with_warm(warm_slots: usize) -> SlotAllocator {
        SlotAllocator::new(SlotConfig {
            slot_size: MIB,
            slots_per_chunk: 16,
            max_slots: Some(64),
            memory_budget: Some(u64::MAX),
            warm_slots,
        })
        .unwrap()
    }

    /// Whether the host page at `address` is resident and private, from the allocator's
    /// reading of `/proc/self/pagemap`.
    fn resident(alloc: &SlotAllocator, address: *const u8) -> bool {
        let page = alloc.shared.page;
        let entries = alloc
            .shared
            .page_entries(address as usize / page * page, page)
            .unwrap();
        entries[0] & PM_PRESENT != 0 && entries[0] & PM_EXCLUSIVE != 0
    }

    fn all_zero(memory: &SlotMemory) -> bool {
        // SAFETY: the accessible bytes of a live memory.
        let bytes = unsafe { std::slice::from_raw_parts(memory.as_ptr(), memory.byte_size()) };
        bytes.iter().all(|&b| b == 0)
    }

    /// The accessible bytes of a live memory, mutably.
    fn bytes_of(memory: &mut SlotMemory) -> &mut [u8] {
        // SAFETY: the accessible bytes of a live memory, borrowed with it.
        unsafe { std::slice::from_raw_parts_mut(memory.as_ptr(), memory.byte_size()) }
    }

    #[test]
    fn trimming_drops_zero_unchanged_and_slightly_changed_pages_and_restore_brings_back_the_same_bytes()
     {
        let alloc = with_warm(0);
        let page = alloc.page_size();
        let mut memory = alloc.allocate(4 * WASM_PAGE_SIZE).unwrap();
        let bytes = bytes_of(&mut memory);
        // "Data segments" in pages 2..6, as after instantiation.
        for (i, b) in bytes[2 * page..6 * page].iter_mut().enumerate() {
            *b = (i % 251) as u8 + 1;
        }
        let image = PageImage::capture(bytes, page);
        assert_eq!(image.pages(), 4);
        // The guest ran: a byte of page 3 of its data changed, page 8 holds a little heap, page
        // 10 a lot, page 9 was touched and is zero again, page 0 was only read.
        bytes[3 * page + 7] = 0;
        bytes[8 * page] = 42;
        bytes[8 * page + 1000..8 * page + 1100].fill(9);
        let mut x = 1u32;
        for b in &mut bytes[10 * page..11 * page] {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            *b = (x >> 24) as u8 | 1;
        }
        bytes[9 * page] = 1;
        bytes[9 * page] = 0;
        let _ = std::hint::black_box(bytes[0]);
        let before = bytes.to_vec();
        let base = bytes.as_ptr();

        let trimmed = alloc.trim(bytes, &image).unwrap();
        // Pages 2, 4 and 5 equal the image, page 9 is zero, pages 3 and 8 are patched; the
        // pages only read (page 0, and the rest by the copy above) map the shared zero page and
        // cost nothing.
        assert_eq!(trimmed.dropped, 6, "{trimmed:?}");
        assert_eq!(trimmed.patched, 2, "{trimmed:?}");
        assert!(trimmed.needs_restore());
        // Two patches: one word of page 3; one word and the 13 words around the 100 bytes of 9s
        // on page 8 (offsets 1000..1100 span words 125..138).
        assert_eq!(
            trimmed.patch_bytes(),
            (6 + 4 + 8) + (6 + 4 + 8 + 4 + 13 * 8)
        );
        for i in [2, 3, 4, 5, 8, 9] {
            assert!(
                !resident(&alloc, base.wrapping_add(i * page)),
                "page {i} given back"
            );
        }
        assert!(
            resident(&alloc, base.wrapping_add(10 * page)),
            "page 10 kept: it changed too much for a patch"
        );
        let stats = alloc.stats();
        assert_eq!(stats.trims, 1);
        assert_eq!(stats.pages_trimmed, trimmed.dropped as u64);
        assert_eq!(stats.pages_patched, 2);

        let bytes = bytes_of(&mut memory);
        assert_eq!(
            bytes[2 * page],
            0,
            "an image page reads as zero until restored"
        );
        assert_eq!(
            bytes[8 * page],
            0,
            "a patched page reads as zero until restored"
        );
        alloc.restore(trimmed, bytes, &image);
        assert!(
            bytes == &before[..],
            "the memory holds exactly what it held before the trim"
        );
        assert_eq!(alloc.stats().pages_restored, 5, "2, 3, 4, 5 and 8");
    }

    #[test]
    fn a_patch_rebuilds_its_page_from_the_reference_and_is_refused_past_half_a_page() {
        let page = 4096;
        let image: Vec<u8> = (0..page).map(|i| (i % 253) as u8 + 1).collect();
        for reference in [None, Some(&image[..])] {
            let mut changed = reference.map_or_else(|| vec![0; page], <[u8]>::to_vec);
            // The first and the last byte, and a run across a 64-byte boundary.
            changed[0] ^= 0xFF;
            changed[page - 1] ^= 0xFF;
            changed[60..70].fill(0xEE);
            let mut out = vec![7];
            assert!(Patch::encode(3, &changed, reference, &mut out));
            // Three runs: word 0, words 7..9 (bytes 56..72), word 511.
            assert_eq!(out.len(), 1 + 6 + (4 + 8) + (4 + 16) + (4 + 8));
            let mut memory = vec![0; 4 * page];
            if let Some(r) = reference {
                memory[3 * page..].copy_from_slice(r);
            }
            let rest = Patch::apply(&out[1..], &mut memory, page);
            assert!(rest.is_empty());
            assert_eq!(&memory[3 * page..], &changed[..]);
            assert!(
                memory[..3 * page].iter().all(|&b| b == 0),
                "other pages untouched"
            );

            // Every other word changed: more than half a page to write down.
            let mut busy = changed.clone();
            for w in busy.chunks_mut(16) {
                w[0] ^= 0x55;
            }
            let mut out = vec![7];
            assert!(!Patch::encode(3, &busy, reference, &mut out));
            assert_eq!(out, [7], "a refused patch leaves the buffer as it was");
        }
    }

    #[test]
    fn trimming_gives_back_the_idle_stack_whatever_it_holds_and_it_reads_as_zero() {
        let alloc = with_warm(0);
        let page = alloc.page_size();
        let mut memory = alloc.allocate(WASM_PAGE_SIZE).unwrap();
        let bytes = bytes_of(&mut memory);
        // The stack spans pages 0..4 and a bit of page 4, which also holds data.
        let image = PageImage::capture(bytes, page).with_dead(0..4 * page + 100);
        bytes[..5 * page].fill(0x5A);
        let base = bytes.as_ptr();

        let trimmed = alloc.trim(bytes, &image).unwrap();
        assert_eq!(trimmed.dropped, 4, "only pages wholly inside the stack");
        assert!(!trimmed.needs_restore());
        assert!(
            resident(&alloc, base.wrapping_add(4 * page)),
            "page 4 holds data too"
        );
        let bytes = bytes_of(&mut memory);
        assert!(bytes[..4 * page].iter().all(|&b| b == 0));
        assert!(bytes[4 * page..5 * page].iter().all(|&b| b == 0x5A));
    }

    #[test]
    fn trimming_a_memory_of_another_allocator_is_refused_and_changes_nothing() {
        let alloc = with_warm(0);
        let other = with_warm(0);
        let page = alloc.page_size();
        let mut memory = other.allocate(WASM_PAGE_SIZE).unwrap();
        let bytes = bytes_of(&mut memory);
        bytes[0] = 7;
        let image = PageImage::capture(bytes, page);
        let err = alloc.trim(bytes, &image).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(err.to_string(), "not a memory of this slot allocator");
        assert_eq!(bytes[0], 7);
        assert_eq!(alloc.stats().trims, 0);
    }

    #[test]
    fn a_warm_slot_comes_back_zeroed_with_its_pages_still_resident() {
        let alloc = with_warm(4);
        let page = rustix::param::page_size();
        let a = alloc.allocate(4 * WASM_PAGE_SIZE).unwrap();
        let base = a.as_ptr();
        // SAFETY: all offsets are within the 256 KiB accessible in `a`.
        unsafe {
            base.write_bytes(0xAB, 10 * page);
            base.add(40 * page).write(0xCD);
            // A read maps the shared zero page: present, but not ours to zero in place.
            std::ptr::read_volatile(base.add(20 * page));
        }
        drop(a);
        let stats = alloc.stats();
        assert_eq!(
            (stats.warm_slots, stats.slots_in_use, stats.committed_bytes),
            (1, 0, 0)
        );
        let b = alloc.allocate(4 * WASM_PAGE_SIZE).unwrap();
        assert_eq!(b.as_ptr(), base, "the warm slot is handed out first");
        assert_eq!(alloc.stats().warm_hits, 1);
        assert!(all_zero(&b), "nothing of the previous memory is left");
        assert!(
            (0..10).all(|i| resident(&alloc, base.wrapping_add(i * page)))
                && resident(&alloc, base.wrapping_add(40 * page)),
            "the pages it had touched are still resident"
        );
        assert!(
            !resident(&alloc, base.wrapping_add(11 * page)),
            "untouched pages were not touched"
        );
    }

    #[test]
    fn past_the_warm_pool_a_released_slot_gives_its_pages_back() {
        let alloc = with_warm(1);
        let (a, b) = (
            alloc.allocate(WASM_PAGE_SIZE).unwrap(),
            alloc.allocate(WASM_PAGE_SIZE).unwrap(),
        );
        for m in [&a, &b] {
            // SAFETY: the first 64 KiB are accessible.
            unsafe { m.as_ptr().write_bytes(0xEE, WASM_PAGE_SIZE) };
        }
        let (warm, cold) = (a.as_ptr(), b.as_ptr());
        drop(a);
        drop(b);
        assert_eq!(alloc.stats().warm_slots, 1);
        assert!(resident(&alloc, warm), "the first slot released is warm");
        assert!(
            !resident(&alloc, cold),
            "the second went back to the kernel"
        );
        let c = alloc.allocate(WASM_PAGE_SIZE).unwrap();
        let d = alloc.allocate(WASM_PAGE_SIZE).unwrap();
        assert_eq!(
            (c.as_ptr(), d.as_ptr()),
            (warm, cold),
            "warm first, then free"
        );
        assert!(all_zero(&c) && all_zero(&d));
    }

    #[test]
    fn the_background_thread_prefaults_slots_with_a_recent_footprint() {
        let alloc = with_warm(4);
        let page = rustix::param::page_size();
        let a = alloc.allocate(2 * WASM_PAGE_SIZE).unwrap();
        let touched = [0, 3, 17];
        for i in touched {
            // SAFETY: within the 128 KiB accessible in `a`.
            unsafe { a.as_ptr().add(i * page).write(1) };
        }
        // The second allocation samples what the first one touched.
        let _b = alloc.allocate(2 * WASM_PAGE_SIZE).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while alloc.stats().warm_slots < 4 {
            assert!(
                std::time::Instant::now() < deadline,
                "warm pool not filled: {:?}",
                alloc.stats()
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(
            (alloc.stats().prefaulted, alloc.stats().footprint_pages),
            (4, 3)
        );
        let c = alloc.allocate(2 * WASM_PAGE_SIZE).unwrap();
        assert_eq!(alloc.stats().warm_hits, 1);
        assert!(all_zero(&c));
        for i in touched {
            assert!(
                resident(&alloc, c.as_ptr().wrapping_add(i * page)),
                "page {i} was prefaulted"
            );
        }
        assert!(
            !resident(&alloc, c.as_ptr().wrapping_add(page)),
            "page 1 was not in the footprint"
        );
        assert_eq!(alloc.stats().slots_in_use, 3);
    }

    #[test]
    fn chunks_are_mapped_as_needed() {
        let alloc = small(MIB, 4, 100, u64::MAX);
        let memories: Vec<_> = (0..9).map(|_| alloc.allocate(0).unwrap()).collect();
        let stats = alloc.stats();
        assert_eq!(stats.mappings, 3);
        assert_eq!(stats.slots_mapped, 12);
        assert_eq!(stats.slots_in_use, 9);
        // Slots of one chunk are adjacent.
        assert_eq!(
            memories[1].as_ptr() as usize - memories[0].as_ptr() as usize,
            MIB
        );
    }

    #[test]
    fn slot_budget_is_a_named_wall() {
        let alloc = small(MIB, 2, 3, u64::MAX);
        let _held: Vec<_> = (0..3).map(|_| alloc.allocate(0).unwrap()).collect();
        let err = alloc.allocate(0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "slot budget exhausted: 3 of 3 slots in use"
        );
        assert_eq!(err.wall(), Some(MemoryWall::SlotBudget));
        assert_eq!(alloc.stats().failures.slot_budget, 1);
        // The last chunk was clipped to the budget.
        assert_eq!(alloc.stats().slots_mapped, 3);
    }

    #[test]
    fn host_budget_is_a_named_wall() {
        let budget = 3 * WASM_PAGE_SIZE as u64;
        let alloc = small(MIB, 4, 8, budget);
        let mut a = alloc.allocate(2 * WASM_PAGE_SIZE).unwrap();
        let err = alloc.allocate(2 * WASM_PAGE_SIZE).unwrap_err();
        assert_eq!(err.wall(), Some(MemoryWall::HostBudget));
        assert!(
            err.to_string().starts_with("host memory budget exhausted"),
            "{err}"
        );
        let err = a.grow(4 * WASM_PAGE_SIZE).unwrap_err();
        assert_eq!(err.wall(), Some(MemoryWall::HostBudget));
        a.grow(3 * WASM_PAGE_SIZE).unwrap();
        let stats = alloc.stats();
        assert_eq!(stats.failures.host_budget, 2);
        assert_eq!(stats.committed_bytes, budget);
        // The failed allocation gave its slot back.
        assert_eq!(stats.slots_in_use, 1);
    }

    #[test]
    fn slot_size_is_a_named_wall() {
        let alloc = small(MIB, 4, 8, u64::MAX);
        let err = alloc.allocate(2 * MIB).unwrap_err();
        assert_eq!(err.wall(), Some(MemoryWall::SlotSize));
        let mut a = alloc.allocate(0).unwrap();
        a.grow(MIB).unwrap();
        assert_eq!(
            a.grow(MIB + WASM_PAGE_SIZE).unwrap_err().wall(),
            Some(MemoryWall::SlotSize)
        );
        assert_eq!(alloc.stats().failures.slot_size, 2);
    }

    #[test]
    fn mmap_failure_names_errno_and_limits() {
        // A 4 PiB chunk is larger than any user address space.
        let alloc = small(MAX_SLOT_SIZE, 1 << 20, 1 << 20, u64::MAX);
        let err = alloc.allocate(0).unwrap_err();
        assert_eq!(err.wall(), Some(MemoryWall::Mmap));
        let message = err.to_string();
        assert!(message.contains("vm.max_map_count = "), "{message}");
        assert!(message.contains("address space"), "{message}");
        assert!(!message.starts_with("Cannot allocate memory"), "{message}");
        assert_eq!(alloc.stats().failures.mmap, 1);
        assert_eq!(alloc.stats().slots_in_use, 0);
    }

    #[test]
    fn memories_needing_a_guard_or_reservation_are_refused() {
        let alloc = small(MIB, 4, 8, u64::MAX);
        let ty = MemoryType::new(1, None);
        for (reserved, guard) in [(Some(MIB), 0), (Some(0), 4096), (None, 32 * MIB)] {
            let err = alloc
                .new_memory(ty.clone(), PAGE, None, reserved, guard)
                .err()
                .expect("refused");
            assert!(err.starts_with("invalid memory configuration"), "{err}");
        }
        let memory = alloc.new_memory(ty, PAGE, None, Some(0), 0).unwrap();
        assert_eq!((memory.byte_size(), memory.byte_capacity()), (PAGE, MIB));
        assert_eq!(alloc.stats().slots_in_use, 1);
    }

    #[test]
    fn wall_of_reads_typed_and_flattened_errors() {
        let typed = wasmtime::Error::new(MemoryError::SlotBudgetExhausted { in_use: 1, max: 1 });
        assert_eq!(wall_of(&typed), Some(MemoryWall::SlotBudget));
        let errors = [
            MemoryError::SlotBudgetExhausted { in_use: 1, max: 1 },
            MemoryError::HostBudgetExhausted {
                requested: 1,
                committed: 1,
                budget: 1,
            },
            MemoryError::SlotSizeExceeded {
                requested: 1,
                slot_size: 1,
            },
            MemoryError::Mmap {
                bytes: 1,
                slots: 1,
                error: io::Error::from_raw_os_error(12),
                hint: String::new(),
            },
        ];
        for e in errors {
            let flattened = wasmtime::format_err!("{e}").context("while instantiating");
            assert_eq!(wall_of(&flattened), e.wall(), "{e}");
        }
        assert_eq!(wall_of(&wasmtime::format_err!("unrelated")), None);
    }
}

/// Tests with real wasm instances on an [`crate::engine::Engine`].
#[cfg(test)]
mod instance_tests {
    use super::*;
    use crate::engine::{Engine, EngineConfig};
    use std::time::{Duration, Instant};
    use wasmtime::{Instance, Module, ResourceLimiter, Store, StoreLimits, Trap};

    const MIB: usize = 1 << 20;
    const PAGE: usize = WASM_PAGE_SIZE;

    /// Grows memory by one page and writes to the new page; returns the old
    /// size in pages, or -1.
    const GROWER: &str = r#"
        (module
          (memory (export "memory") 0)
          (func (export "grow") (result i32)
            (local $old i32)
            (local.set $old (memory.grow (i32.const 1)))
            (if (i32.ge_s (local.get $old) (i32.const 0))
              (then (i32.store8 (i32.mul (local.get $old) (i32.const 65536)) (i32.const 1))))
            (local.get $old)))
    "#;

    fn accessor(memory: &str) -> String {
        format!(
            r#"(module
                 (memory (export "memory") {memory})
                 (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0)))
                 (func (export "load") (param i32) (result i32) (i32.load8_u (local.get 0)))
                 (func (export "store") (param i32) (i32.store8 (local.get 0) (i32.const 0xaa)))
                 (func (export "store64") (param i32) (i64.store (local.get 0) (i64.const -1)))
                 (func (export "load_far") (param i32) (result i32)
                   (i32.load offset=65536 (local.get 0))))"#
        )
    }

    fn engine(memory: SlotConfig) -> Engine {
        Engine::new(EngineConfig {
            memory,
            ..EngineConfig::default()
        })
        .unwrap()
    }

    fn compile(engine: &Engine, wat: &str) -> Module {
        engine.compile(&wat::parse_str(wat).unwrap()).unwrap().0
    }

    /// A limiter that keeps the errors wasmtime reports for failed growth.
    struct Recorder {
        limits: StoreLimits,
        failures: Vec<wasmtime::Error>,
    }

    impl ResourceLimiter for Recorder {
        fn memory_growing(
            &mut self,
            current: usize,
            desired: usize,
            maximum: Option<usize>,
        ) -> wasmtime::Result<bool> {
            self.limits.memory_growing(current, desired, maximum)
        }

        fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
            self.failures.push(error);
            Ok(())
        }

        fn table_growing(
            &mut self,
            current: usize,
            desired: usize,
            maximum: Option<usize>,
        ) -> wasmtime::Result<bool> {
            self.limits.table_growing(current, desired, maximum)
        }
    }

    fn store(engine: &Engine, memory_limit: u64) -> Store<Recorder> {
        let mut store = Store::new(
            engine.wasmtime(),
            Recorder {
                limits: engine.store_limits(memory_limit),
                failures: Vec::new(),
            },
        );
        store.limiter(|r| r);
        store.set_epoch_deadline(u64::MAX / 2);
        store
    }

    fn call<P: wasmtime::WasmParams, R: wasmtime::WasmResults>(
        store: &mut Store<Recorder>,
        instance: &Instance,
        name: &str,
        params: P,
    ) -> wasmtime::Result<R> {
        instance
            .get_typed_func::<P, R>(&mut *store, name)?
            .call(&mut *store, params)
    }

    fn maps_count() -> usize {
        std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .count()
    }

    fn rss_bytes() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kib * 1024
    }

    /// Instantiates `n` growing instances, keeps them all alive, and checks
    /// that the process mapping count stays flat and the slots come back.
    fn many_growing_instances(n: usize) {
        let engine = engine(SlotConfig::default());
        let module = compile(&engine, GROWER);
        let maps_before = maps_count();
        let rss_before = rss_bytes();
        let started = Instant::now();
        let mut grow_time = Duration::ZERO;
        let mut live = Vec::with_capacity(n);
        for _ in 0..n {
            let mut store = store(&engine, 1 << 20);
            let instance = Instance::new(&mut store, &module, &[]).unwrap();
            let grow = instance
                .get_typed_func::<(), i32>(&mut store, "grow")
                .unwrap();
            let t = Instant::now();
            assert_eq!(grow.call(&mut store, ()).unwrap(), 0);
            grow_time += t.elapsed();
            live.push((store, instance));
        }
        let elapsed = started.elapsed();
        let maps_after = maps_count();
        let rss_after = rss_bytes();
        let stats = engine.memory_stats();
        eprintln!(
            "{n} instances: mappings {maps_before} -> {maps_after} ({} slot chunks), \
             RSS +{} KiB ({} bytes/instance), {:.1} us/instance total, {:.2} us/grow, \
             committed {} MiB",
            stats.mappings,
            (rss_after.saturating_sub(rss_before)) >> 10,
            rss_after.saturating_sub(rss_before) / n as u64,
            elapsed.as_secs_f64() * 1e6 / n as f64,
            grow_time.as_secs_f64() * 1e6 / n as f64,
            stats.committed_bytes >> 20,
        );
        assert_eq!(stats.slots_in_use, n);
        assert_eq!(stats.committed_bytes, (n * PAGE) as u64);
        assert_eq!(stats.mappings, n.div_ceil(DEFAULT_SLOTS_PER_CHUNK));
        // One mapping per instance would add `n`; other tests running in
        // parallel add a few hundred at most.
        assert!(
            maps_after.saturating_sub(maps_before) < 1000,
            "mapping count grew from {maps_before} to {maps_after}"
        );

        drop(live);
        let stats = engine.memory_stats();
        assert_eq!((stats.slots_in_use, stats.committed_bytes), (0, 0));
        assert_eq!(stats.slots_leaked, 0);
        // Released slots are reused; no new chunk is needed.
        let mut store = store(&engine, 1 << 20);
        Instance::new(&mut store, &module, &[]).unwrap();
        assert_eq!(
            engine.memory_stats().mappings,
            n.div_ceil(DEFAULT_SLOTS_PER_CHUNK)
        );
    }

    #[test]
    fn twenty_thousand_growing_instances_share_a_few_mappings() {
        many_growing_instances(20_000);
    }

    #[test]
    #[ignore = "slow: 100,000 instances; run with --ignored --nocapture to measure"]
    fn hundred_thousand_growing_instances_share_a_few_mappings() {
        many_growing_instances(100_000);
    }

    #[test]
    fn out_of_bounds_access_traps_and_spares_the_neighbour_slot() {
        for memory in ["1", "1 1", "1 16", "1 65536"] {
            let engine = engine(SlotConfig {
                slot_size: MIB,
                slots_per_chunk: 4,
                ..SlotConfig::default()
            });
            let module = compile(&engine, &accessor(memory));
            let mut a = store(&engine, u64::MAX);
            let a_inst = Instance::new(&mut a, &module, &[]).unwrap();
            let mut b = store(&engine, u64::MAX);
            let b_inst = Instance::new(&mut b, &module, &[]).unwrap();
            let a_mem = a_inst.get_memory(&mut a, "memory").unwrap();
            let b_mem = b_inst.get_memory(&mut b, "memory").unwrap();
            assert_eq!(
                b_mem.data_ptr(&b) as usize - a_mem.data_ptr(&a) as usize,
                MIB,
                "slots are adjacent"
            );

            let oob = |store: &mut Store<Recorder>, name: &str, addr: u32| {
                let result = if name.starts_with("load") {
                    call::<u32, i32>(store, &a_inst, name, addr).map(drop)
                } else {
                    call::<u32, ()>(store, &a_inst, name, addr)
                };
                let err = result.unwrap_err();
                assert_eq!(
                    err.downcast_ref::<Trap>(),
                    Some(&Trap::MemoryOutOfBounds),
                    "{memory}: {name}({addr:#x}): {err:#}"
                );
            };
            // Inside the slot but past memory.size: the slot is read-write,
            // so only an explicit bounds check can catch these.
            call::<u32, ()>(&mut a, &a_inst, "store", PAGE as u32 - 1).unwrap();
            oob(&mut a, "store", PAGE as u32);
            oob(&mut a, "store64", PAGE as u32 - 4);
            oob(&mut a, "load", PAGE as u32);
            oob(&mut a, "load_far", 0);
            // The neighbour's first byte and beyond.
            oob(&mut a, "store", MIB as u32);
            oob(&mut a, "store64", MIB as u32 - 4);
            oob(&mut a, "store", u32::MAX);

            // Grown to the full slot, the very next byte is the neighbour's.
            let grown = call::<i32, i32>(&mut a, &a_inst, "grow", 15).unwrap();
            if memory == "1 1" {
                assert_eq!(grown, -1);
            } else {
                assert_eq!(grown, 1, "{memory}");
                call::<u32, ()>(&mut a, &a_inst, "store", MIB as u32 - 1).unwrap();
                oob(&mut a, "store", MIB as u32);
                oob(&mut a, "store64", MIB as u32 - 7);
                oob(&mut a, "load_far", (MIB - PAGE) as u32);
                // Past the slot: refused, whether or not the type allows it.
                assert_eq!(call::<i32, i32>(&mut a, &a_inst, "grow", 1).unwrap(), -1);
            }
            assert!(
                b_mem.data(&b).iter().all(|&byte| byte == 0),
                "{memory}: neighbour slot untouched"
            );
        }
    }

    #[test]
    fn grow_past_the_store_limit_returns_minus_one() {
        let engine = engine(SlotConfig::default());
        let module = compile(&engine, &accessor("1"));
        let mut store = store(&engine, 4 * PAGE as u64);
        let instance = Instance::new(&mut store, &module, &[]).unwrap();
        assert_eq!(
            call::<i32, i32>(&mut store, &instance, "grow", 3).unwrap(),
            1
        );
        assert_eq!(
            call::<i32, i32>(&mut store, &instance, "grow", 1).unwrap(),
            -1
        );
        assert_eq!(engine.memory_stats().committed_bytes, 4 * PAGE as u64);
        // The store limit is clamped to the slot size.
        let limits = engine.store_limits(u64::MAX);
        let mut store = Store::new(engine.wasmtime(), limits);
        store.limiter(|l| l);
        store.set_epoch_deadline(u64::MAX / 2);
        let instance = Instance::new(&mut store, &module, &[]).unwrap();
        let grow = instance
            .get_typed_func::<i32, i32>(&mut store, "grow")
            .unwrap();
        let slot_pages = (DEFAULT_SLOT_SIZE / PAGE) as i32;
        assert_eq!(grow.call(&mut store, slot_pages).unwrap(), -1);
        assert_eq!(grow.call(&mut store, slot_pages - 1).unwrap(), 1);
    }

    #[test]
    fn grow_and_instantiate_past_the_slot_fail() {
        let engine = engine(SlotConfig {
            slot_size: MIB,
            ..SlotConfig::default()
        });
        // No store limit at all: the slot is the last line.
        let module = compile(&engine, &accessor("1"));
        let mut store = store(&engine, u64::MAX);
        store.data_mut().limits = StoreLimits::default();
        let instance = Instance::new(&mut store, &module, &[]).unwrap();
        assert_eq!(
            call::<i32, i32>(&mut store, &instance, "grow", 16).unwrap(),
            -1
        );
        assert_eq!(
            call::<i32, i32>(&mut store, &instance, "grow", 15).unwrap(),
            1
        );

        let too_big = compile(&engine, &accessor("17"));
        let mut store = store_without_limits(&engine);
        let err = Instance::new(&mut store, &too_big, &[]).unwrap_err();
        assert_eq!(wall_of(&err), Some(MemoryWall::SlotSize), "{err:#}");
        assert!(
            format!("{err:#}").contains("does not fit a 1048576-byte slot"),
            "{err:#}"
        );
        assert_eq!(engine.memory_stats().failures.slot_size, 1);
    }

    fn store_without_limits(engine: &Engine) -> Store<()> {
        let mut store = Store::new(engine.wasmtime(), ());
        store.set_epoch_deadline(u64::MAX / 2);
        store
    }

    #[test]
    fn grow_past_the_host_budget_returns_minus_one_and_is_counted() {
        let engine = engine(SlotConfig {
            memory_budget: Some(4 * PAGE as u64),
            ..SlotConfig::default()
        });
        let module = compile(&engine, &accessor("1"));
        let mut a = store(&engine, u64::MAX);
        let a_inst = Instance::new(&mut a, &module, &[]).unwrap();
        assert_eq!(call::<i32, i32>(&mut a, &a_inst, "grow", 3).unwrap(), 1);
        assert_eq!(call::<i32, i32>(&mut a, &a_inst, "grow", 1).unwrap(), -1);

        let stats = engine.memory_stats();
        assert_eq!(stats.failures.host_budget, 1);
        assert_eq!(stats.committed_bytes, 4 * PAGE as u64);
        let failures = &a.data().failures;
        assert_eq!(failures.len(), 1);
        assert_eq!(wall_of(&failures[0]), Some(MemoryWall::HostBudget));
        assert!(
            matches!(
                failures[0].downcast_ref::<MemoryError>(),
                Some(MemoryError::HostBudgetExhausted {
                    requested: 65536,
                    committed: 262144,
                    budget: 262144
                })
            ),
            "{:#}",
            failures[0]
        );

        // Instantiating needs a page the budget no longer has.
        let mut b = store(&engine, u64::MAX);
        let err = Instance::new(&mut b, &module, &[]).unwrap_err();
        assert_eq!(wall_of(&err), Some(MemoryWall::HostBudget), "{err:#}");
        assert_eq!(engine.memory_stats().failures.host_budget, 2);
        assert_eq!(engine.memory_stats().slots_in_use, 1);

        // Dropping the store gives the budget and the slot back.
        drop(a);
        let stats = engine.memory_stats();
        assert_eq!((stats.slots_in_use, stats.committed_bytes), (0, 0));
        let b_inst = Instance::new(&mut b, &module, &[]).unwrap();
        assert_eq!(call::<i32, i32>(&mut b, &b_inst, "grow", 3).unwrap(), 1);
    }

    #[test]
    fn slot_budget_exhaustion_names_the_wall() {
        let engine = engine(SlotConfig {
            max_slots: Some(2),
            ..SlotConfig::default()
        });
        let module = compile(&engine, &accessor("0"));
        let mut stores: Vec<_> = (0..2).map(|_| store_without_limits(&engine)).collect();
        for s in &mut stores {
            Instance::new(s, &module, &[]).unwrap();
        }
        let mut third = store_without_limits(&engine);
        let err = Instance::new(&mut third, &module, &[]).unwrap_err();
        assert_eq!(wall_of(&err), Some(MemoryWall::SlotBudget));
        assert!(
            format!("{err:#}").contains("slot budget exhausted: 2 of 2 slots in use"),
            "{err:#}"
        );
        stores.pop();
        Instance::new(&mut third, &module, &[]).unwrap();
    }

    #[test]
    fn dropped_store_slot_is_reused_zeroed() {
        let engine = engine(SlotConfig::default());
        let module = compile(&engine, &accessor("1"));
        let mut a = store(&engine, u64::MAX);
        let a_inst = Instance::new(&mut a, &module, &[]).unwrap();
        call::<u32, ()>(&mut a, &a_inst, "store", 100).unwrap();
        let a_ptr = a_inst.get_memory(&mut a, "memory").unwrap().data_ptr(&a);
        drop(a);
        let mut b = store(&engine, u64::MAX);
        let b_inst = Instance::new(&mut b, &module, &[]).unwrap();
        let b_mem = b_inst.get_memory(&mut b, "memory").unwrap();
        assert_eq!(b_mem.data_ptr(&b), a_ptr, "same slot");
        assert_eq!(call::<u32, i32>(&mut b, &b_inst, "load", 100).unwrap(), 0);
    }
}
