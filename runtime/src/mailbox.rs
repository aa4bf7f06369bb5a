//! Mailboxes: where messages to an actor wait.
//!
//! A mailbox is a bounded queue of `Delivery`s owned by an actor's *address* (an `ActorCell`),
//! not by an instance: when an instance traps, the messages not yet started stay queued for the
//! next instance. The bound is the actor's `limits.mailbox`; senders either fail fast (`try`) or
//! wait for room (the waiting guest is suspended, the host holds at most the one message it is
//! trying to deliver).
//!
//! It is a `VecDeque` under a mutex, with the receiver's waker next to it and a `Notify` for
//! senders waiting for room, rather than a tokio `mpsc` channel: a tokio channel allocates a
//! block of 32 slots and its shared state up front (1.5 KiB for every actor, on the path of
//! every activation), where this one starts at 128 bytes and grows with what is queued. One
//! actor's instance is its only receiver, so the lock is rarely contended.
//!
//! The channel crates of the field were read for this and do not fit it: `async-channel`'s
//! bounded queue (`concurrent-queue`'s `Bounded`) allocates all of its slots when it is made,
//! 1,024 of them at the default bound; `flume`'s receive future allocates a signal (`Arc<Hook>`)
//! each time a new one waits, and the run loop makes a new one every turn it goes idle.
//!
//! The queue ([`channel`], [`Sender`], [`Receiver`]) is generic; the runtime's mailboxes are
//! `MailboxTx` and `MailboxRx` of `Delivery`s.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bunraku_abi::{Envelope, ReplyBody};
use tokio::sync::{Notify, oneshot};

/// Where a reply goes: the requester's one-shot slot. Dropping it unanswered tells the requester
/// `target failed`.
pub(crate) type ReplySlot = oneshot::Sender<ReplyBody>;

/// A message on its way into a mailbox.
#[derive(Debug)]
pub(crate) struct Delivery {
    /// The envelope, shared: a published message's envelope is one allocation for all of its
    /// subscribers. What differs per receiver (the reply handle, attachment and stream handles
    /// of the receiving instance) is issued on delivery to the guest, next to it, never written
    /// into it. Behind a pointer also because a mailbox's ring keeps its capacity while idle,
    /// and an inline envelope is about 260 bytes.
    pub env: Arc<Envelope>,
    /// Where the reply goes, when the sender waits for one.
    pub reply: Option<ReplySlot>,
    /// What few messages carry (moved references, an opened stream), behind a pointer: every
    /// slot of a mailbox's ring pays for this field, idle or not.
    pub extra: Option<Box<Extra>>,
}

// A queued message takes one of these in its mailbox's ring (the reply slot takes two words, a
// `tokio` oneshot sender being an `Option` already).
const _: () = assert!(std::mem::size_of::<Delivery>() <= 32);

/// The rarer parts of a [`Delivery`].
#[derive(Debug)]
pub(crate) struct Extra {
    /// Actor references moved with the message; the receiving instance issues its own handles
    /// for them on delivery.
    pub refs: Box<[Arc<str>]>,
    /// The stream this message opens: the receiving instance issues its reader handle.
    pub stream: Option<Arc<crate::streams::Stream>>,
}

/// The actors a message's references stand for (the names the sender's handles stood for).
pub(crate) type Refs = Option<Box<[Arc<str>]>>;

impl Delivery {
    /// A delivery without a reply slot or references.
    pub(crate) fn new(env: Envelope) -> Self {
        Self::shared(Arc::new(env))
    }

    /// A delivery of an envelope shared with other receivers (a publish's subscribers).
    #[inline(always)]
    pub(crate) fn shared(env: Arc<Envelope>) -> Self {
        Self {
            env,
            reply: None,
            extra: None,
        }
    }

    /// The same delivery moving `refs` and opening `stream`; allocates only when there is one.
    #[inline(always)]
    pub(crate) fn with(mut self, refs: Refs, stream: Option<Arc<crate::streams::Stream>>) -> Self {
        if refs.is_some() || stream.is_some() {
            self.extra = Some(Box::new(Extra {
                refs: refs.unwrap_or_default(),
                stream,
            }));
        }
        self
    }
}

/// The sending side of an actor's mailbox.
pub(crate) type MailboxTx = Sender<Delivery>;
/// The receiving side of an actor's mailbox, moved from instance to instance.
pub(crate) type MailboxRx = Receiver<Delivery>;

