//! Durable reminders ([`Ctx::remind`], [`Ctx::remind_every`], [`Ctx::cancel_reminder`]) and the
//! actor's status line ([`Ctx::set_status`]).
//!
//! A reminder is a timer the host keeps in its store, by actor address and name, instead of in
//! the instance: it survives the instance (a failure, a stop, a deactivation) and a host
//! restart, and when it comes due the host delivers its message to the address, activating a
//! virtual actor that is not running. The message arrives like any other, from the sender
//! [`REMINDER_SENDER`] (`bunraku.reminder`), dispatched to the handler for its type. Setting a
//! reminder under a name the actor already uses replaces it. Use a [timer](Ctx::after) for
//! what only matters while the instance runs (a retry in a second); use a reminder for what
//! must happen even if nobody is running then (close the auction on Friday, expire the
//! reservation tomorrow). Reminders need the `timers` grant; their periods are at least one
//! second.
//!
//! ```
//! use bunraku_sdk::prelude::*;
//! use bunraku_sdk::testing::TestActor;
//!
//! #[derive(Serialize, Deserialize, Message)]
//! #[message(reply = Result<(), String>)]
//! struct Reserve { seats: u32 }
//!
//! #[derive(Serialize, Deserialize, Message)]
//! struct Expire {}
//!
//! #[derive(Default)]
//! struct Reservation { seats: u32 }
//!
//! #[actor]
//! impl Reservation {
//!     #[handler]
//!     async fn reserve(&mut self, ctx: &Ctx, msg: Reserve) -> Result<(), String> {
//!         self.seats = msg.seats;
//!         // Fires even if this actor was deactivated or the host restarted meanwhile.
//!         let day = Duration::from_secs(24 * 3600);
//!         ctx.remind("expire", day, &Expire {}).await.map_err(|e| e.to_string())?;
//!         ctx.set_status(&format!("holding {} seats", msg.seats)).map_err(|e| e.to_string())
//!     }
//!
//!     #[handler]
//!     async fn expire(&mut self, ctx: &Ctx, _msg: Expire) {
//!         assert_eq!(ctx.sender(), Some("bunraku.reminder"));
//!         self.seats = 0;
//!         let _ = ctx.set_status("");
//!     }
//! }
//!
//! let mut r = TestActor::<Reservation>::start_default();
//! r.call(&Reserve { seats: 2 }).unwrap().unwrap();
//! assert_eq!(r.reminders()[0].name, "expire");
//! assert_eq!(r.reminders()[0].delay, Duration::from_secs(86_400));
//! assert_eq!(r.status(), "holding 2 seats");
//! // The test decides when time passes.
//! r.fire_reminder("expire");
//! assert_eq!(r.actor().seats, 0);
//! assert!(r.reminders().is_empty(), "a one-shot reminder is gone once fired");
//! assert_eq!(r.status(), "");
//! ```

use std::time::Duration;

use bunraku_abi::{Codec, ErrorCode, Reminder, decode_result};

use crate::ctx::delivered;
use crate::{Ctx, Error, Message, codec, sys};

/// The sender of the messages reminders deliver ([`Ctx::sender`]).
#[cfg_attr(
    target_arch = "wasm32",
    allow(
        dead_code,
        reason = "read by the native test host; public once re-exported"
    )
)]
pub const REMINDER_SENDER: &str = "bunraku.reminder";

/// The shortest period of a periodic reminder.
const MIN_PERIOD: Duration = Duration::from_secs(1);

impl Ctx {
    /// Delivers `msg` to this actor's address once, after `delay` (rounded up to milliseconds),
    /// even if the instance has ended or the host restarted meanwhile (a virtual actor is
    /// activated for it); a reminder with the same `name` is replaced. The message arrives from
    /// the sender `bunraku.reminder`. Completes once the reminder is stored. See the
    /// [`testing`](crate::testing) harness's `reminders` and `fire_reminder` for tests.
    ///
    /// Errors: [`ErrorCode::StorageUnavailable`] (the host has no store, or it failed: the
    /// reminder may not be set), [`ErrorCode::Denied`] (no `timers` grant),
    /// [`ErrorCode::UnknownType`] (the actor has no handler for `M`), [`ErrorCode::Invalid`] (a
    /// name that is empty or over 256 bytes), [`ErrorCode::TooLarge`],
    /// [`ErrorCode::Malformed`] (`msg` does not encode).
    pub async fn remind<M: Message>(
        &self,
        name: &str,
        delay: Duration,
        msg: &M,
    ) -> Result<(), Error> {
        set(name, delay, None, msg).await
    }

