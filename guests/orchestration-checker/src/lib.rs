//! The orchestration example's driver and self-check. On `Smoke` it places two orders, each
//! with its own orchestrator (`order/<run>-ok`, `order/<run>-declined`): one the card accepts,
//! which must finish, and one whose card is declined at the payment step, which must be
//! compensated (its stock released). Then it reads every participant's durable state and checks
//! the effects: stock, charges, shipments, and that every step and compensation of the two
//! sagas was applied exactly once.
//!
//! The participants' state outlives a run (it is in the host's store), so each run uses fresh
//! order ids and compares stock with what it was before the run.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bunraku_sdk::prelude::*;
use protocol::orders::{
    Applied, GetInventory, GetOrder, GetPayments, GetShipments, InventoryReport, OrderStatus,
    PaymentReport, PlaceOrder, Restock, ShippingReport,
};
use protocol::{Smoke, SmokeReport};

/// Settings from the manifest.
#[derive(Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// The orchestrators' virtual actor type.
    pub orders: String,
    pub inventory: String,
    pub payment: String,
    pub shipping: String,
    pub item: String,
    pub quantity: u64,
    /// The amount of the order that is paid.
    pub amount: u64,
    pub customer: String,
    /// A customer whose card the payment service declines.
    pub declined_customer: String,
    /// How long to wait for a saga to end.
    pub timeout_ms: u64,
    /// The prefix of this run's order ids; default: the clock in milliseconds.
    pub run: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            orders: "order".into(),
            inventory: "inventory".into(),
            payment: "payment".into(),
            shipping: "shipping".into(),
            item: "widget".into(),
            quantity: 2,
            amount: 1500,
            customer: "ann".into(),
            declined_customer: "declined".into(),
            timeout_ms: 30_000,
            run: None,
        }
    }
}

#[derive(Default)]
pub struct Checker {
    config: Config,
}

/// What the participants hold.
struct Reports {
    inventory: InventoryReport,
    payment: PaymentReport,
    shipping: ShippingReport,
}

impl Checker {
    /// Places an order with `order/<id>` and waits until its saga is over.
    async fn place(&self, ctx: &Ctx, id: &str, customer: &str) -> Result<OrderStatus, String> {
        let c = &self.config;
        let address = format!("{}/{id}", c.orders);
        let msg = PlaceOrder {
            customer: customer.to_owned(),
            item: c.item.clone(),
            quantity: c.quantity,
            amount: c.amount,
            crash_after_delivery: None,
        };
        let timeout = Duration::from_millis(c.timeout_ms);
        match ctx.request_with_timeout(&address, &msg, timeout).await {
            Ok(Ok(status)) if status.is_terminal() => return Ok(status),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(format!("{address} refused the order: {e}")),
            // The orchestrator resumes on its own: ask until it is done.
            Err(e) => ctx.warn(format_args!("{address}: {e}; waiting for it to resume")),
        }
        let start = SystemTime::now();
        loop {
            if let Ok(status) = ctx.request(&address, &GetOrder {}).await
                && status.is_terminal()
            {
                return Ok(status);
            }
            if start.elapsed().unwrap_or_default() > timeout {
                return Err(format!("{address} did not end within {timeout:?}"));
            }
            ctx.sleep(Duration::from_millis(100))
                .await
                .map_err(|e| e.to_string())?;
        }
    }

    async fn reports(&self, ctx: &Ctx) -> Result<Reports, String> {
        let c = &self.config;
        Ok(Reports {
            inventory: ctx
                .request(&c.inventory, &GetInventory {})
                .await
                .map_err(|e| format!("{}: {e}", c.inventory))?,
            payment: ctx
                .request(&c.payment, &GetPayments {})
                .await
                .map_err(|e| format!("{}: {e}", c.payment))?,
            shipping: ctx
                .request(&c.shipping, &GetShipments {})
                .await
                .map_err(|e| format!("{}: {e}", c.shipping))?,
        })
    }
}

/// `finished: reserve succeeded, charge succeeded, ship succeeded`.
fn summary(s: &OrderStatus) -> String {
    let steps: Vec<String> = s
        .steps
        .iter()
        .map(|st| {
            let undone = if st.undone { ", compensated" } else { "" };
            format!("{} {}{undone}", st.name, st.outcome)
        })
        .collect();
    format!("{}: {}", s.state, steps.join("; "))
}

/// Every key of this run's orders that a participant applied, with how many times.
fn applied_keys(r: &Reports, prefix: &str) -> BTreeMap<String, u64> {
    let all: [&[Applied]; 3] = [
        &r.inventory.applied,
        &r.payment.applied,
        &r.shipping.applied,
    ];
    let mut keys = BTreeMap::new();
    for a in all.into_iter().flatten() {
        if a.key.starts_with(prefix) {
            *keys.entry(a.key.clone()).or_default() += a.times;
        }
    }
    keys
}

