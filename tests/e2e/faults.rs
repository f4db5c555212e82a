//! End-to-end faults at 3 a.m. (issue 8), each against real PostgreSQL and a real repository:
//! a stopped restore leaves no writer behind; a partition or a held lock ends in a clear
//! error within the configured bounds; usage errors come before any side effect; secrets in
//! URLs are refused; documented exit codes for damaged and missing objects and full disks.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

struct Env {
    ws: Workspace,
    pg: Postgres,
    repo: PathBuf,
    identity: PathBuf,
    recipient: String,
}

impl Env {
    fn new() -> Env {
        let ws = Workspace::new();
        let pg = Postgres::start();
        pg.create_db("app");
        let (identity, recipient) = ws.keygen();
        let repo = ws.path().join("repo");
        Env {
            ws,
            pg,
            repo,
            identity,
            recipient,
        }
    }

    /// A config for target `app` at `url`, with `extra` TOML appended.
    fn config_for(&self, url: &str, extra: &str) -> PathBuf {
        self.ws.write(
            "dr.toml",
            &dir_config_text(
                &self.repo,
                &self.recipient,
                Some(&self.identity),
                url,
                extra,
            ),
        )
    }

    fn config(&self, extra: &str) -> PathBuf {
        self.config_for(&self.pg.url("app"), extra)
    }

    fn db_exists(&self, db: &str) -> bool {
        self.pg.psql(
            "postgres",
            &format!("select count(*) from pg_database where datname = '{db}'"),
        ) == "1"
    }

    /// The one stored object whose name ends with `suffix`.
    fn object(&self, suffix: &str) -> PathBuf {
        files_under(&self.repo)
            .into_iter()
            .find(|p| p.to_string_lossy().ends_with(suffix))
            .unwrap_or_else(|| panic!("no {suffix} under {}", self.repo.display()))
    }
}

/// Tables big enough that `pg_restore -j 2` runs for a while, in parallel.
fn load_tables(pg: &Postgres, tables: u32, rows: u32) {
    for i in 0..tables {
        pg.psql(
            "app",
            &format!(
                "create table t{i} as select g as id, md5(g::text) as a, md5((g * 7)::text) as b from generate_series(1, {rows}) g; \
                 alter table t{i} add primary key (id); create index on t{i} (a); create index on t{i} (b);"
            ),
        );
    }
}

fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Pids of processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    let out = Command::new("pgrep")
        .args(["-f", needle])
        .output()
        .expect("pgrep");
    stdout(&out)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// pg_restore processes whose server is `pg` (their PGPORT): data streams read stdin, so
/// nothing in their command line names this test's restore.
fn pg_restores_towards(pg: &Postgres) -> Vec<String> {
    let url = pg.url("x");
    let port = url
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .unwrap_or_default()
        .to_string();
    processes_with("pg_restore")
        .into_iter()
        .filter(|pid| {
            let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            env.split(|b| *b == 0)
                .any(|kv| kv == format!("PGPORT={port}").as_bytes())
        })
        .collect()
}

fn signal(child: &Child, sig: &str) {
    assert!(Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill")
        .success());
}

fn spawn_dr(e: &Env, cfg: &Path, args: &[&str]) -> Child {
    let mut cmd = e.ws.dr_command(cfg, args);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.spawn().expect("spawn dr")
}

