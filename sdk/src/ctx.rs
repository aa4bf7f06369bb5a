//! [`Ctx`]: what a handler knows about the message it handles, and how it talks to the world.

use std::cell::Cell;
use std::fmt;
use std::rc::Rc;
use std::time::Duration;

use bunraku_abi::view::{EnvelopeView, ExtsView, OutboundHead, VarintSeq};
use bunraku_abi::{
    Codec, Completion, ErrorCode, Policy, ReplyBody, Subscribe, decode_result, level, mode,
};

use crate::executor::{Identity, Op, intern, log_line};
use crate::refs::{ActorRef, Address};
use crate::{Error, Message, Request, codec, sys};

/// The context of one handler call (or of `on_start`/`on_stop`): who this actor is, the metadata
/// of the message being handled, and every way to reach other actors.
///
/// Sending, requesting and publishing are `async`: the handler suspends until the host has an
/// outcome, and other events (replies to other handlers, for example) are processed meanwhile.
/// Nothing blocks a host thread. The `try_` variants never wait: a full mailbox is an
/// [`ErrorCode::MailboxFull`] error.
///
/// ```
/// use bunraku_sdk::prelude::*;
/// use bunraku_sdk::testing::TestActor;
///
/// #[derive(Serialize, Deserialize, Message)]
/// #[message(reply = u64)]
/// struct Price { item: String }
///
/// #[derive(Serialize, Deserialize, Message)]
/// #[message(reply = u64)]
/// struct Quote { items: Vec<String> }
///
/// #[derive(Serialize, Deserialize, Message)]
/// #[message(name = "shop.quoted")]
/// struct Quoted { total: u64 }
///
/// #[derive(Default)]
/// struct Shop;
///
/// #[actor]
/// impl Shop {
///     #[handler]
///     async fn quote(&mut self, ctx: &Ctx, msg: Quote) -> u64 {
///         let mut total = 0;
///         for item in msg.items {
///             match ctx.request("prices", &Price { item: item.clone() }).await {
///                 Ok(price) => total += price,
///                 Err(e) => ctx.warn(format_args!("no price for {item}: {e}")),
///             }
///         }
///         if let Err(e) = ctx.publish("shop.quoted", &Quoted { total }).await {
///             ctx.error(e);
///         }
///         total
///     }
/// }
///
/// let mut shop = TestActor::<Shop>::start_default();
/// shop.respond::<Price>("prices", |p| if p.item == "tea" { 3 } else { 5 });
/// let total = shop.call(&Quote { items: vec!["tea".into(), "cake".into()] }).unwrap();
/// assert_eq!(total, 8);
/// assert_eq!(shop.published::<Quoted>("shop.quoted")[0].total, 8);
/// ```
#[derive(Debug)]
pub struct Ctx {
    identity: &'static Identity,
    message: Option<MessageMeta>,
}

/// The envelope fields a handler can see.
///
/// The names borrow, with their lifetimes erased, either the event buffer or copies this struct
/// owns:
/// - A plain `fn` handler runs and returns while its event is in the buffer ([`Ctx::lent`]):
///   nothing is copied or interned for it.
/// - The context of an `async` handler outlives the event ([`Ctx::message`],
///   [`Ctx::into_owned`]): [`MessageMeta::keep`] copies the names (senders and subjects shared
///   through the executor's interner, so a message from a known sender allocates nothing) and
///   the extensions; the copies are dropped with the struct. The extensions say which kind it
///   is: [`Ext::Kept`] once the names are copies too.
///
/// [`Ctx`] lends the fields for no longer than itself. Both kinds have one layout, so that the
/// accessors do not branch on the kind.
#[derive(Debug)]
pub(crate) struct MessageMeta {
    id: u64,
    codec: Codec,
    reply: Option<u32>,
    sender: Option<&'static str>,
    subject: Option<&'static str>,
    idempotency_key: Option<&'static str>,
    deadline_ms: Option<u64>,
    /// Actor references that came with the message (empty: no allocation).
    attachments: Box<[ActorRef]>,
    /// The reader handle of the stream the message opens, until taken.
    stream: Cell<Option<u32>>,
    /// The extension entries, and with them which kind the names are.
    ext: Ext,
}

