use crate::out;
use std::process::ExitCode;

use dr_core::status::{self, TargetStatus};
use dr_core::{Context, Result};

/// Usable directly as a cron monitor: exit 8 when any target is stale, failed verification,
/// has a damaged backup or a future-dated one (clock skew).
pub async fn run(ctx: &Context, as_json: bool) -> Result<ExitCode> {
    let rows = status::run(ctx).await?;
    write_wal_metrics(ctx, &rows);
    if as_json {
        crate::commands::print_json(&rows)?;
    } else {
        print_daemon(&rows);
        for r in &rows {
            print_row(r);
            if let Some(w) = &r.wal {
                print_wal(w);
            }
            if let Some(d) = &r.last_drill {
                print_drill(d);
            }
            if let Some(p) = &r.proven {
                out!(
                    "     proven {} of {} retained backups within {}{}",
                    p.proven,
                    p.retained,
                    p.within,
                    if p.overdue.is_empty() {
                        String::new()
                    } else {
                        format!(" (OVERDUE: {})", p.overdue.join(", "))
                    }
                );
            }
            for c in &r.copies {
                print_copy(c);
            }
        }
    }
    Ok(if rows.iter().any(|r| !r.ok) {
        ExitCode::from(crate::exit::STALE)
    } else {
        ExitCode::SUCCESS
    })
}

/// With `notify.textfile_path`, the `dr_wal_*` series of the WAL targets go to the textfile
/// (what else it holds is kept), so a timer running `dr status` feeds node-exporter where no
/// daemon serves `/metrics`. A failed write is logged: status itself is not affected.
fn write_wal_metrics(ctx: &Context, rows: &[TargetStatus]) {
    let Some(path) = &ctx.config.notify.textfile_path else {
        return;
    };
    if rows.iter().all(|r| r.wal.is_none()) {
        return;
    }
    let metrics = dr_observe::metrics::Metrics::default();
    if let Ok(text) = std::fs::read_to_string(path) {
        metrics.load_text(&text);
    }
    for r in rows {
        if let Some(w) = &r.wal {
            metrics.record_wal(&r.target, w);
        }
    }
    if let Err(e) = metrics.write_textfile(path) {
        tracing::warn!("cannot write metrics textfile {}: {e}", path.display());
    }
}

/// `daemon: running on HOST (last seen 30 s ago)`, or that none was seen, so `next` is not
/// read as a promise.
fn print_daemon(rows: &[TargetStatus]) {
    let freshest = rows
        .iter()
        .filter_map(|r| r.daemon.as_ref())
        .min_by_key(|d| d.last_seen_seconds);
    match freshest {
        Some(d) if d.running => out!(
            "daemon: running on {} (pid {}, last seen {} s ago)",
            d.host,
            d.pid,
            d.last_seen_seconds
        ),
        Some(d) => out!(
            "daemon: not running? last seen on {} {} ago; `next` times are only the schedule",
            d.host,
            age(d.last_seen_seconds)
        ),
        None => out!("daemon: no daemon seen; `next` times are only the schedule (cron or a timer may run dr instead)"),
    }
}

fn age(s: i64) -> String {
    format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
}

fn print_row(r: &TargetStatus) {
    out!(
        "{:<4} {:<16} newest {:<18} age {:>8}  verified {:<7} restore {:<30} next {}{}",
        if r.problems.is_empty() { "ok" } else { "FAIL" },
        r.target,
        r.newest_backup.as_deref().unwrap_or("none"),
        r.newest_backup_age_seconds
            .map(age)
            .unwrap_or_else(|| "-".into()),
        r.last_verification
            .as_ref()
            .map_or("never", |v| v.result.as_str()),
        // The measured RTO: what the newest verification's restore took, and of which backup.
        r.measured_restore.as_ref().map_or_else(
            || "unmeasured".to_string(),
            |m| format!(
                "{} ({})",
                dr_core::rto::human_seconds(m.seconds),
                m.backup_id
            )
        ),
        match (&r.next_backup, r.daemon.as_ref().is_some_and(|d| d.running)) {
            (None, _) => "unscheduled".to_string(),
            (Some(n), true) => n.clone(),
            (Some(n), false) => format!("{n} (if a daemon runs)"),
        },
        if r.problems.is_empty() {
            String::new()
        } else {
            format!("  ({})", r.problems.join("; "))
        }
    );
}

/// The drill line under a target with WAL: the newest drill and the window it proved.
fn print_drill(d: &dr_core::status::drill::LastDrill) {
    let proven = match (&d.proven_to, d.result.as_str()) {
        (Some(to), "passed") => format!("proven {} to {to}", d.proven_from),
        (None, "passed") => format!("proven from {}", d.proven_from),
        _ => format!(
            "FAILED{}",
            d.summary
                .as_deref()
                .map(|s| format!(": {s}"))
                .unwrap_or_default()
        ),
    };
    let exact = d
        .exact_counts_of
        .as_deref()
        .map(|id| format!(", exact counts of dump {id}"))
        .unwrap_or_default();
    out!(
        "     drill {} of base {} to {}{exact}: {proven}",
        d.verified_at,
        d.backup_id,
        d.point
    );
}

/// The WAL line under a target with `[targets.wal]`: the newest archived WAL, its age (the RPO
/// now), continuity, and the recoverable window once base backups exist.
fn print_wal(w: &dr_core::status::wal::WalStatus) {
    let newest = match (&w.newest, w.rpo_seconds) {
        (Some(n), Some(rpo)) => format!(
            "newest {n} RPO {} (max_lag {}s)",
            age(rpo),
            w.max_lag_seconds
        ),
        _ => "nothing archived".to_string(),
    };
    let continuity = match (&w.first_missing, &w.continuous_from) {
        (Some(m), _) => format!("GAP: {m} missing"),
        (None, Some(from)) => format!("continuous from {from}"),
        (None, None) => String::new(),
    };
    let windows: Vec<String> = w
        .windows
        .iter()
        .map(|x| {
            format!(
                "recoverable {} to {} (base {})",
                dr_core::time::format(x.earliest),
                dr_core::time::format(x.latest),
                x.base
            )
        })
        .collect();
    let parts: Vec<String> = [
        format!("wal {} timeline {}", w.mode, w.timeline),
        newest,
        continuity,
        windows.join("; "),
    ]
    .into_iter()
    .filter(|p| !p.is_empty())
    .collect();
    out!("     {}", parts.join("  "));
}

/// The line of one copy repository under a target: its newest backup, newest proof, lag.
fn print_copy(c: &dr_core::status::copies::CopyStatus) {
    if let Some(e) = &c.error {
        out!("     copy {:<12} UNREADABLE: {e}", c.copy);
        return;
    }
    out!(
        "     copy {:<12} newest {:<18} age {:>8}  proof {:<20} missing {}  lag {}",
        c.copy,
        c.newest_backup.as_deref().unwrap_or("none"),
        c.newest_backup_age_seconds
            .map(age)
            .unwrap_or_else(|| "-".into()),
        c.newest_proof.as_deref().unwrap_or("never"),
        c.missing,
        c.lag_seconds.map(age).unwrap_or_else(|| "-".into()),
    );
}
