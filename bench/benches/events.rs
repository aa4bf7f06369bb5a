//! The event store: acknowledged appends per second with group commit, and replay speed.
//!
//! `cargo bench -p bunraku-bench --bench events` (`BUNRAKU_BENCH_SECS=n` sets each round's
//! length, default 1 s; three rounds per case, alternating).
//!
//! - appends: N writers (1, 10, 1,000), each an actor with a log of its own, append one
//!   100-byte event at a time to the embedded store (`Store::append`, the path `events_append`
//!   takes) and wait for the acknowledgement (after the commit, `synchronous=FULL`) before the
//!   next. Rounds of the three cases alternate in one process; the figure is acknowledged appends
//!   per second, its ratio to the single writer, and the appends per commit (how much the writer
//!   thread grouped).
//! - appends through guests: the same three cases end to end on a default host: N virtual
//!   actors `ledger/K` (guest `ledger`, an event-sourced actor whose `Record` appends one event
//!   with `Journal::execute` and replies with the sequence number once the append is
//!   acknowledged), each sent one `Record` at a time by a client task of its own. In the same
//!   rounds as the store-level cases, so the ratio guest/store is the cost of the actor path
//!   (request, guest turn, host function, reply) on top of the commit.
//! - replay: one log of 100,000 events read from the start in 256 KiB chunks (`Store::read`,
//!   what `Journal::recover` asks for chunk by chunk), with checksums verified, against the same
//!   rows read with a bare `SELECT` on a plain connection and no verification: events per second
//!   and the ratio.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bunraku_abi::{NewEvent, Until};
use bunraku_runtime::store::{Store, StoreOptions};
use bunraku_runtime::{Host, HostConfig};
use serde_json::json;

const CASES: [usize; 3] = [1, 10, 1000];
const ROUNDS: usize = 3;
const REPLAY_EVENTS: u64 = 100_000;
const CHUNK: usize = 256 << 10;

fn event() -> Vec<NewEvent> {
    vec![NewEvent {
        version: 1,
        payload: vec![7; 100],
    }]
}

