//! `dr wal push PATH` (PostgreSQL's `archive_command`, `docs/design/PITR.md` §2): one WAL
//! file into its target's archive, exit 0 only once it is durable there.
//!
//! 1. The file name says what it is (segment, `.partial`, `.history`, `.backup`); anything
//!    else is refused. A segment's first page says which cluster wrote it ([`dr_pg::WalHeader`]).
//! 2. The target: `--target`, else the WAL target whose archive belongs to that cluster
//!    ([`super::identity`]); history and backup files carry no header, so they need the only
//!    WAL target or `--target`.
//! 3. The file is read once: raw SHA-256 while zstd → age → SHA-256, uploaded as
//!    `{SEG}.{N}.zst.age` (N random: age output differs per push, and a push host cannot
//!    decrypt what it finds to compare).
//! 4. The signed record is created only if absent: the commit point. When it exists, the
//!    raw digests decide: the same bytes are a re-push after a crash (our object is deleted,
//!    exit 0); different bytes are refused (exit 4), never overwritten. So a `.history` file
//!    is never replaced either.
//!
//! A crash between the data object and the record leaves an orphan data object that prune
//! deletes; the next push of the file (PostgreSQL retries) writes a new one.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use dr_catalog::wal::RECORD_FORMAT;
use dr_catalog::wal::{join, keys, split, Lsn, SegmentSize, Switch, WalFile, WalKind, WalRecord};
use dr_config::TargetConfig;
use dr_pg::{WalHeader, WAL_LONG_HEADER_BYTES};
use serde::Serialize;

use super::identity::{self, Cluster};
use super::upload::upload;
use super::{nonce, retrying, wal_targets};
use crate::{human_bytes, Context, Error, Kind, Result, DR_VERSION};

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pushed {
    pub target: String,
    /// The file's name (`%f`).
    pub file: String,
    /// The record: the commit point.
    pub record: String,
    /// The data object the record names.
    pub data: String,
    pub raw_bytes: u64,
    pub bytes: u64,
    /// The archive had this file already, with the same content: PostgreSQL archives a file
    /// again after a crash between dr's success and its own `.done` marker.
    pub already_archived: bool,
}

/// Push the WAL file at `path` (relative paths are read from the current directory, which
/// is the data directory when PostgreSQL runs `archive_command`).
pub async fn push(ctx: &Context, path: &Path, target: Option<&str>) -> Result<Pushed> {
    push_as(ctx, path, target, Source::Archive).await
}

/// Who pushed a file: the `source` of its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// PostgreSQL's `archive_command`.
    Archive,
    /// `dr wal stream` (pg_receivewal).
    Stream,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Archive => "archive",
            Source::Stream => "stream",
        }
    }
}

/// [`push`], recording who pushed it.
pub(crate) async fn push_as(
    ctx: &Context,
    path: &Path,
    target: Option<&str>,
    source: Source,
) -> Result<Pushed> {
    let file = classify(path)?;
    require_signing_key(ctx)?;
    let header = match file {
        WalFile::Segment(_) | WalFile::Partial(_) => Some(read_header(path, file).await?),
        WalFile::History(_) | WalFile::Backup(..) => None,
    };
    // A truncated segment is refused before anything is written (the identity included).
    file_size(path, file, header.as_ref()).await?;
    let target = choose_target(ctx, file, header.as_ref(), target).await?;
    if let Some(h) = &header {
        identity::ensure(ctx, &target, &Cluster::from(h)).await?;
    }
    let piece = Piece {
        path,
        file,
        header,
        target: &target,
        source,
        // PostgreSQL archives a `.partial` only for a timeline's end (promotion), and the
        // stream pushes one only then: it never grows again.
        end_lsn: None,
        r#final: matches!(file, WalFile::Partial(_)),
    };
    let record = store(ctx, &piece).await?;
    commit(ctx, &target, file, record).await
}

