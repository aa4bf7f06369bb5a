//! Run an actor natively, in ordinary `cargo test`, through the same dispatch and executor code
//! as in wasm.
//!
//! [`TestActor`] plays the host: it encodes [`Event`]s exactly as the runtime does, calls the
//! actor's run entry point (the function behind the `bunraku_run` export), and answers the
//! actor's host calls from a native stand-in that records what the actor sent, published,
//! requested, subscribed and logged. Requests the actor makes are answered by closures registered
//! with [`respond`](TestActor::respond); a request nobody answers fails with
//! [`ErrorCode::NoSuchActor`].
//!
//! Every method runs the actor until it has nothing left to do, so after `call`, `send` or
//! `stop` returns, the handler has finished (or is waiting on something the test controls, such
//! as a mailbox marked full; see [`in_flight`](TestActor::in_flight)).
//!
//! Event logs, snapshots and durable reminders ([`journal`](crate::journal),
//! [`Ctx::remind`](crate::Ctx::remind)) live in an [`EventLog`], which several actors of a test
//! can share: to replay what an earlier actor wrote, to preload history written by an older
//! version of an actor, or to follow several actors' logs with a
//! [`Projection`](crate::journal::Projection). Nothing fires or waits on its own: the test fires
//! reminders ([`fire_reminder`](TestActor::fire_reminder)), moves the store's clock
//! ([`EventLog::advance`]) and lets an actor waiting for new events see them
//! ([`poll`](TestActor::poll)).
//!
//! ```
//! use bunraku_sdk::prelude::*;
//! use bunraku_sdk::testing::TestActor;
//!
//! #[derive(Serialize, Deserialize, Message)]
//! #[message(name = "orders.placed")]
//! struct Placed { id: u64 }
//!
//! #[derive(Default)]
//! struct Audit { seen: Vec<u64> }
//!
//! #[actor]
//! impl Audit {
//!     async fn on_start(&mut self, ctx: &Ctx) -> Result<(), Error> {
//!         ctx.subscribe("orders.*")?;
//!         Ok(())
//!     }
//!     #[handler]
//!     async fn placed(&mut self, ctx: &Ctx, msg: Placed) {
//!         ctx.info(format_args!("order {} on {:?}", msg.id, ctx.subject()));
//!         self.seen.push(msg.id);
//!     }
//! }
//!
//! let mut audit = TestActor::<Audit>::start_default();
//! assert_eq!(audit.subscriptions()[0].pattern, "orders.*");
//! audit.deliver("orders.placed", &Placed { id: 7 }).unwrap();
//! assert_eq!(audit.actor().seen, [7]);
//! assert_eq!(audit.logs()[0].message, "order 7 on Some(\"orders.placed\")");
//! ```

use std::cell::{Ref, RefCell};
use std::marker::PhantomData;
use std::rc::Rc;

use bunraku_abi::{
    Append, Codec, Envelope, ErrorCode, Event, Ext, NewEvent, Outbound, ReplyBody, Snapshot,
    StoredEvent, Subscribe,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::executor::{self, State};
use crate::sys::native::{self, InStream, NativeHost, Responder, SharedEvents};
use crate::{Actor, Error, Level, Message, Request, codec};

/// Entries in a row a [`TestActor`] makes while the actor keeps asking to be entered again
/// (`yield_now`), or keeps having events ready, before it gives up.
pub const MAX_RESUMES: usize = 100_000;

/// One actor instance under test, with the host it talks to.
///
/// Each `TestActor` has its own executor state and host, installed on the thread only while one
/// of its methods runs, so several can live in one test. The actor itself is leaked (as in wasm,
/// where it lives as long as its instance).
pub struct TestActor<A: Actor> {
    parked: Option<Parked>,
    next_message: u64,
    /// Actors the next message carries references to ([`TestActor::attach`]).
    attach: Vec<String>,
    /// The stream the next message opens ([`TestActor::send_stream`]).
    next_stream: Option<u32>,
    _actor: PhantomData<A>,
}

/// The executor state and host of a `TestActor` while it is not running.
struct Parked {
    state: State,
    host: NativeHost,
}

/// How a timer was set ([`TestActor::timers`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerSet {
    /// The wire name of the message it sends.
    pub msg_type: String,
    /// The delay before the first firing.
    pub delay: std::time::Duration,
    /// The period, for a periodic timer.
    pub period: Option<std::time::Duration>,
}

/// How a durable reminder was set ([`TestActor::reminders`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReminderSet {
    /// Its name.
    pub name: String,
    /// The wire name of the message it sends.
    pub msg_type: String,
    /// The delay before the first firing.
    pub delay: std::time::Duration,
    /// The period, for a periodic reminder.
    pub period: Option<std::time::Duration>,
}

/// The native event store: every actor's event log, snapshots and durable reminders, and the
/// clock events are stamped with.
///
/// Each [`TestActor`] has one (empty at first); [`TestActor::event_log`] hands out a shared
/// handle to it and [`TestBuilder::events`] starts another actor on the same store, as a host
/// restart (or a second actor of the same host) would see it. A handle also preloads events and
/// snapshots (for instance ones written by an older version of an actor) and marks rows corrupt.
/// The clock starts at 2024-01-01T00:00:00Z and only moves when the test moves it.
///
/// ```
/// use bunraku_sdk::testing::EventLog;
///
/// let log = EventLog::new();
/// assert_eq!(log.append("account/ann", 1, &5u64), 1);
/// log.advance(std::time::Duration::from_secs(60));
/// assert_eq!(log.append("account/ann", 1, &7u64), 2);
/// let events = log.events_of("account/ann");
/// assert_eq!(events[1].time_ms - events[0].time_ms, 60_000);
/// assert_eq!(log.decoded::<u64>("account/ann"), [5, 7]);
/// ```
#[derive(Clone, Default)]
pub struct EventLog(SharedEvents);

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let store = self.0.borrow();
        f.debug_struct("EventLog")
            .field("events", &store.rows.len())
            .field("actors", &store.logs.len())
            .field("now_ms", &store.now_ms)
            .finish()
    }
}

