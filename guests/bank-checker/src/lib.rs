//! The event-sourcing example's driver and self-check. On `Smoke` it opens three accounts for
//! this run (`alice-<tag>`, `bob-<tag>` and `carol-<tag>`, where the tag comes from the clock, so
//! runs on a data directory kept from earlier runs do not meet each other's accounts), moves
//! money by hand and by transfers, and checks:
//!
//! - each command's answer (balances, an account opened once, an overdraft refused, a deposit
//!   retried with its idempotency key applied once);
//! - transfers: one that goes through, one to an account that was never opened (its deposit is
//!   refused, so the withdrawal is refunded), one from an account that is short (nothing moves),
//!   and the first one asked again (nothing moves again);
//! - that money is conserved: the accounts hold what was deposited minus what was withdrawn;
//! - temporal queries: `BalanceAt` each earlier sequence number is the balance answered then;
//! - each account's own log (`bunraku.events`, what `bunraku events` prints) holds exactly the
//!   events of what was done, and `bunraku.state` the final balance;
//! - the audit trail (a projection of every account's events) catches up with each log, in
//!   order, within `catch_up_ms`.

use std::time::{SystemTime, UNIX_EPOCH};

use bunraku_sdk::journal::{EventsQuery, StateQuery};
use bunraku_sdk::prelude::*;
use bunraku_sdk::saga::{SagaOutcome, SagaStatus};
use protocol::bank::{
    AccountEvent, Balance, BalanceAt, Deposit, GetBalance, GetTrail, GetTransfer, Open, Receipt,
    Transfer, Withdraw, account_address,
};
use protocol::{Smoke, SmokeReport};

/// Settings from the manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// The audit actor.
    pub audit: String,
    /// How long the audit trail may take to catch up with the accounts' logs.
    pub catch_up_ms: u64,
    /// The accounts' and transfers' suffix; `None`: a new one per run, from the clock.
    pub tag: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            audit: "audit".into(),
            catch_up_ms: 10_000,
            tag: None,
        }
    }
}

#[derive(Default)]
pub struct Checker {
    config: Config,
}

/// The time between two looks at the audit trail.
const POLL: Duration = Duration::from_millis(50);

/// A run's tag: the clock in milliseconds, base 36.
fn clock_tag() -> String {
    let mut ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut tag = Vec::new();
    loop {
        tag.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[(ms % 36) as usize]);
        ms /= 36;
        if ms == 0 {
            break;
        }
    }
    tag.reverse();
    String::from_utf8(tag).unwrap_or_default()
}

/// One account of the run: its id, its address, and what the checker expects of it.
struct Account {
    id: String,
    address: String,
    /// The events its log must hold, in order.
    events: Vec<AccountEvent>,
    /// Receipts answered along the way: the balance as of each sequence number.
    receipts: Vec<Receipt>,
}

impl Account {
    fn new(name: &str, tag: &str) -> Self {
        let id = format!("{name}-{tag}");
        Self {
            address: account_address(&id),
            id,
            events: Vec::new(),
            receipts: Vec::new(),
        }
    }
}

/// The events of an account's log, from its `bunraku.events` lines: `(seq, event as JSON)`,
/// leaving out the SDK's deduplication markers.
fn parse_event_lines(lines: &[String]) -> Result<Vec<(u64, serde_json::Value)>, String> {
    let mut events = Vec::new();
    for line in lines {
        let mut value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("`{line}`: {e}"))?;
        let seq = value["seq"]
            .as_u64()
            .ok_or_else(|| format!("`{line}` has no seq"))?;
        if value.get("dedup").is_some() {
            continue;
        }
        match value.get_mut("event") {
            Some(event) => events.push((seq, event.take())),
            None => return Err(format!("`{line}` holds no event")),
        }
    }
    Ok(events)
}

fn json(event: &AccountEvent) -> serde_json::Value {
    serde_json::to_value(event).unwrap_or_default()
}

impl Checker {
    async fn open(&self, ctx: &Ctx, a: &mut Account) -> Result<Receipt, String> {
        let r = request(ctx, &a.address, &Open {}).await?;
        a.events.push(AccountEvent::Opened);
        a.receipts.push(r);
        Ok(r)
    }

