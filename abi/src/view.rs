//! Borrowed views of the wire types, for the per-message path.
//!
//! [`EventView`] decodes the frame `next` hands a guest ([`encode_event_into`]): an [`Event`]'s
//! postcard bytes (same layout, same refusals, trailing bytes included), except a message, which
//! is a fixed header and its fields ([`MESSAGE_HEADER`]). Its strings and byte strings borrow
//! from the input and its lists (`chain`, `attachments`, `ext`) are validated in place and read
//! through iterators: decoding allocates nothing. [`EnvelopeView`] decodes an [`Envelope`]'s
//! postcard bytes the same way. [`OutboundHead`] and [`encode_reply_ok_with`] go the
//! other way: they append the bytes of an [`Outbound`](crate::Outbound) or a
//! [`ReplyBody::Ok`] to a caller's buffer, with the payload written in
//! place by a closure, so a guest can reuse one buffer for every send.
//!
//! But for the message frame, the wire format is the one of the owned types; `abi/tests/wire.rs`
//! holds both against the same golden bytes, and pins the frame's. postcard's rules, as mirrored
//! here: integers are LEB128 varints (at most 5 bytes for a `u32`, 10 for a `u64`, with the
//! unused high bits of the last byte zero; a length is a `usize`, so 5 bytes on 32-bit targets),
//! an `Option` is a `0`/`1` byte, an enum is its variant index as a `u32` varint, a string or
//! list is a length followed by its items, and a `[u8; N]` is `N` bytes.

use alloc::borrow::ToOwned;
use alloc::vec::Vec;
use core::marker::PhantomData;

use crate::{Codec, Completion, Envelope, ErrorCode, Event, Ext, ReplyBody, TraceContext};

/// What a malformed input decodes to.
const MALFORMED: ErrorCode = ErrorCode::Malformed;

/// A cursor over postcard bytes.
#[derive(Clone, Copy)]
struct Reader<'a> {
    bytes: &'a [u8],
}

/// `bytes` as text. Names are short and ASCII: such text is checked here, inline, so that
/// decoding an event in a guest does not call out to `from_utf8` for each name; any other text
/// goes through `from_utf8`.
#[inline(always)]
fn utf8(bytes: &[u8]) -> Result<&str, ErrorCode> {
    if bytes.len() <= SHORT_TEXT && short_ascii(bytes) {
        // SAFETY: ASCII text is UTF-8.
        return Ok(unsafe { core::str::from_utf8_unchecked(bytes) });
    }
    core::str::from_utf8(bytes).map_err(|_| MALFORMED)
}

/// The longest text [`utf8`] checks inline.
const SHORT_TEXT: usize = 32;

/// Whether `bytes` (at most [`SHORT_TEXT`] long) is ASCII: no byte has its high bit set. Reads
/// whole words, the last one overlapping the one before, where `<[u8]>::is_ascii` aligns its
/// reads first (a loop of its own for the few bytes of a name, which in wasm32 reads 4 at a time).
#[inline(always)]
fn short_ascii(bytes: &[u8]) -> bool {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let n = bytes.len();
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    if n >= 8 {
        let mut seen = word(n - 8);
        let mut at = 0;
        while at + 8 < n {
            seen |= word(at);
            at += 8;
        }
        return seen & HIGH == 0;
    }
    if n >= 4 {
        let half = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        return (half(0) | half(n - 4)) & HIGH as u32 == 0;
    }
    bytes.iter().fold(0, |seen, b| seen | b) & 0x80 == 0
}

impl<'a> Reader<'a> {
    #[inline(always)]
    fn byte(&mut self) -> Result<u8, ErrorCode> {
        let (&first, rest) = self.bytes.split_first().ok_or(MALFORMED)?;
        self.bytes = rest;
        Ok(first)
    }

    #[inline(always)]
    fn take(&mut self, n: usize) -> Result<&'a [u8], ErrorCode> {
        if n > self.bytes.len() {
            return Err(MALFORMED);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    /// A varint of at most `max_bytes` bytes whose last byte is at most `last_max`.
    #[inline(always)]
    fn varint(&mut self, max_bytes: u32, last_max: u8) -> Result<u64, ErrorCode> {
        // Most integers on the wire (ids, lengths, tags) take one byte.
        if let Some(&b) = self.bytes.first()
            && b < 0x80
        {
            self.bytes = &self.bytes[1..];
            return Ok(u64::from(b));
        }
        let mut out = 0u64;
        for i in 0..max_bytes {
            let b = self.byte()?;
            out |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                if i == max_bytes - 1 && b > last_max {
                    return Err(MALFORMED);
                }
                return Ok(out);
            }
        }
        Err(MALFORMED)
    }

    #[inline(always)]
    fn int<T: Varint>(&mut self) -> Result<T, ErrorCode> {
        self.varint(T::MAX_BYTES, T::LAST_MAX).map(T::from_u64)
    }

    #[inline(always)]
    fn u64(&mut self) -> Result<u64, ErrorCode> {
        self.int()
    }

    #[inline(always)]
    fn u32(&mut self) -> Result<u32, ErrorCode> {
        self.int()
    }

    #[inline(always)]
    fn usize(&mut self) -> Result<usize, ErrorCode> {
        #[cfg(target_pointer_width = "64")]
        let v = self.u64()?;
        #[cfg(not(target_pointer_width = "64"))]
        let v = u64::from(self.u32()?);
        usize::try_from(v).map_err(|_| MALFORMED)
    }

    /// An enum's variant index.
    #[inline(always)]
    fn variant(&mut self) -> Result<u32, ErrorCode> {
        self.u32()
    }

