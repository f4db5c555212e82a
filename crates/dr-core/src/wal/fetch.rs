//! `dr wal fetch NAME DEST`: PostgreSQL's `restore_command`. One archived WAL file, verified,
//! into DEST; or "not in the archive", only when that is the truth.
//!
//! PostgreSQL reads every failure of `restore_command` with a status ≤ 125 as "not in the
//! archive" and ends recovery there (without a recovery target it promotes a copy that
//! silently lacks everything after). So a fetch has three outcomes (docs/design/PITR.md §3):
//! [`Fetched::Written`]; [`Fetched::NotFound`] when no record of NAME exists and NAME is not
//! a gap; and an [`Error`] for everything else (a gap, an untrusted record, a digest that
//! differs, a store still unreachable after retries), which the binary maps to a status
//! PostgreSQL treats as FATAL: recovery stops instead of ending early.
//!
//! Verification before DEST: the record's signature (a trusted key) → the record names NAME
//! and one of NAME's data objects → the stored size and SHA-256 → age → zstd → the raw size
//! and SHA-256. The bytes go to `DEST.dr-tmp`, renamed to DEST only once all of that held, so
//! DEST never holds a partial or wrong-size file (PostgreSQL would fail on it: wal-e PR #168).
//! No fsync: after a crash PostgreSQL asks again.

use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use dr_catalog::wal::{keys, SegmentName, WalFile, WalKind, WalRecord};
use dr_retry::Policy;
use dr_stream::{HashingWriter, Identities, StreamError};

use crate::trust::{Trust, NOT_CONFIGURED_HINT};
use crate::{Context, Error, Kind, Result};

/// What a fetch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// DEST holds the file, verified.
    Written(Served),
    /// No record of NAME, and NAME is not a gap: the end of the archived WAL, or a timeline
    /// PostgreSQL probes for (`{T}.history` of a timeline that does not exist).
    NotFound,
}

/// The file written to DEST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// What was served: NAME, or the partial segment standing in for it (the last,
    /// never completed segment of its timeline).
    pub file: WalFile,
    /// Bytes written to DEST.
    pub raw_bytes: u64,
    /// When the host that pushed it says it did (the record's `pushed_at`).
    pub pushed_at: String,
}

impl Served {
    pub fn is_partial(&self) -> bool {
        matches!(self.file, WalFile::Partial(_))
    }
}

/// One `restore_command` call: `%f` and `%p`, and the target whose archive to read.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub target: &'a str,
    /// `%f`: the file PostgreSQL asks for.
    pub name: &'a str,
    /// `%p`: where it wants it.
    pub dest: &'a Path,
    /// How transient store failures are tried again ([`dr_retry::WAL_FETCH`]).
    pub retry: Policy,
}

