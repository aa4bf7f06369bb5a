//! Streams: an ordered, typed flow of items from this actor to another, with backpressure.
//!
//! [`Ctx::open_stream`] sends the receiver an opening message (any message type it handles) and
//! returns a [`StreamWriter`]. The receiver's handler for that message takes the
//! [`StreamReader`] with [`Ctx::take_stream`] and reads items in order until the end. Opening a
//! stream needs the same grant as sending to the receiver (or a reference to it).
//!
//! Flow control is credit-based: the writer may be ahead of the reader by at most the
//! receiver's `stream_window` items (manifest `limits.stream_window`, default 256). A writer
//! without credit waits in [`StreamWriter::send`] (the handler is suspended, no thread is held)
//! until the reader takes items, so a fast producer runs at its consumer's pace and nothing is
//! lost. Items written while there is credit are kept in the guest and cross to the host in one
//! batch (at 64 items, when credit runs out, at [`close`](StreamWriter::close), and whenever
//! the actor's turn ends); the reader takes as many queued items as fit its buffer per call.
//!
//! Endings are typed. [`StreamWriter::close`] ends the stream normally: the reader gets every
//! item, then `None`. [`StreamWriter::abort`] (or dropping the writer) ends it with
//! [`ErrorCode::Aborted`]. If either instance traps or stops, the other side gets
//! [`ErrorCode::PeerFailed`]; a reader that stops reading (dropping its reader) makes the
//! writer's next `send` fail with [`ErrorCode::Closed`]. Nobody waits forever.
//!
//! ```
//! use bunraku_sdk::prelude::*;
//!
//! #[derive(Serialize, Deserialize, Message)]
//! struct Readings { sensor: String }
//!
//! #[derive(Serialize, Deserialize, Message)]
//! #[message(reply = u64)]
//! struct Run { to: String, count: u64 }
//!
//! #[derive(Default)]
//! struct Source;
//!
//! #[actor]
//! impl Source {
//!     #[handler]
//!     async fn run(&mut self, ctx: &Ctx, msg: Run) -> u64 {
//!         let open = Readings { sensor: "s1".into() };
//!         let Ok(mut out) = ctx.open_stream::<f64, _>(msg.to.as_str(), &open) else {
//!             return 0;
//!         };
//!         for i in 0..msg.count {
//!             if out.send(&(i as f64)).await.is_err() {
//!                 return i;
//!             }
//!         }
//!         out.close().await.map_or(0, |()| msg.count)
//!     }
//! }
//!
//! #[derive(Default)]
//! struct Sink { sum: f64 }
//!
//! #[actor]
//! impl Sink {
//!     #[handler]
//!     async fn readings(&mut self, ctx: &Ctx, _msg: Readings) {
//!         let Some(mut items) = ctx.take_stream::<f64>() else { return };
//!         while let Some(item) = items.next().await {
//!             match item {
//!                 Ok(v) => self.sum += v,
//!                 Err(e) => return ctx.warn(format_args!("the stream failed: {e}")),
//!             }
//!         }
//!     }
//! }
//!
//! use bunraku_sdk::testing::TestActor;
//! let mut sink = TestActor::<Sink>::start_default();
//! let open = Readings { sensor: "s1".into() };
//! sink.send_stream(&open, &[1.0, 2.0, 3.5], ErrorCode::Closed).unwrap();
//! assert_eq!(sink.actor().sum, 6.5);
//!
//! let mut source = TestActor::<Source>::start_default();
//! assert_eq!(source.call(&Run { to: "sink".into(), count: 3 }).unwrap(), 3);
//! assert_eq!(source.stream_items::<f64>("sink"), [0.0, 1.0, 2.0]);
//! assert_eq!(source.stream_endings("sink"), [Some(false)]);
//! ```

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::marker::PhantomData;

use bunraku_abi::{ErrorCode, decode_result, stream_end};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ctx::outbound;
use crate::executor::Op;
use crate::refs::Address;
use crate::{Ctx, Error, Message, codec, sys};

/// Items a writer keeps before it hands them to the host in one batch.
const FLUSH_AT: usize = 64;

/// The largest read buffer a reader keeps between reads.
const READ_BUFFER: usize = 64 * 1024;

/// Items written and not yet handed to the host, per writer stream: a postcard `Vec<Vec<u8>>`
/// without its count (prepended at flush).
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    count: usize,
}

