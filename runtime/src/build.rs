//! Building guest crates into wasm modules.
//!
//! A manifest's `module` names either a `.wasm` file or a guest crate directory
//! ([`ModuleSource`]); [`resolve_module`] turns either into the path of a `.wasm` file, building
//! crates with [`build_guest`]. Building runs
//!
//! ```text
//! cargo rustc --release --lib --target wasm32-wasip1 --crate-type cdylib \
//!     --message-format=json-render-diagnostics -- -C link-arg=-zstack-size=65536
//! ```
//!
//! in the crate directory and finds the module in cargo's JSON messages, so the crate's own
//! workspace, target directory, `.cargo/config.toml` and `rust-toolchain.toml` all apply.
//! Cargo's fingerprinting decides what is stale: building an unchanged crate is a no-op that
//! takes a fraction of a second. Builds are blocking; call them from
//! `tokio::task::spawn_blocking` in async code.
//!
//! # The guest stack
//!
//! A Rust wasm module reserves its stack at the bottom of linear memory, 1 MiB by default, so
//! every instance would start with 17 pages (1.1 MiB) of memory. The `-zstack-size` argument
//! after `--` reaches the final link of the guest crate only, and shrinks the stack to
//! [`GUEST_STACK_SIZE`] (64 KiB, typically 2 initial pages) without replacing any `rustflags` the
//! user configured.
//!
//! # Environment
//!
//! The build runs with the caller's environment except the variables in [`CLEARED_ENV`]: an
//! outer cargo (a `build.rs`, `cargo test`, `cargo run`) sets flags, a compiler and a target
//! directory meant for the host build, and a nested cargo sharing the outer target directory
//! would wait on its lock. `RUSTC_WRAPPER` (sccache and the like) is kept: it works for any
//! target. `RUSTUP_TOOLCHAIN` is also dropped when rustup set it for the outer cargo from a
//! default or a toolchain file (`RUSTUP_TOOLCHAIN_SOURCE` other than `env` or `cli`), so that
//! the guest crate's own `rust-toolchain.toml` chooses its toolchain.
//!
//! # Concurrency
//!
//! Building the same crate (or workspace) from several threads or processes at once is safe:
//! cargo locks the target directory, and the later builds wait for it ("Blocking waiting for
//! file lock", shown on stderr) and then find everything fresh.

use crate::manifest::ModuleSource;
use std::collections::{BTreeSet, VecDeque};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// The target guests are compiled for.
pub const GUEST_TARGET: &str = "wasm32-wasip1";

/// The stack size, in bytes, that guest modules are linked with.
pub const GUEST_STACK_SIZE: u32 = 64 * 1024;

/// Environment variables removed from the guest build's environment (see the
/// [module documentation](self#environment)).
pub const CLEARED_ENV: &[&str] = &[
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_BUILD_RUSTC_WORKSPACE_WRAPPER",
    "RUSTC",
    "CARGO_BUILD_RUSTC",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET_DIR",
];

/// How many of cargo's last stderr lines a [`BuildError::Compile`] keeps.
const TAIL_LINES: usize = 60;

/// Options for [`build_guest`] and [`resolve_module`].
///
/// ```
/// use bunraku_runtime::build::BuildOptions;
///
/// let opts = BuildOptions { install_target: true, ..BuildOptions::default() };
/// assert!(!opts.quiet);
/// ```
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Run `rustup target add wasm32-wasip1` when the target is missing, instead of failing with
    /// [`BuildError::MissingTarget`] (default `false`).
    pub install_target: bool,
    /// Do not forward cargo's progress and compiler diagnostics to stderr (default `false`).
    /// They are kept for [`BuildError::Compile`] either way.
    pub quiet: bool,
}

