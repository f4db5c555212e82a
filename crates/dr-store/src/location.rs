//! Where a repository lives, parsed from `repository.url` and the backend options beside it,
//! and the registry of backends that knows every URL scheme.

use std::fmt;
use std::path::PathBuf;

use crate::StoreError;

/// Where a repository lives. Parsed from config with [`Location::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An S3-compatible bucket. `prefix` has no leading or trailing '/' and may be empty.
    S3 {
        bucket: String,
        prefix: String,
        /// e.g. `https://<account>.r2.cloudflarestorage.com`; `None` lets aws-config decide
        /// (AWS_ENDPOINT_URL, profile, or AWS itself).
        endpoint: Option<String>,
        /// `None` falls back to the AWS default chain, then `us-east-1`.
        region: Option<String>,
        path_style: bool,
        /// `[repository.s3] max_parts`: parts per multipart upload (1..=10,000).
        max_parts: u64,
        /// `[repository.object_lock]`: lock every object of a backup.
        object_lock: Option<crate::ObjectLock>,
    },
    /// A local directory (or a mounted filesystem).
    Directory { root: PathBuf },
}

/// One storage backend: its URL scheme, its options, and how they become a [`Location`].
pub(crate) struct Backend {
    /// `s3` in `s3://...`; also the name of its options table, `[repository.s3]`.
    pub(crate) scheme: &'static str,
    /// The URL's shape, for hints: `s3://BUCKET/PREFIX`.
    pub(crate) url_form: &'static str,
    /// Options also accepted directly under `[repository]`, the older form: same meaning
    /// as in the backend's table.
    pub(crate) top_level_keys: &'static [&'static str],
    /// `url` is the whole URL (for messages), `rest` what follows `scheme://`, `options` the
    /// backend's table merged with its top-level keys.
    pub(crate) parse:
        fn(url: &str, rest: &str, options: toml::Table) -> Result<Location, StoreError>,
}

/// Names every registered URL form; keep in step with [`crate::BACKENDS`] (a test checks).
pub(crate) const URL_HINT: &str = "use s3://BUCKET/PREFIX or file:///absolute/path";

pub(crate) fn invalid(url: &str, reason: impl Into<String>) -> StoreError {
    StoreError::InvalidLocation {
        url: url.to_owned(),
        reason: reason.into(),
        hint: URL_HINT,
    }
}

pub(crate) fn invalid_option(
    key: impl fmt::Display,
    reason: impl Into<String>,
    hint: impl Into<String>,
) -> StoreError {
    StoreError::InvalidOption {
        key: format!("repository.{key}"),
        reason: reason.into(),
        hint: hint.into(),
    }
}

/// The backend options of `[repository]`: everything besides `url`, as written. dr-config
/// passes them through; [`Location::parse`] checks them against the URL's backend.
///
/// Each backend reads its own table (`[repository.s3]`); older configs give the S3 options
/// (`endpoint`, `region`, `path_style`) directly under `[repository]`, which still works.
/// An option given both ways with different values is an error.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(transparent)]
pub struct RepositoryOptions(toml::Table);

impl RepositoryOptions {
    /// Options from a TOML table shaped like `[repository]` without `url`.
    pub fn from_table(table: toml::Table) -> RepositoryOptions {
        RepositoryOptions(table)
    }

    /// Override option `key` (e.g. `endpoint` from `DR_REPOSITORY_ENDPOINT`) wherever the
    /// config wrote it: in any backend table that has it and at the top level, or at the top
    /// level when it was not written at all.
    pub fn set_override(&mut self, key: &str, value: &str) {
        let value = toml::Value::String(value.to_owned());
        let mut replaced = false;
        for backend in crate::BACKENDS {
            if let Some(toml::Value::Table(t)) = self.0.get_mut(backend.scheme) {
                if let Some(v) = t.get_mut(key) {
                    *v = value.clone();
                    replaced = true;
                }
            }
        }
        if !replaced || self.0.contains_key(key) {
            self.0.insert(key.to_owned(), value);
        }
    }

