//! `dr wal fetch` against the in-memory store, with an archive written the way `dr wal push`
//! writes it: the data object `age(zstd(raw))` under a random name, then the signed record
//! created only if absent.

use std::sync::Arc;
use std::time::Duration;

use dr_catalog::wal::{join, RECORD_FORMAT};
use dr_store::{MemoryStore, ObjectStore};
use dr_stream::signing::SigningKey;

use super::*;
use crate::trust::Signing;

/// A WAL archive of target `app` in memory, the database host's signing key, and a
/// restore host's identity (and a directory for DEST).
struct Archive {
    store: MemoryStore,
    pusher: Signing,
    recipients: dr_stream::Recipients,
    identity_file: PathBuf,
    dir: tempfile::TempDir,
}

fn signing() -> Signing {
    Signing::with_key(SigningKey::generate().expect("key"))
}

/// Bytes that do not compress to nothing, different per `seed`.
fn wal_bytes(seed: u8, len: usize) -> Vec<u8> {
    let mut x = u32::from(seed).wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

impl Archive {
    fn new() -> Archive {
        let dir = tempfile::tempdir().expect("temp dir");
        let (identity, recipient) = dr_stream::generate_identity("2026-12-04T00:00:00Z");
        let identity_file = dir.path().join("identity.txt");
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&identity_file)
                .expect("identity file");
            f.write_all(identity.as_bytes()).expect("write identity");
        }
        Archive {
            store: MemoryStore::new(),
            pusher: signing(),
            recipients: dr_stream::Recipients::parse(&[recipient]).expect("recipient"),
            identity_file,
            dir,
        }
    }

    /// A restore host: trusts the database host's key, holds the identity.
    fn context(&self) -> Context {
        self.context_with(&self.config(""))
    }

    fn config(&self, extra: &str) -> dr_config::Config {
        let mut config = dr_config::Config::from_toml_str(
            &format!(
                "[repository]\nurl = \"file:///nonexistent/dr-fetch-test\"\n[encryption]\nrecipients = [\"{}\"]\n[[targets]]\nname = \"app\"\nurl = \"postgres://u@127.0.0.1:1/app\"\n{extra}",
                self.recipients.to_strings()[0]
            ),
            None,
        )
        .expect("config");
        config.encryption.identity_file = Some(self.identity_file.clone());
        config
    }

    fn context_with(&self, config: &dr_config::Config) -> Context {
        Context::with_store(
            config.clone(),
            Arc::new(self.store.clone()),
            self.pusher.clone(),
        )
    }

    fn dest(&self) -> PathBuf {
        self.dir.path().join("RECOVERYXLOG")
    }

    /// Push `raw` as `name`, signed by the database host.
    async fn push(&self, name: &str, raw: &[u8]) -> WalRecord {
        self.push_as(name, raw, &self.pusher, |_| {}).await
    }

    /// What `dr wal push` stores, signed by `signer` (unsigned without a key), the record
    /// adjusted by `edit` before it is signed.
    async fn push_as(
        &self,
        name: &str,
        raw: &[u8],
        signer: &Signing,
        edit: impl FnOnce(&mut WalRecord),
    ) -> WalRecord {
        let file: WalFile = name.parse().expect("WAL file name");
        let sealed = dr_stream::seal(raw, &self.recipients, 3).expect("seal");
        let sha256 = dr_stream::sha256_hex(&sealed);
        let key = keys::data("app", file, &sha256[..16]);
        let kind = WalKind::of(file);
        let segment = matches!(kind, WalKind::Segment | WalKind::Partial);
        let mut record = WalRecord {
            format: RECORD_FORMAT,
            kind,
            name: name.to_string(),
            key: key.clone(),
            system_identifier: if segment {
                "7301234567890123456".into()
            } else {
                String::new()
            },
            server_major: segment.then_some(17),
            timeline: file.timeline(),
            start_lsn: None,
            end_lsn: None,
            r#final: kind == WalKind::Partial,
            segment_bytes: segment.then_some(raw.len() as u64),
            raw_sha256: dr_stream::sha256_hex(raw),
            raw_bytes: raw.len() as u64,
            sha256,
            bytes: sealed.len() as u64,
            recipients: self.recipients.to_strings(),
            switches: vec![],
            pushed_at: "2026-12-04T01:02:03Z".into(),
            pushed_by: "db1".into(),
            dr_version: crate::DR_VERSION.into(),
            source: "archive".into(),
        };
        edit(&mut record);
        // The first push writes the archive's identity, as `dr wal push` does.
        self.store
            .put_if_absent(
                &keys::identity("app"),
                Bytes::from_static(br#"{"format":1,"system_identifier":"7301234567890123456","server_major":17,"segment_bytes":16777216,"created_at":"2026-12-04T01:02:03Z","created_by":"db1"}"#),
            )
            .await
            .expect("put identity");
        self.store
            .put(&key, Bytes::from(sealed))
            .await
            .expect("put data");
        let document = record.document();
        let signature = signer.sign(&document).expect("sign");
        let created = self
            .store
            .put_if_absent(
                &keys::record("app", file),
                Bytes::from(join(&document, signature.as_deref())),
            )
            .await
            .expect("put record");
        assert!(created, "{name} pushed twice");
        record
    }

    async fn fetch(&self, name: &str) -> Result<Fetched> {
        self.fetch_with(&self.context(), name).await
    }

    async fn fetch_with(&self, ctx: &Context, name: &str) -> Result<Fetched> {
        let dest = self.dest();
        let mut req = Request::new("app", name, &dest);
        // The real waits are seconds; the number of tries is what matters here.
        req.retry = Policy::fixed(3, Duration::ZERO);
        fetch(ctx, &req).await
    }

    /// DEST, and that no temp file is left beside it.
    fn written(&self) -> Option<Vec<u8>> {
        let tmp = self.dir.path().join("RECOVERYXLOG.dr-tmp");
        assert!(!tmp.exists(), "{} left behind", tmp.display());
        std::fs::read(self.dest()).ok()
    }
}

