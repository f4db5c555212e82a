//! Backups written by an older dr keep working: the committed format-1 fixture
//! (tests/fixtures/v1, one `dump.zst.age`, made by `make.sh` with the dr from before manifest
//! format 2) is listed, shown, restored into an exact copy and verified by today's dr. It
//! predates signing: it is listed as untrusted (unsigned), never `latest`, and restores and
//! verifies only when named by id with `--trust-unsigned`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::support::*;

/// The fixture directory (see its README.md).
const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/v1");

/// The one backup in the fixture repository.
const BACKUP_ID: &str = "20261124T103633Z";
/// When it finished (its manifest's `finished_at`).
const BACKUP_FINISHED_AT: &str = "2026-11-24T10:36:33.429301411Z";

/// Row count and content digest of every table (relkind 'r') of the fixture database, as
/// printed by make.sh into expected.txt (digests.sql computes them: md5 of the rows as text,
/// byte order, with the text forms pinned).
#[rustfmt::skip]
const EXPECTED: &[(&str, i64, &str)] = &[
    ("Sales ü.Straße Orders ✓", 3, "842f6d36526b8e265e181e0bceae4f2a"),
    ("Sales ü.invoices", 3, "17033f17428b3b7559f81dcc69f18ec7"),
    ("public.authors", 2, "8cb6b36c06a5160f9d3453b21f39e660"),
    ("public.big", 1000, "8365a05eb889224c569c1612cbd9cc70"),
    ("public.blobs", 5, "a9cf7a64c7dfde969c57f846f61cda06"),
    ("public.books", 3, "c9b5e0b91cb801ae20172aff208fc09c"),
    ("public.capitals", 2, "e5547535e482efe9d5d2ab1abffc1cee"),
    ("public.cities", 2, "f7620c14d1c54724e1980d30d27fbad0"),
    ("public.empty_table", 0, "d41d8cd98f00b204e9800998ecf8427e"),
    ("public.measurements_2025", 121, "e65b1492dd6d5ee804215fb8111dd55f"),
    ("public.measurements_2026", 79, "586d9a57ac066d01ebac851a6c116986"),
    ("public.tenant_notes", 2, "c8cee2fbd59d87b8d80a0a47a159a79a"),
    ("public.texts", 9, "d62a76dfab697701659a7575090fe36f"),
    ("public.zerocol", 3, "49c58f20be4a3eae850092a7e56c8214"),
];

/// A workspace holding a copy of the fixture repository (tests write verification records
/// into it; the committed fixture stays untouched), its identity, and a dr.toml for target
/// `app` at `target_url`.
struct Fixture {
    ws: Workspace,
    cfg: PathBuf,
    repo: PathBuf,
}

fn fixture(target_url: &str) -> Fixture {
    let ws = Workspace::new();
    let src = Path::new(FIXTURE);
    let repo = ws.path().join("repo");
    copy_tree(&src.join("repo"), &repo);
    // git does not keep the 0600 mode of an identity file.
    let identity = ws.path().join("identity.txt");
    fs::copy(src.join("identity.txt"), &identity).expect("copy identity");
    fs::set_permissions(&identity, fs::Permissions::from_mode(0o600)).expect("chmod identity");
    let text = fs::read_to_string(&identity).expect("read identity");
    let recipient = text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .expect("public key line in identity.txt")
        .trim()
        .to_string();
    let cfg = ws.write(
        "dr.toml",
        &dir_config_text(&repo, &recipient, Some(&identity), target_url, ""),
    );
    Fixture { ws, cfg, repo }
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap_or_else(|e| panic!("mkdir {}: {e}", to.display()));
    for entry in fs::read_dir(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display())) {
        let entry = entry.expect("dir entry");
        let dest = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &dest);
        } else {
            fs::copy(entry.path(), &dest)
                .unwrap_or_else(|e| panic!("copy {}: {e}", entry.path().display()));
        }
    }
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert_success(out);
    serde_json::from_str(&stdout(out))
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", stdout(out)))
}

/// (table, rows, md5) of every table of `db`, by the fixture's digests.sql.
fn digests(pg: &Postgres, db: &str) -> Vec<(String, i64, String)> {
    let mut c = pg.psql_command(db);
    c.args(["-F", "\u{1f}", "-f", &format!("{FIXTURE}/digests.sql")]);
    let out = run_with_timeout(&mut c, None, std::time::Duration::from_secs(120));
    assert_success(&out);
    stdout(&out)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\u{1f}').collect();
            assert_eq!(f.len(), 3, "unexpected line {l:?}");
            (
                f[0].to_string(),
                f[1].parse().expect("count"),
                f[2].to_string(),
            )
        })
        .collect()
}

