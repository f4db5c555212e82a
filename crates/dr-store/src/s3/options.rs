//! `s3://BUCKET/PREFIX` and the `[repository.s3]` options: the S3 backend's registration.

use super::client::display_endpoint;
use super::*;

/// `s3://BUCKET/PREFIX`, options in `[repository.s3]` (or, the older form, directly under
/// `[repository]`).
pub(crate) const BACKEND: Backend = Backend {
    scheme: "s3",
    url_form: "s3://BUCKET/PREFIX",
    top_level_keys: &["endpoint", "region", "path_style"],
    parse: parse_location,
};

/// `[repository.s3]`: how to reach an S3-compatible service. Credentials never go here: they
/// come from the AWS chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, profiles, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct S3Options {
    /// S3-compatible endpoint (R2, MinIO, SeaweedFS). Falls back to `AWS_ENDPOINT_URL`.
    pub endpoint: Option<String>,
    /// Region; `auto` for R2. Falls back to the AWS chain, then `us-east-1`.
    pub region: Option<String>,
    /// Address the bucket in the path (`https://host/bucket`), as MinIO and SeaweedFS want.
    #[serde(default)]
    pub path_style: bool,
    /// The most parts one multipart upload may have: 10,000 on AWS S3 and R2, 1,000 on some
    /// S3-compatible services (Scaleway). A stream longer than `max_parts` parts, or than
    /// 5 GiB, is stored as several objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parts: Option<u64>,
}

impl From<S3Options> for RepositoryOptions {
    /// `[repository.s3]` holding `options`.
    fn from(options: S3Options) -> RepositoryOptions {
        let mut table = toml::Table::new();
        if let Ok(toml::Value::Table(s3)) = toml::Value::try_from(options) {
            table.insert("s3".to_owned(), toml::Value::Table(s3));
        }
        RepositoryOptions::from_table(table)
    }
}

const OPTIONS_HINT: &str = "[repository.s3] takes endpoint (e.g. \"https://ACCOUNT.r2.cloudflarestorage.com\"), region (e.g. \"auto\"), path_style (true or false) and max_parts (1 to 10000)";

fn parse_location(url: &str, rest: &str, options: toml::Table) -> Result<Location, StoreError> {
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
    let S3Options {
        endpoint,
        region,
        path_style,
        max_parts,
    } = options_from("s3", options, OPTIONS_HINT)?;
    let max_parts = max_parts.unwrap_or(PartLimits::S3.max_parts);
    if !(1..=PartLimits::S3.max_parts).contains(&max_parts) {
        return Err(invalid_option(
            "s3.max_parts",
            format!("{max_parts} is not a part count S3 accepts (1 to 10000)"),
            "write the provider's limit on parts per multipart upload, e.g. max_parts = 1000 (Scaleway), or remove it for 10000 (AWS S3, R2)",
        ));
    }
    let nonempty = |s: Option<String>| s.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    let endpoint = nonempty(endpoint);
    if let Some(ep) = &endpoint {
        if url::Url::parse(ep).is_err() {
            return Err(invalid_option(
                "s3.endpoint",
                format!("`{}` is not a URL", display_endpoint(ep)),
                "write e.g. endpoint = \"https://ACCOUNT.r2.cloudflarestorage.com\"",
            ));
        }
    }
    Ok(Location::S3 {
        bucket: bucket.to_owned(),
        prefix: prefix.to_owned(),
        endpoint,
        region: nonempty(region),
        path_style,
        max_parts,
        object_lock: None,
    })
}
