//! A `databases = "all"` target: the databases of its server, listed at run time.

use dr_config::{SharedGlobals, TargetConfig};
use dr_pg::ConnInfo;

use crate::{Error, Kind, Result};

/// What a server target's server holds now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerDatabases {
    /// Databases that accept connections, templates excepted, in name order: what
    /// `databases = "all"` backs up (minus `exclude_databases`).
    pub databases: Vec<String>,
    /// Databases that refuse connections (`datallowconn = false`), templates excepted:
    /// nobody can dump them. Never skipped in silence: see [`closed_database`].
    pub closed: Vec<String>,
}

impl ServerDatabases {
    /// The closed databases `target` does not exclude: each is a database that will not be
    /// backed up without anyone having asked for that.
    pub fn closed_included(&self, target: &TargetConfig) -> Vec<String> {
        self.closed
            .iter()
            .filter(|d| !target.exclude_databases.contains(d))
            .cloned()
            .collect()
    }
}

/// What backup, check and status say about a database that refuses connections.
pub fn closed_database(server: &str, database: &str) -> Error {
    Error::new(
        Kind::Failed,
        format!(
            "database `{database}` of target `{server}` does not accept connections (datallowconn = false): it is not backed up"
        ),
    )
    .with_hint(format!(
        "`ALTER DATABASE {} WITH ALLOW_CONNECTIONS true` to back it up, or add it to exclude_databases to skip it knowingly",
        dr_pg::quote_ident(database)
    ))
}

/// The targets one configured target stands for now: itself, or, for a `databases = "all"`
/// target, one target per database of its server (listed over a connection to `url`) minus
/// `exclude_databases`, in name order, sharing one globals dump. A server with nothing left
/// to back up is an error: a run that backs up nothing must not look like a success. A
/// database that refuses connections is warned about (it cannot be dumped).
pub async fn expand(target: &TargetConfig) -> Result<Vec<TargetConfig>> {
    if !target.is_server() {
        return Ok(vec![target.clone()]);
    }
    let listed = server_databases(target).await?;
    for d in listed.closed_included(target) {
        tracing::warn!(
            "{}",
            closed_database(&target.name, &d)
                .to_string()
                .replace('\n', "; ")
        );
    }
    let all = listed.databases;
    let included = target.included_databases(&all);
    if included.is_empty() {
        return Err(Error::config(format!(
            "target `{}`: no database to back up ({} found, all excluded by exclude_databases)",
            target.name,
            all.len()
        )));
    }
    tracing::info!(
        target = %target.name,
        databases = %included.join(", "),
        excluded = %target.exclude_databases.join(", "),
        "every database of the server: {} to back up",
        included.len()
    );
    let globals = SharedGlobals::default();
    Ok(included
        .iter()
        .map(|d| target.for_database(d, &globals))
        .collect())
}

/// The databases of a server target's server, templates excepted: those that accept
/// connections and those that do not.
pub async fn server_databases(target: &TargetConfig) -> Result<ServerDatabases> {
    let listing = async {
        let client = ConnInfo::parse(&target.url)?.connect().await?;
        let all = dr_pg::server_databases(&client).await?;
        let (open, closed): (Vec<_>, Vec<_>) = all
            .into_iter()
            .filter(|d| !d.is_template)
            .partition(|d| d.allows_connections);
        Ok::<_, Error>(ServerDatabases {
            databases: open.into_iter().map(|d| d.name).collect(),
            closed: closed.into_iter().map(|d| d.name).collect(),
        })
    };
    listing
        .await
        .map_err(|e| e.context(format!("listing the databases of target `{}`", target.name)))
}
