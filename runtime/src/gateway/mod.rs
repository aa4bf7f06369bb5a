//! The HTTP API gateway: the single entry point for outside clients.
//!
//! A [`Gateway`] listens on a TCP address and maps HTTP requests to actors by its routes
//! ([`RouteConfig`], the manifest's `[[gateway.route]]`): a method and a path pattern such as
//! `/users/{id}` call an actor (request and reply, JSON in and out) or publish to a subject
//! (answered with 202). It enforces the security and traffic policy before anything reaches a
//! guest, and it runs on an I/O runtime of the caller's choosing, never on the threads that run
//! guests, so a busy guest cannot stall it.
//!
//! # How a request travels
//!
//! 1. **Connection**: at most `max_connections` are open (at the limit the gateway stops
//!    accepting until one closes). hyper serves HTTP/1.1 per connection with a header read
//!    timeout (a client that dribbles its headers is cut off; the same timeout closes idle
//!    kept-alive connections) and limits on the number and the total size of the headers
//!    (answered with 431 by hyper).
//! 2. **Routing**: axum's router matches the method and the path template; an unknown path gets
//!    404, a known path with another method 405. `/healthz`, `/readyz` and `/metrics` are the
//!    gateway's own.
//! 3. **Policy**, in this order: a declared `Content-Length` above `max_body_bytes` is refused
//!    with 413 before the body is read; a per-address rate limit; authentication ([`auth`]: an
//!    API key or a JWT bearer token; 401); a per-key or per-subject rate limit ([`limit`]: GCRA,
//!    429 with `Retry-After`). Refused requests never reach an actor.
//! 4. **Message**: the body is read within `max_body_bytes` (a chunked body is
//!    refused with 413 as soon as it passes the limit) and `body_timeout_ms` (408), and becomes
//!    the JSON payload: the body object with the query and then the path parameters merged in as
//!    string fields. Headers the route lists travel as envelope extensions
//!    `http.header.<name>`, the authenticated identity as [`PRINCIPAL_SUBJECT`] and
//!    [`PRINCIPAL_KEY_ID`] (the SDK's `Ctx::principal` reads them).
//! 5. **Call**: the gateway is the principal [`GATEWAY_PRINCIPAL`] (`gateway`) with its own
//!    grants, and its requests are *spread* round-robin over the actor's instances: load
//!    balancing, with the registry as service discovery (a virtual actor's key is activated on
//!    its first request).
//! 6. **Reply**: the actor's JSON reply is the response (200), unless it sets its own status and
//!    headers with a `"$http"` object; `{"Err": ..}` without a status is 500; a trapped or
//!    missing actor is 502, a timeout 504. Error bodies are `{"error": "<fixed text>"}` and never
//!    carry an internal message.
//!
//! Every request is counted per route *template* (not per raw path) in the Prometheus text at
//! `/metrics` ([`Gateway::metrics_text`]), with the connections (open, accepted, limit reached,
//! closed for the header limits or timeout), followed by the host's own figures.
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use bunraku_runtime::gateway::{Gateway, GatewayConfig, RouteConfig};
//! use bunraku_runtime::{Host, HostConfig};
//! # fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let host = Arc::new(Host::new(HostConfig::default())?);
//! // ... deploy an actor `users` with a `GetUser` request handler ...
//! let io = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
//! let config = GatewayConfig {
//!     listen: "127.0.0.1:0".parse()?,
//!     routes: vec![RouteConfig::actor("GET", "/users/{id}", "users", "GetUser")],
//!     ..GatewayConfig::default()
//! };
//! let gateway = Gateway::start(host.clone(), config, io.handle())?;
//! gateway.set_ready(true);
//! println!("listening on http://{}", gateway.local_addr());
//! // ... later:
//! io.block_on(gateway.shutdown().wait());
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::host::Host;

pub mod auth;
mod config;
pub mod limit;
mod metrics;
mod reply;
pub mod script;
mod server;

pub use auth::{ApiKeyConfig, Identity, JwtKeyConfig};
pub use config::{
    AuthScheme, ConfigProblem, CorsConfig, GatewayConfig, METHODS, RESERVED_PATHS, RouteConfig,
};
pub use limit::{LimitKey, RateLimitConfig};
pub use reply::HTTP_KEY;

/// The `grants` table's form, for the manifest's key suggestions.
pub(crate) use config::RawGrants as GrantsTable;

/// The principal the gateway acts as towards the host: actors see it as the sender, and its
/// grants ([`GatewayConfig::grants`]) decide which actors and subjects routes may reach.
pub const GATEWAY_PRINCIPAL: &str = "gateway";

/// The extension key of the subject the gateway authenticated (an API key's `subject`, a JWT's
/// `sub`); the same string as the SDK's `bunraku_sdk::PRINCIPAL_SUBJECT`.
pub const PRINCIPAL_SUBJECT: &str = "bunraku.principal.subject";

/// The extension key of the configured key that vouched for the subject (an API key's `id`, a
/// JWT key's `kid`); the same string as the SDK's `bunraku_sdk::PRINCIPAL_KEY_ID`.
pub const PRINCIPAL_KEY_ID: &str = "bunraku.principal.key_id";

