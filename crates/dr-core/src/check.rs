//! `dr check`: everything a backup needs, tested without taking one.

use chrono::{DateTime, Utc};
use dr_pg::{ConnInfo, ServerVersion};

use crate::repo::Catalog;
use crate::{Context, Error, Kind, Result};

/// One line of the report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckLine {
    pub check: String,
    pub ok: bool,
    pub detail: String,
}

/// Run every check; never stops at the first failure so the operator sees them all. The
/// lines are returned whether they pass or not: see [`failure`] for the exit status.
pub async fn run(ctx: &Context, target: Option<&str>) -> Result<Vec<CheckLine>> {
    let mut out = Vec::new();
    let mut push = |check: String, r: std::result::Result<String, String>| {
        let (ok, detail) = match r {
            Ok(d) => (true, d),
            Err(d) => (false, d),
        };
        out.push(CheckLine { check, ok, detail });
    };
    push(
        "config".into(),
        Ok(ctx
            .config
            .source
            .as_ref()
            .map(|p| format!("{} is valid", p.display()))
            .unwrap_or_else(|| "valid".into())),
    );
    push(
        "recipients".into(),
        ctx.recipients()
            .map(|r| format!("{} age recipient(s)", r.to_strings().len()))
            .map_err(|e| e.to_string()),
    );
    if ctx.config.encryption.identity_file.is_some() {
        push(
            "identity".into(),
            ctx.identities().map_err(|e| e.to_string()).and_then(|ids| {
                let recips = ctx.config.recipients().unwrap_or_default();
                if ids.publics().iter().any(|p| recips.contains(p)) {
                    Ok("matches a configured recipient".into())
                } else {
                    Err("the identity matches none of encryption.recipients: backups could not be restored with it".into())
                }
            }),
        );
    }
    // Jobs that will fail at their time for want of the identity. No schedules is fine here
    // (cron or a timer may run dr): only verify jobs that exist are checked.
    if let Ok(jobs) = crate::daemon::load_jobs(&ctx.config) {
        if jobs
            .iter()
            .any(|j| matches!(j.kind, dr_config::JobKind::Verify))
        {
            push(
                "verify jobs".into(),
                crate::daemon::verify_jobs_without_identity(&ctx.config, &jobs)
                    .map(|()| "the identity they need is configured".into())
                    .map_err(|e| e.to_string()),
            );
        }
    }
    push(
        format!("repository {}", ctx.store.location()),
        dr_store::probe_writable(ctx.store.as_ref())
            .await
            .map(|_| "writable".into())
            .map_err(|e| e.to_string()),
    );
    push("object lock".into(), lock_line(ctx).await);
    push("signing".into(), signing_line(&ctx.signing));
    let targets = ctx.config.select_targets(target).map_err(Error::config)?;
    // What the repository already holds: a future-dated backup means a clock is wrong (the
    // backup host's then, or this host's now), a damaged one needs the operator.
    let catalog = crate::repo::catalog(ctx.store.as_ref(), target, &ctx.signing).await;
    let now = Utc::now();
    for t in &targets {
        push(
            format!("backups {}", t.name),
            match &catalog {
                Ok(c) => backups_line(c, &t.name, now),
                Err(e) => Err(format!("cannot list the backups: {e}")),
            },
        );
    }
    for t in targets {
        // The database and the tools are separate lines: with the database down the tools
        // line still says what is (not) known, instead of both vanishing behind one error.
        let conn = ConnInfo::parse(&t.url).map_err(|e| e.to_string());
        let version: std::result::Result<(ServerVersion, String), String> = async {
            let conn = conn.clone()?;
            let client = conn.connect().await.map_err(|e| e.to_string())?;
            let v = ServerVersion::query(&client)
                .await
                .map_err(|e| e.to_string())?;
            Ok((v, conn.user().to_string()))
        }
        .await;
        push(
            format!("target {}", t.name),
            version
                .as_ref()
                .map(|(v, user)| format!("PostgreSQL {} reachable as {user}", v.text))
                .map_err(Clone::clone),
        );
        let bin = t
            .pg_bin_dir
            .as_deref()
            .or(ctx.config.backup.pg_bin_dir.as_deref());
        push(
            format!("tools {}", t.name),
            match &version {
                Ok((v, _)) => tools_line(v.major, bin),
                Err(_) => Err(
                    "not checked: which pg_dump fits depends on the server's version, unknown until the database answers"
                        .into(),
                ),
            },
        );
    }
    Ok(out)
}

