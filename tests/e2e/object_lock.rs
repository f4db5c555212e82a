//! End-to-end: S3 Object Lock against SeaweedFS, which enforces it (a permanent delete of a
//! COMPLIANCE-locked version is refused with AccessDenied). Every object of a backup is
//! locked on its PUT; dr's own credentials cannot destroy a backup; prune keeps what is
//! locked, extends the lock of what it keeps; a bucket without Object Lock is refused.

use crate::support::*;

/// A locked bucket, a database with a little data, and a config using both.
#[allow(dead_code)] // pg: kept alive for the test's length
struct Env {
    ws: Workspace,
    pg: Postgres,
    weed: SeaweedFs,
    base: String,
    cfg: std::path::PathBuf,
}

const BUCKET: &str = "locked";
const DAYS: i64 = 14;

fn env_with(bucket_locked: bool, lock_config: &str) -> Env {
    let ws = Workspace::new();
    let pg = Postgres::start();
    pg.create_db("app");
    pg.psql(
        "app",
        "create table t (id int primary key, v text); insert into t select g, md5(g::text) from generate_series(1, 500) g;",
    );
    let weed = SeaweedFs::start();
    if bucket_locked {
        weed.create_locked_bucket(BUCKET);
    } else {
        weed.create_bucket(BUCKET);
    }
    let (identity, recipient) = ws.keygen();
    let base = format!(
        "[repository]\nurl = \"s3://{BUCKET}/dr\"\n{lock_config}[repository.s3]\nendpoint = \"{}\"\npath_style = true\n[encryption]\nrecipients = [\"{recipient}\"]\nidentity_file = \"{}\"\n[[targets]]\nname = \"app\"\nurl = \"{}\"\n",
        weed.endpoint(),
        identity.display(),
        pg.url("app")
    );
    let cfg = ws.write("dr.toml", &base);
    Env {
        ws,
        pg,
        weed,
        base,
        cfg,
    }
}

fn compliance() -> String {
    format!("[repository.object_lock]\nmode = \"compliance\"\ndays = {DAYS}\n")
}

fn backup(e: &Env) -> String {
    let out = e.ws.dr(&e.cfg, &["backup"]);
    assert_success(&out);
    stdout(&out)
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

fn ids(e: &Env, args: &[&str]) -> Vec<String> {
    let mut a = vec!["list", "--json"];
    a.extend_from_slice(args);
    let out = e.ws.dr(&e.cfg, &a);
    assert_success(&out);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("list json");
    v.as_array()
        .expect("array")
        .iter()
        .filter_map(|b| b["id"].as_str().map(str::to_string))
        .collect()
}

/// Seconds since the epoch of an RFC 3339 / ISO 8601 UTC time as the aws CLI prints it
/// (`2026-11-22T03:00:00+00:00`, `2026-11-22T03:00:00.000Z`).
fn epoch(s: &str) -> i64 {
    let out = std::process::Command::new("date")
        .args(["-u", "-d", s, "+%s"])
        .output()
        .expect("date");
    stdout(&out)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("not a time: {s}"))
}

fn id_epoch(id: &str) -> i64 {
    // 20261122T030000Z -> 2026-11-22T03:00:00Z
    let t = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &id[0..4],
        &id[4..6],
        &id[6..8],
        &id[9..11],
        &id[11..13],
        &id[13..15]
    );
    epoch(&t)
}