impl EventLog {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `event` (postcard) to `actor`'s log as written by code of schema `version`, at
    /// the store's current time; returns its sequence number.
    ///
    /// # Panics
    ///
    /// When `event` does not encode.
    pub fn append<E: Serialize + ?Sized>(&self, actor: &str, version: u32, event: &E) -> u64 {
        let payload = codec::encode(Codec::Postcard, event).expect("the event encodes");
        self.append_bytes(actor, version, payload)
    }

    /// Appends raw bytes to `actor`'s log (see [`append`](Self::append)).
    ///
    /// # Panics
    ///
    /// When the payload is over the native size limit (1 MiB).
    pub fn append_bytes(&self, actor: &str, version: u32, payload: Vec<u8>) -> u64 {
        let mut store = self.0.borrow_mut();
        let expected = store.last_seq(actor);
        let events = vec![NewEvent { version, payload }];
        store
            .append(actor, Append { expected, events })
            .unwrap_or_else(|code| panic!("could not append to `{actor}`: {code}"))
    }

    /// Stores a snapshot of `actor`'s state after event `seq`, of schema `version`.
    ///
    /// # Panics
    ///
    /// When `state` does not encode, or `seq` is past the end of the log.
    pub fn snapshot<S: Serialize + ?Sized>(&self, actor: &str, seq: u64, version: u32, state: &S) {
        let state = codec::encode(Codec::Postcard, state).expect("the state encodes");
        self.snapshot_bytes(actor, seq, version, state);
    }

    /// Stores a snapshot as raw bytes (see [`snapshot`](Self::snapshot)).
    ///
    /// # Panics
    ///
    /// When `seq` is past the end of the log.
    pub fn snapshot_bytes(&self, actor: &str, seq: u64, version: u32, state: Vec<u8>) {
        let snapshot = Snapshot {
            seq,
            version,
            state,
        };
        self.0
            .borrow_mut()
            .snapshot(actor, snapshot)
            .unwrap_or_else(|code| panic!("could not snapshot `{actor}` at {seq}: {code}"));
    }

    /// Every event of `actor`'s log, in order, SDK markers (version 0) included.
    pub fn events_of(&self, actor: &str) -> Vec<StoredEvent> {
        let store = self.0.borrow();
        let log = store.logs.get(actor).map_or(&[][..], Vec::as_slice);
        log.iter().map(|&i| store.rows[i].event.clone()).collect()
    }

    /// The events of `actor`'s log decoded as `E`, in order, leaving out SDK markers (version
    /// 0).
    ///
    /// # Panics
    ///
    /// When one of them does not decode as an `E`.
    pub fn decoded<E: DeserializeOwned>(&self, actor: &str) -> Vec<E> {
        self.events_of(actor)
            .iter()
            .filter(|e| e.version != 0)
            .map(|e| {
                codec::decode(Codec::Postcard, &e.payload).unwrap_or_else(|err| {
                    panic!("event {} of `{actor}` does not decode: {err}", e.seq)
                })
            })
            .collect()
    }

    /// The snapshots of `actor`, oldest first.
    pub fn snapshots_of(&self, actor: &str) -> Vec<Snapshot> {
        let store = self.0.borrow();
        store
            .snapshots
            .get(actor)
            .map(|snaps| snaps.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Marks event `seq` of `actor`'s log as failing its checksum: every read that reaches it
    /// fails with [`ErrorCode::Corrupt`], as on a host whose disk flipped a bit.
    ///
    /// # Panics
    ///
    /// When there is no such event.
    pub fn corrupt(&self, actor: &str, seq: u64) {
        let mut store = self.0.borrow_mut();
        let index = store
            .logs
            .get(actor)
            .and_then(|log| log.get(usize::try_from(seq).ok()?.checked_sub(1)?))
            .copied()
            .unwrap_or_else(|| panic!("`{actor}` has no event {seq}"));
        store.rows[index].corrupt = true;
    }

    /// The store's clock, in milliseconds since the Unix epoch: the time the next append is
    /// stamped with.
    pub fn now_ms(&self) -> u64 {
        self.0.borrow().now_ms
    }

    /// Sets the store's clock.
    ///
    /// # Panics
    ///
    /// When `ms` is earlier than the clock: committed events never go back in time.
    pub fn set_now_ms(&self, ms: u64) {
        let mut store = self.0.borrow_mut();
        assert!(ms >= store.now_ms, "the clock does not go back");
        store.now_ms = ms;
    }

    /// Moves the store's clock forward by `by` (whole milliseconds).
    pub fn advance(&self, by: std::time::Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        let mut store = self.0.borrow_mut();
        store.now_ms = store.now_ms.saturating_add(ms);
    }
}

/// What a message looks like to the actor besides its payload.
#[derive(Default)]
struct Meta<'a> {
    /// The sender waits for a reply.
    reply: bool,
    subject: Option<&'a str>,
    /// `None`: `test`.
    sender: Option<&'a str>,
    idempotency_key: Option<&'a str>,
    /// The envelope's extension entries ([`Ctx::ext`](crate::Ctx::ext)).
    ext: Vec<Ext>,
}

/// Extension entries as the envelope carries them.
fn ext_entries<V: AsRef<[u8]>>(ext: &[(&str, V)]) -> Vec<Ext> {
    ext.iter()
        .map(|(key, value)| Ext {
            key: (*key).to_owned(),
            value: value.as_ref().to_vec(),
        })
        .collect()
}

/// A line the actor logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Its level.
    pub level: Level,
    /// Its text.
    pub message: String,
}

