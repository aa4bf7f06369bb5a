//! The embedded store: SQLite in the host's data directory, for actors' persisted state, event
//! logs with their snapshots, and durable reminders, all in one file.
//!
//! # Layout
//!
//! One database file, `<data_dir>/state.sqlite3`, with SQLite's `state.sqlite3-wal` and
//! `state.sqlite3-shm` next to it (all mode `0600`). The directory is created (mode `0700`) when
//! the store is opened, which the host does on an actor's first use of storage: a host whose
//! actors never persist anything creates no file. The schema is versioned in the table
//! `bunraku_schema`; a host upgrades an older file in place (one migration per version, in one
//! transaction) and refuses a newer one ([`StoreError::Schema`]).
//!
//! - `actor_state`: persisted state, one row per instance, keyed by the actor's **address** (its
//!   name) and its **instance index**: an actor with `instances = 1` uses instance 0, and each
//!   instance of a replicated actor keeps state of its own, since each holds its own in-memory
//!   state and serves its own senders. Changing `instances` between runs leaves the state of
//!   instance `k` with instance `k`. Virtual actors (`account/alice`) use the full address.
//! - `events`: every actor's event log. A row is one event: its global position `pos` (assigned
//!   at insert, increasing across actors in commit order and never reused), the actor's address,
//!   its *kind* (the address up to its first `/`, or the whole address: `account` for
//!   `account/alice`), its sequence number in the actor's log (`1, 2, 3, ...` without gaps,
//!   unique per actor), the time of the append, the version the writer declared, the payload and
//!   a checksum. Indexes serve the three reads: by actor and sequence number (the unique key), by
//!   kind and position ([`Store::read_type`]) and by actor and time ([`Until::Time`]).
//! - `snapshots`: every snapshot an actor took, keyed by actor and the sequence number of the
//!   last event it includes, with its version, state and checksum. All are kept, because a read
//!   up to an earlier point ([`Until::Seq`], [`Until::Time`]) starts from the latest snapshot at
//!   or before that point.
//! - `reminders`: durable reminders ([`StoredReminder`]), one per actor and name.
//!
//! # Durability
//!
//! The database runs in WAL mode with `synchronous=FULL`, so a commit is on disk (the WAL is
//! fsynced) before it is acknowledged; the store refuses to open when SQLite will not run that way
//! ([`StoreError::NotDurable`]). [`Store::durability`] reports both settings of the live writer
//! connection, since a kill -9 cannot reveal a missing fsync.
//!
//! # Group commit
//!
//! All writes (saves, appends, snapshots, reminders) go through one **writer thread** that owns
//! the only writing connection. Callers queue requests on a channel ([`Store::save`],
//! [`Store::append`] and the others return at once with a future). The writer takes the first
//! request, then everything else already queued (up to [`MAX_BATCH_WRITES`] writes or
//! [`MAX_BATCH_BYTES`] bytes), applies the whole batch in one `BEGIN IMMEDIATE` transaction and
//! commits it with one fsync. Only after `COMMIT` returns does it complete each request of the
//! batch. There is no artificial delay: while one batch is being synced, new requests queue up
//! and form the next batch, so the number of fsyncs follows the disk, not the number of writers
//! (with 200 actors saving at once the store commits a handful of transactions, see
//! [`StoreStats::commits`]).
//!
//! A batch that fails (a full disk or the configured [`StoreOptions::max_size`], an I/O error, a
//! locked file) is rolled back and **every** request in it fails with the same [`StoreError`];
//! nothing is acknowledged that was not committed. The writer then carries on with the next batch.
//!
//! Requests are applied in the order they were queued, so the writes of one actor apply in order
//! (the last acknowledged save is what the next `load` returns). An unacknowledged write (its
//! instance trapped, or the host stopped, before the commit) may or may not be in the file, as
//! after a crash.
//!
//! # Event logs
//!
//! An append ([`Store::append`]) is optimistic: it names the sequence number the actor believes
//! its log ends at, and adds its events, all or none, only if the log still ends there. The
//! writer runs each append (and each snapshot) in a **savepoint** inside the batch's transaction:
//! it reads the log's last sequence number (which sees the appends applied earlier in the same
//! transaction), and when that is not the expected one it rolls back to the savepoint and fails
//! that append alone with [`StoreError::Conflict`]; the rest of the batch commits. The appends of
//! many actors thus share one commit without one actor's conflict costing the others theirs.
//! The append's result, the new last sequence number, is delivered only after `COMMIT`.
//!
//! Within one log an event's time never goes back: a host clock that stepped back stamps the
//! new events with the time of the log's last event, so sequence numbers and times order a log
//! the same way and [`Until::Time`] is one index lookup.
//!
//! Since one writer commits batches one after the other, global positions become visible in
//! increasing order: a reader that has seen position `p` never later sees a new event below `p`.
//! [`Store::committed`] publishes the highest committed position after every commit that added
//! events, for readers that follow a kind live.
//!
//! # Checksums
//!
//! Every event and snapshot row carries the first 8 bytes of a SHA-256 over a length-prefixed
//! encoding of its contents (for an event: actor, sequence number, time, version and payload;
//! for a snapshot: actor, sequence number, version and state), computed by the writer. Reads
//! verify every row they return. A row that fails is never served: the read fails with
//! [`StoreError::Corrupt`] naming the actor and the sequence number, the store logs it, and
//! nothing is deleted or repaired, so the file can be inspected (SQLite's own check is
//! [`Store::integrity_check`]). A corrupt snapshot fails its read the same way rather than
//! silently falling back to an older snapshot: the caller learns that the store is damaged.
//!
//! # One host per data directory
//!
//! The store holds an exclusive lock on `<data_dir>/state.lock` from [`Store::open`] until it is
//! dropped. A second store on the same directory, from this process or another, waits 200 ms (for
//! a host that is still finishing its writes) and then fails with [`StoreError::InUse`]. The lock
//! is what makes the index of saved state below trustworthy: no other process writes state
//! behind this store's back.
//!
//! # Reads
//!
//! The first activation of every key of a virtual actor loads a state that was never saved, and a
//! `load` that finds nothing would still cost an SQLite read transaction (6 µs alone, 13–19 µs on a busy
//! host: `BENCHMARKS.md` §5). So the store keeps an in-memory **index of saved state**: a set of
//! 64-bit hashes of `(actor, instance)`, filled from `actor_state` when the store opens and added
//! to by every [`Store::save`] before the save is queued. A [`Store::load`] whose key is not in
//! it answers `None` without reading the file; one that is (or that shares a hash with a saved
//! key) reads as before. It costs 10–21 bytes per saved key (a hash table of `u64`, at most 7/8
//! full; 19 MiB for a million).
//! [`StoreStats::loads_skipped`] counts the loads it answered.
//!
//! Reads ([`Store::load`], [`Store::read`], [`Store::read_type`], ...) run synchronously on a
//! small pool of read connections of their own, never on the writer's, so reads do not queue
//! behind commits. Each read is one short read transaction (one consistent view of the file for
//! its few queries), which keeps WAL checkpoints (run by the writer as the WAL grows) from being
//! starved; a long replay reads in chunks of `max_bytes`, each chunk its own transaction. Every
//! read sees every write whose future completed.
//!
//! The [`EventStore`](crate::eventstore::EventStore) trait is what the host functions use, so
//! another backend can take this store's place for event logs.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use bunraku_abi::{Codec, EventBatch, NewEvent, Snapshot, StoredEvent, Until};
use rusqlite::{
    Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params,
};
use sha2::{Digest, Sha256};
use tokio::sync::{oneshot, watch};

pub use crate::error::StoreError;

/// The database file's name inside the data directory.
pub const FILE_NAME: &str = "state.sqlite3";

/// The lock file's name inside the data directory (see "One host per data directory").
pub const LOCK_FILE: &str = "state.lock";

/// Most writes committed in one transaction.
pub const MAX_BATCH_WRITES: usize = 1024;

/// Most bytes of state committed in one transaction (a batch stops growing past it).
pub const MAX_BATCH_BYTES: usize = 16 << 20;

/// Bytes counted for each event (and for a snapshot, and once for the batch) on top of its
/// payload and actor name when a read is cut at `max_bytes`: a bound on what postcard adds (the
/// varints of numbers and lengths), so the encoded [`EventBatch`] fits in `max_bytes` unless its
/// first event alone does not.
pub const EVENT_OVERHEAD: usize = 48;

/// How long a connection waits for a lock another connection holds (a checkpoint) before the
/// operation fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long [`Store::open`] waits for another store to release the data directory: a host
/// dropped a moment ago may still be finishing its writes. Short, because a host opens its store
/// on an actor's first use of storage, inside that actor's host call and under its time budget.
const LOCK_WAIT: Duration = Duration::from_millis(200);

/// Idle read connections kept for reuse.
const MAX_IDLE_READERS: usize = 4;

/// The largest sequence number, position or time the store keeps (SQLite integers are `i64`).
const MAX_INTEGER: u64 = i64::MAX as u64;

/// The schema, one migration per version: entry `i` takes a file from version `i` to `i + 1`.
/// Append only; never edit an entry that has shipped.
const MIGRATIONS: &[&str] = &[
    // 1: one persisted state per actor instance.
    "CREATE TABLE actor_state (
         actor    TEXT    NOT NULL,
         instance INTEGER NOT NULL,
         state    BLOB    NOT NULL,
         PRIMARY KEY (actor, instance)
     );",
    // 2: event logs, their snapshots, durable reminders (issue 5).
    "CREATE TABLE events (
         pos      INTEGER PRIMARY KEY AUTOINCREMENT,
         actor    TEXT    NOT NULL,
         kind     TEXT    NOT NULL,
         seq      INTEGER NOT NULL,
         time_ms  INTEGER NOT NULL,
         version  INTEGER NOT NULL,
         payload  BLOB    NOT NULL,
         checksum INTEGER NOT NULL,
         UNIQUE (actor, seq)
     );
     CREATE INDEX events_by_kind ON events (kind, pos);
     CREATE INDEX events_by_time ON events (actor, time_ms, seq);
     CREATE TABLE snapshots (
         actor    TEXT    NOT NULL,
         seq      INTEGER NOT NULL,
         version  INTEGER NOT NULL,
         state    BLOB    NOT NULL,
         checksum INTEGER NOT NULL,
         PRIMARY KEY (actor, seq)
     );
     CREATE TABLE reminders (
         actor     TEXT    NOT NULL,
         name      TEXT    NOT NULL,
         msg_type  TEXT    NOT NULL,
         codec     INTEGER NOT NULL,
         payload   BLOB    NOT NULL,
         due_ms    INTEGER NOT NULL,
         period_ms INTEGER,
         PRIMARY KEY (actor, name)
     );",
];

