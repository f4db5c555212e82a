//! The WAL archive (docs/design/PITR.md): what PostgreSQL's `archive_command` and
//! `restore_command` run, on the objects and records laid out by `dr_catalog::wal`.

pub mod catalog;
pub mod fetch;
