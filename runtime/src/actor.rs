//! Actors: addresses, instances and the loop that drives an instance.
//!
//! - An [`ActorGroup`] is everything deployed under one name: its module, settings and one
//!   [`ActorCell`] per instance.
//! - An [`ActorCell`] is the *address* of one instance: its id, its mailbox sender and its
//!   statistics. It outlives instance restarts, and so does the mailbox.
//! - An instance is one wasmtime `Store` holding an [`ActorState`]. The cell's task
//!   ([`run_cell`]) creates instances, drives them ([`run_instance`]) and, when one traps, discards
//!   it and starts the next after a backoff.
//!
//! Driving an instance: the task enters the guest (`bunraku_run`, a synchronous call), and inside
//! that one entry the guest pulls events through the `next` import until none is ready: messages
//! from the mailbox (only while fewer handlers than the actor's concurrency are in flight) and
//! completions of operations it started (replies, waits for room). Then the task awaits the
//! mailbox, the pending operations and the stop signal, and enters the guest again. A guest that
//! waits for anything holds no thread and no native stack: its waiting handler is a future inside
//! the guest, and the operation it waits on is a future in the task.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bunraku_abi::{Completion, Descriptor, Envelope, Event, HandlerKind, TraceContext};
use futures::FutureExt;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::Notify;
use wasmtime::{Memory, Store, Trap};

use crate::host::Shared;
use crate::mailbox::{Delivery, MailboxRx, MailboxTx, ReplySlot};
use crate::manifest::{Limits, RestartPolicy};
use crate::module::ActorModule;

/// What `next` hands the guest: an event of the instance's own, or a message from its mailbox.
///
/// Not an `Event`, which holds a whole `Envelope` (264 bytes) for a timer's firing: returned from
/// `next_event` on every `next`, it was copied with a `memcpy` call each time, and read back
/// right after (a store-forwarding stall). The timer's envelope is boxed here instead; the rest
/// is a few words.
pub(crate) enum NextEvent {
    /// `Event::Start`.
    Start {
        name: String,
        instance: u32,
        config: Vec<u8>,
    },
    /// `Event::Stop`.
    Stop,
    /// `Event::Completion`.
    Completion { op: u32, result: Completion },
    /// A timer's firing: `Event::Message` with this envelope.
    Timer(Box<Envelope>),
    /// A message delivered to this instance.
    Delivered(Accepted),
}

impl NextEvent {
    /// Appends the event's wire bytes (`Event` as the ABI encodes it).
    pub(crate) fn encode_into(self, buf: &mut Vec<u8>) {
        use bunraku_abi::view::encode_event_into;
        match self {
            NextEvent::Start {
                name,
                instance,
                config,
            } => encode_event_into(
                &Event::Start {
                    name,
                    instance,
                    config,
                },
                buf,
            ),
            NextEvent::Stop => encode_event_into(&Event::Stop, buf),
            NextEvent::Completion { op, result } => {
                encode_event_into(&Event::Completion { op, result }, buf);
            }
            NextEvent::Timer(env) => encode_event_into(&Event::Message(*env), buf),
            NextEvent::Delivered(a) => {
                bunraku_abi::view::encode_message_event_into(&a.env, &a.received(), buf);
                // Written out: the next send on this thread may reuse it.
                crate::spare::keep(a.env);
            }
        }
    }
}

/// A delivery taken by an instance: the envelope as sent (shared with the other subscribers of
/// a publish) and the handles this instance issued for it.
pub(crate) struct Accepted {
    /// The envelope; its own `reply`, `attachments` and `stream` are not used.
    pub(crate) env: Arc<Envelope>,
    /// This instance's reply handle, when the sender waits for a reply.
    pub(crate) reply: Option<u32>,
    /// This instance's handles for the references that came with the message.
    pub(crate) attachments: Vec<u32>,
    /// This instance's handle to read the stream the message opens.
    pub(crate) stream: Option<u32>,
}

impl Accepted {
    /// The handles this instance issued, as the frame encodes them.
    #[inline(always)]
    fn received(&self) -> bunraku_abi::view::Received<'_> {
        bunraku_abi::view::Received {
            reply: self.reply,
            attachments: &self.attachments,
            stream: self.stream,
        }
    }

    /// The message's frame when it has no extras ([`bunraku_abi::view::plain_frame`]).
    #[inline(always)]
    pub(crate) fn plain_frame(&self) -> Option<bunraku_abi::view::PlainFrame<'_>> {
        bunraku_abi::view::plain_frame(&self.env, &self.received())
    }

    /// Done with the message once its frame is written: the envelope is kept for reuse
    /// ([`crate::spare`]).
    pub(crate) fn written(self) {
        crate::spare::keep(self.env);
    }
}

/// Most operations one instance may have pending at once.
pub(crate) const MAX_PENDING_OPS: usize = 1024;

/// A future the instance's task polls for an operation the guest started.
pub(crate) type PendingOp = Pin<Box<dyn Future<Output = (u32, Completion)> + Send>>;

pub(crate) use crate::grants::Grants;

/// What the instances of an actor read from its spec: built once per deployed or spawned actor,
/// and once per virtual actor type, whose activations all share it (an activation copies nothing
/// from its type's spec, and an idle key does not hold its own copy of the grants).
#[derive(Debug)]
pub(crate) struct Settings {
    pub limits: Limits,
    pub restart: RestartPolicy,
    /// The spec's `config` as JSON, for the `Start` event.
    pub config: Vec<u8>,
    pub grants: Grants,
    /// The instances prepared ahead that this actor's starts take, when there is one ready: its
    /// virtual actor type's, or its spawnable module's (see [`crate::prepared`]).
    pub prepared: Option<Arc<crate::prepared::Pool>>,
}

impl Settings {
    /// The settings of `spec`, whose instances start from `prepared` when it has one ready.
    pub(crate) fn of(
        spec: &crate::manifest::ActorSpec,
        prepared: Option<Arc<crate::prepared::Pool>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            limits: spec.limits.clone(),
            restart: spec.restart.clone(),
            config: spec.config_json(),
            grants: spec.grants.clone(),
            prepared,
        })
    }
}

/// Everything deployed under one name.
pub(crate) struct ActorGroup {
    pub name: Arc<str>,
    pub cells: Vec<Arc<ActorCell>>,
    pub module: Arc<ActorModule>,
    /// Limits, restart policy, config and grants, shared with every activation of the same
    /// virtual actor type.
    pub settings: Arc<Settings>,
    /// The supervisor this actor reports its exits to, once it is placed under one.
    pub supervisor: std::sync::OnceLock<crate::supervision::Link>,
    /// Instances of other actors watching this one: watch id and the watcher's address.
    pub watchers: Mutex<Vec<(u64, Arc<ActorCell>)>>,
    /// For an activation of a virtual actor type: how long it may idle before deactivation.
    pub idle_timeout: Option<Duration>,
}

impl ActorGroup {
    /// Registers a watch of this actor by `watcher` under `id`; `false` when the actor's
    /// mailboxes are closed (stopped, or an evicted activation: look the name up again).
    pub(crate) fn watch(&self, id: u64, watcher: Arc<ActorCell>) -> bool {
        let mut watchers = self.watchers.lock().unwrap();
        if self.cells.iter().all(|c| c.tx.is_closed()) {
            return false;
        }
        watchers.push((id, watcher));
        true
    }

    /// Ends watch `id`; whether it existed.
    pub(crate) fn unwatch(&self, id: u64) -> bool {
        let mut watchers = self.watchers.lock().unwrap();
        let before = watchers.len();
        watchers.retain(|(w, _)| *w != id);
        watchers.len() != before
    }

