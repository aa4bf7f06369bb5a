//! Durable reminders: timers kept in the embedded store, delivered to an actor's **address**.
//!
//! A timer (`ctx.after`, `ctx.every`) belongs to one instance and dies with it. A reminder
//! belongs to an address (`billing`, `order/42`) and lives in the store's `reminders` table, so
//! it fires after the instance was deactivated, failed, or the whole host restarted: its message
//! is delivered like any other (from the sender [`SENDER`]), which activates a virtual actor.
//!
//! One host task (`run`) keeps every reminder in deadline order. It starts once the host's
//! actors are deployed ([`Host::start_reminders`](crate::Host::start_reminders), which
//! `deploy_manifest` calls): a reminder that was due while the host was down must find its actor
//! and the actors it talks to. It loads the table (when the store file exists: a host whose
//! actors never persist anything creates none), then applies the changes the host functions
//! report after their write committed. When a reminder is
//! due the task delivers its message and, once delivered, deletes a one-shot reminder or stores
//! the periodic one's next deadline, both through the store's writer and only if the stored
//! reminder is still the one that fired (an actor that set it again meanwhile keeps its new one). Delivery is therefore at
//! least once: a host that stops between the delivery and that write delivers it again after the
//! restart. A reminder whose actor is not deployed (yet) is retried every [`RETRY`] on the host
//! clock, since a manifest deploys its actors after the host starts.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bunraku_abi::Outbound;
use tokio::sync::mpsc;

use crate::actor::hash_name;
use crate::host::Shared;
use crate::mailbox::Delivery;
use crate::store::StoredReminder;

/// The sender a reminder's message comes from.
pub const SENDER: &str = "bunraku.reminder";

/// How long a reminder whose actor cannot take it waits before the next try.
pub const RETRY: Duration = Duration::from_secs(1);

/// A change the task applies to its schedule, once it is in the store.
pub(crate) enum Change {
    /// A reminder was set (or replaced), or fired and moved to its next deadline.
    Set(StoredReminder),
    /// A reminder that could not be delivered: try again at `at` (its stored deadline, the one
    /// that fired, stays as it is).
    Retry { reminder: StoredReminder, at: u64 },
    /// A reminder was cancelled.
    Cancel { actor: String, name: String },
}

/// The host's handle to its reminder task.
pub(crate) struct Reminders {
    tx: mpsc::UnboundedSender<Change>,
    open: tokio::sync::watch::Sender<bool>,
}

/// What the reminder task reads: changes, and whether the host's actors are deployed.
pub(crate) struct Inbox {
    changes: mpsc::UnboundedReceiver<Change>,
    open: tokio::sync::watch::Receiver<bool>,
}

impl Reminders {
    /// A handle and what its task reads.
    pub(crate) fn new() -> (Self, Inbox) {
        let (tx, changes) = mpsc::unbounded_channel();
        let (open, opened) = tokio::sync::watch::channel(false);
        (
            Self { tx, open },
            Inbox {
                changes,
                open: opened,
            },
        )
    }

    /// Lets reminders fire: the host's actors are deployed, so a reminder that comes due (or
    /// was due while the host was down) finds its actor.
    pub(crate) fn open(&self) {
        self.open.send_replace(true);
    }

    /// Tells the task about a change that is in the store.
    pub(crate) fn changed(&self, change: Change) {
        let _ = self.tx.send(change);
    }
}

/// The schedule: when each reminder is tried next, in order, and each reminder by its key
/// (with its stored deadline, which a retry does not change).
#[derive(Default)]
struct Schedule {
    order: BTreeSet<(u64, String, String)>,
    by_key: HashMap<(String, String), (u64, StoredReminder)>,
}

impl Schedule {
    /// Schedules `r` at its deadline.
    fn set(&mut self, r: StoredReminder) {
        let at = r.due_ms;
        self.set_at(r, at);
    }

    /// Schedules `r` to be tried at `at`.
    fn set_at(&mut self, r: StoredReminder, at: u64) {
        self.cancel(&r.actor, &r.name);
        self.order.insert((at, r.actor.clone(), r.name.clone()));
        self.by_key
            .insert((r.actor.clone(), r.name.clone()), (at, r));
    }

    fn cancel(&mut self, actor: &str, name: &str) {
        if let Some((at, old)) = self.by_key.remove(&(actor.to_owned(), name.to_owned())) {
            self.order.remove(&(at, old.actor, old.name));
        }
    }

    fn next_due(&self) -> Option<u64> {
        self.order.first().map(|(due, _, _)| *due)
    }

    /// Removes and returns the reminders due at `now_ms`.
    fn take_due(&mut self, now_ms: u64) -> Vec<StoredReminder> {
        let mut due = Vec::new();
        while let Some((at, _, _)) = self.order.first() {
            if *at > now_ms {
                break;
            }
            let (_, actor, name) = self.order.pop_first().expect("checked");
            if let Some((_, r)) = self.by_key.remove(&(actor, name)) {
                due.push(r);
            }
        }
        due
    }
}