#[test]
fn every_version_of_a_backup_is_locked_and_cannot_be_deleted_with_drs_credentials() {
    let e = env_with(true, &compliance());
    let check = e.ws.dr(&e.cfg, &["check"]);
    assert_success(&check);
    let line = stdout(&check)
        .lines()
        .find(|l| l.contains("object lock"))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(
        line.contains("Object Lock enabled") && line.contains("versioning enabled"),
        "{}",
        stdout(&check)
    );
    let id = backup(&e);
    let prefix = format!("dr/app/{id}/");
    let versions = e.weed.object_versions(BUCKET, &prefix);
    let names: Vec<&str> = versions
        .iter()
        .map(|v| v.key.trim_start_matches(&prefix))
        .collect();
    for want in [
        "manifest.json",
        "pre-data.zst.age",
        "data-1.zst.age",
        "post-data.zst.age",
        "globals.sql.zst.age",
        "details.json.zst.age",
    ] {
        assert!(names.contains(&want), "{want} missing: {names:?}");
    }
    let start = id_epoch(&id);
    for v in &versions {
        assert!(!v.delete_marker, "{v:?}");
        let (mode, until) = e
            .weed
            .retention(BUCKET, &v.key, &v.version_id)
            .unwrap_or_else(|| panic!("{} has no retention", v.key));
        assert_eq!(mode, "COMPLIANCE", "{}", v.key);
        assert_eq!(epoch(&until), start + DAYS * 86_400, "{}: {until}", v.key);
    }
    // The run lock is not locked: it must stay deletable.
    for v in e.weed.object_versions(BUCKET, "dr/locks/") {
        assert!(
            v.delete_marker || e.weed.retention(BUCKET, &v.key, &v.version_id).is_none(),
            "{v:?}"
        );
    }
    // A verification record is locked too. (Whether the verification passes is not the
    // point here: a failed one is recorded just the same.)
    let _ = e.ws.dr(&e.cfg, &["verify", &id, "--sandbox", "local"]);
    let records: Vec<_> = e
        .weed
        .object_versions(BUCKET, &format!("{prefix}verify/"))
        .into_iter()
        .filter(|v| !v.delete_marker)
        .collect();
    assert!(!records.is_empty());
    for v in &records {
        let (mode, until) = e
            .weed
            .retention(BUCKET, &v.key, &v.version_id)
            .unwrap_or_else(|| panic!("{} has no retention", v.key));
        assert_eq!(mode, "COMPLIANCE");
        assert!(epoch(&until) >= start + DAYS * 86_400, "{until}");
    }
    // Whoever holds the backup host's credentials cannot destroy a version.
    for v in &versions {
        let out = e.weed.delete_version(BUCKET, &v.key, &v.version_id);
        assert!(!out.status.success(), "deleted {}: {}", v.key, stdout(&out));
        assert!(
            stderr(&out).contains("AccessDenied"),
            "{}: {}",
            v.key,
            stderr(&out)
        );
    }
    assert_eq!(ids(&e, &[]), vec![id]);
}

#[test]
fn object_lock_on_a_bucket_without_it_fails_check_and_backup() {
    let e = env_with(false, &compliance());
    let out = e.ws.dr(&e.cfg, &["check"]);
    assert_exit_code(&out, 3);
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(all.contains("lock") && all.contains("not enabled"), "{all}");
    assert!(all.contains("object-lock-enabled-for-bucket"), "{all}");
    assert!(all.contains("R2"), "{all}");
    let out = e.ws.dr(&e.cfg, &["backup"]);
    assert_exit_code(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains("[repository.object_lock] is configured")
            && err.contains("not enabled")
            && err.contains("hint:"),
        "{err}"
    );
    // Nothing committed, nothing left behind.
    let keys = e.weed.object_keys(BUCKET);
    assert!(
        keys.iter().all(|k| !k.ends_with("manifest.json")),
        "{keys:?}"
    );
    assert!(e.weed.open_uploads(BUCKET).is_empty());
    // Without object_lock the same bucket works, and check says it is not protected.
    std::fs::write(&e.cfg, e.base.replace(&compliance(), "")).expect("write");
    let out = e.ws.dr(&e.cfg, &["check"]);
    assert_success(&out);
    let line = stdout(&out)
        .lines()
        .find(|l| l.contains("object lock"))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(line.contains("Object Lock not enabled"), "{line}");
}

#[test]
fn a_directory_repository_refuses_object_lock_at_config_load() {
    let ws = Workspace::new();
    let (_, recipient) = ws.keygen();
    let repo = ws.path().join("repo");
    let text = dir_config_text(
        &repo,
        &recipient,
        None,
        "postgres://app@127.0.0.1:1/app",
        "",
    )
    .replace("[encryption]", &format!("{}[encryption]", compliance()));
    let cfg = ws.write("dr.toml", &text);
    for cmd in [&["check"][..], &["list"], &["backup"]] {
        let out = ws.dr(&cfg, cmd);
        assert_exit_code(&out, 2);
        let err = stderr(&out);
        assert!(
            err.contains("repository.object_lock")
                && err.contains("directory repository cannot lock objects")
                && err.contains("hint:"),
            "{cmd:?}: {err}"
        );
    }
}

