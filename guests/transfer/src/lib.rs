//! A transfer between two accounts as a saga ([`bunraku_sdk::saga`]): the virtual actor type
//! `transfer`, one activation per transfer (`transfer/<id>`), whose event log is the saga's log.
//!
//! The saga has two steps, each a request with an idempotency key derived from the transfer's
//! address (`transfer/<id>/withdraw`, `transfer/<id>/deposit`), which the accounts deduplicate:
//!
//! 1. `withdraw`: [`Withdraw`] the amount from `account/<from>`; compensated by [`Refund`]
//!    (key `transfer/<id>/withdraw/undo`), which gives the money back, or voids the transfer
//!    there if the debit never arrived;
//! 2. `deposit`: [`Deposit`] the amount to `account/<to>`.
//!
//! When the withdrawal is refused (insufficient funds, account not open) nothing happened and the
//! saga ends compensated with nothing to undo; when the deposit is refused (the account is not
//! open) the withdrawal is refunded. Either way the money is where it was.
//!
//! The saga runs as a [`Durable`] one: `Transfer` sets a durable reminder (`resume`) before
//! the saga starts and cancels it once the saga is over (a stuck saga's too: a person has to
//! look). If this actor crashes or the host stops mid-transfer, the reminder activates
//! `transfer/<id>` again and [`Durable::resume`] carries on from the log, resending an in-doubt
//! step with the same key. A repeated `Transfer` to the same address moves no money: it resumes
//! (or reports) the saga of the first.

use std::time::Duration;

use bunraku_sdk::journal::{EventsQuery, StateQuery};
use bunraku_sdk::prelude::*;
use bunraku_sdk::saga::{Call, Durable, Retry, Saga, SagaOutcome, SagaStatus, StartError, Step};
use protocol::bank::{Deposit, GetTransfer, Refund, Transfer, Withdraw, account_address};

/// The name of the reminder that resumes an unfinished saga.
pub const RESUME: &str = bunraku_sdk::saga::RESUME_REMINDER;

/// How often the reminder fires while a saga is unfinished.
const RESUME_EVERY: Duration = Duration::from_secs(2);

/// Resume the saga from its log (the [`RESUME`] reminder's message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[message(name = "transfer.resume")]
pub struct Resume {}

/// What the saga runs on; recorded in its log when it starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferInput {
    /// The transfer's id: the key of its address (`t-1` for `transfer/t-1`).
    pub id: String,
    pub from: String,
    pub to: String,
    pub amount: u64,
}

/// The transfer saga.
pub fn transfer_saga() -> Saga<TransferInput> {
    Saga::new()
        .step(
            Step::new("withdraw", |t: &TransferInput| {
                let msg = Withdraw {
                    amount: t.amount,
                    transfer: Some(t.id.clone()),
                };
                Call::request(account_address(&t.from), msg)
            })
            .compensate(|t| {
                let msg = Refund {
                    transfer: t.id.clone(),
                };
                Call::request(account_address(&t.from), msg)
            }),
        )
        .step(Step::new("deposit", |t: &TransferInput| {
            let msg = Deposit {
                amount: t.amount,
                transfer: Some(t.id.clone()),
            };
            Call::request(account_address(&t.to), msg)
        }))
        .retry(Retry {
            timeout: Some(Duration::from_secs(2)),
            ..Retry::default()
        })
}

/// Whether `id` can be an account's key (the address `account/<id>`).
fn valid_key(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 256
        && !id
            .chars()
            .any(|c| c == '/' || c.is_whitespace() || c.is_control())
}

#[derive(Default)]
pub struct TransferActor {
    transfer: Durable<TransferInput>,
}

#[actor]
impl TransferActor {
    async fn on_start(&mut self, ctx: &Ctx) -> Result<(), Error> {
        self.transfer = Durable::new(transfer_saga(), Resume {})
            .reminder(RESUME)
            .every(RESUME_EVERY)
            .while_stuck(None);
        self.transfer.recover(ctx).await
    }

