//! End-to-end: transfers over a flaky network (issue 22), dr talking to SeaweedFS through a
//! [`Proxy`] that breaks connections on purpose. A restore whose every download is reset
//! once mid-body completes exactly (each resumed with a `Range`); a store that stays away past
//! the read deadline fails it cleanly (exit 3, the created database dropped); a backup whose
//! every upload is reset once mid-body completes; 503 SlowDown on a fifth of all requests is
//! absorbed by backup, list, restore and prune.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::Output;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::support::*;

const BUCKET: &str = "flaky";

struct Env {
    ws: Workspace,
    pg: Postgres,
    weed: SeaweedFs,
    cfg: PathBuf,
}

/// Three tables of random bytes (`random_tables`), a bucket, a config that talks to
/// SeaweedFS directly (runs through a proxy override the endpoint).
fn env() -> Env {
    let ws = Workspace::new();
    let pg = Postgres::start();
    pg.create_db("app");
    random_tables(&pg, "app", 3, 10_000);
    let weed = SeaweedFs::start();
    weed.create_bucket(BUCKET);
    let (identity, recipient) = ws.keygen();
    let cfg = ws.write(
        "dr.toml",
        &format!(
            "[repository]\nurl = \"s3://{BUCKET}/dr\"\nendpoint = \"{}\"\npath_style = true\n[encryption]\nrecipients = [\"{recipient}\"]\nidentity_file = \"{}\"\n[[targets]]\nname = \"app\"\nurl = \"{}\"\n",
            weed.endpoint(),
            identity.display(),
            pg.url("app")
        ),
    );
    Env { ws, pg, weed, cfg }
}

/// `tables` tables of `rows` rows of 1 KiB of random bytes each: nothing for zstd to take
/// away, so the stored objects are as big as the data (10,000 rows: ~10 MiB a table).
fn random_tables(pg: &Postgres, db: &str, tables: u32, rows: u32) {
    for i in 0..tables {
        pg.psql(
            db,
            &format!(
                "create table blob{i} (id int primary key, payload bytea);
                 insert into blob{i} select g, (select string_agg(decode(md5(random()::text || g || k), 'hex'), ''::bytea) from generate_series(1, 64) k) from generate_series(1, {rows}) g;"
            ),
        );
    }
}

impl Env {
    /// `dr ARGS` with the repository reached through `proxy`.
    fn dr_via(&self, proxy: &Proxy, args: &[&str], env: &[(&str, &str)]) -> Output {
        let endpoint = proxy.endpoint();
        let mut all = vec![("DR_REPOSITORY_ENDPOINT", endpoint.as_str())];
        all.extend_from_slice(env);
        self.ws.dr_env(&self.cfg, args, &all)
    }

    /// `dr restore --jobs 3` of the latest backup into a new database `copy` of `other`,
    /// through `proxy`: it must succeed.
    fn restore_via(&self, proxy: &Proxy, other: &Postgres) -> Output {
        let url = other.url("copy");
        let out = self.dr_via(
            proxy,
            &["restore", "--to", &url, "--jobs", "3", "--yes"],
            &[],
        );
        assert_success(&out);
        out
    }

    fn backup(&self) {
        assert_success(&self.ws.dr(&self.cfg, &["backup", "--jobs", "3"]));
    }

    fn db_exists(&self, pg: &Postgres, db: &str) -> bool {
        pg.psql(
            "postgres",
            &format!("select count(*) from pg_database where datname = '{db}'"),
        ) == "1"
    }

    /// The keys of the stored objects.
    fn objects(&self) -> Vec<String> {
        self.weed.object_keys(BUCKET)
    }
}