/// A message's extension entries: where they lie in the event buffer, or copied.
#[derive(Debug)]
enum Ext {
    /// In the event buffer, and so are the names.
    Lent(ExtsView<'static>),
    /// Copied (empty: no allocation), and the names are the struct's own copies too: an
    /// `Rc<str>` from the interner for the sender and the subject, a `Box<str>` for the
    /// idempotency key.
    Kept(Box<[ExtEntry]>),
}

/// Erases the lifetime of a name that [`MessageMeta`] borrows.
///
/// # Safety
///
/// The result must not be used after what `s` borrows is dropped or overwritten.
#[inline(always)]
unsafe fn erase(s: &str) -> &'static str {
    // SAFETY: the caller's.
    unsafe { &*std::ptr::from_ref(s) }
}

impl MessageMeta {
    /// The fields of `env`, borrowing the event buffer.
    ///
    /// Inlined where the event is decoded: nothing that is not inlined may take a reference to
    /// the decoded event itself, or the compiler writes all of it to the guest's stack (in linear
    /// memory) for every message, which costs a plain `fn` handler more than this copy of its
    /// fields does.
    ///
    /// # Safety
    ///
    /// The result must be dropped, or [`MessageMeta::keep`] called on it, before `env` and the
    /// bytes it borrows are.
    #[inline(always)]
    pub(crate) unsafe fn lent(env: &EnvelopeView<'_>) -> Self {
        // SAFETY: the caller drops the result, or copies what it borrows, before the event
        // buffer goes.
        let lend = |s| unsafe { erase(s) };
        Self {
            id: env.id,
            codec: env.codec,
            reply: env.reply,
            sender: env.sender.map(lend),
            subject: env.subject.map(lend),
            idempotency_key: env.idempotency_key.map(lend),
            deadline_ms: env.deadline_ms,
            // Most messages have none: no iterator to run then.
            attachments: if env.attachments.is_empty() {
                Box::default()
            } else {
                attachments(env.attachments)
            },
            stream: Cell::new(env.stream),
            // SAFETY: as for the names.
            ext: Ext::Lent(unsafe {
                std::mem::transmute::<ExtsView<'_>, ExtsView<'static>>(env.ext)
            }),
        }
    }

    /// Copies what the fields borrow of the event buffer, and has them borrow the copies.
    #[inline(always)]
    fn keep(&mut self) {
        let Ext::Lent(ext) = self.ext else {
            return;
        };
        /// A shared copy of `name`, leaked until [`MessageMeta`]'s drop takes it back.
        fn shared(name: &str) -> &'static str {
            // SAFETY: the `Rc`'s contents stay where they are until its drop.
            unsafe { &*Rc::into_raw(intern(name)) }
        }
        self.sender = self.sender.map(shared);
        self.subject = self.subject.map(shared);
        self.idempotency_key = self
            .idempotency_key
            .map(|k| &*Box::leak(Box::<str>::from(k)));
        // Last: from here on the names are the struct's to drop.
        self.ext = Ext::Kept(if ext.is_empty() {
            Box::default()
        } else {
            ext.iter()
                .map(|e| (Box::from(e.key), Box::from(e.value)))
                .collect()
        });
    }
}

impl Drop for MessageMeta {
    #[inline(always)]
    fn drop(&mut self) {
        if let Ext::Lent(_) = self.ext {
            return;
        }
        // SAFETY: `keep` made the names with `Rc::into_raw` and `Box::leak`, and lent them only
        // for as long as `self`, which is going.
        unsafe {
            if let Some(name) = self.sender {
                drop(Rc::from_raw(std::ptr::from_ref(name)));
            }
            if let Some(name) = self.subject {
                drop(Rc::from_raw(std::ptr::from_ref(name)));
            }
            if let Some(key) = self.idempotency_key {
                drop(Box::from_raw(std::ptr::from_ref(key).cast_mut()));
            }
        }
    }
}

/// The actor references a message came with.
#[cold]
#[inline(never)]
fn attachments(handles: VarintSeq<'_, u32>) -> Box<[ActorRef]> {
    handles.iter().map(ActorRef).collect()
}