/// The reminder task: runs until the host is gone. Fires nothing until the host opens it.
pub(crate) async fn run(shared: Weak<Shared>, inbox: Inbox) {
    let Inbox {
        mut changes,
        mut open,
    } = inbox;
    if open.wait_for(|open| *open).await.is_err() {
        return;
    }
    let mut schedule = Schedule::default();
    if let Some(host) = shared.upgrade() {
        load(&host, &mut schedule);
    }
    loop {
        let Some(host) = shared.upgrade() else {
            return;
        };
        let clock = host.clock.clone();
        let now = clock.unix_now().as_millis() as u64;
        for r in schedule.take_due(now) {
            tokio::spawn(fire(Arc::downgrade(&host), r));
        }
        // Until the wall time of the next due reminder, not for a delay computed from `now`:
        // a clock that moved since `now` was read would make that delay end late.
        let next = schedule.next_due().map(Duration::from_millis);
        drop(host);
        let sleep = async {
            match next {
                Some(at) => clock.sleep_until_unix(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            change = changes.recv() => match change {
                Some(Change::Set(r)) => schedule.set(r),
                Some(Change::Retry { reminder, at }) => schedule.set_at(reminder, at),
                Some(Change::Cancel { actor, name }) => schedule.cancel(&actor, &name),
                None => return,
            },
            () = sleep => {}
        }
    }
}

/// Loads the stored reminders, when the store file exists.
fn load(host: &Shared, schedule: &mut Schedule) {
    let exists = host
        .store
        .dir()
        .is_some_and(|dir| dir.join(crate::store::FILE_NAME).exists());
    if !exists {
        return;
    }
    match host.store.get().and_then(|store| store.reminders()) {
        Ok(reminders) => {
            if !reminders.is_empty() {
                tracing::info!(count = reminders.len(), "durable reminders loaded");
            }
            reminders.into_iter().for_each(|r| schedule.set(r));
        }
        Err(e) => tracing::error!("durable reminders cannot be loaded: {e}"),
    }
}

/// Delivers one due reminder, then records that it fired (or schedules a retry).
async fn fire(shared: Weak<Shared>, r: StoredReminder) {
    let Some(host) = shared.upgrade() else {
        return;
    };
    let now = host.clock.unix_now().as_millis() as u64;
    let delivered = match host.resolve(&r.actor) {
        Some(group) if group.kind_of(&r.msg_type).is_some() => {
            let out = Outbound {
                target: r.actor.clone(),
                msg_type: r.msg_type.clone(),
                codec: r.codec,
                payload: r.payload.clone(),
                ..Outbound::default()
            };
            let env = host.envelope(out, Vec::new(), None, None, Some(SENDER.to_owned()), None);
            host.clone()
                .deliver_waiting(group, hash_name(SENDER), Delivery::new(env))
                .await
                .is_ok()
        }
        Some(_) => {
            tracing::warn!(actor = %r.actor, reminder = %r.name, msg_type = %r.msg_type,
                "reminder dropped: the actor no longer handles its message type");
            if let Ok(store) = host.store.get() {
                let _ = store
                    .cancel_reminder(r.actor.clone().into(), r.name.clone())
                    .await;
            }
            return;
        }
        None => false,
    };
    if !delivered {
        // The stored deadline (past) stays, so a restart tries at once; this host retries soon.
        tracing::debug!(actor = %r.actor, reminder = %r.name, "reminder not delivered; retrying");
        let at = now + RETRY.as_millis() as u64;
        host.reminders.changed(Change::Retry { reminder: r, at });
        return;
    }
    let Ok(store) = host.store.get() else {
        return;
    };
    let next = r.period_ms.map(|p| now + p.max(1));
    // Only if the actor did not set the reminder again meanwhile (it then has its new deadline).
    let fired = store.reminder_fired(r.actor.clone().into(), r.name.clone(), r.due_ms, next);
    match fired.await {
        Ok(true) => {
            if let Some(due_ms) = next {
                host.reminders
                    .changed(Change::Set(StoredReminder { due_ms, ..r }));
            }
        }
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(actor = %r.actor, reminder = %r.name, "firing not recorded: {e}");
            if let Some(due_ms) = next {
                host.reminders
                    .changed(Change::Set(StoredReminder { due_ms, ..r }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reminder(actor: &str, name: &str, due_ms: u64) -> StoredReminder {
        StoredReminder {
            actor: actor.into(),
            name: name.into(),
            msg_type: "Tick".into(),
            codec: bunraku_abi::Codec::Postcard,
            payload: vec![],
            due_ms,
            period_ms: None,
        }
    }

    #[test]
    fn the_schedule_hands_out_due_reminders_in_deadline_order() {
        let mut s = Schedule::default();
        s.set(reminder("a", "late", 30));
        s.set(reminder("b", "early", 10));
        s.set(reminder("a", "mid", 20));
        assert_eq!(s.next_due(), Some(10));
        let due: Vec<_> = s.take_due(20).into_iter().map(|r| r.name).collect();
        assert_eq!(due, ["early", "mid"]);
        assert_eq!(s.next_due(), Some(30));
    }

    #[test]
    fn a_retry_keeps_the_stored_deadline_of_the_reminder_it_tries_again() {
        let mut s = Schedule::default();
        s.set_at(reminder("a", "r", 10), 1010);
        assert!(s.take_due(500).is_empty());
        let due = s.take_due(1010);
        assert_eq!(
            due[0].due_ms, 10,
            "what the store holds, for the conditional update"
        );
    }

    #[test]
    fn setting_a_reminder_again_replaces_it_and_cancel_removes_it() {
        let mut s = Schedule::default();
        s.set(reminder("a", "r", 10));
        s.set(reminder("a", "r", 50));
        assert!(s.take_due(20).is_empty());
        assert_eq!(s.next_due(), Some(50));
        s.cancel("a", "r");
        assert_eq!(s.next_due(), None);
    }
}