/// The `object lock` line: the bucket's versioning and Object Lock state, its default
/// retention, and what dr does with it. Fails when `[repository.object_lock]` is configured
/// and the bucket cannot lock objects (a backup would fail the same way).
async fn lock_line(ctx: &Context) -> std::result::Result<String, String> {
    let configured = ctx.store.location().object_lock();
    if matches!(ctx.store.location(), dr_store::Location::Directory { .. }) {
        return Ok("not available on a directory repository: whoever can write the directory can delete backups".into());
    }
    let state = match ctx.store.lock_state().await {
        Ok(s) => s,
        Err(e) if configured.is_some() => {
            return Err(format!(
                "cannot read the bucket's versioning and Object Lock configuration: {e}"
            ))
        }
        Err(e) => return Ok(format!("state unknown ({e})")),
    };
    lock_summary(&state, configured.as_ref())
}

/// The `object lock` line from what the bucket said. Pure.
pub fn lock_summary(
    state: &dr_store::BucketLockState,
    configured: Option<&dr_store::ObjectLock>,
) -> std::result::Result<String, String> {
    let described = match &state.unknown {
        Some(why) => format!("versioning and Object Lock unknown ({why})"),
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
            Err(reason) => Err(format!(
                "{described}: [repository.object_lock] is configured, but {reason}\nhint: {}",
                crate::immutable::NO_LOCK_HINT
            )),
        },
        None if state.object_lock => Ok(format!(
            "{described}; [repository.object_lock] is not set: dr writes no retention of its own"
        )),
        None => Ok(format!(
            "{described}: anyone with the backup host's credentials can delete backups (see [repository.object_lock] in docs/CONFIGURATION.md)"
        )),
    }
}

fn tools_line(major: u32, bin: Option<&std::path::Path>) -> std::result::Result<String, String> {
    let dump = dr_pg::find_tool("pg_dump", major, bin).map_err(|e| e.to_string())?;
    let all = dr_pg::find_tool("pg_dumpall", dump.major, bin).map_err(|e| e.to_string())?;
    Ok(format!(
        "{} at {}; pg_dumpall at {}",
        dump.version,
        dump.path.display(),
        all.path.display()
    ))
}

/// The error for a report with failed lines (exit 3), naming each; `None` when all passed.
pub fn failure(lines: &[CheckLine]) -> Option<Error> {
    let failed: Vec<String> = lines
        .iter()
        .filter(|l| !l.ok)
        .map(|l| format!("{}: {}", l.check, l.detail))
        .collect();
    (!failed.is_empty()).then(|| {
        Error::new(
            Kind::Unavailable,
            format!(
                "check failed: {} of {} checks\n{}",
                failed.len(),
                lines.len(),
                failed.join("\n")
            ),
        )
    })
}

/// The `backups TARGET` line: how many, the newest; fails on a future-dated backup (clock
/// skew) or a damaged one. Pure.
/// Whether this host signs (backups, verification records) and whom it trusts. A host that
/// neither signs nor trusts anything fails: it can make no backup and use none.
pub fn signing_line(signing: &crate::trust::Signing) -> std::result::Result<String, String> {
    if !signing.configured {
        return Err(format!(
            "no [signing] section: this host cannot make backups and trusts none\nhint: on the backup host run `dr keygen --signing --output /etc/dr/signing.key` and set [signing] key_file; elsewhere {}",
            crate::trust::NOT_CONFIGURED_HINT
        ));
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

pub fn backups_line(
    catalog: &Catalog,
    target: &str,
    now: DateTime<Utc>,
) -> std::result::Result<String, String> {
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
    let damaged: Vec<String> = catalog
        .damaged
        .iter()
        .filter(|d| d.target == target)
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
    if !damaged.is_empty() {
        hints.push("`dr prune --force` deletes damaged backups");
    }
    if !hints.is_empty() {
        let problems = [untrusted, future, damaged].concat();
        return Err(format!(
            "{}\nhint: {}",
            problems.join("; "),
            hints.join("; ")
        ));
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
    fn backups_line_reports_clock_skew() {
        let c = Catalog {
            entries: vec![
                entry("app", "20261222T030000Z"),
                entry("app", "20261122T020000Z"),
            ],
            damaged: vec![],
        };
        let e = backups_line(&c, "app", now()).expect_err("skew");
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
        let ok = backups_line(&good, "app", now()).expect("ok");
        assert_eq!(ok, "1 complete backup(s), newest 20261122T020000Z");
        assert_eq!(
            backups_line(&Catalog::default(), "app", now()).expect("empty"),
            "no backups yet"
        );
        let mut bad = good.clone();
        bad.damaged
            .push(damaged("app", "20261101T030000Z", "not valid JSON (EOF)"));
        let e = backups_line(&bad, "app", now()).expect_err("damaged");
        assert!(e.contains("damaged") && e.contains("EOF"), "{e}");
        assert!(backups_line(&bad, "db", now()).is_ok());
    }
}
