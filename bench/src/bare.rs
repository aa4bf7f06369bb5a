//! A guest module on plain wasmtime, without the host: the stores hold only a [`BareState`], the
//! `next` import hands out pre-encoded events, `send` decodes the guest's `Outbound` as a view (as the host
//! does) and counts it, `state_load` answers `NotFound` (as the host does for a key that never
//! saved state), and every other import (the rest of the `bunraku` module, the WASI subset)
//! returns 0.
//!
//! Two uses: the guest's own share of a message's cost (`breakdown`), and the memory floor of an
//! instance with no host structures around it (`density`). Given the host's engine
//! ([`bunraku_runtime::engine::Engine::wasmtime`]), the slot allocator, epoch interruption and
//! compiled code are those of a real host; given another engine, the same guest can be compared
//! under other settings.

use std::sync::Arc;

use bunraku_abi::view::OutboundView;
use bunraku_abi::{ErrorCode, Event, IMPORT_MODULE, exports};
use wasmtime::{
    AsContextMut, Caller, ExternType, InstancePre, Linker, Memory, Store, StoreLimits, TypedFunc,
    Val,
};

/// The data of a bare store.
pub struct BareState {
    memory: Option<Memory>,
    limits: StoreLimits,
    /// Served first by `next`, once.
    start: Option<Vec<u8>>,
    /// While set, `next` has nothing to serve (not even `start`).
    hold: bool,
    /// Encoded events, served cyclically while `cursor < end`.
    script: Arc<Vec<Vec<u8>>>,
    cursor: usize,
    end: usize,
    /// `send` calls seen.
    pub sent: u64,
    budget: u64,
}

/// A module linked against the stubs, ready to instantiate many times.
pub struct BareModule {
    engine: wasmtime::Engine,
    pre: InstancePre<BareState>,
    has_initialize: bool,
    limits: StoreLimits,
}

/// One instance and its store.
pub struct BareInstance {
    /// The store.
    pub store: Store<BareState>,
    run: TypedFunc<(), i32>,
    stack: Option<TypedFunc<(), i64>>,
}

impl BareModule {
    /// Compiles `wasm` on `engine` and links it against the stubs; every store gets `limits`
    /// (for the host's engine: `Engine::store_limits` of the manifest's `limits.memory`).
    pub fn load(engine: &wasmtime::Engine, wasm: &[u8], limits: StoreLimits) -> Self {
        let module = wasmtime::Module::from_binary(engine, wasm).expect("module compiles");
        let mut linker: Linker<BareState> = Linker::new(engine);
        linker
            .func_wrap(IMPORT_MODULE, "next", next)
            .expect("define next");
        linker
            .func_wrap(IMPORT_MODULE, "send", send)
            .expect("define send");
        for import in module.imports() {
            let (m, n) = (import.module(), import.name());
            if m == IMPORT_MODULE && (n == "next" || n == "send") {
                continue;
            }
            if let ExternType::Func(ty) = import.ty() {
                let results: Vec<_> = ty.results().collect();
                // As the host answers a key that never saved state.
                let not_found = m == IMPORT_MODULE && n == "state_load";
                linker
                    .func_new(m, n, ty, move |_, _, out| {
                        for (slot, t) in out.iter_mut().zip(&results) {
                            *slot = Val::default_for_ty(t).unwrap_or(Val::I32(0));
                        }
                        if let (true, Some(slot)) = (not_found, out.first_mut()) {
                            *slot = Val::I64(-(ErrorCode::NotFound as i64));
                        }
                        Ok(())
                    })
                    .expect("define stub");
            }
        }
        if std::env::var_os("BUNRAKU_BENCH_PERFMAP").is_some() {
            write_perf_map(&module);
        }
        let pre = linker.instantiate_pre(&module).expect("links");
        let has_initialize = module.get_export(exports::INITIALIZE).is_some();
        Self {
            engine: engine.clone(),
            pre,
            has_initialize,
            limits,
        }
    }

    /// A new instance (after `_initialize`) whose first `next` hands out `start`, then events of
    /// `script` as [`BareInstance::run`] allows. Panics when instantiation fails.
    pub fn instantiate(&self, start: Event, script: Arc<Vec<Vec<u8>>>) -> BareInstance {
        self.try_instantiate(start, script)
            .unwrap_or_else(|e| panic!("instantiation failed: {e}"))
    }

    /// [`BareModule::instantiate`], returning why instantiation failed (a memory wall, say).
    pub fn try_instantiate(
        &self,
        start: Event,
        script: Arc<Vec<Vec<u8>>>,
    ) -> Result<BareInstance, String> {
        let budget = 1 << 20;
        let state = BareState {
            memory: None,
            limits: self.limits.clone(),
            start: Some(bunraku_abi::encode(&start)),
            hold: false,
            script,
            cursor: 0,
            end: 0,
            sent: 0,
            budget,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(budget);
        let instance = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| format!("{e:#}"))?;
        let memory = instance
            .get_memory(&mut store, exports::MEMORY)
            .expect("memory export");
        store.data_mut().memory = Some(memory);
        if self.has_initialize {
            instance
                .get_typed_func::<(), ()>(&mut store, exports::INITIALIZE)
                .expect("_initialize")
                .call(&mut store, ())
                .expect("_initialize runs");
        }
        let run = instance
            .get_typed_func::<(), i32>(&mut store, exports::RUN)
            .expect("bunraku_run");
        let stack = instance
            .get_typed_func::<(), i64>(&mut store, exports::STACK)
            .ok();
        Ok(BareInstance { store, run, stack })
    }
}

