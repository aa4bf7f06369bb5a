//! The host: one process running many actors.
//!
//! [`Host`] owns the engine, the registry of deployed actors, the pub-sub table, the clock and
//! entropy, the log sink, and a dedicated multi-threaded tokio runtime on which the actors run.
//! Its client API ([`Host::request`], [`Host::send`], [`Host::publish`], [`Host::actors`]) can be
//! called from any other tokio runtime: the CLI's control socket runs on its own runtime, so a
//! busy guest cannot starve it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bunraku_abi::view::OutboundView;
use bunraku_abi::{Codec, Envelope, HandlerKind, Outbound, Policy, ReplyBody, TraceContext};
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use wasmtime::Linker;

use crate::actor::{
    ActorCell, ActorGroup, ActorState, Grants, InstanceIo, Settings, hash_name, run_cell,
};
use crate::build::{BuildOptions, resolve_module};
use crate::clock::{Clock, Entropy, OsEntropy, SystemClock};
use crate::engine::{Engine, EngineConfig, EngineError};
use crate::error::{CallError, DeployError, LoadError};
use crate::logs::LogSink;
use crate::mailbox::{Delivery, MailboxTx, TrySendError, mailbox};
use crate::manifest::{ActorSpec, Manifest};
use crate::module::ActorModule;
use crate::pubsub::{PubSub, SubTarget};
use crate::store::{LazyStore, Store, StoreError, StoreOptions};
use crate::subject::{Pattern, validate_subject};

/// How a [`Host`] is set up.
#[derive(Clone)]
pub struct HostConfig {
    /// The engine to run on. Share one engine between hosts in a process (tests do).
    pub engine: Option<Engine>,
    /// Settings for a new engine when `engine` is `None`.
    pub engine_config: EngineConfig,
    /// Threads that run the actors (the guest lanes), and worker threads of the host's own
    /// runtime beside them (default: the number of cores).
    pub guest_threads: usize,
    /// The clock for timeouts, backoff and the guests' WASI clocks.
    pub clock: Arc<dyn Clock>,
    /// The entropy for jitter, ids and the guests' `random_get`.
    pub entropy: Arc<dyn Entropy>,
    /// Where the host keeps its data: the embedded store (`state.sqlite3`, actors' persisted
    /// state) is opened there on an actor's first `load` or `save`, creating the directory (mode
    /// `0700`). Default `None`: actors cannot persist state and `load`/`save` fail with
    /// `storage unavailable`. `bunraku run` passes the manifest's `[host] data_dir` (default
    /// `.bunraku` next to the manifest).
    pub data_dir: Option<PathBuf>,
    /// Settings of the embedded store (a size limit).
    pub store: StoreOptions,
    /// Instances each virtual actor type and spawnable module keeps instantiated ahead of its
    /// activations or spawns (see [`crate::prepared`]) unless its spec says otherwise
    /// ([`ActorSpec::prepared_instances`](crate::manifest::ActorSpec::prepared_instances));
    /// `0` turns this off. Default:
    /// [`DEFAULT_PREPARED`](crate::prepared::DEFAULT_PREPARED).
    pub prepared_instances: usize,
    /// Enter each prepared instance once, with no event, before it waits for an activation or
    /// a spawn, so that the SDK's one-time set-up (its executor, its event buffer) runs ahead
    /// instead of in the actor's first entry. Default: `true`.
    pub warm_prepared: bool,
    /// How long an actor instance must not enter the guest before it gives back the pages of
    /// its linear memory that can be rebuilt (zero pages, and unchanged pages of its data
    /// segments); it copies them back before it next runs. `None` never trims. Default:
    /// [`DEFAULT_IDLE_TRIM`](crate::trim::DEFAULT_IDLE_TRIM) (1 s). See [`crate::trim`].
    pub idle_trim: Option<Duration>,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            engine: None,
            engine_config: EngineConfig::default(),
            guest_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            clock: Arc::new(SystemClock::new()),
            entropy: Arc::new(OsEntropy),
            data_dir: None,
            store: StoreOptions::default(),
            prepared_instances: crate::prepared::DEFAULT_PREPARED,
            warm_prepared: true,
            idle_trim: Some(crate::trim::DEFAULT_IDLE_TRIM),
        }
    }
}

/// Why a host could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// The engine could not be created.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The guest runtime or its lanes could not be started.
    #[error("cannot start the guest runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// Registering host functions failed (a bug).
    #[error("cannot register host functions: {0}")]
    Linker(String),
}

/// A module actors may start with `ctx.spawn` ([`Host::define_spawnable`]).
pub(crate) struct Spawnable {
    pub module: Arc<ActorModule>,
    /// The settings every actor spawned from it gets, but for its name and config.
    pub template: ActorSpec,
    /// The instances it keeps prepared for its spawns (`template.prepared_instances`).
    pub prepared: Option<Arc<crate::prepared::Pool>>,
}

/// A deployed virtual actor type: what its activations are made from, shared by all of them.
pub(crate) struct VirtualType {
    pub module: Arc<ActorModule>,
    pub spec: ActorSpec,
    pub settings: Arc<Settings>,
}

/// Resolves actor names. Local for now; hosts on other machines plug in here, which is why
/// callers treat every lookup as fallible and cache what they resolved.
#[derive(Default)]
pub(crate) struct Registry {
    /// Keyed by the group's own name, so an entry adds no copy of it.
    pub(crate) actors: DashMap<Arc<str>, Arc<ActorGroup>>,
}

impl Registry {
    /// The group deployed under `name`. The map guard is released before returning.
    pub(crate) fn lookup(&self, name: &str) -> Option<Arc<ActorGroup>> {
        self.actors.get(name).map(|g| g.value().clone())
    }

