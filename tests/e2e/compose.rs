//! deploy/compose: `docker-compose up` (Debian's v1) brings up postgres:17 and the dr daemon
//! sidecar from dr:latest; a backup made through it restores as an exact copy; a drill in the
//! dr container proves the base backup and its streamed WAL; `down -v`
//! removes containers, networks and volumes however the test ends. The README's setup lines run
//! verbatim, as a non-root operator with sudo. Skipped when docker-compose or the images are
//! missing (ci/test.sh builds them), or when not root.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::support::*;

struct Project {
    dir: PathBuf,
    name: String,
}

impl Project {
    fn compose(&self, args: &[&str]) -> Output {
        let mut c = Command::new("docker-compose");
        c.current_dir(&self.dir).args(["-p", &self.name]).args(args);
        run_with_timeout(&mut c, None, Duration::from_secs(600))
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "-v", "--remove-orphans", "-t", "5"]);
    }
}

fn available() -> bool {
    let ok = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    ok("docker-compose", &["version"])
        && ok("docker", &["image", "inspect", "dr:latest"])
        && ok("docker", &["image", "inspect", "postgres:17"])
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).expect("copy");
        }
    }
}

/// A uid that is not root and not the image's 65532: the operator following the README with
/// sudo.
const OPERATOR_UID: u32 = 4242;

