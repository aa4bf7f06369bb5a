//! The guest-side executor: runs handlers as tasks that wait on host operations.
//!
//! The host calls `bunraku_run` whenever the actor has work; [`run`] pulls events with `next`
//! until there are none and returns how many tasks are still pending. Each event either starts a
//! task (`Start` runs `on_start`, `Message` an `async` handler, `Stop` runs `on_stop`) or resumes
//! one (`Completion`). A task is a boxed future. A `Message` for a handler that is a plain `fn`
//! runs it at once instead (`glue::handle_now`), with no task, unless an `async` handler holds
//! the actor's state across an await: then it is a task that waits for the state.
//!
//! Suspension points are the two futures here:
//! - [`Op`], an operation the host returned an id for (a request, a send waiting for room). It
//!   records which task waits for it; the `Completion` event stores the result and polls that
//!   task. Dropping an unfinished `Op` cancels it with the host.
//! - [`borrow`]/[`borrow_mut`] of the actor's state: a handler holds a `RefMut` across its awaits,
//!   so with a concurrency above one a second handler waits for the first to let go (instead of
//!   a `BorrowMutError`). Tasks waiting on the state are polled again after every poll that may
//!   have released it.
//!
//! Any other future a task awaits is woken the standard way: tasks are polled with a [`Waker`]
//! that names them, and a task woken by another (a `futures::channel::oneshot` completed by a
//! second handler, say) is polled again before the executor asks the host for the next event,
//! for up to [`WAKE_ROUNDS`] rounds in a row. A task still woken after that (one that yields in
//! a loop, [`crate::yield_now`]) is polled after the next event, or, when the host has none, in
//! the next entry, which the executor asks for with the `yield_now` import: a task that keeps
//! yielding lets the actor's other events and the other actors run, and each entry gets a
//! fresh time budget.
//! A wake from another thread (a guest has one) or, natively, while the testing harness has
//! another actor's state installed, is ignored.
//!
//! All state lives in one thread-local [`State`] (one actor instance per wasm module; one per
//! test thread natively). The testing harness swaps it in and out, so several test actors can
//! live on one thread. The state is never borrowed while user code or a host function runs.

use std::alloc::Layout;
use std::any::TypeId;
use std::cell::{Ref, RefCell, RefMut};
use std::collections::BTreeMap;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::ptr::NonNull;
use std::rc::Rc;
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

use bunraku_abi::view::{EnvelopeView, EventView};
use bunraku_abi::{Completion, ErrorCode, ReplyBody, decode_result, level};
use serde::Serialize;

use crate::{Actor, Ctx, Error, codec, sys};

/// A handler, `on_start` or `on_stop` in progress.
pub type Task = Pin<Box<dyn Future<Output = ()>>>;

/// A slot in [`State::tasks`]; reused once its task finished.
type TaskId = usize;

/// The event buffer starts this large.
const INITIAL_BUFFER: usize = 4 * 1024;
/// A buffer grown beyond this for one large event is released afterwards.
const KEPT_BUFFER: usize = 256 * 1024;
/// How many distinct sender and subject names [`intern`] keeps.
const INTERNED: usize = 16;
/// Rounds of polling woken tasks in one go. A task that is still woken after them (one that
/// yields, or wakes itself, in a loop) waits: the executor goes on with the host's events, and
/// when they run out it asks the host to enter it again (`yield_now`) rather than spin inside
/// one entry until its time budget traps it.
const WAKE_ROUNDS: usize = 16;

/// Who this instance is, from the `Start` event.
#[derive(Debug)]
pub(crate) struct Identity {
    pub(crate) name: String,
    pub(crate) instance: u32,
}

/// An operation the host is working on.
struct OpSlot {
    /// The task to poll when it completes.
    task: Option<TaskId>,
    /// Its outcome, once the `Completion` event arrived.
    result: Option<Completion>,
}

/// Everything the executor keeps between events.
pub(crate) struct State {
    /// Pending tasks by id (a slab: `None` is a free slot or a task being polled).
    tasks: Vec<Option<Task>>,
    /// Free slots of `tasks`.
    free: Vec<TaskId>,
    /// Tasks that returned Pending and have not finished yet.
    pending: usize,
    /// The task being polled.
    current: Option<TaskId>,
    ops: BTreeMap<u32, OpSlot>,
    /// Tasks waiting for the actor's state to be released.
    state_waiters: TaskQueue,
    /// Tasks woken through their [`Waker`] since they were last polled.
    woken: TaskQueue,
    /// Which state this is, for wakers: the testing harness swaps states on one thread.
    tag: StateTag,
    /// The leaked `RefCell<A>`, set by `Start`, with the `TypeId` of that `RefCell<A>`.
    ///
    /// Not a `&dyn Any`: its `downcast_ref` asks the type through the vtable, an indirect call
    /// (a `call_indirect` in wasm) on every message; a `TypeId` compares with a constant.
    actor: Option<(TypeId, NonNull<()>)>,
    /// Leaked, as the actor is: an instance starts once.
    identity: Option<&'static Identity>,
    buf: Vec<u8>,
    /// Recently seen sender and subject names, most recent first.
    names: Vec<Rc<str>>,
    /// The allocations of finished tasks, for the next tasks of the same layout.
    spare_tasks: TaskCache,
    /// Messages refused without a reply handle, for the testing harness.
    #[cfg(not(target_arch = "wasm32"))]
    rejected: Vec<(u64, Error)>,
}

