//! WAL file names: segments, partial segments, timeline history and backup history files.

use std::fmt;
use std::str::FromStr;

use super::Lsn;

/// `wal_segment_size`: a power of two from 1 MiB to 1 GiB (16 MiB unless `initdb
/// --wal-segsize` said otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SegmentSize(u32);

impl SegmentSize {
    pub const DEFAULT: SegmentSize = SegmentSize(16 * 1024 * 1024);

    pub fn new(bytes: u64) -> Result<SegmentSize, SegmentError> {
        if bytes.is_power_of_two() && (1 << 20..=1 << 30).contains(&bytes) {
            Ok(SegmentSize(bytes as u32))
        } else {
            Err(SegmentError::Size { bytes })
        }
    }

    pub fn bytes(self) -> u64 {
        u64::from(self.0)
    }

    /// Segments in one log id (4 GiB of WAL): the `YYYYYYYY` part is below this.
    pub fn per_log(self) -> u64 {
        (1u64 << 32) / self.bytes()
    }
}

impl Default for SegmentSize {
    fn default() -> SegmentSize {
        SegmentSize::DEFAULT
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    #[error("`{name}` is not a WAL file name")]
    Name { name: String },
    #[error("WAL segment `{name}` does not exist with {size} MiB segments (the last 8 hex digits must be below {per_log:X})")]
    Beyond {
        name: String,
        size: u64,
        per_log: u64,
    },
    #[error("WAL segment size {bytes} is not a power of two between 1 MiB and 1 GiB")]
    Size { bytes: u64 },
}

impl SegmentError {
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            SegmentError::Name { .. } => Some(
                "WAL files are named with 24 upper-case hex digits (000000010000000A00000042), \
                 optionally followed by .partial, or TTTTTTTT.history, or SEGMENT.OFFSET.backup",
            ),
            SegmentError::Beyond { .. } => Some("check the name and the server's wal_segment_size"),
            SegmentError::Size { .. } => None,
        }
    }
}

/// A segment: timeline and the segment's place in the log, as in its 24-character name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentName {
    pub timeline: u32,
    pub log: u32,
    pub seg: u32,
}

impl SegmentName {
    /// The segment holding `lsn` on `timeline`.
    pub fn of(timeline: u32, lsn: Lsn, size: SegmentSize) -> SegmentName {
        SegmentName::from_number(timeline, lsn.0 / size.bytes(), size)
    }

    /// From the segment number (LSN / segment size).
    pub fn from_number(timeline: u32, number: u64, size: SegmentSize) -> SegmentName {
        SegmentName {
            timeline,
            log: (number / size.per_log()) as u32,
            seg: (number % size.per_log()) as u32,
        }
    }

    /// The segment number (LSN / segment size), after checking the name fits `size`.
    pub fn number(self, size: SegmentSize) -> Result<u64, SegmentError> {
        if u64::from(self.seg) >= size.per_log() {
            return Err(SegmentError::Beyond {
                name: self.to_string(),
                size: size.bytes() >> 20,
                per_log: size.per_log(),
            });
        }
        Ok(u64::from(self.log) * size.per_log() + u64::from(self.seg))
    }

    /// The first position in this segment.
    pub fn start(self, size: SegmentSize) -> Result<Lsn, SegmentError> {
        Ok(Lsn(self.number(size)? * size.bytes()))
    }

    /// The next segment on the same timeline (crossing log ids).
    pub fn next(self, size: SegmentSize) -> Result<SegmentName, SegmentError> {
        Ok(SegmentName::from_number(
            self.timeline,
            self.number(size)? + 1,
            size,
        ))
    }

    /// The first 16 characters (timeline and log id): one repository folder per 4 GiB.
    pub fn prefix(self) -> String {
        format!("{:08X}{:08X}", self.timeline, self.log)
    }

