//! Signatures of what dr writes: who wrote a document, checkable with stock `ssh-keygen`.
//!
//! age gives confidentiality and integrity, not origin: anyone holding the public recipient
//! can encrypt a well-formed backup. The backup host therefore also holds an Ed25519 signing
//! key (OpenSSH format, `dr keygen --signing`), and every document dr commits (a manifest, a
//! verification record; later WAL segment lists and base backups) is signed as an OpenSSH
//! SSHSIG in the namespace [`NAMESPACE`]. Restore hosts list the public halves they trust.
//! The signature is checkable without dr:
//!
//! ```text
//! echo "dr ssh-ed25519 AAAA…" > allowed_signers
//! ssh-keygen -Y verify -f allowed_signers -I dr -n dr-backup@v1 -s manifest.json.sig < manifest.json
//! ```
//!
//! Everything here takes bytes: what is signed is the exact stored document.
//!
//! ```
//! use dr_stream::signing::{SigningKey, TrustedKeys, Verdict};
//! let key = SigningKey::generate().unwrap();
//! let sig = key.sign(b"{\"id\":1}").unwrap();
//! let trusted = TrustedKeys::new(vec![key.public().clone()]);
//! assert!(matches!(trusted.check(b"{\"id\":1}", Some(sig.as_bytes())), Verdict::Trusted { .. }));
//! assert!(matches!(trusted.check(b"{\"id\":2}", Some(sig.as_bytes())), Verdict::BadSignature(_)));
//! ```

use std::path::Path;

use ssh_key::{rand_core::OsRng, Algorithm, HashAlg, LineEnding, PrivateKey, PublicKey, SshSig};

/// The SSHSIG namespace of every signature dr makes (`ssh-keygen -Y verify -n dr-backup@v1`).
/// Versioned: a future change of what is signed gets a new namespace, never a new meaning.
pub const NAMESPACE: &str = "dr-backup@v1";

/// The comment of keys `dr keygen --signing` makes (shown after the public key).
pub const COMMENT: &str = "dr-signing";

/// What went wrong with a key or a signature, with the next step.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("cannot use signing key file {path}: {detail}")]
    BadKeyFile {
        path: String,
        detail: String,
        hint: String,
    },
    #[error("`{value}` is not a trusted signing key: {detail}")]
    BadTrustedKey { value: String, detail: String },
    #[error("signing failed: {0}")]
    Sign(String),
}

impl SigningError {
    /// The next step for the operator (never part of the message).
    pub fn hint(&self) -> Option<String> {
        match self {
            SigningError::BadKeyFile { hint, .. } => Some(hint.clone()),
            SigningError::BadTrustedKey { .. } => Some("list public keys as `dr keygen --signing` prints them: \"ssh-ed25519 AAAA… dr-signing\"".into()),
            SigningError::Sign(_) => None,
        }
    }
}

/// The private signing key of a backup host.
pub struct SigningKey {
    key: PrivateKey,
    public: TrustedKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret key.
        f.debug_struct("SigningKey")
            .field("public", &self.public.fingerprint())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new Ed25519 key from the operating system's random source.
    pub fn generate() -> Result<SigningKey, SigningError> {
        let mut key = PrivateKey::random(&mut OsRng, Algorithm::Ed25519)
            .map_err(|e| SigningError::Sign(format!("generating an Ed25519 key: {e}")))?;
        key.set_comment(COMMENT);
        Ok(SigningKey::from_private(key))
    }

    fn from_private(key: PrivateKey) -> SigningKey {
        let public = TrustedKey {
            key: key.public_key().clone(),
        };
        SigningKey { key, public }
    }

    /// The key in OpenSSH's private key format, for a file of mode 0600.
    pub fn to_openssh(&self) -> Result<String, SigningError> {
        self.key
            .to_openssh(LineEnding::LF)
            .map(|s| s.to_string())
            .map_err(|e| SigningError::Sign(format!("encoding the key: {e}")))
    }

