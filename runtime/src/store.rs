//! The embedded store: SQLite in the host's data directory, for actors' persisted state (and,
//! later, event logs on the same file).
//!
//! # Layout
//!
//! One database file, `<data_dir>/state.sqlite3`, with SQLite's `state.sqlite3-wal` and
//! `state.sqlite3-shm` next to it (all mode `0600`). The directory is created (mode `0700`) when
//! the store is opened, which the host does on an actor's first `load` or `save`: a host whose
//! actors never persist anything creates no file. The schema is versioned in the table `bunraku_schema`; a host
//! upgrades an older file in place and refuses a newer one ([`StoreError::Schema`]).
//!
//! Persisted state is one row per instance in `actor_state`, keyed by the actor's **address** (its
//! name) and its **instance index**: an actor with `instances = 1` uses instance 0, and each
//! instance of a replicated actor keeps state of its own, since each holds its own in-memory state
//! and serves its own senders. Changing `instances` between runs leaves the state of instance `k`
//! with instance `k`. Virtual actors (`account/alice`) will use the full address as the name.
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
//! All writes go through one **writer thread** that owns the only writing connection. Callers
//! queue requests on a channel ([`Store::save`] returns at once with a future). The writer takes
//! the first request, then everything else already queued (up to [`MAX_BATCH_WRITES`] writes or
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
//! Requests are applied in the order they were queued, so the saves of one actor apply in order
//! (the last acknowledged save is what the next `load` returns). An unacknowledged save (its
//! instance trapped, or the host stopped, before the commit) may or may not be in the file, as
//! after a crash.
//!
//! # Reads
//!
//! [`Store::load`] runs on a small pool of read connections of its own, never on the writer's,
//! so reads do not queue behind commits. Each read is one `SELECT` in its own short read
//! transaction, which keeps WAL checkpoints (run by the writer as the WAL grows) from being
//! starved. The host calls `load` synchronously from the `state_load` host function; a point read
//! by primary key takes microseconds.
//!
//! # For the event store
//!
//! Event logs (issue 5) add tables through a new entry in the migration list and new `Write`
//! variants applied by the same writer in the same transactions, so appends of many actors share
//! a commit with saves. A variant whose own check fails (an append expecting another sequence
//! number) reports that to its own caller without failing the batch, by running in a savepoint.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use tokio::sync::oneshot;

pub use crate::error::StoreError;

/// The database file's name inside the data directory.
pub const FILE_NAME: &str = "state.sqlite3";

/// Most writes committed in one transaction.
pub const MAX_BATCH_WRITES: usize = 1024;

/// Most bytes of state committed in one transaction (a batch stops growing past it).
pub const MAX_BATCH_BYTES: usize = 16 << 20;

/// How long a connection waits for a lock another connection holds (a second host on the same
/// directory, a checkpoint) before the operation fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Idle read connections kept for reuse.
const MAX_IDLE_READERS: usize = 4;

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
];

/// The schema version this host writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

const SAVE_STATE: &str = "INSERT INTO actor_state (actor, instance, state) VALUES (?1, ?2, ?3)
     ON CONFLICT (actor, instance) DO UPDATE SET state = excluded.state";

const LOAD_STATE: &str = "SELECT state FROM actor_state WHERE actor = ?1 AND instance = ?2";

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
    /// Writes acknowledged after a commit.
    pub writes: u64,
    /// Batches that failed and were rolled back.
    pub failed_batches: u64,
    /// Writes that failed with their batch.
    pub failed_writes: u64,
}

/// The durability settings of the writer connection, as SQLite reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Durability {
    /// `PRAGMA journal_mode`: `"wal"`.
    pub journal_mode: String,
    /// `PRAGMA synchronous`: `2` (`FULL`).
    pub synchronous: i64,
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
    queue: Option<mpsc::Sender<Request>>,
    writer: Option<JoinHandle<()>>,
    readers: Mutex<Vec<Connection>>,
    counters: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    commits: AtomicU64,
    writes: AtomicU64,
    failed_batches: AtomicU64,
    failed_writes: AtomicU64,
}

/// A write the writer applies inside a batch's transaction.
enum Write {
    /// Replace an actor instance's state.
    SaveState {
        actor: Arc<str>,
        instance: u32,
        state: Vec<u8>,
    },
}

