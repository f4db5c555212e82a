//! The `dr check` lines of a target with `[targets.wal]`: what the server must have for its
//! WAL to reach the repository (docs/design/PITR.md §7), each failure with the exact statement
//! that fixes it as its hint.
//!
//! The lines are made by pure functions ([`settings_lines`], [`archiver_line`], [`slot_line`],
//! [`identity_line`]) from what [`lines`] reads, so each wording is tested without a server.

use std::path::Path;

use dr_catalog::wal::{keys, WalIdentity};
use dr_config::{TargetConfig, WalMode};
use dr_pg::replication::{self, Archiver, Capture, Slot, WalSettings};
use dr_pg::{ConnInfo, ServerVersion};

use crate::{Context, Error, Kind};

/// One `dr check` line: its name and what it found, or why it failed (with the fix as hint).
pub type Line = (String, Result<String, Error>);

fn failed(what: impl Into<String>) -> Error {
    Error::new(Kind::Failed, what)
}

/// The `wal …` lines of `t` (none without `[targets.wal]`).
pub(super) async fn lines(ctx: &Context, t: &TargetConfig) -> Vec<Line> {
    let Some(wal) = &t.wal else {
        return Vec::new();
    };
    let name = &t.name;
    let server = match read_server(t, wal.mode()).await {
        Ok(s) => s,
        Err(e) => return vec![(format!("wal {name}"), Err(e.context("not checked")))],
    };
    let command = archive_command(
        std::env::current_exe().ok().as_deref(),
        ctx.config.source.as_deref(),
    );
    let max_lag = i64::try_from(wal.max_lag.as_secs()).unwrap_or(i64::MAX);
    let mut out = settings_lines(name, wal.mode(), &server.settings, &command, max_lag);
    if let Some(a) = &server.archiver {
        out.push((format!("wal archiver {name}"), archiver_line(a)));
    }
    if wal.mode() == WalMode::Stream {
        out.push((
            format!("wal slot {name}"),
            slot_line(name, &server.slot_name, server.slot.as_ref()),
        ));
        out.push((
            format!("wal spool {name}"),
            spool_line(&wal.spool_dir(name)),
        ));
    }
    let identity = read_identity(ctx, name).await;
    out.push((
        format!("wal identity {name}"),
        identity.and_then(|i| identity_line(name, &server.settings.system_identifier, i.as_ref())),
    ));
    let bin = t
        .pg_bin_dir
        .as_deref()
        .or(ctx.config.backup.pg_bin_dir.as_deref());
    out.push((
        format!("wal tools {name}"),
        tools_line(server.major, wal.mode(), bin),
    ));
    out
}

/// Stream mode's spool: a directory dr can write (it is created when missing).
fn spool_line(dir: &std::path::Path) -> Result<String, Error> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {
            let probe = dir.join(".dr-check");
            std::fs::write(&probe, b"")
                .and_then(|()| std::fs::remove_file(&probe))
                .map(|()| format!("{} is writable", dir.display()))
                .map_err(|e| {
                    failed(format!("cannot write the WAL spool {}: {e}", dir.display()))
                        .with_hint("give dr's user the spool directory, or set [targets.wal] spool_dir to one it owns")
                })
        }
        Ok(_) => Err(failed(format!("the WAL spool {} is not a directory", dir.display()))
            .with_hint("set [targets.wal] spool_dir to a directory")),
        Err(_) => Ok(format!(
            "{} does not exist yet: `dr wal stream` creates it (on a volume that survives restarts)",
            dir.display()
        )),
    }
}

/// What [`lines`] reads from the server.
struct Server {
    major: u32,
    settings: WalSettings,
    /// Archive mode only.
    archiver: Option<Archiver>,
    slot_name: String,
    /// Stream mode only; `None` there: the slot does not exist.
    slot: Option<Slot>,
}

async fn read_server(t: &TargetConfig, mode: WalMode) -> Result<Server, Error> {
    let text = Error::from;
    // The `target` line already says why the server does not answer, with its hint.
    let client = ConnInfo::parse(&t.url)
        .map_err(text)?
        .connect()
        .await
        .map_err(|_| {
            failed(format!(
                "the server does not answer (see the `target {}` line)",
                t.name
            ))
        })?;
    let major = ServerVersion::query(&client).await.map_err(text)?.major;
    let settings = replication::wal_settings(&client).await.map_err(text)?;
    let slot_name = replication::slot_name(&t.name);
    let (archiver, slot) = match mode {
        WalMode::Archive => (
            Some(replication::archiver(&client).await.map_err(text)?),
            None,
        ),
        WalMode::Stream => (
            None,
            replication::slot(&client, &slot_name).await.map_err(text)?,
        ),
    };
    Ok(Server {
        major,
        settings,
        archiver,
        slot_name,
        slot,
    })
}

