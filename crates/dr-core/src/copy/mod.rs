//! `dr copy`: the primary's backups into a second repository (`[[copies]]`), so that losing
//! the primary's account, region or bucket does not lose every backup.
//!
//! What a copy holds is what the primary holds, byte for byte: each backup's objects (still
//! compressed and encrypted: the copying host needs no identity), then the manifest's
//! signature, then the manifest, last: a backup exists in the copy only once its manifest
//! does, so a copy interrupted anywhere leaves no manifest there and the next run does that
//! backup again. The signature is copied unchanged, so the copy verifies against the same
//! trusted keys as the primary; a backup this host does not trust is not copied (an
//! unsigned one with `--trust-unsigned`).
//!
//! Which objects a backup has is read from its manifest, never guessed from a listing; each
//! is streamed (bounded memory) and must match the size and SHA-256 the manifest recorded.
//! A backup whose manifest is already in the copy with the same bytes is skipped. The copy
//! applies its own `[copies.object_lock]` on each write (its store is wrapped like the
//! primary's, see [`crate::immutable`]); verification records are not copied: `dr verify
//! --copy NAME` proves the copy on its own.

mod object;
mod wal;

pub use wal::WalCopied;

use std::sync::Arc;
use std::time::Instant;

use dr_catalog::{keys, BackupId};
use dr_config::{env, RepositoryConfig};
use dr_store::{Credentials, ObjectStore, Secret};
use serde::Serialize;

use crate::lock::RunLock;
use crate::trust::{require_trusted, signature_key};
use crate::{human_bytes, Context, Error, Kind, Result};

/// How many objects of one backup are copied at once.
const OBJECTS_AT_ONCE: usize = 2;

/// What `dr copy` did for one copy repository (`docs/JSON.md`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct CopyReport {
    /// The copy's name (`[[copies]] name`).
    pub copy: String,
    /// Backups copied by this run.
    pub copied: Vec<CopiedBackup>,
    /// Backups already in the copy (same manifest): left alone.
    pub present: usize,
    /// Of those, backups whose signature in the copy was replaced by the primary's (after
    /// `dr resign` there).
    pub signatures: usize,
    /// Backups not copied because this host does not trust them.
    pub refused: Vec<RefusedBackup>,
    /// Per target with `[targets.wal]`: its WAL archive's files copied, already there,
    /// refused (untrusted records).
    pub wal: std::collections::BTreeMap<String, WalCopied>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CopiedBackup {
    pub target: String,
    pub id: BackupId,
    pub objects: usize,
    pub bytes: u64,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RefusedBackup {
    pub target: String,
    pub id: BackupId,
    pub reason: String,
}

/// What to copy.
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// Only this target's backups.
    pub target: Option<String>,
    /// Copy backups that have no signature (made before signing existed) too.
    pub trust_unsigned: bool,
    /// Only this backup (and no WAL).
    pub id: Option<BackupId>,
}

/// Where a repository's credentials come from: the copy's own variables
/// (`DR_COPY_<NAME>_AWS_ACCESS_KEY_ID` + `…_AWS_SECRET_ACCESS_KEY` [+ `…_AWS_SESSION_TOKEN`],
/// or `…_AWS_PROFILE`), else the AWS chain. `get` is the environment.
pub fn credentials(
    repository: &RepositoryConfig,
    get: impl Fn(&str) -> Option<String>,
) -> Result<Credentials> {
    let Some(prefix) = &repository.credentials_env else {
        return Ok(Credentials::Chain);
    };
    let var = |suffix: &str| get(&format!("{prefix}{suffix}")).filter(|v| !v.is_empty());
    let id = var(env::COPY_ACCESS_KEY_ID);
    let secret = var(env::COPY_SECRET_ACCESS_KEY);
    match (id, secret) {
        (Some(access_key_id), Some(secret)) => Ok(Credentials::Keys {
            access_key_id,
            secret_access_key: Secret::new(secret),
            session_token: var(env::COPY_SESSION_TOKEN).map(Secret::new),
        }),
        (None, None) => Ok(match var(env::COPY_PROFILE) {
            Some(p) => Credentials::Profile(p),
            None => Credentials::Chain,
        }),
        (Some(_), None) | (None, Some(_)) => Err(Error::config(format!(
            "only one of {prefix}{} and {prefix}{} is set",
            env::COPY_ACCESS_KEY_ID,
            env::COPY_SECRET_ACCESS_KEY
        ))
        .with_hint(
            "set both (the copy's own credentials), or neither (the AWS chain the primary uses)",
        )),
    }
}

