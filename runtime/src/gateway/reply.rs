//! What crosses between HTTP and an actor: the JSON payload a request becomes, the HTTP response
//! an actor's reply becomes, and the fixed status of every failure.
//!
//! Pure functions, so the whole mapping is unit-tested without a socket or a guest.

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use bunraku_abi::ErrorCode;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::error::CallError;

/// The key of an actor's reply object that sets the HTTP status and headers.
pub const HTTP_KEY: &str = "$http";

/// Why a request body cannot become a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Malformed {
    /// The body is not JSON.
    NotJson,
    /// The body is JSON, but not an object.
    NotObject,
}

/// The message payload of a request: the JSON body (an object; an empty body is `{}`) with the
/// query parameters and then the path parameters merged in as top-level string fields, so a
/// path parameter overrides a query parameter or body field of the same name. With nothing to
/// merge, a valid object body goes on byte for byte as the client sent it.
pub(crate) fn payload(
    body: &[u8],
    query: &[(String, String)],
    path: &[(String, String)],
) -> Result<Vec<u8>, Malformed> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if query.is_empty()
        && path.is_empty()
        && first == Some(&b'{')
        && serde_json::from_slice::<IgnoredAny>(body).is_ok()
    {
        // Nothing to merge: the object goes on as sent, without being built and written again.
        return Ok(body.to_vec());
    }
    let mut object = if first.is_none() {
        Map::new()
    } else {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(object)) => object,
            Ok(_) => return Err(Malformed::NotObject),
            Err(_) => return Err(Malformed::NotJson),
        }
    };
    for (name, value) in query.iter().chain(path) {
        object.insert(name.clone(), Value::String(value.clone()));
    }
    Ok(Value::Object(object).to_string().into_bytes())
}

/// The body of an HTTP reply.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Body {
    /// No body.
    Empty,
    /// JSON (`application/json`).
    Json(Value),
    /// Bytes with the content type the actor set.
    Raw(Vec<u8>),
}

/// An HTTP reply made from an actor's reply.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HttpReply {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Body,
}

impl HttpReply {
    fn json(status: StatusCode, value: Value) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Body::Json(value),
        }
    }

    /// A failure: the status and `{"error": text}`, where `text` is a short fixed text that
    /// never carries an internal message.
    pub(crate) fn error(status: StatusCode, text: &str) -> Self {
        Self::json(status, serde_json::json!({ "error": text }))
    }
}

/// An actor's reply that breaks the `$http` convention; answered with 502.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadReply(pub String);

/// Headers an actor cannot set: the connection's framing belongs to the gateway.
const FORBIDDEN: &[&str] = &[
    "connection",
    "content-length",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The HTTP reply for an actor's JSON reply:
///
/// - an object with the key `"$http"` whose value is `{"status": u16, "headers": {name: value}}`
///   (both optional; status 200 to 599, default 200) answers with that status and those headers,
///   and its `"body"` as the body (no `"body"`: an empty body; a string body with a non-JSON
///   `content-type` header is sent as text);
/// - exactly `{"Ok": x}` (a Rust `Result` that succeeded) answers like `x`;
/// - exactly `{"Err": x}` answers like `x` when `x` has `"$http"`, and otherwise 500 with
///   `{"error": "internal error"}`: an error without a status is the actor's failure, and its
///   text stays inside;
/// - anything else answers 200 with the JSON.
pub(crate) fn map_reply(value: Value) -> Result<HttpReply, BadReply> {
    match value {
        Value::Object(mut object) if object.len() == 1 && object.contains_key("Ok") => {
            let inner = object.remove("Ok").unwrap_or(Value::Null);
            success(inner)
        }
        Value::Object(mut object) if object.len() == 1 && object.contains_key("Err") => {
            match object.remove("Err") {
                Some(Value::Object(inner)) if inner.contains_key(HTTP_KEY) => with_status(inner),
                _ => Ok(HttpReply::error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error",
                )),
            }
        }
        other => success(other),
    }
}

/// Whether `reply` is JSON that [`map_reply`] answers with 200 and the same JSON: anything but an
/// object with a top-level key `"$http"`, `"Ok"` or `"Err"`. Such a reply is sent on as its bytes
/// without being built and written again; everything else takes [`map_reply`].
pub(crate) fn is_plain(reply: &[u8]) -> bool {
    serde_json::from_slice::<Plain>(reply).is_ok_and(|p| p.0)
}

/// Reads a JSON document without building it: `true` unless it is an object with a key that
/// [`map_reply`] treats specially.
struct Plain(bool);

impl<'de> Deserialize<'de> for Plain {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(PlainVisitor)
    }
}

/// A top-level key, told apart without allocating.
struct Key(bool);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
                Ok(Key(matches!(key, HTTP_KEY | "Ok" | "Err")))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

struct PlainVisitor;

