//! Heap allocations per request: what an activation allocates, against a request to an active
//! key.
//!
//! `cargo bench -p bunraku-bench --bench allocations` (`BUNRAKU_BENCH_KEYS=n` sets the requests
//! per round, default 1,000).
//!
//! A default host with guest `stateful` deployed as the virtual type `counter` (as in the
//! `activation` bench), requests from a separate current-thread runtime (as the CLI's). A
//! counting global allocator adds up, per request, the bytes and allocations made on the
//! client's thread (where a new key's group, cell, mailbox and task are built) and the bytes
//! still held by the whole process once the host went quiet (a new key's activation, its
//! instance's host structures, the refill of the prepared instances). Two rounds of each kind,
//! alternating; then the size of every allocation the client's thread made for one request of
//! each kind, in order.
//!
//! Counting, not timing: the figures are the same from run to run. On this VM a page of fresh
//! heap costs ~5 µs to fault in, so the client's bytes per activation are part of its latency.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use serde_json::json;

/// Counts what every thread allocates, and what this thread allocates.
struct Counting;

/// Bytes held by the whole process (allocated minus freed).
static HELD: AtomicI64 = AtomicI64::new(0);

thread_local! {
    /// Bytes and allocations made on this thread.
    static MINE: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
    /// When set, the size of each allocation this thread makes.
    static SIZES: RefCell<Option<Vec<usize>>> = const { RefCell::new(None) };
}

impl Counting {
    fn count(size: usize) {
        HELD.fetch_add(size as i64, Ordering::Relaxed);
        let _ = MINE.try_with(|m| {
            let (bytes, count) = m.get();
            m.set((bytes + size as u64, count + 1));
        });
        let _ = SIZES.try_with(|s| {
            // `try_borrow_mut`: the push itself may allocate, which lands here re-entrantly.
            if let Ok(mut sizes) = s.try_borrow_mut()
                && let Some(sizes) = sizes.as_mut()
                && sizes.len() < sizes.capacity()
            {
                sizes.push(size);
            }
        });
    }
}

// SAFETY: forwards every call to `System` unchanged; the counting touches no allocation.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::count(layout.size());
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        HELD.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        Self::count(new_size);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Lets the host finish what a request leaves behind (the refill of its prepared instances).
fn settle() {
    std::thread::sleep(Duration::from_millis(300));
}

fn main() {
    bunraku_bench::init_logging();
    let requests = bunraku_bench::env_usize("BUNRAKU_BENCH_KEYS", 1000);
    let dir =
        std::env::temp_dir().join(format!("bunraku-bench-allocations-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = bunraku_runtime::HostConfig {
        guest_threads: bunraku_bench::guest_threads(),
        data_dir: Some(dir.clone()),
        ..Default::default()
    };
    let host = bunraku_runtime::Host::new(config).expect("host starts");
    let mut counter = bunraku_bench::spec("counter", &bunraku_bench::guest("stateful"));
    counter.virtual_idle = Some(Duration::from_secs(3600));
    bunraku_bench::deploy(&host, &counter);
    let ctl = bunraku_bench::control_runtime();
    let get = |key: String| {
        let host = &host;
        async move {
            host.call_json(&key, Some("Get"), json!({}))
                .await
                .expect("get");
        }
    };

    println!("## allocations per request (default host, guest `stateful`)");
    println!(
        "| request | client thread: bytes | client thread: allocations | whole process: bytes still held |"
    );
    println!("|---|---|---|---|");
    ctl.block_on(async {
        // Warm up: the active key, and enough activations to grow the host's maps.
        get("counter/warm".into()).await;
        for i in 0..requests {
            get(format!("counter/w{i}")).await;
        }
        for round in 0..2 {
            for new_key in [false, true] {
                settle();
                let (mine, held) = (MINE.with(Cell::get), HELD.load(Ordering::Relaxed));
                for i in 0..requests {
                    let key = if new_key {
                        format!("counter/r{round}-{i}")
                    } else {
                        "counter/warm".to_owned()
                    };
                    get(key).await;
                }
                settle();
                let (mine_after, held_after) = (MINE.with(Cell::get), HELD.load(Ordering::Relaxed));
                let per = |n: f64| n / requests as f64;
                println!(
                    "| {} | {:.0} B | {:.1} | {:.0} B |",
                    if new_key {
                        "a new key"
                    } else {
                        "the active key"
                    },
                    per((mine_after.0 - mine.0) as f64),
                    per((mine_after.1 - mine.1) as f64),
                    per((held_after - held) as f64),
                );
            }
        }
        println!();
        for (label, key) in [
            ("a new key", "counter/sizes"),
            ("the active key", "counter/warm"),
        ] {
            SIZES.with(|s| *s.borrow_mut() = Some(Vec::with_capacity(4096)));
            get(key.into()).await;
            let sizes = SIZES.with(|s| s.borrow_mut().take()).unwrap_or_default();
            println!(
                "client thread, {label}: {} allocations, bytes {sizes:?}",
                sizes.len()
            );
        }
    });
    drop(host);
    let _ = std::fs::remove_dir_all(dir);
}
