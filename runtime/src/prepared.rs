//! Prepared instances: instances of a virtual actor type or a spawnable module made ahead of
//! the actors that will run on them.
//!
//! Creating an instance's `Store` and instantiating its module take about half of an
//! activation (BENCHMARKS.md §5): linear memory, the data segments copied in, `_initialize`,
//! and the host memory of the instance, all faulted in for the first time. None of it depends
//! on the key, nor on the name and configuration a spawner gives an actor. So each virtual actor
//! type and each spawnable module keeps a few instances instantiated ahead (its manifest's
//! `prepared_instances`,
//! [`ActorSpec::prepared_instances`](crate::manifest::ActorSpec::prepared_instances); when that
//! is absent, [`HostConfig::prepared_instances`](crate::HostConfig::prepared_instances), default
//! [`DEFAULT_PREPARED`]), and an activation or a `ctx.spawn` (or the restart of either) takes
//! one instead of making its own: the instance is bound to its actor's cell and mailbox (the
//! pool travels in the actor's `Settings`), and its first entry runs `on_start` as usual. A task
//! on the guest lanes refills the pool after every take, one instance at a time, so the work
//! leaves the start's path but not the host.
//!
//! A prepared instance has run `_initialize` and, unless
//! [`HostConfig::warm_prepared`](crate::HostConfig::warm_prepared) is off, one entry with no
//! event: no `Start`, no message, so none of the actor's own code, and it is as fresh as one made
//! on the spot. That entry is the SDK's one-time set-up (its executor's state, its event buffer),
//! which would otherwise be paid by the activation's first entry. With it ahead, and the
//! function tables filled at instantiation, the first entry took 0.77–0.80 of its time side by
//! side (BENCHMARKS.md §5).
//!
//! While it waits, a prepared instance belongs to a placeholder actor named after its type or
//! spawnable module (what `_initialize` logs is tagged with that name), holds its linear memory
//! slot, and counts against the host's memory budget like any instance. When instantiating fails
//! (a memory wall, say), the pool stays short until the next take, and starts make their own
//! instances, which fail with the error that names the wall.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;
use wasmtime::{Store, TypedFunc};

use crate::actor::{ActorGroup, ActorState, InstanceIo, Settings};
use crate::host::Shared;
use crate::mailbox::mailbox;
use crate::manifest::ActorSpec;
use crate::module::ActorModule;

/// Prepared instances per virtual actor type or spawnable module unless the host is configured
/// otherwise.
pub const DEFAULT_PREPARED: usize = 4;

/// The most prepared instances a manifest may ask of one type or module: each holds an
/// instantiated module (its linear memory slot and about 75 KiB resident for a std guest) from
/// deploy on.
pub const MAX_PREPARED: usize = 1024;

/// An instantiated module waiting for an activation, with its entry point.
pub(crate) struct Prepared {
    pub(crate) store: Store<ActorState>,
    pub(crate) run: TypedFunc<(), i32>,
}

/// The prepared instances of one virtual actor type or spawnable module.
pub(crate) struct Pool {
    ready: Mutex<Vec<Prepared>>,
    size: usize,
    /// Wakes the refill task.
    wake: Notify,
    /// Set (under the `ready` lock) when the host stops: nothing is added any more.
    closed: AtomicBool,
}

impl Pool {
    /// Starts a pool of `size` instances of `module`, for the virtual type or spawnable module
    /// `name` with the settings of `spec`, and its refill task on the guest lanes, where it
    /// takes turns with the actors: a take wakes it from the starting actor's lane, so it runs
    /// there after that actor's entry rather than on another thread at the same time (which,
    /// with more threads than cores, slowed the activations it refills for).
    pub(crate) fn start(
        shared: &Arc<Shared>,
        name: &str,
        module: Arc<ActorModule>,
        spec: &ActorSpec,
        size: usize,
    ) -> Arc<Pool> {
        let pool = Arc::new(Pool {
            ready: Mutex::new(Vec::with_capacity(size.min(MAX_PREPARED))),
            size,
            wake: Notify::new(),
            closed: AtomicBool::new(false),
        });
        // The placeholder every waiting instance belongs to, made on the first refill.
        let placeholder = Placeholder {
            module,
            spec: ActorSpec {
                name: name.to_owned(),
                ..spec.clone()
            },
        };
        shared
            .lanes
            .spawn(refill(Arc::downgrade(shared), placeholder, pool.clone()));
        pool
    }

    /// A prepared instance, if one is ready; the refill task is told either way.
    pub(crate) fn take(&self) -> Option<Prepared> {
        let prepared = self.lock().pop();
        self.wake.notify_one();
        prepared
    }

    /// Adds a prepared instance; `false` (and it is dropped) once the pool is closed.
    fn put(&self, prepared: Prepared) -> bool {
        let mut ready = self.lock();
        if self.closed.load(Ordering::Relaxed) {
            return false;
        }
        ready.push(prepared);
        true
    }

    /// Drops every waiting instance and takes no more: they hold the host
    /// (`ActorState::host`), which would otherwise never be freed.
    pub(crate) fn close(&self) {
        let dropped = {
            let mut ready = self.lock();
            self.closed.store(true, Ordering::Relaxed);
            std::mem::take(&mut *ready)
        };
        drop(dropped);
        // A refill task waiting for the next take ends.
        self.wake.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Prepared>> {
        self.ready.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// What the waiting instances of a pool are made from.
struct Placeholder {
    module: Arc<ActorModule>,
    spec: ActorSpec,
}

/// Keeps `pool` full until the host is gone or the pool is closed: instantiates one instance at
/// a time, yielding to the guests in between, then waits for the next take.
async fn refill(shared: Weak<Shared>, from: Placeholder, pool: Arc<Pool>) {
    let mut placeholder: Option<Arc<ActorGroup>> = None;
    loop {
        loop {
            let Some(host) = shared.upgrade() else {
                return;
            };
            if pool.closed.load(Ordering::Relaxed) {
                return;
            }
            if pool.lock().len() >= pool.size {
                break;
            }
            let group = placeholder
                .get_or_insert_with(|| {
                    let settings = Settings::of(&from.spec, None);
                    let module = from.module.clone();
                    host.new_group(&from.spec.name, &from.spec, module, settings)
                        .0
                })
                .clone();
            match prepare(&host, &group, &from.module) {
                Ok(prepared) => {
                    if !pool.put(prepared) {
                        return;
                    }
                }
                Err(reason) => {
                    tracing::debug!(actor = %from.spec.name, "cannot prepare an instance: {reason}");
                    break;
                }
            }
            drop(host);
            tokio::task::yield_now().await;
        }
        pool.wake.notified().await;
    }
}

/// An instance of `module` for the placeholder `group`, instantiated, initialised and (with
/// `warm_prepared`) entered once with no event.
fn prepare(
    host: &Arc<Shared>,
    group: &Arc<ActorGroup>,
    module: &ActorModule,
) -> Result<Prepared, String> {
    let (_, rx) = mailbox(1);
    let io = InstanceIo {
        mailbox: rx,
        peeked: None,
    };
    let mut store = crate::actor::new_store(host, group, &group.cells[0], io);
    let run = module.instantiate(&mut store)?;
    if host.warm_prepared {
        let budget = store.data().budget_ticks;
        store.set_epoch_deadline(budget);
        run.call(&mut store, ())
            .map_err(|e| crate::actor::describe_trap(&store, &e))?;
    }
    Ok(Prepared { store, run })
}
