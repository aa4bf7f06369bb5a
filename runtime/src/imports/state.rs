//! `state_load` and `state_save`: an actor's persisted state in the host's embedded store
//! ([`crate::store`]).
//!
//! The state is one blob per actor instance, keyed by the actor's name and instance index, at
//! most the actor's `max_message_bytes` long. A save is queued for the store's writer at once (so
//! the saves of one instance apply in the order they were made) and completes through the pending
//! operation mechanism once its batch committed. Every store failure reaches the guest as
//! [`ErrorCode::StorageUnavailable`]; the detail goes to the host's log.

use bunraku_abi::{Completion, ErrorCode};
use wasmtime::Caller;

use super::{HostResult, fail, guest_bytes};
use crate::actor::{ActorState, MAX_PENDING_OPS};
use crate::store::Store;

/// The store, or the `StorageUnavailable` result after logging why not.
fn store(st: &ActorState) -> Result<&Store, HostResult> {
    st.host.store.get().map_err(|e| {
        tracing::debug!(actor = %st.cell.name, instance = st.cell.instance, "storage unavailable: {e}");
        fail(ErrorCode::StorageUnavailable)
    })
}

pub(crate) fn state_load(
    mut caller: Caller<'_, ActorState>,
    buf_ptr: u32,
    buf_cap: u32,
) -> HostResult {
    let st = caller.data();
    let store = match store(st) {
        Ok(store) => store,
        Err(result) => return result,
    };
    let state = match store.load(&st.cell.name, st.cell.instance) {
        Ok(Some(state)) => {
            // It has state in the store: a virtual actor may be deactivated without loss.
            st.cell.mark_persisted();
            state
        }
        Ok(None) => return fail(ErrorCode::NotFound),
        Err(e) => {
            tracing::warn!(actor = %st.cell.name, instance = st.cell.instance, "{e}");
            return fail(ErrorCode::StorageUnavailable);
        }
    };
    let len = state.len();
    if len > buf_cap as usize {
        return Ok(len as i64);
    }
    super::write_guest(&mut caller, buf_ptr, &state, "state_load")?;
    Ok(len as i64)
}

pub(crate) fn state_save(mut caller: Caller<'_, ActorState>, ptr: u32, len: u32) -> HostResult {
    let limit = caller.data().group.settings.limits.max_message_bytes;
    if len as usize > limit {
        let st = caller.data();
        tracing::debug!(actor = %st.cell.name, len, limit, "state larger than max_message_bytes refused");
        return fail(ErrorCode::TooLarge);
    }
    let state = guest_bytes(&caller, ptr, len)?.to_vec();
    let st = caller.data_mut();
    st.cell.mark_persisted();
    // Checked before queueing: a save must not be written when its operation is refused.
    if st.ops.len() >= MAX_PENDING_OPS {
        return fail(ErrorCode::TooManyPending);
    }
    let done = match store(st) {
        Ok(store) => store.save(st.cell.name.clone(), st.cell.instance, state),
        Err(result) => return result,
    };
    let actor = st.cell.name.clone();
    let instance = st.cell.instance;
    let op = st.start_op(async move {
        match done.await {
            Ok(()) => Completion::Done,
            Err(e) => {
                tracing::warn!(actor = %actor, instance, "save failed: {e}");
                Completion::Failed(ErrorCode::StorageUnavailable)
            }
        }
    });
    op.map_or_else(fail, |op| Ok(op as i64))
}
