//! End-to-end: part limits per provider (issue 22, item 3). With `[repository.s3] max_parts
//! = 2` and 5 MiB parts, a section of ~30 MiB is stored as several objects of at most two
//! parts each (`data-1.zst.age`, `data-1.zst.age.0002`, …) under a format-4 manifest, and
//! restores exactly (with dr, and with `runbooks/break-glass.md` and no dr); a failure in the
//! middle of the second object leaves no manifest, no object of the backup and no open
//! multipart upload. A base backup (`dr backup --physical`) the same way: its tar in several
//! objects under a format-5 manifest, drilled and recovered exactly, and cut cleanly.

use std::path::PathBuf;

use crate::support::*;

const BUCKET: &str = "parts";

struct Env {
    ws: Workspace,
    pg: Postgres,
    weed: SeaweedFs,
    cfg: PathBuf,
    identity: PathBuf,
}

/// Three tables of ~10 MiB of random bytes (nothing for zstd to take away), one data
/// stream (`--jobs 1`), parts of 5 MiB (S3's smallest), two parts per object.
fn env() -> Env {
    let ws = Workspace::new();
    let pg = Postgres::start();
    pg.create_db("app");
    for i in 0..3 {
        pg.psql(
            "app",
            &format!(
                "create table blob{i} (id int primary key, payload bytea);
                 insert into blob{i} select g, (select string_agg(decode(md5(random()::text || g || k), 'hex'), ''::bytea) from generate_series(1, 64) k) from generate_series(1, 10000) g;"
            ),
        );
    }
    let weed = SeaweedFs::start();
    weed.create_bucket(BUCKET);
    let (identity, recipient) = ws.keygen();
    let cfg = ws.write(
        "dr.toml",
        &format!(
            "[repository]\nurl = \"s3://{BUCKET}/dr\"\n[repository.s3]\nendpoint = \"{}\"\npath_style = true\nmax_parts = 2\n[backup]\npart_size_mib = 5\njobs = 1\n[encryption]\nrecipients = [\"{recipient}\"]\nidentity_file = \"{}\"\n[[targets]]\nname = \"app\"\nurl = \"{}\"\n",
            weed.endpoint(),
            identity.display(),
            pg.url("app")
        ),
    );
    Env {
        ws,
        pg,
        weed,
        cfg,
        identity,
    }
}

#[test]
fn a_stream_longer_than_max_parts_is_stored_as_several_objects_and_restores_exactly() {
    let e = env();
    assert_success(&e.ws.dr(&e.cfg, &["backup"]));
    let keys = e.weed.object_keys(BUCKET);
    let data: Vec<&String> = keys
        .iter()
        .filter(|k| k.contains("/data-1.zst.age"))
        .collect();
    assert!(data.len() >= 3, "~30 MiB in objects of 10 MiB: {keys:?}");
    assert!(data[0].ends_with("/data-1.zst.age"), "{data:?}");
    assert!(data[1].ends_with("/data-1.zst.age.0002"), "{data:?}");
    assert!(
        e.weed.open_uploads(BUCKET).is_empty(),
        "no upload left open"
    );
    for k in &data {
        let size = e.weed.fetch(BUCKET, k).len();
        assert!(
            size <= 10 * 1024 * 1024,
            "{k}: {size} bytes, more than 2 parts"
        );
    }
    let manifest_key = keys
        .iter()
        .find(|k| k.ends_with("/manifest.json"))
        .expect("a manifest");
    let manifest: serde_json::Value =
        serde_json::from_slice(&e.weed.fetch(BUCKET, manifest_key)).expect("manifest json");
    assert_eq!(manifest["format"], 4, "{manifest}");
    let shown = stdout(&e.ws.dr(&e.cfg, &["show", "latest"]));
    assert!(shown.contains("data-1.zst.age.0002"), "{shown}");

    let other = Postgres::start();
    let out =
        e.ws.dr(&e.cfg, &["restore", "--to", &other.url("copy"), "--yes"]);
    assert_success(&out);
    assert_eq!(e.pg.table_digests("app"), other.table_digests("copy"));
    // The archive as a file (the other read path) too.
    let file = e.ws.path().join("archive.dump");
    let out = e.ws.dr(
        &e.cfg,
        &["restore", "--to-file", file.to_str().expect("utf-8")],
    );
    assert_success(&out);
}

