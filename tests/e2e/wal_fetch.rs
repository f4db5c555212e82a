//! `dr wal fetch NAME DEST` (PostgreSQL's restore_command), the real binary against a
//! directory repository: its exit statuses (the fetch table of docs/EXIT_CODES.md) and what
//! it leaves at DEST.
//!
//! The archive is written here as `dr wal push` writes it (the data object `age(zstd(raw))`
//! under a random name, then the signed record), with the workspace's signing key, which
//! every `dr` of the harness trusts.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use dr_catalog::wal::{join, keys, WalFile, WalKind, WalRecord, RECORD_FORMAT};
use dr_stream::signing::SigningKey;

use crate::support::*;

struct Archive {
    repo: PathBuf,
    cfg: PathBuf,
    recipient: String,
    /// The database host's signing key, which the config's `dr` trusts.
    signing_key: PathBuf,
}

impl Archive {
    /// In the workspace, signed with its key (which every `dr` of the harness trusts).
    fn new(ws: &Workspace) -> Archive {
        let (identity, recipient) = ws.keygen();
        let repo = ws.path().join("repo");
        let text = dir_config_text(
            &repo,
            &recipient,
            Some(&identity),
            "postgres://u@127.0.0.1:1/app",
            "",
        );
        Archive {
            repo,
            cfg: ws.write("dr.toml", &text),
            recipient,
            signing_key: ws.signing_key(),
        }
    }

    /// Under `dir`, for PostgreSQL's restore_command (run as the server's OS user, with the
    /// server's environment): the config trusts the signing key by `[signing] trusted`.
    fn for_postgres(ws: &Workspace, dir: &Path) -> Archive {
        let (identity_in_ws, recipient) = ws.keygen();
        let (signing_key, public) = ws.new_signing_key("db-host-signing.key");
        fs::create_dir_all(dir).expect("mkdir");
        let identity = dir.join("identity.txt");
        fs::copy(&identity_in_ws, &identity).expect("copy identity");
        let repo = dir.join("repo");
        let text = dir_config_text(
            &repo,
            &recipient,
            Some(&identity),
            "postgres://u@127.0.0.1:1/app",
            &format!("[signing]\ntrusted = [\"{public}\"]\n"),
        );
        let cfg = dir.join("dr.toml");
        fs::write(&cfg, text).expect("write config");
        Archive {
            repo,
            cfg,
            recipient,
            signing_key,
        }
    }

    /// Store `raw` as `name` of target `app`, as `dr wal push` does; the data object's path.
    /// The first push writes the archive's identity, as `dr wal push` does.
    fn push(&self, name: &str, raw: &[u8]) -> PathBuf {
        let identity = keys::identity("app");
        if !self.repo.join(&identity).exists() {
            self.write(
                &identity,
                br#"{"format":1,"system_identifier":"7301234567890123456","server_major":17,"segment_bytes":16777216,"created_at":"2026-12-04T01:02:03Z","created_by":"db1"}"#,
            );
        }
        let file: WalFile = name.parse().expect("WAL file name");
        let recipients =
            dr_stream::Recipients::parse(std::slice::from_ref(&self.recipient)).expect("recipient");
        let sealed = dr_stream::seal(raw, &recipients, 3).expect("seal");
        let sha256 = dr_stream::sha256_hex(&sealed);
        let key = keys::data("app", file, &sha256[..16]);
        let record = WalRecord {
            format: RECORD_FORMAT,
            kind: WalKind::of(file),
            name: name.to_string(),
            key: key.clone(),
            system_identifier: "7301234567890123456".into(),
            server_major: Some(17),
            timeline: file.timeline(),
            start_lsn: None,
            end_lsn: None,
            r#final: false,
            segment_bytes: Some(raw.len() as u64),
            raw_sha256: dr_stream::sha256_hex(raw),
            raw_bytes: raw.len() as u64,
            sha256,
            bytes: sealed.len() as u64,
            recipients: vec![self.recipient.clone()],
            switches: vec![],
            pushed_at: "2026-12-04T01:02:03Z".into(),
            pushed_by: "db1".into(),
            dr_version: "test".into(),
            source: "archive".into(),
        };
        let signer = SigningKey::from_file(&self.signing_key).expect("signing key");
        let document = record.document();
        let signature = signer.sign(&document).expect("sign");
        let data = self.write(&key, &sealed);
        self.write(
            &keys::record("app", file),
            &join(&document, Some(&signature)),
        );
        data
    }

    fn write(&self, key: &str, bytes: &[u8]) -> PathBuf {
        let path = self.repo.join(key);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(&path, bytes).expect("write");
        path
    }

