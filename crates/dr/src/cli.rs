//! The command line. Names follow ../shared/PRODUCT.md.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "dr",
    version,
    about = "PostgreSQL backup and disaster recovery: pg_dump → zstd → age → S3/R2 or a directory, proven by restores"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct Global {
    /// Configuration file [default: /etc/dr/dr.toml]
    #[arg(long, global = true, env = "DR_CONFIG")]
    pub config: Option<PathBuf>,
    /// File of KEY=value lines loaded into the environment first (variables already set win).
    #[arg(long, global = true, env = "DR_ENV_FILE")]
    pub env_file: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "human",
        env = "DR_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
    /// More logs (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Run on copy NAME ([[copies]]) instead of the primary: what `restore --from-copy`
    /// passes to the `dr wal fetch` of the server it recovers.
    #[arg(long, global = true, hide = true, value_name = "NAME")]
    pub repository_copy: Option<String>,
    /// Only warnings and errors; a successful backup, prune or verify prints nothing (JSON
    /// asked for with --json is still printed).
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

/// `recovery_target_action`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ThenArg {
    /// End recovery and open for writes on a new timeline.
    Promote,
    /// Stay in recovery, read-only, for inspection.
    Pause,
    /// Stop the server.
    Shutdown,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Back up one target (or every target): pg_dump → zstd → age → repository, manifest last.
    Backup {
        #[arg(long)]
        target: Option<String>,
        /// Data streams dumped at once (1-32) [default: backup.jobs, else the host's CPUs, at most 4].
        #[arg(long, value_name = "N")]
        jobs: Option<u32>,
        /// A physical base backup of the whole cluster (pg_basebackup), committed once its
        /// WAL is in the repository; restores with `dr restore --at … --to-dir`.
        #[arg(long, conflicts_with = "jobs")]
        physical: bool,
    },
    /// Copy every complete, trusted backup the copy repositories ([[copies]]) lack: the
    /// stored objects as they are (no identity needed), streamed and checked, the manifest
    /// last; a backup already there is skipped.
    Copy {
        /// Only this backup id (no WAL) [default: every backup the copy lacks, and the WAL].
        id: Option<String>,
        /// Only this copy [default: every [[copies]]].
        #[arg(long, value_name = "NAME")]
        to: Option<String>,
        #[arg(long)]
        target: Option<String>,
        /// Copy backups that have no signature (made before signing existed) too. Never a
        /// badly signed one.
        #[arg(long)]
        trust_unsigned: bool,
        #[arg(long)]
        json: bool,
    },
    /// List backups, newest first; damaged, future-dated (clock skew) and (with Object Lock)
    /// overwritten ones are marked.
    List {
        #[arg(long)]
        target: Option<String>,
        /// List copy NAME ([[copies]]) instead of the primary.
        #[arg(long, value_name = "NAME")]
        copy: Option<String>,
        /// Stable JSON array on stdout (docs/JSON.md).
        #[arg(long)]
        json: bool,
        /// Backups hidden by delete markers, or overwritten by newer versions, whose original
        /// versions are intact (versioned buckets): what `dr undelete` can bring back.
        #[arg(long)]
        deleted: bool,
    },
    /// Bring back backups hidden by delete markers or overwritten (`dr list --deleted`):
    /// makes the versions dr wrote current again (removes the markers and unlocked newer
    /// versions, or copies a locked original back on top), keeping every lock.
    Undelete {
        /// A backup id or `latest` (the newest deleted or overwritten one).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Every deleted or overwritten backup (of `--target`, if given).
        #[arg(long)]
        all: bool,
        #[arg(long)]
        target: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show one backup's manifest (and, with the identity, what it holds).
    Show {
        /// A backup id or `latest`.
        id: String,
        #[arg(long)]
        target: Option<String>,
        /// Read copy NAME ([[copies]]) instead of the primary.
        #[arg(long, value_name = "NAME")]
        copy: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Restore a backup into a database (or a file), integrity-checked before the target is touched.
    Restore(Box<RestoreArgs>),
    /// Restore a backup into a throwaway PostgreSQL, compare every table's row count, record the result.
    Verify {
        /// A backup id or `latest` [default: latest].
        id: Option<String>,
        #[arg(long)]
        target: Option<String>,
        /// Verify a backup read from copy NAME ([[copies]]); the record is written there.
        #[arg(long, value_name = "NAME")]
        copy: Option<String>,
        /// Where to restore: auto is docker when an engine answers, else local [default: verify.sandbox or auto].
        #[arg(long, value_parser = sandbox_choice())]
        sandbox: Option<dr_core::verify::SandboxChoice>,
        /// Docker image; `{major}` is replaced [default: verify.image or postgres:{major}].
        #[arg(long)]
        image: Option<String>,
        #[arg(long, short, value_parser = clap::value_parser!(u32).range(1..))]
        jobs: Option<u32>,
        /// Verify a backup that has no signature (made before signing existed), named by id.
        /// Never a badly signed one.
        #[arg(long)]
        trust_unsigned: bool,
        /// A drill: recover the newest base backup (or the id given) and its WAL in a
        /// throwaway local server to a point of its window and prove it (pg_verifybackup,
        /// recovery reaching the point, pg_amcheck, a dump's exact counts at its snapshot).
        #[arg(long, conflicts_with_all = ["sandbox", "image", "jobs"])]
        pitr: bool,
        /// With --pitr: recover to this time (RFC 3339 or `YYYY-MM-DD HH:MM[:SS]` UTC), LSN or
        /// `latest` [default: a dump's snapshot position in the window, else a random point].
        #[arg(long, requires = "pitr", value_name = "TIME|LSN|latest")]
        at: Option<String>,
        /// With --pitr: recover onto this timeline [default: the one the point is on].
        #[arg(long, requires = "pitr")]
        timeline: Option<u32>,
        /// With --pitr: where the sandbox's directory is made (room for the base backup)
        /// [default: restore.temp_dir or the system temp dir].
        #[arg(long, requires = "pitr")]
        temp_dir: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Re-sign backups signed by a revoked key with this host's key, after a leak: only those
    /// whose signature verifies with --old-key and whose manifest was stored before
    /// --stored-before (runbooks/signing-key-leaked.md).
    Resign {
        /// Backup ids [default: every backup of --target].
        ids: Vec<String>,
        #[arg(long)]
        target: String,
        /// The revoked public key (`ssh-ed25519 AAAA…`) the backups were signed with.
        #[arg(long, value_name = "PUBLIC_KEY")]
        old_key: String,
        /// When the old key may first have leaked (RFC 3339 or `YYYY-MM-DD HH:MM` UTC): a
        /// manifest stored later is not re-signed.
        #[arg(long, value_name = "TIME")]
        stored_before: String,
        /// Say what would be re-signed; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Apply daily/weekly/monthly/yearly retention; remove leftovers of failed backups.
    Prune {
        #[arg(long)]
        target: Option<String>,
        /// Prune copy NAME ([[copies]]) with its own [copies.retention] (else [retention]).
        #[arg(long, value_name = "NAME")]
        copy: Option<String>,
        /// Print what would be kept and deleted, and why; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also delete damaged backups (a manifest that cannot be read or checked), which are
        /// otherwise kept and reported.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Per target: age of the newest backup and its verification; exit 8 when stale or failed.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Validate the config; reach the repository and every database; find matching pg_dump.
    Check {
        #[arg(long)]
        target: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Run the jobs in schedules/*.toml and [[schedules]] on their cron expressions.
    Daemon {
        /// Print each job's next runs and exit (reads only the config and job files).
        #[arg(long)]
        dry_run: bool,
        /// With --dry-run: how many next runs per job.
        #[arg(long, default_value_t = 3, requires = "dry_run")]
        count: usize,
    },
    /// The WAL archive (point-in-time recovery): what PostgreSQL's archive_command and
    /// restore_command run (docs/design/PITR.md).
    #[command(subcommand)]
    Wal(WalCommand),
    /// Create an age identity file (mode 0600) and print its public recipient; with
    /// --signing, a signing key for the backup host and its public key.
    Keygen {
        /// Where to write the identity (or the signing key).
        #[arg(long, short)]
        output: PathBuf,
        /// Overwrite an existing file (never with --signing).
        #[arg(long)]
        force: bool,
        /// An Ed25519 signing key (OpenSSH format) for `[signing] key_file`; prints the
        /// public key for `[signing] trusted`.
        #[arg(long, conflicts_with = "force")]
        signing: bool,
    },
}

/// `dr wal …`
#[derive(Debug, Subcommand)]
pub enum WalCommand {
    /// Archive one WAL file: `archive_command = 'dr --config /etc/dr/dr.toml wal push %p'`.
    /// Exit 0 only once it is stored; the same file again is 0, different bytes under an
    /// archived name exit 4 and are never stored; WAL of another cluster exits 7.
    Push {
        /// The file (`%p`: relative to the current directory, the data directory when
        /// PostgreSQL runs it).
        path: PathBuf,
        /// The target whose archive takes it [default: the one whose archive belongs to
        /// the file's cluster; for .history/.backup files, the only target with [targets.wal]].
        #[arg(long)]
        target: Option<String>,
    },
    /// restore_command: write archived WAL file NAME to DEST, verified. Exit 0 written,
    /// 1 not in the archive, 143 on SIGTERM, 200 + dr's code on any failure (201-207, which
    /// PostgreSQL treats as fatal: recovery stops instead of ending early; docs/EXIT_CODES.md).
    Fetch {
        /// The file PostgreSQL asks for (`%f`).
        name: String,
        /// Where to write it (`%p`).
        dest: PathBuf,
        /// The target whose archive to read [default: the only configured target].
        #[arg(long)]
        target: Option<String>,
        /// Prefetch: serve NAME from this directory when a background worker already
        /// downloaded it, and start one for the segments after NAME (in pg_wal, e.g.
        /// `pg_wal/.dr-fetch`: serving is then a rename). `dr restore --to-dir` sets it.
        #[arg(long, value_name = "DIR")]
        spool: Option<PathBuf>,
    },
    /// The prefetch worker `dr wal fetch --spool` starts (not for direct use).
    #[command(hide = true)]
    Prefetch {
        /// The segment served last: the worker fetches the ones after it.
        after: String,
        #[arg(long, value_name = "DIR")]
        spool: PathBuf,
        #[arg(long)]
        target: String,
    },
    /// Receive WAL over replication (pg_receivewal, slot dr_TARGET, created if missing) and
    /// store each segment, and the growing one every partial_upload_secs, until stopped.
    /// For servers whose archive_command dr cannot set (`mode = "stream"`).
    Stream {
        /// The target to stream [default: the only target with mode = "stream"].
        #[arg(long)]
        target: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// A backup id or `latest` [default: latest].
    pub id: Option<String>,
    #[arg(long)]
    pub target: Option<String>,
    /// Read everything (backup, WAL) from copy NAME ([[copies]]) instead of the primary:
    /// when the primary repository is gone (runbooks/database-lost.md).
    #[arg(long, value_name = "NAME")]
    pub from_copy: Option<String>,
    /// The point to restore (RFC 3339, `YYYY-MM-DD HH:MM` UTC, or a date). For a target with
    /// [targets.wal] and a base backup: that second, recovered in a throwaway sandbox and
    /// streamed into --to (or --to-dir) — also an LSN (`0/3000028`) or `latest`. Otherwise the
    /// newest backup at or before it (dr says how much later the time is).
    #[arg(long)]
    pub at: Option<String>,
    /// Database URL to restore into (password via PGPASSWORD/PGPASSFILE). Created if missing.
    #[arg(long, required_unless_present_any = ["to_file", "globals_to_file", "to_dir"])]
    pub to: Option<String>,
    /// Point-in-time recovery: a physical base backup and the WAL archive into this new or
    /// empty directory, set up to recover to --at (a data directory to start with pg_ctl).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["to", "to_file", "globals_to_file"])]
    pub to_dir: Option<PathBuf>,
    /// With --to-dir: start the server once, wait until recovery reaches --at, report the last
    /// commit replayed, and stop it cleanly (a missing or damaged segment is an error).
    #[arg(long, requires = "to_dir")]
    pub start: bool,
    /// With --to-dir: what the server does at the target.
    #[arg(long, value_enum, default_value = "promote", requires = "to_dir")]
    pub then: ThenArg,
    /// With --at of a target with WAL: recover onto this timeline [default: the one current
    /// at --at].
    #[arg(long, requires = "at")]
    pub timeline: Option<u32>,
    /// Write the decrypted archive here instead of restoring: one file for an older backup;
    /// for a backup in sections a new or empty directory, one file per section and a
    /// README.txt with the restore order. With --to as well, the restore reads them back.
    #[arg(long)]
    pub to_file: Option<PathBuf>,
    /// Write the decrypted roles/tablespaces SQL here.
    #[arg(long)]
    pub globals_to_file: Option<PathBuf>,
    /// Parallel pg_restore jobs [default: number of cores].
    #[arg(long, short, value_parser = clap::value_parser!(u32).range(1..))]
    pub jobs: Option<u32>,
    /// Only this table (SCHEMA.TABLE or TABLE), with its indexes and constraints. Repeatable.
    #[arg(long)]
    pub table: Vec<String>,
    /// Only this schema. Repeatable.
    #[arg(long)]
    pub schema: Vec<String>,
    /// Drop and recreate the objects the archive contains in a non-empty target.
    #[arg(long)]
    pub clean: bool,
    /// Restore into a non-empty target without cleaning (objects that exist will error).
    #[arg(long)]
    pub force: bool,
    /// Create missing roles and tablespaces from the backup first (never alters existing ones).
    #[arg(long)]
    pub with_globals: bool,
    /// With --with-globals: create this role even though the backup gives it powers
    /// (SUPERUSER, REPLICATION, BYPASSRLS, a password, membership in such a role). The plan
    /// names every such role; without this flag they are refused. Repeatable.
    #[arg(long = "allow-role", value_name = "NAME", requires = "with_globals")]
    pub allow_role: Vec<String>,
    /// Skip ownership: objects belong to the restoring user.
    #[arg(long)]
    pub no_owner: bool,
    /// Print the plan (with the time the newest verification measured, as an estimate) and exit.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation. Without a terminal, a restore into an existing database
    /// (or with --with-globals) is refused unless --yes is given.
    #[arg(long, short)]
    pub yes: bool,
    /// Directory for what is staged: the post-data section (and, for --table/--schema, the
    /// sections filtered), or an older backup's whole archive; with --at of a target with
    /// WAL also the sandbox (room for the base backup) [default: restore.temp_dir or the
    /// system temp dir].
    #[arg(long)]
    pub temp_dir: Option<PathBuf>,
    /// Download and check every object (digest, decryption) before touching the target
    /// [default: on when the target database exists, off when dr creates it].
    #[arg(long, overrides_with = "no_check_first")]
    pub check_first: bool,
    /// Check objects only as they stream into the target (a failure drops a database dr
    /// created; an existing one is left partially restored).
    #[arg(long, overrides_with = "check_first")]
    pub no_check_first: bool,
    /// Restore a backup that has no signature (made before signing existed), after making
    /// sure it is one. Never a badly signed one.
    #[arg(long)]
    pub trust_unsigned: bool,
    #[arg(long)]
    pub json: bool,
}

/// `--sandbox`: the names dr-sandbox accepts (listed in `--help` and in the error for an
/// unknown one), parsed by dr-sandbox.
fn sandbox_choice() -> impl clap::builder::TypedValueParser<Value = dr_core::verify::SandboxChoice>
{
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(dr_core::verify::SandboxChoice::names())
        .try_map(|s| s.parse::<dr_core::verify::SandboxChoice>())
}

pub fn try_parse() -> Result<Cli, clap::Error> {
    Cli::try_parse()
}
