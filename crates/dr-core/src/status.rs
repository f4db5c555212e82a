//! `dr status`: one row per configured target saying whether its backups are healthy — a
//! recent complete trusted backup, no failed verification, nothing damaged, future-dated or
//! untrusted (see [`crate::trust`]), no untrusted verification record — and when
//! the next scheduled backup runs. [`assess`] is pure; [`run`] reads the repository.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use dr_catalog::members;
use dr_config::JobKind;
use serde::Serialize;

use dr_catalog::beacon::Beacon;
use dr_catalog::keys;

use crate::repo::{self, BackupEntry, Catalog, DamagedBackup};
use crate::{Context, Error, Result};
use dr_config::jobs::Job;

pub mod copies;
pub mod drill;
pub mod wal;

/// The health of one target: an element of `dr status --json` (docs/JSON.md).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetStatus {
    /// Each `[[copies]]` repository's view of this target ([`copies::CopyStatus`]); absent
    /// without copies.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub copies: Vec<copies::CopyStatus>,
    /// The freshest `dr daemon` beacon of a daemon with jobs for this target; `None` when
    /// no daemon was seen (then `next_backup` is only what the schedule says).
    pub daemon: Option<dr_catalog::beacon::DaemonSeen>,
    /// Damaged backups of this target.
    pub damaged: Vec<DamagedRow>,
    /// Ids of future-dated backups of this target.
    pub future_dated: Vec<String>,
    /// Targets with WAL: the newest drill of a base backup (`dr verify --pitr`) and the
    /// window it proved. Absent when none ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_drill: Option<drill::LastDrill>,
    /// The newest verification of a backup that is not future-dated.
    pub last_verification: Option<LastVerification>,
    /// The restore time measured by the newest verification that has one (the measured RTO,
    /// see [`crate::rto`]), and on which backup.
    pub measured_restore: Option<crate::rto::Measured>,
    /// The newest backup id that is not future-dated.
    pub newest_backup: Option<String>,
    /// Seconds since the newest backup finished.
    pub newest_backup_age_seconds: Option<i64>,
    /// The next scheduled backup (RFC 3339), when schedules are configured.
    pub next_backup: Option<String>,
    /// Set on a database of a `databases = "all"` target that the server no longer has (or
    /// that is now excluded): its backups stay until retention removes them, and its age is
    /// not a problem. Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// False when any problem is listed.
    pub ok: bool,
    /// With `verify.prove_within`: how many retained backups are proven within it, and those
    /// unproven longer than that since they were made (a problem). Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proven: Option<crate::proof::Proven>,
    /// One line per problem: stale, no backup, failed verification, future-dated, damaged;
    /// a database of a server target that refuses connections (not backed up).
    pub problems: Vec<String>,
    pub target: String,
    /// Backups of this target not signed by a key this host trusts (never the newest).
    pub untrusted: Vec<UntrustedRow>,
    /// Targets with `[targets.wal]`: the archived WAL ([`wal::WalStatus`]). Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wal: Option<wal::WalStatus>,
}

/// An element of `untrusted` in a [`TargetStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UntrustedRow {
    pub id: String,
    /// `unsigned`, `bad signature: …`, `signed by SHA256:…, a key this host does not trust`.
    pub reason: String,
}

/// `last_verification` of a [`TargetStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastVerification {
    pub backup_id: String,
    /// `passed` or `failed`.
    pub result: String,
    /// RFC 3339.
    pub verified_at: String,
}

/// An element of `damaged` in a [`TargetStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DamagedRow {
    pub id: String,
    pub key: String,
    pub reason: String,
}

/// Assess every configured target at `now`: `max_age` is how old the newest backup may be,
/// `jobs` the schedules (empty when none are configured). Pure.
pub fn assess(
    catalog: &Catalog,
    targets: &[&str],
    jobs: &[Job],
    max_age: Duration,
    now: DateTime<Utc>,
) -> Vec<TargetStatus> {
    targets
        .iter()
        .map(|t| assess_target(catalog, t, jobs, max_age, now))
        .collect()
}