    fn fetch(&self, ws: &Workspace, name: &str, dest: &Path, extra: &[&str]) -> Output {
        let dest = dest.to_str().expect("utf-8 path");
        let mut args = vec!["wal", "fetch", name, dest];
        args.extend_from_slice(extra);
        ws.dr(&self.cfg, &args)
    }
}

/// Bytes that do not compress to nothing.
fn wal_bytes(seed: u32, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

const SEG1: &str = "000000010000000000000001";
const SEG2: &str = "000000010000000000000002";
const SEG3: &str = "000000010000000000000003";

#[track_caller]
fn nothing_at(dest: &Path) {
    assert!(!dest.exists(), "{} was written", dest.display());
    let tmp = PathBuf::from(format!("{}.dr-tmp", dest.display()));
    assert!(!tmp.exists(), "{} left behind", tmp.display());
}

#[test]
fn fetch_exits_0_written_1_not_found_204_for_a_gap_or_damage() {
    let ws = Workspace::new();
    let a = Archive::new(&ws);
    let raw = wal_bytes(1, 1 << 20);
    let data = a.push(SEG1, &raw);
    let dest = ws.path().join("RECOVERYXLOG");

    let out = a.fetch(&ws, SEG1, &dest, &[]);
    assert_success(&out);
    assert_eq!(stdout(&out), "", "restore_command prints nothing on stdout");
    assert_eq!(fs::read(&dest).expect("DEST"), raw);
    fs::remove_file(&dest).expect("rm");

    // The end of the archive, and a timeline PostgreSQL probes for: "not in the archive".
    assert_exit_code(&a.fetch(&ws, SEG2, &dest, &[]), 1);
    nothing_at(&dest);
    assert_exit_code(
        &a.fetch(&ws, "00000002.history", &dest, &["--target", "app"]),
        1,
    );
    nothing_at(&dest);

    // Once a later segment is archived, the missing one is a gap: fatal, named.
    a.push(SEG3, &wal_bytes(3, 1 << 20));
    let out = a.fetch(&ws, SEG2, &dest, &[]);
    assert_exit_code(&out, 204);
    assert!(stderr(&out).contains(SEG2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("first missing segment"),
        "{}",
        stderr(&out)
    );
    nothing_at(&dest);

    // A damaged data object never reaches DEST.
    let mut stored = fs::read(&data).expect("data");
    let middle = stored.len() / 2;
    stored[middle] ^= 0x40;
    fs::write(&data, stored).expect("corrupt");
    let out = a.fetch(&ws, SEG1, &dest, &[]);
    assert_exit_code(&out, 204);
    // age's authentication finds it first (a digest mismatch would be 204 as well).
    let name = data
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert!(stderr(&out).contains(&name), "{}", stderr(&out));
    nothing_at(&dest);

    // A restore_command PostgreSQL cannot use is fatal too, never "not in the archive".
    assert_exit_code(&a.fetch(&ws, SEG1, &dest, &["--target", "nope"]), 202);
    assert_exit_code(&a.fetch(&ws, "RECOVERYXLOG", &dest, &[]), 202);
    assert_exit_code(&ws.dr(&a.cfg, &["wal", "fetch", SEG1]), 202);
    nothing_at(&dest);
}

/// Nothing listens at the repository's endpoint: after its retries the fetch exits 203
/// (fatal: recovery stops rather than ends); a SIGTERM meanwhile (the server shutting down)
/// exits 143, which PostgreSQL reads as a shutdown.
#[test]
fn fetch_exits_203_when_the_repository_stays_unreachable_and_143_on_sigterm() {
    let ws = Workspace::new();
    let (identity, recipient) = ws.keygen();
    let cfg = ws.write(
        "down.toml",
        &format!(
            "[repository]\nurl = \"s3://bucket/dr\"\n[repository.s3]\nendpoint = \"http://127.0.0.1:{}\"\npath_style = true\n[encryption]\nrecipients = [\"{recipient}\"]\nidentity_file = \"{}\"\n[[targets]]\nname = \"app\"\nurl = \"postgres://u@127.0.0.1:1/app\"\n",
            free_port(),
            identity.display()
        ),
    );
    let dest = ws.path().join("RECOVERYXLOG");
    let args = ["wal", "fetch", SEG1, dest.to_str().expect("utf-8 path")];

    let child = ws
        .dr_command(&cfg, &args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn dr");
    std::thread::sleep(Duration::from_secs(2));
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill")
        .success());
    let out = child.wait_with_output().expect("wait");
    assert_exit_code(&out, 143);
    assert!(stderr(&out).contains("interrupted"), "{}", stderr(&out));
    nothing_at(&dest);

    let out = ws.dr(&cfg, &args);
    assert_exit_code(&out, 203);
    assert!(
        stderr(&out).contains("recovery stopped"),
        "{}",
        stderr(&out)
    );
    nothing_at(&dest);
}

/// A cluster made from a base backup, recovering with `restore_command = 'dr … wal fetch %f
/// %p'`; stopped when dropped.
struct Recovery {
    data: PathBuf,
    bin_dir: PathBuf,
    port: u16,
    log: PathBuf,
}

impl Recovery {
    /// Copy `base` to `dir/name`, ask for archive recovery to the end of the WAL (no target:
    /// the case where "not found" too early silently promotes a short copy), and start it.
    fn start(pg: &Postgres, base: &Path, dir: &Path, name: &str, cfg: &Path) -> (Recovery, Output) {
        let data = dir.join(name);
        run_ok(
            as_postgres(Path::new("cp")).arg("-a").arg(base).arg(&data),
            "cp -a base",
        );
        run_ok(
            as_postgres(Path::new("touch")).arg(data.join("recovery.signal")),
            "touch recovery.signal",
        );
        let mut auto = fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.auto.conf"))
            .expect("postgresql.auto.conf");
        writeln!(
            auto,
            "restore_command = '{} --config {} wal fetch %f %p'\narchive_mode = off",
            dr_bin().display(),
            cfg.display()
        )
        .expect("write postgresql.auto.conf");
        let rec = Recovery {
            log: dir.join(format!("{name}.log")),
            data,
            bin_dir: pg.bin_dir().to_path_buf(),
            port: free_port(),
        };
        let out = run_with_timeout(
            as_postgres(&rec.bin_dir.join("pg_ctl"))
                .args(["start", "-w", "-t", "60", "-D"])
                .arg(&rec.data)
                .arg("-l")
                .arg(&rec.log)
                .arg("-o")
                .arg(format!("-p {}", rec.port)),
            None,
            Duration::from_secs(90),
        );
        (rec, out)
    }

    fn psql(&self, sql: &str) -> Option<String> {
        let out = run_with_timeout(
            Command::new(self.bin_dir.join("psql"))
                .args(["-X", "-At", "-h", "127.0.0.1", "-U", "postgres", "-d"])
                .arg("postgres")
                .arg("-p")
                .arg(self.port.to_string())
                .arg("-c")
                .arg(sql),
            None,
            Duration::from_secs(30),
        );
        out.status
            .success()
            .then(|| stdout(&out).trim().to_string())
    }

    fn running(&self) -> bool {
        self.data.join("postmaster.pid").exists()
    }
}

impl Drop for Recovery {
    fn drop(&mut self) {
        let _ = run_with_timeout(
            as_postgres(&self.bin_dir.join("pg_ctl"))
                .args(["stop", "-m", "immediate", "-w", "-t", "15", "-D"])
                .arg(&self.data),
            None,
            Duration::from_secs(20),
        );
    }
}

/// PostgreSQL itself reads dr's answers as meant: it replays every archived segment through
/// `dr wal fetch`, takes exit 1 as the end of the WAL and promotes; with a segment missing
/// before an archived one (exit 204) it stops with FATAL instead of promoting a copy that
/// lacks the rest.
#[test]
fn postgres_15_replays_through_dr_wal_fetch_and_stops_at_a_gap() {
    replays_and_stops_at_a_gap(Postgres::start());
}

#[test]
fn postgres_17_replays_through_dr_wal_fetch_and_stops_at_a_gap() {
    let Some(bin_dir) = pg_bin_dir(17) else {
        eprintln!("skipped: no PostgreSQL 17 binaries (ci/setup.sh installs them)");
        return;
    };
    replays_and_stops_at_a_gap(Postgres::start_with_bin_dir(&bin_dir));
}

fn replays_and_stops_at_a_gap(pg: Postgres) {
    let ws = Workspace::new();
    let dir = pg.socket_dir().join("pitr");
    let archive = dir.join("archive");
    fs::create_dir_all(&archive).expect("mkdir");
    if is_root() {
        run_ok(
            Command::new("chown")
                .arg("postgres:postgres")
                .arg(&dir)
                .arg(&archive),
            "chown",
        );
    }
    pg.psql(
        "postgres",
        &format!(
            "alter system set archive_mode = on;\nalter system set archive_command = 'cp %p {}/%f';",
            archive.display()
        ),
    );
    pg.restart();
    pg.psql(
        "postgres",
        "create table marks (n int); insert into marks values (1);",
    );
    let base = dir.join("base");
    run_ok(
        as_postgres(&pg.bin_dir().join("pg_basebackup"))
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-X",
                "none",
                "-c",
                "fast",
            ])
            .arg("-p")
            .arg(pg.port().to_string())
            .arg("-D")
            .arg(&base),
        "pg_basebackup",
    );
    pg.psql("postgres", "insert into marks values (2);");
    let middle = pg.psql("postgres", "select pg_walfile_name(pg_switch_wal());");
    pg.psql("postgres", "insert into marks values (3);");
    let last = pg.psql("postgres", "select pg_walfile_name(pg_switch_wal());");
    assert!(
        wait_until(Duration::from_secs(60), || {
            pg.psql(
                "postgres",
                "select last_archived_wal from pg_stat_archiver;",
            ) == last
        }),
        "{last} was not archived"
    );

    let a = Archive::for_postgres(&ws, &dir.join("dr"));
    let mut names = Vec::new();
    for entry in fs::read_dir(&archive).expect("archive") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        a.push(&name, &fs::read(archive.join(&name)).expect("read WAL"));
        names.push(name);
    }
    assert!(names.contains(&middle), "{middle} not in {names:?}");
    if is_root() {
        run_ok(
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.join("dr")),
            "chown",
        );
    }

    // The whole archive: every mark, then promotion at the end of the WAL (exit 1).
    let (full, out) = Recovery::start(&pg, &base, &dir, "full", &a.cfg);
    assert_success(&out);
    assert!(
        wait_until(Duration::from_secs(60), || {
            full.psql("select pg_is_in_recovery()").as_deref() == Some("f")
        }),
        "recovery did not end\n{}",
        tail(&full.log, 4000)
    );
    assert_eq!(
        full.psql("select string_agg(n::text, ',' order by n) from marks")
            .as_deref(),
        Some("1,2,3"),
        "{}",
        tail(&full.log, 4000)
    );
    drop(full);

    // The segment holding mark 2 removed while the one holding mark 3 is archived: a gap.
    let record = a
        .repo
        .join(keys::record("app", middle.parse().expect("segment")));
    fs::remove_file(&record).expect("remove the record");
    let (gap, _) = Recovery::start(&pg, &base, &dir, "gap", &a.cfg);
    assert!(
        wait_until(Duration::from_secs(60), || !gap.running()),
        "the server kept running past the gap\n{}",
        tail(&gap.log, 4000)
    );
    let log = tail(&gap.log, 8000);
    assert!(log.contains("exit code 204"), "{log}");
    assert!(log.contains(&middle), "{log}");
    assert!(!log.contains("selected new timeline ID"), "promoted: {log}");
    assert!(
        !gap.data.join("pg_wal/00000002.history").exists(),
        "promoted: {log}"
    );
}