/// Puts a `TestActor`'s state back when its method ends, even by a panic.
struct Entered<'a> {
    parked: &'a mut Option<Parked>,
    outer: Option<(State, Option<NativeHost>)>,
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        let (state, host) = self.outer.take().expect("set when entered");
        let state = executor::swap_state(state);
        if let Some(host) = native::swap(host) {
            *self.parked = Some(Parked { state, host });
        }
    }
}

/// Prepares a [`TestActor`]: its address and concurrency, and what `on_start` already needs
/// (responders, full mailboxes). Made by [`TestActor::builder`].
///
/// ```
/// use bunraku_sdk::prelude::*;
/// use bunraku_sdk::testing::TestActor;
///
/// #[derive(Serialize, Deserialize, Message)]
/// #[message(reply = String)]
/// struct Lookup(String);
///
/// #[derive(Default)]
/// struct Cache { motd: String }
///
/// #[actor]
/// impl Cache {
///     async fn on_start(&mut self, ctx: &Ctx) -> Result<(), Error> {
///         self.motd = ctx.request("config", &Lookup("motd".into())).await?;
///         ctx.info(format_args!("{} #{} ready", ctx.name(), ctx.instance()));
///         Ok(())
///     }
/// }
///
/// let cache = TestActor::<Cache>::builder()
///     .name("cache")
///     .instance(2)
///     .respond::<Lookup>("config", |key| format!("value of {}", key.0))
///     .start_default();
/// assert_eq!(cache.actor().motd, "value of motd");
/// assert_eq!(cache.logs()[0].message, "cache #2 ready");
/// ```
pub struct TestBuilder<A: Actor> {
    host: NativeHost,
    name: String,
    instance: u32,
    /// Events and snapshots for the actor's own log, written at start.
    preload: Vec<Preload>,
    _actor: PhantomData<A>,
}

/// An event or snapshot [`TestBuilder`] writes to the actor's log before it starts.
enum Preload {
    Event(u32, Vec<u8>),
    Snapshot(u64, u32, Vec<u8>),
}

impl<A: Actor> TestBuilder<A> {
    /// The actor's address, [`Ctx::name`](crate::Ctx::name) (default: its type name).
    pub fn name(mut self, name: &str) -> Self {
        name.clone_into(&mut self.name);
        self
    }

    /// The instance number, [`Ctx::instance`](crate::Ctx::instance) (default: 0).
    pub fn instance(mut self, instance: u32) -> Self {
        self.instance = instance;
        self
    }

    /// How many handlers may run at once (default: 1).
    pub fn concurrency(mut self, concurrency: u32) -> Self {
        self.host.concurrency = concurrency;
        self
    }

    /// Answers the actor's requests of type `R` to actor `target` with `f`
    /// (see [`TestActor::respond`]).
    pub fn respond<R: Request>(
        mut self,
        target: &str,
        mut f: impl FnMut(R) -> R::Reply + 'static,
    ) -> Self {
        self.host
            .respond(target, R::NAME, responder::<R>(move |req| Ok(f(req))));
        self
    }

    /// Answers the actor's requests of type `R` to actor `target` with `f`, which may fail
    /// (see [`TestActor::respond_with`]).
    pub fn respond_with<R: Request>(
        mut self,
        target: &str,
        f: impl FnMut(R) -> Result<R::Reply, Error> + 'static,
    ) -> Self {
        self.host.respond(target, R::NAME, responder::<R>(f));
        self
    }

    /// Marks an actor or subject as full (see [`TestActor::set_mailbox_full`]).
    pub fn mailbox_full(mut self, target: &str) -> Self {
        self.host.set_full(target, true);
        self
    }

    /// Presets the actor's persisted state, as if it had saved `state` before (what
    /// [`Ctx::load`](crate::Ctx::load) returns in `on_start`).
    ///
    /// # Panics
    ///
    /// When `state` does not encode with postcard.
    pub fn saved_state<S: Serialize + ?Sized>(self, state: &S) -> Self {
        let bytes = codec::encode(Codec::Postcard, state).expect("the state encodes");
        self.saved_bytes(bytes)
    }

    /// Presets the actor's persisted state as raw bytes (for instance a state saved by an
    /// older version of the actor).
    pub fn saved_bytes(mut self, bytes: Vec<u8>) -> Self {
        self.host.state = Some(bytes);
        self
    }

    /// Makes the store unavailable (see [`TestActor::set_storage_unavailable`]).
    pub fn storage_unavailable(mut self, unavailable: bool) -> Self {
        self.host.storage_unavailable = unavailable;
        self
    }

    /// Starts the actor on `log`, a store shared with other actors (typically
    /// [`TestActor::event_log`] of an earlier actor): its own log and snapshots are those
    /// stored under its [`name`](Self::name) (`NAME#K` for [`instance`](Self::instance) `K >
    /// 0`, as on the host), and its reminders those of the name, so an actor with the same name
    /// replays what the earlier one wrote.
    ///
    /// ```
    /// use bunraku_sdk::prelude::*;
    /// use bunraku_sdk::testing::{EventLog, TestActor};
    ///
    /// #[derive(Default)]
    /// struct Quiet;
    ///
    /// #[actor]
    /// impl Quiet {}
    ///
    /// let log = EventLog::new();
    /// log.append("quiet", 1, &"written before");
    /// let first = TestActor::<Quiet>::builder().name("quiet").events(log.clone()).start_default();
    /// assert_eq!(first.events().len(), 1);
    /// ```
    pub fn events(mut self, log: EventLog) -> Self {
        self.host.events = log.0;
        self
    }