fn prune_json(e: &Env) -> serde_json::Value {
    let out = e.ws.dr(&e.cfg, &["prune", "--json"]);
    assert_success(&out);
    serde_json::from_str(&stdout(&out)).expect("prune json")
}

#[test]
fn prune_keeps_what_is_locked_reports_it_and_extends_the_lock_of_what_it_keeps() {
    let e = env_with(true, &compliance());
    let old = backup(&e);
    let new = backup(&e);
    std::fs::write(&e.cfg, format!("{}[retention]\ndaily = 1\n", e.base)).expect("write");
    // The policy drops `old`, but it is locked for 14 days: kept, reported, exit 0.
    let out = e.ws.dr(&e.cfg, &["prune"]);
    assert_success(&out);
    let text = stdout(&out);
    assert!(
        text.lines()
            .any(|l| l.contains(&old) && l.contains("keep") && l.contains("locked until")),
        "{text}\n{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("locked until"), "{}", stderr(&out));
    assert_eq!(ids(&e, &[]), vec![new.clone(), old.clone()]);
    let v = prune_json(&e);
    let locked = &v[0]["locked"];
    assert_eq!(locked[0]["id"], old.as_str(), "{v}");
    assert_eq!(locked[0]["what"], "backup", "{v}");
    let until = locked[0]["until"].as_str().expect("until");
    assert_eq!(epoch(until), id_epoch(&old) + DAYS * 86_400, "{v}");
    // Every version of the kept backup is now locked beyond its first 14 days: until the day
    // it leaves the daily tier (its day + 1), plus 14 days.
    let start = id_epoch(&new);
    let prefix = format!("dr/app/{new}/");
    let versions = e.weed.object_versions(BUCKET, &prefix);
    assert!(versions.len() >= 6, "{versions:?}");
    for ver in &versions {
        let (mode, until) = e
            .weed
            .retention(BUCKET, &ver.key, &ver.version_id)
            .expect("retention");
        assert_eq!(mode, "COMPLIANCE");
        let until = epoch(&until);
        assert!(
            until >= start + (DAYS + 1) * 86_400,
            "{}: {until} not extended",
            ver.key
        );
    }
    // Nothing of the locked backup was touched: no delete markers.
    assert!(e
        .weed
        .object_versions(BUCKET, &format!("dr/app/{old}/"))
        .iter()
        .all(|v| !v.delete_marker));
}

#[test]
fn prune_on_a_versioned_bucket_removes_every_version_of_what_it_deletes() {
    let e = env_with(false, "");
    let out = e.weed.aws(&[
        "put-bucket-versioning",
        "--bucket",
        BUCKET,
        "--versioning-configuration",
        "Status=Enabled",
    ]);
    assert_success(&out);
    let old = backup(&e);
    let new = backup(&e);
    std::fs::write(&e.cfg, format!("{}[retention]\ndaily = 1\n", e.base)).expect("write");
    let v = prune_json(&e);
    assert_eq!(v[0]["locked"], serde_json::json!([]), "{v}");
    assert_eq!(ids(&e, &[]), vec![new.clone()]);
    let left = e.weed.object_versions(BUCKET, &format!("dr/app/{old}/"));
    assert!(left.is_empty(), "versions left behind: {left:?}");
    assert!(!e
        .weed
        .object_versions(BUCKET, &format!("dr/app/{new}/"))
        .is_empty());
}

#[test]
fn delete_markers_on_everything_then_undelete_all_brings_the_backups_back() {
    let e = env_with(true, &compliance());
    let first = backup(&e);
    let second = backup(&e);
    // The attacker, with the backup host's credentials, deletes every object (a plain
    // DELETE: on a locked bucket it can only add delete markers).
    for key in e.weed.object_keys(BUCKET) {
        let out = e
            .weed
            .aws(&["delete-object", "--bucket", BUCKET, "--key", &key]);
        assert_success(&out);
    }
    assert!(e.weed.object_keys(BUCKET).is_empty());
    assert!(ids(&e, &[]).is_empty(), "dr list shows nothing");
    let deleted = ids(&e, &["--deleted"]);
    assert_eq!(deleted, vec![second.clone(), first.clone()]);
    let out = e.ws.dr(&e.cfg, &["list", "--deleted"]);
    assert_success(&out);
    assert!(stdout(&out).contains(&first), "{}", stdout(&out));
    // One, then the rest.
    let out = e.ws.dr(&e.cfg, &["undelete", "latest"]);
    assert_success(&out);
    assert!(stdout(&out).contains(&second), "{}", stdout(&out));
    assert_eq!(ids(&e, &[]), vec![second.clone()]);
    let out = e.ws.dr(&e.cfg, &["undelete", "--all", "--target", "app"]);
    assert_success(&out);
    assert_eq!(ids(&e, &[]), vec![second.clone(), first.clone()]);
    assert!(ids(&e, &["--deleted"]).is_empty());
    // Nothing left to undelete: a clear failure.
    let out = e.ws.dr(&e.cfg, &["undelete", "--all"]);
    assert_exit_code(&out, 1);
    assert!(
        stderr(&out).contains("dr list --deleted"),
        "{}",
        stderr(&out)
    );
    // The locks were kept.
    for v in e.weed.object_versions(BUCKET, &format!("dr/app/{first}/")) {
        assert!(!v.delete_marker, "{v:?}");
        let (mode, until) = e
            .weed
            .retention(BUCKET, &v.key, &v.version_id)
            .expect("retention");
        assert_eq!(mode, "COMPLIANCE");
        assert_eq!(epoch(&until), id_epoch(&first) + DAYS * 86_400);
    }
    // And the backup restores as an exact copy. (Needs `dr restore` of format-2 backups.)
    e.pg.create_db("copy");
    let out = e.ws.dr(
        &e.cfg,
        &["restore", &first, "--to", &e.pg.url("copy"), "--yes"],
    );
    assert_success(&out);
    assert_eq!(e.pg.table_digests("copy"), e.pg.table_digests("app"));
}

fn list_json(e: &Env, args: &[&str]) -> Vec<serde_json::Value> {
    let mut a = vec!["list", "--json"];
    a.extend_from_slice(args);
    let out = e.ws.dr(&e.cfg, &a);
    assert_success(&out);
    serde_json::from_str::<serde_json::Value>(&stdout(&out))
        .expect("list json")
        .as_array()
        .cloned()
        .expect("array")
}

fn state_of(rows: &[serde_json::Value], id: &str) -> String {
    rows.iter()
        .find(|r| r["id"] == id)
        .and_then(|r| r["state"].as_str())
        .unwrap_or("absent")
        .to_string()
}

#[test]
fn overwritten_manifests_and_objects_are_flagged_and_undelete_brings_back_the_originals() {
    let e = env_with(true, &compliance());
    let first = backup(&e);
    let counts_first = e.pg.row_counts("app");
    e.pg.psql(
        "app",
        "insert into t select g, md5(g::text) from generate_series(501, 650) g;",
    );
    let second = backup(&e);
    let counts_second = e.pg.row_counts("app");
    assert_ne!(counts_first, counts_second);
    let key = |id: &str, name: &str| format!("dr/app/{id}/{name}");
    // The attacker, with the backup host's credentials, cannot delete locked versions but
    // can PUT newer ones: backup 2's manifest over backup 1's, garbage over a data object of
    // backup 2, and a *locked* garbage version over backup 1's post-data (a bucket default
    // retention would lock it the same way): that one cannot be removed, dr copies its
    // original back on top instead.
    let manifest_2 = e.weed.fetch(BUCKET, &key(&second, "manifest.json"));
    e.weed
        .put_raw(BUCKET, &key(&first, "manifest.json"), &manifest_2);
    e.weed.put_raw(
        BUCKET,
        &key(&second, "data-1.zst.age"),
        b"not an age file, not a dump",
    );
    let garbage = e.ws.write("garbage", "garbage, locked\n");
    let until = "2099-01-01T00:00:00Z";
    let out = e.weed.aws(&[
        "put-object",
        "--bucket",
        BUCKET,
        "--key",
        &key(&first, "post-data.zst.age"),
        "--body",
        &garbage.display().to_string(),
        "--object-lock-mode",
        "GOVERNANCE",
        "--object-lock-retain-until-date",
        until,
    ]);
    assert_success(&out);
    // `dr list` flags both, and says what to do.
    let rows = list_json(&e, &[]);
    assert_eq!(state_of(&rows, &first), "overwritten", "{rows:?}");
    assert_eq!(state_of(&rows, &second), "overwritten", "{rows:?}");
    let out = e.ws.dr(&e.cfg, &["list"]);
    assert_success(&out);
    let text = stdout(&out);
    for (id, what) in [
        (&first, "manifest.json"),
        (&first, "post-data.zst.age"),
        (&second, "data-1.zst.age"),
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(id.as_str())
                && l.contains("overwritten:")
                && l.contains(what)
                && l.contains(&format!("dr undelete {id}"))),
            "{id} {what}:\n{text}"
        );
    }
    assert!(
        stderr(&out).contains("overwritten backup(s)"),
        "{}",
        stderr(&out)
    );
    // `dr check` fails on them and points at `dr undelete`, never at `dr prune --force`,
    // which would delete the evidence (regression: it hinted prune for the replaced manifest).
    let out = e.ws.dr(&e.cfg, &["check"]);
    assert_exit_code(&out, 3);
    let all = format!("{}\n{}", stdout(&out), stderr(&out));
    for id in [&first, &second] {
        assert!(
            all.contains(&format!("dr undelete {id}")),
            "check does not name `dr undelete {id}`:\n{all}"
        );
    }
    assert!(
        !all.contains("prune --force"),
        "check hints a prune:\n{all}"
    );
    // `dr list --deleted` offers them.
    let deleted = list_json(&e, &["--deleted"]);
    assert_eq!(state_of(&deleted, &first), "overwritten", "{deleted:?}");
    assert_eq!(state_of(&deleted, &second), "overwritten", "{deleted:?}");
    // Restoring the overwritten backup 2 fails on the digest (the data object is garbage).
    e.pg.create_db("bad");
    let out = e.ws.dr(
        &e.cfg,
        &["restore", &second, "--to", &e.pg.url("bad"), "--yes"],
    );
    assert!(!out.status.success(), "{}", stdout(&out));
    // Bring back the originals.
    let out = e.ws.dr(&e.cfg, &["undelete", &first]);
    assert_success(&out);
    assert!(
        stdout(&out).contains("2 overwritten object(s) restored"),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let out = e.ws.dr(&e.cfg, &["undelete", "--all", "--json"]);
    assert_success(&out);
    let back: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("undelete json");
    assert_eq!(back[0]["id"], second.as_str(), "{back}");
    assert_eq!(back[0]["restored"][0]["action"], "removed_newer", "{back}");
    let rows = list_json(&e, &[]);
    assert_eq!(state_of(&rows, &first), "ok", "{rows:?}");
    assert_eq!(state_of(&rows, &second), "ok", "{rows:?}");
    assert!(list_json(&e, &["--deleted"]).is_empty());
    // The locked garbage is still there (never deleted), under a copy of the original that is
    // locked like the original.
    let post = key(&first, "post-data.zst.age");
    let versions = e.weed.object_versions(BUCKET, &post);
    assert_eq!(versions.len(), 3, "{versions:?}");
    let current = versions.iter().find(|v| v.is_latest).expect("current");
    let (mode, retain) = e
        .weed
        .retention(BUCKET, &post, &current.version_id)
        .expect("the copy is locked");
    assert_eq!(mode, "COMPLIANCE");
    assert_eq!(epoch(&retain), id_epoch(&first) + DAYS * 86_400);
    // The unlocked garbage is gone: only dr's version of backup 2's data object is left.
    assert_eq!(
        e.weed
            .object_versions(BUCKET, &key(&second, "data-1.zst.age"))
            .len(),
        1
    );
    // Each restores as an exact copy of what it backed up.
    for (id, want, db) in [
        (&first, &counts_first, "one"),
        (&second, &counts_second, "two"),
    ] {
        e.pg.create_db(db);
        let out =
            e.ws.dr(&e.cfg, &["restore", id, "--to", &e.pg.url(db), "--yes"]);
        assert_success(&out);
        assert_eq!(&e.pg.row_counts(db), want, "{id}");
    }
}

