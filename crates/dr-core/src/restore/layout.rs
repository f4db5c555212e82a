//! A backup in sections (format 2) as the restore sees it, shared by `sections` and its
//! siblings (`to_file`, `select`, `leave`): the section objects and the files they are staged
//! as, what a restore reads of them (the data streams of a selection, the bytes read, the
//! temp disk needed), everything a sectioned restore needs ([`Load`]), and one section as a
//! `pg_restore` step ([`Section`]).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use dr_catalog::{BackupDetails, Manifest, ObjectRecord};
use dr_stream::Identities;

use super::plan::selection;
use super::target::TargetState;
use super::RestoreOptions;
use crate::Context;

/// The section objects of a format-2 backup.
#[derive(Clone, Copy)]
pub(super) struct Sections<'a> {
    pub pre: &'a ObjectRecord,
    pub data: &'a [ObjectRecord],
    pub post: &'a ObjectRecord,
}

/// The file a section is written to by `--to-file DIR`, or staged as: restore order first.
pub(super) const PRE_FILE: &str = "1-pre-data.dump";
pub(super) const POST_FILE: &str = "3-post-data.dump";
pub(super) fn data_file(k: usize) -> String {
    format!("2-data-{k}.dump")
}

pub(super) fn is_selective(opts: &RestoreOptions) -> bool {
    !opts.tables.is_empty() || !opts.schemas.is_empty()
}

/// The data streams (indexes into `Sections::data`) a restore reads: all of them, or for a
/// selective restore those holding a selected table (a table the backup assigned no stream
/// is in stream 1, the rest), and stream 1 for a schema (its sequences' values).
pub(super) fn selected_streams(
    details: &BackupDetails,
    opts: &RestoreOptions,
    streams: usize,
) -> Vec<usize> {
    if !is_selective(opts) {
        return (0..streams).collect();
    }
    let sel = selection(opts).unwrap_or_default();
    let mut set: BTreeSet<usize> = details
        .tables
        .iter()
        .filter(|t| sel.has_table(&t.schema, &t.name))
        .map(|t| usize::try_from(t.stream.unwrap_or(1)).unwrap_or(1).max(1) - 1)
        .collect();
    if !sel.schemas.is_empty() {
        set.insert(0);
    }
    set.into_iter().filter(|i| *i < streams).collect()
}

/// The raw bytes a restore reads: every section, or for a selection the pre-data, the data
/// streams holding a selected table and the post-data. The restore estimate scales by it.
pub(super) fn bytes_read(s: &Sections<'_>, details: &BackupDetails, opts: &RestoreOptions) -> u64 {
    s.pre.raw_bytes
        + selected_streams(details, opts, s.data.len())
            .into_iter()
            .map(|i| s.data[i].raw_bytes)
            .sum::<u64>()
        + s.post.raw_bytes
}

/// Free temp disk a restore into a database needs: the post-data archive, and what a
/// A private directory under `temp_dir` for what a restore stages (removed when dropped).
pub(super) fn staging_dir(temp_dir: &std::path::Path) -> crate::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("dr-restore-")
        .tempdir_in(temp_dir)
        .map_err(|e| {
            crate::Error::new(
                crate::Kind::Failed,
                format!("cannot create a temp dir in {}: {e}", temp_dir.display()),
            )
            .with_hint("pass --temp-dir DIR")
        })
}

/// What `opts` selects, as the plan says it: `schema S`, `table T`.
pub(super) fn described_selection(opts: &RestoreOptions) -> Vec<String> {
    opts.schemas
        .iter()
        .map(|s| format!("schema {s}"))
        .chain(opts.tables.iter().map(|t| format!("table {t}")))
        .collect()
}

/// selective restore stages (the pre-data and the selected data streams).
pub(super) fn temp_needed(s: &Sections<'_>, details: &BackupDetails, opts: &RestoreOptions) -> u64 {
    let mut n = s.post.raw_bytes;
    if is_selective(opts) {
        n += s.pre.raw_bytes;
        n += selected_streams(details, opts, s.data.len())
            .into_iter()
            .map(|i| s.data[i].raw_bytes)
            .sum::<u64>();
    }
    n
}