impl Write {
    fn size(&self) -> usize {
        match self {
            Self::SaveState { actor, state, .. } => actor.len() + state.len(),
        }
    }
}

/// What the writer thread receives.
enum Request {
    /// A write, acknowledged after its batch committed.
    Write(Write, oneshot::Sender<Result<(), StoreError>>),
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

        let (queue, requests) = mpsc::channel();
        let counters = Arc::new(Counters::default());
        let writer = std::thread::Builder::new()
            .name("bunraku-store".into())
            .spawn({
                let counters = counters.clone();
                move || run_writer(conn, requests, &counters)
            })
            .map_err(|e| StoreError::Open {
                path: path.clone(),
                message: format!("cannot start the writer thread: {e}"),
            })?;
        tracing::debug!(path = %path.display(), "store opened");
        Ok(Self {
            path,
            queue: Some(queue),
            writer: Some(writer),
            readers: Mutex::new(Vec::new()),
            counters,
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
        let write = Write::SaveState {
            actor,
            instance,
            state,
        };
        let (ack, done) = oneshot::channel();
        self.send(Request::Write(write, ack));
        async move { done.await.unwrap_or(Err(StoreError::Closed)) }
    }

    /// The state last saved for instance `instance` of actor `actor`: `None` when it never saved
    /// any. Sees every save whose future completed.
    pub fn load(&self, actor: &str, instance: u32) -> Result<Option<Vec<u8>>, StoreError> {
        let conn = self.reader()?;
        let result = conn
            .prepare_cached(LOAD_STATE)
            .and_then(|mut stmt| {
                stmt.query_row(params![actor, instance], |row| row.get::<_, Vec<u8>>(0))
                    .optional()
            })
            .map_err(|e| StoreError::Read {
                message: e.to_string(),
            });
        let mut idle = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
        result
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
        }
    }

    /// Hands a request to the writer. When the writer is gone the request (and its reply
    /// sender) is dropped, which its future reports as [`StoreError::Closed`].
    fn send(&self, request: Request) {
        if let Some(queue) = &self.queue {
            let _ = queue.send(request);
        }
    }

    /// An idle read connection, or a new one.
    fn reader(&self) -> Result<Connection, StoreError> {
        if let Some(conn) = self.readers.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Ok(conn);
        }
        let read_err = |e: rusqlite::Error| StoreError::Read {
            message: e.to_string(),
        };
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
fn run_writer(mut conn: Connection, requests: mpsc::Receiver<Request>, counters: &Counters) {
    let mut batch: Vec<(Write, oneshot::Sender<Result<(), StoreError>>)> = Vec::new();
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
                Request::Write(write, ack) => {
                    bytes += write.size();
                    batch.push((write, ack));
                }
                Request::Durability(reply) => {
                    let answer = durability(&conn).map_err(|e| StoreError::Read {
                        message: e.to_string(),
                    });
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
            commit(&mut conn, &mut batch, counters);
        }
    }
}

/// Applies a batch in one transaction and completes every request in it with the outcome.
fn commit(
    conn: &mut Connection,
    batch: &mut Vec<(Write, oneshot::Sender<Result<(), StoreError>>)>,
    counters: &Counters,
) {
    let applied = apply(conn, batch);
    let outcome = match applied {
        Ok(()) => {
            counters.commits.fetch_add(1, Ordering::Relaxed);
            counters
                .writes
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
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
    for (_, ack) in batch.drain(..) {
        // A caller that went away (its instance trapped) no longer waits for the outcome.
        let _ = ack.send(outcome.clone());
    }
}

fn apply(
    conn: &mut Connection,
    batch: &[(Write, oneshot::Sender<Result<(), StoreError>>)],
) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut save = tx.prepare_cached(SAVE_STATE)?;
        for (write, _) in batch {
            match write {
                Write::SaveState {
                    actor,
                    instance,
                    state,
                } => {
                    save.execute(params![&**actor, instance, state])?;
                }
            }
        }
    }
    tx.commit()
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
        for file in [FILE_NAME, "state.sqlite3-wal", "state.sqlite3-shm"] {
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
}
