//! `dr status` of a WAL target against the in-memory store: signed records written as
//! `dr wal push` writes them, read back by one LIST (docs/design/PITR.md §7).

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use dr_catalog::wal::{join, keys, WalFile, WalIdentity, WalKind, WalRecord, RECORD_FORMAT};
use dr_core::trust::Signing;
use dr_core::Context;
use dr_store::{MemoryStore, ObjectStore};

const RECIPIENT: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

fn context(store: &MemoryStore, signing: Signing) -> Context {
    let config = dr_config::Config::from_toml_str(
        &format!(
            r#"
[repository]
url = "file:///nonexistent/dr-wal-status-test"
[encryption]
recipients = ["{RECIPIENT}"]
[[targets]]
name = "app"
url = "postgres://u@127.0.0.1:1/app"
[targets.wal]
mode = "archive"
max_lag = "5m"
[[targets]]
name = "plain"
url = "postgres://u@127.0.0.1:1/plain"
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

fn record(name: &str, pushed_at: DateTime<Utc>) -> WalRecord {
    let file: WalFile = name.parse().expect("name");
    WalRecord {
        format: RECORD_FORMAT,
        kind: WalKind::of(file),
        name: name.into(),
        key: keys::data("app", file, "00112233aabbccdd"),
        system_identifier: "7301234567890123456".into(),
        server_major: Some(15),
        timeline: file.timeline(),
        start_lsn: None,
        end_lsn: matches!(file, WalFile::Partial(_)).then(|| "0/3800000".parse().expect("lsn")),
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
    }
}

/// Store the record of `name`, signed by `by` (unsigned when `None`).
async fn push(store: &MemoryStore, by: Option<&Signing>, name: &str, pushed_at: DateTime<Utc>) {
    let r = record(name, pushed_at);
    let doc = r.document();
    let sig = by.and_then(|s| s.sign(&doc).expect("sign"));
    let file: WalFile = name.parse().expect("name");
    store
        .put(
            &keys::record("app", file),
            Bytes::from(join(&doc, sig.as_deref())),
        )
        .await
        .expect("put");
}

async fn app(ctx: &Context) -> dr_core::status::TargetStatus {
    let rows = dr_core::status::run(ctx).await.expect("status");
    assert!(
        rows.iter()
            .find(|r| r.target == "plain")
            .expect("plain")
            .wal
            .is_none(),
        "a target without [targets.wal] has no wal object"
    );
    rows.into_iter()
        .find(|r| r.target == "app")
        .expect("app row")
}

#[tokio::test]
async fn a_wal_target_without_wal_is_a_problem() {
    let store = MemoryStore::new();
    let s = signing();
    let row = app(&context(&store, s)).await;
    assert!(!row.ok);
    assert!(
        row.problems
            .contains(&"no WAL archived yet for target app: check `dr check`".to_string()),
        "{:?}",
        row.problems
    );
    let wal = row.wal.expect("wal object");
    assert_eq!((wal.files, wal.newest), (0, None));
}

#[tokio::test]
async fn status_reads_the_newest_record_and_names_a_gap() {
    let store = MemoryStore::new();
    let s = signing();
    let now = Utc::now();
    for (i, name) in [
        "000000010000000000000001",
        "000000010000000000000002",
        "000000010000000000000004",
    ]
    .iter()
    .enumerate()
    {
        push(
            &store,
            Some(&s),
            name,
            now - Duration::minutes(3 - i as i64),
        )
        .await;
    }
    let identity = WalIdentity {
        format: 1,
        system_identifier: "7301234567890123456".into(),
        server_major: 15,
        segment_bytes: 16 << 20,
        created_at: dr_core::time::format(now),
        created_by: "db1".into(),
    };
    store
        .put(
            &keys::identity("app"),
            Bytes::from(serde_json::to_vec(&identity).expect("json")),
        )
        .await
        .expect("put");
    let row = app(&context(&store, s.clone())).await;
    let wal = row.wal.clone().expect("wal object");
    assert_eq!(wal.newest.as_deref(), Some("000000010000000000000004"));
    assert_eq!(wal.files, 3);
    assert!(
        wal.rpo_seconds.is_some_and(|r| (55..=70).contains(&r)),
        "{wal:?}"
    );
    assert_eq!(
        wal.first_missing.as_deref(),
        Some("000000010000000000000003")
    );
    let gap: Vec<&String> = row
        .problems
        .iter()
        .filter(|p| p.contains("segment 000000010000000000000003 is missing"))
        .collect();
    assert_eq!(gap.len(), 1, "{:?}", row.problems);

    // The missing segment arrives: healthy as far as WAL goes.
    push(&store, Some(&s), "000000010000000000000003", now).await;
    let row = app(&context(&store, s.clone())).await;
    let wal = row.wal.expect("wal object");
    assert_eq!(wal.first_missing, None);
    // WAL objects are not taken for backups (damaged or otherwise): only the dump is missing.
    assert_eq!(row.problems, ["no complete backup"]);
}

#[tokio::test]
async fn stale_or_untrusted_wal_is_a_problem() {
    let store = MemoryStore::new();
    let s = signing();
    let now = Utc::now();
    push(
        &store,
        Some(&s),
        "000000010000000000000001",
        now - Duration::minutes(40),
    )
    .await;
    push(
        &store,
        Some(&s),
        "000000010000000000000002",
        now - Duration::minutes(30),
    )
    .await;
    let row = app(&context(&store, s.clone())).await;
    assert!(
        row.problems
            .iter()
            .any(|p| p.contains("is 30m0") && p.contains("more than max_lag 5m")),
        "{:?}",
        row.problems
    );
    // An unsigned newest record is not believed.
    push(&store, None, "000000010000000000000003", now).await;
    let row = app(&context(&store, s)).await;
    assert!(
        row.problems
            .iter()
            .any(|p| p.contains("000000010000000000000003.rec` is untrusted (unsigned)")),
        "{:?}",
        row.problems
    );
}