fn assess_target(
    catalog: &Catalog,
    target: &str,
    jobs: &[Job],
    max_age: Duration,
    now: DateTime<Utc>,
) -> TargetStatus {
    // Future-dated backups (clock skew) are not "the newest": they would hide a stopped
    // nightly job for as long as the clock was ahead.
    let mine: Vec<&BackupEntry> = catalog
        .current(now)
        .filter(|e| e.manifest.target == target)
        .collect();
    let future: Vec<&BackupEntry> = catalog
        .future_dated(now)
        .filter(|e| e.manifest.target == target)
        .collect();
    let damaged: Vec<&DamagedBackup> = catalog
        .damaged
        .iter()
        .filter(|d| d.target == target)
        .collect();
    let newest = mine.first();
    let verified = mine.iter().find_map(|e| e.verification.as_ref());
    let mut problems = Vec::new();
    match newest {
        None => problems.push("no complete backup".to_string()),
        Some(e) if now - e.manifest.finished_at > max_age => problems.push(format!(
            "newest backup is {}h old (limit {}h)",
            (now - e.manifest.finished_at).num_hours(),
            max_age.num_hours()
        )),
        Some(_) => {}
    }
    if let Some(v) = verified {
        if !v.passed() {
            problems.push(format!("last verification of {} failed", v.backup_id));
        }
    }
    let last_drill = drill::newest(mine.iter().copied());
    if let Some(d) = last_drill.as_ref().filter(|d| d.result != "passed") {
        let said = format!(
            "last drill (base backup {}, {}) failed{}",
            d.backup_id,
            d.point,
            d.summary
                .as_deref()
                .map(|s| format!(": {s}"))
                .unwrap_or_default()
        );
        if !problems.iter().any(|p| p.contains(&d.backup_id)) {
            problems.push(said);
        }
    }
    for e in &future {
        problems.push(format!(
            "backup {} is dated {} in the future: clock skew on the host that took it (or this host's clock is behind); `latest` skips it",
            e.manifest.id,
            repo::dated_ahead(&e.manifest.id, now)
        ));
    }
    for d in &damaged {
        problems.push(format!("backup {} is damaged: {}", d.id, d.reason));
    }
    let untrusted: Vec<&BackupEntry> = catalog
        .untrusted()
        .filter(|e| e.manifest.target == target)
        .collect();
    for e in &untrusted {
        problems.push(format!(
            "backup {} is untrusted ({}): `latest` skips it, restore and verify refuse it",
            e.manifest.id,
            e.trust.reason()
        ));
    }
    for e in &mine {
        if let Some(u) = &e.untrusted_verification {
            problems.push(format!(
                "a verification record of backup {} is untrusted ({}): not counted",
                e.manifest.id, u.reason
            ));
        }
    }
    let next_backup = jobs
        .iter()
        .filter(|j| {
            matches!(j.kind, JobKind::Backup)
                && j.targets.iter().any(|n| members::belongs_to(target, n))
        })
        .filter_map(|j| j.schedule.next_after(now).ok())
        .min();
    TargetStatus {
        copies: Vec::new(),
        daemon: None,
        damaged: damaged
            .iter()
            .map(|d| DamagedRow {
                id: d.id.to_string(),
                key: d.key.clone(),
                reason: d.reason.clone(),
            })
            .collect(),
        future_dated: future.iter().map(|e| e.manifest.id.to_string()).collect(),
        last_drill,
        last_verification: verified.map(|v| LastVerification {
            backup_id: v.backup_id.to_string(),
            result: v.result.clone(),
            verified_at: crate::time::format(v.verified_at),
        }),
        measured_restore: crate::rto::newest(mine.iter().copied(), target),
        newest_backup: newest.map(|e| e.manifest.id.to_string()),
        newest_backup_age_seconds: newest.map(|e| (now - e.manifest.finished_at).num_seconds()),
        next_backup: next_backup.map(crate::time::format),
        note: None,
        ok: problems.is_empty(),
        proven: None,
        problems,
        target: target.to_string(),
        untrusted: untrusted
            .iter()
            .map(|e| UntrustedRow {
                id: e.manifest.id.to_string(),
                reason: e.trust.reason(),
            })
            .collect(),
        wal: None,
    }
}

