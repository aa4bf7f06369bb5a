//! Replies for actors behind the HTTP gateway: a status, headers and a body.
//!
//! The gateway turns an HTTP request into a JSON message (the body object, with the query and
//! path parameters merged in as string fields) and the actor's JSON reply into the HTTP
//! response. Any reply value becomes a `200` with that value as its body; a [`Response`] sets the
//! status and headers too. It is an ordinary serde value, so it travels between actors as well
//! (postcard), and on the wire to the gateway it is exactly
//!
//! ```json
//! {"$http": {"status": 201, "headers": {"location": "/orders/9"}}, "body": {"id": 9}}
//! ```
//!
//! without `"body"` for a response without a body (the gateway then sends an empty body; a
//! `Some` body that serializes as `null` is sent as `null`). Who called, and the headers the route
//! passes along, are on the [`Ctx`](crate::Ctx): [`principal`](crate::Ctx::principal) and
//! [`http_header`](crate::Ctx::http_header).
//!
//! ```
//! use bunraku_sdk::http::{self, Response};
//! use bunraku_sdk::prelude::*;
//! use bunraku_sdk::testing::TestActor;
//!
//! #[derive(Serialize, Deserialize, Clone)]
//! struct Book {
//!     id: u64,
//!     title: String,
//! }
//!
//! // `GET /books/{id}` delivers `{"id": "7"}`: path parameters are strings.
//! #[derive(Serialize, Deserialize, Message)]
//! #[message(name = "books.get", reply = Response<Book>)]
//! struct GetBook {
//!     #[serde(deserialize_with = "http::from_param")]
//!     id: u64,
//! }
//!
//! #[derive(Serialize, Deserialize, Message)]
//! #[message(name = "books.add", reply = Response<Book>)]
//! struct AddBook {
//!     title: String,
//! }
//!
//! #[derive(Default)]
//! struct Library {
//!     books: Vec<Book>,
//! }
//!
//! #[actor]
//! impl Library {
//!     #[handler]
//!     async fn get(&mut self, _ctx: &Ctx, msg: GetBook) -> Response<Book> {
//!         match self.books.iter().find(|b| b.id == msg.id) {
//!             Some(book) => Response::ok(book.clone()),
//!             None => Response::not_found(),
//!         }
//!     }
//!
//!     #[handler]
//!     async fn add(&mut self, ctx: &Ctx, msg: AddBook) -> Response<Book> {
//!         let book = Book { id: self.books.len() as u64 + 1, title: msg.title };
//!         self.books.push(book.clone());
//!         let mut reply = Response::created(book.clone())
//!             .header("Location", format!("/books/{}", book.id));
//!         if let Some(id) = ctx.http_header("x-request-id") {
//!             reply = reply.header("x-request-id", id);
//!         }
//!         reply
//!     }
//! }
//!
//! let mut library = TestActor::<Library>::start_default();
//! // What the gateway sends and gets back for `POST /books` with `X-Request-Id: r1`:
//! let reply = library
//!     .call_json_with_ext("books.add", r#"{"title":"Dune"}"#, &[("http.header.x-request-id", "r1")])
//!     .unwrap();
//! assert_eq!(
//!     reply,
//!     serde_json::json!({
//!         "$http": {"status": 201, "headers": {"location": "/books/1", "x-request-id": "r1"}},
//!         "body": {"id": 1, "title": "Dune"}
//!     })
//! );
//! // `GET /books/1`, and a book that does not exist:
//! assert_eq!(library.call_json("books.get", r#"{"id":"1"}"#).unwrap()["body"]["title"], "Dune");
//! let missing = library.call_json("books.get", r#"{"id":"9"}"#).unwrap();
//! assert_eq!(missing, serde_json::json!({"$http": {"status": 404, "headers": {}}}));
//! // Between actors (postcard) the reply is the typed value.
//! let missing = library.call(&GetBook { id: 9 }).unwrap();
//! assert_eq!((missing.status, missing.body.is_none()), (404, true));
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

/// An HTTP response from an actor: a status, headers and an optional body.
///
/// Build one with a constructor ([`ok`](Self::ok), [`created`](Self::created),
/// [`status`](Self::status), [`not_found`](Self::not_found), ...) and add headers with
/// [`header`](Self::header). It serializes as `{"$http": {"status": .., "headers": {..}},
/// "body": ..}` (see the [module](self) documentation; `"body"` left out when there is none),
/// and it is any handler's reply type like another: `#[message(reply = Response<T>)]`.
///
/// ```
/// use bunraku_sdk::http::Response;
///
/// let reply = Response::created(serde_json::json!({"id": 9})).header("Location", "/orders/9");
/// assert_eq!(
///     serde_json::to_string(&reply).unwrap(),
///     r#"{"$http":{"status":201,"headers":{"location":"/orders/9"}},"body":{"id":9}}"#
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response<T> {
    /// The HTTP status code; the gateway sends `200..=599` and answers `502` for another.
    pub status: u16,
    /// Response headers by lowercase name ([`header`](Self::header) lowercases).
    pub headers: BTreeMap<String, String>,
    /// The body, sent as JSON; `None` for a response without one.
    pub body: Option<T>,
}

