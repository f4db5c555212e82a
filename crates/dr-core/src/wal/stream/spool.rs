//! The spool pg_receivewal writes into, read as a plan: which files to push, which partial
//! is the one growing, what may be deleted. Pure apart from [`scan`].
//!
//! pg_receivewal writes the segment it receives as `{SEG}.partial` and renames it to `{SEG}`
//! once it is complete and fsynced; on a timeline switch it writes `{T}.history` and leaves
//! the old timeline's last segment as `.partial` for good. It resumes after the newest file
//! it finds here, so the newest complete segment is kept until a newer file exists.

use std::path::{Path, PathBuf};

use dr_catalog::wal::{SegmentName, WalFile};

/// One WAL file in the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) file: WalFile,
    pub(crate) path: PathBuf,
}

/// What one pass does with the spool.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Timeline histories, first: recovery needs a timeline's history before its WAL.
    pub(crate) histories: Vec<Entry>,
    /// Complete segments in WAL order, each with whether its local file is deleted once it
    /// is archived (all but the newest file, which pg_receivewal resumes after).
    pub(crate) segments: Vec<(Entry, bool)>,
    /// Partials of timelines that ended (a newer timeline exists): never grow again.
    pub(crate) ended: Vec<Entry>,
    /// The partial pg_receivewal is writing now.
    pub(crate) growing: Option<Entry>,
    /// Partials that a complete segment of the same name replaced: deleted.
    pub(crate) stale: Vec<PathBuf>,
}

/// The WAL files in `dir` (anything else, such as pg_receivewal's temporary files, is left
/// alone).
pub(crate) fn scan(dir: &Path) -> std::io::Result<Vec<Entry>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(file) = name.to_str().and_then(|n| n.parse::<WalFile>().ok()) else {
            continue;
        };
        if matches!(file, WalFile::Backup(..)) {
            continue;
        }
        out.push(Entry {
            file,
            path: entry.path(),
        });
    }
    Ok(out)
}

/// Sort key of a segment or partial in WAL order: position, then timeline.
fn order(s: SegmentName) -> (u32, u32, u32) {
    (s.log, s.seg, s.timeline)
}

pub(crate) fn plan(mut entries: Vec<Entry>) -> Plan {
    entries.sort_by_key(|e| match e.file {
        WalFile::History(t) => (0, (0, 0, t)),
        WalFile::Segment(s) | WalFile::Partial(s) | WalFile::Backup(s, _) => (1, order(s)),
    });
    let newest_timeline = entries
        .iter()
        .filter_map(|e| e.file.segment())
        .map(|s| s.timeline)
        .max();
    let newest = entries
        .iter()
        .filter_map(|e| e.file.segment())
        .map(order)
        .max();
    let complete: Vec<SegmentName> = entries
        .iter()
        .filter_map(|e| match e.file {
            WalFile::Segment(s) => Some(s),
            _ => None,
        })
        .collect();
    let mut plan = Plan::default();
    for e in entries {
        match e.file {
            WalFile::History(_) => plan.histories.push(e),
            WalFile::Segment(s) => {
                let delete = Some(order(s)) != newest;
                plan.segments.push((e, delete));
            }
            WalFile::Partial(s) if complete.contains(&s) => plan.stale.push(e.path),
            WalFile::Partial(s) if Some(s.timeline) != newest_timeline => plan.ended.push(e),
            WalFile::Partial(s) if Some(order(s)) == newest => plan.growing = Some(e),
            // A partial behind a later segment of its own timeline: pg_receivewal left it
            // after a crash and restarted elsewhere; the complete segments stand for it.
            WalFile::Partial(_) => plan.stale.push(e.path),
            WalFile::Backup(..) => {}
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(names: &[&str]) -> Vec<Entry> {
        names
            .iter()
            .map(|n| Entry {
                file: n.parse().expect("a WAL file name"),
                path: PathBuf::from("/spool").join(n),
            })
            .collect()
    }

    fn names(list: &[Entry]) -> Vec<String> {
        list.iter().map(|e| e.file.to_string()).collect()
    }

    #[test]
    fn complete_segments_go_first_and_the_newest_file_stays() {
        let p = plan(entries(&[
            "000000010000000000000005.partial",
            "000000010000000000000004",
            "000000010000000000000003",
        ]));
        let segs: Vec<(String, bool)> = p
            .segments
            .iter()
            .map(|(e, d)| (e.file.to_string(), *d))
            .collect();
        assert_eq!(
            segs,
            [
                ("000000010000000000000003".to_string(), true),
                ("000000010000000000000004".to_string(), true)
            ]
        );
        assert_eq!(
            p.growing.map(|e| e.file.to_string()).as_deref(),
            Some("000000010000000000000005.partial")
        );

        // Between a segment's rename and the next partial: the newest segment is kept, so a
        // restarted pg_receivewal resumes after it.
        let p = plan(entries(&[
            "000000010000000000000003",
            "000000010000000000000004",
        ]));
        assert_eq!(p.segments[1], (p.segments[1].0.clone(), false));
        assert!(p.growing.is_none());
    }

    #[test]
    fn a_timeline_switch_ends_the_old_partial_and_pushes_the_history_first() {
        let p = plan(entries(&[
            "000000020000000000000005.partial",
            "000000010000000000000005.partial",
            "00000002.history",
            "000000010000000000000004",
        ]));
        assert_eq!(names(&p.histories), ["00000002.history"]);
        assert_eq!(names(&p.ended), ["000000010000000000000005.partial"]);
        assert_eq!(
            p.growing.map(|e| e.file.to_string()).as_deref(),
            Some("000000020000000000000005.partial")
        );
        assert_eq!(p.segments.len(), 1);
        assert!(p.segments[0].1, "not the newest file");
    }

    #[test]
    fn a_partial_a_segment_replaced_is_stale() {
        let p = plan(entries(&[
            "000000010000000000000004.partial",
            "000000010000000000000004",
            "000000010000000000000003.partial",
            "000000010000000000000006.partial",
        ]));
        assert_eq!(p.stale.len(), 2);
        assert_eq!(
            p.growing.map(|e| e.file.to_string()).as_deref(),
            Some("000000010000000000000006.partial")
        );
    }

    #[test]
    fn other_files_are_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in [
            "000000010000000000000001",
            "000000010000000000000002.partial",
            "00000002.history",
            "000000010000000000000001.tmp",
            "junk",
        ] {
            std::fs::write(dir.path().join(name), b"x").expect("write");
        }
        let mut found: Vec<String> = scan(dir.path())
            .expect("scan")
            .iter()
            .map(|e| e.file.to_string())
            .collect();
        found.sort();
        assert_eq!(
            found,
            [
                "000000010000000000000001",
                "000000010000000000000002.partial",
                "00000002.history"
            ]
        );
    }
}