impl BareInstance {
    /// Enters the guest once with the next `events` events of the script ready (the start event
    /// first, if not served yet); returns what `bunraku_run` returns (handlers in flight).
    pub fn run(&mut self, events: usize) -> i32 {
        self.try_run(events)
            .unwrap_or_else(|e| panic!("guest failed: {e}"))
    }

    /// [`BareInstance::run`], returning a trap (a failed `memory.grow` aborts a Rust guest).
    pub fn try_run(&mut self, events: usize) -> Result<i32, String> {
        let st = self.store.data_mut();
        st.end = st.cursor + events;
        self.run
            .call(&mut self.store, ())
            .map_err(|e| format!("{e:#}"))
    }

    /// Enters the guest with no event to hand out (not even the start event): what an instance
    /// made ahead could be given to set up its SDK's executor before its first real entry.
    /// Returns what `bunraku_run` returns.
    pub fn warm_up(&mut self) -> i32 {
        self.store.data_mut().hold = true;
        let result = self.run(0);
        self.store.data_mut().hold = false;
        result
    }

    /// The instance's linear memory, between entries.
    pub fn memory_mut(&mut self) -> &mut [u8] {
        let memory = self.store.data().memory.expect("memory export");
        memory.data_mut(&mut self.store)
    }

    /// The bytes of the guest's shadow stack, from its `bunraku_stack` export (as the host reads
    /// it), or `None` without one.
    pub fn stack(&mut self) -> Option<std::ops::Range<usize>> {
        let packed = self.stack.as_ref()?.call(&mut self.store, ()).ok()?;
        let (start, len) = bunraku_abi::unpack_ptr_len(packed);
        Some(start as usize..start as usize + len as usize)
    }

    /// The instance's linear memory size in bytes.
    pub fn memory_size(&self) -> usize {
        self.store
            .data()
            .memory
            .map_or(0, |m| m.data_size(&self.store))
    }
}

/// Appends the module's functions to `/tmp/perf-<pid>.map`, so that `perf report` names the
/// guest's compiled functions (the workspace builds wasmtime without its `profiling` feature).
fn write_perf_map(module: &wasmtime::Module) {
    use std::io::Write;
    let base = module.text().as_ptr() as usize;
    let mut out = String::new();
    for f in module.functions() {
        let name = f
            .name
            .unwrap_or_else(|| format!("wasm-function[{}]", f.index.as_u32()));
        out.push_str(&format!("{:x} {:x} wasm::{name}\n", base + f.offset, f.len));
    }
    let path = format!("/tmp/perf-{}.map", std::process::id());
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path);
    if let Ok(mut file) = file {
        let _ = file.write_all(out.as_bytes());
    }
}

fn next(
    mut caller: Caller<'_, BareState>,
    ptr: u32,
    cap: u32,
    _in_flight: u32,
) -> wasmtime::Result<i64> {
    // As the host does: every event starts a fresh time budget.
    let budget = caller.data().budget;
    caller.as_context_mut().set_epoch_deadline(budget);
    let memory = caller.data().memory.expect("memory");
    let (mem, st) = memory.data_and_store_mut(&mut caller);
    let event: &[u8] = match &st.start {
        _ if st.hold => return Ok(0),
        Some(start) => start,
        None if st.cursor < st.end && !st.script.is_empty() => {
            &st.script[st.cursor % st.script.len()]
        }
        None => return Ok(0),
    };
    let len = event.len();
    if len > cap as usize {
        return Ok(len as i64);
    }
    let dest = mem
        .get_mut(ptr as usize..)
        .and_then(|s| s.get_mut(..len))
        .ok_or_else(|| wasmtime::format_err!("out-of-bounds buffer"))?;
    dest.copy_from_slice(event);
    if st.start.take().is_none() {
        st.cursor += 1;
    }
    Ok(len as i64)
}

fn send(
    mut caller: Caller<'_, BareState>,
    ptr: u32,
    len: u32,
    _mode: u32,
) -> wasmtime::Result<i64> {
    let memory = caller.data().memory.expect("memory");
    let bytes = memory
        .data(&caller)
        .get(ptr as usize..)
        .and_then(|s| s.get(..len as usize))
        .ok_or_else(|| wasmtime::format_err!("out-of-bounds buffer"))?;
    let out =
        OutboundView::decode(bytes).map_err(|e| wasmtime::format_err!("bad outbound: {e}"))?;
    std::hint::black_box(out);
    caller.data_mut().sent += 1;
    Ok(0)
}
