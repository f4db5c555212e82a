//! End-to-end: `dr verify` in both sandboxes, failures named, sandboxes always removed.

use std::path::PathBuf;
use std::process::Command;

use crate::support::*;

struct Env {
    ws: Workspace,
    _pg: Postgres,
    cfg: PathBuf,
    repo: PathBuf,
    identity: PathBuf,
    recipient: String,
}

fn env() -> Env {
    let ws = Workspace::new();
    let pg = Postgres::start();
    pg.create_db("app");
    pg.load_hard_cases("app");
    pg.psql(
        "app",
        "create role reporter; create table public.reports (id int); insert into reports values (1); \
         alter table public.reports owner to reporter;",
    );
    let (identity, recipient) = ws.keygen();
    let repo = ws.path().join("repo");
    let cfg = ws.write(
        "dr.toml",
        &dir_config_text(
            &repo,
            &recipient,
            Some(&identity),
            &pg.url("app"),
            "[[verify.assert]]\nname = \"big has rows\"\nsql = \"select count(*) > 0 from big\"\n",
        ),
    );
    assert_success(&ws.dr(&cfg, &["backup"]));
    Env {
        ws,
        _pg: pg,
        cfg,
        repo,
        identity,
        recipient,
    }
}

/// Names of the sandbox containers matching `filter` (a `docker ps --filter`), stopped ones
/// too. Filter narrowly: other tests (and other test runs) start sandboxes on the same engine.
fn docker_containers(filter: &str) -> String {
    let out = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            "label=dr.sandbox=1",
            "--filter",
            filter,
            "--format",
            "{{.Names}}",
        ])
        .output()
        .expect("docker ps");
    stdout(&out)
}

/// The container id dr logged for its docker sandbox ("… (container 1a2b3c4d5e6f)").
fn sandbox_container_id(stderr: &str) -> String {
    let at = stderr
        .find("(container ")
        .unwrap_or_else(|| panic!("no sandbox container in the log:\n{stderr}"));
    stderr[at + "(container ".len()..]
        .split(')')
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn verify_passes_in_a_local_sandbox_and_is_recorded() {
    let e = env();
    let out = e.ws.dr(&e.cfg, &["verify", "--sandbox", "local", "--json"]);
    assert_success(&out);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(v["record"]["result"], "passed");
    assert!(v["checks"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["check"] == "assert big has rows")));
    let out = e.ws.dr(&e.cfg, &["list", "--json"]);
    let l: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(l[0]["verification"]["result"], "passed");
    // The plain record names no table.
    for p in files_under(&e.repo) {
        if p.to_string_lossy().contains("/verify/") && p.extension().is_some_and(|x| x == "json") {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            assert!(!text.contains("reports") && !text.contains("big"), "{text}");
        }
    }
}

/// The measured RTO: the restore time of the verification, in `dr list`, `dr status` and the
/// estimate of `dr restore --dry-run`.
#[test]
fn the_restore_time_measured_by_verify_is_listed_and_estimated() {
    let e = env();
    let out = e.ws.dr(
        &e.cfg,
        &["restore", "--to", &e._pg.url("estimated"), "--dry-run"],
    );
    assert_success(&out);
    assert!(
        stdout(&out).contains("no verification yet: run `dr verify"),
        "{}",
        stdout(&out)
    );
    assert_success(&e.ws.dr(&e.cfg, &["verify", "--sandbox", "local"]));

    let out = e.ws.dr(&e.cfg, &["list", "--json"]);
    let l: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    let id = l[0]["id"].as_str().expect("id").to_string();
    let measured = l[0]["measured_restore_seconds"].as_f64().expect("measured");
    assert!(measured > 0.0, "{l}");
    let out = e.ws.dr(&e.cfg, &["list"]);
    assert!(stdout(&out).contains("RESTORE"), "{}", stdout(&out));

    let out = e.ws.dr(&e.cfg, &["status", "--json"]);
    let s: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(s[0]["measured_restore"]["backup_id"], id.as_str());
    assert_eq!(s[0]["measured_restore"]["seconds"].as_f64(), Some(measured));

    let out = e.ws.dr(
        &e.cfg,
        &["restore", "--to", &e._pg.url("estimated"), "--dry-run"],
    );
    assert_success(&out);
    let plan = stdout(&out);
    assert!(
        plan.contains("estimated") && plan.contains("an estimate") && plan.contains(&id),
        "{plan}"
    );
    let out = e.ws.dr(
        &e.cfg,
        &[
            "restore",
            "--to",
            &e._pg.url("estimated"),
            "--dry-run",
            "--json",
        ],
    );
    let r: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    let est = &r["plan"]["estimated_restore"];
    assert_eq!(est["measured_backup_id"], id.as_str());
    assert_eq!(est["scaled"], false);
    assert_eq!(est["seconds"].as_f64(), Some(measured));

    // Issue 17 item 12: one small table reads a fraction of the backup: so does its estimate.
    let out = e.ws.dr(
        &e.cfg,
        &[
            "restore",
            "--to",
            &e._pg.url("estimated"),
            "--table",
            "public.empty_table",
            "--dry-run",
            "--json",
        ],
    );
    assert_success(&out);
    let r: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    let est = &r["plan"]["estimated_restore"];
    assert_eq!(est["scaled"], true, "{r}");
    let one = est["seconds"].as_f64().expect("seconds");
    assert!(
        one < measured,
        "one table {one} s, whole backup {measured} s"
    );
}

