//! Timeline history files and the timeline graph they make.
//!
//! PostgreSQL writes `{N}.history` when timeline N begins (promotion, or the end of a point in
//! time recovery): a copy of the parent's history plus one line `parentTLI<TAB>X/Y<TAB>reason`,
//! so the file of timeline N lists every ancestor, oldest first, each with the position where
//! it ended (`src/backend/access/transam/timeline.c`, `writeTimeLineHistory`). Timeline 1 has
//! no file. The rules below follow PostgreSQL's own reader and lookups in the same file
//! (`readTimeLineHistory`, `tliOfPointInHistory`) and the file choice of recovery
//! (`xlogrecovery.c`, `XLogFileReadAnyTLI`), so dr asks for the files PostgreSQL will ask for.

use std::collections::BTreeMap;

use super::{Lsn, SegmentSize, Switch, WalKind, WalRecord};

/// A history file that cannot be read; names the file and the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("timeline history {timeline:08X}.history, line {line}: {reason}")]
pub struct HistoryError {
    pub timeline: u32,
    pub line: usize,
    pub reason: String,
}

impl HistoryError {
    pub fn hint(&self) -> &'static str {
        "each line is `parentTLI<TAB>X/Y<TAB>reason` with parent timelines increasing and below \
         the file's own timeline; compare the archived file with the server's \
         pg_wal/{timeline}.history (PostgreSQL refuses the same file)"
    }
}

/// Parse the history file of `timeline`: the switches it lists, oldest first.
///
/// As `readTimeLineHistory`: blank lines and lines whose first non-blank character is `#` are
/// skipped; the first field is the parent timeline (decimal), the second its switch point
/// (`X/Y`), the rest of the line (the reason) is ignored. Parent timelines must increase and
/// stay below `timeline`. PostgreSQL separates fields with a tab (`sscanf("%u\t%X/%X")`, where
/// a tab matches any run of white space), so any white space is accepted here too.
pub fn parse(timeline: u32, text: &str) -> Result<Vec<Switch>, HistoryError> {
    let mut switches: Vec<Switch> = Vec::new();
    let mut last_line = 1;
    for (i, line) in text.lines().enumerate() {
        let error = |reason: String| HistoryError {
            timeline,
            line: i + 1,
            reason,
        };
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let mut fields = trimmed.split_whitespace();
        let first = fields.next().unwrap_or_default();
        let parent: u32 = first
            .parse()
            .ok()
            .filter(|t| *t > 0)
            .ok_or_else(|| error(format!("expected a numeric timeline id, found `{first}`")))?;
        let lsn: Lsn = match fields.next() {
            Some(text) => text.parse().map_err(|_| {
                error(format!(
                    "expected a switch point X/Y after timeline {parent}, found `{text}`"
                ))
            })?,
            None => {
                return Err(error(format!(
                    "expected a switch point X/Y after timeline {parent}"
                )))
            }
        };
        if let Some(last) = switches.last() {
            if parent <= last.timeline {
                return Err(error(format!(
                    "timeline ids must increase: {parent} follows {}",
                    last.timeline
                )));
            }
        }
        switches.push(Switch {
            timeline: parent,
            lsn,
        });
        last_line = i + 1;
    }
    check_parents(timeline, &switches).map_err(|reason| HistoryError {
        timeline,
        line: last_line,
        reason,
    })?;
    Ok(switches)
}

/// Parents increase and stay below the child (PostgreSQL: "Timeline IDs must be less than
/// child timeline's ID").
fn check_parents(timeline: u32, switches: &[Switch]) -> Result<(), String> {
    if timeline == 0 {
        return Err("timeline 0 does not exist".into());
    }
    if switches.windows(2).any(|w| w[1].timeline <= w[0].timeline) {
        return Err("parent timeline ids must increase".into());
    }
    match switches.last() {
        Some(last) if last.timeline >= timeline => Err(format!(
            "parent timeline {} is not below timeline {timeline}",
            last.timeline
        )),
        _ => Ok(()),
    }
}

/// The timeline graph is asked about a timeline it cannot follow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimelineError {
    #[error("timeline {timeline} has no history record in the archive ({timeline:08X}.history)")]
    Unknown { timeline: u32 },
    #[error("history of timeline {timeline} is not valid: {reason}")]
    Invalid { timeline: u32, reason: String },
}

impl TimelineError {
    pub fn hint(&self) -> String {
        match self {
            TimelineError::Unknown { timeline } => format!(
                "PostgreSQL archives {timeline:08X}.history when the timeline begins; push it \
                 from the server (`dr wal push pg_wal/{timeline:08X}.history`) or choose another \
                 timeline"
            ),
            TimelineError::Invalid { .. } => {
                "compare the archived history file with the server's pg_wal copy".into()
            }
        }
    }
}

