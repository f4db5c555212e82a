//! The restore plan of `dr restore --at TIME|LSN|latest --to-dir DIR` (docs/design/PITR.md §6):
//! the base backup, the recovery timeline and the WAL segments recovery will read, or why the
//! target cannot be reached — decided before anything is written. Pure: the caller lists the
//! manifests and records.
//!
//! **Timeline.** `--timeline N` if given. Otherwise, among the timelines a trusted base can
//! recover onto: for an LSN, the newest whose own part (from its switch point on) holds it;
//! for a time, the newest whose history record was pushed at or before it (a timeline begins
//! at its promotion, and its history is pushed then); for `latest`, the newest.
//!
//! **Base.** The newest trusted base on the timeline's path that ended at or before the
//! target (its stop LSN for an LSN target, its stop time for a time target).
//!
//! **WAL for a time target.** Commit times are inside the WAL, not in the records, so the
//! segment holding the target time is only known approximately. A segment is pushed after it
//! is complete, so every segment pushed at or before the target time holds only WAL from
//! before it; the first records after the target are, when archiving keeps up, in the next
//! one. The plan therefore checks every segment from the base's start through the one after
//! the newest segment pushed at or before the target (at least through the base's stop
//! segment), and refuses a target later than the push of the newest contiguous file (the
//! window's end). Recovery may read further; `dr wal fetch` still refuses a gap then.

use std::fmt;

use chrono::{DateTime, Utc};

use super::continuity::{
    check_on_path, windows, Archive, Archived, Base, Point, Run, Window, Windows,
};
use super::history::{TimelineError, Timelines};
use super::{Lsn, SegmentName, SegmentSize, WalFile};

/// Where recovery stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `recovery_target_time`
    Time(DateTime<Utc>),
    /// `recovery_target_lsn`
    Lsn(Lsn),
    /// The end of the archived WAL.
    Latest,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Time(t) => write!(f, "{}", t.format("%Y-%m-%d %H:%M:%S%.fZ")),
            Target::Lsn(l) => write!(f, "LSN {l}"),
            Target::Latest => f.write_str("latest"),
        }
    }
}

/// Why the plan recovers onto its timeline (printed with the plan).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimelineChoice {
    /// `--timeline`
    Given,
    /// The newest timeline whose own part holds the target LSN.
    HoldsLsn,
    /// The timeline current at the target time.
    CurrentAt,
    /// The newest timeline a base backup reaches (`latest`).
    Newest,
}

impl fmt::Display for TimelineChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimelineChoice::Given => "as given",
            TimelineChoice::HoldsLsn => "the newest timeline holding the target position",
            TimelineChoice::CurrentAt => "the timeline current at the target time",
            TimelineChoice::Newest => "the newest timeline a base backup reaches",
        })
    }
}

/// What the restore will do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub target: Target,
    pub base: Base,
    /// `recovery_target_timeline`, always explicit.
    pub timeline: u32,
    pub chosen: TimelineChoice,
    /// The segments recovery reads, in order, each under the timeline it is read from.
    pub segments: Vec<SegmentName>,
    /// The last segment is served from this partial (the restore report names its upload).
    pub partial: Option<Archived>,
    /// Stored bytes of those segments.
    pub bytes: u64,
    /// The end of the WAL the plan checked.
    pub end: Lsn,
    /// What the chosen base can reach.
    pub window: Window,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("no trusted physical base backup in the repository")]
    NoBase,
    #[error(transparent)]
    Timeline(#[from] TimelineError),
    #[error("no trusted base backup is in the history of timeline {timeline}")]
    Unreachable { timeline: u32 },
    #[error("recovery target {target} is outside the window: {windows}")]
    Outside { target: Target, windows: Windows },
    #[error("WAL segment {segment} is missing from the archive; restoring base {base} to {target} needs it ({windows})")]
    Missing {
        segment: SegmentName,
        base: String,
        target: Target,
        windows: Windows,
    },
}

