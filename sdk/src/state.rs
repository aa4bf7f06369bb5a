//! Persisted state: [`Ctx::save`] and [`Ctx::load`].
//!
//! An actor keeps one value in the host's embedded store, postcard-encoded. `save` replaces it
//! and completes once it is durable (committed to disk, possibly together with other actors'
//! saves); `load` reads back the last value saved. The value belongs to the actor's address and
//! instance: a restarted instance, and the same actor in a restarted host, load what was saved
//! before.

use bunraku_abi::{Codec, Completion, ErrorCode, decode_result};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::executor::Op;
use crate::{Ctx, Error, codec, sys};

/// The first buffer `load` reads into; a larger state costs one more host call.
const FIRST_READ: usize = 1024;

impl Ctx {
    /// Saves `state` as this actor's persisted state, replacing what it saved before, and waits
    /// until it is durable.
    ///
    /// The state is encoded with postcard and may be at most the actor's `max_message_bytes`
    /// (default 1 MiB). The saves of one actor apply in the order they were made. Once this
    /// returns `Ok`, [`load`](Ctx::load) returns the state, in this instance, in the instance
    /// that replaces it after a failure, and after the host restarts. Dropping the future before
    /// it completes does not withdraw the save.
    ///
    /// Errors: [`ErrorCode::TooLarge`] (nothing was saved; the actor keeps running),
    /// [`ErrorCode::StorageUnavailable`] (the host has no data directory, or the disk is full or
    /// failing: the save may not be durable), [`ErrorCode::Denied`] (no storage grant),
    /// [`ErrorCode::Malformed`] (the state does not encode).
    ///
    /// ```
    /// use bunraku_sdk::prelude::*;
    /// use bunraku_sdk::testing::TestActor;
    ///
    /// #[derive(Serialize, Deserialize, Message)]
    /// struct Deposit { amount: u64 }
    ///
    /// #[derive(Serialize, Deserialize, Default)]
    /// struct Account { balance: u64 }
    ///
    /// #[derive(Default)]
    /// struct Bank { account: Account }
    ///
    /// #[actor]
    /// impl Bank {
    ///     async fn on_start(&mut self, ctx: &Ctx) -> Result<(), Error> {
    ///         // Nothing saved yet (`None`): start from the default.
    ///         self.account = ctx.load()?.unwrap_or_default();
    ///         Ok(())
    ///     }
    ///
    ///     #[handler]
    ///     async fn deposit(&mut self, ctx: &Ctx, msg: Deposit) {
    ///         self.account.balance += msg.amount;
    ///         if let Err(e) = ctx.save(&self.account).await {
    ///             ctx.error(format_args!("balance not saved: {e}"));
    ///         }
    ///     }
    /// }
    ///
    /// // A restarted actor starts from what it saved.
    /// let mut bank = TestActor::<Bank>::builder()
    ///     .saved_state(&Account { balance: 10 })
    ///     .start_default();
    /// bank.send(&Deposit { amount: 5 }).unwrap();
    /// assert_eq!(bank.actor().account.balance, 15);
    /// assert_eq!(bank.saved_state::<Account>().unwrap().balance, 15);
    /// ```
    pub async fn save<S: Serialize + ?Sized>(&self, state: &S) -> Result<(), Error> {
        let bytes = codec::encode(Codec::Postcard, state).map_err(|e| {
            Error::new(
                ErrorCode::Malformed,
                format!("the state does not encode: {e}"),
            )
        })?;
        let raw = decode_result(sys::state_save(&bytes))?;
        let op = match u32::try_from(raw) {
            Ok(op) if op > 0 => op,
            _ => {
                return Err(Error::new(
                    ErrorCode::Internal,
                    format!("the host returned operation id {raw}"),
                ));
            }
        };
        drop(bytes);
        match Op::new(op).await {
            Completion::Done => Ok(()),
            Completion::Failed(code) => Err(code.into()),
            Completion::Reply(_) => Err(Error::new(
                ErrorCode::Internal,
                "a save completed with a reply",
            )),
        }
    }

