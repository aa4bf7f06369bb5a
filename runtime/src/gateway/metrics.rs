//! The gateway's figures in the Prometheus text format: requests by route template and status,
//! latencies per route, rate-limit rejections and authentication failures.
//!
//! Labels are route templates (`GET /users/{id}`), never raw paths, and the set of routes is
//! fixed when the gateway starts, so the figures take the same memory however many distinct
//! paths clients send. Requests that match no route share the label `unmatched`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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

/// Renders the figures of `routes`; `limiter_keys` gives, per route, how many keys its rate
/// limiter holds (`None` for a route without a limit).
pub(crate) fn render(routes: &[&RouteMetrics], limiter_keys: &[Option<usize>]) -> String {
    let mut out = String::new();
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

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Escapes a label value: backslash, double quote and newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
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
        let text = render(&[&r], &[Some(4)]);
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
    fn label_values_are_escaped() {
        let r = RouteMetrics::new("GET /a\"b\\c".into());
        r.observe(200, Duration::ZERO);
        assert!(render(&[&r], &[None]).contains("route=\"GET /a\\\"b\\\\c\""));
    }
}