    /// The options `backend` reads: its table, plus its top-level keys. Unknown keys, and
    /// a key given both ways with different values, are errors; another backend's options
    /// are left alone (the url may be switched by `DR_REPOSITORY_URL`).
    fn for_backend(&self, backend: &Backend) -> Result<toml::Table, StoreError> {
        let mut merged = match self.0.get(backend.scheme) {
            Some(toml::Value::Table(t)) => t.clone(),
            Some(_) => {
                return Err(invalid_option(
                    backend.scheme,
                    "must be a table",
                    format!(
                        "write the options in a [repository.{}] section",
                        backend.scheme
                    ),
                ))
            }
            None => toml::Table::new(),
        };
        for (key, value) in &self.0 {
            if key == OBJECT_LOCK {
                continue;
            }
            if crate::BACKENDS.iter().any(|b| b.scheme == key) {
                if !value.is_table() {
                    return Err(invalid_option(
                        key,
                        "must be a table",
                        format!("write the options in a [repository.{key}] section"),
                    ));
                }
                continue;
            }
            if backend.top_level_keys.contains(&key.as_str()) {
                match merged.get(key) {
                    Some(v) if v != value => {
                        return Err(invalid_option(
                            key,
                            format!("is given twice, as repository.{key} and repository.{}.{key}, with different values", backend.scheme),
                            format!("keep only repository.{}.{key} (preferred)", backend.scheme),
                        ))
                    }
                    Some(_) => {}
                    None => {
                        merged.insert(key.clone(), value.clone());
                    }
                }
                continue;
            }
            if crate::BACKENDS
                .iter()
                .any(|b| b.top_level_keys.contains(&key.as_str()))
            {
                continue;
            }
            return Err(invalid_option(
                key,
                "is not a repository option",
                format!(
                    "[repository] takes url and a table per backend ({}); check the spelling",
                    crate::BACKENDS
                        .iter()
                        .map(|b| format!("[repository.{}]", b.scheme))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        Ok(merged)
    }
}

/// `[repository.object_lock]`: not a backend's table; every backend reads it (and a
/// directory refuses it).
const OBJECT_LOCK: &str = "object_lock";

/// Deserialize a backend's options table, naming the table in errors.
pub(crate) fn options_from<T: serde::de::DeserializeOwned>(
    scheme: &str,
    table: toml::Table,
    hint: &str,
) -> Result<T, StoreError> {
    T::deserialize(toml::Value::Table(table))
        .map_err(|e| invalid_option(scheme, e.message().trim().to_owned(), hint))
}

impl Location {
    /// Parse `repository.url` with the backend options beside it: the scheme picks the
    /// backend (`s3://BUCKET/PREFIX`, `file:///ABS/PATH`), which checks the rest of the URL
    /// and its options.
    pub fn parse(url: &str, options: &RepositoryOptions) -> Result<Location, StoreError> {
        let trimmed = url.trim();
        let Some((scheme, rest)) = trimmed.split_once("://") else {
            return Err(invalid(url, "missing scheme"));
        };
        if let Ok(u) = url::Url::parse(trimmed) {
            if u.password().is_some() || !u.username().is_empty() {
                return Err(StoreError::InvalidLocation {
                    url: u.scheme().to_owned() + "://…",
                    reason: "the url holds credentials".to_owned(),
                    hint: "remove them; object-store credentials come from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or an AWS profile",
                });
            }
        }
        let scheme = scheme.to_ascii_lowercase();
        let Some(backend) = crate::BACKENDS.iter().find(|b| b.scheme == scheme) else {
            return Err(invalid(
                url,
                format!(
                    "unknown scheme `{scheme}` (supported: {})",
                    crate::BACKENDS
                        .iter()
                        .map(|b| b.url_form)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        };
        let table = options.for_backend(backend)?;
        let object_lock = match options.0.get(OBJECT_LOCK) {
            Some(v) => Some(crate::ObjectLock::from_value(v)?),
            None => None,
        };
        match ((backend.parse)(url, rest, table)?, object_lock) {
            (Location::S3 { bucket, prefix, endpoint, region, path_style, max_parts, .. }, lock) => {
                Ok(Location::S3 { bucket, prefix, endpoint, region, path_style, max_parts, object_lock: lock })
            }
            (dir @ Location::Directory { .. }, None) => Ok(dir),
            (Location::Directory { .. }, Some(_)) => Err(invalid_option(
                OBJECT_LOCK,
                "a directory repository cannot lock objects: Object Lock is a feature of S3 buckets",
                "remove [repository.object_lock], or use an S3 bucket created with Object Lock enabled (docs/CONFIGURATION.md, \"Immutable backups\")",
            )),
        }
    }

    /// `[repository.object_lock]`, if configured.
    pub fn object_lock(&self) -> Option<crate::ObjectLock> {
        match self {
            Location::S3 { object_lock, .. } => *object_lock,
            Location::Directory { .. } => None,
        }
    }
}

impl fmt::Display for Location {
    /// `s3://bucket/prefix` or `file:///path`. Never shows the endpoint or credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::S3 { bucket, prefix, .. } => write!(f, "s3://{bucket}/{prefix}"),
            Location::Directory { root } => write!(f, "file://{}", root.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::S3Options;

    fn no_options() -> RepositoryOptions {
        RepositoryOptions::default()
    }

    fn options(text: &str) -> RepositoryOptions {
        RepositoryOptions::from_table(toml::from_str(text).expect("toml"))
    }

    fn s3(url: &str) -> (String, String) {
        match Location::parse(url, &no_options()) {
            Ok(Location::S3 { bucket, prefix, .. }) => (bucket, prefix),
            other => panic!("{url}: {other:?}"),
        }
    }

    fn s3_location(endpoint: &str, region: &str, path_style: bool) -> Location {
        Location::S3 {
            bucket: "b".into(),
            prefix: "p".into(),
            endpoint: Some(endpoint.into()),
            region: Some(region.into()),
            path_style,
            max_parts: 10_000,
            object_lock: None,
        }
    }

    #[test]
    fn s3_urls() {
        assert_eq!(s3("s3://b"), ("b".into(), "".into()));
        assert_eq!(s3("s3://b/"), ("b".into(), "".into()));
        assert_eq!(s3("s3://b/dr/prod/"), ("b".into(), "dr/prod".into()));
        assert_eq!(s3("S3://b//x"), ("b".into(), "x".into()));
    }

    #[test]
    fn s3_options_are_kept() {
        let opts = S3Options {
            endpoint: Some("http://127.0.0.1:8333".into()),
            region: Some("auto".into()),
            path_style: true,
            max_parts: None,
        };
        let loc = Location::parse("s3://b/p", &opts.into()).expect("valid");
        assert_eq!(loc, s3_location("http://127.0.0.1:8333", "auto", true));
        let loc = Location::parse("s3://b/p", &options("endpoint = \"\"\nregion = \" \"\n"))
            .expect("valid");
        assert!(matches!(
            loc,
            Location::S3 {
                endpoint: None,
                region: None,
                ..
            }
        ));
    }

    #[test]
    fn max_parts_is_1_to_10000() {
        let parse = |text: &str| Location::parse("s3://b/p", &options(text));
        assert!(matches!(
            parse("[s3]\nmax_parts = 1000\n"),
            Ok(Location::S3 {
                max_parts: 1000,
                ..
            })
        ));
        assert!(matches!(
            parse(""),
            Ok(Location::S3 {
                max_parts: 10_000,
                ..
            })
        ));
        for bad in ["0", "10001"] {
            let e = parse(&format!("[s3]\nmax_parts = {bad}\n")).expect_err(bad);
            let text = e.to_string();
            assert!(
                text.contains("repository.s3.max_parts") && text.contains(bad),
                "{text}"
            );
        }
        let e = parse("[s3]\nmax_parts = -1\n").expect_err("negative");
        assert!(e.to_string().contains("repository.s3"), "{e}");
    }

    #[test]
    fn s3_options_in_their_table_or_at_the_top_level() {
        let want = s3_location("http://h:8333", "auto", true);
        let table = "[s3]\nendpoint = \"http://h:8333\"\nregion = \"auto\"\npath_style = true\n";
        let old = "endpoint = \"http://h:8333\"\nregion = \"auto\"\npath_style = true\n";
        let mixed = "region = \"auto\"\n[s3]\nendpoint = \"http://h:8333\"\npath_style = true\n";
        let both_same = format!("{old}{table}");
        for text in [table, old, mixed, both_same.as_str()] {
            assert_eq!(
                Location::parse("s3://b/p", &options(text)).expect(text),
                want,
                "{text}"
            );
        }
    }

    #[test]
    fn an_s3_option_given_twice_with_different_values_is_refused() {
        let text = "region = \"eu-west-1\"\n[s3]\nregion = \"auto\"\n";
        let e = Location::parse("s3://b/p", &options(text)).expect_err("differ");
        let e = format!("{e}\nhint: {}", e.hint().unwrap_or_default());
        assert!(
            e.contains("repository.region")
                && e.contains("repository.s3.region")
                && e.contains("hint: keep only repository.s3.region"),
            "{e}"
        );
    }

    #[test]
    fn unknown_and_misspelled_options_are_named() {
        let e = Location::parse("s3://b/p", &options("path_styel = true\n")).expect_err("typo");
        let e = format!("{e}\nhint: {}", e.hint().unwrap_or_default());
        assert!(
            e.contains("repository.path_styel") && e.contains("hint:"),
            "{e}"
        );
        let e = Location::parse("s3://b/p", &options("[s3]\nendpont = \"http://h\"\n"))
            .expect_err("typo")
            .to_string();
        assert!(e.contains("repository.s3") && e.contains("endpont"), "{e}");
        let e = Location::parse("s3://b/p", &options("s3 = 1\n"))
            .expect_err("not a table")
            .to_string();
        assert!(e.contains("repository.s3") && e.contains("table"), "{e}");
        let e = Location::parse("s3://b/p", &options("[s3]\nendpoint = \"not a url\"\n"))
            .expect_err("bad endpoint")
            .to_string();
        assert!(e.contains("repository.s3.endpoint"), "{e}");
        let e = Location::parse("file:///srv/dr", &options("[file]\nmode = 1\n"))
            .expect_err("file takes no options")
            .to_string();
        assert!(e.contains("repository.file.mode"), "{e}");
    }

    #[test]
    fn s3_options_do_not_stop_a_directory_repository() {
        // Today's configs keep endpoint/region beside a file:// url (e.g. switched by
        // DR_REPOSITORY_URL): they are ignored, as before.
        let text = "endpoint = \"http://h\"\n[s3]\nregion = \"auto\"\n";
        let loc = Location::parse("file:///srv/dr", &options(text)).expect("valid");
        assert_eq!(
            loc,
            Location::Directory {
                root: PathBuf::from("/srv/dr")
            }
        );
    }

    #[test]
    fn an_override_replaces_the_option_wherever_it_is_written() {
        for text in [
            "",
            "endpoint = \"http://old\"\n",
            "[s3]\nendpoint = \"http://old\"\n",
            "endpoint = \"http://old\"\n[s3]\nendpoint = \"http://old\"\n",
        ] {
            let mut o = options(text);
            o.set_override("endpoint", "http://new:1");
            match Location::parse("s3://b/p", &o).expect(text) {
                Location::S3 { endpoint, .. } => {
                    assert_eq!(endpoint.as_deref(), Some("http://new:1"), "{text}");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn file_urls() {
        let loc = Location::parse("file:///var/backups/dr", &no_options()).expect("valid");
        assert_eq!(
            loc,
            Location::Directory {
                root: PathBuf::from("/var/backups/dr")
            }
        );
        let loc = Location::parse("file://localhost/srv/a%20b", &no_options()).expect("valid");
        assert_eq!(
            loc,
            Location::Directory {
                root: PathBuf::from("/srv/a b")
            }
        );
    }

    #[test]
    fn rejects() {
        for url in [
            "",
            "/var/backups",
            "s3://",
            "s3:///prefix",
            "s3://b/../x",
            "file://relative/path",
            "file://",
            "gs://bucket/x",
            "https://example.com/x",
            "s3://key:secret@bucket/x",
        ] {
            let err = Location::parse(url, &no_options()).expect_err(url);
            assert!(
                matches!(err, StoreError::InvalidLocation { .. }),
                "{url}: {err}"
            );
            assert!(err.hint().is_some(), "{err}");
            assert!(!err.hint().unwrap_or_default().contains("secret"), "{err}");
            assert!(!err.to_string().contains("secret"), "{err}");
        }
        let e = Location::parse("gs://bucket/x", &no_options()).expect_err("gs");
        assert!(
            e.to_string().contains(
                "unknown scheme `gs` (supported: s3://BUCKET/PREFIX, file:///absolute/path)"
            ),
            "{e}"
        );
    }

    #[test]
    fn the_url_hint_names_every_backend() {
        for b in crate::BACKENDS {
            assert!(URL_HINT.contains(b.url_form), "{}", b.url_form);
        }
    }

    #[test]
    fn display_round_trips_and_hides_endpoint() {
        let opts = S3Options {
            endpoint: Some("https://key:secret@host".into()),
            ..S3Options::default()
        };
        let loc = Location::parse("s3://b/dr/prod", &opts.into()).expect("valid");
        assert_eq!(loc.to_string(), "s3://b/dr/prod");
        let loc = Location::parse("file:///srv/dr", &no_options()).expect("valid");
        assert_eq!(loc.to_string(), "file:///srv/dr");
    }
}
