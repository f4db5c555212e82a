//! A `databases = "all"` target: the databases of its server, listed at run time.

use dr_config::{SharedGlobals, TargetConfig};
use dr_pg::ConnInfo;

use crate::{Error, Kind, Result};

/// The targets one configured target stands for now: itself, or, for a `databases = "all"`
/// target, one target per database of its server (listed over a connection to `url`) minus
/// `exclude_databases`, in name order, sharing one globals dump. A server with nothing left
/// to back up is an error: a run that backs up nothing must not look like a success.
pub async fn expand(target: &TargetConfig) -> Result<Vec<TargetConfig>> {
    if !target.is_server() {
        return Ok(vec![target.clone()]);
    }
    let all = server_databases(target).await?;
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

/// The databases of a server target's server that accept connections, templates excepted.
pub async fn server_databases(target: &TargetConfig) -> Result<Vec<String>> {
    let listing = async {
        let client = ConnInfo::parse(&target.url)?.connect().await?;
        let rows = client
            .query(
                "select datname from pg_database where datallowconn and not datistemplate order by datname",
                &[],
            )
            .await
            .map_err(|e| Error::new(Kind::Failed, format!("reading pg_database: {e}")))?;
        Ok::<_, Error>(rows.iter().map(|r| r.get::<_, String>(0)).collect())
    };
    listing
        .await
        .map_err(|e| e.context(format!("listing the databases of target `{}`", target.name)))
}
