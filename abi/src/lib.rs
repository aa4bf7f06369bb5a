//! The one contract between the bunraku host and its guests.
//!
//! Everything that crosses the wasm boundary is defined here and nowhere else:
//!
//! - the import module name ([`IMPORT_MODULE`]) and the names of the guest's exports ([`exports`]);
//! - the ABI version ([`ABI_VERSION`]) that a guest exports and the host checks before anything else;
//! - the status codes host functions return ([`ErrorCode`], [`encode_error`], [`decode_result`]);
//! - the wire types, encoded with postcard: what the host hands the guest ([`Event`],
//!   [`Envelope`], [`Completion`]; a message comes in a fixed-layout frame,
//!   [`view::MESSAGE_HEADER`]) and what the guest hands the host ([`Outbound`], [`ReplyBody`],
//!   [`Subscribe`], [`Descriptor`]);
//! - the single table of host functions ([`for_each_host_fn!`], [`HOST_FUNCTIONS`]) from which
//!   guests derive their `extern` declarations ([`declare_host_imports!`]) and the runtime derives
//!   its linker registrations, each entry naming the [`Capability`] it needs.
//!
//! # Calling convention
//!
//! Guests are core wasm modules (`wasm32-wasip1`). Every host function takes and returns plain
//! integers: pointers and lengths into the guest's exported `memory` are `u32`, results are `i64`.
//! A negative result is `-(ErrorCode as i64)`; a non-negative result is the function's value
//! (a length, an operation id, a subscription id). The host never blocks inside a host function: an
//! operation that has to wait returns an operation id (`> 0`) and its outcome arrives later as an
//! [`Event::Completion`] through `next`.
//!
//! # Extensibility
//!
//! postcard is not self-describing, so fields are never added to a type in place. Every envelope
//! carries an `ext` list of [`Ext`] entries for new metadata, and new behaviour comes as new host
//! functions (an old guest simply does not import them). Changing the layout of an existing type is
//! an ABI break and bumps [`ABI_VERSION`]; the golden tests in `abi/tests/wire.rs` make such a change
//! a visible diff.
#![no_std]
#![deny(missing_docs)]

extern crate alloc;

pub mod view;

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// The wasm import module every bunraku host function lives in.
pub const IMPORT_MODULE: &str = "bunraku";

/// The version of this contract. A guest exports it from [`exports::ABI_VERSION`]; the host
/// refuses a module whose version differs. (5: `next` flags the last ready event,
/// [`NEXT_LAST`]; 6: `next` hands a message as a frame read at fixed offsets,
/// [`view::MESSAGE_HEADER`].)
pub const ABI_VERSION: u32 = 6;

/// Names of the functions and memory a guest module exports.
pub mod exports {
    /// `() -> i32`: the [`ABI_VERSION`](crate::ABI_VERSION) the guest was built against.
    pub const ABI_VERSION: &str = "bunraku_abi_version";
    /// `() -> i64`: a pointer (high 32 bits) and length (low 32 bits) of a postcard
    /// [`Descriptor`](crate::Descriptor) in guest memory.
    pub const DESCRIBE: &str = "bunraku_describe";
    /// `() -> i32`: runs the guest until it has nothing left to do. Inside, the guest pulls events
    /// with the `next` import. Returns the number of handlers still in flight (waiting for a
    /// completion).
    pub const RUN: &str = "bunraku_run";
    /// The guest's linear memory.
    pub const MEMORY: &str = "memory";
    /// WASI reactor initialiser, called once after instantiation when present. The SDK
    /// exports it (running the module's static constructors), which also keeps wasm-ld from
    /// wrapping every other export in the constructors and destructors, as it does for a
    /// module without one.
    pub const INITIALIZE: &str = "_initialize";
    /// Optional, `() -> i64`: the start (high 32 bits) and length (low 32 bits) of the guest's
    /// shadow stack in linear memory. By exporting it the guest promises that those bytes hold
    /// nothing between two entries (its stack is empty when `bunraku_run` returns), so the host
    /// may give their pages back while the actor is idle; they read as zero afterwards. The SDK
    /// exports it from the linker's `__stack_low` and `__stack_high`.
    pub const STACK: &str = "bunraku_stack";
    /// Every export the host requires, in the order it checks them.
    pub const REQUIRED: &[&str] = &[MEMORY, ABI_VERSION, DESCRIBE, RUN];
}

/// Typed failures a host function reports to the guest (as `-(code as i64)`), and that travel in
/// [`Completion::Failed`] and [`ReplyBody::Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u16)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The request's deadline passed before a reply arrived.
    Timeout = 1,
    /// No actor is registered under the name.
    NoSuchActor = 2,
    /// The target trapped (or was stopped) while handling the message.
    TargetFailed = 3,
    /// The target's mailbox is full (only for `try` sends and drop policies).
    MailboxFull = 4,
    /// The actor holds no grant for this action, or used a handle the host never issued.
    Denied = 5,
    /// The request would wait on an actor already waiting in the call chain.
    Deadlock = 6,
    /// Bytes that do not decode as the expected type.
    Malformed = 7,
    /// A message over the size limit.
    TooLarge = 8,
    /// The receiver has no handler for the message type name.
    UnknownType = 9,
    /// The actor (or the host) is shutting down.
    Stopped = 10,
    /// The receiving handler returned an application error.
    Application = 11,
    /// The actor has too many operations pending.
    TooManyPending = 12,
    /// An invalid argument such as a malformed subject.
    Invalid = 13,
    /// A host-side failure that is not the guest's fault.
    Internal = 14,
    /// Nothing is stored under the key (for instance an actor that never saved state).
    NotFound = 15,
    /// The durable store failed (disk full, I/O error): nothing was acknowledged.
    StorageUnavailable = 16,
    /// The name is already taken (for instance by `spawn`).
    AlreadyExists = 17,
    /// The stream ended: for a reader, the writer closed it and every item was read; for a
    /// writer, the reader stopped reading.
    Closed = 18,
    /// The writer aborted the stream.
    Aborted = 19,
    /// The other side's instance ended (trapped, stopped or deactivated) without closing.
    PeerFailed = 20,
    /// An append expected another sequence number: the log moved on since the actor read it.
    Conflict = 21,
    /// A stored row failed its checksum: it is never served, and nothing was deleted.
    Corrupt = 22,
}

