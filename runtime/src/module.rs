//! Loading a compiled module as an actor: export and import checks, the ABI version, the
//! descriptor, and the `InstancePre` every instance is created from.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bunraku_abi::{ABI_VERSION, Descriptor, HOST_FUNCTIONS, HandlerKind, IMPORT_MODULE, exports};
use wasmtime::{ExternType, FuncType, InstancePre, Linker, Module, Store, TypedFunc, ValType};

use crate::actor::ActorState;
use crate::engine::Engine;
use crate::error::LoadError;
use crate::memory::PageImage;
use crate::wasi;

/// A module checked and ready to instantiate as an actor.
pub(crate) struct ActorModule {
    pub pre: InstancePre<ActorState>,
    pub descriptor: Descriptor,
    /// The message types it handles, by wire name (looked up on every message sent to it).
    pub types: rustc_hash::FxHashMap<String, HandlerKind>,
    has_initialize: bool,
    /// The module exports `bunraku_stack`: where its shadow stack is.
    has_stack: bool,
    /// The first instance's memory right after instantiation and `_initialize`, with where its
    /// shadow stack is (`bunraku_stack`, when exported): what idle trimming compares
    /// pages against and restores them from (see [`crate::memory::SlotAllocator::trim`]).
    image: OnceLock<PageImage>,
}

/// The modules a host has loaded, found again by their bytes: deploying the same module again
/// (another actor, a thousand subscribers) reuses its compiled code and `InstancePre`.
///
/// A lookup compares the bytes with those of every loaded module of the same length: a `memcmp`,
/// where hashing them with SHA-256 took ~170 µs for a 250 KB guest, most of a deploy's time
/// (BENCHMARKS §2). The price is a copy of each distinct module's bytes.
pub(crate) struct Loaded<T> {
    entries: Mutex<Vec<LoadedEntry<T>>>,
}

/// One loaded module and the bytes it was loaded from.
struct LoadedEntry<T> {
    bytes: Box<[u8]>,
    module: Arc<T>,
}

impl<T> Default for Loaded<T> {
    fn default() -> Self {
        Self {
            entries: Mutex::default(),
        }
    }
}

impl<T> Loaded<T> {
    /// The module loaded from exactly these bytes, loading it with `load` the first time. The
    /// lock is not held while `load` compiles, so two first deploys of the same bytes at once
    /// may both load it; the first one kept is the one every later deploy gets.
    pub(crate) fn get_or_load<E>(
        &self,
        wasm: &[u8],
        load: impl FnOnce() -> Result<T, E>,
    ) -> Result<Arc<T>, E> {
        if let Some(found) = self.find(wasm) {
            return Ok(found);
        }
        let loaded = Arc::new(load()?);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(kept) = entries.iter().find(|e| *e.bytes == *wasm) {
            return Ok(kept.module.clone());
        }
        entries.push(LoadedEntry {
            bytes: wasm.into(),
            module: loaded.clone(),
        });
        Ok(loaded)
    }

    fn find(&self, wasm: &[u8]) -> Option<Arc<T>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .iter()
            .find(|e| *e.bytes == *wasm)
            .map(|e| e.module.clone())
    }
}

fn func_type_is(ty: &FuncType, params: &[ValType], results: &[ValType]) -> bool {
    let p: Vec<_> = ty.params().collect();
    let r: Vec<_> = ty.results().collect();
    p.len() == params.len()
        && r.len() == results.len()
        && p.iter().zip(params).all(|(a, b)| ValType::eq(a, b))
        && r.iter().zip(results).all(|(a, b)| ValType::eq(a, b))
}

/// How long loading may run guest code (`_initialize`, `bunraku_describe`).
const LOAD_BUDGET: Duration = Duration::from_secs(5);

