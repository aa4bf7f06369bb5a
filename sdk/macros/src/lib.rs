//! Procedural macros of [`bunraku-sdk`](https://docs.rs/bunraku-sdk). Use them through the SDK
//! (`bunraku_sdk::prelude::*`), never directly: the code they emit names `::bunraku_sdk`.
//!
//! - `#[derive(Message)]` ([`message`]) gives a type its stable wire name and, with
//!   `#[message(reply = T)]`, makes it a request answered with a `T`.
//! - `#[actor]` ([`actor`]) turns an inherent `impl` block into an actor: it implements
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

/// Derives `bunraku_sdk::Message` (and `bunraku_sdk::Request` with `reply = ...`).
///
/// Keys of the optional `#[message(...)]` attribute:
/// - `name = "wire.name"`: the stable wire name (default: the type's identifier as written);
/// - `reply = Type`: the type is a request answered with a `Type`.
#[proc_macro_derive(Message, attributes(message))]
pub fn derive_message(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    message::expand(&input).unwrap_or_else(syn::Error::into_compile_error).into()
}

/// Turns an inherent `impl` block into a bunraku actor (see the SDK's crate documentation).
#[proc_macro_attribute]
pub fn actor(args: TokenStream, item: TokenStream) -> TokenStream {
    actor::expand(args.into(), item.into()).into()
}

/// Marks a handler method inside an `#[actor]` impl block. `#[actor]` consumes it; anywhere else
/// it is an error.
#[proc_macro_attribute]
pub fn handler(_args: TokenStream, item: TokenStream) -> TokenStream {
    let item = proc_macro2::TokenStream::from(item);
    let error = syn::Error::new_spanned(
        &item,
        "`#[handler]` only works on a method of an `#[actor]` impl block",
    )
    .into_compile_error();
    quote::quote!(#error #item).into()
}

/// Adds `#[link(wasm_import_module = ...)]` naming [`bunraku_abi::IMPORT_MODULE`] to the SDK's
/// `extern` block: the attribute needs a literal, and this keeps the ABI crate its only source.
#[doc(hidden)]
#[proc_macro_attribute]
pub fn __host_imports(_args: TokenStream, item: TokenStream) -> TokenStream {
    let item = proc_macro2::TokenStream::from(item);
    let module = bunraku_abi::IMPORT_MODULE;
    quote::quote!(#[link(wasm_import_module = #module)] #item).into()
}