#[test]
fn the_fixture_is_a_format_1_backup() {
    let manifest = Path::new(FIXTURE).join(format!("repo/app/{BACKUP_ID}/manifest.json"));
    let m: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&manifest).expect("read manifest")).expect("json");
    assert_eq!(m["format"], 1);
    assert_eq!(m["id"], BACKUP_ID);
    assert_eq!(m["finished_at"], BACKUP_FINISHED_AT);
    let roles: Vec<&str> = m["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .map(|o| o["role"].as_str().expect("role"))
        .collect();
    assert_eq!(roles, ["dump", "globals", "details"]);
}

#[test]
fn a_format_1_backup_is_listed_and_shown() {
    let f = fixture("postgres://postgres@127.0.0.1:9/app");
    let l = json(&f.ws.dr(&f.cfg, &["list", "--json"]));
    let l = l.as_array().expect("array");
    assert_eq!(l.len(), 1, "{l:?}");
    assert_eq!(l[0]["id"], BACKUP_ID);
    assert_eq!(l[0]["target"], "app");
    assert!(l[0]["bytes"].as_u64().is_some_and(|b| b > 0), "{l:?}");
    assert_eq!(l[0]["state"], "untrusted", "{l:?}");
    assert_eq!(l[0]["trust"], "unsigned", "{l:?}");

    let out = f.ws.dr(&f.cfg, &["list"]);
    assert_success(&out);
    assert!(stdout(&out).contains(BACKUP_ID), "{}", stdout(&out));

    // With the identity, show decrypts the details: the recorded row counts.
    let s = json(&f.ws.dr(&f.cfg, &["show", BACKUP_ID, "--json"]));
    assert_eq!(s["format"], 1, "{s}");
    assert_eq!(s["id"], BACKUP_ID, "{s}");
    let mut recorded = Vec::new();
    for t in s["details"]["tables"].as_array().expect("details.tables") {
        recorded.push((
            format!(
                "{}.{}",
                t["schema"].as_str().expect("schema"),
                t["name"].as_str().expect("name")
            ),
            t["rows"].as_i64().expect("rows"),
        ));
    }
    recorded.sort();
    let expected: Vec<(String, i64)> = EXPECTED
        .iter()
        .map(|(t, n, _)| (t.to_string(), *n))
        .collect();
    assert_eq!(recorded, expected);
    assert_eq!(s["details"]["large_objects"], 1, "{s}");

    let out = f.ws.dr(&f.cfg, &["show", BACKUP_ID]);
    assert_success(&out);
    assert!(stdout(&out).contains(BACKUP_ID), "{}", stdout(&out));
}

