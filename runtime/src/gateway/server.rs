//! Serving: the listener, one hyper HTTP/1 connection per client with the header limits and
//! timeouts, and the axum router whose handlers run a request through the gateway's checks to
//! an actor.
//!
//! A request to a route passes, in this order: the declared body size (413 without reading),
//! a per-address rate limit, authentication (401), a per-key or per-subject rate limit (429), the
//! path and query parameters (400), the body, read against the size limit and the body timeout
//! (413, 408), the JSON payload (400); only then is the actor called (or the subject published
//! to), and its reply or failure mapped to a response ([`super::reply`]). Every refusal before
//! the call is answered by the gateway itself: nothing refused reaches an actor.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, Query, RawPathParams, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, get};
use bunraku_abi::{Codec, Ext};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt;

use super::auth::{Authenticator, Identity};
use super::config::{AuthScheme, GatewayConfig, Template, parse_actor, parse_path, parse_subject};
use super::limit::{HostClock, LimitKey, RateLimiter, TrustedProxies};
use super::metrics::{Closed, ConnMetrics, RouteMetrics, UNMATCHED};
use super::reply::{self, Body as ReplyBody, HttpReply, Malformed};
use super::{
    GATEWAY_PRINCIPAL, GatewayError, HTTP_HEADER_PREFIX, PRINCIPAL_KEY_ID, PRINCIPAL_SUBJECT,
};
use crate::host::{ClientMessage, Host};

/// How often the rate limiters drop the state of keys that are back at a full burst.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

/// What the handlers share.
pub(crate) struct State {
    pub host: Arc<Host>,
    auth: Authenticator,
    proxies: TrustedProxies,
    pub ready: AtomicBool,
    max_body: usize,
    body_timeout: Duration,
    pub routes: Vec<Arc<Route>>,
    pub unmatched: RouteMetrics,
    pub connections: ConnMetrics,
}

/// Where a route sends its requests.
enum Target {
    Actor(Template),
    Subject(Template),
}

/// One configured route, ready to serve.
pub(crate) struct Route {
    label: String,
    target: Target,
    message: Option<String>,
    auth: AuthScheme,
    headers: Vec<HeaderName>,
    timeout: Duration,
    pub limit: Option<(RateLimiter<HostClock>, LimitKey)>,
    pub metrics: RouteMetrics,
}

impl State {
    /// Builds the routes of a configuration that passed [`GatewayConfig::validate`].
    pub(crate) fn new(host: Arc<Host>, config: &GatewayConfig) -> Result<Self, GatewayError> {
        let auth =
            Authenticator::new(&config.api_keys, &config.jwt_keys).map_err(GatewayError::Keys)?;
        let proxies =
            TrustedProxies::parse(&config.trusted_proxies).map_err(|e| GatewayError::Config {
                key: "trusted_proxies".into(),
                reason: e.to_string(),
            })?;
        let mut routes = Vec::new();
        for (i, rc) in config.routes.iter().enumerate() {
            let invalid = |key: &str, reason: String| GatewayError::Config {
                key: format!("route[{i}].{key}"),
                reason,
            };
            let path = parse_path(&rc.path).map_err(|e| invalid("path", e))?;
            let target = match (&rc.actor, &rc.subject) {
                (Some(actor), None) => Target::Actor(
                    parse_actor(actor, &path.params)
                        .map_err(|e| invalid("actor", e))?
                        .1,
                ),
                (None, Some(subject)) => Target::Subject(
                    parse_subject(subject, &path.params).map_err(|e| invalid("subject", e))?,
                ),
                _ => {
                    return Err(invalid(
                        "actor",
                        "the route names neither an `actor` nor a `subject`, or both".into(),
                    ));
                }
            };
            let headers = rc
                .headers
                .iter()
                .map(|h| {
                    HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes())
                        .map_err(|_| invalid("headers", format!("`{h}` is not a header name")))
                })
                .collect::<Result<_, _>>()?;
            let label = rc.label();
            let limit = match &rc.rate_limit {
                Some(l) => Some((
                    RateLimiter::with_clock(l, HostClock(host.clock().clone()))
                        .map_err(|e| invalid("rate_limit", e.to_string()))?,
                    l.key,
                )),
                None => None,
            };
            routes.push(Arc::new(Route {
                metrics: RouteMetrics::new(label.clone()),
                label,
                target,
                message: rc.message.clone(),
                auth: rc.auth,
                headers,
                timeout: rc.timeout.unwrap_or(config.request_timeout),
                limit,
            }));
        }
        Ok(Self {
            host,
            auth,
            proxies,
            ready: AtomicBool::new(false),
            max_body: config.max_body_bytes,
            body_timeout: config.body_timeout,
            routes,
            unmatched: RouteMetrics::new(UNMATCHED.into()),
            connections: ConnMetrics::default(),
        })
    }

    /// The gateway's figures followed by the host's.
    pub(crate) fn metrics_text(&self) -> String {
        let mut routes: Vec<&RouteMetrics> = self.routes.iter().map(|r| &r.metrics).collect();
        routes.push(&self.unmatched);
        let mut keys: Vec<Option<usize>> = self
            .routes
            .iter()
            .map(|r| r.limit.as_ref().map(|(l, _)| l.len()))
            .collect();
        keys.push(None);
        let mut text = super::metrics::render(&routes, &keys, &self.connections);
        text.push_str(&self.host.metrics_text());
        text
    }
}

