//! `bunraku`, the command line: scaffold, build, run and talk to WebAssembly actors.
//!
//! A thin client of `bunraku-runtime`: `new` writes a guest crate, `build` and `run` use the
//! library's builder and [`Host`](bunraku_runtime::Host), and the commands that talk to a
//! running host (`call`, `send`, `publish`, `ps`, `logs`, `stop`) speak the JSON-lines protocol
//! of [`bunraku_runtime::control`] over the host's Unix socket.
//!
//! Exit codes: 0 success, 1 failure (a typed error reply, a failed build, a failed smoke check,
//! no running host), 2 usage (bad arguments, a JSON argument that does not parse).

/// `println!` that returns the write error instead of panicking (a closed pipe, as in
/// `bunraku logs -f | head`, ends the command quietly).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

mod locate;
mod logfmt;
mod remote;
mod run;
mod scaffold;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// An error in how the command was used: exit code 2.
#[derive(Debug)]
pub(crate) struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// A usage error as an `anyhow::Error`.
pub(crate) fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Usage(message.into()))
}

const MAIN_HELP: &str = "\
Example:
  bunraku new greeter                  # scaffold an actor crate with a test and a manifest
  bunraku run greeter                  # build it, run it, print its logs
  bunraku call greeter '{\"name\":\"ann\"}' --type Greet
  bunraku ps                           # from another terminal: what runs, how it is doing
  bunraku stop                         # shut the host down

From a checkout of the bunraku repository, `cargo bunraku ARGS` runs this command.";

/// Scaffold, build, run and talk to WebAssembly actors.
#[derive(Parser)]
#[command(name = "bunraku", version, after_help = MAIN_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    New(NewArgs),
    Build(BuildArgs),
    Run(RunArgs),
    Call(CallArgs),
    Send(SendArgs),
    Publish(PublishArgs),
    Ps(PsArgs),
    Events(EventsArgs),
    State(StateArgs),
    Metrics(MetricsArgs),
    Logs(LogsArgs),
    Stop(StopArgs),
}

/// Create a new actor crate: a greeter with a test, a manifest and the toolchain file.
///
/// The crate depends on the bunraku-sdk of the checkout this binary was built from. It builds
/// and runs as it is: `cargo test` runs its test natively, `bunraku run DIR` builds it to wasm
/// and runs it.
#[derive(Args)]
#[command(after_help = "\
Example:
  bunraku new greeter
  cd greeter && cargo test
  bunraku run .
  bunraku call greeter '{\"name\":\"ann\"}' --type Greet")]
pub(crate) struct NewArgs {
    /// The crate's name, also the actor's name: lowercase letters, digits, `-` and `_`,
    /// starting with a letter.
    pub name: String,
    /// Where to create the crate (default: ./NAME).
    #[arg(long, value_name = "DIR")]
    pub path: Option<PathBuf>,
}

/// Build guest crates to wasm: those a manifest references, or one crate directory.
///
/// Builds only what is stale (cargo decides). Installs the wasm32-wasip1 target with rustup
/// when it is missing, unless --no-install is given.
#[derive(Args)]
#[command(after_help = "\
Example:
  bunraku build examples/pubsub        # every guest crate the manifest names
  bunraku build guests/echo            # one crate
  bunraku build                        # ./bunraku.toml, or the crate in .")]
pub(crate) struct BuildArgs {
    /// A manifest (bunraku.toml or its directory) or a guest crate directory.
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// Fail with the fix instead of installing a missing wasm target.
    #[arg(long)]
    pub no_install: bool,
}

/// Run a manifest's actors until Ctrl-C or `bunraku stop`, printing their logs.
///
/// Builds stale guests, starts a host, deploys every actor, and serves the control socket
/// (DATA_DIR/control.sock, mode 0600) that `call`, `ps`, `logs` and `stop` use. The log filter
/// comes from RUST_LOG, else from the manifest's `host.log`.
#[derive(Args)]
#[command(after_help = "\
Example:
  bunraku run examples/request-response
  bunraku run examples/pubsub --smoke  # run the example's self-check, exit 0 if it passed
  bunraku run examples/api-gateway --listen 127.0.0.1:9090
  cargo bunraku run examples/p2p       # from the repository, without installing")]
pub(crate) struct RunArgs {
    /// The manifest: a bunraku.toml, or the directory holding one.
    pub path: PathBuf,
    /// Run the manifest's `[smoke]` check, print its outcome, stop, and exit 0 only if it passed.
    #[arg(long)]
    pub smoke: bool,
    /// Where the host keeps its socket and module cache (default: the manifest's host.data_dir).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Fail with the fix instead of installing a missing wasm target.
    #[arg(long)]
    pub no_install: bool,
    /// Serve the manifest's `[gateway]` on ADDR instead of its `listen` (port 0 picks a free port;
    /// the address is printed, and `--smoke` uses it).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
    /// Write /tmp/perf-PID.map so that `perf record`/`perf report` name the actors' wasm
    /// functions (wasmtime's perf map profiler).
    #[arg(long)]
    pub perf_map: bool,
}