/// The README's setup lines (its first ```sh block, up to `docker-compose up`), as written.
fn readme_setup_script() -> String {
    let readme = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/compose/README.md"),
    )
    .expect("deploy/compose/README.md");
    let block = readme
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a ```sh block in deploy/compose/README.md");
    let setup: Vec<&str> = block
        .lines()
        .take_while(|l| !l.trim_start().starts_with("docker-compose up"))
        .collect();
    assert!(
        setup.iter().any(|l| l.contains("keygen")),
        "no keygen step before `docker-compose up`:\n{block}"
    );
    setup.join("\n") + "\n"
}

/// Runs the README's setup lines verbatim in `<ws>/deploy/compose` (a copy) as a non-root
/// operator (uid [`OPERATOR_UID`], in the docker group) whose `sudo` runs the command as root
/// (a setuid copy of `env`), as an operator with sudo would. Regression: the README made the
/// identity unreadable before reading its recipient, so a sudo user got `recipients = [""]`.
/// Returns the compose directory, set up.
fn readme_setup(ws: &Workspace) -> PathBuf {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mode = |p: &Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).expect("chmod");
    };
    let dir = ws.path().join("deploy/compose");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/compose"),
        &dir,
    );
    let home = ws.path().join("home");
    let bin = ws.path().join("bin");
    std::fs::create_dir_all(&home).expect("home");
    std::fs::create_dir_all(&bin).expect("bin");
    std::fs::copy("/usr/bin/env", bin.join("sudo")).expect("sudo");
    mode(&bin.join("sudo"), 0o4755);
    mode(ws.path(), 0o755);
    mode(&bin, 0o755);
    for p in [ws.path().join("deploy"), dir.clone(), home.clone()] {
        std::os::unix::fs::chown(&p, Some(OPERATOR_UID), Some(OPERATOR_UID)).expect("chown");
    }
    for e in std::fs::read_dir(&dir).expect("read_dir").flatten() {
        std::os::unix::fs::chown(e.path(), Some(OPERATOR_UID), Some(OPERATOR_UID)).expect("chown");
    }
    let docker_gid = std::fs::metadata("/var/run/docker.sock")
        .map(|m| m.gid())
        .expect("/var/run/docker.sock");
    let script = ws.write("setup.sh", &readme_setup_script());
    mode(&script, 0o644);
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={OPERATOR_UID}"))
        .arg(format!("--regid={OPERATOR_UID}"))
        .arg(format!("--groups={docker_gid}"))
        .args(["bash", "-euo", "pipefail"])
        .arg(&script)
        .current_dir(ws.path())
        .env("HOME", &home)
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        );
    let out = run_with_timeout(&mut c, None, Duration::from_secs(300));
    assert!(
        out.status.success(),
        "the README's setup lines failed:\n{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    // The identity is the image user's alone, and dr.toml holds its recipient.
    let identity = dir.join("identity.txt");
    let meta = std::fs::metadata(&identity).expect("identity.txt");
    assert_eq!(meta.uid(), 65532, "identity.txt owner");
    assert_eq!(meta.mode() & 0o777, 0o400, "identity.txt mode");
    let recipient = std::fs::read_to_string(&identity)
        .expect("identity")
        .lines()
        .find_map(|l| l.strip_prefix("# public key: ").map(str::to_string))
        .expect("a public key line in identity.txt");
    let toml = std::fs::read_to_string(dir.join("dr.toml")).expect("dr.toml");
    assert!(
        toml.contains(&format!("recipients = [\"{recipient}\"]")),
        "dr.toml does not hold the identity's recipient {recipient}:\n{toml}"
    );
    dir
}

#[test]
fn the_compose_example_comes_up_backs_up_and_restores() {
    if !available() {
        eprintln!("SKIP: docker-compose, dr:latest or postgres:17 missing");
        return;
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| stdout(&o).trim() == "0");
    if !root {
        eprintln!("SKIP: not root (the README's setup runs as another user with a sudo)");
        return;
    }
    let _heavy = one_heavy_test_at_a_time();
    let ws = Workspace::new();
    let dir = readme_setup(&ws);
    std::fs::write(
        dir.join("dr.env"),
        "POSTGRES_PASSWORD=compose-secret\nPGPASSWORD=compose-secret\n",
    )
    .expect("env");
    // The growing WAL segment every 3 s instead of 30, so the test need not wait.
    let toml = std::fs::read_to_string(dir.join("dr.toml")).expect("dr.toml");
    assert!(toml.contains("mode = \"stream\"\n"), "{toml}");
    let toml = toml.replace(
        "mode = \"stream\"\n",
        "mode = \"stream\"\npartial_upload_secs = 3\n",
    );
    std::fs::write(dir.join("dr.toml"), toml).expect("dr.toml");
    let p = Project {
        dir,
        name: format!("drcompose{}", std::process::id()),
    };
    let up = p.compose(&["up", "-d"]);
    assert!(up.status.success(), "up: {}", stderr(&up));
    let psql = |db: &str, sql: &str| {
        p.compose(&[
            "exec",
            "-T",
            "db",
            "psql",
            "-X",
            "-q",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-U",
            "postgres",
            "-d",
            db,
            "-c",
            sql,
        ])
    };
    let o = psql(
        "app",
        "create table orders (id int primary key, note text); \
         insert into orders select g, 'order ' || g from generate_series(1, 1000) g;",
    );
    assert!(o.status.success(), "{}", stderr(&o));

    // The daemon backs up at once on its first start (an overdue job); then one by hand.
    let mut backed_up = None;
    for _ in 0..60 {
        let o = p.compose(&["exec", "-T", "dr", "dr", "backup"]);
        if o.status.success() {
            backed_up = Some(o);
            break;
        }
        // 6: the daemon's own run holds the target's lock; anything else is a failure.
        assert_eq!(o.status.code(), Some(6), "dr backup: {}", stderr(&o));
        std::thread::sleep(Duration::from_secs(2));
    }
    let o = backed_up.expect("dr backup never got the lock");
    assert!(stdout(&o).starts_with("app\t"), "{}", stdout(&o));
    let o = p.compose(&["exec", "-T", "dr", "dr", "list"]);
    assert!(o.status.success(), "{}", stderr(&o));

    let o = p.compose(&[
        "exec",
        "-T",
        "dr",
        "dr",
        "restore",
        "latest",
        "--to",
        "postgres://postgres@db:5432/app_copy",
        "--yes",
    ]);
    assert!(o.status.success(), "restore: {}", stderr(&o));
    let q = "select count(*), md5(string_agg(note, ',' order by id)) from orders";
    let want = stdout(&psql("app", q));
    assert!(want.starts_with("1000|"), "{want}");
    assert_eq!(stdout(&psql("app_copy", q)), want);
    let logs = p.compose(&["logs", "dr"]);
    assert!(!stdout(&logs).contains("panicked"), "{}", stdout(&logs));

    loses_the_server_and_recovers_every_commit(&p, &psql, q);
}

/// The README's point-in-time recovery: a base backup, commits after it, the server killed
/// and its volume gone; `recover` into a new volume brings back every commit.
fn loses_the_server_and_recovers_every_commit(
    p: &Project,
    psql: &dyn Fn(&str, &str) -> Output,
    q: &str,
) {
    let mut based = None;
    for _ in 0..60 {
        let o = p.compose(&["exec", "-T", "dr", "dr", "backup", "--physical"]);
        if o.status.success() {
            based = Some(o);
            break;
        }
        // 6: the daemon's own base backup (its first start) holds the lock.
        assert_eq!(
            o.status.code(),
            Some(6),
            "dr backup --physical: {}",
            stderr(&o)
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    based.expect("dr backup --physical never got the lock");
    let o = psql(
        "app",
        "insert into orders select g, 'late ' || g from generate_series(1001, 1010) g;",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let want = stdout(&psql("app", q));
    assert!(want.starts_with("1010|"), "{want}");
    // No segment switch: the commit is only in the growing segment, up within 3 s.
    std::thread::sleep(Duration::from_secs(8));
    drills_the_window_in_the_dr_container(p);
    let o = p.compose(&["kill", "db"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = p.compose(&["rm", "-sf", "db"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run_with_timeout(
        Command::new("docker").args(["volume", "rm", &format!("{}_pgdata", p.name)]),
        None,
        Duration::from_secs(60),
    );
    assert!(o.status.success(), "volume rm: {}", stderr(&o));

    let o = p.compose(&[
        "run", "--rm", "recover", "restore", "--at", "latest", "--to-dir", "/restore", "--start",
    ]);
    let logs = p.compose(&["logs", "--tail", "40", "dr"]);
    assert!(
        o.status.success(),
        "recover: {}\n{}\n--- dr ---\n{}",
        stdout(&o),
        stderr(&o),
        stdout(&logs)
    );
    let o = p.compose(&["up", "-d", "db"]);
    assert!(o.status.success(), "up db: {}", stderr(&o));
    let back = wait_until(Duration::from_secs(120), || stdout(&psql("app", q)) == want);
    assert!(
        back,
        "after recovery: {} (want {want})\n{}",
        stdout(&psql("app", q)),
        stdout(&p.compose(&["logs", "--tail", "40", "db"]))
    );

    // The recovered server is on timeline 2, and the daemon streams it on.
    let o = psql(
        "app",
        "insert into orders values (2000, 'after'); select pg_switch_wal();",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let streamed = wait_until(Duration::from_secs(120), || {
        let o = p.compose(&["exec", "-T", "dr", "ls", "/repo/app/wal"]);
        stdout(&o).lines().any(|l| l.starts_with("00000002"))
    });
    assert!(
        streamed,
        "no WAL of timeline 2 streamed\n{}",
        stdout(&p.compose(&["logs", "--tail", "60", "dr"]))
    );
}

/// The README's weekly drill, by hand in the dr container as the daemon's `drill` job runs it:
/// the base backup and the WAL streamed since recovered in a sandbox under the container's
/// `/tmp` by PostgreSQL 17 of the image, running as its user, and proven; `dr status` shows it.
fn drills_the_window_in_the_dr_container(p: &Project) {
    let o = p.compose(&["exec", "-T", "dr", "dr", "verify", "--pitr"]);
    let text = stdout(&o);
    assert!(
        o.status.success(),
        "dr verify --pitr: {text}\n{}\n--- dr ---\n{}",
        stderr(&o),
        stdout(&p.compose(&["logs", "--tail", "40", "dr"]))
    );
    assert!(text.contains("proven window"), "{text}");
    eprintln!("dr verify --pitr in the dr container:\n{text}");
    // The image has what a drill needs (pg_verifybackup, pg_amcheck and amcheck of 17):
    // nothing is left unproven but the exact counts (the server has wal_level = replica).
    let unproven: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with("not proven"))
        .collect();
    assert!(
        unproven.iter().all(|l| l.contains("exact row counts")),
        "{text}"
    );
    for timing in ["pg_verifybackup", "recover", "checks"] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(timing)),
            "{timing}: {text}"
        );
    }
    let o = p.compose(&["exec", "-T", "dr", "dr", "status"]);
    let status = stdout(&o);
    assert!(
        status
            .lines()
            .any(|l| l.trim_start().starts_with("drill ") && l.contains(": proven ")),
        "{status}\n{}",
        stderr(&o)
    );
    // Regression: the daemon's first start caught up the drill job before any base backup
    // existed, and the job failed ("no trusted base backup to drill").
    let logs = stdout(&p.compose(&["logs", "dr"]));
    assert!(!logs.contains("drill of `app` failed"), "{logs}");
    // The sandbox is gone from the tmpfs.
    let o = p.compose(&["exec", "-T", "dr", "ls", "-A", "/tmp"]);
    assert!(
        !stdout(&o).contains("dr-sandbox-"),
        "left in /tmp: {}",
        stdout(&o)
    );
}

/// The README's recipient lines fail loudly when there is no recipient to read (an identity
/// the operator cannot read, or an empty one), and leave `dr.toml` alone: before, `sed` wrote
/// `recipients = [""]` and the setup went on. Needs neither docker nor root.
#[test]
fn the_readme_recipient_step_fails_loudly_without_a_recipient() {
    let ws = Workspace::new();
    let dir = ws.path().join("compose");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/compose"),
        &dir,
    );
    std::fs::write(dir.join("identity.txt"), "").expect("identity");
    let script = readme_setup_script();
    let lines: Vec<&str> = script
        .lines()
        .filter(|l| l.contains("AGE_RECIPIENT") || l.trim_start().starts_with("recipient="))
        .collect();
    assert!(!lines.is_empty(), "no recipient lines in:\n{script}");
    let file = ws.write("recipient.sh", &(lines.join("\n") + "\n"));
    let mut c = Command::new("bash");
    c.arg(&file).current_dir(&dir);
    let out = run_with_timeout(&mut c, None, Duration::from_secs(30));
    assert!(
        !out.status.success(),
        "the recipient step succeeded without a recipient"
    );
    assert!(stderr(&out).contains("recipient"), "{}", stderr(&out));
    let toml = std::fs::read_to_string(dir.join("dr.toml")).expect("dr.toml");
    assert!(toml.contains("recipients = [\"AGE_RECIPIENT\"]"), "{toml}");
}
