//! Procedural macros of [`bunraku-sdk`](https://docs.rs/bunraku-sdk). Use them through the SDK
//! (`bunraku_sdk::prelude::*`), never directly: the code they emit names `::bunraku_sdk`.
//!
//! - [`#[derive(Message)]`](derive@Message) gives a type its stable wire name and, with
//!   `#[message(reply = T)]`, makes it a request answered with a `T`.
//! - [`#[actor]`](macro@actor) turns an inherent `impl` block into an actor: it implements
//!   `bunraku_sdk::Actor` (descriptor and dispatch by wire name) and, on `wasm32`, emits the
//!   module's exports.
//! - `#[handler]` marks the handler methods inside an `#[actor]` impl; on its own it is an error.
//!
//! Every mistake is reported with `syn::Error` at the offending tokens; the macros never panic.
//! Type-level rules (a handler's message type implements `Message`, a request handler returns the
//! request's reply type) are left to the compiler through generated trait bounds, so they hold for
//! any spelling of a type.
#![deny(missing_docs)]

use proc_macro::TokenStream;

mod actor;
mod message;

/// Derives `bunraku_sdk::Message`, and `bunraku_sdk::Request` with `reply = ...`.
///
/// The type also needs `Serialize` and `Deserialize`. Keys of the optional
/// `#[message(...)]` attribute:
///
/// - `name = "wire.name"`: the stable wire name receivers dispatch on. The default is the
///   type's identifier as written (`Greet`); set a name for anything other crates or the CLI
///   depend on, so renaming or moving the type does not change the wire.
/// - `reply = Type`: the type is a request, answered with a `Type`
///   (`ctx.request(..)` returns it, and the handler must return it).
///
/// Generic types and unions are refused: a message has exactly one wire name.
#[proc_macro_derive(Message, attributes(message))]
pub fn derive_message(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    message::expand(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Turns an inherent `impl` block into a bunraku actor.
///
/// The type must implement `Default` (the instance is built with it). Inside the block:
///
/// - `#[handler]` methods, one per message type:
///   `async fn name(&mut self, ctx: &Ctx, msg: M) -> R`. `R` is `M`'s reply type when `M` is a
///   request and `()` otherwise (the compiler checks both). `&self` instead of `&mut self`, and
///   plain `fn` instead of `async fn`, work too. A plain `fn` runs at once, with no task and no
///   future: the cheaper choice for a handler that awaits nothing (it sends with
///   `ctx.try_send`). Two handled types cannot share a wire name.
/// - optional `on_start(&mut self, ctx: &Ctx)` or `on_start(&mut self, ctx: &Ctx, config: C)`,
///   run first with `C` (any `Deserialize + Default` type) decoded from the actor's JSON
///   configuration (`null` gives `C::default()`);
/// - optional `on_stop(&mut self, ctx: &Ctx)`, run when the instance stops.
///
/// The hooks may be `async` and may return `Result<(), E>` with `E: Display`: an error from
/// `on_start` traps the instance (the host restarts it), one from `on_stop` is logged. Other
/// methods are left alone.
///
/// The macro implements `bunraku_sdk::Actor` (descriptor and dispatch by wire name). On `wasm32`
/// it also emits the module's exports `bunraku_abi_version() -> i32`, `bunraku_describe() -> i64`
/// and `bunraku_run() -> i32`, so a crate built for wasm has exactly one `#[actor]`. It takes no
/// arguments, and does not accept generic or trait impls.
#[proc_macro_attribute]
pub fn actor(args: TokenStream, item: TokenStream) -> TokenStream {
    actor::expand(args.into(), item.into()).into()
}

/// Marks a handler method inside an `#[actor]` impl block (see [`macro@actor`]). `#[actor]`
/// consumes it; anywhere else it is an error.
#[proc_macro_attribute]
pub fn handler(_args: TokenStream, item: TokenStream) -> TokenStream {
    let item = proc_macro2::TokenStream::from(item);
    let message = "`#[handler]` only works on a method of an `#[actor]` impl block";
    let error = match syn::parse2::<syn::ItemFn>(item.clone()) {
        Ok(f) => syn::Error::new_spanned(&f.sig, message),
        Err(_) => syn::Error::new_spanned(&item, message),
    };
    let error = error.into_compile_error();
    quote::quote!(#error #item).into()
}
