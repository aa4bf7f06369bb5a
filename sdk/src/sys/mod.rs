//! The host functions as safe, slice-based Rust functions: the one place the SDK touches the
//! host.
//!
//! On `wasm32` they call the `extern "C"` imports of the `bunraku` module, declared from the ABI's
//! table ([`bunraku_abi::declare_host_imports!`]) in [`wasm`](self). On every other target they call
//! [`native`], a thread-local host the [`testing`](crate::testing) harness drives. Both backends
//! have the same functions, with the table's names and raw `i64` results (decode them with
//! [`bunraku_abi::decode_result`]); a function added to the table fails to compile until both
//! backends provide it.

#[cfg(target_arch = "wasm32")]
mod wasm;
#[cfg(target_arch = "wasm32")]
pub(crate) use wasm::{
    actor_ref, cancel, drop_ref, events_append, events_read, events_snapshot, log, next, publish,
    reminder_cancel, reminder_set, reply, request, send, set_status, sleep, spawn, state_load,
    state_save, stop, stream_credit, stream_end, stream_open, stream_read, stream_wait,
    stream_write, subscribe, timer_cancel, timer_set, unsubscribe, unwatch, watch, yield_now,
};

#[cfg(not(target_arch = "wasm32"))]
pub(crate) mod native;
#[cfg(not(target_arch = "wasm32"))]
pub(crate) use native::{
    actor_ref, cancel, drop_ref, events_append, events_read, events_snapshot, log, next, publish,
    reminder_cancel, reminder_set, reply, request, send, set_status, sleep, spawn, state_load,
    state_save, stop, stream_credit, stream_end, stream_open, stream_read, stream_wait,
    stream_write, subscribe, timer_cancel, timer_set, unsubscribe, unwatch, watch, yield_now,
};

/// Refers to one backend function per table entry, so a new host function is a compile error here
/// until it is implemented.
macro_rules! backend_covers_table {
    ($( $(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ident),*) -> $ret:ident,
        capability = $cap:ident, module = $module:ident; )*) => {
        const _: () = { $( let _ = $name; )* };
    };
}
bunraku_abi::for_each_host_fn!(backend_covers_table);