/// The schema version this host writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

const SAVE_STATE: &str = "INSERT INTO actor_state (actor, instance, state) VALUES (?1, ?2, ?3)
     ON CONFLICT (actor, instance) DO UPDATE SET state = excluded.state";

const LOAD_STATE: &str = "SELECT state FROM actor_state WHERE actor = ?1 AND instance = ?2";

const LAST_EVENT: &str =
    "SELECT seq, time_ms FROM events WHERE actor = ?1 ORDER BY seq DESC LIMIT 1";

const INSERT_EVENT: &str =
    "INSERT INTO events (actor, kind, seq, time_ms, version, payload, checksum)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

const SEQ_AT_TIME: &str = "SELECT seq FROM events WHERE actor = ?1 AND time_ms <= ?2
     ORDER BY time_ms DESC, seq DESC LIMIT 1";

const READ_EVENTS: &str = "SELECT pos, seq, time_ms, version, payload, checksum FROM events
     WHERE actor = ?1 AND seq > ?2 AND seq <= ?3 ORDER BY seq";

const READ_KIND: &str = "SELECT pos, actor, seq, time_ms, version, payload, checksum FROM events
     WHERE kind = ?1 AND pos > ?2 ORDER BY pos";

const SAVE_SNAPSHOT: &str = "INSERT INTO snapshots (actor, seq, version, state, checksum)
     VALUES (?1, ?2, ?3, ?4, ?5)
     ON CONFLICT (actor, seq) DO UPDATE SET version = excluded.version, state = excluded.state,
         checksum = excluded.checksum";

const LOAD_SNAPSHOT: &str = "SELECT seq, version, state, checksum FROM snapshots
     WHERE actor = ?1 AND seq <= ?2 ORDER BY seq DESC LIMIT 1";

const SET_REMINDER: &str =
    "INSERT INTO reminders (actor, name, msg_type, codec, payload, due_ms, period_ms)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
     ON CONFLICT (actor, name) DO UPDATE SET msg_type = excluded.msg_type,
         codec = excluded.codec, payload = excluded.payload, due_ms = excluded.due_ms,
         period_ms = excluded.period_ms";

const CANCEL_REMINDER: &str = "DELETE FROM reminders WHERE actor = ?1 AND name = ?2";

const MOVE_FIRED_REMINDER: &str =
    "UPDATE reminders SET due_ms = ?4 WHERE actor = ?1 AND name = ?2 AND due_ms = ?3";

const REMOVE_FIRED_REMINDER: &str =
    "DELETE FROM reminders WHERE actor = ?1 AND name = ?2 AND due_ms = ?3";

const LIST_REMINDERS: &str =
    "SELECT actor, name, msg_type, codec, payload, due_ms, period_ms FROM reminders
     ORDER BY due_ms, actor, name";

/// Settings of a [`Store`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreOptions {
    /// Largest size of the database file in bytes (rounded down to whole pages), or no limit
    /// (`None`, the default). A batch that would grow the file past it fails with
    /// [`StoreError::Full`], exactly like a full disk. The limit cannot shrink a file below its
    /// current size.
    pub max_size: Option<u64>,
}

/// Counters of a [`Store`] since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Transactions committed by the writer (one per batch).
    pub commits: u64,
    /// Writes acknowledged after a commit (including the ones refused on their own, such as an
    /// append that met a conflict).
    pub writes: u64,
    /// Batches that failed and were rolled back.
    pub failed_batches: u64,
    /// Writes that failed with their batch.
    pub failed_writes: u64,
    /// [`Store::load`]s answered `None` from the index of saved state, without a read.
    pub loads_skipped: u64,
}

/// The durability settings of the writer connection, as SQLite reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Durability {
    /// `PRAGMA journal_mode`: `"wal"`.
    pub journal_mode: String,
    /// `PRAGMA synchronous`: `2` (`FULL`).
    pub synchronous: i64,
}

/// A durable reminder as the store keeps it: a message the host delivers to `actor` when it is
/// due, surviving restarts of the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReminder {
    /// The address of the actor it is for (and that set it).
    pub actor: String,
    /// Its name, unique per actor: setting a reminder with a taken name replaces the earlier one.
    pub name: String,
    /// The wire name of the message it delivers.
    pub msg_type: String,
    /// How `payload` is encoded.
    pub codec: Codec,
    /// The encoded message.
    pub payload: Vec<u8>,
    /// When it is next due, in milliseconds since the Unix epoch on the host's clock.
    pub due_ms: u64,
    /// For a periodic reminder, milliseconds from one firing to the next; `None` fires once.
    pub period_ms: Option<u64>,
}

/// The embedded store of one host. See the [module documentation](self).
///
/// ```
/// use bunraku_runtime::store::{Store, StoreOptions};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let store = Store::open(dir.path(), StoreOptions::default())?;
/// assert_eq!(store.load("counter", 0)?, None);
/// // Queued at once; durable when the future completes.
/// let saved = store.save("counter".into(), 0, b"42".to_vec());
/// futures::executor::block_on(saved)?;
/// assert_eq!(store.load("counter", 0)?.as_deref(), Some(&b"42"[..]));
/// assert_eq!(store.stats().commits, 1);
/// # Ok(()) }
/// ```
pub struct Store {
    path: PathBuf,
    /// Held (locked) for the store's life: one store per data directory.
    _lock: std::fs::File,
    /// Hashes of the `(actor, instance)` keys with saved state ([`saved_key`]).
    saved: Mutex<HashSet<u64>>,
    queue: Option<mpsc::Sender<Request>>,
    writer: Option<JoinHandle<()>>,
    readers: Mutex<Vec<Connection>>,
    counters: Arc<Counters>,
    committed: watch::Receiver<u64>,
}

#[derive(Default)]
struct Counters {
    commits: AtomicU64,
    writes: AtomicU64,
    failed_batches: AtomicU64,
    failed_writes: AtomicU64,
    loads_skipped: AtomicU64,
}

/// The caller waiting for one write: where its outcome goes, and the outcome of applying the
/// write in the current transaction (delivered only if that transaction commits).
struct Reply<T> {
    sender: oneshot::Sender<Result<T, StoreError>>,
    applied: Option<Result<T, StoreError>>,
}

impl<T> Reply<T> {
    /// Completes the caller: with the batch's error when it failed, else with what applying the
    /// write gave.
    fn finish(self, batch: &Result<(), StoreError>) {
        let outcome = match batch {
            Err(e) => Err(e.clone()),
            // Every write of a committed batch was applied; the fallback cannot happen.
            Ok(()) => self.applied.unwrap_or_else(|| {
                Err(StoreError::Write {
                    message: "the write was not applied".into(),
                })
            }),
        };
        // A caller that went away (its instance trapped) no longer waits for the outcome.
        let _ = self.sender.send(outcome);
    }
}

/// A write the writer applies inside a batch's transaction, with the caller waiting for it.
enum Write {
    /// Replace an actor instance's state.
    SaveState {
        actor: Arc<str>,
        instance: u32,
        state: Vec<u8>,
        reply: Reply<()>,
    },
    /// Append events to an actor's log if it ends at `expected`; answers the new last sequence
    /// number.
    Append {
        actor: Arc<str>,
        expected: u64,
        events: Vec<NewEvent>,
        time_ms: u64,
        reply: Reply<u64>,
    },
    /// Keep a snapshot of an actor's state.
    Snapshot {
        actor: Arc<str>,
        snapshot: Snapshot,
        reply: Reply<()>,
    },
    /// Set or replace a reminder (`codec` is the number kept for `reminder.codec`).
    SetReminder {
        reminder: StoredReminder,
        codec: i64,
        reply: Reply<()>,
    },
    /// Remove a reminder; answers whether there was one.
    CancelReminder {
        actor: Arc<str>,
        name: String,
        reply: Reply<bool>,
    },
    /// Record that a reminder due at `fired` fired: move it to `next`, or remove it; only if it
    /// is still the one that fired. Answers whether it was.
    FiredReminder {
        actor: Arc<str>,
        name: String,
        fired: u64,
        next: Option<u64>,
        reply: Reply<bool>,
    },
}

impl Write {
    fn size(&self) -> usize {
        match self {
            Self::SaveState { actor, state, .. } => actor.len() + state.len(),
            Self::Append { actor, events, .. } => {
                actor.len() + events.iter().map(|e| e.payload.len()).sum::<usize>()
            }
            Self::Snapshot {
                actor, snapshot, ..
            } => actor.len() + snapshot.state.len(),
            Self::SetReminder { reminder, .. } => {
                reminder.actor.len() + reminder.name.len() + reminder.payload.len()
            }
            Self::CancelReminder { actor, name, .. } | Self::FiredReminder { actor, name, .. } => {
                actor.len() + name.len()
            }
        }
    }

    /// Completes the caller with the outcome of its batch.
    fn finish(self, batch: &Result<(), StoreError>) {
        match self {
            Self::SaveState { reply, .. }
            | Self::Snapshot { reply, .. }
            | Self::SetReminder { reply, .. } => reply.finish(batch),
            Self::Append { reply, .. } => reply.finish(batch),
            Self::CancelReminder { reply, .. } | Self::FiredReminder { reply, .. } => {
                reply.finish(batch)
            }
        }
    }
}

/// What the writer thread receives.
enum Request {
    /// A write, acknowledged after its batch committed (boxed: a write with its reply slot is
    /// far larger than the other requests).
    Write(Box<Write>),
    /// Report the writer connection's durability settings.
    Durability(oneshot::Sender<Result<Durability, StoreError>>),
    /// Tests: block the writer until the sender is dropped or sends, so the requests queued
    /// meanwhile form one batch.
    #[cfg(test)]
    Hold(mpsc::Receiver<()>),
}

