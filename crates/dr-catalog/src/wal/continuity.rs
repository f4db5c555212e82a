//! Which WAL segments recovery reads, which of them the archive holds, and the window of
//! positions and times a restore can reach (`dr status`, the restore plan, `dr check`).
//!
//! Pure: the callers list the records (`*.rec`) and the base backups and pass them in.
//!
//! Rules (docs/design/PITR.md §3, §7):
//! - Recovery on timeline T reads segment number n from the timeline
//!   [`Timelines::segment_timeline`] names, so a timeline switch is not a gap: the switch
//!   segment comes from the new timeline, and the old timeline's `.partial` is not needed.
//! - A segment with no record is a **gap** when the archive holds a later file on the same
//!   path; otherwise the archive simply **ends** there.
//! - A `.partial` counts only as the end of the path: when its segment has no record and no
//!   later file exists on the path (what `dr wal fetch` serves). Its `end_lsn` is the end.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};

use super::history::{segment_timeline_in, span_of, Span, TimelineError, Timelines};
use super::{Lsn, RecordError, SegmentName, SegmentSize, WalFile, WalRecord};

/// One archived file as continuity, the restore plan and WAL retention read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archived {
    pub file: WalFile,
    /// The data object the record vouches for.
    pub key: String,
    pub pushed_at: DateTime<Utc>,
    /// Partials: the end of the valid WAL in them.
    pub end_lsn: Option<Lsn>,
    /// Size of the stored object.
    pub bytes: u64,
}

impl Archived {
    /// From a verified record; a partial without `end_lsn` or a name that is not a WAL file
    /// is refused, naming the record's data key.
    pub fn from_record(record: &WalRecord) -> Result<Archived, RecordError> {
        let invalid = |reason: String| RecordError::Invalid {
            key: record.key.clone(),
            reason,
        };
        let file = record
            .file()
            .ok_or_else(|| invalid(format!("`{}` is not a WAL file name", record.name)))?;
        let pushed_at = DateTime::parse_from_rfc3339(&record.pushed_at)
            .map_err(|e| invalid(format!("pushed_at `{}`: {e}", record.pushed_at)))?
            .with_timezone(&Utc);
        if matches!(file, WalFile::Partial(_)) && record.end_lsn.is_none() {
            return Err(invalid("a partial segment's record has no end_lsn".into()));
        }
        Ok(Archived {
            file,
            key: record.key.clone(),
            pushed_at,
            end_lsn: record.end_lsn,
            bytes: record.bytes,
        })
    }
}

/// A physical base backup, as its manifest describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base {
    pub id: String,
    pub timeline: u32,
    /// `backup_manifest` WAL-Ranges `Start-LSN` / `End-LSN`.
    pub start: Lsn,
    pub stop: Lsn,
    /// When the backup ended: no commit after this time is in it.
    pub stopped_at: DateTime<Utc>,
    /// Its manifest is signed by a trusted key.
    pub trusted: bool,
}

/// The timeline graph cannot answer, or a position is not on the path asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContinuityError {
    #[error(transparent)]
    Timeline(#[from] TimelineError),
    #[error("{lsn} on timeline {timeline} is not in the history of timeline {target}{}",
        match left { Some(at) => format!(", which left timeline {timeline} at {at}"), None => String::new() })]
    OffPath {
        timeline: u32,
        lsn: Lsn,
        target: u32,
        left: Option<Lsn>,
    },
    #[error("recovery cannot go back from {from} to {to}")]
    Backwards { from: Lsn, to: Lsn },
}

impl ContinuityError {
    pub fn hint(&self) -> String {
        match self {
            ContinuityError::Timeline(e) => e.hint(),
            ContinuityError::OffPath { timeline, .. } => format!(
                "choose a base backup taken before the switch, or recover on timeline {timeline}"
            ),
            ContinuityError::Backwards { .. } => "the target must be after the base backup".into(),
        }
    }
}

