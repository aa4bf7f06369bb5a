//! The deployment manifest, `bunraku.toml`: which actors run, from which modules, with which
//! limits and grants.
//!
//! [`Manifest::load`] reads and checks a manifest in one step and returns either a
//! [`Manifest`] whose every value is valid and whose paths are absolute, or a
//! [`ManifestError`] that names the file, the key and the fix. The reference for every key is
//! `docs/manifest.md`.
//!
//! ```
//! use bunraku_runtime::manifest::{Manifest, ModuleSource};
//! use std::time::Duration;
//!
//! let dir = tempfile::tempdir()?;
//! std::fs::write(dir.path().join("echo.wasm"), b"\0asm\x01\0\0\0")?;
//! std::fs::write(
//!     dir.path().join("bunraku.toml"),
//!     r#"
//!         [[actor]]
//!         name = "echo"
//!         module = "echo.wasm"
//!         instances = 4
//!         subscriptions = ["sensors.>"]
//!         config = { greeting = "hi" }
//!
//!         [actor.limits]
//!         memory = "1MiB"
//!
//!         [actor.grants]
//!         publish = ["sensors.>"]
//!     "#,
//! )?;
//!
//! let manifest = Manifest::load(dir.path())?;
//! let echo = manifest.actor("echo").unwrap();
//! assert!(matches!(echo.module, ModuleSource::Wasm(_)));
//! assert_eq!(echo.instances, 4);
//! assert_eq!(echo.limits.memory, 1 << 20);
//! assert_eq!(echo.limits.time_budget, Duration::from_millis(1000)); // the default
//! assert_eq!(echo.config_json(), br#"{"greeting":"hi"}"#);
//! // Deny by default: only what `[actor.grants]` lists.
//! assert!(echo.grants.may_publish("sensors.kitchen.temp"));
//! assert!(!echo.grants.may_send("billing") && !echo.grants.storage);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Unknown keys
//!
//! A misspelt key must not be silently ignored (a `memroy` limit that does nothing is worse than
//! an error). Sections may later be spliced in with `#[serde(flatten)]`, where serde's
//! `deny_unknown_fields` does not work, so unknown keys are found with `serde_ignored` instead:
//! every key that deserialization skipped is reported with its path (`actor[1].limits.memroy`)
//! and, when a known key is close, a "did you mean". Adding a key is adding a field to the
//! matching `Raw*` struct below; the suggestions read the field lists from serde itself.

use bunraku_abi::Policy;
use serde::de::{self, Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use crate::grants::{ANY_ACTOR, Grants};
use crate::subject::Pattern;
use crate::supervision::SupervisorSpec;
use crate::supervisor::{ChildSpec, Intensity, RestartType, Strategy};

/// How long a virtual actor stays active without handling a message, by default.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The file name [`Manifest::load`] looks for when given a directory.
pub const MANIFEST_FILE: &str = "bunraku.toml";

/// The largest `memory` limit: what a wasm32 memory can address (4 GiB).
pub const MAX_MEMORY: u64 = 4 << 30;

/// A checked deployment manifest.
///
/// Every path in it is absolute. Build one with [`Manifest::load`] or [`Manifest::parse`].
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// The manifest file itself (absolute).
    pub path: PathBuf,
    /// The directory holding the manifest; relative paths in it are resolved against this.
    pub dir: PathBuf,
    /// The `[host]` section.
    pub host: HostSection,
    /// The `[[actor]]` tables, in file order.
    pub actors: Vec<ActorSpec>,
    /// The `[smoke]` section, when the manifest has one.
    pub smoke: Option<SmokeSection>,
    /// The grants of the client principals the manifest declares (`[principal.cli]`), by name.
    /// A principal it does not declare keeps the host's default: the CLI may do everything.
    pub principals: BTreeMap<String, Grants>,
    /// The `[[supervisor]]` tables, in file order, with every child's restart type resolved.
    pub supervisors: Vec<SupervisorSpec>,
    /// The `[[spawnable]]` tables: modules actors may start with `ctx.spawn(name, ..)`, and the
    /// settings spawned actors get (their `name` is what `spawn` names).
    pub spawnables: Vec<ActorSpec>,
    /// The `[gateway]` table: the HTTP gateway `bunraku run` starts, when the manifest has one.
    /// Its checks ([`GatewayConfig::problems`]) and that its routes name the manifest's actors
    /// are part of loading; a JWT key's relative `public_key_file` is resolved against the
    /// manifest's directory.
    ///
    /// [`GatewayConfig::problems`]: crate::gateway::GatewayConfig::problems
    pub gateway: Option<crate::gateway::GatewayConfig>,
}

/// The `[smoke]` section: how `bunraku run --smoke` checks the deployment: an actor that checks
/// it, an HTTP script run against the gateway, or both.
///
/// The CLI sends the `actor` the JSON request `{}` of message type [`SMOKE_MESSAGE`] and expects
/// a JSON reply `{"ok": bool, "summary": string, "facts": [{"name", "ok", "detail"}]}`. It runs
/// the `http` script ([`crate::gateway::script`]) itself, over loopback against the manifest's
/// gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmokeSection {
    /// The actor that runs the self-check (`actor`); one of the manifest's actors. At least one
    /// of `actor` and `http` is set.
    pub actor: Option<String>,
    /// The HTTP smoke script (`http`, a path relative to the manifest), absolute; needs a
    /// `[gateway]`.
    pub http: Option<PathBuf>,
    /// How long the self-check may take (`timeout_ms`, default 60 000 ms).
    pub timeout: Duration,
}

/// The message type `bunraku run --smoke` sends to the [`SmokeSection::actor`].
pub const SMOKE_MESSAGE: &str = "Smoke";

/// The default [`SmokeSection::timeout`].
pub const DEFAULT_SMOKE_TIMEOUT: Duration = Duration::from_millis(60_000);

/// The `[host]` section: settings of the host process rather than of an actor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSection {
    /// Where the host keeps its state (`data_dir`, default `.bunraku` next to the manifest),
    /// absolute. It is not created by loading the manifest.
    pub data_dir: PathBuf,
    /// The log filter (`log`, default `"info"`), in `tracing_subscriber::EnvFilter` syntax.
    pub log: String,
    /// How long an instance must be idle before it gives back the memory pages it can rebuild
    /// (`idle_trim_ms`, default 1000; `0` turns trimming off): see
    /// [`HostConfig::idle_trim`](crate::HostConfig::idle_trim).
    pub idle_trim: Option<Duration>,
}

/// One `[[actor]]` table: an addressable actor and how to run it.
#[derive(Debug, Clone, PartialEq)]
pub struct ActorSpec {
    /// The address other actors and the CLI use (`name`): see [`validate_actor_name`].
    pub name: String,
    /// Where the actor's code comes from (`module`).
    pub module: ModuleSource,
    /// How many instances run side by side (`instances`, default 1). A direct message or request
    /// goes to instance `hash(sender) % instances`, and a published message to one instance per
    /// subscription chosen by `hash(publisher) % instances`, so messages from one sender reach one
    /// instance in the order they were sent.
    pub instances: u32,
    /// The subjects the actor subscribes to at start (`subscriptions`), each a queue group across
    /// the actor's instances.
    pub subscriptions: Vec<SubscriptionSpec>,
    /// The actor's `config` table as JSON (`null` when absent); see [`ActorSpec::config_json`].
    pub config: serde_json::Value,
    /// Resource limits (`[actor.limits]`).
    pub limits: Limits,
    /// Restart backoff (`[actor.restart]`).
    pub restart: RestartPolicy,
    /// Whether its supervisor restarts it (`[actor.restart] type`, default `permanent`); only
    /// used when a `[[supervisor]]` lists the actor.
    pub restart_type: RestartType,
    /// `Some` for a virtual actor type (`virtual = true`): addressed as `NAME/KEY`, one
    /// activation per key on its first message, deactivated after this much idle time
    /// (`idle_timeout_ms`, default 60 000 ms) when it persists state.
    pub virtual_idle: Option<Duration>,
    /// Virtual actor types and spawnable modules only: how many instances the type or module
    /// keeps instantiated ahead of its activations or spawns (`prepared_instances`); `None`
    /// takes the host's [`HostConfig::prepared_instances`](crate::HostConfig::prepared_instances),
    /// `Some(0)` makes every start instantiate its own. See [`crate::prepared`].
    pub prepared_instances: Option<usize>,
    /// What the actor may do (`[actor.grants]`); nothing unless granted. Its manifest
    /// `subscriptions` need no grant.
    pub grants: Grants,
}

impl ActorSpec {
    /// An actor with every optional key at its default: one instance, no subscriptions, no
    /// config, default [`Limits`] and [`RestartPolicy`], and no grants ([`Grants::none`]: it may
    /// answer, but not send, call, publish, subscribe or store). For actors started without a
    /// manifest.
    pub fn new(name: impl Into<String>, module: ModuleSource) -> Self {
        Self {
            name: name.into(),
            module,
            instances: 1,
            subscriptions: Vec::new(),
            config: serde_json::Value::Null,
            limits: Limits::default(),
            restart: RestartPolicy::default(),
            restart_type: RestartType::Permanent,
            virtual_idle: None,
            prepared_instances: None,
            grants: Grants::none(),
        }
    }

    /// The same spec with these grants.
    pub fn with_grants(mut self, grants: Grants) -> Self {
        self.grants = grants;
        self
    }

    /// The `config` table as compact JSON bytes, as handed to the actor's `on_start` (`null`
    /// when the manifest gives no `config`).
    pub fn config_json(&self) -> Vec<u8> {
        self.config.to_string().into_bytes()
    }
}

/// Where an actor's code comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ModuleSource {
    /// A guest crate directory (holding a `Cargo.toml`), built to wasm when stale by
    /// [`crate::build::resolve_module`]. The path is absolute.
    Crate(PathBuf),
    /// A compiled `.wasm` module. The path is absolute.
    Wasm(PathBuf),
}

impl ModuleSource {
    /// The directory or file the source names.
    pub fn path(&self) -> &Path {
        match self {
            Self::Crate(p) | Self::Wasm(p) => p,
        }
    }
}

/// One entry of `subscriptions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionSpec {
    /// A NATS-style subject pattern: `.`-separated tokens, `*` matching one token, `>` (last
    /// token only) matching one or more.
    pub pattern: String,
    /// What a publisher does when the chosen instance's mailbox is full (`policy`, default
    /// `wait`).
    pub policy: Policy,
}

/// Per-instance resource limits (`[actor.limits]`).
///
/// `Limits::default()` holds the documented defaults, so the runtime can use it without a
/// manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes of linear memory an instance may have (`memory`, default 16 MiB).
    pub memory: u64,
    /// Longest time one handler may run before it is interrupted (`time_budget_ms`, default
    /// 1000 ms); enforced with epoch interruption, so it is approximate.
    pub time_budget: Duration,
    /// Most messages waiting in an instance's mailbox (`mailbox`, default 1024).
    pub mailbox: usize,
    /// Largest message payload the actor may send or receive (`max_message_bytes`, default
    /// 1 MiB).
    pub max_message_bytes: usize,
    /// Most handlers in flight at once in one instance (`concurrency`, default 1). Above 1, a
    /// handler waiting for a reply lets the next message start.
    pub concurrency: usize,
    /// How long a request from this actor waits for a reply unless it gives its own deadline
    /// (`request_timeout_ms`, default 5000 ms).
    pub request_timeout: Duration,
    /// Most messages handed to the guest in one entry (`max_batch`, default 256). The guest is
    /// entered once per batch, not per message; a smaller batch lets other actors in sooner.
    pub max_batch: usize,
    /// Most stream items a writer may have in flight to this actor before it waits for it to
    /// read (`stream_window`, default 256): the credit window of every stream opened to it.
    pub stream_window: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory: 16 << 20,
            time_budget: Duration::from_millis(1000),
            mailbox: 1024,
            max_message_bytes: 1 << 20,
            concurrency: 1,
            request_timeout: Duration::from_millis(5000),
            max_batch: 256,
            stream_window: 256,
        }
    }
}

/// How a failed instance is restarted (`[actor.restart]`).
///
/// The delay before the n-th consecutive restart is `min(backoff_initial * 2^(n-1),
/// backoff_max)`, varied randomly by up to `jitter` of itself either way; an instance that ran
/// for `reset_after` without failing starts again from `backoff_initial`.
/// `RestartPolicy::default()` holds the documented defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct RestartPolicy {
    /// Delay before the first restart (`backoff_initial_ms`, default 100 ms).
    pub backoff_initial: Duration,
    /// Longest delay between restarts (`backoff_max_ms`, default 10 000 ms).
    pub backoff_max: Duration,
    /// How long an instance must run without failing for the backoff to reset
    /// (`reset_after_ms`, default 30 000 ms).
    pub reset_after: Duration,
    /// Random variation of each delay, as a fraction of it in `0.0..=1.0` (`jitter`, default
    /// 0.2).
    pub jitter: f64,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_millis(10_000),
            reset_after: Duration::from_millis(30_000),
            jitter: 0.2,
        }
    }
}

