//! The archive's table of contents: which `pg_restore --list` entries a selective restore
//! keeps. Pure text work on what `pg_restore --list` and `pg_restore --schema-only --file=-`
//! print; running them is the caller's.
//!
//! ```
//! let list = ";\n215; 1259 16386 TABLE public orders postgres\n216; 1259 16390 TABLE public users postgres\n";
//! let selection = dr_pg::Selection {
//!     tables: vec![("public".into(), "orders".into())],
//!     ..Default::default()
//! };
//! assert_eq!(
//!     dr_pg::select_entries(list, "", &selection),
//!     "215; 1259 16386 TABLE public orders postgres\n"
//! );
//! ```

use std::collections::{BTreeMap, BTreeSet};

/// What a selective restore keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Whole schemas: every entry in them.
    pub schemas: Vec<String>,
    /// Single tables as (schema, name), unquoted: with their data, indexes, constraints,
    /// defaults, triggers, policies and the sequences their defaults use.
    pub tables: Vec<(String, String)>,
}

/// The entry kinds a selection is decided on, longest first where one is a prefix of another.
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

/// The lines of `list` (a `pg_restore --list` output) to pass to `pg_restore --use-list` to
/// restore `selection`. `schema_script` is the archive's `pg_restore --schema-only` script:
/// it tells which table an index is on and which sequence a default uses. Empty when nothing
/// matches.
pub fn select_entries(list: &str, schema_script: &str, selection: &Selection) -> String {
    let sql_of = definitions(schema_script);
    let wanted = &selection.tables;
    let refs: Vec<String> = wanted
        .iter()
        .map(|(s, n)| format!("{}.{}", fmt_id(s), fmt_id(n)))
        .collect();
    let sequences = default_sequences(&sql_of, &refs);
    let mut out = String::new();
    for line in list.lines() {
        let keep = match parse_entry(line) {
            None => false,
            // Other entry kinds (extensions, functions, types...) are kept for selected schemas only.
            Some(Entry::Other { rest }) => selection
                .schemas
                .iter()
                .any(|s| rest.contains(&format!(" {s} "))),
            Some(Entry::Known { desc, schema, tag }) => {
                if selection.schemas.iter().any(|s| s == schema) {
                    true
                } else {
                    match desc {
                        "TABLE" | "TABLE DATA" | "ROW SECURITY" => {
                            wanted.iter().any(|(s, n)| s == schema && n == tag)
                        }
                        "CONSTRAINT" | "FK CONSTRAINT" | "TRIGGER" | "DEFAULT" | "POLICY" => wanted
                            .iter()
                            .any(|(s, n)| s == schema && tag.starts_with(&format!("{n} "))),
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
                }
            }
        };
        if keep {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// One line of `pg_restore --list`: "ID; OID OID DESC SCHEMA TAG OWNER".
#[derive(Debug, PartialEq, Eq)]
enum Entry<'a> {
    /// A kind in [`DESCS`], split into its schema and tag.
    Known {
        desc: &'static str,
        schema: &'a str,
        tag: &'a str,
    },
    /// Any other kind: the line after the two OIDs.
    Other { rest: &'a str },
}

/// `None` for comments, blank lines and anything not shaped like an entry.
fn parse_entry(line: &str) -> Option<Entry<'_>> {
    if line.starts_with(';') || line.trim().is_empty() {
        return None;
    }
    let (_, rest) = line.split_once("; ")?;
    let mut it = rest.splitn(3, ' ');
    let (_, _, rest) = (it.next(), it.next(), it.next().unwrap_or(""));
    let Some(desc) = DESCS.iter().find(|d| rest.starts_with(&format!("{d} "))) else {
        return Some(Entry::Other { rest });
    };
    let after = &rest[desc.len() + 1..];
    let (schema, tag_owner) = after.split_once(' ').unwrap_or((after, ""));
    let tag = tag_owner
        .rsplit_once(' ')
        .map(|(t, _)| t)
        .unwrap_or(tag_owner);
    Some(Entry::Known { desc, schema, tag })
}

/// The SQL under each "-- Name: X; Type: T; Schema: S; Owner: O" header of a schema script,
/// keyed by (type, schema, name).
fn definitions(script: &str) -> BTreeMap<(String, String, String), String> {
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
    sql_of
}

/// Sequences (as quoted `schema.name`) that the defaults of the tables `refs` call
/// `nextval` on.
fn default_sequences(
    sql_of: &BTreeMap<(String, String, String), String>,
    refs: &[String],
) -> BTreeSet<String> {
    let mut sequences = BTreeSet::new();
    for ((typ, _, _), sql) in sql_of {
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
    sequences
}

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
        crate::quote_ident(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In the shape `pg_restore --list` prints it.
    const LIST: &str = ";
; Archive created at 2026-11-22 03:00:00 UTC
;     dbname: app
;
; Selected TOC Entries:
;
3; 2615 16385 SCHEMA - audit postgres
2; 3079 16400 EXTENSION - pgcrypto 
4100; 0 0 COMMENT - EXTENSION pgcrypto 
230; 1255 16500 FUNCTION audit log_change() postgres
215; 1259 16386 TABLE public orders app
214; 1259 16384 SEQUENCE public orders_id_seq app
3350; 0 0 SEQUENCE OWNED BY public orders_id_seq app
3200; 2604 16389 DEFAULT public orders id app
216; 1259 16390 TABLE public users app
217; 1259 16395 TABLE audit events postgres
218; 1259 16398 TABLE public Order Lines app
3340; 0 16386 TABLE DATA public orders app
3341; 0 16390 TABLE DATA public users app
3342; 0 16395 TABLE DATA audit events postgres
3343; 0 16398 TABLE DATA public Order Lines app
3360; 0 0 SEQUENCE SET public orders_id_seq app
3180; 2606 16392 CONSTRAINT public orders orders_pkey app
3181; 2606 16393 CONSTRAINT public users users_pkey app
3190; 1259 16394 INDEX public orders_created_idx app
3191; 1259 16396 INDEX public users_email_idx app
3210; 2620 16397 TRIGGER public orders orders_audit app
3220; 2606 16399 FK CONSTRAINT public orders orders_user_fk app
3230; 3256 16401 POLICY public orders own_orders app
3231; 0 0 ROW SECURITY public orders app
";

    /// In the shape `pg_restore --schema-only --file=-` prints it.
    const SCRIPT: &str = "--
-- PostgreSQL database dump
--

--
-- Name: orders; Type: TABLE; Schema: public; Owner: app
--

CREATE TABLE public.orders (
    id bigint NOT NULL,
    user_id bigint,
    created_at timestamptz
);

--
-- Name: orders_id_seq; Type: SEQUENCE; Schema: public; Owner: app
--

CREATE SEQUENCE public.orders_id_seq;

--
-- Name: orders id; Type: DEFAULT; Schema: public; Owner: app
--

ALTER TABLE ONLY public.orders ALTER COLUMN id SET DEFAULT nextval('public.orders_id_seq'::regclass);

--
-- Name: orders_created_idx; Type: INDEX; Schema: public; Owner: app
--

CREATE INDEX orders_created_idx ON public.orders USING btree (created_at);

--
-- Name: users_email_idx; Type: INDEX; Schema: public; Owner: app
--

CREATE UNIQUE INDEX users_email_idx ON public.users USING btree (email);
";

    fn tables(names: &[(&str, &str)]) -> Selection {
        Selection {
            schemas: Vec::new(),
            tables: names
                .iter()
                .map(|(s, n)| ((*s).to_string(), (*n).to_string()))
                .collect(),
        }
    }

    fn ids(selected: &str) -> Vec<&str> {
        selected
            .lines()
            .map(|l| l.split_once(';').map_or(l, |(id, _)| id))
            .collect()
    }

    #[test]
    fn a_table_comes_with_its_data_indexes_constraints_and_sequence() {
        let out = select_entries(LIST, SCRIPT, &tables(&[("public", "orders")]));
        assert_eq!(
            ids(&out),
            [
                "215", "214", "3350", "3200", "3340", "3360", "3180", "3190", "3210", "3220",
                "3230", "3231"
            ]
        );
        assert!(out.contains("3340; 0 16386 TABLE DATA public orders app\n"));
    }

    #[test]
    fn an_index_follows_its_table_not_its_name() {
        let out = select_entries(LIST, SCRIPT, &tables(&[("public", "users")]));
        assert_eq!(ids(&out), ["216", "3341", "3181", "3191"]);
    }

    #[test]
    fn a_schema_brings_every_entry_in_it() {
        let selection = Selection {
            schemas: vec!["audit".into()],
            tables: Vec::new(),
        };
        let out = select_entries(LIST, SCRIPT, &selection);
        // As it has always been: the SCHEMA entry itself ("SCHEMA - audit") is not kept,
        // its schema column being "-".
        assert_eq!(ids(&out), ["230", "217", "3342"]);
    }

    #[test]
    fn names_with_spaces_are_matched_as_listed() {
        // pg_restore lists tags unquoted; the owner is the last word.
        let out = select_entries(LIST, SCRIPT, &tables(&[("public", "Order Lines")]));
        assert_eq!(ids(&out), ["218", "3343"]);
    }

    #[test]
    fn nothing_selected_is_empty() {
        assert_eq!(
            select_entries(LIST, SCRIPT, &tables(&[("public", "nope")])),
            ""
        );
        assert_eq!(select_entries("", "", &Selection::default()), "");
    }

    #[test]
    fn list_lines_are_split_into_kind_schema_and_tag() {
        assert_eq!(
            parse_entry("3220; 2606 16399 FK CONSTRAINT public orders orders_user_fk app"),
            Some(Entry::Known {
                desc: "FK CONSTRAINT",
                schema: "public",
                tag: "orders orders_user_fk"
            })
        );
        assert_eq!(
            parse_entry("2; 3079 16400 EXTENSION - pgcrypto "),
            Some(Entry::Other {
                rest: "EXTENSION - pgcrypto "
            })
        );
        assert_eq!(parse_entry(";     dbname: app"), None);
        assert_eq!(parse_entry(""), None);
    }

    #[test]
    fn script_headers_key_the_sql_that_follows() {
        let defs = definitions(SCRIPT);
        let idx = &defs[&(
            "INDEX".to_string(),
            "public".to_string(),
            "orders_created_idx".to_string(),
        )];
        assert!(idx.contains("CREATE INDEX orders_created_idx ON public.orders USING"));
        assert!(!idx.contains("users_email_idx"));
        assert!(defs.contains_key(&(
            "DEFAULT".to_string(),
            "public".to_string(),
            "orders id".to_string()
        )));
    }

    #[test]
    fn identifiers_are_quoted_like_pg_dump() {
        assert_eq!(fmt_id("users"), "users");
        assert_eq!(fmt_id("Users"), "\"Users\"");
        assert_eq!(fmt_id("Sales ü"), "\"Sales ü\"");
    }
}
