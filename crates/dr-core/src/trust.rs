//! Who wrote a backup: its manifest's signature checked against this host's trusted keys.
//!
//! age says nothing about origin (the recipient is public), so dr trusts a backup only when
//! its `manifest.json` carries a valid signature (`manifest.json.sig`, an OpenSSH SSHSIG, see
//! [`dr_stream::signing`]) by a key this host trusts: `[signing] trusted`, plus the public
//! half of `[signing] key_file`. Everything else is **untrusted**, with the reason: unsigned
//! (older backups, or a forgery), a bad signature (the manifest or its signature changed), or
//! a key this host does not trust (another host's key, an attacker's, a revoked one).
//!
//! An untrusted backup is listed (marked), never `latest`/`--at`, never restored or verified
//! (exit 4, before any target or sandbox is touched), never counted by retention, and
//! reported by `dr status` and `dr check`. An unsigned one restores with `--trust-unsigned`
//! (for backups made before signing existed); a badly signed one never does. Verification
//! records are signed the same way; an untrusted one does not count as a verification.

use std::sync::Arc;

use bytes::Bytes;
use dr_config::Config;
use dr_store::ObjectStore;
use dr_stream::signing::{SigningKey, TrustedKey, TrustedKeys, Verdict};
use serde::Serialize;

use crate::{Error, Kind, Result};
use dr_catalog::BackupId;

/// The signature of the document stored at `key`.
pub fn signature_key(key: &str) -> String {
    format!("{key}.sig")
}

/// This host's signing key (if it makes backups or verifications) and the keys it trusts.
#[derive(Debug, Clone, Default)]
pub struct Signing {
    key: Option<Arc<SigningKey>>,
    trusted: TrustedKeys,
    /// `[signing]` is in the config at all.
    pub configured: bool,
}

/// What this host can say about who wrote a document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Trust {
    /// Signed by a trusted key (its `SHA256:` fingerprint).
    Trusted { key: String },
    /// No signature: made before signing existed, or by someone without a key.
    Unsigned,
    /// The signature does not match: the document or its signature was changed.
    BadSignature { reason: String },
    /// Validly signed by a key this host does not trust (its fingerprint).
    UnknownKey { key: String },
}

impl Trust {
    pub fn is_trusted(&self) -> bool {
        matches!(self, Trust::Trusted { .. })
    }

    /// `trusted`, `unsigned`, `bad signature`, `unknown key`.
    pub fn label(&self) -> &'static str {
        match self {
            Trust::Trusted { .. } => "trusted",
            Trust::Unsigned => "unsigned",
            Trust::BadSignature { .. } => "bad signature",
            Trust::UnknownKey { .. } => "unknown key",
        }
    }

    /// Why it is untrusted, in a few words, for messages and `dr list`.
    pub fn reason(&self) -> String {
        match self {
            Trust::Trusted { key } => format!("signed by trusted key {key}"),
            Trust::Unsigned => "unsigned".into(),
            Trust::BadSignature { reason } => format!("bad signature: {reason}"),
            Trust::UnknownKey { key } => {
                format!("signed by {key}, a key this host does not trust")
            }
        }
    }
}

impl From<Verdict> for Trust {
    fn from(v: Verdict) -> Trust {
        match v {
            Verdict::Trusted { fingerprint } => Trust::Trusted { key: fingerprint },
            Verdict::Unsigned => Trust::Unsigned,
            Verdict::BadSignature(reason) => Trust::BadSignature { reason },
            Verdict::UnknownKey { fingerprint } => Trust::UnknownKey { key: fingerprint },
        }
    }
}

/// The hint for a backup refused as untrusted.
pub const NOT_CONFIGURED_HINT: &str = "this host has no [signing] section, so it trusts no backup: add `[signing] trusted = [\"ssh-ed25519 AAAA…\"]` with the public key the backup host's `dr keygen --signing` printed (see docs/CONFIGURATION.md)";

