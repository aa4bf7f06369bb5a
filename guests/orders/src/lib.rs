//! The `orders` service of the HTTP gateway example (`examples/api-gateway`), and its failure
//! demos: a handler slower than its route's timeout (`504`), one that traps (`502`) and one that
//! fails (`500`).
//!
//! The example runs two instances, and the gateway spreads requests over them round-robin. Each
//! instance starts with the configured orders (`config = { orders = [{ item = "tea", quantity =
//! 2 }] }`, ids `1`, `2`, ...); an order created at run time gets the id `<instance>-<n>` and is
//! published on `orders.replica`, to which every instance subscribes in `on_start`, before the
//! `201` goes out: so the next request finds it whichever instance it reaches. (Memory only: an
//! instance that restarts starts from the configured orders again.) Every reply names the
//! instance that answered in an `x-served-by` header (`orders#1`).
//!
//! Every handler takes `&self` (the state is in `RefCell`s, borrowed only between `.await`s),
//! so with the actor's `concurrency` above 1 a sleeping `orders.slow` does not hold up the
//! other requests: a `&mut self` handler would keep the state borrowed while it sleeps.

use std::cell::{Cell, RefCell};
use std::time::Duration;

use bunraku_sdk::http::Response;
use bunraku_sdk::prelude::*;
use protocol::http::{
    Crash, CreateOrder, Fail, GetOrder, ListOrders, Order, OrderEvent, OrderList, OrderReplica,
    Slow,
};

/// The subject new orders are replicated on.
pub const REPLICA_SUBJECT: &str = "orders.replica";

/// The largest quantity `orders.create` accepts.
const MAX_QUANTITY: u32 = 1000;

#[derive(Default)]
pub struct Orders {
    orders: RefCell<Vec<Order>>,
    /// Orders this instance created.
    created: Cell<u64>,
    /// [`OrderEvent`]s received.
    events: Cell<u64>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub struct Config {
    orders: Vec<Seed>,
}

#[derive(Deserialize)]
struct Seed {
    item: String,
    quantity: u32,
}

/// `reply` with the answering instance in `x-served-by`.
fn served<T>(ctx: &Ctx, reply: Response<T>) -> Response<T> {
    reply.header("x-served-by", format!("{}#{}", ctx.name(), ctx.instance()))
}

#[actor]
impl Orders {
    async fn on_start(&mut self, ctx: &Ctx, config: Config) -> Result<(), Error> {
        let seeded = (1..).zip(config.orders).map(|(id, seed)| Order {
            id: format!("{id}"),
            item: seed.item,
            quantity: seed.quantity,
            placed_by: None,
        });
        self.orders.get_mut().extend(seeded);
        ctx.subscribe(REPLICA_SUBJECT)?;
        ctx.info(format_args!(
            "{}#{} ready with {} orders",
            ctx.name(),
            ctx.instance(),
            self.orders.get_mut().len()
        ));
        Ok(())
    }

    #[handler]
    async fn list(&self, ctx: &Ctx, _msg: ListOrders) -> Response<OrderList> {
        let list = OrderList {
            instance: ctx.instance(),
            caller: ctx.principal().map(|p| p.subject.to_owned()),
            orders: self.orders.borrow().clone(),
            events_seen: self.events.get(),
        };
        served(ctx, Response::ok(list))
    }

    #[handler]
    async fn get(&self, ctx: &Ctx, msg: GetOrder) -> Response<Order> {
        let order = self
            .orders
            .borrow()
            .iter()
            .find(|o| o.id == msg.id)
            .cloned();
        let reply = match order {
            Some(order) => Response::ok(order),
            None => Response::not_found(),
        };
        served(ctx, reply)
    }

    #[handler]
    async fn create(&self, ctx: &Ctx, msg: CreateOrder) -> Response<Order> {
        let item = msg.item.trim();
        if item.is_empty() || !(1..=MAX_QUANTITY).contains(&msg.quantity) {
            return served(ctx, Response::bad_request());
        }
        let n = self.created.get() + 1;
        self.created.set(n);
        let order = Order {
            id: format!("{}-{n}", ctx.instance()),
            item: item.to_owned(),
            quantity: msg.quantity,
            placed_by: ctx.principal().map(|p| p.subject.to_owned()),
        };
        self.orders.borrow_mut().push(order.clone());
        let replica = OrderReplica {
            order: order.clone(),
        };
        if let Err(e) = ctx.publish(REPLICA_SUBJECT, &replica).await {
            ctx.warn(format_args!("order {} not replicated: {e}", order.id));
        }
        let location = format!("/orders/{}", order.id);
        served(ctx, Response::created(order).header("location", location))
    }

