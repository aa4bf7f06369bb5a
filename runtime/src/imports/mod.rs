//! The host functions a guest imports from the `bunraku` module.
//!
//! Registration is derived from the ABI's single table ([`bunraku_abi::for_each_host_fn!`]): every
//! entry becomes one `func_wrap` that first checks the entry's capability against the actor's
//! grants and then calls the function of the same name in the entry's module here (`messaging`,
//! `pubsub`, `state`, `events`, `lifecycle`, `refs`, `timers`, `streams`, `logging`). A function missing here, or with another signature, does not
//! compile. Functions with a target (`send`, `request`, `publish`, `subscribe`) also check the
//! target once decoded, through [`crate::grants::permits`]; deny by default.
//!
//! Conventions inside host functions: a guest pointer or length that is out of bounds is guest
//! misbehaviour and traps (`Err`); every ordinary failure (unknown actor, full mailbox, timeout,
//! denied) is a status code the guest's SDK turns into a typed error (`Ok(negative)`).

pub(crate) mod events;
pub(crate) mod lifecycle;
pub(crate) mod logging;
pub(crate) mod messaging;
pub(crate) mod pubsub;
pub(crate) mod refs;
pub(crate) mod state;
pub(crate) mod streams;
pub(crate) mod timers;

use bunraku_abi::view::OutboundView;
use bunraku_abi::{Capability, ErrorCode, IMPORT_MODULE, encode_error};
use serde::de::DeserializeOwned;
use wasmtime::{Caller, Linker};

use crate::actor::ActorState;

/// A host function's result: `Ok(value or -code)` or a trap.
pub(crate) type HostResult = wasmtime::Result<i64>;

/// `Ok(-code)`.
pub(crate) fn fail(code: ErrorCode) -> HostResult {
    Ok(encode_error(code))
}

macro_rules! register_host_fns {
    ($( $(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ident),*) -> $ret:ident,
        capability = $cap:ident, module = $module:ident; )*) => {
        /// Registers every host function of the ABI table in `linker`.
        pub(crate) fn register(linker: &mut Linker<ActorState>) -> wasmtime::Result<()> {
            $(
                linker.func_wrap(
                    IMPORT_MODULE,
                    stringify!($name),
                    |caller: Caller<'_, ActorState>, $($arg: $ty),*| -> wasmtime::Result<$ret> {
                        if !check(&caller, Capability::$cap, stringify!($name)) {
                            return fail(ErrorCode::Denied);
                        }
                        $module::$name(caller, $($arg),*)
                    },
                )?;
            )*
            Ok(())
        }
    };
}
bunraku_abi::for_each_host_fn!(register_host_fns);

/// The one capability check every host function passes through, before it decodes anything:
/// the per-capability part of the actor's grants ([`Grants::allows`](crate::Grants::allows)).
/// Functions that name a target check it once decoded ([`crate::grants::permits`]). A refusal is
/// a warning in the actor's log. Inlined into each function's wrapper, where the capability is
/// a constant: `Capability::None` (as `next` has) costs nothing, another one a field's test.
#[inline(always)]
fn check(caller: &Caller<'_, ActorState>, cap: Capability, function: &str) -> bool {
    caller.data().group.settings.grants.allows(cap) || check_further(caller, cap, function)
}

/// [`check`] when the grants lack the capability.
#[cold]
#[inline(never)]
fn check_further(caller: &Caller<'_, ActorState>, cap: Capability, function: &str) -> bool {
    let st = caller.data();
    // An actor reference is a grant of its own: an actor that holds one may send through it
    // (the function checks the handle, or the grant for a name, once it has decoded the target).
    if cap == Capability::Send && !st.refs.is_empty() {
        return true;
    }
    crate::grants::log_denial(
        st,
        &format!("denied: `{function}` needs a {cap:?} grant, and the actor holds none"),
    );
    false
}

/// The guest bytes at `ptr..ptr+len`; traps when out of bounds.
pub(crate) fn guest_bytes<'a>(
    caller: &'a Caller<'_, ActorState>,
    ptr: u32,
    len: u32,
) -> wasmtime::Result<&'a [u8]> {
    let memory = caller
        .data()
        .memory
        .ok_or_else(|| wasmtime::format_err!("no memory"))?;
    memory
        .data(caller)
        .get(ptr as usize..)
        .and_then(|s| s.get(..len as usize))
        .ok_or_else(|| {
            wasmtime::format_err!("guest passed an out-of-bounds buffer {ptr}+{len} to the host")
        })
}