/// Why a guest module could not be produced.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The crate directory does not exist.
    #[error("guest crate directory {} does not exist", crate_dir.display())]
    CrateNotFound {
        /// The directory as given.
        crate_dir: PathBuf,
    },
    /// The directory has no `Cargo.toml`.
    #[error(
        "{} is not a guest crate: it has no Cargo.toml (a module is a guest crate directory or a .wasm file)",
        crate_dir.display()
    )]
    NotACrate {
        /// The directory as given.
        crate_dir: PathBuf,
    },
    /// A `.wasm` module file does not exist.
    #[error(
        "wasm module {} does not exist: build it first, or point `module` at its guest crate directory",
        path.display()
    )]
    WasmNotFound {
        /// The file as given.
        path: PathBuf,
    },
    /// The toolchain that builds the crate lacks the `wasm32-wasip1` standard library.
    #[error("{}", missing_target(crate_dir, *rustup_found))]
    MissingTarget {
        /// The crate being built (its toolchain file, if any, chooses the toolchain).
        crate_dir: PathBuf,
        /// Whether rustup is on `PATH`.
        rustup_found: bool,
    },
    /// A rustup command failed.
    #[error("`{command}` failed in {}: {}", crate_dir.display(), stderr.trim_end())]
    Rustup {
        /// The command line.
        command: String,
        /// Where it ran.
        crate_dir: PathBuf,
        /// Its error output.
        stderr: String,
    },
    /// A program (cargo or rustup) could not be started.
    #[error("cannot run `{program}` to build guest crate {}: {error}{}",
        crate_dir.display(),
        if error.kind() == std::io::ErrorKind::NotFound { "; install Rust with rustup (https://rustup.rs) and make sure `cargo` is on PATH" } else { "" }
    )]
    Spawn {
        /// The program.
        program: String,
        /// The crate being built.
        crate_dir: PathBuf,
        /// The failure (part of the message, so not also a `source`).
        error: std::io::Error,
    },
    /// cargo failed: the crate does not compile, or its manifest is broken.
    #[error("building guest crate {} failed:\n{stderr}", crate_dir.display())]
    Compile {
        /// The crate.
        crate_dir: PathBuf,
        /// The last lines cargo wrote to stderr (compiler diagnostics included).
        stderr: String,
    },
    /// cargo succeeded but named no `.wasm` file.
    #[error(
        "cargo built guest crate {} but produced no .wasm module: the crate needs a library target (src/lib.rs)",
        crate_dir.display()
    )]
    NoArtifact {
        /// The crate.
        crate_dir: PathBuf,
    },
}

fn missing_target(crate_dir: &Path, rustup_found: bool) -> String {
    if rustup_found {
        format!(
            "the {GUEST_TARGET} target is not installed for the Rust toolchain that builds {}: run `rustup target add {GUEST_TARGET}` in that directory",
            crate_dir.display()
        )
    } else {
        format!(
            "the {GUEST_TARGET} target is not installed for the Rust toolchain that builds {}, and rustup is not on PATH: install rustup (https://rustup.rs) and run `rustup target add {GUEST_TARGET}`, or install the target's standard library with the package manager that installed Rust",
            crate_dir.display()
        )
    }
}

/// The `.wasm` file for a module source: a crate is built with [`build_guest`] (a no-op when
/// fresh), a `.wasm` file is checked to exist.
pub fn resolve_module(spec: &ModuleSource, opts: &BuildOptions) -> Result<PathBuf, BuildError> {
    match spec {
        ModuleSource::Crate(dir) => build_guest(dir, opts),
        ModuleSource::Wasm(path) if path.is_file() => Ok(path.clone()),
        ModuleSource::Wasm(path) => Err(BuildError::WasmNotFound { path: path.clone() }),
    }
}

/// Builds the guest crate in `crate_dir` for `wasm32-wasip1` in release mode and returns the
/// path of its `.wasm` module (inside the crate's own target directory).
///
/// Checks first that the crate's toolchain has the target (installing it when
/// [`BuildOptions::install_target`] is set). Cargo's diagnostics go to stderr unless
/// [`BuildOptions::quiet`] is set. See the [module documentation](self) for the exact command
/// and environment.
pub fn build_guest(crate_dir: &Path, opts: &BuildOptions) -> Result<PathBuf, BuildError> {
    build_with_env(crate_dir, opts, &[])
}

