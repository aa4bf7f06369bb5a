//! Event sourcing: an actor's state as the fold of the events in its durable log.
//!
//! An [`Aggregate`] decides and applies: [`handle`](Aggregate::handle) turns a command into
//! events (or a rejection) without changing anything, [`apply`](Aggregate::apply) folds one event
//! into the state. A [`Journal`] keeps an aggregate together with its log in the host's store:
//! [`execute`](Journal::execute) handles a command, appends its events (expecting the log to end
//! where the journal last saw it) and applies them only once the host acknowledged them as
//! committed, so the state in memory never runs ahead of the log. [`recover`](Journal::recover)
//! (in `on_start`) rebuilds the state from the latest snapshot and the events after it.
//!
//! ```
//! use bunraku_sdk::journal::{Aggregate, EventsQuery, Journal, StateQuery};
//! use bunraku_sdk::prelude::*;
//! use bunraku_sdk::testing::TestActor;
//!
//! /// The state: rebuilt from the events, never saved directly.
//! #[derive(Serialize, Deserialize, Default, Debug)]
//! pub struct Account {
//!     balance: u64,
//! }
//!
//! pub enum Command {
//!     Deposit(u64),
//!     Withdraw(u64),
//! }
//!
//! #[derive(Serialize, Deserialize, Debug)]
//! pub enum AccountEvent {
//!     Deposited { amount: u64 },
//!     Withdrawn { amount: u64 },
//! }
//!
//! #[derive(Serialize, Deserialize, Debug, PartialEq)]
//! pub enum Rejection {
//!     ZeroAmount,
//!     InsufficientFunds { balance: u64 },
//! }
//!
//! impl Aggregate for Account {
//!     type Command = Command;
//!     type Event = AccountEvent;
//!     type Rejection = Rejection;
//!
//!     fn handle(&self, command: Command) -> Result<Vec<AccountEvent>, Rejection> {
//!         match command {
//!             Command::Deposit(0) | Command::Withdraw(0) => Err(Rejection::ZeroAmount),
//!             Command::Deposit(amount) => Ok(vec![AccountEvent::Deposited { amount }]),
//!             Command::Withdraw(amount) if amount > self.balance => {
//!                 Err(Rejection::InsufficientFunds { balance: self.balance })
//!             }
//!             Command::Withdraw(amount) => Ok(vec![AccountEvent::Withdrawn { amount }]),
//!         }
//!     }
//!
//!     fn apply(&mut self, event: &AccountEvent) {
//!         match event {
//!             AccountEvent::Deposited { amount } => self.balance += amount,
//!             AccountEvent::Withdrawn { amount } => self.balance -= amount,
//!         }
//!     }
//! }
//!
//! #[derive(Serialize, Deserialize, Message)]
//! #[message(reply = Result<u64, String>)]
//! pub struct Deposit { amount: u64 }
//!
//! #[derive(Serialize, Deserialize, Message)]
//! #[message(reply = Result<u64, String>)]
//! pub struct Withdraw { amount: u64 }
//!
//! #[derive(Default)]
//! pub struct Bank {
//!     journal: Journal<Account>,
//! }
//!
//! #[actor]
//! impl Bank {
//!     async fn on_start(&mut self, ctx: &Ctx) -> Result<(), Error> {
//!         self.journal = Journal::recover(ctx).await?;
//!         Ok(())
//!     }
//!
//!     #[handler]
//!     async fn deposit(&mut self, ctx: &Ctx, msg: Deposit) -> Result<u64, String> {
//!         match self.journal.execute(ctx, Command::Deposit(msg.amount)).await {
//!             Ok(Ok(_seq)) => Ok(self.journal.state().balance),
//!             Ok(Err(rejection)) => Err(format!("{rejection:?}")),
//!             Err(e) => Err(e.to_string()),
//!         }
//!     }
//!
//!     #[handler]
//!     async fn withdraw(&mut self, ctx: &Ctx, msg: Withdraw) -> Result<u64, String> {
//!         let command = Command::Withdraw(msg.amount);
//!         // A retried request (same idempotency key) is answered from the log, not applied
//!         // again.
//!         let outcome = match ctx.idempotency_key() {
//!             Some(key) => self.journal.execute_once(ctx, key, command).await,
//!             None => self.journal.execute(ctx, command).await,
//!         };
//!         match outcome {
//!             Ok(Ok(_seq)) => Ok(self.journal.state().balance),
//!             Ok(Err(rejection)) => Err(format!("{rejection:?}")),
//!             Err(e) => Err(e.to_string()),
//!         }
//!     }
//!
//!     // What `bunraku events` and `bunraku state` ask.
//!     #[handler]
//!     async fn events(&mut self, ctx: &Ctx, query: EventsQuery) -> Result<Vec<String>, String> {
//!         self.journal.answer_events(ctx, query).await
//!     }
//!
//!     #[handler]
//!     async fn state(&mut self, ctx: &Ctx, query: StateQuery) -> Result<String, String> {
//!         self.journal.answer_state(ctx, query).await
//!     }
//! }
//!
//! let mut bank = TestActor::<Bank>::builder().name("account/ann").start_default();
//! assert_eq!(bank.call(&Deposit { amount: 10 }).unwrap(), Ok(10));
//! assert_eq!(bank.call(&Withdraw { amount: 3 }).unwrap(), Ok(7));
//! assert_eq!(
//!     bank.call(&Withdraw { amount: 50 }).unwrap(),
//!     Err("InsufficientFunds { balance: 7 }".into()),
//! );
//! // A retry with the same key is not applied twice.
//! assert_eq!(bank.call_keyed(&Withdraw { amount: 2 }, "w-1").unwrap(), Ok(5));
//! assert_eq!(bank.call_keyed(&Withdraw { amount: 2 }, "w-1").unwrap(), Ok(5));
//!
//! let lines = bank.call(&EventsQuery { from: 0 }).unwrap().unwrap();
//! assert_eq!(lines.len(), 4, "three events and the marker of key w-1");
//! assert!(lines[0].contains(r#""event":{"Deposited":{"amount":10}}"#), "{}", lines[0]);
//! assert!(lines[3].contains(r#""dedup":"w-1""#), "{}", lines[3]);
//! assert_eq!(bank.call(&StateQuery { at: None }).unwrap().unwrap(), r#"{"balance":5}"#);
//!
//! // A new instance on the same log (a restart, a host restart) replays it.
//! let log = bank.event_log();
//! drop(bank);
//! let mut bank = TestActor::<Bank>::builder().name("account/ann").events(log).start_default();
//! assert_eq!(bank.actor().journal.state().balance, 5);
//! assert_eq!(bank.call_keyed(&Withdraw { amount: 2 }, "w-1").unwrap(), Ok(5), "still known");
//! ```
//!
//! # Recovery and snapshots
//!
//! [`Journal::recover`] reads the latest snapshot and the events after it in chunks of at most
//! 256 KiB, one host read per chunk: each chunk is its own guest turn, so a long replay never
//! runs past the actor's time budget. Every [`Aggregate::SNAPSHOT_EVERY`] events (100 by
//! default, `0` for never) `execute` also stores a snapshot of the state, so a replay reads at
//! most that many events after it. A snapshot failing is only logged: the events are durable,
//! and the next one is tried at the next multiple.
//!
//! # Changing events: versions and upcasting
//!
//! Events are stored postcard-encoded with the [`Aggregate::VERSION`] of the code that wrote
//! them, and they are kept forever, so today's code must read every version ever written.
//! postcard is not self-describing: the bytes do not say which fields they hold. So:
//!
//! - **Never change an event's encoding in place.** Renaming a field is fine (names are not
//!   encoded); adding, removing, reordering or retyping a field is not.
//! - **Adding a variant at the end of an enum** is compatible: old bytes still decode. Adding
//!   one in the middle renumbers the ones after it and is not.
//! - **Anything else is a new version**: bump `VERSION`, keep the old shape as its own type
//!   (`AccountEventV1`), and implement [`Aggregate::upcast`] to decode old versions into the
//!   current type (use [`decode`] for the payload):
//!
//! ```
//! # use bunraku_sdk::journal::{self, Aggregate};
//! # use bunraku_sdk::prelude::*;
//! # #[derive(Serialize, Deserialize, Default)]
//! # pub struct Account { balance: u64 }
//! /// What version 1 wrote.
//! #[derive(Deserialize)]
//! enum AccountEventV1 { Deposited { amount: u64 } }
//!
//! /// Version 2 adds a memo to deposits.
//! #[derive(Serialize, Deserialize)]
//! pub enum AccountEvent { Deposited { amount: u64, memo: String } }
//!
//! impl Aggregate for Account {
//!     type Command = u64;
//!     type Event = AccountEvent;
//!     type Rejection = String;
//!     const VERSION: u32 = 2;
//!
//!     fn handle(&self, amount: u64) -> Result<Vec<AccountEvent>, String> {
//!         Ok(vec![AccountEvent::Deposited { amount, memo: String::new() }])
//!     }
//!
//!     fn apply(&mut self, event: &AccountEvent) {
//!         let AccountEvent::Deposited { amount, .. } = event;
//!         self.balance += amount;
//!     }
//!
//!     fn upcast(version: u32, payload: &[u8]) -> Result<AccountEvent, Error> {
//!         match version {
//!             1 => match journal::decode::<AccountEventV1>(payload)? {
//!                 AccountEventV1::Deposited { amount } => {
//!                     Ok(AccountEvent::Deposited { amount, memo: "(before memos)".into() })
//!                 }
//!             },
//!             2 => journal::decode(payload),
//!             other => Err(Error::new(ErrorCode::Malformed, format!("unknown version {other}"))),
//!         }
//!     }
//! }
//! ```
//!
//! Snapshots are written with the current `VERSION` too; [`recover`](Journal::recover) ignores
//! a snapshot of another version (or one that does not decode), logs a warning, rebuilds the
//! state from the first event and stores a fresh snapshot. So changing the *state's* layout
//! needs nothing but a version bump.
//!
//! # Deduplication
//!
//! [`Journal::execute_once`] applies a command at most once per idempotency key: the key and the
//! command's outcome go into the same append as its events (an SDK record of version `0`), so a
//! replay rebuilds the table of keys along with the state, and snapshots carry it. A retried
//! command gets the outcome recorded the first time, a rejection included. The table keeps the
//! latest 10,000 keys ([`Dedup`]).
//!
//! # Reading across actors
//!
//! A [`Projection`] follows the events of every actor of a type (`account` for `account/ann`,
//! `account/bob`, ...) in the order they were committed: it catches up in chunks from a global
//! position, then waits for new events. Keep its [`position`](Projection::position) (with
//! [`Ctx::save`]) to resume where it was. Reading another actor's log needs the `read_events`
//! grant for it.
//!
//! # Concurrency
//!
//! A journal expects to be the only writer of its log: two instances of one address appending
//! (which the host prevents for one actor, but a test or a misconfiguration can cause) make the
//! later append fail with [`ErrorCode::Conflict`], and nothing of it is written. After a conflict
//! the journal is behind its log: [`recover`](Journal::recover) it again before going on.

