//! `dr status` of a target with `[targets.wal]`: the newest archived WAL and its age (the
//! recovery point objective right now), continuity (the first missing segment) and, once
//! physical base backups exist, the recoverable window (docs/design/PITR.md §7).
//!
//! Cheap on a large archive: one LIST of `{target}/wal/`; record contents are read only for
//! the timeline histories, and for the newest file (its signed `pushed_at`). Continuity and
//! the window come from the record keys alone. [`assess`] is pure; [`read`] does the I/O.

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};

use dr_catalog::wal::continuity::{self, Archive, Archived, Base};
use dr_catalog::wal::history::{segment_timeline_in, Span, Timelines};
use dr_catalog::wal::{keys, split, SegmentSize, WalFile, WalIdentity};
use dr_config::{WalConfig, WalMode};

use crate::{Context, Error, Result};

/// The `wal` object of a target in `dr status --json` (docs/JSON.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WalStatus {
    /// `archive` or `stream`.
    pub mode: String,
    /// The timeline followed: the newest the archive knows.
    pub timeline: u32,
    /// WAL files (segments and partials) the archive holds, on any timeline.
    pub files: usize,
    /// The newest file recovery on `timeline` would read.
    pub newest: Option<String>,
    /// `newest` is the growing segment of a stream (or a timeline's final partial).
    pub newest_partial: bool,
    /// When `newest` was pushed (its record's signed `pushed_at`).
    #[serde(serialize_with = "rfc3339")]
    pub last_archived_at: Option<DateTime<Utc>>,
    /// Seconds since `last_archived_at`: what a loss of the server now would cost.
    pub rpo_seconds: Option<i64>,
    pub max_lag_seconds: u64,
    /// Where continuity is checked from: the oldest base backup's start segment, else the
    /// oldest archived segment on the path.
    pub continuous_from: Option<String>,
    /// The first segment missing before a later one: recovery cannot pass it.
    pub first_missing: Option<String>,
    /// What a restore can reach, oldest first; empty until physical base backups exist.
    pub windows: Vec<WalWindow>,
}

/// An element of `windows` in [`WalStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WalWindow {
    /// The base backup that opens the window.
    pub base: String,
    #[serde(serialize_with = "rfc3339_one")]
    pub earliest: DateTime<Utc>,
    pub earliest_lsn: String,
    #[serde(serialize_with = "rfc3339_one")]
    pub latest: DateTime<Utc>,
    pub latest_lsn: String,
}

fn rfc3339<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> std::result::Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&crate::time::format(*t)),
        None => s.serialize_none(),
    }
}

fn rfc3339_one<S: Serializer>(t: &DateTime<Utc>, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&crate::time::format(*t))
}

impl WalStatus {
    /// A gap in the archive (for the `dr_wal_gap` metric).
    pub fn gap(&self) -> bool {
        self.first_missing.is_some()
    }
}

/// One WAL file the LIST found: its record's key and when the record was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub file: WalFile,
    pub record_key: String,
    pub last_modified: Option<DateTime<Utc>>,
}

/// What [`read`] found in the repository, for [`assess`].
#[derive(Debug, Clone, Default)]
pub struct Read {
    /// Every record key under `{target}/wal/`.
    pub listed: Vec<Listed>,
    /// The timeline graph from the history records.
    pub timelines: Timelines,
    pub size: SegmentSize,
    /// The records whose content was read (the newest file), verified.
    pub records: Vec<Archived>,
    /// Records that could not be used: damaged, untrusted, a broken timeline history.
    pub problems: Vec<String>,
}

/// The message of a WAL target with nothing archived.
pub fn no_wal(target: &str) -> String {
    format!("no WAL archived yet for target {target}: check `dr check`")
}