/// [`build_guest`] with `inherited` added to the environment first, as if inherited from the
/// caller (tests use it to simulate an outer cargo).
fn build_with_env(
    crate_dir: &Path,
    opts: &BuildOptions,
    inherited: &[(&str, &str)],
) -> Result<PathBuf, BuildError> {
    if !crate_dir.is_dir() {
        return Err(BuildError::CrateNotFound {
            crate_dir: crate_dir.to_path_buf(),
        });
    }
    if !crate_dir.join("Cargo.toml").is_file() {
        return Err(BuildError::NotACrate {
            crate_dir: crate_dir.to_path_buf(),
        });
    }
    let crate_dir = std::fs::canonicalize(crate_dir).map_err(|_| BuildError::CrateNotFound {
        crate_dir: crate_dir.to_path_buf(),
    })?;
    let rustup_found = ensure_target(&crate_dir, opts, inherited)?;

    let color = !opts.quiet && std::io::stderr().is_terminal();
    let mut cmd = command("cargo", &crate_dir, inherited);
    cmd.args(["rustc", "--release", "--lib", "--target", GUEST_TARGET])
        .args(["--crate-type", "cdylib"])
        .arg("--message-format=json-render-diagnostics")
        .arg(if color {
            "--color=always"
        } else {
            "--color=never"
        })
        .arg("--")
        .arg(format!("-Clink-arg=-zstack-size={GUEST_STACK_SIZE}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|error| BuildError::Spawn {
        program: "cargo".into(),
        crate_dir: crate_dir.clone(),
        error,
    })?;

    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let (artifact, tail) = std::thread::scope(|s| {
        let tail = s.spawn(|| forward_stderr(stderr, opts.quiet));
        let artifact = wasm_artifact(BufReader::new(stdout));
        (artifact, tail.join().unwrap_or_default())
    });
    let status = child.wait().map_err(|error| BuildError::Spawn {
        program: "cargo".into(),
        crate_dir: crate_dir.clone(),
        error,
    })?;

    if !status.success() {
        if !rustup_found && tail.contains("target may not be installed") {
            return Err(BuildError::MissingTarget {
                crate_dir,
                rustup_found,
            });
        }
        return Err(BuildError::Compile {
            crate_dir,
            stderr: tail,
        });
    }
    artifact
        .filter(|p| p.is_file())
        .ok_or(BuildError::NoArtifact { crate_dir })
}

/// A command run in `dir` with the guest build's environment.
fn command(program: &str, dir: &Path, inherited: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(dir).envs(inherited.iter().copied());
    for var in CLEARED_ENV {
        cmd.env_remove(var);
    }
    let source = inherited
        .iter()
        .find(|(k, _)| *k == "RUSTUP_TOOLCHAIN_SOURCE")
        .map(|(_, v)| OsString::from(v))
        .or_else(|| std::env::var_os("RUSTUP_TOOLCHAIN_SOURCE"));
    if source.is_some_and(|s| s != "env" && s != "cli") {
        cmd.env_remove("RUSTUP_TOOLCHAIN");
        cmd.env_remove("RUSTUP_TOOLCHAIN_SOURCE");
    }
    cmd
}

/// Crate directories whose toolchain is known to have the target, so that a no-op rebuild
/// does not ask rustup again.
static TARGET_CHECKED: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

