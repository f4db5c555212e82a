//! End-to-end: backups in sections (`dr backup --jobs 3`) restored as streams straight into
//! PostgreSQL, with a temp dir far smaller than the archive: exact copies (table digests,
//! sequences, large objects, constraints, indexes, policies), a corrupted middle stream that
//! leaves nothing behind, `--clean` over an existing copy with circular foreign keys and
//! partitions, `--check-first`, a selective restore, `--to-file` in sections.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

/// A tmpfs of `size` mounted on a fresh dir, unmounted when dropped; `None` when mounting is
/// not allowed here (not root, no CAP_SYS_ADMIN).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::Builder::new()
            .prefix("dr-tmpfs-")
            .tempdir()
            .ok()?;
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs { dir })
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// A small temp dir for restores: an 8 MiB tmpfs when this machine allows one, otherwise
/// a plain temp dir (the figure the plan states is still checked).
fn small_temp_dir(ws: &Workspace) -> (Option<Tmpfs>, PathBuf) {
    match Tmpfs::mount("8m") {
        Some(t) => {
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
        None => {
            eprintln!("note: cannot mount a tmpfs here; using a plain temp dir");
            let p = ws.path().join("tmp");
            std::fs::create_dir_all(&p).expect("mkdir");
            (None, p)
        }
    }
}

/// Enough data that the archive is far larger than the 8 MiB temp dir.
const BULK: &str = "CREATE TABLE public.bulk (id int PRIMARY KEY, body text);
INSERT INTO public.bulk SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 60000) g;
ANALYZE public.bulk;";

fn load_source(pg: &Postgres, db: &str) {
    pg.create_db(db);
    pg.load_hard_cases(db);
    pg.psql(db, STREAMING_HARD_CASES_SQL);
    pg.psql(db, BULK);
}

/// Everything a restore must bring back, beyond the rows: sequence values, large objects,
/// constraints, indexes, policies, RLS flags, generated columns.
fn catalog_fingerprint(pg: &Postgres, db: &str) -> BTreeMap<String, String> {
    let user =
        "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'";
    let q = |name: &str, sql: String| (name.to_string(), pg.psql(db, &sql));
    [
        q(
            "sequences",
            "SELECT string_agg(schemaname || '.' || sequencename || '=' || coalesce(last_value::text, '-'), ',' ORDER BY schemaname, sequencename) FROM pg_sequences".into(),
        ),
        q(
            "large objects",
            "SELECT string_agg(oid::text || ':' || encode(lo_get(oid), 'escape'), ',' ORDER BY oid) FROM pg_largeobject_metadata".into(),
        ),
        q(
            "constraints",
            format!("SELECT string_agg(x, ',' ORDER BY x) FROM (SELECT c.contype::text || ' ' || c.conrelid::regclass::text || ' ' || c.conname AS x FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace WHERE {user}) s"),
        ),
        q(
            "indexes",
            format!("SELECT string_agg(c.relname, ',' ORDER BY c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('i', 'I') AND {user}"),
        ),
        q(
            "policies",
            "SELECT string_agg(x, ',' ORDER BY x) FROM (SELECT schemaname || '.' || tablename || '.' || policyname AS x FROM pg_policies) s".into(),
        ),
        q(
            "rls",
            format!("SELECT string_agg(c.relname, ',' ORDER BY c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relrowsecurity AND {user}"),
        ),
        q(
            "generated",
            "SELECT string_agg(x, ',' ORDER BY x) FROM (SELECT attrelid::regclass::text || '.' || attname AS x FROM pg_attribute WHERE attgenerated <> '' AND NOT attisdropped) s".into(),
        ),
        q(
            "types",
            format!("SELECT string_agg(x, ',' ORDER BY x) FROM (SELECT n.nspname || '.' || t.typname || ':' || t.typtype::text AS x FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE t.typtype IN ('e', 'd') AND {user}) s"),
        ),
    ]
    .into_iter()
    .collect()
}