const SEG1: &str = "000000010000000000000001";
const SEG2: &str = "000000010000000000000002";
const SEG3: &str = "000000010000000000000003";
const LEN: usize = 64 * 1024;

#[track_caller]
fn integrity(r: Result<Fetched>) -> Error {
    let e = r.expect_err("must fail");
    assert_eq!(e.kind, Kind::Integrity, "{e}");
    e
}

#[tokio::test]
async fn an_archived_segment_is_written_exactly() {
    let a = Archive::new();
    a.push(SEG1, &wal_bytes(1, LEN)).await;
    a.push(SEG2, &wal_bytes(2, LEN)).await;
    let fetched = a.fetch(SEG2).await.expect("fetch");
    let Fetched::Written(served) = fetched else {
        panic!("not written: {fetched:?}")
    };
    assert_eq!(served.file.to_string(), SEG2);
    assert!(!served.is_partial());
    assert_eq!(served.raw_bytes, LEN as u64);
    assert_eq!(a.written().expect("DEST"), wal_bytes(2, LEN));
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(a.dest())
            .expect("DEST")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "DEST is readable by others: {mode:o}");
    }
    // A leftover DEST (an earlier try) is replaced, never appended to.
    std::fs::write(a.dest(), vec![7u8; 2 * LEN]).expect("write");
    a.fetch(SEG1).await.expect("fetch");
    assert_eq!(a.written().expect("DEST"), wal_bytes(1, LEN));
}

#[tokio::test]
async fn the_end_of_the_archive_and_future_timelines_are_not_found() {
    let a = Archive::new();
    a.push(SEG1, &wal_bytes(1, LEN)).await;
    a.push(
        "00000002.history",
        b"1\t0/2000000\tno recovery target specified\n",
    )
    .await;
    assert_eq!(a.fetch(SEG2).await.expect("fetch"), Fetched::NotFound);
    // PostgreSQL probes the history of timelines that may not exist.
    assert_eq!(
        a.fetch("00000003.history").await.expect("fetch"),
        Fetched::NotFound
    );
    // A later segment of another timeline is not a gap of this one.
    a.push("000000020000000000000007", &wal_bytes(7, LEN)).await;
    assert_eq!(a.fetch(SEG2).await.expect("fetch"), Fetched::NotFound);
    assert_eq!(a.written(), None);
    // A history file is served like a segment.
    a.fetch("00000002.history").await.expect("fetch");
    assert_eq!(
        a.written().expect("DEST"),
        b"1\t0/2000000\tno recovery target specified\n"
    );
}

#[tokio::test]
async fn a_missing_segment_before_an_archived_one_is_a_gap() {
    let a = Archive::new();
    a.push(SEG1, &wal_bytes(1, LEN)).await;
    a.push(SEG3, &wal_bytes(3, LEN)).await;
    let e = integrity(a.fetch(SEG2).await);
    assert!(e.message.contains(SEG2), "{e}");
    assert!(e.message.contains("first missing segment"), "{e}");
    assert!(e.message.contains(SEG3), "{e}");
    assert_eq!(a.written(), None);
    // Across a log id: the next folder is looked at when this one has nothing later.
    a.push("000000010000000100000000", &wal_bytes(4, LEN)).await;
    let e = integrity(a.fetch("0000000100000000000000FE").await);
    assert!(e.message.contains("0000000100000000000000FE"), "{e}");
    assert_eq!(a.written(), None);
}

