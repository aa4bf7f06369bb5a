//! The audit trail: a projection of every account's events, in the order they were committed.
//!
//! A [`Projection`] follows the combined stream of the `account` type from a global position:
//! it catches up on what was committed before (in chunks), then waits for new events. Each batch
//! becomes lines of the trail, and the trail is saved together with the position it reached in
//! one [`Ctx::save`], so a restarted audit resumes exactly after the last line it kept: no line
//! is lost or repeated. The trail keeps the latest [`MAX_LINES`] lines.
//!
//! The projection runs in one long handler ([`Follow`], set off by a timer from `on_start`) that
//! holds the actor only shared (`&self`), so with a `concurrency` above 1 `GetTrail` is answered
//! while it waits. It wakes every `wake_ms` to see whether the actor is stopping, so a stop does
//! not have to wait for the next account event.
//!
//! Reading the stream needs the grants `read_events = ["account"]` and `storage`; the timer
//! needs `timers`.

use std::cell::{Cell, RefCell};
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::task::Poll;

use bunraku_sdk::journal::{Projection, Recorded};
use bunraku_sdk::prelude::*;
use protocol::bank::{ACCOUNT_TYPE, AccountEvent, AuditLine, AuditTrail, GetTrail};

/// The most lines the trail keeps; older ones are dropped.
pub const MAX_LINES: usize = 2000;

/// Settings from the manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// How often the waiting projection wakes to see whether the actor is stopping; `0`: it
    /// waits for the next event only.
    pub wake_ms: u64,
    /// How long to wait before following again after a read failed.
    pub retry_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            wake_ms: 1000,
            retry_ms: 1000,
        }
    }
}

/// Follow the account stream until the actor stops (sent by the actor to itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[message(name = "audit.follow")]
pub struct Follow {}

/// What the audit saves: the trail and the position it covers, always together.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadModel {
    pub position: u64,
    pub lines: Vec<AuditLine>,
}

impl ReadModel {
    /// Adds the lines of `events` (in stream order) and moves to `position`.
    fn add(&mut self, events: Vec<Recorded<AccountEvent>>, position: u64) {
        self.lines.extend(events.into_iter().map(|r| AuditLine {
            pos: r.pos,
            account: r.actor,
            seq: r.seq,
            time_ms: r.time_ms,
            event: r.event,
        }));
        let over = self.lines.len().saturating_sub(MAX_LINES);
        self.lines.drain(..over);
        self.position = position;
    }
}

#[derive(Default)]
pub struct Audit {
    config: Config,
    model: RefCell<ReadModel>,
    /// A `Follow` handler is running.
    following: Cell<bool>,
    /// `on_stop` ran: the follower ends at its next wake.
    stopping: Cell<bool>,
}

/// Which of two futures finished first.
enum First<A, B> {
    Left(A),
    Right(B),
}

/// Polls both futures; the first to finish wins, and the other is dropped (an operation it was
/// waiting on is cancelled).
async fn first<A: Future, B: Future>(a: A, b: B) -> First<A::Output, B::Output> {
    let mut a = pin!(a);
    let mut b = pin!(b);
    poll_fn(|cx| {
        if let Poll::Ready(out) = a.as_mut().poll(cx) {
            return Poll::Ready(First::Left(out));
        }
        if let Poll::Ready(out) = b.as_mut().poll(cx) {
            return Poll::Ready(First::Right(out));
        }
        Poll::Pending
    })
    .await
}

impl Audit {
    /// Takes in one batch: logs its lines, adds them, and saves the trail with its position.
    async fn take(&self, ctx: &Ctx, events: Vec<Recorded<AccountEvent>>, position: u64) {
        for r in &events {
            ctx.info(format_args!("{} #{}: {}", r.actor, r.seq, r.event));
        }
        let saved = {
            let mut model = self.model.borrow_mut();
            model.add(events, position);
            model.clone()
        };
        // Saved before the next batch is read: after a crash, the audit resumes after the last
        // batch it saved, and reads again only what it had not saved.
        if let Err(e) = ctx.save(&saved).await {
            ctx.warn(format_args!(
                "the trail up to position {position} was not saved: {e}"
            ));
        }
    }
}

#[actor]
impl Audit {
    async fn on_start(&mut self, ctx: &Ctx, config: Config) -> Result<(), Error> {
        self.config = config;
        let model: ReadModel = ctx.load()?.unwrap_or_default();
        ctx.info(format_args!(
            "resuming the audit trail at position {} ({} lines)",
            model.position,
            model.lines.len()
        ));
        *self.model.get_mut() = model;
        ctx.after(Duration::ZERO, &Follow {})?;
        Ok(())
    }

    async fn on_stop(&self, _ctx: &Ctx) {
        self.stopping.set(true);
    }

