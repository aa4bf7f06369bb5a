//! `wasi_snapshot_preview1`, as an actor sees it.
//!
//! Every function is a plain synchronous host function (wasmtime-wasi's preview1 adapter blocks
//! on a runtime internally, which must not happen inside the host's tokio workers):
//!
//! | function | behaviour |
//! |---|---|
//! | `fd_write` on 1 and 2 | lines go to the actor's log (stdout at info, stderr at warn) |
//! | `clock_time_get`, `clock_res_get` | the host's [`Clock`](crate::clock::Clock) |
//! | `random_get` | the host's [`Entropy`](crate::clock::Entropy) |
//! | `args_*`, `environ_*` | empty |
//! | `fd_prestat_get` | `EBADF`: no preopened directories, so no file system |
//! | `poll_oneoff` | traps: a blocking sleep would hold a host thread; use the SDK's timers |
//! | `proc_exit` | traps with the exit code |
//! | `sched_yield` | returns at once |
//! | anything else | `ERRNO_NOTCAPABLE` (no file system, no network) |

use bunraku_abi::level;
use wasmtime::{Caller, FuncType, Linker, Val};

use crate::actor::ActorState;

/// The WASI import module name.
pub(crate) const MODULE: &str = "wasi_snapshot_preview1";

const ERRNO_SUCCESS: i32 = 0;
const ERRNO_BADF: i32 = 8;
const ERRNO_INVAL: i32 = 28;
const ERRNO_NOTCAPABLE: i32 = 76;

/// Functions with a real implementation; every other WASI import gets a `NOTCAPABLE` stub.
pub(crate) const IMPLEMENTED: &[&str] = &[
    "fd_write",
    "fd_prestat_get",
    "fd_prestat_dir_name",
    "clock_time_get",
    "clock_res_get",
    "random_get",
    "args_get",
    "args_sizes_get",
    "environ_get",
    "environ_sizes_get",
    "poll_oneoff",
    "proc_exit",
    "sched_yield",
];

/// Longest partial line buffered per stream before it is logged anyway.
const MAX_LINE: usize = 16 * 1024;

fn write_bytes(
    caller: &mut Caller<'_, ActorState>,
    ptr: u32,
    bytes: &[u8],
) -> wasmtime::Result<()> {
    let memory = caller
        .data()
        .memory
        .ok_or_else(|| wasmtime::format_err!("no memory"))?;
    let dest = memory
        .data_mut(caller)
        .get_mut(ptr as usize..)
        .and_then(|s| s.get_mut(..bytes.len()))
        .ok_or_else(|| wasmtime::format_err!("WASI call with an out-of-bounds pointer {ptr}"))?;
    dest.copy_from_slice(bytes);
    Ok(())
}

fn read_u32(mem: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(mem.get(at..at + 4)?.try_into().ok()?))
}