impl Signing {
    /// From `[signing]`: reads and checks `key_file` (mode 0600, an Ed25519 OpenSSH key) and
    /// parses `trusted`. A problem is a config error (exit 2).
    pub fn from_config(config: &Config) -> Result<Signing> {
        let Some(s) = &config.signing else {
            return Ok(Signing::default());
        };
        let mut trusted = Vec::new();
        for t in &s.trusted {
            trusted.push(
                TrustedKey::parse(t)
                    .map_err(|e| Error::from(e).context("invalid config: signing.trusted"))?,
            );
        }
        let key = match &s.key_file {
            Some(p) => {
                let k = SigningKey::from_file(p)
                    .map_err(|e| Error::from(e).context("invalid config: signing.key_file"))?;
                // A host trusts what it signs itself.
                trusted.push(k.public().clone());
                Some(Arc::new(k))
            }
            None => None,
        };
        Ok(Signing {
            key,
            trusted: TrustedKeys::new(trusted),
            configured: true,
        })
    }

    /// A host that signs with `key` and trusts only it (tests, `dr keygen` checks).
    pub fn with_key(key: SigningKey) -> Signing {
        let trusted = TrustedKeys::new(vec![key.public().clone()]);
        Signing {
            key: Some(Arc::new(key)),
            trusted,
            configured: true,
        }
    }

    pub fn can_sign(&self) -> bool {
        self.key.is_some()
    }

    /// The public half of `key_file`.
    pub fn public_key(&self) -> Option<&TrustedKey> {
        self.key.as_deref().map(SigningKey::public)
    }

    pub fn trusted(&self) -> &[TrustedKey] {
        self.trusted.keys()
    }

    /// `document`'s signature, `None` without a signing key.
    pub fn sign(&self, document: &[u8]) -> Result<Option<String>> {
        match &self.key {
            Some(k) => k
                .sign(document)
                .map(Some)
                .map_err(|e| Error::new(Kind::Failed, e.to_string())),
            None => Ok(None),
        }
    }

    /// Check `signature` over `document` against the trusted keys.
    pub fn check(&self, document: &[u8], signature: Option<&[u8]>) -> Trust {
        self.trusted.check(document, signature).into()
    }
}

/// A backup nobody would trust is not made: without `[signing] key_file`, exit 2 with the
/// steps.
pub fn require_signing_key(ctx: &crate::Context) -> Result<()> {
    if ctx.signing.can_sign() {
        return Ok(());
    }
    Err(Error::config(
        "this host has no signing key ([signing] key_file): backups are signed so that restore hosts can tell them from forgeries, and an unsigned backup would not be restorable",
    )
    .with_hint(
        "run `dr keygen --signing --output /etc/dr/signing.key` (mode 0600, keep it off the bucket), set `[signing] key_file = \"/etc/dr/signing.key\"` (or DR_SIGNING_KEY_FILE) here, and add the public key it prints to `[signing] trusted` on every host that restores, verifies or runs `dr status` (docs/CONFIGURATION.md, \"Signing\")",
    ))
}

/// Write `key.sig` for `document` (the bytes about to be stored at `key`), when this host
/// signs.
pub async fn put_signature(
    store: &dyn ObjectStore,
    signing: &Signing,
    key: &str,
    document: &[u8],
) -> Result<()> {
    if let Some(sig) = signing.sign(document)? {
        store
            .put(&signature_key(key), Bytes::from(sig.into_bytes()))
            .await
            .map_err(|e| Error::from(e).context(format!("writing the signature of `{key}`")))?;
    }
    Ok(())
}

/// Write `key.sig` (when this host signs), then `key`: the document stays the commit point,
/// a signature without its document is a leftover.
pub async fn put_signed(
    store: &dyn ObjectStore,
    signing: &Signing,
    key: &str,
    document: Vec<u8>,
) -> Result<()> {
    put_signature(store, signing, key, &document).await?;
    store.put(key, Bytes::from(document)).await?;
    Ok(())
}

