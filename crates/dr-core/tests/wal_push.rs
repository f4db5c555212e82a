//! `dr wal push` against the in-memory store: what is written, idempotency, refusals, two
//! pushers at once, Object Lock. The WAL files are made here: a real page header (PostgreSQL
//! 17, 1 MiB segments, see dr-pg's `wal_header` fixtures) followed by chosen bytes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use dr_catalog::wal::{keys, split, WalFile, WalIdentity, WalKind};
use dr_core::trust::Signing;
use dr_core::wal::push::push;
use dr_core::{Context, Kind};
use dr_store::{LockMode, MemoryStore, ObjectStore};

/// `000000010000000000000006` of a PostgreSQL 17 cluster made with `initdb --wal-segsize=1`.
const HEADER: &str =
    "16d1070001000000000060000000000021020000000000006941db8dd820126b0000100000200000";
const SYSID: &str = "7715265226104062313";
const SEGMENT: &str = "000000010000000000000006";
const FOLDER: &str = "app/wal/0000000100000000/";
const MIB: usize = 1 << 20;

fn header() -> Vec<u8> {
    (0..HEADER.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&HEADER[i..i + 2], 16).expect("hex"))
        .collect()
}

struct Setup {
    store: MemoryStore,
    ctx: Context,
    identities: dr_stream::Identities,
    dir: tempfile::TempDir,
}

fn setup_with(store: MemoryStore, shared: Arc<dyn ObjectStore>, targets: &str) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let (secret, public) = dr_stream::generate_identity("2026-12-04T00:00:00Z");
    let identity_file = dir.path().join("identity.txt");
    std::fs::write(&identity_file, secret).expect("write identity");
    let identities = dr_stream::Identities::from_file(&identity_file).expect("identity");
    let config = dr_config::Config::from_toml_str(
        &format!(
            r#"
[repository]
url = "file:///nonexistent/dr-wal-test"
[encryption]
recipients = ["{}"]
{targets}
"#,
            public
        ),
        None,
    )
    .expect("config");
    let signing = Signing::with_key(dr_stream::signing::SigningKey::generate().expect("key"));
    Setup {
        ctx: Context::with_store(config, shared, signing),
        store,
        identities,
        dir,
    }
}

const APP: &str = r#"
[[targets]]
name = "app"
url = "postgres://u@127.0.0.1:1/app"
[targets.wal]
mode = "archive"
"#;

fn setup() -> Setup {
    let store = MemoryStore::new();
    setup_with(store.clone(), Arc::new(store), APP)
}

/// A 1 MiB segment named `name` whose body is `fill` (after the header); `sysid` replaces
/// the header's system identifier when given.
fn segment(dir: &Path, name: &str, fill: u8, sysid: Option<u64>) -> PathBuf {
    let mut bytes = header();
    if let Some(s) = sysid {
        bytes[24..32].copy_from_slice(&s.to_le_bytes());
    }
    bytes.resize(MIB, fill);
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write segment");
    path
}

async fn keys_under(store: &MemoryStore, prefix: &str) -> Vec<String> {
    store
        .list(prefix)
        .await
        .expect("list")
        .into_iter()
        .map(|o| o.key)
        .collect()
}

fn data_objects(keys: &[String]) -> Vec<&String> {
    keys.iter().filter(|k| k.ends_with(".zst.age")).collect()
}

