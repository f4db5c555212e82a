//! The engine against the in-memory store (`dr_store::MemoryStore`): the run lock, what a
//! backup does before it needs PostgreSQL, and prune's decisions on a repository with
//! damaged, unsigned, uncommitted and Object-Locked backups. No Postgres, no S3, no disk.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use dr_catalog::{keys, BackupId, Manifest, ObjectRecord, ObjectRole, MANIFEST_FORMAT};
use dr_core::lock::{LockBody, RunLock};
use dr_core::trust::{signature_key, Signing};
use dr_core::{Context, Kind};
use dr_store::{LockMode, MemoryStore, ObjectStore, Retention};
use tokio_util::sync::CancellationToken;

const RECIPIENT: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

fn config(extra: &str) -> dr_config::Config {
    dr_config::Config::from_toml_str(
        &format!(
            r#"
[repository]
url = "file:///nonexistent/dr-engine-test"
[encryption]
recipients = ["{RECIPIENT}"]
[[targets]]
name = "app"
url = "postgres://u@127.0.0.1:1/app"
{extra}
"#
        ),
        None,
    )
    .expect("config")
}

fn signing() -> Signing {
    Signing::with_key(dr_stream::signing::SigningKey::generate().expect("key"))
}

fn context(store: &MemoryStore, extra: &str, signing: Signing) -> Context {
    Context::with_store(config(extra), Arc::new(store.clone()), signing)
}

fn id(s: &str) -> BackupId {
    s.parse().expect("id")
}

fn at(s: &str) -> DateTime<Utc> {
    id(s).time()
}

async fn keys_of(store: &MemoryStore, prefix: &str) -> Vec<String> {
    store
        .list(prefix)
        .await
        .expect("list")
        .into_iter()
        .map(|o| o.key)
        .collect()
}

// ---------------------------------------------------------------- run lock

fn arc(store: &MemoryStore) -> Arc<dyn ObjectStore> {
    Arc::new(store.clone())
}

async fn take(store: &MemoryStore, ttl: Duration, wait: Duration) -> dr_core::Result<RunLock> {
    RunLock::acquire(
        arc(store),
        "app",
        "backup",
        ttl,
        wait,
        false,
        &CancellationToken::new(),
    )
    .await
}

async fn lock_body(store: &MemoryStore) -> Option<LockBody> {
    match store.get(&keys::lock("app")).await {
        Ok(b) => Some(serde_json::from_slice(&b).expect("lock JSON")),
        Err(e) if e.is_not_found() => None,
        Err(e) => panic!("reading the lock: {e}"),
    }
}

async fn put_lock(store: &MemoryStore, b: &LockBody) {
    let json = serde_json::to_vec(b).expect("json");
    store
        .put(&keys::lock("app"), Bytes::from(json))
        .await
        .expect("put lock");
}

/// A lock of a run on another host (not provably gone), expiring `expires_in` from now.
fn foreign(expires_in: chrono::Duration) -> LockBody {
    LockBody {
        target: "app".into(),
        holder: "elsewhere pid 7".into(),
        operation: "backup".into(),
        acquired_at: Utc::now() - chrono::Duration::minutes(5),
        expires_at: Utc::now() + expires_in,
        token: "theirs".into(),
        process: None,
    }
}

#[tokio::test]
async fn run_lock_is_exclusive_and_released() {
    let store = MemoryStore::new();
    let lock = take(&store, Duration::from_secs(60), Duration::ZERO)
        .await
        .expect("first");
    let body = lock_body(&store).await.expect("the lock object exists");
    assert_eq!(
        (body.target.as_str(), body.operation.as_str()),
        ("app", "backup")
    );
    assert!(body.expires_at > Utc::now() + chrono::Duration::seconds(50));
    let e = take(&store, Duration::from_secs(60), Duration::ZERO)
        .await
        .err()
        .expect("a second holder is refused");
    assert_eq!(e.kind, Kind::Locked);
    assert!(e.to_string().contains(&body.holder), "{e}");
    lock.check().await.expect("still ours");
    lock.release().await;
    assert!(lock_body(&store).await.is_none(), "released");
    take(&store, Duration::from_secs(60), Duration::ZERO)
        .await
        .expect("free again")
        .release()
        .await;
    assert!(
        store.list("").await.expect("list").is_empty(),
        "nothing left behind"
    );
}

