//! `--start`: run the recovered server once, to prove recovery reaches the target.
//!
//! The server runs with `recovery_target_action = pause` for this run (so reaching the
//! target is observable and nothing is promoted yet), `archive_mode = off` (a copy must not
//! write into the archive), no TCP listener, a private socket directory, and messages in C
//! so the log can be read. Once recovery pauses at the target, dr reports the last commit it
//! replayed and stops the server cleanly; the next start (the printed command) replays to the
//! same point and does what `--then` said. A stream-mode target's copy with `--then
//! promote` is promoted by this run instead ([`promotes`]), and only then `latest` is allowed:
//! there is no point to pause at, the server replays the archive to its end and promotes
//! (PostgreSQL's rule without a target), which counts only once the plan's last segment was
//! restored. A recovery that ends early — a missing segment, a
//! fetch failure — is an error naming what the log and `dr wal fetch` said.
//!
//! The sandbox of `dr restore --at … --to URL` runs the same way, promoted at the target and
//! left running for the dump ([`recover_and_keep`], [`Started`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use dr_catalog::wal::plan::{Plan, Target};
use dr_pg::recovery::{parse_log, Then};
use serde::Serialize;

use crate::{Context, Error, Kind, Result};

/// The log of the `--start` run, in DIR.
pub const LOG: &str = "dr-recovery.log";

/// Where recovery stopped.
#[derive(Debug, Clone, Serialize)]
pub struct Reached {
    /// PostgreSQL's own line, e.g. "recovery stopping before commit of transaction 755,
    /// time 2026-12-03 14:05:33.1+00".
    pub stopped: String,
    pub seconds: f64,
}

/// The command that starts the recovered server as the operator would (as `postgres` when
/// dr ran as root and handed DIR over).
pub fn command(bin_dir: Option<&Path>, dir: &Path) -> String {
    let pg_ctl = bin_dir
        .map(|b| b.join("pg_ctl").display().to_string())
        .unwrap_or_else(|| "pg_ctl".into());
    // A clean environment, as systemd gives the server: the caller's variables (a DR_… of
    // another setup, AWS keys) must not reach restore_command.
    let as_user = if dr_sandbox::is_root() {
        "runuser -u postgres -- env -i PATH=/usr/bin:/bin "
    } else {
        "env -i PATH=/usr/bin:/bin "
    };
    format!(
        "{as_user}{pg_ctl} -D {} -l {}/postgresql.log start",
        dir.display(),
        dir.display()
    )
}

/// When dr runs as root, DIR becomes the `postgres` user's: PostgreSQL refuses to run as root
/// and refuses a data directory it does not own. Returns that user.
pub fn hand_over(dir: &Path) -> Result<Option<String>> {
    if !dr_sandbox::is_root() {
        return Ok(None);
    }
    let (uid, gid) = dr_sandbox::lookup_user("postgres").ok_or_else(|| {
        Error::new(
            Kind::Failed,
            format!(
                "dr runs as root and there is no `postgres` user to own {}",
                dir.display()
            ),
        )
        .with_hint(
            "run `dr restore --to-dir` as the database's OS user, or create the postgres user",
        )
    })?;
    chown_tree(dir, uid, gid)?;
    Ok(Some("postgres".into()))
}

/// Whether `--start` ends with the copy promoted: `--then promote` of a stream-mode target.
/// Its new timeline reaches the archive through the stream (the --start run has archive_mode
/// off), and the server it becomes may have no dr to replay with again (a stock image). In
/// archive mode the copy stops at the point and its next start promotes with the server's
/// own archive_command, which archives the new timeline from its first file.
pub fn promotes(ctx: &Context, target: &str, then: Then) -> bool {
    then == Then::Promote
        && ctx.config.targets.iter().any(|t| {
            t.name == target
                && t.wal
                    .as_ref()
                    .is_some_and(|w| w.mode() == dr_config::WalMode::Stream)
        })
}

/// Run the server in `dir` until it pauses at the plan's target (or, promoting, until it
/// has), then stop it.
pub async fn recover(
    ctx: &Context,
    dir: &Path,
    major: u32,
    bin_dir: Option<&Path>,
    chosen: &Plan,
    promote: bool,
) -> Result<Reached> {
    let until_end = until_end(chosen, promote)?;
    let started = start(dir, major, bin_dir, "").await?;
    match watch(ctx, &started, until_end.as_deref(), promote).await {
        Ok(stopped) => {
            let seconds = started.began.elapsed().as_secs_f64();
            started.stop("fast").await;
            Ok(Reached { stopped, seconds })
        }
        Err(e) => {
            started.stop("immediate").await;
            Err(e)
        }
    }
}