/// Restore and verify use only a trusted backup; an unsigned one with `trust_unsigned`
/// (said loudly); a badly signed one or one signed by an unknown key never. Exit 4, before
/// anything is touched.
pub fn require_trusted(
    trust: &Trust,
    id: &BackupId,
    target: &str,
    signing: &Signing,
    trust_unsigned: bool,
) -> Result<()> {
    match trust {
        Trust::Trusted { .. } => Ok(()),
        Trust::Unsigned if trust_unsigned => {
            tracing::warn!(
                "USING UNSIGNED BACKUP {id} of `{target}` (--trust-unsigned): nothing proves dr made it; anyone with write access to the repository could have. Use it only if it predates signing and you know where it came from"
            );
            Ok(())
        }
        t => {
            let hint = match t {
                _ if !signing.configured => NOT_CONFIGURED_HINT.to_string(),
                Trust::Unsigned => "a backup made before signing existed restores only with --trust-unsigned, after you made sure it is one (`dr list` shows when it was made); a new unsigned backup was not made by a dr with a signing key: do not use it".into(),
                Trust::UnknownKey { .. } => "if this is your backup host's key, add its public half to `[signing] trusted`; if the key was revoked after a leak, see runbooks/signing-key-leaked.md; otherwise someone else wrote this backup: do not use it, restore a trusted one (`dr list`)".into(),
                _ => "the manifest or its signature was changed after the backup: do not use it; restore a trusted backup (`dr list`) and find out what wrote to the repository".into(),
            };
            Err(Error::new(
                Kind::Integrity,
                format!(
                    "backup {id} of `{target}` is untrusted ({}): refusing to use it",
                    t.reason()
                ),
            )
            .with_hint(hint))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_trusted_or_explicitly_accepted_unsigned_backups_are_used() {
        let signing = Signing::with_key(SigningKey::generate().expect("key"));
        let id: BackupId = "20261120T030000Z".parse().expect("id");
        let check = |t: Trust, s: &Signing, flag: bool| require_trusted(&t, &id, "app", s, flag);
        let trusted = Trust::Trusted {
            key: "SHA256:k".into(),
        };
        assert!(check(trusted, &signing, false).is_ok());
        let err = check(Trust::Unsigned, &signing, false).expect_err("unsigned");
        assert_eq!(err.kind, Kind::Integrity);
        assert!(err.to_string().contains("--trust-unsigned"), "{err}");
        assert!(err.to_string().contains("20261120T030000Z"), "{err}");
        assert!(check(Trust::Unsigned, &signing, true).is_ok());
        let bad = Trust::BadSignature {
            reason: "the signature does not match".into(),
        };
        assert!(check(bad, &signing, true).is_err());
        let unknown = Trust::UnknownKey {
            key: "SHA256:x".into(),
        };
        let err = check(unknown, &signing, true).expect_err("unknown key");
        assert!(err.to_string().contains("SHA256:x"), "{err}");
        let err = check(Trust::Unsigned, &Signing::default(), false).expect_err("no signing");
        assert!(err.to_string().contains("[signing]"), "{err}");
    }

    #[test]
    fn a_host_checks_what_it_signs() {
        let signing = Signing::with_key(SigningKey::generate().expect("key"));
        let sig = signing.sign(b"doc").expect("sign").expect("a key");
        assert!(signing.check(b"doc", Some(sig.as_bytes())).is_trusted());
        assert_eq!(signing.check(b"doc", None), Trust::Unsigned);
        assert!(matches!(
            signing.check(b"dot", Some(sig.as_bytes())),
            Trust::BadSignature { .. }
        ));
        let other = Signing::with_key(SigningKey::generate().expect("key"));
        assert!(matches!(
            other.check(b"doc", Some(sig.as_bytes())),
            Trust::UnknownKey { .. }
        ));
    }
}
