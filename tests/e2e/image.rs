//! The `dr:latest` image (ci/image.sh), as a user runs it: it backs up a `postgres:17`
//! container (ci/pg-image.sh 17) holding the hard cases into a directory repository mounted
//! from the host, and restores it into the same server under a new name as an exact copy,
//! running as its non-root user (uid 65532), over a user-defined bridge network created and
//! removed here. No host port is published. Skipped when docker or the images are missing
//! (ci/test.sh builds both).

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::support::*;

fn docker(args: &[&str]) -> Output {
    let mut c = Command::new("docker");
    c.args(args);
    run_with_timeout(&mut c, None, Duration::from_secs(600))
}

fn docker_ok(args: &[&str]) -> String {
    let o = docker(args);
    assert!(o.status.success(), "docker {args:?} failed\n{}", stderr(&o));
    stdout(&o)
}

fn available() -> bool {
    let ok = |args: &[&str]| {
        Command::new("docker")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    ok(&["version"])
        && ok(&["image", "inspect", "dr:latest"])
        && ok(&["image", "inspect", "postgres:17"])
}

/// Containers and the network, removed however the test ends.
struct Cleanup {
    containers: Vec<String>,
    network: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = docker(&["rm", "-f", "-v", c]);
        }
        let _ = docker(&["network", "rm", &self.network]);
    }
}

/// Per-table digests, then large objects and enum/domain types.
fn digests_sql() -> String {
    let extra = r#"SELECT 'large objects', count(*) || ':' || md5(coalesce(string_agg(encode(lo_get(oid), 'hex'), ',' ORDER BY oid), '')) FROM pg_largeobject_metadata;
SELECT 'types', string_agg(typname, ',' ORDER BY typname) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND t.typtype IN ('e', 'd');
"#;
    format!("{TABLE_DIGESTS_SQL}{extra}")
}

fn psql(pg: &str, db: &str, sql: &str) -> String {
    let mut c = Command::new("docker");
    c.args([
        "exec",
        "-i",
        pg,
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
        "-f",
        "-",
    ]);
    let o = run_with_timeout(
        &mut c,
        Some(sql.as_bytes().to_vec()),
        Duration::from_secs(300),
    );
    assert!(o.status.success(), "psql in {db}: {}", stderr(&o));
    stdout(&o)
}

#[test]
fn the_image_backs_up_and_restores_a_postgres_17_container_as_its_non_root_user() {
    if !available() {
        eprintln!(
            "SKIP: docker, dr:latest or postgres:17 missing (ci/image.sh, ci/pg-image.sh 17)"
        );
        return;
    }
    let _heavy = one_heavy_test_at_a_time();
    let ws = Workspace::new();
    let tag = format!("dr-image-test-{}", std::process::id());
    let pg = format!("{tag}-pg");
    let mut cleanup = Cleanup {
        containers: Vec::new(),
        network: tag.clone(),
    };
    docker_ok(&["network", "create", "--driver", "bridge", &tag]);
    cleanup.containers.push(pg.clone());
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &pg,
        "--network",
        &tag,
        "--network-alias",
        "db",
        "-e",
        "POSTGRES_PASSWORD=s3cret",
        "-e",
        "POSTGRES_DB=app",
        "postgres:17",
    ]);
    let ready = (0..240).any(|_| {
        let o = docker(&[
            "exec",
            &pg,
            "pg_isready",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "app",
        ]);
        o.status.success() || {
            std::thread::sleep(Duration::from_millis(500));
            false
        }
    });
    assert!(
        ready,
        "postgres:17 did not start: {}",
        stderr(&docker(&["logs", &pg]))
    );
    psql(&pg, "app", HARD_CASES_SQL);

    // The repository and config on the host, mounted into the container. The repository
    // belongs to the image's user; the identity is readable by it.
    let repo = ws.path().join("repo");
    std::fs::create_dir(&repo).expect("repo dir");
    let status = Command::new("chown")
        .args(["65532:65532", repo.to_str().unwrap_or_default()])
        .status();
    if !status.is_ok_and(|s| s.success()) {
        eprintln!("SKIP: cannot chown the repository to 65532 (not root)");
        return;
    }
    let (identity, recipient) = ws.keygen();
    let etc = ws.path().join("etc");
    std::fs::create_dir(&etc).expect("etc dir");
    std::fs::copy(&identity, etc.join("identity.txt")).expect("identity");
    std::fs::copy(ws.signing_key(), etc.join("signing.key")).expect("signing key");
    for f in ["identity.txt", "signing.key"] {
        let _ = Command::new("chown")
            .args(["65532:65532", etc.join(f).to_str().unwrap_or_default()])
            .status();
    }
    std::fs::write(
        etc.join("dr.toml"),
        format!(
            "[repository]\nurl = \"file:///repo\"\n[encryption]\nrecipients = [\"{recipient}\"]\nidentity_file = \"/etc/dr/identity.txt\"\n[signing]\nkey_file = \"/etc/dr/signing.key\"\n[[targets]]\nname = \"app\"\nurl = \"postgres://postgres@db:5432/app\"\n"
        ),
    )
    .expect("config");
    let repo_mount = format!("{}:/repo", repo.display());
    let etc_mount = format!("{}:/etc/dr:ro", etc.display());
    let dr = |args: &[&str]| {
        let mut a = vec![
            "run",
            "--rm",
            "--network",
            &tag,
            "-v",
            &repo_mount,
            "-v",
            &etc_mount,
            "-e",
            "PGPASSWORD=s3cret",
            "dr:latest",
        ];
        a.extend_from_slice(args);
        docker(&a)
    };

    let out = dr(&["backup"]);
    assert!(
        out.status.success(),
        "dr backup in the image\n{}",
        stderr(&out)
    );
    assert!(stdout(&out).starts_with("app\t"), "{}", stdout(&out));
    // Written by the image's user, never root.
    for f in files_under(&repo) {
        let meta = std::fs::metadata(&f).expect("meta");
        assert_eq!(
            std::os::unix::fs::MetadataExt::uid(&meta),
            65532,
            "{}",
            f.display()
        );
    }
    assert!(stderr(&out).contains("pg_dump"), "{}", stderr(&out));

    let out = dr(&[
        "restore",
        "latest",
        "--to",
        "postgres://postgres@db:5432/copy",
        "--yes",
    ]);
    assert!(
        out.status.success(),
        "dr restore in the image\n{}",
        stderr(&out)
    );
    let want = psql(&pg, "app", &digests_sql());
    assert!(
        want.contains("large objects") && want.lines().count() > 5,
        "{want}"
    );
    assert_eq!(psql(&pg, "copy", &digests_sql()), want, "the copy differs");
    let id = docker_ok(&["run", "--rm", "--entrypoint", "id", "dr:latest", "-u"]);
    assert_eq!(id.trim(), "65532");
}
