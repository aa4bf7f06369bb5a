//! The control socket: how the CLI talks to a running host.
//!
//! A host listens on a Unix socket (mode 0600, in a directory of mode 0700) in its data
//! directory, never on a TCP port. The protocol is one JSON [`Request`] per line, answered by one
//! JSON [`Response`] per line (`logs` with `follow` streams [`Response::Log`] lines until the
//! client hangs up).
//!
//! Every request acts as the principal [`CLI_PRINCIPAL`] (`cli`). Its grants decide which actors
//! `call` and `send` may reach and which subjects `publish` may reach: everything by default (the
//! local operator owns the socket), or what a manifest's `[principal.cli]` table grants, applied
//! with [`Host::set_principal_grants`]. A refused request answers with the code `denied`.
//! `ps`, `logs`, `stop` and `shutdown` manage the host rather than talk to actors and need no
//! grant: whoever can open the socket could stop the process anyway.
//!
//! The server runs on whatever tokio runtime calls [`serve`]; the CLI runs it on a runtime
//! separate from the guests' runtime, so a guest spinning on its budget cannot starve it.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bunraku_abi::Codec;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Notify;

use crate::host::{ActorStatus, ClientMessage, Host, PublishReport};
use crate::logs::LogLine;

/// The socket's file name inside the data directory.
pub const SOCKET_FILE: &str = "control.sock";

/// The principal the CLI acts as.
pub const CLI_PRINCIPAL: &str = "cli";

/// A request to the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Request {
    /// Request-response with a JSON payload.
    Call {
        /// The actor.
        to: String,
        /// The message type (optional when the actor has one handler).
        #[serde(rename = "type")]
        msg_type: Option<String>,
        /// The message as JSON.
        payload: serde_json::Value,
        /// How long to wait.
        timeout_ms: Option<u64>,
    },
    /// A one-way message with a JSON payload.
    Send {
        /// The actor.
        to: String,
        /// The message type (optional when the actor has one handler).
        #[serde(rename = "type")]
        msg_type: Option<String>,
        /// The message as JSON.
        payload: serde_json::Value,
    },
    /// Publish a JSON payload to a subject.
    Publish {
        /// The subject.
        subject: String,
        /// The message type.
        #[serde(rename = "type")]
        msg_type: String,
        /// The message as JSON.
        payload: serde_json::Value,
    },
    /// The status of every actor instance.
    Ps,
    /// The same figures in the Prometheus text format ([`crate::metrics`]).
    Metrics,
    /// Recent log lines, and the ones that follow when `follow` is set.
    Logs {
        /// Keep streaming.
        follow: bool,
    },
    /// Stop one actor.
    Stop {
        /// The actor.
        actor: String,
    },
    /// Stop the host.
    Shutdown,
}

/// An error as the CLI shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// The stable code name (`timeout`, `no such actor`, ...).
    pub code: String,
    /// The full message.
    pub message: String,
}

/// A response from the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Response {
    /// A reply to `call`.
    Reply(serde_json::Value),
    /// `send` or `stop` or `shutdown` succeeded.
    Done,
    /// The outcome of `publish`.
    Published(PublishReport),
    /// The outcome of `ps`.
    Actors(Vec<ActorStatus>),
    /// The outcome of `metrics`: Prometheus text.
    Metrics(String),
    /// One log line.
    Log(LogLine),
    /// The request failed.
    Error(ErrorReply),
}

/// Why the control socket could not be served or reached.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// Another host already serves this socket.
    #[error("a host is already running with data directory {0}: stop it first (`bunraku stop`)")]
    InUse(PathBuf),
    /// No host answers at the path.
    #[error("no host is running at {path}: start one with `bunraku run PATH` ({source})")]
    NotRunning {
        /// The socket path.
        path: PathBuf,
        /// The connection error.
        #[source]
        source: io::Error,
    },
    /// Other I/O errors.
    #[error("control socket {path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The peer sent something that is not protocol JSON.
    #[error("control protocol error: {0}")]
    Protocol(String),
}

/// A running control server. Dropping it stops listening and removes the socket file.
pub struct ControlServer {
    path: PathBuf,
    stop: Arc<Notify>,
    /// Notified when a client asks the host to shut down.
    pub shutdown: Arc<Notify>,
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop.notify_waiters();
        let _ = std::fs::remove_file(&self.path);
    }
}

impl ControlServer {
    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Creates `dir` (mode 0700) if needed and returns the socket path in it.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_FILE)
}

/// Starts serving `host` on `<data_dir>/control.sock`, on the current tokio runtime.
pub async fn serve(host: Arc<Host>, data_dir: &Path) -> Result<ControlServer, ControlError> {
    let io_err = |source| ControlError::Io {
        path: data_dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(data_dir).map_err(io_err)?;
    std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700)).map_err(io_err)?;
    let path = socket_path(data_dir);
    if path.exists() {
        if UnixStream::connect(&path).await.is_ok() {
            return Err(ControlError::InUse(data_dir.to_owned()));
        }
        // A socket left behind by a host that died.
        let _ = std::fs::remove_file(&path);
    }
    let listener = UnixListener::bind(&path).map_err(|source| ControlError::Io {
        path: path.clone(),
        source,
    })?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        ControlError::Io {
            path: path.clone(),
            source,
        }
    })?;
    let stop = Arc::new(Notify::new());
    let shutdown = Arc::new(Notify::new());
    let (stop2, shutdown2) = (stop.clone(), shutdown.clone());
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop2.notified() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        tokio::spawn(handle(host.clone(), stream, shutdown2.clone()));
                    }
                    Err(e) => tracing::warn!("control socket accept failed: {e}"),
                },
            }
        }
    });
    Ok(ControlServer {
        path,
        stop,
        shutdown,
    })
}

