//! Alerts: a webhook (JSON with a Slack-compatible `text`) and healthchecks.io-style pings for
//! every backup, verify and prune, from `dr daemon` and from one-shot commands alike.
//!
//! Delivery is best effort and never changes a job's outcome: each request has a 10 s
//! timeout and is tried 3 times with a short backoff; failures are logged. Webhook and ping
//! URLs usually carry tokens, so logs name only their scheme and host.
//!
//! This module only delivers; [`crate::report::Reporter`] decides what to send when.

use std::time::Duration;

use chrono::{DateTime, Utc};
use dr_config::Config;
use serde::Serialize;

use dr_core::host::redact;
use dr_core::{Error, Kind, Result};

/// Per request.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Tries per message.
pub const ATTEMPTS: u32 = dr_retry::WEBHOOK.attempts;

/// What the webhook receives (`POST`, `Content-Type: application/json`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct JobEvent {
    /// For chat (Slack, Mattermost and Discord `/slack` endpoints show it as is): one line on
    /// success; on failure what failed, why (the last lines of detail, e.g. a child's
    /// stderr) and the hint, within [`TEXT_LIMIT`].
    pub text: String,
    pub target: String,
    pub job: String,
    pub backup_id: Option<String>,
    pub ok: bool,
    /// A run that did not start because another run holds the target's lock.
    pub skipped: bool,
    /// The whole error as the command line prints it.
    pub error: Option<String>,
    /// Its kind (`failed`, `unavailable`, `integrity`, ... as in docs/EXIT_CODES.md).
    pub error_kind: Option<dr_core::Kind>,
    pub hint: Option<String>,
    /// Whether trying again later may help.
    pub retryable: Option<bool>,
    pub duration_seconds: f64,
    pub host: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
}

/// Slack shows up to 4,000 characters of `text`; stay under it.
pub const TEXT_LIMIT: usize = 3_500;
/// Detail lines (the end of a child's stderr, failed checks) carried in `text`.
const TEXT_DETAIL_LINES: usize = 8;

impl JobEvent {
    /// The event for one finished run.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        target: String,
        job: String,
        backup_id: Option<String>,
        error: Option<&dr_core::Error>,
        duration_seconds: f64,
        host: String,
        started_at: DateTime<Utc>,
        finished_at: DateTime<Utc>,
    ) -> JobEvent {
        let mut e = JobEvent {
            text: String::new(),
            target,
            job,
            backup_id,
            ok: error.is_none(),
            skipped: error.is_some_and(|e| e.kind == dr_core::Kind::Locked),
            error: error.map(ToString::to_string),
            error_kind: error.map(|e| e.kind),
            hint: error.and_then(|e| e.hint.clone()),
            retryable: error.map(|e| e.retryable),
            duration_seconds,
            host,
            started_at,
            finished_at,
        };
        e.text = e.text_for(error);
        e
    }

    fn text_for(&self, error: Option<&dr_core::Error>) -> String {
        let what = match &self.backup_id {
            Some(id) => format!("{} of `{}` ({id})", self.job, self.target),
            None => format!("{} of `{}`", self.job, self.target),
        };
        let Some(err) = error else {
            return format!(
                "dr: {what} on {} succeeded in {:.1}s",
                self.host, self.duration_seconds
            );
        };
        if self.skipped {
            return format!("dr: {what} on {} SKIPPED: {}", self.host, err.message);
        }
        let mut text = format!(
            "dr: {what} on {} FAILED after {:.1}s: {}",
            self.host, self.duration_seconds, err.message
        );
        let skip = err.details.len().saturating_sub(TEXT_DETAIL_LINES);
        for line in err.details.iter().skip(skip).chain(err.causes.iter()) {
            text.push('\n');
            text.push_str(line);
        }
        if let Some(h) = &err.hint {
            text.push_str("\nhint: ");
            text.push_str(h);
        }
        if text.len() > TEXT_LIMIT {
            let mut cut = TEXT_LIMIT - 1;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push('…');
        }
        text
    }
}

/// Sends webhooks and pings.
pub struct Notifier {
    client: reqwest::Client,
    webhook: Option<String>,
    on_success: bool,
    ping: Option<String>,
    retry: dr_retry::Policy,
}