impl<T> Response<T> {
    /// A response with status `code` and `body`.
    pub fn status(code: u16, body: T) -> Self {
        Self {
            status: code,
            headers: BTreeMap::new(),
            body: Some(body),
        }
    }

    /// A response with status `code` and no body.
    pub fn empty(code: u16) -> Self {
        Self {
            status: code,
            headers: BTreeMap::new(),
            body: None,
        }
    }

    /// `200 OK` with `body`.
    pub fn ok(body: T) -> Self {
        Self::status(200, body)
    }

    /// `201 Created` with `body`; add a `location` header with [`header`](Self::header).
    pub fn created(body: T) -> Self {
        Self::status(201, body)
    }

    /// `202 Accepted` with `body`.
    pub fn accepted(body: T) -> Self {
        Self::status(202, body)
    }

    /// `204 No Content`.
    pub fn no_content() -> Self {
        Self::empty(204)
    }

    /// `400 Bad Request`, no body.
    pub fn bad_request() -> Self {
        Self::empty(400)
    }

    /// `403 Forbidden`, no body.
    pub fn forbidden() -> Self {
        Self::empty(403)
    }

    /// `404 Not Found`, no body.
    pub fn not_found() -> Self {
        Self::empty(404)
    }

    /// `409 Conflict`, no body.
    pub fn conflict() -> Self {
        Self::empty(409)
    }

    /// Sets header `name` (stored lowercase, as HTTP/1.1 and the gateway treat names) to
    /// `value`, replacing an earlier value of the same name.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let mut name = name.into();
        name.make_ascii_lowercase();
        self.headers.insert(name, value.into());
        self
    }

    /// The value of header `name` (any case), if set.
    pub fn header_value(&self, name: &str) -> Option<&str> {
        match self.headers.get(name) {
            Some(value) => Some(value),
            None => self
                .headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str()),
        }
    }
}

/// The wire shape, borrowed for serializing.
#[derive(Serialize)]
struct WireRef<'a, T> {
    #[serde(rename = "$http")]
    http: HeadRef<'a>,
    body: &'a Option<T>,
}

/// The wire shape without a body, for self-describing formats: the gateway sends an empty body
/// for a reply without `"body"`, but `null` for `"body": null`.
#[derive(Serialize)]
struct WireRefNoBody<'a> {
    #[serde(rename = "$http")]
    http: HeadRef<'a>,
}

#[derive(Serialize)]
struct HeadRef<'a> {
    status: u16,
    headers: &'a BTreeMap<String, String>,
}

/// The wire shape, owned for deserializing: `headers` and `body` may be left out.
#[derive(Deserialize)]
struct Wire<T> {
    #[serde(rename = "$http")]
    http: Head,
    body: Option<T>,
}

#[derive(Deserialize)]
struct Head {
    status: u16,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

impl<T: Serialize> Serialize for Response<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let http = HeadRef {
            status: self.status,
            headers: &self.headers,
        };
        // Postcard is not self-describing: there every field is always present.
        if self.body.is_none() && serializer.is_human_readable() {
            return WireRefNoBody { http }.serialize(serializer);
        }
        WireRef {
            http,
            body: &self.body,
        }
        .serialize(serializer)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Response<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = Wire::<T>::deserialize(deserializer)?;
        Ok(Self {
            status: wire.http.status,
            headers: wire.http.headers,
            body: wire.body,
        })
    }
}

/// Deserializes a field the gateway may deliver as a string (a path or query parameter:
/// `GET /orders/7?limit=5` gives `{"id": "7", "limit": "5"}`) or as a JSON scalar (the same
/// field in a JSON body: `{"limit": 5}`), parsing a string with [`FromStr`]. Use it with
/// `#[serde(deserialize_with = "bunraku_sdk::http::from_param")]` on a number or `bool` field.
///
/// Only self-describing formats (JSON) get the string form; between actors (postcard) the field
/// is its type as usual.
///
/// ```
/// use bunraku_sdk::prelude::*;
///
/// #[derive(Serialize, Deserialize, Message)]
/// struct Page {
///     #[serde(deserialize_with = "bunraku_sdk::http::from_param")]
///     limit: u32,
/// }
///
/// let from_query: Page = serde_json::from_str(r#"{"limit":"5"}"#).unwrap();
/// let from_body: Page = serde_json::from_str(r#"{"limit":5}"#).unwrap();
/// assert_eq!((from_query.limit, from_body.limit), (5, 5));
/// assert!(serde_json::from_str::<Page>(r#"{"limit":"many"}"#).is_err());
/// ```
pub fn from_param<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr + Deserialize<'de>,
    T::Err: fmt::Display,
{
    if !deserializer.is_human_readable() {
        return T::deserialize(deserializer);
    }
    deserializer.deserialize_any(Param(PhantomData))
}

