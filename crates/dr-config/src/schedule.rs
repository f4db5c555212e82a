//! A job of `dr daemon`: `[[schedules]]` in dr.toml, or one file in `schedules/`.

use std::path::Path;

use serde::Deserialize;

use crate::{Config, ConfigError};

/// What a scheduled job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// A logical backup (`dr backup`).
    Backup,
    /// A physical base backup (`dr backup --physical`) of a target with `[targets.wal]`.
    #[serde(rename = "base-backup")]
    BaseBackup,
    Verify,
    /// A drill (`dr verify --pitr`) of a target with `[targets.wal]`: its newest base backup
    /// and WAL recovered in a sandbox and proven.
    Drill,
    Prune,
    /// Copy new backups to the `[[copies]]` repositories (`dr copy`).
    Copy,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Backup => "backup",
            JobKind::BaseBackup => "base-backup",
            JobKind::Verify => "verify",
            JobKind::Drill => "drill",
            JobKind::Prune => "prune",
            JobKind::Copy => "copy",
        }
    }
}

impl std::fmt::Display for JobKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One job of `dr daemon`: a `[[schedules]]` entry in dr.toml, or a file in `schedules/`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    pub name: String,
    /// Standard crontab: `minute hour day-of-month month day-of-week` (optionally a leading
    /// seconds field), or `@daily`, `@weekly`, ...
    pub cron: String,
    /// IANA zone `cron` is read in. Default UTC.
    pub timezone: Option<String>,
    pub job: JobKind,
    /// Target names; empty: every target.
    #[serde(default)]
    pub targets: Vec<String>,
    /// `backup` jobs: apply `[retention]` to a target after its backup succeeds.
    #[serde(default)]
    pub prune_after: bool,
    /// `copy` jobs: the `[[copies]]` to copy to (empty: every one). `verify` and `prune`
    /// jobs: verify or prune these copies instead of the primary.
    #[serde(default)]
    pub copies: Vec<String>,
}

impl ScheduleConfig {
    /// Parse one job file (`schedules/NAME.toml`); errors name the file.
    pub fn from_toml_str(text: &str, path: &Path) -> Result<ScheduleConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: Some(path.to_path_buf()),
            message: e.to_string(),
        })
    }

    /// Read and parse one job file.
    pub fn load(path: &Path) -> Result<ScheduleConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        ScheduleConfig::from_toml_str(&text, path)
    }

    /// Checks that need only the config: name, zone, targets, prune_after.
    pub fn validate(&self, config: &Config, path: Option<&Path>) -> Result<(), ConfigError> {
        let invalid = |message: String, hint: &str| ConfigError::Invalid {
            path: path
                .map(Path::to_path_buf)
                .or_else(|| config.source.clone()),
            message,
            hint: hint.to_string(),
        };
        if self.name.is_empty() {
            return Err(invalid(
                "a schedule has an empty name".into(),
                "give every schedule a name, e.g. name = \"nightly-backup\"",
            ));
        }
        if let Some(tz) = &self.timezone {
            if tz.parse::<chrono_tz::Tz>().is_err() {
                return Err(invalid(
                    format!(
                        "schedule `{}`: timezone `{tz}` is not an IANA time zone",
                        self.name
                    ),
                    "write e.g. timezone = \"Europe/Berlin\" or \"UTC\"",
                ));
            }
        }
        for t in &self.targets {
            if !config.targets.iter().any(|c| &c.name == t) {
                return Err(invalid(
                    format!(
                        "schedule `{}` names target `{t}`, which is not configured",
                        self.name
                    ),
                    "use a name from the [[targets]] in dr.toml, or targets = [] for all of them",
                ));
            }
        }
        if matches!(self.job, JobKind::BaseBackup | JobKind::Drill) {
            let with_wal = |name: &str| {
                config
                    .targets
                    .iter()
                    .any(|c| c.name == name && c.wal.is_some())
            };
            if let Some(t) = self.targets.iter().find(|t| !with_wal(t)) {
                return Err(invalid(
                    format!(
                        "schedule `{}`: target `{t}` has no [targets.wal], and a {} without archived WAL recovers nothing",
                        self.name,
                        self.job
                    ),
                    "add [targets.wal] to the target (docs/CONFIGURATION.md), or schedule job = \"backup\" for it",
                ));
            }
            if self.targets.is_empty() && !config.targets.iter().any(|c| c.wal.is_some()) {
                return Err(invalid(
                    format!(
                        "schedule `{}` runs {} jobs, but no target has [targets.wal]",
                        self.name, self.job
                    ),
                    "add [targets.wal] to a target (docs/CONFIGURATION.md), or remove the schedule",
                ));
            }
        }
        for c in &self.copies {
            if !config.copies.iter().any(|k| &k.name == c) {
                return Err(invalid(
                    format!(
                        "schedule `{}` names copy `{c}`, which is not configured",
                        self.name
                    ),
                    "use a name from the [[copies]] in dr.toml",
                ));
            }
        }
        if !self.copies.is_empty()
            && !matches!(self.job, JobKind::Copy | JobKind::Verify | JobKind::Prune)
        {
            return Err(invalid(
                format!(
                    "schedule `{}`: copies applies only to job = \"copy\", \"verify\" or \"prune\"",
                    self.name
                ),
                "remove copies, or schedule a separate job = \"copy\"",
            ));
        }
        if self.job == JobKind::Copy && config.copies.is_empty() {
            return Err(invalid(
                format!("schedule `{}` copies backups, but no [[copies]] is configured", self.name),
                "add a [[copies]] section with name and url (docs/CONFIGURATION.md, \"Copies\"), or remove the schedule",
            ));
        }
        if self.prune_after && !matches!(self.job, JobKind::Backup | JobKind::BaseBackup) {
            return Err(invalid(
                format!(
                    "schedule `{}`: prune_after applies only to job = \"backup\" or \"base-backup\"",
                    self.name
                ),
                "remove prune_after, or schedule a separate job = \"prune\"",
            ));
        }
        if (self.prune_after || self.job == JobKind::Prune) && !config.retention.is_configured() {
            return Err(invalid(
                format!("schedule `{}` prunes, but no [retention] is configured", self.name),
                "add a [retention] section to dr.toml (e.g. daily = 7, weekly = 4, monthly = 12), or set prune_after = false",
            ));
        }
        Ok(())
    }
}
