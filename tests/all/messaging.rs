//! Direct send and request-response between real guests, and the typed errors a sender sees.

use std::time::{Duration, Instant};

use bunraku_abi::{ErrorCode, Ext};
use bunraku_runtime::{CallError, ClientMessage, Grants};
use bunraku_tests::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_replies_to_a_json_request() {
    let host = host();
    deploy(&host, "echo", "echo");
    let reply = host
        .call_json("echo", Some("Echo"), json!({"text": "hello"}))
        .await
        .unwrap();
    assert_eq!(reply, json!("hello"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_sees_sends_in_order_before_a_later_request() {
    let host = host();
    let mut counter = spec("counter", "counter");
    counter.config = json!({"initial": 10});
    deploy_spec(&host, &counter);
    for n in 1..=100 {
        host.send(ClientMessage::json(
            "counter",
            Some("Add"),
            &json!({"n": n}),
        ))
        .await
        .unwrap();
    }
    // FIFO per sender: the Get queued after the Adds sees all of them.
    let total = host
        .call_json("counter", Some("Get"), json!({}))
        .await
        .unwrap();
    assert_eq!(total, json!(10 + 5050));
    assert_eq!(host.actor("counter")[0].handled, 101);
}

/// A plain `fn` handler runs at once, without a task, unless an `async` handler holds the
/// state across an await: then it waits for the state and runs after that handler, not beside
/// it (which would be a `BorrowMutError`, a trap).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_fn_handler_waits_while_an_async_handler_holds_the_state() {
    // `HoldState` sleeps on a manual clock: it holds the state until the test moves the clock,
    // however slowly a loaded machine gets through the steps before.
    let (host, clock) = host_on_manual_clock();
    let mut testbed = spec("holder", "testbed");
    // Two handlers in flight: the plain `fn` is handed to the guest while `HoldState` sleeps.
    testbed.limits.concurrency = 2;
    deploy_spec(&host, &testbed);
    let hold = call_in_background(&host, "holder", "HoldState", json!({"ms": 1500}));
    handling_first_message(&host, "holder").await;
    let tally = call_in_background(&host, "holder", "Tally", json!({}));
    // The guest took `Tally` while `HoldState` still sleeps with the state borrowed.
    eventually(Duration::from_secs(30), || {
        (host.actor("holder")[0].handled == 2).then_some(())
    })
    .await
    .expect("the holder took `Tally`");
    assert!(
        !hold.is_finished(),
        "HoldState had ended (or the instance had failed) when Tally was taken"
    );
    clock.advance(Duration::from_millis(1500));
    let log = tally.await.unwrap().unwrap();
    assert_eq!(log, json!(["hold:start", "hold:end", "tally"]));
    assert_eq!(hold.await.unwrap().unwrap(), json!(2));
    // Alone, it runs at once.
    let log = host
        .call_json("holder", Some("Tally"), json!({}))
        .await
        .unwrap();
    assert_eq!(log, json!(["hold:start", "hold:end", "tally", "tally"]));
    let holder = &host.actor("holder")[0];
    assert_eq!((holder.failures, holder.restarts), (0, 0), "{holder:?}");
}

/// A plain `fn` handler that waits for the state runs after later events went through the
/// guest's event buffer (another message, the sleep's completion): it still sees its own
/// message's sender and extensions, which it reads in the buffer when it runs at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_fn_handler_that_waits_for_the_state_sees_its_own_envelope() {
    let (host, clock) = host_on_manual_clock();
    let mut testbed = spec("holder", "testbed");
    // `HoldState` and the two notes waiting for the state.
    testbed.limits.concurrency = 3;
    deploy_spec(&host, &testbed);
    let note = |who: &str, tag: &str| {
        host.set_principal_grants(who, Grants::all());
        ClientMessage {
            principal: who.into(),
            ext: vec![Ext {
                key: "test.tag".into(),
                value: tag.into(),
            }],
            ..ClientMessage::json("holder", Some("Note"), &json!({ "text": "note" }))
        }
    };
    let hold = call_in_background(&host, "holder", "HoldState", json!({"ms": 1500}));
    handling_first_message(&host, "holder").await;
    host.send(note("ann", "one")).await.unwrap();
    host.send(note("bob", "two")).await.unwrap();
    eventually(Duration::from_secs(30), || {
        (host.actor("holder")[0].handled == 3).then_some(())
    })
    .await
    .expect("the holder took both notes");
    assert!(
        !hold.is_finished(),
        "HoldState had ended (or the instance had failed) when the notes were taken"
    );
    clock.advance(Duration::from_millis(1500));
    assert_eq!(hold.await.unwrap().unwrap(), json!(2));
    // Alone, a note runs at once and reads its envelope in place.
    host.send(note("cid", "three")).await.unwrap();
    let log = host
        .call_json("holder", Some("Tally"), json!({}))
        .await
        .unwrap();
    assert_eq!(
        log,
        json!([
            "hold:start",
            "hold:end",
            "note from ann tag one",
            "note from bob tag two",
            "note from cid tag three",
            "tally"
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn type_is_optional_only_for_an_actor_with_one_handler() {
    let host = host();
    deploy(&host, "echo", "echo");
    deploy(&host, "noexp", "broken");
    // `broken` has exactly one handler (Smoke), so no type is needed.
    let report = host.call_json("noexp", None, json!({})).await.unwrap();
    assert_eq!(report["ok"], json!(false));
    // `echo` has two: the error lists them.
    let err = host
        .call_json("echo", None, json!({"text": "x"}))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CallError::TypeRequired { known, .. } if known.len() == 2),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "actor `echo` handles several message types; choose one with --type: Echo, Slow"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_actor_and_unknown_type_are_typed_errors() {
    let host = host();
    deploy(&host, "echo", "echo");
    let err = host
        .call_json("nobody", Some("Echo"), json!({}))
        .await
        .unwrap_err();
    assert_eq!(err, CallError::NoSuchActor("nobody".into()));
    assert_eq!(err.to_string(), "no such actor `nobody`");
    let err = host
        .call_json("echo", Some("Shout"), json!({}))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "actor `echo` has no handler for message type `Shout`; it handles: Echo, Slow"
    );
    // Guest to guest: a relay to a missing actor reports `no such actor`.
    deploy(&host, "relay", "testbed");
    let r = host
        .call_json(
            "relay",
            Some("Relay"),
            json!({"to": "ghost", "timeout_ms": null}),
        )
        .await;
    assert_eq!(r.unwrap(), json!({"Err": "no such actor"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actors_request_each_other() {
    let host = host();
    deploy(&host, "a", "testbed");
    deploy(&host, "b", "testbed");
    let r = host
        .call_json("a", Some("Relay"), json!({"to": "b", "timeout_ms": null}))
        .await;
    assert_eq!(r.unwrap(), json!({"Ok": "pong"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_past_its_deadline_times_out_for_host_and_guest_callers() {
    let _timing = exclusive().await;
    let host = host();
    deploy(&host, "echo", "echo");
    // Busy for long enough that the relay surely arrives while it is, even on a loaded machine.
    let mut slowpoke = spec("slowpoke", "testbed");
    slowpoke.limits.time_budget = Duration::from_secs(10);
    deploy_spec(&host, &slowpoke);
    deploy(&host, "asker", "testbed");
    // From a client: the echo is busy for 600 ms, the deadline is 100 ms.
    let start = Instant::now();
    let msg = ClientMessage::json("echo", Some("Slow"), &json!({"ms": 600}))
        .with_timeout(Duration::from_millis(100));
    assert_eq!(
        host.request(msg).await.unwrap_err(),
        CallError::Timeout(100)
    );
    assert!(
        start.elapsed() < Duration::from_millis(600),
        "the timeout is the deadline, not the reply"
    );
    // From a guest: `asker` relays to `slowpoke`, which is busy.
    let h = host.clone();
    let busy = tokio::spawn(async move {
        h.call_json("slowpoke", Some("Busy"), json!({"ms": 3000}))
            .await
    });
    eventually(Duration::from_secs(30), || {
        (host.actor("slowpoke")[0].handled == 1).then_some(())
    })
    .await
    .unwrap();
    let relay = host
        .call_json(
            "asker",
            Some("Relay"),
            json!({"to": "slowpoke", "timeout_ms": 100}),
        )
        .await;
    assert_eq!(relay.unwrap(), json!({"Err": "timeout"}));
    assert_eq!(busy.await.unwrap().unwrap(), json!(3000));
}

/// A message an actor sends right before it stays long in one handler does not wait for that
/// handler: the receiver, woken on the busy actor's lane, is taken by the other lane.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_before_a_long_handler_is_handled_while_it_runs() {
    let host = host();
    let mut busy = spec("busy", "testbed");
    busy.limits.time_budget = Duration::from_secs(10);
    deploy_spec(&host, &busy);
    deploy(&host, "receiver", "testbed");
    let notify = json!({"ms": 3000, "notify": "receiver"});
    let long = call_in_background(&host, "busy", "Busy", notify);
    handling_first_message(&host, "receiver").await;
    assert!(
        !long.is_finished(),
        "the receiver waited for the busy actor's handler to end"
    );
    assert_eq!(long.await.unwrap().unwrap(), json!(3000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_cycle_fails_at_once_with_deadlock() {
    let host = host();
    deploy(&host, "a", "testbed");
    deploy(&host, "b", "testbed");
    // a asks b to relay a ping back to a, which is waiting on b: refused at once, no timeout.
    let start = Instant::now();
    let r = host
        .call_json("a", Some("Bounce"), json!({"via": "b"}))
        .await
        .unwrap();
    assert_eq!(r, json!({"Ok": {"Err": "deadlock"}}));
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "detected, not timed out"
    );
    // A request to oneself is the shortest cycle.
    let r = host
        .call_json("a", Some("Relay"), json!({"to": "a", "timeout_ms": null}))
        .await;
    assert_eq!(r.unwrap(), json!({"Err": "deadlock"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_payload_is_a_typed_error_and_does_not_restart_the_actor() {
    let host = host();
    deploy(&host, "echo", "echo");
    let err = host
        .call_json("echo", Some("Echo"), json!({"txt": 5}))
        .await
        .unwrap_err();
    let CallError::Remote { code, message } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*code, ErrorCode::Malformed);
    assert!(message.contains("Echo"), "names the type: {message}");
    let ok = host
        .call_json("echo", Some("Echo"), json!({"text": "still here"}))
        .await
        .unwrap();
    assert_eq!(ok, json!("still here"));
    let status = &host.actor("echo")[0];
    assert_eq!((status.restarts, status.failures), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_message_is_refused_before_delivery() {
    let host = host();
    let mut echo = spec("echo", "echo");
    echo.limits.max_message_bytes = 1024;
    deploy_spec(&host, &echo);
    let big = "x".repeat(2000);
    let err = host
        .call_json("echo", Some("Echo"), json!({"text": big}))
        .await
        .unwrap_err();
    assert!(
        matches!(err, CallError::TooLarge { limit: 1024, .. }),
        "{err:?}"
    );
    assert_eq!(
        host.actor("echo")[0].handled,
        0,
        "nothing reached the actor"
    );
}

/// `send` keeps the name an instance sent to last, so that a sender sending to one peer after
/// another does not look it up again: a sender that switches between peers reaches each one with
/// every message it sends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_switching_between_peers_reaches_each_with_every_message() {
    let host = host();
    for name in ["tb", "a", "b"] {
        deploy(&host, name, "testbed");
    }
    for (to, count) in [("a", 3), ("b", 4), ("a", 5), ("b", 1), ("b", 2)] {
        let sent = host
            .call_json("tb", Some("Flood"), json!({"to": to, "count": count}))
            .await
            .unwrap();
        assert_eq!(sent, json!(count), "to {to}");
    }
    // Queued before these requests: each peer has handled all of its messages by then.
    for (name, noops) in [("a", 8), ("b", 7)] {
        let stats = host
            .call_json(name, Some("GetStats"), json!({}))
            .await
            .unwrap();
        assert_eq!(stats["noops"], json!(noops), "{name}");
    }
}

/// `send` remembers the name it sent to last and a message type that actor handles; another
/// type to the same name is still looked up: one the actor does not handle is refused with
/// `unknown message type` right after one it handles, and the one it handles still reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_the_last_peer_lacks_is_refused_right_after_one_it_handles() {
    let host = host();
    deploy(&host, "tb", "testbed");
    deploy(&host, "peer", "testbed");
    for _ in 0..2 {
        // `Noop` is a testbed's own type: both reach the peer.
        let flood = json!({"to": "peer", "count": 2});
        let sent = host.call_json("tb", Some("Flood"), flood).await;
        assert_eq!(sent.unwrap(), json!(2));
        // A counter's `Add` is not.
        let add = json!({"to": "peer", "n": 1});
        let added = host.call_json("tb", Some("AddTo"), add).await;
        assert_eq!(added.unwrap(), json!({"Err": "unknown message type"}));
    }
    let stats = host.call_json("peer", Some("GetStats"), json!({})).await;
    assert_eq!(stats.unwrap()["noops"], json!(4));
    assert_eq!(host.actor("peer")[0].restarts, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_an_actor_sends_itself_while_handling_its_last_ready_one_are_handled() {
    let host = host();
    deploy(&host, "tb", "testbed");
    // The only message queued: the host flags it as the last one ready, and the guest returns
    // after it without asking for more. The five it sends itself meanwhile must not wait for
    // another message to come along.
    host.send(ClientMessage::json(
        "tb",
        Some("TryFlood"),
        &json!({"to": "tb", "count": 5}),
    ))
    .await
    .unwrap();
    let handled = eventually(Duration::from_secs(10), || {
        (host.actor("tb")[0].handled == 6).then_some(())
    })
    .await;
    assert!(
        handled.is_some(),
        "handled {} of 6 messages",
        host.actor("tb")[0].handled
    );
    let stats = host
        .call_json("tb", Some("GetStats"), json!({}))
        .await
        .unwrap();
    assert_eq!(stats["noops"], json!(5));
}
