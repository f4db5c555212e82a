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

#[cfg(test)]
mod tests {
    use crate::{env, Config};

    const BASE: &str = "[repository]\nurl = \"file:///tmp/r\"\n[encryption]\nrecipients = [\"age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\"]\n";

    fn parse(extra: &str) -> Result<Config, String> {
        Config::from_toml_str(&format!("{BASE}{extra}"), None).map_err(|e| e.to_string())
    }

    #[test]
    fn trusted_keys_are_public_ssh_ed25519_lines() {
        assert!(parse("").expect("no signing").signing.is_none());
        let c = parse("[signing]\ntrusted = [\"ssh-ed25519 AAAAC3Nz dr-signing\"]\n").expect("ok");
        assert_eq!(c.signing.expect("signing").trusted.len(), 1);
        let e = parse("[signing]\ntrusted = [\"age1abc\"]\n").expect_err("not ssh");
        assert!(e.contains("not an ssh-ed25519 public key"), "{e}");
        let e = parse("[signing]\ntrusted = [\"-----BEGIN OPENSSH PRIVATE KEY-----\"]\n")
            .expect_err("private");
        assert!(e.contains("private key"), "{e}");
        let e = parse("[signing]\n").expect_err("empty");
        assert!(e.contains("neither key_file nor trusted"), "{e}");
        assert!(
            parse("[signing]\nkey_fil = \"x\"\n").is_err(),
            "unknown key"
        );
    }

    #[test]
    fn the_key_file_comes_from_the_environment_too() {
        let mut c = parse("").expect("ok");
        c.apply_env(|k| (k == env::SIGNING_KEY_FILE).then(|| "/etc/dr/signing.key".to_string()))
            .expect("env");
        let s = c.signing.expect("signing");
        assert_eq!(
            s.key_file.as_deref(),
            Some(std::path::Path::new("/etc/dr/signing.key"))
        );
    }
}