/// A new mailbox for an actor, holding at most `bound` messages.
pub(crate) fn mailbox(bound: usize) -> (MailboxTx, MailboxRx) {
    channel(bound)
}

/// Why [`Sender::try_send`] did not queue a message, which it gives back.
#[derive(Debug)]
pub enum TrySendError<T> {
    /// The mailbox holds its bound.
    Full(T),
    /// The mailbox was closed (its actor stopped, or an activation was evicted).
    Closed(T),
}

/// [`Sender::send`] found the mailbox closed; the message back.
#[derive(Debug)]
pub struct SendError<T>(pub T);

/// What both sides of a mailbox share.
struct Chan<T> {
    /// How many deliveries it holds at most.
    bound: usize,
    queue: Mutex<Queue<T>>,
    /// Senders waiting for room, woken in the order they came. Each delivery taken from a full
    /// mailbox wakes one; a woken sender that queues and leaves room wakes the next.
    room: Notify,
    /// Live [`Sender`]s: with none left, an empty mailbox reads as closed.
    senders: AtomicUsize,
}

// With the `Arc`'s two counts, a mailbox is one allocation of 128 bytes (its ring comes with its
// first message).
const _: () = assert!(std::mem::size_of::<Chan<Delivery>>() <= 112);

struct Queue<T> {
    deliveries: VecDeque<T>,
    closed: bool,
    /// The receiver's waker, kept from one wait to the next: a receiver that waits again with the
    /// same waker (an actor's task always does) registers without cloning it, and a delivery
    /// wakes it by reference, so a message moves no reference count.
    receiver: Option<Waker>,
    /// Whether the receiver waits: the next delivery wakes it (once).
    receiver_waits: bool,
    /// Senders in line for room ([`Sender::send`]). While any wait, nobody else may queue: a
    /// sender's later message must not pass its earlier one that waits. (A `u32`, so that
    /// the whole mailbox stays in 128 bytes.)
    waiting: u32,
}

impl<T> Chan<T> {
    fn lock(&self) -> MutexGuard<'_, Queue<T>> {
        // Nothing that can panic runs under the lock; a poisoned lock still holds a valid queue.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The sending side of a mailbox: cheap to clone, one per holder.
pub struct Sender<T> {
    chan: Arc<Chan<T>>,
}

/// The receiving side of a mailbox, moved from instance to instance. Dropping it closes the
/// mailbox and drops what is queued (requesters hear `target failed`).
pub struct Receiver<T> {
    chan: Arc<Chan<T>>,
    /// Whether the last delivery taken was the only one queued.
    drained: bool,
}

/// A new mailbox holding at most `bound` messages (at least one).
pub fn channel<T>(bound: usize) -> (Sender<T>, Receiver<T>) {
    let chan = Arc::new(Chan {
        bound: bound.max(1),
        queue: Mutex::new(Queue {
            deliveries: VecDeque::new(),
            closed: false,
            receiver: None,
            receiver_waits: false,
            waiting: 0,
        }),
        room: Notify::new(),
        senders: AtomicUsize::new(1),
    });
    (
        Sender { chan: chan.clone() },
        Receiver {
            chan,
            drained: false,
        },
    )
}

impl<T> Sender<T> {
    /// Queues `delivery` if there is room and no sender waits for it, waking the receiver.
    pub fn try_send(&self, delivery: T) -> Result<(), TrySendError<T>> {
        self.push(delivery, |queue| queue.waiting == 0)
    }

    /// Queues `delivery` when the mailbox is open, has room and `may` says this sender's turn
    /// came; wakes the receiver.
    fn push(
        &self,
        delivery: T,
        may: impl FnOnce(&Queue<T>) -> bool,
    ) -> Result<(), TrySendError<T>> {
        let mut queue = self.chan.lock();
        if queue.closed {
            return Err(TrySendError::Closed(delivery));
        }
        if queue.deliveries.len() >= self.chan.bound || !may(&queue) {
            return Err(TrySendError::Full(delivery));
        }
        queue.deliveries.push_back(delivery);
        if std::mem::take(&mut queue.receiver_waits)
            && let Some(waker) = &queue.receiver
        {
            // Under the lock, by reference: a waker only queues its task, and taking the waker
            // out to wake it outside would mean cloning it back in on the receiver's next wait.
            waker.wake_by_ref();
        }
        Ok(())
    }