/// Copies `bytes` into guest memory at `ptr`; traps (naming `function`) when out of bounds.
pub(crate) fn write_guest(
    caller: &mut Caller<'_, ActorState>,
    ptr: u32,
    bytes: &[u8],
    function: &str,
) -> wasmtime::Result<()> {
    let memory = caller
        .data()
        .memory
        .ok_or_else(|| wasmtime::format_err!("no memory"))?;
    let len = bytes.len();
    memory
        .data_mut(&mut *caller)
        .get_mut(ptr as usize..)
        .and_then(|s| s.get_mut(..len))
        .ok_or_else(|| {
            wasmtime::format_err!(
                "guest passed an out-of-bounds buffer {ptr}+{len} to `{function}`"
            )
        })?
        .copy_from_slice(bytes);
    Ok(())
}

/// Decodes a postcard value from guest memory: `Ok(Err(code))` for bytes that do not decode or
/// exceed `limit`, a trap for an out-of-bounds buffer.
pub(crate) fn read<T: DeserializeOwned>(
    caller: &Caller<'_, ActorState>,
    ptr: u32,
    len: u32,
    limit: usize,
) -> wasmtime::Result<Result<T, ErrorCode>> {
    if len as usize > limit {
        return Ok(Err(ErrorCode::TooLarge));
    }
    let bytes = guest_bytes(caller, ptr, len)?;
    Ok(bunraku_abi::decode(bytes))
}

/// The guest's memory and the instance's state at once, so that a view decoded from the memory
/// can be read while the state changes.
pub(crate) fn memory_and_state<'a>(
    caller: &'a mut Caller<'_, ActorState>,
) -> wasmtime::Result<(&'a [u8], &'a mut ActorState)> {
    let memory = caller
        .data()
        .memory
        .ok_or_else(|| wasmtime::format_err!("no memory"))?;
    let (mem, st) = memory.data_and_store_mut(caller);
    Ok((mem, st))
}

/// Decodes the [`Outbound`](bunraku_abi::Outbound) a guest passes to `send`, `request`,
/// `publish` or `stream_open` as a view of `mem` (no copy, no serde): `Ok(Err(code))` when it
/// does not decode or exceeds the actor's message limit, a trap for an out-of-bounds buffer.
pub(crate) fn read_outbound<'m>(
    mem: &'m [u8],
    st: &ActorState,
    ptr: u32,
    len: u32,
) -> wasmtime::Result<Result<OutboundView<'m>, ErrorCode>> {
    let limit = st.group.settings.limits.max_message_bytes + ENVELOPE_SLACK;
    if len as usize > limit {
        return Ok(Err(ErrorCode::TooLarge));
    }
    let bytes = mem
        .get(ptr as usize..)
        .and_then(|s| s.get(..len as usize))
        .ok_or_else(|| {
            wasmtime::format_err!("guest passed an out-of-bounds buffer {ptr}+{len} to the host")
        })?;
    Ok(OutboundView::decode(bytes))
}

/// Longest actor name a host function reads (`watch`, `actor_ref`).
const MAX_NAME: u32 = 1024;

/// Reads an actor name argument (UTF-8, lossy): `Ok(Err(TooLarge))` past [`MAX_NAME`] bytes, a
/// trap for an out-of-bounds buffer.
pub(crate) fn read_name(
    caller: &Caller<'_, ActorState>,
    ptr: u32,
    len: u32,
) -> wasmtime::Result<Result<String, ErrorCode>> {
    if len > MAX_NAME {
        return Ok(Err(ErrorCode::TooLarge));
    }
    messaging::read_str(caller, ptr, len).map(Ok)
}

/// Room for the envelope fields around a payload when checking raw buffer sizes.
pub(crate) const ENVELOPE_SLACK: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use bunraku_abi::{HOST_FUNCTIONS, IMPORT_MODULE, WasmType};

    fn wat(t: WasmType) -> &'static str {
        match t {
            WasmType::I32 => "i32",
            WasmType::I64 => "i64",
        }
    }

    #[test]
    fn every_table_entry_is_registered_with_the_table_signature() {
        let engine = crate::test_engine();
        let mut linker = wasmtime::Linker::new(engine.wasmtime());
        super::register(&mut linker).unwrap();
        // A module importing every entry with the table's signature links only if the host
        // registered each one with exactly that signature.
        let imports: String = HOST_FUNCTIONS
            .iter()
            .map(|f| {
                let params: Vec<_> = f.params.iter().map(|&p| wat(p)).collect();
                format!(
                    "(import \"{IMPORT_MODULE}\" \"{}\" (func (param {}) (result {})))\n",
                    f.name,
                    params.join(" "),
                    wat(f.result)
                )
            })
            .collect();
        let module =
            wasmtime::Module::new(engine.wasmtime(), format!("(module {imports})")).unwrap();
        linker
            .instantiate_pre(&module)
            .expect("host registrations match the ABI table");

        let wrong = format!(
            "(module (import \"{IMPORT_MODULE}\" \"next\" (func (param i32) (result i64))))"
        );
        let module = wasmtime::Module::new(engine.wasmtime(), wrong).unwrap();
        assert!(
            linker.instantiate_pre(&module).is_err(),
            "a wrong signature must not link"
        );
    }
}