#[tokio::test]
async fn a_new_segment_gets_its_data_object_and_a_signed_record() {
    let s = setup();
    let path = segment(s.dir.path(), SEGMENT, 7, None);
    let pushed = push(&s.ctx, &path, None).await.expect("push");
    assert!(!pushed.already_archived);
    assert_eq!(pushed.target, "app");
    let file: WalFile = SEGMENT.parse().expect("name");
    assert_eq!(pushed.record, keys::record("app", file));

    let listed = keys_under(&s.store, FOLDER).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    let stored = s.store.get(&pushed.record).await.expect("record");
    let (record, document, signature) = split(&pushed.record, &stored).expect("a record");
    assert!(s.ctx.signing.check(document, signature).is_trusted());
    assert_eq!(record.kind, WalKind::Segment);
    assert_eq!(record.key, pushed.data);
    assert!(listed.contains(&record.key));
    let raw = std::fs::read(&path).expect("read");
    assert_eq!(record.raw_sha256, dr_stream::sha256_hex(&raw));
    assert_eq!(record.raw_bytes, MIB as u64);
    assert_eq!(record.system_identifier, SYSID);
    assert_eq!(record.server_major, Some(17));
    assert_eq!(record.segment_bytes, Some(MIB as u64));
    assert_eq!(
        record.start_lsn.map(|l| l.to_string()).as_deref(),
        Some("0/600000")
    );
    assert_eq!(record.source, "archive");

    // The data object is age(zstd(raw)) and its digest is recorded.
    let sealed = s.store.get(&record.key).await.expect("data");
    assert_eq!(record.sha256, dr_stream::sha256_hex(&sealed));
    assert_eq!(record.bytes, sealed.len() as u64);
    assert_eq!(
        dr_stream::unseal(&sealed, &s.identities, &record.key).expect("unseal"),
        raw
    );

    // The first push tied the archive to the cluster, signed.
    let identity: WalIdentity = serde_json::from_slice(
        &s.store
            .get("app/wal/identity.json")
            .await
            .expect("identity"),
    )
    .expect("json");
    assert_eq!(identity.system_identifier, SYSID);
    assert_eq!(
        (identity.server_major, identity.segment_bytes),
        (17, MIB as u64)
    );
    assert!(s
        .store
        .head("app/wal/identity.json.sig")
        .await
        .expect("head")
        .is_some());
}

#[tokio::test]
async fn the_same_bytes_again_are_fine_and_leave_one_data_object() {
    let s = setup();
    let path = segment(s.dir.path(), SEGMENT, 7, None);
    let first = push(&s.ctx, &path, None).await.expect("first");
    let record = s.store.get(&first.record).await.expect("record");
    let again = push(&s.ctx, &path, None).await.expect("again");
    assert!(again.already_archived);
    assert_eq!(again.data, first.data, "the record's object, not ours");
    let listed = keys_under(&s.store, FOLDER).await;
    assert_eq!(data_objects(&listed), [&first.data], "ours was deleted");
    assert_eq!(s.store.get(&first.record).await.expect("record"), record);
}

#[tokio::test]
async fn different_bytes_under_an_archived_name_are_refused_and_nothing_is_overwritten() {
    let s = setup();
    let path = segment(s.dir.path(), SEGMENT, 7, None);
    let first = push(&s.ctx, &path, None).await.expect("first");
    let record = s.store.get(&first.record).await.expect("record");
    let (stored, _, _) = split(&first.record, &record).expect("record");

    let other = segment(s.dir.path(), SEGMENT, 8, None);
    let raw = dr_stream::sha256_hex(&std::fs::read(&other).expect("read"));
    let e = push(&s.ctx, &other, None).await.expect_err("refused");
    assert_eq!(e.kind, Kind::Integrity, "{e}");
    assert!(e.message.contains(SEGMENT), "{e}");
    assert!(
        e.message.contains(&raw) && e.message.contains(&stored.raw_sha256),
        "{e}"
    );
    assert!(e
        .hint
        .as_deref()
        .is_some_and(|h| h.contains("two clusters share this target")));
    assert_eq!(s.store.get(&first.record).await.expect("record"), record);
    let listed = keys_under(&s.store, FOLDER).await;
    assert_eq!(
        data_objects(&listed),
        [&first.data],
        "ours was deleted, theirs kept"
    );
}

#[tokio::test]
async fn a_history_file_is_never_replaced() {
    let s = setup();
    let path = s.dir.path().join("00000002.history");
    std::fs::write(&path, "1\t0/3000158\tno recovery target specified\n").expect("write");
    let first = push(&s.ctx, &path, None).await.expect("first");
    assert_eq!(first.record, "app/wal/history/00000002.history.rec");
    let record = s.store.get(&first.record).await.expect("record");
    let (r, _, _) = split(&first.record, &record).expect("record");
    assert_eq!(r.kind, WalKind::History);
    assert_eq!(r.timeline, 2);
    assert_eq!(r.switches.len(), 1);
    assert_eq!(r.switches[0].lsn.to_string(), "0/3000158");
    assert!(r.system_identifier.is_empty());

    assert!(
        push(&s.ctx, &path, None)
            .await
            .expect("same")
            .already_archived
    );
    std::fs::write(&path, "1\t0/4000000\tanother branch\n").expect("write");
    let e = push(&s.ctx, &path, None).await.expect_err("different");
    assert_eq!(e.kind, Kind::Integrity, "{e}");
    assert_eq!(s.store.get(&first.record).await.expect("record"), record);
    assert_eq!(
        data_objects(&keys_under(&s.store, "app/wal/history/").await),
        [&first.data]
    );
}

