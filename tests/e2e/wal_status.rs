//! `dr check` and `dr status` of a target with `[targets.wal]` (docs/design/PITR.md §7):
//! against a real PostgreSQL 15, `dr check` names each wrong WAL setting with the statement
//! that fixes it, and those statements, run as printed, make the settings line pass.

use crate::support::*;

fn wal_config(ws: &Workspace, target_url: &str) -> std::path::PathBuf {
    let repo = ws.path().join("repo");
    let (_, recipient) = ws.keygen();
    ws.write(
        "dr.toml",
        &dir_config_text(
            &repo,
            &recipient,
            None,
            target_url,
            "[targets.wal]\nmode = \"archive\"\nmax_lag = \"5m\"\n",
        ),
    )
}

/// The `hint:` statements of the failed `wal app` lines, as printed.
fn fixes(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_wal = false;
    for line in text.lines() {
        if line.starts_with("FAIL") || line.starts_with("ok") {
            in_wal = line.starts_with("FAIL") && line.contains(" wal app ");
        } else if let Some(hint) = line.strip_prefix("hint: ").filter(|_| in_wal) {
            out.push(hint.to_string());
        }
    }
    out
}

#[test]
fn check_prints_the_fix_for_each_wal_setting_and_passes_once_they_are_run() {
    let ws = Workspace::new();
    let pg = Postgres::start();
    let cfg = wal_config(&ws, &pg.url("postgres"));

    let out = ws.dr(&cfg, &["check"]);
    assert_exit_code(&out, 3);
    let text = stdout(&out);
    let fixes = fixes(&text);
    let exe = std::fs::canonicalize(dr_bin()).expect("dr binary");
    let config = std::fs::canonicalize(&cfg).expect("config");
    let command = format!(
        "ALTER SYSTEM SET archive_command = '{} --config {} wal push %p'; SELECT pg_reload_conf();",
        exe.display(),
        config.display()
    );
    // A default cluster does not archive; the test cluster also runs without full pages.
    for expected in [
        "ALTER SYSTEM SET archive_mode = 'on'; then restart the server",
        command.as_str(),
        "ALTER SYSTEM SET archive_timeout = '150s'; SELECT pg_reload_conf();",
        "ALTER SYSTEM SET full_page_writes = on; SELECT pg_reload_conf();",
    ] {
        assert!(
            fixes.iter().any(|f| f == expected),
            "no fix {expected:?} in\n{text}"
        );
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("ok") && l.contains("wal identity app")),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("ok")
            && l.contains("wal tools app")
            && l.contains("pg_basebackup 15")),
        "{text}"
    );

    // Each fix is the statement to run, as printed (the first statement of the line).
    for fix in &fixes {
        let statement = fix.split(';').next().expect("a statement");
        pg.psql("postgres", statement);
    }
    pg.restart();

    let out = ws.dr(&cfg, &["check"]);
    let text = stdout(&out);
    let wal: Vec<&str> = text.lines().filter(|l| l.contains(" wal app ")).collect();
    assert_eq!(wal.len(), 1, "{text}");
    assert!(
        wal[0].starts_with("ok") && wal[0].contains("archive_mode on"),
        "{text}"
    );
    assert!(fixes_of_settings_gone(&text), "{text}");

    // An archive_command that fails (still `… wal push %p`, so the settings line passes):
    // the archiver line names the segment PostgreSQL could not archive.
    pg.psql(
        "postgres",
        "ALTER SYSTEM SET archive_command = 'false wal push %p';\nSELECT pg_reload_conf();\n\
         CREATE TABLE t AS SELECT 1 AS x;\nSELECT pg_switch_wal();",
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while pg.psql("postgres", "SELECT failed_count FROM pg_stat_archiver") == "0" {
        assert!(
            std::time::Instant::now() < deadline,
            "the archiver never failed"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let failed = pg.psql("postgres", "SELECT last_failed_wal FROM pg_stat_archiver");
    let out = ws.dr(&cfg, &["check"]);
    assert_exit_code(&out, 3);
    let text = stdout(&out);
    let line = text
        .lines()
        .find(|l| l.contains(" wal archiver app "))
        .unwrap_or_else(|| panic!("no archiver line:\n{text}"));
    assert!(
        line.starts_with("FAIL") && line.contains(&format!("failed to archive {failed} at ")),
        "{text}"
    );
    assert!(
        text.contains("hint: see the server log for dr's error"),
        "{text}"
    );
}

/// Stream mode: the slot `dr_app` must exist (and `max_slot_wal_keep_size` be finite).
#[test]
fn check_of_a_stream_target_asks_for_the_slot_until_it_exists() {
    let ws = Workspace::new();
    let pg = Postgres::start();
    let repo = ws.path().join("repo");
    let (_, recipient) = ws.keygen();
    let cfg = ws.write(
        "dr.toml",
        &dir_config_text(
            &repo,
            &recipient,
            None,
            &pg.url("postgres"),
            "[targets.wal]\nmode = \"stream\"\n",
        ),
    );
    let out = ws.dr(&cfg, &["check"]);
    assert_exit_code(&out, 3);
    let text = stdout(&out);
    assert!(
        text.lines().any(|l| l.starts_with("FAIL")
            && l.contains(" wal slot app ")
            && l.contains("replication slot dr_app does not exist")),
        "{text}"
    );
    assert!(
        text.contains("hint: run `dr wal stream --target app` to create it"),
        "{text}"
    );
    assert!(
        text.contains(
            "hint: ALTER SYSTEM SET max_slot_wal_keep_size = '10GB'; SELECT pg_reload_conf();"
        ),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("ok")
            && l.contains("wal tools app")
            && l.contains("pg_receivewal 15")),
        "{text}"
    );

    pg.psql(
        "postgres",
        "SELECT pg_create_physical_replication_slot('dr_app', true);",
    );
    let out = ws.dr(&cfg, &["check"]);
    let text = stdout(&out);
    assert!(
        text.lines().any(|l| l.starts_with("ok")
            && l.contains(" wal slot app ")
            && l.contains("replication slot dr_app exists, not active (reserved")),
        "{text}"
    );
}

/// No settings hint is left (the archiver may fail: `dr wal push` is another command's work).
fn fixes_of_settings_gone(text: &str) -> bool {
    fixes(text).is_empty()
}

/// Also: with `notify.textfile_path`, `dr status` writes the target's `dr_wal_*` series.
#[test]
fn status_of_a_wal_target_without_wal_exits_8_saying_so() {
    let ws = Workspace::new();
    let repo = ws.path().join("repo");
    let textfile = ws.path().join("dr.prom");
    let (_, recipient) = ws.keygen();
    let cfg = ws.write(
        "dr.toml",
        &dir_config_text(
            &repo,
            &recipient,
            None,
            "postgres://nobody@127.0.0.1:1/app",
            &format!(
                "[targets.wal]\nmode = \"archive\"\n[notify]\ntextfile_path = \"{}\"\n",
                textfile.display()
            ),
        ),
    );
    let out = ws.dr(&cfg, &["status"]);
    assert_exit_code(&out, 8);
    let text = stdout(&out);
    assert!(
        text.contains("no WAL archived yet for target app: check `dr check`"),
        "{text}"
    );
    assert!(
        text.contains("wal archive timeline 1  nothing archived"),
        "{text}"
    );

    let out = ws.dr(&cfg, &["status", "--json"]);
    assert_exit_code(&out, 8);
    let rows: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    let app = &rows[0];
    assert_eq!(app["target"], "app");
    assert_eq!(app["wal"]["mode"], "archive");
    assert_eq!(app["wal"]["files"], 0);
    assert_eq!(app["wal"]["max_lag_seconds"], 300);
    assert!(app["wal"]["newest"].is_null());

    // Without a daemon, `dr status` feeds node-exporter: no gap, nothing archived (no time).
    let metrics = std::fs::read_to_string(&textfile).expect("textfile");
    assert!(
        metrics.contains("dr_wal_gap{target=\"app\"} 0\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("dr_wal_max_lag_seconds{target=\"app\"} 300\n"),
        "{metrics}"
    );
    assert!(!metrics.contains("dr_wal_last_archived"), "{metrics}");
}

/// A `dr daemon` child, killed when the test ends.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// GET /metrics over loopback: the body, or `None` while nothing answers.
fn scrape(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, body)| body.to_string())
}

