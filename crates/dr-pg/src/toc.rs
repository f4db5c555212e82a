//! The archive's table of contents: which `pg_restore --list` entries a selective restore
//! keeps. Pure text work on what `pg_restore --list` and `pg_restore --schema-only --file=-`
//! print; running them is the caller's.
//!
//! A selective restore keeps the whole pre-data section (schemas, extensions, types,
//! domains, functions, sequences and every table's definition), so that the selected tables
//! find what they need in a new database; then the data of the selected tables only, and the
//! post-data entries (indexes, constraints, triggers, policies) that belong to them. A
//! foreign key to a table that is not selected is left out and named in
//! [`Selected::skipped_foreign_keys`].
//!
//! ```
//! let list = ";\n215; 1259 16386 TABLE public orders postgres\n3340; 0 16386 TABLE DATA public orders postgres\n3341; 0 16390 TABLE DATA public users postgres\n";
//! let selection = dr_pg::Selection {
//!     tables: vec![dr_pg::parse_table_name("public.orders").unwrap()],
//!     ..Default::default()
//! };
//! assert_eq!(
//!     dr_pg::select_entries(list, "", &selection).list,
//!     "215; 1259 16386 TABLE public orders postgres\n3340; 0 16386 TABLE DATA public orders postgres\n"
//! );
//! ```

use std::collections::{BTreeMap, BTreeSet};

/// What a selective restore keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Whole schemas (unquoted): the data and post-data of every table in them.
    pub schemas: Vec<String>,
    /// Single tables as (schema, name), unquoted: with their data, indexes, constraints,
    /// triggers, policies and the values of the sequences they use.
    pub tables: Vec<(String, String)>,
}

impl Selection {
    /// Is the table `schema.name` selected, by itself or by its schema?
    pub fn has_table(&self, schema: &str, name: &str) -> bool {
        self.schemas.iter().any(|s| s == schema)
            || self.tables.iter().any(|(s, n)| s == schema && n == name)
    }
}

/// What [`select_entries`] decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selected {
    /// The lines to pass to `pg_restore --use-list`.
    pub list: String,
    /// Foreign keys of selected tables left out because the table they reference is not
    /// restored: "schema.table constraint → schema.referenced" (names unquoted).
    pub skipped_foreign_keys: Vec<String>,
}

/// A table as the operator names it: `schema.table` as `dr show` prints it, or with psql's
/// quoting (`"Sales Data"."Order Items"`, `audit.events`, `"MixedCase"`); without a schema,
/// `public`. Unquoted parts are taken as written (no case folding), as `dr show` prints them.
pub fn parse_table_name(name: &str) -> Result<(String, String), String> {
    let mut parts = split_identifiers(name)?;
    match parts.len() {
        1 => Ok(("public".to_string(), parts.remove(0))),
        2 => {
            let n = parts.remove(1);
            Ok((parts.remove(0), n))
        }
        _ => Err(format!(
            "`{name}` is not SCHEMA.TABLE (quote a name holding a dot: \"my.table\")"
        )),
    }
}

/// A schema as the operator names it: as `dr show` prints it, or quoted (`"Sales Data"`).
pub fn parse_schema_name(name: &str) -> Result<String, String> {
    let mut parts = split_identifiers(name)?;
    if parts.len() == 1 {
        Ok(parts.remove(0))
    } else {
        Err(format!(
            "`{name}` is not a schema name (quote a name holding a dot: \"my.schema\")"
        ))
    }
}