    /// Every deployed group. Holds shard locks while iterating: never across an `.await`.
    pub(crate) fn iter(&self) -> dashmap::iter::Iter<'_, Arc<str>, Arc<ActorGroup>> {
        self.actors.iter()
    }
}

/// Trace and span ids without a system call per message: a counter run through splitmix64 under
/// a 128-bit key drawn once from the host's entropy. Ids are unique per host (the counter never
/// repeats and each mix is a bijection), different on every host start, and reproducible under a
/// seeded entropy (simulation). They are identifiers, not secrets. `getrandom` per request was
/// 1.6 µs of the gateway's path.
struct TraceIds {
    key: [u64; 2],
    next: AtomicU64,
}

impl TraceIds {
    fn new(entropy: &dyn Entropy) -> Self {
        Self {
            key: [entropy.next_u64(), entropy.next_u64()],
            next: AtomicU64::new(0),
        }
    }

    fn next(&self) -> TraceContext {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mix = |k: u64| {
            let mut z = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ k;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let mut t = TraceContext::default();
        t.trace_id[..8].copy_from_slice(&mix(self.key[0]).to_le_bytes());
        t.trace_id[8..].copy_from_slice(&mix(self.key[1]).to_le_bytes());
        t.span_id = mix(self.key[0] ^ self.key[1].rotate_left(17)).to_le_bytes();
        t
    }
}

/// What every instance shares.
pub(crate) struct Shared {
    pub engine: Engine,
    pub linker: Linker<ActorState>,
    pub registry: Registry,
    pub pubsub: PubSub,
    pub clock: Arc<dyn Clock>,
    pub entropy: Arc<dyn Entropy>,
    pub logs: LogSink,
    /// Supervisors, and the fatal error of a tree that gave up.
    pub supervisors: crate::supervision::Tree,
    /// Modules actors may `spawn`, by name.
    pub spawnable: DashMap<String, Arc<Spawnable>>,
    /// Virtual actor types by name: activations `NAME/KEY` are made from these on first use.
    pub virtual_types: DashMap<String, Arc<VirtualType>>,
    /// The threads that run the actors' tasks (`crate::sched`), in the context of the host's
    /// runtime (which runs its helper tasks: reminders, trimming, deactivation).
    pub(crate) lanes: crate::sched::Lanes,
    /// The embedded store, opened on first use.
    pub store: LazyStore,
    /// The durable reminder task's handle.
    pub reminders: crate::reminders::Reminders,
    next_msg: AtomicU64,
    next_actor: AtomicU64,
    /// Trace ids: a counter mixed with a key drawn once from `entropy` (see [`Shared::new_trace`]).
    traces: TraceIds,
    /// Published messages that matched no subscriber.
    pub unroutable: AtomicU64,
    /// The round-robin counter of client messages spread over instances.
    pub next_spread: AtomicU64,
    /// Activations of virtual actors made.
    pub activations: AtomicU64,
    /// Idle activations evicted.
    pub evictions: AtomicU64,
    /// Instance starts and their time by stage.
    pub starts: crate::metrics::StartCounters,
    /// The prepared instances of every virtual actor type and spawnable module (each actor's
    /// [`Settings`] names its own), to close when the host stops.
    prepared: Mutex<Vec<Arc<crate::prepared::Pool>>>,
    /// How many instances each type or module prepares unless its spec says otherwise.
    prepared_size: usize,
    /// `HostConfig::warm_prepared`.
    pub(crate) warm_prepared: bool,
    /// Loaded modules, by their bytes.
    modules: crate::module::Loaded<ActorModule>,
}

/// The result of delivering a published message to every matching subscriber.
pub(crate) struct Fanout {
    pub delivered: usize,
    pub dropped: usize,
    pub full: usize,
    /// Deliveries waiting for room (publisher policy `wait`).
    pub waiting: Vec<(MailboxTx, Delivery)>,
}

/// A module load failure of `actor`'s module at `wasm`.
fn load_error(actor: &str, wasm: &Path, source: LoadError) -> DeployError {
    DeployError::Load {
        actor: actor.to_owned(),
        module: wasm.display().to_string(),
        source,
    }
}

/// The bytes of `actor`'s module file.
fn read_wasm(actor: &str, wasm: &Path) -> Result<Vec<u8>, DeployError> {
    std::fs::read(wasm).map_err(|source| {
        load_error(
            actor,
            wasm,
            LoadError::Read {
                path: wasm.to_owned(),
                source,
            },
        )
    })
}

impl Shared {
    /// Registers and starts an actor from a loaded module: its cells, mailboxes, subscriptions
    /// and one task per instance on the lanes.
    pub(crate) fn start_group(
        self: &Arc<Self>,
        name: &str,
        spec: &ActorSpec,
        module: Arc<ActorModule>,
        settings: Arc<Settings>,
        patterns: Vec<(Pattern, Policy)>,
    ) -> Result<Arc<ActorGroup>, DeployError> {
        let (group, ios) = self.new_group(name, spec, module, settings);
        match self.registry.actors.entry(group.name.clone()) {
            dashmap::Entry::Occupied(_) => return Err(DeployError::Duplicate(name.to_owned())),
            dashmap::Entry::Vacant(v) => {
                v.insert(group.clone());
            }
        }
        for (pattern, policy) in patterns {
            self.pubsub
                .subscribe(pattern, SubTarget::Group(group.cells.clone()), policy);
        }
        self.spawn_cells(&group, ios);
        Ok(group)
    }

