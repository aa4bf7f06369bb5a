//! The order saga's orchestrator: a virtual actor type, one activation per order
//! (`order/<id>`), running the saga *reserve stock → charge payment → ship* with
//! [`bunraku_sdk::saga`]. Its event log is the saga's log.
//!
//! The saga runs as a [`Durable`] one, which survives crashes and host restarts:
//!
//! - `PlaceOrder` sets a durable reminder (`resume`, every `resume_every_ms`) **before** the
//!   saga starts, then starts it and replies with the order's status when it ends. A repeated
//!   `PlaceOrder` does not start another saga.
//! - The reminder (`ResumeOrder`) resumes the saga from its log: after a crash of this actor, or
//!   a host restart (the reminder activates the order again). It is cancelled once the saga
//!   finished or was compensated; a stuck saga keeps a slow one (every minute), which activates
//!   it after a host restart so its `stuck: ...` status is shown again in `bunraku ps`.
//! - `GetOrder` answers the status; `bunraku.events` and `bunraku.state` (the CLI's `events`
//!   and `state` commands) are answered from the journal.
//!
//! Failure injection: `PlaceOrder::crash_after_delivery` names a step after whose reply this
//! actor panics (traps) before recording the outcome, on the step's first attempt only (the log
//! says which attempt it is, so the restarted actor does not crash again).

use std::time::Duration;

use bunraku_sdk::journal::{EventsQuery, StateQuery};
use bunraku_sdk::prelude::*;
use bunraku_sdk::saga::{Call, Durable, Retry, Saga, SagaLog, StartError, Step, StepOutcome};
use protocol::orders::{
    Charge, GetOrder, Order, OrderStatus, PlaceOrder, Refund, Release, Reserve, ResumeOrder, Ship,
    StepView,
};

/// The name of the reminder that resumes the saga.
pub const RESUME: &str = bunraku_sdk::saga::RESUME_REMINDER;

/// Settings from the manifest.
#[derive(Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub inventory: String,
    pub payment: String,
    pub shipping: String,
    /// The resume reminder's period (at least 1000).
    pub resume_every_ms: u64,
    /// Attempts per step before it is given up (see `Retry::max_attempts`).
    pub max_attempts: u32,
    /// Each participant request's timeout; 0: the actor's `request_timeout_ms`.
    pub request_timeout_ms: u64,
    /// The first backoff between attempts.
    pub backoff_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            inventory: "inventory".into(),
            payment: "payment".into(),
            shipping: "shipping".into(),
            resume_every_ms: 1000,
            max_attempts: 5,
            request_timeout_ms: 0,
            backoff_ms: 200,
        }
    }
}

/// The saga over an [`Order`], its requests going to the actors `config` names.
pub fn order_saga(config: &Config) -> Saga<Order> {
    let (inventory, payment, shipping) = (
        config.inventory.clone(),
        config.payment.clone(),
        config.shipping.clone(),
    );
    let release_from = inventory.clone();
    let refund_from = payment.clone();
    Saga::new()
        .step(
            Step::new("reserve", move |o: &Order| {
                let msg = Reserve {
                    order: o.id.clone(),
                    item: o.item.clone(),
                    quantity: o.quantity,
                };
                Call::request(inventory.as_str(), msg)
            })
            .compensate(move |o| {
                let msg = Release {
                    order: o.id.clone(),
                };
                Call::request(release_from.as_str(), msg)
            }),
        )
        .step(
            Step::new("charge", move |o: &Order| {
                let msg = Charge {
                    order: o.id.clone(),
                    customer: o.customer.clone(),
                    amount: o.amount,
                };
                Call::request(payment.as_str(), msg)
            })
            .compensate(move |o| {
                let msg = Refund {
                    order: o.id.clone(),
                };
                Call::request(refund_from.as_str(), msg)
            }),
        )
        .step(Step::new("ship", move |o: &Order| {
            let msg = Ship {
                order: o.id.clone(),
                customer: o.customer.clone(),
                item: o.item.clone(),
                quantity: o.quantity,
            };
            Call::request(shipping.as_str(), msg)
        }))
        .retry(Retry {
            max_attempts: config.max_attempts.max(1),
            backoff_initial: Duration::from_millis(config.backoff_ms),
            timeout: (config.request_timeout_ms > 0)
                .then(|| Duration::from_millis(config.request_timeout_ms)),
            ..Retry::default()
        })
        .inspect_reply(|order, attempt| {
            if order.crash_after_delivery.as_deref() == Some(attempt.step)
                && !attempt.compensation
                && attempt.attempt == 1
            {
                panic!(
                    "failure injection: crashing after the reply of `{}` (attempt 1), before \
                     recording it",
                    attempt.step
                );
            }
        })
}