/// Why a manifest could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// There is no manifest file at the path.
    #[error(
        "no manifest at {}: create a {MANIFEST_FILE} with an [[actor]] table, or pass the path of one",
        path.display()
    )]
    NotFound {
        /// The file looked for.
        path: PathBuf,
    },
    /// The file exists but could not be read.
    #[error("cannot read manifest {}: {error}", path.display())]
    Read {
        /// The manifest file.
        path: PathBuf,
        /// The I/O failure (part of the message, so not also a `source`).
        error: std::io::Error,
    },
    /// The file is not valid TOML, or a value has the wrong type.
    #[error("{}{}: {message}", path.display(), location(*line, *column))]
    Syntax {
        /// The manifest file.
        path: PathBuf,
        /// 1-based line of the offending text, when known.
        line: Option<usize>,
        /// 1-based column (in characters) of the offending text, when known.
        column: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// The file parsed but breaks one or more rules; every problem found is listed.
    #[error("{}", invalid_message(path, problems))]
    Invalid {
        /// The manifest file.
        path: PathBuf,
        /// Everything wrong with it, in file order (unknown keys first).
        problems: Vec<Problem>,
    },
}

fn location(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        (Some(l), None) => format!(":{l}"),
        _ => String::new(),
    }
}

fn invalid_message(path: &Path, problems: &[Problem]) -> String {
    match problems {
        [one] => format!("{}: {one}", path.display()),
        many => {
            let mut out = format!("{}: {} problems:", path.display(), many.len());
            for p in many {
                out.push_str("\n  ");
                out.push_str(&p.to_string());
            }
            out
        }
    }
}

/// One rule a manifest breaks.
///
/// Displays as `key (actor `name`): what is wrong and how to fix it`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where, as a key path such as `actor[1].limits.memory` (empty for the whole file).
    pub key: String,
    /// The name of the actor whose table holds the key, when there is one.
    pub actor: Option<String>,
    /// What is wrong.
    pub kind: ProblemKind,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.key.is_empty() {
            f.write_str(&self.key)?;
            if let Some(actor) = &self.actor {
                write!(f, " (actor `{actor}`)")?;
            }
            f.write_str(": ")?;
        }
        write!(f, "{}", self.kind)
    }
}

/// The kinds of [`Problem`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProblemKind {
    /// A key the manifest does not define (often a typo).
    #[error("unknown key{}", suggestion_text(suggestion))]
    UnknownKey {
        /// A known key to use instead, when one is close.
        suggestion: Option<String>,
    },
    /// The manifest has no `[[actor]]` table.
    #[error("the manifest defines no actors: add an [[actor]] table with `name` and `module`")]
    NoActors,
    /// An actor name breaks the naming rule.
    #[error("`{name}` is not a valid actor name: {reason}")]
    InvalidName {
        /// The name as written.
        name: String,
        /// Which rule it breaks, and the fix.
        reason: String,
    },
    /// Two actors share a name.
    #[error("the name `{name}` is already used by actor[{first}]: give each actor a unique name")]
    DuplicateName {
        /// The shared name.
        name: String,
        /// Index of the first actor with the name.
        first: usize,
    },
    /// `instances = 0`.
    #[error("must be at least 1 (leave it out for one instance)")]
    ZeroInstances,
    /// The `module` path does not exist.
    #[error(
        "{} does not exist: `module` must name a guest crate directory or a .wasm file, relative to the manifest's directory",
        resolved.display()
    )]
    ModuleNotFound {
        /// The absolute path the `module` value resolved to.
        resolved: PathBuf,
    },
    /// The `module` path exists but is neither a crate directory nor a `.wasm` file.
    #[error("{} is not a module: {reason}", resolved.display())]
    NotAModule {
        /// The absolute path the `module` value resolved to.
        resolved: PathBuf,
        /// What it is instead, and the fix.
        reason: String,
    },
    /// A limit or duration of zero.
    #[error("must be at least 1 (leave it out for the default, {default})")]
    Zero {
        /// The key's default, as written in the manifest.
        default: String,
    },
    /// A size above what the runtime can honour.
    #[error("{value} bytes is more than {max} bytes, the most a wasm32 memory can address")]
    TooLarge {
        /// The value given.
        value: u64,
        /// The largest allowed.
        max: u64,
    },
    /// A subject pattern that is not a valid NATS-style pattern.
    #[error("`{pattern}` is not a valid subject pattern: {reason}")]
    InvalidPattern {
        /// The pattern as written.
        pattern: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// The same pattern appears twice in one actor's `subscriptions`.
    #[error("`{pattern}` is already subscribed by subscriptions[{first}]: remove one")]
    DuplicateSubscription {
        /// The repeated pattern.
        pattern: String,
        /// Index of its first occurrence.
        first: usize,
    },
    /// `jitter` outside `0.0..=1.0`.
    #[error("{value} is not a fraction: use a number from 0.0 (no jitter) to 1.0")]
    InvalidJitter {
        /// The value as written.
        value: String,
    },
    /// `backoff_initial_ms` above `backoff_max_ms`.
    #[error(
        "backoff_initial_ms ({initial_ms}) is larger than backoff_max_ms ({max_ms}): raise backoff_max_ms or lower backoff_initial_ms"
    )]
    BackoffOrder {
        /// `backoff_initial_ms`.
        initial_ms: u64,
        /// `backoff_max_ms`.
        max_ms: u64,
    },
    /// A `config` value JSON cannot represent.
    #[error("{reason}")]
    Config {
        /// What cannot be represented, and the fix.
        reason: String,
    },
    /// An empty string where a value is needed.
    #[error("must not be empty")]
    Empty,
    /// A `send` grant that is neither an actor name nor `"*"`.
    #[error("`{name}` is neither an actor name nor \"*\" (every actor): {reason}")]
    InvalidSendGrant {
        /// The entry as written.
        name: String,
        /// Which naming rule it breaks.
        reason: String,
    },
    /// The smoke actor is one the CLI principal may not call, so `--smoke` would be denied.
    #[error(
        "`bunraku run --smoke` calls `{actor}` as principal `cli`, which [principal.cli] does not allow: add \"{actor}\" to principal.cli.send"
    )]
    SmokeDenied {
        /// The smoke actor.
        actor: String,
    },
    /// A reference to an actor the manifest does not define.
    #[error("{}", unknown_actor_message(name, known))]
    UnknownActor {
        /// The name as written.
        name: String,
        /// The names the manifest defines, in file order.
        known: Vec<String>,
    },
    /// A supervisor's child that is neither an actor nor a supervisor.
    #[error("no actor or supervisor is named `{name}`; the manifest defines: {}", known.join(", "))]
    UnknownChild {
        /// The name as written.
        name: String,
        /// The actors and supervisors the manifest defines, in file order.
        known: Vec<String>,
    },
    /// A child listed by two supervisors.
    #[error("`{child}` is already a child of supervisor `{first}`: a child has one supervisor")]
    TwoParents {
        /// The child.
        child: String,
        /// The supervisor that listed it first.
        first: String,
    },
    /// More prepared instances than [`crate::prepared::MAX_PREPARED`].
    #[error(
        "{value} is more than {}, the most a type may prepare: each prepared instance holds an instantiated module from deploy on",
        crate::prepared::MAX_PREPARED
    )]
    TooManyPrepared {
        /// The value given.
        value: usize,
    },
    /// A setting that does not fit a virtual actor (or needs one).
    #[error("{reason}")]
    Virtual {
        /// What to change.
        reason: String,
    },
    /// Two supervisors with one name.
    #[error("the supervisor name `{name}` is used twice: give each supervisor a unique name")]
    DuplicateSupervisor {
        /// The name.
        name: String,
    },
    /// Supervisors that contain each other.
    #[error("supervisor `{name}` is its own ancestor: supervisors form a tree")]
    SupervisorCycle {
        /// The supervisor.
        name: String,
    },
    /// A `[gateway]` setting or route breaks a rule (see `docs/manifest.md`, `[gateway]`).
    #[error("{reason}")]
    Gateway {
        /// What is wrong, and the fix.
        reason: String,
    },
    /// A `[smoke]` section that cannot run.
    #[error("{reason}")]
    Smoke {
        /// What is wrong, and the fix.
        reason: String,
    },
}

fn unknown_actor_message(name: &str, known: &[String]) -> String {
    if known.is_empty() {
        format!("no actor is named `{name}`: the manifest defines no actors")
    } else {
        format!(
            "no actor is named `{name}`: use the name of one of the [[actor]] tables ({})",
            known.join(", ")
        )
    }
}

fn suggestion_text(suggestion: &Option<String>) -> String {
    match suggestion {
        Some(s) => format!("; did you mean `{s}`?"),
        None => String::new(),
    }
}

impl Manifest {
    /// Reads and checks a manifest. `path` is the manifest file, or a directory holding a
    /// [`MANIFEST_FILE`].
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let file = if path.is_dir() {
            path.join(MANIFEST_FILE)
        } else {
            path.to_path_buf()
        };
        let file = absolute(&file);
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ManifestError::NotFound { path: file });
            }
            Err(error) => return Err(ManifestError::Read { path: file, error }),
        };
        Self::parse(&text, &file)
    }

    /// Checks a manifest's text as if read from `origin`, the path of the manifest file:
    /// relative paths resolve against its directory and errors name it. Module paths are
    /// checked on the file system.
    pub fn parse(text: &str, origin: &Path) -> Result<Manifest, ManifestError> {
        let path = absolute(origin);
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();

        let syntax = |e: toml::de::Error| {
            let (line, column) = match e.span() {
                Some(span) => {
                    let (l, c) = line_column(text, span.start);
                    (Some(l), Some(c))
                }
                None => (None, None),
            };
            ManifestError::Syntax {
                path: path.clone(),
                line,
                column,
                message: e.message().trim_end().to_string(),
            }
        };
        let de = toml::Deserializer::parse(text).map_err(syntax)?;
        let mut unknown: Vec<Vec<Segment>> = Vec::new();
        let raw: RawManifest =
            serde_ignored::deserialize(de, |p| unknown.push(segments(&p))).map_err(syntax)?;

        let mut problems: Vec<Problem> = unknown
            .iter()
            .map(|segs| Problem {
                key: key_path(segs),
                actor: actor_of(&raw, segs),
                kind: ProblemKind::UnknownKey {
                    suggestion: suggest(segs),
                },
            })
            .collect();

        let (manifest, more) = validate(raw, path.clone(), dir);
        problems.extend(more);
        if problems.is_empty() {
            Ok(manifest)
        } else {
            Err(ManifestError::Invalid { path, problems })
        }
    }

    /// The actor named `name`.
    pub fn actor(&self, name: &str) -> Option<&ActorSpec> {
        self.actors.iter().find(|a| a.name == name)
    }

    /// Whether a `[[supervisor]]` lists `name` as a child.
    pub fn is_supervised(&self, name: &str) -> bool {
        self.supervisors
            .iter()
            .any(|s| s.children.iter().any(|c| c.name == name))
    }

    /// The actors in start order: each supervision tree depth first in its children's order
    /// (the trees in file order), then the unsupervised actors in file order. Shutdown runs in
    /// the reverse order.
    pub fn start_order(&self) -> Vec<&ActorSpec> {
        fn visit<'a>(name: &str, m: &'a Manifest, out: &mut Vec<&'a ActorSpec>, depth: usize) {
            if depth > m.supervisors.len() {
                return; // a cycle, refused by validation
            }
            if let Some(sup) = m.supervisors.iter().find(|s| s.name == name) {
                for child in &sup.children {
                    visit(&child.name, m, out, depth + 1);
                }
            } else if let Some(actor) = m.actor(name)
                && out.iter().all(|a| a.name != name)
            {
                out.push(actor);
            }
        }
        let mut out = Vec::new();
        for sup in self
            .supervisors
            .iter()
            .filter(|s| !self.is_supervised(&s.name))
        {
            visit(&sup.name, self, &mut out, 0);
        }
        for actor in &self.actors {
            if out.iter().all(|a| a.name != actor.name) {
                out.push(actor);
            }
        }
        out
    }
}

/// The longest actor name.
pub const MAX_NAME_LEN: usize = 64;

