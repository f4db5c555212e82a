//! `pg_basebackup` for physical base backups: its command line, what its stderr says, the tar
//! stream it writes to stdout (read in-line by [`TarTap`]: `backup_label` and
//! `backup_manifest` are copied out as they pass, data files are never buffered), the
//! `backup_label` and `backup_manifest` formats, and the SQL a physical backup asks first.
//!
//! What real servers print (captured from PostgreSQL 15 and 17, `testdata/basebackup/`):
//!
//! - With `-X none`, `-v` prints **no** "write-ahead log start point" / "end point" lines
//!   (those come only with `-X fetch|stream`). The start and stop LSN are read from the
//!   tar's `backup_label` (`START WAL LOCATION`, `START TIMELINE`) and its `backup_manifest`
//!   (`WAL-Ranges`, authoritative); [`read_stderr`] still takes the lines when present.
//! - With `-D -` (tar to stdout), pg_basebackup appends `backup_manifest` to the tar as its
//!   last member (PostgreSQL ≥ 13).
//! - Without `NOWAIT` (which pg_basebackup sends only with `-X fetch|stream`), the server's
//!   `pg_backup_stop` waits until the stop segment is archived when `archive_mode` is on,
//!   printing `NOTICE:  base backup done, waiting for required WAL segments to be archived`
//!   and, every 60 s, a WARNING; it waits forever if archiving fails. The tar stream stalls
//!   before `backup_manifest` meanwhile. With `archive_mode` off it says `NOTICE:  WAL
//!   archiving is not enabled; …` and returns at once: the WAL must come from elsewhere
//!   (`dr wal stream`).

use std::io::{self, Read};
use std::sync::{Arc, Mutex};

use crate::{ConnInfo, PgError};

/// The arguments of `pg_basebackup` for a base backup streamed to stdout: tar format, no
/// WAL (it comes from the archive), a fast checkpoint, a CRC32C backup manifest (what
/// `pg_verifybackup` checks; SHA-256 would cost CPU on every byte for no gain here: dr
/// digests the stored stream itself). The connection travels in `PG*` variables; `-d`
/// carries only the non-secret options (keepalives), and pg_basebackup asks for a
/// replication connection itself.
pub fn basebackup_args(conn: &ConnInfo, label: &str) -> Vec<String> {
    vec![
        "--pgdata=-".into(),
        "--format=tar".into(),
        "--wal-method=none".into(),
        "--checkpoint=fast".into(),
        "--manifest-checksums=CRC32C".into(),
        "--no-password".into(),
        "--verbose".into(),
        format!("--label={label}"),
        format!("--dbname={}", conn.dbname_arg()),
    ]
}

/// What pg_basebackup says on stderr when `pg_backup_stop` waits for the stop segment to be
/// archived (`archive_mode` on).
pub const WAITING_FOR_ARCHIVE: &str = "waiting for required WAL segments to be archived";

/// What pg_basebackup says on stderr when the server does not archive (`archive_mode` off).
pub const ARCHIVING_NOT_ENABLED: &str = "WAL archiving is not enabled";

/// A text pg_basebackup produced that dr cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read the base backup's {what}: {detail}")]
pub struct FormatError {
    pub what: &'static str,
    pub detail: String,
}

fn format_error(what: &'static str, detail: impl Into<String>) -> FormatError {
    FormatError {
        what,
        detail: detail.into(),
    }
}

/// What pg_basebackup's `-v` stderr told.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StderrFacts {
    /// "write-ahead log start point: 0/2000028 on timeline 1" (only with `-X fetch|stream`).
    pub start: Option<(String, u32)>,
    /// "write-ahead log end point: 0/2000100".
    pub end: Option<String>,
    /// The server waited for the stop segment to be archived (`archive_mode` on).
    pub waited_for_archive: bool,
    /// The server does not archive (`archive_mode` off): nothing waited for the WAL.
    pub archiving_not_enabled: bool,
}

