//! Point-in-time recovery, the PostgreSQL side: the settings dr writes into a restored data
//! directory, and what the server tells about how recovery went (`pg_controldata`, the
//! server log). No I/O here: callers read the files and run the tools.
//!
//! Settings go into `postgresql.auto.conf` (read last, so they win) with `recovery.signal`
//! beside it. The target time always carries an explicit `+00`: PostgreSQL reads a bare time
//! in the server's `timezone`. The timeline is always explicit, never `latest`, so recovery
//! cannot wander onto a timeline the operator did not choose.

use std::fmt::Write as _;

use dr_catalog::wal::Lsn;

/// Where recovery stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Replay every commit up to and including this time.
    Time(chrono::DateTime<chrono::Utc>),
    /// Replay up to and including this position.
    Lsn(Lsn),
    /// Replay every record before this position, none from it on: what a dump whose
    /// snapshot was exported at this position saw (`recovery_target_inclusive = off`).
    BeforeLsn(Lsn),
    /// Replay everything the archive has, then end recovery.
    Latest,
}

/// What the server does once it reaches the target (`recovery_target_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    Promote,
    Pause,
    Shutdown,
}

impl Then {
    pub fn as_str(self) -> &'static str {
        match self {
            Then::Promote => "promote",
            Then::Pause => "pause",
            Then::Shutdown => "shutdown",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecoveryError {
    #[error("cannot put `{arg}` into restore_command: it contains a line break or NUL")]
    Unquotable { arg: String },
}

/// The `restore_command` for `argv` (program and its arguments; `%f` and `%p` are added
/// last). Each argument is quoted for `/bin/sh` (PostgreSQL runs the command with
/// `system()`), `%` doubled (PostgreSQL replaces `%f`, `%p`, `%r`, `%%`).
pub fn restore_command(argv: &[&str]) -> Result<String, RecoveryError> {
    let mut words = Vec::with_capacity(argv.len() + 2);
    for arg in argv {
        if arg.contains(['\n', '\r', '\0']) {
            return Err(RecoveryError::Unquotable {
                arg: (*arg).to_string(),
            });
        }
        words.push(shell_quote(arg).replace('%', "%%"));
    }
    words.push("%f".into());
    words.push("%p".into());
    Ok(words.join(" "))
}

/// `arg` as one `/bin/sh` word: bare when it is plainly safe, else in single quotes.
fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-=:,+@%".contains(&b));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// `value` as a postgresql.conf string literal (quotes doubled, backslashes escaped).
pub fn conf_string(value: &str) -> String {
    format!("'{}'", value.replace('\\', r"\\").replace('\'', "''"))
}

/// The lines dr appends to `postgresql.auto.conf` for a recovery.
pub fn settings(restore_command: &str, target: &Target, timeline: u32, then: Then) -> String {
    let mut out = String::from("\n# Added by dr restore --at: recovery settings.\n");
    let mut line = |name: &str, value: &str| {
        let _ = writeln!(out, "{name} = {}", conf_string(value));
    };
    line("restore_command", restore_command);
    match target {
        Target::Time(at) => line(
            "recovery_target_time",
            &at.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string(),
        ),
        Target::Lsn(lsn) | Target::BeforeLsn(lsn) => {
            line("recovery_target_lsn", &lsn.to_string());
        }
        Target::Latest => {}
    }
    if !matches!(target, Target::Latest) {
        let inclusive = !matches!(target, Target::BeforeLsn(_));
        line(
            "recovery_target_inclusive",
            if inclusive { "on" } else { "off" },
        );
        line("recovery_target_action", then.as_str());
    }
    line("recovery_target_timeline", &timeline.to_string());
    out
}

/// What `pg_controldata` says about where a cluster is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ControlData {
    pub system_identifier: Option<String>,
    /// "Database cluster state", e.g. `in archive recovery`, `shut down in recovery`.
    pub state: Option<String>,
    pub checkpoint_timeline: Option<u32>,
    pub checkpoint_redo: Option<Lsn>,
    pub min_recovery_end: Option<Lsn>,
    pub segment_bytes: Option<u64>,
}

/// Parse `pg_controldata` output (run with `LC_ALL=C`).
pub fn parse_controldata(text: &str) -> ControlData {
    let mut c = ControlData::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "Database system identifier" => c.system_identifier = Some(value.to_string()),
            "Database cluster state" => c.state = Some(value.to_string()),
            "Latest checkpoint's TimeLineID" => c.checkpoint_timeline = value.parse().ok(),
            "Latest checkpoint's REDO location" => c.checkpoint_redo = value.parse().ok(),
            "Minimum recovery ending location" => c.min_recovery_end = value.parse().ok(),
            "Bytes per WAL segment" => c.segment_bytes = value.parse().ok(),
            _ => {}
        }
    }
    c
}

/// What the server log (with `lc_messages = C`) says about the end of recovery.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecoveryLog {
    /// "recovery stopping before/after commit of transaction N, time T": the line itself.
    pub stopped_at: Option<String>,
    /// "recovery ended before configured recovery target was reached".
    pub ended_early: bool,
    /// "redo done at X/Y".
    pub redo_done: Option<Lsn>,
    /// "could not restore file" / restore_command failures, as logged.
    pub fatal: Vec<String>,
}

