//! The jobs of `dr daemon`: `[[schedules]]` and `schedules/*.toml` turned into validated
//! [`Job`]s, the cron expression parsed here ([`dr_catalog::schedule`]), so a bad one fails
//! at load naming the file, the schedule and what is wrong — for `dr daemon` and for
//! `dr status` and `dr check` alike. Also what a start needs for them ([`preflight`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dr_catalog::schedule::Schedule;

use crate::{Config, ConfigError, JobKind, ScheduleConfig};

type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// An error in the schedules as a whole (not one schedule's own): `path` is the file
/// that says so.
fn invalid(path: Option<&Path>, message: String, hint: &str) -> ConfigError {
    ConfigError::Invalid {
        path: path.map(Path::to_path_buf),
        message,
        hint: hint.to_string(),
    }
}

/// One scheduled job, validated.
#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    /// Where it was defined: a file, or the config file.
    pub source: PathBuf,
    pub schedule: Schedule,
    pub kind: JobKind,
    /// Target names (already expanded: never empty).
    pub targets: Vec<String>,
    pub prune_after: bool,
    /// `copy` jobs: the copies to copy to (already expanded: never empty). `verify` and
    /// `prune` jobs: the copies to run on instead of the primary (empty: the primary).
    pub copies: Vec<String>,
}

impl Job {
    fn from_config(s: &ScheduleConfig, config: &Config, source: &Path) -> Result<Job> {
        s.validate(config, Some(source))?;
        let tz = s.timezone.as_deref().unwrap_or("UTC");
        let schedule = Schedule::parse(&s.cron, tz).map_err(|source_| ConfigError::Schedule {
            path: source.to_path_buf(),
            name: s.name.clone(),
            source: source_,
        })?;
        let targets = if s.targets.is_empty() {
            // Base backups: every target whose WAL is archived (validated: at least one).
            config
                .targets
                .iter()
                .filter(|t| {
                    !matches!(s.job, JobKind::BaseBackup | JobKind::Drill) || t.wal.is_some()
                })
                .map(|t| t.name.clone())
                .collect()
        } else {
            s.targets.clone()
        };
        Ok(Job {
            name: s.name.clone(),
            source: source.to_path_buf(),
            schedule,
            kind: s.job,
            targets,
            prune_after: s.prune_after,
            copies: if s.job == JobKind::Copy && s.copies.is_empty() {
                config.copies.iter().map(|c| c.name.clone()).collect()
            } else {
                s.copies.clone()
            },
        })
    }
}

/// The daemon's jobs: every schedule ([`load_schedules`]), and at least one, for at least
/// one target.
pub fn load_jobs(config: &Config) -> Result<Vec<Job>> {
    if config.targets.is_empty() {
        return Err(invalid(
            config.source.as_deref(),
            "no [[targets]] are configured: the daemon would have nothing to do".into(),
            "add a [[targets]] section with name and url",
        ));
    }
    let jobs = load_schedules(config)?;
    if jobs.is_empty() {
        return Err(invalid(
            config.source.as_deref(),
            format!(
                "no schedules: {} has no *.toml job files and dr.toml has no [[schedules]]",
                config.schedules_dir().0.display()
            ),
            "copy the examples from schedules/ in the dr repository, or add e.g.\n  [[schedules]]\n  name = \"nightly-backup\"\n  cron = \"0 3 * * *\"\n  job = \"backup\"",
        ));
    }
    Ok(jobs)
}

