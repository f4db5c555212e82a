//! The record of one archived WAL file (`.rec`): the commit point of its data object.
//!
//! A WAL data object is `age(zstd(raw))` under a random name; the record, created only if
//! absent, names the one data object it vouches for and the digests of both forms. The
//! record is one object: line 1 the exact JSON that was signed, then the SSHSIG armour of
//! that line (namespace `dr-backup@v1`, as manifests), so a shell can check it (the signed
//! line has no newline; runbooks/break-glass-pitr.md):
//! `printf %s "$(head -n 1 X.rec)" > r.json; sed 1d X.rec > r.sig;
//! ssh-keygen -Y verify … -s r.sig < r.json`.

use serde::{Deserialize, Serialize};

use super::{Lsn, SegmentSize, WalFile};

pub const RECORD_FORMAT: u32 = 1;

/// What dr knows about one archived WAL file, as signed by the host that pushed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalRecord {
    pub format: u32,
    /// `segment`, `partial`, `history` or `backup`.
    pub kind: WalKind,
    /// The file's name as PostgreSQL knows it (`%f`).
    pub name: String,
    /// The data object's key, relative to the repository prefix.
    pub key: String,
    /// PostgreSQL's system identifier (decimal, as `pg_controldata` prints it); empty for
    /// history and backup files, which carry no page header.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub system_identifier: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_major: Option<u32>,
    pub timeline: u32,
    /// Segments and partials: the first position the file holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_lsn: Option<Lsn>,
    /// Partials: the end of the valid WAL in it (the first page that is not valid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_lsn: Option<Lsn>,
    /// Partials: the segment will never complete (a timeline's end), so it is kept like a
    /// segment and never replaced.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub r#final: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_bytes: Option<u64>,
    /// SHA-256 of the file as PostgreSQL wrote it (hex).
    pub raw_sha256: String,
    pub raw_bytes: u64,
    /// SHA-256 and size of the stored object (hex).
    pub sha256: String,
    pub bytes: u64,
    pub recipients: Vec<String>,
    /// History files: where each earlier timeline ended (`"switches"`), parent first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub switches: Vec<Switch>,
    /// RFC 3339, UTC.
    pub pushed_at: String,
    pub pushed_by: String,
    pub dr_version: String,
    /// `archive` (archive_command), `stream` (pg_receivewal) or `backup`.
    pub source: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WalKind {
    Segment,
    Partial,
    History,
    Backup,
}

impl WalKind {
    pub fn of(file: WalFile) -> WalKind {
        match file {
            WalFile::Segment(_) => WalKind::Segment,
            WalFile::Partial(_) => WalKind::Partial,
            WalFile::History(_) => WalKind::History,
            WalFile::Backup(..) => WalKind::Backup,
        }
    }
}

/// One line of a timeline history file: `timeline` ended at `lsn` (and its child began).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Switch {
    pub timeline: u32,
    pub lsn: Lsn,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("WAL record `{key}` is not valid: {reason}")]
    Invalid { key: String, reason: String },
}

impl WalRecord {
    /// The file this record is for.
    pub fn file(&self) -> Option<WalFile> {
        self.name.parse().ok()
    }

    pub fn segment_size(&self) -> Option<SegmentSize> {
        self.segment_bytes.and_then(|b| SegmentSize::new(b).ok())
    }

    /// The exact bytes that are signed: one line of JSON, no trailing newline.
    pub fn document(&self) -> Vec<u8> {
        // A struct of strings and numbers always serialises.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A `.rec` object: the signed JSON line and its signature armour, joined.
pub fn join(document: &[u8], signature: Option<&str>) -> Vec<u8> {
    let mut out = document.to_vec();
    out.push(b'\n');
    if let Some(sig) = signature {
        out.extend_from_slice(sig.as_bytes());
        if !sig.ends_with('\n') {
            out.push(b'\n');
        }
    }
    out
}

/// A `.rec` object taken apart: the record, the exact signed line, the signature (if any).
pub type Split<'a> = (WalRecord, &'a [u8], Option<&'a [u8]>);

/// Split a `.rec` object stored at `key`.
pub fn split<'a>(key: &str, stored: &'a [u8]) -> Result<Split<'a>, RecordError> {
    let invalid = |reason: String| RecordError::Invalid {
        key: key.to_string(),
        reason,
    };
    let (document, rest) = match stored.iter().position(|&b| b == b'\n') {
        Some(i) => (&stored[..i], &stored[i + 1..]),
        None => (stored, &stored[stored.len()..]),
    };
    let record: WalRecord =
        serde_json::from_slice(document).map_err(|e| invalid(format!("line 1: {e}")))?;
    if record.format > RECORD_FORMAT {
        return Err(invalid(format!(
            "format {} is newer than this dr understands ({RECORD_FORMAT}); upgrade dr",
            record.format
        )));
    }
    let signature = (!rest.iter().all(u8::is_ascii_whitespace)).then_some(rest);
    Ok((record, document, signature))
}

/// Keys of the WAL archive, relative to the repository prefix (see `docs/design/PITR.md`).
pub mod keys {
    use super::super::{SegmentName, WalFile};

    /// `{target}/wal/`
    pub fn root(target: &str) -> String {
        format!("{target}/wal/")
    }

