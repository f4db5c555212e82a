//! End-to-end: `dr daemon` (schedules, SIGTERM, /metrics) and alerts (webhook, pings,
//! textfile) from the daemon and from one-shot commands, against real PostgreSQL and a
//! directory repository. Webhook receivers and metrics scrapes stay on loopback.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::*;

/// A config with a directory repository, one target `app` at `target_url`, and `extra` TOML
/// appended (sections only).
fn write_config(ws: &Workspace, target_url: &str, extra: &str) -> PathBuf {
    let recipient = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";
    let repo = ws.path().join("repo");
    ws.write(
        "dr.toml",
        &format!(
            r#"
[repository]
url = "file://{}"

[encryption]
recipients = ["{recipient}"]

[[targets]]
name = "app"
url = "{target_url}"

{extra}
"#,
            repo.display()
        ),
    )
}

/// A database with a little data.
fn small_postgres() -> Postgres {
    let pg = Postgres::start();
    pg.create_db("app");
    pg.psql(
        "app",
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 1000) g;",
    );
    pg
}

/// A loopback HTTP server that records "METHOD PATH" and the body of each request and
/// answers 200.
struct Receiver {
    url: String,
    seen: Arc<Mutex<Vec<(String, String)>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind receiver");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        thread::spawn(move || {
            for conn in listener.incoming().take(100) {
                let Ok(mut conn) = conn else { return };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let mut want = None;
                loop {
                    if let Some(w) = want {
                        if buf.len() >= w {
                            break;
                        }
                    }
                    let n = conn.read(&mut chunk).unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if want.is_none() {
                        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..p]).to_lowercase();
                            let len: usize = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse().ok())
                                .unwrap_or(0);
                            want = Some(p + 4 + len);
                        }
                    }
                }
                let text = String::from_utf8_lossy(&buf).into_owned();
                let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
                let mut first = head.lines().next().unwrap_or("").split(' ');
                let request = format!(
                    "{} {}",
                    first.next().unwrap_or(""),
                    first.next().unwrap_or("")
                );
                log.lock()
                    .expect("receiver log")
                    .push((request, body.to_string()));
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
            }
        });
        Receiver { url, seen }
    }

    fn requests(&self) -> Vec<(String, String)> {
        self.seen.lock().expect("receiver log").clone()
    }
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    free_port()
}

/// A `dr daemon` child, killed if the test fails before it exits.
struct Daemon {
    child: Child,
    stderr: PathBuf,
}

impl Daemon {
    fn start(ws: &Workspace, cfg: &Path) -> Daemon {
        let stderr = ws.path().join("daemon.stderr");
        let mut cmd = ws.dr_command(cfg, &["daemon"]);
        cmd.stdout(File::create(ws.path().join("daemon.stdout")).expect("stdout file"))
            .stderr(File::create(&stderr).expect("stderr file"));
        let child = cmd.spawn().expect("start dr daemon");
        Daemon { child, stderr }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// The exit code, waiting at most `timeout`.
    fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for(timeout: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ready() {
            return true;
        }
        thread::sleep(Duration::from_millis(100));
    }
    ready()
}

/// GET /metrics over loopback; the body, or `None` if nothing answers yet.
fn scrape(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    Some(body.to_string())
}

/// Parse Prometheus text: (metric{labels}, value) per sample line.
fn samples(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad sample line {l:?}"));
            let v: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {l:?}"));
            (series.to_string(), v)
        })
        .collect()
}

fn sample(text: &str, series: &str) -> Option<f64> {
    samples(text)
        .into_iter()
        .find(|(s, _)| s == series)
        .map(|(_, v)| v)
}

