//! The HTTP gateway over real loopback sockets, with a real HTTP client (hyper) and the real
//! `testbed` guest behind it: routing and parameters, every authentication outcome, rate limits,
//! body and header limits, slow clients, timeouts, failing actors, and metrics.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bunraku_runtime::Host;
use bunraku_runtime::build::BuildOptions;
use bunraku_runtime::gateway::{Gateway, GatewayConfig};
use bunraku_runtime::manifest::Manifest;
use bunraku_tests::repo;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HS_SECRET: &str = "a-test-secret-of-thirty-two-bytes";
const API_KEY: &str = "k-alice-0123456789";
const OTHER_KEY: &str = "k-bob-9876543210";

/// A host running `testbed` as `tb` (two instances) and `tb2`, behind a gateway on a free port.
struct Fixture {
    host: Arc<Host>,
    gateway: Option<Gateway>,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(gateway) = self.gateway.take() {
            gateway.shutdown();
        }
    }
}

fn manifest_text() -> String {
    let testbed = repo().join("guests/testbed");
    let public = repo().join("tests/fixtures/jwt/rs256-test-public.pem");
    format!(
        r#"
[[actor]]
name = "tb"
module = "{testbed}"
instances = 2
grants = {{ timers = true }}

[[actor]]
name = "tb2"
module = "{testbed}"

[gateway]
listen = "127.0.0.1:0"
max_body_bytes = 1024
max_headers = 32
max_header_bytes = 4096
header_timeout_ms = 500
body_timeout_ms = 500
request_timeout_ms = 5000
grants = {{ send = ["tb", "tb2"], publish = ["gw.>"] }}

[[gateway.api_key]]
id = "alice-key"
subject = "alice"
key = "{API_KEY}"

[[gateway.api_key]]
id = "bob-key"
subject = "bob"
key = "{OTHER_KEY}"

[[gateway.jwt]]
kid = "hs"
alg = "HS256"
secret = "{HS_SECRET}"
audience = "bunraku-tests"

[[gateway.jwt]]
kid = "rs"
alg = "RS256"
public_key_file = "{public}"
audience = "bunraku-tests"

[[gateway.route]]
method = "GET"
path = "/items/{{id}}"
actor = "tb"
message = "Inspect"
headers = ["x-request-id"]

[[gateway.route]]
method = "POST"
path = "/items"
actor = "tb"
message = "Inspect"

[[gateway.route]]
method = "GET"
path = "/keyed"
actor = "tb"
message = "Inspect"
auth = "api_key"

[[gateway.route]]
method = "GET"
path = "/jwt"
actor = "tb"
message = "Inspect"
auth = "jwt"

[[gateway.route]]
method = "GET"
path = "/limited"
actor = "tb2"
message = "Inspect"
auth = "api_key"
rate_limit = {{ per_second = 1, burst = 3, key = "api_key" }}

[[gateway.route]]
method = "POST"
path = "/nap"
actor = "tb"
message = "Nap"
timeout_ms = 300

[[gateway.route]]
method = "GET"
path = "/panic"
actor = "tb2"
message = "Panic"

[[gateway.route]]
method = "GET"
path = "/fail"
actor = "tb"
message = "Fail"

[[gateway.route]]
method = "POST"
path = "/events"
subject = "gw.events"
message = "Noop"
"#,
        testbed = testbed.display(),
        public = public.display(),
    )
}

async fn start() -> Fixture {
    start_with(|_| {}).await
}

/// [`start`] with the `[gateway]` table changed by `change` first.
async fn start_with(change: impl FnOnce(&mut GatewayConfig)) -> Fixture {
    start_on(bunraku_tests::host(), change).await
}

/// [`start_with`] on a host of the caller's.
async fn start_on(host: Arc<Host>, change: impl FnOnce(&mut GatewayConfig)) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bunraku.toml"), manifest_text()).unwrap();
    let manifest = Manifest::load(dir.path()).unwrap();
    host.deploy_manifest(&manifest, &BuildOptions::default())
        .unwrap();
    let mut config = manifest.gateway.clone().expect("a [gateway] section");
    change(&mut config);
    let gateway = Gateway::start(host.clone(), config, &tokio::runtime::Handle::current()).unwrap();
    gateway.set_ready(true);
    let addr = gateway.local_addr();
    Fixture {
        host,
        gateway: Some(gateway),
        addr,
        _dir: dir,
    }
}

/// An HTTP response as the tests read it.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: hyper::HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// One request on a new keep-alive connection.
async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if !body.is_empty() {
        request = request.header("content-type", "application/json");
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    call(addr, "GET", path, headers, "").await
}