/// The router: the configured routes (each path with its methods), `/healthz`, `/readyz`,
/// `/metrics`, JSON 404 and 405, and CORS when configured.
pub(crate) fn router(state: &Arc<State>, config: &GatewayConfig) -> Router {
    let mut by_path: BTreeMap<&str, MethodRouter> = BTreeMap::new();
    for (rc, route) in config.routes.iter().zip(&state.routes) {
        let method = Method::from_bytes(rc.method.to_ascii_uppercase().as_bytes())
            .expect("methods are checked by validate");
        let filter = MethodFilter::try_from(method).expect("methods are checked by validate");
        let (state, route) = (state.clone(), route.clone());
        let handler = move |request: Request| async move {
            let started = Instant::now();
            let response = handle(&state, &route, request).await;
            route
                .metrics
                .observe(response.status().as_u16(), started.elapsed());
            response
        };
        let methods = by_path.remove(rc.path.as_str()).unwrap_or_default();
        by_path.insert(&rc.path, methods.on(filter, handler));
    }
    let mut router = Router::new();
    for (path, methods) in by_path {
        let state = state.clone();
        router = router.route(
            path,
            methods.fallback(move || async move {
                let started = Instant::now();
                let response = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
                state.unmatched.observe(405, started.elapsed());
                response
            }),
        );
    }
    let ready = state.clone();
    let metrics = state.clone();
    let unmatched = state.clone();
    router = router
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || async move {
                if ready.ready.load(Ordering::Relaxed) {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                }
            }),
        )
        .route(
            "/metrics",
            get(move || async move {
                (
                    [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
                    metrics.metrics_text(),
                )
            }),
        )
        .fallback(move || async move {
            unmatched.unmatched.observe(404, Duration::ZERO);
            error(StatusCode::NOT_FOUND, "not found")
        });
    if let Some(cors) = &config.cors {
        router = router.layer(cors_layer(cors));
    }
    router
}

