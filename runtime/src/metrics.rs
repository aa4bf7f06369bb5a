//! The host's figures in the Prometheus text exposition format (version 0.0.4).
//!
//! The same numbers `bunraku ps` shows ([`ActorStatus`]), one sample per actor instance, labelled
//! with `actor` and `instance`, plus host-wide counters ([`HostTotals`]). [`render`] produces the text; the control
//! socket serves it (`bunraku metrics`), and an HTTP listener can serve it at `/metrics`.
//!
//! ```
//! use bunraku_runtime::ActorStatus;
//! let status = ActorStatus {
//!     name: "echo".into(),
//!     instance: 0,
//!     phase: "running".into(),
//!     mailbox: 2,
//!     mailbox_bound: 1024,
//!     handled: 10,
//!     restarts: 0,
//!     failures: 0,
//!     dead_letters: 0,
//!     memory: 131072,
//!     pending: 0,
//!     last_failure: None,
//!     handles: vec!["Echo?".into()],
//!     supervisor: None,
//!     status: None,
//! };
//! let totals = bunraku_runtime::metrics::HostTotals::default();
//! let text = bunraku_runtime::metrics::render(&[status], &totals);
//! assert!(text.contains("bunraku_actor_mailbox_depth{actor=\"echo\",instance=\"0\"} 2\n"));
//! ```

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::ActorStatus;
use crate::memory::{MemoryStats, MemoryWall};

/// The content type of [`render`]'s output, for an HTTP response.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One per-instance metric: name, type, help, and how to read it from a status.
struct Metric {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&ActorStatus) -> u64,
}

const METRICS: &[Metric] = &[
    Metric {
        name: "bunraku_actor_mailbox_depth",
        kind: "gauge",
        help: "Messages waiting in the instance's mailbox.",
        value: |s| s.mailbox as u64,
    },
    Metric {
        name: "bunraku_actor_mailbox_capacity",
        kind: "gauge",
        help: "The mailbox bound.",
        value: |s| s.mailbox_bound as u64,
    },
    Metric {
        name: "bunraku_actor_messages_handled_total",
        kind: "counter",
        help: "Messages handed to the guest.",
        value: |s| s.handled,
    },
    Metric {
        name: "bunraku_actor_restarts_total",
        kind: "counter",
        help: "Restarts after failures.",
        value: |s| s.restarts,
    },
    Metric {
        name: "bunraku_actor_failures_total",
        kind: "counter",
        help: "Traps and failed instantiations.",
        value: |s| s.failures,
    },
    Metric {
        name: "bunraku_actor_dead_letters_total",
        kind: "counter",
        help: "Messages that could not be delivered to or handled by the instance.",
        value: |s| s.dead_letters,
    },
    Metric {
        name: "bunraku_actor_memory_bytes",
        kind: "gauge",
        help: "Linear memory of the instance.",
        value: |s| s.memory,
    },
    Metric {
        name: "bunraku_actor_pending_operations",
        kind: "gauge",
        help: "Operations the instance is waiting on.",
        value: |s| s.pending,
    },
];

/// The phases an instance can be in, each exported as a 0/1 gauge.
const PHASES: &[&str] = &["starting", "running", "restarting", "stopped", "idle"];

/// Host-wide counters, as [`Host::totals`](crate::Host::totals) returns them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostTotals {
    /// Published messages that matched no subscription.
    pub unroutable: u64,
    /// Activations of virtual actors made (a key's first message, or its first after an
    /// eviction).
    pub activations: u64,
    /// Idle activations evicted: deactivated and removed, their state kept in the store.
    pub evictions: u64,
    /// The slot allocator's figures: linear memory committed against the host budget, slots,
    /// the warm pool, and which walls were hit.
    pub memory: MemoryStats,
    /// Where the time of starting instances went.
    pub starts: StartTimes,
}

/// The time instances took to start, summed over every instance whose first entry returned
/// (any actor: deployed, restarted, spawned or a virtual actor's activation), by stage. The
/// stages run one after the other on a guest lane; what comes before them (registering a new
/// activation, waking the worker) is not included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StartTimes {
    /// Instances counted.
    pub count: u64,
    /// Of those, instances that were prepared ahead ([`crate::prepared`]): their store and
    /// instantiate stages count only what binding them to their actor took.
    pub prepared: u64,
    /// Creating the instance's state and wasmtime `Store`, in nanoseconds.
    pub store_ns: u64,
    /// Instantiating the module: linear memory, data segments, `_initialize`, in nanoseconds.
    pub instantiate_ns: u64,
    /// The first guest entry: `on_start` (and its `load`), and the messages it took in the same
    /// entry, in nanoseconds.
    pub first_entry_ns: u64,
}

