//! The WAL archive of a target with `[targets.wal]` into a copy: each trusted record's data
//! object (checked against the record's size and SHA-256), then the record itself, last, as
//! it is (its signature is inside it); the archive's signed `identity.json` first. A record
//! already in the copy with the same bytes is skipped; a partial whose record grew since is
//! copied again. An untrusted record is not copied (`dr status` reports it on the primary).

use std::collections::BTreeMap;
use std::sync::Arc;

use dr_catalog::wal::keys;
use dr_catalog::{ObjectRecord, ObjectRole};
use dr_store::ObjectStore;
use futures::stream::{self, StreamExt, TryStreamExt};

use crate::trust::signature_key;
use crate::{Context, Error, Result};

/// WAL files copied at once.
const FILES_AT_ONCE: usize = 4;

/// What copying one target's WAL archive did.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct WalCopied {
    /// Files (records) copied by this run.
    pub copied: usize,
    /// Files already in the copy.
    pub present: usize,
    /// Records not copied because they are not trusted or not valid.
    pub refused: usize,
}

/// Copy `target`'s WAL archive from `ctx` (the primary) to `to`.
pub(crate) async fn copy_archive(
    ctx: &Context,
    to: &Context,
    name: &str,
    target: &str,
) -> Result<WalCopied> {
    let catalog = crate::wal::catalog::load(ctx, target)
        .await
        .map_err(|e| e.context("reading the primary's WAL archive"))?;
    let mut done = WalCopied {
        refused: catalog.refused.len(),
        ..WalCopied::default()
    };
    if catalog.listing.is_empty() {
        return Ok(done);
    }
    let there: BTreeMap<String, u64> = to
        .store
        .list(&keys::root(target))
        .await
        .map_err(|e| Error::from(e).context(format!("listing the WAL archive in `{name}`")))?
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    let sizes: BTreeMap<&str, u64> = catalog
        .listing
        .iter()
        .map(|o| (o.key.as_str(), o.size))
        .collect();
    // The identity first: a copy's archive belongs to the same cluster.
    let identity = keys::identity(target);
    if sizes.contains_key(identity.as_str()) && !there.contains_key(&identity) {
        for key in [signature_key(&identity), identity.clone()] {
            match ctx.store.get(&key).await {
                Ok(body) => {
                    to.store.put(&key, body).await.map_err(|e| {
                        Error::from(e).context(format!("writing `{key}` to `{name}`"))
                    })?
                }
                Err(dr_store::StoreError::NotFound { .. }) => {}
                Err(e) => return Err(Error::from(e).context(format!("reading `{key}`"))),
            }
        }
    }
    let mut todo = Vec::new();
    for (file, record) in &catalog.records {
        let key = keys::record(target, *file);
        let (Some(size), theirs) = (sizes.get(key.as_str()), there.get(&key)) else {
            continue;
        };
        if theirs == Some(size) && there.contains_key(&record.key) {
            done.present += 1;
            continue;
        }
        todo.push((key, record.clone()));
    }
    let from: Arc<dyn ObjectStore> = Arc::clone(&ctx.store);
    let dest: Arc<dyn ObjectStore> = Arc::clone(&to.store);
    let part_mib = ctx.config.backup.part_size_mib;
    let limits = dest.part_limits();
    let jobs = todo.into_iter().map(|(key, record)| {
        let (from, dest, cancel) = (Arc::clone(&from), Arc::clone(&dest), ctx.cancel.clone());
        let signing = Arc::clone(&ctx.signing);
        async move {
            let stored = from
                .get(&key)
                .await
                .map_err(|e| Error::from(e).context(format!("reading `{key}` from the primary")))?;
            // Checked again on the bytes that are copied.
            let (again, document, signature) = dr_catalog::wal::split(&key, &stored)
                .map_err(|e| Error::new(crate::Kind::Integrity, e.to_string()))?;
            if !signing.check(document, signature).is_trusted() || again != record {
                return Err(Error::new(
                    crate::Kind::Integrity,
                    format!("WAL record `{key}` changed in the primary while it was copied"),
                )
                .with_hint("run `dr copy` again; if it recurs, see `dr status` on the primary"));
            }
            let data = ObjectRecord {
                role: ObjectRole::Dump,
                key: record.key.clone(),
                bytes: record.bytes,
                sha256: record.sha256.clone(),
                raw_bytes: record.raw_bytes,
                part_bytes: None,
                restore_step: None,
                chunks: Vec::new(),
            };
            let part = limits.part_size_for(record.bytes, part_mib);
            super::object::copy_object(from.as_ref(), dest.as_ref(), &data, part, &cancel).await?;
            // The record, last: the file exists in the copy once it does.
            dest.put(&key, stored)
                .await
                .map_err(|e| Error::from(e).context(format!("writing `{key}` to the copy")))?;
            Ok::<_, Error>(())
        }
    });
    let copied: Vec<()> = stream::iter(jobs)
        .buffer_unordered(FILES_AT_ONCE)
        .try_collect()
        .await
        .map_err(|e| {
            let e = e.context(format!("copying the WAL archive of `{target}` to `{name}`"));
            match e.hint {
                Some(_) => e,
                None => e.with_hint(format!(
                    "the WAL files copied so far count in `{name}`, the one that failed does not (its record was not written); run `dr copy --to {name}` again to go on"
                )),
            }
        })?;
    done.copied = copied.len();
    Ok(done)
}