/// How to reach a running host.
#[derive(Args, Clone, Default)]
#[command(next_help_heading = "Finding the host")]
pub(crate) struct HostArgs {
    /// The host's control socket.
    ///
    /// Without --socket or --data-dir: the data_dir of ./bunraku.toml if there is one, else the
    /// host that `bunraku run` started last (its socket path is kept in $BUNRAKU_HOME/last-host,
    /// default ~/.bunraku/last-host).
    #[arg(long, value_name = "PATH", conflicts_with = "data_dir")]
    pub socket: Option<PathBuf>,
    /// The host's data directory (its socket is DIR/control.sock).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// Send a request to an actor and print its JSON reply.
#[derive(Args)]
#[command(after_help = "\
Example:
  bunraku call echo '{\"text\":\"hi\"}' --type Echo
  bunraku call client '{}' --type Smoke --timeout-ms 60000")]
pub(crate) struct CallArgs {
    /// The actor's name.
    pub actor: String,
    /// The message as JSON.
    pub json: String,
    /// The message type (needed when the actor handles more than one).
    #[arg(long = "type", short = 't', value_name = "T")]
    pub msg_type: Option<String>,
    /// How long to wait for the reply (default: the actor's request_timeout_ms).
    #[arg(long, value_name = "N")]
    pub timeout_ms: Option<u64>,
    #[command(flatten)]
    pub host: HostArgs,
}

/// Send a one-way message to an actor.
#[derive(Args)]
#[command(after_help = "\
Example:
  bunraku send peer-a '{\"n\":3}' --type Increment")]
pub(crate) struct SendArgs {
    /// The actor's name.
    pub actor: String,
    /// The message as JSON.
    pub json: String,
    /// The message type (needed when the actor handles more than one).
    #[arg(long = "type", short = 't', value_name = "T")]
    pub msg_type: Option<String>,
    #[command(flatten)]
    pub host: HostArgs,
}

/// Publish a message to a subject; every matching subscriber gets it.
#[derive(Args)]
#[command(after_help = "\
Example:
  bunraku publish news.eu '{\"publisher\":\"cli\",\"seq\":1}' --type pubsub.tick")]
pub(crate) struct PublishArgs {
    /// The subject, `.`-separated tokens such as `news.eu`.
    pub subject: String,
    /// The message as JSON.
    pub json: String,
    /// The message type.
    #[arg(long = "type", short = 't', value_name = "T")]
    pub msg_type: String,
    #[command(flatten)]
    pub host: HostArgs,
}

/// List every actor instance with its phase, mailbox, counters, status and last failure.
#[derive(Args)]
#[command(after_help = "\
Example:
  bunraku ps
  bunraku ps --json")]
pub(crate) struct PsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub host: HostArgs,
}

/// Print an event-sourced actor's events as JSON lines, oldest first.
///
/// The actor renders its own events (only its code knows their schema), upcast to its current
/// version; a virtual actor is activated to answer.
#[derive(Args)]
#[command(after_help = "\
Example:
  bunraku events account/alice
  bunraku events account/alice --from 10   # events after sequence number 10")]
pub(crate) struct EventsArgs {
    /// The actor's name (for a virtual actor, TYPE/KEY).
    pub actor: String,
    /// Print the events after this sequence number.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub from: u64,
    #[command(flatten)]
    pub host: HostArgs,
}

/// Print an event-sourced actor's state as JSON: now, or as of a sequence number.
#[derive(Args)]
#[command(after_help = "\
Example:
  bunraku state account/alice
  bunraku state account/alice --at 3       # the state after its third event")]
pub(crate) struct StateArgs {
    /// The actor's name (for a virtual actor, TYPE/KEY).
    pub actor: String,
    /// The state after the event with this sequence number (replayed from the latest snapshot
    /// before it).
    #[arg(long, value_name = "N")]
    pub at: Option<u64>,
    #[command(flatten)]
    pub host: HostArgs,
}

/// Print the running host's figures in the Prometheus text format: per actor instance, mailbox
/// depth and bound, messages handled, restarts, failures, dead letters, memory, pending
/// operations and phase.
#[derive(Args)]
#[command(after_help = "\
Example:
  bunraku metrics
  bunraku metrics | grep bunraku_actor_restarts_total")]
pub(crate) struct MetricsArgs {
    #[command(flatten)]
    pub host: HostArgs,
}

/// Print the actors' recent log lines.
#[derive(Args)]
#[command(after_help = "\
Example:
  bunraku logs
  bunraku logs -f                      # keep printing new lines until Ctrl-C")]
pub(crate) struct LogsArgs {
    /// Keep printing new lines as they come.
    #[arg(long, short = 'f')]
    pub follow: bool,
    #[command(flatten)]
    pub host: HostArgs,
}

/// Stop one actor, or without ACTOR the whole host.
#[derive(Args)]
#[command(after_help = "\
Example:
  bunraku stop echo                    # stop one actor (it runs on_stop)
  bunraku stop                         # shut the host down and wait until it is gone")]
pub(crate) struct StopArgs {
    /// The actor to stop (default: shut the host down).
    pub actor: Option<String>,
    #[command(flatten)]
    pub host: HostArgs,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::New(args) => scaffold::new(&args).map(|()| ExitCode::SUCCESS),
        Command::Build(args) => run::build(&args).await.map(|()| ExitCode::SUCCESS),
        Command::Run(args) => run::run(args).await,
        Command::Call(args) => remote::call(args).await,
        Command::Send(args) => remote::send(args).await,
        Command::Publish(args) => remote::publish(args).await,
        Command::Ps(args) => remote::ps(args).await,
        Command::Events(args) => remote::events(args).await,
        Command::State(args) => remote::state(args).await,
        Command::Metrics(args) => remote::metrics(args).await,
        Command::Logs(args) => remote::logs(args).await,
        Command::Stop(args) => remote::stop(args).await,
    };
    match outcome {
        Ok(code) => code,
        Err(e) if closed_stdout(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.is::<Usage>() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Whether the error is a write to a stdout whose reader went away.
fn closed_stdout(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_shows_an_example() {
        let mut cli = Cli::command();
        cli.build();
        for sub in cli.get_subcommands().filter(|s| s.get_name() != "help") {
            let help = sub
                .get_after_help()
                .map(|h| h.to_string())
                .unwrap_or_default();
            assert!(
                help.starts_with("Example:"),
                "`{}` has no example",
                sub.get_name()
            );
        }
    }
}
