//! The local sandbox: a temporary cluster made with `initdb`, run with `pg_ctl`.

use std::ffi::OsStr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{
    last_lines, random_token, remember_local_dir, wait_for_connection, Sandbox, SandboxError,
    SandboxKind, SandboxSpec,
};

const LOG_LINES: usize = 20;

/// How server commands run: directly, or as `postgres` through `runuser` when we are root
/// (initdb and postgres refuse to run as root).
#[derive(Debug, Clone)]
struct Runner {
    as_postgres: bool,
    cwd: PathBuf,
}

impl Runner {
    fn std_command(&self, program: &Path) -> std::process::Command {
        let mut cmd = if self.as_postgres {
            let mut c = std::process::Command::new("runuser");
            c.args([OsStr::new("-u"), OsStr::new("postgres"), OsStr::new("--")])
                .arg(program);
            c
        } else {
            std::process::Command::new(program)
        };
        cmd.current_dir(&self.cwd);
        for var in ["PGDATA", "PGPORT", "PGHOST", "PGOPTIONS"] {
            cmd.env_remove(var);
        }
        cmd.stdin(std::process::Stdio::null());
        cmd
    }

    /// Run to completion; a non-zero exit is an error naming the command and its stderr tail.
    /// The command runs in its own process group (dr-pg's wrapper): if the sandbox's start is
    /// abandoned (a signal), dropping it kills `initdb`/`pg_ctl` and whatever they started.
    async fn run(&self, program: &Path, args: &[&OsStr], what: &str) -> Result<(), String> {
        let mut cmd = self.std_command(program);
        cmd.args(args);
        let child = dr_pg::ChildProcess::spawn_command(
            cmd,
            std::process::Stdio::null(),
            std::process::Stdio::null(),
        )
        .map_err(|e| format!("cannot run {what}: {e}"))?;
        match child.wait().await {
            Ok(_) => Ok(()),
            Err(dr_pg::PgError::Failed(f)) => Err(format!(
                "`{}` exited with {}: {}",
                f.command,
                f.status,
                last_lines(&f.stderr, 8).join(" / ")
            )),
            Err(e) => Err(format!("{what}: {e}")),
        }
    }
}

pub fn is_root() -> bool {
    // /proc/self belongs to the effective uid; `id -u` where there is no /proc.
    if let Ok(m) = std::fs::metadata("/proc/self") {
        return m.uid() == 0;
    }
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// uid and gid of `user` from /etc/passwd.
pub fn lookup_user(user: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        if f.next()? != user {
            return None;
        }
        let _pw = f.next()?;
        let uid = f.next()?.parse().ok()?;
        let gid = f.next()?.parse().ok()?;
        Some((uid, gid))
    })
}

fn free_port() -> Result<u16, SandboxError> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(|e| SandboxError::Io {
        what: "finding a free port on 127.0.0.1".into(),
        source: e,
    })?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| SandboxError::Io {
            what: "finding a free port on 127.0.0.1".into(),
            source: e,
        })
}

/// Single-quote for the shell pg_ctl hands `-o` to.
fn sh_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SandboxError {
    let what = what.into();
    move |source| SandboxError::Io { what, source }
}

pub(crate) struct LocalSandbox {
    /// `Some` until destroyed.
    dir: Option<tempfile::TempDir>,
    data: PathBuf,
    bin_dir: PathBuf,
    pg_ctl: PathBuf,
    runner: Runner,
    port: u16,
    url: String,
    major: u32,
}