/// Makes sure the toolchain used in `crate_dir` has [`GUEST_TARGET`]. Returns whether rustup was
/// found (without rustup there is nothing to check: the build itself will tell).
fn ensure_target(
    crate_dir: &Path,
    opts: &BuildOptions,
    inherited: &[(&str, &str)],
) -> Result<bool, BuildError> {
    let checked = || TARGET_CHECKED.lock().unwrap_or_else(|e| e.into_inner());
    if checked().contains(crate_dir) {
        return Ok(true);
    }
    let rustup = |args: &[&str]| {
        command("rustup", crate_dir, inherited)
            .args(args)
            .stdin(Stdio::null())
            .output()
    };
    let rustup_failed = |args: &[&str], stderr: &[u8]| BuildError::Rustup {
        command: format!("rustup {}", args.join(" ")),
        crate_dir: crate_dir.to_path_buf(),
        stderr: String::from_utf8_lossy(stderr).into_owned(),
    };

    let list = ["target", "list", "--installed"];
    let out = match rustup(&list) {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(error) => {
            return Err(BuildError::Spawn {
                program: "rustup".into(),
                crate_dir: crate_dir.to_path_buf(),
                error,
            });
        }
    };
    if !out.status.success() {
        return Err(rustup_failed(&list, &out.stderr));
    }
    if !lists_target(&String::from_utf8_lossy(&out.stdout)) {
        if !opts.install_target {
            return Err(BuildError::MissingTarget {
                crate_dir: crate_dir.to_path_buf(),
                rustup_found: true,
            });
        }
        let add = ["target", "add", GUEST_TARGET];
        let out = rustup(&add).map_err(|error| BuildError::Spawn {
            program: "rustup".into(),
            crate_dir: crate_dir.to_path_buf(),
            error,
        })?;
        if !out.status.success() {
            return Err(rustup_failed(&add, &out.stderr));
        }
        if !opts.quiet {
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
        }
    }
    checked().insert(crate_dir.to_path_buf());
    Ok(true)
}

/// Whether `rustup target list --installed` output names [`GUEST_TARGET`].
fn lists_target(stdout: &str) -> bool {
    stdout.lines().any(|l| l.trim() == GUEST_TARGET)
}

