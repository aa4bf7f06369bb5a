//! `#[derive(Message)]`.

use proc_macro2::TokenStream;
use quote::quote;
use syn::ext::IdentExt;
use syn::{Data, DeriveInput, Error, LitStr, Type};

/// Expands the derive: `impl Message` with the wire name, plus `impl Request` with `reply = ...`.
pub(crate) fn expand(input: &DeriveInput) -> syn::Result<TokenStream> {
    if let Data::Union(u) = &input.data {
        return Err(Error::new_spanned(
            u.union_token,
            "a message cannot be a union",
        ));
    }
    if !input.generics.params.is_empty() || input.generics.where_clause.is_some() {
        return Err(Error::new_spanned(
            &input.generics,
            "a message type cannot be generic: it needs exactly one stable wire name",
        ));
    }

    let mut name: Option<LitStr> = None;
    let mut reply: Option<Type> = None;
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("message")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("name") {
                if name.is_some() {
                    return Err(meta.error("duplicate `name` key"));
                }
                let lit: LitStr = meta.value()?.parse()?;
                if lit.value().trim().is_empty() || lit.value() != lit.value().trim() {
                    return Err(Error::new_spanned(
                        &lit,
                        "a wire name must be non-empty without leading or trailing whitespace",
                    ));
                }
                name = Some(lit);
                Ok(())
            } else if meta.path.is_ident("reply") {
                if reply.is_some() {
                    return Err(meta.error("duplicate `reply` key"));
                }
                reply = Some(meta.value()?.parse()?);
                Ok(())
            } else {
                Err(meta.error(
                    "unknown `message` key: expected `name = \"wire.name\"` or `reply = Type`",
                ))
            }
        })?;
    }

    let ident = &input.ident;
    let wire = name.map_or_else(|| ident.unraw().to_string(), |lit| lit.value());
    let request = reply.map(|reply| {
        quote! {
            impl ::bunraku_sdk::Request for #ident {
                type Reply = #reply;
            }
        }
    });
    Ok(quote! {
        impl ::bunraku_sdk::Message for #ident {
            const NAME: &'static str = #wire;
        }
        #request
    })
}
