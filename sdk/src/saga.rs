//! Durable orchestration: a **saga** is a declared list of steps, each a request to another actor
//! with a compensation that undoes it; the orchestrator records its progress in its event log
//! ([`journal`](crate::journal)) and resumes where it was after a crash or a host restart.
//!
//! ```
//! use bunraku_sdk::prelude::*;
//! use bunraku_sdk::saga::{Call, Durable, Saga, SagaOutcome, Step};
//! use bunraku_sdk::testing::TestActor;
//!
//! /// The saga's input.
//! #[derive(Serialize, Deserialize)]
//! pub struct Order { id: String, amount: u64 }
//!
//! // The participants' requests, answered `Ok` (applied) or `Err` (refused, nothing applied).
//! #[derive(Serialize, Deserialize, Message)]
//! #[message(reply = Result<u64, String>)]
//! pub struct Debit { order: String, amount: u64 }
//!
//! #[derive(Serialize, Deserialize, Message)]
//! #[message(reply = Result<(), String>)]
//! pub struct Credit { order: String, amount: u64 }
//!
//! #[derive(Serialize, Deserialize, Message)]
//! #[message(reply = Result<String, String>)]
//! pub struct Ship { order: String }
//!
//! fn order_saga() -> Saga<Order> {
//!     let debit = |o: &Order| Debit { order: o.id.clone(), amount: o.amount };
//!     let credit = |o: &Order| Credit { order: o.id.clone(), amount: o.amount };
//!     Saga::new()
//!         .step(
//!             Step::new("debit", move |o: &Order| Call::request("wallet", debit(o)))
//!                 .compensate(move |o| Call::request("wallet", credit(o))),
//!         )
//!         .step(Step::new("ship", |o: &Order| {
//!             Call::request("shipping", Ship { order: o.id.clone() })
//!         }))
//! }
//!
//! #[derive(Serialize, Deserialize, Message)]
//! #[message(reply = Result<SagaOutcome, String>)]
//! pub struct Place(Order);
//!
//! /// What the saga's reminder delivers.
//! #[derive(Serialize, Deserialize, Message)]
//! pub struct Resume {}
//!
//! /// One per order (a virtual actor `order/<id>`): its event log is the saga's log.
//! #[derive(Default)]
//! pub struct Orchestrator {
//!     order: Durable<Order>,
//! }
//!
//! #[actor]
//! impl Orchestrator {
//!     async fn on_start(&mut self, ctx: &Ctx) -> Result<(), Error> {
//!         self.order = Durable::new(order_saga(), Resume {});
//!         self.order.recover(ctx).await
//!     }
//!
//!     #[handler]
//!     async fn place(&mut self, ctx: &Ctx, msg: Place) -> Result<SagaOutcome, String> {
//!         // Sets the reminder, runs the saga, and cancels the reminder once it is over.
//!         self.order.start(ctx, &msg.0).await.map_err(|e| e.to_string())
//!     }
//!
//!     /// After a crash or a host restart, the reminder activates `order/<id>` again.
//!     #[handler]
//!     async fn resume(&mut self, ctx: &Ctx, _msg: Resume) {
//!         let _ = self.order.resume(ctx).await;
//!     }
//! }
//!
//! let mut order = TestActor::<Orchestrator>::builder()
//!     .name("order/7")
//!     .respond::<Debit>("wallet", |d| Ok(100 - d.amount))
//!     .respond::<Credit>("wallet", |_| Ok(()))
//!     .respond::<Ship>("shipping", |_| Err("no courier".into()))
//!     .start_default();
//! let outcome = order.call(&Place(Order { id: "7".into(), amount: 30 })).unwrap();
//! let reason = "step `ship` failed: no courier".to_owned();
//! assert_eq!(outcome, Ok(SagaOutcome::Compensated { reason }));
//! // Every request carried its key; the participants deduplicate by it.
//! let keys: Vec<_> = order.requests().iter().map(|r| r.idempotency_key.clone()).collect();
//! let keys: Vec<_> = keys.into_iter().flatten().collect();
//! assert_eq!(keys, ["order/7/debit", "order/7/ship", "order/7/debit/undo"]);
//! assert!(order.reminders().is_empty());
//! ```
//!
//! # How it runs
//!
//! [`Saga::start`] records a [`SagaEvent::Started`] holding the input (as JSON) and the step
//! names, then runs the steps in order. For each attempt of a step it first records
//! [`SagaEvent::StepAttempted`] (durable before anything is sent: from then on the request *may*
//! have been delivered), then sends the step's request with the idempotency key
//! `"{saga id}/{step name}"`, and records the outcome once the reply is in:
//!
//! - the participant answers `Ok(..)`: [`SagaEvent::StepSucceeded`] (with the reply, see
//!   [`SagaLog::reply`]); the next step runs; after the last one, [`SagaEvent::Finished`];
//! - it answers `Err(reason)`: a **definite failure** ([`SagaEvent::StepFailed`]); nothing was
//!   applied, and the saga compensates the steps before it;
//! - the request itself fails (timeout, the target trapped or stopped, no such actor, mailbox
//!   full, storage unavailable...): the **outcome is unknown**: the participant may have applied
//!   it or not. The saga waits (exponential backoff, on [`Ctx::sleep`]) and sends the same
//!   request with the same key again, up to [`Retry::max_attempts`] attempts in all. Errors that
//!   say the request never reached a handler and never will (`denied`, `unknown type`,
//!   `deadlock`, `too large`) are definite failures at once.
//!
//! When a step's outcome is still unknown after the last attempt, the saga gives it up
//! ([`SagaEvent::StepAbandoned`]) and compensates it too, since it may have been applied.
//!
//! **Compensating** runs the compensations of the steps that succeeded (or were abandoned) in
//! reverse order, with the key `"{saga id}/{step name}/undo"`, retried the same way. Then
//! [`SagaEvent::Compensated`]. Steps without a compensation are skipped.
//!
//! A saga is **stuck** ([`SagaEvent::Stuck`]) when it can neither finish nor compensate: a
//! compensation answered `Err` or its outcome stayed unknown after the last attempt, or a step
//! without compensation was abandoned. A stuck saga does nothing more on its own (the
//! compensations of the steps before the one that failed to compensate are not run either: a
//! person decides): it sets the actor's status (`stuck: <reason>`, shown by `bunraku ps`, see
//! [`Ctx::set_status`]) and waits. Its log says what is known and what is not.
//!
//! **Resuming** ([`Saga::resume`]): after a crash or a restart, the actor recovers its journal
//! ([`Journal::recover`]) and calls `resume`, which carries on from the log: a step attempted
//! with no outcome recorded (the orchestrator crashed between sending and recording) is sent
//! again with the same key, as a next attempt; a terminal saga returns its outcome at once.
//! Nothing calls `resume` by itself: see [Running it durably](#running-it-durably).
//!
//! # Running it durably
//!
//! A saga's log says where it is, but a log does not run anything: after its actor crashed, or
//! the whole host restarted, something has to activate the actor again and call `resume`. That
//! something is a durable **reminder** ([`Ctx::remind_every`]): the host keeps it in its store,
//! so it outlives the instance and the host process, and when it fires it activates the
//! (virtual) actor and delivers its message, whose handler resumes the saga. [`Durable`] owns
//! the saga, the actor's [`Journal<SagaLog>`](Journal) and that reminder, and keeps to the
//! rules that make it work:
//!
//! - **The reminder first.** [`Durable::start`] sets it (every second by default,
//!   [`Durable::every`]) *before* the saga records its start: there is no moment when the saga
//!   has begun and nothing would resume it. If it cannot be set, the saga does not start.
//! - **Resume on every firing.** The handler of the reminder's message calls
//!   [`Durable::resume`]: a saga that is over answers at once, one that is not carries on from
//!   its log (a step in doubt is sent again with the same key).
//! - **Settle at the end.** Once the saga finished or was compensated, the reminder is
//!   cancelled. A stuck saga sets the actor's status (`stuck: <reason>`) and keeps a slow
//!   reminder (every minute by default, [`Durable::while_stuck`]), so that after a host restart
//!   the actor is activated again and shows its status in `bunraku ps` again.
//! - **Recover after an error.** When the saga stops because its progress could not be
//!   recorded, the log may be ahead of the journal in memory (an append whose acknowledgement
//!   was lost): the journal is read again, and the reminder carries the saga on.
//!
//! # Guarantees, and what participants must do
//!
//! - Each step's request is sent until its outcome is known or its attempts run out (counted
//!   in the log, across crashes and restarts), so it may reach the participant more than once:
//!   a retry after a timeout whose first request did arrive, or a resend after the orchestrator
//!   crashed between the reply and recording it. The same holds for compensations. Delivery
//!   itself is at most once per attempt (the host's rule for messages).
//! - Every delivery of a step carries the same key. A participant that **deduplicates by key**
//!   (keeps the keys it applied, with their replies, in the same durable write as the effect:
//!   [`Dedup`](crate::dedup::Dedup) inside the state it saves) applies the step once and answers
//!   a repeat with the recorded reply: an **effectively-once** effect. A participant that does
//!   not deduplicate gets the effect applied as many times as the request arrived. Participants
//!   MUST deduplicate.
//! - A participant's `Err` must mean *nothing was applied*; the saga does not compensate a step
//!   that failed.
//! - A compensation must succeed when its step was never applied (an abandoned step may not have
//!   been), and should make a later, delayed delivery of the step fail instead of applying it
//!   (a request can still be in a mailbox when the saga gives up on it).
//! - The saga's own progress is durable step by step: an outcome that was recorded is never
//!   asked for again, and one that was not is asked for again with the same key.
//! - A saga is not a transaction: other actors can see the effects of the steps before the saga
//!   ends, and a compensation is a new action (a refund), not a rollback.
//!
//! The saga's log is the orchestrating actor's event log: one saga per actor address (a virtual
//! actor `order/<id>` per order is the natural shape). Its state is [`SagaLog`], for queries
//! ([`SagaLog::status`], [`SagaLog::steps`]) and for the CLI's `bunraku.events` and
//! `bunraku.state` (see [`Journal::answer_events`] and [`Journal::answer_state`]).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bunraku_abi::ErrorCode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::journal::{Aggregate, Journal};
use crate::{Ctx, Error, Message, Request};