/// Registers the implemented functions.
pub(crate) fn register(linker: &mut Linker<ActorState>) -> wasmtime::Result<()> {
    linker.func_wrap(MODULE, "fd_write", fd_write)?;
    linker.func_wrap(
        MODULE,
        "fd_prestat_get",
        |_: Caller<'_, ActorState>, _: i32, _: i32| ERRNO_BADF,
    )?;
    linker.func_wrap(
        MODULE,
        "fd_prestat_dir_name",
        |_: Caller<'_, ActorState>, _: i32, _: i32, _: i32| ERRNO_BADF,
    )?;
    linker.func_wrap(
        MODULE,
        "clock_time_get",
        |mut caller: Caller<'_, ActorState>,
         id: i32,
         _precision: i64,
         out: i32|
         -> wasmtime::Result<i32> {
            let clock = &caller.data().host.clock;
            let now = match id {
                0 => clock.unix_now(),
                1..=3 => clock.now(),
                _ => return Ok(ERRNO_INVAL),
            };
            write_bytes(
                &mut caller,
                out as u32,
                &(now.as_nanos() as u64).to_le_bytes(),
            )?;
            Ok(ERRNO_SUCCESS)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "clock_res_get",
        |mut caller: Caller<'_, ActorState>, _id: i32, out: i32| -> wasmtime::Result<i32> {
            write_bytes(&mut caller, out as u32, &1_000u64.to_le_bytes())?;
            Ok(ERRNO_SUCCESS)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "random_get",
        |mut caller: Caller<'_, ActorState>, ptr: i32, len: i32| -> wasmtime::Result<i32> {
            let mut buf = vec![0u8; len as u32 as usize];
            caller.data().host.entropy.fill(&mut buf);
            write_bytes(&mut caller, ptr as u32, &buf)?;
            Ok(ERRNO_SUCCESS)
        },
    )?;
    for (name, _) in [("args_sizes_get", ()), ("environ_sizes_get", ())] {
        linker.func_wrap(
            MODULE,
            name,
            |mut caller: Caller<'_, ActorState>, count: i32, size: i32| -> wasmtime::Result<i32> {
                write_bytes(&mut caller, count as u32, &0u32.to_le_bytes())?;
                write_bytes(&mut caller, size as u32, &0u32.to_le_bytes())?;
                Ok(ERRNO_SUCCESS)
            },
        )?;
    }
    for name in ["args_get", "environ_get"] {
        linker.func_wrap(MODULE, name, |_: Caller<'_, ActorState>, _: i32, _: i32| {
            ERRNO_SUCCESS
        })?;
    }
    linker.func_wrap(
        MODULE,
        "poll_oneoff",
        |_: Caller<'_, ActorState>, _: i32, _: i32, _: i32, _: i32| -> wasmtime::Result<i32> {
            wasmtime::bail!(
                "the actor tried to block (std::thread::sleep or another blocking wait): that \
                 would hold a host thread; wait with the SDK's timers or an awaited request instead"
            )
        },
    )?;
    linker.func_wrap(
        MODULE,
        "proc_exit",
        |_: Caller<'_, ActorState>, code: i32| -> wasmtime::Result<()> {
            wasmtime::bail!("the actor called exit({code})")
        },
    )?;
    linker.func_wrap(MODULE, "sched_yield", |_: Caller<'_, ActorState>| {
        ERRNO_SUCCESS
    })?;
    Ok(())
}

/// Defines `name` with type `ty` as a function returning `ERRNO_NOTCAPABLE`.
pub(crate) fn define_not_capable(
    linker: &mut Linker<ActorState>,
    name: &str,
    ty: FuncType,
) -> wasmtime::Result<()> {
    linker.func_new(MODULE, name, ty, |_, _, results| {
        if let Some(r) = results.first_mut() {
            *r = Val::I32(ERRNO_NOTCAPABLE);
        }
        Ok(())
    })?;
    Ok(())
}

fn fd_write(
    mut caller: Caller<'_, ActorState>,
    fd: i32,
    iovs: i32,
    iovs_len: i32,
    nwritten: i32,
) -> wasmtime::Result<i32> {
    let stream = match fd {
        1 => 0,
        2 => 1,
        _ => return Ok(ERRNO_BADF),
    };
    let memory = caller
        .data()
        .memory
        .ok_or_else(|| wasmtime::format_err!("no memory"))?;
    let (mem, st) = memory.data_and_store_mut(&mut caller);
    let oob = || wasmtime::format_err!("fd_write with an out-of-bounds iovec");
    let mut total: u32 = 0;
    for i in 0..iovs_len as u32 as usize {
        let at = iovs as u32 as usize + i * 8;
        let ptr = read_u32(mem, at).ok_or_else(oob)? as usize;
        let len = read_u32(mem, at + 4).ok_or_else(oob)? as usize;
        let bytes = mem.get(ptr..).and_then(|s| s.get(..len)).ok_or_else(oob)?;
        st.stdio[stream].extend_from_slice(bytes);
        total = total.wrapping_add(len as u32);
    }
    flush_lines(st, stream, false);
    let out = nwritten as u32 as usize;
    mem.get_mut(out..out + 4)
        .ok_or_else(oob)?
        .copy_from_slice(&total.to_le_bytes());
    Ok(ERRNO_SUCCESS)
}

/// Logs every complete line of a stream (and a partial one when `all` or when it is too long).
pub(crate) fn flush_lines(st: &mut ActorState, stream: usize, all: bool) {
    let lvl = if stream == 0 {
        level::INFO
    } else {
        level::WARN
    };
    let buf = &mut st.stdio[stream];
    let mut start = 0;
    while let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') {
        let line = String::from_utf8_lossy(&buf[start..start + nl]);
        st.host
            .logs
            .emit(&st.cell.name, st.cell.instance, lvl, &line);
        start += nl + 1;
    }
    buf.drain(..start);
    if (all && !buf.is_empty()) || buf.len() > MAX_LINE {
        let line = String::from_utf8_lossy(buf).into_owned();
        buf.clear();
        st.host
            .logs
            .emit(&st.cell.name, st.cell.instance, lvl, &line);
    }
}