    /// An `Option`'s tag: whether a value follows.
    #[inline(always)]
    fn some(&mut self) -> Result<bool, ErrorCode> {
        match self.byte()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(MALFORMED),
        }
    }

    #[inline(always)]
    fn bytes(&mut self) -> Result<&'a [u8], ErrorCode> {
        let n = self.usize()?;
        self.take(n)
    }

    #[inline(always)]
    fn str(&mut self) -> Result<&'a str, ErrorCode> {
        utf8(self.bytes()?)
    }

    #[inline(always)]
    fn opt_str(&mut self) -> Result<Option<&'a str>, ErrorCode> {
        if self.some()? {
            self.str().map(Some)
        } else {
            Ok(None)
        }
    }

    #[inline(always)]
    fn opt_u32(&mut self) -> Result<Option<u32>, ErrorCode> {
        if self.some()? {
            self.u32().map(Some)
        } else {
            Ok(None)
        }
    }

    #[inline(always)]
    fn opt_u64(&mut self) -> Result<Option<u64>, ErrorCode> {
        if self.some()? {
            self.u64().map(Some)
        } else {
            Ok(None)
        }
    }

    #[inline(always)]
    fn array<const N: usize>(&mut self) -> Result<[u8; N], ErrorCode> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    #[inline(always)]
    fn codec(&mut self) -> Result<Codec, ErrorCode> {
        match self.variant()? {
            0 => Ok(Codec::Postcard),
            1 => Ok(Codec::Json),
            _ => Err(MALFORMED),
        }
    }

    #[inline(always)]
    fn error_code(&mut self) -> Result<ErrorCode, ErrorCode> {
        let index = usize::try_from(self.variant()?).map_err(|_| MALFORMED)?;
        // serde numbers variants by declaration order, which `ErrorCode::ALL` follows.
        ErrorCode::ALL.get(index).copied().ok_or(MALFORMED)
    }

    /// A list of varints, validated and kept as its bytes.
    #[inline(always)]
    fn varints<T: Varint>(&mut self) -> Result<VarintSeq<'a, T>, ErrorCode> {
        let len = self.usize()?;
        let start = self.bytes;
        for _ in 0..len {
            self.int::<T>()?;
        }
        Ok(VarintSeq {
            bytes: &start[..start.len() - self.bytes.len()],
            len,
            _item: PhantomData,
        })
    }

    #[inline(always)]
    fn exts(&mut self) -> Result<ExtsView<'a>, ErrorCode> {
        let len = self.usize()?;
        let start = self.bytes;
        for _ in 0..len {
            self.str()?;
            self.bytes()?;
        }
        Ok(ExtsView {
            bytes: &start[..start.len() - self.bytes.len()],
            len,
        })
    }

    /// Fails unless every byte was read.
    #[inline(always)]
    fn end(self) -> Result<(), ErrorCode> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(MALFORMED)
        }
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for u32 {}
    impl Sealed for u64 {}
}

/// An integer type a [`VarintSeq`] holds (`u32` or `u64`), with postcard's varint limits.
pub trait Varint: sealed::Sealed + Copy {
    /// The most bytes its varint takes.
    #[doc(hidden)]
    const MAX_BYTES: u32;
    /// The largest last byte of a varint of `MAX_BYTES` bytes (the value's top bits).
    #[doc(hidden)]
    const LAST_MAX: u8;
    /// The value of a varint read within those limits (it fits).
    #[doc(hidden)]
    fn from_u64(v: u64) -> Self;
}

impl Varint for u32 {
    const MAX_BYTES: u32 = 5;
    const LAST_MAX: u8 = 0x0f;
    fn from_u64(v: u64) -> Self {
        v as u32
    }
}

impl Varint for u64 {
    const MAX_BYTES: u32 = 10;
    const LAST_MAX: u8 = 0x01;
    fn from_u64(v: u64) -> Self {
        v
    }
}

/// A list of integers as it lies on the wire (validated when it was decoded).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct VarintSeq<'a, T> {
    bytes: &'a [u8],
    len: usize,
    _item: PhantomData<T>,
}

impl<'a, T: Varint> VarintSeq<'a, T> {
    /// No integers.
    const EMPTY: Self = Self {
        bytes: &[],
        len: 0,
        _item: PhantomData,
    };

    /// How many integers there are.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The integers, in order.
    pub fn iter(&self) -> VarintIter<'a, T> {
        VarintIter {
            reader: Reader { bytes: self.bytes },
            left: self.len,
            _item: PhantomData,
        }
    }

    /// The integers as a `Vec`.
    pub fn to_vec(&self) -> Vec<T> {
        self.iter().collect()
    }
}

impl<T: Varint + core::fmt::Debug> core::fmt::Debug for VarintSeq<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a, T: Varint> IntoIterator for VarintSeq<'a, T> {
    type Item = T;
    type IntoIter = VarintIter<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// The iterator of a [`VarintSeq`].
#[derive(Clone)]
pub struct VarintIter<'a, T> {
    reader: Reader<'a>,
    left: usize,
    _item: PhantomData<T>,
}

impl<T: Varint> Iterator for VarintIter<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // Validated when the list was decoded; a failure cannot happen and ends the list.
        self.reader.int().ok()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left))
    }
}

/// One extension entry, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtView<'a> {
    /// The namespaced key.
    pub key: &'a str,
    /// The value.
    pub value: &'a [u8],
}

/// An envelope's extension list as it lies on the wire (validated when it was decoded).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ExtsView<'a> {
    bytes: &'a [u8],
    len: usize,
}

impl<'a> ExtsView<'a> {
    /// No entries.
    const EMPTY: Self = Self { bytes: &[], len: 0 };

    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The entries, in order.
    pub fn iter(&self) -> ExtsIter<'a> {
        ExtsIter {
            reader: Reader { bytes: self.bytes },
            left: self.len,
        }
    }

    /// Owned copies of the entries.
    pub fn to_vec(&self) -> Vec<Ext> {
        // Most messages carry none: no iterator to set up for them.
        if self.len == 0 {
            return Vec::new();
        }
        self.iter()
            .map(|e| Ext {
                key: e.key.to_owned(),
                value: e.value.to_vec(),
            })
            .collect()
    }
}

impl core::fmt::Debug for ExtsView<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// The iterator of an [`ExtsView`].
#[derive(Clone)]
pub struct ExtsIter<'a> {
    reader: Reader<'a>,
    left: usize,
}

impl<'a> Iterator for ExtsIter<'a> {
    type Item = ExtView<'a>;