/// What a participant's reply came to: its `Ok` value as JSON or its `Err` reason; `Err(Error)`
/// when the request itself failed.
type Reply = Result<Result<String, String>, Error>;

/// The future of one request of a [`Call`].
type ReplyFuture<'a> = Pin<Box<dyn Future<Output = Reply> + 'a>>;

/// Sends a [`Call`]'s request: `(ctx, key, timeout)`.
type Sender = Box<dyn for<'a> FnOnce(&'a Ctx, &'a str, Option<Duration>) -> ReplyFuture<'a>>;

/// One request a step (or a compensation) makes: a target, a message, and how to read its reply.
///
/// The participant's reply must be a `Result<T, String>`: `Ok` is success, `Err(reason)` a
/// definite failure (nothing was applied).
pub struct Call {
    to: String,
    msg_type: &'static str,
    send: Sender,
}

impl Call {
    /// A request of `msg` to actor `to`, answered with a `Result<T, String>`.
    pub fn request<R, T>(to: impl Into<String>, msg: R) -> Self
    where
        R: Request<Reply = Result<T, String>>,
        T: Serialize,
    {
        let to = to.into();
        let target = to.clone();
        Self {
            to,
            msg_type: R::NAME,
            send: sender(move |ctx, key, timeout| {
                Box::pin(async move {
                    match ctx.request_keyed(&target, &msg, key, timeout).await? {
                        Ok(value) => Ok(Ok(serde_json::to_string(&value).unwrap_or_else(|e| {
                            // The step succeeded all the same; only its value is not kept.
                            ctx.warn(format_args!("the reply to {key} is not kept: {e}"));
                            "null".to_owned()
                        }))),
                        Err(reason) => Ok(Err(reason)),
                    }
                })
            }),
        }
    }

    /// The actor the request goes to.
    pub fn target(&self) -> &str {
        &self.to
    }

    /// The request's wire name.
    pub fn msg_type(&self) -> &'static str {
        self.msg_type
    }
}

impl fmt::Debug for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("to", &self.to)
            .field("msg_type", &self.msg_type)
            .finish_non_exhaustive()
    }
}

/// Pins down the closure's higher-ranked signature.
fn sender(
    f: impl for<'a> FnOnce(&'a Ctx, &'a str, Option<Duration>) -> ReplyFuture<'a> + 'static,
) -> Sender {
    Box::new(f)
}

/// Builds a step's request from the saga's input.
type Build<I> = Box<dyn Fn(&I) -> Call>;

/// One step of a [`Saga`]: a named request built from the saga's input, and optionally the
/// compensation that undoes it.
pub struct Step<I> {
    name: String,
    action: Build<I>,
    compensation: Option<Build<I>>,
}

impl<I> Step<I> {
    /// A step named `name` (unique in its saga; part of the idempotency key) whose request
    /// `action` builds from the input.
    pub fn new(name: impl Into<String>, action: impl Fn(&I) -> Call + 'static) -> Self {
        Self {
            name: name.into(),
            action: Box::new(action),
            compensation: None,
        }
    }

    /// The request that undoes this step, built from the input. It runs when a later step fails
    /// (or this one is abandoned with an unknown outcome).
    pub fn compensate(mut self, compensation: impl Fn(&I) -> Call + 'static) -> Self {
        self.compensation = Some(Box::new(compensation));
        self
    }

    /// The step's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the step has a compensation.
    pub fn has_compensation(&self) -> bool {
        self.compensation.is_some()
    }
}

impl<I> fmt::Debug for Step<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Step")
            .field("name", &self.name)
            .field("compensation", &self.compensation.is_some())
            .finish_non_exhaustive()
    }
}

/// How a saga retries a request whose outcome is unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    /// Attempts of one step (or one compensation) in all, across restarts (default 5). Counted
    /// from the log, so a crash does not reset it.
    pub max_attempts: u32,
    /// The wait before the second attempt made in one run (default 200 ms); it doubles for each
    /// further attempt. The first attempt after a restart is made at once.
    pub backoff_initial: Duration,
    /// The longest wait between attempts (default 5 s).
    pub backoff_max: Duration,
    /// How long each request waits for its reply; `None` (the default): the actor's
    /// `request_timeout_ms`.
    pub timeout: Option<Duration>,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(5),
            timeout: None,
        }
    }
}

impl Retry {
    /// The wait before attempt `n + 1` of a run that already made `n` (`n >= 1`).
    fn backoff(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
        self.backoff_initial
            .saturating_mul(factor)
            .min(self.backoff_max)
    }
}

/// The reply to one attempt, as an [`inspect_reply`](Saga::inspect_reply) hook sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt<'a> {
    /// The step's name.
    pub step: &'a str,
    /// Whether this was the step's compensation.
    pub compensation: bool,
    /// The attempt's number, 1 for the first (across restarts).
    pub attempt: u32,
}

/// Names a saga from its input.
type Name<I> = Box<dyn Fn(&I) -> String>;

/// A hook called after a reply arrives.
type Inspect<I> = Box<dyn Fn(&I, Attempt<'_>)>;

/// A declared saga over an input `I`: steps in order, how to name it, how to retry.
///
/// Build it once (in `on_start`, or with a function the handlers call) and drive it with
/// [`start`](Saga::start) and [`resume`](Saga::resume) over the actor's
/// [`Journal<SagaLog>`](Journal).
pub struct Saga<I> {
    steps: Vec<Step<I>>,
    id: Option<Name<I>>,
    retry: Retry,
    inspect: Option<Inspect<I>>,
}

impl<I> Default for Saga<I> {
    fn default() -> Self {
        Self {
            steps: Vec::new(),
            id: None,
            retry: Retry::default(),
            inspect: None,
        }
    }
}

impl<I> fmt::Debug for Saga<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Saga")
            .field("steps", &self.steps)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// How a saga ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SagaOutcome {
    /// Every step succeeded.
    Finished,
    /// A step failed (or was abandoned) and every completed step was compensated.
    Compensated {
        /// Why the saga did not finish.
        reason: String,
    },
    /// The saga could neither finish nor compensate; it waits for a person.
    Stuck {
        /// What could not be done.
        reason: String,
    },
}