/// Read the repository and [`assess`] every configured target now, with the configured
/// `status.max_backup_age_hours` and schedules (none is fine: system cron or a timer may
/// drive dr).
pub async fn run(ctx: &Context) -> Result<Vec<TargetStatus>> {
    let catalog = repo::catalog(ctx.store.as_ref(), None, &ctx.signing).await?;
    let max_age =
        Duration::hours(i64::try_from(ctx.config.status.max_backup_age_hours).unwrap_or(26));
    // A schedule `dr daemon` would refuse stops every job (the daemon does not start): a
    // problem of every target, not a silent "unscheduled".
    let (jobs, schedules_problem) = match dr_config::jobs::load_schedules(&ctx.config) {
        Ok(j) => (j, None),
        Err(e) => (Vec::new(), Some(schedules_problem(e))),
    };
    let mut targets: Vec<String> = Vec::new();
    let mut gone: BTreeMap<String, String> = BTreeMap::new();
    let mut closed: BTreeMap<String, String> = BTreeMap::new();
    for t in &ctx.config.targets {
        if !t.is_server() {
            targets.push(t.name.clone());
            continue;
        }
        let (members, left, refusing) = server_members(ctx, t).await?;
        if members.is_empty() {
            targets.push(t.name.clone()); // "no complete backup"
        }
        targets.extend(members);
        gone.extend(left);
        closed.extend(refusing);
    }
    let now = Utc::now();
    let beacons = beacons(ctx).await?;
    let names: Vec<&str> = targets.iter().map(String::as_str).collect();
    let mut rows = assess(&catalog, &names, &jobs, max_age, now);
    for r in &mut rows {
        if let Some(note) = gone.get(&r.target) {
            // Not backed up any more, by design: only its age stops being a problem.
            *r = assess_target(&catalog, &r.target, &jobs, Duration::days(365_000), now);
            r.note = Some(note.clone());
        }
        if let Some(problem) = closed.get(&r.target) {
            // Not backed up, and nobody asked for that: a problem whatever its backups' age.
            r.problems.insert(0, problem.clone());
            r.ok = false;
        }
        if let Some(problem) = &schedules_problem {
            r.problems.push(problem.clone());
            r.ok = false;
        }
        if let Some(within) = ctx.config.verify.prove_within {
            attach_proven(&catalog, r, within, now);
        }
        r.daemon = dr_catalog::beacon::seen(&beacons, &r.target, now).or_else(|| {
            members::server_of(&r.target).and_then(|s| dr_catalog::beacon::seen(&beacons, s, now))
        });
    }
    wal::attach(ctx, &mut rows, now).await;
    copies::attach(ctx, &catalog, &mut rows, max_age, now).await;
    Ok(rows)
}

/// `proven` of a row, and its overdue backups as a problem.
fn attach_proven(
    catalog: &Catalog,
    r: &mut TargetStatus,
    within: dr_config::Duration,
    now: DateTime<Utc>,
) {
    let window = Duration::seconds(i64::try_from(within.as_secs()).unwrap_or(i64::MAX));
    let retained = crate::proof::retained(&catalog.entries, &r.target, now);
    let p = crate::proof::summarize(&retained, now, window, &within.to_string());
    if !p.overdue.is_empty() {
        r.problems.push(format!(
            "{} of {} retained backups not proven within {}: {} (`dr verify` proves the one whose last proof is oldest; run it more often)",
            p.overdue.len(),
            p.retained,
            p.within,
            p.overdue.join(", ")
        ));
        r.ok = false;
    }
    r.proven = Some(p);
}

/// Every daemon's beacon in the repository; unreadable ones are skipped (logged at debug).
pub async fn beacons(ctx: &Context) -> Result<Vec<Beacon>> {
    let mut beacons = Vec::new();
    for o in ctx.store.list(keys::DAEMON_PREFIX).await? {
        match ctx.store.get(&o.key).await {
            Ok(body) => match serde_json::from_slice::<Beacon>(&body) {
                Ok(b) => beacons.push(b),
                Err(e) => tracing::debug!("ignoring beacon {}: {e}", o.key),
            },
            Err(e) => tracing::debug!("cannot read beacon {}: {e}", o.key),
        }
    }
    Ok(beacons)
}

/// The problem line of schedules `dr daemon` would refuse: what is wrong, where, and the
/// next step, rendered as `dr check` renders them, on one line.
fn schedules_problem(e: dr_config::ConfigError) -> String {
    Error::from(e).to_string().replace('\n', "; ") + "; dr daemon would not start"
}

