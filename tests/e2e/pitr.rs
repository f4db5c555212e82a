//! End-to-end point-in-time recovery on real servers: PostgreSQL archives with `dr wal push`,
//! `dr backup --physical` takes a base backup while rows are written, and `dr restore --at …
//! --to-dir DIR --start` recovers a copy that holds exactly the rows committed before the
//! chosen time (or LSN). What the server runs (`dr wal push`, `dr wal fetch`) runs as its OS
//! user, with the config, env file and identity in a directory that user owns.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::*;

pub(crate) struct Pitr {
    pub(crate) ws: Workspace,
    pub(crate) pg: Postgres,
    pub(crate) home: PathBuf,
    pub(crate) cfg: PathBuf,
    pub(crate) env_file: PathBuf,
}

pub(crate) fn give_to_server(path: &Path) {
    if is_root() {
        run_ok(
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(path),
            "chown",
        );
    }
}

/// How the test server's WAL reaches the repository.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Capture {
    /// `archive_command = 'dr wal push %p'`.
    Archive,
    /// `dr wal stream` (the test starts it): partials every 2 s, the spool under the home.
    Stream,
}

fn setup(pg: Postgres) -> Pitr {
    setup_with(pg, Capture::Archive)
}

pub(crate) fn setup_with(pg: Postgres, capture: Capture) -> Pitr {
    setup_on(
        pg,
        capture,
        "[repository]\nurl = \"file://{home}/repo\"\n",
        "",
    )
}

/// [`setup_with`] on another repository: `repository` is the `[repository]` section (and any
/// other before `[encryption]`; `{home}` stands for the server-owned home), `env` more env
/// file lines (an S3 store's keys).
pub(crate) fn setup_on(pg: Postgres, capture: Capture, repository: &str, env: &str) -> Pitr {
    let ws = Workspace::new();
    let home = pg.socket_dir().join("dr");
    std::fs::create_dir_all(&home).expect("mkdir");
    let (identity, recipient) = ws.keygen();
    let id_copy = home.join("identity.txt");
    std::fs::copy(&identity, &id_copy).expect("copy identity");
    let key = home.join("signing.key");
    std::fs::copy(ws.signing_key(), &key).expect("copy the signing key");
    let env_file = home.join("dr.env");
    std::fs::write(
        &env_file,
        format!("DR_SIGNING_KEY_FILE={}\n{env}", key.display()),
    )
    .expect("env file");
    let cfg = home.join("dr.toml");
    let repository = repository.replace("{home}", &home.display().to_string());
    std::fs::write(
        &cfg,
        format!(
            "{repository}[encryption]\nrecipients = [\"{recipient}\"]\nidentity_file = \"{}\"\n[[targets]]\nname = \"app\"\nurl = \"{}\"\npg_bin_dir = \"{}\"\n[targets.wal]\n{}",
            id_copy.display(),
            pg.url("postgres"),
            pg.bin_dir().display(),
            match capture {
                Capture::Archive => "mode = \"archive\"\n".to_string(),
                Capture::Stream => format!(
                    "mode = \"stream\"\npartial_upload_secs = 2\nspool_dir = \"{}\"\n",
                    home.join("spool").display()
                ),
            }
        ),
    )
    .expect("config");
    // The server's user writes the WAL archive; `dr backup` (root here) the backups beside it.
    std::fs::create_dir_all(home.join("repo/app/wal")).expect("mkdir repo");
    std::fs::set_permissions(
        &env_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod");
    give_to_server(&home);
    let command = format!(
        "{} --config {} --env-file {} wal push %p",
        dr_bin().display(),
        cfg.display(),
        env_file.display()
    );
    if capture == Capture::Archive {
        pg.psql(
            "postgres",
            &format!("ALTER SYSTEM SET archive_mode = 'on';\nALTER SYSTEM SET archive_command = '{command}';"),
        );
        pg.restart();
    }
    pg.psql(
        "postgres",
        "create table marks (n int primary key, at timestamptz not null default clock_timestamp());\n\
         create table ticks (t int);\n\
         create table \"Quoted Orders\" (id serial primary key, note text);",
    );
    Pitr {
        ws,
        pg,
        home,
        cfg,
        env_file,
    }
}

impl Pitr {
    pub(crate) fn dr(&self, args: &[&str]) -> Output {
        let mut all = vec!["--env-file", self.env_file.to_str().expect("utf-8")];
        all.extend_from_slice(args);
        self.ws.dr(&self.cfg, &all)
    }

    pub(crate) fn mark(&self, n: i32) -> String {
        self.pg.psql(
            "postgres",
            &format!("insert into marks (n) values ({n}) returning at::text;"),
        )
    }

    /// Switch to a new segment and wait until the server archived it.
    pub(crate) fn switch_and_wait(&self) {
        // A switch with no WAL since the last one switches nothing: write a little first.
        self.pg.psql("postgres", "insert into ticks values (1);");
        let segment = self
            .pg
            .psql("postgres", "select pg_walfile_name(pg_switch_wal());");
        let archived = wait_until(Duration::from_secs(120), || {
            self.pg.psql(
                "postgres",
                "select coalesce(last_archived_wal, '') from pg_stat_archiver;",
            ) >= segment
        });
        assert!(
            archived,
            "{segment} was not archived\n{}",
            tail(&self.pg.socket_dir().join("postgres.log"), 4000)
        );
    }
}

/// A recovered copy started as the operator would: its own port and socket.
struct Copy<'a> {
    pg: &'a Postgres,
    dir: PathBuf,
    port: u16,
    socket: PathBuf,
    log: PathBuf,
}

