//! The streaming stages between `pg_dump` and the object store, and back:
//! count → zstd → age → SHA-256, and SHA-256 → age -d → zstd -d.
//!
//! dr-stream owns the byte formats of stored objects. They are plain, standard formats so a
//! backup can be restored with nothing but the `age` and `zstd` CLIs: an object is
//! `age(zstd(raw))`, one zstd frame inside one age file.
//!
//! The stages are synchronous `std::io` over bounded buffers: memory does not grow with the
//! data. [`bridge`] is the one place they cross to async I/O, on a blocking thread: an async
//! download decoded into a writer, an encoded stream cut into parts for async uploads.
//!
//! ```
//! use dr_stream::{Identities, Recipients};
//! let identity = age::x25519::Identity::generate();
//! let recipients = Recipients::parse(&[identity.to_public().to_string()]).unwrap();
//! let identities = Identities::from_identities(vec![identity]);
//! let sealed = dr_stream::seal(b"hello", &recipients, 3).unwrap();
//! assert_eq!(dr_stream::unseal(&sealed, &identities, "example").unwrap(), b"hello");
//! ```

pub mod bridge;
mod io;
mod keys;
pub mod signing;

pub use bridge::{decode_from, encode_into_parts, EncodedParts, Encoding};
pub use io::{CountingReader, HashingReader, HashingWriter, PartWriter};
pub use keys::{generate_identity, Identities, Recipients};

use std::io::{Read, Write};

/// What went wrong in a stage, naming the object; the next step is [`StreamError::hint`].
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("`{value}` is not an age recipient: {detail}")]
    BadRecipient { value: String, detail: String },
    #[error("cannot use age identity file {path}: {detail}")]
    BadIdentity {
        path: String,
        detail: String,
        hint: String,
    },
    #[error("none of the configured age identities can decrypt `{object}`")]
    WrongIdentity { object: String, recipients: String },
    #[error("`{object}` is corrupt or truncated: {detail}")]
    Corrupt { object: String, detail: String },
    #[error("checksum mismatch for `{object}`: expected sha256 {expected}, got {actual}")]
    DigestMismatch {
        object: String,
        expected: String,
        actual: String,
    },
    #[error("{stage}: {source}")]
    Io {
        stage: String,
        #[source]
        source: std::io::Error,
    },
    /// The blocking thread of a stage (see [`bridge`]) panicked or was cancelled.
    #[error("the {stage} thread failed: {detail}")]
    Thread { stage: &'static str, detail: String },
}

impl StreamError {
    /// The next step for the operator (never part of the message).
    pub fn hint(&self) -> Option<String> {
        match self {
            StreamError::BadRecipient { .. } => {
                Some("recipients look like age1...; `dr keygen` prints one".into())
            }
            StreamError::BadIdentity { hint, .. } => Some(hint.clone()),
            StreamError::WrongIdentity { recipients, .. } => Some(format!("the backup was encrypted to {recipients}; point encryption.identity_file at the matching identity")),
            StreamError::Corrupt { .. } => Some("the stored object does not match what was written; restore an older backup (`dr list`) and investigate the repository".into()),
            StreamError::DigestMismatch { .. } => Some(
                "the object was changed after the backup; restore an older backup (`dr list`)"
                    .into(),
            ),
            StreamError::Io { .. } => None,
            StreamError::Thread { .. } => Some(
                "this is a bug in dr: run again with RUST_BACKTRACE=1 and report the output".into(),
            ),
        }
    }

    /// Trying again may help: reading or writing failed (network or disk trouble), the data
    /// was not found bad. A full local disk is not transient: it needs room.
    pub fn is_transient(&self) -> bool {
        match self {
            StreamError::Io { source, .. } => !io_needs_room(source),
            _ => false,
        }
    }

    fn io(stage: &str, source: std::io::Error) -> StreamError {
        StreamError::Io {
            stage: stage.to_string(),
            source,
        }
    }
}

/// A local disk that is full (or over quota): retrying will not help.
pub fn io_needs_room(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

/// Sizes and digest of one encoded object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeStats {
    /// Bytes read from the input (the raw archive).
    pub raw_bytes: u64,
    /// Bytes written (what is stored).
    pub stored_bytes: u64,
    /// SHA-256 of the stored bytes, hex.
    pub sha256: String,
}

/// Compression settings.
#[derive(Debug, Clone, Copy)]
pub struct Compression {
    pub level: i32,
    /// zstd worker threads; 0 compresses on the calling thread.
    pub threads: u32,
}

