//! End-to-end: a target with `databases = "all"` backs up every database of a real server,
//! each as its own target `NAME.DATABASE` (escaped), with one `pg_dumpall --globals-only`
//! per run; `list`, `restore`, `status` and `prune` work per database.

use crate::support::*;

/// A name that is not a safe path segment: a space and a dot.
const CAREFUL: &str = "my db.v2";
const CAREFUL_TARGET: &str = "pg1.my~20db~2Ev2";

#[test]
fn every_database_of_a_server_is_its_own_target_with_globals_dumped_once() {
    let ws = Workspace::new();
    let pg = Postgres::start();
    pg.create_db("app");
    pg.load_hard_cases("app");
    pg.create_db(CAREFUL);
    pg.psql(
        CAREFUL,
        "create table \"Odd Table\" (id int primary key, v text); \
         insert into \"Odd Table\" select g, 'row ' || g from generate_series(1, 500) g;",
    );
    pg.create_db("scratch");
    pg.psql("scratch", "create table junk (id int);");
    let repo = ws.path().join("repo");
    let (identity, recipient) = ws.keygen();
    let cfg = ws.write(
        "dr.toml",
        &format!(
            r#"
[repository]
url = "file://{}"
[encryption]
recipients = ["{recipient}"]
identity_file = "{}"
[retention]
daily = 7
[[targets]]
name = "pg1"
url = "{}"
databases = "all"
exclude_databases = ["scratch"]
"#,
            repo.display(),
            identity.display(),
            pg.url("postgres"),
        ),
    );

    // One run: one backup per database (postgres included, scratch excluded), globals once.
    let out = ws.dr(&cfg, &["backup", "--target", "pg1"]);
    assert_success(&out);
    let mut made: Vec<String> = stdout(&out)
        .lines()
        .filter_map(|l| l.split('\t').next().map(str::to_string))
        .collect();
    made.sort();
    assert_eq!(
        made,
        ["pg1.app", CAREFUL_TARGET, "pg1.postgres"],
        "{}",
        stderr(&out)
    );
    let log = stderr(&out);
    assert_eq!(
        log.matches("roles and tablespaces dumped").count(),
        1,
        "pg_dumpall --globals-only must run once per server run:\n{log}"
    );
    assert_eq!(
        log.matches("reusing this run's pg_dumpall").count(),
        2,
        "{log}"
    );
    for t in ["pg1.app", CAREFUL_TARGET, "pg1.postgres"] {
        assert!(
            repo.join(t).is_dir(),
            "{t}: one path segment in the repository"
        );
        // Each backup stores the globals (restore relies on them).
        let globals = std::fs::read_dir(repo.join(t))
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
            .filter(|f| f.file_name().to_string_lossy().starts_with("globals"))
            .count();
        assert_eq!(globals, 1, "{t}");
    }
    assert!(!repo.join("pg1.scratch").exists());

    // list: all of them, or one database; the server name alone says where its backups are.
    let out = ws.dr(&cfg, &["list"]);
    assert_success(&out);
    for t in ["pg1.app", CAREFUL_TARGET, "pg1.postgres"] {
        assert!(stdout(&out).contains(t), "{}", stdout(&out));
    }
    let out = ws.dr(&cfg, &["list", "--target", CAREFUL_TARGET]);
    assert_success(&out);
    assert_eq!(
        stdout(&out)
            .lines()
            .filter(|l| l.contains(CAREFUL_TARGET))
            .count(),
        1
    );
    let out = ws.dr(&cfg, &["list", "--target", "pg1"]);
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains("--target pg1.DATABASE") && e.contains(CAREFUL_TARGET),
        "{e}"
    );

    // Restores are exact, the careful name included.
    for (target, db, copy) in [
        ("pg1.app", "app", "app_copy"),
        (CAREFUL_TARGET, CAREFUL, "careful_copy"),
    ] {
        let out = ws.dr(
            &cfg,
            &[
                "restore",
                "latest",
                "--target",
                target,
                "--to",
                &pg.url(copy),
                "--yes",
            ],
        );
        assert_success(&out);
        assert_eq!(pg.table_digests(copy), pg.table_digests(db), "{target}");
        // A new database of the server is a target without a backup (status: a problem)
        // until the next run: the copies go.
        pg.psql("postgres", &format!("drop database {copy}"));
    }

    // One database of the server, by its name.
    let out = ws.dr(&cfg, &["backup", "--target", CAREFUL_TARGET]);
    assert_success(&out);
    assert!(stdout(&out).starts_with(CAREFUL_TARGET), "{}", stdout(&out));
    let out = ws.dr(&cfg, &["backup", "--target", "pg1.scratch"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("exclude_databases"),
        "{}",
        stderr(&out)
    );

    // status: every database is a target; a dropped one keeps its backups, is not "stale".
    let out = ws.dr(&cfg, &["status", "--json"]);
    assert_success(&out);
    let rows: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    let names: Vec<&str> = rows
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["target"].as_str())
        .collect();
    assert_eq!(names, ["pg1.app", CAREFUL_TARGET, "pg1.postgres"], "{rows}");
    pg.psql("postgres", &format!("drop database \"{CAREFUL}\""));
    let out = ws.dr(&cfg, &["status", "--json"]);
    assert_success(&out);
    let rows: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    let gone = rows
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["target"] == CAREFUL_TARGET)
        .cloned()
        .unwrap_or_default();
    assert!(
        gone["note"]
            .as_str()
            .unwrap_or_default()
            .contains("no longer a database"),
        "{rows}"
    );
    assert_eq!(gone["ok"], true, "{rows}");

    // prune: the server name covers each of its databases, the dropped one included.
    let out = ws.dr(&cfg, &["prune", "--target", "pg1", "--dry-run", "--json"]);
    assert_success(&out);
    let s = stdout(&out);
    for t in ["pg1.app", CAREFUL_TARGET, "pg1.postgres"] {
        assert!(s.contains(t), "{s}");
    }
    // The next run backs up the databases there are now.
    let out = ws.dr(&cfg, &["backup"]);
    assert_success(&out);
    let text = stdout(&out);
    let mut made: Vec<&str> = text.lines().filter_map(|l| l.split('\t').next()).collect();
    made.sort();
    assert_eq!(made, ["pg1.app", "pg1.postgres"]);
}