/// The order id in an address `order/<id>` (the whole address when it has no `/`).
fn order_id(address: &str) -> &str {
    address.rsplit_once('/').map_or(address, |(_, id)| id)
}

/// The status of the saga in `log`.
pub fn order_status(log: &SagaLog) -> OrderStatus {
    let status = log.status();
    OrderStatus {
        saga: log.id().to_owned(),
        state: status.name().to_owned(),
        reason: status.reason().map(str::to_owned),
        steps: log
            .steps()
            .iter()
            .map(|s| StepView {
                name: s.name.clone(),
                attempts: s.attempts,
                outcome: match &s.outcome {
                    StepOutcome::Pending => "pending".to_owned(),
                    StepOutcome::Succeeded { .. } => "succeeded".to_owned(),
                    StepOutcome::Failed { reason } => format!("failed: {reason}"),
                    StepOutcome::Abandoned { reason } => format!("abandoned: {reason}"),
                },
                undo_attempts: s.undo_attempts,
                undone: s.undone,
            })
            .collect(),
        charge: log.reply("charge"),
        tracking: log.reply("ship"),
    }
}

#[derive(Default)]
pub struct OrderSaga {
    order: Durable<Order>,
}

#[actor]
impl OrderSaga {
    async fn on_start(&mut self, ctx: &Ctx, config: Config) -> Result<(), Error> {
        self.order = Durable::new(order_saga(&config), ResumeOrder {})
            .reminder(RESUME)
            .every(Duration::from_millis(config.resume_every_ms));
        self.order.recover(ctx).await
    }

    #[handler]
    async fn place_order(&mut self, ctx: &Ctx, msg: PlaceOrder) -> Result<OrderStatus, String> {
        let order = Order {
            id: order_id(ctx.name()).to_owned(),
            customer: msg.customer,
            item: msg.item,
            quantity: msg.quantity,
            amount: msg.amount,
            crash_after_delivery: msg.crash_after_delivery,
        };
        // Over, or stopped (and resumed by the reminder): the status says which.
        if let Err(e @ StartError::NotStarted(_)) = self.order.start(ctx, &order).await {
            return Err(e.to_string());
        }
        Ok(order_status(self.order.log()))
    }

    #[handler]
    async fn resume_order(&mut self, ctx: &Ctx, _msg: ResumeOrder) {
        // Settled at the end; an error is logged, and the reminder fires again.
        let _ = self.order.resume(ctx).await;
    }

    #[handler]
    async fn get_order(&mut self, _ctx: &Ctx, _msg: GetOrder) -> OrderStatus {
        order_status(self.order.log())
    }

    /// `bunraku events order/<id>`: the saga's log, one JSON line per event.
    #[handler]
    async fn events(&mut self, ctx: &Ctx, query: EventsQuery) -> Result<Vec<String>, String> {
        self.order.journal().answer_events(ctx, query).await
    }

    /// `bunraku state order/<id>`: the saga's state as JSON.
    #[handler]
    async fn state(&mut self, ctx: &Ctx, query: StateQuery) -> Result<String, String> {
        self.order.journal().answer_state(ctx, query).await
    }
}

#[cfg(test)]
mod tests {
    use std::panic::{AssertUnwindSafe, catch_unwind};

    use super::*;
    use bunraku_sdk::saga::SagaEvent;
    use bunraku_sdk::testing::{EventLog, TestActor};

    /// `order/42` with stand-in participants: the card declines `declined`; every request is
    /// recorded (with its key) by the test host.
    fn orchestrator(log: EventLog) -> TestActor<OrderSaga> {
        TestActor::<OrderSaga>::builder()
            .name("order/42")
            .events(log)
            .respond::<Reserve>("inventory", |r| Ok(10 - r.quantity))
            .respond::<Release>("inventory", |_| Ok(2))
            .respond::<Charge>("payment", |c| {
                if c.customer == "declined" {
                    Err("card declined".into())
                } else {
                    Ok(format!("ch-{}", c.order))
                }
            })
            .respond::<Refund>("payment", |_| Ok(0))
            .respond::<Ship>("shipping", |s| Ok(format!("trk-{}", s.order)))
            .start_default()
    }

