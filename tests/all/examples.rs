//! Every example passes its own self-check: `bunraku run examples/NAME --smoke`, through the
//! real binary, exits 0 with one summary line; a deliberately broken check exits non-zero.

use std::fs;
use std::path::Path;

use bunraku_runtime::manifest::Manifest;
use bunraku_tests::repo;

use crate::cli::{Finished, bunraku, finish};

/// The examples and the summary line their `--smoke` prints.
const EXAMPLES: &[(&str, &str)] = &[
    ("request-response", "request-response: ok, 4 facts checked"),
    ("pubsub", "pubsub: ok, 6 facts checked"),
    ("p2p", "p2p: ok, 5 facts checked"),
    ("batching", "batching: ok, 4 facts checked"),
    ("streaming", "streaming: ok, 5 facts checked"),
    ("event-sourcing", "event-sourcing: ok, 14 facts checked"),
    ("orchestration", "orchestration: ok, 6 facts checked"),
    ("api-gateway", "api-gateway: ok, 37 facts checked"),
];

/// Runs `bunraku run DIR --smoke` with a data directory and home of its own.
fn smoke(dir: &Path) -> Finished {
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = bunraku(&tmp.path().join("home"));
    cmd.arg("run")
        .arg(dir)
        .arg("--smoke")
        .arg("--data-dir")
        .arg(tmp.path().join("data"));
    if Manifest::load(dir).is_ok_and(|m| m.gateway.is_some()) {
        // A free port rather than the example's fixed one, which may be taken on this machine.
        cmd.args(["--listen", "127.0.0.1:0"]);
    }
    finish(cmd, tmp.path(), "smoke")
}

/// The lines of a smoke run's output that are summaries (`NAME: ok, ...` or `NAME: FAILED ...`).
fn summaries(out: &Finished) -> Vec<&str> {
    out.stdout
        .lines()
        .filter(|l| l.contains(": ok, ") || l.contains(": FAILED"))
        .collect()
}

fn passes_its_smoke_check(name: &str) {
    let (_, summary) = EXAMPLES
        .iter()
        .find(|(n, _)| *n == name)
        .expect("a listed example");
    let out = smoke(&repo().join("examples").join(name));
    assert_eq!(out.code(), Some(0), "{out:#?}");
    assert_eq!(summaries(&out), [*summary], "{}", out.stdout);
    assert!(
        !out.stdout.lines().any(|l| l.starts_with("FAILED")),
        "{}",
        out.stdout
    );
}

#[test]
fn request_response_example_passes_its_smoke_check() {
    passes_its_smoke_check("request-response");
}

#[test]
fn pubsub_example_passes_its_smoke_check() {
    passes_its_smoke_check("pubsub");
}

#[test]
fn p2p_example_passes_its_smoke_check() {
    passes_its_smoke_check("p2p");
}