/// Checks an actor name: 1 to [`MAX_NAME_LEN`] characters from `a-z`, `0-9`, `-` and `_`,
/// starting with a letter or digit. Names are addresses, so they never hold the `.`, `*` and `>`
/// of subjects. The error says which rule the name breaks and how to fix it.
pub fn validate_actor_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("an actor needs a name, e.g. `echo`".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("names are at most {MAX_NAME_LEN} characters"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
    {
        let hint = if bad.is_ascii_uppercase() {
            format!(" (write `{}`)", name.to_ascii_lowercase())
        } else {
            String::new()
        };
        return Err(format!(
            "`{bad}` is not allowed; use lowercase letters, digits, `-` and `_`{hint}"
        ));
    }
    if name.starts_with(['-', '_']) {
        return Err("names start with a lowercase letter or a digit".into());
    }
    Ok(())
}

/// Checks a NATS-style subject pattern: non-empty `.`-separated tokens without whitespace, `*`
/// only as a whole token, `>` only as the whole last token.
fn validate_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("it is empty; write tokens separated by `.`, e.g. `sensors.*`".into());
    }
    let tokens: Vec<&str> = pattern.split('.').collect();
    for (i, token) in tokens.iter().enumerate() {
        if token.is_empty() {
            return Err("it has an empty token (a leading, trailing or doubled `.`)".into());
        }
        if token.chars().any(char::is_whitespace) {
            return Err("tokens cannot contain whitespace".into());
        }
        if *token == ">" {
            if i + 1 != tokens.len() {
                return Err("`>` may only be the last token".into());
            }
        } else if token.contains('>') {
            return Err("`>` must be a whole token, e.g. `a.>`".into());
        } else if *token != "*" && token.contains('*') {
            return Err("`*` must be a whole token, e.g. `a.*.c`".into());
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Raw form: what serde reads. Optional keys are `Option`s so defaults live in one place (the
// `Default` impls of the public types).

#[derive(serde::Deserialize)]
struct RawManifest {
    #[serde(default, deserialize_with = "actor_tables")]
    actor: Vec<RawActor>,
    #[serde(default)]
    host: RawHost,
    smoke: Option<RawSmoke>,
    #[serde(default)]
    principal: RawPrincipals,
    #[serde(default, deserialize_with = "actor_tables")]
    spawnable: Vec<RawActor>,
    #[serde(default)]
    supervisor: Vec<RawSupervisor>,
    gateway: Option<crate::gateway::GatewayConfig>,
}

#[derive(serde::Deserialize)]
struct RawSupervisor {
    name: String,
    #[serde(default)]
    strategy: RawStrategy,
    max_restarts: Option<u32>,
    period_ms: Option<u64>,
    shutdown_timeout_ms: Option<u64>,
    #[serde(default)]
    children: Vec<String>,
    #[serde(default)]
    restart: RawRestartType,
}

#[derive(serde::Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
enum RawStrategy {
    #[default]
    OneForOne,
    OneForAll,
    RestForOne,
}

#[derive(serde::Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
enum RawRestartType {
    #[default]
    Permanent,
    Transient,
    Temporary,
}

impl From<RawRestartType> for RestartType {
    fn from(r: RawRestartType) -> Self {
        match r {
            RawRestartType::Permanent => Self::Permanent,
            RawRestartType::Transient => Self::Transient,
            RawRestartType::Temporary => Self::Temporary,
        }
    }
}

/// `[principal.NAME]` tables: one per principal this version knows, so a misspelt name is an
/// unknown key rather than a principal that silently keeps full access.
#[derive(serde::Deserialize, Default)]
struct RawPrincipals {
    cli: Option<RawPrincipalGrants>,
}

/// What a principal may do: principals run no code, so only `send` and `publish` apply.
#[derive(serde::Deserialize, Default)]
struct RawPrincipalGrants {
    #[serde(default)]
    send: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
}

#[derive(serde::Deserialize, Default)]
struct RawGrants {
    #[serde(default)]
    send: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
    #[serde(default)]
    subscribe: Vec<String>,
    #[serde(default)]
    storage: bool,
    #[serde(default)]
    spawn: bool,
    #[serde(default)]
    timers: bool,
    #[serde(default)]
    read_events: Vec<String>,
}

#[derive(serde::Deserialize)]
struct RawSmoke {
    actor: Option<String>,
    http: Option<PathBuf>,
    timeout_ms: Option<u64>,
}

#[derive(serde::Deserialize, Default)]
struct RawHost {
    data_dir: Option<PathBuf>,
    log: Option<String>,
    idle_trim_ms: Option<u64>,
}

#[derive(serde::Deserialize)]
struct RawActor {
    name: String,
    module: PathBuf,
    instances: Option<u32>,
    #[serde(default)]
    subscriptions: Vec<RawSubscription>,
    config: Option<toml::Table>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    restart: RawRestart,
    #[serde(default)]
    grants: RawGrants,
    #[serde(rename = "virtual", default)]
    is_virtual: bool,
    idle_timeout_ms: Option<u64>,
    prepared_instances: Option<usize>,
}

#[derive(serde::Deserialize, Default)]
struct RawLimits {
    memory: Option<Size>,
    time_budget_ms: Option<u64>,
    mailbox: Option<usize>,
    max_message_bytes: Option<Size>,
    concurrency: Option<usize>,
    request_timeout_ms: Option<u64>,
    max_batch: Option<usize>,
    stream_window: Option<usize>,
}

#[derive(serde::Deserialize, Default)]
struct RawRestart {
    backoff_initial_ms: Option<u64>,
    backoff_max_ms: Option<u64>,
    reset_after_ms: Option<u64>,
    jitter: Option<f64>,
    #[serde(rename = "type", default)]
    kind: RawRestartType,
}

/// `"pattern"` or `{ pattern = "...", policy = "..." }`.
struct RawSubscription(RawSubscriptionTable);

#[derive(serde::Deserialize)]
struct RawSubscriptionTable {
    pattern: String,
    #[serde(default)]
    policy: RawPolicy,
}

#[derive(serde::Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
enum RawPolicy {
    #[default]
    Wait,
    DropNewest,
}

impl From<RawPolicy> for Policy {
    fn from(p: RawPolicy) -> Self {
        match p {
            RawPolicy::Wait => Policy::Wait,
            RawPolicy::DropNewest => Policy::DropNewest,
        }
    }
}

impl<'de> Deserialize<'de> for RawSubscription {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = RawSubscription;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    r#"a subject pattern, or a table like { pattern = "a.*", policy = "wait" }"#,
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawSubscription(RawSubscriptionTable {
                    pattern: v.to_string(),
                    policy: RawPolicy::Wait,
                }))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                // Deserializing through the given map access keeps unknown-key tracking.
                RawSubscriptionTable::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawSubscription)
            }
        }
        d.deserialize_any(V)
    }
}

/// `[[actor]]` tables, with a pointed message for the common `[actor]` mistake.
fn actor_tables<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<RawActor>, D::Error> {
    struct V;
    impl<'de> de::Visitor<'de> for V {
        type Value = Vec<RawActor>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array of [[actor]] tables")
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(actor) = seq.next_element()? {
                out.push(actor);
            }
            Ok(out)
        }
        fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(de::Error::custom(
                "`actor` is a table, but actors are an array of tables: write [[actor]] (double brackets) before each actor",
            ))
        }
    }
    d.deserialize_seq(V)
}

/// A byte size: an integer, or a string like `"64KiB"`, `"16MiB"`, `"1GiB"`.
#[derive(Clone, Copy)]
struct Size(u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a size in bytes, or a string like "64KiB", "16MiB" or "1GiB""#)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom(format!("a size cannot be negative ({v})")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                parse_size(v).map(Size).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let bad = || {
        format!(
            r#"`{text}` is not a size: write bytes as an integer, or a number with KiB, MiB or GiB, e.g. "16MiB""#
        )
    };
    let n: u64 = number.parse().map_err(|_| bad())?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "kib" => 10,
        "mib" => 20,
        "gib" => 30,
        u @ ("k" | "kb" | "m" | "mb" | "g" | "gb") => {
            let binary = format!("{}iB", u[..1].to_ascii_uppercase());
            return Err(format!(
                "`{text}` is ambiguous: write \"{n}{binary}\" (1 {binary} = {} bytes) or the number of bytes",
                1u64 << (10 * (1 + "kmg".find(&u[..1]).unwrap_or(0)))
            ));
        }
        _ => return Err(bad()),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("`{text}` is too large"))
}

// ---------------------------------------------------------------------------------------------
// Validation: raw form to checked form, collecting every problem.

