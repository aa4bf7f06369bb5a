//! Supervision at run time: the tasks that carry out [`supervisor`](crate::supervisor)'s
//! decisions on real actors.
//!
//! - Every instance slot (`ActorCell`) has a `Gate`. A supervisor *holds* the gate to stop the
//!   slot's instance (it runs `on_stop` and ends, the mailbox stays) and *releases* it to let the
//!   slot start a fresh instance. The slot reports when it is *parked* (no instance running).
//! - An actor placed under a supervisor gets a `Link`: when one of its instances ends on its own
//!   (a failure, or a normal exit through `Ctx::stop`), the slot holds its own gate, parks and
//!   reports the exit over the link, then waits for the supervisor's decision.
//! - Each supervisor is a `Node` with a task that receives its children's reports one at a
//!   time, asks its [`Supervisor`] what to do, and does it: stops children in reverse start
//!   order (each within the shutdown timeout), waits the backoff, starts children in start order
//!   (each started before the next). A supervisor that gives up reports a failure to its parent
//!   over its own link, exactly like an actor; the top of a tree giving up sets the host's fatal
//!   error, which `bunraku run` turns into a non-zero exit.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, watch};

use crate::actor::{ActorCell, ActorGroup, ActorPhase};
use crate::clock::{Clock, Entropy};
use crate::host::Shared;
use crate::manifest::RestartPolicy;
use crate::supervisor::{ChildSpec, Exit, Intensity, RestartType, Strategy, Supervisor};

/// How long a supervisor waits for a started child's instance to come up before it starts the
/// next child anyway.
const START_WAIT: Duration = Duration::from_secs(5);

/// A supervisor as the manifest (or the host API) declares it.
#[derive(Debug, Clone, PartialEq)]
pub struct SupervisorSpec {
    /// Its name, unique among supervisors and actors.
    pub name: String,
    /// Which children restart together.
    pub strategy: Strategy,
    /// How many restarts it tolerates before giving up.
    pub intensity: Intensity,
    /// Its children (actor or supervisor names) in start order, with their restart types.
    pub children: Vec<ChildSpec>,
    /// How long each child may take to stop before the supervisor moves on.
    pub shutdown_timeout: Duration,
    /// Its own restart type, when it is the child of another supervisor.
    pub restart: RestartType,
    /// The backoff before restarts (the failed child's consecutive restarts double it).
    pub backoff: RestartPolicy,
}

impl SupervisorSpec {
    /// A one-for-one supervisor with the default intensity, a 5 s shutdown timeout, the default
    /// backoff and `permanent` children.
    pub fn new(name: impl Into<String>, children: &[&str]) -> Self {
        Self {
            name: name.into(),
            strategy: Strategy::OneForOne,
            intensity: Intensity::default(),
            children: children
                .iter()
                .map(|c| ChildSpec {
                    name: (*c).to_owned(),
                    restart: RestartType::Permanent,
                })
                .collect(),
            shutdown_timeout: Duration::from_secs(5),
            restart: RestartType::Permanent,
            backoff: RestartPolicy::default(),
        }
    }
}

/// A supervision tree that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SupervisionError {
    /// A child names neither a deployed actor nor a declared supervisor.
    #[error(
        "supervisor `{supervisor}` names child `{child}`, which is neither an actor nor a supervisor"
    )]
    UnknownChild {
        /// The supervisor.
        supervisor: String,
        /// The name it gave.
        child: String,
    },
    /// A child is listed under two supervisors (or twice under one).
    #[error("`{child}` is a child of both `{first}` and `{second}`; a child has one supervisor")]
    TwoParents {
        /// The child.
        child: String,
        /// The first supervisor listing it.
        first: String,
        /// The second.
        second: String,
    },
    /// Two supervisors share a name, or a supervisor has an actor's name.
    #[error(
        "the name `{0}` is used twice (supervisor names are unique among actors and supervisors)"
    )]
    Duplicate(String),
    /// Supervisors contain each other.
    #[error("supervisor `{0}` is its own ancestor")]
    Cycle(String),
    /// The actor is already under a supervisor from an earlier call.
    #[error("actor `{0}` already has a supervisor")]
    AlreadySupervised(String),
}