impl ErrorCode {
    /// Every code, for exhaustive tests and lookups.
    pub const ALL: &[ErrorCode] = &[
        Self::Timeout,
        Self::NoSuchActor,
        Self::TargetFailed,
        Self::MailboxFull,
        Self::Denied,
        Self::Deadlock,
        Self::Malformed,
        Self::TooLarge,
        Self::UnknownType,
        Self::Stopped,
        Self::Application,
        Self::TooManyPending,
        Self::Invalid,
        Self::Internal,
        Self::NotFound,
        Self::StorageUnavailable,
        Self::AlreadyExists,
        Self::Closed,
        Self::Aborted,
        Self::PeerFailed,
        Self::Conflict,
        Self::Corrupt,
    ];

    /// The code for a raw number, if it is one.
    pub fn from_raw(raw: u16) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| *c as u16 == raw)
    }

    /// A short lowercase name, stable across versions (used in JSON and the CLI).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::NoSuchActor => "no such actor",
            Self::TargetFailed => "target failed",
            Self::MailboxFull => "mailbox full",
            Self::Denied => "denied",
            Self::Deadlock => "deadlock",
            Self::Malformed => "malformed",
            Self::TooLarge => "too large",
            Self::UnknownType => "unknown message type",
            Self::Stopped => "stopped",
            Self::Application => "application error",
            Self::TooManyPending => "too many pending operations",
            Self::Invalid => "invalid argument",
            Self::Internal => "internal error",
            Self::NotFound => "not found",
            Self::StorageUnavailable => "storage unavailable",
            Self::AlreadyExists => "already exists",
            Self::Closed => "closed",
            Self::Aborted => "aborted",
            Self::PeerFailed => "peer failed",
            Self::Conflict => "conflict",
            Self::Corrupt => "corrupt",
        }
    }
}

impl core::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Encodes an error as a host function result.
pub const fn encode_error(code: ErrorCode) -> i64 {
    -(code as i64)
}

/// The flag `next` adds to an event's length when nothing else was ready for the instance as it
/// handed the event out: the guest may return once it has handled the event instead of asking
/// `next` again, which would answer `0`. A hint, never a promise that nothing comes: what
/// arrives later, or what the guest's handling of the event makes ready (a message it sends
/// itself, say), makes the host enter the guest again. [`split_next`] takes it apart.
pub const NEXT_LAST: u64 = 1 << 32;

/// Splits what `next` returned (after [`decode_result`]) into the event's length (`0`: no event)
/// and whether it was the last one ready ([`NEXT_LAST`]).
///
/// ```
/// use bunraku_abi::{NEXT_LAST, split_next};
/// assert_eq!(split_next(40), (40, false));
/// assert_eq!(split_next(40 | NEXT_LAST), (40, true));
/// assert_eq!(split_next(0), (0, false));
/// ```
pub const fn split_next(value: u64) -> (u64, bool) {
    (value & (NEXT_LAST - 1), value & NEXT_LAST != 0)
}

/// Splits a host function result into its value or its error.
///
/// ```
/// use bunraku_abi::{decode_result, encode_error, ErrorCode};
/// assert_eq!(decode_result(7), Ok(7));
/// assert_eq!(decode_result(encode_error(ErrorCode::Denied)), Err(ErrorCode::Denied));
/// ```
pub fn decode_result(raw: i64) -> Result<u64, ErrorCode> {
    if raw >= 0 {
        Ok(raw as u64)
    } else {
        let code = u16::try_from(-raw).ok().and_then(ErrorCode::from_raw);
        Err(code.unwrap_or(ErrorCode::Internal))
    }
}

/// A guest address and length in one `i64`, as `bunraku_describe` and `bunraku_stack` return
/// them: the address in the high 32 bits, the length in the low 32 bits.
///
/// ```
/// use bunraku_abi::{pack_ptr_len, unpack_ptr_len};
/// assert_eq!(pack_ptr_len(0x10, 0x20), 0x0000_0010_0000_0020);
/// assert_eq!(unpack_ptr_len(pack_ptr_len(u32::MAX, 1)), (u32::MAX, 1));
/// ```
pub const fn pack_ptr_len(ptr: u32, len: u32) -> i64 {
    (((ptr as u64) << 32) | len as u64) as i64
}

/// The address and length [`pack_ptr_len`] put in one `i64`.
pub const fn unpack_ptr_len(packed: i64) -> (u32, u32) {
    ((packed as u64 >> 32) as u32, packed as u32)
}