    /// Follows the stream until the actor stops; a second `Follow` while one runs does nothing.
    #[handler]
    async fn follow(&self, ctx: &Ctx, _msg: Follow) {
        if self.following.replace(true) {
            return;
        }
        let from = self.model.borrow().position;
        let mut projection = Projection::<AccountEvent>::new(ACCOUNT_TYPE, from);
        let wake = Duration::from_millis(self.config.wake_ms);
        while !self.stopping.get() {
            let next = if wake.is_zero() {
                projection.next(ctx).await
            } else {
                match first(projection.next(ctx), ctx.sleep(wake)).await {
                    First::Left(next) => next,
                    // Woke without news: see whether the actor is stopping.
                    First::Right(_) => continue,
                }
            };
            match next {
                Ok(events) => self.take(ctx, events, projection.position()).await,
                Err(e) => {
                    // Try again later, from the position reached (a timer, not a loop, so a
                    // persistent failure costs one read per retry).
                    ctx.warn(format_args!(
                        "reading the `{ACCOUNT_TYPE}` events after position {}: {e}",
                        projection.position()
                    ));
                    let retry = Duration::from_millis(self.config.retry_ms);
                    if let Err(e) = ctx.after(retry, &Follow {}) {
                        ctx.error(format_args!("the audit stopped following: {e}"));
                    }
                    break;
                }
            }
        }
        self.following.set(false);
    }

    #[handler]
    async fn get_trail(&self, _ctx: &Ctx, msg: GetTrail) -> AuditTrail {
        let model = self.model.borrow();
        let lines = model
            .lines
            .iter()
            .filter(|l| msg.account.as_ref().is_none_or(|a| *a == l.account))
            .cloned()
            .collect();
        AuditTrail {
            position: model.position,
            lines,
        }
    }
}

#[cfg(test)]
mod tests {
    use bunraku_sdk::testing::{EventLog, TestActor};

    use super::*;

    fn deposited(amount: u64) -> AccountEvent {
        AccountEvent::Deposited {
            amount,
            transfer: None,
        }
    }

    /// The audit on `log`, following (its start timer fired).
    fn audit(log: EventLog, saved: Option<&ReadModel>) -> TestActor<Audit> {
        let mut builder = TestActor::<Audit>::builder()
            .name("audit")
            .concurrency(4)
            .events(log);
        if let Some(saved) = saved {
            builder = builder.saved_state(saved);
        }
        let mut audit = builder.start(Config {
            wake_ms: 0,
            retry_ms: 1000,
        });
        let (timer, _) = audit.timers()[0].clone();
        audit.fire_timer(timer);
        audit
    }

    fn trail(audit: &mut TestActor<Audit>, account: Option<&str>) -> Vec<(String, u64, String)> {
        let msg = GetTrail {
            account: account.map(str::to_owned),
        };
        audit
            .call(&msg)
            .unwrap()
            .lines
            .into_iter()
            .map(|l| (l.account, l.seq, l.event.to_string()))
            .collect()
    }

    #[test]
    fn catches_up_then_follows_live_and_answers_while_waiting() {
        let log = EventLog::new();
        log.append("account/ann", 1, &AccountEvent::Opened);
        log.append("ledger/x", 1, &"not an account");
        log.append("account/ann", 1, &deposited(5));
        let mut audit = audit(log.clone(), None);
        assert_eq!(audit.in_flight(), 1, "the follower waits for more");
        let line = |a: &str, seq, text: &str| (a.to_string(), seq, text.to_string());
        assert_eq!(
            trail(&mut audit, None),
            [
                line("account/ann", 1, "opened"),
                line("account/ann", 2, "deposited 5")
            ]
        );
        // Live: a new event reaches the waiting follower.
        log.append("account/bob", 1, &AccountEvent::Opened);
        audit.poll();
        assert_eq!(
            trail(&mut audit, Some("account/bob")),
            [line("account/bob", 1, "opened")]
        );
        let saved: ReadModel = audit.saved_state().unwrap();
        assert_eq!((saved.position, saved.lines.len()), (4, 3));
    }

    #[test]
    fn a_restarted_audit_resumes_after_what_it_saved() {
        let log = EventLog::new();
        log.append("account/ann", 1, &AccountEvent::Opened);
        let saved = {
            let audit = audit(log.clone(), None);
            audit.saved_state::<ReadModel>().unwrap()
        };
        log.append("account/ann", 1, &deposited(7));
        let mut audit = audit(log, Some(&saved));
        let seqs: Vec<u64> = trail(&mut audit, None).iter().map(|l| l.1).collect();
        assert_eq!(seqs, [1, 2], "each event once, in order");
    }

    #[test]
    fn the_trail_keeps_the_latest_lines() {
        let mut model = ReadModel::default();
        let events = (1..=MAX_LINES as u64 + 5)
            .map(|seq| Recorded {
                actor: "account/ann".into(),
                pos: seq,
                seq,
                time_ms: 0,
                event: deposited(1),
            })
            .collect();
        model.add(events, 99);
        assert_eq!(model.lines.len(), MAX_LINES);
        assert_eq!(model.lines[0].seq, 6);
        assert_eq!(model.position, 99);
    }
}
