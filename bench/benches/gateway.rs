//! The HTTP gateway against a plain axum handler doing the same echo, in the same process, under
//! the same load (issue 6).
//!
//! `cargo bench -p bunraku-bench --bench gateway` (`BUNRAKU_BENCH_PAIRS=n` pairs, default 5;
//! `BUNRAKU_BENCH_SECS=s` seconds per sample, default 2; `BUNRAKU_BENCH_CONNECTIONS=c`
//! connections, default 32; `BUNRAKU_BENCH_PAYLOAD=b` bytes of JSON per request, default 100;
//! `BUNRAKU_BENCH_LOAD_THREADS=t` load generator threads, default 1; for experiments
//! `BUNRAKU_BENCH_IO_THREADS=n` workers of the gateway's and axum's runtimes, default cores, and
//! `BUNRAKU_BENCH_GUEST_THREADS`).
//!
//! - gateway: a default host (as `bunraku run` makes it) with guest `http-echo` deployed as
//!   actor `echo` with `instances` = cores, and the gateway with one route, `POST /echo` →
//!   actor `echo`, message `echo`, no auth, no rate limit, serving from an I/O runtime of its own
//!   (built as `bunraku run` builds it).
//! - axum: a plain axum app in the same process, `POST /echo` with a `Json<serde_json::Value>`
//!   handler returning its body, on a runtime built the same way as the gateway's I/O runtime.
//! - actor only (no HTTP): the same number of client tasks on a runtime like the gateway's,
//!   each sending `Host::request` to `echo` back to back with the same JSON body (spread over
//!   the instances, as the gateway sends): what the actor path costs without HTTP.
//!
//! The load generator runs in this process on a runtime of its own: `c` HTTP/1.1 keep-alive
//! connections over loopback (`hyper::client::conn::http1`), each sending `POST /echo` with the
//! same JSON body back to back for `s` seconds and recording every latency. It shares the
//! machine's cores with the servers. CPU is this process's (`/proc/self/stat` utime + stime) per
//! completed request, and per thread group (`/proc/self/task/*/schedstat`) to say where it went.
//! Samples alternate gateway, axum, actor only, after one warm-up round.
//!
//! Profiling aid: `BUNRAKU_BENCH_ONLY=gateway` (or `axum`, `direct`) runs `n` samples of that
//! side alone, e.g. under `perf record`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::routing::post;
use axum::serve::ListenerExt;
use bunraku_bench::{median, si};
use bunraku_runtime::gateway::{GATEWAY_PRINCIPAL, Gateway, GatewayConfig};
use bunraku_runtime::{ClientMessage, Host};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, StatusCode};

/// Thread names (at most 15 bytes: the kernel's `comm`).
const GATEWAY_IO: &str = "bench-gw-io";
const AXUM_IO: &str = "bench-axum-io";
const DIRECT_IO: &str = "bench-direct";
const LOADGEN: &str = "bench-loadgen";

/// One side of the comparison.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    Gateway,
    Axum,
    Direct,
}

impl Side {
    fn label(self) -> &'static str {
        match self {
            Side::Gateway => "gateway → wasm echo",
            Side::Axum => "plain axum echo",
            Side::Direct => "actor only (Host::request, no HTTP)",
        }
    }
}

/// What one sample measured.
#[derive(Debug, Default, Clone)]
struct Sample {
    requests: u64,
    elapsed: Duration,
    /// Every request's latency, sorted.
    latencies: Vec<Duration>,
    /// Process CPU (user + system) over the sample.
    cpu: Duration,
    /// CPU and context switches per thread group over the sample.
    threads: BTreeMap<String, Usage>,
}

impl Sample {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// The `p` quantile of the latencies (sorted by [`measured`]).
    fn percentile(&self, p: f64) -> Duration {
        let v = &self.latencies;
        if v.is_empty() {
            return Duration::ZERO;
        }
        let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
        v[i]
    }

    /// CPU µs per request, whole process.
    fn cpu_us(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.requests.max(1) as f64
    }

    /// CPU µs per request of one thread group.
    fn group_us(&self, group: &str) -> f64 {
        self.threads.get(group).map_or(0.0, |u| {
            u.cpu.as_secs_f64() * 1e6 / self.requests.max(1) as f64
        })
    }

