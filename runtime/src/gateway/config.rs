//! The gateway's settings: [`GatewayConfig`] (the manifest's `[gateway]` table), its routes, and
//! the checks that turn a configuration into routes the server can run.
//!
//! A configuration is plain data: it deserializes from the `[gateway]` table of `bunraku.toml`
//! (every key is optional and has the documented default) and can be built in code. Nothing is
//! checked while deserializing beyond types; [`GatewayConfig::validate`] (called by
//! [`Gateway::start`](super::Gateway::start)) and the manifest report every problem with the key
//! it is about, such as `route[2].path`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use axum::http;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

use super::auth::{ApiKeyConfig, JwtKeyConfig};
use super::limit::{LimitKey, RateLimitConfig};
use crate::grants::{ANY_ACTOR, Grants};
use crate::subject::Pattern;

/// The paths the gateway itself answers; a route cannot use them.
pub const RESERVED_PATHS: &[&str] = &["/healthz", "/readyz", "/metrics"];

/// The methods a route may name.
pub const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];

/// The gateway: where it listens, its limits and timeouts, who may call it, and its routes.
///
/// `GatewayConfig::default()` holds the documented defaults and no routes.
///
/// ```
/// use bunraku_runtime::gateway::{AuthScheme, GatewayConfig, RouteConfig};
///
/// let config: GatewayConfig = toml::from_str(
///     r#"
///         listen = "127.0.0.1:0"
///         [[route]]
///         method = "GET"
///         path = "/users/{id}"
///         actor = "users"
///         message = "GetUser"
///     "#,
/// )?;
/// assert_eq!(config.max_body_bytes, 1 << 20); // the default
/// assert_eq!(config.routes[0].auth, AuthScheme::None);
/// config.validate()?;
///
/// // The same in code.
/// let config = GatewayConfig {
///     routes: vec![RouteConfig::actor("GET", "/users/{id}", "users", "GetUser")],
///     ..GatewayConfig::default()
/// };
/// config.validate()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct GatewayConfig {
    /// The address to listen on (`listen`, default `127.0.0.1:8080`). Port 0 picks a free port;
    /// [`Gateway::local_addr`](super::Gateway::local_addr) tells which.
    pub listen: SocketAddr,
    /// The largest request body (`max_body_bytes`, default 1 MiB): a larger declared
    /// `Content-Length` is refused with 413 before the body is read, a chunked body as soon as it
    /// passes the limit.
    #[serde(deserialize_with = "size")]
    pub max_body_bytes: usize,
    /// The most bytes of the request line and headers together (`max_header_bytes`, default
    /// 16 KiB): 431 past it.
    #[serde(deserialize_with = "size")]
    pub max_header_bytes: usize,
    /// The most request headers (`max_headers`, default 64): 431 past it.
    pub max_headers: usize,
    /// The most connections open at once (`max_connections`, default 1024). At the limit the
    /// gateway stops accepting: further clients wait in the listen backlog (or their connect
    /// times out) until a connection closes. Keep it below the process's open-file limit
    /// (`ulimit -n`).
    pub max_connections: usize,
    /// How long a client may take to send the request line and headers (`header_timeout_ms`,
    /// default 5000 ms), also the longest a kept-alive connection waits idle for its next
    /// request; past it the connection is closed.
    #[serde(rename = "header_timeout_ms", deserialize_with = "millis")]
    pub header_timeout: Duration,
    /// How long a client may take to send the body (`body_timeout_ms`, default 10 000 ms): 408
    /// and the connection is closed.
    #[serde(rename = "body_timeout_ms", deserialize_with = "millis")]
    pub body_timeout: Duration,
    /// How long a route waits for its actor unless the route says otherwise
    /// (`request_timeout_ms`, default 10 000 ms): 504 past it.
    #[serde(rename = "request_timeout_ms", deserialize_with = "millis")]
    pub request_timeout: Duration,
    /// Peers whose `X-Forwarded-For` header is believed, as addresses or CIDR blocks
    /// (`trusted_proxies`, default none): for them the client address used for `ip` rate limits
    /// is taken from the header.
    pub trusted_proxies: Vec<String>,
    /// What the gateway principal may reach (`grants = { send = [..], publish = [..] }`). `None`
    /// (the default): exactly what the routes name, so a route needs no separate grant; with
    /// grants written out, every route's target must be among them.
    #[serde(deserialize_with = "grants")]
    pub grants: Option<Grants>,
    /// Cross-origin requests from browsers (`[gateway.cors]`); `None` (the default) adds no CORS
    /// headers, so browsers refuse cross-origin calls.
    pub cors: Option<CorsConfig>,
    /// API keys (`[[gateway.api_key]]`), for routes with `auth = "api_key"`.
    #[serde(rename = "api_key")]
    pub api_keys: Vec<ApiKeyConfig>,
    /// JWT verification keys (`[[gateway.jwt]]`), for routes with `auth = "jwt"`.
    #[serde(rename = "jwt")]
    pub jwt_keys: Vec<JwtKeyConfig>,
    /// The routes (`[[gateway.route]]`), matched by method and path.
    #[serde(rename = "route")]
    pub routes: Vec<RouteConfig>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 1 << 20,
            max_header_bytes: 16 << 10,
            max_headers: 64,
            max_connections: 1024,
            header_timeout: Duration::from_millis(5000),
            body_timeout: Duration::from_millis(10_000),
            request_timeout: Duration::from_millis(10_000),
            trusted_proxies: Vec::new(),
            grants: None,
            cors: None,
            api_keys: Vec::new(),
            jwt_keys: Vec::new(),
            routes: Vec::new(),
        }
    }
}

