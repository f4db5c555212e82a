//! The `pg_dumpall --globals-only` script: which of its statements create what a target
//! server lacks, and which roles they would give powers to. Roles and tablespaces that exist
//! are never altered.
//!
//! The script is read strictly, as data that may have been forged: a statement is run only
//! when it is one of the few kinds `pg_dumpall` writes (`CREATE ROLE`, `ALTER ROLE`,
//! `CREATE TABLESPACE`, `GRANT` of a role, a few `SET`s), holds exactly one statement (no
//! `;` inside, no comment, no dollar or escape string) and touches only roles this script
//! creates. What it cannot read that way is skipped and reported.
//!
//! A role this script would create as SUPERUSER, REPLICATION or BYPASSRLS, with a password,
//! or as a member of a role with such powers (or of the roles that read, write or run files
//! on the server) is a [`PowerfulRole`]: the restore names it and creates it only when the
//! operator names it too.
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

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::error::PgError;

/// Predefined roles whose members read, write or run files as the server: as powerful as a
/// superuser.
const SERVER_FILE_ROLES: [&str; 3] = [
    "pg_execute_server_program",
    "pg_read_server_files",
    "pg_write_server_files",
];

/// The `SET`s `pg_dumpall` writes; any other is skipped (e.g. one turning
/// `standard_conforming_strings` off would change how the statements after it are read).
const SETTINGS_KEPT: [&str; 3] = [
    "default_transaction_read_only",
    "client_encoding",
    "standard_conforming_strings",
];

/// What the target server has: roles, which of them are powerful, tablespaces.
#[derive(Debug, Clone, Default)]
pub struct TargetGlobals {
    pub roles: BTreeSet<String>,
    /// Roles with SUPERUSER, REPLICATION or BYPASSRLS.
    pub powerful: BTreeSet<String>,
    pub spaces: BTreeSet<String>,
}

impl TargetGlobals {
    /// Reads them from the server `client` is connected to.
    pub async fn read(client: &tokio_postgres::Client) -> Result<TargetGlobals, PgError> {
        let rows = client
            .query(
                "select rolname::text, rolsuper or rolreplication or rolbypassrls from pg_roles",
                &[],
            )
            .await
            .map_err(|e| PgError::query("listing roles", e))?;
        let mut t = TargetGlobals::default();
        for r in rows {
            let name: String = r.get(0);
            if r.get::<_, bool>(1) {
                t.powerful.insert(name.clone());
            }
            t.roles.insert(name);
        }
        t.spaces = client
            .query("select spcname::text from pg_tablespace", &[])
            .await
            .map_err(|e| PgError::query("listing tablespaces", e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        Ok(t)
    }
}

/// A role the script would create with a power: named in the restore plan, created only when
/// the operator names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PowerfulRole {
    pub name: String,
    /// What it would get: "SUPERUSER", "REPLICATION", "BYPASSRLS", "a password",
    /// "member of NAME".
    pub gets: Vec<String>,
}

impl std::fmt::Display for PowerfulRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name, self.gets.join(", "))
    }
}

/// The script as it applies to one target.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GlobalsPlan {
    /// What would run, in order.
    pub statements: Vec<String>,
    /// Roles created with powers, by name.
    pub powerful: Vec<PowerfulRole>,
    /// Statements left out because dr cannot read them safely (their first words).
    pub skipped: Vec<String>,
}

/// The statements of `text` to run on a target with `roles` and `spaces` (nothing it holds
/// is altered). See [`plan_globals`] for the powers they give.
pub fn globals_statements(
    text: &str,
    roles: &BTreeSet<String>,
    spaces: &BTreeSet<String>,
) -> Vec<String> {
    let target = TargetGlobals {
        roles: roles.clone(),
        powerful: BTreeSet::new(),
        spaces: spaces.clone(),
    };
    plan_globals(text, &target).statements
}

/// What running a [`GlobalsPlan`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GlobalsApplied {
    /// `CREATE` statements that succeeded.
    pub created: usize,
    /// One line per statement that failed: `globals: MESSAGE (in: FIRST WORDS)`.
    pub errors: Vec<String>,
}

/// Runs the plan's statements on `admin`, one at a time: one that fails is noted with the
/// server's message and the others still run (a role that cannot be created must not keep
/// the others out).
pub async fn run_globals_plan(
    admin: &tokio_postgres::Client,
    plan: &GlobalsPlan,
) -> GlobalsApplied {
    let mut done = GlobalsApplied::default();
    for stmt in &plan.statements {
        match admin.batch_execute(stmt).await {
            Ok(()) => {
                if stmt.starts_with("CREATE ") {
                    done.created += 1;
                }
            }
            Err(e) => {
                let msg = e
                    .as_db_error()
                    .map(|d| d.message().to_string())
                    .unwrap_or_else(|| e.to_string());
                done.errors
                    .push(format!("globals: {msg} (in: {})", first_words(stmt)));
            }
        }
    }
    done
}