#[test]
fn daemon_runs_a_per_second_schedule_serves_metrics_and_stops_cleanly_on_sigterm() {
    let ws = Workspace::new();
    let pg = small_postgres();
    let metrics_port = free_port();
    let cfg = write_config(
        &ws,
        &pg.url("app"),
        &format!(
            "[daemon]\nmetrics_address = \"127.0.0.1:{metrics_port}\"\nshutdown_grace_secs = 120\n"
        ),
    );
    // The default schedules dir: `schedules/` next to dr.toml. 6 fields: every second.
    ws.write(
        "schedules/every-second.toml",
        "name = \"every-second\"\ncron = \"* * * * * *\"\njob = \"backup\"\ntargets = [\"app\"]\n",
    );
    let repo = ws.path().join("repo");
    let mut d = Daemon::start(&ws, &cfg);
    let started = Instant::now();
    assert!(
        wait_for(Duration::from_secs(60), || !manifests(&repo).is_empty()),
        "no backup within 60s\n{}",
        d.log()
    );
    eprintln!("first scheduled backup after {:?}", started.elapsed());

    // /metrics knows about it.
    let mut body = String::new();
    assert!(
        wait_for(Duration::from_secs(30), || {
            body = scrape(metrics_port).unwrap_or_default();
            sample(
                &body,
                "dr_last_success_timestamp_seconds{target=\"app\",operation=\"backup\"}",
            )
            .is_some()
        }),
        "no success metric:\n{body}\n{}",
        d.log()
    );
    let last = sample(
        &body,
        "dr_last_success_timestamp_seconds{target=\"app\",operation=\"backup\"}",
    )
    .unwrap_or_default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert!(
        (now - last).abs() < 300.0,
        "last success {last} is not recent (now {now})"
    );
    assert_eq!(
        sample(
            &body,
            "dr_failures_total{target=\"app\",operation=\"backup\"}"
        ),
        Some(0.0),
        "{body}"
    );
    assert!(
        sample(&body, "dr_last_backup_bytes{target=\"app\"}").is_some_and(|b| b > 0.0),
        "{body}"
    );

    d.signal("TERM");
    let code = d.wait(Duration::from_secs(120));
    let log = d.log();
    assert_eq!(code, Some(0), "daemon did not exit 0 after SIGTERM\n{log}");
    assert!(log.contains("every-second"), "{log}");

    // Every backup it started is complete, and no lock is left behind.
    let found = manifests(&repo);
    assert!(!found.is_empty());
    let backup_dirs: Vec<PathBuf> = std::fs::read_dir(repo.join("app"))
        .expect("target dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    for dir in &backup_dirs {
        assert!(
            dir.join("manifest.json").is_file(),
            "{} has no manifest: a run was left half-done\n{log}",
            dir.display()
        );
    }
    assert!(!repo.join("locks/app.json").exists(), "lock left behind");
}

#[test]
fn a_failing_backup_sends_exactly_one_webhook_and_start_and_fail_pings() {
    let ws = Workspace::new();
    let hook = Receiver::start();
    let textfile = ws.path().join("metrics/dr.prom");
    std::fs::create_dir_all(textfile.parent().expect("parent")).expect("mkdir");
    let target = format!("postgres://postgres@127.0.0.1:{}/app", closed_port());
    let cfg = write_config(
        &ws,
        &target,
        &format!(
            "[notify]\nwebhook_url = \"{url}/hook/SECRET-TOKEN\"\nping_url = \"{url}/ping/{{target}}\"\ntextfile_path = \"{}\"\n",
            textfile.display(),
            url = hook.url
        ),
    );
    let out = ws.dr(&cfg, &["backup"]);
    assert_exit_code(&out, 3); // unreachable database
    let err = stderr(&out);
    assert!(
        !err.contains("SECRET-TOKEN"),
        "the webhook token was logged:\n{err}"
    );

    let got = hook.requests();
    let lines: Vec<&str> = got.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(
        lines,
        [
            "GET /ping/app/start",
            "POST /hook/SECRET-TOKEN",
            "POST /ping/app/fail"
        ],
        "{got:#?}"
    );
    let v: serde_json::Value = serde_json::from_str(&got[1].1).expect("webhook body is JSON");
    assert_eq!(v["ok"], false);
    assert_eq!(v["target"], "app");
    assert_eq!(v["job"], "backup");
    assert!(v["backup_id"].is_null(), "{v}");
    let error = v["error"].as_str().expect("error");
    assert!(error.contains("app"), "{error}");
    let text = v["text"].as_str().expect("text");
    // What failed, why and what to do, as Slack shows it.
    assert!(
        text.contains("backup of `app`")
            && text.contains("FAILED")
            && text.contains("Connection refused")
            && text.contains("\nhint: is PostgreSQL running"),
        "{text}"
    );
    assert_eq!(v["error_kind"], "unavailable", "{v}");
    assert_eq!(v["retryable"], true, "{v}");
    assert!(
        v["hint"].as_str().is_some_and(|h| h.contains("pg_isready")),
        "{v}"
    );
    assert!(v["duration_seconds"].is_number(), "{v}");
    assert!(!v["host"].as_str().unwrap_or("").is_empty(), "{v}");
    assert!(
        got[2].1.contains("app"),
        "the fail ping carries the error: {:?}",
        got[2].1
    );

    // The textfile counts failures across one-shot runs.
    let prom = std::fs::read_to_string(&textfile).expect("textfile written");
    assert_eq!(
        sample(
            &prom,
            "dr_failures_total{target=\"app\",operation=\"backup\"}"
        ),
        Some(1.0),
        "{prom}"
    );
    assert_exit_code(&ws.dr(&cfg, &["backup"]), 3);
    let prom = std::fs::read_to_string(&textfile).expect("textfile written");
    assert_eq!(
        sample(
            &prom,
            "dr_failures_total{target=\"app\",operation=\"backup\"}"
        ),
        Some(2.0),
        "{prom}"
    );
    assert_eq!(
        sample(
            &prom,
            "dr_last_run_success{target=\"app\",operation=\"backup\"}"
        ),
        Some(0.0),
        "{prom}"
    );
}

