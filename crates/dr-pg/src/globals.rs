//! The `pg_dumpall --globals-only` script: which of its statements create what a target
//! server lacks. Roles and tablespaces that exist are never altered.
//!
//! ```
//! use std::collections::BTreeSet;
//! let script = "CREATE ROLE app;\nALTER ROLE app WITH LOGIN;\nCREATE ROLE postgres;\n";
//! let existing: BTreeSet<String> = ["postgres".to_string()].into();
//! assert_eq!(
//!     dr_pg::globals_statements(script, &existing, &BTreeSet::new()),
//!     ["CREATE ROLE app;", "ALTER ROLE app WITH LOGIN;"]
//! );
//! ```

use std::collections::BTreeSet;

/// A statement's first words, to name it in an error line.
pub fn first_words(s: &str) -> String {
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

    #[test]
    fn tablespaces_only_when_missing_and_settings_kept() {
        let script = "SET default_transaction_read_only = off;\n\\connect template1\nCREATE TABLESPACE fast OWNER postgres LOCATION '/mnt/fast';\nCREATE TABLESPACE \"Old\" OWNER postgres LOCATION '/mnt/old';\nDROP ROLE alice;\n";
        let spaces: BTreeSet<String> = ["Old".to_string()].into();
        let out = globals_statements(script, &BTreeSet::new(), &spaces);
        assert_eq!(
            out,
            vec![
                "SET default_transaction_read_only = off;",
                "CREATE TABLESPACE fast OWNER postgres LOCATION '/mnt/fast';",
            ]
        );
    }

    #[test]
    fn statements_may_span_lines() {
        let script = "CREATE ROLE carol;\nALTER ROLE carol WITH LOGIN\n    PASSWORD 'x';\n";
        let out = globals_statements(script, &BTreeSet::new(), &BTreeSet::new());
        assert_eq!(
            out,
            vec![
                "CREATE ROLE carol;",
                "ALTER ROLE carol WITH LOGIN\n    PASSWORD 'x';"
            ]
        );
    }

    #[test]
    fn identifiers_are_read_quoted_or_plain() {
        assert_eq!(role_name_prefix("\"Bob \"\"B\" WITH LOGIN;"), "Bob \"B");
        assert_eq!(role_name_prefix("  alice;"), "alice");
        assert_eq!(role_name_prefix("alice WITH LOGIN"), "alice");
        assert_eq!(unquote(" \"a\"\"b\" "), "a\"b");
        assert_eq!(unquote("plain"), "plain");
        assert_eq!(first_words("GRANT a TO b GRANTED BY c;"), "GRANT a TO b");
    }
}
