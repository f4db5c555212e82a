//! Prometheus metrics: what `dr daemon` serves at `GET /metrics`, and what one-shot commands
//! write to a node-exporter textfile (`notify.textfile_path`).
//!
//! | metric | labels | meaning |
//! | --- | --- | --- |
//! | `dr_last_success_timestamp_seconds` | target, operation | end of the last successful run |
//! | `dr_last_run_timestamp_seconds` | target, operation | end of the last run, whatever its result |
//! | `dr_last_run_success` | target, operation | 1 if the last run succeeded, else 0 |
//! | `dr_last_duration_seconds` | target, operation | duration of the last run |
//! | `dr_failures_total` | target, operation | failed runs (counter) |
//! | `dr_last_backup_bytes` | target | stored size of the last successful backup |
//! | `dr_last_verification_passed` | target | 1 if the last verification passed, else 0 |
//! | `dr_last_verification_timestamp_seconds` | target | when the last verification ran |
//! | `dr_wal_last_archived_timestamp_seconds` | target | when the newest archived WAL was pushed |
//! | `dr_wal_rpo_seconds` | target | its age when last assessed: the RPO then |
//! | `dr_wal_gap` | target | 1 if a WAL segment is missing before a later one, else 0 |
//! | `dr_wal_max_lag_seconds` | target | `[targets.wal] max_lag`, for the lag alert |
//!
//! The WAL series exist for targets with `[targets.wal]`, refreshed every minute by `dr
//! daemon` from what `dr status` reads ([`Metrics::record_wal`]). Alert on
//! `time() - dr_wal_last_archived_timestamp_seconds > dr_wal_max_lag_seconds` (not on the RPO
//! gauge alone: it is only as fresh as its last assessment) and on `dr_wal_gap == 1`.
//!
//! The run's kind is the `operation` label (backup, base-backup, verify, drill, prune, copy),
//! not `job`: Prometheus owns `job` and would rename ours to `exported_job` on scrape. Textfiles written with `job`
//! by older versions still load. Alert on
//! `time() - dr_last_success_timestamp_seconds{operation="backup"} > 26*3600` and on
//! `dr_last_verification_passed == 0`; `deploy/prometheus/dr-alerts.yml` has the rules.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// One finished run.
#[derive(Debug, Clone)]
pub struct Sample {
    pub target: String,
    /// backup, base-backup, verify, drill, prune or copy: the `operation` label.
    pub operation: String,
    pub ok: bool,
    pub finished_at: DateTime<Utc>,
    pub duration_seconds: f64,
    pub backup_bytes: Option<u64>,
    pub verification_passed: Option<bool>,
}

struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
}

const FAMILIES: &[Family] = &[
    Family {
        name: "dr_last_success_timestamp_seconds",
        kind: "gauge",
        help: "Unix time the last successful run finished.",
        labels: &["target", "operation"],
    },
    Family {
        name: "dr_last_run_timestamp_seconds",
        kind: "gauge",
        help: "Unix time the last run finished, whatever its result.",
        labels: &["target", "operation"],
    },
    Family {
        name: "dr_last_run_success",
        kind: "gauge",
        help: "1 if the last run succeeded, 0 if it failed.",
        labels: &["target", "operation"],
    },
    Family {
        name: "dr_last_duration_seconds",
        kind: "gauge",
        help: "Duration of the last run.",
        labels: &["target", "operation"],
    },
    Family {
        name: "dr_failures_total",
        kind: "counter",
        help: "Failed runs.",
        labels: &["target", "operation"],
    },
    Family {
        name: "dr_last_backup_bytes",
        kind: "gauge",
        help: "Stored size of the last successful backup.",
        labels: &["target"],
    },
    Family {
        name: "dr_last_verification_passed",
        kind: "gauge",
        help: "1 if the last restore verification passed, 0 if it failed.",
        labels: &["target"],
    },
    Family {
        name: "dr_last_verification_timestamp_seconds",
        kind: "gauge",
        help: "Unix time of the last restore verification.",
        labels: &["target"],
    },
    Family {
        name: "dr_wal_last_archived_timestamp_seconds",
        kind: "gauge",
        help: "Unix time the newest archived WAL file was pushed.",
        labels: &["target"],
    },
    Family {
        name: "dr_wal_rpo_seconds",
        kind: "gauge",
        help: "Age of the newest archived WAL when last assessed: the commits a loss of the server would cost.",
        labels: &["target"],
    },
    Family {
        name: "dr_wal_gap",
        kind: "gauge",
        help: "1 if a WAL segment is missing before a later archived one (no restore passes it), else 0.",
        labels: &["target"],
    },
    Family {
        name: "dr_wal_max_lag_seconds",
        kind: "gauge",
        help: "The configured max_lag of the target's WAL archiving.",
        labels: &["target"],
    },
];