/// Copies cargo's stderr to ours (unless `quiet`) and returns its last lines without colour.
fn forward_stderr(stderr: impl std::io::Read, quiet: bool) -> String {
    let mut tail = VecDeque::with_capacity(TAIL_LINES);
    for line in BufReader::new(stderr).split(b'\n') {
        let Ok(line) = line else { break };
        let line = String::from_utf8_lossy(&line);
        if !quiet {
            eprintln!("{line}");
        }
        let line = strip_ansi(&line);
        if is_progress(&line) {
            continue;
        }
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    Vec::from(tail).join("\n")
}

/// Whether a stderr line is cargo's progress (`   Compiling x`), not a diagnostic.
fn is_progress(line: &str) -> bool {
    const VERBS: &[&str] = &[
        "Compiling",
        "Checking",
        "Finished",
        "Blocking",
        "Updating",
        "Locking",
        "Adding",
        "Downloading",
        "Downloaded",
        "Fresh",
        "Running",
        "Building",
    ];
    line.starts_with(' ')
        && line
            .split_whitespace()
            .next()
            .is_some_and(|w| VERBS.contains(&w))
}

/// The last `.wasm` file named by a `compiler-artifact` message in cargo's JSON output.
fn wasm_artifact(stdout: impl BufRead) -> Option<PathBuf> {
    let mut found = None;
    for line in stdout.lines() {
        let Ok(line) = line else { break };
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let wasm = msg["filenames"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f.as_str())
            .find(|f| f.ends_with(".wasm"));
        if let Some(wasm) = wasm {
            found = Some(PathBuf::from(wasm));
        }
    }
    found
}

/// Removes ANSI escape sequences (cargo's colours).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const TINY_LIB: &str = "#[unsafe(no_mangle)]\npub extern \"C\" fn f() -> i32 {\n    1\n}\n";

    /// A throwaway guest crate (its own workspace, the repo's toolchain) in a temporary directory.
    fn tiny_crate(lib_rs: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("Cargo.toml"),
            "[package]\nname = \"tiny\"\nversion = \"0.0.0\"\nedition = \"2024\"\n\n[workspace]\n",
        )
        .unwrap();
        let toolchain = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rust-toolchain.toml");
        fs::copy(toolchain, dir.path().join("rust-toolchain.toml")).unwrap();
        fs::create_dir(dir.path().join("src")).unwrap();
        fs::write(dir.path().join("src/lib.rs"), lib_rs).unwrap();
        dir
    }

    fn quiet() -> BuildOptions {
        BuildOptions {
            quiet: true,
            ..BuildOptions::default()
        }
    }

    /// The minimum page count of the first memory a wasm module defines.
    fn initial_memory_pages(wasm: &[u8]) -> Option<u64> {
        fn leb(bytes: &[u8], pos: &mut usize) -> u64 {
            let (mut value, mut shift) = (0u64, 0);
            loop {
                let b = bytes[*pos];
                *pos += 1;
                value |= u64::from(b & 0x7f) << shift;
                if b & 0x80 == 0 {
                    return value;
                }
                shift += 7;
            }
        }
        let mut pos = 8;
        while pos < wasm.len() {
            let id = wasm[pos];
            pos += 1;
            let size = leb(wasm, &mut pos) as usize;
            if id == 5 {
                let mut p = pos;
                let count = leb(wasm, &mut p);
                if count == 0 {
                    return None;
                }
                let _flags = wasm[p];
                p += 1;
                return Some(leb(wasm, &mut p));
            }
            pos += size;
        }
        None
    }

    #[test]
    fn tiny_crate_builds_with_a_small_stack() {
        let dir = tiny_crate(TINY_LIB);
        let wasm = build_guest(dir.path(), &quiet()).unwrap();
        assert!(wasm.starts_with(fs::canonicalize(dir.path()).unwrap()));
        let bytes = fs::read(&wasm).unwrap();
        assert!(bytes.starts_with(b"\0asm"));
        let pages = initial_memory_pages(&bytes).expect("module defines a memory");
        assert!(
            pages <= 2,
            "{pages} initial pages: -zstack-size did not reach the link"
        );

        // A second build is a no-op that names the same file.
        assert_eq!(build_guest(dir.path(), &quiet()).unwrap(), wasm);
        let spec = ModuleSource::Crate(dir.path().to_path_buf());
        assert_eq!(resolve_module(&spec, &quiet()).unwrap(), wasm);
        let spec = ModuleSource::Wasm(wasm.clone());
        assert_eq!(resolve_module(&spec, &quiet()).unwrap(), wasm);
    }

    #[test]
    fn outer_cargo_environment_is_ignored_but_crate_config_applies() {
        let dir = tiny_crate(&format!(
            "#![allow(unexpected_cfgs)]\n#[cfg(not(from_config))]\ncompile_error!(\"config rustflags were dropped\");\n{TINY_LIB}"
        ));
        fs::create_dir(dir.path().join(".cargo")).unwrap();
        fs::write(
            dir.path().join(".cargo/config.toml"),
            "[build]\nrustflags = [\"--cfg\", \"from_config\"]\n",
        )
        .unwrap();
        let outer = dir.path().join("outer-target");
        let outer_str = outer.to_str().unwrap();
        let wasm = build_with_env(
            dir.path(),
            &quiet(),
            &[
                ("RUSTFLAGS", "-Cno-such-flag"),
                ("CARGO_ENCODED_RUSTFLAGS", "-Cno-such-flag"),
                ("CARGO_BUILD_RUSTFLAGS", "-Cno-such-flag"),
                ("RUSTC_WORKSPACE_WRAPPER", "/no/such/wrapper"),
                ("RUSTC", "/no/such/rustc"),
                ("CARGO_TARGET_DIR", outer_str),
                ("CARGO_BUILD_TARGET_DIR", outer_str),
            ],
        )
        .unwrap();
        assert!(!outer.exists(), "the outer target dir was used");
        assert!(wasm.starts_with(fs::canonicalize(dir.path()).unwrap().join("target")));
    }

    #[test]
    fn compile_error_is_reported_with_the_diagnostic() {
        let dir = tiny_crate("pub fn f() -> i32 { \"one\" }\n");
        let err = build_guest(dir.path(), &quiet()).unwrap_err();
        let BuildError::Compile { crate_dir, stderr } = &err else {
            panic!("expected a compile error, got {err:?}");
        };
        assert_eq!(*crate_dir, fs::canonicalize(dir.path()).unwrap());
        assert!(
            stderr.contains("error[E0308]: mismatched types"),
            "{stderr}"
        );
        assert!(!stderr.contains('\u{1b}'));
        assert!(!stderr.contains("Compiling tiny"), "{stderr}");
        let message = err.to_string();
        assert!(
            message.starts_with(&format!(
                "building guest crate {} failed:\n",
                crate_dir.display()
            )),
            "{message}"
        );
        assert!(message.contains("mismatched types"));
    }

    #[test]
    fn concurrent_builds_of_one_crate_all_succeed() {
        let dir = tiny_crate(TINY_LIB);
        let paths: Vec<PathBuf> = std::thread::scope(|s| {
            let builds: Vec<_> = (0..3)
                .map(|_| s.spawn(|| build_guest(dir.path(), &quiet())))
                .collect();
            builds
                .into_iter()
                .map(|b| b.join().unwrap().unwrap())
                .collect()
        });
        assert!(paths.iter().all(|p| *p == paths[0] && p.is_file()));
    }

    #[test]
    fn missing_and_non_crate_directories_are_clear() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = build_guest(&missing, &quiet()).unwrap_err();
        assert!(matches!(err, BuildError::CrateNotFound { .. }));
        assert_eq!(
            err.to_string(),
            format!("guest crate directory {} does not exist", missing.display())
        );

        let err = build_guest(dir.path(), &quiet()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{} is not a guest crate: it has no Cargo.toml (a module is a guest crate directory or a .wasm file)",
                dir.path().display()
            )
        );

        let wasm = dir.path().join("x.wasm");
        let err = resolve_module(&ModuleSource::Wasm(wasm.clone()), &quiet()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "wasm module {} does not exist: build it first, or point `module` at its guest crate directory",
                wasm.display()
            )
        );
    }

    #[test]
    fn missing_target_names_the_rustup_command() {
        assert!(lists_target("wasm32-wasip1\nx86_64-unknown-linux-gnu\n"));
        assert!(!lists_target("wasm32-wasip2\nx86_64-unknown-linux-gnu\n"));
        let err = BuildError::MissingTarget {
            crate_dir: PathBuf::from("/g/echo"),
            rustup_found: true,
        };
        assert_eq!(
            err.to_string(),
            "the wasm32-wasip1 target is not installed for the Rust toolchain that builds /g/echo: run `rustup target add wasm32-wasip1` in that directory"
        );
        let err = BuildError::MissingTarget {
            crate_dir: PathBuf::from("/g/echo"),
            rustup_found: false,
        };
        assert!(err.to_string().contains("rustup is not on PATH"));
        assert!(
            err.to_string()
                .contains("`rustup target add wasm32-wasip1`")
        );
    }

    #[test]
    fn rustup_chosen_toolchain_defers_to_the_crate_toolchain_file() {
        let envs = |source: &str| {
            let cmd = command(
                "true",
                Path::new("/"),
                &[
                    ("RUSTUP_TOOLCHAIN", "outer"),
                    ("RUSTUP_TOOLCHAIN_SOURCE", source),
                ],
            );
            cmd.get_envs()
                .filter(|(k, _)| *k == "RUSTUP_TOOLCHAIN")
                .map(|(_, v)| v.map(|v| v.to_os_string()))
                .last()
                .flatten()
        };
        assert_eq!(envs("toolchain-file"), None);
        assert_eq!(envs("default"), None);
        assert_eq!(envs("cli"), Some("outer".into()));
        assert_eq!(envs("env"), Some("outer".into()));
    }

    #[test]
    fn ansi_colours_are_stripped() {
        assert_eq!(
            strip_ansi("\u{1b}[1m\u{1b}[91merror\u{1b}[0m: x"),
            "error: x"
        );
    }
}