impl StartTimes {
    /// The stages with their mean time per instance, in microseconds (zero when none started).
    pub fn mean_us(&self) -> [(&'static str, f64); 3] {
        let mean = |ns: u64| ns as f64 / self.count.max(1) as f64 / 1e3;
        [
            ("store", mean(self.store_ns)),
            ("instantiate", mean(self.instantiate_ns)),
            ("first_entry", mean(self.first_entry_ns)),
        ]
    }
}

/// Renders `actors` (as [`Host::actors`](crate::Host::actors) returns them) and the host's
/// counters.
pub fn render(actors: &[ActorStatus], totals: &HostTotals) -> String {
    let mut out = String::new();
    for m in METRICS {
        header(&mut out, m.name, m.kind, m.help);
        for s in actors {
            sample(&mut out, m.name, s, None, (m.value)(s));
        }
    }
    header(
        &mut out,
        "bunraku_actor_phase",
        "gauge",
        "1 for the instance's current phase, 0 for the others.",
    );
    for s in actors {
        for phase in PHASES {
            sample(
                &mut out,
                "bunraku_actor_phase",
                s,
                Some(("phase", phase)),
                u64::from(s.phase == *phase),
            );
        }
    }
    let counters = [
        (
            "bunraku_unroutable_total",
            "Published messages that matched no subscription.",
            totals.unroutable,
        ),
        (
            "bunraku_activations_total",
            "Activations of virtual actors.",
            totals.activations,
        ),
        (
            "bunraku_activations_evicted_total",
            "Idle activations of virtual actors evicted (their state stays in the store).",
            totals.evictions,
        ),
    ];
    for (name, help, value) in counters {
        single(&mut out, name, "counter", help, value);
    }
    render_memory(&mut out, &totals.memory);
    render_starts(&mut out, &totals.starts);
    out
}

/// The host's running sums behind [`StartTimes`].
#[derive(Default)]
pub(crate) struct StartCounters {
    count: AtomicU64,
    prepared: AtomicU64,
    store_ns: AtomicU64,
    instantiate_ns: AtomicU64,
    first_entry_ns: AtomicU64,
}

impl StartCounters {
    /// Adds one instance's start (`prepared`: it took a prepared instance).
    pub(crate) fn record(
        &self,
        store: Duration,
        instantiate: Duration,
        first_entry: Duration,
        prepared: bool,
    ) {
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.store_ns.fetch_add(ns(store), Ordering::Relaxed);
        self.instantiate_ns
            .fetch_add(ns(instantiate), Ordering::Relaxed);
        self.first_entry_ns
            .fetch_add(ns(first_entry), Ordering::Relaxed);
        self.prepared
            .fetch_add(u64::from(prepared), Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The sums so far.
    pub(crate) fn snapshot(&self) -> StartTimes {
        StartTimes {
            count: self.count.load(Ordering::Relaxed),
            prepared: self.prepared.load(Ordering::Relaxed),
            store_ns: self.store_ns.load(Ordering::Relaxed),
            instantiate_ns: self.instantiate_ns.load(Ordering::Relaxed),
            first_entry_ns: self.first_entry_ns.load(Ordering::Relaxed),
        }
    }
}

/// Instance starts and their time by stage (see [`StartTimes`]).
fn render_starts(out: &mut String, s: &StartTimes) {
    single(
        out,
        "bunraku_instance_starts_total",
        "counter",
        "Instances started whose first entry (on_start) returned.",
        s.count,
    );
    single(
        out,
        "bunraku_instance_starts_prepared_total",
        "counter",
        "Of those, instances a virtual actor type or spawnable module had prepared ahead.",
        s.prepared,
    );
    let seconds = |ns: u64| ns as f64 / 1e9;
    by_label(
        out,
        "bunraku_instance_start_seconds_total",
        "Time spent starting those instances, by stage: store, instantiate (memory, data \
         segments, _initialize), first_entry (on_start and what it took in the same entry).",
        "stage",
        [
            ("store", seconds(s.store_ns)),
            ("instantiate", seconds(s.instantiate_ns)),
            ("first_entry", seconds(s.first_entry_ns)),
        ],
    );
}

/// The slot allocator's figures (see [`crate::memory`]).
fn render_memory(out: &mut String, m: &MemoryStats) {
    let figures: [(&str, &str, &str, u64); 11] = [
        (
            "bunraku_linear_memory_committed_bytes",
            "gauge",
            "Linear memory accessible to all instances, charged against the host budget.",
            m.committed_bytes,
        ),
        (
            "bunraku_linear_memory_budget_bytes",
            "gauge",
            "The host-wide budget for linear memory; growth past it fails in the guest.",
            m.budget_bytes,
        ),
        (
            "bunraku_memory_slots_in_use",
            "gauge",
            "Linear memory slots held by live instances.",
            m.slots_in_use as u64,
        ),
        (
            "bunraku_memory_slots_max",
            "gauge",
            "The slot budget: most instances alive at once.",
            m.max_slots as u64,
        ),
        (
            "bunraku_memory_slots_warm",
            "gauge",
            "Zeroed slots with resident pages, ready for new instances.",
            m.warm_slots as u64,
        ),
        (
            "bunraku_memory_warm_hits_total",
            "counter",
            "New instances that got a warm slot (no page faults on their usual pages).",
            m.warm_hits,
        ),
        (
            "bunraku_memory_slots_prefaulted_total",
            "counter",
            "Slots made warm in advance by the allocator's background thread.",
            m.prefaulted,
        ),
        (
            "bunraku_memory_trims_total",
            "counter",
            "Idle instances that gave back the memory pages they can rebuild.",
            m.trims,
        ),
        (
            "bunraku_memory_pages_trimmed_total",
            "counter",
            "Host pages of linear memory idle instances gave back to the kernel.",
            m.pages_trimmed,
        ),
        (
            "bunraku_memory_pages_patched_total",
            "counter",
            "Trimmed pages that had changed a little, kept as a patch of their changed words.",
            m.pages_patched,
        ),
        (
            "bunraku_memory_pages_restored_total",
            "counter",
            "Trimmed pages brought back (from the module's image, a patch, or both) before an instance ran again.",
            m.pages_restored,
        ),
    ];
    for (name, kind, help, value) in figures {
        single(out, name, kind, help, value);
    }
    let walls = [
        (MemoryWall::SlotBudget, m.failures.slot_budget),
        (MemoryWall::HostBudget, m.failures.host_budget),
        (MemoryWall::SlotSize, m.failures.slot_size),
        (MemoryWall::Mmap, m.failures.mmap),
    ]
    .map(|(wall, value)| (wall.to_string(), value));
    by_label(
        out,
        "bunraku_memory_wall_hits_total",
        "Allocations or growths of linear memory refused, by the limit that refused them.",
        "wall",
        walls.iter().map(|(wall, value)| (wall.as_str(), *value)),
    );
}

/// Writes a counter with one sample per value of one label (also used by the gateway's
/// figures).
pub(crate) fn by_label<'a, V: std::fmt::Display>(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    samples: impl IntoIterator<Item = (&'a str, V)>,
) {
    header(out, name, "counter", help);
    for (value_of_label, value) in samples {
        let _ = writeln!(
            out,
            "{name}{{{label}=\"{}\"}} {value}",
            escape(value_of_label)
        );
    }
}

/// Writes a metric without labels: its `# HELP` and `# TYPE` lines and its one sample (also
/// used by the gateway's figures).
pub(crate) fn single(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    header(out, name, kind, help);
    // Writing to a String cannot fail.
    let _ = writeln!(out, "{name} {value}");
}

/// Writes the `# HELP` and `# TYPE` lines of a metric (also used by the gateway's figures).
pub(crate) fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, s: &ActorStatus, extra: Option<(&str, &str)>, value: u64) {
    let _ = write!(
        out,
        "{name}{{actor=\"{}\",instance=\"{}\"",
        escape(&s.name),
        s.instance
    );
    if let Some((key, v)) = extra {
        let _ = write!(out, ",{key}=\"{}\"", escape(v));
    }
    let _ = writeln!(out, "}} {value}");
}

