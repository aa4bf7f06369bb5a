//! Virtual actors: activation on the first message, deactivation when idle.
//!
//! A virtual actor type (`virtual = true` in the manifest) runs nothing when deployed. A message
//! to `TYPE/KEY` resolves through the host (`Shared::resolve`): when no actor has that name, an
//! *activation* is registered under it from the type's module and settings, its task starts, and
//! the message waits in its mailbox for `on_start` (which usually loads the key's saved state).
//! The registry's entry for the name is taken atomically, so concurrent first messages make one
//! activation.
//!
//! A task of the host (`deactivate_idle`) watches activations: one that has handled nothing for its idle timeout,
//! with an empty mailbox and no operation pending, and that has state in the store (it saved or
//! loaded some), is deactivated: its instance runs `on_stop` and is dropped, while its address,
//! mailbox and task stay (a few KiB instead of the instance's memory). A message that arrives
//! meanwhile, or later, waits in the mailbox and starts the next instance, which loads the saved
//! state again. So there is at most one activation per key at any time, and nothing sent to a
//! key is lost to a deactivation. Activations that never persisted state are never deactivated.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::actor::{ActorGroup, ActorPhase};
use crate::error::DeployError;
use crate::host::Shared;

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
    /// The actor registered under `name`, or a new activation when `name` is `TYPE/KEY` of a
    /// virtual actor type. `None` when there is no such actor (or the key is invalid).
    pub(crate) fn resolve(self: &Arc<Self>, name: &str) -> Option<Arc<ActorGroup>> {
        if let Some(group) = self.registry.lookup(name) {
            return Some(group);
        }
        let (kind, key) = name.split_once('/')?;
        let (module, template) = self.virtual_types.get(kind)?.value().clone();
        if validate_key(key).is_err() {
            return None;
        }
        let mut spec = template;
        spec.name = name.to_owned();
        match self.start_group(&spec, module, Vec::new(), &self.guest) {
            Ok(group) => {
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
                .filter_map(|t| t.value().1.virtual_idle)
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
                if quiet && cell.persisted() && now.saturating_sub(s.since) >= idle {
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
