//! `dr_pg::copy` against a real server (a local PostgreSQL 15 sandbox), as the rows of a
//! point-in-time restore are carried (`restore::rows`): block ranges that together hold every
//! row once, columns dropped and generated, text that breaks line-based tools, sessions whose
//! database sets other date, interval and float formats on each side, a snapshot that does
//! not see later writes, and a destination that refuses one table while the rows are still
//! counted.

use std::time::Duration;

use dr_pg::copy::{copy_piece, reader, writer, Freeze, Piece};
use dr_pg::ConnInfo;
use dr_sandbox::{SandboxKind, SandboxSpec};

const SOURCE_SQL: &str = r#"
create table public."Wide ✓" (id int primary key, gone text, body text, f float8, d date,
  i interval, ts timestamptz, twice int generated always as (id * 2) stored)
  with (fillfactor = 10);
alter table public."Wide ✓" drop column gone;
insert into public."Wide ✓" (id, body, f, d, i, ts)
  select g, case g % 4 when 0 then E'two\nlines' when 1 then E'tab\there \\N' when 2 then E'\\.' else null end,
         g / 3.0, date '2026-01-01' + g, g * interval '1 day 02:03:04.5', timestamptz '2026-03-01 00:00+02' + g * interval '1 minute'
  from generate_series(1, 2000) g;
create table public.zerocol ();
insert into public.zerocol default values;
insert into public.zerocol default values;
create table public.refused (id int);
insert into public.refused select generate_series(1, 7);
"#;

const DEST_SQL: &str = r#"
create table public."Wide ✓" (id int primary key, body text, f float8, d date,
  i interval, ts timestamptz, twice int generated always as (id * 2) stored);
create table public.zerocol ();
"#;

async fn run(conn: &ConnInfo, sql: &str) {
    let c = conn.connect().await.expect("connect");
    c.batch_execute(sql).await.expect(sql);
}

/// Every table's rows as one digest, in fixed formats whatever the session's.
async fn digest(conn: &ConnInfo) -> String {
    let c = conn.connect().await.expect("connect");
    c.batch_execute(
        "set datestyle = 'ISO'; set intervalstyle = 'postgres'; set extra_float_digits = 3; set timezone = 'UTC';",
    )
    .await
    .expect("formats");
    c.query_one(
        "select (select md5(string_agg(w::text, ',' order by id)) from public.\"Wide ✓\" w)
             || ' ' || (select count(*) from public.zerocol)",
        &[],
    )
    .await
    .expect("digest")
    .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_are_copied_whole_in_block_ranges_and_counted() {
    let spec = SandboxSpec {
        kind: SandboxKind::Local,
        major: 15,
        image: None,
        pg_bin_dir: None,
        ready_timeout: Duration::from_secs(60),
    };
    let mut sb = dr_sandbox::start(&spec)
        .await
        .expect("local sandbox starts");
    let server = ConnInfo::parse(&sb.url()).expect("url");
    let admin = server.connect().await.expect("connect");
    // One statement at a time: CREATE DATABASE runs outside a transaction block.
    for sql in [
        "create database src",
        "create database dst",
        "alter database src set datestyle = 'SQL, DMY'",
        "alter database src set intervalstyle = 'sql_standard'",
        "alter database src set extra_float_digits = -15",
        "alter database src set statement_timeout = '5s'",
        "alter database dst set datestyle = 'German'",
        "alter database dst set intervalstyle = 'iso_8601'",
    ] {
        admin.batch_execute(sql).await.expect(sql);
    }
    let (src, dst) = (server.with_dbname("src"), server.with_dbname("dst"));
    run(&src, SOURCE_SQL).await;
    run(&dst, DEST_SQL).await;
    let expected = digest(&src).await;

    let snapshot = dr_pg::Snapshot::begin(&src, Duration::ZERO, None)
        .await
        .expect("snapshot");
    let tables = dr_pg::copy::copy_tables(&snapshot)
        .await
        .expect("copy tables")
        .expect("PostgreSQL 15 is cut by blocks");
    // Written after the snapshot: not copied.
    run(
        &src,
        "insert into public.\"Wide ✓\" (id) values (9999); insert into public.zerocol default values;",
    )
    .await;

    let mut names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["Wide ✓", "refused", "zerocol"]);
    let index = |name: &str| tables.iter().position(|t| t.name == name).expect("listed");
    let (w_i, r_i, z_i) = (index("Wide ✓"), index("refused"), index("zerocol"));
    let wide = &tables[w_i];
    assert_eq!(
        wide.columns,
        ["id", "body", "f", "d", "i", "ts"],
        "neither the dropped nor the generated column"
    );
    assert!(
        wide.blocks > 150,
        "fillfactor 10 spreads 2000 rows: {}",
        wide.blocks
    );
    let third = wide.blocks / 3;
    let ranges = [
        (None, Some(third)),
        (Some(third), Some(2 * third)),
        (Some(2 * third), None),
    ];

    let r = reader(&src, snapshot.id()).await.expect("reader");
    let w = writer(&dst).await.expect("writer");
    let mut read = 0;
    for (from, to) in ranges {
        let piece = Piece {
            table: w_i,
            from,
            to,
            bytes: 0,
        };
        // Ranges are never written frozen (one transaction must truncate and load a table).
        let copied = copy_piece(&r, &w, wide, &piece, Freeze::Yes)
            .await
            .expect("copy");
        let written = copied.written.expect("written");
        assert_eq!(written, copied.read);
        assert!(copied.read > 0, "every third holds rows: {from:?}..{to:?}");
        read += copied.read;
    }
    assert_eq!(read, 2000, "every row once, none of the later ones");

    let whole = |table| Piece {
        table,
        from: None,
        to: None,
        bytes: 0,
    };
    let zero = copy_piece(&r, &w, &tables[z_i], &whole(z_i), Freeze::No)
        .await
        .expect("zerocol");
    assert_eq!((zero.read, zero.written.expect("written")), (2, 2));

    // No such table on the destination: its COPY is refused, the rows still counted, and
    // the reader goes on (the writer's connection is replaced, as `restore::rows` does).
    let refused = copy_piece(&r, &w, &tables[r_i], &whole(r_i), Freeze::No)
        .await
        .expect("a refused COPY is not a failure of the copy");
    assert_eq!(refused.read, 7);
    let e = refused.written.expect_err("refused");
    assert!(e.to_string().contains("refused"), "{e}");
    let w = writer(&dst).await.expect("a new writer");
    // Frozen: truncated first, so the two rows copied before are replaced, not added to.
    let again = copy_piece(&r, &w, &tables[z_i], &whole(z_i), Freeze::Yes)
        .await
        .expect("again");
    assert_eq!(again.read, 2);

    snapshot.finish().await;
    drop((r, w));
    assert_eq!(digest(&dst).await, expected);
    sb.destroy().await.expect("destroy");
}
