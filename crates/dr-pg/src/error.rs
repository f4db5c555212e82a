use std::path::PathBuf;

/// Errors talking to PostgreSQL or running its tools. The next step is [`PgError::hint`]
/// (never part of the message); whether trying again may help, [`PgError::is_transient`],
/// decided where the error is made (SQLSTATE, the I/O error kind).
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("invalid PostgreSQL URL `{url}`: {detail}")]
    BadUrl { url: String, detail: String },
    #[error("cannot connect to {target}: {detail}")]
    Connect {
        target: String,
        detail: String,
        hint: String,
        /// The server refused for now (starting up, too many clients) or the network failed.
        transient: bool,
    },
    #[error("query failed while {what}: {detail}")]
    Query {
        what: String,
        detail: String,
        hint: Option<String>,
        /// The connection broke, or the server said "not now" (see [`transient_sqlstate`]).
        transient: bool,
    },
    #[error("no {tool} for PostgreSQL {major} found (looked in: {searched}; found: {found})")]
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
    /// The next step for the operator.
    pub fn hint(&self) -> Option<String> {
        match self {
            PgError::BadUrl { .. } => Some("write e.g. postgres://user@host:5432/dbname".into()),
            PgError::Connect { hint, .. } => Some(hint.clone()),
            PgError::Query { hint, .. } => hint.clone(),
            PgError::NoMatchingTool { tool, major, .. } => {
                let package = package(tool, *major);
                let note = if is_server_tool(tool) {
                    " (the server package: the client package has no initdb/pg_ctl/postgres)"
                } else {
                    ""
                };
                Some(format!("install {package}{note} (e.g. apt-get install {package}) or set pg_bin_dir to a directory holding {tool} {major}"))
            }
            PgError::Spawn { .. } => None,
            PgError::Failed(f) => f.hint.clone(),
        }
    }

    /// Trying again later may help: a lost or refused connection, a server starting up or
    /// shutting down, too many clients, a lock or statement timeout. Never a bad URL, a
    /// missing tool, a rejected login or a missing database.
    pub fn is_transient(&self) -> bool {
        match self {
            PgError::Connect { transient, .. } | PgError::Query { transient, .. } => *transient,
            PgError::Failed(f) => f.transient,
            PgError::BadUrl { .. } | PgError::NoMatchingTool { .. } | PgError::Spawn { .. } => {
                false
            }
        }
    }
}

/// SQLSTATEs that mean "not now" rather than "wrong": connection exceptions (class 08), too
/// many connections, the server shutting down or starting up, a lock or statement timeout.
pub fn transient_sqlstate(code: &str) -> bool {
    code.starts_with("08")
        || matches!(
            code,
            "53300" // too_many_connections
                | "57P01" // admin_shutdown
                | "57P02" // crash_shutdown
                | "57P03" // cannot_connect_now: starting up, shutting down, in recovery
                | "55P03" // lock_not_available: lock_timeout
                | "57014" // query_canceled: statement_timeout
        )
}

/// Whether a driver error is worth another try: by its SQLSTATE when the server sent one;
/// otherwise a closed connection or an I/O failure on the way (refused, reset, timed out, a
/// name that did not resolve) is, a TLS or configuration problem is not.
pub(crate) fn transient(e: &tokio_postgres::Error) -> bool {
    if let Some(db) = e.as_db_error() {
        return transient_sqlstate(db.code().code());
    }
    if e.is_closed() {
        return true;
    }
    let mut next = std::error::Error::source(e);
    while let Some(inner) = next {
        if let Some(io) = inner.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            return !matches!(
                io.kind(),
                K::InvalidData | K::InvalidInput | K::PermissionDenied | K::Unsupported
            );
        }
        next = inner.source();
    }
    false
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
            hint: None,
            transient: transient(&e),
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
            .hint()
            .unwrap_or_default()
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
