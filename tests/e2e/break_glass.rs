//! `runbooks/break-glass-pitr.md`, verbatim: a server archives with `dr wal push`, `dr backup
//! --physical` takes a base backup, and then the runbook's bash blocks recover a copy with no
//! `dr` anywhere on PATH — only `age`, `zstd`, `tar`, `ssh-keygen`, coreutils and the server
//! binaries, as root handing the server to `postgres`. To a time, the copy holds exactly the
//! rows committed before it; to `latest`, every archived one; with a damaged segment,
//! recovery stops at it and nothing is promoted. Then the `restore_command` script the
//! runbook wrote is asked directly for what PostgreSQL may ask: it answers 1 only for "not in
//! the archive", 200 (fatal to recovery) for a gap, a damaged data object or a record its
//! signature does not cover, and serves a partial segment zero-padded to the segment size.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::pitr::{setup_with, Capture, Pitr};
use crate::support::*;

/// The operator's PATH: system directories only, none of which holds a `dr`.
const PATH_WITHOUT_DR: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[test]
fn the_break_glass_pitr_runbook_recovers_to_a_time_without_dr() {
    if !is_root() {
        eprintln!("skipped: the runbook runs as root (runuser, chown), as the operator does");
        return;
    }
    let _heavy = one_heavy_test_at_a_time();
    let s = setup_with(Postgres::start(), Capture::Archive);
    s.mark(1);
    assert_success(&s.dr(&["backup", "--physical"]));
    s.mark(2);
    std::thread::sleep(Duration::from_millis(1500));
    let at = s.pg.psql("postgres", "select clock_timestamp()::text;");
    std::thread::sleep(Duration::from_millis(1500));
    s.mark(3);
    s.switch_and_wait();
    let body = crate::runbooks::script("break-glass-pitr.md", "");
    assert!(
        !body.lines().any(|l| l.trim_start().starts_with("dr ")),
        "break glass must not need dr"
    );
    for dir in PATH_WITHOUT_DR.split(':') {
        assert!(
            !Path::new(dir).join("dr").exists(),
            "{dir}/dr exists: the runbook must run without dr"
        );
    }

    // A time between marks 2 and 3: exactly 1 and 2; the manifest's signature and digests,
    // and pg_verifybackup, were checked on the way.
    let r = recover(&s, "to-time", &at);
    assert_success_with_log(&r);
    let shown = stdout(&r.out);
    for want in [
        "Good \"dr-backup@v1\" signature",
        "base.tar.zst.age: OK",
        "backup successfully verified",
        "recovery stopping before commit",
    ] {
        assert!(shown.contains(want), "no `{want}` in\n{}", describe(&r.out));
    }
    assert_eq!(r.sql(&s, "select pg_is_in_recovery()"), "f");
    assert_eq!(r.marks(&s), "1,2", "recovered to {at}");
    drop(r);

    // `latest`: everything archived.
    let r = recover(&s, "latest", "latest");
    assert_success_with_log(&r);
    assert_eq!(r.marks(&s), "1,2,3");
    let work = r.work.clone();
    drop(r);

    // A damaged segment after the base backup's first one: recovery stops at it (exit 200 is
    // fatal to PostgreSQL) instead of ending early and promoting a copy without it.
    let folder = s.home.join("repo/app/wal/0000000100000000");
    let segments = archived_segments(&folder);
    assert!(segments.len() >= 3, "{segments:?}");
    let damaged = &segments[2];
    let data = data_object(&s.home.join("repo"), &folder.join(format!("{damaged}.rec")));
    let original = std::fs::read(&data).expect("read data object");
    let mut bytes = original.clone();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&data, &bytes).expect("damage data object");
    let r = recover(&s, "damaged", "latest");
    assert!(!r.out.status.success(), "{}", describe(&r.out));
    let log = std::fs::read_to_string(r.work.join("postgresql.log")).unwrap_or_default();
    assert!(
        log.contains(&format!("restore-wal: {damaged}: "))
            && log.contains("is damaged")
            && log.contains("exit code 200"),
        "{log}"
    );
    assert!(!log.contains("selected new timeline"), "{log}");
    assert!(
        !r.dir.join("postmaster.pid").exists(),
        "the server runs on after a damaged segment\n{log}"
    );
    let (o, served) = ask(&work, damaged);
    assert_exit_code(&o, 200);
    assert!(stderr(&o).contains("is damaged"), "{}", describe(&o));
    assert!(served.is_none(), "a damaged segment reached %p");
    drop(r);
    std::fs::write(&data, &original).expect("repair data object");

    restore_command_answers(&s, &work);
}

/// One verbatim run of the runbook into `{name}-data`, with its tools in `{name}-work`.
struct Recovery {
    out: Output,
    dir: PathBuf,
    work: PathBuf,
    port: u16,
    _server: Running,
}