thread_local! {
    static PENDING: RefCell<BTreeMap<u32, Pending>> = const { RefCell::new(BTreeMap::new()) };
}

/// Hands every writer's pending items to the host: called when the actor's turn ends, so no
/// item waits in the guest while the actor is idle. A failure (the reader is gone) shows at the
/// writer's next call.
pub(crate) fn flush_all() {
    // Most actors write no stream: one look for that, at the end of every turn.
    if PENDING.with(|p| p.borrow().is_empty()) {
        return;
    }
    let ids: Vec<u32> = PENDING.with(|p| p.borrow().keys().copied().collect());
    for id in ids {
        let _ = flush(id);
    }
}

/// Hands stream `id`'s pending items to the host; the credit left.
fn flush(id: u32) -> Result<Option<u64>, Error> {
    let Some(pending) = PENDING.with(|p| p.borrow_mut().remove(&id)) else {
        return Ok(None);
    };
    if pending.count == 0 {
        return Ok(None);
    }
    let mut batch = Vec::with_capacity(pending.bytes.len() + 5);
    put_varint(&mut batch, pending.count as u64);
    batch.extend_from_slice(&pending.bytes);
    Ok(Some(decode_result(sys::stream_write(id, &batch))?))
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Waits for stream `id` to have something for this side.
async fn wait(id: u32) -> Result<(), Error> {
    let op = decode_result(sys::stream_wait(id))?;
    let op = u32::try_from(op)
        .map_err(|_| Error::new(ErrorCode::Internal, format!("bad operation id {op}")))?;
    match Op::new(op).await {
        bunraku_abi::Completion::Failed(code) => Err(code.into()),
        _ => Ok(()),
    }
}

/// The writing side of a stream of `T`. See the [module documentation](self).
#[derive(Debug)]
pub struct StreamWriter<T> {
    id: u32,
    /// Items this writer may still hand over without asking the host (a lower bound).
    credit: u64,
    ended: bool,
    _items: PhantomData<fn(&T)>,
}

impl<T: Serialize> StreamWriter<T> {
    /// Writes one item, waiting while the reader is a full window behind. Errors when the
    /// stream is over for the reader ([`ErrorCode::Closed`], [`ErrorCode::PeerFailed`]) or the
    /// item does not encode.
    pub async fn send(&mut self, item: &T) -> Result<(), Error> {
        while self.credit == 0 {
            if let Some(left) = flush(self.id)? {
                self.credit = left;
                continue;
            }
            self.credit = decode_result(sys::stream_credit(self.id))?;
            if self.credit == 0 {
                wait(self.id).await?;
            }
        }
        let bytes = codec::encode(bunraku_abi::Codec::Postcard, item).map_err(|e| {
            Error::new(
                ErrorCode::Malformed,
                format!("a stream item does not encode: {e}"),
            )
        })?;
        let full = PENDING.with(|p| {
            let mut p = p.borrow_mut();
            let pending = p.entry(self.id).or_default();
            put_varint(&mut pending.bytes, bytes.len() as u64);
            pending.bytes.extend_from_slice(&bytes);
            pending.count += 1;
            pending.count >= FLUSH_AT
        });
        self.credit -= 1;
        if full && let Some(left) = flush(self.id)? {
            self.credit = left;
        }
        Ok(())
    }

    /// Ends the stream normally: the reader gets every item written, then the end.
    pub async fn close(mut self) -> Result<(), Error> {
        self.ended = true;
        let flushed = flush(self.id);
        decode_result(sys::stream_end(self.id, stream_end::CLOSE))?;
        flushed.map(|_| ())
    }

    /// Ends the stream with [`ErrorCode::Aborted`] for the reader, after the items written.
    pub fn abort(mut self) {
        self.ended = true;
        let _ = flush(self.id);
        let _ = sys::stream_end(self.id, stream_end::ABORT);
    }
}

impl<T> Drop for StreamWriter<T> {
    fn drop(&mut self) {
        if !self.ended {
            // Dropped without `close`: the reader learns it was cut short.
            let _ = flush(self.id);
            let _ = sys::stream_end(self.id, stream_end::ABORT);
        }
    }
}

/// The reading side of a stream of `T`. See the [module documentation](self).
#[derive(Debug)]
pub struct StreamReader<T> {
    id: u32,
    items: VecDeque<Vec<u8>>,
    buf: Vec<u8>,
    /// How the stream ended, once it has.
    end: Option<Result<(), ErrorCode>>,
    /// The host's handle was released (at the end, or when the reader is dropped).
    released: bool,
    _items: PhantomData<fn() -> T>,
}

impl<T> StreamReader<T> {
    /// Releases the host's handle: after the end it only frees the table entry; before it,
    /// it tells the writer the reader stopped (`closed`).
    fn release(&mut self) {
        if !self.released {
            self.released = true;
            let _ = sys::stream_end(self.id, stream_end::CLOSE);
        }
    }
}

impl<T: DeserializeOwned> StreamReader<T> {
    /// The next item in order; `None` after the last one of a closed stream; an error when the
    /// writer aborted ([`ErrorCode::Aborted`]) or failed ([`ErrorCode::PeerFailed`]), or an
    /// item does not decode.
    pub async fn next(&mut self) -> Option<Result<T, Error>> {
        loop {
            if let Some(bytes) = self.items.pop_front() {
                return Some(
                    codec::decode(bunraku_abi::Codec::Postcard, &bytes).map_err(|e| {
                        Error::new(
                            ErrorCode::Malformed,
                            format!("a stream item does not decode: {e}"),
                        )
                    }),
                );
            }
            match self.end {
                Some(Ok(())) => return None,
                Some(Err(code)) => {
                    // Reported once.
                    self.end = Some(Ok(()));
                    return Some(Err(code.into()));
                }
                None => {}
            }
            match self.fill() {
                Ok(true) => {}
                Ok(false) => {
                    if let Err(e) = wait(self.id).await {
                        self.end = Some(Err(e.code()));
                    }
                }
                Err(ErrorCode::Closed) => self.end = Some(Ok(())),
                Err(code) => self.end = Some(Err(code)),
            }
            if self.end.is_some() {
                // Over: the handle goes, so a long-lived reader does not run out of them.
                self.release();
            }
        }
    }

    /// Takes queued items from the host; whether there were any.
    fn fill(&mut self) -> Result<bool, ErrorCode> {
        if self.buf.len() < 4096 {
            self.buf.resize(4096, 0);
        }
        loop {
            let len = decode_result(sys::stream_read(self.id, &mut self.buf))? as usize;
            if len == 0 {
                return Ok(false);
            }
            if len > self.buf.len() {
                self.buf.resize(len, 0);
                continue;
            }
            let items: Vec<Vec<u8>> =
                bunraku_abi::decode(&self.buf[..len]).map_err(|_| ErrorCode::Malformed)?;
            self.items.extend(items);
            if self.buf.len() > READ_BUFFER {
                self.buf = Vec::new();
            }
            return Ok(true);
        }
    }
}

impl<T> Drop for StreamReader<T> {
    fn drop(&mut self) {
        // Before the end, this stops reading: the writer's next call gets `closed`.
        self.release();
    }
}

impl Ctx {
    /// Opens a stream of `T` to `to` (a name, or a reference): `open` is delivered to it like
    /// any message, and its handler takes the reader with [`Ctx::take_stream`]. Fails like a
    /// `try_send` of `open` (including [`ErrorCode::MailboxFull`]).
    pub fn open_stream<'a, T, M: Message>(
        &self,
        to: impl Into<Address<'a>>,
        open: &M,
    ) -> Result<StreamWriter<T>, Error> {
        let id = decode_result(outbound(
            to.into(),
            open,
            None,
            &[],
            None,
            sys::stream_open,
        )?)?;
        let id = u32::try_from(id)
            .map_err(|_| Error::new(ErrorCode::Internal, format!("bad stream handle {id}")))?;
        Ok(StreamWriter {
            id,
            credit: 0,
            ended: false,
            _items: PhantomData,
        })
    }

    /// The reader of the stream the message being handled opens, the first time it is asked
    /// for; `None` when the message opens no stream (or it was taken already).
    pub fn take_stream<T>(&self) -> Option<StreamReader<T>> {
        let id = self.take_stream_handle()?;
        Some(StreamReader {
            id,
            items: VecDeque::new(),
            buf: Vec::new(),
            end: None,
            released: false,
            _items: PhantomData,
        })
    }
}