#[test]
fn an_unreachable_webhook_never_changes_the_exit_code() {
    let ws = Workspace::new();
    let dead = format!("http://127.0.0.1:{}", closed_port());
    let notify = format!(
        "[notify]\nwebhook_url = \"{dead}/hook/SECRET-TOKEN\"\nwebhook_on_success = true\nping_url = \"{dead}/ping\"\n"
    );

    // A failing backup fails the same way with and without the dead webhook.
    let bad_target = format!("postgres://postgres@127.0.0.1:{}/app", closed_port());
    let plain = write_config(&ws, &bad_target, "");
    let without = ws.dr(&plain, &["backup"]);
    let with_hooks = write_config(&ws, &bad_target, &notify);
    let with = ws.dr(&with_hooks, &["backup"]);
    assert_eq!(without.status.code(), with.status.code());
    assert_exit_code(&with, 3);
    let err = stderr(&with);
    assert!(err.contains("could not be delivered"), "{err}");
    assert!(!err.contains("SECRET-TOKEN"), "{err}");

    // A good backup stays good.
    let pg = small_postgres();
    let cfg = write_config(&ws, &pg.url("app"), &notify);
    let out = ws.dr(&cfg, &["backup"]);
    assert_success(&out);
    assert_eq!(manifests(&ws.path().join("repo")).len(), 1);
}

#[test]
fn the_daemon_sends_success_webhooks_when_asked() {
    let ws = Workspace::new();
    let pg = small_postgres();
    let hook = Receiver::start();
    let cfg = write_config(
        &ws,
        &pg.url("app"),
        &format!(
            "[notify]\nwebhook_url = \"{}/hook\"\nwebhook_on_success = true\n\n[[schedules]]\nname = \"nightly\"\ncron = \"0 3 * * *\"\njob = \"backup\"\n",
            hook.url
        ),
    );
    // No backup exists yet: the nightly job is overdue and runs at once on start.
    let mut d = Daemon::start(&ws, &cfg);
    assert!(
        wait_for(Duration::from_secs(60), || !hook.requests().is_empty()),
        "no webhook\n{}",
        d.log()
    );
    d.signal("TERM");
    assert_eq!(d.wait(Duration::from_secs(60)), Some(0), "{}", d.log());
    let got = hook.requests();
    assert_eq!(got.len(), 1, "{got:#?}");
    let v: serde_json::Value = serde_json::from_str(&got[0].1).expect("json");
    assert_eq!(v["ok"], true, "{v}");
    let id = v["backup_id"].as_str().expect("backup id");
    let repo = ws.path().join("repo");
    assert!(repo.join(format!("app/{id}/manifest.json")).is_file());
    assert!(d.log().contains("overdue"), "{}", d.log());

    // Started again right away, nothing is overdue: no second backup.
    let mut d = Daemon::start(&ws, &cfg);
    thread::sleep(Duration::from_secs(2));
    d.signal("TERM");
    assert_eq!(d.wait(Duration::from_secs(60)), Some(0), "{}", d.log());
    assert_eq!(manifests(&repo).len(), 1, "{}", d.log());
    assert!(d.log().contains("next run"), "{}", d.log());
}

