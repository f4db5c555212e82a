use crate::out;
use std::process::ExitCode;

use dr_core::list::{self, ListRow, State};
use dr_core::{human_bytes, Context, Result};

pub async fn list(ctx: &Context, target: Option<&str>, as_json: bool) -> Result<ExitCode> {
    let rows = list::run(ctx, target).await?;
    if as_json {
        crate::commands::print_json(&rows)?;
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        crate::note!("no complete backups in {}", ctx.store.location());
        return Ok(ExitCode::SUCCESS);
    }
    out!(
        "{:<18} {:<16} {:<20} {:>10} {:>4}  {:<24} {:>8} {:<20} NOTE",
        "ID",
        "TARGET",
        "STARTED (UTC)",
        "SIZE",
        "PG",
        "VERIFIED",
        "RESTORE",
        "RETENTION"
    );
    rows.iter().for_each(print_row);
    let count = |s: State| rows.iter().filter(|r| r.state == s).count();
    let (damaged, future) = (count(State::Damaged), count(State::FutureDated));
    let overwritten = count(State::Overwritten);
    let untrusted = count(State::Untrusted);
    if untrusted > 0 {
        let hint = if ctx.signing.configured {
            "unsigned ones made before signing existed restore by id with --trust-unsigned; any other is not from a trusted dr: do not use it"
        } else {
            dr_core::trust::NOT_CONFIGURED_HINT
        };
        tracing::warn!(
            "{untrusted} untrusted backup(s): not signed by a key this host trusts; `latest` skips them, restore and verify refuse them, retention does not count them\nhint: {hint}"
        );
    }
    if overwritten > 0 {
        tracing::warn!(
            "{overwritten} overwritten backup(s): a manifest or object was replaced by a newer version than dr wrote (someone else wrote it); do not trust them until `dr undelete ID` brings back dr's locked versions (`dr list --deleted` shows them)"
        );
    }
    if damaged > 0 {
        tracing::warn!(
            "{damaged} damaged backup(s): `latest` skips them, restoring one by id fails; `dr prune --force` deletes them"
        );
    }
    if future > 0 {
        tracing::warn!(
            "{future} future-dated backup(s): taken with a clock that was ahead; `latest` skips them"
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn print_row(r: &ListRow) {
    let note = r
        .problem
        .as_ref()
        .map(|p| format!("! {p}"))
        .unwrap_or_default();
    let started = r.started_at.unwrap_or_else(|| r.id.time());
    let (size, pg, verified, retention) = match r.state {
        State::Damaged => ("-".into(), "-".into(), "-".into(), "kept (damaged)"),
        State::Overwritten if r.bytes.is_none() => {
            ("-".into(), "-".into(), "-".into(), "kept (overwritten)")
        }
        State::Ok | State::FutureDated | State::Overwritten | State::Untrusted => (
            r.bytes.map(human_bytes).unwrap_or_default(),
            r.server_major.map(|m| m.to_string()).unwrap_or_default(),
            match &r.verification {
                Some(v) => format!("{} {}", v.result, v.verified_at.format("%Y-%m-%d %H:%M")),
                None => "never".into(),
            },
            match r.state {
                State::Untrusted => "kept (untrusted)",
                _ => r.retention.as_deref().unwrap_or("-"),
            },
        ),
    };
    // The restore time measured by that verification (fetch+decrypt+restore).
    let restore = r
        .measured_restore_seconds
        .map_or_else(|| "-".into(), dr_core::rto::human_seconds);
    out!(
        "{:<18} {:<16} {:<20} {:>10} {:>4}  {:<24} {:>8} {:<20} {note}",
        r.id.to_string(),
        r.target,
        started.format("%Y-%m-%d %H:%M:%S").to_string(),
        size,
        pg,
        verified,
        restore,
        retention
    );
}

pub async fn show(
    ctx: &Context,
    id: &str,
    target: Option<&str>,
    as_json: bool,
) -> Result<ExitCode> {
    let shown = list::show(ctx, id, target).await?;
    if as_json {
        crate::commands::print_json(&shown)?;
        return Ok(ExitCode::SUCCESS);
    }
    let (m, details) = (&shown.entry.manifest, &shown.details);
    out!("backup      {}", m.id);
    out!("target      {}", m.target);
    out!("started     {}", m.started_at.to_rfc3339());
    out!(
        "finished    {} ({:.1}s)",
        m.finished_at.to_rfc3339(),
        (m.finished_at - m.started_at).num_milliseconds() as f64 / 1000.0
    );
    out!("server      PostgreSQL {}", m.server_version);
    out!("pg_dump     {}", m.pg_dump_version);
    out!("database    {} on disk", human_bytes(m.database_bytes));
    out!(
        "stored      {} ({} raw, {} + {})",
        human_bytes(m.stored_bytes()),
        human_bytes(m.raw_bytes()),
        m.compression,
        m.encryption
    );
    out!("recipients  {}", m.recipients.join(", "));
    out!("signature   {}", shown.entry.trust.reason());
    out!(
        "objects     format {}{}",
        m.format,
        match m.layout() {
            Some(dr_catalog::Layout::Sections { data, .. }) => format!(
                ": pre-data, then {} data stream{} at once, then post-data",
                data.len(),
                if data.len() == 1 { "" } else { "s" }
            ),
            _ => ": one archive".into(),
        }
    );
    for o in &m.objects {
        out!(
            "  {:<9} {:<48} {:>10}  sha256 {}",
            role_label(o.role),
            o.key,
            human_bytes(o.bytes),
            o.sha256
        );
    }
    match &shown.entry.verification {
        Some(v) => out!(
            "verified    {} at {} ({} of {} checks failed)",
            v.result,
            v.verified_at.to_rfc3339(),
            v.checks_failed,
            v.checks_total
        ),
        None => out!("verified    never (run `dr verify {}`)", m.id),
    }
    match details {
        Some(d) => {
            out!(
                "database    {} — {} tables, {} rows, {} sequences, {} large objects",
                d.database,
                d.tables.len(),
                d.total_rows(),
                d.sequences.len(),
                d.large_objects
            );
            if !d.extensions.is_empty() {
                out!("extensions  {}", d.extensions.join(", "));
            }
            for t in &d.tables {
                match t.stream {
                    Some(k) => out!("  {:<50} {:>12}  data-{k}", t.qualified(), t.rows),
                    None => out!("  {:<50} {:>12}", t.qualified(), t.rows),
                }
            }
        }
        None => out!(
            "details     encrypted (set encryption.identity_file to see tables and row counts)"
        ),
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn check(ctx: &Context, target: Option<&str>, as_json: bool) -> Result<ExitCode> {
    // Every line, passed or failed, then the failed ones once more as the error (exit 3).
    let lines = dr_core::check::run(ctx, target).await?;
    if as_json {
        crate::commands::print_json(&lines)?;
    } else {
        for l in &lines {
            out!(
                "{} {:<28} {}",
                if l.ok { "ok  " } else { "FAIL" },
                l.check,
                l.detail
            );
        }
    }
    match dr_core::check::failure(&lines) {
        Some(e) => Err(e),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// The role as the repository layout names it.
fn role_label(role: dr_catalog::ObjectRole) -> &'static str {
    use dr_catalog::ObjectRole;
    match role {
        ObjectRole::Dump => "dump",
        ObjectRole::PreData => "pre-data",
        ObjectRole::Data => "data",
        ObjectRole::PostData => "post-data",
        ObjectRole::Globals => "globals",
        ObjectRole::Details => "details",
    }
}

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
pub async fn undelete(
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
            dr_core::Error::config(format!(
                "{e}\nhint: give a backup id (`dr list --deleted` shows them), `latest` or --all"
            ))
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