    /// A group named `name` with the instances, mailboxes and idle timeout of `spec` and
    /// `settings` (built from `spec`, or shared by the activations of a virtual actor type), with
    /// its cells and their mailboxes, neither registered nor running.
    pub(crate) fn new_group(
        &self,
        name: &str,
        spec: &ActorSpec,
        module: Arc<ActorModule>,
        settings: Arc<Settings>,
    ) -> (Arc<ActorGroup>, Vec<InstanceIo>) {
        let name: Arc<str> = Arc::from(name);
        let instances = spec.instances.max(1);
        // Exact: a vector's first growth makes room for four.
        let mut cells = Vec::with_capacity(instances as usize);
        let mut ios = Vec::with_capacity(instances as usize);
        for instance in 0..instances {
            let (tx, rx) = mailbox(spec.limits.mailbox);
            let id = self.next_actor.fetch_add(1, Ordering::Relaxed) + 1;
            cells.push(Arc::new(ActorCell::new(
                id,
                name.clone(),
                instance,
                tx,
                module.clone(),
                spec.limits.max_message_bytes,
            )));
            ios.push(InstanceIo {
                mailbox: rx,
                peeked: None,
            });
        }
        let group = Arc::new(ActorGroup {
            name,
            cells,
            module,
            settings,
            supervisor: std::sync::OnceLock::new(),
            watchers: Mutex::default(),
            idle_timeout: spec.virtual_idle,
        });
        (group, ios)
    }

    /// Starts the pool of instances prepared for the virtual actor type or spawnable module
    /// `name` (`spec.prepared_instances`, else the host's default); `None` when that is zero.
    pub(crate) fn start_prepared(
        self: &Arc<Self>,
        name: &str,
        module: &Arc<ActorModule>,
        spec: &ActorSpec,
    ) -> Option<Arc<crate::prepared::Pool>> {
        let size = spec.prepared_instances.unwrap_or(self.prepared_size);
        if size == 0 {
            return None;
        }
        let pool = crate::prepared::Pool::start(self, name, module.clone(), spec, size);
        self.prepared.lock().unwrap().push(pool.clone());
        Some(pool)
    }

    /// Closes a pool of prepared instances no actor will start from any more.
    fn retire_prepared(&self, pool: &Arc<crate::prepared::Pool>) {
        pool.close();
        self.prepared
            .lock()
            .unwrap()
            .retain(|p| !Arc::ptr_eq(p, pool));
    }

    /// Drops every prepared instance and prepares no more. They hold the host
    /// (`ActorState::host`), so a host must do this when it stops, or it would never be freed.
    pub(crate) fn close_prepared(&self) {
        let pools = std::mem::take(&mut *self.prepared.lock().unwrap());
        pools.iter().for_each(|p| p.close());
    }

    /// Starts one task per cell of `group` on the lanes.
    pub(crate) fn spawn_cells(self: &Arc<Self>, group: &Arc<ActorGroup>, ios: Vec<InstanceIo>) {
        for (cell, io) in group.cells.iter().zip(ios) {
            self.lanes
                .spawn(run_cell(self.clone(), group.clone(), cell.clone(), io));
        }
    }

    /// A new trace context for a message that enters from outside (a client, the gateway).
    pub(crate) fn new_trace(&self) -> TraceContext {
        self.traces.next()
    }

    /// Builds the envelope of an outgoing message.
    pub(crate) fn envelope(
        &self,
        out: Outbound,
        chain: Vec<u64>,
        deadline_ms: Option<u64>,
        trace: Option<TraceContext>,
        sender: Option<String>,
        subject: Option<String>,
    ) -> Envelope {
        let (id, trace) = self.stamp(trace);
        Envelope {
            id,
            msg_type: out.msg_type,
            codec: out.codec,
            reply: None,
            deadline_ms,
            chain,
            trace,
            sender,
            subject,
            idempotency_key: out.idempotency_key,
            attachments: Vec::new(),
            ext: out.ext,
            payload: out.payload,
            stream: None,
        }
    }

    /// Builds the envelope of a message a guest sends, copying what it keeps out of the guest's
    /// memory (like [`Shared::envelope`], which takes an owned `Outbound`). Written into an
    /// envelope this thread kept ([`crate::spare`]) when there is one, reusing its allocation
    /// and its buffers; into a new one otherwise.
    pub(crate) fn envelope_of(
        &self,
        out: &OutboundView<'_>,
        chain: Vec<u64>,
        deadline_ms: Option<u64>,
        trace: Option<TraceContext>,
        sender: &str,
    ) -> Arc<Envelope> {
        let (id, trace) = self.stamp(trace);
        let mut env = crate::spare::take().unwrap_or_default();
        let e = Arc::get_mut(&mut env).expect("a kept envelope is not shared, a new one not yet");
        e.id = id;
        e.msg_type.clear();
        e.msg_type.push_str(out.msg_type);
        e.codec = out.codec;
        e.reply = None;
        e.deadline_ms = deadline_ms;
        e.chain = chain;
        e.trace = trace;
        let kept = e.sender.get_or_insert_default();
        kept.clear();
        kept.push_str(sender);
        e.subject = None;
        e.idempotency_key = out.idempotency_key.map(ToOwned::to_owned);
        e.attachments.clear();
        // Most messages have none: the kept envelope's empty vector stays (a new one built and
        // moved in would be stored and read back at once, a store-forwarding stall).
        if out.ext.is_empty() {
            e.ext.clear();
        } else {
            e.ext = out.ext.to_vec();
        }
        e.payload.clear();
        e.payload.extend_from_slice(out.payload);
        e.stream = None;
        env
    }

    /// A new message id, and the trace context of a message with it (its own span).
    fn stamp(&self, trace: Option<TraceContext>) -> (u64, Option<TraceContext>) {
        let id = self.next_msg.fetch_add(1, Ordering::Relaxed) + 1;
        let trace = trace.map(|t| TraceContext {
            span_id: id.to_le_bytes(),
            ..t
        });
        (id, trace)
    }

