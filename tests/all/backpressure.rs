//! Bounded mailboxes: `try_send` sees `full`, `send().await` suspends the sender, and nothing
//! piles up in the host or in the sender while the receiver is stalled.

use std::time::Duration;

use bunraku_tests::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_sender_is_suspended_by_a_stalled_receiver_and_loses_nothing() {
    // The sink stalls in a `Busy` that spins on a manual clock, so the stall lasts until the
    // test has seen what it checks, however slowly a loaded machine gets there (a generous
    // time budget: the spin is real work).
    let (host, clock) = host_on_manual_clock();
    let mut sink = spec("sink", "testbed");
    sink.limits.mailbox = 8;
    sink.limits.time_budget = Duration::from_secs(120);
    deploy_spec(&host, &sink);
    deploy(&host, "flooder", "testbed");
    deploy(&host, "prober", "testbed");

    // Stall the receiver.
    let h = host.clone();
    let stall =
        tokio::spawn(async move { h.call_json("sink", Some("Busy"), json!({"ms": 1500})).await });
    eventually(Duration::from_secs(30), || {
        (host.actor("sink")[0].handled == 1).then_some(())
    })
    .await
    .unwrap();

    let h = host.clone();
    let flood = tokio::spawn(async move {
        h.call_json(
            "flooder",
            Some("Flood"),
            json!({"to": "sink", "count": 2000}),
        )
        .await
    });
    // The mailbox fills to its bound and the flooder waits with exactly one message in hand.
    let full = eventually(Duration::from_secs(30), || {
        let s = host.actor("flooder");
        (host.actor("sink")[0].mailbox == 8 && s[0].pending == 1).then_some(s[0].memory)
    })
    .await
    .expect("the sink's mailbox fills and the flooder suspends");
    // A try-send meanwhile is refused as full: the actor sees a typed error, not a stall.
    let tried = host
        .call_json(
            "prober",
            Some("TryFlood"),
            json!({"to": "sink", "count": 50}),
        )
        .await;
    let tried = tried.unwrap_or_else(|e| panic!("{e}: {:?}", host.actor("prober")[0].last_failure));
    assert_eq!(tried, json!([0, 50]));
    for _ in 0..20 {
        let sink = &host.actor("sink")[0];
        let flooder = &host.actor("flooder")[0];
        assert!(
            sink.mailbox <= 8,
            "mailbox above its bound: {}",
            sink.mailbox
        );
        assert!(
            flooder.pending <= 1,
            "host holds more than one message for the sender"
        );
        assert_eq!(
            flooder.memory, full,
            "the sender's linear memory grew while suspended"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!flood.is_finished());
    clock.advance(Duration::from_millis(1500));
    assert_eq!(stall.await.unwrap().unwrap(), json!(1500));
    assert_eq!(flood.await.unwrap().unwrap(), json!(2000));
    let stats = host
        .call_json("sink", Some("GetStats"), json!({}))
        .await
        .unwrap();
    assert_eq!(stats["noops"], json!(2000), "nothing lost");
    assert_eq!(stats["in_order"], json!(true), "FIFO per sender");
    assert_eq!(
        host.actor("flooder")[0].memory,
        full,
        "constant after the flood too"
    );
}