    /// Writes `event` (postcard) to the actor's own log before it starts, as code of schema
    /// `version` wrote it: an actor restarting with history, possibly an older version's.
    ///
    /// # Panics
    ///
    /// When `event` does not encode.
    pub fn event<E: Serialize + ?Sized>(mut self, version: u32, event: &E) -> Self {
        let payload = codec::encode(Codec::Postcard, event).expect("the event encodes");
        self.preload.push(Preload::Event(version, payload));
        self
    }

    /// Writes a snapshot of the actor's state after event `seq` (of schema `version`) before
    /// it starts; `seq` must be among the events written before.
    ///
    /// # Panics
    ///
    /// When `state` does not encode; at start, when `seq` is past the end of the log.
    pub fn snapshot<S: Serialize + ?Sized>(mut self, seq: u64, version: u32, state: &S) -> Self {
        let state = codec::encode(Codec::Postcard, state).expect("the state encodes");
        self.preload.push(Preload::Snapshot(seq, version, state));
        self
    }

    /// Starts the actor with `config` as its JSON configuration (`serde_json::json!(..)` or any
    /// serializable value) and runs `on_start`.
    ///
    /// # Panics
    ///
    /// When `config` does not serialize or decode, or `on_start` fails (in wasm, both trap).
    pub fn start(self, config: impl Serialize) -> TestActor<A> {
        let config = serde_json::to_vec(&config).expect("the configuration serializes to JSON");
        let mut host = self.host;
        host.address.clone_from(&self.name);
        host.log = match self.instance {
            0 => self.name.clone(),
            k => format!("{}#{k}", self.name),
        };
        let log = EventLog(host.events.clone());
        for preload in self.preload {
            match preload {
                Preload::Event(version, payload) => {
                    log.append_bytes(&host.log, version, payload);
                }
                Preload::Snapshot(seq, version, state) => {
                    log.snapshot_bytes(&host.log, seq, version, state);
                }
            }
        }
        host.inbox.push_back(Event::Start {
            name: self.name,
            instance: self.instance,
            config,
        });
        let mut actor = TestActor {
            parked: Some(Parked {
                state: State::default(),
                host,
            }),
            next_message: 0,
            attach: Vec::new(),
            next_stream: None,
            _actor: PhantomData,
        };
        actor.run();
        actor
    }

    /// Starts the actor without configuration (`on_start` gets the configuration's `Default`).
    ///
    /// # Panics
    ///
    /// When `on_start` fails.
    pub fn start_default(self) -> TestActor<A> {
        self.start(())
    }
}

impl<A: Actor> TestActor<A> {
    /// Prepares an actor with more than a configuration; see [`TestBuilder`].
    pub fn builder() -> TestBuilder<A> {
        TestBuilder {
            host: NativeHost::default(),
            name: A::NAME.to_owned(),
            instance: 0,
            preload: Vec::new(),
            _actor: PhantomData,
        }
    }

    /// Starts the actor with `config` as its JSON configuration (`serde_json::json!(..)` or any
    /// serializable value), named after its type, instance 0, and runs `on_start`.
    ///
    /// # Panics
    ///
    /// When `config` does not serialize or decode, or `on_start` fails (in wasm, both trap).
    pub fn start(config: impl Serialize) -> Self {
        Self::builder().start(config)
    }

    /// Starts the actor without configuration (`on_start` gets the configuration's `Default`).
    ///
    /// # Panics
    ///
    /// When `on_start` fails.
    pub fn start_default() -> Self {
        Self::builder().start_default()
    }

    /// Runs `f` with this actor's state and host installed on the thread.
    fn enter<R>(&mut self, f: impl FnOnce() -> R) -> R {
        let Parked { state, host } = self
            .parked
            .take()
            .expect("this TestActor panicked earlier and cannot be used");
        let outer = (executor::swap_state(state), native::swap(Some(host)));
        let _entered = Entered {
            parked: &mut self.parked,
            outer: Some(outer),
        };
        f()
    }

    /// Runs the actor until the host has no event for it, entering it again while it asks to
    /// be (`yield_now`) or while an event is ready (one that came after the event the host
    /// flagged as the last one ready: a responder's answer to a request the handler made, say).
    ///
    /// # Panics
    ///
    /// After [`MAX_RESUMES`] entries in a row (a task that never stops yielding, or a handler
    /// that never stops making requests its responders answer, would otherwise hang the test;
    /// the host would keep entering it).
    fn run(&mut self) {
        for _ in 0..MAX_RESUMES {
            let in_flight = u32::try_from(self.enter(executor::run::<A>)).unwrap_or(0);
            let host = self.host_mut();
            if !std::mem::take(&mut host.resume_requested) && !host.has_event(in_flight) {
                return;
            }
        }
        panic!(
            "the actor asked to be entered again {MAX_RESUMES} times in a row: a task that \
             yields and never finishes, or one that never stops making requests?"
        );
    }

    fn parked(&self) -> &Parked {
        self.parked
            .as_ref()
            .expect("this TestActor panicked earlier and cannot be used")
    }

    fn host(&self) -> &NativeHost {
        &self.parked().host
    }

    fn host_mut(&mut self) -> &mut NativeHost {
        &mut self
            .parked
            .as_mut()
            .expect("this TestActor panicked earlier")
            .host
    }