    /// Delivers a published message to every matching subscription: into the mailbox when there
    /// is room; otherwise kept for the publisher to wait on (`wait` policy with a waiting
    /// publisher), or dropped and counted (`drop-newest`, or a `try` publish).
    pub(crate) fn fanout(
        &self,
        out: Outbound,
        trace: Option<TraceContext>,
        publisher: &str,
        sender_hash: u64,
        wait: bool,
    ) -> Fanout {
        let subs = self.pubsub.matching(&out.target);
        let mut fanout = Fanout {
            delivered: 0,
            dropped: 0,
            full: 0,
            waiting: Vec::new(),
        };
        if subs.is_empty() {
            self.unroutable.fetch_add(1, Ordering::Relaxed);
            return fanout;
        }
        let subject = out.target.clone();
        let template = Arc::new(self.envelope(
            out,
            Vec::new(),
            None,
            trace,
            Some(publisher.to_owned()),
            Some(subject),
        ));
        for sub in subs.iter() {
            let cell = sub.target.pick(sender_hash);
            if !cell.accepts(&template.msg_type) || template.payload.len() > cell.max_message {
                cell.dead_letter();
                fanout.dropped += 1;
                continue;
            }
            let delivery = Delivery::shared(template.clone());
            match cell.tx.try_send(delivery) {
                Ok(()) => fanout.delivered += 1,
                Err(TrySendError::Full(d)) if wait && sub.policy == Policy::Wait => {
                    fanout.waiting.push((cell.tx.clone(), d));
                }
                Err(TrySendError::Full(_)) => {
                    cell.dead_letter();
                    fanout.dropped += 1;
                    fanout.full += 1;
                }
                Err(TrySendError::Closed(_)) => {}
            }
        }
        fanout
    }
}

/// A message from a client of the host (the CLI, a test, an embedding program).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientMessage {
    /// Who sends it (a principal name such as `cli`); actors see it as the sender.
    pub principal: String,
    /// The actor's name, or for [`Host::publish`] the subject.
    pub to: String,
    /// The message type's wire name; optional for actors with one handler (not for publish).
    pub msg_type: Option<String>,
    /// How `payload` is encoded.
    pub codec: Codec,
    /// The encoded message.
    pub payload: Vec<u8>,
    /// How long a request waits (the actor's `request_timeout` when `None`).
    pub timeout: Option<Duration>,
    /// Metadata for the envelope's extension list, such as the principal the HTTP gateway
    /// authenticated (`bunraku.principal.subject`) or HTTP headers it passes along.
    #[serde(default)]
    pub ext: Vec<bunraku_abi::Ext>,
    /// Spread messages over the actor's instances (round-robin) instead of sending every message
    /// of this principal to the same instance: load balancing for stateless actors, at the cost
    /// of the per-sender order. The HTTP gateway spreads.
    #[serde(default)]
    pub spread: bool,
}

impl ClientMessage {
    /// A JSON message from principal `cli`.
    pub fn json(to: impl Into<String>, msg_type: Option<&str>, value: &serde_json::Value) -> Self {
        Self {
            principal: "cli".into(),
            to: to.into(),
            msg_type: msg_type.map(str::to_owned),
            codec: Codec::Json,
            payload: value.to_string().into_bytes(),
            timeout: None,
            ext: Vec::new(),
            spread: false,
        }
    }

    /// The message as the host sends it on, and its principal.
    fn into_outbound(self, msg_type: String) -> (Outbound, String) {
        let out = Outbound {
            target: self.to,
            msg_type,
            codec: self.codec,
            payload: self.payload,
            ext: self.ext,
            ..Outbound::default()
        };
        (out, self.principal)
    }

    /// The same message with a timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// A successful reply to a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientReply {
    /// How `payload` is encoded (the request's codec).
    pub codec: Codec,
    /// The encoded reply.
    pub payload: Vec<u8>,
}

impl ClientReply {
    /// The reply as JSON (for a JSON request).
    pub fn json(&self) -> Result<serde_json::Value, CallError> {
        serde_json::from_slice(&self.payload).map_err(|e| CallError::Remote {
            code: bunraku_abi::ErrorCode::Malformed,
            message: format!("reply is not JSON: {e}"),
        })
    }
}

/// What a publish reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishReport {
    /// Subscribers that got the message.
    pub delivered: usize,
    /// Subscribers that did not (drop policy, no handler for the type, too large).
    pub dropped: usize,
}

/// One instance as `bunraku ps` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorStatus {
    /// The actor's name.
    pub name: String,
    /// Which instance.
    pub instance: u32,
    /// `starting`, `running`, `restarting` or `stopped`.
    pub phase: String,
    /// Messages waiting.
    pub mailbox: usize,
    /// The mailbox bound.
    pub mailbox_bound: usize,
    /// Messages handed to the guest.
    pub handled: u64,
    /// Restarts after failures.
    pub restarts: u64,
    /// Failures (traps, failed instantiations).
    pub failures: u64,
    /// Messages that could not be delivered to or handled by this instance.
    pub dead_letters: u64,
    /// Linear memory in bytes.
    pub memory: u64,
    /// Operations the instance is waiting on; each holds at most one message.
    pub pending: u64,
    /// The last failure, if any.
    pub last_failure: Option<String>,
    /// The message types it handles, with `?` after those that reply.
    pub handles: Vec<String>,
    /// The supervisor it is placed under, if any.
    #[serde(default)]
    pub supervisor: Option<String>,
    /// What the actor says about itself (`ctx.set_status`), such as a saga's `stuck: ...`.
    #[serde(default)]
    pub status: Option<String>,
}

/// A running host. Dropping it stops every actor.
///
/// Its client API acts for a *principal*, named in each [`ClientMessage`]: the CLI is `cli`
/// (granted everything unless [`Host::set_principal_grants`] or a manifest's `[principal.cli]`
/// says otherwise); any other principal may do nothing until granted.
pub struct Host {
    shared: Arc<Shared>,
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    handle: tokio::runtime::Handle,
    principals: crate::grants::Principals,
}

