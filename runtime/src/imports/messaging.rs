//! Direct messages and request-response: `next`, `send`, `request`, `reply`, `cancel`.

use std::sync::Arc;

use bunraku_abi::view::OutboundView;
use bunraku_abi::{Completion, Envelope, ErrorCode, ReplyBody, mode};
use tokio::sync::oneshot;
use wasmtime::{AsContextMut, Caller};

use super::{ENVELOPE_SLACK, HostResult, fail, guest_bytes, memory_and_state, read, read_outbound};
use crate::actor::{Accepted, ActorGroup, ActorState, LastSent, NextEvent};
use crate::mailbox::{Delivery, Refs, TrySendError};

pub(crate) fn next(
    mut caller: Caller<'_, ActorState>,
    ptr: u32,
    cap: u32,
    in_flight: u32,
) -> HostResult {
    // Every event starts a fresh time budget.
    let budget = caller.data().budget_ticks;
    caller.as_context_mut().set_epoch_deadline(budget);
    if caller.data().staged.is_none() {
        let Some(event) = caller.data_mut().next_event(in_flight) else {
            return Ok(0);
        };
        // A message without extras that fits goes straight into the guest's buffer.
        let event = match event {
            NextEvent::Delivered(a) => match write_frame(&mut caller, a, ptr, cap) {
                Ok(result) => return result,
                Err(a) => NextEvent::Delivered(a),
            },
            other => other,
        };
        let st = caller.data_mut();
        let mut buf = std::mem::take(&mut st.scratch);
        buf.clear();
        event.encode_into(&mut buf);
        st.staged = Some(buf);
    }
    let st = caller.data();
    let len = st.staged.as_ref().map_or(0, Vec::len);
    if len > cap as usize {
        return Ok(len as i64);
    }
    let memory = st
        .memory
        .ok_or_else(|| wasmtime::format_err!("no memory"))?;
    let (mem, st) = memory.data_and_store_mut(&mut caller);
    let dest = mem
        .get_mut(ptr as usize..)
        .and_then(|s| s.get_mut(..len))
        .ok_or_else(|| {
            wasmtime::format_err!("guest passed an out-of-bounds buffer {ptr}+{len} to `next`")
        })?;
    let staged = st.staged.take().expect("staged above");
    dest.copy_from_slice(&staged);
    st.scratch = staged;
    let last = if st.last { bunraku_abi::NEXT_LAST } else { 0 };
    Ok((len as u64 | last) as i64)
}

/// Writes the frame of message `a` into the guest's buffer at `ptr`, when it has no extras and
/// fits in `cap` bytes: `next`'s result; `a` back otherwise.
#[inline(always)]
fn write_frame(
    caller: &mut Caller<'_, ActorState>,
    a: Accepted,
    ptr: u32,
    cap: u32,
) -> Result<HostResult, Accepted> {
    let Some(frame) = a.plain_frame().filter(|f| f.len() <= cap as usize) else {
        return Err(a);
    };
    let st = caller.data();
    let last = if st.last { bunraku_abi::NEXT_LAST } else { 0 };
    let Some(memory) = st.memory else {
        return Ok(Err(wasmtime::format_err!("no memory")));
    };
    let len = frame.len();
    let Some(dest) = memory
        .data_mut(caller)
        .get_mut(ptr as usize..)
        .and_then(|s| s.get_mut(..len))
    else {
        return Ok(Err(wasmtime::format_err!(
            "guest passed an out-of-bounds buffer {ptr}+{len} to `next`"
        )));
    };
    frame.write(dest);
    a.written();
    Ok(Ok((len as u64 | last) as i64))
}

/// Finds the group for a name: the instance's cache first, then the registry.
pub(crate) fn resolve(st: &mut ActorState, name: &str) -> Option<Arc<ActorGroup>> {
    if let Some(g) = st.resolved.get(name) {
        return Some(g.clone());
    }
    let g = st.host.resolve(name)?;
    st.resolved.insert(name.to_owned(), g.clone());
    Some(g)
}

/// Where an outbound message goes and what it carries: through `to_ref`, a handle of this
/// instance's reference table (the handle is the grant), or by name, which needs the grant `act`
/// names; and the actors its `attachments` stand for. A handle this instance does not hold is
/// `denied`. The name comes back only when it is not `out.target` (a handle's actor).
pub(crate) fn address(
    st: &ActorState,
    out: &OutboundView<'_>,
    act: fn(&str) -> crate::grants::Act<'_>,
) -> Result<(Option<Arc<str>>, Refs), ErrorCode> {
    let forged = |handle: u32| {
        crate::grants::log_denial(
            st,
            &format!("denied: actor reference {handle} was never issued to this instance"),
        );
        ErrorCode::Denied
    };
    let via = match out.to_ref {
        Some(handle) => Some(st.refs.get(&handle).ok_or_else(|| forged(handle))?.clone()),
        None if crate::grants::permits(st, act(out.target)) => None,
        None => return Err(ErrorCode::Denied),
    };
    if out.attachments.is_empty() {
        return Ok((via, None));
    }
    if out.attachments.len() > bunraku_abi::MAX_ATTACHMENTS {
        return Err(ErrorCode::Invalid);
    }
    let refs = out
        .attachments
        .iter()
        .map(|h| st.refs.get(&h).cloned().ok_or_else(|| forged(h)))
        .collect::<Result<Box<[_]>, _>>()?;
    Ok((via, Some(refs)))
}

