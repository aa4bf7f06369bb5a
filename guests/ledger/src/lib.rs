//! A minimal event-sourced actor for the host's crash and durability tests: the virtual actor
//! type `ledger` (`ledger/<key>`), whose log is one [`LedgerEvent::Recorded`] per [`Record`].
//!
//! `Record` is answered with the log's new sequence number only once the host acknowledged the
//! append as committed, so every acknowledged entry must be in the log after any crash, and the
//! log never holds an entry twice unless it was recorded twice. The event's bytes are pinned:
//! postcard of [`LedgerEvent`], the variant index `0` as a varint, then the entry as a string
//! (its length as a varint, then its UTF-8 bytes), so a test can read the store directly.
//!
//! A `Record` sent with an idempotency key is recorded at most once per key
//! ([`Journal::execute_once`]): its event is followed in the log by the SDK's marker of the key
//! (a record of version 0), and the reply is the marker's sequence number (a repeat gets the same
//! number). Without a key, each `Record` appends exactly one record. A snapshot is stored every
//! [`Entries::SNAPSHOT_EVERY`] records.

use bunraku_sdk::journal::{Aggregate, EventsQuery, Journal, StateQuery};
use bunraku_sdk::prelude::*;

/// The only event: an entry was recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LedgerEvent {
    Recorded { entry: String },
}

/// The state: how many entries, and the last one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entries {
    pub count: u64,
    pub last: Option<String>,
}

impl Aggregate for Entries {
    /// The entry to record.
    type Command = String;
    type Event = LedgerEvent;
    type Rejection = String;

    const SNAPSHOT_EVERY: u64 = 10;

    fn handle(&self, entry: String) -> Result<Vec<LedgerEvent>, String> {
        Ok(vec![LedgerEvent::Recorded { entry }])
    }

    fn apply(&mut self, event: &LedgerEvent) {
        let LedgerEvent::Recorded { entry } = event;
        self.count += 1;
        self.last = Some(entry.clone());
    }
}

/// Append one entry; answered with the log's new sequence number once it is committed, or why
/// it was not recorded (nothing was appended then).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[message(reply = Result<u64, String>)]
pub struct Record {
    pub entry: String,
}

/// `(sequence number of the last record, number of entries)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[message(reply = (u64, u64))]
pub struct Count {}

#[derive(Default)]
pub struct Ledger {
    journal: Journal<Entries>,
}

#[actor]
impl Ledger {
    async fn on_start(&mut self, ctx: &Ctx) -> Result<(), Error> {
        self.journal = Journal::recover(ctx).await?;
        Ok(())
    }

    #[handler]
    async fn record(&mut self, ctx: &Ctx, msg: Record) -> Result<u64, String> {
        let outcome = match ctx.idempotency_key() {
            Some(key) => self.journal.execute_once(ctx, key, msg.entry).await,
            None => self.journal.execute(ctx, msg.entry).await,
        };
        match outcome {
            Ok(Ok(seq)) => Ok(seq),
            Ok(Err(rejection)) => Err(rejection),
            Err(e) => {
                if e.code() == ErrorCode::Conflict {
                    // The journal is behind its log: catch up before the next command.
                    match Journal::recover(ctx).await {
                        Ok(journal) => self.journal = journal,
                        Err(e) => ctx.error(format_args!("recovering the journal: {e}")),
                    }
                }
                Err(e.to_string())
            }
        }
    }

    #[handler]
    async fn count(&self, _ctx: &Ctx, _msg: Count) -> (u64, u64) {
        (self.journal.seq(), self.journal.state().count)
    }

    #[handler]
    async fn events(&self, ctx: &Ctx, query: EventsQuery) -> Result<Vec<String>, String> {
        self.journal.answer_events(ctx, query).await
    }

    #[handler]
    async fn state(&self, ctx: &Ctx, query: StateQuery) -> Result<String, String> {
        self.journal.answer_state(ctx, query).await
    }
}

#[cfg(test)]
mod tests {
    use bunraku_sdk::testing::TestActor;

    use super::*;

    fn record(entry: &str) -> Record {
        Record {
            entry: entry.to_owned(),
        }
    }

    #[test]
    fn each_record_appends_one_event_with_pinned_bytes() {
        let mut l = TestActor::<Ledger>::builder()
            .name("ledger/a")
            .start_default();
        assert_eq!(l.call(&record("one")).unwrap(), Ok(1));
        assert_eq!(l.call(&record("two")).unwrap(), Ok(2));
        assert_eq!(l.call(&Count {}).unwrap(), (2, 2));
        let events = l.events();
        assert_eq!(events[0].payload, [0, 3, b'o', b'n', b'e']);
        assert_eq!(events[1].version, 1);
        assert_eq!(
            l.event_log().decoded::<LedgerEvent>("ledger/a")[1],
            LedgerEvent::Recorded {
                entry: "two".into()
            }
        );
    }

    #[test]
    fn a_keyed_record_is_recorded_once() {
        let mut l = TestActor::<Ledger>::builder()
            .name("ledger/k")
            .start_default();
        assert_eq!(l.call_keyed(&record("x"), "k").unwrap(), Ok(2));
        assert_eq!(l.call_keyed(&record("x"), "k").unwrap(), Ok(2));
        assert_eq!(l.call(&Count {}).unwrap(), (2, 1));
    }

    #[test]
    fn a_new_activation_replays_from_the_snapshot() {
        let mut l = TestActor::<Ledger>::builder()
            .name("ledger/b")
            .start_default();
        for n in 0..25 {
            assert_eq!(l.call(&record(&n.to_string())).unwrap(), Ok(n + 1));
        }
        let log = l.event_log();
        assert_eq!(log.snapshots_of("ledger/b").last().unwrap().seq, 20);
        drop(l);
        let mut l = TestActor::<Ledger>::builder()
            .name("ledger/b")
            .events(log)
            .start_default();
        assert_eq!(l.call(&Count {}).unwrap(), (25, 25));
        assert_eq!(l.actor().journal.state().last.as_deref(), Some("24"));
        assert_eq!(l.call(&record("next")).unwrap(), Ok(26));
    }

    #[test]
    fn a_refused_append_is_an_error_and_nothing_is_counted() {
        let mut l = TestActor::<Ledger>::builder()
            .name("ledger/c")
            .start_default();
        l.set_storage_unavailable(true);
        assert!(l.call(&record("lost")).unwrap().is_err());
        l.set_storage_unavailable(false);
        assert_eq!(l.call(&record("kept")).unwrap(), Ok(1));
        assert_eq!(l.call(&Count {}).unwrap(), (1, 1));
    }
}