#[test]
fn a_format_1_backup_restores_an_exact_copy() {
    let pg = Postgres::start();
    let f = fixture(&pg.url("app"));
    // Unsigned: never `latest`, and by id only with --trust-unsigned, before any database.
    let out =
        f.ws.dr(&f.cfg, &["restore", "--to", &pg.url("restored"), "--yes"]);
    assert_exit_code(&out, 4);
    assert!(stderr(&out).contains(BACKUP_ID), "{}", stderr(&out));
    let out = f.ws.dr(
        &f.cfg,
        &["restore", BACKUP_ID, "--to", &pg.url("restored"), "--yes"],
    );
    assert_exit_code(&out, 4);
    assert!(
        stderr(&out).contains("--trust-unsigned"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        pg.psql(
            "postgres",
            "select count(*) from pg_database where datname = 'restored'"
        ),
        "0"
    );
    let out = f.ws.dr(
        &f.cfg,
        &[
            "restore",
            BACKUP_ID,
            "--to",
            &pg.url("restored"),
            "--jobs",
            "2",
            "--yes",
            "--trust-unsigned",
        ],
    );
    assert_success(&out);
    assert!(
        stderr(&out).contains(&format!("USING UNSIGNED BACKUP {BACKUP_ID}")),
        "{}",
        stderr(&out)
    );

    let got = digests(&pg, "restored");
    let want: Vec<(String, i64, String)> = EXPECTED
        .iter()
        .map(|(t, n, d)| (t.to_string(), *n, d.to_string()))
        .collect();
    assert_eq!(got, want, "row counts and content digests of every table");

    // The known values of hard_cases.sql, and what no table digest covers.
    let q = |sql: &str| pg.psql("restored", sql);
    assert_eq!(q("SELECT last_value FROM public.order_seq"), "4242");
    assert_eq!(
        q("SELECT string_agg(convert_from(lo_get(oid), 'UTF8'), ',') FROM pg_largeobject_metadata"),
        "hello"
    );
    assert_eq!(q("SELECT count(*) FROM public.cities"), "4", "inheritance");
    assert_eq!(q("SELECT count(*) FROM public.measurements"), "200");
    assert_eq!(
        q(r#"SELECT orders || ' ' || total FROM "Sales ü".order_totals"#),
        "3 100010.50",
        "the materialized view is refreshed"
    );
    assert_eq!(
        q(r#"INSERT INTO "Sales ü"."Straße Orders ✓" ("Ämount") VALUES (1) RETURNING "Id""#),
        "4",
        "the identity continues"
    );
    assert_eq!(
        q(r#"SELECT euros FROM "Sales ü".invoices WHERE id = 1"#),
        "19.9900000000000000",
        "generated column"
    );
    assert_eq!(
        q(r#"SELECT enum_range(NULL::"Sales ü".status)::text"#),
        "{new,paid,shipped}"
    );
    let domain_violation = pg
        .psql_command("restored")
        .args([
            "-c",
            r#"INSERT INTO "Sales ü".invoices (id, status, cents) VALUES (9, 'new', -1)"#,
        ])
        .output()
        .expect("psql");
    assert!(
        !domain_violation.status.success(),
        "the domain's CHECK is restored"
    );
    assert_eq!(
        q("SELECT count(*) FROM pg_constraint WHERE contype = 'f' \
           AND conrelid IN ('public.authors'::regclass, 'public.books'::regclass)"),
        "2",
        "circular foreign keys"
    );
    assert_eq!(
        q(
            "SELECT relrowsecurity::text || ' ' || relforcerowsecurity::text FROM pg_class \
           WHERE oid = 'public.tenant_notes'::regclass"
        ),
        "true true"
    );
    assert_eq!(
        q("SELECT policyname FROM pg_policies WHERE tablename = 'tenant_notes'"),
        "tenant_isolation"
    );
}

#[test]
fn a_format_1_backup_verifies_in_a_local_sandbox() {
    let f = fixture("postgres://postgres@127.0.0.1:9/app");
    let v = json(&f.ws.dr(
        &f.cfg,
        &[
            "verify",
            BACKUP_ID,
            "--sandbox",
            "local",
            "--json",
            "--trust-unsigned",
        ],
    ));
    assert_eq!(v["record"]["result"], "passed", "{v}");
    let l = json(&f.ws.dr(&f.cfg, &["list", "--json"]));
    assert_eq!(l[0]["verification"]["result"], "passed", "{l}");
    // The record is written next to the backup in the copy, not in the committed fixture.
    assert!(files_under(&f.repo)
        .iter()
        .any(|p| p.to_string_lossy().contains("/verify/")));
}

/// Issue 17 item 4, format 1: a restore of a single-archive backup into a database it
/// created left that database behind when `pg_restore` failed. Here dr logs in as a role that
/// may create databases but not give objects to `postgres`, so every `ALTER … OWNER TO` of the
/// archive fails: the created database must be dropped.
#[test]
fn a_failed_format_1_restore_drops_the_database_it_created() {
    let pg = Postgres::start();
    let f = fixture(&pg.url("app"));
    // Autovacuum's worker in the new database is a superuser process that `weak` may not end
    // (the drop's FORCE would need to): off, so the drop depends only on dr.
    pg.psql("postgres", "alter system set autovacuum = off");
    pg.psql("postgres", "select pg_reload_conf()");
    pg.psql("postgres", "create role weak login createdb");
    let to = pg.url("failed").replacen("//postgres@", "//weak@", 1);
    let out = f.ws.dr(
        &f.cfg,
        &[
            "restore",
            BACKUP_ID,
            "--to",
            &to,
            "--yes",
            "--trust-unsigned",
        ],
    );
    assert_exit_code(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("must be member of role"), "{err}");
    assert!(err.contains("created was dropped"), "{err}");
    assert_eq!(
        pg.psql(
            "postgres",
            "select count(*) from pg_database where datname = 'failed'"
        ),
        "0",
        "the created database was left: {err}"
    );
}
