//! The checks of a parsed `dr.toml` that need no network: names, URLs, secrets, ranges.
//! The backend options of `[repository]` are checked by dr-store, `[signing]` and
//! `[[schedules]]` by their own modules; the tests of each rule are next to its section.

use std::collections::BTreeSet;

use crate::operations::{MAX_BACKUP_JOBS, MIN_LOCK_TTL_SECS};
use crate::values::{url_holds_password, PASSWORD_HINT};
use crate::{Config, ConfigError};
use dr_catalog::members::valid_configured_name;

impl Config {
    /// Checks that need no network: names, URLs, secrets, ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_repository()?;
        self.validate_copies()?;
        self.validate_targets()?;
        self.validate_operations()?;
        self.validate_notify_and_daemon()?;
        for s in &self.schedules {
            s.validate(self, None)?;
        }
        if let Some(s) = &self.signing {
            s.validate().map_err(|(m, h)| self.invalid(m, h))?;
        }
        Ok(())
    }

    /// `[repository]` and `[encryption]`: where backups go and who can read them.
    fn validate_repository(&self) -> Result<(), ConfigError> {
        // The schemes and their options belong to dr-store.
        if let Err(e) = self.repository.location() {
            return Err(self.invalid(
                e.to_string(),
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
        Ok(())
    }

    /// `[[targets]]`: unique valid names (they become object keys) and password-free URLs.
    fn validate_targets(&self) -> Result<(), ConfigError> {
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
            if let Some(wal) = &t.wal {
                wal.validate(&t.name).map_err(|(m, h)| self.invalid(m, h))?;
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
        Ok(())
    }

    /// `[backup]`, `[lock]`, `[retention]`: ranges.
    fn validate_operations(&self) -> Result<(), ConfigError> {
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
        if let Some(d) = self.verify.prove_within {
            if d.as_secs() < 3600 {
                return Err(self.invalid(
                    format!("verify.prove_within = {d} is shorter than a verification takes to come round"),
                    "use days, e.g. \"30d\" (at least \"1h\"), and schedule verify often enough to prove every retained backup in that time",
                ));
            }
        }
        if let Some(tz) = &self.retention.timezone {
            if tz.parse::<chrono_tz::Tz>().is_err() {
                return Err(self.invalid(
                    format!("retention.timezone `{tz}` is not an IANA time zone"),
                    "write e.g. timezone = \"Europe/Berlin\" or \"UTC\"",
                ));
            }
        }
        Ok(())
    }

    /// `[notify]` and `[daemon]`: URLs (never echoed) and addresses.
    fn validate_notify_and_daemon(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }
}