/// One WAL file to store: what it is, whose it is, and what its record says beyond that.
pub(crate) struct Piece<'a> {
    pub(crate) path: &'a Path,
    pub(crate) file: WalFile,
    /// Segments and partials: their first page (read and checked by [`read_header`]).
    pub(crate) header: Option<WalHeader>,
    pub(crate) target: &'a str,
    pub(crate) source: Source,
    /// A growing partial: the end of the valid WAL in it.
    pub(crate) end_lsn: Option<Lsn>,
    pub(crate) r#final: bool,
}

/// Upload `piece` as a new data object and return the record that would vouch for it (not
/// yet written: the caller commits it). Nothing is left behind on failure.
pub(crate) async fn store(ctx: &Context, piece: &Piece<'_>) -> Result<WalRecord> {
    let (path, file, header) = (piece.path, piece.file, piece.header);
    let recipients = Arc::new(ctx.recipients()?);
    let raw_bytes = file_size(path, file, header.as_ref()).await?;
    let switches = match file {
        WalFile::History(_) => history_switches(path).await?,
        _ => Vec::new(),
    };
    let data_key = keys::data(piece.target, file, &nonce());
    let stored = retrying(ctx, &format!("uploading {data_key}"), || {
        upload(ctx, path, &data_key, &recipients)
    })
    .await?;
    if stored.raw_bytes != raw_bytes {
        discard(ctx, &data_key).await;
        return Err(Error::new(
            Kind::Failed,
            format!(
                "{} changed while it was read ({raw_bytes} bytes before, {} read)",
                path.display(),
                stored.raw_bytes
            ),
        )
        .with_hint("nothing was archived; PostgreSQL pushes the file again"));
    }
    if ctx.cancel.is_cancelled() {
        discard(ctx, &data_key).await;
        return Err(Error::interrupted("the WAL push"));
    }
    Ok(WalRecord {
        format: RECORD_FORMAT,
        kind: WalKind::of(file),
        name: file.to_string(),
        key: data_key,
        system_identifier: header
            .map(|h| h.system_identifier.to_string())
            .unwrap_or_default(),
        server_major: header.map(|h| h.major),
        timeline: file.timeline(),
        start_lsn: header.and_then(|h| start_of(file, &h)),
        end_lsn: piece.end_lsn,
        r#final: piece.r#final,
        segment_bytes: header.map(|h| u64::from(h.segment_size)),
        raw_sha256: stored.raw_sha256,
        raw_bytes: stored.raw_bytes,
        sha256: stored.sha256,
        bytes: stored.bytes,
        recipients: recipients.to_strings(),
        switches,
        pushed_at: pushed_at(Utc::now()),
        pushed_by: crate::host::host_name(),
        dr_version: DR_VERSION.to_string(),
        source: piece.source.as_str().into(),
    })
}

/// When a record says its file was archived: to the microsecond. The recoverable window ends
/// at the newest segment's time; cut to the second, a point in that last second was refused
/// although its WAL was stored (found by the bad-migration runbook's test).
fn pushed_at(now: DateTime<Utc>) -> String {
    now.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// What PostgreSQL's file name says the file is; anything else is a usage error.
fn classify(path: &Path) -> Result<WalFile> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    name.parse::<WalFile>().map_err(|e| {
        let err = Error::new(Kind::Config, format!("cannot push {}: {e}", path.display()));
        match e.hint() {
            Some(h) => err.with_hint(format!("{h}; archive_command passes it as %p")),
            None => err,
        }
    })
}

/// Every record is signed: a restore host trusts WAL only from a key it knows.
pub(crate) fn require_signing_key(ctx: &Context) -> Result<()> {
    if ctx.signing.can_sign() {
        return Ok(());
    }
    Err(Error::config(
        "this host has no signing key ([signing] key_file): every WAL record is signed so that restore hosts can tell it from a forgery",
    )
    .with_hint("run `dr keygen --signing --output /etc/dr/signing.key`, make it readable by the server's OS user only (0600, owner postgres), set `[signing] key_file` (or DR_SIGNING_KEY_FILE), and add the public key it prints to `[signing] trusted` on every host that restores"))
}

