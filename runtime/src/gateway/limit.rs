//! How often a caller may call: per-key rate limits and the client address behind proxies.
//!
//! After authentication (see [`super::auth`]) the gateway charges each request to a key chosen
//! by the route's [`RateLimitConfig::key`]: the [`Identity::key_id`](super::auth::Identity)
//! ([`LimitKey::ApiKey`]: the API key's id, or for JWTs the signing key's kid), the
//! [`Identity::subject`](super::auth::Identity) ([`LimitKey::Subject`]), or the client's IP
//! address ([`LimitKey::Ip`]), which [`TrustedProxies::client_ip`] finds behind load
//! balancers. [`RateLimiter::check`] answers `Ok` or the time to wait, which the gateway sends
//! as `429 Too Many Requests` with `Retry-After` ([`retry_after_secs`]).
//!
//! # Rate limits
//!
//! [`RateLimiter`] is governor's keyed GCRA limiter: each key has a bucket of `burst` requests
//! that refills at `per_second`, so a client may send `burst` requests at once and then
//! `per_second` per second on average.
//!
//! Its memory is bounded two ways:
//!
//! - [`RateLimiter::prune`] drops every key whose bucket is full again, which is exactly the
//!   state a new key starts in, so pruning never changes a decision. A key is full again once
//!   it has been idle for the burst refill time (`burst / per_second`) plus one replenish
//!   interval. The gateway calls `prune` periodically (every few seconds to a minute).
//! - At most [`DEFAULT_MAX_KEYS`] keys are tracked (see [`RateLimiter::with_max_keys`]). When
//!   a request brings a new key to a full limiter, the limiter prunes (at most once per second,
//!   or per refill time if shorter), and if that frees no room the request is refused with the
//!   refill time as its retry-after. Keys already tracked are served as usual, so a flood of
//!   new addresses cannot lock out known clients, only other new ones, until idle keys expire.
//!   Concurrent requests may overshoot the cap by the number of threads.
//!
//! # Client addresses
//!
//! Behind a reverse proxy, the TCP peer is the proxy and the client is in `X-Forwarded-For`,
//! where each proxy appends the address it received the connection from. Any client can write
//! that header, so it is read only when the peer is a configured trusted proxy, and then only
//! from the right: entries that trusted proxies appended are skipped, and the first untrusted
//! entry is the client. Entries to its left were written by the client and are ignored.
//! The `Forwarded` header (RFC 7239) is not read.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use axum::http::header::HeaderName;
use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};
use governor::{Quota, RateLimiter as GcraLimiter};
use serde::Deserialize;

/// The most keys a [`RateLimiter`] tracks unless told otherwise.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// The highest accepted [`RateLimitConfig::per_second`].
pub const MAX_PER_SECOND: u32 = 1_000_000;

/// The header proxies append client addresses to.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// What a rate limit counts requests by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKey {
    /// The credential: [`Identity::key_id`](super::auth::Identity) (an API key's id, or a JWT
    /// signing key's kid, shared by every token that key signs).
    ApiKey,
    /// The principal: [`Identity::subject`](super::auth::Identity).
    Subject,
    /// The client's IP address, as [`TrustedProxies::client_ip`] determines it.
    Ip,
}

/// One rate limit, as written in the gateway configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained requests per second per key: 1 to [`MAX_PER_SECOND`].
    pub per_second: u32,
    /// Requests a key may send at once (the bucket size): at least 1.
    pub burst: u32,
    /// What requests are counted by.
    pub key: LimitKey,
}

impl RateLimitConfig {
    /// Checks the numbers; [`RateLimiter::new`] calls this too, so a configuration loader can
    /// report a bad limit before building anything.
    pub fn validate(&self) -> Result<(), LimitError> {
        if self.per_second == 0 {
            return Err(LimitError::ZeroRate);
        }
        if self.per_second > MAX_PER_SECOND {
            return Err(LimitError::RateTooHigh {
                per_second: self.per_second,
                max: MAX_PER_SECOND,
            });
        }
        if self.burst == 0 {
            return Err(LimitError::ZeroBurst);
        }
        Ok(())
    }