/// A statement's first words, to name it in an error line.
pub fn first_words(s: &str) -> String {
    s.split_whitespace().take(4).collect::<Vec<_>>().join(" ")
}

/// What running `text` on `target` would do: the statements that create what it lacks, the
/// roles that would get powers, the statements skipped.
pub fn plan_globals(text: &str, target: &TargetGlobals) -> GlobalsPlan {
    let mut plan = GlobalsPlan::default();
    let mut new_roles = BTreeSet::new();
    // role → powers from its own attributes, and the roles it joins.
    let mut attrs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut joins: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for stmt in split_statements(text) {
        let Ok(tokens) = lex(&stmt) else {
            plan.skipped.push(first_words(&stmt));
            continue;
        };
        match classify(&tokens) {
            Stmt::CreateRole(name, options) => {
                if target.roles.contains(&name) || new_roles.contains(&name) {
                    continue;
                }
                let Some(powers) = options else {
                    plan.skipped.push(first_words(&stmt));
                    continue;
                };
                new_roles.insert(name.clone());
                attrs.entry(name).or_default().extend(powers);
            }
            Stmt::AlterRole(name, options) => {
                if !new_roles.contains(&name) {
                    continue;
                }
                match options {
                    AlterKind::Attributes(Some(powers)) => {
                        attrs.entry(name).or_default().extend(powers);
                    }
                    AlterKind::Attributes(None) | AlterKind::Other => {
                        plan.skipped.push(first_words(&stmt));
                        continue;
                    }
                    AlterKind::Settings => {}
                }
            }
            Stmt::Grant(granted, grantees) => {
                if !grantees.iter().all(|g| new_roles.contains(g)) {
                    continue;
                }
                for g in grantees {
                    joins.entry(g).or_default().extend(granted.iter().cloned());
                }
            }
            Stmt::CreateTablespace(name) => {
                if target.spaces.contains(&name) {
                    continue;
                }
            }
            Stmt::Set(true) => {}
            Stmt::Set(false) | Stmt::Unreadable => {
                plan.skipped.push(first_words(&stmt));
                continue;
            }
            Stmt::Other => continue,
        }
        plan.statements.push(stmt.trim().to_string());
    }
    plan.powerful = powers(&new_roles, &attrs, &joins, target);
    plan
}

/// The powers of each new role: its attributes, and membership in a powerful role (on the
/// target, created here, or a server-file role), followed through chains of memberships.
fn powers(
    new_roles: &BTreeSet<String>,
    attrs: &BTreeMap<String, BTreeSet<String>>,
    joins: &BTreeMap<String, BTreeSet<String>>,
    target: &TargetGlobals,
) -> Vec<PowerfulRole> {
    let mut gets: BTreeMap<String, BTreeSet<String>> = new_roles
        .iter()
        .map(|r| (r.clone(), attrs.get(r).cloned().unwrap_or_default()))
        .collect();
    loop {
        let powerful = |r: &String| {
            target.powerful.contains(r)
                || SERVER_FILE_ROLES.contains(&r.as_str())
                || gets.get(r).is_some_and(|g| !g.is_empty())
        };
        let mut added = Vec::new();
        for r in new_roles {
            for j in joins.get(r).into_iter().flatten() {
                let what = format!("member of {j}");
                if powerful(j) && !gets.get(r).is_some_and(|g| g.contains(&what)) {
                    added.push((r.clone(), what));
                }
            }
        }
        if added.is_empty() {
            break;
        }
        for (r, what) in added {
            gets.entry(r).or_default().insert(what);
        }
    }
    gets.into_iter()
        .filter(|(_, g)| !g.is_empty())
        .map(|(name, g)| {
            let mut gets: Vec<String> = g.into_iter().collect();
            // Attributes first, then the password, then memberships.
            gets.sort_by_key(|w| {
                (
                    w.starts_with("member"),
                    w.starts_with("a password"),
                    w.clone(),
                )
            });
            PowerfulRole { name, gets }
        })
        .collect()
}

