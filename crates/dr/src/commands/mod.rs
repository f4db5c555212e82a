//! One file per command: each turns what dr-core returns into lines on stdout (or JSON). Data goes to stdout, messages to stderr.

mod backup;
mod check;
mod copy;
mod daemon;
mod keygen;
mod list;
mod prune;
mod restore;
mod restore_pitr;
mod show;
mod status;
mod undelete;
mod verify;
mod wal;
mod wal_fetch;

use std::path::PathBuf;
use std::process::ExitCode;

use dr_config::Config;
use dr_core::{Context, Error, Result};
use dr_observe::report::Reporter;

use crate::cli::{Cli, Command, Global, WalCommand};

pub async fn run(cli: Cli) -> Result<ExitCode> {
    if let Command::Restore(args) = &cli.command {
        refuse_password(args.to.as_deref())?;
    }
    match cli.command {
        Command::Keygen {
            output,
            force,
            signing,
        } => {
            if signing {
                keygen::signing(&output)
            } else {
                keygen::run(&output, force)
            }
        }
        Command::Resign {
            ids,
            target,
            old_key,
            stored_before,
            dry_run,
        } => {
            let ctx = context(&cli.global).await?;
            check_target(&ctx, Some(&target)).await?;
            keygen::resign(&ctx, &target, &ids, &old_key, &stored_before, dry_run).await
        }
        Command::Backup {
            target,
            jobs,
            physical,
        } => {
            let mut ctx = context(&cli.global).await?;
            if physical {
                return backup::run_physical(&ctx, target.as_deref()).await;
            }
            backup::set_jobs(&mut ctx, jobs)?;
            let reporter = Reporter::from_config(&ctx.config)?;
            backup::run(&ctx, &reporter, target.as_deref()).await
        }
        Command::Copy {
            id,
            to,
            target,
            trust_unsigned,
            json,
        } => {
            let ctx = context(&cli.global).await?;
            check_target(&ctx, target.as_deref()).await?;
            let id = id
                .map(|s| s.parse::<dr_catalog::BackupId>())
                .transpose()
                .map_err(|e| Error::config(e.to_string()))?;
            let opts = dr_core::copy::CopyOptions {
                target,
                trust_unsigned,
                id,
            };
            let reporter = Reporter::from_config(&ctx.config)?;
            copy::run(&ctx, &cli.global, &reporter, to.as_deref(), &opts, json).await
        }
        Command::List {
            target,
            copy,
            json,
            deleted,
        } => {
            let ctx = context_in(&cli.global, copy.as_deref()).await?;
            if deleted {
                return undelete::deleted(&ctx, target.as_deref(), json).await;
            }
            check_target(&ctx, target.as_deref()).await?;
            refuse_server(&ctx, target.as_deref()).await?;
            list::list(&ctx, target.as_deref(), json).await
        }
        Command::Undelete {
            id,
            all,
            target,
            json,
        } => {
            let ctx = context(&cli.global).await?;
            undelete::run(&ctx, id.as_deref(), all, target.as_deref(), json).await
        }
        Command::Show {
            id,
            target,
            copy,
            json,
        } => {
            let ctx = context_in(&cli.global, copy.as_deref()).await?;
            check_target(&ctx, target.as_deref()).await?;
            refuse_server(&ctx, target.as_deref()).await?;
            show::run(&ctx, &id, target.as_deref(), json).await
        }
        Command::Check { target, json } => {
            let ctx = context(&cli.global).await?;
            check_target(&ctx, target.as_deref()).await?;
            check::run(&ctx, target.as_deref(), json).await
        }
        Command::Verify {
            id,
            target,
            copy,
            sandbox,
            image,
            jobs,
            trust_unsigned,
            pitr,
            at,
            timeline,
            temp_dir,
            json,
        } => {
            let ctx = context_in(&cli.global, copy.as_deref()).await?;
            check_target(&ctx, target.as_deref()).await?;
            if !pitr {
                refuse_server(&ctx, target.as_deref()).await?;
            }
            let reporter = Reporter::from_config(&ctx.config)?;
            let drill = match pitr {
                true => Some(dr_core::verify::Drill {
                    at: match at.as_deref() {
                        Some(a) => Some(restore_pitr::parse_target(Some(a))?),
                        None => None,
                    },
                    timeline,
                    fetch_argv: restore_pitr::fetch_argv(&cli.global)?,
                    temp_dir,
                }),
                false => None,
            };
            let opts = dr_core::verify::VerifyOptions {
                // No id: the newest backup, or with `verify.prove_within` the one whose last
                // proof is oldest.
                selector: match id.as_deref() {
                    Some(id) => Some(dr_core::repo::Selector::parse(Some(id), None)?),
                    None => None,
                },
                target,
                sandbox,
                image,
                jobs,
                trust_unsigned,
                pitr: drill,
            };
            verify::run(&ctx, &reporter, &opts, json).await
        }
        Command::Prune {
            target,
            copy,
            dry_run,
            force,
            json,
        } => {
            let ctx = context_in(&cli.global, copy.as_deref()).await?;
            check_target(&ctx, target.as_deref()).await?;
            let reporter = Reporter::from_config(&ctx.config)?;
            prune::run(&ctx, &reporter, target.as_deref(), dry_run, force, json).await
        }
        Command::Status { json } => {
            let ctx = context(&cli.global).await?;
            status::run(&ctx, json).await
        }
        Command::Wal(command) => run_wal(&cli.global, command).await,
        Command::Daemon { dry_run, count } => daemon::run(&cli.global, dry_run, count).await,
        Command::Restore(args) => run_restore(&cli.global, *args).await,
    }
}