/// One timeline in the history of another: it holds WAL positions `begin..end` (`end` is
/// `None` for the timeline itself, which has not ended). PostgreSQL's `TimeLineHistoryEntry`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub timeline: u32,
    pub begin: Lsn,
    pub end: Option<Lsn>,
}

impl Span {
    /// `begin <= lsn < end` (`tliOfPointInHistory`: a switch point belongs to the child).
    pub fn holds(&self, lsn: Lsn) -> bool {
        self.begin <= lsn && self.end.is_none_or(|end| lsn < end)
    }
}

/// The timelines the archive knows: timeline 1, and each timeline with a history record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timelines {
    histories: BTreeMap<u32, Vec<Switch>>,
}

impl Timelines {
    pub fn new() -> Timelines {
        Timelines::default()
    }

    /// Add the history of `timeline` (its switches, oldest first, as [`parse`] returns them or
    /// a history record carries them).
    pub fn insert(&mut self, timeline: u32, switches: Vec<Switch>) -> Result<(), TimelineError> {
        check_parents(timeline, &switches)
            .map_err(|reason| TimelineError::Invalid { timeline, reason })?;
        if timeline > 1 && switches.is_empty() {
            return Err(TimelineError::Invalid {
                timeline,
                reason: "the history lists no parent".into(),
            });
        }
        if timeline > 1 {
            self.histories.insert(timeline, switches);
        }
        Ok(())
    }

    /// The graph from the history records among `records` (other kinds are skipped).
    pub fn from_records<'a>(
        records: impl IntoIterator<Item = &'a WalRecord>,
    ) -> Result<Timelines, TimelineError> {
        let mut timelines = Timelines::new();
        for record in records {
            if record.kind == WalKind::History {
                timelines.insert(record.timeline, record.switches.clone())?;
            }
        }
        Ok(timelines)
    }

    /// Every known timeline, oldest first; timeline 1 always.
    pub fn known(&self) -> Vec<u32> {
        std::iter::once(1)
            .chain(self.histories.keys().copied())
            .collect()
    }

    /// The newest known timeline.
    pub fn newest(&self) -> u32 {
        self.histories.keys().next_back().copied().unwrap_or(1)
    }

    pub fn contains(&self, timeline: u32) -> bool {
        timeline == 1 || self.histories.contains_key(&timeline)
    }

    fn switches(&self, timeline: u32) -> Result<&[Switch], TimelineError> {
        match self.histories.get(&timeline) {
            Some(s) => Ok(s),
            None if timeline == 1 => Ok(&[]),
            None => Err(TimelineError::Unknown { timeline }),
        }
    }

    /// The timelines recovery on `timeline` passes through, oldest first, with the range of
    /// positions each holds; the last is `timeline` itself (`readTimeLineHistory`).
    pub fn history(&self, timeline: u32) -> Result<Vec<Span>, TimelineError> {
        let mut spans = Vec::new();
        let mut begin = Lsn(0);
        for switch in self.switches(timeline)? {
            spans.push(Span {
                timeline: switch.timeline,
                begin,
                end: Some(switch.lsn),
            });
            begin = switch.lsn;
        }
        spans.push(Span {
            timeline,
            begin,
            end: None,
        });
        Ok(spans)
    }

    /// The ancestors of `timeline`, oldest first (empty for timeline 1).
    pub fn ancestors(&self, timeline: u32) -> Result<Vec<u32>, TimelineError> {
        Ok(self
            .switches(timeline)?
            .iter()
            .map(|s| s.timeline)
            .collect())
    }

    /// Where `child` branched: its parent and the first position on `child` (`None` for
    /// timeline 1).
    pub fn switch_point(&self, child: u32) -> Result<Option<Switch>, TimelineError> {
        Ok(self.switches(child)?.last().copied())
    }

    /// Which timeline of `target`'s history holds `lsn`: the one whose range contains it, a
    /// switch point belonging to the child (`tliOfPointInHistory`, which scans newest first).
    pub fn timeline_of(&self, target: u32, lsn: Lsn) -> Result<u32, TimelineError> {
        self.history(target)?
            .iter()
            .rev()
            .find(|span| span.holds(lsn))
            .map(|span| span.timeline)
            .ok_or_else(|| TimelineError::Invalid {
                timeline: target,
                reason: format!("no timeline holds {lsn} (the history is not contiguous)"),
            })
    }

    /// The timeline in whose name recovery on `target` finds segment number `number`.
    ///
    /// PostgreSQL (`xlogrecovery.c`, `XLogFileReadAnyTLI`) tries the timelines of the target's
    /// history newest first and skips a timeline when `segno < beginseg`, `beginseg` being the
    /// segment of the timeline's first position ("Skip scanning the timeline ID that the
    /// logfile segment to read doesn't belong to"). So the segment is read from the newest
    /// timeline that had begun by the segment's end: the segment holding a switch point is
    /// read from the NEW timeline, whose copy starts with the parent's WAL up to the switch
    /// (the parent's copy of that segment is the `.partial` the old primary leaves), and a
    /// timeline that began and ended within one segment is never read at all.
    pub fn segment_timeline(
        &self,
        target: u32,
        number: u64,
        size: SegmentSize,
    ) -> Result<u32, TimelineError> {
        let history = self.history(target)?;
        Ok(segment_timeline_in(&history, number, size))
    }
}