/// The status of target `target`'s WAL from what was read, at `now`, and the problems
/// (`dr status` exits 8 on any). `bases` are the target's trusted physical base backups
/// (none until `dr backup --physical` exists: manifest format 3). Pure.
pub fn assess(
    target: &str,
    wal: &WalConfig,
    read: &Read,
    bases: &[Base],
    now: DateTime<Utc>,
) -> (WalStatus, Vec<String>) {
    let mut problems = read.problems.clone();
    let timeline = read.timelines.newest();
    let mut status = WalStatus {
        mode: match wal.mode() {
            WalMode::Archive => "archive".into(),
            WalMode::Stream => "stream".into(),
        },
        timeline,
        files: read
            .listed
            .iter()
            .filter(|l| matches!(l.file, WalFile::Segment(_) | WalFile::Partial(_)))
            .count(),
        newest: None,
        newest_partial: false,
        last_archived_at: None,
        rpo_seconds: None,
        max_lag_seconds: wal.max_lag.as_secs(),
        continuous_from: None,
        first_missing: None,
        windows: Vec::new(),
    };
    let archived = archived(read);
    let archive = Archive::new(&archived, read.size);
    let (history, newest) = match read
        .timelines
        .history(timeline)
        .and_then(|h| Ok((h, archive.newest(&read.timelines, timeline)?)))
    {
        Ok(found) => found,
        Err(e) => {
            problems.push(format!("WAL of target {target}: {e}; hint: {}", e.hint()));
            return (status, problems);
        }
    };
    let Some(newest) = newest else {
        problems.push(nothing_on_path(target, read));
        return (status, problems);
    };
    status.newest = Some(newest.segment.to_string() + if newest.partial { ".partial" } else { "" });
    status.newest_partial = newest.partial;
    status.last_archived_at = Some(newest.record.pushed_at);
    let rpo = (now - newest.record.pushed_at).num_seconds().max(0);
    status.rpo_seconds = Some(rpo);
    if rpo.unsigned_abs() > status.max_lag_seconds {
        problems.push(format!(
            "newest archived WAL of target {target} ({}) is {} old, more than max_lag {}: WAL is not reaching the repository; hint: run `dr check --target {target}`{}",
            status.newest.as_deref().unwrap_or_default(),
            human(rpo),
            wal.max_lag,
            match wal.mode() {
                WalMode::Archive => " and read the server log for dr wal push's error",
                WalMode::Stream => ": is `dr wal stream` running?",
            }
        ));
    }
    let size = read.size;
    let from = continuity_start(bases, &archived, &history, size);
    if let Some(from) = from {
        let run = archive.run(&history, from);
        status.continuous_from = Some(
            dr_catalog::wal::SegmentName::from_number(
                segment_timeline_in(&history, from, size),
                from,
                size,
            )
            .to_string(),
        );
        if let Some(missing) = run.gap {
            status.first_missing = Some(missing.to_string());
            problems.push(format!(
                "WAL of target {target} has a gap: segment {missing} is missing (a later one is archived), so no restore passes it; hint: take `dr backup --physical --target {target}` now to start a new recoverable window"
            ));
        }
    }
    if !bases.is_empty() {
        if let Ok(w) = continuity::windows(bases, &archive, &read.timelines, timeline) {
            status.windows = w.windows.iter().map(WalWindow::from).collect();
        }
    }
    (status, problems)
}

/// Why nothing is on the followed path: nothing archived, or only files on a timeline the
/// archive has no history of (not "no WAL": a history record is missing).
fn nothing_on_path(target: &str, read: &Read) -> String {
    let unknown = read
        .listed
        .iter()
        .map(|l| l.file.timeline())
        .filter(|&t| !read.timelines.contains(t))
        .max();
    match unknown {
        Some(t) => {
            let e = dr_catalog::wal::history::TimelineError::Unknown { timeline: t };
            format!(
                "WAL of target {target} is archived on timeline {t}, which it cannot follow: {e}; hint: {}",
                e.hint()
            )
        }
        None => no_wal(target),
    }
}

/// The segment number continuity is checked from: the oldest base's start on the path (gaps
/// before it matter to no restore), else the oldest archived segment on the path.
fn continuity_start(
    bases: &[Base],
    archived: &[Archived],
    history: &[Span],
    size: SegmentSize,
) -> Option<u64> {
    let on_path = |file: WalFile| {
        let name = file.segment()?;
        let n = name.number(size).ok()?;
        (segment_timeline_in(history, n, size) == name.timeline).then_some(n)
    };
    bases
        .iter()
        .filter(|b| history.iter().any(|s| s.timeline == b.timeline))
        .map(|b| b.start.0 / size.bytes())
        .min()
        .or_else(|| archived.iter().filter_map(|a| on_path(a.file)).min())
}