impl<'a> Request<'a> {
    pub fn new(target: &'a str, name: &'a str, dest: &'a Path) -> Request<'a> {
        Request {
            target,
            name,
            dest,
            retry: dr_retry::WAL_FETCH,
        }
    }
}

/// The target whose WAL archive is read (`dr wal fetch`, `dr restore --to-dir`): `--target`,
/// else the only target with `[targets.wal]`, else the only configured target.
pub async fn target(ctx: &Context, flag: Option<&str>) -> Result<String> {
    if let Some(name) = flag {
        crate::check_target_name(ctx, name).await?;
        return Ok(name.to_string());
    }
    let with_wal = super::wal_targets(ctx);
    let candidates: Vec<&dr_config::TargetConfig> = if with_wal.is_empty() {
        ctx.config.targets.iter().collect()
    } else {
        with_wal
    };
    match candidates.as_slice() {
        [only] => Ok(only.name.clone()),
        targets => {
            let names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
            Err(Error::config(format!(
                "dr wal fetch needs a target: {} configured",
                if names.is_empty() {
                    "none is".to_string()
                } else {
                    format!("{} are ({})", names.len(), names.join(", "))
                }
            ))
            .with_hint(
                "pass --target NAME in restore_command (`dr wal fetch --target NAME %f %p`)",
            ))
        }
    }
}

/// Fetch `req.name` into `req.dest`, verified (see the module's documentation).
pub async fn fetch(ctx: &Context, req: &Request<'_>) -> Result<Fetched> {
    let file: WalFile = req
        .name
        .parse()
        .map_err(|e: dr_catalog::wal::SegmentError| {
            let hint = e.hint();
            let err = Error::config(e.to_string()).context("dr wal fetch");
            match hint {
                Some(h) => err.with_hint(h),
                None => err,
            }
        })?;
    // Before the network: without an identity nothing can be served (a config error).
    let identities = ctx.identities()?;
    let work = async {
        let Some(found) = find(ctx, req, file).await? else {
            require_archive(ctx, req.target).await?;
            tracing::debug!(
                "{file} is not in the archive of `{}` (no record, not a gap)",
                req.target
            );
            return Ok(Fetched::NotFound);
        };
        download(ctx, req, &found, &identities).await?;
        Ok(Fetched::Written(Served {
            file: found.file,
            raw_bytes: found.record.raw_bytes,
            pushed_at: found.record.pushed_at,
        }))
    };
    let interrupted = || {
        Error::new(
            Kind::Interrupted,
            format!(
                "fetching {file} was interrupted by a signal; {} was not written",
                req.dest.display()
            ),
        )
    };
    let result = tokio::select! {
        biased;
        () = ctx.cancel.cancelled() => Err(interrupted()),
        r = work => r,
    };
    match result {
        // A retry's wait cut short by the signal ends with the error it was retrying: the
        // answer is still "interrupted" (143, a shutdown), not "unavailable".
        Err(_) if ctx.cancel.is_cancelled() => Err(interrupted()),
        r => r.map_err(|e| unavailable_hint(e, file)),
    }
}

/// "Not in the archive" ends recovery: it is said only of an archive that exists. A
/// repository that is not there (an unmounted directory reads as an empty one) or a target
/// with no archive in it is an error, never the end of the WAL.
async fn require_archive(ctx: &Context, target: &str) -> Result<()> {
    if super::identity::read(ctx, target).await?.is_some() {
        return Ok(());
    }
    Err(Error::new(
        Kind::Unavailable,
        format!(
            "the repository at {} holds no WAL archive of `{target}` ({} is missing): not answering \"not in the archive\", which would end recovery early",
            ctx.store.location(),
            keys::identity(target)
        ),
    )
    .with_hint("check that the repository is mounted or reachable and that restore_command names the right config and --target"))
}

/// A fetch that failed because the store could not be reached: say what PostgreSQL did.
fn unavailable_hint(e: Error, file: WalFile) -> Error {
    if e.kind != Kind::Unavailable {
        return e;
    }
    e.with_hint(format!(
        "recovery stopped at {file} instead of ending early: once the repository answers again, start the server again and recovery resumes there"
    ))
}

/// An archived file: its record, checked and trusted.
struct Found {
    file: WalFile,
    record: WalRecord,
}

/// NAME's record; for a segment without one, the gap rule, then its partial segment.
async fn find(ctx: &Context, req: &Request<'_>, file: WalFile) -> Result<Option<Found>> {
    if let Some(found) = read_record(ctx, req, file).await? {
        return Ok(Some(found));
    }
    // History files of timelines that do not exist are probed by PostgreSQL
    // (`findNewestTimeLine`): not found is the answer it expects.
    let WalFile::Segment(segment) = file else {
        return Ok(None);
    };
    let around = look_around(ctx, req, segment).await?;
    if let Some(later) = around.later {
        return Err(gap(req.target, segment, later));
    }
    if !around.partial {
        return Ok(None);
    }
    // The segment was never completed (the timeline ended in it, or it is still being
    // streamed): its partial is the end of the WAL. Zero-padded; replay stops at its end.
    let found = read_record(ctx, req, WalFile::Partial(segment)).await?;
    if let Some(f) = &found {
        tracing::info!(
            "{segment} is not in the archive of `{}`: serving its partial segment (uploaded at {}), the end of timeline {}'s archived WAL",
            req.target,
            f.record.pushed_at,
            segment.timeline
        );
    }
    Ok(found)
}

/// What the segment's folder (and the next log id's) says about a segment with no record.
#[derive(Debug, Default)]
struct Around {
    /// The first later segment (or partial) of the same timeline that has a record.
    later: Option<WalFile>,
    /// The segment's own partial has a record.
    partial: bool,
}

/// One LIST of the segment's folder (4 GiB of WAL of its timeline); a second of the next
/// log id's only when the first shows nothing later. A gap further away is left to `dr
/// status`, which reads the whole archive.
async fn look_around(ctx: &Context, req: &Request<'_>, segment: SegmentName) -> Result<Around> {
    let mut around = Around::default();
    for file in recorded(ctx, req, segment).await? {
        match file {
            WalFile::Partial(s) if s == segment => around.partial = true,
            WalFile::Segment(s) | WalFile::Partial(s)
                if s.timeline == segment.timeline && s > segment =>
            {
                around.later.get_or_insert(file);
            }
            _ => {}
        }
    }
    if around.later.is_some() {
        return Ok(around);
    }
    if let Some(log) = segment.log.checked_add(1) {
        let next = SegmentName {
            timeline: segment.timeline,
            log,
            seg: 0,
        };
        around.later = recorded(ctx, req, next)
            .await?
            .into_iter()
            .find(|f| matches!(f, WalFile::Segment(s) | WalFile::Partial(s) if s.timeline == segment.timeline));
    }
    Ok(around)
}

/// The files with a record in `segment`'s folder, in key order.
async fn recorded(ctx: &Context, req: &Request<'_>, segment: SegmentName) -> Result<Vec<WalFile>> {
    let prefix = keys::log_folder(req.target, segment);
    let listed = req
        .retry
        .run(
            &format!("listing `{prefix}`"),
            Some(&ctx.cancel),
            |e: &Error| e.retryable,
            || async {
                ctx.store
                    .list(&prefix)
                    .await
                    .map_err(|e| Error::from(e).context("listing the WAL archive"))
            },
        )
        .await?;
    Ok(listed
        .iter()
        .filter_map(|o| keys::file_of_record(&o.key))
        .collect())
}

/// The record of `file`, signature and contents checked; `None` when there is none.
async fn read_record(ctx: &Context, req: &Request<'_>, file: WalFile) -> Result<Option<Found>> {
    let key = keys::record(req.target, file);
    let Some(stored) = get_optional(ctx, req.retry, &key).await? else {
        return Ok(None);
    };
    let (record, document, signature) = dr_catalog::wal::split(&key, &stored)
        .map_err(|e| Error::new(Kind::Integrity, e.to_string()).with_hint(damaged_hint(file)))?;
    require_trusted(ctx, &key, file, &ctx.signing.check(document, signature))?;
    check_record(req.target, file, &key, &record)?;
    Ok(Some(Found { file, record }))
}

async fn get_optional(ctx: &Context, retry: Policy, key: &str) -> Result<Option<Bytes>> {
    retry
        .run(
            &format!("reading `{key}`"),
            Some(&ctx.cancel),
            |e: &Error| e.retryable,
            || async {
                match ctx.store.get(key).await {
                    Ok(b) => Ok(Some(b)),
                    Err(e) if e.is_not_found() => Ok(None),
                    Err(e) => Err(Error::from(e).context("reading the WAL archive")),
                }
            },
        )
        .await
}

/// Only a record signed by a trusted key is served: an unsigned one or one signed by
/// another key could be anyone's WAL. Exit 204, with trust's reasons.
fn require_trusted(ctx: &Context, key: &str, file: WalFile, trust: &Trust) -> Result<()> {
    let hint = match trust {
        Trust::Trusted { .. } => return Ok(()),
        _ if !ctx.signing.configured => NOT_CONFIGURED_HINT,
        Trust::Unsigned => "dr signs every WAL record it pushes: an unsigned one was not written by a dr with a signing key; do not use it, and find out what wrote to the repository",
        Trust::UnknownKey { .. } => "if this is the database host's signing key, add its public half to `[signing] trusted`; if the key was revoked after a leak, see runbooks/signing-key-leaked.md; otherwise someone else wrote this WAL: do not use it",
        Trust::BadSignature { .. } => "the record or its signature was changed after the push: do not use it, and find out what wrote to the repository",
    };
    Err(Error::new(
        Kind::Integrity,
        format!(
            "the record of WAL file {file} (`{key}`) is untrusted ({}): refusing to give it to PostgreSQL",
            trust.reason()
        ),
    )
    .with_hint(hint))
}

/// A trusted record still has to be the one for `file`: a record copied over another's key
/// (the same signature stays valid) would serve the wrong WAL.
pub(crate) fn check_record(
    target: &str,
    file: WalFile,
    key: &str,
    record: &WalRecord,
) -> Result<()> {
    let data_prefix = format!("{}{file}.", keys::folder(target, file));
    let wrong = if record.name != file.to_string() || record.kind != WalKind::of(file) {
        Some(format!(
            "it is the record of {} ({:?})",
            record.name, record.kind
        ))
    } else if !record.key.starts_with(&data_prefix) || !record.key.ends_with(".zst.age") {
        Some(format!(
            "it names the data object `{}`, which is not one of {file}'s",
            record.key
        ))
    } else if record.kind == WalKind::Segment
        && record.segment_bytes.is_some_and(|b| b != record.raw_bytes)
    {
        Some(format!(
            "it records a segment of {} bytes in a {}-byte segment size",
            record.raw_bytes,
            record.segment_bytes.unwrap_or_default()
        ))
    } else {
        None
    };
    match wrong {
        None => Ok(()),
        Some(why) => Err(Error::new(
            Kind::Integrity,
            format!("WAL record `{key}` does not belong to {file}: {why}"),
        )
        .with_hint(damaged_hint(file))),
    }
}

/// The next step when the archive's copy of `file` cannot be used.
fn damaged_hint(file: WalFile) -> String {
    format!(
        "recovery stopped at {file} instead of ending early without it: the archive's copy is damaged, so recovery from this archive reaches only the WAL before {file} (a recovery target before it); find out what changed the repository (`dr status` names gaps)"
    )
}

/// A segment with no record while a later one of its timeline has one.
fn gap(target: &str, segment: SegmentName, later: WalFile) -> Error {
    Error::new(
        Kind::Integrity,
        format!(
            "WAL segment {segment} is not in the archive of `{target}`, but a later one of timeline {} is ({later}): {segment} is the first missing segment of a gap",
            segment.timeline
        ),
    )
    .with_hint(format!(
        "recovery stopped instead of ending early without the WAL after the gap; if {segment} is still in the server's pg_wal, archive it again (`dr wal push`); otherwise this archive recovers only up to the start of {segment}: set a recovery target before it, or restore a newer base backup"
    ))
}

/// `DEST.dr-tmp`, removed unless renamed into place: no error path leaves it behind.
struct TempDest {
    path: PathBuf,
    renamed: bool,
}

impl TempDest {
    fn for_dest(dest: &Path) -> TempDest {
        let mut name = dest.as_os_str().to_owned();
        name.push(".dr-tmp");
        TempDest {
            path: PathBuf::from(name),
            renamed: false,
        }
    }

