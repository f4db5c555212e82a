//! What every [`ObjectStore`] must do, as one suite each backend runs (feature `testing`):
//! the memory store and a directory in this crate's tests, S3 against SeaweedFS in
//! `tests/s3.rs`. A backend that differs from the others fails here, by case name.
//!
//! ```ignore
//! dr_store::conformance::run(|| async { Arc::new(MemoryStore::new()) as Arc<dyn ObjectStore> }).await;
//! ```
//!
//! Each case gets a fresh, empty store. A directory cannot hold both `a/b` and `a/b/c` (a
//! file is no directory), so no case writes a key that is a prefix-plus-'/' of another.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::AsyncReadExt;

use crate::{ObjectMeta, ObjectStore, PendingUpload, StoreError};

type Case = fn(Arc<dyn ObjectStore>) -> Pin<Box<dyn Future<Output = ()> + Send>>;

/// Every case, by name.
pub const CASES: &[(&str, Case)] = &[
    ("put_get_head_list_delete", |s| Box::pin(round_trip(s))),
    ("overwrite_replaces", |s| Box::pin(overwrite_replaces(s))),
    ("missing_objects", |s| Box::pin(missing_objects(s))),
    ("listing_order_and_prefixes", |s| {
        Box::pin(listing_order_and_prefixes(s))
    }),
    ("put_if_absent_once", |s| Box::pin(put_if_absent_once(s))),
    ("put_if_absent_race_has_one_winner", |s| {
        Box::pin(put_if_absent_race(s))
    }),
    ("multipart_publishes_on_complete", |s| {
        Box::pin(multipart_complete(s))
    }),
    ("multipart_abort_leaves_nothing", |s| {
        Box::pin(multipart_abort(s))
    }),
    ("abandoned_upload_is_listed_and_aborted", |s| {
        Box::pin(abandoned_upload(s))
    }),
    ("invalid_keys_are_refused", |s| Box::pin(invalid_keys(s))),
];