/// Tasks to poll again, with an empty vector swapped in while they are polled (so that polling
/// them allocates nothing and they may queue again meanwhile).
struct TaskQueue {
    ids: Vec<TaskId>,
    spare: Vec<TaskId>,
}

impl TaskQueue {
    const EMPTY: TaskQueue = TaskQueue {
        ids: Vec::new(),
        spare: Vec::new(),
    };

    /// The queued tasks, leaving the queue empty; `None` when there are none.
    fn take(&mut self) -> Option<Vec<TaskId>> {
        if self.ids.is_empty() {
            return None;
        }
        let spare = std::mem::take(&mut self.spare);
        Some(std::mem::replace(&mut self.ids, spare))
    }

    /// Returns a vector from [`TaskQueue::take`] for reuse.
    fn give_back(&mut self, mut ids: Vec<TaskId>) {
        ids.clear();
        self.spare = ids;
    }
}

/// Memory of finished tasks, kept for the next task of the same size and alignment.
///
/// A handler's task is the one allocation the executor makes per message, and an actor's
/// messages go to a few handlers, so the memory one task leaves fits the next: reusing it skips
/// the allocator (in wasm, dlmalloc's `malloc` and `free` were about 3% of a ping-pong message).
struct TaskCache {
    free: Vec<(Layout, NonNull<u8>)>,
}

/// Most allocations a [`TaskCache`] keeps.
const SPARE_TASKS: usize = 8;

impl TaskCache {
    /// A kept allocation of exactly `layout`, if there is one.
    fn take(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        let at = self.free.iter().rposition(|(l, _)| *l == layout)?;
        Some(self.free.swap_remove(at).1)
    }

    /// Keeps `memory` (allocated by the global allocator with `layout`, holding nothing); gives
    /// it back when the cache is full.
    fn keep(&mut self, layout: Layout, memory: NonNull<u8>) -> Result<(), NonNull<u8>> {
        if self.free.len() >= SPARE_TASKS {
            return Err(memory);
        }
        self.free.push((layout, memory));
        Ok(())
    }
}

impl Drop for TaskCache {
    fn drop(&mut self) {
        for (layout, memory) in self.free.drain(..) {
            // SAFETY: kept only by `keep`, whose caller allocated it with `layout`.
            unsafe { std::alloc::dealloc(memory.as_ptr(), layout) };
        }
    }
}

/// `future` as a task, in the memory a finished task of the same layout left if there is one.
pub(crate) fn task<F: Future<Output = ()> + 'static>(future: F) -> Task {
    let layout = Layout::new::<F>();
    if layout.size() == 0 {
        return Box::pin(future);
    }
    // `try_with`: made while the state is borrowed (it is not, by the executor's rule), it
    // simply takes new memory.
    match try_with(|s| s.spare_tasks.take(layout)).flatten() {
        Some(memory) => {
            let slot = memory.cast::<F>().as_ptr();
            // SAFETY: the global allocator allocated `memory` with `Layout::new::<F>()` (a
            // layout equal to it), and it holds nothing: it is a `Box<F>`'s memory once `F` is
            // written into it.
            unsafe {
                slot.write(future);
                Box::into_pin(Box::from_raw(slot))
            }
        }
        None => Box::pin(future),
    }
}

/// Drops a finished task and keeps its memory for [`task`].
fn recycle(task: Task) {
    // SAFETY: the future is dropped in place before its memory is reused or freed, which is
    // all that pinning asks.
    let raw: *mut dyn Future<Output = ()> =
        Box::into_raw(unsafe { Pin::into_inner_unchecked(task) });
    // SAFETY: `raw` is a live, owned value until the `drop_in_place` below.
    let layout = Layout::for_value(unsafe { &*raw });
    // Its destructors may use the executor (an `Op` cancels), so the state is not borrowed here.
    unsafe { std::ptr::drop_in_place(raw) };
    let Some(memory) = NonNull::new(raw.cast::<u8>()) else {
        return;
    };
    if layout.size() == 0 {
        return;
    }
    let kept = try_with(|s| s.spare_tasks.keep(layout, memory)).unwrap_or(Err(memory));
    if let Err(memory) = kept {
        // SAFETY: a `Box`'s memory, allocated by the global allocator with `layout`.
        unsafe { std::alloc::dealloc(memory.as_ptr(), layout) };
    }
}

