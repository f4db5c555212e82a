//! Where a repository lives, parsed from `repository.url`.

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
    },
    /// A local directory (or a mounted filesystem).
    Directory { root: PathBuf },
}

const URL_HINT: &str = "use s3://BUCKET/PREFIX or file:///absolute/path";

fn invalid(url: &str, reason: impl Into<String>) -> StoreError {
    StoreError::InvalidLocation {
        url: url.to_owned(),
        reason: reason.into(),
        hint: URL_HINT,
    }
}

impl Location {
    /// Parse `s3://BUCKET/PREFIX` (prefix may be empty) or `file:///ABS/PATH`.
    ///
    /// `endpoint`, `region` and `path_style` only apply to `s3://`.
    pub fn parse(
        url: &str,
        endpoint: Option<&str>,
        region: Option<&str>,
        path_style: bool,
    ) -> Result<Location, StoreError> {
        let trimmed = url.trim();
        let Some((scheme, rest)) = trimmed.split_once("://") else {
            return Err(invalid(url, "missing scheme"));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "s3" => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(invalid(url, "missing bucket name"));
                }
                if bucket
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '?' || c == '#')
                {
                    return Err(invalid(
                        url,
                        format!("`{bucket}` is not a valid bucket name"),
                    ));
                }
                let prefix = prefix.trim_matches('/');
                if prefix.split('/').any(|s| s == "." || s == "..")
                    || prefix.contains("//")
                    || prefix.contains('\\')
                {
                    return Err(invalid(
                        url,
                        format!("prefix `{prefix}` must be a plain '/'-separated path"),
                    ));
                }
                let nonempty = |s: Option<&str>| {
                    s.map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                };
                Ok(Location::S3 {
                    bucket: bucket.to_owned(),
                    prefix: prefix.to_owned(),
                    endpoint: nonempty(endpoint),
                    region: nonempty(region),
                    path_style,
                })
            }
            "file" => {
                // file:///abs/path or file://localhost/abs/path; anything else has a host or
                // is relative.
                let path = rest.strip_prefix("localhost").unwrap_or(rest);
                if !path.starts_with('/') {
                    return Err(invalid(
                        url,
                        "the path must be absolute (file:///abs/path has three slashes)",
                    ));
                }
                let root = url::Url::parse(&format!("file://{path}"))
                    .ok()
                    .and_then(|u| u.to_file_path().ok())
                    .ok_or_else(|| invalid(url, "not a valid file path"))?;
                if !root.is_absolute() {
                    return Err(invalid(url, "the path must be absolute"));
                }
                Ok(Location::Directory { root })
            }
            other => Err(invalid(
                url,
                format!("unknown scheme `{other}` (supported: s3, file)"),
            )),
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

    fn s3(url: &str) -> (String, String) {
        match Location::parse(url, None, None, false) {
            Ok(Location::S3 { bucket, prefix, .. }) => (bucket, prefix),
            other => panic!("{url}: {other:?}"),
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
        let loc = Location::parse(
            "s3://b/p",
            Some("http://127.0.0.1:8333"),
            Some("auto"),
            true,
        )
        .expect("valid");
        assert_eq!(
            loc,
            Location::S3 {
                bucket: "b".into(),
                prefix: "p".into(),
                endpoint: Some("http://127.0.0.1:8333".into()),
                region: Some("auto".into()),
                path_style: true,
            }
        );
        let loc = Location::parse("s3://b/p", Some(""), Some(" "), false).expect("valid");
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
    fn file_urls() {
        let loc = Location::parse("file:///var/backups/dr", None, None, false).expect("valid");
        assert_eq!(
            loc,
            Location::Directory {
                root: PathBuf::from("/var/backups/dr")
            }
        );
        let loc = Location::parse("file://localhost/srv/a%20b", None, None, false).expect("valid");
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
        ] {
            let err = Location::parse(url, None, None, false).expect_err(url);
            assert!(
                matches!(err, StoreError::InvalidLocation { .. }),
                "{url}: {err}"
            );
            assert!(err.to_string().contains("hint:"), "{err}");
        }
    }

    #[test]
    fn display_round_trips_and_hides_endpoint() {
        let loc = Location::parse(
            "s3://b/dr/prod",
            Some("https://key:secret@host"),
            None,
            false,
        )
        .expect("valid");
        assert_eq!(loc.to_string(), "s3://b/dr/prod");
        let loc = Location::parse("file:///srv/dr", None, None, false).expect("valid");
        assert_eq!(loc.to_string(), "file:///srv/dr");
    }
}