impl PartialEq for GatewayConfig {
    fn eq(&self, other: &Self) -> bool {
        // The key configurations have no `PartialEq` (they hold secrets); compare them field by
        // field.
        fn api_key(a: &ApiKeyConfig, b: &ApiKeyConfig) -> bool {
            (&a.id, &a.subject, &a.key, &a.key_env) == (&b.id, &b.subject, &b.key, &b.key_env)
        }
        fn jwt(a: &JwtKeyConfig, b: &JwtKeyConfig) -> bool {
            (&a.kid, &a.alg, &a.secret, &a.secret_env, &a.public_key_pem)
                == (&b.kid, &b.alg, &b.secret, &b.secret_env, &b.public_key_pem)
                && (&a.public_key_file, &a.audience, &a.issuer, a.leeway_s)
                    == (&b.public_key_file, &b.audience, &b.issuer, b.leeway_s)
        }
        fn all<T>(a: &[T], b: &[T], eq: fn(&T, &T) -> bool) -> bool {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| eq(a, b))
        }
        self.listen == other.listen
            && self.max_body_bytes == other.max_body_bytes
            && self.max_header_bytes == other.max_header_bytes
            && self.max_headers == other.max_headers
            && self.max_connections == other.max_connections
            && self.header_timeout == other.header_timeout
            && self.body_timeout == other.body_timeout
            && self.request_timeout == other.request_timeout
            && self.trusted_proxies == other.trusted_proxies
            && self.grants == other.grants
            && self.cors == other.cors
            && all(&self.api_keys, &other.api_keys, api_key)
            && all(&self.jwt_keys, &other.jwt_keys, jwt)
            && self.routes == other.routes
    }
}

/// One route (`[[gateway.route]]`): a method and a path pattern, mapped to an actor (request and
/// reply) or to a subject (publish, answered with 202).
///
/// Exactly one of `actor` and `subject` is set. Both may use the path's parameters:
/// `actor = "account/{id}"` addresses the virtual actor keyed by the `id` parameter,
/// `subject = "orders.{id}.created"` publishes to a subject made from it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RouteConfig {
    /// The HTTP method: `GET`, `POST`, `PUT`, `PATCH` or `DELETE` (a `GET` route also answers
    /// `HEAD`).
    pub method: String,
    /// The path pattern: `/`-separated segments, each literal or a whole parameter `{name}`;
    /// the last may be `{*name}`, matching the rest of the path.
    pub path: String,
    /// The actor to call: a name, or `TYPE/{param}` (or `TYPE/literal`) for a virtual actor.
    #[serde(default)]
    pub actor: Option<String>,
    /// The subject to publish to; its tokens may hold parameters (`orders.{id}`).
    #[serde(default)]
    pub subject: Option<String>,
    /// The message type's wire name. Needed for a subject; for an actor with one handler it may
    /// be left out.
    #[serde(default)]
    pub message: Option<String>,
    /// Who may call the route (default `none`: anyone).
    #[serde(default)]
    pub auth: AuthScheme,
    /// Request headers passed along to the actor, by name (case-insensitive), as the envelope
    /// extensions `http.header.<lowercase name>`.
    #[serde(default)]
    pub headers: Vec<String>,
    /// How long to wait for the actor (`timeout_ms`); the gateway's `request_timeout_ms` when
    /// `None`.
    #[serde(default, rename = "timeout_ms", deserialize_with = "opt_millis")]
    pub timeout: Option<Duration>,
    /// A rate limit for this route, counted per API key, JWT subject or client address.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
}

impl RouteConfig {
    /// A public route calling `actor` with `message` and the documented defaults.
    pub fn actor(method: &str, path: &str, actor: &str, message: &str) -> Self {
        Self {
            method: method.to_owned(),
            path: path.to_owned(),
            actor: Some(actor.to_owned()),
            subject: None,
            message: Some(message.to_owned()),
            auth: AuthScheme::None,
            headers: Vec::new(),
            timeout: None,
            rate_limit: None,
        }
    }

    /// A public route publishing `message` to `subject` and the documented defaults.
    pub fn subject(method: &str, path: &str, subject: &str, message: &str) -> Self {
        Self {
            actor: None,
            subject: Some(subject.to_owned()),
            ..Self::actor(method, path, "", message)
        }
    }

    /// The same route with another authentication scheme.
    pub fn with_auth(mut self, auth: AuthScheme) -> Self {
        self.auth = auth;
        self
    }

    /// The same route with a rate limit.
    pub fn with_rate_limit(mut self, limit: RateLimitConfig) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    /// `METHOD /path`: how metrics and errors name the route.
    pub fn label(&self) -> String {
        format!("{} {}", self.method.to_ascii_uppercase(), self.path)
    }
}

/// How a route authenticates its callers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuthScheme {
    /// Anyone may call the route; the actor sees no principal.
    #[default]
    None,
    /// An API key from `[[gateway.api_key]]`, in the header `x-api-key` or as
    /// `Authorization: ApiKey <key>`.
    ApiKey,
    /// A JWT bearer token (`Authorization: Bearer <token>`) verified with a key from
    /// `[[gateway.jwt]]`.
    Jwt,
}