    /// Read an unencrypted OpenSSH Ed25519 private key. A file others can access is refused,
    /// and so is one the group can when it is dr's own file (unlike the age identity, which
    /// only warns): a readable signing key lets anyone on the host make backups that restore
    /// hosts trust. A group-readable file owned by someone else (a Kubernetes Secret mounted
    /// with `fsGroup`, which dr cannot chmod) is used with a warning.
    pub fn from_file(path: &Path) -> Result<SigningKey, SigningError> {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let bad = |detail: String, hint: String| SigningError::BadKeyFile {
            path: path.display().to_string(),
            detail,
            hint,
        };
        let meta = std::fs::metadata(path).map_err(|e| {
            bad(
                e.to_string(),
                "set signing.key_file (or DR_SIGNING_KEY_FILE) to the file `dr keygen --signing --output FILE` wrote".into(),
            )
        })?;
        let mode = meta.permissions().mode() & 0o777;
        let own = meta.uid() == nix::unistd::geteuid().as_raw();
        if mode & 0o070 != 0 && mode & 0o007 == 0 && !own {
            tracing::warn!(
                "the signing key {} is readable by its group (mode {mode:o}, owned by uid {}): expected for a mounted secret; make sure only dr's group can read it",
                path.display(),
                meta.uid()
            );
        } else if mode & 0o077 != 0 {
            return Err(bad(
                format!("it is readable or writable by group or others (mode {mode:o})"),
                format!(
                    "run `chmod 600 {}`; anyone who could read it can sign backups this host's restore hosts trust: if that may have happened, follow runbooks/signing-key-leaked.md",
                    path.display()
                ),
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| {
            bad(
                e.to_string(),
                "check the path and that dr's user can read it".into(),
            )
        })?;
        let key = PrivateKey::from_openssh(text.trim()).map_err(|e| {
            bad(
                format!("not an OpenSSH private key ({e})"),
                "use the file `dr keygen --signing --output FILE` wrote (not its public key, not an age identity)".into(),
            )
        })?;
        if key.is_encrypted() {
            return Err(bad(
                "the key is protected by a passphrase".into(),
                "dr signs unattended: make a key without a passphrase with `dr keygen --signing --output FILE`".into(),
            ));
        }
        if key.algorithm() != Algorithm::Ed25519 {
            return Err(bad(
                format!("the key is {}, not Ed25519", key.algorithm()),
                "make an Ed25519 key with `dr keygen --signing --output FILE`".into(),
            ));
        }
        Ok(SigningKey::from_private(key))
    }

    /// The public half, as restore hosts list it.
    pub fn public(&self) -> &TrustedKey {
        &self.public
    }

    /// Sign `document` (its exact bytes): an armored SSHSIG (`-----BEGIN SSH SIGNATURE-----`).
    pub fn sign(&self, document: &[u8]) -> Result<String, SigningError> {
        let sig = self
            .key
            .sign(NAMESPACE, HashAlg::Sha512, document)
            .map_err(|e| SigningError::Sign(e.to_string()))?;
        sig.to_pem(LineEnding::LF)
            .map_err(|e| SigningError::Sign(format!("encoding the signature: {e}")))
    }
}

/// A public key a host trusts: `ssh-ed25519 AAAA… [comment]`.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    key: PublicKey,
}

impl PartialEq for TrustedKey {
    fn eq(&self, other: &TrustedKey) -> bool {
        self.key.key_data() == other.key.key_data()
    }
}

impl TrustedKey {
    pub fn parse(value: &str) -> Result<TrustedKey, SigningError> {
        let bad = |detail: String| SigningError::BadTrustedKey {
            value: value.to_string(),
            detail,
        };
        let key = PublicKey::from_openssh(value.trim()).map_err(|e| bad(e.to_string()))?;
        if key.algorithm() != Algorithm::Ed25519 {
            return Err(bad(format!("{} keys are not accepted", key.algorithm())));
        }
        Ok(TrustedKey { key })
    }

    /// `ssh-ed25519 AAAA… comment`, as `dr keygen --signing` prints it.
    pub fn to_openssh(&self) -> String {
        self.key.to_openssh().unwrap_or_else(|_| self.fingerprint())
    }

    /// `SHA256:…`, as `ssh-keygen -l` prints it.
    pub fn fingerprint(&self) -> String {
        self.key.fingerprint(HashAlg::Sha256).to_string()
    }
}

/// What a signature says about a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Signed by a trusted key (its fingerprint).
    Trusted { fingerprint: String },
    /// No signature.
    Unsigned,
    /// The signature does not match the document, or is not a dr signature at all: the
    /// document (or the signature) was changed after signing.
    BadSignature(String),
    /// A valid signature by a key this host does not trust (its fingerprint).
    UnknownKey { fingerprint: String },
}

/// The keys a host trusts.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: Vec<TrustedKey>,
}