    /// Queues `delivery`, waiting in line for room; the delivery back when the mailbox is
    /// closed. Cancel-safe: dropped while it waits, it has queued nothing (and passes a wake-up
    /// it received on to the next sender in line).
    pub async fn send(&self, delivery: T) -> Result<(), SendError<T>> {
        let mut delivery = match self.try_send(delivery) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Closed(d)) => return Err(SendError(d)),
            Err(TrySendError::Full(d)) => d,
        };
        let line = InLine::join(&self.chan);
        let mut woken = false;
        loop {
            let room = self.chan.room.notified();
            let mut room = std::pin::pin!(room);
            // Registered before looking: room made after the look wakes this sender.
            woken |= room.as_mut().enable();
            // Its turn: woken for room, or alone in line.
            match self.push(delivery, |queue| woken || queue.waiting == 1) {
                Ok(()) => {
                    if line.leave() {
                        // Room is left and others wait: wake the next.
                        self.chan.room.notify_one();
                    }
                    return Ok(());
                }
                Err(TrySendError::Closed(d)) => return Err(SendError(d)),
                Err(TrySendError::Full(d)) => delivery = d,
            }
            room.await;
            woken = true;
        }
    }

    /// Whether the mailbox was closed.
    pub fn is_closed(&self) -> bool {
        self.chan.lock().closed
    }

    /// How many more deliveries fit.
    pub fn capacity(&self) -> usize {
        self.chan.bound - self.chan.lock().deliveries.len().min(self.chan.bound)
    }

    /// The bound.
    pub fn max_capacity(&self) -> usize {
        self.chan.bound
    }
}

/// A sender's place in line for room ([`Sender::send`]), counted in `Queue::waiting` until it
/// queued its delivery or was dropped.
struct InLine<'a, T> {
    chan: &'a Chan<T>,
    left: bool,
}

impl<'a, T> InLine<'a, T> {
    fn join(chan: &'a Chan<T>) -> Self {
        // A `u32` of senders, each holding a future: it does not overflow.
        chan.lock().waiting += 1;
        Self { chan, left: false }
    }

    /// Leaves the line after queueing; whether others wait and room is left for one of them.
    fn leave(mut self) -> bool {
        self.left = true;
        let mut queue = self.chan.lock();
        queue.waiting -= 1;
        queue.waiting > 0 && queue.deliveries.len() < self.chan.bound
    }
}

impl<T> Drop for InLine<'_, T> {
    fn drop(&mut self) {
        if !self.left {
            self.chan.lock().waiting -= 1;
        }
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.chan.senders.fetch_add(1, Ordering::Relaxed);
        Self {
            chan: self.chan.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if self.chan.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The last sender: a receiver waiting on an empty mailbox reads the end.
            let receiver = {
                let mut queue = self.chan.lock();
                queue.receiver_waits = false;
                queue.receiver.take()
            };
            if let Some(waker) = receiver {
                waker.wake();
            }
        }
    }
}

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("bound", &self.chan.bound)
            .finish_non_exhaustive()
    }
}

impl<T> Receiver<T> {
    /// The next delivery, waiting for one; `None` once the mailbox is closed (or every sender
    /// is gone) and empty. Cancel-safe.
    pub async fn recv(&mut self) -> Option<T> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let taken = {
            let mut queue = self.chan.lock();
            let taken = Self::take(&mut self.drained, self.chan.bound, &mut queue);
            if taken.is_none() {
                if queue.closed || self.chan.senders.load(Ordering::Acquire) == 0 {
                    return Poll::Ready(None);
                }
                match &mut queue.receiver {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    slot => *slot = Some(cx.waker().clone()),
                }
                queue.receiver_waits = true;
                return Poll::Pending;
            }
            taken
        };
        Poll::Ready(self.made_room(taken))
    }

    /// The next delivery if one is queued (also after the mailbox was closed).
    pub fn try_recv(&mut self) -> Option<T> {
        let taken = Self::take(&mut self.drained, self.chan.bound, &mut self.chan.lock());
        self.made_room(taken)
    }

    /// Whether the last delivery [`recv`](Self::recv) or [`try_recv`](Self::try_recv) took was
    /// the only one queued then (others may have come since).
    pub fn drained(&self) -> bool {
        self.drained
    }

    /// Pops the oldest delivery, and whether the mailbox was full before; notes whether it was
    /// the only one.
    fn take(drained: &mut bool, bound: usize, queue: &mut Queue<T>) -> Option<(T, bool)> {
        let was_full = queue.deliveries.len() >= bound;
        let taken = queue.deliveries.pop_front().map(|d| (d, was_full));
        *drained = queue.deliveries.is_empty();
        taken
    }

    /// The delivery [`Receiver::take`] popped, after waking a sender waiting for room when the
    /// mailbox was full (outside the lock).
    fn made_room(&self, taken: Option<(T, bool)>) -> Option<T> {
        let (delivery, was_full) = taken?;
        if was_full {
            self.chan.room.notify_one();
        }
        Some(delivery)
    }

    /// Refuses new deliveries (senders waiting for room get theirs back); what is queued can
    /// still be taken.
    pub fn close(&mut self) {
        self.chan.lock().closed = true;
        self.chan.room.notify_waiters();
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.close();
        // Dropped outside the lock: a reply slot's drop wakes its requester; and the receiver's
        // waker, which holds its task.
        let (left, waker) = {
            let mut queue = self.chan.lock();
            queue.receiver_waits = false;
            (std::mem::take(&mut queue.deliveries), queue.receiver.take())
        };
        drop((left, waker));
    }
}