/// Read pg_basebackup's stderr lines.
pub fn read_stderr<'a>(lines: impl IntoIterator<Item = &'a str>) -> StderrFacts {
    let mut facts = StderrFacts::default();
    for line in lines {
        if let Some(rest) = line.split("write-ahead log start point: ").nth(1) {
            let mut words = rest.split_whitespace();
            let lsn = words.next().unwrap_or_default().to_string();
            // "… on timeline N"
            let timeline = words.nth(2).and_then(|t| t.parse().ok());
            if let Some(t) = timeline {
                facts.start = Some((lsn, t));
            }
        } else if let Some(rest) = line.split("write-ahead log end point: ").nth(1) {
            facts.end = rest.split_whitespace().next().map(str::to_string);
        } else if line.contains(WAITING_FOR_ARCHIVE) {
            facts.waited_for_archive = true;
        } else if line.contains(ARCHIVING_NOT_ENABLED) {
            facts.archiving_not_enabled = true;
        }
    }
    facts
}

/// The next step for a pg_basebackup that could not connect or start, from its stderr.
pub fn failure_hint(stderr: &str) -> Option<String> {
    if stderr.contains("permission denied to start WAL sender")
        || stderr.contains("must be superuser or replication role")
    {
        return Some("the role needs the REPLICATION attribute: `ALTER ROLE <user> REPLICATION;` (as a superuser)".into());
    }
    if stderr.contains("no pg_hba.conf entry for replication connection") {
        return Some("allow replication connections for this role in pg_hba.conf, e.g. `host replication <user> <client address>/32 scram-sha-256`, then `SELECT pg_reload_conf();`".into());
    }
    if stderr.contains("number of requested standby connections exceeds")
        || stderr.contains("max_wal_senders")
    {
        return Some("raise max_wal_senders on the server (`ALTER SYSTEM SET max_wal_senders = 10;`, then restart it)".into());
    }
    if stderr.contains("wal_level") {
        return Some("set wal_level to replica: `ALTER SYSTEM SET wal_level = 'replica';`, then restart the server".into());
    }
    None
}

/// The `backup_label` file of a base backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupLabel {
    /// `START WAL LOCATION: 0/2000028 (file 000000010000000000000002)`: the LSN.
    pub start_lsn: String,
    /// … and the segment named there.
    pub start_segment: String,
    /// `CHECKPOINT LOCATION`
    pub checkpoint_lsn: String,
    /// `START TIMELINE`
    pub timeline: u32,
    /// `BACKUP FROM`: `primary` or `standby`.
    pub backup_from: String,
    /// `START TIME`, as written (`2026-12-04 02:11:37 UTC`).
    pub start_time: String,
    /// `LABEL`
    pub label: String,
}

impl BackupLabel {
    pub fn parse(text: &str) -> Result<BackupLabel, FormatError> {
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
                .map(str::trim)
                .ok_or_else(|| format_error("backup_label", format!("no `{name}` line")))
        };
        let start = field("START WAL LOCATION")?;
        // "0/2000028 (file 000000010000000000000002)"
        let (start_lsn, rest) = start
            .split_once(' ')
            .ok_or_else(|| format_error("backup_label", format!("START WAL LOCATION `{start}`")))?;
        let start_segment = rest
            .trim()
            .strip_prefix("(file ")
            .and_then(|s| s.strip_suffix(')'))
            .ok_or_else(|| format_error("backup_label", format!("START WAL LOCATION `{start}`")))?;
        let timeline = field("START TIMELINE")?;
        Ok(BackupLabel {
            start_lsn: start_lsn.to_string(),
            start_segment: start_segment.to_string(),
            checkpoint_lsn: field("CHECKPOINT LOCATION")?.to_string(),
            timeline: timeline.parse().map_err(|_| {
                format_error("backup_label", format!("START TIMELINE `{timeline}`"))
            })?,
            backup_from: field("BACKUP FROM").unwrap_or("primary").to_string(),
            start_time: field("START TIME").unwrap_or_default().to_string(),
            label: field("LABEL").unwrap_or_default().to_string(),
        })
    }
}

/// What dr reads of PostgreSQL's `backup_manifest` (the file list stays for pg_verifybackup).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestSummary {
    /// `PostgreSQL-Backup-Manifest-Version`: 1 (PostgreSQL 13-16) or 2 (17+).
    pub version: u32,
    /// `System-Identifier` (version 2 only).
    pub system_identifier: Option<u64>,
    pub files: usize,
    /// `WAL-Ranges`: the WAL needed to make the backup consistent, oldest first; more than
    /// one only for a backup taken on a standby whose timeline changed meanwhile.
    pub wal_ranges: Vec<WalRange>,
}

