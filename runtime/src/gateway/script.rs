//! HTTP smoke scripts: requests sent to a running gateway over loopback, each with the answer
//! it expects. `bunraku run --smoke` runs the script a manifest's `[smoke] http` names, and
//! prints the facts like the checker-actor smoke does.
//!
//! ```toml
//! [[request]]
//! name = "a user is found"          # default: "METHOD path"
//! method = "GET"                    # default: GET
//! path = "/users/1?verbose=true"
//! headers = { "x-api-key" = "secret-value" }
//! expect_status = 200               # default: 200
//! expect_json = { id = "1" }        # the reply must contain these fields (a subset match)
//!
//! [[request]]
//! name = "the burst is spent"
//! path = "/users/1"
//! headers = { "x-api-key" = "secret-value" }
//! repeat = 5                        # sent five times; every answer must meet the expectations
//!
//! [[request]]
//! method = "POST"
//! path = "/orders"
//! json = { item = "book" }          # or body = "raw text"
//! chunked = true                    # send the body with Transfer-Encoding: chunked
//! expect_status = 202
//! expect_header = { "retry-after" = "*" }   # "*": present with any value
//! ```
//!
//! Requests run in file order, each on a new connection.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderName, HeaderValue, Method, Request};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::Value;

/// How long one request of a script may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A checked HTTP smoke script.
#[derive(Debug, Clone, PartialEq)]
pub struct Script {
    /// The file it was read from.
    pub path: PathBuf,
    /// The requests, in file order.
    pub requests: Vec<ScriptRequest>,
}

/// One `[[request]]` of a script.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ScriptRequest {
    /// The fact's name (default `METHOD path`).
    #[serde(default)]
    pub name: Option<String>,
    /// The method (default `GET`).
    #[serde(default = "default_method")]
    pub method: String,
    /// The path and query, starting with `/`.
    pub path: String,
    /// Request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A raw body.
    #[serde(default)]
    pub body: Option<String>,
    /// A JSON body (sent with `content-type: application/json`).
    #[serde(default)]
    pub json: Option<Value>,
    /// Send the body with `Transfer-Encoding: chunked` rather than a `Content-Length`.
    #[serde(default)]
    pub chunked: bool,
    /// How many times to send it (default 1); every answer must meet the expectations.
    #[serde(default = "one")]
    pub repeat: u32,
    /// The status expected (default 200).
    #[serde(default = "ok")]
    pub expect_status: u16,
    /// Headers expected in the answer: a value, or `"*"` for any value.
    #[serde(default)]
    pub expect_header: BTreeMap<String, String>,
    /// JSON the answer must contain: objects may have more fields, arrays and other values must
    /// be equal.
    #[serde(default)]
    pub expect_json: Option<Value>,
}

fn default_method() -> String {
    "GET".into()
}

fn one() -> u32 {
    1
}

fn ok() -> u16 {
    200
}

impl ScriptRequest {
    /// The fact's name: `name`, or `METHOD path`.
    pub fn fact_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("{} {}", self.method, self.path))
    }
}

/// Why a script could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScriptError {
    /// The file could not be read.
    #[error("cannot read the HTTP smoke script {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid script.
    #[error("{}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line when known.
        message: String,
    },
}

/// The outcome of one request of a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fact {
    /// The request's name.
    pub name: String,
    /// Whether every answer met the expectations.
    pub ok: bool,
    /// What went wrong (empty when `ok`).
    pub detail: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScript {
    #[serde(default)]
    request: Vec<ScriptRequest>,
}