pub(crate) fn read_error(path: &Path, e: &std::io::Error) -> Error {
    let kind = match e.kind() {
        std::io::ErrorKind::NotFound => Kind::Config,
        _ => Kind::Failed,
    };
    Error::new(kind, format!("cannot read {}: {e}", path.display())).with_hint(
        "archive_command runs in the data directory as the server's OS user: pass %p, and make sure that user can read it",
    )
}

/// The long page header of a segment or partial segment, checked against its name.
pub(crate) async fn read_header(path: &Path, file: WalFile) -> Result<WalHeader> {
    use tokio::io::AsyncReadExt;
    let mut f = tokio::fs::File::open(path)
        .await
        .map_err(|e| read_error(path, &e))?;
    let mut first = Vec::with_capacity(WAL_LONG_HEADER_BYTES);
    (&mut f)
        .take(WAL_LONG_HEADER_BYTES as u64)
        .read_to_end(&mut first)
        .await
        .map_err(|e| read_error(path, &e))?;
    let header = WalHeader::parse(&first).map_err(|e| {
        Error::new(Kind::Config, format!("cannot push {}: {e}", path.display())).with_hint(e.hint())
    })?;
    // A segment copied to another name would be archived as the wrong piece of WAL.
    if start_of(file, &header).map(|l| l.0) != Some(header.page_address) {
        return Err(Error::new(
            Kind::Integrity,
            format!(
                "{} does not hold segment {file}: its first page is at {} (with {} segments)",
                path.display(),
                Lsn(header.page_address),
                human_bytes(u64::from(header.segment_size))
            ),
        )
        .with_hint("the file was renamed or copied over: push the file PostgreSQL named (%p)"));
    }
    Ok(header)
}

/// The first position of a segment or partial (by its name and the header's segment size).
pub(crate) fn start_of(file: WalFile, header: &WalHeader) -> Option<Lsn> {
    let size = SegmentSize::new(u64::from(header.segment_size)).ok()?;
    file.segment()?.start(size).ok()
}

/// The file's size, checked: a segment is exactly `wal_segment_size` (a truncated one would
/// stop a recovery), a partial at most that.
async fn file_size(path: &Path, file: WalFile, header: Option<&WalHeader>) -> Result<u64> {
    let len = tokio::fs::metadata(path)
        .await
        .map_err(|e| read_error(path, &e))?
        .len();
    let Some(h) = header else {
        return Ok(len);
    };
    let size = u64::from(h.segment_size);
    let fits = match file {
        WalFile::Partial(_) => len <= size,
        _ => len == size,
    };
    if fits {
        Ok(len)
    } else {
        Err(Error::new(
            Kind::Integrity,
            format!(
                "{} is {len} bytes, but a WAL segment of this cluster is {size} bytes",
                path.display()
            ),
        )
        .with_hint("the file is truncated or not a segment: push the file PostgreSQL named (%p)"))
    }
}

