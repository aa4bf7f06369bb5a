//! The native backend: a thread-local host standing in for the wasm runtime, so actors run in
//! ordinary `cargo test` (see [`testing`](crate::testing), which owns and drives it).
//!
//! It follows the runtime's semantics where a test can observe them: `next` stages an event and
//! keeps it first in line until the buffer is large enough, hands out completions before mailbox
//! messages and mailbox messages only while `in_flight` is below the concurrency; replies need a
//! handle the host issued; `cancel` and `unsubscribe` refuse ids they do not know. Instead of other
//! actors there are records (what was sent, published, requested) and responders (closures that
//! answer requests). A target marked full makes `send`/`publish` wait (mode `WAIT`) or fail with
//! `MailboxFull` (mode `TRY`). Actor references work as on the host: `actor_ref` issues handles
//! (it grants every name), a message sent through a handle is recorded under the actor's name,
//! and a handle that was never issued is `denied`.
//!
//! Event logs live in an [`EventStore`] that several hosts may share (one per `TestActor`, all
//! reading and appending to the same logs): appends check the expected sequence number, reads
//! honour `Until`, snapshots, `max_bytes` and `complete` as the runtime does, and a read of a
//! type's log with `wait` stays pending until an append (by any host sharing the store) gives it
//! something, checked whenever its own host runs. Its clock is the test's: events are stamped
//! with [`EventStore::now_ms`], which only the test moves. Durable reminders are kept there too,
//! by actor address, so they outlive the `TestActor` that set them.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;

use bunraku_abi::{
    Append, Codec, Completion, ErrorCode, Event, EventBatch, Log, Outbound, ReadEvents, Reminder,
    ReplyBody, Snapshot, StoredEvent, Subscribe, Until, decode, encode, encode_error, mode,
};

/// Answers a request: gets the request, returns the reply.
pub(crate) type Responder = Rc<RefCell<dyn FnMut(&Outbound) -> ReplyBody>>;

/// A stream the actor opened: what it was opened with, what was written, how it ended.
#[derive(Debug, Clone)]
pub(crate) struct OutStream {
    pub(crate) open: Outbound,
    pub(crate) items: Vec<Vec<u8>>,
    /// `Some(abort)` once ended.
    pub(crate) ended: Option<bool>,
}

/// A stream opened to the actor by the test: items to read, then its end.
#[derive(Debug, Clone, Default)]
pub(crate) struct InStream {
    pub(crate) items: VecDeque<Vec<u8>>,
    /// How it ends once the items are read (`Closed`, `Aborted`, `PeerFailed`); `None`: open.
    pub(crate) end: Option<ErrorCode>,
    /// The actor stopped reading before the end.
    pub(crate) cancelled: bool,
    /// The actor released its handle (at the end, or by stopping early).
    pub(crate) released: bool,
}

/// The credit a native writer has: the test reads whatever is written.
const NATIVE_CREDIT: i64 = 1 << 20;

/// The most bytes one native message, append, read answer or snapshot may hold: the runtime's
/// default `max_message_bytes`.
pub(crate) const NATIVE_MAX_MESSAGE: usize = 1 << 20;

/// The clock of a fresh [`EventStore`]: 2024-01-01T00:00:00Z, in milliseconds since the epoch.
pub(crate) const NATIVE_EPOCH_MS: u64 = 1_704_067_200_000;

/// A committed event and whether the test marked it as failing its checksum.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    /// The event as a read of another actor's log returns it (its `actor` filled in).
    pub(crate) event: StoredEvent,
    /// Reads that reach it fail with `Corrupt`.
    pub(crate) corrupt: bool,
}

/// The event logs, snapshots and reminders of every actor, shared by the hosts of a test.
#[derive(Debug)]
pub(crate) struct EventStore {
    /// Every event in commit order: the event at global position `p` is `rows[p - 1]`.
    pub(crate) rows: Vec<Row>,
    /// Each actor's log, by address: indices into `rows`, in sequence order.
    pub(crate) logs: BTreeMap<String, Vec<usize>>,
    /// Each actor's snapshots, by address and sequence number.
    pub(crate) snapshots: BTreeMap<String, BTreeMap<u64, Snapshot>>,
    /// Each actor's reminders, by address and name.
    pub(crate) reminders: BTreeMap<String, BTreeMap<String, Reminder>>,
    /// The clock events are stamped with (milliseconds since the epoch).
    pub(crate) now_ms: u64,
}