#[tokio::test]
async fn a_backup_history_file_goes_to_the_backup_folder() {
    let s = setup();
    let path = s
        .dir
        .path()
        .join("000000010000000000000006.00000028.backup");
    std::fs::write(
        &path,
        "START WAL LOCATION: 0/6000028 (file 000000010000000000000006)\n",
    )
    .expect("write");
    let pushed = push(&s.ctx, &path, None).await.expect("push");
    assert_eq!(
        pushed.record,
        "app/wal/backup/000000010000000000000006.00000028.backup.rec"
    );
    let (record, _, _) = split(
        &pushed.record,
        &s.store.get(&pushed.record).await.expect("record"),
    )
    .expect("record");
    assert_eq!(record.kind, WalKind::Backup);
    assert!(s
        .store
        .head("app/wal/identity.json")
        .await
        .expect("head")
        .is_none());
}

#[tokio::test]
async fn two_pushers_at_once_both_succeed_with_one_data_object() {
    let s = setup();
    let path = segment(s.dir.path(), SEGMENT, 7, None);
    let (a, b) = tokio::join!(push(&s.ctx, &path, None), push(&s.ctx, &path, None));
    let (a, b) = (a.expect("first pusher"), b.expect("second pusher"));
    assert_eq!(a.data, b.data, "both name the committed object");
    assert!(a.already_archived != b.already_archived);
    let listed = keys_under(&s.store, FOLDER).await;
    assert_eq!(data_objects(&listed), [&a.data], "no orphan: {listed:?}");
    let (record, _, _) =
        split(&a.record, &s.store.get(&a.record).await.expect("record")).expect("record");
    assert_eq!(record.key, a.data);
}

#[tokio::test]
async fn wal_of_another_cluster_is_refused_before_anything_is_written() {
    let s = setup();
    push(&s.ctx, &segment(s.dir.path(), SEGMENT, 7, None), None)
        .await
        .expect("first cluster");
    let before = keys_under(&s.store, "").await;
    let foreign = segment(
        s.dir.path(),
        "000000010000000000000007",
        7,
        Some(7_200_000_000_000_000_001),
    );
    // A foreign segment's header still says its own page address: make the name match it.
    let mut bytes = std::fs::read(&foreign).expect("read");
    bytes[8..16].copy_from_slice(&0x0070_0000u64.to_le_bytes());
    std::fs::write(&foreign, bytes).expect("write");
    let e = push(&s.ctx, &foreign, None).await.expect_err("refused");
    assert_eq!(e.kind, Kind::Refused, "{e}");
    assert!(
        e.message.contains("WAL of system 7200000000000000001"),
        "{e}"
    );
    assert!(
        e.message.contains(&format!("belongs to system {SYSID}")),
        "{e}"
    );
    assert!(
        e.hint.as_deref().is_some_and(|h| h.contains("new target")),
        "{e}"
    );
    assert_eq!(keys_under(&s.store, "").await, before);
    // With --target too.
    let e = push(&s.ctx, &foreign, Some("app"))
        .await
        .expect_err("refused");
    assert_eq!(e.kind, Kind::Refused, "{e}");
}

#[tokio::test]
async fn each_cluster_finds_its_own_target() {
    let store = MemoryStore::new();
    let two = format!(
        "{APP}\n[[targets]]\nname = \"other\"\nurl = \"postgres://u@127.0.0.1:1/o\"\n[targets.wal]\nmode = \"archive\"\n"
    );
    let s = setup_with(store.clone(), Arc::new(store), &two);
    let ours = segment(s.dir.path(), SEGMENT, 7, None);
    // The first push of a cluster with two empty archives is ambiguous.
    let e = push(&s.ctx, &ours, None).await.expect_err("ambiguous");
    assert_eq!(e.kind, Kind::Config, "{e}");
    assert!(
        push(&s.ctx, &ours, Some("other"))
            .await
            .expect("named")
            .target
            == "other"
    );
    // Now the cluster's archive is `other`; a new cluster's first push takes the free one.
    let next = segment(s.dir.path(), "000000010000000000000006", 9, None);
    assert_eq!(
        push(&s.ctx, &next, None).await.expect_err("differs").kind,
        Kind::Integrity
    );
    let new_dir = tempfile::tempdir().expect("tempdir");
    let foreign = segment(new_dir.path(), SEGMENT, 7, Some(42));
    assert_eq!(
        push(&s.ctx, &foreign, None).await.expect("free").target,
        "app"
    );
    // History files name no cluster: with two WAL targets, --target is needed.
    let history = s.dir.path().join("00000002.history");
    std::fs::write(&history, "1\t0/3000158\tx\n").expect("write");
    let e = push(&s.ctx, &history, None)
        .await
        .expect_err("which target?");
    assert_eq!(e.kind, Kind::Config, "{e}");
    assert!(
        e.hint.as_deref().is_some_and(|h| h.contains("--target")),
        "{e}"
    );
    assert_eq!(
        push(&s.ctx, &history, Some("app"))
            .await
            .expect("named")
            .target,
        "app"
    );
}