/// A session holding ACCESS EXCLUSIVE on `table` of `db` until the child is killed.
fn hold_lock(pg: &Postgres, db: &str, table: &str) -> Child {
    let mut c = pg.psql_command(db);
    c.args([
        "-c",
        &format!("begin; lock table {table} in access exclusive mode; select pg_sleep(600);"),
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let child = c.spawn().expect("psql");
    wait_until("the lock", Duration::from_secs(30), || {
        pg.psql(
            "postgres",
            "select count(*) from pg_locks where mode = 'AccessExclusiveLock' and locktype = 'relation' and granted",
        ) != "0"
    });
    child
}

/// End the lock holder: its client and its server session (a backend in pg_sleep does not
/// notice a lost client).
fn release_lock(pg: &Postgres, holder: &mut Child) {
    let _ = holder.kill();
    let _ = holder.wait();
    pg.psql(
        "postgres",
        "select count(pg_terminate_backend(pid)) from pg_stat_activity where query like 'begin; lock table%'",
    );
}

#[test]
fn sigterm_during_a_parallel_restore_leaves_no_process_and_no_session() {
    let e = Env::new();
    load_tables(&e.pg, 4, 300_000);
    let cfg = e.config("");
    assert_success(&e.ws.dr(&cfg, &["backup", "--jobs", "2"]));
    // An existing (empty) target: dr does not drop it when stopped, it says what is left.
    e.pg.create_db("copy");
    let tmp = e.ws.path().join("restore-tmp");
    std::fs::create_dir_all(&tmp).expect("mkdir");
    let tmp_s = tmp.to_string_lossy().into_owned();
    let mut child = spawn_dr(
        &e,
        &cfg,
        &[
            "restore",
            "--to",
            &e.pg.url("copy"),
            "--yes",
            "--jobs",
            "2",
            "--temp-dir",
            &tmp_s,
        ],
    );
    // Both workers are loading when the signal comes.
    let sessions =
        "select count(*) from pg_stat_activity where application_name like 'dr-restore-%'";
    let deadline = Instant::now() + Duration::from_secs(120);
    while e.pg.psql("postgres", sessions).parse::<i32>().unwrap_or(0) < 2 {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the restore ended ({status}) before its workers were seen");
        }
        assert!(
            Instant::now() < deadline,
            "pg_restore workers never appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(&child, "-TERM");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("PARTIALLY restored") && stderr(&out).contains("--clean"),
        "{}",
        stderr(&out)
    );
    // Right after dr exited: no pg_restore of this run, no session of it on the server.
    assert_eq!(
        pg_restores_towards(&e.pg),
        Vec::<String>::new(),
        "pg_restore outlived dr"
    );
    assert_eq!(e.pg.psql("postgres", sessions), "0", "sessions outlived dr");
    let before = e.pg.psql(
        "copy",
        "select coalesce(sum(n_tup_ins), 0) from pg_stat_user_tables",
    );
    std::thread::sleep(Duration::from_secs(2));
    let after = e.pg.psql(
        "copy",
        "select coalesce(sum(n_tup_ins), 0) from pg_stat_user_tables",
    );
    assert_eq!(
        before, after,
        "rows were still being written after dr exited"
    );
}

/// Drops every packet to and from `port` on loopback while alive: a silent partition (no
/// RST, no FIN), only for this test's server.
struct Partition {
    rules: Vec<Vec<String>>,
}

impl Partition {
    fn start(port: u16) -> Option<Partition> {
        let rules: Vec<Vec<String>> = ["--dport", "--sport"]
            .iter()
            .map(|dir| {
                [
                    "INPUT",
                    "-i",
                    "lo",
                    "-p",
                    "tcp",
                    dir,
                    &port.to_string(),
                    "-j",
                    "DROP",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect()
            })
            .collect();
        let mut p = Partition { rules: Vec::new() };
        for r in rules {
            let ok = Command::new("iptables")
                .arg("-I")
                .args(&r)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return None;
            }
            p.rules.push(r);
        }
        Some(p)
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        for r in &self.rules {
            let _ = Command::new("iptables").arg("-D").args(r).status();
        }
    }
}

/// `sql` in `db` over the server's Unix socket: it still answers while TCP is partitioned.
fn psql_over_socket(pg: &Postgres, db: &str, sql: &str) -> String {
    let mut c = pg.psql_command(db);
    c.arg("-h").arg(pg.socket_dir()).args(["-c", sql]);
    let o = run_with_timeout(&mut c, None, Duration::from_secs(60));
    assert!(o.status.success(), "psql: {}", stderr(&o));
    stdout(&o).trim().to_string()
}

#[test]
fn a_network_partition_mid_dump_fails_within_the_keepalive_bound_and_leaves_no_session_on_the_server(
) {
    let e = Env::new();
    e.pg.psql(
        "app",
        "create table filler as select g, repeat(md5(g::text), 20) as t from generate_series(1, 1500000) g;",
    );
    // libpq's own parameters, tightened for the test (defaults: about two minutes).
    let url = format!(
        "{}?keepalives_idle=1&keepalives_interval=1&keepalives_count=2&tcp_user_timeout=3000",
        e.pg.url("app")
    );
    let cfg = e.config_for(&url, "");
    let mut child = spawn_dr(&e, &cfg, &["backup"]);
    wait_until("pg_dump", Duration::from_secs(60), || {
        e.pg.psql(
            "postgres",
            "select count(*) from pg_stat_activity where query like 'COPY %'",
        ) != "0"
    });
    let Some(partition) = Partition::start(e.pg.port()) else {
        eprintln!("iptables is not usable here: skipping the partition test");
        let _ = child.kill();
        let _ = child.wait();
        return;
    };
    let started = Instant::now();
    let out = child.wait_with_output().expect("wait");
    let took = started.elapsed();
    // Still partitioned: dr could not end its sessions itself. The server must drop them
    // (the snapshot holder idle in its transaction, the pg_dumps' sending COPY) within its
    // side of the same bounds, not when its own keepalive (two hours) notices: they hold
    // table locks the application's next migration queues behind.
    let left = || {
        psql_over_socket(
            &e.pg,
            "postgres",
            "select count(*) from pg_stat_activity where datname = 'app' and pid <> pg_backend_pid()",
        )
    };
    let dropped = Instant::now();
    while left() != "0" && dropped.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let sessions = psql_over_socket(
        &e.pg,
        "postgres",
        "select string_agg(format('%s %s %s', application_name, state, left(query, 40)), '; ') from pg_stat_activity where datname = 'app'",
    );
    drop(partition);
    assert!(
        sessions.is_empty(),
        "dr's sessions are still on the server 30 s after dr exited: {sessions}"
    );
    assert!(!out.status.success(), "{}", stderr(&out));
    assert!(
        took < Duration::from_secs(60),
        "took {took:?} to notice the partition"
    );
    let err = stderr(&out);
    assert!(err.contains("backup of target `app` failed"), "{err}");
    assert!(
        files_under(&e.repo)
            .iter()
            .all(|p| !p.ends_with("manifest.json")),
        "a manifest was written"
    );
    assert!(!e.repo.join("locks/app.json").exists(), "lock not released");
    // With the network back, the next run works.
    assert_success(&e.ws.dr(&cfg, &["backup"]));
}

#[test]
fn a_table_held_in_access_exclusive_fails_the_backup_naming_table_and_session() {
    let e = Env::new();
    e.pg.psql(
        "app",
        "create table \"Orders\" (id int); insert into \"Orders\" values (1);",
    );
    let cfg = e.config("[backup]\nlock_wait_timeout_secs = 2\n");
    let mut holder = hold_lock(&e.pg, "app", "\"Orders\"");
    let started = Instant::now();
    let out = e.ws.dr(&cfg, &["backup"]);
    let took = started.elapsed();
    release_lock(&e.pg, &mut holder);
    assert_exit_code(&out, 1);
    assert!(took < Duration::from_secs(60), "took {took:?}");
    let err = stderr(&out);
    assert!(err.contains("\"Orders\""), "{err}");
    assert!(err.contains("held by pid"), "{err}");
    assert!(err.contains("pg_terminate_backend"), "{err}");
    assert!(!e.repo.join("locks/app.json").exists(), "lock not released");
    assert_success(&e.ws.dr(&cfg, &["backup"]));
}

#[test]
fn a_backup_waiting_for_a_lock_says_every_10_s_who_holds_it_and_when_it_gives_up() {
    let e = Env::new();
    e.pg.psql("app", "create table t (id int); insert into t values (1);");
    let cfg = e.config("[backup]\nlock_wait_timeout_secs = 120\n");
    let mut holder = hold_lock(&e.pg, "app", "t");
    let holder_pid = e.pg.psql(
        "postgres",
        "select pid from pg_stat_activity where query like 'begin; lock table%'",
    );
    let mut child = spawn_dr(&e, &cfg, &["backup"]);
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let reader = {
        use std::io::BufRead;
        let pipe = child.stderr.take().expect("stderr");
        let lines = std::sync::Arc::clone(&lines);
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                lines.lock().expect("lines").push(l);
            }
        })
    };
    let started = Instant::now();
    let waiting = || {
        lines
            .lock()
            .expect("lines")
            .iter()
            .find(|l| l.contains("backup waiting for a lock"))
            .cloned()
    };
    let mut line = None;
    while line.is_none() && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(200));
        line = waiting();
    }
    release_lock(&e.pg, &mut holder);
    let status = child.wait().expect("wait");
    reader.join().expect("reader");
    let all = lines.lock().expect("lines").join("\n");
    let line = line.unwrap_or_else(|| panic!("no waiting line within 20 s:\n{all}"));
    assert!(line.contains("AccessShareLock on public.t"), "{line}");
    assert!(
        line.contains(&format!("held by pid {holder_pid}")),
        "{line}"
    );
    assert!(line.contains("AccessExclusiveLock on public.t"), "{line}");
    assert!(line.contains("application `psql`"), "{line}");
    assert!(
        line.contains("lock table t in access exclusive mode"),
        "{line}"
    );
    assert!(line.contains("gives up at"), "{line}");
    assert!(line.contains("backup.lock_wait_timeout_secs"), "{line}");
    assert!(status.success(), "{all}");
}