impl Default for EventStore {
    fn default() -> Self {
        Self {
            rows: Vec::new(),
            logs: BTreeMap::new(),
            snapshots: BTreeMap::new(),
            reminders: BTreeMap::new(),
            now_ms: NATIVE_EPOCH_MS,
        }
    }
}

/// An [`EventStore`] shared by several hosts.
pub(crate) type SharedEvents = Rc<RefCell<EventStore>>;

/// The type of an address: what comes before its `/` (the whole address when it has none).
pub(crate) fn kind_of(address: &str) -> &str {
    address.split_once('/').map_or(address, |(kind, _)| kind)
}

impl EventStore {
    /// The last sequence number of `actor`'s log (`0` when it has none).
    pub(crate) fn last_seq(&self, actor: &str) -> u64 {
        self.logs.get(actor).map_or(0, |log| log.len() as u64)
    }

    /// Appends to `actor`'s log if it ends at `append.expected`; the new last sequence number.
    pub(crate) fn append(&mut self, actor: &str, append: Append) -> Result<u64, ErrorCode> {
        let bytes: usize = append.events.iter().map(|e| e.payload.len()).sum();
        if bytes > NATIVE_MAX_MESSAGE {
            return Err(ErrorCode::TooLarge);
        }
        if append.expected != self.last_seq(actor) {
            return Err(ErrorCode::Conflict);
        }
        let log = self.logs.entry(actor.to_owned()).or_default();
        for new in append.events {
            let index = self.rows.len();
            log.push(index);
            self.rows.push(Row {
                event: StoredEvent {
                    pos: index as u64 + 1,
                    actor: actor.to_owned(),
                    seq: log.len() as u64,
                    time_ms: self.now_ms,
                    version: new.version,
                    payload: new.payload,
                },
                corrupt: false,
            });
        }
        Ok(log.len() as u64)
    }

    /// Stores a snapshot of `actor`'s state; `Invalid` past the end of its log.
    pub(crate) fn snapshot(&mut self, actor: &str, snapshot: Snapshot) -> Result<(), ErrorCode> {
        if snapshot.seq > self.last_seq(actor) {
            return Err(ErrorCode::Invalid);
        }
        if snapshot.state.len() > NATIVE_MAX_MESSAGE {
            return Err(ErrorCode::TooLarge);
        }
        self.snapshots
            .entry(actor.to_owned())
            .or_default()
            .insert(snapshot.seq, snapshot);
        Ok(())
    }

    /// Answers a read by actor `own`; `Ok(None)` when a waiting read of a type's log has nothing
    /// to return yet.
    pub(crate) fn read(
        &self,
        own: &str,
        req: &ReadEvents,
    ) -> Result<Option<EventBatch>, ErrorCode> {
        let max_bytes = (req.max_bytes as usize).min(NATIVE_MAX_MESSAGE);
        let (actor, own_log) = match &req.log {
            Log::Own => (own, true),
            Log::Actor(actor) => (actor.as_str(), false),
            Log::Type(kind) => return self.read_type(kind, req, max_bytes),
        };
        let log = self.logs.get(actor).map_or(&[][..], Vec::as_slice);
        let last = log.len() as u64;
        let end = match req.until {
            Until::Latest => last,
            Until::Seq(seq) => seq.min(last),
            Until::Time(ms) => log
                .iter()
                .take_while(|&&i| self.rows[i].event.time_ms <= ms)
                .count() as u64,
        };
        let mut from = req.from;
        let mut snapshot = None;
        if req.snapshot
            && let Some((_, snap)) = self
                .snapshots
                .get(actor)
                .and_then(|snaps| snaps.range(..=end).next_back())
        {
            from = snap.seq;
            snapshot = Some(snap.clone());
        }
        let mut events = Vec::new();
        let mut bytes = 0;
        let mut seq = from;
        while seq < end {
            let row = &self.rows[log[seq as usize]];
            if !events.is_empty() && bytes + row.event.payload.len() > max_bytes {
                break;
            }
            if row.corrupt {
                return Err(ErrorCode::Corrupt);
            }
            bytes += row.event.payload.len();
            let mut event = row.event.clone();
            if own_log {
                event.actor.clear();
            }
            events.push(event);
            seq += 1;
        }
        Ok(Some(EventBatch {
            snapshot,
            events,
            last,
            complete: seq >= end,
        }))
    }

