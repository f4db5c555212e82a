use crate::out;
use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use dr_catalog::wal::plan::Target;
use dr_core::repo::Selector;
use dr_core::restore::pitr::into_db::{self, AtOptions};
use dr_core::restore::{Plan, RestoreOptions, RestoreReport};
use dr_core::{human_bytes, Context, Error, Kind, Result};

use crate::cli::{Global, RestoreArgs};

pub async fn run(ctx: &Context, global: &Global, args: RestoreArgs) -> Result<ExitCode> {
    let mut opts = RestoreOptions {
        selector: None,
        target: args.target,
        to: args.to,
        to_file: args.to_file,
        globals_to_file: args.globals_to_file,
        jobs: args.jobs,
        tables: args.table,
        schemas: args.schema,
        clean: args.clean,
        force: args.force,
        with_globals: args.with_globals,
        allow_roles: args.allow_role,
        allow_any_role: false,
        no_owner: args.no_owner,
        dry_run: args.dry_run,
        temp_dir: args.temp_dir,
        check_first: match (args.check_first, args.no_check_first) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        },
        trust_unsigned: args.trust_unsigned,
    };
    // A person at a terminal is asked before any restore into a database. Without one
    // (cron, ssh without -t, CI, a pipe) there is nobody to ask: a restore that changes
    // something existing is refused unless --yes; one into a new database goes ahead.
    let interactive = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    let ask = |plan: &Plan| -> Result<()> {
        eprintln!("{plan}");
        eprint!("proceed? [y/N] ");
        let _ = std::io::stderr().flush();
        let mut line = String::new();
        let yes = std::io::stdin().lock().read_line(&mut line).is_ok()
            && matches!(line.trim(), "y" | "Y" | "yes");
        if yes {
            Ok(())
        } else {
            Err(Error::new(
                Kind::Refused,
                "restore cancelled at the prompt; nothing was changed",
            ))
        }
    };
    let refuse_unasked = |plan: &Plan| -> Result<()> {
        if !plan.changes_existing {
            return Ok(());
        }
        Err(Error::new(
            Kind::Refused,
            format!(
                "refusing to restore into {} without a yes: it changes {}, and there is no terminal to ask on (stdin or stderr is not a TTY); nothing was changed\n{plan}",
                plan.destination,
                if plan.destination_state.starts_with("database does not exist") {
                    "the server's roles (--with-globals creates the missing ones)"
                } else {
                    "an existing database"
                },
            ),
        )
        .with_hint("check the plan above, then run the same command with --yes (or run it in a terminal to be asked)"))
    };
    let confirm: dr_core::restore::Confirm<'_> = match (args.yes, interactive) {
        (true, _) => None,
        (false, _) if opts.to.is_none() => None,
        (false, true) => Some(&ask),
        (false, false) => Some(&refuse_unasked),
    };
    // --at into a database: a target with WAL recovers that second in a sandbox; any other
    // picks the newest logical backup before it.
    if let (Some(at), None, Some(_)) = (args.at.as_deref(), &args.id, &opts.to) {
        let point = crate::commands::restore_pitr::parse_target(Some(at))?;
        if into_db::recovers_with_wal(ctx, opts.target.as_deref()) {
            let at_opts = AtOptions {
                at: point,
                timeline: args.timeline,
                fetch_argv: crate::commands::restore_pitr::fetch_argv(global)?,
            };
            if let Some(report) = into_db::run(ctx, &opts, &at_opts, confirm).await? {
                return print(&report, args.json, args.dry_run);
            }
        }
        if !matches!(point, Target::Time(_)) || args.timeline.is_some() {
            return Err(Error::config(format!(
                "--at {at}{} needs a target with a WAL archive ([targets.wal]) and a base backup in the repository; nothing was done",
                if args.timeline.is_some() { " with --timeline" } else { "" }
            ))
            .with_hint("give --at a time to restore the newest logical backup before it, or take a base backup (`dr backup --physical`)"));
        }
    }
    opts.selector = Some(Selector::parse(args.id.as_deref(), args.at.as_deref())?);
    let report = dr_core::restore::run(ctx, &opts, confirm).await?;
    print(&report, args.json, args.dry_run)
}

/// The report: JSON, the plan (`--dry-run`), or the summary on stderr.
fn print(report: &RestoreReport, json: bool, dry_run: bool) -> Result<ExitCode> {
    if json {
        crate::commands::print_json(report)?;
        return Ok(ExitCode::SUCCESS);
    }
    if dry_run {
        out!("{}", report.plan);
        return Ok(ExitCode::SUCCESS);
    }
    if !report.restored {
        crate::note!(
            "backup {} verified and written ({} archive)",
            report.plan.backup_id,
            human_bytes(report.plan.archive_bytes)
        );
        return Ok(ExitCode::SUCCESS);
    }
    let rows: i64 = report.tables.values().map(|(_, a)| a).sum();
    match (&report.plan.recovery, &report.recovered) {
        (Some(r), Some(reached)) => {
            crate::note!(
                "restored `{}` as of {} into {}: {} tables, {} rows, all counts match the recovered database",
                report.plan.target,
                r.pitr.recovery_target,
                report.plan.destination,
                report.tables.len(),
                rows
            );
            crate::note!(
                "  from base backup {} and {} WAL segments; {}",
                r.pitr.base_id,
                r.pitr.segments,
                reached.stopped
            );
        }
        _ => crate::note!(
            "restored backup {} of `{}` into {}: {} tables, {} rows, all counts match the backup",
            report.plan.backup_id,
            report.plan.target,
            report.plan.destination,
            report.tables.len(),
            rows
        ),
    }
    if let Some(gap) = &report.plan.at_gap {
        crate::note!("  missing: {gap}");
    }
    for fk in &report.skipped_foreign_keys {
        eprintln!("  skipped foreign key {fk}: the table it references was not restored");
    }
    for (phase, s) in &report.seconds {
        crate::note!("  {phase:<14} {s:>8.1}s");
    }
    Ok(ExitCode::SUCCESS)
}