/// How a payload is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[non_exhaustive]
pub enum Codec {
    /// postcard, the default between actors.
    #[default]
    Postcard,
    /// JSON, from the CLI and (later) HTTP. The guest SDK decodes it into the same typed message.
    Json,
}

/// `how` argument of `stream_end`.
pub mod stream_end {
    /// The writer is done: the reader gets the items written, then the end.
    pub const CLOSE: u32 = 0;
    /// The writer gives up: the reader gets the items written, then `aborted`.
    pub const ABORT: u32 = 1;
}

/// `mode` argument of `send` and `publish`.
pub mod mode {
    /// Fail with [`ErrorCode::MailboxFull`](crate::ErrorCode::MailboxFull) instead of waiting.
    pub const TRY: u32 = 0;
    /// Wait for room: the call returns an operation id and completes later.
    pub const WAIT: u32 = 1;
}

/// Log levels for the `log` host function.
pub mod level {
    /// Errors.
    pub const ERROR: u32 = 1;
    /// Warnings.
    pub const WARN: u32 = 2;
    /// Information.
    pub const INFO: u32 = 3;
    /// Debugging detail.
    pub const DEBUG: u32 = 4;
    /// Tracing detail.
    pub const TRACE: u32 = 5;
}

/// A W3C-style trace context carried with every message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TraceContext {
    /// The trace this message belongs to.
    pub trace_id: [u8; 16],
    /// The span that sent it.
    pub span_id: [u8; 8],
}

/// An extension entry: room for metadata added after this version without an ABI break.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ext {
    /// A namespaced key such as `bunraku.priority`.
    pub key: String,
    /// The value, encoded as the key's owner documents.
    pub value: Vec<u8>,
}

/// A message as the receiving guest sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Envelope {
    /// Unique (per host) message id.
    pub id: u64,
    /// The stable wire name of the message type.
    pub msg_type: String,
    /// How `payload` is encoded.
    pub codec: Codec,
    /// A one-shot reply handle, valid in the receiving actor only, when the sender awaits a reply.
    pub reply: Option<u32>,
    /// The deadline in milliseconds since the Unix epoch on the host clock, if any.
    pub deadline_ms: Option<u64>,
    /// The actors (host-issued ids) waiting on this message, oldest first.
    pub chain: Vec<u64>,
    /// The trace this message belongs to.
    pub trace: Option<TraceContext>,
    /// Who sent it: an actor name or a principal such as `cli`.
    pub sender: Option<String>,
    /// The subject, for a message delivered through a subscription.
    pub subject: Option<String>,
    /// An idempotency key set by the sender.
    pub idempotency_key: Option<String>,
    /// Actor references that came with the message, as handles in the *receiver's* reference
    /// table (see `actor_ref`): each is a capability to send to that actor.
    pub attachments: Vec<u32>,
    /// Extensions.
    pub ext: Vec<Ext>,
    /// The encoded message.
    pub payload: Vec<u8>,
    /// When this message opens a stream (`stream_open`): the receiver's handle to read it.
    pub stream: Option<u32>,
}

/// What `next` hands the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)] // decoded once per message; boxing would add an allocation
pub enum Event {
    /// The first event of every instance: run `on_start` with this JSON configuration.
    Start {
        /// The actor's address (its name in the manifest, or the name it was spawned under).
        name: String,
        /// Which instance of the actor this is (`0..instances`).
        instance: u32,
        /// The actor's `config` table from the manifest, as JSON (`null` when absent).
        config: Vec<u8>,
    },
    /// A message from the mailbox.
    Message(Envelope),
    /// The outcome of an operation that returned an operation id.
    Completion {
        /// The operation id the host returned.
        op: u32,
        /// Its outcome.
        result: Completion,
    },
    /// The instance is being stopped: run `on_stop`.
    Stop,
}

/// The outcome of a pending operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Completion {
    /// A send or publish that waited for room was delivered.
    Done,
    /// The reply to a request.
    Reply(ReplyBody),
    /// The operation failed.
    Failed(ErrorCode),
}

/// A reply, from the replying guest (through `reply`) or the host (for failures).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplyBody {
    /// A successful reply in the request's codec.
    Ok {
        /// How `payload` is encoded.
        codec: Codec,
        /// The encoded reply value.
        payload: Vec<u8>,
    },
    /// A typed failure and a human-readable message (never host internals).
    Error {
        /// What kind of failure.
        code: ErrorCode,
        /// Details for a person.
        message: String,
    },
}

/// A message the guest sends, requests or publishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Outbound {
    /// An actor name (send, request) or a subject (publish).
    pub target: String,
    /// The stable wire name of the message type.
    pub msg_type: String,
    /// How `payload` is encoded.
    pub codec: Codec,
    /// The encoded message.
    pub payload: Vec<u8>,
    /// For requests: how long to wait for the reply (host default when `None`).
    pub timeout_ms: Option<u64>,
    /// An idempotency key for the receiver.
    pub idempotency_key: Option<String>,
    /// Extensions.
    pub ext: Vec<Ext>,
    /// For `send` and `request`: address the actor through this handle of the sender's reference
    /// table instead of `target` (the handle is the grant; `target` is ignored).
    pub to_ref: Option<u32>,
    /// Handles of the sender's reference table to pass on with the message (at most
    /// [`MAX_ATTACHMENTS`]); the receiver gets its own handles to the same actors. Not for
    /// `publish`.
    pub attachments: Vec<u32>,
}

