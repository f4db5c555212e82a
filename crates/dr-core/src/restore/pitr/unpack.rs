//! The base backup from the repository into DIR as it downloads: GET (each of its objects in
//! turn) → SHA-256 → age → zstd → tar, through a pipe between the decoding thread and the
//! unpacking thread. No copy of the archive touches the disk; memory is the pipe and the
//! stages' buffers.

use std::path::Path;

use dr_catalog::{Manifest, ObjectRole};
use dr_pg::unpack::{unpack, UnpackError};

use crate::{Context, Error, Kind, Result};

/// What the unpack wrote.
#[derive(Debug, Clone, Copy, Default)]
pub struct Written {
    pub files: u64,
    pub bytes: u64,
}

pub async fn base_into(ctx: &Context, manifest: &Manifest, dir: &Path) -> Result<Written> {
    let object = manifest.object(ObjectRole::BaseTar).ok_or_else(|| {
        Error::new(
            Kind::Integrity,
            format!("the manifest of {} lists no base tar object", manifest.id),
        )
        .with_hint("restore another base backup (`dr list`)")
    })?;
    let identities = ctx.identities()?;
    // Every object's size is checked as it is opened: a truncated or replaced one is refused.
    let reader = crate::restore::fetch::open_stream(ctx, object).await?;
    let (pipe_out, pipe_in) =
        std::io::pipe().map_err(|e| Error::new(Kind::Failed, format!("creating a pipe: {e}")))?;
    let target = dir.to_path_buf();
    let unpacking = tokio::task::spawn_blocking(move || {
        unpack(
            std::io::BufReader::with_capacity(1 << 20, pipe_out),
            &target,
        )
    });
    let bar = crate::progress::bytes_bar(ctx.progress, "restoring base", Some(object.raw_bytes));
    let bar2 = bar.clone();
    let decoding = dr_stream::decode_from(
        reader,
        pipe_in,
        identities,
        Some(object.sha256.clone()),
        object.key.clone(),
        move |n| bar2.set_position(n),
        // The writer is dropped here, so the unpacking side sees the end of the stream.
        |decoded, _pipe| decoded,
    );
    let decoded = tokio::select! {
        r = decoding => r.and_then(|r| r),
        () = ctx.cancel.cancelled() => {
            return Err(Error::new(Kind::Interrupted, "restore interrupted while writing the base backup"));
        }
    };
    bar.finish_and_clear();
    let unpacked = unpacking
        .await
        .map_err(|e| Error::new(Kind::Failed, format!("the unpacking thread failed: {e}")))?;
    // An archive that breaks the rules is the cause even if decoding then failed on the
    // closed pipe; otherwise a decoding failure (digest, decryption) explains a short tar —
    // also when the short tar made the unpacker fail writing a file it could not finish.
    let decoded = decoded.map_err(Error::from);
    match (decoded, unpacked) {
        (Err(d), Err(UnpackError::Write { .. })) if d.kind == Kind::Integrity => Err(d),
        (
            _,
            Err(
                e @ (UnpackError::Path { .. }
                | UnpackError::Kind { .. }
                | UnpackError::Write { .. }),
            ),
        ) => {
            let hint = e.hint();
            let kind = if matches!(e, UnpackError::Write { .. }) {
                Kind::Failed
            } else {
                Kind::Integrity
            };
            let err = Error::new(kind, e.to_string());
            Err(match hint {
                Some(h) => err.with_hint(h),
                None => err,
            })
        }
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => {
            let hint = e.hint();
            let err = Error::new(Kind::Integrity, e.to_string());
            Err(match hint {
                Some(h) => err.with_hint(h),
                None => err,
            })
        }
        (Ok(_), Ok(done)) => Ok(Written {
            files: done.files,
            bytes: done.bytes,
        }),
    }
}
