//! Streams: an ordered flow of items from one actor instance to another, with credit-based flow
//! control.
//!
//! A [`Stream`] is shared by its two [`Endpoint`]s, each in the handle table of one instance
//! (`ActorState::streams`). The writer may have at most `window` items in the stream that the
//! reader has not taken yet (the reader's `limits.stream_window`): that is its credit, and the
//! most the host ever buffers for the stream. A writer without credit waits (an operation that
//! completes when the reader takes items), so a producer faster than its consumer is slowed to
//! it and nothing is dropped. Items cross the guest boundary in batches: the writer hands over
//! a batch per call, the reader takes as many as fit its buffer per call.
//!
//! Endings are typed. The writer closes (the reader gets every item, then `closed`) or aborts
//! (`aborted` after the items written); the reader may stop reading (the writer gets `closed`).
//! An endpoint dropped without ending, because its instance trapped, stopped or was deactivated,
//! ends the stream with `peer failed` for the other side, so neither side ever waits forever.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bunraku_abi::ErrorCode;
use tokio::sync::Notify;

/// Where a stream is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// The writer closed it: the reader drains the queue, then gets `closed`.
    Closed,
    /// The writer aborted it.
    Aborted,
    /// The writer's instance ended without ending the stream.
    WriterFailed,
    /// The reader stopped reading.
    ReaderGone,
    /// The reader's instance ended without ending the stream.
    ReaderFailed,
}

struct Inner {
    queue: VecDeque<Vec<u8>>,
    state: State,
}

/// One stream, shared by its writer and its reader.
pub(crate) struct Stream {
    inner: Mutex<Inner>,
    window: usize,
    /// Woken when the reader may have something: items or an end.
    reader: Notify,
    /// Woken when the writer may have credit, or the reader is gone.
    writer: Notify,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.inner.lock().unwrap();
        f.debug_struct("Stream")
            .field("state", &inner.state)
            .field("queued", &inner.queue.len())
            .field("window", &self.window)
            .finish()
    }
}

/// What a read found.
pub(crate) enum Read {
    /// Items, in order (at least one).
    Items(Vec<Vec<u8>>),
    /// Nothing yet.
    Empty,
    /// The first item is larger than the room offered: its encoded size.
    TooSmall(usize),
}

impl Stream {
    /// A new open stream with `window` items of credit.
    pub(crate) fn new(window: usize) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner {
                queue: VecDeque::new(),
                state: State::Open,
            }),
            window: window.max(1),
            reader: Notify::new(),
            writer: Notify::new(),
        })
    }

    /// The writer's credit, or why it may not write.
    pub(crate) fn credit(&self) -> Result<usize, ErrorCode> {
        let inner = self.inner.lock().unwrap();
        match inner.state {
            State::Open => Ok(self.window - inner.queue.len()),
            State::ReaderGone => Err(ErrorCode::Closed),
            State::ReaderFailed => Err(ErrorCode::PeerFailed),
            // The writer ended it: its handle is gone, so this is not reached.
            State::Closed | State::Aborted | State::WriterFailed => Err(ErrorCode::Invalid),
        }
    }

    /// Queues a batch within the credit; the credit left.
    pub(crate) fn write(&self, items: Vec<Vec<u8>>) -> Result<usize, ErrorCode> {
        let left = {
            let mut inner = self.inner.lock().unwrap();
            let credit = match inner.state {
                State::Open => self.window - inner.queue.len(),
                _ => {
                    drop(inner);
                    return self.credit();
                }
            };
            if items.len() > credit {
                return Err(ErrorCode::Invalid);
            }
            inner.queue.extend(items);
            self.window - inner.queue.len()
        };
        self.reader.notify_waiters();
        Ok(left)
    }

    /// Takes as many whole items as fit in `room` bytes of their encoding (see
    /// [`encode_items`]), or the end.
    pub(crate) fn read(&self, room: usize) -> Result<Read, ErrorCode> {
        let taken = {
            let mut inner = self.inner.lock().unwrap();
            if inner.queue.is_empty() {
                return match inner.state {
                    State::Open => Ok(Read::Empty),
                    State::Closed => Err(ErrorCode::Closed),
                    State::Aborted => Err(ErrorCode::Aborted),
                    State::WriterFailed => Err(ErrorCode::PeerFailed),
                    State::ReaderGone | State::ReaderFailed => Err(ErrorCode::Invalid),
                };
            }
            let mut size = varint_len(inner.queue.len() as u64);
            let mut n = 0;
            for item in &inner.queue {
                let more = varint_len(item.len() as u64) + item.len();
                if size + more > room {
                    break;
                }
                size += more;
                n += 1;
            }
            if n == 0 {
                let first = &inner.queue[0];
                return Ok(Read::TooSmall(
                    1 + varint_len(first.len() as u64) + first.len(),
                ));
            }
            inner.queue.drain(..n).collect::<Vec<_>>()
        };
        self.writer.notify_waiters();
        Ok(Read::Items(taken))
    }

    /// Waits until the writer has credit or the reader is gone.
    pub(crate) async fn writable(&self) {
        loop {
            let notified = self.writer.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let inner = self.inner.lock().unwrap();
                if inner.state != State::Open || inner.queue.len() < self.window {
                    return;
                }
            }
            notified.await;
        }
    }

    /// Waits until the reader has items or an end.
    pub(crate) async fn readable(&self) {
        loop {
            let notified = self.reader.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let inner = self.inner.lock().unwrap();
                if inner.state != State::Open || !inner.queue.is_empty() {
                    return;
                }
            }
            notified.await;
        }
    }

    /// Ends the stream from one side, unless it has ended already; wakes the other side.
    fn end(&self, state: State) {
        {
            let mut inner = self.inner.lock().unwrap();
            if inner.state != State::Open {
                return;
            }
            inner.state = state;
            if matches!(state, State::ReaderGone | State::ReaderFailed) {
                inner.queue.clear();
            }
        }
        self.reader.notify_waiters();
        self.writer.notify_waiters();
    }
}

