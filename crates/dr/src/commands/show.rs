//! `dr show ID`: one backup, its objects and what it holds.

use crate::out;
use std::process::ExitCode;

use dr_core::list;
use dr_core::{human_bytes, Context, Result};

pub async fn run(ctx: &Context, id: &str, target: Option<&str>, as_json: bool) -> Result<ExitCode> {
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
    match &m.physical {
        Some(p) => {
            out!("kind        physical (base backup; restores with the WAL archive)");
            out!("pg_basebackup {}", p.pg_basebackup_version);
            out!(
                "wal         {}..{} on timeline {} (segments {}..{}, {} each)",
                p.start_lsn,
                p.stop_lsn,
                p.timeline,
                p.start_segment,
                p.stop_segment,
                human_bytes(p.segment_bytes)
            );
            out!("system      {}", p.system_identifier);
            out!("cluster     {} copied", human_bytes(m.database_bytes));
        }
        None => {
            out!("kind        logical (pg_dump)");
            out!("pg_dump     {}", m.pg_dump_version);
            out!("database    {} on disk", human_bytes(m.database_bytes));
        }
    }
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
            None if m.physical.is_some() => ": pg_basebackup's tar and its backup_manifest".into(),
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
        // Format 4: a section stored as several objects, in stream order.
        for c in &o.chunks {
            out!(
                "  {:<9} {:<48} {:>10}  sha256 {}",
                "  object",
                c.key,
                human_bytes(c.bytes),
                c.sha256
            );
        }
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
            if let Some(lsn) = &d.snapshot_lsn {
                out!("snapshot    at WAL position {lsn} (a recovery to just before it holds exactly these rows)");
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
        ObjectRole::BaseTar => "base tar",
        ObjectRole::BackupManifest => "manifest",
    }
}