    /// The time an empty bucket takes to fill up again: `burst / per_second`.
    pub fn refill_time(&self) -> Duration {
        Duration::from_secs(1) * self.burst / self.per_second.max(1)
    }
}

/// Why a rate limit or a trusted-proxy list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitError {
    /// `per_second` is zero.
    #[error("rate limit `per_second` must be at least 1 (to block a route, do not expose it)")]
    ZeroRate,
    /// `per_second` is above [`MAX_PER_SECOND`].
    #[error("rate limit `per_second` = {per_second} is above the maximum of {max}")]
    RateTooHigh {
        /// The configured rate.
        per_second: u32,
        /// The maximum.
        max: u32,
    },
    /// `burst` is zero.
    #[error("rate limit `burst` must be at least 1")]
    ZeroBurst,
    /// A trusted proxy entry is not a CIDR.
    #[error("trusted proxy `{cidr}` is not a valid CIDR: {reason}")]
    InvalidCidr {
        /// The entry as written.
        cidr: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Rounds a retry-after up to whole seconds for the `Retry-After` header (at least 1).
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

/// governor's DashMap store, shared so the limiter can ask whether a key is already tracked.
struct SharedStore(Arc<DashMapStateStore<String>>);

impl StateStore for SharedStore {
    type Key = String;

    fn measure_and_replace<T, F, E>(&self, key: &String, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        self.0.measure_and_replace(key, f)
    }
}

impl ShrinkableKeyedStateStore<String> for SharedStore {
    fn retain_recent(&self, drop_below: Nanos) {
        ShrinkableKeyedStateStore::retain_recent(&*self.0, drop_below);
    }

    fn shrink_to_fit(&self) {
        ShrinkableKeyedStateStore::shrink_to_fit(&*self.0);
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A keyed GCRA rate limiter with bounded memory (see the [module documentation](self)).
///
/// `C` is the clock: the real monotonic one by default; the gateway's routes use the host's
/// clock ([`HostClock`]), unit tests governor's `FakeRelativeClock` (both through
/// [`RateLimiter::with_clock`]).
pub struct RateLimiter<C: Clock = DefaultClock> {
    limiter: GcraLimiter<String, SharedStore, C, NoOpMiddleware<C::Instant>>,
    store: Arc<DashMapStateStore<String>>,
    max_keys: usize,
    refill: Duration,
    /// How often a full limiter may prune on its own.
    prune_every: Duration,
    /// When a full limiter last pruned on its own.
    last_forced_prune: Mutex<Option<C::Instant>>,
}

impl<C: Clock> std::fmt::Debug for RateLimiter<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("keys", &self.store.len())
            .field("max_keys", &self.max_keys)
            .field("refill", &self.refill)
            .finish_non_exhaustive()
    }
}

/// A host's [`Clock`](crate::clock::Clock) as governor reads time: its monotonic time, in
/// nanoseconds. The gateway's rate limits run on it, so a host on a manual clock (tests, later a
/// simulation with virtual time) drives its buckets' refill like every other wait.
#[derive(Clone)]
pub struct HostClock(pub Arc<dyn crate::clock::Clock>);

impl std::fmt::Debug for HostClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("HostClock").field(&self.0.now()).finish()
    }
}

impl Clock for HostClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(self.0.now())
    }
}

impl RateLimiter {
    /// A limiter for `config` on the real clock, tracking at most [`DEFAULT_MAX_KEYS`] keys.
    ///
    /// # Errors
    ///
    /// `config` fails [`RateLimitConfig::validate`].
    pub fn new(config: &RateLimitConfig) -> Result<Self, LimitError> {
        Self::with_clock(config, DefaultClock::default())
    }
}

impl<C: Clock> RateLimiter<C> {
    /// A limiter for `config` on the given clock.
    ///
    /// # Errors
    ///
    /// `config` fails [`RateLimitConfig::validate`].
    pub fn with_clock(config: &RateLimitConfig, clock: C) -> Result<Self, LimitError> {
        config.validate()?;
        let (Some(rate), Some(burst)) = (
            std::num::NonZeroU32::new(config.per_second),
            std::num::NonZeroU32::new(config.burst),
        ) else {
            unreachable!("validate() refuses zero rates and bursts");
        };
        let quota = Quota::per_second(rate).allow_burst(burst);
        let store = Arc::new(DashMapStateStore::<String>::default());
        let refill = config.refill_time();
        Ok(RateLimiter {
            limiter: GcraLimiter::new(quota, SharedStore(Arc::clone(&store)), clock),
            store,
            max_keys: DEFAULT_MAX_KEYS,
            refill,
            prune_every: refill.clamp(Duration::from_nanos(1), Duration::from_secs(1)),
            last_forced_prune: Mutex::new(None),
        })
    }

