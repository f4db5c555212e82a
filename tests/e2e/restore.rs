//! End-to-end: `dr restore` against real PostgreSQL and SeaweedFS: exact copies, integrity
//! before the target is touched, safe target handling, point-in-time choice, selection.

use std::path::PathBuf;

use crate::support::*;

struct Env {
    ws: Workspace,
    pg: Postgres,
    weed: SeaweedFs,
    cfg: PathBuf,
    identity: PathBuf,
}

const BUCKET: &str = "restore";

fn env() -> Env {
    let ws = Workspace::new();
    let pg = Postgres::start();
    pg.create_db("app");
    pg.load_hard_cases("app");
    // A table owned by a role that only the backup's globals carry.
    pg.psql(
        "app",
        "create role reporter; create table public.reports (id int primary key, v text); \
         insert into reports values (1, 'a'), (2, 'b'); alter table public.reports owner to reporter;",
    );
    let weed = SeaweedFs::start();
    weed.create_bucket(BUCKET);
    let (identity, recipient) = ws.keygen();
    let cfg = ws.write(
        "dr.toml",
        &format!(
            r#"
[repository]
url = "s3://{BUCKET}/dr"
endpoint = "{}"
path_style = true

[encryption]
recipients = ["{recipient}"]
identity_file = "{}"

[[targets]]
name = "app"
url = "{}"
"#,
            weed.endpoint(),
            identity.display(),
            pg.url("app")
        ),
    );
    Env {
        ws,
        pg,
        weed,
        cfg,
        identity,
    }
}