fn error_reply(e: &crate::CallError) -> Response {
    Response::Error(ErrorReply {
        code: e.code().as_str().into(),
        message: e.to_string(),
    })
}

/// The reply to a `call`, `send` or `publish` that failed: a refusal says what the principal
/// lacks a grant for (`what`, such as "call `billing`").
fn refused_or(e: &crate::CallError, what: &str) -> Response {
    if *e != crate::CallError::Denied {
        return error_reply(e);
    }
    Response::Error(ErrorReply {
        code: e.code().as_str().into(),
        message: format!(
            "denied: principal `{CLI_PRINCIPAL}` holds no grant to {what} (see [principal.{CLI_PRINCIPAL}] in the manifest)"
        ),
    })
}

async fn handle(host: Arc<Host>, stream: UnixStream, shutdown: Arc<Notify>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let request: Request = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => {
                let r = Response::Error(ErrorReply {
                    code: "malformed".into(),
                    message: format!("not a control request: {e}"),
                });
                if write_line(&mut write, &r).await.is_err() {
                    return;
                }
                continue;
            }
        };
        let response = match request {
            Request::Call {
                to,
                msg_type,
                payload,
                timeout_ms,
            } => {
                let what = format!("call `{to}`");
                let mut msg = ClientMessage::json(to, msg_type.as_deref(), &payload);
                msg.timeout = timeout_ms.map(Duration::from_millis);
                match host.request(msg).await.and_then(|r| r.json()) {
                    Ok(v) => Response::Reply(v),
                    Err(e) => refused_or(&e, &what),
                }
            }
            Request::Send {
                to,
                msg_type,
                payload,
            } => {
                let what = format!("send to `{to}`");
                match host
                    .send(ClientMessage::json(to, msg_type.as_deref(), &payload))
                    .await
                {
                    Ok(()) => Response::Done,
                    Err(e) => refused_or(&e, &what),
                }
            }
            Request::Publish {
                subject,
                msg_type,
                payload,
            } => {
                let what = format!("publish to `{subject}`");
                let msg = ClientMessage {
                    codec: Codec::Json,
                    ..ClientMessage::json(subject, Some(&msg_type), &payload)
                };
                match host.publish(msg).await {
                    Ok(report) => Response::Published(report),
                    Err(e) => refused_or(&e, &what),
                }
            }
            Request::Ps => Response::Actors(host.actors()),
            Request::Metrics => Response::Metrics(host.metrics_text()),
            Request::Stop { actor } => match host.stop_actor(&actor) {
                Ok(()) => Response::Done,
                Err(e) => error_reply(&e),
            },
            Request::Shutdown => {
                shutdown.notify_waiters();
                shutdown.notify_one();
                Response::Done
            }
            Request::Logs { follow } => {
                let (recent, mut rx) = host.logs().follow();
                for line in recent {
                    if write_line(&mut write, &Response::Log(line)).await.is_err() {
                        return;
                    }
                }
                if !follow {
                    let _ = write_line(&mut write, &Response::Done).await;
                    continue;
                }
                loop {
                    match rx.recv().await {
                        Ok(line) => {
                            if write_line(&mut write, &Response::Log(line)).await.is_err() {
                                return;
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(_) => return,
                    }
                }
            }
        };
        if write_line(&mut write, &response).await.is_err() {
            return;
        }
    }
}

async fn write_line(w: &mut tokio::net::unix::OwnedWriteHalf, r: &Response) -> io::Result<()> {
    let mut line = serde_json::to_vec(r).map_err(io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line).await
}

/// A connection to a running host.
pub struct Client {
    path: PathBuf,
    lines: tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    write: tokio::net::unix::OwnedWriteHalf,
}

impl Client {
    /// Connects to the socket at `path`.
    pub async fn connect(path: &Path) -> Result<Self, ControlError> {
        let stream =
            UnixStream::connect(path)
                .await
                .map_err(|source| ControlError::NotRunning {
                    path: path.to_owned(),
                    source,
                })?;
        let (read, write) = stream.into_split();
        Ok(Self {
            path: path.to_owned(),
            lines: BufReader::new(read).lines(),
            write,
        })
    }

    /// Sends one request and reads one response.
    pub async fn request(&mut self, request: &Request) -> Result<Response, ControlError> {
        let mut line =
            serde_json::to_vec(request).map_err(|e| ControlError::Protocol(e.to_string()))?;
        line.push(b'\n');
        self.write
            .write_all(&line)
            .await
            .map_err(|source| ControlError::Io {
                path: self.path.clone(),
                source,
            })?;
        self.read().await
    }

    /// Reads the next response (for streamed logs).
    pub async fn read(&mut self) -> Result<Response, ControlError> {
        let line = self
            .lines
            .next_line()
            .await
            .map_err(|source| ControlError::Io {
                path: self.path.clone(),
                source,
            })?
            .ok_or_else(|| ControlError::Protocol("the host closed the connection".into()))?;
        serde_json::from_str(&line).map_err(|e| ControlError::Protocol(format!("{e}: {line}")))
    }
}