/// The script's statements, a line ending in `;` ending one; comment lines, blank lines and
/// psql meta-commands (`\connect`) between statements are left out.
fn split_statements(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        if cur.is_empty()
            && (line.starts_with("--") || line.trim().is_empty() || line.starts_with('\\'))
        {
            continue;
        }
        cur.push_str(line);
        cur.push('\n');
        if line.trim_end().ends_with(';') {
            out.push(std::mem::take(&mut cur));
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    /// An unquoted word, folded to lower case as PostgreSQL does.
    Word(String),
    /// A double-quoted identifier.
    Quoted(String),
    /// A single-quoted string.
    Str(String),
    Sym(char),
}

impl Token {
    fn is(&self, word: &str) -> bool {
        matches!(self, Token::Word(w) if w == word)
    }
    fn ident(&self) -> Option<String> {
        match self {
            Token::Word(w) | Token::Quoted(w) => Some(w.clone()),
            _ => None,
        }
    }
}

/// One statement as tokens, without its final `;`. Refused: more than one statement,
/// comments, dollar quotes, escape or Unicode strings, an unterminated quote.
fn lex(stmt: &str) -> Result<Vec<Token>, ()> {
    let s = stmt.trim();
    let body = s.strip_suffix(';').ok_or(())?;
    let mut out = Vec::new();
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '\'' | '"' => {
                let mut v = String::new();
                loop {
                    match chars.next() {
                        None => return Err(()),
                        Some(q) if q == c => {
                            if chars.peek() == Some(&c) {
                                v.push(c);
                                chars.next();
                            } else {
                                break;
                            }
                        }
                        Some(x) => v.push(x),
                    }
                }
                out.push(if c == '"' {
                    Token::Quoted(v)
                } else {
                    Token::Str(v)
                });
            }
            c if c.is_alphanumeric() || c == '_' => {
                let mut w = String::from(c);
                while let Some(&n) = chars.peek() {
                    if n.is_alphanumeric() || n == '_' {
                        w.push(n);
                        chars.next();
                    } else {
                        break;
                    }
                }
                // E'…', U&'…', B'…', X'…': strings read differently; pg_dumpall writes none.
                if matches!(chars.peek(), Some('\'') | Some('&')) {
                    return Err(());
                }
                out.push(Token::Word(w.to_lowercase()));
            }
            '-' if chars.peek() != Some(&'-') => out.push(Token::Sym('-')),
            ',' | '=' | '(' | ')' => out.push(Token::Sym(c)),
            // `;` inside, `--`, `/*`, `$$` and anything else unexpected.
            _ => return Err(()),
        }
    }
    Ok(out)
}

enum Stmt {
    /// The role, and its powers from the attributes given (`None`: options dr does not
    /// accept in a CREATE ROLE).
    CreateRole(String, Option<BTreeSet<String>>),
    AlterRole(String, AlterKind),
    /// Granted roles (none for a privilege on an object), grantees.
    Grant(Vec<String>, Vec<String>),
    CreateTablespace(String),
    /// `true`: a setting pg_dumpall writes.
    Set(bool),
    /// A kind dr runs, but not in a form it can read.
    Unreadable,
    /// Anything else: not run.
    Other,
}

enum AlterKind {
    /// `[WITH] attributes` and their powers (`None`: an option dr does not accept).
    Attributes(Option<BTreeSet<String>>),
    /// `SET …`, `RESET …`, `IN DATABASE … SET …`.
    Settings,
    /// `RENAME TO …` and the like.
    Other,
}

fn classify(t: &[Token]) -> Stmt {
    let word = |i: usize, w: &str| t.get(i).is_some_and(|x| x.is(w));
    if word(0, "create") && (word(1, "role") || word(1, "user") || word(1, "group")) {
        return match t.get(2).and_then(Token::ident) {
            Some(name) => Stmt::CreateRole(name, attributes(&t[3..])),
            None => Stmt::Unreadable,
        };
    }
    if word(0, "alter") && (word(1, "role") || word(1, "user") || word(1, "group")) {
        let Some(name) = t.get(2).and_then(Token::ident) else {
            return Stmt::Unreadable;
        };
        let kind = if word(3, "set") || word(3, "reset") || word(3, "in") {
            AlterKind::Settings
        } else if word(3, "rename") {
            AlterKind::Other
        } else {
            AlterKind::Attributes(attributes(&t[3..]))
        };
        return Stmt::AlterRole(name, kind);
    }
    if word(0, "create") && word(1, "tablespace") {
        return match t.get(2).and_then(Token::ident) {
            Some(name) => Stmt::CreateTablespace(name),
            None => Stmt::Unreadable,
        };
    }
    if word(0, "grant") {
        return grant(&t[1..]);
    }
    if word(0, "set") {
        let known = t.get(1).and_then(Token::ident).is_some_and(|n| {
            SETTINGS_KEPT.contains(&n.as_str())
                // Never turned off: strings after it would be read differently.
                && (n != "standard_conforming_strings" || t.last().is_some_and(|v| v.is("on")))
        });
        return Stmt::Set(known);
    }
    Stmt::Other
}