/// A number distinct for every [`State`] of the process.
#[derive(Clone, Copy, PartialEq, Eq)]
struct StateTag(usize);

impl Default for StateTag {
    fn default() -> Self {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        Self(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }
}

/// Task ids take the low half of a waker's data, the state's tag the high half (on wasm32, one
/// state per instance, the tag is not needed and ids get all 32 bits).
#[cfg(target_pointer_width = "64")]
const TAG_SHIFT: u32 = 32;

fn waker_data(tag: StateTag, id: TaskId) -> usize {
    #[cfg(target_pointer_width = "64")]
    return (tag.0 << TAG_SHIFT) | (id & ((1 << TAG_SHIFT) - 1));
    #[cfg(not(target_pointer_width = "64"))]
    return {
        let _ = tag;
        id
    };
}

/// Whether waker data `data` belongs to the state tagged `tag`, and the task it names.
fn waker_target(data: usize, tag: StateTag) -> Option<TaskId> {
    #[cfg(target_pointer_width = "64")]
    return ((data >> TAG_SHIFT) == (tag.0 & ((1 << TAG_SHIFT) - 1)))
        .then_some(data & ((1 << TAG_SHIFT) - 1));
    #[cfg(not(target_pointer_width = "64"))]
    return {
        let _ = tag;
        Some(data)
    };
}

/// The waker of task `id`: its data is the task and state, so it needs no allocation; waking
/// queues the task in `State::woken`.
fn task_waker(tag: StateTag, id: TaskId) -> Waker {
    fn raw(data: usize) -> RawWaker {
        RawWaker::new(data as *const (), &VTABLE)
    }
    fn wake(data: *const ()) {
        // `None` while the state is borrowed (a destructor run by the executor itself) or the
        // thread exits: nothing to poll then.
        let _ = try_with(|s| {
            if let Some(id) = waker_target(data as usize, s.tag) {
                s.woken.ids.push(id);
            }
        });
    }
    static VTABLE: RawWakerVTable =
        RawWakerVTable::new(|data| raw(data as usize), wake, wake, |_| {});
    // SAFETY: the vtable's functions only read the data as a number; none frees anything.
    unsafe { Waker::from_raw(raw(waker_data(tag, id))) }
}

impl State {
    /// The started actor, if it is an `A`.
    pub(crate) fn actor<A: Actor>(&self) -> Option<&'static RefCell<A>> {
        let (ty, cell) = self.actor?;
        // SAFETY: `cell` was made from a `&'static RefCell<T>` whose `TypeId` is `ty` (`start`),
        // so when `ty` is `RefCell<A>`'s, `T` is `A`; the cell is leaked, never freed.
        (ty == TypeId::of::<RefCell<A>>()).then(|| unsafe { cell.cast::<RefCell<A>>().as_ref() })
    }

    /// How many tasks are pending.
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn in_flight(&self) -> usize {
        self.pending
    }

    /// Takes the error of message `id` if it was refused.
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn take_rejected(&mut self, id: u64) -> Option<Error> {
        let at = self.rejected.iter().position(|(m, _)| *m == id)?;
        Some(self.rejected.remove(at).1)
    }
}

thread_local! {
    // One state per module on wasm32, built at compile time: an access checks no lazy
    // initialiser (the executor reaches the state about ten times per message). Its tag is
    // never read on wasm32 (see `waker_data`).
    #[cfg(target_arch = "wasm32")]
    static STATE: RefCell<State> = const { RefCell::new(State::new(StateTag(0))) };
    #[cfg(not(target_arch = "wasm32"))]
    static STATE: RefCell<State> = RefCell::new(State::default());
}

impl State {
    /// An empty state tagged `tag` (built at compile time for wasm32's one state).
    const fn new(tag: StateTag) -> State {
        State {
            tasks: Vec::new(),
            free: Vec::new(),
            pending: 0,
            current: None,
            ops: BTreeMap::new(),
            state_waiters: TaskQueue::EMPTY,
            woken: TaskQueue::EMPTY,
            tag,
            actor: None,
            identity: None,
            buf: Vec::new(),
            names: Vec::new(),
            spare_tasks: TaskCache { free: Vec::new() },
            #[cfg(not(target_arch = "wasm32"))]
            rejected: Vec::new(),
        }
    }
}

impl Default for State {
    /// An empty state with a tag of its own.
    fn default() -> Self {
        State::new(StateTag::default())
    }
}

fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
    STATE.with(|s| f(&mut s.borrow_mut()))
}

/// Like [`with`], for destructors: `None` while the thread exits.
fn try_with<R>(f: impl FnOnce(&mut State) -> R) -> Option<R> {
    STATE
        .try_with(|s| s.try_borrow_mut().ok().map(|mut s| f(&mut s)))
        .ok()
        .flatten()
}

