//! Environment variables dr reads, as documented in `docs/CONFIGURATION.md`, and how they
//! override the file ([`Config::apply_env`]).

use std::path::PathBuf;

use crate::signing::SigningConfig;
use crate::{Config, ConfigError};

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

/// The prefix of copy `name`'s variables: `DR_COPY_<NAME>_`, the name in capitals, `-` as `_`.
pub fn copy_prefix(name: &str) -> String {
    format!("DR_COPY_{}_", name.to_ascii_uppercase().replace('-', "_"))
}

/// Copy `name`'s variable `suffix` (one of the `COPY_*` below), e.g.
/// `DR_COPY_OFFSITE_AWS_ACCESS_KEY_ID`.
pub fn copy_var(name: &str, suffix: &str) -> String {
    format!("{}{suffix}", copy_prefix(name))
}

/// `DR_COPY_<NAME>_URL`: overrides the copy's `url`.
pub const COPY_URL: &str = "URL";
/// `DR_COPY_<NAME>_ENDPOINT`: overrides the copy's S3 endpoint.
pub const COPY_ENDPOINT: &str = "ENDPOINT";
/// `DR_COPY_<NAME>_AWS_ACCESS_KEY_ID` and `…_AWS_SECRET_ACCESS_KEY` (both, or neither):
/// the copy's own credentials. Neither: the AWS chain the primary uses.
pub const COPY_ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
pub const COPY_SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
/// `DR_COPY_<NAME>_AWS_SESSION_TOKEN`: with temporary credentials.
pub const COPY_SESSION_TOKEN: &str = "AWS_SESSION_TOKEN";
/// `DR_COPY_<NAME>_AWS_PROFILE`: a profile of the shared AWS config files instead of keys.
pub const COPY_PROFILE: &str = "AWS_PROFILE";

impl Config {
    /// Apply the documented environment overrides; `get` is the environment.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = get(REPOSITORY_URL).filter(|v| !v.is_empty()) {
            self.repository.url = v;
        }
        if let Some(v) = get(REPOSITORY_ENDPOINT).filter(|v| !v.is_empty()) {
            self.repository.options.set_override("endpoint", &v);
        }
        if let Some(v) = get(IDENTITY_FILE).filter(|v| !v.is_empty()) {
            self.encryption.identity_file = Some(PathBuf::from(v));
        }
        if let Some(v) = get(SIGNING_KEY_FILE).filter(|v| !v.is_empty()) {
            self.signing
                .get_or_insert_with(SigningConfig::default)
                .key_file = Some(PathBuf::from(v));
        }
        if let Some(v) = get(PG_BIN_DIR).filter(|v| !v.is_empty()) {
            self.backup.pg_bin_dir = Some(PathBuf::from(v));
        }
        if let Some(v) = get(WEBHOOK_URL).filter(|v| !v.is_empty()) {
            self.notify.webhook_url = Some(v);
        }
        if let Some(v) = get(PING_URL).filter(|v| !v.is_empty()) {
            self.notify.ping_url = Some(v);
        }
        for copy in &mut self.copies {
            let prefix = copy.env_prefix();
            if let Some(v) = get(&format!("{prefix}{COPY_URL}")).filter(|v| !v.is_empty()) {
                copy.repository.url = v;
            }
            if let Some(v) = get(&format!("{prefix}{COPY_ENDPOINT}")).filter(|v| !v.is_empty()) {
                copy.repository.options.set_override("endpoint", &v);
            }
        }
        self.validate()
    }
}

#[cfg(test)]
mod tests {
    use crate::tests::MIN;
    use crate::{env, Config};

    #[test]
    fn env_overrides_the_file() {
        let mut c = Config::from_toml_str(MIN, None).expect("parses");
        c.apply_env(|k| (k == env::REPOSITORY_URL).then(|| "file:///tmp/x".to_string()))
            .expect("valid");
        assert_eq!(c.repository.url, "file:///tmp/x");
    }
}