/// A proxy in front of `weed` that cuts every upload of the second part of `object.0002`
/// halfway, on every retry.
fn cutting_the_second_object(weed: &SeaweedFs, object: &str) -> Proxy {
    let second = format!("{object}.0002");
    Proxy::start(weed.s3_port(), move |req: &RequestHead| {
        if req.method == "PUT"
            && req.target.contains(&second)
            && req.target.contains("partNumber=2")
        {
            Fault::ResetRequest(Cut::Half)
        } else {
            Fault::Pass
        }
    })
}

/// The failed backup named `object.0002`, and left no manifest, no key containing `stored`
/// and no open upload.
fn assert_cut_cleanly(
    weed: &SeaweedFs,
    proxy: &Proxy,
    out: &std::process::Output,
    object: &str,
    stored: &str,
) {
    let second = format!("{object}.0002");
    assert!(!out.status.success(), "{}", describe(out));
    assert!(
        stderr(out).contains(&second),
        "the error names the object: {}",
        describe(out)
    );
    assert!(
        proxy.stats().faults().iter().any(|f| f.contains(&second)),
        "the second object was reached"
    );
    let keys = weed.object_keys(BUCKET);
    assert!(
        !keys.iter().any(|k| k.ends_with("manifest.json")),
        "no manifest: {keys:?}"
    );
    assert!(
        !keys.iter().any(|k| k.contains(stored)),
        "the failed backup's objects are deleted: {keys:?}"
    );
    assert!(
        weed.open_uploads(BUCKET).is_empty(),
        "no upload left open: {:?}",
        weed.open_uploads(BUCKET)
    );
}

#[test]
fn a_failure_in_the_second_object_leaves_no_manifest_no_object_and_no_open_upload() {
    let e = env();
    let proxy = cutting_the_second_object(&e.weed, "data-1.zst.age");
    let endpoint = proxy.endpoint();
    let out = e.ws.dr_env(
        &e.cfg,
        &["backup"],
        &[("DR_REPOSITORY_ENDPOINT", endpoint.as_str())],
    );
    assert_cut_cleanly(&e.weed, &proxy, &out, "data-1.zst.age", ".zst.age");
}

#[test]
fn break_glass_restores_a_section_stored_as_several_objects_without_dr() {
    if std::process::Command::new("aws")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: no aws CLI (ci/setup.sh installs it)");
        return;
    }
    let e = env();
    assert_success(&e.ws.dr(&e.cfg, &["backup"]));
    assert!(e
        .weed
        .object_keys(BUCKET)
        .iter()
        .any(|k| k.ends_with("data-1.zst.age.0002")));
    let identity = &e.identity;
    let other = Postgres::start();
    let (repo, work) = (e.ws.path().join("fetched"), e.ws.path().join("work"));
    std::fs::create_dir_all(&repo).expect("mkdir");
    std::fs::create_dir_all(&work).expect("mkdir");
    // The s3-fetch block, then every untagged block, in document order.
    let script = crate::runbooks::script("break-glass.md", "s3-fetch");
    let out = crate::runbooks::run_script(
        &e.ws,
        "break-glass-parts.sh",
        &script,
        &[
            ("REPO", repo.display().to_string()),
            ("S3_URL", format!("s3://{BUCKET}/dr")),
            ("AWS_ENDPOINT_URL", e.weed.endpoint()),
            ("AWS_ACCESS_KEY_ID", "any".into()),
            ("AWS_SECRET_ACCESS_KEY", "any".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("TARGET", "app".into()),
            ("IDENTITY", identity.display().to_string()),
            ("SIGNER", crate::runbooks::signer(&e.ws)),
            ("PGURL", other.url("app")),
            ("WORK", work.display().to_string()),
        ],
    );
    assert_success(&out);
    let sums = std::fs::read_to_string(work.join("SHA256SUMS")).expect("SHA256SUMS");
    assert!(sums.contains("data-1.zst.age.0002"), "{sums}");
    assert_eq!(e.pg.table_digests("app"), other.table_digests("app"));
}

