//! End-to-end `dr restore --at TIME --to URL` for a target with WAL: a hard-case database
//! (quoted schema, an enum, partitions, foreign keys, a large object) recovered in a
//! throwaway sandbox to a second between two marker commits and streamed into a new
//! database, whole and one table; an existing database refused without `--clean`, replaced
//! with it; a point outside the window and an unreachable destination fail with nothing
//! created; the sandbox never outlives the run. A target without WAL says how much later the
//! time is than the backup it picks.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::pitr::{give_to_server, setup_with, Capture, Pitr};
use crate::support::*;

/// What is left in the temp dir: nothing once a run is over (the sandbox is removed).
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn db_exists(pg: &Postgres, db: &str) -> bool {
    pg.psql(
        "postgres",
        &format!("select count(*) from pg_database where datname = '{db}'"),
    ) == "1"
}

/// What the digests do not cover: the large object, a sequence's value, the enum, the
/// foreign keys and partitions, as one line.
fn extras(pg: &Postgres, db: &str) -> String {
    pg.psql(
        db,
        "select concat_ws(' | ', \
           (select string_agg(convert_from(lo_get(oid), 'UTF8'), ',') from pg_largeobject_metadata), \
           (select last_value from public.order_seq), \
           (select string_agg(enumlabel, ',' order by enumsortorder) from pg_enum e join pg_type t on t.oid = e.enumtypid where t.typname = 'mood'), \
           (select string_agg(conname, ',' order by conname) from pg_constraint where contype = 'f'), \
           (select count(*) from pg_inherits))",
    )
}

struct Run {
    s: Pitr,
    temp: PathBuf,
    between: String,
    expected: std::collections::BTreeMap<String, String>,
    extras: String,
}

impl Run {
    fn restore(&self, extra: &[&str]) -> std::process::Output {
        let mut args = vec![
            "restore",
            "--at",
            &self.between,
            "--temp-dir",
            self.temp.to_str().expect("utf-8"),
        ];
        args.extend_from_slice(extra);
        self.s.dr(&args)
    }
}

/// The hard cases in the target's database (half before the base backup, half replayed from
/// WAL), marks 1 and 2 before the point, mark 3 and a delete after it.
fn prepare(pg: Postgres) -> Run {
    let s = setup_with(pg, Capture::Archive);
    s.pg.load_hard_cases("postgres");
    s.mark(1);
    let o = s.dr(&["backup", "--physical"]);
    assert!(
        o.status.success(),
        "{}\n--- server log ---\n{}",
        describe(&o),
        tail(&s.pg.socket_dir().join("postgres.log"), 3000)
    );
    s.pg.psql("postgres", STREAMING_HARD_CASES_SQL);
    s.mark(2);
    let expected = s.pg.table_digests("postgres");
    let extras = extras(&s.pg, "postgres");
    std::thread::sleep(Duration::from_millis(1500));
    let between = s.pg.psql("postgres", "select clock_timestamp()::text;");
    std::thread::sleep(Duration::from_millis(1500));
    s.mark(3);
    s.pg.psql("postgres", "delete from public.big where id > 9000;");
    s.switch_and_wait();
    s.switch_and_wait();
    // The sandbox's directory is made here: a place the server's user can reach.
    let temp = s.home.join("tmp");
    std::fs::create_dir_all(&temp).expect("mkdir");
    give_to_server(&temp);
    Run {
        s,
        temp,
        between,
        expected,
        extras,
    }
}

