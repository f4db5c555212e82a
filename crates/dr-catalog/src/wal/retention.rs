//! Which WAL objects `dr prune` deletes (docs/design/PITR.md §7). Pure: the caller passes the
//! base backups it retains, the WAL records, the listing of `{target}/wal/` and `now`.
//!
//! Kept: every segment a retained base can need, i.e. for each known timeline T, the
//! segments recovery on T reads from the start of the oldest retained base on T's path on
//! (so the WAL of a base's own timeline after it, and of every descendant after its switch
//! point; see [`Timelines::segment_timeline`]); history records, always; every file of a
//! timeline the graph does not know (its history record is missing, so its path cannot be
//! followed). With no retained base nothing is expired: a first physical backup may be
//! waiting for its WAL right now, and deleting the whole archive is not prune's call.
//!
//! Deleted: the other segments, partials and backup history files; partials whose full
//! segment has a record (superseded); data objects no record names that are older than
//! [`ORPHAN_AGE`] (a push that died between its two PUTs, or a replaced live partial).
//! A data object whose record exists but could not be read is kept and reported.
//!
//! Order: a record is deleted before its data object, so a prune that stops half way leaves
//! an orphan (deleted next time), never a record naming a missing object.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{DateTime, Utc};

use super::continuity::{check_on_path, Archived, Base};
use super::history::{segment_timeline_in, Span, Timelines};
use super::{keys, SegmentName, SegmentSize, WalFile};

/// Data objects without a record are deleted once this old (docs/design/PITR.md §1).
pub const ORPHAN_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

/// One listed object under `{target}/wal/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub key: String,
    pub modified: DateTime<Utc>,
    pub bytes: u64,
}

/// A WAL file to delete: its record, then its data object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    pub file: WalFile,
    pub record: String,
    pub data: String,
    pub bytes: u64,
}

/// Consecutive segments of one timeline that are deleted, for `dr prune --dry-run`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub target: String,
    pub timeline: u32,
    pub first: SegmentName,
    pub last: SegmentName,
    pub segments: u64,
    pub bytes: u64,
}

impl fmt::Display for Range {
    /// `wal app tl1 000000010000000A00000000..000000010000000B0000001F 300 segments 1.2 GiB`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "wal {} tl{} {}..{} {} segment{} {}",
            self.target,
            self.timeline,
            self.first,
            self.last,
            self.segments,
            if self.segments == 1 { "" } else { "s" },
            crate::human_bytes(self.bytes)
        )
    }
}

/// What prune does to one target's WAL archive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalPrune {
    /// Segments, partials and backup history files no retained base needs.
    pub expired: Vec<Deletion>,
    /// `expired` segments and partials as ranges per timeline.
    pub ranges: Vec<Range>,
    /// Partials whose complete segment has a record.
    pub superseded: Vec<Deletion>,
    /// Data objects without a record, older than [`ORPHAN_AGE`].
    pub orphans: Vec<Stored>,
    /// Data objects kept because their file's record exists but is not among the records
    /// read (damaged or unreadable): a human decides.
    pub unreadable: Vec<String>,
    /// Timelines with files but no history record: all their files are kept.
    pub unknown_timelines: Vec<u32>,
}

impl WalPrune {
    /// The keys to delete, in order: every record first, then the data objects.
    pub fn keys(&self) -> Vec<String> {
        let deletions = self.expired.iter().chain(&self.superseded);
        let records = deletions.clone().map(|d| d.record.clone());
        let data = deletions.map(|d| d.data.clone());
        records
            .chain(data)
            .chain(self.orphans.iter().map(|o| o.key.clone()))
            .collect()
    }

    /// Keep every file one of whose objects is in `locked` (Object Lock): such a file stays
    /// whole, record and data, and a later prune deletes it. The ranges are recomputed.
    pub fn hold(&mut self, target: &str, locked: &BTreeSet<String>, size: SegmentSize) {
        let free = |d: &Deletion| !locked.contains(&d.record) && !locked.contains(&d.data);
        self.expired.retain(free);
        self.superseded.retain(free);
        self.orphans.retain(|o| !locked.contains(&o.key));
        self.ranges = ranges(target, &self.expired, size);
    }

    /// Bytes of stored objects deleted.
    pub fn bytes(&self) -> u64 {
        let files: u64 = self
            .expired
            .iter()
            .chain(&self.superseded)
            .map(|d| d.bytes)
            .sum();
        files + self.orphans.iter().map(|o| o.bytes).sum::<u64>()
    }
}

