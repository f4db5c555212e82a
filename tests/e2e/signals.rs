//! End-to-end: SIGTERM/SIGINT in the middle of a backup or restore cleans up and says so.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

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

/// Process `pid` has started: it holds back SIGTERM (dr's first line), or runs more than one
/// thread (its runtime), whichever comes first. False once it is gone.
fn started(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let blocked = u64::from_str_radix(&field("SigBlk:"), 16).unwrap_or(0);
    let threads: u32 = field("Threads:").parse().unwrap_or(0);
    blocked & (1 << (15 - 1)) != 0 || threads > 1
}

/// Issue 17 item 5: `dr prune` got a SIGTERM in its first instant and died of it (143): the
/// handler was installed only once the repository was open. From the first line of `main`
/// a signal is held for the graceful stop: sent the moment dr has started, it exits 130,
/// every time.
#[test]
fn sigterm_in_the_first_instant_exits_130_not_143() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let (ws, _pg, cfg, _repo) = setup(10);
    assert_success(&ws.dr(&cfg, &["backup"]));
    let mut text = std::fs::read_to_string(&cfg).expect("cfg");
    text.push_str("[retention]\ndaily = 7\n");
    std::fs::write(&cfg, text).expect("write cfg");
    for run in 0..30 {
        let mut cmd = ws.dr_command(&cfg, &["prune"]);
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let child = cmd.spawn().expect("spawn");
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !started(pid) {
            assert!(Instant::now() < deadline, "dr never started");
        }
        let _ = kill(
            Pid::from_raw(i32::try_from(pid).unwrap_or(0)),
            Signal::SIGTERM,
        );
        let out = child.wait_with_output().expect("wait");
        assert_eq!(
            out.status.code(),
            Some(130),
            "run {run}: {:?}\n{}",
            out.status,
            stderr(&out)
        );
    }
}