/// A source of items read in order: a [`StreamReader`], or an operator over one
/// ([`Items::map`], [`Items::filter`], [`Items::key_by`]). Operators run in the reading actor, one
/// item at a time, as the items are read; windowed aggregation over keyed items is
/// [`crate::window`].
///
/// ```
/// use bunraku_sdk::prelude::*;
/// use bunraku_sdk::streams::Items;
/// use bunraku_sdk::testing::TestActor;
///
/// #[derive(Serialize, Deserialize, Message)]
/// struct Readings {}
///
/// #[derive(Default)]
/// struct Hottest { per_sensor: std::collections::BTreeMap<String, f64> }
///
/// #[actor]
/// impl Hottest {
///     #[handler]
///     async fn readings(&mut self, ctx: &Ctx, _msg: Readings) {
///         let Some(stream) = ctx.take_stream::<(String, f64)>() else { return };
///         let mut hot = stream
///             .filter(|(_, celsius)| celsius.is_finite())
///             .map(|(sensor, celsius)| (sensor, celsius * 1.8 + 32.0))
///             .key_by(|(sensor, _)| sensor.clone());
///         while let Some(Ok((sensor, (_, fahrenheit)))) = hot.next().await {
///             let max = self.per_sensor.entry(sensor).or_insert(f64::MIN);
///             *max = max.max(fahrenheit);
///         }
///     }
/// }
///
/// let mut actor = TestActor::<Hottest>::start_default();
/// let items = [("a".to_string(), 20.0), ("b".into(), f64::NAN), ("a".into(), 30.0)];
/// actor.send_stream(&Readings {}, &items, ErrorCode::Closed).unwrap();
/// assert_eq!(actor.actor().per_sensor["a"], 86.0);
/// assert!(!actor.actor().per_sensor.contains_key("b"));
/// ```
pub trait Items: Sized {
    /// What each item is.
    type Item;

