//! The Prometheus side of the metrics, against a real Prometheus (Debian's `prometheus`
//! package; `ci/setup.sh` installs it): the alerting rules in `deploy/prometheus/` pass
//! `promtool check rules` and their unit tests, a real Prometheus scrapes `dr daemon` and can
//! query `dr_last_success_timestamp_seconds{operation="backup"}` (the label survives the
//! scrape: it is not renamed `exported_job`), the stale-backup alert evaluates both ways on the
//! scraped data, and every Grafana dashboard query runs. Skipped, with a message, only when
//! `promtool`/`prometheus` are not installed.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::*;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `name` on PATH, or `None` with a message saying the test is skipped.
fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        eprintln!(
            "SKIPPED: `{name}` is not installed (Debian: apt-get install prometheus; ci/setup.sh does)"
        );
    }
    found
}

fn run(cmd: &mut Command) -> Output {
    run_with_timeout(cmd, None, Duration::from_secs(120))
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let dir = repo_root().join("deploy/prometheus");
    let out = run(Command::new(&promtool)
        .args(["check", "rules", "dr-alerts.yml"])
        .current_dir(&dir));
    assert_success(&out);
    assert!(
        stdout(&out).contains("SUCCESS: 7 rules found"),
        "{}",
        stdout(&out)
    );
    let out = run(Command::new(&promtool)
        .args(["test", "rules", "dr-alerts.test.yml"])
        .current_dir(&dir));
    assert_success(&out);
    assert!(stdout(&out).contains("SUCCESS"), "{}", stdout(&out));
    // No rule or dashboard still uses the label Prometheus renames on scrape.
    let rules = std::fs::read_to_string(dir.join("dr-alerts.yml")).expect("rules");
    let dashboard = std::fs::read_to_string(repo_root().join("deploy/grafana/dr-dashboard.json"))
        .expect("dashboard");
    for text in [&rules, &dashboard] {
        assert!(!text.contains("job=") && !text.contains("exported_job"));
    }
}

/// A child process, killed when the test ends.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(cmd: &mut Command, log: PathBuf) -> Proc {
        cmd.stdout(File::create(log.with_extension("stdout")).expect("stdout file"))
            .stderr(File::create(&log).expect("log file"));
        let child = cmd.spawn().expect("spawn");
        Proc { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET `path` with `query` (URL-encoded by curl) from Prometheus; the parsed JSON answer.
fn api(port: u16, path: &str, query: Option<&str>) -> Option<serde_json::Value> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", "-G"])
        .arg(format!("http://127.0.0.1:{port}{path}"));
    if let Some(q) = query {
        cmd.arg("--data-urlencode").arg(format!("query={q}"));
    }
    let out = run(&mut cmd);
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// The result vector of an instant query; panics unless Prometheus says `success`.
fn query(port: u16, q: &str) -> Vec<serde_json::Value> {
    let v = api(port, "/api/v1/query", Some(q)).unwrap_or_else(|| panic!("no answer to {q}"));
    assert_eq!(v["status"], "success", "{q}: {v}");
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

fn wait_for(timeout: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ready() {
            return true;
        }
        thread::sleep(Duration::from_millis(250));
    }
    ready()
}

fn write_dr_config(ws: &Workspace, target_url: &str, metrics_port: u16) -> PathBuf {
    let recipient = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";
    let repo = ws.path().join("repo");
    // A backup every second from the start; one run at a time.
    ws.write(
        "schedules/every-second.toml",
        "name = \"every-second\"\ncron = \"* * * * * *\"\njob = \"backup\"\ntargets = [\"app\"]\n",
    );
    ws.write(
        "dr.toml",
        &format!(
            r#"
[repository]
url = "file://{}"

[encryption]
recipients = ["{recipient}"]

[daemon]
metrics_address = "127.0.0.1:{metrics_port}"
shutdown_grace_secs = 30
max_concurrent_jobs = 1

[[targets]]
name = "app"
url = "{target_url}"
"#,
            repo.display()
        ),
    )
}

fn write_prometheus_config(dir: &Path, metrics_port: u16) -> PathBuf {
    let path = dir.join("prometheus.yml");
    let rules = repo_root().join("deploy/prometheus/dr-alerts.yml");
    std::fs::write(
        &path,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: dr\n    static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n",
            rules.display()
        ),
    )
    .expect("write prometheus.yml");
    path
}

