//! Version matrix: backups of PostgreSQL 15, 16, 17 and 18 servers with their own pg_dump,
//! verified in a local sandbox of the same major; the usual upgrade path (a 15 backup
//! restored into a 17 server); and a 17 backup verified in a `postgres:17` Docker sandbox
//! whose port is published on 127.0.0.1 only.
//!
//! Only the command line is used (`dr backup`, `dr verify`, `dr restore`, `dr show`): nothing
//! here depends on the repository's object names or the manifest's layout.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// A workspace with a config that backs up `pg`'s database `app` into a directory repository
/// with the tools of `bin_dir`.
fn config(ws: &Workspace, pg: &Postgres, bin_dir: &Path) -> PathBuf {
    let (identity, recipient) = ws.keygen();
    ws.write(
        "dr.toml",
        &format!(
            "[repository]\nurl = \"file://{}/repo\"\n[encryption]\nrecipients = [\"{recipient}\"]\nidentity_file = \"{}\"\n[backup]\npg_bin_dir = \"{}\"\n[[targets]]\nname = \"app\"\nurl = \"{}\"\n",
            ws.path().display(),
            identity.display(),
            bin_dir.display(),
            pg.url("app")
        ),
    )
}

/// A cluster of `bin_dir`'s major with the hard cases in `app`.
fn server_with_hard_cases(bin_dir: &Path, major: u32) -> Postgres {
    let pg = Postgres::start_with_bin_dir(bin_dir);
    assert_eq!(pg.major(), major);
    pg.create_db("app");
    pg.load_hard_cases("app");
    pg
}

fn backup_and_verify(bin_dir: &Path, major: u32) {
    let _heavy = one_heavy_test_at_a_time();
    let ws = Workspace::new();
    let pg = server_with_hard_cases(bin_dir, major);
    let cfg = config(&ws, &pg, bin_dir);
    assert_success(&ws.dr(&cfg, &["backup"]));
    let out = ws.dr(&cfg, &["verify", "--sandbox", "local", "--json"]);
    assert_success(&out);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(v["record"]["result"], "passed");
    assert!(
        v["sandbox"]
            .as_str()
            .unwrap_or("")
            .contains(&format!("PostgreSQL {major}")),
        "{v}"
    );
    let out = ws.dr(&cfg, &["show", "latest", "--json"]);
    let m: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(m["server_major"], major);
    assert!(
        m["pg_dump_version"]
            .as_str()
            .unwrap_or("")
            .contains(&format!(" {major}.")),
        "{m}"
    );
}

#[test]
fn postgres_15() {
    backup_and_verify(&default_pg_bin_dir(), 15);
}

#[test]
fn postgres_16() {
    match pg_bin_dir(16) {
        Some(d) => backup_and_verify(&d, 16),
        None => eprintln!("skipped: no PostgreSQL 16 binaries (ci/setup.sh installs them)"),
    }
}

#[test]
fn postgres_18() {
    match pg_bin_dir(18) {
        Some(d) => backup_and_verify(&d, 18),
        None => eprintln!("skipped: no PostgreSQL 18 binaries (ci/setup.sh installs them)"),
    }
}

#[test]
fn postgres_17() {
    match pg_bin_dir(17) {
        Some(d) => backup_and_verify(&d, 17),
        None => eprintln!("skipped: no PostgreSQL 17 binaries (ci/setup.sh installs them)"),
    }
}

/// The usual upgrade: a PostgreSQL 15 backup restored into a 17 server (with 17's
/// pg_restore), an exact copy.
#[test]
fn a_15_backup_restores_into_a_17_server() {
    let Some(pg17_bin) = pg_bin_dir(17) else {
        eprintln!("skipped: no PostgreSQL 17 binaries (ci/setup.sh installs them)");
        return;
    };
    let _heavy = one_heavy_test_at_a_time();
    let ws = Workspace::new();
    let pg15 = server_with_hard_cases(&default_pg_bin_dir(), 15);
    let cfg = config(&ws, &pg15, &default_pg_bin_dir());
    assert_success(&ws.dr(&cfg, &["backup"]));

    let pg17 = Postgres::start_with_bin_dir(&pg17_bin);
    assert_eq!(pg17.major(), 17);
    // The restore host has the new server's tools: DR_PG_BIN_DIR overrides backup.pg_bin_dir.
    let out = ws.dr_env(
        &cfg,
        &["restore", "latest", "--to", &pg17.url("upgraded"), "--yes"],
        &[("DR_PG_BIN_DIR", &pg17_bin.display().to_string())],
    );
    assert_success(&out);
    assert!(
        pg17.psql("upgraded", "select version()")
            .contains("PostgreSQL 17"),
        "not restored into the 17 server"
    );
    let counts = pg15.row_counts("app");
    assert_eq!(counts.get("public.big"), Some(&10000), "{counts:?}");
    assert_eq!(counts, pg17.row_counts("upgraded"));
    assert_eq!(pg15.table_digests("app"), pg17.table_digests("upgraded"));
    assert_eq!(
        pg17.psql("upgraded", "select last_value from public.order_seq"),
        "4242"
    );
    assert_eq!(
        pg17.psql(
            "upgraded",
            "select convert_from(lo_get(oid), 'UTF8') from pg_largeobject_metadata"
        ),
        "hello"
    );
}