    /// Context switches (voluntary, involuntary) per request of one thread group.
    fn group_switches(&self, group: &str) -> (f64, f64) {
        let n = self.requests.max(1) as f64;
        self.threads.get(group).map_or((0.0, 0.0), |u| {
            (u.switches as f64 / n, u.preempted as f64 / n)
        })
    }

    /// How busy the load generator's threads were: their CPU over the wall time (1.0 = one core).
    fn load_busy(&self) -> f64 {
        self.threads
            .get(LOADGEN)
            .map_or(0.0, |u| u.cpu.as_secs_f64() / self.elapsed.as_secs_f64())
    }

    /// CPU µs per request of everything but the load generator.
    fn server_us(&self) -> f64 {
        let all: Duration = self.threads.values().map(|u| u.cpu).sum();
        let load = self.threads.get(LOADGEN).map(|u| u.cpu).unwrap_or_default();
        all.saturating_sub(load).as_secs_f64() * 1e6 / self.requests.max(1) as f64
    }
}

/// Process CPU time: utime + stime of `/proc/self/stat`, in clock ticks (100 Hz on Linux).
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5), numbered from `state` (field 3) here.
    let utime: u64 = fields[11].parse().expect("utime");
    let stime: u64 = fields[12].parse().expect("stime");
    Duration::from_millis((utime + stime) * 10)
}

/// What one thread (or thread group) used: CPU time and context switches.
#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    cpu: Duration,
    /// Voluntary context switches: the thread blocked (parked, waited in `epoll`, ...).
    switches: u64,
    /// Involuntary ones: the thread was preempted.
    preempted: u64,
}

/// CPU time (`/proc/self/task/*/schedstat`, ns) and context switches (`status`) of every thread
/// of this process, by name and thread id.
fn thread_usage() -> BTreeMap<(String, u64), Usage> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for entry in dir.flatten() {
        let path = entry.path();
        let tid: u64 = entry.file_name().to_string_lossy().parse().unwrap_or(0);
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let ns: u64 = std::fs::read_to_string(path.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
            .unwrap_or(0);
        let status = std::fs::read_to_string(path.join("status")).unwrap_or_default();
        let field = |key: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        out.insert(
            (name.trim().to_owned(), tid),
            Usage {
                cpu: Duration::from_nanos(ns),
                switches: field("voluntary_ctxt_switches:"),
                preempted: field("nonvoluntary_ctxt_switches:"),
            },
        );
    }
    out
}

/// Per thread group: the usage between two [`thread_usage`] readings (threads that started in
/// between count from zero; threads that ended in between are lost, which the process total is
/// not).
fn thread_delta(
    before: &BTreeMap<(String, u64), Usage>,
    after: &BTreeMap<(String, u64), Usage>,
) -> BTreeMap<String, Usage> {
    let mut out: BTreeMap<String, Usage> = BTreeMap::new();
    for (key, t) in after {
        let b = before.get(key).copied().unwrap_or_default();
        let g = out.entry(group_of(&key.0).to_owned()).or_default();
        g.cpu += t.cpu.saturating_sub(b.cpu);
        g.switches += t.switches.saturating_sub(b.switches);
        g.preempted += t.preempted.saturating_sub(b.preempted);
    }
    out
}

/// Which group a thread name belongs to.
fn group_of(name: &str) -> &str {
    match name {
        GATEWAY_IO | AXUM_IO | DIRECT_IO | LOADGEN | "bunraku-guest" => name,
        _ => "other",
    }
}