/// Accepts a string or a scalar and parses its text as a `T`.
struct Param<T>(PhantomData<T>);

impl<T> Param<T>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    fn parse<E: de::Error>(text: &str) -> Result<T, E> {
        text.parse()
            .map_err(|e| E::custom(format_args!("`{text}`: {e}")))
    }
}

impl<T> Visitor<'_> for Param<T>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number or boolean, or a string holding one")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        Self::parse(v)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<T, E> {
        Self::parse(if v { "true" } else { "false" })
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        Self::parse(&v.to_string())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        Self::parse(&v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        Self::parse(&v.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bunraku_abi::Codec;
    use serde_json::json;

    use crate::codec;

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    struct Order {
        id: u64,
    }

    #[test]
    fn response_serializes_as_the_gateway_shape() {
        let reply = Response::created(Order { id: 9 })
            .header("Location", "/orders/9")
            .header("X-Request-Id", "r1");
        assert_eq!(
            serde_json::to_value(&reply).unwrap(),
            json!({
                "$http": {"status": 201, "headers": {"location": "/orders/9", "x-request-id": "r1"}},
                "body": {"id": 9}
            })
        );
        let text = serde_json::to_string(&reply).unwrap();
        assert_eq!(
            text,
            r#"{"$http":{"status":201,"headers":{"location":"/orders/9","x-request-id":"r1"}},"body":{"id":9}}"#
        );
        assert_eq!(
            serde_json::from_str::<Response<Order>>(&text).unwrap(),
            reply
        );
    }

    #[test]
    fn response_without_body_leaves_the_body_out() {
        let reply = Response::<Order>::not_found();
        let text = serde_json::to_string(&reply).unwrap();
        assert_eq!(text, r#"{"$http":{"status":404,"headers":{}}}"#);
        assert_eq!(
            serde_json::from_str::<Response<Order>>(&text).unwrap(),
            reply
        );
    }

    #[test]
    fn response_decodes_without_headers_or_body() {
        let reply: Response<Order> = serde_json::from_str(r#"{"$http":{"status":204}}"#).unwrap();
        assert_eq!(reply, Response::no_content());
        let reply: Response<Order> =
            serde_json::from_str(r#"{"$http":{"status":404},"body":null}"#).unwrap();
        assert_eq!(reply, Response::not_found());
        assert!(serde_json::from_str::<Response<Order>>(r#"{"body":{"id":1}}"#).is_err());
    }

    #[test]
    fn response_round_trips_through_postcard() {
        let replies = [
            Response::status(418, Order { id: 1 }).header("x-teapot", "yes"),
            Response::not_found().header("x-request-id", "r1"),
        ];
        for reply in replies {
            let bytes = codec::encode(Codec::Postcard, &reply).unwrap();
            let back: Response<Order> = codec::decode(Codec::Postcard, &bytes).unwrap();
            assert_eq!(back, reply);
        }
    }

    #[test]
    fn header_names_are_lowercase_and_replace() {
        let reply = Response::ok(())
            .header("Content-Language", "en")
            .header("content-language", "de");
        assert_eq!(reply.headers.len(), 1);
        assert_eq!(reply.header_value("CONTENT-LANGUAGE"), Some("de"));
        assert_eq!(reply.header_value("etag"), None);
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Params {
        #[serde(deserialize_with = "from_param")]
        n: u64,
        #[serde(deserialize_with = "from_param")]
        flag: bool,
        #[serde(default = "ten", deserialize_with = "from_param")]
        limit: i32,
    }

    fn ten() -> i32 {
        10
    }

    #[test]
    fn from_param_takes_strings_and_scalars() {
        let p: Params = serde_json::from_str(r#"{"n":"7","flag":"true","limit":"-3"}"#).unwrap();
        assert_eq!(
            p,
            Params {
                n: 7,
                flag: true,
                limit: -3
            }
        );
        let p: Params = serde_json::from_str(r#"{"n":7,"flag":false}"#).unwrap();
        assert_eq!(
            p,
            Params {
                n: 7,
                flag: false,
                limit: 10
            }
        );
        let err = serde_json::from_str::<Params>(r#"{"n":"x","flag":true}"#).unwrap_err();
        assert!(err.to_string().contains("`x`"), "{err}");
        assert!(serde_json::from_str::<Params>(r#"{"n":-1,"flag":true}"#).is_err());
        assert!(serde_json::from_str::<Params>(r#"{"n":[1],"flag":true}"#).is_err());
    }

    #[test]
    fn from_param_is_the_plain_type_in_postcard() {
        let p = Params {
            n: 300,
            flag: true,
            limit: -1,
        };
        let bytes = codec::encode(Codec::Postcard, &p).unwrap();
        assert_eq!(codec::decode::<Params>(Codec::Postcard, &bytes).unwrap(), p);
    }
}
