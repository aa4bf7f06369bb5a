//! Where one ping-pong message's time goes: micro-benchmarks of each stage, in the same run as a
//! short ping-pong measurement, so the stages can be held against the whole.
//!
//! `cargo bench -p bunraku-bench --bench breakdown` (`BUNRAKU_BENCH_LONG=1` for a longer run).
//!
//! One message from `b` to `a` goes: guest `b` encodes an `Outbound` and calls `send`; the host
//! decodes it, resolves the target, builds the `Envelope` and `try_send`s it into `a`'s mailbox,
//! which wakes `a`'s task; that task enters the guest (`bunraku_run`), whose `next` call takes the
//! delivery, encodes the `Event` and copies it into guest memory; the SDK decodes it (as a
//! borrowed view), dispatches it by type name to the handler, and the handler sends the reply the
//! same way; `next` returns 0 and the entry ends. The stages measured:
//!
//! - host path (native, emulated with the runtime's own types and steps): target lookup, type
//!   check, envelope building, mailbox `try_send` + `try_recv`, `accept`, `Event` encoding;
//! - guest work (bare wasmtime, see [`bunraku_bench::bare`]): a `next` that copies a pre-encoded
//!   event, the SDK's decode and dispatch, the handler, `Outbound` encoding, a `send` that decodes
//!   it; at 256 messages per entry, so the entry itself is amortised;
//! - an empty guest entry: `bunraku_run` when `next` has nothing;
//! - the guest work of `Ping` on three more engines: wasmtime's default memory (guard pages, no
//!   explicit bounds checks), and wasmtime's own memory with explicit bounds checks as in the
//!   slots, with and without Cranelift's Spectre guard on heap accesses.
//!
//! One part is not on ping-pong's path but on an activation's and on any actor's that waited
//! while others ran: the same `Noop` entry on the next of 1,000 started instances in turn
//! (`BUNRAKU_BENCH_COLD=n` for another count), whose memory is then out of the caches.
//!
//! What is left of the measured ping-pong per-message time is waking and scheduling the
//! receiving task and the host's run loop around each entry.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bunraku_abi::view::{EventView, OutboundHead, OutboundView};
use bunraku_abi::{Codec, Envelope, Event, Outbound, ReplyBody, TraceContext};
use bunraku_bench::bare::{BareInstance, BareModule};
use bunraku_bench::pingpong::Rally;
use bunraku_bench::{Paired, median, rate};
use bunraku_runtime::mailbox;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

/// The guest's `Ping`/`Pong`/`Noop` payload: `{ n: u64 }`.
#[derive(Serialize)]
struct N {
    n: u64,
}

/// What the runtime queues (`mailbox::Delivery`, the envelope boxed).
#[derive(Debug)]
struct Delivery {
    env: Box<Envelope>,
    #[allow(dead_code)]
    reply: Option<oneshot::Sender<ReplyBody>>,
}

/// The ping `b` sends as it arrives at the host (`target`, `msg_type`, postcard payload).
fn outbound(to: &str, msg_type: &str) -> Outbound {
    Outbound {
        target: to.into(),
        msg_type: msg_type.into(),
        codec: Codec::Postcard,
        payload: postcard::to_allocvec(&N { n: 123_456 }).unwrap(),
        ..Outbound::default()
    }
}

/// The envelope the host builds from an owned `Outbound` (`Shared::envelope`).
fn envelope(out: Outbound, id: u64, sender: &str) -> Envelope {
    Envelope {
        id,
        msg_type: out.msg_type,
        codec: out.codec,
        reply: None,
        deadline_ms: None,
        chain: Vec::new(),
        trace: Some(TraceContext {
            trace_id: [7; 16],
            span_id: id.to_le_bytes(),
        }),
        sender: Some(sender.to_owned()),
        subject: None,
        idempotency_key: out.idempotency_key,
        attachments: Vec::new(),
        ext: out.ext,
        payload: out.payload,
        stream: None,
    }
}

/// The same from the view the host decodes (`Shared::envelope_of`): the target is not copied.
fn envelope_of(out: &OutboundView<'_>, id: u64, sender: &str) -> Envelope {
    Envelope {
        msg_type: out.msg_type.to_owned(),
        codec: out.codec,
        idempotency_key: out.idempotency_key.map(ToOwned::to_owned),
        ext: out.ext.to_vec(),
        payload: out.payload.to_vec(),
        ..envelope(Outbound::default(), id, sender)
    }
}