/// One extension entry of a message: its key and value.
type ExtEntry = (Box<str>, Box<[u8]>);

/// The extension key of the authenticated subject the gateway adds to a message.
pub const PRINCIPAL_SUBJECT: &str = "bunraku.principal.subject";
/// The extension key of the key id (API key id or JWT `kid`) the gateway adds to a message.
pub const PRINCIPAL_KEY_ID: &str = "bunraku.principal.key_id";
/// The prefix of the extension keys of HTTP headers the gateway passes along.
pub const HTTP_HEADER_PREFIX: &str = "http.header.";

/// Who sent a message through the HTTP gateway, as the gateway authenticated it
/// ([`Ctx::principal`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal<'a> {
    /// The API key's subject, or the JWT's `sub` claim.
    pub subject: &'a str,
    /// The API key's id, or the `kid` of the JWT's key.
    pub key_id: Option<&'a str>,
}

impl Ctx {
    /// The context of `on_start` and `on_stop`: no message.
    pub(crate) fn lifecycle(identity: &'static Identity) -> Self {
        Self {
            identity,
            message: None,
        }
    }

    /// The context of an `async` handler for the message `meta` describes: copies what it
    /// borrows of the event buffer, which the next event overwrites.
    #[inline(always)]
    pub(crate) fn message(identity: &'static Identity, mut meta: MessageMeta) -> Self {
        meta.keep();
        Self {
            identity,
            message: Some(meta),
        }
    }

    /// The context of a plain `fn` handler for the message `meta` describes, reading what it
    /// borrows where it is.
    ///
    /// # Safety
    ///
    /// The context must be dropped, or turned into a copy with [`Ctx::into_owned`], before the
    /// event buffer `meta` borrows is overwritten.
    #[inline(always)]
    pub(crate) unsafe fn lent(identity: &'static Identity, meta: MessageMeta) -> Self {
        Self {
            identity,
            message: Some(meta),
        }
    }

    /// This context with copies of what it borrows of the event buffer, to outlive the event.
    #[cold]
    #[inline(never)]
    pub(crate) fn into_owned(mut self) -> Self {
        if let Some(meta) = &mut self.message {
            meta.keep();
        }
        self
    }

    /// The codec of the message being handled (postcard outside handlers).
    pub(crate) fn codec(&self) -> Codec {
        self.message.as_ref().map_or(Codec::Postcard, |m| m.codec)
    }

    /// The reader handle of the stream the message being handled opens, once.
    pub(crate) fn take_stream_handle(&self) -> Option<u32> {
        self.message.as_ref()?.stream.take()
    }

    /// The reply handle of the message being handled, when its sender waits for a reply.
    pub(crate) fn reply_handle(&self) -> Option<u32> {
        self.message.as_ref().and_then(|m| m.reply)
    }

    /// This actor's address: its name in the manifest, or the name it was spawned under.
    pub fn name(&self) -> &str {
        &self.identity.name
    }

    /// Which instance of the actor this is (`0..instances`).
    pub fn instance(&self) -> u32 {
        self.identity.instance
    }

    /// Who sent the message: an actor name or a principal such as `cli`.
    pub fn sender(&self) -> Option<&str> {
        self.message.as_ref()?.sender
    }

    /// The subject, when the message was delivered through a subscription.
    pub fn subject(&self) -> Option<&str> {
        self.message.as_ref()?.subject
    }

    /// The host-issued id of the message (`None` in `on_start` and `on_stop`).
    pub fn message_id(&self) -> Option<u64> {
        self.message.as_ref().map(|m| m.id)
    }

    /// The value of extension entry `key` of the message being handled: metadata the host adds
    /// to an envelope, such as [`PRINCIPAL_SUBJECT`] or an HTTP header the gateway passes along
    /// ([`HTTP_HEADER_PREFIX`] and the header's lowercase name).
    pub fn ext(&self, key: &str) -> Option<&[u8]> {
        match &self.message.as_ref()?.ext {
            Ext::Lent(ext) => ext.iter().find(|e| e.key == key).map(|e| e.value),
            Ext::Kept(ext) => ext.iter().find(|(k, _)| &**k == key).map(|(_, v)| &**v),
        }
    }

