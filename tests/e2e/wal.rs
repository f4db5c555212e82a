//! End-to-end: `dr wal push` as PostgreSQL's `archive_command` on real servers (PostgreSQL 15,
//! and 17 when it is installed), into a directory repository and into SeaweedFS. pgbench
//! writes WAL; every segment the archiver reports archived has a signed record, and none
//! failed. By hand: the same segment again is fine, a changed copy under its name is refused
//! and the archive is unchanged.
//!
//! The server runs `dr` as its own OS user, so what dr reads (config, env file, signing key)
//! and the directory repository live in a directory that user owns; secrets (the signing key
//! path, S3 keys) come from the env file, never from argv or `postgresql.auto.conf`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::support::*;

/// Where the archived WAL is, as the test reads it back (not through dr).
pub(crate) enum Repo {
    Dir(PathBuf),
    S3 { weed: SeaweedFs, bucket: String },
}

impl Repo {
    /// Keys relative to the repository prefix (`dr/` in the bucket).
    pub(crate) fn keys(&self) -> Vec<String> {
        match self {
            Repo::Dir(root) => files_under(root)
                .into_iter()
                .filter_map(|p| {
                    p.strip_prefix(root)
                        .ok()
                        .map(|k| k.to_string_lossy().into_owned())
                })
                .collect(),
            Repo::S3 { weed, bucket } => weed
                .object_keys(bucket)
                .into_iter()
                .filter_map(|k| k.strip_prefix("dr/").map(str::to_string))
                .collect(),
        }
    }

    fn read(&self, key: &str) -> Vec<u8> {
        match self {
            Repo::Dir(root) => std::fs::read(root.join(key)).expect("read object"),
            Repo::S3 { weed, bucket } => weed.fetch(bucket, &format!("dr/{key}")),
        }
    }
}

/// A server archiving with `dr wal push` into `repo`.
#[allow(dead_code)] // ws: kept alive for the test's length
pub(crate) struct Archiving {
    pub(crate) ws: Workspace,
    pub(crate) pg: Postgres,
    pub(crate) repo: Repo,
    /// Owned by the server's OS user: config, env file, signing key (and a directory repository).
    pub(crate) home: PathBuf,
    pub(crate) cfg: PathBuf,
    env_file: PathBuf,
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Make `path` (recursively) the server's OS user's when the tests run as root.
fn give_to_server(path: &Path) {
    if running_as_root() {
        let ok = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "chown -R postgres {}", path.display());
    }
}

/// `repository` is the `[repository]` section (and its subsections); `env` more env file lines.
fn archiving(
    pg: Postgres,
    repository: &str,
    env: &str,
    repo: impl FnOnce(&Path) -> Repo,
) -> Archiving {
    let ws = Workspace::new();
    let home = pg.socket_dir().join("dr");
    std::fs::create_dir_all(&home).expect("mkdir");
    let (_, recipient) = ws.keygen();
    let key = home.join("signing.key");
    std::fs::copy(ws.signing_key(), &key).expect("copy the signing key");
    let env_file = home.join("dr.env");
    std::fs::write(
        &env_file,
        format!("DR_SIGNING_KEY_FILE={}\n{env}", key.display()),
    )
    .expect("write env file");
    let repository = repository.replace("{home}", &home.display().to_string());
    let cfg = home.join("dr.toml");
    std::fs::write(
        &cfg,
        format!(
            "{repository}\n[encryption]\nrecipients = [\"{recipient}\"]\n[[targets]]\nname = \"app\"\nurl = \"{}\"\n[targets.wal]\nmode = \"archive\"\n",
            pg.url("postgres")
        ),
    )
    .expect("write config");
    give_to_server(&home);
    let repo = repo(&home);
    let command = format!(
        "{} --config {} --env-file {} wal push %p",
        dr_bin().display(),
        cfg.display(),
        env_file.display()
    );
    assert!(!command.contains('\''), "{command}");
    pg.psql(
        "postgres",
        &format!(
            "ALTER SYSTEM SET wal_level = 'replica';\nALTER SYSTEM SET archive_mode = 'on';\nALTER SYSTEM SET archive_command = '{command}';"
        ),
    );
    pg.restart();
    Archiving {
        ws,
        pg,
        repo,
        home,
        cfg,
        env_file,
    }
}