use std::fmt;
use std::marker::PhantomData;

use bunraku_abi::{
    Append, Codec, Completion, ErrorCode, EventBatch, Log, NewEvent, ReadEvents, ReplyBody,
    Snapshot, StoredEvent, Until, decode_result,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::dedup::Dedup;
use crate::executor::Op;
use crate::{Ctx, Error, Message, codec, sys};

/// The most bytes of events one read asks for: a chunk of replay, one guest turn.
pub const CHUNK_BYTES: u32 = 256 * 1024;

/// The most lines [`Journal::answer_events`] returns at once.
pub const MAX_EVENT_LINES: usize = 1000;

/// The schema version of the SDK's own records (deduplication markers).
const MARKER_VERSION: u32 = 0;

/// An event-sourced state: how commands become events, and how events change the state.
///
/// `handle` decides and `apply` changes; both are pure (no I/O, no clock, no randomness: what
/// they need goes into the command or the event), so replaying the log always rebuilds the same
/// state. See the [module documentation](self) for an example.
pub trait Aggregate: Default + Serialize + DeserializeOwned + 'static {
    /// What the aggregate is asked to do.
    type Command;
    /// What happened: stored in the log, postcard-encoded.
    type Event: Serialize + DeserializeOwned;
    /// Why a command was refused (recorded for [`Journal::execute_once`]).
    type Rejection: Serialize + DeserializeOwned;

    /// The schema version of the events and snapshots this code writes (at least 1; `0` is the
    /// SDK's). Bump it when an event's encoding changes, and read older versions in
    /// [`upcast`](Aggregate::upcast).
    const VERSION: u32 = 1;

    /// Store a snapshot after every this many records of the log (`0`: never).
    const SNAPSHOT_EVERY: u64 = 100;

    /// Decides: the events `command` causes in the current state, or why it is refused. It
    /// changes nothing; the journal applies the events once they are durable.
    fn handle(&self, command: Self::Command) -> Result<Vec<Self::Event>, Self::Rejection>;

    /// Applies one event to the state. Pure: replaying the same events gives the same state.
    fn apply(&mut self, event: &Self::Event);

    /// Reads an event stored with schema `version`. The default decodes the current
    /// [`VERSION`](Aggregate::VERSION) and refuses any other with [`ErrorCode::Malformed`];
    /// override it to convert older versions into the current event type.
    fn upcast(version: u32, payload: &[u8]) -> Result<Self::Event, Error> {
        if version != Self::VERSION {
            return Err(Error::new(
                ErrorCode::Malformed,
                format!(
                    "an event of version {version}, and this code reads version {} \
                     (implement `Aggregate::upcast` to read older versions)",
                    Self::VERSION
                ),
            ));
        }
        decode(payload)
    }
}

/// Decodes a postcard payload (an event or a snapshot) as a `T`; for
/// [`Aggregate::upcast`].
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, Error> {
    codec::decode(Codec::Postcard, payload).map_err(|e| {
        Error::new(
            ErrorCode::Malformed,
            format!("does not decode as `{}`: {e}", std::any::type_name::<T>()),
        )
    })
}

/// A point in an actor's history, for [`Journal::state_at`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum At {
    /// After the event with this sequence number.
    Seq(u64),
    /// After the last event committed at or before this time, in milliseconds since the Unix
    /// epoch on the host's clock.
    Time(u64),
}

/// Asks an event-sourced actor for its events as JSON lines (what `bunraku events` sends);
/// answer it with [`Journal::answer_events`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Message)]
#[message(name = "bunraku.events", reply = Result<Vec<String>, String>)]
pub struct EventsQuery {
    /// Events after this sequence number (`0`: from the first).
    #[serde(default)]
    pub from: u64,
}

/// Asks an event-sourced actor for its state as JSON (what `bunraku state` sends); answer it
/// with [`Journal::answer_state`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Message)]
#[message(name = "bunraku.state", reply = Result<String, String>)]
pub struct StateQuery {
    /// The state as it was after the event with this sequence number (`bunraku state --at N`);
    /// `None`: now.
    #[serde(default)]
    pub at: Option<u64>,
}

/// An SDK record in the log (version 0): a key applied by `execute_once` and its outcome.
#[derive(Serialize, Deserialize)]
struct Marker {
    key: String,
    /// The postcard `Result<u64, A::Rejection>` the command came to.
    outcome: Vec<u8>,
}

/// What a snapshot holds.
#[derive(Serialize)]
struct SnapshotRef<'a, A> {
    state: &'a A,
    dedup: &'a Dedup,
}

#[derive(Deserialize)]
#[serde(bound = "A: DeserializeOwned")]
struct SnapshotOwned<A> {
    state: A,
    dedup: Dedup,
}

/// An [`Aggregate`] and the log it is folded from. See the [module documentation](self).
#[derive(Default)]
pub struct Journal<A: Aggregate> {
    state: A,
    seq: u64,
    dedup: Dedup,
}

impl<A: Aggregate + fmt::Debug> fmt::Debug for Journal<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Journal")
            .field("state", &self.state)
            .field("seq", &self.seq)
            .field("keys", &self.dedup.len())
            .finish()
    }
}

impl<A: Aggregate> Journal<A> {
    /// Rebuilds the journal of this actor from its log: the latest snapshot of the current
    /// version, then the events after it, read in chunks (one guest turn each). A snapshot of
    /// another version, or one that does not decode, is ignored with a warning and the state is
    /// rebuilt from the first event (and a fresh snapshot stored). An empty log gives the
    /// default state at sequence number 0.
    ///
    /// Errors: [`ErrorCode::Corrupt`] (a stored event failed its checksum; the message names it),
    /// [`ErrorCode::Malformed`] (an event that [`upcast`](Aggregate::upcast) cannot read),
    /// [`ErrorCode::StorageUnavailable`], [`ErrorCode::Denied`] (no storage grant).
    pub async fn recover(ctx: &Ctx) -> Result<Self, Error> {
        const {
            assert!(
                A::VERSION > 0,
                "Aggregate::VERSION 0 is reserved for the SDK"
            )
        };
        let replay = Replay::<A>::run(ctx, Until::Latest).await?;
        let journal = Self {
            state: replay.state,
            seq: replay.seq,
            dedup: replay.dedup,
        };
        let long_tail = A::SNAPSHOT_EVERY > 0 && replay.replayed >= A::SNAPSHOT_EVERY;
        if journal.seq > 0 && A::SNAPSHOT_EVERY > 0 && (replay.snapshot_ignored || long_tail) {
            journal.snapshot(ctx).await;
        }
        Ok(journal)
    }

