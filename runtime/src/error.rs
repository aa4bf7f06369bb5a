//! The runtime's typed errors.
//!
//! Each error says what the user sees: which file, which actor, which message type, and what to
//! do about it. Errors that travel to guests are [`bunraku_abi::ErrorCode`]s; the types here are
//! what the host library returns to its callers (the CLI, tests, embedders).

use std::path::PathBuf;

use bunraku_abi::ErrorCode;

use crate::engine::EngineError;

/// Why a module could not be loaded as an actor.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The module file could not be read.
    #[error("cannot read module {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not wasm, or wasm that does not compile.
    #[error("{0}")]
    Compile(#[from] EngineError),
    /// A required export is missing.
    #[error(
        "the module does not export `{name}`: is it an actor built with bunraku-sdk and `#[actor]`?"
    )]
    MissingExport {
        /// The export's name.
        name: &'static str,
    },
    /// An export has the wrong kind or signature.
    #[error("the module's export `{name}` has the wrong type: expected {expected}")]
    WrongExport {
        /// The export's name.
        name: &'static str,
        /// What the host expects.
        expected: &'static str,
    },
    /// The guest was built against another ABI version.
    #[error(
        "ABI version mismatch: the module was built for bunraku ABI {found}, this host speaks ABI {expected}; rebuild the actor against the matching bunraku-sdk"
    )]
    AbiMismatch {
        /// What the guest exports.
        found: u32,
        /// What the host speaks.
        expected: u32,
    },
    /// The module imports something the host does not provide.
    #[error("the module imports `{module}::{name}`, which this host does not provide{hint}")]
    UnknownImport {
        /// The import module.
        module: String,
        /// The import name.
        name: String,
        /// Extra advice, possibly empty.
        hint: &'static str,
    },
    /// The guest's descriptor did not decode.
    #[error("the module's descriptor is malformed: {0}")]
    BadDescriptor(String),
    /// Creating an instance failed (memory walls are named).
    #[error("cannot instantiate the module: {0}")]
    Instantiate(String),
    /// The guest trapped while initialising or describing itself.
    #[error("the module trapped while loading: {0}")]
    Trap(String),
}

/// Why a deployment failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeployError {
    /// An actor with this name already runs.
    #[error("an actor named `{0}` is already deployed")]
    Duplicate(String),
    /// The module could not be built.
    #[error("actor `{actor}`: {source}")]
    Build {
        /// The actor.
        actor: String,
        /// What went wrong.
        #[source]
        source: crate::build::BuildError,
    },
    /// The module could not be loaded.
    #[error("actor `{actor}` ({module}): {source}")]
    Load {
        /// The actor.
        actor: String,
        /// The module path.
        module: String,
        /// What went wrong.
        #[source]
        source: LoadError,
    },
    /// A subscription pattern is invalid.
    #[error("actor `{actor}`: {source}")]
    Subject {
        /// The actor.
        actor: String,
        /// What is wrong with the pattern.
        #[source]
        source: crate::subject::SubjectError,
    },
    /// The supervision tree could not be built.
    #[error("{0}")]
    Supervision(#[from] crate::supervision::SupervisionError),
}

/// Why a message from a client (the CLI, a test, an embedder) did not get through or got no reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// No actor has this name.
    #[error("no such actor `{0}`")]
    NoSuchActor(String),
    /// The actor has no handler for this message type.
    #[error("actor `{actor}` has no handler for message type `{msg_type}`; it handles: {}", known.join(", "))]
    UnknownType {
        /// The actor.
        actor: String,
        /// The type asked for.
        msg_type: String,
        /// The types it handles.
        known: Vec<String>,
    },
    /// No type was given and the actor has more than one handler.
    #[error("actor `{actor}` handles several message types; choose one with --type: {}", known.join(", "))]
    TypeRequired {
        /// The actor.
        actor: String,
        /// The types it handles.
        known: Vec<String>,
    },
    /// No reply before the deadline.
    #[error("timed out after {0} ms waiting for a reply")]
    Timeout(u64),
    /// The target trapped or stopped while handling the message.
    #[error("target failed: the actor trapped or stopped while handling the message")]
    TargetFailed,
    /// The mailbox is full (try-send only).
    #[error("mailbox of `{0}` is full")]
    MailboxFull(String),
    /// Not allowed.
    #[error("denied")]
    Denied,
    /// The message is larger than the target accepts.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The payload size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A subject is malformed.
    #[error("{0}")]
    Subject(#[from] crate::subject::SubjectError),
    /// The actor answered with a typed error.
    #[error("{code}: {message}")]
    Remote {
        /// The error code.
        code: ErrorCode,
        /// The actor's message.
        message: String,
    },
    /// The host is shutting down.
    #[error("the host is shutting down")]
    Stopped,
}