/// Series values by family name, then label values (in the family's label order).
type Series = BTreeMap<&'static str, BTreeMap<Vec<String>, f64>>;

/// The metric values; shared between the jobs and the HTTP server.
#[derive(Default)]
pub struct Metrics {
    series: Mutex<Series>,
}

fn ts(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    fn lock(&self) -> MutexGuard<'_, Series> {
        // A panic while holding the lock leaves plain numbers behind: still usable.
        self.series.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(s: &mut Series, name: &'static str, labels: &[&str], v: f64) {
        s.entry(name)
            .or_default()
            .insert(labels.iter().map(|l| l.to_string()).collect(), v);
    }

    /// Make the failure counter exist (at 0) for a target and operation, so `increase()` works
    /// from the first failure on.
    pub fn touch(&self, target: &str, operation: &str) {
        let mut s = self.lock();
        s.entry("dr_failures_total")
            .or_default()
            .entry(vec![target.to_string(), operation.to_string()])
            .or_insert(0.0);
    }

    /// Record a finished run.
    pub fn record(&self, r: &Sample) {
        let mut s = self.lock();
        let tj = [r.target.as_str(), r.operation.as_str()];
        let t = [r.target.as_str()];
        let now = ts(r.finished_at);
        Metrics::set(&mut s, "dr_last_run_timestamp_seconds", &tj, now);
        Metrics::set(
            &mut s,
            "dr_last_run_success",
            &tj,
            f64::from(u8::from(r.ok)),
        );
        Metrics::set(&mut s, "dr_last_duration_seconds", &tj, r.duration_seconds);
        let failures = s
            .entry("dr_failures_total")
            .or_default()
            .entry(vec![r.target.clone(), r.operation.clone()])
            .or_insert(0.0);
        if !r.ok {
            *failures += 1.0;
        }
        if r.ok {
            Metrics::set(&mut s, "dr_last_success_timestamp_seconds", &tj, now);
            if let Some(b) = r.backup_bytes {
                Metrics::set(&mut s, "dr_last_backup_bytes", &t, b as f64);
            }
        }
        if let Some(p) = r.verification_passed {
            Metrics::set(
                &mut s,
                "dr_last_verification_passed",
                &t,
                f64::from(u8::from(p)),
            );
            Metrics::set(&mut s, "dr_last_verification_timestamp_seconds", &t, now);
        }
    }

    /// What the repository says, for a daemon that just started: the newest backup's end time
    /// and size, the newest verification's result. Never overrides a newer value.
    pub fn seed_from_repository(&self, entries: &[dr_core::repo::BackupEntry]) {
        let mut s = self.lock();
        for e in entries.iter().rev() {
            // Oldest first: newer entries overwrite.
            let m = &e.manifest;
            let tj = [m.target.as_str(), "backup"];
            let t = [m.target.as_str()];
            let seen = s
                .get("dr_last_success_timestamp_seconds")
                .and_then(|f| f.get(&vec![m.target.clone(), "backup".to_string()]))
                .copied();
            if !matches!(seen, Some(v) if v > ts(m.finished_at)) {
                Metrics::set(
                    &mut s,
                    "dr_last_success_timestamp_seconds",
                    &tj,
                    ts(m.finished_at),
                );
                Metrics::set(&mut s, "dr_last_backup_bytes", &t, m.stored_bytes() as f64);
            }
            if let Some(v) = &e.verification {
                let seen = s
                    .get("dr_last_verification_timestamp_seconds")
                    .and_then(|f| f.get(&vec![m.target.clone()]))
                    .copied();
                if !matches!(seen, Some(x) if x > ts(v.verified_at)) {
                    Metrics::set(
                        &mut s,
                        "dr_last_verification_passed",
                        &t,
                        f64::from(u8::from(v.passed())),
                    );
                    Metrics::set(
                        &mut s,
                        "dr_last_verification_timestamp_seconds",
                        &t,
                        ts(v.verified_at),
                    );
                }
            }
        }
    }

    /// The WAL of `target` as `dr status` assessed it. Nothing archived yet leaves the time
    /// and RPO series out (there is no time to report), gap and max_lag in.
    pub fn record_wal(&self, target: &str, w: &dr_core::status::wal::WalStatus) {
        let mut s = self.lock();
        let t = [target];
        if let Some(at) = w.last_archived_at {
            Metrics::set(&mut s, "dr_wal_last_archived_timestamp_seconds", &t, ts(at));
        }
        if let Some(rpo) = w.rpo_seconds {
            Metrics::set(&mut s, "dr_wal_rpo_seconds", &t, rpo as f64);
        }
        Metrics::set(&mut s, "dr_wal_gap", &t, f64::from(u8::from(w.gap())));
        Metrics::set(
            &mut s,
            "dr_wal_max_lag_seconds",
            &t,
            w.max_lag_seconds as f64,
        );
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let s = self.lock();
        let mut out = String::new();
        for f in FAMILIES {
            let Some(series) = s.get(f.name) else {
                continue;
            };
            if series.is_empty() {
                continue;
            }
            out.push_str(&format!(
                "# HELP {} {}\n# TYPE {} {}\n",
                f.name, f.help, f.name, f.kind
            ));
            for (labels, v) in series {
                let pairs: Vec<String> = f
                    .labels
                    .iter()
                    .zip(labels)
                    .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                    .collect();
                out.push_str(&format!("{}{{{}}} {v}\n", f.name, pairs.join(",")));
            }
        }
        out
    }

    /// Read back what [`Metrics::render`] wrote (unknown lines are ignored). A `job` label, as
    /// written by versions before the rename, is read as `operation`.
    pub fn load_text(&self, text: &str) {
        let mut s = self.lock();
        for line in text.lines() {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let Some((name, rest)) = series.split_once('{') else {
                continue;
            };
            let Some(f) = FAMILIES.iter().find(|f| f.name == name) else {
                continue;
            };
            let Some(body) = rest.strip_suffix('}') else {
                continue;
            };
            let mut found: BTreeMap<&str, String> = BTreeMap::new();
            // Our own output: label values never hold `",` unescaped.
            for pair in body.split("\",") {
                let Some((k, v)) = pair.split_once("=\"") else {
                    continue;
                };
                let v = v.strip_suffix('"').unwrap_or(v);
                found.insert(
                    k,
                    v.replace("\\n", "\n")
                        .replace("\\\"", "\"")
                        .replace("\\\\", "\\"),
                );
            }
            if !found.contains_key("operation") {
                if let Some(v) = found.remove("job") {
                    found.insert("operation", v);
                }
            }
            let labels: Option<Vec<String>> =
                f.labels.iter().map(|l| found.get(l).cloned()).collect();
            if let Some(labels) = labels {
                s.entry(f.name).or_default().insert(labels, value);
            }
        }
    }

    /// Write the textfile: a temp file in the same directory, then rename, so the collector
    /// never reads half a file.
    pub fn write_textfile(&self, path: &Path) -> std::io::Result<()> {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut tmp = tempfile::Builder::new()
            .prefix(".dr-metrics-")
            .suffix(".tmp")
            .tempfile_in(dir)?;
        tmp.write_all(self.render().as_bytes())?;
        tmp.as_file().sync_all()?;
        // Readable by node-exporter, like a file written with the usual umask.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644));
        }
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }
}

