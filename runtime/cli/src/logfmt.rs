//! How `bunraku run` and `bunraku logs` print log lines: `12:00:01.234Z  INFO echo#0: ready`.
//!
//! Actor lines (tracing target `actor`, see `bunraku_runtime::logs`) show the actor and
//! instance; the host's own events show their target and fields.

use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// `HH:MM:SS.mmmZ` (UTC) of a Unix time in milliseconds.
pub(crate) fn clock_time(unix_ms: u64) -> String {
    let ms = unix_ms % 1000;
    let secs = unix_ms / 1000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!("{h:02}:{m:02}:{s:02}.{ms:03}Z")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The event formatter of `bunraku run`.
pub(crate) struct LineFormat;

#[derive(Default)]
struct Fields {
    message: String,
    actor: Option<String>,
    instance: Option<String>,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_owned(),
            "actor" => self.actor = Some(value.to_owned()),
            name => {
                let _ = write!(self.rest, " {name}={value}");
            }
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "actor" => self.actor = Some(format!("{value:?}")),
            "instance" => self.instance = Some(format!("{value:?}")),
            name => {
                let _ = write!(self.rest, " {name}={value:?}");
            }
        }
    }
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let time = clock_time(now_ms());
        let level = meta.level().as_str();
        match (meta.target(), &fields.actor) {
            ("actor", Some(actor)) => {
                let instance = fields.instance.as_deref().unwrap_or("0");
                writeln!(
                    w,
                    "{time} {level:>5} {actor}#{instance}: {}",
                    fields.message
                )
            }
            (target, actor) => {
                let actor = actor
                    .as_ref()
                    .map(|a| format!(" actor={a}"))
                    .unwrap_or_default();
                let instance = fields
                    .instance
                    .as_ref()
                    .map(|i| format!(" instance={i}"))
                    .unwrap_or_default();
                writeln!(
                    w,
                    "{time} {level:>5} {target}: {}{actor}{instance}{}",
                    fields.message, fields.rest
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_time_is_utc_with_millis() {
        assert_eq!(clock_time(0), "00:00:00.000Z");
        assert_eq!(clock_time(86_400_000 + 3_723_045), "01:02:03.045Z");
    }
}
