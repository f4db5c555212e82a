//! PostgreSQL tools as child processes: connection through the environment, stderr kept for
//! the error message, exit status always checked.
//!
//! Every child leads its own process group. `pg_restore -j` forks workers that hold their
//! own connections: stopping the leader alone would orphan them, still writing into the
//! target after dr has exited. So a child is stopped as a group — SIGTERM, a grace period,
//! then SIGKILL — and a child dropped without being waited for is killed as a group too.

use std::collections::VecDeque;
use std::future::Future;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::{ConnInfo, PgError};

/// A tool that failed: its command line (no secrets: they travel in the environment), its exit
/// status and the tail of its stderr.
#[derive(Debug, thiserror::Error)]
#[error("{command} failed ({status})\n{stderr}")]
pub struct ProcessFailure {
    pub command: String,
    pub status: String,
    pub stderr: String,
    pub hint: Option<String>,
    /// The tool lost or could not get its connection for a reason that may pass
    /// (see [`lost_connection`]).
    pub transient: bool,
}

/// What libpq and the server print when a connection is lost or refused for now: the
/// server restarting or starting up, too many clients, a lock or statement timeout.
///
/// A child tool reports only text (pg_dump has no way to print SQLSTATEs), so this is the
/// one place where transience is read from words: here, next to the tool that printed them.
const LOST_CONNECTION: [&str; 13] = [
    "server closed the connection",
    "could not receive data",
    "could not send data",
    "connection reset",
    "connection refused",
    "timed out",
    "timeout expired",
    "broken pipe",
    "the database system is starting up",
    "the database system is shutting down",
    "too many clients",
    "canceling statement due to lock timeout",
    "canceling statement due to statement timeout",
];

/// Whether a tool's stderr says its connection was lost or refused for a passing reason.
pub fn lost_connection(stderr: &str) -> bool {
    let lower = stderr.to_lowercase();
    LOST_CONNECTION.iter().any(|s| lower.contains(s))
}

/// How long a stopped child gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// A running tool.
pub struct ChildProcess {
    child: tokio::process::Child,
    /// The process group (the leader's pid) while it may have live members.
    group: Option<Pid>,
    command: String,
    stderr: Arc<Mutex<StderrLog>>,
    stderr_task: Option<tokio::task::JoinHandle<()>>,
}

/// Keeps every `error:` line and the last lines of everything else.
#[derive(Default)]
struct StderrLog {
    errors: Vec<String>,
    tail: VecDeque<String>,
    total: usize,
}

const TAIL: usize = 30;

impl ChildProcess {
    /// Start `tool args...` connected to `conn` through `PG*` variables.
    pub fn spawn(
        tool: &Path,
        args: &[String],
        conn: Option<&ConnInfo>,
        stdin: Stdio,
        stdout: Stdio,
    ) -> Result<ChildProcess, PgError> {
        let mut cmd = std::process::Command::new(tool);
        cmd.args(args);
        // A stale PGPASSWORD or service file in dr's own environment must not leak in.
        for var in ["PGPASSWORD", "PGSERVICE", "PGOPTIONS"] {
            cmd.env_remove(var);
        }
        if let Some(conn) = conn {
            for (k, v) in conn.child_env() {
                cmd.env(k, v);
            }
        }
        Self::spawn_command(cmd, stdin, stdout)
    }

