//! `bunraku build` and `bunraku run`, including `run --smoke`.
//!
//! `run` keeps its tokio runtimes apart: the host's own multi-threaded runtime runs the guests,
//! this command's current-thread runtime serves the control socket and waits for Ctrl-C, and a
//! manifest's `[gateway]` is served by an I/O runtime of its own (one worker per core), so a
//! guest spinning on its time budget can starve neither the CLI nor the HTTP clients.
//!
//! `--smoke` asks the `[smoke]` checker actor for its report, or runs the `[smoke] http` script
//! against the gateway over loopback, or both, and prints each failed fact and a summary line.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use bunraku_runtime::build::{BuildOptions, build_guest, resolve_module};
use bunraku_runtime::control::{self, ControlServer};
use bunraku_runtime::engine::EngineConfig;
use bunraku_runtime::gateway::{GATEWAY_PRINCIPAL, Gateway, script};
use bunraku_runtime::manifest::{
    MANIFEST_FILE, Manifest, ModuleSource, SMOKE_MESSAGE, SmokeSection,
};
use bunraku_runtime::{ClientMessage, Grants, Host, HostConfig};
use serde::Deserialize;
use tracing_subscriber::EnvFilter;

use crate::locate::{clear_pointer, write_pointer};
use crate::logfmt::LineFormat;
use crate::{BuildArgs, RunArgs, usage};

/// How long actors get to run `on_stop` when the host shuts down, and open HTTP connections
/// to finish their requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

fn build_options(no_install: bool) -> BuildOptions {
    BuildOptions {
        install_target: !no_install,
        quiet: false,
    }
}

/// What `bunraku build PATH` builds.
enum BuildTarget {
    Manifest(Box<Manifest>),
    Crate(PathBuf),
}

fn build_target(path: &Path) -> Result<BuildTarget> {
    let is_manifest_file = path.is_file() && path.file_name().is_some_and(|n| n != "Cargo.toml");
    if is_manifest_file || path.join(MANIFEST_FILE).is_file() {
        return Ok(BuildTarget::Manifest(Box::new(Manifest::load(path)?)));
    }
    if path.is_file() {
        return Ok(BuildTarget::Crate(
            path.parent().unwrap_or(Path::new(".")).to_path_buf(),
        ));
    }
    if path.join("Cargo.toml").is_file() {
        return Ok(BuildTarget::Crate(path.to_path_buf()));
    }
    if !path.exists() {
        return Err(usage(format!(
            "{} does not exist: give a manifest or a guest crate directory",
            path.display()
        )));
    }
    Err(usage(format!(
        "{} holds neither a {MANIFEST_FILE} nor a Cargo.toml: give a manifest or a guest crate directory",
        path.display()
    )))
}

pub(crate) async fn build(args: &BuildArgs) -> Result<()> {
    let opts = build_options(args.no_install);
    match build_target(&args.path)? {
        BuildTarget::Crate(dir) => {
            let wasm = tokio::task::spawn_blocking(move || build_guest(&dir, &opts)).await??;
            let _ = out!("built {}", wasm.display());
        }
        BuildTarget::Manifest(manifest) => {
            let built = build_modules(*manifest, opts).await?;
            for (actor, wasm) in built {
                let _ = out!("{actor}: {}", wasm.display());
            }
        }
    }
    Ok(())
}

/// Builds (when stale) the module of every actor, each crate once; returns `(actor, wasm)` in
/// manifest order.
async fn build_modules(manifest: Manifest, opts: BuildOptions) -> Result<Vec<(String, PathBuf)>> {
    tokio::task::spawn_blocking(move || {
        let mut done: HashMap<ModuleSource, PathBuf> = HashMap::new();
        let mut out = Vec::new();
        // Actors first (in file order), then the `[[spawnable]]` modules.
        for spec in manifest.actors.iter().chain(&manifest.spawnables) {
            let wasm = match done.get(&spec.module) {
                Some(wasm) => wasm.clone(),
                None => {
                    let wasm = resolve_module(&spec.module, &opts).with_context(|| {
                        format!("actor `{}` in {}", spec.name, manifest.path.display())
                    })?;
                    done.insert(spec.module.clone(), wasm.clone());
                    wasm
                }
            };
            out.push((spec.name.clone(), wasm));
        }
        Ok(out)
    })
    .await?
}

/// The reply `bunraku run --smoke` expects (see `docs/manifest.md`, `[smoke]`).
#[derive(Debug, Deserialize)]
struct SmokeReport {
    ok: bool,
    summary: String,
    #[serde(default)]
    facts: Vec<Fact>,
}

#[derive(Debug, Deserialize)]
struct Fact {
    name: String,
    ok: bool,
    #[serde(default)]
    detail: String,
}