/// The most actor references one message may carry.
pub const MAX_ATTACHMENTS: usize = 16;

/// The most actor references one instance may hold; a reference that would exceed it is not
/// issued ([`ErrorCode::TooManyPending`] for `actor_ref`, a warning and a dead letter for an
/// attachment).
pub const MAX_REFS: usize = 4096;

/// What the guest passes to `subscribe`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscribe {
    /// A NATS-style subject pattern (`a.b`, `a.*`, `a.>`).
    pub pattern: String,
    /// What a publisher experiences when this subscriber's mailbox is full.
    pub policy: Policy,
}

/// The per-subscription delivery policy when the subscriber's mailbox is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[non_exhaustive]
pub enum Policy {
    /// The publisher waits for room (lossless; a slow subscriber slows its publishers).
    #[default]
    Wait,
    /// The message is dropped for this subscriber and counted as a dead letter.
    DropNewest,
}

/// What the guest passes to `spawn`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spawn {
    /// The module to run: a name the deployment declares for spawning.
    pub module: String,
    /// The new actor's name (its address).
    pub name: String,
    /// Its configuration as JSON (what `on_start` receives); empty means `null`.
    pub config: Vec<u8>,
}

/// What the guest passes to `timer_set`: a message this instance sends itself after a delay, and
/// then every period when one is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timer {
    /// The message's wire name (a type this actor handles).
    pub msg_type: String,
    /// How `payload` is encoded.
    pub codec: Codec,
    /// The encoded message, delivered on every firing.
    pub payload: Vec<u8>,
    /// Milliseconds until the first firing (`0`: as soon as the instance is free).
    pub delay_ms: u64,
    /// For a periodic timer, milliseconds from one firing to the next (at least 1).
    pub period_ms: Option<u64>,
}

/// One event for `events_append`: opaque bytes the SDK encoded, and the version of the code that
/// wrote them (so a later version of the actor can upcast them on replay).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewEvent {
    /// The schema version of `payload`, as the writing code declares it. Version `0` is reserved
    /// for records the SDK writes for itself (deduplication markers).
    pub version: u32,
    /// The encoded event.
    pub payload: Vec<u8>,
}

/// What the guest passes to `events_append`: events to add to the end of its own log, all or
/// none, if the log still ends at `expected`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Append {
    /// The sequence number of the last event the actor knows (`0` for an empty log). The append
    /// fails with [`ErrorCode::Conflict`] when the log ends elsewhere.
    pub expected: u64,
    /// The events, numbered `expected + 1, expected + 2, ...` (at least one).
    pub events: Vec<NewEvent>,
}

/// Which log `events_read` reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Log {
    /// The calling actor's own log; `from` and the result's positions are sequence numbers.
    Own,
    /// Another actor's log, by address (`account/alice`); needs a `read_events` grant for it.
    Actor(String),
    /// Every actor of a type (the address up to its `/`: `account` for `account/alice`), in the
    /// order their events were committed; `from` and the result's positions are the store's
    /// global positions. Needs a `read_events` grant for the type.
    Type(String),
}

/// Where `events_read` stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Until {
    /// The end of the log.
    Latest,
    /// The event with this sequence number, included (an actor log only).
    Seq(u64),
    /// The last event committed at or before this time, in milliseconds since the Unix epoch on
    /// the host's clock (an actor log only).
    Time(u64),
}

/// What the guest passes to `events_read`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadEvents {
    /// Which log.
    pub log: Log,
    /// Read events after this position (a sequence number, or a global position for
    /// [`Log::Type`]); `0` reads from the start.
    pub from: u64,
    /// Where to stop.
    pub until: Until,
    /// Start from the latest snapshot at or before `until` when there is one (the events then
    /// start after it, whatever `from` says). Actor logs only.
    pub snapshot: bool,
    /// Most bytes of events in the answer (at least one event is returned when there is one; the
    /// host also caps it at the reader's `max_message_bytes`).
    pub max_bytes: u32,
    /// For [`Log::Type`]: when nothing comes after `from`, complete only once something does.
    pub wait: bool,
}

/// A stored event, as `events_read` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// The store's global position: increases with every committed event, across actors.
    pub pos: u64,
    /// The actor whose log holds it (empty when reading [`Log::Own`]).
    pub actor: String,
    /// Its sequence number in that log: `1, 2, 3, ...` without gaps.
    pub seq: u64,
    /// When it was committed, in milliseconds since the Unix epoch on the host's clock.
    pub time_ms: u64,
    /// The schema version it was written with ([`NewEvent::version`]).
    pub version: u32,
    /// The encoded event.
    pub payload: Vec<u8>,
}

/// A snapshot of an actor's state after event `seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The sequence number of the last event the state includes.
    pub seq: u64,
    /// The schema version of `state`.
    pub version: u32,
    /// The encoded state.
    pub state: Vec<u8>,
}

/// What `events_read` completes with (postcard, in a [`ReplyBody::Ok`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventBatch {
    /// The snapshot the events follow, when one was asked for and exists.
    pub snapshot: Option<Snapshot>,
    /// Events in order; empty when there are none in the range.
    pub events: Vec<StoredEvent>,
    /// For an actor log: its last sequence number (where the next append must expect). For
    /// [`Log::Type`]: the last global position the answer covers.
    pub last: u64,
    /// Whether the range was read to its end (`false`: ask again from the last event returned).
    pub complete: bool,
}