fn assert_same(source: &Postgres, src_db: &str, copy: &Postgres, db: &str) {
    assert_eq!(
        source.table_digests(src_db),
        copy.table_digests(db),
        "table contents of {db}"
    );
    assert_eq!(
        catalog_fingerprint(source, src_db),
        catalog_fingerprint(copy, db),
        "catalog of {db}"
    );
}

struct Env {
    ws: Workspace,
    pg: Postgres,
    cfg: PathBuf,
    repo: PathBuf,
}

/// A source database with every hard case and a directory repository.
fn dir_env(bin_dir: &Path) -> Env {
    let ws = Workspace::new();
    let pg = Postgres::start_with_bin_dir(bin_dir);
    load_source(&pg, "app");
    let (identity, recipient) = ws.keygen();
    let repo = ws.path().join("repo");
    let extra = format!("[backup]\npg_bin_dir = \"{}\"\n", bin_dir.display());
    let cfg = ws.write(
        "dr.toml",
        &dir_config_text(&repo, &recipient, Some(&identity), &pg.url("app"), &extra),
    );
    Env { ws, pg, cfg, repo }
}

fn backup3(ws: &Workspace, cfg: &Path) {
    let out = ws.dr(cfg, &["backup", "--jobs", "3"]);
    assert_success(&out);
}

/// The stored object `name` of the only backup in a directory repository.
fn object(repo: &Path, name: &str) -> PathBuf {
    let manifest = manifests(repo).into_iter().next().expect("a backup");
    manifest.parent().expect("dir").join(name)
}

fn flip_middle_byte(path: &Path) {
    let mut bytes = std::fs::read(path).expect("read object");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(path, bytes).expect("write object");
}

fn db_exists(pg: &Postgres, db: &str) -> bool {
    pg.psql(
        "postgres",
        &format!("select count(*) from pg_database where datname = '{db}'"),
    ) == "1"
}

/// `dr backup --jobs 3`, then `dr restore --jobs 3` with an 8 MiB temp dir into a new
/// database: an exact copy, and the plan's temp figure is the post-data archive only.
fn round_trip(e: &Env) {
    backup3(&e.ws, &e.cfg);
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(manifests(&e.repo)[0].clone()).expect("manifest"),
    )
    .expect("json");
    let objects = manifest["objects"].as_array().cloned().unwrap_or_default();
    let data: Vec<_> = objects.iter().filter(|o| o["role"] == "data").collect();
    assert_eq!(data.len(), 3, "three data streams: {objects:?}");
    let raw = |role: &str| -> u64 {
        objects
            .iter()
            .filter(|o| o["role"] == role)
            .map(|o| o["raw_bytes"].as_u64().unwrap_or(0))
            .sum()
    };
    let archive = raw("pre_data") + raw("data") + raw("post_data");
    assert!(
        archive > 8 * 1024 * 1024,
        "the archive ({archive} B) must not fit the temp dir"
    );

    let (_tmpfs, tmp) = small_temp_dir(&e.ws);
    let tmp_arg = tmp.display().to_string();
    let url = e.pg.url("copy");
    let out = e.ws.dr(
        &e.cfg,
        &[
            "restore",
            "--to",
            &url,
            "--jobs",
            "3",
            "--temp-dir",
            &tmp_arg,
            "--dry-run",
            "--json",
        ],
    );
    assert_success(&out);
    let plan: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(
        plan["plan"]["temp_bytes_needed"].as_u64(),
        Some(raw("post_data")),
        "{plan}"
    );
    assert_eq!(plan["plan"]["data_streams"].as_u64(), Some(3));
    assert_eq!(plan["plan"]["check_first"], false);

    let out = e.ws.dr(
        &e.cfg,
        &[
            "restore",
            "--to",
            &url,
            "--jobs",
            "3",
            "--temp-dir",
            &tmp_arg,
            "--yes",
        ],
    );
    assert_success(&out);
    assert_same(&e.pg, "app", &e.pg, "copy");
    assert_eq!(
        std::fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0),
        0,
        "the temp dir is left empty"
    );
}