/// `dr daemon` assesses WAL targets at start (then every minute) and serves their series.
#[test]
fn the_daemon_serves_the_wal_series_of_a_wal_target() {
    let ws = Workspace::new();
    let port = free_port();
    let repo = ws.path().join("repo");
    let (_, recipient) = ws.keygen();
    let cfg = ws.write(
        "dr.toml",
        &dir_config_text(
            &repo,
            &recipient,
            None,
            "postgres://nobody@127.0.0.1:1/app",
            &format!(
                "[targets.wal]\nmode = \"stream\"\nmax_lag = \"2m\"\n[retention]\ndaily = 7\n\
                 [daemon]\nmetrics_address = \"127.0.0.1:{port}\"\n"
            ),
        ),
    );
    // A job that never runs during the test: the daemon wants one.
    ws.write(
        "schedules/yearly.toml",
        "name = \"yearly\"\ncron = \"0 0 1 1 *\"\njob = \"prune\"\ntargets = [\"app\"]\n",
    );
    let log = ws.path().join("daemon.stderr");
    let mut cmd = ws.dr_command(&cfg, &["daemon"]);
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"));
    let mut daemon = Daemon(cmd.spawn().expect("start dr daemon"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut body = String::new();
    while !body.contains("dr_wal_gap{target=\"app\"} 0\n") {
        let exited = daemon.0.try_wait().expect("try_wait");
        assert!(
            std::time::Instant::now() < deadline && exited.is_none(),
            "no dr_wal_gap at /metrics ({exited:?}):\n{body}\n--- daemon ---\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
        body = scrape(port).unwrap_or_default();
    }
    assert!(
        body.contains("dr_wal_max_lag_seconds{target=\"app\"} 120\n"),
        "{body}"
    );
}
