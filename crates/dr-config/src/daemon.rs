//! What runs unattended: `[daemon]` (`dr daemon`), `[notify]` (webhooks, pings, metrics
//! files) and `[status]` (when `dr status` calls a backup too old). The jobs themselves are
//! in [`crate::schedule`].

use std::path::PathBuf;

use serde::Deserialize;

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
    /// Directory of job files (`*.toml`, one [`ScheduleConfig`](crate::ScheduleConfig) each). Relative paths are
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

#[cfg(test)]
mod tests {
    use crate::tests::{err, MIN};
    use crate::{env, Config};

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
}