    /// Segments from `self` to `last`, both included, on `self`'s timeline.
    pub fn through(
        self,
        last: SegmentName,
        size: SegmentSize,
    ) -> Result<impl Iterator<Item = SegmentName>, SegmentError> {
        let (first, end) = (self.number(size)?, last.number(size)?);
        let timeline = self.timeline;
        Ok((first..=end).map(move |n| SegmentName::from_number(timeline, n, size)))
    }
}

impl fmt::Display for SegmentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08X}{:08X}{:08X}", self.timeline, self.log, self.seg)
    }
}

fn hex8(s: &str) -> Option<u32> {
    (s.len() == 8
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)))
    .then(|| u32::from_str_radix(s, 16).ok())
    .flatten()
}

impl FromStr for SegmentName {
    type Err = SegmentError;

    fn from_str(name: &str) -> Result<SegmentName, SegmentError> {
        let parsed = (name.len() == 24)
            .then(|| Some((hex8(&name[..8])?, hex8(&name[8..16])?, hex8(&name[16..])?)))
            .flatten();
        match parsed {
            Some((timeline, log, seg)) if timeline > 0 => Ok(SegmentName { timeline, log, seg }),
            _ => Err(SegmentError::Name {
                name: name.to_string(),
            }),
        }
    }
}

/// A file PostgreSQL archives (`%f` of `archive_command`) or asks for (`restore_command`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WalFile {
    /// `000000010000000A00000042`
    Segment(SegmentName),
    /// `000000010000000A00000042.partial`: a segment not yet (or never) complete.
    Partial(SegmentName),
    /// `00000002.history`: how a timeline branched from its parent.
    History(u32),
    /// `000000010000000A00000042.00000028.backup`: a base backup's start and stop.
    Backup(SegmentName, u32),
}

impl WalFile {
    /// The segment the file belongs to (none for history files).
    pub fn segment(self) -> Option<SegmentName> {
        match self {
            WalFile::Segment(s) | WalFile::Partial(s) | WalFile::Backup(s, _) => Some(s),
            WalFile::History(_) => None,
        }
    }

    pub fn timeline(self) -> u32 {
        match self {
            WalFile::Segment(s) | WalFile::Partial(s) | WalFile::Backup(s, _) => s.timeline,
            WalFile::History(t) => t,
        }
    }
}

impl fmt::Display for WalFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalFile::Segment(s) => write!(f, "{s}"),
            WalFile::Partial(s) => write!(f, "{s}.partial"),
            WalFile::History(t) => write!(f, "{t:08X}.history"),
            WalFile::Backup(s, offset) => write!(f, "{s}.{offset:08X}.backup"),
        }
    }
}

impl FromStr for WalFile {
    type Err = SegmentError;