#[tokio::test]
async fn run_lock_refresh_pushes_the_expiry_on() {
    let store = MemoryStore::new();
    // ttl 3 s: refreshed every second.
    let lock = take(&store, Duration::from_secs(3), Duration::ZERO)
        .await
        .expect("take");
    let first = lock_body(&store).await.expect("held").expires_at;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let later = lock_body(&store).await.expect("held");
    assert!(later.expires_at > first, "{} > {first}", later.expires_at);
    assert!(later.expires_at > Utc::now(), "never lapses while held");
    lock.check().await.expect("ours");
    lock.release().await;
}

#[tokio::test]
async fn an_expired_run_lock_is_taken_over_and_its_holder_cannot_commit() {
    let store = MemoryStore::new();
    let old = take(&store, Duration::from_secs(60), Duration::ZERO)
        .await
        .expect("old run");
    // The old run stalls: its lock lapses (as if its refresh stopped an hour ago).
    let mut stalled = lock_body(&store).await.expect("held");
    stalled.expires_at = Utc::now() - chrono::Duration::hours(1);
    put_lock(&store, &stalled).await;

    let new = take(&store, Duration::from_secs(60), Duration::ZERO)
        .await
        .expect("an expired lock is taken over");
    let e = old.check().await.expect_err("taken over");
    assert_eq!(e.kind, Kind::Locked);
    assert!(e.to_string().contains("taken over"), "{e}");
    old.release().await;
    assert!(
        lock_body(&store).await.is_some(),
        "the old run leaves the new lock alone"
    );
    new.check().await.expect("the new run holds it");
    new.release().await;
    assert!(lock_body(&store).await.is_none());
}

#[tokio::test]
async fn an_unreadable_run_lock_is_taken_over_but_an_unreachable_one_is_not() {
    let store = MemoryStore::new();
    store
        .put(&keys::lock("app"), Bytes::from_static(b"{ truncated"))
        .await
        .expect("put");
    take(&store, Duration::from_secs(60), Duration::ZERO)
        .await
        .expect("garbage is a dead holder's")
        .release()
        .await;

    // The store cannot say who holds it: an error, never a blind takeover.
    put_lock(&store, &foreign(chrono::Duration::hours(-1))).await;
    store.fail("get", "locks/");
    let e = take(&store, Duration::from_secs(60), Duration::ZERO)
        .await
        .err()
        .expect("the lock cannot be read");
    assert_ne!(e.kind, Kind::Locked, "{e}");
    store.heal();
    assert_eq!(
        lock_body(&store).await.map(|b| b.token).as_deref(),
        Some("theirs")
    );
}

#[tokio::test]
async fn a_run_lock_is_waited_for_until_it_expires_or_is_released() {
    let store = MemoryStore::new();
    // Expires in 1.5 s, nobody refreshes it: a run that may wait 10 s gets it after expiry.
    put_lock(&store, &foreign(chrono::Duration::milliseconds(1500))).await;
    let t = Instant::now();
    take(&store, Duration::from_secs(60), Duration::from_secs(10))
        .await
        .expect("taken after expiry")
        .release()
        .await;
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_secs(6),
        "{waited:?}"
    );

    // Released by its holder meanwhile: taken at once after.
    put_lock(&store, &foreign(chrono::Duration::hours(1))).await;
    let releaser = {
        let store = store.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            store.delete(&keys::lock("app")).await.expect("release");
        })
    };
    take(&store, Duration::from_secs(60), Duration::from_secs(10))
        .await
        .expect("taken after release")
        .release()
        .await;
    releaser.await.expect("releaser");

    // A live lock outlasting `wait`: Locked, and the lock is untouched.
    put_lock(&store, &foreign(chrono::Duration::hours(1))).await;
    let e = take(&store, Duration::from_secs(60), Duration::from_secs(1))
        .await
        .err()
        .expect("still held");
    assert_eq!(e.kind, Kind::Locked);
    assert_eq!(
        lock_body(&store).await.map(|b| b.token).as_deref(),
        Some("theirs")
    );
}

// ---------------------------------------------------------------- backup

// A backup's plan (id, part size, sections) is made only after it has connected to
// PostgreSQL; what it does before that is tested here.

#[tokio::test]
async fn a_backup_without_a_signing_key_touches_nothing() {
    let store = MemoryStore::new();
    let ctx = context(&store, "", Signing::default());
    let target = ctx.config.targets[0].clone();
    let e = dr_core::backup::run(&ctx, &target)
        .await
        .expect_err("no key");
    assert!(e.to_string().contains("sign"), "{e}");
    assert!(store.list("").await.expect("list").is_empty());
}