/// Every schedule, validated with its cron expression parsed: `[[schedules]]` in the config,
/// then `*.toml` in the schedules directory (in name order). Names must be unique. None is
/// fine here (cron or a timer may run dr): `dr status` and `dr check` judge what exists, and
/// fail on what `dr daemon` would refuse.
pub fn load_schedules(config: &Config) -> Result<Vec<Job>> {
    let config_path = config
        .source
        .clone()
        .unwrap_or_else(|| PathBuf::from("dr.toml"));
    let mut jobs = Vec::new();
    for s in &config.schedules {
        jobs.push(Job::from_config(s, config, &config_path)?);
    }
    let (dir, explicit) = config.schedules_dir();
    match std::fs::read_dir(&dir) {
        Ok(rd) => {
            let mut files: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
                .collect();
            files.sort();
            for f in files {
                let s = ScheduleConfig::load(&f)?;
                jobs.push(Job::from_config(&s, config, &f)?);
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {}
        Err(e) => {
            return Err(invalid(
                config.source.as_deref(),
                format!("cannot read the schedules directory {}: {e}", dir.display()),
                "create it, or set daemon.schedules_dir",
            ))
        }
    }
    let mut seen: BTreeMap<&str, &Path> = BTreeMap::new();
    for j in &jobs {
        if let Some(first) = seen.insert(&j.name, &j.source) {
            return Err(invalid(
                Some(&j.source),
                format!(
                    "schedule `{}` is defined twice: in {} and in {}",
                    j.name,
                    first.display(),
                    j.source.display()
                ),
                "give every schedule a unique name",
            ));
        }
    }
    Ok(jobs)
}

/// What `dr daemon` checks before it starts, and `dr daemon --dry-run` with it: a dry run
/// that passes means the start passes these too.
pub fn preflight(config: &Config, jobs: &[Job]) -> Result<()> {
    verify_jobs_without_identity(config, jobs)
}

/// Verify jobs need the private identity: without one every run fails at its time, so say it
/// at start (the daemon) and in `dr check`, not at 4 a.m. Pure.
pub fn verify_jobs_without_identity(config: &Config, jobs: &[Job]) -> Result<()> {
    if config.encryption.identity_file.is_some() {
        return Ok(());
    }
    let names: Vec<String> = jobs
        .iter()
        .filter(|j| matches!(j.kind, JobKind::Verify | JobKind::Drill))
        .map(|j| format!("`{}` ({})", j.name, j.source.display()))
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    Err(invalid(
        config.source.as_deref(),
        format!(
            "verify job {} needs the age identity, and none is configured",
            names.join(", ")
        ),
        "set encryption.identity_file (or DR_IDENTITY_FILE) on this host, or remove the verify job",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path, extra: &str) -> Config {
        let path = dir.join("dr.toml");
        let text = format!(
            r#"
[repository]
url = "file:///tmp/nowhere"
[encryption]
recipients = ["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"]
[retention]
daily = 7
[[targets]]
name = "app"
url = "postgres://u@127.0.0.1:1/app"
[[targets]]
name = "db"
url = "postgres://u@127.0.0.1:1/db"
{extra}
"#
        );
        std::fs::write(&path, &text).expect("write");
        Config::load(&path).expect("config")
    }

    fn err(c: &Config) -> String {
        load_jobs(c)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn jobs_come_from_files_and_the_config() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::create_dir(dir.path().join("schedules")).expect("mkdir");
        std::fs::write(
            dir.path().join("schedules/nightly.toml"),
            "name = \"nightly\"\ncron = \"0 3 * * *\"\ntimezone = \"Europe/Berlin\"\njob = \"backup\"\ntargets = []\nprune_after = true\n",
        )
        .expect("write");
        std::fs::write(dir.path().join("schedules/README.md"), "not a job").expect("write");
        let c = config(
            dir.path(),
            "[[schedules]]\nname = \"weekly\"\ncron = \"0 5 * * 7\"\njob = \"verify\"\ntargets = [\"db\"]\n",
        );
        let jobs = load_jobs(&c).expect("jobs");
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].name, "weekly");
        assert_eq!(jobs[0].targets, ["db"]);
        assert_eq!(jobs[1].targets, ["app", "db"]);
        assert!(jobs[1].prune_after);
        assert_eq!(jobs[1].schedule.timezone(), chrono_tz::Europe::Berlin);
    }

    #[test]
    fn the_shipped_examples_load() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schedules");
        let dir = tempfile::tempdir().expect("tmp");
        let c = config(
            dir.path(),
            &format!("[daemon]\nschedules_dir = \"{}\"\n", root.display()),
        );
        let jobs = load_jobs(&c).expect("the files in schedules/ load");
        assert!(jobs.iter().any(|j| j.kind == JobKind::Backup));
        // The backup host's files need no identity; the verify host's load, and need one.
        assert!(preflight(&c, &jobs).is_ok());
        let c = config(
            dir.path(),
            &format!(
                "[daemon]\nschedules_dir = \"{}\"\n",
                root.join("verify-host").display()
            ),
        );
        let jobs = load_jobs(&c).expect("the files in schedules/verify-host/ load");
        assert!(jobs.iter().all(|j| j.kind == JobKind::Verify));
        assert!(preflight(&c, &jobs).is_err());
    }

    #[test]
    fn mistakes_name_the_file() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::create_dir(dir.path().join("schedules")).expect("mkdir");
        let file = dir.path().join("schedules/bad.toml");
        std::fs::write(
            &file,
            "name = \"bad\"\ncron = \"0 3 * *\"\njob = \"backup\"\n",
        )
        .expect("w");
        let e = err(&config(dir.path(), ""));
        assert!(e.contains("bad.toml") && e.contains("`0 3 * *`"), "{e}");

        std::fs::write(
            &file,
            "name = \"bad\"\ncron = \"0 3 * * *\"\njob = \"backup\"\nevery = 1\n",
        )
        .expect("w");
        let e = err(&config(dir.path(), ""));
        assert!(e.contains("bad.toml") && e.contains("every"), "{e}");

        std::fs::write(
            &file,
            "name = \"dup\"\ncron = \"0 3 * * *\"\njob = \"backup\"\n",
        )
        .expect("w");
        let e = err(&config(
            dir.path(),
            "[[schedules]]\nname = \"dup\"\ncron = \"@daily\"\njob = \"prune\"\n",
        ));
        assert!(e.contains("defined twice") && e.contains("bad.toml"), "{e}");
    }

    #[test]
    fn a_bad_cron_fails_at_load_naming_file_schedule_and_reason() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::create_dir(dir.path().join("schedules")).expect("mkdir");
        std::fs::write(
            dir.path().join("schedules/nightly.toml"),
            "name = \"nightly\"\ncron = \"0 25 * * *\"\njob = \"backup\"\n",
        )
        .expect("w");
        let c = config(dir.path(), "");
        let e = load_schedules(&c).expect_err("bad cron");
        assert!(
            matches!(&e, ConfigError::Schedule { name, path, .. } if name == "nightly" && path.ends_with("schedules/nightly.toml")),
            "{e:?}"
        );
        let text = e.to_string();
        assert!(text.contains("`0 25 * * *`"), "{text}");
        // The next step is a field, never part of the message.
        assert!(!text.contains("hint:"), "{text}");
        assert!(e.hint().is_some_and(|h| h.contains("5 fields")), "{e:?}");
    }

    #[test]
    fn no_schedules_is_fine_for_status_and_check_not_for_the_daemon() {
        let dir = tempfile::tempdir().expect("tmp");
        let c = config(dir.path(), "");
        assert!(load_schedules(&c).expect("none").is_empty());
        assert!(load_jobs(&c).is_err());
    }

    #[test]
    fn no_jobs_or_a_missing_configured_dir_is_an_error() {
        let dir = tempfile::tempdir().expect("tmp");
        assert!(err(&config(dir.path(), "")).contains("no schedules"));
        let e = err(&config(dir.path(), "[daemon]\nschedules_dir = \"nope\"\n"));
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn a_verify_job_without_the_identity_is_refused_by_name() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut c = config(
            dir.path(),
            "[[schedules]]\nname = \"weekly-verify\"\ncron = \"@weekly\"\njob = \"verify\"\n\n[[schedules]]\nname = \"nightly\"\ncron = \"@daily\"\njob = \"backup\"\n",
        );
        let jobs = load_jobs(&c).expect("jobs");
        let err = verify_jobs_without_identity(&c, &jobs).expect_err("no identity");
        let e = err.to_string();
        assert!(
            e.contains("`weekly-verify`") && !e.contains("nightly"),
            "{e}"
        );
        assert!(
            err.hint().is_some_and(|h| h.contains("identity_file")),
            "{err:?}"
        );
        c.encryption.identity_file = Some(dir.path().join("key.txt"));
        assert!(verify_jobs_without_identity(&c, &jobs).is_ok());
        let backups_only: Vec<Job> = jobs
            .into_iter()
            .filter(|j| !matches!(j.kind, JobKind::Verify))
            .collect();
        c.encryption.identity_file = None;
        assert!(verify_jobs_without_identity(&c, &backups_only).is_ok());
    }
}
