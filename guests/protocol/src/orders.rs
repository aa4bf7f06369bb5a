//! The orchestration example: an order saga (`order-saga`) over three participants
//! (`inventory`, `payment`, `shipping`) that deduplicate by idempotency key.
//!
//! Every participant request is answered with a `Result<T, String>`: `Ok` when applied, `Err`
//! a definite failure (nothing applied). A request that comes again with a key already applied
//! gets the recorded reply and is not applied again; each participant's report counts how many
//! times each key was applied, to show it is once.

use bunraku_sdk::prelude::*;

/// An order: the saga's input. The id is the key of the orchestrator's address
/// (`order/<id>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub id: String,
    pub customer: String,
    pub item: String,
    pub quantity: u64,
    /// In cents.
    pub amount: u64,
    /// Failure injection: see [`PlaceOrder::crash_after_delivery`].
    pub crash_after_delivery: Option<String>,
}

/// Start the saga of the order this orchestrator (`order/<id>`) stands for, and wait for its
/// end. A repeated `PlaceOrder` does not start it again: it waits for (or reports) the same
/// saga. Replies with the order's status, or why the saga could not start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[message(name = "orders.place", reply = Result<OrderStatus, String>)]
pub struct PlaceOrder {
    pub customer: String,
    pub item: String,
    pub quantity: u64,
    /// In cents.
    pub amount: u64,
    /// Failure injection for tests: the name of a step (`reserve`, `charge`, `ship`) after
    /// whose participant's reply the orchestrator panics (traps) before recording the outcome,
    /// on the step's first attempt only. The restarted orchestrator resumes (on its reminder)
    /// and sends the step again with the same key.
    #[serde(default)]
    pub crash_after_delivery: Option<String>,
}

/// Ask an orchestrator for its order's status (waits while the saga is being driven).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[message(name = "orders.get", reply = OrderStatus)]
pub struct GetOrder {}

/// The orchestrator's reminder: resume the saga where its log ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[message(name = "orders.resume")]
pub struct ResumeOrder {}

/// Where an order's saga is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct OrderStatus {
    /// The saga's id: the orchestrator's address; empty before it started.
    pub saga: String,
    /// `not started`, `running`, `compensating`, `finished`, `compensated` or `stuck`.
    pub state: String,
    /// Why it is compensating, compensated or stuck.
    pub reason: Option<String>,
    pub steps: Vec<StepView>,
    /// The charge id, once charged.
    pub charge: Option<String>,
    /// The tracking number, once shipped.
    pub tracking: Option<String>,
}

impl OrderStatus {
    /// Whether the saga is over.
    pub fn is_terminal(&self) -> bool {
        matches!(self.state.as_str(), "finished" | "compensated" | "stuck")
    }

    /// Step `name`.
    pub fn step(&self, name: &str) -> Option<&StepView> {
        self.steps.iter().find(|s| s.name == name)
    }
}

/// One step of an order's saga.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct StepView {
    pub name: String,
    /// Attempts sent.
    pub attempts: u32,
    /// `pending`, `succeeded`, `failed: <reason>` or `abandoned: <reason>`.
    pub outcome: String,
    /// Attempts of its compensation.
    pub undo_attempts: u32,
    /// Whether its compensation succeeded.
    pub undone: bool,
}

/// How many times a participant applied the request with one idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Applied {
    pub key: String,
    pub times: u64,
}

/// Reserve `quantity` of `item` for `order`. Replies with the stock left, or
/// `Err("out of stock: ..")`, or `Err("order .. was released")` when the order's release came
/// first (a late delivery).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[message(name = "inventory.reserve", reply = Result<u64, String>)]
pub struct Reserve {
    pub order: String,
    pub item: String,
    pub quantity: u64,
}

/// Release what `order` reserved (the compensation of `Reserve`). Replies with the quantity
/// put back: 0 when the order reserved nothing, which also refuses a later `Reserve` for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[message(name = "inventory.release", reply = Result<u64, String>)]
pub struct Release {
    pub order: String,
}

/// Add stock (not keyed: for operators and the example's checker). Replies with the new level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[message(name = "inventory.restock", reply = u64)]
pub struct Restock {
    pub item: String,
    pub quantity: u64,
}

/// Ask the inventory for its [`InventoryReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[message(name = "inventory.get", reply = InventoryReport)]
pub struct GetInventory {}

/// One order's reservation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Reservation {
    pub order: String,
    pub item: String,
    /// 0 for an order released before anything was reserved.
    pub quantity: u64,
    pub released: bool,
}

/// The inventory's durable state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct InventoryReport {
    /// Stock available per item.
    pub stock: Vec<(String, u64)>,
    pub reservations: Vec<Reservation>,
    pub applied: Vec<Applied>,
    /// Requests answered from the record of their key (not applied again).
    pub replayed: u64,
}

impl InventoryReport {
    /// Stock available of `item`.
    pub fn stock_of(&self, item: &str) -> u64 {
        self.stock
            .iter()
            .find(|(i, _)| i == item)
            .map_or(0, |(_, n)| *n)
    }
}

/// Charge `amount` to `customer` for `order`. Replies with a charge id, or
/// `Err("card declined")`, or `Err("order .. was refunded")` when the refund came first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[message(name = "payment.charge", reply = Result<String, String>)]
pub struct Charge {
    pub order: String,
    pub customer: String,
    pub amount: u64,
}

/// Refund `order`'s charge (the compensation of `Charge`). Replies with the amount refunded: 0
/// when the order was never charged, which also refuses a later `Charge` for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[message(name = "payment.refund", reply = Result<u64, String>)]
pub struct Refund {
    pub order: String,
}

/// Ask the payment service for its [`PaymentReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[message(name = "payment.get", reply = PaymentReport)]
pub struct GetPayments {}

/// One order's charge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ChargeRecord {
    pub order: String,
    pub customer: String,
    /// 0 for an order refunded before it was charged.
    pub amount: u64,
    pub id: String,
    pub refunded: bool,
}

/// The payment service's durable state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PaymentReport {
    pub charges: Vec<ChargeRecord>,
    /// Orders whose charge was declined.
    pub declined: Vec<String>,
    pub applied: Vec<Applied>,
    pub replayed: u64,
}

/// Ship `quantity` of `item` to `customer` for `order`. Replies with a tracking number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[message(name = "shipping.ship", reply = Result<String, String>)]
pub struct Ship {
    pub order: String,
    pub customer: String,
    pub item: String,
    pub quantity: u64,
}

/// Ask the shipping service for its [`ShippingReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[message(name = "shipping.get", reply = ShippingReport)]
pub struct GetShipments {}

/// One shipment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Shipment {
    pub order: String,
    pub customer: String,
    pub item: String,
    pub quantity: u64,
    pub tracking: String,
}

/// The shipping service's durable state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ShippingReport {
    pub shipments: Vec<Shipment>,
    pub applied: Vec<Applied>,
    pub replayed: u64,
}