#[test]
fn a_real_prometheus_scrapes_the_daemon_and_evaluates_the_rules_and_dashboard() {
    let Some(prometheus) = tool("prometheus") else {
        return;
    };
    if tool("curl").is_none() {
        return;
    }
    let _heavy = one_heavy_test_at_a_time();
    let ws = Workspace::new();
    let pg = Postgres::start();
    pg.create_db("app");
    pg.psql(
        "app",
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 1000) g;",
    );
    let ports = free_ports(2);
    let (metrics_port, prom_port) = (ports[0], ports[1]);
    let cfg = write_dr_config(&ws, &pg.url("app"), metrics_port);
    let daemon = Proc::spawn(
        &mut ws.dr_command(&cfg, &["daemon"]),
        ws.path().join("daemon.log"),
    );

    let prom_dir = ws.path().join("prometheus");
    std::fs::create_dir_all(&prom_dir).expect("mkdir");
    let prom_cfg = write_prometheus_config(&prom_dir, metrics_port);
    let prom = Proc::spawn(
        Command::new(&prometheus)
            .arg(format!("--config.file={}", prom_cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                prom_dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .arg("--log.level=warn"),
        prom_dir.join("prometheus.log"),
    );

    // The daemon's first backup, scraped by Prometheus, queried with the documented label.
    let q = r#"dr_last_success_timestamp_seconds{operation="backup"}"#;
    let mut found = Vec::new();
    assert!(
        wait_for(Duration::from_secs(120), || {
            found = api(prom_port, "/api/v1/query", Some(q))
                .and_then(|v| v["data"]["result"].as_array().cloned())
                .unwrap_or_default();
            !found.is_empty()
        }),
        "Prometheus never had {q}\n--- daemon ---\n{}\n--- prometheus ---\n{}",
        daemon.log(),
        prom.log()
    );
    let metric = &found[0]["metric"];
    assert_eq!(metric["target"], "app", "{metric}");
    assert_eq!(metric["operation"], "backup", "{metric}");
    // `job` is Prometheus's own (the scrape job), and nothing of ours was renamed.
    assert_eq!(metric["job"], "dr", "{metric}");
    assert!(metric.get("exported_job").is_none(), "{metric}");
    assert!(
        query(prom_port, r#"{__name__=~"dr_.+", exported_job!=""}"#).is_empty(),
        "a dr series carries exported_job"
    );

    // The rules loaded and evaluate cleanly.
    let mut rules = serde_json::Value::Null;
    assert!(
        wait_for(Duration::from_secs(30), || {
            rules = api(prom_port, "/api/v1/rules", None).unwrap_or_default();
            let all: Vec<&serde_json::Value> = rules["data"]["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().into_iter().flatten())
                .collect();
            all.len() == 7 && all.iter().all(|r| r["health"] == "ok")
        }),
        "rules not all loaded and healthy: {rules}\n{}",
        prom.log()
    );

    // The stale-backup expression, both ways: quiet on a fresh backup, firing when the same
    // data is seen 27 hours later.
    let rules_text = std::fs::read_to_string(repo_root().join("deploy/prometheus/dr-alerts.yml"))
        .expect("rules");
    let stale = rules_text
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("expr: ")
                .filter(|e| e.contains("operation=\"backup\"") && e.starts_with("time()"))
        })
        .expect("the DrBackupStale expression");
    assert!(
        query(prom_port, stale).is_empty(),
        "{stale} fires on a fresh backup"
    );
    let later = stale.replacen("time()", "(time() + 27 * 3600)", 1);
    let fired = query(prom_port, &later);
    assert_eq!(fired.len(), 1, "{later}: {fired:?}");
    assert_eq!(fired[0]["metric"]["target"], "app", "{fired:?}");
    let alerts = api(prom_port, "/api/v1/alerts", None).expect("alerts");
    assert!(
        !alerts.to_string().contains("DrBackupStale"),
        "DrBackupStale active: {alerts}"
    );

    // Every dashboard query runs; the backup panels have data.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("deploy/grafana/dr-dashboard.json"))
            .expect("dashboard"),
    )
    .expect("dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 6);
    for p in panels {
        let title = p["title"].as_str().unwrap_or("");
        for t in p["targets"].as_array().expect("targets") {
            let expr = t["expr"].as_str().expect("expr").replace("$target", ".*");
            let result = query(prom_port, &expr);
            if [
                "Backup size",
                "Backup duration",
                "Time since last successful backup",
            ]
            .contains(&title)
            {
                assert!(!result.is_empty(), "panel {title:?}: {expr} has no data");
            }
        }
    }
    drop(prom);
    drop(daemon);
}
