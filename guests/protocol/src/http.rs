//! The HTTP gateway example (`examples/api-gateway`): the messages of `users`, `orders` and
//! `http-echo`, as the gateway delivers them.
//!
//! The gateway sends a route's message as JSON: the request's body object, with the query and
//! path parameters merged in as string fields. So an `id` from a path is a `String`, and a
//! number that may come from a query string or a body is read with
//! [`from_param`](bunraku_sdk::http::from_param). Replies are
//! [`Response`](bunraku_sdk::http::Response)s (status, headers, body), plain values (`200`), or
//! `Result<T, String>` (`Ok` is `200`, `Err` a generic `500`).
//!
//! Fields a client may leave out have defaults, so the handler answers `400` itself: a message
//! that does not decode never reaches the handler (the SDK refuses it as malformed, which the
//! gateway reports as its own failure).

use bunraku_sdk::http::{Response, from_param};
use bunraku_sdk::prelude::*;

/// A user of the `users` service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: u64,
    pub name: String,
}

/// `GET /users/{id}`: one user, `404` when there is none with that id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[message(name = "users.get", reply = Response<User>)]
pub struct GetUser {
    pub id: String,
}

/// `POST /users` with `{"name": ..}`: `201` with the new user and its `location`, `400` for a
/// blank or overlong name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[message(name = "users.create", reply = Response<User>)]
pub struct CreateUser {
    #[serde(default)]
    pub name: String,
}

/// `GET /me`: who the gateway authenticated, `401` when the message came without a principal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[message(name = "users.me", reply = Response<WhoAmI>)]
pub struct Me {}

/// The caller as the gateway authenticated it ([`Ctx::principal`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoAmI {
    /// The API key's subject or the JWT's `sub`.
    pub subject: String,
    /// The API key's id or the JWT's `kid`.
    pub key_id: Option<String>,
}

/// An order of the `orders` service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// Configured orders are numbered `1`, `2`, ...; an order created at run time is
    /// `<instance>-<n>`: the instance that created it, and its count there.
    pub id: String,
    pub item: String,
    pub quantity: u32,
    /// Who created it (the principal's subject), for an order created through the gateway.
    pub placed_by: Option<String>,
}

/// `GET /orders`: the orders (as the answering instance knows them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[message(name = "orders.list", reply = Response<OrderList>)]
pub struct ListOrders {}

/// The reply to [`ListOrders`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderList {
    /// Which instance of `orders` answered.
    pub instance: u32,
    /// The caller's subject.
    pub caller: Option<String>,
    pub orders: Vec<Order>,
    /// How many [`OrderEvent`]s this instance received.
    pub events_seen: u64,
}

/// `GET /orders/{id}`: one order, `404` when there is none with that id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[message(name = "orders.get", reply = Response<Order>)]
pub struct GetOrder {
    pub id: String,
}

/// `POST /orders` with `{"item": .., "quantity": ..}`: `201` with the order and its `location`,
/// `400` for a blank item or a quantity outside `1..=1000`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[message(name = "orders.create", reply = Response<Order>)]
pub struct CreateOrder {
    #[serde(default)]
    pub item: String,
    #[serde(default, deserialize_with = "from_param")]
    pub quantity: u32,
}

/// `GET /demo/slow?ms=N`: replies with `N` after sleeping `N` ms (default 2000, at most 30000)
/// on the host clock, longer than the route's timeout, so the gateway answers `504`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[message(name = "orders.slow", reply = Result<u64, String>)]
pub struct Slow {
    #[serde(default = "Slow::default_ms", deserialize_with = "from_param")]
    pub ms: u64,
}

impl Slow {
    /// The sleep when the request names none.
    pub const DEFAULT_MS: u64 = 2000;
    /// The longest sleep.
    pub const MAX_MS: u64 = 30_000;

    fn default_ms() -> u64 {
        Self::DEFAULT_MS
    }
}

/// `POST /demo/crash`: the handler panics, which traps the instance (`502`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[message(name = "orders.crash", reply = String)]
pub struct Crash {}

/// `GET /demo/fail`: always `Err` with an internal detail the gateway must not show (`500`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[message(name = "orders.fail", reply = Result<Order, String>)]
pub struct Fail {}

/// Published by the `orders` instance that created an order, on subject `orders.replica`, to
/// which every instance subscribes: so every instance knows every order, whichever one the
/// gateway asks next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[message(name = "orders.replica")]
pub struct OrderReplica {
    pub order: Order,
}

/// Published by the gateway for `POST /events` on subject `orders.events`; one `orders`
/// instance (a queue group) counts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[message(name = "orders.event")]
pub struct OrderEvent {
    pub kind: String,
}

/// `POST /echo` (`http-echo`, the gateway benchmark's actor): the same payload back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[message(name = "echo", reply = EchoPayload)]
pub struct EchoPayload {
    #[serde(default)]
    pub data: String,
}