#[test]
fn a_hung_backup_stops_at_max_duration_and_releases_the_lock() {
    let e = Env::new();
    e.pg.psql("app", "create table t (id int); insert into t values (1);");
    // No lock wait limit: only max_duration ends it.
    let cfg = e.config("[backup]\nlock_wait_timeout_secs = 0\nmax_duration = \"10s\"\n");
    let mut holder = hold_lock(&e.pg, "app", "t");
    let started = Instant::now();
    let out = e.ws.dr(&cfg, &["backup"]);
    let took = started.elapsed();
    // While the lock is still held: no session of the stopped backup is left queued behind
    // it (a killed pg_dump's backend waits on, unaware its client is gone).
    let queued = e.pg.psql(
        "postgres",
        "select count(*) from pg_stat_activity where datname = 'app' and wait_event_type = 'Lock'",
    );
    release_lock(&e.pg, &mut holder);
    assert_eq!(
        queued, "0",
        "sessions of the stopped backup still wait for the lock"
    );
    assert_exit_code(&out, 1);
    assert!(took < Duration::from_secs(40), "took {took:?}");
    assert!(stderr(&out).contains("max_duration"), "{}", stderr(&out));
    assert!(
        files_under(&e.repo)
            .iter()
            .all(|p| !p.ends_with("manifest.json")),
        "a manifest was written"
    );
    assert!(
        files_under(&e.repo.join(".dr-uploads")).is_empty(),
        "upload not aborted"
    );
    assert!(!e.repo.join("locks/app.json").exists(), "lock not released");
}

