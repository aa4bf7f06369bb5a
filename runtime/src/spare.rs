//! Envelopes kept for reuse: a message a guest sends is built in the allocation (and the
//! buffers) of one this thread handed to a guest earlier, instead of four new allocations (the
//! `Arc`, the type, the sender, the payload) that the receiver's `next` frees again. (A call
//! chain, which only a request carries, is still the caller's own vector.)
//!
//! [`keep`] takes an envelope once its receiver's `next` has written it into guest memory, when
//! no one else holds it (a published message shared by several subscribers is kept by the
//! last) and its buffers are small; [`take`] hands it to the next send on the same thread. The
//! pool is per thread, so no lock: a chain of actors on one guest lane (see [`crate::sched`])
//! reuses the same few envelopes. It is bounded ([`KEPT`] envelopes of at most
//! [`KEPT_BYTES`] each), so a burst leaves no more than that behind.

use std::cell::RefCell;
use std::sync::Arc;

use bunraku_abi::Envelope;

/// Most envelopes kept per thread.
pub(crate) const KEPT: usize = 64;

/// Largest payload, type and sender (their capacities, each) of an envelope that is kept.
pub(crate) const KEPT_BYTES: usize = 1024;

thread_local! {
    static SPARE: RefCell<Vec<Arc<Envelope>>> = const { RefCell::new(Vec::new()) };
}

/// Keeps `env` for a later [`take`] on this thread, when it is the last holder and small; drops
/// it otherwise.
pub(crate) fn keep(mut env: Arc<Envelope>) {
    let Some(e) = Arc::get_mut(&mut env) else {
        return;
    };
    let small = e.payload.capacity() <= KEPT_BYTES
        && e.msg_type.capacity() <= KEPT_BYTES
        && e.sender.as_ref().is_none_or(|s| s.capacity() <= KEPT_BYTES);
    if !small {
        return;
    }
    // Nothing the next message must not see, and nothing that holds more than it needs to.
    e.chain = Vec::new();
    e.subject = None;
    e.idempotency_key = None;
    e.attachments = Vec::new();
    e.ext = Vec::new();
    // `try_with`: a thread that is ending drops it instead.
    let _ = SPARE.try_with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < KEPT {
            spare.push(env);
        }
    });
}

/// An envelope [`keep`] kept on this thread, unshared, to be overwritten; `None` when there is
/// none.
pub(crate) fn take() -> Option<Arc<Envelope>> {
    SPARE
        .try_with(|spare| spare.borrow_mut().pop())
        .ok()
        .flatten()
}

/// How many envelopes this thread keeps (for tests).
#[cfg(test)]
pub(crate) fn kept() -> usize {
    SPARE.with(|spare| spare.borrow().len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(payload: usize) -> Arc<Envelope> {
        Arc::new(Envelope {
            msg_type: "t".into(),
            sender: Some("s".into()),
            chain: vec![1, 2],
            payload: vec![0; payload],
            ..Envelope::default()
        })
    }

    #[test]
    fn a_kept_envelope_is_taken_back_on_the_same_thread_without_its_chain() {
        while take().is_some() {}
        let env = envelope(16);
        let address = Arc::as_ptr(&env);
        keep(env);
        assert_eq!(kept(), 1);
        let again = take().expect("kept");
        assert_eq!(Arc::as_ptr(&again), address, "the same allocation");
        assert!(again.chain.is_empty());
        assert_eq!(again.payload.len(), 16, "the caller overwrites the rest");
        assert!(take().is_none());
    }

    #[test]
    fn shared_large_and_surplus_envelopes_are_not_kept() {
        while take().is_some() {}
        let shared = envelope(16);
        let other = shared.clone();
        keep(shared);
        assert_eq!(kept(), 0, "another holder still reads it");
        drop(other);
        keep(envelope(KEPT_BYTES + 1));
        assert_eq!(kept(), 0, "a large payload's buffer is not held on to");
        for _ in 0..KEPT + 5 {
            keep(envelope(16));
        }
        assert_eq!(kept(), KEPT);
        while take().is_some() {}
    }
}
