//! Shared harness of the integration tests: builds the guests in `guests/` from source (once per
//! test binary, with the runtime's own builder), shares one engine, and starts hosts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bunraku_runtime::build::{BuildOptions, build_guest};
use bunraku_runtime::clock::ManualClock;
use bunraku_runtime::engine::{Engine, EngineConfig};
use bunraku_runtime::manifest::{ActorSpec, ModuleSource};
use bunraku_runtime::{ClientMessage, Grants, Host, HostConfig};

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

/// A host on the shared engine with two guest threads and a data directory of its own (see
/// [`host_with`]).
pub fn host() -> Arc<Host> {
    host_with(HostConfig::default())
}

/// A host with a custom configuration on two guest threads, on the shared engine unless `config`
/// brings its own. Without a `data_dir` it gets a fresh one of its own ([`fresh_data_dir`]), so actors that
/// persist state never see another test's. The calling test takes its share of the timing lock
/// ([`hold_shared`]) first, so it does not run beside a test that runs alone ([`exclusive`]).
pub fn host_with(config: HostConfig) -> Arc<Host> {
    host_on_lanes(2, config)
}

/// [`host_with`] on a [`ManualClock`] the test moves, and that clock.
pub fn host_on_manual_clock() -> (Arc<Host>, ManualClock) {
    let clock = ManualClock::new();
    let host = host_with(HostConfig {
        clock: Arc::new(clock.clone()),
        ..HostConfig::default()
    });
    (host, clock)
}

/// [`host_with`] on `lanes` guest threads.
pub fn host_on_lanes(lanes: usize, config: HostConfig) -> Arc<Host> {
    hold_shared();
    let config = HostConfig {
        engine: config.engine.or_else(|| Some(engine())),
        guest_threads: lanes,
        data_dir: config.data_dir.or_else(|| Some(fresh_data_dir())),
        ..config
    };
    Arc::new(Host::new(config).expect("host starts"))
}

/// A host whose data directory is `dir`: a second host on the same directory sees what the first
/// one's actors saved (a host restart).
pub fn host_in(dir: &Path) -> Arc<Host> {
    host_with(HostConfig {
        data_dir: Some(dir.to_owned()),
        ..HostConfig::default()
    })
}

/// A path for a host's data directory, unique in this process: `<tmp>/bunraku-tests-<pid>/host-<n>`.
/// Nothing is created until an actor persists state (the host opens its store lazily). The
/// directories of test processes that no longer run are removed the first time this is called.
pub fn fresh_data_dir() -> PathBuf {
    const PREFIX: &str = "bunraku-tests-";
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let root = ROOT.get_or_init(|| {
        let tmp = std::env::temp_dir();
        let me = std::process::id().to_string();
        for entry in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
                continue;
            };
            // Ours (a reused pid) or a finished run's.
            if pid == me || !Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        tmp.join(format!("{PREFIX}{me}"))
    });
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    root.join(format!("host-{n}"))
}

/// An actor spec for a guest with default settings, granted everything ([`Grants::all`]) so
/// tests about other behaviour need not spell out grants; capability tests set their own.
pub fn spec(name: &str, guest_crate: &str) -> ActorSpec {
    ActorSpec::new(name, ModuleSource::Wasm(guest(guest_crate))).with_grants(Grants::all())
}

/// `spec` with manifest subscriptions on `patterns` (policy `wait`).
pub fn subscribed(mut spec: ActorSpec, patterns: &[&str]) -> ActorSpec {
    spec.subscriptions = patterns
        .iter()
        .map(|p| bunraku_runtime::manifest::SubscriptionSpec {
            pattern: (*p).into(),
            policy: bunraku_abi::Policy::Wait,
        })
        .collect();
    spec
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

/// Sends the JSON request `v` of type `ty` to `to` from a task of its own, so that the test can
/// look at the actor while it handles it.
pub fn call_in_background(
    host: &Arc<Host>,
    to: &str,
    ty: &str,
    v: serde_json::Value,
) -> tokio::task::JoinHandle<Result<serde_json::Value, bunraku_runtime::CallError>> {
    let host = host.clone();
    let (to, ty) = (to.to_owned(), ty.to_owned());
    tokio::spawn(async move { host.call_json(&to, Some(&ty), v).await })
}

/// Waits until `actor` (instance 0) took its first message, at most 30 s.
pub async fn handling_first_message(host: &Host, actor: &str) {
    eventually(Duration::from_secs(30), || {
        (host.actor(actor)[0].handled == 1).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("{actor} did not take its first message"));
}

/// Tests that must run alone take this: those whose assertions are about time (a budget, a
/// deadline), and those that load both cores for long (compiling the guests natively, 100,000
/// actors). It waits until no other test holds its share ([`hold_shared`]) and keeps new ones
/// waiting until it is dropped. Take it first, before the test's first host.
pub async fn exclusive() -> tokio::sync::OwnedRwLockWriteGuard<()> {
    SHARE.with(|share| {
        assert!(
            matches!(*share.borrow(), Share::None),
            "take exclusive() before the test's first host: this thread holds its share already"
        );
    });
    let guard = timing_lock().clone().write_owned().await;
    SHARE.with(|share| *share.borrow_mut() = Share::Alone);
    guard
}

/// Takes the calling test's share of the timing lock, unless it holds it (or [`exclusive`])
/// already, waiting while a test that runs alone holds it. The share is this thread's until it
/// ends: libtest runs every test on a thread of its own, so that is the end of the test.
/// [`host_with`] and the `bunraku` command of the CLI tests call this, so every test that
/// starts a host takes a share; call it before the test starts work of another kind.
pub fn hold_shared() {
    /// Long enough for any test that runs alone; a wait past it is a test holding the lock on
    /// a thread other than its own (a host made in a spawned thread): a bug to fix, not wait for.
    const LIMIT: Duration = Duration::from_secs(15 * 60);
    SHARE.with(|share| {
        let mut share = share.borrow_mut();
        if !matches!(*share, Share::None) {
            return;
        }
        let start = std::time::Instant::now();
        let guard = loop {
            if let Ok(guard) = timing_lock().clone().try_read_owned() {
                break guard;
            }
            assert!(
                start.elapsed() < LIMIT,
                "waited {LIMIT:?} for a test that runs alone: is a host made on a thread other \
                 than its test's?"
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        *share = Share::Shared(guard);
    });
}

/// What this thread (a test) holds of the timing lock.
enum Share {
    None,
    Shared(#[allow(dead_code)] tokio::sync::OwnedRwLockReadGuard<()>), // held for its drop
    Alone,
}

thread_local! {
    static SHARE: std::cell::RefCell<Share> = const { std::cell::RefCell::new(Share::None) };
}

fn timing_lock() -> &'static Arc<tokio::sync::RwLock<()>> {
    static LOCK: OnceLock<Arc<tokio::sync::RwLock<()>>> = OnceLock::new();
    LOCK.get_or_init(Default::default)
}

/// Sends `Add { n }` to a counter (the `stateful` guest), without waiting for it to be handled.
pub async fn counter_add(host: &Host, to: &str, n: u64) {
    host.send(ClientMessage::json(
        to,
        Some("Add"),
        &serde_json::json!({ "n": n }),
    ))
    .await
    .unwrap();
}

/// A counter's value (`Get` to the `stateful` guest); answered after every message queued
/// before it, saves included.
pub async fn counter_get(host: &Host, to: &str) -> u64 {
    let v = host
        .call_json(to, Some("Get"), serde_json::json!({}))
        .await
        .unwrap();
    v.as_u64().unwrap()
}