fn recover(s: &Pitr, name: &str, at: &str) -> Recovery {
    let dir = s.pg.socket_dir().join(format!("{name}-data"));
    let work = s.pg.socket_dir().join(format!("{name}-work"));
    let port = free_port();
    let server = Running {
        pg_ctl: s.pg.bin_dir().join("pg_ctl"),
        dir: dir.clone(),
    };
    let out = crate::runbooks::run_script(
        &s.ws,
        &format!("break-glass-pitr-{name}.sh"),
        &crate::runbooks::script("break-glass-pitr.md", ""),
        &[
            ("REPO", s.home.join("repo").display().to_string()),
            ("TARGET", "app".into()),
            (
                "IDENTITY",
                s.ws.path().join("key.txt").display().to_string(),
            ),
            ("SIGNER", signer(s)),
            ("AT", at.into()),
            ("TIMELINE", "current".into()),
            ("PGBIN", s.pg.bin_dir().display().to_string()),
            ("DIR", dir.display().to_string()),
            ("PORT", port.to_string()),
            ("WORK", work.display().to_string()),
            ("PATH", PATH_WITHOUT_DR.into()),
        ],
    );
    Recovery {
        out,
        dir,
        work,
        port,
        _server: server,
    }
}

#[track_caller]
fn assert_success_with_log(r: &Recovery) {
    assert!(
        r.out.status.success(),
        "{}\n--- copy log ---\n{}",
        describe(&r.out),
        tail(&r.work.join("postgresql.log"), 4000)
    );
}

impl Recovery {
    /// `sql` on the recovered copy, over its socket in WORK, as the server's user.
    fn sql(&self, s: &Pitr, sql: &str) -> String {
        let mut c = as_postgres(&s.pg.bin_dir().join("psql"));
        c.arg("-h").arg(&self.work).args([
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-X",
            "-At",
            "-c",
            sql,
        ]);
        stdout(&run_ok(&mut c, "psql on the recovered copy"))
            .trim()
            .to_string()
    }

    fn marks(&self, s: &Pitr) -> String {
        self.sql(s, "select string_agg(n::text, ',' order by n) from marks")
    }
}

/// The `restore-wal` script of the runbook, asked directly as the server's user.
fn restore_command_answers(s: &Pitr, work: &Path) {
    let repo = s.home.join("repo");
    let folder = repo.join("app/wal/0000000100000000");
    let segments = archived_segments(&folder);
    let newest = segments.last().expect("archived segments").clone();
    assert!(segments.len() >= 2, "{segments:?}");

    // Served, whole, as PostgreSQL would get it.
    let (o, served) = ask(work, &segments[1]);
    assert_exit_code(&o, 0);
    assert_eq!(served.map(|b| b.len()), Some(16 << 20));

    // Not archived, nothing later: the end of the WAL, the only exit 1.
    let beyond = format!("{}000000FF", &newest[..16]);
    assert_exit_code(&ask(work, &beyond).0, 1);
    assert_exit_code(&ask(work, "00000009.history").0, 1);
    // Not archived while a later segment is: a gap stops recovery.
    let o = ask(work, "000000010000000000000000").0;
    assert_exit_code(&o, 200);
    assert!(stderr(&o).contains("a gap"), "{}", describe(&o));

    // A record changed after it was signed: 200.
    let rec = folder.join(format!("{}.rec", segments[0]));
    let text = std::fs::read_to_string(&rec).expect("read record");
    std::fs::write(
        &rec,
        text.replacen("\"pushed_by\":\"", "\"pushed_by\":\"x", 1),
    )
    .expect("change record");
    let o = ask(work, &segments[0]).0;
    assert_exit_code(&o, 200);
    assert!(
        stderr(&o).contains("not signed by the trusted key"),
        "{}",
        describe(&o)
    );

    // The newest segment only as a partial (the first half, as a stream uploads it): served
    // zero-padded to the segment size.
    let raw = partial_in_place_of(s, &repo, &folder, &newest);
    let (o, served) = ask(work, &newest);
    assert_exit_code(&o, 0);
    assert!(stderr(&o).contains("partial segment"), "{}", describe(&o));
    let served = served.expect("the partial was served");
    assert_eq!(served.len(), 16 << 20);
    assert_eq!(&served[..raw.len()], &raw[..]);
    assert!(
        served[raw.len()..].iter().all(|&b| b == 0),
        "not zero-padded"
    );
}