/// Waits until the gateway's `/metrics` has `line` (counters are updated when a connection's
/// task has been reaped, a moment after the client saw it close).
async fn metrics_eventually_show(addr: SocketAddr, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = get(addr, "/metrics", &[]).await.body;
        if text.lines().any(|l| l == line) {
            return;
        }
        assert!(Instant::now() < deadline, "no `{line}` in:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes raw bytes and reads what the server answers until it closes (or `limit` passes).
async fn raw(addr: SocketAddr, bytes: &[u8], limit: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs_token(claims: Value) -> String {
    let header = Header {
        kid: Some("hs".into()),
        ..Header::new(Algorithm::HS256)
    };
    jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_secret(HS_SECRET.as_bytes()),
    )
    .unwrap()
}

fn rs_token(claims: Value) -> String {
    let pem = std::fs::read(repo().join("tests/fixtures/jwt/rs256-test-private.pem")).unwrap();
    let header = Header {
        kid: Some("rs".into()),
        ..Header::new(Algorithm::RS256)
    };
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_rsa_pem(&pem).unwrap()).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    // base64url without padding, as JWTs are written.
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn claims(sub: &str, exp_from_now: i64, aud: &str) -> Value {
    json!({ "sub": sub, "aud": aud, "exp": now_s() as i64 + exp_from_now })
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_carry_path_query_body_and_headers_to_the_actor() {
    let f = start().await;
    let r = get(
        f.addr,
        "/items/42?q=blue",
        &[("x-request-id", "req-7"), ("x-secret", "no")],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = r.json();
    assert_eq!(seen["id"], "42");
    assert_eq!(seen["q"], "blue");
    assert_eq!(
        seen["request_id"], "req-7",
        "a listed header is passed along"
    );
    assert_eq!(
        seen["sender"], "gateway",
        "the gateway is the sender principal"
    );
    assert_eq!(
        seen["subject"],
        Value::Null,
        "no identity on a public route"
    );

    let r = call(f.addr, "POST", "/items", &[], r#"{"text":"hello"}"#).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["text"], "hello");

    // Requests are spread over the actor's instances: both answer.
    let mut instances = std::collections::BTreeSet::new();
    for _ in 0..8 {
        let r = get(f.addr, "/items/1", &[]).await;
        instances.insert(r.json()["instance"].as_u64().unwrap());
    }
    assert_eq!(instances.len(), 2, "{instances:?}");

    assert_eq!(get(f.addr, "/nowhere", &[]).await.status, 404);
    assert_eq!(
        call(f.addr, "DELETE", "/items/1", &[], "").await.status,
        405
    );
    let r = call(f.addr, "POST", "/items", &[], "{not json").await;
    assert_eq!(r.status, 400, "{r:?}");
    // A publish route answers 202 once the message is published.
    let r = call(f.addr, "POST", "/events", &[], r#"{"i":1}"#).await;
    assert_eq!(r.status, 202, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_admit_their_subject_and_refuse_anything_else() {
    let f = start().await;
    let r = get(f.addr, "/keyed", &[("x-api-key", API_KEY)]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["subject"], "alice");
    assert_eq!(r.json()["key_id"], "alice-key");
    let r = get(
        f.addr,
        "/keyed",
        &[("authorization", &format!("ApiKey {OTHER_KEY}"))],
    )
    .await;
    assert_eq!(r.json()["subject"], "bob");

    for headers in [vec![], vec![("x-api-key", "k-wrong")]] {
        let r = get(f.addr, "/keyed", &headers).await;
        assert_eq!(r.status, 401, "{headers:?}: {r:?}");
        assert!(r.headers.contains_key("www-authenticate"), "{r:?}");
        assert!(!r.body.contains("k-wrong"), "{}", r.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwts_are_checked_for_signature_expiry_audience_and_a_fixed_algorithm() {
    let f = start().await;
    let ok = |r: &Reply| (r.status, r.json()["subject"].clone());

    let r = get(
        f.addr,
        "/jwt",
        &[(
            "authorization",
            &bearer(&hs_token(claims("carol", 600, "bunraku-tests"))),
        )],
    )
    .await;
    assert_eq!(ok(&r), (200, json!("carol")), "{r:?}");
    assert_eq!(r.json()["key_id"], "hs");
    let r = get(
        f.addr,
        "/jwt",
        &[(
            "authorization",
            &bearer(&rs_token(claims("dave", 600, "bunraku-tests"))),
        )],
    )
    .await;
    assert_eq!(ok(&r), (200, json!("dave")), "{r:?}");

    let refused = [
        ("expired", hs_token(claims("carol", -3600, "bunraku-tests"))),
        (
            "wrong audience",
            hs_token(claims("carol", 600, "somebody-else")),
        ),
        ("tampered", {
            let t = hs_token(claims("carol", 600, "bunraku-tests"));
            let (head, sig) = t.rsplit_once('.').unwrap();
            let flipped = if sig.starts_with('A') { "B" } else { "A" };
            format!("{head}.{flipped}{}", &sig[1..])
        }),
        ("alg none", {
            let header = b64(br#"{"alg":"none","typ":"JWT","kid":"hs"}"#);
            let body = b64(claims("mallory", 600, "bunraku-tests")
                .to_string()
                .as_bytes());
            format!("{header}.{body}.")
        }),
        ("RS256 public key used as an HS256 secret", {
            let public =
                std::fs::read(repo().join("tests/fixtures/jwt/rs256-test-public.pem")).unwrap();
            let header = Header {
                kid: Some("rs".into()),
                ..Header::new(Algorithm::HS256)
            };
            jsonwebtoken::encode(
                &header,
                &claims("mallory", 600, "bunraku-tests"),
                &EncodingKey::from_secret(&public),
            )
            .unwrap()
        }),
        ("unknown kid", {
            let header = Header {
                kid: Some("nope".into()),
                ..Header::new(Algorithm::HS256)
            };
            jsonwebtoken::encode(
                &header,
                &claims("carol", 600, "bunraku-tests"),
                &EncodingKey::from_secret(HS_SECRET.as_bytes()),
            )
            .unwrap()
        }),
        ("not a token", "garbage".to_owned()),
    ];
    for (why, token) in refused {
        let r = get(f.addr, "/jwt", &[("authorization", &bearer(&token))]).await;
        assert_eq!(r.status, 401, "{why}: {r:?}");
        assert!(!r.body.contains("mallory"), "{why}: {}", r.body);
    }
    assert_eq!(get(f.addr, "/jwt", &[]).await.status, 401, "no token");
    // Nothing refused reached the actor: only the two good tokens' calls did.
    let hits: u64 = f.host.actor("tb").iter().map(|cell| cell.handled).sum();
    assert_eq!(hits, 2, "only authenticated requests reached the actor");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_n_passes_exactly_n_and_the_next_gets_429_with_retry_after() {
    // The route allows 1 request per second with a burst of 3, on the host's clock: a manual
    // one here, so the burst is measured in the test's time, however slow the machine.
    let (host, clock) = bunraku_tests::host_on_manual_clock();
    let f = start_on(host, |_| {}).await;
    let key = [("x-api-key", API_KEY)];
    for i in 0..3 {
        let r = get(f.addr, "/limited", &key).await;
        assert_eq!(r.status, 200, "request {i}: {r:?}");
    }
    let r = get(f.addr, "/limited", &key).await;
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(r.headers["retry-after"], "1", "one request per second");
    // The limit is per key: another key still has its burst.
    let r = get(f.addr, "/limited", &[("x-api-key", OTHER_KEY)]).await;
    assert_eq!(r.status, 200, "{r:?}");
    // A second later the key has one request again, and only one.
    clock.advance(Duration::from_millis(999));
    assert_eq!(get(f.addr, "/limited", &key).await.status, 429);
    clock.advance(Duration::from_millis(1));
    assert_eq!(get(f.addr, "/limited", &key).await.status, 200);
    assert_eq!(get(f.addr, "/limited", &key).await.status, 429);
    // The refused requests never reached the actor: it handled exactly 3 + 1 + 1.
    let hits = f
        .host
        .call_json("tb2", Some("GetHits"), json!({}))
        .await
        .unwrap();
    assert_eq!(hits, json!(5));
    let metrics = get(f.addr, "/metrics", &[]).await.body;
    assert!(
        metrics.contains("bunraku_gateway_rate_limited_total{route=\"GET /limited\"} 3"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413_whether_their_length_is_known_or_chunked() {
    let f = start().await;
    let big = format!(r#"{{"text":"{}"}}"#, "x".repeat(4096));
    let r = call(f.addr, "POST", "/items", &[], &big).await;
    assert_eq!(r.status, 413, "known length: {r:?}");

    // Chunked: the limit passes in the second chunk; the answer comes before the body ends.
    let chunk = "y".repeat(800);
    let request = format!(
        "POST /items HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n{:x}\r\n{chunk}\r\n",
        chunk.len(),
        chunk.len()
    );
    let answer = raw(f.addr, request.as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "chunked: {answer}");
    assert_eq!(f.host.actor("tb").iter().map(|c| c.handled).sum::<u64>(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_or_too_large_headers_get_431() {
    let f = start().await;
    let many: Vec<(String, String)> = (0..40).map(|i| (format!("x-h{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let mut request = "GET /items/1 HTTP/1.1\r\nhost: x\r\n".to_owned();
    for (n, v) in &many {
        request.push_str(&format!("{n}: {v}\r\n"));
    }
    request.push_str("\r\n");
    let answer = raw(f.addr, request.as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "too many: {answer}");

    let request = format!(
        "GET /items/1 HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "z".repeat(8192)
    );
    let answer = raw(f.addr, request.as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "too large: {answer}");
    metrics_eventually_show(
        f.addr,
        "bunraku_gateway_connections_closed_total{reason=\"headers_too_large\"} 2",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_header_client_is_cut_off_while_other_requests_succeed() {
    let f = start().await;
    let mut slow = TcpStream::connect(f.addr).await.unwrap();
    slow.write_all(b"GET /items/1 HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    // Meanwhile, normal requests are served.
    for _ in 0..3 {
        assert_eq!(get(f.addr, "/items/1", &[]).await.status, 200);
    }
    // The slow client never finishes its headers: the gateway closes the connection after its
    // header timeout (500 ms here), not never.
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the slow connection was left open");
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "cut off by the header timeout, not at once: {:?}",
        started.elapsed()
    );
    metrics_eventually_show(
        f.addr,
        "bunraku_gateway_connections_closed_total{reason=\"header_timeout\"} 1",
    )
    .await;
}

/// `max_connections` open: the next client is not accepted (its request waits unanswered in the
/// listen backlog) until one of them closes, and then it is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_connections_a_client_waits_until_a_connection_closes() {
    let f = start_with(|c| {
        c.max_connections = 2;
        // The fixture's 500 ms would close the idle kept-alive connections while the test waits.
        c.header_timeout = Duration::from_secs(60);
    })
    .await;
    let mut open = Vec::new();
    for _ in 0..2 {
        let stream = TcpStream::connect(f.addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        let conn = tokio::spawn(conn);
        open.push((sender, conn));
    }
    // Both are served (and so were accepted).
    for (sender, _) in &mut open {
        let request = hyper::Request::get("/items/1")
            .header("host", "x")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        response.into_body().collect().await.unwrap();
    }
    // The third connects (the kernel's backlog takes it) but is not accepted: no answer.
    let mut third = TcpStream::connect(f.addr).await.unwrap();
    third
        .write_all(b"GET /items/7 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut first_byte = [0u8; 1];
    let waited =
        tokio::time::timeout(Duration::from_millis(500), third.read(&mut first_byte)).await;
    assert!(
        waited.is_err(),
        "a third connection was served past the limit: {waited:?} {first_byte:?}"
    );
    // The figures, asked on an open connection.
    let request = hyper::Request::get("/metrics")
        .header("host", "x")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = open[0].0.send_request(request).await.unwrap();
    let text = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&text);
    for line in [
        "bunraku_gateway_connections_open 2",
        "bunraku_gateway_connections_total 2",
        "bunraku_gateway_connection_limit_reached_total 1",
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
    }
    // One closes: the third is accepted and answered.
    let (sender, conn) = open.remove(0);
    drop(sender);
    conn.await.unwrap().unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), third.read_to_end(&mut answer))
        .await
        .expect("the waiting client is served once a connection closed")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"7\""), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_actor_gets_504_a_trapping_one_502_and_an_error_500_without_internals() {
    let f = start().await;
    let r = call(f.addr, "POST", "/nap", &[], r#"{"ms":3000}"#).await;
    assert_eq!(r.status, 504, "{r:?}");
    let r = get(f.addr, "/panic", &[]).await;
    assert_eq!(r.status, 502, "{r:?}");
    assert!(!r.body.contains("panic"), "{}", r.body);
    let r = get(f.addr, "/fail", &[]).await;
    assert_eq!(r.status, 500, "{r:?}");
    assert!(!r.body.contains("hunter2"), "internals leaked: {}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_reflect_the_traffic() {
    let f = start().await;
    assert_eq!(get(f.addr, "/healthz", &[]).await.status, 200);
    assert_eq!(get(f.addr, "/readyz", &[]).await.status, 200);
    for id in ["1", "2", "3"] {
        assert_eq!(get(f.addr, &format!("/items/{id}"), &[]).await.status, 200);
    }
    assert_eq!(get(f.addr, "/keyed", &[]).await.status, 401);
    let metrics = get(f.addr, "/metrics", &[]).await;
    assert_eq!(metrics.status, 200);
    let text = metrics.body;
    // Per route template, not per raw path.
    assert!(
        text.contains("bunraku_gateway_requests_total{route=\"GET /items/{id}\",status=\"200\"} 3"),
        "{text}"
    );
    assert!(
        !text.contains("/items/1"),
        "raw paths must not become labels"
    );
    assert!(
        text.contains("bunraku_gateway_requests_total{route=\"GET /keyed\",status=\"401\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("bunraku_gateway_request_duration_seconds_bucket"),
        "{text}"
    );
    // The runtime's own figures follow.
    assert!(
        text.contains("bunraku_actor_mailbox_depth{actor=\"tb\""),
        "{text}"
    );
}
