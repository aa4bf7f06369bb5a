//! The event store as the host functions see it: the [`EventStore`] trait.
//!
//! The `events_*` host functions (`imports/events.rs`) reach actors' event logs through this
//! trait, never through the SQLite [`Store`] directly, so a distributed backend (a log replicated
//! across hosts) can take the store's place later without a change to the ABI, the SDK or actor
//! code. The embedded [`Store`] implements it; durable reminders are not part of it and stay on
//! [`Store`].
//!
//! Writes ([`append`](EventStore::append), [`snapshot`](EventStore::snapshot)) are queued when
//! the method returns and complete through a boxed future once durable, so a backend may take as
//! long as its commit takes without holding a thread. Reads are synchronous and short (one
//! chunk of at most `max_bytes`); callers run them off the guest's turn, on tokio's blocking
//! pool, where a backend that reads over the network may block as well. Live readers of a kind
//! wait on [`committed`](EventStore::committed) instead of polling.
//!
//! Every backend keeps the contract documented on [`Store`]'s methods: gap-free sequence numbers
//! per actor, all-or-none appends that fail alone with [`StoreError::Conflict`] when the log
//! moved on, nothing acknowledged before it is durable, global positions that become visible in
//! increasing order, and rows that fail verification reported as [`StoreError::Corrupt`], never
//! served.

use std::sync::Arc;

use bunraku_abi::{EventBatch, NewEvent, Snapshot, Until};
use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::watch;

use crate::store::{Store, StoreError};

/// Actors' event logs: appends with optimistic concurrency, snapshots, and reads of one log or
/// of every log of a kind. See the [module documentation](self).
pub trait EventStore: Send + Sync + 'static {
    /// Queues an append of `events` to the log of `actor`, numbered from `expected + 1` and
    /// stamped `time_ms`; the future completes with the log's new last sequence number once
    /// durable, or fails with [`StoreError::Conflict`] when the log does not end at `expected`.
    /// See [`Store::append`].
    fn append(
        &self,
        actor: Arc<str>,
        expected: u64,
        events: Vec<NewEvent>,
        time_ms: u64,
    ) -> BoxFuture<'static, Result<u64, StoreError>>;

    /// Queues a snapshot of the state of `actor` after its event `snapshot.seq`; the future
    /// completes once durable, or fails with [`StoreError::Invalid`] when `snapshot.seq` is past
    /// the end of the log. See [`Store::snapshot`].
    fn snapshot(
        &self,
        actor: Arc<str>,
        snapshot: Snapshot,
    ) -> BoxFuture<'static, Result<(), StoreError>>;

    /// Reads one chunk of the log of `actor`: the events after `from` (or after the latest
    /// snapshot at or before the end, with `snapshot`) up to `until`, at most `max_bytes` (at
    /// least one event). See [`Store::read`].
    fn read(
        &self,
        actor: &str,
        from: u64,
        until: Until,
        snapshot: bool,
        max_bytes: usize,
    ) -> Result<EventBatch, StoreError>;

    /// Reads one chunk of the events of every actor of kind `kind` after global position
    /// `after_pos`, in commit order. See [`Store::read_type`].
    fn read_type(
        &self,
        kind: &str,
        after_pos: u64,
        max_bytes: usize,
    ) -> Result<EventBatch, StoreError>;

    /// The highest committed global position, updated after every commit that added events.
    /// See [`Store::committed`].
    fn committed(&self) -> watch::Receiver<u64>;

    /// The last sequence number of the log of `actor` (`0` when it is empty).
    fn last_seq(&self, actor: &str) -> Result<u64, StoreError>;
}

impl EventStore for Store {
    fn append(
        &self,
        actor: Arc<str>,
        expected: u64,
        events: Vec<NewEvent>,
        time_ms: u64,
    ) -> BoxFuture<'static, Result<u64, StoreError>> {
        Store::append(self, actor, expected, events, time_ms).boxed()
    }

    fn snapshot(
        &self,
        actor: Arc<str>,
        snapshot: Snapshot,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        Store::snapshot(self, actor, snapshot).boxed()
    }

    fn read(
        &self,
        actor: &str,
        from: u64,
        until: Until,
        snapshot: bool,
        max_bytes: usize,
    ) -> Result<EventBatch, StoreError> {
        Store::read(self, actor, from, until, snapshot, max_bytes)
    }

    fn read_type(
        &self,
        kind: &str,
        after_pos: u64,
        max_bytes: usize,
    ) -> Result<EventBatch, StoreError> {
        Store::read_type(self, kind, after_pos, max_bytes)
    }

    fn committed(&self) -> watch::Receiver<u64> {
        Store::committed(self)
    }

    fn last_seq(&self, actor: &str) -> Result<u64, StoreError> {
        Store::last_seq(self, actor)
    }
}

#[cfg(test)]
mod tests {
    use bunraku_abi::{NewEvent, Until};
    use futures::executor::block_on;

    use super::*;
    use crate::store::StoreOptions;

    #[test]
    fn the_sqlite_store_serves_events_through_the_trait() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path(), StoreOptions::default()).unwrap();
        let events: &dyn EventStore = &store;
        let new = vec![NewEvent {
            version: 1,
            payload: b"e".to_vec(),
        }];
        assert_eq!(block_on(events.append("k/a".into(), 0, new, 5)), Ok(1));
        assert_eq!(events.last_seq("k/a"), Ok(1));
        let batch = events.read("k/a", 0, Until::Latest, false, 1024).unwrap();
        assert_eq!(batch.events.len(), 1);
        assert_eq!(events.read_type("k", 0, 1024).unwrap().events.len(), 1);
        assert_eq!(*events.committed().borrow(), batch.events[0].pos);
    }
}
