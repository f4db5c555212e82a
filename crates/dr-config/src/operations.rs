//! How the operations run: `[backup]`, `[restore]`, `[verify]`, `[retention]` (what `dr prune`
//! keeps) and `[lock]` (one run per target at a time), with their defaults and bounds.

use std::path::PathBuf;

use serde::Deserialize;

use crate::values::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    /// zstd level, 1..=19. Default 3: fast, and most of the gain.
    #[serde(default = "default_zstd_level")]
    pub zstd_level: i32,
    /// zstd worker threads; 0 compresses on the pipeline thread. Default: 1 (compression
    /// overlaps with reading and encryption without multiplying memory).
    #[serde(default = "default_zstd_threads")]
    pub zstd_threads: u32,
    /// Directory searched first for PostgreSQL client binaries.
    pub pg_bin_dir: Option<PathBuf>,
    /// Multipart part size in MiB; default: derived from the database size so that 10,000
    /// parts cover it with margin (minimum 8).
    pub part_size_mib: Option<u64>,
    /// How long `pg_dump` (and dr's row counting) may wait for a table lock held by another
    /// session before the backup fails naming that session. 0: wait as long as it takes.
    /// Default 300.
    #[serde(default = "default_lock_wait_timeout")]
    pub lock_wait_timeout_secs: u64,
    /// A backup still running after this long fails cleanly (upload aborted, lock released):
    /// seconds, or a duration like "90m", "6h", "1d". Default "24h".
    #[serde(default = "default_max_duration")]
    pub max_duration: Duration,
    /// Data streams: the data section is split into this many `pg_dump` streams, dumped at
    /// once (tables largest first to the least-loaded stream), besides one pre-data and one
    /// post-data stream. 1..=32. Default: the host's CPUs, at most 4 (each stream compresses
    /// and encrypts on a core of its own; the database server works one core per stream too).
    /// `dr backup --jobs N` overrides it for one run.
    pub jobs: Option<u32>,
}

/// Upper bound of `backup.jobs`: each stream is a pg_dump, a server session and a
/// multipart upload.
pub const MAX_BACKUP_JOBS: u32 = 32;

impl BackupConfig {
    /// `jobs`, or the default for this host.
    pub fn jobs(&self) -> u32 {
        self.jobs.unwrap_or_else(default_backup_jobs)
    }
}

/// The host's CPUs, at most 4.
pub fn default_backup_jobs() -> u32 {
    std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(4))
        .unwrap_or(1)
        .clamp(1, 4)
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            jobs: None,
            zstd_level: default_zstd_level(),
            zstd_threads: default_zstd_threads(),
            pg_bin_dir: None,
            part_size_mib: None,
            lock_wait_timeout_secs: default_lock_wait_timeout(),
            max_duration: default_max_duration(),
        }
    }
}

fn default_lock_wait_timeout() -> u64 {
    300
}