impl PlanError {
    pub fn hint(&self) -> String {
        match self {
            PlanError::NoBase => "take one with `dr backup --physical`, or trust the key that signed the existing ones".into(),
            PlanError::Timeline(e) => e.hint(),
            PlanError::Unreachable { .. } => "choose another timeline with --timeline, or take a base backup on this one".into(),
            PlanError::Outside { .. } => "choose a target inside the window, or another timeline with --timeline".into(),
            PlanError::Missing { segment, .. } => format!(
                "if the server still has pg_wal/{segment}, push it (`dr wal push`); otherwise choose a target before it or a base backup after it"
            ),
        }
    }
}

fn reaches(trusted: &[Base], timelines: &Timelines, timeline: u32) -> bool {
    timelines.history(timeline).is_ok_and(|history| {
        trusted
            .iter()
            .any(|b| check_on_path(&history, timeline, b.timeline, b.start, b.stop).is_ok())
    })
}

/// The recovery timeline and why (see the module's documentation).
fn choose_timeline(
    trusted: &[Base],
    records: &[Archived],
    timelines: &Timelines,
    target: Target,
    given: Option<u32>,
) -> Result<(u32, TimelineChoice), PlanError> {
    if let Some(timeline) = given {
        timelines.history(timeline)?;
        if !reaches(trusted, timelines, timeline) {
            return Err(PlanError::Unreachable { timeline });
        }
        return Ok((timeline, TimelineChoice::Given));
    }
    let reachable: Vec<u32> = timelines
        .known()
        .into_iter()
        .filter(|&t| reaches(trusted, timelines, t))
        .collect();
    let (Some(&oldest), Some(&newest)) = (reachable.first(), reachable.last()) else {
        // Every base is on a timeline the graph does not know: say which history is missing.
        let timeline = trusted.iter().map(|b| b.timeline).max().unwrap_or(1);
        timelines.history(timeline)?;
        return Err(PlanError::Unreachable { timeline });
    };
    let newest_where = |ok: &dyn Fn(u32) -> bool| {
        reachable
            .iter()
            .rev()
            .copied()
            .find(|&t| ok(t))
            .unwrap_or(oldest)
    };
    Ok(match target {
        Target::Latest => (newest, TimelineChoice::Newest),
        Target::Lsn(lsn) => {
            let begins = |t: u32| {
                timelines
                    .switch_point(t)
                    .is_ok_and(|s| s.is_none_or(|s| s.lsn <= lsn))
            };
            (newest_where(&begins), TimelineChoice::HoldsLsn)
        }
        Target::Time(at) => {
            let started = |t: u32| {
                t == 1
                    || records
                        .iter()
                        .any(|r| r.file == WalFile::History(t) && r.pushed_at <= at)
            };
            (newest_where(&started), TimelineChoice::CurrentAt)
        }
    })
}