/// `GRANT role[, role] TO grantee[, grantee] [WITH …] [GRANTED BY …]` (a role membership),
/// or a privilege `ON` a tablespace or parameter (no roles granted).
fn grant(t: &[Token]) -> Stmt {
    let Some(to) = t.iter().position(|x| x.is("to")) else {
        return Stmt::Unreadable;
    };
    let names = |part: &[Token]| -> Option<Vec<String>> {
        let mut out = Vec::new();
        for (i, x) in part.iter().enumerate() {
            if i % 2 == 1 {
                if x != &Token::Sym(',') {
                    return None;
                }
            } else {
                out.push(x.ident()?);
            }
        }
        (!out.is_empty() && part.len() % 2 == 1).then_some(out)
    };
    let rest = &t[to + 1..];
    let end = rest
        .iter()
        .position(|x| x.is("with") || x.is("granted"))
        .unwrap_or(rest.len());
    // `GRANT … ON TABLESPACE|PARAMETER … TO …`: a privilege, no membership.
    let on_object = t[..to].iter().any(|x| x.is("on"));
    let granted = if on_object {
        Some(Vec::new())
    } else {
        names(&t[..to])
    };
    match (granted, names(&rest[..end])) {
        (Some(granted), Some(grantees)) => Stmt::Grant(granted, grantees),
        _ => Stmt::Unreadable,
    }
}

