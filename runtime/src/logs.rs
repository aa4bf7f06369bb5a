//! Actor logs: every line a guest logs (through `log` or its stdout and stderr) becomes a
//! `tracing` event tagged with the actor, and is kept in a bounded ring for `bunraku logs` and
//! broadcast to followers.

use std::collections::VecDeque;
use std::sync::Mutex;

use bunraku_abi::level;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// One log line of an actor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Milliseconds since the Unix epoch on the host clock.
    pub at_ms: u64,
    /// The actor's name.
    pub actor: String,
    /// Which instance.
    pub instance: u32,
    /// `error`, `warn`, `info`, `debug` or `trace`.
    pub level: String,
    /// The text.
    pub message: String,
}

/// How many recent lines are kept.
pub const LOG_RING: usize = 1000;

/// Where actor logs go.
pub struct LogSink {
    clock: std::sync::Arc<dyn crate::clock::Clock>,
    ring: Mutex<VecDeque<LogLine>>,
    tx: broadcast::Sender<LogLine>,
}

fn level_name(lvl: u32) -> &'static str {
    match lvl {
        level::ERROR => "error",
        level::WARN => "warn",
        level::INFO => "info",
        level::DEBUG => "debug",
        _ => "trace",
    }
}

impl LogSink {
    pub(crate) fn new(clock: std::sync::Arc<dyn crate::clock::Clock>) -> Self {
        Self {
            clock,
            ring: Mutex::new(VecDeque::new()),
            tx: broadcast::channel(LOG_RING).0,
        }
    }

    /// Records one line.
    pub(crate) fn emit(&self, actor: &str, instance: u32, lvl: u32, message: &str) {
        match lvl {
            level::ERROR => tracing::error!(target: "actor", actor, instance, "{message}"),
            level::WARN => tracing::warn!(target: "actor", actor, instance, "{message}"),
            level::INFO => tracing::info!(target: "actor", actor, instance, "{message}"),
            level::DEBUG => tracing::debug!(target: "actor", actor, instance, "{message}"),
            _ => tracing::trace!(target: "actor", actor, instance, "{message}"),
        }
        if lvl > level::INFO {
            return;
        }
        let line = LogLine {
            at_ms: self.clock.unix_now().as_millis() as u64,
            actor: actor.to_owned(),
            instance,
            level: level_name(lvl).to_owned(),
            message: message.to_owned(),
        };
        let mut ring = self.ring.lock().unwrap();
        if ring.len() == LOG_RING {
            ring.pop_front();
        }
        ring.push_back(line.clone());
        drop(ring);
        let _ = self.tx.send(line);
    }

    /// The recent lines and a receiver for the lines that follow.
    pub fn follow(&self) -> (Vec<LogLine>, broadcast::Receiver<LogLine>) {
        let ring = self.ring.lock().unwrap();
        (ring.iter().cloned().collect(), self.tx.subscribe())
    }
}