fn validate(raw: RawManifest, path: PathBuf, dir: PathBuf) -> (Manifest, Vec<Problem>) {
    let mut problems = Vec::new();

    let host = HostSection {
        data_dir: match raw.host.data_dir {
            Some(p) => normalize(&dir.join(p)),
            None => dir.join(".bunraku"),
        },
        log: raw.host.log.unwrap_or_else(|| "info".into()),
        idle_trim: match raw.host.idle_trim_ms {
            None => Some(crate::trim::DEFAULT_IDLE_TRIM),
            Some(0) => None,
            Some(ms) => Some(Duration::from_millis(ms)),
        },
    };
    if host.log.trim().is_empty() {
        problems.push(Problem {
            key: "host.log".into(),
            actor: None,
            kind: ProblemKind::Empty,
        });
    }

    if raw.actor.is_empty() {
        problems.push(Problem {
            key: String::new(),
            actor: None,
            kind: ProblemKind::NoActors,
        });
    }

    let mut actors = Vec::with_capacity(raw.actor.len());
    let mut spawnables: Vec<ActorSpec> = Vec::new();
    // `[[spawnable]]` tables have the keys of `[[actor]]` tables and are checked the same way.
    let tables = raw
        .actor
        .into_iter()
        .enumerate()
        .map(|(i, a)| (false, i, a))
        .chain(
            raw.spawnable
                .into_iter()
                .enumerate()
                .map(|(i, a)| (true, i, a)),
        );
    for (spawnable, i, a) in tables {
        let at = if spawnable {
            format!("spawnable[{i}]")
        } else {
            format!("actor[{i}]")
        };
        let named = (!a.name.is_empty()).then(|| a.name.clone());
        let same_kind = if spawnable { &spawnables } else { &actors };

        if let Err(reason) = validate_actor_name(&a.name) {
            problems.push(Problem {
                key: format!("{at}.name"),
                actor: None,
                kind: ProblemKind::InvalidName {
                    name: a.name.clone(),
                    reason,
                },
            });
        } else if let Some(first) = same_kind.iter().position(|b: &ActorSpec| b.name == a.name) {
            problems.push(Problem {
                key: format!("{at}.name"),
                actor: named.clone(),
                kind: ProblemKind::DuplicateName {
                    name: a.name.clone(),
                    first,
                },
            });
        }

        let mut problem = |key: &str, kind: ProblemKind| {
            problems.push(Problem {
                key: format!("{at}.{key}"),
                actor: named.clone(),
                kind,
            })
        };

        let module = match classify_module(&dir.join(&a.module)) {
            Ok(m) => m,
            Err(kind) => {
                problem("module", kind);
                ModuleSource::Wasm(normalize(&dir.join(&a.module)))
            }
        };

        let instances = a.instances.unwrap_or(1);
        if instances == 0 {
            problem("instances", ProblemKind::ZeroInstances);
        }

        let mut subscriptions: Vec<SubscriptionSpec> = Vec::new();
        for (j, RawSubscription(s)) in a.subscriptions.into_iter().enumerate() {
            let key = format!("subscriptions[{j}]");
            if let Err(reason) = validate_pattern(&s.pattern) {
                problem(
                    &key,
                    ProblemKind::InvalidPattern {
                        pattern: s.pattern.clone(),
                        reason,
                    },
                );
            } else if let Some(first) = subscriptions.iter().position(|t| t.pattern == s.pattern) {
                problem(
                    &key,
                    ProblemKind::DuplicateSubscription {
                        pattern: s.pattern.clone(),
                        first,
                    },
                );
            }
            subscriptions.push(SubscriptionSpec {
                pattern: s.pattern,
                policy: s.policy.into(),
            });
        }

        let config = match a.config {
            None => serde_json::Value::Null,
            Some(table) => match toml_to_json(toml::Value::Table(table), "config") {
                Ok(v) => v,
                Err(reason) => {
                    problem("config", ProblemKind::Config { reason });
                    serde_json::Value::Null
                }
            },
        };

        let d = Limits::default();
        let mut nonzero = |key: &str, value: Option<u64>, default: String| -> Option<u64> {
            match value {
                Some(0) => {
                    problem(key, ProblemKind::Zero { default });
                    None
                }
                v => v,
            }
        };
        let memory = nonzero(
            "limits.memory",
            a.limits.memory.map(|s| s.0),
            "\"16MiB\"".into(),
        );
        let time_budget = nonzero(
            "limits.time_budget_ms",
            a.limits.time_budget_ms,
            "1000".into(),
        );
        let mailbox = nonzero(
            "limits.mailbox",
            a.limits.mailbox.map(|v| v as u64),
            d.mailbox.to_string(),
        );
        let max_message_bytes = nonzero(
            "limits.max_message_bytes",
            a.limits.max_message_bytes.map(|s| s.0),
            "\"1MiB\"".into(),
        );
        let concurrency = nonzero(
            "limits.concurrency",
            a.limits.concurrency.map(|v| v as u64),
            d.concurrency.to_string(),
        );
        let request_timeout = nonzero(
            "limits.request_timeout_ms",
            a.limits.request_timeout_ms,
            "5000".into(),
        );
        let max_batch = nonzero(
            "limits.max_batch",
            a.limits.max_batch.map(|v| v as u64),
            d.max_batch.to_string(),
        );
        let stream_window = nonzero(
            "limits.stream_window",
            a.limits.stream_window.map(|v| v as u64),
            d.stream_window.to_string(),
        );
        let backoff_initial = nonzero(
            "restart.backoff_initial_ms",
            a.restart.backoff_initial_ms,
            "100".into(),
        );
        let backoff_max = nonzero(
            "restart.backoff_max_ms",
            a.restart.backoff_max_ms,
            "10000".into(),
        );
        let reset_after = nonzero(
            "restart.reset_after_ms",
            a.restart.reset_after_ms,
            "30000".into(),
        );

        let too_large = |value: u64, max: u64| (value > max).then_some((value, max));
        if let Some((value, max)) = memory.and_then(|m| too_large(m, MAX_MEMORY)) {
            problem("limits.memory", ProblemKind::TooLarge { value, max });
        }
        let max_usize = usize::MAX as u64;
        if let Some((value, max)) = max_message_bytes.and_then(|m| too_large(m, max_usize)) {
            problem(
                "limits.max_message_bytes",
                ProblemKind::TooLarge { value, max },
            );
        }

        let limits = Limits {
            memory: memory.unwrap_or(d.memory),
            time_budget: time_budget.map_or(d.time_budget, Duration::from_millis),
            mailbox: mailbox.map_or(d.mailbox, |v| v as usize),
            max_message_bytes: max_message_bytes.map_or(d.max_message_bytes, |v| v as usize),
            concurrency: concurrency.map_or(d.concurrency, |v| v as usize),
            request_timeout: request_timeout.map_or(d.request_timeout, Duration::from_millis),
            max_batch: max_batch.map_or(d.max_batch, |v| v as usize),
            stream_window: stream_window.map_or(d.stream_window, |v| v as usize),
        };

        let r = RestartPolicy::default();
        let jitter = a.restart.jitter.unwrap_or(r.jitter);
        if !(0.0..=1.0).contains(&jitter) {
            problem(
                "restart.jitter",
                ProblemKind::InvalidJitter {
                    value: jitter.to_string(),
                },
            );
        }
        let restart = RestartPolicy {
            backoff_initial: backoff_initial.map_or(r.backoff_initial, Duration::from_millis),
            backoff_max: backoff_max.map_or(r.backoff_max, Duration::from_millis),
            reset_after: reset_after.map_or(r.reset_after, Duration::from_millis),
            jitter,
        };
        if restart.backoff_initial > restart.backoff_max {
            problem(
                "restart",
                ProblemKind::BackoffOrder {
                    initial_ms: restart.backoff_initial.as_millis() as u64,
                    max_ms: restart.backoff_max.as_millis() as u64,
                },
            );
        }

        let grants = Grants {
            send: checked_send(&a.grants.send, "grants.send", &mut problem),
            publish: checked_patterns(&a.grants.publish, "grants.publish", &mut problem),
            subscribe: checked_patterns(&a.grants.subscribe, "grants.subscribe", &mut problem),
            storage: a.grants.storage,
            spawn: a.grants.spawn,
            timers: a.grants.timers,
            read_events: a.grants.read_events.clone(),
        };

        let spec = ActorSpec {
            name: a.name,
            module,
            instances,
            subscriptions,
            config,
            limits,
            restart,
            restart_type: a.restart.kind.into(),
            virtual_idle: match (a.is_virtual, a.idle_timeout_ms) {
                (true, Some(0)) => {
                    problem(
                        "idle_timeout_ms",
                        ProblemKind::Zero {
                            default: DEFAULT_IDLE_TIMEOUT.as_millis().to_string(),
                        },
                    );
                    Some(DEFAULT_IDLE_TIMEOUT)
                }
                (true, ms) => Some(ms.map_or(DEFAULT_IDLE_TIMEOUT, Duration::from_millis)),
                (false, Some(_)) => {
                    problem(
                        "idle_timeout_ms",
                        ProblemKind::Virtual {
                            reason: "only virtual actors are deactivated: add `virtual = true`"
                                .into(),
                        },
                    );
                    None
                }
                (false, None) => None,
            },
            prepared_instances: match (a.is_virtual || spawnable, a.prepared_instances) {
                (false, Some(_)) => {
                    problem(
                        "prepared_instances",
                        ProblemKind::Virtual {
                            reason: "only virtual actor types and spawnable modules prepare instances ahead of their actors: add `virtual = true`"
                                .into(),
                        },
                    );
                    None
                }
                (true, Some(n)) if n > crate::prepared::MAX_PREPARED => {
                    problem(
                        "prepared_instances",
                        ProblemKind::TooManyPrepared { value: n },
                    );
                    None
                }
                (_, n) => n,
            },
            grants,
        };
        if spec.virtual_idle.is_some() {
            if spec.instances != 1 {
                problem(
                    "instances",
                    ProblemKind::Virtual {
                        reason: "a virtual actor has one activation per key: leave `instances` out"
                            .into(),
                    },
                );
            }
            if !spec.subscriptions.is_empty() {
                problem(
                    "subscriptions",
                    ProblemKind::Virtual {
                        reason: "a virtual actor is activated by messages to `NAME/KEY`, not by subscriptions".into(),
                    },
                );
            }
        }
        if spawnable {
            spawnables.push(spec);
        } else {
            actors.push(spec);
        }
    }

    let supervisors = validate_supervisors(raw.supervisor, &actors, &mut problems);

    let mut principals = BTreeMap::new();
    if let Some(cli) = raw.principal.cli {
        let mut problem = |key: &str, kind: ProblemKind| {
            problems.push(Problem {
                key: format!("principal.cli.{key}"),
                actor: None,
                kind,
            })
        };
        let grants = Grants {
            send: checked_send(&cli.send, "send", &mut problem),
            publish: checked_patterns(&cli.publish, "publish", &mut problem),
            ..Grants::none()
        };
        principals.insert(crate::control::CLI_PRINCIPAL.to_owned(), grants);
    }

    let gateway = raw
        .gateway
        .map(|config| validate_gateway(config, &actors, &dir, &mut problems));

    let smoke = raw.smoke.map(|s| {
        if let Some(actor) = &s.actor
            && actors.iter().all(|a| a.name != *actor)
        {
            problems.push(Problem {
                key: "smoke.actor".into(),
                actor: None,
                kind: ProblemKind::UnknownActor {
                    name: actor.clone(),
                    known: actors.iter().map(|a| a.name.clone()).collect(),
                },
            });
        }
        if s.actor.is_none() && s.http.is_none() {
            problems.push(Problem {
                key: "smoke".into(),
                actor: None,
                kind: ProblemKind::Smoke {
                    reason: "name the checker `actor`, or an `http` script to run against the gateway (or both)".into(),
                },
            });
        }
        let http = s.http.map(|p| normalize(&dir.join(p)));
        if let Some(script) = &http {
            if gateway.is_none() {
                problems.push(Problem {
                    key: "smoke.http".into(),
                    actor: None,
                    kind: ProblemKind::Smoke {
                        reason: "an HTTP smoke script runs against the gateway: add a [gateway] table".into(),
                    },
                });
            }
            if let Err(e) = crate::gateway::script::Script::load(script) {
                problems.push(Problem {
                    key: "smoke.http".into(),
                    actor: None,
                    kind: ProblemKind::Smoke {
                        reason: e.to_string(),
                    },
                });
            }
        }
        let timeout = match s.timeout_ms {
            Some(0) => {
                problems.push(Problem {
                    key: "smoke.timeout_ms".into(),
                    actor: None,
                    kind: ProblemKind::Zero {
                        default: DEFAULT_SMOKE_TIMEOUT.as_millis().to_string(),
                    },
                });
                DEFAULT_SMOKE_TIMEOUT
            }
            Some(ms) => Duration::from_millis(ms),
            None => DEFAULT_SMOKE_TIMEOUT,
        };
        let cli = principals.get(crate::control::CLI_PRINCIPAL);
        if let Some(actor) = &s.actor
            && cli.is_some_and(|g| !g.may_send(actor))
        {
            problems.push(Problem {
                key: "smoke.actor".into(),
                actor: None,
                kind: ProblemKind::SmokeDenied {
                    actor: actor.clone(),
                },
            });
        }
        SmokeSection {
            actor: s.actor,
            http,
            timeout,
        }
    });

    let manifest = Manifest {
        path,
        dir,
        host,
        actors,
        smoke,
        principals,
        supervisors,
        spawnables,
        gateway,
    };
    (manifest, problems)
}

/// Checks the `[gateway]` table: its own rules ([`GatewayConfig::problems`]) and that each
/// route's actor is one of the manifest's actors (a virtual actor by its type); resolves JWT
/// key files against the manifest's directory.
///
/// [`GatewayConfig::problems`]: crate::gateway::GatewayConfig::problems
fn validate_gateway(
    mut config: crate::gateway::GatewayConfig,
    actors: &[ActorSpec],
    dir: &Path,
    problems: &mut Vec<Problem>,
) -> crate::gateway::GatewayConfig {
    let problem = |key: String, reason: String| Problem {
        key: format!("gateway.{key}"),
        actor: None,
        kind: ProblemKind::Gateway { reason },
    };
    for p in config.problems() {
        problems.push(problem(p.key, p.reason));
    }
    for (i, route) in config.routes.iter().enumerate() {
        let Some(target) = &route.actor else {
            continue;
        };
        let name = target.split('/').next().unwrap_or(target);
        let Some(actor) = actors.iter().find(|a| a.name == name) else {
            problems.push(Problem {
                key: format!("gateway.route[{i}].actor"),
                actor: None,
                kind: ProblemKind::UnknownActor {
                    name: name.to_owned(),
                    known: actors.iter().map(|a| a.name.clone()).collect(),
                },
            });
            continue;
        };
        let keyed = target.contains('/');
        if keyed != actor.virtual_idle.is_some() {
            let reason = if keyed {
                format!(
                    "`{name}` is not a virtual actor, so it has no keys: write `actor = \"{name}\"`"
                )
            } else {
                format!(
                    "`{name}` is a virtual actor type: address one of its actors, such as `actor = \"{name}/{{id}}\"` with `{{id}}` in the path"
                )
            };
            problems.push(problem(format!("route[{i}].actor"), reason));
        }
    }
    for jwt in &mut config.jwt_keys {
        if let Some(file) = &mut jwt.public_key_file
            && file.is_relative()
        {
            *file = normalize(&dir.join(&*file));
        }
    }
    config
}

/// Checks the `[[supervisor]]` tables against each other and the actors: unique names, known
/// children, one supervisor per child, no cycles; resolves each child's restart type.
fn validate_supervisors(
    raw: Vec<RawSupervisor>,
    actors: &[ActorSpec],
    problems: &mut Vec<Problem>,
) -> Vec<SupervisorSpec> {
    let mut out: Vec<SupervisorSpec> = Vec::new();
    let d = Intensity::default();
    for (i, s) in raw.iter().enumerate() {
        let at = format!("supervisor[{i}]");
        let mut problem = |key: &str, kind: ProblemKind| {
            problems.push(Problem {
                key: format!("{at}{key}"),
                actor: None,
                kind,
            })
        };
        if let Err(reason) = validate_actor_name(&s.name) {
            problem(
                ".name",
                ProblemKind::InvalidName {
                    name: s.name.clone(),
                    reason,
                },
            );
        } else if let Some(first) = actors.iter().position(|a| a.name == s.name) {
            problem(
                ".name",
                ProblemKind::DuplicateName {
                    name: s.name.clone(),
                    first,
                },
            );
        } else if out.iter().any(|o| o.name == s.name) {
            problem(
                ".name",
                ProblemKind::DuplicateSupervisor {
                    name: s.name.clone(),
                },
            );
        }
        if s.children.is_empty() {
            problem(".children", ProblemKind::Empty);
        }
        let mut positive = |key: &str, v: Option<u64>, default: u64| match v {
            Some(0) => {
                problem(
                    key,
                    ProblemKind::Zero {
                        default: default.to_string(),
                    },
                );
                default
            }
            v => v.unwrap_or(default),
        };
        let period = positive(".period_ms", s.period_ms, d.period.as_millis() as u64);
        let shutdown = positive(".shutdown_timeout_ms", s.shutdown_timeout_ms, 5000);
        let mut spec = SupervisorSpec::new(s.name.clone(), &[]);
        spec.strategy = match s.strategy {
            RawStrategy::OneForOne => Strategy::OneForOne,
            RawStrategy::OneForAll => Strategy::OneForAll,
            RawStrategy::RestForOne => Strategy::RestForOne,
        };
        spec.intensity = Intensity {
            max_restarts: s.max_restarts.unwrap_or(d.max_restarts),
            period: Duration::from_millis(period),
        };
        spec.shutdown_timeout = Duration::from_millis(shutdown);
        spec.restart = s.restart.into();
        out.push(spec);
    }
    // Children: known, restart types resolved, one parent each.
    let mut parent_of: BTreeMap<String, String> = BTreeMap::new();
    let known: Vec<String> = actors
        .iter()
        .map(|a| a.name.clone())
        .chain(raw.iter().map(|s| s.name.clone()))
        .collect();
    for (i, s) in raw.iter().enumerate() {
        for (j, child) in s.children.iter().enumerate() {
            let key = format!("supervisor[{i}].children[{j}]");
            let restart = if let Some(a) = actors.iter().find(|a| &a.name == child) {
                a.restart_type
            } else if let Some(sup) = out.iter().find(|o| &o.name == child) {
                sup.restart
            } else {
                problems.push(Problem {
                    key,
                    actor: None,
                    kind: ProblemKind::UnknownChild {
                        name: child.clone(),
                        known: known.clone(),
                    },
                });
                continue;
            };
            if let Some(first) = parent_of.get(child) {
                problems.push(Problem {
                    key,
                    actor: None,
                    kind: ProblemKind::TwoParents {
                        child: child.clone(),
                        first: first.clone(),
                    },
                });
                continue;
            }
            parent_of.insert(child.clone(), s.name.clone());
            out[i].children.push(ChildSpec {
                name: child.clone(),
                restart,
            });
        }
    }
    for (i, s) in out.iter().enumerate() {
        let mut at = s.name.as_str();
        for _ in 0..=out.len() {
            match parent_of.get(at) {
                Some(p) if p == &s.name => {
                    problems.push(Problem {
                        key: format!("supervisor[{i}].children"),
                        actor: None,
                        kind: ProblemKind::SupervisorCycle {
                            name: s.name.clone(),
                        },
                    });
                    break;
                }
                Some(p) => at = p,
                None => break,
            }
        }
    }
    out
}

