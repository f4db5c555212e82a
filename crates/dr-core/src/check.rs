//! `dr check`: everything a backup needs, tested without taking one.

use chrono::{DateTime, Utc};
use dr_pg::{ConnInfo, ServerVersion};

use crate::repo::Catalog;
use crate::undelete::DeletedBackup;
use crate::{Context, Error, Kind, Result};

mod copies;
mod wal;
pub use wal::archive_command;

/// One line of the report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckLine {
    pub check: String,
    pub ok: bool,
    /// What passed, or what failed and the next step, as printed (`hint:` lines included).
    pub detail: String,
    /// Why a failed line failed; [`failure`] gathers their hints into the report's.
    #[serde(skip)]
    errors: Vec<Error>,
}

/// Why a line failed: its errors (one per database that refuses connections, say), each
/// with its own next step.
struct Failure(Vec<Error>);

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure(vec![e])
    }
}

/// A line from its check and outcome: a failure is printed as its errors say themselves.
fn line(check: impl Into<String>, r: std::result::Result<String, impl Into<Failure>>) -> CheckLine {
    let check = check.into();
    match r.map_err(Into::into) {
        Ok(detail) => CheckLine {
            check,
            ok: true,
            detail,
            errors: Vec::new(),
        },
        Err(Failure(errors)) => CheckLine {
            check,
            ok: false,
            detail: errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
            errors,
        },
    }
}

/// A failed line's error from what it says.
fn fail(text: impl Into<String>) -> Error {
    Error::new(Kind::Failed, text)
}