    /// Sets the most keys tracked at once (at least 1).
    pub fn with_max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys.max(1);
        self
    }

    /// The most keys tracked at once.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// Charges one request to `key`.
    ///
    /// # Errors
    ///
    /// The request is over the limit: the error is the time until a request under `key` would
    /// be allowed (never zero). A new key arriving while the limiter is full gets the refill
    /// time.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        if self.store.len() >= self.max_keys && !self.store.contains_key(key) {
            self.prune_when_full();
            if self.store.len() >= self.max_keys {
                return Err(self.refill.max(Duration::from_nanos(1)));
            }
        }
        match self.limiter.check_key(&key.to_owned()) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.limiter.clock().now());
                Err(wait.max(Duration::from_nanos(1)))
            }
        }
    }

    /// Drops every key whose bucket has refilled (indistinguishable from a new key) and
    /// releases the memory. The gateway calls this periodically.
    pub fn prune(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// How many keys are tracked.
    pub fn len(&self) -> usize {
        self.store.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }

    /// Prunes on behalf of a new key that found the limiter full, unless that happened less
    /// than `prune_every` ago or another thread is doing it now: under a flood of new keys,
    /// each would otherwise pay for a scan of the whole map.
    fn prune_when_full(&self) {
        let now = self.limiter.clock().now();
        let Ok(mut last) = self.last_forced_prune.try_lock() else {
            return;
        };
        let due = match *last {
            None => true,
            Some(then) => Duration::from(now.duration_since(then)) >= self.prune_every,
        };
        if due {
            *last = Some(now);
            drop(last);
            self.prune();
        }
    }
}

/// One CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    fn parse(text: &str) -> Result<Self, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{addr}` is not an IPv4 or IPv6 address"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().ok().filter(|&p| p <= max).ok_or_else(|| {
                    format!("the prefix length /{p} is longer than the address ({max} bits)")
                })?
            }
            Some(p) => return Err(format!("`/{p}` is not a prefix length")),
        };
        let cidr = Cidr { network, prefix };
        let masked = cidr.masked(network);
        if masked != network {
            return Err(format!(
                "it has host bits set: did you mean {masked}/{prefix}?"
            ));
        }
        Ok(cidr)
    }

    /// `ip` with the bits outside this block's prefix cleared.
    fn masked(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(v4) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
        }
    }

    fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.network.is_ipv4() && self.masked(ip) == self.network
    }
}

/// The proxies whose `X-Forwarded-For` entries the gateway believes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    blocks: Vec<Cidr>,
}