    /// The current state: every event up to [`seq`](Self::seq) applied.
    pub fn state(&self) -> &A {
        &self.state
    }

    /// The sequence number of the last record applied (`0` for an empty log). SDK records
    /// (deduplication markers) count: this is where the next append expects the log to end.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Handles `command`; when accepted, appends its events and applies them once the host
    /// acknowledged them as committed. `Ok(Ok(seq))`: the sequence number of the last event
    /// written (unchanged when the command caused no event); `Ok(Err(rejection))`: refused,
    /// nothing written.
    ///
    /// Errors (nothing applied): [`ErrorCode::Conflict`] (the log moved on: another writer;
    /// [`recover`](Self::recover) again), [`ErrorCode::StorageUnavailable`] (not committed),
    /// [`ErrorCode::TooLarge`], [`ErrorCode::Denied`], [`ErrorCode::Malformed`] (an event does
    /// not encode).
    pub async fn execute(
        &mut self,
        ctx: &Ctx,
        command: A::Command,
    ) -> Result<Result<u64, A::Rejection>, Error> {
        match self.state.handle(command) {
            Ok(events) => self.persist(ctx, events).await.map(Ok),
            Err(rejection) => Ok(Err(rejection)),
        }
    }

    /// Like [`execute`](Self::execute), at most once per idempotency `key`: a key already
    /// applied returns the outcome recorded then (a rejection too) without handling the command
    /// again. The key and the outcome are written in the same append as the events (a rejection
    /// writes them alone), so they survive a restart with the state; the latest 10,000 keys
    /// are remembered.
    ///
    /// Errors: as [`execute`](Self::execute); nothing is recorded for the key then, so a retry
    /// handles the command.
    pub async fn execute_once(
        &mut self,
        ctx: &Ctx,
        key: &str,
        command: A::Command,
    ) -> Result<Result<u64, A::Rejection>, Error> {
        if let Some(bytes) = self.dedup.get_encoded(key) {
            return decode::<Result<u64, A::Rejection>>(bytes).map_err(|e| {
                Error::new(
                    ErrorCode::Malformed,
                    format!("the outcome recorded for key `{key}` {}", e.message()),
                )
            });
        }
        let (events, outcome) = match self.state.handle(command) {
            Ok(events) => {
                // The marker is the last record of the append: its sequence number is the
                // command's.
                let last = self.seq + events.len() as u64 + 1;
                (events, Ok(last))
            }
            Err(rejection) => (Vec::new(), Err(rejection)),
        };
        let outcome_bytes = encode(&outcome, "the outcome")?;
        let marker = Marker {
            key: key.to_owned(),
            outcome: outcome_bytes.clone(),
        };
        let marker = NewEvent {
            version: MARKER_VERSION,
            payload: encode(&marker, "the deduplication marker")?,
        };
        let mut records = encode_events::<A>(&events)?;
        records.push(marker);
        let key = Some((key.to_owned(), outcome_bytes));
        self.append(ctx, records, events, key).await?;
        Ok(outcome)
    }

    /// Appends `events` decided elsewhere (for instance by a saga's own logic) and applies them
    /// once committed; returns the sequence number of the last one (unchanged for no events).
    /// Errors: as [`execute`](Self::execute).
    pub async fn persist(&mut self, ctx: &Ctx, events: Vec<A::Event>) -> Result<u64, Error> {
        if events.is_empty() {
            return Ok(self.seq);
        }
        let records = encode_events::<A>(&events)?;
        self.append(ctx, records, events, None).await?;
        Ok(self.seq)
    }

    /// The state of this actor's log as it was at `at`, and the sequence number it reflects
    /// (the last record at or before `at`): replayed from the latest snapshot at or before that
    /// point. A sequence number past the end gives the current state.
    ///
    /// Errors: as [`recover`](Self::recover).
    pub async fn state_at(ctx: &Ctx, at: At) -> Result<(A, u64), Error> {
        let until = match at {
            At::Seq(seq) => Until::Seq(seq),
            At::Time(ms) => Until::Time(ms),
        };
        let replay = Replay::<A>::run(ctx, until).await?;
        Ok((replay.state, replay.seq))
    }

    /// Answers an [`EventsQuery`]: the events after `query.from`, at most
    /// [`MAX_EVENT_LINES`], one JSON object per line:
    /// `{"seq":3,"time_ms":..,"version":1,"event":<the upcast event as JSON>}`; an SDK marker as
    /// `{"seq":4,"time_ms":..,"version":0,"dedup":"<key>"}`; an event that does not upcast as
    /// `{"seq":..,"time_ms":..,"version":..,"error":"<why>"}`.
    pub async fn answer_events(
        &self,
        ctx: &Ctx,
        query: EventsQuery,
    ) -> Result<Vec<String>, String> {
        // Reading its own log needs nothing from the context; it is taken for symmetry with
        // `answer_state` (and so a handler can just pass its own).
        let _ = ctx;
        let mut lines = Vec::new();
        let mut from = query.from;
        while lines.len() < MAX_EVENT_LINES {
            let batch = chunk(from, Until::Latest)
                .await
                .map_err(|e| e.to_string())?;
            for event in &batch.events {
                if lines.len() == MAX_EVENT_LINES {
                    break;
                }
                lines.push(event_line::<A>(event));
                from = event.seq;
            }
            if batch.complete || batch.events.is_empty() {
                break;
            }
        }
        Ok(lines)
    }

    /// Answers a [`StateQuery`]: the state as JSON, now or as it was after event `query.at`
    /// ([`state_at`](Self::state_at) by sequence number).
    pub async fn answer_state(&self, ctx: &Ctx, query: StateQuery) -> Result<String, String> {
        match query.at {
            None => serde_json::to_string(&self.state).map_err(|e| e.to_string()),
            Some(seq) => {
                let (state, _) = Self::state_at(ctx, At::Seq(seq))
                    .await
                    .map_err(|e| e.to_string())?;
                serde_json::to_string(&state).map_err(|e| e.to_string())
            }
        }
    }

    /// Appends `records` after `self.seq` and, once acknowledged, applies `events` (the
    /// aggregate's events among them) and records `key` (the key and encoded outcome of its
    /// marker), then maybe stores a snapshot.
    async fn append(
        &mut self,
        ctx: &Ctx,
        records: Vec<NewEvent>,
        events: Vec<A::Event>,
        key: Option<(String, Vec<u8>)>,
    ) -> Result<(), Error> {
        const {
            assert!(
                A::VERSION > 0,
                "Aggregate::VERSION 0 is reserved for the SDK"
            )
        };
        let expected = self.seq;
        let append = Append {
            expected,
            events: records,
        };
        let bytes = encode(&append, "the append")?;
        let raw = sys::events_append(&bytes);
        drop(bytes);
        let last = match completion(raw).await? {
            Completion::Reply(ReplyBody::Ok { codec, payload }) => {
                codec::decode::<u64>(codec, &payload).map_err(|e| {
                    Error::new(
                        ErrorCode::Internal,
                        format!("the host acknowledged an append with {e}"),
                    )
                })?
            }
            Completion::Failed(ErrorCode::Conflict) => {
                return Err(Error::new(
                    ErrorCode::Conflict,
                    format!(
                        "the log no longer ends at seq {expected}: another writer appended; \
                         recover the journal again"
                    ),
                ));
            }
            other => return Err(unexpected(other, "an append")),
        };
        for event in &events {
            self.state.apply(event);
        }
        if let Some((key, outcome)) = key {
            self.dedup.record_encoded(key, outcome);
        }
        let before = self.seq;
        self.seq = last;
        let every = A::SNAPSHOT_EVERY;
        if every > 0 && last / every > before / every {
            self.snapshot(ctx).await;
        }
        Ok(())
    }

    /// Stores a snapshot of the state and the key table at `self.seq`; a failure is logged.
    async fn snapshot(&self, ctx: &Ctx) {
        let body = SnapshotRef {
            state: &self.state,
            dedup: &self.dedup,
        };
        let stored = async {
            let snapshot = Snapshot {
                seq: self.seq,
                version: A::VERSION,
                state: encode(&body, "the snapshot")?,
            };
            let raw = sys::events_snapshot(&encode(&snapshot, "the snapshot")?);
            match completion(raw).await? {
                Completion::Done => Ok(()),
                other => Err(unexpected(other, "a snapshot")),
            }
        };
        if let Err(e) = stored.await {
            ctx.warn(format_args!(
                "no snapshot at seq {} (replay reads the events instead): {e}",
                self.seq
            ));
        }
    }
}

