//! `dr list`: the backups, newest first, with their tiers and proofs.

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
    // A physical backup says so, with the WAL it needs, before any problem.
    let kind = r.wal.as_ref().map(|w| format!("physical {w}"));
    let problem = r.problem.as_ref().map(|p| format!("! {p}"));
    // `verify.prove_within`: no passed proof within it.
    let unproven = (r.proven == Some(false)).then(|| "unproven".to_string());
    let note = [kind, unproven, problem]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
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
