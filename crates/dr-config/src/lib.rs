//! `dr.toml`: the configuration schema, its validation, and the environment overrides.
//!
//! dr-config owns what an operator writes. It parses strictly (an unknown key is an error
//! naming it, so a typo never silently disables a setting), checks what can be checked without
//! touching the network, and refuses secrets: passwords come from libpq's usual places,
//! object-store credentials from the AWS chain, the age identity from a file.
//!
//! Precedence: command-line flags > environment ([`env`]) > file.
//!
//! ```
//! let cfg = dr_config::Config::from_toml_str(r#"
//! [repository]
//! url = "file:///var/backups/dr"
//! [encryption]
//! recipients = ["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"]
//! [[targets]]
//! name = "app"
//! url = "postgres://app@127.0.0.1:5432/app"
//! "#, None).unwrap();
//! assert_eq!(cfg.targets[0].name, "app");
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

mod schedule;
mod signing;
mod values;

pub use schedule::{JobKind, ScheduleConfig};
pub use signing::SigningConfig;
pub use values::{
    escape_database, unescape_database, url_holds_password, valid_configured_name,
    valid_target_name, Duration, PASSWORD_HINT,
};

/// Environment variables dr reads, as documented in `docs/CONFIGURATION.md`.
pub mod env {
    /// Path of the configuration file (same as `--config`).
    pub const CONFIG: &str = "DR_CONFIG";
    /// Overrides `repository.url`.
    pub const REPOSITORY_URL: &str = "DR_REPOSITORY_URL";
    /// Overrides the S3 endpoint (`repository.s3.endpoint`, or `repository.endpoint`).
    pub const REPOSITORY_ENDPOINT: &str = "DR_REPOSITORY_ENDPOINT";
    /// Overrides `encryption.identity_file`.
    pub const IDENTITY_FILE: &str = "DR_IDENTITY_FILE";
    /// Overrides `signing.key_file` (and adds a `[signing]` section when there is none).
    pub const SIGNING_KEY_FILE: &str = "DR_SIGNING_KEY_FILE";
    /// Overrides `backup.pg_bin_dir`.
    pub const PG_BIN_DIR: &str = "DR_PG_BIN_DIR";
    /// Overrides `notify.webhook_url` (it usually holds a token: keep it out of the file).
    pub const WEBHOOK_URL: &str = "DR_WEBHOOK_URL";
    /// Overrides `notify.ping_url`.
    pub const PING_URL: &str = "DR_PING_URL";
}

/// Default location of the configuration file when neither `--config` nor `DR_CONFIG` is set.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/dr/dr.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}\nhint: pass --config FILE or set DR_CONFIG")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config{}: {message}", path_suffix(.path))]
    Parse {
        path: Option<PathBuf>,
        message: String,
    },
    #[error("invalid config{}: {message}\nhint: {hint}", path_suffix(.path))]
    Invalid {
        path: Option<PathBuf>,
        message: String,
        hint: String,
    },
}

fn path_suffix(p: &Option<PathBuf>) -> String {
    match p {
        Some(p) => format!(" {}", p.display()),
        None => String::new(),
    }
}

/// The whole `dr.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub repository: RepositoryConfig,
    pub encryption: EncryptionConfig,
    #[serde(default)]
    pub targets: Vec<TargetConfig>,
    #[serde(default)]
    pub backup: BackupConfig,
    #[serde(default)]
    pub restore: RestoreConfig,
    #[serde(default)]
    pub verify: VerifyConfig,
    #[serde(default)]
    pub retention: RetentionConfig,
    #[serde(default)]
    pub lock: LockConfig,
    #[serde(default)]
    pub status: StatusConfig,
    #[serde(default)]
    pub daemon: DaemonConfig,
    #[serde(default)]
    pub notify: NotifyConfig,
    /// `[signing]`: the key this host signs with, the keys it trusts. Absent: this host
    /// trusts no backup (restore/verify refuse) and cannot make one.
    pub signing: Option<SigningConfig>,
    /// Jobs for `dr daemon`, besides those in `daemon.schedules_dir`.
    #[serde(default)]
    pub schedules: Vec<ScheduleConfig>,
    /// Where the file was read from, for messages.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// `[repository]`: the URL, and the options of its backend, which dr-store owns and checks