/// Checks an outbound message to `target` against that actor and builds its envelope.
pub(crate) fn prepare(
    st: &mut ActorState,
    target: &str,
    out: &OutboundView<'_>,
    chain: Vec<u64>,
    deadline_ms: Option<u64>,
) -> Result<(Arc<ActorGroup>, Arc<Envelope>), ErrorCode> {
    let group = resolve(st, target).ok_or(ErrorCode::NoSuchActor)?;
    accepts(st, &group, out, false)?;
    let env = st
        .host
        .envelope_of(out, chain, deadline_ms, st.current.trace, &st.group.name);
    Ok((group, env))
}

/// Whether `group` takes `out` from this instance: a type it handles (known to be when
/// `type_known`), a payload within both actors' size limits.
fn accepts(
    st: &ActorState,
    group: &ActorGroup,
    out: &OutboundView<'_>,
    type_known: bool,
) -> Result<(), ErrorCode> {
    if !type_known && group.kind_of(out.msg_type).is_none() {
        return Err(ErrorCode::UnknownType);
    }
    let limit = group
        .settings
        .limits
        .max_message_bytes
        .min(st.group.settings.limits.max_message_bytes);
    if out.payload.len() > limit {
        return Err(ErrorCode::TooLarge);
    }
    Ok(())
}

pub(crate) fn send(
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
    // A plain send by name to the name this instance last sent to by name was granted then
    // (grants are fixed for an instance's life): no second look at them.
    let granted = out.to_ref.is_none()
        && out.attachments.is_empty()
        && st
            .last_sent
            .as_ref()
            .is_some_and(|last| last.granted && *last.name == *out.target);
    let (via, refs) = if granted {
        (None, None)
    } else {
        match address(st, &out, |t| crate::grants::Act::Send(t)) {
            Ok(x) => x,
            Err(code) => return fail(code),
        }
    };
    let target = via.as_deref().unwrap_or(out.target);
    // The name this instance sent to last is found without a look-up, and its group is used
    // without a reference count: most senders send to one peer after another.
    if st
        .last_sent
        .as_ref()
        .is_none_or(|last| *last.name != *target)
    {
        let Some(group) = resolve(st, target) else {
            return fail(ErrorCode::NoSuchActor);
        };
        st.last_sent = Some(LastSent {
            name: target.into(),
            group,
            msg_type: String::new(),
            granted: false,
        });
    }
    if via.is_none() {
        // Sent by name, and the grants allowed it (a send through a reference does not say).
        st.last_sent.as_mut().expect("set above").granted = true;
    }
    let last = st.last_sent.as_ref().expect("set above");
    // The type sent last to this group is known to be handled: no look-up for it.
    let known = !last.msg_type.is_empty() && last.msg_type == out.msg_type;
    if let Err(code) = accepts(st, &last.group, &out, known) {
        return fail(code);
    }
    if !known {
        let last = st.last_sent.as_mut().expect("set above");
        last.msg_type.clear();
        last.msg_type.push_str(out.msg_type);
    }
    let group = &st.last_sent.as_ref().expect("set above").group;
    let env = st
        .host
        .envelope_of(&out, Vec::new(), None, st.current.trace, &st.group.name);
    let delivery = match group
        .pick(st.sender_hash)
        .tx
        .try_send(Delivery::shared(env).with(refs, None))
    {
        Ok(()) => return Ok(0),
        Err(TrySendError::Full(d) | TrySendError::Closed(d)) => d,
    };
    // Full, or closed (an evicted activation, or a stopped actor): the general way, which
    // follows an activation to the next one, or waits for room.
    let mut group = group.clone();
    let (sent, moved) = st.host.try_deliver(&mut group, st.sender_hash, delivery);
    if moved {
        // An evicted activation was followed to the next one: remember that one.
        st.resolved.insert(group.name.to_string(), group.clone());
        st.last_sent = None;
    }
    match sent {
        Ok(()) => Ok(0),
        Err(TrySendError::Full(_)) if mode == mode::TRY => fail(ErrorCode::MailboxFull),
        Err(TrySendError::Full(delivery)) => {
            let host = st.host.clone();
            let hash = st.sender_hash;
            let op = st.start_op(async move {
                match host.deliver_waiting(group, hash, delivery).await {
                    Ok(()) => Completion::Done,
                    Err(_) => Completion::Failed(ErrorCode::NoSuchActor),
                }
            });
            op.map_or_else(fail, |op| Ok(op as i64))
        }
        Err(TrySendError::Closed(_)) => {
            // The name was stopped: forget the cached group (cached under its own name).
            st.resolved.remove(&*group.name);
            st.last_sent = None;
            fail(ErrorCode::NoSuchActor)
        }
    }
}