impl AuthScheme {
    /// The scheme's name as the manifest writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::ApiKey => "api_key",
            Self::Jwt => "jwt",
        }
    }
}

impl fmt::Display for AuthScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for AuthScheme {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Self::None),
            "api_key" => Ok(Self::ApiKey),
            "jwt" => Ok(Self::Jwt),
            other => Err(format!(
                "unknown auth scheme `{other}`: use \"none\", \"api_key\" or \"jwt\""
            )),
        }
    }
}

/// Cross-origin resource sharing (`[gateway.cors]`): which browser origins may call the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct CorsConfig {
    /// Origins allowed to call, such as `https://app.example`; `["*"]` allows any.
    pub allow_origins: Vec<String>,
    /// Methods a cross-origin request may use (default `GET`, `POST`); `["*"]` allows any.
    pub allow_methods: Vec<String>,
    /// Request headers a cross-origin request may send (default `authorization`,
    /// `content-type`); `["*"]` allows any.
    pub allow_headers: Vec<String>,
    /// Response headers the browser may show to the calling script (default none).
    pub expose_headers: Vec<String>,
    /// How long a browser may cache a preflight answer (`max_age_s`, default 600 s).
    #[serde(rename = "max_age_s", deserialize_with = "seconds")]
    pub max_age: Duration,
    /// Whether cross-origin requests may carry credentials (cookies); not with `"*"` lists.
    pub allow_credentials: bool,
}

impl Default for CorsConfig {
    fn default() -> Self {
        Self {
            allow_origins: Vec::new(),
            allow_methods: vec!["GET".into(), "POST".into()],
            allow_headers: vec!["authorization".into(), "content-type".into()],
            expose_headers: Vec::new(),
            max_age: Duration::from_secs(600),
            allow_credentials: false,
        }
    }
}

/// One thing wrong with a [`GatewayConfig`]: the key (relative to the `[gateway]` table, such as
/// `route[1].path`) and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The key path, relative to the gateway table.
    pub key: String,
    /// What is wrong, and the fix.
    pub reason: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gateway.{}: {}", self.key, self.reason)
    }
}

// ---------------------------------------------------------------------------------------------
// Templates: `/users/{id}`, `account/{id}`, `orders.{id}.created`.

/// A piece of a target template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Part {
    Literal(String),
    Param(String),
}

/// An actor name or a subject with `{param}` placeholders, filled from the path's parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Splits `text` into literals and `{name}` parameters.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find(['{', '}']) {
            if rest.as_bytes()[open] == b'}' {
                return Err(format!("`{text}` has a `}}` without its `{{`"));
            }
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_owned()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("`{text}` has a `{{` without its `}}`"))?;
            let name = &after[..close];
            check_param_name(name, text)?;
            parts.push(Part::Param(name.to_owned()));
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        Ok(Self { parts })
    }

    /// The parameters it uses.
    pub(crate) fn params(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Param(name) => Some(name.as_str()),
            Part::Literal(_) => None,
        })
    }

    /// Whether it has no parameters.
    pub(crate) fn is_literal(&self) -> bool {
        self.params().next().is_none()
    }

    /// The text with each parameter replaced by `value(name)`.
    pub(crate) fn fill<'a>(&self, mut value: impl FnMut(&str) -> &'a str) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Param(name) => out.push_str(value(name)),
            }
        }
        out
    }
}

fn check_param_name(name: &str, text: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{{{name}}}` in `{text}` is not a parameter: write `{{name}}` with letters, digits and `_`"
        ))
    }
}

/// A checked path pattern: its parameters, and its shape for conflict detection
/// (`/users/{}` for `/users/{id}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PathPattern {
    pub params: Vec<String>,
    pub shape: String,
}

/// Checks a route path: starts with `/`, no empty segments, each segment literal or a whole
/// `{param}`, `{*rest}` only last, parameter names unique, not a reserved path.
pub(crate) fn parse_path(path: &str) -> Result<PathPattern, String> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(format!("`{path}` does not start with `/`"));
    };
    if RESERVED_PATHS.contains(&path) {
        return Err(format!(
            "`{path}` is answered by the gateway itself ({}): choose another path",
            RESERVED_PATHS.join(", ")
        ));
    }
    let mut params: Vec<String> = Vec::new();
    let mut shape = String::new();
    if rest.is_empty() {
        return Ok(PathPattern {
            params,
            shape: "/".into(),
        });
    }
    let segments: Vec<&str> = rest.split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        shape.push('/');
        if segment.is_empty() {
            return Err(format!(
                "`{path}` has an empty segment (a doubled or trailing `/`)"
            ));
        }
        if let Some(inner) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            let (name, wildcard) = match inner.strip_prefix('*') {
                Some(name) => (name, true),
                None => (inner, false),
            };
            check_param_name(name, path)?;
            if wildcard && i + 1 != segments.len() {
                return Err(format!(
                    "`{{*{name}}}` in `{path}` matches the rest of the path, so it must be the last segment"
                ));
            }
            if params.iter().any(|p| p == name) {
                return Err(format!("`{path}` uses the parameter `{name}` twice"));
            }
            params.push(name.to_owned());
            shape.push_str(if wildcard { "{*}" } else { "{}" });
        } else if segment.contains(['{', '}']) {
            return Err(format!(
                "segment `{segment}` of `{path}` mixes text and a parameter: a parameter is a whole segment, such as `/users/{{id}}`"
            ));
        } else {
            shape.push_str(segment);
        }
    }
    Ok(PathPattern { params, shape })
}

