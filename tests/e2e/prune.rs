//! End-to-end: `dr prune` keeps exactly what retention says, deletes manifests first, and
//! removes leftovers of failed backups.

use std::process::Command;

use crate::support::*;

#[test]
fn prune_keeps_the_tiers_and_removes_old_backups_and_leftovers() {
    let ws = Workspace::new();
    let pg = Postgres::start();
    pg.create_db("app");
    pg.psql("app", "create table t (id int); insert into t values (1);");
    let (identity, recipient) = ws.keygen();
    let repo = ws.path().join("repo");
    let cfg = ws.write(
        "dr.toml",
        &format!(
            "[repository]\nurl = \"file://{}\"\n[encryption]\nrecipients = [\"{recipient}\"]\nidentity_file = \"{}\"\n[[targets]]\nname = \"app\"\nurl = \"{}\"\n",
            repo.display(),
            identity.display(),
            pg.url("app")
        ),
    );
    // No retention configured: refuse rather than delete everything but one.
    assert_exit_code(&ws.dr(&cfg, &["prune"]), 2);
    let mut ids = Vec::new();
    for _ in 0..3 {
        let out = ws.dr(&cfg, &["backup"]);
        assert_success(&out);
        ids.push(
            stdout(&out)
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_string(),
        );
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    // A leftover of a failed backup, three days old.
    let orphan = repo.join("app/20200101T000000Z/dump.zst.age");
    std::fs::create_dir_all(orphan.parent().expect("parent")).expect("mkdir");
    std::fs::write(&orphan, b"partial").expect("write");
    assert!(Command::new("touch")
        .args(["-d", "3 days ago"])
        .arg(&orphan)
        .status()
        .expect("touch")
        .success());
    let text = std::fs::read_to_string(&cfg).expect("cfg") + "[retention]\ndaily = 1\n";
    std::fs::write(&cfg, text).expect("write");

    let out = ws.dr(&cfg, &["list", "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(listed[0]["retention"], "newest,daily");
    assert_eq!(listed[2]["retention"], "prune");
    // One spelling across commands: list's tiers are prune's `tiers`, times end in `Z`.
    let out = ws.dr(&cfg, &["prune", "--dry-run", "--json"]);
    let planned: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    let kept = planned[0]["decisions"]
        .as_array()
        .expect("decisions")
        .iter()
        .find(|d| d["id"] == listed[0]["id"])
        .map(|d| d["tiers"].clone())
        .expect("decision for the newest");
    let joined = kept
        .as_array()
        .expect("tiers")
        .iter()
        .filter_map(|t| t.as_str())
        .collect::<Vec<_>>()
        .join(",");
    assert_eq!(listed[0]["retention"], joined.as_str());
    for row in listed.as_array().expect("rows") {
        for field in ["started_at", "finished_at"] {
            assert!(
                row[field].as_str().is_some_and(|t| t.ends_with('Z')),
                "{field}: {row}"
            );
        }
    }
    let out = ws.dr(&cfg, &["status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert!(status.is_array(), "{status}");
    let out = ws.dr(&cfg, &["prune", "--dry-run"]);
    assert_success(&out);
    let plan = stdout(&out);
    assert!(
        plan.contains(&format!("{}\tkeep\tnewest,daily", ids[2])),
        "{plan}"
    );
    assert!(
        plan.contains(&format!("{}\twould delete", ids[0])),
        "{plan}"
    );
    assert!(orphan.exists(), "dry run deleted something");

    assert_success(&ws.dr(&cfg, &["prune"]));
    let out = ws.dr(&cfg, &["list", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    let left: Vec<&str> = v
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|e| e["id"].as_str())
        .collect();
    assert_eq!(left, vec![ids[2].as_str()]);
    assert!(!orphan.exists(), "leftover not removed");
    assert!(
        !repo.join(format!("app/{}", ids[0])).exists(),
        "objects of a pruned backup remain"
    );
}

#[test]
fn status_exit_code_tracks_staleness() {
    let ws = Workspace::new();
    let pg = Postgres::start();
    pg.create_db("app");
    let (identity, recipient) = ws.keygen();
    let repo = ws.path().join("repo");
    let base = format!(
        "[repository]\nurl = \"file://{}\"\n[encryption]\nrecipients = [\"{recipient}\"]\nidentity_file = \"{}\"\n[[targets]]\nname = \"app\"\nurl = \"{}\"\n",
        repo.display(),
        identity.display(),
        pg.url("app")
    );
    let cfg = ws.write("dr.toml", &base);
    let out = ws.dr(&cfg, &["status"]);
    assert_exit_code(&out, 8);
    assert!(
        stdout(&out).contains("no complete backup"),
        "{}",
        stdout(&out)
    );
    assert_success(&ws.dr(&cfg, &["backup"]));
    assert_success(&ws.dr(&cfg, &["status"]));
    std::fs::write(&cfg, format!("{base}[status]\nmax_backup_age_hours = 0\n")).expect("write");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = ws.dr(&cfg, &["status", "--json"]);
    assert_exit_code(&out, 8);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(v[0]["ok"], false);
}

#[test]
fn prune_against_s3_keeps_exactly_the_tiers_and_aborts_stale_uploads() {
    let ws = Workspace::new();
    let pg = Postgres::start();
    pg.create_db("app");
    pg.psql("app", "create table t (id int); insert into t values (1);");
    let weed = SeaweedFs::start();
    weed.create_bucket("prune");
    let (identity, recipient) = ws.keygen();
    let base = format!(
        "[repository]\nurl = \"s3://prune/dr\"\nendpoint = \"{}\"\npath_style = true\n[encryption]\nrecipients = [\"{recipient}\"]\nidentity_file = \"{}\"\n[[targets]]\nname = \"app\"\nurl = \"{}\"\n",
        weed.endpoint(),
        identity.display(),
        pg.url("app")
    );
    let cfg = ws.write("dr.toml", &base);
    let mut ids = Vec::new();
    for _ in 0..3 {
        let out = ws.dr(&cfg, &["backup"]);
        assert_success(&out);
        ids.push(
            stdout(&out)
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_string(),
        );
    }
    // Verify the oldest: "never delete the newest verified backup" must keep it.
    assert_success(&ws.dr(&cfg, &["verify", &ids[0], "--sandbox", "local"]));
    // A stale multipart upload of a crashed run.
    if Command::new("aws").arg("--version").output().is_ok() {
        let out = Command::new("aws")
            .args([
                "s3api",
                "create-multipart-upload",
                "--bucket",
                "prune",
                "--key",
                "dr/app/20200101T000000Z/dump.zst.age",
                "--endpoint-url",
                &weed.endpoint(),
            ])
            .env("AWS_ACCESS_KEY_ID", "any")
            .env("AWS_SECRET_ACCESS_KEY", "any")
            .env("AWS_REGION", "us-east-1")
            .output()
            .expect("aws");
        assert_success(&out);
    }
    std::fs::write(
        &cfg,
        format!("{base}[retention]\ndaily = 1\nleftover_grace_hours = 0\n"),
    )
    .expect("write");
    let out = ws.dr(&cfg, &["prune", "--json"]);
    assert_success(&out);
    let out = ws.dr(&cfg, &["list", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    let left: Vec<&str> = v
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|e| e["id"].as_str())
        .collect();
    assert_eq!(
        left,
        vec![ids[2].as_str(), ids[0].as_str()],
        "newest and newest verified"
    );
    let keys = weed.object_keys("prune");
    assert!(keys.iter().all(|k| !k.contains(&ids[1])), "{keys:?}");
    let uploads = Command::new("curl")
        .args(["-s", &format!("{}/prune?uploads", weed.endpoint())])
        .output()
        .expect("curl");
    assert!(
        !stdout(&uploads).contains("<UploadId>"),
        "{}",
        stdout(&uploads)
    );
}