/// For each known timeline with a retained base on its path: its history and the first
/// segment number recovery on it can need.
fn floors(bases: &[Base], timelines: &Timelines, size: SegmentSize) -> Vec<(Vec<Span>, u64)> {
    timelines
        .known()
        .into_iter()
        .filter_map(|t| {
            let history = timelines.history(t).ok()?;
            // Conservative: a base counts when it started on the path (even if it ended
            // after the switch and cannot be used on T): keeping more is the safe mistake.
            let floor = bases
                .iter()
                .filter(|b| check_on_path(&history, t, b.timeline, b.start, b.start).is_ok())
                .map(|b| b.start.0 / size.bytes())
                .min()?;
            Some((history, floor))
        })
        .collect()
}

fn deletion(target: &str, a: &Archived) -> Deletion {
    Deletion {
        file: a.file,
        record: keys::record(target, a.file),
        data: a.key.clone(),
        bytes: a.bytes,
    }
}

/// Decide what to delete from the WAL archive of `target`.
pub fn plan(
    target: &str,
    bases: &[Base],
    records: &[Archived],
    listing: &[Stored],
    timelines: &Timelines,
    size: SegmentSize,
    now: DateTime<Utc>,
) -> WalPrune {
    let mut out = WalPrune::default();
    let floors = floors(bases, timelines, size);
    let full: BTreeSet<SegmentName> = records
        .iter()
        .filter_map(|a| match a.file {
            WalFile::Segment(s) => Some(s),
            _ => None,
        })
        .collect();
    let mut unknown = BTreeSet::new();
    let needed = |s: SegmentName| match s.number(size) {
        // A name that does not fit the segment size is not ours to judge.
        Err(_) => true,
        Ok(n) => floors.iter().any(|(history, floor)| {
            n >= *floor && segment_timeline_in(history, n, size) == s.timeline
        }),
    };
    for a in records {
        let Some(segment) = a.file.segment() else {
            continue; // history files are always kept
        };
        if matches!(a.file, WalFile::Partial(_)) && full.contains(&segment) {
            out.superseded.push(deletion(target, a));
            continue;
        }
        if !timelines.contains(segment.timeline) {
            unknown.insert(segment.timeline);
            continue;
        }
        if !bases.is_empty() && !needed(segment) {
            out.expired.push(deletion(target, a));
        }
    }
    out.expired.sort_by_key(|d| (d.file.segment(), d.file));
    out.unknown_timelines = unknown.into_iter().collect();
    out.ranges = ranges(target, &out.expired, size);
    orphans(target, records, listing, now, &mut out);
    out
}

/// Group expired segments and partials into consecutive runs per timeline.
fn ranges(target: &str, expired: &[Deletion], size: SegmentSize) -> Vec<Range> {
    let mut by_timeline: BTreeMap<u32, Vec<(u64, SegmentName, u64)>> = BTreeMap::new();
    for d in expired {
        if let WalFile::Segment(s) | WalFile::Partial(s) = d.file {
            if let Ok(n) = s.number(size) {
                by_timeline
                    .entry(s.timeline)
                    .or_default()
                    .push((n, s, d.bytes));
            }
        }
    }
    let mut out: Vec<Range> = Vec::new();
    for (timeline, mut segments) in by_timeline {
        segments.sort();
        let mut previous: Option<u64> = None;
        for (n, s, bytes) in segments {
            match out.last_mut() {
                Some(r) if r.timeline == timeline && previous.is_some_and(|p| n <= p + 1) => {
                    if previous != Some(n) {
                        r.segments += 1;
                    }
                    r.last = s;
                    r.bytes += bytes;
                }
                _ => out.push(Range {
                    target: target.to_string(),
                    timeline,
                    first: s,
                    last: s,
                    segments: 1,
                    bytes,
                }),
            }
            previous = Some(n);
        }
    }
    out
}

/// The WAL file a data object key is for: `…/{FILE}.{N}.zst.age`.
fn file_of_data(key: &str) -> Option<WalFile> {
    let name = key.rsplit('/').next()?.strip_suffix(".zst.age")?;
    name.rsplit_once('.')?.0.parse().ok()
}

