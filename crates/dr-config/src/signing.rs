//! `[signing]`: the key a backup host signs manifests with, the keys a restore host trusts.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningConfig {
    /// The private Ed25519 key (OpenSSH format, mode 0600) `dr keygen --signing` wrote. Needed
    /// by `dr backup` and `dr verify` (which signs its records). Its public half is trusted.
    pub key_file: Option<PathBuf>,
    /// Public keys (`ssh-ed25519 AAAA… comment`) whose signatures this host trusts. Several
    /// while a key is rotated; remove one to revoke it.
    #[serde(default)]
    pub trusted: Vec<String>,
}

impl SigningConfig {
    /// What can be checked without reading files: `(message, hint)` on a problem. The keys
    /// themselves are parsed when the repository is opened (dr-core).
    pub(crate) fn validate(&self) -> Result<(), (String, String)> {
        for t in &self.trusted {
            let t = t.trim();
            if t.starts_with("-----BEGIN") {
                return Err((
                    "signing.trusted holds a private key".into(),
                    "remove it from the config at once and make a new key (runbooks/signing-key-leaked.md); list only public keys (ssh-ed25519 AAAA…)".into(),
                ));
            }
            if !t.starts_with("ssh-ed25519 ") {
                let shown: String = t.chars().take(24).collect();
                return Err((
                    format!("signing.trusted entry `{shown}…` is not an ssh-ed25519 public key"),
                    "list public keys as `dr keygen --signing` prints them: \"ssh-ed25519 AAAA… dr-signing\"".into(),
                ));
            }
        }
        if self.key_file.is_none() && self.trusted.is_empty() {
            return Err((
                "[signing] has neither key_file nor trusted keys".into(),
                "a backup host sets key_file (`dr keygen --signing --output FILE`), a restore host lists the backup host's public key in trusted".into(),
            ));
        }
        Ok(())
    }
}
