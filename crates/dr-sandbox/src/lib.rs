//! Throwaway PostgreSQL servers ("sandboxes") for `dr verify`: a backup is restored into one,
//! its row counts are compared with the manifest, and the sandbox is destroyed.
//!
//! Two kinds:
//! - [`SandboxKind::Docker`]: a container from a local image (default `postgres:{major}`),
//!   driven through the Docker Engine API (`bollard`), its port published on 127.0.0.1 only.
//!   Images are never pulled: a missing image is a clear error. Containers carry the labels
//!   `dr.sandbox=1`, `dr.sandbox.pid=PID` and `dr.sandbox.image=IMAGE`.
//! - [`SandboxKind::Local`]: a temporary cluster made with `initdb` / `pg_ctl` of the backup's
//!   major, on a free loopback port. As root the server runs as the `postgres` user.
//!
//! Either way the sandbox listens on loopback, has a random superuser password, and runs with
//! `fsync=off` (it holds nothing worth keeping). Always call [`Sandbox::destroy`]; dropping a
//! sandbox that was not destroyed cleans up synchronously, best-effort, with a warning.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use dr_sandbox::{SandboxKind, SandboxSpec};
//! let spec = SandboxSpec {
//!     kind: SandboxKind::Docker,
//!     major: 15,
//!     image: None, // postgres:15
//!     pg_bin_dir: None,
//!     ready_timeout: std::time::Duration::from_secs(120),
//! };
//! let mut sandbox = dr_sandbox::start(&spec).await?;
//! let client = dr_pg::ConnInfo::parse(&sandbox.url())?.connect().await?;
//! client.simple_query("select 1").await?;
//! sandbox.destroy().await?;
//! # Ok(()) }
//! ```

mod docker;
mod local;
/// Running server programs as `postgres` when dr runs as root (they refuse root).
pub use local::{is_root, lookup_user};

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

/// Why a sandbox could not be started or destroyed. Messages are for the operator; the next
/// step is [`SandboxError::hint`] (never part of the message).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot reach the Docker engine: {detail}")]
    DockerUnavailable { detail: String },
    #[error("image `{image}` is not available locally and could not be pulled")]
    ImageMissing { image: String },
    #[error("image `{image}` runs PostgreSQL {found}, older than the backup's server ({wanted})")]
    ImageTooOld {
        image: String,
        found: u32,
        wanted: u32,
    },
    #[error("docker: {action} failed: {detail}")]
    Docker {
        action: String,
        detail: String,
        /// The next step, when there is one (how to remove a container left behind).
        hint: Option<String>,
    },
    #[error("sandbox did not accept connections within {secs}s ({what}){}", log_tail(.log))]
    NotReady {
        secs: u64,
        what: String,
        log: Vec<String>,
        hint: String,
    },
    #[error("sandbox {what} exited before accepting connections{}", log_tail(.log))]
    Exited {
        what: String,
        log: Vec<String>,
        hint: String,
    },
    #[error("cannot find the PostgreSQL server binaries: {0}")]
    NoServer(#[source] dr_pg::PgError),
    #[error("{what} failed: {detail}{}", log_tail(.log))]
    Local {
        what: String,
        detail: String,
        log: Vec<String>,
        hint: String,
    },
    #[error("cannot run PostgreSQL as root and there is no `postgres` user to run it as")]
    NoPostgresUser,
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl SandboxError {
    /// The next step for the operator.
    pub fn hint(&self) -> Option<String> {
        match self {
            SandboxError::DockerUnavailable { .. } => Some("start Docker (or set DOCKER_HOST), or use a local sandbox (verify.sandbox = \"local\")".into()),
            SandboxError::ImageMissing { .. } => Some(
                "build or load it (docker load / docker import) or set verify.image".into(),
            ),
            SandboxError::ImageTooOld { wanted, .. } => Some(format!(
                "set verify.image to an image of PostgreSQL {wanted} or newer"
            )),
            SandboxError::NotReady { hint, .. }
            | SandboxError::Exited { hint, .. }
            | SandboxError::Local { hint, .. } => Some(hint.clone()),
            SandboxError::NoPostgresUser => Some("create one (e.g. `useradd --system postgres`), run dr as a non-root user, or use a docker sandbox".into()),
            SandboxError::NoServer(e) => e.hint(),
            SandboxError::Docker { hint, .. } => hint.clone(),
            SandboxError::Io { .. } => None,
        }
    }

    /// Trying again later may help: only an I/O failure of a passing kind (a timeout, an
    /// interruption). A sandbox that did not start within its ready timeout already waited;
    /// a missing image, tool or user needs the operator.
    pub fn is_transient(&self) -> bool {
        use std::io::ErrorKind as K;
        match self {
            SandboxError::Io { source, .. } => matches!(
                source.kind(),
                K::TimedOut | K::Interrupted | K::WouldBlock | K::ConnectionReset
            ),
            SandboxError::NoServer(e) => e.is_transient(),
            _ => false,
        }
    }
}

fn log_tail(log: &[String]) -> String {
    if log.is_empty() {
        String::new()
    } else {
        format!("\nlast log lines:\n  {}", log.join("\n  "))
    }
}

/// Where the sandbox runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxKind {
    Docker,
    Local,
}