impl<I: Serialize + DeserializeOwned + 'static> Saga<I> {
    /// A saga with no steps yet, the default [`Retry`], and the actor's address as its id.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the next step.
    ///
    /// # Panics
    ///
    /// When another step already has the same name (the keys would collide).
    pub fn step(mut self, step: Step<I>) -> Self {
        assert!(
            self.steps.iter().all(|s| s.name != step.name),
            "the saga already has a step named `{}`",
            step.name
        );
        self.steps.push(step);
        self
    }

    /// Sets how requests with an unknown outcome are retried.
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// Names the saga from its input (default: the actor's address, [`Ctx::name`]). The id
    /// prefixes every idempotency key, so it must be unique among the sagas that reach the same
    /// participants.
    pub fn id(mut self, id: impl Fn(&I) -> String + 'static) -> Self {
        self.id = Some(Box::new(id));
        self
    }

    /// Calls `hook` after each reply (or request error) arrives and **before** its outcome is
    /// recorded. Meant for failure-injection tests: a panic in the hook is a crash at the worst
    /// moment, after the participant applied the step and before the saga knows.
    pub fn inspect_reply(mut self, hook: impl Fn(&I, Attempt<'_>) + 'static) -> Self {
        self.inspect = Some(Box::new(hook));
        self
    }

    /// The declared steps, in order.
    pub fn steps(&self) -> &[Step<I>] {
        &self.steps
    }

    /// Starts the saga with `input` and runs it to its end. When the journal already holds a
    /// started saga (a repeated start message), `input` is ignored and the saga resumes.
    ///
    /// Errors: the journal could not record progress (the saga stopped where its log ends, and
    /// [`resume`](Saga::resume) carries on once the actor's journal is recovered), the log was
    /// written by a saga with other steps ([`ErrorCode::Invalid`]), the input does not encode.
    pub async fn start(
        &self,
        ctx: &Ctx,
        journal: &mut Journal<SagaLog>,
        input: &I,
    ) -> Result<SagaOutcome, Error> {
        if journal.state().status == SagaStatus::NotStarted {
            let id = match &self.id {
                Some(id) => id(input),
                None => ctx.name().to_owned(),
            };
            let input = serde_json::to_string(input).map_err(|e| {
                Error::new(
                    ErrorCode::Malformed,
                    format!("the input does not encode: {e}"),
                )
            })?;
            let steps = self.steps.iter().map(|s| s.name.clone()).collect();
            record(ctx, journal, SagaEvent::Started { id, steps, input }).await?;
        }
        let outcome = self.resume(ctx, journal).await?;
        outcome.ok_or_else(|| Error::new(ErrorCode::Internal, "the saga did not start"))
    }

    /// Runs a started saga from where its log ends to its end; `None` when the journal holds
    /// no saga. A terminal saga returns its outcome at once (a stuck one sets its status again).
    ///
    /// Errors as [`start`](Saga::start).
    pub async fn resume(
        &self,
        ctx: &Ctx,
        journal: &mut Journal<SagaLog>,
    ) -> Result<Option<SagaOutcome>, Error> {
        let log = journal.state();
        if log.status == SagaStatus::NotStarted {
            return Ok(None);
        }
        let declared: Vec<&str> = self.steps.iter().map(|s| s.name.as_str()).collect();
        let recorded: Vec<&str> = log.steps.iter().map(|s| s.name.as_str()).collect();
        if declared != recorded {
            return Err(Error::new(
                ErrorCode::Invalid,
                format!("the log's saga has the steps {recorded:?}, this one {declared:?}"),
            ));
        }
        let input: I = log.input()?;
        let mut run = Run::default();
        loop {
            let log = journal.state();
            let next =
                match &log.status {
                    SagaStatus::NotStarted => unreachable!("checked above"),
                    SagaStatus::Finished => return Ok(Some(SagaOutcome::Finished)),
                    SagaStatus::Compensated { reason } => {
                        let reason = reason.clone();
                        return Ok(Some(SagaOutcome::Compensated { reason }));
                    }
                    SagaStatus::Stuck { reason } => {
                        let reason = reason.clone();
                        show_stuck(ctx, &reason);
                        return Ok(Some(SagaOutcome::Stuck { reason }));
                    }
                    SagaStatus::Running => match log.steps.iter().position(|s| !s.succeeded()) {
                        Some(step) => (step, false),
                        None => {
                            record(ctx, journal, SagaEvent::Finished).await?;
                            continue;
                        }
                    },
                    SagaStatus::Compensating { .. } => {
                        let undo =
                            log.steps.iter().enumerate().rev().find(|(i, s)| {
                                s.needs_undo() && self.steps[*i].compensation.is_some()
                            });
                        match undo {
                            Some((step, _)) => (step, true),
                            None => {
                                record(ctx, journal, SagaEvent::Compensated).await?;
                                continue;
                            }
                        }
                    }
                };
            self.attempt(ctx, journal, &input, next, &mut run).await?;
        }
    }

    /// Makes one attempt of step `step` (its compensation when `undo`), or gives it up.
    async fn attempt(
        &self,
        ctx: &Ctx,
        journal: &mut Journal<SagaLog>,
        input: &I,
        (step, undo): (usize, bool),
        run: &mut Run,
    ) -> Result<(), Error> {
        let declared = &self.steps[step];
        let name = declared.name.as_str();
        let index = step as u32;
        if run.current != Some((step, undo)) {
            *run = Run {
                current: Some((step, undo)),
                ..Run::default()
            };
        }
        let recorded = &journal.state().steps[step];
        let attempts = if undo {
            recorded.undo_attempts
        } else {
            recorded.attempts
        };
        if attempts >= self.retry.max_attempts.max(1) {
            let last = run.last_error.as_deref().unwrap_or("not recorded");
            let what = if undo {
                format!("the compensation of `{name}`")
            } else {
                format!("step `{name}`")
            };
            let reason =
                format!("{what}: outcome unknown after {attempts} attempts (last error: {last})");
            let event = if undo || declared.compensation.is_none() {
                let reason = if undo {
                    reason
                } else {
                    format!("{reason}, and it has no compensation")
                };
                SagaEvent::Stuck { reason }
            } else {
                SagaEvent::StepAbandoned {
                    step: index,
                    reason,
                }
            };
            return record(ctx, journal, event).await;
        }
        if run.sent > 0 {
            ctx.sleep(self.retry.backoff(run.sent)).await?;
        }
        let attempt = attempts + 1;
        let event = if undo {
            SagaEvent::CompensationAttempted {
                step: index,
                attempt,
            }
        } else {
            SagaEvent::StepAttempted {
                step: index,
                attempt,
            }
        };
        record(ctx, journal, event).await?;
        run.sent += 1;

        let (call, key) = match (&declared.compensation, undo) {
            (Some(compensate), true) => (compensate(input), undo_key(&journal.state().id, name)),
            _ => (
                (declared.action)(input),
                step_key(&journal.state().id, name),
            ),
        };
        let target = call.to.clone();
        let reply = (call.send)(ctx, &key, self.retry.timeout).await;
        if let Some(inspect) = &self.inspect {
            inspect(
                input,
                Attempt {
                    step: name,
                    compensation: undo,
                    attempt,
                },
            );
        }
        let event = match (reply, undo) {
            (Ok(Ok(reply)), false) => SagaEvent::StepSucceeded { step: index, reply },
            (Ok(Ok(_)), true) => SagaEvent::CompensationSucceeded { step: index },
            (Ok(Err(reason)), false) => SagaEvent::StepFailed {
                step: index,
                reason,
            },
            (Ok(Err(reason)), true) => SagaEvent::Stuck {
                reason: format!("the compensation of `{name}` failed: {reason}"),
            },
            (Err(e), false) if refused(&e) => SagaEvent::StepFailed {
                step: index,
                reason: format!("`{target}` refused it: {e}"),
            },
            (Err(e), true) if refused(&e) => SagaEvent::Stuck {
                reason: format!("the compensation of `{name}`: `{target}` refused it: {e}"),
            },
            (Err(e), _) => {
                let what = if undo { "compensation of " } else { "" };
                let next = if attempt < self.retry.max_attempts {
                    "retrying with the same key"
                } else {
                    "no attempts left"
                };
                ctx.warn(format_args!(
                    "saga {}: {what}`{name}` attempt {attempt} (key {key}): outcome unknown \
                     ({e}); {next}",
                    journal.state().id
                ));
                run.last_error = Some(e.to_string());
                return Ok(());
            }
        };
        record(ctx, journal, event).await
    }
}

/// The default name of a [`Durable`] saga's reminder.
pub const RESUME_REMINDER: &str = "resume";

/// How often a [`Durable`] saga's reminder fires while the saga runs, unless told otherwise.
pub const RESUME_EVERY: Duration = Duration::from_secs(1);

/// How often a stuck [`Durable`] saga's reminder fires, unless told otherwise.
pub const STUCK_EVERY: Duration = Duration::from_secs(60);

/// The shortest period of a reminder.
const MIN_REMINDER_PERIOD: Duration = Duration::from_secs(1);

/// Sets the resume reminder: `(ctx, name, period)`.
type SetReminder = Box<
    dyn for<'a> Fn(
        &'a Ctx,
        &'a str,
        Duration,
    ) -> Pin<Box<dyn Future<Output = Result<(), Error>> + 'a>>,
>;

/// A [`Saga`] that survives crashes and host restarts: the saga, the orchestrating actor's
/// [`Journal<SagaLog>`](Journal), and the durable reminder that activates the actor again to
/// resume it. See [Running it durably](self#running-it-durably).
///
/// Build it in `on_start` with [`new`](Durable::new) (the saga and the message the reminder
/// delivers) and [`recover`](Durable::recover) it; start the saga from a handler with
/// [`start`](Durable::start), and call [`resume`](Durable::resume) from the handler of the
/// reminder's message. The `Default` value, for the actor's `Default`, has no steps and no
/// reminder message: replace it before use.
pub struct Durable<I> {
    saga: Saga<I>,
    journal: Journal<SagaLog>,
    reminder: String,
    every: Duration,
    while_stuck: Option<Duration>,
    set_reminder: Option<SetReminder>,
    /// Whether this activation already handled the saga's end.
    settled: bool,
}

