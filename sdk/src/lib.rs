//! Write [bunraku](https://example.invalid/bunraku) actors in plain Rust: typed messages in,
//! typed replies out, no pointers in user code.
//!
//! An actor is a `Default` struct plus an `#[actor]` impl block whose `#[handler]` methods each
//! take one message type. The crate builds to a core wasm module (`wasm32-wasip1`, crate type
//! `cdylib`) that the bunraku host loads, and it also runs natively under
//! [`testing::TestActor`], which is how the example below runs as a doc test.
//!
//! ```
//! use bunraku_sdk::prelude::*;
//!
//! #[derive(Serialize, Deserialize, Message)]
//! #[message(reply = String)] // a request: answered with a `String`
//! pub struct Greet {
//!     pub name: String,
//! }
//!
//! #[derive(Serialize, Deserialize, Message)]
//! #[message(name = "greeter.reset")] // a one-way message with an explicit wire name
//! pub struct Reset;
//!
//! #[derive(Serialize, Deserialize, Default)]
//! #[serde(default)]
//! pub struct GreeterConfig {
//!     greeting: Option<String>,
//! }
//!
//! #[derive(Default)]
//! pub struct Greeter {
//!     greeting: String,
//!     greeted: u64,
//! }
//!
//! #[actor]
//! impl Greeter {
//!     async fn on_start(&mut self, ctx: &Ctx, config: GreeterConfig) {
//!         self.greeting = config.greeting.unwrap_or_else(|| "hello".into());
//!         ctx.info(format_args!("{} #{} ready", ctx.name(), ctx.instance()));
//!     }
//!
//!     #[handler]
//!     async fn greet(&mut self, _ctx: &Ctx, msg: Greet) -> String {
//!         self.greeted += 1;
//!         format!("{}, {} (#{})", self.greeting, msg.name, self.greeted)
//!     }
//!
//!     #[handler]
//!     async fn reset(&mut self, _ctx: &Ctx, _msg: Reset) {
//!         self.greeted = 0;
//!     }
//! }
//!
//! // Natively, a test plays the host:
//! use bunraku_sdk::testing::TestActor;
//!
//! let mut t = TestActor::<Greeter>::start(serde_json::json!({ "greeting": "hi" }));
//! assert_eq!(t.call(&Greet { name: "ann".into() }).unwrap(), "hi, ann (#1)");
//! t.send(&Reset).unwrap();
//! // The JSON codec (what the CLI sends) reaches the same handler.
//! let reply = t.call_json("Greet", r#"{"name":"bo"}"#).unwrap();
//! assert_eq!(reply, serde_json::json!("hi, bo (#1)"));
//! assert_eq!(t.call_json("Nope", "{}").unwrap_err().code(), ErrorCode::UnknownType);
//! ```
//!
//! # The pieces
//!
//! - **Messages** ([`Message`], [`Request`]): `#[derive(Message)]` gives a type its stable wire
//!   name (the identifier as written, or `#[message(name = "...")]`); `#[message(reply = T)]`
//!   makes it a request answered with a `T`. Payloads are postcard between actors and JSON from
//!   the CLI; handlers see the same typed value either way.
//! - **Actors** ([`actor`], [`handler`], [`Actor`]): `#[actor]` on an inherent impl block
//!   implements [`Actor`], which describes the actor to the host (its message types, and which
//!   are requests) and dispatches each incoming message by wire name to its handler. Handlers are
//!   `async fn name(&mut self, ctx: &Ctx, msg: M) -> R` (or `&self`, or not `async`), where `R` is
//!   `M`'s reply type for a request and `()` otherwise; the compiler enforces both. Optional
//!   hooks: `on_start(&mut self, ctx: &Ctx[, config: C])`, with `C` any `Deserialize + Default`
//!   type decoded from the manifest's JSON `config` (`null` gives `C::default()`), and
//!   `on_stop(&mut self, ctx: &Ctx)`. Both may return `Result<(), E>`; an `on_start` error (or a
//!   configuration that does not decode) traps, so the host restarts the instance.
//! - **Context** ([`Ctx`]): who sent the message and how, plus `send`, `request`, `publish`,
//!   `subscribe` and logging. Everything that waits is `async` and fails with an [`Error`]
//!   carrying an [`ErrorCode`].
//! - **State** ([`Ctx::save`], [`Ctx::load`]): one postcard value per actor instance, kept in
//!   the host's embedded store, so a restarted instance (or host) picks up where it left off.
//! - **Executor** (internal): the host calls the module's `bunraku_run` export when the actor
//!   has work; the executor pulls events (start, message, completion, stop) with the `next` host
//!   function, runs each `async` handler as a task, and parks a task whose `.await` waits on a
//!   host operation until that operation's completion event arrives. A handler that is a plain
//!   `fn` runs at once, without a task: the cheaper choice for one that awaits nothing (it sends
//!   with [`Ctx::try_send`]). One handler runs at a time unless
//!   the actor's concurrency is raised; handlers then interleave at their `.await`s, and one that
//!   needs the state while another holds it waits for it. Tasks are woken with standard
//!   [`Waker`](std::task::Waker)s, so one handler can wait for another on any waker-based
//!   primitive (a `futures::channel::oneshot`, an async channel): the woken task runs in the
//!   same turn, before the executor asks the host for more. [`yield_now`] lets a long task give
//!   way: to the actor's other tasks and events, and, when it keeps yielding, to the other
//!   actors (the host enters the actor again after them, with a fresh time budget).
//! - **Backends** (internal `sys` module): on `wasm32` the host functions are imports of the
//!   `bunraku` module, declared from the ABI's table ([`bunraku_abi::declare_host_imports!`]); on
//!   other targets they go to a native stand-in host, driven by [`testing`].
//!
//! A message that does not decode, or has no handler, is refused with an error reply
//! ([`ErrorCode::Malformed`], [`ErrorCode::UnknownType`]) and a warning in the log; the actor
//! keeps running. A panic in a handler traps the instance, and the host discards it.
//!
//! # Building for wasm
//!
//! The actor's crate depends on `bunraku-sdk` and on `serde` (the derives expand to code that
//! names `serde`), and is built as a `cdylib` for `wasm32-wasip1`. On `wasm32`, `#[actor]` also
//! emits the module's exports (`bunraku_abi_version`, `bunraku_describe`, `bunraku_run`), so a
//! crate has **exactly one** `#[actor]` when built for wasm. The generated code names the SDK as
//! `::bunraku_sdk`: do not rename the dependency.
#![deny(missing_docs)]

