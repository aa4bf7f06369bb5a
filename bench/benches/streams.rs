//! Stream throughput between two actors against a plain tokio mpsc channel of the same capacity
//! carrying the same items, in the same process.
//!
//! `cargo bench -p bunraku-bench --bench streams` (`BUNRAKU_BENCH_PAIRS=n` pairs, default 10;
//! `BUNRAKU_BENCH_ITEMS=m` items per sample, default 200,000).
//!
//! wasm: two `testbed` actors on a default host; the consumer's `stream_window` is 256. One
//! sample is a `StreamTo` request to the producer (it opens a stream to the consumer, sends
//! `0..m` as `u64` items with `send().await`, and closes it) followed by a `GetStreamStats`
//! request to the consumer, which is answered once its `Consume` handler has read the last item
//! and the end (the actor handles one message at a time). tokio: a task sending `0..m` into a
//! `tokio::sync::mpsc::channel(256)` and a task receiving until the channel closes, on a runtime
//! built like the host's guest runtime. Samples alternate wasm, tokio.

use std::time::{Duration, Instant};

use bunraku_bench::{Paired, median, rate};
use bunraku_runtime::ClientMessage;
use serde_json::json;

const WINDOW: usize = 256;

fn main() {
    bunraku_bench::init_logging();
    let pairs = bunraku_bench::env_usize("BUNRAKU_BENCH_PAIRS", 10);
    let items = bunraku_bench::env_usize("BUNRAKU_BENCH_ITEMS", 200_000) as u64;

    let host = bunraku_bench::host();
    let wasm = bunraku_bench::guest("testbed");
    let producer = bunraku_bench::spec("producer", &wasm);
    let mut consumer = bunraku_bench::spec("consumer", &wasm);
    consumer.limits.stream_window = WINDOW;
    bunraku_bench::deploy(&host, &producer);
    bunraku_bench::deploy(&host, &consumer);
    let ctl = bunraku_bench::control_runtime();
    let baseline = bunraku_bench::baseline_runtime(bunraku_bench::guest_threads());

    let wasm_sample = || {
        ctl.block_on(async {
            let start = Instant::now();
            let run = ClientMessage::json(
                "producer",
                Some("StreamTo"),
                &json!({"to": "consumer", "count": items, "consume": {}, "trap_at": null}),
            )
            .with_timeout(Duration::from_secs(600));
            let sent = host.request(run).await.expect("stream").json().unwrap();
            assert_eq!(sent, json!({"Ok": items}));
            let stats = host
                .call_json("consumer", Some("GetStreamStats"), json!({}))
                .await
                .expect("stats");
            assert_eq!(stats["ending"], json!("closed"), "{stats}");
            assert_eq!(stats["in_order"], json!(true), "{stats}");
            start.elapsed()
        })
    };
    let tokio_sample = || {
        baseline.block_on(async {
            let start = Instant::now();
            let (tx, mut rx) = tokio::sync::mpsc::channel::<u64>(WINDOW);
            let producer = tokio::spawn(async move {
                for i in 0..items {
                    tx.send(i).await.expect("receiver alive");
                }
            });
            let consumer = tokio::spawn(async move {
                let (mut n, mut in_order) = (0u64, true);
                while let Some(i) = rx.recv().await {
                    in_order &= i == n;
                    n += 1;
                }
                (n, in_order)
            });
            producer.await.unwrap();
            assert_eq!(consumer.await.unwrap(), (items, true));
            start.elapsed()
        })
    };

    // Warm-up.
    wasm_sample();
    tokio_sample();
    let mut samples = Paired::default();
    for _ in 0..pairs {
        let w = rate(items, wasm_sample());
        let t = rate(items, tokio_sample());
        samples.push(w, t);
    }
    println!("## streams ({})", bunraku_bench::machine_line());
    println!(
        "{items} u64 items per sample, window / channel capacity {WINDOW}; rates in items/s\n"
    );
    println!("{}", Paired::header());
    println!("{}", samples.row("stream", "items/s"));
    println!(
        "\nper item: wasm {:.0} ns, tokio {:.0} ns (medians)",
        1e9 / median(&samples.wasm),
        1e9 / median(&samples.tokio)
    );
    host.shutdown(Duration::from_secs(2));
}
