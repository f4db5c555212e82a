//! `dr prune` of a WAL archive against the in-memory store (docs/design/PITR.md §7): the WAL
//! no remaining physical base needs goes, records before data; a dry run, a target without
//! a retained base and a locked WAL object delete nothing of what they protect.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use dr_catalog::wal::{join, keys as wal_keys, WalFile, WalKind, WalRecord, RECORD_FORMAT};
use dr_catalog::{
    keys, BackupId, BackupKind, Manifest, ObjectRecord, ObjectRole, Physical,
    MANIFEST_FORMAT_PHYSICAL,
};
use dr_core::trust::Signing;
use dr_core::Context;
use dr_store::{LockMode, MemoryStore, ObjectStore, Retention};

const RECIPIENT: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";
const NONCE: &str = "00112233aabbccdd";
/// The older base starts in segment 3, the newer one in segment 8.
const OLDER: &str = "20261120T020000Z";
const NEWER: &str = "20261121T020000Z";
const NOW: &str = "20261121T120000Z";

fn context(store: &MemoryStore, signing: Signing) -> Context {
    context_with(store, signing, "")
}

/// `extra`: more keys of target `app`.
fn context_with(store: &MemoryStore, signing: Signing, extra: &str) -> Context {
    let config = dr_config::Config::from_toml_str(
        &format!(
            r#"
[repository]
url = "file:///nonexistent/dr-wal-prune-test"
[encryption]
recipients = ["{RECIPIENT}"]
[retention]
daily = 1
[[targets]]
name = "app"
url = "postgres://u@127.0.0.1:1/app"
{extra}
[targets.wal]
mode = "archive"
"#
        ),
        None,
    )
    .expect("config");
    Context::with_store(config, Arc::new(store.clone()), signing)
}

fn signing() -> Signing {
    Signing::with_key(dr_stream::signing::SigningKey::generate().expect("key"))
}

fn at(id: &str) -> DateTime<Utc> {
    id.parse::<BackupId>().expect("id").time()
}

fn segment(n: u32) -> String {
    format!("0000000100000000{n:08X}")
}

fn record_key(n: u32) -> String {
    wal_keys::record("app", segment(n).parse().expect("name"))
}

fn data_key(n: u32) -> String {
    wal_keys::data("app", segment(n).parse().expect("name"), NONCE)
}

/// Segment `n` of timeline 1, pushed at `pushed_at`: its data object, then its signed
/// record, as `dr wal push` writes them (locked with `retention`).
async fn push(
    store: &MemoryStore,
    s: &Signing,
    n: u32,
    pushed_at: DateTime<Utc>,
    retention: Option<&Retention>,
) {
    let name = segment(n);
    let file: WalFile = name.parse().expect("name");
    let record = WalRecord {
        format: RECORD_FORMAT,
        kind: WalKind::of(file),
        name: name.clone(),
        key: data_key(n),
        system_identifier: "7301234567890123456".into(),
        server_major: Some(15),
        timeline: 1,
        start_lsn: None,
        end_lsn: None,
        r#final: false,
        segment_bytes: Some(16 << 20),
        raw_sha256: "aa".repeat(32),
        raw_bytes: 16 << 20,
        sha256: "bb".repeat(32),
        bytes: 1000,
        recipients: vec![RECIPIENT.into()],
        switches: vec![],
        pushed_at: dr_core::time::format(pushed_at),
        pushed_by: "db1".into(),
        dr_version: "test".into(),
        source: "archive".into(),
    };
    let doc = record.document();
    let sig = s.sign(&doc).expect("sign");
    store.set_now(pushed_at);
    for (key, body) in [
        (data_key(n), Bytes::from(vec![0u8; 1000])),
        (record_key(n), Bytes::from(join(&doc, sig.as_deref()))),
    ] {
        match retention {
            Some(r) => store.put_locked(&key, body, r).await,
            None => store.put(&key, body).await,
        }
        .expect("put");
    }
}

