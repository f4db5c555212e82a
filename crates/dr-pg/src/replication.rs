//! What point-in-time recovery needs from the server: its WAL settings, the archiver's
//! progress, and the physical replication slot that keeps WAL for `dr wal stream`.
//!
//! [`findings`] turns the settings into `dr check` lines, each with the exact statement that
//! fixes it, so an operator never has to look up which setting wants a restart.

use tokio_postgres::Client;

use crate::PgError;
use dr_catalog::wal::Lsn;

/// The server settings and facts that decide whether WAL can reach the repository.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WalSettings {
    pub wal_level: String,
    pub archive_mode: String,
    pub archive_command: String,
    pub archive_library: String,
    /// Seconds; 0 = a quiet server never switches segments.
    pub archive_timeout_secs: i64,
    pub max_wal_senders: i64,
    pub senders_in_use: i64,
    /// MB; -1 = unlimited (a dead stream can fill the server's disk).
    pub max_slot_wal_keep_size_mb: i64,
    pub full_page_writes: bool,
    pub segment_bytes: u64,
    pub role_can_replicate: bool,
    pub system_identifier: String,
}

/// Read the settings (any role can; `pg_control_system()` needs PostgreSQL ≥ 9.6).
pub async fn wal_settings(client: &Client) -> Result<WalSettings, PgError> {
    let ctx = "reading the server's WAL settings";
    let rows = client
        .query(
            "select name, setting from pg_settings where name = any($1)",
            &[&vec![
                "wal_level",
                "archive_mode",
                "archive_command",
                "archive_library",
                "archive_timeout",
                "max_wal_senders",
                "max_slot_wal_keep_size",
                "full_page_writes",
                "wal_segment_size",
            ]],
        )
        .await
        .map_err(|e| PgError::query(ctx, e))?;
    let mut s = WalSettings::default();
    for row in rows {
        let (name, value): (String, String) = (row.get(0), row.get(1));
        let number = || value.parse::<i64>().unwrap_or(0);
        match name.as_str() {
            "wal_level" => s.wal_level = value.clone(),
            "archive_mode" => s.archive_mode = value.clone(),
            "archive_command" => s.archive_command = value.clone(),
            "archive_library" => s.archive_library = value.clone(),
            "archive_timeout" => s.archive_timeout_secs = number(),
            "max_wal_senders" => s.max_wal_senders = number(),
            "max_slot_wal_keep_size" => s.max_slot_wal_keep_size_mb = number(),
            "full_page_writes" => s.full_page_writes = value == "on",
            "wal_segment_size" => s.segment_bytes = number().max(0) as u64,
            _ => {}
        }
    }
    let row = client
        .query_one(
            "select (select count(*) from pg_stat_replication),
                    (select rolreplication or rolsuper from pg_roles where rolname = current_user),
                    (select system_identifier::text from pg_control_system())",
            &[],
        )
        .await
        .map_err(|e| PgError::query(ctx, e))?;
    s.senders_in_use = row.get(0);
    s.role_can_replicate = row.get::<_, Option<bool>>(1).unwrap_or(false);
    s.system_identifier = row.get(2);
    Ok(s)
}

/// `pg_stat_archiver`: how archiving is going.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Archiver {
    pub archived_count: i64,
    pub last_archived_wal: Option<String>,
    pub last_archived_time: Option<chrono::DateTime<chrono::Utc>>,
    pub failed_count: i64,
    pub last_failed_wal: Option<String>,
    pub last_failed_time: Option<chrono::DateTime<chrono::Utc>>,
}

impl Archiver {
    /// The last attempt failed (a failure newer than the last success).
    pub fn failing(&self) -> bool {
        match (self.last_failed_time, self.last_archived_time) {
            (Some(failed), Some(archived)) => failed > archived,
            (Some(_), None) => true,
            _ => false,
        }
    }
}

pub async fn archiver(client: &Client) -> Result<Archiver, PgError> {
    let row = client
        .query_one(
            "select archived_count, last_archived_wal,
                    extract(epoch from last_archived_time)::float8,
                    failed_count, last_failed_wal, extract(epoch from last_failed_time)::float8
             from pg_stat_archiver",
            &[],
        )
        .await
        .map_err(|e| PgError::query("reading pg_stat_archiver", e))?;
    let time = |i: usize| {
        row.get::<_, Option<f64>>(i)
            .and_then(|t| chrono::DateTime::from_timestamp_millis((t * 1000.0) as i64))
    };
    Ok(Archiver {
        archived_count: row.get(0),
        last_archived_wal: row.get(1),
        last_archived_time: time(2),
        failed_count: row.get(3),
        last_failed_wal: row.get(4),
        last_failed_time: time(5),
    })
}

