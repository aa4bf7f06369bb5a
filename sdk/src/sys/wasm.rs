//! The wasm backend: the `bunraku` imports, declared from the ABI's table.
//!
//! Pointers and lengths are `u32` (wasm32 addresses). The host bounds-checks every range it is
//! given and traps on one outside the guest's memory, and it only reads or writes inside the
//! range for the duration of the call.

mod imports {
    bunraku_abi::declare_host_imports!();
}

/// A guest address as the host sees it.
fn addr(ptr: *const u8) -> u32 {
    // wasm32 addresses are 32 bits wide.
    ptr.addr() as u32
}

/// A guest length as the host sees it.
fn len(bytes: &[u8]) -> u32 {
    // A slice in a 32-bit address space is shorter than 4 GiB.
    bytes.len() as u32
}

pub(crate) fn next(buf: &mut [u8], in_flight: u32) -> i64 {
    // SAFETY: the host writes at most `buf.len()` bytes into `buf`, which is exclusively
    // borrowed for the call.
    unsafe { imports::next(addr(buf.as_mut_ptr()), len(buf), in_flight) }
}

pub(crate) fn send(outbound: &[u8], mode: u32) -> i64 {
    // SAFETY: the host only reads `outbound`, which is borrowed for the call.
    unsafe { imports::send(addr(outbound.as_ptr()), len(outbound), mode) }
}

pub(crate) fn request(outbound: &[u8]) -> i64 {
    // SAFETY: the host only reads `outbound`, which is borrowed for the call.
    unsafe { imports::request(addr(outbound.as_ptr()), len(outbound)) }
}

pub(crate) fn reply(handle: u32, body: &[u8]) -> i64 {
    // SAFETY: the host only reads `body`, which is borrowed for the call.
    unsafe { imports::reply(handle, addr(body.as_ptr()), len(body)) }
}

pub(crate) fn publish(outbound: &[u8], mode: u32) -> i64 {
    // SAFETY: the host only reads `outbound`, which is borrowed for the call.
    unsafe { imports::publish(addr(outbound.as_ptr()), len(outbound), mode) }
}

pub(crate) fn subscribe(subscribe: &[u8]) -> i64 {
    // SAFETY: the host only reads `subscribe`, which is borrowed for the call.
    unsafe { imports::subscribe(addr(subscribe.as_ptr()), len(subscribe)) }
}

pub(crate) fn unsubscribe(id: u64) -> i64 {
    // SAFETY: no memory is passed.
    unsafe { imports::unsubscribe(id) }
}

pub(crate) fn cancel(op: u32) -> i64 {
    // SAFETY: no memory is passed.
    unsafe { imports::cancel(op) }
}

pub(crate) fn yield_now() -> i64 {
    // SAFETY: no memory is passed.
    unsafe { imports::yield_now() }
}

pub(crate) fn state_load(buf: &mut [u8]) -> i64 {
    // SAFETY: the host writes at most `buf.len()` bytes into `buf`, which is exclusively
    // borrowed for the call.
    unsafe { imports::state_load(addr(buf.as_mut_ptr()), len(buf)) }
}

pub(crate) fn state_save(state: &[u8]) -> i64 {
    // SAFETY: the host only reads `state`, which is borrowed for the call.
    unsafe { imports::state_save(addr(state.as_ptr()), len(state)) }
}

pub(crate) fn stop() -> i64 {
    // SAFETY: no memory is passed.
    unsafe { imports::stop() }
}

pub(crate) fn watch(actor: &[u8]) -> i64 {
    // SAFETY: the host only reads `actor`, which is borrowed for the call.
    unsafe { imports::watch(addr(actor.as_ptr()), len(actor)) }
}

pub(crate) fn unwatch(id: u64) -> i64 {
    // SAFETY: no memory is passed.
    unsafe { imports::unwatch(id) }
}

pub(crate) fn spawn(req: &[u8]) -> i64 {
    // SAFETY: the host only reads `req`, which is borrowed for the call.
    unsafe { imports::spawn(addr(req.as_ptr()), len(req)) }
}