#[tokio::test]
async fn a_backup_of_a_locked_target_writes_nothing() {
    let store = MemoryStore::new();
    put_lock(&store, &foreign(chrono::Duration::hours(1))).await;
    let ctx = context(&store, "", signing());
    let target = ctx.config.targets[0].clone();
    let e = dr_core::backup::run(&ctx, &target)
        .await
        .expect_err("locked");
    assert_eq!(e.kind, Kind::Locked, "{e}");
    assert_eq!(keys_of(&store, "").await, [keys::lock("app")]);
    assert_eq!(
        lock_body(&store).await.map(|b| b.token).as_deref(),
        Some("theirs")
    );
}

#[tokio::test]
async fn a_backup_that_cannot_reach_postgres_releases_its_lock_and_commits_nothing() {
    let store = MemoryStore::new();
    let ctx = context(&store, "", signing());
    let target = ctx.config.targets[0].clone();
    let e = dr_core::backup::run(&ctx, &target)
        .await
        .expect_err("no server");
    assert!(e.to_string().contains("app"), "{e}");
    assert!(
        store.list("").await.expect("list").is_empty(),
        "no lock, no objects"
    );
    assert!(store.list_multipart("").await.expect("uploads").is_empty());
}

// ---------------------------------------------------------------- prune

/// A format-1 manifest of backup `id` of `app` with one dump object.
fn manifest(id_text: &str) -> Manifest {
    let id = id(id_text);
    Manifest {
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
        objects: vec![ObjectRecord {
            role: ObjectRole::Dump,
            key: keys::object("app", &id, keys::DUMP),
            bytes: 4,
            sha256: "0".repeat(64),
            raw_bytes: 4,
            part_bytes: None,
            restore_step: None,
            chunks: Vec::new(),
        }],
        kind: dr_catalog::BackupKind::Logical,
        physical: None,
    }
}

/// What a backup `id` leaves in the repository, written at the id's time (`retention`:
/// Object Lock on every object). `manifest`: the manifest's bytes, `None` for a backup that
/// never committed. Signed by `signing` when given.
async fn backup(
    store: &MemoryStore,
    id_text: &str,
    manifest: Option<Vec<u8>>,
    signing: Option<&Signing>,
    retention: Option<Retention>,
) {
    store.set_now(at(id_text));
    let id = id(id_text);
    let put = |key: String, body: Vec<u8>| async move {
        match &retention {
            Some(r) => store.put_locked(&key, Bytes::from(body), r).await,
            None => store.put(&key, Bytes::from(body)).await,
        }
        .expect("put")
    };
    put(keys::object("app", &id, keys::DUMP), b"dump".to_vec()).await;
    let Some(m) = manifest else { return };
    let key = keys::manifest("app", &id);
    if let Some(sig) = signing.and_then(|s| s.sign(&m).expect("sign")) {
        put(signature_key(&key), sig.into_bytes()).await;
    }
    put(key, m).await;
}

fn good(id_text: &str) -> Option<Vec<u8>> {
    Some(serde_json::to_vec(&manifest(id_text)).expect("json"))
}

const NOW: &str = "20261122T030000Z";
const RETENTION: &str = "[retention]\ndaily = 2\n";

/// A repository of target `app` with a bit of everything; returns the signing host.
async fn mixed_repository(store: &MemoryStore) -> Signing {
    let s = signing();
    for ok in [
        "20261122T020000Z",
        "20261121T020000Z",
        "20261120T020000Z",
        "20261119T020000Z",
    ] {
        backup(store, ok, good(ok), Some(&s), None).await;
    }
    // Damaged: a truncated manifest; one that describes another backup.
    backup(
        store,
        "20261118T020000Z",
        Some(b"{\"format\":".to_vec()),
        Some(&s),
        None,
    )
    .await;
    let elsewhere = serde_json::to_vec(&manifest("20261101T020000Z")).expect("json");
    backup(store, "20261117T020000Z", Some(elsewhere), Some(&s), None).await;
    // Never committed: old (a leftover) and recent (may be running).
    backup(store, "20261116T020000Z", None, None, None).await;
    backup(store, "20261122T023000Z", None, None, None).await;
    // Unsigned: untrusted, never counted by retention, never deleted by it.
    backup(
        store,
        "20261115T020000Z",
        good("20261115T020000Z"),
        None,
        None,
    )
    .await;
    // A crashed run's upload, two days old.
    store.set_now(at("20261120T020000Z"));
    let mut upload = store
        .start_multipart("app/20261120T020000Z/stale.zst.age")
        .await
        .expect("start");
    upload
        .put_part(Bytes::from_static(b"x"))
        .await
        .expect("part");
    drop(upload);
    store.set_now(at(NOW));
    s
}