/// `input` → zstd → age → `output`, hashing what is written. `progress` gets raw bytes so far.
pub fn encode<R: Read, W: Write>(
    input: R,
    output: W,
    recipients: &Recipients,
    compression: Compression,
    progress: &mut dyn FnMut(u64),
) -> Result<EncodeStats, StreamError> {
    let hashing = HashingWriter::new(output);
    let encryptor = age::Encryptor::with_recipients(recipients.iter())
        .map_err(|e| StreamError::io("age", std::io::Error::other(e.to_string())))?;
    let age_writer = encryptor
        .wrap_output(hashing)
        .map_err(|e| StreamError::io("writing the age header", e))?;
    let mut zstd = zstd::stream::write::Encoder::new(age_writer, compression.level)
        .map_err(|e| StreamError::io("starting zstd", e))?;
    if compression.threads > 0 {
        zstd.multithread(compression.threads)
            .map_err(|e| StreamError::io("starting zstd workers", e))?;
        // zstd's default job is 4x the window (8 MiB at level 3) with several jobs buffered:
        // tens of MiB. 1 MiB jobs keep memory flat at a negligible cost in ratio.
        zstd.set_parameter(zstd::stream::raw::CParameter::JobSize(1024 * 1024))
            .map_err(|e| StreamError::io("configuring zstd workers", e))?;
    }
    let mut input = CountingReader::new(input);
    // 256 KiB: large enough for throughput, small enough to stay out of the memory budget.
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(StreamError::io("reading the input", e)),
        };
        zstd.write_all(&buf[..n])
            .map_err(|e| StreamError::io("compressing and uploading", e))?;
        progress(input.count());
    }
    let age_writer = zstd
        .finish()
        .map_err(|e| StreamError::io("finishing zstd", e))?;
    let mut hashing = age_writer
        .finish()
        .map_err(|e| StreamError::io("finishing age", e))?;
    hashing
        .flush()
        .map_err(|e| StreamError::io("flushing the output", e))?;
    let (stored_bytes, sha256, _) = hashing.finish();
    Ok(EncodeStats {
        raw_bytes: input.count(),
        stored_bytes,
        sha256,
    })
}

/// Sizes of one decoded object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeStats {
    pub stored_bytes: u64,
    pub raw_bytes: u64,
}

/// `input` → age -d → zstd -d → `output`, checking the stored bytes' SHA-256 at the end.
/// `object` names the object in errors. Nothing written to `output` may be trusted unless
/// this returns `Ok`.
pub fn decode<R: Read, W: Write>(
    input: R,
    output: W,
    identities: &Identities,
    expected_sha256: Option<&str>,
    object: &str,
    progress: &mut dyn FnMut(u64),
) -> Result<DecodeStats, StreamError> {
    let mut hashing = HashingReader::new(input);
    let result = decode_inner(&mut hashing, output, identities, object, progress);
    if let Some(e) = hashing.source_error() {
        // The store or network failed, not the data.
        return Err(StreamError::io(&format!("reading `{object}`"), e));
    }
    let raw_bytes = result?;
    // Drain anything age did not need (trailing garbage) so the digest covers the object.
    let mut sink = [0u8; 8192];
    loop {
        match hashing.read(&mut sink) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return Err(StreamError::io(&format!("reading `{object}`"), e)),
        }
    }
    let (stored_bytes, actual) = hashing.finish();
    if let Some(expected) = expected_sha256 {
        if !expected.eq_ignore_ascii_case(&actual) {
            return Err(StreamError::DigestMismatch {
                object: object.to_string(),
                expected: expected.to_string(),
                actual,
            });
        }
    }
    Ok(DecodeStats {
        stored_bytes,
        raw_bytes,
    })
}