    /// An order another instance (or this one) created.
    #[handler]
    async fn replica(&self, _ctx: &Ctx, msg: OrderReplica) {
        let mut orders = self.orders.borrow_mut();
        if !orders.iter().any(|o| o.id == msg.order.id) {
            orders.push(msg.order);
        }
    }

    /// Sleeps on the host clock; other handlers run meanwhile, up to the actor's concurrency.
    #[handler]
    async fn slow(&self, ctx: &Ctx, msg: Slow) -> Result<u64, String> {
        let ms = msg.ms.min(Slow::MAX_MS);
        ctx.sleep(Duration::from_millis(ms))
            .await
            .map_err(|e| format!("could not sleep: {e}"))?;
        Ok(ms)
    }

    #[handler]
    async fn crash(&self, _ctx: &Ctx, _msg: Crash) -> String {
        panic!("orders.crash: crashing on purpose");
    }

    #[handler]
    async fn fail(&self, ctx: &Ctx, _msg: Fail) -> Result<Order, String> {
        // An internal detail: the log gets it, the HTTP client must not.
        let detail = "inventory database unreachable at 10.0.0.7:5432 (user orders_rw)";
        ctx.warn(format_args!("orders.fail: {detail}"));
        Err(detail.to_owned())
    }

    #[handler]
    async fn event(&self, ctx: &Ctx, msg: OrderEvent) {
        self.events.set(self.events.get() + 1);
        ctx.info(format_args!(
            "event `{}` on {}",
            msg.kind,
            ctx.subject().unwrap_or("-")
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bunraku_sdk::testing::TestActor;
    use bunraku_sdk::{PRINCIPAL_KEY_ID, PRINCIPAL_SUBJECT};
    use serde_json::json;
    use std::panic::{AssertUnwindSafe, catch_unwind};

    fn seeded(instance: u32) -> TestActor<Orders> {
        TestActor::<Orders>::builder()
            .name("orders")
            .instance(instance)
            .start(json!({"orders": [{"item": "tea", "quantity": 2}, {"item": "cake", "quantity": 1}]}))
    }

    const FRONTEND: [(&str, &str); 2] = [
        (PRINCIPAL_SUBJECT, "frontend"),
        (PRINCIPAL_KEY_ID, "shop-frontend"),
    ];

    #[test]
    fn list_names_the_instance_and_the_caller() {
        let mut t = seeded(1);
        let reply = t.call_with_ext(&ListOrders {}, &FRONTEND).unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header_value("x-served-by"), Some("orders#1"));
        let list = reply.body.unwrap();
        assert_eq!(
            (list.instance, list.caller.as_deref()),
            (1, Some("frontend"))
        );
        let ids: Vec<_> = list.orders.iter().map(|o| o.id.as_str()).collect();
        assert_eq!(ids, ["1", "2"]);
    }

    #[test]
    fn get_by_path_parameter_and_not_found() {
        let mut t = seeded(0);
        let reply = t
            .call_json_with_ext("orders.get", r#"{"id":"2"}"#, &FRONTEND)
            .unwrap();
        assert_eq!(
            reply,
            json!({
                "$http": {"status": 200, "headers": {"x-served-by": "orders#0"}},
                "body": {"id": "2", "item": "cake", "quantity": 1, "placed_by": null}
            })
        );
        let missing = t.call(&GetOrder { id: "9".into() }).unwrap();
        assert_eq!((missing.status, missing.body), (404, None));
    }

    #[test]
    fn create_answers_201_with_a_location_on_its_instance() {
        let mut t = seeded(1);
        // The quantity may come as a JSON number (the body) or a string (the query).
        let created = t
            .call_json_with_ext(
                "orders.create",
                r#"{"item":"scones","quantity":3}"#,
                &FRONTEND,
            )
            .unwrap();
        assert_eq!(created["$http"]["status"], 201);
        assert_eq!(created["$http"]["headers"]["location"], "/orders/1-1");
        assert_eq!(
            created["body"],
            json!({"id": "1-1", "item": "scones", "quantity": 3, "placed_by": "frontend"})
        );
        let again = t
            .call_json_with_ext(
                "orders.create",
                r#"{"item":"jam","quantity":"4"}"#,
                &FRONTEND,
            )
            .unwrap();
        assert_eq!(again["$http"]["headers"]["location"], "/orders/1-2");
        let got = t.call(&GetOrder { id: "1-2".into() }).unwrap();
        assert_eq!(got.body.unwrap().quantity, 4);
        let published = t.published::<OrderReplica>(REPLICA_SUBJECT);
        let ids: Vec<_> = published.iter().map(|r| r.order.id.as_str()).collect();
        assert_eq!(ids, ["1-1", "1-2"]);
    }

    #[test]
    fn an_order_created_by_another_instance_is_found_once() {
        let mut zero = seeded(0);
        let mut one = seeded(1);
        assert_eq!(zero.subscriptions()[0].pattern, REPLICA_SUBJECT);
        let created = zero
            .call_with_ext(
                &CreateOrder {
                    item: "tea".into(),
                    quantity: 1,
                },
                &FRONTEND,
            )
            .unwrap();
        assert_eq!(created.header_value("location"), Some("/orders/0-1"));
        // The host delivers the replica to every instance, the creator included.
        for replica in zero.published::<OrderReplica>(REPLICA_SUBJECT) {
            one.deliver(REPLICA_SUBJECT, &replica).unwrap();
            zero.deliver(REPLICA_SUBJECT, &replica).unwrap();
        }
        let got = one.call(&GetOrder { id: "0-1".into() }).unwrap();
        assert_eq!(got.header_value("x-served-by"), Some("orders#1"));
        assert_eq!(got.body.unwrap().placed_by.as_deref(), Some("frontend"));
        for t in [&mut zero, &mut one] {
            let list = t.call(&ListOrders {}).unwrap().body.unwrap();
            assert_eq!(list.orders.len(), 3, "no duplicate on the creator");
        }
    }

    #[test]
    fn missing_fields_are_a_bad_request() {
        let mut t = seeded(0);
        let reply = t.call_json("orders.create", "{}").unwrap();
        assert_eq!(reply["$http"]["status"], 400);
        assert!(reply.get("body").is_none(), "no body: {reply}");
    }

    #[test]
    fn create_refuses_bad_orders() {
        let mut t = seeded(0);
        for (item, quantity) in [("tea", 0), (" ", 1), ("tea", MAX_QUANTITY + 1)] {
            let reply = t
                .call(&CreateOrder {
                    item: item.into(),
                    quantity,
                })
                .unwrap();
            assert_eq!(reply.status, 400, "{item:?} x {quantity}");
        }
        let err = t
            .call_json("orders.create", r#"{"item":"tea","quantity":"lots"}"#)
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::Malformed);
        assert_eq!(t.actor().orders.borrow().len(), 2);
        assert!(t.publications().is_empty());
    }

    #[test]
    fn slow_sleeps_on_the_host_clock() {
        let mut t = seeded(0);
        // Natively `ctx.sleep` returns at once; in the host it waits on the clock.
        assert_eq!(
            t.call_json("orders.slow", r#"{"ms":"1500"}"#).unwrap(),
            json!({"Ok": 1500})
        );
        assert_eq!(t.call(&Slow { ms: u64::MAX }).unwrap(), Ok(Slow::MAX_MS));
        assert_eq!(
            t.call_json("orders.slow", "{}").unwrap(),
            json!({"Ok": Slow::DEFAULT_MS})
        );
    }

    #[test]
    fn fail_is_an_error_reply_that_logs_its_detail() {
        let mut t = seeded(0);
        let err = t.call(&Fail {}).unwrap().unwrap_err();
        assert!(err.contains("database unreachable"), "{err}");
        assert!(t.logs().iter().any(|l| l.message.contains("10.0.0.7")));
    }

    #[test]
    fn crash_panics_which_traps_in_wasm() {
        let mut t = seeded(0);
        let crashed = catch_unwind(AssertUnwindSafe(|| t.call(&Crash {})));
        assert!(crashed.is_err());
    }

    #[test]
    fn events_are_counted_and_listed() {
        let mut t = seeded(0);
        let event = OrderEvent {
            kind: "restock".into(),
        };
        t.deliver("orders.events", &event).unwrap();
        t.deliver("orders.events", &event).unwrap();
        let list = t.call(&ListOrders {}).unwrap().body.unwrap();
        assert_eq!((list.events_seen, list.caller), (2, None));
        assert!(
            t.logs()
                .iter()
                .any(|l| l.message == "event `restock` on orders.events")
        );
    }
}
