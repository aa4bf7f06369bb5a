//! Mailboxes: where messages to an actor wait.
//!
//! A mailbox is a bounded tokio channel of [`Delivery`]s owned by an actor's *address* (an
//! [`ActorCell`](crate::actor::ActorCell)), not by an instance: when an instance traps, the
//! messages not yet started stay queued for the next instance. The bound is the actor's
//! `limits.mailbox`; senders either fail fast (`try`) or wait for room (the waiting guest is
//! suspended, the host holds at most the one message it is trying to deliver).

use std::sync::Arc;

use bunraku_abi::{Envelope, ReplyBody};
use tokio::sync::{mpsc, oneshot};

/// Where a reply goes: the requester's one-shot slot. Dropping it unanswered tells the requester
/// `target failed`.
pub(crate) type ReplySlot = oneshot::Sender<ReplyBody>;

/// A message on its way into a mailbox.
#[derive(Debug)]
pub(crate) struct Delivery {
    /// The envelope, shared: a published message's envelope is one allocation for all of its
    /// subscribers. What differs per receiver (the reply handle, attachment and stream handles
    /// of the receiving instance) is issued on delivery to the guest, next to it, never written
    /// into it. Behind a pointer also because a tokio channel allocates its slots in blocks of
    /// 32, and an inline envelope (about 260 bytes) made every idle mailbox cost 8 KiB.
    pub env: Arc<Envelope>,
    /// Where the reply goes, when the sender waits for one.
    pub reply: Option<ReplySlot>,
    /// What few messages carry (moved references, an opened stream), behind a pointer: every
    /// slot of a mailbox's first block of 32 pays for this field, idle or not.
    pub extra: Option<Box<Extra>>,
}

// A mailbox's first block (allocated with the mailbox) is 32 of these: 1 KiB (the reply slot
// takes two words, a `tokio` oneshot sender being an `Option` already).
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
    pub(crate) fn shared(env: Arc<Envelope>) -> Self {
        Self {
            env,
            reply: None,
            extra: None,
        }
    }

    /// The same delivery moving `refs` and opening `stream`; allocates only when there is one.
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

/// The sending side of a mailbox.
pub(crate) type MailboxTx = mpsc::Sender<Delivery>;
/// The receiving side of a mailbox, moved from instance to instance.
pub(crate) type MailboxRx = mpsc::Receiver<Delivery>;

/// A new mailbox holding at most `bound` messages.
pub(crate) fn mailbox(bound: usize) -> (MailboxTx, MailboxRx) {
    mpsc::channel(bound.max(1))
}