    /// Tells every watcher that an instance of this actor ended, and ends their watches.
    fn notify_down(&self, host: &Shared, cell: &ActorCell, exit: &Exit) {
        let watchers = std::mem::take(&mut *self.watchers.lock().unwrap());
        if watchers.is_empty() {
            return;
        }
        let reason = if cell.stop_requested() || cell.gate.is_held() {
            bunraku_abi::DownReason::Stopped
        } else {
            match exit {
                Exit::Stopped => bunraku_abi::DownReason::Normal,
                Exit::Failed => bunraku_abi::DownReason::Failed(cell.stats.last_failure()),
            }
        };
        for (id, watcher) in watchers {
            let down = bunraku_abi::Down {
                watch: id,
                actor: self.name.to_string(),
                instance: cell.instance,
                reason: reason.clone(),
            };
            deliver_down(host, &watcher, down);
        }
    }
}

/// Host-wide watch ids.
static NEXT_WATCH: AtomicU64 = AtomicU64::new(1);

/// A new watch id.
pub(crate) fn next_watch_id() -> u64 {
    NEXT_WATCH.fetch_add(1, Ordering::Relaxed)
}

/// Puts a [`bunraku_abi::Down`] into `watcher`'s mailbox; counted as a dead letter when the
/// mailbox is full or the watcher has no handler for it.
pub(crate) fn deliver_down(host: &Shared, watcher: &ActorCell, down: bunraku_abi::Down) {
    if !watcher.accepts(bunraku_abi::DOWN_MESSAGE) {
        watcher.dead_letter();
        return;
    }
    let out = bunraku_abi::Outbound {
        target: watcher.name.to_string(),
        msg_type: bunraku_abi::DOWN_MESSAGE.to_owned(),
        payload: bunraku_abi::encode(&down),
        ..Default::default()
    };
    let env = host.envelope(out, Vec::new(), None, None, Some("bunraku".into()), None);
    let delivery = Delivery::new(env);
    if watcher.tx.try_send(delivery).is_err() {
        watcher.dead_letter();
    }
}

impl ActorGroup {
    /// The instance that messages from a sender with this hash go to.
    pub(crate) fn pick(&self, sender_hash: u64) -> &Arc<ActorCell> {
        &self.cells[(sender_hash % self.cells.len() as u64) as usize]
    }

    /// The handler kind for a message type, if the actor handles it.
    pub(crate) fn kind_of(&self, msg_type: &str) -> Option<HandlerKind> {
        self.module.types.get(msg_type).copied()
    }

    pub(crate) fn descriptor(&self) -> &Descriptor {
        &self.module.descriptor
    }
}

/// Lifecycle of an instance slot, as `bunraku ps` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ActorPhase {
    /// Creating an instance.
    Starting = 0,
    /// Running.
    Running = 1,
    /// Waiting out the backoff before a restart.
    Restarting = 2,
    /// Stopped for good.
    Stopped = 3,
    /// A virtual actor deactivated while idle: no instance, its mailbox kept; the next message
    /// activates it again.
    Idle = 4,
}

impl ActorPhase {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Starting,
            1 => Self::Running,
            2 => Self::Restarting,
            4 => Self::Idle,
            _ => Self::Stopped,
        }
    }

    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Restarting => "restarting",
            Self::Stopped => "stopped",
            Self::Idle => "idle",
        }
    }
}

/// Counters of one instance slot.
#[derive(Default)]
pub(crate) struct ActorStats {
    pub handled: AtomicU64,
    /// Guest entries of the instances of this slot (written by the running instance's task
    /// alone): what idle trimming takes for activity.
    pub entries: AtomicU64,
    pub restarts: AtomicU64,
    pub failures: AtomicU64,
    pub dead_letters: AtomicU64,
    pub memory: AtomicU64,
    /// Operations the instance waits on (requests, sends waiting for room).
    pub pending: AtomicU64,
    /// Of those, operations that only wait for someone else's commit (a projection waiting
    /// for new events): no work the host has to drain before it stops.
    pub waiting_for_events: AtomicU64,
    pub phase: AtomicU8,
    pub last_failure: Mutex<Option<String>>,
}

impl ActorStats {
    /// The reason of the last failure (empty when there was none).
    pub(crate) fn last_failure(&self) -> String {
        self.last_failure
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_default()
    }
}

/// The idle trimmer's view of one slot (written by the trimmer alone).
#[derive(Default)]
pub(crate) struct IdleWatch {
    /// `ActorStats::entries` at the trimmer's last look.
    pub entries: AtomicU64,
    /// The trimmer's looks in a row that found no new entry.
    pub looks: std::sync::atomic::AtomicU32,
}

/// The address of one instance: survives restarts.
pub(crate) struct ActorCell {
    pub id: u64,
    pub name: Arc<str>,
    pub instance: u32,
    pub tx: MailboxTx,
    /// The module, for the message types the actor accepts.
    pub module: Arc<ActorModule>,
    /// The largest payload the actor accepts.
    pub max_message: usize,
    pub stats: ActorStats,
    stop_requested: AtomicBool,
    /// The guest asked to stop (`Ctx::stop`): the coming exit is normal.
    normal_exit: AtomicBool,
    /// The instance saved or loaded persisted state (a virtual actor may then be deactivated).
    persisted: AtomicBool,
    /// The instance is being deactivated (idle virtual actor): the slot waits for a message.
    deactivating: AtomicBool,
    /// The current instance has been entered once: its `on_start` ran (or is awaiting).
    pub(crate) booted: AtomicBool,
    /// Stop signals (a stop, a deactivation, a normal exit, a supervisor's hold): a
    /// `notify_one` each, which wakes whoever waits or else leaves one permit (signals sent
    /// while nobody waits are one). Send them with [`ActorCell::notify_stop`], which also
    /// raises [`Signals::STOP`] for the running instance.
    pub(crate) stop: Notify,
    /// What the idle trimmer saw of this slot ([`crate::trim`]).
    pub(crate) idle: IdleWatch,
    /// What the running instance's task must look at between entries: a kill, a trim, a stop.
    signals: Signals,
    /// The supervisor's hold on this instance slot.
    pub(crate) gate: crate::supervision::Gate,
    /// What the actor last said about itself (`set_status`), shown in `bunraku ps`.
    status: std::sync::Mutex<Option<Box<str>>>,
    /// Why the current instance cannot rebuild its state: its own event log failed a checksum.
    corrupt: std::sync::Mutex<Option<String>>,
}

/// Flags for the running instance's task, and the one waker that hears them.
///
/// The task waits for them in every turn of its run loop, next to its mailbox, so the waiting
/// must cost the message path next to nothing: the task registers its waker once (it keeps
/// the same waker for its life; a different one replaces it), and each later poll is one load
/// of the flags. Raising a flag, which is rare, takes the lock and wakes the task without
/// taking its waker out (unlike `AtomicWaker`, whose every registration is two
/// read-modify-writes, and tokio's `Notified`, whose every poll takes its lock). Against an
/// `AtomicWaker` for kill and trim and the stop `Notified`, both polled on every turn: about
/// 2% less per message without the SDK (BENCHMARKS §1).
#[derive(Default)]
struct Signals {
    flags: std::sync::atomic::AtomicU8,
    waker: std::sync::Mutex<Option<std::task::Waker>>,
}

impl Signals {
    /// End the running instance at once, without `on_stop` (after a stop timed out).
    const KILL: u8 = 1;
    /// Give the idle instance's rebuildable memory pages back ([`crate::trim`]).
    const TRIM: u8 = 2;
    /// A stop signal was sent ([`ActorCell::stop`] has its permit): look at it.
    const STOP: u8 = 4;

