//! The commands that talk to a running host over its control socket.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use bunraku_runtime::ActorStatus;
use bunraku_runtime::control::{Client, ErrorReply, Request, Response};

use crate::locate::{Located, connect};
use crate::{
    CallArgs, EventsArgs, LogsArgs, MetricsArgs, PsArgs, PublishArgs, SendArgs, StateArgs,
    StopArgs, usage,
};

/// How long `bunraku stop` waits for the host to exit.
const STOP_WAIT: Duration = Duration::from_secs(30);

fn parse_json(text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| {
        usage(format!(
            "the message `{text}` is not valid JSON ({e}): quote it for the shell, e.g. '{{\"text\":\"hi\"}}'"
        ))
    })
}

/// Prints a typed error reply and returns exit code 1.
fn typed_error(e: &ErrorReply) -> ExitCode {
    let hint = match e.code.as_str() {
        "no such actor" => "\nhint: `bunraku ps` lists the running actors",
        "timeout" => "\nhint: give the actor longer with --timeout-ms N",
        "denied" => {
            "\nhint: grants are set in the host's manifest: [principal.cli] for the CLI, [actor.grants] for an actor"
        }
        _ => "",
    };
    if e.message.starts_with(&e.code) {
        eprintln!("error: {}{hint}", e.message);
    } else {
        eprintln!("error: {} [{}]{hint}", e.message, e.code);
    }
    ExitCode::FAILURE
}

fn unexpected(request: &str, response: Response) -> anyhow::Error {
    anyhow!("the host answered `{request}` with an unexpected response: {response:?}")
}

async fn ask(client: &mut Client, request: &Request) -> Result<Response> {
    Ok(client.request(request).await?)
}

pub(crate) async fn call(args: CallArgs) -> Result<ExitCode> {
    let payload = parse_json(&args.json)?;
    let (mut client, _) = connect(&args.host).await?;
    let request = Request::Call {
        to: args.actor,
        msg_type: args.msg_type,
        payload,
        timeout_ms: args.timeout_ms,
    };
    match ask(&mut client, &request).await? {
        Response::Reply(value) => {
            out!("{}", serde_json::to_string_pretty(&value)?)?;
            Ok(ExitCode::SUCCESS)
        }
        Response::Error(e) => Ok(typed_error(&e)),
        other => Err(unexpected("call", other)),
    }
}

/// The wire names of the queries an event-sourced actor answers (`bunraku_sdk::journal`).
const EVENTS_QUERY: &str = "bunraku.events";
const STATE_QUERY: &str = "bunraku.state";

/// Asks an event-sourced actor one of its queries; `Ok(Err(code))` for a typed error already
/// printed.
async fn query(
    client: &mut Client,
    actor: &str,
    msg_type: &str,
    payload: serde_json::Value,
) -> Result<Result<serde_json::Value, ExitCode>> {
    let request = Request::Call {
        to: actor.to_owned(),
        msg_type: Some(msg_type.to_owned()),
        payload,
        timeout_ms: None,
    };
    match ask(client, &request).await? {
        // The SDK answers `Result<T, String>`, which is `{"Ok": T}` or `{"Err": "..."}` in JSON.
        Response::Reply(serde_json::Value::Object(mut reply)) if reply.contains_key("Ok") => {
            Ok(Ok(reply.remove("Ok").unwrap_or_default()))
        }
        Response::Reply(serde_json::Value::Object(reply)) if reply.contains_key("Err") => {
            eprintln!(
                "error: {actor}: {}",
                reply["Err"].as_str().unwrap_or_default()
            );
            Ok(Err(ExitCode::FAILURE))
        }
        Response::Error(e) if e.code == "unknown message type" => {
            eprintln!(
                "error: `{actor}` does not answer `{msg_type}`: it is not an event-sourced actor\n\
                 hint: actors built on bunraku_sdk::journal answer it with `Journal::answer_events` and `Journal::answer_state`"
            );
            Ok(Err(ExitCode::FAILURE))
        }
        Response::Error(e) => Ok(Err(typed_error(&e))),
        other => Err(unexpected(msg_type, other)),
    }
}