impl LocalSandbox {
    pub(crate) async fn start(spec: &SandboxSpec) -> Result<LocalSandbox, SandboxError> {
        // An explicitly configured directory wins when it is new enough: operators point it
        // at the server build their production uses (extensions included).
        let explicit = spec
            .pg_bin_dir
            .as_deref()
            .and_then(|d| dr_pg::tool_at(&d.join("initdb")))
            .filter(|t| t.major >= spec.major);
        let initdb = match explicit {
            Some(t) => t,
            None => dr_pg::find_tool("initdb", spec.major, spec.pg_bin_dir.as_deref())
                .map_err(SandboxError::NoServer)?,
        };
        let bin_dir = initdb
            .path
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let pg_ctl = if bin_dir.join("pg_ctl").is_file() {
            bin_dir.join("pg_ctl")
        } else {
            dr_pg::find_tool("pg_ctl", initdb.major, Some(&bin_dir))
                .map_err(SandboxError::NoServer)?
                .path
        };
        if !bin_dir.join("postgres").is_file() {
            return Err(SandboxError::Local {
                what: "finding the server".into(),
                detail: format!("no `postgres` next to {}", initdb.path.display()),
                log: Vec::new(),
                hint: format!(
                    "install postgresql-{} (the server package), or set pg_bin_dir",
                    initdb.major
                ),
            });
        }

        let owner = if is_root() {
            Some(lookup_user("postgres").ok_or(SandboxError::NoPostgresUser)?)
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("dr-sandbox-")
            .tempdir()
            .map_err(io("creating the sandbox directory"))?;
        remember_local_dir(dir.path().to_path_buf());
        let root = dir.path().to_path_buf();
        let sock = root.join("sock");
        std::fs::create_dir(&sock).map_err(io(format!("creating {}", sock.display())))?;
        let pwfile = root.join("pwfile");
        let password = random_token(24);
        std::fs::write(&pwfile, format!("{password}\n"))
            .map_err(io(format!("writing {}", pwfile.display())))?;
        std::fs::set_permissions(&pwfile, std::fs::Permissions::from_mode(0o600))
            .map_err(io(format!("chmod {}", pwfile.display())))?;
        if let Some((uid, gid)) = owner {
            for p in [&root, &sock, &pwfile] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid))
                    .map_err(io(format!("chown postgres {}", p.display())))?;
            }
        }

        let mut sandbox = LocalSandbox {
            dir: Some(dir),
            data: root.join("data"),
            bin_dir,
            pg_ctl,
            runner: Runner {
                as_postgres: owner.is_some(),
                cwd: root.clone(),
            },
            port: 0,
            url: String::new(),
            major: initdb.major,
        };
        let result = sandbox
            .init_and_run(spec, &initdb.path, &pwfile, &sock, &password)
            .await;
        let _ = std::fs::remove_file(&pwfile);
        match result {
            Ok(()) => Ok(sandbox),
            Err(e) => {
                if let Err(d) = sandbox.destroy().await {
                    tracing::warn!("{d}");
                }
                Err(e)
            }
        }
    }

    async fn init_and_run(
        &mut self,
        spec: &SandboxSpec,
        initdb: &Path,
        pwfile: &Path,
        sock: &Path,
        password: &str,
    ) -> Result<(), SandboxError> {
        let deadline = tokio::time::Instant::now() + spec.ready_timeout;
        let (auth_host, no_sync) = if self.major >= 10 {
            ("--auth-host=scram-sha-256", "--no-sync")
        } else {
            ("--auth-host=md5", "--nosync")
        };
        let pw_arg = format!("--pwfile={}", pwfile.display());
        let base: Vec<&OsStr> = [
            "-D".as_ref(),
            self.data.as_os_str(),
            "-U".as_ref(),
            "postgres".as_ref(),
            "-E".as_ref(),
            "UTF8".as_ref(),
            no_sync.as_ref(),
            "--auth-local=trust".as_ref(),
            auth_host.as_ref(),
            pw_arg.as_ref(),
        ]
        .to_vec();
        let mut with_locale = base.clone();
        with_locale.push("--locale=C.UTF-8".as_ref());
        if let Err(first) = self.runner.run(initdb, &with_locale, "initdb").await {
            tracing::debug!("initdb with C.UTF-8 failed, retrying with --no-locale: {first}");
            let _ = std::fs::remove_dir_all(&self.data);
            let mut no_locale = base;
            no_locale.push("--no-locale".as_ref());
            self.runner
                .run(initdb, &no_locale, "initdb")
                .await
                .map_err(|detail| SandboxError::Local {
                    what: "initdb".into(),
                    detail: format!("{detail} (with --locale=C.UTF-8: {first})"),
                    log: Vec::new(),
                    hint: format!(
                        "check that {} works and that /tmp is writable",
                        initdb.display()
                    ),
                })?;
        }

        let log = self.log_path();
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.port = free_port()?;
            let opts = format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c synchronous_commit=off",
                self.port,
                sh_quote(sock)
            );
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let secs = remaining.as_secs().max(1).to_string();
            let args: Vec<&OsStr> = vec![
                "start".as_ref(),
                "-w".as_ref(),
                "-t".as_ref(),
                secs.as_ref(),
                "-D".as_ref(),
                self.data.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-o".as_ref(),
                opts.as_ref(),
            ];
            match self.runner.run(&self.pg_ctl, &args, "pg_ctl start").await {
                Ok(()) => break,
                Err(detail) => {
                    let tail = self.log_tail();
                    self.stop().await;
                    let collision = tail
                        .iter()
                        .any(|l| l.contains("could not bind") || l.contains("already in use"));
                    if collision && attempt < 2 {
                        tracing::debug!("port {} taken; retrying on another", self.port);
                        continue;
                    }
                    let timed_out = tokio::time::Instant::now() >= deadline;
                    return Err(if timed_out {
                        SandboxError::NotReady {
                            secs: spec.ready_timeout.as_secs(),
                            what: self.describe(),
                            log: tail,
                            hint: "raise verify.ready_timeout".into(),
                        }
                    } else {
                        SandboxError::Local {
                            what: "starting the local sandbox".into(),
                            detail,
                            log: tail,
                            hint: "see the server log above".into(),
                        }
                    });
                }
            }
        }

        self.url = format!(
            "postgres://postgres:{password}@127.0.0.1:{}/postgres",
            self.port
        );
        let major = wait_for_connection(&self.url, deadline)
            .await
            .map_err(|last| SandboxError::NotReady {
                secs: spec.ready_timeout.as_secs(),
                what: format!("{}; last error: {last}", self.describe()),
                log: self.log_tail(),
                hint: "raise verify.ready_timeout".into(),
            })?;
        self.major = major;
        Ok(())
    }

    fn log_path(&self) -> PathBuf {
        self.runner.cwd.join("server.log")
    }

    fn log_tail(&self) -> Vec<String> {
        std::fs::read_to_string(self.log_path())
            .map(|t| last_lines(&t, LOG_LINES))
            .unwrap_or_default()
    }

    fn stop_args(&self) -> Vec<&OsStr> {
        vec![
            "stop".as_ref(),
            "-D".as_ref(),
            self.data.as_os_str(),
            "-m".as_ref(),
            "immediate".as_ref(),
            "-w".as_ref(),
        ]
    }

    /// Stop the server if it runs.
    async fn stop(&self) {
        if !self.data.join("postmaster.pid").exists() {
            return;
        }
        if let Err(e) = self
            .runner
            .run(&self.pg_ctl, &self.stop_args(), "pg_ctl stop")
            .await
        {
            tracing::warn!("stopping the local sandbox: {e}");
        }
    }
}

