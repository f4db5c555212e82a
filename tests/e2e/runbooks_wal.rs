//! The runbooks of a target with WAL, verbatim (see [`crate::runbooks`]), on a server archiving
//! with `dr wal push`: `database-lost.md` recovers the last archived commit into a new server;
//! `bad-migration.md` brings one table back as of the moment before a migration;
//! `which-second.md` finds the bad statement's commit in the server log or with `pg_waldump`
//! and recovers to the record just before it. The table is a hard case (a quoted schema and
//! name, an enum, a foreign key, 4000 rows, half of them replayed from WAL); "exactly as of
//! the point" is its digest taken between a row committed just before the bad statement and
//! one committed just after.

use std::path::PathBuf;
use std::time::Duration;

use crate::pitr::{give_to_server, setup_with, Capture, Pitr};
use crate::runbooks::{run_script, script};
use crate::support::*;

/// The damaged table, as an operator writes it (psql quoting).
const TABLE: &str = r#""Billing Ω"."Invoice Lines""#;
/// Its key in [`Postgres::table_digests`].
const DIGEST_KEY: &str = "Billing Ω.Invoice Lines";

const BILLING_SQL: &str = r#"
CREATE SCHEMA "Billing Ω";
CREATE TYPE "Billing Ω".state AS ENUM ('open', 'paid', 'void');
CREATE TABLE "Billing Ω".customers (id int PRIMARY KEY, name text NOT NULL);
INSERT INTO "Billing Ω".customers SELECT g, 'customer ' || g FROM generate_series(1, 50) g;
CREATE TABLE "Billing Ω"."Invoice Lines" (
  id int PRIMARY KEY,
  customer_id int NOT NULL REFERENCES "Billing Ω".customers (id),
  state "Billing Ω".state NOT NULL,
  amount numeric(12, 2) NOT NULL,
  note text
);
CREATE INDEX ON "Billing Ω"."Invoice Lines" (customer_id);
INSERT INTO "Billing Ω"."Invoice Lines"
  SELECT g, g % 50 + 1, (ARRAY['open', 'paid', 'void'])[g % 3 + 1]::"Billing Ω".state,
         g * 1.25, E'line ' || g || E',\n"quoted" ü'
  FROM generate_series(1, 2000) g;
"#;

/// The rows written after the base backup: recovered from WAL only.
const AFTER_BASE_SQL: &str = r#"
INSERT INTO "Billing Ω"."Invoice Lines"
  SELECT g, g % 50 + 1, (ARRAY['open', 'paid', 'void'])[g % 3 + 1]::"Billing Ω".state,
         g * 1.25, E'line ' || g || E',\n"quoted" ü'
  FROM generate_series(2001, 4000) g;
"#;

/// A WAL target with the billing tables, half before its base backup and half after.
fn billing(pg: Postgres) -> Pitr {
    let s = setup_with(pg, Capture::Archive);
    s.pg.psql("postgres", BILLING_SQL);
    let o = s.dr(&["backup", "--physical"]);
    assert!(
        o.status.success(),
        "{}\n--- server log ---\n{}",
        describe(&o),
        tail(&s.pg.socket_dir().join("postgres.log"), 3000)
    );
    s.pg.psql("postgres", AFTER_BASE_SQL);
    s
}

fn insert_line(s: &Pitr, id: i32) {
    s.pg.psql(
        "postgres",
        &format!("INSERT INTO {TABLE} VALUES ({id}, 1, 'open', 1.00, 'line {id}');"),
    );
}

fn digest(pg: &Postgres, db: &str) -> String {
    pg.table_digests(db)
        .remove(DIGEST_KEY)
        .unwrap_or_else(|| panic!("no {DIGEST_KEY} in {db}"))
}

fn count(pg: &Postgres, db: &str) -> String {
    pg.psql(db, &format!("SELECT count(*) FROM {TABLE}"))
}

