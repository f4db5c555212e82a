//! The manifest (plain JSON, written last) and the encrypted details it points to.
//!
//! The manifest holds only what `list`, retention and integrity checks need without the private
//! key: times, versions, sizes and digests. Anything derived from the data (table and sequence
//! names, row counts) lives in [`BackupDetails`], stored encrypted.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::BackupId;

pub use crate::verification::{CheckOutcome, DrillFacts, VerificationRecord};

/// Bumped when a reader of an older dr could misread a newer manifest.
///
/// - 1: one `pg_dump -Fc` archive (`dump.zst.age`), restored from a staged local file.
/// - 2: the archive in sections, each its own object: `pre-data`, one or more `data-K`
///   streams, `post-data` (see [`ObjectRole`] and [`ObjectRecord::restore_step`]). Every
///   section streams into `pg_restore`; data streams restore side by side.
///
/// - 3: a physical base backup (`kind: "physical"`): `pg_basebackup`'s tar stream
///   (`base.tar.zst.age`), PostgreSQL's `backup_manifest` beside it, and the WAL range it
///   needs ([`Physical`]). Restored with the WAL archive (`dr restore --at … --to-dir`).
///
/// - 4: format 2 where a section is stored as several objects ([`ObjectRecord::chunks`]):
///   a stream longer than the store's `max_parts` parts or than 5 GiB continues in the next
///   object. Written only when a section has more than one object, so a backup of streams
///   that each fit one object stays format 2, readable by an older dr; a dr that knows only
///   up to 3 refuses format 4 ("upgrade dr") rather than restoring the first object alone.
///
/// dr reads all four; it writes 2 (or 4) for dumps and 3 for base backups. A dr that knows
/// only up to 2 lists a format-3 manifest as damaged and never restores, verifies or misreads
/// it.
pub const MANIFEST_FORMAT: u32 = 2;

/// The format of manifests written by dr before sections (still read).
pub const MANIFEST_FORMAT_SINGLE: u32 = 1;

/// The format of physical base backups' manifests.
pub const MANIFEST_FORMAT_PHYSICAL: u32 = 3;

/// The format of sectioned dumps with a section stored as several objects.
pub const MANIFEST_FORMAT_CHUNKED: u32 = 4;

/// The format of physical base backups whose base tar is stored as several objects.
pub const MANIFEST_FORMAT_PHYSICAL_CHUNKED: u32 = 5;

/// The newest format this dr reads: a newer one is refused ("upgrade dr").
pub const NEWEST_MANIFEST_FORMAT: u32 = MANIFEST_FORMAT_PHYSICAL_CHUNKED;

/// What a backup is: a logical dump (`pg_dump`, formats 1 and 2) or a physical base backup
/// (`pg_basebackup`, format 3).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BackupKind {
    #[default]
    Logical,
    Physical,
}

impl BackupKind {
    pub fn is_logical(&self) -> bool {
        *self == BackupKind::Logical
    }
    pub fn as_str(self) -> &'static str {
        match self {
            BackupKind::Logical => "logical",
            BackupKind::Physical => "physical",
        }
    }
}