    fn next(&mut self) -> Option<ExtView<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // Validated when the list was decoded; a failure cannot happen and ends the list.
        let key = self.reader.str().ok()?;
        let value = self.reader.bytes().ok()?;
        Some(ExtView { key, value })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left))
    }
}

/// An [`Envelope`] whose strings, payload and lists borrow from the bytes it was decoded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvelopeView<'a> {
    /// Unique (per host) message id.
    pub id: u64,
    /// The stable wire name of the message type.
    pub msg_type: &'a str,
    /// How `payload` is encoded.
    pub codec: Codec,
    /// The reply handle, when the sender awaits a reply.
    pub reply: Option<u32>,
    /// The deadline in milliseconds since the Unix epoch on the host clock, if any.
    pub deadline_ms: Option<u64>,
    /// The actors waiting on this message, oldest first.
    pub chain: VarintSeq<'a, u64>,
    /// The trace this message belongs to.
    pub trace: Option<TraceContext>,
    /// Who sent it.
    pub sender: Option<&'a str>,
    /// The subject, for a message delivered through a subscription.
    pub subject: Option<&'a str>,
    /// An idempotency key set by the sender.
    pub idempotency_key: Option<&'a str>,
    /// Host-issued handles moved with the message.
    pub attachments: VarintSeq<'a, u32>,
    /// Extensions.
    pub ext: ExtsView<'a>,
    /// The encoded message.
    pub payload: &'a [u8],
    /// The reader's handle of the stream this message opens.
    pub stream: Option<u32>,
}

impl<'a> EnvelopeView<'a> {
    /// Decodes the bytes of an [`Envelope`], refusing trailing bytes.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, ErrorCode> {
        let mut r = Reader { bytes };
        let env = Self {
            id: r.u64()?,
            msg_type: r.str()?,
            codec: r.codec()?,
            reply: r.opt_u32()?,
            deadline_ms: r.opt_u64()?,
            chain: r.varints()?,
            trace: if r.some()? {
                Some(TraceContext {
                    trace_id: r.array()?,
                    span_id: r.array()?,
                })
            } else {
                None
            },
            sender: r.opt_str()?,
            subject: r.opt_str()?,
            idempotency_key: r.opt_str()?,
            attachments: r.varints()?,
            ext: r.exts()?,
            payload: r.bytes()?,
            stream: r.opt_u32()?,
        };
        r.end()?;
        Ok(env)
    }

    /// The envelope of a message frame (the whole event, its tag included), refused unless
    /// it is exactly what [`encode_event_into`] writes for some envelope. The header is read
    /// at fixed offsets and every length checked at once against the frame's; only the type
    /// name and the texts are checked further, and the extras when there are any.
    #[inline(always)]
    fn read_frame(bytes: &'a [u8]) -> Result<Self, ErrorCode> {
        let Some((h, rest)) = bytes.split_first_chunk::<MESSAGE_HEADER>() else {
            return Err(MALFORMED);
        };
        let u32_at = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let u64_at = |i: usize| {
            u64::from_le_bytes([
                h[i],
                h[i + 1],
                h[i + 2],
                h[i + 3],
                h[i + 4],
                h[i + 5],
                h[i + 6],
                h[i + 7],
            ])
        };
        let codec = match h[1] {
            0 => Codec::Postcard,
            1 => Codec::Json,
            _ => return Err(MALFORMED),
        };
        let flags = u16::from_le_bytes([h[2], h[3]]);
        let has = |flag: u16| flags & flag != 0;
        let (reply, deadline, stream) = (u32_at(4), u64_at(16), u32_at(24));
        let lens = [
            u32_at(28),
            u32_at(32),
            u32_at(36),
            u32_at(40),
            u32_at(44),
            u32_at(48),
        ];
        // The payload is what is left.
        let [type_len, sender_len, subject_len, key_len, extras_len, _] = lens;
        let trace_len = if has(frame::TRACE) { TRACE_BYTES } else { 0 };
        let total = lens.iter().map(|&n| u64::from(n)).sum::<u64>() + trace_len as u64;
        // An absent field is all zeros, so that one envelope has one frame.
        let absent_but_set = (!has(frame::REPLY) && reply != 0)
            | (!has(frame::DEADLINE) && deadline != 0)
            | (!has(frame::STREAM) && stream != 0)
            | (!has(frame::SENDER) && sender_len != 0)
            | (!has(frame::SUBJECT) && subject_len != 0)
            | (!has(frame::IDEMPOTENCY_KEY) && key_len != 0);
        if flags & !frame::ALL != 0 || absent_but_set || total != rest.len() as u64 {
            return Err(MALFORMED);
        }
        // Every length fits in what the check above found: none of these splits can fail.
        let mut rest = rest;
        let mut field = |len: usize| {
            let (head, tail) = rest.split_at(len);
            rest = tail;
            head
        };
        let trace = field(trace_len);
        let msg_type = utf8(field(type_len as usize))?;
        let opt_text = |bytes: &'a [u8], flag: u16| -> Result<Option<&'a str>, ErrorCode> {
            if has(flag) {
                utf8(bytes).map(Some)
            } else {
                Ok(None)
            }
        };
        let sender = opt_text(field(sender_len as usize), frame::SENDER)?;
        let subject = opt_text(field(subject_len as usize), frame::SUBJECT)?;
        let idempotency_key = opt_text(field(key_len as usize), frame::IDEMPOTENCY_KEY)?;
        let extras = field(extras_len as usize);
        let payload = rest;
        let (chain, attachments, ext) = if extras.is_empty() {
            (VarintSeq::EMPTY, VarintSeq::EMPTY, ExtsView::EMPTY)
        } else {
            Self::read_extras(extras)?
        };
        Ok(Self {
            id: u64_at(8),
            msg_type,
            codec,
            reply: has(frame::REPLY).then_some(reply),
            deadline_ms: has(frame::DEADLINE).then_some(deadline),
            chain,
            trace: (!trace.is_empty()).then(|| TraceContext {
                trace_id: trace[..16].try_into().expect("16 bytes"),
                span_id: trace[16..].try_into().expect("8 bytes"),
            }),
            sender,
            subject,
            idempotency_key,
            attachments,
            ext,
            payload,
            stream: has(frame::STREAM).then_some(stream),
        })
    }

    /// A frame's extras: the chain, the attachments and the extensions, not all empty (a frame
    /// without any has none).
    #[inline(never)]
    #[allow(clippy::type_complexity)]
    fn read_extras(
        bytes: &'a [u8],
    ) -> Result<(VarintSeq<'a, u64>, VarintSeq<'a, u32>, ExtsView<'a>), ErrorCode> {
        let mut r = Reader { bytes };
        let (chain, attachments, ext) = (r.varints()?, r.varints()?, r.exts()?);
        r.end()?;
        if chain.is_empty() && attachments.is_empty() && ext.is_empty() {
            return Err(MALFORMED);
        }
        Ok((chain, attachments, ext))
    }

    /// An owned copy.
    pub fn to_envelope(&self) -> Envelope {
        Envelope {
            id: self.id,
            msg_type: self.msg_type.to_owned(),
            codec: self.codec,
            reply: self.reply,
            deadline_ms: self.deadline_ms,
            chain: self.chain.to_vec(),
            trace: self.trace,
            sender: self.sender.map(ToOwned::to_owned),
            subject: self.subject.map(ToOwned::to_owned),
            idempotency_key: self.idempotency_key.map(ToOwned::to_owned),
            attachments: self.attachments.to_vec(),
            ext: self.ext.to_vec(),
            payload: self.payload.to_vec(),
            stream: self.stream,
        }
    }
}

