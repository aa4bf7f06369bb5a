//! A bank account as an event-sourced virtual actor: `account/<id>`, one activation per account,
//! deactivated when idle and rebuilt from its log (the latest snapshot and the events after it)
//! by the next message.
//!
//! The state is never saved as such: every command becomes events in the account's log
//! ([`Journal`]), and the state is their fold ([`Account`]). Commands sent with an idempotency
//! key (the transfers' saga sends every step with one) are applied at most once per key
//! ([`Journal::execute_once`]); a repeat gets the first answer. `BalanceAt` replays the log up to
//! an earlier event (a temporal query), and the two journal queries answer `bunraku events` and
//! `bunraku state`.
//!
//! A snapshot is stored every [`Account::SNAPSHOT_EVERY`] records, so a recovery replays at
//! most that many.

use std::collections::BTreeMap;
use std::fmt;

use bunraku_sdk::journal::{Aggregate, At, EventsQuery, Journal, StateQuery};
use bunraku_sdk::prelude::*;
use protocol::bank::{
    AccountEvent, Balance, BalanceAt, Deposit, GetBalance, Open, Receipt, Refund, Withdraw,
};

/// What an account is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Open,
    Deposit {
        amount: u64,
        transfer: Option<String>,
    },
    Withdraw {
        amount: u64,
        transfer: Option<String>,
    },
    Refund {
        transfer: String,
    },
}

/// Why an account refused a command. Recorded with the key of a keyed command, so a repeat is
/// refused the same way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rejection {
    NotOpen,
    AlreadyOpen,
    ZeroAmount,
    InsufficientFunds {
        balance: u64,
        amount: u64,
    },
    /// A debit for a transfer that already has one, or that was refunded or voided.
    TransferClosed {
        transfer: String,
    },
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotOpen => write!(f, "account not open"),
            Self::AlreadyOpen => write!(f, "account already open"),
            Self::ZeroAmount => write!(f, "the amount must be positive"),
            Self::InsufficientFunds { balance, amount } => {
                write!(f, "insufficient funds: balance {balance}, asked {amount}")
            }
            Self::TransferClosed { transfer } => {
                write!(f, "transfer {transfer} was already debited or called off")
            }
        }
    }
}

/// What happened to the debit of a transfer from this account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Debit {
    Withdrawn(u64),
    Refunded(u64),
    /// Called off before any debit arrived.
    Voided,
}

/// The account's state: the fold of its events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub open: bool,
    pub balance: u64,
    /// The debits of transfers from this account, by transfer id.
    pub debits: BTreeMap<String, Debit>,
}

impl Aggregate for Account {
    type Command = Command;
    type Event = AccountEvent;
    type Rejection = Rejection;

    /// Small, so the example's accounts are snapshotted (and `BalanceAt` and recoveries start
    /// from a snapshot).
    const SNAPSHOT_EVERY: u64 = 5;

    fn handle(&self, command: Command) -> Result<Vec<AccountEvent>, Rejection> {
        if !self.open {
            return match command {
                Command::Open => Ok(vec![AccountEvent::Opened]),
                _ => Err(Rejection::NotOpen),
            };
        }
        match command {
            Command::Open => Err(Rejection::AlreadyOpen),
            Command::Deposit { amount: 0, .. } | Command::Withdraw { amount: 0, .. } => {
                Err(Rejection::ZeroAmount)
            }
            Command::Deposit { amount, transfer } => {
                Ok(vec![AccountEvent::Deposited { amount, transfer }])
            }
            Command::Withdraw { amount, transfer } => {
                if let Some(t) = transfer.as_ref().filter(|t| self.debits.contains_key(*t)) {
                    return Err(Rejection::TransferClosed {
                        transfer: t.clone(),
                    });
                }
                if amount > self.balance {
                    return Err(Rejection::InsufficientFunds {
                        balance: self.balance,
                        amount,
                    });
                }
                Ok(vec![AccountEvent::Withdrew { amount, transfer }])
            }
            Command::Refund { transfer } => match self.debits.get(&transfer) {
                Some(Debit::Withdrawn(amount)) => Ok(vec![AccountEvent::Refunded {
                    amount: *amount,
                    transfer,
                }]),
                // Refunded or voided before: nothing more to do.
                Some(_) => Ok(Vec::new()),
                // The debit never arrived (or has not yet): make sure it never applies.
                None => Ok(vec![AccountEvent::Voided { transfer }]),
            },
        }
    }

    fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Opened => self.open = true,
            AccountEvent::Deposited { amount, .. } => self.balance += amount,
            AccountEvent::Withdrew { amount, transfer } => {
                self.balance -= amount;
                if let Some(t) = transfer {
                    self.debits.insert(t.clone(), Debit::Withdrawn(*amount));
                }
            }
            AccountEvent::Refunded { amount, transfer } => {
                self.balance += amount;
                self.debits
                    .insert(transfer.clone(), Debit::Refunded(*amount));
            }
            AccountEvent::Voided { transfer } => {
                self.debits.insert(transfer.clone(), Debit::Voided);
            }
        }
    }
}