impl<T> std::fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("bound", &self.chan.bound)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    use super::*;

    fn numbered(id: u64) -> Delivery {
        Delivery::new(Envelope {
            id,
            ..Default::default()
        })
    }

    fn id(d: Option<Delivery>) -> Option<u64> {
        d.map(|d| d.env.id)
    }

    /// Polls `f` once with a waker that does nothing.
    fn poll_once<F: Future>(f: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        f.poll(&mut Context::from_waker(Waker::noop()))
    }

    /// A waker that counts its clones and wakes.
    #[derive(Default)]
    struct Counts {
        clones: std::sync::atomic::AtomicUsize,
        wakes: std::sync::atomic::AtomicUsize,
    }

    fn counting_waker(counts: &'static Counts) -> Waker {
        use std::task::{RawWaker, RawWakerVTable};
        fn of(data: *const ()) -> &'static Counts {
            // SAFETY: `data` is the `&'static Counts` the waker was made from.
            unsafe { &*data.cast::<Counts>() }
        }
        static VTABLE: RawWakerVTable = RawWakerVTable::new(
            |data| {
                of(data).clones.fetch_add(1, Ordering::SeqCst);
                RawWaker::new(data, &VTABLE)
            },
            |data| {
                of(data).wakes.fetch_add(1, Ordering::SeqCst);
            },
            |data| {
                of(data).wakes.fetch_add(1, Ordering::SeqCst);
            },
            |_| {},
        );
        let data = std::ptr::from_ref(counts).cast::<()>();
        // SAFETY: the vtable's functions treat `data` as the `&'static Counts` it is.
        unsafe { Waker::from_raw(RawWaker::new(data, &VTABLE)) }
    }

    #[test]
    fn a_waiting_receiver_is_woken_once_per_wait_and_its_waker_is_cloned_once() {
        let counts: &'static Counts = Box::leak(Box::default());
        let waker = counting_waker(counts);
        let mut cx = Context::from_waker(&waker);
        let (tx, mut rx) = mailbox(8);
        let wakes = || counts.wakes.load(Ordering::SeqCst);
        for round in 1..=3 {
            assert!(rx.poll_recv(&mut cx).is_pending(), "round {round}: empty");
            tx.try_send(numbered(1)).unwrap();
            assert_eq!(wakes(), round, "the delivery wakes the waiting receiver");
            tx.try_send(numbered(2)).unwrap();
            assert_eq!(wakes(), round, "it does not wait any more: no second wake");
            assert!(matches!(rx.poll_recv(&mut cx), Poll::Ready(Some(d)) if d.env.id == 1));
            assert_eq!(id(rx.try_recv()), Some(2));
        }
        assert_eq!(
            counts.clones.load(Ordering::SeqCst),
            1,
            "registered once, then found again"
        );
        drop(tx);
        assert!(matches!(rx.poll_recv(&mut cx), Poll::Ready(None)));
    }

    #[test]
    fn drained_says_whether_the_delivery_taken_was_the_only_one_queued() {
        let (tx, mut rx) = mailbox(4);
        tx.try_send(numbered(1)).unwrap();
        tx.try_send(numbered(2)).unwrap();
        assert_eq!(id(rx.try_recv()), Some(1));
        assert!(!rx.drained(), "another waits behind it");
        assert_eq!(id(rx.try_recv()), Some(2));
        assert!(rx.drained());
        tx.try_send(numbered(3)).unwrap();
        tx.try_send(numbered(4)).unwrap();
        {
            let mut recv = std::pin::pin!(rx.recv());
            assert!(matches!(poll_once(recv.as_mut()), Poll::Ready(Some(d)) if d.env.id == 3));
        }
        assert!(!rx.drained(), "`recv` notes it too");
    }

    #[test]
    fn try_send_queues_up_to_the_bound_in_order_then_says_full() {
        let (tx, mut rx) = mailbox(2);
        tx.try_send(numbered(1)).unwrap();
        tx.try_send(numbered(2)).unwrap();
        assert!(matches!(tx.try_send(numbered(3)), Err(TrySendError::Full(d)) if d.env.id == 3));
        assert_eq!((tx.capacity(), tx.max_capacity()), (0, 2));
        assert_eq!(id(rx.try_recv()), Some(1));
        assert_eq!(tx.capacity(), 1);
        tx.try_send(numbered(3)).unwrap();
        assert_eq!(id(rx.try_recv()), Some(2));
        assert_eq!(id(rx.try_recv()), Some(3));
        assert_eq!(id(rx.try_recv()), None);
    }

    #[test]
    fn senders_waiting_for_room_all_get_in_as_it_is_made() {
        // Two senders wait on a full mailbox of two. Taking both queued deliveries wakes one
        // sender (the mailbox was full only at the first take); it passes the room left on.
        let (tx, mut rx) = mailbox(2);
        tx.try_send(numbered(1)).unwrap();
        tx.try_send(numbered(2)).unwrap();
        let mut third = std::pin::pin!(tx.send(numbered(3)));
        let mut fourth = std::pin::pin!(tx.send(numbered(4)));
        assert!(poll_once(third.as_mut()).is_pending());
        assert!(poll_once(fourth.as_mut()).is_pending());
        assert_eq!(id(rx.try_recv()), Some(1));
        assert_eq!(id(rx.try_recv()), Some(2));
        assert!(matches!(poll_once(third.as_mut()), Poll::Ready(Ok(()))));
        assert!(matches!(poll_once(fourth.as_mut()), Poll::Ready(Ok(()))));
        assert_eq!(id(rx.try_recv()), Some(3));
        assert_eq!(id(rx.try_recv()), Some(4));
    }

    #[test]
    fn a_waiting_sender_dropped_after_its_wake_up_passes_it_on() {
        let (tx, mut rx) = mailbox(1);
        tx.try_send(numbered(1)).unwrap();
        let mut second = Box::pin(tx.send(numbered(2)));
        let mut third = std::pin::pin!(tx.send(numbered(3)));
        assert!(poll_once(second.as_mut()).is_pending());
        assert!(poll_once(third.as_mut()).is_pending());
        assert_eq!(id(rx.try_recv()), Some(1));
        // Woken, the second sender gives up before it runs: the third gets the room.
        drop(second);
        assert!(matches!(poll_once(third.as_mut()), Poll::Ready(Ok(()))));
        assert_eq!(id(rx.try_recv()), Some(3));
    }

    #[test]
    fn nothing_passes_a_sender_waiting_in_line() {
        // A sender's later message must not pass its earlier one that waits: neither a
        // `try_send` nor a `send` that comes after it takes the room made for it.
        let (tx, mut rx) = mailbox(1);
        tx.try_send(numbered(1)).unwrap();
        let mut waiting = std::pin::pin!(tx.send(numbered(2)));
        assert!(poll_once(waiting.as_mut()).is_pending());
        assert_eq!(id(rx.try_recv()), Some(1));
        assert!(matches!(tx.try_send(numbered(3)), Err(TrySendError::Full(d)) if d.env.id == 3));
        let mut later = std::pin::pin!(tx.send(numbered(3)));
        assert!(
            poll_once(later.as_mut()).is_pending(),
            "room, but it is not its turn"
        );
        assert!(matches!(poll_once(waiting.as_mut()), Poll::Ready(Ok(()))));
        assert!(poll_once(later.as_mut()).is_pending(), "full again");
        assert_eq!(id(rx.try_recv()), Some(2));
        assert!(matches!(poll_once(later.as_mut()), Poll::Ready(Ok(()))));
        assert_eq!(id(rx.try_recv()), Some(3));
        // The line is empty again: a `try_send` with room queues.
        tx.try_send(numbered(4)).unwrap();
    }

    #[test]
    fn closing_refuses_new_and_waiting_deliveries_and_keeps_the_queued_ones() {
        let (tx, mut rx) = mailbox(1);
        tx.try_send(numbered(1)).unwrap();
        let mut waiting = std::pin::pin!(tx.send(numbered(2)));
        assert!(poll_once(waiting.as_mut()).is_pending());
        rx.close();
        assert!(tx.is_closed());
        assert!(matches!(
            poll_once(waiting.as_mut()),
            Poll::Ready(Err(SendError(d))) if d.env.id == 2
        ));
        assert!(matches!(tx.try_send(numbered(3)), Err(TrySendError::Closed(d)) if d.env.id == 3));
        let mut recv = Box::pin(rx.recv());
        assert!(matches!(poll_once(recv.as_mut()), Poll::Ready(Some(d)) if d.env.id == 1));
        drop(recv);
        assert!(matches!(
            poll_once(std::pin::pin!(rx.recv())),
            Poll::Ready(None)
        ));
    }

    #[test]
    fn recv_waits_for_a_delivery_and_ends_when_every_sender_is_gone() {
        let (tx, mut rx) = mailbox(4);
        let other = tx.clone();
        {
            let mut recv = std::pin::pin!(rx.recv());
            assert!(poll_once(recv.as_mut()).is_pending());
            other.try_send(numbered(7)).unwrap();
            assert!(matches!(poll_once(recv.as_mut()), Poll::Ready(Some(d)) if d.env.id == 7));
        }
        drop(other);
        let mut recv = std::pin::pin!(rx.recv());
        assert!(poll_once(recv.as_mut()).is_pending());
        drop(tx);
        assert!(matches!(poll_once(recv.as_mut()), Poll::Ready(None)));
    }

    #[tokio::test]
    async fn a_dropped_mailbox_fails_the_requesters_still_queued() {
        let (tx, rx) = mailbox(4);
        let (reply, answer) = oneshot::channel();
        tx.try_send(Delivery {
            reply: Some(reply),
            ..numbered(1)
        })
        .unwrap();
        drop(rx);
        assert!(
            answer.await.is_err(),
            "the requester hears that no reply comes"
        );
        assert!(matches!(
            tx.try_send(numbered(2)),
            Err(TrySendError::Closed(_))
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_senders_on_a_small_mailbox_all_get_in_each_in_its_order() {
        // Eight senders on other threads, 500 messages each through a mailbox of two: none is
        // lost or left waiting, and each sender's messages arrive in the order it sent them.
        let (tx, mut rx) = mailbox(2);
        let (senders, each) = (8u64, 500u64);
        for sender in 0..senders {
            let tx = tx.clone();
            tokio::spawn(async move {
                for n in 0..each {
                    // Some fail fast and retry, as a guest's `try_send` does; the rest wait.
                    let mut d = numbered(sender * 1_000_000 + n);
                    if n % 3 != 0 {
                        tx.send(d).await.expect("open");
                        continue;
                    }
                    loop {
                        match tx.try_send(d) {
                            Ok(()) => break,
                            Err(TrySendError::Full(back)) => d = back,
                            Err(TrySendError::Closed(_)) => panic!("closed"),
                        }
                        tokio::task::yield_now().await;
                    }
                }
            });
        }
        drop(tx);
        let mut next = vec![0u64; senders as usize];
        let received = tokio::time::timeout(std::time::Duration::from_secs(60), async {
            let mut count = 0;
            while let Some(d) = rx.recv().await {
                let (sender, n) = (d.env.id / 1_000_000, d.env.id % 1_000_000);
                assert_eq!(n, next[sender as usize], "sender {sender} out of order");
                next[sender as usize] += 1;
                count += 1;
            }
            count
        })
        .await
        .expect("every message arrives and the mailbox ends; none is left waiting");
        assert_eq!(received, senders * each);
    }

    #[tokio::test]
    async fn a_sender_waiting_on_another_thread_wakes_when_the_receiver_takes() {
        let (tx, mut rx) = mailbox(1);
        tx.try_send(numbered(1)).unwrap();
        let sender = tokio::spawn(async move { tx.send(numbered(2)).await.is_ok() });
        tokio::task::yield_now().await;
        assert_eq!(id(rx.recv().await), Some(1));
        assert_eq!(id(rx.recv().await), Some(2));
        assert!(sender.await.unwrap());
    }
}