impl Host {
    /// Starts a host with no actors.
    pub fn new(config: HostConfig) -> Result<Self, HostError> {
        let engine = match config.engine {
            Some(engine) => engine,
            None => Engine::new(config.engine_config)?,
        };
        let mut linker = Linker::new(engine.wasmtime());
        crate::imports::register(&mut linker).map_err(|e| HostError::Linker(e.to_string()))?;
        crate::wasi::register(&mut linker).map_err(|e| HostError::Linker(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.guest_threads.max(1))
            .thread_name("bunraku-guest")
            .enable_all()
            .build()
            .map_err(HostError::Runtime)?;
        let handle = runtime.handle().clone();
        let lanes = crate::sched::Lanes::start(config.guest_threads, &handle)
            .map_err(HostError::Runtime)?;
        let (reminders, reminder_changes) = crate::reminders::Reminders::new();
        let shared = Arc::new(Shared {
            engine,
            linker,
            registry: Registry::default(),
            pubsub: PubSub::default(),
            logs: LogSink::new(config.clock.clone()),
            supervisors: Default::default(),
            spawnable: DashMap::new(),
            virtual_types: DashMap::new(),
            lanes,
            clock: config.clock,
            traces: TraceIds::new(&*config.entropy),
            entropy: config.entropy,
            store: LazyStore::new(config.data_dir, config.store),
            reminders,
            next_msg: AtomicU64::new(0),
            next_actor: AtomicU64::new(0),
            unroutable: AtomicU64::new(0),
            next_spread: AtomicU64::new(0),
            activations: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            starts: Default::default(),
            prepared: Mutex::default(),
            prepared_size: config.prepared_instances,
            warm_prepared: config.warm_prepared,
            modules: Default::default(),
        });
        handle.spawn(crate::reminders::run(
            Arc::downgrade(&shared),
            reminder_changes,
        ));
        if let Some(after) = config.idle_trim {
            handle.spawn(crate::trim::trim_idle(Arc::downgrade(&shared), after));
        }
        Ok(Self {
            shared,
            runtime: Mutex::new(Some(runtime)),
            handle,
            principals: crate::grants::Principals::default(),
        })
    }

    /// The engine this host runs on.
    pub fn engine(&self) -> &Engine {
        &self.shared.engine
    }

    /// The host's clock ([`HostConfig::clock`]): request timeouts, backoff, timers, idle
    /// deactivation, the gateway's rate limits and the guests' clocks read it.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.shared.clock
    }

    /// The actors' log lines.
    pub fn logs(&self) -> &LogSink {
        &self.shared.logs
    }

    /// The data directory ([`HostConfig::data_dir`]), if the host has one.
    pub fn data_dir(&self) -> Option<&Path> {
        self.shared.store.dir()
    }

    /// The embedded store holding the actors' persisted state, opened now if no actor used it
    /// yet. Fails when the host has no data directory or the store cannot be opened (a failed
    /// open is not retried).
    pub fn store(&self) -> Result<&Store, StoreError> {
        self.shared.store.get()
    }

    /// Replaces what `principal` may do through the client API ([`Host::request`],
    /// [`Host::send`], [`Host::publish`]); only its `send` and `publish` grants apply.
    pub fn set_principal_grants(&self, principal: &str, grants: Grants) {
        self.principals.set(principal, grants);
    }

    /// What `principal` may do through the client API (nothing for a principal never granted).
    pub fn principal_grants(&self, principal: &str) -> Grants {
        self.principals.get(principal)
    }

    /// Builds (when stale) and deploys every actor of a manifest, in order, after granting its
    /// `[principal.*]` tables.
    pub fn deploy_manifest(
        &self,
        manifest: &Manifest,
        opts: &BuildOptions,
    ) -> Result<(), DeployError> {
        for (principal, grants) in &manifest.principals {
            self.set_principal_grants(principal, grants.clone());
        }
        let build = |spec: &ActorSpec| {
            resolve_module(&spec.module, opts).map_err(|source| DeployError::Build {
                actor: spec.name.clone(),
                source,
            })
        };
        // Supervised actors start in their trees' start order (depth first), each running before
        // the next starts; the others follow in file order.
        for spec in manifest.start_order() {
            let path = build(spec)?;
            self.deploy(spec, &path)?;
            if manifest.is_supervised(&spec.name) {
                self.wait_started(&spec.name);
            }
        }
        self.supervise(&manifest.supervisors)?;
        for spec in &manifest.spawnables {
            let path = build(spec)?;
            self.define_spawnable(&spec.name, spec, &path)?;
        }
        self.start_reminders();
        Ok(())
    }

    /// Lets durable reminders fire. Until then the host keeps them (those set meanwhile too),
    /// so that a reminder that came due while the host was down finds its actor, and the
    /// actors that one talks to, deployed. [`deploy_manifest`](Self::deploy_manifest) calls it
    /// once everything is deployed; a program that deploys actors one by one calls it after the
    /// last. Calling it again does nothing.
    pub fn start_reminders(&self) {
        self.shared.reminders.open();
    }