    fn read_type(
        &self,
        kind: &str,
        req: &ReadEvents,
        max_bytes: usize,
    ) -> Result<Option<EventBatch>, ErrorCode> {
        if req.snapshot || req.until != Until::Latest {
            return Err(ErrorCode::Invalid);
        }
        let start = usize::try_from(req.from).unwrap_or(usize::MAX);
        let mut events: Vec<StoredEvent> = Vec::new();
        let mut bytes = 0;
        let mut complete = true;
        for row in self.rows.iter().skip(start) {
            if kind_of(&row.event.actor) != kind {
                continue;
            }
            if !events.is_empty() && bytes + row.event.payload.len() > max_bytes {
                complete = false;
                break;
            }
            if row.corrupt {
                return Err(ErrorCode::Corrupt);
            }
            bytes += row.event.payload.len();
            events.push(row.event.clone());
        }
        if events.is_empty() && req.wait {
            return Ok(None);
        }
        Ok(Some(EventBatch {
            snapshot: None,
            last: events.last().map_or(req.from, |e| e.pos),
            events,
            complete,
        }))
    }
}

/// A send or publish waiting for room.
struct Held {
    op: u32,
    publish: bool,
    out: Outbound,
}

/// The state of the native host for one actor instance.
pub(crate) struct NativeHost {
    /// `Start`, `Message` and `Stop` events, in order.
    pub(crate) inbox: VecDeque<Event>,
    /// Mailbox messages handed out while fewer handlers than this are in flight.
    pub(crate) concurrency: u32,
    /// Every send that was delivered, in order.
    pub(crate) sent: Vec<Outbound>,
    /// Every publish that was delivered, in order.
    pub(crate) published: Vec<Outbound>,
    /// Every request made, in order.
    pub(crate) requests: Vec<Outbound>,
    /// Replies by reply handle.
    pub(crate) replies: BTreeMap<u32, ReplyBody>,
    /// Live subscriptions by id.
    pub(crate) subscriptions: BTreeMap<u64, Subscribe>,
    /// Log lines with their raw level.
    pub(crate) logs: Vec<(u32, String)>,
    /// Operations the guest cancelled.
    pub(crate) cancelled: Vec<u32>,
    /// Every `spawn` request, in order.
    pub(crate) spawned: Vec<bunraku_abi::Spawn>,
    /// Actors watched, by watch id.
    pub(crate) watches: BTreeMap<u64, String>,
    /// Streams the actor opened, by handle.
    pub(crate) streams_out: BTreeMap<u32, OutStream>,
    /// Streams the test opened to the actor, by handle.
    pub(crate) streams_in: BTreeMap<u32, InStream>,
    next_stream: u32,
    /// Operations waiting on an incoming stream, by handle.
    stream_waits: BTreeMap<u32, Vec<u32>>,
    /// Live timers by id.
    pub(crate) timers: BTreeMap<u64, bunraku_abi::Timer>,
    next_timer: u64,
    /// Actor references by handle.
    pub(crate) refs: BTreeMap<u32, String>,
    next_ref: u32,
    /// Whether the actor asked to stop (`Ctx::stop`).
    pub(crate) stop_requested: bool,
    /// The actor asked to be entered again (`yield_now`) in its last entry.
    pub(crate) resume_requested: bool,
    /// The state the actor last saved, as `state_save` received it.
    pub(crate) state: Option<Vec<u8>>,
    /// Fail `state_load` and `state_save` with `StorageUnavailable`, as a host with a full disk.
    /// The event functions and reminders fail the same way.
    pub(crate) storage_unavailable: bool,
    /// The actor's address (from its `Start` event): whose reminders these are.
    pub(crate) address: String,
    /// The name of its own log (`Log::Own`): the address for instance 0, `ADDRESS#K` for
    /// instance `K`, as on the host.
    pub(crate) log: String,
    /// Event logs, snapshots and reminders, possibly shared with other hosts.
    pub(crate) events: SharedEvents,
    /// Reads of a type's log waiting for an append, by operation id.
    event_waits: Vec<(u32, ReadEvents)>,
    /// The status the actor set (`set_status`).
    pub(crate) status: String,
    completions: VecDeque<(u32, Completion)>,
    /// An encoded event that did not fit the guest's buffer yet, and whether it was the last
    /// one ready.
    staged: Option<(Vec<u8>, bool)>,
    pending_ops: BTreeSet<u32>,
    next_op: u32,
    next_sub: u64,
    next_handle: u32,
    open_replies: BTreeSet<u32>,
    full: BTreeSet<String>,
    held: Vec<Held>,
    responders: BTreeMap<(String, String), Responder>,
}