/// Format 3: what a physical base backup needs from the WAL archive, and where it came from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Physical {
    /// `pg_control_system().system_identifier`: the WAL archive it restores with must be of
    /// the same cluster.
    pub system_identifier: String,
    /// The timeline the backup started and stopped on.
    pub timeline: u32,
    /// `WAL-Ranges` of PostgreSQL's `backup_manifest` (cross-checked with `backup_label`):
    /// replay must start at `start_lsn` and reach `stop_lsn` to be consistent.
    pub start_lsn: crate::wal::Lsn,
    pub stop_lsn: crate::wal::Lsn,
    /// The first and the last segment that range needs (24 hex digits each): the backup was
    /// committed only once every segment from one to the other was in the archive.
    pub start_segment: String,
    pub stop_segment: String,
    /// `wal_segment_size`.
    pub segment_bytes: u64,
    /// `CHECKPOINT LOCATION` of `backup_label`: where redo starts.
    pub checkpoint_lsn: crate::wal::Lsn,
    /// `pg_basebackup --version` of the binary used.
    pub pg_basebackup_version: String,
    /// The `backup_label` file as written (it is also in the tar).
    pub backup_label: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format: u32,
    pub id: BackupId,
    pub target: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// `SHOW server_version`, e.g. "15.18 (Debian 15.18-0+deb12u1)".
    pub server_version: String,
    pub server_major: u32,
    /// `pg_dump --version` of the binary used; empty for a physical backup (see
    /// [`Physical::pg_basebackup_version`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pg_dump_version: String,
    pub dr_version: String,
    /// `pg_database_size` at backup time, bytes.
    pub database_bytes: u64,
    pub compression: String,
    pub encryption: String,
    /// Public recipients the objects are encrypted to.
    pub recipients: Vec<String>,
    pub objects: Vec<ObjectRecord>,
    /// `logical` unless said (formats 1 and 2 never say it).
    #[serde(default, skip_serializing_if = "BackupKind::is_logical")]
    pub kind: BackupKind,
    /// Format 3 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physical: Option<Physical>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum ObjectRole {
    /// Format 1: the whole `pg_dump -Fc` archive.
    Dump,
    /// Format 2: `pg_dump -Fc --section=pre-data` (types, tables, functions: the schema).
    PreData,
    /// Format 2: `pg_dump -Fc --section=data` for a share of the tables (one stream of
    /// several; exactly one also carries large objects and every sequence value not owned by
    /// a table of another stream).
    Data,
    /// Format 2: `pg_dump -Fc --section=post-data` (indexes, constraints, triggers, policies).
    PostData,
    /// `pg_dumpall --globals-only` SQL.
    Globals,
    /// [`BackupDetails`] JSON.
    Details,
    /// Format 3: `pg_basebackup -D - -Ft -X none`'s tar stream, as it came.
    BaseTar,
    /// Format 3: PostgreSQL's `backup_manifest` (also the tar's last member), for
    /// `pg_verifybackup` and the sizes a restore needs without reading the tar.
    BackupManifest,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ObjectRecord {
    pub role: ObjectRole,
    pub key: String,
    /// Stored (compressed, encrypted) size.
    pub bytes: u64,
    /// SHA-256 of the stored bytes, hex.
    pub sha256: String,
    /// Size before compression and encryption.
    pub raw_bytes: u64,
    /// Multipart part size used, if uploaded in parts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_bytes: Option<u64>,
    /// Format 2, sections only: when this object is restored. Objects with the same step are
    /// restored at the same time, each into its own `pg_restore`; a step starts when every
    /// object of the step before it is restored. 1 = pre-data, 2 = data, 3 = post-data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_step: Option<u32>,
    /// Format 4, a section stored as several objects: each of them in stream order, the
    /// first at `key`. Their concatenation is the stream: `bytes` and `sha256` above are the
    /// whole stream's. Empty (and not written) for a stream in one object.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<Chunk>,
}

/// One object of a section stored as several ([`ObjectRecord::chunks`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Chunk {
    pub key: String,
    /// Its stored size.
    pub bytes: u64,
    /// SHA-256 of its stored bytes, hex.
    pub sha256: String,
}

impl ObjectRecord {
    /// The stored objects of this record, in stream order, with their sizes: its chunks, or
    /// its one object.
    pub fn stored_objects(&self) -> Vec<(&str, u64)> {
        if self.chunks.is_empty() {
            vec![(self.key.as_str(), self.bytes)]
        } else {
            self.chunks
                .iter()
                .map(|c| (c.key.as_str(), c.bytes))
                .collect()
        }
    }

    /// Its chunks are well formed: under `prefix`, the first at `key`, each with a digest,
    /// adding up to `bytes`.
    fn check_chunks(&self, prefix: &str) -> Result<(), String> {
        let Some(first) = self.chunks.first() else {
            return Ok(());
        };
        if first.key != self.key {
            return Err(format!(
                "object `{}` is stored as several objects but the first is `{}`",
                self.key, first.key
            ));
        }
        for c in &self.chunks {
            if !c.key.starts_with(prefix) {
                return Err(format!("object key `{}` lies outside `{prefix}`", c.key));
            }
            if !is_sha256_hex(&c.sha256) {
                return Err(format!("object `{}` has no valid sha256", c.key));
            }
        }
        let total: u64 = self.chunks.iter().map(|c| c.bytes).sum();
        if total != self.bytes {
            return Err(format!(
                "the {} objects of `{}` hold {total} bytes, the manifest records {}",
                self.chunks.len(),
                self.key,
                self.bytes
            ));
        }
        Ok(())
    }
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The restore step of each section (see [`ObjectRecord::restore_step`]).
pub const STEP_PRE_DATA: u32 = 1;
pub const STEP_DATA: u32 = 2;
pub const STEP_POST_DATA: u32 = 3;

/// How a backup's archive is stored: what a restore reads, in order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Layout<'a> {
    /// Format 1: one archive.
    Single(&'a ObjectRecord),
    /// Format 2: pre-data, then every data stream at once, then post-data.
    Sections {
        pre_data: &'a ObjectRecord,
        data: &'a [ObjectRecord],
        post_data: &'a ObjectRecord,
    },
}

impl Manifest {
    /// Parse a stored manifest. The format is read first, so a newer dr's manifest is
    /// refused as newer ("upgrade dr"), not as invalid JSON over a field this dr lacks.
    pub fn from_json(bytes: &[u8]) -> Result<Manifest, String> {
        #[derive(Deserialize)]
        struct Format {
            format: u32,
        }
        if let Ok(Format { format }) = serde_json::from_slice::<Format>(bytes) {
            if format > NEWEST_MANIFEST_FORMAT {
                return Err(newer(format));
            }
        }
        serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON ({e})"))
    }