impl Notifier {
    /// `None` when neither a webhook nor a ping URL is configured.
    pub fn from_config(config: &Config) -> Result<Option<Notifier>> {
        let n = &config.notify;
        if n.webhook_url.is_none() && n.ping_url.is_none() {
            return Ok(None);
        }
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .user_agent(concat!("dr/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                Error::new(
                    Kind::Failed,
                    format!("cannot set up the HTTP client for notifications: {e}"),
                )
            })?;
        Ok(Some(Notifier {
            client,
            webhook: n.webhook_url.clone(),
            on_success: n.webhook_on_success,
            ping: n.ping_url.clone(),
            retry: dr_retry::WEBHOOK,
        }))
    }

    fn ping_url(&self, target: &str, job: &str, suffix: &str) -> Option<String> {
        let base = self.ping.as_ref()?;
        let base = base.replace("{target}", target).replace("{job}", job);
        Some(format!("{}{suffix}", base.trim_end_matches('/')))
    }

    /// `{ping_url}/start`.
    pub async fn started(&self, target: &str, job: &str) {
        if let Some(url) = self.ping_url(target, job, "/start") {
            self.deliver("start ping", &url, None).await;
        }
    }

    /// The webhook (on failure, or always with `webhook_on_success`), then `{ping_url}` or
    /// `{ping_url}/fail`.
    pub async fn finished(&self, event: &JobEvent) {
        if let Some(url) = &self.webhook {
            if !event.ok || self.on_success {
                match serde_json::to_vec(event) {
                    Ok(body) => {
                        self.deliver("webhook", url, Some(body)).await;
                    }
                    Err(e) => tracing::warn!("cannot encode the webhook message: {e}"),
                }
            }
        }
        let suffix = if event.ok { "" } else { "/fail" };
        if let Some(url) = self.ping_url(&event.target, &event.job, suffix) {
            // healthchecks.io shows a POST body in the check's log: send the error there.
            let body = (!event.ok).then(|| event.error.clone().unwrap_or_default().into_bytes());
            self.deliver("ping", &url, body).await;
        }
    }

    /// POST `body` (JSON) or GET; retried; `true` when a 2xx came back.
    async fn deliver(&self, what: &str, url: &str, body: Option<Vec<u8>>) -> bool {
        let safe = redact(url);
        let send = || async {
            let request = match &body {
                Some(b) => self
                    .client
                    .post(url)
                    .header("content-type", "application/json")
                    .body(b.clone()),
                None => self.client.get(url),
            };
            match request.send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(format!("HTTP {}", r.status())),
                // without_url: the URL may hold a token.
                Err(e) => Err(e.without_url().to_string()),
            }
        };
        // Every failure is tried again: the receiver may be restarting, and a webhook is
        // cheap to repeat.
        let delivered = self
            .retry
            .run(&format!("{what} to {safe}"), None, |_: &String| true, send)
            .await;
        match delivered {
            Ok(()) => {
                tracing::debug!("{what} delivered to {safe}");
                true
            }
            Err(last) => {
                tracing::error!(
                    "{what} to {safe} could not be delivered after {} attempts ({last}); the job's result is unchanged",
                    self.retry.attempts
                );
                false
            }
        }
    }
}

/// Loopback receivers and configs for this module's tests and [`crate::report`]'s.
#[cfg(test)]
pub(crate) mod test_support {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    use dr_config::Config;

    /// A loopback HTTP server answering `status` and recording "METHOD PATH\nBODY".
    pub(crate) fn receiver(status: u16) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        std::thread::spawn(move || {
            for conn in listener.incoming().take(20) {
                let Ok(mut conn) = conn else { return };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head_end, len) = loop {
                    let n = conn.read(&mut chunk).unwrap_or(0);
                    if n == 0 {
                        break (buf.len(), 0);
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..p]).to_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        break (p + 4, len);
                    }
                };
                while buf.len() < head_end + len {
                    let n = conn.read(&mut chunk).unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let text = String::from_utf8_lossy(&buf).into_owned();
                let line = text.lines().next().unwrap_or("").to_string();
                let mut parts = line.split(' ');
                let entry = format!(
                    "{} {}\n{}",
                    parts.next().unwrap_or(""),
                    parts.next().unwrap_or(""),
                    text.get(head_end..).unwrap_or("")
                );
                if let Ok(mut s) = log.lock() {
                    s.push(entry);
                }
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        (format!("http://{addr}"), seen)
    }

