//! The gateway's figures in the Prometheus text format: requests by route template and status,
//! latencies per route, rate-limit rejections and authentication failures, and connections:
//! open, accepted, how often the connection limit was reached, and the connections hyper closed
//! for the header limits (431) and the header timeout.
//!
//! Labels are route templates (`GET /users/{id}`), never raw paths, and the set of routes is
//! fixed when the gateway starts, so the figures take the same memory however many distinct
//! paths clients send. Requests that match no route share the label `unmatched`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::metrics::{by_label, escape, header, single};

/// The label of requests that matched no route (404, 405).
pub(crate) const UNMATCHED: &str = "unmatched";

/// The upper bounds of the latency histogram's buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The figures of one route.
pub(crate) struct RouteMetrics {
    label: String,
    /// Responses by status; at most one entry per status code.
    statuses: Mutex<BTreeMap<u16, u64>>,
    /// Cumulative: `buckets[i]` counts requests that took at most `BUCKETS[i]`.
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
    rate_limited: AtomicU64,
    auth_failures: AtomicU64,
}

impl RouteMetrics {
    pub(crate) fn new(label: String) -> Self {
        Self {
            label,
            statuses: Mutex::default(),
            buckets: Default::default(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            auth_failures: AtomicU64::new(0),
        }
    }

    /// Counts one answered request.
    pub(crate) fn observe(&self, status: u16, elapsed: Duration) {
        *self
            .statuses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(status)
            .or_default() += 1;
        let seconds = elapsed.as_secs_f64();
        for (bucket, bound) in self.buckets.iter().zip(BUCKETS) {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Counts a request refused by the rate limit.
    pub(crate) fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request refused by authentication.
    pub(crate) fn auth_failed(&self) {
        self.auth_failures.fetch_add(1, Ordering::Relaxed);
    }
}

/// Why a connection was closed by the gateway's connection-level limits.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Closed {
    /// The request line and headers passed `max_headers` or `max_header_bytes` (hyper answered
    /// 431).
    HeadersTooLarge,
    /// No complete request head within `header_timeout_ms`: a slow client, or a kept-alive
    /// connection that sent no next request.
    HeaderTimeout,
}

/// The figures of the gateway's connections.
#[derive(Default)]
pub(crate) struct ConnMetrics {
    open: AtomicU64,
    accepted: AtomicU64,
    at_limit: AtomicU64,
    headers_too_large: AtomicU64,
    header_timeouts: AtomicU64,
}

impl ConnMetrics {
    /// Counts an accepted connection; `open` is how many are open with it.
    pub(crate) fn accepted(&self, open: usize) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.open.store(open as u64, Ordering::Relaxed);
    }

    /// Notes that a connection ended; `open` is how many are still open.
    pub(crate) fn ended(&self, open: usize) {
        self.open.store(open as u64, Ordering::Relaxed);
    }

    /// Counts a time the gateway stopped accepting because `max_connections` were open.
    pub(crate) fn reached_limit(&self) {
        self.at_limit.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a connection closed by a connection-level limit.
    pub(crate) fn closed(&self, why: Closed) {
        match why {
            Closed::HeadersTooLarge => &self.headers_too_large,
            Closed::HeaderTimeout => &self.header_timeouts,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String) {
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        for (name, kind, help, value) in [
            (
                "bunraku_gateway_connections_open",
                "gauge",
                "HTTP connections open now.",
                load(&self.open),
            ),
            (
                "bunraku_gateway_connections_total",
                "counter",
                "HTTP connections accepted.",
                load(&self.accepted),
            ),
            (
                "bunraku_gateway_connection_limit_reached_total",
                "counter",
                "Times max_connections connections were open and the gateway stopped accepting until one closed.",
                load(&self.at_limit),
            ),
        ] {
            single(out, name, kind, help, value);
        }
        by_label(
            out,
            "bunraku_gateway_connections_closed_total",
            "Connections the gateway closed for a connection-level limit: headers_too_large (answered 431), header_timeout (no complete request head in time, idle keep-alives included).",
            "reason",
            [
                ("headers_too_large", load(&self.headers_too_large)),
                ("header_timeout", load(&self.header_timeouts)),
            ],
        );
    }
}

/// Renders the figures of `routes` and `connections`; `limiter_keys` gives, per route, how many
/// keys its rate limiter holds (`None` for a route without a limit).
pub(crate) fn render(
    routes: &[&RouteMetrics],
    limiter_keys: &[Option<usize>],
    connections: &ConnMetrics,
) -> String {
    let mut out = String::new();
    connections.render(&mut out);
    header(
        &mut out,
        "bunraku_gateway_requests_total",
        "counter",
        "HTTP requests answered by the gateway, by route template and status.",
    );
    for r in routes {
        let statuses = r.statuses.lock().unwrap_or_else(|e| e.into_inner());
        for (status, n) in statuses.iter() {
            let _ = writeln!(
                out,
                "bunraku_gateway_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                escape(&r.label)
            );
        }
    }
    header(
        &mut out,
        "bunraku_gateway_request_duration_seconds",
        "histogram",
        "Time from a request's headers to its response, by route template.",
    );
    for r in routes {
        let label = escape(&r.label);
        for (bucket, bound) in r.buckets.iter().zip(BUCKETS) {
            let _ = writeln!(
                out,
                "bunraku_gateway_request_duration_seconds_bucket{{route=\"{label}\",le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = r.count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "bunraku_gateway_request_duration_seconds_bucket{{route=\"{label}\",le=\"+Inf\"}} {count}"
        );
        let sum = r.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "bunraku_gateway_request_duration_seconds_sum{{route=\"{label}\"}} {sum}"
        );
        let _ = writeln!(
            out,
            "bunraku_gateway_request_duration_seconds_count{{route=\"{label}\"}} {count}"
        );
    }
    for (name, help, value) in [
        (
            "bunraku_gateway_rate_limited_total",
            "Requests refused with 429 by a route's rate limit (they never reached an actor).",
            (|r: &RouteMetrics| r.rate_limited.load(Ordering::Relaxed)) as fn(&RouteMetrics) -> u64,
        ),
        (
            "bunraku_gateway_auth_failures_total",
            "Requests refused with 401 by a route's authentication.",
            |r: &RouteMetrics| r.auth_failures.load(Ordering::Relaxed),
        ),
    ] {
        header(&mut out, name, "counter", help);
        for r in routes.iter().filter(|r| r.label != UNMATCHED) {
            let _ = writeln!(out, "{name}{{route=\"{}\"}} {}", escape(&r.label), value(r));
        }
    }
    header(
        &mut out,
        "bunraku_gateway_rate_limiter_keys",
        "gauge",
        "Keys (API keys, subjects, client addresses) a route's rate limiter holds state for.",
    );
    for (r, keys) in routes.iter().zip(limiter_keys) {
        if let Some(keys) = keys {
            let _ = writeln!(
                out,
                "bunraku_gateway_rate_limiter_keys{{route=\"{}\"}} {keys}",
                escape(&r.label)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_template_and_status_with_a_histogram() {
        let r = RouteMetrics::new("GET /users/{id}".into());
        r.observe(200, Duration::from_millis(3));
        r.observe(200, Duration::from_millis(30));
        r.observe(404, Duration::from_millis(300));
        r.rate_limited();
        r.auth_failed();
        r.auth_failed();
        let text = render(&[&r], &[Some(4)], &ConnMetrics::default());
        let route = "route=\"GET /users/{id}\"";
        for line in [
            format!("bunraku_gateway_requests_total{{{route},status=\"200\"}} 2"),
            format!("bunraku_gateway_requests_total{{{route},status=\"404\"}} 1"),
            format!("bunraku_gateway_request_duration_seconds_bucket{{{route},le=\"0.001\"}} 0"),
            format!("bunraku_gateway_request_duration_seconds_bucket{{{route},le=\"0.005\"}} 1"),
            format!("bunraku_gateway_request_duration_seconds_bucket{{{route},le=\"0.05\"}} 2"),
            format!("bunraku_gateway_request_duration_seconds_bucket{{{route},le=\"+Inf\"}} 3"),
            format!("bunraku_gateway_request_duration_seconds_sum{{{route}}} 0.333"),
            format!("bunraku_gateway_request_duration_seconds_count{{{route}}} 3"),
            format!("bunraku_gateway_rate_limited_total{{{route}}} 1"),
            format!("bunraku_gateway_auth_failures_total{{{route}}} 2"),
            format!("bunraku_gateway_rate_limiter_keys{{{route}}} 4"),
        ] {
            assert!(text.contains(&format!("{line}\n")), "{line}\n{text}");
        }
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            value.parse::<f64>().unwrap_or_else(|_| panic!("{line}"));
        }
    }

    #[test]
    fn connections_are_counted_open_accepted_at_the_limit_and_closed_by_reason() {
        let c = ConnMetrics::default();
        c.accepted(1);
        c.accepted(2);
        c.reached_limit();
        c.ended(1);
        c.closed(Closed::HeadersTooLarge);
        c.closed(Closed::HeaderTimeout);
        c.closed(Closed::HeaderTimeout);
        let text = render(&[], &[], &c);
        for line in [
            "bunraku_gateway_connections_open 1",
            "bunraku_gateway_connections_total 2",
            "bunraku_gateway_connection_limit_reached_total 1",
            "bunraku_gateway_connections_closed_total{reason=\"headers_too_large\"} 1",
            "bunraku_gateway_connections_closed_total{reason=\"header_timeout\"} 2",
        ] {
            assert!(text.contains(&format!("{line}\n")), "{line}\n{text}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let r = RouteMetrics::new("GET /a\"b\\c".into());
        r.observe(200, Duration::ZERO);
        assert!(
            render(&[&r], &[None], &ConnMetrics::default()).contains("route=\"GET /a\\\"b\\\\c\"")
        );
    }
}