/// The first GET of each object key is reset halfway through its body; the rest pass.
fn reset_each_get_once() -> impl Fn(&RequestHead) -> Fault + Send + Sync + 'static {
    let seen = Mutex::new(HashSet::new());
    move |req: &RequestHead| {
        if !req.is_object_get() {
            return Fault::Pass;
        }
        let path = req.target.split('?').next().unwrap_or_default().to_string();
        let first = seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(path);
        if first {
            Fault::ResetResponse(Cut::Half)
        } else {
            Fault::Pass
        }
    }
}

fn count(c: &AtomicU64) -> u64 {
    ProxyStats::count(c)
}

#[test]
fn a_restore_whose_every_download_is_reset_once_mid_body_is_exact() {
    let e = env();
    e.backup();
    let objects = e.objects();
    let proxy = Proxy::start(e.weed.s3_port(), reset_each_get_once());
    let other = Postgres::start();
    let out = e.restore_via(&proxy, &other);
    assert_eq!(e.pg.row_counts("app"), other.row_counts("copy"));
    assert_eq!(e.pg.table_digests("app"), other.table_digests("copy"));
    let stats = proxy.stats();
    let resets = count(&stats.response_resets);
    // Every section and the small objects (the manifest, the details) were cut once.
    let faults = stats.faults();
    let sections: Vec<&String> = objects
        .iter()
        .filter(|k| k.contains("data") && k.ends_with(".zst.age"))
        .collect();
    assert!(
        sections.len() >= 5,
        "pre-data, 3 data, post-data: {objects:?}"
    );
    for key in &sections {
        let seen = |kind: &str| {
            faults
                .iter()
                .any(|f| f.starts_with(kind) && f.contains(key.as_str()))
        };
        assert!(seen("RESET GET"), "{key} cut once: {faults:?}");
        // A small object may lose its answer's head with the reset, and the SDK asks again
        // from the start; a data section's head arrived long before its middle.
        if key.contains("/data-") {
            assert!(seen("RANGE GET"), "{key} resumed with a Range: {faults:?}");
        }
    }
    assert!(
        faults
            .iter()
            .any(|f| f.contains("RESET GET") && f.contains("manifest.json")),
        "the manifest's read cut too: {faults:?}"
    );
    assert!(resets > sections.len() as u64, "{faults:?}");
    assert!(
        stderr(&out).contains("trying again"),
        "the resumptions are logged: {}",
        stderr(&out)
    );
}

#[test]
fn a_store_that_stays_away_past_the_read_deadline_fails_the_restore_cleanly() {
    let e = env();
    e.backup();
    // The data sections' first GET is cut halfway; every later one before its first byte.
    let proxy = Proxy::start(e.weed.s3_port(), |req: &RequestHead| {
        let data = req.target.contains("/data-") && req.is_object_get();
        match (data, req.header("range")) {
            (true, None) => Fault::ResetResponse(Cut::Half),
            (true, Some(_)) => Fault::ResetResponse(Cut::After(0)),
            (false, _) => Fault::Pass,
        }
    });
    let other = Postgres::start();
    let started = Instant::now();
    let out = e.dr_via(
        &proxy,
        &[
            "restore",
            "--to",
            &other.url("copy"),
            "--jobs",
            "3",
            "--yes",
        ],
        &[("DR_READ_RESUME_SECS", "4")],
    );
    assert_exit_code(&out, 3);
    let err = stderr(&out);
    eprintln!("{err}");
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "gave up at the deadline, not much later: {:?}",
        started.elapsed()
    );
    for said in [
        "data-",
        "broke off at byte",
        "could not be resumed",
        "attempts",
    ] {
        assert!(err.contains(said), "{said:?} in:\n{err}");
    }
    assert!(
        err.contains("hint:") && err.contains("DR_READ_RESUME_SECS"),
        "{err}"
    );
    assert!(
        !e.db_exists(&other, "copy"),
        "the created database is dropped:\n{err}"
    );
    assert!(
        count(&proxy.stats().ranged_gets) >= 1,
        "it did try to resume"
    );
}