    pub fn object(&self, role: ObjectRole) -> Option<&ObjectRecord> {
        self.objects.iter().find(|o| o.role == role)
    }

    /// The archive's objects: one dump, or the sections in restore order. `None` for a
    /// manifest that [`Manifest::check`] refuses.
    pub fn layout(&self) -> Option<Layout<'_>> {
        if let Some(dump) = self.object(ObjectRole::Dump) {
            return Some(Layout::Single(dump));
        }
        let pre_data = self.object(ObjectRole::PreData)?;
        let post_data = self.object(ObjectRole::PostData)?;
        // Data streams sit together in `objects` (checked), so a slice names them.
        let first = self
            .objects
            .iter()
            .position(|o| o.role == ObjectRole::Data)?;
        let n = self.objects[first..]
            .iter()
            .take_while(|o| o.role == ObjectRole::Data)
            .count();
        Some(Layout::Sections {
            pre_data,
            data: &self.objects[first..first + n],
            post_data,
        })
    }

    /// The archive objects (dump or sections), in restore order.
    pub fn archive_objects(&self) -> Vec<&ObjectRecord> {
        match self.layout() {
            Some(Layout::Single(d)) => vec![d],
            Some(Layout::Sections {
                pre_data,
                data,
                post_data,
            }) => std::iter::once(pre_data)
                .chain(data.iter())
                .chain(std::iter::once(post_data))
                .collect(),
            None => Vec::new(),
        }
    }

    /// Size of the decrypted, decompressed archive (all sections): what a restore loads.
    pub fn archive_raw_bytes(&self) -> u64 {
        self.archive_objects().iter().map(|o| o.raw_bytes).sum()
    }

    /// Number of data streams: 1 for a single archive.
    pub fn data_streams(&self) -> usize {
        match self.layout() {
            Some(Layout::Sections { data, .. }) => data.len(),
            _ => 1,
        }
    }
    /// The format of a dump's manifest: 2, or 4 when a section is stored as several
    /// objects.
    pub fn dump_format(objects: &[ObjectRecord]) -> u32 {
        if objects.iter().any(|o| !o.chunks.is_empty()) {
            MANIFEST_FORMAT_CHUNKED
        } else {
            MANIFEST_FORMAT
        }
    }

    /// The format of a base backup's manifest: 3, or 5 when the base tar is stored as
    /// several objects.
    pub fn physical_format(objects: &[ObjectRecord]) -> u32 {
        if objects.iter().any(|o| !o.chunks.is_empty()) {
            MANIFEST_FORMAT_PHYSICAL_CHUNKED
        } else {
            MANIFEST_FORMAT_PHYSICAL
        }
    }

    /// Whether this format stores a record as several objects (4 and 5).
    fn format_chunked(format: u32) -> bool {
        format == MANIFEST_FORMAT_CHUNKED || format == MANIFEST_FORMAT_PHYSICAL_CHUNKED
    }

    /// Whether this format is a base backup's (3 and 5).
    fn format_physical(format: u32) -> bool {
        format == MANIFEST_FORMAT_PHYSICAL || format == MANIFEST_FORMAT_PHYSICAL_CHUNKED
    }

    /// Stored bytes of all objects.
    pub fn stored_bytes(&self) -> u64 {
        self.objects.iter().map(|o| o.bytes).sum()
    }
    pub fn raw_bytes(&self) -> u64 {
        self.objects.iter().map(|o| o.raw_bytes).sum()
    }