/// What the guest passes to `reminder_set`: a durable timer. The host stores it and delivers its
/// message to this actor's address when it is due, activating a virtual actor and surviving a
/// host restart; a reminder with the same name replaces the earlier one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reminder {
    /// The reminder's name, unique per actor.
    pub name: String,
    /// The message's wire name (a type this actor handles).
    pub msg_type: String,
    /// How `payload` is encoded.
    pub codec: Codec,
    /// The encoded message.
    pub payload: Vec<u8>,
    /// Milliseconds until the first firing.
    pub delay_ms: u64,
    /// For a periodic reminder, milliseconds from one firing to the next (at least 1000).
    pub period_ms: Option<u64>,
}

/// The longest status an actor may show in `bunraku ps` (`set_status`), in bytes.
pub const MAX_STATUS_BYTES: usize = 256;

/// The most timers one instance may hold at once.
pub const MAX_TIMERS: usize = 1024;

/// The wire name of the message a watcher receives ([`Down`]).
pub const DOWN_MESSAGE: &str = "bunraku.Down";

/// What a watcher receives when an instance of the actor it watches ends (postcard, message type
/// [`DOWN_MESSAGE`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Down {
    /// The id the `watch` call returned.
    pub watch: u64,
    /// The watched actor's name.
    pub actor: String,
    /// Which of its instances ended.
    pub instance: u32,
    /// Why it ended.
    pub reason: DownReason,
}

/// Why a watched instance ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum DownReason {
    /// It exited normally (it asked to stop).
    Normal,
    /// It was stopped by the host, an operator or its supervisor.
    Stopped,
    /// It failed (trapped, or failed to start), with the reason for people.
    Failed(String),
    /// There was no actor under the name when the watch was made.
    NoSuchActor,
}

/// What a handler accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HandlerKind {
    /// A one-way message.
    Message,
    /// A request with a typed reply.
    Request,
}

/// One message type a guest handles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageInfo {
    /// The stable wire name.
    pub name: String,
    /// Whether it expects a reply.
    pub kind: HandlerKind,
}

/// What a guest exports about itself through [`exports::DESCRIBE`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    /// Must equal [`ABI_VERSION`].
    pub abi_version: u32,
    /// The actor type's name (the Rust type name chosen by the SDK macro, informational).
    pub actor: String,
    /// The message types it handles.
    pub messages: Vec<MessageInfo>,
}

/// What a host function needs to be allowed. Each entry of the host function table names one;
/// the runtime checks it before running the function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Capability {
    /// Always allowed: pulling events, replying through a held reply handle, logging.
    None,
    /// Sending to or calling another actor.
    Send,
    /// Publishing to a subject.
    Publish,
    /// Subscribing to a subject pattern.
    Subscribe,
    /// Saving and loading the actor's persisted state.
    Storage,
    /// Starting actors at run time.
    Spawn,
    /// Setting timers and durable reminders.
    Timers,
}

/// A wasm value type in the host function table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WasmType {
    /// `i32` (a Rust `u32` on both sides).
    I32,
    /// `i64` (a Rust `u64` or `i64` on both sides).
    I64,
}

/// One host function, as listed in [`HOST_FUNCTIONS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostFn {
    /// The import name inside [`IMPORT_MODULE`].
    pub name: &'static str,
    /// Parameter types.
    pub params: &'static [WasmType],
    /// The result type (always one value).
    pub result: WasmType,
    /// What the caller must be granted.
    pub capability: Capability,
}

/// Runs the module's static constructors (the linker's `__wasm_call_ctors`): the body of a
/// guest's [`exports::INITIALIZE`] export, which the host calls once after instantiation. A module
/// that calls it is a WASI reactor to wasm-ld, which then leaves the other exports unwrapped
/// (without it, every export runs the constructors before it and the destructors after it).
#[cfg(target_arch = "wasm32")]
pub fn run_static_constructors() {
    unsafe extern "C" {
        fn __wasm_call_ctors();
    }
    // SAFETY: the linker defines it; called once, before any other export, as in WASI's
    // crt1-reactor.
    unsafe { __wasm_call_ctors() }
}

/// Maps a Rust parameter type of the table to its wasm type.
#[doc(hidden)]
#[macro_export]
macro_rules! __wasm_type {
    (u32) => {
        $crate::WasmType::I32
    };
    (u64) => {
        $crate::WasmType::I64
    };
    (i64) => {
        $crate::WasmType::I64
    };
}

/// Declares every host function of the table as an import of the [`IMPORT_MODULE`] module, in an
/// `unsafe extern "C"` block of `pub(crate)` functions: what the guest SDK calls, and what a guest
/// written against the ABI alone calls instead. Put it in a module of its own:
///
/// ```ignore
/// mod imports {
///     bunraku_abi::declare_host_imports!();
/// }
/// // unsafe { imports::next(ptr, cap, 0) }
/// ```
#[macro_export]
macro_rules! declare_host_imports {
    () => {
        use $crate::__host_imports_from_table;
        $crate::for_each_host_fn!(__host_imports_from_table);
    };
}

