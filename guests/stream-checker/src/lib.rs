//! The streaming example's self-check. It asks the source to stream the seeded readings to the
//! processor, waits for the sink to have the end, and compares what the sink got with a
//! brute-force computation over the same readings that does not use the SDK's window code: it
//! replays the readings in order, keeps the watermark by hand (largest event time seen minus the
//! bound), decides for each reading whether it was too late for its window, and averages the
//! rest per sensor and window.

use std::collections::BTreeMap;

use bunraku_sdk::prelude::*;
use protocol::{Emit, GetResults, Reading, SinkResults, Smoke, SmokeReport, generate_readings};

/// Settings from the manifest (the processor's window settings repeated).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Config {
    pub source: String,
    pub processor: String,
    pub sink: String,
    pub seed: u64,
    pub sensors: u64,
    pub count: u64,
    pub window_ms: u64,
    pub out_of_orderness_ms: u64,
    pub lateness_ms: u64,
    pub threshold: f64,
}

#[derive(Default)]
pub struct Checker {
    config: Config,
}

/// What the windows should hold: per (sensor, window start), the sum and count of the readings
/// in time; and the readings that came too late.
struct Expected {
    windows: BTreeMap<(String, u64), (f64, u64)>,
    late: Vec<Reading>,
}

fn brute_force(c: &Config, readings: &[Reading]) -> Expected {
    let mut windows = BTreeMap::new();
    let mut late = Vec::new();
    let (mut max_seen, mut watermark) = (0u64, 0u64);
    for r in readings {
        let start = r.time_ms - r.time_ms % c.window_ms;
        let end = start + c.window_ms;
        if watermark >= end + c.lateness_ms {
            late.push(r.clone());
        } else {
            let (sum, n) = windows.entry((r.sensor.clone(), start)).or_insert((0.0, 0));
            *sum += r.value;
            *n += 1;
        }
        if r.time_ms > max_seen {
            max_seen = r.time_ms;
            watermark = watermark.max(max_seen.saturating_sub(c.out_of_orderness_ms));
        }
    }
    Expected { windows, late }
}

impl Checker {
    async fn results(&self, ctx: &Ctx) -> Result<SinkResults, String> {
        for _ in 0..12_000 {
            let got = ctx
                .request(&self.config.sink, &GetResults {})
                .await
                .map_err(|e| e.to_string())?;
            if got.done {
                return Ok(got);
            }
            ctx.sleep(Duration::from_millis(5))
                .await
                .map_err(|e| e.to_string())?;
        }
        Err("the sink never got the end of the readings".into())
    }
}

#[actor]
impl Checker {
    async fn on_start(&mut self, _ctx: &Ctx, config: Config) {
        self.config = config;
    }

    #[handler]
    async fn smoke(&mut self, ctx: &Ctx, _msg: Smoke) -> SmokeReport {
        let c = &self.config;
        let mut report = SmokeReport::default();
        let generated = generate_readings(c.seed, c.sensors, c.count);
        let emit = Emit {
            to: c.processor.clone(),
            seed: c.seed,
            sensors: c.sensors,
            count: c.count,
        };
        let sent = ctx.request(&c.source, &emit).await;
        report.check(
            "the source streamed every reading",
            matches!(sent, Ok(Ok(n)) if n == generated.readings.len() as u64),
            format!("{sent:?} of {}", generated.readings.len()),
        );
        let got = match self.results(ctx).await {
            Ok(got) => got,
            Err(e) => {
                report.check("the sink got the end of the stream", false, e);
                return report.finish("streaming");
            }
        };
        let expected = brute_force(c, &generated.readings);

        let mut wrong = Vec::new();
        for ((sensor, start), (sum, n)) in &expected.windows {
            let mean = sum / *n as f64;
            match got
                .averages
                .iter()
                .find(|a| a.sensor == *sensor && a.start_ms == *start)
            {
                Some(a) if a.count == *n && (a.average - mean).abs() < 1e-9 => {}
                other => wrong.push(format!(
                    "{sensor}@{start}: expected {mean} over {n}, got {other:?}"
                )),
            }
        }
        report.check(
            "every window's average matches the brute-force computation",
            wrong.is_empty() && got.averages.len() == expected.windows.len(),
            format!(
                "{} windows expected, {} reported; {wrong:?}",
                expected.windows.len(),
                got.averages.len()
            ),
        );

        let hot: Vec<(String, u64)> = expected
            .windows
            .iter()
            .filter(|(_, (sum, n))| sum / *n as f64 > c.threshold)
            .map(|(k, _)| k.clone())
            .collect();
        let mut alerted: Vec<(String, u64)> = got
            .alerts
            .iter()
            .map(|a| (a.sensor.clone(), a.start_ms))
            .collect();
        alerted.sort();
        report.check(
            "alerts are exactly the windows above the threshold",
            !hot.is_empty() && alerted == hot,
            format!("expected {hot:?}, got {alerted:?}"),
        );

        let within = &generated.readings[generated.late_within];
        let window = within.time_ms - within.time_ms % c.window_ms;
        let counted = expected.late.iter().all(|r| r != within)
            && !got.late.contains(within)
            && got
                .averages
                .iter()
                .any(|a| a.sensor == within.sensor && a.start_ms == window && a.update);
        report.check(
            "the reading within the allowed lateness updated its window",
            counted,
            format!("{within:?}"),
        );

        let beyond = &generated.readings[generated.late_beyond];
        report.check(
            "the reading beyond the allowed lateness went to the side output",
            got.late == [beyond.clone()] && expected.late == [beyond.clone()],
            format!("side output {:?}, expected {beyond:?}", got.late),
        );
        report.finish("streaming")
    }
}