/// The body `{"data":"xx…"}` of exactly `bytes` bytes (at least 11): what `http-echo`'s `echo`
/// message holds, compact, so that both sides write it back byte for byte.
fn payload(bytes: usize) -> Bytes {
    let pad = "x".repeat(bytes.saturating_sub(r#"{"data":""}"#.len()));
    Bytes::from(serde_json::to_vec(&serde_json::json!({ "data": pad })).expect("json"))
}

/// A runtime built as `bunraku run` builds the gateway's I/O runtime (`start_gateway` in
/// `runtime/cli/src/run.rs`: multi-thread, one worker per core, I/O and time enabled).
fn io_runtime(name: &str) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(io_threads())
        .thread_name(name)
        .enable_all()
        .build()
        .expect("I/O runtime")
}

/// The gateway I/O runtime's worker count: tokio's default, one per core
/// (`BUNRAKU_BENCH_IO_THREADS` overrides it for experiments; the axum runtime gets the same).
fn io_threads() -> usize {
    bunraku_bench::env_usize(
        "BUNRAKU_BENCH_IO_THREADS",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    )
}

/// The plain axum baseline: `POST /echo` returns its JSON body.
async fn start_axum() -> SocketAddr {
    async fn echo(Json(body): Json<serde_json::Value>) -> Json<serde_json::Value> {
        Json(body)
    }
    let app = axum::Router::new().route("/echo", post(echo));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    // TCP_NODELAY on accepted connections, as the gateway sets it.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// One connection's share of a sample: requests back to back until `stop`.
async fn connection(
    addr: SocketAddr,
    body: Bytes,
    start: Arc<tokio::sync::Barrier>,
    secs: Duration,
) -> Vec<Duration> {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let host = addr.to_string();
    let mut latencies = Vec::with_capacity(1 << 14);
    start.wait().await;
    let stop = Instant::now() + secs;
    while Instant::now() < stop {
        sender.ready().await.expect("connection ready");
        let req = Request::post("/echo")
            .header(hyper::header::HOST, &host)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body.clone()))
            .expect("request");
        let t = Instant::now();
        let resp = sender.send_request(req).await.expect("response");
        let status = resp.status();
        let got = resp.into_body().collect().await.expect("body").to_bytes();
        latencies.push(t.elapsed());
        check(status, &got, &body);
    }
    latencies
}

/// The reply must be the body (byte for byte, or at least as JSON).
fn check(status: StatusCode, got: &[u8], sent: &[u8]) {
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(got));
    if got != sent {
        let a: serde_json::Value = serde_json::from_slice(got).expect("reply is JSON");
        let b: serde_json::Value = serde_json::from_slice(sent).expect("JSON");
        assert_eq!(a, b, "the echo differs");
    }
}

/// One HTTP sample against `addr`.
fn http_sample(
    load: &tokio::runtime::Runtime,
    addr: SocketAddr,
    conns: usize,
    body: &Bytes,
    secs: Duration,
) -> Sample {
    // Every connection is open before the clock and the CPU counters start.
    let start = Arc::new(tokio::sync::Barrier::new(conns + 1));
    let tasks: Vec<_> = (0..conns)
        .map(|_| load.spawn(connection(addr, body.clone(), start.clone(), secs)))
        .collect();
    released(load, &start, tasks)
}

/// `Host::request` to `echo` from `conns` tasks on `rt`, back to back until the time is up.
fn direct_sample(
    rt: &tokio::runtime::Runtime,
    host: &Arc<Host>,
    conns: usize,
    body: &Bytes,
    secs: Duration,
) -> Sample {
    let start = Arc::new(tokio::sync::Barrier::new(conns + 1));
    let tasks: Vec<_> = (0..conns)
        .map(|_| {
            let (host, body, start) = (host.clone(), body.clone(), start.clone());
            rt.spawn(async move {
                let mut latencies = Vec::with_capacity(1 << 14);
                start.wait().await;
                let stop = Instant::now() + secs;
                while Instant::now() < stop {
                    // The message the gateway sends for `POST /echo`.
                    let msg = ClientMessage {
                        principal: GATEWAY_PRINCIPAL.into(),
                        to: "echo".into(),
                        msg_type: Some("echo".into()),
                        codec: bunraku_abi::Codec::Json,
                        payload: body.to_vec(),
                        timeout: Some(Duration::from_secs(10)),
                        ext: Vec::new(),
                        spread: true,
                    };
                    let t = Instant::now();
                    let reply = host.request(msg).await.expect("echo");
                    latencies.push(t.elapsed());
                    check(StatusCode::OK, &reply.payload, &body);
                }
                latencies
            })
        })
        .collect();
    released(rt, &start, tasks)
}

/// Releases `tasks`, each waiting at `start` with its connection or client ready, and measures
/// them until every one has returned its latencies.
fn released(
    rt: &tokio::runtime::Runtime,
    start: &tokio::sync::Barrier,
    tasks: Vec<tokio::task::JoinHandle<Vec<Duration>>>,
) -> Sample {
    rt.block_on(start.wait());
    measured(|| {
        rt.block_on(async {
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await.expect("client task"));
            }
            all
        })
    })
}