    /// Sets `flag` and wakes the registered task.
    fn raise(&self, flag: u8) {
        self.flags.fetch_or(flag, Ordering::SeqCst);
        let waker = self.waker.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(waker) = &*waker {
            waker.wake_by_ref();
        }
    }

    /// Clears `flag`; whether it was set.
    fn take(&self, flag: u8) -> bool {
        // One load first: on the message path no flag is set, and a read-modify-write is a
        // locked instruction.
        self.flags.load(Ordering::SeqCst) & flag != 0
            && self.flags.fetch_and(!flag, Ordering::SeqCst) & flag != 0
    }

    fn is_set(&self, flag: u8) -> bool {
        self.flags.load(Ordering::SeqCst) & flag != 0
    }

    /// Drops the registered waker (the instance's task keeps the cell alive, and the cell
    /// would keep the task alive through it).
    fn forget(&self) {
        self.waker.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Ready once any flag is set. `registered` is the waker this task last registered, kept
    /// by the caller across polls: registration happens only when the task's waker differs,
    /// and before the look at the flags, so a flag raised after the look wakes the task.
    fn raised<'a>(
        &'a self,
        registered: &'a mut Option<std::task::Waker>,
    ) -> impl Future<Output = ()> + 'a {
        std::future::poll_fn(move |cx| {
            if !registered.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                let waker = cx.waker().clone();
                *self.waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(waker.clone());
                *registered = Some(waker);
            }
            if self.flags.load(Ordering::SeqCst) != 0 {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
    }
}

impl ActorCell {
    pub(crate) fn new(
        id: u64,
        name: Arc<str>,
        instance: u32,
        tx: MailboxTx,
        module: Arc<ActorModule>,
        max_message: usize,
    ) -> Self {
        Self {
            id,
            name,
            instance,
            tx,
            module,
            max_message,
            stats: ActorStats::default(),
            stop_requested: AtomicBool::new(false),
            normal_exit: AtomicBool::new(false),
            persisted: AtomicBool::new(false),
            status: std::sync::Mutex::new(None),
            corrupt: std::sync::Mutex::new(None),
            deactivating: AtomicBool::new(false),
            booted: AtomicBool::new(false),
            stop: Notify::new(),
            signals: Signals::default(),
            idle: IdleWatch::default(),
            gate: crate::supervision::Gate::default(),
        }
    }

    /// Asks the instance to run `on_stop` and end; no restart follows.
    pub(crate) fn request_stop(&self) {
        self.stop_requested.store(true, Ordering::SeqCst);
        self.notify_stop();
    }

    /// Sends a stop signal: a permit on [`ActorCell::stop`] for whoever waits, and the running
    /// instance's task told to look at it.
    pub(crate) fn notify_stop(&self) {
        // The permit first: the task that sees the flag finds it.
        self.stop.notify_one();
        self.signals.raise(Signals::STOP);
    }

    /// Records that the instance has state in the store.
    pub(crate) fn mark_persisted(&self) {
        self.persisted.store(true, Ordering::Relaxed);
    }

    /// Whether the instance has state in the store.
    pub(crate) fn persisted(&self) -> bool {
        self.persisted.load(Ordering::Relaxed)
    }

    /// Sets (or with an empty string clears) the status the actor shows in `bunraku ps`.
    pub(crate) fn set_status(&self, status: &str) {
        let status = (!status.is_empty()).then(|| Box::from(status));
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) = status;
    }

    /// Records that the instance's own event log is corrupt (`error`, naming the actor and the
    /// sequence number): if the instance then fails, the messages waiting for it are refused
    /// with [`ErrorCode::Corrupt`](bunraku_abi::ErrorCode::Corrupt) instead of waiting through
    /// restarts that cannot succeed until the log is repaired.
    pub(crate) fn mark_corrupt(&self, error: String) {
        *self.corrupt.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
    }

    fn take_corrupt(&self) -> Option<String> {
        self.corrupt
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// The status the actor set, if any.
    pub(crate) fn status(&self) -> Option<String> {
        let status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        status.as_deref().map(str::to_owned)
    }

    /// Deactivates an idle virtual actor: its instance stops (running `on_stop`) and the slot
    /// waits, with its mailbox, for the next message.
    pub(crate) fn deactivate(&self) {
        self.deactivating.store(true, Ordering::SeqCst);
        self.notify_stop();
    }

    /// Ends the running instance at its next turn without waiting for its handlers or
    /// `on_stop`: their requesters hear `target failed`. A guest inside a handler is stopped by
    /// its time budget at the latest. The slot itself lives on (combine with a stop to end it).
    pub(crate) fn kill_instance(&self) {
        self.signals.raise(Signals::KILL);
    }

    /// Asks the running instance, idle, to give back the pages of its linear memory that can be
    /// rebuilt (see [`crate::trim`]); it copies them back before it next enters the guest.
    pub(crate) fn request_trim(&self) {
        self.signals.raise(Signals::TRIM);
    }

    /// Whether a trim was asked for that the instance has not taken yet.
    pub(crate) fn trim_pending(&self) -> bool {
        self.signals.is_set(Signals::TRIM)
    }

    /// The guest asks to end its instance (a normal exit): like a stop, but the slot's task reports
    /// it to the supervisor instead of ending.
    pub(crate) fn request_normal_exit(&self) {
        self.normal_exit.store(true, Ordering::SeqCst);
        self.notify_stop();
    }

    pub(crate) fn stop_requested(&self) -> bool {
        self.stop_requested.load(Ordering::SeqCst)
    }

    pub(crate) fn phase(&self) -> ActorPhase {
        ActorPhase::from_u8(self.stats.phase.load(Ordering::Relaxed))
    }

    fn set_phase(&self, phase: ActorPhase) {
        self.stats.phase.store(phase as u8, Ordering::Relaxed);
    }

    /// Messages waiting in the mailbox.
    pub(crate) fn mailbox_depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Whether the actor has a handler for a message type.
    pub(crate) fn accepts(&self, msg_type: &str) -> bool {
        self.module.types.contains_key(msg_type)
    }

    pub(crate) fn dead_letter(&self) {
        self.stats.dead_letters.fetch_add(1, Ordering::Relaxed);
    }
}

/// The mailbox side an instance reads, handed from one instance to the next.
pub(crate) struct InstanceIo {
    pub mailbox: MailboxRx,
    /// A message taken off the mailbox but not yet handed to the guest.
    pub peeked: Option<Delivery>,
}

/// What the handler currently being polled is working on.
#[derive(Default)]
pub(crate) struct TaskMeta {
    /// Actors waiting on this handler's message, oldest first.
    pub chain: Vec<u64>,
    pub msg_type: String,
    pub msg_id: u64,
    pub trace: Option<TraceContext>,
}

/// Where an instance sent last ([`ActorState::last_sent`]).
pub(crate) struct LastSent {
    /// The name sent to.
    pub name: Box<str>,
    /// Its group.
    pub group: Arc<ActorGroup>,
    /// A message type the group handles (empty until one was sent).
    pub msg_type: String,
    /// Whether this instance's grants allow sending to the name (it sent by name since the
    /// name was kept; a send through a reference needs no grant and does not tell).
    pub granted: bool,
}

/// What the instance's task tracks about a pending operation.
pub(crate) struct OpMeta {
    pub chain: Vec<u64>,
    pub msg_type: String,
    pub msg_id: u64,
    pub trace: Option<TraceContext>,
}

/// The timers of one instance: what each sends, which are armed, which fired and wait for the
/// guest. The instance's task arms what [`Timers::take_armed`] returns on the host clock and
/// calls [`Timers::fired`] when one comes due; [`ActorState::next_event`] hands due firings out
/// like mailbox messages.
#[derive(Default)]
pub(crate) struct Timers {
    live: HashMap<u64, TimerEntry>,
    next_id: u64,
    /// Timers to arm: id, when it comes due (host clock), and the generation of that arming.
    to_arm: Vec<(u64, Duration, u64)>,
    /// Firings waiting for the guest, by deadline and id (each timer at most once).
    due: VecDeque<(Duration, u64)>,
}

struct TimerEntry {
    timer: bunraku_abi::Timer,
    /// When the current arming comes due (host clock).
    at: Duration,
    /// Bumped on every arming: a firing of an older arming is ignored.
    generation: u64,
    waiting: bool,
    /// Ends the armed wake-up at once when the timer is cancelled (so cancelled timers hold no
    /// sleeping future).
    abort: Option<futures::future::AbortHandle>,
}

impl Drop for TimerEntry {
    fn drop(&mut self) {
        if let Some(abort) = &self.abort {
            abort.abort();
        }
    }
}

/// A timer's wake-up: its id and the generation it was armed with; `None` when cancelled.
pub(crate) type TimerWake = Pin<Box<dyn Future<Output = Option<(u64, u64)>> + Send>>;

impl Timers {
    /// Registers a timer that comes due at `at` (host clock); its id, or `None` past
    /// [`bunraku_abi::MAX_TIMERS`].
    pub(crate) fn set(&mut self, timer: bunraku_abi::Timer, at: Duration) -> Option<u64> {
        if self.live.len() >= bunraku_abi::MAX_TIMERS {
            return None;
        }
        self.next_id += 1;
        let id = self.next_id;
        self.live.insert(
            id,
            TimerEntry {
                timer,
                at,
                generation: 0,
                waiting: false,
                abort: None,
            },
        );
        self.to_arm.push((id, at, 0));
        Some(id)
    }

