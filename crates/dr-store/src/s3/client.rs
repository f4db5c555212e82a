//! The S3 client: a store opened from its location, with the endpoint checked, the region and
//! credentials from the AWS chain, and the retry, timeout, stalled-stream and checksum settings
//! every S3 implementation accepts.

use std::sync::Arc;
use std::time::Duration;

use aws_config::meta::region::RegionProviderChain;
use aws_config::BehaviorVersion;
use aws_sdk_s3::config::{
    Region, RequestChecksumCalculation, ResponseChecksumValidation, StalledStreamProtectionConfig,
};
use aws_sdk_s3::Client;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;

use super::{S3Store, Shared};
use crate::{Location, StoreError};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// One attempt of one request, e.g. a 64 MiB part at ~1 Mbit/s.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// The endpoint without userinfo, query or fragment, for messages.
pub(super) fn display_endpoint(endpoint: &str) -> String {
    match url::Url::parse(endpoint) {
        Ok(mut url) => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.set_fragment(None);
            url.to_string()
        }
        Err(_) => "<invalid endpoint>".to_owned(),
    }
}

impl S3Store {
    pub(crate) async fn open(
        location: Location,
        credentials: &crate::Credentials,
    ) -> Result<Self, StoreError> {
        let Location::S3 {
            bucket,
            prefix,
            endpoint,
            region,
            path_style,
            ..
        } = &location
        else {
            return Err(StoreError::InvalidLocation {
                url: location.to_string(),
                reason: "not an s3:// location".to_owned(),
                hint: "use s3://BUCKET/PREFIX",
            });
        };
        if let Some(endpoint) = endpoint {
            let valid = url::Url::parse(endpoint)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            if !valid {
                return Err(StoreError::InvalidLocation {
                    url: location.to_string(),
                    reason: format!(
                        "endpoint `{}` is not an http(s) URL",
                        display_endpoint(endpoint)
                    ),
                    hint:
                        "set repository.endpoint to e.g. https://<account>.r2.cloudflarestorage.com",
                });
            }
        }

        let region = RegionProviderChain::first_try(region.clone().map(Region::new))
            .or_default_provider()
            .or_else(Region::from_static("us-east-1"));
        // dr's one policy for S3 requests, carried out by the SDK's standard retry.
        let policy = dr_retry::S3_REQUEST;
        let retry = RetryConfig::standard()
            .with_max_attempts(policy.attempts)
            .with_initial_backoff(policy.first_backoff)
            .with_max_backoff(policy.max_backoff);
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .operation_attempt_timeout(ATTEMPT_TIMEOUT)
            .build();
        // Both directions: a dead connection mid-download must fail rather than hang a 3 a.m.
        // restore forever. Safe because dr never lets pg_restore pace a download: objects are
        // decoded into a local file at full speed, and a stall of 120 s is a real stall.
        let stalled = StalledStreamProtectionConfig::enabled()
            .upload_enabled(true)
            .download_enabled(true)
            .grace_period(Duration::from_secs(120))
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        match credentials {
            crate::Credentials::Chain => {}
            crate::Credentials::Profile(name) => loader = loader.profile_name(name),
            crate::Credentials::Keys {
                access_key_id,
                secret_access_key,
                session_token,
            } => {
                loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
                    access_key_id,
                    secret_access_key.expose(),
                    session_token.as_ref().map(|t| t.expose().to_owned()),
                    None,
                    "dr",
                ));
            }
        }
        let sdk = loader
            .region(region)
            .retry_config(retry)
            .timeout_config(timeouts)
            .stalled_stream_protection(stalled)
            .load()
            .await;

        let mut config = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(*path_style)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(endpoint) = endpoint {
            config = config.endpoint_url(endpoint);
        }
        let shown_endpoint = endpoint
            .as_deref()
            .or(sdk.endpoint_url())
            .map(display_endpoint);
        let shared = Shared {
            client: Client::from_conf(config.build()),
            bucket: bucket.clone(),
            prefix: prefix.clone(),
            endpoint: shown_endpoint,
        };
        Ok(S3Store {
            location,
            shared: Arc::new(shared),
            read_policy: crate::resume::read_policy(|k| std::env::var(k).ok())?,
        })
    }
}