/// A target given, or the one the file belongs to.
async fn choose_target(
    ctx: &Context,
    file: WalFile,
    header: Option<&WalHeader>,
    given: Option<&str>,
) -> Result<String> {
    let candidates = wal_targets(ctx);
    let names = |list: &[&TargetConfig]| {
        list.iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(name) = given {
        return match ctx.config.targets.iter().find(|t| t.name == name) {
            Some(t) if t.wal.is_some() => Ok(name.to_string()),
            Some(_) => Err(Error::config(format!(
                "target `{name}` has no [targets.wal]: its WAL is not archived"
            ))
            .with_hint(format!(
                "add `[targets.wal]` with mode = \"archive\" under target `{name}` in the config"
            ))),
            None => Err(
                Error::config(format!("no target named `{name}` is configured")).with_hint(
                    format!("targets with [targets.wal]: {}", names(&candidates)),
                ),
            ),
        };
    }
    match candidates.as_slice() {
        [] => Err(Error::config("no target has [targets.wal]: there is no WAL archive to push to")
            .with_hint("add `[targets.wal]` with mode = \"archive\" to the target of this server (docs/CONFIGURATION.md)")),
        [only] => Ok(only.name.clone()),
        many => match header {
            None => Err(Error::config(format!(
                "{file} does not say which cluster wrote it, and {} targets archive WAL ({})",
                many.len(),
                names(many)
            ))
            .with_hint("pass --target NAME in archive_command")),
            Some(h) => target_of_cluster(ctx, many, &Cluster::from(h)).await,
        },
    }
}

/// Of several WAL targets, the one whose archive belongs to `cluster`; else the only one
/// without an archive yet (this cluster's first push).
async fn target_of_cluster(
    ctx: &Context,
    candidates: &[&TargetConfig],
    cluster: &Cluster,
) -> Result<String> {
    let mut fresh = Vec::new();
    let mut others = Vec::new();
    for t in candidates {
        match identity::read(ctx, &t.name).await? {
            Some(id) if cluster.owns(&id) => return Ok(t.name.clone()),
            Some(id) => others.push(format!("{} (system {})", t.name, id.system_identifier)),
            None => fresh.push(t.name.as_str()),
        }
    }
    match fresh.as_slice() {
        [only] => Ok((*only).to_string()),
        [] => Err(Error::new(
            Kind::Refused,
            format!(
                "WAL of system {} (PostgreSQL {}) belongs to none of the WAL targets: {}",
                cluster.system_identifier,
                cluster.major,
                others.join(", ")
            ),
        )
        .with_hint("add a target with [targets.wal] for this cluster, or pass --target NAME")),
        many => Err(Error::config(format!(
            "WAL of system {} has no archive yet, and {} targets could take it ({})",
            cluster.system_identifier,
            many.len(),
            many.join(", ")
        ))
        .with_hint("pass --target NAME in archive_command for the first push")),
    }
}

/// A timeline history file's switch points (`parent<TAB>lsn<TAB>reason` lines), so the
/// record tells status and restore how timelines branch without decrypting anything.
async fn history_switches(path: &Path) -> Result<Vec<Switch>> {
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| read_error(path, &e))?;
    parse_history(&text).ok_or_else(|| {
        Error::new(
            Kind::Config,
            format!("cannot push {}: not a timeline history file", path.display()),
        )
        .with_hint("a history file has lines `TIMELINE<TAB>LSN<TAB>reason`: push the file PostgreSQL named (%p)")
    })
}

fn parse_history(text: &str) -> Option<Vec<Switch>> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let timeline = fields.next()?.parse().ok()?;
        let lsn = fields.next()?.parse().ok()?;
        out.push(Switch { timeline, lsn });
    }
    Some(out)
}

/// Create the record if absent; else settle with the one that is there.
async fn commit(ctx: &Context, target: &str, file: WalFile, record: WalRecord) -> Result<Pushed> {
    let record_key = keys::record(target, file);
    let document = record.document();
    let signature = ctx.signing.sign(&document)?;
    let body = Bytes::from(join(&document, signature.as_deref()));
    // A failure here leaves our data object: it may be named by a record whose creation
    // succeeded but was not answered, and an unnamed one is an orphan prune removes.
    let created = retrying(ctx, &format!("creating {record_key}"), || async {
        ctx.store
            .put_if_absent(&record_key, body.clone())
            .await
            .map_err(|e| Error::from(e).context(format!("creating {record_key}")))
    })
    .await?;
    let pushed = Pushed {
        target: target.to_string(),
        file: record.name.clone(),
        record: record_key.clone(),
        data: record.key.clone(),
        raw_bytes: record.raw_bytes,
        bytes: record.bytes,
        already_archived: false,
    };
    if created {
        return Ok(pushed);
    }
    settle(ctx, &record_key, &record, pushed).await
}

