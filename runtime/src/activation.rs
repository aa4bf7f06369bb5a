//! Virtual actors: activation on the first message, deactivation when idle.
//!
//! A virtual actor type (`virtual = true` in the manifest) runs nothing when deployed. A message
//! to `TYPE/KEY` resolves through the host (`Shared::resolve`): when no actor has that name, an
//! *activation* is registered under it from the type's module and settings, its task starts, and
//! the message waits in its mailbox for `on_start` (which usually loads the key's saved state).
//! The registry's entry for the name is taken atomically, so concurrent first messages make one
//! activation.
//!
//! A task of the host (`deactivate_idle`) watches activations: one that has handled nothing for
//! its idle timeout, with an empty mailbox and no operation pending, and that has state in the
//! store (it saved or loaded some), is deactivated: its instance runs `on_stop` and is dropped.
//! A message that arrives while `on_stop` runs waits in the mailbox and starts the next instance
//! of the same activation. Then the activation is *evicted* (`Shared::evict`): its registry
//! entry, cell, mailbox and task go, so an idle key costs nothing but its row in the store, and
//! the next message makes a new activation, which loads the saved state again. Eviction closes
//! the mailbox under the registry's entry lock; senders holding the old address find it closed
//! and follow the name to its successor (`Shared::try_deliver`, `Shared::deliver_waiting`).
//! So there is at most one activation per key at any time, and nothing sent to a key is lost to
//! a deactivation. Activations that never persisted state are never deactivated; activations
//! somebody watches are deactivated but kept (idle, with their address).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::actor::{ActorGroup, ActorPhase, InstanceIo};
use crate::error::DeployError;
use crate::host::Shared;
use crate::mailbox::{Delivery, SendError, TrySendError};

/// The longest key of a virtual actor address (`TYPE/KEY`), in bytes.
pub const MAX_KEY_LEN: usize = 256;

/// Checks the key of a virtual actor address: 1 to [`MAX_KEY_LEN`] bytes, no `/`, whitespace or
/// control characters.
pub fn validate_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("the key is empty: address a virtual actor as `TYPE/KEY`".into());
    }
    if key.len() > MAX_KEY_LEN {
        return Err(format!("keys are at most {MAX_KEY_LEN} bytes"));
    }
    if let Some(c) = key
        .chars()
        .find(|c| *c == '/' || c.is_whitespace() || c.is_control())
    {
        return Err(format!("{c:?} is not allowed in a key"));
    }
    Ok(())
}

impl Shared {
    /// Whether `name` is `TYPE/KEY` of a deployed virtual actor type with a valid key (whether
    /// or not an activation exists).
    pub(crate) fn is_virtual_address(&self, name: &str) -> bool {
        name.split_once('/').is_some_and(|(kind, key)| {
            self.virtual_types.contains_key(kind) && validate_key(key).is_ok()
        })
    }

    /// The actor registered under `name`, or a new activation when `name` is `TYPE/KEY` of a
    /// virtual actor type. `None` when there is no such actor (or the key is invalid).
    pub(crate) fn resolve(self: &Arc<Self>, name: &str) -> Option<Arc<ActorGroup>> {
        if let Some(group) = self.registry.lookup(name) {
            return Some(group);
        }
        let (kind, key) = name.split_once('/')?;
        let kind = self.virtual_types.get(kind)?.value().clone();
        if validate_key(key).is_err() {
            return None;
        }
        let (module, settings) = (kind.module.clone(), kind.settings.clone());
        match self.start_group(name, &kind.spec, module, settings, Vec::new()) {
            Ok(group) => {
                self.activations.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(actor = %name, "activated");
                Some(group)
            }
            // Another first message won the race: there is one activation, use it.
            Err(DeployError::Duplicate(_)) => self.registry.lookup(name),
            Err(e) => {
                tracing::warn!(actor = %name, "activation failed: {e}");
                None
            }
        }
    }
}

/// How many times one delivery follows evicted activations to their successors before it gives
/// up (each step needs an eviction to finish between a lookup and a send: one is already rare).
const MAX_REDIRECTS: usize = 8;

impl Shared {
    /// Removes a deactivated activation from the registry, so that an idle key costs nothing
    /// but its row in the store; whether it was removed (its task then ends).
    ///
    /// Holds the registry's entry for the name while it closes the mailbox and takes what is
    /// left in it: a sender that still holds the old group finds its mailbox closed and asks
    /// for the name again ([`Shared::successor`]), which waits for the entry and finds the next
    /// activation. Messages that arrived before the close go, first and in order, into the
    /// mailbox of a new activation that replaces this one under the same entry, so no message is
    /// lost and each sender's order holds. Activations with watchers are kept (their watch list
    /// lives in the group).
    pub(crate) fn evict(self: &Arc<Self>, group: &Arc<ActorGroup>, io: &mut InstanceIo) -> bool {
        if group.cells.len() != 1 {
            return false;
        }
        let dashmap::Entry::Occupied(mut entry) = self.registry.actors.entry(group.name.clone())
        else {
            return false;
        };
        if !Arc::ptr_eq(entry.get(), group) {
            return false;
        }
        {
            // Under the watchers' lock: a concurrent `watch` either lands first (and keeps this
            // activation) or finds the mailbox closed and looks the name up again.
            let watchers = group.watchers.lock().unwrap();
            if !watchers.is_empty() {
                return false;
            }
            io.mailbox.close();
        }
        let mut left: Vec<Delivery> = io.peeked.take().into_iter().collect();
        while let Some(d) = io.mailbox.try_recv() {
            left.push(d);
        }
        self.evictions.fetch_add(1, Ordering::Relaxed);
        if left.is_empty() {
            entry.remove();
            return true;
        }
        let kind = group.name.split_once('/').map_or("", |(kind, _)| kind);
        let Some(kind) = self.virtual_types.get(kind).map(|t| t.value().clone()) else {
            // The type is gone: what is left is a dead letter (requesters hear `target failed`).
            entry.remove();
            return true;
        };
        let (next, ios) = self.new_group(
            &group.name,
            &kind.spec,
            kind.module.clone(),
            kind.settings.clone(),
        );
        for d in left {
            // The new mailbox is as large as the old one and nobody else can reach it yet.
            if next.cells[0].tx.try_send(d).is_err() {
                next.cells[0].dead_letter();
            }
        }
        entry.insert(next.clone());
        drop(entry);
        self.activations.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(actor = %group.name, "activated again for messages that raced an eviction");
        self.spawn_cells(&next, ios);
        true
    }