/// Run the server in `dir` until recovery reached the plan's target and it is promoted, and
/// leave it running (a throwaway sandbox with `extra` options: see `sandbox`). On failure
/// it is stopped.
pub(crate) async fn recover_and_keep(
    ctx: &Context,
    dir: &Path,
    major: u32,
    bin_dir: Option<&Path>,
    chosen: &Plan,
    extra: &str,
) -> Result<(Started, Reached)> {
    let until_end = until_end(chosen, true)?;
    let started = start(dir, major, bin_dir, extra).await?;
    match watch(ctx, &started, until_end.as_deref(), true).await {
        Ok(stopped) => {
            let seconds = started.began.elapsed().as_secs_f64();
            Ok((started, Reached { stopped, seconds }))
        }
        Err(e) => {
            started.stop("immediate").await;
            Err(e)
        }
    }
}

/// `latest` has no target to pause at: the server replays the archive to its end and
/// promotes; success is that end reached with the plan's last segment replayed (returned).
fn until_end(chosen: &Plan, promote: bool) -> Result<Option<String>> {
    match chosen.target {
        Target::Latest if promote => Ok(chosen.segments.last().map(ToString::to_string)),
        Target::Latest => Err(Error::new(
            Kind::Config,
            "--start with `latest` promotes the copy, which only a stream-mode target's does here: this target archives with archive_command, and a copy promoted with archive_mode off would leave its new timeline's first WAL out of the archive",
        )
        .with_hint("start it with the printed command (it replays to the end and promotes with the server's own archiving); or give --at with the newest time `dr status` shows")),
        _ => Ok(None),
    }
}

/// Start the server in `dir` for recovery: no TCP listener, a private socket directory,
/// archive_mode off, paused at the target; `extra` options after dr's own.
async fn start(dir: &Path, major: u32, bin_dir: Option<&Path>, extra: &str) -> Result<Started> {
    let pg_ctl = dr_pg::find_tool("pg_ctl", major, bin_dir).map_err(Error::from)?;
    let socket = tempfile::Builder::new()
        .prefix("dr-recovery-")
        .tempdir()
        .map_err(|e| Error::new(Kind::Failed, format!("creating a socket directory: {e}")))?;
    let server = Server {
        pg_ctl: pg_ctl.path,
        dir: dir.to_path_buf(),
        owner: run_as(dir, socket.path())?,
    };
    let log = dir.join(LOG);
    // pg_ctl runs the server through the shell: the socket path is quoted for it.
    let options = format!(
        "-c listen_addresses='' -c unix_socket_directories='{}' -c archive_mode=off -c hot_standby=on -c lc_messages=C -c logging_collector=off -c recovery_target_action=pause {extra}",
        socket.path().display()
    );
    let began = std::time::Instant::now();
    server
        .run(
            &["start", "-W", "-D"],
            &[&log_path_arg(&log), "-o", options.trim_end()],
        )
        .await?;
    Ok(Started {
        server,
        socket,
        log,
        began,
        running: true,
    })
}

/// A server dr started in a data directory, listening only on a Unix socket in a private
/// directory. Stopped by [`Started::stop`]; one dropped while running (an early return, a
/// panic) is stopped at once (`pg_ctl stop -m immediate`), so no server outlives dr's run.
pub(crate) struct Started {
    server: Server,
    socket: tempfile::TempDir,
    log: PathBuf,
    began: std::time::Instant,
    running: bool,
}

impl Started {
    /// The directory of its Unix socket.
    pub(crate) fn socket_dir(&self) -> &Path {
        self.socket.path()
    }

    /// `pg_ctl stop -m MODE`, waited for.
    pub(crate) async fn stop(mut self, mode: &str) {
        self.server.stop(mode).await;
        self.running = false;
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        if self.running {
            let mut c = self.server.command();
            c.args(["stop", "-w", "-m", "immediate", "-D"])
                .arg(&self.server.dir)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            let _ = c.status();
        }
    }
}

fn log_path_arg(p: &Path) -> String {
    format!("--log={}", p.display())
}

/// The recovered server, driven through `pg_ctl` (as `postgres` when dr is root).
struct Server {
    pg_ctl: PathBuf,
    dir: PathBuf,
    owner: Option<String>,
}

impl Server {
    /// The server gets a clean environment: dr's own (credentials, `DR_*`) must not leak
    /// into it; its `restore_command` reads what it needs from the config and env file.
    fn command(&self) -> std::process::Command {
        let mut c = match &self.owner {
            Some(user) => {
                let mut c = std::process::Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&self.pg_ctl);
                c
            }
            None => std::process::Command::new(&self.pg_ctl),
        };
        c.env_clear();
        for keep in ["PATH", "LANG", "TZ"] {
            if let Some(v) = std::env::var_os(keep) {
                c.env(keep, v);
            }
        }
        c
    }

    /// `pg_ctl ARGS… DIR REST…`; its exit status.
    async fn run(&self, args: &[&str], rest: &[&str]) -> Result<std::process::ExitStatus> {
        let mut cmd = self.command();
        cmd.args(args).arg(&self.dir).args(rest);
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        tokio::process::Command::from(cmd)
            .status()
            .await
            .map_err(|e| {
                Error::new(
                    Kind::Failed,
                    format!("running {}: {e}", self.pg_ctl.display()),
                )
            })
    }

    /// `pg_ctl status`: 3 means no server runs in the directory.
    async fn running(&self) -> bool {
        self.run(&["status", "-D"], &[])
            .await
            .is_ok_and(|s| s.success())
    }

    async fn stop(&self, mode: &str) {
        let _ = self.run(&["stop", "-w", "-m", mode, "-D"], &[]).await;
    }
}

