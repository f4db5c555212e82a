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

/// Environment variables dr reads, as documented in `docs/CONFIGURATION.md`.
pub mod env {
    /// Path of the configuration file (same as `--config`).
    pub const CONFIG: &str = "DR_CONFIG";
    /// Overrides `repository.url`.
    pub const REPOSITORY_URL: &str = "DR_REPOSITORY_URL";
    /// Overrides `repository.endpoint`.
    pub const REPOSITORY_ENDPOINT: &str = "DR_REPOSITORY_ENDPOINT";
    /// Overrides `encryption.identity_file`.
    pub const IDENTITY_FILE: &str = "DR_IDENTITY_FILE";
    /// Overrides `backup.pg_bin_dir`.
    pub const PG_BIN_DIR: &str = "DR_PG_BIN_DIR";
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
    /// Where the file was read from, for messages.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryConfig {
    /// `s3://BUCKET/PREFIX` or `file:///ABSOLUTE/PATH`.
    pub url: String,
    /// S3-compatible endpoint (R2, MinIO, SeaweedFS). Falls back to `AWS_ENDPOINT_URL`.
    pub endpoint: Option<String>,
    /// Region; `auto` for R2. Falls back to the AWS chain, then `us-east-1`.
    pub region: Option<String>,
    #[serde(default)]
    pub path_style: bool,
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
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            zstd_level: default_zstd_level(),
            zstd_threads: default_zstd_threads(),
            pg_bin_dir: None,
            part_size_mib: None,
        }
    }
}

fn default_zstd_level() -> i32 {
    3
}
fn default_zstd_threads() -> u32 {
    1
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreConfig {
    /// Where restore and verify stage the decrypted archive. Default: the system temp dir.
    pub temp_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyConfig {
    /// `auto` (docker when an engine answers, else local), `docker` or `local`.
    pub sandbox: Option<String>,
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
            self.repository.endpoint = Some(v);
        }
        if let Some(v) = get(env::IDENTITY_FILE).filter(|v| !v.is_empty()) {
            self.encryption.identity_file = Some(PathBuf::from(v));
        }
        if let Some(v) = get(env::PG_BIN_DIR).filter(|v| !v.is_empty()) {
            self.backup.pg_bin_dir = Some(PathBuf::from(v));
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
        let repo = &self.repository.url;
        if !(repo.starts_with("s3://") || repo.starts_with("file://")) {
            return Err(self.invalid(
                format!("repository.url `{repo}` is neither s3://BUCKET/PREFIX nor file:///PATH"),
                "write e.g. url = \"s3://my-bucket/dr\" or url = \"file:///var/backups/dr\"",
            ));
        }
        if let Ok(u) = url::Url::parse(repo) {
            if u.password().is_some() || !u.username().is_empty() {
                return Err(self.invalid(
                    "repository.url holds credentials",
                    "remove them; object-store credentials come from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or an AWS profile",
                ));
            }
        }
        if let Some(ep) = &self.repository.endpoint {
            if url::Url::parse(ep).is_err() {
                return Err(self.invalid(
                    format!("repository.endpoint `{ep}` is not a URL"),
                    "write e.g. endpoint = \"https://ACCOUNT.r2.cloudflarestorage.com\"",
                ));
            }
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
            if t.name.is_empty()
                || t.name.len() > 64
                || !t
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(self.invalid(
                    format!("target name `{}` is not valid", t.name),
                    "use 1-64 letters, digits, `-` or `_` (it becomes part of object keys)",
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
                Ok(u) if u.password().is_some() => return Err(self.invalid(
                    format!("target `{}`: the url holds a password", t.name),
                    "remove it from dr.toml; set PGPASSWORD or use a ~/.pgpass / PGPASSFILE entry",
                )),
                Ok(_) => {}
                Err(e) => {
                    return Err(self.invalid(
                        format!("target `{}`: url is not valid: {e}", t.name),
                        "write e.g. url = \"postgres://app@127.0.0.1:5432/app\"",
                    ))
                }
            }
        }
        if !(1..=22).contains(&self.backup.zstd_level) {
            return Err(self.invalid(
                format!(
                    "backup.zstd_level {} is out of range",
                    self.backup.zstd_level
                ),
                "use 1 (fastest) to 19 (smallest); 3 is the default",
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
        if let Some(s) = &self.verify.sandbox {
            if !matches!(s.as_str(), "auto" | "docker" | "local") {
                return Err(self.invalid(
                    format!("verify.sandbox `{s}` is not one of auto, docker, local"),
                    "write sandbox = \"auto\"",
                ));
            }
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
        assert!(c.repository.path_style);
        assert_eq!(c.backup.zstd_level, 3);
        assert_eq!(c.targets.len(), 1);
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
    }

    #[test]
    fn duplicate_and_bad_target_names() {
        let dup = format!("{MIN}\n[[targets]]\nname = \"app\"\nurl = \"postgres://x@h/db\"\n");
        assert!(err(&dup).contains("twice"));
        assert!(err(&MIN.replace("name = \"app\"", "name = \"a/b\"")).contains("a/b"));
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
    fn bad_timezone() {
        let e = err(&format!(
            "{MIN}\n[retention]\ndaily = 7\ntimezone = \"Mars/Olympus\"\n"
        ));
        assert!(e.contains("Mars/Olympus"), "{e}");
    }
}
