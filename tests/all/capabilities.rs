//! Capabilities: grants, denial of every gated import, subject containment, forged handles, and
//! the CLI as a principal with grants of its own. Deny by default.

use std::time::Duration;

use bunraku_abi::{Capability, HOST_FUNCTIONS, Policy};
use bunraku_runtime::build::BuildOptions;
use bunraku_runtime::control::{self, Client, Request, Response};
use bunraku_runtime::manifest::{ActorSpec, Manifest, SubscriptionSpec};
use bunraku_runtime::subject::Pattern;
use bunraku_runtime::{CallError, ClientMessage, Grants, Host};
use bunraku_tests::*;
use serde_json::{Value, json};

fn pattern(text: &str) -> Pattern {
    Pattern::parse(text).unwrap()
}

/// The intruder guest as `intruder`, with `grants`.
fn intruder_spec(grants: Grants) -> ActorSpec {
    spec("intruder", "intruder").with_grants(grants)
}

/// Asks the intruder to try `function` on `target`; its answer is `"ok"` or an error code name.
async fn attempt(host: &Host, function: &str, target: &str) -> String {
    let reply = host
        .call_json(
            "intruder",
            Some("Attempt"),
            json!({ "function": function, "target": target }),
        )
        .await
        .unwrap_or_else(|e| panic!("attempting {function} on {target}: {e}"));
    reply.as_str().unwrap().to_owned()
}

/// What the intruder tries each gated function on: targets that exist and would be reachable
/// with a grant, so a refusal is the grant's doing. Any function not listed gets no target, and
/// the intruder answers `uncovered` for a function it cannot try.
fn target_for(function: &str) -> &'static str {
    match function {
        "send" => "counter",
        "request" => "echo",
        "publish" => "news.eu",
        "subscribe" => "news.*",
        // A subscription id the host never issued to the intruder.
        "unsubscribe" => "1",
        "watch" => "echo",
        // A module name: spawning is refused before the module is looked up.
        "spawn" => "echo",
        // A timer id the host never issued to the intruder.
        "timer_cancel" => "1",
        "stream_open" => "echo",
        _ => "",
    }
}

/// A subscriber named `name` on `patterns` (manifest subscriptions: the operator's, no grant).
fn subscriber(host: &Host, name: &str, patterns: &[&str]) {
    let s = spec(name, "pubsub-subscriber").with_grants(Grants::none());
    deploy_spec(host, &subscribed(s, patterns));
}

/// The subjects of the ticks `name` has seen (`Report`), in order.
async fn seen(host: &Host, name: &str) -> Vec<String> {
    let v = host
        .call_json(name, Some("Report"), json!({}))
        .await
        .unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s["subject"].as_str().unwrap().to_owned())
        .collect()
}

async fn counter_value(host: &Host) -> Value {
    host.call_json("counter", Some("Get"), json!({}))
        .await
        .unwrap()
}

/// The intruder's `denied` warnings so far.
fn denials(host: &Host) -> Vec<String> {
    let (lines, _) = host.logs().follow();
    lines
        .into_iter()
        .filter(|l| l.actor == "intruder" && l.level == "warn" && l.message.starts_with("denied"))
        .map(|l| l.message)
        .collect()
}

/// The intruder has run in one instance all along: no failure, no restart.
fn never_restarted(host: &Host) {
    let status = &host.actor("intruder")[0];
    assert_eq!((status.failures, status.restarts), (0, 0), "{status:?}");
    assert_eq!(status.phase, "running");
}

