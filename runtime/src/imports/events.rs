//! Event logs and durable reminders: `events_append`, `events_read`, `events_snapshot`,
//! `reminder_set` and `reminder_cancel`.
//!
//! Every function here returns an operation id: the work happens in the instance's task, off the
//! guest's turn, and its outcome comes back through `next()`. Appends and snapshots go to the
//! store's writer, so many actors' appends share one commit, and an append completes only after
//! its transaction committed. Reads run on the blocking pool, one chunk per operation, so each
//! chunk of a long replay is its own guest turn with its own time budget.
//!
//! The functions reach the log through [`EventStore`], not the SQLite store itself, so another
//! backend can take its place without a change to the guest contract.
//!
//! An actor's log is named by its address: the name for instance 0 (every virtual actor and
//! singleton), `NAME#K` for instance `K > 0` of a replicated actor, each of which keeps its own
//! state. Reading any other log ([`Log::Actor`], [`Log::Type`]) needs a `read_events` grant for
//! it.

use std::sync::Arc;

use bunraku_abi::{
    Append, Codec, Completion, ErrorCode, Log, ReadEvents, Reminder, ReplyBody, Snapshot,
};
use wasmtime::Caller;

use super::{ENVELOPE_SLACK, HostResult, fail, read};
use crate::actor::{ActorCell, ActorState};
use crate::eventstore::EventStore;
use crate::host::Shared;
use crate::reminders::Change;
use crate::store::{StoreError, StoredReminder};

/// The name of `cell`'s own event log.
pub(crate) fn log_name(cell: &ActorCell) -> Arc<str> {
    if cell.instance == 0 {
        cell.name.clone()
    } else {
        format!("{}#{}", cell.name, cell.instance).into()
    }
}

/// The store as an [`EventStore`], or the `StorageUnavailable` result after logging why not.
fn store(host: &Shared) -> Result<&dyn EventStore, ErrorCode> {
    match host.store.get() {
        Ok(store) => Ok(store),
        Err(e) => {
            tracing::debug!("storage unavailable: {e}");
            Err(ErrorCode::StorageUnavailable)
        }
    }
}

/// The code a guest sees for a store failure; the detail goes to the host's log.
fn code_of(actor: &str, e: &StoreError) -> ErrorCode {
    match e {
        StoreError::Conflict { .. } => ErrorCode::Conflict,
        StoreError::Corrupt { .. } => {
            tracing::error!(actor, "{e}");
            ErrorCode::Corrupt
        }
        _ => {
            tracing::warn!(actor, "{e}");
            ErrorCode::StorageUnavailable
        }
    }
}

fn reply_postcard<T: serde::Serialize>(value: &T) -> Completion {
    Completion::Reply(ReplyBody::Ok {
        codec: Codec::Postcard,
        payload: bunraku_abi::encode(value),
    })
}

pub(crate) fn events_append(mut caller: Caller<'_, ActorState>, ptr: u32, len: u32) -> HostResult {
    let limit = caller.data().group.settings.limits.max_message_bytes;
    let append: Append = match read(&caller, ptr, len, limit + ENVELOPE_SLACK)? {
        Ok(append) => append,
        Err(code) => return fail(code),
    };
    if append.events.is_empty() {
        return fail(ErrorCode::Invalid);
    }
    let bytes: usize = append.events.iter().map(|e| e.payload.len()).sum();
    if bytes > limit {
        return fail(ErrorCode::TooLarge);
    }
    let st = caller.data_mut();
    let actor = log_name(&st.cell);
    let time_ms = st.host.clock.unix_now().as_millis() as u64;
    let done = match store(&st.host) {
        Ok(store) => store.append(actor.clone(), append.expected, append.events, time_ms),
        Err(code) => return fail(code),
    };
    // It has history in the store: a virtual actor may be deactivated without loss.
    st.cell.mark_persisted();
    let op = st.start_op(async move {
        match done.await {
            Ok(last) => reply_postcard(&last),
            Err(e) => Completion::Failed(code_of(&actor, &e)),
        }
    });
    op.map_or_else(fail, |op| Ok(op as i64))
}

