//! The `users` service of the HTTP gateway example (`examples/api-gateway`): users in memory,
//! seeded from the configuration (`config = { users = ["Ada Lovelace", ..] }`, ids from 1) and
//! added with `users.create`; `users.me` tells the caller who the gateway authenticated. Every
//! reply carries the request's `x-request-id` header back when the route passed one along.

use std::collections::BTreeMap;

use bunraku_sdk::http::Response;
use bunraku_sdk::prelude::*;
use protocol::http::{CreateUser, GetUser, Me, User, WhoAmI};

/// The longest name `users.create` accepts, in characters.
const MAX_NAME: usize = 100;

#[derive(Default)]
pub struct Users {
    users: BTreeMap<u64, User>,
    next_id: u64,
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub struct Config {
    /// The names of the users to start with; the first gets id 1.
    users: Vec<String>,
}

impl Users {
    fn add(&mut self, name: String) -> User {
        self.next_id += 1;
        let user = User {
            id: self.next_id,
            name,
        };
        self.users.insert(user.id, user.clone());
        user
    }
}

/// `reply` with the request's `x-request-id`, when the gateway passed one along.
fn traced<T>(ctx: &Ctx, reply: Response<T>) -> Response<T> {
    match ctx.http_header("x-request-id") {
        Some(id) => reply.header("x-request-id", id),
        None => reply,
    }
}

#[actor]
impl Users {
    async fn on_start(&mut self, ctx: &Ctx, config: Config) {
        for name in config.users {
            self.add(name);
        }
        ctx.info(format_args!("users ready with {} users", self.users.len()));
    }

    #[handler]
    async fn get(&mut self, ctx: &Ctx, msg: GetUser) -> Response<User> {
        let user = msg.id.parse().ok().and_then(|id| self.users.get(&id));
        let reply = match user {
            Some(user) => Response::ok(user.clone()),
            None => Response::not_found(),
        };
        traced(ctx, reply)
    }

    #[handler]
    async fn create(&mut self, ctx: &Ctx, msg: CreateUser) -> Response<User> {
        let name = msg.name.trim();
        if name.is_empty() || name.chars().count() > MAX_NAME {
            return traced(ctx, Response::bad_request());
        }
        let user = self.add(name.to_owned());
        let location = format!("/users/{}", user.id);
        traced(ctx, Response::created(user).header("location", location))
    }

    #[handler]
    async fn me(&mut self, ctx: &Ctx, _msg: Me) -> Response<WhoAmI> {
        let reply = match ctx.principal() {
            Some(p) => Response::ok(WhoAmI {
                subject: p.subject.to_owned(),
                key_id: p.key_id.map(str::to_owned),
            }),
            None => Response::empty(401),
        };
        traced(ctx, reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bunraku_sdk::testing::TestActor;
    use bunraku_sdk::{PRINCIPAL_KEY_ID, PRINCIPAL_SUBJECT};
    use serde_json::json;

    fn seeded() -> TestActor<Users> {
        TestActor::<Users>::start(json!({"users": ["Ada Lovelace", "Alan Turing"]}))
    }

    const NO_EXT: [(&str, &str); 0] = [];

    #[test]
    fn get_finds_a_configured_user_by_the_path_parameter() {
        let mut t = seeded();
        // Exactly what the gateway sends for `GET /users/2`, and gets back.
        let reply = t
            .call_json_with_ext("users.get", r#"{"id":"2"}"#, &NO_EXT)
            .unwrap();
        assert_eq!(
            reply,
            json!({"$http": {"status": 200, "headers": {}}, "body": {"id": 2, "name": "Alan Turing"}})
        );
    }

    #[test]
    fn get_of_a_missing_or_malformed_id_is_not_found() {
        let mut t = seeded();
        for id in ["3", "0", "abc", "-1", ""] {
            let reply = t.call(&GetUser { id: id.into() }).unwrap();
            assert_eq!((reply.status, reply.body), (404, None), "id {id:?}");
        }
    }

    #[test]
    fn create_answers_201_with_a_location_and_the_user_is_found() {
        let mut t = seeded();
        let ext = [("http.header.x-request-id", "req-42")];
        let reply = t
            .call_json_with_ext("users.create", r#"{"name":"  Grace Hopper "}"#, &ext)
            .unwrap();
        assert_eq!(
            reply,
            json!({
                "$http": {"status": 201, "headers": {"location": "/users/3", "x-request-id": "req-42"}},
                "body": {"id": 3, "name": "Grace Hopper"}
            })
        );
        let got = t.call(&GetUser { id: "3".into() }).unwrap();
        assert_eq!(got.body.unwrap().name, "Grace Hopper");
    }

    #[test]
    fn create_refuses_a_blank_or_overlong_name() {
        let mut t = seeded();
        for name in [String::new(), "   ".into(), "x".repeat(MAX_NAME + 1)] {
            let reply = t.call(&CreateUser { name }).unwrap();
            assert_eq!(reply.status, 400);
        }
        // A missing name is a blank one: `400` without a body.
        let reply = t.call_json("users.create", "{}").unwrap();
        assert_eq!(reply, json!({"$http": {"status": 400, "headers": {}}}));
        assert_eq!(t.actor().users.len(), 2);
    }

    #[test]
    fn me_is_the_principal_the_gateway_authenticated() {
        let mut t = seeded();
        let ext = [
            (PRINCIPAL_SUBJECT, "demo-user"),
            (PRINCIPAL_KEY_ID, "demo-2024"),
            ("http.header.x-request-id", "r1"),
        ];
        let reply = t.call_with_ext(&Me {}, &ext).unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header_value("x-request-id"), Some("r1"));
        assert_eq!(
            reply.body.unwrap(),
            WhoAmI {
                subject: "demo-user".into(),
                key_id: Some("demo-2024".into())
            }
        );
    }

    #[test]
    fn me_without_a_principal_is_unauthorized() {
        let mut t = seeded();
        let reply = t.call(&Me {}).unwrap();
        assert_eq!((reply.status, reply.body), (401, None));
        assert!(reply.headers.is_empty());
    }
}
