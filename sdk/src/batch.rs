//! [`Batcher`]: collect items and hand them out in batches, when enough are held or when the
//! first of them has waited long enough, whichever comes first.
//!
//! Many small writes become few bulk operations: an actor that receives items one message at a
//! time pushes each into its batcher and does the expensive part (a durable save, a bulk insert,
//! a request to an external system) once per batch. The time bound is a timer
//! ([`Ctx::after`], so the actor needs the `timers` grant) that sends the actor a message of its
//! choosing; its handler calls [`Batcher::on_tick`]. Whatever is held when the actor stops is
//! handed out by [`Batcher::flush`], which `on_stop` should call.
//!
//! ```
//! use bunraku_sdk::prelude::*;
//! use bunraku_sdk::batch::Batcher;
//! use bunraku_sdk::testing::TestActor;
//!
//! #[derive(Serialize, Deserialize, Message)]
//! struct Write { value: u64 }
//!
//! #[derive(Serialize, Deserialize, Message)]
//! struct Flush {}
//!
//! struct Writer {
//!     batcher: Batcher<u64>,
//!     /// Stands for a bulk operation: one entry per batch.
//!     written: Vec<Vec<u64>>,
//! }
//!
//! impl Default for Writer {
//!     fn default() -> Self {
//!         Self { batcher: Batcher::new(3, Duration::from_millis(1)), written: Vec::new() }
//!     }
//! }
//!
//! #[actor]
//! impl Writer {
//!     #[handler]
//!     async fn write(&mut self, ctx: &Ctx, msg: Write) {
//!         match self.batcher.push(ctx, msg.value, &Flush {}) {
//!             Ok(Some(batch)) => self.written.push(batch),
//!             Ok(None) => {}
//!             Err(e) => ctx.error(e),
//!         }
//!     }
//!
//!     #[handler]
//!     async fn flush(&mut self, ctx: &Ctx, _msg: Flush) {
//!         if let Ok(Some(batch)) = self.batcher.on_tick(ctx, &Flush {}) {
//!             self.written.push(batch);
//!         }
//!     }
//!
//!     async fn on_stop(&mut self, ctx: &Ctx) {
//!         let rest = self.batcher.flush(ctx);
//!         if !rest.is_empty() {
//!             self.written.push(rest);
//!         }
//!     }
//! }
//!
//! let mut writer = TestActor::<Writer>::start_default();
//! for value in 1..=4 {
//!     writer.send(&Write { value }).unwrap();
//! }
//! // Three made a full batch; the fourth waits for its timer.
//! assert_eq!(writer.actor().written, [vec![1, 2, 3]]);
//! let (timer, _) = writer.timers()[0].clone();
//! std::thread::sleep(Duration::from_millis(2));
//! writer.fire_timer(timer);
//! assert_eq!(writer.actor().written, [vec![1, 2, 3], vec![4]]);
//! ```

use std::time::{Duration, Instant};

use crate::{Ctx, Error, Message, TimerId};

/// Holds items until `max_items` are there or the first has waited `max_wait`. See the
/// [module documentation](self).
#[derive(Debug)]
pub struct Batcher<T> {
    items: Vec<T>,
    max_items: usize,
    max_wait: Duration,
    /// When the first item of the batch being filled arrived.
    first_at: Option<Instant>,
    /// The timer of the batch being filled.
    timer: Option<TimerId>,
}

impl<T> Batcher<T> {
    /// A batcher that hands out a batch when it holds `max_items` (at least 1) or when its first
    /// item has waited `max_wait`.
    pub fn new(max_items: usize, max_wait: Duration) -> Self {
        Self {
            items: Vec::new(),
            max_items: max_items.max(1),
            max_wait,
            first_at: None,
            timer: None,
        }
    }

    /// Items held.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Adds an item: `Some(batch)` when that makes `max_items`. The first item of a batch sets
    /// a timer that sends `tick` to this actor after `max_wait`; its handler must call
    /// [`on_tick`](Self::on_tick). Errors only when the timer cannot be set (no `timers` grant);
    /// the item is held all the same.
    pub fn push<M: Message>(
        &mut self,
        ctx: &Ctx,
        item: T,
        tick: &M,
    ) -> Result<Option<Vec<T>>, Error> {
        self.items.push(item);
        if self.items.len() >= self.max_items {
            return Ok(Some(self.flush(ctx)));
        }
        if self.first_at.is_none() {
            self.first_at = Some(Instant::now());
            self.timer = Some(ctx.after(self.max_wait, tick)?);
        }
        Ok(None)
    }

    /// For the handler of the `tick` message: `Some(batch)` when the batch's first item has
    /// waited `max_wait`. A tick that belongs to an earlier batch (one that filled up first)
    /// is recognised by the time: the batch keeps waiting for its own.
    pub fn on_tick<M: Message>(&mut self, ctx: &Ctx, tick: &M) -> Result<Option<Vec<T>>, Error> {
        let Some(first) = self.first_at else {
            return Ok(None);
        };
        let waited = first.elapsed();
        if waited >= self.max_wait {
            return Ok(Some(self.flush(ctx)));
        }
        // Early: a tick of an earlier batch. Wait out the rest of this one's time (replacing
        // its timer, so that exactly one stays armed whichever tick this was).
        if let Some(timer) = self.timer.take() {
            let _ = ctx.cancel_timer(timer);
        }
        self.timer = Some(ctx.after(self.max_wait - waited, tick)?);
        Ok(None)
    }

    /// Hands out everything held now (on stop, or before a checkpoint), and drops the timer.
    pub fn flush(&mut self, ctx: &Ctx) -> Vec<T> {
        if let Some(timer) = self.timer.take() {
            // A timer that already fired is gone: nothing to cancel.
            let _ = ctx.cancel_timer(timer);
        }
        self.first_at = None;
        std::mem::replace(&mut self.items, Vec::with_capacity(self.max_items))
    }
}