/// Runs `f` (which returns every latency) with the clock and the CPU counters around it.
fn measured(f: impl FnOnce() -> Vec<Duration>) -> Sample {
    let (cpu0, threads0, t0) = (process_cpu(), thread_usage(), Instant::now());
    let mut latencies = f();
    let elapsed = t0.elapsed();
    let (cpu1, threads1) = (process_cpu(), thread_usage());
    latencies.sort_unstable();
    Sample {
        requests: latencies.len() as u64,
        elapsed,
        latencies,
        cpu: cpu1.saturating_sub(cpu0),
        threads: thread_delta(&threads0, &threads1),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn med_by(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> f64 {
    median(&samples.iter().map(f).collect::<Vec<_>>())
}

fn main() {
    bunraku_bench::init_logging();
    let pairs = bunraku_bench::env_usize("BUNRAKU_BENCH_PAIRS", 5);
    let conns = bunraku_bench::env_usize("BUNRAKU_BENCH_CONNECTIONS", 32);
    let payload_bytes = bunraku_bench::env_usize("BUNRAKU_BENCH_PAYLOAD", 100);
    let load_threads = bunraku_bench::env_usize("BUNRAKU_BENCH_LOAD_THREADS", 1);
    let secs = std::env::var("BUNRAKU_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(2), Duration::from_secs_f64);
    let body = payload(payload_bytes);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    // The host and the echo actor.
    let host = Arc::new(bunraku_bench::host());
    let wasm = bunraku_bench::guest("http-echo");
    let mut spec = bunraku_bench::spec("echo", &wasm);
    spec.instances = cores as u32;
    bunraku_bench::deploy(&host, &spec);
    host.wait_started("echo");

    // The manifest's `[gateway]` table: one public route, no rate limit, the defaults otherwise.
    let config: GatewayConfig = toml::from_str(
        r#"
            listen = "127.0.0.1:0"

            [[route]]
            method = "POST"
            path = "/echo"
            actor = "echo"
            message = "echo"
        "#,
    )
    .expect("gateway config");

    // The gateway, on an I/O runtime of its own.
    let gateway_io = io_runtime(GATEWAY_IO);
    let gateway =
        Gateway::start(host.clone(), config, gateway_io.handle()).expect("gateway starts");
    gateway.set_ready(true);
    let gateway_addr = gateway.local_addr();

    // The baseline, on a runtime built the same way.
    let axum_io = io_runtime(AXUM_IO);
    let axum_addr = axum_io.block_on(start_axum());

    // Host::request without HTTP, from a runtime built the same way.
    let direct_io = io_runtime(DIRECT_IO);

    let load = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(load_threads.max(1))
        .thread_name(LOADGEN)
        .enable_all()
        .build()
        .expect("load generator runtime");

    let sample = |side: Side| match side {
        Side::Gateway => http_sample(&load, gateway_addr, conns, &body, secs),
        Side::Axum => http_sample(&load, axum_addr, conns, &body, secs),
        Side::Direct => direct_sample(&direct_io, &host, conns, &body, secs),
    };

    eprintln!(
        "gateway on {gateway_addr}, axum on {axum_addr}; warm-up, then {pairs} rounds of {secs:?}"
    );
    // Profiling aid: `BUNRAKU_BENCH_ONLY=gateway` (or `axum`, `direct`) runs that side alone.
    if let Ok(only) = std::env::var("BUNRAKU_BENCH_ONLY") {
        let side = match only.as_str() {
            "gateway" => Side::Gateway,
            "axum" => Side::Axum,
            "direct" => Side::Direct,
            other => panic!("BUNRAKU_BENCH_ONLY={other}: gateway, axum or direct"),
        };
        for round in 0..pairs {
            let s = sample(side);
            let groups: Vec<String> = s
                .threads
                .keys()
                .map(|g| {
                    let (v, i) = s.group_switches(g);
                    format!("{g} {:.1} µs {v:.2}+{i:.2} cs", s.group_us(g))
                })
                .collect();
            println!(
                "{side:?} {round}: {:.0} req/s, p50 {}, p99 {}, {:.1} µs CPU/req ({})",
                s.rps(),
                ms(s.percentile(0.5)),
                ms(s.percentile(0.99)),
                s.cpu_us(),
                groups.join(", ")
            );
        }
        gateway_io.block_on(gateway.shutdown().wait());
        host.shutdown(Duration::from_secs(2));
        return;
    }
    for side in [Side::Gateway, Side::Axum, Side::Direct] {
        let s = sample(side);
        eprintln!("warm-up {:?}: {:.0} req/s", side, s.rps());
    }
    let sides = [Side::Gateway, Side::Axum, Side::Direct];
    let mut results: Vec<Vec<Sample>> = vec![Vec::new(); sides.len()];
    for round in 0..pairs {
        for (i, &side) in sides.iter().enumerate() {
            let s = sample(side);
            eprintln!(
                "round {round} {side:?}: {:.0} req/s, p50 {}, p99 {}, {:.1} µs CPU/req",
                s.rps(),
                ms(s.percentile(0.5)),
                ms(s.percentile(0.99)),
                s.cpu_us()
            );
            results[i].push(s);
        }
    }

    println!("## gateway ({})", bunraku_bench::machine_line());
    println!(
        "{conns} connections, {}-byte JSON body, {pairs} rounds of {secs:?} (gateway, axum, actor \
         only), echo instances = {cores}, I/O runtime workers = {}, load generator threads = \
         {load_threads}\n",
        body.len(),
        io_threads(),
    );
    println!(
        "| side | requests/s (median) | min–max | p50 | p99 | CPU per request (process) | \
         CPU per request (without the load generator) | load generator busy |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (i, &side) in sides.iter().enumerate() {
        let r = &results[i];
        let rps: Vec<f64> = r.iter().map(Sample::rps).collect();
        let (lo, hi) = min_max(&rps);
        println!(
            "| {} | {} | {}–{} | {} | {} | {:.1} µs | {:.1} µs | {:.0}% |",
            side.label(),
            si(median(&rps)),
            si(lo),
            si(hi),
            ms(Duration::from_secs_f64(med_by(r, |s| s
                .percentile(0.5)
                .as_secs_f64()))),
            ms(Duration::from_secs_f64(med_by(r, |s| s
                .percentile(0.99)
                .as_secs_f64()))),
            med_by(r, Sample::cpu_us),
            med_by(r, Sample::server_us),
            100.0 * med_by(r, Sample::load_busy),
        );
    }
    let ratios: Vec<f64> = results[0]
        .iter()
        .zip(&results[1])
        .map(|(g, a)| g.rps() / a.rps())
        .collect();
    let (lo, hi) = min_max(&ratios);
    println!(
        "\n**gateway / axum throughput: {:.2} (min–max {lo:.2}–{hi:.2}, {} pairs)**; target ≥ 0.7",
        median(&ratios),
        ratios.len()
    );
    let direct: Vec<f64> = results[2]
        .iter()
        .zip(&results[0])
        .map(|(d, g)| g.rps() / d.rps())
        .collect();
    let (dlo, dhi) = min_max(&direct);
    println!(
        "gateway / actor only: {:.2} (min–max {dlo:.2}–{dhi:.2})",
        median(&direct)
    );

    println!("\nCPU per request by thread group (µs, medians over the rounds):\n");
    let groups = [
        LOADGEN,
        GATEWAY_IO,
        AXUM_IO,
        DIRECT_IO,
        "bunraku-guest",
        "other",
    ];
    println!("| side | {} |", groups.join(" | "));
    println!("|---|{}", "---|".repeat(groups.len()));
    for (i, &side) in sides.iter().enumerate() {
        let cells: Vec<String> = groups
            .iter()
            .map(|g| format!("{:.1}", med_by(&results[i], |s| s.group_us(g))))
            .collect();
        println!("| {} | {} |", side.label(), cells.join(" | "));
    }
    println!(
        "\nContext switches per request by thread group (voluntary + involuntary, medians):\n"
    );
    println!("| side | {} |", groups.join(" | "));
    println!("|---|{}", "---|".repeat(groups.len()));
    for (i, &side) in sides.iter().enumerate() {
        let cells: Vec<String> = groups
            .iter()
            .map(|g| {
                let v = med_by(&results[i], |s| s.group_switches(g).0);
                let n = med_by(&results[i], |s| s.group_switches(g).1);
                format!("{v:.2} + {n:.2}")
            })
            .collect();
        println!("| {} | {} |", side.label(), cells.join(" | "));
    }

    gateway_io.block_on(gateway.shutdown().wait());
    host.shutdown(Duration::from_secs(2));
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}