impl ActorModule {
    /// Compiles (or takes from the cache) and checks a module.
    pub(crate) fn load(
        engine: &Engine,
        base: &Linker<ActorState>,
        wasm: &[u8],
    ) -> Result<Self, LoadError> {
        let (module, _outcome) = engine.compile(wasm)?;
        check_exports(&module)?;
        let linker = module_linker(base, &module)?;
        let (abi_version, descriptor) = probe(engine, &module)?;
        if abi_version != ABI_VERSION {
            return Err(LoadError::AbiMismatch {
                found: abi_version,
                expected: ABI_VERSION,
            });
        }
        if descriptor.abi_version != ABI_VERSION {
            return Err(LoadError::AbiMismatch {
                found: descriptor.abi_version,
                expected: ABI_VERSION,
            });
        }
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| LoadError::Instantiate(format!("{e:#}")))?;
        let types = descriptor
            .messages
            .iter()
            .map(|m| (m.name.clone(), m.kind))
            .collect();
        let has_initialize = module.get_export(exports::INITIALIZE).is_some();
        let has_stack = module.get_export(exports::STACK).is_some();
        Ok(Self {
            pre,
            descriptor,
            types,
            has_initialize,
            has_stack,
            image: OnceLock::new(),
        })
    }

    /// The reference pages for trimming this module's idle instances, once one was created.
    pub(crate) fn image(&self) -> Option<&PageImage> {
        self.image.get()
    }

    /// Creates an instance in `store`, runs `_initialize`, and returns its run entry point.
    pub(crate) fn instantiate(
        &self,
        store: &mut Store<ActorState>,
    ) -> Result<TypedFunc<(), i32>, String> {
        let instance = self
            .pre
            .instantiate(&mut *store)
            .map_err(|e| describe_instantiate(&e))?;
        let memory = instance
            .get_memory(&mut *store, exports::MEMORY)
            .ok_or("the instance has no memory export")?;
        store.data_mut().memory = Some(memory);
        if self.has_initialize {
            let init = instance
                .get_typed_func::<(), ()>(&mut *store, exports::INITIALIZE)
                .map_err(|e| format!("`_initialize` has the wrong type: {e}"))?;
            init.call(&mut *store, ())
                .map_err(|e| format!("`_initialize` trapped: {e:#}"))?;
        }
        if self.image.get().is_none() {
            let page = store.data().host.engine.slots().page_size();
            let mut image = PageImage::capture(memory.data(&*store), page);
            if self.has_stack {
                let stack = instance
                    .get_typed_func::<(), i64>(&mut *store, exports::STACK)
                    .and_then(|f| f.call(&mut *store, ()))
                    .map_err(|e| format!("`{}` failed: {e:#}", exports::STACK))?;
                let (start, len) = bunraku_abi::unpack_ptr_len(stack);
                let (start, len) = (start as usize, len as usize);
                let size = memory.data_size(&*store);
                if start.checked_add(len).is_some_and(|end| end <= size) {
                    image = image.with_dead(start..start + len);
                }
            }
            let _ = self.image.set(image);
        }
        instance
            .get_typed_func::<(), i32>(&mut *store, exports::RUN)
            .map_err(|e| format!("`{}` has the wrong type: {e}", exports::RUN))
    }
}

fn describe_instantiate(e: &wasmtime::Error) -> String {
    match crate::memory::wall_of(e) {
        Some(wall) => format!("cannot create an instance: the {wall} was hit: {e:#}"),
        None => format!("cannot create an instance: {e:#}"),
    }
}

fn check_exports(module: &Module) -> Result<(), LoadError> {
    let expect = |name: &'static str, results: &[ValType], sig: &'static str| match module
        .get_export(name)
    {
        None => Err(LoadError::MissingExport { name }),
        Some(ExternType::Func(f)) if func_type_is(&f, &[], results) => Ok(()),
        Some(_) => Err(LoadError::WrongExport {
            name,
            expected: sig,
        }),
    };
    match module.get_export(exports::MEMORY) {
        None => {
            return Err(LoadError::MissingExport {
                name: exports::MEMORY,
            });
        }
        Some(ExternType::Memory(m)) if !m.is_64() && !m.is_shared() => {}
        Some(_) => {
            return Err(LoadError::WrongExport {
                name: exports::MEMORY,
                expected: "an unshared 32-bit memory",
            });
        }
    }
    expect(
        exports::ABI_VERSION,
        &[ValType::I32],
        "a function () -> i32",
    )?;
    expect(exports::DESCRIBE, &[ValType::I64], "a function () -> i64")?;
    expect(exports::RUN, &[ValType::I32], "a function () -> i32")?;
    if module.get_export(exports::STACK).is_some() {
        expect(exports::STACK, &[ValType::I64], "a function () -> i64")?;
    }
    Ok(())
}

/// The base linker plus, for this module, a `NOTCAPABLE` stub for each WASI function the
/// host does not implement.
fn module_linker(
    base: &Linker<ActorState>,
    module: &Module,
) -> Result<Linker<ActorState>, LoadError> {
    let mut linker = base.clone();
    for import in module.imports() {
        match import.module() {
            IMPORT_MODULE => {
                if !HOST_FUNCTIONS.iter().any(|f| f.name == import.name()) {
                    return Err(LoadError::UnknownImport {
                        module: IMPORT_MODULE.into(),
                        name: import.name().into(),
                        hint: " (was it built against a newer bunraku-sdk?)",
                    });
                }
            }
            wasi::MODULE => {
                if wasi::IMPLEMENTED.contains(&import.name()) {
                    continue;
                }
                let ExternType::Func(ty) = import.ty() else {
                    return Err(LoadError::UnknownImport {
                        module: wasi::MODULE.into(),
                        name: import.name().into(),
                        hint: " (not a function)",
                    });
                };
                wasi::define_not_capable(&mut linker, import.name(), ty)
                    .map_err(|e| LoadError::Instantiate(format!("{e:#}")))?;
            }
            other => {
                return Err(LoadError::UnknownImport {
                    module: other.into(),
                    name: import.name().into(),
                    hint: "; actors may import only `bunraku` and `wasi_snapshot_preview1`",
                });
            }
        }
    }
    Ok(linker)
}

