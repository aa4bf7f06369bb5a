//! The bookkeeping of a saga participant that deduplicates by idempotency key: [`Participant`].
//!
//! A participant (`inventory`, `payment`, `shipping`) saves **one value**: its own state, a
//! [`Dedup`] table of the replies it gave per key, how many times each key's request was
//! applied, and how many requests were answered from the table. One `ctx.save` makes an effect
//! and the record of its reply durable together, so a request repeated with a key already
//! applied is answered with the recorded reply ([`Participant::replay`]) and not applied again.
//! A save that fails traps the instance ([`Participant::commit`]): the requester sees `target
//! failed`, an unknown outcome, and retries with the same key, so a reply is only ever given
//! for an effect that is durable.
//!
//! A handler reads the key ([`key_of`]), answers a replay, and otherwise computes the next
//! state from a clone of [`Participant::state`] and commits it with its reply:
//!
//! ```
//! use bunraku_sdk::prelude::*;
//! use bunraku_sdk::testing::TestActor;
//! use protocol::participant::{Participant, key_of};
//!
//! #[derive(Serialize, Deserialize, Message)]
//! #[message(reply = Result<u64, String>)]
//! struct Credit { account: String, amount: u64 }
//!
//! #[derive(Default)]
//! struct Wallet { books: Participant<u64> }
//!
//! #[actor]
//! impl Wallet {
//!     async fn on_start(&mut self, ctx: &Ctx) -> Result<(), Error> {
//!         self.books = ctx.load()?.unwrap_or_default();
//!         Ok(())
//!     }
//!
//!     #[handler]
//!     async fn credit(&mut self, ctx: &Ctx, msg: Credit) -> Result<u64, String> {
//!         let key = key_of(ctx, || format!("{}/credit", msg.account));
//!         if let Some(reply) = self.books.replay(ctx, &key).await {
//!             return reply;
//!         }
//!         let next = self.books.state + msg.amount;
//!         let reply = Ok(next);
//!         self.books.commit(ctx, next, &key, &reply, true).await;
//!         reply
//!     }
//! }
//!
//! let mut wallet = TestActor::<Wallet>::start_default();
//! let credit = Credit { account: "ann".into(), amount: 5 };
//! assert_eq!(wallet.call_keyed(&credit, "t-1").unwrap(), Ok(5));
//! assert_eq!(wallet.call_keyed(&credit, "t-1").unwrap(), Ok(5), "applied once");
//! let books = &wallet.actor().books;
//! assert_eq!((books.state, books.replayed), (5, 1));
//! assert_eq!(books.applied_keys()[0].times, 1);
//! ```

use std::collections::BTreeMap;

use bunraku_sdk::dedup::Dedup;
use bunraku_sdk::prelude::*;
use serde::de::DeserializeOwned;

use crate::orders::Applied;

/// A participant's state `S` with its deduplication records, saved as one value. See the
/// [module documentation](self).
///
/// It encodes as `S`'s fields followed by `dedup`, `applied` and `replayed` (postcard has no
/// framing for a nested struct), so a state saved by a participant that kept those three
/// fields after its own in one flat struct still loads.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Participant<S> {
    /// The participant's own state.
    pub state: S,
    /// The reply given per idempotency key.
    pub dedup: Dedup,
    /// How many times each key's request was applied.
    pub applied: BTreeMap<String, u64>,
    /// Requests answered from the record of their key (not applied again).
    pub replayed: u64,
}

impl<S: Serialize> Participant<S> {
    /// Answers `key` from its record, if a request with it was handled before, and counts the
    /// replay (saved on a best-effort basis: only a report depends on it).
    pub async fn replay<R: DeserializeOwned>(&mut self, ctx: &Ctx, key: &str) -> Option<R> {
        let reply = self.dedup.get(key)?;
        self.replayed += 1;
        ctx.info(format_args!(
            "{key}: already applied, answering from the record"
        ));
        if let Err(e) = ctx.save(self).await {
            ctx.warn(format_args!("the replay count was not saved: {e}"));
        }
        Some(reply)
    }

    /// Makes `next` the state, with `reply` recorded under `key` (and the key counted as applied
    /// when `applied`), durable in one save. A refusal that applied nothing is committed with
    /// the state unchanged and `applied` false, so a retry gets the same answer.
    ///
    /// # Panics
    ///
    /// When the save fails: the effect is not durable, so it must not be answered. The panic
    /// traps the instance (its unsaved state is discarded with it) and the requester, seeing
    /// an unknown outcome, retries with the same key.
    pub async fn commit<R: Serialize>(
        &mut self,
        ctx: &Ctx,
        next: S,
        key: &str,
        reply: &R,
        applied: bool,
    ) {
        self.state = next;
        self.dedup.record(key, reply);
        if applied {
            *self.applied.entry(key.to_owned()).or_default() += 1;
        }
        if let Err(e) = ctx.save(self).await {
            panic!("{key}: the state was not saved ({e}); failing so the requester retries");
        }
    }

    /// How many times each key's request was applied, by key: the `applied` of the reports.
    pub fn applied_keys(&self) -> Vec<Applied> {
        self.applied
            .iter()
            .map(|(key, times)| Applied {
                key: key.clone(),
                times: *times,
            })
            .collect()
    }
}

/// The key a request came with, or one derived from what it is about (a request sent without
/// a key, by an operator).
pub fn key_of(ctx: &Ctx, derived: impl FnOnce() -> String) -> String {
    ctx.idempotency_key().map_or_else(derived, str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How a participant laid out what it saved before [`Participant`]: its own fields, then
    /// the records, in one struct.
    #[derive(Default, Serialize, Deserialize)]
    struct Flat {
        stock: BTreeMap<String, u64>,
        dedup: Dedup,
        applied: BTreeMap<String, u64>,
        replayed: u64,
    }

    #[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
    struct Stock {
        stock: BTreeMap<String, u64>,
    }

    #[test]
    fn a_flat_state_saved_before_loads_as_a_participant() {
        let mut flat = Flat {
            stock: BTreeMap::from([("widget".to_owned(), 3)]),
            replayed: 2,
            ..Flat::default()
        };
        flat.dedup.record("order/1/reserve", &Ok::<u64, String>(3));
        flat.applied.insert("order/1/reserve".into(), 1);
        let bytes = bunraku_sdk::abi::encode(&flat);

        let books: Participant<Stock> = bunraku_sdk::abi::decode(&bytes).unwrap();
        assert_eq!(books.state.stock, flat.stock);
        assert_eq!(books.dedup, flat.dedup);
        assert_eq!(books.applied_keys()[0].times, 1);
        assert_eq!(books.replayed, 2);
        assert_eq!(
            bunraku_sdk::abi::encode(&books),
            bytes,
            "and saves the same bytes"
        );
    }
}