impl Store {
    /// Opens (creating when needed) the store in `dir`: creates the directory (mode `0700`) and
    /// `state.sqlite3`, switches it to WAL with `synchronous=FULL`, brings the schema up to
    /// [`SCHEMA_VERSION`] and starts the writer thread.
    pub fn open(dir: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| StoreError::CreateDir {
                path: dir.to_owned(),
                message: e.to_string(),
            })?;
        let lock = lock_dir(dir, LOCK_WAIT)?;
        let path = dir.join(FILE_NAME);
        // Created private before SQLite opens it; SQLite gives its WAL and index the same mode.
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| StoreError::Open {
                path: path.clone(),
                message: e.to_string(),
            })?;
        let open_err = |e: rusqlite::Error| StoreError::Open {
            path: path.clone(),
            message: e.to_string(),
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(&path, flags).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        let journal_mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        let durability = durability(&conn).map_err(open_err)?;
        if !journal_mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::NotDurable {
                path,
                setting: "journal_mode",
                found: journal_mode,
                expected: "wal",
            });
        }
        if durability.synchronous != 2 {
            return Err(StoreError::NotDurable {
                path,
                setting: "synchronous",
                found: durability.synchronous.to_string(),
                expected: "2 (FULL)",
            });
        }
        if let Some(max) = options.max_size {
            let page_size: i64 = conn
                .pragma_query_value(None, "page_size", |row| row.get(0))
                .map_err(open_err)?;
            let pages = (max / page_size.max(1) as u64).max(1);
            conn.pragma_update(None, "max_page_count", pages as i64)
                .map_err(open_err)?;
        }
        migrate(&mut conn, &path)?;
        let saved = saved_keys(&conn).map_err(open_err)?;
        let last_pos: u64 = conn
            .query_row("SELECT COALESCE(MAX(pos), 0) FROM events", [], |row| {
                u64_at(row, 0)
            })
            .map_err(open_err)?;

        let (queue, requests) = mpsc::channel();
        let (publish, committed) = watch::channel(last_pos);
        let counters = Arc::new(Counters::default());
        let writer = std::thread::Builder::new()
            .name("bunraku-store".into())
            .spawn({
                let counters = counters.clone();
                move || run_writer(conn, requests, &counters, &publish)
            })
            .map_err(|e| StoreError::Open {
                path: path.clone(),
                message: format!("cannot start the writer thread: {e}"),
            })?;
        tracing::debug!(path = %path.display(), "store opened");
        Ok(Self {
            path,
            _lock: lock,
            saved: Mutex::new(saved),
            queue: Some(queue),
            writer: Some(writer),
            readers: Mutex::new(Vec::new()),
            counters,
            committed,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues a save of `state` as the state of instance `instance` of actor `actor`, replacing
    /// what was saved before. The save is queued when this function returns (saves apply in the
    /// order they were queued); the future completes once its batch committed, or fails with the
    /// batch's error. Dropping the future does not withdraw the save.
    pub fn save(
        &self,
        actor: Arc<str>,
        instance: u32,
        state: Vec<u8>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        // Indexed before it is queued: a load from now on reads the file (and sees the save
        // once it committed).
        self.saved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(saved_key(&actor, instance));
        self.submit(Ok(move |reply| Write::SaveState {
            actor,
            instance,
            state,
            reply,
        }))
    }

    /// The state last saved for instance `instance` of actor `actor`: `None` when it never saved
    /// any (answered from the index of saved state, without a read). Sees every save whose
    /// future completed.
    pub fn load(&self, actor: &str, instance: u32) -> Result<Option<Vec<u8>>, StoreError> {
        let key = saved_key(actor, instance);
        if !self
            .saved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&key)
        {
            self.counters.loads_skipped.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        }
        self.read_with(|tx| {
            tx.prepare_cached(LOAD_STATE)
                .and_then(|mut stmt| {
                    stmt.query_row(params![actor, instance], |row| row.get::<_, Vec<u8>>(0))
                        .optional()
                })
                .map_err(read_err)
        })
    }

    /// Queues an append of `events` to the log of `actor`, numbered `expected + 1, expected + 2,
    /// ...` and stamped `time_ms` (milliseconds since the Unix epoch; never earlier than the
    /// log's last event). All or none: the future completes with the log's new last sequence
    /// number once the batch committed, or fails with [`StoreError::Conflict`] when the log does
    /// not end at `expected` when the writer applies the append (nothing is written, and the
    /// other writes of the batch are not affected), with [`StoreError::Invalid`] for an empty
    /// `events` or a number past `i64::MAX`, or with the batch's error. Appends apply in the order
    /// they were queued. Dropping the future does not withdraw the append.
    pub fn append(
        &self,
        actor: Arc<str>,
        expected: u64,
        events: Vec<NewEvent>,
        time_ms: u64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send + 'static {
        let checked = if events.is_empty() {
            Err(invalid(format!("append to `{actor}` has no events")))
        } else if expected.saturating_add(events.len() as u64) > MAX_INTEGER
            || time_ms > MAX_INTEGER
        {
            Err(invalid(format!(
                "append to `{actor}` is out of range (expected {expected}, time {time_ms})"
            )))
        } else {
            Ok(())
        };
        self.submit(checked.map(|()| {
            move |reply| Write::Append {
                actor,
                expected,
                events,
                time_ms,
                reply,
            }
        }))
    }

    /// Queues `snapshot` as a snapshot of the state of `actor` after its event `snapshot.seq`
    /// (replacing a snapshot taken at the same sequence number; earlier ones are kept). The
    /// future completes once the batch committed, or fails with [`StoreError::Invalid`] when
    /// `snapshot.seq` is past the end of the log at that point (nothing is written, the rest of
    /// the batch is not affected), or with the batch's error.
    pub fn snapshot(
        &self,
        actor: Arc<str>,
        snapshot: Snapshot,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let checked = if snapshot.seq > MAX_INTEGER {
            Err(past_end(&actor, snapshot.seq, None))
        } else {
            Ok(())
        };
        self.submit(checked.map(|()| {
            move |reply| Write::Snapshot {
                actor,
                snapshot,
                reply,
            }
        }))
    }

    /// Reads the log of `actor`, in one read transaction.
    ///
    /// The range ends at `until`: the log's last event ([`Until::Latest`]), the event with that
    /// sequence number or the log's last when it has fewer ([`Until::Seq`]), or the last event
    /// stamped at or before that time ([`Until::Time`]). With `snapshot`, the answer starts from
    /// the latest snapshot at or before the end of the range when there is one, and its events
    /// follow that snapshot whatever `from` says; otherwise the events are those after `from`.
    ///
    /// Events come in sequence order until the answer would pass `max_bytes` (counting each
    /// payload, actor name and [`EVENT_OVERHEAD`], and a snapshot's state), but at least one
    /// event is returned when the range has any. [`EventBatch::complete`] tells whether the
    /// range was read to its end; if not, read again from the last event returned (without
    /// `snapshot`). [`EventBatch::last`] is the log's last sequence number, the `expected` of the
    /// next append. An event or snapshot that fails its checksum fails the read with
    /// [`StoreError::Corrupt`].
    pub fn read(
        &self,
        actor: &str,
        from: u64,
        until: Until,
        snapshot: bool,
        max_bytes: usize,
    ) -> Result<EventBatch, StoreError> {
        self.read_with(|tx| {
            let last = last_event(tx, actor)
                .map_err(read_err)?
                .map_or(0, |(seq, _)| seq);
            let bound = match until {
                Until::Latest => last,
                Until::Seq(seq) => seq.min(last),
                Until::Time(time) => tx
                    .prepare_cached(SEQ_AT_TIME)
                    .and_then(|mut stmt| {
                        stmt.query_row(params![actor, clamp(time)], |row| u64_at(row, 0))
                            .optional()
                    })
                    .map_err(read_err)?
                    .unwrap_or(0),
            };
            let mut budget = Budget::new(max_bytes);
            let mut start = from;
            let snapshot = if snapshot {
                load_snapshot(tx, actor, bound)?
            } else {
                None
            };
            if let Some(snapshot) = &snapshot {
                start = snapshot.seq;
                budget.spend(snapshot.state.len());
            }
            let mut events = Vec::new();
            let mut complete = true;
            let mut stmt = tx.prepare_cached(READ_EVENTS).map_err(read_err)?;
            let mut rows = stmt
                .query(params![actor, clamp(start), clamp(bound)])
                .map_err(read_err)?;
            while let Some(row) = rows.next().map_err(read_err)? {
                let event = StoredEvent {
                    pos: u64_at(row, 0).map_err(read_err)?,
                    actor: actor.to_owned(),
                    seq: u64_at(row, 1).map_err(read_err)?,
                    time_ms: u64_at(row, 2).map_err(read_err)?,
                    version: row.get(3).map_err(read_err)?,
                    payload: row.get(4).map_err(read_err)?,
                };
                if !budget.admits(&event, events.is_empty()) {
                    complete = false;
                    break;
                }
                // Only rows that are served are verified.
                verify_event(&event, row.get(5).map_err(read_err)?)?;
                events.push(event);
            }
            Ok(EventBatch {
                snapshot,
                events,
                last,
                complete,
            })
        })
    }

    /// Reads the events of every actor of kind `kind` (the address up to its first `/`) with a
    /// global position after `after_pos`, in position order (the order they were committed), in
    /// one read transaction.
    ///
    /// The answer is cut at `max_bytes` like [`read`](Self::read)'s (at least one event when
    /// there is one). [`EventBatch::last`] is the position of the last event returned
    /// (`after_pos` when none), where the next read continues; [`EventBatch::complete`] tells
    /// whether no event of the kind followed when the read ran. [`Store::committed`] tells when
    /// new events were committed. An event that fails its checksum fails the read with
    /// [`StoreError::Corrupt`].
    pub fn read_type(
        &self,
        kind: &str,
        after_pos: u64,
        max_bytes: usize,
    ) -> Result<EventBatch, StoreError> {
        self.read_with(|tx| {
            let mut budget = Budget::new(max_bytes);
            let mut events: Vec<StoredEvent> = Vec::new();
            let mut complete = true;
            let mut stmt = tx.prepare_cached(READ_KIND).map_err(read_err)?;
            let mut rows = stmt
                .query(params![kind, clamp(after_pos)])
                .map_err(read_err)?;
            while let Some(row) = rows.next().map_err(read_err)? {
                let event = StoredEvent {
                    pos: u64_at(row, 0).map_err(read_err)?,
                    actor: row.get(1).map_err(read_err)?,
                    seq: u64_at(row, 2).map_err(read_err)?,
                    time_ms: u64_at(row, 3).map_err(read_err)?,
                    version: row.get(4).map_err(read_err)?,
                    payload: row.get(5).map_err(read_err)?,
                };
                if !budget.admits(&event, events.is_empty()) {
                    complete = false;
                    break;
                }
                // The kind is not in the checksum, but is derived from the actor, which is.
                if kind_of(&event.actor) != kind {
                    tracing::error!(actor = %event.actor, seq = event.seq, kind, "event filed under another kind; not served");
                    return Err(corrupt(&event.actor, event.seq));
                }
                // Only rows that are served are verified.
                verify_event(&event, row.get(6).map_err(read_err)?)?;
                events.push(event);
            }
            Ok(EventBatch {
                snapshot: None,
                last: events.last().map_or(after_pos, |e| e.pos),
                events,
                complete,
            })
        })
    }

    /// The highest global position committed so far, updated by the writer after every commit
    /// that added events (before their appends complete); starts at the highest position in the
    /// file. A reader following a kind waits for a change and reads on from where it was.
    pub fn committed(&self) -> watch::Receiver<u64> {
        self.committed.clone()
    }

    /// The sequence number of the last event in the log of `actor` (`0` for an empty log).
    pub fn last_seq(&self, actor: &str) -> Result<u64, StoreError> {
        self.read_with(|tx| {
            Ok(last_event(tx, actor)
                .map_err(read_err)?
                .map_or(0, |(seq, _)| seq))
        })
    }

    /// Queues `reminder`, replacing a reminder of the same actor with the same name. The future
    /// completes once the batch committed, or fails with the batch's error, or with
    /// [`StoreError::Invalid`] for a codec or time the store cannot keep. Scheduling it is the
    /// host's business; the store only keeps it.
    pub fn set_reminder(
        &self,
        reminder: StoredReminder,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let checked = match codec_number(reminder.codec) {
            None => Err(invalid(format!(
                "reminder `{}` of `{}` has a codec the store does not know: {:?}",
                reminder.name, reminder.actor, reminder.codec
            ))),
            Some(_)
                if reminder.due_ms > MAX_INTEGER
                    || reminder.period_ms.is_some_and(|p| p > MAX_INTEGER) =>
            {
                Err(invalid(format!(
                    "reminder `{}` of `{}` is out of range",
                    reminder.name, reminder.actor
                )))
            }
            Some(codec) => Ok(codec),
        };
        self.submit(checked.map(|codec| {
            move |reply| Write::SetReminder {
                reminder,
                codec,
                reply,
            }
        }))
    }

    /// Queues the removal of the reminder `name` of `actor`. The future completes with whether
    /// there was one once the batch committed, or fails with the batch's error.
    pub fn cancel_reminder(
        &self,
        actor: Arc<str>,
        name: String,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send + 'static {
        self.submit(Ok(move |reply| Write::CancelReminder {
            actor,
            name,
            reply,
        }))
    }

    /// Queues the record that the reminder `name` of `actor`, due at `fired`, fired: it is moved
    /// to `next` (a periodic reminder) or removed (`None`), but only if it is still stored with
    /// that deadline, so a reminder the actor set again meanwhile is kept. The future completes
    /// with whether it was, once the batch committed.
    pub fn reminder_fired(
        &self,
        actor: Arc<str>,
        name: String,
        fired: u64,
        next: Option<u64>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send + 'static {
        self.submit(Ok(move |reply| Write::FiredReminder {
            actor,
            name,
            fired,
            next,
            reply,
        }))
    }

    /// Every stored reminder, by due time, for the host's scheduler when it starts.
    pub fn reminders(&self) -> Result<Vec<StoredReminder>, StoreError> {
        self.read_with(|tx| {
            let mut stmt = tx.prepare_cached(LIST_REMINDERS).map_err(read_err)?;
            let mut rows = stmt.query([]).map_err(read_err)?;
            let mut reminders = Vec::new();
            while let Some(row) = rows.next().map_err(read_err)? {
                let actor: String = row.get(0).map_err(read_err)?;
                let name: String = row.get(1).map_err(read_err)?;
                let number: i64 = row.get(3).map_err(read_err)?;
                let codec = codec_of(number).ok_or_else(|| StoreError::Read {
                    message: format!(
                        "reminder `{name}` of `{actor}` has an unknown codec {number}"
                    ),
                })?;
                reminders.push(StoredReminder {
                    msg_type: row.get(2).map_err(read_err)?,
                    codec,
                    payload: row.get(4).map_err(read_err)?,
                    due_ms: u64_at(row, 5).map_err(read_err)?,
                    period_ms: row
                        .get::<_, Option<i64>>(6)
                        .map_err(read_err)?
                        .map(|_| u64_at(row, 6))
                        .transpose()
                        .map_err(read_err)?,
                    actor,
                    name,
                });
            }
            Ok(reminders)
        })
    }

    /// Runs SQLite's `PRAGMA integrity_check` on a read connection: `"ok"` for a sound file,
    /// else SQLite's list of problems, one per line. It checks pages and indexes, not the rows'
    /// checksums (reads verify those).
    pub fn integrity_check(&self) -> Result<String, StoreError> {
        self.read_with(|tx| {
            let mut stmt = tx.prepare("PRAGMA integrity_check").map_err(read_err)?;
            let lines = stmt
                .query_map([], |row| row.get::<_, String>(0))
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(read_err)?;
            Ok(lines.join("\n"))
        })
    }

    /// The durability settings of the writer connection (`journal_mode`, `synchronous`), asked
    /// of the live connection by the writer thread.
    pub fn durability(&self) -> impl Future<Output = Result<Durability, StoreError>> + Send {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Durability(reply));
        async move { answer.await.unwrap_or(Err(StoreError::Closed)) }
    }

    /// Counters since the store was opened.
    pub fn stats(&self) -> StoreStats {
        let c = &self.counters;
        StoreStats {
            commits: c.commits.load(Ordering::Relaxed),
            writes: c.writes.load(Ordering::Relaxed),
            failed_batches: c.failed_batches.load(Ordering::Relaxed),
            failed_writes: c.failed_writes.load(Ordering::Relaxed),
            loads_skipped: c.loads_skipped.load(Ordering::Relaxed),
        }
    }

    /// Queues the write `make` builds around its reply, or answers `checked`'s error at once
    /// without queueing anything. The future completes with the write's outcome.
    fn submit<T, F>(
        &self,
        checked: Result<F, StoreError>,
    ) -> impl Future<Output = Result<T, StoreError>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(Reply<T>) -> Write,
    {
        let (sender, answer) = oneshot::channel();
        match checked {
            Ok(make) => self.send(Request::Write(Box::new(make(Reply {
                sender,
                applied: None,
            })))),
            Err(e) => {
                let _ = sender.send(Err(e));
            }
        }
        async move { answer.await.unwrap_or(Err(StoreError::Closed)) }
    }

    /// Hands a request to the writer. When the writer is gone the request (and its reply
    /// sender) is dropped, which its future reports as [`StoreError::Closed`].
    fn send(&self, request: Request) {
        if let Some(queue) = &self.queue {
            let _ = queue.send(request);
        }
    }

    /// Runs `read` in one read transaction on a read connection, which goes back to the pool
    /// afterwards.
    fn read_with<T>(
        &self,
        read: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.reader()?;
        let result = conn
            .transaction_with_behavior(TransactionBehavior::Deferred)
            .map_err(read_err)
            .and_then(|tx| {
                let result = read(&tx);
                // A read transaction has nothing to commit; ending it releases its snapshot.
                let ended = tx.rollback().map_err(read_err);
                result.and_then(|value| ended.map(|()| value))
            });
        if conn.is_autocommit() {
            let mut idle = self.readers.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < MAX_IDLE_READERS {
                idle.push(conn);
            }
        }
        result
    }

    /// An idle read connection, or a new one.
    fn reader(&self) -> Result<Connection, StoreError> {
        if let Some(conn) = self.readers.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Ok(conn);
        }
        // Read-write without create: a read-only connection could not recover a WAL index. The
        // connection never writes (`query_only`).
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.path, flags).map_err(read_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(read_err)?;
        conn.pragma_update(None, "query_only", true)
            .map_err(read_err)?;
        Ok(conn)
    }

    /// Tests: blocks the writer until the returned sender is dropped.
    #[cfg(test)]
    fn hold(&self) -> mpsc::Sender<()> {
        let (release, held) = mpsc::channel();
        self.send(Request::Hold(held));
        release
    }
}