/// The actor: the journal of one account.
#[derive(Default)]
pub struct AccountActor {
    journal: Journal<Account>,
}

impl AccountActor {
    /// Executes `command`, once per idempotency key when the message carries one, and answers
    /// with the receipt: the sequence number the command came to and the balance right after it
    /// (for a repeated key, as it was then).
    async fn run(&mut self, ctx: &Ctx, command: Command) -> Result<Receipt, String> {
        let outcome = match ctx.idempotency_key() {
            Some(key) => self.journal.execute_once(ctx, key, command).await,
            None => self.journal.execute(ctx, command).await,
        };
        let seq = match outcome {
            Ok(Ok(seq)) => seq,
            Ok(Err(rejection)) => return Err(rejection.to_string()),
            Err(e) => {
                // Nothing was applied. After a conflict the journal is behind its log.
                if e.code() == ErrorCode::Conflict {
                    match Journal::recover(ctx).await {
                        Ok(journal) => self.journal = journal,
                        Err(e) => ctx.error(format_args!("recovering the journal: {e}")),
                    }
                }
                return Err(format!("not recorded: {e}"));
            }
        };
        if seq == self.journal.seq() {
            return Ok(Receipt {
                seq,
                balance: self.journal.state().balance,
            });
        }
        // A repeated key: the balance as it was just after that command.
        match Journal::<Account>::state_at(ctx, At::Seq(seq)).await {
            Ok((then, seq)) => Ok(Receipt {
                seq,
                balance: then.balance,
            }),
            Err(e) => Err(format!("reading the log at seq {seq}: {e}")),
        }
    }
}

#[actor]
impl AccountActor {
    async fn on_start(&mut self, ctx: &Ctx) -> Result<(), Error> {
        self.journal = Journal::recover(ctx).await?;
        if self.journal.seq() > 0 {
            let state = self.journal.state();
            ctx.debug(format_args!(
                "recovered at seq {}: balance {}",
                self.journal.seq(),
                state.balance
            ));
        }
        Ok(())
    }

    #[handler]
    async fn open(&mut self, ctx: &Ctx, _msg: Open) -> Result<Receipt, String> {
        self.run(ctx, Command::Open).await
    }

    #[handler]
    async fn deposit(&mut self, ctx: &Ctx, msg: Deposit) -> Result<Receipt, String> {
        let command = Command::Deposit {
            amount: msg.amount,
            transfer: msg.transfer,
        };
        self.run(ctx, command).await
    }

    #[handler]
    async fn withdraw(&mut self, ctx: &Ctx, msg: Withdraw) -> Result<Receipt, String> {
        let command = Command::Withdraw {
            amount: msg.amount,
            transfer: msg.transfer,
        };
        self.run(ctx, command).await
    }

    #[handler]
    async fn refund(&mut self, ctx: &Ctx, msg: Refund) -> Result<Receipt, String> {
        let command = Command::Refund {
            transfer: msg.transfer,
        };
        self.run(ctx, command).await
    }

    #[handler]
    async fn get_balance(&self, _ctx: &Ctx, _msg: GetBalance) -> Balance {
        let state = self.journal.state();
        Balance {
            open: state.open,
            balance: state.balance,
            seq: self.journal.seq(),
        }
    }

    #[handler]
    async fn balance_at(&self, ctx: &Ctx, msg: BalanceAt) -> Result<Balance, String> {
        let last = self.journal.seq();
        if msg.seq > last {
            return Err(format!("the log ends at seq {last}"));
        }
        let (then, seq) = Journal::<Account>::state_at(ctx, At::Seq(msg.seq))
            .await
            .map_err(|e| e.to_string())?;
        Ok(Balance {
            open: then.open,
            balance: then.balance,
            seq,
        })
    }

    #[handler]
    async fn events(&self, ctx: &Ctx, query: EventsQuery) -> Result<Vec<String>, String> {
        self.journal.answer_events(ctx, query).await
    }

    #[handler]
    async fn state(&self, ctx: &Ctx, query: StateQuery) -> Result<String, String> {
        self.journal.answer_state(ctx, query).await
    }
}

#[cfg(test)]
mod tests {
    use bunraku_sdk::testing::TestActor;

    use super::*;

    fn account() -> TestActor<AccountActor> {
        TestActor::builder().name("account/ann").start_default()
    }

    fn deposit(amount: u64) -> Deposit {
        Deposit {
            amount,
            transfer: None,
        }
    }

    fn withdraw(amount: u64, transfer: Option<&str>) -> Withdraw {
        Withdraw {
            amount,
            transfer: transfer.map(str::to_owned),
        }
    }