    #[handler]
    async fn transfer(&mut self, ctx: &Ctx, msg: Transfer) -> Result<SagaOutcome, String> {
        let Some((_, id)) = ctx.name().split_once('/') else {
            return Err(format!(
                "`{}` is not a transfer address (transfer/<id>)",
                ctx.name()
            ));
        };
        let input = TransferInput {
            id: id.to_owned(),
            from: msg.from,
            to: msg.to,
            amount: msg.amount,
        };
        if *self.transfer.status() == SagaStatus::NotStarted {
            for account in [&input.from, &input.to] {
                if !valid_key(account) {
                    return Err(format!("`{account}` is not an account id"));
                }
            }
        }
        self.transfer.start(ctx, &input).await.map_err(|e| match e {
            StartError::NotStarted(e) => format!("the transfer was not started: {e}"),
            e => format!(
                "the transfer is not over ({}); it resumes by itself",
                e.error()
            ),
        })
    }

    #[handler]
    async fn resume(&mut self, ctx: &Ctx, _msg: Resume) {
        // Settled at the end; an error is logged, and the reminder fires again.
        let _ = self.transfer.resume(ctx).await;
    }

    #[handler]
    async fn get_transfer(&self, _ctx: &Ctx, _msg: GetTransfer) -> SagaStatus {
        self.transfer.status().clone()
    }

    /// `bunraku events transfer/<id>`: the saga's log.
    #[handler]
    async fn events(&self, ctx: &Ctx, query: EventsQuery) -> Result<Vec<String>, String> {
        self.transfer.journal().answer_events(ctx, query).await
    }

