//! The bunraku host: loads WebAssembly actors and runs them on tokio.
//!
//! # How the pieces fit
//!
//! - [`engine`] builds the one wasmtime engine a process shares: epoch interruption, the slot
//!   [`memory`] allocator that lets 100,000 instances live in one process, and the on-disk
//!   compiled-module [`cache`].
//! - [`manifest`] reads `bunraku.toml`; [`build`] compiles guest crates to `wasm32-wasip1` when
//!   they are stale.
//! - [`Host`] deploys actors from modules and runs them. Each deployed actor is a group of
//!   instance *cells* (addresses with a bounded mailbox that survives restarts); each running
//!   instance is one wasmtime `Store` driven by one task on the host's guest lanes (threads that
//!   keep a chain of handoffs between actors on one thread, inside the context of the host's
//!   tokio runtime).
//! - The guest talks to the host only through the host functions of the ABI table
//!   (`bunraku_abi::for_each_host_fn!`), registered in one place with one capability check, and
//!   through a small synchronous WASI subset. What each actor (and each client principal, such
//!   as the CLI) may do is its [`Grants`]: nothing unless granted.
//! - [`subject`] implements NATS-style subjects for pub-sub; [`clock`] is the single source of
//!   time and randomness, so tests (and later simulation) can drive it.
//! - [`control`] serves the CLI over a Unix socket (mode 0600) on a runtime of its own.
//! - [`gateway`] is the HTTP entry point for outside clients: routes from the manifest's
//!   `[gateway]` table map requests to actors (request and reply) or subjects (publish), after
//!   authentication (API keys, JWTs), rate limits and request limits; it acts as the principal
//!   `gateway` through the same client API as the CLI, spreads requests over an actor's
//!   instances, and serves `/healthz`, `/readyz` and `/metrics`. Like the control socket it runs
//!   on an I/O runtime of the caller's, never on the guest lanes.
//! - [`store`] is the embedded SQLite store in the host's data directory: actors' persisted
//!   state, their event logs (append-only, checksummed, with snapshots) and durable
//!   [`reminders`], written by one thread that commits many actors' writes per transaction.
//!   The host functions of event-sourced actors reach it through the [`eventstore`] trait.
//!
//! # Example
//!
//! ```no_run
//! use bunraku_runtime::{Host, HostConfig, manifest::Manifest, build::BuildOptions};
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let host = Host::new(HostConfig::default())?;
//! let manifest = Manifest::load("examples/request-response".as_ref())?;
//! host.deploy_manifest(&manifest, &BuildOptions::default())?;
//! let reply = host.call_json("echo", None, serde_json::json!({"text": "hi"})).await?;
//! println!("{reply}");
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod activation;
mod actor;
pub mod build;
pub mod cache;
pub mod clock;
pub mod control;
pub mod engine;
pub mod error;
pub mod eventstore;
pub mod gateway;
mod grants;
mod host;
mod imports;
pub mod logs;
// Public for the benches, which hold the runtime's own queue against tokio's (`breakdown`).
#[doc(hidden)]
pub mod mailbox;
pub mod manifest;
pub mod memory;
pub mod metrics;
mod module;
pub mod prepared;
mod pubsub;
pub mod reminders;
mod sched;
mod spare;
pub mod store;
mod streams;
pub mod subject;
pub mod supervision;
pub mod supervisor;
pub mod trim;
mod wasi;

pub use actor::ActorPhase;
pub use error::{CallError, DeployError, LoadError, StoreError};
pub use grants::{ANY_ACTOR, Grants};
pub use host::{
    ActorStatus, ClientMessage, ClientReply, Host, HostConfig, HostError, PublishReport,
};

/// One engine shared by the unit tests of this crate.
#[cfg(test)]
pub(crate) fn test_engine() -> engine::Engine {
    static ENGINE: std::sync::OnceLock<engine::Engine> = std::sync::OnceLock::new();
    ENGINE
        .get_or_init(|| engine::Engine::new(Default::default()).unwrap())
        .clone()
}