#[actor]
impl Checker {
    async fn on_start(&mut self, _ctx: &Ctx, config: Config) {
        self.config = config;
    }

    #[handler]
    async fn smoke(&mut self, ctx: &Ctx, _msg: Smoke) -> SmokeReport {
        let c = &self.config;
        let mut report = SmokeReport::default();
        let run = c.run.clone().unwrap_or_else(|| {
            let now = SystemTime::now().duration_since(UNIX_EPOCH);
            now.unwrap_or_default().as_millis().to_string()
        });
        let (ok_id, declined_id) = (format!("{run}-ok"), format!("{run}-declined"));

        // Enough stock for both orders (earlier runs used some).
        let before = match ctx.request(&c.inventory, &GetInventory {}).await {
            Ok(inv) if inv.stock_of(&c.item) >= 2 * c.quantity => Ok(inv.stock_of(&c.item)),
            Ok(_) => {
                let restock = Restock {
                    item: c.item.clone(),
                    quantity: 100 * c.quantity,
                };
                ctx.request(&c.inventory, &restock).await
            }
            Err(e) => Err(e),
        };
        let before = match before {
            Ok(before) => before,
            Err(e) => {
                report.check("the inventory answers", false, e.to_string());
                return report.finish("orchestration");
            }
        };

        let ok = self.place(ctx, &ok_id, &c.customer).await;
        let declined = self.place(ctx, &declined_id, &c.declined_customer).await;
        for (id, status) in [(&ok_id, &ok), (&declined_id, &declined)] {
            match status {
                Ok(s) => ctx.info(format_args!("order {id}: {}", summary(s))),
                Err(e) => ctx.warn(format_args!("order {id}: {e}")),
            }
        }

        report.check(
            "the order that can be paid finished",
            matches!(&ok, Ok(s) if s.state == "finished"
                && s.steps.iter().all(|st| st.outcome == "succeeded")
                && s.tracking.is_some()),
            format!("{ok:?}"),
        );
        report.check(
            "the declined order was compensated: its reserve undone, nothing charged or shipped",
            matches!(&declined, Ok(s) if s.state == "compensated"
                && s.reason.as_deref().is_some_and(|r| r.contains("card declined"))
                && s.step("reserve").is_some_and(|st| st.undone)
                && s.step("charge").is_some_and(|st| st.outcome.starts_with("failed"))
                && s.step("ship").is_some_and(|st| st.attempts == 0)),
            format!("{declined:?}"),
        );

        let r = match self.reports(ctx).await {
            Ok(r) => r,
            Err(e) => {
                report.check("the participants answer", false, e);
                return report.finish("orchestration");
            }
        };
        let reservation = |id: &str| r.inventory.reservations.iter().find(|x| x.order == id);
        let after = r.inventory.stock_of(&c.item);
        report.check(
            "inventory: the finished order's stock stays reserved, the declined order's came back",
            after + c.quantity == before
                && reservation(&ok_id).is_some_and(|x| x.quantity == c.quantity && !x.released)
                && reservation(&declined_id)
                    .is_some_and(|x| x.quantity == c.quantity && x.released),
            format!(
                "{} {}: {before} before, {after} after; reservations {:?} and {:?}",
                c.item,
                c.quantity,
                reservation(&ok_id),
                reservation(&declined_id)
            ),
        );
        let charges = |id: &str| {
            r.payment
                .charges
                .iter()
                .filter(|x| x.order == id)
                .collect::<Vec<_>>()
        };
        report.check(
            "payment: one charge for the finished order, none for the declined one",
            matches!(charges(&ok_id).as_slice(), [x] if x.amount == c.amount && !x.refunded)
                && charges(&declined_id).is_empty()
                && r.payment.declined.contains(&declined_id),
            format!(
                "charges {:?} and {:?}; declined: {}",
                charges(&ok_id),
                charges(&declined_id),
                r.payment.declined.contains(&declined_id)
            ),
        );
        let shipments = |id: &str| {
            r.shipping
                .shipments
                .iter()
                .filter(|x| x.order == id)
                .count()
        };
        report.check(
            "shipping: one shipment for the finished order, none for the declined one",
            shipments(&ok_id) == 1 && shipments(&declined_id) == 0,
            format!("{} and {}", shipments(&ok_id), shipments(&declined_id)),
        );
        let keys = applied_keys(&r, &format!("{}/{run}-", c.orders));
        let expected: Vec<String> = [
            format!("{}/{ok_id}/reserve", c.orders),
            format!("{}/{ok_id}/charge", c.orders),
            format!("{}/{ok_id}/ship", c.orders),
            format!("{}/{declined_id}/reserve", c.orders),
            format!("{}/{declined_id}/reserve/undo", c.orders),
        ]
        .into();
        let mut want: Vec<&String> = expected.iter().collect();
        want.sort();
        report.check(
            "every step and compensation was applied exactly once, by its key",
            keys.keys().collect::<Vec<_>>() == want && keys.values().all(|n| *n == 1),
            format!("applied: {keys:?}"),
        );
        report.finish("orchestration")
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::*;
    use bunraku_sdk::testing::TestActor;
    use protocol::orders::{ChargeRecord, Reservation, Shipment, StepView};

    /// The participants' state, shared by the stand-ins.
    #[derive(Default)]
    struct World {
        inventory: InventoryReport,
        payment: PaymentReport,
        shipping: ShippingReport,
    }

    fn view(name: &str, attempts: u32, outcome: &str, undone: bool) -> StepView {
        StepView {
            name: name.into(),
            attempts,
            outcome: outcome.into(),
            undo_attempts: u32::from(undone),
            undone,
        }
    }

    /// What a correct orchestrator and participants do for order `id` (`times`: how many times
    /// each key is applied).
    fn run_saga(world: &mut World, id: &str, msg: &PlaceOrder, times: u64) -> OrderStatus {
        let applied = |step: &str| Applied {
            key: format!("order/{id}/{step}"),
            times,
        };
        let declined = msg.customer == "declined";
        world.inventory.applied.push(applied("reserve"));
        world.inventory.reservations.push(Reservation {
            order: id.into(),
            item: msg.item.clone(),
            quantity: msg.quantity,
            released: declined,
        });
        if declined {
            world.inventory.applied.push(applied("reserve/undo"));
            world.payment.declined.push(id.into());
            return OrderStatus {
                state: "compensated".into(),
                reason: Some("step `charge` failed: card declined".into()),
                steps: vec![
                    view("reserve", 1, "succeeded", true),
                    view("charge", 1, "failed: card declined", false),
                    view("ship", 0, "pending", false),
                ],
                ..OrderStatus::default()
            };
        }
        world.inventory.stock[0].1 -= msg.quantity;
        world.payment.applied.push(applied("charge"));
        world.payment.charges.push(ChargeRecord {
            order: id.into(),
            customer: msg.customer.clone(),
            amount: msg.amount,
            id: format!("ch-{id}"),
            refunded: false,
        });
        world.shipping.applied.push(applied("ship"));
        world.shipping.shipments.push(Shipment {
            order: id.into(),
            tracking: format!("trk-{id}"),
            ..Shipment::default()
        });
        OrderStatus {
            state: "finished".into(),
            steps: vec![
                view("reserve", 1, "succeeded", false),
                view("charge", 1, "succeeded", false),
                view("ship", 1, "succeeded", false),
            ],
            tracking: Some(format!("trk-{id}")),
            ..OrderStatus::default()
        }
    }

    fn smoke(times: u64) -> SmokeReport {
        let world = Rc::new(RefCell::new(World::default()));
        world.borrow_mut().inventory.stock = vec![("widget".into(), 10)];
        let mut checker = TestActor::<Checker>::builder();
        for id in ["t-ok", "t-declined"] {
            let w = world.clone();
            checker = checker.respond::<PlaceOrder>(&format!("order/{id}"), move |msg| {
                Ok(run_saga(&mut w.borrow_mut(), id, &msg, times))
            });
        }
        let (w1, w2, w3) = (world.clone(), world.clone(), world.clone());
        let mut checker = checker
            .respond::<GetInventory>("inventory", move |_| w1.borrow().inventory.clone())
            .respond::<GetPayments>("payment", move |_| w2.borrow().payment.clone())
            .respond::<GetShipments>("shipping", move |_| w3.borrow().shipping.clone())
            .start(serde_json::json!({ "run": "t" }));
        checker.call(&Smoke {}).unwrap()
    }

    #[test]
    fn a_deployment_that_applies_each_key_once_passes() {
        let report = smoke(1);
        assert!(report.ok, "{report:#?}");
        assert_eq!(report.facts.len(), 6);
    }

    #[test]
    fn a_key_applied_twice_fails_the_exactly_once_fact() {
        let report = smoke(2);
        assert!(!report.ok);
        let failed: Vec<_> = report.facts.iter().filter(|f| !f.ok).collect();
        assert_eq!(failed.len(), 1, "{failed:#?}");
        assert!(failed[0].name.contains("exactly once"));
    }
}