#[test]
fn batching_example_passes_its_smoke_check_and_prints_both_throughputs() {
    passes_its_smoke_check("batching");
    let out = smoke(&repo().join("examples/batching"));
    let all = format!("{}{}", out.stdout, out.stderr);
    let line = all
        .lines()
        .find(|l| l.contains("throughput:"))
        .unwrap_or_else(|| panic!("no throughput line:\n{all}"));
    assert!(
        line.contains("one commit per write:")
            && line.contains("(2000 commits)")
            && line.contains("batched:"),
        "{line}"
    );
    // 8 commits on an idle machine; a loaded one may flush a batch early by its timer.
    let batched: u64 = line
        .split("batched:")
        .nth(1)
        .and_then(|rest| rest.split('(').nth(1))
        .and_then(|c| c.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no batched commit count: {line}"));
    assert!((8..2000).contains(&batched), "{line}");
}

#[test]
fn streaming_example_passes_its_smoke_check() {
    passes_its_smoke_check("streaming");
}

#[test]
fn event_sourcing_example_passes_its_smoke_check() {
    passes_its_smoke_check("event-sourcing");
}

#[test]
fn orchestration_example_passes_its_smoke_check() {
    passes_its_smoke_check("orchestration");
}

#[test]
fn api_gateway_example_passes_its_http_smoke_script() {
    passes_its_smoke_check("api-gateway");
}

#[test]
fn broken_smoke_check_exits_non_zero() {
    let out = smoke(&repo().join("tests/fixtures/broken"));
    assert_eq!(out.code(), Some(1), "{out:#?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    let failed = lines
        .iter()
        .position(|l| *l == "FAILED one plus one is three: arithmetic still works")
        .unwrap_or_else(|| panic!("the failed fact is not printed:\n{}", out.stdout));
    assert_eq!(
        summaries(&out),
        ["broken: FAILED 1 of 1 facts: one plus one is three"]
    );
    let summary = lines
        .iter()
        .position(|l| l.starts_with("broken: FAILED"))
        .unwrap();
    assert!(
        failed < summary,
        "failed facts come before the summary:\n{}",
        out.stdout
    );
}

#[test]
fn a_top_level_supervisor_that_gives_up_stops_the_host_with_exit_1() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = bunraku(&tmp.path().join("home"));
    cmd.arg("run")
        .arg(repo().join("tests/fixtures/crashloop"))
        .arg("--data-dir")
        .arg(tmp.path().join("data"));
    let out = finish(cmd, tmp.path(), "crashloop");
    assert_eq!(out.code(), Some(1), "{out:#?}");
    assert!(
        out.stderr
            .contains("error: supervisor `app` gave up: more than 1 restarts within 60s"),
        "{}",
        out.stderr
    );
    assert!(
        out.stdout.contains(
            "supervisor app (OneForAll, at most 1 restarts in 60000 ms): steady, crasher"
        ),
        "{}",
        out.stdout
    );
}

/// A directory with a manifest that deploys one `echo` and has no other section.
fn echo_only_manifest() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let echo = repo().join("guests/echo");
    fs::write(
        tmp.path().join("bunraku.toml"),
        format!(
            "[[actor]]\nname = \"echo\"\nmodule = {:?}\n",
            echo.display().to_string()
        ),
    )
    .unwrap();
    tmp
}

#[test]
fn smoke_without_a_smoke_section_is_a_usage_error() {
    let tmp = echo_only_manifest();
    let out = smoke(tmp.path());
    assert_eq!(out.code(), Some(2), "{out:#?}");
    assert!(
        out.stderr.contains("has no [smoke] section"),
        "{}",
        out.stderr
    );
}

#[test]
fn listen_without_a_gateway_section_is_a_usage_error() {
    let tmp = echo_only_manifest();
    let mut cmd = bunraku(&tmp.path().join("home"));
    cmd.arg("run")
        .arg(tmp.path())
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(tmp.path().join("data"));
    let out = finish(cmd, tmp.path(), "listen");
    assert_eq!(out.code(), Some(2), "{out:#?}");
    assert!(
        out.stderr
            .contains("has no [gateway] section, so --listen has nothing to serve"),
        "{}",
        out.stderr
    );
}

/// A new example cannot be added without a smoke test, a README and a `[smoke]` section.
#[test]
fn every_example_is_smoke_tested_and_documented() {
    let mut found: Vec<String> = fs::read_dir(repo().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    found.sort();
    let mut listed: Vec<String> = EXAMPLES.iter().map(|(n, _)| n.to_string()).collect();
    listed.sort();
    assert_eq!(found, listed, "examples/ and the smoke tests disagree");
    for name in found {
        let dir = repo().join("examples").join(&name);
        let manifest = Manifest::load(&dir).unwrap_or_else(|e| panic!("{e}"));
        let smoke = manifest
            .smoke
            .unwrap_or_else(|| panic!("examples/{name} has no [smoke]"));
        let readme = fs::read_to_string(dir.join("README.md"))
            .unwrap_or_else(|e| panic!("examples/{name}/README.md: {e}"));
        assert!(
            readme.contains(&format!("bunraku run examples/{name}")),
            "{name}: how to run"
        );
        assert!(readme.contains("--smoke"), "{name}: the smoke check");
        match &smoke.actor {
            Some(actor) => {
                assert!(readme.contains("bunraku call "), "{name}: a call example");
                assert!(
                    readme.contains(&format!("`{actor}`")),
                    "{name}: the smoke actor"
                );
            }
            // An HTTP smoke script: the README shows the requests instead of calls.
            None => assert!(readme.contains("curl "), "{name}: a curl example"),
        }
    }
}