    /// The actor's state, to assert on.
    ///
    /// # Panics
    ///
    /// While a handler holds the state mutably (it is waiting on an operation).
    pub fn actor(&self) -> Ref<'_, A> {
        self.parked()
            .state
            .actor::<A>()
            .expect("the actor started")
            .borrow()
    }

    /// Queues a message and runs the actor; returns its id and reply handle.
    fn push(
        &mut self,
        msg_type: &str,
        codec: Codec,
        payload: Vec<u8>,
        meta: Meta<'_>,
    ) -> (u64, Option<u32>) {
        self.next_message += 1;
        let id = self.next_message;
        let attach = std::mem::take(&mut self.attach);
        let stream = self.next_stream.take();
        let host = self.host_mut();
        let reply = meta.reply.then(|| host.reply_handle());
        let attachments = attach.iter().map(|name| host.issue_ref(name)).collect();
        host.inbox.push_back(Event::Message(Envelope {
            id,
            msg_type: msg_type.to_owned(),
            codec,
            reply,
            sender: Some(meta.sender.unwrap_or("test").to_owned()),
            subject: meta.subject.map(str::to_owned),
            idempotency_key: meta.idempotency_key.map(str::to_owned),
            payload,
            attachments,
            stream,
            ext: meta.ext,
            ..Envelope::default()
        }));
        self.run();
        (id, reply)
    }

    /// Takes the reply for `handle`.
    fn reply(&mut self, handle: Option<u32>) -> Result<(Codec, Vec<u8>), Error> {
        let handle = handle.expect("a call has a reply handle");
        match self.host_mut().replies.remove(&handle) {
            Some(ReplyBody::Ok { codec, payload }) => Ok((codec, payload)),
            Some(ReplyBody::Error { code, message }) => Err(Error::new(code, message)),
            None => Err(Error::new(
                ErrorCode::Timeout,
                "no reply yet: the handler has not finished (it waits on an operation, or the \
                 message waits behind handlers in flight)",
            )),
        }
    }

    /// The outcome of a one-way message: refused or not.
    fn outcome(&mut self, id: u64) -> Result<(), Error> {
        let parked = self
            .parked
            .as_mut()
            .expect("this TestActor panicked earlier");
        parked.state.take_rejected(id).map_or(Ok(()), Err)
    }

    /// Sends request `msg` (postcard, as from another actor) and returns the handler's reply.
    ///
    /// Errors: the actor refused the message ([`ErrorCode::UnknownType`],
    /// [`ErrorCode::Malformed`]), or the handler has not replied yet ([`ErrorCode::Timeout`]).
    pub fn call<R: Request>(&mut self, msg: &R) -> Result<R::Reply, Error> {
        self.call_meta(msg, Meta::default())
    }

    /// Like [`call`](Self::call), with idempotency key `key`
    /// ([`Ctx::idempotency_key`](crate::Ctx::idempotency_key)), as
    /// [`Ctx::request_keyed`](crate::Ctx::request_keyed) sends it: call again with the same key
    /// to play a requester retrying after a timeout.
    pub fn call_keyed<R: Request>(&mut self, msg: &R, key: &str) -> Result<R::Reply, Error> {
        let meta = Meta {
            idempotency_key: Some(key),
            ..Meta::default()
        };
        self.call_meta(msg, meta)
    }

    fn call_meta<R: Request>(&mut self, msg: &R, mut meta: Meta<'_>) -> Result<R::Reply, Error> {
        let payload = encode(msg)?;
        meta.reply = true;
        let (_, handle) = self.push(R::NAME, Codec::Postcard, payload, meta);
        let (codec, payload) = self.reply(handle)?;
        codec::decode(codec, &payload).map_err(|e| Error::new(ErrorCode::Malformed, e))
    }

    /// Sends a JSON message by wire name, as the CLI does, and returns the JSON reply (`null`
    /// for a one-way message).
    pub fn call_json(&mut self, msg_type: &str, json: &str) -> Result<serde_json::Value, Error> {
        let payload = json.as_bytes().to_vec();
        let meta = Meta {
            reply: true,
            ..Meta::default()
        };
        let (_, handle) = self.push(msg_type, Codec::Json, payload, meta);
        let (codec, payload) = self.reply(handle)?;
        codec::decode(codec, &payload).map_err(|e| Error::new(ErrorCode::Malformed, e))
    }

    /// Like [`call`](Self::call), with extension entries `ext` (key and value) on the envelope,
    /// as the HTTP gateway adds them: the handler reads them with
    /// [`Ctx::ext`](crate::Ctx::ext), [`Ctx::principal`](crate::Ctx::principal)
    /// ([`PRINCIPAL_SUBJECT`](crate::PRINCIPAL_SUBJECT),
    /// [`PRINCIPAL_KEY_ID`](crate::PRINCIPAL_KEY_ID)) and
    /// [`Ctx::http_header`](crate::Ctx::http_header) ([`HTTP_HEADER_PREFIX`](crate::HTTP_HEADER_PREFIX)
    /// and the lowercase header name).
    ///
    /// ```
    /// use bunraku_sdk::prelude::*;
    /// use bunraku_sdk::testing::TestActor;
    /// use bunraku_sdk::{PRINCIPAL_KEY_ID, PRINCIPAL_SUBJECT};
    ///
    /// #[derive(Serialize, Deserialize, Message)]
    /// #[message(reply = String)]
    /// struct WhoAmI {}
    ///
    /// #[derive(Default)]
    /// struct Profile;
    ///
    /// #[actor]
    /// impl Profile {
    ///     #[handler]
    ///     async fn who(&mut self, ctx: &Ctx, _msg: WhoAmI) -> String {
    ///         let request = ctx.http_header("x-request-id").unwrap_or("-");
    ///         match ctx.principal() {
    ///             Some(p) => format!("{} via {:?} ({request})", p.subject, p.key_id),
    ///             None => format!("anonymous ({request})"),
    ///         }
    ///     }
    /// }
    ///
    /// let mut t = TestActor::<Profile>::start_default();
    /// let ext = [
    ///     (PRINCIPAL_SUBJECT, "ann"),
    ///     (PRINCIPAL_KEY_ID, "key-1"),
    ///     ("http.header.x-request-id", "r7"),
    /// ];
    /// assert_eq!(t.call_with_ext(&WhoAmI {}, &ext).unwrap(), "ann via Some(\"key-1\") (r7)");
    /// assert_eq!(t.call(&WhoAmI {}).unwrap(), "anonymous (-)");
    /// ```
    pub fn call_with_ext<R: Request, V: AsRef<[u8]>>(
        &mut self,
        msg: &R,
        ext: &[(&str, V)],
    ) -> Result<R::Reply, Error> {
        let meta = Meta {
            ext: ext_entries(ext),
            ..Meta::default()
        };
        self.call_meta(msg, meta)
    }

    /// Like [`call_json`](Self::call_json), with extension entries `ext` on the envelope (see
    /// [`call_with_ext`](Self::call_with_ext)): a request exactly as the HTTP gateway sends it,
    /// a JSON object whose path and query parameters are strings.
    pub fn call_json_with_ext<V: AsRef<[u8]>>(
        &mut self,
        msg_type: &str,
        json: &str,
        ext: &[(&str, V)],
    ) -> Result<serde_json::Value, Error> {
        let payload = json.as_bytes().to_vec();
        let meta = Meta {
            reply: true,
            ext: ext_entries(ext),
            ..Meta::default()
        };
        let (_, handle) = self.push(msg_type, Codec::Json, payload, meta);
        let (codec, payload) = self.reply(handle)?;
        codec::decode(codec, &payload).map_err(|e| Error::new(ErrorCode::Malformed, e))
    }

    /// Like [`send`](Self::send), with extension entries `ext` on the envelope (see
    /// [`call_with_ext`](Self::call_with_ext)).
    pub fn send_with_ext<M: Message, V: AsRef<[u8]>>(
        &mut self,
        msg: &M,
        ext: &[(&str, V)],
    ) -> Result<(), Error> {
        let meta = Meta {
            ext: ext_entries(ext),
            ..Meta::default()
        };
        self.send_meta(msg, meta)
    }

    /// Sends `msg` without waiting for a reply (any reply value is dropped).
    ///
    /// Errors only when the actor refused the message ([`ErrorCode::UnknownType`],
    /// [`ErrorCode::Malformed`]).
    pub fn send<M: Message>(&mut self, msg: &M) -> Result<(), Error> {
        self.send_meta(msg, Meta::default())
    }

    /// Like [`send`](Self::send), with idempotency key `key`
    /// ([`Ctx::idempotency_key`](crate::Ctx::idempotency_key)).
    pub fn send_keyed<M: Message>(&mut self, msg: &M, key: &str) -> Result<(), Error> {
        let meta = Meta {
            idempotency_key: Some(key),
            ..Meta::default()
        };
        self.send_meta(msg, meta)
    }

    fn send_meta<M: Message>(&mut self, msg: &M, meta: Meta<'_>) -> Result<(), Error> {
        let payload = encode(msg)?;
        let (id, _) = self.push(M::NAME, Codec::Postcard, payload, meta);
        self.outcome(id)
    }

    /// Delivers `msg` as a publication on `subject` reaching one of the actor's subscriptions
    /// ([`Ctx::subject`](crate::Ctx::subject) is `subject`). Errors like [`send`](Self::send).
    pub fn deliver<M: Message>(&mut self, subject: &str, msg: &M) -> Result<(), Error> {
        let payload = encode(msg)?;
        let meta = Meta {
            subject: Some(subject),
            ..Meta::default()
        };
        let (id, _) = self.push(M::NAME, Codec::Postcard, payload, meta);
        self.outcome(id)
    }

    /// Opens a stream to the actor, as another actor would: `open` is delivered (its handler
    /// takes the reader with [`Ctx::take_stream`](crate::Ctx::take_stream)), followed by `items`
    /// and then `end`: [`ErrorCode::Closed`] for a normal end, [`ErrorCode::Aborted`] or
    /// [`ErrorCode::PeerFailed`]. Errors like [`send`](Self::send).
    pub fn send_stream<M: Message, T: Serialize>(
        &mut self,
        open: &M,
        items: &[T],
        end: ErrorCode,
    ) -> Result<(), Error> {
        let items = items
            .iter()
            .map(|i| {
                codec::encode(Codec::Postcard, i).map_err(|e| Error::new(ErrorCode::Malformed, e))
            })
            .collect::<Result<_, _>>()?;
        let stream = self.host_mut().open_in_stream(InStream {
            items,
            end: Some(end),
            ..InStream::default()
        });
        self.next_stream = Some(stream);
        let payload = encode(open)?;
        let (id, _) = self.push(M::NAME, Codec::Postcard, payload, Meta::default());
        self.outcome(id)
    }

    /// The items of the streams the actor opened to `target`, in the order written.
    pub fn stream_items<T: serde::de::DeserializeOwned>(&self, target: &str) -> Vec<T> {
        self.host()
            .streams_out
            .values()
            .filter(|s| s.open.target == target)
            .flat_map(|s| &s.items)
            .map(|b| {
                codec::decode(Codec::Postcard, b)
                    .unwrap_or_else(|e| panic!("a stream item to `{target}` does not decode: {e}"))
            })
            .collect()
    }

    /// How each stream the actor opened to `target` ended, in the order opened: `None` while
    /// open, `Some(false)` closed, `Some(true)` aborted.
    pub fn stream_endings(&self, target: &str) -> Vec<Option<bool>> {
        self.host()
            .streams_out
            .values()
            .filter(|s| s.open.target == target)
            .map(|s| s.ended)
            .collect()
    }

    /// Whether the actor stopped reading the streams opened to it before their end.
    pub fn streams_cancelled(&self) -> usize {
        self.host()
            .streams_in
            .values()
            .filter(|s| s.cancelled)
            .count()
    }

    /// The timers the actor holds, oldest first, with how they were set.
    pub fn timers(&self) -> Vec<(crate::TimerId, TimerSet)> {
        self.host()
            .timers
            .iter()
            .map(|(id, t)| {
                let set = TimerSet {
                    msg_type: t.msg_type.clone(),
                    delay: std::time::Duration::from_millis(t.delay_ms),
                    period: t.period_ms.map(std::time::Duration::from_millis),
                };
                (crate::TimerId(*id), set)
            })
            .collect()
    }

    /// Fires a timer now: its message is delivered and handled, and a one-shot timer is gone.
    /// The test decides when time passes; nothing fires on its own.
    ///
    /// # Panics
    ///
    /// When the actor holds no such timer.
    pub fn fire_timer(&mut self, timer: crate::TimerId) {
        let host = self.host_mut();
        let t = host
            .timers
            .get(&timer.get())
            .cloned()
            .unwrap_or_else(|| panic!("the actor holds no timer {}", timer.get()));
        if t.period_ms.is_none() {
            host.timers.remove(&timer.get());
        }
        let (id, _) = self.push(&t.msg_type, t.codec, t.payload, Meta::default());
        if let Err(e) = self.outcome(id) {
            panic!(
                "timer {} fired a message the actor refused: {e}",
                timer.get()
            );
        }
    }

    /// The durable reminders the actor holds, by name, with how they were set.
    pub fn reminders(&self) -> Vec<ReminderSet> {
        let host = self.host();
        let store = host.events.borrow();
        let Some(reminders) = store.reminders.get(&host.address) else {
            return Vec::new();
        };
        reminders
            .values()
            .map(|r| ReminderSet {
                name: r.name.clone(),
                msg_type: r.msg_type.clone(),
                delay: std::time::Duration::from_millis(r.delay_ms),
                period: r.period_ms.map(std::time::Duration::from_millis),
            })
            .collect()
    }

    /// Fires reminder `name` now: its message is delivered from the sender `bunraku.reminder`
    /// and handled, and a one-shot reminder is gone. Nothing fires on its own.
    ///
    /// # Panics
    ///
    /// When the actor holds no such reminder, or refuses its message.
    pub fn fire_reminder(&mut self, name: &str) {
        let host = self.host_mut();
        let r = {
            let mut store = host.events.borrow_mut();
            let reminders = store.reminders.entry(host.address.clone()).or_default();
            let r = reminders
                .get(name)
                .cloned()
                .unwrap_or_else(|| panic!("the actor holds no reminder `{name}`"));
            if r.period_ms.is_none() {
                reminders.remove(name);
            }
            r
        };
        let meta = Meta {
            sender: Some(crate::reminders::REMINDER_SENDER),
            ..Meta::default()
        };
        let (id, _) = self.push(&r.msg_type, r.codec, r.payload, meta);
        if let Err(e) = self.outcome(id) {
            panic!("reminder `{name}` fired a message the actor refused: {e}");
        }
    }

    /// The status the actor set with [`Ctx::set_status`](crate::Ctx::set_status) (empty when
    /// none).
    pub fn status(&self) -> &str {
        &self.host().status
    }

    /// A shared handle to the event store this actor reads and appends to (see [`EventLog`]):
    /// give it to [`TestBuilder::events`] to start another actor on the same logs.
    pub fn event_log(&self) -> EventLog {
        EventLog(self.host().events.clone())
    }

    /// Every event of this actor's own log, in order (SDK markers, version 0, included).
    pub fn events(&self) -> Vec<StoredEvent> {
        self.events_of(&self.host().log)
    }

    /// Every event of `actor`'s log in this actor's store, in order.
    pub fn events_of(&self, actor: &str) -> Vec<StoredEvent> {
        self.event_log().events_of(actor)
    }

    /// Runs the actor with whatever its host has for it now, without a new message: for
    /// instance a read of a type's log that waited for new events, after another actor sharing
    /// the store appended some.
    pub fn poll(&mut self) {
        self.run();
    }

    /// Attaches references to `actors` to the next message (`send`, `call`, `deliver`): the
    /// handler finds them in [`Ctx::attachments`](crate::Ctx::attachments), in this order.
    pub fn attach(&mut self, actors: &[&str]) -> &mut Self {
        self.attach = actors.iter().map(|a| (*a).to_owned()).collect();
        self
    }

    /// Answers the actor's requests of type `R` to actor `target` with `f`.
    pub fn respond<R: Request>(
        &mut self,
        target: &str,
        mut f: impl FnMut(R) -> R::Reply + 'static,
    ) {
        self.respond_with::<R>(target, move |req| Ok(f(req)));
    }

    /// Answers the actor's requests of type `R` to actor `target` with `f`; an `Err` reaches
    /// the actor as that error.
    pub fn respond_with<R: Request>(
        &mut self,
        target: &str,
        f: impl FnMut(R) -> Result<R::Reply, Error> + 'static,
    ) {
        self.host_mut().respond(target, R::NAME, responder::<R>(f));
    }

    /// Marks an actor or subject as full: `send`/`publish` to it wait, `try_send`/`try_publish`
    /// fail with [`ErrorCode::MailboxFull`]. Marking it not full delivers what waited and runs
    /// the handlers that waited for it.
    pub fn set_mailbox_full(&mut self, target: &str, full: bool) {
        self.host_mut().set_full(target, full);
        self.run();
    }

    /// Makes [`Ctx::load`](crate::Ctx::load) and [`Ctx::save`](crate::Ctx::save) fail with
    /// [`ErrorCode::StorageUnavailable`] (as on a host whose disk is full), or work again. Event
    /// logs ([`journal`](crate::journal)) and durable reminders fail the same way.
    pub fn set_storage_unavailable(&mut self, unavailable: bool) {
        self.host_mut().storage_unavailable = unavailable;
    }

    /// The bytes the actor last saved with [`Ctx::save`](crate::Ctx::save) (or that were
    /// preset), if any.
    pub fn saved_bytes(&self) -> Option<&[u8]> {
        self.host().state.as_deref()
    }

    /// The state the actor last saved (or that was preset), decoded as an `S`.
    ///
    /// # Panics
    ///
    /// When the saved bytes do not decode as an `S`.
    pub fn saved_state<S: DeserializeOwned>(&self) -> Option<S> {
        let bytes = self.saved_bytes()?;
        let state = codec::decode(Codec::Postcard, bytes).unwrap_or_else(|e| {
            panic!(
                "the saved state does not decode as `{}`: {e}",
                std::any::type_name::<S>()
            )
        });
        Some(state)
    }

    /// How many handlers may run at once (the actor's `concurrency`; 1 by default).
    pub fn set_concurrency(&mut self, concurrency: u32) {
        self.host_mut().concurrency = concurrency;
        self.run();
    }

    /// How many handlers (or hooks) are still waiting on something.
    pub fn in_flight(&self) -> usize {
        self.parked().state.in_flight()
    }

    /// Stops the actor: runs `on_stop`.
    pub fn stop(&mut self) {
        self.host_mut().inbox.push_back(Event::Stop);
        self.run();
    }

    /// Every message the actor sent (and that was delivered), in order.
    pub fn sent(&self) -> &[Outbound] {
        &self.host().sent
    }

    /// The messages of type `M` the actor sent to `to`.
    ///
    /// # Panics
    ///
    /// When one of them does not decode as an `M`.
    pub fn sent_to<M: Message>(&self, to: &str) -> Vec<M> {
        decode_all(&self.host().sent, to)
    }

    /// Every message the actor published (and that was delivered), in order.
    pub fn publications(&self) -> &[Outbound] {
        &self.host().published
    }

    /// The messages of type `M` the actor published on `subject`.
    ///
    /// # Panics
    ///
    /// When one of them does not decode as an `M`.
    pub fn published<M: Message>(&self, subject: &str) -> Vec<M> {
        decode_all(&self.host().published, subject)
    }

    /// Every request the actor made, in order, answered or not.
    pub fn requests(&self) -> &[Outbound] {
        &self.host().requests
    }

    /// The requests of type `R` the actor made to `to`.
    ///
    /// # Panics
    ///
    /// When one of them does not decode as an `R`.
    pub fn requested<R: Request>(&self, to: &str) -> Vec<R> {
        decode_all(&self.host().requests, to)
    }

    /// The actor's live subscriptions, oldest first.
    pub fn subscriptions(&self) -> Vec<Subscribe> {
        self.host().subscriptions.values().cloned().collect()
    }

    /// Everything the actor logged (the SDK's own warnings included), in order.
    pub fn logs(&self) -> Vec<LogLine> {
        let lines = self.host().logs.iter();
        lines
            .map(|(level, message)| LogLine {
                level: Level::from_raw(*level).unwrap_or(Level::Info),
                message: message.clone(),
            })
            .collect()
    }
}