/// What a restore brings, for the tools it picks and what it says: a stored backup, or a
/// database recovered to a point in a sandbox (`pitr::into_db`).
pub(super) struct Origin {
    /// For messages: "backup 20261122T020000Z", "`app` as of 2026-12-03 14:05:32Z".
    pub what: String,
    /// Whose backups: the configured target whose `pg_bin_dir` has the tools.
    pub target: String,
    /// The major of the pg_dump that wrote the archive: pg_restore must be at least as new.
    pub archive_major: u32,
    /// The `dr restore` arguments that restore the same again (before `--to`): "ID --target
    /// T", "--at 'TIME' --target T".
    pub again: String,
    /// A stored backup's id: the retry may name an older one instead.
    pub backup_id: Option<String>,
}

impl Origin {
    /// A stored backup.
    pub(super) fn backup(m: &Manifest) -> Origin {
        Origin {
            what: format!("backup {}", m.id),
            target: m.target.clone(),
            archive_major: dr_pg::parse_version_output(&m.pg_dump_version)
                .unwrap_or(m.server_major)
                .max(m.server_major),
            again: format!("{} --target {}", m.id, m.target),
            backup_id: Some(m.id.to_string()),
        }
    }
}

/// Everything a sectioned restore needs.
pub(super) struct Load<'a> {
    pub ctx: &'a Context,
    pub origin: &'a Origin,
    pub details: &'a BackupDetails,
    pub identities: &'a Identities,
    pub target: &'a TargetState,
    pub opts: &'a RestoreOptions,
    pub jobs: u32,
    pub globals: Option<&'a [u8]>,
    pub temp_dir: &'a Path,
    /// The sections already decrypted into this directory (`--to-file DIR` with `--to`):
    /// read from there, not from the store.
    pub files_in: Option<&'a Path>,
    pub check_first: bool,
}

/// Where a section's pg_restore reads: the store through a pipe, a file, or a pg_dump of a
/// live server (the sandbox of a point-in-time restore) through a pipe. `Rows` is no
/// pg_restore: a worker copying a live server's rows itself (`rows`).
pub(super) enum Source<'a> {
    Pipe(&'a ObjectRecord),
    File(PathBuf),
    Dump(Box<DumpCommand>),
    Rows(std::sync::Arc<super::rows::Rows>),
}

/// A `pg_dump` whose archive goes straight into a section's pg_restore.
pub(super) struct DumpCommand {
    pub pg_dump: PathBuf,
    pub conn: dr_pg::ConnInfo,
    /// Everything after `pg_dump`: format, snapshot, `--dbname`, section, tables.
    pub args: Vec<String>,
}

pub(super) struct Section<'a> {
    pub(super) label: String,
    pub(super) source: Source<'a>,
    /// `pg_restore --use-list` content (a selective restore).
    pub(super) list: Option<String>,
    pub(super) jobs: u32,
    pub(super) clean: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use dr_catalog::TableCount;

    fn details() -> BackupDetails {
        let t = |s: &str, n: &str, stream| TableCount {
            schema: s.into(),
            name: n.into(),
            rows: 1,
            stream,
        };
        BackupDetails {
            tables: vec![
                t("public", "a", Some(1)),
                t("public", "b", Some(2)),
                t("audit", "c", Some(3)),
                t("public", "d", None),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn a_selective_restore_reads_only_the_streams_of_its_tables() {
        let all = RestoreOptions::default();
        assert_eq!(selected_streams(&details(), &all, 3), [0, 1, 2]);
        let one = RestoreOptions {
            tables: vec!["public.b".into()],
            ..Default::default()
        };
        assert_eq!(selected_streams(&details(), &one, 3), [1]);
        let rest = RestoreOptions {
            tables: vec!["public.d".into()],
            ..Default::default()
        };
        assert_eq!(selected_streams(&details(), &rest, 3), [0]);
        let schema = RestoreOptions {
            schemas: vec!["audit".into()],
            ..Default::default()
        };
        assert_eq!(selected_streams(&details(), &schema, 3), [0, 2]);
    }
}
