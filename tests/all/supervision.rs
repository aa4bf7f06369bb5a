//! Supervision trees on real actors, after OTP's `supervisor_SUITE`: each strategy, each restart
//! type with each exit kind, escalation past the intensity (to a parent, and at the top to the
//! host's fatal error), ordered shutdown, and the errors of a tree that cannot be built.

use std::sync::Arc;
use std::time::Duration;

use bunraku_runtime::supervision::{SupervisionError, SupervisorSpec};
use bunraku_runtime::supervisor::{Intensity, RestartType, Strategy};
use bunraku_runtime::{CallError, Host};
use bunraku_tests::*;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

/// Deploys testbed actors with a short backoff.
fn deploy_all(host: &Host, names: &[&str]) {
    for name in names {
        let mut s = spec(name, "testbed");
        s.restart.backoff_initial = Duration::from_millis(5);
        deploy_spec(host, &s);
    }
}

fn sup(name: &str, strategy: Strategy, children: &[(&str, RestartType)]) -> SupervisorSpec {
    let mut s = SupervisorSpec::new(name, &children.iter().map(|(c, _)| *c).collect::<Vec<_>>());
    s.strategy = strategy;
    for (spec, (_, restart)) in s.children.iter_mut().zip(children) {
        spec.restart = *restart;
    }
    s.backoff.backoff_initial = Duration::from_millis(5);
    s.intensity = Intensity {
        max_restarts: 10,
        period: Duration::from_secs(60),
    };
    s
}

const P: RestartType = RestartType::Permanent;
const T: RestartType = RestartType::Transient;
const TMP: RestartType = RestartType::Temporary;

async fn panic(host: &Arc<Host>, name: &str) {
    let r = host.call_json(name, Some("Panic"), json!({})).await;
    assert_eq!(r.unwrap_err(), CallError::TargetFailed, "{name} panics");
}

async fn quit(host: &Arc<Host>, name: &str) {
    host.call_json(name, Some("Quit"), json!({})).await.unwrap();
}

fn restarts(host: &Host, name: &str) -> u64 {
    host.actor(name)[0].restarts
}

fn phase(host: &Host, name: &str) -> String {
    host.actor(name)[0].phase.clone()
}

/// Waits until every named actor has been restarted `n` times and runs again.
async fn until_restarted(host: &Arc<Host>, names: &[&str], n: u64) {
    eventually(WAIT, || {
        names
            .iter()
            .all(|a| restarts(host, a) == n && phase(host, a) == "running")
            .then_some(())
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "{names:?} not restarted {n} times: {:?}",
            host.actors()
                .iter()
                .map(|s| (&s.name, s.restarts, &s.phase))
                .collect::<Vec<_>>()
        )
    });
}

async fn until_stopped(host: &Arc<Host>, name: &str) {
    eventually(WAIT, || (phase(host, name) == "stopped").then_some(()))
        .await
        .unwrap_or_else(|| panic!("{name} is {}", phase(host, name)));
}

/// Testbed actors `a`, `b`, `c` (permanent, in that start order) under supervisor `s`.
fn abc_under(host: &Host, strategy: Strategy) {
    deploy_all(host, &["a", "b", "c"]);
    host.supervise(&[sup("s", strategy, &[("a", P), ("b", P), ("c", P)])])
        .unwrap();
}

/// The `on_stop` log lines received so far, in order.
fn stopping_lines(
    logs: &mut tokio::sync::broadcast::Receiver<bunraku_runtime::logs::LogLine>,
) -> Vec<String> {
    let mut stopping = Vec::new();
    while let Ok(line) = logs.try_recv() {
        if line.message.contains(" stopping") {
            stopping.push(line.message);
        }
    }
    stopping
}