/// An [`Outbound`](crate::Outbound) whose strings, payload and lists borrow from the bytes it
/// was decoded from: what the host reads from a guest's `send`, `request`, `publish` and
/// `stream_open` without allocating or going through serde.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboundView<'a> {
    /// An actor name (send, request) or a subject (publish).
    pub target: &'a str,
    /// The stable wire name of the message type.
    pub msg_type: &'a str,
    /// How `payload` is encoded.
    pub codec: Codec,
    /// The encoded message.
    pub payload: &'a [u8],
    /// For requests: how long to wait for the reply (host default when `None`).
    pub timeout_ms: Option<u64>,
    /// An idempotency key for the receiver.
    pub idempotency_key: Option<&'a str>,
    /// Extensions.
    pub ext: ExtsView<'a>,
    /// Address the actor through this handle of the sender's reference table instead of
    /// `target`.
    pub to_ref: Option<u32>,
    /// Handles of the sender's reference table to pass on with the message.
    pub attachments: VarintSeq<'a, u32>,
}

impl<'a> OutboundView<'a> {
    /// Decodes the bytes of an [`Outbound`](crate::Outbound) without allocating, refusing what
    /// [`decode::<Outbound>`](crate::decode) refuses (trailing bytes included).
    pub fn decode(bytes: &'a [u8]) -> Result<Self, ErrorCode> {
        let mut r = Reader { bytes };
        let out = Self {
            target: r.str()?,
            msg_type: r.str()?,
            codec: r.codec()?,
            payload: r.bytes()?,
            timeout_ms: r.opt_u64()?,
            idempotency_key: r.opt_str()?,
            ext: r.exts()?,
            to_ref: r.opt_u32()?,
            attachments: r.varints()?,
        };
        r.end()?;
        Ok(out)
    }

    /// An owned copy.
    pub fn to_outbound(&self) -> crate::Outbound {
        crate::Outbound {
            target: self.target.to_owned(),
            msg_type: self.msg_type.to_owned(),
            codec: self.codec,
            payload: self.payload.to_vec(),
            timeout_ms: self.timeout_ms,
            idempotency_key: self.idempotency_key.map(ToOwned::to_owned),
            ext: self.ext.to_vec(),
            to_ref: self.to_ref,
            attachments: self.attachments.to_vec(),
        }
    }
}

/// A [`ReplyBody`] borrowing its payload or message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyView<'a> {
    /// A successful reply.
    Ok {
        /// How `payload` is encoded.
        codec: Codec,
        /// The encoded reply value.
        payload: &'a [u8],
    },
    /// A typed failure and a human-readable message.
    Error {
        /// What kind of failure.
        code: ErrorCode,
        /// Details for a person.
        message: &'a str,
    },
}

impl ReplyView<'_> {
    /// An owned copy.
    pub fn to_reply_body(&self) -> ReplyBody {
        match *self {
            Self::Ok { codec, payload } => ReplyBody::Ok {
                codec,
                payload: payload.to_vec(),
            },
            Self::Error { code, message } => ReplyBody::Error {
                code,
                message: message.to_owned(),
            },
        }
    }
}

/// A [`Completion`] borrowing its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompletionView<'a> {
    /// A send or publish that waited for room was delivered.
    Done,
    /// The reply to a request.
    Reply(ReplyView<'a>),
    /// The operation failed.
    Failed(ErrorCode),
}

impl CompletionView<'_> {
    /// An owned copy.
    pub fn to_completion(&self) -> Completion {
        match self {
            Self::Done => Completion::Done,
            Self::Reply(body) => Completion::Reply(body.to_reply_body()),
            Self::Failed(code) => Completion::Failed(*code),
        }
    }
}

/// An [`Event`] borrowing from the bytes it was decoded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventView<'a> {
    /// The first event of every instance.
    Start {
        /// The actor's address.
        name: &'a str,
        /// Which instance of the actor this is.
        instance: u32,
        /// The actor's configuration, as JSON.
        config: &'a [u8],
    },
    /// A message from the mailbox.
    Message(EnvelopeView<'a>),
    /// The outcome of an operation that returned an operation id.
    Completion {
        /// The operation id the host returned.
        op: u32,
        /// Its outcome.
        result: CompletionView<'a>,
    },
    /// The instance is being stopped.
    Stop,
}