fn init_logging(manifest: &Manifest) -> Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.trim().is_empty() => {
            EnvFilter::try_new(&env).map_err(|e| usage(format!("RUST_LOG=`{env}` is not a log filter: {e}")))?
        }
        _ => EnvFilter::try_new(&manifest.host.log).map_err(|e| {
            anyhow!(
                "{}: host.log `{}` is not a log filter ({e}): write e.g. \"info\" or \"info,bunraku_runtime=debug\"",
                manifest.path.display(),
                manifest.host.log
            )
        })?,
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .event_format(LineFormat)
        .try_init()
        .map_err(|e| anyhow!("cannot set up logging: {e}"))
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Everything `run` must undo on the way out.
struct Running {
    host: Arc<Host>,
    server: Option<ControlServer>,
    socket: Option<PathBuf>,
    gateway: Option<Gateway>,
    /// The gateway's I/O runtime.
    http: Option<tokio::runtime::Runtime>,
}

impl Running {
    async fn shutdown(mut self) {
        // HTTP clients first: no new request reaches an actor that is stopping.
        if let Some(gateway) = self.gateway.take() {
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, gateway.shutdown().wait()).await;
        }
        if let Some(http) = self.http.take() {
            http.shutdown_background();
        }
        let host = self.host.clone();
        let _ = tokio::task::spawn_blocking(move || host.shutdown(SHUTDOWN_GRACE)).await;
        // Dropping the server removes the socket file.
        drop(self.server.take());
        if let Some(socket) = self.socket.take() {
            clear_pointer(&socket);
        }
    }
}

