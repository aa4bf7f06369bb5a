//! The `bunraku` command line, as a user runs it: the real binary, a real host process, its real
//! control socket.
//!
//! The binary belongs to another package, so cargo does not hand its path to these tests; it is
//! built once per run with `cargo build -p bunraku` (the outer `cargo test` holds the build lock
//! only while building, not while tests run).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bunraku_tests::repo;
use serde_json::Value;
use tempfile::TempDir;

/// How long a `bunraku` command may take, guest builds included.
const COMMAND_LIMIT: Duration = Duration::from_secs(600);

/// The `bunraku` binary, built on first use.
pub(crate) fn bunraku_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .current_dir(repo())
            .args([
                "build",
                "-p",
                "bunraku",
                "--bin",
                "bunraku",
                "--message-format=json",
            ])
            .stdin(Stdio::null())
            .output()
            .expect("running `cargo build -p bunraku`");
        assert!(
            out.status.success(),
            "`cargo build -p bunraku` failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["reason"] == "compiler-artifact" && v["target"]["name"] == "bunraku")
            .find_map(|v| v["executable"].as_str().map(PathBuf::from))
            .expect("cargo names the bunraku executable")
    })
}

/// A `bunraku` command whose per-user state (the last-host pointer) lives in `home`, so tests
/// neither see nor clobber the developer's.
pub(crate) fn bunraku(home: &Path) -> Command {
    // A host in another process loads the cores like one in this process.
    bunraku_tests::hold_shared();
    let mut cmd = Command::new(bunraku_bin());
    cmd.env("BUNRAKU_HOME", home)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    cmd
}