impl Script {
    /// Reads and checks a script.
    pub fn load(path: &Path) -> Result<Script, ScriptError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScriptError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Checks a script's text as if read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Script, ScriptError> {
        let invalid = |message: String| ScriptError::Invalid {
            path: path.to_owned(),
            message,
        };
        let raw: RawScript = toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|s| format!("line {}: ", text[..s.start].matches('\n').count() + 1))
                .unwrap_or_default();
            invalid(format!("{at}{}", e.message().trim_end()))
        })?;
        if raw.request.is_empty() {
            return Err(invalid(
                "the script has no requests: add a [[request]] table with `path`".into(),
            ));
        }
        for (i, r) in raw.request.iter().enumerate() {
            let problem =
                |what: String| invalid(format!("request[{i}] ({}): {what}", r.fact_name()));
            if !r.path.starts_with('/') {
                return Err(problem("`path` must start with `/`".into()));
            }
            if Method::from_bytes(r.method.as_bytes()).is_err() {
                return Err(problem(format!("`{}` is not a method", r.method)));
            }
            if r.body.is_some() && r.json.is_some() {
                return Err(problem("give `body` or `json`, not both".into()));
            }
            if r.repeat == 0 {
                return Err(problem("`repeat` must be at least 1".into()));
            }
            if !(100..=599).contains(&r.expect_status) {
                return Err(problem(format!(
                    "`expect_status` {} is not an HTTP status",
                    r.expect_status
                )));
            }
            for (name, value) in r.headers.iter().chain(&r.expect_header) {
                if HeaderName::from_bytes(name.as_bytes()).is_err()
                    || HeaderValue::from_str(value).is_err()
                {
                    return Err(problem(format!("`{name}: {value}` is not a valid header")));
                }
            }
        }
        Ok(Script {
            path: path.to_owned(),
            requests: raw.request,
        })
    }

    /// Sends every request to the gateway at `addr`, in order, and checks the answers.
    pub async fn run(&self, addr: SocketAddr) -> Vec<Fact> {
        let mut facts = Vec::new();
        for request in &self.requests {
            let mut outcome = Ok(());
            for n in 0..request.repeat {
                outcome = match tokio::time::timeout(REQUEST_TIMEOUT, send(addr, request)).await {
                    Ok(Ok(answer)) => check(request, &answer),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())),
                };
                if let Err(e) = outcome {
                    outcome = Err(if request.repeat > 1 {
                        format!("repetition {} of {}: {e}", n + 1, request.repeat)
                    } else {
                        e
                    });
                    break;
                }
            }
            facts.push(Fact {
                name: request.fact_name(),
                ok: outcome.is_ok(),
                detail: outcome.err().unwrap_or_default(),
            });
        }
        facts
    }
}

/// Whether every fact holds, and the summary line the smoke prints:
/// `NAME: ok, N facts checked` or `NAME: FAILED k of N facts: names`.
pub fn summary(name: &str, facts: &[Fact]) -> (bool, String) {
    let failed: Vec<&str> = facts
        .iter()
        .filter(|f| !f.ok)
        .map(|f| f.name.as_str())
        .collect();
    if failed.is_empty() && !facts.is_empty() {
        (true, format!("{name}: ok, {} facts checked", facts.len()))
    } else {
        (
            false,
            format!(
                "{name}: FAILED {} of {} facts: {}",
                failed.len(),
                facts.len(),
                failed.join(", ")
            ),
        )
    }
}

/// An answer as the checks read it.
struct Answer {
    status: u16,
    headers: axum::http::HeaderMap,
    body: Bytes,
}

async fn send(addr: SocketAddr, r: &ScriptRequest) -> Result<Answer, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    tokio::spawn(conn);
    let mut builder = Request::builder()
        .method(r.method.as_str())
        .uri(r.path.as_str())
        .header("host", addr.to_string());
    let bytes = match (&r.body, &r.json) {
        (Some(body), _) => Bytes::from(body.clone()),
        (None, Some(json)) => {
            if !r
                .headers
                .keys()
                .any(|k| k.eq_ignore_ascii_case("content-type"))
            {
                builder = builder.header("content-type", "application/json");
            }
            Bytes::from(json.to_string())
        }
        (None, None) => Bytes::new(),
    };
    for (name, value) in &r.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let body: BoxBody<Bytes, Infallible> = if r.chunked {
        // Two chunks (when there is something to split), so the gateway sees a stream.
        let half = bytes.len() / 2;
        let chunks: Vec<Bytes> = [bytes.slice(..half), bytes.slice(half..)]
            .into_iter()
            .filter(|c| !c.is_empty())
            .collect();
        let frames = futures::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, Infallible>(Frame::data(c))),
        );
        StreamBody::new(frames).boxed()
    } else {
        Full::new(bytes).boxed()
    };
    let request = builder
        .body(body)
        .map_err(|e| format!("cannot build the request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("the request failed: {e}"))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading the answer failed: {e}"))?
        .to_bytes();
    Ok(Answer {
        status,
        headers,
        body,
    })
}

fn check(r: &ScriptRequest, answer: &Answer) -> Result<(), String> {
    let shown = || {
        let text = String::from_utf8_lossy(&answer.body);
        let mut text: String = text.chars().take(200).collect();
        if answer.body.len() > text.len() {
            text.push('…');
        }
        text
    };
    if answer.status != r.expect_status {
        return Err(format!(
            "expected status {}, got {}: {}",
            r.expect_status,
            answer.status,
            shown()
        ));
    }
    for (name, expected) in &r.expect_header {
        match answer.headers.get(name.as_str()) {
            None => return Err(format!("expected header `{name}`, it is missing")),
            Some(_) if expected == "*" => {}
            Some(value) if value.as_bytes() == expected.as_bytes() => {}
            Some(value) => {
                return Err(format!(
                    "expected header `{name}: {expected}`, got `{}`",
                    String::from_utf8_lossy(value.as_bytes())
                ));
            }
        }
    }
    if let Some(expected) = &r.expect_json {
        let actual: Value = serde_json::from_slice(&answer.body)
            .map_err(|_| format!("expected JSON, got: {}", shown()))?;
        contains(&actual, expected, &mut String::new())?;
    }
    Ok(())
}