    pub(crate) fn config(extra: &str) -> Config {
        Config::from_toml_str(
            &format!(
                r#"
[repository]
url = "file:///tmp/nowhere"
[encryption]
recipients = ["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"]
[[targets]]
name = "app"
url = "postgres://u@127.0.0.1:1/app"
{extra}
"#
            ),
            None,
        )
        .expect("config")
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{config, receiver};
    use super::*;
    use std::net::TcpListener;

    fn event(ok: bool) -> JobEvent {
        let err = dr_core::Error::new(
            Kind::Failed,
            "backup of target `app` failed: pg_dump failed (exit status 1)\npg_dump: error: server closed the connection unexpectedly\npg_dump: detail: COPY public.orders",
        ).with_hint("check the network");
        JobEvent::new(
            "app".into(),
            "backup".into(),
            ok.then(|| "20261122T030000Z".into()),
            (!ok).then_some(&err),
            1.25,
            "db1".into(),
            Utc::now(),
            Utc::now(),
        )
    }

    #[test]
    fn text_names_target_job_cause_and_hint() {
        assert_eq!(
            event(true).text,
            "dr: backup of `app` (20261122T030000Z) on db1 succeeded in 1.2s"
        );
        assert_eq!(
            event(false).text,
            "dr: backup of `app` on db1 FAILED after 1.2s: backup of target `app` failed: pg_dump failed (exit status 1)\npg_dump: error: server closed the connection unexpectedly\npg_dump: detail: COPY public.orders\nhint: check the network"
        );
        let e = event(false);
        assert_eq!(e.error_kind, Some(Kind::Failed));
        assert_eq!(e.hint.as_deref(), Some("check the network"));
        let long = dr_core::Error::new(Kind::Failed, format!("x\n{}", "y".repeat(10_000)));
        let ev = JobEvent::new(
            "a".into(),
            "backup".into(),
            None,
            Some(&long),
            1.0,
            "h".into(),
            Utc::now(),
            Utc::now(),
        );
        assert!(ev.text.len() <= TEXT_LIMIT + 3, "{}", ev.text.len());
    }

    #[test]
    fn a_lock_clash_is_a_skipped_run() {
        let locked =
            dr_core::Error::new(Kind::Locked, "target `app` is locked by db2 pid 7 (backup)");
        let ev = JobEvent::new(
            "app".into(),
            "backup".into(),
            None,
            Some(&locked),
            0.1,
            "db1".into(),
            Utc::now(),
            Utc::now(),
        );
        assert!(ev.skipped);
        assert_eq!(
            ev.text,
            "dr: backup of `app` on db1 SKIPPED: target `app` is locked by db2 pid 7 (backup)"
        );
    }

    #[test]
    fn redaction_keeps_scheme_and_host_only() {
        assert_eq!(
            redact("https://hooks.slack.com/services/T0/B0/SECRET"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(
            redact("http://user:pw@127.0.0.1:8080/x?token=s"),
            "http://127.0.0.1:8080/…"
        );
        assert!(!redact("not a url with SECRET").contains("SECRET"));
    }

    #[tokio::test]
    async fn failure_sends_webhook_and_fail_ping_success_only_ping() {
        let (base, seen) = receiver(200);
        let c = config(&format!(
            "[notify]\nwebhook_url = \"{base}/hook\"\nping_url = \"{base}/ping/{{target}}\"\n"
        ));
        let n = Notifier::from_config(&c).expect("ok").expect("configured");
        n.started("app", "backup").await;
        n.finished(&event(false)).await;
        n.finished(&event(true)).await;
        let got = seen.lock().expect("lock").clone();
        assert_eq!(got.len(), 4, "{got:#?}");
        assert_eq!(got[0], "GET /ping/app/start\n");
        assert!(got[1].starts_with("POST /hook\n"), "{}", got[1]);
        let body: serde_json::Value =
            serde_json::from_str(got[1].split_once('\n').map(|x| x.1).unwrap_or("")).expect("json");
        assert_eq!(body["ok"], false);
        assert_eq!(body["target"], "app");
        assert!(
            got[2].starts_with("POST /ping/app/fail\nbackup of target"),
            "{}",
            got[2]
        );
        // No webhook on success unless asked.
        assert_eq!(got[3], "GET /ping/app\n");
    }

    #[tokio::test]
    async fn undeliverable_is_retried_then_given_up() {
        let (base, seen) = receiver(500);
        let c = config(&format!("[notify]\nwebhook_url = \"{base}/hook\"\n"));
        let mut n = Notifier::from_config(&c).expect("ok").expect("configured");
        n.retry = dr_retry::Policy::new(
            ATTEMPTS,
            Duration::from_millis(10),
            Duration::from_millis(20),
        );
        assert!(
            !n.deliver("webhook", &format!("{base}/hook"), Some(b"{}".to_vec()))
                .await
        );
        assert_eq!(seen.lock().expect("lock").len(), ATTEMPTS as usize);
        // A closed port: an error, not a panic, and no hang.
        let closed = {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        };
        assert!(
            !n.deliver("webhook", &format!("http://{closed}/x"), None)
                .await
        );
    }
}
