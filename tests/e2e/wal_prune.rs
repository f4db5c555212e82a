//! End-to-end: `dr prune` of a WAL archive (docs/design/PITR.md §7). A real PostgreSQL 15
//! (and 17 when installed) archives with `dr wal push`; two `dr backup --physical`,
//! retention keeping one: prune deletes exactly the WAL before the second base's start
//! segment, records and data objects, and keeps the rest. `--dry-run` prints the range and
//! deletes nothing.

use std::time::Duration;

use crate::support::*;
use crate::wal::{directory_archive, recorded_segments, Archiving};

/// Write a little and switch to the next segment; the name of the segment switched from,
/// once archived.
fn switch(a: &Archiving) -> String {
    a.pg.psql(
        "postgres",
        "CREATE TABLE IF NOT EXISTS filler (n int); INSERT INTO filler SELECT generate_series(1, 1000);",
    );
    let name =
        a.pg.psql("postgres", "select pg_walfile_name(pg_switch_wal())");
    a.wait_archived(&name);
    name
}

/// `dr backup --physical` against the archiving server; its manifest's start segment.
fn base_backup(a: &Archiving) -> String {
    let before = manifests(&a.home.join("repo"));
    let o = a.ws.dr_env(
        &a.cfg,
        &["backup", "--physical"],
        &[("DR_ARCHIVE_WAIT_SECS", "120")],
    );
    assert_success(&o);
    let new: Vec<_> = manifests(&a.home.join("repo"))
        .into_iter()
        .filter(|m| !before.contains(m))
        .collect();
    assert_eq!(new.len(), 1, "{new:?}");
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&new[0]).expect("read")).expect("json");
    m["physical"]["start_segment"]
        .as_str()
        .expect("start_segment")
        .to_string()
}

/// Data objects of timeline 1's segments: `{SEG}.{nonce}.zst.age`.
fn data_segments(a: &Archiving) -> Vec<String> {
    let mut names: Vec<String> = a
        .repo
        .keys()
        .into_iter()
        .filter_map(|k| {
            let name = k.strip_prefix("app/wal/0000000100000000/")?;
            name.ends_with(".zst.age").then(|| name[..24].to_string())
        })
        .collect();
    names.sort();
    names
}

#[test]
fn prune_keeps_exactly_the_wal_of_the_retained_base_pg15() {
    keeps_exactly_the_wal_of_the_retained_base(Postgres::start());
}

#[test]
fn prune_keeps_exactly_the_wal_of_the_retained_base_pg17() {
    let Some(bin) = pg_bin_dir(17) else {
        eprintln!("skipped: no PostgreSQL 17 (bash ci/setup.sh)");
        return;
    };
    keeps_exactly_the_wal_of_the_retained_base(Postgres::start_with_bin_dir(&bin));
}

fn keeps_exactly_the_wal_of_the_retained_base(pg: Postgres) {
    let a = directory_archive(pg);
    // The config as the server's archive_command reads it, with retention and the binaries.
    let text = std::fs::read_to_string(&a.cfg).expect("config");
    let text = text.replace(
        "[targets.wal]",
        &format!(
            "pg_bin_dir = \"{}\"\n[targets.wal]",
            a.pg.bin_dir().display()
        ),
    );
    std::fs::write(&a.cfg, format!("{text}[retention]\ndaily = 1\n")).expect("config");

    for _ in 0..3 {
        switch(&a);
    }
    let first = base_backup(&a);
    for _ in 0..3 {
        switch(&a);
    }
    // A second apart at least: backup ids are to the second.
    std::thread::sleep(Duration::from_millis(1100));
    let second = base_backup(&a);
    switch(&a);
    let recorded = recorded_segments(&a.repo);
    assert!(
        recorded[0] < first && first < second,
        "{recorded:?} {first} {second}"
    );

    let dry = a.ws.dr(&a.cfg, &["prune", "--dry-run"]);
    assert_success(&dry);
    let expected_first = &recorded[0];
    let before_second = recorded
        .iter()
        .rfind(|n| n.as_str() < second.as_str())
        .expect("a segment before the second base");
    let count = recorded
        .iter()
        .filter(|n| n.as_str() < second.as_str())
        .count();
    let line = format!("wal app tl1 {expected_first}..{before_second} {count} segments");
    assert!(stdout(&dry).contains(&line), "{line}\n{}", stdout(&dry));
    assert_eq!(
        recorded_segments(&a.repo),
        recorded,
        "a dry run deletes nothing"
    );

    let o = a.ws.dr(&a.cfg, &["prune", "--json"]);
    assert_success(&o);
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    let wal = &report[0]["wal"];
    // The segments, and the first base's backup history file (`….backup`).
    assert_eq!(wal["ranges"][0]["segments"], count, "{report}");
    assert_eq!(wal["files"], count + 1, "{report}");
    let kept: Vec<String> = recorded
        .iter()
        .filter(|n| n.as_str() >= second.as_str())
        .cloned()
        .collect();
    assert_eq!(recorded_segments(&a.repo), kept, "records");
    assert_eq!(data_segments(&a), kept, "data objects");
    // The history of the archive is intact: status finds no gap from the base on.
    let status = a.ws.dr(&a.cfg, &["status", "--json"]);
    assert!(
        !stdout(&status).contains("is missing"),
        "{}",
        stdout(&status)
    );
}