/// `{target}/wal/identity.json`, `None` when nothing was archived yet.
async fn read_identity(ctx: &Context, target: &str) -> Result<Option<WalIdentity>, Error> {
    let key = keys::identity(target);
    match ctx.store.head(&key).await {
        Ok(None) => return Ok(None),
        Ok(Some(_)) => {}
        Err(e) => return Err(Error::from(e).context(format!("reading `{key}`"))),
    }
    let body = ctx
        .store
        .get(&key)
        .await
        .map_err(|e| Error::from(e).context(format!("reading `{key}`")))?;
    serde_json::from_slice(&body).map(Some).map_err(|e| {
        failed(format!(
            "`{key}` is not a WAL identity ({e}): the repository is damaged"
        ))
        .with_hint(
            "compare it with `SELECT system_identifier FROM pg_control_system();` on the server",
        )
    })
}

/// The `archive_command` that runs this dr with this config: `EXE --config CONFIG wal push
/// %p` (absolute paths, since the archiver runs in the data directory; quoted for the shell
/// when they need it). Pure but for making `config` absolute.
pub fn archive_command(exe: Option<&Path>, config: Option<&Path>) -> String {
    let exe = exe.map_or_else(
        || "dr".to_string(),
        |p| shell_word(&p.display().to_string()),
    );
    let config = config
        .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()))
        .map(|p| format!(" --config {}", shell_word(&p.display().to_string())))
        .unwrap_or_default();
    format!("{exe}{config} wal push %p")
}

/// `word` as one shell word: as is when it holds only safe characters, else in double quotes.
fn shell_word(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-+:=@,".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_string()
    } else {
        format!(
            "\"{}\"",
            word.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('$', "\\$")
                .replace('`', "\\`")
        )
    }
}

/// The settings lines of target `target`: one FAIL line per finding, its fix as the hint, or
/// one ok line saying what was found. Pure.
pub fn settings_lines(
    target: &str,
    mode: WalMode,
    s: &WalSettings,
    command: &str,
    max_lag_secs: i64,
) -> Vec<Line> {
    let capture = match mode {
        WalMode::Archive => Capture::Archive,
        WalMode::Stream => Capture::Stream,
    };
    let check = format!("wal {target}");
    let findings = replication::findings(s, capture, command, max_lag_secs);
    if findings.is_empty() {
        let detail = match mode {
            WalMode::Archive => format!(
                "archive mode: wal_level {}, archive_mode {}, archive_command runs dr, archive_timeout {} s",
                s.wal_level, s.archive_mode, s.archive_timeout_secs
            ),
            WalMode::Stream => format!(
                "stream mode: wal_level {}, role may replicate, {} of {} WAL senders in use, max_slot_wal_keep_size {} MB",
                s.wal_level, s.senders_in_use, s.max_wal_senders, s.max_slot_wal_keep_size_mb
            ),
        };
        return vec![(check, Ok(detail))];
    }
    findings
        .into_iter()
        .map(|f| (check.clone(), Err(failed(f.what).with_hint(f.fix))))
        .collect()
}

/// `pg_stat_archiver`: fails when the last attempt failed (a failure newer than the last
/// success), naming the segment and the time. Pure.
pub fn archiver_line(a: &Archiver) -> Result<String, Error> {
    let at = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map_or_else(|| "never".to_string(), crate::time::format)
    };
    if a.failing() {
        return Err(failed(format!(
            "PostgreSQL's archiver failed to archive {} at {} ({} failure(s); last success: {} at {})",
            a.last_failed_wal.as_deref().unwrap_or("a segment"),
            at(a.last_failed_time),
            a.failed_count,
            a.last_archived_wal.as_deref().unwrap_or("none"),
            at(a.last_archived_time),
        ))
        .with_hint("see the server log for dr's error"));
    }
    Ok(match &a.last_archived_wal {
        Some(wal) => format!(
            "last archived {wal} at {} ({} archived, {} failed since the statistics reset)",
            at(a.last_archived_time),
            a.archived_count,
            a.failed_count
        ),
        None => "nothing archived since the statistics reset".into(),
    })
}