/// Regression: on a versioned bucket every `dr check` left its write probe behind as a
/// noncurrent `_dr/probe-…` version (the plain delete only added a delete marker).
#[test]
fn check_on_a_versioned_bucket_leaves_no_probe_version_behind() {
    let e = env_with(false, "");
    let out = e.weed.aws(&[
        "put-bucket-versioning",
        "--bucket",
        BUCKET,
        "--versioning-configuration",
        "Status=Enabled",
    ]);
    assert_success(&out);
    for _ in 0..2 {
        let out = e.ws.dr(&e.cfg, &["check"]);
        assert!(
            stdout(&out)
                .lines()
                .any(|l| l.starts_with("ok") && l.contains("writable")),
            "{}\n{}",
            stdout(&out),
            stderr(&out)
        );
    }
    let left = e.weed.object_versions(BUCKET, "dr/_dr/");
    assert!(left.is_empty(), "probe versions left behind: {left:?}");
}

/// The environment least-privilege keys give dr: Read, Write and List, no bucket
/// administration (GetObjectLockConfiguration is refused).
fn limited() -> [(&'static str, &'static str); 2] {
    [
        ("AWS_ACCESS_KEY_ID", LIMITED_KEY.0),
        ("AWS_SECRET_ACCESS_KEY", LIMITED_KEY.1),
    ]
}