    /// Waits (up to 5 s) until every instance of actor `name` has run its first entry (its
    /// `on_start`), or has failed: how a manifest's supervised actors start one after the other.
    pub fn wait_started(&self, name: &str) {
        let Some(group) = self.shared.registry.lookup(name) else {
            return;
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline
            && group.cells.iter().any(|c| {
                !c.booted.load(Ordering::SeqCst)
                    && c.phase() != crate::actor::ActorPhase::Stopped
                    && c.stats.failures.load(Ordering::Relaxed) == 0
            })
        {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Deploys one actor from a `.wasm` file.
    pub fn deploy(&self, spec: &ActorSpec, wasm: &Path) -> Result<(), DeployError> {
        let bytes = read_wasm(&spec.name, wasm)?;
        self.deploy_bytes(spec, &bytes).map_err(|e| match e {
            DeployError::Load { source, .. } => load_error(&spec.name, wasm, source),
            other => other,
        })
    }

    /// Deploys one actor from module bytes.
    pub fn deploy_bytes(&self, spec: &ActorSpec, wasm: &[u8]) -> Result<(), DeployError> {
        let load_err = |source| DeployError::Load {
            actor: spec.name.clone(),
            module: "<bytes>".into(),
            source,
        };
        if self.shared.registry.actors.contains_key(spec.name.as_str()) {
            return Err(DeployError::Duplicate(spec.name.clone()));
        }
        let patterns = spec
            .subscriptions
            .iter()
            .map(|s| Pattern::parse(&s.pattern).map(|p| (p, s.policy)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| DeployError::Subject {
                actor: spec.name.clone(),
                source,
            })?;
        let module = self.load_module(wasm).map_err(load_err)?;
        if spec.virtual_idle.is_some() {
            // A virtual actor type: nothing runs until a message for `NAME/KEY` arrives.
            if self.shared.virtual_types.contains_key(&spec.name) {
                return Err(DeployError::Duplicate(spec.name.clone()));
            }
            let first = self.shared.virtual_types.is_empty();
            let prepared = self.shared.start_prepared(&spec.name, &module, spec);
            let kind = VirtualType {
                module,
                spec: spec.clone(),
                settings: Settings::of(spec, prepared),
            };
            self.shared
                .virtual_types
                .insert(spec.name.clone(), Arc::new(kind));
            if first {
                self.handle
                    .spawn(crate::activation::deactivate_idle(Arc::downgrade(
                        &self.shared,
                    )));
            }
            tracing::info!(actor = %spec.name, "virtual actor type deployed");
            return Ok(());
        }
        self.shared
            .start_group(&spec.name, spec, module, Settings::of(spec, None), patterns)?;
        tracing::info!(actor = %spec.name, instances = spec.instances, "deployed");
        Ok(())
    }

    fn load_module(&self, wasm: &[u8]) -> Result<Arc<ActorModule>, LoadError> {
        self.shared.modules.get_or_load(wasm, || {
            ActorModule::load(&self.shared.engine, &self.shared.linker, wasm)
        })
    }

    /// Kills an actor: like [`stop_actor`](Self::stop_actor), but its instances end at their
    /// next turn without running `on_stop` (requesters waiting on them hear `target failed`).
    /// A guest busy inside a handler ends at its time budget at the latest. Like a stop, a kill
    /// does not wait in the mailbox, so it reaches an actor whose mailbox is full.
    pub fn kill_actor(&self, name: &str) -> Result<(), CallError> {
        let group = self
            .shared
            .registry
            .lookup(name)
            .ok_or_else(|| CallError::NoSuchActor(name.to_owned()))?;
        self.stop_actor(name)?;
        group.cells.iter().for_each(|c| c.kill_instance());
        Ok(())
    }

    /// Stops an actor (every instance runs `on_stop`) and removes its name.
    pub fn stop_actor(&self, name: &str) -> Result<(), CallError> {
        let (_, group) = self
            .shared
            .registry
            .actors
            .remove(name)
            .ok_or_else(|| CallError::NoSuchActor(name.to_owned()))?;
        self.shared.pubsub.unsubscribe_actor(name);
        group.cells.iter().for_each(|c| c.request_stop());
        Ok(())
    }

    fn target(&self, msg: &ClientMessage) -> Result<(Arc<ActorGroup>, String), CallError> {
        if !self.principals.may_send(&msg.principal, &msg.to) {
            return Err(CallError::Denied);
        }
        let group = self
            .shared
            .resolve(&msg.to)
            .ok_or_else(|| CallError::NoSuchActor(msg.to.clone()))?;
        let known = || {
            group
                .descriptor()
                .messages
                .iter()
                .map(|m| m.name.clone())
                .collect()
        };
        let msg_type = match &msg.msg_type {
            Some(t) if group.kind_of(t).is_some() => t.clone(),
            Some(t) => {
                return Err(CallError::UnknownType {
                    actor: msg.to.clone(),
                    msg_type: t.clone(),
                    known: known(),
                });
            }
            None => match group.descriptor().messages.as_slice() {
                [only] => only.name.clone(),
                _ => {
                    return Err(CallError::TypeRequired {
                        actor: msg.to.clone(),
                        known: known(),
                    });
                }
            },
        };
        if msg.payload.len() > group.settings.limits.max_message_bytes {
            return Err(CallError::TooLarge {
                size: msg.payload.len(),
                limit: group.settings.limits.max_message_bytes,
            });
        }
        Ok((group, msg_type))
    }

    fn client_envelope(
        &self,
        msg: ClientMessage,
        msg_type: String,
        deadline_ms: Option<u64>,
    ) -> Envelope {
        let (out, principal) = msg.into_outbound(msg_type);
        let trace = Some(self.shared.new_trace());
        self.shared
            .envelope(out, Vec::new(), deadline_ms, trace, Some(principal), None)
    }

    /// Which instance a client message goes to: the principal's (per-sender order), or the
    /// next one round-robin when the message asks to be spread.
    fn sender_hash(&self, msg: &ClientMessage) -> u64 {
        if msg.spread {
            self.shared.next_spread.fetch_add(1, Ordering::Relaxed)
        } else {
            hash_name(&msg.principal)
        }
    }

    /// Sends a request and waits for the reply or the deadline.
    pub async fn request(&self, msg: ClientMessage) -> Result<ClientReply, CallError> {
        let (group, msg_type) = self.target(&msg)?;
        let timeout = msg.timeout.unwrap_or(group.settings.limits.request_timeout);
        let hash = self.sender_hash(&msg);
        let name = group.name.clone();
        let deadline = self.shared.clock.unix_now() + timeout;
        let env = self.client_envelope(msg, msg_type, Some(deadline.as_millis() as u64));
        let (tx, rx) = oneshot::channel();
        let delivery = Delivery {
            reply: Some(tx),
            ..Delivery::new(env)
        };
        let exchange = async {
            self.shared
                .clone()
                .deliver_waiting(group, hash, delivery)
                .await
                .map_err(|_| CallError::NoSuchActor(name.to_string()))?;
            rx.await.map_err(|_| CallError::TargetFailed)
        };
        let body = tokio::select! {
            r = exchange => r?,
            () = self.shared.clock.sleep(timeout) => {
                return Err(CallError::Timeout(timeout.as_millis() as u64));
            }
        };
        match body {
            ReplyBody::Ok { codec, payload } => Ok(ClientReply { codec, payload }),
            ReplyBody::Error { code, message } => Err(CallError::Remote { code, message }),
        }
    }

    /// Sends a one-way message, waiting for room in the mailbox.
    pub async fn send(&self, msg: ClientMessage) -> Result<(), CallError> {
        let (group, msg_type) = self.target(&msg)?;
        let hash = self.sender_hash(&msg);
        let name = group.name.clone();
        let env = self.client_envelope(msg, msg_type, None);
        let delivery = Delivery::new(env);
        self.shared
            .clone()
            .deliver_waiting(group, hash, delivery)
            .await
            .map_err(|_| CallError::NoSuchActor(name.to_string()))
    }

    /// Publishes to a subject (`msg.to`), waiting for room where the subscription says so.
    pub async fn publish(&self, msg: ClientMessage) -> Result<PublishReport, CallError> {
        validate_subject(&msg.to)?;
        if !self.principals.may_publish(&msg.principal, &msg.to) {
            return Err(CallError::Denied);
        }
        let msg_type = msg
            .msg_type
            .clone()
            .ok_or_else(|| CallError::TypeRequired {
                actor: format!("subject {}", msg.to),
                known: Vec::new(),
            })?;
        let (out, principal) = msg.into_outbound(msg_type);
        let trace = Some(self.shared.new_trace());
        let fanout = self
            .shared
            .fanout(out, trace, &principal, hash_name(&principal), true);
        let mut report = PublishReport {
            delivered: fanout.delivered,
            dropped: fanout.dropped,
        };
        for (tx, d) in fanout.waiting {
            match tx.send(d).await {
                Ok(()) => report.delivered += 1,
                Err(_) => report.dropped += 1,
            }
        }
        Ok(report)
    }

    /// Convenience for tests and embedders: a JSON request, JSON reply.
    pub async fn call_json(
        &self,
        to: &str,
        msg_type: Option<&str>,
        value: serde_json::Value,
    ) -> Result<serde_json::Value, CallError> {
        self.request(ClientMessage::json(to, msg_type, &value))
            .await?
            .json()
    }

    /// Declares a module actors may start at run time with `ctx.spawn(name, ..)`: `template`
    /// gives the settings (limits, restart, grants, subscriptions) every actor spawned from it
    /// gets; its `name` and `config` are replaced by the spawner's. Spawning also needs the
    /// spawner's `spawn` grant.
    pub fn define_spawnable(
        &self,
        name: &str,
        template: &ActorSpec,
        wasm: &Path,
    ) -> Result<(), DeployError> {
        let bytes = read_wasm(name, wasm)?;
        let module = self
            .load_module(&bytes)
            .map_err(|source| load_error(name, wasm, source))?;
        let prepared = self.shared.start_prepared(name, &module, template);
        let spawnable = Spawnable {
            module,
            template: template.clone(),
            prepared,
        };
        let replaced = self
            .shared
            .spawnable
            .insert(name.to_owned(), Arc::new(spawnable));
        if let Some(pool) = replaced.and_then(|old| old.prepared.clone()) {
            self.shared.retire_prepared(&pool);
        }
        Ok(())
    }

    /// Places deployed actors under supervisors (see [`SupervisorSpec`]): from now on their
    /// exits are reported to their supervisor, which restarts them by its strategy and gives up
    /// past its intensity. Children must be deployed first; a spec may name supervisors declared
    /// in the same call as children. Nothing changes when the specs are refused.
    ///
    /// [`SupervisorSpec`]: crate::supervision::SupervisorSpec
    pub fn supervise(
        &self,
        specs: &[crate::supervision::SupervisorSpec],
    ) -> Result<(), crate::supervision::SupervisionError> {
        self.shared
            .supervisors
            .add(specs, &self.shared, &self.handle)
    }

    /// Completes when the top of a supervision tree gave up, with the reason; `bunraku run` then
    /// stops the host and exits non-zero. Never completes while every tree holds.
    pub async fn fatal(&self) -> String {
        let mut rx = self.shared.supervisors.fatal.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            // The sender lives as long as the host.
            Err(_) => std::future::pending().await,
        }
    }

    /// The reason the top of a supervision tree gave up, if one did.
    pub fn fatal_error(&self) -> Option<String> {
        self.shared.supervisors.fatal.borrow().clone()
    }

    /// Every instance's status, sorted by name and instance.
    pub fn actors(&self) -> Vec<ActorStatus> {
        let mut out: Vec<ActorStatus> = Vec::new();
        for entry in self.shared.registry.actors.iter() {
            let group = entry.value();
            let handles: Vec<String> = group
                .descriptor()
                .messages
                .iter()
                .map(|m| match m.kind {
                    HandlerKind::Request => format!("{}?", m.name),
                    HandlerKind::Message => m.name.clone(),
                })
                .collect();
            for cell in &group.cells {
                let s = &cell.stats;
                out.push(ActorStatus {
                    name: cell.name.to_string(),
                    instance: cell.instance,
                    phase: cell.phase().as_str().into(),
                    mailbox: cell.mailbox_depth(),
                    mailbox_bound: cell.tx.max_capacity(),
                    handled: s.handled.load(Ordering::Relaxed),
                    restarts: s.restarts.load(Ordering::Relaxed),
                    failures: s.failures.load(Ordering::Relaxed),
                    dead_letters: s.dead_letters.load(Ordering::Relaxed),
                    memory: s.memory.load(Ordering::Relaxed),
                    pending: s.pending.load(Ordering::Relaxed),
                    last_failure: s.last_failure.lock().unwrap().clone(),
                    handles: handles.clone(),
                    supervisor: group.supervisor.get().map(|l| l.supervisor().to_owned()),
                    status: cell.status(),
                });
            }
        }
        out.sort_by(|a, b| (&a.name, a.instance).cmp(&(&b.name, b.instance)));
        out
    }

    /// The status of one actor's instances.
    pub fn actor(&self, name: &str) -> Vec<ActorStatus> {
        self.actors()
            .into_iter()
            .filter(|s| s.name == name)
            .collect()
    }

    /// Published messages that matched no subscription.
    pub fn unroutable(&self) -> u64 {
        self.shared.unroutable.load(Ordering::Relaxed)
    }

    /// The host-wide counters that `bunraku metrics` exports.
    pub fn totals(&self) -> crate::metrics::HostTotals {
        crate::metrics::HostTotals {
            unroutable: self.unroutable(),
            activations: self.shared.activations.load(Ordering::Relaxed),
            evictions: self.shared.evictions.load(Ordering::Relaxed),
            memory: self.shared.engine.memory_stats(),
            starts: self.shared.starts.snapshot(),
        }
    }

    /// The host's figures in the Prometheus text format (what `bunraku metrics` prints).
    pub fn metrics_text(&self) -> String {
        crate::metrics::render(&self.actors(), &self.totals())
    }

    /// Stops the host in three steps, all within `grace`: drains (actors keep handling what is
    /// in their mailboxes until every mailbox is empty and no operation is pending, for at most
    /// half of `grace`), stops supervision trees in reverse start order, then stops every other
    /// actor (each runs `on_stop`), and finally the runtime. Messages still queued at the end are
    /// dead letters.
    ///
    /// The deadlines are on the host's clock ([`HostConfig::clock`]), like every other wait of
    /// the runtime: under a [`ManualClock`](crate::clock::ManualClock) a drain that does not
    /// finish lasts until the clock is advanced past it. (How often the host looks whether the
    /// actors are done is real time: every few milliseconds.)
    pub fn shutdown(&self, grace: Duration) {
        let clock = self.shared.clock.clone();
        let start = clock.now();
        let (drain_until, deadline) = (start + grace / 2, start + grace);
        let busy = || {
            self.shared.registry.actors.iter().any(|g| {
                g.cells.iter().any(|c| {
                    c.phase() != crate::actor::ActorPhase::Stopped
                        && (c.mailbox_depth() > 0
                            || c.stats.pending.load(Ordering::Relaxed)
                                > c.stats.waiting_for_events.load(Ordering::Relaxed))
                })
            })
        };
        while clock.now() < drain_until && busy() {
            std::thread::sleep(SHUTDOWN_POLL);
        }
        // Supervised actors first, each tree in reverse start order.
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let shared = self.shared.clone();
        self.handle.spawn(async move {
            // Made here: the clock's timer belongs to the host's runtime.
            let until = shared.clock.sleep_until(deadline);
            tokio::select! {
                () = shared.supervisors.shutdown() => {}
                () = until => {}
            }
            let _ = done_tx.send(());
        });
        // An error only when the task was dropped with the runtime.
        let _ = done_rx.recv();
        let groups: Vec<_> = self
            .shared
            .registry
            .actors
            .iter()
            .map(|e| e.value().clone())
            .collect();
        self.shared.registry.actors.clear();
        for g in &groups {
            g.cells.iter().for_each(|c| c.request_stop());
        }
        while clock.now() < deadline
            && groups
                .iter()
                .flat_map(|g| &g.cells)
                .any(|c| c.phase() != crate::actor::ActorPhase::Stopped)
        {
            std::thread::sleep(SHUTDOWN_POLL);
        }
        self.shared.lanes.close();
        if let Some(rt) = self.runtime.lock().unwrap().take() {
            rt.shutdown_background();
        }
    }
}

/// How often [`Host::shutdown`] looks whether the actors are done (real time; its deadlines
/// are on the host's clock).
const SHUTDOWN_POLL: Duration = Duration::from_millis(5);

impl Drop for Host {
    fn drop(&mut self) {
        self.shared.close_prepared();
        if let Some(rt) = self.runtime.lock().unwrap().take() {
            for entry in self.shared.registry.actors.iter() {
                entry.value().cells.iter().for_each(|c| c.request_stop());
            }
            self.shared.lanes.close();
            rt.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::clock::SeededEntropy;

    #[test]
    fn trace_ids_are_distinct_and_reproducible_under_a_seed() {
        let a = TraceIds::new(&SeededEntropy::new(7));
        let b = TraceIds::new(&SeededEntropy::new(7));
        let c = TraceIds::new(&SeededEntropy::new(8));
        let mut traces = HashSet::new();
        let mut spans = HashSet::new();
        for _ in 0..100_000 {
            let (x, y, z) = (a.next(), b.next(), c.next());
            assert_eq!(x, y, "the same seed gives the same ids");
            assert_ne!(x.trace_id, z.trace_id, "another seed gives other ids");
            assert!(traces.insert(x.trace_id), "a trace id repeated");
            assert!(spans.insert(x.span_id), "a span id repeated");
        }
    }
}