impl Archiving {
    /// `dr wal push ARGS` as the server runs it: its OS user, the same config and env file.
    fn push_by_hand(&self, path: &Path) -> Output {
        let mut c = if running_as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(dr_bin());
            c
        } else {
            Command::new(dr_bin())
        };
        c.arg("--config")
            .arg(&self.cfg)
            .arg("--env-file")
            .arg(&self.env_file)
            .args(["wal", "push"])
            .arg(path)
            .current_dir(&self.home)
            .env("NO_COLOR", "1");
        run_with_timeout(&mut c, None, Duration::from_secs(120))
    }

    fn pgbench(&self, args: &[&str]) {
        let mut c = Command::new(self.pg.bin_dir().join("pgbench"));
        c.args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
            .arg(self.pg.port().to_string())
            .args(args)
            .arg("postgres");
        let out = run_with_timeout(&mut c, None, Duration::from_secs(300));
        assert_success(&out);
    }

    /// Wait until the archiver reports `segment` archived; (archived_count, failed_count).
    pub(crate) fn wait_archived(&self, segment: &str) -> (u64, u64) {
        let deadline = Instant::now() + Duration::from_secs(240);
        loop {
            let row = self.pg.psql(
                "postgres",
                "select coalesce(last_archived_wal, ''), archived_count, failed_count, coalesce(last_failed_wal, '') from pg_stat_archiver",
            );
            let cells: Vec<&str> = row.split('|').collect();
            let count = |i: usize| cells[i].parse::<u64>().expect("a count");
            if cells[0] == segment {
                return (count(1), count(2));
            }
            assert!(
                Instant::now() < deadline,
                "{segment} not archived within 240 s (pg_stat_archiver: {row})\n--- server log ---\n{}",
                server_log(&self.pg)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The end of the server's log (where archive_command's stderr goes).
fn server_log(pg: &Postgres) -> String {
    let text = std::fs::read_to_string(pg.socket_dir().join("postgres.log")).unwrap_or_default();
    let start = text.len().saturating_sub(6000);
    text.get(start..).unwrap_or(&text).to_string()
}

/// Names of the segments with a record on timeline 1, sorted.
pub(crate) fn recorded_segments(repo: &Repo) -> Vec<String> {
    let mut names: Vec<String> = repo
        .keys()
        .into_iter()
        .filter_map(|k| {
            k.strip_prefix("app/wal/0000000100000000/")?
                .strip_suffix(".rec")
                .map(str::to_string)
        })
        .collect();
    names.sort();
    names
}

fn segment_number(name: &str) -> u64 {
    u64::from_str_radix(&name[8..], 16).expect("hex")
}

/// The whole scenario against one server and repository.
fn archive_under_pgbench(a: &Archiving) {
    a.pgbench(&["-i", "-s", "5", "-q"]);
    a.pgbench(&["-T", "10", "-c", "2"]);
    let last =
        a.pg.psql("postgres", "select pg_walfile_name(pg_switch_wal())");
    let (archived, failed) = a.wait_archived(&last);
    // Copied at once, before a checkpoint recycles it (for the pushes by hand below).
    let copy = a.home.join(&last);
    std::fs::copy(a.pg.socket_dir().join("data/pg_wal").join(&last), &copy)
        .expect("copy the last archived segment");
    give_to_server(&copy);
    assert_eq!(failed, 0, "the archiver saw failures");

    // Every segment the archiver reports is recorded, one after the other, up to `last`.
    let recorded = recorded_segments(&a.repo);
    assert_eq!(recorded.len() as u64, archived, "{recorded:?}");
    assert_eq!(recorded.last(), Some(&last));
    let numbers: Vec<u64> = recorded.iter().map(|n| segment_number(n)).collect();
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "a gap: {recorded:?}"
    );
    assert!(archived >= 3, "pgbench wrote {archived} segments");
    eprintln!(
        "PostgreSQL {}: {archived} segments archived, up to {last}",
        a.pg.major()
    );

    // The records say which cluster wrote them; they are signed.
    let sysid = a.pg.psql(
        "postgres",
        "select system_identifier from pg_control_system()",
    );
    let record_key = format!("app/wal/0000000100000000/{last}.rec");
    let record = a.repo.read(&record_key);
    let text = String::from_utf8_lossy(&record).into_owned();
    let (line, signature) = text.split_once('\n').expect("a signed record");
    let json: serde_json::Value = serde_json::from_str(line).expect("record json");
    assert_eq!(json["kind"], "segment");
    assert_eq!(json["name"], last.as_str());
    assert_eq!(json["system_identifier"], sysid.as_str());
    assert_eq!(json["server_major"], a.pg.major());
    assert!(
        signature.starts_with("-----BEGIN SSH SIGNATURE-----"),
        "{text}"
    );
    let identity = String::from_utf8_lossy(&a.repo.read("app/wal/identity.json")).into_owned();
    assert!(identity.contains(&sysid), "{identity}");

    // By hand: the same segment twice is fine.
    let before = a.repo.keys();
    for _ in 0..2 {
        let out = a.push_by_hand(&copy);
        assert_success(&out);
        assert!(
            stderr(&out).contains("already archived with the same content"),
            "{}",
            stderr(&out)
        );
    }
    assert_eq!(a.repo.keys(), before, "our data objects were deleted");

    // A changed copy under the same name is refused; nothing stored changes.
    let mut bytes = std::fs::read(&copy).expect("read copy");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(&copy, &bytes).expect("write copy");
    let out = a.push_by_hand(&copy);
    assert_exit_code(&out, 4);
    assert!(
        stderr(&out).contains("different content"),
        "{}",
        stderr(&out)
    );
    assert_eq!(a.repo.keys(), before);
    assert_eq!(a.repo.read(&record_key), record);
}

pub(crate) fn directory_archive(pg: Postgres) -> Archiving {
    archiving(
        pg,
        "[repository]\nurl = \"file://{home}/repo\"",
        "",
        |home| Repo::Dir(home.join("repo")),
    )
}

#[test]
fn postgres_15_archives_every_segment_into_a_directory() {
    let a = directory_archive(Postgres::start());
    archive_under_pgbench(&a);
}

#[test]
fn postgres_17_archives_every_segment_into_a_directory() {
    let Some(bin) = pg_bin_dir(17) else {
        eprintln!("skipped: no PostgreSQL 17 (set DR_TEST_PG17_BIN)");
        return;
    };
    let a = directory_archive(Postgres::start_with_bin_dir(&bin));
    archive_under_pgbench(&a);
}

#[test]
fn postgres_15_archives_every_segment_into_seaweedfs() {
    let weed = SeaweedFs::start();
    weed.create_bucket("wal");
    let repository = format!(
        "[repository]\nurl = \"s3://wal/dr\"\n[repository.s3]\nendpoint = \"{}\"\npath_style = true\nregion = \"us-east-1\"",
        weed.endpoint()
    );
    let env = "AWS_ACCESS_KEY_ID=any\nAWS_SECRET_ACCESS_KEY=any\nAWS_REGION=us-east-1\nAWS_EC2_METADATA_DISABLED=true\n";
    let a = archiving(Postgres::start(), &repository, env, |_| Repo::S3 {
        weed,
        bucket: "wal".into(),
    });
    archive_under_pgbench(&a);
}
