//! Participant-side deduplication by idempotency key: [`Dedup`].
//!
//! Delivery between actors is at most once, and a requester that times out does not know
//! whether its request was applied. It retries with the same idempotency key
//! ([`Ctx::request_keyed`](crate::Ctx::request_keyed)); the receiver reads the key with
//! [`Ctx::idempotency_key`](crate::Ctx::idempotency_key), and a [`Dedup`] kept *inside the
//! state it saves* remembers the reply it gave for each key it applied. Because the table is
//! part of the saved state, one [`Ctx::save`](crate::Ctx::save) makes the effect and the record
//! of it durable together: after a crash either both are there (the retry gets the recorded
//! reply) or neither is (the retry applies it).
//!
//! The table is bounded: past its capacity (10,000 keys by default,
//! [`Dedup::with_capacity`]) the oldest key is forgotten, so a retry must come within the
//! last *capacity* keyed requests to be recognised. Replies are kept postcard-encoded.
//!
//! Event-sourced actors get the same from [`Journal::execute_once`](crate::journal::Journal::execute_once),
//! which keeps a `Dedup` in its snapshots and rebuilds it on replay.
//!
//! ```
//! use bunraku_sdk::dedup::Dedup;
//! use bunraku_sdk::prelude::*;
//! use bunraku_sdk::testing::TestActor;
//!
//! #[derive(Serialize, Deserialize, Message)]
//! #[message(reply = Result<i64, String>)]
//! struct Credit { amount: i64 }
//!
//! /// Everything this actor saves: the balance and the replies it gave, saved together.
//! #[derive(Serialize, Deserialize, Default, Clone)]
//! struct Ledger { balance: i64, dedup: Dedup }
//!
//! #[derive(Default)]
//! struct Account { state: Ledger }
//!
//! #[actor]
//! impl Account {
//!     async fn on_start(&mut self, ctx: &Ctx) -> Result<(), Error> {
//!         self.state = ctx.load()?.unwrap_or_default();
//!         Ok(())
//!     }
//!
//!     #[handler]
//!     async fn credit(&mut self, ctx: &Ctx, msg: Credit) -> Result<i64, String> {
//!         let key = ctx.idempotency_key();
//!         // A retry of a request already applied: the same answer, applied once.
//!         if let Some(reply) = key.and_then(|k| self.state.dedup.get(k)) {
//!             return reply;
//!         }
//!         let mut next = self.state.clone();
//!         next.balance += msg.amount;
//!         let reply = Ok(next.balance);
//!         if let Some(key) = key {
//!             next.dedup.record(key, &reply);
//!         }
//!         // The balance and the record of the reply become durable together.
//!         ctx.save(&next).await.map_err(|e| e.to_string())?;
//!         self.state = next;
//!         reply
//!     }
//! }
//!
//! let mut account = TestActor::<Account>::start_default();
//! assert_eq!(account.call_keyed(&Credit { amount: 5 }, "transfer-1").unwrap(), Ok(5));
//! // The requester timed out and retries: not applied again.
//! assert_eq!(account.call_keyed(&Credit { amount: 5 }, "transfer-1").unwrap(), Ok(5));
//! assert_eq!(account.call_keyed(&Credit { amount: 2 }, "transfer-2").unwrap(), Ok(7));
//! assert_eq!(account.actor().state.balance, 7);
//!
//! // A restarted instance loads the table with the balance, and still recognises the retry.
//! let saved = account.saved_bytes().unwrap().to_vec();
//! let mut restarted = TestActor::<Account>::builder().saved_bytes(saved).start_default();
//! assert_eq!(restarted.call_keyed(&Credit { amount: 2 }, "transfer-2").unwrap(), Ok(7));
//! assert_eq!(restarted.actor().state.balance, 7);
//! ```

use std::collections::{BTreeMap, HashMap};

use bunraku_abi::Codec;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec;

/// How many keys a [`Dedup`] remembers unless told otherwise.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// The replies given to idempotency keys, oldest forgotten first. See the
/// [module documentation](self).
///
/// It serializes as its capacity and its entries, oldest first, so it can live inside a state
/// saved with [`Ctx::save`](crate::Ctx::save). Two tables are equal when they have the same
/// capacity and the same keys with the same replies in the same order.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(from = "Repr", into = "Repr")]
pub struct Dedup {
    capacity: usize,
    /// Key to (its place in `order`, the encoded reply).
    replies: HashMap<String, (u64, Vec<u8>)>,
    /// Keys by when they were recorded, oldest first.
    order: BTreeMap<u64, String>,
    /// The place of the next key recorded.
    next: u64,
}

/// How a [`Dedup`] is stored: capacity, then entries oldest first.
#[derive(Serialize, Deserialize)]
struct Repr {
    capacity: u64,
    entries: Vec<(String, Vec<u8>)>,
}

