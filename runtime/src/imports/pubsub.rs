//! Publish-subscribe: `publish`, `subscribe`, `unsubscribe`.
//!
//! `publish` needs a granted pattern that matches the subject, `subscribe` a granted pattern that
//! contains the requested one; `unsubscribe` takes a subscription id this instance holds (a
//! made-up id is denied).

use bunraku_abi::{Completion, ErrorCode, Subscribe, mode};
use wasmtime::Caller;

use super::{ENVELOPE_SLACK, HostResult, fail, memory_and_state, read, read_outbound};
use crate::actor::ActorState;
use crate::grants::{Act, permits};
use crate::host::Fanout;
use crate::pubsub::SubTarget;
use crate::subject::{Pattern, validate_subject};

pub(crate) fn publish(
    mut caller: Caller<'_, ActorState>,
    ptr: u32,
    len: u32,
    mode: u32,
) -> HostResult {
    let (mem, st) = memory_and_state(&mut caller)?;
    let out = match read_outbound(mem, st, ptr, len)? {
        Ok(out) => out,
        Err(code) => return fail(code),
    };
    // References go to one actor at a time, never to whoever subscribes.
    if validate_subject(out.target).is_err() || out.to_ref.is_some() || !out.attachments.is_empty()
    {
        return fail(ErrorCode::Invalid);
    }
    if !permits(st, Act::Publish(out.target)) {
        return fail(ErrorCode::Denied);
    }
    if out.payload.len() > st.group.settings.limits.max_message_bytes {
        return fail(ErrorCode::TooLarge);
    }
    let fanout = st.host.fanout(
        out.to_outbound(),
        st.current.trace,
        &st.group.name,
        st.sender_hash,
        mode == mode::WAIT,
    );
    match fanout {
        Fanout {
            waiting, full: 0, ..
        } if waiting.is_empty() => Ok(0),
        Fanout { waiting, .. } if waiting.is_empty() => fail(ErrorCode::MailboxFull),
        Fanout { waiting, .. } => {
            let op = st.start_op(async move {
                for (tx, delivery) in waiting {
                    // A subscriber that went away meanwhile just misses the message.
                    let _ = tx.send(delivery).await;
                }
                Completion::Done
            });
            op.map_or_else(fail, |op| Ok(op as i64))
        }
    }
}

pub(crate) fn subscribe(caller: Caller<'_, ActorState>, ptr: u32, len: u32) -> HostResult {
    let mut caller = caller;
    let sub: Subscribe = match read(&caller, ptr, len, ENVELOPE_SLACK)? {
        Ok(sub) => sub,
        Err(code) => return fail(code),
    };
    let Ok(pattern) = Pattern::parse(&sub.pattern) else {
        return fail(ErrorCode::Invalid);
    };
    if !permits(caller.data(), Act::Subscribe(&pattern)) {
        return fail(ErrorCode::Denied);
    }
    let st = caller.data_mut();
    let id = st
        .host
        .pubsub
        .subscribe(pattern, SubTarget::Instance(st.cell.clone()), sub.policy);
    st.subscriptions.push(id);
    Ok(id as i64)
}

pub(crate) fn unsubscribe(mut caller: Caller<'_, ActorState>, id: u64) -> HostResult {
    let st = caller.data_mut();
    let Some(pos) = st.subscriptions.iter().position(|&s| s == id) else {
        return fail(ErrorCode::Denied);
    };
    st.subscriptions.swap_remove(pos);
    st.host.pubsub.unsubscribe(&[id]);
    Ok(0)
}