#[test]
fn dry_run_lists_the_next_runs_with_sunday_as_7() {
    let ws = Workspace::new();
    let cfg = write_config(&ws, "postgres://postgres@127.0.0.1:1/app", "");
    ws.write(
        "schedules/weekly-verify.toml",
        "name = \"weekly-verify\"\ncron = \"0 5 * * 7\"\ntimezone = \"Europe/Berlin\"\njob = \"verify\"\ntargets = []\n",
    );
    // A verify host: the job needs the identity.
    let (identity, _) = ws.keygen();
    let identity = identity.display().to_string();
    let with_identity = [("DR_IDENTITY_FILE", identity.as_str())];
    let out = ws.dr_env(&cfg, &["daemon", "--dry-run"], &with_identity);
    assert_success(&out);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    for l in &lines {
        let cols: Vec<&str> = l.split('\t').collect();
        assert_eq!(cols[..3], ["weekly-verify", "verify", "app"], "{l}");
        assert!(
            cols[4].starts_with("Sun ") && cols[4].contains(" 05:00:00 "),
            "not Sunday 05:00 local: {l}"
        );
    }

    // A bad expression is named with its file.
    ws.write(
        "schedules/weekly-verify.toml",
        "name = \"weekly-verify\"\ncron = \"0 5 * * 8\"\njob = \"verify\"\n",
    );
    let out = ws.dr_env(&cfg, &["daemon", "--dry-run"], &with_identity);
    assert_exit_code(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains("weekly-verify.toml") && err.contains("`0 5 * * 8`"),
        "{err}"
    );
}

#[test]
fn sigterm_past_the_grace_period_cancels_the_running_job_and_exits_130() {
    let ws = Workspace::new();
    let hook = Receiver::start();
    // The backup waits for a lock held by "another host", so it is surely running when the
    // signal comes; it never reaches the database.
    let target = format!("postgres://postgres@127.0.0.1:{}/app", closed_port());
    let cfg = write_config(
        &ws,
        &target,
        &format!(
            "[lock]\nwait_secs = 600\n\n[daemon]\nshutdown_grace_secs = 1\n\n[notify]\nwebhook_url = \"{}/hook\"\n\n[[schedules]]\nname = \"nightly\"\ncron = \"@daily\"\njob = \"backup\"\n",
            hook.url
        ),
    );
    let held = r#"{"target":"app","holder":"other-host pid 1","operation":"backup","acquired_at":"2026-01-01T00:00:00Z","expires_at":"2999-01-01T00:00:00Z","token":"other"}"#;
    let lock = ws.write("repo/locks/app.json", held);
    let mut d = Daemon::start(&ws, &cfg);
    assert!(
        wait_for(Duration::from_secs(30), || d
            .log()
            .contains("is locked; waiting")),
        "the overdue backup did not start\n{}",
        d.log()
    );
    let t = Instant::now();
    d.signal("TERM");
    let code = d.wait(Duration::from_secs(30));
    let log = d.log();
    assert_eq!(code, Some(130), "{log}");
    assert!(t.elapsed() < Duration::from_secs(20), "{log}");
    assert!(log.contains("grace period"), "{log}");
    // The other holder's lock is untouched, and nothing was written.
    assert_eq!(std::fs::read_to_string(&lock).expect("lock"), held);
    assert!(manifests(&ws.path().join("repo")).is_empty());
    // The cancelled run is reported as a failure.
    let got = hook.requests();
    assert_eq!(got.len(), 1, "{got:#?}");
    let v: serde_json::Value = serde_json::from_str(&got[0].1).expect("json");
    assert_eq!(v["ok"], false);
    assert!(
        v["error"].as_str().unwrap_or("").contains("interrupted"),
        "{v}"
    );
}