/// `--spool DIR` (what `dr restore --to-dir` writes): after serving a segment a worker
/// fetches the next ones, verified, into DIR; they are served from there, even once the
/// repository is gone; the worker stops at the end of the archive.
#[test]
fn with_a_spool_the_next_segments_are_fetched_ahead_and_served_from_it() {
    let ws = Workspace::new();
    let a = Archive::new(&ws);
    let names: Vec<String> = (1..=6)
        .map(|n| format!("0000000100000000000000{n:02X}"))
        .collect();
    for (i, n) in names.iter().enumerate() {
        a.push(n, &wal_bytes(i as u32 + 10, 1 << 20));
    }
    let pg_wal = ws.path().join("pg_wal");
    fs::create_dir_all(&pg_wal).expect("mkdir");
    let spool = pg_wal.join(".dr-fetch");
    let spool_arg = spool.to_str().expect("utf-8");
    let dest = pg_wal.join("RECOVERYXLOG");
    assert_success(&a.fetch(&ws, &names[0], &dest, &["--spool", spool_arg]));
    assert_eq!(fs::read(&dest).expect("DEST"), wal_bytes(10, 1 << 20));
    fs::remove_file(&dest).expect("rm");

    let ahead = wait_until(Duration::from_secs(60), || {
        names[1..].iter().all(|n| spool.join(n).exists())
    });
    assert!(
        ahead,
        "prefetched: {:?}",
        fs::read_dir(&spool).map(|d| d.count())
    );
    assert!(
        !spool.join("000000010000000000000007").exists(),
        "not archived"
    );

    // The repository goes away: what was fetched ahead is still served, once.
    fs::rename(&a.repo, ws.path().join("repo-gone")).expect("mv repo");
    let out = a.fetch(&ws, &names[1], &dest, &["--spool", spool_arg]);
    assert_success(&out);
    assert_eq!(fs::read(&dest).expect("DEST"), wal_bytes(11, 1 << 20));
    assert!(!spool.join(&names[1]).exists(), "moved, not copied");
    // Without the spool the same request needs the repository: a repository that is not
    // there is never "not in the archive" (exit 1 would end recovery early).
    fs::remove_file(&dest).expect("rm");
    let out = a.fetch(&ws, &names[2], &dest, &[]);
    assert_exit_code(&out, 203);
    assert!(
        stderr(&out).contains("holds no WAL archive"),
        "{}",
        stderr(&out)
    );
}