/// One entry of `WAL-Ranges`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct WalRange {
    #[serde(rename = "Timeline")]
    pub timeline: u32,
    #[serde(rename = "Start-LSN")]
    pub start_lsn: String,
    #[serde(rename = "End-LSN")]
    pub end_lsn: String,
}

impl ManifestSummary {
    pub fn parse(bytes: &[u8]) -> Result<ManifestSummary, FormatError> {
        #[derive(serde::Deserialize)]
        struct Raw {
            #[serde(rename = "PostgreSQL-Backup-Manifest-Version")]
            version: u32,
            #[serde(rename = "System-Identifier", default)]
            system_identifier: Option<u64>,
            #[serde(rename = "Files", default)]
            files: Vec<serde::de::IgnoredAny>,
            #[serde(rename = "WAL-Ranges", default)]
            wal_ranges: Vec<WalRange>,
        }
        let raw: Raw = serde_json::from_slice(bytes)
            .map_err(|e| format_error("backup_manifest", e.to_string()))?;
        if raw.wal_ranges.is_empty() {
            return Err(format_error("backup_manifest", "it lists no WAL-Ranges"));
        }
        Ok(ManifestSummary {
            version: raw.version,
            system_identifier: raw.system_identifier,
            files: raw.files.len(),
            wal_ranges: raw.wal_ranges,
        })
    }
}