/// Is `start..stop` on `timeline` part of the path `history` describes? A base qualifies when
/// its timeline is on the path and its WAL lies before that timeline's switch (PostgreSQL
/// refuses a checkpoint after the switch point; a backup whose end is after it never becomes
/// consistent on the child).
pub(crate) fn check_on_path(
    history: &[Span],
    target: u32,
    timeline: u32,
    start: Lsn,
    stop: Lsn,
) -> Result<(), ContinuityError> {
    let off = |left| ContinuityError::OffPath {
        timeline,
        lsn: stop,
        target,
        left,
    };
    let span = span_of(history, timeline).ok_or_else(|| off(None))?;
    if start < span.begin {
        return Err(ContinuityError::OffPath {
            timeline,
            lsn: start,
            target,
            left: None,
        });
    }
    match span.end {
        Some(end) if stop > end => Err(off(Some(end))),
        _ => Ok(()),
    }
}

/// The segments recovery reads from `from` (a base's start, on its timeline) to `to` (a
/// position on the target timeline), both included, each named with the timeline it is read
/// from.
pub fn expected(
    timelines: &Timelines,
    from: (u32, Lsn),
    to: (u32, Lsn),
    size: SegmentSize,
) -> Result<Vec<SegmentName>, ContinuityError> {
    let history = timelines.history(to.0)?;
    check_on_path(&history, to.0, from.0, from.1, from.1)?;
    if to.1 < from.1 {
        return Err(ContinuityError::Backwards {
            from: from.1,
            to: to.1,
        });
    }
    let (first, last) = (from.1 .0 / size.bytes(), to.1 .0 / size.bytes());
    Ok((first..=last)
        .map(|n| SegmentName::from_number(segment_timeline_in(&history, n, size), n, size))
        .collect())
}

/// A segment recovery needs that has no record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Missing {
    pub segment: SegmentName,
    /// A later file exists on the path: a hole, not the end of the archive.
    pub gap: bool,
}

/// The archive's records, indexed by segment number.
#[derive(Debug, Clone)]
pub struct Archive<'a> {
    size: SegmentSize,
    segments: BTreeMap<(u64, u32), &'a Archived>,
    partials: BTreeMap<(u64, u32), &'a Archived>,
}

/// A contiguous stretch of archived WAL on one path, from a starting segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run<'a> {
    /// The files in order; the last one may be a partial (`partial`).
    pub segments: Vec<SegmentName>,
    pub partial: Option<&'a Archived>,
    /// The end of the contiguous WAL: the start of the first segment not held, or the
    /// partial's `end_lsn`.
    pub end: Lsn,
    /// When its last file was pushed.
    pub end_at: Option<DateTime<Utc>>,
    /// The first missing segment when a later file exists (a gap); `None` when the archive
    /// ends after the run.
    pub gap: Option<SegmentName>,
}

impl<'a> Archive<'a> {
    /// Index `records`; history and backup files, and names beyond the segment size, are not
    /// segments and are left out.
    pub fn new(records: &'a [Archived], size: SegmentSize) -> Archive<'a> {
        let mut archive = Archive {
            size,
            segments: BTreeMap::new(),
            partials: BTreeMap::new(),
        };
        for record in records {
            let (map, name) = match record.file {
                WalFile::Segment(s) => (&mut archive.segments, s),
                WalFile::Partial(s) => (&mut archive.partials, s),
                WalFile::History(_) | WalFile::Backup(..) => continue,
            };
            if let Ok(n) = name.number(size) {
                map.insert((n, name.timeline), record);
            }
        }
        archive
    }

    pub fn size(&self) -> SegmentSize {
        self.size
    }

    fn key(&self, name: SegmentName) -> Option<(u64, u32)> {
        name.number(self.size).ok().map(|n| (n, name.timeline))
    }

    /// The record of a complete segment.
    pub fn segment(&self, name: SegmentName) -> Option<&'a Archived> {
        self.key(name).and_then(|k| self.segments.get(&k).copied())
    }