    /// Cancels timer `id`; whether this instance held it.
    pub(crate) fn cancel(&mut self, id: u64) -> bool {
        let held = self.live.remove(&id).is_some();
        if held {
            self.due.retain(|(_, d)| *d != id);
        }
        held
    }

    /// Drops every timer (the instance is stopping).
    pub(crate) fn clear(&mut self) {
        self.live.clear();
        self.due.clear();
        self.to_arm.clear();
    }

    /// The wake-ups to arm now, as futures on `clock`.
    pub(crate) fn take_armed(&mut self, clock: &Arc<dyn crate::clock::Clock>) -> Vec<TimerWake> {
        let mut wakes = Vec::with_capacity(self.to_arm.len());
        for (id, at, generation) in self.to_arm.drain(..) {
            let Some(entry) = self.live.get_mut(&id) else {
                continue;
            };
            let (abort, registration) = futures::future::AbortHandle::new_pair();
            entry.abort = Some(abort);
            // Until the deadline itself: a delay computed from an earlier reading of the clock
            // would move the deadline when the clock moves before the sleep is registered.
            let sleep = clock.sleep_until(at);
            let wake = futures::future::Abortable::new(sleep, registration);
            wakes.push(
                Box::pin(async move { wake.await.ok().map(|()| (id, generation)) }) as TimerWake,
            );
        }
        wakes
    }

    /// Timer `id` of `generation` came due at host time `now`: queues its firing (once) and
    /// re-arms a periodic one for its next period after `now` (periods that passed meanwhile
    /// are skipped: their firings merge into the one queued).
    pub(crate) fn fired(&mut self, id: u64, generation: u64, now: Duration) {
        let Some(entry) = self.live.get_mut(&id) else {
            return;
        };
        if entry.generation != generation {
            return;
        }
        let key = (entry.at, id);
        let queue = !entry.waiting;
        entry.waiting = true;
        if let Some(ms) = entry.timer.period_ms {
            let period = Duration::from_millis(ms);
            let behind = now.saturating_sub(entry.at).as_nanos() / period.as_nanos();
            let skipped = u32::try_from(behind).unwrap_or(u32::MAX).saturating_add(1);
            entry.at += period.saturating_mul(skipped);
            entry.generation += 1;
            self.to_arm.push((id, entry.at, entry.generation));
        }
        // A one-shot timer is gone once its firing is handed out (see `take_due`).
        if queue {
            // Firings that came due together are handed out in deadline order (`due` holds the
            // deadline each firing was queued for).
            let at = self
                .due
                .iter()
                .position(|d| *d > key)
                .unwrap_or(self.due.len());
            self.due.insert(at, key);
        }
    }

    /// The next firing for the guest: the timer's message type, codec and payload.
    fn take_due(&mut self) -> Option<(String, bunraku_abi::Codec, Vec<u8>)> {
        while let Some((_, id)) = self.due.pop_front() {
            let Some(entry) = self.live.get_mut(&id) else {
                continue;
            };
            entry.waiting = false;
            let fired = (
                entry.timer.msg_type.clone(),
                entry.timer.codec,
                entry.timer.payload.clone(),
            );
            if entry.timer.period_ms.is_none() {
                self.live.remove(&id);
            }
            return Some(fired);
        }
        None
    }

    /// Whether wake-ups wait to be armed ([`Timers::take_armed`]).
    pub(crate) fn has_to_arm(&self) -> bool {
        !self.to_arm.is_empty()
    }

    /// Whether a firing waits for the guest.
    pub(crate) fn has_due(&self) -> bool {
        !self.due.is_empty()
    }
}

/// Events ready for `next`, besides mailbox messages.
pub(crate) enum Ready {
    Start,
    Completion(u32, Completion),
    Stop,
}

/// The data of one instance's `Store`.
pub(crate) struct ActorState {
    pub host: Arc<Shared>,
    pub group: Arc<ActorGroup>,
    pub cell: Arc<ActorCell>,
    pub limits: crate::engine::MemoryLimiter,
    pub io: InstanceIo,
    pub memory: Option<Memory>,
    pub ready: VecDeque<Ready>,
    /// An encoded event that did not fit the guest's buffer yet.
    pub staged: Option<Vec<u8>>,
    /// Whether nothing else was ready when [`ActorState::next_event`] last handed out an event:
    /// `next` flags its length with [`bunraku_abi::NEXT_LAST`] then.
    pub last: bool,
    pub scratch: Vec<u8>,
    pub replies: HashMap<u32, ReplySlot>,
    next_handle: u32,
    /// This instance's actor references: handle to the actor's name. Handles are issued by
    /// `actor_ref` and on delivery of attachments; the guest only ever holds the numbers.
    pub refs: HashMap<u32, Arc<str>>,
    next_ref: u32,
    /// Streams this instance writes or reads, by handle. Dropped with the instance, which ends
    /// each for the other side (`peer failed`).
    pub streams: HashMap<u32, crate::streams::Endpoint>,
    next_stream: u32,
    pub ops: HashMap<u32, OpMeta>,
    next_op: u32,
    pub new_ops: Vec<PendingOp>,
    pub current: TaskMeta,
    /// Names this instance sent to, resolved (looked up on every send; FxHash, as the keys are
    /// short and the table is this instance's own: colliding names only slow their sender).
    pub resolved: rustc_hash::FxHashMap<String, Arc<ActorGroup>>,
    /// The name this instance sent to last, its group (as `resolved` has it), the last message
    /// type that group was found to handle, and whether the grants allowed the name: `send`
    /// finds the group by comparing the name, without hashing it or counting a reference, and
    /// skips the type look-up and the grant check when the type and the name compare equal.
    pub last_sent: Option<LastSent>,
    pub subscriptions: Vec<u64>,
    /// Timers this instance set (they end with it).
    pub timers: Timers,
    /// Watches this instance made, with the watched group (they end with the instance).
    pub watches: Vec<(u64, Arc<ActorGroup>)>,
    pub stdio: [Vec<u8>; 2],
    pub budget_ticks: u64,
    pub in_flight: u32,
    /// Mailbox messages handed out in the current guest entry (bounded by `max_batch`).
    pub batch: usize,
    /// The guest asked, in the current entry, to be entered again (`yield_now`).
    pub resume: bool,
    /// Hash of this actor's name: picks the target instance so one sender stays on one instance.
    pub sender_hash: u64,
}

impl ActorState {
    pub(crate) fn new(
        host: Arc<Shared>,
        group: Arc<ActorGroup>,
        cell: Arc<ActorCell>,
        io: InstanceIo,
    ) -> Self {
        let limits = host.engine.memory_limiter(group.settings.limits.memory);
        let tick = host.engine.epoch_tick().as_nanos().max(1);
        let budget_ticks =
            (group.settings.limits.time_budget.as_nanos().div_ceil(tick)).max(1) as u64;
        let sender_hash = hash_name(&group.name);
        Self {
            host,
            group,
            cell,
            limits,
            io,
            memory: None,
            ready: VecDeque::new(),
            staged: None,
            last: false,
            scratch: Vec::new(),
            replies: HashMap::new(),
            next_handle: 0,
            refs: HashMap::new(),
            next_ref: 0,
            streams: HashMap::new(),
            next_stream: 0,
            ops: HashMap::new(),
            next_op: 0,
            new_ops: Vec::new(),
            current: TaskMeta::default(),
            resolved: rustc_hash::FxHashMap::default(),
            last_sent: None,
            subscriptions: Vec::new(),
            timers: Timers::default(),
            watches: Vec::new(),
            stdio: [Vec::new(), Vec::new()],
            budget_ticks,
            in_flight: 0,
            batch: 0,
            resume: false,
            sender_hash,
        }
    }

