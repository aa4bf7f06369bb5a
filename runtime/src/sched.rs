//! The guest lanes: the threads that run the actors' tasks (one [`run_cell`] future per
//! instance slot), so that a chain of handoffs between actors stays on one thread.
//!
//! A tokio multi-thread runtime runs a task that another task on the same worker woke from its
//! LIFO slot at most three times in a row; the fourth wake goes to the worker's queue and wakes
//! a parked worker, which takes the task over. Actor ping-pong is exactly such a chain, so there
//! every fourth message moved to the other worker, paying a thread wake-up and cold caches (see
//! `BENCHMARKS.md` §3 and the reading). The lanes keep the chain where it runs instead:
//!
//! - Each lane is a thread with a FIFO queue of tasks. A task woken on a lane thread (an actor's
//!   `send` wakes the receiver from inside the sender's entry) joins the back of that lane's
//!   queue; a task woken anywhere else (a client's request, a timer, a store acknowledgement)
//!   joins the shared inject queue.
//! - A lane polls its own queue first, the inject queue every [`INJECT_INTERVAL`] tasks or when
//!   its own is empty, then steals the oldest task of another lane's queue, and only then sleeps.
//! - A sleeping lane is woken only when there is work for two: something joins the inject queue,
//!   a lane's queue holds a task besides the one just added, or a lane starts a task while others
//!   wait behind it. A chain of one task waking the next keeps one lane busy and the others
//!   asleep; tasks queued when a lane starts a long entry, or two or more queued during it, are
//!   taken by another lane.
//! - A single task woken during a long entry is the one case that rule leaves waiting (as a task
//!   in tokio's LIFO slot waits for a long poll). The lanes' watchdog thread looks at every lane
//!   each [`WATCH_BUSY`] while any lane is awake ([`WATCH_IDLE`] while all sleep): a lane still in
//!   the same poll as at its last look, with tasks queued behind it, gets a sleeping lane woken,
//!   which takes them. So a task waits for another actor's long entry a few milliseconds at
//!   most, not up to that actor's time budget. Lanes only store a counter per poll for it.
//!
//! The lanes run outside tokio's scheduler, inside the guest runtime's context (its handle is
//! entered on each lane thread), so actors keep using tokio's timers, channels and `spawn`: a
//! timer firing on a runtime worker wakes its task through the inject queue. Tasks are not
//! tokio tasks, so tokio's cooperative budget does not apply to them; each poll is one guest
//! entry, bounded by the actor's time budget.
//!
//! A task's future and the wakers it handed out refer to each other (a mailbox holds its
//! receiver's waker, the receiver's future holds the mailbox), so a host ends its tasks
//! explicitly: [`Lanes::close`] drops every future that is still alive.
//!
//! [`run_cell`]: crate::actor::run_cell

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::Context;
use std::thread::Thread;
use std::time::Duration;

use futures::task::{ArcWake, waker_ref};

/// How many tasks a lane takes from its own queue before it looks at the inject queue (so that
/// a chain of local handoffs cannot starve work from outside).
pub(crate) const INJECT_INTERVAL: u32 = 31;

/// How often the watchdog looks at the lanes while any lane is awake.
pub(crate) const WATCH_BUSY: Duration = Duration::from_millis(2);

/// How often the watchdog looks while every lane sleeps.
pub(crate) const WATCH_IDLE: Duration = Duration::from_millis(50);

/// Native stack of a lane thread: wasm runs on it (up to the engine's `max_wasm_stack`, 512 KiB
/// by default) below the host's frames.
const LANE_STACK: usize = 4 << 20;

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

// Task states.
const IDLE: u8 = 0;
const SCHEDULED: u8 = 1;
const RUNNING: u8 = 2;
/// Woken while running: queued again once this poll returns.
const NOTIFIED: u8 = 3;
const DONE: u8 = 4;

/// The threads that run actor tasks. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Lanes {
    inner: Arc<Inner>,
}

struct Inner {
    lanes: Box<[Lane]>,
    inject: Mutex<VecDeque<Arc<Task>>>,
    /// Every task not yet finished, to drop at [`Lanes::close`].
    live: Mutex<HashMap<u64, Arc<Task>>>,
    next_id: AtomicU64,
    closed: AtomicBool,
}

struct Lane {
    queue: Mutex<VecDeque<Arc<Task>>>,
    /// Set before the lane parks, cleared by whoever wakes it (or by the lane itself).
    sleeping: AtomicBool,
    /// Polls started and ended by the lane (odd while it is in one), for the watchdog; written
    /// by the lane thread only.
    polls: AtomicU64,
    thread: std::sync::OnceLock<Thread>,
}

