//! Streams: `stream_open`, `stream_write`, `stream_credit`, `stream_wait`, `stream_read`,
//! `stream_end` (see [`crate::streams`]).

use bunraku_abi::{Completion, ErrorCode};
use wasmtime::Caller;

use super::{ENVELOPE_SLACK, HostResult, fail, memory_and_state, read, read_outbound};
use crate::actor::ActorState;
use crate::mailbox::Delivery;
use crate::streams::{Endpoint, Read, Stream, encode_items};

/// Most streams one instance may hold at once (both directions).
pub(crate) const MAX_STREAMS: usize = 1024;

pub(crate) fn stream_open(mut caller: Caller<'_, ActorState>, ptr: u32, len: u32) -> HostResult {
    let (mem, st) = memory_and_state(&mut caller)?;
    let out = match read_outbound(mem, st, ptr, len)? {
        Ok(out) => out,
        Err(code) => return fail(code),
    };
    if st.streams.len() >= MAX_STREAMS {
        return fail(ErrorCode::TooManyPending);
    }
    let (via, refs) = match super::messaging::address(st, &out, |t| crate::grants::Act::Send(t)) {
        Ok(x) => x,
        Err(code) => return fail(code),
    };
    let target = via.as_deref().unwrap_or(out.target);
    let (mut group, env) = match super::messaging::prepare(st, target, &out, Vec::new(), None) {
        Ok(x) => x,
        Err(code) => return fail(code),
    };
    let stream = Stream::new(group.settings.limits.stream_window);
    let delivery = Delivery::shared(env).with(refs, Some(stream.clone()));
    // Opening does not wait for room: a full mailbox is `mailbox full`, as for `try_send`.
    match st.host.try_deliver(&mut group, st.sender_hash, delivery).0 {
        Ok(()) => {}
        Err(crate::mailbox::TrySendError::Full(_)) => {
            return fail(ErrorCode::MailboxFull);
        }
        Err(crate::mailbox::TrySendError::Closed(_)) => {
            return fail(ErrorCode::NoSuchActor);
        }
    }
    match st.add_stream(Endpoint {
        stream,
        writer: true,
    }) {
        Some(id) => Ok(i64::from(id)),
        None => fail(ErrorCode::TooManyPending),
    }
}

/// The endpoint `id` of this instance on the side `writer`; `denied` for a handle it does not
/// hold (or holds for the other side).
fn endpoint(st: &ActorState, id: u32, writer: bool) -> Result<&Endpoint, ErrorCode> {
    match st.streams.get(&id) {
        Some(e) if e.writer == writer => Ok(e),
        _ => {
            crate::grants::log_denial(
                st,
                &format!("denied: stream {id} was never opened to or by this instance"),
            );
            Err(ErrorCode::Denied)
        }
    }
}

pub(crate) fn stream_write(
    caller: Caller<'_, ActorState>,
    id: u32,
    ptr: u32,
    len: u32,
) -> HostResult {
    let (limit, batch_limit) = {
        let st = caller.data();
        let credit = match endpoint(st, id, true).and_then(|e| e.stream.credit()) {
            Ok(credit) => credit,
            Err(code) => return fail(code),
        };
        let limit = st.group.settings.limits.max_message_bytes;
        // A batch within the credit, each item within the limit, and their lengths.
        (limit, limit.saturating_mul(credit.max(1)) + ENVELOPE_SLACK)
    };
    let items: Vec<Vec<u8>> = match read(&caller, ptr, len, batch_limit)? {
        Ok(items) => items,
        Err(code) => return fail(code),
    };
    if items.iter().any(|i| i.len() > limit) {
        return fail(ErrorCode::TooLarge);
    }
    let st = caller.data();
    let e = match endpoint(st, id, true) {
        Ok(e) => e,
        Err(code) => return fail(code),
    };
    match e.stream.write(items) {
        Ok(left) => Ok(left as i64),
        Err(code) => fail(code),
    }
}

pub(crate) fn stream_credit(caller: Caller<'_, ActorState>, id: u32) -> HostResult {
    match endpoint(caller.data(), id, true).and_then(|e| e.stream.credit()) {
        Ok(credit) => Ok(credit as i64),
        Err(code) => fail(code),
    }
}

pub(crate) fn stream_wait(mut caller: Caller<'_, ActorState>, id: u32) -> HostResult {
    let st = caller.data_mut();
    let Some(e) = st.streams.get(&id) else {
        // Logs the denial.
        let _ = endpoint(st, id, true);
        return fail(ErrorCode::Denied);
    };
    let stream = e.stream.clone();
    let writer = e.writer;
    let op = st.start_op(async move {
        if writer {
            stream.writable().await;
        } else {
            stream.readable().await;
        }
        Completion::Done
    });
    op.map_or_else(fail, |op| Ok(op as i64))
}

pub(crate) fn stream_read(
    mut caller: Caller<'_, ActorState>,
    id: u32,
    ptr: u32,
    cap: u32,
) -> HostResult {
    let st = caller.data_mut();
    let stream = match endpoint(st, id, false) {
        Ok(e) => e.stream.clone(),
        Err(code) => return fail(code),
    };
    let items = match stream.read(cap as usize) {
        Ok(Read::Items(items)) => items,
        Ok(Read::Empty) => return Ok(0),
        Ok(Read::TooSmall(need)) => return Ok(need as i64),
        Err(code) => return fail(code),
    };
    let mut buf = std::mem::take(&mut st.scratch);
    buf.clear();
    encode_items(&items, &mut buf);
    let written = super::write_guest(&mut caller, ptr, &buf, "stream_read");
    let len = buf.len();
    caller.data_mut().scratch = buf;
    written.map(|()| len as i64)
}

pub(crate) fn stream_end(mut caller: Caller<'_, ActorState>, id: u32, how: u32) -> HostResult {
    let st = caller.data_mut();
    match st.streams.remove(&id) {
        Some(e) => {
            e.close(how == bunraku_abi::stream_end::ABORT);
            Ok(0)
        }
        None => fail(ErrorCode::Denied),
    }
}