    /// The current activation for the name of `group` when `group` is an evicted activation
    /// (its mailbox closed); `None` for every other actor, whose closed mailbox means stopped.
    pub(crate) fn successor(self: &Arc<Self>, group: &ActorGroup) -> Option<Arc<ActorGroup>> {
        group.idle_timeout?;
        let next = self.resolve(&group.name)?;
        (!std::ptr::eq(Arc::as_ptr(&next), group)).then_some(next)
    }

    /// `try_send`s to the instance of `group` for `sender_hash`, following an evicted activation
    /// to its successor (and updating `group` to it); the outcome, and whether `group` moved
    /// (so that callers caching the old address replace it).
    pub(crate) fn try_deliver(
        self: &Arc<Self>,
        group: &mut Arc<ActorGroup>,
        sender_hash: u64,
        mut delivery: Delivery,
    ) -> (Result<(), TrySendError<Delivery>>, bool) {
        let mut moved = false;
        for _ in 0..MAX_REDIRECTS {
            match group.pick(sender_hash).tx.try_send(delivery) {
                Err(TrySendError::Closed(d)) => match self.successor(group) {
                    Some(next) => {
                        *group = next;
                        moved = true;
                        delivery = d;
                    }
                    None => return (Err(TrySendError::Closed(d)), moved),
                },
                other => return (other, moved),
            }
        }
        (Err(TrySendError::Closed(delivery)), moved)
    }

    /// Sends to the instance of `group` for `sender_hash`, waiting for room, following an
    /// evicted activation to its successor; the delivery back when the actor is gone.
    pub(crate) async fn deliver_waiting(
        self: Arc<Self>,
        mut group: Arc<ActorGroup>,
        sender_hash: u64,
        mut delivery: Delivery,
    ) -> Result<(), Delivery> {
        for _ in 0..MAX_REDIRECTS {
            let tx = group.pick(sender_hash).tx.clone();
            match tx.send(delivery).await {
                Ok(()) => return Ok(()),
                Err(SendError(d)) => match self.successor(&group) {
                    Some(next) => {
                        group = next;
                        delivery = d;
                    }
                    None => return Err(d),
                },
            }
        }
        Err(delivery)
    }
}

/// What the deactivation task remembers of one instance slot.
struct Seen {
    handled: u64,
    /// When `handled` last changed (host clock).
    since: Duration,
}

/// Deactivates idle activations until the host is gone. Scans every quarter of the shortest idle
/// timeout (at least every 5 ms, at most every second) on the host clock.
pub(crate) async fn deactivate_idle(shared: Weak<Shared>) {
    let mut seen: HashMap<u64, Seen> = HashMap::new();
    loop {
        let (tick, clock) = {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let shortest = shared
                .virtual_types
                .iter()
                .filter_map(|t| t.value().spec.virtual_idle)
                .min()
                .unwrap_or(Duration::from_secs(1));
            let tick = (shortest / 4).clamp(Duration::from_millis(5), Duration::from_secs(1));
            (tick, shared.clock.clone())
        };
        clock.sleep(tick).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let now = shared.clock.now();
        let mut live = HashSet::new();
        for entry in shared.registry.iter() {
            let group = entry.value();
            let Some(idle) = group.idle_timeout else {
                continue;
            };
            for cell in &group.cells {
                live.insert(cell.id);
                let handled = cell
                    .stats
                    .handled
                    .load(std::sync::atomic::Ordering::Relaxed);
                let s = seen.entry(cell.id).or_insert(Seen {
                    handled,
                    since: now,
                });
                if s.handled != handled {
                    *s = Seen {
                        handled,
                        since: now,
                    };
                    continue;
                }
                let quiet = cell.phase() == ActorPhase::Running
                    && cell.mailbox_depth() == 0
                    && cell
                        .stats
                        .pending
                        .load(std::sync::atomic::Ordering::Relaxed)
                        == 0;
                if quiet
                    && cell.persisted()
                    && cell.status().is_none()
                    && now.saturating_sub(s.since) >= idle
                {
                    tracing::debug!(actor = %cell.name, "deactivating after {idle:?} idle");
                    cell.deactivate();
                    s.since = now;
                }
            }
        }
        seen.retain(|id, _| live.contains(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        assert!(validate_key("alice").is_ok());
        assert!(validate_key("order-42.eu@x").is_ok());
        assert!(validate_key("").is_err());
        assert!(validate_key("a/b").is_err());
        assert!(validate_key("a b").is_err());
        assert!(validate_key(&"k".repeat(MAX_KEY_LEN + 1)).is_err());
    }
}