impl<'a> EventView<'a> {
    /// Decodes an event's frame (what [`encode_event_into`] writes) without allocating. Every
    /// kind but a message is its postcard bytes, and decodes as
    /// [`decode::<Event>`](crate::decode) would (trailing bytes refused); a message is a fixed
    /// header and its fields ([`MESSAGE_HEADER`]), refused unless it is exactly what
    /// [`encode_event_into`] writes for some envelope.
    ///
    /// Inlined into its caller, with the envelope's reading: a guest's build then keeps the
    /// fields its handler reads in locals instead of building the view in linear memory and
    /// copying it twice on the way out.
    #[inline(always)]
    pub fn decode(bytes: &'a [u8]) -> Result<Self, ErrorCode> {
        if bytes.first() == Some(&MESSAGE) {
            return EnvelopeView::read_frame(bytes).map(Self::Message);
        }
        let mut r = Reader { bytes };
        let event = match r.variant()? {
            0 => Self::Start {
                name: r.str()?,
                instance: r.u32()?,
                config: r.bytes()?,
            },
            2 => Self::Completion {
                op: r.u32()?,
                result: match r.variant()? {
                    0 => CompletionView::Done,
                    1 => CompletionView::Reply(match r.variant()? {
                        0 => ReplyView::Ok {
                            codec: r.codec()?,
                            payload: r.bytes()?,
                        },
                        1 => ReplyView::Error {
                            code: r.error_code()?,
                            message: r.str()?,
                        },
                        _ => return Err(MALFORMED),
                    }),
                    2 => CompletionView::Failed(r.error_code()?),
                    _ => return Err(MALFORMED),
                },
            },
            3 => Self::Stop,
            _ => return Err(MALFORMED),
        };
        r.end()?;
        Ok(event)
    }

    /// An owned copy.
    pub fn to_event(&self) -> Event {
        match *self {
            Self::Start {
                name,
                instance,
                config,
            } => Event::Start {
                name: name.to_owned(),
                instance,
                config: config.to_vec(),
            },
            Self::Message(env) => Event::Message(env.to_envelope()),
            Self::Completion { op, result } => Event::Completion {
                op,
                result: result.to_completion(),
            },
            Self::Stop => Event::Stop,
        }
    }
}

/// Appends a varint.
#[inline]
fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Appends a list of varints, its length first.
fn put_varints(buf: &mut Vec<u8>, items: impl ExactSizeIterator<Item = u64>) {
    put_varint(buf, items.len() as u64);
    for v in items {
        put_varint(buf, v);
    }
}

/// Appends a list of extension entries, its length first.
fn put_exts(buf: &mut Vec<u8>, exts: &[Ext]) {
    put_varint(buf, exts.len() as u64);
    for ext in exts {
        put_bytes(buf, ext.key.as_bytes());
        put_bytes(buf, &ext.value);
    }
}

/// Appends a length-prefixed byte string.
#[inline]
fn put_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(buf, bytes.len() as u64);
    put_raw(buf, bytes);
}

/// Appends `bytes`. Up to 16 bytes (most names, message types and small payloads) are copied
/// without `memcpy` ([`copy_short`]) into zeroed room that is then cut to their length: in a wasm
/// guest, a `memcpy` of a length not known at compile time is a `memory.copy` instruction, which
/// wasmtime runs as a call out of the guest's code, costlier than such a copy.
#[inline(always)]
fn put_raw(buf: &mut Vec<u8>, bytes: &[u8]) {
    let n = bytes.len();
    if n > SHORT {
        buf.extend_from_slice(bytes);
        return;
    }
    let start = buf.len();
    buf.extend_from_slice(&[0; SHORT]);
    copy_short(&mut buf[start..start + n], bytes);
    buf.truncate(start + n);
}

/// Appends a codec (its variant index).
#[inline]
fn put_codec(buf: &mut Vec<u8>, codec: Codec) {
    buf.push(codec_byte(codec));
}

/// A codec's encoding: its variant index, one byte.
#[inline(always)]
fn codec_byte(codec: Codec) -> u8 {
    match codec {
        Codec::Postcard => 0,
        Codec::Json => 1,
    }
}

/// The longest target and type name [`put_short_head`] takes.
const SHORT: usize = 16;

/// Appends two length-prefixed strings of at most [`SHORT`] bytes each and a codec: the fields
/// of an `Outbound` before its payload, for the common short names. They are written through a
/// slice of zeroed room at a position kept in a local, then the room is cut to what was written.
/// In a guest, each `Vec::push` instead loads and stores the vector's length in linear memory
/// again (a byte store may alias it), which made the encoding cost more than the copies.
#[inline(always)]
fn put_short_head(buf: &mut Vec<u8>, target: &[u8], msg_type: &[u8], codec: Codec) {
    const ROOM: usize = 2 * (1 + SHORT) + 1;
    let start = buf.len();
    buf.extend_from_slice(&[0; ROOM]);
    let room = &mut buf[start..];
    let mut at = 0;
    for name in [target, msg_type] {
        // At most 16 bytes: the length takes one byte.
        room[at] = name.len() as u8;
        at += 1;
        copy_short(&mut room[at..at + name.len()], name);
        at += name.len();
    }
    room[at] = codec_byte(codec);
    buf.truncate(start + at + 1);
}

/// Copies at most 16 bytes to `dest` (of the same length) as at most two overlapping
/// fixed-size pieces, without `memcpy` (see [`put_raw`] for why).
#[inline(always)]
fn copy_short(dest: &mut [u8], bytes: &[u8]) {
    let n = bytes.len();
    match n {
        0 => {}
        1..=3 => {
            dest[0] = bytes[0];
            dest[n / 2] = bytes[n / 2];
            dest[n - 1] = bytes[n - 1];
        }
        4..=7 => {
            dest[..4].copy_from_slice(&bytes[..4]);
            dest[n - 4..].copy_from_slice(&bytes[n - 4..]);
        }
        _ => {
            dest[..8].copy_from_slice(&bytes[..8]);
            dest[n - 8..].copy_from_slice(&bytes[n - 8..]);
        }
    }
}