/// Median over `reps` runs of the time per iteration of `f`, in ns.
fn ns_per_op(reps: usize, iters: usize, mut f: impl FnMut(usize)) -> f64 {
    let mut runs = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        for i in 0..iters {
            f(i);
        }
        runs.push(start.elapsed().as_nanos() as f64 / iters as f64);
    }
    median(&runs)
}

/// Like [`ns_per_op`], with a fresh input per iteration made before the clock starts.
fn ns_per_op_with<T>(reps: usize, iters: usize, make: impl Fn() -> T, mut f: impl FnMut(T)) -> f64 {
    let mut runs = Vec::with_capacity(reps);
    for _ in 0..reps {
        let mut inputs: Vec<T> = (0..iters).map(|_| make()).collect();
        let start = Instant::now();
        for x in inputs.drain(..) {
            f(x);
        }
        runs.push(start.elapsed().as_nanos() as f64 / iters as f64);
    }
    median(&runs)
}

struct Row {
    stage: &'static str,
    source: &'static str,
    ns: f64,
}

fn main() {
    bunraku_bench::init_logging();
    let long = bunraku_bench::long();
    let reps = if long { 21 } else { 9 };
    let iters = if long { 200_000 } else { 50_000 };

    // --- host path, native ------------------------------------------------------------------
    let sample_env = envelope(outbound("a", "bench.ping"), 42, "b");
    let sample_event = Event::Message(sample_env.clone());
    let event_bytes = bunraku_abi::view::encode_event(&sample_event);
    let outbound_bytes = bunraku_abi::encode(&outbound("a", "bench.pong"));

    let mut scratch = Vec::new();
    let encode_event = ns_per_op(reps, iters, |_| {
        // As `messaging.rs` `next` does: into the instance's reused buffer, without serde.
        scratch.clear();
        bunraku_abi::view::encode_event_into(black_box(&sample_event), &mut scratch);
    });
    let decode_event = ns_per_op(reps, iters, |_| {
        // As the SDK does: a borrowed view, no allocation.
        black_box(EventView::decode(black_box(&event_bytes)).unwrap());
    });
    let mut out_buf = Vec::new();
    let encode_outbound = ns_per_op(reps, iters, |_| {
        // As the SDK does: the head, then the payload in place, into a reused buffer.
        out_buf.clear();
        let head = OutboundHead {
            target: black_box("a"),
            msg_type: "bench.pong",
            codec: Codec::Postcard,
            timeout_ms: None,
            idempotency_key: None,
            ext: &[],
            to_ref: None,
            attachments: &[],
        };
        let written: Result<(), postcard::Error> = head.encode_with(&mut out_buf, |b| {
            let mut payload = [0u8; 16];
            b.extend_from_slice(postcard::to_slice(&N { n: 123_456 }, &mut payload)?);
            Ok(())
        });
        written.unwrap();
        black_box(&out_buf);
    });
    let decode_outbound = ns_per_op(reps, iters, |_| {
        black_box(bunraku_abi::decode::<Outbound>(black_box(&outbound_bytes)).unwrap());
    });
    let view_outbound = ns_per_op(reps, iters, |_| {
        // As the host does: a view borrowing the guest's memory.
        black_box(OutboundView::decode(black_box(&outbound_bytes)).unwrap());
    });

    let delivery = || Delivery {
        env: Box::new(sample_env.clone()),
        reply: None,
    };
    let (tx, mut rx) = mailbox::channel::<Delivery>(1024);
    let mailbox = ns_per_op_with(reps, iters, delivery, |d| {
        tx.try_send(d).expect("room");
        black_box(rx.try_recv().unwrap());
    });
    // The tokio channel the mailboxes were before.
    let (tokio_tx, mut tokio_rx) = mpsc::channel::<Delivery>(1024);
    let tokio_mailbox = ns_per_op_with(reps, iters, delivery, |d| {
        tokio_tx.try_send(d).expect("room");
        black_box(tokio_rx.try_recv().unwrap());
    });

    // The whole native host path from a decoded outbound to encoded event bytes.
    struct Group {
        name: Arc<str>,
        kinds: HashMap<String, u8>,
        tx: mailbox::Sender<Delivery>,
    }
    let kinds: HashMap<String, u8> = [
        "bench.go",
        "bench.ping",
        "bench.pong",
        "bench.noop",
        "bench.noops",
    ]
    .iter()
    .map(|k| (k.to_string(), 0))
    .collect();
    let mut resolved: HashMap<String, Arc<Group>> = HashMap::new();
    for name in ["a", "b"] {
        resolved.insert(
            name.into(),
            Arc::new(Group {
                name: name.into(),
                kinds: kinds.clone(),
                tx: tx.clone(),
            }),
        );
    }
    let me = resolved["b"].clone();
    let next_id = AtomicU64::new(0);
    let handled = AtomicU64::new(0);
    let (mut cur_chain, mut cur_type) = (Vec::<u64>::new(), String::new());
    // Decoded before the clock starts: the guest stage's `send` already decodes it.
    let decoded = OutboundView::decode(&outbound_bytes).unwrap();
    let host_path = ns_per_op(reps, iters, |_| {
        // As `send` does after the decode: owned copies only into the envelope.
        let out = black_box(decoded);
        let group = resolved.get(out.target).unwrap().clone();
        assert!(group.kinds.contains_key(out.msg_type));
        assert!(out.payload.len() <= 1 << 20);
        let id = next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let env = envelope_of(&out, id, &me.name);
        group
            .tx
            .try_send(Delivery {
                env: Box::new(env),
                reply: None,
            })
            .expect("room");
        let d = rx.try_recv().unwrap();
        cur_chain.clone_from(&d.env.chain);
        cur_type.clone_from(&d.env.msg_type);
        handled.fetch_add(1, Ordering::Relaxed);
        let event = Event::Message(*d.env);
        scratch.clear();
        bunraku_abi::view::encode_event_into(&event, &mut scratch);
    });

    // --- guest, bare wasmtime -----------------------------------------------------------------
    let wasm = std::fs::read(bunraku_bench::guest("bench-pingpong")).expect("module");
    let engine = bunraku_runtime::engine::Engine::new(Default::default()).expect("engine");
    let module = BareModule::load(engine.wasmtime(), &wasm, engine.store_limits(16 << 20));
    let start = || Event::Start {
        name: "b".into(),
        instance: 0,
        config: b"null".to_vec(),
    };
    let script = |msg_type: &str| {
        let mut env = envelope(outbound("b", msg_type), 1, "a");
        env.msg_type = msg_type.into();
        Arc::new(vec![bunraku_abi::view::encode_event(&Event::Message(env))])
    };
    // The guest's `Ping`, started, on an engine of `config` with epochs on and wasmtime's own
    // memory.
    let ping_on = |mut config: wasmtime::Config| {
        config.epoch_interruption(true).table_lazy_init(false);
        let engine = wasmtime::Engine::new(&config).expect("engine");
        let module = BareModule::load(
            &engine,
            &wasm,
            wasmtime::StoreLimitsBuilder::new()
                .memory_size(16 << 20)
                .build(),
        );
        let mut ping = module.instantiate(start(), script("bench.ping"));
        ping.run(0);
        ping
    };
    // The same guest on wasmtime's default memory settings (a 4 GiB reservation with guard pages,
    // so no explicit bounds checks): what the slot allocator's settings cost.
    let mut plain_ping = ping_on(wasmtime::Config::new());
    // The same guest on wasmtime's own memory with explicit bounds checks against the current
    // size, as in the host's slots (no reservation, no guard pages; unlike a slot, the memory may
    // move when it grows, as wasmtime's own memory has no room to grow in place), with and
    // without Cranelift's Spectre guard on heap accesses (a conditional move per checked access
    // that keeps a mispredicted check from reading out of bounds). What the checks cost, and how
    // much of it is the guard; the host keeps the guard, since its guests are untrusted.
    let checked = |spectre_guard: bool| {
        let mut config = wasmtime::Config::new();
        config
            .memory_reservation(0)
            .memory_guard_size(0)
            .guard_before_linear_memory(false)
            .memory_reservation_for_growth(0);
        if !spectre_guard {
            // SAFETY: a Cranelift setting that wasmtime accepts; it weakens the sandbox against
            // speculative reads, which is acceptable for a benchmark of trusted code.
            unsafe {
                config.cranelift_flag_set("enable_heap_access_spectre_mitigation", "false");
            }
        }
        ping_on(config)
    };
    let (mut checked_ping, mut unguarded_ping) = (checked(true), checked(false));
    // Another build of the same guest (say, against the previous SDK), measured in the same
    // round-robin: `BUNRAKU_BENCH_BASELINE_WASM=path/to/bench_pingpong.wasm`.
    let mut baseline = std::env::var_os("BUNRAKU_BENCH_BASELINE_WASM").map(|path| {
        let wasm = std::fs::read(&path).expect("baseline module");
        let module = BareModule::load(engine.wasmtime(), &wasm, engine.store_limits(16 << 20));
        let mut ping = module.instantiate(start(), script("bench.ping"));
        let mut noop = module.instantiate(start(), script("bench.noop"));
        ping.run(0);
        noop.run(0);
        (ping, noop)
    });
    let mut ping = module.instantiate(start(), script("bench.ping"));
    let mut noop = module.instantiate(start(), script("bench.noop"));
    ping.run(0);
    noop.run(0);
    // The same `Noop` entry, each time on the next of many started instances, so that the
    // entry finds its instance's memory and host structures out of the caches and the TLB (as
    // for an activation's first entry, or an actor that was idle while others ran).
    let mut cold: Vec<_> = (0..bunraku_bench::env_usize("BUNRAKU_BENCH_COLD", 1000).max(1))
        .map(|_| {
            let mut noop = module.instantiate(start(), script("bench.noop"));
            noop.run(1);
            noop
        })
        .collect();
    let mut next_cold = 0;
    let batch = 256;
    if let Ok(secs) = std::env::var("BUNRAKU_BENCH_GUEST_ONLY") {
        // A profiling aid: only the guest's `Ping` path, for `perf record` (with
        // `BUNRAKU_BENCH_PERFMAP=1` so that perf names the guest's functions).
        let until = Instant::now() + Duration::from_secs(secs.parse().unwrap_or(5));
        while Instant::now() < until {
            ping.run(batch);
        }
        return;
    }
    // Round-robin over the variants, so that the machine's noise hits all of them alike.
    let entry_iters = iters;
    let (mut empty, mut p256, mut p1, mut n256, mut n1) = (vec![], vec![], vec![], vec![], vec![]);
    let mut n1_cold = vec![];
    let mut plain256 = vec![];
    let (mut checked256, mut unguarded256) = (vec![], vec![]);
    let (mut base_p256, mut base_n256) = (vec![], vec![]);
    let per = |iters: usize, f: &mut dyn FnMut()| {
        let start = Instant::now();
        for _ in 0..iters {
            f();
        }
        start.elapsed().as_nanos() as f64 / iters as f64
    };
    let big = entry_iters / batch * 4;
    for _ in 0..reps {
        empty.push(per(entry_iters, &mut || {
            black_box(ping.run(0));
        }));
        p256.push(
            per(big, &mut || {
                ping.run(batch);
            }) / batch as f64,
        );
        p1.push(per(entry_iters, &mut || {
            ping.run(1);
        }));
        n256.push(
            per(big, &mut || {
                noop.run(batch);
            }) / batch as f64,
        );
        n1.push(per(entry_iters, &mut || {
            noop.run(1);
        }));
        n1_cold.push(per(entry_iters, &mut || {
            cold[next_cold].run(1);
            next_cold = (next_cold + 1) % cold.len();
        }));
        // ns per message of `batch` messages per entry.
        let batched = |i: &mut BareInstance| {
            per(big, &mut || {
                i.run(batch);
            }) / batch as f64
        };
        plain256.push(batched(&mut plain_ping));
        checked256.push(batched(&mut checked_ping));
        unguarded256.push(batched(&mut unguarded_ping));
        if let Some((ping, noop)) = &mut baseline {
            base_p256.push(batched(ping));
            base_n256.push(batched(noop));
        }
    }
    let plain_256 = median(&plain256);
    let (empty_entry, ping_256, ping_1, noop_256, noop_1) = (
        median(&empty),
        median(&p256),
        median(&p1),
        median(&n256),
        median(&n1),
    );
    assert!(ping.store.data().sent > 0, "the ping handler sends");

    // --- the whole, in the same run ------------------------------------------------------------
    let rally = Rally::new();
    let rounds = rally.calibrate(Duration::from_millis(100));
    let mut samples = Paired::default();
    for _ in 0..if long { 15 } else { 7 } {
        let w = rate(2 * rounds, rally.wasm(rounds));
        let t = rate(2 * rounds, rally.tokio(rounds));
        samples.push(w, t);
    }
    let per_msg = 1e9 / median(&samples.wasm);
    let tokio_per_msg = 1e9 / median(&samples.tokio);

    let rows = [
        Row {
            stage: "host: resolve, check, build envelope, mailbox, accept, encode `Event`",
            source: "native emulation of imports/messaging.rs `send`/`prepare`, host.rs `envelope`, actor.rs `next_event`/`accept`, messaging.rs `next`",
            ns: host_path,
        },
        Row {
            stage: "guest: `next` copy, decode, SDK dispatch, handler, encode `Outbound`, `send` + host decode",
            source: "bare wasmtime, `Ping` handler at 256 messages per entry",
            ns: ping_256,
        },
        Row {
            stage: "guest entry: `bunraku_run` with nothing to do",
            source: "bare wasmtime",
            ns: empty_entry,
        },
    ];
    let sum: f64 = rows.iter().map(|r| r.ns).sum();

    println!("## per-stage breakdown ({})", bunraku_bench::machine_line());
    println!(
        "medians of {reps} runs; ping-pong: {} pairs of {rounds} round trips\n",
        samples.wasm.len()
    );
    println!("| stage | measured by | ns per message |\n|---|---|---|");
    for r in &rows {
        println!("| {} | {} | {:.0} |", r.stage, r.source, r.ns);
    }
    println!("| **sum of the stages** | | **{sum:.0}** |");
    println!("| ping-pong, per message | whole host, this run | {per_msg:.0} |");
    println!(
        "| remainder: waking and scheduling the receiver, the run loop around each entry | ping-pong − sum | {:.0} |",
        per_msg - sum
    );
    println!("| plain tokio ping-pong, per message | this run | {tokio_per_msg:.0} |");
    println!("\nparts (included above):\n");
    println!("| part | ns |\n|---|---|");
    println!(
        "| encode `Event::Message` ({} bytes, `view::encode_event_into`) | {encode_event:.0} |",
        event_bytes.len()
    );
    println!(
        "| decode `Event::Message` as an `EventView` (native; the guest does this in wasm) | {decode_event:.0} |"
    );
    println!(
        "| encode `Outbound` ({} bytes, `OutboundHead` into a reused buffer, native; the guest does this in wasm) | {encode_outbound:.0} |",
        outbound_bytes.len()
    );
    println!(
        "| decode `Outbound` as an `OutboundView` (the host, since it stopped using postcard for it) | {view_outbound:.0} |"
    );
    println!("| postcard decode `Outbound` (the host before) | {decode_outbound:.0} |");
    println!("| mailbox `try_send` + `try_recv` of a `Delivery` | {mailbox:.0} |");
    println!(
        "| the same through a tokio `mpsc` channel (the mailbox before) | {tokio_mailbox:.0} |"
    );
    println!("| guest `Noop` (decode + dispatch, no send) at 256 per entry | {noop_256:.0} |");
    println!("| guest `Noop` at 1 per entry | {noop_1:.0} |");
    println!(
        "| guest `Noop` at 1 per entry, each entry on the next of {} instances in turn (out of the caches) | {:.0} |",
        cold.len(),
        median(&n1_cold)
    );
    println!("| guest `Ping` (sends a `Pong`) at 1 per entry | {ping_1:.0} |");
    println!(
        "| entry cost from batch 1 vs 256 (`Noop`) | {:.0} |",
        noop_1 - noop_256
    );
    println!(
        "| guest `Ping` at 256 per entry on wasmtime's default memory (guard pages, no explicit bounds checks) | {plain_256:.0} |"
    );
    println!(
        "| guest `Ping` at 256 per entry on wasmtime's own memory with explicit bounds checks, as in the slots | {:.0} |",
        median(&checked256)
    );
    println!(
        "| the same without Cranelift's Spectre guard on heap accesses (not an option for the host) | {:.0} |",
        median(&unguarded256)
    );
    // `old / new` round by round: median (min–max).
    let ratios = |new: &[f64], old: &[f64]| {
        let r: Vec<f64> = new.iter().zip(old).map(|(n, o)| o / n).collect();
        let (lo, hi) = r
            .iter()
            .fold((f64::MAX, 0f64), |(l, h), x| (l.min(*x), h.max(*x)));
        format!("{:.2} ({lo:.2}–{hi:.2})", median(&r))
    };
    println!(
        "| ratio of the entry out of the caches to the warm one, per round (median, min–max) | {} |",
        ratios(&n1, &n1_cold)
    );
    if baseline.is_some() {
        println!(
            "| baseline module (`BUNRAKU_BENCH_BASELINE_WASM`): `Ping` at 256 per entry | {:.0} |",
            median(&base_p256)
        );
        println!(
            "| baseline module: `Noop` at 256 per entry | {:.0} |",
            median(&base_n256)
        );
        println!(
            "| speed-up over the baseline module, per round (median, min–max): `Ping` | {} |",
            ratios(&p256, &base_p256)
        );
        println!(
            "| speed-up over the baseline module: `Noop` | {} |",
            ratios(&n256, &base_n256)
        );
    }
    println!(
        "\nping-pong ratio in this run:\n\n{}\n{}",
        Paired::header(),
        samples.row("ping-pong", "msgs/s")
    );
    rally.host.shutdown(Duration::from_secs(2));
}