/// The dot-separated parts of a possibly quoted, possibly qualified name.
fn split_identifiers(name: &str) -> Result<Vec<String>, String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = name.trim().chars().peekable();
    loop {
        match chars.next() {
            None => {
                parts.push(std::mem::take(&mut cur));
                break;
            }
            Some('"') if cur.is_empty() => {
                loop {
                    match chars.next() {
                        None => return Err(format!("`{name}`: a quoted name is not closed")),
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            cur.push('"');
                        }
                        Some('"') => break,
                        Some(c) => cur.push(c),
                    }
                }
                match chars.next() {
                    None => {
                        parts.push(std::mem::take(&mut cur));
                        break;
                    }
                    Some('.') => parts.push(std::mem::take(&mut cur)),
                    Some(c) => {
                        return Err(format!("`{name}`: `{c}` after a quoted name"));
                    }
                }
            }
            Some('.') => parts.push(std::mem::take(&mut cur)),
            Some(c) => cur.push(c),
        }
    }
    if parts.iter().any(String::is_empty) {
        return Err(format!("`{name}`: an empty name"));
    }
    Ok(parts)
}

/// Entry kinds that are not pre-data, longest first where one is a prefix of another.
/// pg_dump (`pg_dump.c`) puts these in SECTION_DATA or SECTION_POST_DATA; COMMENT,
/// SECURITY LABEL and ACL (SECTION_NONE) follow their object.
const NOT_PRE_DATA: [&str; 30] = [
    "PUBLICATION TABLES IN SCHEMA",
    "MATERIALIZED VIEW DATA",
    "SUBSCRIPTION TABLE",
    "PUBLICATION TABLE",
    "CHECK CONSTRAINT",
    "STATISTICS DATA",
    "SECURITY LABEL",
    "FK CONSTRAINT",
    "EVENT TRIGGER",
    "BLOB METADATA",
    "LARGE OBJECTS",
    "SEQUENCE SET",
    "INDEX ATTACH",
    "ROW SECURITY",
    "SUBSCRIPTION",
    "DEFAULT ACL",
    "PUBLICATION",
    "TABLE DATA",
    "CONSTRAINT",
    "STATISTICS",
    "BLOB DATA",
    "COMMENT",
    "TRIGGER",
    "POLICY",
    "BLOBS",
    "INDEX",
    "BLOB",
    "RULE",
    "ACL",
    "LARGE OBJECT",
];

/// The entries of `list` (a `pg_restore --list` output) to pass to `pg_restore --use-list`
/// to restore `selection`. `schema_script` is the archive's `pg_restore --schema-only`
/// script: it tells which table an index is on, which table a foreign key references and
/// which sequences a table uses.
pub fn select_entries(list: &str, schema_script: &str, selection: &Selection) -> Selected {
    let sql_of = definitions(schema_script);
    let refs: Vec<String> = selection
        .tables
        .iter()
        .map(|(s, n)| format!("{}.{}", fmt_id(s), fmt_id(n)))
        .collect();
    let d = Decider {
        sequences: table_sequences(&sql_of, &refs),
        indexes: kept_indexes(&sql_of, &refs, selection),
        sql_of,
        selection,
    };
    let mut out = Selected::default();
    for line in list.lines() {
        let Some((desc, after)) = parse_entry(line) else {
            continue;
        };
        let keep = match desc {
            None => true,
            Some("FK CONSTRAINT") => match d.foreign_key(after) {
                Fk::Keep => true,
                Fk::Drop => false,
                Fk::Skip(what) => {
                    out.skipped_foreign_keys.push(what);
                    false
                }
            },
            Some(desc) => d.keep(desc, after),
        };
        if keep {
            out.list.push_str(line);
            out.list.push('\n');
        }
    }
    out
}

type Defs = BTreeMap<(String, String, String), String>;

struct Decider<'a> {
    sql_of: Defs,
    /// Quoted `schema.name` of the sequences the selected tables use.
    sequences: BTreeSet<String>,
    /// (schema, name) of the indexes on selected tables.
    indexes: BTreeSet<(String, String)>,
    selection: &'a Selection,
}

enum Fk {
    Keep,
    Drop,
    Skip(String),
}