#[test]
fn three_streams_restore_as_an_exact_copy_through_a_small_temp_dir_from_a_directory() {
    let e = dir_env(&default_pg_bin_dir());
    round_trip(&e);
}

#[test]
fn three_streams_restore_on_postgres_18() {
    match pg_bin_dir(18) {
        Some(dir) => round_trip(&dir_env(&dir)),
        None => eprintln!("skipped: no PostgreSQL 18 binaries (ci/setup.sh installs them)"),
    }
}

#[test]
fn three_streams_restore_as_an_exact_copy_from_seaweedfs() {
    let ws = Workspace::new();
    let pg = Postgres::start();
    load_source(&pg, "app");
    let weed = SeaweedFs::start();
    weed.create_bucket("stream");
    let (identity, recipient) = ws.keygen();
    let cfg = ws.write(
        "dr.toml",
        &format!(
            "[repository]\nurl = \"s3://stream/dr\"\nendpoint = \"{}\"\npath_style = true\n[encryption]\nrecipients = [\"{recipient}\"]\nidentity_file = \"{}\"\n[[targets]]\nname = \"app\"\nurl = \"{}\"\n",
            weed.endpoint(),
            identity.display(),
            pg.url("app")
        ),
    );
    backup3(&ws, &cfg);
    let keys = weed.object_keys("stream");
    for k in ["pre-data.zst.age", "data-3.zst.age", "post-data.zst.age"] {
        assert!(keys.iter().any(|x| x.ends_with(k)), "{k} in {keys:?}");
    }
    let (_tmpfs, tmp) = small_temp_dir(&ws);
    let other = Postgres::start();
    let out = ws.dr(
        &cfg,
        &[
            "restore",
            "--to",
            &other.url("copy"),
            "--jobs",
            "3",
            "--temp-dir",
            &tmp.display().to_string(),
            "--yes",
        ],
    );
    assert_success(&out);
    assert_same(&pg, "app", &other, "copy");

    // A flipped byte in the middle data stream: exit 4, and the database is gone.
    let key = keys
        .iter()
        .find(|k| k.ends_with("data-2.zst.age"))
        .expect("data-2");
    let mut bytes = weed.fetch("stream", key);
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    weed.put_raw("stream", key, &bytes);
    let out = ws.dr(
        &cfg,
        &[
            "restore",
            "--to",
            &other.url("broken"),
            "--jobs",
            "3",
            "--yes",
        ],
    );
    assert_exit_code(&out, 4);
    assert!(stderr(&out).contains("data-2.zst.age"), "{}", stderr(&out));
    assert!(stderr(&out).contains("was dropped"), "{}", stderr(&out));
    assert!(!db_exists(&other, "broken"), "the created database is left");
}

#[test]
fn a_corrupt_middle_stream_stops_every_stream_and_drops_the_created_database() {
    let e = dir_env(&default_pg_bin_dir());
    backup3(&e.ws, &e.cfg);
    flip_middle_byte(&object(&e.repo, "data-2.zst.age"));
    let out = e.ws.dr(
        &e.cfg,
        &[
            "restore",
            "--to",
            &e.pg.url("broken"),
            "--jobs",
            "3",
            "--yes",
        ],
    );
    assert_exit_code(&out, 4);
    let err = stderr(&out);
    assert!(err.contains("data-2.zst.age"), "{err}");
    assert!(
        err.contains("broken that this restore created was dropped"),
        "{err}"
    );
    assert!(!db_exists(&e.pg, "broken"));
    // No session of the restore is left behind.
    assert_eq!(
        e.pg.psql(
            "postgres",
            "select count(*) from pg_stat_activity where application_name like 'dr-restore-%'"
        ),
        "0"
    );
}