    async fn deposit(
        &self,
        ctx: &Ctx,
        a: &mut Account,
        amount: u64,
        key: Option<&str>,
    ) -> Result<Receipt, String> {
        let msg = Deposit {
            amount,
            transfer: None,
        };
        let r = match key {
            Some(key) => flatten(ctx.request_keyed(&a.address, &msg, key, None).await)?,
            None => request(ctx, &a.address, &msg).await?,
        };
        a.events.push(AccountEvent::Deposited {
            amount,
            transfer: None,
        });
        a.receipts.push(r);
        Ok(r)
    }

    async fn withdraw(&self, ctx: &Ctx, a: &mut Account, amount: u64) -> Result<Receipt, String> {
        let msg = Withdraw {
            amount,
            transfer: None,
        };
        let r = request(ctx, &a.address, &msg).await?;
        a.events.push(AccountEvent::Withdrew {
            amount,
            transfer: None,
        });
        a.receipts.push(r);
        Ok(r)
    }

    /// The balance now, recorded as a receipt for the temporal check.
    async fn balance(&self, ctx: &Ctx, a: &mut Account) -> Result<Balance, String> {
        let b = ctx
            .request(&a.address, &GetBalance {})
            .await
            .map_err(|e| format!("{}: {e}", a.address))?;
        a.receipts.push(Receipt {
            seq: b.seq,
            balance: b.balance,
        });
        Ok(b)
    }

    /// Runs transfer `id` (the actor `transfer/<id>`).
    async fn transfer(
        &self,
        ctx: &Ctx,
        id: &str,
        from: &Account,
        to: &Account,
        amount: u64,
    ) -> Result<SagaOutcome, String> {
        let msg = Transfer {
            from: from.id.clone(),
            to: to.id.clone(),
            amount,
        };
        request(ctx, &format!("transfer/{id}"), &msg).await
    }

    /// Waits (at most `catch_up_ms`) until the audit trail holds `count` lines of `account`.
    async fn trail(
        &self,
        ctx: &Ctx,
        account: &str,
        count: usize,
    ) -> Result<Vec<protocol::bank::AuditLine>, String> {
        let rounds = self.config.catch_up_ms / POLL.as_millis() as u64 + 1;
        let mut lines = Vec::new();
        for round in 0..rounds {
            let msg = GetTrail {
                account: Some(account.to_owned()),
            };
            lines = ctx
                .request(&self.config.audit, &msg)
                .await
                .map_err(|e| format!("{}: {e}", self.config.audit))?
                .lines;
            if lines.len() >= count {
                break;
            }
            if round + 1 < rounds {
                ctx.sleep(POLL).await.map_err(|e| e.to_string())?;
            }
        }
        Ok(lines)
    }