impl Decider<'_> {
    fn sql(&self, typ: &str, schema: &str, name: &str) -> Option<&str> {
        self.sql_of
            .get(&(typ.to_string(), schema.to_string(), name.to_string()))
            .map(String::as_str)
    }

    fn schema_selected(&self, s: &str) -> bool {
        self.selection.schemas.iter().any(|x| x == s)
    }

    /// The selected table a "table name" tag (constraint, trigger, rule, policy) starts
    /// with, and the rest of the tag.
    fn table_of<'t>(&'t self, s: &str, tag: &'t str) -> Option<(&'t str, &'t str)> {
        self.selection
            .tables
            .iter()
            .filter(|(ts, _)| ts == s)
            .find_map(|(_, n)| {
                tag.strip_prefix(n.as_str())
                    .and_then(|r| r.strip_prefix(' '))
                    .map(|rest| (n.as_str(), rest))
            })
            .or_else(|| {
                if self.schema_selected(s) {
                    tag.split_once(' ')
                } else {
                    None
                }
            })
    }

    fn index_kept(&self, s: &str, n: &str) -> bool {
        self.indexes.contains(&(s.to_string(), n.to_string()))
    }

    fn keep(&self, desc: &str, after: &str) -> bool {
        let sel = self.selection;
        if matches!(desc, "COMMENT" | "SECURITY LABEL" | "ACL") {
            return self.follows_kept_object(after);
        }
        candidates(after).any(|(s, tag)| match desc {
            "TABLE DATA" | "ROW SECURITY" | "MATERIALIZED VIEW DATA" | "STATISTICS DATA" => {
                sel.has_table(s, tag)
            }
            "CONSTRAINT" | "TRIGGER" | "RULE" | "POLICY" => self.table_of(s, tag).is_some(),
            // A NOT VALID check of a table, or of a domain (restored with the pre-data).
            "CHECK CONSTRAINT" => {
                self.table_of(s, tag).is_some()
                    || self
                        .sql("CHECK CONSTRAINT", s, tag)
                        .is_some_and(|sql| sql.contains("ALTER DOMAIN "))
            }
            "INDEX" => self.index_kept(s, tag),
            "SEQUENCE SET" => {
                self.schema_selected(s)
                    || self
                        .sequences
                        .contains(&format!("{}.{}", fmt_id(s), fmt_id(tag)))
            }
            "INDEX ATTACH" => self.sql("INDEX ATTACH", s, tag).is_some_and(|sql| {
                let kept = |r: &str| {
                    two_parts(r.trim().trim_end_matches(';'))
                        .is_some_and(|(s, n)| self.index_kept(&s, &n))
                };
                sql.split_once("ALTER INDEX ")
                    .and_then(|(_, r)| r.split_once(" ATTACH PARTITION "))
                    .is_some_and(|(parent, child)| {
                        kept(parent) && kept(child.lines().next().unwrap_or(""))
                    })
            }),
            "STATISTICS" => {
                self.schema_selected(s)
                    || self.sql("STATISTICS", s, tag).is_some_and(|sql| {
                        sql.split_once(" FROM ").is_some_and(|(_, r)| {
                            two_parts(r.lines().next().unwrap_or("").trim_end_matches(';'))
                                .is_some_and(|(s, n)| sel.has_table(&s, &n))
                        })
                    })
            }
            // Large objects, publications, subscriptions, event triggers, default
            // privileges: not part of a table.
            _ => false,
        })
    }

    /// A comment, security label or grant, tagged "KIND name" (or "KIND name ON table"):
    /// kept with a pre-data object, or with a post-data one that is kept.
    fn follows_kept_object(&self, after: &str) -> bool {
        const ON_TABLE: [&str; 4] = ["CONSTRAINT ", "TRIGGER ", "POLICY ", "RULE "];
        const NEVER: [&str; 5] = [
            "EVENT TRIGGER ",
            "PUBLICATION ",
            "SUBSCRIPTION ",
            "LARGE OBJECT ",
            "STATISTICS ",
        ];
        // Only the readings whose tag starts with a kind that is not pre-data decide.
        let mut post_data = candidates(after)
            .filter(|(_, tag)| {
                ON_TABLE
                    .iter()
                    .chain(&NEVER)
                    .chain(&["INDEX "])
                    .any(|k| tag.starts_with(k))
            })
            .peekable();
        if post_data.peek().is_none() {
            return true;
        }
        post_data.any(|(s, tag)| {
            if let Some(index) = tag.strip_prefix("INDEX ") {
                return self.index_kept(s, index);
            }
            ON_TABLE.iter().any(|kind| {
                tag.strip_prefix(kind)
                    .and_then(|rest| rest.rsplit_once(" ON "))
                    .is_some_and(|(_, table)| self.selection.has_table(s, table))
            })
        })
    }

    /// A foreign key of a selected table is kept when the table it references is restored.
    fn foreign_key(&self, after: &str) -> Fk {
        for (s, tag) in candidates(after) {
            let Some((table, constraint)) = self.table_of(s, tag) else {
                continue;
            };
            if !self.selection.has_table(s, table) {
                continue;
            }
            return match self.sql("FK CONSTRAINT", s, tag).and_then(references) {
                Some((rs, rn)) if !self.selection.has_table(&rs, &rn) => {
                    Fk::Skip(format!("{constraint} (on {s}.{table}, to {rs}.{rn})"))
                }
                _ => Fk::Keep,
            };
        }
        Fk::Drop
    }
}