    #[test]
    fn commands_become_events_and_the_balance_is_their_fold() {
        let mut a = account();
        assert_eq!(a.call(&deposit(5)).unwrap(), Err("account not open".into()));
        assert_eq!(
            a.call(&Open {}).unwrap(),
            Ok(Receipt { seq: 1, balance: 0 })
        );
        assert_eq!(
            a.call(&Open {}).unwrap(),
            Err("account already open".into())
        );
        assert_eq!(
            a.call(&deposit(100)).unwrap(),
            Ok(Receipt {
                seq: 2,
                balance: 100
            })
        );
        assert_eq!(
            a.call(&withdraw(30, None)).unwrap(),
            Ok(Receipt {
                seq: 3,
                balance: 70
            })
        );
        assert_eq!(
            a.call(&withdraw(71, None)).unwrap(),
            Err("insufficient funds: balance 70, asked 71".into())
        );
        assert_eq!(
            a.call(&GetBalance {}).unwrap(),
            Balance {
                open: true,
                balance: 70,
                seq: 3
            }
        );
        assert_eq!(
            a.event_log().decoded::<AccountEvent>("account/ann"),
            [
                AccountEvent::Opened,
                AccountEvent::Deposited {
                    amount: 100,
                    transfer: None
                },
                AccountEvent::Withdrew {
                    amount: 30,
                    transfer: None
                },
            ]
        );
    }

    #[test]
    fn a_repeated_key_is_applied_once_and_answered_as_the_first_time() {
        let mut a = account();
        a.call(&Open {}).unwrap().unwrap();
        let first = a.call_keyed(&deposit(10), "k1").unwrap();
        assert_eq!(
            first,
            Ok(Receipt {
                seq: 3,
                balance: 10
            }),
            "event, then marker"
        );
        a.call(&deposit(5)).unwrap().unwrap();
        assert_eq!(a.call_keyed(&deposit(10), "k1").unwrap(), first);
        assert_eq!(a.actor().journal.state().balance, 15);
        // A refusal is recorded too.
        let refused = a.call_keyed(&withdraw(99, None), "k2").unwrap();
        a.call(&deposit(100)).unwrap().unwrap();
        assert_eq!(a.call_keyed(&withdraw(99, None), "k2").unwrap(), refused);
        assert_eq!(a.actor().journal.state().balance, 115);
    }

    #[test]
    fn a_refund_gives_back_a_debit_once_and_voids_one_that_never_came() {
        let mut a = account();
        a.call(&Open {}).unwrap().unwrap();
        a.call(&deposit(50)).unwrap().unwrap();
        a.call(&withdraw(20, Some("t1"))).unwrap().unwrap();
        let refund = |t: &str| Refund {
            transfer: t.to_owned(),
        };
        assert_eq!(a.call(&refund("t1")).unwrap().unwrap().balance, 50);
        assert_eq!(a.call(&refund("t1")).unwrap().unwrap().balance, 50);
        assert_eq!(
            a.call(&withdraw(20, Some("t1"))).unwrap(),
            Err("transfer t1 was already debited or called off".into())
        );
        // The compensation of a debit that has not arrived: a late debit is refused.
        assert_eq!(a.call(&refund("t2")).unwrap().unwrap().balance, 50);
        assert!(a.call(&withdraw(5, Some("t2"))).unwrap().is_err());
        assert_eq!(a.actor().journal.state().balance, 50);
    }

    #[test]
    fn balance_at_replays_an_earlier_state_across_snapshots() {
        let mut a = account();
        a.call(&Open {}).unwrap().unwrap();
        let mut receipts = Vec::new();
        for n in 1..=12 {
            receipts.push(a.call(&deposit(n)).unwrap().unwrap());
        }
        assert!(!a.event_log().snapshots_of("account/ann").is_empty());
        for r in &receipts {
            let then = a.call(&BalanceAt { seq: r.seq }).unwrap().unwrap();
            assert_eq!((then.seq, then.balance), (r.seq, r.balance));
        }
        assert_eq!(
            a.call(&BalanceAt { seq: 1 }).unwrap(),
            Ok(Balance {
                open: true,
                balance: 0,
                seq: 1
            })
        );
        assert!(a.call(&BalanceAt { seq: 99 }).unwrap().is_err());
    }

    #[test]
    fn a_new_activation_recovers_the_account_from_its_log() {
        let mut a = account();
        a.call(&Open {}).unwrap().unwrap();
        for _ in 0..7 {
            a.call_keyed(&deposit(3), "same").unwrap().unwrap();
            a.call(&deposit(1)).unwrap().unwrap();
        }
        let log = a.event_log();
        drop(a);
        let mut b = TestActor::<AccountActor>::builder()
            .name("account/ann")
            .events(log)
            .start_default();
        assert_eq!(b.call(&GetBalance {}).unwrap().balance, 10);
        assert_eq!(b.call_keyed(&deposit(3), "same").unwrap().unwrap().seq, 3);
        assert_eq!(b.actor().journal.state().balance, 10);
    }

    #[test]
    fn the_journal_queries_render_events_and_state_as_json() {
        let mut a = account();
        a.call(&Open {}).unwrap().unwrap();
        a.call(&deposit(7)).unwrap().unwrap();
        let lines = a.call(&EventsQuery { from: 0 }).unwrap().unwrap();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].contains(r#""event":"Opened""#), "{}", lines[0]);
        assert!(
            lines[1].contains(r#""event":{"Deposited":{"amount":7,"transfer":null}}"#),
            "{}",
            lines[1]
        );
        let state = a.call(&StateQuery { at: None }).unwrap().unwrap();
        assert_eq!(state, r#"{"open":true,"balance":7,"debits":{}}"#);
    }
}