    /// Binds a prepared instance (made for a placeholder of its virtual actor type or spawnable
    /// module, see [`crate::prepared`]) to the actor `group`, slot `cell` and its mailbox.
    /// Everything else a fresh instance has is the same for every actor started from them.
    pub(crate) fn bind(&mut self, group: &Arc<ActorGroup>, cell: &Arc<ActorCell>, io: InstanceIo) {
        self.group = group.clone();
        self.cell = cell.clone();
        self.io = io;
        self.sender_hash = hash_name(&group.name);
    }

    /// Registers a pending operation started by the handler being polled.
    pub(crate) fn start_op(
        &mut self,
        fut: impl Future<Output = Completion> + Send + 'static,
    ) -> Result<u32, bunraku_abi::ErrorCode> {
        if self.ops.len() >= MAX_PENDING_OPS {
            return Err(bunraku_abi::ErrorCode::TooManyPending);
        }
        self.next_op = self.next_op.wrapping_add(1).max(1);
        let op = self.next_op;
        self.ops.insert(
            op,
            OpMeta {
                chain: self.current.chain.clone(),
                msg_type: self.current.msg_type.clone(),
                msg_id: self.current.msg_id,
                trace: self.current.trace,
            },
        );
        self.new_ops.push(Box::pin(fut.map(move |c| (op, c))));
        Ok(op)
    }

    /// The next event for the guest, if one may be handed out now.
    #[inline(always)]
    pub(crate) fn next_event(&mut self, in_flight: u32) -> Option<NextEvent> {
        self.in_flight = in_flight;
        self.last = false;
        while let Some(ready) = self.ready.pop_front() {
            match ready {
                Ready::Start => {
                    return Some(NextEvent::Start {
                        name: self.group.name.to_string(),
                        instance: self.cell.instance,
                        config: self.group.settings.config.clone(),
                    });
                }
                Ready::Stop => return Some(NextEvent::Stop),
                Ready::Completion(op, result) => {
                    // A cancelled operation's completion is dropped.
                    let Some(meta) = self.ops.remove(&op) else {
                        continue;
                    };
                    self.current = TaskMeta {
                        chain: meta.chain,
                        msg_type: meta.msg_type,
                        msg_id: meta.msg_id,
                        trace: meta.trace,
                    };
                    return Some(NextEvent::Completion { op, result });
                }
            }
        }
        if in_flight as usize >= self.group.settings.limits.concurrency
            || self.batch >= self.group.settings.limits.max_batch
        {
            return None;
        }
        if let Some((msg_type, codec, payload)) = self.timers.take_due() {
            self.batch += 1;
            return Some(NextEvent::Timer(Box::new(
                self.timer_envelope(msg_type, codec, payload),
            )));
        }
        let delivery = match self.io.peeked.take() {
            Some(d) => d,
            None => self.io.mailbox.try_recv()?,
        };
        self.batch += 1;
        // Ready events and due timers went first, so the mailbox decides, as it was when the
        // delivery was taken (what came since, the run loop finds once the guest returns); or
        // the batch is full, and `next` would hand out no more messages in this entry.
        self.last = self.io.mailbox.drained() || self.batch >= self.group.settings.limits.max_batch;
        Some(NextEvent::Delivered(self.accept(delivery)))
    }

    /// The envelope of a timer's firing: a message from this actor to itself. Not counted as
    /// handled (timers are not activity).
    fn timer_envelope(
        &mut self,
        msg_type: String,
        codec: bunraku_abi::Codec,
        payload: Vec<u8>,
    ) -> Envelope {
        let out = bunraku_abi::Outbound {
            msg_type,
            codec,
            payload,
            ..Default::default()
        };
        let env = self.host.envelope(
            out,
            Vec::new(),
            None,
            None,
            Some(self.group.name.to_string()),
            None,
        );
        self.current = TaskMeta {
            chain: Vec::new(),
            msg_type: env.msg_type.clone(),
            msg_id: env.id,
            trace: None,
        };
        env
    }