    /// The record of a partial segment.
    pub fn partial(&self, name: SegmentName) -> Option<&'a Archived> {
        self.key(name).and_then(|k| self.partials.get(&k).copied())
    }

    /// The number of the first file (segment or partial) after `after` that recovery on the
    /// path `history` would read.
    fn next_on_path(&self, history: &[Span], after: u64) -> Option<u64> {
        let on_path = |&(n, tl): &(u64, u32)| segment_timeline_in(history, n, self.size) == tl;
        let first = |map: &BTreeMap<(u64, u32), &'a Archived>| {
            map.range((after + 1, 0)..)
                .map(|(k, _)| *k)
                .find(on_path)
                .map(|(n, _)| n)
        };
        match (first(&self.segments), first(&self.partials)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The contiguous WAL from segment number `from` on the path `history`.
    pub fn run(&self, history: &[Span], from: u64) -> Run<'a> {
        let size = self.size;
        let mut run = Run {
            segments: Vec::new(),
            partial: None,
            end: Lsn(from * size.bytes()),
            end_at: None,
            gap: None,
        };
        let mut n = from;
        loop {
            let tl = segment_timeline_in(history, n, size);
            let name = SegmentName::from_number(tl, n, size);
            if let Some(a) = self.segments.get(&(n, tl)) {
                run.segments.push(name);
                run.end_at = Some(a.pushed_at);
                n += 1;
                continue;
            }
            run.end = Lsn(n * size.bytes());
            let later = self.next_on_path(history, n);
            match (later, self.partials.get(&(n, tl))) {
                (None, Some(p)) => {
                    run.segments.push(name);
                    run.partial = Some(p);
                    run.end = p.end_lsn.unwrap_or(run.end).max(run.end);
                    run.end_at = Some(p.pushed_at);
                }
                (later, _) => run.gap = later.map(|_| name),
            }
            return run;
        }
    }

    /// The first of `expected` (from [`expected`]) the archive cannot serve. The last one may
    /// be served by a partial when nothing later exists and it holds `to` (`None`: whatever it
    /// holds, the `latest` target).
    pub fn first_missing(
        &self,
        timelines: &Timelines,
        target: u32,
        expected: &[SegmentName],
        to: Option<Lsn>,
    ) -> Result<Option<Missing>, TimelineError> {
        let history = timelines.history(target)?;
        for (i, &name) in expected.iter().enumerate() {
            if self.segment(name).is_some() {
                continue;
            }
            let Some((n, _)) = self.key(name) else {
                return Ok(Some(Missing {
                    segment: name,
                    gap: false,
                }));
            };
            let later = self.next_on_path(&history, n);
            let partial_serves = i + 1 == expected.len()
                && later.is_none()
                && self
                    .partial(name)
                    .and_then(|p| p.end_lsn)
                    .is_some_and(|end| to.is_none_or(|to| end > to));
            if !partial_serves {
                return Ok(Some(Missing {
                    segment: name,
                    gap: later.is_some(),
                }));
            }
        }
        Ok(None)
    }

    /// The newest file recovery on `target` would read, gaps or not (`dr status`'s latest
    /// archived WAL).
    pub fn newest(
        &self,
        timelines: &Timelines,
        target: u32,
    ) -> Result<Option<Newest<'a>>, TimelineError> {
        let history = timelines.history(target)?;
        let size = self.size;
        let on_path = |&(&(n, tl), _): &(&(u64, u32), &&'a Archived)| {
            segment_timeline_in(&history, n, size) == tl
        };
        let segment = self.segments.iter().rev().find(on_path);
        let partial = self.partials.iter().rev().find(on_path);
        let newest = match (segment, partial) {
            (Some(s), Some(p)) if p.0 .0 > s.0 .0 => Some((p, true)),
            (Some(s), _) => Some((s, false)),
            (None, p) => p.map(|p| (p, true)),
        };
        Ok(newest.map(|((&(n, tl), &record), partial)| Newest {
            segment: SegmentName::from_number(tl, n, size),
            end: match (partial, record.end_lsn) {
                (true, Some(end)) => end,
                _ => Lsn((n + 1) * size.bytes()),
            },
            record,
            partial,
        }))
    }
}

