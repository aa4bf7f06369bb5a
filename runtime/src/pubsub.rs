//! Publish-subscribe: subjects, subscriptions and fan-out.
//!
//! Subscriptions are kept in one list guarded by a read-write lock, plus a per-subject cache of
//! the matching subscriptions that is dropped whenever the list changes. Publishing looks up the
//! cache (or matches and fills it) and then delivers into each subscriber's mailbox with the
//! subscription's [`Policy`]: `Wait` makes the publisher wait for room, `DropNewest` drops the
//! message for that subscriber and counts a dead letter.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use bunraku_abi::Policy;

use crate::actor::ActorCell;
use crate::subject::Pattern;

/// Who receives a subscription's messages.
#[derive(Clone)]
pub(crate) enum SubTarget {
    /// One instance (a subscription made by a guest at run time).
    Instance(Arc<ActorCell>),
    /// A queue group over an actor's instances: each message goes to one instance, chosen by the
    /// publisher so that one publisher's messages stay in order.
    Group(Vec<Arc<ActorCell>>),
}

impl SubTarget {
    pub(crate) fn pick(&self, sender_hash: u64) -> &Arc<ActorCell> {
        match self {
            SubTarget::Instance(cell) => cell,
            SubTarget::Group(cells) => &cells[(sender_hash % cells.len() as u64) as usize],
        }
    }
}

/// One subscription.
#[derive(Clone)]
pub(crate) struct Subscription {
    pub id: u64,
    pub pattern: Pattern,
    pub target: SubTarget,
    pub policy: Policy,
}

/// The subscription table.
#[derive(Default)]
pub(crate) struct PubSub {
    next_id: AtomicU64,
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    subs: Vec<Subscription>,
    cache: HashMap<String, Arc<[Subscription]>>,
}

/// Most distinct subjects remembered in the match cache before it is cleared.
const CACHE_LIMIT: usize = 4096;

impl PubSub {
    /// Adds a subscription and returns its id.
    pub(crate) fn subscribe(&self, pattern: Pattern, target: SubTarget, policy: Policy) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let mut inner = self.inner.write().unwrap();
        inner.subs.push(Subscription {
            id,
            pattern,
            target,
            policy,
        });
        inner.cache.clear();
        id
    }

    /// Removes subscriptions by id; returns how many were removed.
    pub(crate) fn unsubscribe(&self, ids: &[u64]) -> usize {
        if ids.is_empty() {
            return 0;
        }
        let mut inner = self.inner.write().unwrap();
        let before = inner.subs.len();
        inner.subs.retain(|s| !ids.contains(&s.id));
        inner.cache.clear();
        before - inner.subs.len()
    }

    /// Removes every subscription that delivers to an actor name.
    pub(crate) fn unsubscribe_actor(&self, name: &str) {
        let mut inner = self.inner.write().unwrap();
        inner.subs.retain(|s| match &s.target {
            SubTarget::Instance(c) => &*c.name != name,
            SubTarget::Group(cs) => cs.first().is_none_or(|c| &*c.name != name),
        });
        inner.cache.clear();
    }

    /// The subscriptions matching a concrete subject.
    pub(crate) fn matching(&self, subject: &str) -> Arc<[Subscription]> {
        if let Some(hit) = self.inner.read().unwrap().cache.get(subject) {
            return hit.clone();
        }
        let mut inner = self.inner.write().unwrap();
        let found: Arc<[Subscription]> = inner
            .subs
            .iter()
            .filter(|s| s.pattern.matches(subject))
            .cloned()
            .collect();
        if inner.cache.len() >= CACHE_LIMIT {
            inner.cache.clear();
        }
        inner.cache.insert(subject.to_owned(), found.clone());
        found
    }
}