/// A checked actor target: the actor (or virtual actor type) name and the template of the
/// address.
pub(crate) fn parse_actor(actor: &str, params: &[String]) -> Result<(String, Template), String> {
    let (name, key) = match actor.split_once('/') {
        Some((name, key)) => (name, Some(key)),
        None => (actor, None),
    };
    if name.contains(['{', '}']) {
        return Err(format!(
            "`{actor}`: the actor's name cannot be a parameter, only a virtual actor's key (`TYPE/{{param}}`)"
        ));
    }
    crate::manifest::validate_actor_name(name).map_err(|e| format!("`{actor}`: {e}"))?;
    let template = Template::parse(actor)?;
    if let Some(key) = key {
        let key_template = Template::parse(key)?;
        if key_template.parts.is_empty() {
            return Err(format!(
                "`{actor}` has an empty key: write `{name}/{{param}}`"
            ));
        }
        let sample = key_template.fill(|_| "x");
        crate::activation::validate_key(&sample).map_err(|e| format!("`{actor}`: {e}"))?;
    }
    unknown_params(&template, params)?;
    Ok((name.to_owned(), template))
}

/// A checked subject target.
pub(crate) fn parse_subject(subject: &str, params: &[String]) -> Result<Template, String> {
    let template = Template::parse(subject)?;
    let sample = template.fill(|_| "x");
    crate::subject::validate_subject(&sample).map_err(|e| format!("`{subject}`: {e}"))?;
    unknown_params(&template, params)?;
    Ok(template)
}

fn unknown_params(template: &Template, params: &[String]) -> Result<(), String> {
    match template.params().find(|p| !params.iter().any(|q| q == p)) {
        Some(p) => Err(format!(
            "`{{{p}}}` is not a parameter of the route's path{}",
            if params.is_empty() {
                String::new()
            } else {
                format!(" (it has {})", params.join(", "))
            }
        )),
        None => Ok(()),
    }
}

/// The subject pattern a subject template may publish to: each token holding a parameter
/// becomes `*`.
fn subject_grant(template: &Template) -> String {
    const MARK: &str = "\u{0}";
    template
        .fill(|_| MARK)
        .split('.')
        .map(|token| if token.contains(MARK) { "*" } else { token })
        .collect::<Vec<_>>()
        .join(".")
}

impl GatewayConfig {
    /// Checks the configuration: limits, routes, CORS, trusted proxies and the keys (a JWT key
    /// file that cannot be read is an error here). The first problem found is the error; see
    /// [`problems`](Self::problems) for all of them.
    pub fn validate(&self) -> Result<(), super::GatewayError> {
        if let Some(first) = self.problems().into_iter().next() {
            return Err(super::GatewayError::Config {
                key: first.key,
                reason: first.reason,
            });
        }
        super::auth::Authenticator::new(&self.api_keys, &self.jwt_keys)
            .map(drop)
            .map_err(super::GatewayError::Keys)
    }

    /// Every problem of the configuration except the keys' own (which
    /// [`validate`](Self::validate) reports), in key order.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        let mut problem = |key: String, reason: String| out.push(ConfigProblem { key, reason });
        for (key, value) in [
            ("max_body_bytes", self.max_body_bytes),
            ("max_header_bytes", self.max_header_bytes),
            ("max_headers", self.max_headers),
            ("max_connections", self.max_connections),
        ] {
            if value == 0 {
                problem(key.into(), "must be at least 1".into());
            }
        }
        if self.max_header_bytes > 0 && self.max_header_bytes < 1024 {
            problem(
                "max_header_bytes".into(),
                format!(
                    "{} bytes cannot hold an ordinary request's headers: use at least 1024",
                    self.max_header_bytes
                ),
            );
        }
        for (key, value) in [
            ("header_timeout_ms", self.header_timeout),
            ("body_timeout_ms", self.body_timeout),
            ("request_timeout_ms", self.request_timeout),
        ] {
            if value.is_zero() {
                problem(key.into(), "must be at least 1".into());
            }
        }
        if let Err(e) = super::limit::TrustedProxies::parse(&self.trusted_proxies) {
            problem("trusted_proxies".into(), e.to_string());
        }
        if let Some(grants) = &self.grants {
            for (i, name) in grants.send.iter().enumerate() {
                if name != ANY_ACTOR
                    && let Err(e) = crate::manifest::validate_actor_name(name)
                {
                    problem(
                        format!("grants.send[{i}]"),
                        format!("`{name}` is neither an actor name nor \"*\": {e}"),
                    );
                }
            }
        }
        if let Some(cors) = &self.cors {
            cors_problems(cors, &mut problem);
        }

