//! Every guest crate is exercised by a host test: a guest nobody runs is a guest nobody notices
//! breaking (wasmtime's test-programs make the same rule a compile error).

use std::collections::BTreeSet;

use bunraku_tests::repo;

/// Guest crates referenced by the test sources (`guest("name")`, `spec(.., "name")`,
/// `deploy(.., "name")`) or by an example manifest that the example tests run.
fn exercised() -> BTreeSet<String> {
    let mut text = String::new();
    let mut read_dir = |dir: std::path::PathBuf, ext: &str| {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                let manifest = path.join("bunraku.toml");
                if let Ok(t) = std::fs::read_to_string(manifest) {
                    text.push_str(&t);
                }
            } else if path.extension().is_some_and(|e| e == ext) {
                text.push_str(&std::fs::read_to_string(&path).unwrap());
            }
        }
    };
    read_dir(repo().join("tests/all"), "rs");
    read_dir(repo().join("examples"), "toml");
    read_dir(repo().join("tests/fixtures"), "toml");
    let mut names = BTreeSet::new();
    for member in members() {
        let quoted = format!("\"{member}\"");
        let path = format!("guests/{member}\"");
        if text.contains(&quoted) || text.contains(&path) {
            names.insert(member);
        }
    }
    names
}

fn members() -> Vec<String> {
    let manifest = std::fs::read_to_string(repo().join("guests/Cargo.toml")).unwrap();
    let start = manifest
        .find("members = [")
        .expect("guests/Cargo.toml lists members");
    let end = start + manifest[start..].find(']').unwrap();
    manifest[start..end]
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .filter(|m| m != "protocol") // a library of shared message types, not an actor
        .collect()
}

#[test]
fn every_guest_crate_is_exercised_by_a_host_test() {
    let all: BTreeSet<String> = members().into_iter().collect();
    let exercised = exercised();
    let missing: Vec<_> = all.difference(&exercised).collect();
    assert!(
        missing.is_empty(),
        "guest crates without a host test: {missing:?}"
    );
}

/// The guests' own unit tests (the SDK's native backend, `bunraku_sdk::testing`) run here, so
/// the one test command covers them: the guest workspace is a separate cargo workspace that
/// `cargo test --workspace` does not enter.
#[tokio::test]
async fn guest_crates_pass_their_native_unit_tests() {
    // Compiling the guest workspace natively loads both cores for a minute: not while host
    // tests run.
    let _alone = bunraku_tests::exclusive().await;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args(["test", "--workspace", "--quiet"])
        .current_dir(repo().join("guests"))
        // The guest workspace has its own target directory and toolchain file; flags meant for
        // the host build must not leak into it.
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_BUILD_TARGET")
        .output()
        .expect("cargo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let passed: u64 = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("test result: ok. "))
        .filter_map(|l| l.split(' ').next()?.parse::<u64>().ok())
        .sum();
    // stateful, batch-writer, batch-producer and the others' tests: a run that found none would
    // pass vacuously.
    assert!(passed >= 5, "only {passed} guest tests ran:\n{stdout}");
}