/// The names of the cluster's tablespaces besides `pg_default` and `pg_global`: a base
/// backup to stdout cannot hold them (pg_basebackup refuses `-D -` with more than one).
pub async fn extra_tablespaces(client: &tokio_postgres::Client) -> Result<Vec<String>, PgError> {
    let rows = client
        .query(
            "select spcname::text from pg_tablespace where spcname not in ('pg_default', 'pg_global') order by 1",
            &[],
        )
        .await
        .map_err(|e| PgError::query("listing tablespaces", e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The size of every database of the cluster (what a base backup roughly holds, without WAL
/// and server files), to size upload parts.
pub async fn cluster_size(client: &tokio_postgres::Client) -> Result<u64, PgError> {
    let row = client
        .query_one(
            "select coalesce(sum(pg_database_size(oid)), 0)::bigint from pg_database where datallowconn",
            &[],
        )
        .await
        .map_err(|e| PgError::query("reading the cluster's size", e))?;
    let bytes: i64 = row.get(0);
    Ok(u64::try_from(bytes).unwrap_or(0))
}

/// The cluster as a physical backup records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterIdentity {
    /// `pg_control_system().system_identifier`, as text (a u64 does not fit JSON numbers).
    pub system_identifier: String,
    /// `wal_segment_size` in bytes.
    pub segment_bytes: u64,
    /// A standby (base backups of standbys are not supported yet).
    pub in_recovery: bool,
}

impl ClusterIdentity {
    pub async fn query(client: &tokio_postgres::Client) -> Result<ClusterIdentity, PgError> {
        let row = client
            .query_one(
                "select system_identifier::text, \
                 (select setting::bigint from pg_settings where name = 'wal_segment_size'), \
                 pg_is_in_recovery() from pg_control_system()",
                &[],
            )
            .await
            .map_err(|e| PgError::query("reading the system identifier", e))?;
        let segment: i64 = row.get(1);
        Ok(ClusterIdentity {
            system_identifier: row.get(0),
            segment_bytes: u64::try_from(segment).unwrap_or(0),
            in_recovery: row.get(2),
        })
    }
}

/// The largest member [`TarTap`] copies out. A `backup_manifest` takes ~150 bytes per file:
/// this is over a million files.
pub const MAX_CAPTURE: u64 = 256 << 20;

/// What [`TarTap`] saw of the tar stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TarFindings {
    pub backup_label: Option<Vec<u8>>,
    pub backup_manifest: Option<Vec<u8>>,
    /// Members seen (files, directories, links).
    pub members: u64,
    /// The end-of-archive marker (a zero block) was seen: the stream is complete.
    pub ended: bool,
}

/// Passes a tar stream through unchanged while following its 512-byte headers, and copies
/// out the members `backup_label` and `backup_manifest`. A bad header checksum is a read
/// error: pg_basebackup's stdout is not what dr thinks it is.
pub struct TarTap<R> {
    inner: R,
    findings: Arc<Mutex<TarFindings>>,
    /// Bytes read so far (for messages).
    offset: u64,
    header: Vec<u8>,
    /// Data bytes of the current member still to come, and padding after them.
    data_left: u64,
    padding_left: u64,
    capture: Option<(Member, Vec<u8>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Member {
    Label,
    Manifest,
}

impl<R: Read> TarTap<R> {
    /// The tap, and where its findings appear (complete once the stream is read to its end).
    pub fn new(inner: R) -> (TarTap<R>, Arc<Mutex<TarFindings>>) {
        let findings = Arc::new(Mutex::new(TarFindings::default()));
        let tap = TarTap {
            inner,
            findings: Arc::clone(&findings),
            offset: 0,
            header: Vec::with_capacity(512),
            data_left: 0,
            padding_left: 0,
            capture: None,
        };
        (tap, findings)
    }

    fn observe(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            if self.data_left > 0 {
                let n = take(bytes.len(), self.data_left);
                if let Some((_, buf)) = &mut self.capture {
                    buf.extend_from_slice(&bytes[..n]);
                }
                self.data_left -= n as u64;
                bytes = &bytes[n..];
                if self.data_left == 0 {
                    self.store_capture();
                }
            } else if self.padding_left > 0 {
                let n = take(bytes.len(), self.padding_left);
                self.padding_left -= n as u64;
                bytes = &bytes[n..];
            } else {
                let n = (512 - self.header.len()).min(bytes.len());
                self.header.extend_from_slice(&bytes[..n]);
                bytes = &bytes[n..];
                if self.header.len() == 512 {
                    self.read_header()?;
                    self.header.clear();
                }
            }
        }
        Ok(())
    }

    fn read_header(&mut self) -> io::Result<()> {
        let at = self.offset;
        let mut findings = self
            .findings
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?;
        if findings.ended {
            return Ok(()); // the second zero block, or padding to the record size
        }
        let h = &self.header;
        if h.iter().all(|&b| b == 0) {
            findings.ended = true;
            return Ok(());
        }
        let bad = |what: &str| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("pg_basebackup's output is not a tar stream ({what} in the header near byte {at})"),
            )
        };
        let stored = octal(&h[148..156]).ok_or_else(|| bad("no checksum"))?;
        let sum: u64 = h
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u64::from(b)
                }
            })
            .sum();
        if stored != sum {
            return Err(bad("a wrong checksum"));
        }
        let size = if h[124] & 0x80 != 0 {
            // GNU base-256 for members of 8 GiB and more.
            h[125..136]
                .iter()
                .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
        } else {
            octal(&h[124..136]).ok_or_else(|| bad("no size"))?
        };
        findings.members += 1;
        let name = cstr(&h[0..100]);
        let name = name.strip_prefix("./").unwrap_or(&name);
        let regular = matches!(h[156], b'0' | 0);
        self.capture = match name {
            "backup_label" if regular => Some((Member::Label, Vec::new())),
            "backup_manifest" if regular => Some((Member::Manifest, Vec::new())),
            _ => None,
        };
        if self.capture.is_some() && size > MAX_CAPTURE {
            return Err(io::Error::other(format!(
                "{name} in the base backup is {size} bytes, more than dr keeps in memory ({MAX_CAPTURE})"
            )));
        }
        self.data_left = size;
        self.padding_left = (512 - size % 512) % 512;
        drop(findings);
        if size == 0 {
            self.store_capture();
        }
        Ok(())
    }

    fn store_capture(&mut self) {
        if let Some((member, buf)) = self.capture.take() {
            if let Ok(mut f) = self.findings.lock() {
                match member {
                    Member::Label => f.backup_label = Some(buf),
                    Member::Manifest => f.backup_manifest = Some(buf),
                }
            }
        }
    }
}

impl<R: Read> Read for TarTap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.observe(&buf[..n])?;
        self.offset += n as u64;
        Ok(n)
    }
}

fn take(available: usize, left: u64) -> usize {
    usize::try_from(left).map_or(available, |l| l.min(available))
}

