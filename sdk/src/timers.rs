//! Timers: [`Ctx::after`] and [`Ctx::every`] send this actor a message later, on the host's
//! clock; [`Ctx::cancel_timer`] stops one.
//!
//! A timer's message arrives like any other message (its sender is the actor itself) and is
//! dispatched to the handler for its type, under the actor's concurrency. Timers belong to the
//! instance: they end when it stops, fails or is deactivated, and their firings do not count as
//! activity for a virtual actor's idle timeout (durable reminders come with event sourcing). A
//! periodic timer never queues up: while one firing waits to be handled, later ones are merged
//! into it. Setting timers needs the `timers` grant.
//!
//! ```
//! use bunraku_sdk::prelude::*;
//! use bunraku_sdk::testing::TestActor;
//!
//! #[derive(Serialize, Deserialize, Message)]
//! struct Start {}
//!
//! #[derive(Serialize, Deserialize, Message)]
//! struct Tick {}
//!
//! #[derive(Default)]
//! struct Heartbeat {
//!     beats: u64,
//!     timer: Option<TimerId>,
//! }
//!
//! #[actor]
//! impl Heartbeat {
//!     #[handler]
//!     async fn start(&mut self, ctx: &Ctx, _msg: Start) {
//!         self.timer = ctx.every(Duration::from_secs(1), &Tick {}).ok();
//!     }
//!
//!     #[handler]
//!     async fn tick(&mut self, ctx: &Ctx, _msg: Tick) {
//!         self.beats += 1;
//!         if self.beats == 3 {
//!             if let Some(timer) = self.timer.take() {
//!                 let _ = ctx.cancel_timer(timer);
//!             }
//!         }
//!     }
//! }
//!
//! let mut beat = TestActor::<Heartbeat>::start_default();
//! beat.send(&Start {}).unwrap();
//! let (timer, set) = beat.timers()[0].clone();
//! assert_eq!(set.period, Some(Duration::from_secs(1)));
//! for _ in 0..3 {
//!     beat.fire_timer(timer);
//! }
//! assert_eq!(beat.actor().beats, 3);
//! assert!(beat.timers().is_empty(), "cancelled after the third beat");
//! ```

use std::time::Duration;

use bunraku_abi::{Codec, ErrorCode, Timer, decode_result};

use crate::{Ctx, Error, Message, codec, sys};

/// A timer set with [`Ctx::after`] or [`Ctx::every`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimerId(pub(crate) u64);

impl TimerId {
    /// The host's id.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl Ctx {
    /// Sends `msg` to this actor once, after `delay` (rounded up to milliseconds).
    /// [`ErrorCode::UnknownType`] when the actor has no handler for `M`.
    pub fn after<M: Message>(&self, delay: Duration, msg: &M) -> Result<TimerId, Error> {
        set(delay, None, msg)
    }

    /// Sends `msg` to this actor every `period` (rounded up to milliseconds, at least 1 ms),
    /// the first time one period from now, until the timer is cancelled or the instance ends.
    pub fn every<M: Message>(&self, period: Duration, msg: &M) -> Result<TimerId, Error> {
        set(period, Some(millis(period).max(1)), msg)
    }

    /// Waits `duration` (rounded up to milliseconds) on the host's clock; other handlers run
    /// meanwhile. Needs the `timers` grant. Natively ([`testing`](crate::testing)) it returns at
    /// once.
    pub async fn sleep(&self, duration: Duration) -> Result<(), Error> {
        let raw = sys::sleep(millis(duration));
        crate::ctx::delivered(raw).await
    }

    /// Cancels a timer: it does not fire again. [`ErrorCode::Invalid`] for a timer this
    /// instance does not hold (a one-shot timer that already fired).
    pub fn cancel_timer(&self, timer: TimerId) -> Result<(), Error> {
        decode_result(sys::timer_cancel(timer.0))?;
        Ok(())
    }
}

/// Milliseconds, rounded up.
fn millis(d: Duration) -> u64 {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if Duration::from_millis(ms) < d {
        ms.saturating_add(1)
    } else {
        ms
    }
}

fn set<M: Message>(delay: Duration, period_ms: Option<u64>, msg: &M) -> Result<TimerId, Error> {
    let payload = codec::encode(Codec::Postcard, msg).map_err(|e| {
        Error::new(
            ErrorCode::Malformed,
            format!("`{}` does not encode: {e}", M::NAME),
        )
    })?;
    let timer = Timer {
        msg_type: M::NAME.to_owned(),
        codec: Codec::Postcard,
        payload,
        delay_ms: millis(delay),
        period_ms,
    };
    let id = decode_result(sys::timer_set(&bunraku_abi::encode(&timer)))?;
    Ok(TimerId(id))
}
