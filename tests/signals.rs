//! End-to-end: SIGTERM/SIGINT in the middle of a backup or restore cleans up and says so.

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

fn child_running(pid: u32, needle: &str) -> bool {
    let kids = Command::new("pgrep")
        .args(["-P", &pid.to_string()])
        .output()
        .expect("pgrep");
    stdout(&kids).split_whitespace().any(|kid| {
        let c = std::fs::read(format!("/proc/{kid}/cmdline")).unwrap_or_default();
        String::from_utf8_lossy(&c)
            .replace('\0', " ")
            .contains(needle)
    })
}

fn setup(rows: u32) -> (Workspace, Postgres, PathBuf, PathBuf) {
    let ws = Workspace::new();
    let pg = Postgres::start();
    pg.create_db("app");
    pg.psql(
        "app",
        &format!("create table filler as select g, repeat(md5(g::text), 20) as t from generate_series(1, {rows}) g;"),
    );
    let (identity, recipient) = ws.keygen();
    let repo = ws.path().join("repo");
    let cfg = ws.write(
        "dr.toml",
        &format!(
            "[repository]\nurl = \"file://{}\"\n[encryption]\nrecipients = [\"{recipient}\"]\nidentity_file = \"{}\"\n[[targets]]\nname = \"app\"\nurl = \"{}\"\n",
            repo.display(),
            identity.display(),
            pg.url("app")
        ),
    );
    (ws, pg, cfg, repo)
}

#[test]
fn sigterm_during_a_backup_aborts_it_and_exits_130() {
    let (ws, _pg, cfg, repo) = setup(600_000);
    let mut cmd = ws.dr_command(&cfg, &["backup"]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn");
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !child_running(pid, "pg_dump --format=custom") {
        assert!(Instant::now() < deadline, "pg_dump never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill")
        .success());
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(stderr(&out).contains("interrupted"), "{}", stderr(&out));
    let files = files_under(&repo);
    assert!(
        files.iter().all(|p| !p.ends_with("manifest.json")),
        "{files:?}"
    );
    assert!(
        files_under(&repo.join(".dr-uploads")).is_empty(),
        "upload not aborted"
    );
    assert!(!repo.join("locks/app.json").exists(), "lock not released");
    // And the next run works.
    assert_success(&ws.dr(&cfg, &["backup"]));
}

#[test]
fn sigint_during_a_restore_leaves_no_temp_file_and_an_untouched_target() {
    let (ws, pg, cfg, _) = setup(600_000);
    assert_success(&ws.dr(&cfg, &["backup"]));
    let tmp = ws.path().join("tmp");
    std::fs::create_dir_all(&tmp).expect("mkdir");
    let mut cmd = ws.dr_command(
        &cfg,
        &[
            "restore",
            "--to",
            &pg.url("copy"),
            "--yes",
            "--temp-dir",
            tmp.to_str().unwrap_or_default(),
        ],
    );
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn");
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "no temp file ever appeared");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .expect("kill")
        .success());
    let out = child.wait_with_output().expect("wait");
    if out.status.success() {
        eprintln!("restore finished before the signal; nothing to check");
        return;
    }
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(
        files_under(&tmp).is_empty(),
        "temp files left: {:?}",
        files_under(&tmp)
    );
    assert_eq!(
        pg.psql(
            "postgres",
            "select count(*) from pg_database where datname = 'copy'"
        ),
        "0"
    );
}
