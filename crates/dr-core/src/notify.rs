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

use crate::host::redact;
use crate::{Error, Kind, Result};

/// Per request.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Tries per message.
pub const ATTEMPTS: u32 = 3;
const BACKOFF: Duration = Duration::from_secs(1);

/// What the webhook receives (`POST`, `Content-Type: application/json`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct JobEvent {
    /// One line for chat: Slack, Mattermost and Discord (`/slack` endpoints) show it as is.
    pub text: String,
    pub target: String,
    pub job: String,
    pub backup_id: Option<String>,
    pub ok: bool,
    pub error: Option<String>,
    pub duration_seconds: f64,
    pub host: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

impl JobEvent {
    pub(crate) fn text_for(&self) -> String {
        let what = match &self.backup_id {
            Some(id) => format!("{} of `{}` ({id})", self.job, self.target),
            None => format!("{} of `{}`", self.job, self.target),
        };
        if self.ok {
            format!(
                "dr: {what} on {} succeeded in {:.1}s",
                self.host, self.duration_seconds
            )
        } else {
            format!(
                "dr: {what} on {} FAILED after {:.1}s: {}",
                self.host,
                self.duration_seconds,
                first_line(self.error.as_deref().unwrap_or("unknown error"))
            )
        }
    }
}

/// Sends webhooks and pings.
pub struct Notifier {
    client: reqwest::Client,
    webhook: Option<String>,
    on_success: bool,
    ping: Option<String>,
    backoff: Duration,
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
            backoff: BACKOFF,
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
        for attempt in 1..=ATTEMPTS {
            let request = match &body {
                Some(b) => self
                    .client
                    .post(url)
                    .header("content-type", "application/json")
                    .body(b.clone()),
                None => self.client.get(url),
            };
            match request.send().await {
                Ok(r) if r.status().is_success() => {
                    tracing::debug!("{what} delivered to {safe}");
                    return true;
                }
                Ok(r) => tracing::warn!(
                    "{what} to {safe}: HTTP {} (attempt {attempt}/{ATTEMPTS})",
                    r.status()
                ),
                // without_url: the URL may hold a token.
                Err(e) => tracing::warn!(
                    "{what} to {safe} failed: {} (attempt {attempt}/{ATTEMPTS})",
                    e.without_url()
                ),
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(self.backoff * attempt).await;
            }
        }
        tracing::error!(
            "{what} to {safe} could not be delivered after {ATTEMPTS} attempts; the job's result is unchanged"
        );
        false
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
        let mut e = JobEvent {
            text: String::new(),
            target: "app".into(),
            job: "backup".into(),
            backup_id: ok.then(|| "20261122T030000Z".into()),
            ok,
            error: (!ok)
                .then(|| "backup of target `app` failed: connection refused\nhint: x".into()),
            duration_seconds: 1.25,
            host: "db1".into(),
            started_at: Utc::now(),
            finished_at: Utc::now(),
        };
        e.text = e.text_for();
        e
    }

    #[test]
    fn text_is_one_line_naming_target_job_and_error() {
        assert_eq!(
            event(true).text,
            "dr: backup of `app` (20261122T030000Z) on db1 succeeded in 1.2s"
        );
        assert_eq!(
            event(false).text,
            "dr: backup of `app` on db1 FAILED after 1.2s: backup of target `app` failed: connection refused"
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
        n.backoff = Duration::from_millis(10);
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
