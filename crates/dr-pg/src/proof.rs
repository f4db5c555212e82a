//! What a drill asks PostgreSQL's own tools about a recovered copy: `pg_verifybackup` over the
//! unpacked base backup (before recovery changes a file), `pg_amcheck` over the running copy
//! (heap and B-tree), and the time of the last commit recovery replayed.

use std::path::Path;

use chrono::{DateTime, Utc};
use tokio_postgres::Client;

use crate::{ConnInfo, PgError};

/// How one tool's run went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Exit 0.
    Clean,
    /// It found a problem (or failed): what it said, the last lines.
    Failed(String),
    /// It could not run here (the `amcheck` extension is not installed with this server).
    Unavailable(String),
}

/// The most lines of a tool's output a verdict keeps: enough to name the damage, not a
/// whole listing of a destroyed cluster.
const KEPT_LINES: usize = 20;

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let skip = lines.len().saturating_sub(KEPT_LINES);
    let mut out = lines[skip..].join("\n");
    if skip > 0 {
        out = format!("({skip} earlier lines not shown)\n{out}");
    }
    out
}

/// `pg_verifybackup --no-parse-wal DIR`: every file of the unpacked base backup against its
/// `backup_manifest` (sizes and checksums). WAL is not in the backup (it comes from the
/// archive), so it is not parsed here; recovery proves it.
pub async fn verify_backup(tool: &Path, dir: &Path) -> Result<Verdict, PgError> {
    let dir = dir.display().to_string();
    let (ok, said) = run(tool, &["--no-parse-wal", "--quiet", &dir], Vec::new()).await?;
    Ok(if ok {
        Verdict::Clean
    } else {
        Verdict::Failed(tail(&said))
    })
}

/// `pg_amcheck --all --install-missing` against the copy at `conn` (a throwaway server: the
/// extension is created in each database). Heap and B-tree checks; exit 0 is clean, 2 is
/// corruption found.
pub async fn amcheck(tool: &Path, conn: &ConnInfo) -> Result<Verdict, PgError> {
    let (ok, said) = run(tool, &["--all", "--install-missing"], conn.child_env()).await?;
    Ok(if ok {
        Verdict::Clean
    } else if unavailable(&said) {
        Verdict::Unavailable(tail(&said))
    } else {
        Verdict::Failed(tail(&said))
    })
}

/// Run `tool` with `args` (and `env`, a connection's), in the C locale: whether it exited 0,
/// and what it said (stdout, stderr, then its exit status when it failed).
async fn run(
    tool: &Path,
    args: &[&str],
    env: Vec<(String, String)>,
) -> Result<(bool, String), PgError> {
    let out = tokio::process::Command::new(tool)
        .args(args)
        .envs(env)
        .env("LC_ALL", "C")
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| PgError::Spawn {
            path: tool.to_path_buf(),
            source: e,
        })?;
    let mut said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        said.push_str(&format!("\n({})", out.status));
    }
    Ok((out.status.success(), said))
}

/// Whether pg_amcheck failed because the server has no `amcheck` extension to install.
fn unavailable(said: &str) -> bool {
    said.contains("extension \"amcheck\" is not available")
        || (said.contains("could not open extension control file") && said.contains("amcheck"))
}

/// The time of the last transaction recovery replayed (`pg_last_xact_replay_timestamp()`;
/// it stays set after promotion). None when recovery replayed no commit.
pub async fn last_replayed_at(client: &Client) -> Result<Option<DateTime<Utc>>, PgError> {
    let row = client
        .query_one(
            "select (extract(epoch from pg_last_xact_replay_timestamp()) * 1000000)::int8",
            &[],
        )
        .await
        .map_err(|e| PgError::query("reading the last replayed commit's time", e))?;
    let micros: Option<i64> = row.get(0);
    Ok(micros.and_then(DateTime::from_timestamp_micros))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_report_keeps_its_last_lines() {
        let text: String = (1..=30).map(|i| format!("line {i}\n\n")).collect();
        let t = tail(&text);
        assert!(
            t.starts_with("(10 earlier lines not shown)\nline 11\n"),
            "{t}"
        );
        assert!(t.ends_with("line 30"), "{t}");
        assert_eq!(tail("a\nb"), "a\nb");
    }

    #[test]
    fn a_missing_extension_is_unavailable_not_corruption() {
        assert!(unavailable(
            "pg_amcheck: error: ERROR:  extension \"amcheck\" is not available"
        ));
        assert!(unavailable("ERROR:  could not open extension control file \"/usr/share/postgresql/16/extension/amcheck.control\": No such file or directory"));
        assert!(!unavailable(
            "heap table \"db.public.t\", block 0, offset 1:\n    xmin 12 precedes relation freeze threshold"
        ));
    }
}
