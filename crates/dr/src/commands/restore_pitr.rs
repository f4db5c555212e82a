//! `dr restore --to-dir DIR --at TIME|LSN|latest`: point-in-time recovery into a data
//! directory (see `dr_core::restore::pitr`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use dr_catalog::wal::plan::Target;
use dr_core::restore::pitr::{self, PitrOptions, Then};
use dr_core::{human_bytes, Context, Error, Result};

use crate::cli::{Global, RestoreArgs, ThenArg};
use crate::out;

pub async fn run(ctx: &Context, global: &Global, args: RestoreArgs) -> Result<ExitCode> {
    let dir = args.to_dir.clone().unwrap_or_default();
    if args.id.is_some() {
        return Err(Error::config(
            "--to-dir recovers to a point, not to a backup id: give --at TIME, --at LSN or --at latest",
        )
        .with_hint("the base backup is chosen for you: the newest one before the point"));
    }
    let opts = PitrOptions {
        target: args.target.clone(),
        at: parse_target(args.at.as_deref())?,
        timeline: args.timeline,
        dir: absolute(&dir)?,
        force: args.force,
        dry_run: args.dry_run,
        start: args.start,
        then: match args.then {
            ThenArg::Promote => Then::Promote,
            ThenArg::Pause => Then::Pause,
            ThenArg::Shutdown => Then::Shutdown,
        },
        fetch_argv: fetch_argv(global)?,
    };
    let report = pitr::run(ctx, &opts).await?;
    if args.json {
        crate::commands::print_json(&report)?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.dry_run {
        out!("{}", report.plan);
        return Ok(ExitCode::SUCCESS);
    }
    eprint!("{}", report.plan);
    crate::note!(
        "base backup {} restored into {} ({} files, {}), recovery to {} set up on timeline {}",
        report.plan.base_id,
        opts.dir.display(),
        report.files,
        human_bytes(report.bytes),
        report.plan.recovery_target,
        report.plan.timeline
    );
    if let Some(r) = &report.reached {
        crate::note!(
            "recovery reached the target in {:.1} s: {}",
            r.seconds,
            r.stopped
        );
        if r.stopped.contains("promoted") {
            crate::note!("the copy is promoted and stopped; its next start needs no WAL");
        } else {
            crate::note!(
                "the server was stopped; the next start replays to the same point, then: {}",
                opts.then.as_str()
            );
        }
    }
    out!("start it with: {}", report.start_command);
    Ok(ExitCode::SUCCESS)
}

/// `--at` for recovery: `latest`, an LSN `X/Y`, or a time as `dr restore --at` reads it.
pub(crate) fn parse_target(at: Option<&str>) -> Result<Target> {
    let Some(at) = at.map(str::trim) else {
        return Err(
            Error::config("--to-dir needs --at: a time, an LSN (0/3000028) or `latest`")
                .with_hint("`dr status` shows the recoverable window"),
        );
    };
    if at == "latest" {
        return Ok(Target::Latest);
    }
    if at.contains('/') {
        return at
            .parse()
            .map(Target::Lsn)
            .map_err(|e: dr_catalog::wal::LsnError| Error::config(e.to_string()));
    }
    dr_core::repo::parse_time(at).map(Target::Time)
}

/// The server runs `dr wal fetch` in its own environment: this binary and the same config and
/// env file, by absolute path (secrets stay in the env file, never in the settings). The
/// settings dr took from its environment that are not secrets (the identity file's path, the
/// repository) go along as `env NAME=VALUE` when there is no env file, or the server's fetch
/// would read another repository or find no identity (a compose or k8s setup sets them so).
pub(crate) fn fetch_argv(global: &Global) -> Result<Vec<String>> {
    if global.env_file.is_none() {
        let mut names: Vec<String> = [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
        ]
        .map(String::from)
        .to_vec();
        // A copy's own credentials (`--from-copy`).
        if let Some(copy) = &global.repository_copy {
            names.extend(
                [
                    dr_config::env::COPY_ACCESS_KEY_ID,
                    dr_config::env::COPY_SECRET_ACCESS_KEY,
                    dr_config::env::COPY_SESSION_TOKEN,
                ]
                .map(|s| dr_config::env::copy_var(copy, s)),
            );
        }
        let secrets: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|k| std::env::var_os(k).is_some())
            .collect();
        if !secrets.is_empty() {
            tracing::warn!(
                "{} come from this environment, which the recovered server's restore_command does not see: pass --env-file FILE holding them (the server reads that file, never the values)",
                secrets.join(", ")
            );
        }
    }
    fetch_argv_quiet(global)
}

