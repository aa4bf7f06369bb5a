//! Message types shared by the guests in this workspace. Types with the same wire name and layout
//! are the same message to every actor; keeping them in one crate keeps them the same.

pub mod bank;
pub mod http;
pub mod orders;
pub mod participant;

use bunraku_sdk::prelude::*;

/// Echo the text back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
#[message(reply = String)]
pub struct Echo {
    pub text: String,
}

/// Busy for `ms` milliseconds, then reply with `ms` (a slow handler, for timeouts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
#[message(reply = u64)]
pub struct Slow {
    pub ms: u64,
}

/// Add to a counter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
pub struct Add {
    pub n: u64,
}

/// Read a counter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
#[message(reply = u64)]
pub struct Get {}

/// A published message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
#[message(name = "pubsub.tick")]
pub struct Tick {
    pub publisher: String,
    pub seq: u64,
}

/// Ask a publisher to publish `count` ticks to `subject`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
#[message(reply = u64)]
pub struct PublishBurst {
    pub subject: String,
    pub count: u64,
}

/// One message a subscriber saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pub subject: String,
    pub publisher: String,
    pub seq: u64,
}

/// Ask a subscriber what it saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
#[message(reply = Vec<Seen>)]
pub struct Report {}

/// Run the example's self-check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
#[message(reply = SmokeReport)]
pub struct Smoke {}

/// One checked fact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fact {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// The outcome of a self-check: `bunraku run --smoke` prints `summary` and exits with `ok`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SmokeReport {
    pub ok: bool,
    pub summary: String,
    pub facts: Vec<Fact>,
}

impl SmokeReport {
    /// Records a fact.
    pub fn check(&mut self, name: &str, ok: bool, detail: impl Into<String>) {
        self.facts.push(Fact {
            name: name.into(),
            ok,
            detail: detail.into(),
        });
    }

    /// Sets `ok` and the summary line from the facts.
    pub fn finish(mut self, example: &str) -> Self {
        let passed = self.facts.iter().filter(|f| f.ok).count();
        self.ok = passed == self.facts.len() && !self.facts.is_empty();
        let failed: Vec<_> = self
            .facts
            .iter()
            .filter(|f| !f.ok)
            .map(|f| f.name.as_str())
            .collect();
        self.summary = if self.ok {
            format!("{example}: ok, {passed} facts checked")
        } else {
            format!(
                "{example}: FAILED {} of {} facts: {}",
                failed.len(),
                self.facts.len(),
                failed.join(", ")
            )
        };
        self
    }
}

/// A gossip peer's replicated counter (a grow-only counter: one slot per peer, merged by max).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Slots(pub Vec<(String, u64)>);

impl Slots {
    pub fn get(&self, peer: &str) -> u64 {
        self.0
            .iter()
            .find(|(p, _)| p == peer)
            .map_or(0, |(_, n)| *n)
    }
    pub fn set(&mut self, peer: &str, n: u64) {
        match self.0.iter_mut().find(|(p, _)| p == peer) {
            Some(slot) => slot.1 = n,
            None => {
                self.0.push((peer.to_owned(), n));
                self.0.sort();
            }
        }
    }
    /// Merges another state; returns whether anything changed.
    pub fn merge(&mut self, other: &Slots) -> bool {
        let mut changed = false;
        for (peer, n) in &other.0 {
            if *n > self.get(peer) {
                self.set(peer, *n);
                changed = true;
            }
        }
        changed
    }
    pub fn total(&self) -> u64 {
        self.0.iter().map(|(_, n)| n).sum()
    }
}

/// Increment this peer's own slot by `n`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
pub struct Increment {
    pub n: u64,
}

/// A peer's counter state, gossiped to other peers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
#[message(name = "p2p.gossip")]
pub struct Gossip {
    pub from: String,
    pub slots: Slots,
}

/// Ask a peer for its view of the counter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
#[message(reply = Slots)]
pub struct View {}

/// What a stateful actor holds, and what it loaded when it started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateStatus {
    /// The counter now.
    pub value: u64,
    /// What `load` returned in `on_start`: `None` when nothing was saved.
    pub loaded: Option<u64>,
    /// The error `load` returned in `on_start`, if it failed (the error code's name).
    pub load_error: Option<String>,
    /// Which instance answered.
    pub instance: u32,
}

/// Ask a stateful actor for its [`StateStatus`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
#[message(reply = StateStatus)]
pub struct GetStateStatus {}

/// Save the actor's state padded with `pad` extra bytes (its value unchanged); replies with the
/// save's error code name when it failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
#[message(reply = Result<(), String>)]
pub struct SavePadded {
    pub pad: u64,
}

/// Trap the instance (a panic in the handler), so the host restarts it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
pub struct Crash {}

/// One small write from a producer (batching example).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
pub struct Write {
    pub producer: String,
    /// 1, 2, 3, ... per producer and round.
    pub seq: u64,
    pub value: u64,
}

/// Send `count` writes to `to`, waiting for room; replies with the number sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[message(reply = u64)]
pub struct Produce {
    pub to: String,
    pub count: u64,
}

/// What a writer has made durable, as of its last committed save.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[message(reply = Ledger)]
pub struct GetLedger {}