/// Installs `state` on this thread and returns the one it replaces.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn swap_state(state: State) -> State {
    with(|s| std::mem::replace(s, state))
}

/// Drops every pending task of the installed state (their operations are cancelled).
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn drop_tasks() {
    let tasks = with(|s| {
        s.free.clear();
        s.pending = 0;
        s.state_waiters.ids.clear();
        s.woken.ids.clear();
        std::mem::take(&mut s.tasks)
    });
    drop(tasks);
}

/// Runs the actor until the host has no event for it; returns the number of pending tasks.
///
/// Events are decoded as views borrowing the event buffer (no allocation); the buffer is out of
/// the state while they are handled, and whatever outlives the event is copied (the handler's
/// message is decoded into its type, an `async` handler's [`Ctx`] copies the envelope fields it
/// exposes, completions are stored owned). A plain `fn` handler's `Ctx` reads them in the
/// buffer: the handler returns before the next event is pulled into it.
pub(crate) fn run<A: Actor>() -> i32 {
    let (mut buf, left_woken) = with(|s| (std::mem::take(&mut s.buf), !s.woken.ids.is_empty()));
    if left_woken {
        // Tasks woken in the previous entry and not polled then (it asked for this one).
        wake_waiters();
    }
    // Set when the host flagged the event as the last one ready: asking again would get none.
    let mut last = false;
    while !last && let Some((len, only)) = next_event(&mut buf) {
        last = only;
        let Ok(event) = EventView::decode(&buf[..len]) else {
            trap("the host sent an event that does not decode");
        };
        match event {
            EventView::Start {
                name,
                instance,
                config,
            } => start::<A>(name, instance, config),
            EventView::Message(env) => message::<A>(&env),
            EventView::Completion { op, result } => complete(op, result.to_completion()),
            EventView::Stop => stop::<A>(),
        }
    }
    // The turn ends: items written to streams go to the host now.
    crate::streams::flush_all();
    if buf.len() > KEPT_BUFFER {
        buf = Vec::new();
    }
    let (pending, still_woken) = with(|s| {
        s.buf = buf;
        (s.pending, !s.woken.ids.is_empty())
    });
    if still_woken {
        // The next entry polls them.
        sys::yield_now();
    }
    i32::try_from(pending).unwrap_or(i32::MAX)
}

/// Pulls the next event into `buf`, growing it when the host says it is too small; returns its
/// length and whether it was the last one ready ([`bunraku_abi::NEXT_LAST`]), or `None` when
/// there is no event.
fn next_event(buf: &mut Vec<u8>) -> Option<(usize, bool)> {
    let in_flight = u32::try_from(with(|s| s.pending)).unwrap_or(u32::MAX);
    if buf.len() < INITIAL_BUFFER {
        buf.resize(INITIAL_BUFFER, 0);
    }
    loop {
        match decode_result(sys::next(buf, in_flight)).map(bunraku_abi::split_next) {
            Ok((0, _)) => return None,
            Ok((len, last)) => {
                let len = usize::try_from(len).unwrap_or(usize::MAX);
                if len <= buf.len() {
                    return Some((len, last));
                }
                // The event is still first in line: make room and ask again.
                buf.resize(len, 0);
            }
            Err(code) => trap(&format!("the host's `next` failed: {code}")),
        }
    }
}

/// A shared copy of a sender or subject name: the same `Rc` for a name seen recently, so handling
/// a message from a known sender allocates nothing for its name.
pub(crate) fn intern(name: &str) -> Rc<str> {
    with(|s| {
        if let Some(known) = s.names.iter().find(|n| ***n == *name) {
            return known.clone();
        }
        let new: Rc<str> = Rc::from(name);
        if s.names.len() >= INTERNED {
            s.names.pop();
        }
        s.names.insert(0, new.clone());
        new
    })
}

#[cold]
#[inline(never)]
fn start<A: Actor>(name: &str, instance: u32, config: &[u8]) {
    if with(|s| s.actor.is_some()) {
        log_line(level::WARN, "ignored a second `Start` event");
        return;
    }
    let cell: &'static RefCell<A> = Box::leak(Box::new(RefCell::new(A::default())));
    let identity: &'static Identity = Box::leak(Box::new(Identity {
        name: name.to_owned(),
        instance,
    }));
    with(|s| {
        s.actor = Some((TypeId::of::<RefCell<A>>(), NonNull::from(cell).cast()));
        s.identity = Some(identity);
    });
    match A::__start(cell, Ctx::lifecycle(identity), config) {
        Ok(Some(task)) => spawn(task),
        Ok(None) => {}
        Err(e) => trap(&format!("`on_start` failed: {e}")),
    }
}

/// The started actor and its identity.
fn started<A: Actor>() -> Option<(&'static RefCell<A>, &'static Identity)> {
    with(|s| Some((s.actor::<A>()?, s.identity?)))
}