/// Encodes items as postcard's `Vec<Vec<u8>>`: a count, then each item's length and bytes.
pub(crate) fn encode_items(items: &[Vec<u8>], buf: &mut Vec<u8>) {
    put_varint(buf, items.len() as u64);
    for item in items {
        put_varint(buf, item.len() as u64);
        buf.extend_from_slice(item);
    }
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    (64 - v.max(1).leading_zeros() as usize).div_ceil(7)
}

/// One side of a stream, in an instance's stream table. Dropping it without [`Endpoint::close`]
/// (the instance ended) fails the stream for the other side.
pub(crate) struct Endpoint {
    pub stream: Arc<Stream>,
    pub writer: bool,
}

impl Endpoint {
    /// Ends this side on purpose: `abort` only matters for a writer.
    pub(crate) fn close(self, abort: bool) {
        let state = match (self.writer, abort) {
            (true, false) => State::Closed,
            (true, true) => State::Aborted,
            (false, _) => State::ReaderGone,
        };
        self.stream.end(state);
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        // A no-op after `close`: the stream has ended already.
        self.stream.end(if self.writer {
            State::WriterFailed
        } else {
            State::ReaderFailed
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(n: u8, len: usize) -> Vec<u8> {
        vec![n; len]
    }

    #[test]
    fn a_writer_gets_the_window_as_credit_and_reading_returns_it() {
        let s = Stream::new(3);
        assert_eq!(s.credit(), Ok(3));
        assert_eq!(s.write(vec![item(1, 1), item(2, 1)]), Ok(1));
        assert_eq!(
            s.write(vec![item(3, 1), item(4, 1)]),
            Err(ErrorCode::Invalid)
        );
        let Ok(Read::Items(items)) = s.read(1024) else {
            panic!("items expected")
        };
        assert_eq!(items, [item(1, 1), item(2, 1)]);
        assert_eq!(s.credit(), Ok(3));
    }

    #[test]
    fn a_read_takes_only_whole_items_that_fit_and_names_the_room_the_first_needs() {
        let s = Stream::new(8);
        s.write(vec![item(1, 10), item(2, 10), item(3, 300)])
            .unwrap();
        // count (1) + 2 × (len 1 + 10) = 23 bytes for the first two.
        let Ok(Read::Items(two)) = s.read(30) else {
            panic!("two items expected")
        };
        assert_eq!(two.len(), 2);
        let mut encoded = Vec::new();
        encode_items(&two, &mut encoded);
        assert_eq!(encoded.len(), 23);
        assert!(matches!(s.read(30), Ok(Read::TooSmall(303))));
    }

    #[test]
    fn endings_reach_the_other_side_after_the_items() {
        let s = Stream::new(4);
        let writer = Endpoint {
            stream: s.clone(),
            writer: true,
        };
        s.write(vec![item(1, 1)]).unwrap();
        writer.close(false);
        assert!(matches!(s.read(64), Ok(Read::Items(_))));
        assert!(matches!(s.read(64), Err(ErrorCode::Closed)));

        let s = Stream::new(4);
        drop(Endpoint {
            stream: s.clone(),
            writer: true,
        });
        assert!(matches!(s.read(64), Err(ErrorCode::PeerFailed)));

        let s = Stream::new(4);
        drop(Endpoint {
            stream: s.clone(),
            writer: false,
        });
        assert_eq!(s.credit(), Err(ErrorCode::PeerFailed));
    }
}