    fn rename_to(mut self, dest: &Path) -> Result<()> {
        std::fs::rename(&self.path, dest).map_err(|e| {
            Error::new(
                Kind::Failed,
                format!("moving {} to {}: {e}", self.path.display(), dest.display()),
            )
        })?;
        self.renamed = true;
        Ok(())
    }
}

impl Drop for TempDest {
    fn drop(&mut self) {
        if !self.renamed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Download, verify and decode the record's data object into DEST (via `DEST.dr-tmp`).
async fn download(
    ctx: &Context,
    req: &Request<'_>,
    found: &Found,
    identities: &Identities,
) -> Result<()> {
    let rec = &found.record;
    let tmp = TempDest::for_dest(req.dest);
    let (raw_bytes, raw_sha256) = req
        .retry
        .run(
            &format!("fetching `{}`", rec.key),
            Some(&ctx.cancel),
            |e: &Error| e.retryable,
            || decode_to(ctx, found, identities, &tmp.path),
        )
        .await?;
    if raw_bytes != rec.raw_bytes || !raw_sha256.eq_ignore_ascii_case(&rec.raw_sha256) {
        return Err(Error::new(
            Kind::Integrity,
            format!(
                "`{}` decodes to {raw_bytes} bytes with sha256 {raw_sha256}, but the record of {} says {} bytes with sha256 {}",
                rec.key, found.file, rec.raw_bytes, rec.raw_sha256
            ),
        )
        .with_hint(damaged_hint(found.file)));
    }
    tmp.rename_to(req.dest)?;
    tracing::debug!(
        "{} written to {} ({raw_bytes} bytes)",
        found.file,
        req.dest.display()
    );
    Ok(())
}

/// One try: GET the data object, check its size, decode it into `path` checking the stored
/// SHA-256; the raw size and SHA-256 of what was written.
async fn decode_to(
    ctx: &Context,
    found: &Found,
    identities: &Identities,
    path: &Path,
) -> Result<(u64, String)> {
    let rec = &found.record;
    let (size, reader) = ctx.store.get_reader(&rec.key).await.map_err(|e| {
        if e.is_not_found() {
            Error::new(
                Kind::Integrity,
                format!(
                    "`{}`, the data object of {}, is missing although its record exists",
                    rec.key, found.file
                ),
            )
            .with_hint(damaged_hint(found.file))
        } else {
            Error::from(e).context("reading the WAL archive")
        }
    })?;
    if size != rec.bytes {
        return Err(Error::new(
            Kind::Integrity,
            format!(
                "`{}` is {size} bytes but the record of {} says {}: the object is truncated or was replaced",
                rec.key, found.file, rec.bytes
            ),
        )
        .with_hint(damaged_hint(found.file)));
    }
    let file = crate::restore::private_file(path).map_err(|e| {
        Error::new(Kind::Failed, format!("creating {}: {e}", path.display())).with_hint(
            "restore_command writes into the server's pg_wal: run dr as the server's OS user",
        )
    })?;
    let out = HashingWriter::new(std::io::BufWriter::with_capacity(1024 * 1024, file));
    dr_stream::decode_from(
        reader,
        out,
        identities.clone(),
        Some(rec.sha256.clone()),
        rec.key.clone(),
        |_| {},
        |decoded, out| {
            decoded?;
            let (n, sha, mut buffered) = out.finish();
            buffered.flush().map_err(|e| StreamError::Io {
                stage: "writing the WAL file".into(),
                source: e,
            })?;
            Ok((n, sha))
        },
    )
    .await
    .and_then(|r| r)
    .map_err(|e| {
        // The stream's own hints speak of backups; these are about WAL.
        let hint = match &e {
            StreamError::WrongIdentity { .. } => Some(format!(
                "{} was encrypted to {}: point encryption.identity_file at the identity of one of them",
                found.file,
                rec.recipients.join(", ")
            )),
            StreamError::Corrupt { .. } | StreamError::DigestMismatch { .. } => {
                Some(damaged_hint(found.file))
            }
            _ => None,
        };
        let err = Error::from(e).context(format!("WAL file {}", found.file));
        match hint {
            Some(h) => Error {
                hint: Some(h),
                ..err
            },
            None => err,
        }
    })
}

#[cfg(test)]
#[path = "fetch_tests.rs"]
mod tests;