pub(crate) async fn run(args: RunArgs) -> Result<ExitCode> {
    let manifest = Manifest::load(&args.path)?;
    let smoke = match (&manifest.smoke, args.smoke) {
        (Some(s), true) => Some(s.clone()),
        (None, true) => {
            return Err(usage(format!(
                "{} has no [smoke] section, so --smoke has nothing to run: add\n\n  [smoke]\n  actor = \"NAME\"\n\nnaming the actor that answers the `{SMOKE_MESSAGE}` request (or `http = \"smoke.toml\"`, an HTTP script run against the [gateway]), or run without --smoke",
                manifest.path.display()
            )));
        }
        (_, false) => None,
    };
    if args.listen.is_some() && manifest.gateway.is_none() {
        return Err(usage(format!(
            "{} has no [gateway] section, so --listen has nothing to serve: add one, or run without --listen",
            manifest.path.display()
        )));
    }
    let data_dir = args
        .data_dir
        .as_deref()
        .map(absolute)
        .unwrap_or_else(|| manifest.host.data_dir.clone());
    init_logging(&manifest)?;
    // Fail before building when the data directory is taken (serving would refuse it later).
    let socket = control::socket_path(&data_dir);
    if tokio::net::UnixStream::connect(&socket).await.is_ok() {
        return Err(anyhow!(
            "a host is already running with data directory {}: stop it first (`bunraku stop --data-dir {}`), or give this one another --data-dir",
            data_dir.display(),
            data_dir.display()
        ));
    }

    let modules = build_modules(manifest.clone(), build_options(args.no_install)).await?;

    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating data directory {}", data_dir.display()))?;
    std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700)).with_context(
        || {
            format!(
                "restricting data directory {} to its owner",
                data_dir.display()
            )
        },
    )?;
    let config = HostConfig {
        engine_config: EngineConfig {
            cache_dir: Some(data_dir.join("module-cache")),
            perf_map: args.perf_map,
            ..EngineConfig::default()
        },
        // The embedded store (`state.sqlite3`) is opened there when an actor first persists.
        data_dir: Some(data_dir.clone()),
        idle_trim: manifest.host.idle_trim,
        ..HostConfig::default()
    };
    let host = Arc::new(Host::new(config).context("starting the host")?);
    let mut running = Running {
        host: host.clone(),
        server: None,
        socket: None,
        gateway: None,
        http: None,
    };
    for (principal, grants) in &manifest.principals {
        host.set_principal_grants(principal, grants.clone());
        let _ = out!("principal {principal}: {}", describe_principal(grants));
    }

    let (actor_modules, spawnable_modules) = modules.split_at(manifest.actors.len());
    let wasm_of: HashMap<&str, &PathBuf> = actor_modules
        .iter()
        .map(|(name, wasm)| (name.as_str(), wasm))
        .collect();
    // Supervised actors start in their trees' order, each running before the next.
    for spec in manifest.start_order() {
        let wasm = wasm_of[spec.name.as_str()];
        if let Err(e) = host.deploy(spec, wasm) {
            running.shutdown().await;
            return Err(
                anyhow::Error::new(e).context(format!("deploying {}", manifest.path.display()))
            );
        }
        let handles = host
            .actor(&spec.name)
            .first()
            .map(|s| s.handles.join(", "))
            .unwrap_or_default();
        let subs: Vec<&str> = spec
            .subscriptions
            .iter()
            .map(|s| s.pattern.as_str())
            .collect();
        let instances = if spec.instances == 1 {
            "1 instance".to_owned()
        } else {
            format!("{} instances", spec.instances)
        };
        let subscribes = if subs.is_empty() {
            String::new()
        } else {
            format!("; subscribes to {}", subs.join(", "))
        };
        let _ = out!(
            "deployed {} ({instances}): handles {handles}{subscribes}",
            spec.name
        );
        if manifest.is_supervised(&spec.name) {
            host.wait_started(&spec.name);
        }
    }
    let supervised = host
        .supervise(&manifest.supervisors)
        .map_err(anyhow::Error::new)
        .and_then(|()| {
            for (spec, (_, wasm)) in manifest.spawnables.iter().zip(spawnable_modules) {
                host.define_spawnable(&spec.name, spec, wasm)?;
            }
            Ok(())
        });
    if let Err(e) = supervised {
        running.shutdown().await;
        return Err(e.context(format!("deploying {}", manifest.path.display())));
    }
    for sup in &manifest.supervisors {
        let children: Vec<&str> = sup.children.iter().map(|c| c.name.as_str()).collect();
        let _ = out!(
            "supervisor {} ({:?}, at most {} restarts in {} ms): {}",
            sup.name,
            sup.strategy,
            sup.intensity.max_restarts,
            sup.intensity.period.as_millis(),
            children.join(", ")
        );
    }

    if let Some(config) = &manifest.gateway {
        let mut config = config.clone();
        if let Some(listen) = args.listen {
            config.listen = listen;
        }
        let routes = config.routes.len();
        match start_gateway(&host, config) {
            Ok((gateway, http)) => {
                // The manifest's actors are deployed: the gateway is ready.
                gateway.set_ready(true);
                let _ = out!(
                    "principal {GATEWAY_PRINCIPAL}: {}",
                    describe_principal(&host.principal_grants(GATEWAY_PRINCIPAL))
                );
                let _ = out!(
                    "gateway: listening on http://{} ({} route{})",
                    gateway.local_addr(),
                    routes,
                    if routes == 1 { "" } else { "s" }
                );
                running.gateway = Some(gateway);
                running.http = Some(http);
            }
            Err(e) => {
                running.shutdown().await;
                return Err(e.context(format!(
                    "starting the gateway of {}",
                    manifest.path.display()
                )));
            }
        }
    }

    let server = match control::serve(host.clone(), &data_dir).await {
        Ok(server) => server,
        Err(e) => {
            running.shutdown().await;
            return Err(e.into());
        }
    };
    let socket = server.path().to_path_buf();
    let shutdown_requested = server.shutdown.clone();
    running.server = Some(server);
    match write_pointer(&socket) {
        Ok(_) => running.socket = Some(socket.clone()),
        Err(e) => eprintln!(
            "warning: other commands will need --socket {}: {e:#}",
            socket.display()
        ),
    }
    let _ = out!(
        "host running {} actor{} from {}; control socket {}",
        manifest.actors.len(),
        if manifest.actors.len() == 1 { "" } else { "s" },
        manifest.path.display(),
        socket.display()
    );

    let code = match smoke {
        Some(smoke) => {
            let name = manifest
                .dir
                .file_name()
                .map_or_else(|| "smoke".to_owned(), |n| n.to_string_lossy().into_owned());
            let gateway = running.gateway.as_ref().map(Gateway::local_addr);
            tokio::select! {
                code = run_smoke(&smoke, &host, gateway, &name) => code,
                reason = host.fatal() => {
                    let _ = out!("smoke: FAILED: {reason}");
                    ExitCode::FAILURE
                }
                signal = stop_signal() => {
                    let _ = out!("smoke: FAILED: interrupted ({signal}) before the check finished");
                    ExitCode::FAILURE
                }
            }
        }
        None => {
            let _ = out!("stop with Ctrl-C or `bunraku stop`");
            let (why, code) = tokio::select! {
                signal = stop_signal() => (signal.to_owned(), ExitCode::SUCCESS),
                () = shutdown_requested.notified() => ("`bunraku stop`".to_owned(), ExitCode::SUCCESS),
                reason = host.fatal() => {
                    eprintln!("error: {reason}; the host stops");
                    (reason, ExitCode::FAILURE)
                }
            };
            let _ = out!("shutting down ({why})");
            code
        }
    };
    running.shutdown().await;
    Ok(code)
}