/// One round of `writers` appending for `secs`: (acknowledged appends, commits).
async fn round(store: &Arc<Store>, writers: usize, tag: usize, secs: Duration) -> (u64, u64) {
    let acked = Arc::new(AtomicU64::new(0));
    let commits_before = store.stats().commits;
    let stop = Instant::now() + secs;
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            let acked = acked.clone();
            tokio::spawn(async move {
                let actor: Arc<str> = format!("bench-{tag}/{w}").into();
                let mut seq = store.last_seq(&actor).expect("last seq");
                while Instant::now() < stop {
                    seq = store
                        .append(actor.clone(), seq, event(), 0)
                        .await
                        .expect("append");
                    acked.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("writer");
    }
    (
        acked.load(Ordering::Relaxed),
        store.stats().commits - commits_before,
    )
}

/// One round through the ledger guest: `actors` virtual actors, one client task each, appending
/// for `secs`; acknowledged appends.
async fn guest_round(host: &Arc<Host>, actors: usize, tag: usize, secs: Duration) -> u64 {
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + secs;
    let tasks: Vec<_> = (0..actors)
        .map(|a| {
            let host = host.clone();
            let acked = acked.clone();
            tokio::spawn(async move {
                let actor = format!("ledger/r{tag}-{a}");
                while Instant::now() < stop {
                    let reply = host
                        .call_json(&actor, Some("Record"), json!({ "entry": "x".repeat(90) }))
                        .await
                        .expect("record");
                    assert!(reply.get("Ok").is_some(), "{reply}");
                    acked.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("client");
    }
    acked.load(Ordering::Relaxed)
}

fn ledger_host(dir: &std::path::Path) -> Arc<Host> {
    let config = HostConfig {
        guest_threads: bunraku_bench::guest_threads(),
        data_dir: Some(dir.to_path_buf()),
        ..HostConfig::default()
    };
    let host = Host::new(config).expect("host starts");
    let wasm = bunraku_bench::guest("ledger");
    let mut ledger = bunraku_bench::spec("ledger", &wasm);
    ledger.virtual_idle = Some(Duration::from_secs(600));
    bunraku_bench::deploy(&host, &ledger);
    Arc::new(host)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn appends(secs: Duration) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(Store::open(dir.path(), StoreOptions::default()).expect("store"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let guest_dir = tempfile::tempdir().expect("temp dir");
    let host = ledger_host(guest_dir.path());
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); CASES.len()];
    let mut per_commit: Vec<Vec<f64>> = vec![Vec::new(); CASES.len()];
    let mut guest_rates: Vec<Vec<f64>> = vec![Vec::new(); CASES.len()];
    for r in 0..ROUNDS {
        for (i, &writers) in CASES.iter().enumerate() {
            let (acked, commits) = rt.block_on(round(&store, writers, r * 10 + i, secs));
            rates[i].push(acked as f64 / secs.as_secs_f64());
            per_commit[i].push(acked as f64 / commits.max(1) as f64);
            let acked = rt.block_on(guest_round(&host, writers, r * 10 + i, secs));
            guest_rates[i].push(acked as f64 / secs.as_secs_f64());
        }
    }
    let base = median(rates[0].clone());
    let guest_base = median(guest_rates[0].clone());
    println!("appends (acknowledged after commit, synchronous=FULL), {ROUNDS} rounds of {secs:?}:");
    println!(
        "  writers | store: appends/s (median, min..max)  vs 1  per commit | guests: appends/s (median, min..max)  vs 1  guest/store"
    );
    let range = |v: &[f64]| {
        let min = v.iter().copied().fold(f64::MAX, f64::min);
        let max = v.iter().copied().fold(0.0, f64::max);
        format!("({min:.0}..{max:.0})")
    };
    for (i, &writers) in CASES.iter().enumerate() {
        let m = median(rates[i].clone());
        let g = median(guest_rates[i].clone());
        println!(
            "  {writers:>7} | {m:>10.0} {:>18} {:>5.1}x {:>10.1} | {g:>10.0} {:>18} {:>5.1}x {:>10.2}",
            range(&rates[i]),
            m / base,
            median(per_commit[i].clone()),
            range(&guest_rates[i]),
            g / guest_base,
            g / m,
        );
    }
}

fn replay() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path(), StoreOptions::default()).expect("store");
    let actor: Arc<str> = "replay/one".into();
    // Written in appends of 1,000 events, so the setup takes a hundred commits.
    let mut seq = 0;
    while seq < REPLAY_EVENTS {
        let events = (0..1000).flat_map(|_| event()).collect();
        seq = futures::executor::block_on(store.append(actor.clone(), seq, events, 0))
            .expect("append");
    }
    let path = store.path().to_owned();
    let mut verified = Vec::new();
    let mut bare = Vec::new();
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let mut from = 0;
        let mut n = 0u64;
        loop {
            let batch = store
                .read(&actor, from, Until::Latest, false, CHUNK)
                .expect("read");
            n += batch.events.len() as u64;
            if let Some(last) = batch.events.last() {
                from = last.seq;
            }
            if batch.complete {
                break;
            }
        }
        assert_eq!(n, REPLAY_EVENTS);
        verified.push(n as f64 / start.elapsed().as_secs_f64());

        let start = Instant::now();
        let conn = rusqlite::Connection::open(&path).expect("open");
        let mut stmt = conn
            .prepare("SELECT seq, payload FROM events WHERE actor = ?1 ORDER BY seq")
            .expect("prepare");
        let mut rows = stmt.query([&*actor]).expect("query");
        let mut n = 0u64;
        while let Some(row) = rows.next().expect("row") {
            let payload: Vec<u8> = row.get(1).expect("payload");
            n += u64::from(!payload.is_empty());
        }
        assert_eq!(n, REPLAY_EVENTS);
        bare.push(n as f64 / start.elapsed().as_secs_f64());
    }
    let (v, b) = (median(verified), median(bare));
    println!("replay of {REPLAY_EVENTS} events of 100 bytes, {ROUNDS} rounds:");
    println!(
        "  Store::read in {} KiB chunks, checksums verified: {v:>10.0} events/s",
        CHUNK >> 10
    );
    println!("  bare SELECT, no verification:               {b:>10.0} events/s");
    println!("  ratio: {:.2}", v / b);
}

fn main() {
    let secs = std::env::var("BUNRAKU_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(1), Duration::from_secs_f64);
    appends(secs);
    replay();
}