        let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
        let mut shapes: BTreeMap<String, (String, usize)> = BTreeMap::new();
        for (i, route) in self.routes.iter().enumerate() {
            let key = |k: &str| format!("route[{i}].{k}");
            let method = route.method.to_ascii_uppercase();
            if !METHODS.contains(&method.as_str()) {
                problem(
                    key("method"),
                    format!(
                        "`{}` is not a method routes can use: use one of {}",
                        route.method,
                        METHODS.join(", ")
                    ),
                );
            }
            let path = match parse_path(&route.path) {
                Ok(p) => p,
                Err(e) => {
                    problem(key("path"), e);
                    continue;
                }
            };
            // Two templates of one shape with other parameter names cannot be told apart.
            match shapes.get(&path.shape) {
                Some((other, _)) if *other != route.path => problem(
                    key("path"),
                    format!(
                        "`{}` matches the same requests as `{other}`: use one parameter name per position",
                        route.path
                    ),
                ),
                Some(_) => {}
                None => {
                    shapes.insert(path.shape.clone(), (route.path.clone(), i));
                }
            }
            if let Some(first) = seen.insert((method.clone(), route.path.clone()), i) {
                problem(
                    key("path"),
                    format!("`{method} {}` is already route[{first}]", route.path),
                );
            }
            match (&route.actor, &route.subject) {
                (None, None) => problem(
                    format!("route[{i}]"),
                    "the route names neither an `actor` nor a `subject`: add one".into(),
                ),
                (Some(_), Some(_)) => problem(
                    format!("route[{i}]"),
                    "the route names both an `actor` and a `subject`: a route calls an actor or publishes, not both".into(),
                ),
                (Some(actor), None) => {
                    if let Err(e) = parse_actor(actor, &path.params) {
                        problem(key("actor"), e);
                    }
                }
                (None, Some(subject)) => {
                    if let Err(e) = parse_subject(subject, &path.params) {
                        problem(key("subject"), e);
                    }
                    if route.message.is_none() {
                        problem(
                            key("message"),
                            "a route to a subject needs `message`, the message type's wire name"
                                .into(),
                        );
                    }
                }
            }
            if route.message.as_deref() == Some("") {
                problem(key("message"), "must not be empty".into());
            }
            for (j, name) in route.headers.iter().enumerate() {
                if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    problem(
                        format!("route[{i}].headers[{j}]"),
                        format!("`{name}` is not a header name"),
                    );
                }
            }
            if route.timeout.is_some_and(|t| t.is_zero()) {
                problem(
                    key("timeout_ms"),
                    "must be at least 1 (leave it out for the gateway's request_timeout_ms)".into(),
                );
            }
            if route.auth == AuthScheme::ApiKey && self.api_keys.is_empty() {
                problem(
                    key("auth"),
                    "`api_key` needs at least one [[gateway.api_key]]".into(),
                );
            }
            if route.auth == AuthScheme::Jwt && self.jwt_keys.is_empty() {
                problem(
                    key("auth"),
                    "`jwt` needs at least one [[gateway.jwt]]".into(),
                );
            }
            if let Some(limit) = &route.rate_limit {
                if let Err(e) = limit.validate() {
                    problem(key("rate_limit"), e.to_string());
                }
                if limit.key != LimitKey::Ip && route.auth == AuthScheme::None {
                    let by = match limit.key {
                        LimitKey::ApiKey => "API key",
                        _ => "subject",
                    };
                    problem(
                        key("rate_limit.key"),
                        format!(
                            "a limit per {by} needs an authenticated route (auth = \"api_key\" or \"jwt\"), or key = \"ip\""
                        ),
                    );
                }
            }
            if let Some(grants) = &self.grants {
                grant_problems(grants, route, i, &mut problem);
            }
        }
        out
    }

    /// What the gateway principal may reach: [`grants`](Self::grants), or when `None`, exactly
    /// the routes' actors (virtual actor types by type) and subjects (a token holding a
    /// parameter becomes `*`).
    pub fn effective_grants(&self) -> Grants {
        if let Some(grants) = &self.grants {
            return grants.clone();
        }
        let mut grants = Grants::none();
        let mut send = BTreeSet::new();
        let mut publish = BTreeSet::new();
        for route in &self.routes {
            if let Some(actor) = &route.actor {
                send.insert(actor.split('/').next().unwrap_or(actor).to_owned());
            }
            if let Some(subject) = &route.subject
                && let Ok(template) = Template::parse(subject)
            {
                publish.insert(subject_grant(&template));
            }
        }
        grants.send = send.into_iter().collect();
        grants.publish = publish
            .iter()
            .filter_map(|p| Pattern::parse(p).ok())
            .collect();
        grants
    }
}

/// A route whose target the written-out grants do not cover.
fn grant_problems(
    grants: &Grants,
    route: &RouteConfig,
    i: usize,
    problem: &mut impl FnMut(String, String),
) {
    if let Some(actor) = &route.actor {
        let name = actor.split('/').next().unwrap_or(actor);
        if !grants.may_send(name) {
            problem(
                format!("route[{i}].actor"),
                format!(
                    "the gateway's grants do not allow calling `{name}`: add \"{name}\" to gateway.grants.send"
                ),
            );
        }
    }
    if let Some(subject) = &route.subject
        && let Ok(template) = Template::parse(subject)
    {
        let sample = template.fill(|_| "x");
        if template.is_literal() && !grants.may_publish(&sample) {
            problem(
                format!("route[{i}].subject"),
                format!(
                    "the gateway's grants do not allow publishing to `{subject}`: add a pattern matching it to gateway.grants.publish"
                ),
            );
        }
    }
}