/// The record exists: ours (an earlier try whose answer was lost), the same bytes pushed
/// before (fine), or different bytes (refused).
async fn settle(
    ctx: &Context,
    record_key: &str,
    ours: &WalRecord,
    mut pushed: Pushed,
) -> Result<Pushed> {
    let stored = retrying(ctx, &format!("reading {record_key}"), || async {
        ctx.store
            .get(record_key)
            .await
            .map_err(|e| Error::from(e).context(format!("reading {record_key}")))
    })
    .await?;
    let theirs = match split(record_key, &stored) {
        Ok((theirs, document, signature)) => {
            if theirs.key == ours.key {
                return Ok(pushed);
            }
            let trust = ctx.signing.check(document, signature);
            if !trust.is_trusted() {
                tracing::warn!(
                    "{record_key} is {}: a restore host that does not trust its key cannot use it",
                    trust.reason()
                );
            }
            theirs
        }
        Err(e) => {
            discard(ctx, &ours.key).await;
            return Err(Error::new(Kind::Integrity, e.to_string()).with_hint(
                "the record was damaged or written by something other than dr: compare the file with the archived one and remove the record only if it is wrong",
            ));
        }
    };
    discard(ctx, &ours.key).await;
    if theirs.raw_sha256 != ours.raw_sha256 {
        return Err(Error::new(
            Kind::Integrity,
            format!(
                "{} is already archived with different content (raw sha256 {}, stored {}); refusing to overwrite",
                ours.name, ours.raw_sha256, theirs.raw_sha256
            ),
        )
        .with_hint("two clusters share this target, or the server was restored and promoted without a new timeline"));
    }
    // Exit 0 means the archive holds the file: the object the record names must be there.
    let present = retrying(ctx, &format!("looking for {}", theirs.key), || async {
        ctx.store
            .head(&theirs.key)
            .await
            .map_err(|e| Error::from(e).context(format!("looking for {}", theirs.key)))
    })
    .await?;
    if present.is_none() {
        return Err(Error::new(
            Kind::Integrity,
            format!(
                "{} is archived, but the object its record names ({}) is missing",
                ours.name, theirs.key
            ),
        )
        .with_hint(format!("the archive has a hole at {}: take a new base backup (`dr backup --physical`) and find out what removed the object", ours.name)));
    }
    tracing::warn!(
        "{} was already archived with the same content (sha256 {}): PostgreSQL archived it again (a crash before it marked it done); nothing changed",
        ours.name,
        ours.raw_sha256
    );
    pushed.data = theirs.key;
    pushed.bytes = theirs.bytes;
    pushed.already_archived = true;
    Ok(pushed)
}

/// Remove a data object of ours that no record names; a failure leaves an orphan that prune
/// removes, so it is only logged.
pub(crate) async fn discard(ctx: &Context, key: &str) {
    let deleted = retrying(ctx, &format!("deleting {key}"), || async {
        ctx.store.delete(key).await.map_err(Error::from)
    })
    .await;
    if let Err(e) = deleted {
        tracing::warn!("could not delete {key} (no record names it; prune removes it): {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_files_give_their_switches() {
        let text = "1\t0/3000158\tno recovery target specified\n\n# comment\n2\tA/42000100\tat restore point \"x y\"\n";
        let switches = parse_history(text).expect("valid");
        assert_eq!(
            switches,
            [
                Switch {
                    timeline: 1,
                    lsn: "0/3000158".parse().expect("lsn")
                },
                Switch {
                    timeline: 2,
                    lsn: "A/42000100".parse().expect("lsn")
                },
            ]
        );
        assert_eq!(parse_history("").expect("empty"), []);
        assert!(parse_history("x\t0/1\n").is_none());
        assert!(parse_history("1\n").is_none());
    }

    #[test]
    fn the_push_time_keeps_its_fraction_of_a_second() {
        let t: DateTime<Utc> = "2026-12-04T19:18:58.821025Z".parse().expect("time");
        let text = pushed_at(t);
        assert_eq!(text, "2026-12-04T19:18:58.821025Z");
        let back: DateTime<Utc> = text.parse().expect("parses");
        assert_eq!(back, t);
    }

    #[test]
    fn only_wal_file_names_are_pushed() {
        for name in ["pg_wal/000000010000000A00000042", "00000002.history"] {
            assert!(classify(Path::new(name)).is_ok(), "{name}");
        }
        for name in ["pg_wal/RECOVERYHISTORY", "000000010000000a00000042", "/"] {
            let e = classify(Path::new(name)).expect_err(name);
            assert_eq!(e.kind, Kind::Config, "{name}");
            assert!(e.hint.is_some(), "{name}");
        }
    }
}