    /// Start a prepared command (program, arguments, environment, directory) as a tool:
    /// its own process group, stderr kept for the error, stopped as a group.
    pub fn spawn_command(
        cmd: std::process::Command,
        stdin: Stdio,
        stdout: Stdio,
    ) -> Result<ChildProcess, PgError> {
        let tool = Path::new(cmd.get_program()).to_path_buf();
        let command = std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        tracing::debug!(%command, "starting");
        let mut child = cmd.spawn().map_err(|source| PgError::Spawn {
            path: tool.clone(),
            source,
        })?;
        let group = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw);
        let stderr = Arc::new(Mutex::new(StderrLog::default()));
        let stderr_task = child.stderr.take().map(|pipe| {
            let log = Arc::clone(&stderr);
            let name = tool
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            tokio::spawn(async move {
                // Bytes, not `lines()`: a non-UTF-8 message (a LATIN1 database's names) must not
                // stop the draining, or the child would die of SIGPIPE.
                let mut reader = BufReader::new(pipe);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match reader.read_until(b'\n', &mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    let line = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\n', '\r'])
                        .to_string();
                    tracing::debug!(tool = %name, "{line}");
                    if let Ok(mut l) = log.lock() {
                        l.total += 1;
                        if line.contains("error:") || line.starts_with("ERROR:") {
                            l.errors.push(line.clone());
                        }
                        l.tail.push_back(line);
                        if l.tail.len() > TAIL {
                            l.tail.pop_front();
                        }
                    }
                }
            })
        });
        Ok(ChildProcess {
            child,
            group,
            command,
            stderr,
            stderr_task,
        })
    }

    pub fn stdout(&mut self) -> Option<tokio::process::ChildStdout> {
        self.child.stdout.take()
    }
    pub fn stdin(&mut self) -> Option<tokio::process::ChildStdin> {
        self.child.stdin.take()
    }

    pub fn command(&self) -> &str {
        &self.command
    }

    /// The last lines of stderr so far, while the child runs: for a caller that acts on
    /// what a tool says before it exits (pg_basebackup waiting for WAL archiving).
    pub fn stderr_so_far(&self) -> Vec<String> {
        self.stderr
            .lock()
            .map(|l| l.tail.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The child has exited (its status is kept for [`ChildProcess::wait`]).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Kill the child and everything it started (SIGKILL to its group); `wait` still reports.
    pub fn kill(&mut self) {
        signal_group(self.group, Signal::SIGKILL);
        let _ = self.child.start_kill();
    }

    /// Wait for exit and collect stderr. `Ok` only for exit status 0.
    pub async fn wait(mut self) -> Result<Finished, PgError> {
        let status = self.child.wait().await;
        self.finish(status).await
    }

    /// Wait for exit, unless `stop` completes first: then the whole process group is stopped
    /// ([`ChildProcess::stop`]) and `None` is returned once no member is left.
    pub async fn wait_or_stop(
        mut self,
        stop: impl Future<Output = ()>,
    ) -> Option<Result<Finished, PgError>> {
        let status = tokio::select! {
            s = self.child.wait() => Some(s),
            () = stop => None,
        };
        match status {
            Some(s) => Some(self.finish(s).await),
            None => {
                self.stop().await;
                None
            }
        }
    }

    /// Stop the child and every process of its group: SIGTERM (pg_restore's leader then
    /// cancels its workers' queries), [`STOP_GRACE`] to exit, then SIGKILL for the group.
    pub async fn stop(mut self) {
        signal_group(self.group, Signal::SIGTERM);
        let _ = tokio::time::timeout(STOP_GRACE, self.child.wait()).await;
        // Workers can outlive their leader: the group is killed whether or not it exited.
        signal_group(self.group, Signal::SIGKILL);
        let _ = self.child.wait().await;
        self.group = None;
        if let Some(t) = self.stderr_task.take() {
            t.abort();
        }
    }

    async fn finish(&mut self, status: std::io::Result<ExitStatus>) -> Result<Finished, PgError> {
        let status = status.map_err(|source| PgError::Spawn {
            path: self.command.clone().into(),
            source,
        })?;
        // A leader that exited on its own waited for its workers: the group is empty.
        self.group = None;
        if let Some(t) = self.stderr_task.take() {
            let _ = t.await;
        }
        let (errors, tail) = match self.stderr.lock() {
            Ok(l) => (l.errors.clone(), l.tail.iter().cloned().collect::<Vec<_>>()),
            Err(_) => (Vec::new(), Vec::new()),
        };
        let finished = Finished {
            status,
            errors,
            stderr_tail: tail,
            command: self.command.clone(),
        };
        if status.success() {
            Ok(finished)
        } else {
            Err(PgError::Failed(finished.failure("")))
        }
    }
}

impl Drop for ChildProcess {
    /// A child nobody waited for (an early return, a panic, a cancelled future) must not
    /// outlive dr, and neither may the processes it forked.
    fn drop(&mut self) {
        signal_group(self.group, Signal::SIGKILL);
    }
}

fn signal_group(group: Option<Pid>, signal: Signal) {
    if let Some(pid) = group {
        // ESRCH: the group is already gone.
        let _ = killpg(pid, signal);
    }
}

/// Run a quick probe (`tool --version`) to completion, in its own process group like every
/// child: its stdout when it succeeds; otherwise the command, its status and its stderr.
pub fn probe(tool: &Path, args: &[&str]) -> Result<String, PgError> {
    use std::os::unix::process::CommandExt;
    let command = std::iter::once(tool.display().to_string())
        .chain(args.iter().map(|a| (*a).to_string()))
        .collect::<Vec<_>>()
        .join(" ");
    let out = std::process::Command::new(tool)
        .args(args)
        .stdin(Stdio::null())
        .process_group(0)
        .output()
        .map_err(|source| PgError::Spawn {
            path: tool.to_path_buf(),
            source,
        })?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(TAIL).collect();
    Err(PgError::Failed(ProcessFailure {
        command,
        status: match out.status.code() {
            Some(c) => format!("exit status {c}"),
            None => "killed by a signal".to_string(),
        },
        stderr: tail.into_iter().rev().map(|l| format!("{l}\n")).collect(),
        hint: None,
        transient: lost_connection(&stderr),
    }))
}

/// A finished tool.
#[derive(Debug, Clone)]
pub struct Finished {
    pub status: ExitStatus,
    /// Every `error:` line.
    pub errors: Vec<String>,
    pub stderr_tail: Vec<String>,
    pub command: String,
}

impl Finished {
    pub fn failure(&self, hint: &str) -> ProcessFailure {
        let status = match self.status.code() {
            Some(c) => format!("exit status {c}"),
            None => "killed by a signal".to_string(),
        };
        let mut lines: Vec<String> = self.errors.clone();
        for l in &self.stderr_tail {
            if !lines.contains(l) {
                lines.push(l.clone());
            }
        }
        let stderr = if lines.is_empty() {
            String::new()
        } else {
            format!("{}\n", lines.join("\n"))
        };
        ProcessFailure {
            command: self.command.clone(),
            status,
            stderr,
            hint: (!hint.is_empty()).then(|| hint.to_string()),
            transient: lost_connection(&lines.join("\n")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_connection_is_told_from_a_bad_statement() {
        for said in [
            "pg_dump: error: Dumping the contents of table \"t\" failed: PQgetResult() failed.\npg_dump: detail: Error message from server: server closed the connection unexpectedly",
            "pg_restore: error: could not send data to server: Broken pipe",
            "pg_dump: error: connection to server at \"db\" failed: FATAL:  sorry, too many clients already",
            "pg_dump: error: query failed: ERROR:  canceling statement due to lock timeout",
        ] {
            assert!(lost_connection(said), "{said}");
        }
        assert!(!lost_connection(
            "pg_dump: error: query failed: ERROR:  permission denied for table t"
        ));
    }
}