#[test]
fn a_restore_waiting_for_a_lock_says_who_holds_it_and_gives_up_at_the_limit() {
    let e = Env::new();
    e.pg.psql(
        "app",
        "create table t (id int primary key); insert into t values (1), (2);",
    );
    let cfg = e.config("[restore]\nlock_wait_timeout_secs = 14\n");
    assert_success(&e.ws.dr(&cfg, &["backup"]));
    e.pg.create_db("live");
    e.pg.psql("live", "create table t (id int primary key);");
    let mut holder = hold_lock(&e.pg, "live", "t");
    let started = Instant::now();
    let out = e.ws.dr(
        &cfg,
        &[
            "restore",
            "--to",
            &e.pg.url("live"),
            "--clean",
            "--yes",
            "--jobs",
            "1",
        ],
    );
    let took = started.elapsed();
    release_lock(&e.pg, &mut holder);
    assert_exit_code(&out, 1);
    assert!(took < Duration::from_secs(120), "took {took:?}");
    let err = stderr(&out);
    assert!(err.contains("restore waiting for a lock"), "{err}");
    assert!(err.contains("blocked by"), "{err}");
    assert!(
        err.contains("gave up waiting for a lock after 14 s"),
        "{err}"
    );
}

#[test]
fn usage_errors_are_found_before_anything_is_created() {
    let e = Env::new();
    e.pg.psql(
        "app",
        "create schema audit; create table audit.events (id int); create table t (id int);",
    );
    let cfg = e.config("");
    assert_success(&e.ws.dr(&cfg, &["backup"]));
    for (args, needle) in [
        (vec!["--table", "no_such_table"], "no_such_table"),
        (vec!["--schema", "nope"], "nope"),
        (vec!["--jobs", "0"], "jobs"),
    ] {
        let url = e.pg.url("fresh");
        let mut all = vec!["restore", "--to", &url, "--yes"];
        all.extend(args.iter().copied());
        let out = e.ws.dr(&cfg, &all);
        assert_exit_code(&out, 2);
        assert!(stderr(&out).contains(needle), "{}", stderr(&out));
        assert!(!e.db_exists("fresh"), "{args:?} created the database");
    }
    // An unknown or malformed target is a usage error naming the configured ones.
    for t in ["../../etc", "nope"] {
        let out = e.ws.dr(&cfg, &["list", "--target", t]);
        assert_exit_code(&out, 2);
        assert!(
            stderr(&out).contains("configured targets: app"),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn passwords_in_urls_are_refused_and_never_echoed() {
    let e = Env::new();
    let cfg = e.config_for(&format!("{}?password=hunter2", e.pg.url("app")), "");
    let out = e.ws.dr(&cfg, &["check"]);
    assert_exit_code(&out, 2);
    assert!(stderr(&out).contains("PGPASSWORD"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("hunter2"), "{}", stderr(&out));

    let cfg = e.config("");
    let out = e.ws.dr(
        &cfg,
        &[
            "restore",
            "--to",
            &format!("postgres://postgres:hunter2@127.0.0.1:{}/x", e.pg.port()),
            "--yes",
        ],
    );
    assert_exit_code(&out, 2);
    assert!(
        stderr(&out).contains("--to holds a password"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("hunter2"), "{}", stderr(&out));
    assert!(!e.db_exists("x"));
}

#[test]
fn unsafe_settings_are_refused_and_an_exposed_identity_is_warned_about() {
    let e = Env::new();
    for (extra, needle) in [
        ("[backup]\nzstd_level = 22\n", "zstd_level"),
        ("[lock]\nttl_secs = 0\n", "ttl_secs"),
        ("[backup]\nmax_duration = \"3x\"\n", "max_duration"),
    ] {
        let out = e.ws.dr(&e.config(extra), &["list"]);
        assert_exit_code(&out, 2);
        assert!(stderr(&out).contains(needle), "{extra}: {}", stderr(&out));
    }
    e.pg.psql("app", "create table t (id int);");
    let cfg = e.config("");
    assert_success(&e.ws.dr(&cfg, &["backup"]));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&e.identity, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = e.ws.dr(&cfg, &["show", "latest"]);
    assert_success(&out);
    assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));
}

#[test]
fn a_missing_object_is_an_integrity_failure_and_a_full_temp_disk_is_not_transient() {
    let e = Env::new();
    e.pg.psql(
        "app",
        "create table filler as select g, md5(g::text) as t from generate_series(1, 100000) g;",
    );
    let cfg = e.config("");
    assert_success(&e.ws.dr(&cfg, &["backup"]));

    // A temp dir on a 1 MiB file system: exit 1 (needs room), not 3 (retry later).
    let small = e.ws.path().join("small");
    std::fs::create_dir_all(&small).expect("mkdir");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&small)
        .status()
        .is_ok_and(|s| s.success());
    if mounted {
        // A restore streams its data; only the post-data archive needs temp space, so the
        // file system must be full, not merely small.
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=64k"])
            .arg(format!("of={}", small.join("fill").display()))
            .stderr(Stdio::null())
            .status();
        let out = e.ws.dr(
            &cfg,
            &[
                "restore",
                "--to",
                &e.pg.url("full"),
                "--yes",
                "--temp-dir",
                &small.to_string_lossy(),
            ],
        );
        let _ = Command::new("umount").arg(&small).status();
        assert_exit_code(&out, 1);
        assert!(
            stderr(&out).contains("not enough space"),
            "{}",
            stderr(&out)
        );
        assert!(!e.db_exists("full"));
    } else {
        eprintln!("cannot mount a tmpfs here: skipping the full-disk case");
    }

    std::fs::remove_file(e.object("data-1.zst.age")).expect("rm");
    let out =
        e.ws.dr(&cfg, &["restore", "--to", &e.pg.url("missing"), "--yes"]);
    assert_exit_code(&out, 4);
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
    assert!(!e.db_exists("missing"));
}

#[test]
fn verifying_a_corrupted_dump_says_damaged_with_exit_4() {
    let e = Env::new();
    e.pg.psql(
        "app",
        "create table filler as select g, md5(g::text) as t from generate_series(1, 50000) g;",
    );
    let cfg = e.config(&format!(
        "[verify]\nsandbox = \"local\"\npg_bin_dir = \"{}\"\n",
        e.pg.bin_dir().display()
    ));
    assert_success(&e.ws.dr(&cfg, &["backup"]));
    let dump = e.object("data-1.zst.age");
    let mut bytes = std::fs::read(&dump).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&dump, bytes).expect("write");
    let out = e.ws.dr(&cfg, &["verify"]);
    assert_exit_code(&out, 4);
    assert!(stderr(&out).contains("DAMAGED"), "{}", stderr(&out));
    // Recorded: the list shows the failed verification.
    let list = e.ws.dr(&cfg, &["list"]);
    assert_success(&list);
    assert!(
        stdout(&list).contains("FAILED") || stdout(&list).contains("failed"),
        "{}",
        stdout(&list)
    );
}

/// Issue 17 item 3: `dr restore --clean` while the application held a lock on a replaced
/// table waited 89 s with nothing on stderr: dr's own `--clean` statements (dropping the
/// foreign keys to the replaced tables) ran outside the sessions whose waits are reported.
#[test]
fn clean_waiting_behind_the_applications_lock_says_so_within_15_s() {
    let e = Env::new();
    e.pg.psql(
        "app",
        "create table p (id int primary key); create table c (id int primary key, p int references p); \
         insert into p values (1); insert into c values (1, 1);",
    );
    let cfg = e.config("");
    assert_success(&e.ws.dr(&cfg, &["backup"]));
    e.pg.create_db("live");
    e.pg.psql(
        "live",
        "create table p (id int primary key); create table c (id int primary key, p int references p);",
    );
    let mut holder = hold_lock(&e.pg, "live", "p");
    let mut child = spawn_dr(
        &e,
        &cfg,
        &["restore", "--to", &e.pg.url("live"), "--clean", "--yes"],
    );
    let err = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let started = Instant::now();
    let mut waiting = None;
    while started.elapsed() < Duration::from_secs(20) {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) if line.contains("waiting for a lock") => {
                waiting = Some((started.elapsed(), line));
                break;
            }
            _ => {}
        }
    }
    release_lock(&e.pg, &mut holder);
    let status = child.wait().expect("wait");
    let all = reader.join().unwrap_or_default();
    let (after, line) =
        waiting.unwrap_or_else(|| panic!("nothing said about the wait in 20 s:\n{all}"));
    assert!(
        after < Duration::from_secs(16),
        "said after {after:?}: {line}"
    );
    assert!(
        line.contains("blocked by") && line.contains("pid"),
        "{line}"
    );
    assert!(line.contains("gives up"), "{line}");
    assert_eq!(status.code(), Some(0), "{all}");
    assert_eq!(e.pg.psql("live", "select count(*) from c"), "1");
}

