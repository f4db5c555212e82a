//! End-to-end: `dr backup --physical` against real PostgreSQL 15 (and 17 when installed),
//! into a directory repository; the stored base backup checked with the real `age`, `zstd`,
//! `tar` and `pg_verifybackup`.
//!
//! The WAL records a base backup waits for are written here by a **test stand-in**
//! ([`RecordMirror`]): PostgreSQL archives with `cp` into a directory, and the stand-in writes
//! the record of each segment that appears there. The records appear only when the server
//! archives, as `dr wal push` makes them; only their content is fake (the commit only checks
//! that they exist). That keeps this test on the base backup itself, recovered with plain
//! `cp` WAL and checked by `pg_verifybackup`; real records, from `dr wal push` and `dr wal
//! stream`, are tested end to end in `pitr.rs` and `wal_stream.rs`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::support::*;

struct Setup {
    ws: Workspace,
    pg: Postgres,
    identity: PathBuf,
    repo: PathBuf,
    config: PathBuf,
}

fn setup(pg: Postgres) -> Setup {
    let ws = Workspace::new();
    let (identity, recipient) = ws.keygen();
    let repo = ws.path().join("repo");
    let extra = format!("pg_bin_dir = \"{}\"\n", pg.bin_dir().display());
    let text = dir_config_text(
        &repo,
        &recipient,
        Some(&identity),
        &pg.url("postgres"),
        &extra,
    );
    let config = ws.write("dr.toml", &text);
    pg.psql(
        "postgres",
        "CREATE TABLE marker (id int primary key, note text); \
         INSERT INTO marker SELECT g, 'row ' || g FROM generate_series(1, 5000) g;",
    );
    Setup {
        ws,
        pg,
        identity,
        repo,
        config,
    }
}

/// Turn archiving on with `archive_command` (restarts the server).
fn archive_with(pg: &Postgres, command: &str) {
    pg.psql(
        "postgres",
        &format!(
            "ALTER SYSTEM SET archive_mode = 'on'; ALTER SYSTEM SET archive_command = '{}';",
            command.replace('\'', "''")
        ),
    );
    pg.restart();
}

/// TEST STAND-IN for `dr wal push`: writes `{repo}/app/wal/{TTTTTTTTLLLLLLLL}/{SEG}.rec` for
/// every segment the server has archived (with `cp`) into `archive`, as it appears.
struct RecordMirror {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<Vec<String>>>,
}

impl RecordMirror {
    fn start(archive: PathBuf, repo: PathBuf) -> RecordMirror {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let mut mirrored = Vec::new();
            while !flag.load(Ordering::SeqCst) {
                for name in segment_names(&archive) {
                    let rec = repo
                        .join("app/wal")
                        .join(&name[..16])
                        .join(format!("{name}.rec"));
                    if !rec.exists() {
                        std::fs::create_dir_all(rec.parent().expect("parent")).expect("mkdir");
                        std::fs::write(&rec, b"test stand-in for dr wal push\n").expect("rec");
                        mirrored.push(name);
                    }
                }
                thread::sleep(Duration::from_millis(100));
            }
            mirrored
        });
        RecordMirror {
            stop,
            thread: Some(thread),
        }
    }

    /// The segments it wrote records for, in order.
    fn finish(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .map(|t| t.join().expect("mirror thread"))
            .unwrap_or_default()
    }
}

impl Drop for RecordMirror {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Names of archived segments (24 hex digits) in `dir`.
fn segment_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.len() == 24 && n.bytes().all(|b| b.is_ascii_hexdigit()))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn the_manifest(repo: &Path) -> serde_json::Value {
    let found = manifests(repo);
    assert_eq!(found.len(), 1, "one manifest: {found:?}");
    serde_json::from_slice(&std::fs::read(&found[0]).expect("read")).expect("json")
}