impl<A: Actor> Drop for TestActor<A> {
    fn drop(&mut self) {
        if self.parked.is_some() {
            // Pending operations are cancelled with this actor's host, not another one's.
            self.enter(executor::drop_tasks);
        }
    }
}

/// Wraps a typed answering function as the native host's responder.
fn responder<R: Request>(mut f: impl FnMut(R) -> Result<R::Reply, Error> + 'static) -> Responder {
    Rc::new(RefCell::new(move |out: &Outbound| {
        let request = match codec::decode::<R>(out.codec, &out.payload) {
            Ok(request) => request,
            Err(message) => {
                return ReplyBody::Error {
                    code: ErrorCode::Malformed,
                    message,
                };
            }
        };
        let error = match f(request).map(|reply| codec::encode(out.codec, &reply)) {
            Ok(Ok(payload)) => {
                return ReplyBody::Ok {
                    codec: out.codec,
                    payload,
                };
            }
            Ok(Err(message)) => Error::new(ErrorCode::Internal, message),
            Err(e) => e,
        };
        ReplyBody::Error {
            code: error.code(),
            message: error.message().to_owned(),
        }
    }))
}

fn encode<M: Message>(msg: &M) -> Result<Vec<u8>, Error> {
    codec::encode(Codec::Postcard, msg).map_err(|e| Error::new(ErrorCode::Malformed, e))
}

fn decode_all<M: Message>(records: &[Outbound], target: &str) -> Vec<M> {
    records
        .iter()
        .filter(|out| out.target == target && out.msg_type == M::NAME)
        .map(|out| {
            codec::decode(out.codec, &out.payload)
                .unwrap_or_else(|e| panic!("a `{}` to `{target}` does not decode: {e}", M::NAME))
        })
        .collect()
}
