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

use std::path::{Path, PathBuf};

use serde::Deserialize;

mod copies;
mod daemon;
pub mod env;
pub mod jobs;
mod operations;
mod repository;
mod schedule;
mod signing;
mod targets;
mod validate;
mod values;
mod wal;

pub use copies::CopyConfig;
pub use daemon::{DaemonConfig, NotifyConfig, StatusConfig};
pub use operations::{
    default_backup_jobs, BackupConfig, LockConfig, RestoreConfig, RetentionConfig, VerifyAssert,
    VerifyConfig, MAX_BACKUP_JOBS, MIN_LOCK_TTL_SECS,
};
pub use repository::{EncryptionConfig, RepositoryConfig};
pub use schedule::{JobKind, ScheduleConfig};
pub use signing::SigningConfig;
pub use targets::{Databases, Expansion, SharedGlobals, TargetConfig};
pub use values::{url_holds_password, Duration, PASSWORD_HINT};
pub use wal::{
    WalConfig, WalMode, DEFAULT_ARCHIVE_WAIT, DEFAULT_MAX_LAG, DEFAULT_PARTIAL_UPLOAD_SECS,
};

/// Default location of the configuration file when neither `--config` nor `DR_CONFIG` is set.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/dr/dr.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config{}: {message}", path_suffix(.path))]
    Parse {
        path: Option<PathBuf>,
        message: String,
    },
    #[error("invalid config{}: {message}", path_suffix(.path))]
    Invalid {
        path: Option<PathBuf>,
        message: String,
        hint: String,
    },
    /// A cron expression or time zone the daemon cannot run (see [`jobs`]).
    #[error("invalid schedule `{name}` in {}: {source}", .path.display())]
    Schedule {
        path: PathBuf,
        name: String,
        source: dr_catalog::schedule::ScheduleError,
    },
}

impl ConfigError {
    /// The next step for the operator (never part of the message).
    pub fn hint(&self) -> Option<String> {
        match self {
            ConfigError::Read { .. } => Some("pass --config FILE or set DR_CONFIG".into()),
            ConfigError::Parse { .. } => None,
            ConfigError::Invalid { hint, .. } => Some(hint.clone()),
            ConfigError::Schedule { source, .. } => source.hint(),
        }
    }
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
    /// `[[copies]]`: second repositories `dr copy` copies backups to.
    #[serde(default)]
    pub copies: Vec<CopyConfig>,
    /// Jobs for `dr daemon`, besides those in `daemon.schedules_dir`.
    #[serde(default)]
    pub schedules: Vec<ScheduleConfig>,
    /// Where the file was read from, for messages.
    #[serde(skip)]
    pub source: Option<PathBuf>,
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

    pub(crate) fn invalid(
        &self,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            path: self.source.clone(),
            message: message.into(),
            hint: hint.into(),
        }
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
        let Some((server, db)) = dr_catalog::members::split(name) else {
            return Ok(None);
        };
        let Some(s) = self
            .targets
            .iter()
            .find(|t| t.name == server && t.is_server())
        else {
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

    pub(crate) const MIN: &str = r#"
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

    pub(crate) fn err(text: &str) -> String {
        match Config::from_toml_str(text, None) {
            Ok(_) => panic!("expected an error"),
            // The message and its hint, as the operator sees them.
            Err(e) => match e.hint() {
                Some(h) => format!("{e}\nhint: {h}"),
                None => e.to_string(),
            },
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
    fn prove_within_is_a_duration_of_at_least_an_hour() {
        let c = Config::from_toml_str(&format!("{MIN}\n[verify]\nprove_within = \"30d\"\n"), None)
            .expect("parses");
        assert_eq!(
            c.verify.prove_within.map(|d| d.as_secs()),
            Some(30 * 86_400)
        );
        let e = err(&format!("{MIN}\n[verify]\nprove_within = \"10m\"\n"));
        assert!(e.contains("verify.prove_within = 10m"), "{e}");
        let e = err(&format!("{MIN}\n[verify]\nprove_within = \"soon\"\n"));
        assert!(e.contains("soon"), "{e}");
    }

    #[test]
    fn a_typo_names_the_key() {
        let e = err(&MIN.replace("path_style", "path_styel"));
        assert!(e.contains("path_styel"), "{e}");
    }

    #[test]
    fn select_unknown_target_lists_known_ones() {
        let c = Config::from_toml_str(MIN, None).expect("parses");
        let e = c.select_targets(Some("nope")).err().and_then(|e| e.hint());
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
        // Base backups need archived WAL.
        let base = "\n[[schedules]]\nname = \"b\"\ncron = \"0 2 * * *\"\njob = \"base-backup\"\n";
        let e = err(&format!("{MIN}{base}"));
        assert!(e.contains("no target has [targets.wal]"), "{e}");
        let e = err(&format!("{MIN}{base}targets = [\"app\"]\n"));
        assert!(e.contains("`app` has no [targets.wal]"), "{e}");
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
}
