//! The streaming example's sink: prints what the processor reports and keeps it: the latest
//! average per sensor and window (an update replaces the earlier report), the alerts, and the
//! late readings of the side output. `GetResults` answers with them.

use bunraku_sdk::prelude::*;
use protocol::{Alert, EndOfReadings, GetResults, LateReading, SinkResults, WindowAverage};

#[derive(Default)]
pub struct Sink {
    results: SinkResults,
}

#[actor]
impl Sink {
    #[handler]
    async fn average(&mut self, ctx: &Ctx, msg: WindowAverage) {
        ctx.info(format_args!(
            "{} [{}s, {}s): {:.2} over {} readings{}",
            msg.sensor,
            msg.start_ms / 1000,
            msg.end_ms / 1000,
            msg.average,
            msg.count,
            if msg.update {
                " (updated by a late reading)"
            } else {
                ""
            }
        ));
        let averages = &mut self.results.averages;
        averages.retain(|a| !(a.sensor == msg.sensor && a.start_ms == msg.start_ms));
        averages.push(msg);
    }

    #[handler]
    async fn alert(&mut self, ctx: &Ctx, msg: Alert) {
        ctx.warn(format_args!(
            "ALERT {} [{}s, {}s): average {:.2}",
            msg.sensor,
            msg.start_ms / 1000,
            msg.end_ms / 1000,
            msg.average
        ));
        let alerts = &mut self.results.alerts;
        alerts.retain(|a| !(a.sensor == msg.sensor && a.start_ms == msg.start_ms));
        alerts.push(msg);
    }

    #[handler]
    async fn late(&mut self, ctx: &Ctx, msg: LateReading) {
        ctx.info(format_args!(
            "late reading of {} at {} ms (value {}), past its window's lateness",
            msg.reading.sensor, msg.reading.time_ms, msg.reading.value
        ));
        self.results.late.push(msg.reading);
    }

    #[handler]
    async fn end(&mut self, ctx: &Ctx, msg: EndOfReadings) {
        ctx.info(format_args!(
            "end of readings: {} windows, {} alerts, {} late",
            self.results.averages.len(),
            self.results.alerts.len(),
            msg.late_items
        ));
        self.results.done = true;
    }

    #[handler]
    async fn get_results(&mut self, _ctx: &Ctx, _msg: GetResults) -> SinkResults {
        self.results.clone()
    }
}