/// Run every case on a fresh store from `new_store`; panics naming each case that failed.
pub async fn run<F, Fut>(mut new_store: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Arc<dyn ObjectStore>>,
{
    let mut failed = Vec::new();
    for (name, case) in CASES {
        let store = new_store().await;
        // A task per case: a failing case is reported and the others still run.
        if let Err(e) = tokio::spawn(case(store)).await {
            eprintln!("conformance case `{name}` failed: {e}");
            failed.push(*name);
        }
    }
    assert!(failed.is_empty(), "conformance cases failed: {failed:?}");
}

fn keys(objects: &[ObjectMeta]) -> Vec<&str> {
    objects.iter().map(|o| o.key.as_str()).collect()
}

/// 5 MiB + `extra` bytes of a pattern: a valid first part of an S3 upload.
fn big(extra: usize, seed: u8) -> Bytes {
    (0..(5 << 20) + extra)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

async fn round_trip(store: Arc<dyn ObjectStore>) {
    let odd = "app/20261122T030000Z/x y+z=ü.json";
    store
        .put(
            "app/20261122T030000Z/manifest.json",
            Bytes::from_static(b"{}"),
        )
        .await
        .expect("put");
    store
        .put(odd, Bytes::from_static(b"12345"))
        .await
        .expect("put");
    store.put("empty", Bytes::new()).await.expect("put empty");
    assert_eq!(
        store.get(odd).await.expect("get"),
        Bytes::from_static(b"12345")
    );
    let head = store.head(odd).await.expect("head").expect("exists");
    assert_eq!((head.key.as_str(), head.size), (odd, 5));
    assert!(head.last_modified.is_some(), "head has a time");
    let (size, mut reader) = store.get_reader(odd).await.expect("reader");
    let mut read = Vec::new();
    reader.read_to_end(&mut read).await.expect("read");
    assert_eq!((size, read.as_slice()), (5, &b"12345"[..]));
    assert_eq!(store.get("empty").await.expect("get empty"), Bytes::new());
    assert_eq!(
        store.head("empty").await.expect("head").map(|m| m.size),
        Some(0)
    );

    let all = store.list("").await.expect("list");
    assert_eq!(
        keys(&all),
        ["app/20261122T030000Z/manifest.json", odd, "empty"]
    );
    assert!(all.iter().all(|o| o.last_modified.is_some()), "{all:?}");
    assert_eq!(all[1].size, 5);

    store.delete(odd).await.expect("delete");
    assert!(store.head(odd).await.expect("head").is_none());
    assert_eq!(
        keys(&store.list("app/").await.expect("list")),
        ["app/20261122T030000Z/manifest.json"]
    );
}

async fn overwrite_replaces(store: Arc<dyn ObjectStore>) {
    store
        .put("locks/app.json", Bytes::from_static(b"first, longer"))
        .await
        .expect("put");
    store
        .put("locks/app.json", Bytes::from_static(b"second"))
        .await
        .expect("overwrite");
    assert_eq!(
        store.get("locks/app.json").await.expect("get"),
        Bytes::from_static(b"second")
    );
    let listed = store.list("locks/").await.expect("list");
    assert_eq!(keys(&listed), ["locks/app.json"], "one object, not two");
    assert_eq!(listed[0].size, 6, "the new size");
    assert!(
        !store
            .put_if_absent("locks/app.json", Bytes::from_static(b"third"))
            .await
            .expect("put_if_absent"),
        "an overwritten object still exists"
    );
}

async fn missing_objects(store: Arc<dyn ObjectStore>) {
    store
        .put("app/present", Bytes::from_static(b"x"))
        .await
        .expect("put");
    // `app` is only a prefix of objects, `app/present/x` goes below an object: both are
    // missing keys like any other.
    for key in ["app/missing", "app", "nothing/here", "app/present/x"] {
        match store.get(key).await {
            Err(StoreError::NotFound { key: k }) => assert_eq!(k, key),
            other => panic!("get {key}: expected NotFound, got {other:?}"),
        }
        match store.get_reader(key).await {
            Err(e) => assert!(e.is_not_found(), "get_reader {key}: {e}"),
            Ok(_) => panic!("get_reader {key}: expected NotFound"),
        }
        assert!(store.head(key).await.expect("head").is_none(), "{key}");
        store
            .delete(key)
            .await
            .expect("deleting a missing key is Ok");
    }
    assert!(store.list("missing/").await.expect("list").is_empty());
    assert!(store.list("app/present/").await.expect("list").is_empty());
    assert!(store.list_multipart("").await.expect("uploads").is_empty());
    let unknown = PendingUpload {
        key: "app/missing".into(),
        upload_id: "no-such-upload".into(),
        initiated: None,
    };
    store
        .abort_multipart(&unknown)
        .await
        .expect("aborting an upload that is gone is Ok");
    assert_eq!(keys(&store.list("").await.expect("list")), ["app/present"]);
}

async fn listing_order_and_prefixes(store: Arc<dyn ObjectStore>) {
    // Written out of order; '-' < '.' < '/' < '0' < 'a' in byte order.
    let written = [
        "b", "a/bc", "a/b/d/e", "a0", "a/b.c", "a/b/c", "a/b-c", "aa", "a/a",
    ];
    for (i, k) in written.iter().enumerate() {
        store.put(k, Bytes::from(vec![b'x'; i + 1])).await.expect(k);
    }
    let all = store.list("").await.expect("list");
    assert_eq!(
        keys(&all),
        ["a/a", "a/b-c", "a/b.c", "a/b/c", "a/b/d/e", "a/bc", "a0", "aa", "b"]
    );
    assert_eq!(all[3].size, 6, "a/b/c is the 6th written");
    assert_eq!(
        keys(&store.list("a/").await.expect("list")).len(),
        6,
        "a directory prefix is recursive"
    );
    assert_eq!(
        keys(&store.list("a/b").await.expect("list")),
        ["a/b-c", "a/b.c", "a/b/c", "a/b/d/e", "a/bc"],
        "a prefix is a string prefix"
    );
    assert_eq!(
        keys(&store.list("a/b/").await.expect("list")),
        ["a/b/c", "a/b/d/e"]
    );
    assert_eq!(keys(&store.list("a").await.expect("list")).len(), 8);
    assert!(store.list("a/b/d/e/").await.expect("list").is_empty());
    assert!(store.list("c").await.expect("list").is_empty());
}

async fn put_if_absent_once(store: Arc<dyn ObjectStore>) {
    let key = "locks/app.json";
    assert!(store
        .put_if_absent(key, Bytes::from_static(b"first"))
        .await
        .expect("first"));
    assert!(!store
        .put_if_absent(key, Bytes::from_static(b"second"))
        .await
        .expect("second"));
    assert_eq!(
        store.get(key).await.expect("get"),
        Bytes::from_static(b"first")
    );
    assert_eq!(keys(&store.list("").await.expect("list")), [key]);
    store.delete(key).await.expect("delete");
    assert!(store
        .put_if_absent(key, Bytes::from_static(b"third"))
        .await
        .expect("after delete"));
    assert_eq!(
        store.get(key).await.expect("get"),
        Bytes::from_static(b"third")
    );
}

async fn put_if_absent_race(store: Arc<dyn ObjectStore>) {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8u8 {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let won = store
                .put_if_absent("locks/race.json", Bytes::from(vec![i; 16]))
                .await
                .expect("put_if_absent");
            (i, won)
        });
    }
    let mut winners = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (i, won) = joined.expect("task");
        if won {
            winners.push(i);
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    assert_eq!(
        store.get("locks/race.json").await.expect("get"),
        Bytes::from(vec![winners[0]; 16]),
        "the winner's body is stored"
    );
}

async fn multipart_complete(store: Arc<dyn ObjectStore>) {
    let key = "app/20261122T030000Z/dump.zst.age";
    let (first, last) = (big(0, 1), Bytes::from_static(b"tail"));
    let mut upload = store.start_multipart(key).await.expect("start");
    upload.put_part(first.clone()).await.expect("part 1");
    upload.put_part(last.clone()).await.expect("part 2");
    assert!(
        store.head(key).await.expect("head").is_none(),
        "invisible until complete"
    );
    assert!(store.list("").await.expect("list").is_empty());
    let pending = store.list_multipart("app/").await.expect("uploads");
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].key, key);
    assert!(store
        .list_multipart("db/")
        .await
        .expect("uploads")
        .is_empty());

    let meta = upload.complete().await.expect("complete");
    assert_eq!(
        (meta.key.as_str(), meta.size),
        (key, (first.len() + 4) as u64)
    );
    let got = store.get(key).await.expect("get");
    assert_eq!(got.len(), first.len() + 4);
    assert!(got.starts_with(&first) && got.ends_with(b"tail"));
    assert!(store.list_multipart("").await.expect("uploads").is_empty());

    let empty = store.start_multipart("empty").await.expect("start");
    assert_eq!(empty.complete().await.expect("complete").size, 0);
    assert_eq!(store.get("empty").await.expect("get"), Bytes::new());
}