/// Plan the restore of `target` from `bases` (only trusted ones are used) and the archived
/// `records`.
pub fn plan(
    bases: &[Base],
    records: &[Archived],
    timelines: &Timelines,
    size: SegmentSize,
    target: Target,
    timeline: Option<u32>,
) -> Result<Plan, PlanError> {
    let trusted: Vec<Base> = bases.iter().filter(|b| b.trusted).cloned().collect();
    if trusted.is_empty() {
        return Err(PlanError::NoBase);
    }
    let (timeline, chosen) = choose_timeline(&trusted, records, timelines, target, timeline)?;
    let history = timelines.history(timeline)?;
    let archive = Archive::new(records, size);
    let windows = windows(&trusted, &archive, timelines, timeline)?;
    let outside = || PlanError::Outside {
        target,
        windows: windows.clone(),
    };
    let base = trusted
        .iter()
        .filter(|b| check_on_path(&history, timeline, b.timeline, b.start, b.stop).is_ok())
        .filter(|b| match target {
            Target::Time(at) => b.stopped_at <= at,
            Target::Lsn(lsn) => b.stop <= lsn,
            Target::Latest => true,
        })
        .max_by_key(|b| (b.stop, b.stopped_at))
        .ok_or_else(outside)?;
    let first = base.start.0 / size.bytes();
    let run = archive.run(&history, first);
    let short = |run: &Run<'_>| match run.gap {
        Some(segment) => PlanError::Missing {
            segment,
            base: base.id.clone(),
            target,
            windows: windows.clone(),
        },
        None => outside(),
    };
    let (Some(end_at), true) = (run.end_at, run.end >= base.stop) else {
        return Err(short(&run));
    };
    let run_last = first + run.segments.len() as u64 - 1;
    let last = match target {
        Target::Lsn(lsn) if lsn >= run.end => return Err(short(&run)),
        Target::Lsn(lsn) => lsn.0 / size.bytes(),
        Target::Time(at) if at > end_at => return Err(short(&run)),
        Target::Time(at) => {
            let pushed_by_then = run.segments.iter().enumerate().filter(|(_, s)| {
                archive
                    .segment(**s)
                    .or_else(|| archive.partial(**s))
                    .is_some_and(|a| a.pushed_at <= at)
            });
            let newest = pushed_by_then.map(|(i, _)| first + i as u64).max();
            let stop_segment = base.stop.0 / size.bytes();
            newest
                .map_or(stop_segment, |n| n + 1)
                .max(stop_segment)
                .min(run_last)
        }
        Target::Latest if run.gap.is_some() => return Err(short(&run)),
        Target::Latest => run_last,
    };
    let segments: Vec<SegmentName> = run.segments[..=(last - first) as usize].to_vec();
    let partial = (last == run_last).then_some(run.partial).flatten();
    let bytes = segments
        .iter()
        .filter_map(|s| archive.segment(*s))
        .chain(partial)
        .map(|a| a.bytes)
        .sum();
    let end = match partial {
        Some(_) => run.end,
        None => Lsn((last + 1) * size.bytes()),
    };
    let window = Window {
        timeline,
        base: base.id.clone(),
        earliest: Point {
            timeline: base.timeline,
            lsn: base.stop,
            at: base.stopped_at,
        },
        latest: Point {
            timeline: segments.last().map_or(timeline, |s| s.timeline),
            lsn: run.end,
            at: end_at,
        },
    };
    Ok(Plan {
        target,
        base: base.clone(),
        timeline,
        chosen,
        segments,
        partial: partial.cloned(),
        bytes,
        end,
        window,
    })
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::super::continuity::tests::{at, base, lsn, name, records, seg, timelines};
    use super::*;

    const SIZE: SegmentSize = SegmentSize::DEFAULT;

    /// The continuity fixture plus timeline 2's history record, pushed at the promotion.
    fn archive() -> Vec<Archived> {
        let mut r = records();
        r.push(Archived {
            file: WalFile::History(2),
            key: "app/wal/history/00000002.history.0a0b0c0d0e0f0102.zst.age".into(),
            pushed_at: at(5),
            end_lsn: None,
            bytes: 200,
        });
        r
    }

    fn base_a() -> Base {
        base("20261203T135900Z", 1, "A/FD000028", "A/FE000100", 0)
    }

    fn base_b() -> Base {
        base("20261203T140630Z", 2, "B/02000028", "B/02100000", 7)
    }

    fn strings(list: &[SegmentName]) -> Vec<String> {
        list.iter().map(ToString::to_string).collect()
    }

    fn run(bases: &[Base], records: &[Archived], target: Target) -> Result<Plan, PlanError> {
        plan(bases, records, &timelines(), SIZE, target, None)
    }

    #[test]
    fn base_on_timeline_1_and_a_time_on_timeline_2() {
        let target = Target::Time(at(7) + Duration::seconds(30));
        let p = run(&[base_a()], &archive(), target).expect("plan");
        assert_eq!((p.timeline, p.chosen), (2, TimelineChoice::CurrentAt));
        assert_eq!(p.base.id, "20261203T135900Z");
        // B/02 was the newest pushed by then; B/03 holds the first WAL after the target.
        assert_eq!(
            strings(&p.segments),
            [
                "000000010000000A000000FD",
                "000000010000000A000000FE",
                "000000010000000A000000FF",
                "000000010000000B00000000",
                "000000020000000B00000001",
                "000000020000000B00000002",
                "000000020000000B00000003",
            ]
        );
        assert_eq!(p.partial, None);
        assert_eq!(p.bytes, 7 * 4_000_000);
        assert_eq!(p.end, lsn("B/04000000"));
        assert_eq!(p.window.latest.lsn, lsn("B/04123000"));
    }

    #[test]
    fn a_time_before_the_promotion_stays_on_timeline_1() {
        let target = Target::Time(at(3) + Duration::seconds(30));
        let p = run(&[base_a()], &archive(), target).expect("plan");
        assert_eq!(p.timeline, 1);
        assert_eq!(
            strings(&p.segments).last().map(String::as_str),
            Some("000000010000000B00000000")
        );
        // After the last push on timeline 1 (its final partial at 14:05): outside its window.
        let e = plan(
            &[base_a()],
            &archive(),
            &timelines(),
            SIZE,
            Target::Time(at(6)),
            Some(1),
        )
        .expect_err("outside");
        assert!(matches!(e, PlanError::Outside { .. }), "{e}");
    }

    #[test]
    fn latest_ends_with_the_partial() {
        let p = run(&[base_a()], &archive(), Target::Latest).expect("plan");
        assert_eq!((p.timeline, p.chosen), (2, TimelineChoice::Newest));
        assert_eq!(p.segments.len(), 9 - 1); // timeline 1's partial is not read
        assert_eq!(
            p.segments.last().copied(),
            Some(name("000000020000000B00000004"))
        );
        assert_eq!(p.partial.as_ref().map(|a| a.pushed_at), Some(at(9)));
        assert_eq!(p.end, lsn("B/04123000"));
        assert_eq!(p.bytes, 7 * 4_000_000 + 1_000_000);
        // With --timeline 1: the old primary's end.
        let p = plan(
            &[base_a()],
            &archive(),
            &timelines(),
            SIZE,
            Target::Latest,
            Some(1),
        )
        .expect("plan");
        assert_eq!((p.timeline, p.chosen), (1, TimelineChoice::Given));
        assert_eq!(p.end, lsn("B/01000A28"));
        assert_eq!(
            p.partial.map(|a| a.file.to_string()),
            Some("000000010000000B00000001.partial".into())
        );
    }

    #[test]
    fn lsn_targets_pick_the_timeline_holding_them() {
        let p = run(&[base_a()], &archive(), Target::Lsn(lsn("B/02000100"))).expect("plan");
        assert_eq!((p.timeline, p.chosen), (2, TimelineChoice::HoldsLsn));
        assert_eq!(
            p.segments.last().copied(),
            Some(name("000000020000000B00000002"))
        );
        let p = run(&[base_a()], &archive(), Target::Lsn(lsn("A/FF000100"))).expect("plan");
        assert_eq!(p.timeline, 1);
        assert_eq!(
            p.segments.last().copied(),
            Some(name("000000010000000A000000FF"))
        );
        // Inside the partial: fine; at its end: nothing holds it.
        assert!(run(&[base_a()], &archive(), Target::Lsn(lsn("B/04122FFF"))).is_ok());
        let e = run(&[base_a()], &archive(), Target::Lsn(lsn("B/04123000"))).expect_err("end");
        assert!(matches!(e, PlanError::Outside { .. }), "{e}");
    }

    #[test]
    fn targets_outside_the_window_say_the_window() {
        let on_1 = "recoverable from 2026-12-03 14:00:00Z (A/FE000100) to \
                    2026-12-03 14:05:00Z (B/1000A28) on timeline 1";
        let on_2 = "recoverable from 2026-12-03 14:00:00Z (A/FE000100) to \
                    2026-12-03 14:09:00Z (B/4123000) on timeline 2";
        for (target, window) in [
            (Target::Time(at(-10)), on_1), // timeline 1 was current then
            (Target::Lsn(lsn("A/FE000000")), on_1),
            (Target::Time(at(20)), on_2),
            (Target::Lsn(lsn("B/05000000")), on_2),
        ] {
            let e = run(&[base_a()], &archive(), target).expect_err("outside");
            let message = e.to_string();
            assert!(
                message.contains(&format!("recovery target {target} is outside the window"))
                    && message.ends_with(window),
                "{message}"
            );
            assert!(e.hint().contains("inside the window"));
        }
    }

    #[test]
    fn a_missing_segment_is_named() {
        let records: Vec<Archived> = archive()
            .into_iter()
            .filter(|a| a.file.to_string() != "000000010000000A000000FF")
            .collect();
        for target in [Target::Time(at(7)), Target::Latest, Target::Lsn(lsn("B/0"))] {
            let e = run(&[base_a()], &records, target).expect_err("missing");
            assert!(
                matches!(e, PlanError::Missing { segment, .. } if segment == name("000000010000000A000000FF")),
                "{e}"
            );
            let message = e.to_string();
            assert!(
                message.contains("WAL segment 000000010000000A000000FF is missing"),
                "{message}"
            );
            assert!(
                message.contains("to 2026-12-03 14:02:00Z (A/FF000000)"),
                "{message}"
            );
            assert!(e.hint().contains("pg_wal/000000010000000A000000FF"));
        }
        // Before the gap, the same archive serves.
        assert!(run(&[base_a()], &records, Target::Lsn(lsn("A/FE800000"))).is_ok());
        // A newer base after the gap serves later targets.
        let p = run(&[base_a(), base_b()], &records, Target::Latest).expect("plan");
        assert_eq!(p.base.id, base_b().id);
        assert_eq!(
            p.segments.first().copied(),
            Some(name("000000020000000B00000002"))
        );
    }

    #[test]
    fn the_newest_trusted_base_before_the_target() {
        let bases = [base_a(), base_b()];
        let p = run(&bases, &archive(), Target::Time(at(8))).expect("plan");
        assert_eq!(p.base.id, base_b().id);
        // B/03 was pushed at 14:08 exactly: the next one (the partial) is read too.
        assert_eq!(
            strings(&p.segments),
            [
                "000000020000000B00000002",
                "000000020000000B00000003",
                "000000020000000B00000004"
            ]
        );
        // Just after b ended, before anything newer was pushed: b's stop segment and the next.
        let p = run(
            &bases,
            &archive(),
            Target::Time(at(7) + Duration::seconds(1)),
        )
        .expect("plan");
        assert_eq!(p.segments.len(), 2);
        let p = run(&bases, &archive(), Target::Time(at(6))).expect("plan");
        assert_eq!(p.base.id, base_a().id);
        // An untrusted newer base is never used.
        let mut untrusted = base_b();
        untrusted.trusted = false;
        let p = run(&[base_a(), untrusted.clone()], &archive(), Target::Latest).expect("plan");
        assert_eq!(p.base.id, base_a().id);
        assert_eq!(
            run(&[untrusted], &archive(), Target::Latest),
            Err(PlanError::NoBase)
        );
    }

    #[test]
    fn timelines_that_cannot_be_followed() {
        let e = plan(
            &[base_a()],
            &archive(),
            &timelines(),
            SIZE,
            Target::Latest,
            Some(3),
        )
        .expect_err("unknown");
        assert!(e.to_string().contains("00000003.history"), "{e}");
        assert!(e.hint().contains("dr wal push"));
        // A base on timeline 1 after the switch cannot reach timeline 2.
        let old = base("old", 1, "B/02000028", "B/02100000", 7);
        let e = plan(
            std::slice::from_ref(&old),
            &archive(),
            &timelines(),
            SIZE,
            Target::Latest,
            Some(2),
        )
        .expect_err("unreachable");
        assert_eq!(e, PlanError::Unreachable { timeline: 2 });
        let mut more = archive();
        more.push(seg("000000010000000B00000002", 8));
        let p = run(&[old], &more, Target::Latest).expect("plan");
        assert_eq!(p.timeline, 1);
        // A base on a timeline without a history record.
        let lost = base("lost", 3, "C/0", "C/100", 9);
        let e = run(&[lost], &archive(), Target::Latest).expect_err("unknown");
        assert!(matches!(e, PlanError::Timeline(_)), "{e}");
    }

    /// A point found to the microsecond (the commit time `pg_waldump` prints, minus one) is
    /// named with it: the plan and "restored … as of" must not round it to a second the
    /// recovery does not stop at.
    #[test]
    fn a_time_target_is_named_to_the_microsecond() {
        let t: DateTime<Utc> = "2026-12-04T14:05:32.117283Z".parse().expect("time");
        assert_eq!(Target::Time(t).to_string(), "2026-12-04 14:05:32.117283Z");
        let whole: DateTime<Utc> = "2026-12-04T14:05:32Z".parse().expect("time");
        assert_eq!(Target::Time(whole).to_string(), "2026-12-04 14:05:32Z");
    }
}