/// A server archiving with `dr wal push` into SeaweedFS with `max_parts = 2` and 5 MiB parts,
/// holding ~30 MiB of random bytes: its base tar is longer than one object.
fn physical_env() -> (crate::pitr::Pitr, SeaweedFs) {
    use crate::pitr::{setup_on, Capture};
    let weed = SeaweedFs::start();
    weed.create_bucket(BUCKET);
    let repository = format!(
        "[repository]\nurl = \"s3://{BUCKET}/dr\"\n[repository.s3]\nendpoint = \"{}\"\npath_style = true\nregion = \"us-east-1\"\nmax_parts = 2\n[backup]\npart_size_mib = 5\n",
        weed.endpoint()
    );
    let env = "AWS_ACCESS_KEY_ID=any\nAWS_SECRET_ACCESS_KEY=any\nAWS_REGION=us-east-1\nAWS_EC2_METADATA_DISABLED=true\n";
    let s = setup_on(Postgres::start(), Capture::Archive, &repository, env);
    s.pg.psql(
        "postgres",
        "create table blob (id int primary key, payload bytea);
         insert into blob select g, (select string_agg(decode(md5(random()::text || g || k), 'hex'), ''::bytea) from generate_series(1, 64) k) from generate_series(1, 30000) g;",
    );
    (s, weed)
}

#[test]
fn a_base_backup_longer_than_max_parts_is_stored_as_several_objects_and_recovers_exactly() {
    let _heavy = one_heavy_test_at_a_time();
    let (s, weed) = physical_env();
    s.mark(1);
    assert_success(&s.dr(&["backup", "--physical"]));
    let keys = weed.object_keys(BUCKET);
    let base: Vec<&String> = keys
        .iter()
        .filter(|k| k.contains("/base.tar.zst.age"))
        .collect();
    assert!(base.len() >= 3, "~30 MiB in objects of 10 MiB: {keys:?}");
    assert!(base[0].ends_with("/base.tar.zst.age"), "{base:?}");
    assert!(base[1].ends_with("/base.tar.zst.age.0002"), "{base:?}");
    for k in &base {
        let size = weed.fetch(BUCKET, k).len();
        assert!(size <= 10 << 20, "{k}: {size} bytes, more than 2 parts");
    }
    assert!(weed.open_uploads(BUCKET).is_empty(), "no upload left open");
    let manifest_key = keys
        .iter()
        .find(|k| k.ends_with("/manifest.json"))
        .expect("a manifest");
    let manifest: serde_json::Value =
        serde_json::from_slice(&weed.fetch(BUCKET, manifest_key)).expect("manifest json");
    assert_eq!(manifest["format"], 5, "{manifest}");
    let shown = stdout(&s.dr(&["show", "latest"]));
    assert!(shown.contains("base.tar.zst.age.0002"), "{shown}");
    s.mark(2);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let after = s.pg.psql("postgres", "select clock_timestamp()::text;");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    s.switch_and_wait();

    // The drill reads the objects in turn: pg_verifybackup passes and recovery reaches mark 2.
    let o = s.dr(&["verify", "--pitr", "--json"]);
    assert_success(&o);
    // And the operator's recovery, to a second after the last mark, holds every row.
    let dir = s.pg.socket_dir().join("restored");
    let o = s.dr(&[
        "restore",
        "--at",
        &after,
        "--to-dir",
        dir.to_str().expect("utf-8"),
        "--start",
    ]);
    assert_success(&o);
    assert_eq!(crate::pitr::marks_of_copy(&s.pg, &dir), "1,2");
    let digest = "select md5(string_agg(md5(payload), '' order by id)) from blob";
    assert_eq!(
        crate::pitr::query_copy(&s.pg, &dir, digest),
        s.pg.psql("postgres", digest)
    );
}

#[test]
fn a_failure_in_the_base_tars_second_object_leaves_no_manifest_no_object_and_no_open_upload() {
    let _heavy = one_heavy_test_at_a_time();
    let (s, weed) = physical_env();
    let proxy = cutting_the_second_object(&weed, "base.tar.zst.age");
    let endpoint = proxy.endpoint();
    let env_file = s.env_file.display().to_string();
    let out = s.ws.dr_env(
        &s.cfg,
        &["--env-file", &env_file, "backup", "--physical"],
        &[("DR_REPOSITORY_ENDPOINT", endpoint.as_str())],
    );
    // The WAL the server archived stays; the base backup's objects go.
    assert_cut_cleanly(&weed, &proxy, &out, "base.tar.zst.age", "base.tar");
}