impl Default for NativeHost {
    fn default() -> Self {
        Self {
            inbox: VecDeque::new(),
            concurrency: 1,
            sent: Vec::new(),
            published: Vec::new(),
            requests: Vec::new(),
            replies: BTreeMap::new(),
            subscriptions: BTreeMap::new(),
            logs: Vec::new(),
            cancelled: Vec::new(),
            spawned: Vec::new(),
            watches: BTreeMap::new(),
            refs: BTreeMap::new(),
            next_ref: 0,
            timers: BTreeMap::new(),
            next_timer: 0,
            streams_out: BTreeMap::new(),
            streams_in: BTreeMap::new(),
            next_stream: 0,
            stream_waits: BTreeMap::new(),
            stop_requested: false,
            resume_requested: false,
            state: None,
            storage_unavailable: false,
            address: String::new(),
            log: String::new(),
            events: SharedEvents::default(),
            event_waits: Vec::new(),
            status: String::new(),
            completions: VecDeque::new(),
            staged: None,
            pending_ops: BTreeSet::new(),
            next_op: 0,
            next_sub: 0,
            next_handle: 0,
            open_replies: BTreeSet::new(),
            full: BTreeSet::new(),
            held: Vec::new(),
            responders: BTreeMap::new(),
        }
    }
}

impl NativeHost {
    /// Issues a reply handle for a message about to be delivered.
    pub(crate) fn reply_handle(&mut self) -> u32 {
        self.next_handle += 1;
        self.open_replies.insert(self.next_handle);
        self.next_handle
    }

    /// Answers requests of type `msg_type` to `target` with `responder`.
    pub(crate) fn respond(&mut self, target: &str, msg_type: &str, responder: Responder) {
        self.responders
            .insert((target.to_owned(), msg_type.to_owned()), responder);
    }

    /// Marks `target` (an actor or a subject) full or not. Making it not full delivers what was
    /// waiting for it and completes those operations.
    pub(crate) fn set_full(&mut self, target: &str, full: bool) {
        if full {
            self.full.insert(target.to_owned());
            return;
        }
        self.full.remove(target);
        let (ready, held): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|h| h.out.target == target);
        self.held = held;
        for h in ready {
            if h.publish {
                self.published.push(h.out);
            } else {
                self.sent.push(h.out);
            }
            self.complete(h.op, Completion::Done);
        }
    }

    /// Registers a stream opened to the actor; its handle.
    pub(crate) fn open_in_stream(&mut self, stream: InStream) -> u32 {
        self.next_stream += 1;
        self.streams_in.insert(self.next_stream, stream);
        self.next_stream
    }

    /// Issues a reference handle to actor `name`.
    pub(crate) fn issue_ref(&mut self, name: &str) -> u32 {
        self.next_ref += 1;
        self.refs.insert(self.next_ref, name.to_owned());
        self.next_ref
    }

    /// Resolves `to_ref` into `target` and checks the attachments: `Denied` for a handle that
    /// was never issued (or was dropped).
    fn address(&self, out: &mut Outbound) -> Result<(), ErrorCode> {
        if let Some(handle) = out.to_ref {
            out.target = self.refs.get(&handle).ok_or(ErrorCode::Denied)?.clone();
        }
        if out.attachments.len() > bunraku_abi::MAX_ATTACHMENTS {
            return Err(ErrorCode::Invalid);
        }
        match out.attachments.iter().all(|h| self.refs.contains_key(h)) {
            true => Ok(()),
            false => Err(ErrorCode::Denied),
        }
    }

    /// Completes the waiting reads that an append gave something to.
    fn poll_event_waits(&mut self) {
        if self.event_waits.is_empty() {
            return;
        }
        let waits = std::mem::take(&mut self.event_waits);
        for (op, req) in waits {
            let answer = self.events.borrow().read(&self.log, &req);
            match answer {
                Ok(None) => self.event_waits.push((op, req)),
                Ok(Some(batch)) => self.complete(op, batch_completion(&batch)),
                Err(code) => self.complete(op, Completion::Failed(code)),
            }
        }
    }

    /// Whether [`take_event`](Self::take_event) would hand out an event now: the host enters
    /// the actor again for it (the guest returns after an event flagged last, and handling it
    /// may have made another ready).
    pub(crate) fn has_event(&mut self, in_flight: u32) -> bool {
        self.poll_event_waits();
        !self.completions.is_empty()
            || match self.inbox.front() {
                Some(Event::Message(_)) => in_flight < self.concurrency,
                Some(_) => true,
                None => false,
            }
    }

    fn take_event(&mut self, in_flight: u32) -> Option<Event> {
        if !self.has_event(in_flight) {
            return None;
        }
        if let Some((op, result)) = self.completions.pop_front() {
            self.pending_ops.remove(&op);
            return Some(Event::Completion { op, result });
        }
        self.inbox.pop_front()
    }

    fn new_op(&mut self) -> u32 {
        self.next_op += 1;
        self.pending_ops.insert(self.next_op);
        self.next_op
    }

    fn complete(&mut self, op: u32, result: Completion) {
        if self.pending_ops.contains(&op) {
            self.completions.push_back((op, result));
        }
    }
}

