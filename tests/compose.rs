//! deploy/compose: `docker-compose up` (Debian's v1) brings up postgres:17 and the dr daemon
//! sidecar from dr:latest; a backup made through it restores as an exact copy; `down -v`
//! removes containers, networks and volumes however the test ends. Skipped when
//! docker-compose or the images are missing (ci/test.sh builds them).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use support::*;

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

#[test]
fn the_compose_example_comes_up_backs_up_and_restores() {
    if !available() {
        eprintln!("SKIP: docker-compose, dr:latest or postgres:17 missing");
        return;
    }
    let ws = Workspace::new();
    let dir = ws.path().join("compose");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/compose"),
        &dir,
    );
    let (identity, recipient) = ws.keygen();
    std::fs::copy(&identity, dir.join("identity.txt")).expect("identity");
    let chown = Command::new("chown")
        .args([
            "65532",
            dir.join("identity.txt").to_str().unwrap_or_default(),
        ])
        .status();
    if !chown.is_ok_and(|s| s.success()) {
        eprintln!("SKIP: cannot chown the identity to 65532 (not root)");
        return;
    }
    std::fs::copy(ws.signing_key(), dir.join("signing.key")).expect("signing key");
    let _ = Command::new("chown")
        .args([
            "65532",
            dir.join("signing.key").to_str().unwrap_or_default(),
        ])
        .status();
    let toml = std::fs::read_to_string(dir.join("dr.toml")).expect("dr.toml");
    std::fs::write(
        dir.join("dr.toml"),
        toml.replace("AGE_RECIPIENT", &recipient),
    )
    .expect("w");
    std::fs::write(
        dir.join("dr.env"),
        "POSTGRES_PASSWORD=compose-secret\nPGPASSWORD=compose-secret\n",
    )
    .expect("env");
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
}