/// Appends the bytes `write` appends to `buf`, preceded by their length: the encoding of a byte
/// string whose length is not known in advance. The bytes are written in place behind a one-byte
/// prefix; from 128 bytes on, when the prefix takes more, they are moved once to make room.
#[inline]
fn put_bytes_with<E>(
    buf: &mut Vec<u8>,
    write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
) -> Result<(), E> {
    let start = buf.len();
    // Room for a one-byte prefix, which is what a length below 128 takes.
    buf.push(0);
    if let Err(e) = write(buf) {
        buf.truncate(start);
        return Err(e);
    }
    let len = buf.len() - start - 1;
    if len < 0x80 {
        buf[start] = len as u8;
        return Ok(());
    }
    let mut prefix = [0u8; 10];
    let mut n = 0;
    let mut v = len as u64;
    while v >= 0x80 {
        prefix[n] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    prefix[n] = v as u8;
    n += 1;
    // Make room for the longer prefix and move the bytes behind it.
    buf.extend_from_slice(&prefix[1..n]);
    buf.copy_within(start + 1..start + 1 + len, start + n);
    buf[start..start + n].copy_from_slice(&prefix[..n]);
    Ok(())
}

/// The fields of an [`Outbound`](crate::Outbound) other than its payload, borrowed. The default
/// is empty, in postcard, with no options (as `Outbound`'s).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboundHead<'a> {
    /// An actor name (send, request) or a subject (publish).
    pub target: &'a str,
    /// The stable wire name of the message type.
    pub msg_type: &'a str,
    /// How the payload is encoded.
    pub codec: Codec,
    /// For requests: how long to wait for the reply.
    pub timeout_ms: Option<u64>,
    /// An idempotency key for the receiver.
    pub idempotency_key: Option<&'a str>,
    /// Extensions.
    pub ext: &'a [Ext],
    /// Address the actor through this reference handle instead of `target`.
    pub to_ref: Option<u32>,
    /// Reference handles to pass on with the message.
    pub attachments: &'a [u32],
}

impl OutboundHead<'_> {
    /// Appends the bytes of the [`Outbound`](crate::Outbound) with these fields and `payload`.
    pub fn encode_into(&self, payload: &[u8], buf: &mut Vec<u8>) {
        let written: Result<(), core::convert::Infallible> = self.encode_with(buf, |b| {
            b.extend_from_slice(payload);
            Ok(())
        });
        let Ok(()) = written;
    }

    /// Appends the bytes of the [`Outbound`](crate::Outbound) with these fields and the payload
    /// that `write_payload` appends to the buffer it is given. When `write_payload` fails,
    /// `buf` is left as it was.
    pub fn encode_with<E>(
        &self,
        buf: &mut Vec<u8>,
        write_payload: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        let start = buf.len();
        let (target, msg_type) = (self.target.as_bytes(), self.msg_type.as_bytes());
        if target.len() <= SHORT && msg_type.len() <= SHORT {
            put_short_head(buf, target, msg_type, self.codec);
        } else {
            put_bytes(buf, target);
            put_bytes(buf, msg_type);
            put_codec(buf, self.codec);
        }
        if let Err(e) = put_bytes_with(buf, write_payload) {
            buf.truncate(start);
            return Err(e);
        }
        if self.timeout_ms.is_none()
            && self.idempotency_key.is_none()
            && self.ext.is_empty()
            && self.to_ref.is_none()
            && self.attachments.is_empty()
        {
            // What most messages end with: five absent or empty fields.
            buf.extend_from_slice(&[0; 5]);
            return Ok(());
        }
        match self.timeout_ms {
            Some(ms) => {
                buf.push(1);
                put_varint(buf, ms);
            }
            None => buf.push(0),
        }
        match self.idempotency_key {
            Some(key) => {
                buf.push(1);
                put_bytes(buf, key.as_bytes());
            }
            None => buf.push(0),
        }
        put_exts(buf, self.ext);
        put_opt_varint(buf, self.to_ref.map(u64::from));
        put_varints(buf, self.attachments.iter().map(|&h| u64::from(h)));
        Ok(())
    }
}

/// Appends the bytes of a [`ReplyBody::Ok`] in `codec` with the payload that `write_payload`
/// appends to the buffer it is given. When `write_payload` fails, `buf` is left as it was.
pub fn encode_reply_ok_with<E>(
    buf: &mut Vec<u8>,
    codec: Codec,
    write_payload: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
) -> Result<(), E> {
    let start = buf.len();
    buf.push(0);
    put_codec(buf, codec);
    put_bytes_with(buf, write_payload).inspect_err(|_| buf.truncate(start))
}

/// Appends an optional string.
#[inline]
fn put_opt_str(buf: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => {
            buf.push(1);
            put_bytes(buf, s.as_bytes());
        }
        None => buf.push(0),
    }
}

/// Appends an optional varint.
#[inline]
fn put_opt_varint(buf: &mut Vec<u8>, v: Option<u64>) {
    match v {
        Some(v) => {
            buf.push(1);
            put_varint(buf, v);
        }
        None => buf.push(0),
    }
}

/// Appends an error code (its variant index).
fn put_error_code(buf: &mut Vec<u8>, code: ErrorCode) {
    let index = ErrorCode::ALL.iter().position(|c| *c == code).unwrap_or(0);
    put_varint(buf, index as u64);
}

/// Appends the bytes of `env` (what [`encode`](crate::encode) gives, without serde).
pub fn encode_envelope_into(env: &Envelope, buf: &mut Vec<u8>) {
    encode_received_into(env, &own_handles(env), buf);
}

/// An envelope's own handles.
fn own_handles(env: &Envelope) -> Received<'_> {
    Received {
        reply: env.reply,
        attachments: &env.attachments,
        stream: env.stream,
    }
}

/// Appends the frame of `Event::Message(env)`.
fn encode_envelope_frame_into(env: &Envelope, buf: &mut Vec<u8>) {
    encode_message_event_into(env, &own_handles(env), buf);
}

/// The frame `next` hands a guest for `event` (what [`encode_event_into`] appends).
pub fn encode_event(event: &Event) -> Vec<u8> {
    let mut buf = Vec::new();
    encode_event_into(event, &mut buf);
    buf
}