fn recovers_a_second_into_a_new_database(pg: Postgres) {
    let _heavy = one_heavy_test_at_a_time();
    let r = prepare(pg);
    let pg = &r.s.pg;

    // The plan: the sandbox's disk and where; nothing created.
    let o = r.restore(&["--to", &pg.url("pit"), "--dry-run"]);
    assert_success(&o);
    let plan = stdout(&o);
    assert!(
        plan.contains("sandbox") && plan.contains(r.temp.to_str().expect("utf-8")),
        "{plan}"
    );
    assert!(
        plan.contains("base backup") && plan.contains("window"),
        "{plan}"
    );
    assert!(!db_exists(pg, "pit"), "--dry-run created the database");
    assert_eq!(leftovers(&r.temp), Vec::<String>::new());

    // The whole database as of the point: marks 1 and 2, every hard case, nothing later.
    let o = r.restore(&["--to", &pg.url("pit"), "--jobs", "2"]);
    assert_success(&o);
    let err = stderr(&o);
    assert!(err.contains("restored `app` as of"), "{err}");
    // The rows were copied by dr's workers, beside a pg_dump of the rest of the data.
    assert!(
        err.contains("section=rows-2") && err.contains("section=data-rest"),
        "{err}"
    );
    assert_eq!(
        pg.psql(
            "pit",
            "select string_agg(n::text, ',' order by n) from marks"
        ),
        "1,2"
    );
    assert_eq!(pg.table_digests("pit"), r.expected);
    assert_eq!(extras(pg, "pit"), r.extras);
    assert_eq!(pg.psql("pit", "select count(*) from public.big"), "10000");
    // Written frozen into the new database: every page all-visible and all-frozen, nothing
    // left for a VACUUM to rewrite.
    pg.psql("pit", "create extension pg_visibility;");
    assert_eq!(
        pg.psql(
            "pit",
            "select all_frozen > 0 and all_visible = all_frozen from pg_visibility_map_summary('public.big')"
        ),
        "t"
    );
    pg.psql("pit", "drop extension pg_visibility;");
    assert_eq!(
        leftovers(&r.temp),
        Vec::<String>::new(),
        "the sandbox outlived the run"
    );

    // One table: its rows as of the point, the others' definitions empty.
    let o = r.restore(&["--to", &pg.url("pit_big"), "--table", "public.big"]);
    assert_success(&o);
    assert_eq!(
        pg.psql("pit_big", "select count(*) from public.big"),
        "10000"
    );
    assert_eq!(pg.psql("pit_big", "select count(*) from marks"), "0");
    assert_eq!(leftovers(&r.temp), Vec::<String>::new());

    // An existing database is refused before any sandbox is made; --clean replaces it.
    pg.psql("pit", "insert into marks (n) values (99);");
    let o = r.restore(&["--to", &pg.url("pit"), "--yes"]);
    assert_exit_code(&o, 7);
    assert!(stderr(&o).contains("already holds"), "{}", stderr(&o));
    assert_eq!(leftovers(&r.temp), Vec::<String>::new());
    let o = r.restore(&["--to", &pg.url("pit"), "--clean", "--yes"]);
    assert_success(&o);
    assert_eq!(
        pg.psql(
            "pit",
            "select string_agg(n::text, ',' order by n) from marks"
        ),
        "1,2"
    );
    assert_eq!(pg.table_digests("pit"), r.expected);

    // --force over a database whose `public.big` has another shape: the table's COPY is
    // refused and named, the other tables are restored, the exit is pg_restore's (1), and the
    // database's own row stays.
    pg.create_db("busy");
    pg.psql(
        "busy",
        "create table public.big (other text); insert into public.big values ('mine');",
    );
    let o = r.restore(&["--to", &pg.url("busy"), "--force", "--yes"]);
    assert_exit_code(&o, 1);
    let err = stderr(&o);
    assert!(
        err.contains("public.big") && err.contains("does not exist"),
        "{err}"
    );
    assert_eq!(
        pg.psql("busy", "select string_agg(other, ',') from public.big"),
        "mine"
    );
    assert_eq!(
        pg.psql(
            "busy",
            "select string_agg(n::text, ',' order by n) from marks"
        ),
        "1,2"
    );

    // Outside the window: it says the window; nothing created.
    let o = r.s.dr(&[
        "restore",
        "--at",
        "2001-01-01T00:00:00Z",
        "--to",
        &pg.url("early"),
        "--temp-dir",
        r.temp.to_str().expect("utf-8"),
    ]);
    assert!(!o.status.success(), "{}", describe(&o));
    assert!(stderr(&o).contains("recoverable from"), "{}", stderr(&o));
    assert!(!db_exists(pg, "early"));

    // A destination that does not answer: nothing created, no sandbox made.
    let gone = format!("postgres://postgres@127.0.0.1:{}/gone", free_port());
    let o = r.restore(&["--to", &gone]);
    assert!(!o.status.success(), "{}", describe(&o));
    assert!(stderr(&o).contains("127.0.0.1"), "{}", stderr(&o));
    assert_eq!(leftovers(&r.temp), Vec::<String>::new());
}

#[test]
fn postgres_15_recovers_a_second_into_a_new_database() {
    recovers_a_second_into_a_new_database(Postgres::start());
}

#[test]
fn postgres_17_recovers_a_second_into_a_new_database() {
    let Some(bin) = pg_bin_dir(17) else {
        eprintln!("skipped: no PostgreSQL 17 binaries (ci/setup.sh installs them)");
        return;
    };
    recovers_a_second_into_a_new_database(Postgres::start_with_bin_dir(&bin));
}

/// A target without WAL: `--at` picks the newest logical backup before the time, and says
/// how much later the time is (what is missing).
#[test]
fn at_without_wal_says_how_much_later_the_time_is_than_the_backup() {
    let ws = Workspace::new();
    let pg = Postgres::start();
    pg.create_db("app");
    pg.psql("app", "create table t (n int); insert into t values (1);");
    let (identity, recipient) = ws.keygen();
    let cfg = ws.write(
        "dr.toml",
        &dir_config_text(
            &ws.path().join("repo"),
            &recipient,
            Some(&identity),
            &pg.url("app"),
            "",
        ),
    );
    assert_success(&ws.dr(&cfg, &["backup"]));
    std::thread::sleep(Duration::from_millis(2100));
    pg.psql("app", "insert into t values (2);");
    let at = pg.psql("app", "select clock_timestamp()::text;");

    let o = ws.dr(
        &cfg,
        &["restore", "--at", &at, "--to", &pg.url("back"), "--dry-run"],
    );
    assert_success(&o);
    let plan = stdout(&o);
    assert!(
        plan.contains("missing") && plan.contains("later than this backup"),
        "{plan}"
    );
    let o = ws.dr(&cfg, &["restore", "--at", &at, "--to", &pg.url("back")]);
    assert_success(&o);
    let err = stderr(&o);
    assert!(err.contains("s later than this backup"), "{err}");
    assert_eq!(pg.psql("back", "select count(*) from t"), "1");

    // An LSN needs WAL: refused, saying so.
    let o = ws.dr(
        &cfg,
        &["restore", "--at", "0/3000028", "--to", &pg.url("lsn")],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("WAL archive"), "{}", stderr(&o));
}