fn object(repo: &Path, m: &serde_json::Value, role: &str) -> PathBuf {
    let key = m["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .find(|o| o["role"] == role)
        .and_then(|o| o["key"].as_str())
        .unwrap_or_else(|| panic!("no {role} object in {m}"));
    repo.join(key)
}

fn sh(script: &str) -> Output {
    let o = Command::new("bash")
        .args(["-o", "pipefail", "-c", script])
        .output()
        .expect("bash");
    assert!(o.status.success(), "{script}\n{}{}", stdout(&o), stderr(&o));
    o
}

fn backs_up_and_commits_after_its_wal(pg: Postgres) {
    let s = setup(pg);
    let archive = s.pg.server_owned_dir("archive");
    archive_with(&s.pg, &format!("cp %p {}/%f", archive.display()));
    let mirror = RecordMirror::start(archive.clone(), s.repo.clone());
    // Writes while the backup runs: its WAL range is more than a checkpoint record.
    let writer = {
        let mut c = s.pg.psql_command("postgres");
        c.args([
            "-c",
            "INSERT INTO marker SELECT g, repeat('x', 200) FROM generate_series(5001, 60000) g",
        ]);
        c.spawn().expect("psql")
    };
    let o = s.ws.dr(&s.config, &["backup", "--physical"]);
    assert_success(&o);
    let mut writer = writer;
    let _ = writer.wait();
    let mirrored = mirror.finish();

    let m = the_manifest(&s.repo);
    assert_eq!(m["format"], 3, "{m}");
    assert_eq!(m["kind"], "physical");
    let p = &m["physical"];
    let (start, stop) = (
        p["start_segment"].as_str().expect("start"),
        p["stop_segment"].as_str().expect("stop"),
    );
    // Committed only with every segment start..stop archived (their records written by the
    // stand-in as the server archived them).
    for seg in [start, stop] {
        assert!(
            mirrored.iter().any(|n| n == seg),
            "{seg} archived: {mirrored:?}"
        );
    }
    assert!(p["start_lsn"].as_str().is_some() && p["system_identifier"].as_str().is_some());

    // The stored tar, decoded with the CLIs, holds the cluster; PostgreSQL's backup_manifest
    // is stored apart with the same bytes, and pg_verifybackup accepts the untarred copy.
    let tar = s.ws.path().join("base.tar");
    sh(&format!(
        "age -d -i {} {} | zstd -d > {}",
        s.identity.display(),
        object(&s.repo, &m, "base_tar").display(),
        tar.display()
    ));
    let listed = stdout(&sh(&format!("tar -tf {}", tar.display())));
    for member in [
        "PG_VERSION",
        "backup_label",
        "backup_manifest",
        "global/pg_control",
    ] {
        assert!(
            listed.lines().any(|l| l == member),
            "{member} in the tar:\n{listed}"
        );
    }
    let data = s.ws.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    sh(&format!("tar -xf {} -C {}", tar.display(), data.display()));
    let apart = s.ws.path().join("backup_manifest.apart");
    sh(&format!(
        "age -d -i {} {} | zstd -d > {}",
        s.identity.display(),
        object(&s.repo, &m, "backup_manifest").display(),
        apart.display()
    ));
    assert_eq!(
        std::fs::read(&apart).expect("apart"),
        std::fs::read(data.join("backup_manifest")).expect("in tar"),
        "backup_manifest stored apart = the tar's"
    );
    let pg_manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&apart).expect("read")).expect("json");
    let range = &pg_manifest["WAL-Ranges"][0];
    assert_eq!(range["Start-LSN"], p["start_lsn"], "{range} vs {p}");
    assert_eq!(range["End-LSN"], p["stop_lsn"], "{range} vs {p}");
    let verify = Command::new(s.pg.bin_dir().join("pg_verifybackup"))
        .args(["--no-parse-wal", "--quiet"])
        .arg(&data)
        .output()
        .expect("pg_verifybackup");
    assert!(
        verify.status.success(),
        "pg_verifybackup: {}{}",
        stdout(&verify),
        stderr(&verify)
    );

    recovers_to_consistency(&s, &archive, &data, p);

    // list and show say what it is; logical restore and verify refuse it with the way.
    let list = s.ws.dr(&s.config, &["list"]);
    assert_success(&list);
    let wal = format!(
        "{}..{}",
        p["start_lsn"].as_str().unwrap_or(""),
        p["stop_lsn"].as_str().unwrap_or("")
    );
    assert!(
        stdout(&list).contains(&format!("physical {wal} timeline 1")),
        "{}",
        stdout(&list)
    );
    let json = s.ws.dr(&s.config, &["list", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&stdout(&json)).expect("json");
    assert_eq!(rows[0]["kind"], "physical");
    assert_eq!(rows[0]["wal"]["start_lsn"], p["start_lsn"]);
    let show = s.ws.dr(&s.config, &["show", "latest"]);
    assert_success(&show);
    assert!(
        stdout(&show).contains("kind        physical"),
        "{}",
        stdout(&show)
    );
    let restore =
        s.ws.dr(&s.config, &["restore", "--to", &s.pg.url("copy"), "--yes"]);
    assert_exit_code(&restore, 2);
    assert!(
        stderr(&restore).contains("--to-dir"),
        "{}",
        stderr(&restore)
    );
    let verify = s.ws.dr(&s.config, &["verify"]);
    assert_exit_code(&verify, 2);
    assert!(
        stderr(&verify).contains("physical backup"),
        "{}",
        stderr(&verify)
    );
}

