//! The on-disk module cache with a real guest: a second start is a hit, a corrupted entry is
//! recompiled rather than trusted, and what comes out of the cache runs.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use bunraku_runtime::cache::{CacheOutcome, ModuleCache};
use bunraku_runtime::engine::{Engine, EngineConfig};
use bunraku_runtime::{Host, HostConfig};
use bunraku_tests::*;
use serde_json::json;

fn cached_engine(dir: &std::path::Path) -> Engine {
    Engine::new(EngineConfig {
        cache_dir: Some(dir.to_owned()),
        ..EngineConfig::default()
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_start_hits_the_cache_and_a_corrupted_entry_is_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let cache_dir = dir.path().join("cache");
    let wasm = std::fs::read(guest("echo")).unwrap();

    let (_, first) = cached_engine(&cache_dir).compile(&wasm).unwrap();
    assert_eq!(first, CacheOutcome::Miss);
    // A new engine, as in a second run of the CLI, finds the compiled module.
    let (_, second) = cached_engine(&cache_dir).compile(&wasm).unwrap();
    assert_eq!(second, CacheOutcome::Hit);

    // The directory is private: deserializing is unsafe, so nobody else may write there.
    let mode = std::fs::metadata(&cache_dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);

    // Flip bytes in the middle of the entry: detected and recompiled, never trusted.
    let engine = cached_engine(&cache_dir);
    let entry = ModuleCache::open(&cache_dir, engine.wasmtime())
        .unwrap()
        .entry_path(&wasm);
    assert_eq!(
        std::fs::metadata(&entry).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let mut bytes = std::fs::read(&entry).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid..mid + 16].iter_mut().for_each(|b| *b ^= 0xff);
    std::fs::write(&entry, &bytes).unwrap();
    let (_, third) = engine.compile(&wasm).unwrap();
    assert!(matches!(third, CacheOutcome::Recompiled(_)), "{third:?}");
    let (_, fourth) = engine.compile(&wasm).unwrap();
    assert_eq!(fourth, CacheOutcome::Hit, "the entry was rewritten");

    // The cached module runs as an actor.
    let host = Arc::new(
        Host::new(HostConfig {
            engine: Some(engine),
            guest_threads: 1,
            ..HostConfig::default()
        })
        .unwrap(),
    );
    deploy(&host, "echo", "echo");
    let reply = host
        .call_json("echo", Some("Echo"), json!({"text": "from cache"}))
        .await
        .unwrap();
    assert_eq!(reply, json!("from cache"));
}
