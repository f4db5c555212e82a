//! S3 errors for the operator: a failed request shaped into a `StoreError` with the service's
//! code and message (or the transport error chain) and a `hint:` for the usual causes
//! (credentials, region, bucket, unreachable endpoint); "not found" answers told apart.

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use super::{HttpResponse, Shared};
use crate::StoreError;

const HINT_CREDENTIALS: &str = "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the profile";
/// No credentials at all: where dr (the AWS SDK's default chain) takes them from.
const HINT_NO_CREDENTIALS: &str = "no usable AWS credentials: dr reads AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY from the environment (put them in the --env-file for cron and interactive runs), or AWS_PROFILE's entry in ~/.aws/credentials, or the instance's / pod's role (EC2, ECS, EKS web identity)";

impl Shared {
    pub(super) fn error<E>(
        &self,
        operation: &'static str,
        full_key: &str,
        err: &SdkError<E, HttpResponse>,
    ) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let code = err.code().map(str::to_owned);
        let status = err.raw_response().map(|r| r.status().as_u16());
        let message = describe(err);
        tracing::debug!(
            operation,
            target = %self.target(full_key),
            error = %DisplayErrorContext(err),
            "S3 request failed"
        );
        let transport = matches!(
            err,
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_)
        );
        let hint = self.hint(code.as_deref(), status, transport, &message);
        StoreError::S3 {
            operation,
            target: self.target(full_key),
            code,
            status,
            message,
            hint,
        }
    }

    /// An answer that arrived but makes no sense (no ETag, no Content-Length, ...).
    pub(super) fn protocol_error(
        &self,
        operation: &'static str,
        full_key: &str,
        message: impl Into<String>,
    ) -> StoreError {
        StoreError::S3 {
            operation,
            target: self.target(full_key),
            code: None,
            status: None,
            message: message.into(),
            hint: None,
        }
    }

    fn hint(
        &self,
        code: Option<&str>,
        status: Option<u16>,
        transport: bool,
        message: &str,
    ) -> Option<String> {
        match code {
            Some("NoSuchBucket") => {
                return Some(format!(
                    "create the bucket `{}` or fix repository.url",
                    self.bucket
                ))
            }
            Some(
                "AccessDenied"
                | "InvalidAccessKeyId"
                | "SignatureDoesNotMatch"
                | "InvalidToken"
                | "ExpiredToken"
                | "InvalidSecurity",
            ) => return Some(HINT_CREDENTIALS.to_owned()),
            Some("PermanentRedirect" | "AuthorizationHeaderMalformed") => {
                return Some(
                    "the bucket lives in another region: set repository.region (or AWS_REGION)"
                        .to_owned(),
                )
            }
            _ => {}
        }
        if status == Some(403) {
            return Some(HINT_CREDENTIALS.to_owned());
        }
        if transport {
            if is_credentials_failure(message) {
                return Some(HINT_NO_CREDENTIALS.to_owned());
            }
            let endpoint = match &self.endpoint {
                Some(e) => format!(" (endpoint: {e})"),
                None => String::new(),
            };
            return Some(format!(
                "is the endpoint reachable? check repository.endpoint / AWS_ENDPOINT_URL{endpoint}"
            ));
        }
        None
    }
}

/// One line for the operator: the service's code and message, or the transport error chain.
/// (`DisplayErrorContext` appends a Debug dump of the whole response; that goes to the debug
/// log instead.)
fn describe<E>(err: &SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if let SdkError::ServiceError(service) = err {
        let status = service.raw().status().as_u16();
        let request_id = service
            .raw()
            .headers()
            .get("x-amz-request-id")
            .map(|id| format!(", request id {id}"))
            .unwrap_or_default();
        return match (err.code(), err.message()) {
            (Some(code), Some(message)) => format!("{code}: {message} (HTTP {status}{request_id})"),
            (Some(code), None) => format!("{code} (HTTP {status}{request_id})"),
            _ => format!("HTTP {status} without an error code{request_id}"),
        };
    }
    let chain = error_chain(err);
    // "dispatch failure: other: …credentials…": the request never left; say what stopped it.
    if is_credentials_failure(&chain) {
        let rest = chain
            .strip_prefix("dispatch failure: ")
            .map(|r| r.strip_prefix("other: ").unwrap_or(r))
            .unwrap_or(&chain);
        return format!("cannot load AWS credentials: {rest}");
    }
    chain
}

/// A request that failed before it was sent, for want of credentials (the SDK's provider
/// chain found none, or one failed), as opposed to a connection failure.
fn is_credentials_failure(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    [
        "credential provider",
        "credentials provider",
        "no credentials",
        "loading credentials",
        "load credentials",
    ]
    .iter()
    .any(|p| lower.contains(p))
}

/// `outer: inner: innermost`, skipping links that repeat the previous one.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.last().is_some_and(|last| last.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

pub(super) fn is_not_found<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> bool {
    match err.code() {
        Some("NoSuchKey" | "NotFound") => true,
        Some(_) => false,
        // HEAD answers have no body, so no code: 404 alone means "no such key".
        None => err.raw_response().map(|r| r.status().as_u16()) == Some(404),
    }
}
