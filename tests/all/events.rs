//! Event-sourced actors on the embedded store, with the real `ledger` guest: durability across a
//! host restart and across `kill -9`, checksums, a full disk, durable reminders, and the CLI's
//! `events` and `state`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bunraku_runtime::control::{Client, Request, Response};
use bunraku_runtime::manifest::ActorSpec;
use bunraku_runtime::store::{FILE_NAME, StoreOptions};
use bunraku_runtime::{CallError, Host, HostConfig};
use bunraku_tests::{deploy_spec, eventually, host_in, host_with, repo, spec};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::cli::{Guard, bunraku};

/// The ledger guest's event, mirrored: its postcard bytes are what the store holds.
#[derive(serde::Serialize)]
enum LedgerEvent {
    Recorded { entry: String },
}

fn event_hash(entry: &str) -> [u8; 32] {
    let bytes = postcard::to_allocvec(&LedgerEvent::Recorded {
        entry: entry.to_owned(),
    })
    .unwrap();
    Sha256::digest(bytes).into()
}

/// The ledger as the virtual actor type `ledger`, idle after `idle`.
fn ledger(idle: Duration) -> ActorSpec {
    let mut ledger = spec("ledger", "ledger");
    ledger.virtual_idle = Some(idle);
    ledger
}

async fn record(host: &Host, actor: &str, entry: &str) -> Result<u64, String> {
    let reply = host
        .call_json(actor, Some("Record"), json!({ "entry": entry }))
        .await
        .map_err(|e| e.to_string())?;
    match reply {
        Value::Object(o) if o.contains_key("Ok") => Ok(o["Ok"].as_u64().unwrap()),
        other => Err(other["Err"].as_str().unwrap_or("?").to_owned()),
    }
}

async fn count(host: &Host, actor: &str) -> Result<Value, CallError> {
    host.call_json(actor, Some("Count"), json!({})).await
}