/// Starts the manifest's gateway on an I/O runtime of its own (one worker per core, apart from
/// the guests' runtime and this command's).
fn start_gateway(
    host: &Arc<Host>,
    config: bunraku_runtime::gateway::GatewayConfig,
) -> Result<(Gateway, tokio::runtime::Runtime)> {
    let http = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(1, |n| n.get()))
        .thread_name("bunraku-http")
        .enable_all()
        .build()
        .context("starting the gateway's I/O runtime")?;
    match Gateway::start(host.clone(), config, http.handle()) {
        Ok(gateway) => Ok((gateway, http)),
        Err(e) => {
            // Dropping a runtime blocks, which an async context must not do.
            http.shutdown_background();
            Err(e.into())
        }
    }
}

/// Runs the `[smoke]` checks: the HTTP script against the gateway, then the checker actor;
/// passes only when every check given passes.
async fn run_smoke(
    smoke: &SmokeSection,
    host: &Host,
    gateway: Option<std::net::SocketAddr>,
    name: &str,
) -> ExitCode {
    let mut ok = true;
    if let Some(path) = &smoke.http {
        ok &= smoke_http(path, gateway, smoke.timeout, name).await;
    }
    if let Some(actor) = &smoke.actor {
        let _ = out!(
            "smoke: asking `{actor}` to check the deployment (timeout {} ms)",
            smoke.timeout.as_millis()
        );
        let msg = ClientMessage::json(actor, Some(SMOKE_MESSAGE), &serde_json::json!({}))
            .with_timeout(smoke.timeout);
        ok &= report_smoke(actor, host.request(msg).await) == ExitCode::SUCCESS;
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs an HTTP smoke script against the gateway at `addr` and prints its outcome like the
/// checker-actor smoke: each failed fact, then one summary line.
async fn smoke_http(
    path: &Path,
    addr: Option<std::net::SocketAddr>,
    timeout: Duration,
    name: &str,
) -> bool {
    let Some(addr) = addr else {
        let _ = out!("smoke: FAILED: the HTTP script needs the manifest's [gateway]");
        return false;
    };
    let script = match script::Script::load(path) {
        Ok(script) => script,
        Err(e) => {
            let _ = out!("smoke: FAILED: {e}");
            return false;
        }
    };
    let _ = out!(
        "smoke: sending the {} request{} of {} to http://{addr} (timeout {} ms)",
        script.requests.len(),
        if script.requests.len() == 1 { "" } else { "s" },
        path.display(),
        timeout.as_millis()
    );
    let facts = match tokio::time::timeout(timeout, script.run(addr)).await {
        Ok(facts) => facts,
        Err(_) => {
            let _ = out!(
                "smoke: FAILED: the HTTP script did not finish within {} ms",
                timeout.as_millis()
            );
            return false;
        }
    };
    for fact in facts.iter().filter(|f| !f.ok) {
        let _ = out!("FAILED {}: {}", fact.name, fact.detail);
    }
    let (ok, summary) = script::summary(name, &facts);
    let _ = out!("{summary}");
    ok
}

/// What a principal's grants allow, for the start-up output: `may call and send to echo,
/// client; may publish to nothing`.
fn describe_principal(grants: &Grants) -> String {
    let list = |items: Vec<String>| {
        if items.is_empty() {
            "nothing".to_owned()
        } else {
            items.join(", ")
        }
    };
    let send = list(grants.send.clone());
    let publish = list(grants.publish.iter().map(|p| p.to_string()).collect());
    format!("may call and send to {send}; may publish to {publish}")
}

/// Resolves on Ctrl-C or SIGTERM, naming which.
async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return "Ctrl-C";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "Ctrl-C",
        _ = term.recv() => "SIGTERM",
    }
}

/// Prints the outcome of the smoke request: each failed fact, then one summary line.
fn report_smoke(
    actor: &str,
    reply: Result<bunraku_runtime::ClientReply, bunraku_runtime::CallError>,
) -> ExitCode {
    let value = match reply.and_then(|r| r.json()) {
        Ok(value) => value,
        Err(e) => {
            let _ =
                out!("smoke: FAILED: `{actor}` did not answer the {SMOKE_MESSAGE} request: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report: SmokeReport = match serde_json::from_value(value.clone()) {
        Ok(r) => r,
        Err(e) => {
            let _ =
                out!("smoke: FAILED: the reply of `{actor}` is not a smoke report ({e}): {value}");
            return ExitCode::FAILURE;
        }
    };
    for fact in report.facts.iter().filter(|f| !f.ok) {
        if fact.detail.is_empty() {
            let _ = out!("FAILED {}", fact.name);
        } else {
            let _ = out!("FAILED {}: {}", fact.name, fact.detail);
        }
    }
    let ok = report.ok && report.facts.iter().all(|f| f.ok);
    if report.ok && !ok {
        let _ = out!(
            "smoke: FAILED: {} (reported ok, but a fact failed)",
            report.summary
        );
    } else {
        let _ = out!("{}", report.summary);
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
