//! Every exit code documented in docs/EXIT_CODES.md, produced by the real binary against a
//! real PostgreSQL and a directory repository. The table is the single source: a code added
//! to it without a scenario here fails this test, and so does a scenario that exits otherwise.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// The codes in the (first) table of docs/EXIT_CODES.md, with their names. The fetch table
/// further down is `dr wal fetch`'s (tests/e2e/wal_fetch.rs).
fn documented_codes() -> BTreeMap<i32, String> {
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/EXIT_CODES.md");
    let text = std::fs::read_to_string(&doc).expect("docs/EXIT_CODES.md");
    text.lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            // "| 4 | integrity | ..." → ["", "4", "integrity", ...]
            let code = cells.get(1)?.parse::<i32>().ok()?;
            Some((code, cells.get(2)?.to_string()))
        })
        .collect()
}

struct Fixture {
    ws: Workspace,
    pg: Postgres,
    cfg: PathBuf,
    repo: PathBuf,
    config_text: String,
}

impl Fixture {
    fn dr(&self, args: &[&str]) -> Output {
        self.ws.dr(&self.cfg, args)
    }

    /// A config like the fixture's with `extra` appended (under a new file name).
    fn variant(&self, name: &str, extra: &str) -> PathBuf {
        self.ws
            .write(name, &format!("{}\n{extra}", self.config_text))
    }
}

fn fixture() -> Fixture {
    let ws = Workspace::new();
    let pg = Postgres::start();
    pg.create_db("app");
    pg.psql(
        "app",
        "create table filler as select g, repeat(md5(g::text), 20) as t from generate_series(1, 600000) g; \
         create table \"Small\" (id int primary key); insert into \"Small\" values (1), (2);",
    );
    let (identity, recipient) = ws.keygen();
    let repo = ws.path().join("repo");
    let config_text = dir_config_text(&repo, &recipient, Some(&identity), &pg.url("app"), "");
    let cfg = ws.write("dr.toml", &config_text);
    Fixture {
        ws,
        pg,
        cfg,
        repo,
        config_text,
    }
}

/// Runs the scenario for `code`; returns what the binary did.
fn scenario(f: &Fixture, code: i32) -> Output {
    match code {
        0 => f.dr(&["list"]),
        // pg_restore errors: --force on top of a database that already holds the table.
        1 => {
            f.pg.create_db("busy");
            f.pg.psql("busy", "create table \"Small\" (other text);");
            f.dr(&["restore", "--to", &f.pg.url("busy"), "--force", "--yes"])
        }
        2 => f.ws.dr(&f.variant("bad.toml", "[nonsense]\nkey = 1\n"), &["list"]),
        // Nothing listens on port 1.
        3 => {
            let text = f.config_text.replace(&f.pg.url("app"), "postgres://postgres@127.0.0.1:1/app");
            f.ws.dr(&f.ws.write("down.toml", &text), &["backup"])
        }
        // A flipped byte in the middle of the largest data stream: refused before the target is touched.
        4 => {
            let dump = files_under(&f.repo)
                .into_iter()
                .find(|p| p.to_string_lossy().ends_with("data-1.zst.age"))
                .expect("dump object");
            let original = std::fs::read(&dump).expect("read");
            let mut bytes = original.clone();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x55;
            std::fs::write(&dump, &bytes).expect("write");
            let out = f.dr(&["restore", "--to", &f.pg.url("damaged"), "--yes"]);
            std::fs::write(&dump, &original).expect("restore the object");
            out
        }
        5 => {
            let cfg = f.variant(
                "assert.toml",
                &format!(
                    "[verify]\nsandbox = \"local\"\npg_bin_dir = \"{}\"\n[[verify.assert]]\nname = \"never\"\nsql = \"select false\"\n",
                    f.pg.bin_dir().display()
                ),
            );
            f.ws.dr(&cfg, &["verify"])
        }
        // Another run's live lock.
        6 => {
            let now = chrono_like_now();
            let lock = f.repo.join("locks/app.json");
            std::fs::create_dir_all(lock.parent().expect("parent")).expect("mkdir");
            std::fs::write(
                &lock,
                format!(
                    "{{\"target\":\"app\",\"holder\":\"other-host:1\",\"operation\":\"backup\",\"acquired_at\":\"{now}\",\"expires_at\":\"2999-01-01T00:00:00Z\",\"token\":\"t\"}}"
                ),
            )
            .expect("write lock");
            let out = f.dr(&["backup"]);
            std::fs::remove_file(&lock).expect("remove lock");
            out
        }
        7 => f.dr(&["restore", "--to", &f.pg.url("app"), "--yes"]),
        // A repository with nothing in it: the target has no backup.
        8 => {
            let text = f
                .config_text
                .replace(&f.repo.display().to_string(), &f.ws.path().join("empty").display().to_string());
            f.ws.dr(&f.ws.write("empty.toml", &text), &["status"])
        }
        130 => {
            let mut cmd = f.ws.dr_command(&f.cfg, &["backup"]);
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
            let child = cmd.spawn().expect("spawn");
            let deadline = Instant::now() + Duration::from_secs(60);
            while f.pg.psql("postgres", "select count(*) from pg_stat_activity where query like 'COPY %'") == "0" {
                assert!(Instant::now() < deadline, "pg_dump never started");
                std::thread::sleep(Duration::from_millis(20));
            }
            assert!(Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .expect("kill")
                .success());
            child.wait_with_output().expect("wait")
        }
        other => panic!("docs/EXIT_CODES.md documents exit code {other}, but tests/e2e/exit_codes.rs has no scenario for it"),
    }
}

/// RFC 3339 "now" without a chrono dependency in the tests.
fn chrono_like_now() -> String {
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .expect("date");
    stdout(&out).trim().to_string()
}

#[test]
fn every_documented_exit_code_is_produced() {
    let codes = documented_codes();
    assert!(
        codes.len() >= 10,
        "could not read the table of docs/EXIT_CODES.md: {codes:?}"
    );
    let f = fixture();
    assert_success(&f.dr(&["backup"]));
    for (code, name) in &codes {
        let out = scenario(&f, *code);
        assert_eq!(
            out.status.code(),
            Some(*code),
            "exit code {code} ({name}) was not produced\n--- stderr ---\n{}",
            stderr(&out)
        );
        if *code != 0 {
            assert!(
                stderr(&out).contains("error:") || *code == 8,
                "exit {code} without an error line: {}",
                stderr(&out)
            );
        }
    }
}