/// `docker inspect` of one container: every published binding of it as (host ip, host port).
fn published_bindings(id: &str) -> Vec<(String, String)> {
    let out = Command::new("docker")
        .args(["inspect", "-f", "{{json .NetworkSettings.Ports}}", id])
        .output()
        .expect("docker inspect");
    if !out.status.success() {
        return Vec::new(); // gone already
    }
    let ports: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    let mut bindings = Vec::new();
    if let Some(map) = ports.as_object() {
        for list in map.values() {
            for b in list.as_array().into_iter().flatten() {
                bindings.push((
                    b["HostIp"].as_str().unwrap_or("").to_string(),
                    b["HostPort"].as_str().unwrap_or("").to_string(),
                ));
            }
        }
    }
    bindings
}

/// A 17 backup verified in a `postgres:17` container; while the sandbox runs, its port is
/// published on 127.0.0.1 only (never 0.0.0.0 or ::), and it is removed afterwards.
#[test]
fn a_17_backup_verifies_in_a_postgres_17_docker_sandbox_bound_to_loopback() {
    let Some(pg17_bin) = pg_bin_dir(17) else {
        eprintln!("skipped: no PostgreSQL 17 binaries (ci/setup.sh installs them)");
        return;
    };
    let docker_ok = Command::new("docker")
        .args(["image", "inspect", "postgres:17"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !docker_ok {
        eprintln!(
            "skipped: no Docker engine or no postgres:17 image (ci/pg-image.sh 17 builds it)"
        );
        return;
    }
    let _heavy = one_heavy_test_at_a_time();
    let ws = Workspace::new();
    let pg = server_with_hard_cases(&pg17_bin, 17);
    let cfg = config(&ws, &pg, &pg17_bin);
    assert_success(&ws.dr(&cfg, &["backup"]));

    // Run dr in the background and look at its sandbox while it runs.
    let out_path = ws.path().join("verify.out");
    let err_path = ws.path().join("verify.err");
    let mut child = ws
        .dr_command(
            &cfg,
            &[
                "verify",
                "--sandbox",
                "docker",
                "--image",
                "postgres:17",
                "--json",
            ],
        )
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("create"))
        .stderr(std::fs::File::create(&err_path).expect("create"))
        .spawn()
        .expect("start dr verify");
    let pid_label = format!("label=dr.sandbox.pid={}", child.id());
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut container = None;
    let mut seen: Vec<(String, String)> = Vec::new();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("dr verify did not finish in 10 minutes");
        }
        let ps = Command::new("docker")
            .args(["ps", "-q", "--no-trunc", "--filter", "label=dr.sandbox=1"])
            .args(["--filter", &pid_label])
            .output()
            .expect("docker ps");
        if let Some(id) = stdout(&ps).lines().next() {
            let bindings = published_bindings(id.trim());
            if !bindings.is_empty() {
                container = Some(id.trim().to_string());
                seen = bindings;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    let out = std::fs::read_to_string(&out_path).unwrap_or_default();
    assert!(status.success(), "dr verify failed: {status}\n{out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["record"]["result"], "passed", "{v}");
    assert!(
        v["sandbox"].as_str().unwrap_or("").contains("postgres:17"),
        "{v}"
    );

    let id = container.unwrap_or_else(|| panic!("never saw the sandbox container running\n{err}"));
    assert!(!seen.is_empty());
    for (ip, port) in &seen {
        assert_eq!(ip, "127.0.0.1", "published beyond loopback: {seen:?}");
        assert!(port.parse::<u16>().is_ok_and(|p| p > 0), "{seen:?}");
    }
    let left = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("id={id}")])
        .output()
        .expect("docker ps");
    assert!(stdout(&left).trim().is_empty(), "sandbox left behind: {id}");
}