/// The handles a receiving instance issues for an envelope it shares with other receivers (a
/// published message's subscribers): they take the place of the envelope's own `reply`,
/// `attachments` and `stream` in what that instance is handed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Received<'a> {
    /// The receiver's reply handle, when the sender awaits a reply.
    pub reply: Option<u32>,
    /// The receiver's handles for the references that came with the message.
    pub attachments: &'a [u32],
    /// The receiver's handle to read the stream the message opens.
    pub stream: Option<u32>,
}

/// Appends the frame of `Event::Message` for `env` as one receiver sees it: the bytes
/// [`encode_event_into`] gives for a copy of `env` whose `reply`, `attachments` and `stream`
/// are `received`'s. The host shares one envelope between the subscribers of a publish and
/// encodes each one's handles this way, without copying the envelope.
pub fn encode_message_event_into(env: &Envelope, received: &Received<'_>, buf: &mut Vec<u8>) {
    let start = buf.len();
    let (h, fixed) = frame_header(env, received);
    buf.reserve(fixed);
    buf.extend_from_slice(&h);
    for field in frame_texts(env) {
        buf.extend_from_slice(field);
    }
    if has_extras(env, received) {
        let at = buf.len();
        put_varints(buf, env.chain.iter().copied());
        put_varints(buf, received.attachments.iter().map(|&h| u64::from(h)));
        put_exts(buf, &env.ext);
        let extras = len32(buf.len() - at);
        buf[start + 44..start + 48].copy_from_slice(&extras);
    }
    buf.extend_from_slice(&env.payload);
}

/// The frame [`encode_message_event_into`] appends for `env` and `received`, ready to be written
/// into a buffer of exactly its length ([`PlainFrame::write`]): for a message without extras (no
/// call chain, attachments or extension entries, as most messages). `None` when it has extras.
pub fn plain_frame<'a>(env: &'a Envelope, received: &Received<'_>) -> Option<PlainFrame<'a>> {
    if has_extras(env, received) {
        return None;
    }
    let (header, len) = frame_header(env, received);
    Some(PlainFrame { env, header, len })
}

/// Whether the frame of `env` as `received` sees it has extras: a call chain, attachments or
/// extension entries.
#[inline(always)]
fn has_extras(env: &Envelope, received: &Received<'_>) -> bool {
    !(env.chain.is_empty() && received.attachments.is_empty() && env.ext.is_empty())
}

/// A message frame without extras, its header made ([`plain_frame`]).
#[derive(Debug)]
pub struct PlainFrame<'a> {
    env: &'a Envelope,
    header: [u8; MESSAGE_HEADER],
    len: usize,
}

// A frame is never empty (it has its header): no `is_empty` to go with `len`.
#[allow(clippy::len_without_is_empty)]
impl PlainFrame<'_> {
    /// The frame's length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Writes the frame into `dest`, straight into the receiver's buffer (in guest memory), with
    /// no copy in between.
    ///
    /// # Panics
    ///
    /// When `dest` is not [`len`](Self::len) bytes long.
    pub fn write(&self, dest: &mut [u8]) {
        assert_eq!(
            dest.len(),
            self.len,
            "a frame written into a buffer of another length"
        );
        let (head, mut rest) = dest.split_at_mut(MESSAGE_HEADER);
        head.copy_from_slice(&self.header);
        for field in frame_texts(self.env) {
            let (to, after) = rest.split_at_mut(field.len());
            to.copy_from_slice(field);
            rest = after;
        }
        rest.copy_from_slice(&self.env.payload);
    }
}

/// A message frame's fixed header with every length but the extras' (zero), and the frame's
/// length without extras.
#[inline(always)]
fn frame_header(env: &Envelope, received: &Received<'_>) -> ([u8; MESSAGE_HEADER], usize) {
    let (trace, sender, subject, key) = (
        env.trace.is_some(),
        env.sender.as_deref(),
        env.subject.as_deref(),
        env.idempotency_key.as_deref(),
    );
    let flags = [
        (received.reply.is_some(), frame::REPLY),
        (env.deadline_ms.is_some(), frame::DEADLINE),
        (trace, frame::TRACE),
        (sender.is_some(), frame::SENDER),
        (subject.is_some(), frame::SUBJECT),
        (key.is_some(), frame::IDEMPOTENCY_KEY),
        (received.stream.is_some(), frame::STREAM),
    ]
    .into_iter()
    .fold(
        0,
        |flags, (present, bit)| if present { flags | bit } else { flags },
    );
    let mut h = [0u8; MESSAGE_HEADER];
    h[0] = MESSAGE;
    h[1] = codec_byte(env.codec);
    h[2..4].copy_from_slice(&flags.to_le_bytes());
    h[4..8].copy_from_slice(&received.reply.unwrap_or(0).to_le_bytes());
    h[8..16].copy_from_slice(&env.id.to_le_bytes());
    h[16..24].copy_from_slice(&env.deadline_ms.unwrap_or(0).to_le_bytes());
    h[24..28].copy_from_slice(&received.stream.unwrap_or(0).to_le_bytes());
    h[28..32].copy_from_slice(&len32(env.msg_type.len()));
    h[32..36].copy_from_slice(&len32(text(sender).len()));
    h[36..40].copy_from_slice(&len32(text(subject).len()));
    h[40..44].copy_from_slice(&len32(text(key).len()));
    // 44..48: the extras' length, zero unless the caller writes extras.
    h[48..52].copy_from_slice(&len32(env.payload.len()));
    let len = MESSAGE_HEADER
        + if trace { TRACE_BYTES } else { 0 }
        + env.msg_type.len()
        + text(sender).len()
        + text(subject).len()
        + text(key).len()
        + env.payload.len();
    (h, len)
}

/// The variable fields of a message frame before its extras, in order: the trace (when
/// present; empty otherwise), the type, the sender, the subject and the idempotency key.
#[inline(always)]
fn frame_texts(env: &Envelope) -> [&[u8]; 6] {
    let (trace_id, span_id): (&[u8], &[u8]) = match &env.trace {
        Some(t) => (&t.trace_id, &t.span_id),
        None => (&[], &[]),
    };
    [
        trace_id,
        span_id,
        env.msg_type.as_bytes(),
        text(env.sender.as_deref()),
        text(env.subject.as_deref()),
        text(env.idempotency_key.as_deref()),
    ]
}