    /// Problems a reader must refuse: a newer format, keys outside the backup, missing dump.
    pub fn check(&self) -> Result<(), String> {
        if self.format > NEWEST_MANIFEST_FORMAT {
            return Err(newer(self.format));
        }
        let prefix = crate::keys::backup_prefix(&self.target, &self.id);
        for o in &self.objects {
            if !o.key.starts_with(&prefix) {
                return Err(format!("object key `{}` lies outside `{prefix}`", o.key));
            }
            if !is_sha256_hex(&o.sha256) {
                return Err(format!("object `{}` has no valid sha256", o.key));
            }
            o.check_chunks(&prefix)?;
        }
        let chunked = self.objects.iter().any(|o| !o.chunks.is_empty());
        if chunked != Manifest::format_chunked(self.format) {
            return Err(format!(
                "a format {} manifest {} objects stored as several objects",
                self.format,
                if chunked { "cannot have" } else { "must have" }
            ));
        }
        self.check_layout()
    }

    /// Format 1 holds one dump; format 2 holds either one dump or exactly one pre-data, one
    /// or more adjacent data streams and one post-data, each with its restore step; format
    /// 3 is a physical backup ([`Manifest::check_physical`]).
    fn check_layout(&self) -> Result<(), String> {
        let physical = Manifest::format_physical(self.format)
            || self.kind == BackupKind::Physical
            || self.physical.is_some();
        if physical {
            return self.check_physical();
        }
        let count = |role| self.objects.iter().filter(|o| o.role == role).count();
        let (dumps, pre, data, post) = (
            count(ObjectRole::Dump),
            count(ObjectRole::PreData),
            count(ObjectRole::Data),
            count(ObjectRole::PostData),
        );
        if self.format <= MANIFEST_FORMAT_SINGLE || dumps > 0 {
            if dumps != 1 || pre + data + post > 0 {
                return Err("manifest lists no dump object (or more than one)".into());
            }
            return Ok(());
        }
        if pre != 1 || post != 1 || data == 0 {
            return Err(format!(
                "manifest lists {pre} pre-data, {data} data and {post} post-data objects (needs 1, at least 1, 1)"
            ));
        }
        let first = self
            .objects
            .iter()
            .position(|o| o.role == ObjectRole::Data)
            .unwrap_or(0);
        if self.objects[first..first + data]
            .iter()
            .any(|o| o.role != ObjectRole::Data)
        {
            return Err("the manifest's data streams are not listed together".into());
        }
        for o in &self.objects {
            let want = match o.role {
                ObjectRole::PreData => Some(STEP_PRE_DATA),
                ObjectRole::Data => Some(STEP_DATA),
                ObjectRole::PostData => Some(STEP_POST_DATA),
                _ => None,
            };
            if want.is_some() && o.restore_step != want {
                return Err(format!(
                    "object `{}` has restore step {:?}, expected {:?}",
                    o.key, o.restore_step, want
                ));
            }
        }
        Ok(())
    }

    /// Format 3 (5 when its base tar is in several objects) says `kind: "physical"`, has its [`Physical`] part with a range that does
    /// not run backwards, and exactly one base tar and one `backup_manifest`; a format 1 or
    /// 2 manifest never claims to be physical.
    fn check_physical(&self) -> Result<(), String> {
        if !Manifest::format_physical(self.format) {
            return Err(format!(
                "a format {} manifest cannot describe a physical backup",
                self.format
            ));
        }
        if self.kind != BackupKind::Physical {
            return Err(format!(
                "a format {} manifest must say kind \"physical\"",
                self.format
            ));
        }
        if let Some(o) = self
            .objects
            .iter()
            .find(|o| o.role != ObjectRole::BaseTar && !o.chunks.is_empty())
        {
            return Err(format!(
                "only the base tar may be stored as several objects, not `{}`",
                o.key
            ));
        }
        let Some(p) = &self.physical else {
            return Err("a physical backup's manifest has no WAL range (`physical`)".into());
        };
        if p.stop_lsn < p.start_lsn {
            return Err(format!(
                "its WAL range runs backwards ({}..{})",
                p.start_lsn, p.stop_lsn
            ));
        }
        let count = |role| self.objects.iter().filter(|o| o.role == role).count();
        let (tar, pg_manifest) = (
            count(ObjectRole::BaseTar),
            count(ObjectRole::BackupManifest),
        );
        if tar != 1 || pg_manifest != 1 || self.objects.len() != 2 {
            return Err(format!(
                "a physical backup lists {} objects, {tar} base tar and {pg_manifest} backup_manifest (needs exactly one of each)",
                self.objects.len()
            ));
        }
        Ok(())
    }