pub(crate) fn events_snapshot(
    mut caller: Caller<'_, ActorState>,
    ptr: u32,
    len: u32,
) -> HostResult {
    let limit = caller.data().group.settings.limits.max_message_bytes;
    let snapshot: Snapshot = match read(&caller, ptr, len, limit + ENVELOPE_SLACK)? {
        Ok(snapshot) => snapshot,
        Err(code) => return fail(code),
    };
    if snapshot.state.len() > limit {
        return fail(ErrorCode::TooLarge);
    }
    let st = caller.data_mut();
    let actor = log_name(&st.cell);
    let done = match store(&st.host) {
        Ok(store) => store.snapshot(actor.clone(), snapshot),
        Err(code) => return fail(code),
    };
    let op = st.start_op(async move {
        match done.await {
            Ok(()) => Completion::Done,
            Err(StoreError::Invalid { .. }) => Completion::Failed(ErrorCode::Invalid),
            Err(e) => Completion::Failed(code_of(&actor, &e)),
        }
    });
    op.map_or_else(fail, |op| Ok(op as i64))
}

pub(crate) fn events_read(mut caller: Caller<'_, ActorState>, ptr: u32, len: u32) -> HostResult {
    let limit = caller.data().group.settings.limits.max_message_bytes;
    let req: ReadEvents = match read(&caller, ptr, len, 64 * 1024)? {
        Ok(req) => req,
        Err(code) => return fail(code),
    };
    let st = caller.data_mut();
    let allowed = match &req.log {
        Log::Own => true,
        Log::Actor(name) => st.group.settings.grants.may_read_events(name, false),
        Log::Type(kind) => st.group.settings.grants.may_read_events(kind, true),
    };
    if !allowed {
        let (what, name) = match &req.log {
            Log::Actor(name) => ("the event log of", name.as_str()),
            Log::Type(kind) => ("the events of type", kind.as_str()),
            Log::Own => unreachable!("own log is always allowed"),
        };
        crate::grants::log_denial(
            st,
            &format!(
                "denied: reading {what} `{name}`: the actor holds no read_events grant for it"
            ),
        );
        return fail(ErrorCode::Denied);
    }
    if let Err(code) = store(&st.host) {
        return fail(code);
    }
    // An answer always fits a message the actor could receive.
    let max_bytes = (req.max_bytes as usize).clamp(1, limit);
    let host = st.host.clone();
    let own = log_name(&st.cell);
    let cell = st.cell.clone();
    let op = st.start_op(async move {
        match read_events(host, &cell, own.clone(), req, max_bytes).await {
            Ok(batch) => reply_postcard(&batch),
            Err((actor, e)) => {
                if matches!(e, StoreError::Corrupt { .. }) && actor == *own {
                    cell.mark_corrupt(e.to_string());
                }
                Completion::Failed(code_of(&actor, &e))
            }
        }
    });
    op.map_or_else(fail, |op| Ok(op as i64))
}

/// Reads one chunk on the blocking pool; for a type stream with `wait`, waits for a commit when
/// nothing is new.
async fn read_events(
    host: Arc<Shared>,
    cell: &ActorCell,
    own: Arc<str>,
    req: ReadEvents,
    max_bytes: usize,
) -> Result<bunraku_abi::EventBatch, (String, StoreError)> {
    let blocking = |host: Arc<Shared>, req: ReadEvents| {
        let own = own.clone();
        tokio::task::spawn_blocking(move || {
            let store: &dyn EventStore = host.store.get().map_err(|e| (String::new(), e))?;
            match &req.log {
                Log::Own => store
                    .read(&own, req.from, req.until, req.snapshot, max_bytes)
                    .map_err(|e| (own.to_string(), e)),
                Log::Actor(name) => store
                    .read(name, req.from, req.until, req.snapshot, max_bytes)
                    .map_err(|e| (name.clone(), e)),
                Log::Type(kind) => store
                    .read_type(kind, req.from, max_bytes)
                    .map_err(|e| (kind.clone(), e)),
            }
        })
    };
    let closed = || {
        (
            String::new(),
            StoreError::Read {
                message: "the read was cancelled".into(),
            },
        )
    };
    if !(req.wait && matches!(req.log, Log::Type(_))) {
        return blocking(host, req).await.map_err(|_| closed())?;
    }
    // Subscribe before reading, so a commit between the read and the wait is not missed.
    let mut committed = store(&host)
        .map_err(|_| (String::new(), StoreError::NoDataDir))?
        .committed();
    loop {
        committed.borrow_and_update();
        let batch = blocking(host.clone(), req.clone())
            .await
            .map_err(|_| closed())??;
        if !batch.events.is_empty() {
            return Ok(batch);
        }
        // Waiting on other actors' commits is no work a stopping host has to drain.
        let waiting = &cell.stats.waiting_for_events;
        waiting.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _done = Decrement(waiting);
        if committed.changed().await.is_err() {
            return Err(closed());
        }
    }
}

