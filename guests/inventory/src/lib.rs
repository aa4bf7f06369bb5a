//! A saga participant: stock per item, reserved and released per order.
//!
//! Requests carry an idempotency key (the saga's `order/<id>/reserve`, `.../reserve/undo`). The
//! value this actor saves is a [`Participant`]: the stock and the reservations, with the
//! replies given per key, so one `ctx.save` makes an effect and the record of it durable
//! together: a request repeated with a key already applied is answered with the recorded reply
//! and not applied again. A save that fails traps the instance (the requester sees `target
//! failed`, an unknown outcome, and retries with the same key), so a reply is only ever given
//! for an effect that is durable.
//!
//! A release for an order that reserved nothing (the saga gave up on a reserve whose outcome
//! it did not know) records the order as released, so a late delivery of that reserve is
//! refused instead of applied.

use std::collections::BTreeMap;

use bunraku_sdk::prelude::*;
use protocol::orders::{GetInventory, InventoryReport, Release, Reservation, Reserve, Restock};
use protocol::participant::{Participant, key_of};

/// Settings from the manifest: the stock to start with when nothing is saved.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub stock: BTreeMap<String, u64>,
}

/// The inventory's own state; saved inside a [`Participant`].
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct State {
    pub stock: BTreeMap<String, u64>,
    /// By order id.
    pub reservations: BTreeMap<String, Reservation>,
}

#[derive(Default)]
pub struct Inventory {
    books: Participant<State>,
}

#[actor]
impl Inventory {
    async fn on_start(&mut self, ctx: &Ctx, config: Config) -> Result<(), Error> {
        self.books = match ctx.load()? {
            Some(books) => books,
            None => Participant {
                state: State {
                    stock: config.stock,
                    ..State::default()
                },
                ..Participant::default()
            },
        };
        Ok(())
    }

    #[handler]
    async fn reserve(&mut self, ctx: &Ctx, msg: Reserve) -> Result<u64, String> {
        let key = key_of(ctx, || format!("{}/reserve", msg.order));
        if let Some(reply) = self.books.replay(ctx, &key).await {
            return reply;
        }
        let mut next = self.books.state.clone();
        let available = next.stock.get(&msg.item).copied().unwrap_or(0);
        let reply = match next.reservations.get(&msg.order) {
            Some(r) if r.released => Err(format!("order {} was released", msg.order)),
            Some(r) => Err(format!(
                "order {} already reserved {} {}",
                msg.order, r.quantity, r.item
            )),
            None if available < msg.quantity => Err(format!(
                "out of stock: {} {} wanted, {available} left",
                msg.quantity, msg.item
            )),
            None => {
                let left = available - msg.quantity;
                next.stock.insert(msg.item.clone(), left);
                next.reservations.insert(
                    msg.order.clone(),
                    Reservation {
                        order: msg.order.clone(),
                        item: msg.item.clone(),
                        quantity: msg.quantity,
                        released: false,
                    },
                );
                ctx.info(format_args!(
                    "order {}: reserved {} {} ({left} left)",
                    msg.order, msg.quantity, msg.item
                ));
                Ok(left)
            }
        };
        if reply.is_err() {
            // Nothing applied: only the answer is recorded, so a retry gets the same one.
            next = self.books.state.clone();
        }
        let applied = reply.is_ok();
        self.books.commit(ctx, next, &key, &reply, applied).await;
        reply
    }

    #[handler]
    async fn release(&mut self, ctx: &Ctx, msg: Release) -> Result<u64, String> {
        let key = key_of(ctx, || format!("{}/reserve/undo", msg.order));
        if let Some(reply) = self.books.replay(ctx, &key).await {
            return reply;
        }
        let mut next = self.books.state.clone();
        let released = match next.reservations.get_mut(&msg.order) {
            Some(r) if r.released => 0,
            Some(r) => {
                r.released = true;
                *next.stock.entry(r.item.clone()).or_default() += r.quantity;
                r.quantity
            }
            None => {
                // Nothing reserved (yet): refuse the reserve if it still arrives.
                next.reservations.insert(
                    msg.order.clone(),
                    Reservation {
                        order: msg.order.clone(),
                        released: true,
                        ..Reservation::default()
                    },
                );
                0
            }
        };
        ctx.info(format_args!("order {}: released {released}", msg.order));
        let reply = Ok(released);
        self.books.commit(ctx, next, &key, &reply, true).await;
        reply
    }