thread_local! {
    static HOST: RefCell<Option<NativeHost>> = const { RefCell::new(None) };
}

/// Installs `host` on this thread and returns the one it replaces.
pub(crate) fn swap(host: Option<NativeHost>) -> Option<NativeHost> {
    HOST.with(|h| std::mem::replace(&mut *h.borrow_mut(), host))
}

const NO_HOST: &str = "bunraku_sdk: no native host on this thread; run actors natively with \
                       `bunraku_sdk::testing::TestActor`";

/// Runs `f` on the installed host; `None` when there is none (or the thread is exiting).
fn with<R>(f: impl FnOnce(&mut NativeHost) -> R) -> Option<R> {
    HOST.try_with(|h| h.borrow_mut().as_mut().map(f))
        .ok()
        .flatten()
}

/// Like [`with`], but a missing host is an `Internal` error.
fn with_or_fail(f: impl FnOnce(&mut NativeHost) -> i64) -> i64 {
    with(f).unwrap_or(encode_error(ErrorCode::Internal))
}

pub(crate) fn next(buf: &mut [u8], in_flight: u32) -> i64 {
    with(|h| {
        if h.staged.is_none() {
            let Some(event) = h.take_event(in_flight) else {
                return 0;
            };
            // As the host flags it: a message with nothing else ready behind it.
            let last = matches!(event, Event::Message(_))
                && h.completions.is_empty()
                && h.inbox.is_empty();
            h.staged = Some((bunraku_abi::view::encode_event(&event), last));
        }
        let (staged, _) = h.staged.as_ref().expect("staged above");
        if staged.len() > buf.len() {
            return staged.len() as i64;
        }
        let (staged, last) = h.staged.take().expect("staged above");
        buf[..staged.len()].copy_from_slice(&staged);
        let flag = if last { bunraku_abi::NEXT_LAST } else { 0 };
        (staged.len() as u64 | flag) as i64
    })
    .unwrap_or_else(|| panic!("{NO_HOST}"))
}

/// `send` and `publish`: deliver, wait for room, or fail when the target is full.
fn deliver(bytes: &[u8], mode: u32, publish: bool) -> i64 {
    let mut out: Outbound = match decode(bytes) {
        Ok(out) => out,
        Err(code) => return encode_error(code),
    };
    if publish
        && (out.target.is_empty()
            || out.target.split('.').any(str::is_empty)
            || out.to_ref.is_some()
            || !out.attachments.is_empty())
    {
        return encode_error(ErrorCode::Invalid);
    }
    with_or_fail(|h| {
        if let Err(code) = h.address(&mut out) {
            return encode_error(code);
        }
        if !h.full.contains(&out.target) {
            if publish {
                h.published.push(out)
            } else {
                h.sent.push(out)
            }
            return 0;
        }
        if mode == mode::TRY {
            return encode_error(ErrorCode::MailboxFull);
        }
        let op = h.new_op();
        h.held.push(Held { op, publish, out });
        i64::from(op)
    })
}

pub(crate) fn send(outbound: &[u8], mode: u32) -> i64 {
    deliver(outbound, mode, false)
}

pub(crate) fn publish(outbound: &[u8], mode: u32) -> i64 {
    deliver(outbound, mode, true)
}

pub(crate) fn request(outbound: &[u8]) -> i64 {
    let mut out: Outbound = match decode(outbound) {
        Ok(out) => out,
        Err(code) => return encode_error(code),
    };
    match with(|h| h.address(&mut out)) {
        Some(Ok(())) => {}
        Some(Err(code)) => return encode_error(code),
        None => return encode_error(ErrorCode::Internal),
    }
    let Some((op, responder)) = with(|h| {
        let op = h.new_op();
        h.requests.push(out.clone());
        (
            op,
            h.responders
                .get(&(out.target.clone(), out.msg_type.clone()))
                .cloned(),
        )
    }) else {
        return encode_error(ErrorCode::Internal);
    };
    // The responder runs with the host released: it may drive another `TestActor`.
    let result = match responder {
        Some(responder) => Completion::Reply((responder.borrow_mut())(&out)),
        None => Completion::Failed(ErrorCode::NoSuchActor),
    };
    with(|h| h.complete(op, result));
    i64::from(op)
}