/// A plain connection to a host's store file (the host is gone, or only reads are made).
fn open_file(data: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(data.join(FILE_NAME)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_sourced_actor_rebuilds_its_state_from_its_log_after_a_host_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        let host = host_in(&data);
        deploy_spec(&host, &ledger(Duration::from_secs(60)));
        for i in 1..=25u64 {
            assert_eq!(record(&host, "ledger/a", &format!("a{i}")).await, Ok(i));
        }
        assert_eq!(record(&host, "ledger/b", "b1").await, Ok(1));
    }
    let host = host_in(&data);
    deploy_spec(&host, &ledger(Duration::from_secs(60)));
    // Replayed from its latest snapshot and the events after it: the count goes on.
    assert_eq!(count(&host, "ledger/a").await.unwrap(), json!([25, 25]));
    assert_eq!(record(&host, "ledger/a", "a26").await, Ok(26));
    assert_eq!(count(&host, "ledger/b").await.unwrap(), json!([1, 1]));
    let conn = open_file(&data);
    let snapshots: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM snapshots WHERE actor = 'ledger/a'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        snapshots >= 2,
        "25 events with a snapshot every 10: {snapshots}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_event_row_is_refused_with_corrupt_and_nothing_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        let host = host_in(&data);
        deploy_spec(&host, &ledger(Duration::from_secs(60)));
        for i in 1..=5 {
            record(&host, "ledger/a", &format!("a{i}")).await.unwrap();
        }
        record(&host, "ledger/b", "b1").await.unwrap();
    }
    // Damage one row behind the host's back, through a second connection.
    let conn = open_file(&data);
    let changed = conn
        .execute(
            "UPDATE events SET payload = X'00036261' WHERE actor = 'ledger/a' AND seq = 3",
            [],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(conn);

    let host = host_in(&data);
    deploy_spec(&host, &ledger(Duration::from_secs(60)));
    // The activation fails, and the requester hears why at once: no made-up state, no waiting
    // through restarts that cannot succeed until the log is repaired.
    let err = count(&host, "ledger/a").await.unwrap_err();
    let CallError::Remote { code, message } = &err else {
        panic!("expected a typed refusal, got {err:?}");
    };
    assert_eq!(*code, bunraku_abi::ErrorCode::Corrupt);
    assert_eq!(
        err.to_string(),
        "corrupt: event log of `ledger/a` is corrupt at sequence 3: the row fails its checksum; nothing was served or deleted",
        "{message}"
    );
    let status = host.actor("ledger/a");
    let failure = status[0].last_failure.clone().unwrap_or_default();
    assert!(
        failure.contains("corrupt") && failure.contains("ledger/a") && failure.contains('3'),
        "the failure names the actor and the sequence number: {failure}"
    );
    // Other logs are served; the damaged row is still there, nothing was deleted.
    assert_eq!(count(&host, "ledger/b").await.unwrap(), json!([1, 1]));
    let conn = open_file(&data);
    let rows: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM events WHERE actor = 'ledger/a'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(rows, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_appends_with_storage_unavailable_and_keeps_the_file_intact() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = HostConfig {
        data_dir: Some(data.clone()),
        store: StoreOptions {
            max_size: Some(192 << 10),
        },
        ..HostConfig::default()
    };
    let host = host_with(config.clone());
    deploy_spec(&host, &ledger(Duration::from_secs(60)));
    let big = "x".repeat(16 << 10);
    let mut acked = 0u64;
    let failure = loop {
        match record(&host, "ledger/a", &format!("{acked}{big}")).await {
            Ok(seq) => {
                acked += 1;
                assert_eq!(seq, acked);
            }
            Err(e) => break e,
        }
        assert!(acked < 1000, "the size limit never hit");
    };
    assert!(failure.contains("storage unavailable"), "{failure}");
    assert!(acked > 0, "some appends fit before the limit");
    // The actor keeps its acknowledged state and keeps running.
    assert_eq!(
        count(&host, "ledger/a").await.unwrap(),
        json!([acked, acked])
    );
    drop(host);

    let conn = open_file(&data);
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let (n, max): (i64, i64) = conn
        .query_row(
            "SELECT COUNT(*), MAX(seq) FROM events WHERE actor = 'ledger/a'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        (n as u64, max as u64),
        (acked, acked),
        "nothing unacknowledged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reminder_fires_after_a_host_restart_and_activates_its_virtual_actor() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut tb = spec("tb", "testbed");
    tb.virtual_idle = Some(Duration::from_secs(60));
    {
        // A clock that never moves: the reminder cannot come due on this host, whatever the load.
        let host = host_with(HostConfig {
            data_dir: Some(data.clone()),
            clock: Arc::new(bunraku_runtime::clock::ManualClock::new()),
            ..HostConfig::default()
        });
        deploy_spec(&host, &tb);
        let set = host
            .call_json(
                "tb/r",
                Some("SetReminder"),
                json!({ "tag": "wake", "delay_ms": 300, "period_ms": null }),
            )
            .await
            .unwrap();
        assert_eq!(set, json!({ "Ok": null }));
        // The host goes before the reminder is due. It was due 300 ms after the manual clock's
        // time (2026-01-01), long past on the real clock of the next host.
    }
    let host = host_in(&data);
    deploy_spec(&host, &tb);
    // Reminders fire once the program says its actors are deployed (`deploy_manifest` does).
    host.start_reminders();
    // Nothing asks `tb/r` anything until the reminder has fired: it activates it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while host.actor("tb/r").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the reminder never activated tb/r"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reminded = loop {
        let list = host
            .call_json("tb/r", Some("GetReminded"), json!({}))
            .await
            .unwrap();
        if list["Ok"].as_array().is_some_and(|l| !l.is_empty()) {
            break list;
        }
        assert!(Instant::now() < deadline, "never handled: {list}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(reminded, json!({ "Ok": ["wake from bunraku.reminder"] }));
    // A one-shot reminder is gone once delivered.
    let cancelled = host
        .call_json("tb/r", Some("CancelReminder"), json!({ "tag": "wake" }))
        .await
        .unwrap();
    assert_eq!(cancelled, json!({ "Ok": false }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_set_by_an_actor_shows_in_ps_and_keeps_it_active() {
    let host = bunraku_tests::host();
    let mut tb = spec("tb", "testbed");
    tb.virtual_idle = Some(Duration::from_millis(50));
    deploy_spec(&host, &tb);
    let set = |status: &'static str| {
        let host = host.clone();
        async move {
            host.call_json("tb/s", Some("SetStatus"), json!({ "status": status }))
                .await
                .unwrap()
        }
    };
    assert_eq!(set("stuck: refund failed").await, json!({ "Ok": null }));
    // It also persisted something, so only the status keeps it from being deactivated.
    host.call_json("tb/s", Some("Reminded"), json!({ "tag": "x" }))
        .await
        .ok();
    // A control key without a status, idle since later: once it is evicted, the idle scan has
    // seen `tb/s` idle for longer than the timeout too.
    host.call_json("tb/c", Some("Reminded"), json!({ "tag": "x" }))
        .await
        .ok();
    eventually(Duration::from_secs(30), || {
        host.actor("tb/c").is_empty().then_some(())
    })
    .await
    .expect("the control key without a status is evicted once idle");
    let ps = host.actor("tb/s");
    assert_eq!(ps.len(), 1, "the key with a status was deactivated");
    assert_eq!(ps[0].status.as_deref(), Some("stuck: refund failed"));
    assert_eq!(ps[0].phase, "running");
    assert_eq!(set("").await, json!({ "Ok": null }));
    // Without a status the key may be evicted at once (50 ms idle): then nothing shows either.
    assert!(host.actor("tb/s").iter().all(|s| s.status.is_none()));
}

/// One `bunraku run` of the kill -9 test.
struct Run {
    guard: Guard,
    socket: std::path::PathBuf,
}

fn start_host(manifest: &Path, tmp: &Path, data: &Path, n: usize) -> Run {
    let mut cmd = bunraku(&tmp.join("home"));
    cmd.arg("run").arg(manifest).arg("--data-dir").arg(data);
    let mut guard = Guard::spawn(cmd, tmp, &format!("host-{n}"));
    let socket = data.join("control.sock");
    let start = Instant::now();
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        if let Some(status) = guard.exited() {
            guard.fail(&format!(
                "`bunraku run` exited with {status} before serving"
            ));
        }
        if start.elapsed() > Duration::from_secs(600) {
            guard.fail("`bunraku run` did not serve its socket in time");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Run { guard, socket }
}

/// An acknowledgement the driver saw: the ledger's reply to `Record`.
#[derive(Debug, Clone)]
struct Ack {
    actor: String,
    seq: u64,
    hash: [u8; 32],
}

/// Sends `Record`s to `ledger/{writer % 4}` over one control connection until the host dies;
/// records every acknowledgement as it arrives. Whether a request was in flight when it died.
async fn drive(
    socket: std::path::PathBuf,
    writer: usize,
    round: usize,
    acks: Arc<Mutex<Vec<Ack>>>,
) -> bool {
    let Ok(mut client) = Client::connect(&socket).await else {
        return false;
    };
    let actor = format!("ledger/{}", writer % 4);
    for n in 0.. {
        let entry = format!("w{writer}-r{round}-n{n}");
        let request = Request::Call {
            to: actor.clone(),
            msg_type: Some("Record".into()),
            payload: json!({ "entry": entry }),
            timeout_ms: Some(30_000),
        };
        match client.request(&request).await {
            Ok(Response::Reply(reply)) => {
                let seq = reply["Ok"]
                    .as_u64()
                    .expect("an acknowledged sequence number");
                acks.lock().unwrap().push(Ack {
                    actor: actor.clone(),
                    seq,
                    hash: event_hash(&entry),
                });
            }
            // The connection broke under the request: it was in flight when the host died.
            Err(_) => return true,
            Ok(other) => panic!("unexpected answer: {other:?}"),
        }
    }
    unreachable!()
}

/// Checks the file against every acknowledgement so far: each is present with the bytes sent,
/// sequence numbers run from 1 without gaps, and the file is intact.
fn verify(data: &Path, acks: &[Ack]) {
    let conn = open_file(data);
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let mut stmt = conn
        .prepare("SELECT payload FROM events WHERE actor = ?1 AND seq = ?2")
        .unwrap();
    for ack in acks {
        let payload: Vec<u8> = stmt
            .query_row(rusqlite::params![ack.actor, ack.seq as i64], |r| r.get(0))
            .unwrap_or_else(|e| panic!("acknowledged {ack:?} is missing: {e}"));
        let hash: [u8; 32] = Sha256::digest(&payload).into();
        assert_eq!(hash, ack.hash, "acknowledged {ack:?} holds other bytes");
    }
    let mut stmt = conn
        .prepare("SELECT actor, COUNT(*), MIN(seq), MAX(seq) FROM events GROUP BY actor")
        .unwrap();
    let logs: Vec<(String, i64, i64, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (actor, n, min, max) in logs {
        assert_eq!(
            (min, max),
            (1, n),
            "{actor}: sequence numbers 1..={n} without gaps"
        );
    }
}

/// `kill -9` of a real host process while appends are in flight, again and again: every event
/// the driver saw acknowledged is in the file after each restart, logs have no gaps, the file
/// passes `PRAGMA integrity_check`. `BUNRAKU_KILL_ITERATIONS` sets the rounds (default 20;
/// `scripts/soak-kill9.sh` runs a longer loop).
#[test]
fn acknowledged_events_survive_kill_9_of_the_host_in_a_loop() {
    let iterations: usize = std::env::var("BUNRAKU_KILL_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let manifest = tmp.path().join("bunraku.toml");
    let module = repo().join("guests/ledger");
    std::fs::write(
        &manifest,
        format!(
            "[[actor]]\nname = \"ledger\"\nmodule = \"{}\"\nvirtual = true\n\
             grants = {{ storage = true }}\n",
            module.display()
        ),
    )
    .unwrap();
    let acks = Arc::new(Mutex::new(Vec::new()));
    let mut in_flight_kills = 0;
    let mut per_round = BTreeMap::new();
    for round in 0..iterations {
        let run = start_host(&manifest, tmp.path(), &data, round);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let before = acks.lock().unwrap().len();
        let drivers: Vec<_> = (0..8)
            .map(|w| rt.spawn(drive(run.socket.clone(), w, round, acks.clone())))
            .collect();
        // Wait for this round's first acknowledgement (activation and recovery come first, and
        // their time varies with the machine), let appends flow for a while that varies by
        // round, then pull the plug.
        let deadline = Instant::now() + Duration::from_secs(60);
        while acks.lock().unwrap().len() == before {
            assert!(
                Instant::now() < deadline,
                "round {round}: no append was acknowledged within 60 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(50 + (round as u64 * 37) % 200));
        run.guard.kill_9();
        let mut in_flight = false;
        for d in drivers {
            in_flight |= rt.block_on(d).unwrap();
        }
        in_flight_kills += usize::from(in_flight);
        per_round.insert(round, acks.lock().unwrap().len() - before);
        verify(&data, &acks.lock().unwrap());
    }
    let total = acks.lock().unwrap().len();
    assert!(
        per_round.values().all(|&n| n > 0),
        "every round acknowledged appends before the kill: {per_round:?}"
    );
    assert!(
        in_flight_kills >= 1,
        "at least one kill with appends in flight ({total} acknowledged)"
    );
}

#[test]
fn the_cli_prints_an_actors_events_and_its_state_as_of_a_sequence_number() {
    let tmp = tempfile::tempdir().unwrap();
    let manifest = tmp.path().join("bunraku.toml");
    std::fs::write(
        &manifest,
        format!(
            "[[actor]]\nname = \"ledger\"\nmodule = \"{}\"\nvirtual = true\n\
             grants = {{ storage = true }}\n\n\
             [[actor]]\nname = \"echo\"\nmodule = \"{}\"\n",
            repo().join("guests/ledger").display(),
            repo().join("guests/echo").display()
        ),
    )
    .unwrap();
    let mut host = crate::cli::Host::start(&manifest);
    for entry in ["one", "two", "three"] {
        let body = format!(r#"{{"entry":"{entry}"}}"#);
        host.expect(&["call", "ledger/a", &body, "--type", "Record"], 0);
    }

    let out = host.expect(&["events", "ledger/a"], 0);
    let lines: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let seqs: Vec<_> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3], "{}", out.stdout);
    assert_eq!(
        lines[1]["event"],
        json!({ "Recorded": { "entry": "two" } }),
        "{}",
        out.stdout
    );
    let out = host.expect(&["events", "ledger/a", "--from", "2"], 0);
    assert_eq!(out.stdout.lines().count(), 1, "{}", out.stdout);

    let now: Value = serde_json::from_str(&host.expect(&["state", "ledger/a"], 0).stdout).unwrap();
    let then: Value =
        serde_json::from_str(&host.expect(&["state", "ledger/a", "--at", "2"], 0).stdout).unwrap();
    assert!(now.to_string().contains("three"), "{now}");
    assert!(
        then.to_string().contains("two") && !then.to_string().contains("three"),
        "{then}"
    );

    // An actor that is not event-sourced: a typed error and the reason.
    let out = host.expect(&["events", "echo"], 1);
    assert!(
        out.stderr.contains("not an event-sourced actor"),
        "{}",
        out.stderr
    );
}

/// The orchestration example's actors on an in-process host in `data`.
fn orchestration_host(data: &Path) -> Arc<Host> {
    let host = host_in(data);
    let manifest =
        bunraku_runtime::manifest::Manifest::load(&repo().join("examples/orchestration")).unwrap();
    host.deploy_manifest(&manifest, &bunraku_runtime::build::BuildOptions::default())
        .unwrap();
    host
}

/// How many times each key of `order/<id>` was applied by one participant, from its report.
fn applied(report: &Value, order: &str) -> BTreeMap<String, u64> {
    report["applied"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| {
            a["key"]
                .as_str()
                .unwrap()
                .starts_with(&format!("order/{order}/"))
        })
        .map(|a| {
            (
                a["key"].as_str().unwrap().to_owned(),
                a["times"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// The orchestrator traps right after the payment service answered the charge, before the
/// outcome is in its log; then the host itself goes away. After the restart its durable reminder
/// resumes it, the charge is sent again with the same key, and every participant applied each
/// key exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orchestrator_killed_between_delivery_and_record_applies_each_key_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let order = json!({
        "customer": "ann", "item": "widget", "quantity": 2, "amount": 1500,
        "crash_after_delivery": "charge",
    });
    {
        let host = orchestration_host(&data);
        let placed = host
            .call_json("order/o1", Some("orders.place"), order)
            .await;
        // The orchestrator trapped while the request waited on it.
        assert!(
            matches!(placed, Err(CallError::TargetFailed)),
            "the injected crash fails the placing request: {placed:?}"
        );
        let charged = host
            .call_json("payment", Some("payment.get"), json!({}))
            .await
            .unwrap();
        assert_eq!(
            applied(&charged, "o1").get("order/o1/charge"),
            Some(&1),
            "the charge was delivered and applied before the crash: {charged}"
        );
    }
    let host = orchestration_host(&data);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let status = host
            .call_json("order/o1", Some("orders.get"), json!({}))
            .await
            .unwrap();
        if status["state"] == "finished" {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the saga did not finish: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let report = |name: &'static str, msg: &'static str| {
        let host = host.clone();
        async move { host.call_json(name, Some(msg), json!({})).await.unwrap() }
    };
    let payments = report("payment", "payment.get").await;
    let stock = report("inventory", "inventory.get").await;
    let shipping = report("shipping", "shipping.get").await;
    assert_eq!(
        applied(&payments, "o1"),
        BTreeMap::from([("order/o1/charge".to_owned(), 1)]),
        "{payments}"
    );
    assert!(
        payments["replayed"].as_u64().unwrap() >= 1,
        "the resumed saga sent the charge again and got the recorded reply: {payments}"
    );
    assert_eq!(
        applied(&stock, "o1"),
        BTreeMap::from([("order/o1/reserve".to_owned(), 1)]),
        "{stock}"
    );
    assert_eq!(
        applied(&shipping, "o1"),
        BTreeMap::from([("order/o1/ship".to_owned(), 1)]),
        "{shipping}"
    );
    assert!(status["tracking"].is_string(), "{status}");
}
