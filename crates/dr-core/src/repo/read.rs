//! Reading the catalog: the manifests and newest verification records a listing holds, each
//! checked against the trusted keys; a manifest that cannot be used is a damaged backup.

use std::collections::{BTreeMap, BTreeSet};

use dr_catalog::{keys, BackupId, VerificationRecord};
use dr_store::ObjectStore;

use super::{parse_manifest, BackupEntry, DamagedBackup, UntrustedRecord};
use crate::trust::{signature_key, Signing};
use crate::{Error, Result};

/// The signatures a listing holds: one is fetched only when listed (absent means unsigned).
pub(super) struct Signatures<'a> {
    pub(super) store: &'a dyn ObjectStore,
    pub(super) listed: BTreeSet<&'a str>,
}

impl Signatures<'_> {
    async fn fetch(&self, key: &str) -> Result<Option<bytes::Bytes>> {
        let sig = signature_key(key);
        if !self.listed.contains(sig.as_str()) {
            return Ok(None);
        }
        self.store
            .get(&sig)
            .await
            .map(Some)
            .map_err(|e| Error::from(e).context(format!("reading signature `{sig}`")))
    }
}

/// The manifests in a listing, `(target, id, key)`, and each backup's newest verification
/// record key.
#[allow(clippy::type_complexity)]
pub(super) fn index(
    objects: &[dr_store::ObjectMeta],
) -> (
    Vec<(String, BackupId, String)>,
    BTreeMap<(String, BackupId), String>,
) {
    let mut manifests = Vec::new();
    let mut verifications: BTreeMap<(String, BackupId), String> = BTreeMap::new();
    for o in objects {
        if let Some((t, id, rest)) = keys::parse(&o.key) {
            if rest == keys::MANIFEST {
                manifests.push((t.to_string(), id, o.key.clone()));
            } else if let Some(name) = rest.strip_prefix("verify/") {
                if name.ends_with(".json") {
                    // Names are sortable times: keep the newest.
                    let slot = verifications.entry((t.to_string(), id)).or_default();
                    if o.key > *slot {
                        *slot = o.key.clone();
                    }
                }
            }
        }
    }
    (manifests, verifications)
}

/// One backup of the catalog: its manifest checked against the trusted keys, with its newest
/// verification record; a manifest that cannot be used is a damaged backup, not an error.
pub(super) async fn read_entry(
    store: &dyn ObjectStore,
    signing: &Signing,
    signatures: &Signatures<'_>,
    verifications: &BTreeMap<(String, BackupId), String>,
    target: String,
    id: BackupId,
    key: String,
) -> Result<std::result::Result<BackupEntry, DamagedBackup>> {
    let bytes = store
        .get(&key)
        .await
        .map_err(|e| Error::from(e).context(format!("reading manifest `{key}`")))?;
    let manifest = match parse_manifest(&key, &bytes) {
        Ok(m) => m,
        Err(reason) => {
            tracing::debug!("backup {id} of `{target}` is damaged: manifest `{key}`: {reason}");
            return Ok(Err(DamagedBackup {
                target,
                id,
                key,
                reason,
            }));
        }
    };
    let sig = signatures.fetch(&key).await?;
    let trust = signing.check(&bytes, sig.as_deref());
    let (verification, untrusted_verification) =
        match verifications.get(&(manifest.target.clone(), manifest.id)) {
            Some(vkey) => read_verification(store, signing, signatures, vkey).await?,
            None => (None, None),
        };
    Ok(Ok(BackupEntry {
        manifest,
        verification,
        trust,
        untrusted_verification,
    }))
}

/// A verification record: trusted, or untrusted with the reason; unreadable is logged, not
/// fatal (the backup is still listed, as unverified).
async fn read_verification(
    store: &dyn ObjectStore,
    signing: &Signing,
    signatures: &Signatures<'_>,
    vkey: &str,
) -> Result<(Option<VerificationRecord>, Option<UntrustedRecord>)> {
    let b = match store.get(vkey).await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!("cannot read verification record {vkey}: {e}");
            return Ok((None, None));
        }
    };
    let vsig = signatures.fetch(vkey).await?;
    Ok(match signing.check(&b, vsig.as_deref()) {
        t if t.is_trusted() => (serde_json::from_slice(&b).ok(), None),
        t => {
            tracing::debug!("verification record {vkey} is untrusted: {}", t.reason());
            let untrusted = serde_json::from_slice(&b)
                .ok()
                .map(|record| UntrustedRecord {
                    record,
                    reason: format!("{vkey}: {}", t.reason()),
                });
            (None, untrusted)
        }
    })
}