impl<I> Default for Durable<I> {
    fn default() -> Self {
        Self {
            saga: Saga::default(),
            journal: Journal::default(),
            reminder: RESUME_REMINDER.to_owned(),
            every: RESUME_EVERY,
            while_stuck: Some(STUCK_EVERY),
            set_reminder: None,
            settled: false,
        }
    }
}

impl<I> fmt::Debug for Durable<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Durable")
            .field("saga", &self.saga)
            .field("journal", &self.journal)
            .field("reminder", &self.reminder)
            .field("every", &self.every)
            .field("while_stuck", &self.while_stuck)
            .field("settled", &self.settled)
            .finish_non_exhaustive()
    }
}

/// Why [`Durable::start`] did not bring the saga to its end.
#[derive(Debug)]
#[non_exhaustive]
pub enum StartError {
    /// The resume reminder could not be set, so the saga was not started: nothing was sent.
    NotStarted(Error),
    /// The saga stopped before its end because its progress could not be recorded (see
    /// [`Saga::start`]). Its journal was read again, and its reminder resumes it.
    Stopped(Error),
}

impl StartError {
    /// The underlying error.
    pub fn error(&self) -> &Error {
        match self {
            Self::NotStarted(e) | Self::Stopped(e) => e,
        }
    }
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotStarted(e) => write!(f, "the saga was not started: {e}"),
            Self::Stopped(e) => write!(f, "the saga stopped ({e}); its reminder resumes it"),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.error())
    }
}

impl<I: Serialize + DeserializeOwned + 'static> Durable<I> {
    /// Runs `saga` durably: its reminder ([`RESUME_REMINDER`], every [`RESUME_EVERY`])
    /// delivers `resume` to this actor, whose handler calls [`resume`](Durable::resume). A stuck
    /// saga keeps a reminder every [`STUCK_EVERY`].
    pub fn new<M: Message>(saga: Saga<I>, resume: M) -> Self {
        let resume = std::rc::Rc::new(resume);
        let set: SetReminder = Box::new(move |ctx, name, period| {
            let resume = resume.clone();
            Box::pin(async move { ctx.remind_every(name, period, &*resume).await })
        });
        Self {
            saga,
            set_reminder: Some(set),
            ..Self::default()
        }
    }

    /// Names the reminder (default [`RESUME_REMINDER`]); unique among the actor's reminders.
    pub fn reminder(mut self, name: impl Into<String>) -> Self {
        self.reminder = name.into();
        self
    }

    /// How often the reminder fires while the saga is not over (default [`RESUME_EVERY`]; at
    /// least one second, a shorter period is raised to one second). It bounds how long a saga
    /// whose actor crashed waits before it goes on.
    pub fn every(mut self, period: Duration) -> Self {
        self.every = period.max(MIN_REMINDER_PERIOD);
        self
    }

    /// How often the reminder fires once the saga is stuck (default [`STUCK_EVERY`]; at least
    /// one second), so that after a host restart the actor is activated again and shows its
    /// `stuck: ...` status; `None`: cancel the reminder of a stuck saga too.
    pub fn while_stuck(mut self, period: Option<Duration>) -> Self {
        self.while_stuck = period.map(|p| p.max(MIN_REMINDER_PERIOD));
        self
    }

    /// Reads the actor's journal (its saga's log) again, as [`Journal::recover`]: call it in
    /// `on_start`.
    pub async fn recover(&mut self, ctx: &Ctx) -> Result<(), Error> {
        self.journal = Journal::recover(ctx).await?;
        Ok(())
    }

    /// The declared saga.
    pub fn saga(&self) -> &Saga<I> {
        &self.saga
    }

    /// The saga's journal, for [`Journal::answer_events`] and [`Journal::answer_state`].
    pub fn journal(&self) -> &Journal<SagaLog> {
        &self.journal
    }

    /// The saga's log.
    pub fn log(&self) -> &SagaLog {
        self.journal.state()
    }

    /// Where the saga is.
    pub fn status(&self) -> &SagaStatus {
        self.journal.state().status()
    }

    /// Starts the saga with `input` and runs it to its end, as [`Saga::start`]; a saga already
    /// started is resumed instead. Before a saga starts, the reminder is set: from then on a
    /// crash or a host restart is resumed by it. At the end the saga is **settled**: the
    /// reminder is cancelled, or, for a stuck saga, replaced by a slow one (see
    /// [`while_stuck`](Durable::while_stuck)).
    ///
    /// Errors: [`StartError::NotStarted`] when the reminder could not be set (the saga did not
    /// start), [`StartError::Stopped`] when the saga stopped before its end (the reminder
    /// resumes it).
    pub async fn start(&mut self, ctx: &Ctx, input: &I) -> Result<SagaOutcome, StartError> {
        if *self.status() == SagaStatus::NotStarted {
            self.set_reminder(ctx, self.every)
                .await
                .map_err(StartError::NotStarted)?;
        }
        match self.saga.start(ctx, &mut self.journal, input).await {
            Ok(outcome) => {
                self.settle(ctx, &outcome).await;
                Ok(outcome)
            }
            Err(e) => {
                self.stopped(ctx, &e).await;
                Err(StartError::Stopped(e))
            }
        }
    }

    /// Carries the saga on from where its log ends, as [`Saga::resume`], and settles it at its
    /// end (see [`start`](Durable::start)): call it from the handler of the reminder's message.
    /// With no saga started (a start that stopped before recording it), the reminder is
    /// cancelled and the result is `Ok(None)`.
    ///
    /// Errors: the saga stopped before its end; its journal was read again, and the reminder
    /// resumes it.
    pub async fn resume(&mut self, ctx: &Ctx) -> Result<Option<SagaOutcome>, Error> {
        match self.saga.resume(ctx, &mut self.journal).await {
            Ok(Some(outcome)) => {
                self.settle(ctx, &outcome).await;
                Ok(Some(outcome))
            }
            Ok(None) => {
                if let Err(e) = ctx.cancel_reminder(&self.reminder).await {
                    ctx.warn(format_args!("the resume reminder was not cancelled: {e}"));
                }
                Ok(None)
            }
            Err(e) => {
                self.stopped(ctx, &e).await;
                Err(e)
            }
        }
    }

    /// Sets the reminder to fire every `period`.
    async fn set_reminder(&self, ctx: &Ctx, period: Duration) -> Result<(), Error> {
        match &self.set_reminder {
            Some(set) => set(ctx, &self.reminder, period).await,
            None => Err(Error::new(
                ErrorCode::Invalid,
                "the saga has no resume message (build it with `Durable::new`)",
            )),
        }
    }

    /// After a terminal outcome: the reminder is no longer needed (or, stuck, only a slow one).
    /// Once per activation; when the reminder could not be updated it fires again, and the
    /// next `settle` tries again.
    async fn settle(&mut self, ctx: &Ctx, outcome: &SagaOutcome) {
        if self.settled {
            return;
        }
        let name = ctx.name();
        let stuck_every = match outcome {
            SagaOutcome::Finished => {
                ctx.info(format_args!("{name}: finished"));
                None
            }
            SagaOutcome::Compensated { reason } => {
                ctx.info(format_args!("{name}: compensated ({reason})"));
                None
            }
            // The saga has set the actor's status already.
            SagaOutcome::Stuck { reason } => {
                ctx.error(format_args!("{name}: stuck ({reason})"));
                self.while_stuck
            }
        };
        let done = match stuck_every {
            Some(period) => self.set_reminder(ctx, period).await,
            None => ctx.cancel_reminder(&self.reminder).await.map(drop),
        };
        match done {
            Ok(()) => self.settled = true,
            Err(e) => ctx.warn(format_args!("the resume reminder was not updated: {e}")),
        }
    }

    /// After the saga stopped on an error: the log may be ahead of the journal in memory (an
    /// append whose acknowledgement was lost), so read it again; the reminder carries on.
    async fn stopped(&mut self, ctx: &Ctx, e: &Error) {
        ctx.warn(format_args!(
            "{}: the saga stopped ({e}); its reminder resumes it",
            ctx.name()
        ));
        if let Err(e) = self.recover(ctx).await {
            ctx.warn(format_args!("the journal was not recovered: {e}"));
        }
    }
}

/// What one call of [`Saga::resume`] did for the step it is on.
#[derive(Default)]
struct Run {
    /// The step (and whether its compensation) the counters are for.
    current: Option<(usize, bool)>,
    /// Attempts sent in this run.
    sent: u32,
    /// The last request error.
    last_error: Option<String>,
}

/// Errors that say the request never reached a handler and would not on a retry either.
fn refused(e: &Error) -> bool {
    matches!(
        e.code(),
        ErrorCode::Denied | ErrorCode::UnknownType | ErrorCode::Deadlock | ErrorCode::TooLarge
    )
}

/// The idempotency key of step `name` of saga `id`.
pub fn step_key(id: &str, name: &str) -> String {
    format!("{id}/{name}")
}

/// The idempotency key of the compensation of step `name` of saga `id`.
pub fn undo_key(id: &str, name: &str) -> String {
    format!("{id}/{name}/undo")
}

