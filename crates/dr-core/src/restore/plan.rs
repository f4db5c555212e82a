//! The restore plan shown before anything happens, and which tables the operator selected.

use std::collections::BTreeMap;

use dr_catalog::{BackupDetails, Manifest};
use serde::Serialize;

use super::RestoreOptions;
use crate::{human_bytes, Error, Result};

/// What is going to happen, shown before it happens.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub backup_id: String,
    pub target: String,
    pub backup_started_at: String,
    pub stored_bytes: u64,
    pub archive_bytes: u64,
    pub server_version: String,
    pub destination: String,
    pub destination_state: String,
    pub tables: usize,
    pub rows: i64,
    pub jobs: u32,
    pub temp_dir: String,
    pub temp_bytes_needed: u64,
    pub selection: Vec<String>,
}

impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "restore plan")?;
        writeln!(
            f,
            "  backup       {} of `{}` (taken {})",
            self.backup_id, self.target, self.backup_started_at
        )?;
        writeln!(
            f,
            "  size         {} stored, {} archive",
            human_bytes(self.stored_bytes),
            human_bytes(self.archive_bytes)
        )?;
        writeln!(f, "  from server  PostgreSQL {}", self.server_version)?;
        writeln!(
            f,
            "  into         {} ({})",
            self.destination, self.destination_state
        )?;
        writeln!(
            f,
            "  expected     {} tables, {} rows",
            self.tables, self.rows
        )?;
        if !self.selection.is_empty() {
            writeln!(f, "  only         {}", self.selection.join(", "))?;
        }
        writeln!(f, "  jobs         {}", self.jobs)?;
        write!(
            f,
            "  temp disk    {} in {}",
            human_bytes(self.temp_bytes_needed),
            self.temp_dir
        )
    }
}

/// Every `--table` names a table of the backup and every `--schema` a schema holding one:
/// a typo must fail before a database is created or anything is fetched.
pub(super) fn check_selection(
    details: &BackupDetails,
    opts: &RestoreOptions,
    m: &Manifest,
) -> Result<()> {
    let mut unknown = Vec::new();
    for t in &opts.tables {
        let (s, n) = split_table(t);
        if !details.tables.iter().any(|x| x.schema == s && x.name == n) {
            unknown.push(format!("table {t}"));
        }
    }
    for schema in &opts.schemas {
        let known = details.tables.iter().any(|x| &x.schema == schema)
            || details.sequences.iter().any(|x| &x.schema == schema);
        if !known {
            unknown.push(format!("schema {schema}"));
        }
    }
    if unknown.is_empty() {
        return Ok(());
    }
    Err(Error::config(format!(
        "backup {} of `{}` holds no {}; nothing was changed\nhint: `dr show {} --target {}` lists its tables as SCHEMA.TABLE",
        m.id,
        m.target,
        unknown.join(", "),
        m.id,
        m.target
    )))
}

pub(super) fn selected_counts(
    details: &BackupDetails,
    opts: &RestoreOptions,
) -> (BTreeMap<String, i64>, i64) {
    let sel: BTreeMap<String, i64> = details
        .tables
        .iter()
        .filter(|t| table_selected(&t.schema, &t.name, opts))
        .map(|t| (t.qualified(), t.rows))
        .collect();
    let rows = sel.values().sum();
    (sel, rows)
}

pub(super) fn table_selected(schema: &str, name: &str, opts: &RestoreOptions) -> bool {
    if opts.tables.is_empty() && opts.schemas.is_empty() {
        return true;
    }
    opts.schemas.iter().any(|s| s == schema)
        || opts.tables.iter().any(|t| {
            let (s, n) = split_table(t);
            s == schema && n == name
        })
}

/// `schema.table` or `table` (public).
pub(super) fn split_table(t: &str) -> (&str, &str) {
    match t.split_once('.') {
        Some((s, n)) => (s, n),
        None => ("public", t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_default_to_public() {
        assert_eq!(split_table("users"), ("public", "users"));
        assert_eq!(split_table("app.users"), ("app", "users"));
    }
}
