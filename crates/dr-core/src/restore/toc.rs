//! Selective restore: the `pg_restore -L` list of the selected tables and schemas.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use dr_pg::ChildProcess;

use super::plan::split_table;
use super::RestoreOptions;
use crate::{Error, Kind, Result};

/// pg_dump's identifier quoting (fmtId without the keyword list).
fn fmt_id(s: &str) -> String {
    let plain = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        s.to_string()
    } else {
        dr_pg::quote_ident(s)
    }
}

/// A `pg_restore -L` list holding the selected tables with their data, indexes, constraints,
/// defaults, triggers and owned sequences, plus everything in the selected schemas.
pub(super) async fn selective_list(
    pg_restore: &Path,
    archive: &Path,
    opts: &RestoreOptions,
) -> Result<String> {
    let run = |args: Vec<String>| async move {
        let mut child = ChildProcess::spawn(
            pg_restore,
            &args,
            None,
            std::process::Stdio::null(),
            std::process::Stdio::piped(),
        )?;
        let mut out = Vec::new();
        if let Some(mut stdout) = child.stdout() {
            use tokio::io::AsyncReadExt;
            stdout
                .read_to_end(&mut out)
                .await
                .map_err(|e| Error::new(Kind::Failed, format!("reading pg_restore's list: {e}")))?;
        }
        child.wait().await.map_err(|e| {
            Error::from(e).context("listing the archive's contents for the selective restore")
        })?;
        Ok::<_, Error>(String::from_utf8_lossy(&out).into_owned())
    };
    let list = run(vec!["--list".into(), archive.display().to_string()]).await?;
    let script = run(vec![
        "--schema-only".into(),
        "--file=-".into(),
        archive.display().to_string(),
    ])
    .await?;
    // "-- Name: X; Type: T; Schema: S; Owner: O" → following SQL.
    let mut sql_of: BTreeMap<(String, String, String), String> = BTreeMap::new();
    let mut key: Option<(String, String, String)> = None;
    for line in script.lines() {
        if let Some(rest) = line.strip_prefix("-- Name: ") {
            let mut name = "";
            let mut typ = "";
            let mut schema = "";
            for part in rest.split("; ") {
                if let Some(v) = part.strip_prefix("Type: ") {
                    typ = v;
                } else if let Some(v) = part.strip_prefix("Schema: ") {
                    schema = v;
                } else if name.is_empty() {
                    name = part;
                }
            }
            key = Some((typ.to_string(), schema.to_string(), name.to_string()));
            continue;
        }
        if let Some(k) = &key {
            let e = sql_of.entry(k.clone()).or_default();
            e.push_str(line);
            e.push('\n');
        }
    }
    let wanted: Vec<(String, String)> = opts
        .tables
        .iter()
        .map(|t| {
            let (s, n) = split_table(t);
            (s.to_string(), n.to_string())
        })
        .collect();
    let refs: Vec<String> = wanted
        .iter()
        .map(|(s, n)| format!("{}.{}", fmt_id(s), fmt_id(n)))
        .collect();
    // Sequences used by the selected tables' defaults.
    let mut sequences: BTreeSet<String> = BTreeSet::new();
    for ((typ, _, _), sql) in &sql_of {
        if typ == "DEFAULT"
            && refs
                .iter()
                .any(|r| sql.contains(&format!("{r} ")) || sql.contains(&format!("{r}\n")))
        {
            if let Some(i) = sql.find("nextval('") {
                let rest = &sql[i + 9..];
                if let Some(end) = rest.find('\'') {
                    sequences.insert(rest[..end].to_string());
                }
            }
        }
    }
    const DESCS: [&str; 14] = [
        "MATERIALIZED VIEW DATA",
        "SEQUENCE OWNED BY",
        "FK CONSTRAINT",
        "SEQUENCE SET",
        "TABLE DATA",
        "ROW SECURITY",
        "CONSTRAINT",
        "SEQUENCE",
        "TRIGGER",
        "DEFAULT",
        "POLICY",
        "INDEX",
        "TABLE",
        "SCHEMA",
    ];
    let mut out = String::new();
    for line in list.lines() {
        if line.starts_with(';') || line.trim().is_empty() {
            continue;
        }
        // "ID; OID OID DESC SCHEMA TAG OWNER"
        let Some((_, rest)) = line.split_once("; ") else {
            continue;
        };
        let mut it = rest.splitn(3, ' ');
        let (_, _, rest) = (it.next(), it.next(), it.next().unwrap_or(""));
        let Some(desc) = DESCS.iter().find(|d| rest.starts_with(&format!("{d} "))) else {
            // Other entry kinds (extensions, functions, types...) are kept for selected schemas only.
            if opts
                .schemas
                .iter()
                .any(|s| rest.contains(&format!(" {s} ")))
            {
                out.push_str(line);
                out.push('\n');
            }
            continue;
        };
        let after = &rest[desc.len() + 1..];
        let (schema, tag_owner) = after.split_once(' ').unwrap_or((after, ""));
        let tag = tag_owner
            .rsplit_once(' ')
            .map(|(t, _)| t)
            .unwrap_or(tag_owner);
        let keep = if opts.schemas.iter().any(|s| s == schema) {
            true
        } else {
            match *desc {
                "TABLE" | "TABLE DATA" => wanted.iter().any(|(s, n)| s == schema && n == tag),
                "CONSTRAINT" | "FK CONSTRAINT" | "TRIGGER" | "DEFAULT" | "POLICY" => wanted
                    .iter()
                    .any(|(s, n)| s == schema && tag.starts_with(&format!("{n} "))),
                "ROW SECURITY" => wanted.iter().any(|(s, n)| s == schema && n == tag),
                "INDEX" => sql_of
                    .get(&("INDEX".to_string(), schema.to_string(), tag.to_string()))
                    .is_some_and(|sql| {
                        refs.iter().any(|r| {
                            sql.contains(&format!(" ON {r} "))
                                || sql.contains(&format!(" ON ONLY {r} "))
                        })
                    }),
                "SEQUENCE" | "SEQUENCE SET" | "SEQUENCE OWNED BY" => {
                    sequences.contains(&format!("{}.{}", fmt_id(schema), fmt_id(tag)))
                }
                _ => false,
            }
        };
        if keep {
            out.push_str(line);
            out.push('\n');
        }
    }
    if out.is_empty() {
        return Err(Error::config(format!(
            "nothing in the backup matches {}\nhint: `dr show latest` lists the tables (names are SCHEMA.TABLE)",
            opts.tables.iter().chain(opts.schemas.iter()).cloned().collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_like_pg_dump() {
        assert_eq!(fmt_id("users"), "users");
        assert_eq!(fmt_id("Users"), "\"Users\"");
        assert_eq!(fmt_id("Sales ü"), "\"Sales ü\"");
    }
}