/// The unpacked base backup, given only the WAL segments dr waited for (start..stop), starts
/// and reaches consistency (`recovery_target = 'immediate'`), with the rows committed before
/// the backup: the range dr commits on is the range PostgreSQL needs.
fn recovers_to_consistency(s: &Setup, archive: &Path, data: &Path, p: &serde_json::Value) {
    let (start, stop) = (
        p["start_segment"].as_str().expect("start"),
        p["stop_segment"].as_str().expect("stop"),
    );
    let needed = s.pg.server_owned_dir("needed");
    for name in segment_names(archive) {
        if name.as_str() >= start && name.as_str() <= stop {
            std::fs::copy(archive.join(&name), needed.join(&name)).expect("copy segment");
        }
    }
    give_to_postgres(&needed);
    let restored = s.pg.server_owned_dir("restored");
    sh(&format!(
        "cp -a {}/. {}",
        data.display(),
        restored.display()
    ));
    std::fs::create_dir_all(restored.join("pg_wal")).expect("pg_wal");
    std::fs::write(restored.join("recovery.signal"), b"").expect("recovery.signal");
    let mut auto =
        std::fs::read_to_string(restored.join("postgresql.auto.conf")).unwrap_or_default();
    auto.push_str(&format!(
        "\nrestore_command = 'cp {}/%f %p'\nrecovery_target = 'immediate'\nrecovery_target_action = 'promote'\narchive_mode = 'off'\n",
        needed.display()
    ));
    std::fs::write(restored.join("postgresql.auto.conf"), auto).expect("auto.conf");
    sh(&format!("chmod 0700 {}", restored.display()));
    give_to_postgres(&restored);
    let port = free_port();
    let log = s.pg.socket_dir().join("restored.log");
    let started = run_with_timeout(
        as_postgres(&s.pg.bin_dir().join("pg_ctl"))
            .args(["start", "-w", "-t", "60", "-D"])
            .arg(&restored)
            .arg("-l")
            .arg(&log)
            .arg("-o")
            .arg(format!("-p {port}")),
        None,
        Duration::from_secs(90),
    );
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        started.status.success(),
        "the restored copy did not start:\n{log_text}"
    );
    let rows = Command::new(s.pg.bin_dir().join("psql"))
        .args(["-X", "-At", "-h", "127.0.0.1", "-U", "postgres", "-p"])
        .arg(port.to_string())
        .args([
            "-d",
            "postgres",
            "-c",
            "SELECT count(*) >= 5000 FROM marker",
        ])
        .output()
        .expect("psql");
    let _ = run_with_timeout(
        as_postgres(&s.pg.bin_dir().join("pg_ctl"))
            .args(["stop", "-m", "immediate", "-w", "-D"])
            .arg(&restored),
        None,
        Duration::from_secs(30),
    );
    assert_eq!(
        stdout(&rows).trim(),
        "t",
        "{}{}\n{log_text}",
        stdout(&rows),
        stderr(&rows)
    );
    assert!(
        log_text.contains("consistent recovery state reached"),
        "{log_text}"
    );
}

#[test]
fn a_base_backup_is_committed_once_its_wal_is_archived_pg15() {
    backs_up_and_commits_after_its_wal(Postgres::start());
}

#[test]
fn a_base_backup_is_committed_once_its_wal_is_archived_pg17() {
    let Some(bin) = pg_bin_dir(17) else {
        eprintln!("skipped: no PostgreSQL 17 (bash ci/setup.sh)");
        return;
    };
    backs_up_and_commits_after_its_wal(Postgres::start_with_bin_dir(&bin));
}