// The macros name `::bunraku_sdk`; this makes that path work inside the crate too.
extern crate self as bunraku_sdk;

mod actor;
pub mod batch;
mod codec;
mod ctx;
pub mod dedup;
mod error;
mod executor;
mod glue;
pub mod http;
pub mod journal;
mod lifecycle;
mod message;
pub mod refs;
mod reminders;
pub mod saga;
mod state;
pub mod streams;
mod sys;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
mod timers;
pub mod window;

pub use actor::Actor;
pub use bunraku_abi as abi;
pub use bunraku_abi::{ErrorCode, Policy};
pub use bunraku_sdk_macros::{Message, actor, handler};
pub use ctx::{
    Ctx, HTTP_HEADER_PREFIX, Level, PRINCIPAL_KEY_ID, PRINCIPAL_SUBJECT, Principal, SubscriptionId,
};
pub use error::Error;
pub use executor::yield_now;
pub use lifecycle::{Down, DownReason, WatchId};
pub use message::{Message, Request};
pub use refs::{ActorRef, Address};
pub use reminders::REMINDER_SENDER;
pub use timers::TimerId;

/// Everything an actor crate usually needs: `use bunraku_sdk::prelude::*;`.
pub mod prelude {
    pub use crate::{
        Actor, ActorRef, Ctx, Error, ErrorCode, Level, Message, Policy, Request, SubscriptionId,
        TimerId, actor, handler, yield_now,
    };
    pub use serde::{Deserialize, Serialize};
    pub use std::time::Duration;
}

#[doc(hidden)]
pub mod __private {
    pub use crate::glue::*;
}