fn cstr(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

fn octal(field: &[u8]) -> Option<u64> {
    let text = cstr(field);
    let text = text.trim_matches([' ', '\0']);
    if text.is_empty() {
        return None;
    }
    u64::from_str_radix(text, 8).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PG15_LABEL: &str = include_str!("../testdata/basebackup/pg15.backup_label");
    const PG17_LABEL: &str = include_str!("../testdata/basebackup/pg17.backup_label");
    const PG15_MANIFEST: &str = include_str!("../testdata/basebackup/pg15.backup_manifest");
    const PG17_MANIFEST: &str = include_str!("../testdata/basebackup/pg17.backup_manifest");
    const PG15_STDERR: &str = include_str!("../testdata/basebackup/pg15.stderr");
    const PG17_STDERR: &str = include_str!("../testdata/basebackup/pg17.stderr");
    const PG15_WAITING: &str = include_str!("../testdata/basebackup/pg15-archive-waiting.stderr");
    const PG17_NO_REPLICATION: &str =
        include_str!("../testdata/basebackup/pg17-no-replication.stderr");
    const PG15_NO_HBA: &str = include_str!("../testdata/basebackup/pg15-no-hba.stderr");

    #[test]
    fn backup_labels_of_15_and_17_parse() {
        for text in [PG15_LABEL, PG17_LABEL] {
            let l = BackupLabel::parse(text).expect("label");
            assert_eq!(l.start_lsn, "0/2000028");
            assert_eq!(l.start_segment, "000000010000000000000002");
            assert_eq!(l.timeline, 1);
            assert_eq!(l.backup_from, "primary");
            assert_eq!(l.label, "pg_basebackup base backup");
            assert_eq!(l.start_time, "2026-12-04 02:11:37 UTC");
        }
        assert_eq!(
            BackupLabel::parse(PG17_LABEL).expect("17").checkpoint_lsn,
            "0/2000080"
        );
        let e = BackupLabel::parse("CHECKPOINT LOCATION: 0/1\n").expect_err("no start");
        assert!(e.to_string().contains("START WAL LOCATION"), "{e}");
        let e = BackupLabel::parse(&PG15_LABEL.replace("START TIMELINE: 1", "START TIMELINE: x"))
            .expect_err("timeline");
        assert!(e.to_string().contains("START TIMELINE"), "{e}");
    }

    #[test]
    fn backup_manifests_of_15_and_17_give_the_wal_range() {
        let m15 = ManifestSummary::parse(PG15_MANIFEST.as_bytes()).expect("15");
        assert_eq!(m15.version, 1);
        assert_eq!(m15.system_identifier, None);
        assert_eq!(m15.files, 3);
        assert_eq!(
            m15.wal_ranges,
            vec![WalRange {
                timeline: 1,
                start_lsn: "0/2000028".into(),
                end_lsn: "0/2000100".into()
            }]
        );
        let m17 = ManifestSummary::parse(PG17_MANIFEST.as_bytes()).expect("17");
        assert_eq!(m17.version, 2);
        // Beyond 2^53: read as an integer, not a float.
        assert_eq!(m17.system_identifier, Some(7_715_265_767_638_906_800));
        assert_eq!(m17.wal_ranges[0].end_lsn, "0/2000120");
        let e =
            ManifestSummary::parse(br#"{"PostgreSQL-Backup-Manifest-Version": 1, "Files": []}"#)
                .expect_err("no ranges");
        assert!(e.to_string().contains("WAL-Ranges"), "{e}");
        assert!(ManifestSummary::parse(&PG15_MANIFEST.as_bytes()[..100]).is_err());
    }

    #[test]
    fn stderr_says_whether_the_server_waited_for_archiving() {
        let plain = read_stderr(PG15_STDERR.lines());
        assert!(plain.archiving_not_enabled && !plain.waited_for_archive);
        assert_eq!(plain.start, None, "-X none prints no start point");
        assert_eq!(read_stderr(PG17_STDERR.lines()), plain);
        let waiting = read_stderr(PG15_WAITING.lines());
        assert!(waiting.waited_for_archive && !waiting.archiving_not_enabled);
        // The lines -X fetch|stream add.
        let with_wal = read_stderr([
            "pg_basebackup: write-ahead log start point: 0/2000028 on timeline 1",
            "pg_basebackup: write-ahead log end point: 0/2000100",
        ]);
        assert_eq!(with_wal.start, Some(("0/2000028".into(), 1)));
        assert_eq!(with_wal.end.as_deref(), Some("0/2000100"));
    }

    #[test]
    fn connection_refusals_get_the_line_to_change() {
        let h = failure_hint(PG17_NO_REPLICATION).expect("replication");
        assert!(h.contains("ALTER ROLE") && h.contains("REPLICATION"), "{h}");
        let h = failure_hint("FATAL:  must be superuser or replication role to start walsender")
            .expect("15");
        assert!(h.contains("REPLICATION"), "{h}");
        let h = failure_hint(PG15_NO_HBA).expect("hba");
        assert!(
            h.contains("pg_hba.conf") && h.contains("host replication"),
            "{h}"
        );
        assert_eq!(failure_hint("pg_basebackup: error: something else"), None);
    }

    /// A ustar header as pg_basebackup writes them (`src/port/tar.c`).
    fn header(name: &str, size: u64, kind: u8) -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..107].copy_from_slice(b"0000600");
        h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        h[136..147].copy_from_slice(b"00000000000");
        h[156] = kind;
        h[257..263].copy_from_slice(b"ustar\0");
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        h
    }

    fn member(name: &str, data: &[u8], kind: u8) -> Vec<u8> {
        let mut out = header(name, data.len() as u64, kind);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
        out
    }

    fn archive() -> Vec<u8> {
        let mut tar = Vec::new();
        tar.extend(member("backup_label", PG17_LABEL.as_bytes(), b'0'));
        tar.extend(member("base/", b"", b'5'));
        tar.extend(member("base/1/1259", &vec![7u8; 8192 + 100], b'0'));
        // A member named like the manifest inside a directory is not the manifest.
        tar.extend(member("base/backup_manifest", b"nope", b'0'));
        tar.extend(member("global/pg_control", &[1u8; 8192], b'0'));
        tar.extend(member("backup_manifest", PG17_MANIFEST.as_bytes(), b'0'));
        tar.extend(vec![0u8; 1024]);
        tar
    }

    fn read_all<R: Read>(mut r: R, chunk: usize) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; chunk];
        loop {
            let n = r.read(&mut buf)?;
            if n == 0 {
                return Ok(out);
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn the_tap_passes_the_stream_through_and_copies_out_label_and_manifest() {
        let tar = archive();
        // Reads of every size: headers and members split across reads.
        for chunk in [1, 7, 511, 512, 513, 4096, 1 << 20] {
            let (tap, findings) = TarTap::new(io::Cursor::new(tar.clone()));
            let out = read_all(tap, chunk).expect("read");
            assert_eq!(out, tar, "chunk {chunk}: bytes pass unchanged");
            let f = findings.lock().expect("findings").clone();
            assert!(f.ended, "chunk {chunk}");
            assert_eq!(f.members, 6);
            assert_eq!(f.backup_label.as_deref(), Some(PG17_LABEL.as_bytes()));
            assert_eq!(f.backup_manifest.as_deref(), Some(PG17_MANIFEST.as_bytes()));
        }
    }

    #[test]
    fn a_cut_stream_is_not_ended_and_a_bad_header_is_an_error() {
        let tar = archive();
        let (tap, findings) = TarTap::new(io::Cursor::new(tar[..3000].to_vec()));
        read_all(tap, 4096).expect("read");
        let f = findings.lock().expect("findings").clone();
        assert!(!f.ended && f.backup_manifest.is_none());

        let mut bad = tar.clone();
        bad[0] = b'X';
        let (tap, _) = TarTap::new(io::Cursor::new(bad));
        let e = read_all(tap, 4096).expect_err("checksum");
        assert!(e.to_string().contains("not a tar stream"), "{e}");
    }

    #[test]
    fn the_command_line_streams_a_tar_without_wal() {
        let conn = ConnInfo::parse("postgres://backup:secret@db:5432/app").expect("url");
        let args = basebackup_args(&conn, "dr app 20261204T021137Z");
        for want in [
            "--pgdata=-",
            "--format=tar",
            "--wal-method=none",
            "--checkpoint=fast",
            "--no-password",
            "--verbose",
        ] {
            assert!(args.iter().any(|a| a == want), "{want} in {args:?}");
        }
        assert!(
            !args.iter().any(|a| a.contains("secret")),
            "no password in argv: {args:?}"
        );
    }
}
