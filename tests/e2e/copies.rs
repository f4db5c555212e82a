//! End-to-end: `[[copies]]` with two SeaweedFS servers, the primary and a copy that takes
//! its own credentials (`DR_COPY_OFFSITE_AWS_*`): copy, verify the copy, kill the primary,
//! restore from the copy exactly.

use crate::support::*;

const PRIMARY: &str = "primary";
const COPY: &str = "offsite";

fn copy_keys(weed: &SeaweedFs) -> Vec<String> {
    let out = weed.aws(&["list-objects-v2", "--bucket", COPY]);
    assert_success(&out);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap_or_default();
    v["Contents"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|o| o["Key"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_backup_copied_to_a_second_repository_verifies_there_and_restores_exactly_when_the_primary_is_gone(
) {
    let ws = Workspace::new();
    let pg = Postgres::start();
    pg.create_db("app");
    pg.load_hard_cases("app");
    let primary = SeaweedFs::start();
    primary.create_bucket(PRIMARY);
    // The copy accepts the limited key, signed: wrong credentials are refused.
    let copy = SeaweedFs::start_with_limited_key();
    assert_success(&copy.aws(&["create-bucket", "--bucket", COPY]));
    let (identity, recipient) = ws.keygen();
    let cfg = ws.write(
        "dr.toml",
        &format!(
            "[repository]\nurl = \"s3://{PRIMARY}/dr\"\n[repository.s3]\nendpoint = \"{}\"\npath_style = true\n\
             [encryption]\nrecipients = [\"{recipient}\"]\nidentity_file = \"{}\"\n\
             [[targets]]\nname = \"app\"\nurl = \"{}\"\n\
             [[copies]]\nname = \"offsite\"\nurl = \"s3://{COPY}/dr\"\n[copies.s3]\nendpoint = \"{}\"\npath_style = true\n",
            primary.endpoint(),
            identity.display(),
            pg.url("app"),
            copy.endpoint(),
        ),
    );
    let creds = [
        ("DR_COPY_OFFSITE_AWS_ACCESS_KEY_ID", LIMITED_KEY.0),
        ("DR_COPY_OFFSITE_AWS_SECRET_ACCESS_KEY", LIMITED_KEY.1),
    ];
    let backup = ws.dr(&cfg, &["backup"]);
    assert_success(&backup);
    let id = stdout(&backup)
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();

    // Wrong credentials for the copy: refused, nothing committed there, what to do said.
    let wrong_creds = [
        ("DR_COPY_OFFSITE_AWS_ACCESS_KEY_ID", LIMITED_KEY.0),
        ("DR_COPY_OFFSITE_AWS_SECRET_ACCESS_KEY", "wrong"),
    ];
    let wrong = ws.dr_env(&cfg, &["copy"], &wrong_creds);
    assert!(!wrong.status.success(), "{}", describe(&wrong));
    assert!(stderr(&wrong).contains("hint:"), "{}", describe(&wrong));
    assert!(
        !copy_keys(&copy)
            .iter()
            .any(|k| k.ends_with("manifest.json")),
        "{:?}",
        copy_keys(&copy)
    );

    // `dr check` says so first, naming the copy and its variables.
    let checked = ws.dr_env(&cfg, &["check"], &wrong_creds);
    assert!(!checked.status.success(), "{}", describe(&checked));
    let said = format!("{}{}", stdout(&checked), stderr(&checked));
    assert!(
        said.contains("copy offsite") && said.contains("DR_COPY_OFFSITE_AWS_SECRET_ACCESS_KEY"),
        "{said}"
    );
    let checked = ws.dr_env(&cfg, &["check"], &creds);
    let said = format!("{}{}", stdout(&checked), stderr(&checked));
    assert!(
        said.lines()
            .any(|l| l.contains("copy offsite s3://") && l.contains("writable")),
        "{said}"
    );

    let out = ws.dr_env(&cfg, &["copy", "--json"], &creds);
    assert_success(&out);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(v[0]["copy"], "offsite");
    assert_eq!(v[0]["copied"][0]["id"], id.as_str(), "{v}");
    let keys = copy_keys(&copy);
    for k in [
        format!("dr/app/{id}/manifest.json"),
        format!("dr/app/{id}/manifest.json.sig"),
    ] {
        assert!(keys.contains(&k), "{k} not in {keys:?}");
    }
    // The copy's objects are the primary's, byte for byte.
    for k in keys.iter().filter(|k| k.contains(&id)) {
        let rel = k.strip_prefix("dr/").unwrap_or(k);
        assert_eq!(
            copy_object(&copy, k),
            primary.fetch(PRIMARY, &format!("dr/{rel}")),
            "{k}"
        );
    }
    // Again: nothing to do.
    let again = ws.dr_env(&cfg, &["copy", "--json"], &creds);
    assert_success(&again);
    let v: serde_json::Value = serde_json::from_str(&stdout(&again)).expect("json");
    assert_eq!(v[0]["present"], 1, "{v}");
    assert_eq!(v[0]["copied"].as_array().map(Vec::len), Some(0), "{v}");

    // Verified from the copy, the record written there.
    let verify = ws.dr_env(
        &cfg,
        &["verify", "--copy", "offsite", "--sandbox", "local"],
        &creds,
    );
    assert_success(&verify);
    assert!(
        copy_keys(&copy)
            .iter()
            .any(|k| k.contains(&format!("app/{id}/verify/"))),
        "{:?}",
        copy_keys(&copy)
    );
    let status = ws.dr_env(&cfg, &["status", "--json"], &creds);
    let sv: serde_json::Value = serde_json::from_str(&stdout(&status)).expect("status json");
    let c = &sv[0]["copies"][0];
    assert_eq!(c["copy"], "offsite", "{sv}");
    assert_eq!(c["newest_backup"], id.as_str(), "{sv}");
    assert!(c["newest_proof"].is_string(), "{sv}");
    assert_eq!(c["missing"], 0, "{sv}");
    assert_eq!(c["lag_seconds"], 0, "{sv}");

    // The primary is gone: restore from the copy, exactly.
    drop(primary);
    let restore = ws.dr_env(
        &cfg,
        &[
            "restore",
            "--from-copy",
            "offsite",
            "--to",
            &pg.url("restored"),
            "--yes",
        ],
        &creds,
    );
    assert_success(&restore);
    assert_eq!(pg.table_digests("restored"), pg.table_digests("app"));
    // And a plain restore says the primary cannot be reached.
    let dead = ws.dr(&cfg, &["restore", "--to", &pg.url("nope"), "--yes"]);
    assert!(!dead.status.success(), "{}", describe(&dead));
}

fn copy_object(weed: &SeaweedFs, key: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("object");
    let out = weed.aws(&[
        "get-object",
        "--bucket",
        COPY,
        "--key",
        key,
        path.to_str().unwrap_or_default(),
    ]);
    assert_success(&out);
    std::fs::read(&path).expect("read object")
}

/// Point-in-time recovery from a copy: `dr copy` takes the WAL archive (records last) and
/// the base backup; with the primary repository gone, `restore --from-copy --at --to-dir
/// --start` recovers exactly the rows committed before the time, the recovered server's
/// `dr wal fetch` reading the copy too.
#[test]
fn a_point_in_time_is_recovered_from_a_copy_when_the_primary_repository_is_gone() {
    use crate::pitr::{marks_of_copy, setup_with, Capture};
    let _heavy = one_heavy_test_at_a_time();
    let s = setup_with(Postgres::start(), Capture::Archive);
    let copy_dir = s.home.join("copy");
    let mut text = std::fs::read_to_string(&s.cfg).expect("config");
    text.push_str(&format!(
        "[[copies]]\nname = \"offsite\"\nurl = \"file://{}\"\n",
        copy_dir.display()
    ));
    std::fs::write(&s.cfg, text).expect("config");
    s.mark(1);
    assert_success(&s.dr(&["backup", "--physical"]));
    s.mark(2);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let between = s.pg.psql("postgres", "select clock_timestamp()::text;");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    s.mark(3);
    s.switch_and_wait();
    s.switch_and_wait();

    let o = s.dr(&["copy", "--json"]);
    assert_success(&o);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(v[0]["copied"].as_array().map(Vec::len), Some(1), "{v}");
    assert!(
        v[0]["wal"]["app"]["copied"].as_u64().unwrap_or(0) >= 2,
        "{v}"
    );
    let again = s.dr(&["copy", "--json"]);
    assert_success(&again);
    let v: serde_json::Value = serde_json::from_str(&stdout(&again)).expect("json");
    assert_eq!(v[0]["wal"]["app"]["copied"], 0, "{v}");
    crate::pitr::give_to_server(&copy_dir);

    // The primary repository is gone.
    std::fs::rename(s.home.join("repo"), s.home.join("repo.gone")).expect("rename");
    let dir = s.pg.socket_dir().join("restored");
    let o = s.dr(&[
        "restore",
        "--from-copy",
        "offsite",
        "--at",
        &between,
        "--to-dir",
        dir.to_str().expect("utf-8"),
        "--start",
    ]);
    assert_success(&o);
    assert_eq!(marks_of_copy(&s.pg, &dir), "1,2");
}

/// A copy cut mid-object (every upload of the second part of an object reset by a proxy in
/// front of the copy's SeaweedFS): exit non-zero with what to do, no manifest and no open
/// upload in the copy; the next run copies the backup whole.
#[test]
fn a_copy_interrupted_mid_object_leaves_no_manifest_there_and_the_next_run_completes_it() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let ws = Workspace::new();
    let pg = Postgres::start();
    pg.create_db("app");
    // About 25 MB of hex: a data stream of several 5 MiB parts after zstd.
    pg.psql(
        "app",
        "create table noise as select g, md5(random()::text) || md5(random()::text) as v from generate_series(1, 350000) g;",
    );
    let primary = SeaweedFs::start();
    primary.create_bucket(PRIMARY);
    let copy = SeaweedFs::start();
    copy.create_bucket(COPY);
    let broken = Arc::new(AtomicBool::new(true));
    let cut = Arc::clone(&broken);
    let proxy = Proxy::start(copy.s3_port(), move |r| {
        if cut.load(Ordering::SeqCst) && r.method == "PUT" && r.target.contains("partNumber=2") {
            Fault::ResetRequest(Cut::Half)
        } else {
            Fault::Pass
        }
    });
    let (identity, recipient) = ws.keygen();
    let cfg = ws.write(
        "dr.toml",
        &format!(
            "[repository]\nurl = \"s3://{PRIMARY}/dr\"\n[repository.s3]\nendpoint = \"{}\"\npath_style = true\n\
             [encryption]\nrecipients = [\"{recipient}\"]\nidentity_file = \"{}\"\n\
             [backup]\npart_size_mib = 5\n\
             [[targets]]\nname = \"app\"\nurl = \"{}\"\n\
             [[copies]]\nname = \"offsite\"\nurl = \"s3://{COPY}/dr\"\n[copies.s3]\nendpoint = \"{}\"\npath_style = true\n\
             [copies.retention]\ndaily = 3\n",
            primary.endpoint(),
            identity.display(),
            pg.url("app"),
            proxy.endpoint(),
        ),
    );
    assert_success(&ws.dr(&cfg, &["backup", "--jobs", "1"]));

    let cut_off = ws.dr(&cfg, &["copy"]);
    assert!(!cut_off.status.success(), "{}", describe(&cut_off));
    let err = stderr(&cut_off);
    assert!(
        err.contains("hint:") && err.contains("dr copy --to offsite"),
        "{}",
        describe(&cut_off)
    );
    assert!(
        ProxyStats::count(&proxy.stats().request_resets) > 0,
        "{:?}",
        proxy.stats().faults()
    );
    let keys = copy.object_keys(COPY);
    assert!(
        !keys.iter().any(|k| k.ends_with("manifest.json")),
        "{keys:?}"
    );
    assert!(
        copy.open_uploads(COPY).is_empty(),
        "{:?}",
        copy.open_uploads(COPY)
    );

    broken.store(false, Ordering::SeqCst);
    let out = ws.dr(&cfg, &["copy", "--json"]);
    assert_success(&out);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(v[0]["copied"].as_array().map(Vec::len), Some(1), "{v}");
    let listed = ws.dr(&cfg, &["list", "--copy", "offsite", "--json"]);
    assert_success(&listed);
    let l: serde_json::Value = serde_json::from_str(&stdout(&listed)).expect("json");
    assert_eq!(l.as_array().map(Vec::len), Some(1), "{l}");
    assert_eq!(l[0]["state"], "ok", "{l}");
    // The copy prunes with its own [copies.retention] (the primary has none: it refuses).
    assert_success(&ws.dr(&cfg, &["prune", "--copy", "offsite", "--dry-run"]));
    assert!(!ws.dr(&cfg, &["prune", "--dry-run"]).status.success());
}

/// A database `app` with a small table, a directory primary (`repo`) and a directory copy
/// `offsite` (`copy`), `extra` appended to the config (given the workspace's path), and one
/// backup in the primary.
struct DirCopy {
    ws: Workspace,
    _pg: Postgres,
    cfg: std::path::PathBuf,
    repo: std::path::PathBuf,
    copy: std::path::PathBuf,
}

fn dir_copy(extra: impl FnOnce(&std::path::Path) -> String) -> DirCopy {
    let ws = Workspace::new();
    let pg = Postgres::start();
    pg.create_db("app");
    pg.psql(
        "app",
        "create table t (id int primary key); insert into t select generate_series(1, 100);",
    );
    let (identity, recipient) = ws.keygen();
    let repo = ws.path().join("repo");
    let copy = ws.path().join("copy");
    let cfg = ws.write(
        "dr.toml",
        &format!(
            "[repository]\nurl = \"file://{}\"\n[encryption]\nrecipients = [\"{recipient}\"]\nidentity_file = \"{}\"\n\
             [[targets]]\nname = \"app\"\nurl = \"{}\"\n\
             [[copies]]\nname = \"offsite\"\nurl = \"file://{}\"\n{}",
            repo.display(),
            identity.display(),
            pg.url("app"),
            copy.display(),
            extra(ws.path()),
        ),
    );
    assert_success(&ws.dr(&cfg, &["backup"]));
    DirCopy {
        ws,
        _pg: pg,
        cfg,
        repo,
        copy,
    }
}

/// `job = "copy"` in the daemon: a backup taken by hand reaches the copy on the schedule.
#[test]
fn a_daemon_copy_job_copies_the_backups_the_copy_lacks() {
    let DirCopy { ws, cfg, copy, .. } = dir_copy(|dir| {
        format!(
            "[[schedules]]\nname = \"to-offsite\"\ncron = \"* * * * * *\"\njob = \"copy\"\n\
             [notify]\ntextfile_path = \"{}\"\n",
            dir.join("dr.prom").display()
        )
    });
    let log = ws.path().join("daemon.stderr");
    let mut daemon = ws
        .dr_command(&cfg, &["daemon"])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("dr daemon");
    let copied = wait_until(std::time::Duration::from_secs(60), || {
        manifests(&copy).len() == 1
    });
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert!(
        copied,
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("copy of `app` on copy `offsite` ok: 1 backup(s) copied"),
        "{text}"
    );
    // Reported like the other jobs: the metrics say when the copy last succeeded.
    let prom = std::fs::read_to_string(ws.path().join("dr.prom")).unwrap_or_default();
    assert!(
        prom.contains("dr_last_success_timestamp_seconds{target=\"app\",operation=\"copy\"}"),
        "{prom}"
    );
}

/// `dr copy` takes the target's run lock in the copy: while another run holds it (here a
/// lock of a run on another host), nothing is copied and it exits 6; once it is released the
/// copy goes through and leaves no lock behind.
#[test]
fn a_copy_waits_its_turn_behind_the_copys_run_lock() {
    let DirCopy { ws, cfg, copy, .. } = dir_copy(|_| String::new());
    let lock = copy.join("locks").join("app.json");
    std::fs::create_dir_all(copy.join("locks")).expect("locks dir");
    let now = chrono::Utc::now();
    std::fs::write(
        &lock,
        serde_json::json!({
            "target": "app",
            "holder": "elsewhere pid 1",
            "operation": "prune",
            "acquired_at": now.to_rfc3339(),
            "expires_at": (now + chrono::Duration::hours(1)).to_rfc3339(),
            "token": "theirs",
        })
        .to_string(),
    )
    .expect("lock");
    let held = ws.dr(&cfg, &["copy"]);
    assert_eq!(held.status.code(), Some(6), "{}", describe(&held));
    assert!(
        stderr(&held).contains("elsewhere pid 1"),
        "{}",
        describe(&held)
    );
    assert!(manifests(&copy).is_empty(), "{:?}", manifests(&copy));

    std::fs::remove_file(&lock).expect("release");
    assert_success(&ws.dr(&cfg, &["copy"]));
    assert_eq!(manifests(&copy).len(), 1);
    assert!(!lock.exists(), "the copy's run lock was left behind");
}

/// `dr resign` (a leaked signing key) writes new signatures into the primary, never new
/// manifests: the next `dr copy` carries them into the copy, so a host that trusts only the
/// new key uses the copy too.
#[test]
fn a_copy_takes_the_new_signatures_after_dr_resign() {
    let DirCopy {
        ws,
        cfg,
        repo,
        copy,
        ..
    } = dir_copy(|_| String::new());
    assert_success(&ws.dr(&cfg, &["copy"]));
    let old_public = {
        let out = std::process::Command::new("ssh-keygen")
            .arg("-y")
            .arg("-f")
            .arg(ws.signing_key())
            .output()
            .expect("ssh-keygen -y");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let (new_key, _) = ws.new_signing_key("new/signing.key");
    let new = [("DR_SIGNING_KEY_FILE", new_key.to_str().expect("utf-8"))];
    let before = (chrono::Utc::now() + chrono::Duration::minutes(1)).to_rfc3339();
    assert_success(&ws.dr_env(
        &cfg,
        &[
            "resign",
            "--target",
            "app",
            "--old-key",
            &old_public,
            "--stored-before",
            &before,
        ],
        &new,
    ));
    let stale = ws.dr_env(&cfg, &["list", "--copy", "offsite", "--json"], &new);
    let l: serde_json::Value = serde_json::from_str(&stdout(&stale)).expect("json");
    assert_ne!(l[0]["state"], "ok", "{l}");

    let out = ws.dr_env(&cfg, &["copy", "--json"], &new);
    assert_success(&out);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(v[0]["signatures"], 1, "{v}");
    let copied = manifests(&copy);
    assert_eq!(copied.len(), 1);
    let rel = copied[0].strip_prefix(&copy).expect("under the copy");
    let sig = |root: &std::path::Path| {
        std::fs::read(format!("{}.sig", root.join(rel).display())).expect("signature")
    };
    assert_eq!(sig(&copy), sig(&repo));
    let listed = ws.dr_env(&cfg, &["list", "--copy", "offsite", "--json"], &new);
    let l: serde_json::Value = serde_json::from_str(&stdout(&listed)).expect("json");
    assert_eq!(l[0]["state"], "ok", "{l}");
}