/// Shows a stuck saga in `bunraku ps`.
fn show_stuck(ctx: &Ctx, reason: &str) {
    let mut status = format!("stuck: {reason}");
    let mut end = status.len().min(bunraku_abi::MAX_STATUS_BYTES);
    while !status.is_char_boundary(end) {
        end -= 1;
    }
    status.truncate(end);
    if let Err(e) = ctx.set_status(&status) {
        ctx.warn(format_args!("the saga's status was not set: {e}"));
    }
}

/// Records `event` in the journal (durably), checking it against the saga's state.
async fn record(ctx: &Ctx, journal: &mut Journal<SagaLog>, event: SagaEvent) -> Result<(), Error> {
    let stuck = match &event {
        SagaEvent::Stuck { reason } => Some(reason.clone()),
        _ => None,
    };
    match journal.execute(ctx, event).await? {
        Ok(_) => {
            if let Some(reason) = stuck {
                ctx.error(format_args!(
                    "saga {} is stuck: {reason}",
                    journal.state().id
                ));
                show_stuck(ctx, &reason);
            }
            Ok(())
        }
        Err(rejection) => Err(Error::new(
            ErrorCode::Internal,
            format!("the saga's log refused an event: {rejection}"),
        )),
    }
}

/// What a saga records, in its actor's event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SagaEvent {
    /// The saga started: its id, its steps' names, its input (JSON).
    Started {
        /// The prefix of its idempotency keys.
        id: String,
        /// The declared steps, in order.
        steps: Vec<String>,
        /// The input, as JSON (which reads inputs with fields added since, when they have
        /// `#[serde(default)]`).
        input: String,
    },
    /// The step's request is about to be sent (it may be delivered from now on).
    StepAttempted {
        /// The step's index.
        step: u32,
        /// 1 for the first attempt.
        attempt: u32,
    },
    /// The participant answered `Ok`.
    StepSucceeded {
        /// The step's index.
        step: u32,
        /// The `Ok` value as JSON ([`SagaLog::reply`]).
        reply: String,
    },
    /// The participant answered `Err` (or refused the request): nothing was applied.
    StepFailed {
        /// The step's index.
        step: u32,
        /// The participant's reason.
        reason: String,
    },
    /// The step's outcome stayed unknown after the last attempt; it is compensated as if it
    /// had succeeded.
    StepAbandoned {
        /// The step's index.
        step: u32,
        /// Why.
        reason: String,
    },
    /// The step's compensation is about to be sent.
    CompensationAttempted {
        /// The step's index.
        step: u32,
        /// 1 for the first attempt.
        attempt: u32,
    },
    /// The step's compensation succeeded.
    CompensationSucceeded {
        /// The step's index.
        step: u32,
    },
    /// Every step succeeded.
    Finished,
    /// Every step that needed it was compensated.
    Compensated,
    /// The saga can neither finish nor compensate.
    Stuck {
        /// What could not be done.
        reason: String,
    },
}

/// Where a saga is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SagaStatus {
    /// Nothing recorded yet.
    #[default]
    NotStarted,
    /// Going forward.
    Running,
    /// Undoing the completed steps.
    Compensating {
        /// Why the saga is not finishing.
        reason: String,
    },
    /// Every step succeeded.
    Finished,
    /// Compensated.
    Compensated {
        /// Why the saga did not finish.
        reason: String,
    },
    /// Neither finished nor compensated.
    Stuck {
        /// What could not be done.
        reason: String,
    },
}

impl SagaStatus {
    /// Whether the saga is over (finished, compensated or stuck).
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Self::Finished | Self::Compensated { .. } | Self::Stuck { .. }
        )
    }

    /// A short lowercase name: `not started`, `running`, `compensating`, `finished`,
    /// `compensated`, `stuck`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::NotStarted => "not started",
            Self::Running => "running",
            Self::Compensating { .. } => "compensating",
            Self::Finished => "finished",
            Self::Compensated { .. } => "compensated",
            Self::Stuck { .. } => "stuck",
        }
    }

    /// The reason of a compensating, compensated or stuck saga.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Compensating { reason }
            | Self::Compensated { reason }
            | Self::Stuck { reason } => Some(reason),
            _ => None,
        }
    }
}

/// What is known of one step's request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepOutcome {
    /// Not attempted yet, or attempted with no outcome recorded (see [`StepState::attempts`]).
    #[default]
    Pending,
    /// The participant answered `Ok` with this value (JSON).
    Succeeded {
        /// The value as JSON.
        reply: String,
    },
    /// The participant answered `Err`: nothing was applied.
    Failed {
        /// The participant's reason.
        reason: String,
    },
    /// Given up with an unknown outcome.
    Abandoned {
        /// Why.
        reason: String,
    },
}

/// One step's progress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepState {
    /// Its name.
    pub name: String,
    /// Attempts recorded (each before its request was sent).
    pub attempts: u32,
    /// What is known.
    pub outcome: StepOutcome,
    /// Attempts of its compensation.
    pub undo_attempts: u32,
    /// Whether its compensation succeeded.
    pub undone: bool,
}

impl StepState {
    fn succeeded(&self) -> bool {
        matches!(self.outcome, StepOutcome::Succeeded { .. })
    }

    /// Whether the step may have been applied and is not undone yet.
    fn needs_undo(&self) -> bool {
        !self.undone
            && matches!(
                self.outcome,
                StepOutcome::Succeeded { .. } | StepOutcome::Abandoned { .. }
            )
    }

    /// Whether a request was sent whose outcome is not recorded: the step is **in doubt** (the
    /// participant may have applied it), and resuming sends it again with the same key.
    pub fn in_doubt(&self) -> bool {
        self.attempts > 0 && self.outcome == StepOutcome::Pending
    }
}

/// A saga's state, folded from its [`SagaEvent`]s: the [`Aggregate`] of the orchestrator's
/// journal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaLog {
    id: String,
    input: String,
    status: SagaStatus,
    steps: Vec<StepState>,
}

impl SagaLog {
    /// The saga's id (the prefix of its keys); empty before it started.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Where it is.
    pub fn status(&self) -> &SagaStatus {
        &self.status
    }

    /// Its steps' progress, in order.
    pub fn steps(&self) -> &[StepState] {
        &self.steps
    }

    /// Step `name`'s progress.
    pub fn step(&self, name: &str) -> Option<&StepState> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// The input the saga started with.
    ///
    /// Errors: [`ErrorCode::NotFound`] before it started, [`ErrorCode::Malformed`] when the
    /// recorded input does not decode as an `I`.
    pub fn input<I: DeserializeOwned>(&self) -> Result<I, Error> {
        if self.status == SagaStatus::NotStarted {
            return Err(Error::new(ErrorCode::NotFound, "the saga has not started"));
        }
        serde_json::from_str(&self.input).map_err(|e| {
            Error::new(
                ErrorCode::Malformed,
                format!("the saga's input does not decode: {e}"),
            )
        })
    }

    /// The `Ok` value step `name` succeeded with, decoded as a `T` (`None` when it has not
    /// succeeded or the value does not decode as a `T`).
    pub fn reply<T: DeserializeOwned>(&self, name: &str) -> Option<T> {
        match &self.step(name)?.outcome {
            StepOutcome::Succeeded { reply } => serde_json::from_str(reply).ok(),
            _ => None,
        }
    }

    fn step_mut(&mut self, step: u32) -> Result<&mut StepState, String> {
        self.steps
            .get_mut(step as usize)
            .ok_or_else(|| format!("no step {step}"))
    }
}

impl Aggregate for SagaLog {
    type Command = SagaEvent;
    type Event = SagaEvent;
    type Rejection = String;

    /// Checks that `event` follows from the state (the driver's guard against its own bugs).
    fn handle(&self, event: SagaEvent) -> Result<Vec<SagaEvent>, String> {
        let at = |step: &u32| self.steps.get(*step as usize);
        let running = self.status == SagaStatus::Running;
        let compensating = matches!(self.status, SagaStatus::Compensating { .. });
        let ok = match &event {
            SagaEvent::Started { steps, .. } => {
                self.status == SagaStatus::NotStarted
                    && steps
                        .iter()
                        .enumerate()
                        .all(|(i, s)| !steps[..i].contains(s))
            }
            SagaEvent::StepAttempted { step, attempt } => {
                let i = *step as usize;
                running
                    && self.steps[..i.min(self.steps.len())]
                        .iter()
                        .all(StepState::succeeded)
                    && at(step).is_some_and(|s| {
                        s.outcome == StepOutcome::Pending && *attempt == s.attempts + 1
                    })
            }
            SagaEvent::StepSucceeded { step, .. }
            | SagaEvent::StepFailed { step, .. }
            | SagaEvent::StepAbandoned { step, .. } => {
                running
                    && at(step).is_some_and(|s| s.outcome == StepOutcome::Pending && s.attempts > 0)
            }
            SagaEvent::CompensationAttempted { step, attempt } => {
                compensating
                    && at(step).is_some_and(|s| s.needs_undo() && *attempt == s.undo_attempts + 1)
            }
            SagaEvent::CompensationSucceeded { step } => {
                compensating && at(step).is_some_and(|s| s.needs_undo() && s.undo_attempts > 0)
            }
            SagaEvent::Finished => running && self.steps.iter().all(StepState::succeeded),
            SagaEvent::Compensated => compensating,
            SagaEvent::Stuck { .. } => running || compensating,
        };
        if ok {
            Ok(vec![event])
        } else {
            Err(format!(
                "{event:?} does not follow a saga that is {}",
                self.status.name()
            ))
        }
    }