    /// Loads the state this actor last saved: `None` when it never saved any.
    ///
    /// Synchronous: the host reads it from its store at once. Call it in `on_start` to pick up
    /// where a failed instance (or a stopped host) left off; see [`save`](Ctx::save) for an
    /// example.
    ///
    /// Errors: [`ErrorCode::Malformed`] when the saved bytes do not decode as an `S` (the state
    /// was saved by another version of the actor with another layout; nothing is lost, and
    /// saving a new state replaces it), [`ErrorCode::StorageUnavailable`],
    /// [`ErrorCode::Denied`].
    pub fn load<S: DeserializeOwned>(&self) -> Result<Option<S>, Error> {
        let mut buf = vec![0u8; FIRST_READ];
        let len = loop {
            let len = match decode_result(sys::state_load(&mut buf)) {
                Ok(len) => len as usize,
                Err(ErrorCode::NotFound) => return Ok(None),
                Err(code) => return Err(code.into()),
            };
            if len <= buf.len() {
                break len;
            }
            // Too large for the buffer: nothing was written. Grow and ask again (the state may
            // have been replaced meanwhile, so loop until it fits).
            buf.resize(len, 0);
        };
        codec::decode(Codec::Postcard, &buf[..len])
            .map(Some)
            .map_err(|e| {
                Error::new(
                    ErrorCode::Malformed,
                    format!(
                        "the saved state does not decode as `{}`: {e}",
                        std::any::type_name::<S>()
                    ),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use crate::testing::TestActor;
    use crate::{Ctx, Error, ErrorCode, Message, actor};

    #[derive(Serialize, Deserialize, Message)]
    #[message(reply = Result<u64, String>)]
    struct Bump;

    #[derive(Serialize, Deserialize, Message)]
    #[message(reply = Result<Option<String>, String>)]
    struct LoadText;

    #[derive(Default)]
    struct Counter {
        n: u64,
        loaded: Option<Result<Option<u64>, Error>>,
    }

    #[actor]
    impl Counter {
        async fn on_start(&mut self, ctx: &Ctx) {
            let loaded = ctx.load::<u64>();
            self.n = loaded.clone().ok().flatten().unwrap_or(0);
            self.loaded = Some(loaded);
        }

        #[handler]
        async fn bump(&mut self, ctx: &Ctx, _msg: Bump) -> Result<u64, String> {
            self.n += 1;
            ctx.save(&self.n).await.map_err(|e| e.to_string())?;
            Ok(self.n)
        }

        #[handler]
        async fn load_text(&mut self, ctx: &Ctx, _msg: LoadText) -> Result<Option<String>, String> {
            ctx.load::<String>().map_err(|e| e.to_string())
        }
    }

    #[test]
    fn nothing_saved_loads_as_none() {
        let t = TestActor::<Counter>::start_default();
        assert_eq!(t.actor().loaded, Some(Ok(None)));
        assert_eq!(t.saved_bytes(), None);
    }

    #[test]
    fn a_saved_state_is_what_the_next_start_loads() {
        let mut t = TestActor::<Counter>::start_default();
        assert_eq!(t.call(&Bump).unwrap(), Ok(1));
        assert_eq!(t.call(&Bump).unwrap(), Ok(2));
        assert_eq!(t.saved_state::<u64>(), Some(2));
        let bytes = t.saved_bytes().unwrap().to_vec();

        let restarted = TestActor::<Counter>::builder()
            .saved_bytes(bytes)
            .start_default();
        assert_eq!(restarted.actor().n, 2);
    }

    #[test]
    fn a_state_larger_than_the_first_buffer_loads_whole() {
        let big = "x".repeat(super::FIRST_READ * 3);
        let mut t = TestActor::<Counter>::builder()
            .saved_state(&big)
            .start_default();
        assert_eq!(t.call(&LoadText).unwrap(), Ok(Some(big)));
    }

    #[test]
    fn a_state_that_no_longer_decodes_is_a_typed_error() {
        // A string where a u64 is expected now: 0xff is not a valid varint end.
        let t = TestActor::<Counter>::builder()
            .saved_bytes(vec![0xff; 12])
            .start_default();
        let Some(Err(e)) = &t.actor().loaded else {
            panic!("expected a decode error, got {:?}", t.actor().loaded);
        };
        assert_eq!(e.code(), ErrorCode::Malformed);
        assert!(e.message().contains("u64"), "{e}");
    }

    #[test]
    fn an_unavailable_store_fails_save_and_load_with_storage_unavailable() {
        let mut t = TestActor::<Counter>::builder()
            .storage_unavailable(true)
            .start_default();
        let loaded = t.actor().loaded.clone();
        assert_eq!(
            loaded.map(|l| l.map_err(|e| e.code())),
            Some(Err(ErrorCode::StorageUnavailable))
        );
        assert_eq!(t.call(&Bump).unwrap(), Err("storage unavailable".into()));
        t.set_storage_unavailable(false);
        assert_eq!(t.call(&Bump).unwrap(), Ok(2));
    }
}