impl TrustedProxies {
    /// Parses CIDR blocks such as `"10.0.0.0/8"`, `"127.0.0.1/32"` or `"::1/128"`; a bare
    /// address means just that address. An empty list trusts no proxy.
    ///
    /// # Errors
    ///
    /// [`LimitError::InvalidCidr`] for an entry that is not an address, has a prefix longer
    /// than the address, or has bits set after the prefix (`10.1.2.3/8`), which usually means
    /// a typo.
    pub fn parse(cidrs: &[String]) -> Result<Self, LimitError> {
        let blocks = cidrs
            .iter()
            .map(|text| {
                Cidr::parse(text.trim()).map_err(|reason| LimitError::InvalidCidr {
                    cidr: text.clone(),
                    reason,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(TrustedProxies { blocks })
    }

    /// Whether `ip` is a trusted proxy. An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, as a
    /// dual-stack socket reports IPv4 peers) is matched as the IPv4 address.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.blocks.iter().any(|block| block.contains(ip))
    }

    /// The client's address for a connection from `peer`.
    ///
    /// - If `peer` is not a trusted proxy, its address is the client's: a client cannot spoof
    ///   its address by sending `X-Forwarded-For`.
    /// - If it is, `X-Forwarded-For` (all its lines, read as one list) is walked from the
    ///   right, skipping trusted proxies; the first untrusted entry is the client. If every
    ///   entry is trusted, the leftmost is the client. Without the header, the peer is.
    /// - A malformed entry (not an IP address, optionally with a port) ends the walk: the
    ///   result is the last address that could be vouched for, the entry to its right or the
    ///   peer, never anything to its left.
    ///
    /// The result is canonical: an IPv4-mapped IPv6 address comes back as IPv4.
    pub fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.ip().to_canonical();
        if !self.is_trusted(client) {
            return client;
        }
        for line in headers.get_all(X_FORWARDED_FOR).iter().rev() {
            let Ok(line) = line.to_str() else {
                return client;
            };
            for entry in line.rsplit(',') {
                let Some(ip) = parse_forwarded_entry(entry) else {
                    return client;
                };
                client = ip;
                if !self.is_trusted(ip) {
                    return client;
                }
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: an address, optionally with a port (`1.2.3.4:80`,
/// `[::1]:80`) or in brackets (`[::1]`).
fn parse_forwarded_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim_matches([' ', '\t']);
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(socket) = entry.parse::<SocketAddr>() {
        return Some(socket.ip().to_canonical());
    }
    let inner = entry.strip_prefix('[')?.strip_suffix(']')?;
    inner
        .parse::<Ipv6Addr>()
        .ok()
        .map(|ip| IpAddr::V6(ip).to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    use axum::http::HeaderValue;
    use governor::clock::FakeRelativeClock;

    fn config(per_second: u32, burst: u32) -> RateLimitConfig {
        RateLimitConfig {
            per_second,
            burst,
            key: LimitKey::Ip,
        }
    }

    fn limiter(per_second: u32, burst: u32) -> (RateLimiter<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        let limiter = RateLimiter::with_clock(&config(per_second, burst), clock.clone()).unwrap();
        (limiter, clock)
    }

    // --- Rate limits ---

    #[test]
    fn limiter_and_proxies_can_be_shared_across_tasks() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<RateLimiter>();
        assert_send_sync::<TrustedProxies>();
    }

    #[test]
    fn burst_allows_exactly_n_immediate_requests() {
        let (limiter, _clock) = limiter(2, 5);
        for i in 0..5 {
            assert_eq!(limiter.check("alice"), Ok(()), "request {i}");
        }
        let wait = limiter.check("alice").unwrap_err();
        assert!(wait > Duration::ZERO);
        // One request's worth of refill at 2 per second.
        assert_eq!(wait, Duration::from_millis(500));
    }

    #[test]
    fn refused_key_passes_again_after_the_retry_after() {
        let (limiter, clock) = limiter(2, 3);
        for _ in 0..3 {
            limiter.check("alice").unwrap();
        }
        let wait = limiter.check("alice").unwrap_err();
        clock.advance(wait - Duration::from_millis(1));
        assert!(limiter.check("alice").is_err());
        clock.advance(Duration::from_millis(1));
        assert_eq!(limiter.check("alice"), Ok(()));
        assert!(limiter.check("alice").is_err());
    }

    #[test]
    fn full_burst_is_restored_after_the_refill_time() {
        let (limiter, clock) = limiter(10, 5);
        for _ in 0..5 {
            limiter.check("alice").unwrap();
        }
        assert!(limiter.check("alice").is_err());
        clock.advance(config(10, 5).refill_time());
        for i in 0..5 {
            assert_eq!(limiter.check("alice"), Ok(()), "request {i}");
        }
        assert!(limiter.check("alice").is_err());
    }

    #[test]
    fn keys_are_limited_independently() {
        let (limiter, _clock) = limiter(1, 1);
        assert_eq!(limiter.check("alice"), Ok(()));
        assert!(limiter.check("alice").is_err());
        assert_eq!(limiter.check("bob"), Ok(()));
        assert_eq!(limiter.len(), 2);
    }

    #[test]
    fn prune_drops_idle_keys_and_keeps_recent_ones() {
        let (limiter, clock) = limiter(10, 5);
        limiter.check("idle").unwrap();
        clock.advance(Duration::from_secs(2));
        for _ in 0..5 {
            limiter.check("busy").unwrap();
        }
        limiter.prune();
        assert_eq!(limiter.len(), 1);
        // The busy key's state survived pruning: it is still limited.
        assert!(limiter.check("busy").is_err());
        clock.advance(Duration::from_secs(2));
        limiter.prune();
        assert!(limiter.is_empty());
    }

    #[test]
    fn full_limiter_refuses_new_keys_but_serves_known_ones() {
        let (limiter, _clock) = limiter(1, 2);
        let limiter = limiter.with_max_keys(2);
        limiter.check("a").unwrap();
        limiter.check("b").unwrap();
        assert_eq!(limiter.check("c"), Err(Duration::from_secs(2)));
        assert_eq!(limiter.check("a"), Ok(()));
        assert_eq!(limiter.len(), 2);
    }

    #[test]
    fn full_limiter_admits_new_keys_once_idle_ones_expire() {
        let (limiter, clock) = limiter(1, 2);
        let limiter = limiter.with_max_keys(2);
        limiter.check("a").unwrap();
        limiter.check("b").unwrap();
        assert!(limiter.check("c").is_err());
        clock.advance(Duration::from_secs(3));
        assert_eq!(limiter.check("c"), Ok(()));
        assert_eq!(limiter.len(), 1);
    }

    #[test]
    fn invalid_limits_are_refused() {
        assert_eq!(
            RateLimiter::new(&config(0, 1)).unwrap_err(),
            LimitError::ZeroRate
        );
        assert_eq!(
            RateLimiter::new(&config(1, 0)).unwrap_err(),
            LimitError::ZeroBurst
        );
        assert!(matches!(
            RateLimiter::new(&config(MAX_PER_SECOND + 1, 1)).unwrap_err(),
            LimitError::RateTooHigh { .. }
        ));
        assert!(RateLimiter::new(&config(MAX_PER_SECOND, u32::MAX)).is_ok());
    }

    #[test]
    fn real_clock_limiter_limits() {
        let limiter = RateLimiter::new(&config(1, 1)).unwrap();
        assert_eq!(limiter.check("a"), Ok(()));
        let wait = limiter.check("a").unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1));
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::from_nanos(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::from_millis(2001)), 3);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }

    #[test]
    fn rate_limit_config_deserializes_snake_case_keys() {
        let parsed: RateLimitConfig =
            serde_json::from_str(r#"{"per_second": 5, "burst": 10, "key": "api_key"}"#).unwrap();
        assert_eq!(parsed.key, LimitKey::ApiKey);
        let parsed: LimitKey = serde_json::from_str(r#""subject""#).unwrap();
        assert_eq!(parsed, LimitKey::Subject);
        assert!(
            serde_json::from_str::<RateLimitConfig>(
                r#"{"per_second": 5, "burst": 10, "key": "ip", "per_minute": 1}"#
            )
            .is_err()
        );
    }

    // --- Trusted proxies ---

    fn proxies(cidrs: &[&str]) -> TrustedProxies {
        let cidrs: Vec<String> = cidrs.iter().map(|c| (*c).to_owned()).collect();
        TrustedProxies::parse(&cidrs).unwrap()
    }

    fn xff(lines: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append("x-forwarded-for", HeaderValue::from_str(line).unwrap());
        }
        headers
    }

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 443)
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn cidrs_parse_for_ipv4_and_ipv6() {
        let trusted = proxies(&[
            "10.0.0.0/8",
            "127.0.0.1/32",
            "::1/128",
            "fd00::/8",
            "192.0.2.7",
        ]);
        for yes in [
            "10.1.2.3",
            "127.0.0.1",
            "::1",
            "fd12::1",
            "192.0.2.7",
            "::ffff:10.9.9.9",
        ] {
            assert!(trusted.is_trusted(ip(yes)), "{yes}");
        }
        for no in [
            "11.0.0.1",
            "127.0.0.2",
            "::2",
            "fe00::1",
            "192.0.2.8",
            "::ffff:11.0.0.1",
        ] {
            assert!(!trusted.is_trusted(ip(no)), "{no}");
        }
        let everything = proxies(&["0.0.0.0/0", "::/0"]);
        assert!(
            everything.is_trusted(ip("203.0.113.9")) && everything.is_trusted(ip("2001:db8::1"))
        );
        assert!(!TrustedProxies::default().is_trusted(ip("127.0.0.1")));
    }

    #[test]
    fn invalid_cidrs_are_refused() {
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/8/8",
            "10.0.0/8",
            "example.com/8",
            "10.1.2.3/8",
            "fd00::1/8",
        ] {
            let err = TrustedProxies::parse(&[bad.to_owned()]).unwrap_err();
            assert!(matches!(err, LimitError::InvalidCidr { .. }), "{bad}");
        }
        let err = TrustedProxies::parse(&["10.1.2.3/8".to_owned()]).unwrap_err();
        assert!(err.to_string().contains("did you mean 10.0.0.0/8"), "{err}");
    }

    #[test]
    fn untrusted_peer_cannot_spoof_its_address() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let headers = xff(&["1.2.3.4"]);
        assert_eq!(
            trusted.client_ip(peer("203.0.113.9"), &headers),
            ip("203.0.113.9")
        );
        // With no trusted proxies configured, the header is never read.
        let none = TrustedProxies::default();
        assert_eq!(none.client_ip(peer("10.0.0.1"), &headers), ip("10.0.0.1"));
    }

    #[test]
    fn trusted_peer_yields_the_rightmost_untrusted_entry() {
        let trusted = proxies(&["10.0.0.0/8"]);
        // The client claimed to be 1.1.1.1; the first proxy recorded the real 203.0.113.9.
        let headers = xff(&["1.1.1.1, 203.0.113.9, 10.0.0.2"]);
        assert_eq!(
            trusted.client_ip(peer("10.0.0.1"), &headers),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn all_trusted_entries_yield_the_leftmost() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let headers = xff(&["10.0.0.3, 10.0.0.2"]);
        assert_eq!(
            trusted.client_ip(peer("10.0.0.1"), &headers),
            ip("10.0.0.3")
        );
    }

    #[test]
    fn trusted_peer_without_header_is_the_client() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let client = trusted.client_ip(peer("10.0.0.1"), &HeaderMap::new());
        assert_eq!(client, ip("10.0.0.1"));
    }

    #[test]
    fn malformed_entry_ends_the_walk_at_the_last_vouched_address() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let headers = xff(&["1.1.1.1, garbage, 10.0.0.2"]);
        assert_eq!(
            trusted.client_ip(peer("10.0.0.1"), &headers),
            ip("10.0.0.2")
        );
        let headers = xff(&["1.1.1.1, unknown"]);
        assert_eq!(
            trusted.client_ip(peer("10.0.0.1"), &headers),
            ip("10.0.0.1")
        );
        let headers = xff(&["1.1.1.1,,10.0.0.2"]);
        assert_eq!(
            trusted.client_ip(peer("10.0.0.1"), &headers),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn forwarded_for_lines_are_read_as_one_list() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let headers = xff(&["1.1.1.1, 203.0.113.9", "10.0.0.2"]);
        assert_eq!(
            trusted.client_ip(peer("10.0.0.1"), &headers),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn forwarded_entries_may_carry_ports_and_brackets() {
        let trusted = proxies(&["10.0.0.0/8", "::1/128"]);
        let headers = xff(&["203.0.113.9:5555, [::1]:80, 10.0.0.2:443"]);
        assert_eq!(
            trusted.client_ip(peer("10.0.0.1"), &headers),
            ip("203.0.113.9")
        );
        let headers = xff(&["[2001:db8::7]"]);
        assert_eq!(trusted.client_ip(peer("::1"), &headers), ip("2001:db8::7"));
    }

    #[test]
    fn ipv4_mapped_peer_matches_ipv4_blocks() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let headers = xff(&["203.0.113.9"]);
        let mapped = peer("::ffff:10.0.0.1");
        assert_eq!(trusted.client_ip(mapped, &headers), ip("203.0.113.9"));
        let untrusted = peer("::ffff:198.51.100.1");
        assert_eq!(trusted.client_ip(untrusted, &headers), ip("198.51.100.1"));
    }
}