fn tick(subject: &str, seq: u64) -> ClientMessage {
    ClientMessage::json(
        subject,
        Some("pubsub.tick"),
        &json!({ "publisher": "cli", "seq": seq }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_gated_import_is_denied_for_an_actor_without_grants() {
    let host = host();
    deploy(&host, "echo", "echo");
    deploy(&host, "counter", "counter");
    subscriber(&host, "all", &[">"]);
    deploy_spec(&host, &intruder_spec(Grants::none()));

    let gated: Vec<&str> = HOST_FUNCTIONS
        .iter()
        .filter(|f| f.capability != Capability::None)
        .map(|f| f.name)
        .collect();
    for known in [
        "send",
        "request",
        "publish",
        "subscribe",
        "unsubscribe",
        "state_load",
        "state_save",
    ] {
        assert!(gated.contains(&known), "{known} is not gated: {gated:?}");
    }
    // Walks the table: a gated function added later fails here until the intruder can try it.
    for function in &gated {
        assert_eq!(
            attempt(&host, function, target_for(function)).await,
            "denied",
            "{function}"
        );
    }

    // Nothing got through.
    assert_eq!(counter_value(&host).await, json!(0));
    assert_eq!(seen(&host, "all").await, Vec::<String>::new());
    // Each refusal is in the actor's log, naming the function.
    let logged = denials(&host);
    for function in &gated {
        assert!(
            logged.iter().any(|m| m.contains(&format!("`{function}`"))),
            "no denial logged for {function}: {logged:?}"
        );
    }
    // A denial is an error the guest handled, not a failure: the same instance still answers.
    never_restarted(&host);
    let echoed = host
        .call_json("intruder", Some("Echo"), json!({ "text": "still here" }))
        .await
        .unwrap();
    assert_eq!(echoed, json!("still here"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_gated_import_passes_the_gate_with_all_grants() {
    let host = host();
    deploy(&host, "echo", "echo");
    deploy(&host, "counter", "counter");
    deploy_spec(&host, &intruder_spec(Grants::all()));
    for f in HOST_FUNCTIONS
        .iter()
        .filter(|f| f.capability != Capability::None)
    {
        if f.name == "unsubscribe" {
            // Needs a subscription the intruder holds: take one first.
            assert_eq!(attempt(&host, "subscribe", "news.*").await, "ok");
            assert_eq!(attempt(&host, "unsubscribe", "").await, "ok");
            continue;
        }
        let outcome = attempt(&host, f.name, target_for(f.name)).await;
        // Past the gate, an attempt may still fail for its own reasons (no store on this host,
        // no spawnable module of that name), but not for want of a grant.
        assert!(
            outcome != "denied" && !outcome.starts_with("uncovered"),
            "{}: {outcome}",
            f.name
        );
    }
    assert_eq!(counter_value(&host).await, json!(1));
    assert!(denials(&host).is_empty(), "{:?}", denials(&host));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_is_allowed_only_where_a_granted_pattern_matches_the_subject() {
    let host = host();
    subscriber(&host, "all", &[">"]);
    deploy_spec(
        &host,
        &intruder_spec(Grants::none().publish_to(pattern("orders.>"))),
    );
    assert_eq!(attempt(&host, "publish", "orders.eu").await, "ok");
    assert_eq!(attempt(&host, "publish", "orders.eu.created").await, "ok");
    // `orders.>` needs at least one more token.
    assert_eq!(attempt(&host, "publish", "orders").await, "denied");
    assert_eq!(attempt(&host, "publish", "billing.eu").await, "denied");
    // A wildcard is no subject to publish to, granted or not.
    assert_eq!(
        attempt(&host, "publish", "orders.*").await,
        "invalid argument"
    );
    // Publishing is all it may do.
    assert_eq!(attempt(&host, "subscribe", "orders.eu").await, "denied");
    assert_eq!(seen(&host, "all").await, ["orders.eu", "orders.eu.created"]);
    assert_eq!(
        denials(&host),
        [
            "denied: `publish` to `orders`: the actor holds no grant for it",
            "denied: `publish` to `billing.eu`: the actor holds no grant for it",
            "denied: `subscribe` needs a Subscribe grant, and the actor holds none",
        ]
    );
    never_restarted(&host);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_needs_a_granted_pattern_that_contains_the_requested_one() {
    let host = host();
    let grants = Grants::none()
        .subscribe_to(pattern("a.b"))
        .subscribe_to(pattern("c.*"));
    deploy_spec(&host, &intruder_spec(grants));
    for (requested, outcome) in [
        // `a.b` allows exactly `a.b`: not `a.*`, not `>`.
        ("a.b", "ok"),
        ("a.*", "denied"),
        ("a.>", "denied"),
        (">", "denied"),
        ("*.b", "denied"),
        // `c.*` allows itself and what it contains.
        ("c.x", "ok"),
        ("c.>", "denied"),
        ("c.x.y", "denied"),
    ] {
        assert_eq!(
            attempt(&host, "subscribe", requested).await,
            outcome,
            "{requested}"
        );
    }
    // What it did subscribe to is delivered; nothing else is.
    for (seq, subject) in ["a.b", "a.z", "c.x", "c.y", "a.b.c"].iter().enumerate() {
        host.publish(tick(subject, seq as u64)).await.unwrap();
    }
    // Published and requested messages from one sender are not ordered with each other: poll.
    let mut got = Vec::new();
    let start = std::time::Instant::now();
    while got.len() < 2 && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(10)).await;
        got = seen(&host, "intruder").await;
    }
    assert_eq!(got, ["a.b", "c.x"]);
    never_restarted(&host);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_subscriptions_are_the_operators_and_need_no_grant() {
    let host = host();
    let mut s = intruder_spec(Grants::none());
    s.subscriptions = vec![SubscriptionSpec {
        pattern: "news.>".into(),
        policy: Policy::Wait,
    }];
    deploy_spec(&host, &s);
    let report = host.publish(tick("news.eu", 1)).await.unwrap();
    assert_eq!(report.delivered, 1);
    assert_eq!(seen(&host, "intruder").await, ["news.eu"]);
    // The same pattern at run time is the actor's own doing, and needs the grant.
    assert_eq!(attempt(&host, "subscribe", "news.>").await, "denied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_learned_from_a_message_is_no_grant_to_send_to_it() {
    let host = host();
    deploy(&host, "echo", "echo");
    deploy(&host, "counter", "counter");
    deploy_spec(&host, &intruder_spec(Grants::none().send_to("echo")));
    // Each target name reaches the intruder in a message; only the granted one may be used.
    assert_eq!(attempt(&host, "request", "echo").await, "ok");
    assert_eq!(attempt(&host, "send", "counter").await, "denied");
    assert_eq!(attempt(&host, "request", "counter").await, "denied");
    // Denied before the name is looked up: an ungranted actor cannot probe which names exist.
    assert_eq!(attempt(&host, "request", "nobody").await, "denied");
    assert_eq!(counter_value(&host).await, json!(0));
    assert_eq!(
        denials(&host),
        [
            "denied: `send` to `counter`: the actor holds no grant for it",
            "denied: `request` to `counter`: the actor holds no grant for it",
            "denied: `request` to `nobody`: the actor holds no grant for it",
        ]
    );

    // `*` grants every name, including ones it learns later.
    host.stop_actor("intruder").unwrap();
    deploy_spec(
        &host,
        &intruder_spec(Grants::none().send_to(bunraku_runtime::ANY_ACTOR)),
    );
    assert_eq!(attempt(&host, "send", "counter").await, "ok");
    assert_eq!(attempt(&host, "request", "nobody").await, "no such actor");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handle_the_host_never_issued_is_denied_even_with_every_grant() {
    let host = host();
    deploy_spec(&host, &intruder_spec(Grants::all()));
    // Replying needs no grant, only the one-shot handle of a request the actor received.
    assert_eq!(attempt(&host, "reply", "4242").await, "denied");
    assert_eq!(attempt(&host, "reply", "0").await, "denied");
    // Unsubscribing takes a subscription id the host issued to this instance.
    assert_eq!(attempt(&host, "unsubscribe", "4242").await, "denied");
    assert_eq!(attempt(&host, "subscribe", "a.b").await, "ok");
    assert_eq!(attempt(&host, "unsubscribe", "").await, "ok");
    // Actor references: a number the instance was not issued neither addresses a message nor
    // travels with one, and cannot be released.
    assert_eq!(attempt(&host, "send_ref", "77").await, "denied");
    assert_eq!(attempt(&host, "attach", "77").await, "denied");
    assert_eq!(attempt(&host, "drop_ref", "77").await, "invalid argument");
    // The handle the host issues does all three.
    assert_eq!(attempt(&host, "actor_ref", "intruder").await, "ok");
    assert_eq!(attempt(&host, "send_ref", "1").await, "ok");
    assert_eq!(attempt(&host, "attach", "1").await, "ok");
    assert_eq!(attempt(&host, "drop_ref", "1").await, "ok");
    assert_eq!(attempt(&host, "send_ref", "1").await, "denied");
    // A stream handle it was never issued.
    assert_eq!(attempt(&host, "stream_credit", "5").await, "denied");
    let logged = denials(&host);
    assert!(
        logged
            .iter()
            .any(|m| m.contains("actor reference 77 was never issued")),
        "{logged:?}"
    );
    never_restarted(&host);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_needs_the_grant_for_its_name_except_to_oneself() {
    let host = host();
    deploy(&host, "echo", "echo");
    deploy_spec(&host, &intruder_spec(Grants::none()));
    assert_eq!(attempt(&host, "actor_ref", "echo").await, "denied");
    // Its own reference needs no grant, and sending through it needs none either.
    assert_eq!(attempt(&host, "actor_ref", "intruder").await, "ok");
    assert_eq!(attempt(&host, "send_ref", "1").await, "ok");
    // With the grant for a name, a reference to it; to an actor that is not there, none.
    host.stop_actor("intruder").unwrap();
    deploy_spec(
        &host,
        &intruder_spec(Grants::none().send_to(bunraku_runtime::ANY_ACTOR)),
    );
    assert_eq!(attempt(&host, "actor_ref", "echo").await, "ok");
    assert_eq!(attempt(&host, "actor_ref", "nobody").await, "no such actor");
    never_restarted(&host);
}

/// `send` remembers the name it sent to last, and that its grants allowed it. A send through a
/// reference needs no grant, so it does not count as one: the same name by name right after is
/// still checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_through_a_reference_is_no_grant_for_the_next_send_by_its_name() {
    let host = host();
    deploy_spec(&host, &intruder_spec(Grants::none()));
    assert_eq!(attempt(&host, "actor_ref", "intruder").await, "ok");
    assert_eq!(attempt(&host, "send_ref", "1").await, "ok");
    assert_eq!(attempt(&host, "send", "intruder").await, "denied");
    assert_eq!(
        denials(&host),
        ["denied: `send` to `intruder`: the actor holds no grant for it"]
    );
    never_restarted(&host);
}

/// Serves `host`'s control socket in a temporary directory and connects to it as the CLI.
async fn cli_client(
    host: &std::sync::Arc<Host>,
) -> (tempfile::TempDir, control::ControlServer, Client) {
    let dir = tempfile::tempdir().unwrap();
    let server = control::serve(host.clone(), &dir.path().join("data"))
        .await
        .unwrap();
    let client = Client::connect(server.path()).await.unwrap();
    (dir, server, client)
}

fn call(to: &str, msg_type: &str, payload: Value) -> Request {
    Request::Call {
        to: to.into(),
        msg_type: Some(msg_type.into()),
        payload,
        timeout_ms: None,
    }
}

/// The error code and message of a response that must be an error.
fn error_of(response: Response) -> (String, String) {
    match response {
        Response::Error(e) => (e.code, e.message),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restricted_cli_principal_is_denied_through_the_control_socket() {
    let host = host();
    deploy(&host, "echo", "echo");
    deploy(&host, "counter", "counter");
    host.set_principal_grants("cli", Grants::none().send_to("echo"));
    let (_dir, _server, mut client) = cli_client(&host).await;

    let hi = client
        .request(&call("echo", "Echo", json!({ "text": "hi" })))
        .await
        .unwrap();
    assert_eq!(hi, Response::Reply(json!("hi")));

    let (code, message) = error_of(
        client
            .request(&call("counter", "Get", json!({})))
            .await
            .unwrap(),
    );
    assert_eq!(code, "denied");
    assert_eq!(
        message,
        "denied: principal `cli` holds no grant to call `counter` (see [principal.cli] in the manifest)"
    );
    let send = Request::Send {
        to: "counter".into(),
        msg_type: Some("Add".into()),
        payload: json!({ "n": 5 }),
    };
    assert_eq!(error_of(client.request(&send).await.unwrap()).0, "denied");
    let publish = Request::Publish {
        subject: "news.eu".into(),
        msg_type: "pubsub.tick".into(),
        payload: json!({ "publisher": "cli", "seq": 1 }),
    };
    assert_eq!(
        error_of(client.request(&publish).await.unwrap()).0,
        "denied"
    );
    // Managing the host needs no grant.
    assert!(matches!(
        client.request(&Request::Ps).await.unwrap(),
        Response::Actors(_)
    ));
    host.set_principal_grants("cli", Grants::all());
    assert_eq!(
        client
            .request(&call("counter", "Get", json!({})))
            .await
            .unwrap(),
        Response::Reply(json!(0)),
        "the denied send did not get through, and a grant takes effect at once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_that_was_never_granted_may_do_nothing_through_the_host_api() {
    let host = host();
    deploy(&host, "echo", "echo");
    let as_gateway = |to: &str| ClientMessage {
        principal: "gateway".into(),
        ..ClientMessage::json(to, Some("Echo"), &json!({ "text": "hi" }))
    };
    assert_eq!(
        host.request(as_gateway("echo")).await.unwrap_err(),
        CallError::Denied
    );
    assert_eq!(
        host.send(as_gateway("echo")).await.unwrap_err(),
        CallError::Denied
    );
    let publish = ClientMessage {
        principal: "gateway".into(),
        ..tick("news.eu", 1)
    };
    assert_eq!(
        host.publish(publish.clone()).await.unwrap_err(),
        CallError::Denied
    );
    assert_eq!(host.principal_grants("gateway"), Grants::none());
    assert_eq!(host.principal_grants("cli"), Grants::all());

    host.set_principal_grants(
        "gateway",
        Grants::none().send_to("echo").publish_to(pattern("news.*")),
    );
    let reply = host.request(as_gateway("echo")).await.unwrap();
    assert_eq!(reply.json().unwrap(), json!("hi"));
    assert_eq!(host.publish(publish).await.unwrap().delivered, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_grants_apply_to_actors_and_the_cli_at_deploy() {
    hold_shared();
    let dir = tempfile::tempdir().unwrap();
    let module = |g: &str| format!("{:?}", guest(g).display().to_string());
    let text = format!(
        r#"
        [[actor]]
        name = "echo"
        module = {echo}

        [[actor]]
        name = "counter"
        module = {counter}

        [[actor]]
        name = "intruder"
        module = {intruder}

        [actor.grants]
        send = ["echo"]

        [principal.cli]
        send = ["intruder"]
        "#,
        echo = module("echo"),
        counter = module("counter"),
        intruder = module("intruder"),
    );
    std::fs::write(dir.path().join("bunraku.toml"), text).unwrap();
    let manifest = Manifest::load(dir.path()).unwrap();
    let host = host();
    host.deploy_manifest(&manifest, &BuildOptions::default())
        .unwrap();
    assert_eq!(
        host.principal_grants("cli"),
        Grants::none().send_to("intruder")
    );

    // The actor's grants.
    assert_eq!(attempt(&host, "request", "echo").await, "ok");
    assert_eq!(attempt(&host, "send", "counter").await, "denied");
    assert_eq!(attempt(&host, "publish", "a.b").await, "denied");
    // The CLI's: `intruder` only.
    assert_eq!(
        host.call_json("echo", Some("Echo"), json!({ "text": "hi" }))
            .await
            .unwrap_err(),
        CallError::Denied
    );
    let (_dir, _server, mut client) = cli_client(&host).await;
    let (code, message) = error_of(
        client
            .request(&call("counter", "Get", json!({})))
            .await
            .unwrap(),
    );
    assert_eq!(
        (code.as_str(), message.contains("`counter`")),
        ("denied", true)
    );
}