fn cors_problems(cors: &CorsConfig, problem: &mut impl FnMut(String, String)) {
    if cors.allow_origins.is_empty() {
        problem(
            "cors.allow_origins".into(),
            "lists no origin: name the origins browsers may call from, such as \"https://app.example\", or \"*\"".into(),
        );
    }
    let star = |list: &[String]| list.iter().any(|v| v == "*");
    for (i, origin) in cors.allow_origins.iter().enumerate() {
        if origin != "*" && http::HeaderValue::from_str(origin).is_err() {
            problem(
                format!("cors.allow_origins[{i}]"),
                format!("`{origin}` is not an origin"),
            );
        }
    }
    for (i, method) in cors.allow_methods.iter().enumerate() {
        if method != "*" && http::Method::from_bytes(method.as_bytes()).is_err() {
            problem(
                format!("cors.allow_methods[{i}]"),
                format!("`{method}` is not a method"),
            );
        }
    }
    for (list, name) in [
        (&cors.allow_headers, "allow_headers"),
        (&cors.expose_headers, "expose_headers"),
    ] {
        for (i, header) in list.iter().enumerate() {
            if header != "*" && http::HeaderName::from_bytes(header.as_bytes()).is_err() {
                problem(
                    format!("cors.{name}[{i}]"),
                    format!("`{header}` is not a header name"),
                );
            }
        }
    }
    if cors.allow_credentials
        && (star(&cors.allow_origins)
            || star(&cors.allow_methods)
            || star(&cors.allow_headers)
            || star(&cors.expose_headers))
    {
        problem(
            "cors.allow_credentials".into(),
            "browsers refuse credentials with a \"*\" list: name the origins, methods and headers"
                .into(),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Serde helpers: sizes, milliseconds, grants.

fn size<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    struct V;
    impl de::Visitor<'_> for V {
        type Value = usize;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(r#"a size in bytes, or a string like "64KiB" or "1MiB""#)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<usize, E> {
            usize::try_from(v).map_err(|_| E::custom(format!("a size cannot be negative ({v})")))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<usize, E> {
            usize::try_from(v).map_err(|_| E::custom(format!("{v} is too large")))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<usize, E> {
            let n = crate::manifest::parse_size(v).map_err(E::custom)?;
            usize::try_from(n).map_err(|_| E::custom(format!("`{v}` is too large")))
        }
    }
    d.deserialize_any(V)
}

fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_millis)
}

fn opt_millis<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    u64::deserialize(d).map(|ms| Some(Duration::from_millis(ms)))
}

fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_secs)
}

/// `grants = { send = [..], publish = [..] }`: a principal runs no code, so only these two.
#[derive(Deserialize)]
pub(crate) struct RawGrants {
    #[serde(default)]
    send: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
}