impl CallError {
    /// The wire code that best describes this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NoSuchActor(_) => ErrorCode::NoSuchActor,
            Self::UnknownType { .. } | Self::TypeRequired { .. } => ErrorCode::UnknownType,
            Self::Timeout(_) => ErrorCode::Timeout,
            Self::TargetFailed => ErrorCode::TargetFailed,
            Self::MailboxFull(_) => ErrorCode::MailboxFull,
            Self::Denied => ErrorCode::Denied,
            Self::TooLarge { .. } => ErrorCode::TooLarge,
            Self::Subject(_) => ErrorCode::Invalid,
            Self::Remote { code, .. } => *code,
            Self::Stopped => ErrorCode::Stopped,
        }
    }
}

/// Why the embedded store ([`crate::store`]) could not open, read or make a write durable, or
/// refused one request.
///
/// Guests see [`Conflict`](Self::Conflict) as [`ErrorCode::Conflict`],
/// [`Corrupt`](Self::Corrupt) as [`ErrorCode::Corrupt`], [`Invalid`](Self::Invalid) as
/// [`ErrorCode::Invalid`] and every other one as [`ErrorCode::StorageUnavailable`]; the host logs
/// the detail. A write that failed with a batch error ([`Full`](Self::Full),
/// [`Write`](Self::Write)) was not acknowledged, and nothing else in its batch was either; the
/// refusals of one request (`Conflict`, `Invalid`) fail that request alone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The host was started without a data directory, so it has nowhere to keep state.
    #[error(
        "the host has no data directory, so actors cannot persist state: set `HostConfig::data_dir` (`bunraku run` uses the manifest's `[host] data_dir`)"
    )]
    NoDataDir,
    /// The data directory could not be created.
    #[error("cannot create the data directory {path}: {message}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        message: String,
    },
    /// The database file could not be opened or set up.
    #[error("cannot open the store {path}: {message}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        message: String,
    },
    /// Another store (another host, in this process or another) holds the data directory: one
    /// host per data directory. Reported after waiting 200 ms for the other store to close.
    #[error(
        "the data directory {dir} is in use by another host: stop it, or give this host another data directory"
    )]
    InUse {
        /// The data directory.
        dir: PathBuf,
    },
    /// SQLite would not run with the durability the store promises (WAL, `synchronous=FULL`),
    /// for instance on a file system without shared-memory support.
    #[error(
        "the store {path} cannot be made durable: `{setting}` is `{found}`, expected `{expected}`"
    )]
    NotDurable {
        /// The database file.
        path: PathBuf,
        /// The pragma.
        setting: &'static str,
        /// What SQLite reported.
        found: String,
        /// What the store needs.
        expected: &'static str,
    },
    /// The file was written by a newer bunraku whose schema this host does not know.
    #[error(
        "the store {path} has schema version {found}, newer than this host's {supported}: run a newer bunraku, or give this host another data directory"
    )]
    Schema {
        /// The database file.
        path: PathBuf,
        /// The version in the file.
        found: i64,
        /// The newest version this host knows.
        supported: i64,
    },
    /// The disk (or the store's configured size limit) is full: the batch was rolled back.
    #[error("the store is full; nothing of this batch was written: {message}")]
    Full {
        /// SQLite's error.
        message: String,
    },
    /// A write or its commit failed (an I/O error, a locked or read-only file): the batch was
    /// rolled back.
    #[error("the store could not commit; nothing of this batch was acknowledged: {message}")]
    Write {
        /// SQLite's error.
        message: String,
    },
    /// A read failed.
    #[error("the store could not read: {message}")]
    Read {
        /// SQLite's error.
        message: String,
    },
    /// The store's writer has stopped (the host is shutting down).
    #[error("the store is closed")]
    Closed,
    /// An append expected the actor's event log to end at another sequence number (another
    /// append came first). Nothing of it was written; the other writes of its batch were.
    #[error("append to `{actor}` expected the log to end at {expected}, it ends at {last}")]
    Conflict {
        /// The actor whose log it is.
        actor: String,
        /// The last sequence number the append expected.
        expected: u64,
        /// The log's actual last sequence number.
        last: u64,
    },
    /// A stored event (or the snapshot at that sequence number) fails its checksum: it was not
    /// served, and it is left in place for inspection.
    #[error(
        "event log of `{actor}` is corrupt at sequence {seq}: the row fails its checksum; nothing was served or deleted"
    )]
    Corrupt {
        /// The actor whose log it is.
        actor: String,
        /// The sequence number of the row (an event, or a snapshot taken after that event).
        seq: u64,
    },
    /// The request itself is invalid (an empty append, a snapshot past the end of the log, a
    /// number out of range); nothing was written.
    #[error("invalid store request: {message}")]
    Invalid {
        /// What is wrong.
        message: String,
    },
}