pub(crate) async fn events(args: EventsArgs) -> Result<ExitCode> {
    let (mut client, _) = connect(&args.host).await?;
    let mut from = args.from;
    loop {
        let payload = serde_json::json!({ "from": from });
        let lines = match query(&mut client, &args.actor, EVENTS_QUERY, payload).await? {
            Ok(lines) => lines,
            Err(code) => return Ok(code),
        };
        let lines: Vec<String> = serde_json::from_value(lines).map_err(|e| {
            anyhow!(
                "`{}` answered {EVENTS_QUERY} with no lines: {e}",
                args.actor
            )
        })?;
        let Some(last) = lines.last() else {
            return Ok(ExitCode::SUCCESS);
        };
        // Each answer is a page: go on after its last event.
        let seq = serde_json::from_str::<serde_json::Value>(last)
            .ok()
            .and_then(|v| v["seq"].as_u64())
            .ok_or_else(|| anyhow!("an event line without a sequence number: {last}"))?;
        for line in &lines {
            out!("{line}")?;
        }
        if seq <= from {
            return Ok(ExitCode::SUCCESS);
        }
        from = seq;
    }
}

pub(crate) async fn state(args: StateArgs) -> Result<ExitCode> {
    let (mut client, _) = connect(&args.host).await?;
    let payload = serde_json::json!({ "at": args.at });
    match query(&mut client, &args.actor, STATE_QUERY, payload).await? {
        Ok(serde_json::Value::String(json)) => {
            let value: serde_json::Value = serde_json::from_str(&json)
                .map_err(|e| anyhow!("`{}` answered a state that is not JSON: {e}", args.actor))?;
            out!("{}", serde_json::to_string_pretty(&value)?)?;
            Ok(ExitCode::SUCCESS)
        }
        Ok(other) => Err(anyhow!(
            "`{}` answered {STATE_QUERY} with {other}",
            args.actor
        )),
        Err(code) => Ok(code),
    }
}

pub(crate) async fn send(args: SendArgs) -> Result<ExitCode> {
    let payload = parse_json(&args.json)?;
    let (mut client, _) = connect(&args.host).await?;
    let request = Request::Send {
        to: args.actor.clone(),
        msg_type: args.msg_type,
        payload,
    };
    match ask(&mut client, &request).await? {
        Response::Done => {
            out!("sent to {}", args.actor)?;
            Ok(ExitCode::SUCCESS)
        }
        Response::Error(e) => Ok(typed_error(&e)),
        other => Err(unexpected("send", other)),
    }
}

