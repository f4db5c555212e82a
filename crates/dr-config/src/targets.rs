//! `[[targets]]`: the databases dr backs up, and the expansion of a `databases = "all"`
//! target into one target per database of its server.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// Short name; part of every object key. Letters, digits, `-`, `_`.
    pub name: String,
    /// libpq-style URL without a password: `postgres://user@host:5432/db`.
    pub url: String,
    /// Directory holding `pg_dump`/`pg_dumpall`/`pg_restore` for this target.
    pub pg_bin_dir: Option<PathBuf>,
    /// `"all"`: every database of the server `url` points at (`url` names the database dr
    /// connects to in order to list them), expanded each run; each database is a target of
    /// its own named `NAME.DATABASE` (see [`dr_catalog::members`]), with its own backups and
    /// retention.
    pub databases: Option<Databases>,
    /// With `databases = "all"`: names of databases not to back up.
    #[serde(default)]
    pub exclude_databases: Vec<String>,
    /// `[targets.wal]`: continuous WAL archiving of this target's cluster.
    pub wal: Option<crate::WalConfig>,
    /// Set on a target expanded from a `databases = "all"` target.
    #[serde(skip)]
    pub expanded_from: Option<Expansion>,
}

/// The value of `databases` in a `[[targets]]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Databases {
    /// Every database that accepts connections, templates excepted.
    All,
}

/// Where an expanded target comes from: its server target and database, and the
/// `pg_dumpall --globals-only` script shared by every database of one run (dumped once).
#[derive(Debug, Clone)]
pub struct Expansion {
    pub server: String,
    pub database: String,
    pub globals: SharedGlobals,
}

/// The globals of one server, dumped by the first backup of a run and reused by the others.
#[derive(Clone, Default)]
pub struct SharedGlobals(pub std::sync::Arc<std::sync::OnceLock<Vec<u8>>>);

impl std::fmt::Debug for SharedGlobals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.get() {
            Some(g) => write!(f, "SharedGlobals({} bytes)", g.len()),
            None => write!(f, "SharedGlobals(not yet dumped)"),
        }
    }
}

impl TargetConfig {
    /// Whether this target stands for every database of its server.
    pub fn is_server(&self) -> bool {
        self.databases.is_some()
    }

    /// The target of one database of this server target: named `NAME.ESCAPED`, its URL
    /// naming that database.
    pub fn for_database(&self, database: &str, globals: &SharedGlobals) -> TargetConfig {
        let mut url = self.url.clone();
        if let Ok(mut u) = url::Url::parse(&self.url) {
            let mut path = String::from("/");
            for b in database.bytes() {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                    path.push(char::from(b));
                } else {
                    path.push_str(&format!("%{b:02X}"));
                }
            }
            u.set_path(&path);
            let query: Vec<(String, String)> = u
                .query_pairs()
                .filter(|(k, _)| k != "dbname")
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            if query.is_empty() {
                u.set_query(None);
            } else {
                u.query_pairs_mut().clear().extend_pairs(query);
            }
            url = u.to_string();
        }
        TargetConfig {
            name: dr_catalog::members::name(&self.name, database),
            url,
            pg_bin_dir: self.pg_bin_dir.clone(),
            databases: None,
            exclude_databases: Vec::new(),
            // WAL belongs to the server (the cluster), not to one of its databases.
            wal: None,
            expanded_from: Some(Expansion {
                server: self.name.clone(),
                database: database.to_string(),
                globals: globals.clone(),
            }),
        }
    }

    /// Which of `databases` (as listed on the server) this server target backs up: all but
    /// the excluded ones, in name order.
    pub fn included_databases(&self, databases: &[String]) -> Vec<String> {
        let mut out: Vec<String> = databases
            .iter()
            .filter(|d| !self.exclude_databases.contains(d))
            .cloned()
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{err, MIN};
    use crate::Config;
    use dr_catalog::members::valid_target_name;

    #[test]
    fn a_password_in_the_target_url_is_refused() {
        let e = err(&MIN.replace("user@host", "user:secret@host"));
        assert!(e.contains("password") && e.contains("PGPASSWORD"), "{e}");
        assert!(!e.contains("secret@"), "{e}");
    }

    #[test]
    fn duplicate_and_bad_target_names() {
        let dup = format!("{MIN}\n[[targets]]\nname = \"app\"\nurl = \"postgres://x@h/db\"\n");
        assert!(err(&dup).contains("twice"));
        assert!(err(&MIN.replace("name = \"app\"", "name = \"a/b\"")).contains("a/b"));
    }

    #[test]
    fn all_databases_of_a_server() {
        let text = MIN.replace(
            "url = \"postgres://user@host:5432/app\"",
            "url = \"postgres://user@host:5432/postgres?sslmode=require&dbname=x\"\ndatabases = \"all\"\nexclude_databases = [\"scratch\"]",
        );
        let c = Config::from_toml_str(&text, None).expect("parses");
        let server = &c.targets[0];
        assert!(server.is_server());
        assert_eq!(
            server.included_databases(&["b".into(), "scratch".into(), "a b".into()]),
            ["a b", "b"]
        );
        let g = SharedGlobals::default();
        let t = server.for_database("a b/é", &g);
        assert_eq!(t.name, "app.a~20b~2F~C3~A9");
        assert!(valid_target_name(&t.name));
        assert_eq!(
            t.url,
            "postgres://user@host:5432/a%20b%2F%C3%A9?sslmode=require"
        );
        assert!(!t.is_server());
        let from = t.expanded_from.as_ref().expect("expanded");
        assert_eq!(
            (from.server.as_str(), from.database.as_str()),
            ("app", "a b/é")
        );
        // `--target app.DB` resolves without the server; an excluded one is refused.
        let one = c.database_target("app.a~20b").expect("ok").expect("some");
        assert_eq!(one.url, "postgres://user@host:5432/a%20b?sslmode=require");
        let e = c.database_target("app.scratch").expect_err("excluded");
        assert!(e.to_string().contains("exclude_databases"), "{e}");
        assert!(c.database_target("app").expect("ok").is_none());
        assert!(c.database_target("other.db").expect("ok").is_none());
        // Mistakes are named.
        assert!(err(&text.replace("\"all\"", "\"some\"")).contains("some"));
        let e = err(&MIN.replace(
            "url = \"postgres://user@host:5432/app\"",
            "url = \"postgres://user@host:5432/app\"\nexclude_databases = [\"x\"]",
        ));
        assert!(
            e.contains("exclude_databases") && e.contains("hint:"),
            "{e}"
        );
        let e = err(&MIN.replace("name = \"app\"", "name = \"pg1.app\""));
        assert!(e.contains("pg1.app") && e.contains("`.`"), "{e}");
    }
}