fn ids(list: impl IntoIterator<Item = BackupId>) -> Vec<String> {
    list.into_iter().map(|i| i.to_string()).collect()
}

#[tokio::test]
async fn prune_dry_run_plans_and_deletes_nothing() {
    let store = MemoryStore::new();
    let s = mixed_repository(&store).await;
    let before = keys_of(&store, "").await;
    let ctx = context(&store, RETENTION, s);
    let report = dr_core::prune::run(&ctx, Some("app"), true, false, at(NOW))
        .await
        .expect("dry run");
    assert_eq!(report.len(), 1);
    let r = &report[0];
    let kept = ids(r.decisions.iter().filter(|d| d.keep).map(|d| d.id));
    let gone = ids(r.decisions.iter().filter(|d| !d.keep).map(|d| d.id));
    assert_eq!(kept, ["20261122T020000Z", "20261121T020000Z"]);
    assert_eq!(gone, ["20261120T020000Z", "20261119T020000Z"]);
    assert_eq!(
        ids(r.damaged.iter().map(|d| d.id)),
        ["20261118T020000Z", "20261117T020000Z"]
    );
    assert!(r.damaged.iter().all(|d| d.keep), "kept without --force");
    assert!(
        r.damaged[0].reason.contains("JSON"),
        "{}",
        r.damaged[0].reason
    );
    assert_eq!(r.leftovers, ["app/20261116T020000Z/dump.zst.age"]);
    assert_eq!(r.stale_uploads, ["app/20261120T020000Z/stale.zst.age"]);
    assert!(r.locked.is_empty());
    assert_eq!(
        keys_of(&store, "").await,
        before,
        "a dry run deletes nothing"
    );
    assert_eq!(store.list_multipart("").await.expect("uploads").len(), 1);
}

#[tokio::test]
async fn prune_deletes_what_it_planned_and_keeps_the_rest() {
    let store = MemoryStore::new();
    let s = mixed_repository(&store).await;
    let ctx = context(&store, RETENTION, s);
    dr_core::prune::run(&ctx, Some("app"), false, false, at(NOW))
        .await
        .expect("prune");
    let left = keys_of(&store, "").await;
    let prefixes: std::collections::BTreeSet<&str> = left
        .iter()
        .map(|k| &k[..k.rfind('/').expect("/")])
        .collect();
    assert_eq!(
        prefixes.into_iter().collect::<Vec<_>>(),
        [
            "app/20261115T020000Z", // unsigned: not retention's to delete
            "app/20261117T020000Z", // damaged
            "app/20261118T020000Z", // damaged
            "app/20261121T020000Z",
            "app/20261122T020000Z",
            "app/20261122T023000Z", // uncommitted, within the grace period
        ]
    );
    assert!(
        left.contains(&signature_key(&keys::manifest(
            "app",
            &id("20261122T020000Z")
        ))),
        "a kept backup keeps its signature"
    );
    assert!(
        store.list_multipart("").await.expect("uploads").is_empty(),
        "aborted"
    );
    assert!(
        store
            .head(&keys::lock("app"))
            .await
            .expect("head")
            .is_none(),
        "lock released"
    );

    // --force: the damaged backups go too, whole.
    dr_core::prune::run(&ctx, Some("app"), false, true, at(NOW))
        .await
        .expect("prune --force");
    assert!(keys_of(&store, "app/20261117T020000Z/").await.is_empty());
    assert!(keys_of(&store, "app/20261118T020000Z/").await.is_empty());
    assert_eq!(keys_of(&store, "app/20261122T020000Z/").await.len(), 3);
}

#[tokio::test]
async fn prune_acts_on_nothing_when_a_listing_fails_or_the_target_is_locked() {
    let store = MemoryStore::new();
    let s = mixed_repository(&store).await;
    let before = keys_of(&store, "").await;
    let ctx = context(&store, RETENTION, s);
    store.fail("list", "");
    dr_core::prune::run(&ctx, Some("app"), false, true, at(NOW))
        .await
        .expect_err("the listing failed");
    store.heal();
    assert_eq!(keys_of(&store, "").await, before);

    put_lock(&store, &foreign(chrono::Duration::hours(1))).await;
    let e = dr_core::prune::run(&ctx, Some("app"), false, true, at(NOW))
        .await
        .expect_err("a backup is running");
    assert_eq!(e.kind, Kind::Locked, "{e}");
    store.delete(&keys::lock("app")).await.expect("delete");
    assert_eq!(keys_of(&store, "").await, before);
}