    /// [`Manifest::check`], and that the manifest stored at `key` describes the backup that
    /// key names: a manifest copied or renamed to another backup's place is refused, since the
    /// id in the key is what listing, `latest` and retention go by.
    pub fn check_at(&self, key: &str) -> Result<(), String> {
        self.check()?;
        let expected = crate::keys::manifest(&self.target, &self.id);
        if key != expected {
            return Err(format!(
                "it describes backup {} of target `{}` (whose manifest is `{expected}`)",
                self.id, self.target
            ));
        }
        Ok(())
    }
}

fn newer(format: u32) -> String {
    format!(
        "manifest format {format} is newer than this dr understands ({NEWEST_MANIFEST_FORMAT}); upgrade dr"
    )
}

/// What the dump holds, stored encrypted next to it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BackupDetails {
    pub format: u32,
    pub database: String,
    /// Exact rows per table, counted in the snapshot pg_dump used.
    pub tables: Vec<TableCount>,
    pub sequences: Vec<SequenceValue>,
    pub large_objects: u64,
    pub extensions: Vec<String>,
    /// Roles owning objects in the database: a restore target lacking them needs the globals.
    #[serde(default)]
    pub owners: Vec<String>,
    /// Every object of the backup written before these details (the archive's sections and
    /// the globals), as the manifest lists them: the manifest is cross-checked against it
    /// before a restore ([`crate::cross_check`]). Empty in backups made before dr recorded it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<ObjectRecord>,
    /// The WAL position the dump's snapshot corresponds to (the consistent point of the
    /// temporary logical slot that exported it): a recovery replaying exactly the WAL
    /// before it holds these counts. Only for targets with WAL on `wal_level = logical`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_lsn: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct TableCount {
    pub schema: String,
    pub name: String,
    pub rows: i64,
    /// Format 2: which data stream (`data-K`, K from 1) holds the table's rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<u32>,
}

impl TableCount {
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SequenceValue {
    pub schema: String,
    pub name: String,
    pub last_value: i64,
    pub is_called: bool,
}

impl BackupDetails {
    pub fn total_rows(&self) -> i64 {
        self.tables.iter().map(|t| t.rows).sum()
    }
    pub fn counts(&self) -> BTreeMap<String, i64> {
        self.tables
            .iter()
            .map(|t| (t.qualified(), t.rows))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        let id: BackupId = "20261122T030000Z".parse().expect("id");
        Manifest {
            format: MANIFEST_FORMAT,
            id,
            target: "app".into(),
            started_at: id.time(),
            finished_at: id.time(),
            server_version: "15.18".into(),
            server_major: 15,
            pg_dump_version: "pg_dump (PostgreSQL) 15.18".into(),
            dr_version: "0.1.0".into(),
            database_bytes: 1,
            compression: "zstd".into(),
            encryption: "age".into(),
            recipients: vec![],
            objects: vec![ObjectRecord {
                role: ObjectRole::Dump,
                key: "app/20261122T030000Z/dump.zst.age".into(),
                bytes: 10,
                sha256: "a".repeat(64),
                raw_bytes: 20,
                part_bytes: None,
                restore_step: None,
                chunks: Vec::new(),
            }],
            kind: BackupKind::Logical,
            physical: None,
        }
    }

    fn sections(data: u32) -> Manifest {
        let mut m = sample();
        let rec = |role, name: &str, step| ObjectRecord {
            role,
            key: format!("app/20261122T030000Z/{name}"),
            bytes: 10,
            sha256: "b".repeat(64),
            raw_bytes: 20,
            part_bytes: None,
            restore_step: Some(step),
            chunks: Vec::new(),
        };
        m.objects = vec![rec(
            ObjectRole::PreData,
            crate::keys::PRE_DATA,
            STEP_PRE_DATA,
        )];
        for k in 1..=data {
            m.objects.push(rec(
                ObjectRole::Data,
                &crate::keys::data_stream(k),
                STEP_DATA,
            ));
        }
        m.objects.push(rec(
            ObjectRole::PostData,
            crate::keys::POST_DATA,
            STEP_POST_DATA,
        ));
        m
    }

