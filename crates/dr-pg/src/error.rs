use std::path::PathBuf;

/// Errors talking to PostgreSQL or running its tools.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("invalid PostgreSQL URL `{url}`: {detail}\nhint: write e.g. postgres://user@host:5432/dbname")]
    BadUrl { url: String, detail: String },
    #[error("cannot connect to {target}: {detail}\nhint: {hint}")]
    Connect {
        target: String,
        detail: String,
        hint: String,
    },
    #[error("query failed while {what}: {detail}")]
    Query { what: String, detail: String },
    #[error("no {tool} for PostgreSQL {major} found (looked in: {searched}; found: {found})\nhint: install {package}{note} (e.g. apt-get install {package}) or set pg_bin_dir to a directory holding {tool} {major}", package = package(.tool, *.major), note = if is_server_tool(.tool) { " (the server package: the client package has no initdb/pg_ctl/postgres)" } else { "" })]
    NoMatchingTool {
        tool: String,
        major: u32,
        searched: String,
        found: String,
    },
    #[error("cannot start {path}: {source}")]
    Spawn {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Failed(#[from] crate::ProcessFailure),
}

/// `initdb`, `pg_ctl`, `postgres`: in the server package, not in the client one.
fn is_server_tool(tool: &str) -> bool {
    matches!(tool, "initdb" | "pg_ctl" | "postgres")
}

/// The Debian/PGDG package holding `tool` of `major`.
fn package(tool: &str, major: u32) -> String {
    if is_server_tool(tool) {
        format!("postgresql-{major}")
    } else {
        format!("postgresql-client-{major}")
    }
}

impl PgError {
    pub(crate) fn query(what: &str, e: tokio_postgres::Error) -> PgError {
        PgError::Query {
            what: what.to_string(),
            detail: describe(&e),
        }
    }
}

/// The server's message when there is one (it is more useful than "db error").
pub fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{}: {}", db.severity(), db.message());
        if let Some(d) = db.detail() {
            s.push_str(&format!(" ({d})"));
        }
        return s;
    }
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(&format!(": {inner}"));
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod package_tests {
    use super::*;

    /// Regression: a missing `initdb` hinted the client package, which has none.
    #[test]
    fn a_missing_server_tool_names_the_server_package() {
        let e = |tool: &str| {
            PgError::NoMatchingTool {
                tool: tool.into(),
                major: 17,
                searched: "/usr/lib/postgresql/17/bin".into(),
                found: "none".into(),
            }
            .to_string()
        };
        let initdb = e("initdb");
        assert!(
            initdb.contains("apt-get install postgresql-17)"),
            "{initdb}"
        );
        assert!(!initdb.contains("postgresql-client"), "{initdb}");
        assert!(e("pg_dump").contains("apt-get install postgresql-client-17)"));
    }
}
