//! PostgreSQL tools as child processes: connection through the environment, stderr kept for
//! the error message, exit status always checked.

use std::collections::VecDeque;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::{ConnInfo, PgError};

/// A tool that failed: its command line (no secrets: they travel in the environment), its exit
/// status and the tail of its stderr.
#[derive(Debug, thiserror::Error)]
#[error("{command} failed ({status})\n{stderr}{hint}")]
pub struct ProcessFailure {
    pub command: String,
    pub status: String,
    pub stderr: String,
    pub hint: String,
}

/// A running tool.
pub struct ChildProcess {
    child: tokio::process::Child,
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
        let mut cmd = tokio::process::Command::new(tool);
        cmd.args(args)
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // A stale PGPASSWORD or service file in dr's own environment must not leak in.
        for var in ["PGPASSWORD", "PGSERVICE", "PGOPTIONS"] {
            cmd.env_remove(var);
        }
        if let Some(conn) = conn {
            for (k, v) in conn.child_env() {
                cmd.env(k, v);
            }
        }
        let command = std::iter::once(tool.display().to_string())
            .chain(args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ");
        tracing::debug!(%command, "starting");
        let mut child = cmd.spawn().map_err(|source| PgError::Spawn {
            path: tool.to_path_buf(),
            source,
        })?;
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

    /// Ask the child to stop (SIGKILL); `wait` still reports.
    pub fn kill(&mut self) {
        let _ = self.child.start_kill();
    }

    /// Wait for exit and collect stderr. `Ok` only for exit status 0.
    pub async fn wait(mut self) -> Result<Finished, PgError> {
        let status = self.child.wait().await.map_err(|source| PgError::Spawn {
            path: self.command.clone().into(),
            source,
        })?;
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
            hint: if hint.is_empty() {
                String::new()
            } else {
                format!("hint: {hint}")
            },
        }
    }
}