    /// The folder of a file: `{target}/wal/{TTTTTTTTLLLLLLLL}/`, `…/wal/history/`,
    /// `…/wal/backup/`.
    pub fn folder(target: &str, file: WalFile) -> String {
        match file {
            WalFile::Segment(s) | WalFile::Partial(s) => format!("{target}/wal/{}/", s.prefix()),
            WalFile::History(_) => format!("{target}/wal/history/"),
            WalFile::Backup(..) => format!("{target}/wal/backup/"),
        }
    }

    /// The record (commit point) of `file`.
    pub fn record(target: &str, file: WalFile) -> String {
        format!("{}{file}.rec", folder(target, file))
    }

    /// A data object of `file`; `nonce` (16 hex digits) makes two pushers' objects differ.
    pub fn data(target: &str, file: WalFile, nonce: &str) -> String {
        format!("{}{file}.{nonce}.zst.age", folder(target, file))
    }

    /// The folder of segments of `timeline` in log id `log` (one LIST for 4 GiB of WAL).
    pub fn log_folder(target: &str, segment: SegmentName) -> String {
        format!("{target}/wal/{}/", segment.prefix())
    }

    /// The first cluster to archive here: system identifier, major, segment size.
    pub fn identity(target: &str) -> String {
        format!("{target}/wal/identity.json")
    }

    /// The file a record key is for: `…/000000010000000A00000042.rec` → the segment.
    pub fn file_of_record(key: &str) -> Option<WalFile> {
        key.rsplit('/').next()?.strip_suffix(".rec")?.parse().ok()
    }
}

/// Which cluster a target's WAL archive belongs to: written once by the first push, stream or
/// physical backup (create-if-absent), signed like manifests (`identity.json.sig`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalIdentity {
    pub format: u32,
    pub system_identifier: String,
    pub server_major: u32,
    pub segment_bytes: u64,
    pub created_at: String,
    pub created_by: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> WalRecord {
        WalRecord {
            format: RECORD_FORMAT,
            kind: WalKind::Segment,
            name: "000000010000000A00000042".into(),
            key: keys::data(
                "app",
                "000000010000000A00000042".parse().expect("valid"),
                "9f3c00112233aabb",
            ),
            system_identifier: "7301234567890123456".into(),
            server_major: Some(17),
            timeline: 1,
            start_lsn: Some("A/42000000".parse().expect("valid")),
            end_lsn: None,
            r#final: false,
            segment_bytes: Some(16 << 20),
            raw_sha256: "aa".repeat(32),
            raw_bytes: 16 << 20,
            sha256: "bb".repeat(32),
            bytes: 1_234_567,
            recipients: vec!["age1xyz".into()],
            switches: vec![],
            pushed_at: "2026-12-03T14:05:40Z".into(),
            pushed_by: "db1".into(),
            dr_version: "0.1.0".into(),
            source: "archive".into(),
        }
    }

    #[test]
    fn keys_follow_the_layout() {
        let seg: WalFile = "000000010000000A00000042".parse().expect("valid");
        assert_eq!(
            keys::record("app", seg),
            "app/wal/000000010000000A/000000010000000A00000042.rec"
        );
        assert_eq!(
            keys::data("app", seg, "9f3c00112233aabb"),
            "app/wal/000000010000000A/000000010000000A00000042.9f3c00112233aabb.zst.age"
        );
        let partial: WalFile = "000000010000000A00000042.partial".parse().expect("valid");
        assert_eq!(
            keys::record("app", partial),
            "app/wal/000000010000000A/000000010000000A00000042.partial.rec"
        );
        assert_eq!(
            keys::record("app", WalFile::History(2)),
            "app/wal/history/00000002.history.rec"
        );
        let backup: WalFile = "000000010000000A00000042.00000028.backup"
            .parse()
            .expect("valid");
        assert_eq!(
            keys::record("app", backup),
            "app/wal/backup/000000010000000A00000042.00000028.backup.rec"
        );
        for file in [seg, partial, WalFile::History(2), backup] {
            assert_eq!(keys::file_of_record(&keys::record("app", file)), Some(file));
        }
        assert_eq!(keys::file_of_record(&keys::data("app", seg, "00")), None);
        assert_eq!(keys::identity("app"), "app/wal/identity.json");
    }

    #[test]
    fn a_record_joins_and_splits_exactly() {
        let r = record();
        let doc = r.document();
        assert!(!doc.contains(&b'\n'));
        let sig = "-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----\n";
        let stored = join(&doc, Some(sig));
        let (back, line, signature) = split("k", &stored).expect("valid");
        assert_eq!(back, r);
        assert_eq!(line, &doc[..]);
        assert_eq!(signature, Some(sig.as_bytes()));
        assert_eq!(
            back.file(),
            Some("000000010000000A00000042".parse().expect("valid"))
        );

        let unsigned = join(&doc, None);
        let (_, line, signature) = split("k", &unsigned).expect("valid");
        assert_eq!(line, &doc[..]);
        assert_eq!(signature, None);
    }

    #[test]
    fn damaged_or_newer_records_are_refused_by_name() {
        let e = split("app/wal/x.rec", b"{not json\nsig").expect_err("must fail");
        assert!(e.to_string().contains("app/wal/x.rec"), "{e}");
        let mut newer = record();
        newer.format = RECORD_FORMAT + 1;
        let e = split("k", &join(&newer.document(), None)).expect_err("must fail");
        assert!(e.to_string().contains("upgrade dr"), "{e}");
    }
}