    #[handler]
    async fn restock(&mut self, ctx: &Ctx, msg: Restock) -> u64 {
        let level = self.books.state.stock.entry(msg.item.clone()).or_default();
        *level += msg.quantity;
        let level = *level;
        // A failed save traps: the unsaved level goes with the instance.
        if let Err(e) = ctx.save(&self.books).await {
            panic!("restock not saved: {e}");
        }
        level
    }

    #[handler]
    async fn get_inventory(&mut self, _ctx: &Ctx, _msg: GetInventory) -> InventoryReport {
        let s = &self.books.state;
        InventoryReport {
            stock: s.stock.iter().map(|(i, n)| (i.clone(), *n)).collect(),
            reservations: s.reservations.values().cloned().collect(),
            applied: self.books.applied_keys(),
            replayed: self.books.replayed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bunraku_sdk::testing::TestActor;

    fn start() -> TestActor<Inventory> {
        TestActor::start(serde_json::json!({ "stock": { "widget": 5 } }))
    }

    fn reserve(order: &str, quantity: u64) -> Reserve {
        Reserve {
            order: order.into(),
            item: "widget".into(),
            quantity,
        }
    }

    fn applied(report: &InventoryReport, key: &str) -> u64 {
        report
            .applied
            .iter()
            .find(|a| a.key == key)
            .map_or(0, |a| a.times)
    }

    #[test]
    fn a_reserve_retried_with_its_key_is_applied_once() {
        let mut inv = start();
        let first = inv.call_keyed(&reserve("1", 2), "order/1/reserve").unwrap();
        let again = inv.call_keyed(&reserve("1", 2), "order/1/reserve").unwrap();
        assert_eq!((first, again), (Ok(3), Ok(3)));
        let report = inv.call(&GetInventory {}).unwrap();
        assert_eq!(report.stock_of("widget"), 3);
        assert_eq!(applied(&report, "order/1/reserve"), 1);
        assert_eq!(report.replayed, 1);
    }

    #[test]
    fn release_puts_the_stock_back_once() {
        let mut inv = start();
        inv.call_keyed(&reserve("1", 2), "order/1/reserve")
            .unwrap()
            .unwrap();
        let release = Release { order: "1".into() };
        assert_eq!(
            inv.call_keyed(&release, "order/1/reserve/undo").unwrap(),
            Ok(2)
        );
        assert_eq!(
            inv.call_keyed(&release, "order/1/reserve/undo").unwrap(),
            Ok(2)
        );
        let report = inv.call(&GetInventory {}).unwrap();
        assert_eq!(report.stock_of("widget"), 5);
        assert!(report.reservations[0].released);
        assert_eq!(applied(&report, "order/1/reserve/undo"), 1);
    }

    #[test]
    fn a_reserve_arriving_after_its_release_is_refused() {
        let mut inv = start();
        let release = Release { order: "1".into() };
        assert_eq!(
            inv.call_keyed(&release, "order/1/reserve/undo").unwrap(),
            Ok(0)
        );
        let late = inv.call_keyed(&reserve("1", 2), "order/1/reserve").unwrap();
        assert_eq!(late, Err("order 1 was released".into()));
        assert_eq!(inv.call(&GetInventory {}).unwrap().stock_of("widget"), 5);
    }

    #[test]
    fn out_of_stock_is_a_definite_failure_that_changes_nothing() {
        let mut inv = start();
        let reply = inv.call_keyed(&reserve("1", 9), "order/1/reserve").unwrap();
        assert_eq!(reply, Err("out of stock: 9 widget wanted, 5 left".into()));
        let report = inv.call(&GetInventory {}).unwrap();
        assert_eq!(report.stock_of("widget"), 5);
        assert!(report.reservations.is_empty());
        assert_eq!(applied(&report, "order/1/reserve"), 0);
    }

    #[test]
    fn a_restarted_inventory_still_recognises_an_applied_key() {
        let mut inv = start();
        inv.call_keyed(&reserve("1", 2), "order/1/reserve")
            .unwrap()
            .unwrap();
        let saved = inv.saved_bytes().unwrap().to_vec();
        let mut restarted = TestActor::<Inventory>::builder()
            .saved_bytes(saved)
            .start(serde_json::json!({ "stock": { "widget": 5 } }));
        let again = restarted
            .call_keyed(&reserve("1", 2), "order/1/reserve")
            .unwrap();
        assert_eq!(again, Ok(3));
        assert_eq!(
            restarted.call(&GetInventory {}).unwrap().stock_of("widget"),
            3
        );
    }
}