impl TrustedKeys {
    pub fn new(keys: Vec<TrustedKey>) -> TrustedKeys {
        let mut out: Vec<TrustedKey> = Vec::new();
        for k in keys {
            if !out.contains(&k) {
                out.push(k);
            }
        }
        TrustedKeys { keys: out }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn keys(&self) -> &[TrustedKey] {
        &self.keys
    }

    /// Check `signature` (an armored SSHSIG, `None` when there is none) over `document`.
    pub fn check(&self, document: &[u8], signature: Option<&[u8]>) -> Verdict {
        let Some(signature) = signature else {
            return Verdict::Unsigned;
        };
        let sig = match std::str::from_utf8(signature)
            .map_err(|e| e.to_string())
            .and_then(|s| SshSig::from_pem(s.trim()).map_err(|e| e.to_string()))
        {
            Ok(s) => s,
            Err(e) => return Verdict::BadSignature(format!("not an SSH signature ({e})")),
        };
        if sig.namespace() != NAMESPACE {
            return Verdict::BadSignature(format!(
                "signed for namespace `{}`, not `{NAMESPACE}`",
                sig.namespace()
            ));
        }
        let signer = PublicKey::from(sig.public_key().clone());
        if let Err(e) = signer.verify(NAMESPACE, document, &sig) {
            return Verdict::BadSignature(format!(
                "the signature does not match the document ({e})"
            ));
        }
        let fingerprint = signer.fingerprint(HashAlg::Sha256).to_string();
        if self
            .keys
            .iter()
            .any(|k| k.key.key_data() == signer.key_data())
        {
            Verdict::Trusted { fingerprint }
        } else {
            Verdict::UnknownKey { fingerprint }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &[u8] = b"{\"format\":2,\"target\":\"app\"}";

    #[test]
    fn a_signature_verifies_only_for_its_document_and_trusted_keys() {
        let key = SigningKey::generate().expect("key");
        let other = SigningKey::generate().expect("key");
        let sig = key.sign(DOC).expect("sign");
        assert!(sig.starts_with("-----BEGIN SSH SIGNATURE-----"), "{sig}");
        let trusted = TrustedKeys::new(vec![other.public().clone(), key.public().clone()]);
        assert_eq!(
            trusted.check(DOC, Some(sig.as_bytes())),
            Verdict::Trusted {
                fingerprint: key.public().fingerprint()
            }
        );
        // One byte changed.
        let mut edited = DOC.to_vec();
        edited[3] ^= 1;
        assert!(matches!(
            trusted.check(&edited, Some(sig.as_bytes())),
            Verdict::BadSignature(_)
        ));
        // Signed by a key not trusted here (the attacker's).
        let only_other = TrustedKeys::new(vec![other.public().clone()]);
        assert_eq!(
            only_other.check(DOC, Some(sig.as_bytes())),
            Verdict::UnknownKey {
                fingerprint: key.public().fingerprint()
            }
        );
        assert_eq!(TrustedKeys::default().check(DOC, None), Verdict::Unsigned);
        assert!(matches!(
            trusted.check(DOC, Some(b"garbage")),
            Verdict::BadSignature(_)
        ));
    }

    #[test]
    fn a_signature_of_another_namespace_is_bad() {
        let key = SigningKey::generate().expect("key");
        let sig = key
            .key
            .sign("file", HashAlg::Sha512, DOC)
            .expect("sign")
            .to_pem(LineEnding::LF)
            .expect("pem");
        let trusted = TrustedKeys::new(vec![key.public().clone()]);
        assert!(matches!(
            trusted.check(DOC, Some(sig.as_bytes())),
            Verdict::BadSignature(m) if m.contains("namespace")
        ));
    }

    #[test]
    fn keys_round_trip_through_files_and_public_lines() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("signing.key");
        let key = SigningKey::generate().expect("key");
        std::fs::write(&path, key.to_openssh().expect("pem")).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let e = SigningKey::from_file(&path).expect_err("group-readable");
        assert!(e.hint().unwrap_or_default().contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let read = SigningKey::from_file(&path).expect("read");
        assert_eq!(read.public(), key.public());
        let line = key.public().to_openssh();
        assert!(line.starts_with("ssh-ed25519 AAAA"), "{line}");
        assert!(line.ends_with(COMMENT), "{line}");
        assert_eq!(&TrustedKey::parse(&line).expect("parse"), key.public());
        assert!(TrustedKey::parse("ssh-ed25519 nope").is_err());
        assert!(TrustedKey::parse(
            "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
        )
        .is_err());
        let e = SigningKey::from_file(&dir.path().join("missing")).expect_err("missing");
        assert!(
            e.hint().unwrap_or_default().contains("dr keygen --signing"),
            "{e}"
        );
        std::fs::write(&path, line).expect("write");
        assert!(
            SigningKey::from_file(&path).is_err(),
            "a public key is not a signing key"
        );
    }
}