/// (e.g. `[repository.s3]`, or the older `endpoint`/`region`/`path_style` beside `url`).
#[derive(Debug, Clone, Deserialize)]
pub struct RepositoryConfig {
    /// `s3://BUCKET/PREFIX` or `file:///ABSOLUTE/PATH`.
    pub url: String,
    /// Everything else in `[repository]`, passed through to [`dr_store::Location::parse`];
    /// an unknown key is refused there, by name.
    #[serde(flatten)]
    pub options: dr_store::RepositoryOptions,
}

impl RepositoryConfig {
    /// Where the repository lives: the URL checked by the backend its scheme names.
    pub fn location(&self) -> Result<dr_store::Location, dr_store::StoreError> {
        dr_store::Location::parse(&self.url, &self.options)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionConfig {
    /// Public age recipients (`age1...`). The backup host needs only these.
    #[serde(default)]
    pub recipients: Vec<String>,
    /// A file with one recipient per line (`#` comments allowed), e.g. the output of `dr keygen`.
    pub recipients_file: Option<PathBuf>,
    /// The private age identity, needed only to restore, verify and `show` details.
    pub identity_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// Short name; part of every object key. Letters, digits, `-`, `_`.
    pub name: String,
    /// libpq-style URL without a password: `postgres://user@host:5432/db`.
    pub url: String,
    /// Directory holding `pg_dump`/`pg_dumpall`/`pg_restore` for this target.
    pub pg_bin_dir: Option<PathBuf>,
    /// `"all"`: every database of the server `url` points at (`url` names the database dr
    /// connects to in order to list them), expanded each run; each database is a target of
    /// its own named `NAME.DATABASE` (see [`escape_database`]), with its own backups and
    /// retention.
    pub databases: Option<Databases>,
    /// With `databases = "all"`: names of databases not to back up.
    #[serde(default)]
    pub exclude_databases: Vec<String>,
    /// Set on a target expanded from a `databases = "all"` target.
    #[serde(skip)]
    pub expanded_from: Option<Expansion>,
}

/// The value of `databases` in a `[[targets]]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Databases {
    /// Every database that accepts connections, templates excepted.
    All,
}

/// Where an expanded target comes from: its server target and database, and the
/// `pg_dumpall --globals-only` script shared by every database of one run (dumped once).
#[derive(Debug, Clone)]
pub struct Expansion {
    pub server: String,
    pub database: String,
    pub globals: SharedGlobals,
}

/// The globals of one server, dumped by the first backup of a run and reused by the others.
#[derive(Clone, Default)]
pub struct SharedGlobals(pub std::sync::Arc<std::sync::OnceLock<Vec<u8>>>);

impl std::fmt::Debug for SharedGlobals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.get() {
            Some(g) => write!(f, "SharedGlobals({} bytes)", g.len()),
            None => write!(f, "SharedGlobals(not yet dumped)"),
        }
    }
}

impl TargetConfig {
    /// Whether this target stands for every database of its server.
    pub fn is_server(&self) -> bool {
        self.databases.is_some()
    }

