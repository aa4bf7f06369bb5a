//! Ping-pong written against the ABI alone, without the SDK: the host's floor for
//! `bench/benches/pingpong.rs`, next to `bench-pingpong` and plain tokio in the same run.
//!
//! It speaks `bench-pingpong`'s protocol: a request `bench.go` (`{"peer", "rounds"}`, JSON from the
//! client) starts a rally with `peer`; `bench.ping` `n` is answered with `bench.pong` `n` to its
//! sender; `bench.pong` `n` is answered with `bench.ping` `n + 1` until `n` reaches the rounds, and
//! then `bench.go` is answered with `n`. Pings and pongs carry `n` as a postcard `u64`.
//!
//! It does as little as an actor can per message: one `bunraku_run` loop over `next`, each event
//! decoded as a view of the event buffer ([`EventView`]), the answer encoded into one reused
//! buffer ([`OutboundHead`]) and sent with `send`. No executor, no task per handler, no `Ctx`, no
//! allocation per message. What a message still costs is the host's share, wasm's (calls, bounds
//! checks, epoch checks) and the ABI's encoding, which every guest pays.
//!
//! Written for the benchmark, not as an example: a host function's error or a message it cannot
//! read traps (the bench and its test then fail with the message), where the SDK would answer;
//! and a `bench.go` that arrives during a rally takes over its reply, leaving the first one
//! unanswered until its timeout.

use std::cell::RefCell;
use std::sync::OnceLock;

use bunraku_abi::view::{EventView, OutboundHead, encode_reply_ok_with};
use bunraku_abi::{ABI_VERSION, Codec, Descriptor, HandlerKind, MessageInfo, mode};

/// The host functions, declared from the ABI's table (this guest calls `next`, `send` and
/// `reply`).
mod imports {
    bunraku_abi::declare_host_imports!();
}

const GO: &str = "bench.go";
const PING: &str = "bench.ping";
const PONG: &str = "bench.pong";

/// `bench.go`'s payload.
#[derive(serde::Deserialize)]
struct Go {
    peer: String,
    rounds: u64,
}

/// What lives between entries.
struct Rally {
    /// Where `next` writes events.
    event: Vec<u8>,
    /// Where outbound messages are encoded.
    out: Vec<u8>,
    /// The rounds of the rally under way.
    rounds: u64,
    /// The reply handle of the `bench.go` that waits for the rally's end.
    go: Option<u32>,
}

thread_local! {
    static RALLY: RefCell<Rally> = const {
        RefCell::new(Rally { event: Vec::new(), out: Vec::new(), rounds: 0, go: None })
    };
}

/// The WASI reactor's initialiser, as the SDK exports it: with it, wasm-ld does not wrap every
/// export in the static constructors and destructors. (A wasm export only: natively, the unit
/// tests' build, there is nothing of the kind to run.)
#[cfg(target_arch = "wasm32")]
#[unsafe(no_mangle)]
pub extern "C" fn _initialize() {
    bunraku_abi::run_static_constructors();
}

#[unsafe(no_mangle)]
pub extern "C" fn bunraku_abi_version() -> i32 {
    ABI_VERSION as i32
}

#[unsafe(no_mangle)]
pub extern "C" fn bunraku_describe() -> i64 {
    let messages = [
        (GO, HandlerKind::Request),
        (PING, HandlerKind::Message),
        (PONG, HandlerKind::Message),
    ]
    .map(|(name, kind)| MessageInfo {
        name: name.into(),
        kind,
    })
    .into();
    let descriptor = Descriptor {
        abi_version: ABI_VERSION,
        actor: "RawPingPong".into(),
        messages,
    };
    // Made once per instance: the bytes stay for the host to read.
    static BYTES: OnceLock<&'static [u8]> = OnceLock::new();
    let bytes = BYTES.get_or_init(|| Vec::leak(bunraku_abi::encode(&descriptor)));
    bunraku_abi::pack_ptr_len(addr(bytes), bytes.len() as u32)
}