/// A replay of this actor's log up to a point.
struct Replay<A: Aggregate> {
    state: A,
    dedup: Dedup,
    seq: u64,
    /// Records read after the snapshot (or from the start).
    replayed: u64,
    /// A snapshot was there but could not be used.
    snapshot_ignored: bool,
}

impl<A: Aggregate> Replay<A> {
    async fn run(ctx: &Ctx, until: Until) -> Result<Self, Error> {
        let mut replay = Self {
            state: A::default(),
            dedup: Dedup::default(),
            seq: 0,
            replayed: 0,
            snapshot_ignored: false,
        };
        let first = match read(own_log(0, until, true)).await {
            Ok(batch) => batch,
            Err(e) if e.code() == ErrorCode::Corrupt => {
                // The snapshot, or an event after it: try the events alone.
                ctx.warn(format_args!(
                    "reading the latest snapshot failed its checksum; replaying from the first \
                     event"
                ));
                replay.snapshot_ignored = true;
                chunk(0, until).await?
            }
            Err(e) => return Err(e),
        };
        let mut batch = first;
        if let Some(snapshot) = batch.snapshot.take() {
            match Self::restore(&snapshot) {
                Ok((state, dedup)) => {
                    replay.state = state;
                    replay.dedup = dedup;
                    replay.seq = snapshot.seq;
                }
                Err(why) => {
                    ctx.warn(format_args!(
                        "ignored the snapshot at seq {}: {why}; rebuilding the state from the \
                         first event",
                        snapshot.seq
                    ));
                    replay.snapshot_ignored = true;
                    batch = chunk(0, until).await?;
                }
            }
        }
        loop {
            for event in &batch.events {
                replay.apply(ctx, event)?;
            }
            if batch.complete || batch.events.is_empty() {
                return Ok(replay);
            }
            batch = chunk(replay.seq, until).await?;
        }
    }

    /// The state and key table of a snapshot of the current version.
    fn restore(snapshot: &Snapshot) -> Result<(A, Dedup), String> {
        if snapshot.version != A::VERSION {
            return Err(format!(
                "it is of version {}, and this code writes version {}",
                snapshot.version,
                A::VERSION
            ));
        }
        let body: SnapshotOwned<A> = decode(&snapshot.state).map_err(|e| e.to_string())?;
        Ok((body.state, body.dedup))
    }

    /// Applies one stored record.
    fn apply(&mut self, ctx: &Ctx, event: &StoredEvent) -> Result<(), Error> {
        if event.version == MARKER_VERSION {
            match decode::<Marker>(&event.payload) {
                Ok(marker) => self.dedup.record_encoded(marker.key, marker.outcome),
                Err(e) => ctx.warn(format_args!(
                    "skipped the deduplication marker at seq {}: {e}",
                    event.seq
                )),
            }
        } else {
            let decoded = A::upcast(event.version, &event.payload).map_err(|e| {
                Error::new(
                    e.code(),
                    format!(
                        "event {} (version {}) cannot be read: {}",
                        event.seq,
                        event.version,
                        e.message()
                    ),
                )
            })?;
            self.state.apply(&decoded);
        }
        self.seq = event.seq;
        self.replayed += 1;
        Ok(())
    }
}

/// One event of the follower of a type ([`Projection`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded<E> {
    /// The actor whose log holds it (`account/ann`).
    pub actor: String,
    /// Its global position: increases with every committed event, across actors.
    pub pos: u64,
    /// Its sequence number in its actor's log.
    pub seq: u64,
    /// When it was committed, in milliseconds since the Unix epoch on the host's clock.
    pub time_ms: u64,
    /// The event.
    pub event: E,
}

/// Follows the events of every actor of a type, in commit order: catches up from a position in
/// chunks, then waits for new events. SDK markers are skipped.
///
/// Events are decoded by a function of `(version, payload)`: by default postcard as an `E`
/// whatever the version (enough while the events never changed); give the aggregate's
/// [`upcast`](Aggregate::upcast) with [`with_upcast`](Self::with_upcast) to read every version
/// the way the aggregate does. An event that does not decode stops the projection at it:
/// [`next`](Self::next) returns the events before it, then fails with [`ErrorCode::Malformed`]
/// naming it, without moving past it.
///
/// ```
/// use bunraku_sdk::journal::{Projection, Recorded};
/// use bunraku_sdk::prelude::*;
/// use bunraku_sdk::testing::{EventLog, TestActor};
///
/// #[derive(Serialize, Deserialize, Message)]
/// #[message(reply = Result<Vec<(String, u64)>, String>)]
/// struct CatchUp {}
///
/// /// Totals of every `account/*`, kept up to date from their logs.
/// #[derive(Default)]
/// struct Totals { projection: Option<Projection<u64>> }
///
/// #[actor]
/// impl Totals {
///     #[handler]
///     async fn catch_up(&mut self, ctx: &Ctx, _msg: CatchUp) -> Result<Vec<(String, u64)>, String> {
///         let projection = self.projection.get_or_insert_with(|| Projection::new("account", 0));
///         let events = projection.next(ctx).await.map_err(|e| e.to_string())?;
///         Ok(events.into_iter().map(|r: Recorded<u64>| (r.actor, r.event)).collect())
///     }
/// }
///
/// let log = EventLog::new();
/// log.append("account/ann", 1, &5u64);
/// log.append("shop/tea", 1, &1u64);
/// log.append("account/bob", 1, &7u64);
/// let mut totals = TestActor::<Totals>::builder().events(log).start_default();
/// let seen = totals.call(&CatchUp {}).unwrap().unwrap();
/// assert_eq!(seen, [("account/ann".to_string(), 5), ("account/bob".to_string(), 7)]);
/// assert_eq!(totals.actor().projection.as_ref().unwrap().position(), 3);
/// ```
pub struct Projection<E> {
    kind: String,
    position: u64,
    upcast: fn(u32, &[u8]) -> Result<E, Error>,
    _event: PhantomData<fn() -> E>,
}

impl<E> fmt::Debug for Projection<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Projection")
            .field("kind", &self.kind)
            .field("position", &self.position)
            .finish()
    }
}

impl<E: DeserializeOwned> Projection<E> {
    /// Follows the actors of type `kind` (the part of their address before `/`) from global
    /// position `from_pos` (`0`: from the first event; a saved [`position`](Self::position) to
    /// resume), decoding events as postcard `E`.
    pub fn new(kind: &str, from_pos: u64) -> Self {
        Self {
            kind: kind.to_owned(),
            position: from_pos,
            upcast: |_, payload| decode(payload),
            _event: PhantomData,
        }
    }
}

impl<E> Projection<E> {
    /// Decodes events with `upcast` (typically an aggregate's
    /// [`Aggregate::upcast`]) instead of as postcard `E`.
    pub fn with_upcast(mut self, upcast: fn(u32, &[u8]) -> Result<E, Error>) -> Self {
        self.upcast = upcast;
        self
    }

    /// The global position of the last event read: persist it to resume there.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The next events: at most a chunk of those already committed after
    /// [`position`](Self::position); when there are none, waits until some are (other
    /// handlers run meanwhile if the actor's concurrency allows). Never empty.
    ///
    /// Errors: [`ErrorCode::Malformed`] (an event that does not decode; see the type's
    /// documentation), [`ErrorCode::Corrupt`], [`ErrorCode::Denied`] (no `read_events` grant
    /// for the type), [`ErrorCode::StorageUnavailable`].
    pub async fn next(&mut self, ctx: &Ctx) -> Result<Vec<Recorded<E>>, Error> {
        // Reads go through the host directly; the context marks this as actor code.
        let _ = ctx;
        loop {
            let events = self.read(true).await?;
            if !events.is_empty() {
                return Ok(events);
            }
        }
    }

    /// Like [`next`](Self::next), without waiting: empty when nothing is new.
    pub async fn try_next(&mut self, ctx: &Ctx) -> Result<Vec<Recorded<E>>, Error> {
        let _ = ctx;
        self.read(false).await
    }