/// Inlined into [`run`], as `__dispatch` is into it, for the reason `__dispatch` gives.
#[inline(always)]
fn message<A: Actor>(env: &EnvelopeView<'_>) {
    let Some((cell, identity)) = started::<A>() else {
        trap("a message arrived before the `Start` event");
    };
    match A::__dispatch(cell, crate::glue::Incoming::new(identity, env)) {
        Ok(Some(task)) => spawn(task),
        // A plain `fn` handler ran already; it may have woken tasks.
        Ok(None) => wake_waiters(),
        Err(e) => reject(env.id, env.reply, e),
    }
}

/// Refuses a message that has no handler or does not decode: a warning, and an error reply when
/// the sender waits for one. Never a trap: the sender's mistake must not restart this actor.
#[cold]
#[inline(never)]
fn reject(id: u64, reply: Option<u32>, error: Error) {
    log_line(level::WARN, &format!("refused message {id}: {error}"));
    let Some(handle) = reply else {
        #[cfg(not(target_arch = "wasm32"))]
        with(|s| s.rejected.push((id, error)));
        return;
    };
    let body = ReplyBody::Error {
        code: error.code(),
        message: error.message().to_owned(),
    };
    reply_body(handle, &body);
}

#[cold]
#[inline(never)]
fn stop<A: Actor>() {
    let Some((cell, identity)) = started::<A>() else {
        return;
    };
    if let Some(task) = A::__stop(cell, Ctx::lifecycle(identity)) {
        spawn(task);
    }
}

#[inline(never)]
fn complete(op: u32, result: Completion) {
    let task = with(|s| {
        let slot = s.ops.get_mut(&op)?;
        slot.result = Some(result);
        slot.task
    });
    // An unknown op was cancelled; its late completion is dropped.
    if let Some(task) = task {
        drive(task);
    }
}

/// Starts a task: polls it once at once, and keeps it only when it is Pending (most handlers
/// finish in their first poll). Then polls the tasks waiting for the actor's state.
fn spawn(task: Task) {
    let id = with(|s| {
        s.free.pop().unwrap_or_else(|| {
            s.tasks.push(None);
            s.tasks.len() - 1
        })
    });
    poll_task(id, task, true);
    wake_waiters();
}

/// Polls a task, then every task it woke or that waits for the actor's state, while that makes
/// progress.
fn drive(id: TaskId) {
    poll(id);
    wake_waiters();
}

/// Polls the tasks woken through their wakers and those waiting for the actor's state, until
/// none is left to poll or [`WAKE_ROUNDS`] rounds went by (the tasks woken meanwhile stay
/// queued).
fn wake_waiters() {
    // Most of the time nobody waits: one look at the state for that.
    if with(|s| s.state_waiters.ids.is_empty() && s.woken.ids.is_empty()) {
        return;
    }
    for _ in 0..WAKE_ROUNDS {
        wake_state_waiters();
        let Some(woken) = with(|s| s.woken.take()) else {
            return;
        };
        for &id in &woken {
            poll(id);
        }
        with(|s| s.woken.give_back(woken));
    }
    wake_state_waiters();
}

/// Polls the tasks waiting for the actor's state, again while some of them get through.
fn wake_state_waiters() {
    loop {
        let Some(waiters) = with(|s| s.state_waiters.take()) else {
            return;
        };
        let before = waiters.len();
        for &id in &waiters {
            poll(id);
        }
        // Waiters that still cannot borrow registered again; stop once nobody got through.
        let stuck = with(|s| {
            s.state_waiters.give_back(waiters);
            s.state_waiters.ids.len() >= before
        });
        if stuck {
            return;
        }
    }
}

/// Polls one stored task once; a finished task is dropped.
fn poll(id: TaskId) {
    let Some(task) = with(|s| s.tasks.get_mut(id).and_then(Option::take)) else {
        return;
    };
    poll_task(id, task, false);
}

/// Polls `task` (slot `id`, reserved for it) once: stores it when Pending, frees the slot and
/// drops it when finished. `new` is its first poll.
fn poll_task(id: TaskId, mut task: Task, new: bool) {
    let (outer, tag) = with(|s| (s.current.replace(id), s.tag));
    let waker = task_waker(tag, id);
    let ready = task
        .as_mut()
        .poll(&mut Context::from_waker(&waker))
        .is_ready();
    let finished = with(|s| {
        s.current = outer;
        if ready {
            s.free.push(id);
            if !new {
                s.pending -= 1;
            }
            Some(task)
        } else {
            if new {
                s.pending += 1;
            }
            s.tasks[id] = Some(task);
            None
        }
    });
    // Dropped outside the state: its destructors may use the executor (an `Op` cancels).
    if let Some(task) = finished {
        recycle(task);
    }
}