/// `dr restore`: into a database or files, or (`--to-dir`) point-in-time recovery.
async fn run_restore(global: &Global, args: crate::cli::RestoreArgs) -> Result<ExitCode> {
    // From a copy: the recovered server's `dr wal fetch` reads that copy too.
    let mut global = global.clone();
    if args.from_copy.is_some() {
        global.repository_copy.clone_from(&args.from_copy);
    }
    let global = &global;
    let ctx = context(global).await?;
    check_target(&ctx, args.target.as_deref()).await?;
    refuse_server(&ctx, args.target.as_deref()).await?;
    if args.to_dir.is_some() {
        return restore_pitr::run(&ctx, global, args).await;
    }
    restore::run(&ctx, global, args).await
}

/// `dr wal …`: what PostgreSQL's archive_command and restore_command run.
async fn run_wal(global: &Global, command: WalCommand) -> Result<ExitCode> {
    let ctx = context(global).await?;
    match command {
        WalCommand::Push { path, target } => wal::push(&ctx, &path, target.as_deref()).await,
        WalCommand::Fetch {
            name,
            dest,
            target,
            spool,
        } => {
            wal_fetch::run(
                &ctx,
                global,
                target.as_deref(),
                &name,
                &dest,
                spool.as_deref(),
            )
            .await
        }
        WalCommand::Prefetch {
            after,
            spool,
            target,
        } => wal_fetch::prefetch(&ctx, &target, &spool, &after).await,
        WalCommand::Stream { target } => wal::stream(&ctx, target.as_deref()).await,
    }
}

async fn check_target(ctx: &Context, target: Option<&str>) -> Result<()> {
    match target {
        Some(t) => dr_core::check_target_name(ctx, t).await,
        None => Ok(()),
    }
}

/// `--target NAME` of a `databases = "all"` target, where one database is meant: its backups
/// are kept per database (`NAME.DATABASE`), so say which ones exist instead of answering
/// "no backups".
async fn refuse_server(ctx: &Context, target: Option<&str>) -> Result<()> {
    let Some(name) = target else { return Ok(()) };
    if !ctx
        .config
        .targets
        .iter()
        .any(|t| t.name == name && t.is_server())
    {
        return Ok(());
    }
    let members = dr_core::repo::members(ctx, name).await?;
    Err(Error::config(format!(
        "target `{name}` is every database of a server: its backups are kept per database, as targets `{name}.DATABASE`; nothing was done"
    ))
    .with_hint(format!(
        "pass --target {name}.DATABASE; with backups: {}",
        if members.is_empty() {
            "none yet".to_string()
        } else {
            members.join(", ")
        }
    )))
}

/// `--to` must not carry a password: it would sit in shell history and in `ps` for everyone.
fn refuse_password(url: Option<&str>) -> Result<()> {
    match url {
        Some(u) if dr_config::url_holds_password(u) => {
            Err(Error::config("--to holds a password; nothing was done")
                .with_hint(dr_config::PASSWORD_HINT))
        }
        _ => Ok(()),
    }
}

pub fn load_config(g: &Global) -> Result<Config> {
    let path = g
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(dr_config::DEFAULT_CONFIG_PATH));
    Config::load(&path).map_err(Error::from)
}

/// Load the config, open the repository; the operation is cancelled by SIGINT/SIGTERM.
pub async fn context(g: &Global) -> Result<Context> {
    context_in(g, None).await
}

/// [`context`] on copy `name` (`--from-copy`/`--copy NAME`), or on the primary: every
/// read and write of the command goes to that repository.
pub async fn context_in(g: &Global, copy: Option<&str>) -> Result<Context> {
    let config = load_config(g)?;
    match copy.or(g.repository_copy.as_deref()) {
        Some(name) => context_of(g, config.for_copy(name)?).await,
        None => context_of(g, config).await,
    }
}

/// [`context`] with a config already loaded.
pub async fn context_of(g: &Global, config: Config) -> Result<Context> {
    let mut ctx = Context::open(config).await?;
    ctx.progress = crate::logging::progress_enabled(g);
    // For a drill the daemon or `dr verify` turns into (verify.prove_within picked a base).
    ctx.fetch_argv = restore_pitr::fetch_argv_quiet(g).unwrap_or_default();
    ctx.cancel = crate::signals::first();
    if ctx.cancel.is_cancelled() {
        return Err(Error::new(
            dr_core::Kind::Interrupted,
            "interrupted by a signal before it started; nothing was done",
        ));
    }
    Ok(ctx)
}

pub fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    let s = serde_json::to_string_pretty(v)
        .map_err(|e| Error::new(dr_core::Kind::Failed, format!("encoding JSON: {e}")))?;
    crate::out!("{s}");
    Ok(())
}