#[tokio::test]
async fn prune_keeps_object_locked_backups_whole_and_purges_expired_ones() {
    let store = MemoryStore::object_lock();
    let s = signing();
    let lock = |until: &str| {
        Some(Retention {
            mode: LockMode::Compliance,
            until: at(until),
        })
    };
    for (b, until) in [
        ("20261122T020000Z", "20261201T000000Z"),
        ("20261121T020000Z", "20261201T000000Z"),
        // Retention would delete these two: one still locked, one no longer.
        ("20261120T020000Z", "20261125T000000Z"),
        ("20261119T020000Z", "20261121T000000Z"),
    ] {
        backup(&store, b, good(b), Some(&s), lock(until)).await;
    }
    // A damaged backup still locked (deleted only with --force), a leftover still locked,
    // a leftover whose lock passed.
    backup(
        &store,
        "20261118T020000Z",
        Some(b"{".to_vec()),
        Some(&s),
        lock("20261124T000000Z"),
    )
    .await;
    backup(
        &store,
        "20261117T020000Z",
        None,
        None,
        lock("20261124T000000Z"),
    )
    .await;
    backup(
        &store,
        "20261116T020000Z",
        None,
        None,
        lock("20261118T000000Z"),
    )
    .await;
    // A backup deleted by a plain DELETE (an attacker's): its manifest is behind a marker.
    backup(
        &store,
        "20261114T020000Z",
        good("20261114T020000Z"),
        Some(&s),
        lock("20261118T000000Z"),
    )
    .await;
    store.set_now(at(NOW));
    store
        .delete(&keys::manifest("app", &id("20261114T020000Z")))
        .await
        .expect("delete marker");

    let ctx = context(&store, RETENTION, s);
    let dry = dr_core::prune::run(&ctx, Some("app"), true, true, at(NOW))
        .await
        .expect("dry run");
    let r = &dry[0];
    let locked: Vec<(String, &str, DateTime<Utc>)> = r
        .locked
        .iter()
        .map(|l| (l.id.to_string(), l.what, l.until))
        .collect();
    assert_eq!(
        locked,
        [
            ("20261120T020000Z".into(), "backup", at("20261125T000000Z")),
            ("20261118T020000Z".into(), "damaged", at("20261124T000000Z")),
            (
                "20261117T020000Z".into(),
                "leftover",
                at("20261124T000000Z")
            ),
        ]
    );
    let gone = ids(r.decisions.iter().filter(|d| !d.keep).map(|d| d.id));
    assert_eq!(gone, ["20261119T020000Z"], "a locked backup is kept");
    assert_eq!(
        r.leftovers,
        ["app/20261116T020000Z/dump.zst.age"],
        "not the undeletable one"
    );

    dr_core::prune::run(&ctx, Some("app"), false, true, at(NOW))
        .await
        .expect("prune");
    let versions = store.list_versions("app/").await.expect("versions");
    let prefixes: std::collections::BTreeSet<&str> = versions
        .iter()
        .map(|v| &v.key[..v.key.rfind('/').expect("/")])
        .collect();
    assert_eq!(
        prefixes.into_iter().collect::<Vec<_>>(),
        [
            "app/20261114T020000Z", // deleted, not purged: `dr undelete` can bring it back
            "app/20261117T020000Z",
            "app/20261118T020000Z",
            "app/20261120T020000Z",
            "app/20261121T020000Z",
            "app/20261122T020000Z",
        ],
        "every version of what was deleted is gone; what is locked is whole"
    );
    assert_eq!(keys_of(&store, "app/20261120T020000Z/").await.len(), 3);
}

/// `[repository.object_lock]`: the store dr-core opens is a `LockingStore` over a bucket
/// whose location carries the lock.
fn locking(inner: MemoryStore, days: u32) -> (MemoryStore, Arc<dyn ObjectStore>) {
    let lock = dr_store::ObjectLock {
        mode: LockMode::Compliance,
        days,
    };
    let inner = inner.with_location(dr_store::Location::S3 {
        bucket: "memory".into(),
        prefix: String::new(),
        endpoint: None,
        region: None,
        path_style: false,
        max_parts: 10_000,
        object_lock: Some(lock),
    });
    let store = dr_core::immutable::LockingStore::new(Arc::new(inner.clone()), lock);
    (inner, Arc::new(store))
}

