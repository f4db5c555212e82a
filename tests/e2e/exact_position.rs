//! A dump's snapshot with its exact WAL position (`wal_level = logical`, a target with WAL):
//! `dr backup` records the consistent point of the temporary logical slot that exported its
//! snapshot, and a recovery that replays exactly the WAL before that point holds exactly the
//! rows the dump counted — under concurrent writes. This is what a drill proves (issue 20).

use std::process::Stdio;
use std::time::Duration;

use crate::pitr::{query_copy, setup_with, Capture};
use crate::support::*;

const TABLES: &str = "select (select count(*) from marks) || ',' || (select count(*) from ticks) || ',' || (select count(*) from \"Quoted Orders\")";

fn the_dumps_position_is_exact(pg: Postgres) {
    let _heavy = one_heavy_test_at_a_time();
    pg.psql("postgres", "ALTER SYSTEM SET wal_level = 'logical';");
    let s = setup_with(pg, Capture::Archive); // restarts the server: wal_level applies
    s.mark(1);
    let o = s.dr(&["backup", "--physical"]);
    assert_success(&o);

    // Small transactions, one after another, for as long as the dump runs.
    let mut writer =
        s.pg.psql_command("postgres")
            .args([
                "-c",
                "DO $$ BEGIN FOR i IN 1..200000 LOOP \
             INSERT INTO \"Quoted Orders\" (note) VALUES ('w' || i); \
             IF i % 3 = 0 THEN INSERT INTO ticks VALUES (i); END IF; \
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
    assert!(
        stderr(&o).contains("the dump's snapshot is the WAL position"),
        "{}",
        stderr(&o)
    );
    s.mark(2);
    s.switch_and_wait();

    let o = s.dr(&["show", "latest", "--json"]);
    assert_success(&o);
    let shown: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    let details = &shown["details"];
    let lsn = details["snapshot_lsn"]
        .as_str()
        .expect("snapshot_lsn")
        .to_string();
    let count = |name: &str| {
        details["tables"]
            .as_array()
            .expect("tables")
            .iter()
            .find(|t| t["name"] == name)
            .and_then(|t| t["rows"].as_i64())
            .unwrap_or(-1)
    };
    let dumped = format!(
        "{},{},{}",
        count("marks"),
        count("ticks"),
        count("Quoted Orders")
    );
    let text = stdout(&s.dr(&["show", "latest"]));
    assert!(text.contains(&format!("at WAL position {lsn}")), "{text}");

    // Everything before the position, nothing from it on.
    let dir = s.pg.socket_dir().join("at-snapshot");
    let o = s.dr(&[
        "restore",
        "--at",
        &lsn,
        "--then",
        "promote",
        "--to-dir",
        dir.to_str().expect("utf-8"),
    ]);
    assert_success(&o);
    let auto = dir.join("postgresql.auto.conf");
    let mut conf = std::fs::read_to_string(&auto).expect("auto.conf");
    conf.push_str("recovery_target_inclusive = 'off'\n");
    std::fs::write(&auto, conf).expect("auto.conf");
    crate::pitr::give_to_server(&dir);
    let recovered = query_copy(&s.pg, &dir, TABLES);
    assert_eq!(
        recovered, dumped,
        "the copy recovered to {lsn} (exclusive) differs from the dump's counts"
    );
    // The position matters: rows were written before the dump's snapshot and after it.
    assert_ne!(
        count("Quoted Orders"),
        0,
        "the writer wrote nothing before the dump"
    );
    let now =
        s.pg.psql("postgres", "select count(*) from \"Quoted Orders\"");
    assert!(
        now.parse::<i64>().expect("count") > count("Quoted Orders"),
        "the writer wrote nothing after the dump's snapshot ({now} rows now)"
    );
}

#[test]
fn postgres_15_the_dumps_position_is_exact() {
    the_dumps_position_is_exact(Postgres::start());
}

#[test]
fn postgres_17_the_dumps_position_is_exact() {
    let Some(bin) = pg_bin_dir(17) else {
        eprintln!("skipped: no PostgreSQL 17 binaries (ci/setup.sh installs them)");
        return;
    };
    the_dumps_position_is_exact(Postgres::start_with_bin_dir(&bin));
}

/// `wal_level = replica`: the dump is taken as always, without a position.
#[test]
fn without_logical_wal_the_dump_has_no_position() {
    let s = setup_with(Postgres::start(), Capture::Archive);
    let o = s.dr(&["backup"]);
    assert_success(&o);
    let o = s.dr(&["show", "latest", "--json"]);
    let shown: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert!(shown["details"]["snapshot_lsn"].is_null(), "{shown}");
}