fn default_max_duration() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn default_zstd_level() -> i32 {
    3
}
fn default_zstd_threads() -> u32 {
    1
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreConfig {
    /// Where restore and verify stage the decrypted archive. Default: the system temp dir.
    pub temp_dir: Option<PathBuf>,
    /// How long one statement of the restore may wait for a lock held by another session
    /// (e.g. the app holding a table that `--clean` must drop). 0: wait as long as it takes,
    /// still logging who blocks it. Default 300.
    #[serde(default = "default_lock_wait_timeout")]
    pub lock_wait_timeout_secs: u64,
}

impl Default for RestoreConfig {
    fn default() -> Self {
        RestoreConfig {
            temp_dir: None,
            lock_wait_timeout_secs: default_lock_wait_timeout(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyConfig {
    /// `auto` (docker when an engine answers, else local), `docker` or `local`. An unknown
    /// name is refused when the file is read. Default `auto`.
    pub sandbox: Option<dr_sandbox::SandboxChoice>,
    /// Docker image; `{major}` is replaced by the backup's server major. Default `postgres:{major}`.
    pub image: Option<String>,
    /// Local sandbox: directory of the PostgreSQL server binaries (`initdb`, `pg_ctl`,
    /// `postgres`) to use, e.g. a build with your extensions. Default: `backup.pg_bin_dir`,
    /// then `/usr/lib/postgresql/{major}/bin`, then `PATH`.
    pub pg_bin_dir: Option<PathBuf>,
    /// Seconds to wait for the sandbox to accept connections. Default 120.
    pub ready_timeout_secs: Option<u64>,
    /// Every retained backup proven within this long (`"30d"`): `dr verify` without an id
    /// (and the daemon's verify job) proves the backup whose last attempt is oldest — a base
    /// backup by a drill — and `dr status` fails once one went unproven this long. At
    /// least 1h. Unset: `dr verify` proves the newest backup, as always.
    pub prove_within: Option<Duration>,
    #[serde(default)]
    pub assert: Vec<VerifyAssert>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyAssert {
    pub name: String,
    /// A query returning one boolean; true means the assertion holds.
    pub sql: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    #[serde(default)]
    pub daily: u32,
    #[serde(default)]
    pub weekly: u32,
    #[serde(default)]
    pub monthly: u32,
    #[serde(default)]
    pub yearly: u32,
    /// IANA time zone in which days/weeks/months are counted. Default UTC.
    pub timezone: Option<String>,
    /// Objects of a backup without a manifest, and multipart uploads, older than this are
    /// leftovers of failed runs and are removed by `dr prune`. Default 24.
    pub leftover_grace_hours: Option<u64>,
}

impl RetentionConfig {
    pub fn is_configured(&self) -> bool {
        self.daily + self.weekly + self.monthly + self.yearly > 0
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockConfig {
    /// A lock older than this many seconds without a refresh is considered abandoned.
    #[serde(default = "default_lock_ttl")]
    pub ttl_secs: u64,
    /// How long a run waits for a held lock before giving up. 0: fail at once.
    #[serde(default)]
    pub wait_secs: u64,
}

impl Default for LockConfig {
    fn default() -> Self {
        LockConfig {
            ttl_secs: default_lock_ttl(),
            wait_secs: 0,
        }
    }
}

/// The shortest lock ttl accepted: refreshes (every ttl/3) must survive a slow store request.
pub const MIN_LOCK_TTL_SECS: u64 = 60;

fn default_lock_ttl() -> u64 {
    900
}

#[cfg(test)]
mod tests {
    use crate::tests::{err, MIN};
    use crate::Config;

    #[test]
    fn backup_jobs_is_1_to_32() {
        let c = Config::from_toml_str(&format!("{MIN}\n[backup]\njobs = 7\n"), None).expect("7");
        assert_eq!(c.backup.jobs(), 7);
        for bad in ["0", "33"] {
            let e = err(&format!("{MIN}\n[backup]\njobs = {bad}\n"));
            assert!(e.contains("backup.jobs") && e.contains("1 to 32"), "{e}");
        }
    }

    #[test]
    fn verify_sandbox_is_parsed_at_load() {
        let c = Config::from_toml_str(&format!("{MIN}\n[verify]\nsandbox = \"local\"\n"), None)
            .expect("parses");
        assert_eq!(
            c.verify.sandbox,
            Some(dr_sandbox::SandboxChoice::Kind(
                dr_sandbox::SandboxKind::Local
            ))
        );
        let e = err(&format!("{MIN}\n[verify]\nsandbox = \"podman\"\n"));
        assert!(
            e.contains("sandbox") && e.contains("`podman`") && e.contains("auto, docker, local"),
            "{e}"
        );
    }

    #[test]
    fn bad_timezone() {
        let e = err(&format!(
            "{MIN}\n[retention]\ndaily = 7\ntimezone = \"Mars/Olympus\"\n"
        ));
        assert!(e.contains("Mars/Olympus"), "{e}");
    }
}