/// The powers a role attribute list gives; `None` when it holds anything but the
/// attributes `pg_dumpall` writes (e.g. `IN ROLE`, `ADMIN`, which change memberships).
fn attributes(t: &[Token]) -> Option<BTreeSet<String>> {
    let mut powers = BTreeSet::new();
    let mut i = usize::from(t.first().is_some_and(|x| x.is("with")));
    while i < t.len() {
        let Token::Word(w) = &t[i] else {
            return None;
        };
        match w.as_str() {
            "superuser" | "replication" | "bypassrls" => {
                powers.insert(w.to_uppercase());
            }
            "nosuperuser" | "noreplication" | "nobypassrls" | "createdb" | "nocreatedb"
            | "createrole" | "nocreaterole" | "inherit" | "noinherit" | "login" | "nologin" => {}
            "connection" if t.get(i + 1).is_some_and(|x| x.is("limit")) => {
                // CONNECTION LIMIT n (n may be -1).
                i += 2;
                if t.get(i) == Some(&Token::Sym('-')) {
                    i += 1;
                }
                t.get(i).filter(|x| matches!(x, Token::Word(_)))?;
            }
            "valid" if t.get(i + 1).is_some_and(|x| x.is("until")) => {
                i += 2;
                t.get(i).filter(|x| matches!(x, Token::Str(_)))?;
            }
            "encrypted" | "password" => {
                if w == "encrypted" {
                    i += 1;
                    t.get(i).filter(|x| x.is("password"))?;
                }
                i += 1;
                match t.get(i)? {
                    Token::Str(_) => {
                        powers.insert("a password".to_string());
                    }
                    x if x.is("null") => {}
                    _ => return None,
                }
            }
            _ => return None,
        }
        i += 1;
    }
    Some(powers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(roles: &[&str], powerful: &[&str]) -> TargetGlobals {
        TargetGlobals {
            roles: roles.iter().map(|r| r.to_string()).collect(),
            powerful: powerful.iter().map(|r| r.to_string()).collect(),
            spaces: BTreeSet::new(),
        }
    }

    fn role(name: &str, gets: &[&str]) -> PowerfulRole {
        PowerfulRole {
            name: name.into(),
            gets: gets.iter().map(|g| g.to_string()).collect(),
        }
    }

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

    /// A pg_dumpall 15 script: the powers of new roles are named, quoted names read, and
    /// nothing about existing roles (their passwords included) is run.
    #[test]
    fn powerful_new_roles_are_named_and_existing_roles_untouched() {
        let script = "SET default_transaction_read_only = off;\nSET client_encoding = 'UTF8';\nSET standard_conforming_strings = on;\n\
CREATE ROLE evil;\nALTER ROLE evil WITH SUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS PASSWORD 'SCRAM-SHA-256$4096:abc$def:ghi';\n\
CREATE ROLE \"Repl \"\"Bot\";\nALTER ROLE \"Repl \"\"Bot\" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN REPLICATION NOBYPASSRLS;\n\
CREATE ROLE rls;\nALTER ROLE rls WITH NOSUPERUSER NOINHERIT LOGIN BYPASSRLS CONNECTION LIMIT -1 VALID UNTIL 'infinity' PASSWORD NULL;\n\
CREATE ROLE app;\nALTER ROLE app WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;\n\
CREATE ROLE postgres;\nALTER ROLE postgres WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS PASSWORD 'SCRAM-SHA-256$old';\n\
ALTER ROLE app SET search_path TO 'app';\n\
GRANT postgres TO app GRANTED BY postgres;\n\
GRANT app TO postgres GRANTED BY postgres;\n";
        let plan = plan_globals(script, &target(&["postgres"], &["postgres"]));
        assert_eq!(
            plan.powerful,
            vec![
                role("Repl \"Bot", &["REPLICATION"]),
                role("app", &["member of postgres"]),
                role("evil", &["SUPERUSER", "a password"]),
                role("rls", &["BYPASSRLS"]),
            ]
        );
        assert!(plan.skipped.is_empty(), "{:?}", plan.skipped);
        assert!(
            !plan.statements.iter().any(|s| s.contains("ROLE postgres")
                || s.contains("SCRAM-SHA-256$old")
                || s.ends_with("TO postgres GRANTED BY postgres;")),
            "{:#?}",
            plan.statements
        );
        assert!(plan
            .statements
            .contains(&"ALTER ROLE app SET search_path TO 'app';".to_string()));
        assert_eq!(plan.statements.len(), 3 + 8 + 2);
    }

    #[test]
    fn membership_in_server_file_roles_and_chains_is_a_power() {
        let script =
            "CREATE ROLE a;\nCREATE ROLE b;\nCREATE ROLE c;\nALTER ROLE c WITH BYPASSRLS;\n\
GRANT pg_read_server_files TO a WITH INHERIT TRUE GRANTED BY postgres;\n\
GRANT c TO b;\nGRANT pg_monitor TO b;\n";
        let plan = plan_globals(script, &target(&["postgres"], &["postgres"]));
        assert_eq!(
            plan.powerful,
            vec![
                role("a", &["member of pg_read_server_files"]),
                role("b", &["member of c"]),
                role("c", &["BYPASSRLS"]),
            ]
        );
    }

    /// A forged script cannot hide a second statement, a comment or an option that changes
    /// memberships inside a statement dr would run.
    #[test]
    fn statements_dr_cannot_read_safely_are_skipped() {
        let script = "CREATE ROLE x; ALTER ROLE postgres WITH PASSWORD 'pwned';\n\
CREATE ROLE y --\n SUPERUSER;\n\
CREATE ROLE z IN ROLE postgres;\n\
CREATE ROLE w;\nALTER ROLE w WITH LOGIN PASSWORD E'\\';\n\
ALTER ROLE w SET x = $$a$$;\n\
SET standard_conforming_strings = off;\n\
CREATE ROLE v SUPERUSER;\n";
        let plan = plan_globals(script, &target(&["postgres"], &["postgres"]));
        assert_eq!(
            plan.statements,
            vec!["CREATE ROLE w;", "CREATE ROLE v SUPERUSER;"]
        );
        assert_eq!(plan.powerful, vec![role("v", &["SUPERUSER"])]);
        assert_eq!(plan.skipped.len(), 6, "{:?}", plan.skipped);
        assert!(!plan.statements.iter().any(|s| s.contains("pwned")));
    }

    #[test]
    fn privileges_on_a_tablespace_go_to_new_roles_only_and_give_no_power() {
        let script =
            "CREATE ROLE app;\nCREATE TABLESPACE fast OWNER postgres LOCATION '/mnt/fast';\n\
GRANT ALL ON TABLESPACE fast TO app;\nGRANT ALL ON TABLESPACE fast TO postgres;\n";
        let plan = plan_globals(script, &target(&["postgres"], &["postgres"]));
        assert_eq!(plan.statements.len(), 3, "{:?}", plan.statements);
        assert!(plan.statements[2].ends_with("TO app;"));
        assert!(plan.powerful.is_empty() && plan.skipped.is_empty());
    }

    #[test]
    fn identifiers_are_read_quoted_or_plain() {
        let t = lex("GRANT \"Bob \"\"B\" TO Alice;").expect("lex");
        assert_eq!(t[1], Token::Quoted("Bob \"B".into()));
        assert_eq!(t[3], Token::Word("alice".into()));
        assert_eq!(first_words("GRANT a TO b GRANTED BY c;"), "GRANT a TO b");
        assert!(lex("CREATE ROLE a").is_err());
        assert!(lex("CREATE ROLE 'a;").is_err());
    }
}