#[test]
fn verify_passes_in_a_docker_sandbox_and_removes_it() {
    let _heavy = one_heavy_test_at_a_time();
    let e = env();
    let out = e.ws.dr(
        &e.cfg,
        &[
            "verify",
            "--sandbox",
            "docker",
            "--image",
            "dr-test/postgres:{major}",
        ],
    );
    assert_success(&out);
    let id = sandbox_container_id(&stderr(&out));
    let left = docker_containers(&format!("id={id}"));
    assert!(left.is_empty(), "container left: {left}");
}

#[test]
fn verify_fails_naming_the_table_when_recorded_counts_are_wrong() {
    let e = env();
    // Test seam: rewrite the encrypted details with a wrong count, with the age and zstd CLIs,
    // and fix the manifest's digest (and its signature) as a buggy backup host would (one
    // without the signing key is refused before verifying: tests/e2e/signing.rs).
    let manifest_path = files_under(&e.repo)
        .into_iter()
        .find(|p| p.ends_with("manifest.json"))
        .expect("manifest");
    let details = manifest_path.with_file_name("details.json.zst.age");
    let plain = Command::new("bash")
        .args([
            "-o",
            "pipefail",
            "-c",
            &format!(
                "age -d -i {} {} | zstd -d",
                e.identity.display(),
                details.display()
            ),
        ])
        .output()
        .expect("decrypt");
    assert_success(&plain);
    let mut d: serde_json::Value = serde_json::from_slice(&plain.stdout).expect("json");
    for t in d["tables"].as_array_mut().expect("tables") {
        if t["name"] == "big" {
            t["rows"] = serde_json::json!(9999);
        }
    }
    let tmp = e.ws.write("details.json", &d.to_string());
    let out = Command::new("bash")
        .args([
            "-o",
            "pipefail",
            "-c",
            &format!(
                "zstd -q -c {} | age -r {} > {}",
                tmp.display(),
                e.recipient,
                details.display()
            ),
        ])
        .output()
        .expect("encrypt");
    assert_success(&out);
    let bytes = std::fs::read(&details).expect("read");
    let sha = stdout(
        &Command::new("sha256sum")
            .arg(&details)
            .output()
            .expect("sha"),
    )
    .split_whitespace()
    .next()
    .unwrap_or_default()
    .to_string();
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).expect("m")).expect("json");
    for o in m["objects"].as_array_mut().expect("objects") {
        if o["role"] == "details" {
            o["sha256"] = serde_json::json!(sha);
            o["bytes"] = serde_json::json!(bytes.len());
        }
    }
    std::fs::write(&manifest_path, m.to_string()).expect("write manifest");
    e.ws.sign(&manifest_path);

    let out = e.ws.dr(&e.cfg, &["verify", "--sandbox", "local"]);
    assert_exit_code(&out, 5);
    let err = stderr(&out);
    assert!(
        err.contains("public.big") && err.contains("9999") && err.contains("10000"),
        "{err}"
    );
    let out = e.ws.dr(&e.cfg, &["list", "--json"]);
    let l: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(l[0]["verification"]["result"], "failed");
}

#[test]
fn a_missing_image_cannot_run_and_leaves_nothing() {
    let e = env();
    let out = e.ws.dr(
        &e.cfg,
        &[
            "verify",
            "--sandbox",
            "docker",
            "--image",
            "dr-test/nope:{major}",
        ],
    );
    assert_exit_code(&out, 3);
    assert!(stderr(&out).contains("dr-test/nope:15"), "{}", stderr(&out));
    let left = docker_containers("label=dr.sandbox.image=dr-test/nope:15");
    assert!(left.is_empty(), "container left: {left}");
}