struct Task {
    id: u64,
    state: AtomicU8,
    future: Mutex<Option<BoxFuture>>,
    lanes: Weak<Inner>,
}

thread_local! {
    /// The lanes and the index of the lane this thread is, on a lane thread.
    static CURRENT: Cell<Option<(*const Inner, usize)>> = const { Cell::new(None) };
}

impl Lanes {
    /// Starts `count` lane threads (at least one), named `bunraku-guest-N`, each inside
    /// `runtime`'s context.
    pub(crate) fn start(count: usize, runtime: &tokio::runtime::Handle) -> std::io::Result<Self> {
        let inner = Arc::new(Inner {
            lanes: (0..count.max(1))
                .map(|_| Lane {
                    queue: Mutex::default(),
                    sleeping: AtomicBool::new(false),
                    polls: AtomicU64::new(0),
                    thread: std::sync::OnceLock::new(),
                })
                .collect(),
            inject: Mutex::default(),
            live: Mutex::default(),
            next_id: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        });
        for index in 0..inner.lanes.len() {
            let weak = Arc::downgrade(&inner);
            let runtime = runtime.clone();
            let handle = std::thread::Builder::new()
                .name(format!("bunraku-guest-{index}"))
                .stack_size(LANE_STACK)
                .spawn(move || {
                    // Known before the lane can first sleep: a waker that sees it asleep must
                    // find the thread to unpark.
                    if let Some(inner) = weak.upgrade() {
                        let _ = inner.lanes[index].thread.set(std::thread::current());
                    }
                    let _context = runtime.enter();
                    run_lane(&weak, index);
                })?;
            let _ = inner.lanes[index].thread.set(handle.thread().clone());
        }
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("bunraku-lanes-watch".into())
            .spawn(move || watch(&weak))?;
        Ok(Self { inner })
    }

    /// Runs `future` on the lanes: on this lane when called from one, else from the inject
    /// queue. After [`Lanes::close`] the future is dropped without running.
    pub(crate) fn spawn(&self, future: impl Future<Output = ()> + Send + 'static) {
        if self.inner.closed.load(Ordering::Acquire) {
            return;
        }
        let task = Arc::new(Task {
            id: self.inner.next_id.fetch_add(1, Ordering::Relaxed),
            state: AtomicU8::new(SCHEDULED),
            future: Mutex::new(Some(Box::pin(future))),
            lanes: Arc::downgrade(&self.inner),
        });
        self.inner
            .live
            .lock()
            .unwrap()
            .insert(task.id, task.clone());
        if self.inner.closed.load(Ordering::Acquire) {
            // Closed meanwhile, perhaps after `close` took the live tasks: drop it here.
            self.inner.live.lock().unwrap().remove(&task.id);
            return;
        }
        self.inner.schedule(task);
    }

    /// Stops the lanes and drops every future still alive (a future being polled is dropped
    /// once its poll returns). Idempotent.
    pub(crate) fn close(&self) {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        for lane in &self.inner.lanes {
            if let Some(thread) = lane.thread.get() {
                thread.unpark();
            }
        }
        let live: Vec<Arc<Task>> = self
            .inner
            .live
            .lock()
            .unwrap()
            .drain()
            .map(|(_, t)| t)
            .collect();
        let on_lane = CURRENT.with(Cell::get).is_some();
        for task in live {
            task.state.store(DONE, Ordering::Release);
            // On a lane thread, the task being polled holds its own lock: leave it to its lane.
            let future = if on_lane {
                task.future.try_lock().ok().and_then(|mut f| f.take())
            } else {
                task.future.lock().unwrap().take()
            };
            // Dropped outside the lock: destructors may wake other tasks.
            drop(future);
        }
        self.inner.inject.lock().unwrap().clear();
        for lane in &self.inner.lanes {
            lane.queue.lock().unwrap().clear();
        }
    }

    /// How many tasks are alive (spawned and not finished).
    #[cfg(test)]
    fn live(&self) -> usize {
        self.inner.live.lock().unwrap().len()
    }
}