pub fn parse_log(text: &str) -> RecoveryLog {
    let mut log = RecoveryLog::default();
    for line in text.lines() {
        if let Some(i) = line.find("recovery stopping ") {
            log.stopped_at = Some(line[i..].trim().to_string());
        }
        if line.contains("recovery ended before configured recovery target was reached") {
            log.ended_early = true;
        }
        if let Some(i) = line.find("redo done at ") {
            let rest = &line[i + "redo done at ".len()..];
            let word = rest.split_whitespace().next().unwrap_or("");
            log.redo_done = word.parse().ok();
        }
        if line.contains("FATAL:") || line.contains("PANIC:") {
            log.fatal.push(line.trim().to_string());
        }
    }
    log
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn restore_command_quotes_for_the_shell_and_for_percent() {
        let cmd = restore_command(&[
            "/usr/local/bin/dr",
            "--config",
            "/etc/dr/dr.toml",
            "--env-file",
            "/srv/my conf/it's 100%.env",
            "wal",
            "fetch",
            "--target",
            "app",
        ])
        .expect("quotable");
        assert_eq!(
            cmd,
            r"/usr/local/bin/dr --config /etc/dr/dr.toml --env-file '/srv/my conf/it'\''s 100%%.env' wal fetch --target app %f %p"
        );
        assert!(restore_command(&["/bin/dr", "a\nb"]).is_err());
    }

    #[test]
    fn settings_are_explicit_about_zone_timeline_and_action() {
        let at = chrono::Utc
            .with_ymd_and_hms(2026, 12, 3, 14, 5, 32)
            .single()
            .expect("time");
        let s = settings("dr wal fetch %f %p", &Target::Time(at), 2, Then::Promote);
        assert!(
            s.contains("restore_command = 'dr wal fetch %f %p'\n"),
            "{s}"
        );
        assert!(
            s.contains("recovery_target_time = '2026-12-03 14:05:32.000000+00'\n"),
            "{s}"
        );
        assert!(s.contains("recovery_target_timeline = '2'\n"), "{s}");
        assert!(s.contains("recovery_target_action = 'promote'\n"), "{s}");
        let lsn = settings("x", &Target::Lsn(Lsn(0xA_4200_0028)), 1, Then::Pause);
        assert!(
            lsn.contains("recovery_target_lsn = 'A/42000028'\n"),
            "{lsn}"
        );
        assert!(lsn.contains("recovery_target_inclusive = 'on'\n"), "{lsn}");
        let before = settings(
            "x",
            &Target::BeforeLsn(Lsn(0xA_4200_0028)),
            1,
            Then::Promote,
        );
        assert!(
            before.contains("recovery_target_lsn = 'A/42000028'\n")
                && before.contains("recovery_target_inclusive = 'off'\n"),
            "{before}"
        );
        let latest = settings("x", &Target::Latest, 1, Then::Promote);
        assert!(!latest.contains("recovery_target_action"), "{latest}");
        assert!(!latest.contains("recovery_target_time ="), "{latest}");
        assert_eq!(conf_string(r"a'b\c"), r"'a''b\\c'");
    }

    #[test]
    fn reads_controldata() {
        let text = "pg_control version number:            1300\n\
            Database system identifier:           7301234567890123456\n\
            Database cluster state:               shut down in recovery\n\
            Latest checkpoint's REDO location:    0/3000028\n\
            Latest checkpoint's TimeLineID:       2\n\
            Minimum recovery ending location:     0/30001A0\n\
            Bytes per WAL segment:                16777216\n";
        let c = parse_controldata(text);
        assert_eq!(c.system_identifier.as_deref(), Some("7301234567890123456"));
        assert_eq!(c.state.as_deref(), Some("shut down in recovery"));
        assert_eq!(c.checkpoint_timeline, Some(2));
        assert_eq!(c.checkpoint_redo, Some(Lsn(0x300_0028)));
        assert_eq!(c.min_recovery_end, Some(Lsn(0x300_01A0)));
        assert_eq!(c.segment_bytes, Some(16 << 20));
    }

    #[test]
    fn reads_how_recovery_ended() {
        let log = "2026-12-03 14:06:00.1 UTC [42] LOG:  redo starts at 0/2000028\n\
            2026-12-03 14:06:01.2 UTC [42] LOG:  recovery stopping before commit of transaction 755, time 2026-12-03 14:05:33.1+00\n\
            2026-12-03 14:06:01.2 UTC [42] LOG:  redo done at 0/3000100 system usage: CPU: user: 0.00 s\n";
        let r = parse_log(log);
        assert!(r
            .stopped_at
            .as_deref()
            .unwrap_or("")
            .starts_with("recovery stopping before commit of transaction 755"));
        assert_eq!(r.redo_done, Some(Lsn(0x300_0100)));
        assert!(!r.ended_early);
        let early = "LOG:  redo done at 0/3000100\nFATAL:  recovery ended before configured recovery target was reached\n";
        let r = parse_log(early);
        assert!(r.ended_early);
        assert_eq!(r.fatal.len(), 1);
    }
}