    /// The target of one database of this server target: named `NAME.ESCAPED`, its URL
    /// naming that database.
    pub fn for_database(&self, database: &str, globals: &SharedGlobals) -> TargetConfig {
        let mut url = self.url.clone();
        if let Ok(mut u) = url::Url::parse(&self.url) {
            let mut path = String::from("/");
            for b in database.bytes() {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                    path.push(char::from(b));
                } else {
                    path.push_str(&format!("%{b:02X}"));
                }
            }
            u.set_path(&path);
            let query: Vec<(String, String)> = u
                .query_pairs()
                .filter(|(k, _)| k != "dbname")
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            if query.is_empty() {
                u.set_query(None);
            } else {
                u.query_pairs_mut().clear().extend_pairs(query);
            }
            url = u.to_string();
        }
        TargetConfig {
            name: format!("{}.{}", self.name, escape_database(database)),
            url,
            pg_bin_dir: self.pg_bin_dir.clone(),
            databases: None,
            exclude_databases: Vec::new(),
            expanded_from: Some(Expansion {
                server: self.name.clone(),
                database: database.to_string(),
                globals: globals.clone(),
            }),
        }
    }

    /// Which of `databases` (as listed on the server) this server target backs up: all but
    /// the excluded ones, in name order.
    pub fn included_databases(&self, databases: &[String]) -> Vec<String> {
        let mut out: Vec<String> = databases
            .iter()
            .filter(|d| !self.exclude_databases.contains(d))
            .cloned()
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

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
    /// A lock older than this many seconds without a heartbeat is considered abandoned.
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusConfig {
    /// `dr status` fails when a target's newest backup is older than this. Default 26 (a
    /// nightly job plus slack).
    #[serde(default = "default_max_backup_age_hours")]
    pub max_backup_age_hours: u64,
}

impl Default for StatusConfig {
    fn default() -> Self {
        StatusConfig {
            max_backup_age_hours: default_max_backup_age_hours(),
        }
    }
}

fn default_max_backup_age_hours() -> u64 {
    26
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// Directory of job files (`*.toml`, one [`ScheduleConfig`] each). Relative paths are
    /// relative to the config file's directory. Default: `schedules` next to the config file;
    /// a missing default directory is fine, a missing configured one is an error.
    pub schedules_dir: Option<PathBuf>,
    /// How many target runs (across all jobs) may run at once. Default 1.
    #[serde(default = "default_max_concurrent_jobs")]
    pub max_concurrent_jobs: usize,
    /// On SIGTERM/SIGINT, how long a running job may take to finish before it is cancelled
    /// (cleanly: no manifest, upload aborted). Default 300.
    #[serde(default = "default_shutdown_grace_secs")]
    pub shutdown_grace_secs: u64,
    /// `HOST:PORT` where the daemon serves Prometheus metrics at `/metrics`. Default: off.
    pub metrics_address: Option<String>,
    /// How often a job that failed for a transient reason (network, 5xx, throttling, a
    /// server restarting, a lock held by another session) is tried again. Default 2.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Seconds before the first retry; doubled for each next one. Default 60.
    #[serde(default = "default_retry_backoff_secs")]
    pub retry_backoff_secs: u64,
}

fn default_retries() -> u32 {
    2
}
fn default_retry_backoff_secs() -> u64 {
    60
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            schedules_dir: None,
            max_concurrent_jobs: default_max_concurrent_jobs(),
            shutdown_grace_secs: default_shutdown_grace_secs(),
            metrics_address: None,
            retries: default_retries(),
            retry_backoff_secs: default_retry_backoff_secs(),
        }
    }
}

fn default_max_concurrent_jobs() -> usize {
    1
}
fn default_shutdown_grace_secs() -> u64 {
    300
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// POSTed a JSON message (with a Slack-compatible `text`) when a job fails, and when it
    /// succeeds if `webhook_on_success`. Prefer `DR_WEBHOOK_URL`: such URLs hold tokens.
    pub webhook_url: Option<String>,
    #[serde(default)]
    pub webhook_on_success: bool,
    /// healthchecks.io-style: `{ping_url}/start` when a job starts, `{ping_url}` when it
    /// succeeds, `{ping_url}/fail` when it fails. `{target}` and `{job}` are replaced.
    pub ping_url: Option<String>,
    /// One-shot `dr backup`/`verify`/`prune` write Prometheus metrics here (node-exporter
    /// textfile collector format; written to a temp file, then renamed).
    pub textfile_path: Option<PathBuf>,
}