/// The replication slot of a stream-mode target: it exists and still holds the WAL it
/// reserved. Pure.
pub fn slot_line(target: &str, name: &str, slot: Option<&Slot>) -> Result<String, Error> {
    let Some(slot) = slot else {
        return Err(failed(format!(
            "replication slot {name} does not exist: the server keeps no WAL for dr's stream"
        ))
        .with_hint(format!(
            "run `dr wal stream --target {target}` to create it"
        )));
    };
    match slot.wal_status.as_deref() {
        Some("lost") => Err(failed(format!(
            "replication slot {name} is lost: the server removed WAL the stream had not received, so the archive has a gap"
        ))
        .with_hint(format!("take `dr backup --physical --target {target}` now; a stream restarted from here begins a new recoverable window"))),
        Some("unreserved") => Err(failed(format!(
            "replication slot {name} is unreserved: the stream is more than max_slot_wal_keep_size behind and the server is about to remove WAL it needs"
        ))
        .with_hint(format!("make sure `dr wal stream --target {target}` is running and keeping up"))),
        status => Ok(format!(
            "replication slot {name} {} ({}{})",
            if slot.active { "active" } else { "exists, not active" },
            status.unwrap_or("unknown"),
            slot.restart_lsn
                .map(|l| format!(", restart_lsn {l}"))
                .unwrap_or_default()
        )),
    }
}

/// The server is the cluster whose WAL the repository holds for `target`. Pure.
pub fn identity_line(
    target: &str,
    system_identifier: &str,
    archived: Option<&WalIdentity>,
) -> Result<String, Error> {
    match archived {
        None => Ok(format!(
            "no WAL archived yet: the first push records system {system_identifier}"
        )),
        Some(i) if i.system_identifier == system_identifier => Ok(format!(
            "system {system_identifier} (PostgreSQL {}), as archived",
            i.server_major
        )),
        Some(i) => Err(failed(format!(
            "the server's system identifier is {system_identifier}, but the WAL archived under target {target} is of system {} (PostgreSQL {}): this server is not the cluster archived under target {target}",
            i.system_identifier, i.server_major
        ))
        .with_hint(format!("point target {target}'s url at the archived cluster, or archive this cluster under a new target name"))),
    }
}