pub(crate) fn reply(handle: u32, body: &[u8]) -> i64 {
    let body = decode(body).unwrap_or_else(|code| ReplyBody::Error {
        code,
        message: "the actor sent a malformed reply".into(),
    });
    with_or_fail(|h| {
        if !h.open_replies.remove(&handle) {
            return encode_error(ErrorCode::Denied);
        }
        h.replies.insert(handle, body);
        0
    })
}

pub(crate) fn subscribe(subscribe: &[u8]) -> i64 {
    let sub: Subscribe = match decode(subscribe) {
        Ok(sub) => sub,
        Err(code) => return encode_error(code),
    };
    if sub.pattern.is_empty() || sub.pattern.split('.').any(str::is_empty) {
        return encode_error(ErrorCode::Invalid);
    }
    with_or_fail(|h| {
        h.next_sub += 1;
        h.subscriptions.insert(h.next_sub, sub);
        h.next_sub as i64
    })
}

pub(crate) fn unsubscribe(id: u64) -> i64 {
    with_or_fail(|h| match h.subscriptions.remove(&id) {
        Some(_) => 0,
        None => encode_error(ErrorCode::Denied),
    })
}

pub(crate) fn cancel(op: u32) -> i64 {
    with_or_fail(|h| {
        if !h.pending_ops.remove(&op) {
            return encode_error(ErrorCode::Invalid);
        }
        h.held.retain(|held| held.op != op);
        h.event_waits.retain(|(o, _)| *o != op);
        h.completions.retain(|(o, _)| *o != op);
        h.cancelled.push(op);
        0
    })
}

pub(crate) fn state_load(buf: &mut [u8]) -> i64 {
    with_or_fail(|h| match &h.state {
        _ if h.storage_unavailable => encode_error(ErrorCode::StorageUnavailable),
        None => encode_error(ErrorCode::NotFound),
        Some(state) if state.len() > buf.len() => state.len() as i64,
        Some(state) => {
            buf[..state.len()].copy_from_slice(state);
            state.len() as i64
        }
    })
}

pub(crate) fn state_save(state: &[u8]) -> i64 {
    with_or_fail(|h| {
        let op = h.new_op();
        if h.storage_unavailable {
            h.complete(op, Completion::Failed(ErrorCode::StorageUnavailable));
        } else {
            h.state = Some(state.to_vec());
            // Durable at once: the completion is the next event.
            h.complete(op, Completion::Done);
        }
        i64::from(op)
    })
}

pub(crate) fn yield_now() -> i64 {
    with_or_fail(|h| {
        h.resume_requested = true;
        0
    })
}

pub(crate) fn stop() -> i64 {
    with_or_fail(|h| {
        h.stop_requested = true;
        0
    })
}

pub(crate) fn watch(actor: &[u8]) -> i64 {
    let Ok(actor) = std::str::from_utf8(actor) else {
        return encode_error(ErrorCode::Malformed);
    };
    with_or_fail(|h| {
        let id = h.watches.keys().next_back().map_or(1, |last| last + 1);
        h.watches.insert(id, actor.to_owned());
        id as i64
    })
}

pub(crate) fn unwatch(id: u64) -> i64 {
    with_or_fail(|h| match h.watches.remove(&id) {
        Some(_) => 0,
        None => encode_error(ErrorCode::Invalid),
    })
}

pub(crate) fn spawn(req: &[u8]) -> i64 {
    let req: bunraku_abi::Spawn = match decode(req) {
        Ok(req) => req,
        Err(code) => return encode_error(code),
    };
    with_or_fail(|h| {
        if h.spawned.iter().any(|s| s.name == req.name) {
            return encode_error(ErrorCode::AlreadyExists);
        }
        h.spawned.push(req);
        0
    })
}

pub(crate) fn actor_ref(name: &[u8]) -> i64 {
    let Ok(name) = std::str::from_utf8(name) else {
        return encode_error(ErrorCode::Malformed);
    };
    with_or_fail(|h| i64::from(h.issue_ref(name)))
}

pub(crate) fn drop_ref(handle: u32) -> i64 {
    with_or_fail(|h| match h.refs.remove(&handle) {
        Some(_) => 0,
        None => encode_error(ErrorCode::Invalid),
    })
}

