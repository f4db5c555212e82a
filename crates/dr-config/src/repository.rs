//! `[repository]` and `[encryption]`: where the backups go and to whom they are encrypted.
//! The repository's backend options belong to dr-store, which checks them; the signing keys
//! are in [`crate::signing`].

use std::path::PathBuf;

use serde::Deserialize;

/// `[repository]`: the URL, and the options of its backend, which dr-store owns and checks
/// (e.g. `[repository.s3]`, or the older `endpoint`/`region`/`path_style` beside `url`).
#[derive(Debug, Clone, Deserialize)]
pub struct RepositoryConfig {
    /// `s3://BUCKET/PREFIX` or `file:///ABSOLUTE/PATH`.
    pub url: String,
    /// Everything else in `[repository]`, passed through to [`dr_store::Location::parse`];
    /// an unknown key is refused there, by name.
    #[serde(flatten)]
    pub options: dr_store::RepositoryOptions,
    /// Not in the file: the prefix of the environment variables that hold this repository's
    /// own credentials (`DR_COPY_<NAME>_`, set by [`crate::Config::for_copy`]); `None` for
    /// the primary, whose credentials come from the AWS chain.
    #[serde(skip)]
    pub credentials_env: Option<String>,
}

impl RepositoryConfig {
    /// Where the repository lives: the URL checked by the backend its scheme names.
    pub fn location(&self) -> Result<dr_store::Location, dr_store::StoreError> {
        dr_store::Location::parse(&self.url, &self.options)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionConfig {
    /// Public age recipients (`age1...`). The backup host needs only these.
    #[serde(default)]
    pub recipients: Vec<String>,
    /// A file with one recipient per line (`#` comments allowed), e.g. the output of `dr keygen`.
    pub recipients_file: Option<PathBuf>,
    /// The private age identity, needed only to restore, verify and `show` details.
    pub identity_file: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use crate::tests::{err, MIN};
    use crate::{env, Config};

    #[test]
    fn a_private_key_among_recipients_is_refused() {
        let e = err(&MIN.replace("age1ql3z7", "AGE-SECRET-KEY-1ql3z7"));
        assert!(e.contains("private"), "{e}");
    }

    #[test]
    fn bad_repository_scheme() {
        let e = err(&MIN.replace("s3://bucket/prefix", "gs://bucket"));
        assert!(e.contains("gs://bucket"), "{e}");
        assert!(
            e.contains("hint: use s3://BUCKET/PREFIX or file:///absolute/path"),
            "{e}"
        );
        let e = err(&MIN.replace("s3://bucket/prefix", "s3://key:secret@bucket/prefix"));
        assert!(e.contains("credentials") && !e.contains("secret"), "{e}");
    }

    /// `[repository.s3]` is preferred; the older keys beside `url` still work; both ways
    /// with different values is an error naming both.
    #[test]
    fn repository_s3_options_new_table_old_keys_and_conflicts() {
        let s3 = |c: &Config| match c.repository.location() {
            Ok(dr_store::Location::S3 {
                endpoint,
                region,
                path_style,
                ..
            }) => (endpoint, region, path_style),
            other => panic!("{other:?}"),
        };
        let want = (
            Some("http://127.0.0.1:8333".to_string()),
            Some("us-east-1".to_string()),
            true,
        );
        let old = Config::from_toml_str(MIN, None).expect("old keys");
        assert_eq!(s3(&old), want);
        let table = MIN.replace("endpoint =", "[repository.s3]\nendpoint =");
        let new = Config::from_toml_str(&table, None).expect("new table");
        assert_eq!(s3(&new), want);
        let conflict = MIN.replace(
            "path_style = true\n",
            "path_style = true\n[repository.s3]\nregion = \"auto\"\n",
        );
        let e = err(&conflict);
        assert!(
            e.contains("repository.region")
                && e.contains("repository.s3.region")
                && e.contains("hint:"),
            "{e}"
        );
        let e = err(&MIN.replace(
            "endpoint = \"http://127.0.0.1:8333\"",
            "endpoint = \"nope\"",
        ));
        assert!(e.contains("repository.s3.endpoint"), "{e}");
        // The environment overrides the endpoint wherever the file wrote it.
        let mut c = Config::from_toml_str(&table, None).expect("new table");
        c.apply_env(|k| {
            (k == env::REPOSITORY_ENDPOINT).then(|| "http://10.0.0.1:9000".to_string())
        })
        .expect("valid");
        assert_eq!(s3(&c).0.as_deref(), Some("http://10.0.0.1:9000"));
    }

    /// `[repository.object_lock]`: two lines, checked at load; a directory refuses it.
    #[test]
    fn object_lock_is_read_checked_and_refused_by_a_directory() {
        let locked = format!("{MIN}\n[repository.object_lock]\nmode = \"compliance\"\ndays = 14\n");
        let c = Config::from_toml_str(&locked, None).expect("object_lock");
        let lock = c.repository.location().expect("location").object_lock();
        assert_eq!(
            lock,
            Some(dr_store::ObjectLock {
                mode: dr_store::LockMode::Compliance,
                days: 14
            })
        );
        let gov = locked.replace("compliance", "governance");
        let c = Config::from_toml_str(&gov, None).expect("governance");
        assert_eq!(
            c.repository
                .location()
                .expect("location")
                .object_lock()
                .map(|l| l.mode),
            Some(dr_store::LockMode::Governance)
        );
        for (bad, names) in [
            (locked.replace("compliance", "forever"), "forever"),
            (locked.replace("days = 14", "days = 0"), "object_lock.days"),
            (locked.replace("days = 14", "dayz = 14"), "dayz"),
            (locked.replace("days = 14\n", ""), "days"),
        ] {
            let e = err(&bad);
            assert!(e.contains(names) && e.contains("hint:"), "{e}");
        }
        // A directory repository: refused at load, with the way out.
        let dir = locked.replace("s3://bucket/prefix", "file:///srv/dr");
        let e = err(&dir);
        assert!(
            e.contains("repository.object_lock")
                && e.contains("directory")
                && e.contains("hint: remove [repository.object_lock]"),
            "{e}"
        );
        // ... also when the url is switched by the environment.
        let mut c = Config::from_toml_str(&locked, None).expect("object_lock");
        let e = c
            .apply_env(|k| (k == env::REPOSITORY_URL).then(|| "file:///tmp/x".to_string()))
            .expect_err("directory");
        assert!(e.to_string().contains("object_lock"), "{e}");
    }
}