    /// Who the HTTP gateway authenticated for this message: the API key's subject or the JWT's
    /// `sub`, and the key id (the API key's id, or the JWT key's `kid`). `None` for a message
    /// that did not come through an authenticated route.
    pub fn principal(&self) -> Option<Principal<'_>> {
        let text = |key| self.ext(key).and_then(|v| std::str::from_utf8(v).ok());
        Some(Principal {
            subject: text(PRINCIPAL_SUBJECT)?,
            key_id: text(PRINCIPAL_KEY_ID),
        })
    }

    /// An HTTP request header the gateway passed along (the route's `headers` list), by
    /// lowercase name.
    pub fn http_header(&self, name: &str) -> Option<&str> {
        let header = |key: &str| {
            key.strip_prefix(HTTP_HEADER_PREFIX)
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        };
        let value = match &self.message.as_ref()?.ext {
            Ext::Lent(ext) => ext.iter().find(|e| header(e.key)).map(|e| e.value),
            Ext::Kept(ext) => ext.iter().find(|(k, _)| header(k)).map(|(_, v)| &**v),
        };
        std::str::from_utf8(value?).ok()
    }

    /// The idempotency key the sender set, if any.
    pub fn idempotency_key(&self) -> Option<&str> {
        self.message.as_ref()?.idempotency_key
    }

    /// The requester's deadline in milliseconds since the Unix epoch (host clock), if any.
    pub fn deadline_ms(&self) -> Option<u64> {
        self.message.as_ref()?.deadline_ms
    }

    /// The actor references that came with the message, in the order the sender attached them
    /// (empty outside handlers). See [`ActorRef`].
    pub fn attachments(&self) -> &[ActorRef] {
        self.message.as_ref().map_or(&[], |m| &m.attachments)
    }

    /// Sends `msg` to actor `to`, waiting while its mailbox is full.
    pub async fn send<M: Message>(&self, to: &str, msg: &M) -> Result<(), Error> {
        let raw = outbound(to.into(), msg, None, &[], None, |out| {
            sys::send(out, mode::WAIT)
        })?;
        if raw == 0 {
            // Delivered: no future to make and poll for it.
            return Ok(());
        }
        delivered(raw).await
    }

    /// Sends `msg` to actor `to`, failing with [`ErrorCode::MailboxFull`] instead of waiting.
    pub fn try_send<M: Message>(&self, to: &str, msg: &M) -> Result<(), Error> {
        decode_result(outbound(to.into(), msg, None, &[], None, |out| {
            sys::send(out, mode::TRY)
        })?)?;
        Ok(())
    }

    /// Sends request `msg` to actor `to` and waits for its reply, up to the host's default
    /// timeout ([`ErrorCode::Timeout`]). A reply that is an error comes back as `Err`.
    pub async fn request<R: Request>(&self, to: &str, msg: &R) -> Result<R::Reply, Error> {
        self.request_inner(to.into(), msg, None, &[], None).await
    }

    /// Like [`request`](Ctx::request), waiting at most `timeout` (rounded up to milliseconds).
    pub async fn request_with_timeout<R: Request>(
        &self,
        to: &str,
        msg: &R,
        timeout: Duration,
    ) -> Result<R::Reply, Error> {
        let mut ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        if Duration::from_millis(ms) < timeout {
            ms = ms.saturating_add(1);
        }
        self.request_inner(to.into(), msg, Some(ms), &[], None)
            .await
    }

    /// Like [`request`](Ctx::request), carrying idempotency key `key` (the receiver reads it
    /// with [`idempotency_key`](Ctx::idempotency_key)) and waiting at most `timeout` when one is
    /// given. Sending the same request again with the same key lets a receiver that deduplicates
    /// (see [`Dedup`](crate::dedup::Dedup)) answer it without applying it twice: this is how a
    /// retry after an unknown outcome (a timeout, a failed target) stays safe.
    pub async fn request_keyed<R: Request>(
        &self,
        to: &str,
        msg: &R,
        key: &str,
        timeout: Option<Duration>,
    ) -> Result<R::Reply, Error> {
        let ms = timeout.map(|t| {
            let ms = u64::try_from(t.as_millis()).unwrap_or(u64::MAX);
            if Duration::from_millis(ms) < t {
                ms.saturating_add(1)
            } else {
                ms
            }
        });
        self.request_inner(to.into(), msg, ms, &[], Some(key)).await
    }

    pub(crate) async fn request_inner<R: Request>(
        &self,
        to: Address<'_>,
        msg: &R,
        timeout_ms: Option<u64>,
        attachments: &[ActorRef],
        key: Option<&str>,
    ) -> Result<R::Reply, Error> {
        let raw = outbound(to, msg, timeout_ms, attachments, key, sys::request)?;
        let op = op_id(decode_result(raw)?)?;
        match Op::new(op).await {
            Completion::Reply(ReplyBody::Ok { codec, payload }) => codec::decode(codec, &payload)
                .map_err(|e| {
                    let message = format!("the reply to `{}` does not decode: {e}", R::NAME);
                    Error::new(ErrorCode::Malformed, message)
                }),
            Completion::Reply(ReplyBody::Error { code, message }) => Err(Error::new(code, message)),
            Completion::Failed(code) => Err(code.into()),
            Completion::Done => Err(Error::new(
                ErrorCode::Internal,
                "the request completed without a reply",
            )),
        }
    }

    /// Publishes `msg` on `subject`, waiting while a subscriber with the
    /// [`Policy::Wait`] policy has a full mailbox.
    pub async fn publish<M: Message>(&self, subject: &str, msg: &M) -> Result<(), Error> {
        let raw = outbound(subject.into(), msg, None, &[], None, |out| {
            sys::publish(out, mode::WAIT)
        })?;
        if raw == 0 {
            return Ok(());
        }
        delivered(raw).await
    }

    /// Publishes `msg` on `subject`, failing with [`ErrorCode::MailboxFull`] instead of waiting.
    pub fn try_publish<M: Message>(&self, subject: &str, msg: &M) -> Result<(), Error> {
        decode_result(outbound(subject.into(), msg, None, &[], None, |out| {
            sys::publish(out, mode::TRY)
        })?)?;
        Ok(())
    }

    /// Subscribes to a subject pattern (`a.b`, `a.*`, `a.>`) with the default policy
    /// ([`Policy::Wait`]). Matching messages arrive as ordinary messages, dispatched by their type
    /// name; [`Ctx::subject`] tells the subject.
    pub fn subscribe(&self, pattern: &str) -> Result<SubscriptionId, Error> {
        self.subscribe_with(pattern, Policy::Wait)
    }

    /// Subscribes to a subject pattern with a delivery policy for when this actor's mailbox is
    /// full.
    pub fn subscribe_with(&self, pattern: &str, policy: Policy) -> Result<SubscriptionId, Error> {
        let sub = Subscribe {
            pattern: pattern.to_owned(),
            policy,
        };
        let id = decode_result(sys::subscribe(&bunraku_abi::encode(&sub)))?;
        Ok(SubscriptionId(id))
    }

    /// Drops a subscription.
    pub fn unsubscribe(&self, id: SubscriptionId) -> Result<(), Error> {
        decode_result(sys::unsubscribe(id.0))?;
        Ok(())
    }

    /// Writes a line to this actor's log.
    pub fn log(&self, level: Level, message: impl fmt::Display) {
        log_line(level.as_raw(), &message.to_string());
    }

    /// Logs at [`Level::Error`].
    pub fn error(&self, message: impl fmt::Display) {
        self.log(Level::Error, message);
    }

    /// Logs at [`Level::Warn`].
    pub fn warn(&self, message: impl fmt::Display) {
        self.log(Level::Warn, message);
    }

    /// Logs at [`Level::Info`].
    pub fn info(&self, message: impl fmt::Display) {
        self.log(Level::Info, message);
    }

    /// Logs at [`Level::Debug`].
    pub fn debug(&self, message: impl fmt::Display) {
        self.log(Level::Debug, message);
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        // A stream the handler did not take is refused, so its writer does not wait forever.
        if let Some(stream) = self.take_stream_handle() {
            let _ = sys::stream_end(stream, bunraku_abi::stream_end::CLOSE);
        }
    }
}