impl Inner {
    /// Queues a task that was just made `SCHEDULED`.
    fn schedule(&self, task: Arc<Task>) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        match current_lane(self) {
            Some(index) => {
                let waiting = {
                    let mut queue = self.lanes[index].queue.lock().unwrap();
                    queue.push_back(task);
                    queue.len()
                };
                // More than the task just added: another lane can take one.
                if waiting > 1 {
                    self.wake_one(Some(index));
                }
            }
            None => {
                self.inject.lock().unwrap().push_back(task);
                self.wake_one(None);
            }
        }
    }

    /// Wakes one sleeping lane other than `except`, if any sleeps.
    fn wake_one(&self, except: Option<usize>) {
        for (index, lane) in self.lanes.iter().enumerate() {
            if Some(index) != except && lane.sleeping.swap(false, Ordering::SeqCst) {
                if let Some(thread) = lane.thread.get() {
                    thread.unpark();
                }
                return;
            }
        }
    }

    /// The next task for lane `index`: its own queue (the inject queue first every
    /// [`INJECT_INTERVAL`] tasks), then the inject queue, then another lane's oldest task; and
    /// whether more tasks wait in its own queue behind it.
    fn next_task(&self, index: usize, turn: u32) -> Option<(Arc<Task>, bool)> {
        let own = &self.lanes[index].queue;
        let inject = || self.inject.lock().unwrap().pop_front();
        if turn.is_multiple_of(INJECT_INTERVAL)
            && let Some(task) = inject()
        {
            return Some((task, !own.lock().unwrap().is_empty()));
        }
        {
            let mut queue = own.lock().unwrap();
            if let Some(task) = queue.pop_front() {
                return Some((task, !queue.is_empty()));
            }
        }
        // Its own queue was empty just now: nothing waits behind what it takes from elsewhere.
        if let Some(task) = inject() {
            return Some((task, false));
        }
        let n = self.lanes.len();
        (1..n).find_map(|k| {
            let stolen = self.lanes[(index + k) % n]
                .queue
                .lock()
                .unwrap()
                .pop_front();
            stolen.map(|task| (task, false))
        })
    }

    /// Whether any queue holds a task.
    fn has_work(&self) -> bool {
        !self.inject.lock().unwrap().is_empty()
            || self
                .lanes
                .iter()
                .any(|l| !l.queue.lock().unwrap().is_empty())
    }
}

/// The index of the lane of `inner` this thread is, if it is one.
fn current_lane(inner: &Inner) -> Option<usize> {
    CURRENT
        .with(Cell::get)
        .filter(|(lanes, _)| std::ptr::eq(*lanes, inner))
        .map(|(_, index)| index)
}

/// The watchdog: wakes a sleeping lane for the tasks queued behind a lane that has stayed in one
/// poll since its last look (see the module's docs), until the lanes close or are dropped.
fn watch(weak: &Weak<Inner>) {
    let mut seen: Vec<u64> = Vec::new();
    loop {
        let pause = {
            let Some(inner) = weak.upgrade() else {
                return;
            };
            if inner.closed.load(Ordering::Acquire) {
                return;
            }
            seen.resize(inner.lanes.len(), 0);
            let mut awake = false;
            for (index, lane) in inner.lanes.iter().enumerate() {
                let polls = lane.polls.load(Ordering::Acquire);
                let stuck = polls % 2 == 1 && polls == seen[index];
                if stuck && !lane.queue.lock().unwrap().is_empty() {
                    inner.wake_one(Some(index));
                }
                seen[index] = polls;
                awake |= !lane.sleeping.load(Ordering::Relaxed);
            }
            if awake { WATCH_BUSY } else { WATCH_IDLE }
        };
        std::thread::sleep(pause);
    }
}

/// The loop of lane `index`, until the lanes close or are dropped.
fn run_lane(weak: &Weak<Inner>, index: usize) {
    let mut turn: u32 = 0;
    let mut polls: u64 = 0;
    // Holding the lanes only while awake, so that dropped lanes are freed (and wake us).
    while let Some(inner) = weak.upgrade() {
        let lane = &inner.lanes[index];
        lane.sleeping.store(false, Ordering::SeqCst);
        CURRENT.with(|c| c.set(Some((Arc::as_ptr(&inner), index))));
        while !inner.closed.load(Ordering::Acquire) {
            if let Some((task, others_wait)) = inner.next_task(index, turn) {
                turn = turn.wrapping_add(1);
                // Others wait behind this task: let a sleeping lane take them meanwhile.
                if others_wait {
                    inner.wake_one(Some(index));
                }
                polls += 1;
                lane.polls.store(polls, Ordering::Release);
                task.run(&inner);
                polls += 1;
                lane.polls.store(polls, Ordering::Release);
                continue;
            }
            lane.sleeping.store(true, Ordering::SeqCst);
            // Work queued between the look above and the flag: do not sleep on it.
            if inner.has_work() {
                lane.sleeping.store(false, Ordering::SeqCst);
                continue;
            }
            break;
        }
        CURRENT.with(|c| c.set(None));
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        drop(inner);
        std::thread::park();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Lanes asleep wake up, find the lanes gone, and end.
        for lane in &self.lanes {
            if let Some(thread) = lane.thread.get() {
                thread.unpark();
            }
        }
    }
}