    #[test]
    fn sections_are_laid_out_in_restore_order() {
        let m = sections(3);
        assert!(m.check().is_ok(), "{:?}", m.check());
        let Some(Layout::Sections {
            pre_data,
            data,
            post_data,
        }) = m.layout()
        else {
            panic!("sections expected");
        };
        assert!(pre_data.key.ends_with("pre-data.zst.age"));
        assert_eq!(data.len(), 3);
        assert!(data[2].key.ends_with("data-3.zst.age"));
        assert!(post_data.key.ends_with("post-data.zst.age"));
        assert_eq!(m.archive_raw_bytes(), 100);
        assert_eq!(m.data_streams(), 3);
        let keys: Vec<_> = m.archive_objects().iter().map(|o| o.key.clone()).collect();
        assert_eq!(keys.len(), 5);
        assert!(keys[0].ends_with("pre-data.zst.age") && keys[4].ends_with("post-data.zst.age"));
    }

    /// `data-1` stored as three objects of 4 + 4 + 2 bytes.
    fn chunked() -> Manifest {
        let mut m = sections(2);
        m.format = MANIFEST_FORMAT_CHUNKED;
        m.objects[1].chunks = chunks_of(&m.objects[1].key, &[4, 4, 2]);
        m
    }

    /// `first` and its next objects (`.0002`, …), of these sizes.
    fn chunks_of(first: &str, sizes: &[u64]) -> Vec<Chunk> {
        sizes
            .iter()
            .zip(1u32..)
            .map(|(&bytes, n)| Chunk {
                key: if n == 1 {
                    first.to_string()
                } else {
                    crate::keys::chunk(first, n)
                },
                bytes,
                sha256: "c".repeat(64),
            })
            .collect()
    }

    #[test]
    fn a_section_in_several_objects_is_format_4_and_lists_them_in_order() {
        let m = chunked();
        m.check().expect("valid");
        assert_eq!(Manifest::dump_format(&m.objects), MANIFEST_FORMAT_CHUNKED);
        assert_eq!(Manifest::dump_format(&sections(2).objects), MANIFEST_FORMAT);
        let objects = m.objects[1].stored_objects();
        assert_eq!(
            objects,
            [
                ("app/20261122T030000Z/data-1.zst.age", 4),
                ("app/20261122T030000Z/data-1.zst.age.0002", 4),
                ("app/20261122T030000Z/data-1.zst.age.0003", 2)
            ]
        );
        assert_eq!(
            m.objects[2].stored_objects(),
            [("app/20261122T030000Z/data-2.zst.age", 10)]
        );
        let json = serde_json::to_vec(&m).expect("json");
        assert_eq!(Manifest::from_json(&json).expect("parse"), m);
        // A stream in one object is written as before: no `chunks`, format 2.
        let plain = serde_json::to_string(&sections(1)).expect("json");
        assert!(!plain.contains("chunks"), "{plain}");
    }

    #[test]
    fn malformed_chunks_are_refused() {
        let mut m = chunked();
        m.format = MANIFEST_FORMAT;
        assert!(m.check().expect_err("format 2").contains("cannot have"));
        let mut m = sections(1);
        m.format = MANIFEST_FORMAT_CHUNKED;
        assert!(m
            .check()
            .expect_err("nothing chunked")
            .contains("must have"));
        let mut m = chunked();
        m.objects[1].chunks[2].bytes = 3;
        assert!(m.check().expect_err("sizes").contains("hold 11 bytes"));
        let mut m = chunked();
        m.objects[1].chunks[1].key = "other/20261122T030000Z/x".into();
        assert!(m.check().expect_err("outside").contains("lies outside"));
        let mut m = chunked();
        m.objects[1].chunks.swap(0, 1);
        assert!(m.check().expect_err("first").contains("the first is"));
        let mut m = chunked();
        m.objects[1].chunks[0].sha256 = "x".into();
        assert!(m.check().expect_err("digest").contains("no valid sha256"));
    }

    #[test]
    fn incomplete_or_mixed_sections_are_refused() {
        let mut m = sections(2);
        m.objects.retain(|o| o.role != ObjectRole::PostData);
        assert!(m.check().is_err());
        let mut m = sections(2);
        m.objects.retain(|o| o.role != ObjectRole::Data);
        assert!(m.check().is_err());
        let mut m = sections(2);
        m.objects[1].restore_step = Some(STEP_POST_DATA);
        assert!(m.check().expect_err("step").contains("restore step"));
        let mut m = sections(2);
        m.objects.push(sample().objects[0].clone());
        assert!(m.check().is_err());
        // Data streams apart from each other cannot be named as one slice.
        let mut m = sections(2);
        m.objects.swap(2, 3);
        assert!(m.check().is_err());
    }