/// Encodes an [`Outbound`](bunraku_abi::Outbound) for `msg` (postcard) into the reused scratch
/// buffer and hands its bytes to `call` (a host function).
pub(crate) fn outbound<M: Message>(
    to: Address<'_>,
    msg: &M,
    timeout_ms: Option<u64>,
    attachments: &[ActorRef],
    key: Option<&str>,
    call: impl FnOnce(&[u8]) -> i64,
) -> Result<i64, Error> {
    let (target, to_ref) = match to {
        Address::Name(name) => (name, None),
        Address::Ref(r) => ("", Some(r.handle())),
    };
    if attachments.len() > bunraku_abi::MAX_ATTACHMENTS {
        return Err(Error::new(
            ErrorCode::Invalid,
            format!(
                "{} references attached; a message carries at most {}",
                attachments.len(),
                bunraku_abi::MAX_ATTACHMENTS
            ),
        ));
    }
    let mut handles = [0u32; bunraku_abi::MAX_ATTACHMENTS];
    for (h, r) in handles.iter_mut().zip(attachments) {
        *h = r.handle();
    }
    let handles = &handles[..attachments.len()];
    let head = OutboundHead {
        target,
        msg_type: M::NAME,
        codec: Codec::Postcard,
        timeout_ms,
        idempotency_key: key,
        ext: &[],
        to_ref,
        attachments: handles,
    };
    codec::with_scratch(|buf| {
        match head.encode_with(buf, |b| codec::encode_into(Codec::Postcard, msg, b)) {
            Ok(()) => Ok(call(buf)),
            Err(e) => Err(Error::new(
                ErrorCode::Malformed,
                format!("`{}` does not encode: {e}", M::NAME),
            )),
        }
    })
}