/// The newest archived file on a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Newest<'a> {
    pub segment: SegmentName,
    /// Where its WAL ends (the next segment's start, or a partial's `end_lsn`).
    pub end: Lsn,
    pub record: &'a Archived,
    pub partial: bool,
}

/// A position recovery can reach, and when (the base's end, or the push of the last file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    pub timeline: u32,
    pub lsn: Lsn,
    pub at: DateTime<Utc>,
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.at.format("%Y-%m-%d %H:%M:%SZ"), self.lsn)
    }
}

/// A stretch of time a restore can reach on `timeline`: from the end of `base` to the end
/// of the contiguous WAL after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub timeline: u32,
    /// The oldest base backup that opens the window.
    pub base: String,
    pub earliest: Point,
    pub latest: Point,
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "from {} to {}", self.earliest, self.latest)
    }
}

/// What is recoverable on one timeline: windows oldest first (a gap after a base splits
/// them), and the first missing segment after the oldest base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Windows {
    pub timeline: u32,
    pub windows: Vec<Window>,
    pub first_missing: Option<SegmentName>,
}

impl fmt::Display for Windows {
    /// "recoverable from 2026-11-20 03:04:11Z (0/5000028) to 2026-12-03 14:05:40Z (0/9000000)
    /// on timeline 2"
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.windows.is_empty() {
            return write!(
                f,
                "nothing is recoverable on timeline {} yet",
                self.timeline
            );
        }
        let parts: Vec<String> = self.windows.iter().map(Window::to_string).collect();
        write!(
            f,
            "recoverable {} on timeline {}",
            parts.join(" and "),
            self.timeline
        )?;
        if let Some(m) = self.first_missing {
            write!(f, " (WAL segment {m} is missing)")?;
        }
        Ok(())
    }
}

impl Windows {
    /// The newest window.
    pub fn latest(&self) -> Option<&Window> {
        self.windows.last()
    }
}

/// The recoverable windows on `target` from `bases` (the caller chooses which: retained,
/// trusted) and the archive.
///
/// A base opens a window when the WAL from its start through its stop is contiguous; the
/// window ends where that WAL ends. Bases inside an earlier window add nothing. A base whose
/// WAL does not reach its stop (still being archived, or a hole) opens none.
pub fn windows(
    bases: &[Base],
    archive: &Archive<'_>,
    timelines: &Timelines,
    target: u32,
) -> Result<Windows, TimelineError> {
    let history = timelines.history(target)?;
    let size = archive.size();
    let mut on_path: Vec<&Base> = bases
        .iter()
        .filter(|b| check_on_path(&history, target, b.timeline, b.start, b.stop).is_ok())
        .collect();
    on_path.sort_by_key(|b| (b.start, b.stop));
    let mut out = Windows {
        timeline: target,
        windows: Vec::new(),
        first_missing: None,
    };
    let mut covered_until = 0u64;
    for base in on_path {
        let from = base.start.0 / size.bytes();
        if from < covered_until {
            continue;
        }
        let run = archive.run(&history, from);
        if out.first_missing.is_none() {
            out.first_missing = run.gap;
        }
        let (Some(last), Some(end_at)) = (run.segments.last(), run.end_at) else {
            continue;
        };
        if run.end < base.stop {
            continue;
        }
        covered_until = last.number(size).unwrap_or(from) + 1;
        out.windows.push(Window {
            timeline: target,
            base: base.id.clone(),
            earliest: Point {
                timeline: base.timeline,
                lsn: base.stop,
                at: base.stopped_at,
            },
            latest: Point {
                timeline: last.timeline,
                lsn: run.end,
                at: end_at,
            },
        });
    }
    Ok(out)
}

