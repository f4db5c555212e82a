//! Roles and tablespaces from the backup's `pg_dumpall --globals-only` script.

use std::collections::BTreeSet;

use dr_pg::ConnInfo;

use crate::{Error, Kind, Result};

/// Create the roles (and tablespaces) the target lacks; never alter existing ones.
/// Returns error lines (a failure here is reported, and the restore continues).
pub async fn apply_globals(conn: &ConnInfo, sql: &[u8]) -> Result<Vec<String>> {
    let text = String::from_utf8_lossy(sql);
    let admin = conn.connect_admin().await?;
    let existing: BTreeSet<String> = admin
        .query("select rolname::text from pg_roles", &[])
        .await
        .map_err(|e| Error::new(Kind::Failed, format!("listing roles: {e}")))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let spaces: BTreeSet<String> = admin
        .query("select spcname::text from pg_tablespace", &[])
        .await
        .map_err(|e| Error::new(Kind::Failed, format!("listing tablespaces: {e}")))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut errors = Vec::new();
    let mut created = 0;
    for stmt in globals_statements(&text, &existing, &spaces) {
        match admin.batch_execute(&stmt).await {
            Ok(()) => {
                if stmt.starts_with("CREATE ") {
                    created += 1;
                }
            }
            Err(e) => {
                let msg = e
                    .as_db_error()
                    .map(|d| d.message().to_string())
                    .unwrap_or_else(|| e.to_string());
                errors.push(format!("globals: {msg} (in: {})", first_words(&stmt)));
            }
        }
    }
    tracing::info!(
        created,
        skipped_existing = existing.len(),
        "roles and tablespaces applied"
    );
    Ok(errors)
}

fn first_words(s: &str) -> String {
    s.split_whitespace().take(4).collect::<Vec<_>>().join(" ")
}

fn unquote(name: &str) -> String {
    let n = name.trim();
    if let Some(inner) = n.strip_prefix('"').and_then(|x| x.strip_suffix('"')) {
        inner.replace("\"\"", "\"")
    } else {
        n.to_string()
    }
}

/// The statements of a `pg_dumpall --globals-only` script that create or configure objects the
/// target lacks. Statements touching existing roles or tablespaces are dropped.
pub fn globals_statements(
    text: &str,
    roles: &BTreeSet<String>,
    spaces: &BTreeSet<String>,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut new_roles = BTreeSet::new();
    let mut cur = String::new();
    for line in text.lines() {
        if cur.is_empty()
            && (line.starts_with("--") || line.trim().is_empty() || line.starts_with('\\'))
        {
            continue;
        }
        cur.push_str(line);
        cur.push('\n');
        if !line.trim_end().ends_with(';') {
            continue;
        }
        let stmt = std::mem::take(&mut cur);
        let s = stmt.trim();
        let keep = if let Some(rest) = s.strip_prefix("CREATE ROLE ") {
            let name = unquote(rest.trim_end_matches(';'));
            let missing = !roles.contains(&name);
            if missing {
                new_roles.insert(name);
            }
            missing
        } else if let Some(rest) = s.strip_prefix("ALTER ROLE ") {
            let name = role_name_prefix(rest);
            new_roles.contains(&name)
        } else if let Some(rest) = s.strip_prefix("CREATE TABLESPACE ") {
            let name = role_name_prefix(rest);
            !spaces.contains(&name)
        } else if let Some(rest) = s.strip_prefix("GRANT ") {
            // Memberships only for roles created here: existing roles are never altered.
            rest.rsplit_once(" TO ")
                .map(|(_, to)| role_name_prefix(to))
                .is_some_and(|grantee| new_roles.contains(&grantee))
        } else {
            // Session settings only; anything else touching existing objects is dropped.
            s.starts_with("SET ")
        };
        if keep {
            out.push(s.to_string());
        }
    }
    out
}

/// The (possibly quoted) identifier at the start of `s`.
fn role_name_prefix(s: &str) -> String {
    let s = s.trim_start();
    if let Some(rest) = s.strip_prefix('"') {
        let mut name = String::new();
        let mut chars = rest.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    name.push('"');
                    chars.next();
                } else {
                    break;
                }
            } else {
                name.push(c);
            }
        }
        name
    } else {
        s.split(|c: char| c.is_whitespace() || c == ';')
            .next()
            .unwrap_or("")
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globals_create_only_missing_roles() {
        let script = "--\n-- Roles\n--\n\nCREATE ROLE alice;\nALTER ROLE alice WITH NOSUPERUSER LOGIN PASSWORD 'x';\nCREATE ROLE postgres;\nALTER ROLE postgres WITH SUPERUSER;\nCREATE ROLE \"Bob \"\"B\";\nALTER ROLE \"Bob \"\"B\" WITH LOGIN;\nGRANT alice TO \"Bob \"\"B\" GRANTED BY postgres;\nGRANT alice TO postgres GRANTED BY postgres;\n";
        let roles: BTreeSet<String> = ["postgres".to_string()].into();
        let out = globals_statements(script, &roles, &BTreeSet::new());
        assert_eq!(
            out,
            vec![
                "CREATE ROLE alice;",
                "ALTER ROLE alice WITH NOSUPERUSER LOGIN PASSWORD 'x';",
                "CREATE ROLE \"Bob \"\"B\";",
                "ALTER ROLE \"Bob \"\"B\" WITH LOGIN;",
                "GRANT alice TO \"Bob \"\"B\" GRANTED BY postgres;",
            ]
        );
    }
}
