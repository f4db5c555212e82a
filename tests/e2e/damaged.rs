//! End-to-end: faults in the catalog never block the other backups (issue 8).
//!
//! - One damaged manifest (truncated) of an old backup: `list`, `restore latest`,
//!   `restore <good id>` and `prune` work; the damaged backup is listed with the reason,
//!   naming it fails with exit 4, `status` exits 8, `prune` keeps it until `--force`.
//! - A future-dated backup (taken with the clock 30 days ahead) does not shadow newer ones:
//!   `restore latest` restores the real newest; `list`, `status`, `check` and `prune` report it.

use std::path::{Path, PathBuf};

use crate::support::*;

struct Env {
    ws: Workspace,
    pg: Postgres,
    cfg: PathBuf,
    base: String,
}

/// A database `app` with table `t`; a config with the `[repository]` section `repository`
/// writes (given the workspace's path), and no retention.
fn env(repository: impl FnOnce(&Path) -> String) -> Env {
    let ws = Workspace::new();
    let pg = Postgres::start();
    pg.create_db("app");
    pg.psql(
        "app",
        "create table t (id int primary key); insert into t values (1);",
    );
    let (identity, recipient) = ws.keygen();
    let base = format!(
        "{}[encryption]\nrecipients = [\"{recipient}\"]\nidentity_file = \"{}\"\n[[targets]]\nname = \"app\"\nurl = \"{}\"\n",
        repository(ws.path()),
        identity.display(),
        pg.url("app")
    );
    let cfg = ws.write("dr.toml", &base);
    Env { ws, pg, cfg, base }
}

impl Env {
    /// `dr backup`; returns the new backup's id.
    fn backup(&self) -> String {
        let out = self.ws.dr(&self.cfg, &["backup"]);
        assert_success(&out);
        let id = stdout(&out)
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        // Ids are whole seconds: the next backup must get another one.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        id
    }

    /// Adds retention (grace 0: every prefix without a manifest is a leftover at once).
    fn with_retention(&self) {
        std::fs::write(
            &self.cfg,
            format!(
                "{}[retention]\ndaily = 1\nleftover_grace_hours = 0\n",
                self.base
            ),
        )
        .expect("write config");
    }

    fn rows_of(&self, db: &str) -> String {
        self.pg.psql(db, "select count(*) from t")
    }

    fn list_json(&self) -> Vec<serde_json::Value> {
        let out = self.ws.dr(&self.cfg, &["list", "--json"]);
        assert_success(&out);
        let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("list --json");
        v.as_array().expect("array").clone()
    }
}

fn by_id<'a>(list: &'a [serde_json::Value], id: &str) -> Option<&'a serde_json::Value> {
    list.iter().find(|e| e["id"] == id)
}

/// A directory repository under the workspace.
fn directory(ws: &Path) -> String {
    format!("[repository]\nurl = \"file://{}/repo\"\n", ws.display())
}

fn truncate_half(bytes: &[u8]) -> Vec<u8> {
    bytes[..bytes.len() / 2].to_vec()
}