    /// The next item; `None` at the end; an error when the stream failed (see
    /// [`StreamReader::next`]).
    fn next(&mut self) -> impl std::future::Future<Output = Option<Result<Self::Item, Error>>>;

    /// Each item passed through `f`.
    fn map<U, F: FnMut(Self::Item) -> U>(self, f: F) -> Map<Self, F> {
        Map { inner: self, f }
    }

    /// Only the items for which `keep` is true.
    fn filter<F: FnMut(&Self::Item) -> bool>(self, keep: F) -> Filter<Self, F> {
        Filter { inner: self, keep }
    }

    /// Each item with its key: `(key(&item), item)`.
    fn key_by<K, F: FnMut(&Self::Item) -> K>(self, key: F) -> KeyBy<Self, F> {
        KeyBy { inner: self, key }
    }
}

impl<T: DeserializeOwned> Items for StreamReader<T> {
    type Item = T;

    async fn next(&mut self) -> Option<Result<T, Error>> {
        StreamReader::next(self).await
    }
}

/// See [`Items::map`].
#[derive(Debug)]
pub struct Map<I, F> {
    inner: I,
    f: F,
}

impl<I: Items, U, F: FnMut(I::Item) -> U> Items for Map<I, F> {
    type Item = U;

    async fn next(&mut self) -> Option<Result<U, Error>> {
        Some(self.inner.next().await?.map(&mut self.f))
    }
}

/// See [`Items::filter`].
#[derive(Debug)]
pub struct Filter<I, F> {
    inner: I,
    keep: F,
}

impl<I: Items, F: FnMut(&I::Item) -> bool> Items for Filter<I, F> {
    type Item = I::Item;

    async fn next(&mut self) -> Option<Result<I::Item, Error>> {
        loop {
            match self.inner.next().await? {
                Ok(item) if !(self.keep)(&item) => continue,
                other => return Some(other),
            }
        }
    }
}

/// See [`Items::key_by`].
#[derive(Debug)]
pub struct KeyBy<I, F> {
    inner: I,
    key: F,
}

impl<I: Items, K, F: FnMut(&I::Item) -> K> Items for KeyBy<I, F> {
    type Item = (K, I::Item);

    async fn next(&mut self) -> Option<Result<(K, I::Item), Error>> {
        Some(
            self.inner
                .next()
                .await?
                .map(|item| ((self.key)(&item), item)),
        )
    }
}