/// [`Timelines::segment_timeline`] on a history already looked up.
pub fn segment_timeline_in(history: &[Span], number: u64, size: SegmentSize) -> u32 {
    history
        .iter()
        .rev()
        .find(|span| span.begin.0 == 0 || span.begin.0 / size.bytes() <= number)
        .map_or(1, |span| span.timeline)
}

/// The span of `timeline` in `history`, if it is on it.
pub fn span_of(history: &[Span], timeline: u32) -> Option<Span> {
    history.iter().find(|s| s.timeline == timeline).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What PostgreSQL 17 writes for timeline 3 after two promotions: a copy of timeline 2's
    /// file, an empty line (`writeTimeLineHistory` adds one in case the parent's file did not
    /// end with a newline), then its own line. Comments added by hand are allowed.
    const TL3: &str = "1\t0/3000158\tno recovery target specified\n\
                       \n\
                       # promoted after the migration test\n\
                       2\t0/5000A28\tbefore 2026-12-03 14:05:32.118+00\n";

    fn lsn(s: &str) -> Lsn {
        s.parse().expect("valid")
    }

    fn graph() -> Timelines {
        let mut t = Timelines::new();
        t.insert(
            2,
            parse(2, "1\t0/3000158\tno recovery target specified\n").expect("tl2"),
        )
        .expect("insert");
        t.insert(3, parse(3, TL3).expect("tl3")).expect("insert");
        t
    }

    #[test]
    fn parses_two_switches_with_comments_and_blank_lines() {
        let switches = parse(3, TL3).expect("valid");
        assert_eq!(
            switches,
            vec![
                Switch {
                    timeline: 1,
                    lsn: lsn("0/3000158")
                },
                Switch {
                    timeline: 2,
                    lsn: lsn("0/5000A28")
                }
            ]
        );
        // Spaces instead of tabs, leading white space, no reason, CRLF: as sscanf reads them.
        let loose = "  1 0/3000158\r\n\t# note\r\n2   0/5000A28   at restore point \"x\"\r\n";
        assert_eq!(parse(3, loose).expect("valid"), switches);
        assert_eq!(parse(2, "").expect("empty"), vec![]);
    }

    #[test]
    fn errors_name_the_file_and_line() {
        for (text, line, words) in [
            (
                "1\t0/3000158\tok\nx\t0/5000000\tbad\n",
                2,
                "numeric timeline id",
            ),
            ("\n\n1\n", 3, "switch point"),
            ("1\t0/30001G8\tbad\n", 1, "`0/30001G8`"),
            ("2\t0/3000158\n1\t0/5000000\n", 2, "must increase"),
            ("0\t0/3000158\n", 1, "numeric timeline id"),
        ] {
            let e = parse(3, text).expect_err(text);
            assert_eq!(e.line, line, "{text}: {e}");
            let message = e.to_string();
            assert!(message.contains("00000003.history, line"), "{message}");
            assert!(message.contains(words), "{text}: {message}");
        }
        let e = parse(2, "1\t0/3000158\n2\t0/5000000\n").expect_err("own timeline");
        assert!(e.to_string().contains("not below timeline 2"), "{e}");
        assert!(e.hint().contains("parentTLI"));
    }

    #[test]
    fn ancestors_and_switch_points() {
        let t = graph();
        assert_eq!(t.known(), vec![1, 2, 3]);
        assert_eq!(t.newest(), 3);
        assert_eq!(t.ancestors(3).expect("known"), vec![1, 2]);
        assert_eq!(t.ancestors(1).expect("known"), Vec::<u32>::new());
        assert_eq!(t.switch_point(1).expect("known"), None);
        assert_eq!(
            t.switch_point(3).expect("known"),
            Some(Switch {
                timeline: 2,
                lsn: lsn("0/5000A28")
            })
        );
        let e = t.ancestors(4).expect_err("unknown");
        assert_eq!(e, TimelineError::Unknown { timeline: 4 });
        assert!(e.to_string().contains("00000004.history"), "{e}");
        assert!(e.hint().contains("dr wal push"));
        assert_eq!(
            t.history(3).expect("known"),
            vec![
                Span {
                    timeline: 1,
                    begin: Lsn(0),
                    end: Some(lsn("0/3000158"))
                },
                Span {
                    timeline: 2,
                    begin: lsn("0/3000158"),
                    end: Some(lsn("0/5000A28"))
                },
                Span {
                    timeline: 3,
                    begin: lsn("0/5000A28"),
                    end: None
                },
            ]
        );
    }

    #[test]
    fn the_timeline_holding_a_position() {
        let t = graph();
        for (target, at, expected) in [
            (3, "0/0", 1),
            (3, "0/3000157", 1),
            (3, "0/3000158", 2), // a switch point is the child's first position
            (3, "0/5000A27", 2),
            (3, "0/5000A28", 3),
            (3, "FF/0", 3),
            (2, "0/6000000", 2), // on timeline 2's own history it never ended
            (1, "0/6000000", 1), // the old primary's timeline went on
        ] {
            assert_eq!(
                t.timeline_of(target, lsn(at)).expect("known"),
                expected,
                "{target} {at}"
            );
        }
    }

    #[test]
    fn the_switch_segment_is_read_from_the_new_timeline() {
        let t = graph();
        let size = SegmentSize::DEFAULT;
        // Timeline 2 began inside segment 3, timeline 3 inside segment 5.
        for (number, expected) in [(0, 1), (2, 1), (3, 2), (4, 2), (5, 3), (6, 3)] {
            assert_eq!(
                t.segment_timeline(3, number, size).expect("known"),
                expected,
                "{number}"
            );
        }
        assert_eq!(t.segment_timeline(1, 7, size).expect("known"), 1);
    }

    #[test]
    fn a_timeline_that_lived_within_one_segment_is_never_read() {
        // Timeline 2 began at 0/3000158 and timeline 3 at 0/3000F00: both in segment 3.
        let mut t = Timelines::new();
        t.insert(2, parse(2, "1\t0/3000158\tx\n").expect("valid"))
            .expect("insert");
        t.insert(
            3,
            parse(3, "1\t0/3000158\tx\n2\t0/3000F00\ty\n").expect("valid"),
        )
        .expect("insert");
        let size = SegmentSize::DEFAULT;
        assert_eq!(t.segment_timeline(3, 2, size).expect("known"), 1);
        assert_eq!(t.segment_timeline(3, 3, size).expect("known"), 3);
        assert_eq!(t.timeline_of(3, lsn("0/3000200")).expect("known"), 2);
    }

    #[test]
    fn switches_across_a_log_id() {
        // Timeline 2 began at A/FF000100: in the last 16 MiB segment of log id A.
        let mut t = Timelines::new();
        t.insert(
            2,
            parse(2, "1\tA/FF000100\tno recovery target specified\n").expect("valid"),
        )
        .expect("insert");
        let size = SegmentSize::DEFAULT;
        let last_of_a = 0xA * 256 + 0xFF;
        assert_eq!(
            t.segment_timeline(2, last_of_a - 1, size).expect("known"),
            1
        );
        assert_eq!(t.segment_timeline(2, last_of_a, size).expect("known"), 2);
        assert_eq!(
            t.segment_timeline(2, last_of_a + 1, size).expect("known"),
            2
        );
        // With 1 GiB segments the whole log id A from A/C0000000 is one segment.
        let big = SegmentSize::new(1 << 30).expect("valid");
        assert_eq!(t.segment_timeline(2, 0xA * 4 + 2, big).expect("known"), 1);
        assert_eq!(t.segment_timeline(2, 0xA * 4 + 3, big).expect("known"), 2);
    }

    #[test]
    fn built_from_history_records() {
        let record = |timeline: u32, switches: Vec<Switch>| WalRecord {
            format: 1,
            kind: WalKind::History,
            name: format!("{timeline:08X}.history"),
            key: format!("app/wal/history/{timeline:08X}.history.0011223344556677.zst.age"),
            system_identifier: String::new(),
            server_major: None,
            timeline,
            start_lsn: None,
            end_lsn: None,
            r#final: false,
            segment_bytes: None,
            raw_sha256: "aa".repeat(32),
            raw_bytes: 42,
            sha256: "bb".repeat(32),
            bytes: 300,
            recipients: vec![],
            switches,
            pushed_at: "2026-12-03T14:05:40Z".into(),
            pushed_by: "db1".into(),
            dr_version: "0.1.0".into(),
            source: "archive".into(),
        };
        let tl2 = parse(2, "1\t0/3000158\tx\n").expect("valid");
        let t = Timelines::from_records(&[record(2, tl2.clone())]).expect("valid");
        assert_eq!(t.ancestors(2).expect("known"), vec![1]);
        let e = Timelines::from_records(&[record(2, vec![])]).expect_err("no parent");
        assert!(e.to_string().contains("no parent"), "{e}");
        let bad = vec![Switch {
            timeline: 5,
            lsn: Lsn(1),
        }];
        assert!(Timelines::from_records(&[record(2, bad)]).is_err());
    }
}