/// What a finished command printed.
#[derive(Debug)]
pub(crate) struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub(crate) fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// A child process that is killed if the test ends before it does.
pub(crate) struct Guard {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Guard {
    /// Spawns `cmd` with its output going to files in `dir` (a pipe nobody reads could fill up
    /// and block the host's logging).
    pub(crate) fn spawn(mut cmd: Command, dir: &Path, name: &str) -> Self {
        let stdout = dir.join(format!("{name}.stdout"));
        let stderr = dir.join(format!("{name}.stderr"));
        let child = cmd
            .stdout(fs::File::create(&stdout).unwrap())
            .stderr(fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("spawning bunraku");
        Self {
            child,
            stdout,
            stderr,
        }
    }

    fn output(&self) -> (String, String) {
        let read = |p: &Path| fs::read_to_string(p).unwrap_or_default();
        (read(&self.stdout), read(&self.stderr))
    }

    /// Whether it has exited.
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Waits for it to exit, for at most `limit`.
    pub(crate) fn wait(mut self, limit: Duration) -> Finished {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.exited() {
                break status;
            }
            if start.elapsed() > limit {
                let (stdout, stderr) = self.output();
                panic!("still running after {limit:?}\nstdout:\n{stdout}\nstderr:\n{stderr}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let (stdout, stderr) = self.output();
        Finished {
            status,
            stdout,
            stderr,
        }
    }

    /// Kills it with SIGKILL (`kill -9`: no shutdown, no flush) and reaps it.
    pub(crate) fn kill_9(mut self) -> (String, String) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.output()
    }

    /// Panics with its output, for a failed expectation about a running host.
    pub(crate) fn fail(&mut self, why: &str) -> ! {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (stdout, stderr) = self.output();
        panic!("{why}\nhost stdout:\n{stdout}\nhost stderr:\n{stderr}");
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `cmd` to completion (at most [`COMMAND_LIMIT`]).
pub(crate) fn finish(cmd: Command, dir: &Path, name: &str) -> Finished {
    Guard::spawn(cmd, dir, name).wait(COMMAND_LIMIT)
}

/// A `bunraku run` in the background with its own data directory and home.
pub(crate) struct Host {
    guard: Guard,
    tmp: TempDir,
    socket: PathBuf,
}

impl Host {
    /// Starts `bunraku run manifest` and waits until its control socket answers.
    pub(crate) fn start(manifest: &Path) -> Self {
        Self::start_with(manifest, &[])
    }

    /// Starts `bunraku run manifest ARGS` and waits until its control socket answers.
    pub(crate) fn start_with(manifest: &Path, args: &[&str]) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let mut cmd = bunraku(&tmp.path().join("home"));
        cmd.arg("run").arg(manifest).arg("--data-dir").arg(&data);
        cmd.args(args);
        let mut guard = Guard::spawn(cmd, tmp.path(), "host");
        let socket = data.join("control.sock");
        let start = Instant::now();
        while UnixStream::connect(&socket).is_err() {
            if let Some(status) = guard.exited() {
                guard.fail(&format!(
                    "`bunraku run` exited with {status} before serving its socket"
                ));
            }
            if start.elapsed() > COMMAND_LIMIT {
                guard.fail("`bunraku run` did not serve its socket in time");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { guard, tmp, socket }
    }

    fn home(&self) -> PathBuf {
        self.tmp.path().join("home")
    }

    /// Runs `bunraku ARGS --socket SOCKET`.
    pub(crate) fn cli(&self, args: &[&str]) -> Finished {
        let mut cmd = bunraku(&self.home());
        cmd.args(args).arg("--socket").arg(&self.socket);
        finish(cmd, self.tmp.path(), args[0])
    }

    /// Like [`Host::cli`], and fails the test with the host's output unless it exits with
    /// `code`.
    pub(crate) fn expect(&mut self, args: &[&str], code: i32) -> Finished {
        let out = self.cli(args);
        if out.code() != Some(code) {
            self.guard.fail(&format!(
                "`bunraku {}` exited with {:?}, not {code}: {out:#?}",
                args.join(" "),
                out.code()
            ));
        }
        out
    }
}

fn example(name: &str) -> PathBuf {
    repo().join("examples").join(name)
}

#[test]
fn cli_calls_lists_and_stops_a_running_host() {
    let mut host = Host::start(&example("request-response"));

    // Only the owner may talk to the host.
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&host.socket), 0o600, "socket mode");
    assert_eq!(
        mode(host.socket.parent().unwrap()),
        0o700,
        "data directory mode"
    );

    let out = host.expect(&["call", "echo", r#"{"text":"hi"}"#, "--type", "Echo"], 0);
    assert_eq!(out.stdout.trim(), r#""hi""#);

    let out = host.expect(&["call", "nobody", r#"{"text":"hi"}"#, "--type", "Echo"], 1);
    assert!(
        out.stderr.contains("error: no such actor `nobody`"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("bunraku ps"), "{}", out.stderr);

    let out = host.expect(&["call", "echo", r#"{"text":"hi"}"#], 1);
    assert!(
        out.stderr.contains("choose one with --type: Echo, Slow"),
        "{}",
        out.stderr
    );

    let out = host.expect(&["call", "echo", "{not json", "--type", "Echo"], 2);
    assert!(out.stderr.contains("is not valid JSON"), "{}", out.stderr);

    let out = host.expect(
        &["send", "echo", r#"{"text":"one-way"}"#, "--type", "Echo"],
        0,
    );
    assert_eq!(out.stdout.trim(), "sent to echo");

    let out = host.expect(&["ps"], 0);
    let header = out.stdout.lines().next().unwrap_or_default();
    for column in [
        "ACTOR",
        "SUPERVISOR",
        "INSTANCE",
        "PHASE",
        "MAILBOX",
        "HANDLED",
        "RESTARTS",
        "DEAD",
        "MEMORY",
        "LAST FAILURE",
    ] {
        assert!(header.contains(column), "{column} missing from {header}");
    }
    let echo_row = out
        .stdout
        .lines()
        .find(|l| l.starts_with("echo "))
        .unwrap_or_else(|| {
            host.guard
                .fail(&format!("`ps` does not list echo:\n{}", out.stdout))
        });
    assert!(
        echo_row.contains("running") && echo_row.contains("/1024"),
        "{echo_row}"
    );

    let out = host.expect(&["metrics"], 0);
    assert!(
        out.stdout.lines().any(|l| l
            .starts_with("bunraku_actor_messages_handled_total{actor=\"echo\",instance=\"0\"} ")),
        "{}",
        out.stdout
    );
    // The host's linear memory: echo's instance holds a slot, and no wall was hit.
    let mut figure = |name: &str| {
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
            .unwrap_or_else(|| host.guard.fail(&format!("no {name} in:\n{}", out.stdout)))
    };
    assert!(figure("bunraku_memory_slots_in_use") >= 1.0);
    assert!(figure("bunraku_linear_memory_committed_bytes") > 0.0);
    assert_eq!(
        figure("bunraku_memory_wall_hits_total{wall=\"host memory budget\"}"),
        0.0
    );
    // Echo's instance started: its start was timed, stage by stage.
    assert!(figure("bunraku_instance_starts_total") >= 1.0);
    for stage in ["store", "instantiate", "first_entry"] {
        let seconds = figure(&format!(
            "bunraku_instance_start_seconds_total{{stage=\"{stage}\"}}"
        ));
        assert!(seconds > 0.0, "{stage}: {seconds}");
    }

    let out = host.expect(&["ps", "--json"], 0);
    let actors: Vec<Value> = serde_json::from_str(&out.stdout).unwrap();
    let echo = actors
        .iter()
        .find(|a| a["name"] == "echo")
        .expect("echo in ps --json");
    assert!(echo["handled"].as_u64().unwrap() >= 2, "{echo}");

    let out = host.expect(&["logs"], 0);
    assert!(
        out.stdout.contains("echo#0: echo echo ready"),
        "{}",
        out.stdout
    );

    // From another directory, without options: the pointer file written by `bunraku run`.
    let elsewhere = tempfile::tempdir().unwrap();
    let mut cmd = bunraku(&host.home());
    cmd.arg("ps").current_dir(elsewhere.path());
    let out = finish(cmd, host.tmp.path(), "ps-pointer");
    assert_eq!(out.code(), Some(0), "{out:#?}");
    assert!(
        out.stdout.lines().any(|l| l.starts_with("echo ")),
        "{}",
        out.stdout
    );

    let out = host.expect(&["stop", "echo"], 0);
    assert_eq!(out.stdout.trim(), "stopped echo");
    let out = host.expect(&["ps"], 0);
    assert!(
        !out.stdout.lines().any(|l| l.starts_with("echo ")),
        "{}",
        out.stdout
    );
    host.expect(&["stop", "echo"], 1);

    let out = host.expect(&["stop"], 0);
    assert!(out.stdout.contains("stopped"), "{}", out.stdout);
    let Host { guard, tmp, socket } = host;
    let finished = guard.wait(Duration::from_secs(30));
    assert!(finished.status.success(), "{finished:#?}");
    assert!(
        finished.stdout.contains("shutting down (`bunraku stop`)"),
        "{}",
        finished.stdout
    );
    assert!(!socket.exists(), "the socket outlived the host");
    assert!(
        !tmp.path().join("home/last-host").exists(),
        "the pointer outlived the host"
    );
}

#[test]
fn cli_publishes_to_subscribers_and_follows_logs() {
    // `--perf-map` changes nothing the test sees but the map of the actors' functions for perf.
    let mut host = Host::start_with(&example("pubsub"), &["--perf-map"]);
    let map = PathBuf::from(format!("/tmp/perf-{}.map", host.guard.child.id()));
    let perf_map = fs::read_to_string(&map).unwrap_or_default();
    let _ = fs::remove_file(&map);
    assert!(
        perf_map.lines().any(|l| l.contains("bunraku_sdk")),
        "{} names the SDK's functions in the guests:\n{}",
        map.display(),
        &perf_map[..perf_map.len().min(500)]
    );
    let tick = r#"{"publisher":"cli","seq":1}"#;
    let out = host.expect(&["publish", "news.eu", tick, "--type", "pubsub.tick"], 0);
    // news.eu matches all-news (news.>), eu (*.eu) and all (>).
    assert_eq!(
        out.stdout.trim(),
        "published to news.eu: delivered to 3 subscribers, 0 dropped"
    );
    let out = host.expect(&["call", "eu", "{}", "--type", "Report"], 0);
    let seen: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        seen,
        serde_json::json!([{"subject": "news.eu", "publisher": "cli", "seq": 1}])
    );

    let out = host.expect(&["publish", "news", tick], 2);
    assert!(out.stderr.contains("--type"), "{}", out.stderr);

    // `logs -f` streams lines logged after it started.
    let mut cmd = bunraku(&host.home());
    cmd.args(["logs", "-f", "--socket"]).arg(&host.socket);
    let mut follower = Guard::spawn(cmd, host.tmp.path(), "follow");
    std::thread::sleep(Duration::from_millis(300));
    host.expect(
        &[
            "call",
            "pub-a",
            r#"{"subject":"sports.eu","count":2}"#,
            "--type",
            "PublishBurst",
        ],
        0,
    );
    let start = Instant::now();
    while !fs::read_to_string(host.tmp.path().join("follow.stdout"))
        .unwrap_or_default()
        .contains("pub-a#0: published 2 ticks to sports.eu")
    {
        if start.elapsed() > Duration::from_secs(10) || follower.exited().is_some() {
            host.guard.fail("`logs -f` did not print the new line");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    host.expect(&["stop"], 0);
    // The host went away: the follower ends too.
    let followed = follower.wait(Duration::from_secs(30));
    assert!(followed.status.success(), "{followed:#?}");
}

#[test]
fn cli_without_a_host_names_the_socket_and_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("nothing.sock");
    let mut cmd = bunraku(&tmp.path().join("home"));
    cmd.args(["ps", "--socket"]).arg(&socket);
    let out = finish(cmd, tmp.path(), "ps");
    assert_eq!(out.code(), Some(1), "{out:#?}");
    assert!(
        out.stderr.contains(&format!(
            "no host is running at {} (found through --socket)",
            socket.display()
        )),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("start one with `bunraku run PATH`"),
        "{}",
        out.stderr
    );

    // No options, no manifest here, no pointer file.
    let mut cmd = bunraku(&tmp.path().join("home"));
    cmd.arg("ps").current_dir(tmp.path());
    let out = finish(cmd, tmp.path(), "ps-nothing");
    assert_eq!(out.code(), Some(1), "{out:#?}");
    assert!(out.stderr.contains("last-host"), "{}", out.stderr);
    assert!(
        out.stderr.contains("start one with `bunraku run PATH`"),
        "{}",
        out.stderr
    );
}

#[test]
fn cli_usage_errors_exit_2_and_every_command_shows_an_example() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    for args in [
        &["call"][..],
        &["frobnicate"],
        &["publish", "a.b", "{}"],
        &["ps", "--socket", "a", "--data-dir", "b"],
    ] {
        let mut cmd = bunraku(&home);
        cmd.args(args);
        let out = finish(cmd, tmp.path(), "usage");
        assert_eq!(out.code(), Some(2), "bunraku {args:?}: {out:#?}");
    }
    for command in [
        "new", "build", "run", "call", "send", "publish", "ps", "metrics", "logs", "stop",
    ] {
        let mut cmd = bunraku(&home);
        cmd.args([command, "--help"]);
        let out = finish(cmd, tmp.path(), "help");
        assert_eq!(out.code(), Some(0), "{out:#?}");
        assert!(
            out.stdout.contains("\nExample:\n  bunraku "),
            "`bunraku {command} --help`:\n{}",
            out.stdout
        );
    }
}

#[test]
fn cli_new_scaffolds_a_crate_that_tests_builds_and_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let dir = tmp.path().join("greeter");
    let mut cmd = bunraku(&home);
    cmd.args(["new", "greeter", "--path"]).arg(&dir);
    let out = finish(cmd, tmp.path(), "new");
    assert_eq!(out.code(), Some(0), "{out:#?}");
    for file in [
        "Cargo.toml",
        "src/lib.rs",
        "bunraku.toml",
        "rust-toolchain.toml",
        ".gitignore",
    ] {
        assert!(dir.join(file).is_file(), "{file} missing");
    }
    // Scaffolding over an existing crate is refused.
    let mut cmd = bunraku(&home);
    cmd.args(["new", "greeter", "--path"]).arg(&dir);
    assert_eq!(finish(cmd, tmp.path(), "new-again").code(), Some(2));

    // A target directory shared between test runs keeps the native and wasm builds quick; it
    // is the only change to the scaffold.
    let target = repo().join("target/scaffold-test");
    fs::create_dir(dir.join(".cargo")).unwrap();
    fs::write(
        dir.join(".cargo/config.toml"),
        format!("[build]\ntarget-dir = {:?}\n", target.display().to_string()),
    )
    .unwrap();

    // Its test runs natively.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("test")
        .current_dir(&dir)
        .env_remove("CARGO_TARGET_DIR");
    let out = finish(cmd, tmp.path(), "cargo-test");
    assert_eq!(out.code(), Some(0), "{out:#?}");
    assert!(
        out.stdout.contains("test result: ok. 2 passed"),
        "{}",
        out.stdout
    );

    // It builds to wasm.
    let mut cmd = bunraku(&home);
    cmd.arg("build").arg(&dir);
    let out = finish(cmd, tmp.path(), "build");
    assert_eq!(out.code(), Some(0), "{out:#?}");
    let wasm = target.join("wasm32-wasip1/release/greeter.wasm");
    assert!(
        out.stdout.contains(&format!("greeter: {}", wasm.display())),
        "{}",
        out.stdout
    );
    assert!(fs::read(&wasm).unwrap().starts_with(b"\0asm"));

    // It runs as its manifest says.
    let mut host = Host::start(&dir);
    let out = host.expect(
        &["call", "greeter", r#"{"name":"ann"}"#, "--type", "Greet"],
        0,
    );
    assert_eq!(out.stdout.trim(), r#""hello, ann! (greeting #1)""#);
    host.expect(
        &[
            "send",
            "greeter",
            r#"{"greeting":"hey"}"#,
            "--type",
            "SetGreeting",
        ],
        0,
    );
    let out = host.expect(
        &["call", "greeter", r#"{"name":"bo"}"#, "--type", "Greet"],
        0,
    );
    assert_eq!(out.stdout.trim(), r#""hey, bo! (greeting #2)""#);
    host.expect(&["stop"], 0);
    assert!(host.guard.wait(Duration::from_secs(30)).status.success());
}

#[test]
fn cli_restricted_by_its_manifest_grants_is_denied_with_a_hint() {
    let manifest = tempfile::tempdir().unwrap();
    let echo = repo().join("guests/echo");
    let counter = repo().join("guests/counter");
    fs::write(
        manifest.path().join("bunraku.toml"),
        format!(
            "[[actor]]\nname = \"echo\"\nmodule = {:?}\n\n\
             [[actor]]\nname = \"counter\"\nmodule = {:?}\n\n\
             [principal.cli]\nsend = [\"echo\"]\n",
            echo.display().to_string(),
            counter.display().to_string()
        ),
    )
    .unwrap();
    let mut host = Host::start(manifest.path());

    let out = host.expect(&["call", "echo", r#"{"text":"hi"}"#, "--type", "Echo"], 0);
    assert_eq!(out.stdout.trim(), r#""hi""#);
    let out = host.expect(&["call", "counter", "{}", "--type", "Get"], 1);
    assert!(
        out.stderr.contains(
            "error: denied: principal `cli` holds no grant to call `counter` (see [principal.cli] in the manifest)"
        ),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("hint: grants are set in the host's manifest"),
        "{}",
        out.stderr
    );
    host.expect(&["send", "counter", r#"{"n":1}"#, "--type", "Add"], 1);
    let out = host.expect(&["publish", "a.b", "{}", "--type", "Add"], 1);
    assert!(
        out.stderr.contains("no grant to publish to `a.b`"),
        "{}",
        out.stderr
    );
    // Managing the host needs no grant.
    host.expect(&["ps"], 0);
    host.expect(&["stop"], 0);
    let Host {
        guard, tmp: _tmp, ..
    } = host;
    let finished = guard.wait(Duration::from_secs(30));
    assert!(finished.status.success(), "{finished:#?}");
    assert!(
        finished
            .stdout
            .contains("principal cli: may call and send to echo; may publish to nothing"),
        "{}",
        finished.stdout
    );
}
