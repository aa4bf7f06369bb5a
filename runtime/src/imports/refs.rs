//! Actor references: `actor_ref` issues a handle in the instance's reference table, `drop_ref`
//! releases one.
//!
//! A reference is a capability: whoever holds a handle may send to and call the actor it stands
//! for (`Outbound::to_ref`) and pass it on (`Outbound::attachments`), without a grant for the
//! actor's name. Handles are numbers in a per-instance table the host keeps, so a guest cannot
//! make one up: a number it was not issued is `denied`. A reference names an address, not an
//! instance: it survives the target's restarts, reaches a virtual actor's next activation, and
//! fails with `no such actor` once the name is gone. Handles end with the instance that holds
//! them.

use bunraku_abi::ErrorCode;
use wasmtime::Caller;

use super::{HostResult, fail, read_name};
use crate::actor::ActorState;
use crate::grants::{Act, permits};

pub(crate) fn actor_ref(mut caller: Caller<'_, ActorState>, ptr: u32, len: u32) -> HostResult {
    let name = match read_name(&caller, ptr, len)? {
        Ok(name) => name,
        Err(code) => return fail(code),
    };
    let st = caller.data_mut();
    let own = *st.group.name == *name;
    if !own && !permits(st, Act::Send(&name)) {
        return fail(ErrorCode::Denied);
    }
    let target = if own {
        st.group.name.clone()
    } else if let Some(group) = st.host.registry.lookup(&name) {
        group.name.clone()
    } else if st.host.is_virtual_address(&name) {
        name.into()
    } else {
        return fail(ErrorCode::NoSuchActor);
    };
    match st.issue_ref(target) {
        Some(handle) => Ok(i64::from(handle)),
        None => fail(ErrorCode::TooManyPending),
    }
}

pub(crate) fn drop_ref(mut caller: Caller<'_, ActorState>, handle: u32) -> HostResult {
    match caller.data_mut().refs.remove(&handle) {
        Some(_) => Ok(0),
        None => fail(ErrorCode::Invalid),
    }
}