/// Copy every complete backup of the primary (`ctx`) that `to` lacks. `to` is the copy's
/// context (see [`dr_config::Config::for_copy`]); `name` its name, for messages.
///
/// Each target is copied under its run lock in the copy (taken when first needed, released
/// at the end, also on failure): two copies to the same repository, or a copy and a prune of
/// it, never interleave; a backup is committed only while the lock is still this run's.
pub async fn run(
    ctx: &Context,
    to: &Context,
    name: &str,
    opts: &CopyOptions,
) -> Result<CopyReport> {
    let mut locks = Locks::default();
    let result = copy_all(ctx, to, name, opts, &mut locks).await;
    locks.release().await;
    result
}

/// The copy's run locks this run holds, by target.
#[derive(Default)]
struct Locks(std::collections::BTreeMap<String, RunLock>);

impl Locks {
    /// `target`'s lock in the copy, taken if this run does not hold it yet.
    async fn hold(&mut self, to: &Context, name: &str, target: &str) -> Result<&RunLock> {
        use std::collections::btree_map::Entry;
        Ok(match self.0.entry(target.to_string()) {
            Entry::Occupied(held) => held.into_mut(),
            Entry::Vacant(free) => free.insert(
                RunLock::acquire_for(to, target, "copy")
                    .await
                    .map_err(|e| e.context(format!("copy `{name}`")))?,
            ),
        })
    }

    async fn release(self) {
        for (_, lock) in self.0 {
            lock.release().await;
        }
    }
}