/// Serve `GET /metrics` (and a pointer to it at `/`) on `listener` with HTTP/1.1, one request
/// per connection, until `stop` is cancelled. Then no new connection is accepted, open ones
/// finish the response they are writing (each is bounded by [`CONNECTION_TIMEOUT`]) and this
/// returns.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, stop: CancellationToken) {
    let mut connections = JoinSet::new();
    loop {
        let conn = tokio::select! {
            c = listener.accept() => c,
            () = stop.cancelled() => break,
        };
        // Reap finished connections so the set stays small on a long-running daemon.
        while connections.try_join_next().is_some() {}
        match conn {
            Ok((stream, _)) => {
                let metrics = Arc::clone(&metrics);
                let stop = stop.clone();
                connections.spawn(serve_connection(stream, metrics, stop));
            }
            Err(e) => {
                tracing::warn!("metrics endpoint: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    while connections.join_next().await.is_some() {}
}

/// How long one scrape connection may stay open, from accept to the last byte.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

async fn serve_connection(
    stream: tokio::net::TcpStream,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let service = service_fn(move |req: Request<Incoming>| {
        let metrics = Arc::clone(&metrics);
        async move { Ok::<_, Infallible>(answer(req.method(), req.uri().path(), &metrics)) }
    });
    let conn = http1::Builder::new()
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    let served = async {
        tokio::select! {
            r = conn.as_mut() => r,
            () = stop.cancelled() => {
                // Finish the response in flight (if any), then close.
                conn.as_mut().graceful_shutdown();
                conn.as_mut().await
            }
        }
    };
    match tokio::time::timeout(CONNECTION_TIMEOUT, served).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!("metrics endpoint: {e}"),
        Err(_) => {
            tracing::debug!("metrics endpoint: connection closed after {CONNECTION_TIMEOUT:?}")
        }
    }
}

/// The response to `method path` (the query string already stripped). hyper leaves out the
/// body of a HEAD response.
fn answer(method: &Method, path: &str, metrics: &Metrics) -> Response<String> {
    let text = |status: StatusCode, content_type: &'static str, body: String| {
        let mut r = Response::new(body);
        *r.status_mut() = status;
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        r
    };
    if method != Method::GET && method != Method::HEAD {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".to_string(),
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match path {
        "/metrics" => text(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        "/" => text(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            "dr daemon: metrics at /metrics\n".to_string(),
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(target: &str, operation: &str, ok: bool) -> Sample {
        Sample {
            target: target.into(),
            operation: operation.into(),
            ok,
            finished_at: DateTime::from_timestamp(1_790_000_000, 500_000_000).unwrap_or_default(),
            duration_seconds: 2.5,
            backup_bytes: ok.then_some(4096),
            verification_passed: (operation == "verify").then_some(ok),
        }
    }

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.touch("db", "backup");
        m.record(&sample("app", "backup", true));
        m.record(&sample("app", "backup", false));
        m.record(&sample("app", "verify", false));
        let text = m.render();
        for line in [
            "# TYPE dr_failures_total counter",
            "dr_failures_total{target=\"app\",operation=\"backup\"} 1",
            "dr_failures_total{target=\"db\",operation=\"backup\"} 0",
            "dr_last_success_timestamp_seconds{target=\"app\",operation=\"backup\"} 1790000000.5",
            "dr_last_run_success{target=\"app\",operation=\"backup\"} 0",
            "dr_last_duration_seconds{target=\"app\",operation=\"verify\"} 2.5",
            "dr_last_backup_bytes{target=\"app\"} 4096",
            "dr_last_verification_passed{target=\"app\"} 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(!text
            .contains("dr_last_success_timestamp_seconds{target=\"app\",operation=\"verify\"}"));
    }

    #[test]
    fn wal_series_from_the_status() {
        let m = Metrics::default();
        let mut w = dr_core::status::wal::WalStatus {
            mode: "archive".into(),
            timeline: 1,
            files: 4,
            newest: Some("000000010000000000000004".into()),
            newest_partial: false,
            last_archived_at: chrono::DateTime::from_timestamp(1_796_000_000, 0),
            rpo_seconds: Some(42),
            max_lag_seconds: 300,
            continuous_from: Some("000000010000000000000001".into()),
            first_missing: Some("000000010000000000000003".into()),
            windows: vec![],
        };
        m.record_wal("app", &w);
        let text = m.render();
        for line in [
            "dr_wal_last_archived_timestamp_seconds{target=\"app\"} 1796000000",
            "dr_wal_rpo_seconds{target=\"app\"} 42",
            "dr_wal_gap{target=\"app\"} 1",
            "dr_wal_max_lag_seconds{target=\"app\"} 300",
            "# TYPE dr_wal_gap gauge",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        w.first_missing = None;
        m.record_wal("app", &w);
        assert!(m.render().contains("dr_wal_gap{target=\"app\"} 0\n"));
        // The textfile keeps them across one-shot runs.
        let again = Metrics::default();
        again.load_text(&m.render());
        assert_eq!(again.render(), m.render());
    }

    #[test]
    fn text_round_trips() {
        let m = Metrics::default();
        m.record(&sample("app", "backup", false));
        m.record(&sample("we\"ird", "prune", true));
        let again = Metrics::default();
        again.load_text(&m.render());
        assert_eq!(again.render(), m.render());
        again.load_text("garbage\nother_metric{x=\"1\"} 3\n# comment\n");
        assert_eq!(again.render(), m.render());
    }

    #[test]
    fn old_job_label_loads_as_operation() {
        let m = Metrics::default();
        m.load_text(
            "# TYPE dr_failures_total counter\n\
             dr_failures_total{target=\"app\",job=\"backup\"} 3\n\
             dr_last_run_success{target=\"app\",job=\"verify\"} 1\n",
        );
        let text = m.render();
        assert!(
            text.contains("dr_failures_total{target=\"app\",operation=\"backup\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("dr_last_run_success{target=\"app\",operation=\"verify\"} 1\n"),
            "{text}"
        );
        assert!(!text.contains("job="), "{text}");
        // Counting goes on from the old value.
        m.record(&sample("app", "backup", false));
        assert!(m
            .render()
            .contains("dr_failures_total{target=\"app\",operation=\"backup\"} 4\n"));
    }

    #[test]
    fn textfile_is_replaced_whole() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("dr.prom");
        let m = Metrics::default();
        m.record(&sample("app", "backup", true));
        m.write_textfile(&path).expect("write");
        m.write_textfile(&path).expect("rewrite");
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text, m.render());
        let leftovers = std::fs::read_dir(dir.path()).expect("ls").count();
        assert_eq!(leftovers, 1);
    }

    /// One request on a fresh connection; everything the server sent until it closed.
    async fn request(addr: std::net::SocketAddr, head: String) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(head.as_bytes()).await.expect("send");
        let mut out = String::new();
        // The server closes after one response: reading to the end must not hang.
        tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
            .await
            .expect("server closes the connection")
            .expect("read");
        out
    }

    #[tokio::test]
    async fn serves_metrics_over_http() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let m = Arc::new(Metrics::default());
        m.record(&sample("app", "backup", true));
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(listener, Arc::clone(&m), stop.clone()));
        let get = |path: &str| request(addr, format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"));

        let ok = get("/metrics").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        let (head, body) = ok.split_once("\r\n\r\n").expect("head and body");
        let head = head.to_ascii_lowercase();
        assert!(
            head.contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
            "{head}"
        );
        assert!(head.contains("connection: close"), "{head}");
        assert_eq!(body, m.render());
        assert!(get("/metrics?x=1").await.starts_with("HTTP/1.1 200 OK\r\n"));

        let root = get("/").await;
        assert!(root.starts_with("HTTP/1.1 200 OK\r\n"), "{root}");
        assert!(
            root.ends_with("\r\n\r\ndr daemon: metrics at /metrics\n"),
            "{root}"
        );
        assert!(get("/nope").await.starts_with("HTTP/1.1 404"));

        let head_only = request(addr, "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n".into()).await;
        assert!(head_only.starts_with("HTTP/1.1 200 OK\r\n"), "{head_only}");
        assert!(
            head_only.ends_with("\r\n\r\n"),
            "HEAD has no body: {head_only}"
        );

        let post = request(
            addr,
            "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".into(),
        )
        .await;
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");

        // A client that connected but sent nothing does not hold up the stop.
        let idle = tokio::net::TcpStream::connect(addr).await.expect("connect");
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("server stops promptly")
            .expect("server task");
        drop(idle);
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "listener closed"
        );
    }
}
