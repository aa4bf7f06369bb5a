//! A saga participant: stock per item, reserved and released per order.
//!
//! Requests carry an idempotency key (the saga's `order/<id>/reserve`, `.../reserve/undo`). The
//! state this actor saves holds the stock, the reservations, and a [`Dedup`] table of the
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

use bunraku_sdk::dedup::Dedup;
use bunraku_sdk::prelude::*;
use protocol::orders::{
    Applied, GetInventory, InventoryReport, Release, Reservation, Reserve, Restock,
};

/// Settings from the manifest: the stock to start with when nothing is saved.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub stock: BTreeMap<String, u64>,
}

/// Everything the inventory saves, in one value.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct State {
    pub stock: BTreeMap<String, u64>,
    /// By order id.
    pub reservations: BTreeMap<String, Reservation>,
    pub dedup: Dedup,
    /// How many times each key's request was applied.
    pub applied: BTreeMap<String, u64>,
    pub replayed: u64,
}

#[derive(Default)]
pub struct Inventory {
    state: State,
}

impl Inventory {
    /// Answers `key` from its record, if it was applied before.
    async fn replay<R: serde::de::DeserializeOwned>(&mut self, ctx: &Ctx, key: &str) -> Option<R> {
        let reply = self.state.dedup.get(key)?;
        self.state.replayed += 1;
        ctx.info(format_args!(
            "{key}: already applied, answering from the record"
        ));
        if let Err(e) = ctx.save(&self.state).await {
            ctx.warn(format_args!("the replay count was not saved: {e}"));
        }
        Some(reply)
    }

    /// Makes `next` (with `reply` recorded under `key`, and counted as applied when it was)
    /// durable, then current.
    async fn commit<R: Serialize>(
        &mut self,
        ctx: &Ctx,
        mut next: State,
        key: &str,
        reply: &R,
        applied: bool,
    ) {
        next.dedup.record(key, reply);
        if applied {
            *next.applied.entry(key.to_owned()).or_default() += 1;
        }
        if let Err(e) = ctx.save(&next).await {
            // Not durable, so not applied: trap, and let the retry find out.
            panic!("{key}: the state was not saved ({e}); failing so the requester retries");
        }
        self.state = next;
    }
}

/// The key a request came with, or one derived from what it is about.
fn key_of(ctx: &Ctx, derived: impl FnOnce() -> String) -> String {
    ctx.idempotency_key().map_or_else(derived, str::to_owned)
}

#[actor]
impl Inventory {
    async fn on_start(&mut self, ctx: &Ctx, config: Config) -> Result<(), Error> {
        self.state = match ctx.load::<State>()? {
            Some(state) => state,
            None => State {
                stock: config.stock,
                ..State::default()
            },
        };
        Ok(())
    }

    #[handler]
    async fn reserve(&mut self, ctx: &Ctx, msg: Reserve) -> Result<u64, String> {
        let key = key_of(ctx, || format!("{}/reserve", msg.order));
        if let Some(reply) = self.replay(ctx, &key).await {
            return reply;
        }
        let mut next = self.state.clone();
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
            next = self.state.clone();
        }
        let applied = reply.is_ok();
        self.commit(ctx, next, &key, &reply, applied).await;
        reply
    }

    #[handler]
    async fn release(&mut self, ctx: &Ctx, msg: Release) -> Result<u64, String> {
        let key = key_of(ctx, || format!("{}/reserve/undo", msg.order));
        if let Some(reply) = self.replay(ctx, &key).await {
            return reply;
        }
        let mut next = self.state.clone();
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
        self.commit(ctx, next, &key, &reply, true).await;
        reply
    }

    #[handler]
    async fn restock(&mut self, ctx: &Ctx, msg: Restock) -> u64 {
        let mut next = self.state.clone();
        let level = next.stock.entry(msg.item.clone()).or_default();
        *level += msg.quantity;
        let level = *level;
        if let Err(e) = ctx.save(&next).await {
            panic!("restock not saved: {e}");
        }
        self.state = next;
        level
    }

    #[handler]
    async fn get_inventory(&mut self, _ctx: &Ctx, _msg: GetInventory) -> InventoryReport {
        let s = &self.state;
        InventoryReport {
            stock: s.stock.iter().map(|(i, n)| (i.clone(), *n)).collect(),
            reservations: s.reservations.values().cloned().collect(),
            applied: s
                .applied
                .iter()
                .map(|(key, times)| Applied {
                    key: key.clone(),
                    times: *times,
                })
                .collect(),
            replayed: s.replayed,
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