/// A database that refuses connections (`datallowconn = false`) cannot be dumped: backup
/// warns naming it, check fails naming it, status reports it as a problem; excluded by
/// name, it is skipped knowingly and nothing is said. template0 (also closed) is a template:
/// never mentioned.
#[test]
fn a_database_refusing_connections_is_named_by_backup_check_and_status() {
    let ws = Workspace::new();
    let pg = Postgres::start();
    pg.create_db("app");
    pg.psql("app", "create table t (id int); insert into t values (1);");
    pg.create_db("archive");
    pg.psql("postgres", "alter database archive allow_connections false");
    let repo = ws.path().join("repo");
    let (_, recipient) = ws.keygen();
    let config = |exclude: &str| {
        ws.write(
            "dr.toml",
            &format!(
                r#"
[repository]
url = "file://{}"
[encryption]
recipients = ["{recipient}"]
[[targets]]
name = "pg1"
url = "{}"
databases = "all"
exclude_databases = [{exclude}]
"#,
                repo.display(),
                pg.url("postgres"),
            ),
        )
    };
    let cfg = config("");

    let out = ws.dr(&cfg, &["backup"]);
    assert_success(&out);
    let err = stderr(&out);
    assert!(
        err.contains("database `archive` of target `pg1` does not accept connections"),
        "{err}"
    );
    assert!(!err.contains("template0"), "{err}");

    let out = ws.dr(&cfg, &["check"]);
    assert_exit_code(&out, 3);
    let text = stdout(&out);
    let line = text
        .lines()
        .find(|l| l.contains("databases pg1"))
        .unwrap_or_else(|| panic!("no databases line:\n{text}"));
    assert!(
        line.starts_with("FAIL") && line.contains("`archive`"),
        "{text}"
    );
    assert!(!text.contains("template0"), "{text}");

    let out = ws.dr(&cfg, &["status", "--json"]);
    assert_exit_code(&out, 8);
    let rows: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    let row = rows
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["target"] == "pg1.archive")
        .cloned()
        .unwrap_or_else(|| panic!("no row for pg1.archive: {rows}"));
    assert_eq!(row["ok"], false, "{rows}");
    assert!(
        row["problems"][0]
            .as_str()
            .unwrap_or_default()
            .contains("datallowconn = false"),
        "{rows}"
    );

    // Excluded by name: skipped knowingly, nothing said.
    let cfg = config("\"archive\"");
    let out = ws.dr(&cfg, &["backup"]);
    assert_success(&out);
    assert!(
        !stderr(&out).contains("does not accept connections"),
        "{}",
        stderr(&out)
    );
    let out = ws.dr(&cfg, &["check"]);
    assert_success(&out);
    let out = ws.dr(&cfg, &["status", "--json"]);
    assert!(!stdout(&out).contains("pg1.archive"), "{}", stdout(&out));
}