async fn pong(host: &Arc<Host>, name: &str) {
    let r = host.call_json(name, Some("Ping"), json!({})).await;
    assert_eq!(r.unwrap(), json!("pong"), "{name} answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_for_one_restarts_only_the_failed_child() {
    let host = host();
    abc_under(&host, Strategy::OneForOne);

    panic(&host, "b").await;
    until_restarted(&host, &["b"], 1).await;
    pong(&host, "b").await;
    assert_eq!((restarts(&host, "a"), restarts(&host, "c")), (0, 0));
    assert_eq!(host.actor("b")[0].supervisor.as_deref(), Some("s"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_for_all_restarts_every_child_in_start_order() {
    let host = host();
    abc_under(&host, Strategy::OneForAll);
    for name in ["a", "b", "c"] {
        pong(&host, name).await;
    }
    let (_, mut logs) = host.logs().follow();

    panic(&host, "b").await;
    until_restarted(&host, &["a", "b", "c"], 1).await;
    for name in ["a", "b", "c"] {
        pong(&host, name).await;
    }
    // The others ran `on_stop` in reverse start order, then all started in start order.
    let mut seen = Vec::new();
    while let Ok(line) = logs.try_recv() {
        if line.message.contains(" stopping") || line.message.ends_with("started") {
            seen.push(line.message);
        }
    }
    assert_eq!(
        seen,
        [
            "testbed c stopping after 0 noops",
            "testbed a stopping after 0 noops",
            "testbed a started",
            "testbed b started",
            "testbed c started"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_for_one_restarts_the_child_and_those_started_after_it() {
    let host = host();
    abc_under(&host, Strategy::RestForOne);
    // Every child runs before `b` fails: a child whose first instance had not started yet
    // would simply start once, and not count a restart.
    for name in ["a", "b", "c"] {
        pong(&host, name).await;
    }

    panic(&host, "b").await;
    until_restarted(&host, &["b", "c"], 1).await;
    assert_eq!(restarts(&host, "a"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_restart_type_with_each_exit_kind() {
    let host = host();
    let names = [
        "p-fail", "p-normal", "t-fail", "t-normal", "x-fail", "x-normal",
    ];
    deploy_all(&host, &names);
    host.supervise(&[sup(
        "s",
        Strategy::OneForOne,
        &[
            ("p-fail", P),
            ("p-normal", P),
            ("t-fail", T),
            ("t-normal", T),
            ("x-fail", TMP),
            ("x-normal", TMP),
        ],
    )])
    .unwrap();

    panic(&host, "p-fail").await;
    quit(&host, "p-normal").await;
    panic(&host, "t-fail").await;
    quit(&host, "t-normal").await;
    panic(&host, "x-fail").await;
    quit(&host, "x-normal").await;

    // permanent: restarted after either exit; transient: only after a failure.
    until_restarted(&host, &["p-fail", "p-normal", "t-fail"], 1).await;
    // transient after a normal exit, temporary after either: stopped for good.
    for name in ["t-normal", "x-fail", "x-normal"] {
        until_stopped(&host, name).await;
        assert_eq!(restarts(&host, name), 0);
        let r = host.call_json(name, Some("Ping"), json!({})).await;
        assert!(
            matches!(r, Err(CallError::NoSuchActor(_))),
            "{name} stays stopped: {r:?}"
        );
    }
    assert_eq!(host.actor("x-normal")[0].failures, 0, "a normal exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exceeding_the_intensity_at_the_top_stops_the_tree_and_sets_the_fatal_error() {
    let host = host();
    deploy_all(&host, &["a", "b", "c"]);
    let mut s = sup("top", Strategy::OneForOne, &[("a", P), ("b", P), ("c", P)]);
    s.intensity = Intensity {
        max_restarts: 2,
        period: Duration::from_secs(60),
    };
    host.supervise(&[s]).unwrap();
    for name in ["a", "b", "c"] {
        pong(&host, name).await;
    }
    let (_, mut logs) = host.logs().follow();

    for i in 1..=2 {
        panic(&host, "b").await;
        until_restarted(&host, &["b"], i).await;
    }
    assert_eq!(host.fatal_error(), None);
    panic(&host, "b").await;
    let reason = tokio::time::timeout(WAIT, host.fatal()).await.unwrap();
    assert!(
        reason.contains("supervisor `top` gave up: more than 2 restarts"),
        "{reason}"
    );
    for name in ["a", "b", "c"] {
        until_stopped(&host, name).await;
    }
    // The others stopped in reverse start order.
    let stopping = stopping_lines(&mut logs);
    assert_eq!(
        stopping,
        [
            "testbed c stopping after 0 noops",
            "testbed a stopping after 0 noops"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervisor_that_gives_up_is_restarted_by_its_parent() {
    let host = host();
    deploy_all(&host, &["x", "y", "z"]);
    let mut inner = sup("inner", Strategy::OneForOne, &[("x", P), ("y", P)]);
    inner.intensity = Intensity {
        max_restarts: 1,
        period: Duration::from_secs(60),
    };
    let outer = sup("outer", Strategy::OneForOne, &[("inner", P), ("z", P)]);
    host.supervise(&[outer, inner]).unwrap();

    panic(&host, "x").await;
    until_restarted(&host, &["x"], 1).await;
    // The second failure exceeds `inner`'s intensity: it stops `y` and fails; `outer` restarts
    // it, which starts both of its children afresh.
    panic(&host, "x").await;
    until_restarted(&host, &["x"], 2).await;
    until_restarted(&host, &["y"], 1).await;
    for name in ["x", "y", "z"] {
        pong(&host, name).await;
    }
    assert_eq!(restarts(&host, "z"), 0);
    assert_eq!(host.fatal_error(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_shutdown_stops_a_tree_in_reverse_start_order() {
    let host = host();
    abc_under(&host, Strategy::OneForOne);
    for name in ["a", "b", "c"] {
        pong(&host, name).await;
    }
    let (_, mut logs) = host.logs().follow();
    let h = host.clone();
    tokio::task::spawn_blocking(move || h.shutdown(Duration::from_secs(10)))
        .await
        .unwrap();
    let stopping = stopping_lines(&mut logs);
    assert_eq!(
        stopping,
        [
            "testbed c stopping after 0 noops",
            "testbed b stopping after 0 noops",
            "testbed a stopping after 0 noops"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_that_cannot_be_built_is_refused_with_the_reason() {
    let host = host();
    deploy_all(&host, &["a", "b"]);
    let err = |specs: &[SupervisorSpec]| host.supervise(specs).unwrap_err();

    assert_eq!(
        err(&[sup("s", Strategy::OneForOne, &[("a", P), ("ghost", P)])]),
        SupervisionError::UnknownChild {
            supervisor: "s".into(),
            child: "ghost".into()
        }
    );
    let e = err(&[
        sup("s1", Strategy::OneForOne, &[("a", P)]),
        sup("s2", Strategy::OneForOne, &[("a", P)]),
    ]);
    assert_eq!(
        e.to_string(),
        "`a` is a child of both `s1` and `s2`; a child has one supervisor"
    );
    assert_eq!(
        err(&[
            sup("s1", Strategy::OneForOne, &[("s2", P)]),
            sup("s2", Strategy::OneForOne, &[("s1", P)]),
        ]),
        SupervisionError::Cycle("s1".into())
    );
    assert_eq!(
        err(&[sup("a", Strategy::OneForOne, &[("b", P)])]),
        SupervisionError::Duplicate("a".into())
    );
    // Nothing was changed by the refused calls: `a` can still be supervised.
    host.supervise(&[sup("s", Strategy::OneForOne, &[("a", P)])])
        .unwrap();
    assert_eq!(
        err(&[sup("t", Strategy::OneForOne, &[("a", P)])]),
        SupervisionError::AlreadySupervised("a".into())
    );
}

async fn downs(host: &Arc<Host>, watcher: &str) -> Vec<String> {
    let v = host
        .call_json(watcher, Some("GetDowns"), json!({}))
        .await
        .unwrap();
    serde_json::from_value(v).unwrap()
}

async fn watch(host: &Arc<Host>, watcher: &str, actor: &str) -> serde_json::Value {
    host.call_json(watcher, Some("Watch"), json!({ "actor": actor }))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_delivers_one_down_per_watch_with_the_reason() {
    let host = host();
    deploy_all(&host, &["watcher", "failing", "quitting", "stopped"]);
    for actor in ["failing", "quitting", "stopped"] {
        assert!(watch(&host, "watcher", actor).await["Ok"].is_u64());
    }
    // No actor under the name: an immediate `Down`.
    assert!(watch(&host, "watcher", "ghost").await["Ok"].is_u64());

    panic(&host, "failing").await;
    quit(&host, "quitting").await;
    host.stop_actor("stopped").unwrap();
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + WAIT;
    while seen.len() < 4 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
        seen = downs(&host, "watcher").await;
    }
    seen.sort();
    assert_eq!(seen[0].split(": ").next(), Some("failing/0"));
    assert!(
        seen[0].contains("failed: actor `failing` instance 0 trapped"),
        "{}",
        seen[0]
    );
    assert_eq!(
        &seen[1..],
        [
            "ghost/0: no such actor",
            "quitting/0: normal",
            "stopped/0: stopped"
        ]
    );
    // One-shot: the restarted `failing` fails again, and no second `Down` comes.
    until_restarted(&host, &["failing"], 1).await;
    panic(&host, "failing").await;
    until_restarted(&host, &["failing"], 2).await;
    assert_eq!(downs(&host, "watcher").await.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watching_needs_the_send_grant() {
    let host = host();
    deploy_all(&host, &["target"]);
    let mut watcher = spec("watcher", "testbed");
    watcher.grants = bunraku_runtime::Grants::none();
    deploy_spec(&host, &watcher);
    assert_eq!(
        watch(&host, "watcher", "target").await,
        json!({ "Err": "denied" })
    );
    panic(&host, "target").await;
    until_restarted(&host, &["target"], 1).await;
    assert!(downs(&host, "watcher").await.is_empty());
}

async fn spawn_child(
    host: &Arc<Host>,
    spawner: &str,
    module: &str,
    name: &str,
    config: serde_json::Value,
) -> serde_json::Value {
    host.call_json(
        spawner,
        Some("SpawnChild"),
        json!({ "module": module, "name": name, "config": config }),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawned_actors_run_with_their_config_and_errors_are_typed() {
    let host = host();
    deploy_all(&host, &["boss"]);
    host.define_spawnable("greeter", &spec("template", "echo"), &guest("echo"))
        .unwrap();

    let ok = spawn_child(&host, "boss", "greeter", "g1", json!({"greeting": "> "})).await;
    assert_eq!(ok, json!({ "Ok": null }));
    let r = host.call_json("g1", Some("Echo"), json!({"text": "hi"}));
    assert_eq!(r.await.unwrap(), json!("> hi"));

    let err = |v: serde_json::Value| v["Err"].as_str().unwrap().to_owned();
    let taken = spawn_child(&host, "boss", "greeter", "g1", json!(null)).await;
    assert_eq!(err(taken), "already exists");
    let unknown = spawn_child(&host, "boss", "nope", "g2", json!(null)).await;
    assert_eq!(err(unknown), "not found");
    let bad_name = spawn_child(&host, "boss", "greeter", "", json!(null)).await;
    assert_eq!(err(bad_name), "invalid argument");
    assert!(host.actor("g2").is_empty());
}

/// Spawns `greeter` children of `boss` named `{prefix}N`, each with its own greeting, until
/// `done` holds for the host's start figures (at most 200), checking that every child runs
/// with its own name and config; how many it spawned.
async fn spawn_greeters_until(
    host: &Arc<Host>,
    prefix: &str,
    done: impl Fn(&bunraku_runtime::metrics::StartTimes) -> bool,
) -> usize {
    let mut spawned = 0;
    while !done(&host.totals().starts) {
        assert!(
            spawned < 200,
            "spawned {spawned} without reaching the figures"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
        let name = format!("{prefix}{spawned}");
        let greeting = format!("{name}> ");
        let ok = spawn_child(
            host,
            "boss",
            "greeter",
            &name,
            json!({ "greeting": greeting }),
        )
        .await;
        assert_eq!(ok, json!({ "Ok": null }), "{name}");
        let r = host.call_json(&name, Some("Echo"), json!({"text": "hi"}));
        assert_eq!(r.await.unwrap(), json!(format!("{greeting}hi")), "{name}");
        spawned += 1;
    }
    spawned
}

/// A spawnable module keeps instances prepared ahead, as a virtual actor type does: spawns bind
/// them, and each spawned actor still starts with its own name and config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawns_take_instances_their_module_prepared_ahead() {
    let host = host();
    deploy_all(&host, &["boss"]);
    host.define_spawnable("greeter", &spec("template", "echo"), &guest("echo"))
        .unwrap();
    // The pool fills in the background; spawns made meanwhile instantiate their own.
    spawn_greeters_until(&host, "g", |s| s.prepared > 0).await;
}

/// `prepared_instances = 0` on a spawnable module: every spawn instantiates its own instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spawnable_module_with_no_prepared_instances_instantiates_each_spawn() {
    let host = host();
    deploy_all(&host, &["boss"]);
    let mut template = spec("template", "echo");
    template.prepared_instances = Some(0);
    host.define_spawnable("greeter", &template, &guest("echo"))
        .unwrap();
    // The boss and 20 children started (a start is counted once its first entry returned).
    let spawned = spawn_greeters_until(&host, "g", |s| s.count >= 21).await;
    assert!(spawned >= 20);
    assert_eq!(host.totals().starts.prepared, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawning_needs_the_spawn_grant() {
    let host = host();
    let mut boss = spec("boss", "testbed");
    boss.grants = bunraku_runtime::Grants::all().with_spawn(false);
    deploy_spec(&host, &boss);
    host.define_spawnable("greeter", &spec("template", "echo"), &guest("echo"))
        .unwrap();
    let r = spawn_child(&host, "boss", "greeter", "g1", json!(null)).await;
    assert_eq!(r, json!({ "Err": "denied" }));
    assert!(host.actor("g1").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spawned_actor_joins_its_spawners_supervisor_with_its_restart_type() {
    let host = host();
    deploy_all(&host, &["boss"]);
    host.supervise(&[sup("s", Strategy::OneForOne, &[("boss", P)])])
        .unwrap();
    let mut template = spec("template", "testbed");
    template.restart.backoff_initial = Duration::from_millis(5);
    template.restart_type = RestartType::Temporary;
    host.define_spawnable("worker", &template, &guest("testbed"))
        .unwrap();

    let ok = spawn_child(&host, "boss", "worker", "w1", json!(null)).await;
    assert_eq!(ok, json!({ "Ok": null }));
    pong(&host, "w1").await;
    assert_eq!(host.actor("w1")[0].supervisor.as_deref(), Some("s"));
    // Temporary: a failure ends it for good, and its supervisor restarts nobody.
    panic(&host, "w1").await;
    until_stopped(&host, "w1").await;
    assert_eq!(restarts(&host, "boss"), 0);
}

/// `victim` (mailbox of 4) waits inside `Relay` on `sleeper`, which is busy for 3 s, and its
/// mailbox is full behind it. Returns the relay call and the sleeper's busy call.
async fn full_and_waiting(
    host: &Arc<Host>,
) -> (
    tokio::task::JoinHandle<Result<serde_json::Value, CallError>>,
    tokio::task::JoinHandle<Result<serde_json::Value, CallError>>,
) {
    let mut sleeper = spec("sleeper", "testbed");
    sleeper.limits.time_budget = Duration::from_secs(30);
    deploy_spec(host, &sleeper);
    let mut victim = spec("victim", "testbed");
    victim.limits.mailbox = 4;
    deploy_spec(host, &victim);
    pong(host, "victim").await;

    let call = |to: &'static str, ty: &'static str, v: serde_json::Value| {
        let host = host.clone();
        tokio::spawn(async move { host.call_json(to, Some(ty), v).await })
    };
    let busy = call("sleeper", "Busy", json!({"ms": 3000}));
    eventually(WAIT, || {
        (host.actor("sleeper")[0].handled >= 1).then_some(())
    })
    .await
    .unwrap();
    let relay = call(
        "victim",
        "Relay",
        json!({"to": "sleeper", "timeout_ms": 60000}),
    );
    eventually(WAIT, || {
        (host.actor("victim")[0].pending == 1).then_some(())
    })
    .await
    .unwrap();
    for i in 0..4 {
        let msg = bunraku_runtime::ClientMessage::json("victim", Some("Noop"), &json!({"i": i}));
        host.send(msg).await.unwrap();
    }
    assert_eq!(host.actor("victim")[0].mailbox, 4, "the mailbox is full");
    (relay, busy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_reaches_an_actor_whose_mailbox_is_full() {
    let host = host();
    let (relay, busy) = full_and_waiting(&host).await;
    let (_, mut logs) = host.logs().follow();

    host.stop_actor("victim").unwrap();
    assert!(
        host.actor("victim").is_empty(),
        "the name is released at once"
    );
    // A stop lets the handler in flight finish and runs `on_stop`; the queue is dropped.
    assert_eq!(relay.await.unwrap().unwrap(), json!({"Ok": "pong"}));
    assert_eq!(busy.await.unwrap().unwrap(), json!(3000));
    let stopped = eventually(WAIT, || {
        loop {
            match logs.try_recv() {
                Ok(line) if line.message.starts_with("testbed victim stopping") => return Some(()),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    })
    .await;
    assert!(stopped.is_some(), "on_stop ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_ends_an_actor_whose_mailbox_is_full_without_waiting_for_its_handler() {
    let host = host();
    let (relay, busy) = full_and_waiting(&host).await;

    let (_, mut logs) = host.logs().follow();
    host.kill_actor("victim").unwrap();
    assert!(
        host.actor("victim").is_empty(),
        "the name is released at once"
    );
    assert_eq!(relay.await.unwrap().unwrap_err(), CallError::TargetFailed);
    assert!(
        !busy.is_finished(),
        "killed before the request it waited on was answered"
    );
    assert_eq!(busy.await.unwrap().unwrap(), json!(3000));
    // No `on_stop`, and not a failure.
    while let Ok(line) = logs.try_recv() {
        assert_eq!(
            line.actor, "sleeper",
            "nothing from the killed victim: {line:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_the_mailboxes_before_stopping() {
    let host = host();
    deploy_all(&host, &["worker"]);
    pong(&host, "worker").await;
    // 50 messages queued behind a busy handler.
    let busy = call_in_background(&host, "worker", "Busy", json!({"ms": 300}));
    eventually(WAIT, || {
        (host.actor("worker")[0].handled >= 2).then_some(())
    })
    .await
    .unwrap();
    for i in 0..50 {
        let msg = bunraku_runtime::ClientMessage::json("worker", Some("Noop"), &json!({"i": i}));
        host.send(msg).await.unwrap();
    }
    let (_, mut logs) = host.logs().follow();
    let h = host.clone();
    tokio::task::spawn_blocking(move || h.shutdown(Duration::from_secs(20)))
        .await
        .unwrap();
    assert_eq!(busy.await.unwrap().unwrap(), json!(300));
    let stopping = stopping_lines(&mut logs);
    assert_eq!(stopping, ["testbed worker stopping after 50 noops"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_deadlines_are_on_the_hosts_clock() {
    let (host, clock) = host_on_manual_clock();
    deploy(&host, "sleeper", "testbed");
    // A nap of an hour on the manual clock: the drain cannot finish on its own.
    let nap = call_in_background(&host, "sleeper", "Nap", json!({"ms": 3_600_000}));
    eventually(WAIT, || {
        (host.actor("sleeper")[0].pending == 1).then_some(())
    })
    .await
    .expect("the nap's timer is pending");

    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let h = host.clone();
    std::thread::spawn(move || {
        h.shutdown(Duration::from_millis(200));
        let _ = done_tx.send(());
    });
    // Far more real time than the grace: on real time the shutdown would be over.
    assert!(
        done_rx.recv_timeout(Duration::from_secs(2)).is_err(),
        "the shutdown ended before the host's clock reached its deadline"
    );
    assert_eq!(host.actor("sleeper")[0].pending, 1, "still napping");
    clock.advance(Duration::from_secs(1));
    done_rx
        .recv_timeout(WAIT)
        .expect("the shutdown ends once the clock passed its grace");
    // The nap was cut short by the stop: its caller is told, not left waiting.
    let err = nap.await.unwrap().unwrap_err();
    assert!(matches!(err, CallError::TargetFailed), "{err:?}");
}