    #[test]
    fn a_format_1_manifest_still_reads_as_one_archive() {
        let json = r#"{"format":1,"id":"20261122T030000Z","target":"app",
            "started_at":"2026-11-22T03:00:00Z","finished_at":"2026-11-22T03:00:09Z",
            "server_version":"15.18","server_major":15,"pg_dump_version":"pg_dump (PostgreSQL) 15.18",
            "dr_version":"0.1.0","database_bytes":1,"compression":"zstd","encryption":"age",
            "recipients":[],"objects":[{"role":"dump","key":"app/20261122T030000Z/dump.zst.age",
            "bytes":10,"sha256":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "raw_bytes":20,"part_bytes":8388608}]}"#;
        let m: Manifest = serde_json::from_str(json).expect("v1");
        assert!(m.check().is_ok());
        assert!(matches!(m.layout(), Some(Layout::Single(_))));
        assert_eq!(m.archive_raw_bytes(), 20);
        assert_eq!(m.data_streams(), 1);
    }

    #[test]
    fn manifest_round_trips_and_checks() {
        let m = sample();
        let json = serde_json::to_string(&m).expect("json");
        let back: Manifest = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, m);
        assert!(m.check().is_ok());
    }

    #[test]
    fn foreign_keys_and_newer_formats_are_refused() {
        let mut m = sample();
        m.objects[0].key = "other/x".into();
        assert!(m.check().is_err());
        let mut m = sample();
        m.format = NEWEST_MANIFEST_FORMAT + 1;
        assert!(m.check().expect_err("newer").contains("upgrade"));
    }

    fn physical() -> Manifest {
        let mut m = sample();
        m.format = MANIFEST_FORMAT_PHYSICAL;
        m.kind = BackupKind::Physical;
        m.pg_dump_version = String::new();
        let rec = |role, name: &str| ObjectRecord {
            role,
            key: format!("app/20261122T030000Z/{name}"),
            bytes: 10,
            sha256: "c".repeat(64),
            raw_bytes: 20,
            part_bytes: None,
            restore_step: None,
            chunks: Vec::new(),
        };
        m.objects = vec![
            rec(ObjectRole::BaseTar, crate::keys::BASE_TAR),
            rec(ObjectRole::BackupManifest, crate::keys::BACKUP_MANIFEST),
        ];
        m.physical = Some(Physical {
            system_identifier: "7715265767638906800".into(),
            timeline: 1,
            start_lsn: "0/2000028".parse().expect("lsn"),
            stop_lsn: "0/2000100".parse().expect("lsn"),
            start_segment: "000000010000000000000002".into(),
            stop_segment: "000000010000000000000002".into(),
            segment_bytes: 16 << 20,
            checkpoint_lsn: "0/2000060".parse().expect("lsn"),
            pg_basebackup_version: "pg_basebackup (PostgreSQL) 15.18".into(),
            backup_label: "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n".into(),
        });
        m
    }

    #[test]
    fn a_physical_manifest_round_trips_as_format_3() {
        let m = physical();
        assert!(m.check().is_ok(), "{:?}", m.check());
        let json = serde_json::to_string_pretty(&m).expect("json");
        for want in [
            r#""format": 3"#,
            r#""kind": "physical""#,
            r#""role": "base_tar""#,
            r#""role": "backup_manifest""#,
            r#""start_lsn": "0/2000028""#,
            r#""stop_lsn": "0/2000100""#,
            r#""segment_bytes": 16777216"#,
        ] {
            assert!(json.contains(want), "{want} in {json}");
        }
        assert!(!json.contains("pg_dump_version"), "{json}");
        let back = Manifest::from_json(json.as_bytes()).expect("parse");
        assert_eq!(back, m);
        // Not a dump: no archive layout for a logical restore to misread.
        assert_eq!(back.layout(), None);
        assert!(back.archive_objects().is_empty());
        // A logical manifest says nothing of kinds: byte for byte what older dr wrote.
        let logical = serde_json::to_string(&sample()).expect("json");
        assert!(
            !logical.contains("kind") && !logical.contains("physical"),
            "{logical}"
        );
    }

    #[test]
    fn a_base_tar_in_several_objects_is_format_5() {
        let mut m = physical();
        m.objects[0].chunks = chunks_of(&m.objects[0].key, &[6, 4]);
        assert_eq!(
            Manifest::physical_format(&m.objects),
            MANIFEST_FORMAT_PHYSICAL_CHUNKED
        );
        assert_eq!(
            Manifest::physical_format(&physical().objects),
            MANIFEST_FORMAT_PHYSICAL
        );
        // Format 3 cannot hold it: an older dr would unpack the first object alone.
        assert!(m.check().expect_err("format 3").contains("cannot have"));
        m.format = MANIFEST_FORMAT_PHYSICAL_CHUNKED;
        m.check().expect("valid");
        let json = serde_json::to_vec(&m).expect("json");
        assert_eq!(Manifest::from_json(&json).expect("parse"), m);
        assert_eq!(
            m.objects[0].stored_objects(),
            [
                ("app/20261122T030000Z/base.tar.zst.age", 6),
                ("app/20261122T030000Z/base.tar.zst.age.0002", 4)
            ]
        );
        // Format 4 is a dump's; a physical backup in it is refused.
        let mut dump_format = m.clone();
        dump_format.format = MANIFEST_FORMAT_CHUNKED;
        assert!(dump_format
            .check()
            .expect_err("format 4")
            .contains("cannot describe a physical backup"));
        // A dump cannot claim format 5.
        let mut dump = chunked();
        dump.format = MANIFEST_FORMAT_PHYSICAL_CHUNKED;
        assert!(dump.check().is_err());
        // Only the base tar is stored in several objects.
        let mut pg_manifest = physical();
        pg_manifest.format = MANIFEST_FORMAT_PHYSICAL_CHUNKED;
        pg_manifest.objects[1].chunks = chunks_of(&pg_manifest.objects[1].key, &[10]);
        assert!(pg_manifest
            .check()
            .expect_err("backup_manifest")
            .contains("only the base tar"));
    }

    #[test]
    fn a_physical_manifest_must_be_whole() {
        let mut m = physical();
        m.format = MANIFEST_FORMAT;
        assert!(m.check().expect_err("format 2").contains("format 2"));
        let mut m = physical();
        m.kind = BackupKind::Logical;
        assert!(m.check().expect_err("kind").contains("physical"));
        let mut m = physical();
        m.physical = None;
        assert!(m.check().expect_err("range").contains("WAL range"));
        let mut m = physical();
        m.objects.pop();
        assert!(m.check().expect_err("objects").contains("backup_manifest"));
        let mut m = physical();
        m.objects.push(sample().objects[0].clone());
        assert!(m.check().is_err());
        let mut m = physical();
        if let Some(p) = &mut m.physical {
            p.stop_lsn = "0/1000000".parse().expect("lsn");
        }
        assert!(m.check().expect_err("backwards").contains("backwards"));
        // A dump's manifest claiming a physical part is not a dump.
        let mut m = sample();
        m.physical = physical().physical;
        assert!(m.check().is_err());
    }

    #[test]
    fn a_newer_format_is_refused_as_newer_not_as_bad_json() {
        // A future manifest with roles and fields this dr does not know.
        let json = r#"{"format":6,"id":"20261122T030000Z","target":"app","kind":"incremental",
            "objects":[{"role":"block_delta"}]}"#;
        let e = Manifest::from_json(json.as_bytes()).expect_err("newer");
        assert!(
            e.contains("format 6 is newer") && e.contains("upgrade dr"),
            "{e}"
        );
        // What a dr that knows only format 2 does with a physical backup's manifest: its
        // check refuses every format above 2 (the rule this one keeps for above 3).
        let m = physical();
        assert!(m.format > MANIFEST_FORMAT);
        let e = Manifest::from_json(b"{\"format\":3,").expect_err("cut");
        assert!(e.contains("not valid JSON"), "{e}");
    }

    #[test]
    fn a_manifest_must_sit_at_its_own_key() {
        let m = sample();
        assert!(m.check_at("app/20261122T030000Z/manifest.json").is_ok());
        let e = m
            .check_at("app/20261222T030000Z/manifest.json")
            .expect_err("moved");
        assert!(e.contains("20261122T030000Z"), "{e}");
        assert!(m.check_at("other/20261122T030000Z/manifest.json").is_err());
    }
}