    async fn run(&self, ctx: &Ctx, report: &mut SmokeReport) -> Result<(), String> {
        let tag = self.config.tag.clone().unwrap_or_else(clock_tag);
        let mut alice = Account::new("alice", &tag);
        let mut bob = Account::new("bob", &tag);
        // Never opened: deposits to it are refused.
        let mut carol = Account::new("carol", &tag);
        ctx.info(format_args!(
            "accounts of this run: {}, {}, {} (never opened)",
            alice.address, bob.address, carol.address
        ));

        // Opening.
        let a = self.open(ctx, &mut alice).await?;
        let b = self.open(ctx, &mut bob).await?;
        report.check(
            "opened accounts start empty",
            a.balance == 0 && b.balance == 0,
            format!("{a:?}, {b:?}"),
        );
        let again = request(ctx, &alice.address, &Open {}).await;
        report.check(
            "an account opens once",
            again.as_ref().is_err_and(|e| e.contains("already open")),
            format!("opening {} again: {again:?}", alice.address),
        );

        // Deposits, one retried with its key.
        let key = format!("{tag}/first-deposit");
        let first = self.deposit(ctx, &mut alice, 100, Some(&key)).await?;
        let retried = flatten(
            ctx.request_keyed(
                &alice.address,
                &Deposit {
                    amount: 100,
                    transfer: None,
                },
                &key,
                None,
            )
            .await,
        );
        let now = self.balance(ctx, &mut alice).await?;
        report.check(
            "a deposit retried with its idempotency key is applied once",
            first.balance == 100 && retried == Ok(first) && now.balance == 100,
            format!(
                "first {first:?}, retry {retried:?}, balance now {}",
                now.balance
            ),
        );
        self.deposit(ctx, &mut bob, 50, None).await?;

        // Withdrawals, one refused.
        let w = self.withdraw(ctx, &mut alice, 30).await?;
        let overdraft = request(
            ctx,
            &bob.address,
            &Withdraw {
                amount: 80,
                transfer: None,
            },
        )
        .await;
        let bob_now = self.balance(ctx, &mut bob).await?;
        report.check(
            "a withdrawal takes the money out",
            w.balance == 70,
            format!("{w:?}"),
        );
        report.check(
            "an overdraft is refused for insufficient funds and changes nothing",
            overdraft
                .as_ref()
                .is_err_and(|e| e.contains("insufficient funds"))
                && bob_now.balance == 50,
            format!("{overdraft:?}, balance {}", bob_now.balance),
        );

        // Transfers.
        let ok_id = format!("ok-{tag}");
        let ok = self.transfer(ctx, &ok_id, &alice, &bob, 25).await;
        alice.events.push(AccountEvent::Withdrew {
            amount: 25,
            transfer: Some(ok_id.clone()),
        });
        bob.events.push(AccountEvent::Deposited {
            amount: 25,
            transfer: Some(ok_id.clone()),
        });
        let (a, b) = (
            self.balance(ctx, &mut alice).await?,
            self.balance(ctx, &mut bob).await?,
        );
        report.check(
            "a transfer withdraws from one account and deposits to the other",
            ok == Ok(SagaOutcome::Finished) && a.balance == 45 && b.balance == 75,
            format!("{ok:?}; balances {} and {}", a.balance, b.balance),
        );

        let bad_id = format!("bad-{tag}");
        let bad = self.transfer(ctx, &bad_id, &alice, &carol, 20).await;
        alice.events.push(AccountEvent::Withdrew {
            amount: 20,
            transfer: Some(bad_id.clone()),
        });
        alice.events.push(AccountEvent::Refunded {
            amount: 20,
            transfer: bad_id.clone(),
        });
        let a = self.balance(ctx, &mut alice).await?;
        let c = self.balance(ctx, &mut carol).await?;
        report.check(
            "a transfer to an account that was never opened is compensated: the withdrawal is refunded",
            matches!(&bad, Ok(SagaOutcome::Compensated { reason }) if reason.contains("not open"))
                && a.balance == 45
                && !c.open
                && c.balance == 0,
            format!("{bad:?}; balances {} and {} (open: {})", a.balance, c.balance, c.open),
        );

        let short_id = format!("short-{tag}");
        let short = self.transfer(ctx, &short_id, &bob, &alice, 1000).await;
        let (a, b) = (
            self.balance(ctx, &mut alice).await?,
            self.balance(ctx, &mut bob).await?,
        );
        report.check(
            "a transfer from an account that is short moves nothing",
            matches!(&short, Ok(SagaOutcome::Compensated { reason })
                if reason.contains("insufficient funds"))
                && a.balance == 45
                && b.balance == 75,
            format!("{short:?}; balances {} and {}", a.balance, b.balance),
        );

        let repeat = self.transfer(ctx, &ok_id, &alice, &bob, 25).await;
        let status = ctx
            .request(&format!("transfer/{ok_id}"), &GetTransfer {})
            .await
            .map_err(|e| e.to_string());
        let (a, b) = (
            self.balance(ctx, &mut alice).await?,
            self.balance(ctx, &mut bob).await?,
        );
        report.check(
            "a transfer asked for twice moves the money once",
            repeat == Ok(SagaOutcome::Finished)
                && status == Ok(SagaStatus::Finished)
                && a.balance == 45
                && b.balance == 75,
            format!(
                "{repeat:?}, status {status:?}; balances {} and {}",
                a.balance, b.balance
            ),
        );

        // Conservation: 150 deposited, 30 withdrawn; transfers only move money.
        let total = a.balance + b.balance + c.balance;
        report.check(
            "money is conserved",
            total == 100 + 50 - 30,
            format!(
                "{} + {} + {} = {total}, expected 120",
                a.balance, b.balance, c.balance
            ),
        );

        // Temporal queries.
        let mut wrong = Vec::new();
        for account in [&alice, &bob] {
            for r in &account.receipts {
                let then = request(ctx, &account.address, &BalanceAt { seq: r.seq }).await;
                if then.as_ref().map(|t| (t.seq, t.balance)) != Ok((r.seq, r.balance)) {
                    wrong.push(format!(
                        "{} at seq {}: {then:?}, answered {} then",
                        account.address, r.seq, r.balance
                    ));
                }
            }
        }
        let past_end = request(ctx, &alice.address, &BalanceAt { seq: a.seq + 1 }).await;
        report.check(
            "the balance at each earlier sequence number is what it was then",
            wrong.is_empty() && past_end.is_err(),
            format!(
                "{} receipts checked; wrong: {wrong:?}; past the end: {past_end:?}",
                alice.receipts.len() + bob.receipts.len()
            ),
        );

        // Each account's log, as the CLI reads it.
        let mut logs = Vec::new();
        let mut mismatches = Vec::new();
        for account in [&alice, &bob, &carol] {
            let lines = request(ctx, &account.address, &EventsQuery { from: 0 }).await?;
            let events = parse_event_lines(&lines)?;
            let got: Vec<&serde_json::Value> = events.iter().map(|(_, e)| e).collect();
            let expected: Vec<serde_json::Value> = account.events.iter().map(json).collect();
            if got.iter().copied().ne(expected.iter()) {
                mismatches.push(format!(
                    "{}: expected {expected:?}, log has {got:?}",
                    account.address
                ));
            }
            logs.push((account.address.clone(), events));
        }
        report.check(
            "each account's log holds exactly the events of what was done",
            mismatches.is_empty(),
            mismatches.join("; "),
        );
        let state = request(ctx, &alice.address, &StateQuery { at: None }).await?;
        let balance = serde_json::from_str::<serde_json::Value>(&state)
            .ok()
            .and_then(|s| s["balance"].as_u64());
        report.check(
            "bunraku.state answers the account's state",
            balance == Some(45),
            state,
        );

        // The audit trail.
        let mut problems = Vec::new();
        for (address, events) in &logs {
            let lines = self.trail(ctx, address, events.len()).await?;
            let got: Vec<(u64, serde_json::Value)> =
                lines.iter().map(|l| (l.seq, json(&l.event))).collect();
            if got != *events {
                problems.push(format!("{address}: log {events:?}, trail {got:?}"));
            }
            if lines.windows(2).any(|w| w[0].pos >= w[1].pos) {
                problems.push(format!("{address}: positions out of order"));
            }
        }
        report.check(
            "the audit trail has every account event, in order",
            problems.is_empty(),
            problems.join("; "),
        );
        Ok(())
    }
}