impl From<&continuity::Window> for WalWindow {
    fn from(w: &continuity::Window) -> WalWindow {
        WalWindow {
            base: w.base.clone(),
            earliest: w.earliest.at,
            earliest_lsn: w.earliest.lsn.to_string(),
            latest: w.latest.at,
            latest_lsn: w.latest.lsn.to_string(),
        }
    }
}

/// The archive's files as continuity reads them: from the listing (the record's write time
/// standing in for `pushed_at`), replaced by the records read.
fn archived(read: &Read) -> Vec<Archived> {
    let mut out: Vec<Archived> = read
        .listed
        .iter()
        .filter(|l| !read.records.iter().any(|r| r.file == l.file))
        .filter(|l| matches!(l.file, WalFile::Segment(_) | WalFile::Partial(_)))
        .map(|l| Archived {
            file: l.file,
            key: l.record_key.clone(),
            pushed_at: l.last_modified.unwrap_or(DateTime::UNIX_EPOCH),
            end_lsn: None,
            bytes: 0,
        })
        .collect();
    out.extend(read.records.iter().cloned());
    out
}

/// `1h05m`, `42s`.
fn human(seconds: i64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// Read what [`assess`] needs for `target`: one LIST of `{target}/wal/`, the identity (the
/// segment size), the history records, and the newest file's record.
pub async fn read(ctx: &Context, target: &str) -> Result<Read> {
    let root = keys::root(target);
    let objects = ctx.store.list(&root).await.map_err(|e| {
        Error::from(e).context(format!(
            "cannot list the WAL archive `{root}` of target {target}"
        ))
    })?;
    let mut read = Read::default();
    let mut identity = false;
    for o in objects {
        if o.key == keys::identity(target) {
            identity = true;
        } else if let Some(file) = keys::file_of_record(&o.key) {
            read.listed.push(Listed {
                file,
                record_key: o.key,
                last_modified: o.last_modified,
            });
        }
    }
    if read.listed.is_empty() {
        return Ok(read);
    }
    let mut size = None;
    if identity {
        let key = keys::identity(target);
        match ctx
            .store
            .get(&key)
            .await
            .map_err(Error::from)
            .and_then(|b| {
                serde_json::from_slice::<WalIdentity>(&b)
                    .map_err(|e| Error::new(crate::Kind::Integrity, format!("`{key}`: {e}")))
            }) {
            Ok(i) => size = SegmentSize::new(i.segment_bytes).ok(),
            Err(e) => read
                .problems
                .push(format!("cannot read `{key}`: {}", e.summary())),
        }
    }
    let histories: Vec<Listed> = read
        .listed
        .iter()
        .filter(|l| matches!(l.file, WalFile::History(_)))
        .cloned()
        .collect();
    for h in &histories {
        if let Some(r) = record(ctx, &h.record_key, &mut read.problems).await {
            if let Err(e) = read.timelines.insert(r.timeline, r.switches.clone()) {
                read.problems.push(format!("{e}; hint: {}", e.hint()));
            }
        }
    }
    // Without an identity, the segment size is the newest record's (same for every file).
    let mut newest_key = newest_by_name(&read.listed);
    if size.is_none() {
        if let Some(key) = &newest_key {
            if let Some(r) = record(ctx, key, &mut read.problems).await {
                size = r.segment_size();
            }
        }
    }
    read.size = size.unwrap_or_default();
    let archived = archived(&read);
    let archive = Archive::new(&archived, read.size);
    if let Ok(Some(n)) = archive.newest(&read.timelines, read.timelines.newest()) {
        newest_key = Some(n.record.key.clone());
    }
    if let Some(key) = newest_key {
        if let Some(r) = record(ctx, &key, &mut read.problems).await {
            match Archived::from_record(&r) {
                Ok(a) => read.records.push(a),
                Err(e) => read.problems.push(e.to_string()),
            }
        }
    }
    Ok(read)
}

/// The record key of the newest segment or partial by name (timeline, then position).
fn newest_by_name(listed: &[Listed]) -> Option<String> {
    listed
        .iter()
        .filter(|l| matches!(l.file, WalFile::Segment(_) | WalFile::Partial(_)))
        .max_by_key(|l| (l.file.segment(), matches!(l.file, WalFile::Partial(_))))
        .map(|l| l.record_key.clone())
}

/// The record at `key`, its signature checked: a damaged or untrusted one is a problem
/// (restore would refuse it) and `None`.
async fn record(
    ctx: &Context,
    key: &str,
    problems: &mut Vec<String>,
) -> Option<dr_catalog::wal::WalRecord> {
    let body = match ctx.store.get(key).await {
        Ok(b) => b,
        Err(e) => {
            problems.push(format!(
                "cannot read WAL record `{key}`: {}",
                Error::from(e).summary()
            ));
            return None;
        }
    };
    let (record, document, signature) = match split(key, &body) {
        Ok(s) => s,
        Err(e) => {
            problems.push(e.to_string());
            return None;
        }
    };
    let trust = ctx.signing.check(document, signature);
    if !trust.is_trusted() {
        problems.push(format!(
            "WAL record `{key}` is untrusted ({}): restore and `dr wal fetch` refuse it",
            trust.reason()
        ));
        return None;
    }
    Some(record)
}

/// The WAL status of every configured target with `[targets.wal]`, at `now` (for `dr status`
/// and the daemon's metrics), with the windows its trusted physical base backups open.
pub async fn all(
    ctx: &Context,
    now: DateTime<Utc>,
) -> Vec<(String, Result<(WalStatus, Vec<String>)>)> {
    let mut out = Vec::new();
    for t in &ctx.config.targets {
        if let Some(wal) = &t.wal {
            let bases = match physical_bases(ctx, &t.name).await {
                Ok(b) => b,
                Err(e) => {
                    out.push((t.name.clone(), Err(e)));
                    continue;
                }
            };
            let status = read(ctx, &t.name)
                .await
                .map(|r| assess(&t.name, wal, &r, &bases, now));
            out.push((t.name.clone(), status));
        }
    }
    out
}

/// Put each WAL target's status and problems on its row of `rows` (the row of the target,
/// or of a database of a `databases = "all"` target).
pub async fn attach(ctx: &Context, rows: &mut [super::TargetStatus], now: DateTime<Utc>) {
    for (target, result) in all(ctx, now).await {
        let Some(row) = rows
            .iter()
            .position(|r| r.target == target)
            .or_else(|| {
                rows.iter()
                    .position(|r| dr_catalog::members::belongs_to(&r.target, &target))
            })
            .and_then(|i| rows.get_mut(i))
        else {
            continue;
        };
        match result {
            Ok((status, problems)) => {
                row.problems.extend(problems);
                row.wal = Some(status);
            }
            Err(e) => row.problems.push(e.summary()),
        }
        row.ok = row.problems.is_empty();
    }
}

/// The physical base backups of `target` (manifest format 3, `dr backup --physical`) that
/// can open recoverable windows; [`assess`] uses only the trusted ones.
async fn physical_bases(ctx: &Context, target: &str) -> Result<Vec<Base>> {
    let entries = crate::repo::list(ctx.store.as_ref(), Some(target), &ctx.signing).await?;
    Ok(crate::wal::catalog::bases(&entries))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 3, 14, 0, 0)
            .single()
            .expect("time")
    }

    fn config() -> WalConfig {
        WalConfig {
            mode: Some(WalMode::Archive),
            partial_upload_secs: 30,
            max_lag: dr_config::Duration::from_secs(300),
            archive_wait: dr_config::DEFAULT_ARCHIVE_WAIT,
            spool_dir: None,
        }
    }

    /// The archive holds `names`, each written `minutes` before now; the last one's record
    /// was read.
    fn read(names: &[(&str, i64)]) -> Read {
        let listed: Vec<Listed> = names
            .iter()
            .map(|(name, minutes)| {
                let file: WalFile = name.parse().expect("name");
                Listed {
                    file,
                    record_key: keys::record("app", file),
                    last_modified: Some(now() - Duration::minutes(*minutes)),
                }
            })
            .collect();
        let records = listed
            .last()
            .map(|l| {
                vec![Archived {
                    file: l.file,
                    key: format!("{}.0000.zst.age", l.record_key),
                    pushed_at: l.last_modified.expect("set") - Duration::seconds(5),
                    end_lsn: matches!(l.file, WalFile::Partial(_))
                        .then(|| "0/3800000".parse().expect("lsn")),
                    bytes: 1,
                }]
            })
            .unwrap_or_default();
        Read {
            listed,
            records,
            ..Read::default()
        }
    }

    const S1: &str = "000000010000000000000001";
    const S2: &str = "000000010000000000000002";
    const S3: &str = "000000010000000000000003";
    const S4: &str = "000000010000000000000004";

    #[test]
    fn no_wal_at_all_is_a_problem_that_points_at_check() {
        let (s, problems) = assess("app", &config(), &read(&[]), &[], now());
        assert_eq!(
            problems,
            ["no WAL archived yet for target app: check `dr check`"]
        );
        assert_eq!((s.newest, s.rpo_seconds, s.files), (None, None, 0));
    }

    #[test]
    fn contiguous_recent_wal_is_healthy_and_its_age_is_the_rpo() {
        let (s, problems) = assess(
            "app",
            &config(),
            &read(&[(S1, 9), (S2, 6), (S3, 1)]),
            &[],
            now(),
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(s.newest.as_deref(), Some(S3));
        assert_eq!(s.rpo_seconds, Some(65));
        assert_eq!(s.continuous_from.as_deref(), Some(S1));
        assert_eq!((s.first_missing, s.files, s.timeline), (None, 3, 1));
        assert!(s.windows.is_empty());
    }

    #[test]
    fn a_gap_names_the_first_missing_segment() {
        let (s, problems) = assess(
            "app",
            &config(),
            &read(&[(S1, 9), (S2, 6), (S4, 1)]),
            &[],
            now(),
        );
        assert_eq!(s.first_missing.as_deref(), Some(S3));
        assert!(s.gap());
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains(&format!("segment {S3} is missing")),
            "{problems:?}"
        );
    }

    #[test]
    fn wal_older_than_max_lag_is_a_problem() {
        let (s, problems) = assess("app", &config(), &read(&[(S1, 20), (S2, 6)]), &[], now());
        assert_eq!(s.rpo_seconds, Some(365));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("is 6m05s old, more than max_lag 5m"),
            "{problems:?}"
        );
        assert!(
            problems[0].contains("dr check --target app"),
            "{problems:?}"
        );
    }

    #[test]
    fn a_partial_segment_counts_as_the_newest_wal() {
        let partial = format!("{S3}.partial");
        let (s, problems) = assess(
            "app",
            &config(),
            &read(&[(S1, 30), (S2, 20), (&partial, 0)]),
            &[],
            now(),
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(s.newest.as_deref(), Some(partial.as_str()));
        assert!(s.newest_partial);
        assert_eq!(s.rpo_seconds, Some(5));
    }

    #[test]
    fn wal_on_a_timeline_without_its_history_says_which_history_is_missing() {
        let (s, problems) = assess(
            "app",
            &config(),
            &read(&[("000000020000000000000003", 1)]),
            &[],
            now(),
        );
        assert_eq!((s.files, s.newest), (1, None));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("timeline 2") && problems[0].contains("00000002.history"),
            "{problems:?}"
        );
    }

    #[test]
    fn a_base_backup_opens_a_window() {
        let base = Base {
            id: "20261203T133000Z".into(),
            timeline: 1,
            start: "0/1000028".parse().expect("lsn"),
            stop: "0/1000100".parse().expect("lsn"),
            stopped_at: now() - Duration::minutes(30),
            trusted: true,
        };
        let (s, problems) = assess(
            "app",
            &config(),
            &read(&[(S1, 9), (S2, 6), (S3, 1)]),
            std::slice::from_ref(&base),
            now(),
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(s.windows.len(), 1, "{s:?}");
        assert_eq!(s.windows[0].base, base.id);
        assert_eq!(s.windows[0].earliest, base.stopped_at);
        assert_eq!(s.windows[0].latest_lsn, "0/4000000");
    }

    #[test]
    fn json_field_names() {
        let (s, _) = assess("app", &config(), &read(&[(S1, 1)]), &[], now());
        let v = serde_json::to_value(&s).expect("json");
        let keys: Vec<&str> = v
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "continuous_from",
                "files",
                "first_missing",
                "last_archived_at",
                "max_lag_seconds",
                "mode",
                "newest",
                "newest_partial",
                "rpo_seconds",
                "timeline",
                "windows"
            ]
        );
        assert_eq!(v["last_archived_at"], "2026-12-03T13:58:55Z");
    }
}