/// The databases of a server target for `dr status`: those the server has now (not
/// excluded) and those the repository holds backups of; the second map holds the ones the
/// server no longer has (or that are excluded now), with the note saying so. When the server
/// cannot be reached, the repository's are all there is, each judged like any target. The
/// third map holds the databases that refuse connections (`datallowconn = false`) and are
/// not excluded, with the problem saying so: dr cannot back them up.
async fn server_members(
    ctx: &Context,
    t: &dr_config::TargetConfig,
) -> Result<(
    Vec<String>,
    BTreeMap<String, String>,
    BTreeMap<String, String>,
)> {
    let stored = repo::members(ctx, &t.name).await?;
    let mut members: BTreeSet<String> = stored.iter().cloned().collect();
    let mut gone = BTreeMap::new();
    let mut closed = BTreeMap::new();
    let member = |d: &str| members::name(&t.name, d);
    match crate::backup::server_databases(t).await {
        Ok(listed) => {
            for d in listed.closed_included(t) {
                let problem = crate::backup::closed_database(&t.name, &d)
                    .to_string()
                    .replace('\n', "; ");
                closed.insert(member(&d), problem);
                members.insert(member(&d));
            }
            let live: BTreeSet<String> = t
                .included_databases(&listed.databases)
                .iter()
                .map(|d| member(d))
                .collect();
            for m in stored
                .iter()
                .filter(|m| !live.contains(*m) && !closed.contains_key(*m))
            {
                gone.insert(
                    m.clone(),
                    format!(
                        "no longer a database of `{}` (dropped, renamed or excluded): not backed up any more; its backups stay until retention removes them",
                        t.name
                    ),
                );
            }
            members.extend(live);
        }
        Err(e) => tracing::warn!(
            "{}; judging the databases the repository holds backups of",
            e.summary()
        ),
    }
    Ok((members.into_iter().collect(), gone, closed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{damaged, entry, now, verified};
    use dr_catalog::schedule::Schedule;

    /// One rendering for `dr status` and `dr check`: the message, then its hint, on one line.
    #[test]
    fn a_schedule_the_daemon_would_refuse_reads_as_dr_check_says_it() {
        let bad = || dr_config::ConfigError::Invalid {
            path: Some("/etc/dr/schedules/nightly.toml".into()),
            message: "schedule `nightly`: unknown target `nope`".into(),
            hint: "name a target of dr.toml".into(),
        };
        assert_eq!(
            schedules_problem(bad()),
            "invalid config /etc/dr/schedules/nightly.toml: schedule `nightly`: unknown target `nope`; hint: name a target of dr.toml; dr daemon would not start"
        );
    }

    fn one(catalog: &Catalog, jobs: &[Job]) -> TargetStatus {
        let mut rows = assess(catalog, &["app"], jobs, Duration::hours(26), now());
        assert_eq!(rows.len(), 1);
        rows.remove(0)
    }

    fn catalog(entries: Vec<BackupEntry>) -> Catalog {
        Catalog {
            entries,
            damaged: vec![],
        }
    }

    #[test]
    fn healthy() {
        let c = catalog(vec![
            verified(
                entry("app", "20261122T020000Z"),
                "passed",
                now() - Duration::minutes(30),
            ),
            entry("other", "20261101T020000Z"),
        ]);
        let s = one(&c, &[]);
        assert!(s.ok, "{s:?}");
        assert!(s.problems.is_empty());
        assert_eq!(s.target, "app");
        assert_eq!(s.newest_backup.as_deref(), Some("20261122T020000Z"));
        assert_eq!(s.newest_backup_age_seconds, Some(3600));
        let v = s.last_verification.expect("verified");
        assert_eq!(v.backup_id, "20261122T020000Z");
        assert_eq!(v.result, "passed");
        assert_eq!(v.verified_at, "2026-11-22T02:30:00Z");
        assert_eq!(s.next_backup, None);
        assert!(s.future_dated.is_empty() && s.damaged.is_empty());
        // Verified without restore timings: nothing measured.
        assert_eq!(s.measured_restore, None);
    }

    #[test]
    fn measured_restore_of_the_newest_verification_with_timings() {
        let mut older = verified(
            entry("app", "20261121T020000Z"),
            "passed",
            now() - Duration::hours(20),
        );
        if let Some(v) = older.verification.as_mut() {
            v.timings = [("fetch_decrypt", 2.0), ("restore", 40.0), ("total", 60.0)]
                .iter()
                .map(|(k, s)| (k.to_string(), *s))
                .collect();
        }
        let c = catalog(vec![
            verified(entry("app", "20261122T020000Z"), "passed", now()),
            older,
        ]);
        let s = one(&c, &[]);
        let m = s.measured_restore.expect("measured");
        assert_eq!(m.backup_id.to_string(), "20261121T020000Z");
        assert_eq!(m.seconds, 42.0);
        let v = serde_json::to_value(one(&c, &[])).expect("json");
        assert_eq!(
            v["measured_restore"],
            serde_json::json!({
                "backup_id": "20261121T020000Z",
                "seconds": 42.0,
                "archive_bytes": 1,
                "verified_at": "2026-11-21T07:00:00Z",
            })
        );
    }

    #[test]
    fn no_backup() {
        let s = one(&catalog(vec![entry("other", "20261122T020000Z")]), &[]);
        assert!(!s.ok);
        assert_eq!(s.problems, ["no complete backup"]);
        assert_eq!(s.newest_backup, None);
        assert_eq!(s.newest_backup_age_seconds, None);
        assert_eq!(s.last_verification, None);
    }

    #[test]
    fn stale() {
        let s = one(&catalog(vec![entry("app", "20261120T020000Z")]), &[]);
        assert!(!s.ok);
        assert_eq!(s.problems, ["newest backup is 49h old (limit 26h)"]);
        assert_eq!(s.newest_backup_age_seconds, Some(49 * 3600));
    }

    #[test]
    fn failed_verification_of_an_older_backup_counts_when_newest_is_unverified() {
        let c = catalog(vec![
            entry("app", "20261122T020000Z"),
            verified(entry("app", "20261121T020000Z"), "failed", now()),
        ]);
        let s = one(&c, &[]);
        assert!(!s.ok);
        assert_eq!(s.problems, ["last verification of 20261121T020000Z failed"]);
        assert_eq!(
            s.last_verification.map(|v| v.result).as_deref(),
            Some("failed")
        );
    }

    #[test]
    fn damaged_backup() {
        let mut c = catalog(vec![entry("app", "20261122T020000Z")]);
        c.damaged
            .push(damaged("app", "20261121T020000Z", "not valid JSON (EOF)"));
        c.damaged.push(damaged("other", "20261121T020000Z", "x"));
        let s = one(&c, &[]);
        assert!(!s.ok);
        assert_eq!(
            s.problems,
            ["backup 20261121T020000Z is damaged: not valid JSON (EOF)"]
        );
        assert_eq!(
            s.damaged,
            [DamagedRow {
                id: "20261121T020000Z".into(),
                key: "app/20261121T020000Z/manifest.json".into(),
                reason: "not valid JSON (EOF)".into(),
            }]
        );
    }

    #[test]
    fn future_dated_is_a_problem_and_not_the_newest() {
        let c = catalog(vec![
            entry("app", "20261222T030000Z"),
            entry("app", "20261122T020000Z"),
        ]);
        let s = one(&c, &[]);
        assert!(!s.ok);
        assert_eq!(s.newest_backup.as_deref(), Some("20261122T020000Z"));
        assert_eq!(s.future_dated, ["20261222T030000Z"]);
        assert_eq!(s.problems.len(), 1);
        assert!(
            s.problems[0].contains("dated 30d 0h in the future"),
            "{:?}",
            s.problems
        );
        // Only future-dated: no complete backup either.
        let s = one(&catalog(vec![entry("app", "20261222T030000Z")]), &[]);
        assert_eq!(s.problems.len(), 2);
        assert_eq!(s.problems[0], "no complete backup");
    }

    #[test]
    fn next_backup_from_backup_jobs_of_the_target() {
        let job = |kind, targets: &[&str], cron| Job {
            name: "j".into(),
            source: "dr.toml".into(),
            schedule: Schedule::parse(cron, "UTC").expect("cron"),
            kind,
            targets: targets.iter().map(|t| t.to_string()).collect(),
            prune_after: false,
            copies: Vec::new(),
        };
        let jobs = [
            job(JobKind::Backup, &["app"], "0 4 * * *"),
            job(JobKind::Backup, &["app"], "30 3 * * *"),
            job(JobKind::Verify, &["app"], "5 3 * * *"),
            job(JobKind::Backup, &["other"], "10 3 * * *"),
        ];
        let s = one(&catalog(vec![entry("app", "20261122T020000Z")]), &jobs);
        assert_eq!(s.next_backup.as_deref(), Some("2026-11-22T03:30:00Z"));
        assert!(s.ok);
    }

    #[test]
    fn json_field_names() {
        let s = one(&catalog(vec![]), &[]);
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
                "daemon",
                "damaged",
                "future_dated",
                "last_verification",
                "measured_restore",
                "newest_backup",
                "newest_backup_age_seconds",
                "next_backup",
                "ok",
                "problems",
                "target",
                "untrusted"
            ]
        );
    }
}
