//! Modules that are not actors: each gets a typed error that says what is wrong.

use bunraku_runtime::manifest::ActorSpec;
use bunraku_runtime::{DeployError, LoadError};
use bunraku_tests::*;

fn load_error(name: &str, path: &std::path::Path) -> LoadError {
    let host = host();
    match host.deploy(
        &ActorSpec::new(
            name,
            bunraku_runtime::manifest::ModuleSource::Wasm(path.into()),
        ),
        path,
    ) {
        Err(DeployError::Load { source, .. }) => source,
        Err(other) => panic!("expected a load error, got {other}"),
        Ok(()) => panic!("{name} deployed"),
    }
}

#[test]
fn a_file_that_is_not_wasm_is_refused_with_what_it_starts_with() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.wasm");
    std::fs::write(&path, "hello, I am text").unwrap();
    let err = load_error("text", &path);
    assert!(
        err.to_string()
            .starts_with("not a wasm module: expected the magic bytes 00 61 73 6d"),
        "{err}"
    );
}

#[test]
fn a_module_without_the_actor_exports_names_the_missing_export() {
    let err = load_error("plain", &guest("no-exports"));
    assert!(
        matches!(
            err,
            LoadError::MissingExport {
                name: "bunraku_abi_version"
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "the module does not export `bunraku_abi_version`: is it an actor built with bunraku-sdk and `#[actor]`?"
    );
}

#[test]
fn a_module_built_for_another_abi_version_is_refused() {
    let err = load_error("old", &guest("bad-abi"));
    assert!(
        matches!(
            err,
            LoadError::AbiMismatch {
                found: 999,
                expected: bunraku_abi::ABI_VERSION
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("rebuild the actor against the matching bunraku-sdk")
    );
}

#[test]
fn a_missing_module_file_names_the_path() {
    let err = load_error("ghost", std::path::Path::new("/nonexistent/ghost.wasm"));
    assert!(
        err.to_string()
            .starts_with("cannot read module /nonexistent/ghost.wasm"),
        "{err}"
    );
}

#[test]
fn deploying_a_name_twice_is_refused() {
    let host = host();
    deploy(&host, "echo", "echo");
    let err = host
        .deploy(&spec("echo", "echo"), &guest("echo"))
        .unwrap_err();
    assert_eq!(err.to_string(), "an actor named `echo` is already deployed");
}