/// A committed physical base backup `id` whose WAL starts in segment `start`.
async fn base(store: &MemoryStore, s: &Signing, id: &str, start: u32) {
    let id: BackupId = id.parse().expect("id");
    store.set_now(id.time());
    let object = |role, name| ObjectRecord {
        role,
        key: keys::object("app", &id, name),
        bytes: 4,
        sha256: "0".repeat(64),
        raw_bytes: 4,
        part_bytes: None,
        restore_step: None,
        chunks: Vec::new(),
    };
    let objects = vec![
        object(ObjectRole::BaseTar, keys::BASE_TAR),
        object(ObjectRole::BackupManifest, keys::BACKUP_MANIFEST),
    ];
    for o in &objects {
        store
            .put(&o.key, Bytes::from_static(b"tar!"))
            .await
            .expect("put");
    }
    let lsn = |offset: u32| format!("0/{:X}", (start << 24) + offset);
    let manifest = Manifest {
        format: MANIFEST_FORMAT_PHYSICAL,
        id,
        target: "app".into(),
        started_at: id.time(),
        finished_at: id.time(),
        server_version: "15.10".into(),
        server_major: 15,
        pg_dump_version: String::new(),
        dr_version: "test".into(),
        database_bytes: 4,
        compression: "zstd".into(),
        encryption: "age".into(),
        recipients: vec![RECIPIENT.into()],
        objects,
        kind: BackupKind::Physical,
        physical: Some(Physical {
            system_identifier: "7301234567890123456".into(),
            timeline: 1,
            start_lsn: lsn(0x28).parse().expect("lsn"),
            stop_lsn: lsn(0x100).parse().expect("lsn"),
            start_segment: segment(start),
            stop_segment: segment(start),
            segment_bytes: 16 << 20,
            checkpoint_lsn: lsn(0x60).parse().expect("lsn"),
            pg_basebackup_version: "pg_basebackup (PostgreSQL) 15.10".into(),
            backup_label: String::new(),
        }),
    };
    manifest.check().expect("a valid physical manifest");
    dr_core::trust::put_signed(
        store,
        s,
        &keys::manifest("app", &id),
        serde_json::to_vec(&manifest).expect("json"),
    )
    .await
    .expect("put manifest");
}

/// Segments 1..=12 pushed over the two days before [`NOW`] (the first before the older
/// base), and the two bases.
async fn repository(
    store: &MemoryStore,
    s: &Signing,
    retention: impl Fn(u32) -> Option<Retention>,
) {
    for n in 1..=12 {
        let pushed_at = at(OLDER) - Duration::hours(2) + Duration::hours(i64::from(n) * 2);
        push(store, s, n, pushed_at, retention(n).as_ref()).await;
    }
    base(store, s, OLDER, 3).await;
    base(store, s, NEWER, 8).await;
    store.set_now(at(NOW));
}

async fn wal_keys_left(store: &MemoryStore) -> Vec<String> {
    let mut k: Vec<String> = store
        .list(&wal_keys::root("app"))
        .await
        .expect("list")
        .into_iter()
        .map(|o| o.key)
        .collect();
    k.sort();
    k
}

fn expected(segments: impl IntoIterator<Item = u32>) -> Vec<String> {
    let mut k: Vec<String> = segments
        .into_iter()
        .flat_map(|n| [record_key(n), data_key(n)])
        .collect();
    k.sort();
    k
}

#[tokio::test]
async fn prune_deletes_the_wal_before_the_retained_base_records_first() {
    let store = MemoryStore::new();
    let s = signing();
    repository(&store, &s, |_| None).await;
    let ctx = context(&store, s);

    // Deleting the first data object fails: by then every record to go is gone, and no
    // data object has gone: records first.
    store.fail("delete", &data_key(1));
    let e = dr_core::prune::run(&ctx, Some("app"), false, false, at(NOW))
        .await
        .expect_err("a delete fails");
    assert!(e.to_string().contains(&data_key(1)), "{e}");
    let left = wal_keys_left(&store).await;
    for n in 1..=7 {
        assert!(!left.contains(&record_key(n)), "record {n} is gone first");
        assert!(left.contains(&data_key(n)), "data {n} is still there");
    }
    store.heal();

    // A prune a day later deletes the data objects without records: orphans a day old.
    let later = at(NOW) + Duration::days(1);
    store.set_now(later);
    let report = dr_core::prune::run(&ctx, Some("app"), false, false, later)
        .await
        .expect("prune");
    let wal = report[0].wal.as_ref().expect("wal report");
    assert_eq!((wal.files, wal.orphans), (0, 7), "{wal:?}");
    assert_eq!(wal_keys_left(&store).await, expected(8..=12));
    // The older base is gone, the newer one stays.
    let backups: Vec<String> = store
        .list("app/2026")
        .await
        .expect("list")
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert!(backups
        .iter()
        .all(|k| k.starts_with(&format!("app/{NEWER}/"))));
    assert!(!backups.is_empty());
}