/// Whether `actual` contains `expected`: every field of an expected object (recursively), equal
/// arrays element by element, equal other values. The error names the first difference.
fn contains(actual: &Value, expected: &Value, at: &mut String) -> Result<(), String> {
    let shown_at = |at: &str| {
        if at.is_empty() {
            ".".to_owned()
        } else {
            at.to_owned()
        }
    };
    match (actual, expected) {
        (Value::Object(actual), Value::Object(expected)) => {
            for (key, want) in expected {
                let len = at.len();
                at.push('.');
                at.push_str(key);
                match actual.get(key) {
                    Some(got) => contains(got, want, at)?,
                    None => return Err(format!("at {at}: expected {want}, the field is missing")),
                }
                at.truncate(len);
            }
            Ok(())
        }
        (Value::Array(actual), Value::Array(expected)) if actual.len() == expected.len() => {
            for (i, (got, want)) in actual.iter().zip(expected).enumerate() {
                let len = at.len();
                at.push_str(&format!("[{i}]"));
                contains(got, want, at)?;
                at.truncate(len);
            }
            Ok(())
        }
        (got, want) if got == want => Ok(()),
        (got, want) => Err(format!("at {}: expected {want}, got {got}", shown_at(at))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(text: &str) -> Result<Script, String> {
        Script::parse(text, Path::new("smoke.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn a_script_is_read_with_defaults() {
        let s = parse(
            r#"
            [[request]]
            path = "/users/1"
            [[request]]
            name = "create"
            method = "POST"
            path = "/orders"
            headers = { "x-api-key" = "k" }
            json = { item = "book" }
            chunked = true
            repeat = 3
            expect_status = 202
            expect_header = { "retry-after" = "*" }
            expect_json = { ok = true }
            "#,
        )
        .unwrap();
        let first = &s.requests[0];
        assert_eq!(first.fact_name(), "GET /users/1");
        assert_eq!((first.repeat, first.expect_status), (1, 200));
        let second = &s.requests[1];
        assert_eq!(second.fact_name(), "create");
        assert_eq!(second.json, Some(json!({"item": "book"})));
        assert!(second.chunked);
        assert_eq!(second.expect_header["retry-after"], "*");
    }

    #[test]
    fn bad_scripts_are_explained() {
        let cases = [
            (
                "",
                "smoke.toml: the script has no requests: add a [[request]] table with `path`",
            ),
            (
                "[[request]]\npath = \"users\"\n",
                "smoke.toml: request[0] (GET users): `path` must start with `/`",
            ),
            (
                "[[request]]\npath = \"/\"\nbody = \"x\"\njson = {}\n",
                "smoke.toml: request[0] (GET /): give `body` or `json`, not both",
            ),
            (
                "[[request]]\npath = \"/\"\nrepeat = 0\n",
                "smoke.toml: request[0] (GET /): `repeat` must be at least 1",
            ),
        ];
        for (text, why) in cases {
            assert_eq!(parse(text).unwrap_err(), why, "{text}");
        }
        let e = parse("[[request]]\npath = \"/\"\nexpect = 200\n").unwrap_err();
        assert!(
            e.starts_with("smoke.toml: line 3: unknown field `expect`"),
            "{e}"
        );
    }

    #[test]
    fn json_expectations_are_subsets() {
        let actual = json!({"id": "7", "tags": ["a", "b"], "user": {"name": "ann", "age": 3}});
        let ok = |want: Value| contains(&actual, &want, &mut String::new());
        assert!(ok(json!({})).is_ok());
        assert!(ok(json!({"user": {"name": "ann"}, "tags": ["a", "b"]})).is_ok());
        assert_eq!(
            ok(json!({"user": {"name": "bob"}})).unwrap_err(),
            "at .user.name: expected \"bob\", got \"ann\""
        );
        assert_eq!(
            ok(json!({"missing": 1})).unwrap_err(),
            "at .missing: expected 1, the field is missing"
        );
        assert!(
            ok(json!({"tags": ["a"]})).is_err(),
            "arrays are equal in length"
        );
        assert_eq!(
            contains(&json!("x"), &json!("y"), &mut String::new()).unwrap_err(),
            "at .: expected \"y\", got \"x\""
        );
    }

    #[test]
    fn the_summary_reads_like_the_checker_smoke() {
        let fact = |name: &str, ok| Fact {
            name: name.into(),
            ok,
            detail: String::new(),
        };
        assert_eq!(
            summary("shop", &[fact("a", true), fact("b", true)]),
            (true, "shop: ok, 2 facts checked".into())
        );
        assert_eq!(
            summary(
                "shop",
                &[fact("a", false), fact("b", true), fact("c", false)]
            ),
            (false, "shop: FAILED 2 of 3 facts: a, c".into())
        );
        assert!(!summary("shop", &[]).0, "no facts is no check");
    }
}
