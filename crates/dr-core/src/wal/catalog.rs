//! Everything the repository knows about a target's WAL: every record, read and checked,
//! for the restore plan, status and prune. Fetch reads single records on its own (it runs
//! once per segment and must stay cheap).

use std::collections::BTreeMap;

use dr_catalog::wal::continuity::{Archived, Base};
use dr_catalog::wal::history::Timelines;
use dr_catalog::wal::{keys, SegmentSize, WalFile, WalKind, WalRecord};
use dr_store::ObjectMeta;
use futures::stream::{self, StreamExt, TryStreamExt};

use crate::trust::Trust;
use crate::{Context, Error, Kind, Result};

/// How many records are read at once.
const PARALLEL_READS: usize = 16;

/// A target's WAL archive as read now.
#[derive(Debug, Default)]
pub struct WalCatalog {
    /// Trusted records, by file.
    pub records: BTreeMap<WalFile, WalRecord>,
    /// The same, as the plan and continuity read them.
    pub archived: Vec<Archived>,
    /// Records that are not trusted or not valid: (key, why). Never used, always reported.
    pub refused: Vec<(String, String)>,
    pub timelines: Timelines,
    /// Every object under `{target}/wal/` (records and data), for prune's orphans.
    pub listing: Vec<ObjectMeta>,
}

impl WalCatalog {
    /// The segment size the archive was written with (16 MiB if nothing says otherwise).
    pub fn segment_size(&self) -> SegmentSize {
        self.records
            .values()
            .find_map(WalRecord::segment_size)
            .unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// Read every record of `target`'s WAL archive (one LIST, then the records in parallel).
pub async fn load(ctx: &Context, target: &str) -> Result<WalCatalog> {
    let listing =
        ctx.store.list(&keys::root(target)).await.map_err(|e| {
            Error::from(e).context(format!("listing the WAL archive of `{target}`"))
        })?;
    let record_keys: Vec<(String, WalFile)> = listing
        .iter()
        .filter_map(|o| keys::file_of_record(&o.key).map(|f| (o.key.clone(), f)))
        .collect();
    let read: Vec<(String, WalFile, bytes::Bytes)> = stream::iter(record_keys)
        .map(|(key, file)| async move {
            let bytes = ctx
                .store
                .get(&key)
                .await
                .map_err(|e| Error::from(e).context(format!("reading `{key}`")))?;
            Ok::<_, Error>((key, file, bytes))
        })
        .buffer_unordered(PARALLEL_READS)
        .try_collect()
        .await?;
    let mut catalog = WalCatalog {
        listing,
        ..WalCatalog::default()
    };
    for (key, file, stored) in read {
        match checked(ctx, target, &key, file, &stored) {
            Ok(record) => {
                catalog.records.insert(file, record);
            }
            Err(why) => catalog.refused.push((key, why)),
        }
    }
    catalog.timelines = Timelines::from_records(
        catalog
            .records
            .values()
            .filter(|r| r.kind == WalKind::History),
    )
    .map_err(|e| {
        Error::new(
            Kind::Integrity,
            format!("the WAL archive of `{target}`: {e}"),
        )
        .with_hint(e.hint())
    })?;
    for record in catalog.records.values() {
        match Archived::from_record(record) {
            Ok(a) => catalog.archived.push(a),
            Err(e) => catalog.refused.push((record.key.clone(), e.to_string())),
        }
    }
    catalog.refused.sort();
    Ok(catalog)
}

/// The record, if it parses, is trusted and is the record of `file`; else why not.
fn checked(
    ctx: &Context,
    target: &str,
    key: &str,
    file: WalFile,
    stored: &[u8],
) -> std::result::Result<WalRecord, String> {
    let (record, document, signature) =
        dr_catalog::wal::split(key, stored).map_err(|e| e.to_string())?;
    let trust = ctx.signing.check(document, signature);
    if !matches!(trust, Trust::Trusted { .. }) {
        return Err(format!("untrusted: {}", trust.reason()));
    }
    super::fetch::check_record(target, file, key, &record).map_err(|e| e.message)?;
    Ok(record)
}

/// The physical base backups of `target` as continuity and the plan read them: from the
/// catalog's entries (trusted and committed ones are marked trusted).
pub fn bases(entries: &[crate::repo::BackupEntry]) -> Vec<Base> {
    entries
        .iter()
        .filter_map(|e| {
            let manifest = &e.manifest;
            let physical = manifest.physical.as_ref()?;
            Some(Base {
                id: manifest.id.to_string(),
                timeline: physical.timeline,
                start: physical.start_lsn,
                stop: physical.stop_lsn,
                stopped_at: manifest.finished_at,
                trusted: e.trust.is_trusted(),
            })
        })
        .collect()
}