/// A `schema.name` as pg_dump writes it.
fn two_parts(r: &str) -> Option<(String, String)> {
    let parts = split_identifiers(r).ok()?;
    match <[String; 2]>::try_from(parts) {
        Ok([s, n]) => Some((s, n)),
        Err(_) => None,
    }
}

/// The table a foreign key's definition references: `REFERENCES schema.table(`.
fn references(sql: &str) -> Option<(String, String)> {
    let (_, rest) = sql.split_once(" REFERENCES ")?;
    let rest = rest.strip_prefix("ONLY ").unwrap_or(rest);
    // The name ends at the column list's "(" outside quotes.
    let mut quoted = false;
    let end = rest.char_indices().find_map(|(i, c)| {
        if c == '"' {
            quoted = !quoted;
        }
        (!quoted && c == '(').then_some(i)
    })?;
    two_parts(&rest[..end])
}

/// The (schema, tag) readings of an entry's "SCHEMA TAG OWNER": `pg_restore --list` prints
/// names unquoted, so a schema holding a space can be split more than one way. The owner is
/// the last word.
fn candidates(after: &str) -> impl Iterator<Item = (&str, &str)> {
    after.match_indices(' ').map(move |(i, _)| {
        let rest = &after[i + 1..];
        let tag = rest.rsplit_once(' ').map_or(rest, |(t, _)| t);
        (&after[..i], tag)
    })
}

/// One line of `pg_restore --list`, "ID; OID OID DESC SCHEMA TAG OWNER": its kind when not
/// pre-data (`None`: pre-data) and what follows the kind. `None` for comments, blank lines
/// and anything not shaped like an entry.
fn parse_entry(line: &str) -> Option<(Option<&'static str>, &str)> {
    if line.starts_with(';') || line.trim().is_empty() {
        return None;
    }
    let (_, rest) = line.split_once("; ")?;
    let mut it = rest.splitn(3, ' ');
    let (_, _, rest) = (it.next(), it.next(), it.next().unwrap_or(""));
    match NOT_PRE_DATA
        .iter()
        .find(|d| rest.starts_with(&format!("{d} ")))
    {
        Some(d) => Some((Some(d), &rest[d.len() + 1..])),
        None => Some((None, rest)),
    }
}