/// The environment every runbook here gets: dr's config and env file, the server's binaries
/// first on PATH (psql, pg_dump, pg_waldump of its version), and a temp dir the sandbox's
/// server user can enter.
fn env(s: &Pitr) -> Vec<(&'static str, String)> {
    let temp = s.home.join("tmp");
    std::fs::create_dir_all(&temp).expect("mkdir");
    give_to_server(&temp);
    let path = format!(
        "{}:{}:{}",
        s.pg.bin_dir().display(),
        dr_bin()
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        std::env::var("PATH").unwrap_or_default()
    );
    vec![
        ("DR_CONFIG", s.cfg.display().to_string()),
        ("DR_ENV_FILE", s.env_file.display().to_string()),
        ("TARGET", "app".into()),
        ("TMPDIR", temp.display().to_string()),
        ("PATH", path),
    ]
}

fn work(s: &Pitr, name: &str) -> PathBuf {
    let dir = s.ws.path().join(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    dir
}

fn run(s: &Pitr, runbook: &str, scenario: &str, vars: &[(&'static str, String)]) -> String {
    let mut all = env(s);
    all.extend(vars.iter().cloned());
    let out = run_script(
        &s.ws,
        &format!("{}-{scenario}.sh", runbook.trim_end_matches(".md")),
        &script(runbook, scenario),
        &all,
    );
    assert!(
        out.status.success(),
        "{runbook} {scenario}: {}\n--- server log ---\n{}",
        describe(&out),
        tail(&s.pg.socket_dir().join("postgres.log"), 3000)
    );
    let text = format!("{}{}", stdout(&out), stderr(&out));
    eprintln!("--- {runbook} {scenario} ---\n{text}");
    text
}

#[test]
fn database_lost_runbook_with_wal_recovers_the_last_archived_commit() {
    let _heavy = one_heavy_test_at_a_time();
    let s = billing(Postgres::start());
    s.pg.load_hard_cases("postgres");
    s.mark(1);
    s.switch_and_wait();
    let expected = s.pg.table_digests("postgres");
    let other = Postgres::start_with_bin_dir(s.pg.bin_dir());
    let out = run(
        &s,
        "database-lost.md",
        "wal",
        &[("PGURL", other.url("app"))],
    );
    assert!(out.contains("RPO"), "{out}");
    assert!(out.contains("as of latest"), "{out}");
    assert!(out.contains("last completed transaction"), "{out}");
    assert_eq!(other.table_digests("app"), expected);
    assert_eq!(count(&other, "app"), "4000");
}

#[test]
fn bad_migration_runbook_with_wal_brings_back_the_table_as_of_the_moment_before() {
    let _heavy = one_heavy_test_at_a_time();
    let s = billing(Postgres::start());
    insert_line(&s, 4500);
    let before = digest(&s.pg, "postgres");
    let at = s.pg.psql(
        "postgres",
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'utc', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'",
    );
    std::thread::sleep(Duration::from_millis(50));
    // The migration, then a row written after it (not in the side table, kept in production).
    s.pg.psql(
        "postgres",
        &format!("DELETE FROM {TABLE} WHERE state = 'void';"),
    );
    insert_line(&s, 4501);
    s.switch_and_wait();
    let out = run(
        &s,
        "bad-migration.md",
        "rows",
        &[
            ("AT", at.clone()),
            ("PGURL", s.pg.url("postgres")),
            ("SIDE_URL", s.pg.url("side")),
            ("TABLE", TABLE.into()),
            ("WORK", work(&s, "work").display().to_string()),
        ],
    );
    assert!(out.contains("skipped foreign key"), "{out}");
    // The point is named to the microsecond, as given (chrono prints no fraction for a whole
    // second).
    if !at.ends_with(".000000+00") {
        let named = format!("as of {}Z", at.trim_end_matches("+00"));
        assert!(out.contains(&named), "{named}: {out}");
    }
    // The side database is dropped by the runbook's last step: the rows are checked in
    // production, where every line came back and the one written after stays.
    assert_eq!(count(&s.pg, "postgres"), "4002");
    s.pg.psql("postgres", &format!("DELETE FROM {TABLE} WHERE id = 4501;"));
    assert_eq!(digest(&s.pg, "postgres"), before);
}

/// The three ways of `which-second.md` on one server, one after the other: rows deleted found
/// with pg_waldump, rows deleted found in the server log, a dropped table found with
/// pg_waldump. Each restores the table as of just before the statement, copies it back, and
/// production's table is then exactly as it was before the statement.
fn which_second(pg: Postgres) {
    let _heavy = one_heavy_test_at_a_time();
    let s = billing(pg);
    let vars = |scenario: &str| {
        vec![
            ("PGURL", s.pg.url("postgres")),
            ("SIDE_URL", s.pg.url(&format!("side_{scenario}"))),
            ("TABLE", TABLE.to_string()),
            ("WORK", work(&s, scenario).display().to_string()),
            ("SEGMENTS", "8".to_string()),
            (
                "SERVER_LOG",
                s.pg.socket_dir().join("postgres.log").display().to_string(),
            ),
        ]
    };

    // Rows deleted, found in the WAL: the line committed just before is back, the one after
    // is not in the side table.
    insert_line(&s, 4500);
    let before = digest(&s.pg, "postgres");
    s.pg.psql(
        "postgres",
        &format!("DELETE FROM {TABLE} WHERE id % 7 = 0;"),
    );
    insert_line(&s, 4501);
    let out = run(&s, "which-second.md", "rows", &vars("rows"));
    assert!(out.contains("recover to LSN"), "{out}");
    assert!(out.contains("recovery stopping"), "{out}");
    assert_eq!(count(&s.pg, "postgres"), "4002");
    s.pg.psql("postgres", &format!("DELETE FROM {TABLE} WHERE id = 4501;"));
    assert_eq!(digest(&s.pg, "postgres"), before);

    // Rows deleted, found in the server log (statements logged from now on).
    s.pg.psql(
        "postgres",
        "ALTER SYSTEM SET log_statement = 'mod'; SELECT pg_reload_conf();",
    );
    std::thread::sleep(Duration::from_millis(200));
    insert_line(&s, 4600);
    let before = digest(&s.pg, "postgres");
    std::thread::sleep(Duration::from_millis(50));
    s.pg.psql(
        "postgres",
        &format!("DELETE FROM {TABLE} WHERE customer_id = 7 OR id % 5 = 0;"),
    );
    insert_line(&s, 4601);
    let out = run(&s, "which-second.md", "log", &vars("log"));
    assert!(out.contains("the statement started at"), "{out}");
    s.pg.psql("postgres", &format!("DELETE FROM {TABLE} WHERE id = 4601;"));
    assert_eq!(digest(&s.pg, "postgres"), before);

    // A dropped table, found in the WAL by the files its commit removed.
    insert_line(&s, 4700);
    let before = digest(&s.pg, "postgres");
    s.pg.psql("postgres", &format!("DROP TABLE {TABLE};"));
    s.pg.psql(
        "postgres",
        "INSERT INTO \"Billing Ω\".customers VALUES (51, 'after the drop');",
    );
    let out = run(&s, "which-second.md", "dropped", &vars("dropped"));
    assert!(out.contains("rels: ") || out.contains("base/"), "{out}");
    assert_eq!(digest(&s.pg, "postgres"), before);
    assert_eq!(
        s.pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'side%'"
        ),
        "0",
        "the side databases outlived the runbook"
    );
}

#[test]
fn postgres_15_which_second_runbook_recovers_to_just_before_the_statement() {
    which_second(Postgres::start());
}

#[test]
fn postgres_17_which_second_runbook_recovers_to_just_before_the_statement() {
    let Some(bin) = pg_bin_dir(17) else {
        eprintln!("skipped: no PostgreSQL 17 binaries (ci/setup.sh installs them)");
        return;
    };
    which_second(Postgres::start_with_bin_dir(&bin));
}