impl<'a> Copy<'a> {
    /// Start the copy in `dir` (archiving as its config says when `archive`), wait until
    /// recovery is over and it is promoted.
    fn start(pg: &'a Postgres, dir: &Path, archive: bool) -> Copy<'a> {
        let port = free_port();
        let parent = dir.parent().expect("parent");
        let socket = parent.join(format!("sock-{port}"));
        std::fs::create_dir_all(&socket).expect("socket dir");
        give_to_server(&socket);
        let log = parent.join(format!("copy-{port}.log"));
        let archive_mode = if archive { "" } else { " -c archive_mode=off" };
        let o = run_with_timeout(
            as_postgres(&pg.bin_dir().join("pg_ctl"))
                .args(["start", "-w", "-t", "120", "-D"])
                .arg(dir)
                .arg("-l")
                .arg(&log)
                .arg("-o")
                .arg(format!(
                    "-p {port} -c unix_socket_directories={}{archive_mode}",
                    socket.display()
                )),
            None,
            Duration::from_secs(150),
        );
        assert!(
            o.status.success(),
            "the copy did not start: {}\n{}",
            describe(&o),
            tail(&log, 4000)
        );
        let copy = Copy {
            pg,
            dir: dir.to_path_buf(),
            port,
            socket,
            log,
        };
        let promoted = wait_until(Duration::from_secs(60), || {
            copy.psql("select pg_is_in_recovery()") == "f"
        });
        assert!(
            promoted,
            "the copy did not finish recovery\n{}",
            tail(&copy.log, 4000)
        );
        copy
    }

    fn psql(&self, sql: &str) -> String {
        let mut c = as_postgres(&self.pg.bin_dir().join("psql"));
        c.args(["-h"]).arg(&self.socket).args([
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
            "-At",
            "-c",
            sql,
            "postgres",
        ]);
        let out = run_with_timeout(&mut c, None, Duration::from_secs(30));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn marks(&self) -> String {
        self.psql("select string_agg(n::text, ',' order by n) from marks")
    }

    fn stop(self) {
        let _ = run_with_timeout(
            as_postgres(&self.pg.bin_dir().join("pg_ctl"))
                .args(["stop", "-m", "fast", "-D"])
                .arg(&self.dir),
            None,
            Duration::from_secs(60),
        );
    }
}

/// Start the recovered copy in `dir`, let it finish recovery, and return the marks it holds.
pub(crate) fn marks_of_copy(pg: &Postgres, dir: &Path) -> String {
    let copy = Copy::start(pg, dir, false);
    let marks = copy.marks();
    copy.stop();
    marks
}

fn recovers_to_a_time_and_an_lsn(pg: Postgres) {
    let _heavy = one_heavy_test_at_a_time();
    let s = setup(pg);
    s.mark(1);
    // Writes while the base backup runs.
    s.pg.psql(
        "postgres",
        "insert into \"Quoted Orders\" (note) select 'n' || g from generate_series(1, 5000) g;",
    );
    let o = s.dr(&["backup", "--physical"]);
    assert!(
        o.status.success(),
        "{}\n--- server log ---\n{}",
        describe(&o),
        tail(&s.pg.socket_dir().join("postgres.log"), 3000)
    );
    s.mark(2);
    std::thread::sleep(Duration::from_millis(1500));
    let between = s.pg.psql("postgres", "select clock_timestamp()::text;");
    let lsn_after_3 = {
        std::thread::sleep(Duration::from_millis(1500));
        s.mark(3);
        s.pg.psql("postgres", "select pg_current_wal_insert_lsn()::text;")
    };
    std::thread::sleep(Duration::from_millis(1500));
    s.mark(4);
    s.switch_and_wait();
    s.switch_and_wait();

    // `dr status` shows the window the base backup opens.
    let o = s.dr(&["status"]);
    let shown = stdout(&o);
    assert!(
        shown.contains("recoverable ") && shown.contains("continuous from"),
        "{shown}\n{}",
        stderr(&o)
    );

    // The plan, without writing anything.
    let dir = s.pg.socket_dir().join("restored");
    let o = s.dr(&[
        "restore",
        "--at",
        &between,
        "--to-dir",
        dir.to_str().expect("utf-8"),
        "--dry-run",
    ]);
    assert_success(&o);
    let plan = stdout(&o);
    assert!(
        plan.contains("base backup") && plan.contains("timeline      1"),
        "{plan}"
    );
    assert!(!dir.exists(), "--dry-run wrote {}", dir.display());

    // A time between marks 2 and 3: exactly 1 and 2, proven by --start.
    let o = s.dr(&[
        "restore",
        "--at",
        &between,
        "--to-dir",
        dir.to_str().expect("utf-8"),
        "--start",
    ]);
    assert_success(&o);
    let err = stderr(&o);
    assert!(err.contains("recovery reached the target"), "{err}");
    assert!(stdout(&o).contains("start it with:"), "{}", stdout(&o));
    let conf = std::fs::read_to_string(dir.join("postgresql.auto.conf")).expect("auto.conf");
    assert!(conf.contains("recovery_target_timeline = '1'"), "{conf}");
    assert!(
        !conf.contains("DR_SIGNING") && !conf.contains("AGE-SECRET"),
        "{conf}"
    );
    assert_eq!(marks_of_copy(&s.pg, &dir), "1,2");

    // A non-empty directory is refused; nothing in it changes.
    let o = s.dr(&[
        "restore",
        "--at",
        &between,
        "--to-dir",
        dir.to_str().expect("utf-8"),
    ]);
    assert_exit_code(&o, 7);
    assert!(stderr(&o).contains("not empty"), "{}", stderr(&o));

    // An LSN just after mark 3: 1, 2 and 3.
    let dir2 = s.pg.socket_dir().join("restored-lsn");
    let o = s.dr(&[
        "restore",
        "--at",
        &lsn_after_3,
        "--to-dir",
        dir2.to_str().expect("utf-8"),
        "--start",
    ]);
    assert_success(&o);
    assert_eq!(marks_of_copy(&s.pg, &dir2), "1,2,3");

    // A base backup of another cluster under this target is refused before anything is
    // uploaded: its WAL could never recover it.
    let other = Postgres::start_with_bin_dir(s.pg.bin_dir());
    let text = std::fs::read_to_string(&s.cfg).expect("config");
    let other_cfg = s.home.join("other.toml");
    std::fs::write(
        &other_cfg,
        text.replace(&s.pg.url("postgres"), &other.url("postgres")),
    )
    .expect("config");
    let before = files_under(&s.home.join("repo")).len();
    let o = s.ws.dr(
        &other_cfg,
        &[
            "--env-file",
            s.env_file.to_str().expect("utf-8"),
            "backup",
            "--physical",
        ],
    );
    assert_exit_code(&o, 7);
    assert!(
        stderr(&o).contains("another cluster") || stderr(&o).contains("system"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        files_under(&s.home.join("repo")).len(),
        before,
        "a refused base backup wrote objects"
    );

    // Before the base backup: outside the window, and it says the window.
    let o = s.dr(&[
        "restore",
        "--at",
        "2001-01-01T00:00:00Z",
        "--to-dir",
        s.home.join("x").to_str().expect("utf-8"),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("recoverable from"), "{}", stderr(&o));
}

#[test]
fn postgres_15_recovers_to_a_time_and_an_lsn() {
    recovers_to_a_time_and_an_lsn(Postgres::start());
}

#[test]
fn postgres_17_recovers_to_a_time_and_an_lsn() {
    let Some(bin) = pg_bin_dir(17) else {
        eprintln!("skipped: no PostgreSQL 17 binaries (ci/setup.sh installs them)");
        return;
    };
    recovers_to_a_time_and_an_lsn(Postgres::start_with_bin_dir(&bin));
}

/// A recovered copy promoted with archiving on writes timeline 2 into the same target (its
/// history file first); recovery to a point on timeline 2 follows the switch: the rows of
/// timeline 1 before the switch, then the copy's own.
#[test]
fn postgres_15_recovers_onto_a_promoted_copys_timeline() {
    let _heavy = one_heavy_test_at_a_time();
    let s = setup(Postgres::start());
    s.mark(1);
    let o = s.dr(&["backup", "--physical"]);
    assert_success(&o);
    s.mark(2);
    std::thread::sleep(Duration::from_millis(1500));
    let between = s.pg.psql("postgres", "select clock_timestamp()::text;");
    std::thread::sleep(Duration::from_millis(1500));
    s.mark(3);
    s.switch_and_wait();

    let first = s.pg.socket_dir().join("first");
    let o = s.dr(&[
        "restore",
        "--at",
        &between,
        "--to-dir",
        first.to_str().expect("utf-8"),
    ]);
    assert_success(&o);
    // The copy archives like the original (archive_command came with the base backup).
    let copy = Copy::start(&s.pg, &first, true);
    assert_eq!(copy.marks(), "1,2");
    assert_eq!(
        copy.psql("select timeline_id from pg_control_checkpoint()"),
        "2"
    );
    copy.psql("insert into marks (n) values (10);");
    let lsn = copy.psql("select pg_current_wal_insert_lsn()::text;");
    copy.psql("insert into ticks values (1);");
    let segment = copy.psql("select pg_walfile_name(pg_switch_wal());");
    let archived = wait_until(Duration::from_secs(120), || {
        copy.psql("select coalesce(last_archived_wal, '') from pg_stat_archiver;") >= segment
    });
    assert!(
        archived,
        "{segment} not archived by the copy\n{}",
        tail(&copy.log, 4000)
    );
    copy.stop();

    let second = s.pg.socket_dir().join("second");
    let o = s.dr(&[
        "restore",
        "--at",
        &lsn,
        "--to-dir",
        second.to_str().expect("utf-8"),
        "--start",
    ]);
    assert_success(&o);
    assert!(stderr(&o).contains("timeline      2"), "{}", stderr(&o));
    assert_eq!(marks_of_copy(&s.pg, &second), "1,2,10");

    // A drill to a time of timeline 1 after the fork (timeline 2 exists by then in the
    // archive) recovers timeline 1 — mark 3 included — and says so; it does not follow
    // timeline 2 to a point that never held mark 3.
    let after3 = s.pg.psql(
        "postgres",
        "select (at + interval '1 millisecond')::text from marks where n = 3;",
    );
    let o = s.dr(&["verify", "--pitr", "--at", &after3, "--json"]);
    assert_success(&o);
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    let drill = &report["record"]["drill"];
    assert_eq!(drill["timeline"], 1, "{report}");
    let mark3 = s.pg.psql(
        "postgres",
        "select to_char(at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') from marks where n = 3;",
    );
    assert!(
        drill["to"].as_str().is_some_and(|t| t >= mark3.as_str()),
        "the drill stopped before mark 3 ({mark3}): {report}"
    );
}

/// `runbooks/point-in-time.md`, verbatim: status, plan, recovery with `--start`, then the
/// copy started by hand holds exactly the rows before the point.
#[test]
fn the_point_in_time_runbook_runs_verbatim() {
    let _heavy = one_heavy_test_at_a_time();
    let s = setup(Postgres::start());
    s.mark(1);
    assert_success(&s.dr(&["backup", "--physical"]));
    s.mark(2);
    std::thread::sleep(Duration::from_millis(1500));
    let at = s.pg.psql("postgres", "select clock_timestamp()::text;");
    std::thread::sleep(Duration::from_millis(1500));
    s.mark(3);
    s.switch_and_wait();
    let dir = s.pg.socket_dir().join("runbook-restore");
    let port = free_port();
    let path = format!(
        "{}:{}:{}",
        s.pg.bin_dir().display(),
        dr_bin()
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = crate::runbooks::run_script(
        &s.ws,
        "point-in-time.sh",
        &crate::runbooks::script("point-in-time.md", ""),
        &[
            ("DR_CONFIG", s.cfg.display().to_string()),
            ("DR_ENV_FILE", s.env_file.display().to_string()),
            ("TARGET", "app".into()),
            ("AT", at),
            ("DIR", dir.display().to_string()),
            ("PORT", port.to_string()),
            ("PATH", path),
        ],
    );
    assert!(
        out.status.success(),
        "{}\n--- copy log ---\n{}",
        describe(&out),
        tail(&dir.join("postgresql.log"), 3000)
    );
    let copy = Copy {
        pg: &s.pg,
        dir: dir.clone(),
        port,
        socket: s.pg.socket_dir().to_path_buf(),
        log: dir.join("postgresql.log"),
    };
    assert_eq!(copy.marks(), "1,2");
    copy.stop();
}

/// Start the recovered copy in `dir` (recovery ends with promotion), run `sql` in it, stop it.
pub(crate) fn query_copy(pg: &Postgres, dir: &Path, sql: &str) -> String {
    let copy = Copy::start(pg, dir, false);
    let out = copy.psql(sql);
    copy.stop();
    out
}