fn cors_layer(cors: &super::CorsConfig) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{
        AllowHeaders, AllowMethods, AllowOrigin, Any, CorsLayer, ExposeHeaders,
    };
    let star = |list: &[String]| list.iter().any(|v| v == "*");
    let origins = if star(&cors.allow_origins) {
        AllowOrigin::from(Any)
    } else {
        AllowOrigin::list(
            cors.allow_origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok()),
        )
    };
    let methods = if star(&cors.allow_methods) {
        AllowMethods::from(Any)
    } else {
        AllowMethods::list(
            cors.allow_methods
                .iter()
                .filter_map(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok()),
        )
    };
    let names = |list: &[String]| -> Vec<HeaderName> {
        list.iter()
            .filter_map(|h| HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()).ok())
            .collect()
    };
    let headers = if star(&cors.allow_headers) {
        AllowHeaders::from(Any)
    } else {
        AllowHeaders::list(names(&cors.allow_headers))
    };
    let expose = if star(&cors.expose_headers) {
        ExposeHeaders::from(Any)
    } else {
        ExposeHeaders::list(names(&cors.expose_headers))
    };
    CorsLayer::new()
        .allow_origin(origins)
        .allow_methods(methods)
        .allow_headers(headers)
        .expose_headers(expose)
        .allow_credentials(cors.allow_credentials)
        .max_age(cors.max_age)
}

/// A failure answered by the gateway: `{"error": text}`.
fn error(status: StatusCode, text: &str) -> Response {
    respond(HttpReply::error(status, text))
}

