//! Applying the backup's roles and tablespaces to the target (which statements of the
//! `pg_dumpall --globals-only` script to run, and which roles they give powers to, is
//! `dr_pg::plan_globals`'s).
//!
//! Globals are not a back door: a role the script would create as SUPERUSER, REPLICATION or
//! BYPASSRLS, with a password, or as a member of such a role is named in the plan and created
//! only when the operator names it (`--allow-role NAME`); otherwise the restore is refused
//! before anything is changed. `--yes` does not allow it. Existing roles are never altered.

use dr_pg::{plan_globals, ConnInfo, PowerfulRole, TargetGlobals};

use super::RestoreOptions;
use crate::{Error, Kind, Result};

/// The roles the backup's globals would create with powers on the target (for the plan).
pub(super) async fn powerful_roles(conn: &ConnInfo, sql: &[u8]) -> Result<Vec<PowerfulRole>> {
    let admin = conn.connect_admin().await?;
    let target = TargetGlobals::read(&admin).await?;
    Ok(plan_globals(&String::from_utf8_lossy(sql), &target).powerful)
}

/// Refuses (exit 7) when a role with powers is not named by `--allow-role`: nothing has been
/// changed yet.
/// `from`: where the globals come from, "backup ID" (the hint then says how to read them) or
/// "the sandbox of `app` as of TIME".
pub(super) fn check_allowed(
    roles: &[PowerfulRole],
    opts: &RestoreOptions,
    from: &str,
) -> Result<()> {
    if opts.allow_any_role {
        return Ok(());
    }
    let refused: Vec<&PowerfulRole> = roles
        .iter()
        .filter(|r| !opts.allow_roles.contains(&r.name))
        .collect();
    if refused.is_empty() {
        return Ok(());
    }
    let names = refused
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let flags = refused
        .iter()
        .map(|r| format!("--allow-role {}", shell_word(&r.name)))
        .collect::<Vec<_>>()
        .join(" ");
    Err(Error::new(
        Kind::Refused,
        format!(
            "--with-globals would create {} role(s) with powers from {from}: {names}; nothing was changed",
            refused.len()
        ),
    )
    .with_hint(format!(
        "{}if the backup is yours and they are expected, name each to create it as the backup has it: {flags} (--yes is not enough); or restore without --with-globals",
        // A stored backup's globals can be read before anything is restored.
        from.strip_prefix("backup ").map_or(String::new(), |id| format!(
            "read them first (`dr restore {id} --globals-to-file FILE`); "
        ))
    )))
}

/// `name` as one shell word.
fn shell_word(name: &str) -> String {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
    {
        name.to_string()
    } else {
        format!("'{}'", name.replace('\'', r"'\''"))
    }
}

/// Create the roles (and tablespaces) the target lacks; never alter existing ones. Roles
/// with powers the operator did not allow are refused again here (the target may have
/// changed since the plan). Returns error lines (a failure here is reported, and the restore
/// continues).
pub async fn apply_globals(
    conn: &ConnInfo,
    sql: &[u8],
    opts: &RestoreOptions,
    from: &str,
) -> Result<Vec<String>> {
    let admin = conn.connect_admin().await?;
    let target = TargetGlobals::read(&admin).await?;
    let plan = plan_globals(&String::from_utf8_lossy(sql), &target);
    check_allowed(&plan.powerful, opts, from)?;
    for s in &plan.skipped {
        // Never written by pg_dumpall in this form: not run, and said.
        tracing::warn!("globals: skipped a statement dr cannot read safely (in: {s})");
    }
    let applied = dr_pg::run_globals_plan(&admin, &plan).await;
    for r in &plan.powerful {
        tracing::warn!(role = %r.name, gets = %r.gets.join(", "), "created a role with powers (allowed)");
    }
    tracing::info!(created = applied.created, "roles and tablespaces applied");
    Ok(applied.errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evil() -> PowerfulRole {
        PowerfulRole {
            name: "evil".into(),
            gets: vec!["SUPERUSER".into(), "a password".into()],
        }
    }

    #[test]
    fn powerful_roles_need_their_own_flag() {
        let mut opts = RestoreOptions {
            with_globals: true,
            ..RestoreOptions::default()
        };
        let e = check_allowed(&[evil()], &opts, "backup 20261122T030000Z").expect_err("refused");
        assert_eq!(e.kind, Kind::Refused);
        let msg = e.to_string();
        assert!(msg.contains("evil (SUPERUSER, a password)"), "{msg}");
        let hint = e.hint.as_deref().unwrap_or_default();
        assert!(hint.contains("--allow-role evil"), "{msg}");
        opts.allow_roles = vec!["evil".into()];
        check_allowed(&[evil()], &opts, "x").expect("allowed by name");
        opts.allow_roles = vec!["other".into()];
        assert!(check_allowed(&[evil()], &opts, "x").is_err());
        opts.allow_any_role = true;
        check_allowed(&[evil()], &opts, "x").expect("a sandbox allows all");
        assert_eq!(shell_word("Bob's role"), r"'Bob'\''s role'");
    }
}
