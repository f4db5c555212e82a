//! `--start`: run the recovered server once, to prove recovery reaches the target.
//!
//! The server runs with `recovery_target_action = pause` for this run (so reaching the
//! target is observable and nothing is promoted yet), `archive_mode = off` (a copy must not
//! write into the archive), no TCP listener, a private socket directory, and messages in C
//! so the log can be read. Once recovery pauses at the target, dr reports the last commit it
//! replayed and stops the server cleanly; the next start (the printed command) replays to the
//! same point and does what `--then` said. A recovery that ends early — a missing segment, a
//! fetch failure — is an error naming what the log and `dr wal fetch` said.

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

/// The command that starts the recovered server as the operator would.
pub fn command(bin_dir: Option<&Path>, dir: &Path) -> String {
    let pg_ctl = bin_dir
        .map(|b| b.join("pg_ctl").display().to_string())
        .unwrap_or_else(|| "pg_ctl".into());
    format!(
        "{pg_ctl} -D {} -l {}/postgresql.log start",
        dir.display(),
        dir.display()
    )
}

/// Run the server in `dir` until it pauses at the plan's target, then stop it.
pub async fn recover(
    ctx: &Context,
    dir: &Path,
    major: u32,
    bin_dir: Option<&Path>,
    chosen: &Plan,
    _then: Then,
) -> Result<Reached> {
    if chosen.target == Target::Latest {
        return Err(Error::new(
            Kind::Config,
            "--start needs a recovery target (--at TIME or LSN): with `latest` the server ends recovery and promotes by itself",
        )
        .with_hint("start it with the printed command; or give --at with the newest time `dr status` shows"));
    }
    let postgres = dr_pg::find_tool("postgres", major, bin_dir).map_err(Error::from)?;
    let socket = tempfile::Builder::new()
        .prefix("dr-recovery-")
        .tempdir()
        .map_err(|e| Error::new(Kind::Failed, format!("creating a socket directory: {e}")))?;
    let owner = run_as(dir, socket.path())?;
    let log_path = dir.join(LOG);
    let log = std::fs::File::create(&log_path).map_err(|e| {
        Error::new(
            Kind::Failed,
            format!("creating {}: {e}", log_path.display()),
        )
    })?;
    let mut cmd = match &owner {
        Some(user) => {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", user, "--"]).arg(&postgres.path);
            c
        }
        None => std::process::Command::new(&postgres.path),
    };
    cmd.arg("-D").arg(dir).args([
        "-c",
        "listen_addresses=",
        "-c",
        "archive_mode=off",
        "-c",
        "hot_standby=on",
        "-c",
        "lc_messages=C",
        "-c",
        "log_line_prefix=%m [%p] ",
        "-c",
        "logging_collector=off",
        "-c",
        "recovery_target_action=pause",
        "-c",
    ]);
    cmd.arg(format!(
        "unix_socket_directories={}",
        socket.path().display()
    ));
    cmd.stdout(std::process::Stdio::null());
    let began = std::time::Instant::now();
    let child = dr_pg::ChildProcess::spawn_command(cmd, std::process::Stdio::null(), log.into())
        .map_err(Error::from)?;
    let outcome = watch(ctx, &log_path, child, began).await;
    outcome.map(|stopped| Reached {
        stopped,
        seconds: began.elapsed().as_secs_f64(),
    })
}

/// When dr is root, the server runs as `postgres` (it refuses root): DIR and the socket
/// directory become that user's.
fn run_as(dir: &Path, socket: &Path) -> Result<Option<String>> {
    if !dr_sandbox::is_root() {
        return Ok(None);
    }
    let (uid, gid) = dr_sandbox::lookup_user("postgres").ok_or_else(|| {
        Error::new(
            Kind::Failed,
            "dr runs as root and there is no `postgres` user to run the server as",
        )
        .with_hint("run `dr restore --start` as the database's OS user")
    })?;
    chown_tree(dir, uid, gid)?;
    chown_tree(socket, uid, gid)?;
    Ok(Some("postgres".into()))
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

/// Read the log until recovery pauses (then stop the server) or ends otherwise.
async fn watch(
    ctx: &Context,
    log_path: &Path,
    mut child: dr_pg::ChildProcess,
    began: std::time::Instant,
) -> Result<String> {
    let mut last_note = began;
    loop {
        let text = std::fs::read_to_string(log_path).unwrap_or_default();
        let log = parse_log(&text);
        if log.ended_early || !log.fatal.is_empty() {
            child.kill();
            let _ = child.wait().await;
            return Err(ended_early(&text, log_path));
        }
        if child.exited() {
            return Err(ended_early(&text, log_path));
        }
        if text.contains("recovery has paused") || text.contains("pausing at the end of recovery") {
            let stopped = log
                .stopped_at
                .unwrap_or_else(|| "recovery paused at the target".into());
            child.stop().await;
            return Ok(stopped);
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
                child.kill();
                let _ = child.wait().await;
                return Err(Error::new(Kind::Interrupted, "recovery interrupted; the server was stopped"));
            }
        }
    }
}

fn ended_early(text: &str, log_path: &Path) -> Error {
    let fetch: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("error:") || l.contains("FATAL:") || l.contains("could not restore"))
        .take(6)
        .collect();
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
