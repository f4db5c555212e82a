//! `dr list --deleted` and `dr undelete`: backups hidden by delete markers, and bringing them back.

use crate::out;
use std::process::ExitCode;

use dr_core::{Context, Result};

/// `dr list --deleted`: backups hidden by delete markers.
pub async fn deleted(ctx: &Context, target: Option<&str>, as_json: bool) -> Result<ExitCode> {
    let rows = dr_core::undelete::deleted(ctx.store.as_ref(), target).await?;
    if as_json {
        crate::commands::print_json(&rows)?;
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        crate::note!(
            "no deleted or overwritten backups in {}",
            ctx.store.location()
        );
        return Ok(ExitCode::SUCCESS);
    }
    out!(
        "{:<18} {:<16} {:<20} {:<20} {:>7}  {:<20} OVERWRITTEN",
        "ID",
        "TARGET",
        "STARTED (UTC)",
        "STATE",
        "HIDDEN",
        "DELETED (UTC)"
    );
    let prefix = |r: &dr_core::undelete::DeletedBackup| format!("{}/{}/", r.target, r.id);
    for r in &rows {
        let p = prefix(r);
        let overwritten: Vec<&str> = r
            .overwritten
            .iter()
            .map(|o| o.key.strip_prefix(&p).unwrap_or(&o.key))
            .collect();
        out!(
            "{:<18} {:<16} {:<20} {:<20} {:>7}  {:<20} {}",
            r.id.to_string(),
            r.target,
            r.id.time().format("%Y-%m-%d %H:%M:%S").to_string(),
            r.state,
            r.hidden_objects,
            r.deleted_at
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_else(|| "-".into()),
            if overwritten.is_empty() {
                "-".to_string()
            } else {
                overwritten.join(",")
            }
        );
    }
    tracing::warn!(
        "{} deleted or overwritten backup(s): dr's versions are intact; `dr undelete ID` or `dr undelete --all` brings them back",
        rows.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// `dr undelete ID|latest` / `dr undelete --all`.
pub async fn run(
    ctx: &Context,
    id: Option<&str>,
    all: bool,
    target: Option<&str>,
    as_json: bool,
) -> Result<ExitCode> {
    use dr_core::undelete::Which;
    let which = match (all, id) {
        (true, _) => Which::All,
        (false, None | Some("latest")) => Which::Latest,
        (false, Some(s)) => Which::Id(s.parse().map_err(|e: dr_catalog::BadBackupId| {
            dr_core::Error::config(e)
                .with_hint("give a backup id (`dr list --deleted` shows them), `latest` or --all")
        })?),
    };
    let back = dr_core::undelete::run(ctx, target, &which).await?;
    if as_json {
        crate::commands::print_json(&back)?;
        return Ok(ExitCode::SUCCESS);
    }
    for d in &back {
        let count = |a: &str| d.restored.iter().filter(|r| r.action == a).count();
        let (newer, copied) = (count("removed_newer"), count("copied"));
        let mut what = format!("{} delete marker(s) removed", d.markers.len());
        if newer + copied > 0 {
            what.push_str(&format!(
                ", {} overwritten object(s) restored ({newer} by removing the newer versions, {copied} by copying dr's locked version back)",
                newer + copied
            ));
        }
        out!("undeleted\t{}\t{}\t{what}", d.target, d.id);
    }
    Ok(ExitCode::SUCCESS)
}
