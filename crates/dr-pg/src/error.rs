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
    #[error("no {tool} for PostgreSQL {major} found (looked in: {searched}; found: {found})\nhint: install postgresql-client-{major} (e.g. apt-get install postgresql-client-{major}) or set pg_bin_dir to a directory holding {tool} {major}")]
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

impl PgError {
    pub(crate) fn query(what: &str, e: tokio_postgres::Error) -> PgError {
        PgError::Query {
            what: what.to_string(),
            detail: describe(&e),
        }
    }
}

/// The server's message when there is one (it is more useful than "db error").
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
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