/// A writer's durable tallies: per producer, and how the writes were committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Ledger {
    pub tallies: Vec<Tally>,
    /// Writes committed.
    pub writes: u64,
    /// Saves committed (each one durable transaction).
    pub commits: u64,
    /// Batches handed out because they were full.
    pub flushed_by_size: u64,
    /// Batches handed out because their first write had waited long enough.
    pub flushed_by_time: u64,
}

/// One producer's committed writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Tally {
    pub producer: String,
    pub count: u64,
    pub value_sum: u64,
    pub last_seq: u64,
    /// Every write came with the next sequence number (a new round starts again at 1).
    pub in_order: bool,
}

impl Ledger {
    /// Adds one write.
    pub fn apply(&mut self, w: &Write) {
        let at = match self.tallies.iter().position(|t| t.producer == w.producer) {
            Some(at) => at,
            None => {
                self.tallies.push(Tally {
                    producer: w.producer.clone(),
                    in_order: true,
                    ..Tally::default()
                });
                self.tallies.len() - 1
            }
        };
        let t = &mut self.tallies[at];
        if w.seq != t.last_seq + 1 && w.seq != 1 {
            t.in_order = false;
        }
        t.last_seq = w.seq;
        t.count += 1;
        t.value_sum += w.value;
        self.writes += 1;
    }
}

/// One sensor reading (streaming example): an item of the source's stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    pub sensor: String,
    /// Event time: when the reading was taken.
    pub time_ms: u64,
    pub value: f64,
}

/// Opens the stream of `Reading`s from the source to the processor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
pub struct Readings {}

/// Stream the generated readings for `seed` to `to`; replies with the number sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
#[message(reply = Result<u64, String>)]
pub struct Emit {
    pub to: String,
    pub seed: u64,
    pub sensors: u64,
    pub count: u64,
}

/// A window's average for one sensor (the processor to the sink). `update`: a late reading
/// changed a window that had been reported; this replaces that report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
pub struct WindowAverage {
    pub sensor: String,
    pub start_ms: u64,
    pub end_ms: u64,
    pub average: f64,
    pub count: u64,
    pub update: bool,
}

/// A window whose average crossed the threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
pub struct Alert {
    pub sensor: String,
    pub start_ms: u64,
    pub end_ms: u64,
    pub average: f64,
}

/// A reading that came after its window's allowed lateness (the side output).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
pub struct LateReading {
    pub reading: Reading,
}

/// The stream ended and every window was reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
pub struct EndOfReadings {
    pub late_items: u64,
}

/// What the sink received.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
#[message(reply = SinkResults)]
pub struct GetResults {}

/// The sink's record: the latest average per sensor and window, alerts, late readings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SinkResults {
    pub averages: Vec<WindowAverage>,
    pub alerts: Vec<Alert>,
    pub late: Vec<Reading>,
    pub done: bool,
}

/// The streaming example's seeded readings, in the order the source sends them: one every
/// 250 ms of event time, each taken up to 1.5 s earlier than its slot (out of order, within the
/// processor's 2 s bound), from `sensors` sensors; sensor `s0` runs hot in every third 10 s
/// window. Two readings are inserted on purpose, as `late_within` and `late_beyond` below.
pub struct Generated {
    pub readings: Vec<Reading>,
    /// Index of a reading for a window that has fired but is within the allowed lateness
    /// (5 s): it must update that window.
    pub late_within: usize,
    /// Index of a reading for a window past its allowed lateness: it must go to the side output.
    pub late_beyond: usize,
}

/// See [`Generated`]. Deterministic for a seed.
pub fn generate_readings(seed: u64, sensors: u64, count: u64) -> Generated {
    let mut state = seed | 1;
    let mut next = move || {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let sensors = sensors.max(1);
    let mut readings = Vec::new();
    let (mut late_within, mut late_beyond) = (usize::MAX, usize::MAX);
    let mut max_time = 0u64;
    for k in 0..count {
        let time_ms = (k * 250 + 1500).saturating_sub(next() % 1500);
        let sensor = next() % sensors;
        let hot = sensor == 0 && (time_ms / 10_000) % 3 == 0;
        let value = 20.0 + (next() % 1000) as f64 / 100.0 + if hot { 8.0 } else { 0.0 };
        readings.push(Reading {
            sensor: format!("s{sensor}"),
            time_ms,
            value,
        });
        max_time = max_time.max(time_ms);
        // Past the first minute, once the watermark (max − 2 s) is less than 5 s past the
        // latest window end: a reading for the window that just fired is late but within the
        // lateness; then one for the window before it is beyond.
        let watermark = max_time.saturating_sub(2_000);
        let end = watermark / 10_000 * 10_000;
        if late_within == usize::MAX && k > 240 && watermark - end < 4_000 && end >= 20_000 {
            late_within = readings.len();
            readings.push(Reading {
                sensor: "s1".into(),
                time_ms: end - 500,
                value: 99.0,
            });
        } else if late_within != usize::MAX && late_beyond == usize::MAX {
            late_beyond = readings.len();
            readings.push(Reading {
                sensor: "s1".into(),
                time_ms: end - 10_500,
                value: 77.0,
            });
        }
    }
    Generated {
        readings,
        late_within,
        late_beyond,
    }
}