/// The callback of [`declare_host_imports!`]. The module name is a literal because
/// `#[link(wasm_import_module = ..)]` takes nothing else; a test holds it equal to
/// [`IMPORT_MODULE`].
#[doc(hidden)]
#[macro_export]
macro_rules! __host_imports_from_table {
    ($( $(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ident),*) -> $ret:ident,
        capability = $cap:ident, module = $module:ident; )*) => {
        #[link(wasm_import_module = "bunraku")]
        // A guest declares every function and calls those it needs.
        #[allow(dead_code)]
        unsafe extern "C" {
            $( pub(crate) fn $name($($arg: $ty),*) -> $ret; )*
        }
    };
}

/// The single table of host functions. Calls `$callback!` with every entry, in the form
///
/// ```text
/// $( $(#[$doc])* fn $name($($arg: $ty),*) -> $ret, capability = $cap, module = $module; )*
/// ```
///
/// where `$ty` is `u32` or `u64`, `$ret` is `i64`, `$cap` a [`Capability`] variant name and
/// `$module` the runtime module implementing it. [`declare_host_imports!`] turns each entry into
/// an `extern "C"` import for guests; the runtime turns each into a capability-checked linker
/// registration.
///
/// ```
/// macro_rules! names {
///     ($( $(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ident),*) -> $ret:ident,
///         capability = $cap:ident, module = $module:ident; )*) => {
///         &[$(stringify!($name)),*]
///     };
/// }
/// let names: &[&str] = bunraku_abi::for_each_host_fn!(names);
/// assert!(names.contains(&"next"));
/// ```
#[macro_export]
macro_rules! for_each_host_fn {
    ($callback:ident) => {
        $callback! {
            /// Writes the next [`Event`](crate::Event) (postcard) into `buf_ptr..buf_ptr+buf_cap`
            /// and returns its length; `0` when there is none. When the length is larger than
            /// `buf_cap` nothing is written and the event stays first in line: grow the buffer and
            /// call again. The length carries [`NEXT_LAST`](crate::NEXT_LAST) when nothing else
            /// was ready: the guest may return after handling the event instead of calling again.
            /// `in_flight` is the number of handlers the guest has waiting: the host
            /// only hands out a new mailbox message when it is below the actor's concurrency.
            /// Resets the time budget.
            fn next(buf_ptr: u32, buf_cap: u32, in_flight: u32) -> i64,
                capability = None, module = messaging;
            /// Sends an [`Outbound`](crate::Outbound) to an actor. `mode` is a
            /// [`mode`](crate::mode) constant. Returns `0` when delivered, an operation id when
            /// waiting for room.
            fn send(ptr: u32, len: u32, mode: u32) -> i64,
                capability = Send, module = messaging;
            /// Sends an [`Outbound`](crate::Outbound) as a request. Returns an operation id; the
            /// reply arrives as a [`Completion::Reply`](crate::Completion::Reply).
            fn request(ptr: u32, len: u32) -> i64,
                capability = Send, module = messaging;
            /// Answers the request that carried reply handle `handle` with a
            /// [`ReplyBody`](crate::ReplyBody). The handle is the grant: no capability needed.
            fn reply(handle: u32, ptr: u32, len: u32) -> i64,
                capability = None, module = messaging;
            /// Publishes an [`Outbound`](crate::Outbound) whose target is a subject. Returns `0`
            /// when every subscriber took it, an operation id when waiting for room.
            fn publish(ptr: u32, len: u32, mode: u32) -> i64,
                capability = Publish, module = pubsub;
            /// Subscribes with a [`Subscribe`](crate::Subscribe); returns a subscription id.
            fn subscribe(ptr: u32, len: u32) -> i64,
                capability = Subscribe, module = pubsub;
            /// Drops a subscription.
            fn unsubscribe(id: u64) -> i64,
                capability = Subscribe, module = pubsub;
            /// Gives up waiting for operation `op` (its future was dropped).
            fn cancel(op: u32) -> i64,
                capability = None, module = messaging;
            /// Asks to be entered again although no event is waiting: the guest still has work
            /// of its own (tasks woken in this entry that it did not poll, such as a task that
            /// yields). When the current entry returns, the host enters the guest again once the
            /// actors waiting for the same thread had their turn, with a fresh time budget.
            /// Returns `0`.
            fn yield_now() -> i64,
                capability = None, module = messaging;
            /// Reads the state this actor last saved into `buf_ptr..buf_ptr+buf_cap` and returns
            /// its length; [`ErrorCode::NotFound`](crate::ErrorCode::NotFound) when it never saved
            /// any. As with `next`, a length larger than `buf_cap` means nothing was written: grow
            /// the buffer and call again.
            fn state_load(buf_ptr: u32, buf_cap: u32) -> i64,
                capability = Storage, module = state;
            /// Saves `ptr..ptr+len` as this actor's state, replacing what it saved before. Returns
            /// an operation id that completes with [`Completion::Done`](crate::Completion::Done)
            /// once the state is durable, or fails with
            /// [`ErrorCode::StorageUnavailable`](crate::ErrorCode::StorageUnavailable).
            fn state_save(ptr: u32, len: u32) -> i64,
                capability = Storage, module = state;
            /// Asks the host to stop this instance: no new message is handed out, `on_stop` runs
            /// once the handlers in flight finish, and the exit counts as *normal* (a supervisor
            /// restarts only `permanent` children after it; see the manifest reference).
            fn stop() -> i64,
                capability = None, module = lifecycle;
            /// Watches the actor named by the UTF-8 name at `ptr..ptr+len` and returns a watch id.
            /// When one of its instances ends (fails, is stopped, or exits normally), this actor
            /// receives one [`Down`](crate::Down) message (type [`DOWN_MESSAGE`](crate::DOWN_MESSAGE))
            /// and the watch ends. A name with no actor gives an immediate `Down` with
            /// [`DownReason::NoSuchActor`](crate::DownReason::NoSuchActor). Needs the same grant
            /// as sending to the actor.
            fn watch(ptr: u32, len: u32) -> i64,
                capability = Send, module = lifecycle;
            /// Ends watch `id` without a `Down`; [`ErrorCode::Invalid`](crate::ErrorCode::Invalid)
            /// for an id this actor does not hold.
            fn unwatch(id: u64) -> i64,
                capability = None, module = lifecycle;
            /// Starts a new actor from a [`Spawn`](crate::Spawn): a module the deployment declares
            /// for spawning, under a new name, with a JSON configuration for its `on_start`. The
            /// new actor is placed under the spawner's supervisor, with the restart type the
            /// declaration gives, when the spawner has one. Returns `0` once it is registered (its `on_start` runs next);
            /// [`ErrorCode::NotFound`](crate::ErrorCode::NotFound) for an unknown module,
            /// [`ErrorCode::AlreadyExists`](crate::ErrorCode::AlreadyExists) for a taken name,
            /// [`ErrorCode::Invalid`](crate::ErrorCode::Invalid) for a bad name or configuration.
            fn spawn(ptr: u32, len: u32) -> i64,
                capability = Spawn, module = lifecycle;
            /// Returns a handle (`> 0`) in this instance's reference table to the actor named by
            /// the UTF-8 name at `ptr..ptr+len`: a capability that can be attached to messages
            /// ([`Outbound::attachments`](crate::Outbound::attachments)) and sent to
            /// ([`Outbound::to_ref`](crate::Outbound::to_ref)) without a grant for the name.
            /// Needs the grant to send to the name (checked per name, so an actor without grants
            /// may still take a reference to itself, to hand out). Handles are per instance: a
            /// handle this instance was not issued is
            /// [`ErrorCode::Denied`](crate::ErrorCode::Denied) wherever it is used.
            fn actor_ref(ptr: u32, len: u32) -> i64,
                capability = None, module = refs;
            /// Releases a handle of this instance's reference table;
            /// [`ErrorCode::Invalid`](crate::ErrorCode::Invalid) for one it does not hold.
            fn drop_ref(handle: u32) -> i64,
                capability = None, module = refs;
            /// Sets a [`Timer`](crate::Timer): this instance receives the timer's message, as an
            /// ordinary message from itself, after the delay and then every period if it has one,
            /// on the host's clock. Returns a timer id. Timers belong to the instance: they end
            /// with it (stop, failure, deactivation), and their firings do not count as activity
            /// for a virtual actor's idle timeout. A periodic timer has at most one firing waiting
            /// to be handled: firings that come due meanwhile are merged into it.
            /// [`ErrorCode::UnknownType`](crate::ErrorCode::UnknownType) for a message type the
            /// actor does not handle, [`ErrorCode::TooManyPending`](crate::ErrorCode::TooManyPending)
            /// past [`MAX_TIMERS`](crate::MAX_TIMERS).
            fn timer_set(ptr: u32, len: u32) -> i64,
                capability = Timers, module = timers;
            /// Cancels timer `id`: it does not fire again (a firing already waiting is dropped).
            /// [`ErrorCode::Invalid`](crate::ErrorCode::Invalid) for an id this instance does not
            /// hold (a one-shot timer that fired is gone).
            fn timer_cancel(id: u64) -> i64,
                capability = Timers, module = timers;
            /// Returns an operation id that completes with
            /// [`Completion::Done`](crate::Completion::Done) after `ms` milliseconds on the
            /// host's clock: a handler that waits, without holding a thread.
            fn sleep(ms: u64) -> i64,
                capability = Timers, module = timers;
            /// Opens a stream to an actor with an [`Outbound`](crate::Outbound) (a name or
            /// `to_ref`, and the opening message, which the receiver handles like any other; its
            /// [`Envelope::stream`](crate::Envelope::stream) is the reader's handle). Needs the
            /// same grant as sending to the actor. Returns the writer's stream handle; the writer
            /// starts with the receiver's `stream_window` of credit.
            fn stream_open(ptr: u32, len: u32) -> i64,
                capability = Send, module = streams;
            /// Writes a batch of items (postcard `Vec<Vec<u8>>`, each at most the receiver's
            /// `max_message_bytes`) to a stream this instance writes. The batch must fit in the
            /// credit ([`ErrorCode::Invalid`](crate::ErrorCode::Invalid) otherwise); returns the
            /// credit left. [`ErrorCode::Closed`](crate::ErrorCode::Closed) or
            /// [`ErrorCode::PeerFailed`](crate::ErrorCode::PeerFailed) when the reader is gone.
            fn stream_write(stream: u32, ptr: u32, len: u32) -> i64,
                capability = None, module = streams;
            /// The credit of a stream this instance writes: how many items it may write now.
            fn stream_credit(stream: u32) -> i64,
                capability = None, module = streams;
            /// Returns an operation id that completes with
            /// [`Completion::Done`](crate::Completion::Done) when the stream has something for
            /// this side: credit for the writer; items or the end for the reader.
            fn stream_wait(stream: u32) -> i64,
                capability = None, module = streams;
            /// Moves queued items of a stream this instance reads into `buf_ptr..+buf_cap`
            /// (postcard `Vec<Vec<u8>>`, as many whole items as fit) and returns the length; `0`
            /// when none is queued yet (wait with `stream_wait`); a length larger than `buf_cap`
            /// when the first item does not fit (grow the buffer). After the last item:
            /// [`ErrorCode::Closed`](crate::ErrorCode::Closed) when the writer closed it,
            /// [`ErrorCode::Aborted`](crate::ErrorCode::Aborted) or
            /// [`ErrorCode::PeerFailed`](crate::ErrorCode::PeerFailed). Reading frees credit.
            fn stream_read(stream: u32, buf_ptr: u32, buf_cap: u32) -> i64,
                capability = None, module = streams;
            /// Ends this side of a stream and releases the handle: a writer closes it
            /// (`how` = 0: the reader gets the items written, then the end) or aborts it (1); a
            /// reader stops reading (the writer gets `Closed`). A handle this instance does not
            /// hold is [`ErrorCode::Denied`](crate::ErrorCode::Denied) for every stream function.
            fn stream_end(stream: u32, how: u32) -> i64,
                capability = None, module = streams;
            /// Appends events to this actor's own log: an [`Append`](crate::Append), all or none.
            /// Returns an operation id that completes, once the events are committed to disk,
            /// with a [`Completion::Reply`](crate::Completion::Reply) holding the new last sequence
            /// number (postcard `u64`), or fails with
            /// [`ErrorCode::Conflict`](crate::ErrorCode::Conflict) (the log does not end at
            /// `expected`; nothing was written and other actors' appends are not affected),
            /// [`ErrorCode::StorageUnavailable`](crate::ErrorCode::StorageUnavailable) (nothing was
            /// acknowledged that was not committed) or
            /// [`ErrorCode::TooLarge`](crate::ErrorCode::TooLarge).
            fn events_append(ptr: u32, len: u32) -> i64,
                capability = Storage, module = events;
            /// Reads a log with a [`ReadEvents`](crate::ReadEvents). Returns an operation id that
            /// completes with a [`Completion::Reply`](crate::Completion::Reply) holding an
            /// [`EventBatch`](crate::EventBatch), or fails with
            /// [`ErrorCode::Corrupt`](crate::ErrorCode::Corrupt) (a row failed its checksum; it is
            /// not served), [`ErrorCode::Denied`](crate::ErrorCode::Denied) or
            /// [`ErrorCode::StorageUnavailable`](crate::ErrorCode::StorageUnavailable). Each call is
            /// its own guest turn, so a long replay reads in chunks within the time budget.
            fn events_read(ptr: u32, len: u32) -> i64,
                capability = Storage, module = events;
            /// Stores a [`Snapshot`](crate::Snapshot) of this actor's state, at most its
            /// `max_message_bytes`. Returns an operation id completing with
            /// [`Completion::Done`](crate::Completion::Done) once committed;
            /// [`ErrorCode::Invalid`](crate::ErrorCode::Invalid) for a sequence number past the
            /// end of the log.
            fn events_snapshot(ptr: u32, len: u32) -> i64,
                capability = Storage, module = events;
            /// Sets a durable [`Reminder`](crate::Reminder) for this actor's address. Returns an
            /// operation id completing with [`Completion::Done`](crate::Completion::Done) once it is
            /// stored. The message arrives from the sender `bunraku.reminder`.
            fn reminder_set(ptr: u32, len: u32) -> i64,
                capability = Timers, module = events;
            /// Cancels the reminder named by the UTF-8 string at `ptr..ptr+len`. Returns an
            /// operation id completing with [`Completion::Done`](crate::Completion::Done) once the
            /// cancellation is stored, or failing with
            /// [`ErrorCode::NotFound`](crate::ErrorCode::NotFound).
            fn reminder_cancel(ptr: u32, len: u32) -> i64,
                capability = Timers, module = events;
            /// Sets the status this actor shows in `bunraku ps` (UTF-8, at most
            /// [`MAX_STATUS_BYTES`](crate::MAX_STATUS_BYTES); empty clears it). An actor with a
            /// status is not deactivated for being idle.
            fn set_status(ptr: u32, len: u32) -> i64,
                capability = None, module = lifecycle;
            /// Writes a UTF-8 line to the actor's log at a [`level`](crate::level).
            fn log(level: u32, ptr: u32, len: u32) -> i64,
                capability = None, module = logging;
        }
    };
}

macro_rules! host_fn_table {
    ($( $(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ident),*) -> $ret:ident,
        capability = $cap:ident, module = $module:ident; )*) => {
        /// Every host function, derived from [`for_each_host_fn!`].
        pub const HOST_FUNCTIONS: &[HostFn] = &[$(
            HostFn {
                name: stringify!($name),
                params: &[$($crate::__wasm_type!($ty)),*],
                result: $crate::__wasm_type!($ret),
                capability: Capability::$cap,
            }
        ),*];
    };
}
for_each_host_fn!(host_fn_table);

/// Encodes a wire value with postcard.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).expect("postcard encoding into a Vec cannot fail")
}

/// Decodes a wire value with postcard, refusing trailing bytes.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, ErrorCode> {
    match postcard::take_from_bytes(bytes) {
        Ok((value, [])) => Ok(value),
        _ => Err(ErrorCode::Malformed),
    }
}
