//! Drills (`dr verify --pitr`): a base backup and its WAL recovered in a throwaway sandbox and
//! proven — exact counts at a dump's snapshot position under concurrent writes, and the drills
//! that must fail: a base backup with a flipped byte, a WAL segment missing from the middle of
//! the window. Each result is recorded beside the base backup.

use std::process::{Output, Stdio};
use std::time::Duration;

use crate::pitr::{setup_with, Capture, Pitr};
use crate::support::*;

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_str(&stdout(o)).unwrap_or_else(|e| panic!("{e}\n{}", describe(o)))
}

fn drill_at_the_dumps_position(pg: Postgres) {
    let _heavy = one_heavy_test_at_a_time();
    pg.psql("postgres", "ALTER SYSTEM SET wal_level = 'logical';");
    let s = setup_with(pg, Capture::Archive);
    s.pg.psql(
        "postgres",
        "create type mood as enum ('ok', 'sad');\n\
         create schema \"Sales Dept\";\n\
         create table \"Sales Dept\".\"Orders\" (id int primary key, m mood not null);\n\
         create table \"Sales Dept\".lines (id serial primary key, order_id int not null references \"Sales Dept\".\"Orders\"(id));\n\
         insert into \"Sales Dept\".\"Orders\" select g, 'ok' from generate_series(1, 500) g;\n\
         insert into \"Sales Dept\".lines (order_id) select 1 + g % 500 from generate_series(1, 3000) g;",
    );
    s.mark(1);
    assert_success(&s.dr(&["backup", "--physical"]));

    // Small transactions for as long as the dump runs: its snapshot lies among them.
    let mut writer =
        s.pg.psql_command("postgres")
            .args([
                "-c",
                "DO $$ BEGIN FOR i IN 1..200000 LOOP \
                 INSERT INTO \"Quoted Orders\" (note) VALUES ('w' || i); \
                 INSERT INTO \"Sales Dept\".lines (order_id) VALUES (1 + i % 500); \
                 COMMIT; END LOOP; END $$;",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("writer");
    std::thread::sleep(Duration::from_millis(500));
    let o = s.dr(&["backup"]);
    std::thread::sleep(Duration::from_millis(300));
    let _ = writer.kill();
    let _ = writer.wait();
    assert_success(&o);
    let dump = json(&s.dr(&["show", "latest", "--json"]));
    let dump_id = dump["id"].as_str().expect("id").to_string();
    assert!(dump["details"]["snapshot_lsn"].is_string(), "{dump}");
    s.mark(2);
    s.switch_and_wait();

    let o = s.dr(&["verify", "--pitr", "--json"]);
    assert_success(&o);
    let report = json(&o);
    let record = &report["record"];
    assert_eq!(record["result"], "passed", "{report}");
    let drill = &record["drill"];
    assert_eq!(drill["counts_of"], dump_id.as_str(), "{report}");
    assert!(
        drill["point"]
            .as_str()
            .is_some_and(|p| p.starts_with("just before LSN")),
        "{report}"
    );
    let checks = report["checks"].as_array().expect("checks");
    let names: Vec<&str> = checks.iter().filter_map(|c| c["check"].as_str()).collect();
    for wanted in [
        "WAL continuous from the base backup",
        "pg_verifybackup against backup_manifest",
        "recovery reached the point",
        "rows of Sales Dept.Orders",
        "rows of Sales Dept.lines",
        "rows of public.Quoted Orders",
    ] {
        assert!(names.contains(&wanted), "no check {wanted}: {names:?}");
    }
    // The writer wrote on both sides of the snapshot: the counts prove the exact point.
    let lines = checks
        .iter()
        .find(|c| c["check"] == "rows of Sales Dept.lines")
        .expect("lines");
    let at_dump: i64 = lines["actual"]
        .as_str()
        .expect("actual")
        .parse()
        .expect("n");
    let now: i64 =
        s.pg.psql("postgres", "select count(*) from \"Sales Dept\".lines")
            .parse()
            .expect("count");
    assert!(at_dump > 3000 && now > at_dump, "{at_dump} of {now}");

    // Recorded beside the base backup: `dr list` and `dr status` show it.
    let text = stdout(&s.dr(&["list"]));
    assert!(text.contains("passed"), "{text}");
}

#[test]
fn postgres_15_a_drill_reproduces_the_dumps_counts_exactly() {
    drill_at_the_dumps_position(Postgres::start());
}

#[test]
fn postgres_17_a_drill_reproduces_the_dumps_counts_exactly() {
    let Some(bin) = pg_bin_dir(17) else {
        eprintln!("skipped: no PostgreSQL 17 binaries (ci/setup.sh installs them)");
        return;
    };
    drill_at_the_dumps_position(Postgres::start_with_bin_dir(&bin));
}

/// The files of the WAL archive (data objects and records) of `segment`.
fn wal_files(s: &Pitr, segment: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![s.home.join("repo/app/wal")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if e.file_name().to_string_lossy().starts_with(segment) {
                out.push(p);
            }
        }
    }
    out
}

/// `wal_level = replica`: a random point, no counts (said), and the drills that must fail.
#[test]
fn drills_prove_the_window_and_fail_on_damage_naming_it() {
    let s = setup_with(Postgres::start(), Capture::Archive);
    assert_success(&s.dr(&["backup", "--physical"]));
    let base = json(&s.dr(&["show", "latest", "--json"]));
    let base_id = base["id"].as_str().expect("id").to_string();
    let mut segments = Vec::new();
    for n in 1..=4 {
        s.mark(n);
        segments.push(s.pg.psql("postgres", "select pg_walfile_name(pg_current_wal_lsn());"));
        s.switch_and_wait();
    }

    let o = s.dr(&["verify", "--pitr"]);
    assert_success(&o);
    let text = stdout(&o);
    assert!(
        text.contains(&format!("verified backup {base_id}")),
        "{text}"
    );
    assert!(text.contains("a random point"), "{text}");
    assert!(text.contains("not proven     exact row counts"), "{text}");
    assert!(text.contains("proven window"), "{text}");
    let text = stdout(&s.dr(&["status"]));
    assert!(
        text.contains("drill ")
            && text.contains(&format!("of base {base_id}"))
            && text.contains("proven "),
        "{text}"
    );
    // The recovery of a restore into a database is estimated from the drill.
    let o = s.dr(&[
        "restore",
        "--at",
        "latest",
        "--to",
        &s.pg.url("drilled_copy"),
        "--dry-run",
    ]);
    assert_success(&o);
    assert!(
        stdout(&o).contains(&format!("the drill of base {base_id}")),
        "{}",
        describe(&o)
    );

    // A flipped byte in the stored base backup: damaged, recorded, exit 4.
    let tar = s.home.join(format!("repo/app/{base_id}/base.tar.zst.age"));
    let good = std::fs::read(&tar).expect("base tar");
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x01;
    std::fs::write(&tar, &bad).expect("flip");
    let o = s.dr(&["verify", "--pitr"]);
    assert_exit_code(&o, 4);
    assert!(stderr(&o).contains("DAMAGED"), "{}", describe(&o));
    std::fs::write(&tar, &good).expect("unflip");

    // A segment gone from the middle of the window: the drill fails naming it, exit 5.
    let gone = &segments[1];
    let files = wal_files(&s, gone);
    assert!(!files.is_empty(), "no archived files of {gone}");
    for f in &files {
        std::fs::remove_file(f).expect("rm");
    }
    let o = s.dr(&["verify", "--pitr"]);
    assert_exit_code(&o, 5);
    assert!(stderr(&o).contains(gone.as_str()), "{}", describe(&o));
    let o = s.dr(&["list", "--json"]);
    assert!(stdout(&o).contains("failed"), "{}", describe(&o));
    let o = s.dr(&["status"]);
    let text = stdout(&o);
    assert!(
        text.contains("FAILED") && text.contains(gone.as_str()),
        "{}",
        describe(&o)
    );
}

/// `verify.prove_within`: each `dr verify` without an id proves the retained backup whose
/// last proof is oldest (a base backup by a drill), so after as many runs as backups every
/// one is proven; `dr list` marks the unproven meanwhile, `dr status` counts them.
#[test]
fn every_retained_backup_is_proven_in_turn() {
    let s = setup_with(Postgres::start(), Capture::Archive);
    let mut cfg = std::fs::read_to_string(&s.cfg).expect("config");
    cfg.push_str("[verify]\nsandbox = \"local\"\nprove_within = \"30d\"\n");
    std::fs::write(&s.cfg, cfg).expect("config");
    assert_success(&s.dr(&["backup"]));
    assert_success(&s.dr(&["backup", "--physical"]));
    s.mark(1);
    s.switch_and_wait();
    assert_success(&s.dr(&["backup"]));
    s.switch_and_wait();
    let unproven = |s: &Pitr| {
        let list = json(&s.dr(&["list", "--json"]));
        list.as_array()
            .expect("rows")
            .iter()
            .filter(|r| r["proven"] == false)
            .count()
    };
    assert_eq!(unproven(&s), 3);
    assert!(stdout(&s.dr(&["list"])).contains("unproven"));
    let mut proved = Vec::new();
    for left in [2, 1, 0] {
        let o = s.dr(&["verify", "--json"]);
        assert_success(&o);
        proved.push(
            json(&o)["record"]["backup_id"]
                .as_str()
                .expect("id")
                .to_string(),
        );
        assert_eq!(unproven(&s), left, "after proving {proved:?}");
    }
    proved.sort();
    proved.dedup();
    assert_eq!(proved.len(), 3, "{proved:?}");
    let o = s.dr(&["status"]);
    assert!(
        stdout(&o).contains("proven 3 of 3 retained backups within 30d"),
        "{}",
        describe(&o)
    );
}