/// Run every check; never stops at the first failure so the operator sees them all. The
/// lines are returned whether they pass or not: see [`failure`] for the exit status.
pub async fn run(ctx: &Context, target: Option<&str>) -> Result<Vec<CheckLine>> {
    let mut out = Vec::new();
    out.push(line(
        "config",
        Ok::<_, Error>(
            ctx.config
                .source
                .as_ref()
                .map(|p| format!("{} is valid", p.display()))
                .unwrap_or_else(|| "valid".into()),
        ),
    ));
    out.push(line(
        "recipients",
        ctx.recipients()
            .map(|r| format!("{} age recipient(s)", r.to_strings().len())),
    ));
    if ctx.config.encryption.identity_file.is_some() {
        out.push(line(
            "identity",
            ctx.identities().and_then(|ids| {
                let recips = ctx.config.recipients().unwrap_or_default();
                if ids.publics().iter().any(|p| recips.contains(p)) {
                    Ok("matches a configured recipient".into())
                } else {
                    Err(fail("the identity matches none of encryption.recipients: backups could not be restored with it"))
                }
            }),
        ));
    }
    out.extend(schedules_lines(&ctx.config));
    out.push(line(
        format!("repository {}", ctx.store.location()),
        dr_store::probe_writable(ctx.store.as_ref())
            .await
            .map(|_| "writable".into())
            .map_err(Error::from),
    ));
    out.push(line("object lock", lock_line(ctx.store.as_ref()).await));
    out.push(line("signing", signing_line(&ctx.signing)));
    out.extend(copies::lines(ctx).await);
    let targets = ctx.config.select_targets(target).map_err(Error::from)?;
    // What the repository already holds: a future-dated backup means a clock is wrong (the
    // backup host's then, or this host's now), a damaged one needs the operator.
    let catalog = crate::repo::catalog(ctx.store.as_ref(), target, &ctx.signing).await;
    let now = Utc::now();
    for t in &targets {
        // With Object Lock, a backup whose objects were overwritten (leaked credentials) is
        // brought back by `dr undelete`, as `dr list` says. Versions that cannot be listed
        // leave this out: the object lock line says what the credentials cannot do.
        let overwritten = if ctx.store.location().object_lock().is_some() {
            crate::undelete::deleted(ctx.store.as_ref(), Some(&t.name))
                .await
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        out.push(line(
            format!("backups {}", t.name),
            match &catalog {
                Ok(c) => backups_line(c, &overwritten, &t.name, now),
                Err(e) => Err(e.clone().context("cannot list the backups")),
            },
        ));
    }
    for t in targets {
        out.extend(server_lines(ctx, t).await);
        for (check, r) in wal::lines(ctx, t).await {
            out.push(line(check, r));
        }
    }
    Ok(out)
}

/// The `schedules` line (and `verify jobs` when there are some): the jobs `dr daemon` would
/// run, loaded as it loads them.
fn schedules_lines(config: &dr_config::Config) -> Vec<CheckLine> {
    let mut lines = Vec::new();
    // The schedules `dr daemon` would run: a bad one (cron, zone, target, a file that does
    // not parse) fails here, not when the daemon starts. None is fine (cron or a timer may
    // run dr). Verify jobs that exist need the identity, or they fail at their time.
    match dr_config::jobs::load_schedules(config) {
        Err(e) => lines.push(line("schedules", Err(Error::from(e)))),
        Ok(jobs) if jobs.is_empty() => {}
        Ok(jobs) => {
            lines.push(line(
                "schedules",
                Ok::<_, Error>(format!(
                    "{} job(s), every cron expression valid",
                    jobs.len()
                )),
            ));
            if jobs.iter().any(|j| {
                matches!(
                    j.kind,
                    dr_config::JobKind::Verify | dr_config::JobKind::Drill
                )
            }) {
                lines.push(line(
                    "verify jobs",
                    dr_config::jobs::verify_jobs_without_identity(config, &jobs)
                        .map(|()| "the identity they need is configured".into())
                        .map_err(Error::from),
                ));
            }
        }
    }
    lines
}

/// The `target`, `tools`, and when the server answers `databases` and `locks` lines of `t`.
async fn server_lines(ctx: &Context, t: &dr_config::TargetConfig) -> Vec<CheckLine> {
    let mut lines = Vec::new();
    // The database and the tools are separate lines: with the database down the tools
    // line still says what is (not) known, instead of both vanishing behind one error.
    let version: Result<(ServerVersion, String)> = async {
        let conn = ConnInfo::parse(&t.url)?;
        let client = conn.connect().await?;
        let v = ServerVersion::query(&client).await?;
        Ok((v, conn.user().to_string()))
    }
    .await;
    lines.push(line(
        format!("target {}", t.name),
        version
            .as_ref()
            .map(|(v, user)| format!("PostgreSQL {} reachable as {user}", v.text))
            .map_err(Clone::clone),
    ));
    let bin = t
        .pg_bin_dir
        .as_deref()
        .or(ctx.config.backup.pg_bin_dir.as_deref());
    lines.push(line(
        format!("tools {}", t.name),
        match &version {
            Ok((v, _)) => tools_line(v.major, bin),
            Err(_) => Err(fail(
                "not checked: which pg_dump fits depends on the server's version, unknown until the database answers",
            )),
        },
    ));
    if version.is_ok() {
        if t.is_server() {
            lines.push(line(
                format!("databases {}", t.name),
                databases_line(t).await,
            ));
        }
        lines.push(line(format!("locks {}", t.name), locks_line(t).await));
    }
    lines
}

/// The `databases TARGET` line of a `databases = "all"` target: what a backup covers; fails
/// naming each database that refuses connections (`datallowconn = false`) and is not in
/// `exclude_databases`: a backup would skip it.
async fn databases_line(t: &dr_config::TargetConfig) -> std::result::Result<String, Failure> {
    let listed = crate::backup::server_databases(t).await?;
    let closed = listed.closed_included(t);
    if !closed.is_empty() {
        return Err(Failure(
            closed
                .iter()
                .map(|d| crate::backup::closed_database(&t.name, d))
                .collect(),
        ));
    }
    let included = t.included_databases(&listed.databases);
    Ok(format!(
        "{} to back up: {}",
        included.len(),
        included.join(", ")
    ))
}

/// The `locks TARGET` line: whether the server's lock table holds what a backup locks (each
/// table of the largest database, twice at once). For a `databases = "all"` target every
/// database it backs up is counted.
async fn locks_line(t: &dr_config::TargetConfig) -> Result<String> {
    let conn = ConnInfo::parse(&t.url)?;
    let databases = if t.is_server() {
        let listed = crate::backup::server_databases(t).await?;
        t.included_databases(&listed.databases)
    } else {
        vec![conn.dbname().to_string()]
    };
    let mut table: Option<dr_pg::LockTable> = None;
    let mut largest: (u64, String) = (0, String::new());
    for db in databases {
        let client = conn.with_dbname(&db).connect().await?;
        if table.is_none() {
            table = Some(dr_pg::LockTable::query(&client).await?);
        }
        let n = dr_pg::dumped_table_count(&client).await?;
        if n >= largest.0 {
            largest = (n, db);
        }
    }
    match table {
        Some(table) => lock_verdict(largest.0, &largest.1, &table),
        None => Ok("no database to back up".into()),
    }
}

/// Whether `tables` (of `database`) fit the server's lock table: a backup holds a lock on
/// every table in the row counting's transaction and in pg_dump's, at once. Pure.
pub fn lock_verdict(tables: u64, database: &str, table: &dr_pg::LockTable) -> Result<String> {
    let need = tables.saturating_mul(2);
    if need <= table.slots() {
        return Ok(format!(
            "{tables} tables in `{database}`: a backup holds about {need} table locks; the server's lock table holds {}",
            table.slots()
        ));
    }
    // Rounded up, plus room for everyone else's locks.
    let connections = (table.max_connections + table.max_prepared_transactions).max(1);
    let enough = (need.saturating_mul(2)).div_ceil(connections).max(64);
    Err(fail(format!(
        "{tables} tables in `{database}`: a backup holds about {need} table locks at once (the row counting and pg_dump each lock every table in one transaction), more than the server's lock table ({table}); the backup would fail with \"out of shared memory\""
    ))
    .with_hint(format!(
        "raise max_locks_per_transaction to {enough} or more in postgresql.conf (it takes a server restart)"
    )))
}

/// The `object lock` line: the bucket's versioning and Object Lock state, its default
/// retention, and what dr does with it. Fails when `[repository.object_lock]` is configured
/// and the bucket cannot lock objects (a backup would fail the same way).
async fn lock_line(store: &dyn dr_store::ObjectStore) -> Result<String> {
    let configured = store.location().object_lock();
    if matches!(store.location(), dr_store::Location::Directory { .. }) {
        return Ok("not available on a directory repository: whoever can write the directory can delete backups".into());
    }
    // An error here is a FAIL line, never folded into an ok one (a missing bucket, say;
    // refused reads are not errors: the state records them).
    let state = store.lock_state().await.map_err(|e| {
        Error::from(e).context("cannot read the bucket's versioning and Object Lock configuration")
    })?;
    lock_summary(&state, configured.as_ref())
}

/// What the credentials may not read, what that means and whether it matters; empty when
/// they read everything. Pure.
fn denied_note(
    state: &dr_store::BucketLockState,
    configured: Option<&dr_store::ObjectLock>,
) -> String {
    if state.denied.is_empty() {
        return String::new();
    }
    let apis: Vec<String> = state.denied.iter().map(|a| format!("S3 {a}")).collect();
    let mut out = format!(
        "; these credentials may not read {} (no bucket administration: fine for backups)",
        apis.join(" or ")
    );
    if state.denied.contains(&dr_store::API_VERSIONING) {
        out.push_str(if configured.is_some() {
            "; prune treats the bucket as versioned ([repository.object_lock] is set)"
        } else {
            "; prune cannot tell whether the bucket keeps old versions and deletes plainly: on a versioned bucket a pruned backup's old versions stay (and are billed) until a lifecycle rule removes them; allow s3:GetBucketVersioning to have prune remove them"
        });
    }
    if state.denied.contains(&dr_store::API_OBJECT_LOCK) && configured.is_none() {
        out.push_str(
            "; the Object Lock configuration is only needed with [repository.object_lock], which is not set",
        );
    }
    out
}

/// The `object lock` line from what the bucket said. Pure.
pub fn lock_summary(
    state: &dr_store::BucketLockState,
    configured: Option<&dr_store::ObjectLock>,
) -> Result<String> {
    let described = match &state.unknown {
        Some(why) => format!("versioning and Object Lock unknown ({why})"),
        None if !state.denied.is_empty() => format!(
            "versioning {}, Object Lock {}{}",
            if state.denied.contains(&dr_store::API_VERSIONING) {
                "unknown".to_string()
            } else {
                state.versioning.to_string()
            },
            match (state.object_lock_known(), state.object_lock) {
                (false, _) => "unknown",
                (true, true) => "enabled",
                (true, false) => "not enabled",
            },
            denied_note(state, configured)
        ),
        None => format!(
            "versioning {}, Object Lock {}, default retention {}",
            state.versioning,
            if state.object_lock {
                "enabled"
            } else {
                "not enabled"
            },
            state.default_retention.as_deref().unwrap_or("none")
        ),
    };
    match configured {
        Some(lock) => match crate::immutable::lock_usable(state) {
            Ok(()) => Ok(format!(
                "{described}; dr locks every backup object ({} {} days from the backup's start)",
                lock.mode, lock.days
            )),
            Err(reason) => Err(fail(format!(
                "{described}: [repository.object_lock] is configured, but {reason}"
            ))
            .with_hint(crate::immutable::NO_LOCK_HINT)),
        },
        None if state.object_lock => Ok(format!(
            "{described}; [repository.object_lock] is not set: dr writes no retention of its own"
        )),
        None => Ok(format!(
            "{described}: anyone with the backup host's credentials can delete backups (see [repository.object_lock] in docs/CONFIGURATION.md)"
        )),
    }
}

fn tools_line(major: u32, bin: Option<&std::path::Path>) -> Result<String> {
    let dump = dr_pg::find_tool("pg_dump", major, bin)?;
    let all = dr_pg::find_tool("pg_dumpall", dump.major, bin)?;
    Ok(format!(
        "{} at {}; pg_dumpall at {}",
        dump.version,
        dump.path.display(),
        all.path.display()
    ))
}

/// The error for a report with failed lines (exit 3), naming each; `None` when all passed.
pub fn failure(lines: &[CheckLine]) -> Option<Error> {
    let failed: Vec<&CheckLine> = lines.iter().filter(|l| !l.ok).collect();
    if failed.is_empty() {
        return None;
    }
    // Each failed line as printed but for its hints, which become the error's one hint.
    let said: Vec<String> = failed
        .iter()
        .map(|l| {
            let without_hints: Vec<String> = l
                .errors
                .iter()
                .map(|e| {
                    Error {
                        hint: None,
                        ..e.clone()
                    }
                    .to_string()
                })
                .collect();
            format!("{}: {}", l.check, without_hints.join("\n"))
        })
        .collect();
    let error = Error::new(
        Kind::Unavailable,
        format!(
            "check failed: {} of {} checks\n{}",
            failed.len(),
            lines.len(),
            said.join("\n")
        ),
    );
    let hints = failed
        .iter()
        .flat_map(|l| &l.errors)
        .filter_map(|e| e.hint.clone());
    Some(hints.fold(error, Error::with_hint))
}

/// Whether this host signs (backups, verification records) and whom it trusts. A host that
/// neither signs nor trusts anything fails: it can make no backup and use none.
pub fn signing_line(signing: &crate::trust::Signing) -> Result<String> {
    if !signing.configured {
        return Err(
            fail("no [signing] section: this host cannot make backups and trusts none").with_hint(
                format!(
                    "on the backup host run `dr keygen --signing --output /etc/dr/signing.key` and set [signing] key_file; elsewhere {}",
                    crate::trust::NOT_CONFIGURED_HINT
                ),
            ),
        );
    }
    let signs = match signing.public_key() {
        Some(k) => format!("signs with {} (key_file)", k.fingerprint()),
        None => "no key_file: this host makes no backups and its verification records are unsigned"
            .into(),
    };
    let trusted: Vec<String> = signing.trusted().iter().map(|k| k.fingerprint()).collect();
    Ok(format!(
        "{signs}; trusts {} key(s): {}",
        trusted.len(),
        trusted.join(", ")
    ))
}

/// The `backups TARGET` line: how many, the newest; fails on a future-dated backup (clock
/// skew), an overwritten one (`overwritten`, from [`crate::undelete::deleted`]: its hint is
/// `dr undelete`, never a prune that would delete the evidence), a damaged or an untrusted one. Pure.
pub fn backups_line(
    catalog: &Catalog,
    overwritten: &[DeletedBackup],
    target: &str,
    now: DateTime<Utc>,
) -> Result<String> {
    let future: Vec<String> = catalog
        .future_dated(now)
        .filter(|e| e.manifest.target == target)
        .map(|e| {
            format!(
                "clock skew: backup {} is dated {} after this host's clock (the host that took it was ahead, or this one is behind); `latest` skips it",
                e.manifest.id,
                crate::repo::dated_ahead(&e.manifest.id, now)
            )
        })
        .collect();
    let replaced: Vec<&DeletedBackup> = overwritten
        .iter()
        .filter(|d| d.target == target && !d.overwritten.is_empty())
        .collect();
    let overwritten_lines: Vec<String> = replaced
        .iter()
        .filter_map(|d| {
            d.overwritten_note()
                .map(|note| format!("backup {} is {note}", d.id))
        })
        .collect();
    // A damaged manifest that was overwritten is reported as overwritten, not as damaged.
    let damaged: Vec<String> = catalog
        .damaged
        .iter()
        .filter(|d| d.target == target && !replaced.iter().any(|r| r.id == d.id))
        .map(|d| {
            format!(
                "backup {} is damaged: manifest `{}`: {}",
                d.id, d.key, d.reason
            )
        })
        .collect();
    let untrusted: Vec<String> = catalog
        .untrusted()
        .filter(|e| e.manifest.target == target)
        .map(|e| {
            format!(
                "backup {} is one this host would not trust ({}): `latest` skips it, restore and verify refuse it",
                e.manifest.id,
                e.trust.reason()
            )
        })
        .collect();
    let mut hints = Vec::new();
    if !untrusted.is_empty() {
        hints.push("`dr list` marks untrusted backups; see \"Signing\" in docs/CONFIGURATION.md (unsigned backups made before signing existed restore with --trust-unsigned)");
    }
    if !future.is_empty() {
        hints.push("check the clock (NTP, `timedatectl`) of this host and of the backup host");
    }
    if !overwritten_lines.is_empty() {
        hints.push("someone with write access to the bucket replaced objects: treat the bucket's credentials as leaked (runbooks/credentials-leaked.md); `dr undelete` brings back the versions dr wrote");
    }
    if !damaged.is_empty() {
        hints.push("`dr prune --force` deletes damaged backups");
    }
    if !hints.is_empty() {
        let problems = [untrusted, future, overwritten_lines, damaged].concat();
        return Err(fail(problems.join("; ")).with_hint(hints.join("; ")));
    }
    let mine: Vec<_> = catalog
        .current(now)
        .filter(|e| e.manifest.target == target)
        .collect();
    Ok(match mine.first() {
        Some(newest) => format!(
            "{} complete backup(s), newest {}",
            mine.len(),
            newest.manifest.id
        ),
        None => "no backups yet".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{damaged, entry, now};

    #[test]
    fn refused_reads_are_said_once_plainly_in_an_ok_line() {
        let state = dr_store::BucketLockState {
            versioning: dr_store::Versioning::Enabled,
            denied: vec![dr_store::API_OBJECT_LOCK],
            ..Default::default()
        };
        let line = lock_summary(&state, None).expect("not needed without object_lock");
        assert_eq!(
            line.matches("GetObjectLockConfiguration").count(),
            1,
            "{line}"
        );
        assert!(
            line.starts_with("versioning enabled, Object Lock unknown"),
            "{line}"
        );
        assert!(!line.contains("AccessDenied") && !line.contains("GetBucketVersioning"));
        let lock = dr_store::ObjectLock {
            mode: dr_store::LockMode::Compliance,
            days: 7,
        };
        assert!(lock_summary(&state, Some(&lock)).is_err());
        let state = dr_store::BucketLockState {
            denied: vec![dr_store::API_VERSIONING, dr_store::API_OBJECT_LOCK],
            ..Default::default()
        };
        let line = lock_summary(&state, None).expect("ok");
        assert!(line.contains("prune cannot tell"), "{line}");
    }

    /// The report's error: each failed line as printed but for its hints, which follow in
    /// order as one `hint:` line (as `dr check` has always said it).
    #[test]
    fn failure_gathers_the_failed_lines_hints_into_one() {
        let lines = vec![
            line("config", Ok::<_, Error>("valid".into())),
            line("x", Err(fail("a").with_hint("ha"))),
            line(
                "y",
                Err(Failure(vec![
                    fail("b1").with_hint("hb1"),
                    fail("b2").with_hint("hb2"),
                ])),
            ),
            line("z", Err(fail("c\nc detail"))),
        ];
        assert_eq!(lines[2].detail, "b1\nhint: hb1\nb2\nhint: hb2");
        let e = failure(&lines).expect("failed");
        assert_eq!(e.kind, Kind::Unavailable);
        assert_eq!(
            e.to_string(),
            "check failed: 3 of 4 checks\nx: a\ny: b1\nb2\nz: c\nc detail\nhint: ha; hb1; hb2"
        );
        assert!(failure(&lines[..1]).is_none());
    }

    #[test]
    fn lock_verdict_fails_when_a_backup_needs_more_locks_than_the_server_has() {
        let table = dr_pg::LockTable {
            max_locks_per_transaction: 64,
            max_connections: 100,
            max_prepared_transactions: 0,
        };
        let ok = lock_verdict(3000, "app", &table).expect("fits");
        assert!(
            ok.contains("3000 tables in `app`") && ok.contains("6400"),
            "{ok}"
        );
        let e = lock_verdict(20_000, "app", &table)
            .expect_err("too many")
            .to_string();
        assert!(e.contains("out of shared memory"), "{e}");
        assert!(e.contains("max_locks_per_transaction 64"), "{e}");
        assert!(
            e.contains("hint: raise max_locks_per_transaction to 800 or more"),
            "{e}"
        );
    }

    #[test]
    fn backups_line_reports_clock_skew() {
        let c = Catalog {
            entries: vec![
                entry("app", "20261222T030000Z"),
                entry("app", "20261122T020000Z"),
            ],
            damaged: vec![],
        };
        let e = backups_line(&c, &[], "app", now())
            .expect_err("skew")
            .to_string();
        assert!(e.contains("clock skew"), "{e}");
        assert!(e.contains("20261222T030000Z"), "{e}");
        assert!(e.contains("dated 30d 0h after"), "{e}");
    }

    #[test]
    fn backups_line_reports_damage_and_counts_otherwise() {
        let good = Catalog {
            entries: vec![
                entry("app", "20261122T020000Z"),
                entry("db", "20261122T020500Z"),
            ],
            damaged: vec![],
        };
        let ok = backups_line(&good, &[], "app", now()).expect("ok");
        assert_eq!(ok, "1 complete backup(s), newest 20261122T020000Z");
        assert_eq!(
            backups_line(&Catalog::default(), &[], "app", now()).expect("empty"),
            "no backups yet"
        );
        let mut bad = good.clone();
        bad.damaged
            .push(damaged("app", "20261101T030000Z", "not valid JSON (EOF)"));
        let e = backups_line(&bad, &[], "app", now())
            .expect_err("damaged")
            .to_string();
        assert!(e.contains("damaged") && e.contains("EOF"), "{e}");
        assert!(backups_line(&bad, &[], "db", now()).is_ok());
    }

    /// Regression: an overwritten backup (its manifest replaced, so also damaged) got the hint
    /// `dr prune --force`, which deletes the evidence; `dr undelete` brings it back.
    #[test]
    fn an_overwritten_backup_points_at_undelete_not_prune() {
        use crate::undelete::{DeletedBackup, Overwritten};
        let mut c = Catalog {
            entries: vec![entry("app", "20261121T030000Z")],
            damaged: vec![],
        };
        c.damaged.push(damaged(
            "app",
            "20261120T030000Z",
            "the manifest is of another backup",
        ));
        let over = |id: &str| DeletedBackup {
            target: "app".into(),
            id: id.parse().expect("id"),
            state: "overwritten".into(),
            manifest_version: "a".into(),
            deleted_at: None,
            hidden_objects: 0,
            markers: vec![],
            overwritten: vec![Overwritten {
                key: format!("app/{id}/manifest.json"),
                original_version: "a".into(),
                original_size: 8,
                newer_versions: vec!["b".into()],
                overwritten_at: None,
            }],
            restored: vec![],
        };
        let found = [over("20261120T030000Z"), over("20261121T030000Z")];
        let e = backups_line(&c, &found, "app", now())
            .expect_err("overwritten")
            .to_string();
        assert!(e.contains("dr undelete 20261120T030000Z"), "{e}");
        assert!(e.contains("dr undelete 20261121T030000Z"), "{e}");
        assert!(!e.contains("prune"), "{e}");
        assert!(backups_line(&c, &found, "db", now()).is_ok());
    }
}