/// Issue 17 items 5 and 8: a restore to a server that is down exits 3 (unavailable), and a
/// mistyped host says "no such host", not "is PostgreSQL running".
#[test]
fn a_server_that_is_down_or_a_mistyped_host_exits_3_and_says_which() {
    let e = Env::new();
    e.pg.psql("app", "create table t (id int); insert into t values (1);");
    let cfg = e.config("");
    assert_success(&e.ws.dr(&cfg, &["backup"]));
    let down = format!("postgres://postgres@127.0.0.1:{}/copy", free_port());
    let out = e.ws.dr(&cfg, &["restore", "--to", &down, "--yes"]);
    assert_exit_code(&out, 3);
    assert!(
        stderr(&out).contains("Connection refused"),
        "{}",
        stderr(&out)
    );
    let typo = "postgres://postgres@no-such-host.invalid:5432/copy";
    let out = e.ws.dr(&cfg, &["restore", "--to", typo, "--yes"]);
    assert_exit_code(&out, 3);
    let err = stderr(&out);
    assert!(err.contains("no such host `no-such-host.invalid`"), "{err}");
    assert!(!err.contains("is PostgreSQL running"), "{err}");
}

/// Issue 17 item 4: a restore into a new database that fails in the server (the disk filled,
/// here the temp file limit an index build hits) left the database it created, "partially
/// restored". It is dropped: the server is as it was.
#[test]
fn a_restore_that_fails_in_the_server_drops_the_database_it_created() {
    let e = Env::new();
    load_tables(&e.pg, 1, 200_000);
    let cfg = e.config("");
    assert_success(&e.ws.dr(&cfg, &["backup"]));
    e.pg.psql(
        "postgres",
        "alter role postgres set temp_file_limit = '64kB'; alter role postgres set maintenance_work_mem = '1MB';",
    );
    let out =
        e.ws.dr(&cfg, &["restore", "--to", &e.pg.url("full"), "--yes"]);
    e.pg.psql(
        "postgres",
        "alter role postgres reset temp_file_limit; alter role postgres reset maintenance_work_mem;",
    );
    assert_exit_code(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("temp_file_limit"), "{err}");
    assert!(err.contains("created was dropped"), "{err}");
    assert!(!err.contains("partially restored"), "{err}");
    assert!(!e.db_exists("full"), "the created database was left: {err}");
}