impl SandboxKind {
    /// Every kind, in the order `auto` prefers them. A new kind is registered here (and
    /// started in [`start`]).
    pub const ALL: &'static [SandboxKind] = &[SandboxKind::Docker, SandboxKind::Local];

    /// The name written in `verify.sandbox` and `--sandbox`.
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxKind::Docker => "docker",
            SandboxKind::Local => "local",
        }
    }
}

impl std::fmt::Display for SandboxKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the operator asked for: a kind, or `auto` (docker when an engine answers, else
/// local). Parsed once, the same way for `verify.sandbox` in dr.toml and `dr verify
/// --sandbox`; an unknown name is refused with the list of valid ones.
///
/// ```
/// use dr_sandbox::{SandboxChoice, SandboxKind};
/// assert_eq!("local".parse(), Ok(SandboxChoice::Kind(SandboxKind::Local)));
/// assert_eq!("auto".parse(), Ok(SandboxChoice::Auto));
/// assert!("podman".parse::<SandboxChoice>().unwrap_err().contains("auto, docker, local"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SandboxChoice {
    #[default]
    Auto,
    Kind(SandboxKind),
}

impl SandboxChoice {
    /// Every accepted name: `auto`, then each [`SandboxKind::ALL`].
    pub fn names() -> Vec<&'static str> {
        std::iter::once("auto")
            .chain(SandboxKind::ALL.iter().map(|k| k.as_str()))
            .collect()
    }

    /// The kind to start: `auto` becomes docker when an engine answers (within ~2s), else local.
    pub async fn resolve(self) -> SandboxKind {
        match self {
            SandboxChoice::Kind(k) => k,
            SandboxChoice::Auto if docker_available().await => SandboxKind::Docker,
            SandboxChoice::Auto => SandboxKind::Local,
        }
    }
}

impl std::fmt::Display for SandboxChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SandboxChoice::Auto => f.write_str("auto"),
            SandboxChoice::Kind(k) => k.fmt(f),
        }
    }
}

impl std::str::FromStr for SandboxChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<SandboxChoice, String> {
        let name = s.trim();
        if name.eq_ignore_ascii_case("auto") {
            return Ok(SandboxChoice::Auto);
        }
        SandboxKind::ALL
            .iter()
            .find(|k| name.eq_ignore_ascii_case(k.as_str()))
            .map(|k| SandboxChoice::Kind(*k))
            .ok_or_else(|| {
                format!(
                    "unknown sandbox `{s}` (valid: {})",
                    SandboxChoice::names().join(", ")
                )
            })
    }
}

impl<'de> serde::Deserialize<'de> for SandboxChoice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<SandboxChoice, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What to start.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    pub kind: SandboxKind,
    /// The backup's server major; the sandbox runs this major or a newer one.
    pub major: u32,
    /// Docker: image template, `{major}` replaced; default `postgres:{major}`.
    pub image: Option<String>,
    /// Local: where `initdb` / `pg_ctl` / `postgres` live (else found by major).
    pub pg_bin_dir: Option<PathBuf>,
    /// How long the server may take to accept connections.
    pub ready_timeout: Duration,
}

impl SandboxSpec {
    /// The docker image this spec names, `{major}` replaced.
    pub fn image_name(&self) -> String {
        self.image
            .as_deref()
            .unwrap_or("postgres:{major}")
            .replace("{major}", &self.major.to_string())
    }
}

/// A running throwaway PostgreSQL.
#[async_trait::async_trait]
pub trait Sandbox: Send + Sync {
    /// `postgres://USER[:PASSWORD]@127.0.0.1:PORT/postgres` — superuser, ephemeral credentials.
    fn url(&self) -> String;
    fn kind(&self) -> SandboxKind;
    /// e.g. "docker image postgres:15 (container 1a2b3c4d)" or
    /// "local PostgreSQL 15 (/usr/lib/postgresql/15/bin) on port 5xxxx".
    fn describe(&self) -> String;
    /// The server major actually running.
    fn major(&self) -> u32;
    /// Stop and remove everything (container / data dir). Idempotent. Always call it; Drop is a
    /// fallback only.
    async fn destroy(&mut self) -> Result<(), SandboxError>;
}

/// Start a sandbox as `spec` says; it accepts connections at [`Sandbox::url`] when this returns.
/// On failure nothing is left behind.
pub async fn start(spec: &SandboxSpec) -> Result<Box<dyn Sandbox>, SandboxError> {
    let started = std::time::Instant::now();
    let sandbox: Box<dyn Sandbox> = match spec.kind {
        SandboxKind::Docker => Box::new(docker::DockerSandbox::start(spec).await?),
        SandboxKind::Local => Box::new(local::LocalSandbox::start(spec).await?),
    };
    tracing::info!(
        "sandbox ready in {:.1}s: {}",
        started.elapsed().as_secs_f64(),
        sandbox.describe()
    );
    Ok(sandbox)
}