impl Task {
    /// Polls the task once on the calling lane (it is `SCHEDULED`).
    fn run(self: Arc<Self>, inner: &Inner) {
        if self
            .state
            .compare_exchange(SCHEDULED, RUNNING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // Closed meanwhile.
            return;
        }
        // A waker borrowed from this `Arc` for the poll: no reference count changes unless the
        // future keeps a clone.
        let waker = waker_ref(&self);
        let mut cx = Context::from_waker(&waker);
        let finished = {
            let mut slot = self.future.lock().unwrap();
            let Some(future) = slot.as_mut() else {
                // Dropped by `close`.
                return;
            };
            // A panic ends this task, not the lane and every task queued on it (as a panicking
            // tokio task ends only itself).
            let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                future.as_mut().poll(&mut cx)
            }));
            match polled {
                Ok(std::task::Poll::Pending) => None,
                Ok(std::task::Poll::Ready(())) => slot.take(),
                Err(_) => {
                    tracing::error!("a task on the guest lanes panicked and ended");
                    slot.take()
                }
            }
        };
        if let Some(future) = finished {
            self.state.store(DONE, Ordering::Release);
            inner.live.lock().unwrap().remove(&self.id);
            drop(future);
            return;
        }
        // Pending: idle, unless it was woken while it ran.
        if self
            .state
            .compare_exchange(RUNNING, IDLE, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
            && self
                .state
                .compare_exchange(NOTIFIED, SCHEDULED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            inner.schedule(self);
        }
    }
}