fn decode_inner<R: Read, W: Write>(
    input: &mut HashingReader<R>,
    mut output: W,
    identities: &Identities,
    object: &str,
    progress: &mut dyn FnMut(u64),
) -> Result<u64, StreamError> {
    let corrupt = |detail: String| StreamError::Corrupt {
        object: object.to_string(),
        detail,
    };
    let decryptor = age::Decryptor::new_buffered(std::io::BufReader::new(input))
        .map_err(|e| corrupt(format!("not a readable age file: {e}")))?;
    let reader = match decryptor.decrypt(identities.iter()) {
        Ok(r) => r,
        Err(age::DecryptError::NoMatchingKeys) => {
            return Err(StreamError::WrongIdentity {
                object: object.to_string(),
                recipients: identities.describe_expected(),
            })
        }
        Err(e) => return Err(corrupt(format!("age: {e}"))),
    };
    let mut zstd =
        zstd::stream::read::Decoder::new(reader).map_err(|e| corrupt(format!("zstd: {e}")))?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut raw = 0u64;
    loop {
        let n = match zstd.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(corrupt(e.to_string())),
        };
        output
            .write_all(&buf[..n])
            .map_err(|e| StreamError::io("writing the decrypted archive", e))?;
        raw += n as u64;
        progress(raw);
    }
    output
        .flush()
        .map_err(|e| StreamError::io("writing the decrypted archive", e))?;
    Ok(raw)
}

/// Compress and encrypt a small in-memory object (details, globals, verification details).
pub fn seal(data: &[u8], recipients: &Recipients, level: i32) -> Result<Vec<u8>, StreamError> {
    let mut out = Vec::new();
    encode(
        data,
        &mut out,
        recipients,
        Compression { level, threads: 0 },
        &mut |_| {},
    )?;
    Ok(out)
}

/// The inverse of [`seal`].
pub fn unseal(data: &[u8], identities: &Identities, object: &str) -> Result<Vec<u8>, StreamError> {
    let mut out = Vec::new();
    decode(data, &mut out, identities, None, object, &mut |_| {})?;
    Ok(out)
}

/// SHA-256 of a byte slice, hex.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Recipients, Identities) {
        let id = age::x25519::Identity::generate();
        let r = Recipients::parse(&[id.to_public().to_string()]).expect("recipient");
        (r, Identities::from_identities(vec![id]))
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| ((i * 31) % 251) as u8).collect()
    }

    #[test]
    fn round_trip_with_digest() {
        let (r, i) = pair();
        let input = data(3 * 1024 * 1024 + 17);
        for threads in [0, 1, 2] {
            let mut stored = Vec::new();
            let stats = encode(
                &input[..],
                &mut stored,
                &r,
                Compression { level: 3, threads },
                &mut |_| {},
            )
            .expect("encode");
            assert_eq!(stats.raw_bytes, input.len() as u64);
            assert_eq!(stats.stored_bytes, stored.len() as u64);
            assert_eq!(stats.sha256, sha256_hex(&stored));
            let mut out = Vec::new();
            decode(
                &stored[..],
                &mut out,
                &i,
                Some(&stats.sha256),
                "x",
                &mut |_| {},
            )
            .expect("decode");
            assert_eq!(out, input);
        }
    }

    #[test]
    fn a_flipped_byte_is_refused() {
        let (r, i) = pair();
        let mut stored = seal(&data(200_000), &r, 3).expect("seal");
        let at = stored.len() / 2;
        stored[at] ^= 1;
        let e = unseal(&stored, &i, "app/x/dump.zst.age").expect_err("corrupt");
        assert!(matches!(e, StreamError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("app/x/dump.zst.age"));
    }

    #[test]
    fn a_truncated_object_is_refused() {
        let (r, i) = pair();
        let stored = seal(&data(200_000), &r, 3).expect("seal");
        let e = unseal(&stored[..stored.len() - 100], &i, "x").expect_err("truncated");
        assert!(matches!(e, StreamError::Corrupt { .. }), "{e}");
    }

    #[test]
    fn the_wrong_identity_is_named_as_such() {
        let (r, _) = pair();
        let (_, other) = pair();
        let stored = seal(b"secret", &r, 3).expect("seal");
        let e = unseal(&stored, &other, "x").expect_err("wrong key");
        assert!(matches!(e, StreamError::WrongIdentity { .. }), "{e}");
    }

    #[test]
    fn a_digest_mismatch_is_reported_even_when_age_is_happy() {
        let (r, i) = pair();
        let stored = seal(b"secret", &r, 3).expect("seal");
        let e = decode(
            &stored[..],
            Vec::new(),
            &i,
            Some(&"0".repeat(64)),
            "x",
            &mut |_| {},
        )
        .expect_err("mismatch");
        assert!(matches!(e, StreamError::DigestMismatch { .. }), "{e}");
    }

    #[test]
    fn bad_recipients_are_named() {
        let e = Recipients::parse(&["age1nope".to_string()]).expect_err("bad");
        assert!(e.to_string().contains("age1nope"));
    }
}