/// Lets the actor's other work run before the calling task goes on: a future that is pending
/// once (its task woken at once) and then ready.
///
/// The executor polls the actor's other woken tasks first, and after a few such rounds in a row
/// (16) it handles the host's next event, or, when there is none, returns to the host and asks
/// to be entered again after the other actors waiting for the same thread. So a long loop that
/// awaits `yield_now()` now and then keeps the actor's and the host's other work going, and each
/// entry it spans gets a fresh time budget. A handler still holds the actor's concurrency slot
/// while it yields: with the default concurrency of 1, the actor's next message waits for it.
///
/// ```
/// use bunraku_sdk::prelude::*;
///
/// #[derive(Serialize, Deserialize, Message)]
/// #[message(reply = u64)]
/// struct SumTo(u64);
///
/// #[derive(Default)]
/// struct Summer;
///
/// #[actor]
/// impl Summer {
///     #[handler]
///     async fn sum(&mut self, _ctx: &Ctx, SumTo(n): SumTo) -> u64 {
///         let mut sum = 0u64;
///         for i in 0..=n {
///             sum = sum.wrapping_add(i);
///             if i % 1_000 == 0 {
///                 // 101 turns: more than the executor polls in a row, so the actor is
///                 // entered several times (here by the testing harness).
///                 yield_now().await;
///             }
///         }
///         sum
///     }
/// }
///
/// let mut summer = bunraku_sdk::testing::TestActor::<Summer>::start_default();
/// assert_eq!(summer.call(&SumTo(100_000)).unwrap(), 5_000_050_000);
/// ```
pub fn yield_now() -> impl Future<Output = ()> {
    let mut yielded = false;
    poll_fn(move |cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
}

/// A pending host operation: resolves to its [`Completion`]. Dropping it before then cancels the
/// operation with the host.
pub(crate) struct Op {
    id: u32,
    finished: bool,
}

impl Op {
    /// Tracks operation `id`, which the host just returned, for the current task.
    pub(crate) fn new(id: u32) -> Self {
        with(|s| {
            let task = s.current;
            s.ops.insert(id, OpSlot { task, result: None });
        });
        Self {
            id,
            finished: false,
        }
    }
}

impl Future for Op {
    type Output = Completion;

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Completion> {
        let this = self.get_mut();
        let id = this.id;
        let outcome = with(|s| {
            let slot = s.ops.get_mut(&id)?;
            match slot.result.take() {
                Some(result) => {
                    s.ops.remove(&id);
                    Some(Some(result))
                }
                None => {
                    slot.task = s.current;
                    Some(None)
                }
            }
        });
        match outcome {
            Some(None) => Poll::Pending,
            Some(Some(result)) => {
                this.finished = true;
                Poll::Ready(result)
            }
            None => {
                this.finished = true;
                Poll::Ready(Completion::Failed(ErrorCode::Internal))
            }
        }
    }
}

impl Drop for Op {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let pending = try_with(|s| s.ops.remove(&self.id).is_some_and(|s| s.result.is_none()));
        if pending.unwrap_or(true) {
            // The host may have finished it meanwhile; nothing to do about that.
            let _ = sys::cancel(self.id);
        }
    }
}

/// Registers the current task as waiting for the actor's state.
fn wait_for_state() {
    with(|s| {
        if let Some(task) = s.current
            && !s.state_waiters.ids.contains(&task)
        {
            s.state_waiters.ids.push(task);
        }
    });
}