pub(crate) fn request(mut caller: Caller<'_, ActorState>, ptr: u32, len: u32) -> HostResult {
    let (mem, st) = memory_and_state(&mut caller)?;
    let out = match read_outbound(mem, st, ptr, len)? {
        Ok(out) => out,
        Err(code) => return fail(code),
    };
    let (via, refs) = match address(st, &out, |t| crate::grants::Act::Request(t)) {
        Ok(x) => x,
        Err(code) => return fail(code),
    };
    let timeout = out
        .timeout_ms
        .map(std::time::Duration::from_millis)
        .unwrap_or(st.group.settings.limits.request_timeout);
    let deadline = st.host.clock.unix_now() + timeout;
    let mut chain = st.current.chain.clone();
    chain.push(st.cell.id);
    let target = via.as_deref().unwrap_or(out.target);
    let deadline_ms = Some(deadline.as_millis() as u64);
    let (mut group, env) = match prepare(st, target, &out, chain, deadline_ms) {
        Ok(x) => x,
        Err(code) => return fail(code),
    };
    let cell = group.pick(st.sender_hash).clone();
    if env.chain.contains(&cell.id) {
        tracing::debug!(actor = %st.cell.name, target = %group.name, "deadlock refused");
        return fail(ErrorCode::Deadlock);
    }
    let (reply_tx, reply_rx) = oneshot::channel();
    let delivery = Delivery {
        reply: Some(reply_tx),
        ..Delivery::shared(env).with(refs, None)
    };
    let (sent, moved) = st.host.try_deliver(&mut group, st.sender_hash, delivery);
    if moved {
        st.resolved.insert(group.name.to_string(), group.clone());
        st.last_sent = None;
    }
    let waiting = match sent {
        Ok(()) => None,
        Err(TrySendError::Full(delivery)) => Some((st.host.clone(), group, delivery)),
        Err(TrySendError::Closed(_)) => {
            // What `send` keeps of the name goes too.
            st.resolved.remove(&*group.name);
            st.last_sent = None;
            return fail(ErrorCode::NoSuchActor);
        }
    };
    let hash = st.sender_hash;
    let sleep = st.host.clock.sleep(timeout);
    let op = st.start_op(async move {
        let exchange = async move {
            if let Some((host, target, delivery)) = waiting
                && host.deliver_waiting(target, hash, delivery).await.is_err()
            {
                return Completion::Failed(ErrorCode::NoSuchActor);
            }
            match reply_rx.await {
                Ok(body) => Completion::Reply(body),
                Err(_) => Completion::Failed(ErrorCode::TargetFailed),
            }
        };
        tokio::select! {
            c = exchange => c,
            () = sleep => Completion::Failed(ErrorCode::Timeout),
        }
    });
    op.map_or_else(fail, |op| Ok(op as i64))
}

pub(crate) fn reply(caller: Caller<'_, ActorState>, handle: u32, ptr: u32, len: u32) -> HostResult {
    let limit = caller.data().group.settings.limits.max_message_bytes + ENVELOPE_SLACK;
    let mut caller = caller;
    let body: Result<ReplyBody, ErrorCode> = read(&caller, ptr, len, limit)?;
    let st = caller.data_mut();
    let Some(slot) = st.replies.remove(&handle) else {
        tracing::warn!(actor = %st.cell.name, handle, "reply with a handle this instance does not hold");
        return fail(ErrorCode::Denied);
    };
    let body = match body {
        Ok(ReplyBody::Ok { payload, .. })
            if payload.len() > st.group.settings.limits.max_message_bytes =>
        {
            ReplyBody::Error {
                code: ErrorCode::TooLarge,
                message: format!(
                    "the reply of {} bytes exceeds the limit of {} bytes",
                    payload.len(),
                    st.group.settings.limits.max_message_bytes
                ),
            }
        }
        Ok(body) => body,
        Err(code) => ReplyBody::Error {
            code,
            message: "the actor sent a malformed reply".into(),
        },
    };
    // The requester may have timed out already: nothing to do then.
    let _ = slot.send(body);
    Ok(0)
}

pub(crate) fn cancel(mut caller: Caller<'_, ActorState>, op: u32) -> HostResult {
    // The operation's future keeps running to completion (a held message may still be
    // delivered: sends are at-most-once), but its outcome is not handed to the guest.
    let known = caller.data_mut().ops.remove(&op).is_some();
    if known {
        Ok(0)
    } else {
        fail(ErrorCode::Invalid)
    }
}

pub(crate) fn yield_now(mut caller: Caller<'_, ActorState>) -> HostResult {
    caller.data_mut().resume = true;
    Ok(0)
}

/// Reads a UTF-8 string argument (lossy).
pub(crate) fn read_str(
    caller: &Caller<'_, ActorState>,
    ptr: u32,
    len: u32,
) -> wasmtime::Result<String> {
    Ok(String::from_utf8_lossy(guest_bytes(caller, ptr, len)?).into_owned())
}