    /// `bunraku state transfer/<id>`: the saga's state.
    #[handler]
    async fn state(&self, ctx: &Ctx, query: StateQuery) -> Result<String, String> {
        self.transfer.journal().answer_state(ctx, query).await
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::rc::Rc;

    use bunraku_sdk::testing::{EventLog, TestActor};
    use protocol::bank::Receipt;

    use super::*;

    /// Balances of the stand-in accounts, by address.
    type Balances = Rc<RefCell<Vec<(String, u64)>>>;

    /// `transfer/t1` with stand-in accounts `ann` (100) and `bob` (0); any other account is
    /// not open.
    fn transfer(log: EventLog, balances: &Balances) -> TestActor<TransferActor> {
        let (w, r, d) = (balances.clone(), balances.clone(), balances.clone());
        let mut t = TestActor::<TransferActor>::builder()
            .name("transfer/t1")
            .events(log)
            .start_default();
        let change = |b: &Balances, to: &str, by: i64| -> Result<Receipt, String> {
            let mut b = b.borrow_mut();
            let Some((_, balance)) = b.iter_mut().find(|(a, _)| a == to) else {
                return Err("account not open".into());
            };
            let next = balance.checked_add_signed(by).ok_or("insufficient funds")?;
            *balance = next;
            Ok(Receipt {
                seq: 1,
                balance: next,
            })
        };
        for account in ["account/ann", "account/bob", "account/nobody"] {
            let (w, r, d) = (w.clone(), r.clone(), d.clone());
            t.respond::<Withdraw>(account, move |m| change(&w, account, -(m.amount as i64)));
            t.respond::<Refund>(account, move |_| change(&r, account, 30));
            t.respond::<Deposit>(account, move |m| change(&d, account, m.amount as i64));
        }
        t
    }

    fn balances() -> Balances {
        Rc::new(RefCell::new(vec![
            ("account/ann".into(), 100),
            ("account/bob".into(), 0),
        ]))
    }

    fn request(from: &str, to: &str, amount: u64) -> Transfer {
        Transfer {
            from: from.into(),
            to: to.into(),
            amount,
        }
    }

    #[test]
    fn a_transfer_withdraws_then_deposits_with_keys() {
        let b = balances();
        let mut t = transfer(EventLog::new(), &b);
        let outcome = t.call(&request("ann", "bob", 30)).unwrap();
        assert_eq!(outcome, Ok(SagaOutcome::Finished));
        assert_eq!(
            *b.borrow(),
            [
                ("account/ann".to_string(), 70),
                ("account/bob".to_string(), 30)
            ]
        );
        let keys: Vec<_> = t
            .requests()
            .iter()
            .map(|r| (r.target.clone(), r.idempotency_key.clone()))
            .collect();
        assert_eq!(
            keys,
            [
                ("account/ann".into(), Some("transfer/t1/withdraw".into())),
                ("account/bob".into(), Some("transfer/t1/deposit".into())),
            ]
        );
        assert!(t.reminders().is_empty(), "cancelled once over");
        assert_eq!(t.call(&GetTransfer {}).unwrap(), SagaStatus::Finished);
        // Asked again: reported, not done again.
        assert_eq!(
            t.call(&request("ann", "bob", 30)).unwrap(),
            Ok(SagaOutcome::Finished)
        );
        assert_eq!(b.borrow()[0].1, 70);
    }

    #[test]
    fn a_refused_deposit_is_compensated_by_a_refund() {
        let b = balances();
        let mut t = transfer(EventLog::new(), &b);
        let outcome = t.call(&request("ann", "nobody", 30)).unwrap().unwrap();
        let SagaOutcome::Compensated { reason } = outcome else {
            panic!("expected a compensated transfer, got {outcome:?}");
        };
        assert!(reason.contains("account not open"), "{reason}");
        assert_eq!(b.borrow()[0].1, 100, "refunded");
        let last = t.requests().last().unwrap().clone();
        assert_eq!(last.target, "account/ann");
        assert_eq!(
            last.idempotency_key.as_deref(),
            Some("transfer/t1/withdraw/undo")
        );
    }

    #[test]
    fn a_refused_withdrawal_moves_nothing() {
        let b = balances();
        let mut t = transfer(EventLog::new(), &b);
        let outcome = t.call(&request("ann", "bob", 500)).unwrap().unwrap();
        assert!(
            matches!(outcome, SagaOutcome::Compensated { .. }),
            "{outcome:?}"
        );
        assert_eq!(t.requests().len(), 1, "no deposit, nothing to refund");
        assert_eq!(b.borrow()[0].1, 100);
    }

    #[test]
    fn a_bad_account_id_is_refused_before_anything_starts() {
        let b = balances();
        let mut t = transfer(EventLog::new(), &b);
        assert!(t.call(&request("ann", "a/b", 1)).unwrap().is_err());
        assert!(t.requests().is_empty());
        assert_eq!(t.call(&GetTransfer {}).unwrap(), SagaStatus::NotStarted);
    }

    #[test]
    fn the_reminder_resumes_a_saga_that_stopped_in_doubt() {
        let b = balances();
        let log = EventLog::new();
        // The first activation crashes while the withdrawal is on its way: the attempt is
        // recorded, its outcome is not. The step is in doubt.
        let mut first = TestActor::<TransferActor>::builder()
            .name("transfer/t1")
            .events(log.clone())
            .start_default();
        first.respond::<Withdraw>("account/ann", |_| -> Result<Receipt, String> {
            panic!("the host went down")
        });
        let crashed = catch_unwind(AssertUnwindSafe(|| first.call(&request("ann", "bob", 30))));
        assert!(crashed.is_err());
        assert_eq!(
            first.reminders()[0].name,
            RESUME,
            "set before the saga started"
        );
        drop(first);

        let mut t = transfer(log, &b);
        let log = t.actor().transfer.log().clone();
        assert_eq!(log.status(), &SagaStatus::Running, "recovered mid-saga");
        assert!(log.steps()[0].in_doubt());
        // The reminder fires: the withdrawal is sent again with the same key.
        t.send(&Resume {}).unwrap();
        assert_eq!(t.call(&GetTransfer {}).unwrap(), SagaStatus::Finished);
        let keys: Vec<_> = t
            .requests()
            .iter()
            .map(|r| r.idempotency_key.clone().unwrap())
            .collect();
        assert_eq!(keys, ["transfer/t1/withdraw", "transfer/t1/deposit"]);
        assert_eq!(
            *b.borrow(),
            [
                ("account/ann".to_string(), 70),
                ("account/bob".to_string(), 30)
            ]
        );
    }
}