/// The supervisor's hold on one instance slot, and the slot's report of whether an instance runs.
///
/// Two flags and one `Notify` inline in the cell: a cell is made for every activation, and two
/// `watch` channels here cost two allocations of ~0.5 KiB each (BENCHMARKS §5).
#[derive(Debug, Default)]
pub(crate) struct Gate {
    held: AtomicBool,
    /// An instance runs in the slot (the slot starts parked).
    running: AtomicBool,
    /// Notified on every change of either flag.
    changed: Notify,
}

impl Gate {
    pub(crate) fn is_held(&self) -> bool {
        self.held.load(Ordering::SeqCst)
    }

    pub(crate) fn hold(&self) {
        self.held.store(true, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    pub(crate) fn release(&self) {
        self.held.store(false, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// Completes once the gate is not held.
    pub(crate) async fn released(&self) {
        self.until(|gate| !gate.is_held()).await;
    }

    pub(crate) fn set_parked(&self, parked: bool) {
        self.running.store(!parked, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    pub(crate) fn is_parked(&self) -> bool {
        !self.running.load(Ordering::SeqCst)
    }

    /// Completes once no instance runs in the slot.
    async fn parked(&self) {
        self.until(Gate::is_parked).await;
    }

    /// Completes once `done` holds, looking again after every change.
    async fn until(&self, done: impl Fn(&Gate) -> bool) {
        loop {
            // Registered before the look, so a change right after it is not missed.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if done(self) {
                return;
            }
            changed.await;
        }
    }
}

/// What a child reports to its supervisor.
#[derive(Debug)]
struct Report {
    child: String,
    exit: Exit,
}

/// A child's line to its supervisor.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    child: Arc<str>,
    supervisor: Arc<str>,
    tx: mpsc::UnboundedSender<Report>,
}

impl Link {
    /// Reports that the child ended on its own.
    pub(crate) fn report(&self, exit: Exit) {
        // A supervisor that is gone (host shutting down) has nothing to decide.
        let _ = self.tx.send(Report {
            child: self.child.to_string(),
            exit,
        });
    }

    /// The supervisor's name.
    pub(crate) fn supervisor(&self) -> &str {
        &self.supervisor
    }
}

#[derive(Clone)]
enum Child {
    Actor(Arc<ActorGroup>),
    Supervisor(Arc<Node>),
}

struct NodeState {
    sup: Supervisor,
    /// False while its parent has it stopped, or after it gave up: reports are then ignored.
    active: bool,
}

/// One running supervisor.
pub(crate) struct Node {
    spec: SupervisorSpec,
    children: std::sync::Mutex<HashMap<String, Child>>,
    state: tokio::sync::Mutex<NodeState>,
    /// Where its children report.
    tx: mpsc::UnboundedSender<Report>,
    /// Its line to its parent; `None` at the top of a tree.
    parent: std::sync::OnceLock<Link>,
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
    fatal: Arc<watch::Sender<Option<String>>>,
}

impl Node {
    fn child(&self, name: &str) -> Option<Child> {
        self.children.lock().unwrap().get(name).cloned()
    }

    fn fresh_supervisor(&self) -> Supervisor {
        Supervisor::new(
            self.spec.strategy,
            self.spec.intensity,
            self.spec.backoff.clone(),
            self.spec.children.clone(),
            self.clock.now(),
        )
    }

    async fn handle(&self, report: Report) {
        let mut st = self.state.lock().await;
        if !st.active {
            return;
        }
        let now = self.clock.now();
        let random = self.entropy.next_u64();
        let plan = st
            .sup
            .child_exited(&report.child, &report.exit, now, random);
        tracing::info!(
            supervisor = %self.spec.name,
            child = %report.child,
            exit = ?report.exit,
            stop = ?plan.stop,
            start = ?plan.start,
            escalate = ?plan.escalate,
            "child exited"
        );
        if !plan.start.contains(&report.child) && plan.escalate.is_none() {
            // Not restarted: the child stays stopped for good.
            self.end_child(&report.child).await;
        }
        for name in &plan.stop {
            self.stop_child(name).await;
        }
        if let Some(reason) = plan.escalate {
            st.active = false;
            let reason = format!("supervisor `{}` gave up: {reason}", self.spec.name);
            tracing::error!("{reason}");
            match self.parent.get() {
                Some(parent) => parent.report(Exit::Failure(reason)),
                None => {
                    // The top of the tree: nobody restarts these children again.
                    for name in st.sup.shutdown_order() {
                        self.end_child(&name).await;
                    }
                    self.fatal.send_replace(Some(reason));
                }
            }
            return;
        }
        if !plan.delay.is_zero() {
            self.clock.sleep(plan.delay).await;
        }
        for name in &plan.start {
            self.start_child(name).await;
        }
    }

    /// Stops a child's instances (or, for a supervisor, its children in reverse start order),
    /// keeping mailboxes, until the child is started again.
    async fn stop_child(&self, name: &str) {
        match self.child(name) {
            Some(Child::Actor(group)) => {
                for cell in &group.cells {
                    cell.gate.hold();
                    cell.notify_stop();
                }
                for cell in &group.cells {
                    self.wait_parked(cell).await;
                }
            }
            Some(Child::Supervisor(node)) => Box::pin(node.stop_all()).await,
            None => {}
        }
    }

    /// Starts a child again: a fresh instance per slot (or, for a supervisor, a fresh restart
    /// history and all its children in start order).
    async fn start_child(&self, name: &str) {
        match self.child(name) {
            Some(Child::Actor(group)) => {
                for cell in &group.cells {
                    cell.gate.release();
                }
                for cell in &group.cells {
                    wait_started(cell).await;
                }
            }
            Some(Child::Supervisor(node)) => Box::pin(node.start_all()).await,
            None => {}
        }
    }

    /// A child that is not restarted: its slots end for good.
    async fn end_child(&self, name: &str) {
        match self.child(name) {
            Some(Child::Actor(group)) => group.cells.iter().for_each(|c| c.request_stop()),
            Some(Child::Supervisor(node)) => Box::pin(node.stop_all()).await,
            None => {}
        }
    }

    async fn wait_parked(&self, cell: &ActorCell) {
        let timeout = self.spec.shutdown_timeout;
        let timed_out = tokio::select! {
            _ = cell.gate.parked() => false,
            _ = self.clock.sleep(timeout) => true,
        };
        if timed_out {
            tracing::warn!(
                supervisor = %self.spec.name,
                actor = %cell.name,
                instance = cell.instance,
                "did not stop within its shutdown timeout of {timeout:?}: killed"
            );
            cell.kill_instance();
            cell.gate.parked().await;
        }
    }

    /// Stops every child in reverse start order and ignores reports until started again.
    async fn stop_all(&self) {
        let mut st = self.state.lock().await;
        st.active = false;
        for name in st.sup.shutdown_order() {
            self.stop_child(&name).await;
        }
    }

    /// Starts every child in start order with a fresh restart history.
    async fn start_all(&self) {
        let mut st = self.state.lock().await;
        st.sup = self.fresh_supervisor();
        st.active = true;
        let names: Vec<String> = st.sup.children().map(str::to_owned).collect();
        for name in names {
            self.start_child(&name).await;
        }
    }

    /// Ends the whole tree below this node for good, in reverse start order.
    async fn shutdown(&self) {
        let mut st = self.state.lock().await;
        st.active = false;
        for name in st.sup.shutdown_order() {
            match self.child(&name) {
                Some(Child::Actor(group)) => {
                    group.cells.iter().for_each(|c| c.request_stop());
                    for cell in &group.cells {
                        let stopped = async {
                            while cell.phase() != ActorPhase::Stopped {
                                tokio::time::sleep(Duration::from_millis(2)).await;
                            }
                        };
                        let timed_out = tokio::select! {
                            _ = stopped => false,
                            _ = self.clock.sleep(self.spec.shutdown_timeout) => true,
                        };
                        if timed_out {
                            tracing::warn!(actor = %cell.name, "did not stop within its shutdown timeout: killed");
                            cell.kill_instance();
                        }
                    }
                }
                Some(Child::Supervisor(node)) => Box::pin(node.shutdown()).await,
                None => {}
            }
        }
    }
}

/// Waits (bounded) until a released slot's new instance is up, so that start order holds.
async fn wait_started(cell: &ActorCell) {
    let up = async {
        // The slot un-parks when it starts an instance; it is up once its first entry (which
        // runs `on_start`) returned.
        loop {
            let phase = cell.phase();
            let booted = cell.booted.load(std::sync::atomic::Ordering::SeqCst);
            if !cell.gate.is_parked() && phase == ActorPhase::Running && booted
                || phase == ActorPhase::Stopped
                || cell.gate.is_parked() && cell.gate.is_held()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    let _ = tokio::time::timeout(START_WAIT, up).await;
}

/// Every supervisor of a host.
pub(crate) struct Tree {
    nodes: std::sync::Mutex<HashMap<String, Arc<Node>>>,
    /// Tops of trees, in declaration order.
    roots: std::sync::Mutex<Vec<Arc<Node>>>,
    /// Set when the top of a tree gives up.
    pub(crate) fatal: Arc<watch::Sender<Option<String>>>,
}

impl Default for Tree {
    fn default() -> Self {
        Self {
            nodes: Default::default(),
            roots: Default::default(),
            fatal: Arc::new(watch::Sender::new(None)),
        }
    }
}

impl Tree {
    /// Builds supervisors over deployed actors, links them and starts their tasks on `handle`.
    pub(crate) fn add(
        &self,
        specs: &[SupervisorSpec],
        shared: &Shared,
        handle: &tokio::runtime::Handle,
    ) -> Result<(), SupervisionError> {
        let fatal = &self.fatal;
        let mut nodes_guard = self.nodes.lock().unwrap();
        // Validate names and parents before touching anything.
        let by_name: HashMap<&str, &SupervisorSpec> =
            specs.iter().map(|s| (s.name.as_str(), s)).collect();
        let mut seen = HashSet::new();
        for s in specs {
            if !seen.insert(s.name.as_str())
                || nodes_guard.contains_key(&s.name)
                || shared.registry.lookup(&s.name).is_some()
            {
                return Err(SupervisionError::Duplicate(s.name.clone()));
            }
        }
        let mut parent_of: HashMap<&str, &str> = HashMap::new();
        for s in specs {
            for c in &s.children {
                let is_sup = by_name.contains_key(c.name.as_str());
                match shared.registry.lookup(&c.name) {
                    Some(g) if !is_sup => {
                        if g.supervisor.get().is_some() {
                            return Err(SupervisionError::AlreadySupervised(c.name.clone()));
                        }
                    }
                    None if is_sup => {}
                    _ => {
                        return Err(SupervisionError::UnknownChild {
                            supervisor: s.name.clone(),
                            child: c.name.clone(),
                        });
                    }
                }
                if let Some(first) = parent_of.insert(&c.name, &s.name) {
                    return Err(SupervisionError::TwoParents {
                        child: c.name.clone(),
                        first: first.to_owned(),
                        second: s.name.clone(),
                    });
                }
            }
        }
        for s in specs {
            let mut at = s.name.as_str();
            let mut steps = 0;
            while let Some(p) = parent_of.get(at) {
                at = p;
                steps += 1;
                if at == s.name || steps > specs.len() {
                    return Err(SupervisionError::Cycle(s.name.clone()));
                }
            }
        }

        // Build bottom-up: a node needs its child nodes.
        let mut built: HashMap<String, Arc<Node>> = HashMap::new();
        let mut receivers = Vec::new();
        fn build(
            name: &str,
            by_name: &HashMap<&str, &SupervisorSpec>,
            built: &mut HashMap<String, Arc<Node>>,
            receivers: &mut Vec<(Arc<Node>, mpsc::UnboundedReceiver<Report>)>,
            shared: &Shared,
            fatal: &Arc<watch::Sender<Option<String>>>,
        ) -> Arc<Node> {
            if let Some(n) = built.get(name) {
                return n.clone();
            }
            let spec = by_name[name];
            let mut children = HashMap::new();
            for c in &spec.children {
                let child = if by_name.contains_key(c.name.as_str()) {
                    Child::Supervisor(build(&c.name, by_name, built, receivers, shared, fatal))
                } else {
                    Child::Actor(shared.registry.lookup(&c.name).expect("validated above"))
                };
                children.insert(c.name.clone(), child);
            }
            let placeholder = Supervisor::new(
                spec.strategy,
                spec.intensity,
                Default::default(),
                Vec::new(),
                shared.clock.now(),
            );
            let (tx, rx) = mpsc::unbounded_channel();
            for c in &spec.children {
                let link = Link {
                    child: c.name.as_str().into(),
                    supervisor: spec.name.as_str().into(),
                    tx: tx.clone(),
                };
                match &children[&c.name] {
                    Child::Actor(group) => {
                        let _ = group.supervisor.set(link);
                    }
                    Child::Supervisor(child) => {
                        let _ = child.parent.set(link);
                    }
                }
            }
            let node = Arc::new(Node {
                spec: spec.clone(),
                children: std::sync::Mutex::new(children),
                state: tokio::sync::Mutex::new(NodeState {
                    sup: placeholder,
                    active: true,
                }),
                tx,
                parent: std::sync::OnceLock::new(),
                clock: shared.clock.clone(),
                entropy: shared.entropy.clone(),
                fatal: fatal.clone(),
            });
            node.state
                .try_lock()
                .expect("nobody else holds a new node")
                .sup = node.fresh_supervisor();
            receivers.push((node.clone(), rx));
            built.insert(name.to_owned(), node.clone());
            node
        }
        for s in specs {
            build(&s.name, &by_name, &mut built, &mut receivers, shared, fatal);
        }
        for (node, mut rx) in receivers {
            handle.spawn(async move {
                while let Some(report) = rx.recv().await {
                    node.handle(report).await;
                }
            });
        }
        let mut roots = self.roots.lock().unwrap();
        for s in specs {
            if !parent_of.contains_key(s.name.as_str()) {
                roots.push(built[&s.name].clone());
            }
        }
        nodes_guard.extend(built);
        Ok(())
    }

    /// Places a started actor under supervisor `supervisor` as its last child (for `spawn`).
    /// Refused when the supervisor is unknown or has given up.
    pub(crate) fn add_child(
        &self,
        supervisor: &str,
        spec: ChildSpec,
        group: Arc<ActorGroup>,
    ) -> bool {
        let Some(node) = self.nodes.lock().unwrap().get(supervisor).cloned() else {
            return false;
        };
        let Ok(mut st) = node.state.try_lock() else {
            // Busy restarting: the child stays unsupervised rather than wait here.
            return false;
        };
        if !st.active {
            return false;
        }
        let link = Link {
            child: spec.name.as_str().into(),
            supervisor: supervisor.into(),
            tx: node.tx.clone(),
        };
        if group.supervisor.set(link).is_err() {
            return false;
        }
        node.children
            .lock()
            .unwrap()
            .insert(spec.name.clone(), Child::Actor(group));
        st.sup.add_child(spec, node.clock.now());
        true
    }

    /// Stops every tree for good, each in reverse start order (the latest-declared tree first).
    pub(crate) async fn shutdown(&self) {
        let roots: Vec<_> = self.roots.lock().unwrap().iter().rev().cloned().collect();
        for root in roots {
            root.shutdown().await;
        }
    }
}
