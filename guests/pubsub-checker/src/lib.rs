//! Self-check of the pub-sub example: drives the publishers, then checks what each subscriber
//! actually received against what was published.

use bunraku_sdk::prelude::*;
use protocol::{PublishBurst, Report, Seen, Smoke, SmokeReport};

#[derive(Default)]
pub struct Checker {
    config: Config,
}

#[derive(Default, Deserialize)]
pub struct Config {
    /// (publisher, subject, count) bursts to run.
    bursts: Vec<(String, String, u64)>,
    /// (subscriber, pattern) pairs to check.
    subscribers: Vec<(String, String)>,
}

fn matches(pattern: &str, subject: &str) -> bool {
    let p: Vec<&str> = pattern.split('.').collect();
    let s: Vec<&str> = subject.split('.').collect();
    for (i, tok) in p.iter().enumerate() {
        match *tok {
            ">" => return s.len() > i,
            "*" if i < s.len() => {}
            t if i < s.len() && s[i] == t => {}
            _ => return false,
        }
    }
    p.len() == s.len()
}

#[actor]
impl Checker {
    async fn on_start(&mut self, _ctx: &Ctx, config: Config) {
        self.config = config;
    }

    #[handler]
    async fn smoke(&mut self, ctx: &Ctx, _msg: Smoke) -> SmokeReport {
        let config = &self.config;
        let mut report = SmokeReport::default();
        // What was published, in order, per publisher: (publisher, subject, seq).
        let mut published: Vec<(String, String, u64)> = Vec::new();
        let mut next_seq = std::collections::HashMap::<String, u64>::new();
        for (publisher, subject, count) in &config.bursts {
            let burst = PublishBurst {
                subject: subject.clone(),
                count: *count,
            };
            match ctx.request(publisher, &burst).await {
                Ok(n) => {
                    for _ in 0..n {
                        let seq = next_seq.entry(publisher.clone()).or_insert(0);
                        *seq += 1;
                        published.push((publisher.clone(), subject.clone(), *seq));
                    }
                }
                Err(e) => report.check(&format!("{publisher} publishes"), false, e.to_string()),
            }
        }
        for (subscriber, pattern) in &config.subscribers {
            let seen: Vec<Seen> = match ctx.request(subscriber, &Report {}).await {
                Ok(seen) => seen,
                Err(e) => {
                    report.check(&format!("{subscriber} reports"), false, e.to_string());
                    continue;
                }
            };
            let mut expected: Vec<(String, String, u64)> = published
                .iter()
                .filter(|(_, s, _)| matches(pattern, s))
                .cloned()
                .collect();
            let mut got: Vec<(String, String, u64)> = seen
                .iter()
                .map(|s| (s.publisher.clone(), s.subject.clone(), s.seq))
                .collect();
            let in_order = published_order_kept(&seen);
            report.check(
                &format!("{subscriber} ({pattern}) keeps each publisher's order"),
                in_order,
                format!("{} messages", seen.len()),
            );
            expected.sort();
            got.sort();
            let exactly_once = expected == got;
            report.check(
                &format!("{subscriber} ({pattern}) got exactly the matching messages once"),
                exactly_once,
                format!("expected {}, got {}", expected.len(), got.len()),
            );
        }
        report.finish("pubsub")
    }
}

fn published_order_kept(seen: &[Seen]) -> bool {
    let mut last = std::collections::HashMap::<&str, u64>::new();
    seen.iter().all(|s| {
        let prev = last.insert(&s.publisher, s.seq).unwrap_or(0);
        s.seq > prev
    })
}
