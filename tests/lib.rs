//! Shared harness of the integration tests: builds the guests in `guests/` from source (once per
//! test binary, with the runtime's own builder), shares one engine, and starts hosts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bunraku_runtime::build::{BuildOptions, build_guest};
use bunraku_runtime::engine::{Engine, EngineConfig};
use bunraku_runtime::manifest::{ActorSpec, ModuleSource};
use bunraku_runtime::{Host, HostConfig};

/// The repository root.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
}

/// The `.wasm` of guest crate `guests/<name>`, built from source on first use.
pub fn guest(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    // One build at a time: cargo would serialise on its lock anyway.
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = built.get(name) {
        return path.clone();
    }
    let dir = repo().join("guests").join(name);
    let opts = BuildOptions {
        install_target: true,
        quiet: true,
    };
    let path = build_guest(&dir, &opts).unwrap_or_else(|e| panic!("building guest {name}: {e}"));
    built.insert(name.to_owned(), path.clone());
    path
}

/// One engine per test binary, so compiled code and the epoch ticker are shared.
pub fn engine() -> Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE
        .get_or_init(|| Engine::new(EngineConfig::default()).expect("engine"))
        .clone()
}

/// A host on the shared engine with two guest threads.
pub fn host() -> Arc<Host> {
    host_with(HostConfig::default())
}

/// A host on the shared engine with a custom configuration.
pub fn host_with(config: HostConfig) -> Arc<Host> {
    let config = HostConfig {
        engine: Some(engine()),
        guest_threads: 2,
        ..config
    };
    Arc::new(Host::new(config).expect("host starts"))
}

/// An actor spec for a guest with default settings.
pub fn spec(name: &str, guest_crate: &str) -> ActorSpec {
    ActorSpec::new(name, ModuleSource::Wasm(guest(guest_crate)))
}

/// Deploys `guest_crate` as `name` with default settings.
pub fn deploy(host: &Host, name: &str, guest_crate: &str) {
    deploy_spec(host, &spec(name, guest_crate));
}

/// Deploys a spec.
pub fn deploy_spec(host: &Host, spec: &ActorSpec) {
    let ModuleSource::Wasm(path) = &spec.module else {
        panic!("tests deploy built modules")
    };
    host.deploy(spec, path)
        .unwrap_or_else(|e| panic!("deploying {}: {e}", spec.name));
}

/// Polls `f` every 10 ms until it returns `Some`, for at most `limit`.
pub async fn eventually<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Tests whose assertions are about time (a budget, a deadline) take this exclusively, so the
/// rest of the suite does not load the two cores while they measure; every other host test
/// takes it shared through [`host`].
pub async fn exclusive() -> tokio::sync::RwLockWriteGuard<'static, ()> {
    timing_lock().write().await
}

/// Shared side of [`exclusive`].
pub async fn shared() -> tokio::sync::RwLockReadGuard<'static, ()> {
    timing_lock().read().await
}

fn timing_lock() -> &'static tokio::sync::RwLock<()> {
    static LOCK: OnceLock<tokio::sync::RwLock<()>> = OnceLock::new();
    LOCK.get_or_init(Default::default)
}
