//! Smoke tests of the end-to-end harness itself (tests/e2e/support): if these fail, every
//! end-to-end test would fail for reasons that have nothing to do with `dr`.

use std::time::Instant;

use crate::support::*;

#[test]
fn postgres_starts_and_loads_the_hard_cases() {
    let t = Instant::now();
    let pg = Postgres::start();
    eprintln!(
        "postgres {} started in {:?} on port {}",
        pg.major(),
        t.elapsed(),
        pg.port()
    );
    assert_eq!(pg.major(), 15);
    assert!(pg.url("app").ends_with(&format!(":{}/app", pg.port())));

    pg.create_db("app");
    let t = Instant::now();
    pg.load_hard_cases("app");
    eprintln!("hard cases loaded in {:?}", t.elapsed());

    let counts = pg.row_counts("app");
    assert!(!counts.is_empty());
    assert_eq!(counts["public.big"], 10_000);
    assert_eq!(counts["public.empty_table"], 0);
    assert_eq!(counts["public.zerocol"], 3);
    assert_eq!(
        counts["public.cities"], 2,
        "FROM ONLY: the children's rows are not counted"
    );
    assert_eq!(counts["public.capitals"], 2);
    assert_eq!(counts["Sales ü.Straße Orders ✓"], 3);
    assert_eq!(counts["public.texts"], 9);
    assert!(
        !counts.contains_key("public.measurements"),
        "partitioned parents hold no rows"
    );
    assert_eq!(
        counts["public.measurements_2025"] + counts["public.measurements_2026"],
        200
    );
    assert_eq!(pg.psql("app", "SELECT count(*) FROM public.cities"), "4");
    assert_eq!(
        pg.psql("app", "SELECT last_value FROM public.order_seq"),
        "4242"
    );
    assert_eq!(
        pg.psql(
            "app",
            "SELECT convert_from(lo_get(oid), 'UTF8') FROM pg_largeobject_metadata"
        ),
        "hello"
    );
    assert_eq!(
        pg.psql("app", r#"SELECT orders FROM "Sales ü".order_totals"#),
        "3"
    );

    // Digests cover the same tables, are stable, and see a one-byte change.
    let digests = pg.table_digests("app");
    assert_eq!(
        digests.keys().collect::<Vec<_>>(),
        counts.keys().collect::<Vec<_>>()
    );
    assert_eq!(digests, pg.table_digests("app"));
    pg.psql(
        "app",
        r"UPDATE public.texts SET body = E'\\.' || 'x' WHERE id = 4",
    );
    let changed = pg.table_digests("app");
    assert_ne!(digests["public.texts"], changed["public.texts"]);
    assert_eq!(digests["public.big"], changed["public.big"]);

    // Digests do not depend on the physical row order.
    pg.create_db("copy");
    pg.load_hard_cases("copy");
    pg.psql(
        "copy",
        "CLUSTER public.big USING big_pkey; UPDATE public.big SET id = id WHERE id < 100",
    );
    assert_eq!(pg.table_digests("copy"), digests);
}

#[test]
fn seaweedfs_round_trips_objects() {
    let t = Instant::now();
    let s3 = SeaweedFs::start();
    eprintln!(
        "seaweedfs started in {:?} at {}",
        t.elapsed(),
        s3.endpoint()
    );

    s3.create_bucket("harness");
    assert!(s3.object_keys("harness").is_empty());

    let binary: Vec<u8> = (0..=255u8).cycle().take(3 * 1024 * 1024 + 7).collect();
    s3.put_raw("harness", "app/2026/dump.zst.age", &binary);
    s3.put_raw("harness", "app/2026/manifest.json", b"{}");
    s3.put_raw("harness", "odd name/ü & <x>+y.txt", b"\0zero\0");
    assert_eq!(s3.fetch("harness", "app/2026/dump.zst.age"), binary);
    assert_eq!(s3.fetch("harness", "odd name/ü & <x>+y.txt"), b"\0zero\0");
    assert_eq!(
        s3.object_keys("harness"),
        vec![
            "app/2026/dump.zst.age",
            "app/2026/manifest.json",
            "odd name/ü & <x>+y.txt"
        ]
    );

    // Overwrite (what corruption tests do), then delete.
    s3.put_raw("harness", "app/2026/manifest.json", b"corrupt");
    assert_eq!(s3.fetch("harness", "app/2026/manifest.json"), b"corrupt");
    s3.delete("harness", "app/2026/manifest.json");
    assert_eq!(s3.try_fetch("harness", "app/2026/manifest.json"), None);
    assert_eq!(s3.object_keys("harness").len(), 2);
}

#[test]
fn workspace_makes_age_keys_and_runs_dr() {
    let ws = Workspace::new();
    let (identity, recipient) = ws.keygen();
    assert!(identity.is_file());
    assert!(recipient.starts_with("age1"), "{recipient}");
    let (_, second) = ws.keygen();
    assert_ne!(recipient, second);

    let config = ws.write("conf/dr.toml", "# empty\n");
    assert_eq!(
        std::fs::read_to_string(&config).expect("read config"),
        "# empty\n"
    );

    // Whatever `dr` does with these arguments today, it must run and exit.
    let out = ws.dr(&config, &["--help"]);
    assert!(
        out.status.code().is_some(),
        "dr was killed: {}",
        stderr(&out)
    );
}

#[test]
fn postgres_clusters_run_in_parallel() {
    let handles: Vec<_> = (0..3)
        .map(|_| {
            std::thread::spawn(|| {
                let pg = Postgres::start();
                pg.psql("postgres", "SELECT 1")
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().expect("thread"), "1");
    }
}

#[test]
fn other_postgres_majors_when_installed() {
    for major in [16, 18] {
        let Some(bin) = pg_bin_dir(major) else {
            eprintln!("skipping Postgres {major}: not installed (bash ci/setup.sh)");
            continue;
        };
        let pg = Postgres::start_with_bin_dir(&bin);
        assert_eq!(pg.major(), major);
        pg.create_db("app");
        pg.load_hard_cases("app");
        assert_eq!(pg.row_counts("app")["public.big"], 10_000);
        assert!(bin.join("pg_dump").is_file());
    }
}