#[tokio::test]
async fn what_is_not_a_wal_file_is_refused() {
    let s = setup();
    let odd = s.dir.path().join("RECOVERYHISTORY");
    std::fs::write(&odd, b"x").expect("write");
    assert_eq!(
        push(&s.ctx, &odd, None).await.expect_err("name").kind,
        Kind::Config
    );
    let zeros = s.dir.path().join(SEGMENT);
    std::fs::write(&zeros, vec![0u8; MIB]).expect("write");
    let e = push(&s.ctx, &zeros, None).await.expect_err("no header");
    assert_eq!(e.kind, Kind::Config, "{e}");
    assert!(e.message.contains("0x0000"), "{e}");
    let short = segment(s.dir.path(), SEGMENT, 7, None);
    let mut bytes = std::fs::read(&short).expect("read");
    bytes.truncate(MIB / 2);
    std::fs::write(&short, bytes).expect("write");
    let e = push(&s.ctx, &short, None).await.expect_err("truncated");
    assert_eq!(e.kind, Kind::Integrity, "{e}");
    let renamed = segment(s.dir.path(), "000000010000000000000009", 7, None);
    let e = push(&s.ctx, &renamed, None).await.expect_err("renamed");
    assert_eq!(e.kind, Kind::Integrity, "{e}");
    assert!(e.message.contains("0/600000"), "{e}");
    let missing = s.dir.path().join("000000010000000000000010");
    assert_eq!(
        push(&s.ctx, &missing, None)
            .await
            .expect_err("missing")
            .kind,
        Kind::Config
    );
    assert!(keys_under(&s.store, "").await.is_empty());

    // No signing key: nothing is pushed.
    let unsigned = Context::with_store(
        s.ctx.config.clone(),
        Arc::new(s.store.clone()),
        Signing::default(),
    );
    let e = push(&unsigned, &segment(s.dir.path(), SEGMENT, 7, None), None)
        .await
        .expect_err("unsigned");
    assert_eq!(e.kind, Kind::Config, "{e}");
    assert!(e.message.contains("signing key"), "{e}");
}

