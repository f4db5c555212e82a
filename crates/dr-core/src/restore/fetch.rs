//! Fetching from the store: the encrypted details, the globals script and the archive, each
//! checked against the manifest's digest before use; several objects at once into files, or
//! checked into nothing (`--check-first`).

use std::io::Write;
use std::path::{Path, PathBuf};

use dr_catalog::{BackupDetails, Manifest, ObjectRecord, ObjectRole};
use dr_stream::Identities;
use futures::{StreamExt, TryStreamExt};

use crate::{Context, Error, Kind, Result};

pub(super) enum ArchiveFile {
    Temp(tempfile::NamedTempFile),
    Kept(PathBuf),
}

impl ArchiveFile {
    pub(super) fn path(&self) -> &Path {
        match self {
            ArchiveFile::Temp(t) => t.path(),
            ArchiveFile::Kept(p) => p,
        }
    }
}

pub(super) fn check_digest(rec: &ObjectRecord, bytes: &[u8]) -> Result<()> {
    let actual = dr_stream::sha256_hex(bytes);
    if actual != rec.sha256 {
        return Err(Error::from(dr_stream::StreamError::DigestMismatch {
            object: rec.key.clone(),
            expected: rec.sha256.clone(),
            actual,
        }));
    }
    Ok(())
}

/// The encrypted table list and counts.
pub async fn fetch_details(
    ctx: &Context,
    m: &Manifest,
    identities: &Identities,
) -> Result<BackupDetails> {
    let rec = m.object(ObjectRole::Details).ok_or_else(|| {
        Error::new(
            Kind::Integrity,
            format!("backup {} has no details object", m.id),
        )
    })?;
    let bytes = ctx
        .store
        .get(&rec.key)
        .await
        .map_err(|e| Error::from(e).context(format!("backup {}", m.id)))?;
    check_digest(rec, &bytes)?;
    let plain =
        dr_stream::unseal(&bytes, identities, &rec.key).map_err(|e| name_recipients(e, m))?;
    let details: BackupDetails = serde_json::from_slice(&plain)
        .map_err(|e| Error::new(Kind::Integrity, format!("`{}` is not valid: {e}", rec.key)))?;
    cross_check(m, &details)?;
    Ok(details)
}

/// The manifest against the details (`dr_catalog::cross_check`): a manifest that lost or
/// gained an object is refused before any target is touched.
fn cross_check(m: &Manifest, details: &BackupDetails) -> Result<()> {
    if details.objects.is_empty() {
        tracing::debug!(
            backup = %m.id,
            "the details do not record the backup's objects (made by an older dr): the manifest's object list is checked only against the tables' data streams"
        );
    }
    dr_catalog::cross_check(m, details).map_err(|e| {
        Error::new(
            Kind::Integrity,
            format!(
                "backup {}: the manifest does not match the backup's encrypted details: {e}; nothing was changed",
                m.id
            ),
        )
        .with_hint("the manifest was edited or damaged after the backup was made (by someone with write access to the repository?): do not restore it; restore an older backup (`dr list`) and find out who changed the repository")
    })
}

/// An identity that does not fit: the hint names the backup's recipients (its manifest's),
/// whose identity would decrypt it, not the configured identity's own.
fn name_recipients(e: dr_stream::StreamError, m: &Manifest) -> Error {
    let wrong = matches!(e, dr_stream::StreamError::WrongIdentity { .. });
    let mut err = Error::from(e);
    if wrong {
        err.hint = Some(if m.recipients.is_empty() {
            "the backup's manifest does not record its recipients: point encryption.identity_file at the identity the backup host encrypted to".to_string()
        } else {
            format!(
                "backup {} was encrypted to {}: point encryption.identity_file at the identity of one of them (`# public key:` in the identity file names its recipient)",
                m.id,
                m.recipients.join(", ")
            )
        });
    }
    err
}

/// The `pg_dumpall --globals-only` script, checked and decrypted; also written to
/// `to_file` when given.
pub(super) async fn fetch_globals(
    ctx: &Context,
    m: &Manifest,
    identities: &Identities,
    to_file: Option<&Path>,
) -> Result<Vec<u8>> {
    let rec = m.object(ObjectRole::Globals).ok_or_else(|| {
        Error::new(
            Kind::Integrity,
            format!("backup {} has no globals object", m.id),
        )
    })?;
    let bytes = ctx.store.get(&rec.key).await?;
    check_digest(rec, &bytes)?;
    let sql = dr_stream::unseal(&bytes, identities, &rec.key)?;
    if let Some(p) = to_file {
        write_file_atomically(p, &sql)?;
        tracing::info!("roles and tablespaces written to {}", p.display());
    }
    Ok(sql)
}