/// Regression: `dr status` printed `next` as if a backup would happen at that time while no
/// daemon ran. The daemon now keeps `daemon/HOST.json` and status says whether it is running.
#[test]
fn status_says_whether_a_daemon_is_running_from_its_beacon() {
    let ws = Workspace::new();
    let cfg = write_config(
        &ws,
        &format!("postgres://postgres@127.0.0.1:{}/app", closed_port()),
        "[daemon]\nretries = 0\n",
    );
    // The catch-up backup at start fails at once (nothing listens); then the daemon waits.
    ws.write(
        "schedules/nightly.toml",
        "name = \"nightly\"\ncron = \"0 3 * * *\"\njob = \"backup\"\ntargets = [\"app\"]\n",
    );
    let repo = ws.path().join("repo");
    let out = ws.dr(&cfg, &["status"]);
    assert!(
        stdout(&out).starts_with("daemon: no daemon seen"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("(if a daemon runs)"),
        "{}",
        stdout(&out)
    );

    let mut d = Daemon::start(&ws, &cfg);
    let beats = || files_under(&repo.join("daemon"));
    assert!(
        wait_for(Duration::from_secs(30), || !beats().is_empty()),
        "no beacon\n{}",
        d.log()
    );
    let out = ws.dr(&cfg, &["status"]);
    assert!(
        stdout(&out).starts_with("daemon: running on "),
        "{}",
        stdout(&out)
    );
    assert!(
        !stdout(&out).contains("(if a daemon runs)"),
        "{}",
        stdout(&out)
    );
    let out = ws.dr(&cfg, &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    let daemon = &v[0]["daemon"];
    assert_eq!(daemon["running"], true, "{v}");
    assert!(daemon["pid"].as_u64().is_some(), "{v}");
    assert!(
        daemon["last_beat"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{v}"
    );

    d.signal("TERM");
    assert_eq!(d.wait(Duration::from_secs(60)), Some(0), "{}", d.log());
    assert!(beats().is_empty(), "beacon left after a clean stop");
    let out = ws.dr(&cfg, &["status"]);
    assert!(
        stdout(&out).starts_with("daemon: no daemon seen"),
        "{}",
        stdout(&out)
    );
}

/// Regression: a run waiting for a slot was logged as "previous run still running; skipping",
/// queued runs vanished silently at shutdown, and the shutdown counted them as running.
#[test]
fn queued_runs_are_logged_as_queued_and_named_when_dropped_at_shutdown() {
    let ws = Workspace::new();
    // The overdue backup waits for a lock held by "another host": it holds the only run slot.
    let target = format!("postgres://postgres@127.0.0.1:{}/app", closed_port());
    let cfg = write_config(
        &ws,
        &target,
        "[retention]\ndaily = 7\n\n[lock]\nwait_secs = 600\n\n[daemon]\nshutdown_grace_secs = 1\nmax_concurrent_jobs = 1\n\n[[schedules]]\nname = \"nightly\"\ncron = \"@daily\"\njob = \"backup\"\n\n[[schedules]]\nname = \"often\"\ncron = \"* * * * * *\"\njob = \"prune\"\n",
    );
    let held = r#"{"target":"app","holder":"other-host pid 1","operation":"backup","acquired_at":"2026-01-01T00:00:00Z","expires_at":"2999-01-01T00:00:00Z","token":"other"}"#;
    ws.write("repo/locks/app.json", held);
    let mut d = Daemon::start(&ws, &cfg);
    assert!(
        wait_for(Duration::from_secs(30), || d
            .log()
            .contains("still queued for a run slot")),
        "no queued run\n{}",
        d.log()
    );
    d.signal("TERM");
    let code = d.wait(Duration::from_secs(30));
    let log = d.log();
    assert_eq!(code, Some(130), "{log}");
    assert!(
        log.contains("job `often`: prune of `app` queued: every run slot is busy"),
        "{log}"
    );
    assert!(!log.contains("skipping this run"), "{log}");
    assert!(
        log.contains("job `often` for `app` was queued for a run slot and is dropped"),
        "{log}"
    );
    assert!(
        log.contains("for 1 running job(s) to finish: `nightly` for `app`"),
        "{log}"
    );
}

/// A verify job on a host without the identity would fail at its time, every time: the
/// daemon refuses to start and `dr check` fails its line.
#[test]
fn a_verify_job_without_the_identity_is_caught_at_start_and_by_check() {
    let ws = Workspace::new();
    let target = format!("postgres://postgres@127.0.0.1:{}/app", closed_port());
    let cfg = write_config(
        &ws,
        &target,
        "[[schedules]]\nname = \"weekly-verify\"\ncron = \"@weekly\"\njob = \"verify\"\n",
    );
    let mut d = Daemon::start(&ws, &cfg);
    let code = d.wait(Duration::from_secs(30));
    assert_eq!(code, Some(2), "{}", d.log());
    assert!(d.log().contains("weekly-verify"), "{}", d.log());

    let out = ws.dr(&cfg, &["check"]);
    assert!(!out.status.success());
    assert!(
        stdout(&out)
            .lines()
            .any(|l| l.starts_with("FAIL verify jobs") && l.contains("weekly-verify")),
        "{}",
        stdout(&out)
    );
}

/// Regression: a bad cron expression in `schedules/` was skipped silently by `dr check` and
/// `dr status` and found only when `dr daemon` refused to start. Both now say which file,
/// which schedule and what is wrong.
#[test]
fn a_bad_schedule_fails_check_and_status_naming_the_file_and_schedule() {
    let ws = Workspace::new();
    let target = format!("postgres://postgres@127.0.0.1:{}/app", closed_port());
    let cfg = write_config(&ws, &target, "");
    let dir = ws.path().join("schedules");
    std::fs::create_dir_all(&dir).expect("mkdir schedules");
    std::fs::write(
        dir.join("nightly.toml"),
        "name = \"nightly\"\ncron = \"0 3 * *\"\njob = \"backup\"\n",
    )
    .expect("write job file");
    let names_it =
        |l: &str| l.contains("nightly.toml") && l.contains("`nightly`") && l.contains("`0 3 * *`");

    let out = ws.dr(&cfg, &["check"]);
    assert_exit_code(&out, 3);
    assert!(
        stdout(&out)
            .lines()
            .any(|l| l.starts_with("FAIL schedules") && names_it(l)),
        "{}",
        stdout(&out)
    );

    let out = ws.dr(&cfg, &["status"]);
    assert_exit_code(&out, 8);
    assert!(stdout(&out).lines().any(names_it), "{}", stdout(&out));
    let out = ws.dr(&cfg, &["status", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert!(
        rows[0]["problems"]
            .as_array()
            .expect("problems")
            .iter()
            .any(|p| names_it(p.as_str().unwrap_or_default())),
        "{rows}"
    );

    let mut d = Daemon::start(&ws, &cfg);
    assert_eq!(d.wait(Duration::from_secs(30)), Some(2), "{}", d.log());
    assert!(d.log().contains("nightly.toml"), "{}", d.log());
}

/// Regression: `dr daemon --dry-run` said all was well where `dr daemon` then exited 2 (a
/// verify job without the identity), and the README's "copy schedules/ to the backup host"
/// brought exactly such a job along. The dry run now runs the start's checks, and the shipped
/// `schedules/*.toml` fit a backup host without the identity.
#[test]
fn dry_run_fails_as_the_start_does_and_the_shipped_schedules_fit_a_backup_host() {
    let ws = Workspace::new();
    let target = format!("postgres://postgres@127.0.0.1:{}/app", closed_port());
    let cfg = write_config(
        &ws,
        &target,
        "[[schedules]]\nname = \"weekly-verify\"\ncron = \"@weekly\"\njob = \"verify\"\n",
    );
    let dry = ws.dr(&cfg, &["daemon", "--dry-run"]);
    let mut d = Daemon::start(&ws, &cfg);
    let code = d.wait(Duration::from_secs(30));
    assert_eq!(code, Some(2), "{}", d.log());
    assert_exit_code(&dry, 2);
    assert!(
        stderr(&dry).contains("weekly-verify") && stderr(&dry).contains("identity_file"),
        "{}",
        stderr(&dry)
    );

    // A backup host as the README sets it up: the shipped job files, no identity.
    let ws = Workspace::new();
    let cfg = write_config(
        &ws,
        &target,
        "[retention]\ndaily = 7\n\n[daemon]\nretries = 0\n",
    );
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("schedules");
    let dir = ws.path().join("schedules");
    std::fs::create_dir_all(&dir).expect("mkdir schedules");
    let mut copied = 0;
    for e in std::fs::read_dir(&shipped).expect("schedules/") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "toml") {
            std::fs::copy(&p, dir.join(p.file_name().expect("name"))).expect("copy");
            copied += 1;
        }
    }
    assert!(copied > 0, "no job files in {}", shipped.display());
    let out = ws.dr(&cfg, &["daemon", "--dry-run"]);
    assert_success(&out);
    assert!(stdout(&out).contains("\tbackup\t"), "{}", stdout(&out));
    let mut d = Daemon::start(&ws, &cfg);
    assert!(
        wait_for(Duration::from_secs(30), || d.log().contains("next run")),
        "the daemon did not start\n{}",
        d.log()
    );
    d.signal("TERM");
    assert_eq!(d.wait(Duration::from_secs(60)), Some(0), "{}", d.log());
}

/// Regression: after `dr daemon` was killed mid-backup and restarted, its catch-up run failed
/// on the dead daemon's run lock and was not tried again: that night's backup was missed. A
/// lock whose holder provably is gone (this host, its process no longer running) is taken over.
#[test]
fn a_killed_daemons_lock_does_not_cost_the_restarted_daemon_its_catch_up_backup() {
    let ws = Workspace::new();
    let pg = small_postgres();
    let cfg = write_config(
        &ws,
        &pg.url("app"),
        "[daemon]\nretries = 0\n\n[[schedules]]\nname = \"nightly\"\ncron = \"0 3 * * *\"\njob = \"backup\"\n",
    );
    // The application holds a lock on the table: the backup waits for it, holding the run
    // lock, until the holder's transaction ends by itself.
    let mut blocker = pg.psql_command("app");
    blocker
        .args([
            "-c",
            "BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(12); COMMIT;",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut blocker = blocker.spawn().expect("psql");
    thread::sleep(Duration::from_millis(500));
    let run_lock = ws.path().join("repo/locks/app.json");
    let mut d = Daemon::start(&ws, &cfg);
    assert!(
        wait_for(Duration::from_secs(30), || run_lock.exists()),
        "the catch-up backup did not take the run lock\n{}",
        d.log()
    );
    thread::sleep(Duration::from_millis(500));
    d.signal("KILL");
    let _ = d.wait(Duration::from_secs(10));
    assert!(run_lock.exists(), "a killed daemon leaves its lock behind");
    drop(d);

    let mut d = Daemon::start(&ws, &cfg);
    let repo = ws.path().join("repo");
    let made = wait_for(Duration::from_secs(90), || !manifests(&repo).is_empty());
    let _ = blocker.kill();
    let _ = blocker.wait();
    let log = d.log();
    assert!(made, "the restarted daemon made no backup\n{log}");
    let out = ws.dr(&cfg, &["list", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("list json");
    assert_eq!(v.as_array().map(Vec::len), Some(1), "{v}");
    d.signal("TERM");
    assert_eq!(d.wait(Duration::from_secs(60)), Some(0), "{}", d.log());
    assert_durations_are_rounded(&d.log());
}

/// Regression: durations were logged as `seconds=2.2716973449999998`. Every `seconds=`
/// field of `log` has at most 3 decimals, and there is one.
fn assert_durations_are_rounded(log: &str) {
    let values: Vec<&str> = log
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("seconds="))
        .collect();
    assert!(!values.is_empty(), "no duration logged\n{log}");
    for v in values {
        let decimals = v.split_once('.').map_or(0, |(_, d)| d.len());
        assert!(
            decimals <= 3,
            "duration `{v}` has {decimals} decimals\n{log}"
        );
    }
}

#[test]
fn a_one_shot_prune_of_every_target_records_each_target_never_all() {
    let ws = Workspace::new();
    let textfile = ws.path().join("metrics/dr.prom");
    std::fs::create_dir_all(textfile.parent().expect("parent")).expect("mkdir");
    // Prune never connects to the databases.
    let unused = format!("postgres://postgres@127.0.0.1:{}/app", closed_port());
    let cfg = write_config(
        &ws,
        &unused,
        &format!(
            "[retention]\ndaily = 7\n\n[[targets]]\nname = \"billing\"\nurl = \"{unused}\"\n\n[notify]\ntextfile_path = \"{}\"\n",
            textfile.display()
        ),
    );
    let out = ws.dr(&cfg, &["prune"]);
    assert_success(&out);
    let prom = std::fs::read_to_string(&textfile).expect("textfile written");
    assert!(!prom.contains("target=\"all\""), "{prom}");
    for t in ["app", "billing"] {
        assert_eq!(
            sample(
                &prom,
                &format!("dr_last_run_success{{target=\"{t}\",operation=\"prune\"}}")
            ),
            Some(1.0),
            "{prom}"
        );
    }
}

/// The webhook body of the one request to `/hook`.
fn hook_body(hook: &Receiver) -> serde_json::Value {
    let got = hook.requests();
    let hooks: Vec<&(String, String)> = got
        .iter()
        .filter(|(r, _)| r.starts_with("POST /hook"))
        .collect();
    assert_eq!(hooks.len(), 1, "{got:#?}");
    serde_json::from_str(&hooks[0].1).expect("webhook body is JSON")
}

#[test]
fn a_killed_pg_dump_alerts_with_the_cause_from_its_stderr() {
    let ws = Workspace::new();
    let hook = Receiver::start();
    let pg = Postgres::start();
    pg.create_db("app");
    pg.psql(
        "app",
        "create table orders as select g as id, repeat(md5(g::text), 20) as t from generate_series(1, 1500000) g;",
    );
    let cfg = write_config(
        &ws,
        &pg.url("app"),
        &format!("[notify]\nwebhook_url = \"{}/hook/T\"\n", hook.url),
    );
    let mut cmd = ws.dr_command(&cfg, &["backup"]);
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(60);
    let copying = "select count(*) from pg_stat_activity where query like 'COPY public.orders%'";
    while pg.psql("postgres", copying) == "0" {
        assert!(Instant::now() < deadline, "pg_dump never started copying");
        thread::sleep(Duration::from_millis(20));
    }
    // The server ends pg_dump's session mid-COPY, as a crash or an admin would.
    pg.psql(
        "postgres",
        "select count(pg_terminate_backend(pid)) from pg_stat_activity where query like 'COPY public.orders%'",
    );
    let out = child.wait_with_output().expect("wait");
    assert!(!out.status.success(), "{}", stderr(&out));
    let v = hook_body(&hook);
    let text = v["text"].as_str().expect("text");
    assert!(
        text.contains("FAILED") && text.contains("pg_dump"),
        "{text}"
    );
    // Why, from pg_dump's stderr, not only "exit status 1".
    assert!(
        text.contains("terminating connection") || text.contains("server closed the connection"),
        "{text}"
    );
    assert!(
        text.contains("COPY public.orders") || text.contains("orders"),
        "{text}"
    );
    assert_eq!(v["error_kind"], "failed", "{v}");
}

#[test]
fn a_failed_assert_alerts_with_the_check_that_failed() {
    let ws = Workspace::new();
    let hook = Receiver::start();
    let pg = small_postgres();
    let (identity, recipient) = ws.keygen();
    let repo = ws.path().join("repo");
    let extra = format!(
        "[verify]\nsandbox = \"local\"\npg_bin_dir = \"{}\"\n[[verify.assert]]\nname = \"orders were taken today\"\nsql = \"select false\"\n[notify]\nwebhook_url = \"{}/hook/T\"\n",
        pg.bin_dir().display(),
        hook.url
    );
    let cfg = ws.write(
        "dr.toml",
        &dir_config_text(&repo, &recipient, Some(&identity), &pg.url("app"), &extra),
    );
    assert_success(&ws.dr(&cfg, &["backup"]));
    let out = ws.dr(&cfg, &["verify"]);
    assert_exit_code(&out, 5);
    let v = hook_body(&hook);
    let text = v["text"].as_str().expect("text");
    assert!(text.contains("FAILED (1 of"), "{text}");
    assert!(
        text.contains("orders were taken today"),
        "the failed check is named: {text}"
    );
    assert!(text.contains("hint:"), "{text}");
    assert_eq!(v["error_kind"], "verification_failed", "{v}");
}
