//! Fan-out from one publisher to 1,000 subscribers at `max_batch` 1, 16 and 256, against the
//! same fan-out between plain tokio tasks.
//!
//! `cargo bench -p bunraku-bench --bench fanout` (`BUNRAKU_BENCH_LONG=1` for a longer run;
//! `BUNRAKU_BENCH_SUBSCRIBERS` to change the 1,000).
//!
//! Wasm: guest `bench-fanout` deployed as the publisher `pub` and as 1,000 subscriber actors
//! `sub-<batch>-<i>`, each subscribed to `bench.fan.<batch>` (policy `wait`) with
//! `limits.max_batch = batch`. A sample is one request `Burst{count: M}` to `pub` (it publishes M
//! items in a loop with `ctx.publish(..).await`) followed by one `Seen` request to every
//! subscriber; a mailbox is FIFO, so the last reply means every delivery was handled. Tokio: a
//! publisher task and one task per subscriber (channels of the mailboxes' capacity), the same
//! `Done` round at the end. Rates are deliveries/s = M × subscribers / sample time.

use std::time::{Duration, Instant};

use bunraku_abi::Policy;
use bunraku_bench::{Paired, rate};
use bunraku_runtime::ClientMessage;
use bunraku_runtime::manifest::{Limits, SubscriptionSpec};
use futures::future::join_all;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, Clone, Copy)]
struct Item {
    #[allow(dead_code)] // carried like the guest's field
    seq: u64,
}

#[derive(Debug)]
enum ToSub {
    Item(Item),
    Done(oneshot::Sender<u64>),
}

#[derive(Debug)]
struct Burst {
    count: u64,
    done: oneshot::Sender<u64>,
}

/// Spawns the tokio publisher and subscribers; returns the publisher's inbox and the
/// subscribers' inboxes.
fn spawn_tokio_fanout(
    rt: &tokio::runtime::Runtime,
    subscribers: usize,
    capacity: usize,
) -> (mpsc::Sender<Burst>, Vec<mpsc::Sender<ToSub>>) {
    let subs: Vec<mpsc::Sender<ToSub>> = (0..subscribers)
        .map(|_| {
            let (tx, mut rx) = mpsc::channel::<ToSub>(capacity);
            rt.spawn(async move {
                let mut seen = 0u64;
                while let Some(msg) = rx.recv().await {
                    match msg {
                        ToSub::Item(item) => {
                            std::hint::black_box(item);
                            seen += 1;
                        }
                        ToSub::Done(reply) => {
                            let _ = reply.send(seen);
                        }
                    }
                }
            });
            tx
        })
        .collect();
    let (pub_tx, mut pub_rx) = mpsc::channel::<Burst>(capacity);
    let targets = subs.clone();
    rt.spawn(async move {
        let mut next = 0;
        while let Some(burst) = pub_rx.recv().await {
            for _ in 0..burst.count {
                next += 1;
                for t in &targets {
                    let _ = t.send(ToSub::Item(Item { seq: next })).await;
                }
            }
            let _ = burst.done.send(burst.count);
        }
    });
    (pub_tx, subs)
}

