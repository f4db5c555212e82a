//! `dr resign`: after a signing key leaked, sign the backups made before the leak again with
//! the new key, so restore hosts that trust only the new key use them.
//!
//! Sound because both conditions hold for every backup re-signed: its manifest's signature
//! verifies with the old (revoked) key, so it was signed by that key and is unchanged since;
//! and the manifest was stored before the time the key may first have leaked (the store's
//! write time: S3 sets it, a client cannot; with Object Lock an older version cannot be
//! replaced either), so the holder of the leaked key cannot have written it. Anything else is
//! left untrusted and said. The new signature replaces `manifest.json.sig`; the manifest is
//! never rewritten.

use chrono::{DateTime, Utc};
use dr_catalog::{keys, BackupId};
use dr_stream::signing::{TrustedKey, TrustedKeys, Verdict};
use serde::Serialize;

use crate::trust::signature_key;
use crate::{Context, Error, Result};

/// What happened to one backup.
#[derive(Debug, Clone, Serialize)]
pub struct Resigned {
    pub id: BackupId,
    pub resigned: bool,
    /// Why not, when not.
    pub reason: Option<String>,
}

/// Re-sign `ids` (every backup of `target` when empty) with this host's key.
pub async fn run(
    ctx: &Context,
    target: &str,
    ids: &[BackupId],
    old_key: &str,
    stored_before: DateTime<Utc>,
    dry_run: bool,
) -> Result<Vec<Resigned>> {
    if !ctx.signing.can_sign() {
        return Err(
            Error::config("`dr resign` signs with this host's key, and there is none")
                .with_hint("run it on the backup host that holds the new key ([signing] key_file)"),
        );
    }
    let old = TrustedKey::parse(old_key).map_err(|e| Error::from(e).context("--old-key"))?;
    if ctx.signing.public_key() == Some(&old) {
        return Err(Error::config(
            "--old-key is this host's own signing key",
        ).with_hint("make a new key first (`dr keygen --signing --output FILE`, then [signing] key_file), see runbooks/signing-key-leaked.md"));
    }
    let old = TrustedKeys::new(vec![old]);
    let ids: Vec<BackupId> = if ids.is_empty() {
        let objects = ctx
            .store
            .list(&format!("{target}/"))
            .await
            .map_err(|e| Error::from(e).context("listing the repository"))?;
        let mut all: Vec<BackupId> = objects
            .iter()
            .filter_map(|o| keys::parse(&o.key))
            .filter(|(_, _, rest)| *rest == keys::MANIFEST)
            .map(|(_, id, _)| id)
            .collect();
        all.sort_unstable();
        all
    } else {
        ids.to_vec()
    };
    let mut out = Vec::new();
    for id in ids {
        let key = keys::manifest(target, &id);
        let skip = |reason: String| Resigned {
            id,
            resigned: false,
            reason: Some(reason),
        };
        let Some(meta) = ctx.store.head(&key).await? else {
            out.push(skip(format!("no manifest `{key}`")));
            continue;
        };
        match meta.last_modified {
            Some(t) if t < stored_before => {}
            Some(t) => {
                out.push(skip(format!(
                    "its manifest was stored at {}, not before {}: the leaked key may have signed it",
                    t.to_rfc3339(),
                    stored_before.to_rfc3339()
                )));
                continue;
            }
            None => {
                out.push(skip(
                    "the repository does not say when its manifest was stored".into(),
                ));
                continue;
            }
        }
        let manifest = ctx.store.get(&key).await?;
        let sig_key = signature_key(&key);
        let sig = match ctx.store.head(&sig_key).await? {
            Some(_) => Some(ctx.store.get(&sig_key).await?),
            None => None,
        };
        match old.check(&manifest, sig.as_deref()) {
            Verdict::Trusted { .. } => {}
            v => {
                let why = match v {
                    Verdict::Unsigned => "unsigned".to_string(),
                    Verdict::BadSignature(r) => format!("bad signature: {r}"),
                    Verdict::UnknownKey { fingerprint } => {
                        format!("signed by {fingerprint}, not by --old-key")
                    }
                    Verdict::Trusted { .. } => String::new(),
                };
                out.push(skip(why));
                continue;
            }
        }
        if !dry_run {
            if let Some(new) = ctx.signing.sign(&manifest)? {
                ctx.store
                    .put(&sig_key, bytes::Bytes::from(new.into_bytes()))
                    .await
                    .map_err(|e| Error::from(e).context(format!("writing `{sig_key}`")))?;
            }
            tracing::info!(%id, target, "re-signed with this host's key");
        }
        out.push(Resigned {
            id,
            resigned: true,
            reason: None,
        });
    }
    Ok(out)
}