#[test]
fn clean_over_an_existing_copy_and_check_first_keeps_a_damaged_backup_away() {
    let e = dir_env(&default_pg_bin_dir());
    backup3(&e.ws, &e.cfg);
    let url = e.pg.url("copy");
    assert_success(
        &e.ws
            .dr(&e.cfg, &["restore", "--to", &url, "--jobs", "3", "--yes"]),
    );
    // The copy drifts: rows change, a table outside the backup references one inside it.
    e.pg.psql(
        "copy",
        "delete from inventory.event_notes where id % 2 = 0; update public.bulk set body = 'x' where id < 100; \
         create table public.outside (id int primary key, shelf int references inventory.shelves (id)); \
         insert into public.outside values (1, 1);",
    );
    let out = e.ws.dr(
        &e.cfg,
        &["restore", "--to", &url, "--jobs", "3", "--clean", "--yes"],
    );
    assert_success(&out);
    assert!(
        stderr(&out).contains("outside_shelf_fkey"),
        "the dropped foreign key is said: {}",
        stderr(&out)
    );
    let mut got = e.pg.table_digests("copy");
    assert!(got.remove("public.outside").is_some());
    assert_eq!(got, e.pg.table_digests("app"));
    let mut want = catalog_fingerprint(&e.pg, "app");
    let mut have = catalog_fingerprint(&e.pg, "copy");
    for m in [&mut want, &mut have] {
        m.remove("constraints");
        m.remove("indexes");
    }
    assert_eq!(want, have);

    // A damaged stream: --check-first (the default for an existing target) refuses before
    // anything in the copy changes.
    let before = e.pg.table_digests("copy");
    flip_middle_byte(&object(&e.repo, "data-2.zst.age"));
    let out = e.ws.dr(
        &e.cfg,
        &[
            "restore",
            "--to",
            &url,
            "--jobs",
            "3",
            "--clean",
            "--dry-run",
        ],
    );
    assert_success(&out);
    assert!(
        stdout(&out).contains("check first  yes"),
        "{}",
        stdout(&out)
    );
    let out = e.ws.dr(
        &e.cfg,
        &["restore", "--to", &url, "--jobs", "3", "--clean", "--yes"],
    );
    assert_exit_code(&out, 4);
    assert!(
        stderr(&out).contains("nothing was changed"),
        "{}",
        stderr(&out)
    );
    assert_eq!(e.pg.table_digests("copy"), before, "the target was touched");

    // Without the check the same failure is found while streaming: the copy is partially
    // restored, and the message says how to restore it again.
    let out = e.ws.dr(
        &e.cfg,
        &[
            "restore",
            "--to",
            &url,
            "--jobs",
            "3",
            "--clean",
            "--no-check-first",
            "--yes",
        ],
    );
    assert_exit_code(&out, 4);
    let err = stderr(&out);
    assert!(err.contains("PARTIALLY restored"), "{err}");
    assert!(err.contains("--clean"), "{err}");
    // The retry shows the plan and asks again: no --yes in the hint.
    let hint = err
        .lines()
        .find(|l| l.contains("to restore it again"))
        .unwrap_or("");
    assert!(!hint.contains("--yes"), "{hint}");
}

#[test]
fn a_selective_restore_reads_only_the_streams_it_needs() {
    let e = dir_env(&default_pg_bin_dir());
    backup3(&e.ws, &e.cfg);
    let (_tmpfs, tmp) = small_temp_dir(&e.ws);
    let out = e.ws.dr(
        &e.cfg,
        &[
            "restore",
            "--table",
            "inventory.items",
            "--to",
            &e.pg.url("one"),
            "--temp-dir",
            &tmp.display().to_string(),
            "--yes",
        ],
    );
    assert_success(&out);
    let counts = e.pg.row_counts("one");
    let with_rows: Vec<_> = counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(t, _)| t.clone())
        .collect();
    assert_eq!(with_rows, ["inventory.items"]);
    assert_eq!(
        e.pg.table_digests("one")["inventory.items"],
        e.pg.table_digests("app")["inventory.items"]
    );
    // Its foreign key to the table not restored is skipped and named.
    assert!(stderr(&out).contains("items_shelf_fk"), "{}", stderr(&out));
    // Its serial goes on where the source's stopped.
    assert_eq!(
        e.pg.psql("one", "select last_value from inventory.items_id_seq"),
        "2000"
    );
    let out = e.ws.dr(
        &e.cfg,
        &[
            "restore",
            "--table",
            "nope.nothing",
            "--to",
            &e.pg.url("none"),
            "--yes",
        ],
    );
    assert_exit_code(&out, 2);
    assert!(!db_exists(&e.pg, "none"));
}