impl Drop for Store {
    /// Closes the queue and waits for the writer to commit what was queued.
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Takes the exclusive lock on `dir`'s [`LOCK_FILE`], waiting up to `wait` for a store that
/// still holds it.
fn lock_dir(dir: &Path, wait: Duration) -> Result<std::fs::File, StoreError> {
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| StoreError::Open {
            path: path.clone(),
            message: e.to_string(),
        })?;
    let deadline = std::time::Instant::now() + wait;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::InUse {
                    dir: dir.to_owned(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(StoreError::Open {
                    path,
                    message: format!("cannot lock: {e}"),
                });
            }
        }
    }
}

/// The index key of the state of instance `instance` of `actor`: a 64-bit hash (two keys that
/// share one only cost a read).
fn saved_key(actor: &str, instance: u32) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    (actor, instance).hash(&mut hasher);
    hasher.finish()
}

/// The index of saved state: the keys of every row of `actor_state`.
fn saved_keys(conn: &Connection) -> rusqlite::Result<HashSet<u64>> {
    let mut stmt = conn.prepare("SELECT actor, instance FROM actor_state")?;
    let mut rows = stmt.query([])?;
    let mut keys = HashSet::new();
    while let Some(row) = rows.next()? {
        let actor: String = row.get(0)?;
        keys.insert(saved_key(&actor, row.get(1)?));
    }
    Ok(keys)
}