#[test]
fn a_truncated_manifest_of_an_old_backup_blocks_nothing() {
    let e = env(directory);
    let repo = e.ws.path().join("repo");
    let old = e.backup();
    e.pg.psql("app", "insert into t values (2);");
    let good = e.backup();
    let manifest = repo.join(format!("app/{old}/manifest.json"));
    let bytes = std::fs::read(&manifest).expect("manifest");
    std::fs::write(&manifest, truncate_half(&bytes)).expect("truncate");

    // list: exit 0, the damaged one shown with the reason.
    let out = e.ws.dr(&e.cfg, &["list"]);
    assert_success(&out);
    let text = stdout(&out);
    assert!(text.contains(&good), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with(&old))
        .unwrap_or_else(|| panic!("damaged backup not listed:\n{text}"));
    assert!(
        line.contains("damaged") && line.contains("not valid JSON"),
        "{line}"
    );
    let list = e.list_json();
    assert_eq!(by_id(&list, &good).expect("good")["state"], "ok");
    let damaged = by_id(&list, &old).expect("damaged listed");
    assert_eq!(damaged["state"], "damaged");
    assert_eq!(damaged["key"], format!("app/{old}/manifest.json"));
    assert!(
        damaged["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not valid JSON")),
        "{damaged}"
    );

    // restore latest and restore <good id> work.
    assert_success(&e.ws.dr(
        &e.cfg,
        &["restore", "latest", "--to", &e.pg.url("r1"), "--yes"],
    ));
    assert_eq!(e.rows_of("r1"), "2");
    assert_success(&e.ws.dr(
        &e.cfg,
        &["restore", &good, "--to", &e.pg.url("r2"), "--yes"],
    ));
    assert_eq!(e.rows_of("r2"), "2");
    // restore <damaged id>: integrity, naming the reason; the target untouched.
    let out =
        e.ws.dr(&e.cfg, &["restore", &old, "--to", &e.pg.url("r3"), "--yes"]);
    assert_exit_code(&out, 4);
    assert!(
        stderr(&out).contains("damaged") && stderr(&out).contains("not valid JSON"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        e.pg.psql(
            "postgres",
            "select count(*) from pg_database where datname = 'r3'"
        ),
        "0"
    );

    // status: a problem (exit 8), naming it.
    let out = e.ws.dr(&e.cfg, &["status"]);
    assert_exit_code(&out, 8);
    assert!(
        stdout(&out).contains(&old) && stdout(&out).contains("damaged"),
        "{}",
        stdout(&out)
    );

    // prune: never deletes it, neither by retention nor as a leftover.
    e.with_retention();
    let objects_of_old = || {
        let mut f = files_under(&repo.join(format!("app/{old}")));
        f.sort();
        f
    };
    let objects_before = objects_of_old();
    assert!(objects_before.len() >= 2, "{objects_before:?}");
    let out = e.ws.dr(&e.cfg, &["prune"]);
    assert_success(&out);
    assert!(
        stdout(&out).contains(&format!("{old}\tkeep\tdamaged")),
        "{}",
        stdout(&out)
    );
    assert_eq!(objects_of_old(), objects_before);
    assert!(manifest.exists());

    // prune --force: deleted like a leftover; the good backup stays.
    let out = e.ws.dr(&e.cfg, &["prune", "--force"]);
    assert_success(&out);
    assert!(objects_of_old().is_empty(), "{:?}", objects_of_old());
    let ids: Vec<String> = e
        .list_json()
        .iter()
        .filter_map(|v| v["id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(ids, vec![good]);
    assert_success(&e.ws.dr(&e.cfg, &["status"]));
}

#[test]
fn a_truncated_manifest_in_s3_blocks_nothing() {
    let weed = SeaweedFs::start();
    weed.create_bucket("damaged");
    let e = env(|_| {
        format!(
            "[repository]\nurl = \"s3://damaged/dr\"\nendpoint = \"{}\"\npath_style = true\n",
            weed.endpoint()
        )
    });
    let old = e.backup();
    e.pg.psql("app", "insert into t values (2);");
    let good = e.backup();
    let key = format!("dr/app/{old}/manifest.json");
    let bytes = weed.fetch("damaged", &key);
    weed.put_raw("damaged", &key, &truncate_half(&bytes));

    let list = e.list_json();
    assert_eq!(by_id(&list, &good).expect("good")["state"], "ok");
    assert_eq!(by_id(&list, &old).expect("damaged")["state"], "damaged");
    assert_success(&e.ws.dr(
        &e.cfg,
        &["restore", "latest", "--to", &e.pg.url("r1"), "--yes"],
    ));
    assert_eq!(e.rows_of("r1"), "2");
    let out =
        e.ws.dr(&e.cfg, &["restore", &old, "--to", &e.pg.url("r2"), "--yes"]);
    assert_exit_code(&out, 4);

    e.with_retention();
    let of_old = |keys: Vec<String>| -> Vec<String> {
        keys.into_iter()
            .filter(|k| k.starts_with(&format!("dr/app/{old}/")))
            .collect()
    };
    let before = of_old(weed.object_keys("damaged"));
    assert!(before.contains(&key), "{before:?}");
    assert_success(&e.ws.dr(&e.cfg, &["prune"]));
    assert_eq!(of_old(weed.object_keys("damaged")), before);
    assert_success(&e.ws.dr(&e.cfg, &["prune", "--force"]));
    assert!(of_old(weed.object_keys("damaged")).is_empty());
    assert!(weed
        .object_keys("damaged")
        .iter()
        .any(|k| k.starts_with(&format!("dr/app/{good}/"))));
}

/// Copies backup `id` of a directory repository to `new_id`, rewriting its manifest
/// consistently (id, times, object keys), as a backup taken at `new_id`'s time would be, and
/// signed with the workspace's key as the backup host would.
fn copy_backup(ws: &Workspace, repo: &Path, id: &str, new_id: &str, started_at: &str) {
    let from = repo.join(format!("app/{id}"));
    let to = repo.join(format!("app/{new_id}"));
    std::fs::create_dir_all(&to).expect("mkdir");
    for f in files_under(&from) {
        let name = f.file_name().expect("name").to_string_lossy().into_owned();
        if name != "manifest.json" && f.parent() == Some(from.as_path()) {
            std::fs::copy(&f, to.join(&name)).expect("copy");
        }
    }
    let text = std::fs::read_to_string(from.join("manifest.json")).expect("manifest");
    let mut m: serde_json::Value = serde_json::from_str(&text).expect("json");
    m["id"] = new_id.into();
    m["started_at"] = started_at.into();
    m["finished_at"] = started_at.into();
    for o in m["objects"].as_array_mut().expect("objects") {
        let key = o["key"].as_str().expect("key").replace(id, new_id);
        o["key"] = key.into();
    }
    std::fs::write(
        to.join("manifest.json"),
        serde_json::to_string_pretty(&m).expect("json"),
    )
    .expect("write manifest");
    ws.sign(&to.join("manifest.json"));
}

#[test]
fn a_future_dated_backup_does_not_shadow_newer_ones() {
    let e = env(directory);
    let repo = e.ws.path().join("repo");
    // A backup of the old data, as if taken with the clock 30 days ahead...
    let first = e.backup();
    let ahead = chrono::Utc::now() + chrono::Duration::days(30);
    let future = ahead.format("%Y%m%dT%H%M%SZ").to_string();
    copy_backup(&e.ws, &repo, &first, &future, &ahead.to_rfc3339());
    // ...then the real newest backup, of newer data.
    e.pg.psql("app", "insert into t values (2);");
    let newest = e.backup();

    // restore latest: the real newest, not the future-dated one.
    let out = e.ws.dr(
        &e.cfg,
        &["restore", "latest", "--to", &e.pg.url("r1"), "--yes"],
    );
    assert_success(&out);
    assert_eq!(e.rows_of("r1"), "2");
    assert!(stderr(&out).contains(&future), "{}", stderr(&out));
    // --at a time after both picks the real newest as well.
    let at = (ahead + chrono::Duration::days(1)).to_rfc3339();
    assert_success(&e.ws.dr(
        &e.cfg,
        &["restore", "--at", &at, "--to", &e.pg.url("r2"), "--yes"],
    ));
    assert_eq!(e.rows_of("r2"), "2");
    // By its id it can still be restored: its data may matter.
    assert_success(&e.ws.dr(
        &e.cfg,
        &["restore", &future, "--to", &e.pg.url("r3"), "--yes"],
    ));
    assert_eq!(e.rows_of("r3"), "1");

    // list marks it.
    let out = e.ws.dr(&e.cfg, &["list"]);
    assert_success(&out);
    let line = stdout(&out)
        .lines()
        .find(|l| l.starts_with(&future))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("{}", stdout(&out)));
    assert!(line.contains("future-dated: clock skew"), "{line}");
    let list = e.list_json();
    assert_eq!(
        by_id(&list, &future).expect("future")["state"],
        "future_dated"
    );
    assert_eq!(by_id(&list, &newest).expect("newest")["state"], "ok");

    // status: exit 8, clock skew; the newest is the real one.
    let out = e.ws.dr(&e.cfg, &["status", "--json"]);
    assert_exit_code(&out, 8);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(v[0]["newest_backup"], newest.as_str());
    assert!(
        v[0]["newest_backup_age_seconds"]
            .as_i64()
            .is_some_and(|s| s >= 0),
        "{v}"
    );
    assert_eq!(v[0]["future_dated"][0], future.as_str());
    let out = e.ws.dr(&e.cfg, &["status"]);
    assert_exit_code(&out, 8);
    assert!(stdout(&out).contains("clock skew"), "{}", stdout(&out));

    // check: a line saying clock skew, non-zero.
    let out = e.ws.dr(&e.cfg, &["check"]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("clock skew") && stderr(&out).contains(&future),
        "{}",
        stderr(&out)
    );

    // prune: keeps the real newest and the future-dated one (reported), prunes the rest.
    e.with_retention();
    let out = e.ws.dr(&e.cfg, &["prune"]);
    assert_success(&out);
    assert!(
        stdout(&out).contains(&format!("{future}\tkeep\tfuture")),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains(&format!("{newest}\tkeep\tnewest")),
        "{}",
        stdout(&out)
    );
    let ids: Vec<String> = e
        .list_json()
        .iter()
        .filter_map(|v| v["id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(ids, vec![future, newest]);
    assert!(!ids.contains(&first));
}

/// A manifest edit someone holding the bucket's credentials could make (issue 21).
#[derive(Clone, Copy, Debug)]
enum Tamper {
    /// The last data stream's entry removed (its object left in place).
    DropData,
    /// An extra data stream: a copy of `data-1` stored as a new object, listed after the
    /// others.
    ExtraData,
}

/// Edits the manifest of backup `id` as `how` says, through `read`/`write` of the
/// repository's keys (relative to the repository, like the manifest's own keys).
/// Edits the manifest of backup `id` and signs the edit with the workspace's key, as a
/// holder of a leaked signing key could: the signature is good, so what refuses it is the
/// cross-check against the encrypted details.
fn tamper(
    ws: &Workspace,
    id: &str,
    how: Tamper,
    read: &dyn Fn(&str) -> Vec<u8>,
    write: &dyn Fn(&str, &[u8]),
) {
    let key = format!("app/{id}/manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&read(&key)).expect("manifest json");
    let objects = m["objects"].as_array_mut().expect("objects");
    let data: Vec<usize> = (0..objects.len())
        .filter(|&i| objects[i]["role"] == "data")
        .collect();
    assert!(data.len() >= 2, "needs several data streams: {objects:?}");
    let last = *data.last().expect("data");
    match how {
        Tamper::DropData => {
            objects.remove(last);
        }
        Tamper::ExtraData => {
            let mut extra = objects[data[0]].clone();
            let from = extra["key"].as_str().expect("key").to_string();
            let to = format!("app/{id}/data-{}.zst.age", data.len() + 1);
            write(&to, &read(&from));
            extra["key"] = to.into();
            objects.insert(last + 1, extra);
        }
    }
    let edited = serde_json::to_string_pretty(&m).expect("json");
    let file = ws.write("tampered/manifest.json", &edited);
    ws.sign(&file);
    let sig = std::fs::read(format!("{}.sig", file.display())).expect("signature");
    write(&format!("{key}.sig"), &sig);
    write(&key, edited.as_bytes());
}

/// Backups in several data streams whose manifests were edited (an entry removed, one
/// added) are refused with exit 4 before the target is touched: no new database is left
/// behind, an existing one keeps what it held, even with --clean.
fn tampered_manifests_are_refused(
    e: &Env,
    read: &dyn Fn(&str) -> Vec<u8>,
    write: &dyn Fn(&str, &[u8]),
) {
    e.pg.psql(
        "app",
        "create table a (id int primary key); insert into a select generate_series(1, 500);
         create table b (id int primary key); insert into b select generate_series(1, 300);
         create table c (id int primary key); insert into c select generate_series(1, 100);
         analyze;",
    );
    e.pg.create_db("kept");
    e.pg.psql(
        "kept",
        "create table t (id int primary key); insert into t values (7);",
    );
    let db_exists = |db: &str| {
        e.pg.psql(
            "postgres",
            &format!("select count(*) from pg_database where datname = '{db}'"),
        )
    };
    for (n, how) in [Tamper::DropData, Tamper::ExtraData]
        .into_iter()
        .enumerate()
    {
        let out = e.ws.dr(&e.cfg, &["backup", "--jobs", "3"]);
        assert_success(&out);
        let id = stdout(&out)
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        tamper(&e.ws, &id, how, read, write);

        let fresh = format!("fresh{n}");
        let out = e.ws.dr(
            &e.cfg,
            &["restore", &id, "--to", &e.pg.url(&fresh), "--yes"],
        );
        assert_exit_code(&out, 4);
        assert!(
            stderr(&out).contains("does not match the backup's encrypted details")
                && stderr(&out).contains("hint:"),
            "{how:?}: {}",
            stderr(&out)
        );
        assert_eq!(db_exists(&fresh), "0", "{how:?}: {}", stderr(&out));
        // verify refuses it the same way, before any sandbox.
        let out = e.ws.dr(&e.cfg, &["verify", &id, "--sandbox", "local"]);
        assert_exit_code(&out, 4);
        assert!(
            stderr(&out).contains("does not match the backup's encrypted details"),
            "{how:?}: {}",
            stderr(&out)
        );

        let out = e.ws.dr(
            &e.cfg,
            &[
                "restore",
                &id,
                "--to",
                &e.pg.url("kept"),
                "--clean",
                "--yes",
            ],
        );
        assert_exit_code(&out, 4);
        assert_eq!(
            e.pg.psql("kept", "select string_agg(id::text, ',') from t"),
            "7"
        );
        assert_eq!(
            e.pg.psql(
                "kept",
                "select count(*) from pg_tables where schemaname = 'public'"
            ),
            "1",
            "{how:?}"
        );
    }
}

#[test]
fn a_manifest_that_lost_or_gained_an_object_is_refused_before_the_target() {
    let e = env(directory);
    let repo = e.ws.path().join("repo");
    let read = |k: &str| std::fs::read(repo.join(k)).expect("read object");
    let write = |k: &str, b: &[u8]| std::fs::write(repo.join(k), b).expect("write object");
    tampered_manifests_are_refused(&e, &read, &write);
}

#[test]
fn a_manifest_that_lost_or_gained_an_object_in_s3_is_refused_before_the_target() {
    let weed = SeaweedFs::start();
    weed.create_bucket("tampered");
    let e = env(|_| {
        format!(
            "[repository]\nurl = \"s3://tampered/dr\"\nendpoint = \"{}\"\npath_style = true\n",
            weed.endpoint()
        )
    });
    let read = |k: &str| weed.fetch("tampered", &format!("dr/{k}"));
    let write = |k: &str, b: &[u8]| weed.put_raw("tampered", &format!("dr/{k}"), b);
    tampered_manifests_are_refused(&e, &read, &write);
}
