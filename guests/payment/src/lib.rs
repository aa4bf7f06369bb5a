//! A saga participant: charges and refunds per order, with a card that declines.
//!
//! A charge is declined (`Err("card declined")`, nothing charged) when its amount is over the
//! configured `limit` or its customer is one of `declined_customers` (default: `declined`).
//! Like `inventory`, it deduplicates by idempotency key inside the state it saves, a
//! [`Participant`] (one `save` for the effect and the record of its reply, a trap when that
//! save fails), answers a repeated key with the recorded reply, and counts how many times each
//! key was applied.
//!
//! A refund for an order that was never charged (the saga gave up on a charge whose outcome it
//! did not know) records the order as refunded, so a late delivery of that charge is refused.

use std::collections::BTreeMap;

use bunraku_sdk::prelude::*;
use protocol::orders::{Charge, ChargeRecord, GetPayments, PaymentReport, Refund};
use protocol::participant::{Participant, key_of};

/// Settings from the manifest.
#[derive(Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// The largest amount (cents) the card accepts.
    pub limit: u64,
    /// Customers whose card is always declined.
    pub declined_customers: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            limit: u64::MAX,
            declined_customers: vec!["declined".into()],
        }
    }
}

/// The payment service's own state; saved inside a [`Participant`].
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct State {
    /// By order id.
    pub charges: BTreeMap<String, ChargeRecord>,
    pub declined: Vec<String>,
}

#[derive(Default)]
pub struct Payment {
    config: Config,
    books: Participant<State>,
}

#[actor]
impl Payment {
    async fn on_start(&mut self, ctx: &Ctx, config: Config) -> Result<(), Error> {
        self.config = config;
        self.books = ctx.load()?.unwrap_or_default();
        Ok(())
    }

    #[handler]
    async fn charge(&mut self, ctx: &Ctx, msg: Charge) -> Result<String, String> {
        let key = key_of(ctx, || format!("{}/charge", msg.order));
        if let Some(reply) = self.books.replay(ctx, &key).await {
            return reply;
        }
        let mut next = self.books.state.clone();
        let declined = msg.amount > self.config.limit
            || self.config.declined_customers.contains(&msg.customer);
        let reply = match next.charges.get(&msg.order) {
            Some(c) if c.refunded => Err(format!("order {} was refunded", msg.order)),
            Some(c) => Err(format!(
                "order {} was already charged ({})",
                msg.order, c.id
            )),
            None if declined => {
                ctx.info(format_args!(
                    "order {}: card declined ({} for {})",
                    msg.order, msg.amount, msg.customer
                ));
                next.declined.push(msg.order.clone());
                Err("card declined".to_owned())
            }
            None => {
                let id = format!("ch-{}", msg.order);
                next.charges.insert(
                    msg.order.clone(),
                    ChargeRecord {
                        order: msg.order.clone(),
                        customer: msg.customer.clone(),
                        amount: msg.amount,
                        id: id.clone(),
                        refunded: false,
                    },
                );
                ctx.info(format_args!(
                    "order {}: charged {} to {} ({id})",
                    msg.order, msg.amount, msg.customer
                ));
                Ok(id)
            }
        };
        let applied = reply.is_ok();
        self.books.commit(ctx, next, &key, &reply, applied).await;
        reply
    }

    #[handler]
    async fn refund(&mut self, ctx: &Ctx, msg: Refund) -> Result<u64, String> {
        let key = key_of(ctx, || format!("{}/charge/undo", msg.order));
        if let Some(reply) = self.books.replay(ctx, &key).await {
            return reply;
        }
        let mut next = self.books.state.clone();
        let refunded = match next.charges.get_mut(&msg.order) {
            Some(c) if c.refunded => 0,
            Some(c) => {
                c.refunded = true;
                c.amount
            }
            None => {
                // Never charged: refuse the charge if it still arrives.
                next.charges.insert(
                    msg.order.clone(),
                    ChargeRecord {
                        order: msg.order.clone(),
                        refunded: true,
                        ..ChargeRecord::default()
                    },
                );
                0
            }
        };
        ctx.info(format_args!("order {}: refunded {refunded}", msg.order));
        let reply = Ok(refunded);
        self.books.commit(ctx, next, &key, &reply, true).await;
        reply
    }

    #[handler]
    async fn get_payments(&mut self, _ctx: &Ctx, _msg: GetPayments) -> PaymentReport {
        let s = &self.books.state;
        PaymentReport {
            charges: s.charges.values().cloned().collect(),
            declined: s.declined.clone(),
            applied: self.books.applied_keys(),
            replayed: self.books.replayed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bunraku_sdk::testing::TestActor;

    fn start() -> TestActor<Payment> {
        TestActor::start(serde_json::json!({ "limit": 10_000, "declined_customers": ["eve"] }))
    }

    fn charge(order: &str, customer: &str, amount: u64) -> Charge {
        Charge {
            order: order.into(),
            customer: customer.into(),
            amount,
        }
    }

    #[test]
    fn a_charge_retried_with_its_key_is_charged_once() {
        let mut pay = start();
        let first = pay.call_keyed(&charge("1", "ann", 500), "order/1/charge");
        let again = pay.call_keyed(&charge("1", "ann", 500), "order/1/charge");
        assert_eq!(first.unwrap(), Ok("ch-1".to_owned()));
        assert_eq!(again.unwrap(), Ok("ch-1".to_owned()));
        let report = pay.call(&GetPayments {}).unwrap();
        assert_eq!(report.charges.len(), 1);
        assert_eq!(report.applied[0].times, 1);
        assert_eq!(report.replayed, 1);
    }

    #[test]
    fn the_card_declines_over_the_limit_and_for_listed_customers() {
        let mut pay = start();
        let over = pay.call_keyed(&charge("1", "ann", 10_001), "order/1/charge");
        let eve = pay.call_keyed(&charge("2", "eve", 1), "order/2/charge");
        assert_eq!(over.unwrap(), Err("card declined".to_owned()));
        assert_eq!(eve.unwrap(), Err("card declined".to_owned()));
        let report = pay.call(&GetPayments {}).unwrap();
        assert!(report.charges.is_empty());
        assert_eq!(report.declined, ["1", "2"]);
        assert!(report.applied.is_empty(), "a decline applies nothing");
    }

    #[test]
    fn a_refund_is_applied_once_and_refuses_a_late_charge() {
        let mut pay = start();
        pay.call_keyed(&charge("1", "ann", 500), "order/1/charge")
            .unwrap()
            .unwrap();
        let refund = Refund { order: "1".into() };
        assert_eq!(
            pay.call_keyed(&refund, "order/1/charge/undo").unwrap(),
            Ok(500)
        );
        assert_eq!(
            pay.call_keyed(&refund, "order/1/charge/undo").unwrap(),
            Ok(500)
        );
        // Refunded before it was charged: the charge, arriving late, is refused.
        let refund = Refund { order: "2".into() };
        assert_eq!(
            pay.call_keyed(&refund, "order/2/charge/undo").unwrap(),
            Ok(0)
        );
        let late = pay.call_keyed(&charge("2", "ann", 500), "order/2/charge");
        assert_eq!(late.unwrap(), Err("order 2 was refunded".to_owned()));
        let report = pay.call(&GetPayments {}).unwrap();
        assert!(report.charges.iter().all(|c| c.refunded));
    }
}