fn grants<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Grants>, D::Error> {
    let raw = RawGrants::deserialize(d)?;
    let publish = raw
        .publish
        .iter()
        .map(|p| {
            Pattern::parse(p)
                .map_err(|e| de::Error::custom(format!("`{p}` is not a subject pattern: {e}")))
        })
        .collect::<Result<Vec<_>, D::Error>>()?;
    Ok(Some(Grants {
        send: raw.send,
        publish,
        ..Grants::none()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> GatewayConfig {
        toml::from_str(text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn route_config(route: &str) -> GatewayConfig {
        config(&format!("[[route]]\nmethod = \"GET\"\n{route}\n"))
    }

    fn problems(config: &GatewayConfig) -> Vec<String> {
        config.problems().iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn an_empty_table_gets_every_default() {
        let c = config("");
        assert_eq!(c, GatewayConfig::default());
        assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.max_body_bytes, 1_048_576);
        assert_eq!(c.max_header_bytes, 16_384);
        assert_eq!(c.max_headers, 64);
        assert_eq!(c.max_connections, 1024);
        assert_eq!(c.header_timeout, Duration::from_millis(5000));
        assert_eq!(c.body_timeout, Duration::from_millis(10_000));
        assert_eq!(c.request_timeout, Duration::from_millis(10_000));
        assert!(c.trusted_proxies.is_empty() && c.routes.is_empty());
        assert_eq!(c.grants, None);
        assert_eq!(c.cors, None);
        assert!(problems(&c).is_empty());
    }

    #[test]
    fn every_key_is_read() {
        let c = config(
            r#"
            listen = "0.0.0.0:0"
            max_body_bytes = "64KiB"
            max_header_bytes = 8192
            max_headers = 10
            max_connections = 7
            header_timeout_ms = 1
            body_timeout_ms = 2
            request_timeout_ms = 3
            trusted_proxies = ["10.0.0.0/8"]
            grants = { send = ["users"], publish = ["orders.>"] }
            [cors]
            allow_origins = ["https://app.example"]
            allow_methods = ["GET"]
            allow_headers = ["x-api-key"]
            expose_headers = ["x-request-id"]
            max_age_s = 60
            allow_credentials = true
            [[route]]
            method = "get"
            path = "/users/{id}"
            actor = "users"
            message = "GetUser"
            auth = "jwt"
            headers = ["X-Request-Id"]
            timeout_ms = 250
            "#,
        );
        assert_eq!(c.listen, "0.0.0.0:0".parse().unwrap());
        assert_eq!(c.max_body_bytes, 65536);
        assert_eq!(c.max_header_bytes, 8192);
        assert_eq!(c.max_headers, 10);
        assert_eq!(c.max_connections, 7);
        assert_eq!(
            (c.header_timeout, c.body_timeout, c.request_timeout),
            (
                Duration::from_millis(1),
                Duration::from_millis(2),
                Duration::from_millis(3)
            )
        );
        assert_eq!(c.trusted_proxies, ["10.0.0.0/8"]);
        let grants = c.grants.as_ref().unwrap();
        assert!(grants.may_send("users") && !grants.may_send("orders"));
        assert!(grants.may_publish("orders.eu") && !grants.may_publish("users.x"));
        let cors = c.cors.as_ref().unwrap();
        assert_eq!(cors.allow_origins, ["https://app.example"]);
        assert_eq!(cors.max_age, Duration::from_secs(60));
        assert!(cors.allow_credentials);
        let r = &c.routes[0];
        assert_eq!(r.label(), "GET /users/{id}");
        assert_eq!(r.auth, AuthScheme::Jwt);
        assert_eq!(r.headers, ["X-Request-Id"]);
        assert_eq!(r.timeout, Some(Duration::from_millis(250)));
        // A JWT route without keys is the one problem.
        assert_eq!(
            problems(&c),
            ["gateway.route[0].auth: `jwt` needs at least one [[gateway.jwt]]"]
        );
    }

    #[test]
    fn an_unknown_auth_scheme_is_named() {
        let e = toml::from_str::<GatewayConfig>(
            "[[route]]\nmethod = \"GET\"\npath = \"/\"\nactor = \"a\"\nauth = \"basic\"\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown variant `basic`"), "{e}");
        assert_eq!(
            "basic".parse::<AuthScheme>().unwrap_err(),
            "unknown auth scheme `basic`: use \"none\", \"api_key\" or \"jwt\""
        );
    }

    #[test]
    fn route_paths_are_checked() {
        let cases = [
            ("users", "`users` does not start with `/`"),
            (
                "/a//b",
                "`/a//b` has an empty segment (a doubled or trailing `/`)",
            ),
            (
                "/a/",
                "`/a/` has an empty segment (a doubled or trailing `/`)",
            ),
            (
                "/a/x{id}",
                "segment `x{id}` of `/a/x{id}` mixes text and a parameter: a parameter is a whole segment, such as `/users/{id}`",
            ),
            (
                "/a/{1d}",
                "`{1d}` in `/a/{1d}` is not a parameter: write `{name}` with letters, digits and `_`",
            ),
            (
                "/a/{id}/{id}",
                "`/a/{id}/{id}` uses the parameter `id` twice",
            ),
            (
                "/a/{*rest}/b",
                "`{*rest}` in `/a/{*rest}/b` matches the rest of the path, so it must be the last segment",
            ),
            (
                "/metrics",
                "`/metrics` is answered by the gateway itself (/healthz, /readyz, /metrics): choose another path",
            ),
        ];
        for (path, why) in cases {
            let c = route_config(&format!("path = \"{path}\"\nactor = \"a\""));
            assert_eq!(
                problems(&c),
                [format!("gateway.route[0].path: {why}")],
                "{path}"
            );
        }
        for path in ["/", "/a", "/a/{id}", "/a/{id}/b/{c_2}", "/files/{*rest}"] {
            let c = route_config(&format!("path = \"{path}\"\nactor = \"a\""));
            assert!(problems(&c).is_empty(), "{path}: {:?}", problems(&c));
        }
    }

    #[test]
    fn targets_are_checked() {
        let cases = [
            (
                "path = \"/a\"",
                "gateway.route[0]: the route names neither an `actor` nor a `subject`: add one",
            ),
            (
                "path = \"/a\"\nactor = \"a\"\nsubject = \"s\"\nmessage = \"M\"",
                "gateway.route[0]: the route names both an `actor` and a `subject`: a route calls an actor or publishes, not both",
            ),
            (
                "path = \"/a\"\nactor = \"Users\"",
                "gateway.route[0].actor: `Users`: `U` is not allowed; use lowercase letters, digits, `-` and `_` (write `users`)",
            ),
            (
                "path = \"/a\"\nactor = \"{id}\"",
                "gateway.route[0].actor: `{id}`: the actor's name cannot be a parameter, only a virtual actor's key (`TYPE/{param}`)",
            ),
            (
                "path = \"/a/{id}\"\nactor = \"account/{key}\"",
                "gateway.route[0].actor: `{key}` is not a parameter of the route's path (it has id)",
            ),
            (
                "path = \"/a\"\nsubject = \"orders.*\"\nmessage = \"M\"",
                "gateway.route[0].subject: `orders.*`: subject `orders.*` contains a wildcard; publish to a concrete subject",
            ),
            (
                "path = \"/a\"\nsubject = \"orders\"",
                "gateway.route[0].message: a route to a subject needs `message`, the message type's wire name",
            ),
            (
                "path = \"/a\"\nactor = \"a\"\nheaders = [\"bad header\"]",
                "gateway.route[0].headers[0]: `bad header` is not a header name",
            ),
            (
                "path = \"/a\"\nactor = \"a\"\ntimeout_ms = 0",
                "gateway.route[0].timeout_ms: must be at least 1 (leave it out for the gateway's request_timeout_ms)",
            ),
            (
                "path = \"/a\"\nactor = \"a\"\nauth = \"api_key\"",
                "gateway.route[0].auth: `api_key` needs at least one [[gateway.api_key]]",
            ),
        ];
        for (route, why) in cases {
            let c = route_config(route);
            assert_eq!(problems(&c), [why.to_owned()], "{route}");
        }
        let c = route_config("path = \"/accounts/{id}\"\nactor = \"account/{id}\"");
        assert!(problems(&c).is_empty(), "{:?}", problems(&c));
        let c = route_config(
            "path = \"/orders/{id}\"\nsubject = \"orders.{id}.created\"\nmessage = \"Created\"",
        );
        assert!(problems(&c).is_empty(), "{:?}", problems(&c));
    }

    #[test]
    fn duplicate_and_conflicting_routes_are_refused() {
        let c = config(
            r#"
            [[route]]
            method = "GET"
            path = "/users/{id}"
            actor = "users"
            [[route]]
            method = "GET"
            path = "/users/{id}"
            actor = "users"
            [[route]]
            method = "POST"
            path = "/users/{name}"
            actor = "users"
            [[route]]
            method = "POST"
            path = "/users/me"
            actor = "users"
            [[route]]
            method = "TRACE"
            path = "/t"
            actor = "users"
            "#,
        );
        assert_eq!(
            problems(&c),
            [
                "gateway.route[1].path: `GET /users/{id}` is already route[0]",
                "gateway.route[2].path: `/users/{name}` matches the same requests as `/users/{id}`: use one parameter name per position",
                "gateway.route[4].method: `TRACE` is not a method routes can use: use one of GET, POST, PUT, PATCH, DELETE",
            ]
        );
    }

    #[test]
    fn written_out_grants_must_cover_the_routes() {
        let c = config(
            r#"
            grants = { send = ["users"], publish = ["orders.>"] }
            [[route]]
            method = "GET"
            path = "/a"
            actor = "admin"
            [[route]]
            method = "GET"
            path = "/u/{id}"
            actor = "users"
            [[route]]
            method = "POST"
            path = "/p"
            subject = "audit.log"
            message = "Log"
            "#,
        );
        assert_eq!(
            problems(&c),
            [
                "gateway.route[0].actor: the gateway's grants do not allow calling `admin`: add \"admin\" to gateway.grants.send",
                "gateway.route[2].subject: the gateway's grants do not allow publishing to `audit.log`: add a pattern matching it to gateway.grants.publish",
            ]
        );
    }

    #[test]
    fn without_grants_the_gateway_may_reach_what_its_routes_name() {
        let c = config(
            r#"
            [[route]]
            method = "GET"
            path = "/u/{id}"
            actor = "users"
            [[route]]
            method = "GET"
            path = "/a/{id}"
            actor = "account/{id}"
            [[route]]
            method = "POST"
            path = "/o/{id}"
            subject = "orders.{id}.created"
            message = "Created"
            "#,
        );
        let g = c.effective_grants();
        assert!(g.may_send("users") && g.may_send("account/alice"));
        assert!(!g.may_send("admin"));
        assert!(g.may_publish("orders.7.created") && !g.may_publish("orders.7.deleted"));
    }

    #[test]
    fn rate_limits_need_the_identity_they_count_by() {
        let c = route_config(
            "path = \"/a\"\nactor = \"a\"\nrate_limit = { per_second = 1, burst = 1, key = \"api_key\" }",
        );
        assert_eq!(
            problems(&c),
            [
                "gateway.route[0].rate_limit.key: a limit per API key needs an authenticated route (auth = \"api_key\" or \"jwt\"), or key = \"ip\""
            ]
        );
        let c = route_config(
            "path = \"/a\"\nactor = \"a\"\nrate_limit = { per_second = 1, burst = 2, key = \"ip\" }",
        );
        assert!(problems(&c).is_empty(), "{:?}", problems(&c));
    }

    #[test]
    fn limits_timeouts_and_cors_are_checked() {
        let c = config(
            r#"
            max_body_bytes = 0
            max_header_bytes = 100
            max_connections = 0
            header_timeout_ms = 0
            trusted_proxies = ["not an address"]
            [cors]
            allow_origins = ["*"]
            allow_credentials = true
            "#,
        );
        let found = problems(&c);
        assert_eq!(found[0], "gateway.max_body_bytes: must be at least 1");
        assert_eq!(found[1], "gateway.max_connections: must be at least 1");
        assert_eq!(
            found[2],
            "gateway.max_header_bytes: 100 bytes cannot hold an ordinary request's headers: use at least 1024"
        );
        assert_eq!(found[3], "gateway.header_timeout_ms: must be at least 1");
        assert!(
            found[4].starts_with("gateway.trusted_proxies: "),
            "{found:?}"
        );
        assert_eq!(
            found[5],
            "gateway.cors.allow_credentials: browsers refuse credentials with a \"*\" list: name the origins, methods and headers"
        );
        assert_eq!(found.len(), 6);
    }

    #[test]
    fn templates_fill_parameters() {
        let t = Template::parse("orders.{id}.by-{who}").unwrap();
        assert_eq!(t.params().collect::<Vec<_>>(), ["id", "who"]);
        let filled = t.fill(|p| if p == "id" { "7" } else { "ann" });
        assert_eq!(filled, "orders.7.by-ann");
        assert_eq!(subject_grant(&t), "orders.*.*");
        assert!(Template::parse("a{").is_err() && Template::parse("a}").is_err());
        assert!(Template::parse("plain").unwrap().is_literal());
    }
}