#[tokio::test]
async fn a_partial_segment_is_served_only_at_the_end() {
    let a = Archive::new();
    a.push(SEG1, &wal_bytes(1, LEN)).await;
    let mut partial = wal_bytes(2, LEN / 2);
    partial.resize(LEN, 0);
    a.push(&format!("{SEG2}.partial"), &partial).await;
    let Fetched::Written(served) = a.fetch(SEG2).await.expect("fetch") else {
        panic!("the partial was not served")
    };
    assert!(served.is_partial());
    assert_eq!(served.pushed_at, "2026-12-04T01:02:03Z");
    assert_eq!(a.written().expect("DEST"), partial);
    std::fs::remove_file(a.dest()).expect("rm");
    // Once WAL after it is archived, the missing segment is a gap, partial or not.
    a.push(SEG3, &wal_bytes(3, LEN)).await;
    let e = integrity(a.fetch(SEG2).await);
    assert!(e.message.contains("first missing segment"), "{e}");
    assert_eq!(a.written(), None);
}

#[tokio::test]
async fn damaged_data_never_reaches_dest() {
    let a = Archive::new();
    let rec = a.push(SEG1, &wal_bytes(1, LEN)).await;
    let good = a.store.get(&rec.key).await.expect("get");
    // One bit flipped, same size: the stored digest.
    let mut flipped = good.to_vec();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 1;
    a.store
        .put(&rec.key, Bytes::from(flipped))
        .await
        .expect("put");
    let e = integrity(a.fetch(SEG1).await);
    assert!(e.to_string().contains(&rec.key), "{e}");
    assert!(e.hint.as_deref().is_some_and(|h| h.contains(SEG1)), "{e}");
    assert_eq!(a.written(), None);
    // Truncated: refused by its size before a byte is written.
    a.store
        .put(&rec.key, good.slice(..good.len() - 10))
        .await
        .expect("put");
    let e = integrity(a.fetch(SEG1).await);
    assert!(e.message.contains("truncated"), "{e}");
    assert_eq!(a.written(), None);
    // Gone: the record names an object that is not there.
    a.store.delete(&rec.key).await.expect("delete");
    let e = integrity(a.fetch(SEG1).await);
    assert!(e.message.contains("missing"), "{e}");
    assert_eq!(a.written(), None);
}

#[tokio::test]
async fn raw_bytes_that_differ_from_the_record_are_refused() {
    let a = Archive::new();
    // A trusted record whose raw digest does not match its (intact) data object.
    a.push_as(SEG1, &wal_bytes(1, LEN), &a.pusher.clone(), |r| {
        r.raw_sha256 = "00".repeat(32);
    })
    .await;
    let e = integrity(a.fetch(SEG1).await);
    assert!(e.message.contains("decodes to"), "{e}");
    assert_eq!(a.written(), None);
}

#[tokio::test]
async fn untrusted_records_are_refused_with_the_reason() {
    let a = Archive::new();
    a.push_as(SEG1, &wal_bytes(1, LEN), &signing(), |_| {})
        .await;
    let e = integrity(a.fetch(SEG1).await);
    assert!(e.message.contains("untrusted"), "{e}");
    assert!(e.message.contains("does not trust"), "{e}");
    assert!(
        e.hint
            .as_deref()
            .is_some_and(|h| h.contains("[signing] trusted")),
        "{e}"
    );
    a.push_as(SEG2, &wal_bytes(2, LEN), &Signing::default(), |_| {})
        .await;
    let e = integrity(a.fetch(SEG2).await);
    assert!(e.message.contains("unsigned"), "{e}");
    assert_eq!(a.written(), None);
    // A host with no [signing] trusts nothing, and says how to fix that.
    a.push(SEG3, &wal_bytes(3, LEN)).await;
    let ctx = Context::with_store(a.config(""), Arc::new(a.store.clone()), Signing::default());
    let e = integrity(a.fetch_with(&ctx, SEG3).await);
    assert!(
        e.hint.as_deref().is_some_and(|h| h.contains("[signing]")),
        "{e}"
    );
    assert_eq!(a.written(), None);
}

