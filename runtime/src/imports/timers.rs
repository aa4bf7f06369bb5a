//! Timers: `timer_set` and `timer_cancel`, and `sleep` (an operation that completes later).
//!
//! A timer is a message an instance sends itself after a delay (and then every period). The
//! instance's state keeps the timers ([`crate::actor::Timers`]); the task that drives the
//! instance arms each one on the host clock and, when it fires, queues its message for the guest
//! like a mailbox message (subject to the actor's concurrency), without going through the
//! mailbox: timers die with the instance and do not count as activity.

use std::time::Duration;

use bunraku_abi::{ErrorCode, Timer};
use wasmtime::Caller;

use super::{ENVELOPE_SLACK, HostResult, fail, read};
use crate::actor::ActorState;

pub(crate) fn timer_set(caller: Caller<'_, ActorState>, ptr: u32, len: u32) -> HostResult {
    let limit = caller.data().group.settings.limits.max_message_bytes + ENVELOPE_SLACK;
    let mut caller = caller;
    let timer: Timer = match read(&caller, ptr, len, limit)? {
        Ok(timer) => timer,
        Err(code) => return fail(code),
    };
    let st = caller.data_mut();
    if st.group.kind_of(&timer.msg_type).is_none() {
        return fail(ErrorCode::UnknownType);
    }
    if timer.payload.len() > st.group.settings.limits.max_message_bytes {
        return fail(ErrorCode::TooLarge);
    }
    if timer.period_ms == Some(0) {
        return fail(ErrorCode::Invalid);
    }
    // Due from now, whenever the instance's task gets to arm it.
    let at = st.host.clock.now() + Duration::from_millis(timer.delay_ms);
    match st.timers.set(timer, at) {
        Some(id) => Ok(id as i64),
        None => fail(ErrorCode::TooManyPending),
    }
}

pub(crate) fn sleep(mut caller: Caller<'_, ActorState>, ms: u64) -> HostResult {
    let st = caller.data_mut();
    let wake = st.host.clock.sleep(Duration::from_millis(ms));
    let op = st.start_op(async move {
        wake.await;
        bunraku_abi::Completion::Done
    });
    op.map_or_else(fail, |op| Ok(op as i64))
}

pub(crate) fn timer_cancel(mut caller: Caller<'_, ActorState>, id: u64) -> HostResult {
    if caller.data_mut().timers.cancel(id) {
        Ok(0)
    } else {
        fail(ErrorCode::Invalid)
    }
}
