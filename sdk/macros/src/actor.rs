//! `#[actor]`: checks the shape of the impl block, strips `#[handler]`, and emits the
//! `bunraku_sdk::Actor` impl plus (on `wasm32`) the module's exports.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{
    Attribute, Error, FnArg, Ident, ImplItem, ImplItemFn, Item, ItemImpl, ReturnType, Signature,
    Type,
};

/// A `#[handler]` method.
struct Handler {
    method: Ident,
    receiver: Receiver,
    ctx_span: Span,
    msg_ty: Type,
    /// The declared return type, or `None` for `()`.
    ret: Option<Type>,
}

/// `on_start` or `on_stop`.
struct Hook {
    method: Ident,
    /// Where a wrong return type is reported.
    ret_span: Span,
    receiver: Receiver,
    ctx_span: Span,
    /// `on_start`'s configuration parameter type, if it takes one.
    config: Option<Type>,
}

/// How a method takes `self`, and whether it is `async`.
struct Receiver {
    mutable: bool,
    is_async: bool,
}

/// Expands `#[actor]`. Errors come back as `compile_error!` next to the (cleaned) input, so a
/// mistake does not also produce follow-up errors about the `#[handler]` attribute.
pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Vec::new();
    if !args.is_empty() {
        errors.push(Error::new_spanned(&args, "`#[actor]` takes no arguments"));
    }
    let item: Item = match syn::parse2(item.clone()) {
        Ok(item) => item,
        Err(e) => {
            let e = e.into_compile_error();
            return quote!(#e #item);
        }
    };
    let mut imp = match item {
        Item::Impl(imp) => imp,
        other => {
            let e = Error::new_spanned(
                item_head(&other),
                "`#[actor]` goes on an inherent impl block: `#[actor] impl MyActor { ... }`",
            )
            .into_compile_error();
            return quote!(#e #other);
        }
    };
    let parsed = parse_impl(&mut imp, &mut errors);
    if let Some(first) = errors.into_iter().reduce(|mut a, b| {
        a.combine(b);
        a
    }) {
        let e = first.into_compile_error();
        return quote!(#imp #e);
    }
    let Some((actor_name, handlers, on_start, on_stop)) = parsed else {
        return imp.into_token_stream();
    };
    let generated = generate(
        &imp,
        &actor_name,
        &handlers,
        on_start.as_ref(),
        on_stop.as_ref(),
    );
    quote!(#imp #generated)
}

type Parsed = (String, Vec<Handler>, Option<Hook>, Option<Hook>);

/// Validates the impl block and collects its handlers and hooks, removing `#[handler]`.
fn parse_impl(imp: &mut ItemImpl, errors: &mut Vec<Error>) -> Option<Parsed> {
    if let Some((_, path, for_token)) = &imp.trait_ {
        errors.push(Error::new_spanned(
            quote!(#path #for_token),
            "`#[actor]` goes on an inherent impl block (`impl MyActor`), not on a trait impl",
        ));
    }
    if !imp.generics.params.is_empty() || imp.generics.where_clause.is_some() {
        errors.push(Error::new_spanned(
            &imp.generics,
            "an actor cannot be generic: `#[actor]` needs one concrete type",
        ));
    }
    let actor_name = match &*imp.self_ty {
        Type::Path(p) if p.qself.is_none() => {
            p.path.segments.last().map(|s| s.ident.unraw().to_string())
        }
        _ => None,
    };
    if actor_name.is_none() {
        errors.push(Error::new_spanned(
            &imp.self_ty,
            "`#[actor]` needs a named type: `impl MyActor`",
        ));
    }

    let mut handlers = Vec::new();
    let mut on_start = None;
    let mut on_stop = None;
    for item in &mut imp.items {
        let ImplItem::Fn(f) = item else { continue };
        let marks = take_handler_attrs(&mut f.attrs);
        let name = f.sig.ident.to_string();
        if let Some(mark) = marks.first() {
            if let Some(extra) = marks.get(1) {
                errors.push(Error::new_spanned(extra, "duplicate `#[handler]`"));
            }
            if !matches!(mark.meta, syn::Meta::Path(_)) {
                errors.push(Error::new_spanned(mark, "`#[handler]` takes no arguments"));
            }
            if name == "on_start" || name == "on_stop" {
                errors.push(Error::new_spanned(
                    mark,
                    format!("`{name}` is a lifecycle hook, not a handler: remove `#[handler]`"),
                ));
                continue;
            }
            match parse_handler(f) {
                Ok(h) => handlers.push(h),
                Err(e) => errors.push(e),
            }
        } else if name == "on_start" {
            match parse_hook(f, true) {
                Ok(h) => on_start = Some(h),
                Err(e) => errors.push(e),
            }
        } else if name == "on_stop" {
            match parse_hook(f, false) {
                Ok(h) => on_stop = Some(h),
                Err(e) => errors.push(e),
            }
        }
    }
    Some((actor_name?, handlers, on_start, on_stop))
}

/// `handler` or `bunraku_sdk::handler`.
fn is_handler_attr(attr: &Attribute) -> bool {
    let path = attr.path();
    path.is_ident("handler")
        || (path.segments.len() == 2
            && path.segments[0].ident == "bunraku_sdk"
            && path.segments[1].ident == "handler")
}

fn take_handler_attrs(attrs: &mut Vec<Attribute>) -> Vec<Attribute> {
    let (marks, rest) = std::mem::take(attrs).into_iter().partition(is_handler_attr);
    *attrs = rest;
    marks
}

/// The span of a signature's parentheses, where arity mistakes are reported.
fn parens(sig: &Signature) -> Span {
    sig.paren_token.span.join()
}

/// Checks what every actor method shares: a `&self`/`&mut self` receiver, no generics, not unsafe.
fn receiver(sig: &Signature, what: &str) -> syn::Result<Receiver> {
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(Error::new_spanned(
            &sig.generics,
            format!("{what} cannot be generic"),
        ));
    }
    if let Some(unsafety) = sig.unsafety {
        return Err(Error::new_spanned(
            unsafety,
            format!("{what} cannot be `unsafe`"),
        ));
    }
    match sig.inputs.first() {
        Some(FnArg::Receiver(r)) if r.reference.is_some() && r.colon_token.is_none() => {
            Ok(Receiver {
                mutable: r.mutability.is_some(),
                is_async: sig.asyncness.is_some(),
            })
        }
        Some(FnArg::Receiver(r)) => Err(Error::new_spanned(
            r,
            format!("{what} takes `&mut self` or `&self`"),
        )),
        _ => Err(Error::new(
            parens(sig),
            format!("{what} takes `&mut self` or `&self` first"),
        )),
    }
}

/// The types of the parameters after the receiver.
fn typed_params(sig: &Signature) -> Vec<&Type> {
    sig.inputs
        .iter()
        .filter_map(|arg| match arg {
            FnArg::Typed(t) => Some(&*t.ty),
            FnArg::Receiver(_) => None,
        })
        .collect()
}

fn parse_handler(f: &ImplItemFn) -> syn::Result<Handler> {
    let sig = &f.sig;
    let receiver = receiver(sig, "a handler")?;
    let [ctx, msg] = typed_params(sig)[..] else {
        return Err(Error::new(
            parens(sig),
            "a handler takes `(&mut self, ctx: &Ctx, msg: M)`, where `M` is its message type",
        ));
    };
    let ret = match &sig.output {
        ReturnType::Default => None,
        ReturnType::Type(_, ty) => Some((**ty).clone()),
    };
    Ok(Handler {
        method: sig.ident.clone(),
        receiver,
        ctx_span: ctx.span(),
        msg_ty: msg.clone(),
        ret,
    })
}

fn parse_hook(f: &ImplItemFn, start: bool) -> syn::Result<Hook> {
    let sig = &f.sig;
    let what = if start { "`on_start`" } else { "`on_stop`" };
    let receiver = receiver(sig, what)?;
    let (ctx, config) = match typed_params(sig)[..] {
        [ctx] => (ctx, None),
        [ctx, config] if start => (ctx, Some(config.clone())),
        _ if start => {
            return Err(Error::new(
                parens(sig),
                "`on_start` takes `(&mut self, ctx: &Ctx)` or `(&mut self, ctx: &Ctx, config: C)`",
            ));
        }
        _ => {
            return Err(Error::new(
                parens(sig),
                "`on_stop` takes `(&mut self, ctx: &Ctx)`",
            ));
        }
    };
    let ret_span = match &sig.output {
        ReturnType::Default => sig.ident.span(),
        ReturnType::Type(_, ty) => ty.span(),
    };
    Ok(Hook {
        method: sig.ident.clone(),
        ret_span,
        receiver,
        ctx_span: ctx.span(),
        config,
    })
}

/// The head of a non-impl item (`struct Foo`, `fn foo(..)`), where the "not an impl" error goes.
fn item_head(item: &Item) -> TokenStream {
    match item {
        Item::Struct(s) => {
            let (t, i) = (&s.struct_token, &s.ident);
            quote!(#t #i)
        }
        Item::Enum(e) => {
            let (t, i) = (&e.enum_token, &e.ident);
            quote!(#t #i)
        }
        Item::Fn(f) => f.sig.to_token_stream(),
        Item::Trait(t) => {
            let (k, i) = (&t.trait_token, &t.ident);
            quote!(#k #i)
        }
        Item::Mod(m) => {
            let (k, i) = (&m.mod_token, &m.ident);
            quote!(#k #i)
        }
        other => other.to_token_stream(),
    }
}

/// A type as written, for messages (token streams print with spaces around `::` and `<`).
fn type_text(ty: &Type) -> String {
    let text = ty.to_token_stream().to_string();
    [
        (" :: ", "::"),
        (":: ", "::"),
        (" < ", "<"),
        ("< ", "<"),
        (" >", ">"),
        (" ,", ","),
        ("& ", "&"),
    ]
    .iter()
    .fold(text, |t, (from, to)| t.replace(from, to))
}

/// Binds the actor state in a generated task and returns the receiver argument for the call.
fn bind_state(receiver: &Receiver) -> (TokenStream, TokenStream) {
    if receiver.mutable {
        (
            quote!(let mut state = ::bunraku_sdk::__private::borrow_mut(this).await;),
            quote!(&mut *state),
        )
    } else {
        (
            quote!(let state = ::bunraku_sdk::__private::borrow(this).await;),
            quote!(&*state),
        )
    }
}

fn generate(
    imp: &ItemImpl,
    actor_name: &str,
    handlers: &[Handler],
    on_start: Option<&Hook>,
    on_stop: Option<&Hook>,
) -> TokenStream {
    let p = quote!(::bunraku_sdk::__private);
    let self_ty = &imp.self_ty;
    let msg_tys: Vec<&Type> = handlers.iter().map(|h| &h.msg_ty).collect();

    let arms = handlers.iter().map(|h| {
        let Handler { method, msg_ty, .. } = h;
        let ctx = quote_spanned!(h.ctx_span=> ctx);
        if !h.receiver.is_async {
            // A plain `fn` runs at once, without a task.
            let (borrow, state) = if h.receiver.mutable {
                (quote!(#p::Exclusive), quote!(&mut **state))
            } else {
                (quote!(#p::Shared), quote!(&**state))
            };
            return quote! {
                if msg_type == <#msg_ty as ::bunraku_sdk::Message>::NAME {
                    return #p::handle_now::<#borrow, Self, #msg_ty, _, _>(
                        this,
                        incoming,
                        |state, ctx, msg| Self::#method(#state, #ctx, msg),
                    );
                }
            };
        }
        let (bind, state) = bind_state(&h.receiver);
        let ctx = quote_spanned!(h.ctx_span=> &ctx);
        quote! {
            if msg_type == <#msg_ty as ::bunraku_sdk::Message>::NAME {
                return #p::handle::<#msg_ty, _, _, _>(incoming, move |ctx, msg| async move {
                    #bind
                    Self::#method(#state, #ctx, msg).await
                });
            }
        }
    });
    // The return type is the request's reply type, or `()` for a one-way message; reported at
    // the user's return type. (A message type that is not a `Message` is reported at the type by
    // the `<M as Message>::NAME` of its dispatch arm.)
    let checks = handlers.iter().map(|h| {
        let msg_ty = &h.msg_ty;
        let (ret, span) = match &h.ret {
            Some(ty) => (ty.to_token_stream(), ty.span()),
            None => (quote!(()), h.method.span()),
        };
        quote_spanned! {span=>
            (&::bunraku_sdk::__private::Probe::<#msg_ty>::new()).check_return::<#ret>();
        }
    });
    // Two handled types with one wire name: reported at the later handler's message type.
    let duplicates = handlers.iter().enumerate().flat_map(|(j, later)| {
        handlers[..j].iter().map(move |earlier| {
            let (a, b) = (&earlier.msg_ty, &later.msg_ty);
            let message = format!(
                "`{}` and `{}` have the same wire name; give one of them \
                 `#[message(name = \"...\")]`",
                type_text(a),
                type_text(b),
            );
            quote_spanned! {b.span()=>
                const _: () = ::core::assert!(
                    !::bunraku_sdk::__private::same_name(
                        <#a as ::bunraku_sdk::Message>::NAME,
                        <#b as ::bunraku_sdk::Message>::NAME,
                    ),
                    #message
                );
            }
        })
    });

    let start = match on_start {
        Some(hook) => {
            let (bind, state) = bind_state(&hook.receiver);
            let method = &hook.method;
            let ctx = quote_spanned!(hook.ctx_span=> &ctx);
            let wait = hook.receiver.is_async.then(|| quote!(.await));
            let (config_ty, call) = match &hook.config {
                Some(ty) => (
                    ty.to_token_stream(),
                    quote!(Self::#method(#state, #ctx, config)),
                ),
                None => (quote!(#p::IgnoredAny), quote!(Self::#method(#state, #ctx))),
            };
            let call = quote!(#call #wait);
            let outcome = quote_spanned! {hook.ret_span=>
                { let outcome = #call; ::bunraku_sdk::__private::outcome(outcome) }
            };
            quote! {
                #p::start::<#config_ty, _, _>(config, ctx, move |ctx, config| async move {
                    let _ = &config;
                    #bind
                    #outcome
                })
            }
        }
        None => quote! {
            let _ = (this, ctx, config);
            ::core::result::Result::Ok(::core::option::Option::None)
        },
    };
    let stop = match on_stop {
        Some(hook) => {
            let (bind, state) = bind_state(&hook.receiver);
            let method = &hook.method;
            let ctx = quote_spanned!(hook.ctx_span=> &ctx);
            let wait = hook.receiver.is_async.then(|| quote!(.await));
            let call = quote!(Self::#method(#state, #ctx) #wait);
            let outcome = quote_spanned! {hook.ret_span=>
                { let outcome = #call; ::bunraku_sdk::__private::outcome(outcome) }
            };
            quote! {
                #p::stop(ctx, move |ctx| async move {
                    #bind
                    #outcome
                })
            }
        }
        None => quote! {
            let _ = (this, ctx);
            ::core::option::Option::None
        },
    };

    let export_version = bunraku_abi::exports::ABI_VERSION;
    let export_describe = bunraku_abi::exports::DESCRIBE;
    let export_run = bunraku_abi::exports::RUN;
    let export_stack = bunraku_abi::exports::STACK;
    let export_initialize = bunraku_abi::exports::INITIALIZE;

    quote! {
        // Handlers hold the state's `RefMut` across their awaits by design: the executor makes a
        // second handler wait for it instead of failing to borrow.
        #[automatically_derived]
        #[allow(clippy::await_holding_refcell_ref)]
        impl ::bunraku_sdk::Actor for #self_ty {
            const NAME: &'static str = #actor_name;

            fn descriptor() -> ::bunraku_sdk::abi::Descriptor {
                #[allow(unused_imports)]
                use #p::{ProbeMessage as _, ProbeRequest as _};
                #p::descriptor(
                    <Self as ::bunraku_sdk::Actor>::NAME,
                    &[#((
                        <#msg_tys as ::bunraku_sdk::Message>::NAME,
                        (&#p::Probe::<#msg_tys>::new()).kind(),
                    )),*],
                )
            }

            fn __start(
                this: &'static ::core::cell::RefCell<Self>,
                ctx: ::bunraku_sdk::Ctx,
                config: &[u8],
            ) -> ::core::result::Result<::core::option::Option<#p::Task>, ::bunraku_sdk::Error> {
                #start
            }

            fn __stop(
                this: &'static ::core::cell::RefCell<Self>,
                ctx: ::bunraku_sdk::Ctx,
            ) -> ::core::option::Option<#p::Task> {
                #stop
            }

            // Inlined into the executor's loop, with the glue it calls: the envelope's fields then
            // stay in locals on their way to the handler's `Ctx`. Without this and the executor's
            // `inline(always)` on `message`, a `bench-pingpong` message took 11-20% longer
            // (`BENCHMARKS.md`, ping-pong, eleventh stop).
            #[inline(always)]
            fn __dispatch(
                this: &'static ::core::cell::RefCell<Self>,
                incoming: #p::Incoming<'_>,
            ) -> ::core::result::Result<::core::option::Option<#p::Task>, ::bunraku_sdk::Error> {
                #[allow(unused_imports)]
                use #p::{ProbeMessage as _, ProbeRequest as _};
                let _checks = || { #(#checks)* };
                let msg_type = incoming.msg_type();
                #(#arms)*
                let _ = (this, incoming);
                ::core::result::Result::Err(#p::unknown_type(msg_type))
            }
        }

        #(#duplicates)*

        #[cfg(target_arch = "wasm32")]
        const _: () = {
            #[unsafe(export_name = #export_version)]
            extern "C" fn __bunraku_abi_version() -> i32 {
                #p::abi_version()
            }
            #[unsafe(export_name = #export_describe)]
            extern "C" fn __bunraku_describe() -> i64 {
                #p::describe::<#self_ty>()
            }
            #[unsafe(export_name = #export_run)]
            extern "C" fn __bunraku_run() -> i32 {
                #p::run::<#self_ty>()
            }
            #[unsafe(export_name = #export_stack)]
            extern "C" fn __bunraku_stack() -> i64 {
                #p::stack()
            }
            #[unsafe(export_name = #export_initialize)]
            extern "C" fn __bunraku_initialize() {
                #p::initialize()
            }
        };
    }
}