    fn from_str(name: &str) -> Result<WalFile, SegmentError> {
        let bad = || SegmentError::Name {
            name: name.to_string(),
        };
        if let Some(timeline) = name.strip_suffix(".history") {
            return match hex8(timeline) {
                Some(t) if t > 0 => Ok(WalFile::History(t)),
                _ => Err(bad()),
            };
        }
        if let Some(segment) = name.strip_suffix(".partial") {
            return segment.parse().map(WalFile::Partial).map_err(|_| bad());
        }
        if let Some(rest) = name.strip_suffix(".backup") {
            let (segment, offset) = rest.split_once('.').ok_or_else(bad)?;
            let offset = hex8(offset).ok_or_else(bad)?;
            return segment
                .parse()
                .map(|s| WalFile::Backup(s, offset))
                .map_err(|_| bad());
        }
        name.parse().map(WalFile::Segment).map_err(|_| bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn name(s: &str) -> SegmentName {
        s.parse().expect("valid")
    }

    #[test]
    fn lsn_to_segment_at_16_mib() {
        let size = SegmentSize::DEFAULT;
        let s = SegmentName::of(1, "A/42000028".parse().expect("valid"), size);
        assert_eq!(s.to_string(), "000000010000000A00000042");
        assert_eq!(s.start(size).expect("valid").to_string(), "A/42000000");
        assert_eq!(
            SegmentName::of(1, Lsn(0), size).to_string(),
            "000000010000000000000000"
        );
        assert_eq!(
            SegmentName::of(3, "0/FFFFFFFF".parse().expect("valid"), size).to_string(),
            "0000000300000000000000FF"
        );
        assert_eq!(s.prefix(), "000000010000000A");
    }

    #[test]
    fn other_segment_sizes() {
        let lsn: Lsn = "A/42000028".parse().expect("valid");
        let cases = [
            (MIB, "000000010000000A00000420"),
            (64 * MIB, "000000010000000A00000010"),
            (1024 * MIB, "000000010000000A00000001"),
        ];
        for (bytes, expected) in cases {
            let size = SegmentSize::new(bytes).expect("valid");
            let s = SegmentName::of(1, lsn, size);
            assert_eq!(s.to_string(), expected, "{bytes}");
            assert!(s.start(size).expect("valid") <= lsn);
            assert!(Lsn(s.start(size).expect("valid").0 + size.bytes()) > lsn);
        }
        for bad in [0, MIB / 2, 3 * MIB, 2048 * MIB] {
            assert!(SegmentSize::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn next_crosses_a_log_id() {
        let size = SegmentSize::DEFAULT;
        let last = name("000000010000000A000000FF");
        assert_eq!(
            last.next(size).expect("valid"),
            name("000000010000000B00000000")
        );
        let all: Vec<String> = name("000000010000000A000000FE")
            .through(name("000000010000000B00000001"), size)
            .expect("valid")
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            all,
            [
                "000000010000000A000000FE",
                "000000010000000A000000FF",
                "000000010000000B00000000",
                "000000010000000B00000001"
            ]
        );
    }

    #[test]
    fn refuses_names_that_are_not_segments() {
        for bad in [
            "000000010000000a00000042",  // lower case: PostgreSQL writes upper case
            "000000010000000A0000004",   // 23 characters
            "000000010000000A000000420", // 25
            "000000000000000A00000042",  // timeline 0
            "00000001000000 A00000042",
            "",
        ] {
            let e = bad.parse::<SegmentName>().expect_err("must fail");
            assert!(matches!(e, SegmentError::Name { .. }), "{bad}");
            assert!(e.hint().is_some());
        }
        // Parses, but no such segment with 16 MiB segments (256 per log id).
        let e = name("000000010000000A00000100")
            .number(SegmentSize::DEFAULT)
            .expect_err("must fail");
        assert!(e.to_string().contains("below 100"), "{e}");
        assert_eq!(
            name("000000010000000A00000100").number(SegmentSize::new(MIB).expect("valid")),
            Ok(10 * 4096 + 256)
        );
    }

    #[test]
    fn classifies_archived_files() {
        let seg = name("000000010000000A00000042");
        for (text, file) in [
            ("000000010000000A00000042", WalFile::Segment(seg)),
            ("000000010000000A00000042.partial", WalFile::Partial(seg)),
            ("00000002.history", WalFile::History(2)),
            (
                "000000010000000A00000042.00000028.backup",
                WalFile::Backup(seg, 0x28),
            ),
        ] {
            let parsed: WalFile = text.parse().expect("valid");
            assert_eq!(parsed, file, "{text}");
            assert_eq!(parsed.to_string(), text);
        }
        assert_eq!(WalFile::History(2).segment(), None);
        assert_eq!(WalFile::Partial(seg).timeline(), 1);
        for bad in [
            "00000000.history",
            "0000002.history",
            "archive_status",
            "000000010000000A00000042.ready",
            "000000010000000A00000042.28.backup",
            "000000010000000A00000042.partial.partial",
            "RECOVERYHISTORY",
        ] {
            assert!(bad.parse::<WalFile>().is_err(), "{bad}");
        }
    }
}
