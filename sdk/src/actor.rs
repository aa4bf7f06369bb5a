//! The [`Actor`] trait that `#[actor]` implements.

use std::cell::RefCell;

use bunraku_abi::Descriptor;

use crate::executor::Task;
use crate::glue::Incoming;
use crate::{Ctx, Error};

/// An actor type: its descriptor and its dispatch by wire name.
///
/// Implemented by [`#[actor]`](crate::actor) on the actor's impl block; the hidden methods are
/// the macro's interface to the executor and are not meant to be written by hand. The actor is
/// built with [`Default`] when its instance starts, then `on_start` runs with the configuration.
///
/// ```
/// use bunraku_sdk::prelude::*;
/// use bunraku_sdk::{Actor, abi::HandlerKind};
///
/// #[derive(Serialize, Deserialize, Message)]
/// #[message(reply = u64)]
/// struct Get;
///
/// #[derive(Serialize, Deserialize, Message)]
/// #[message(name = "counter.add")]
/// struct Add(u64);
///
/// #[derive(Default)]
/// struct Counter(u64);
///
/// #[actor]
/// impl Counter {
///     #[handler]
///     async fn get(&mut self, _ctx: &Ctx, _msg: Get) -> u64 { self.0 }
///     #[handler]
///     async fn add(&mut self, _ctx: &Ctx, msg: Add) { self.0 += msg.0 }
/// }
///
/// let d = Counter::descriptor();
/// assert_eq!(d.actor, "Counter");
/// let kinds: Vec<_> = d.messages.iter().map(|m| (m.name.as_str(), m.kind)).collect();
/// assert_eq!(kinds, [("Get", HandlerKind::Request), ("counter.add", HandlerKind::Message)]);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a bunraku actor",
    note = "put `#[actor]` on an `impl {Self}` block with its handlers"
)]
pub trait Actor: Default + 'static {
    /// The actor type's name (the Rust identifier), as reported in the descriptor.
    const NAME: &'static str;

    /// What the module exports through `bunraku_describe`: the ABI version, the actor's name, and
    /// every message type it handles with whether it is a request.
    fn descriptor() -> Descriptor;

    /// Decodes the JSON configuration and starts `on_start`, if the actor has one. An error is a
    /// configuration that does not decode.
    #[doc(hidden)]
    fn __start(
        this: &'static RefCell<Self>,
        ctx: Ctx,
        config: &[u8],
    ) -> Result<Option<Task>, Error>;

    /// Starts `on_stop`, if the actor has one.
    #[doc(hidden)]
    fn __stop(this: &'static RefCell<Self>, ctx: Ctx) -> Option<Task>;

    /// Decodes the message `incoming` by its type and runs its handler: a plain `fn` handler at
    /// once (`None`), an `async` one as a task to poll (`Some`). Errors are
    /// [`ErrorCode::UnknownType`](crate::ErrorCode::UnknownType) and
    /// [`ErrorCode::Malformed`](crate::ErrorCode::Malformed).
    #[doc(hidden)]
    fn __dispatch(
        this: &'static RefCell<Self>,
        incoming: Incoming<'_>,
    ) -> Result<Option<Task>, Error>;
}