pub(crate) fn timer_set(timer: &[u8]) -> i64 {
    let timer: bunraku_abi::Timer = match decode(timer) {
        Ok(timer) => timer,
        Err(code) => return encode_error(code),
    };
    if timer.period_ms == Some(0) {
        return encode_error(ErrorCode::Invalid);
    }
    with_or_fail(|h| {
        if h.timers.len() >= bunraku_abi::MAX_TIMERS {
            return encode_error(ErrorCode::TooManyPending);
        }
        h.next_timer += 1;
        h.timers.insert(h.next_timer, timer);
        h.next_timer as i64
    })
}

pub(crate) fn stream_open(outbound: &[u8]) -> i64 {
    let mut out: Outbound = match decode(outbound) {
        Ok(out) => out,
        Err(code) => return encode_error(code),
    };
    with_or_fail(|h| {
        if let Err(code) = h.address(&mut out) {
            return encode_error(code);
        }
        h.next_stream += 1;
        let id = h.next_stream;
        h.streams_out.insert(
            id,
            OutStream {
                open: out,
                items: Vec::new(),
                ended: None,
            },
        );
        i64::from(id)
    })
}

pub(crate) fn stream_write(stream: u32, batch: &[u8]) -> i64 {
    let items: Vec<Vec<u8>> = match decode(batch) {
        Ok(items) => items,
        Err(code) => return encode_error(code),
    };
    with_or_fail(|h| match h.streams_out.get_mut(&stream) {
        Some(s) if s.ended.is_none() => {
            s.items.extend(items);
            NATIVE_CREDIT
        }
        _ => encode_error(ErrorCode::Denied),
    })
}

pub(crate) fn stream_credit(stream: u32) -> i64 {
    with_or_fail(|h| match h.streams_out.get(&stream) {
        Some(s) if s.ended.is_none() => NATIVE_CREDIT,
        _ => encode_error(ErrorCode::Denied),
    })
}

pub(crate) fn stream_wait(stream: u32) -> i64 {
    with_or_fail(|h| {
        let ready = match (h.streams_out.get(&stream), h.streams_in.get(&stream)) {
            (Some(_), _) => true,
            (None, Some(s)) => !s.items.is_empty() || s.end.is_some(),
            (None, None) => return encode_error(ErrorCode::Denied),
        };
        let op = h.new_op();
        if ready {
            h.complete(op, Completion::Done);
        } else {
            // A stream the test left open without items: the reader waits as on a quiet host.
            h.stream_waits.entry(stream).or_default().push(op);
        }
        i64::from(op)
    })
}

pub(crate) fn stream_read(stream: u32, buf: &mut [u8]) -> i64 {
    with_or_fail(|h| {
        let Some(s) = h.streams_in.get_mut(&stream).filter(|s| !s.released) else {
            return encode_error(ErrorCode::Denied);
        };
        if s.items.is_empty() {
            return s.end.map_or(0, encode_error);
        }
        let mut taken = Vec::new();
        let mut out = Vec::new();
        while let Some(item) = s.items.pop_front() {
            taken.push(item);
            let encoded = encode(&taken);
            if encoded.len() > buf.len() {
                let item = taken.pop().expect("pushed above");
                s.items.push_front(item);
                if taken.is_empty() {
                    return encoded.len() as i64;
                }
                break;
            }
            out = encoded;
        }
        buf[..out.len()].copy_from_slice(&out);
        out.len() as i64
    })
}

pub(crate) fn stream_end(stream: u32, how: u32) -> i64 {
    with_or_fail(|h| {
        if let Some(s) = h.streams_out.get_mut(&stream) {
            if s.ended.is_some() {
                return encode_error(ErrorCode::Denied);
            }
            s.ended = Some(how == bunraku_abi::stream_end::ABORT);
            return 0;
        }
        match h.streams_in.get_mut(&stream) {
            Some(s) if !s.released => {
                s.released = true;
                s.cancelled = !(s.items.is_empty() && s.end.is_some());
                0
            }
            _ => encode_error(ErrorCode::Denied),
        }
    })
}

/// Natively a sleep is over at once: the test decides when time passes.
pub(crate) fn sleep(_ms: u64) -> i64 {
    with_or_fail(|h| {
        let op = h.new_op();
        h.complete(op, Completion::Done);
        i64::from(op)
    })
}

pub(crate) fn timer_cancel(id: u64) -> i64 {
    with_or_fail(|h| match h.timers.remove(&id) {
        Some(_) => 0,
        None => encode_error(ErrorCode::Invalid),
    })
}

/// A postcard value as the reply an operation completes with.
fn reply_completion<T: serde::Serialize>(value: &T) -> Completion {
    Completion::Reply(ReplyBody::Ok {
        codec: Codec::Postcard,
        payload: encode(value),
    })
}