/// The physical replication slot dr uses for a target: `dr_` and the target's name, reduced
/// to what slot names allow (lower-case letters, digits, `_`; at most 63 bytes).
pub fn slot_name(target: &str) -> String {
    let mut name: String = format!("dr_{target}")
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '_' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '_',
        })
        .collect();
    name.truncate(63);
    name
}

/// A physical slot's state (`pg_replication_slots`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub active: bool,
    pub restart_lsn: Option<Lsn>,
    /// `reserved`, `extended`, `unreserved` or `lost`.
    pub wal_status: Option<String>,
}

impl Slot {
    /// The server has removed WAL the slot still needed: there is a hole in the archive.
    pub fn lost(&self) -> bool {
        self.wal_status.as_deref() == Some("lost")
    }
}

pub async fn slot(client: &Client, name: &str) -> Result<Option<Slot>, PgError> {
    let row = client
        .query_opt(
            "select active, restart_lsn::text, wal_status from pg_replication_slots
             where slot_name = $1 and slot_type = 'physical'",
            &[&name],
        )
        .await
        .map_err(|e| PgError::query(&format!("reading replication slot {name}"), e))?;
    Ok(row.map(|r| Slot {
        active: r.get(0),
        restart_lsn: r.get::<_, Option<String>>(1).and_then(|t| t.parse().ok()),
        wal_status: r.get(2),
    }))
}

/// Create the physical slot with its WAL reserved now (so WAL from this moment is kept even
/// before the stream connects). Returns false when it already existed.
pub async fn create_slot(client: &Client, name: &str) -> Result<bool, PgError> {
    if slot(client, name).await?.is_some() {
        return Ok(false);
    }
    client
        .execute(
            "select pg_create_physical_replication_slot($1, true)",
            &[&name],
        )
        .await
        .map_err(|e| PgError::query(&format!("creating replication slot {name}"), e))?;
    Ok(true)
}

/// How WAL leaves the server for a target (`[targets.wal] mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capture {
    Archive,
    Stream,
}

/// One `dr check` line about WAL: what is wrong and the statement that fixes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub what: String,
    pub fix: String,
}