    async fn read(&mut self, wait: bool) -> Result<Vec<Recorded<E>>, Error> {
        let from = self.position;
        let batch = read(ReadEvents {
            log: Log::Type(self.kind.clone()),
            from,
            until: Until::Latest,
            snapshot: false,
            max_bytes: CHUNK_BYTES,
            wait,
        })
        .await
        .map_err(|e| match e.code() {
            ErrorCode::Corrupt => Error::new(
                ErrorCode::Corrupt,
                format!(
                    "an event of type `{}` after position {from} failed its checksum",
                    self.kind
                ),
            ),
            _ => e,
        })?;
        let mut out = Vec::with_capacity(batch.events.len());
        for stored in batch.events {
            if stored.version != MARKER_VERSION {
                match (self.upcast)(stored.version, &stored.payload) {
                    Ok(event) => out.push(Recorded {
                        actor: stored.actor,
                        pos: stored.pos,
                        seq: stored.seq,
                        time_ms: stored.time_ms,
                        event,
                    }),
                    Err(e) if out.is_empty() => {
                        return Err(Error::new(
                            ErrorCode::Malformed,
                            format!(
                                "event {} of `{}` (position {}, version {}) cannot be read: {}",
                                stored.seq,
                                stored.actor,
                                stored.pos,
                                stored.version,
                                e.message()
                            ),
                        ));
                    }
                    // Hand out what came before it; the next call stops at it.
                    Err(_) => return Ok(out),
                }
            }
            self.position = stored.pos;
        }
        self.position = self.position.max(batch.last);
        Ok(out)
    }
}

/// A read of this actor's own log.
fn own_log(from: u64, until: Until, snapshot: bool) -> ReadEvents {
    ReadEvents {
        log: Log::Own,
        from,
        until,
        snapshot,
        max_bytes: CHUNK_BYTES,
        wait: false,
    }
}

/// Reads with `events_read`: one host operation, one guest turn.
async fn read(req: ReadEvents) -> Result<EventBatch, Error> {
    let raw = sys::events_read(&encode(&req, "the read")?);
    match completion(raw).await? {
        Completion::Reply(ReplyBody::Ok { codec, payload }) => codec::decode(codec, &payload)
            .map_err(|e| {
                Error::new(
                    ErrorCode::Internal,
                    format!("the host answered a read with {e}"),
                )
            }),
        other => Err(unexpected(other, "a read")),
    }
}

/// Starts the operation a host function returned and waits for its completion.
async fn completion(raw: i64) -> Result<Completion, Error> {
    let raw = decode_result(raw)?;
    let op = match u32::try_from(raw) {
        Ok(op) if op > 0 => op,
        _ => {
            return Err(Error::new(
                ErrorCode::Internal,
                format!("the host returned operation id {raw}"),
            ));
        }
    };
    Ok(Op::new(op).await)
}

/// The error for a completion that is not the expected success.
fn unexpected(completion: Completion, what: &str) -> Error {
    match completion {
        Completion::Failed(code) => code.into(),
        Completion::Reply(ReplyBody::Error { code, message }) => Error::new(code, message),
        other => Error::new(
            ErrorCode::Internal,
            format!("{what} completed with {other:?}"),
        ),
    }
}

/// Reads a chunk of this actor's own log after `from` (no snapshot); a corrupt read is located
/// to the event that failed its checksum.
async fn chunk(from: u64, until: Until) -> Result<EventBatch, Error> {
    match read(own_log(from, until, false)).await {
        Err(e) if e.code() == ErrorCode::Corrupt => {
            let message = match locate_corrupt(from, until).await {
                Some(seq) => format!("event {seq} of the log failed its checksum"),
                None => format!("an event after seq {from} failed its checksum"),
            };
            Err(Error::new(
                ErrorCode::Corrupt,
                format!("{message}; it is not served, and nothing was deleted"),
            ))
        }
        other => other,
    }
}

/// The sequence number of the event that made a read after `from` fail with `Corrupt`.
///
/// The failing read served at most one chunk, so the corrupt event is in it; a read of
/// `from..=m` (the same chunk, cut at `m`) fails exactly when the corrupt event is at or before
/// `m`. Doubling `m` finds a failing bound and bisecting narrows it: a few dozen reads for even
/// the longest chunk, on a path taken only when the store is damaged.
async fn locate_corrupt(from: u64, until: Until) -> Option<u64> {
    let limit = match until {
        Until::Seq(seq) => seq,
        Until::Latest | Until::Time(_) => u64::MAX,
    };
    let fails = |m: u64| async move {
        match read(own_log(from, Until::Seq(m), false)).await {
            Ok(batch) => Some((false, batch.last <= m)),
            Err(e) if e.code() == ErrorCode::Corrupt => Some((true, false)),
            Err(_) => None,
        }
    };
    // Reads of `from..=good` succeed; the corrupt event is after `good`.
    let mut good = from;
    let mut step = 1u64;
    let mut bad = loop {
        let m = from.saturating_add(step).min(limit);
        match fails(m).await? {
            (true, _) => break m,
            // The log ends (or the range does) without a failure: it moved or healed.
            (false, true) => return None,
            (false, false) if m == limit => return None,
            (false, false) => {
                good = m;
                step = step.saturating_mul(2);
            }
        }
    };
    while bad - good > 1 {
        let mid = good + (bad - good) / 2;
        match fails(mid).await? {
            (true, _) => bad = mid,
            (false, _) => good = mid,
        }
    }
    Some(bad)
}

fn encode<T: Serialize + ?Sized>(value: &T, what: &str) -> Result<Vec<u8>, Error> {
    codec::encode(Codec::Postcard, value)
        .map_err(|e| Error::new(ErrorCode::Malformed, format!("{what} does not encode: {e}")))
}

fn encode_events<A: Aggregate>(events: &[A::Event]) -> Result<Vec<NewEvent>, Error> {
    events
        .iter()
        .map(|event| {
            Ok(NewEvent {
                version: A::VERSION,
                payload: encode(event, "an event")?,
            })
        })
        .collect()
}