/// A failure that also closes the connection (the rest of the request is not read).
fn error_and_close(status: StatusCode, text: &str) -> Response {
    let mut response = error(status, text);
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

fn respond(reply: HttpReply) -> Response {
    let mut response = match reply.body {
        ReplyBody::Empty => Response::new(Body::empty()),
        ReplyBody::Json(value) => {
            let mut r = Response::new(Body::from(value.to_string()));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        ReplyBody::Raw(bytes) => Response::new(Body::from(bytes)),
    };
    *response.status_mut() = reply.status;
    for (name, value) in reply.headers {
        response.headers_mut().insert(name, value);
    }
    response
}

/// 200 with a JSON body that is already bytes.
fn json_bytes(body: Vec<u8>) -> Response {
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn too_many(retry_after: Duration) -> Response {
    let mut response = error(StatusCode::TOO_MANY_REQUESTS, "too many requests");
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(super::limit::retry_after_secs(retry_after)),
    );
    response
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Runs one request through the route's checks to its target.
async fn handle(state: &State, route: &Route, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    if declared_length(&parts.headers).is_some_and(|n| n > state.max_body as u64) {
        return error_and_close(StatusCode::PAYLOAD_TOO_LARGE, "payload too large");
    }

    // Who is calling, and may they.
    // Charges the request to `key`; the time to wait when it is over the limit.
    let over_limit = |key: &str| {
        let (limiter, _) = route.limit.as_ref()?;
        let retry = limiter.check(key).err()?;
        route.metrics.rate_limited();
        Some(retry)
    };
    if let Some((_, LimitKey::Ip)) = &route.limit {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0)
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let ip = state.proxies.client_ip(peer, &parts.headers);
        if let Some(retry) = over_limit(&ip.to_string()) {
            return too_many(retry);
        }
    }
    let identity = match route.auth {
        AuthScheme::None => None,
        scheme => {
            let (result, challenge) = match scheme {
                AuthScheme::ApiKey => (state.auth.api_key(&parts.headers), "ApiKey"),
                _ => (state.auth.bearer(&parts.headers), "Bearer"),
            };
            match result {
                Ok(identity) => Some(identity),
                Err(e) => {
                    route.metrics.auth_failed();
                    tracing::debug!(route = %route.label, error = %e, "gateway: authentication refused");
                    let mut response = error(StatusCode::UNAUTHORIZED, "unauthorized");
                    if let Ok(value) = HeaderValue::from_str(&e.www_authenticate(challenge)) {
                        response
                            .headers_mut()
                            .insert(header::WWW_AUTHENTICATE, value);
                    }
                    return response;
                }
            }
        }
    };
    if let (Some((_, key)), Some(id)) = (&route.limit, &identity) {
        let key = match key {
            LimitKey::ApiKey => Some(&id.key_id),
            LimitKey::Subject => Some(&id.subject),
            _ => None,
        };
        if let Some(retry) = key.and_then(|key| over_limit(key)) {
            return too_many(retry);
        }
    }

    // What the request says.
    let Ok(path) = RawPathParams::from_request_parts(&mut parts, &()).await else {
        return error(StatusCode::BAD_REQUEST, "bad request");
    };
    let path: Vec<(String, String)> = path
        .iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let query = match parts.uri.query() {
        None => Vec::new(),
        Some(_) => match Query::<Vec<(String, String)>>::try_from_uri(&parts.uri) {
            Ok(Query(q)) => q,
            Err(_) => return error(StatusCode::BAD_REQUEST, "bad request"),
        },
    };
    let to = match &route.target {
        Target::Actor(t) | Target::Subject(t) => {
            let value = |name: &str| {
                path.iter()
                    .find(|(k, _)| k == name)
                    .map_or("", |(_, v)| v.as_str())
            };
            let valid = |text: &str| match route.target {
                Target::Actor(_) => crate::activation::validate_key(text).is_ok(),
                Target::Subject(_) => {
                    !text.is_empty()
                        && !text.contains(['.', '*', '>'])
                        && !text.chars().any(|c| c.is_whitespace() || c.is_control())
                }
            };
            if t.params().any(|p| !valid(value(p))) {
                return error(StatusCode::BAD_REQUEST, "invalid path parameter");
            }
            t.fill(value)
        }
    };
    let body = match tokio::time::timeout(
        state.body_timeout,
        Limited::new(body, state.max_body).collect(),
    )
    .await
    {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return error_and_close(StatusCode::PAYLOAD_TOO_LARGE, "payload too large");
        }
        Ok(Err(_)) => return error_and_close(StatusCode::BAD_REQUEST, "bad request"),
        Err(_) => return error_and_close(StatusCode::REQUEST_TIMEOUT, "request timeout"),
    };
    let payload = match reply::payload(&body, &query, &path) {
        Ok(payload) => payload,
        Err(Malformed::NotJson) => {
            return error(StatusCode::BAD_REQUEST, "the body is not JSON");
        }
        Err(Malformed::NotObject) => {
            return error(StatusCode::BAD_REQUEST, "the body is not a JSON object");
        }
    };

    let message = ClientMessage {
        principal: GATEWAY_PRINCIPAL.to_owned(),
        to,
        msg_type: route.message.clone(),
        codec: Codec::Json,
        payload,
        timeout: Some(route.timeout),
        ext: extensions(&route.headers, &parts.headers, identity.as_ref()),
        spread: true,
    };
    match route.target {
        Target::Actor(_) => call(state, route, message).await,
        Target::Subject(_) => publish(state, route, message).await,
    }
}

/// The envelope extensions: the listed headers, then the identity.
fn extensions(names: &[HeaderName], headers: &HeaderMap, identity: Option<&Identity>) -> Vec<Ext> {
    let mut ext = Vec::new();
    for name in names {
        let mut values = headers.get_all(name).iter();
        let Some(first) = values.next() else {
            continue;
        };
        let mut value = first.as_bytes().to_vec();
        for more in values {
            value.extend_from_slice(b", ");
            value.extend_from_slice(more.as_bytes());
        }
        ext.push(Ext {
            key: format!("{HTTP_HEADER_PREFIX}{name}"),
            value,
        });
    }
    if let Some(id) = identity {
        ext.push(Ext {
            key: PRINCIPAL_SUBJECT.to_owned(),
            value: id.subject.clone().into_bytes(),
        });
        ext.push(Ext {
            key: PRINCIPAL_KEY_ID.to_owned(),
            value: id.key_id.clone().into_bytes(),
        });
    }
    ext
}

async fn call(state: &State, route: &Route, message: ClientMessage) -> Response {
    let to = message.to.clone();
    // `message.timeout` is the route's: `Host::request` ends the wait with `Timeout` itself.
    let outcome = match state.host.request(message).await {
        Ok(reply) if reply::is_plain(&reply.payload) => return json_bytes(reply.payload),
        outcome => outcome.and_then(|reply| reply.json()),
    };
    match outcome {
        Ok(value) => match reply::map_reply(value) {
            Ok(reply) => respond(reply),
            Err(bad) => {
                tracing::warn!(route = %route.label, actor = %to, problem = %bad.0, "gateway: the actor's reply breaks the `$http` convention");
                error(StatusCode::BAD_GATEWAY, "bad gateway")
            }
        },
        Err(e) => {
            let (status, text) = reply::call_error(&e);
            if status.is_server_error() {
                tracing::warn!(route = %route.label, actor = %to, error = %e, "gateway: {text}");
            }
            error(status, text)
        }
    }
}

async fn publish(state: &State, route: &Route, message: ClientMessage) -> Response {
    let subject = message.to.clone();
    let outcome = tokio::time::timeout(route.timeout, state.host.publish(message))
        .await
        .unwrap_or(Err(crate::CallError::Timeout(
            route.timeout.as_millis() as u64
        )));
    match outcome {
        Ok(_) => respond(HttpReply {
            status: StatusCode::ACCEPTED,
            headers: Vec::new(),
            body: ReplyBody::Json(serde_json::json!({ "status": "accepted" })),
        }),
        Err(e) => {
            let (status, text) = reply::call_error(&e);
            tracing::warn!(route = %route.label, subject = %subject, error = %e, "gateway: {text}");
            error(status, text)
        }
    }
}

/// The settings each connection is served with.
#[derive(Clone, Copy)]
pub(crate) struct ConnSettings {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub max_headers: usize,
    pub max_header_bytes: usize,
}

/// Accepts connections until `stop` turns true, then lets each connection finish the request in
/// flight (for at most `grace`) and returns. While `max_connections` are open it accepts none:
/// new clients wait in the listen backlog until one closes.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    settings: ConnSettings,
    state: Arc<State>,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let mut connections = JoinSet::new();
    let max = settings.max_connections;
    let mut warned = false;
    let mut prune = tokio::time::interval(PRUNE_EVERY);
    prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            accepted = listener.accept(), if connections.len() < max => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    connections.spawn(connection(stream, peer, router.clone(), settings, stop.clone()));
                    state.connections.accepted(connections.len());
                    if connections.len() >= max {
                        state.connections.reached_limit();
                        if !std::mem::replace(&mut warned, true) {
                            tracing::warn!(max, "gateway: max_connections open; not accepting until one closes (counted in bunraku_gateway_connection_limit_reached_total, logged once)");
                        }
                    }
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %e, "gateway: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(ended) = connections.join_next(), if !connections.is_empty() => {
                if let Ok(Some(why)) = ended {
                    state.connections.closed(why);
                }
                state.connections.ended(connections.len());
            }
            _ = prune.tick() => {
                for route in &state.routes {
                    if let Some((limiter, _)) = &route.limit {
                        limiter.prune();
                    }
                }
            }
            () = stopped(&mut stop) => break,
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "gateway: connections still open after the shutdown grace; closing them"
        );
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
}

/// Completes when the gateway stops (or its handle is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`: drop it here.
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}

/// Serves one connection: HTTP/1.1 with keep-alive, the header timeout (which also bounds how
/// long an idle kept-alive connection stays open) and the header limits, answered with 431 by
/// hyper. Returns the limit that closed it, if one did.
async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    router: Router,
    settings: ConnSettings,
    mut stop: watch::Receiver<bool>,
) -> Option<Closed> {
    let service = hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let router = router.clone();
        async move { Ok::<_, Infallible>(router.oneshot(request).await.into_response()) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout)
        .max_headers(settings.max_headers)
        .max_header_size(settings.max_header_bytes)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            let e = result.err()?;
            tracing::debug!(%peer, error = %e, "gateway: connection ended");
            if e.is_parse_too_large() {
                Some(Closed::HeadersTooLarge)
            } else if e.is_timeout() {
                Some(Closed::HeaderTimeout)
            } else {
                None
            }
        }
        () = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
            None
        }
    }
}