#[tokio::test]
async fn a_record_copied_over_another_segment_is_refused() {
    let a = Archive::new();
    a.push(SEG1, &wal_bytes(1, LEN)).await;
    let stored = a
        .store
        .get(&keys::record("app", SEG1.parse().expect("name")))
        .await
        .expect("get");
    // SEG1's validly signed record at SEG2's key: it would serve SEG1's bytes as SEG2.
    a.store
        .put(&keys::record("app", SEG2.parse().expect("name")), stored)
        .await
        .expect("put");
    let e = integrity(a.fetch(SEG2).await);
    assert!(e.message.contains("does not belong"), "{e}");
    assert_eq!(a.written(), None);
}

#[tokio::test]
async fn an_unreachable_store_is_unavailable_after_the_retries() {
    let a = Archive::new();
    a.push(SEG1, &wal_bytes(1, LEN)).await;
    a.store.fail("get", "app/wal/");
    let e = a.fetch(SEG1).await.expect_err("must fail");
    assert_eq!(e.kind, Kind::Unavailable, "{e}");
    assert!(
        e.hint
            .as_deref()
            .is_some_and(|h| h.contains("recovery stopped")),
        "{e}"
    );
    assert_eq!(a.written(), None);
    // A failed LIST is no "not found" either.
    a.store.heal();
    a.store.fail("list", "app/wal/");
    let e = a.fetch(SEG2).await.expect_err("must fail");
    assert_eq!(e.kind, Kind::Unavailable, "{e}");
    a.store.heal();
    assert_eq!(a.fetch(SEG2).await.expect("fetch"), Fetched::NotFound);
}

#[tokio::test]
async fn an_archive_that_is_not_there_is_never_not_found() {
    // An unmounted directory repository reads as an empty one: "not in the archive" would
    // end recovery early, so it is an error.
    let a = Archive::new();
    let e = a.fetch(SEG1).await.expect_err("no archive");
    assert_eq!(e.kind, Kind::Unavailable, "{e}");
    assert!(e.message.contains("holds no WAL archive"), "{e}");
    assert_eq!(a.written(), None);
}

#[tokio::test]
async fn a_dest_that_cannot_be_written_fails_without_leftovers() {
    let a = Archive::new();
    a.push(SEG1, &wal_bytes(1, LEN)).await;
    let ctx = a.context();
    let dest = a.dir.path().join("no-such-dir").join("RECOVERYXLOG");
    let mut req = Request::new("app", SEG1, &dest);
    req.retry = Policy::fixed(3, Duration::ZERO);
    let e = fetch(&ctx, &req).await.expect_err("must fail");
    assert_eq!(e.kind, Kind::Failed, "{e}");
    assert!(!dest.exists());
}

#[tokio::test]
async fn names_and_targets_are_config_errors() {
    let a = Archive::new();
    let e = a.fetch("RECOVERYHISTORY").await.expect_err("must fail");
    assert_eq!(e.kind, Kind::Config, "{e}");
    assert!(e.hint.is_some(), "{e}");
    // No identity: nothing could be decrypted.
    let mut config = a.config("");
    config.encryption.identity_file = None;
    let e = a
        .fetch_with(&a.context_with(&config), SEG1)
        .await
        .expect_err("must fail");
    assert_eq!(e.kind, Kind::Config, "{e}");

    assert_eq!(target(&a.context(), None).await.expect("one target"), "app");
    let two = a.config("[[targets]]\nname = \"other\"\nurl = \"postgres://u@127.0.0.1:1/o\"\n");
    let ctx = a.context_with(&two);
    let e = target(&ctx, None).await.expect_err("two targets");
    assert_eq!(e.kind, Kind::Config, "{e}");
    assert!(
        e.hint.as_deref().is_some_and(|h| h.contains("--target")),
        "{e}"
    );
    assert_eq!(target(&ctx, Some("other")).await.expect("named"), "other");
    let e = target(&ctx, Some("nope")).await.expect_err("unknown");
    assert_eq!(e.kind, Kind::Config, "{e}");
}

#[tokio::test]
async fn a_signal_interrupts_the_retries_and_writes_nothing() {
    let a = Archive::new();
    a.push(SEG1, &wal_bytes(1, LEN)).await;
    a.store.fail("get", "app/wal/");
    let ctx = a.context();
    let dest = a.dest();
    let mut req = Request::new("app", SEG1, &dest);
    // Long waits between tries: the signal comes during the first one.
    req.retry = Policy::fixed(3, Duration::from_secs(30));
    let cancel = ctx.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        cancel.cancel();
    });
    let started = std::time::Instant::now();
    let e = fetch(&ctx, &req).await.expect_err("must fail");
    assert_eq!(e.kind, Kind::Interrupted, "{e}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(a.written(), None);
}