/// The prefix of the extension keys of the request headers a route passes along, followed by
/// the header's lowercase name; the same string as the SDK's `bunraku_sdk::HTTP_HEADER_PREFIX`.
pub const HTTP_HEADER_PREFIX: &str = "http.header.";

/// Why a gateway could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// Another program (or another gateway) listens on the address.
    #[error(
        "cannot listen on {addr}: the address is already in use; stop the program that holds it or choose another `gateway.listen` (port 0 picks a free one)"
    )]
    AddrInUse {
        /// The address.
        addr: SocketAddr,
    },
    /// The address could not be bound for another reason (not a local address, no permission
    /// for a port below 1024, ...).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A setting or a route is invalid: a bad route pattern, a route naming neither an actor nor
    /// a subject, an unknown method, a rate limit that needs an identity the route lacks, ...
    #[error("gateway.{key}: {reason}")]
    Config {
        /// The key, relative to the gateway table, such as `route[2].path`.
        key: String,
        /// What is wrong, and the fix.
        reason: String,
    },
    /// The API keys or JWT keys were refused (a missing secret, an unreadable or too small RSA
    /// key, an unsupported algorithm, ...).
    #[error("gateway keys: {0}")]
    Keys(#[source] auth::ConfigError),
}

/// A running gateway. Dropping it stops it like [`shutdown`](Self::shutdown) without waiting.
pub struct Gateway {
    addr: SocketAddr,
    state: Arc<server::State>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

/// A gateway that is stopping: [`wait`](Self::wait) until every connection has closed.
#[derive(Debug)]
pub struct Stopping {
    task: Option<JoinHandle<()>>,
}

impl Stopping {
    /// Completes once the listener is closed and every connection has finished its request in
    /// flight (or was cut off after the shutdown grace: the longest route timeout plus the body
    /// timeout).
    pub async fn wait(mut self) {
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("addr", &self.addr)
            .field("routes", &self.state.routes.len())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Checks `config`, grants the principal [`GATEWAY_PRINCIPAL`] its grants on `host`
    /// ([`GatewayConfig::effective_grants`]), binds the listener and starts serving on `runtime`
    /// (a runtime with I/O and time enabled, not the host's guest runtime). Returns once the
    /// listener is bound: connections are accepted from then on. Readiness (`/readyz`) starts
    /// false; call [`set_ready`](Self::set_ready) once the actors are deployed.
    pub fn start(
        host: Arc<Host>,
        config: GatewayConfig,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Gateway, GatewayError> {
        if let Some(first) = config.problems().into_iter().next() {
            return Err(GatewayError::Config {
                key: first.key,
                reason: first.reason,
            });
        }
        let state = Arc::new(server::State::new(host.clone(), &config)?);
        let bind_error = |source: std::io::Error| {
            if source.kind() == std::io::ErrorKind::AddrInUse {
                GatewayError::AddrInUse {
                    addr: config.listen,
                }
            } else {
                GatewayError::Bind {
                    addr: config.listen,
                    source,
                }
            }
        };
        let listener = std::net::TcpListener::bind(config.listen).map_err(bind_error)?;
        listener.set_nonblocking(true).map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        let listener = {
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(listener).map_err(bind_error)?
        };
        host.set_principal_grants(GATEWAY_PRINCIPAL, config.effective_grants());
        let router = server::router(&state, &config);
        let settings = server::ConnSettings {
            max_connections: config.max_connections,
            header_timeout: config.header_timeout,
            max_headers: config.max_headers,
            max_header_bytes: config.max_header_bytes,
        };
        let longest = config
            .routes
            .iter()
            .filter_map(|r| r.timeout)
            .chain([config.request_timeout])
            .max()
            .unwrap_or_default();
        let grace = longest + config.body_timeout + Duration::from_secs(1);
        let (stop, stopped) = watch::channel(false);
        let task = runtime.spawn(server::serve(
            listener,
            router,
            settings,
            state.clone(),
            stopped,
            grace,
        ));
        tracing::info!(%addr, routes = config.routes.len(), "gateway listening");
        Ok(Gateway {
            addr,
            state,
            stop,
            task: Some(task),
        })
    }

    /// The address the gateway listens on (with the port chosen when `listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets what `/readyz` answers: 200 when ready, 503 before. `bunraku run` sets it once the
    /// manifest's actors are deployed.
    pub fn set_ready(&self, ready: bool) {
        self.state.ready.store(ready, Ordering::Relaxed);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.state.ready.load(Ordering::Relaxed)
    }

    /// What `/metrics` serves: the gateway's figures (requests by route template and status,
    /// latency histograms, rate-limit rejections, authentication failures, rate limiter sizes)
    /// followed by the host's ([`Host::metrics_text`]), in the Prometheus text format.
    pub fn metrics_text(&self) -> String {
        self.state.metrics_text()
    }

    /// Stops the gateway: the listener closes at once, `/readyz` answers 503, and each open
    /// connection finishes the request in flight and closes. Returns without waiting; await
    /// [`Stopping::wait`] to know when the last connection has closed.
    pub fn shutdown(mut self) -> Stopping {
        self.set_ready(false);
        let _ = self.stop.send(true);
        Stopping {
            task: self.task.take(),
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