/// Does a Docker engine answer (within ~2s)?
pub async fn docker_available() -> bool {
    docker::available().await
}

/// Every container / local cluster this process created that still exists: docker container
/// names (label `dr.sandbox.pid` = this process) and local sandbox directories. Empty after
/// every sandbox was destroyed.
pub async fn leftover_containers() -> Vec<String> {
    let mut left = docker::leftovers().await;
    let dirs: Vec<PathBuf> = match LOCAL_DIRS.lock() {
        Ok(g) => g.clone(),
        Err(p) => p.into_inner().clone(),
    };
    left.extend(
        dirs.into_iter()
            .filter(|d| d.exists())
            .map(|d| d.display().to_string()),
    );
    left
}

/// Local sandbox directories this process created (checked by [`leftover_containers`]).
static LOCAL_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

pub(crate) fn remember_local_dir(dir: PathBuf) {
    match LOCAL_DIRS.lock() {
        Ok(mut g) => g.push(dir),
        Err(p) => p.into_inner().push(dir),
    }
}

/// A random password / name part: `len` alphanumerics.
pub(crate) fn random_token(len: usize) -> String {
    use rand::Rng;
    rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// Keep the last `n` non-empty lines of `text`.
pub(crate) fn last_lines(text: &str, n: usize) -> Vec<String> {
    let lines: Vec<String> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    let skip = lines.len().saturating_sub(n);
    lines.into_iter().skip(skip).collect()
}

/// Connect and read the server major, retrying until `deadline`. Returns the last error text
/// when the deadline passes.
pub(crate) async fn wait_for_connection(
    url: &str,
    deadline: tokio::time::Instant,
) -> Result<u32, String> {
    let conn = dr_pg::ConnInfo::parse(url).map_err(|e| e.to_string())?;
    let conn = &conn;
    let attempt = || async move {
        let connected = async {
            let client = conn.connect().await?;
            dr_pg::ServerVersion::query(&client).await
        };
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(remaining.max(Duration::from_millis(500)), connected).await {
            Ok(Ok(v)) => Ok(v.major),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("connection attempt timed out".to_string()),
        }
    };
    let until = deadline.saturating_duration_since(tokio::time::Instant::now());
    // A starting server refuses, resets, or is "starting up" in turn: every failure is
    // worth another try until the ready timeout, which bounds the wait.
    dr_retry::Policy::until(until, dr_retry::SANDBOX_CONNECT_EVERY)
        .run(
            "connecting to the sandbox",
            None,
            |_: &String| true,
            attempt,
        )
        .await
        .map_err(|last| last.lines().next().unwrap_or_default().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_template_takes_the_major() {
        let mut spec = SandboxSpec {
            kind: SandboxKind::Docker,
            major: 16,
            image: None,
            pg_bin_dir: None,
            ready_timeout: Duration::from_secs(1),
        };
        assert_eq!(spec.image_name(), "postgres:16");
        spec.image = Some("registry.local:5000/pg:{major}-alpine".into());
        assert_eq!(spec.image_name(), "registry.local:5000/pg:16-alpine");
    }

    #[test]
    fn log_tail_keeps_the_end() {
        assert_eq!(last_lines("a\n\nb\nc\n", 2), vec!["b", "c"]);
        assert!(last_lines("", 5).is_empty());
        let e = SandboxError::NotReady {
            secs: 120,
            what: "x".into(),
            log: vec!["FATAL: boom".into()],
            hint: "h".into(),
        };
        let s = e.to_string();
        assert!(
            s.starts_with("sandbox did not accept connections within 120s"),
            "{s}"
        );
        assert!(s.contains("FATAL: boom") && !s.contains("hint"), "{s}");
        assert_eq!(e.hint().as_deref(), Some("h"));
    }

    #[test]
    fn sandbox_choices_parse_once() {
        assert_eq!("auto".parse(), Ok(SandboxChoice::Auto));
        assert_eq!(
            " Docker ".parse(),
            Ok(SandboxChoice::Kind(SandboxKind::Docker))
        );
        for kind in SandboxKind::ALL {
            assert_eq!(kind.as_str().parse(), Ok(SandboxChoice::Kind(*kind)));
            assert_eq!(SandboxChoice::Kind(*kind).to_string(), kind.as_str());
        }
        assert_eq!(SandboxChoice::names(), ["auto", "docker", "local"]);
        let e = "podman".parse::<SandboxChoice>().expect_err("unknown");
        assert_eq!(e, "unknown sandbox `podman` (valid: auto, docker, local)");
    }

    #[test]
    fn missing_image_message() {
        let e = SandboxError::ImageMissing {
            image: "postgres:17".into(),
        };
        assert_eq!(
            e.to_string(),
            "image `postgres:17` is not available locally and could not be pulled"
        );
        assert_eq!(
            e.hint().as_deref(),
            Some("build or load it (docker load / docker import) or set verify.image")
        );
    }
}