/// When dr is root, the server runs as `postgres` (it refuses root): DIR and the socket
/// directory become that user's.
fn run_as(dir: &Path, socket: &Path) -> Result<Option<String>> {
    if !dr_sandbox::is_root() {
        return Ok(None);
    }
    let owner = hand_over(dir)?;
    if let Some((uid, gid)) = dr_sandbox::lookup_user("postgres") {
        chown_tree(socket, uid, gid)?;
    }
    Ok(owner)
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> Result<()> {
    let fail = |p: &Path, e: std::io::Error| {
        Error::new(Kind::Failed, format!("chown {}: {e}", p.display()))
    };
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(|e| fail(path, e))?;
    if path.is_dir() && !path.is_symlink() {
        for entry in std::fs::read_dir(path).map_err(|e| fail(path, e))? {
            let entry: PathBuf = entry.map_err(|e| fail(path, e))?.path();
            chown_tree(&entry, uid, gid)?;
        }
    }
    Ok(())
}

/// Read the log until recovery pauses (and, with `promote`, promote there) or ends
/// otherwise; with `until_end` (the plan's last segment, for `latest`), until recovery
/// completes having replayed it. The caller stops the server, whatever the outcome.
async fn watch(
    ctx: &Context,
    started: &Started,
    until_end: Option<&str>,
    promote: bool,
) -> Result<String> {
    let (log_path, server, began) = (started.log.as_path(), &started.server, started.began);
    let mut last_note = began;
    loop {
        let text = std::fs::read_to_string(log_path).unwrap_or_default();
        let log = parse_log(&text);
        if log.ended_early || !log.fatal.is_empty() {
            return Err(ended_early(&text, log_path));
        }
        if let Some(last) = until_end {
            if text.contains("archive recovery complete") {
                if !text.contains(&format!("restored log file \"{last}\"")) {
                    return Err(ended_early(&text, log_path));
                }
                return Ok(end_reached(&text, last));
            }
        }
        if text.contains("recovery has paused") || text.contains("pausing at the end of recovery") {
            let stopped = log
                .stopped_at
                .unwrap_or_else(|| "recovery paused at the target".into());
            if promote {
                // Paused at the target: promotion ends recovery there.
                let promoted = server.run(&["promote", "-w", "-t", "120", "-D"], &[]).await;
                return match promoted {
                    Ok(s) if s.success() => Ok(format!("{stopped}; promoted")),
                    _ => Err(Error::new(
                        Kind::Failed,
                        format!("recovery reached the target ({stopped}) but the promotion failed (log: {})", log_path.display()),
                    )
                    .with_hint("start it with the printed command: it replays to the same point and promotes")),
                };
            }
            return Ok(stopped);
        }
        // Checked every few seconds: a server that exited without a FATAL line still ends here.
        if began.elapsed() > Duration::from_secs(2) && !server.running().await {
            let text = std::fs::read_to_string(log_path).unwrap_or_default();
            return Err(ended_early(&text, log_path));
        }
        if last_note.elapsed() > Duration::from_secs(30) {
            last_note = std::time::Instant::now();
            tracing::info!(
                "recovery running for {:.0} s",
                began.elapsed().as_secs_f64()
            );
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(300)) => {}
            () = ctx.cancel.cancelled() => {
                return Err(Error::new(Kind::Interrupted, "recovery interrupted; the server was stopped"));
            }
        }
    }
}

/// What `latest` reached: the last commit PostgreSQL replayed, and that it promoted.
fn end_reached(text: &str, last: &str) -> String {
    let commit = text.lines().rev().find_map(|l| {
        l.find("last completed transaction was at log time ")
            .map(|i| l[i..].trim().to_string())
    });
    match commit {
        Some(c) => format!("recovery replayed the archive to its end ({last}) and promoted; {c}"),
        None => format!("recovery replayed the archive to its end ({last}) and promoted"),
    }
}

fn ended_early(text: &str, log_path: &Path) -> Error {
    let mut fetch: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("error:") || l.contains("FATAL:") || l.contains("could not restore"))
        .take(6)
        .collect();
    if fetch.is_empty() {
        let lines: Vec<&str> = text.lines().collect();
        fetch = lines[lines.len().saturating_sub(8)..].to_vec();
    }
    let mut e = Error::new(
        Kind::Integrity,
        format!(
            "recovery ended before it reached the target (log: {})",
            log_path.display()
        ),
    );
    e.details = fetch.iter().map(|s| s.trim().to_string()).collect();
    e.with_hint("the WAL the target needs is missing or damaged: `dr status` names gaps; choose an earlier --at, or restore the missing segment's archive")
}
