//! `[[copies]]`: second repositories that hold copies of the primary's backups (another
//! provider, another account, a directory on another host), so that losing the primary's
//! account, region or bucket does not lose every backup.
//!
//! ```toml
//! [[copies]]
//! name = "offsite"
//! url = "s3://dr-copy/prod"
//! [copies.s3]                  # the backend options, as [repository] has them
//! endpoint = "https://ACCOUNT.r2.cloudflarestorage.com"
//! region = "auto"
//! [copies.object_lock]         # the copy's own Object Lock (optional)
//! mode = "compliance"
//! days = 30
//! [copies.retention]           # the copy's own retention [default: the primary's]
//! daily = 14
//! ```
//!
//! Credentials never go here: each copy reads its own from the environment
//! (`DR_COPY_<NAME>_AWS_ACCESS_KEY_ID`, … see [`crate::env::copy_var`]), falling back to the
//! AWS chain the primary uses when they are absent.

use std::collections::BTreeSet;

use serde::Deserialize;

use crate::{env, Config, ConfigError, RepositoryConfig, RetentionConfig};

/// One `[[copies]]` entry.
#[derive(Debug, Clone, Deserialize)]
pub struct CopyConfig {
    /// How the copy is named on the command line (`dr copy --to NAME`, `--from-copy NAME`)
    /// and in the environment (`DR_COPY_<NAME>_…`).
    pub name: String,
    /// `[copies.retention]`: how many backups the copy keeps; the primary's `[retention]`
    /// when absent.
    pub retention: Option<RetentionConfig>,
    /// The URL and backend options, exactly as `[repository]` takes them (including
    /// `[copies.object_lock]`).
    #[serde(flatten)]
    pub repository: RepositoryConfig,
}

impl CopyConfig {
    /// The prefix of this copy's environment variables: `DR_COPY_<NAME>_` with the name in
    /// capitals and `-` as `_`.
    pub fn env_prefix(&self) -> String {
        env::copy_prefix(&self.name)
    }

    /// The retention the copy applies: its own, else the primary's.
    pub fn retention<'a>(&'a self, config: &'a Config) -> &'a RetentionConfig {
        self.retention.as_ref().unwrap_or(&config.retention)
    }
}