/// [`fetch_argv`] without its warning: for a context that may never start a server.
pub(crate) fn fetch_argv_quiet(global: &Global) -> Result<Vec<String>> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::config(format!("cannot tell where this dr binary is: {e}")))?;
    let config = global
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(dr_config::DEFAULT_CONFIG_PATH));
    let env_file = match &global.env_file {
        Some(env) => Some(absolute(env)?),
        None => None,
    };
    let mut argv = argv_for(&exe, &absolute(&config)?, env_file.as_deref(), |k| {
        std::env::var(k).ok()
    });
    // `restore --from-copy`: the server's `dr wal fetch` reads that copy too.
    if let Some(copy) = &global.repository_copy {
        argv.extend(["--repository-copy".to_string(), copy.clone()]);
    }
    Ok(argv)
}

/// The non-secret settings of dr's environment `dr wal fetch` needs as well.
const CARRIED: [&str; 5] = [
    dr_config::env::IDENTITY_FILE,
    // The keys this host trusts include its own signing key's public half.
    dr_config::env::SIGNING_KEY_FILE,
    dr_config::env::REPOSITORY_URL,
    dr_config::env::REPOSITORY_ENDPOINT,
    dr_config::env::PG_BIN_DIR,
];

fn argv_for(
    exe: &Path,
    config: &Path,
    env_file: Option<&Path>,
    get: impl Fn(&str) -> Option<String>,
) -> Vec<String> {
    // With an env file, that file is the server's environment (its values may differ from
    // this shell's: a key the server's user can read); without one, dr's own settings go.
    let carried: Vec<String> = match env_file {
        Some(_) => Vec::new(),
        None => CARRIED
            .iter()
            .filter_map(|k| get(k).filter(|v| !v.is_empty()).map(|v| format!("{k}={v}")))
            .collect(),
    };
    let mut argv = Vec::new();
    if !carried.is_empty() {
        argv.push("env".to_string());
        argv.extend(carried);
    }
    argv.extend([
        exe.display().to_string(),
        "--config".into(),
        config.display().to_string(),
    ]);
    if let Some(env) = env_file {
        argv.push("--env-file".into());
        argv.push(env.display().to_string());
    }
    argv
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).map_err(|e| Error::config(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fetch_command_carries_the_settings_dr_took_from_its_environment() {
        let plain = argv_for(
            Path::new("/bin/dr"),
            Path::new("/etc/dr/dr.toml"),
            None,
            |_| None,
        );
        assert_eq!(plain.join(" "), "/bin/dr --config /etc/dr/dr.toml");
        let get = |k: &str| match k {
            "DR_IDENTITY_FILE" => Some("/run/dr/identity.txt".to_string()),
            "DR_REPOSITORY_URL" => Some(String::new()),
            "DR_WEBHOOK_URL" => Some("https://secret".into()),
            _ => None,
        };
        let carried = argv_for(
            Path::new("/bin/dr"),
            Path::new("/etc/dr/dr.toml"),
            None,
            get,
        );
        assert_eq!(
            carried.join(" "),
            "env DR_IDENTITY_FILE=/run/dr/identity.txt /bin/dr --config /etc/dr/dr.toml"
        );
        // An env file is the server's environment: nothing of this shell's goes along.
        let with_file = argv_for(
            Path::new("/bin/dr"),
            Path::new("/etc/dr/dr.toml"),
            Some(Path::new("/etc/dr/dr.env")),
            |k| match k {
                "DR_IDENTITY_FILE" => Some("/run/dr/identity.txt".into()),
                "DR_REPOSITORY_URL" => Some(String::new()),
                "DR_WEBHOOK_URL" => Some("https://secret".into()),
                _ => None,
            },
        );
        assert_eq!(
            with_file.join(" "),
            "/bin/dr --config /etc/dr/dr.toml --env-file /etc/dr/dr.env"
        );
    }
}