async fn multipart_abort(store: Arc<dyn ObjectStore>) {
    // A new key: nothing appears.
    let mut upload = store.start_multipart("app/new").await.expect("start");
    upload.put_part(big(0, 2)).await.expect("part");
    upload.abort().await.expect("abort");
    assert!(store.head("app/new").await.expect("head").is_none());
    assert!(store.list("").await.expect("list").is_empty());
    assert!(store.list_multipart("").await.expect("uploads").is_empty());

    // An existing key: the old object stays as it was.
    store
        .put("app/old", Bytes::from_static(b"old"))
        .await
        .expect("put");
    let mut upload = store.start_multipart("app/old").await.expect("start");
    upload.put_part(big(0, 3)).await.expect("part");
    upload
        .put_part(Bytes::from_static(b"new"))
        .await
        .expect("part");
    upload.abort().await.expect("abort");
    assert_eq!(
        store.get("app/old").await.expect("get"),
        Bytes::from_static(b"old")
    );
    assert_eq!(keys(&store.list("").await.expect("list")), ["app/old"]);
    assert!(store.list_multipart("").await.expect("uploads").is_empty());
}

async fn abandoned_upload(store: Arc<dyn ObjectStore>) {
    // A crashed run's upload: listed until someone aborts it by id.
    let mut upload = store.start_multipart("app/x/dump").await.expect("start");
    upload
        .put_part(Bytes::from_static(b"partial"))
        .await
        .expect("part");
    let pending = store.list_multipart("app/").await.expect("uploads");
    assert_eq!(pending.len(), 1, "{pending:?}");
    store.abort_multipart(&pending[0]).await.expect("abort");
    store
        .abort_multipart(&pending[0])
        .await
        .expect("aborting twice is Ok");
    assert!(store.list_multipart("").await.expect("uploads").is_empty());
    // The run that owned it, still alive, cannot publish it any more.
    assert!(
        upload.complete().await.is_err(),
        "complete after abort fails"
    );
    assert!(store.head("app/x/dump").await.expect("head").is_none());
    assert!(store.list("").await.expect("list").is_empty());
}

async fn invalid_keys(store: Arc<dyn ObjectStore>) {
    for key in ["", "/a", "a/", "a//b", "a/../b", "./a", "a\\b"] {
        let invalid = |r: Result<(), StoreError>| {
            assert!(
                matches!(r, Err(StoreError::InvalidKey { .. })),
                "{key:?}: {r:?}"
            )
        };
        invalid(store.put(key, Bytes::new()).await);
        invalid(store.put_if_absent(key, Bytes::new()).await.map(drop));
        invalid(store.get(key).await.map(drop));
        invalid(store.head(key).await.map(drop));
        invalid(store.delete(key).await);
        invalid(store.start_multipart(key).await.map(drop));
    }
    for prefix in ["/", "/a", "a//", "../"] {
        assert!(
            matches!(store.list(prefix).await, Err(StoreError::InvalidKey { .. })),
            "{prefix:?}"
        );
    }
    assert!(store.list("").await.expect("list").is_empty());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_memory_store_conforms() {
        run(|| async { Arc::new(crate::MemoryStore::new()) as Arc<dyn ObjectStore> }).await;
        run(|| async { Arc::new(crate::MemoryStore::versioned()) as Arc<dyn ObjectStore> }).await;
        run(|| async { Arc::new(crate::MemoryStore::object_lock()) as Arc<dyn ObjectStore> }).await;
    }

    #[tokio::test]
    async fn the_directory_store_conforms() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut n = 0;
        run(|| {
            n += 1;
            let root = tmp.path().join(format!("repo{n}"));
            async move {
                crate::open(&crate::Location::Directory { root })
                    .await
                    .expect("open")
            }
        })
        .await;
    }
}
