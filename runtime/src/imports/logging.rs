//! `log`: a guest's log lines, tagged with the actor's name.

use wasmtime::Caller;

use super::HostResult;
use crate::actor::ActorState;

/// Longest log line kept; longer lines are cut.
const MAX_LINE: u32 = 16 * 1024;

pub(crate) fn log(caller: Caller<'_, ActorState>, level: u32, ptr: u32, len: u32) -> HostResult {
    let text = super::messaging::read_str(&caller, ptr, len.min(MAX_LINE))?;
    let st = caller.data();
    st.host
        .logs
        .emit(&st.cell.name, st.cell.instance, level, &text);
    Ok(0)
}