async fn copy_all(
    ctx: &Context,
    to: &Context,
    name: &str,
    opts: &CopyOptions,
    locks: &mut Locks,
) -> Result<CopyReport> {
    let mut report = CopyReport {
        copy: name.to_string(),
        ..CopyReport::default()
    };
    // The WAL first: a base backup committed in the copy has its WAL there, as in the primary.
    for t in &ctx.config.targets {
        if t.wal.is_none()
            || opts.id.is_some()
            || opts.target.as_deref().is_some_and(|only| only != t.name)
        {
            continue;
        }
        locks.hold(to, name, &t.name).await?;
        let w = wal::copy_archive(ctx, to, name, &t.name).await?;
        if w.copied > 0 {
            tracing::info!(
                "copied {} WAL file(s) of `{}` to `{name}`",
                w.copied,
                t.name
            );
        }
        if w.refused > 0 {
            tracing::warn!("{} WAL record(s) of `{}` are not trusted or not valid: not copied (`dr status` names them); the copy fails once the rest is copied", w.refused, t.name);
        }
        report.wal.insert(t.name.clone(), w);
    }
    let catalog = crate::repo::catalog(ctx.store.as_ref(), opts.target.as_deref(), &ctx.signing)
        .await
        .map_err(|e| e.context("listing the primary"))?;
    for d in &catalog.damaged {
        tracing::warn!(
            "backup {} of `{}` is damaged in the primary ({}): not copied",
            d.id,
            d.target,
            d.reason
        );
    }
    for entry in &catalog.entries {
        if ctx.cancel.is_cancelled() {
            return Err(Error::interrupted("the copy"));
        }
        let m = &entry.manifest;
        if opts.id.is_some_and(|only| only != m.id) {
            continue;
        }
        let manifest_key = keys::manifest(&m.target, &m.id);
        let bytes = ctx.store.get(&manifest_key).await.map_err(|e| {
            Error::from(e).context(format!("reading `{manifest_key}` from the primary"))
        })?;
        let signature = match ctx.store.get(&signature_key(&manifest_key)).await {
            Ok(s) => Some(s),
            Err(dr_store::StoreError::NotFound { .. }) => None,
            Err(e) => return Err(Error::from(e).context("reading the manifest's signature")),
        };
        // Checked again on the bytes that will be copied, not the ones listed.
        let trust = ctx.signing.check(&bytes, signature.as_deref());
        if let Err(e) = require_trusted(&trust, &m.id, &m.target, &ctx.signing, opts.trust_unsigned)
        {
            tracing::error!("{}; not copied", e.message);
            report.refused.push(RefusedBackup {
                target: m.target.clone(),
                id: m.id,
                reason: trust.reason(),
            });
            continue;
        }
        match to.store.get(&manifest_key).await {
            Ok(there) if there == bytes => {
                report.present += 1;
                // Re-signed in the primary since (`dr resign`: the manifest is never
                // rewritten, its signature is): the copy gets the new, trusted signature.
                if let Some(sig) = &signature {
                    if update_signature(to, name, &manifest_key, sig).await? {
                        report.signatures += 1;
                    }
                }
                continue;
            }
            Ok(_) => {
                return Err(Error::new(
                    Kind::Integrity,
                    format!("copy `{name}` holds another manifest for backup {} of `{}` than the primary", m.id, m.target),
                )
                .with_hint(format!("nothing was overwritten: compare `dr show {} --target {}` with and without --copy {name}; if the primary's was re-signed (`dr resign`), delete the copy's `{manifest_key}` and run `dr copy` again", m.id, m.target)));
            }
            Err(dr_store::StoreError::NotFound { .. }) => {}
            Err(e) => {
                return Err(
                    Error::from(e).context(format!("reading `{manifest_key}` from copy `{name}`"))
                )
            }
        }
        locks.hold(to, name, &m.target).await?;
        let started = Instant::now();
        let copied = copy_backup(ctx, to, m)
            .await
            .map_err(|e| e.context(format!("copying backup {} of `{}` to `{name}`", m.id, m.target)))
            .map_err(|mut e| {
                let redo = format!("nothing of this backup counts in `{name}` (its manifest was not written): run `dr copy --to {name}` again to redo it; `dr prune --copy {name}` removes what was left");
                e.hint = Some(match e.hint.take() {
                    Some(h) => format!("{h}; then {redo}"),
                    None => redo,
                });
                e
            })?;
        // A run whose lock expired and was taken over meanwhile commits nothing.
        locks.hold(to, name, &m.target).await?.check().await?;
        if let Some(sig) = signature {
            to.store
                .put(&signature_key(&manifest_key), sig)
                .await
                .map_err(|e| {
                    Error::from(e).context(format!("writing the manifest's signature to `{name}`"))
                })?;
        }
        // The commit point, last.
        to.store
            .put(&manifest_key, bytes)
            .await
            .map_err(|e| Error::from(e).context(format!("writing `{manifest_key}` to `{name}`")))?;
        let seconds = started.elapsed().as_secs_f64();
        tracing::info!(
            "copied backup {} of `{}` to `{name}`: {} objects, {} in {seconds:.1}s",
            m.id,
            m.target,
            m.objects.len(),
            human_bytes(copied)
        );
        report.copied.push(CopiedBackup {
            target: m.target.clone(),
            id: m.id,
            objects: m.objects.len(),
            bytes: copied,
            seconds,
        });
    }
    Ok(report)
}

