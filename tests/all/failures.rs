//! Traps, restarts and runaway guests: a failing actor is discarded, its requester told, its
//! queue kept, and nobody else notices.

use std::time::{Duration, Instant};

use bunraku_runtime::{CallError, ClientMessage, Host};
use bunraku_tests::*;
use serde_json::json;

/// An echo actor answers.
async fn echo_alive(host: &Host, echo: &str) {
    let r = host
        .call_json(echo, Some("Echo"), json!({"text": "alive"}))
        .await
        .unwrap();
    assert_eq!(r, json!("alive"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trapping_actor_is_restarted_with_its_sender_told_and_its_queue_kept() {
    let host = host();
    let mut victim = spec("victim", "testbed");
    victim.restart.backoff_initial = Duration::from_millis(10);
    // `Busy` must outlast the queueing below on a loaded machine: 2 s, within a 10 s budget.
    victim.limits.time_budget = Duration::from_secs(10);
    deploy_spec(&host, &victim);
    deploy(&host, "bystander", "echo");

    // Keep the victim busy so the next messages queue up behind the one that traps.
    let busy = call_in_background(&host, "victim", "Busy", json!({"ms": 2000}));
    eventually(Duration::from_secs(30), || {
        (host.actor("victim")[0].handled == 1).then_some(())
    })
    .await
    .unwrap();
    let panic = call_in_background(&host, "victim", "Panic", json!({}));
    eventually(Duration::from_secs(30), || {
        (host.actor("victim")[0].mailbox == 1).then_some(())
    })
    .await
    .unwrap();
    for i in 0..10 {
        host.send(ClientMessage::json(
            "victim",
            Some("Noop"),
            &json!({"i": i}),
        ))
        .await
        .unwrap();
    }

    assert_eq!(busy.await.unwrap().unwrap(), json!(2000));
    // The sender of the trapping message is told; the message is not redelivered.
    assert_eq!(panic.await.unwrap().unwrap_err(), CallError::TargetFailed);
    // The bystander never noticed.
    assert_eq!(
        host.call_json("bystander", Some("Echo"), json!({"text": "ok"}))
            .await
            .unwrap(),
        json!("ok")
    );
    // The queued messages reached the new instance, in order.
    let stats = host
        .call_json("victim", Some("GetStats"), json!({}))
        .await
        .unwrap();
    assert_eq!(stats["started"], json!(1), "a fresh instance: {stats}");
    assert_eq!(stats["noops"], json!(10), "{stats}");
    assert_eq!(stats["in_order"], json!(true));
    let status = &host.actor("victim")[0];
    assert_eq!((status.restarts, status.failures), (1, 1));
    let failure = status.last_failure.as_deref().unwrap();
    assert!(failure.contains("while handling `Panic`"), "{failure}");
    let (logs, _) = host.logs().follow();
    assert!(
        logs.iter()
            .any(|l| l.actor == "victim" && l.message.contains("testbed was asked to panic")),
        "the guest's panic message is in its log"
    );
    assert_eq!(host.actor("bystander")[0].restarts, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_loop_is_stopped_by_its_budget_while_others_keep_answering() {
    let _timing = exclusive().await;
    let host = host();
    let mut runaway = spec("runaway", "testbed");
    runaway.limits.time_budget = Duration::from_secs(2);
    deploy_spec(&host, &runaway);
    deploy(&host, "healthy", "echo");
    let tick = host.engine().epoch_tick();

    let started = Instant::now();
    let spin = call_in_background(&host, "runaway", "Spin", json!({}));
    handling_first_message(&host, "runaway").await;
    let mut answered = 0;
    while !spin.is_finished() {
        echo_alive(&host, "healthy").await;
        answered += 1;
    }
    let elapsed = started.elapsed();
    assert_eq!(spin.await.unwrap().unwrap_err(), CallError::TargetFailed);
    assert!(
        answered >= 100,
        "the healthy actor answered only {answered} requests during the loop"
    );
    // The budget is the feature: trapped no earlier than the budget, and within it plus one
    // epoch tick (plus scheduling slack for a loaded 2-core machine).
    assert!(
        elapsed >= Duration::from_secs(2) - tick,
        "trapped early: {elapsed:?}"
    );
    assert!(
        elapsed <= Duration::from_secs(2) + tick + Duration::from_millis(500),
        "trapped late: {elapsed:?}"
    );
    let failure = host.actor("runaway")[0].last_failure.clone().unwrap();
    assert!(
        failure.contains("exceeded its time budget of 2000 ms while handling `Spin`"),
        "{failure}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_is_per_message_not_per_batch() {
    let _timing = exclusive().await;
    let host = host();
    let mut worker = spec("worker", "testbed");
    worker.limits.time_budget = Duration::from_millis(400);
    deploy_spec(&host, &worker);
    // Five 150 ms messages queued together are handled in one guest entry (750 ms in all),
    // yet none exceeds its own 400 ms budget.
    let calls: Vec<_> = (0..5)
        .map(|_| call_in_background(&host, "worker", "Busy", json!({"ms": 150})))
        .collect();
    for c in calls {
        assert_eq!(c.await.unwrap().unwrap(), json!(150));
    }
    assert_eq!(host.actor("worker")[0].failures, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_keeps_yielding_outlives_its_budget_and_leaves_the_lane_to_others() {
    let _timing = exclusive().await;
    // One guest lane: the yielding actor and the bystander take turns on the same thread.
    let host = host_on_lanes(1, Default::default());
    let mut yielder = spec("yielder", "testbed");
    // A short budget: the loop below runs for many times longer. Each entry gets a fresh one.
    yielder.limits.time_budget = Duration::from_millis(100);
    yielder.limits.concurrency = 2;
    deploy_spec(&host, &yielder);
    deploy(&host, "bystander", "echo");

    let started = Instant::now();
    let yielding = call_in_background(&host, "yielder", "Yielding", json!({}));
    handling_first_message(&host, "yielder").await;
    // While it yields, the actor on the same lane answers.
    let mut answered = 0;
    while started.elapsed() < Duration::from_millis(500) {
        echo_alive(&host, "bystander").await;
        answered += 1;
    }
    assert!(
        !yielding.is_finished(),
        "the yielding handler ended early: {:?}",
        yielding.await
    );
    // Five budgets in, a second handler gets through (the actor's concurrency is 2) and ends
    // the loop.
    host.send(ClientMessage::json(
        "yielder",
        Some("StopYielding"),
        &json!({}),
    ))
    .await
    .unwrap();
    // The host entered it again and again on its own: without that, it would only have made
    // the 16 turns the SDK polls in a row after each of its three events.
    let turns = yielding.await.unwrap().unwrap().as_u64().unwrap();
    assert!(turns > 3 * 16, "{turns} turns");
    assert!(answered >= 10, "the bystander answered {answered} times");
    let yielder = &host.actor("yielder")[0];
    assert_eq!((yielder.failures, yielder.restarts), (0, 0), "{yielder:?}");
}
