//! age recipients (public, for backups) and identities (private, for restores).

use std::path::Path;
use std::str::FromStr;

use crate::StreamError;

/// Parsed public recipients.
#[derive(Debug)]
pub struct Recipients {
    keys: Vec<age::x25519::Recipient>,
}

impl Recipients {
    pub fn parse(values: &[String]) -> Result<Recipients, StreamError> {
        if values.is_empty() {
            return Err(StreamError::BadRecipient {
                value: String::new(),
                detail: "no recipients configured".into(),
            });
        }
        let keys = values
            .iter()
            .map(|v| {
                age::x25519::Recipient::from_str(v.trim()).map_err(|e| StreamError::BadRecipient {
                    value: v.clone(),
                    detail: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Recipients { keys })
    }
    pub fn iter(&self) -> impl Iterator<Item = &dyn age::Recipient> {
        self.keys.iter().map(|k| k as &dyn age::Recipient)
    }
    pub fn to_strings(&self) -> Vec<String> {
        self.keys.iter().map(ToString::to_string).collect()
    }
}

/// Private identities read from an identity file.
#[derive(Clone)]
pub struct Identities {
    keys: Vec<age::x25519::Identity>,
    publics: Vec<String>,
}

impl Identities {
    pub fn from_file(path: &Path) -> Result<Identities, StreamError> {
        let bad = |detail: String, hint: &str| StreamError::BadIdentity {
            path: path.display().to_string(),
            detail,
            hint: hint.to_string(),
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            bad(
                e.to_string(),
                "set encryption.identity_file (or DR_IDENTITY_FILE) to the file `dr keygen` wrote",
            )
        })?;
        warn_if_exposed(path);
        let mut publics = Vec::new();
        let mut x25519 = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.starts_with("AGE-SECRET-KEY-") {
                let id = age::x25519::Identity::from_str(line).map_err(|e| {
                    bad(
                        e.to_string(),
                        "the file holds a malformed AGE-SECRET-KEY line",
                    )
                })?;
                publics.push(id.to_public().to_string());
                x25519.push(id);
            }
        }
        if x25519.is_empty() {
            return Err(bad(
                "no AGE-SECRET-KEY-... line found".into(),
                "this looks like a recipients file or something else; use the identity `dr keygen` wrote",
            ));
        }
        Ok(Identities {
            keys: x25519,
            publics,
        })
    }

    pub fn from_identities(keys: Vec<age::x25519::Identity>) -> Identities {
        let publics = keys.iter().map(|k| k.to_public().to_string()).collect();
        Identities { keys, publics }
    }

    pub fn iter(&self) -> impl Iterator<Item = &dyn age::Identity> {
        self.keys.iter().map(|k| k as &dyn age::Identity)
    }

    /// The public recipients matching these identities.
    pub fn publics(&self) -> &[String] {
        &self.publics
    }

    pub(crate) fn describe_expected(&self) -> String {
        if self.publics.is_empty() {
            "other recipients".into()
        } else {
            format!("recipients other than {}", self.publics.join(", "))
        }
    }
}

/// A new identity: (file contents in age-keygen's format, public recipient).
pub fn generate_identity(now_rfc3339: &str) -> (String, String) {
    use age::secrecy::ExposeSecret;
    let id = age::x25519::Identity::generate();
    let public = id.to_public().to_string();
    let contents = format!(
        "# created: {now_rfc3339}\n# public key: {public}\n{}\n",
        id.to_string().expose_secret()
    );
    (contents, public)
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret keys.
        f.debug_struct("Identities")
            .field("publics", &self.publics)
            .finish_non_exhaustive()
    }
}

/// Like ssh with a private key: an identity others can read is used, but said loudly. (It
/// is not refused: a Kubernetes secret or a restore at 3 a.m. must not fail on a mode bit.)
fn warn_if_exposed(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if exposed(mode) {
            tracing::warn!(
                "the age identity {} is readable by group or others (mode {mode:o}): anyone who can read it can decrypt every backup; run `chmod 600 {}`",
                path.display(),
                path.display()
            );
        }
    }
}

fn exposed(mode: u32) -> bool {
    mode & 0o077 != 0
}

#[cfg(test)]
mod exposure_tests {
    #[test]
    fn group_or_other_access_is_exposed() {
        assert!(!super::exposed(0o600));
        assert!(!super::exposed(0o400));
        assert!(super::exposed(0o640));
        assert!(super::exposed(0o604));
    }
}