#[tokio::test]
async fn object_lock_locks_backup_objects_only_and_prune_extends_the_kept() {
    // LockingStore dates locks by the system clock: so does this test.
    let (bucket, store) = locking(MemoryStore::object_lock(), 14);
    let s = signing();
    let now = Utc::now();
    let ago = |hours: i64| BackupId::from_time(now - chrono::Duration::hours(hours));
    let (recent, yesterday, old) = (ago(1), ago(25), ago(21 * 24));
    for i in [recent, yesterday, old] {
        let m = serde_json::to_vec(&manifest(&i.to_string())).expect("json");
        store
            .put(
                &keys::object("app", &i, keys::DUMP),
                Bytes::from_static(b"dump"),
            )
            .await
            .expect("put dump");
        dr_core::trust::put_signed(store.as_ref(), &s, &keys::manifest("app", &i), m)
            .await
            .expect("put manifest");
    }
    let ctx = Context::with_store(config(RETENTION), Arc::clone(&store), s);
    // Every object of a backup is locked from the backup's start (at least 14 days from
    // now: an old backup written late is never locked for less); the run lock is not.
    let lock = RunLock::acquire_for(&ctx, "app", "backup")
        .await
        .expect("lock");
    for v in bucket.list_versions("").await.expect("versions") {
        let r = bucket
            .version_retention(&v.key, &v.version_id)
            .await
            .expect("retention");
        match keys::parse(&v.key) {
            Some((_, i, _)) => {
                let r = r.expect("locked");
                let days = chrono::Duration::days(14);
                assert_eq!(r.mode, LockMode::Compliance);
                assert!(r.until >= i.time() + days && r.until > now, "{}", v.key);
                if i != old {
                    assert_eq!(r.until, i.time() + days, "{}", v.key);
                }
            }
            None => assert_eq!(r, None, "{} stays deletable", v.key),
        }
    }
    lock.release().await;

    let report = dr_core::prune::run(&ctx, Some("app"), false, false, now)
        .await
        .expect("prune");
    let r = &report[0];
    // Retention lets the old backup go, but it is locked for 14 days yet: kept whole.
    assert_eq!(ids(r.locked.iter().map(|l| l.id)), ids([old]));
    assert_eq!(
        bucket
            .list_versions(&keys::backup_prefix("app", &old))
            .await
            .expect("versions")
            .len(),
        3
    );
    let policy = dr_core::prune::policy(&ctx).expect("policy");
    let kept: Vec<_> = r
        .decisions
        .iter()
        .filter(|d| d.keep && d.id != old)
        .collect();
    assert_eq!(ids(kept.iter().map(|d| d.id)), ids([recent, yesterday]));
    assert_eq!(
        ids(r.lock_extended.iter().map(|l| l.id)),
        ids([recent, yesterday])
    );
    for (l, d) in r.lock_extended.iter().zip(kept) {
        let days = chrono::Duration::days(14);
        let horizon = dr_core::prune::lock_horizon(&d.id, &d.tiers, &policy, days, now);
        assert_eq!((l.until, l.versions), (horizon, 3));
        for v in bucket
            .list_versions(&keys::backup_prefix("app", &l.id))
            .await
            .expect("versions")
        {
            let until = bucket
                .version_retention(&v.key, &v.version_id)
                .await
                .expect("retention")
                .map(|r| r.until);
            assert_eq!(until, Some(horizon), "{}", v.key);
        }
    }
    let again = dr_core::prune::run(&ctx, Some("app"), false, false, now)
        .await
        .expect("prune again");
    assert!(again[0].lock_extended.is_empty(), "already long enough");
}

#[tokio::test]
async fn object_lock_on_a_bucket_that_cannot_lock_writes_nothing() {
    let (bucket, store) = locking(MemoryStore::versioned(), 14);
    let e = store
        .put(
            &keys::object("app", &id(NOW), keys::DUMP),
            Bytes::from_static(b"dump"),
        )
        .await
        .expect_err("no Object Lock on the bucket");
    assert!(
        matches!(e, dr_store::StoreError::ObjectLockUnavailable { .. }),
        "{e}"
    );
    assert!(bucket.list_versions("").await.expect("versions").is_empty());
}