/// Handles every event there is; returns 1 while a `bench.go` waits for its rally (a handler in
/// flight, as the SDK counts it), else 0.
#[unsafe(no_mangle)]
pub extern "C" fn bunraku_run() -> i32 {
    RALLY.with_borrow_mut(|rally| {
        // The host flags the last event ready: no need to ask again after it.
        let mut last = false;
        while !last && let Some((len, only)) = next_event(rally) {
            last = only;
            let Rally {
                event,
                out,
                rounds,
                go,
            } = rally;
            match EventView::decode(&event[..len]).expect("the host's event decodes") {
                EventView::Message(env) => {
                    let sender = env.sender.unwrap_or_default();
                    match env.msg_type {
                        PING => send(out, sender, PONG, read_n(env.payload)),
                        PONG => {
                            let n = read_n(env.payload);
                            if n < *rounds {
                                send(out, sender, PING, n + 1);
                            } else if let Some(handle) = go.take() {
                                reply(out, handle, n);
                            }
                        }
                        GO => {
                            let msg: Go =
                                serde_json::from_slice(env.payload).expect("`bench.go` is JSON");
                            let handle = env.reply.expect("`bench.go` is a request");
                            if msg.rounds == 0 {
                                reply(out, handle, 0);
                            } else {
                                *rounds = msg.rounds;
                                *go = Some(handle);
                                send(out, &msg.peer, PING, 1);
                            }
                        }
                        other => panic!("no handler for {other}"),
                    }
                }
                // No state to set up or put away, and no operation waits for a completion.
                EventView::Start { .. } | EventView::Stop | EventView::Completion { .. } => {}
            }
        }
        i32::from(rally.go.is_some())
    })
}

/// Pulls the next event into the event buffer (grown when the host says it is too small); its
/// length and whether it was the last one ready, or `None` when there is none.
fn next_event(rally: &mut Rally) -> Option<(usize, bool)> {
    let in_flight = u32::from(rally.go.is_some());
    if rally.event.is_empty() {
        rally.event.resize(256, 0);
    }
    loop {
        let buf = &mut rally.event;
        // SAFETY: the host writes at most `buf.len()` bytes into `buf`, borrowed for the call.
        let raw = unsafe { imports::next(addr(buf), buf.len() as u32, in_flight) };
        let (len, last) =
            bunraku_abi::split_next(bunraku_abi::decode_result(raw).expect("`next` succeeds"));
        let len = usize::try_from(len).ok()?;
        if len == 0 {
            return None;
        }
        if len <= buf.len() {
            return Some((len, last));
        }
        buf.resize(len, 0);
    }
}

/// `n` from a ping's or a pong's payload.
fn read_n(payload: &[u8]) -> u64 {
    postcard::from_bytes(payload).expect("`n` is a postcard u64")
}

/// Sends `msg_type` with `n` to `target`, failing rather than waiting when its mailbox is full
/// (a rally has one message in flight).
fn send(out: &mut Vec<u8>, target: &str, msg_type: &str, n: u64) {
    out.clear();
    let head = OutboundHead {
        target,
        msg_type,
        ..OutboundHead::default()
    };
    head.encode_with(out, |b| {
        let mut varint = [0u8; 10];
        b.extend_from_slice(postcard::to_slice(&n, &mut varint)?);
        Ok::<(), postcard::Error>(())
    })
    .expect("a u64 encodes");
    // SAFETY: the host only reads `out`, borrowed for the call.
    let raw = unsafe { imports::send(addr(out), out.len() as u32, mode::TRY) };
    if let Err(code) = bunraku_abi::decode_result(raw) {
        panic!("{msg_type} to {target} failed: {code:?}");
    }
}

/// Answers `bench.go` through reply handle `handle` with `n`, as JSON.
fn reply(out: &mut Vec<u8>, handle: u32, n: u64) {
    out.clear();
    encode_reply_ok_with(out, Codec::Json, |b| serde_json::to_writer(b, &n))
        .expect("a u64 encodes");
    // SAFETY: the host only reads `out`, borrowed for the call.
    let raw = unsafe { imports::reply(handle, addr(out), out.len() as u32) };
    if let Err(code) = bunraku_abi::decode_result(raw) {
        panic!("the reply to `bench.go` failed: {code:?}");
    }
}

/// A guest address as the host sees it (wasm32 addresses are 32 bits wide).
fn addr(bytes: &[u8]) -> u32 {
    bytes.as_ptr().addr() as u32
}