pub(crate) async fn publish(args: PublishArgs) -> Result<ExitCode> {
    let payload = parse_json(&args.json)?;
    let (mut client, _) = connect(&args.host).await?;
    let request = Request::Publish {
        subject: args.subject.clone(),
        msg_type: args.msg_type,
        payload,
    };
    match ask(&mut client, &request).await? {
        Response::Published(report) => {
            let plural = if report.delivered == 1 { "" } else { "s" };
            out!(
                "published to {}: delivered to {} subscriber{plural}, {} dropped",
                args.subject,
                report.delivered,
                report.dropped
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Response::Error(e) => Ok(typed_error(&e)),
        other => Err(unexpected("publish", other)),
    }
}

pub(crate) async fn ps(args: PsArgs) -> Result<ExitCode> {
    let (mut client, _) = connect(&args.host).await?;
    match ask(&mut client, &Request::Ps).await? {
        Response::Actors(actors) => {
            if args.json {
                out!("{}", serde_json::to_string_pretty(&actors)?)?;
            } else {
                print!("{}", table(&actors));
            }
            Ok(ExitCode::SUCCESS)
        }
        Response::Error(e) => Ok(typed_error(&e)),
        other => Err(unexpected("ps", other)),
    }
}

pub(crate) async fn metrics(args: MetricsArgs) -> Result<ExitCode> {
    let (mut client, _) = connect(&args.host).await?;
    match ask(&mut client, &Request::Metrics).await? {
        Response::Metrics(text) => {
            out!("{}", text.trim_end())?;
            Ok(ExitCode::SUCCESS)
        }
        Response::Error(e) => Ok(typed_error(&e)),
        other => Err(unexpected("metrics", other)),
    }
}

const COLUMNS: [&str; 11] = [
    "ACTOR",
    "SUPERVISOR",
    "INSTANCE",
    "PHASE",
    "MAILBOX",
    "HANDLED",
    "RESTARTS",
    "DEAD",
    "MEMORY",
    "STATUS",
    "LAST FAILURE",
];

/// `bunraku ps` as a table with aligned columns.
fn table(actors: &[ActorStatus]) -> String {
    let rows: Vec<[String; 11]> = actors
        .iter()
        .map(|a| {
            [
                a.name.clone(),
                a.supervisor.clone().unwrap_or_else(|| "-".into()),
                a.instance.to_string(),
                a.phase.clone(),
                format!("{}/{}", a.mailbox, a.mailbox_bound),
                a.handled.to_string(),
                a.restarts.to_string(),
                a.dead_letters.to_string(),
                human_bytes(a.memory),
                a.status.clone().unwrap_or_else(|| "-".into()),
                a.last_failure.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    render(&rows)
}

fn render(rows: &[[String; 11]]) -> String {
    let header = COLUMNS;
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&header);
    for row in rows {
        line(&row.each_ref().map(String::as_str));
    }
    if rows.is_empty() {
        out.push_str("(no actors)\n");
    }
    out
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

pub(crate) async fn logs(args: LogsArgs) -> Result<ExitCode> {
    let (mut client, _) = connect(&args.host).await?;
    let mut response = ask(
        &mut client,
        &Request::Logs {
            follow: args.follow,
        },
    )
    .await?;
    loop {
        match response {
            Response::Log(line) => out!(
                "{} {:>5} {}#{}: {}",
                crate::logfmt::clock_time(line.at_ms),
                line.level.to_ascii_uppercase(),
                line.actor,
                line.instance,
                line.message
            )?,
            Response::Done => return Ok(ExitCode::SUCCESS),
            Response::Error(e) => return Ok(typed_error(&e)),
            other => return Err(unexpected("logs", other)),
        }
        response = match client.read().await {
            Ok(r) => r,
            // The host went away while following: that ends the stream.
            Err(_) if args.follow => return Ok(ExitCode::SUCCESS),
            Err(e) => return Err(e.into()),
        };
    }
}

pub(crate) async fn stop(args: StopArgs) -> Result<ExitCode> {
    let (mut client, at) = connect(&args.host).await?;
    if let Some(actor) = args.actor {
        return match ask(
            &mut client,
            &Request::Stop {
                actor: actor.clone(),
            },
        )
        .await?
        {
            Response::Done => {
                out!("stopped {actor}")?;
                Ok(ExitCode::SUCCESS)
            }
            Response::Error(e) => Ok(typed_error(&e)),
            other => Err(unexpected("stop", other)),
        };
    }
    match ask(&mut client, &Request::Shutdown).await? {
        Response::Done => {}
        Response::Error(e) => return Ok(typed_error(&e)),
        other => return Err(unexpected("shutdown", other)),
    }
    drop(client);
    wait_until_gone(&at).await?;
    out!("host at {} stopped", at.path.display())?;
    Ok(ExitCode::SUCCESS)
}

/// Waits until nothing listens on the socket any more (the host removes it when it exits).
async fn wait_until_gone(at: &Located) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < STOP_WAIT {
        if !at.path.exists() || Client::connect(&at.path).await.is_err() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(anyhow!(
        "the host at {} accepted the shutdown but still runs after {} s: stop its process (Ctrl-C in its terminal)",
        at.path.display(),
        STOP_WAIT.as_secs()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ps_table_aligns_columns() {
        let row = [
            "echo",
            "app",
            "0",
            "running",
            "0/1024",
            "12",
            "0",
            "0",
            "128.0 KiB",
            "stuck: refund",
            "-",
        ];
        let text = render(&[row.map(String::from)]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0].find("SUPERVISOR"), lines[1].find("app"));
        assert_eq!(lines[0].find("PHASE"), lines[1].find("running"));
        assert_eq!(lines[0].find("MEMORY"), lines[1].find("128.0 KiB"));
        assert_eq!(lines[0].find("STATUS"), lines[1].find("stuck: refund"));
        assert!(lines[1].starts_with("echo "));
        assert!(lines[1].ends_with('-'));
        assert_eq!(render(&[]).lines().nth(1), Some("(no actors)"));
    }

    #[test]
    fn bytes_are_human() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1 << 20), "1.0 MiB");
        assert_eq!(human_bytes(1_150_000), "1.1 MiB");
    }
}