#[test]
fn to_file_writes_each_section_and_the_restore_order() {
    let e = dir_env(&default_pg_bin_dir());
    backup3(&e.ws, &e.cfg);
    let dir = e.ws.path().join("sections");
    let out = e.ws.dr(
        &e.cfg,
        &["restore", "--to-file", dir.to_str().unwrap_or_default()],
    );
    assert_success(&out);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("dir")
        .flatten()
        .map(|d| d.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "1-pre-data.dump",
            "2-data-1.dump",
            "2-data-2.dump",
            "2-data-3.dump",
            "3-post-data.dump",
            "README.txt"
        ]
    );
    let readme = std::fs::read_to_string(dir.join("README.txt")).expect("readme");
    assert!(readme.contains("pg_restore"), "{readme}");
    // The README's order, by hand, makes an exact copy.
    e.pg.create_db("byhand");
    let pg_restore = e.pg.bin_dir().join("pg_restore");
    let mut files = vec![dir.join("1-pre-data.dump")];
    for k in 1..=3 {
        files.push(dir.join(format!("2-data-{k}.dump")));
    }
    files.push(dir.join("3-post-data.dump"));
    for f in files {
        let out = Command::new(&pg_restore)
            .args(["--exit-on-error", "-d", &e.pg.url("byhand")])
            .arg(&f)
            .output()
            .expect("pg_restore");
        assert_success(&out);
    }
    assert_same(&e.pg, "app", &e.pg, "byhand");
    // A directory that is not empty is refused.
    let out = e.ws.dr(
        &e.cfg,
        &["restore", "--to-file", dir.to_str().unwrap_or_default()],
    );
    assert_exit_code(&out, 2);
}

/// The total size of the files under `dir`, now.
fn bytes_under(dir: &Path) -> u64 {
    files_under(dir)
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

/// Issue 17 item 9: the temp disk `--dry-run` states is an upper bound of what the restore
/// writes there. It used to leave out the `pg_restore --use-list` files written next to
/// the staged sections (a few hundred bytes over for a whole restore).
#[test]
fn the_temp_disk_the_plan_states_bounds_what_the_restore_writes() {
    let e = dir_env(&default_pg_bin_dir());
    backup3(&e.ws, &e.cfg);
    for (selection, db) in [(&[][..], "whole"), (&["--table", "public.bulk"][..], "one")] {
        let tmp = e.ws.path().join(format!("tmp-{db}"));
        std::fs::create_dir_all(&tmp).expect("mkdir");
        let tmp_s = tmp.display().to_string();
        let url = e.pg.url(db);
        let mut args = vec!["restore", "--to", &url, "--temp-dir", &tmp_s];
        args.extend_from_slice(selection);
        let mut dry = args.clone();
        dry.extend_from_slice(&["--dry-run", "--json"]);
        let out = e.ws.dr(&e.cfg, &dry);
        assert_success(&out);
        let plan: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
        let bound = plan["plan"]["temp_bytes_needed"].as_u64().expect("bound");

        args.push("--yes");
        let mut cmd = e.ws.dr_command(&e.cfg, &args);
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("spawn");
        let mut peak = 0;
        while child.try_wait().expect("try_wait").is_none() {
            peak = peak.max(bytes_under(&tmp));
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let out = child.wait_with_output().expect("wait");
        assert_success(&out);
        assert!(peak > 0, "{db}: nothing seen in the temp dir");
        assert!(
            peak <= bound,
            "{db}: the restore wrote {peak} bytes in its temp dir, the plan said at most {bound}"
        );
    }
}
