//! `[targets.wal]`: continuous WAL archiving of a target's cluster (`docs/design/PITR.md`).
//! Present: the target's WAL goes to `{target}/wal/`, by PostgreSQL's `archive_command`
//! (`dr wal push`) or by `dr wal stream`.

use serde::Deserialize;

use crate::Duration;

/// `partial_upload_secs` unless set.
pub const DEFAULT_PARTIAL_UPLOAD_SECS: u64 = 30;
/// `max_lag` unless set.
pub const DEFAULT_MAX_LAG: Duration = Duration::from_secs(300);
/// `archive_wait` unless set: pgBackRest's `archive-timeout` default.
pub const DEFAULT_ARCHIVE_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalConfig {
    /// How WAL reaches the repository; required (there is no safe guess: each mode needs a
    /// different server setup). Always `Some` once the config is validated: use [`WalConfig::mode`].
    pub mode: Option<WalMode>,
    /// Stream mode: the growing segment is uploaded at least this often, so a commit is off
    /// the host within it even when the server dies and never switches segments.
    #[serde(default = "default_partial_upload_secs")]
    pub partial_upload_secs: u64,
    /// `dr status` exits 8 when the newest stored WAL is older than this.
    #[serde(default = "default_max_lag")]
    pub max_lag: Duration,
    /// `dr backup --physical` waits this long for the WAL from its start to its stop to be
    /// archived before it gives up (no manifest, exit 3).
    #[serde(default = "default_archive_wait")]
    pub archive_wait: Duration,
    /// Stream mode: where pg_receivewal writes before dr uploads. The replication slot
    /// advances with what lands here, so it must survive a restart (a volume, not tmpfs).
    #[serde(default)]
    pub spool_dir: Option<std::path::PathBuf>,
}

/// `[targets.wal] mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WalMode {
    /// PostgreSQL runs `archive_command = 'dr wal push %p'` for each completed file.
    Archive,
    /// `dr wal stream` receives WAL over a replication connection (pg_receivewal).
    Stream,
}

fn default_partial_upload_secs() -> u64 {
    DEFAULT_PARTIAL_UPLOAD_SECS
}

fn default_max_lag() -> Duration {
    DEFAULT_MAX_LAG
}

fn default_archive_wait() -> Duration {
    DEFAULT_ARCHIVE_WAIT
}

/// Where `spool_dir` is unless set: `/var/lib/dr/wal/{target}` (systemd's
/// `StateDirectory=dr`, the image's volume).
pub const DEFAULT_SPOOL_ROOT: &str = "/var/lib/dr/wal";

impl WalConfig {
    /// Stream mode's spool of target `target`.
    pub fn spool_dir(&self, target: &str) -> std::path::PathBuf {
        self.spool_dir
            .clone()
            .unwrap_or_else(|| std::path::Path::new(DEFAULT_SPOOL_ROOT).join(target))
    }

    /// The mode (validation guarantees it is set).
    pub fn mode(&self) -> WalMode {
        self.mode.unwrap_or(WalMode::Archive)
    }

    /// The rules of `[targets.wal]` of target `target`: the message and its hint.
    pub(crate) fn validate(&self, target: &str) -> Result<(), (String, String)> {
        if self.mode.is_none() {
            return Err((
                format!("target `{target}`: [targets.wal] has no mode"),
                "add mode = \"archive\" (PostgreSQL's archive_command runs `dr wal push %p`) \
                 or mode = \"stream\" (`dr wal stream` receives WAL over replication)"
                    .into(),
            ));
        }
        if !(1..=3600).contains(&self.partial_upload_secs) {
            return Err((
                format!(
                    "target `{target}`: wal.partial_upload_secs = {} is out of range",
                    self.partial_upload_secs
                ),
                format!(
                    "use 1 to 3600 seconds (the default is {DEFAULT_PARTIAL_UPLOAD_SECS}): \
                     it bounds how much committed WAL a dead host can lose"
                ),
            ));
        }
        if !(5..=86_400).contains(&self.archive_wait.as_secs()) {
            return Err((
                format!(
                    "target `{target}`: wal.archive_wait = {} is out of range",
                    self.archive_wait
                ),
                format!(
                    "use \"5s\" to \"24h\" (the default is \"{DEFAULT_ARCHIVE_WAIT}\"): how long a base backup waits for its WAL"
                ),
            ));
        }
        if self.max_lag.as_secs() < 60 {
            return Err((
                format!(
                    "target `{target}`: wal.max_lag = {} is too short",
                    self.max_lag
                ),
                format!(
                    "use at least \"1m\" (the default is \"{DEFAULT_MAX_LAG}\"): a quiet server \
                     switches segments only every archive_timeout"
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{err, MIN};
    use crate::Config;

    fn with_wal(table: &str) -> String {
        format!("{MIN}[targets.wal]\n{table}\n")
    }

    #[test]
    fn a_wal_table_with_only_a_mode_takes_the_defaults() {
        let c = Config::from_toml_str(&with_wal("mode = \"archive\""), None).expect("parses");
        let wal = c.targets[0].wal.as_ref().expect("configured");
        assert_eq!(wal.mode(), WalMode::Archive);
        assert_eq!(wal.partial_upload_secs, 30);
        assert_eq!(wal.max_lag, Duration::from_secs(300));
        assert_eq!(wal.archive_wait, Duration::from_secs(60));
        let none = Config::from_toml_str(MIN, None).expect("parses");
        assert!(none.targets[0].wal.is_none());
    }

    #[test]
    fn every_setting_is_read() {
        let c = Config::from_toml_str(
            &with_wal("mode = \"stream\"\npartial_upload_secs = 10\nmax_lag = \"15m\""),
            None,
        )
        .expect("parses");
        let wal = c.targets[0].wal.as_ref().expect("configured");
        assert_eq!(wal.mode(), WalMode::Stream);
        assert_eq!(wal.partial_upload_secs, 10);
        assert_eq!(wal.max_lag.as_secs(), 900);
    }

    #[test]
    fn mistakes_are_named_with_the_next_step() {
        let e = err(&with_wal("max_lag = \"5m\""));
        assert!(e.contains("has no mode") && e.contains("hint:"), "{e}");
        assert!(e.contains("mode = \"archive\""), "{e}");
        assert!(err(&with_wal("mode = \"strem\"")).contains("strem"));
        for bad in ["0", "3601"] {
            let e = err(&with_wal(&format!(
                "mode = \"stream\"\npartial_upload_secs = {bad}"
            )));
            assert!(
                e.contains("partial_upload_secs") && e.contains("1 to 3600"),
                "{e}"
            );
        }
        let e = err(&with_wal("mode = \"archive\"\nmax_lag = \"10s\""));
        assert!(e.contains("max_lag = 10s") && e.contains("hint:"), "{e}");
        let e = err(&with_wal("mode = \"archive\"\nmax_lag = \"5 minutes\""));
        assert!(e.contains("unknown unit"), "{e}");
        let e = err(&with_wal("mode = \"archive\"\nmax_lga = \"5m\""));
        assert!(e.contains("max_lga"), "{e}");
    }
}
