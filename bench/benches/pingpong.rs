//! Ping-pong between two actors against the same exchange between two plain tokio tasks
//! (see [`bunraku_bench::pingpong`] for both sides), and the host's floor: the same rally between
//! two actors written against the ABI without the SDK (`bench-raw`).
//!
//! `cargo bench -p bunraku-bench --bench pingpong` (`BUNRAKU_BENCH_LONG=1` for a longer run,
//! `BUNRAKU_BENCH_PAIRS=n` for another number of pairs). Samples go round robin: SDK actors with
//! `async` handlers, the same actors with plain `fn` handlers (`bench.go_now`), raw actors, tokio;
//! each counts `2 * rounds` messages. The three wasm rows are paired with the same tokio samples.
//!
//! `BUNRAKU_BENCH_ONLY=sdk` (or `fn`, or `raw`) runs only that rally, sample after sample, for
//! `BUNRAKU_BENCH_SECS` seconds (2 by default), and prints each sample's time per message: for
//! comparing two builds of the host, run alternately (`bench/ab-hosts.sh`), where one process
//! cannot hold both.

use std::time::Duration;

use bunraku_bench::pingpong::Rally;
use bunraku_bench::{Paired, median, rate};

fn main() {
    bunraku_bench::init_logging();
    let long = bunraku_bench::long();
    let pairs = bunraku_bench::env_usize("BUNRAKU_BENCH_PAIRS", if long { 40 } else { 15 });
    let target = Duration::from_millis(if long { 400 } else { 120 });

    let rally = Rally::new();
    let rounds = rally.calibrate(target);
    if let Ok(only) = std::env::var("BUNRAKU_BENCH_ONLY") {
        let secs = bunraku_bench::env_usize("BUNRAKU_BENCH_SECS", 2) as u64;
        let end = std::time::Instant::now() + Duration::from_secs(secs);
        while std::time::Instant::now() < end {
            let took = match only.as_str() {
                "sdk" => rally.wasm(rounds),
                "fn" => rally.wasm_fn(rounds),
                "raw" => rally.raw(rounds),
                other => panic!("BUNRAKU_BENCH_ONLY is `sdk`, `fn` or `raw`, not `{other}`"),
            };
            println!("{only} {:.0} ns", 1e9 / rate(2 * rounds, took));
        }
        rally.host.shutdown(Duration::from_secs(2));
        return;
    }
    let (mut samples, mut plain, mut raw) =
        (Paired::default(), Paired::default(), Paired::default());
    for _ in 0..pairs {
        let w = rate(2 * rounds, rally.wasm(rounds));
        let f = rate(2 * rounds, rally.wasm_fn(rounds));
        let r = rate(2 * rounds, rally.raw(rounds));
        let t = rate(2 * rounds, rally.tokio(rounds));
        samples.push(w, t);
        plain.push(f, t);
        raw.push(r, t);
    }

    println!("## ping-pong ({})", bunraku_bench::machine_line());
    println!(
        "{rounds} round trips per sample ({} messages), mailbox/channel capacity {}; rates in msgs/s\n",
        2 * rounds,
        rally.capacity
    );
    println!("{}", Paired::header());
    println!("{}", samples.row("ping-pong", "msgs/s"));
    println!(
        "{}",
        plain.row("ping-pong, plain `fn` handlers (`bench.go_now`)", "msgs/s")
    );
    println!(
        "{}",
        raw.row("ping-pong without the SDK (`bench-raw`)", "msgs/s")
    );
    println!(
        "\nper message: wasm {:.0} ns, with plain `fn` handlers {:.0} ns, wasm without the SDK {:.0} ns, tokio {:.0} ns (medians)",
        1e9 / median(&samples.wasm),
        1e9 / median(&plain.wasm),
        1e9 / median(&raw.wasm),
        1e9 / median(&samples.tokio)
    );
    rally.host.shutdown(Duration::from_secs(2));
}