pub(crate) fn actor_ref(name: &[u8]) -> i64 {
    // SAFETY: the host only reads `name`, which is borrowed for the call.
    unsafe { imports::actor_ref(addr(name.as_ptr()), len(name)) }
}

pub(crate) fn drop_ref(handle: u32) -> i64 {
    // SAFETY: no memory is passed.
    unsafe { imports::drop_ref(handle) }
}

pub(crate) fn timer_set(timer: &[u8]) -> i64 {
    // SAFETY: the host only reads `timer`, which is borrowed for the call.
    unsafe { imports::timer_set(addr(timer.as_ptr()), len(timer)) }
}

pub(crate) fn stream_open(outbound: &[u8]) -> i64 {
    // SAFETY: the host only reads `outbound`, which is borrowed for the call.
    unsafe { imports::stream_open(addr(outbound.as_ptr()), len(outbound)) }
}

pub(crate) fn stream_write(stream: u32, batch: &[u8]) -> i64 {
    // SAFETY: the host only reads `batch`, which is borrowed for the call.
    unsafe { imports::stream_write(stream, addr(batch.as_ptr()), len(batch)) }
}

pub(crate) fn stream_credit(stream: u32) -> i64 {
    // SAFETY: no memory is passed.
    unsafe { imports::stream_credit(stream) }
}

pub(crate) fn stream_wait(stream: u32) -> i64 {
    // SAFETY: no memory is passed.
    unsafe { imports::stream_wait(stream) }
}

pub(crate) fn stream_read(stream: u32, buf: &mut [u8]) -> i64 {
    // SAFETY: the host writes at most `buf.len()` bytes into `buf`, borrowed mutably for the call.
    unsafe { imports::stream_read(stream, addr(buf.as_ptr()), len(buf)) }
}

pub(crate) fn stream_end(stream: u32, how: u32) -> i64 {
    // SAFETY: no memory is passed.
    unsafe { imports::stream_end(stream, how) }
}

pub(crate) fn sleep(ms: u64) -> i64 {
    // SAFETY: no memory is passed.
    unsafe { imports::sleep(ms) }
}

pub(crate) fn timer_cancel(id: u64) -> i64 {
    // SAFETY: no memory is passed.
    unsafe { imports::timer_cancel(id) }
}

pub(crate) fn events_append(append: &[u8]) -> i64 {
    // SAFETY: the host only reads `append`, which is borrowed for the call.
    unsafe { imports::events_append(addr(append.as_ptr()), len(append)) }
}

pub(crate) fn events_read(read: &[u8]) -> i64 {
    // SAFETY: the host only reads `read`, which is borrowed for the call.
    unsafe { imports::events_read(addr(read.as_ptr()), len(read)) }
}

pub(crate) fn events_snapshot(snapshot: &[u8]) -> i64 {
    // SAFETY: the host only reads `snapshot`, which is borrowed for the call.
    unsafe { imports::events_snapshot(addr(snapshot.as_ptr()), len(snapshot)) }
}

pub(crate) fn reminder_set(reminder: &[u8]) -> i64 {
    // SAFETY: the host only reads `reminder`, which is borrowed for the call.
    unsafe { imports::reminder_set(addr(reminder.as_ptr()), len(reminder)) }
}

pub(crate) fn reminder_cancel(name: &[u8]) -> i64 {
    // SAFETY: the host only reads `name`, which is borrowed for the call.
    unsafe { imports::reminder_cancel(addr(name.as_ptr()), len(name)) }
}

pub(crate) fn set_status(status: &[u8]) -> i64 {
    // SAFETY: the host only reads `status`, which is borrowed for the call.
    unsafe { imports::set_status(addr(status.as_ptr()), len(status)) }
}

pub(crate) fn log(level: u32, line: &[u8]) -> i64 {
    // SAFETY: the host only reads `line`, which is borrowed for the call.
    unsafe { imports::log(level, addr(line.as_ptr()), len(line)) }
}
