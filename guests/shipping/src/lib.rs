//! A saga participant: ships orders. Shipping is the saga's last step and has no compensation.
//!
//! Like `inventory` and `payment`, it deduplicates by idempotency key inside the state it
//! saves, a [`Participant`] (one `save` for the shipment and the record of its reply, a trap
//! when that save fails), answers a repeated key with the recorded reply, and counts how many
//! times each key was applied.

use std::collections::BTreeMap;

use bunraku_sdk::prelude::*;
use protocol::orders::{GetShipments, Ship, Shipment, ShippingReport};
use protocol::participant::{Participant, key_of};

/// The shipping service's own state; saved inside a [`Participant`].
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct State {
    /// By order id.
    pub shipments: BTreeMap<String, Shipment>,
}

#[derive(Default)]
pub struct Shipping {
    books: Participant<State>,
}

#[actor]
impl Shipping {
    async fn on_start(&mut self, ctx: &Ctx) -> Result<(), Error> {
        self.books = ctx.load()?.unwrap_or_default();
        Ok(())
    }

    #[handler]
    async fn ship(&mut self, ctx: &Ctx, msg: Ship) -> Result<String, String> {
        let key = key_of(ctx, || format!("{}/ship", msg.order));
        if let Some(reply) = self.books.replay(ctx, &key).await {
            return reply;
        }
        let mut next = self.books.state.clone();
        let reply = match next.shipments.get(&msg.order) {
            Some(s) => Err(format!(
                "order {} was already shipped ({})",
                msg.order, s.tracking
            )),
            None => {
                let tracking = format!("trk-{}", msg.order);
                next.shipments.insert(
                    msg.order.clone(),
                    Shipment {
                        order: msg.order.clone(),
                        customer: msg.customer.clone(),
                        item: msg.item.clone(),
                        quantity: msg.quantity,
                        tracking: tracking.clone(),
                    },
                );
                ctx.info(format_args!(
                    "order {}: shipped {} {} to {} ({tracking})",
                    msg.order, msg.quantity, msg.item, msg.customer
                ));
                Ok(tracking)
            }
        };
        let applied = reply.is_ok();
        self.books.commit(ctx, next, &key, &reply, applied).await;
        reply
    }

    #[handler]
    async fn get_shipments(&mut self, _ctx: &Ctx, _msg: GetShipments) -> ShippingReport {
        ShippingReport {
            shipments: self.books.state.shipments.values().cloned().collect(),
            applied: self.books.applied_keys(),
            replayed: self.books.replayed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bunraku_sdk::testing::TestActor;

    fn ship(order: &str) -> Ship {
        Ship {
            order: order.into(),
            customer: "ann".into(),
            item: "widget".into(),
            quantity: 2,
        }
    }

    #[test]
    fn a_shipment_retried_with_its_key_ships_once() {
        let mut shipping = TestActor::<Shipping>::start_default();
        let first = shipping.call_keyed(&ship("1"), "order/1/ship").unwrap();
        let again = shipping.call_keyed(&ship("1"), "order/1/ship").unwrap();
        assert_eq!(first, Ok("trk-1".to_owned()));
        assert_eq!(again, Ok("trk-1".to_owned()));
        let report = shipping.call(&GetShipments {}).unwrap();
        assert_eq!(report.shipments.len(), 1);
        assert_eq!(report.applied[0].times, 1);
        assert_eq!(report.replayed, 1);
    }

    #[test]
    fn the_shipments_survive_a_restart() {
        let mut shipping = TestActor::<Shipping>::start_default();
        shipping
            .call_keyed(&ship("1"), "order/1/ship")
            .unwrap()
            .unwrap();
        let saved = shipping.saved_bytes().unwrap().to_vec();
        let mut restarted = TestActor::<Shipping>::builder()
            .saved_bytes(saved)
            .start_default();
        let again = restarted.call_keyed(&ship("1"), "order/1/ship").unwrap();
        assert_eq!(again, Ok("trk-1".to_owned()));
        assert_eq!(restarted.call(&GetShipments {}).unwrap().shipments.len(), 1);
    }
}