    fn apply(&mut self, event: &SagaEvent) {
        let step_name = |log: &Self, step: u32| {
            log.steps
                .get(step as usize)
                .map_or_else(|| step.to_string(), |s| s.name.clone())
        };
        match event {
            SagaEvent::Started { id, steps, input } => {
                self.id.clone_from(id);
                self.input.clone_from(input);
                self.steps = steps
                    .iter()
                    .map(|name| StepState {
                        name: name.clone(),
                        ..StepState::default()
                    })
                    .collect();
                self.status = SagaStatus::Running;
            }
            SagaEvent::StepAttempted { step, attempt } => {
                if let Ok(s) = self.step_mut(*step) {
                    s.attempts = *attempt;
                }
            }
            SagaEvent::StepSucceeded { step, reply } => {
                if let Ok(s) = self.step_mut(*step) {
                    s.outcome = StepOutcome::Succeeded {
                        reply: reply.clone(),
                    };
                }
            }
            SagaEvent::StepFailed { step, reason } => {
                let name = step_name(self, *step);
                if let Ok(s) = self.step_mut(*step) {
                    s.outcome = StepOutcome::Failed {
                        reason: reason.clone(),
                    };
                }
                self.status = SagaStatus::Compensating {
                    reason: format!("step `{name}` failed: {reason}"),
                };
            }
            SagaEvent::StepAbandoned { step, reason } => {
                if let Ok(s) = self.step_mut(*step) {
                    s.outcome = StepOutcome::Abandoned {
                        reason: reason.clone(),
                    };
                }
                self.status = SagaStatus::Compensating {
                    reason: reason.clone(),
                };
            }
            SagaEvent::CompensationAttempted { step, attempt } => {
                if let Ok(s) = self.step_mut(*step) {
                    s.undo_attempts = *attempt;
                }
            }
            SagaEvent::CompensationSucceeded { step } => {
                if let Ok(s) = self.step_mut(*step) {
                    s.undone = true;
                }
            }
            SagaEvent::Finished => self.status = SagaStatus::Finished,
            SagaEvent::Compensated => {
                let reason = self.status.reason().unwrap_or_default().to_owned();
                self.status = SagaStatus::Compensated { reason };
            }
            SagaEvent::Stuck { reason } => {
                self.status = SagaStatus::Stuck {
                    reason: reason.clone(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::rc::Rc;

    use super::*;
    use crate::testing::{EventLog, TestActor};
    use crate::{Message, actor};

    /// The saga's input: a trip to book.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Trip {
        who: String,
        /// Crash after the first reply of this step, before recording it.
        crash_after: Option<String>,
    }

    #[derive(Debug, Serialize, Deserialize, Message)]
    #[message(reply = Result<u32, String>)]
    struct Book {
        who: String,
    }

    #[derive(Debug, Serialize, Deserialize, Message)]
    #[message(reply = Result<(), String>)]
    struct Cancel {
        who: String,
    }

    #[derive(Serialize, Deserialize, Message)]
    #[message(reply = Result<SagaOutcome, String>)]
    struct Go {
        trip: Trip,
    }

    #[derive(Serialize, Deserialize, Message)]
    #[message(reply = Result<Option<SagaOutcome>, String>)]
    struct Resume {}

    /// Book a flight, then a hotel (both undoable), then a car (not undoable).
    fn trip_saga() -> Saga<Trip> {
        let book =
            |to: &'static str| move |t: &Trip| Call::request(to, Book { who: t.who.clone() });
        let cancel =
            |to: &'static str| move |t: &Trip| Call::request(to, Cancel { who: t.who.clone() });
        Saga::new()
            .step(Step::new("flight", book("flights")).compensate(cancel("flights")))
            .step(Step::new("hotel", book("hotels")).compensate(cancel("hotels")))
            .step(Step::new("car", book("cars")))
            .retry(Retry {
                max_attempts: 3,
                backoff_initial: Duration::from_millis(1),
                ..Retry::default()
            })
            .inspect_reply(|trip, attempt| {
                if trip.crash_after.as_deref() == Some(attempt.step) && attempt.attempt == 1 {
                    panic!("crash after the reply of `{}`", attempt.step);
                }
            })
    }

    #[derive(Default)]
    struct Planner {
        saga: Saga<Trip>,
        journal: Journal<SagaLog>,
    }

    #[actor]
    impl Planner {
        async fn on_start(&mut self, ctx: &Ctx) -> Result<(), Error> {
            self.saga = trip_saga();
            self.journal = Journal::recover(ctx).await?;
            Ok(())
        }

        #[handler]
        async fn go(&mut self, ctx: &Ctx, msg: Go) -> Result<SagaOutcome, String> {
            let outcome = self.saga.start(ctx, &mut self.journal, &msg.trip).await;
            outcome.map_err(|e| e.to_string())
        }

        #[handler]
        async fn resume(&mut self, ctx: &Ctx, _msg: Resume) -> Result<Option<SagaOutcome>, String> {
            let outcome = self.saga.resume(ctx, &mut self.journal).await;
            outcome.map_err(|e| e.to_string())
        }
    }

    /// A planner named `trip/1` whose participants answer with `answer(target, type)`.
    fn planner(
        log: EventLog,
        answer: impl Fn(&str, &'static str) -> Result<Result<(), String>, Error> + 'static,
    ) -> TestActor<Planner> {
        let answer = Rc::new(answer);
        let mut builder = TestActor::<Planner>::builder().name("trip/1").events(log);
        for to in ["flights", "hotels", "cars"] {
            let (a, answer2) = (answer.clone(), answer.clone());
            builder = builder
                .respond_with::<Book>(to, move |_| a(to, "book").map(|r| r.map(|()| 7)))
                .respond_with::<Cancel>(to, move |_| answer2(to, "cancel"));
        }
        builder.start_default()
    }

    /// Every request the planner made: `(target, type, key)`.
    fn requests<A: crate::Actor>(t: &TestActor<A>) -> Vec<(String, String, String)> {
        t.requests()
            .iter()
            .map(|r| {
                let key = r.idempotency_key.clone().unwrap_or_default();
                (r.target.clone(), r.msg_type.clone(), key)
            })
            .collect()
    }

    fn req(target: &str, msg_type: &str, key: &str) -> (String, String, String) {
        (target.into(), msg_type.into(), key.into())
    }

    fn trip() -> Trip {
        Trip {
            who: "ann".into(),
            crash_after: None,
        }
    }

    fn events(t: &TestActor<Planner>) -> Vec<SagaEvent> {
        t.event_log().decoded("trip/1")
    }

    #[test]
    fn every_step_succeeding_finishes_the_saga_with_one_keyed_request_each() {
        let mut t = planner(EventLog::new(), |_, _| Ok(Ok(())));
        let outcome = t.call(&Go { trip: trip() }).unwrap();
        assert_eq!(outcome, Ok(SagaOutcome::Finished));
        assert_eq!(
            requests(&t),
            [
                req("flights", "Book", "trip/1/flight"),
                req("hotels", "Book", "trip/1/hotel"),
                req("cars", "Book", "trip/1/car"),
            ]
        );
        let events = events(&t);
        assert_eq!(events.len(), 1 + 3 * 2 + 1, "{events:#?}");
        assert!(matches!(&events[0], SagaEvent::Started { id, .. } if id == "trip/1"));
        assert_eq!(
            events[1],
            SagaEvent::StepAttempted {
                step: 0,
                attempt: 1
            }
        );
        assert_eq!(events.last(), Some(&SagaEvent::Finished));
        assert_eq!(t.actor().journal.state().reply::<u32>("hotel"), Some(7));
        assert_eq!(t.status(), "", "only a stuck saga sets a status");
    }

    #[test]
    fn a_failed_step_compensates_the_completed_steps_in_reverse_order() {
        let mut t = planner(EventLog::new(), |to, what| match (to, what) {
            ("cars", "book") => Ok(Err("no cars left".into())),
            _ => Ok(Ok(())),
        });
        let outcome = t.call(&Go { trip: trip() }).unwrap().unwrap();
        assert_eq!(
            outcome,
            SagaOutcome::Compensated {
                reason: "step `car` failed: no cars left".into()
            }
        );
        assert_eq!(
            requests(&t)[2..],
            [
                req("cars", "Book", "trip/1/car"),
                req("hotels", "Cancel", "trip/1/hotel/undo"),
                req("flights", "Cancel", "trip/1/flight/undo"),
            ]
        );
        let log = t.actor().journal.state().clone();
        assert!(log.steps()[..2].iter().all(|s| s.undone));
        assert!(matches!(log.steps()[2].outcome, StepOutcome::Failed { .. }));
    }

    #[test]
    fn a_step_failing_definitely_is_not_compensated_itself() {
        let mut t = planner(EventLog::new(), |to, what| match (to, what) {
            ("hotels", "book") => Ok(Err("full".into())),
            _ => Ok(Ok(())),
        });
        let outcome = t.call(&Go { trip: trip() }).unwrap().unwrap();
        assert!(matches!(outcome, SagaOutcome::Compensated { .. }));
        assert_eq!(
            requests(&t),
            [
                req("flights", "Book", "trip/1/flight"),
                req("hotels", "Book", "trip/1/hotel"),
                req("flights", "Cancel", "trip/1/flight/undo"),
            ]
        );
    }

    #[test]
    fn an_unknown_outcome_is_retried_with_the_same_key() {
        let timeouts = Rc::new(RefCell::new(2));
        let left = timeouts.clone();
        let mut t = planner(EventLog::new(), move |to, _| {
            let mut left = left.borrow_mut();
            if to == "hotels" && *left > 0 {
                *left -= 1;
                return Err(ErrorCode::Timeout.into());
            }
            Ok(Ok(()))
        });
        let outcome = t.call(&Go { trip: trip() }).unwrap();
        assert_eq!(outcome, Ok(SagaOutcome::Finished));
        let hotel: Vec<_> = requests(&t)
            .into_iter()
            .filter(|r| r.0 == "hotels")
            .collect();
        assert_eq!(hotel, vec![req("hotels", "Book", "trip/1/hotel"); 3]);
        assert_eq!(t.actor().journal.state().steps()[1].attempts, 3);
    }

    #[test]
    fn a_step_whose_outcome_stays_unknown_is_abandoned_and_compensated_too() {
        let mut t = planner(EventLog::new(), |to, what| match (to, what) {
            ("hotels", "book") => Err(ErrorCode::TargetFailed.into()),
            _ => Ok(Ok(())),
        });
        let outcome = t.call(&Go { trip: trip() }).unwrap().unwrap();
        let SagaOutcome::Compensated { reason } = outcome else {
            panic!("{outcome:?}");
        };
        assert!(
            reason.contains("outcome unknown after 3 attempts (last error: target failed)"),
            "{reason}"
        );
        // It may have been applied: its compensation runs, then the flight's.
        assert_eq!(
            requests(&t)[4..],
            [
                req("hotels", "Cancel", "trip/1/hotel/undo"),
                req("flights", "Cancel", "trip/1/flight/undo"),
            ]
        );
    }

    #[test]
    fn a_refused_request_is_a_definite_failure_without_retries() {
        let mut t = planner(EventLog::new(), |to, _| match to {
            "flights" => Err(ErrorCode::Denied.into()),
            _ => Ok(Ok(())),
        });
        let outcome = t.call(&Go { trip: trip() }).unwrap().unwrap();
        assert!(matches!(outcome, SagaOutcome::Compensated { .. }));
        assert_eq!(requests(&t), [req("flights", "Book", "trip/1/flight")]);
    }

    #[test]
    fn a_restarted_orchestrator_resends_a_step_in_doubt_with_the_same_key() {
        let log = EventLog::new();
        let mut first = planner(log.clone(), |_, _| Ok(Ok(())));
        let crashing = Trip {
            crash_after: Some("hotel".into()),
            ..trip()
        };
        let crashed = catch_unwind(AssertUnwindSafe(|| first.call(&Go { trip: crashing })));
        assert!(crashed.is_err(), "the orchestrator crashed");
        assert_eq!(
            log.decoded::<SagaEvent>("trip/1").last(),
            Some(&SagaEvent::StepAttempted {
                step: 1,
                attempt: 1
            }),
            "the hotel answered, and the log does not know"
        );
        drop(first);

        // A new instance on the same log (an actor restart, or a host restart).
        let mut second = planner(log, |_, _| Ok(Ok(())));
        assert!(second.actor().journal.state().steps()[1].in_doubt());
        let outcome = second.call(&Resume {}).unwrap();
        assert_eq!(outcome, Ok(Some(SagaOutcome::Finished)));
        assert_eq!(
            requests(&second),
            [
                req("hotels", "Book", "trip/1/hotel"),
                req("cars", "Book", "trip/1/car"),
            ],
            "the hotel again with the same key, then the car; not the flight again"
        );
        assert_eq!(second.actor().journal.state().steps()[1].attempts, 2);
    }

    #[test]
    fn a_failing_compensation_leaves_the_saga_stuck_with_a_status() {
        let mut t = planner(EventLog::new(), |to, what| match (to, what) {
            ("cars", "book") => Ok(Err("no cars left".into())),
            ("flights", "cancel") => Ok(Err("non-refundable".into())),
            _ => Ok(Ok(())),
        });
        let outcome = t.call(&Go { trip: trip() }).unwrap().unwrap();
        let reason = "the compensation of `flight` failed: non-refundable";
        assert_eq!(
            outcome,
            SagaOutcome::Stuck {
                reason: reason.into()
            }
        );
        assert_eq!(t.status(), format!("stuck: {reason}"));
        assert_eq!(
            events(&t).last(),
            Some(&SagaEvent::Stuck {
                reason: reason.into()
            })
        );

        // Resuming a stuck saga sends nothing and shows the status again.
        let before = t.requests().len();
        let mut again = planner(t.event_log(), |_, _| Ok(Ok(())));
        let outcome = again.call(&Resume {}).unwrap().unwrap();
        assert!(matches!(outcome, Some(SagaOutcome::Stuck { .. })));
        assert!(again.requests().is_empty());
        assert_eq!(again.status(), format!("stuck: {reason}"));
        assert_eq!(t.requests().len(), before);
    }

    #[test]
    fn a_compensation_whose_outcome_stays_unknown_leaves_the_saga_stuck() {
        let mut t = planner(EventLog::new(), |to, what| match (to, what) {
            ("hotels", "book") => Ok(Err("full".into())),
            ("flights", "cancel") => Err(ErrorCode::Timeout.into()),
            _ => Ok(Ok(())),
        });
        let outcome = t.call(&Go { trip: trip() }).unwrap().unwrap();
        let SagaOutcome::Stuck { reason } = outcome else {
            panic!("{outcome:?}");
        };
        assert!(reason.starts_with("the compensation of `flight`: outcome unknown after 3"));
        assert!(t.status().starts_with("stuck: "));
        let undo = requests(&t)
            .into_iter()
            .filter(|r| r.2 == "trip/1/flight/undo")
            .count();
        assert_eq!(undo, 3);
    }

    #[test]
    fn starting_a_saga_again_resumes_it_instead_of_starting_another() {
        let mut t = planner(EventLog::new(), |_, _| Ok(Ok(())));
        t.call(&Go { trip: trip() }).unwrap().unwrap();
        let other = Trip {
            who: "bo".into(),
            crash_after: None,
        };
        assert_eq!(
            t.call(&Go { trip: other }).unwrap(),
            Ok(SagaOutcome::Finished)
        );
        assert_eq!(t.requests().len(), 3, "nothing sent again");
        let input: Trip = t.actor().journal.state().input().unwrap();
        assert_eq!(input.who, "ann");
    }

    #[test]
    fn a_log_of_a_saga_with_other_steps_is_refused() {
        let log = EventLog::new();
        let started = SagaEvent::Started {
            id: "trip/1".into(),
            steps: vec!["flight".into(), "train".into()],
            input: serde_json::to_string(&trip()).unwrap(),
        };
        log.append("trip/1", SagaLog::VERSION, &started);
        let mut t = planner(log, |_, _| Ok(Ok(())));
        let refused = t.call(&Resume {}).unwrap().unwrap_err();
        assert!(
            refused.contains("the log's saga has the steps [\"flight\", \"train\"]"),
            "{refused}"
        );
        assert!(t.requests().is_empty());
    }

    #[test]
    fn the_log_refuses_events_that_do_not_follow() {
        let mut log = SagaLog::default();
        assert!(log.handle(SagaEvent::Finished).is_err());
        let started = SagaEvent::Started {
            id: "s".into(),
            steps: vec!["a".into(), "b".into()],
            input: String::new(),
        };
        for event in log.handle(started).unwrap() {
            log.apply(&event);
        }
        let skip = SagaEvent::StepAttempted {
            step: 1,
            attempt: 1,
        };
        assert!(log.handle(skip).is_err(), "step b before step a succeeded");
        let early = SagaEvent::StepSucceeded {
            step: 0,
            reply: String::new(),
        };
        assert!(log.handle(early).is_err(), "an outcome before an attempt");
        assert!(log.handle(SagaEvent::Compensated).is_err());
    }

    /// Starts a [`Traveller`]'s saga.
    #[derive(Serialize, Deserialize, Message)]
    #[message(reply = Result<SagaOutcome, String>)]
    struct Depart {
        trip: Trip,
    }

    /// What the traveller's reminder delivers.
    #[derive(Serialize, Deserialize, Message)]
    struct Wake {}

    /// Sets the traveller's reminder without starting a saga (a start that stopped before it
    /// recorded anything).
    #[derive(Serialize, Deserialize, Message)]
    #[message(reply = Result<(), String>)]
    struct Arm {}

    #[derive(Default, Serialize, Deserialize)]
    #[serde(default)]
    struct TravellerConfig {
        /// `Durable::while_stuck(None)`.
        cancel_when_stuck: bool,
    }

    /// The trip saga, run durably.
    #[derive(Default)]
    struct Traveller {
        trip: Durable<Trip>,
    }

    #[actor]
    impl Traveller {
        async fn on_start(&mut self, ctx: &Ctx, config: TravellerConfig) -> Result<(), Error> {
            self.trip = Durable::new(trip_saga(), Wake {});
            if config.cancel_when_stuck {
                self.trip = std::mem::take(&mut self.trip).while_stuck(None);
            }
            self.trip.recover(ctx).await
        }

        #[handler]
        async fn depart(&mut self, ctx: &Ctx, msg: Depart) -> Result<SagaOutcome, String> {
            self.trip
                .start(ctx, &msg.trip)
                .await
                .map_err(|e| e.to_string())
        }

        #[handler]
        async fn wake(&mut self, ctx: &Ctx, _msg: Wake) {
            let _ = self.trip.resume(ctx).await;
        }

        #[handler]
        async fn arm(&mut self, ctx: &Ctx, _msg: Arm) -> Result<(), String> {
            let every = Duration::from_secs(1);
            let set = ctx.remind_every(RESUME_REMINDER, every, &Wake {}).await;
            set.map_err(|e| e.to_string())
        }
    }

    /// A traveller named `trip/1` whose participants answer with `answer(target, type)`.
    fn traveller(
        log: EventLog,
        config: TravellerConfig,
        answer: impl Fn(&str, &'static str) -> Result<Result<(), String>, Error> + 'static,
    ) -> TestActor<Traveller> {
        let answer = Rc::new(answer);
        let mut builder = TestActor::<Traveller>::builder().name("trip/1").events(log);
        for to in ["flights", "hotels", "cars"] {
            let (a, answer2) = (answer.clone(), answer.clone());
            builder = builder
                .respond_with::<Book>(to, move |_| a(to, "book").map(|r| r.map(|()| 7)))
                .respond_with::<Cancel>(to, move |_| answer2(to, "cancel"));
        }
        builder.start(config)
    }

    /// The traveller's reminders: `(name, period)`.
    fn reminders(t: &TestActor<Traveller>) -> Vec<(String, Option<Duration>)> {
        t.reminders()
            .into_iter()
            .map(|r| (r.name, r.period))
            .collect()
    }

    fn resume_every(period: Duration) -> Vec<(String, Option<Duration>)> {
        vec![(RESUME_REMINDER.to_owned(), Some(period))]
    }

    #[test]
    fn a_durable_saga_is_settled_by_cancelling_its_reminder() {
        let mut t = traveller(EventLog::new(), TravellerConfig::default(), |_, _| {
            Ok(Ok(()))
        });
        let outcome = t.call(&Depart { trip: trip() }).unwrap();
        assert_eq!(outcome, Ok(SagaOutcome::Finished));
        assert!(reminders(&t).is_empty(), "cancelled once the saga is over");
        assert_eq!(t.actor().trip.status(), &SagaStatus::Finished);

        let mut declined = traveller(
            EventLog::new(),
            TravellerConfig::default(),
            |to, _| match to {
                "cars" => Ok(Err("no cars left".into())),
                _ => Ok(Ok(())),
            },
        );
        let outcome = declined.call(&Depart { trip: trip() }).unwrap().unwrap();
        assert!(
            matches!(outcome, SagaOutcome::Compensated { .. }),
            "{outcome:?}"
        );
        assert!(reminders(&declined).is_empty());
    }

    #[test]
    fn a_restarted_durable_saga_is_resumed_by_its_reminder() {
        let log = EventLog::new();
        let config = || TravellerConfig::default();
        let mut first = traveller(log.clone(), config(), |_, _| Ok(Ok(())));
        let crashing = Trip {
            crash_after: Some("hotel".into()),
            ..trip()
        };
        let crashed = catch_unwind(AssertUnwindSafe(|| first.call(&Depart { trip: crashing })));
        assert!(crashed.is_err(), "the traveller crashed mid-saga");
        drop(first);

        // The new instance (after a restart, or a host restart) does nothing by itself; the
        // reminder, set before the saga started, is what carries it on.
        let mut second = traveller(log, config(), |_, _| Ok(Ok(())));
        assert_eq!(reminders(&second), resume_every(RESUME_EVERY));
        assert_eq!(second.actor().trip.status(), &SagaStatus::Running);
        assert!(second.requests().is_empty());
        second.fire_reminder(RESUME_REMINDER);
        assert_eq!(second.actor().trip.status(), &SagaStatus::Finished);
        assert_eq!(
            requests(&second),
            [
                req("hotels", "Book", "trip/1/hotel"),
                req("cars", "Book", "trip/1/car"),
            ],
            "the step in doubt again with the same key, then the next one"
        );
        assert!(reminders(&second).is_empty(), "settled");
    }

    #[test]
    fn a_stuck_durable_saga_keeps_a_slow_reminder_and_shows_its_status() {
        let stuck = |to: &str, what: &str| match (to, what) {
            ("cars", "book") => Ok(Err("no cars left".into())),
            ("flights", "cancel") => Ok(Err("non-refundable".into())),
            _ => Ok(Ok(())),
        };
        let mut t = traveller(EventLog::new(), TravellerConfig::default(), stuck);
        let outcome = t.call(&Depart { trip: trip() }).unwrap().unwrap();
        assert!(matches!(outcome, SagaOutcome::Stuck { .. }), "{outcome:?}");
        let status = "stuck: the compensation of `flight` failed: non-refundable";
        assert_eq!(t.status(), status);
        assert_eq!(reminders(&t), resume_every(STUCK_EVERY));

        // After a host restart, the slow reminder activates it again to show the status.
        let mut again = traveller(t.event_log(), TravellerConfig::default(), stuck);
        assert_eq!(again.status(), "");
        again.fire_reminder(RESUME_REMINDER);
        assert_eq!(again.status(), status);
        assert!(again.requests().is_empty(), "a stuck saga sends nothing");
        assert_eq!(reminders(&again), resume_every(STUCK_EVERY));

        // Told to, it cancels the reminder of a stuck saga too.
        let config = TravellerConfig {
            cancel_when_stuck: true,
        };
        let mut t = traveller(EventLog::new(), config, stuck);
        let outcome = t.call(&Depart { trip: trip() }).unwrap().unwrap();
        assert!(matches!(outcome, SagaOutcome::Stuck { .. }), "{outcome:?}");
        assert_eq!(t.status(), status);
        assert!(reminders(&t).is_empty());
    }

    #[test]
    fn a_durable_saga_whose_reminder_cannot_be_set_does_not_start() {
        let mut t = traveller(EventLog::new(), TravellerConfig::default(), |_, _| {
            Ok(Ok(()))
        });
        t.set_storage_unavailable(true);
        let refused = t.call(&Depart { trip: trip() }).unwrap().unwrap_err();
        assert!(
            refused.starts_with("the saga was not started: "),
            "{refused}"
        );
        assert!(t.requests().is_empty());
        assert_eq!(t.actor().trip.status(), &SagaStatus::NotStarted);
    }

    #[test]
    fn a_reminder_without_a_started_saga_is_cancelled() {
        let mut t = traveller(EventLog::new(), TravellerConfig::default(), |_, _| {
            Ok(Ok(()))
        });
        t.call(&Arm {}).unwrap().unwrap();
        assert_eq!(reminders(&t), resume_every(RESUME_EVERY));
        t.fire_reminder(RESUME_REMINDER);
        assert!(reminders(&t).is_empty());
        assert!(t.requests().is_empty());
    }

    #[test]
    fn a_repeated_start_of_a_settled_saga_reports_it() {
        let mut t = traveller(EventLog::new(), TravellerConfig::default(), |_, _| {
            Ok(Ok(()))
        });
        t.call(&Depart { trip: trip() }).unwrap().unwrap();
        let outcome = t.call(&Depart { trip: trip() }).unwrap();
        assert_eq!(outcome, Ok(SagaOutcome::Finished));
        assert_eq!(t.requests().len(), 3, "nothing sent again");
        assert!(
            reminders(&t).is_empty(),
            "no reminder set for a saga already started"
        );
    }
}