/// Nothing but the (short) wait: no manifest, no objects left, exit 3 with the hint.
fn assert_not_committed(s: &Setup, o: &Output) {
    assert_exit_code(o, 3);
    let err = stderr(o);
    assert!(
        err.contains("archive_command") && err.contains("dr wal stream"),
        "{err}"
    );
    assert!(manifests(&s.repo).is_empty(), "no manifest");
    let left: Vec<PathBuf> = files_under(&s.repo)
        .into_iter()
        .filter(|f| !f.components().any(|c| c.as_os_str() == "locks"))
        .collect();
    assert!(left.is_empty(), "objects left behind: {left:?}");
}

#[test]
fn without_archiving_the_base_backup_fails_after_the_wait() {
    // archive_mode off and no stream: the server does not wait, dr does, and gives up.
    let s = setup(Postgres::start());
    let o = s.ws.dr_env(
        &s.config,
        &["backup", "--physical"],
        &[("DR_ARCHIVE_WAIT_SECS", "2")],
    );
    assert_not_committed(&s, &o);
    // The first missing segment is named.
    assert!(stderr(&o).contains("WAL segment 0000000"), "{}", stderr(&o));
}

#[test]
fn a_server_stuck_on_a_failing_archive_command_is_stopped_after_the_wait() {
    // archive_mode on, archive_command failing: pg_backup_stop would wait forever.
    let s = setup(Postgres::start());
    archive_with(&s.pg, "false");
    let o = s.ws.dr_env(
        &s.config,
        &["backup", "--physical"],
        &[("DR_ARCHIVE_WAIT_SECS", "2")],
    );
    assert_not_committed(&s, &o);
    assert!(
        stderr(&o).contains("pg_basebackup was stopped"),
        "{}",
        stderr(&o)
    );
    // pg_basebackup's walsender is gone with it.
    let senders =
        s.pg.psql("postgres", "SELECT count(*) FROM pg_stat_replication");
    assert_eq!(senders, "0");
}

#[test]
fn a_cluster_with_tablespaces_is_refused_before_anything_runs() {
    let s = setup(Postgres::start());
    let dir = s.pg.server_owned_dir("ts");
    s.pg.psql(
        "postgres",
        &format!("CREATE TABLESPACE side LOCATION '{}'", dir.display()),
    );
    let o = s.ws.dr(&s.config, &["backup", "--physical"]);
    assert_exit_code(&o, 2);
    assert!(stderr(&o).contains("tablespaces (side)"), "{}", stderr(&o));
    assert!(files_under(&s.repo)
        .iter()
        .all(|f| !f.to_string_lossy().contains("base.tar")));
}

#[test]
fn a_role_without_replication_gets_the_line_to_change() {
    let s = setup(Postgres::start());
    s.pg.psql("postgres", "CREATE ROLE plain LOGIN");
    let url = s.pg.url("postgres").replace("postgres@", "plain@");
    let text = std::fs::read_to_string(&s.config).expect("config");
    let config =
        s.ws.write("plain.toml", &text.replace(&s.pg.url("postgres"), &url));
    let o = s.ws.dr(&config, &["backup", "--physical"]);
    assert_exit_code(&o, 1);
    let err = stderr(&o);
    assert!(
        err.contains("pg_basebackup failed") && err.contains("ALTER ROLE"),
        "{err}"
    );
    assert!(manifests(&s.repo).is_empty());
}

#[test]
fn sigterm_while_the_server_waits_for_archiving_stops_everything_and_exits_130() {
    // pg_basebackup blocked in pg_backup_stop (a failing archive_command, a long wait): a
    // signal stops dr, its pg_basebackup and that walsender, and leaves nothing behind.
    let s = setup(Postgres::start());
    archive_with(&s.pg, "false");
    let mut cmd = s.ws.dr_command(&s.config, &["backup", "--physical"]);
    cmd.env("DR_ARCHIVE_WAIT_SECS", "600")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().expect("spawn");
    let waiting =
        "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'dr-basebackup-%' \
                   AND wait_event = 'BackupWaitWalArchive'";
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while s.pg.psql("postgres", waiting) != "1" {
        assert!(
            std::time::Instant::now() < deadline,
            "the server never waited for archiving"
        );
        thread::sleep(Duration::from_millis(200));
    }
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill")
        .success());
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(manifests(&s.repo).is_empty());
    assert!(
        files_under(&s.repo.join(".dr-uploads")).is_empty(),
        "upload not aborted"
    );
    assert!(
        files_under(&s.repo.join("app")).is_empty(),
        "objects left behind"
    );
    let left =
        "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'dr-basebackup-%'";
    assert_eq!(s.pg.psql("postgres", left), "0", "the walsender was ended");
}