/// A request answered with a `Result<T, String>`, its failure as a string.
async fn request<R, T>(ctx: &Ctx, to: &str, msg: &R) -> Result<T, String>
where
    R: Request<Reply = Result<T, String>>,
{
    flatten(ctx.request(to, msg).await).map_err(|e| format!("{to}: {e}"))
}

fn flatten<T>(reply: Result<Result<T, String>, Error>) -> Result<T, String> {
    reply.map_err(|e| e.to_string()).and_then(|r| r)
}

#[actor]
impl Checker {
    async fn on_start(&mut self, _ctx: &Ctx, config: Config) {
        self.config = config;
    }

    #[handler]
    async fn smoke(&mut self, ctx: &Ctx, _msg: Smoke) -> SmokeReport {
        let mut report = SmokeReport::default();
        if let Err(e) = self.run(ctx, &mut report).await {
            report.check("the scenario runs to its end", false, e);
        }
        report.finish("event-sourcing")
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::rc::Rc;

    use bunraku_sdk::testing::TestActor;
    use protocol::bank::{AuditLine, AuditTrail};

    use super::*;

    /// A stand-in of one account: its log (`None`: a marker) and balance after each record.
    #[derive(Default)]
    struct FakeAccount {
        open: bool,
        balance: u64,
        log: Vec<(Option<AccountEvent>, u64)>,
        /// The last request, to play a retry (the test host does not show keys to responders).
        last: Option<Deposit>,
    }

    impl FakeAccount {
        fn seq(&self) -> u64 {
            self.log.len() as u64
        }
        fn push(&mut self, event: AccountEvent) -> Receipt {
            match &event {
                AccountEvent::Opened => self.open = true,
                AccountEvent::Deposited { amount, .. } | AccountEvent::Refunded { amount, .. } => {
                    self.balance += amount
                }
                AccountEvent::Withdrew { amount, .. } => self.balance -= amount,
                AccountEvent::Voided { .. } => {}
            }
            self.log.push((Some(event), self.balance));
            Receipt {
                seq: self.seq(),
                balance: self.balance,
            }
        }
    }

    /// A stand-in bank: accounts, transfers and an audit over them.
    #[derive(Default)]
    struct Bank {
        accounts: BTreeMap<String, FakeAccount>,
        transfers: BTreeMap<String, SagaOutcome>,
        /// The audit leaves out this many lines of every account.
        audit_drops: usize,
    }

    type Shared = Rc<RefCell<Bank>>;

    fn withdraw(
        bank: &Shared,
        account: &str,
        amount: u64,
        t: Option<String>,
    ) -> Result<Receipt, String> {
        let mut bank = bank.borrow_mut();
        let a = bank.accounts.entry(account.to_owned()).or_default();
        if !a.open {
            return Err("account not open".into());
        }
        if amount > a.balance {
            return Err(format!(
                "insufficient funds: balance {}, asked {amount}",
                a.balance
            ));
        }
        a.last = None;
        Ok(a.push(AccountEvent::Withdrew {
            amount,
            transfer: t,
        }))
    }

    fn deposit(bank: &Shared, account: &str, msg: Deposit) -> Result<Receipt, String> {
        let mut bank = bank.borrow_mut();
        let a = bank.accounts.entry(account.to_owned()).or_default();
        if !a.open {
            return Err("account not open".into());
        }
        if a.last.as_ref() == Some(&msg) {
            let seq = a.seq();
            return Ok(Receipt {
                seq,
                balance: a.balance,
            });
        }
        a.last = Some(msg.clone());
        Ok(a.push(AccountEvent::Deposited {
            amount: msg.amount,
            transfer: msg.transfer,
        }))
    }

    fn checker(bank: &Shared) -> TestActor<Checker> {
        let mut t = TestActor::<Checker>::start(Config {
            audit: "audit".into(),
            catch_up_ms: 200,
            tag: Some("t".into()),
        });
        for name in ["alice-t", "bob-t", "carol-t"] {
            let address = account_address(name);
            let b = bank.clone();
            let a = address.clone();
            t.respond::<Open>(&address, move |_| {
                let mut bank = b.borrow_mut();
                let acc = bank.accounts.entry(a.clone()).or_default();
                if acc.open {
                    return Err("account already open".into());
                }
                Ok(acc.push(AccountEvent::Opened))
            });
            let (b, a) = (bank.clone(), address.clone());
            t.respond::<Deposit>(&address, move |m| deposit(&b, &a, m));
            let (b, a) = (bank.clone(), address.clone());
            t.respond::<Withdraw>(&address, move |m| withdraw(&b, &a, m.amount, m.transfer));
            let (b, a) = (bank.clone(), address.clone());
            t.respond::<GetBalance>(&address, move |_| {
                let mut bank = b.borrow_mut();
                let acc = bank.accounts.entry(a.clone()).or_default();
                Balance {
                    open: acc.open,
                    balance: acc.balance,
                    seq: acc.seq(),
                }
            });
            let (b, a) = (bank.clone(), address.clone());
            t.respond::<BalanceAt>(&address, move |m| {
                let bank = b.borrow();
                let acc = &bank.accounts[&a];
                let (_, balance) = acc
                    .log
                    .get(m.seq.checked_sub(1).ok_or("no seq 0")? as usize)
                    .ok_or("past the end")?;
                Ok(Balance {
                    open: true,
                    balance: *balance,
                    seq: m.seq,
                })
            });
            let (b, a) = (bank.clone(), address.clone());
            t.respond::<EventsQuery>(&address, move |_| {
                let bank = b.borrow();
                let Some(acc) = bank.accounts.get(&a) else {
                    return Ok(Vec::new());
                };
                Ok(acc
                    .log
                    .iter()
                    .enumerate()
                    .map(|(i, (e, _))| {
                        let seq = i + 1;
                        match e {
                            Some(e) => serde_json::json!({ "seq": seq, "version": 1, "event": e }),
                            None => serde_json::json!({ "seq": seq, "version": 0, "dedup": "k" }),
                        }
                        .to_string()
                    })
                    .collect())
            });
            let (b, a) = (bank.clone(), address.clone());
            t.respond::<StateQuery>(&address, move |_| {
                let bank = b.borrow();
                Ok(serde_json::json!({ "balance": bank.accounts[&a].balance }).to_string())
            });
        }
        for id in ["ok-t", "bad-t", "short-t"] {
            let b = bank.clone();
            t.respond::<Transfer>(&format!("transfer/{id}"), move |m| {
                if let Some(done) = b.borrow().transfers.get(id) {
                    return Ok(done.clone());
                }
                let (from, to) = (account_address(&m.from), account_address(&m.to));
                let outcome = match withdraw(&b, &from, m.amount, Some(id.to_owned())) {
                    Err(reason) => SagaOutcome::Compensated { reason },
                    Ok(_) => {
                        let msg = Deposit {
                            amount: m.amount,
                            transfer: Some(id.to_owned()),
                        };
                        match deposit(&b, &to, msg) {
                            Ok(_) => SagaOutcome::Finished,
                            Err(reason) => {
                                b.borrow_mut().accounts.get_mut(&from).unwrap().push(
                                    AccountEvent::Refunded {
                                        amount: m.amount,
                                        transfer: id.to_owned(),
                                    },
                                );
                                SagaOutcome::Compensated { reason }
                            }
                        }
                    }
                };
                b.borrow_mut()
                    .transfers
                    .insert(id.to_owned(), outcome.clone());
                Ok(outcome)
            });
            let b = bank.clone();
            t.respond::<GetTransfer>(&format!("transfer/{id}"), move |_| {
                match b.borrow().transfers.get(id) {
                    Some(SagaOutcome::Finished) => SagaStatus::Finished,
                    Some(_) => SagaStatus::Compensated {
                        reason: String::new(),
                    },
                    None => SagaStatus::NotStarted,
                }
            });
        }
        let b = bank.clone();
        t.respond::<GetTrail>("audit", move |m| {
            let bank = b.borrow();
            let account = m.account.unwrap();
            let lines = bank
                .accounts
                .get(&account)
                .map(|acc| {
                    acc.log
                        .iter()
                        .enumerate()
                        .filter_map(|(i, (e, _))| {
                            Some(AuditLine {
                                pos: i as u64 + 1,
                                account: account.clone(),
                                seq: i as u64 + 1,
                                time_ms: 0,
                                event: e.clone()?,
                            })
                        })
                        .skip(bank.audit_drops)
                        .collect()
                })
                .unwrap_or_default();
            AuditTrail { position: 0, lines }
        });
        t
    }

    #[test]
    fn a_correct_bank_passes_every_fact() {
        let bank = Shared::default();
        let mut t = checker(&bank);
        let report = t.call(&Smoke {}).unwrap();
        assert!(report.ok, "{report:#?}");
        assert_eq!(report.summary, "event-sourcing: ok, 14 facts checked");
    }

    #[test]
    fn an_audit_trail_missing_a_line_fails_its_fact() {
        let bank = Shared::default();
        bank.borrow_mut().audit_drops = 1;
        let mut t = checker(&bank);
        let report = t.call(&Smoke {}).unwrap();
        let failed: Vec<&str> = report
            .facts
            .iter()
            .filter(|f| !f.ok)
            .map(|f| f.name.as_str())
            .collect();
        assert_eq!(
            failed,
            ["the audit trail has every account event, in order"]
        );
        assert!(!report.ok);
    }

    #[test]
    fn event_lines_leave_out_markers() {
        let lines = [
            r#"{"seq":1,"time_ms":5,"version":1,"event":"Opened"}"#.to_string(),
            r#"{"seq":2,"time_ms":5,"version":0,"dedup":"k"}"#.to_string(),
        ];
        let events = parse_event_lines(&lines).unwrap();
        assert_eq!(events, [(1, serde_json::json!("Opened"))]);
        assert!(clock_tag().chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
