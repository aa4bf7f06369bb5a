//! The event-sourcing example's messages (`examples/event-sourcing`): bank accounts kept as event
//! logs (`guests/account`), transfers between them run as sagas (`guests/transfer`), and an
//! audit trail projected from every account's events (`guests/audit`).
//!
//! Amounts are whole cents (`u64`); a balance never goes below zero.

use std::fmt;

use bunraku_sdk::prelude::*;
use bunraku_sdk::saga::{SagaOutcome, SagaStatus};

/// The actor type of accounts: account `alice` is the virtual actor `account/alice`.
pub const ACCOUNT_TYPE: &str = "account";

/// The address of account `id`.
pub fn account_address(id: &str) -> String {
    format!("{ACCOUNT_TYPE}/{id}")
}

/// What happened to an account: the events of its log, in the order they happened. The audit
/// trail decodes them from the combined stream of every account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountEvent {
    /// The account was opened (balance 0).
    Opened,
    /// Money came in: by hand (`transfer: None`) or as the credit of a transfer.
    Deposited {
        amount: u64,
        transfer: Option<String>,
    },
    /// Money went out: by hand, or as the debit of a transfer.
    Withdrew {
        amount: u64,
        transfer: Option<String>,
    },
    /// A transfer that failed after its debit gave the money back.
    Refunded { amount: u64, transfer: String },
    /// A transfer was called off before its debit was applied here: a debit for it that arrives
    /// late is refused.
    Voided { transfer: String },
}

impl fmt::Display for AccountEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let via = |t: &Option<String>| t.as_ref().map(|t| format!(" (transfer {t})"));
        match self {
            Self::Opened => write!(f, "opened"),
            Self::Deposited { amount, transfer } => {
                write!(f, "deposited {amount}{}", via(transfer).unwrap_or_default())
            }
            Self::Withdrew { amount, transfer } => {
                write!(f, "withdrew {amount}{}", via(transfer).unwrap_or_default())
            }
            Self::Refunded { amount, transfer } => {
                write!(f, "refunded {amount} (transfer {transfer} failed)")
            }
            Self::Voided { transfer } => write!(f, "voided transfer {transfer}"),
        }
    }
}

/// What a successful account command answers: the sequence number of the account's last event
/// and the balance after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub seq: u64,
    pub balance: u64,
}

/// Open the account. Refused when it is open already.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[message(reply = Result<Receipt, String>)]
pub struct Open {}

/// Put money in. Sent with an idempotency key (`ctx.request_keyed`), a repeat of the key is
/// answered with the first reply and not applied again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[message(reply = Result<Receipt, String>)]
pub struct Deposit {
    pub amount: u64,
    /// The transfer this deposit is the credit of, if any.
    #[serde(default)]
    pub transfer: Option<String>,
}

/// Take money out; refused (`insufficient funds: ...`) when the balance is short. Deduplicated
/// by idempotency key like [`Deposit`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[message(reply = Result<Receipt, String>)]
pub struct Withdraw {
    pub amount: u64,
    /// The transfer this withdrawal is the debit of, if any.
    #[serde(default)]
    pub transfer: Option<String>,
}

/// Undo the debit of a failed transfer: gives back what transfer `transfer` withdrew, once. When
/// the debit was never applied, it records that the transfer is void instead (so a debit that
/// arrives late is refused) and gives nothing back. Always succeeds on an open account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[message(reply = Result<Receipt, String>)]
pub struct Refund {
    pub transfer: String,
}

/// An account as of some event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Balance {
    pub open: bool,
    pub balance: u64,
    /// The sequence number of the last event included.
    pub seq: u64,
}

/// The account now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[message(reply = Balance)]
pub struct GetBalance {}

/// The account as it was just after its event `seq` (a temporal query: replayed from the
/// latest snapshot at or before `seq`). Refused for a `seq` past the end of its log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[message(reply = Result<Balance, String>)]
pub struct BalanceAt {
    pub seq: u64,
}

/// Move `amount` from account `from` to account `to` (account ids, not addresses). Sent to the
/// virtual actor `transfer/<id>`, one per transfer: sending it again to the same address does not
/// move the money twice, it answers how that transfer ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[message(reply = Result<SagaOutcome, String>)]
pub struct Transfer {
    pub from: String,
    pub to: String,
    pub amount: u64,
}

/// Where a transfer is: its saga's status (`NotStarted` for a transfer never asked for).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[message(reply = SagaStatus)]
pub struct GetTransfer {}

/// One line of the audit trail: an account's event, where it is in the account's log and in the
/// combined stream of every account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditLine {
    /// The store's global position of the event.
    pub pos: u64,
    /// The account's address (`account/alice`).
    pub account: String,
    /// The event's sequence number in the account's log.
    pub seq: u64,
    /// When it was committed (ms since the Unix epoch, host clock).
    pub time_ms: u64,
    pub event: AccountEvent,
}

impl fmt::Display for AuditLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "@{} {} #{}: {}",
            self.pos, self.account, self.seq, self.event
        )
    }
}

/// The audit trail, or the lines of one account (`account: Some("account/alice")`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[message(reply = AuditTrail)]
pub struct GetTrail {
    #[serde(default)]
    pub account: Option<String>,
}

/// What [`GetTrail`] answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AuditTrail {
    /// The global position the trail has read up to (every account event at or before it is in
    /// the trail, unless it was trimmed).
    pub position: u64,
    /// Lines in stream order, oldest first.
    pub lines: Vec<AuditLine>,
}