/// Runs `_initialize`, `bunraku_abi_version` and `bunraku_describe` in a throwaway instance whose
/// imports do nothing.
fn probe(engine: &Engine, module: &Module) -> Result<(u32, Descriptor), LoadError> {
    let mut store = Store::new(
        engine.wasmtime(),
        engine.store_limits(engine.max_memory_per_actor()),
    );
    store.limiter(|s| s);
    store.epoch_deadline_trap();
    let mut linker: Linker<wasmtime::StoreLimits> = Linker::new(engine.wasmtime());
    linker
        .define_unknown_imports_as_default_values(&mut store, module)
        .map_err(|e| LoadError::Instantiate(format!("{e:#}")))?;
    let ticks = (LOAD_BUDGET.as_nanos() / engine.epoch_tick().as_nanos().max(1)).max(1) as u64;
    store.set_epoch_deadline(ticks);
    let instance = linker
        .instantiate(&mut store, module)
        .map_err(|e| LoadError::Instantiate(describe_instantiate(&e)))?;
    if module.get_export(exports::INITIALIZE).is_some() {
        let init = instance
            .get_typed_func::<(), ()>(&mut store, exports::INITIALIZE)
            .map_err(|_| LoadError::WrongExport {
                name: exports::INITIALIZE,
                expected: "a function () -> ()",
            })?;
        init.call(&mut store, ())
            .map_err(|e| LoadError::Trap(format!("{e:#}")))?;
    }
    let version = instance
        .get_typed_func::<(), i32>(&mut store, exports::ABI_VERSION)
        .and_then(|f| f.call(&mut store, ()))
        .map_err(|e| LoadError::Trap(format!("{e:#}")))? as u32;
    if version != ABI_VERSION {
        return Err(LoadError::AbiMismatch {
            found: version,
            expected: ABI_VERSION,
        });
    }
    let packed = instance
        .get_typed_func::<(), i64>(&mut store, exports::DESCRIBE)
        .and_then(|f| f.call(&mut store, ()))
        .map_err(|e| LoadError::Trap(format!("{e:#}")))?;
    let (ptr, len) = bunraku_abi::unpack_ptr_len(packed);
    let (ptr, len) = (ptr as usize, len as usize);
    let memory =
        instance
            .get_memory(&mut store, exports::MEMORY)
            .ok_or(LoadError::MissingExport {
                name: exports::MEMORY,
            })?;
    let bytes = memory
        .data(&store)
        .get(ptr..)
        .and_then(|s| s.get(..len))
        .ok_or_else(|| LoadError::BadDescriptor(format!("{ptr}+{len} is outside the memory")))?;
    let descriptor: Descriptor = bunraku_abi::decode(bytes)
        .map_err(|_| LoadError::BadDescriptor("it does not decode".into()))?;
    Ok((version, descriptor))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exports_of(extra: &str) -> Result<(), LoadError> {
        let wat = format!(
            r#"(module
                (memory (export "memory") 1)
                (func (export "bunraku_abi_version") (result i32) i32.const 0)
                (func (export "bunraku_describe") (result i64) i64.const 0)
                (func (export "bunraku_run") (result i32) i32.const 0)
                {extra})"#
        );
        let engine = crate::test_engine();
        let module = Module::new(engine.wasmtime(), wat).unwrap();
        check_exports(&module)
    }

    #[test]
    fn loaded_modules_are_found_again_only_by_equal_bytes() {
        let loaded = Loaded::<u32>::default();
        let mut loads = 0;
        let mut get = |bytes: &[u8], value: u32| {
            loaded
                .get_or_load(bytes, || {
                    loads += 1;
                    Ok::<_, ()>(value)
                })
                .unwrap()
        };
        let a = get(b"module-a", 1);
        assert!(
            Arc::ptr_eq(&a, &get(b"module-a", 99)),
            "the same bytes load once"
        );
        assert_eq!(
            *get(b"module-b", 2),
            2,
            "same length, other bytes: another module"
        );
        assert_eq!(
            *get(b"module-a-longer", 3),
            3,
            "another length: another module"
        );
        assert_eq!(loads, 3);
        let failed = loaded.get_or_load(b"broken", || Err::<u32, _>("bad module"));
        assert_eq!(failed.unwrap_err(), "bad module");
        assert_eq!(
            *loaded.get_or_load(b"broken", || Ok::<_, ()>(4)).unwrap(),
            4,
            "a failed load is not kept"
        );
    }

    #[test]
    fn the_stack_export_is_optional_but_must_return_an_i64() {
        assert!(exports_of("").is_ok());
        assert!(exports_of(r#"(func (export "bunraku_stack") (result i64) i64.const 0)"#).is_ok());
        let err =
            exports_of(r#"(func (export "bunraku_stack") (result i32) i32.const 0)"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the module's export `bunraku_stack` has the wrong type: expected a function () -> i64"
        );
    }
}