/// The newest timeline a base backup in `bases` can recover onto (`dr status` follows it; the
/// restore plan's `latest`).
pub fn newest_reachable(bases: &[Base], timelines: &Timelines) -> Option<u32> {
    timelines.known().into_iter().rev().find(|&t| {
        timelines.history(t).is_ok_and(|history| {
            bases
                .iter()
                .any(|b| check_on_path(&history, t, b.timeline, b.start, b.stop).is_ok())
        })
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use chrono::{Duration, TimeZone};

    use super::super::history::parse;
    use super::*;

    pub(crate) fn at(minute: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 3, 14, 0, 0)
            .single()
            .expect("time")
            + Duration::minutes(minute)
    }

    pub(crate) fn lsn(s: &str) -> Lsn {
        s.parse().expect("valid")
    }

    pub(crate) fn name(s: &str) -> SegmentName {
        s.parse().expect("valid")
    }

    pub(crate) fn seg(text: &str, minute: i64) -> Archived {
        Archived {
            file: WalFile::Segment(name(text)),
            key: format!("app/wal/{}/{text}.00112233aabbccdd.zst.age", &text[..16]),
            pushed_at: at(minute),
            end_lsn: None,
            bytes: 4_000_000,
        }
    }

    pub(crate) fn partial(text: &str, minute: i64, end: &str) -> Archived {
        Archived {
            file: WalFile::Partial(name(text)),
            key: format!(
                "app/wal/{}/{text}.partial.99887766aabbccdd.zst.age",
                &text[..16]
            ),
            pushed_at: at(minute),
            end_lsn: Some(lsn(end)),
            bytes: 1_000_000,
        }
    }

    /// Timeline 2 began at B/01000A28, inside segment B/01, after the log id A/… ended.
    pub(crate) fn timelines() -> Timelines {
        let mut t = Timelines::new();
        let history = "1\tB/01000A28\tno recovery target specified\n";
        t.insert(2, parse(2, history).expect("valid"))
            .expect("insert");
        t
    }

    /// The primary archived A/FD..B/00 on timeline 1, was promoted at B/01000A28 (its last
    /// segment kept as a final partial), and timeline 2 archived B/01..B/03 and streams B/04.
    pub(crate) fn records() -> Vec<Archived> {
        vec![
            seg("000000010000000A000000FD", 1),
            seg("000000010000000A000000FE", 2),
            seg("000000010000000A000000FF", 3),
            seg("000000010000000B00000000", 4),
            partial("000000010000000B00000001", 5, "B/01000A28"),
            seg("000000020000000B00000001", 6),
            seg("000000020000000B00000002", 7),
            seg("000000020000000B00000003", 8),
            partial("000000020000000B00000004", 9, "B/04123000"),
        ]
    }

    pub(crate) fn base(id: &str, timeline: u32, start: &str, stop: &str, minute: i64) -> Base {
        Base {
            id: id.into(),
            timeline,
            start: lsn(start),
            stop: lsn(stop),
            stopped_at: at(minute),
            trusted: true,
        }
    }

    fn without(records: &[Archived], names: &[&str]) -> Vec<Archived> {
        records
            .iter()
            .filter(|r| !names.contains(&r.file.to_string().as_str()))
            .cloned()
            .collect()
    }

    fn strings(list: &[SegmentName]) -> Vec<String> {
        list.iter().map(ToString::to_string).collect()
    }

    const SIZE: SegmentSize = SegmentSize::DEFAULT;

    #[test]
    fn expected_follows_the_switch_across_a_log_id() {
        let t = timelines();
        let got =
            expected(&t, (1, lsn("A/FE000028")), (2, lsn("B/02000100")), SIZE).expect("on path");
        assert_eq!(
            strings(&got),
            [
                "000000010000000A000000FE",
                "000000010000000A000000FF",
                "000000010000000B00000000",
                "000000020000000B00000001", // the switch segment: the new timeline's copy
                "000000020000000B00000002",
            ]
        );
        // Staying on timeline 1: the old primary's segments.
        let got =
            expected(&t, (1, lsn("A/FF000028")), (1, lsn("B/01000000")), SIZE).expect("on path");
        assert_eq!(
            strings(&got),
            [
                "000000010000000A000000FF",
                "000000010000000B00000000",
                "000000010000000B00000001"
            ]
        );
    }

    #[test]
    fn expected_refuses_a_base_after_the_switch() {
        let t = timelines();
        let e = expected(&t, (1, lsn("B/02000028")), (2, lsn("B/03000000")), SIZE)
            .expect_err("off path");
        let message = e.to_string();
        assert!(
            message.contains("not in the history of timeline 2")
                && message.contains("left timeline 1 at B/1000A28"),
            "{message}"
        );
        assert!(e.hint().contains("before the switch"));
        let e = expected(&t, (1, lsn("A/FE000028")), (3, lsn("B/03000000")), SIZE)
            .expect_err("unknown");
        assert!(e.to_string().contains("00000003.history"), "{e}");
        let e = expected(&t, (1, lsn("A/FE000028")), (2, lsn("A/FD000000")), SIZE)
            .expect_err("backwards");
        assert!(matches!(e, ContinuityError::Backwards { .. }));
    }

    #[test]
    fn first_missing_tells_a_gap_from_the_end() {
        let t = timelines();
        let want =
            expected(&t, (1, lsn("A/FD000028")), (2, lsn("B/04100000")), SIZE).expect("on path");
        let full = records();
        let check = |records: &[Archived], to: Option<Lsn>| {
            Archive::new(records, SIZE)
                .first_missing(&t, 2, &want, to)
                .expect("known")
        };
        // The partial on timeline 2 ends the path and holds B/04100000; timeline 1's partial
        // of the switch segment is not needed.
        assert_eq!(check(&full, Some(lsn("B/04100000"))), None);
        assert_eq!(check(&full, None), None);
        let miss = |s: &str, gap| {
            Some(Missing {
                segment: name(s),
                gap,
            })
        };
        // ... but not a position after its end.
        assert_eq!(
            check(&full, Some(lsn("B/04123000"))),
            miss("000000020000000B00000004", false)
        );
        // Gaps at the start and in the middle, and the end of the archive.
        for (gone, expected) in [
            (
                "000000010000000A000000FD",
                miss("000000010000000A000000FD", true),
            ),
            (
                "000000020000000B00000001",
                miss("000000020000000B00000001", true),
            ),
            (
                "000000020000000B00000004.partial",
                miss("000000020000000B00000004", false),
            ),
        ] {
            assert_eq!(check(&without(&full, &[gone]), None), expected, "{gone}");
        }
        // A partial followed by a later segment is stale: its full segment is a gap.
        let mut later = full.clone();
        later.push(seg("000000020000000B00000005", 10));
        assert_eq!(check(&later, None), miss("000000020000000B00000004", true));
    }

    #[test]
    fn a_window_across_the_switch_ends_at_the_partial() {
        let t = timelines();
        let records = records();
        let archive = Archive::new(&records, SIZE);
        let bases = [base("20261203T135900Z", 1, "A/FD000028", "A/FE000100", 0)];
        let w = windows(&bases, &archive, &t, 2).expect("known");
        assert_eq!(w.first_missing, None);
        assert_eq!(
            w.to_string(),
            "recoverable from 2026-12-03 14:00:00Z (A/FE000100) to 2026-12-03 14:09:00Z \
             (B/4123000) on timeline 2"
        );
        assert_eq!(w.latest().map(|l| l.latest.timeline), Some(2));
        // On timeline 1 the window ends at the old primary's final partial.
        let w = windows(&bases, &archive, &t, 1).expect("known");
        assert_eq!(w.latest().map(|l| l.latest.lsn), Some(lsn("B/01000A28")));
        assert_eq!(newest_reachable(&bases, &t), Some(2));
    }

    #[test]
    fn a_gap_after_a_base_splits_the_window() {
        let t = timelines();
        let records = without(&records(), &["000000010000000A000000FF"]);
        let archive = Archive::new(&records, SIZE);
        let bases = [
            base("a", 1, "A/FD000028", "A/FE000100", 0),
            base("b", 2, "B/02000028", "B/02100000", 7),
            base("c", 2, "B/02200000", "B/02300000", 8), // inside b's window: adds nothing
        ];
        let w = windows(&bases, &archive, &t, 2).expect("known");
        assert_eq!(w.first_missing, Some(name("000000010000000A000000FF")));
        assert_eq!(w.windows.len(), 2);
        assert_eq!(w.windows[0].latest.lsn, lsn("A/FF000000"));
        assert_eq!(w.windows[0].latest.at, at(2));
        assert_eq!(w.windows[1].base, "b");
        assert!(
            w.to_string()
                .ends_with("on timeline 2 (WAL segment 000000010000000A000000FF is missing)"),
            "{w}"
        );
        assert!(w.to_string().contains(") and from "), "{w}");
    }

    #[test]
    fn bases_without_their_wal_open_no_window() {
        let t = timelines();
        // A gap at the start: the base's first segment is missing.
        let records = without(&records(), &["000000010000000A000000FD"]);
        let archive = Archive::new(&records, SIZE);
        let bases = [base("a", 1, "A/FD000028", "A/FE000100", 0)];
        let w = windows(&bases, &archive, &t, 2).expect("known");
        assert!(w.windows.is_empty());
        assert_eq!(w.first_missing, Some(name("000000010000000A000000FD")));
        assert_eq!(w.to_string(), "nothing is recoverable on timeline 2 yet");
        // The stop segment not archived yet (the backup is still waiting for it): no gap.
        let records = records_until("000000010000000A000000FD");
        let archive = Archive::new(&records, SIZE);
        let w = windows(&bases, &archive, &t, 2).expect("known");
        assert!(w.windows.is_empty());
        assert_eq!(w.first_missing, None);
        // A base on timeline 1 after the switch is not on timeline 2's path.
        let after = [base("old-primary", 1, "B/02000028", "B/02100000", 7)];
        assert!(windows(&after, &archive, &t, 2)
            .expect("known")
            .windows
            .is_empty());
        assert_eq!(newest_reachable(&after, &t), Some(1));
        assert_eq!(newest_reachable(&[], &t), None);
    }

    fn records_until(last: &str) -> Vec<Archived> {
        records()
            .into_iter()
            .filter(|r| r.file.to_string().as_str() <= last)
            .collect()
    }

    #[test]
    fn the_newest_file_on_a_path() {
        let t = timelines();
        let records = records();
        let archive = Archive::new(&records, SIZE);
        let n = archive.newest(&t, 2).expect("known").expect("some");
        assert_eq!(n.segment, name("000000020000000B00000004"));
        assert!(n.partial);
        assert_eq!(n.end, lsn("B/04123000"));
        assert_eq!(n.record.pushed_at, at(9));
        // On timeline 1: the final partial; timeline 2's files are not on its path.
        let n = archive.newest(&t, 1).expect("known").expect("some");
        assert_eq!(
            (n.segment, n.end),
            (name("000000010000000B00000001"), lsn("B/01000A28"))
        );
        let only_full = without(&records, &["000000020000000B00000004.partial"]);
        let archive = Archive::new(&only_full, SIZE);
        let n = archive.newest(&t, 2).expect("known").expect("some");
        assert_eq!((n.end, n.partial), (lsn("B/04000000"), false));
        assert!(Archive::new(&[], SIZE)
            .newest(&t, 2)
            .expect("known")
            .is_none());
    }

    #[test]
    fn two_switches_in_a_row() {
        // Timeline 3 began at B/03000100 on timeline 2 (a second promotion).
        let mut t = timelines();
        let history = "1\tB/01000A28\tno recovery target specified\n\n\
                       2\tB/03000100\tbefore 2026-12-03 14:08:30+00\n";
        t.insert(3, parse(3, history).expect("valid"))
            .expect("insert");
        let got =
            expected(&t, (1, lsn("A/FF000028")), (3, lsn("B/04000100")), SIZE).expect("on path");
        assert_eq!(
            strings(&got),
            [
                "000000010000000A000000FF",
                "000000010000000B00000000",
                "000000020000000B00000001",
                "000000020000000B00000002",
                "000000030000000B00000003",
                "000000030000000B00000004",
            ]
        );
        let mut records = without(&records(), &["000000020000000B00000004.partial"]);
        // Timeline 2's copy of B/03 is its final partial now; timeline 3 has B/03 and B/04.
        records.retain(|r| r.file.to_string() != "000000020000000B00000003");
        records.push(partial("000000020000000B00000003", 8, "B/03000100"));
        records.push(seg("000000030000000B00000003", 9));
        records.push(seg("000000030000000B00000004", 10));
        let archive = Archive::new(&records, SIZE);
        let bases = [base("a", 1, "A/FD000028", "A/FE000100", 0)];
        let w = windows(&bases, &archive, &t, 3).expect("known");
        assert_eq!(w.first_missing, None);
        let latest = w.latest().expect("a window").latest;
        assert_eq!(
            (latest.timeline, latest.lsn, latest.at),
            (3, lsn("B/05000000"), at(10))
        );
        // On timeline 2 the window ends at its final partial.
        let w = windows(&bases, &archive, &t, 2).expect("known");
        assert_eq!(w.latest().map(|l| l.latest.lsn), Some(lsn("B/03000100")));
        assert_eq!(newest_reachable(&bases, &t), Some(3));
        assert_eq!(
            archive
                .first_missing(&t, 3, &got, Some(lsn("B/04000100")))
                .expect("known"),
            None
        );
    }

    #[test]
    fn archived_from_a_record() {
        let record = WalRecord {
            format: 1,
            kind: super::super::WalKind::Partial,
            name: "000000020000000B00000004.partial".into(),
            key: "app/wal/000000020000000B/000000020000000B00000004.partial.1.zst.age".into(),
            system_identifier: "7301234567890123456".into(),
            server_major: Some(17),
            timeline: 2,
            start_lsn: Some(lsn("B/04000000")),
            end_lsn: Some(lsn("B/04123000")),
            r#final: false,
            segment_bytes: Some(16 << 20),
            raw_sha256: "aa".repeat(32),
            raw_bytes: 16 << 20,
            sha256: "bb".repeat(32),
            bytes: 123_456,
            recipients: vec![],
            switches: vec![],
            pushed_at: "2026-12-03T14:09:00Z".into(),
            pushed_by: "db1".into(),
            dr_version: "0.1.0".into(),
            source: "stream".into(),
        };
        let a = Archived::from_record(&record).expect("valid");
        assert_eq!(a.pushed_at, at(9));
        assert_eq!(a.end_lsn, Some(lsn("B/04123000")));
        let mut bad = record.clone();
        bad.end_lsn = None;
        let e = Archived::from_record(&bad).expect_err("no end");
        assert!(e.to_string().contains("end_lsn") && e.to_string().contains(&record.key));
        let mut bad = record.clone();
        bad.pushed_at = "yesterday".into();
        assert!(Archived::from_record(&bad).is_err());
        let mut bad = record;
        bad.name = "pg_wal".into();
        assert!(Archived::from_record(&bad).is_err());
    }
}