/// Regression: with least-privilege keys every `dr -q prune` warned "cannot read the
/// bucket's versioning (S3 GetObjectLockConfiguration … AccessDenied)" — cron mailed every
/// night — and `dr check` printed `ok` lines holding AccessDenied or NoSuchBucket. Now prune is
/// quiet, and check says once, plainly, what the keys cannot read and whether it matters.
#[test]
fn least_privilege_keys_prune_quietly_and_check_says_once_what_they_cannot_read() {
    let ws = Workspace::new();
    let pg = Postgres::start();
    pg.create_db("app");
    pg.psql(
        "app",
        "create table t (id int primary key); insert into t select generate_series(1, 100);",
    );
    let weed = SeaweedFs::start_with_limited_key();
    assert_success(&weed.aws(&["create-bucket", "--bucket", BUCKET]));
    // Versioned: what the keys cannot read (the Object Lock configuration) could matter.
    assert_success(&weed.aws(&[
        "put-bucket-versioning",
        "--bucket",
        BUCKET,
        "--versioning-configuration",
        "Status=Enabled",
    ]));
    let (identity, recipient) = ws.keygen();
    let config = |bucket: &str| {
        format!(
            "[repository]\nurl = \"s3://{bucket}/dr\"\n[repository.s3]\nendpoint = \"{}\"\npath_style = true\n[encryption]\nrecipients = [\"{recipient}\"]\nidentity_file = \"{}\"\n[retention]\ndaily = 1\n[[targets]]\nname = \"app\"\nurl = \"{}\"\n",
            weed.endpoint(),
            identity.display(),
            pg.url("app")
        )
    };
    let cfg = ws.write("dr.toml", &config(BUCKET));
    for _ in 0..2 {
        assert_success(&ws.dr_env(&cfg, &["backup"], &limited()));
    }
    let out = ws.dr_env(&cfg, &["-q", "prune"], &limited());
    assert_success(&out);
    assert_eq!(stderr(&out), "", "prune -q must print nothing on success");
    let out = ws.dr_env(&cfg, &["list", "--json"], &limited());
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("list json");
    assert_eq!(v.as_array().map(Vec::len), Some(1), "{v}");

    let out = ws.dr_env(&cfg, &["check"], &limited());
    let text = stdout(&out);
    assert_success(&out);
    for l in text.lines().filter(|l| l.starts_with("ok")) {
        assert!(
            !l.contains("AccessDenied") && !l.contains("NoSuchBucket"),
            "an ok line holds an error: {l}\n{text}"
        );
    }
    let said: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("GetObjectLockConfiguration"))
        .collect();
    assert_eq!(said.len(), 1, "said once, naming the API:\n{text}");
    assert!(!said[0].contains("GetBucketVersioning"), "{}", said[0]);
    assert!(!stderr(&out).contains("WARN"), "{}", stderr(&out));

    // A bucket that does not exist: the failure is a FAIL line, never an ok one.
    let missing = ws.write("missing.toml", &config("no-such-bucket"));
    let out = ws.dr_env(&missing, &["check"], &limited());
    assert!(!out.status.success());
    for l in stdout(&out).lines().filter(|l| l.starts_with("ok")) {
        assert!(
            !l.contains("AccessDenied") && !l.contains("NoSuchBucket"),
            "an ok line holds an error: {l}\n{}",
            stdout(&out)
        );
    }
}