/// `pg_basebackup` (and `pg_receivewal` in stream mode) of the server's major.
fn tools_line(major: u32, mode: WalMode, bin: Option<&Path>) -> std::result::Result<String, Error> {
    let mut names = vec!["pg_basebackup"];
    if mode == WalMode::Stream {
        names.push("pg_receivewal");
    }
    let mut found = Vec::new();
    for name in names {
        let tool = dr_pg::find_tool(name, major, bin).map_err(Error::from)?;
        found.push(format!("{name} {} at {}", tool.major, tool.path.display()));
    }
    Ok(found.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> WalSettings {
        WalSettings {
            wal_level: "replica".into(),
            archive_mode: "off".into(),
            archive_command: "(disabled)".into(),
            archive_timeout_secs: 0,
            max_wal_senders: 10,
            max_slot_wal_keep_size_mb: -1,
            full_page_writes: true,
            segment_bytes: 16 << 20,
            role_can_replicate: true,
            system_identifier: "7301234567890123456".into(),
            ..WalSettings::default()
        }
    }

    #[test]
    fn the_archive_command_runs_this_dr_with_this_config() {
        let c = archive_command(
            Some(Path::new("/usr/local/bin/dr")),
            Some(Path::new("/nonexistent/etc/dr.toml")),
        );
        assert_eq!(
            c,
            "/usr/local/bin/dr --config /nonexistent/etc/dr.toml wal push %p"
        );
        assert_eq!(archive_command(None, None), "dr wal push %p");
        let c = archive_command(Some(Path::new("/opt/my dr/dr")), None);
        assert_eq!(c, "\"/opt/my dr/dr\" wal push %p");
    }

    #[test]
    fn each_wrong_setting_is_one_failed_line_with_its_fix_as_the_hint() {
        let command = "/usr/local/bin/dr --config /etc/dr/dr.toml wal push %p";
        let lines = settings_lines("app", WalMode::Archive, &settings(), command, 300);
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines.iter().all(|(c, r)| c == "wal app" && r.is_err()));
        let details: Vec<String> = lines
            .iter()
            .filter_map(|(_, r)| r.as_ref().err())
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            details[0],
            "archive_mode is off\nhint: ALTER SYSTEM SET archive_mode = 'on'; then restart the server"
        );
        assert_eq!(
            details[1],
            "archive_command is `(disabled)`, not dr\nhint: ALTER SYSTEM SET archive_command = '/usr/local/bin/dr --config /etc/dr/dr.toml wal push %p'; SELECT pg_reload_conf();"
        );
        assert!(
            details[2].ends_with(
                "hint: ALTER SYSTEM SET archive_timeout = '150s'; SELECT pg_reload_conf();"
            ),
            "{}",
            details[2]
        );

        let mut good = settings();
        good.archive_mode = "on".into();
        good.archive_command = command.into();
        good.archive_timeout_secs = 60;
        let lines: Vec<(String, Result<String, String>)> =
            settings_lines("app", WalMode::Archive, &good, command, 300)
                .into_iter()
                .map(|(c, r)| (c, r.map_err(|e| e.to_string())))
                .collect();
        assert_eq!(
            lines,
            [(
                "wal app".to_string(),
                Ok("archive mode: wal_level replica, archive_mode on, archive_command runs dr, archive_timeout 60 s".to_string())
            )]
        );
        // Stream mode asks for other things.
        let lines = settings_lines("app", WalMode::Stream, &settings(), command, 300);
        assert_eq!(lines.len(), 1, "{lines:?}");
        let e = lines[0]
            .1
            .as_ref()
            .expect_err("unlimited keep size")
            .to_string();
        assert!(e.contains("max_slot_wal_keep_size = '10GB'"), "{e}");
    }

    #[test]
    fn a_failing_archiver_names_the_segment_and_the_time() {
        let t = |s: i64| chrono::DateTime::from_timestamp(1_796_000_000 + s, 0);
        let mut a = Archiver {
            archived_count: 7,
            last_archived_wal: Some("000000010000000000000006".into()),
            last_archived_time: t(0),
            failed_count: 3,
            last_failed_wal: Some("000000010000000000000007".into()),
            last_failed_time: t(60),
        };
        let e = archiver_line(&a).expect_err("failing").to_string();
        assert!(
            e.starts_with("PostgreSQL's archiver failed to archive 000000010000000000000007 at 2026-11-30T00:54:20Z"),
            "{e}"
        );
        assert!(
            e.ends_with("hint: see the server log for dr's error"),
            "{e}"
        );
        a.last_failed_time = t(-60);
        let ok = archiver_line(&a).expect("recovered");
        assert!(
            ok.starts_with("last archived 000000010000000000000006"),
            "{ok}"
        );
        assert_eq!(
            archiver_line(&Archiver::default()).expect("fresh"),
            "nothing archived since the statistics reset"
        );
    }

    #[test]
    fn the_slot_must_exist_and_keep_its_wal() {
        let e = slot_line("app", "dr_app", None)
            .expect_err("missing")
            .to_string();
        assert!(
            e.ends_with("hint: run `dr wal stream --target app` to create it"),
            "{e}"
        );
        let slot = |status: &str| Slot {
            active: true,
            restart_lsn: "0/3000000".parse().ok(),
            wal_status: Some(status.into()),
        };
        let e = slot_line("app", "dr_app", Some(&slot("lost")))
            .expect_err("lost")
            .to_string();
        assert!(
            e.contains("gap") && e.contains("dr backup --physical"),
            "{e}"
        );
        assert!(slot_line("app", "dr_app", Some(&slot("unreserved"))).is_err());
        assert_eq!(
            slot_line("app", "dr_app", Some(&slot("reserved"))).expect("fine"),
            "replication slot dr_app active (reserved, restart_lsn 0/3000000)"
        );
    }

    #[test]
    fn another_cluster_is_refused_by_identity() {
        let archived = WalIdentity {
            format: 1,
            system_identifier: "7301234567890123456".into(),
            server_major: 15,
            segment_bytes: 16 << 20,
            created_at: "2026-12-01T00:00:00Z".into(),
            created_by: "db1".into(),
        };
        assert!(identity_line("app", "7301234567890123456", Some(&archived)).is_ok());
        assert!(identity_line("app", "1", None).is_ok());
        let e = identity_line("app", "7399999999999999999", Some(&archived))
            .expect_err("other")
            .to_string();
        assert!(
            e.contains("this server is not the cluster archived under target app"),
            "{e}"
        );
    }
}
