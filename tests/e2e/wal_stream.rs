//! End-to-end `dr wal stream` on real servers (archive_mode off: nothing in the server's
//! config names dr): the slot it creates, segments and the growing partial in the
//! repository, a base backup committed from streamed WAL, and a server killed with SIGKILL
//! right after a commit, with no segment switch, recovered with that commit.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::pitr::{marks_of_copy, setup_with, Capture, Pitr};
use crate::support::*;

/// `dr wal stream` in the background, its stderr in `log`.
fn start_stream(s: &Pitr, log: &Path) -> Child {
    let mut c = s.ws.dr_command(
        &s.cfg,
        &[
            "-v",
            "--env-file",
            s.env_file.to_str().expect("utf-8"),
            "wal",
            "stream",
        ],
    );
    c.stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"));
    c.spawn().expect("dr wal stream")
}

/// Stop it as systemd or Docker would (SIGTERM) and return its exit code.
fn stop_stream(mut child: Child) -> Option<i32> {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    let _ = kill(pid, Signal::SIGTERM);
    for _ in 0..600 {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// The names of the records under the repository's WAL folder.
fn records(s: &Pitr) -> Vec<String> {
    files_under(&s.home.join("repo/app/wal"))
        .into_iter()
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_string();
            name.ends_with(".rec").then_some(name)
        })
        .collect()
}

/// Every partial record, with its content.
fn partial_records(s: &Pitr) -> Vec<(std::path::PathBuf, String)> {
    let mut out: Vec<_> = files_under(&s.home.join("repo/app/wal"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".partial.rec"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            (p, text)
        })
        .collect();
    out.sort();
    out
}

/// Wait until the server has sent WAL up to its current position to the stream.
fn wait_sent(s: &Pitr) {
    let lsn =
        s.pg.psql("postgres", "select pg_current_wal_flush_lsn()::text;");
    let sent = wait_until(Duration::from_secs(30), || {
        s.pg.psql(
            "postgres",
            &format!("select count(*) from pg_stat_replication where sent_lsn >= '{lsn}'"),
        ) == "1"
    });
    assert!(sent, "the stream did not receive WAL up to {lsn}");
}

fn streams_and_recovers_a_killed_servers_last_commit(pg: Postgres) {
    let _heavy = one_heavy_test_at_a_time();
    let s = setup_with(pg, Capture::Stream);
    let log = s.ws.path().join("stream.log");
    let stream = start_stream(&s, &log);
    let slot = wait_until(Duration::from_secs(60), || {
        s.pg.psql(
            "postgres",
            "select count(*) from pg_replication_slots where slot_name = 'dr_app' and active",
        ) == "1"
    });
    assert!(slot, "the slot is not in use\n{}", tail(&log, 3000));

    // A second stream of the same target is refused: one per target.
    let o = s.dr(&["wal", "stream"]);
    assert_exit_code(&o, 6);
    assert!(stderr(&o).contains("one per target"), "{}", stderr(&o));

    s.mark(1);
    // The base backup commits once the stream stored its WAL; a write every second keeps
    // WAL flowing so the stop segment completes (as on any busy server).
    let done = std::sync::atomic::AtomicBool::new(false);
    let o = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(1));
                s.pg.psql("postgres", "insert into ticks values (1);");
            }
        });
        let o = s.dr(&["backup", "--physical"]);
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        o
    });
    assert!(
        o.status.success(),
        "{}\n--- stream ---\n{}",
        describe(&o),
        tail(&log, 3000)
    );
    // The server waits for nothing (archive_mode off): dr said where the WAL comes from.
    assert!(stderr(&o).contains("archive_mode off"), "{}", stderr(&o));
    s.mark(2);
    // Complete segments, and the growing one (between a segment's completion and the next
    // upload there may be no partial for a moment).
    let both = wait_until(Duration::from_secs(20), || {
        let rec = records(&s);
        rec.iter().any(|r| r.len() == 28) && rec.iter().any(|r| r.ends_with(".partial.rec"))
    });
    assert!(both, "segments and a partial: {:?}", records(&s));
    let any = files_under(&s.home.join("repo/app/wal"))
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(".partial.rec"))
        .expect("a partial record");
    let text = std::fs::read_to_string(any).expect("record");
    assert!(text.contains("\"source\":\"stream\""), "{text}");

    // Stopped and started again: it resumes where it was, nothing is pushed twice wrongly.
    assert_eq!(stop_stream(stream), Some(0), "{}", tail(&log, 3000));
    assert!(
        tail(&log, 3000).contains("stopped streaming"),
        "{}",
        tail(&log, 3000)
    );
    let log2 = s.ws.path().join("stream2.log");
    let before = partial_records(&s);
    let stream = start_stream(&s, &log2);
    // Its first upload of the growing segment: from here on only the interval brings a
    // commit up.
    let uploaded = wait_until(Duration::from_secs(30), || partial_records(&s) != before);
    assert!(uploaded, "no partial upload\n{}", tail(&log2, 3000));

    // The last commit: no segment switch after it, the server killed once it was sent.
    s.pg.psql(
        "postgres",
        "set synchronous_commit = on; insert into marks (n) values (3);",
    );
    wait_sent(&s);
    let pid = std::fs::read_to_string(s.pg.socket_dir().join("data/postmaster.pid"))
        .expect("postmaster.pid");
    let pid = pid.lines().next().expect("pid").trim().to_string();
    run_ok(Command::new("kill").args(["-9", &pid]), "kill -9");
    // partial_upload_secs = 2: the commit is in the repository within a few seconds. The
    // stream's host goes too (SIGKILL: no last upload on the way out).
    std::thread::sleep(Duration::from_secs(6));
    let mut stream = stream;
    let _ = stream.kill();
    let _ = stream.wait();

    let dir = s.pg.socket_dir().join("recovered");
    let o = s.dr(&[
        "restore",
        "--at",
        "latest",
        "--to-dir",
        dir.to_str().expect("utf-8"),
        "--start",
    ]);
    assert!(
        o.status.success(),
        "{}\n--- stream ---\n{}",
        describe(&o),
        tail(&log2, 3000)
    );
    // `latest` with --start: replayed to the end of the archive (the partial), promoted.
    assert!(
        stderr(&o).contains("replayed the archive to its end"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        marks_of_copy(&s.pg, &dir),
        "1,2,3",
        "--- stream ---\n{}",
        tail(&log2, 6000)
    );
}