fn orphans(
    target: &str,
    records: &[Archived],
    listing: &[Stored],
    now: DateTime<Utc>,
    out: &mut WalPrune,
) {
    let referenced: BTreeSet<&str> = records.iter().map(|a| a.key.as_str()).collect();
    let read: BTreeSet<WalFile> = records.iter().map(|a| a.file).collect();
    let listed: BTreeSet<&str> = listing.iter().map(|s| s.key.as_str()).collect();
    let age = chrono::Duration::from_std(ORPHAN_AGE).unwrap_or(chrono::Duration::days(1));
    let root = keys::root(target);
    for stored in listing {
        if !stored.key.starts_with(&root) || referenced.contains(stored.key.as_str()) {
            continue;
        }
        let Some(file) = file_of_data(&stored.key) else {
            continue; // records, identity.json and anything else are not data objects
        };
        if listed.contains(keys::record(target, file).as_str()) && !read.contains(&file) {
            out.unreadable.push(stored.key.clone());
        } else if now - stored.modified >= age {
            out.orphans.push(stored.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::super::continuity::tests::{at, base, name, partial, records, seg, timelines};
    use super::*;

    const SIZE: SegmentSize = SegmentSize::DEFAULT;

    /// The continuity fixture with older segments A/F0..A/FC before base a, and timeline 2's
    /// history record.
    fn archive() -> Vec<Archived> {
        let mut r: Vec<Archived> = (0xF0..=0xFC)
            .map(|s| seg(&format!("000000010000000A{s:08X}"), -60))
            .collect();
        r.extend(records());
        r.push(Archived {
            file: WalFile::History(2),
            key: "app/wal/history/00000002.history.0a0b0c0d0e0f0102.zst.age".into(),
            pushed_at: at(5),
            end_lsn: None,
            bytes: 200,
        });
        r
    }

    /// What a LIST of app/wal/ returns for `records`: each record and its data object.
    fn listing(records: &[Archived]) -> Vec<Stored> {
        records
            .iter()
            .flat_map(|a| {
                [
                    Stored {
                        key: keys::record("app", a.file),
                        modified: a.pushed_at,
                        bytes: 700,
                    },
                    Stored {
                        key: a.key.clone(),
                        modified: a.pushed_at,
                        bytes: a.bytes,
                    },
                ]
            })
            .collect()
    }

    fn base_a() -> Base {
        base("a", 1, "A/FD000028", "A/FE000100", 0)
    }

    fn base_b() -> Base {
        base("b", 2, "B/02000028", "B/02100000", 7)
    }

    fn run(bases: &[Base], records: &[Archived]) -> WalPrune {
        plan(
            "app",
            bases,
            records,
            &listing(records),
            &timelines(),
            SIZE,
            at(60 * 24 * 3),
        )
    }

    fn files(list: &[Deletion]) -> Vec<String> {
        list.iter().map(|d| d.file.to_string()).collect()
    }

    #[test]
    fn keeps_from_the_oldest_retained_base_start() {
        let p = run(&[base_a(), base_b()], &archive());
        assert_eq!(p.expired.len(), 13);
        assert_eq!(
            p.ranges.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["wal app tl1 000000010000000A000000F0..000000010000000A000000FC 13 segments 49.6 MiB"]
        );
        assert!(p.superseded.is_empty() && p.orphans.is_empty());
        // Record before data, for every deletion.
        let keys = p.keys();
        assert_eq!(keys.len(), 26);
        assert!(keys[..13].iter().all(|k| k.ends_with(".rec")), "{keys:?}");
        assert_eq!(
            keys[0],
            "app/wal/000000010000000A/000000010000000A000000F0.rec"
        );
        assert_eq!(p.bytes(), 13 * 4_000_000);
    }

    #[test]
    fn a_base_on_timeline_2_releases_timeline_1() {
        let p = run(&[base_b()], &archive());
        // Everything of timeline 1 (its final partial too, crossing log ids) and timeline 2's
        // switch segment, which lies before b's start; the history record stays.
        assert_eq!(
            p.ranges.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "wal app tl1 000000010000000A000000F0..000000010000000B00000001 18 segments 65.8 MiB",
                "wal app tl2 000000020000000B00000001..000000020000000B00000001 1 segment 3.8 MiB",
            ]
        );
        assert!(files(&p.expired).contains(&"000000010000000B00000001.partial".to_string()));
        assert!(!p.keys().iter().any(|k| k.contains("history")));
    }

    #[test]
    fn the_old_primary_s_wal_after_the_switch_is_kept_for_a_base_before_it() {
        // Timeline 1 went on after the switch (the old primary archived B/02): recovery on
        // timeline 1 from base a reads it.
        let mut records = archive();
        records.push(seg("000000010000000B00000002", 8));
        let p = run(&[base_a()], &records);
        assert_eq!(p.expired.len(), 13);
        assert!(!files(&p.expired).contains(&"000000010000000B00000002".to_string()));
        // A base taken on timeline 2 alone does not need it.
        let p = run(&[base_b()], &records);
        assert!(files(&p.expired).contains(&"000000010000000B00000002".to_string()));
    }

    #[test]
    fn a_locked_file_is_kept_whole_and_splits_its_range() {
        let mut p = run(&[base_a()], &archive());
        let locked: BTreeSet<String> = [p.expired[5].data.clone()].into();
        p.hold("app", &locked, SIZE);
        assert_eq!(p.expired.len(), 12);
        assert!(!p
            .keys()
            .iter()
            .any(|k| k.contains("000000010000000A000000F5")));
        assert_eq!(
            p.ranges.iter().map(|r| r.segments).collect::<Vec<_>>(),
            [5, 7]
        );
    }

    #[test]
    fn a_hole_splits_the_ranges() {
        let records: Vec<Archived> = archive()
            .into_iter()
            .filter(|a| a.file.to_string() != "000000010000000A000000F5")
            .collect();
        let p = run(&[base_a()], &records);
        let ranges: Vec<(SegmentName, SegmentName, u64)> = p
            .ranges
            .iter()
            .map(|r| (r.first, r.last, r.segments))
            .collect();
        assert_eq!(
            ranges,
            [
                (
                    name("000000010000000A000000F0"),
                    name("000000010000000A000000F4"),
                    5
                ),
                (
                    name("000000010000000A000000F6"),
                    name("000000010000000A000000FC"),
                    7
                ),
            ]
        );
    }

    #[test]
    fn without_a_retained_base_nothing_expires() {
        let p = run(&[], &archive());
        assert!(p.expired.is_empty() && p.ranges.is_empty());
    }

    #[test]
    fn superseded_partials_are_deleted() {
        let mut records = archive();
        records.push(seg("000000020000000B00000004", 10));
        let p = run(&[base_a()], &records);
        assert_eq!(files(&p.superseded), ["000000020000000B00000004.partial"]);
        assert_eq!(
            p.superseded[0].record,
            "app/wal/000000020000000B/000000020000000B00000004.partial.rec"
        );
        // The old primary's final partial has no full segment on timeline 1: kept.
        assert!(!files(&p.superseded).contains(&"000000010000000B00000001.partial".to_string()));
    }

    #[test]
    fn orphans_older_than_a_day_are_deleted() {
        let records = archive();
        let now = at(60 * 24 * 3);
        let mut listed = listing(&records);
        let data = |file: &str, nonce: &str, modified| Stored {
            key: keys::data("app", file.parse().expect("valid"), nonce),
            modified,
            bytes: 5,
        };
        // A push that died between its PUTs two days ago, and one still running.
        listed.push(data(
            "000000020000000B00000005",
            "1111111111111111",
            now - Duration::days(2),
        ));
        listed.push(data(
            "000000020000000B00000006",
            "2222222222222222",
            now - Duration::hours(1),
        ));
        // The previous upload of the live partial (the record now names another object).
        listed.push(data(
            "000000020000000B00000004.partial",
            "3333333333333333",
            now - Duration::days(2),
        ));
        // A record that exists but could not be read: its data stays.
        listed.push(data(
            "000000020000000B00000007",
            "4444444444444444",
            now - Duration::days(9),
        ));
        listed.push(Stored {
            key: keys::record("app", "000000020000000B00000007".parse().expect("valid")),
            modified: now - Duration::days(9),
            bytes: 700,
        });
        listed.push(Stored {
            key: keys::identity("app"),
            modified: now - Duration::days(90),
            bytes: 300,
        });
        let p = plan(
            "app",
            &[base_a()],
            &records,
            &listed,
            &timelines(),
            SIZE,
            now,
        );
        let orphans: Vec<&str> = p.orphans.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(
            orphans,
            [
                "app/wal/000000020000000B/000000020000000B00000005.1111111111111111.zst.age",
                "app/wal/000000020000000B/000000020000000B00000004.partial.3333333333333333.zst.age",
            ]
        );
        assert_eq!(
            p.unreadable,
            ["app/wal/000000020000000B/000000020000000B00000007.4444444444444444.zst.age"]
        );
        assert_eq!(p.keys().last().map(String::as_str), Some(orphans[1]));
    }

    #[test]
    fn timelines_without_history_are_kept_whole() {
        let mut records = archive();
        records.push(seg("000000050000000C00000001", 30));
        records.push(partial("000000050000000C00000002", 31, "C/02000100"));
        let p = run(&[base_b()], &records);
        assert_eq!(p.unknown_timelines, [5]);
        assert!(!p.expired.iter().any(|d| d.file.timeline() == 5));
    }
}
