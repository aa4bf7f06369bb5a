//! Message types: what actors send each other, and what a request is answered with.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A type that travels between actors, under a stable wire name.
///
/// Derive it: `#[derive(Serialize, Deserialize, Message)]`. The wire name is the type's identifier
/// as written (`Greet`), or the one given with `#[message(name = "greeter.greet")]`. The name is
/// what receivers dispatch on, so it must not change when the type is renamed or moved: give an
/// explicit name to anything other crates or the CLI depend on. Two types handled by the same
/// actor cannot share a name (`#[actor]` refuses to compile).
///
/// ```
/// use bunraku_sdk::prelude::*;
///
/// #[derive(Serialize, Deserialize, Message)]
/// #[message(name = "greeter.reset")]
/// struct Reset;
///
/// assert_eq!(Reset::NAME, "greeter.reset");
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a bunraku message",
    label = "not a message type",
    note = "derive it: `#[derive(Serialize, Deserialize, Message)]`"
)]
pub trait Message: Serialize + DeserializeOwned + 'static {
    /// The stable wire name receivers dispatch on.
    const NAME: &'static str;
}

/// A message answered with a typed reply: `ctx.request(..)` returns a `Self::Reply`, and the
/// handler of `Self` must return exactly that type.
///
/// Derive it with the message: `#[message(reply = Type)]`.
///
/// ```
/// use bunraku_sdk::prelude::*;
///
/// #[derive(Serialize, Deserialize, Message)]
/// #[message(reply = u64)]
/// struct Count;
///
/// fn reply_of<R: Request>() -> &'static str {
///     std::any::type_name::<R::Reply>()
/// }
/// assert_eq!(reply_of::<Count>(), "u64");
/// ```
pub trait Request: Message {
    /// What the handler returns and the requester receives.
    type Reply: Serialize + DeserializeOwned + 'static;
}
