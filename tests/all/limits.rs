//! Resource limits: a guest that allocates without bound is stopped at its memory limit, with the
//! limit named in its failure, and a thousand failing actors at once leave the host and a healthy
//! actor answering.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bunraku_runtime::{CallError, Host};
use bunraku_tests::*;
use serde_json::json;

const MIB: u64 = 1024 * 1024;

fn bomb_spec(name: &str) -> bunraku_runtime::manifest::ActorSpec {
    let mut s = spec(name, "testbed");
    s.limits.memory = MIB;
    // Restarted quickly, so the restarted instance can be checked.
    s.restart.backoff_initial = Duration::from_millis(10);
    s
}

async fn ask(host: &Arc<Host>, to: &str, ty: &str) -> Result<serde_json::Value, CallError> {
    host.call_json(to, Some(ty), json!({})).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bomb_is_stopped_at_its_limit_and_the_failure_names_the_limit() {
    let host = host();
    deploy_spec(&host, &bomb_spec("bomb"));

    assert_eq!(
        ask(&host, "bomb", "Bomb").await.unwrap_err(),
        CallError::TargetFailed
    );
    let status = &host.actor("bomb")[0];
    assert_eq!(status.failures, 1);
    let failure = status.last_failure.as_deref().unwrap();
    assert!(
        failure.contains("while handling `Bomb`")
            && failure.contains("its memory limit of 1024 KiB refused growing linear memory"),
        "what `bunraku ps` shows: {failure}"
    );
    // The restarted instance works, and never held more than its limit.
    assert_eq!(ask(&host, "bomb", "Ping").await.unwrap(), json!("pong"));
    assert!(host.actor("bomb")[0].memory <= MIB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_failing_actors_at_once_leave_the_host_and_a_healthy_actor_answering() {
    const N: usize = 1000;
    let host = host();
    deploy(&host, "healthy", "echo");
    for i in 0..N {
        // Restarted within 10-20 ms however often they fail, so the storm keeps going.
        let mut failing = bomb_spec(&format!("failing-{i}"));
        failing.restart.backoff_max = Duration::from_millis(20);
        deploy_spec(&host, &failing);
    }

    // Half of them allocate until their limit stops them, half panic; all at once, and again
    // after every restart, until the storm is over.
    let storm = Arc::new(AtomicBool::new(true));
    let failing: Vec<_> = (0..N)
        .map(|i| {
            let (host, storm) = (host.clone(), storm.clone());
            let ty = if i % 2 == 0 { "Bomb" } else { "Panic" };
            tokio::spawn(async move {
                let mut failures = 0;
                loop {
                    let failed = ask(&host, &format!("failing-{i}"), ty).await;
                    assert_eq!(failed.unwrap_err(), CallError::TargetFailed);
                    failures += 1;
                    if !storm.load(Ordering::Relaxed) {
                        return failures;
                    }
                }
            })
        })
        .collect();
    // Meanwhile the healthy actor keeps answering: the storm lasts until it answered 5 times
    // (or the test's time is up).
    let answered = Arc::new(AtomicU64::new(0));
    let pinger = {
        let (host, storm, answered) = (host.clone(), storm.clone(), answered.clone());
        tokio::spawn(async move {
            while storm.load(Ordering::Relaxed) {
                let r = host.call_json("healthy", Some("Echo"), json!({"text": "alive"}));
                assert_eq!(r.await.unwrap(), json!("alive"));
                answered.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let answered_in_storm = eventually(Duration::from_secs(120), || {
        (answered.load(Ordering::Relaxed) >= 5).then_some(())
    })
    .await;
    storm.store(false, Ordering::Relaxed);
    pinger.await.unwrap();
    let mut failures = Vec::new();
    for f in failing {
        failures.push(f.await.unwrap());
    }
    assert!(
        answered_in_storm.is_some(),
        "the healthy actor answered {} times in 120 s while the others failed",
        answered.load(Ordering::Relaxed)
    );

    for (i, failed) in failures.into_iter().enumerate() {
        let status = &host.actor(&format!("failing-{i}"))[0];
        assert_eq!(status.failures, failed, "failing-{i}");
        if i % 2 == 0 {
            let failure = status.last_failure.as_deref().unwrap();
            assert!(failure.contains("memory limit"), "failing-{i}: {failure}");
        }
    }
    assert_eq!(host.actor("healthy")[0].failures, 0);
    // Every failed instance is restarted and answers again.
    for i in (0..N).step_by(97) {
        assert_eq!(
            ask(&host, &format!("failing-{i}"), "Ping").await.unwrap(),
            json!("pong")
        );
    }
}
