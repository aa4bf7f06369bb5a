//! Actor references: an actor with the grant for a name hands a reference to an actor without
//! it, which can then call the target through the reference, and only through it.

use bunraku_runtime::{Grants, Host};
use bunraku_tests::*;
use serde_json::{Value, json};

/// `vault` (the target), `owner` (may send to `vault` and `helper`), `helper` (no grants).
fn trio() -> std::sync::Arc<Host> {
    let host = host();
    deploy(&host, "vault", "testbed");
    let mut owner = spec("owner", "testbed");
    owner.grants = Grants::none().send_to("vault").send_to("helper");
    deploy_spec(&host, &owner);
    let mut helper = spec("helper", "testbed");
    helper.grants = Grants::none();
    deploy_spec(&host, &helper);
    host
}

async fn introduce(host: &Host, by_name: Option<&str>) -> Value {
    host.call_json(
        "owner",
        Some("Introduce"),
        json!({"target": "vault", "to": "helper", "by_name": by_name}),
    )
    .await
    .unwrap()
}

async fn call_kept(host: &Host) -> Value {
    host.call_json("helper", Some("CallKept"), json!({}))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attached_reference_lets_an_actor_without_grants_call_the_target() {
    let host = trio();
    assert_eq!(introduce(&host, None).await, json!({"Ok": {"Ok": "pong"}}));
    // The reference is kept and used again in a later message.
    assert_eq!(call_kept(&host).await, json!({"Ok": "pong"}));
    assert_eq!(host.actor("vault")[0].handled, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holding_a_reference_gives_no_grant_for_the_name() {
    let host = trio();
    assert_eq!(
        introduce(&host, Some("vault")).await,
        json!({"Ok": {"Err": "denied"}})
    );
    assert_eq!(host.actor("vault")[0].handled, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_follows_its_actor_through_restarts_until_it_is_gone() {
    let host = trio();
    introduce(&host, None).await;
    // `Panic` traps the vault; the host starts a new instance under the same address.
    let _ = host.call_json("vault", Some("Panic"), json!({})).await;
    let back = eventually(std::time::Duration::from_secs(30), || {
        let s = host.actor("vault");
        (s[0].restarts == 1 && s[0].phase == "running").then_some(())
    })
    .await;
    assert!(back.is_some(), "{:?}", host.actor("vault"));
    assert_eq!(call_kept(&host).await, json!({"Ok": "pong"}));
    host.stop_actor("vault").unwrap();
    // A call that raced the stop may still be answered; once the vault is gone, the reference
    // fails with a typed error instead of hanging.
    let mut last = Value::Null;
    for _ in 0..300 {
        last = call_kept(&host).await;
        if last == json!({"Err": "no such actor"}) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(last, json!({"Err": "no such actor"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actor_that_may_not_reach_the_target_cannot_hand_out_a_reference_to_it() {
    let host = trio();
    // `helper` has no grant for `vault`, so it cannot take a reference to it to pass on.
    let r = host
        .call_json(
            "helper",
            Some("Introduce"),
            json!({"target": "vault", "to": "owner", "by_name": null}),
        )
        .await
        .unwrap();
    assert_eq!(r, json!({"Err": "denied"}));
}