/// Takes one off a counter when dropped (the wait ended, or its operation was cancelled).
struct Decrement<'a>(&'a std::sync::atomic::AtomicU64);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

pub(crate) fn reminder_set(mut caller: Caller<'_, ActorState>, ptr: u32, len: u32) -> HostResult {
    let limit = caller.data().group.settings.limits.max_message_bytes;
    let reminder: Reminder = match read(&caller, ptr, len, limit + ENVELOPE_SLACK)? {
        Ok(reminder) => reminder,
        Err(code) => return fail(code),
    };
    let st = caller.data_mut();
    if st.group.kind_of(&reminder.msg_type).is_none() {
        return fail(ErrorCode::UnknownType);
    }
    if reminder.payload.len() > limit {
        return fail(ErrorCode::TooLarge);
    }
    if reminder.period_ms.is_some_and(|p| p < MIN_PERIOD_MS)
        || reminder.name.is_empty()
        || reminder.name.len() > 256
    {
        return fail(ErrorCode::Invalid);
    }
    let stored = StoredReminder {
        // Reminders belong to the address, which every instance of the actor shares.
        actor: st.cell.name.to_string(),
        name: reminder.name,
        msg_type: reminder.msg_type,
        codec: reminder.codec,
        payload: reminder.payload,
        due_ms: (st.host.clock.unix_now().as_millis() as u64).saturating_add(reminder.delay_ms),
        period_ms: reminder.period_ms,
    };
    let done = match st.host.store.get() {
        Ok(store) => store.set_reminder(stored.clone()),
        Err(_) => return fail(ErrorCode::StorageUnavailable),
    };
    let host = st.host.clone();
    let op = st.start_op(async move {
        match done.await {
            Ok(()) => {
                host.reminders.changed(Change::Set(stored));
                Completion::Done
            }
            Err(e) => Completion::Failed(code_of(&stored.actor, &e)),
        }
    });
    op.map_or_else(fail, |op| Ok(op as i64))
}

/// The shortest period of a periodic reminder: reminders are for seconds and longer (timers are
/// for anything shorter).
pub(crate) const MIN_PERIOD_MS: u64 = 1000;

pub(crate) fn reminder_cancel(
    mut caller: Caller<'_, ActorState>,
    ptr: u32,
    len: u32,
) -> HostResult {
    let name = match super::read_name(&caller, ptr, len)? {
        Ok(name) => name,
        Err(code) => return fail(code),
    };
    let st = caller.data_mut();
    let actor = st.cell.name.clone();
    let done = match st.host.store.get() {
        Ok(store) => store.cancel_reminder(actor.clone(), name.clone()),
        Err(_) => return fail(ErrorCode::StorageUnavailable),
    };
    let host = st.host.clone();
    let op = st.start_op(async move {
        match done.await {
            Ok(true) => {
                host.reminders.changed(Change::Cancel {
                    actor: actor.to_string(),
                    name,
                });
                Completion::Done
            }
            Ok(false) => Completion::Failed(ErrorCode::NotFound),
            Err(e) => Completion::Failed(code_of(&actor, &e)),
        }
    });
    op.map_or_else(fail, |op| Ok(op as i64))
}