/// An optional text's bytes (none when absent).
#[inline(always)]
fn text(s: Option<&str>) -> &[u8] {
    s.map_or(&[], str::as_bytes)
}

/// A field's length as the frame holds it.
#[inline(always)]
fn len32(len: usize) -> [u8; 4] {
    u32::try_from(len)
        .expect("a message field of 4 GiB or more")
        .to_le_bytes()
}

/// The event tag of a message: its `Event` variant index, the frame's first byte.
const MESSAGE: u8 = 1;

/// The bytes of a [`TraceContext`] in a message frame.
const TRACE_BYTES: usize = 24;

/// The size of a message frame's fixed header (ABI 6).
///
/// `next` hands a guest every event as its postcard bytes except a message, the event of every
/// handler call, which is framed so that a guest reads it at fixed offsets instead of decoding
/// fifteen varints and tags one after another. All integers are little-endian:
///
/// | bytes | field |
/// |---|---|
/// | 0 | `1` (the `Event::Message` tag) |
/// | 1 | codec: `0` postcard, `1` JSON |
/// | 2..4 | flags, `u16`: which optional fields are present (`1` reply, `2` deadline, `4` trace, `8` sender, `16` subject, `32` idempotency key, `64` stream); other bits are `0` |
/// | 4..8 | reply handle, `u32` (`0` when absent) |
/// | 8..16 | message id, `u64` |
/// | 16..24 | deadline in ms, `u64` (`0` when absent) |
/// | 24..28 | stream handle, `u32` (`0` when absent) |
/// | 28..32 | length of the message type name, `u32` |
/// | 32..36 | length of the sender, `u32` (`0` when absent) |
/// | 36..40 | length of the subject, `u32` (`0` when absent) |
/// | 40..44 | length of the idempotency key, `u32` (`0` when absent) |
/// | 44..48 | length of the extras, `u32`: `0` when the chain, the attachments and the extensions are all empty |
/// | 48..52 | length of the payload, `u32` |
///
/// Then, in order and without gaps: the trace (16 bytes of trace id, 8 of span id) when
/// flagged, the type name, the sender, the subject, the idempotency key (UTF-8 text), the
/// extras (the chain, the attachments and the extensions, each as postcard encodes the
/// envelope's field), and the payload, which ends the frame.
pub const MESSAGE_HEADER: usize = 52;

/// The flag bits of a message frame ([`MESSAGE_HEADER`]).
mod frame {
    pub(super) const REPLY: u16 = 1;
    pub(super) const DEADLINE: u16 = 2;
    pub(super) const TRACE: u16 = 4;
    pub(super) const SENDER: u16 = 8;
    pub(super) const SUBJECT: u16 = 16;
    pub(super) const IDEMPOTENCY_KEY: u16 = 32;
    pub(super) const STREAM: u16 = 64;
    pub(super) const ALL: u16 = 127;
}

fn encode_received_into(env: &Envelope, received: &Received<'_>, buf: &mut Vec<u8>) {
    put_varint(buf, env.id);
    put_bytes(buf, env.msg_type.as_bytes());
    put_codec(buf, env.codec);
    put_opt_varint(buf, received.reply.map(u64::from));
    put_opt_varint(buf, env.deadline_ms);
    put_varints(buf, env.chain.iter().copied());
    match &env.trace {
        Some(trace) => {
            buf.push(1);
            buf.extend_from_slice(&trace.trace_id);
            buf.extend_from_slice(&trace.span_id);
        }
        None => buf.push(0),
    }
    put_opt_str(buf, env.sender.as_deref());
    put_opt_str(buf, env.subject.as_deref());
    put_opt_str(buf, env.idempotency_key.as_deref());
    put_varints(buf, received.attachments.iter().map(|&h| u64::from(h)));
    put_exts(buf, &env.ext);
    put_bytes(buf, &env.payload);
    put_opt_varint(buf, received.stream.map(u64::from));
}

/// Appends the frame of `event` that `next` hands a guest: what [`encode`](crate::encode) gives
/// (without serde) for every kind but a message, which is framed as [`MESSAGE_HEADER`] says. The
/// host encodes one per event handed to a guest.
pub fn encode_event_into(event: &Event, buf: &mut Vec<u8>) {
    match event {
        Event::Start {
            name,
            instance,
            config,
        } => {
            buf.push(0);
            put_bytes(buf, name.as_bytes());
            put_varint(buf, u64::from(*instance));
            put_bytes(buf, config);
        }
        Event::Message(env) => encode_envelope_frame_into(env, buf),
        Event::Completion { op, result } => {
            buf.push(2);
            put_varint(buf, u64::from(*op));
            match result {
                Completion::Done => buf.push(0),
                Completion::Reply(ReplyBody::Ok { codec, payload }) => {
                    buf.extend_from_slice(&[1, 0]);
                    put_codec(buf, *codec);
                    put_bytes(buf, payload);
                }
                Completion::Reply(ReplyBody::Error { code, message }) => {
                    buf.extend_from_slice(&[1, 1]);
                    put_error_code(buf, *code);
                    put_bytes(buf, message.as_bytes());
                }
                Completion::Failed(code) => {
                    buf.push(2);
                    put_error_code(buf, *code);
                }
            }
        }
        Event::Stop => buf.push(3),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn short_ascii_agrees_with_is_ascii_at_every_length_and_position() {
        for len in 0..=SHORT_TEXT {
            let text = vec![b'a'; len];
            assert!(short_ascii(&text), "{len} ASCII bytes");
            for at in 0..len {
                for high in [0x80, 0xC3, 0xFF] {
                    let mut bytes = text.clone();
                    bytes[at] = high;
                    assert_eq!(
                        short_ascii(&bytes),
                        bytes.is_ascii(),
                        "{len} bytes, {high:#x} at {at}"
                    );
                }
            }
        }
    }
}
