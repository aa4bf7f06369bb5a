//! The streaming example's processor: reads the stream of `Reading`s and computes, per sensor,
//! the average over 10 s tumbling windows of event time (`bunraku_sdk::window`), with a 2 s
//! out-of-orderness bound and 5 s of allowed lateness. Each window's average goes to the sink
//! (again, marked as an update, when a late reading changes it), an `Alert` when the average is
//! above the threshold, and a reading too late for its window goes to the sink's side output.

use bunraku_sdk::prelude::*;
use bunraku_sdk::streams::Items;
use bunraku_sdk::window::{Mean, WindowResult, WindowedAggregate, Windows};
use protocol::{Alert, EndOfReadings, LateReading, Reading, Readings, WindowAverage};

/// Settings from the manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    pub sink: String,
    pub window_ms: u64,
    pub out_of_orderness_ms: u64,
    pub lateness_ms: u64,
    pub threshold: f64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            sink: "sink".into(),
            window_ms: 10_000,
            out_of_orderness_ms: 2_000,
            lateness_ms: 5_000,
            threshold: 30.0,
        }
    }
}

#[derive(Default)]
pub struct Processor {
    config: Config,
}

impl Processor {
    async fn report(&self, ctx: &Ctx, r: WindowResult<String, f64>) -> Result<(), Error> {
        let sink = self.config.sink.as_str();
        if r.value > self.config.threshold {
            let alert = Alert {
                sensor: r.key.clone(),
                start_ms: r.window.start_ms,
                end_ms: r.window.end_ms,
                average: r.value,
            };
            ctx.send(sink, &alert).await?;
        }
        let average = WindowAverage {
            sensor: r.key,
            start_ms: r.window.start_ms,
            end_ms: r.window.end_ms,
            average: r.value,
            count: r.count,
            update: r.update,
        };
        ctx.send(sink, &average).await
    }
}

#[actor]
impl Processor {
    async fn on_start(&mut self, _ctx: &Ctx, config: Config) {
        self.config = config;
    }

    #[handler]
    async fn readings(&mut self, ctx: &Ctx, _msg: Readings) {
        let Some(stream) = ctx.take_stream::<Reading>() else {
            return ctx.warn("`Readings` without a stream");
        };
        // Readings that are not numbers are dropped, the rest keyed by their sensor.
        let mut readings = stream
            .filter(|r| r.value.is_finite())
            .key_by(|r| r.sensor.clone());
        let c = &self.config;
        let mut windows = WindowedAggregate::<String, Mean>::event_time(
            Windows::tumbling(Duration::from_millis(c.window_ms)),
            Duration::from_millis(c.out_of_orderness_ms),
            Duration::from_millis(c.lateness_ms),
        );
        let sink = c.sink.clone();
        while let Some(item) = readings.next().await {
            let (sensor, reading) = match item {
                Ok(keyed) => keyed,
                Err(e) => return ctx.error(format_args!("the readings stream failed: {e}")),
            };
            let pushed = windows.push(sensor, reading.time_ms, &reading.value);
            if let Some(late) = pushed.late {
                let late = LateReading {
                    reading: Reading {
                        sensor: late.key,
                        time_ms: late.time_ms,
                        value: late.item,
                    },
                };
                if let Err(e) = ctx.send(&sink, &late).await {
                    ctx.error(e);
                }
            }
            for r in pushed.results {
                if let Err(e) = self.report(ctx, r).await {
                    ctx.error(e);
                }
            }
        }
        // The end of the stream: every window still open fires.
        for r in windows.finish() {
            if let Err(e) = self.report(ctx, r).await {
                ctx.error(e);
            }
        }
        let end = EndOfReadings {
            late_items: windows.late_items(),
        };
        if let Err(e) = ctx.send(&sink, &end).await {
            ctx.error(e);
        }
    }
}