/// One line of [`Journal::answer_events`], its fields in this order.
#[derive(Serialize, Default)]
struct Line {
    seq: u64,
    time_ms: u64,
    version: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dedup: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

fn event_line<A: Aggregate>(stored: &StoredEvent) -> String {
    let mut line = Line {
        seq: stored.seq,
        time_ms: stored.time_ms,
        version: stored.version,
        ..Line::default()
    };
    if stored.version == MARKER_VERSION {
        match decode::<Marker>(&stored.payload) {
            Ok(marker) => line.dedup = Some(marker.key),
            Err(e) => line.error = Some(e.to_string()),
        }
    } else {
        let json = A::upcast(stored.version, &stored.payload).and_then(|event| {
            serde_json::to_value(&event)
                .map_err(|e| Error::new(ErrorCode::Malformed, e.to_string()))
        });
        match json {
            Ok(json) => line.event = Some(json),
            Err(e) => line.error = Some(e.to_string()),
        }
    }
    serde_json::to_string(&line).unwrap_or_else(|e| format!(r#"{{"error":"{e}"}}"#))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::testing::{EventLog, TestActor};
    use crate::{Level, actor};

    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    enum Cmd {
        Deposit(u32),
        Withdraw(u32),
        /// `n` deposits of 1 in one command (`0`: no event).
        Split(u8),
    }

    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    enum Rej {
        Zero,
        Insufficient { balance: i64 },
    }

    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    enum Ev {
        Deposited(u32),
        Withdrawn(u32),
    }

    /// A balance, and a fold that depends on the order of events.
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
    struct Acct {
        balance: i64,
        trail: u64,
    }

    fn decide(balance: i64, cmd: Cmd) -> Result<Vec<(bool, u32)>, Rej> {
        match cmd {
            Cmd::Deposit(0) | Cmd::Withdraw(0) => Err(Rej::Zero),
            Cmd::Deposit(n) => Ok(vec![(true, n)]),
            Cmd::Withdraw(n) if i64::from(n) > balance => Err(Rej::Insufficient { balance }),
            Cmd::Withdraw(n) => Ok(vec![(false, n)]),
            Cmd::Split(n) => Ok(vec![(true, 1); usize::from(n)]),
        }
    }

    impl Acct {
        fn fold(&mut self, deposit: bool, n: u32) {
            self.balance += if deposit { i64::from(n) } else { -i64::from(n) };
            self.trail = self
                .trail
                .wrapping_mul(31)
                .wrapping_add(u64::from(n) * 2 + u64::from(deposit));
        }
    }

    impl Aggregate for Acct {
        type Command = Cmd;
        type Event = Ev;
        type Rejection = Rej;
        const SNAPSHOT_EVERY: u64 = 5;

        fn handle(&self, cmd: Cmd) -> Result<Vec<Ev>, Rej> {
            let events = decide(self.balance, cmd)?;
            Ok(events
                .into_iter()
                .map(|(d, n)| {
                    if d {
                        Ev::Deposited(n)
                    } else {
                        Ev::Withdrawn(n)
                    }
                })
                .collect())
        }

        fn apply(&mut self, event: &Ev) {
            match *event {
                Ev::Deposited(n) => self.fold(true, n),
                Ev::Withdrawn(n) => self.fold(false, n),
            }
        }
    }

    /// Version 2 of the same account: deposits carry a memo.
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    enum EvV2 {
        Deposited { amount: u32, memo: String },
        Withdrawn(u32),
    }

    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
    struct AcctV2 {
        balance: i64,
        trail: u64,
        memos: Vec<String>,
    }

    impl Aggregate for AcctV2 {
        type Command = Cmd;
        type Event = EvV2;
        type Rejection = Rej;
        const VERSION: u32 = 2;
        const SNAPSHOT_EVERY: u64 = 10;

        fn handle(&self, cmd: Cmd) -> Result<Vec<EvV2>, Rej> {
            let events = decide(self.balance, cmd)?;
            Ok(events
                .into_iter()
                .map(|(d, n)| match d {
                    true => EvV2::Deposited {
                        amount: n,
                        memo: "v2".into(),
                    },
                    false => EvV2::Withdrawn(n),
                })
                .collect())
        }

        fn apply(&mut self, event: &EvV2) {
            let mut acct = Acct {
                balance: self.balance,
                trail: self.trail,
            };
            match event {
                EvV2::Deposited { amount, memo } => {
                    acct.fold(true, *amount);
                    self.memos.push(memo.clone());
                }
                EvV2::Withdrawn(n) => acct.fold(false, *n),
            }
            (self.balance, self.trail) = (acct.balance, acct.trail);
        }

        fn upcast(version: u32, payload: &[u8]) -> Result<EvV2, Error> {
            match version {
                1 => Ok(match decode::<Ev>(payload)? {
                    Ev::Deposited(amount) => EvV2::Deposited {
                        amount,
                        memo: "v1".into(),
                    },
                    Ev::Withdrawn(n) => EvV2::Withdrawn(n),
                }),
                2 => decode(payload),
                v => Err(Error::new(ErrorCode::Malformed, format!("version {v}"))),
            }
        }
    }

    type Fail = (ErrorCode, String);
    type Outcome = Result<Result<u64, Rej>, Fail>;

    fn fail(e: Error) -> Fail {
        (e.code(), e.message().to_owned())
    }

    #[derive(Serialize, Deserialize, Message)]
    #[message(reply = Outcome)]
    struct Exec(Cmd);

    #[derive(Serialize, Deserialize, Message)]
    #[message(reply = Outcome)]
    struct ExecOnce(String, Cmd);

    #[derive(Serialize, Deserialize, Message)]
    #[message(reply = Result<u64, Fail>)]
    struct Persist(Vec<Ev>);

    #[derive(Serialize, Deserialize, Message)]
    #[message(reply = Result<u64, Fail>)]
    struct Recover;

    #[derive(Serialize, Deserialize, Message)]
    #[message(reply = Result<(String, u64), Fail>)]
    enum StateAt {
        Seq(u64),
        Time(u64),
    }

    #[derive(Serialize, Deserialize, Message)]
    struct Follow;

    /// An actor keeping a journal of `$agg`; `recovered` holds the error of `on_start`'s recovery.
    macro_rules! ledger {
        ($name:ident, $agg:ty) => {
            #[derive(Default)]
            struct $name {
                journal: Journal<$agg>,
                recovered: Option<Fail>,
            }

            #[actor]
            impl $name {
                async fn on_start(&mut self, ctx: &Ctx) {
                    match Journal::recover(ctx).await {
                        Ok(journal) => self.journal = journal,
                        Err(e) => self.recovered = Some(fail(e)),
                    }
                }

                #[handler]
                async fn exec(&mut self, ctx: &Ctx, msg: Exec) -> Outcome {
                    self.journal.execute(ctx, msg.0).await.map_err(fail)
                }

                #[handler]
                async fn exec_once(&mut self, ctx: &Ctx, msg: ExecOnce) -> Outcome {
                    self.journal
                        .execute_once(ctx, &msg.0, msg.1)
                        .await
                        .map_err(fail)
                }

                #[handler]
                async fn recover(&mut self, ctx: &Ctx, _msg: Recover) -> Result<u64, Fail> {
                    self.journal = Journal::recover(ctx).await.map_err(fail)?;
                    Ok(self.journal.seq())
                }

                #[handler]
                async fn state_at(
                    &mut self,
                    ctx: &Ctx,
                    msg: StateAt,
                ) -> Result<(String, u64), Fail> {
                    let at = match msg {
                        StateAt::Seq(seq) => At::Seq(seq),
                        StateAt::Time(ms) => At::Time(ms),
                    };
                    let (state, seq) = Journal::<$agg>::state_at(ctx, at).await.map_err(fail)?;
                    Ok((serde_json::to_string(&state).unwrap(), seq))
                }

                #[handler]
                async fn events(
                    &mut self,
                    ctx: &Ctx,
                    q: EventsQuery,
                ) -> Result<Vec<String>, String> {
                    self.journal.answer_events(ctx, q).await
                }

                #[handler]
                async fn state(&mut self, ctx: &Ctx, q: StateQuery) -> Result<String, String> {
                    self.journal.answer_state(ctx, q).await
                }
            }
        };
    }

    ledger!(Ledger, Acct);
    ledger!(LedgerV2, AcctV2);

    const ANN: &str = "account/ann";

    fn ledger(log: &EventLog) -> TestActor<Ledger> {
        TestActor::<Ledger>::builder()
            .name(ANN)
            .events(log.clone())
            .start_default()
    }

    fn state_of(t: &TestActor<Ledger>) -> (Acct, u64) {
        let actor = t.actor();
        assert_eq!(actor.recovered, None);
        (actor.journal.state().clone(), actor.journal.seq())
    }

    /// A copy of `actor`'s events without its snapshots.
    fn events_only(log: &EventLog, actor: &str) -> EventLog {
        let copy = EventLog::new();
        for e in log.events_of(actor) {
            copy.append_bytes(actor, e.version, e.payload);
        }
        copy
    }

    fn cmd() -> impl Strategy<Value = Cmd> {
        prop_oneof![
            (0u32..50).prop_map(Cmd::Deposit),
            (0u32..60).prop_map(Cmd::Withdraw),
            (0u8..4).prop_map(Cmd::Split),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn replay_equals_live_state_for_any_command_sequence(
            cmds in prop::collection::vec((cmd(), prop::option::of(0u8..6)), 0..40)
        ) {
            let log = EventLog::new();
            let mut live = ledger(&log);
            let mut model = Acct::default();
            let mut first_outcomes = std::collections::HashMap::new();
            for (cmd, key) in cmds {
                let outcome = match key {
                    Some(k) => live.call(&ExecOnce(format!("k{k}"), cmd.clone())).unwrap(),
                    None => live.call(&Exec(cmd.clone())).unwrap(),
                };
                let outcome = outcome.unwrap();
                if let Some(first) = key.and_then(|k| first_outcomes.get(&k)) {
                    // A key already applied: its first outcome, and no change.
                    prop_assert_eq!(&outcome, first);
                    continue;
                }
                let expected = model.handle(cmd);
                prop_assert_eq!(outcome.is_ok(), expected.is_ok());
                if let Ok(events) = expected {
                    events.iter().for_each(|e| model.apply(e));
                }
                if let Some(k) = key {
                    first_outcomes.insert(k, outcome);
                }
            }
            let (state, seq) = state_of(&live);
            prop_assert_eq!(&state, &model);
            // Replay from the snapshots and the tail...
            let replayed = ledger(&log);
            prop_assert_eq!(state_of(&replayed), (state.clone(), seq));
            prop_assert_eq!(&replayed.actor().journal.dedup, &live.actor().journal.dedup);
            // ...equals replay of every event from the first.
            let full = ledger(&events_only(&log, ANN));
            prop_assert_eq!(state_of(&full), (state, seq));
            prop_assert_eq!(&full.actor().journal.dedup, &live.actor().journal.dedup);
        }
    }

    #[test]
    fn a_snapshot_is_used_and_the_tail_replayed_after_it() {
        let log = EventLog::new();
        let mut live = ledger(&log);
        for n in 1..=12 {
            live.call(&Exec(Cmd::Deposit(n))).unwrap().unwrap().unwrap();
        }
        let snaps: Vec<u64> = log.snapshots_of(ANN).iter().map(|s| s.seq).collect();
        assert_eq!(snaps, [5, 10], "every SNAPSHOT_EVERY = 5 records");
        let full = ledger(&events_only(&log, ANN));
        assert_eq!(state_of(&ledger(&log)), state_of(&full));
        assert_eq!(state_of(&full), state_of(&live));

        // The snapshot is what recovery starts from: one that says otherwise wins over the
        // events before it.
        let doctored = events_only(&log, ANN);
        let lie = Acct {
            balance: 1000,
            trail: 0,
        };
        doctored.snapshot(ANN, 10, 1, &(lie, Dedup::default()));
        let (state, seq) = state_of(&ledger(&doctored));
        assert_eq!((state.balance, seq), (1000 + 11 + 12, 12));
    }

    #[test]
    fn version_1_events_replay_under_version_2_code_through_upcast() {
        let mut v2 = TestActor::<LedgerV2>::builder()
            .name(ANN)
            .event(1, &Ev::Deposited(10))
            .event(1, &Ev::Withdrawn(4))
            .start_default();
        assert_eq!(v2.actor().recovered, None);
        assert_eq!(v2.actor().journal.state().balance, 6);
        assert_eq!(v2.actor().journal.state().memos, ["v1"]);
        assert_eq!(v2.call(&Exec(Cmd::Deposit(1))).unwrap(), Ok(Ok(3)));
        let versions: Vec<u32> = v2.events().iter().map(|e| e.version).collect();
        assert_eq!(
            versions,
            [1, 1, 2],
            "new events are written with the new version"
        );
        let lines = v2.call(&EventsQuery { from: 1 }).unwrap().unwrap();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].contains(r#""version":1,"event":{"Withdrawn":4}"#),
            "{}",
            lines[0]
        );
        assert!(lines[1].contains(r#""memo":"v2""#), "{}", lines[1]);

        // And version 1 code cannot read version 2 events: a typed error naming the event.
        let v1 = ledger(&v2.event_log());
        let (code, message) = v1.actor().recovered.clone().unwrap();
        assert_eq!(code, ErrorCode::Malformed);
        assert!(message.contains("event 3 (version 2)"), "{message}");
    }

    #[test]
    fn a_snapshot_of_an_old_version_is_ignored_and_the_state_rebuilt() {
        let old = Acct {
            balance: 999,
            trail: 0,
        };
        let v2 = TestActor::<LedgerV2>::builder()
            .name(ANN)
            .event(1, &Ev::Deposited(10))
            .event(1, &Ev::Deposited(5))
            .snapshot(2, 1, &(old, Dedup::default()))
            .start_default();
        assert_eq!(v2.actor().recovered, None);
        assert_eq!(v2.actor().journal.state().balance, 15);
        assert!(
            v2.logs().iter().any(|l| l.level == Level::Warn
                && l.message.contains("ignored the snapshot at seq 2")
                && l.message.contains("version 1")),
            "{:?}",
            v2.logs()
        );
        let snaps = v2.event_log().snapshots_of(ANN);
        let fresh = snaps.last().unwrap();
        assert_eq!(
            (fresh.seq, fresh.version),
            (2, 2),
            "a fresh snapshot replaces it"
        );

        // A snapshot of the current version that does not decode is ignored the same way.
        let log = EventLog::new();
        log.append(ANN, 1, &Ev::Deposited(3));
        log.snapshot_bytes(ANN, 1, 1, vec![0xff; 3]);
        assert_eq!(state_of(&ledger(&log)).0.balance, 3);
    }

    #[test]
    fn execute_once_applies_a_key_once_and_returns_the_recorded_outcome() {
        let log = EventLog::new();
        let mut t = ledger(&log);
        let first = t.call(&ExecOnce("a".into(), Cmd::Deposit(10))).unwrap();
        assert_eq!(first, Ok(Ok(2)), "the event and the key's marker");
        assert_eq!(
            t.call(&ExecOnce("a".into(), Cmd::Deposit(10))).unwrap(),
            first
        );
        let refused = t.call(&ExecOnce("b".into(), Cmd::Withdraw(50))).unwrap();
        assert_eq!(refused, Ok(Err(Rej::Insufficient { balance: 10 })));
        // The balance changed since, but the recorded rejection is what the key gets.
        t.call(&Exec(Cmd::Deposit(100))).unwrap().unwrap().unwrap();
        assert_eq!(
            t.call(&ExecOnce("b".into(), Cmd::Withdraw(50))).unwrap(),
            refused
        );
        t.call(&Exec(Cmd::Deposit(1))).unwrap().unwrap().unwrap();
        assert_eq!(state_of(&t).0.balance, 111);
        let markers = t.events().iter().filter(|e| e.version == 0).count();
        assert_eq!(markers, 2, "one marker per key, a rejection's included");

        // After recovery, from the events alone and from a snapshot holding the keys.
        for log in [events_only(&log, ANN), log.clone()] {
            let mut again = ledger(&log);
            assert_eq!(
                again.call(&ExecOnce("a".into(), Cmd::Deposit(10))).unwrap(),
                first
            );
            assert_eq!(
                again
                    .call(&ExecOnce("b".into(), Cmd::Withdraw(50)))
                    .unwrap(),
                refused
            );
            assert_eq!(state_of(&again).0.balance, 111);
        }
        let snaps: Vec<u64> = log.snapshots_of(ANN).iter().map(|s| s.seq).collect();
        assert_eq!(
            snaps,
            [5],
            "the second pass started from a snapshot after both keys"
        );
    }

    #[test]
    fn a_second_writer_gets_a_conflict_and_applies_nothing() {
        let log = EventLog::new();
        let mut a = ledger(&log);
        let mut b = ledger(&log);
        a.call(&Exec(Cmd::Deposit(1))).unwrap().unwrap().unwrap();
        let (code, message) = b.call(&Exec(Cmd::Deposit(2))).unwrap().unwrap_err();
        assert_eq!(code, ErrorCode::Conflict);
        assert!(message.contains("seq 0"), "{message}");
        assert_eq!(state_of(&b), (Acct::default(), 0));
        // Recovered, it goes on from the log.
        assert_eq!(b.call(&Recover).unwrap(), Ok(1));
        assert_eq!(b.call(&Exec(Cmd::Deposit(2))).unwrap(), Ok(Ok(2)));
        assert_eq!(ledger(&log).actor().journal.state().balance, 3);
    }

    #[test]
    fn a_corrupt_event_fails_recovery_naming_its_seq() {
        let log = EventLog::new();
        for n in 1..=40 {
            log.append(ANN, 1, &Ev::Deposited(n));
        }
        log.corrupt(ANN, 23);
        let t = ledger(&log);
        let (code, message) = t.actor().recovered.clone().unwrap();
        assert_eq!(code, ErrorCode::Corrupt);
        assert!(message.contains("event 23 "), "{message}");
        let mut t = t;
        let (code, message) = t.call(&StateAt::Seq(30)).unwrap().unwrap_err();
        assert_eq!(code, ErrorCode::Corrupt);
        assert!(message.contains("event 23 "), "{message}");
        // Before the corrupt event, the history is still readable.
        let (state, seq) = t.call(&StateAt::Seq(22)).unwrap().unwrap();
        assert_eq!(seq, 22);
        assert!(
            state.contains(&format!("\"balance\":{}", (1..=22).sum::<i64>())),
            "{state}"
        );
    }

    #[test]
    fn a_projection_catches_up_across_two_actors_then_sees_a_live_event() {
        #[derive(Default)]
        struct Totals {
            projection: Option<Projection<Ev>>,
            seen: Vec<(String, u64, Ev)>,
        }

        #[actor]
        impl Totals {
            #[handler]
            async fn follow(&mut self, ctx: &Ctx, _msg: Follow) {
                let projection = self
                    .projection
                    .get_or_insert_with(|| Projection::new("account", 0).with_upcast(Acct::upcast));
                let events = projection.next(ctx).await.unwrap();
                self.seen
                    .extend(events.into_iter().map(|r| (r.actor, r.seq, r.event)));
            }
        }

        let log = EventLog::new();
        let mut ann = ledger(&log);
        let mut bob = TestActor::<Ledger>::builder()
            .name("account/bob")
            .events(log.clone())
            .start_default();
        ann.call(&Exec(Cmd::Deposit(1))).unwrap().unwrap().unwrap();
        bob.call(&ExecOnce("k".into(), Cmd::Deposit(2)))
            .unwrap()
            .unwrap()
            .unwrap();
        log.append("shop/tea", 1, &Ev::Deposited(99));
        ann.call(&Exec(Cmd::Deposit(3))).unwrap().unwrap().unwrap();

        let mut totals = TestActor::<Totals>::builder()
            .events(log.clone())
            .start_default();
        totals.send(&Follow).unwrap();
        let seen = totals.actor().seen.clone();
        assert_eq!(
            seen,
            [
                (ANN.to_owned(), 1, Ev::Deposited(1)),
                ("account/bob".to_owned(), 1, Ev::Deposited(2)),
                (ANN.to_owned(), 2, Ev::Deposited(3)),
            ],
            "in commit order, without the marker or another type's events"
        );
        let caught_up = totals.actor().projection.as_ref().unwrap().position();
        assert_eq!(caught_up, 5, "past the other type's event too");

        // Nothing new: the next read waits...
        totals.send(&Follow).unwrap();
        assert_eq!(totals.in_flight(), 1);
        totals.poll();
        assert_eq!(totals.in_flight(), 1, "still nothing new");
        // ...until an append by another actor.
        bob.call(&Exec(Cmd::Withdraw(1))).unwrap().unwrap().unwrap();
        totals.poll();
        assert_eq!(totals.in_flight(), 0);
        let last = totals.actor().seen.last().cloned();
        assert_eq!(last, Some(("account/bob".to_owned(), 3, Ev::Withdrawn(1))));
        assert_eq!(totals.actor().projection.as_ref().unwrap().position(), 6);
    }

    #[test]
    fn state_at_replays_to_a_sequence_number_or_a_time() {
        let log = EventLog::new();
        let mut t = ledger(&log);
        let start = log.now_ms();
        for n in 1..=8 {
            t.call(&Exec(Cmd::Deposit(n))).unwrap().unwrap().unwrap();
            log.advance(Duration::from_secs(60));
        }
        let balance = |json: &str| -> i64 {
            let v: serde_json::Value = serde_json::from_str(json).unwrap();
            v["balance"].as_i64().unwrap()
        };
        let (state, seq) = t.call(&StateAt::Seq(3)).unwrap().unwrap();
        assert_eq!((balance(&state), seq), (6, 3));
        // Past a snapshot (at 5), and past the end.
        let (state, seq) = t.call(&StateAt::Seq(7)).unwrap().unwrap();
        assert_eq!((balance(&state), seq), (28, 7));
        let (state, seq) = t.call(&StateAt::Seq(99)).unwrap().unwrap();
        assert_eq!((balance(&state), seq), (36, 8));
        // Event n was committed at start + (n - 1) minutes.
        let (state, seq) = t
            .call(&StateAt::Time(start + 4 * 60_000 + 30_000))
            .unwrap()
            .unwrap();
        assert_eq!((balance(&state), seq), (15, 5));
        let (state, seq) = t.call(&StateAt::Time(start - 1)).unwrap().unwrap();
        assert_eq!((balance(&state), seq), (0, 0));
        // The CLI's state query, by sequence number.
        let json = t.call(&StateQuery { at: Some(2) }).unwrap().unwrap();
        assert_eq!(balance(&json), 3);
        assert_eq!(
            balance(&t.call(&StateQuery { at: None }).unwrap().unwrap()),
            36
        );
    }

    #[test]
    fn storage_unavailable_fails_execute_without_applying() {
        let log = EventLog::new();
        let mut t = ledger(&log);
        t.call(&Exec(Cmd::Deposit(5))).unwrap().unwrap().unwrap();
        t.set_storage_unavailable(true);
        let (code, _) = t.call(&Exec(Cmd::Deposit(7))).unwrap().unwrap_err();
        assert_eq!(code, ErrorCode::StorageUnavailable);
        let (code, _) = t
            .call(&ExecOnce("k".into(), Cmd::Deposit(7)))
            .unwrap()
            .unwrap_err();
        assert_eq!(code, ErrorCode::StorageUnavailable);
        assert_eq!(
            state_of(&t),
            (
                Acct {
                    balance: 5,
                    trail: state_of(&t).0.trail
                },
                1
            )
        );
        assert_eq!(log.events_of(ANN).len(), 1);
        t.set_storage_unavailable(false);
        assert_eq!(
            t.call(&ExecOnce("k".into(), Cmd::Deposit(7))).unwrap(),
            Ok(Ok(3))
        );
        assert_eq!(state_of(&t).0.balance, 12);
    }

    #[test]
    fn each_instance_of_a_replicated_actor_keeps_its_own_log() {
        let log = EventLog::new();
        let mut second = TestActor::<Ledger>::builder()
            .name("ledger")
            .instance(1)
            .events(log.clone())
            .start_default();
        second
            .call(&Exec(Cmd::Deposit(4)))
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(log.events_of("ledger#1").len(), 1, "named as on the host");
        assert!(log.events_of("ledger").is_empty());
        let first = TestActor::<Ledger>::builder()
            .name("ledger")
            .events(log)
            .start_default();
        assert_eq!(state_of(&first).1, 0);
    }

    #[test]
    fn a_rejection_persists_nothing() {
        let log = EventLog::new();
        let mut t = ledger(&log);
        let outcome = t.call(&Exec(Cmd::Withdraw(1))).unwrap();
        assert_eq!(outcome, Ok(Err(Rej::Insufficient { balance: 0 })));
        assert_eq!(
            t.call(&Exec(Cmd::Split(0))).unwrap(),
            Ok(Ok(0)),
            "no events, nothing"
        );
        assert!(log.events_of(ANN).is_empty());
    }

    #[test]
    fn persist_appends_events_decided_elsewhere() {
        #[derive(Default)]
        struct Direct {
            journal: Journal<Acct>,
        }

        #[actor]
        impl Direct {
            #[handler]
            async fn persist(&mut self, ctx: &Ctx, msg: Persist) -> Result<u64, Fail> {
                self.journal.persist(ctx, msg.0).await.map_err(fail)
            }
        }

        let mut t = TestActor::<Direct>::builder().name(ANN).start_default();
        let events = vec![Ev::Deposited(4), Ev::Withdrawn(1)];
        assert_eq!(t.call(&Persist(events)).unwrap(), Ok(2));
        assert_eq!(t.call(&Persist(Vec::new())).unwrap(), Ok(2));
        assert_eq!(t.actor().journal.state().balance, 3);
        assert_eq!(
            t.event_log().decoded::<Ev>(ANN),
            [Ev::Deposited(4), Ev::Withdrawn(1)]
        );
    }

    #[test]
    fn recovery_reads_a_long_log_in_chunks() {
        #[derive(Serialize, Deserialize, Default, PartialEq, Debug)]
        struct Blobs {
            count: u64,
            bytes: u64,
        }

        impl Aggregate for Blobs {
            type Command = ();
            type Event = Vec<u8>;
            type Rejection = ();
            const SNAPSHOT_EVERY: u64 = 0;
            fn handle(&self, _: ()) -> Result<Vec<Vec<u8>>, ()> {
                Ok(Vec::new())
            }
            fn apply(&mut self, event: &Vec<u8>) {
                self.count += 1;
                self.bytes += event.len() as u64;
            }
        }

        #[derive(Default)]
        struct Big {
            journal: Journal<Blobs>,
        }

        #[actor]
        impl Big {
            async fn on_start(&mut self, ctx: &Ctx) -> Result<(), Error> {
                self.journal = Journal::recover(ctx).await?;
                Ok(())
            }
        }

        let log = EventLog::new();
        for _ in 0..12 {
            log.append("big", 1, &vec![7u8; 100 * 1024]);
        }
        let t = TestActor::<Big>::builder()
            .name("big")
            .events(log)
            .start_default();
        let journal = &t.actor().journal;
        assert_eq!(journal.seq(), 12);
        assert_eq!(journal.state().count, 12);
        assert_eq!(journal.state().bytes, 12 * 100 * 1024);
    }

    #[test]
    fn events_are_answered_as_json_lines_from_a_position() {
        let log = EventLog::new();
        let mut t = ledger(&log);
        t.call(&Exec(Cmd::Deposit(2))).unwrap().unwrap().unwrap();
        t.call(&ExecOnce("key-1".into(), Cmd::Withdraw(1)))
            .unwrap()
            .unwrap()
            .unwrap();
        let lines = t.call(&EventsQuery::default()).unwrap().unwrap();
        let json: Vec<serde_json::Value> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(json.len(), 3);
        assert_eq!(json[0]["event"], serde_json::json!({ "Deposited": 2 }));
        assert_eq!(json[1]["seq"], 2);
        assert_eq!(json[1]["version"], 1);
        assert_eq!(json[2]["dedup"], "key-1");
        assert_eq!(json[2]["version"], 0);
        assert_eq!(json[0]["time_ms"], log.now_ms());
        let tail = t.call(&EventsQuery { from: 2 }).unwrap().unwrap();
        assert_eq!(tail, lines[2..]);
    }
}