    /// Delivers `msg` to this actor's address every `period` (rounded up to milliseconds, at
    /// least one second), the first time one period from now, until
    /// [`cancel_reminder`](Ctx::cancel_reminder); durable like [`remind`](Ctx::remind), and a
    /// reminder with the same `name` is replaced. Firings that come due while the actor is busy
    /// are merged, not queued up.
    ///
    /// Errors: as [`remind`](Ctx::remind), and [`ErrorCode::Invalid`] for a period under one
    /// second.
    pub async fn remind_every<M: Message>(
        &self,
        name: &str,
        period: Duration,
        msg: &M,
    ) -> Result<(), Error> {
        if period < MIN_PERIOD {
            return Err(Error::new(
                ErrorCode::Invalid,
                format!("reminder `{name}`: a period of {period:?} is under one second"),
            ));
        }
        set(name, period, Some(millis(period)), msg).await
    }

    /// Cancels reminder `name`: `true` once the cancellation is stored, `false` when the actor
    /// has no reminder of that name (a one-shot reminder that fired is gone).
    ///
    /// Errors: [`ErrorCode::StorageUnavailable`], [`ErrorCode::Denied`].
    pub async fn cancel_reminder(&self, name: &str) -> Result<bool, Error> {
        match delivered(sys::reminder_cancel(name.as_bytes())).await {
            Ok(()) => Ok(true),
            Err(e) if e.code() == ErrorCode::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Sets the status this actor shows in `bunraku ps`, such as `"waiting for payment"`; an
    /// empty status clears it. An actor with a status is not deactivated for being idle, so a
    /// virtual actor in the middle of something stays up; clear it when done.
    ///
    /// Errors: [`ErrorCode::TooLarge`] past [`MAX_STATUS_BYTES`](bunraku_abi::MAX_STATUS_BYTES)
    /// bytes.
    pub fn set_status(&self, status: &str) -> Result<(), Error> {
        if status.len() > bunraku_abi::MAX_STATUS_BYTES {
            return Err(Error::new(
                ErrorCode::TooLarge,
                format!(
                    "a status of {} bytes; at most {}",
                    status.len(),
                    bunraku_abi::MAX_STATUS_BYTES
                ),
            ));
        }
        decode_result(sys::set_status(status.as_bytes()))?;
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

async fn set<M: Message>(
    name: &str,
    delay: Duration,
    period_ms: Option<u64>,
    msg: &M,
) -> Result<(), Error> {
    if name.is_empty() {
        return Err(Error::new(ErrorCode::Invalid, "a reminder needs a name"));
    }
    let payload = codec::encode(Codec::Postcard, msg).map_err(|e| {
        Error::new(
            ErrorCode::Malformed,
            format!("`{}` does not encode: {e}", M::NAME),
        )
    })?;
    let reminder = Reminder {
        name: name.to_owned(),
        msg_type: M::NAME.to_owned(),
        codec: Codec::Postcard,
        payload,
        delay_ms: millis(delay),
        period_ms,
    };
    let raw = sys::reminder_set(&bunraku_abi::encode(&reminder));
    delivered(raw).await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde::{Deserialize, Serialize};

    use crate::testing::{EventLog, TestActor};
    use crate::{Ctx, ErrorCode, Message, actor};

    #[derive(Serialize, Deserialize, Message)]
    #[message(reply = Result<(), ErrorCode>)]
    struct Every {
        name: String,
        ms: u64,
    }

    #[derive(Serialize, Deserialize, Message)]
    #[message(reply = Result<bool, ErrorCode>)]
    struct Cancel(String);

    #[derive(Serialize, Deserialize, Message)]
    #[message(reply = Result<(), ErrorCode>)]
    struct Status(String);

    #[derive(Serialize, Deserialize, Message)]
    struct Beat(u32);

    #[derive(Default)]
    struct Pulse {
        beats: Vec<(u32, Option<String>)>,
    }

    #[actor]
    impl Pulse {
        #[handler]
        async fn every(&mut self, ctx: &Ctx, msg: Every) -> Result<(), ErrorCode> {
            let period = Duration::from_millis(msg.ms);
            let beat = Beat(self.beats.len() as u32);
            ctx.remind_every(&msg.name, period, &beat)
                .await
                .map_err(|e| e.code())
        }

        #[handler]
        async fn cancel(&mut self, ctx: &Ctx, msg: Cancel) -> Result<bool, ErrorCode> {
            ctx.cancel_reminder(&msg.0).await.map_err(|e| e.code())
        }

        #[handler]
        async fn status(&mut self, ctx: &Ctx, msg: Status) -> Result<(), ErrorCode> {
            ctx.set_status(&msg.0).map_err(|e| e.code())
        }

        #[handler]
        async fn beat(&mut self, ctx: &Ctx, msg: Beat) {
            self.beats.push((msg.0, ctx.sender().map(str::to_owned)));
        }
    }

    fn every(name: &str, ms: u64) -> Every {
        Every {
            name: name.into(),
            ms,
        }
    }

    #[test]
    fn a_periodic_reminder_fires_until_cancelled() {
        let mut t = TestActor::<Pulse>::start_default();
        t.call(&every("pulse", 1500)).unwrap().unwrap();
        let set = &t.reminders()[0];
        assert_eq!(set.period, Some(Duration::from_millis(1500)));
        assert_eq!(set.delay, Duration::from_millis(1500));
        t.fire_reminder("pulse");
        t.fire_reminder("pulse");
        let sender = Some(super::REMINDER_SENDER.to_owned());
        assert_eq!(t.actor().beats, [(0, sender.clone()), (0, sender)]);
        assert_eq!(t.call(&Cancel("pulse".into())).unwrap(), Ok(true));
        assert_eq!(t.call(&Cancel("pulse".into())).unwrap(), Ok(false));
        assert!(t.reminders().is_empty());
    }

    #[test]
    fn a_reminder_with_the_same_name_replaces_the_earlier_one() {
        let mut t = TestActor::<Pulse>::start_default();
        t.call(&every("pulse", 1000)).unwrap().unwrap();
        t.call(&every("pulse", 5000)).unwrap().unwrap();
        let reminders = t.reminders();
        assert_eq!(reminders.len(), 1);
        assert_eq!(reminders[0].period, Some(Duration::from_secs(5)));
    }

    #[test]
    fn a_period_under_a_second_is_invalid() {
        let mut t = TestActor::<Pulse>::start_default();
        assert_eq!(
            t.call(&every("fast", 999)).unwrap(),
            Err(ErrorCode::Invalid)
        );
        assert!(t.reminders().is_empty());
    }

    #[test]
    fn reminders_outlive_the_instance_that_set_them() {
        let log = EventLog::new();
        let mut first = TestActor::<Pulse>::builder()
            .name("pulse/a")
            .events(log.clone())
            .start_default();
        first.call(&every("pulse", 2000)).unwrap().unwrap();
        drop(first);
        let mut next = TestActor::<Pulse>::builder()
            .name("pulse/a")
            .events(log)
            .start_default();
        assert_eq!(next.reminders().len(), 1);
        next.fire_reminder("pulse");
        assert_eq!(next.actor().beats.len(), 1);
    }

    #[test]
    fn an_unavailable_store_fails_reminders() {
        let mut t = TestActor::<Pulse>::builder()
            .storage_unavailable(true)
            .start_default();
        assert_eq!(
            t.call(&every("pulse", 1000)).unwrap(),
            Err(ErrorCode::StorageUnavailable)
        );
        assert_eq!(
            t.call(&Cancel("pulse".into())).unwrap(),
            Err(ErrorCode::StorageUnavailable)
        );
    }

    #[test]
    fn a_status_is_shown_until_cleared_and_has_a_size_limit() {
        let mut t = TestActor::<Pulse>::start_default();
        t.call(&Status("busy".into())).unwrap().unwrap();
        assert_eq!(t.status(), "busy");
        let long = "x".repeat(bunraku_abi::MAX_STATUS_BYTES + 1);
        assert_eq!(t.call(&Status(long)).unwrap(), Err(ErrorCode::TooLarge));
        assert_eq!(t.status(), "busy");
        t.call(&Status(String::new())).unwrap().unwrap();
        assert_eq!(t.status(), "");
    }
}