/// The SQL under each "-- Name: X; Type: T; Schema: S; Owner: O" header of a schema script,
/// keyed by (type, schema, name).
fn definitions(script: &str) -> Defs {
    let mut sql_of = Defs::new();
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

/// Does `sql` name the table `r` (quoted `schema.name`) as a whole word?
fn names_table(sql: &str, r: &str) -> bool {
    [" ", "\n", ".", "(", ";"]
        .iter()
        .any(|end| sql.contains(&format!("{r}{end}")))
}

/// Sequences (as quoted `schema.name`) the tables `refs` use: called by their defaults
/// (`nextval`), owned by them, or their identity columns'.
fn table_sequences(sql_of: &Defs, refs: &[String]) -> BTreeSet<String> {
    let mut sequences = BTreeSet::new();
    for ((typ, schema, name), sql) in sql_of {
        match typ.as_str() {
            "DEFAULT" if refs.iter().any(|r| names_table(sql, r)) => {
                if let Some(i) = sql.find("nextval('") {
                    let rest = &sql[i + 9..];
                    if let Some(end) = rest.find('\'') {
                        sequences.insert(rest[..end].to_string());
                    }
                }
            }
            "SEQUENCE" | "SEQUENCE OWNED BY"
                if refs.iter().any(|r| {
                    sql.contains(&format!("ALTER TABLE {r} ALTER COLUMN"))
                        || sql.contains(&format!("ALTER TABLE ONLY {r} ALTER COLUMN"))
                        || sql.contains(&format!(" OWNED BY {r}."))
                }) =>
            {
                sequences.insert(format!("{}.{}", fmt_id(schema), fmt_id(name)));
            }
            _ => {}
        }
    }
    sequences
}

/// Indexes (schema, name) on the tables `refs` or in the selected schemas.
fn kept_indexes(
    sql_of: &Defs,
    refs: &[String],
    selection: &Selection,
) -> BTreeSet<(String, String)> {
    sql_of
        .iter()
        .filter(|((typ, schema, _), sql)| {
            typ == "INDEX"
                && (selection.schemas.iter().any(|s| s == schema)
                    || refs.iter().any(|r| {
                        sql.contains(&format!(" ON {r} "))
                            || sql.contains(&format!(" ON ONLY {r} "))
                    }))
        })
        .map(|((_, schema, name), _)| (schema.clone(), name.clone()))
        .collect()
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
4; 2615 16386 SCHEMA - Sales Data app
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
219; 1259 16410 TABLE Sales Data Order Items app
4101; 0 0 COMMENT public INDEX users_email_idx app
4102; 0 0 COMMENT public TABLE users app
3340; 0 16386 TABLE DATA public orders app
3341; 0 16390 TABLE DATA public users app
3342; 0 16395 TABLE DATA audit events postgres
3343; 0 16398 TABLE DATA public Order Lines app
3344; 0 16410 TABLE DATA Sales Data Order Items app
3345; 0 0 BLOBS - BLOBS 
3360; 0 0 SEQUENCE SET public orders_id_seq app
3180; 2606 16392 CONSTRAINT public orders orders_pkey app
3181; 2606 16393 CONSTRAINT public users users_pkey app
3182; 2606 16411 CONSTRAINT Sales Data Order Items Order Items_pkey app
3190; 1259 16394 INDEX public orders_created_idx app
3191; 1259 16396 INDEX public users_email_idx app
3210; 2620 16397 TRIGGER public orders orders_audit app
3220; 2606 16399 FK CONSTRAINT public orders orders_user_fk app
3221; 2606 16412 FK CONSTRAINT audit events events_order_fk postgres
3230; 3256 16401 POLICY public orders own_orders app
3231; 0 0 ROW SECURITY public orders app
";

    /// The pre-data entries of [`LIST`]: kept by every selection.
    const PRE: [&str; 15] = [
        "3", "4", "2", "4100", "230", "215", "214", "3350", "3200", "216", "217", "218", "219",
        "4102", "0",
    ];

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

--
-- Name: orders orders_user_fk; Type: FK CONSTRAINT; Schema: public; Owner: app
--

ALTER TABLE ONLY public.orders
    ADD CONSTRAINT orders_user_fk FOREIGN KEY (user_id) REFERENCES public.users(id);

--
-- Name: events events_order_fk; Type: FK CONSTRAINT; Schema: audit; Owner: postgres
--

ALTER TABLE ONLY audit.events
    ADD CONSTRAINT events_order_fk FOREIGN KEY (order_id) REFERENCES public.orders(id);
";

    fn tables(names: &[&str]) -> Selection {
        Selection {
            schemas: Vec::new(),
            tables: names
                .iter()
                .map(|n| parse_table_name(n).expect("a table name"))
                .collect(),
        }
    }

    /// The ids of the kept entries that are not pre-data.
    fn ids(selected: &Selected) -> Vec<&str> {
        let all: Vec<&str> = selected
            .list
            .lines()
            .map(|l| l.split_once(';').map_or(l, |(id, _)| id))
            .collect();
        for pre in &PRE[..PRE.len() - 1] {
            assert!(all.contains(pre), "pre-data entry {pre} left out");
        }
        all.into_iter().filter(|id| !PRE.contains(id)).collect()
    }

    #[test]
    fn tables_come_with_all_pre_data_their_data_indexes_constraints_and_sequence() {
        let out = select_entries(LIST, SCRIPT, &tables(&["public.orders", "public.users"]));
        assert_eq!(
            ids(&out),
            [
                "4101", "3340", "3341", "3360", "3180", "3181", "3190", "3191", "3210", "3220",
                "3230", "3231"
            ]
        );
        assert!(out
            .list
            .contains("3340; 0 16386 TABLE DATA public orders app\n"));
        assert!(out.skipped_foreign_keys.is_empty());
    }

    #[test]
    fn a_foreign_key_to_a_table_not_selected_is_skipped_and_named() {
        let out = select_entries(LIST, SCRIPT, &tables(&["public.orders"]));
        assert_eq!(
            ids(&out),
            ["3340", "3360", "3180", "3190", "3210", "3230", "3231"]
        );
        assert_eq!(
            out.skipped_foreign_keys,
            ["orders_user_fk (on public.orders, to public.users)"]
        );
    }

    #[test]
    fn an_index_and_its_comment_follow_its_table_not_its_name() {
        let out = select_entries(LIST, SCRIPT, &tables(&["users"]));
        assert_eq!(ids(&out), ["4101", "3341", "3181", "3191"]);
        let out = select_entries(LIST, SCRIPT, &tables(&["orders"]));
        assert!(!out.list.contains("4101;"));
    }

    #[test]
    fn a_schema_brings_its_tables_data_and_post_data() {
        let selection = Selection {
            schemas: vec![parse_schema_name("audit").expect("a schema")],
            tables: Vec::new(),
        };
        let out = select_entries(LIST, SCRIPT, &selection);
        // The SCHEMA entry itself ("SCHEMA - audit") is pre-data: kept.
        assert_eq!(ids(&out), ["3342"]);
        assert_eq!(
            out.skipped_foreign_keys,
            ["events_order_fk (on audit.events, to public.orders)"]
        );
    }

    #[test]
    fn a_table_in_another_schema() {
        let out = select_entries(LIST, SCRIPT, &tables(&["audit.events", "public.orders"]));
        assert_eq!(
            ids(&out),
            ["3340", "3342", "3360", "3180", "3190", "3210", "3221", "3230", "3231"]
        );
    }

    #[test]
    fn quoted_names_and_names_with_spaces_are_matched_as_listed() {
        // pg_restore lists names unquoted; the owner is the last word.
        let out = select_entries(LIST, SCRIPT, &tables(&["\"Sales Data\".\"Order Items\""]));
        assert_eq!(ids(&out), ["3344", "3182"]);
        let out = select_entries(LIST, SCRIPT, &tables(&["Sales Data.Order Items"]));
        assert_eq!(ids(&out), ["3344", "3182"]);
        let out = select_entries(LIST, SCRIPT, &tables(&["public.\"Order Lines\""]));
        assert_eq!(ids(&out), ["3343"]);
    }

    #[test]
    fn a_domain_check_is_kept_with_the_pre_data_a_table_check_with_its_table() {
        let list = "3400; 2606 16500 CHECK CONSTRAINT public positive positive_check app\n\
                    3401; 2606 16501 CHECK CONSTRAINT public users users_age_check app\n";
        let script = "--
-- Name: positive positive_check; Type: CHECK CONSTRAINT; Schema: public; Owner: app
--

ALTER DOMAIN public.positive
    ADD CONSTRAINT positive_check CHECK ((VALUE > 0)) NOT VALID;
";
        let out = select_entries(list, script, &tables(&["public.orders"]));
        assert_eq!(
            out.list,
            "3400; 2606 16500 CHECK CONSTRAINT public positive positive_check app\n"
        );
        let out = select_entries(list, script, &tables(&["public.users"]));
        assert_eq!(out.list.lines().count(), 2);
    }

    #[test]
    fn an_unknown_table_keeps_only_pre_data() {
        let out = select_entries(LIST, SCRIPT, &tables(&["public.nope"]));
        assert!(ids(&out).is_empty());
        assert_eq!(select_entries("", "", &Selection::default()).list, "");
    }

    #[test]
    fn table_names_are_read_as_dr_show_prints_them_or_psql_quotes_them() {
        let t = |s: &str| parse_table_name(s);
        let pair = |s: &str, n: &str| Ok((s.to_string(), n.to_string()));
        assert_eq!(t("users"), pair("public", "users"));
        assert_eq!(t("app.users"), pair("app", "users"));
        assert_eq!(t("audit.events"), pair("audit", "events"));
        assert_eq!(t("\"MixedCase\""), pair("public", "MixedCase"));
        assert_eq!(t("MixedCase"), pair("public", "MixedCase"));
        assert_eq!(
            t("\"Sales Data\".\"Order Items\""),
            pair("Sales Data", "Order Items")
        );
        assert_eq!(
            t("Sales Data.Order Items"),
            pair("Sales Data", "Order Items")
        );
        assert_eq!(t("public.\"a.b\""), pair("public", "a.b"));
        assert_eq!(t("\"say \"\"hi\"\"\""), pair("public", "say \"hi\""));
        assert!(t("a.b.c").is_err());
        assert!(t("\"open").is_err());
        assert!(t("public.").is_err());
        assert!(t("\"a\"b").is_err());
        assert_eq!(parse_schema_name("\"Sales Data\""), Ok("Sales Data".into()));
        assert!(parse_schema_name("a.b").is_err());
    }

    #[test]
    fn list_lines_are_split_into_kind_and_the_rest() {
        assert_eq!(
            parse_entry("3220; 2606 16399 FK CONSTRAINT public orders orders_user_fk app"),
            Some((Some("FK CONSTRAINT"), "public orders orders_user_fk app"))
        );
        assert_eq!(
            parse_entry("2; 3079 16400 EXTENSION - pgcrypto "),
            Some((None, "EXTENSION - pgcrypto "))
        );
        assert_eq!(parse_entry(";     dbname: app"), None);
        assert_eq!(parse_entry(""), None);
        let c: Vec<_> = candidates("Sales Data Order Items app").collect();
        assert_eq!(
            c,
            [
                ("Sales", "Data Order Items"),
                ("Sales Data", "Order Items"),
                ("Sales Data Order", "Items"),
                ("Sales Data Order Items", "app")
            ]
        );
    }

    #[test]
    fn foreign_keys_name_the_table_they_reference() {
        assert_eq!(
            references(
                "ADD CONSTRAINT f FOREIGN KEY (a) REFERENCES \"Sales Data\".\"Order (x)\"(id);"
            ),
            Some(("Sales Data".into(), "Order (x)".into()))
        );
        assert_eq!(references("CHECK (a > 0)"), None);
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