impl Default for Dedup {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

impl PartialEq for Dedup {
    fn eq(&self, other: &Self) -> bool {
        self.capacity == other.capacity
            && self.replies.len() == other.replies.len()
            && self.entries().eq(other.entries())
    }
}

impl Dedup {
    /// An empty table remembering at most `capacity` keys (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            replies: HashMap::new(),
            order: BTreeMap::new(),
            next: 0,
        }
    }

    /// The reply recorded for `key`, when a request with this key was already applied.
    ///
    /// `None` when the key is unknown (never recorded, or forgotten past the capacity), and also
    /// when the recorded reply does not decode as an `R` (the reply type changed since).
    pub fn get<R: DeserializeOwned>(&self, key: &str) -> Option<R> {
        codec::decode(Codec::Postcard, self.get_encoded(key)?).ok()
    }

    /// Records `reply` as the answer to `key`, replacing an earlier record of the key. Past the
    /// capacity, the oldest key is forgotten.
    ///
    /// # Panics
    ///
    /// When `reply` does not encode with postcard (a type serde cannot encode without knowing
    /// lengths up front; every derived type encodes).
    pub fn record<R: Serialize>(&mut self, key: impl Into<String>, reply: &R) {
        let bytes = codec::encode(Codec::Postcard, reply)
            .unwrap_or_else(|e| panic!("the reply to record does not encode: {e}"));
        self.record_encoded(key.into(), bytes);
    }

    /// Whether a reply is recorded for `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.replies.contains_key(key)
    }

    /// How many keys are recorded.
    pub fn len(&self) -> usize {
        self.replies.len()
    }

    /// Whether no key is recorded.
    pub fn is_empty(&self) -> bool {
        self.replies.is_empty()
    }

    /// The encoded reply recorded for `key`.
    pub(crate) fn get_encoded(&self, key: &str) -> Option<&[u8]> {
        self.replies.get(key).map(|(_, bytes)| bytes.as_slice())
    }

    /// Records an encoded reply for `key` (see [`record`](Self::record)).
    pub(crate) fn record_encoded(&mut self, key: String, bytes: Vec<u8>) {
        let place = self.next;
        self.next += 1;
        if let Some((old, _)) = self.replies.get(&key) {
            self.order.remove(old);
        }
        self.order.insert(place, key.clone());
        self.replies.insert(key, (place, bytes));
        while self.replies.len() > self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.replies.remove(&oldest);
        }
    }

    /// The entries, oldest first.
    fn entries(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.order.values().map(|key| {
            let (_, bytes) = &self.replies[key];
            (key.as_str(), bytes.as_slice())
        })
    }
}

impl From<Repr> for Dedup {
    fn from(repr: Repr) -> Self {
        let capacity = usize::try_from(repr.capacity).unwrap_or(usize::MAX);
        let mut dedup = Self::with_capacity(capacity);
        for (key, bytes) in repr.entries {
            dedup.record_encoded(key, bytes);
        }
        dedup
    }
}

impl From<Dedup> for Repr {
    fn from(dedup: Dedup) -> Self {
        let entries = dedup
            .entries()
            .map(|(key, bytes)| (key.to_owned(), bytes.to_vec()))
            .collect();
        Self {
            capacity: dedup.capacity as u64,
            entries,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_reply_is_returned_for_its_key() {
        let mut d = Dedup::default();
        assert!(d.is_empty());
        assert_eq!(d.get::<u64>("a"), None);
        d.record("a", &Ok::<u64, String>(7));
        assert!(d.contains("a"));
        assert_eq!(d.len(), 1);
        assert_eq!(d.get::<Result<u64, String>>("a"), Some(Ok(7)));
        assert!(!d.contains("b"));
    }

    #[test]
    fn the_oldest_key_is_forgotten_past_the_capacity() {
        let mut d = Dedup::with_capacity(3);
        for (i, key) in ["a", "b", "c", "d"].into_iter().enumerate() {
            d.record(key, &i);
        }
        assert_eq!(d.len(), 3);
        assert!(!d.contains("a"));
        assert_eq!(d.get::<usize>("d"), Some(3));
    }

    #[test]
    fn recording_a_key_again_replaces_it_and_makes_it_the_newest() {
        let mut d = Dedup::with_capacity(2);
        d.record("a", &1u8);
        d.record("b", &2u8);
        d.record("a", &3u8);
        d.record("c", &4u8);
        assert_eq!(d.get::<u8>("a"), Some(3));
        assert!(!d.contains("b"), "b was the oldest");
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn a_table_survives_encoding_with_its_order_and_capacity() {
        let mut d = Dedup::with_capacity(2);
        d.record("x", &"one");
        d.record("y", &"two");
        let bytes = postcard::to_allocvec(&d).unwrap();
        let mut back: Dedup = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, d);
        back.record("z", &"three");
        assert!(!back.contains("x"), "x is still the oldest after decoding");
        let json: Dedup = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        assert_eq!(json, d);
    }

    #[test]
    fn a_reply_of_another_type_reads_as_none() {
        let mut d = Dedup::default();
        d.record("k", &"text");
        assert_eq!(d.get::<bool>("k"), None);
    }

    #[test]
    fn a_zero_capacity_keeps_one_key() {
        let mut d = Dedup::with_capacity(0);
        d.record("a", &());
        d.record("b", &());
        assert_eq!(d.len(), 1);
        assert!(d.contains("b"));
    }
}
