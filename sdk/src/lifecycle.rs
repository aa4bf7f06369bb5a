//! Lifecycle: [`Ctx::spawn`] starts a new actor; [`Ctx::stop`] ends this instance;
//! [`Ctx::watch`] asks for a [`Down`] message when another actor's instance ends.

use bunraku_abi::{DOWN_MESSAGE, ErrorCode, Spawn, decode_result};
use serde::Serialize;

use crate::{Ctx, Error, Message, sys};

pub use bunraku_abi::{Down, DownReason};

impl Message for Down {
    const NAME: &'static str = DOWN_MESSAGE;
}

/// A watch made with [`Ctx::watch`]: the id its [`Down`] carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WatchId(u64);

impl WatchId {
    /// The host's id (what [`Down::watch`] holds).
    pub fn get(self) -> u64 {
        self.0
    }
}

impl Ctx {
    /// Asks the host to stop this instance: it hands out no new message, lets the handlers in
    /// flight finish, runs `on_stop`, and ends. The exit counts as *normal*: under a supervisor, a
    /// `permanent` actor is started again, while `transient` and `temporary` ones stay stopped.
    /// Without a supervisor the actor stays stopped. Messages sent to an actor that stays stopped
    /// fail with `no such actor`.
    ///
    /// ```
    /// use bunraku_sdk::prelude::*;
    ///
    /// #[derive(Serialize, Deserialize, Message)]
    /// struct Done {}
    ///
    /// #[derive(Default)]
    /// struct Job;
    ///
    /// #[actor]
    /// impl Job {
    ///     #[handler]
    ///     async fn done(&mut self, ctx: &Ctx, _msg: Done) {
    ///         if let Err(e) = ctx.stop() {
    ///             ctx.error(format_args!("could not stop: {e}"));
    ///         }
    ///     }
    /// }
    /// ```
    pub fn stop(&self) -> Result<(), Error> {
        decode_result(sys::stop())?;
        Ok(())
    }

    /// Watches `actor`: when one of its instances ends (fails, is stopped, or exits normally),
    /// this actor receives one [`Down`] message, handled like any other message, and the watch
    /// ends. An actor that does not exist gives an immediate `Down` with
    /// [`DownReason::NoSuchActor`]. Watching needs the same grant as sending to `actor`.
    ///
    /// ```
    /// use bunraku_sdk::prelude::*;
    /// use bunraku_sdk::{Down, DownReason};
    ///
    /// #[derive(Serialize, Deserialize, Message)]
    /// struct Track { actor: String }
    ///
    /// #[derive(Default)]
    /// struct Monitor { failures: u32 }
    ///
    /// #[actor]
    /// impl Monitor {
    ///     #[handler]
    ///     async fn track(&mut self, ctx: &Ctx, msg: Track) {
    ///         if let Err(e) = ctx.watch(&msg.actor) {
    ///             ctx.warn(format_args!("cannot watch {}: {e}", msg.actor));
    ///         }
    ///     }
    ///
    ///     #[handler]
    ///     async fn down(&mut self, ctx: &Ctx, msg: Down) {
    ///         if let DownReason::Failed(why) = &msg.reason {
    ///             self.failures += 1;
    ///             ctx.warn(format_args!("{} failed: {why}", msg.actor));
    ///         }
    ///     }
    /// }
    /// ```
    pub fn watch(&self, actor: &str) -> Result<WatchId, Error> {
        Ok(WatchId(decode_result(sys::watch(actor.as_bytes()))?))
    }

    /// Ends a watch; no [`Down`] follows for it.
    pub fn unwatch(&self, id: WatchId) -> Result<(), Error> {
        decode_result(sys::unwatch(id.0))?;
        Ok(())
    }

    /// Starts a new actor named `name` from `module`, a module the deployment declares for
    /// spawning (`[[spawnable]]` in `bunraku.toml`), with `config` (serialized as JSON) passed
    /// to its `on_start`. It gets the limits, restart policy and grants the declaration gives.
    /// When this actor has a supervisor, the new one is placed under it as its last child, with
    /// the restart type the declaration gives.
    /// Returns once the actor is registered: messages sent to `name` from now on reach it.
    ///
    /// Needs the `spawn` grant. Errors: [`ErrorCode::NotFound`] (no such module),
    /// [`ErrorCode::AlreadyExists`] (the name is taken), [`ErrorCode::Invalid`] (a bad name),
    /// [`ErrorCode::Denied`].
    ///
    /// ```
    /// use bunraku_sdk::prelude::*;
    ///
    /// #[derive(Serialize, Deserialize, Message)]
    /// struct Hire { name: String }
    ///
    /// #[derive(Default)]
    /// struct Boss;
    ///
    /// #[actor]
    /// impl Boss {
    ///     #[handler]
    ///     async fn hire(&mut self, ctx: &Ctx, msg: Hire) {
    ///         let config = serde_json::json!({ "greeting": "hi" });
    ///         if let Err(e) = ctx.spawn("worker", &msg.name, &config) {
    ///             ctx.warn(format_args!("could not hire {}: {e}", msg.name));
    ///         }
    ///     }
    /// }
    /// ```
    pub fn spawn(&self, module: &str, name: &str, config: &impl Serialize) -> Result<(), Error> {
        let config = serde_json::to_vec(config).map_err(|e| {
            Error::new(
                ErrorCode::Invalid,
                format!("the configuration does not serialize as JSON: {e}"),
            )
        })?;
        let req = Spawn {
            module: module.to_owned(),
            name: name.to_owned(),
            config,
        };
        decode_result(sys::spawn(&bunraku_abi::encode(&req)))?;
        Ok(())
    }
}