    /// Takes a delivery for the guest: keeps its reply slot and issues this instance's handles
    /// for its reply, references and stream, next to the (possibly shared) envelope.
    #[inline(always)]
    fn accept(&mut self, delivery: Delivery) -> Accepted {
        let Delivery { env, reply, extra } = delivery;
        let (refs, stream) = match extra {
            Some(extra) => (Some(extra.refs), extra.stream),
            None => (None, None),
        };
        let mut accepted = Accepted {
            reply: None,
            attachments: Vec::new(),
            stream: None,
            env,
        };
        if let Some(slot) = reply {
            self.next_handle = self.next_handle.wrapping_add(1).max(1);
            self.replies.insert(self.next_handle, slot);
            accepted.reply = Some(self.next_handle);
        }
        let env = &*accepted.env;
        // Most messages carry no references (no `Extra`): nothing to make or drop for them.
        if let Some(refs) = refs {
            for name in refs.into_vec() {
                match self.issue_ref(name) {
                    Some(handle) => accepted.attachments.push(handle),
                    None => {
                        crate::grants::log_denial(
                            self,
                            &format!(
                                "an actor reference attached to `{}` was dropped: the instance \
                                 holds {} references already",
                                env.msg_type,
                                bunraku_abi::MAX_REFS
                            ),
                        );
                        self.cell.dead_letter();
                    }
                }
            }
        }
        if let Some(stream) = stream {
            // Refused past the table's size: the writer's next call gets `peer failed`.
            accepted.stream = self.add_stream(crate::streams::Endpoint {
                stream,
                writer: false,
            });
        }
        self.current.chain.clone_from(&env.chain);
        self.current.msg_type.clone_from(&env.msg_type);
        self.current.msg_id = env.id;
        self.current.trace = env.trace;
        // Only the task that runs this slot writes the counter: no read-modify-write needed.
        let handled = &self.cell.stats.handled;
        handled.store(handled.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        accepted
    }

    /// Gives back the spare capacity of this instance's host-side tables and buffers, keeping
    /// their contents: an idle instance's are mostly empty, yet keep what its busiest moment
    /// needed (a reply table, an op table, the event buffer). Called when it is trimmed.
    pub(crate) fn shrink_idle(&mut self) {
        self.ready.shrink_to_fit();
        self.scratch = Vec::new();
        self.replies.shrink_to_fit();
        self.refs.shrink_to_fit();
        self.streams.shrink_to_fit();
        self.ops.shrink_to_fit();
        self.new_ops.shrink_to_fit();
        self.resolved.shrink_to_fit();
        self.subscriptions.shrink_to_fit();
        self.watches.shrink_to_fit();
        self.stdio.iter_mut().for_each(Vec::shrink_to_fit);
    }

    /// A new handle in this instance's stream table; `None` when it is full (the endpoint is
    /// dropped, which fails the stream for the other side).
    pub(crate) fn add_stream(&mut self, endpoint: crate::streams::Endpoint) -> Option<u32> {
        if self.streams.len() >= crate::imports::streams::MAX_STREAMS {
            return None;
        }
        loop {
            self.next_stream = self.next_stream.wrapping_add(1).max(1);
            if let std::collections::hash_map::Entry::Vacant(v) =
                self.streams.entry(self.next_stream)
            {
                v.insert(endpoint);
                return Some(self.next_stream);
            }
        }
    }

    /// A new handle in this instance's reference table for the actor `name`; `None` when the
    /// table is full.
    pub(crate) fn issue_ref(&mut self, name: Arc<str>) -> Option<u32> {
        if self.refs.len() >= bunraku_abi::MAX_REFS {
            return None;
        }
        loop {
            self.next_ref = self.next_ref.wrapping_add(1).max(1);
            if let std::collections::hash_map::Entry::Vacant(v) = self.refs.entry(self.next_ref) {
                v.insert(name);
                return Some(self.next_ref);
            }
        }
    }

    pub(crate) fn push_completion(&mut self, op: u32, result: Completion) {
        self.ready.push_back(Ready::Completion(op, result));
    }
}

/// A stable hash of a name (FNV-1a), so instance choice does not change between runs.
pub(crate) fn hash_name(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// How an instance ended.
enum Exit {
    Stopped,
    /// Recorded in the cell's statistics before the instance's requesters were told.
    Failed,
}

/// Runs one instance slot until it is stopped: creates instances and, when one ends, either
/// reports the exit to the actor's supervisor and waits at the slot's gate for its decision, or
/// (without a supervisor) restarts a failed instance after a backoff.
pub(crate) async fn run_cell(
    host: Arc<Shared>,
    group: Arc<ActorGroup>,
    cell: Arc<ActorCell>,
    mut io: InstanceIo,
) {
    let mut attempt: u32 = 0;
    let mut first = true;
    let mut reactivating = false;
    loop {
        if cell.stop_requested() {
            break;
        }
        if cell.gate.is_held() {
            cell.set_phase(ActorPhase::Restarting);
            tokio::select! {
                _ = cell.gate.released() => {}
                // A stop, or a leftover signal: look again.
                _ = cell.stop.notified() => continue,
            }
        }
        // A signal left over from a hold or a normal exit must not stop the new instance.
        let _ = cell.stop.notified().now_or_never();
        // Kill and trim were for the instance that ended. A stop flag may stay: the run loop
        // goes by the permit, which was just taken.
        cell.signals.take(Signals::KILL);
        cell.signals.take(Signals::TRIM);
        if cell.stop_requested() {
            break;
        }
        // Before un-parking: whoever sees the slot un-parked sees `booted` reset.
        cell.booted.store(false, Ordering::SeqCst);
        cell.gate.set_parked(false);
        if cell.gate.is_held() {
            // The supervisor held the gate after the check above, saw the slot parked and took
            // it for stopped; its stop signal may be the one just swallowed. Park again and
            // wait for its decision, as if this instance had run and stopped.
            cell.gate.set_parked(true);
            continue;
        }
        cell.normal_exit.store(false, Ordering::SeqCst);
        if !first && !reactivating {
            cell.stats.restarts.fetch_add(1, Ordering::Relaxed);
        }
        first = false;
        reactivating = false;
        cell.set_phase(ActorPhase::Starting);
        let started = host.clock.now();
        let (exit, returned) = run_instance(&host, &group, &cell, io).await;
        cell.signals.forget();
        io = returned;
        if let (Exit::Failed, Some(reason)) = (&exit, cell.take_corrupt()) {
            refuse_queued(&cell, &mut io, &reason);
        }
        if cell.deactivating.swap(false, Ordering::SeqCst)
            && matches!(exit, Exit::Stopped)
            && !cell.stop_requested()
        {
            // Deactivated while idle: gone from the registry, or (watched) no instance until
            // the next message arrives.
            if host.evict(&group, &mut io) {
                cell.set_phase(ActorPhase::Stopped);
                return;
            }
            cell.set_phase(ActorPhase::Idle);
            cell.gate.set_parked(true);
            cell.persisted.store(false, Ordering::Relaxed);
            tokio::select! {
                next = io.mailbox.recv() => match next {
                    Some(delivery) => io.peeked = Some(delivery),
                    None => break,
                },
                // A stop (checked at the top of the loop).
                _ = cell.stop.notified() => {}
            }
            reactivating = true;
            continue;
        }
        group.notify_down(&host, &cell, &exit);
        if cell.stop_requested() {
            break;
        }
        let exit = match exit {
            // Stopped (or killed, or failed while stopping) at its supervisor's request: wait
            // at the gate; the supervisor already decided.
            _ if cell.gate.is_held() => {
                cell.gate.set_parked(true);
                continue;
            }
            Exit::Stopped => crate::supervisor::Exit::Normal,
            Exit::Failed => crate::supervisor::Exit::Failure(cell.stats.last_failure()),
        };
        if let Some(supervisor) = group.supervisor.get() {
            cell.gate.hold();
            cell.gate.set_parked(true);
            supervisor.report(exit);
            continue;
        }
        if !exit.is_abnormal() {
            // A normal exit without a supervisor ends the actor.
            break;
        }
        if host.clock.now().saturating_sub(started) >= group.settings.restart.reset_after {
            attempt = 0;
        }
        let delay = backoff_delay(&group.settings.restart, attempt, host.entropy.next_u64());
        attempt = attempt.saturating_add(1);
        cell.set_phase(ActorPhase::Restarting);
        cell.gate.set_parked(true);
        tokio::select! {
            _ = host.clock.sleep(delay) => {}
            _ = cell.stop.notified() => break,
        }
    }
    cell.gate.set_parked(true);
    cell.set_phase(ActorPhase::Stopped);
    // Messages still queued are dead letters; dropping them tells waiting requesters.
    io.mailbox.close();
    let mut dropped = io.peeked.take().map_or(0, |_| 1);
    while io.mailbox.try_recv().is_some() {
        dropped += 1;
    }
    cell.stats
        .dead_letters
        .fetch_add(dropped, Ordering::Relaxed);
}

/// Answers every message waiting for `cell` with a `corrupt` error (its instance cannot rebuild
/// its state), counting them as dead letters, and makes `reason` its last failure.
fn refuse_queued(cell: &ActorCell, io: &mut InstanceIo, reason: &str) {
    tracing::error!(actor = %cell.name, instance = cell.instance, "{reason}");
    *cell.stats.last_failure.lock().unwrap() = Some(reason.to_owned());
    let mut refused = 0;
    let queued = io.peeked.take().into_iter();
    for delivery in queued.chain(std::iter::from_fn(|| io.mailbox.try_recv())) {
        refused += 1;
        if let Some(reply) = delivery.reply {
            let _ = reply.send(bunraku_abi::ReplyBody::Error {
                code: bunraku_abi::ErrorCode::Corrupt,
                message: reason.to_owned(),
            });
        }
    }
    cell.stats
        .dead_letters
        .fetch_add(refused, Ordering::Relaxed);
}

/// The delay before restart number `attempt` (0-based): exponential from the initial delay,
/// capped, with `jitter` as a fraction of random variation either way.
pub(crate) fn backoff_delay(policy: &RestartPolicy, attempt: u32, random: u64) -> Duration {
    let base = policy
        .backoff_initial
        .saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
        .min(policy.backoff_max);
    let unit = (random >> 11) as f64 / (1u64 << 53) as f64; // uniform in [0, 1)
    let factor = 1.0 + policy.jitter * (2.0 * unit - 1.0);
    base.mul_f64(factor.max(0.0)).min(policy.backoff_max)
}

async fn run_instance(
    host: &Arc<Shared>,
    group: &Arc<ActorGroup>,
    cell: &Arc<ActorCell>,
    io: InstanceIo,
) -> (Exit, InstanceIo) {
    let begin = std::time::Instant::now();
    let prepared = group.settings.prepared.as_ref().and_then(|p| p.take());
    let (mut store, run, starting) = match prepared {
        Some(mut prepared) => {
            prepared.store.data_mut().bind(group, cell, io);
            (
                prepared.store,
                prepared.run,
                (begin.elapsed(), Duration::ZERO, true),
            )
        }
        None => {
            let mut store = new_store(host, group, cell, io);
            let created = std::time::Instant::now();
            let run = match group.module.instantiate(&mut store) {
                Ok(run) => run,
                Err(reason) => return finish(store, Err(reason)),
            };
            (store, run, (created - begin, created.elapsed(), false))
        }
    };
    let budget = store.data().budget_ticks;
    // Until the first entry returned: the stages of this start (`Host::totals`).
    let mut starting = Some(starting);
    cell.set_phase(ActorPhase::Running);
    store.data_mut().ready.push_back(Ready::Start);
    let mut pending: FuturesUnordered<PendingOp> = FuturesUnordered::new();
    let mut timers: FuturesUnordered<TimerWake> = FuturesUnordered::new();
    let mut stopping = false;
    let concurrency = group.settings.limits.concurrency as u32;
    // One waiter for the stop signal, looked at when `Signals::STOP` says one was sent (and once
    // at first, for a permit left before this instance ran): polling it on every turn took the
    // `Notify`'s lock twice per message.
    let mut stop_signal = std::pin::pin!(cell.stop.notified());
    let mut look_at_stop = true;
    // The waker this task registered for its signals (the same for the task's life).
    let mut registered = None;
    // The pages an idle trim dropped, to copy back before the guest runs again.
    let mut trimmed: Option<crate::memory::Trimmed> = None;

    loop {
        if let Some(t) = trimmed.take() {
            restore_trimmed(&mut store, group, t);
        }
        store.set_epoch_deadline(budget);
        store.data_mut().batch = 0;
        // Timed only until the first entry returned: no clock read on the message path.
        let entered = starting.is_some().then(std::time::Instant::now);
        match run.call(&mut store, ()) {
            Ok(in_flight) => {
                store.data_mut().in_flight = in_flight.max(0) as u32;
                // The first entry ran `on_start` (or started it, if it awaits something). Only
                // this task sets the flag, so a plain load tells whether it is set already: a
                // sequentially consistent store on every entry is a locked instruction.
                if !cell.booted.load(Ordering::Relaxed) {
                    cell.booted.store(true, Ordering::SeqCst);
                }
                // This task alone writes the counter: no read-modify-write needed.
                let entries = &cell.stats.entries;
                entries.store(entries.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
                if let (Some((create, instantiate, prepared)), Some(entered)) =
                    (starting.take(), entered)
                {
                    host.starts
                        .record(create, instantiate, entered.elapsed(), prepared);
                }
            }
            Err(err) => {
                let reason = describe_trap(&store, &err);
                return finish(store, Err(reason));
            }
        }
        let st = store.data_mut();
        if !st.new_ops.is_empty() {
            pending.extend(st.new_ops.drain(..));
        }
        if st.timers.has_to_arm() {
            timers.extend(st.timers.take_armed(&host.clock));
        }
        cell.stats
            .pending
            .store(pending.len() as u64, Ordering::Relaxed);
        if let Some(size) = st.limits.take_resized() {
            cell.stats.memory.store(size as u64, Ordering::Relaxed);
        }
        let st = store.data_mut();
        if stopping && st.in_flight == 0 && st.ready.is_empty() {
            return finish(store, Ok(()));
        }
        if st.timers.has_due() && st.in_flight < concurrency && !stopping {
            // A firing is waiting and the guest can take it: enter again at once.
            continue;
        }
        // The guest asked to be entered again (`yield_now`): it is, once the other tasks of
        // this lane had their turn, unless a kill, a stop or an event comes first.
        let resume = std::mem::take(&mut st.resume);
        // Wait for something to enter the guest for; a trim request alone is handled here.
        loop {
            let st = store.data_mut();
            let can_take = !stopping && st.in_flight < concurrency && st.io.peeked.is_none();
            let mut killed = false;
            let mut trim = false;
            // Whether the wake gave the guest something to do (all but a signal).
            let mut woke = true;
            if std::mem::take(&mut look_at_stop)
                && !stopping
                && stop_signal.as_mut().now_or_never().is_some()
            {
                stopping = true;
                begin_stop(st, &mut timers);
                break;
            }
            tokio::select! {
                biased;
                () = cell.signals.raised(&mut registered) => {
                    killed = cell.signals.take(Signals::KILL);
                    trim = cell.signals.take(Signals::TRIM);
                    // Its permit decides (the flag may be left from a signal already taken).
                    look_at_stop = cell.signals.take(Signals::STOP);
                    woke = false;
                }
                Some(wake) = timers.next(), if !timers.is_empty() => {
                    if let Some((id, generation)) = wake {
                        st.timers.fired(id, generation, host.clock.now());
                    }
                }
                Some((op, result)) = pending.next(), if !pending.is_empty() => {
                    st.push_completion(op, result);
                }
                msg = st.io.mailbox.recv(), if can_take => match msg {
                    Some(d) => st.io.peeked = Some(d),
                    None => {
                        stopping = true;
                begin_stop(st, &mut timers);
                    }
                },
                () = tokio::task::yield_now(), if resume => {}
            }
            if killed {
                return finish(store, Ok(()));
            }
            // Hand every completion and timer firing that is already there to the same guest
            // entry (polling an empty set is not free: it registers a waker).
            while !pending.is_empty()
                && let Some(Some((op, result))) = pending.next().now_or_never()
            {
                st.push_completion(op, result);
            }
            while !timers.is_empty()
                && let Some(Some(wake)) = timers.next().now_or_never()
            {
                if let Some((id, generation)) = wake {
                    st.timers.fired(id, generation, host.clock.now());
                }
            }
            if woke || !st.ready.is_empty() || st.timers.has_due() {
                break;
            }
            // Only a trim request: give back what can be rebuilt, and wait again. Whatever comes
            // next enters the guest, and the pages come back first (top of the outer loop). Not
            // when the guest ran since the trimmer looked (the request waited out a long entry).
            let idle_since_look = cell.idle.entries.load(Ordering::Relaxed)
                == cell.stats.entries.load(Ordering::Relaxed);
            if trim && trimmed.is_none() && idle_since_look {
                trimmed = trim_idle(&mut store, group);
                store.data_mut().shrink_idle();
            }
        }
    }
}

/// Starts stopping the instance (the run loop sets its `stopping`): no more timer firings, and
/// `Stop` for the guest next.
fn begin_stop(st: &mut ActorState, timers: &mut FuturesUnordered<TimerWake>) {
    st.timers.clear();
    timers.clear();
    st.ready.push_back(Ready::Stop);
}

/// Gives back the pages of an idle instance's memory that can be rebuilt (zero, or equal to
/// the module's image); `None` when nothing needs restoring.
fn trim_idle(store: &mut Store<ActorState>, group: &ActorGroup) -> Option<crate::memory::Trimmed> {
    let memory = store.data().memory?;
    let image = group.module.image()?;
    let slots = store.data().host.engine.slots().clone();
    match slots.trim(memory.data_mut(&mut *store), image) {
        Ok(trimmed) => {
            tracing::trace!(actor = %store.data().cell.name, pages = trimmed.dropped, "trimmed idle memory");
            trimmed.needs_restore().then_some(trimmed)
        }
        Err(e) => {
            tracing::debug!(actor = %store.data().cell.name, "cannot trim idle memory: {e}");
            None
        }
    }
}

/// Copies back the image pages an idle trim dropped, before the guest runs again.
fn restore_trimmed(
    store: &mut Store<ActorState>,
    group: &ActorGroup,
    trimmed: crate::memory::Trimmed,
) {
    let memory = store
        .data()
        .memory
        .expect("a trimmed instance has a memory");
    let image = group
        .module
        .image()
        .expect("a trimmed instance's module has an image");
    let slots = store.data().host.engine.slots().clone();
    slots.restore(trimmed, memory.data_mut(&mut *store), image);
}

/// A store for a new instance of `group` in slot `cell`, with its memory limiter and time
/// budget set; not instantiated yet.
pub(crate) fn new_store(
    host: &Arc<Shared>,
    group: &Arc<ActorGroup>,
    cell: &Arc<ActorCell>,
    io: InstanceIo,
) -> Store<ActorState> {
    let state = ActorState::new(host.clone(), group.clone(), cell.clone(), io);
    let budget = state.budget_ticks;
    let mut store = Store::new(host.engine.wasmtime(), state);
    store.limiter(|s| &mut s.limits);
    store.epoch_deadline_trap();
    store.set_epoch_deadline(budget);
    store
}

/// Ends an instance: records a failure, drops its subscriptions and pending replies (their
/// requesters hear `target failed`) and hands the mailbox back.
fn finish(mut store: Store<ActorState>, exit: Result<(), String>) -> (Exit, InstanceIo) {
    crate::wasi::flush_lines(store.data_mut(), 0, true);
    crate::wasi::flush_lines(store.data_mut(), 1, true);
    let exit = match exit {
        Ok(()) => Exit::Stopped,
        Err(reason) => {
            let cell = &store.data().cell;
            tracing::warn!(actor = %cell.name, instance = cell.instance, "{reason}");
            store.data().host.logs.emit(
                &cell.name,
                cell.instance,
                bunraku_abi::level::ERROR,
                &reason,
            );
            cell.stats.failures.fetch_add(1, Ordering::Relaxed);
            *cell.stats.last_failure.lock().unwrap() = Some(reason);
            Exit::Failed
        }
    };
    let state = store.into_data();
    state.host.pubsub.unsubscribe(&state.subscriptions);
    for (id, target) in &state.watches {
        target.unwatch(*id);
    }
    (exit, state.io)
}

/// A readable reason for a trap, naming the message it belongs to.
pub(crate) fn describe_trap(store: &Store<ActorState>, err: &wasmtime::Error) -> String {
    let st = store.data();
    let during = if st.current.msg_type.is_empty() {
        "while starting".to_string()
    } else {
        format!(
            "while handling `{}` (message {})",
            st.current.msg_type, st.current.msg_id
        )
    };
    let what = match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => format!(
            "exceeded its time budget of {} ms",
            st.group.settings.limits.time_budget.as_millis()
        ),
        Some(trap) => format!("trapped: {trap}"),
        None => format!("failed: {}", err.root_cause()),
    };
    // A guest allocator aborts when growth is refused: name the limit, not just the abort.
    let what = match st.limits.refused() {
        Some(refused) => format!("{what} after {refused}"),
        None => what,
    };
    format!(
        "actor `{}` instance {} {what} {during}",
        st.cell.name, st.cell.instance
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_to_the_cap_with_bounded_jitter() {
        let policy = RestartPolicy {
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_millis(1000),
            reset_after: Duration::from_secs(30),
            jitter: 0.0,
        };
        let delays: Vec<_> = (0..6)
            .map(|a| backoff_delay(&policy, a, 0).as_millis())
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        let jittery = RestartPolicy {
            jitter: 0.5,
            ..policy
        };
        for r in [0, u64::MAX / 3, u64::MAX] {
            let d = backoff_delay(&jittery, 1, r).as_millis();
            assert!((100..=300).contains(&d), "{d}");
        }
    }

    #[test]
    fn name_hash_is_stable_across_runs() {
        assert_eq!(hash_name(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(hash_name("a"), 0xaf63_dc4c_8601_ec8c);
    }

    /// Counts its wakes.
    struct Wakes(std::sync::atomic::AtomicUsize);

    impl futures::task::ArcWake for Wakes {
        fn wake_by_ref(this: &Arc<Self>) {
            this.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn wakes(w: &Arc<Wakes>) -> usize {
        w.0.load(Ordering::SeqCst)
    }

    #[test]
    fn a_signal_raised_while_the_task_waits_wakes_it_and_each_flag_is_taken_once() {
        let signals = Signals::default();
        let counter = Arc::new(Wakes(Default::default()));
        let waker = futures::task::waker(counter.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        let mut registered = None;
        {
            let mut raised = std::pin::pin!(signals.raised(&mut registered));
            assert!(raised.as_mut().poll(&mut cx).is_pending());
            // Polled again with the same waker: still waiting, nothing woken.
            assert!(raised.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(wakes(&counter), 0);
        // From another thread, as a supervisor's kill or the trimmer's request comes.
        std::thread::scope(|s| {
            s.spawn(|| signals.raise(Signals::KILL));
        });
        assert_eq!(wakes(&counter), 1, "the registered task is woken");
        // The waker stays registered: a second flag wakes the task again.
        signals.raise(Signals::TRIM);
        assert_eq!(wakes(&counter), 2);
        let mut raised = std::pin::pin!(signals.raised(&mut registered));
        assert!(raised.as_mut().poll(&mut cx).is_ready());
        assert!(signals.take(Signals::KILL));
        assert!(!signals.take(Signals::KILL), "taken once");
        assert!(!signals.take(Signals::STOP), "never raised");
        assert!(signals.is_set(Signals::TRIM));
        assert!(signals.take(Signals::TRIM));
        assert!(
            raised.as_mut().poll(&mut cx).is_pending(),
            "all flags taken"
        );
    }

    #[test]
    fn a_task_that_polls_with_another_waker_is_the_one_woken() {
        let signals = Signals::default();
        let (first, second) = (
            Arc::new(Wakes(Default::default())),
            Arc::new(Wakes(Default::default())),
        );
        let mut registered = None;
        for counter in [&first, &second] {
            let waker = futures::task::waker(counter.clone());
            let mut raised = std::pin::pin!(signals.raised(&mut registered));
            let poll = raised
                .as_mut()
                .poll(&mut std::task::Context::from_waker(&waker));
            assert!(poll.is_pending());
        }
        signals.raise(Signals::STOP);
        assert_eq!((wakes(&first), wakes(&second)), (0, 1));
        // Forgotten (the instance ended): nobody is woken, the flag stays for the next.
        signals.forget();
        signals.raise(Signals::TRIM);
        assert_eq!(wakes(&second), 1);
        assert!(signals.take(Signals::STOP) && signals.take(Signals::TRIM));
    }
}