impl<'de> Visitor<'de> for PlainVisitor {
    type Value = Plain;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Plain, E> {
        Ok(Plain(true))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Plain, E> {
        Ok(Plain(true))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Plain, E> {
        Ok(Plain(true))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Plain, E> {
        Ok(Plain(true))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Plain, E> {
        Ok(Plain(true))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Plain, E> {
        Ok(Plain(true))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Plain, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Plain(true))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Plain, A::Error> {
        let mut plain = true;
        while let Some(Key(special)) = map.next_key()? {
            plain &= !special;
            map.next_value::<IgnoredAny>()?;
        }
        Ok(Plain(plain))
    }
}

fn success(value: Value) -> Result<HttpReply, BadReply> {
    match value {
        Value::Object(object) if object.contains_key(HTTP_KEY) => with_status(object),
        other => Ok(HttpReply::json(StatusCode::OK, other)),
    }
}

fn with_status(mut object: Map<String, Value>) -> Result<HttpReply, BadReply> {
    let http = match object.remove(HTTP_KEY) {
        Some(Value::Object(http)) => http,
        _ => return Err(BadReply(format!("`{HTTP_KEY}` is not an object"))),
    };
    let status = match http.get("status") {
        None => StatusCode::OK,
        Some(Value::Number(n)) => n
            .as_u64()
            .filter(|s| (200..=599).contains(s))
            .and_then(|s| StatusCode::from_u16(s as u16).ok())
            .ok_or_else(|| BadReply(format!("status {n} is not 200 to 599")))?,
        Some(other) => return Err(BadReply(format!("status {other} is not a number"))),
    };
    let mut headers = Vec::new();
    match http.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (name, value) in map {
                let name = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| BadReply(format!("`{name}` is not a header name")))?;
                if FORBIDDEN.contains(&name.as_str()) {
                    tracing::debug!(header = %name, "the gateway ignores a framing header set by an actor");
                    continue;
                }
                let Value::String(text) = value else {
                    return Err(BadReply(format!("header `{name}` is not a string")));
                };
                let value = HeaderValue::from_str(text)
                    .map_err(|_| BadReply(format!("header `{name}` has an invalid value")))?;
                headers.push((name, value));
            }
        }
        Some(_) => return Err(BadReply("`headers` is not an object".into())),
    }
    let textual = headers.iter().any(|(name, value)| {
        *name == header::CONTENT_TYPE && !value.to_str().unwrap_or("").contains("json")
    });
    let body = if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        Body::Empty
    } else {
        match object.remove("body") {
            None => Body::Empty,
            Some(Value::String(text)) if textual => Body::Raw(text.into_bytes()),
            Some(value) => Body::Json(value),
        }
    };
    Ok(HttpReply {
        status,
        headers,
        body,
    })
}

/// The status and fixed text for a request that failed between the gateway and the actor.
pub(crate) fn call_error(e: &CallError) -> (StatusCode, &'static str) {
    const BAD_GATEWAY: (StatusCode, &str) = (StatusCode::BAD_GATEWAY, "bad gateway");
    match e {
        CallError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "gateway timeout"),
        CallError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload too large"),
        CallError::Subject(_) => (StatusCode::BAD_REQUEST, "bad request"),
        CallError::Remote { code, .. } => match code {
            ErrorCode::Application => (StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
            ErrorCode::Timeout => (StatusCode::GATEWAY_TIMEOUT, "gateway timeout"),
            _ => BAD_GATEWAY,
        },
        // The actor trapped, stopped or is not there; or the gateway is misconfigured (a type
        // the actor does not handle, a target its grants do not cover).
        _ => BAD_GATEWAY,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn parsed(bytes: Vec<u8>) -> Value {
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn path_parameters_override_query_parameters_which_override_the_body() {
        let body = br#"{"id": 1, "q": "body", "text": "hi", "n": [1, 2]}"#;
        let query = pairs(&[("q", "query"), ("id", "from-query"), ("page", "2")]);
        let path = pairs(&[("id", "42")]);
        let merged = parsed(payload(body, &query, &path).unwrap());
        assert_eq!(
            merged,
            json!({"id": "42", "q": "query", "text": "hi", "n": [1, 2], "page": "2"})
        );
    }

    #[test]
    fn an_object_without_parameters_goes_on_as_sent_and_a_broken_one_is_still_refused() {
        let body = br#" {"b": 1, "a": [true, null]} "#;
        assert_eq!(payload(body, &[], &[]).unwrap(), body.to_vec());
        assert_eq!(payload(br#"{"a": 1"#, &[], &[]), Err(Malformed::NotJson));
        assert_eq!(payload(br#"{"a": 1} x"#, &[], &[]), Err(Malformed::NotJson));
        assert_eq!(payload(b"[1]", &[], &[]), Err(Malformed::NotObject));
    }

    #[test]
    fn only_replies_without_special_top_level_keys_are_plain() {
        for plain in [
            &br#"{"data": "x", "nested": {"$http": 1, "Ok": 2}}"#[..],
            br#"[{"Ok": 1}]"#,
            br#""Ok""#,
            b"12.5",
            b"null",
            b"{}",
        ] {
            assert!(is_plain(plain), "{}", String::from_utf8_lossy(plain));
        }
        for special in [
            &br#"{"a": 1, "$http": {"status": 201}}"#[..],
            br#"{"Ok": 1}"#,
            br#"{"a": 1, "Err": 2}"#,
            br#"{"\u0024http": {}}"#,
            br#"{"a": "#,
            b"not json",
        ] {
            assert!(!is_plain(special), "{}", String::from_utf8_lossy(special));
        }
    }

    #[test]
    fn an_empty_body_is_an_empty_object() {
        assert_eq!(parsed(payload(b"", &[], &[]).unwrap()), json!({}));
        assert_eq!(parsed(payload(b" \r\n", &[], &[]).unwrap()), json!({}));
        let path = pairs(&[("id", "7")]);
        assert_eq!(
            parsed(payload(b"", &[], &path).unwrap()),
            json!({"id": "7"})
        );
    }

    #[test]
    fn a_body_must_be_a_json_object() {
        assert_eq!(payload(b"{not json", &[], &[]), Err(Malformed::NotJson));
        assert_eq!(payload(b"[1, 2]", &[], &[]), Err(Malformed::NotObject));
        assert_eq!(payload(b"\"text\"", &[], &[]), Err(Malformed::NotObject));
    }

    fn reply(value: Value) -> HttpReply {
        map_reply(value).unwrap()
    }

    #[test]
    fn plain_replies_answer_200_with_the_json() {
        let r = reply(json!("hi"));
        assert_eq!(
            (r.status, r.body),
            (StatusCode::OK, Body::Json(json!("hi")))
        );
        let r = reply(json!({"a": 1, "Ok": 2}));
        assert_eq!(
            r.body,
            Body::Json(json!({"a": 1, "Ok": 2})),
            "not exactly Ok"
        );
        let r = reply(json!({"Ok": {"id": 7}}));
        assert_eq!(
            (r.status, r.body),
            (StatusCode::OK, Body::Json(json!({"id": 7})))
        );
    }

    #[test]
    fn an_error_without_a_status_answers_500_without_its_text() {
        let r = reply(json!({"Err": "the database password is hunter2"}));
        assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(r.body, Body::Json(json!({"error": "internal error"})));
    }

    #[test]
    fn the_actor_chooses_status_headers_and_body_with_http() {
        let r = reply(json!({
            "$http": {"status": 201, "headers": {"Location": "/users/7", "x-n": "1"}},
            "body": {"id": 7}
        }));
        assert_eq!(r.status, StatusCode::CREATED);
        assert_eq!(
            r.headers,
            vec![
                (
                    HeaderName::from_static("location"),
                    HeaderValue::from_static("/users/7")
                ),
                (
                    HeaderName::from_static("x-n"),
                    HeaderValue::from_static("1")
                ),
            ]
        );
        assert_eq!(r.body, Body::Json(json!({"id": 7})));

        // In an `Err` or an `Ok`, too; no body is an empty body.
        let r = reply(json!({"Err": {"$http": {"status": 404}}}));
        assert_eq!((r.status, r.body), (StatusCode::NOT_FOUND, Body::Empty));
        let r = reply(json!({"Ok": {"$http": {"status": 202}, "body": null}}));
        assert_eq!(
            (r.status, r.body),
            (StatusCode::ACCEPTED, Body::Json(Value::Null))
        );

        // Text with the actor's content type; no body for 204; framing headers are dropped.
        let r = reply(json!({
            "$http": {"headers": {"content-type": "text/plain", "content-length": "99"}},
            "body": "plain"
        }));
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body, Body::Raw(b"plain".to_vec()));
        assert_eq!(r.headers.len(), 1);
        let r = reply(json!({"$http": {"status": 204}, "body": "ignored"}));
        assert_eq!(r.body, Body::Empty);
    }

    #[test]
    fn a_malformed_http_object_is_a_bad_reply() {
        for bad in [
            json!({"$http": 5}),
            json!({"$http": {"status": 99}}),
            json!({"$http": {"status": 600}}),
            json!({"$http": {"status": "200"}}),
            json!({"$http": {"headers": {"bad name": "v"}}}),
            json!({"$http": {"headers": {"x": 1}}}),
            json!({"$http": {"headers": ["x"]}}),
        ] {
            assert!(map_reply(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn call_errors_have_fixed_statuses() {
        let remote = |code| CallError::Remote {
            code,
            message: "secret detail".into(),
        };
        let cases = [
            (CallError::Timeout(5), 504),
            (CallError::TargetFailed, 502),
            (CallError::NoSuchActor("a".into()), 502),
            (CallError::MailboxFull("a".into()), 502),
            (CallError::Stopped, 502),
            (CallError::Denied, 502),
            (
                CallError::UnknownType {
                    actor: "a".into(),
                    msg_type: "T".into(),
                    known: vec![],
                },
                502,
            ),
            (remote(ErrorCode::Application), 500),
            (remote(ErrorCode::Corrupt), 502),
            (remote(ErrorCode::StorageUnavailable), 502),
            (CallError::TooLarge { size: 2, limit: 1 }, 413),
        ];
        for (e, status) in cases {
            let (got, text) = call_error(&e);
            assert_eq!(got.as_u16(), status, "{e}");
            assert!(!text.contains("secret") && !text.contains('`'), "{text}");
        }
    }
}