/// The `send` grants at `key`: actor names or `"*"`; each bad entry is reported as
/// `key[index]`.
fn checked_send(
    entries: &[String],
    key: &str,
    problem: &mut impl FnMut(&str, ProblemKind),
) -> Vec<String> {
    for (i, name) in entries.iter().enumerate() {
        if name == ANY_ACTOR {
            continue;
        }
        if let Err(reason) = validate_actor_name(name) {
            problem(
                &format!("{key}[{i}]"),
                ProblemKind::InvalidSendGrant {
                    name: name.clone(),
                    reason,
                },
            );
        }
    }
    entries.to_vec()
}

/// The subject-pattern grants at `key`; each bad entry is reported as `key[index]` and left out.
fn checked_patterns(
    entries: &[String],
    key: &str,
    problem: &mut impl FnMut(&str, ProblemKind),
) -> Vec<Pattern> {
    let mut out = Vec::with_capacity(entries.len());
    for (i, text) in entries.iter().enumerate() {
        match validate_pattern(text).and_then(|()| Pattern::parse(text).map_err(|e| e.to_string()))
        {
            Ok(pattern) => out.push(pattern),
            Err(reason) => problem(
                &format!("{key}[{i}]"),
                ProblemKind::InvalidPattern {
                    pattern: text.clone(),
                    reason,
                },
            ),
        }
    }
    out
}

fn classify_module(path: &Path) -> Result<ModuleSource, ProblemKind> {
    let resolved = normalize(path);
    let Ok(meta) = std::fs::metadata(&resolved) else {
        return Err(ProblemKind::ModuleNotFound { resolved });
    };
    let canonical = std::fs::canonicalize(&resolved).unwrap_or_else(|_| resolved.clone());
    if meta.is_dir() {
        if canonical.join("Cargo.toml").is_file() {
            Ok(ModuleSource::Crate(canonical))
        } else {
            Err(ProblemKind::NotAModule {
                resolved,
                reason: "it is a directory without a Cargo.toml; point `module` at a guest crate directory or a .wasm file".into(),
            })
        }
    } else if canonical.file_name().is_some_and(|n| n == "Cargo.toml") {
        Ok(ModuleSource::Crate(
            canonical
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
        ))
    } else if canonical.extension().is_some_and(|e| e == "wasm") {
        Ok(ModuleSource::Wasm(canonical))
    } else {
        Err(ProblemKind::NotAModule {
            resolved,
            reason: "it is neither a .wasm file nor a crate directory".into(),
        })
    }
}

fn toml_to_json(value: toml::Value, at: &str) -> Result<serde_json::Value, String> {
    use serde_json::Value as J;
    Ok(match value {
        toml::Value::String(s) => J::String(s),
        toml::Value::Integer(i) => J::from(i),
        toml::Value::Float(f) => serde_json::Number::from_f64(f).map(J::Number).ok_or_else(
            || {
                format!(
                    "`{at}` is {f}, which JSON cannot represent: use a finite number or a string"
                )
            },
        )?,
        toml::Value::Boolean(b) => J::Bool(b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(items) => J::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| toml_to_json(v, &format!("{at}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        toml::Value::Table(t) => J::Object(
            t.into_iter()
                .map(|(k, v)| {
                    let sub = format!("{at}.{}", key_text(&k));
                    toml_to_json(v, &sub).map(|v| (k, v))
                })
                .collect::<Result<_, _>>()?,
        ),
    })
}

// ---------------------------------------------------------------------------------------------
// Key paths and suggestions.

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Key(String),
    Index(usize),
}

fn segments(path: &serde_ignored::Path<'_>) -> Vec<Segment> {
    use serde_ignored::Path as P;
    let mut out = match path {
        P::Root => return Vec::new(),
        P::Seq { parent, .. }
        | P::Map { parent, .. }
        | P::Some { parent }
        | P::NewtypeStruct { parent }
        | P::NewtypeVariant { parent } => segments(parent),
    };
    match path {
        P::Seq { index, .. } => out.push(Segment::Index(*index)),
        P::Map { key, .. } => out.push(Segment::Key(key.clone())),
        _ => {}
    }
    out
}

fn key_text(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        key.to_string()
    } else {
        format!("{key:?}")
    }
}

fn key_path(segs: &[Segment]) -> String {
    let mut out = String::new();
    for s in segs {
        match s {
            Segment::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&key_text(k));
            }
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn actor_of(raw: &RawManifest, segs: &[Segment]) -> Option<String> {
    match segs {
        [Segment::Key(k), Segment::Index(i), ..] if k == "actor" => raw
            .actor
            .get(*i)
            .map(|a| a.name.clone())
            .filter(|n| !n.is_empty()),
        _ => None,
    }
}

/// The field names serde knows for a struct, read from its `Deserialize` impl.
fn fields<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    struct Probe<'a>(&'a mut &'static [&'static str]);
    impl<'de> Deserializer<'de> for Probe<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("probe"))
        }
        fn deserialize_struct<V: de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("probe"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut out: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut out));
    out
}