#[test]
fn postgres_15_streams_and_recovers_a_killed_servers_last_commit() {
    streams_and_recovers_a_killed_servers_last_commit(Postgres::start());
}

#[test]
fn postgres_17_streams_and_recovers_a_killed_servers_last_commit() {
    let Some(bin) = pg_bin_dir(17) else {
        eprintln!("skipped: no PostgreSQL 17 (bash ci/setup.sh)");
        return;
    };
    streams_and_recovers_a_killed_servers_last_commit(Postgres::start_with_bin_dir(&bin));
}

#[test]
fn a_target_that_archives_is_not_streamed() {
    let ws = Workspace::new();
    let (_, recipient) = ws.keygen();
    let text = dir_config_text(
        &ws.path().join("repo"),
        &recipient,
        None,
        "postgres://127.0.0.1:1/app",
        "[targets.wal]\nmode = \"archive\"\n",
    );
    let cfg = ws.write("dr.toml", &text);
    let o = ws.dr(&cfg, &["wal", "stream", "--target", "app"]);
    assert_exit_code(&o, 2);
    assert!(stderr(&o).contains("nothing to stream"), "{}", stderr(&o));
    let o = ws.dr(&cfg, &["wal", "stream"]);
    assert_exit_code(&o, 2);
    assert!(stderr(&o).contains("mode = \"stream\""), "{}", stderr(&o));
}

/// A slot the server invalidated (the stream down past `max_slot_wal_keep_size`) is a gap:
/// `dr wal stream` refuses to go on as if nothing was lost, names the slot and says how to
/// start over; `dr check` fails its slot line.
#[test]
fn a_lost_slot_is_refused_with_the_way_out() {
    let s = setup_with(Postgres::start(), Capture::Stream);
    s.pg.psql(
        "postgres",
        "ALTER SYSTEM SET max_slot_wal_keep_size = '1MB';",
    );
    s.pg.restart();
    let log = s.ws.path().join("stream.log");
    let stream = start_stream(&s, &log);
    let active = wait_until(Duration::from_secs(60), || {
        s.pg.psql(
            "postgres",
            "select count(*) from pg_replication_slots where slot_name = 'dr_app' and active",
        ) == "1"
    });
    assert!(active, "{}", tail(&log, 3000));
    assert_eq!(stop_stream(stream), Some(0), "{}", tail(&log, 3000));
    // WAL the slot would need, past the limit; a checkpoint invalidates the slot.
    let lost = wait_until(Duration::from_secs(60), || {
        s.pg.psql(
            "postgres",
            "insert into ticks select generate_series(1, 20000); select pg_switch_wal(); checkpoint;",
        );
        s.pg.psql(
            "postgres",
            "select wal_status from pg_replication_slots where slot_name = 'dr_app'",
        ) == "lost"
    });
    assert!(lost, "the slot was not invalidated");
    let o = s.dr(&["wal", "stream"]);
    assert_exit_code(&o, 4);
    let err = stderr(&o);
    assert!(err.contains("dr_app is lost"), "{err}");
    assert!(err.contains("pg_drop_replication_slot('dr_app')"), "{err}");
    let o = s.dr(&["check"]);
    assert!(!o.status.success(), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("dr_app is lost") || stderr(&o).contains("dr_app is lost"),
        "{}\n{}",
        stdout(&o),
        stderr(&o)
    );
}
