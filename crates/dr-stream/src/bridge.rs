//! The one crossing between async I/O and the blocking stages: [`decode_from`] reads an async
//! download on a blocking thread, [`encode_into_parts`] cuts an encoded stream into parts for
//! async uploads. Memory stays bounded (one part in flight, fixed buffers), and a blocking
//! thread that panics comes back as [`StreamError::Thread`] naming its stage.

use std::io::{Read, Write};
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::AsyncRead;
use tokio::sync::mpsc;
use tokio::task::{JoinError, JoinHandle};
use tokio_util::io::SyncIoBridge;

use crate::{decode, encode, Compression, DecodeStats, EncodeStats, Identities, PartWriter};
use crate::{Recipients, StreamError};

/// The stage names of the blocking threads, as [`StreamError::Thread`] reports them.
const DECRYPTION: &str = "decryption";
const COMPRESSION: &str = "compression";

fn thread_failed(stage: &'static str, e: JoinError) -> StreamError {
    StreamError::Thread {
        stage,
        detail: e.to_string(),
    }
}

/// [`decode`] `reader` (a download) into `out` on a blocking thread, checking the stored bytes
/// against `expected_sha256`; `progress` gets raw bytes so far. `then` runs on that thread
/// with the outcome and `out` once decoding ends, before `out` is dropped: to flush or sync a
/// file, or to tell a pipe's reader the stream failed before it sees the end of its input.
///
/// Dropping the returned future (a signal) leaves the thread to end on its own, at the first
/// failed read or write.
pub async fn decode_from<R, W, T>(
    reader: R,
    mut out: W,
    identities: Identities,
    expected_sha256: Option<String>,
    object: String,
    mut progress: impl FnMut(u64) + Send + 'static,
    then: impl FnOnce(Result<DecodeStats, StreamError>, W) -> T + Send + 'static,
) -> Result<T, StreamError>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: Write + Send + 'static,
    T: Send + 'static,
{
    let input = SyncIoBridge::new(reader);
    tokio::task::spawn_blocking(move || {
        let r = decode(
            input,
            &mut out,
            &identities,
            expected_sha256.as_deref(),
            &object,
            &mut progress,
        );
        then(r, out)
    })
    .await
    .map_err(|e| thread_failed(DECRYPTION, e))
}

/// What [`encode_into_parts`] produced: the archive's stats and how many parts it cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedParts {
    pub stats: EncodeStats,
    pub parts: u64,
}

/// The blocking thread of [`encode_into_parts`].
pub struct Encoding(JoinHandle<Result<EncodedParts, StreamError>>);

impl Encoding {
    /// Wait for the thread: it ends once the input ends, or at the first part it cannot send
    /// (the receiver was dropped: "the upload stopped").
    pub async fn finish(self) -> Result<EncodedParts, StreamError> {
        self.0
            .await
            .map_err(|e| thread_failed(COMPRESSION, e))
            .and_then(|r| r)
    }
}

/// [`encode`] `input` on a blocking thread, started now, cutting what is stored into parts of
/// `part_size` bytes (the last one shorter) sent to the returned receiver. The channel holds
/// one part, and the thread fills the next only once the receiver took it: a part waits
/// either in the channel or in the encoder, never both, so a stream holds the parts its
/// upload has in flight plus one, whatever the size of the input. `progress` gets raw bytes
/// so far.
pub fn encode_into_parts<R: Read + Send + 'static>(
    input: R,
    recipients: Arc<Recipients>,
    compression: Compression,
    part_size: u64,
    mut progress: impl FnMut(u64) + Send + 'static,
) -> (mpsc::Receiver<Bytes>, Encoding) {
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    let part_usize = usize::try_from(part_size).unwrap_or(usize::MAX);
    let runtime = tokio::runtime::Handle::current();
    let handle = tokio::task::spawn_blocking(move || {
        let stopped = || std::io::Error::other("the upload stopped");
        let mut parts = PartWriter::new(part_usize, |part| {
            tx.blocking_send(part).map_err(|_| stopped())?;
            // Until the receiver takes it: the next part's buffer is not filled meanwhile.
            runtime
                .block_on(tx.reserve())
                .map(drop)
                .map_err(|_| stopped())
        });
        let stats = encode(input, &mut parts, &recipients, compression, &mut progress)?;
        let parts = parts.finish().map_err(|e| StreamError::Io {
            stage: "uploading the last part".into(),
            source: e,
        })?;
        Ok(EncodedParts { stats, parts })
    });
    (rx, Encoding(handle))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Arc<Recipients>, Identities) {
        let id = age::x25519::Identity::generate();
        let r = Recipients::parse(&[id.to_public().to_string()]).expect("recipient");
        (Arc::new(r), Identities::from_identities(vec![id]))
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| ((i * 31) % 251) as u8).collect()
    }

    const FAST: Compression = Compression {
        level: 1,
        threads: 0,
    };

    #[tokio::test]
    async fn parts_come_back_through_decode_from() {
        let (r, i) = pair();
        let input = data(700_000);
        let (mut rx, encoding) =
            encode_into_parts(std::io::Cursor::new(input.clone()), r, FAST, 4096, |_| {});
        let mut stored = Vec::new();
        let mut sizes = Vec::new();
        while let Some(p) = rx.recv().await {
            sizes.push(p.len());
            stored.extend_from_slice(&p);
        }
        let done = encoding.finish().await.expect("encode");
        assert_eq!(done.parts, sizes.len() as u64);
        assert!(sizes[..sizes.len() - 1].iter().all(|&n| n == 4096));
        assert_eq!(done.stats.sha256, crate::sha256_hex(&stored));
        assert_eq!(done.stats.raw_bytes, input.len() as u64);

        let seen = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let seen2 = Arc::clone(&seen);
        let (stats, out) = decode_from(
            std::io::Cursor::new(stored),
            Vec::new(),
            i,
            Some(done.stats.sha256),
            "x".to_string(),
            move |n| seen2.store(n, std::sync::atomic::Ordering::Relaxed),
            |r, out| r.map(|s| (s, out)),
        )
        .await
        .expect("thread")
        .expect("decode");
        assert_eq!(out, input);
        assert_eq!(stats.raw_bytes, input.len() as u64);
        assert_eq!(
            seen.load(std::sync::atomic::Ordering::Relaxed),
            input.len() as u64
        );
    }

    #[tokio::test]
    async fn a_dropped_receiver_stops_the_encoder() {
        let (r, _) = pair();
        let (rx, encoding) =
            encode_into_parts(std::io::Cursor::new(data(700_000)), r, FAST, 1024, |_| {});
        drop(rx);
        let e = encoding.finish().await.expect_err("stopped");
        assert!(e.to_string().contains("the upload stopped"), "{e}");
    }

    #[tokio::test]
    async fn a_panic_on_the_thread_names_its_stage() {
        let (r, i) = pair();
        let stored = crate::seal(b"secret", &r, 1).expect("seal");
        let e = decode_from(
            std::io::Cursor::new(stored),
            Vec::new(),
            i,
            None,
            "x".to_string(),
            |_| {},
            |_, _| -> () { panic!("boom") },
        )
        .await
        .expect_err("panicked");
        assert!(
            matches!(
                e,
                StreamError::Thread {
                    stage: DECRYPTION,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("decryption thread failed"), "{e}");
    }
}