#[test]
fn a_corrupted_dump_fails_verification() {
    let e = env();
    let dump = files_under(&e.repo)
        .into_iter()
        .find(|p| p.ends_with("data-1.zst.age"))
        .expect("dump");
    let mut bytes = std::fs::read(&dump).expect("read");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&dump, bytes).expect("write");
    let out = e.ws.dr(&e.cfg, &["verify", "--sandbox", "local"]);
    // Damaged stored data is exit 4 (docs/EXIT_CODES.md), not "restored but wrong" (5).
    assert_exit_code(&out, 4);
    assert!(stderr(&out).contains("data-1.zst.age"), "{}", stderr(&out));
}

#[test]
fn a_sandbox_without_an_extension_the_schema_uses_fails_naming_table_and_cause() {
    let Some(pg16) = pg_bin_dir(16) else {
        eprintln!("skipped: no PostgreSQL 16 binaries (ci/setup.sh installs them)");
        return;
    };
    if pg16
        .join("../share/postgresql/extension/hstore.control")
        .exists()
    {
        eprintln!("skipped: the PG 16 build has hstore");
        return;
    }
    let e = env();
    e._pg.psql("app", "create extension hstore; create table public.tags (id int, h hstore); insert into tags values (1, 'a=>1'), (2, 'b=>2');");
    assert_success(&e.ws.dr(&e.cfg, &["backup"]));
    // The classic mistake: a sandbox without the extension (postgres:17 vs pgvector/pgvector:pg17).
    let text = std::fs::read_to_string(&e.cfg).expect("cfg")
        + &format!("\n[verify]\npg_bin_dir = \"{}\"\n", pg16.display());
    // [verify] must precede [[verify.assert]] in TOML: rebuild the file in that order.
    let (head, asserts) = text
        .split_once("[[verify.assert]]")
        .expect("assert section");
    let (assert_body, verify_section) = asserts.split_once("\n[verify]").expect("verify section");
    let cfg_text = format!("{head}[verify]{verify_section}\n[[verify.assert]]{assert_body}");
    std::fs::write(&e.cfg, cfg_text).expect("write");
    let out = e.ws.dr(&e.cfg, &["verify", "--sandbox", "local"]);
    assert_exit_code(&out, 5);
    let err = stderr(&out);
    assert!(err.contains("public.tags"), "{err}");
    assert!(err.contains("hstore"), "{err}");
}

/// Regression: `dr verify --sandbox local` ignored the target's `pg_bin_dir` (where backup
/// found its tools) and, finding no `initdb` of the backup's major, hinted the client package,
/// which has no `initdb`. It now uses the target's directory when that holds the server
/// binaries, and names the server package when nothing fits.
#[test]
fn a_local_sandbox_uses_the_targets_pg_bin_dir_and_hints_the_server_package() {
    let Some(bin17) = pg_bin_dir(17) else {
        eprintln!("SKIP: no PostgreSQL 17 binaries (ci/setup.sh)");
        return;
    };
    let ws = Workspace::new();
    let pg = Postgres::start_with_bin_dir(&bin17);
    pg.create_db("app");
    pg.psql(
        "app",
        "create table t (id int primary key); insert into t select generate_series(1, 100);",
    );
    let (identity, recipient) = ws.keygen();
    let repo = ws.path().join("repo");
    let config = |bin: &std::path::Path| {
        dir_config_text(
            &repo,
            &recipient,
            Some(&identity),
            &pg.url("app"),
            &format!("pg_bin_dir = \"{}\"\n", bin.display()),
        )
    };
    let cfg = ws.write("dr.toml", &config(&bin17));
    assert_success(&ws.dr(&cfg, &["backup"]));
    let out = ws.dr(&cfg, &["verify", "--sandbox", "local"]);
    assert_success(&out);
    assert!(
        stderr(&out).contains(&bin17.display().to_string()) || stdout(&out).contains("17"),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );

    // A client-only directory (pg_dump, pg_restore, psql; no initdb): the hint names the
    // server package, not the client one that is already there.
    let client = ws.path().join("client17");
    std::fs::create_dir_all(&client).expect("mkdir");
    for tool in ["pg_dump", "pg_dumpall", "pg_restore", "psql"] {
        std::os::unix::fs::symlink(bin17.join(tool), client.join(tool)).expect("symlink");
    }
    let cfg = ws.write("dr-client.toml", &config(&client));
    let out = ws.dr(&cfg, &["verify", "--sandbox", "local"]);
    assert_exit_code(&out, 3);
    let err = stderr(&out);
    if !std::path::Path::new("/usr/lib/postgresql/17/bin/initdb").exists() {
        assert!(err.contains("postgresql-17"), "{err}");
        assert!(!err.contains("postgresql-client-17"), "{err}");
    }
}
