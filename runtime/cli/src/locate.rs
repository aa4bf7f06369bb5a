//! Finding a running host's control socket, and the pointer file that `bunraku run` leaves.
//!
//! In order: `--socket PATH`; `--data-dir DIR` (its `control.sock`); the `data_dir` of
//! `./bunraku.toml`; the socket path in the pointer file `$BUNRAKU_HOME/last-host` (default
//! `~/.bunraku/last-host`), written by the last `bunraku run` of this user.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use bunraku_runtime::control::{Client, ControlError, socket_path};
use bunraku_runtime::manifest::{MANIFEST_FILE, Manifest};

use crate::HostArgs;

/// A socket path and how it was found (for error messages).
pub(crate) struct Located {
    pub path: PathBuf,
    pub how: String,
}

/// The per-user state directory: `$BUNRAKU_HOME`, else `$HOME/.bunraku`.
pub(crate) fn bunraku_home() -> Option<PathBuf> {
    match std::env::var_os("BUNRAKU_HOME") {
        Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
        _ => std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(|h| PathBuf::from(h).join(".bunraku")),
    }
}

/// The pointer file naming the socket of the last host `bunraku run` started.
pub(crate) fn pointer_file() -> Option<PathBuf> {
    bunraku_home().map(|d| d.join("last-host"))
}

/// Records `socket` as the last started host. Failing to is not fatal: it only loses the
/// fallback for commands run without `--socket`.
pub(crate) fn write_pointer(socket: &Path) -> Result<PathBuf> {
    let file = pointer_file().ok_or_else(|| anyhow!("neither BUNRAKU_HOME nor HOME is set"))?;
    let dir = file.parent().expect("the pointer file has a parent");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restricting {} to its owner", dir.display()))?;
    let tmp = dir.join(format!(".last-host.{}", std::process::id()));
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        writeln!(f, "{}", socket.display())
            .with_context(|| format!("writing {}", tmp.display()))?;
    }
    std::fs::rename(&tmp, &file).with_context(|| format!("writing {}", file.display()))?;
    Ok(file)
}

/// Removes the pointer file if it still names `socket` (a later host may have replaced it).
pub(crate) fn clear_pointer(socket: &Path) {
    if let Some(file) = pointer_file()
        && read_pointer(&file).is_some_and(|p| p == socket)
    {
        let _ = std::fs::remove_file(file);
    }
}

fn read_pointer(file: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(file).ok()?;
    let line = text.lines().next()?.trim();
    (!line.is_empty()).then(|| PathBuf::from(line))
}

/// Where the host's socket is, per the options, the current directory and the pointer file.
pub(crate) fn locate(args: &HostArgs) -> Result<Located> {
    if let Some(path) = &args.socket {
        return Ok(Located {
            path: path.clone(),
            how: "--socket".into(),
        });
    }
    if let Some(dir) = &args.data_dir {
        return Ok(Located {
            path: socket_path(&std::path::absolute(dir).unwrap_or_else(|_| dir.clone())),
            how: format!("--data-dir {}", dir.display()),
        });
    }
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let local = cwd.join(MANIFEST_FILE);
    if local.is_file() {
        match Manifest::load(&local) {
            Ok(m) => {
                return Ok(Located {
                    path: socket_path(&m.host.data_dir),
                    how: format!("the data_dir of {}", local.display()),
                });
            }
            Err(e) => eprintln!(
                "warning: ignoring {} to find the host, as it does not load: {e}",
                local.display()
            ),
        }
    }
    let Some(pointer) = pointer_file() else {
        return Err(anyhow!(
            "cannot find a host: no --socket or --data-dir given, no {MANIFEST_FILE} in {}, and neither BUNRAKU_HOME nor HOME is set: pass --socket PATH",
            cwd.display()
        ));
    };
    match read_pointer(&pointer) {
        Some(path) => Ok(Located {
            path,
            how: format!("{}, written by the last `bunraku run`", pointer.display()),
        }),
        None => Err(anyhow!(
            "no host is running that this command can find: no --socket or --data-dir given, no {MANIFEST_FILE} in {}, and no {}: start one with `bunraku run PATH`, or pass --socket PATH",
            cwd.display(),
            pointer.display()
        )),
    }
}

/// Connects to the host the options point at.
pub(crate) async fn connect(args: &HostArgs) -> Result<(Client, Located)> {
    let at = locate(args)?;
    match Client::connect(&at.path).await {
        Ok(client) => Ok((client, at)),
        Err(ControlError::NotRunning { path, source }) => Err(anyhow!(
            "no host is running at {} (found through {}): start one with `bunraku run PATH` ({source})",
            path.display(),
            at.how
        )),
        Err(e) => Err(e.into()),
    }
}