fn batch_completion(batch: &EventBatch) -> Completion {
    reply_completion(batch)
}

/// Starts an operation whose outcome `f` decides now; the completion is the next event.
fn operation(f: impl FnOnce(&mut NativeHost) -> Completion) -> i64 {
    with_or_fail(|h| {
        let op = h.new_op();
        let result = if h.storage_unavailable {
            Completion::Failed(ErrorCode::StorageUnavailable)
        } else {
            f(h)
        };
        h.complete(op, result);
        i64::from(op)
    })
}

pub(crate) fn events_append(append: &[u8]) -> i64 {
    let append: Append = match decode(append) {
        Ok(append) => append,
        Err(code) => return encode_error(code),
    };
    if append.events.is_empty() {
        return encode_error(ErrorCode::Invalid);
    }
    operation(|h| {
        let appended = h.events.borrow_mut().append(&h.log, append);
        match appended {
            Ok(last) => reply_completion(&last),
            Err(code) => Completion::Failed(code),
        }
    })
}

pub(crate) fn events_read(read: &[u8]) -> i64 {
    let req: ReadEvents = match decode(read) {
        Ok(req) => req,
        Err(code) => return encode_error(code),
    };
    with_or_fail(|h| {
        let op = h.new_op();
        if h.storage_unavailable {
            h.complete(op, Completion::Failed(ErrorCode::StorageUnavailable));
            return i64::from(op);
        }
        let answer = h.events.borrow().read(&h.log, &req);
        match answer {
            Ok(Some(batch)) => h.complete(op, batch_completion(&batch)),
            // Completed by a later turn of this host, once an append gives it something.
            Ok(None) => h.event_waits.push((op, req)),
            Err(code) => h.complete(op, Completion::Failed(code)),
        }
        i64::from(op)
    })
}

pub(crate) fn events_snapshot(snapshot: &[u8]) -> i64 {
    let snapshot: Snapshot = match decode(snapshot) {
        Ok(snapshot) => snapshot,
        Err(code) => return encode_error(code),
    };
    let past_end = with(|h| snapshot.seq > h.events.borrow().last_seq(&h.log));
    match past_end {
        None => return encode_error(ErrorCode::Internal),
        Some(true) => return encode_error(ErrorCode::Invalid),
        Some(false) => {}
    }
    operation(|h| {
        let stored = h.events.borrow_mut().snapshot(&h.log, snapshot);
        match stored {
            Ok(()) => Completion::Done,
            Err(code) => Completion::Failed(code),
        }
    })
}

pub(crate) fn reminder_set(reminder: &[u8]) -> i64 {
    let reminder: Reminder = match decode(reminder) {
        Ok(reminder) => reminder,
        Err(code) => return encode_error(code),
    };
    if reminder.name.is_empty()
        || reminder.name.len() > 256
        || reminder.period_ms.is_some_and(|p| p < 1000)
    {
        return encode_error(ErrorCode::Invalid);
    }
    operation(|h| {
        let mut events = h.events.borrow_mut();
        let reminders = events.reminders.entry(h.address.clone()).or_default();
        reminders.insert(reminder.name.clone(), reminder);
        Completion::Done
    })
}

pub(crate) fn reminder_cancel(name: &[u8]) -> i64 {
    let Ok(name) = std::str::from_utf8(name) else {
        return encode_error(ErrorCode::Malformed);
    };
    operation(|h| {
        let mut events = h.events.borrow_mut();
        let removed = events
            .reminders
            .get_mut(&h.address)
            .and_then(|reminders| reminders.remove(name));
        match removed {
            Some(_) => Completion::Done,
            None => Completion::Failed(ErrorCode::NotFound),
        }
    })
}

pub(crate) fn set_status(status: &[u8]) -> i64 {
    if status.len() > bunraku_abi::MAX_STATUS_BYTES {
        return encode_error(ErrorCode::TooLarge);
    }
    let Ok(status) = std::str::from_utf8(status) else {
        return encode_error(ErrorCode::Malformed);
    };
    with_or_fail(|h| {
        status.clone_into(&mut h.status);
        0
    })
}

pub(crate) fn log(level: u32, line: &[u8]) -> i64 {
    let line = String::from_utf8_lossy(line).into_owned();
    // Shown by the test runner when a test fails.
    eprintln!(
        "[{}] {line}",
        crate::Level::from_raw(level).map_or("log", crate::Level::as_str)
    );
    with_or_fail(|h| {
        h.logs.push((level, line));
        0
    })
}
