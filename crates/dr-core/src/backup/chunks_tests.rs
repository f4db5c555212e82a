use std::sync::Mutex;

use bytes::Bytes;
use dr_store::{Location, MemoryStore, ObjectStore, PartLimits};

use super::*;

const MIB: usize = 1024 * 1024;

/// A bucket that takes 2 parts per upload (`[repository.s3] max_parts = 2`).
fn two_part_store() -> MemoryStore {
    MemoryStore::new().with_location(Location::S3 {
        bucket: "memory".into(),
        prefix: String::new(),
        endpoint: None,
        region: None,
        path_style: false,
        max_parts: 2,
        object_lock: None,
    })
}

fn part(i: u8, len: usize) -> Bytes {
    Bytes::from(vec![i; len])
}

async fn write(chunks: &mut Chunks<'_>, parts: &[Bytes]) -> Result<()> {
    chunks.start().await?;
    for p in parts {
        chunks.roll_over().await?;
        chunks.put_part(p.clone()).await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_stream_longer_than_max_parts_is_stored_as_several_objects_in_order() {
    let store = two_part_store();
    let plan = store.part_limits().stream_plan(Some(5));
    assert_eq!((plan.part_size, plan.parts_per_object), (5 * MIB as u64, 2));
    let parts: Vec<Bytes> = (0..5)
        .map(|i| part(i, 5 * MIB))
        .chain([part(9, 100)])
        .collect();
    let started = Mutex::new(Vec::new());
    let mut chunks = Chunks::new(&store, "t/id/data-1.zst.age", plan, &started);
    write(&mut chunks, &parts).await.expect("parts");
    let total: u64 = parts.iter().map(|p| p.len() as u64).sum();
    let done = chunks.finish(total).await.expect("finish");
    let keys: Vec<&str> = done.iter().map(|c| c.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "t/id/data-1.zst.age",
            "t/id/data-1.zst.age.0002",
            "t/id/data-1.zst.age.0003"
        ]
    );
    assert_eq!(
        started.into_inner().expect("lock"),
        ["t/id/data-1.zst.age.0002", "t/id/data-1.zst.age.0003"]
    );
    let mut whole = Vec::new();
    for c in &done {
        let body = store.get(&c.key).await.expect("stored");
        assert_eq!(body.len() as u64, c.bytes);
        assert_eq!(dr_stream::sha256_hex(&body), c.sha256);
        whole.extend_from_slice(&body);
    }
    let expected: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
    assert_eq!(whole, expected, "the objects concatenated are the stream");
}

#[tokio::test]
async fn a_stream_that_fits_is_one_object_and_an_empty_one_is_empty() {
    let store = two_part_store();
    let plan = store.part_limits().stream_plan(Some(5));
    let started = Mutex::new(Vec::new());
    let mut chunks = Chunks::new(&store, "t/id/pre-data.zst.age", plan, &started);
    write(&mut chunks, &[part(1, 5 * MIB), part(2, 10)])
        .await
        .expect("parts");
    let done = chunks.finish(5 * MIB as u64 + 10).await.expect("finish");
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].bytes, 5 * MIB as u64 + 10);
    assert!(started.lock().expect("lock").is_empty());

    let empty = Chunks::new(&store, "t/id/post-data.zst.age", plan, &started);
    let done = empty.finish(0).await.expect("finish");
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].bytes, 0);
    assert!(store
        .get("t/id/post-data.zst.age")
        .await
        .expect("empty")
        .is_empty());
}

#[tokio::test]
async fn a_failure_in_the_second_object_aborts_its_upload_and_names_the_first() {
    let store = two_part_store();
    let plan = PartLimits::S3.with_max_parts(2).stream_plan(Some(5));
    store.fail("put_part", "t/id/data-1.zst.age.0002");
    let started = Mutex::new(Vec::new());
    let mut chunks = Chunks::new(&store, "t/id/data-1.zst.age", plan, &started);
    let parts: Vec<Bytes> = (0..4).map(|i| part(i, 5 * MIB)).collect();
    let err = write(&mut chunks, &parts)
        .await
        .expect_err("the second object fails");
    assert!(err.to_string().contains("data-1.zst.age.0002"), "{err}");
    chunks.abort().await;
    assert!(
        store.list_multipart("").await.expect("uploads").is_empty(),
        "no upload left open"
    );
    // The first object was completed; the run's cleanup deletes it with the rest.
    assert!(store
        .head("t/id/data-1.zst.age")
        .await
        .expect("head")
        .is_some());
    assert_eq!(
        started.into_inner().expect("lock"),
        ["t/id/data-1.zst.age.0002"]
    );
}

#[tokio::test]
async fn objects_that_do_not_hold_what_the_encoder_wrote_are_refused() {
    let store = two_part_store();
    let plan = store.part_limits().stream_plan(Some(5));
    let started = Mutex::new(Vec::new());
    let mut chunks = Chunks::new(&store, "t/id/data-1.zst.age", plan, &started);
    write(&mut chunks, &[part(1, 10)]).await.expect("parts");
    let e = chunks.finish(11).await.expect_err("one byte short");
    assert_eq!(e.kind, crate::Kind::Integrity);
    assert!(
        e.to_string()
            .contains("the encoder wrote 11 bytes but 1 objects hold 10"),
        "{e}"
    );
}