    fn place(customer: &str, crash: Option<&str>) -> PlaceOrder {
        PlaceOrder {
            customer: customer.into(),
            item: "widget".into(),
            quantity: 2,
            amount: 1500,
            crash_after_delivery: crash.map(str::to_owned),
        }
    }

    /// `(target, key)` of every request made.
    fn keys(t: &TestActor<OrderSaga>) -> Vec<(String, String)> {
        t.requests()
            .iter()
            .map(|r| {
                (
                    r.target.clone(),
                    r.idempotency_key.clone().unwrap_or_default(),
                )
            })
            .collect()
    }

    fn key(target: &str, key: &str) -> (String, String) {
        (target.into(), key.into())
    }

    #[test]
    fn an_order_that_can_be_paid_finishes_and_cancels_its_reminder() {
        let mut t = orchestrator(EventLog::new());
        let status = t.call(&place("ann", None)).unwrap().unwrap();
        assert_eq!(status.state, "finished");
        assert_eq!(status.charge.as_deref(), Some("ch-42"));
        assert_eq!(status.tracking.as_deref(), Some("trk-42"));
        assert_eq!(
            keys(&t),
            [
                key("inventory", "order/42/reserve"),
                key("payment", "order/42/charge"),
                key("shipping", "order/42/ship"),
            ]
        );
        assert!(t.reminders().is_empty(), "the resume reminder is cancelled");
        assert_eq!(t.call(&GetOrder {}).unwrap(), status);
    }

    #[test]
    fn a_declined_card_releases_the_stock_and_ships_nothing() {
        let mut t = orchestrator(EventLog::new());
        let status = t.call(&place("declined", None)).unwrap().unwrap();
        assert_eq!(status.state, "compensated");
        assert_eq!(
            status.reason.as_deref(),
            Some("step `charge` failed: card declined")
        );
        assert_eq!(
            keys(&t),
            [
                key("inventory", "order/42/reserve"),
                key("payment", "order/42/charge"),
                key("inventory", "order/42/reserve/undo"),
            ]
        );
        assert!(status.step("reserve").unwrap().undone);
        assert!(t.reminders().is_empty());
    }

    #[test]
    fn a_crash_after_delivery_is_resumed_by_the_reminder_with_the_same_key() {
        let log = EventLog::new();
        let mut first = orchestrator(log.clone());
        let crash = catch_unwind(AssertUnwindSafe(|| {
            first.call(&place("ann", Some("charge")))
        }));
        assert!(crash.is_err(), "the orchestrator trapped");
        drop(first);

        // The restarted activation: the reminder set before the saga started is still there.
        let mut second = orchestrator(log.clone());
        let reminder = &second.reminders()[0];
        assert_eq!(
            (reminder.name.as_str(), reminder.period),
            (RESUME, Some(Duration::from_secs(1)))
        );
        assert_eq!(second.call(&GetOrder {}).unwrap().state, "running");
        second.fire_reminder(RESUME);
        let status = second.call(&GetOrder {}).unwrap();
        assert_eq!(status.state, "finished");
        assert_eq!(status.step("charge").unwrap().attempts, 2);
        assert_eq!(
            keys(&second),
            [
                key("payment", "order/42/charge"),
                key("shipping", "order/42/ship"),
            ]
        );
        assert!(second.reminders().is_empty());
        let events: Vec<SagaEvent> = log.decoded("order/42");
        assert!(events.contains(&SagaEvent::StepAttempted {
            step: 1,
            attempt: 2
        }));
    }

    #[test]
    fn the_saga_log_answers_the_cli_queries() {
        let mut t = orchestrator(EventLog::new());
        t.call(&place("ann", None)).unwrap().unwrap();
        let lines = t.call(&EventsQuery { from: 0 }).unwrap().unwrap();
        assert_eq!(lines.len(), 8, "{lines:#?}");
        assert!(lines[0].contains("Started"), "{}", lines[0]);
        assert!(lines[7].contains("Finished"), "{}", lines[7]);
        let state = t.call(&StateQuery { at: None }).unwrap().unwrap();
        assert!(state.contains(r#""status":"Finished""#), "{state}");
    }
}