/// Borrows the actor's state mutably, waiting while another task holds it.
pub(crate) async fn borrow_mut<A>(cell: &'static RefCell<A>) -> RefMut<'static, A> {
    poll_fn(|_| match cell.try_borrow_mut() {
        Ok(state) => Poll::Ready(state),
        Err(_) => {
            wait_for_state();
            Poll::Pending
        }
    })
    .await
}

/// Borrows the actor's state, waiting while another task holds it mutably.
pub(crate) async fn borrow<A>(cell: &'static RefCell<A>) -> Ref<'static, A> {
    poll_fn(|_| match cell.try_borrow() {
        Ok(state) => Poll::Ready(state),
        Err(_) => {
            wait_for_state();
            Poll::Pending
        }
    })
    .await
}

/// Answers reply handle `handle` with `value` encoded in `codec`.
pub(crate) fn reply_value<T: Serialize>(handle: u32, codec: bunraku_abi::Codec, value: &T) {
    // Encoded in place into the reused scratch buffer.
    let sent = codec::with_scratch(|buf| {
        bunraku_abi::view::encode_reply_ok_with(buf, codec, |b| codec::encode_into(codec, value, b))
            .map(|()| sys::reply(handle, buf))
    });
    let raw = match sent {
        Ok(raw) => raw,
        Err(e) => {
            let body = ReplyBody::Error {
                code: ErrorCode::Internal,
                message: format!("the reply does not encode as {}: {e}", codec::name(codec)),
            };
            sys::reply(handle, &bunraku_abi::encode(&body))
        }
    };
    if let Err(code) = decode_result(raw) {
        log_line(level::WARN, &format!("could not reply: {code}"));
    }
}

fn reply_body(handle: u32, body: &ReplyBody) {
    if let Err(code) = decode_result(sys::reply(handle, &bunraku_abi::encode(body))) {
        log_line(level::WARN, &format!("could not reply: {code}"));
    }
}

/// Writes a line to the actor's log.
pub(crate) fn log_line(level: u32, line: &str) {
    // A failed log line has nowhere to be reported.
    let _ = sys::log(level, line.as_bytes());
}

/// Logs `message` as an error and traps, so the host discards and restarts the instance.
/// Natively (under the testing harness) it panics with `message`.
pub(crate) fn trap(message: &str) -> ! {
    log_line(level::ERROR, message);
    #[cfg(target_arch = "wasm32")]
    std::process::abort();
    #[cfg(not(target_arch = "wasm32"))]
    panic!("{message}");
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::sys::native::{self, NativeHost};
    use bunraku_abi::{Envelope, Event};

    /// Installs a fresh host and executor state for the duration of `f`.
    fn isolated<R>(host: NativeHost, f: impl FnOnce() -> R) -> (R, NativeHost) {
        let old_state = swap_state(State::default());
        let old_host = native::swap(Some(host));
        let r = f();
        drop_tasks();
        swap_state(old_state);
        let host = native::swap(old_host).unwrap();
        (r, host)
    }

    fn spawn_test(f: impl Future<Output = ()> + 'static) {
        spawn(Box::pin(f));
    }

    /// Where a task's future lives.
    fn address(task: &Task) -> *const u8 {
        std::ptr::from_ref::<dyn Future<Output = ()>>(&**task).cast()
    }

    #[test]
    fn a_finished_tasks_memory_is_reused_by_the_next_task_of_its_layout_only() {
        let dropped = Rc::new(Cell::new(0));
        let (_, _host) = isolated(NativeHost::default(), || {
            let make = |n: u64| {
                let guard = DropCount(dropped.clone());
                task(async move {
                    let _guard = &guard;
                    std::hint::black_box([n; 4]);
                })
            };
            let first = make(1);
            let at = address(&first);
            spawn(first);
            // It finished in its first poll: its future was dropped, its memory kept.
            assert_eq!(dropped.get(), 1);
            let second = make(2);
            assert_eq!(address(&second), at, "same layout: the kept memory");
            spawn(second);
            assert_eq!(dropped.get(), 2);
            // Another layout does not fit: new memory, the kept one stays for its own layout.
            let other = task(async move {
                std::hint::black_box([0u64; 64]);
            });
            assert_ne!(address(&other), at);
            spawn(other);
            assert_eq!(address(&make(3)), at);
        });
        assert_eq!(
            dropped.get(),
            3,
            "every future was dropped, the unspawned one too"
        );
    }

    /// Counts its drops.
    struct DropCount(Rc<Cell<u32>>);

    impl Drop for DropCount {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }

    #[test]
    fn op_resolves_on_its_completion_and_resumes_the_task() {
        let result = Rc::new(RefCell::new(None));
        let seen = result.clone();
        let (_, _host) = isolated(NativeHost::default(), || {
            spawn_test(async move {
                let r = Op::new(7).await;
                *seen.borrow_mut() = Some(r);
            });
            assert_eq!(with(|s| s.pending), 1, "waiting on op 7");
            complete(8, Completion::Done);
            assert!(result.borrow().is_none(), "another op does not resume it");
            complete(7, Completion::Failed(ErrorCode::Timeout));
            assert_eq!(with(|s| (s.pending, s.ops.len())), (0, 0));
        });
        assert_eq!(
            *result.borrow(),
            Some(Completion::Failed(ErrorCode::Timeout))
        );
    }

    #[test]
    fn dropping_an_unfinished_op_cancels_it() {
        let mut host = NativeHost::default();
        host.set_full("peer", true);
        let (_, host) = isolated(host, || {
            // A send that waits gets an op id from the native host.
            let out = bunraku_abi::encode(&bunraku_abi::Outbound {
                target: "peer".into(),
                ..Default::default()
            });
            let op = u32::try_from(sys::send(&out, bunraku_abi::mode::WAIT)).unwrap();
            spawn_test(async move {
                let waiting = Op::new(op);
                // Dropped without being awaited to completion.
                drop(waiting);
            });
        });
        assert_eq!(host.cancelled, vec![1]);
    }

    #[test]
    fn a_task_woken_by_another_runs_before_the_executor_returns() {
        let log = Rc::new(RefCell::new(Vec::new()));
        let (tx, rx) = futures::channel::oneshot::channel::<u32>();
        let (l1, l2) = (log.clone(), log.clone());
        isolated(NativeHost::default(), || {
            spawn_test(async move {
                let n = rx.await.unwrap();
                l1.borrow_mut().push(format!("woken with {n}"));
            });
            assert_eq!(with(|s| s.pending), 1, "waits for the channel");
            // Another task (another handler, say) completes the channel and waits for the host.
            spawn_test(async move {
                tx.send(7).unwrap();
                l2.borrow_mut().push("sent".to_owned());
                Op::new(3).await;
            });
            assert_eq!(*log.borrow(), ["sent", "woken with 7"]);
            assert_eq!(with(|s| (s.pending, s.woken.ids.len())), (1, 0));
        });
    }

    #[test]
    fn a_task_that_keeps_yielding_is_polled_a_bounded_number_of_rounds_in_a_row() {
        let turns = Rc::new(Cell::new(0));
        let seen = turns.clone();
        isolated(NativeHost::default(), || {
            spawn_test(async move {
                for _ in 0..40 {
                    seen.set(seen.get() + 1);
                    yield_now().await;
                }
            });
            // Its first poll, then one per round; it is still woken, and waits.
            assert_eq!(turns.get(), 1 + WAKE_ROUNDS);
            assert_eq!(with(|s| (s.pending, s.woken.ids.len())), (1, 1));
            // The next event (or entry) gives it as many rounds again.
            wake_waiters();
            assert_eq!(turns.get(), 1 + 2 * WAKE_ROUNDS);
            wake_waiters();
            assert_eq!(turns.get(), 40);
            assert_eq!(with(|s| (s.pending, s.woken.ids.len())), (0, 0));
        });
    }

    #[test]
    fn a_waker_of_another_state_wakes_nothing_here() {
        let (tx, rx) = futures::channel::oneshot::channel::<()>();
        let done = Rc::new(Cell::new(false));
        let seen = done.clone();
        isolated(NativeHost::default(), || {
            spawn_test(async move {
                rx.await.unwrap();
                seen.set(true);
            });
            // The waker registered in the channel names this state; while another one is
            // installed (the testing harness drives several actors on one thread) the wake does
            // not reach the other state's tasks.
            let ours = swap_state(State::default());
            tx.send(()).unwrap();
            assert!(
                with(|s| s.woken.ids.is_empty()),
                "the other state queued nothing"
            );
            swap_state(ours);
            assert!(!done.get());
        });
    }

    #[test]
    fn a_completion_for_a_cancelled_op_is_ignored() {
        isolated(NativeHost::default(), || complete(42, Completion::Done));
    }

    #[test]
    #[allow(clippy::await_holding_refcell_ref)] // what is being tested
    fn state_waiters_run_once_the_state_is_released() {
        #[derive(Default)]
        struct Counter(Vec<&'static str>);
        let cell: &'static RefCell<Counter> = Box::leak(Box::default());
        isolated(NativeHost::default(), || {
            // The first task holds the state across an operation.
            spawn_test(async move {
                let mut state = borrow_mut(cell).await;
                state.0.push("first holds");
                Op::new(1).await;
                state.0.push("first done");
            });
            spawn_test(async move { borrow_mut(cell).await.0.push("second") });
            spawn_test(async move { assert_eq!(borrow(cell).await.0.len(), 3) });
            assert_eq!(with(|s| s.pending), 3);
            complete(1, Completion::Done);
            assert_eq!(with(|s| (s.pending, s.state_waiters.ids.len())), (0, 0));
        });
        assert_eq!(cell.borrow().0, ["first holds", "first done", "second"]);
    }

    #[test]
    fn next_grows_the_buffer_for_a_large_event() {
        let mut host = NativeHost::default();
        let big = Envelope {
            payload: vec![1; 3 * INITIAL_BUFFER],
            ..Default::default()
        };
        host.inbox.push_back(Event::Message(big.clone()));
        let (event, _) = isolated(host, || {
            let mut buf = Vec::new();
            let (len, _) = next_event(&mut buf).unwrap();
            EventView::decode(&buf[..len]).unwrap().to_event()
        });
        assert_eq!(event, Event::Message(big));
    }

    #[test]
    fn finished_tasks_free_their_slot_for_the_next_task() {
        isolated(NativeHost::default(), || {
            spawn_test(async {});
            spawn_test(async {});
            assert_eq!(with(|s| (s.pending, s.tasks.len())), (0, 1));
            spawn_test(async {
                Op::new(3).await;
            });
            spawn_test(async {});
            assert_eq!(with(|s| (s.pending, s.tasks.len())), (1, 2));
            complete(3, Completion::Done);
            assert_eq!(with(|s| (s.pending, s.free.len())), (0, 2));
        });
    }

    #[test]
    fn interned_names_are_shared_while_recent() {
        isolated(NativeHost::default(), || {
            let a = intern("a");
            assert!(Rc::ptr_eq(&a, &intern("a")));
            for i in 0..INTERNED {
                intern(&i.to_string());
            }
            assert!(
                !Rc::ptr_eq(&a, &intern("a")),
                "evicted after {INTERNED} others"
            );
            assert_eq!(&*intern("a"), "a");
        });
    }
}