/// What is wrong with `s` for WAL capture by `capture`, where `archive_command` should
/// contain `command` (e.g. `dr … wal push %p`) and a segment should switch within
/// `max_lag_secs / 2`. Empty = all good.
pub fn findings(
    s: &WalSettings,
    capture: Capture,
    command: &str,
    max_lag_secs: i64,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut add = |what: String, fix: &str| {
        out.push(Finding {
            what,
            fix: fix.to_string(),
        })
    };
    if s.wal_level == "minimal" {
        add(
            "wal_level is minimal: WAL cannot rebuild the cluster".into(),
            "ALTER SYSTEM SET wal_level = 'replica'; then restart the server",
        );
    }
    if !s.full_page_writes {
        add(
            "full_page_writes is off: a base backup taken online can be torn".into(),
            "ALTER SYSTEM SET full_page_writes = on; SELECT pg_reload_conf();",
        );
    }
    match capture {
        Capture::Archive => {
            if s.archive_mode == "off" {
                add(
                    "archive_mode is off".into(),
                    "ALTER SYSTEM SET archive_mode = 'on'; then restart the server",
                );
            }
            if !s.archive_library.is_empty() {
                add(
                    format!(
                        "archive_library is `{}`: archive_command is ignored",
                        s.archive_library
                    ),
                    "ALTER SYSTEM SET archive_library = ''; SELECT pg_reload_conf();",
                );
            }
            if !s.archive_command.contains("wal push") {
                add(
                    format!("archive_command is `{}`, not dr", s.archive_command),
                    &format!(
                        "ALTER SYSTEM SET archive_command = '{}'; SELECT pg_reload_conf();",
                        command.replace('\'', "''")
                    ),
                );
            }
            let limit = (max_lag_secs / 2).max(1);
            if s.archive_timeout_secs == 0 || s.archive_timeout_secs > limit {
                add(
                    format!(
                        "archive_timeout is {} s: a quiet server's last commits wait {} for a segment switch (max_lag allows {limit} s)",
                        s.archive_timeout_secs,
                        if s.archive_timeout_secs == 0 { "forever".to_string() } else { format!("up to {} s", s.archive_timeout_secs) }
                    ),
                    &format!("ALTER SYSTEM SET archive_timeout = '{limit}s'; SELECT pg_reload_conf();"),
                );
            }
        }
        Capture::Stream => {
            if !s.role_can_replicate {
                add(
                    "the role dr connects as lacks REPLICATION".into(),
                    "ALTER ROLE <the role in the target's url> REPLICATION;",
                );
            }
            if s.max_wal_senders <= s.senders_in_use {
                add(
                    format!(
                        "max_wal_senders is {} and {} are in use: no room for dr's stream",
                        s.max_wal_senders, s.senders_in_use
                    ),
                    &format!(
                        "ALTER SYSTEM SET max_wal_senders = {}; then restart the server",
                        s.senders_in_use + 5
                    ),
                );
            }
            if s.max_slot_wal_keep_size_mb < 0 {
                add(
                    "max_slot_wal_keep_size is unlimited: if the stream stops, the slot keeps WAL until the server's disk is full".into(),
                    "ALTER SYSTEM SET max_slot_wal_keep_size = '10GB'; SELECT pg_reload_conf();",
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> WalSettings {
        WalSettings {
            wal_level: "replica".into(),
            archive_mode: "on".into(),
            archive_command: "/usr/local/bin/dr --config /etc/dr/dr.toml wal push %p".into(),
            archive_library: String::new(),
            archive_timeout_secs: 60,
            max_wal_senders: 10,
            senders_in_use: 1,
            max_slot_wal_keep_size_mb: 10240,
            full_page_writes: true,
            segment_bytes: 16 << 20,
            role_can_replicate: true,
            system_identifier: "7301234567890123456".into(),
        }
    }

    #[test]
    fn a_good_server_has_no_findings() {
        assert_eq!(
            findings(&good(), Capture::Archive, "dr wal push %p", 300),
            vec![]
        );
        assert_eq!(
            findings(&good(), Capture::Stream, "dr wal push %p", 300),
            vec![]
        );
    }

    #[test]
    fn each_problem_says_its_fix() {
        let mut s = good();
        s.archive_mode = "off".into();
        s.archive_command = "(disabled)".into();
        s.archive_timeout_secs = 0;
        let f = findings(&s, Capture::Archive, "/usr/bin/dr wal push %p", 300);
        let fixes: Vec<&str> = f.iter().map(|f| f.fix.as_str()).collect();
        assert_eq!(
            fixes,
            [
                "ALTER SYSTEM SET archive_mode = 'on'; then restart the server",
                "ALTER SYSTEM SET archive_command = '/usr/bin/dr wal push %p'; SELECT pg_reload_conf();",
                "ALTER SYSTEM SET archive_timeout = '150s'; SELECT pg_reload_conf();",
            ]
        );
        assert!(f[2].what.contains("forever"), "{}", f[2].what);

        let mut s = good();
        s.role_can_replicate = false;
        s.senders_in_use = 10;
        s.max_slot_wal_keep_size_mb = -1;
        s.wal_level = "minimal".into();
        let f = findings(&s, Capture::Stream, "", 300);
        assert_eq!(f.len(), 4, "{f:?}");
        assert!(f[3].fix.contains("max_slot_wal_keep_size"), "{f:?}");
    }

    #[test]
    fn slot_names_are_what_postgres_allows() {
        assert_eq!(slot_name("app"), "dr_app");
        assert_eq!(slot_name("Billing-EU.prod"), "dr_billing_eu_prod");
        assert_eq!(slot_name(&"x".repeat(100)).len(), 63);
    }

    #[test]
    fn the_archiver_is_failing_only_after_its_last_success() {
        let t = |s: i64| chrono::DateTime::from_timestamp(s, 0);
        let mut a = Archiver {
            last_archived_time: t(100),
            last_failed_time: t(50),
            ..Archiver::default()
        };
        assert!(!a.failing());
        a.last_failed_time = t(150);
        assert!(a.failing());
        a.last_archived_time = None;
        assert!(a.failing());
    }
}