#[test]
fn a_backup_whose_every_upload_is_reset_once_mid_body_completes() {
    let e = env();
    let seen = Mutex::new(HashSet::new());
    // Each PUT (a whole object or one part: the target names the part) reset once, halfway.
    let proxy = Proxy::start(e.weed.s3_port(), move |req: &RequestHead| {
        let first = seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(req.target.clone());
        if req.method == "PUT" && first {
            Fault::ResetRequest(Cut::Half)
        } else {
            Fault::Pass
        }
    });
    let out = e.dr_via(&proxy, &["backup", "--jobs", "3"], &[]);
    assert_success(&out);
    let stats = proxy.stats();
    let faults = stats.faults();
    assert!(
        faults.iter().any(|f| f.contains("partNumber=")),
        "parts of a multipart upload were cut: {faults:?}"
    );
    assert!(
        faults.iter().any(|f| f.contains("manifest.json")),
        "whole-object PUTs were cut: {faults:?}"
    );
    assert!(count(&stats.request_resets) >= 6, "{faults:?}");
    assert!(
        e.weed.open_uploads(BUCKET).is_empty(),
        "no upload left open"
    );
    // What was stored is exact: restored without the proxy.
    let other = Postgres::start();
    let out = e.ws.dr(
        &e.cfg,
        &[
            "restore",
            "--to",
            &other.url("copy"),
            "--jobs",
            "3",
            "--yes",
        ],
    );
    assert_success(&out);
    assert_eq!(e.pg.table_digests("app"), other.table_digests("copy"));
}

#[test]
fn slow_down_on_a_fifth_of_all_requests_is_absorbed_by_backup_list_restore_and_prune() {
    let e = env();
    // The first and every fifth request of each method is answered 503 SlowDown, never the
    // same request twice in a row: no operation depends on luck with the SDK's attempts.
    let methods: Arc<Mutex<HashMap<String, (u64, String)>>> = Arc::default();
    let seen = Arc::clone(&methods);
    let proxy = Proxy::start(e.weed.s3_port(), move |req: &RequestHead| {
        let this = format!("{} {}", req.method, req.target);
        let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
        let (n, last) = seen.entry(req.method.clone()).or_default();
        let turn = *n % 5 == 0 && *last != this;
        *n += 1;
        if turn {
            *last = this;
            Fault::SlowDown
        } else {
            Fault::Pass
        }
    });
    for _ in 0..2 {
        assert_success(&e.dr_via(&proxy, &["backup", "--jobs", "3"], &[]));
        // Backup ids have a one-second resolution.
        std::thread::sleep(Duration::from_millis(1100));
    }
    let out = e.dr_via(&proxy, &["list", "--json"], &[]);
    assert_success(&out);
    let listed: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("list json");
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");
    let other = Postgres::start();
    let _ = e.restore_via(&proxy, &other);
    assert_eq!(e.pg.table_digests("app"), other.table_digests("copy"));
    let text = std::fs::read_to_string(&e.cfg).expect("cfg") + "[retention]\ndaily = 1\n";
    std::fs::write(&e.cfg, text).expect("write cfg");
    assert_success(&e.dr_via(&proxy, &["prune"], &[]));
    let out = e.ws.dr(&e.cfg, &["list", "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("list json");
    assert_eq!(
        listed.as_array().map(Vec::len),
        Some(1),
        "pruned to one: {listed}"
    );
    // Each kind of request was refused (its first, by the rule) and absorbed.
    let refused = proxy.stats().faults();
    let methods = methods.lock().unwrap_or_else(PoisonError::into_inner);
    for method in ["GET", "PUT", "POST", "DELETE"] {
        assert!(
            methods.contains_key(method),
            "no {method} among {refused:?}"
        );
    }
    for method in methods.keys() {
        let kind = format!("503 {method} ");
        assert!(
            refused.iter().any(|f| f.starts_with(&kind)),
            "{kind}… among {refused:?}"
        );
    }
}