impl Config {
    /// The copy named `name`, or an error naming the configured ones.
    pub fn copy(&self, name: &str) -> Result<&CopyConfig, ConfigError> {
        self.copies.iter().find(|c| c.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.copies.iter().map(|c| c.name.as_str()).collect();
            self.invalid(
                format!("no copy named `{name}` is configured"),
                if names.is_empty() {
                    "add a [[copies]] section with name and url (docs/CONFIGURATION.md, \"Copies\")"
                        .to_string()
                } else {
                    format!("configured copies: {}", names.join(", "))
                },
            )
        })
    }

    /// The copies selected by `--to NAME` (or every one).
    pub fn select_copies(&self, name: Option<&str>) -> Result<Vec<&CopyConfig>, ConfigError> {
        match name {
            Some(n) => Ok(vec![self.copy(n)?]),
            None if self.copies.is_empty() => Err(self.invalid(
                "no [[copies]] are configured",
                "add a [[copies]] section with name and url (docs/CONFIGURATION.md, \"Copies\")",
            )),
            None => Ok(self.copies.iter().collect()),
        }
    }

    /// This config as seen from copy `name`: its `[repository]` is the copy's (with the
    /// copy's credentials variables), its `[retention]` the copy's, and it has no copies.
    /// Every command run on it (restore, verify, prune, list) reads and writes the copy.
    pub fn for_copy(&self, name: &str) -> Result<Config, ConfigError> {
        let copy = self.copy(name)?.clone();
        let mut config = self.clone();
        config.retention = copy.retention(self).clone();
        config.repository = copy.repository.clone();
        config.repository.credentials_env = Some(copy.env_prefix());
        config.copies.clear();
        Ok(config)
    }

    /// `[[copies]]`: names valid and unique (also as environment names), URLs valid, none
    /// the primary itself.
    pub(crate) fn validate_copies(&self) -> Result<(), ConfigError> {
        let mut names = BTreeSet::new();
        let mut prefixes = BTreeSet::new();
        let primary = self.repository.location().ok().map(|l| l.to_string());
        for c in &self.copies {
            if !dr_catalog::members::valid_configured_name(&c.name) {
                return Err(self.invalid(
                    format!("copy name `{}` is not valid", c.name),
                    "use 1-64 letters, digits, `-` or `_` (it becomes part of environment variable names)",
                ));
            }
            if !names.insert(c.name.as_str()) || !prefixes.insert(c.env_prefix()) {
                return Err(self.invalid(
                    format!(
                        "copy `{}` is defined twice (names are compared as their environment prefix {}…)",
                        c.name,
                        c.env_prefix()
                    ),
                    "give each [[copies]] a unique name",
                ));
            }
            let location = c.repository.location().map_err(|e| {
                self.invalid(
                    format!("copy `{}`: {e}", c.name),
                    e.hint()
                        .unwrap_or("see [[copies]] in docs/CONFIGURATION.md")
                        .replace("[repository", "[copies"),
                )
            })?;
            if primary.as_deref() == Some(location.to_string().as_str()) {
                return Err(self.invalid(
                    format!(
                        "copy `{}` is the primary repository itself ({location})",
                        c.name
                    ),
                    "point the copy at another bucket, prefix, account or host: a copy in the same place is lost with it",
                ));
            }
            let tz = c.retention.as_ref().and_then(|r| r.timezone.as_deref());
            if let Some(tz) = tz.filter(|tz| tz.parse::<chrono_tz::Tz>().is_err()) {
                return Err(self.invalid(
                    format!(
                        "copies.retention.timezone `{tz}` of copy `{}` is not an IANA time zone",
                        c.name
                    ),
                    "write e.g. timezone = \"Europe/Berlin\" or \"UTC\"",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::tests::{err, MIN};
    use crate::{env, Config};

    const COPY: &str = r#"
[[copies]]
name = "off-site"
url = "s3://other/dr"
[copies.s3]
endpoint = "http://127.0.0.1:9333"
path_style = true
[copies.object_lock]
mode = "governance"
days = 7
[copies.retention]
daily = 3
"#;

    #[test]
    fn a_copy_is_read_with_its_options_lock_and_retention() {
        let c = Config::from_toml_str(&format!("{MIN}{COPY}"), None).expect("parses");
        let copy = c.copy("off-site").expect("copy");
        assert_eq!(copy.env_prefix(), "DR_COPY_OFF_SITE_");
        let loc = copy.repository.location().expect("location");
        assert_eq!(loc.object_lock().map(|l| l.days), Some(7));
        match loc {
            dr_store::Location::S3 {
                bucket, endpoint, ..
            } => {
                assert_eq!(bucket, "other");
                assert_eq!(endpoint.as_deref(), Some("http://127.0.0.1:9333"));
            }
            other => panic!("{other:?}"),
        }
        let seen = c.for_copy("off-site").expect("for copy");
        assert_eq!(seen.repository.url, "s3://other/dr");
        assert_eq!(seen.retention.daily, 3);
        assert_eq!(
            seen.repository.credentials_env.as_deref(),
            Some("DR_COPY_OFF_SITE_")
        );
        assert!(seen.copies.is_empty());
        // Without its own retention, the primary's.
        let plain = format!("{MIN}[retention]\ndaily = 9\n{COPY}")
            .replace("[copies.retention]\ndaily = 3\n", "");
        let c = Config::from_toml_str(&plain, None).expect("parses");
        assert_eq!(c.for_copy("off-site").expect("copy").retention.daily, 9);
    }

    #[test]
    fn bad_copies_are_refused_by_name() {
        let e = err(&format!("{MIN}{COPY}").replace("off-site", "off site"));
        assert!(e.contains("off site"), "{e}");
        let e = err(&format!("{MIN}{COPY}{COPY}"));
        assert!(e.contains("twice"), "{e}");
        let e = err(&format!("{MIN}{COPY}").replace("s3://other/dr", "gs://x"));
        assert!(e.contains("off-site") && e.contains("gs://x"), "{e}");
        let e = err(&format!("{MIN}{COPY}")
            .replace("dayz", "x")
            .replace("days = 7", "dayz = 7"));
        assert!(e.contains("dayz"), "{e}");
        let e = err(&format!(
            "{MIN}[[copies]]\nname = \"same\"\nurl = \"s3://bucket/prefix\"\nendpoint = \"http://127.0.0.1:8333\"\nregion = \"us-east-1\"\npath_style = true\n"
        ));
        assert!(e.contains("primary repository itself"), "{e}");
        let e = Config::from_toml_str(MIN, None)
            .expect("parses")
            .copy("nope")
            .expect_err("none");
        assert!(e.hint().is_some_and(|h| h.contains("[[copies]]")), "{e}");
    }

    #[test]
    fn env_overrides_a_copys_url_and_endpoint() {
        let mut c = Config::from_toml_str(&format!("{MIN}{COPY}"), None).expect("parses");
        c.apply_env(|k| match k {
            "DR_COPY_OFF_SITE_URL" => Some("s3://moved/dr".into()),
            "DR_COPY_OFF_SITE_ENDPOINT" => Some("http://10.0.0.2:9000".into()),
            _ => None,
        })
        .expect("valid");
        let copy = c.copy("off-site").expect("copy");
        assert_eq!(copy.repository.url, "s3://moved/dr");
        assert!(matches!(
            copy.repository.location(),
            Ok(dr_store::Location::S3 { endpoint: Some(e), .. }) if e == "http://10.0.0.2:9000"
        ));
        assert_eq!(
            env::copy_var("off-site", env::COPY_ACCESS_KEY_ID),
            "DR_COPY_OFF_SITE_AWS_ACCESS_KEY_ID"
        );
    }

    #[test]
    fn copy_jobs_name_configured_copies() {
        let job = "[[schedules]]\nname = \"offsite\"\ncron = \"0 5 * * *\"\njob = \"copy\"\n";
        let c = Config::from_toml_str(&format!("{MIN}{COPY}{job}"), None).expect("parses");
        let jobs = crate::jobs::load_schedules(&c).expect("jobs");
        assert_eq!(jobs[0].copies, vec!["off-site".to_string()]);
        let e = err(&format!("{MIN}{job}"));
        assert!(e.contains("no [[copies]]"), "{e}");
        let e = err(&format!("{MIN}{COPY}{job}copies = [\"nope\"]\n"));
        assert!(e.contains("`nope`"), "{e}");
        let verify = job.replace("\"copy\"", "\"verify\"") + "copies = [\"off-site\"]\n";
        let c = Config::from_toml_str(&format!("{MIN}{COPY}{verify}"), None).expect("verify");
        let jobs = crate::jobs::load_schedules(&c).expect("jobs");
        assert_eq!(jobs[0].copies, vec!["off-site".to_string()]);
        let backup = job.replace("\"copy\"", "\"backup\"") + "copies = [\"off-site\"]\n";
        let e = err(&format!("{MIN}{COPY}{backup}"));
        assert!(e.contains("copies applies only"), "{e}");
    }
}