fn backup(e: &Env) -> String {
    let out = e.ws.dr(&e.cfg, &["backup"]);
    assert_success(&out);
    stdout(&out)
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

fn db_exists(pg: &Postgres, db: &str) -> bool {
    pg.psql(
        "postgres",
        &format!("select count(*) from pg_database where datname = '{db}'"),
    ) == "1"
}

#[test]
fn hard_cases_restore_as_an_exact_copy_into_a_server_without_the_roles() {
    let e = env();
    backup(&e);
    let other = Postgres::start();
    // Without the globals, the missing owner is reported, never hidden.
    let out =
        e.ws.dr(&e.cfg, &["restore", "--to", &other.url("copy1"), "--yes"]);
    assert_exit_code(&out, 7);
    assert!(
        stderr(&out).contains("reporter") && stderr(&out).contains("--with-globals"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        other.psql(
            "postgres",
            "select count(*) from pg_database where datname = 'copy1'"
        ),
        "0"
    );
    // --no-owner restores everything, owned by the restoring user.
    let out = e.ws.dr(
        &e.cfg,
        &[
            "restore",
            "--to",
            &other.url("noowner"),
            "--no-owner",
            "--yes",
        ],
    );
    assert_success(&out);
    assert_eq!(e.pg.row_counts("app"), other.row_counts("noowner"));
    // With them: an exact copy.
    let out = e.ws.dr(
        &e.cfg,
        &[
            "restore",
            "latest",
            "--to",
            &other.url("copy"),
            "--with-globals",
            "--yes",
        ],
    );
    assert_success(&out);
    assert_eq!(e.pg.table_digests("app"), other.table_digests("copy"));
    assert_eq!(e.pg.row_counts("app"), other.row_counts("copy"));
    assert_eq!(
        other.psql("copy", "select last_value from public.order_seq"),
        "4242"
    );
    assert_eq!(
        other.psql("copy", "select count(*) from pg_largeobject_metadata"),
        "1"
    );
    assert_eq!(
        other.psql("copy", r#"select orders from "Sales ü".order_totals"#),
        "3"
    );
    assert_eq!(
        other.psql(
            "copy",
            "select pg_get_userbyid(relowner) from pg_class where relname = 'reports'"
        ),
        "reporter"
    );
}

#[test]
fn a_flipped_byte_or_a_truncated_object_leaves_no_database_behind() {
    let e = env();
    backup(&e);
    let key = e
        .weed
        .object_keys(BUCKET)
        .into_iter()
        .find(|k| k.ends_with("data-1.zst.age"))
        .expect("data stream 1");
    let original = e.weed.fetch(BUCKET, &key);

    let mut flipped = original.clone();
    let at = flipped.len() / 2;
    flipped[at] ^= 0x01;
    e.weed.put_raw(BUCKET, &key, &flipped);
    let out =
        e.ws.dr(&e.cfg, &["restore", "--to", &e.pg.url("flipped"), "--yes"]);
    assert_exit_code(&out, 4);
    assert!(stderr(&out).contains("data-1.zst.age"), "{}", stderr(&out));
    assert!(!db_exists(&e.pg, "flipped"), "the target was touched");

    e.weed
        .put_raw(BUCKET, &key, &original[..original.len() - 1000]);
    let out = e.ws.dr(
        &e.cfg,
        &["restore", "--to", &e.pg.url("truncated"), "--yes"],
    );
    assert_exit_code(&out, 4);
    assert!(stderr(&out).contains("truncated"), "{}", stderr(&out));
    assert!(!db_exists(&e.pg, "truncated"));

    // --to-file writes nothing either.
    let file = e.ws.path().join("out.dump");
    let out = e.ws.dr(
        &e.cfg,
        &["restore", "--to-file", file.to_str().unwrap_or_default()],
    );
    assert_exit_code(&out, 4);
    assert!(!file.exists());
}

#[test]
fn the_wrong_identity_is_a_clear_error() {
    let e = env();
    backup(&e);
    let (other_id, other_recipient) = e.ws.keygen();
    let cfg_text = std::fs::read_to_string(&e.cfg).expect("cfg");
    let backup_recipient = cfg_text
        .split('"')
        .find(|s| s.starts_with("age1"))
        .expect("recipient in the config")
        .to_string();
    let text = std::fs::read_to_string(&e.cfg).expect("cfg").replace(
        &e.identity.display().to_string(),
        &other_id.display().to_string(),
    );
    std::fs::write(&e.cfg, text).expect("write");
    let out =
        e.ws.dr(&e.cfg, &["restore", "--to", &e.pg.url("wrongkey"), "--yes"]);
    assert_exit_code(&out, 4);
    assert!(stderr(&out).contains("identit"), "{}", stderr(&out));
    assert!(!db_exists(&e.pg, "wrongkey"));
    // Issue 17 item 8: the hint names the backup's recipient, not the identity's own.
    let hint = stderr(&out)
        .lines()
        .find(|l| l.starts_with("hint:"))
        .unwrap_or_default()
        .to_string();
    assert!(hint.contains(&backup_recipient), "{hint}");
    assert!(!hint.contains(&other_recipient), "{hint}");
}

#[test]
fn a_non_empty_target_is_refused_and_clean_makes_an_exact_copy() {
    let e = env();
    backup(&e);
    e.pg.create_db("busy");
    e.pg.psql(
        "busy",
        "create table keepme (id int); insert into keepme values (1);",
    );
    e.pg.psql(
        "busy",
        "create table big (id int); insert into big values (-1);",
    );
    let out =
        e.ws.dr(&e.cfg, &["restore", "--to", &e.pg.url("busy"), "--yes"]);
    assert_exit_code(&out, 7);
    assert!(stderr(&out).contains("--clean"), "{}", stderr(&out));
    assert_eq!(
        e.pg.psql("busy", "select count(*) from big"),
        "1",
        "refused means untouched"
    );

    let out = e.ws.dr(
        &e.cfg,
        &[
            "restore",
            "--to",
            &e.pg.url("busy"),
            "--clean",
            "--with-globals",
            "--yes",
        ],
    );
    assert_success(&out);
    let mut restored = e.pg.table_digests("busy");
    assert!(
        restored.remove("public.keepme").is_some(),
        "objects outside the backup are kept"
    );
    assert_eq!(restored, e.pg.table_digests("app"));
}

#[test]
fn at_picks_the_newest_backup_at_or_before_the_time_and_dry_run_touches_nothing() {
    let e = env();
    let first = backup(&e);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    e.pg.psql(
        "app",
        "insert into big select g, 'later', now() from generate_series(10001, 10500) g;",
    );
    let second = backup(&e);
    assert_ne!(first, second);

    let out = e.ws.dr(
        &e.cfg,
        &[
            "restore",
            "--at",
            &first,
            "--to",
            &e.pg.url("dry"),
            "--dry-run",
        ],
    );
    assert_success(&out);
    assert!(stdout(&out).contains(&first), "{}", stdout(&out));
    assert!(!db_exists(&e.pg, "dry"));

    let out = e.ws.dr(
        &e.cfg,
        &[
            "restore",
            "--at",
            &first,
            "--to",
            &e.pg.url("past"),
            "--with-globals",
            "--yes",
        ],
    );
    assert_success(&out);
    assert_eq!(e.pg.psql("past", "select count(*) from big"), "10000");
    let out = e.ws.dr(
        &e.cfg,
        &[
            "restore",
            "--to",
            &e.pg.url("now"),
            "--with-globals",
            "--yes",
        ],
    );
    assert_success(&out);
    assert_eq!(e.pg.psql("now", "select count(*) from big"), "10500");
}

#[test]
fn table_restores_only_that_table_with_its_index() {
    let e = env();
    e.pg.psql("app", "create index big_payload_idx on big (payload);");
    backup(&e);
    let out = e.ws.dr(
        &e.cfg,
        &[
            "restore",
            "--table",
            "public.big",
            "--to",
            &e.pg.url("one"),
            "--yes",
        ],
    );
    assert_success(&out);
    // Every table is defined (the whole pre-data section); only the selected one has rows.
    let counts = e.pg.row_counts("one");
    assert_eq!(
        counts
            .iter()
            .filter(|(_, rows)| **rows > 0)
            .map(|(t, _)| t.clone())
            .collect::<Vec<_>>(),
        vec!["public.big".to_string()]
    );
    assert_eq!(counts["public.big"], 10000);
    let idx = e.pg.psql("one", "select string_agg(indexname, ',' order by indexname) from pg_indexes where tablename = 'big'");
    assert_eq!(idx, "big_payload_idx,big_pkey");
}

/// What an operator following `runbooks/bad-migration.md` met: a table with a foreign key
/// to a table not selected, a table in a schema of its own, a quoted name, an enum and a
/// domain column.
const SHOP: &str = r#"
create type public.order_status as enum ('new', 'paid');
create domain public.positive as int check (value > 0);
create table public.customers (id int primary key, name text);
create table public.orders (
    id serial primary key,
    customer_id int not null constraint orders_customer_fk references public.customers (id),
    status public.order_status not null default 'new',
    qty public.positive
);
create index orders_customer_idx on public.orders (customer_id);
insert into public.customers select g, 'c' || g from generate_series(1, 5) g;
insert into public.orders (customer_id, status, qty)
    select g % 5 + 1, 'paid', g from generate_series(1, 20) g;
create schema audit;
create table audit.events (
    id bigint generated always as identity primary key,
    order_id int constraint events_order_fk references public.orders (id),
    note text
);
insert into audit.events (order_id, note) select g, 'e' || g from generate_series(1, 7) g;
create schema "Sales Data";
create table "Sales Data"."Order Items" (id int primary key, "Qty" public.positive);
insert into "Sales Data"."Order Items" select g, g from generate_series(1, 3) g;
"#;

#[test]
fn selective_restore_of_a_table_with_a_foreign_key_a_schema_and_quoted_names() {
    let e = env();
    e.pg.psql("app", SHOP);
    backup(&e);
    let source = e.pg.table_digests("app");
    let restore = |selection: &[&str], db: &str| {
        let mut args = vec!["restore"];
        args.extend_from_slice(selection);
        let url = e.pg.url(db);
        args.extend_from_slice(&["--to", &url, "--yes"]);
        let out = e.ws.dr(&e.cfg, &args);
        assert_success(&out);
        (e.pg.table_digests(db), stderr(&out))
    };

    // The FK to customers is skipped and named; the table's rows are exact.
    let (got, err) = restore(&["--table", "public.orders"], "one_orders");
    assert_eq!(got["public.orders"], source["public.orders"]);
    assert!(err.contains("orders_customer_fk"), "stderr: {err}");
    assert_eq!(
        e.pg.psql("one_orders", "select count(*) from public.customers"),
        "0"
    );
    assert_eq!(
        e.pg.psql(
            "one_orders",
            "select string_agg(conname, ',' order by conname) from pg_constraint where conrelid = 'public.orders'::regclass and contype in ('p', 'f')"
        ),
        "orders_pkey"
    );
    assert_eq!(
        e.pg.psql(
            "one_orders",
            "select string_agg(indexname, ',' order by indexname) from pg_indexes where tablename = 'orders'"
        ),
        "orders_customer_idx,orders_pkey"
    );
    // Its sequence goes on where the source's stopped.
    assert_eq!(
        e.pg.psql(
            "one_orders",
            "insert into public.orders (customer_id, qty) values (1, 1) returning id"
        )
        .lines()
        .next()
        .unwrap_or_default(),
        "21"
    );

    // A table in a schema other than public, by name and by schema.
    let (got, err) = restore(&["--table", "audit.events"], "one_events");
    assert_eq!(got["audit.events"], source["audit.events"]);
    assert!(err.contains("events_order_fk"), "stderr: {err}");
    let (got, _) = restore(&["--schema", "audit"], "one_audit");
    assert_eq!(got["audit.events"], source["audit.events"]);

    // psql-quoted names, and both ends of the foreign key: nothing skipped.
    let (got, _) = restore(&["--table", r#""Sales Data"."Order Items""#], "one_items");
    assert_eq!(
        got["Sales Data.Order Items"],
        source["Sales Data.Order Items"]
    );
    let (got, err) = restore(
        &["--table", "public.orders", "--table", "public.customers"],
        "one_both",
    );
    assert_eq!(got["public.orders"], source["public.orders"]);
    assert_eq!(got["public.customers"], source["public.customers"]);
    assert!(!err.contains("orders_customer_fk"), "stderr: {err}");
    assert_eq!(
        e.pg.psql(
            "one_both",
            "select count(*) from pg_constraint where conname = 'orders_customer_fk'"
        ),
        "1"
    );
}

#[test]
fn to_file_writes_a_pg_restore_archive_and_the_globals() {
    let e = env();
    backup(&e);
    let dir = e.ws.path().join("app-sections");
    let globals = e.ws.path().join("globals.sql");
    let out = e.ws.dr(
        &e.cfg,
        &[
            "restore",
            "--to-file",
            dir.to_str().unwrap_or_default(),
            "--globals-to-file",
            globals.to_str().unwrap_or_default(),
        ],
    );
    assert_success(&out);
    let pre = dir.join("1-pre-data.dump");
    let post = dir.join("3-post-data.dump");
    for f in [&pre, &dir.join("2-data-1.dump"), &post] {
        let list = std::process::Command::new("pg_restore")
            .arg("-l")
            .arg(f)
            .output()
            .expect("pg_restore");
        assert_success(&list);
    }
    assert!(std::fs::read_to_string(dir.join("README.txt"))
        .unwrap_or_default()
        .contains("1-pre-data.dump"));
    use std::os::unix::fs::PermissionsExt;
    for f in [&pre, &post, &globals] {
        let mode = std::fs::metadata(f).expect("meta").permissions().mode() & 0o777;
        assert_eq!(
            mode,
            0o600,
            "decrypted {} is readable by others",
            f.display()
        );
    }
    assert!(std::fs::read_to_string(&globals)
        .unwrap_or_default()
        .contains("CREATE ROLE reporter"));
}

/// Globals are not a back door (issue 21): a role the backup's server had as a superuser
/// with a password (or with REPLICATION) is named in the plan and created only when named
/// by --allow-role; `--yes` is not enough. Existing roles keep their passwords.
#[test]
fn with_globals_creates_a_superuser_with_a_password_only_when_named() {
    let e = env();
    e.pg.psql(
        "postgres",
        "create role evil superuser login password 'evil-secret'; \
         create role \"Repl Bot\" replication login; \
         alter role postgres password 'old-server';",
    );
    backup(&e);
    let other = Postgres::start();
    let role = |r: &str| {
        other.psql(
            "postgres",
            &format!(
                "select coalesce(string_agg(rolsuper::text || ',' || (rolpassword is not null)::text, ''), 'none') \
                 from pg_authid where rolname = '{r}'"
            ),
        )
    };
    let other_url = other.url("copy");
    let restore = |extra: &[&str]| {
        let mut args = vec!["restore", "--to", &other_url, "--with-globals", "--yes"];
        args.extend_from_slice(extra);
        e.ws.dr(&e.cfg, &args)
    };

    // The plan names each role and what it would get.
    let out = restore(&["--dry-run"]);
    assert_success(&out);
    assert!(
        stdout(&out).contains("evil (SUPERUSER, a password): refused")
            && stdout(&out).contains("Repl Bot (REPLICATION): refused"),
        "{}",
        stdout(&out)
    );
    // --yes alone: refused, naming the roles and the flag; nothing changed.
    let out = restore(&[]);
    assert_exit_code(&out, 7);
    let err = stderr(&out);
    assert!(
        err.contains("evil (SUPERUSER, a password)")
            && err.contains("--allow-role 'Repl Bot' --allow-role evil"),
        "{err}"
    );
    assert_eq!(role("evil"), "none");
    assert_eq!(role("reporter"), "none");
    assert!(!db_exists(&other, "copy"));
    // One named, one not: still refused.
    let out = restore(&["--allow-role", "evil"]);
    assert_exit_code(&out, 7);
    assert!(
        stderr(&out).contains("Repl Bot") && !stderr(&out).contains("evil ("),
        "{}",
        stderr(&out)
    );
    assert_eq!(role("evil"), "none");
    // Both named: created as the backup has them; the target's postgres keeps its (lack of)
    // password.
    let out = restore(&["--allow-role", "evil", "--allow-role", "Repl Bot"]);
    assert_success(&out);
    assert_eq!(role("evil"), "true,true");
    assert_eq!(role("postgres"), "true,false");
    assert_eq!(e.pg.row_counts("app"), other.row_counts("copy"));
}

/// Issue 17 item 1: `echo n | dr restore latest --to …/app --clean` restored over the
/// database without asking, because there was no terminal to ask on.
#[test]
fn without_a_terminal_a_restore_changes_no_existing_database_without_yes() {
    let e = env();
    backup(&e);
    let piped_no = |args: &[&str]| {
        let mut cmd = e.ws.dr_command(&e.cfg, args);
        run_with_timeout(
            &mut cmd,
            Some(b"n\n".to_vec()),
            std::time::Duration::from_secs(300),
        )
    };
    // Into a database dr creates: nothing existing changes, no yes needed.
    let url = e.pg.url("fresh");
    let out = piped_no(&["restore", "latest", "--to", &url]);
    assert_success(&out);
    assert_eq!(e.pg.psql("fresh", "select count(*) from big"), "10000");
    e.pg.psql("fresh", "insert into big (id) values (-1)");

    // Over it (--clean), with `n` piped in and no --yes: refused, plan shown, untouched.
    for extra in [&["--clean"][..], &["--force"][..]] {
        let mut args = vec!["restore", "latest", "--to", &url];
        args.extend_from_slice(extra);
        let out = piped_no(&args);
        assert_exit_code(&out, 7);
        let err = stderr(&out);
        assert!(err.contains("--yes"), "{err}");
        assert!(err.contains("restore plan"), "{err}");
        assert!(err.contains("nothing was changed"), "{err}");
        assert_eq!(e.pg.psql("fresh", "select count(*) from big"), "10001");
    }
    // An existing empty database is an existing database too; --with-globals changes the
    // server's roles.
    e.pg.create_db("empty");
    let out = e.ws.dr(&e.cfg, &["restore", "--to", &e.pg.url("empty")]);
    assert_exit_code(&out, 7);
    assert_eq!(
        e.pg.psql(
            "empty",
            "select count(*) from pg_class where relname = 'big'"
        ),
        "0"
    );
    let out = e.ws.dr(
        &e.cfg,
        &["restore", "--to", &e.pg.url("roles"), "--with-globals"],
    );
    assert_exit_code(&out, 7);
    assert!(stderr(&out).contains("roles"), "{}", stderr(&out));
    assert!(!db_exists(&e.pg, "roles"));

    // With --yes it goes ahead.
    let out =
        e.ws.dr(&e.cfg, &["restore", "--to", &url, "--clean", "--yes"]);
    assert_success(&out);
    assert_eq!(e.pg.psql("fresh", "select count(*) from big"), "10000");
}

/// PostgreSQL 17's pg_dump creates large objects in the data section (BLOB METADATA), not
/// the pre-data: `--clean` over a copy holding them must drop them there, or their creation
/// collides ("duplicate key ... pg_largeobject_metadata_oid_index").
#[test]
fn clean_replaces_the_large_objects_of_a_postgres_17_backup() {
    let Some(bin) = pg_bin_dir(17) else {
        eprintln!("skipped: no PostgreSQL 17 binaries (ci/setup.sh installs them)");
        return;
    };
    let ws = Workspace::new();
    let pg = Postgres::start_with_bin_dir(&bin);
    pg.create_db("app");
    pg.psql(
        "app",
        "create table t (n int primary key); insert into t values (1); select lo_from_bytea(0, 'hello');",
    );
    let (identity, recipient) = ws.keygen();
    let cfg = ws.write(
        "dr.toml",
        &dir_config_text(
            &ws.path().join("repo"),
            &recipient,
            Some(&identity),
            &pg.url("app"),
            &format!("pg_bin_dir = \"{}\"\n", bin.display()),
        ),
    );
    assert_success(&ws.dr(&cfg, &["backup"]));
    assert_success(&ws.dr(&cfg, &["restore", "--to", &pg.url("copy")]));
    let out = ws.dr(
        &cfg,
        &["restore", "--to", &pg.url("copy"), "--clean", "--yes"],
    );
    assert_success(&out);
    assert_eq!(
        pg.psql(
            "copy",
            "select string_agg(convert_from(lo_get(oid), 'UTF8'), ',') from pg_largeobject_metadata"
        ),
        "hello"
    );
}