fn main() {
    bunraku_bench::init_logging();
    let long = bunraku_bench::long();
    let pairs = bunraku_bench::env_usize("BUNRAKU_BENCH_PAIRS", if long { 30 } else { 10 });
    let subscribers = bunraku_bench::env_usize("BUNRAKU_BENCH_SUBSCRIBERS", 1_000);
    let count =
        bunraku_bench::env_usize("BUNRAKU_BENCH_ITEMS", if long { 400 } else { 100 }) as u64;
    let capacity = Limits::default().mailbox;

    let wasm = bunraku_bench::guest("bench-fanout");
    let host = bunraku_bench::host();
    bunraku_bench::deploy(&host, &bunraku_bench::spec("pub", &wasm));
    let baseline = bunraku_bench::baseline_runtime(bunraku_bench::guest_threads());
    let (tokio_pub, tokio_subs) = spawn_tokio_fanout(&baseline, subscribers, capacity);
    let ctl = bunraku_bench::control_runtime();

    let mut rows = Vec::new();
    let mut tokio_seen = 0u64;
    for batch in [1usize, 16, 256] {
        let subject = format!("bench.fan.{batch}");
        let names: Vec<String> = (0..subscribers)
            .map(|i| format!("sub-{batch}-{i}"))
            .collect();
        let deploy_start = Instant::now();
        for name in &names {
            let mut spec = bunraku_bench::spec(name, &wasm);
            spec.limits.max_batch = batch;
            spec.subscriptions = vec![SubscriptionSpec {
                pattern: subject.clone(),
                policy: Policy::Wait,
            }];
            bunraku_bench::deploy(&host, &spec);
        }
        let seen_all = |expected: u64| {
            let replies = ctl.block_on(join_all(names.iter().map(|n| {
                host.request(
                    ClientMessage::json(n.as_str(), Some("bench.seen"), &json!({}))
                        .with_timeout(Duration::from_secs(120)),
                )
            })));
            for (name, r) in names.iter().zip(replies) {
                let seen = r.unwrap_or_else(|e| panic!("{name}: {e}")).json().unwrap();
                assert_eq!(seen, json!(expected), "{name} handled every item");
            }
        };
        seen_all(0);
        let deployed = deploy_start.elapsed();
        let mut wasm_seen = 0u64;

        let mut wasm_run = |count: u64| -> Duration {
            let burst = ClientMessage::json(
                "pub",
                Some("bench.burst"),
                &json!({"subject": subject, "count": count}),
            )
            .with_timeout(Duration::from_secs(120));
            let start = Instant::now();
            let published = ctl.block_on(host.request(burst)).expect("burst");
            assert_eq!(published.json().unwrap(), json!(count));
            wasm_seen += count;
            seen_all(wasm_seen);
            start.elapsed()
        };
        let mut tokio_run = |count: u64| -> Duration {
            let start = Instant::now();
            ctl.block_on(async {
                let (done, rx) = oneshot::channel();
                tokio_pub
                    .send(Burst { count, done })
                    .await
                    .expect("publisher runs");
                assert_eq!(rx.await.expect("burst"), count);
                let replies = join_all(tokio_subs.iter().map(|s| async move {
                    let (tx, rx) = oneshot::channel();
                    s.send(ToSub::Done(tx)).await.expect("subscriber runs");
                    rx.await.expect("reply")
                }))
                .await;
                tokio_seen += count;
                assert!(replies.iter().all(|&n| n == tokio_seen));
            });
            start.elapsed()
        };

        // Warm up; then time the final `Seen`/`Done` round alone (part of every sample).
        wasm_run(count);
        tokio_run(count);
        let round = Instant::now();
        wasm_run(0);
        let wasm_round = round.elapsed();
        let round = Instant::now();
        tokio_run(0);
        let tokio_round = round.elapsed();

        let mut samples = Paired::default();
        let deliveries = count * subscribers as u64;
        for _ in 0..pairs {
            let w = rate(deliveries, wasm_run(count));
            let t = rate(deliveries, tokio_run(count));
            samples.push(w, t);
        }
        rows.push((batch, samples, deployed, (wasm_round, tokio_round)));
        for name in &names {
            host.stop_actor(name).expect("stop subscriber");
        }
        // Let the stopped subscribers run `on_stop` before the next batch size deploys.
        std::thread::sleep(Duration::from_millis(200));
    }

    println!("## fan-out ({})", bunraku_bench::machine_line());
    println!(
        "1 publisher, {subscribers} subscribers, {} items per sample ({} deliveries), capacity {capacity}; rates in deliveries/s\n",
        count,
        count * subscribers as u64
    );
    println!("{}", Paired::header());
    for (batch, samples, _, _) in &rows {
        println!("{}", samples.row(&format!("max_batch {batch}"), "/s"));
    }
    println!();
    for (batch, _, deployed, (wasm_round, tokio_round)) in &rows {
        println!(
            "- max_batch {batch}: deploying {subscribers} subscribers until all answered {:.0} ms; \
             the final round of {subscribers} `Seen` requests alone {:.1} ms (tokio `Done` round {:.1} ms)",
            deployed.as_secs_f64() * 1e3,
            wasm_round.as_secs_f64() * 1e3,
            tokio_round.as_secs_f64() * 1e3
        );
    }
    host.shutdown(Duration::from_secs(2));
}