/// Issue 17 item 4: the server dies mid-restore into a new database: dr cannot drop what it
/// created, says so, and prints the exact `DROP DATABASE` to run.
#[test]
fn a_server_gone_mid_restore_gets_the_drop_database_to_run() {
    let e = Env::new();
    load_tables(&e.pg, 2, 300_000);
    let cfg = e.config("");
    assert_success(&e.ws.dr(&cfg, &["backup", "--jobs", "2"]));
    let child = spawn_dr(
        &e,
        &cfg,
        &["restore", "--to", &e.pg.url("gone"), "--yes", "--jobs", "2"],
    );
    let data_dir = e.pg.psql("postgres", "show data_directory");
    let sessions =
        "select count(*) from pg_stat_activity where application_name like 'dr-restore-%'";
    wait_until("the restore's sessions", Duration::from_secs(120), || {
        e.pg.psql("postgres", sessions) != "0"
    });
    let pid = std::fs::read_to_string(format!("{data_dir}/postmaster.pid"))
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    // Immediate shutdown: every backend ends at once, the server is gone.
    assert!(Command::new("kill")
        .args(["-QUIT", &pid])
        .status()
        .expect("kill")
        .success());
    let out = child.wait_with_output().expect("wait");
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("could not be dropped"), "{err}");
    assert!(err.contains(r#"run: DROP DATABASE "gone";"#), "{err}");
}

/// Issue 17 item 5: a `--clean` restore over an existing database interrupted during
/// pg_restore says the target is partially restored and gives the command to retry.
#[test]
fn an_interrupted_clean_restore_says_partially_restored_and_how_to_retry() {
    let e = Env::new();
    load_tables(&e.pg, 2, 300_000);
    let cfg = e.config("");
    assert_success(&e.ws.dr(&cfg, &["backup", "--jobs", "2"]));
    e.pg.create_db("copy");
    e.pg.psql("copy", "create table t0 (id int);");
    let child = spawn_dr(
        &e,
        &cfg,
        &[
            "restore",
            "--to",
            &e.pg.url("copy"),
            "--clean",
            "--yes",
            "--jobs",
            "2",
        ],
    );
    let sessions =
        "select count(*) from pg_stat_activity where application_name like 'dr-restore-%'";
    wait_until("the restore's sessions", Duration::from_secs(120), || {
        e.pg.psql("postgres", sessions) != "0"
    });
    signal(&child, "-INT");
    let out = child.wait_with_output().expect("wait");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("PARTIALLY restored"), "{err}");
    assert!(
        err.contains("dr restore ") && err.contains("--clean"),
        "{err}"
    );
    assert!(!err.contains("aborting uploads"), "{err}");
}
