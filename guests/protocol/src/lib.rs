//! Message types shared by the guests in this workspace. Types with the same wire name and layout
//! are the same message to every actor; keeping them in one crate keeps them the same.

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