impl ArcWake for Task {
    fn wake_by_ref(task: &Arc<Self>) {
        let mut state = task.state.load(Ordering::Acquire);
        loop {
            let next = match state {
                IDLE => SCHEDULED,
                RUNNING => NOTIFIED,
                // Already queued, already to be queued again, or finished.
                _ => return,
            };
            match task
                .state
                .compare_exchange_weak(state, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(now) => state = now,
            }
        }
        if state != IDLE {
            return;
        }
        // Woken on a lane of its own lanes (an actor's `send` waking the receiver): that lane's
        // loop holds the lanes, so they are used in place, without upgrading the task's
        // reference (two read-modify-writes).
        let here = CURRENT.with(Cell::get);
        if let Some((lanes, _)) = here
            && std::ptr::eq(lanes, task.lanes.as_ptr())
        {
            // SAFETY: `CURRENT` holds a pointer to the lanes only while `run_lane` holds a
            // strong reference to them on this thread (it clears `CURRENT` before it drops it),
            // so they are alive for this call.
            let inner = unsafe { &*lanes };
            inner.schedule(task.clone());
        } else if let Some(inner) = task.lanes.upgrade() {
            inner.schedule(task.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::{Duration, Instant};

    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    }

    /// Waits until `done` holds, at most 10 s.
    fn wait_for(what: &str, done: impl Fn() -> bool) {
        let start = Instant::now();
        while !done() {
            assert!(start.elapsed() < Duration::from_secs(10), "{what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn thread_name() -> String {
        std::thread::current().name().unwrap_or_default().to_owned()
    }

    #[test]
    fn spawned_tasks_run_to_completion_and_are_forgotten() {
        let rt = runtime();
        let lanes = Lanes::start(2, rt.handle()).unwrap();
        let ran = Arc::new(AtomicUsize::new(0));
        for _ in 0..100 {
            let ran = ran.clone();
            lanes.spawn(async move {
                // A timer of the entered runtime, and a self-wake (woken while running).
                tokio::time::sleep(Duration::from_millis(1)).await;
                tokio::task::yield_now().await;
                ran.fetch_add(1, Ordering::SeqCst);
            });
        }
        wait_for("every task ran", || ran.load(Ordering::SeqCst) == 100);
        wait_for("finished tasks are dropped", || lanes.live() == 0);
        lanes.close();
    }

    #[test]
    fn a_chain_of_handoffs_stays_on_one_lane() {
        let rt = runtime();
        let lanes = Lanes::start(2, rt.handle()).unwrap();
        let (to_b, mut b_rx) = tokio::sync::mpsc::channel::<u32>(16);
        let (to_a, mut a_rx) = tokio::sync::mpsc::channel::<u32>(16);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let rounds = 10_000;
        lanes.spawn(async move {
            while let Some(n) = b_rx.recv().await {
                if to_a.send(n).await.is_err() {
                    return;
                }
            }
        });
        let log = seen.clone();
        lanes.spawn(async move {
            for n in 0..rounds {
                to_b.send(n).await.unwrap();
                assert_eq!(a_rx.recv().await, Some(n));
                log.lock().unwrap().push(thread_name());
            }
        });
        wait_for("the rally ended", || {
            seen.lock().unwrap().len() == rounds as usize
        });
        let seen = seen.lock().unwrap();
        let last = &seen[seen.len() - 1_000..];
        let on_one = last.iter().filter(|t| **t == last[0]).count();
        // tokio's scheduler would hand every fourth wake to the other worker.
        assert!(
            on_one >= 990,
            "{on_one} of the last 1,000 rounds on {}",
            last[0]
        );
        lanes.close();
    }

    /// A task on a lane queues `count` tasks on it, then blocks its lane until one of them ran
    /// elsewhere (at most 10 s); the lane that ran one, if any did.
    fn help_behind_a_long_poll(count: usize) {
        let rt = runtime();
        let lanes = Lanes::start(2, rt.handle()).unwrap();
        let helped = Arc::new(Mutex::new(None::<String>));
        let ended = Arc::new(AtomicBool::new(false));
        let (inner_lanes, seen, done) = (lanes.clone(), helped.clone(), ended.clone());
        lanes.spawn(async move {
            let me = thread_name();
            for _ in 0..count {
                let seen = seen.clone();
                inner_lanes.spawn(async move {
                    seen.lock().unwrap().get_or_insert_with(thread_name);
                });
            }
            let start = Instant::now();
            while seen.lock().unwrap().is_none() && start.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(1));
            }
            assert_ne!(seen.lock().unwrap().as_deref(), Some(me.as_str()));
            done.store(true, Ordering::SeqCst);
        });
        wait_for("the long poll ended", || ended.load(Ordering::SeqCst));
        assert!(
            helped.lock().unwrap().is_some(),
            "another lane took a task meanwhile"
        );
        lanes.close();
    }

    #[test]
    fn tasks_queued_behind_a_long_poll_are_taken_by_another_lane() {
        help_behind_a_long_poll(2);
    }

    /// One queued task does not wake another lane when it is queued; the watchdog does, once
    /// the poll in front of it has lasted past its look.
    #[test]
    fn a_single_task_queued_behind_a_long_poll_is_taken_by_another_lane() {
        help_behind_a_long_poll(1);
    }

    #[test]
    fn a_panicking_task_ends_alone_and_its_lane_runs_on() {
        let rt = runtime();
        let lanes = Lanes::start(1, rt.handle()).unwrap();
        lanes.spawn(async { panic!("a bug in a task") });
        let ran = Arc::new(AtomicBool::new(false));
        let r = ran.clone();
        lanes.spawn(async move { r.store(true, Ordering::SeqCst) });
        wait_for("the next task ran on the same lane", || {
            ran.load(Ordering::SeqCst)
        });
        wait_for("both tasks are forgotten", || lanes.live() == 0);
        lanes.close();
    }

    #[test]
    fn close_drops_the_futures_of_waiting_tasks() {
        struct Flag(Arc<AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let rt = runtime();
        let lanes = Lanes::start(1, rt.handle()).unwrap();
        let dropped = Arc::new(AtomicBool::new(false));
        let started = Arc::new(AtomicBool::new(false));
        let (flag, up) = (Flag(dropped.clone()), started.clone());
        lanes.spawn(async move {
            let _flag = flag;
            up.store(true, Ordering::SeqCst);
            std::future::pending::<()>().await;
        });
        wait_for("the task started", || started.load(Ordering::SeqCst));
        assert!(!dropped.load(Ordering::SeqCst));
        lanes.close();
        assert!(dropped.load(Ordering::SeqCst), "its future was dropped");
        assert_eq!(lanes.live(), 0);
        // After closing, new tasks are dropped without running.
        let ran = Arc::new(AtomicBool::new(false));
        let r = ran.clone();
        lanes.spawn(async move { r.store(true, Ordering::SeqCst) });
        std::thread::sleep(Duration::from_millis(20));
        assert!(!ran.load(Ordering::SeqCst));
    }
}