#[tokio::test]
async fn a_partial_that_does_not_compress_is_uploaded_in_parts() {
    let s = setup();
    // A timeline's last segment, archived as `.partial` at promotion: at most a segment.
    let path = s.dir.path().join("000000010000000000000001.partial");
    let mut bytes = header();
    bytes[8..16].copy_from_slice(&0x0100_0000u64.to_le_bytes());
    // 16 MiB segments: the header's size field says so.
    bytes[32..36].copy_from_slice(&(16u32 << 20).to_le_bytes());
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    bytes.resize(9 * MIB, 0);
    for chunk in bytes[40..].chunks_mut(8) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let n = chunk.len();
        chunk.copy_from_slice(&rng.to_le_bytes()[..n]);
    }
    std::fs::write(&path, &bytes).expect("write");
    let pushed = push(&s.ctx, &path, None).await.expect("push");
    assert!(
        pushed.bytes > 9 * MIB as u64,
        "incompressible: {}",
        pushed.bytes
    );
    let (record, _, _) = split(
        &pushed.record,
        &s.store.get(&pushed.record).await.expect("record"),
    )
    .expect("record");
    assert_eq!((record.kind, record.r#final), (WalKind::Partial, true));
    assert_eq!(record.segment_bytes, Some(16 * MIB as u64));
    let sealed = s.store.get(&pushed.data).await.expect("data");
    assert_eq!(
        dr_stream::unseal(&sealed, &s.identities, "x").expect("unseal"),
        bytes
    );
}

#[tokio::test]
async fn with_object_lock_the_wal_archive_is_written_locked() {
    let lock = dr_store::ObjectLock {
        mode: LockMode::Compliance,
        days: 14,
    };
    let bucket = MemoryStore::object_lock().with_location(dr_store::Location::S3 {
        bucket: "memory".into(),
        prefix: String::new(),
        endpoint: None,
        region: None,
        path_style: false,
        max_parts: 10_000,
        object_lock: Some(lock),
    });
    let store = dr_core::immutable::LockingStore::new(Arc::new(bucket.clone()), lock);
    let s = setup_with(bucket.clone(), Arc::new(store), APP);
    let path = segment(s.dir.path(), SEGMENT, 7, None);
    let before = chrono::Utc::now();
    let pushed = push(&s.ctx, &path, None).await.expect("push");
    let versions = bucket.list_versions("app/wal/").await.expect("versions");
    let locked: Vec<&str> = versions.iter().map(|v| v.key.as_str()).collect();
    for key in [
        pushed.data.as_str(),
        pushed.record.as_str(),
        "app/wal/identity.json",
    ] {
        assert!(locked.contains(&key), "{key} in {locked:?}");
    }
    for v in &versions {
        let r = bucket
            .version_retention(&v.key, &v.version_id)
            .await
            .expect("retention")
            .unwrap_or_else(|| panic!("{} is not locked", v.key));
        assert_eq!(r.mode, LockMode::Compliance);
        assert!(r.until >= before + chrono::Duration::days(14), "{}", v.key);
    }
}

/// A store whose first record creation succeeds but whose answer is lost (a 503 after the
/// write): the retry finds the record, and it names our own data object.
#[derive(Debug)]
struct LostReply {
    inner: MemoryStore,
    lost: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl ObjectStore for LostReply {
    fn location(&self) -> &dr_store::Location {
        self.inner.location()
    }
    fn part_limits(&self) -> dr_store::PartLimits {
        self.inner.part_limits()
    }
    async fn put(&self, key: &str, body: bytes::Bytes) -> Result<(), dr_store::StoreError> {
        self.inner.put(key, body).await
    }
    async fn put_if_absent(
        &self,
        key: &str,
        body: bytes::Bytes,
    ) -> Result<bool, dr_store::StoreError> {
        let created = self.inner.put_if_absent(key, body).await?;
        if key.ends_with(".rec") && !self.lost.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Err(dr_store::StoreError::S3 {
                operation: "PutObject",
                target: format!("s3://memory/{key}"),
                code: Some("ServiceUnavailable".into()),
                status: Some(503),
                message: "the answer was lost".into(),
                hint: None,
            });
        }
        Ok(created)
    }
    async fn get(&self, key: &str) -> Result<bytes::Bytes, dr_store::StoreError> {
        self.inner.get(key).await
    }
    async fn get_reader(
        &self,
        key: &str,
    ) -> Result<(u64, Box<dyn tokio::io::AsyncRead + Send + Unpin>), dr_store::StoreError> {
        self.inner.get_reader(key).await
    }
    async fn head(&self, key: &str) -> Result<Option<dr_store::ObjectMeta>, dr_store::StoreError> {
        self.inner.head(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<dr_store::ObjectMeta>, dr_store::StoreError> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<(), dr_store::StoreError> {
        self.inner.delete(key).await
    }
    async fn start_multipart(
        &self,
        key: &str,
    ) -> Result<Box<dyn dr_store::MultipartUpload>, dr_store::StoreError> {
        self.inner.start_multipart(key).await
    }
    async fn list_multipart(
        &self,
        prefix: &str,
    ) -> Result<Vec<dr_store::PendingUpload>, dr_store::StoreError> {
        self.inner.list_multipart(prefix).await
    }
    async fn abort_multipart(
        &self,
        upload: &dr_store::PendingUpload,
    ) -> Result<(), dr_store::StoreError> {
        self.inner.abort_multipart(upload).await
    }
}

#[tokio::test]
async fn a_record_whose_creation_answer_was_lost_is_ours_on_the_retry() {
    let bucket = MemoryStore::new();
    let store = LostReply {
        inner: bucket.clone(),
        lost: std::sync::atomic::AtomicBool::new(false),
    };
    let s = setup_with(bucket.clone(), Arc::new(store), APP);
    let path = segment(s.dir.path(), SEGMENT, 7, None);
    let pushed = push(&s.ctx, &path, None).await.expect("retried");
    assert!(!pushed.already_archived, "our own record, not a re-push");
    let listed = keys_under(&s.store, FOLDER).await;
    assert_eq!(
        data_objects(&listed),
        [&pushed.data],
        "the named object was kept"
    );
    let (record, _, _) = split(
        &pushed.record,
        &s.store.get(&pushed.record).await.expect("record"),
    )
    .expect("record");
    assert_eq!(record.key, pushed.data);
}