/// An operation id from a host result.
fn op_id(raw: u64) -> Result<u32, Error> {
    match u32::try_from(raw) {
        Ok(op) if op > 0 => Ok(op),
        _ => Err(Error::new(
            ErrorCode::Internal,
            format!("the host returned operation id {raw}"),
        )),
    }
}

/// The outcome of a `send`/`publish` in `WAIT` mode: `0` is delivered, an id is an operation.
/// The message paths (`send`, `publish`, the send through a reference) return at once for `0`
/// before calling it: making and polling this future for a delivered message cost 2–5% of a
/// message in ping-pong. (A plain function returning a future that is ready at once for `0`,
/// for every caller, was slower still: 6–8%, BENCHMARKS §1.)
pub(crate) async fn delivered(raw: i64) -> Result<(), Error> {
    let op = match decode_result(raw)? {
        0 => return Ok(()),
        op => op_id(op)?,
    };
    match Op::new(op).await {
        Completion::Done => Ok(()),
        Completion::Failed(code) => Err(code.into()),
        Completion::Reply(_) => Err(Error::new(
            ErrorCode::Internal,
            "a send completed with a reply",
        )),
    }
}

/// A subscription, as returned by [`Ctx::subscribe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriptionId(u64);

impl SubscriptionId {
    /// The host's id.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The level of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    /// Errors.
    Error,
    /// Warnings.
    Warn,
    /// Information.
    Info,
    /// Debugging detail.
    Debug,
    /// Tracing detail.
    Trace,
}

impl Level {
    /// The ABI's number for this level ([`bunraku_abi::level`]).
    pub fn as_raw(self) -> u32 {
        match self {
            Self::Error => level::ERROR,
            Self::Warn => level::WARN,
            Self::Info => level::INFO,
            Self::Debug => level::DEBUG,
            Self::Trace => level::TRACE,
        }
    }

    /// The level for an ABI number, if it is one.
    pub fn from_raw(raw: u32) -> Option<Self> {
        [
            Self::Error,
            Self::Warn,
            Self::Info,
            Self::Debug,
            Self::Trace,
        ]
        .into_iter()
        .find(|l| l.as_raw() == raw)
    }

    /// The lowercase name (`"warn"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
