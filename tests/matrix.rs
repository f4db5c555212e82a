//! Version matrix: backups of PostgreSQL 15, 16 and 18 servers with their own pg_dump,
//! verified in a local sandbox of the same major.

mod support;

use std::path::Path;

use support::*;

fn backup_and_verify(bin_dir: &Path, major: u32) {
    let ws = Workspace::new();
    let pg = Postgres::start_with_bin_dir(bin_dir);
    assert_eq!(pg.major(), major);
    pg.create_db("app");
    pg.load_hard_cases("app");
    let (identity, recipient) = ws.keygen();
    let cfg = ws.write(
        "dr.toml",
        &format!(
            "[repository]\nurl = \"file://{}/repo\"\n[encryption]\nrecipients = [\"{recipient}\"]\nidentity_file = \"{}\"\n[backup]\npg_bin_dir = \"{}\"\n[[targets]]\nname = \"app\"\nurl = \"{}\"\n",
            ws.path().display(),
            identity.display(),
            bin_dir.display(),
            pg.url("app")
        ),
    );
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