impl Config {
    /// Read and validate the file, then apply environment overrides.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut cfg = Config::from_toml_str(&text, Some(path))?;
        cfg.apply_env(|k| std::env::var(k).ok())?;
        Ok(cfg)
    }

    /// Parse and validate TOML text (no environment).
    pub fn from_toml_str(text: &str, path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.map(Path::to_path_buf),
            message: e.to_string(),
        })?;
        cfg.source = path.map(Path::to_path_buf);
        cfg.validate()?;
        Ok(cfg)
    }

    /// Apply the documented environment overrides; `get` is the environment.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = get(env::REPOSITORY_URL).filter(|v| !v.is_empty()) {
            self.repository.url = v;
        }
        if let Some(v) = get(env::REPOSITORY_ENDPOINT).filter(|v| !v.is_empty()) {
            self.repository.options.set_override("endpoint", &v);
        }
        if let Some(v) = get(env::IDENTITY_FILE).filter(|v| !v.is_empty()) {
            self.encryption.identity_file = Some(PathBuf::from(v));
        }
        if let Some(v) = get(env::SIGNING_KEY_FILE).filter(|v| !v.is_empty()) {
            self.signing
                .get_or_insert_with(SigningConfig::default)
                .key_file = Some(PathBuf::from(v));
        }
        if let Some(v) = get(env::PG_BIN_DIR).filter(|v| !v.is_empty()) {
            self.backup.pg_bin_dir = Some(PathBuf::from(v));
        }
        if let Some(v) = get(env::WEBHOOK_URL).filter(|v| !v.is_empty()) {
            self.notify.webhook_url = Some(v);
        }
        if let Some(v) = get(env::PING_URL).filter(|v| !v.is_empty()) {
            self.notify.ping_url = Some(v);
        }
        self.validate()
    }

    fn invalid(&self, message: impl Into<String>, hint: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.source.clone(),
            message: message.into(),
            hint: hint.into(),
        }
    }

    /// Checks that need no network: names, URLs, secrets, ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // The schemes and their options belong to dr-store.
        if let Err(e) = self.repository.location() {
            let text = e.to_string();
            let message = text
                .split_once(". hint: ")
                .map_or(text.as_str(), |(m, _)| m);
            return Err(self.invalid(
                message,
                e.hint()
                    .unwrap_or("see [repository] in docs/CONFIGURATION.md"),
            ));
        }
        if self.encryption.recipients.is_empty() && self.encryption.recipients_file.is_none() {
            return Err(self.invalid(
                "encryption.recipients is empty: backups would not be encrypted to anyone",
                "run `dr keygen --output /etc/dr/identity.txt` and put the printed age1... recipient in encryption.recipients",
            ));
        }
        for r in &self.encryption.recipients {
            if r.trim().starts_with("AGE-SECRET-KEY-") {
                return Err(self.invalid(
                    "encryption.recipients holds a private age identity (AGE-SECRET-KEY-...)",
                    "remove it from the config at once; list only public recipients (age1...) and point encryption.identity_file at the identity",
                ));
            }
        }
        let mut names = BTreeSet::new();
        for t in &self.targets {
            if !valid_configured_name(&t.name) {
                return Err(self.invalid(
                    format!("target name `{}` is not valid", t.name),
                    "use 1-64 letters, digits, `-` or `_` (it becomes part of object keys; `.` is kept for the databases of a `databases = \"all\"` target)",
                ));
            }
            if !t.exclude_databases.is_empty() && !t.is_server() {
                return Err(self.invalid(
                    format!("target `{}`: exclude_databases without databases = \"all\"", t.name),
                    "add databases = \"all\" (every database of the server), or remove exclude_databases",
                ));
            }
            if !names.insert(t.name.as_str()) {
                return Err(self.invalid(
                    format!("target `{}` is defined twice", t.name),
                    "give each [[targets]] a unique name",
                ));
            }
            if !(t.url.starts_with("postgres://") || t.url.starts_with("postgresql://")) {
                return Err(self.invalid(
                    format!("target `{}`: url must start with postgres://", t.name),
                    "write e.g. url = \"postgres://app@127.0.0.1:5432/app\"",
                ));
            }
            match url::Url::parse(&t.url) {
                Ok(_) if url_holds_password(&t.url) => {
                    return Err(self.invalid(
                        format!("target `{}`: the url holds a password", t.name),
                        PASSWORD_HINT,
                    ))
                }
                Ok(_) => {}
                Err(e) => {
                    return Err(self.invalid(
                        format!("target `{}`: url is not valid: {e}", t.name),
                        "write e.g. url = \"postgres://app@127.0.0.1:5432/app\"",
                    ))
                }
            }
        }
        if !(1..=19).contains(&self.backup.zstd_level) {
            return Err(self.invalid(
                format!(
                    "backup.zstd_level {} is out of range",
                    self.backup.zstd_level
                ),
                "use 1 (fastest) to 19 (smallest); 3 is the default",
            ));
        }
        if self.lock.ttl_secs < MIN_LOCK_TTL_SECS {
            return Err(self.invalid(
                format!(
                    "lock.ttl_secs = {} is too short: a running backup refreshes its lock every ttl/3, and a shorter ttl lets a second run take over a live lock",
                    self.lock.ttl_secs
                ),
                format!("use at least {MIN_LOCK_TTL_SECS} (the default is 900)"),
            ));
        }
        if let Some(jobs) = self.backup.jobs {
            if !(1..=MAX_BACKUP_JOBS).contains(&jobs) {
                return Err(self.invalid(
                    format!("backup.jobs = {jobs} is out of range"),
                    format!("use 1 to {MAX_BACKUP_JOBS} data streams (the default is the host's CPUs, at most 4)"),
                ));
            }
        }
        if self.backup.max_duration.as_secs() < 10 {
            return Err(self.invalid(
                format!(
                    "backup.max_duration = {} is too short to back up anything",
                    self.backup.max_duration
                ),
                "use e.g. \"6h\" (the default is \"24h\")",
            ));
        }
        if let Some(tz) = &self.retention.timezone {
            if tz.parse::<chrono_tz::Tz>().is_err() {
                return Err(self.invalid(
                    format!("retention.timezone `{tz}` is not an IANA time zone"),
                    "write e.g. timezone = \"Europe/Berlin\" or \"UTC\"",
                ));
            }
        }
        for (key, value) in [
            ("notify.webhook_url", &self.notify.webhook_url),
            ("notify.ping_url", &self.notify.ping_url),
        ] {
            if let Some(v) = value {
                let ok = url::Url::parse(v)
                    .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host());
                if !ok {
                    // Not echoed: it may hold a token.
                    return Err(self.invalid(
                        format!("{key} is not an http(s) URL"),
                        "write e.g. \"https://hooks.slack.com/services/...\" (or set it through the environment)",
                    ));
                }
            }
        }
        if let Some(a) = &self.daemon.metrics_address {
            if a.parse::<std::net::SocketAddr>().is_err() {
                return Err(self.invalid(
                    format!("daemon.metrics_address `{a}` is not HOST:PORT"),
                    "write e.g. metrics_address = \"127.0.0.1:9187\"",
                ));
            }
        }
        if self.daemon.max_concurrent_jobs == 0 {
            return Err(self.invalid(
                "daemon.max_concurrent_jobs is 0: no job could ever run",
                "use 1 (the default) or more",
            ));
        }
        for s in &self.schedules {
            s.validate(self, None)?;
        }
        if let Some(s) = &self.signing {
            s.validate().map_err(|(m, h)| self.invalid(m, h))?;
        }
        Ok(())
    }

    /// The targets selected by `--target`, or all of them.
    pub fn select_targets(&self, name: Option<&str>) -> Result<Vec<&TargetConfig>, ConfigError> {
        match name {
            None if self.targets.is_empty() => Err(self.invalid(
                "no [[targets]] are configured",
                "add a [[targets]] section with name and url",
            )),
            None => Ok(self.targets.iter().collect()),
            Some(n) => match self.targets.iter().find(|t| t.name == n) {
                Some(t) => Ok(vec![t]),
                None => Err(self.invalid(
                    format!("no target named `{n}`"),
                    format!(
                        "configured targets: {}",
                        self.targets
                            .iter()
                            .map(|t| t.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )),
            },
        }
    }

    /// A `--target SERVER.DATABASE` naming one database of a `databases = "all"` target
    /// (whether or not that database exists now); `None` for any other name. An excluded
    /// database is an error.
    pub fn database_target(&self, name: &str) -> Result<Option<TargetConfig>, ConfigError> {
        let Some((server, escaped)) = name.split_once('.') else {
            return Ok(None);
        };
        let Some(s) = self
            .targets
            .iter()
            .find(|t| t.name == server && t.is_server())
        else {
            return Ok(None);
        };
        let Some(db) = unescape_database(escaped) else {
            return Ok(None);
        };
        if s.exclude_databases.contains(&db) {
            return Err(self.invalid(
                format!("database `{db}` of target `{server}` is in its exclude_databases"),
                "remove it from exclude_databases to back it up",
            ));
        }
        Ok(Some(s.for_database(&db, &SharedGlobals::default())))
    }

    /// Where `dr daemon` reads job files, and whether it was configured explicitly.
    pub fn schedules_dir(&self) -> (PathBuf, bool) {
        let base = self
            .source
            .as_deref()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        match &self.daemon.schedules_dir {
            Some(d) => (base.join(d), true),
            None => (base.join("schedules"), false),
        }
    }

    /// All public recipients: inline ones plus those in `recipients_file`.
    pub fn recipients(&self) -> Result<Vec<String>, ConfigError> {
        let mut out = self.encryption.recipients.clone();
        if let Some(p) = &self.encryption.recipients_file {
            let text = std::fs::read_to_string(p).map_err(|e| {
                self.invalid(
                    format!(
                        "cannot read encryption.recipients_file {}: {e}",
                        p.display()
                    ),
                    "check the path and its permissions",
                )
            })?;
            out.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_string),
            );
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"
[repository]
url = "s3://bucket/prefix"
endpoint = "http://127.0.0.1:8333"
region = "us-east-1"
path_style = true

[encryption]
recipients = ["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"]
identity_file = "/path/key.txt"

[[targets]]
name = "app"
url = "postgres://user@host:5432/app"
"#;

    fn err(text: &str) -> String {
        match Config::from_toml_str(text, None) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn the_documented_example_parses() {
        let c = Config::from_toml_str(MIN, None).expect("parses");
        assert_eq!(c.repository.url, "s3://bucket/prefix");
        assert!(matches!(
            c.repository.location(),
            Ok(dr_store::Location::S3 {
                path_style: true,
                ..
            })
        ));
        assert_eq!(c.backup.zstd_level, 3);
        assert_eq!(c.targets.len(), 1);
        assert!((1..=4).contains(&c.backup.jobs()));
    }

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
    fn a_typo_names_the_key() {
        let e = err(&MIN.replace("path_style", "path_styel"));
        assert!(e.contains("path_styel"), "{e}");
    }

    #[test]
    fn a_password_in_the_target_url_is_refused() {
        let e = err(&MIN.replace("user@host", "user:secret@host"));
        assert!(e.contains("password") && e.contains("PGPASSWORD"), "{e}");
        assert!(!e.contains("secret@"), "{e}");
    }

    #[test]
    fn a_private_key_among_recipients_is_refused() {
        let e = err(&MIN.replace("age1ql3z7", "AGE-SECRET-KEY-1ql3z7"));
        assert!(e.contains("private"), "{e}");
    }

    #[test]
    fn bad_repository_scheme() {
        let e = err(&MIN.replace("s3://bucket/prefix", "gs://bucket"));
        assert!(e.contains("gs://bucket"), "{e}");
        assert!(
            e.contains("hint: use s3://BUCKET/PREFIX or file:///absolute/path"),
            "{e}"
        );
        let e = err(&MIN.replace("s3://bucket/prefix", "s3://key:secret@bucket/prefix"));
        assert!(e.contains("credentials") && !e.contains("secret"), "{e}");
    }

    /// `[repository.s3]` is preferred; the older keys beside `url` still work; both ways
    /// with different values is an error naming both.
    #[test]
    fn repository_s3_options_new_table_old_keys_and_conflicts() {
        let s3 = |c: &Config| match c.repository.location() {
            Ok(dr_store::Location::S3 {
                endpoint,
                region,
                path_style,
                ..
            }) => (endpoint, region, path_style),
            other => panic!("{other:?}"),
        };
        let want = (
            Some("http://127.0.0.1:8333".to_string()),
            Some("us-east-1".to_string()),
            true,
        );
        let old = Config::from_toml_str(MIN, None).expect("old keys");
        assert_eq!(s3(&old), want);
        let table = MIN.replace("endpoint =", "[repository.s3]\nendpoint =");
        let new = Config::from_toml_str(&table, None).expect("new table");
        assert_eq!(s3(&new), want);
        let conflict = MIN.replace(
            "path_style = true\n",
            "path_style = true\n[repository.s3]\nregion = \"auto\"\n",
        );
        let e = err(&conflict);
        assert!(
            e.contains("repository.region")
                && e.contains("repository.s3.region")
                && e.contains("hint:"),
            "{e}"
        );
        let e = err(&MIN.replace(
            "endpoint = \"http://127.0.0.1:8333\"",
            "endpoint = \"nope\"",
        ));
        assert!(e.contains("repository.s3.endpoint"), "{e}");
        // The environment overrides the endpoint wherever the file wrote it.
        let mut c = Config::from_toml_str(&table, None).expect("new table");
        c.apply_env(|k| {
            (k == env::REPOSITORY_ENDPOINT).then(|| "http://10.0.0.1:9000".to_string())
        })
        .expect("valid");
        assert_eq!(s3(&c).0.as_deref(), Some("http://10.0.0.1:9000"));
    }

    /// `[repository.object_lock]`: two lines, checked at load; a directory refuses it.
    #[test]
    fn object_lock_is_read_checked_and_refused_by_a_directory() {
        let locked = format!("{MIN}\n[repository.object_lock]\nmode = \"compliance\"\ndays = 14\n");
        let c = Config::from_toml_str(&locked, None).expect("object_lock");
        let lock = c.repository.location().expect("location").object_lock();
        assert_eq!(
            lock,
            Some(dr_store::ObjectLock {
                mode: dr_store::LockMode::Compliance,
                days: 14
            })
        );
        let gov = locked.replace("compliance", "governance");
        let c = Config::from_toml_str(&gov, None).expect("governance");
        assert_eq!(
            c.repository
                .location()
                .expect("location")
                .object_lock()
                .map(|l| l.mode),
            Some(dr_store::LockMode::Governance)
        );
        for (bad, names) in [
            (locked.replace("compliance", "forever"), "forever"),
            (locked.replace("days = 14", "days = 0"), "object_lock.days"),
            (locked.replace("days = 14", "dayz = 14"), "dayz"),
            (locked.replace("days = 14\n", ""), "days"),
        ] {
            let e = err(&bad);
            assert!(e.contains(names) && e.contains("hint:"), "{e}");
        }
        // A directory repository: refused at load, with the way out.
        let dir = locked.replace("s3://bucket/prefix", "file:///srv/dr");
        let e = err(&dir);
        assert!(
            e.contains("repository.object_lock")
                && e.contains("directory")
                && e.contains("hint: remove [repository.object_lock]"),
            "{e}"
        );
        // ... also when the url is switched by the environment.
        let mut c = Config::from_toml_str(&locked, None).expect("object_lock");
        let e = c
            .apply_env(|k| (k == env::REPOSITORY_URL).then(|| "file:///tmp/x".to_string()))
            .expect_err("directory");
        assert!(e.to_string().contains("object_lock"), "{e}");
    }

    #[test]
    fn duplicate_and_bad_target_names() {
        let dup = format!("{MIN}\n[[targets]]\nname = \"app\"\nurl = \"postgres://x@h/db\"\n");
        assert!(err(&dup).contains("twice"));
        assert!(err(&MIN.replace("name = \"app\"", "name = \"a/b\"")).contains("a/b"));
    }

    #[test]
    fn all_databases_of_a_server() {
        let text = MIN.replace(
            "url = \"postgres://user@host:5432/app\"",
            "url = \"postgres://user@host:5432/postgres?sslmode=require&dbname=x\"\ndatabases = \"all\"\nexclude_databases = [\"scratch\"]",
        );
        let c = Config::from_toml_str(&text, None).expect("parses");
        let server = &c.targets[0];
        assert!(server.is_server());
        assert_eq!(
            server.included_databases(&["b".into(), "scratch".into(), "a b".into()]),
            ["a b", "b"]
        );
        let g = SharedGlobals::default();
        let t = server.for_database("a b/é", &g);
        assert_eq!(t.name, "app.a~20b~2F~C3~A9");
        assert!(valid_target_name(&t.name));
        assert_eq!(
            t.url,
            "postgres://user@host:5432/a%20b%2F%C3%A9?sslmode=require"
        );
        assert!(!t.is_server());
        let from = t.expanded_from.as_ref().expect("expanded");
        assert_eq!(
            (from.server.as_str(), from.database.as_str()),
            ("app", "a b/é")
        );
        // `--target app.DB` resolves without the server; an excluded one is refused.
        let one = c.database_target("app.a~20b").expect("ok").expect("some");
        assert_eq!(one.url, "postgres://user@host:5432/a%20b?sslmode=require");
        let e = c.database_target("app.scratch").expect_err("excluded");
        assert!(e.to_string().contains("exclude_databases"), "{e}");
        assert!(c.database_target("app").expect("ok").is_none());
        assert!(c.database_target("other.db").expect("ok").is_none());
        // Mistakes are named.
        assert!(err(&text.replace("\"all\"", "\"some\"")).contains("some"));
        let e = err(&MIN.replace(
            "url = \"postgres://user@host:5432/app\"",
            "url = \"postgres://user@host:5432/app\"\nexclude_databases = [\"x\"]",
        ));
        assert!(
            e.contains("exclude_databases") && e.contains("hint:"),
            "{e}"
        );
        let e = err(&MIN.replace("name = \"app\"", "name = \"pg1.app\""));
        assert!(e.contains("pg1.app") && e.contains("`.`"), "{e}");
    }

    #[test]
    fn env_overrides_the_file() {
        let mut c = Config::from_toml_str(MIN, None).expect("parses");
        c.apply_env(|k| (k == env::REPOSITORY_URL).then(|| "file:///tmp/x".to_string()))
            .expect("valid");
        assert_eq!(c.repository.url, "file:///tmp/x");
    }

    #[test]
    fn select_unknown_target_lists_known_ones() {
        let c = Config::from_toml_str(MIN, None).expect("parses");
        let e = c.select_targets(Some("nope")).err().map(|e| e.to_string());
        assert!(e.unwrap_or_default().contains("configured targets: app"));
    }

    #[test]
    fn scheduling_and_alerting_sections_parse() {
        let text = format!(
            r#"{MIN}
[retention]
daily = 7

[daemon]
schedules_dir = "jobs"
max_concurrent_jobs = 2
shutdown_grace_secs = 60
metrics_address = "127.0.0.1:9187"

[notify]
webhook_url = "https://hooks.example.com/T000/B000/XXXX"
webhook_on_success = true
ping_url = "https://hc-ping.com/uuid-{{target}}"
textfile_path = "/var/lib/node_exporter/dr.prom"

[[schedules]]
name = "nightly"
cron = "0 3 * * *"
timezone = "Europe/Berlin"
job = "backup"
targets = ["app"]
prune_after = true
"#
        );
        let c = Config::from_toml_str(&text, Some(Path::new("/etc/dr/dr.toml"))).expect("parses");
        assert_eq!(c.daemon.max_concurrent_jobs, 2);
        assert_eq!(c.schedules[0].job, JobKind::Backup);
        assert_eq!(c.schedules_dir(), (PathBuf::from("/etc/dr/jobs"), true));
        let d = Config::from_toml_str(MIN, Some(Path::new("/etc/dr/dr.toml"))).expect("parses");
        assert_eq!(
            d.schedules_dir(),
            (PathBuf::from("/etc/dr/schedules"), false)
        );
        assert_eq!(d.daemon.shutdown_grace_secs, 300);
        assert!(!d.notify.webhook_on_success);
    }

    #[test]
    fn schedule_mistakes_are_named() {
        let job = "\n[[schedules]]\nname = \"n\"\ncron = \"0 3 * * *\"\njob = \"backup\"\n";
        assert!(err(&format!("{MIN}{job}crn = \"x\"\n")).contains("crn"));
        assert!(err(&format!("{MIN}{job}targets = [\"nope\"]\n")).contains("`nope`"));
        assert!(err(&format!("{MIN}{job}prune_after = true\n")).contains("[retention]"));
        assert!(err(&format!("{MIN}{job}timezone = \"Mars/Olympus\"\n")).contains("Mars/Olympus"));
        assert!(err(&MIN.replace(
            "[[targets]]",
            "[daemon]\nmax_concurrent_jobs = 0\n[[targets]]"
        ))
        .contains("max_concurrent_jobs"));
        let e = err(&format!(
            "{MIN}\n[[schedules]]\nname = \"n\"\ncron = \"0 3 * * *\"\njob = \"vacuum\"\n"
        ));
        assert!(e.contains("vacuum"), "{e}");
    }

    #[test]
    fn a_schedule_file_error_names_the_file() {
        let e = ScheduleConfig::from_toml_str(
            "name = \"n\"\ncron = \"0 3 * * *\"\njob = \"backup\"\nprune = true\n",
            Path::new("/etc/dr/schedules/n.toml"),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            e.contains("/etc/dr/schedules/n.toml") && e.contains("prune"),
            "{e}"
        );
    }

    #[test]
    fn notify_urls_are_checked_without_echoing_them() {
        let e = err(&format!(
            "{MIN}\n[notify]\nwebhook_url = \"ftp://secret-token@host\"\n"
        ));
        assert!(
            e.contains("notify.webhook_url") && !e.contains("secret-token"),
            "{e}"
        );
        let mut c = Config::from_toml_str(MIN, None).expect("parses");
        c.apply_env(|k| (k == env::WEBHOOK_URL).then(|| "http://127.0.0.1:9/hook".to_string()))
            .expect("valid");
        assert_eq!(
            c.notify.webhook_url.as_deref(),
            Some("http://127.0.0.1:9/hook")
        );
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