/// Write the primary's (trusted) signature of `manifest_key` into the copy when the copy's
/// differs; whether it did.
async fn update_signature(
    to: &Context,
    name: &str,
    manifest_key: &str,
    signature: &bytes::Bytes,
) -> Result<bool> {
    let key = signature_key(manifest_key);
    match to.store.get(&key).await {
        Ok(there) if there == *signature => return Ok(false),
        Ok(_) | Err(dr_store::StoreError::NotFound { .. }) => {}
        Err(e) => return Err(Error::from(e).context(format!("reading `{key}` from copy `{name}`"))),
    }
    to.store
        .put(&key, signature.clone())
        .await
        .map_err(|e| Error::from(e).context(format!("writing `{key}` to copy `{name}`")))?;
    tracing::info!("copy `{name}`: `{key}` replaced by the primary's newer signature");
    Ok(true)
}

/// Every object `m` names, a few at a time; the first failure stops the others.
async fn copy_backup(ctx: &Context, to: &Context, m: &dr_catalog::Manifest) -> Result<u64> {
    use futures::stream::{self, StreamExt, TryStreamExt};
    let from: Arc<dyn ObjectStore> = Arc::clone(&ctx.store);
    let dest: Arc<dyn ObjectStore> = Arc::clone(&to.store);
    let limits = dest.part_limits();
    let part_mib = ctx.config.backup.part_size_mib;
    // A section stored as several objects (format 4): each of them, checked on its own.
    let mut stored: Vec<dr_catalog::ObjectRecord> = Vec::new();
    for o in &m.objects {
        if o.chunks.is_empty() {
            stored.push(o.clone());
        }
        for c in &o.chunks {
            stored.push(dr_catalog::ObjectRecord {
                key: c.key.clone(),
                bytes: c.bytes,
                sha256: c.sha256.clone(),
                chunks: Vec::new(),
                ..o.clone()
            });
        }
    }
    let copies = stored.into_iter().map(|o| {
        let part = limits.part_size_for(o.bytes, part_mib);
        let (from, dest, cancel) = (Arc::clone(&from), Arc::clone(&dest), ctx.cancel.clone());
        async move { object::copy_object(from.as_ref(), dest.as_ref(), &o, part, &cancel).await }
    });
    let sizes: Vec<u64> = stream::iter(copies)
        .buffer_unordered(OBJECTS_AT_ONCE)
        .try_collect()
        .await?;
    Ok(sizes.iter().sum())
}

/// The report's failure, when backups or WAL files were refused: exit 4 after copying the
/// others.
pub fn refused_error(report: &CopyReport) -> Option<Error> {
    let Some(first) = report.refused.first() else {
        let (target, w) = report.wal.iter().find(|(_, w)| w.refused > 0)?;
        let all: usize = report.wal.values().map(|w| w.refused).sum();
        return Some(
            Error::new(
                Kind::Integrity,
                format!(
                    "{all} WAL file(s) not copied to `{}` because this host does not trust their records, {} of them of `{target}`",
                    report.copy, w.refused
                ),
            )
            .with_hint("`dr status` on the primary names them: a WAL record not signed by a trusted key was not written by this deployment's dr (or was changed); find out what wrote it before relying on that part of the archive"),
        );
    };
    Some(
        Error::new(
            Kind::Integrity,
            format!(
                "{} backup(s) not copied to `{}` because this host does not trust them, e.g. {} of `{}` ({})",
                report.refused.len(),
                report.copy,
                first.id,
                first.target,
                first.reason
            ),
        )
        .with_hint("`dr list` marks them: a backup made before signing existed copies with --trust-unsigned; any other is not yours or was changed: find out what wrote it, and remove it with `dr prune --force` once understood"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_wal_fails_the_copy_like_a_refused_backup() {
        let mut report = CopyReport {
            copy: "offsite".into(),
            ..CopyReport::default()
        };
        assert!(refused_error(&report).is_none());
        report.wal.insert(
            "app".into(),
            WalCopied {
                copied: 3,
                present: 0,
                refused: 2,
            },
        );
        let e = refused_error(&report).expect("an error");
        assert_eq!(e.kind, Kind::Integrity);
        assert!(
            e.message.contains("2 WAL file(s)") && e.message.contains("`app`"),
            "{e}"
        );
        assert!(e.hint.as_deref().is_some_and(|h| h.contains("dr status")));
    }
}