/// Download, verify and decrypt the dump into `path`. On any error the file is removed.
/// `durable`: fsync before returning (a file the operator keeps); a temp archive that
/// pg_restore reads at once is served from the page cache and need not wait for the disk.
pub async fn fetch_archive(
    ctx: &Context,
    dump: &ObjectRecord,
    identities: &Identities,
    path: &Path,
    durable: bool,
) -> Result<()> {
    let reader = open_stream(ctx, dump).await?;
    // Decrypted data: readable by the owner only, like the identity.
    let file = private_file(path)
        .map_err(|e| Error::new(Kind::Failed, format!("creating {}: {e}", path.display())))?;
    let bar = crate::progress::bytes_bar(ctx.progress, "fetching", Some(dump.raw_bytes));
    let bar2 = bar.clone();
    let work = dr_stream::decode_from(
        reader,
        std::io::BufWriter::with_capacity(1024 * 1024, file),
        identities.clone(),
        Some(dump.sha256.clone()),
        dump.key.clone(),
        move |n| bar2.set_position(n),
        move |decoded, mut out| {
            let stats = decoded?;
            out.flush().map_err(|e| dr_stream::StreamError::Io {
                stage: "writing the archive".into(),
                source: e,
            })?;
            if durable {
                out.get_ref()
                    .sync_all()
                    .map_err(|e| dr_stream::StreamError::Io {
                        stage: "syncing the archive".into(),
                        source: e,
                    })?;
            }
            Ok(stats)
        },
    );
    let result = tokio::select! {
        r = work => r.and_then(|r| r).map_err(Error::from),
        _ = ctx.cancel.cancelled() => Err(Error::interrupted("the restore")),
    };
    bar.finish_and_clear();
    if let Err(e) = result {
        let _ = std::fs::remove_file(path);
        return Err(e.context(format!("backup object {}", dump.key)));
    }
    Ok(())
}

/// A new file only the owner can read (it holds the database's data), truncated if left
/// over from an earlier try.
pub(crate) fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

pub(super) fn write_file_atomically(path: &Path, data: &[u8]) -> Result<()> {
    let partial = path.with_extension("partial");
    private_file(&partial)
        .and_then(|mut f| f.write_all(data))
        .and_then(|()| std::fs::rename(&partial, path))
        .map_err(|e| Error::new(Kind::Failed, format!("writing {}: {e}", path.display())))
}

/// The object's stored size against the manifest's, before a byte of it is used.
fn check_size(key: &str, recorded: u64, size: u64) -> Result<()> {
    if size != recorded {
        return Err(Error::new(
            Kind::Integrity,
            format!(
                "`{key}` is {size} bytes but the manifest records {recorded}: the object is truncated or was replaced"
            ),
        )
        .with_hint("restore an older backup (`dr list`) and investigate the repository"));
    }
    Ok(())
}

/// The stored stream of `rec`, each object's size checked against the manifest before a
/// byte of it is used: its one object, or (formats 4 and 5) its objects one after another,
/// each opened when the one before it is read to the end. The digest of the whole stream is
/// the caller's to check (`rec.sha256`).
pub(crate) async fn open_stream(
    ctx: &Context,
    rec: &ObjectRecord,
) -> Result<Box<dyn tokio::io::AsyncRead + Send + Unpin>> {
    let objects: Vec<(String, u64)> = rec
        .stored_objects()
        .into_iter()
        .map(|(k, b)| (k.to_owned(), b))
        .collect();
    let Some(((first_key, first_bytes), rest)) = objects.split_first() else {
        return Err(Error::new(
            Kind::Integrity,
            format!("`{}` lists no objects", rec.key),
        ));
    };
    let (size, first) = ctx
        .store
        .get_reader(first_key)
        .await
        .map_err(|e| Error::from(e).context(format!("fetching {first_key}")))?;
    check_size(first_key, *first_bytes, size)?;
    if rest.is_empty() {
        return Ok(first);
    }
    let store = std::sync::Arc::clone(&ctx.store);
    let rest = futures::stream::iter(rest.to_vec())
        .then(move |(key, bytes)| {
            let store = std::sync::Arc::clone(&store);
            async move {
                let (size, reader) = store.get_reader(&key).await.map_err(|e| {
                    std::io::Error::other(Error::from(e).context(format!("fetching {key}")))
                })?;
                check_size(&key, bytes, size).map_err(std::io::Error::other)?;
                Ok::<_, std::io::Error>(tokio_util::io::ReaderStream::new(reader))
            }
        })
        .try_flatten();
    let all = tokio_util::io::ReaderStream::new(first).chain(rest);
    Ok(Box::new(tokio_util::io::StreamReader::new(Box::pin(all))))
}

