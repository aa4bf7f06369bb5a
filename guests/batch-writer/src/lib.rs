//! The batching example's writer: makes small writes durable in the embedded store.
//!
//! With `batched = false` every `Write` is one `save` of the ledger: one committed transaction
//! per write. With `batched = true` writes go into a [`Batcher`] and a batch of up to
//! `max_items` writes, or whatever arrived within `max_wait_ms` of its first, is one `save`.
//! Both use the same store with the same durability (WAL, `synchronous=FULL`, acknowledged after
//! `COMMIT`). `GetLedger` answers what has been committed; writes held in the batcher are not in
//! it yet. The ledger is loaded again when the writer restarts; `on_stop` commits what the
//! batcher holds.

use bunraku_sdk::batch::Batcher;
use bunraku_sdk::prelude::*;
use protocol::{GetLedger, Ledger, Write};

/// Settings from the manifest.
#[derive(Debug, Serialize, Deserialize)]
pub struct Config {
    #[serde(default)]
    pub batched: bool,
    #[serde(default = "default_max_items")]
    pub max_items: usize,
    #[serde(default = "default_max_wait_ms")]
    pub max_wait_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            batched: false,
            max_items: default_max_items(),
            max_wait_ms: default_max_wait_ms(),
        }
    }
}

fn default_max_items() -> usize {
    256
}

fn default_max_wait_ms() -> u64 {
    20
}

/// The batcher's timer message.
#[derive(Debug, Serialize, Deserialize, Message)]
pub struct FlushDue {}

/// Why a batch is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    Single,
    Full,
    Waited,
    Stopping,
}

#[derive(Default)]
pub struct Writer {
    batcher: Option<Batcher<Write>>,
    /// What the last committed save holds.
    ledger: Ledger,
}

impl Writer {
    /// Applies `batch` to a copy of the ledger and saves it; the ledger moves on only once the
    /// save committed.
    async fn commit(&mut self, ctx: &Ctx, batch: Vec<Write>, why: Why) {
        if batch.is_empty() {
            return;
        }
        let mut next = self.ledger.clone();
        batch.iter().for_each(|w| next.apply(w));
        next.commits += 1;
        match why {
            Why::Full => next.flushed_by_size += 1,
            Why::Waited => next.flushed_by_time += 1,
            Why::Single | Why::Stopping => {}
        }
        match ctx.save(&next).await {
            Ok(()) => self.ledger = next,
            Err(e) => ctx.error(format_args!("{} writes not committed: {e}", batch.len())),
        }
    }
}

impl Writer {
    /// Commits what the batcher handed out, if anything.
    async fn commit_handed(
        &mut self,
        ctx: &Ctx,
        handed: Result<Option<Vec<Write>>, Error>,
        why: Why,
    ) {
        match handed {
            Ok(Some(batch)) => self.commit(ctx, batch, why).await,
            Ok(None) => {}
            Err(e) => ctx.error(format_args!("no flush timer: {e}")),
        }
    }
}

#[actor]
impl Writer {
    async fn on_start(&mut self, ctx: &Ctx, config: Config) {
        match ctx.load::<Ledger>() {
            Ok(saved) => self.ledger = saved.unwrap_or_default(),
            Err(e) => ctx.warn(format_args!("starting from an empty ledger: {e}")),
        }
        if config.batched {
            let wait = Duration::from_millis(config.max_wait_ms);
            self.batcher = Some(Batcher::new(config.max_items, wait));
        }
    }

    #[handler]
    async fn write(&mut self, ctx: &Ctx, msg: Write) {
        let Some(batcher) = &mut self.batcher else {
            return self.commit(ctx, vec![msg], Why::Single).await;
        };
        let handed = batcher.push(ctx, msg, &FlushDue {});
        self.commit_handed(ctx, handed, Why::Full).await;
    }

    #[handler]
    async fn flush_due(&mut self, ctx: &Ctx, _msg: FlushDue) {
        let Some(batcher) = &mut self.batcher else {
            return;
        };
        let handed = batcher.on_tick(ctx, &FlushDue {});
        self.commit_handed(ctx, handed, Why::Waited).await;
    }

    #[handler]
    async fn get_ledger(&mut self, _ctx: &Ctx, _msg: GetLedger) -> Ledger {
        self.ledger.clone()
    }

    async fn on_stop(&mut self, ctx: &Ctx) {
        if let Some(batcher) = &mut self.batcher {
            let rest = batcher.flush(ctx);
            self.commit(ctx, rest, Why::Stopping).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bunraku_sdk::testing::TestActor;

    fn write(seq: u64) -> Write {
        Write {
            producer: "p".into(),
            seq,
            value: seq * 10,
        }
    }

    #[test]
    fn a_full_batch_is_one_commit_and_the_rest_waits_for_its_timer() {
        let mut writer = TestActor::<Writer>::start(Config {
            batched: true,
            max_items: 3,
            max_wait_ms: 1,
        });
        for seq in 1..=4 {
            writer.send(&write(seq)).unwrap();
        }
        let ledger = writer.call(&GetLedger {}).unwrap();
        assert_eq!((ledger.writes, ledger.commits), (3, 1));
        let (timer, _) = writer.timers()[0].clone();
        std::thread::sleep(Duration::from_millis(2));
        writer.fire_timer(timer);
        let ledger = writer.call(&GetLedger {}).unwrap();
        assert_eq!(
            (ledger.writes, ledger.commits, ledger.flushed_by_time),
            (4, 2, 1)
        );
        assert!(ledger.tallies[0].in_order);
        assert_eq!(ledger.tallies[0].value_sum, 100);
    }

    #[test]
    fn stopping_commits_what_the_batcher_holds() {
        let mut writer = TestActor::<Writer>::start(Config {
            batched: true,
            max_items: 100,
            max_wait_ms: 60_000,
        });
        for seq in 1..=3 {
            writer.send(&write(seq)).unwrap();
        }
        assert_eq!(writer.call(&GetLedger {}).unwrap().writes, 0);
        writer.stop();
        // The state `on_stop` saved holds the three writes, in one commit.
        let saved: Ledger = writer.saved_state().expect("a saved ledger");
        assert_eq!((saved.writes, saved.commits), (3, 1));
        assert!(writer.timers().is_empty(), "the flush timer is cancelled");
    }

    #[test]
    fn unbatched_every_write_is_a_commit() {
        let mut writer = TestActor::<Writer>::start(Config {
            batched: false,
            max_items: 1,
            max_wait_ms: 1,
        });
        for seq in 1..=5 {
            writer.send(&write(seq)).unwrap();
        }
        let ledger = writer.call(&GetLedger {}).unwrap();
        assert_eq!((ledger.writes, ledger.commits), (5, 5));
    }
}