/// Creates or upgrades the schema in one transaction.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let open_err = |e: rusqlite::Error| StoreError::Open {
        path: path.to_owned(),
        message: e.to_string(),
    };
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(open_err)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS bunraku_schema (
             id      INTEGER PRIMARY KEY CHECK (id = 1),
             version INTEGER NOT NULL
         );",
    )
    .map_err(open_err)?;
    let found: i64 = tx
        .query_row(
            "SELECT version FROM bunraku_schema WHERE id = 1",
            [],
            |row| row.get(0),
        )
        .optional()
        .map_err(open_err)?
        .unwrap_or(0);
    if found > SCHEMA_VERSION {
        return Err(StoreError::Schema {
            path: path.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found == SCHEMA_VERSION {
        return Ok(());
    }
    for sql in &MIGRATIONS[found as usize..] {
        tx.execute_batch(sql).map_err(open_err)?;
    }
    tx.execute(
        "INSERT INTO bunraku_schema (id, version) VALUES (1, ?1)
         ON CONFLICT (id) DO UPDATE SET version = excluded.version",
        [SCHEMA_VERSION],
    )
    .map_err(open_err)?;
    tx.commit().map_err(open_err)?;
    tracing::info!(path = %path.display(), from = found, to = SCHEMA_VERSION, "store schema upgraded");
    Ok(())
}

fn durability(conn: &Connection) -> rusqlite::Result<Durability> {
    Ok(Durability {
        journal_mode: conn.pragma_query_value(None, "journal_mode", |row| row.get(0))?,
        synchronous: conn.pragma_query_value(None, "synchronous", |row| row.get(0))?,
    })
}

/// The writer thread: batches what is queued, commits, then acknowledges. Ends when every sender
/// is gone, after committing what was queued.
fn run_writer(
    mut conn: Connection,
    requests: mpsc::Receiver<Request>,
    counters: &Counters,
    committed: &watch::Sender<u64>,
) {
    let mut batch: Vec<Write> = Vec::new();
    while let Ok(first) = requests.recv() {
        let mut next = Some(first);
        let mut bytes = 0;
        loop {
            let request = match next.take() {
                Some(request) => request,
                None => match requests.try_recv() {
                    Ok(request) => request,
                    Err(_) => break,
                },
            };
            match request {
                Request::Write(write) => {
                    bytes += write.size();
                    batch.push(*write);
                }
                Request::Durability(reply) => {
                    let answer = durability(&conn).map_err(read_err);
                    let _ = reply.send(answer);
                }
                #[cfg(test)]
                Request::Hold(held) => {
                    let _ = held.recv();
                }
            }
            if batch.len() >= MAX_BATCH_WRITES || bytes >= MAX_BATCH_BYTES {
                break;
            }
        }
        if !batch.is_empty() {
            commit(&mut conn, &mut batch, counters, committed);
        }
    }
}

/// Applies a batch in one transaction and completes every request in it with its outcome.
fn commit(
    conn: &mut Connection,
    batch: &mut Vec<Write>,
    counters: &Counters,
    committed: &watch::Sender<u64>,
) {
    let outcome = match apply(conn, batch) {
        Ok(last_pos) => {
            counters.commits.fetch_add(1, Ordering::Relaxed);
            counters
                .writes
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            if let Some(pos) = last_pos {
                committed.send_replace(pos);
            }
            Ok(())
        }
        Err(e) => {
            // The transaction was rolled back when it was dropped; make sure no transaction is
            // left open should that rollback have failed too.
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            let error = match e.sqlite_error_code() {
                Some(rusqlite::ErrorCode::DiskFull) => StoreError::Full {
                    message: e.to_string(),
                },
                _ => StoreError::Write {
                    message: e.to_string(),
                },
            };
            tracing::error!(writes = batch.len(), "store batch failed: {error}");
            counters.failed_batches.fetch_add(1, Ordering::Relaxed);
            counters
                .failed_writes
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            Err(error)
        }
    };
    for write in batch.drain(..) {
        write.finish(&outcome);
    }
}

/// Applies every write of a batch in one transaction and commits it. Each write's own outcome
/// goes into its reply; an `Err` fails the whole batch. Returns the highest position of the
/// events it added, if any.
fn apply(conn: &mut Connection, batch: &mut [Write]) -> rusqlite::Result<Option<u64>> {
    let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut last_pos = None;
    for write in batch.iter_mut() {
        match write {
            Write::SaveState {
                actor,
                instance,
                state,
                reply,
            } => {
                tx.prepare_cached(SAVE_STATE)?
                    .execute(params![&**actor, *instance, &*state])?;
                reply.applied = Some(Ok(()));
            }
            Write::Append {
                actor,
                expected,
                events,
                time_ms,
                reply,
            } => {
                let applied =
                    in_savepoint(&mut tx, |sp| append(sp, actor, *expected, events, *time_ms))?;
                reply.applied = Some(applied.map(|(seq, pos)| {
                    last_pos = Some(pos);
                    seq
                }));
            }
            Write::Snapshot {
                actor,
                snapshot,
                reply,
            } => {
                reply.applied = Some(in_savepoint(&mut tx, |sp| {
                    save_snapshot(sp, actor, snapshot)
                })?);
            }
            Write::SetReminder {
                reminder,
                codec,
                reply,
            } => {
                tx.prepare_cached(SET_REMINDER)?.execute(params![
                    reminder.actor,
                    reminder.name,
                    reminder.msg_type,
                    *codec,
                    reminder.payload,
                    clamp(reminder.due_ms),
                    reminder.period_ms.map(clamp),
                ])?;
                reply.applied = Some(Ok(()));
            }
            Write::CancelReminder { actor, name, reply } => {
                let removed = tx
                    .prepare_cached(CANCEL_REMINDER)?
                    .execute(params![&**actor, name.as_str()])?;
                reply.applied = Some(Ok(removed > 0));
            }
            Write::FiredReminder {
                actor,
                name,
                fired,
                next,
                reply,
            } => {
                let changed = match next {
                    Some(next) => tx.prepare_cached(MOVE_FIRED_REMINDER)?.execute(params![
                        &**actor,
                        name.as_str(),
                        clamp(*fired),
                        clamp(*next)
                    ])?,
                    None => tx.prepare_cached(REMOVE_FIRED_REMINDER)?.execute(params![
                        &**actor,
                        name.as_str(),
                        clamp(*fired)
                    ])?,
                };
                reply.applied = Some(Ok(changed > 0));
            }
        }
    }
    tx.commit()?;
    Ok(last_pos)
}

/// Runs `write` in a savepoint of `tx`. When the write refuses itself (`Ok(Err(_))`), or SQLite
/// refuses one of its rows (a constraint), everything it did is rolled back to the savepoint and
/// the refusal is its own outcome; any other error fails the batch.
fn in_savepoint<T>(
    tx: &mut Transaction<'_>,
    write: impl FnOnce(&Connection) -> rusqlite::Result<Result<T, StoreError>>,
) -> rusqlite::Result<Result<T, StoreError>> {
    let sp = tx.savepoint()?;
    let outcome = match write(&sp) {
        Ok(outcome) => outcome,
        Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation) => {
            Err(StoreError::Write {
                message: e.to_string(),
            })
        }
        Err(e) => return Err(e),
    };
    match outcome {
        Ok(value) => {
            sp.commit()?;
            Ok(Ok(value))
        }
        Err(refused) => {
            // Rolls back to the savepoint and releases it.
            sp.finish()?;
            Ok(Err(refused))
        }
    }
}

/// Appends `events` to the log of `actor` if it ends at `expected`. Returns the new last sequence
/// number and the position of the last event.
fn append(
    conn: &Connection,
    actor: &str,
    expected: u64,
    events: &[NewEvent],
    time_ms: u64,
) -> rusqlite::Result<Result<(u64, u64), StoreError>> {
    let (last, last_time) = last_event(conn, actor)?.unwrap_or((0, 0));
    if last != expected {
        return Ok(Err(StoreError::Conflict {
            actor: actor.to_owned(),
            expected,
            last,
        }));
    }
    // Times never go back within a log (see the module documentation).
    let time_ms = time_ms.max(last_time);
    let kind = kind_of(actor);
    let mut insert = conn.prepare_cached(INSERT_EVENT)?;
    let mut seq = expected;
    let mut pos = 0;
    for event in events {
        seq += 1;
        let checksum = event_checksum(actor, seq, time_ms, event.version, &event.payload);
        let row = insert.insert(params![
            actor,
            kind,
            clamp(seq),
            clamp(time_ms),
            event.version,
            event.payload,
            checksum
        ])?;
        pos = row as u64;
    }
    Ok(Ok((seq, pos)))
}

/// Keeps `snapshot` of `actor` if its log reaches `snapshot.seq`.
fn save_snapshot(
    conn: &Connection,
    actor: &str,
    snapshot: &Snapshot,
) -> rusqlite::Result<Result<(), StoreError>> {
    let last = last_event(conn, actor)?.map_or(0, |(seq, _)| seq);
    if snapshot.seq > last {
        return Ok(Err(past_end(actor, snapshot.seq, Some(last))));
    }
    let checksum = snapshot_checksum(actor, snapshot.seq, snapshot.version, &snapshot.state);
    conn.prepare_cached(SAVE_SNAPSHOT)?.execute(params![
        actor,
        clamp(snapshot.seq),
        snapshot.version,
        snapshot.state,
        checksum
    ])?;
    Ok(Ok(()))
}

/// The sequence number and time of the last event in the log of `actor`.
fn last_event(conn: &Connection, actor: &str) -> rusqlite::Result<Option<(u64, u64)>> {
    conn.prepare_cached(LAST_EVENT)?
        .query_row([actor], |row| Ok((u64_at(row, 0)?, u64_at(row, 1)?)))
        .optional()
}

/// The latest snapshot of `actor` at or before `seq`, verified.
fn load_snapshot(conn: &Connection, actor: &str, seq: u64) -> Result<Option<Snapshot>, StoreError> {
    let found = conn
        .prepare_cached(LOAD_SNAPSHOT)
        .and_then(|mut stmt| {
            stmt.query_row(params![actor, clamp(seq)], |row| {
                Ok((
                    Snapshot {
                        seq: u64_at(row, 0)?,
                        version: row.get(1)?,
                        state: row.get(2)?,
                    },
                    row.get::<_, i64>(3)?,
                ))
            })
            .optional()
        })
        .map_err(read_err)?;
    let Some((snapshot, checksum)) = found else {
        return Ok(None);
    };
    if snapshot_checksum(actor, snapshot.seq, snapshot.version, &snapshot.state) != checksum {
        tracing::error!(
            actor,
            seq = snapshot.seq,
            "snapshot fails its checksum; not served"
        );
        return Err(corrupt(actor, snapshot.seq));
    }
    Ok(Some(snapshot))
}

/// Fails with [`StoreError::Corrupt`] (and logs it) when `event` does not match `checksum`.
fn verify_event(event: &StoredEvent, checksum: i64) -> Result<(), StoreError> {
    let expected = event_checksum(
        &event.actor,
        event.seq,
        event.time_ms,
        event.version,
        &event.payload,
    );
    if expected != checksum {
        tracing::error!(actor = %event.actor, seq = event.seq, pos = event.pos, "event fails its checksum; not served");
        return Err(corrupt(&event.actor, event.seq));
    }
    Ok(())
}

/// The checksum of an event row: the first 8 bytes of a SHA-256 over its fields.
fn event_checksum(actor: &str, seq: u64, time_ms: u64, version: u32, payload: &[u8]) -> i64 {
    let mut hash = Sha256::new();
    put_bytes(&mut hash, b"event");
    put_bytes(&mut hash, actor.as_bytes());
    hash.update(seq.to_le_bytes());
    hash.update(time_ms.to_le_bytes());
    hash.update(version.to_le_bytes());
    put_bytes(&mut hash, payload);
    truncate(hash)
}

/// The checksum of a snapshot row: the first 8 bytes of a SHA-256 over its fields.
fn snapshot_checksum(actor: &str, seq: u64, version: u32, state: &[u8]) -> i64 {
    let mut hash = Sha256::new();
    put_bytes(&mut hash, b"snapshot");
    put_bytes(&mut hash, actor.as_bytes());
    hash.update(seq.to_le_bytes());
    hash.update(version.to_le_bytes());
    put_bytes(&mut hash, state);
    truncate(hash)
}

/// Hashes `bytes` after their length, so that neighbouring fields cannot trade bytes.
fn put_bytes(hash: &mut Sha256, bytes: &[u8]) {
    hash.update((bytes.len() as u64).to_le_bytes());
    hash.update(bytes);
}

fn truncate(hash: Sha256) -> i64 {
    let digest = hash.finalize();
    let mut first = [0; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_le_bytes(first)
}

/// The kind of an actor: its address up to the first `/` or `#` (`account` for `account/alice`), or the
/// whole address.
fn kind_of(actor: &str) -> &str {
    // `account/alice` is an `account`; `pool#2` (instance 2 of a replicated actor) is a `pool`.
    actor.split_once(['/', '#']).map_or(actor, |(kind, _)| kind)
}

/// The integer the store keeps for a codec; `None` for one it does not know.
fn codec_number(codec: Codec) -> Option<i64> {
    match codec {
        Codec::Postcard => Some(0),
        Codec::Json => Some(1),
        _ => None,
    }
}

/// The codec for an integer the store kept.
fn codec_of(number: i64) -> Option<Codec> {
    match number {
        0 => Some(Codec::Postcard),
        1 => Some(Codec::Json),
        _ => None,
    }
}

/// How much of a read's `max_bytes` the answer uses.
struct Budget {
    max: usize,
    used: usize,
}

impl Budget {
    /// A budget of `max` bytes, less what the batch's own fields take.
    fn new(max: usize) -> Self {
        Self {
            max,
            used: EVENT_OVERHEAD,
        }
    }

    /// Counts a snapshot's state.
    fn spend(&mut self, state: usize) {
        self.used += state + EVENT_OVERHEAD;
    }

    /// Whether `event` goes into the answer (always when it is the `first`), counting it if so.
    fn admits(&mut self, event: &StoredEvent, first: bool) -> bool {
        let size = event.payload.len() + event.actor.len() + EVENT_OVERHEAD;
        if first || self.used + size <= self.max {
            self.used += size;
            true
        } else {
            false
        }
    }
}

/// A number as SQLite keeps it, saturated at `i64::MAX`: exact for every number the writer
/// stores (checked when queued), and the right bound for a range.
fn clamp(n: u64) -> i64 {
    n.min(MAX_INTEGER) as i64
}

/// A non-negative integer column as a `u64`.
fn u64_at(row: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<u64> {
    let value: i64 = row.get(idx)?;
    u64::try_from(value).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(idx, value))
}

fn read_err(e: rusqlite::Error) -> StoreError {
    StoreError::Read {
        message: e.to_string(),
    }
}

fn invalid(message: String) -> StoreError {
    StoreError::Invalid { message }
}

fn corrupt(actor: &str, seq: u64) -> StoreError {
    StoreError::Corrupt {
        actor: actor.to_owned(),
        seq,
    }
}

fn past_end(actor: &str, seq: u64, last: Option<u64>) -> StoreError {
    let end = last.map_or_else(String::new, |last| format!(" (it ends at {last})"));
    invalid(format!(
        "snapshot of `{actor}` at sequence {seq} is past the end of its log{end}"
    ))
}

/// The store of a host, opened on first use from the host's data directory.
pub(crate) struct LazyStore {
    dir: Option<PathBuf>,
    options: StoreOptions,
    store: OnceLock<Result<Store, StoreError>>,
    warned: std::sync::atomic::AtomicBool,
}

impl LazyStore {
    pub(crate) fn new(dir: Option<PathBuf>, options: StoreOptions) -> Self {
        Self {
            dir,
            options,
            store: OnceLock::new(),
            warned: Default::default(),
        }
    }

    /// The data directory, if the host has one.
    pub(crate) fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The store, opened now if this is its first use. An open that failed is not retried: the
    /// error is logged once and returned on every use (restart the host once the directory is
    /// fixed).
    pub(crate) fn get(&self) -> Result<&Store, StoreError> {
        let Some(dir) = &self.dir else {
            if !self.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!("{}", StoreError::NoDataDir);
            }
            return Err(StoreError::NoDataDir);
        };
        self.store
            .get_or_init(|| {
                Store::open(dir, self.options.clone())
                    .inspect_err(|e| tracing::error!("actors cannot persist state: {e}"))
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use futures::executor::block_on;

    use super::*;

    fn open(dir: &Path) -> Store {
        Store::open(dir, StoreOptions::default()).unwrap()
    }

    fn save(store: &Store, actor: &str, instance: u32, state: &[u8]) -> Result<(), StoreError> {
        block_on(store.save(actor.into(), instance, state.to_vec()))
    }

    #[test]
    fn open_creates_a_private_directory_with_a_wal_database_synced_in_full() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let store = open(&dir);
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert_eq!(store.path(), dir.join(FILE_NAME));
        save(&store, "a", 0, b"written").unwrap();
        for file in [
            FILE_NAME,
            "state.sqlite3-wal",
            "state.sqlite3-shm",
            LOCK_FILE,
        ] {
            let mode = std::fs::metadata(dir.join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
        let durability = block_on(store.durability()).unwrap();
        assert_eq!(durability.journal_mode, "wal");
        assert_eq!(durability.synchronous, 2);
        let version: i64 = store
            .reader()
            .unwrap()
            .query_row("SELECT version FROM bunraku_schema", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[test]
    fn a_saved_state_loads_back_per_actor_and_instance() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path());
        assert_eq!(store.load("a", 0).unwrap(), None);
        save(&store, "a", 0, b"one").unwrap();
        save(&store, "a", 1, b"other instance").unwrap();
        save(&store, "b", 0, b"other actor").unwrap();
        save(&store, "a", 0, b"two").unwrap();
        assert_eq!(store.load("a", 0).unwrap().unwrap(), b"two");
        assert_eq!(store.load("a", 1).unwrap().unwrap(), b"other instance");
        assert_eq!(store.load("b", 0).unwrap().unwrap(), b"other actor");
        assert_eq!(store.load("b", 1).unwrap(), None);
        assert_eq!(store.stats().writes, 4);
    }

    #[test]
    fn a_load_of_a_key_that_never_saved_is_answered_without_reading_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path());
        assert_eq!(store.load("counter/new", 0).unwrap(), None);
        assert_eq!(store.stats().loads_skipped, 1);
        save(&store, "counter/old", 0, b"kept").unwrap();
        assert_eq!(store.load("counter/old", 0).unwrap().unwrap(), b"kept");
        assert_eq!(
            store.load("counter/old", 1).unwrap(),
            None,
            "another instance"
        );
        assert_eq!(store.stats().loads_skipped, 2, "a saved key is read");
        drop(store);

        // Reopened, the index is rebuilt from the file.
        let store = open(tmp.path());
        assert_eq!(store.load("counter/old", 0).unwrap().unwrap(), b"kept");
        assert_eq!(store.load("counter/new", 0).unwrap(), None);
        assert_eq!(store.stats().loads_skipped, 1);
    }

    #[test]
    fn a_second_store_on_the_same_directory_waits_for_the_first_to_close() {
        let tmp = tempfile::tempdir().unwrap();
        let first = open(tmp.path());
        save(&first, "a", 0, b"from the first").unwrap();
        let err = lock_dir(tmp.path(), Duration::ZERO).unwrap_err();
        assert_eq!(
            err,
            StoreError::InUse {
                dir: tmp.path().to_owned()
            }
        );
        assert_eq!(
            err.to_string(),
            format!(
                "the data directory {} is in use by another host: stop it, or give this host another data directory",
                tmp.path().display()
            )
        );
        // A wait far longer than the test needs: nothing but the first store's close may end it.
        let waiting = std::thread::spawn({
            let dir = tmp.path().to_owned();
            move || lock_dir(&dir, Duration::from_secs(60))
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !waiting.is_finished(),
            "the second store waits for the lock"
        );
        drop(first);
        drop(waiting.join().unwrap().unwrap());
        let second = open(tmp.path());
        assert_eq!(second.load("a", 0).unwrap().unwrap(), b"from the first");
    }

    #[test]
    fn state_survives_reopening_the_store() {
        let tmp = tempfile::tempdir().unwrap();
        save(&open(tmp.path()), "a", 0, b"kept").unwrap();
        let store = open(tmp.path());
        assert_eq!(store.load("a", 0).unwrap().unwrap(), b"kept");
    }

    #[test]
    fn queued_saves_commit_in_one_transaction_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path());
        let release = store.hold();
        let saves: Vec<_> = (0..300u32)
            .map(|i| store.save("actor".into(), i % 3, i.to_le_bytes().to_vec()))
            .collect();
        drop(release);
        for done in saves {
            block_on(done).unwrap();
        }
        let stats = store.stats();
        assert_eq!((stats.commits, stats.writes), (1, 300));
        // The last save of each instance won: they applied in the order they were queued.
        for (instance, last) in [(0u32, 297u32), (1, 298), (2, 299)] {
            let state = store.load("actor", instance).unwrap().unwrap();
            assert_eq!(state, last.to_le_bytes());
        }
    }

    #[test]
    fn a_batch_is_capped_at_the_write_limit() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path());
        let release = store.hold();
        let n = MAX_BATCH_WRITES + 1;
        let saves: Vec<_> = (0..n)
            .map(|i| store.save(format!("a{i}").into(), 0, vec![1]))
            .collect();
        drop(release);
        saves.into_iter().for_each(|s| block_on(s).unwrap());
        assert_eq!(store.stats().commits, 2);
    }

    #[test]
    fn a_failed_commit_fails_the_whole_batch_and_acknowledges_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let options = StoreOptions {
            max_size: Some(256 << 10),
        };
        let store = Store::open(tmp.path(), options).unwrap();
        save(&store, "before", 0, b"committed").unwrap();

        let release = store.hold();
        let small = store.save("small".into(), 0, b"fits".to_vec());
        let replace = store.save("before".into(), 0, b"replaced".to_vec());
        let huge = store.save("huge".into(), 0, vec![7; 1 << 20]);
        drop(release);
        for done in [block_on(small), block_on(replace), block_on(huge)] {
            assert!(
                matches!(done, Err(StoreError::Full { .. })),
                "every write of the batch fails: {done:?}"
            );
        }
        assert_eq!(store.load("small", 0).unwrap(), None);
        assert_eq!(store.load("huge", 0).unwrap(), None);
        assert_eq!(store.load("before", 0).unwrap().unwrap(), b"committed");
        let stats = store.stats();
        assert_eq!(
            (stats.commits, stats.failed_batches, stats.failed_writes),
            (1, 1, 3)
        );

        // The writer carries on with the next batch.
        save(&store, "after", 0, b"fits").unwrap();
        assert_eq!(store.load("after", 0).unwrap().unwrap(), b"fits");
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        drop(open(tmp.path()));
        let conn = Connection::open(tmp.path().join(FILE_NAME)).unwrap();
        conn.execute("UPDATE bunraku_schema SET version = 99", [])
            .unwrap();
        drop(conn);
        let err = Store::open(tmp.path(), StoreOptions::default()).unwrap_err();
        assert!(matches!(err, StoreError::Schema { found: 99, .. }), "{err}");
        assert!(err.to_string().contains("newer bunraku"), "{err}");
    }

    #[test]
    fn a_file_in_place_of_the_directory_is_a_typed_error() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let err = Store::open(&file, StoreOptions::default()).unwrap_err();
        assert!(matches!(err, StoreError::CreateDir { .. }), "{err}");
    }

    #[test]
    fn dropping_the_store_commits_what_was_queued() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path());
        let release = store.hold();
        let saved = store.save("a".into(), 0, b"queued".to_vec());
        drop(release);
        drop(store);
        block_on(saved).unwrap();
        assert_eq!(open(tmp.path()).load("a", 0).unwrap().unwrap(), b"queued");
    }

    #[test]
    fn a_host_without_data_directory_has_no_store() {
        let lazy = LazyStore::new(None, StoreOptions::default());
        assert_eq!(lazy.get().unwrap_err(), StoreError::NoDataDir);
    }

    #[test]
    fn the_lazy_store_creates_nothing_until_first_use() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let lazy = LazyStore::new(Some(dir.clone()), StoreOptions::default());
        assert!(!dir.exists());
        assert_eq!(lazy.get().unwrap().path(), dir.join(FILE_NAME));
    }

    fn event(version: u32, payload: &[u8]) -> NewEvent {
        NewEvent {
            version,
            payload: payload.to_vec(),
        }
    }

    fn append(
        store: &Store,
        actor: &str,
        expected: u64,
        payloads: &[&[u8]],
        time_ms: u64,
    ) -> Result<u64, StoreError> {
        let events = payloads.iter().map(|p| event(1, p)).collect();
        block_on(store.append(actor.into(), expected, events, time_ms))
    }

    fn read_all(store: &Store, actor: &str, until: Until) -> EventBatch {
        store.read(actor, 0, until, false, usize::MAX).unwrap()
    }

    fn seqs(batch: &EventBatch) -> Vec<u64> {
        batch.events.iter().map(|e| e.seq).collect()
    }

    fn snapshot_at(seq: u64) -> Snapshot {
        Snapshot {
            seq,
            version: 3,
            state: format!("state after {seq}").into_bytes(),
        }
    }

    #[test]
    fn appends_get_gap_free_sequence_numbers_and_read_back_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path());
        assert_eq!(store.last_seq("a").unwrap(), 0);
        assert_eq!(append(&store, "a", 0, &[b"one", b"two"], 1_000), Ok(2));
        let third = vec![event(7, b"three")];
        assert_eq!(block_on(store.append("a".into(), 2, third, 2_000)), Ok(3));
        assert_eq!(store.last_seq("a").unwrap(), 3);

        let batch = read_all(&store, "a", Until::Latest);
        assert_eq!(
            (batch.last, batch.complete, batch.snapshot),
            (3, true, None)
        );
        let got: Vec<_> = batch
            .events
            .iter()
            .map(|e| {
                (
                    e.seq,
                    e.time_ms,
                    e.version,
                    e.payload.as_slice(),
                    e.actor.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (1, 1_000, 1, &b"one"[..], "a"),
                (2, 1_000, 1, &b"two"[..], "a"),
                (3, 2_000, 7, &b"three"[..], "a"),
            ]
        );
        assert!(batch.events.windows(2).all(|w| w[0].pos < w[1].pos));
        // From an offset.
        assert_eq!(
            seqs(&store.read("a", 2, Until::Latest, false, 0).unwrap()),
            [3]
        );
        assert_eq!(
            store.read("a", 3, Until::Latest, false, 0).unwrap().events,
            []
        );
        // An append with nothing in it is refused without touching the log.
        let empty = block_on(store.append("a".into(), 3, Vec::new(), 3_000));
        assert!(
            matches!(empty, Err(StoreError::Invalid { .. })),
            "{empty:?}"
        );
        assert_eq!(store.last_seq("a").unwrap(), 3);
    }

    #[test]
    fn reads_stop_at_a_sequence_number_or_a_time() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path());
        append(&store, "a", 0, &[b"1"], 100).unwrap();
        append(&store, "a", 1, &[b"2", b"3"], 200).unwrap();
        append(&store, "a", 3, &[b"4"], 300).unwrap();

        let batch = read_all(&store, "a", Until::Seq(2));
        assert_eq!(
            (seqs(&batch), batch.last, batch.complete),
            (vec![1, 2], 4, true)
        );
        assert_eq!(seqs(&read_all(&store, "a", Until::Seq(99))), [1, 2, 3, 4]);
        assert_eq!(seqs(&read_all(&store, "a", Until::Time(250))), [1, 2, 3]);
        assert_eq!(seqs(&read_all(&store, "a", Until::Time(200))), [1, 2, 3]);
        assert_eq!(
            seqs(&read_all(&store, "a", Until::Time(99))),
            Vec::<u64>::new()
        );
        assert_eq!(
            seqs(&read_all(&store, "a", Until::Time(u64::MAX))),
            [1, 2, 3, 4]
        );
        assert_eq!(
            seqs(&read_all(&store, "nobody", Until::Latest)),
            Vec::<u64>::new()
        );
    }

    #[test]
    fn an_event_time_never_goes_back_within_a_log() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path());
        append(&store, "a", 0, &[b"1"], 500).unwrap();
        // The host clock stepped back.
        append(&store, "a", 1, &[b"2"], 400).unwrap();
        let batch = read_all(&store, "a", Until::Latest);
        let times: Vec<_> = batch.events.iter().map(|e| e.time_ms).collect();
        assert_eq!(times, [500, 500]);
        assert_eq!(
            seqs(&read_all(&store, "a", Until::Time(450))),
            Vec::<u64>::new()
        );
        assert_eq!(seqs(&read_all(&store, "a", Until::Time(500))), [1, 2]);
    }

    #[test]
    fn a_read_is_cut_at_max_bytes_and_continues_from_its_last_event() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path());
        let payload = [9u8; 100];
        append(&store, "a", 0, &[&payload[..]; 8], 1).unwrap();
        let per_event = payload.len() + "a".len() + EVENT_OVERHEAD;
        let max_bytes = EVENT_OVERHEAD + 3 * per_event;

        let mut from = 0;
        let mut chunks = Vec::new();
        loop {
            let batch = store
                .read("a", from, Until::Latest, false, max_bytes)
                .unwrap();
            assert!(postcard::to_allocvec(&batch).unwrap().len() <= max_bytes);
            assert_eq!(batch.last, 8);
            from = batch.events.last().unwrap().seq;
            chunks.push((seqs(&batch), batch.complete));
            if batch.complete {
                break;
            }
        }
        assert_eq!(
            chunks,
            [
                (vec![1, 2, 3], false),
                (vec![4, 5, 6], false),
                (vec![7, 8], true)
            ]
        );
        // At least one event even when it alone is over the limit.
        let batch = store.read("a", 0, Until::Latest, false, 1).unwrap();
        assert_eq!((seqs(&batch), batch.complete), (vec![1], false));
        // The same with a bound: complete once the bound is reached.
        let batch = store.read("a", 0, Until::Seq(3), false, max_bytes).unwrap();
        assert_eq!((seqs(&batch), batch.complete), (vec![1, 2, 3], true));
    }

    #[test]
    fn a_conflict_fails_only_its_own_append_in_a_batch() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path());
        let release = store.hold();
        let first = store.append("a".into(), 0, vec![event(1, b"first")], 10);
        let second = store.append("a".into(), 0, vec![event(1, b"second")], 10);
        let other = store.append("b".into(), 0, vec![event(1, b"b1"), event(1, b"b2")], 10);
        let saved = store.save("s".into(), 0, b"state".to_vec());
        drop(release);
        assert_eq!(block_on(first), Ok(1));
        assert_eq!(
            block_on(second),
            Err(StoreError::Conflict {
                actor: "a".into(),
                expected: 0,
                last: 1
            })
        );
        assert_eq!(block_on(other), Ok(2));
        block_on(saved).unwrap();
        let stats = store.stats();
        assert_eq!(
            (stats.commits, stats.writes, stats.failed_batches),
            (1, 4, 0)
        );

        let a = read_all(&store, "a", Until::Latest);
        assert_eq!(a.events.len(), 1);
        assert_eq!(a.events[0].payload, b"first");
        assert_eq!(seqs(&read_all(&store, "b", Until::Latest)), [1, 2]);
        assert_eq!(store.load("s", 0).unwrap().unwrap(), b"state");
        let err = StoreError::Conflict {
            actor: "a".into(),
            expected: 0,
            last: 1,
        };
        assert_eq!(
            err.to_string(),
            "append to `a` expected the log to end at 0, it ends at 1"
        );
    }

    #[test]
    fn a_snapshot_is_read_with_the_events_after_it() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path());
        append(&store, "a", 0, &[&b"e"[..]; 8], 1).unwrap();
        block_on(store.snapshot("a".into(), snapshot_at(2))).unwrap();
        block_on(store.snapshot("a".into(), snapshot_at(5))).unwrap();

        let batch = store.read("a", 0, Until::Latest, true, usize::MAX).unwrap();
        assert_eq!(batch.snapshot, Some(snapshot_at(5)));
        assert_eq!(
            (seqs(&batch), batch.last, batch.complete),
            (vec![6, 7, 8], 8, true)
        );
        // Up to an earlier point: the latest snapshot at or before it.
        let batch = store.read("a", 0, Until::Seq(4), true, usize::MAX).unwrap();
        assert_eq!(batch.snapshot, Some(snapshot_at(2)));
        assert_eq!(seqs(&batch), [3, 4]);
        let batch = store.read("a", 0, Until::Seq(1), true, usize::MAX).unwrap();
        assert_eq!((&batch.snapshot, seqs(&batch)), (&None, vec![1]));
        // Without asking, no snapshot.
        assert_eq!(read_all(&store, "a", Until::Latest).snapshot, None);

        let past = block_on(store.snapshot("a".into(), snapshot_at(9)));
        assert!(matches!(past, Err(StoreError::Invalid { .. })), "{past:?}");
        let none = block_on(store.snapshot("nobody".into(), snapshot_at(1)));
        assert!(matches!(none, Err(StoreError::Invalid { .. })), "{none:?}");
    }

    #[test]
    fn a_corrupted_event_is_never_served_and_never_deleted() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path());
        append(&store, "a", 0, &[b"1", b"2", b"3"], 1).unwrap();
        append(&store, "b", 0, &[b"fine"], 1).unwrap();
        block_on(store.snapshot("a".into(), snapshot_at(1))).unwrap();

        let conn = Connection::open(store.path()).unwrap();
        conn.execute(
            "UPDATE events SET payload = x'00' WHERE actor = 'a' AND seq = 2",
            [],
        )
        .unwrap();

        let err = store
            .read("a", 0, Until::Latest, false, usize::MAX)
            .unwrap_err();
        assert_eq!(
            err,
            StoreError::Corrupt {
                actor: "a".into(),
                seq: 2
            }
        );
        assert!(err.to_string().contains("corrupt at sequence 2"), "{err}");
        // A cut-off read stopping before the row is not affected; one reaching it is.
        assert_eq!(seqs(&read_all(&store, "a", Until::Seq(1))), [1]);
        assert!(store.read("a", 0, Until::Latest, false, 1).is_ok());
        assert!(store.read_type("a", 0, usize::MAX).is_err());
        // Other logs still read, and nothing was deleted.
        assert_eq!(seqs(&read_all(&store, "b", Until::Latest)), [1]);
        let rows: i64 = conn
            .query_row("SELECT COUNT(*) FROM events WHERE actor = 'a'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(rows, 3);
        assert_eq!(store.integrity_check().unwrap(), "ok");

        // A corrupt snapshot is reported the same way, with its sequence number.
        conn.execute("UPDATE snapshots SET state = x'00' WHERE actor = 'a'", [])
            .unwrap();
        let err = store
            .read("a", 0, Until::Seq(1), true, usize::MAX)
            .unwrap_err();
        assert_eq!(
            err,
            StoreError::Corrupt {
                actor: "a".into(),
                seq: 1
            }
        );
    }

    #[test]
    fn a_full_disk_fails_the_batch_of_appends_and_the_next_append_succeeds() {
        let tmp = tempfile::tempdir().unwrap();
        let options = StoreOptions {
            max_size: Some(256 << 10),
        };
        let store = Store::open(tmp.path(), options).unwrap();
        append(&store, "a", 0, &[b"kept"], 1).unwrap();
        let mut committed = store.committed();
        committed.mark_unchanged();

        let release = store.hold();
        let small = store.append("a".into(), 1, vec![event(1, b"small")], 2);
        let other = store.append("b".into(), 0, vec![event(1, b"other")], 2);
        let huge = store.append("c".into(), 0, vec![event(1, &[7; 1 << 20])], 2);
        drop(release);
        for done in [block_on(small), block_on(other), block_on(huge)] {
            assert!(matches!(done, Err(StoreError::Full { .. })), "{done:?}");
        }
        assert_eq!(store.last_seq("a").unwrap(), 1);
        assert_eq!(store.last_seq("b").unwrap(), 0);
        assert_eq!(store.last_seq("c").unwrap(), 0);
        assert_eq!(seqs(&read_all(&store, "a", Until::Latest)), [1]);
        assert!(!committed.has_changed().unwrap());
        assert_eq!(store.integrity_check().unwrap(), "ok");

        assert_eq!(append(&store, "a", 1, &[b"after"], 3), Ok(2));
        assert_eq!(seqs(&read_all(&store, "a", Until::Latest)), [1, 2]);
    }

    #[test]
    fn read_type_follows_every_actor_of_a_kind_in_commit_order() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path());
        let mut committed = store.committed();
        assert_eq!(*committed.borrow_and_update(), 0);
        append(&store, "account/alice", 0, &[b"a1"], 1).unwrap();
        append(&store, "order/1", 0, &[b"o1"], 1).unwrap();
        append(&store, "account/bob", 0, &[b"b1", b"b2"], 1).unwrap();
        append(&store, "account/alice", 1, &[b"a2"], 1).unwrap();
        append(&store, "account", 0, &[b"the type itself"], 1).unwrap();
        assert!(committed.has_changed().unwrap());
        let newest = *committed.borrow_and_update();

        let batch = store.read_type("account", 0, usize::MAX).unwrap();
        let got: Vec<_> = batch
            .events
            .iter()
            .map(|e| (e.actor.as_str(), e.seq, e.payload.as_slice()))
            .collect();
        assert_eq!(
            got,
            [
                ("account/alice", 1, &b"a1"[..]),
                ("account/bob", 1, &b"b1"[..]),
                ("account/bob", 2, &b"b2"[..]),
                ("account/alice", 2, &b"a2"[..]),
                ("account", 1, &b"the type itself"[..]),
            ]
        );
        assert!(batch.complete);
        assert_eq!(batch.last, newest);
        assert!(batch.events.windows(2).all(|w| w[0].pos < w[1].pos));

        // From an offset, in chunks.
        let offset = batch.events[1].pos;
        let chunk = store.read_type("account", offset, 1).unwrap();
        assert_eq!(chunk.events.len(), 1);
        assert_eq!((chunk.events[0].seq, chunk.complete), (2, false));
        assert_eq!(chunk.last, chunk.events[0].pos);
        let rest = store.read_type("account", chunk.last, usize::MAX).unwrap();
        assert_eq!(rest.events.len(), 2);
        // Nothing new: complete, and the position stays.
        let none = store.read_type("account", newest, usize::MAX).unwrap();
        assert_eq!(
            (none.events.len(), none.last, none.complete),
            (0, newest, true)
        );
        assert_eq!(
            store
                .read_type("order", 0, usize::MAX)
                .unwrap()
                .events
                .len(),
            1
        );

        // A new append shows in the watch and in the next read.
        append(&store, "account/carol", 0, &[b"c1"], 1).unwrap();
        assert!(committed.has_changed().unwrap());
        let pos = *committed.borrow_and_update();
        let next = store.read_type("account", newest, usize::MAX).unwrap();
        assert_eq!(next.events.len(), 1);
        assert_eq!((next.events[0].pos, next.last), (pos, pos));
        // A reopened store starts the watch at the highest position.
        drop(store);
        assert_eq!(*open(tmp.path()).committed().borrow(), pos);
    }

    #[test]
    fn reminders_are_set_replaced_cancelled_and_survive_reopening() {
        let tmp = tempfile::tempdir().unwrap();
        let reminder = |actor: &str, name: &str, due_ms, period_ms| StoredReminder {
            actor: actor.into(),
            name: name.into(),
            msg_type: "Tick".into(),
            codec: Codec::Json,
            payload: b"{}".to_vec(),
            due_ms,
            period_ms,
        };
        {
            let store = open(tmp.path());
            assert_eq!(store.reminders().unwrap(), []);
            block_on(store.set_reminder(reminder("a", "daily", 500, Some(86_400_000)))).unwrap();
            block_on(store.set_reminder(reminder("a", "once", 100, None))).unwrap();
            block_on(store.set_reminder(reminder("b", "daily", 300, None))).unwrap();
            let mut replaced = reminder("a", "daily", 200, Some(1_000));
            replaced.codec = Codec::Postcard;
            block_on(store.set_reminder(replaced)).unwrap();
            assert_eq!(
                block_on(store.cancel_reminder("a".into(), "once".into())),
                Ok(true)
            );
            assert_eq!(
                block_on(store.cancel_reminder("a".into(), "once".into())),
                Ok(false)
            );
        }
        let store = open(tmp.path());
        let mut replaced = reminder("a", "daily", 200, Some(1_000));
        replaced.codec = Codec::Postcard;
        assert_eq!(
            store.reminders().unwrap(),
            [replaced, reminder("b", "daily", 300, None)]
        );
    }

    #[test]
    fn a_new_store_passes_the_integrity_check_at_the_current_schema() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path());
        append(&store, "a", 0, &[b"1"], 1).unwrap();
        assert_eq!(store.integrity_check().unwrap(), "ok");
        assert_eq!(SCHEMA_VERSION, 2);
    }

    #[test]
    fn a_version_1_file_is_upgraded_in_place_keeping_its_state() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let conn = Connection::open(tmp.path().join(FILE_NAME)).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.execute_batch(
                "CREATE TABLE bunraku_schema (
                     id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL);
                 INSERT INTO bunraku_schema VALUES (1, 1);
                 INSERT INTO actor_state VALUES ('a', 0, x'2a');",
            )
            .unwrap();
        }
        let store = open(tmp.path());
        assert_eq!(store.load("a", 0).unwrap().unwrap(), [42]);
        assert_eq!(append(&store, "a", 0, &[b"1"], 1), Ok(1));
    }
}