/// A writer that refuses to go on once `stop` is cancelled (another stream failed, or a
/// signal), and that treats a reader gone away (`EPIPE`: pg_restore exited, having read what
/// it needed) as a sink, so that the digest of the whole object is still checked.
pub(super) struct StopWriter<W> {
    inner: W,
    stop: tokio_util::sync::CancellationToken,
    /// Set when a write was refused because of `stop`: the error that follows is not this
    /// stream's own.
    pub(super) stopped: bool,
    gone: bool,
}

impl<W: Write> StopWriter<W> {
    pub(super) fn new(inner: W, stop: tokio_util::sync::CancellationToken) -> Self {
        StopWriter {
            inner,
            stop,
            stopped: false,
            gone: false,
        }
    }
}

impl<W: Write> Write for StopWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.stop.is_cancelled() {
            self.stopped = true;
            return Err(std::io::Error::other("the restore was stopped"));
        }
        if self.gone {
            return Ok(buf.len());
        }
        match self.inner.write(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.gone = true;
                Ok(buf.len())
            }
            r => r,
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if self.gone {
            return Ok(());
        }
        match self.inner.flush() {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.gone = true;
                Ok(())
            }
            r => r,
        }
    }
}

/// Download `rec` and decode it (SHA-256, age, zstd) into `out` on a blocking thread,
/// stopping when `stop` is cancelled. `on_error` runs on that thread as soon as the object
/// proves bad, before `out` is dropped: a pipe's reader must learn the stream failed before
/// it sees the end of its input.
pub(super) async fn decode_into<W: Write + Send + 'static>(
    ctx: &Context,
    rec: &ObjectRecord,
    identities: &Identities,
    out: W,
    stop: tokio_util::sync::CancellationToken,
    on_error: impl FnOnce(&Error) + Send + 'static,
) -> Result<dr_stream::DecodeStats> {
    let reader = match open_stream(ctx, rec).await {
        Ok(r) => r,
        Err(e) => {
            on_error(&e);
            return Err(e);
        }
    };
    let key = rec.key.clone();
    dr_stream::decode_from(
        reader,
        StopWriter::new(out, stop),
        identities.clone(),
        Some(rec.sha256.clone()),
        rec.key.clone(),
        |_| {},
        move |decoded, w| {
            let r = decoded.map_err(|e| Error::from(e).context(format!("backup object {key}")));
            if let Err(e) = &r {
                if !w.stopped {
                    on_error(e);
                }
            }
            drop(w);
            r
        },
    )
    .await?
}

/// Download, check and decrypt each object into its file, up to `jobs` at once.
pub(super) async fn fetch_files(
    ctx: &Context,
    files: &[(&ObjectRecord, PathBuf)],
    identities: &Identities,
    jobs: u32,
    durable: bool,
) -> Result<()> {
    // Futures collected first: a closure in the stream would make the future not `Send`
    // for the daemon (rustc's higher-ranked lifetime limits).
    let futs: Vec<_> = files
        .iter()
        .map(|(rec, path)| fetch_archive(ctx, rec, identities, path, durable))
        .collect();
    let mut work = futures::stream::iter(futs).buffer_unordered(width(jobs));
    while let Some(r) = work.next().await {
        r?;
    }
    Ok(())
}

/// `--check-first`: download every object and check its digest and decryption, decoding
/// into nothing, up to `jobs` at once. The first failure stops the others.
pub(super) async fn check_objects(
    ctx: &Context,
    objects: &[&ObjectRecord],
    identities: &Identities,
    jobs: u32,
) -> Result<()> {
    let stop = ctx.cancel.child_token();
    let futs: Vec<_> = objects
        .iter()
        .map(|rec| decode_into(ctx, rec, identities, std::io::sink(), stop.clone(), |_| {}))
        .collect();
    let mut work = futures::stream::iter(futs).buffer_unordered(width(jobs));
    while let Some(r) = work.next().await {
        if let Err(e) = r {
            stop.cancel();
            if ctx.cancel.is_cancelled() {
                return Err(Error::interrupted("the check before the restore"));
            }
            let mut e = e.context("checking the backup before touching the target");
            e.details
                .push("the target was not touched: nothing was changed".to_string());
            return Err(e);
        }
    }
    if ctx.cancel.is_cancelled() {
        return Err(Error::interrupted("the check before the restore"));
    }
    Ok(())
}

/// How many of a step's streams run at once.
pub(super) fn width(jobs: u32) -> usize {
    usize::try_from(jobs).unwrap_or(1).max(1)
}