/// Known keys of one table, and of the tables nested in it by name.
type KnownKeys = (
    &'static [&'static str],
    Vec<(&'static str, &'static [&'static str])>,
);

/// The known keys of the table at `parent`, and of the tables nested in it (for a key written
/// one level too high, such as `memory` directly in `[[actor]]`).
fn known_keys(parent: &[Segment]) -> KnownKeys {
    use Segment::{Index, Key};
    match parent {
        [] => (
            fields::<RawManifest>(),
            vec![
                ("host", fields::<RawHost>()),
                ("smoke", fields::<RawSmoke>()),
                ("principal", fields::<RawPrincipals>()),
                ("gateway", fields::<crate::gateway::GatewayConfig>()),
            ],
        ),
        [Key(g)] if g == "gateway" => (
            fields::<crate::gateway::GatewayConfig>(),
            vec![
                ("cors", fields::<crate::gateway::CorsConfig>()),
                ("grants", fields::<crate::gateway::GrantsTable>()),
            ],
        ),
        [Key(g), Key(c)] if g == "gateway" && c == "cors" => {
            (fields::<crate::gateway::CorsConfig>(), vec![])
        }
        [Key(g), Key(c)] if g == "gateway" && c == "grants" => {
            (fields::<crate::gateway::GrantsTable>(), vec![])
        }
        [Key(g), Key(r), Index(_)] if g == "gateway" && r == "route" => {
            (fields::<crate::gateway::RouteConfig>(), vec![])
        }
        [Key(s), Index(_)] if s == "supervisor" => (fields::<RawSupervisor>(), vec![]),
        [Key(h)] if h == "host" => (fields::<RawHost>(), vec![]),
        [Key(s)] if s == "smoke" => (fields::<RawSmoke>(), vec![]),
        [Key(p)] if p == "principal" => (fields::<RawPrincipals>(), vec![]),
        [Key(p), Key(_)] if p == "principal" => (fields::<RawPrincipalGrants>(), vec![]),
        [Key(a), Index(_)] if a == "actor" || a == "spawnable" => (
            fields::<RawActor>(),
            vec![
                ("limits", fields::<RawLimits>()),
                ("restart", fields::<RawRestart>()),
                ("grants", fields::<RawGrants>()),
            ],
        ),
        [Key(a), Index(_), Key(g)] if (a == "actor" || a == "spawnable") && g == "grants" => {
            (fields::<RawGrants>(), vec![])
        }
        [Key(a), Index(_), Key(l)] if (a == "actor" || a == "spawnable") && l == "limits" => {
            (fields::<RawLimits>(), vec![])
        }
        [Key(a), Index(_), Key(r)] if (a == "actor" || a == "spawnable") && r == "restart" => {
            (fields::<RawRestart>(), vec![])
        }
        [Key(a), Index(_), Key(s), Index(_)]
            if (a == "actor" || a == "spawnable") && s == "subscriptions" =>
        {
            (fields::<RawSubscriptionTable>(), vec![])
        }
        _ => (&[], vec![]),
    }
}

fn suggest(segs: &[Segment]) -> Option<String> {
    let (Segment::Key(key), parent) = segs.split_last()? else {
        return None;
    };
    let norm = |s: &str| s.to_ascii_lowercase().replace('-', "_");
    let key_n = norm(key);
    let (here, nested) = known_keys(parent);
    // A key that belongs one table down.
    for (table, keys) in &nested {
        if let Some(k) = keys.iter().find(|k| norm(k) == key_n) {
            return Some(format!("{table}.{k}"));
        }
    }
    // A known key with a suffix added or dropped (`log_level`, `time_budget`).
    let extends = |a: &str, b: &str| a.strip_prefix(b).is_some_and(|rest| rest.starts_with('_'));
    if let Some(k) = here
        .iter()
        .find(|k| extends(&key_n, &norm(k)) || extends(&norm(k), &key_n))
    {
        return Some(k.to_string());
    }
    let limit = (key_n.chars().count() / 3).max(1);
    here.iter()
        .map(|k| (edit_distance(&norm(k), &key_n), k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.to_string())
}

/// Edits (insertions, deletions, substitutions and swaps of neighbours) that turn `a` into `b`.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    // d[i][j]: distance between a[..i] and b[..j].
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    d[0] = (0..=b.len()).collect();
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

// ---------------------------------------------------------------------------------------------
// Paths.

fn absolute(path: &Path) -> PathBuf {
    normalize(&std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()))
}

/// Removes `.` and resolves `..` lexically, for paths shown to the user.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push(c);
                }
            }
            other => out.push(other),
        }
    }
    out
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A manifest directory with an `echo.wasm` module and a `guest` crate directory.
    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            fs::write(dir.path().join("echo.wasm"), b"\0asm\x01\0\0\0").unwrap();
            fs::create_dir(dir.path().join("guest")).unwrap();
            fs::write(
                dir.path().join("guest/Cargo.toml"),
                "[package]\nname = \"g\"\n",
            )
            .unwrap();
            fs::create_dir(dir.path().join("empty")).unwrap();
            fs::write(dir.path().join("notes.txt"), "").unwrap();
            Self { dir }
        }

        fn file(&self) -> PathBuf {
            self.dir.path().join(MANIFEST_FILE)
        }

        fn parse(&self, text: &str) -> Result<Manifest, ManifestError> {
            Manifest::parse(text, &self.file())
        }

        /// The error message for `text`, with the temporary directory replaced by `<dir>`.
        fn error(&self, text: &str) -> String {
            let err = self.parse(text).expect_err("manifest should be rejected");
            let dir = fs::canonicalize(self.dir.path()).unwrap();
            err.to_string()
                .replace(&dir.display().to_string(), "<dir>")
                .replace(&self.dir.path().display().to_string(), "<dir>")
        }

        fn canonical(&self, rel: &str) -> PathBuf {
            fs::canonicalize(self.dir.path().join(rel)).unwrap()
        }
    }

    const ECHO: &str = "[[actor]]\nname = \"echo\"\nmodule = \"echo.wasm\"\n";

    #[test]
    fn minimal_manifest_gets_every_default() {
        let f = Fixture::new();
        let m = f.parse(ECHO).unwrap();
        assert_eq!(m.path, f.file());
        assert_eq!(m.dir, f.dir.path());
        assert_eq!(m.host.data_dir, f.dir.path().join(".bunraku"));
        assert_eq!(m.host.log, "info");
        assert_eq!(m.host.idle_trim, Some(crate::trim::DEFAULT_IDLE_TRIM));
        assert_eq!(m.actors.len(), 1);
        let a = &m.actors[0];
        assert_eq!(a.name, "echo");
        assert_eq!(a.module, ModuleSource::Wasm(f.canonical("echo.wasm")));
        assert_eq!(a.instances, 1);
        assert!(a.subscriptions.is_empty());
        assert_eq!(a.config, serde_json::Value::Null);
        assert_eq!(a.config_json(), b"null");
        assert_eq!(a.limits, Limits::default());
        assert_eq!(a.restart, RestartPolicy::default());
        assert_eq!(
            *a,
            ActorSpec::new("echo", ModuleSource::Wasm(f.canonical("echo.wasm")))
        );
    }

    #[test]
    fn defaults_are_the_documented_values() {
        let l = Limits::default();
        assert_eq!(l.memory, 16 * 1024 * 1024);
        assert_eq!(l.time_budget, Duration::from_millis(1000));
        assert_eq!(l.mailbox, 1024);
        assert_eq!(l.max_message_bytes, 1024 * 1024);
        assert_eq!(l.concurrency, 1);
        assert_eq!(l.request_timeout, Duration::from_millis(5000));
        let r = RestartPolicy::default();
        assert_eq!(r.backoff_initial, Duration::from_millis(100));
        assert_eq!(r.backoff_max, Duration::from_millis(10_000));
        assert_eq!(r.reset_after, Duration::from_millis(30_000));
        assert_eq!(r.jitter, 0.2);
    }

    #[test]
    fn idle_trim_of_zero_turns_trimming_off() {
        let f = Fixture::new();
        let m = f
            .parse(&format!("[host]\nidle_trim_ms = 0\n{ECHO}"))
            .unwrap();
        assert_eq!(m.host.idle_trim, None);
    }

    #[test]
    fn every_key_is_read() {
        let f = Fixture::new();
        let m = f
            .parse(
                r#"
                [host]
                data_dir = "state"
                log = "debug,wasmtime=warn"
                idle_trim_ms = 250

                [[actor]]
                name = "echo"
                module = "echo.wasm"

                [[actor]]
                name = "sensor-hub_2"
                module = "guest"
                instances = 3
                subscriptions = ["a.b", "sensors.>", { pattern = "x.*", policy = "drop-newest" }, { pattern = "y" }]
                config = { greeting = "hi", n = 3, ratio = 0.5, on = true, list = [1, 2], nested = { when = 1979-05-27 } }

                [actor.limits]
                memory = "1MiB"
                time_budget_ms = 250
                mailbox = 8
                max_message_bytes = 4096
                concurrency = 4
                request_timeout_ms = 750

                [actor.restart]
                backoff_initial_ms = 5
                backoff_max_ms = 500
                reset_after_ms = 2000
                jitter = 0.0
                "#,
            )
            .unwrap();
        assert_eq!(m.host.data_dir, f.dir.path().join("state"));
        assert_eq!(m.host.log, "debug,wasmtime=warn");
        assert_eq!(m.host.idle_trim, Some(Duration::from_millis(250)));
        let a = m.actor("sensor-hub_2").unwrap();
        assert_eq!(a.module, ModuleSource::Crate(f.canonical("guest")));
        assert_eq!(a.instances, 3);
        let subs: Vec<(&str, Policy)> = a
            .subscriptions
            .iter()
            .map(|s| (s.pattern.as_str(), s.policy))
            .collect();
        assert_eq!(
            subs,
            [
                ("a.b", Policy::Wait),
                ("sensors.>", Policy::Wait),
                ("x.*", Policy::DropNewest),
                ("y", Policy::Wait)
            ]
        );
        assert_eq!(
            a.config,
            serde_json::json!({
                "greeting": "hi", "n": 3, "ratio": 0.5, "on": true, "list": [1, 2],
                "nested": { "when": "1979-05-27" }
            })
        );
        assert_eq!(
            a.limits,
            Limits {
                memory: 1 << 20,
                time_budget: Duration::from_millis(250),
                mailbox: 8,
                max_message_bytes: 4096,
                concurrency: 4,
                request_timeout: Duration::from_millis(750),
                max_batch: 256,
                stream_window: 256,
            }
        );
        assert_eq!(
            a.restart,
            RestartPolicy {
                backoff_initial: Duration::from_millis(5),
                backoff_max: Duration::from_millis(500),
                reset_after: Duration::from_millis(2000),
                jitter: 0.0,
            }
        );
        // The other actor keeps its defaults.
        assert_eq!(m.actor("echo").unwrap().limits, Limits::default());
    }

    #[test]
    fn grants_are_read_and_default_to_nothing() {
        let f = Fixture::new();
        let m = f
            .parse(&format!(
                r#"{ECHO}
                [actor.grants]
                send = ["billing", "audit-2"]
                publish = ["orders.>", "metrics.*.cpu"]
                subscribe = ["orders.*"]
                storage = true
                spawn = true
                timers = true

                [[actor]]
                name = "quiet"
                module = "echo.wasm"

                [[actor]]
                name = "inline"
                module = "echo.wasm"
                grants = {{ send = ["*"] }}
                "#
            ))
            .unwrap();
        let p = |s: &str| Pattern::parse(s).unwrap();
        assert_eq!(
            m.actor("echo").unwrap().grants,
            Grants {
                send: vec!["billing".into(), "audit-2".into()],
                publish: vec![p("orders.>"), p("metrics.*.cpu")],
                subscribe: vec![p("orders.*")],
                storage: true,
                spawn: true,
                timers: true,
                read_events: vec![],
            }
        );
        assert_eq!(m.actor("quiet").unwrap().grants, Grants::none());
        let inline = &m.actor("inline").unwrap().grants;
        assert!(inline.may_send("anyone") && !inline.storage && inline.publish.is_empty());
        assert!(
            m.principals.is_empty(),
            "no [principal.cli]: the host default"
        );
    }

    #[test]
    fn bad_grants_name_the_actor_and_the_entry() {
        let f = Fixture::new();
        assert_eq!(
            f.error(&format!(
                "{ECHO}[actor.grants]\nsend = [\"ok\", \"a.b\"]\npublish = [\"x..y\"]\nsubscribe = [\"a.>.b\"]\n"
            )),
            "<dir>/bunraku.toml: 3 problems:\n  \
             actor[0].grants.send[1] (actor `echo`): `a.b` is neither an actor name nor \"*\" (every actor): `.` is not allowed; use lowercase letters, digits, `-` and `_`\n  \
             actor[0].grants.publish[0] (actor `echo`): `x..y` is not a valid subject pattern: it has an empty token (a leading, trailing or doubled `.`)\n  \
             actor[0].grants.subscribe[0] (actor `echo`): `a.>.b` is not a valid subject pattern: `>` may only be the last token"
        );
        assert_eq!(
            f.error(&format!("{ECHO}[actor.grants]\nstorrage = true\n")),
            "<dir>/bunraku.toml: actor[0].grants.storrage (actor `echo`): unknown key; did you mean `storage`?"
        );
        // A grant written directly in the actor table.
        assert_eq!(
            f.error(&format!("{ECHO}publish = [\"a\"]\n")),
            "<dir>/bunraku.toml: actor[0].publish (actor `echo`): unknown key; did you mean `grants.publish`?"
        );
        assert!(
            f.error(&format!("{ECHO}[actor.grants]\nstorage = \"yes\"\n"))
                .contains("invalid type: string \"yes\", expected a boolean")
        );
    }

    /// Two actors and a spawnable module, for the supervision tests.
    const TWO: &str = "[[actor]]\nname = \"a\"\nmodule = \"echo.wasm\"\n\
        [actor.restart]\ntype = \"transient\"\n\
        [[actor]]\nname = \"b\"\nmodule = \"echo.wasm\"\n";

    #[test]
    fn supervisors_spawnables_and_restart_types_are_read() {
        let f = Fixture::new();
        let m = f
            .parse(&format!(
                r#"{TWO}
                [[spawnable]]
                name = "worker"
                module = "echo.wasm"
                prepared_instances = 2
                [spawnable.restart]
                type = "temporary"

                [[supervisor]]
                name = "root"
                children = ["inner", "b"]

                [[supervisor]]
                name = "inner"
                strategy = "rest-for-one"
                max_restarts = 7
                period_ms = 2000
                shutdown_timeout_ms = 300
                restart = "transient"
                children = ["a"]
                "#
            ))
            .unwrap();
        let (root, inner) = (&m.supervisors[0], &m.supervisors[1]);
        assert_eq!(root.strategy, Strategy::OneForOne);
        assert_eq!(root.intensity, Intensity::default());
        let kids = |s: &SupervisorSpec| {
            s.children
                .iter()
                .map(|c| (c.name.clone(), c.restart))
                .collect::<Vec<_>>()
        };
        // A child supervisor's restart type is its own `restart`; an actor's, `restart.type`.
        assert_eq!(
            kids(root),
            [
                ("inner".to_owned(), RestartType::Transient),
                ("b".to_owned(), RestartType::Permanent)
            ]
        );
        assert_eq!(kids(inner), [("a".to_owned(), RestartType::Transient)]);
        assert_eq!(inner.strategy, Strategy::RestForOne);
        assert_eq!(inner.intensity.max_restarts, 7);
        assert_eq!(inner.intensity.period, Duration::from_millis(2000));
        assert_eq!(inner.shutdown_timeout, Duration::from_millis(300));
        assert_eq!(m.spawnables[0].name, "worker");
        assert_eq!(m.spawnables[0].restart_type, RestartType::Temporary);
        assert_eq!(m.spawnables[0].prepared_instances, Some(2));
        let order: Vec<&str> = m.start_order().iter().map(|a| a.name.as_str()).collect();
        assert_eq!(order, ["a", "b"]);
        assert!(m.is_supervised("a") && !m.is_supervised("worker"));
    }

    #[test]
    fn virtual_actors_are_read_and_checked() {
        let f = Fixture::new();
        let m = f
            .parse(&format!("{ECHO}virtual = true\nidle_timeout_ms = 250\n"))
            .unwrap();
        assert_eq!(m.actors[0].virtual_idle, Some(Duration::from_millis(250)));
        let m = f.parse(&format!("{ECHO}virtual = true\n")).unwrap();
        assert_eq!(m.actors[0].virtual_idle, Some(DEFAULT_IDLE_TIMEOUT));
        assert_eq!(f.parse(ECHO).unwrap().actors[0].virtual_idle, None);
        assert_eq!(
            f.error(&format!(
                "{ECHO}virtual = true\ninstances = 2\nsubscriptions = [\"a\"]\n"
            )),
            "<dir>/bunraku.toml: 2 problems:\n  \
             actor[0].instances (actor `echo`): a virtual actor has one activation per key: leave `instances` out\n  \
             actor[0].subscriptions (actor `echo`): a virtual actor is activated by messages to `NAME/KEY`, not by subscriptions"
        );
        assert_eq!(
            f.error(&format!("{ECHO}idle_timeout_ms = 5\n")),
            "<dir>/bunraku.toml: actor[0].idle_timeout_ms (actor `echo`): only virtual actors are deactivated: add `virtual = true`"
        );
        // Prepared instances: the host's default unless the type says otherwise, `0` for none.
        assert_eq!(m.actors[0].prepared_instances, None);
        for n in [0, 16, 1024] {
            let m = f
                .parse(&format!("{ECHO}virtual = true\nprepared_instances = {n}\n"))
                .unwrap();
            assert_eq!(m.actors[0].prepared_instances, Some(n));
        }
        assert_eq!(
            f.error(&format!("{ECHO}prepared_instances = 2\n")),
            "<dir>/bunraku.toml: actor[0].prepared_instances (actor `echo`): only virtual actor types and spawnable modules prepare instances ahead of their actors: add `virtual = true`"
        );
        assert_eq!(
            f.error(&format!(
                "{ECHO}virtual = true\nprepared_instances = 1025\n"
            )),
            "<dir>/bunraku.toml: actor[0].prepared_instances (actor `echo`): 1025 is more than 1024, the most a type may prepare: each prepared instance holds an instantiated module from deploy on"
        );
        assert_eq!(
            f.error(&format!("{ECHO}virtual = true\nprepared_instances = -1\n")),
            "<dir>/bunraku.toml:5:22: invalid value: integer `-1`, expected usize"
        );
    }

    #[test]
    fn bad_supervision_trees_name_the_supervisor_and_the_entry() {
        let f = Fixture::new();
        assert_eq!(
            f.error(&format!(
                "{TWO}[[supervisor]]\nname = \"s\"\nchildren = [\"a\", \"ghost\"]\n\
                 [[supervisor]]\nname = \"t\"\nchildren = [\"a\", \"t2\"]\n\
                 [[supervisor]]\nname = \"t2\"\nchildren = [\"t\"]\n"
            )),
            "<dir>/bunraku.toml: 4 problems:\n  \
             supervisor[0].children[1]: no actor or supervisor is named `ghost`; the manifest defines: a, b, s, t, t2\n  \
             supervisor[1].children[0]: `a` is already a child of supervisor `s`: a child has one supervisor\n  \
             supervisor[1].children: supervisor `t` is its own ancestor: supervisors form a tree\n  \
             supervisor[2].children: supervisor `t2` is its own ancestor: supervisors form a tree"
        );
        let e = f.error(&format!(
            "{TWO}[[supervisor]]\nname = \"s\"\nstrategy = \"one-for-none\"\nchildren = [\"a\"]\n"
        ));
        assert!(
            e.contains("unknown variant `one-for-none`, expected one of `one-for-one`, `one-for-all`, `rest-for-one`"),
            "{e}"
        );
        assert_eq!(
            f.error(&format!(
                "{TWO}[[supervisor]]\nname = \"s\"\nchildren = [\"a\"]\nmax_restart = 2\n"
            )),
            "<dir>/bunraku.toml: supervisor[0].max_restart: unknown key; did you mean `max_restarts`?"
        );
        assert_eq!(
            f.error(&format!(
                "{TWO}[[supervisor]]\nname = \"a\"\nchildren = [\"b\"]\n"
            )),
            "<dir>/bunraku.toml: supervisor[0].name: the name `a` is already used by actor[0]: give each actor a unique name"
        );
    }

    #[test]
    fn principal_cli_grants_are_read_and_checked() {
        let f = Fixture::new();
        let m = f
            .parse(&format!(
                "{ECHO}[principal.cli]\nsend = [\"echo\"]\npublish = [\"test.>\"]\n"
            ))
            .unwrap();
        let cli = &m.principals["cli"];
        assert!(cli.may_send("echo") && !cli.may_send("other"));
        assert!(cli.may_publish("test.x") && !cli.may_publish("prod.x"));
        // Written, the table grants only what it lists.
        let m = f.parse(&format!("{ECHO}[principal.cli]\n")).unwrap();
        assert_eq!(m.principals["cli"], Grants::none());

        assert_eq!(
            f.error(&format!(
                "{ECHO}[principal.cli]\nsend = [\"A\"]\nstorage = true\n"
            )),
            "<dir>/bunraku.toml: 2 problems:\n  \
             principal.cli.storage: unknown key\n  \
             principal.cli.send[0]: `A` is neither an actor name nor \"*\" (every actor): `A` is not allowed; use lowercase letters, digits, `-` and `_` (write `a`)"
        );
        // Only known principals: a misspelt one must not leave the CLI unrestricted.
        assert_eq!(
            f.error(&format!("{ECHO}[principal.cly]\nsend = []\n")),
            "<dir>/bunraku.toml: principal.cly: unknown key; did you mean `cli`?"
        );
        // `--smoke` calls the smoke actor as `cli`.
        assert_eq!(
            f.error(&format!(
                "{ECHO}[principal.cli]\nsend = [\"other\"]\n[smoke]\nactor = \"echo\"\n"
            )),
            "<dir>/bunraku.toml: smoke.actor: `bunraku run --smoke` calls `echo` as principal `cli`, which [principal.cli] does not allow: add \"echo\" to principal.cli.send"
        );
        assert!(
            f.parse(&format!(
                "{ECHO}[principal.cli]\nsend = [\"*\"]\n[smoke]\nactor = \"echo\"\n"
            ))
            .is_ok()
        );
    }

    #[test]
    fn config_json_is_compact_json() {
        let f = Fixture::new();
        let m = f
            .parse(&format!("{ECHO}config = {{ a = 1, b = [\"x\"] }}\n"))
            .unwrap();
        assert_eq!(m.actors[0].config_json(), br#"{"a":1,"b":["x"]}"#);
    }

    #[test]
    fn sizes_accept_bytes_and_binary_units() {
        for (text, bytes) in [
            ("65536", 65536),
            ("\"65536\"", 65536),
            ("\"64KiB\"", 65536),
            ("\"16MiB\"", 16 << 20),
            ("\"16 MiB\"", 16 << 20),
            ("\"2mib\"", 2 << 20),
            ("\"1GiB\"", 1 << 30),
            ("\"4GiB\"", 4 << 30),
        ] {
            let f = Fixture::new();
            let m = f
                .parse(&format!("{ECHO}[actor.limits]\nmemory = {text}\n"))
                .unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(m.actors[0].limits.memory, bytes, "{text}");
        }
    }

    #[test]
    fn load_accepts_the_directory_or_the_file() {
        let f = Fixture::new();
        fs::write(f.file(), ECHO).unwrap();
        let by_dir = Manifest::load(f.dir.path()).unwrap();
        let by_file = Manifest::load(&f.file()).unwrap();
        assert_eq!(by_dir, by_file);
        assert_eq!(by_dir.actors[0].name, "echo");
    }

    #[test]
    fn relative_module_paths_resolve_against_the_manifest_dir() {
        let f = Fixture::new();
        fs::create_dir(f.dir.path().join("deploy")).unwrap();
        let origin = f.dir.path().join("deploy").join(MANIFEST_FILE);
        let m = Manifest::parse(
            "[[actor]]\nname = \"a\"\nmodule = \"../guest/Cargo.toml\"\n",
            &origin,
        )
        .unwrap();
        assert_eq!(
            m.actors[0].module,
            ModuleSource::Crate(f.canonical("guest"))
        );
        assert_eq!(m.dir, f.dir.path().join("deploy"));
    }

    #[test]
    fn missing_manifest_says_where_it_looked() {
        let f = Fixture::new();
        let err = Manifest::load(f.dir.path()).unwrap_err();
        assert!(matches!(err, ManifestError::NotFound { .. }));
        assert_eq!(
            err.to_string(),
            format!(
                "no manifest at {}: create a bunraku.toml with an [[actor]] table, or pass the path of one",
                f.file().display()
            )
        );
    }

    #[test]
    fn unknown_top_level_key_names_the_file_and_suggests() {
        let f = Fixture::new();
        assert_eq!(
            f.error(&format!("hots = 1\n{ECHO}")),
            "<dir>/bunraku.toml: hots: unknown key; did you mean `host`?"
        );
        assert_eq!(
            f.error(&format!("{ECHO}[[actors]]\nname = \"x\"\n")),
            "<dir>/bunraku.toml: actors: unknown key; did you mean `actor`?"
        );
        assert_eq!(
            f.error(&format!("log = \"debug\"\n{ECHO}")),
            "<dir>/bunraku.toml: log: unknown key; did you mean `host.log`?"
        );
    }

    #[test]
    fn unknown_actor_key_names_the_actor() {
        let f = Fixture::new();
        assert_eq!(
            f.error(&format!("{ECHO}instance = 2\n")),
            "<dir>/bunraku.toml: actor[0].instance (actor `echo`): unknown key; did you mean `instances`?"
        );
        // A limit written directly in the actor table.
        assert_eq!(
            f.error(&format!("{ECHO}mailbox = 2\n")),
            "<dir>/bunraku.toml: actor[0].mailbox (actor `echo`): unknown key; did you mean `limits.mailbox`?"
        );
        // Nothing close: no suggestion.
        assert_eq!(
            f.error(&format!("{ECHO}colour = \"blue\"\n")),
            "<dir>/bunraku.toml: actor[0].colour (actor `echo`): unknown key"
        );
    }

    #[test]
    fn unknown_limits_key_has_its_full_path() {
        let f = Fixture::new();
        let text = format!(
            "{ECHO}{}[actor.limits]\nmemroy = \"1MiB\"\n",
            ECHO.replace("echo", "two")
        );
        let text = text.replace("module = \"two.wasm\"", "module = \"echo.wasm\"");
        assert_eq!(
            f.error(&text),
            "<dir>/bunraku.toml: actor[1].limits.memroy (actor `two`): unknown key; did you mean `memory`?"
        );
        assert_eq!(
            f.error(&format!("{ECHO}[actor.limits]\ntime_budget = 5\n")),
            "<dir>/bunraku.toml: actor[0].limits.time_budget (actor `echo`): unknown key; did you mean `time_budget_ms`?"
        );
        assert_eq!(
            f.error(&format!("{ECHO}[actor.restart]\nbackoff-max-ms = 5\n")),
            "<dir>/bunraku.toml: actor[0].restart.backoff-max-ms (actor `echo`): unknown key; did you mean `backoff_max_ms`?"
        );
        assert_eq!(
            f.error(&format!(
                "{ECHO}subscriptions = [{{ pattern = \"a\", polcy = \"wait\" }}]\n"
            )),
            "<dir>/bunraku.toml: actor[0].subscriptions[0].polcy (actor `echo`): unknown key; did you mean `policy`?"
        );
        assert_eq!(
            f.error(&format!("[host]\nlog_level = \"x\"\n{ECHO}")),
            "<dir>/bunraku.toml: host.log_level: unknown key; did you mean `log`?"
        );
    }

    #[test]
    fn all_problems_are_listed_together() {
        let f = Fixture::new();
        assert_eq!(
            f.error(&format!(
                "{ECHO}instances = 0\nfoo = 1\n[actor.limits]\nmailbox = 0\n"
            )),
            "<dir>/bunraku.toml: 3 problems:\n  \
             actor[0].foo (actor `echo`): unknown key\n  \
             actor[0].instances (actor `echo`): must be at least 1 (leave it out for one instance)\n  \
             actor[0].limits.mailbox (actor `echo`): must be at least 1 (leave it out for the default, 1024)"
        );
    }

    #[test]
    fn no_actors_is_an_error() {
        let f = Fixture::new();
        assert_eq!(
            f.error(""),
            "<dir>/bunraku.toml: the manifest defines no actors: add an [[actor]] table with `name` and `module`"
        );
    }

    #[test]
    fn single_actor_table_explains_double_brackets() {
        let f = Fixture::new();
        assert_eq!(
            f.error("[actor]\nname = \"echo\"\nmodule = \"echo.wasm\"\n"),
            "<dir>/bunraku.toml:1:1: `actor` is a table, but actors are an array of tables: write [[actor]] (double brackets) before each actor"
        );
    }

    #[test]
    fn wrong_types_and_syntax_give_line_and_column() {
        let f = Fixture::new();
        assert_eq!(
            f.error(&format!("{ECHO}instances = \"4\"\n")),
            "<dir>/bunraku.toml:4:13: invalid type: string \"4\", expected u32"
        );
        assert_eq!(
            f.error("[[actor]]\nname = echo\n"),
            "<dir>/bunraku.toml:2:8: string values must be quoted, expected literal string"
        );
        assert_eq!(
            f.error("[[actor]]\nname = \"echo\"\n"),
            "<dir>/bunraku.toml:1:1: missing field `module`"
        );
        assert_eq!(
            f.error(&format!(
                "{ECHO}subscriptions = [{{ pattern = \"a\", policy = \"drop\" }}]\n"
            )),
            "<dir>/bunraku.toml:4:44: unknown variant `drop`, expected `wait` or `drop-newest`"
        );
    }

    #[test]
    fn actor_names_follow_the_rule() {
        let f = Fixture::new();
        for (name, message) in [
            (
                "",
                "`` is not a valid actor name: an actor needs a name, e.g. `echo`",
            ),
            (
                "Echo",
                "`Echo` is not a valid actor name: `E` is not allowed; use lowercase letters, digits, `-` and `_` (write `echo`)",
            ),
            (
                "a.b",
                "`a.b` is not a valid actor name: `.` is not allowed; use lowercase letters, digits, `-` and `_`",
            ),
            (
                "a*",
                "`a*` is not a valid actor name: `*` is not allowed; use lowercase letters, digits, `-` and `_`",
            ),
            (
                "a>",
                "`a>` is not a valid actor name: `>` is not allowed; use lowercase letters, digits, `-` and `_`",
            ),
            (
                "-a",
                "`-a` is not a valid actor name: names start with a lowercase letter or a digit",
            ),
        ] {
            assert_eq!(
                f.error(&format!(
                    "[[actor]]\nname = \"{name}\"\nmodule = \"echo.wasm\"\n"
                )),
                format!("<dir>/bunraku.toml: actor[0].name: {message}")
            );
        }
        let long = "a".repeat(65);
        assert!(validate_actor_name(&long).is_err());
        assert!(validate_actor_name(&long[..64]).is_ok());
        assert!(validate_actor_name("0-x_y").is_ok());
    }

    #[test]
    fn duplicate_names_point_at_the_first() {
        let f = Fixture::new();
        assert_eq!(
            f.error(&format!("{ECHO}{ECHO}")),
            "<dir>/bunraku.toml: actor[1].name (actor `echo`): the name `echo` is already used by actor[0]: give each actor a unique name"
        );
    }

    #[test]
    fn module_problems_show_the_resolved_path() {
        let f = Fixture::new();
        let with =
            |module: &str| f.error(&format!("[[actor]]\nname = \"a\"\nmodule = \"{module}\"\n"));
        assert_eq!(
            with("../nowhere/./x.wasm"),
            format!(
                "<dir>/bunraku.toml: actor[0].module (actor `a`): {} does not exist: `module` must name a guest crate directory or a .wasm file, relative to the manifest's directory",
                f.dir
                    .path()
                    .parent()
                    .unwrap()
                    .join("nowhere/x.wasm")
                    .display()
            )
        );
        assert_eq!(
            with("empty"),
            "<dir>/bunraku.toml: actor[0].module (actor `a`): <dir>/empty is not a module: it is a directory without a Cargo.toml; point `module` at a guest crate directory or a .wasm file"
        );
        assert_eq!(
            with("notes.txt"),
            "<dir>/bunraku.toml: actor[0].module (actor `a`): <dir>/notes.txt is not a module: it is neither a .wasm file nor a crate directory"
        );
    }

    #[test]
    fn zero_limits_are_rejected_with_their_default() {
        let f = Fixture::new();
        for (key, default) in [
            ("limits.memory", "\"16MiB\""),
            ("limits.time_budget_ms", "1000"),
            ("limits.mailbox", "1024"),
            ("limits.max_message_bytes", "\"1MiB\""),
            ("limits.concurrency", "1"),
            ("limits.request_timeout_ms", "5000"),
            ("limits.max_batch", "256"),
            ("restart.backoff_initial_ms", "100"),
            ("restart.backoff_max_ms", "10000"),
            ("restart.reset_after_ms", "30000"),
        ] {
            let (table, k) = key.split_once('.').unwrap();
            assert_eq!(
                f.error(&format!("{ECHO}[actor.{table}]\n{k} = 0\n")),
                format!(
                    "<dir>/bunraku.toml: actor[0].{key} (actor `echo`): must be at least 1 (leave it out for the default, {default})"
                )
            );
        }
    }

    #[test]
    fn bad_sizes_are_explained() {
        let f = Fixture::new();
        let limits = |v: &str| f.error(&format!("{ECHO}[actor.limits]\nmemory = {v}\n"));
        assert_eq!(
            limits("\"16MB\""),
            "<dir>/bunraku.toml:5:10: `16MB` is ambiguous: write \"16MiB\" (1 MiB = 1048576 bytes) or the number of bytes"
        );
        assert_eq!(
            limits("\"lots\""),
            "<dir>/bunraku.toml:5:10: `lots` is not a size: write bytes as an integer, or a number with KiB, MiB or GiB, e.g. \"16MiB\""
        );
        assert_eq!(
            limits("-1"),
            "<dir>/bunraku.toml:5:10: a size cannot be negative (-1)"
        );
        assert_eq!(
            limits("\"5GiB\""),
            "<dir>/bunraku.toml: actor[0].limits.memory (actor `echo`): 5368709120 bytes is more than 4294967296 bytes, the most a wasm32 memory can address"
        );
    }

    #[test]
    fn restart_values_are_checked() {
        let f = Fixture::new();
        assert_eq!(
            f.error(&format!("{ECHO}[actor.restart]\njitter = 1.5\n")),
            "<dir>/bunraku.toml: actor[0].restart.jitter (actor `echo`): 1.5 is not a fraction: use a number from 0.0 (no jitter) to 1.0"
        );
        assert_eq!(
            f.error(&format!(
                "{ECHO}[actor.restart]\nbackoff_initial_ms = 20000\n"
            )),
            "<dir>/bunraku.toml: actor[0].restart (actor `echo`): backoff_initial_ms (20000) is larger than backoff_max_ms (10000): raise backoff_max_ms or lower backoff_initial_ms"
        );
    }

    #[test]
    fn subscription_patterns_are_checked() {
        let f = Fixture::new();
        for (pattern, reason) in [
            (
                "",
                "it is empty; write tokens separated by `.`, e.g. `sensors.*`",
            ),
            (
                "a..b",
                "it has an empty token (a leading, trailing or doubled `.`)",
            ),
            (
                ".a",
                "it has an empty token (a leading, trailing or doubled `.`)",
            ),
            (
                "a.",
                "it has an empty token (a leading, trailing or doubled `.`)",
            ),
            ("a.>.b", "`>` may only be the last token"),
            ("a.b>", "`>` must be a whole token, e.g. `a.>`"),
            ("a.b*", "`*` must be a whole token, e.g. `a.*.c`"),
            ("a b", "tokens cannot contain whitespace"),
        ] {
            assert_eq!(
                f.error(&format!(
                    "{ECHO}subscriptions = [\"ok.*\", \"{pattern}\"]\n"
                )),
                format!(
                    "<dir>/bunraku.toml: actor[0].subscriptions[1] (actor `echo`): `{pattern}` is not a valid subject pattern: {reason}"
                ),
            );
        }
        for ok in ["a", "a.b.c", "*", ">", "a.*.c", "a.*.>", "*.>"] {
            assert_eq!(validate_pattern(ok), Ok(()), "{ok}");
        }
        assert_eq!(
            f.error(&format!("{ECHO}subscriptions = [\"a.*\", {{ pattern = \"a.*\", policy = \"drop-newest\" }}]\n")),
            "<dir>/bunraku.toml: actor[0].subscriptions[1] (actor `echo`): `a.*` is already subscribed by subscriptions[0]: remove one"
        );
    }

    #[test]
    fn config_must_fit_json() {
        let f = Fixture::new();
        assert_eq!(
            f.error(&format!("{ECHO}config = {{ x = {{ y = [nan] }} }}\n")),
            "<dir>/bunraku.toml: actor[0].config (actor `echo`): `config.x.y[0]` is NaN, which JSON cannot represent: use a finite number or a string"
        );
    }

    #[test]
    fn empty_log_filter_is_rejected() {
        let f = Fixture::new();
        assert_eq!(
            f.error(&format!("[host]\nlog = \"\"\n{ECHO}")),
            "<dir>/bunraku.toml: host.log: must not be empty"
        );
    }

    #[test]
    fn smoke_section_names_an_actor_and_a_timeout() {
        let f = Fixture::new();
        assert_eq!(f.parse(ECHO).unwrap().smoke, None);
        let m = f
            .parse(&format!("{ECHO}[smoke]\nactor = \"echo\"\n"))
            .unwrap();
        assert_eq!(
            m.smoke,
            Some(SmokeSection {
                actor: Some("echo".into()),
                http: None,
                timeout: DEFAULT_SMOKE_TIMEOUT
            })
        );
        let m = f
            .parse(&format!(
                "[smoke]\nactor = \"echo\"\ntimeout_ms = 250\n{ECHO}"
            ))
            .unwrap();
        assert_eq!(m.smoke.unwrap().timeout, Duration::from_millis(250));
    }

    #[test]
    fn smoke_section_is_checked() {
        let f = Fixture::new();
        assert_eq!(
            f.error(&format!("{ECHO}[smoke]\nactor = \"checker\"\n")),
            "<dir>/bunraku.toml: smoke.actor: no actor is named `checker`: use the name of one of the [[actor]] tables (echo)"
        );
        assert_eq!(
            f.error(&format!(
                "{ECHO}[smoke]\nactor = \"echo\"\ntimeout_ms = 0\n"
            )),
            "<dir>/bunraku.toml: smoke.timeout_ms: must be at least 1 (leave it out for the default, 60000)"
        );
        assert_eq!(
            f.error(&format!("{ECHO}[smoke]\nactor = \"echo\"\ntimeout = 5\n")),
            "<dir>/bunraku.toml: smoke.timeout: unknown key; did you mean `timeout_ms`?"
        );
        assert_eq!(
            f.error(&format!(
                "timeout_ms = 5\n{ECHO}[smoke]\nactor = \"echo\"\n"
            )),
            "<dir>/bunraku.toml: timeout_ms: unknown key; did you mean `smoke.timeout_ms`?"
        );
        assert_eq!(
            f.error(&format!("{ECHO}[smoke]\n")),
            "<dir>/bunraku.toml: smoke: name the checker `actor`, or an `http` script to run against the gateway (or both)"
        );
    }

    const GATEWAY: &str = "[gateway]\nlisten = \"127.0.0.1:0\"\n[[gateway.route]]\nmethod = \"GET\"\npath = \"/echo/{text}\"\nactor = \"echo\"\nmessage = \"Echo\"\n";

    #[test]
    fn gateway_section_is_read() {
        let f = Fixture::new();
        assert_eq!(f.parse(ECHO).unwrap().gateway, None);
        let m = f
            .parse(&format!(
                "{ECHO}{GATEWAY}[[gateway.jwt]]\nkid = \"rs\"\nalg = \"RS256\"\npublic_key_file = \"keys/public.pem\"\n"
            ))
            .unwrap();
        let g = m.gateway.unwrap();
        assert_eq!(g.listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!(g.routes[0].label(), "GET /echo/{text}");
        assert_eq!(g.max_body_bytes, 1 << 20);
        // Relative key files resolve against the manifest's directory.
        assert_eq!(
            g.jwt_keys[0].public_key_file.as_deref(),
            Some(m.dir.join("keys/public.pem").as_path())
        );
    }

    #[test]
    fn gateway_problems_name_the_key() {
        let f = Fixture::new();
        assert_eq!(
            f.error(&format!("{ECHO}[gateway]\nmax_hedaers = 3\n")),
            "<dir>/bunraku.toml: gateway.max_hedaers: unknown key; did you mean `max_headers`?"
        );
        assert_eq!(
            f.error(&format!("listen = \"x\"\n{ECHO}")),
            "<dir>/bunraku.toml: listen: unknown key; did you mean `gateway.listen`?"
        );
        assert_eq!(
            f.error(&format!("{ECHO}{GATEWAY}[[gateway.route]]\nmethod = \"GET\"\npath = \"/a\"\nactor = \"echo\"\nmesage = \"Echo\"\n")),
            "<dir>/bunraku.toml: gateway.route[1].mesage: unknown key; did you mean `message`?"
        );
        assert_eq!(
            f.error(&format!("{ECHO}{GATEWAY}[[gateway.route]]\nmethod = \"GET\"\npath = \"a\"\nactor = \"nobody\"\n")),
            "<dir>/bunraku.toml: 2 problems:\n  gateway.route[1].path: `a` does not start with `/`\n  gateway.route[1].actor: no actor is named `nobody`: use the name of one of the [[actor]] tables (echo)"
        );
        assert_eq!(
            f.error(&format!("{ECHO}{GATEWAY}[[gateway.route]]\nmethod = \"GET\"\npath = \"/a/{{id}}\"\nactor = \"echo/{{id}}\"\n")),
            "<dir>/bunraku.toml: gateway.route[1].actor: `echo` is not a virtual actor, so it has no keys: write `actor = \"echo\"`"
        );
        assert_eq!(
            f.error(&format!(
                "{ECHO}{}",
                GATEWAY.replace(
                    "[gateway]\n",
                    "[gateway]\ngrants = { send = [\"other\"] }\n"
                )
            )),
            "<dir>/bunraku.toml: gateway.route[0].actor: the gateway's grants do not allow calling `echo`: add \"echo\" to gateway.grants.send"
        );
        let e = f.error(&format!("{ECHO}{GATEWAY}[[gateway.route]]\nmethod = \"GET\"\npath = \"/b\"\nactor = \"echo\"\nauth = \"basic\"\n"));
        assert!(e.contains("unknown variant `basic`"), "{e}");
    }

    #[test]
    fn smoke_http_names_a_script_and_needs_a_gateway() {
        let f = Fixture::new();
        fs::write(
            f.dir.path().join("smoke.toml"),
            "[[request]]\npath = \"/echo/hi\"\nexpect_json = \"hi\"\n",
        )
        .unwrap();
        let m = f
            .parse(&format!("{ECHO}{GATEWAY}[smoke]\nhttp = \"smoke.toml\"\n"))
            .unwrap();
        let smoke = m.smoke.unwrap();
        assert_eq!(smoke.actor, None);
        assert_eq!(smoke.http, Some(m.dir.join("smoke.toml")));
        assert_eq!(
            f.error(&format!("{ECHO}[smoke]\nhttp = \"smoke.toml\"\n")),
            "<dir>/bunraku.toml: smoke.http: an HTTP smoke script runs against the gateway: add a [gateway] table"
        );
        let e = f.error(&format!(
            "{ECHO}{GATEWAY}[smoke]\nhttp = \"missing.toml\"\n"
        ));
        assert!(
            e.starts_with("<dir>/bunraku.toml: smoke.http: cannot read the HTTP smoke script <dir>/missing.toml"),
            "{e}"
        );
    }
}