#[async_trait::async_trait]
impl Sandbox for LocalSandbox {
    fn url(&self) -> String {
        self.url.clone()
    }

    fn kind(&self) -> SandboxKind {
        SandboxKind::Local
    }

    fn describe(&self) -> String {
        format!(
            "local PostgreSQL {} ({}) on port {}",
            self.major,
            self.bin_dir.display(),
            self.port
        )
    }

    fn major(&self) -> u32 {
        self.major
    }

    async fn destroy(&mut self) -> Result<(), SandboxError> {
        let Some(dir) = self.dir.take() else {
            return Ok(());
        };
        self.stop().await;
        let path = dir.path().to_path_buf();
        // The server may still be writing for a moment after an immediate stop; retry once.
        if let Err(e) = dir.close() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if path.exists() {
                std::fs::remove_dir_all(&path).map_err(|e2| SandboxError::Io {
                    what: format!("removing {} (first attempt: {e})", path.display()),
                    source: e2,
                })?;
            }
        }
        Ok(())
    }
}

impl Drop for LocalSandbox {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else {
            return;
        };
        tracing::warn!(
            "local sandbox {} was not destroyed; stopping it now",
            dir.path().display()
        );
        if self.data.join("postmaster.pid").exists() {
            let mut cmd = self.runner.std_command(&self.pg_ctl);
            cmd.args(self.stop_args())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            if let Err(e) = cmd.status() {
                tracing::warn!("could not stop the local sandbox: {e}");
            }
        }
        drop(dir); // removes the directory
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_for_pg_ctl() {
        assert_eq!(sh_quote(Path::new("/tmp/a b")), "'/tmp/a b'");
        assert_eq!(sh_quote(Path::new("/tmp/it's")), r"'/tmp/it'\''s'");
    }

    #[test]
    fn root_lookup() {
        assert_eq!(lookup_user("root"), Some((0, 0)));
        assert_eq!(lookup_user("no-such-user-dr"), None);
    }
}
