//! `dr copy` against two in-memory stores: what is copied (objects, signature, manifest
//! last), what is skipped, what is refused, and a copy interrupted mid-object.

use std::sync::Arc;

use bytes::Bytes;
use dr_catalog::{keys, BackupId, Manifest, ObjectRecord, ObjectRole, MANIFEST_FORMAT};
use dr_core::copy::{self, CopyOptions};
use dr_core::trust::{signature_key, Signing};
use dr_core::{Context, Kind};
use dr_store::{MemoryStore, ObjectStore};

const RECIPIENT: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

fn config() -> dr_config::Config {
    dr_config::Config::from_toml_str(
        &format!(
            r#"
[repository]
url = "file:///nonexistent/dr-copy-test"
[encryption]
recipients = ["{RECIPIENT}"]
[[targets]]
name = "app"
url = "postgres://u@127.0.0.1:1/app"
"#
        ),
        None,
    )
    .expect("config")
}

fn sha(b: &[u8]) -> String {
    dr_stream::sha256_hex(b)
}

/// A backup of `app` with a small details object and a `big`-byte data object.
async fn backup(store: &MemoryStore, signing: &Signing, id: &str, big: usize) -> Manifest {
    let id: BackupId = id.parse().expect("id");
    let small = b"details".to_vec();
    let data: Vec<u8> = (0..big).map(|i| (i % 251) as u8).collect();
    let rec = |role, name: &str, body: &[u8]| ObjectRecord {
        role,
        key: keys::object("app", &id, name),
        bytes: body.len() as u64,
        sha256: sha(body),
        raw_bytes: body.len() as u64,
        part_bytes: None,
        restore_step: None,
        chunks: Vec::new(),
    };
    let objects = vec![
        rec(ObjectRole::Dump, keys::DUMP, &data),
        rec(ObjectRole::Details, keys::DETAILS, &small),
    ];
    store
        .put(&objects[0].key, Bytes::from(data))
        .await
        .expect("put");
    store
        .put(&objects[1].key, Bytes::from(small))
        .await
        .expect("put");
    let m = Manifest {
        format: MANIFEST_FORMAT,
        id,
        target: "app".into(),
        started_at: id.time(),
        finished_at: id.time(),
        server_version: "17.2".into(),
        server_major: 17,
        pg_dump_version: "pg_dump (PostgreSQL) 17.2".into(),
        dr_version: "0.1.0".into(),
        database_bytes: 1,
        compression: "zstd".into(),
        encryption: "age".into(),
        recipients: vec![RECIPIENT.into()],
        objects,
        kind: dr_catalog::BackupKind::Logical,
        physical: None,
    };
    let json = serde_json::to_vec_pretty(&m).expect("json");
    dr_core::trust::put_signed(store, signing, &keys::manifest("app", &id), json)
        .await
        .expect("manifest");
    m
}

fn contexts(signing: &Signing) -> (MemoryStore, MemoryStore, Context, Context) {
    let (primary, copy) = (MemoryStore::new(), MemoryStore::new());
    let from = Context::with_store(config(), Arc::new(primary.clone()), signing.clone());
    let to = Context::with_store(config(), Arc::new(copy.clone()), signing.clone());
    (primary, copy, from, to)
}

#[tokio::test]
async fn backups_are_copied_byte_for_byte_with_their_signature_and_skipped_once_there() {
    let signing = Signing::with_key(dr_stream::signing::SigningKey::generate().expect("key"));
    let (primary, copy_store, from, to) = contexts(&signing);
    // Bigger than one 5 MiB part: a multipart upload.
    let m1 = backup(&primary, &signing, "20261120T030000Z", (11 << 20) + 17).await;
    let m2 = backup(&primary, &signing, "20261121T030000Z", 1000).await;
    let report = copy::run(&from, &to, "off", &CopyOptions::default())
        .await
        .expect("copy");
    assert_eq!(report.copied.len(), 2);
    assert_eq!(report.present, 0);
    for m in [&m1, &m2] {
        let mk = keys::manifest("app", &m.id);
        for k in m
            .objects
            .iter()
            .map(|o| o.key.clone())
            .chain([mk.clone(), signature_key(&mk)])
        {
            assert_eq!(
                copy_store.get(&k).await.expect("copied"),
                primary.get(&k).await.expect("there"),
                "{k}"
            );
        }
    }
    // The copy lists as trusted backups with the same keys.
    let listed = dr_core::repo::list(&copy_store, None, &signing)
        .await
        .expect("list");
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|e| e.trust.is_trusted()));
    let again = copy::run(&from, &to, "off", &CopyOptions::default())
        .await
        .expect("again");
    assert!(again.copied.is_empty());
    assert_eq!(again.present, 2);
}

#[tokio::test]
async fn an_untrusted_backup_is_refused_and_the_others_copied() {
    let signing = Signing::with_key(dr_stream::signing::SigningKey::generate().expect("key"));
    let stranger = Signing::with_key(dr_stream::signing::SigningKey::generate().expect("key"));
    let (primary, copy_store, from, to) = contexts(&signing);
    backup(&primary, &signing, "20261120T030000Z", 100).await;
    let forged = backup(&primary, &stranger, "20261121T030000Z", 100).await;
    let report = copy::run(&from, &to, "off", &CopyOptions::default())
        .await
        .expect("copy");
    assert_eq!(report.copied.len(), 1);
    assert_eq!(report.refused.len(), 1);
    let e = copy::refused_error(&report).expect("an error");
    assert_eq!(e.kind, Kind::Integrity);
    assert!(copy_store
        .head(&keys::manifest("app", &forged.id))
        .await
        .expect("head")
        .is_none());
}

