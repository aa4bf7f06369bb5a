//! The batching example's driver and self-check. On `Smoke` it runs the same workload twice:
//! every producer sends its writes at once to the writer that commits each write on its own,
//! then to the writer that batches them. Each round ends when the writer's ledger holds every
//! write (for the batching writer, that includes the last partial batch, which only its timer
//! flushes). It checks that each write was committed exactly once and in order, counts the
//! commits, and logs the throughput of both rounds side by side.
//!
//! The ledgers are durable and outlive a run, so every figure is the change over the round.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bunraku_sdk::prelude::*;
use protocol::{GetLedger, Ledger, Produce, Smoke, SmokeReport};

/// Settings from the manifest.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Config {
    pub producers: Vec<String>,
    pub writes_per_producer: u64,
    /// The writer with one commit per write.
    pub direct: String,
    /// The batching writer, and its `max_items`.
    pub batched: String,
    pub max_items: u64,
}

#[derive(Default)]
pub struct Checker {
    config: Config,
}

/// Waits for every future, polling them all from one handler (their operations run at once).
struct JoinAll<F: Future> {
    futures: Vec<Pin<Box<F>>>,
    done: Vec<Option<F::Output>>,
}

fn join_all<F: Future>(futures: impl IntoIterator<Item = F>) -> JoinAll<F> {
    let futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let done = futures.iter().map(|_| None).collect();
    JoinAll { futures, done }
}

impl<F: Future> Future for JoinAll<F>
where
    F::Output: Unpin,
{
    type Output = Vec<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        for (future, done) in this.futures.iter_mut().zip(this.done.iter_mut()) {
            if done.is_none()
                && let Poll::Ready(out) = future.as_mut().poll(cx)
            {
                *done = Some(out);
            }
        }
        if this.done.iter().all(Option::is_some) {
            Poll::Ready(this.done.iter_mut().filter_map(Option::take).collect())
        } else {
            Poll::Pending
        }
    }
}

/// One round's outcome: writes per second and the ledger's change.
struct Round {
    rate: f64,
    delta: Ledger,
}

/// `after − before`, per producer.
fn delta(before: &Ledger, after: &Ledger) -> Ledger {
    let mut d = Ledger {
        writes: after.writes - before.writes,
        commits: after.commits - before.commits,
        flushed_by_size: after.flushed_by_size - before.flushed_by_size,
        flushed_by_time: after.flushed_by_time - before.flushed_by_time,
        tallies: Vec::new(),
    };
    for t in &after.tallies {
        let mut t = t.clone();
        if let Some(b) = before.tallies.iter().find(|b| b.producer == t.producer) {
            t.count -= b.count;
            t.value_sum -= b.value_sum;
        }
        d.tallies.push(t);
    }
    d
}

impl Checker {
    async fn round(&self, ctx: &Ctx, writer: &str) -> Result<Round, String> {
        let c = &self.config;
        let total = c.writes_per_producer * c.producers.len() as u64;
        let ledger = || async { ctx.request(writer, &GetLedger {}).await };
        let before = ledger().await.map_err(|e| format!("{writer}: {e}"))?;
        let start = Instant::now();
        let produce = c.producers.iter().map(|p| {
            let msg = Produce {
                to: writer.to_owned(),
                count: c.writes_per_producer,
            };
            async move { ctx.request(p, &msg).await }
        });
        let sent: u64 = join_all(produce)
            .await
            .into_iter()
            .map(|r| r.map_err(|e| e.to_string()))
            .sum::<Result<u64, String>>()?;
        if sent != total {
            return Err(format!("the producers sent {sent} of {total} writes"));
        }
        // Until everything is committed (the batching writer's last batch waits for its timer).
        loop {
            let after = ledger().await.map_err(|e| format!("{writer}: {e}"))?;
            let d = delta(&before, &after);
            if d.writes >= total {
                let secs = start.elapsed().as_secs_f64();
                return Ok(Round {
                    rate: total as f64 / secs,
                    delta: d,
                });
            }
            if start.elapsed().as_secs() > 120 {
                return Err(format!("{} of {total} writes committed", d.writes));
            }
            ctx.sleep(Duration::from_millis(2))
                .await
                .map_err(|e| e.to_string())?;
        }
    }

    fn check_round(&self, report: &mut SmokeReport, label: &str, round: &Round, batched: bool) {
        let c = &self.config;
        let total = c.writes_per_producer * c.producers.len() as u64;
        let d = &round.delta;
        let per = c.writes_per_producer;
        // Values are `seq % 100`, seq = 1..=per.
        let value_sum: u64 = (1..=per).map(|s| s % 100).sum();
        let exact = d.writes == total
            && c.producers.iter().all(|p| {
                d.tallies.iter().any(|t| {
                    t.producer == *p && t.count == per && t.value_sum == value_sum && t.in_order
                })
            });
        report.check(
            &format!("{label}: every write committed exactly once, in order"),
            exact,
            format!("{} writes committed of {total}: {:?}", d.writes, d.tallies),
        );
        if batched {
            // On an idle machine: 7 full batches by size and the partial last one by its
            // timer. A batch whose writes take longer than `max_wait_ms` to arrive (a loaded
            // machine) is flushed early by its timer, which is the policy too; so the fact is
            // that every commit is one of the two, at most the full batches went by size, and
            // the partial batch went by time.
            let full = total / c.max_items;
            let partial = u64::from(!total.is_multiple_of(c.max_items));
            report.check(
                &format!("{label}: batches flushed by size when full, otherwise by their timer"),
                d.flushed_by_size <= full
                    && d.flushed_by_time >= partial
                    && d.commits == d.flushed_by_size + d.flushed_by_time
                    && d.commits < total,
                format!(
                    "expected at most {full} by size, at least {partial} by time, each commit one                      of the two and fewer commits than writes; got {} by size, {} by time, {} commits",
                    d.flushed_by_size, d.flushed_by_time, d.commits
                ),
            );
        } else {
            report.check(
                &format!("{label}: one commit per write"),
                d.commits == total,
                format!("{} commits for {total} writes", d.commits),
            );
        }
    }
}

#[actor]
impl Checker {
    async fn on_start(&mut self, _ctx: &Ctx, config: Config) {
        self.config = config;
    }

    #[handler]
    async fn smoke(&mut self, ctx: &Ctx, _msg: Smoke) -> SmokeReport {
        let mut report = SmokeReport::default();
        let mut rates = Vec::new();
        let rounds = [
            ("one commit per write", self.config.direct.clone(), false),
            ("batched", self.config.batched.clone(), true),
        ];
        for (label, writer, batched) in rounds {
            match self.round(ctx, &writer).await {
                Ok(round) => {
                    self.check_round(&mut report, label, &round, batched);
                    rates.push((label, round.rate, round.delta.commits));
                }
                Err(e) => report.check(&format!("{label}: the round completes"), false, e),
            }
        }
        if let [(a, ra, ca), (b, rb, cb)] = rates.as_slice() {
            ctx.info(format_args!(
                "throughput: {a}: {ra:.0} writes/s ({ca} commits) | {b}: {rb:.0} writes/s \
                 ({cb} commits) | {:.1}x",
                rb / ra
            ));
        }
        report.finish("batching")
    }
}