#[tokio::test]
async fn prune_reports_ranges_and_a_dry_run_deletes_nothing() {
    let store = MemoryStore::new();
    let s = signing();
    repository(&store, &s, |_| None).await;
    let before = wal_keys_left(&store).await;
    let ctx = context(&store, s);
    let dry = dr_core::prune::run(&ctx, Some("app"), true, false, at(NOW))
        .await
        .expect("dry run");
    let wal = dry[0].wal.as_ref().expect("wal report");
    assert_eq!(wal.bases, [NEWER]);
    assert_eq!(
        wal.ranges
            .iter()
            .map(|r| r.text.as_str())
            .collect::<Vec<_>>(),
        ["wal app tl1 000000010000000000000001..000000010000000000000007 7 segments 6.8 KiB"]
    );
    assert_eq!((wal.files, wal.bytes), (7, 7000));
    let keys = wal.keys();
    assert_eq!(keys.len(), 14);
    assert_eq!(
        keys[..7],
        expected(1..=7)
            .into_iter()
            .filter(|k| k.ends_with(".rec"))
            .collect::<Vec<_>>()[..]
    );
    let json = serde_json::to_value(&dry[0]).expect("json");
    assert_eq!(json["wal"]["ranges"][0]["segments"], 7);
    assert_eq!(json["wal"]["ranges"][0]["first"], segment(1));
    assert_eq!(
        wal_keys_left(&store).await,
        before,
        "a dry run deletes nothing"
    );

    // Real: exactly the segments before the newer base's start segment go.
    let report = dr_core::prune::run(&ctx, Some("app"), false, false, at(NOW))
        .await
        .expect("prune");
    assert_eq!(report[0].wal.as_ref().map(|w| w.files), Some(7));
    assert_eq!(wal_keys_left(&store).await, expected(8..=12));
}

#[tokio::test]
async fn without_a_retained_physical_base_no_wal_is_deleted() {
    let store = MemoryStore::new();
    let s = signing();
    for n in 1..=5 {
        push(
            &store,
            &s,
            n,
            at(OLDER) + Duration::hours(i64::from(n)),
            None,
        )
        .await;
    }
    // A data object without a record, days old: still kept, nothing of the archive goes.
    store.set_now(at(OLDER));
    store
        .put(
            &wal_keys::data("app", segment(9).parse().expect("name"), "ffffffffffffffff"),
            Bytes::from_static(b"x"),
        )
        .await
        .expect("put");
    store.set_now(at(NOW));
    let before = wal_keys_left(&store).await;
    let ctx = context(&store, s);
    let report = dr_core::prune::run(&ctx, Some("app"), false, false, at(NOW))
        .await
        .expect("prune");
    assert_eq!(report.len(), 1, "a target with only WAL is looked at");
    let wal = report[0].wal.as_ref().expect("wal report");
    assert!(wal.bases.is_empty() && wal.keys().is_empty(), "{wal:?}");
    assert_eq!(wal_keys_left(&store).await, before);
}

#[tokio::test]
async fn a_locked_wal_file_is_kept_whole_and_reported() {
    let store = MemoryStore::object_lock();
    let s = signing();
    let until = at(NOW) + Duration::days(10);
    repository(&store, &s, |n| {
        (n == 4).then_some(Retention {
            mode: LockMode::Governance,
            until,
        })
    })
    .await;
    let ctx = context(&store, s);
    let report = dr_core::prune::run(&ctx, Some("app"), false, false, at(NOW))
        .await
        .expect("a lock is no error");
    let wal = report[0].wal.as_ref().expect("wal report");
    let locked: Vec<&str> = wal.locked.iter().map(|l| l.key.as_str()).collect();
    assert_eq!(
        locked,
        [data_key(4), record_key(4)]
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
    );
    assert!(wal.locked.iter().all(|l| l.until == until));
    assert_eq!(
        wal.ranges.iter().map(|r| r.segments).collect::<Vec<_>>(),
        [3, 3]
    );
    let mut kept = expected(8..=12);
    kept.extend(expected([4]));
    kept.sort();
    assert_eq!(wal_keys_left(&store).await, kept);
    // Every version of what went is gone, not hidden by a delete marker.
    let versions = store
        .list_versions(&wal_keys::root("app"))
        .await
        .expect("versions");
    assert!(
        versions.iter().all(|v| kept.contains(&v.key)),
        "{versions:?}"
    );
}

#[tokio::test]
async fn prune_of_a_server_target_prunes_its_own_wal_too() {
    // `databases = "all"`: its databases are targets of their own, its physical bases and
    // WAL are the server's.
    let store = MemoryStore::new();
    let s = signing();
    repository(&store, &s, |_| None).await;
    let ctx = context_with(&store, s, "databases = \"all\"");
    let report = dr_core::prune::run(&ctx, Some("app"), false, false, at(NOW))
        .await
        .expect("prune");
    let own = report
        .iter()
        .find(|r| r.target == "app")
        .expect("the server's own");
    assert_eq!(own.wal.as_ref().map(|w| w.files), Some(7));
    assert_eq!(wal_keys_left(&store).await, expected(8..=12));
}
