use crate::out;
use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use dr_core::repo::Selector;
use dr_core::restore::{Plan, RestoreOptions};
use dr_core::{human_bytes, Context, Result};

use crate::cli::RestoreArgs;

pub async fn run(ctx: &Context, args: RestoreArgs) -> Result<ExitCode> {
    let opts = RestoreOptions {
        selector: Some(Selector::parse(args.id.as_deref(), args.at.as_deref())?),
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
    // Ask only a person at a terminal; cron and scripts pass --yes or have no TTY.
    let interactive =
        !args.yes && std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    let ask = |plan: &Plan| -> bool {
        eprintln!("{plan}");
        eprint!("proceed? [y/N] ");
        let _ = std::io::stderr().flush();
        let mut line = String::new();
        if std::io::stdin().lock().read_line(&mut line).is_err() {
            return false;
        }
        matches!(line.trim(), "y" | "Y" | "yes")
    };
    let confirm: dr_core::restore::Confirm<'_> = if interactive && opts.to.is_some() {
        Some(&ask)
    } else {
        None
    };
    let report = dr_core::restore::run(ctx, &opts, confirm).await?;
    if args.json {
        crate::commands::print_json(&report)?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.dry_run {
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
    crate::note!(
        "restored backup {} of `{}` into {}: {} tables, {} rows, all counts match the backup",
        report.plan.backup_id,
        report.plan.target,
        report.plan.destination,
        report.tables.len(),
        rows
    );
    for fk in &report.skipped_foreign_keys {
        eprintln!("  skipped foreign key {fk}: the table it references was not restored");
    }
    for (phase, s) in &report.seconds {
        crate::note!("  {phase:<14} {s:>8.1}s");
    }
    Ok(ExitCode::SUCCESS)
}