/// Escapes a label value: backslash, double quote and newline (also used by the gateway's
/// figures).
pub(crate) fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(name: &str, instance: u32, phase: &str) -> ActorStatus {
        ActorStatus {
            name: name.into(),
            instance,
            phase: phase.into(),
            mailbox: 3,
            mailbox_bound: 8,
            handled: 42,
            restarts: 1,
            failures: 2,
            dead_letters: 4,
            memory: 65536,
            pending: 5,
            last_failure: Some("trap".into()),
            handles: Vec::new(),
            supervisor: None,
            status: None,
        }
    }

    #[test]
    fn every_metric_has_help_type_and_one_sample_per_instance() {
        let text = render(
            &[status("a", 0, "running"), status("a", 1, "restarting")],
            &HostTotals {
                unroutable: 7,
                activations: 3,
                evictions: 2,
                memory: crate::memory::MemoryStats {
                    committed_bytes: 131_072,
                    warm_slots: 5,
                    failures: crate::memory::WallCounts {
                        host_budget: 4,
                        ..Default::default()
                    },
                    ..Default::default()
                },
                starts: StartTimes {
                    count: 4,
                    prepared: 1,
                    store_ns: 20_000,
                    instantiate_ns: 1_500_000_000,
                    first_entry_ns: 2_000_000_000,
                },
            },
        );
        for m in METRICS {
            assert!(text.contains(&format!("# TYPE {} {}\n", m.name, m.kind)));
            let samples = text
                .lines()
                .filter(|l| l.starts_with(&format!("{}{{", m.name)))
                .count();
            assert_eq!(samples, 2, "{}", m.name);
        }
        assert!(
            text.contains("bunraku_actor_messages_handled_total{actor=\"a\",instance=\"1\"} 42\n")
        );
        assert!(
            text.contains(
                "bunraku_actor_phase{actor=\"a\",instance=\"1\",phase=\"restarting\"} 1\n"
            )
        );
        assert!(
            text.contains("bunraku_actor_phase{actor=\"a\",instance=\"1\",phase=\"running\"} 0\n")
        );
        assert!(text.contains("\nbunraku_unroutable_total 7\n"));
        assert!(text.contains("\nbunraku_activations_total 3\n"));
        assert!(text.contains("\nbunraku_activations_evicted_total 2\n"));
        assert!(text.contains("\nbunraku_linear_memory_committed_bytes 131072\n"));
        assert!(text.contains("\nbunraku_memory_slots_warm 5\n"));
        assert!(text.contains("\nbunraku_memory_wall_hits_total{wall=\"host memory budget\"} 4\n"));
        assert!(text.contains("\nbunraku_memory_wall_hits_total{wall=\"mmap\"} 0\n"));
        assert!(text.contains("\nbunraku_instance_starts_total 4\n"));
        assert!(text.contains("\nbunraku_instance_starts_prepared_total 1\n"));
        assert!(text.contains("\nbunraku_instance_start_seconds_total{stage=\"store\"} 0.00002\n"));
        assert!(text.ends_with(
            "\nbunraku_instance_start_seconds_total{stage=\"instantiate\"} 1.5\n\
             bunraku_instance_start_seconds_total{stage=\"first_entry\"} 2\n"
        ));
    }

    #[test]
    fn start_times_average_per_instance_in_microseconds() {
        let times = StartTimes {
            count: 4,
            prepared: 0,
            store_ns: 20_000,
            instantiate_ns: 100_000,
            first_entry_ns: 0,
        };
        assert_eq!(
            times.mean_us(),
            [("store", 5.0), ("instantiate", 25.0), ("first_entry", 0.0)]
        );
        assert_eq!(StartTimes::default().mean_us()[0], ("store", 0.0));
    }

    #[test]
    fn label_values_are_escaped() {
        let text = render(
            &[status("we\"ird\\na\nme", 0, "running")],
            &HostTotals::default(),
        );
        assert!(text.contains("actor=\"we\\\"ird\\\\na\\nme\""), "{text}");
    }

    #[test]
    fn every_line_is_a_comment_or_a_sample_with_a_number() {
        for line in render(&[status("a", 0, "stopped")], &HostTotals::default()).lines() {
            if line.starts_with('#') {
                continue;
            }
            let (_, value) = line.rsplit_once(' ').expect("name and value");
            value.parse::<f64>().expect("numeric value");
        }
    }
}