/// Runs `WORK/restore-wal NAME WORK/probe` as the server's user, as PostgreSQL would; the
/// output and what it left at `%p`.
fn ask(work: &Path, name: &str) -> (Output, Option<Vec<u8>>) {
    let dest = work.join("probe");
    let _ = std::fs::remove_file(&dest);
    let mut c = as_postgres(Path::new("/usr/bin/env"));
    c.args(["-i", "PATH=/usr/bin:/bin"])
        .arg(work.join("restore-wal"))
        .arg(name)
        .arg(&dest)
        .current_dir("/");
    let o = run_with_timeout(&mut c, None, Duration::from_secs(120));
    let served = std::fs::read(&dest).ok();
    let _ = std::fs::remove_file(&dest);
    (o, served)
}

/// The segments with a record in `folder`, in order.
fn archived_segments(folder: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(folder)
        .expect("read WAL folder")
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let seg = name.strip_suffix(".rec")?;
            (seg.len() == 24).then(|| seg.to_string())
        })
        .collect();
    names.sort();
    names
}

/// The data object a record names (its `key`, relative to the repository).
fn data_object(repo: &Path, rec: &Path) -> PathBuf {
    let text = std::fs::read_to_string(rec).expect("read record");
    let line = text.lines().next().expect("line 1");
    let json: serde_json::Value = serde_json::from_str(line).expect("record JSON");
    repo.join(json["key"].as_str().expect("key"))
}

/// Replaces `segment`'s record by a signed partial record of its first half (encrypted to
/// the target's recipient, as dr would store it); returns the partial's raw bytes.
fn partial_in_place_of(s: &Pitr, repo: &Path, folder: &Path, segment: &str) -> Vec<u8> {
    let identity = s.ws.path().join("key.txt");
    let rec = folder.join(format!("{segment}.rec"));
    let whole = s.ws.path().join("whole.raw");
    run_ok(
        Command::new("bash").arg("-c").arg(format!(
            "set -o pipefail; age -d -i '{}' '{}' | zstd -d -q > '{}'",
            identity.display(),
            data_object(repo, &rec).display(),
            whole.display()
        )),
        "decode a segment",
    );
    let mut raw = std::fs::read(&whole).expect("read segment");
    raw.truncate(8 << 20);
    let half = s.ws.write("half.raw", "");
    std::fs::write(&half, &raw).expect("write half");
    let key = format!(
        "app/wal/{}/{segment}.partial.00112233aabbccdd.zst.age",
        &segment[..16]
    );
    let recipient = stdout(&run_ok(
        Command::new("age-keygen").arg("-y").arg(&identity),
        "age-keygen -y",
    ))
    .trim()
    .to_string();
    run_ok(
        Command::new("bash").arg("-c").arg(format!(
            "set -o pipefail; zstd -q -c '{}' | age -r '{recipient}' > '{}'",
            half.display(),
            repo.join(&key).display()
        )),
        "encode the partial",
    );
    let stored = std::fs::read(repo.join(&key)).expect("read partial object");
    let line = serde_json::json!({
        "format": 1,
        "kind": "partial",
        "name": format!("{segment}.partial"),
        "key": key,
        "timeline": 1,
        "segment_bytes": 16 << 20,
        "raw_sha256": sha256_hex(&raw),
        "raw_bytes": raw.len(),
        "sha256": sha256_hex(&stored),
        "bytes": stored.len(),
        "recipients": [recipient],
        "pushed_at": "2026-12-04T00:00:00Z",
        "pushed_by": "test",
        "dr_version": "test",
        "source": "stream",
    })
    .to_string();
    let doc = s.ws.write("partial.json", &line);
    s.ws.sign(&doc);
    let sig = std::fs::read_to_string(format!("{}.sig", doc.display())).expect("signature");
    std::fs::write(
        folder.join(format!("{segment}.partial.rec")),
        format!("{line}\n{sig}"),
    )
    .expect("write partial record");
    std::fs::remove_file(&rec).expect("remove the whole segment's record");
    raw
}

fn sha256_hex(bytes: &[u8]) -> String {
    let mut c = Command::new("sha256sum");
    let o = run_with_timeout(&mut c, Some(bytes.to_vec()), Duration::from_secs(60));
    assert_success(&o);
    stdout(&o)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The public half of the signing key the database host signs with (`[signing] trusted`).
fn signer(s: &Pitr) -> String {
    let o = run_ok(
        Command::new("ssh-keygen")
            .arg("-y")
            .arg("-f")
            .arg(s.ws.signing_key()),
        "ssh-keygen -y",
    );
    stdout(&o).trim().to_string()
}

/// The server the runbook started, stopped when the test ends however it ends.
struct Running {
    pg_ctl: PathBuf,
    dir: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.dir.join("postmaster.pid").exists() {
            let _ = run_with_timeout(
                as_postgres(&self.pg_ctl)
                    .args(["stop", "-m", "fast", "-D"])
                    .arg(&self.dir),
                None,
                Duration::from_secs(60),
            );
        }
    }
}