#[tokio::test]
async fn a_copy_interrupted_mid_object_leaves_no_manifest_and_the_next_run_redoes_it() {
    let signing = Signing::with_key(dr_stream::signing::SigningKey::generate().expect("key"));
    let (primary, copy_store, from, to) = contexts(&signing);
    let m = backup(&primary, &signing, "20261120T030000Z", (12 << 20) + 1).await;
    copy_store.fail("put_part", "app/");
    let e = copy::run(&from, &to, "off", &CopyOptions::default())
        .await
        .expect_err("interrupted");
    assert!(e.to_string().contains("20261120T030000Z"), "{e}");
    assert!(e.hint.is_some(), "{e}");
    let mk = keys::manifest("app", &m.id);
    assert!(copy_store.head(&mk).await.expect("head").is_none());
    assert!(copy_store
        .head(&signature_key(&mk))
        .await
        .expect("head")
        .is_none());
    assert!(
        copy_store
            .list_multipart("")
            .await
            .expect("uploads")
            .is_empty(),
        "the upload was aborted"
    );
    copy_store.heal();
    // Failing at the very end (CompleteMultipartUpload) too: the upload is found and aborted.
    copy_store.fail("complete", "app/");
    copy::run(&from, &to, "off", &CopyOptions::default())
        .await
        .expect_err("interrupted at complete");
    assert!(copy_store.head(&mk).await.expect("head").is_none());
    assert!(copy_store
        .list_multipart("")
        .await
        .expect("uploads")
        .is_empty());
    copy_store.heal();
    let report = copy::run(&from, &to, "off", &CopyOptions::default())
        .await
        .expect("resumed");
    assert_eq!(report.copied.len(), 1);
    assert!(copy_store.head(&mk).await.expect("head").is_some());
}

#[tokio::test]
async fn an_object_that_is_not_what_the_manifest_says_is_not_copied() {
    let signing = Signing::with_key(dr_stream::signing::SigningKey::generate().expect("key"));
    let (primary, copy_store, from, to) = contexts(&signing);
    let m = backup(&primary, &signing, "20261120T030000Z", (6 << 20) + 3).await;
    let mut changed = primary.get(&m.objects[0].key).await.expect("get").to_vec();
    changed[7] ^= 1;
    primary
        .put(&m.objects[0].key, Bytes::from(changed))
        .await
        .expect("put");
    let e = copy::run(&from, &to, "off", &CopyOptions::default())
        .await
        .expect_err("mismatch");
    assert_eq!(e.kind, Kind::Integrity, "{e}");
    assert!(e.to_string().contains("SHA-256"), "{e}");
    assert!(copy_store
        .head(&keys::manifest("app", &m.id))
        .await
        .expect("head")
        .is_none());
    assert!(copy_store
        .list_multipart("")
        .await
        .expect("uploads")
        .is_empty());
}

/// `[copies.object_lock]`: the copy's store is wrapped like the primary's, so every object
/// dr copy writes there (multipart or not, the manifest and its signature) carries the copy's
/// own retention on the write itself.
#[tokio::test]
async fn the_copys_own_object_lock_is_set_on_every_object_it_writes() {
    let signing = Signing::with_key(dr_stream::signing::SigningKey::generate().expect("key"));
    let primary = MemoryStore::new();
    let lock = dr_store::ObjectLock {
        mode: dr_store::LockMode::Governance,
        days: 7,
    };
    let bucket = MemoryStore::object_lock().with_location(dr_store::Location::S3 {
        bucket: "copy".into(),
        prefix: String::new(),
        endpoint: None,
        region: None,
        path_style: false,
        object_lock: Some(lock),
        max_parts: 10_000,
    });
    let dest = dr_core::immutable::LockingStore::new(Arc::new(bucket.clone()), lock);
    let from = Context::with_store(config(), Arc::new(primary.clone()), signing.clone());
    let to = Context::with_store(config(), Arc::new(dest), signing.clone());
    let id = BackupId::from_time(chrono::Utc::now() - chrono::Duration::hours(1));
    let m = backup(&primary, &signing, &id.to_string(), (6 << 20) + 5).await;
    copy::run(&from, &to, "off", &CopyOptions::default())
        .await
        .expect("copy");
    let (run_lock, versions): (Vec<_>, Vec<_>) = bucket
        .list_versions("")
        .await
        .expect("versions")
        .into_iter()
        .partition(|v| v.key.starts_with("locks/"));
    // The copy's run lock is never locked (it is deleted when the copy ends): none is left.
    assert!(
        run_lock.iter().all(|v| !v.is_latest || v.delete_marker),
        "{run_lock:?}"
    );
    assert_eq!(versions.len(), m.objects.len() + 2, "{versions:?}");
    for v in versions {
        let r = bucket
            .version_retention(&v.key, &v.version_id)
            .await
            .expect("retention")
            .unwrap_or_else(|| panic!("{} is not locked", v.key));
        assert_eq!(r.mode, dr_store::LockMode::Governance, "{}", v.key);
        assert_eq!(r.until, id.time() + chrono::Duration::days(7), "{}", v.key);
    }
}
