//! The runbooks cannot rot: every ```bash block in `runbooks/*.md` is run here, verbatim, in
//! document order, against real servers, and the result is compared with the source.
//!
//! Blocks tagged ```bash <scenario> (or ```bash <scenario> <scenario> …, a block several
//! scenarios share) run only for those scenarios; ```text/```sql are prose.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

/// The bash blocks of `runbook` for `scenario` ("" = untagged blocks only), joined.
pub(crate) fn script(runbook: &str, scenario: &str) -> String {
    blocks(runbook, |info| {
        info == "bash" || (!scenario.is_empty() && tagged(info, scenario))
    })
}

/// Only the ```bash <scenario> blocks of `runbook`: a scenario replacing the main path.
pub(crate) fn scenario_only(runbook: &str, scenario: &str) -> String {
    blocks(runbook, |info| tagged(info, scenario))
}

fn tagged(info: &str, scenario: &str) -> bool {
    info.strip_prefix("bash ")
        .is_some_and(|tags| tags.split_whitespace().any(|t| t == scenario))
}

/// The fenced blocks of `runbook` whose info string `wanted` accepts, joined.
fn blocks(runbook: &str, wanted: impl Fn(&str) -> bool) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("runbooks")
        .join(runbook);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = String::new();
    let mut on = false;
    for line in text.lines() {
        if let Some(info) = line.trim().strip_prefix("```") {
            on = !on && wanted(info.trim());
            continue;
        }
        if on {
            out.push_str(line.trim_start());
            out.push('\n');
        }
    }
    assert!(!out.is_empty(), "no wanted bash blocks in {runbook}");
    out
}

pub(crate) fn run_script(
    ws: &Workspace,
    name: &str,
    script: &str,
    env: &[(&str, String)],
) -> std::process::Output {
    let file = ws.write(name, script);
    let mut cmd = Command::new("bash");
    cmd.arg("-euo")
        .arg("pipefail")
        .arg(&file)
        .current_dir(ws.path());
    for var in [
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGDATABASE",
        "PGPASSWORD",
        "DR_CONFIG",
    ] {
        cmd.env_remove(var);
    }
    // `dr` on PATH for the runbooks that use it; break-glass must not need it (checked below).
    let bin_dir = dr_bin().parent().map(Path::to_path_buf).unwrap_or_default();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // The backup host's signing key, as every harness run of dr has (an empty value in `env`
    // turns it off).
    cmd.env("PATH", path)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("DR_SIGNING_KEY_FILE", ws.signing_key());
    for (k, v) in env {
        cmd.env(k, v);
    }
    ws.run(&mut cmd)
}

/// The public half of the workspace's signing key, as `[signing] trusted` lists it.
pub(crate) fn signer(ws: &Workspace) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-y")
        .arg("-f")
        .arg(ws.signing_key())
        .output()
        .expect("ssh-keygen");
    assert_success(&out);
    stdout(&out).trim().to_string()
}

struct Source {
    ws: Workspace,
    pg: Postgres,
    cfg: PathBuf,
    repo: PathBuf,
    identity: PathBuf,
}

fn source() -> Source {
    let ws = Workspace::new();
    let pg = Postgres::start();
    pg.create_db("app");
    pg.load_hard_cases("app");
    pg.psql(
        "app",
        "create role reporter; create table public.reports (id int primary key, v text); \
         insert into reports select g, 'r' || g from generate_series(1, 3000) g; \
         alter table public.reports owner to reporter;",
    );
    let (identity, recipient) = ws.keygen();
    let repo = ws.path().join("repo");
    let cfg = ws.write(
        "dr.toml",
        &format!(
            "[repository]\nurl = \"file://{}\"\n[encryption]\nrecipients = [\"{recipient}\"]\nidentity_file = \"{}\"\n[[targets]]\nname = \"app\"\nurl = \"{}\"\n",
            repo.display(),
            identity.display(),
            pg.url("app")
        ),
    );
    assert_success(&ws.dr(&cfg, &["backup", "--jobs", "3"]));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_success(&ws.dr(&cfg, &["backup", "--jobs", "3"]));
    Source {
        ws,
        pg,
        cfg,
        repo,
        identity,
    }
}

/// Makes `pg`'s superuser `admin` (password `new-secret`) authenticate by password over
/// TCP, as a real new server's would; `postgres` stays trusted for the test's own checks.
fn require_password_for_admin(pg: &Postgres) {
    pg.psql(
        "postgres",
        "create role admin superuser login password 'new-secret';",
    );
    let hba = pg.psql("postgres", "show hba_file");
    let rules = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
    std::fs::write(
        &hba,
        format!("host all admin 127.0.0.1/32 scram-sha-256\n{rules}"),
    )
    .expect("write pg_hba.conf");
    pg.psql("postgres", "select pg_reload_conf();");
}

#[test]
fn break_glass_restores_an_exact_copy_with_only_age_zstd_and_pg_restore() {
    let s = source();
    // A second superuser with a password on the old server: the newest backup's globals.sql
    // sets it (`ALTER ROLE admin … PASSWORD`), and the new server has it too.
    s.pg.psql(
        "postgres",
        "create role admin superuser login password 'old-secret';",
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_success(&s.ws.dr(&s.cfg, &["backup", "--jobs", "3"]));
    // An unfinished backup (no manifest) must be ignored by the runbook.
    let partial = s.repo.join("app/29990101T000000Z");
    std::fs::create_dir_all(&partial).expect("mkdir");
    std::fs::write(partial.join("dump.zst.age"), b"partial").expect("write");
    let other = Postgres::start();
    require_password_for_admin(&other);
    let work = s.ws.path().join("work");
    std::fs::create_dir_all(&work).expect("mkdir");
    let body = script("break-glass.md", "");
    assert!(
        !body.lines().any(|l| l.trim_start().starts_with("dr ")),
        "break glass must not need dr"
    );
    let out = run_script(
        &s.ws,
        "break-glass.sh",
        &body,
        &[
            ("REPO", s.repo.display().to_string()),
            ("TARGET", "app".into()),
            ("IDENTITY", s.identity.display().to_string()),
            ("SIGNER", signer(&s.ws)),
            // The new server's own superuser, whose password step 5 must leave alone
            // (the old server's globals.sql sets another one for `admin`).
            (
                "PGURL",
                other.url("app").replacen("//postgres@", "//admin@", 1),
            ),
            ("PGPASSWORD", "new-secret".into()),
            ("WORK", work.display().to_string()),
        ],
    );
    assert_success(&out);
    assert_eq!(s.pg.table_digests("app"), other.table_digests("app"));
    assert_eq!(
        other.psql("app", "select last_value from public.order_seq"),
        "4242"
    );
    assert_eq!(
        other.psql(
            "app",
            "select tableowner from pg_tables where tablename = 'reports'"
        ),
        "reporter"
    );

    // A corrupted data stream stops the runbook at the digest check, before the database
    // exists.
    let newest = std::fs::read_dir(s.repo.join("app"))
        .expect("ls")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("manifest.json").exists())
        .max()
        .expect("a backup");
    assert!(newest.join("data-3.zst.age").exists(), "three data streams");
    let dump = newest.join("data-2.zst.age");
    let mut bytes = std::fs::read(&dump).expect("read");
    bytes[200] ^= 0xff;
    std::fs::write(&dump, bytes).expect("write");
    let work2 = s.ws.path().join("work2");
    std::fs::create_dir_all(&work2).expect("mkdir");
    let out = run_script(
        &s.ws,
        "break-glass-corrupt.sh",
        &body,
        &[
            ("REPO", s.repo.display().to_string()),
            ("TARGET", "app".into()),
            ("IDENTITY", s.identity.display().to_string()),
            ("SIGNER", signer(&s.ws)),
            ("PGURL", other.url("corrupt")),
            ("WORK", work2.display().to_string()),
        ],
    );
    assert!(!out.status.success(), "a corrupted dump was restored");
    assert_eq!(
        other.psql(
            "postgres",
            "select count(*) from pg_database where datname = 'corrupt'"
        ),
        "0"
    );

    // A forgery (a newer backup someone with write access put there: a copy without a valid
    // signature, or with the manifest edited) stops the runbook at the signature, before the
    // database exists.
    let mut bytes = std::fs::read(&dump).expect("read");
    bytes[200] ^= 0xff;
    std::fs::write(&dump, bytes).expect("undo the corruption");
    let forged = s.repo.join("app/29980101T000000Z");
    std::fs::create_dir_all(&forged).expect("mkdir");
    for f in std::fs::read_dir(&newest).expect("ls").flatten() {
        if f.path().is_file() {
            std::fs::copy(f.path(), forged.join(f.file_name())).expect("copy");
        }
    }
    let manifest = std::fs::read_to_string(forged.join("manifest.json")).expect("manifest");
    let id = newest
        .file_name()
        .expect("id")
        .to_string_lossy()
        .to_string();
    std::fs::write(
        forged.join("manifest.json"),
        manifest.replace(&id, "29980101T000000Z"),
    )
    .expect("write");
    for (case, remove_sig) in [("edited", false), ("unsigned", true)] {
        if remove_sig {
            std::fs::remove_file(forged.join("manifest.json.sig")).expect("rm sig");
        }
        let work3 = s.ws.path().join(format!("work-{case}"));
        std::fs::create_dir_all(&work3).expect("mkdir");
        let out = run_script(
            &s.ws,
            &format!("break-glass-{case}.sh"),
            &body,
            &[
                ("REPO", s.repo.display().to_string()),
                ("TARGET", "app".into()),
                ("IDENTITY", s.identity.display().to_string()),
                ("SIGNER", signer(&s.ws)),
                ("PGURL", other.url("forged")),
                ("WORK", work3.display().to_string()),
            ],
        );
        assert!(!out.status.success(), "a {case} forgery was restored");
        assert!(
            stdout(&out).contains("backup: 29980101T000000Z"),
            "{}",
            stdout(&out)
        );
        assert_eq!(
            other.psql(
                "postgres",
                "select count(*) from pg_database where datname = 'forged'"
            ),
            "0"
        );
    }
}

#[test]
fn database_lost_runbook_restores_into_a_new_server() {
    let s = source();
    let other = Postgres::start();
    let out = run_script(
        &s.ws,
        "database-lost.sh",
        &script("database-lost.md", "dump"),
        &[
            ("DR_CONFIG", s.cfg.display().to_string()),
            ("TARGET", "app".into()),
            ("PGURL", other.url("app")),
        ],
    );
    assert_success(&out);
    assert_eq!(s.pg.row_counts("app"), other.row_counts("app"));
    assert_eq!(s.pg.table_digests("app"), other.table_digests("app"));
}

#[test]
fn database_lost_runbook_restores_from_a_copy_when_the_primary_repository_is_gone() {
    let s = source();
    let copy = s.ws.path().join("copy");
    let mut text = std::fs::read_to_string(&s.cfg).expect("config");
    text.push_str(&format!(
        "[[copies]]\nname = \"offsite\"\nurl = \"file://{}\"\n",
        copy.display()
    ));
    std::fs::write(&s.cfg, text).expect("config");
    assert_success(&s.ws.dr(&s.cfg, &["copy"]));
    std::fs::rename(&s.repo, s.ws.path().join("repo.gone")).expect("the primary is gone");
    let other = Postgres::start();
    let out = run_script(
        &s.ws,
        "database-lost-primary-gone.sh",
        &scenario_only("database-lost.md", "primary-gone"),
        &[
            ("DR_CONFIG", s.cfg.display().to_string()),
            ("TARGET", "app".into()),
            ("COPY", "offsite".into()),
            ("PGURL", other.url("app")),
        ],
    );
    assert_success(&out);
    assert_eq!(s.pg.table_digests("app"), other.table_digests("app"));
}

#[test]
fn bad_migration_runbook_brings_back_deleted_rows_and_a_dropped_table() {
    let s = source();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let at = s.pg.psql(
        "postgres",
        "select to_char(now() at time zone 'utc', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')",
    );
    s.pg.psql("app", "delete from reports where id % 3 = 0;");
    let work = s.ws.path().join("work");
    std::fs::create_dir_all(&work).expect("mkdir");
    let env = |table: &str| {
        vec![
            ("DR_CONFIG", s.cfg.display().to_string()),
            ("TARGET", "app".to_string()),
            ("AT", at.clone()),
            ("PGURL", s.pg.url("app")),
            (
                "SIDE_URL",
                s.pg.url(&format!("side_{}", table.replace('.', "_"))),
            ),
            ("TABLE", table.to_string()),
            ("WORK", work.display().to_string()),
        ]
    };
    let out = run_script(
        &s.ws,
        "rows.sh",
        &script("bad-migration.md", "rows"),
        &env("public.reports"),
    );
    assert_success(&out);
    assert_eq!(s.pg.psql("app", "select count(*) from reports"), "3000");

    let before = s.pg.table_digests("app")["public.big"].clone();
    s.pg.psql("app", "drop table big;");
    let out = run_script(
        &s.ws,
        "dropped.sh",
        &script("bad-migration.md", "dropped-table"),
        &env("public.big"),
    );
    assert_success(&out);
    assert_eq!(s.pg.table_digests("app")["public.big"], before);
}

#[test]
fn break_glass_fetches_from_s3_with_the_aws_cli() {
    if Command::new("aws").arg("--version").output().is_err() {
        eprintln!("skipped: no aws CLI (ci/setup.sh installs it)");
        return;
    }
    let s = source();
    let weed = SeaweedFs::start();
    weed.create_bucket("breakglass");
    let text = std::fs::read_to_string(&s.cfg).expect("cfg").replace(
        &format!("url = \"file://{}\"", s.repo.display()),
        &format!(
            "url = \"s3://breakglass/prod/dr\"\nendpoint = \"{}\"\npath_style = true",
            weed.endpoint()
        ),
    );
    let cfg = s.ws.write("dr-s3.toml", &text);
    assert_success(&s.ws.dr(&cfg, &["backup"]));
    let other = Postgres::start();
    let (repo, work) = (s.ws.path().join("fetched"), s.ws.path().join("work-s3"));
    std::fs::create_dir_all(&repo).expect("mkdir");
    std::fs::create_dir_all(&work).expect("mkdir");
    let out = run_script(
        &s.ws,
        "break-glass-s3.sh",
        &script("break-glass.md", "s3-fetch"),
        &[
            ("REPO", repo.display().to_string()),
            ("S3_URL", "s3://breakglass/prod/dr".into()),
            ("AWS_ENDPOINT_URL", weed.endpoint()),
            ("AWS_ACCESS_KEY_ID", "any".into()),
            ("AWS_SECRET_ACCESS_KEY", "any".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("TARGET", "app".into()),
            ("IDENTITY", s.identity.display().to_string()),
            ("SIGNER", signer(&s.ws)),
            ("PGURL", other.url("app")),
            ("WORK", work.display().to_string()),
        ],
    );
    assert_success(&out);
    assert_eq!(s.pg.table_digests("app"), other.table_digests("app"));
}

#[test]
fn credentials_leaked_runbook_brings_back_backups_deleted_with_the_backup_hosts_credentials() {
    if Command::new("aws").arg("--version").output().is_err() {
        eprintln!("skipped: no aws CLI (ci/setup.sh installs it)");
        return;
    }
    let s = source();
    let weed = SeaweedFs::start();
    weed.create_locked_bucket("leaked");
    let text = std::fs::read_to_string(&s.cfg).expect("cfg").replace(
        &format!("url = \"file://{}\"", s.repo.display()),
        &format!(
            "url = \"s3://leaked/dr\"\n[repository.s3]\nendpoint = \"{}\"\npath_style = true\n[repository.object_lock]\nmode = \"compliance\"\ndays = 7",
            weed.endpoint()
        ),
    );
    let cfg = s.ws.write("dr-locked.toml", &text);
    assert_success(&s.ws.dr(&cfg, &["backup"]));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_success(&s.ws.dr(&cfg, &["backup"]));
    // The attacker, with the backup host's credentials: deletes every object, and tries to
    // delete every version for good (refused: they are locked).
    for key in weed.object_keys("leaked") {
        assert_success(&weed.aws(&["delete-object", "--bucket", "leaked", "--key", &key]));
    }
    for v in weed.object_versions("leaked", "dr/app/") {
        if !v.delete_marker {
            let out = weed.delete_version("leaked", &v.key, &v.version_id);
            assert!(!out.status.success(), "deleted {}", v.key);
        }
    }
    let listed = s.ws.dr(&cfg, &["list", "--json"]);
    assert_eq!(stdout(&listed).trim(), "[]");
    let other = Postgres::start();
    let out = run_script(
        &s.ws,
        "credentials-leaked.sh",
        &script("credentials-leaked.md", ""),
        &[
            ("DR_CONFIG", cfg.display().to_string()),
            ("TARGET", "app".into()),
            ("PGURL", other.url("app")),
            ("AWS_ACCESS_KEY_ID", "any".into()),
            ("AWS_SECRET_ACCESS_KEY", "any".into()),
            ("AWS_REGION", "us-east-1".into()),
        ],
    );
    assert_success(&out);
    assert!(stdout(&out).contains("undeleted"), "{}", stdout(&out));
    assert_eq!(s.pg.table_digests("app"), other.table_digests("app"));
}

#[test]
fn signing_key_leaked_runbook_keeps_the_backups_made_before_the_leak_and_no_forgery() {
    let s = source();
    // The backup host's config names its key, as the runbook expects.
    let old_key = s.ws.signing_key();
    let text = std::fs::read_to_string(&s.cfg).expect("cfg");
    let cfg = s.ws.write(
        "dr-host.toml",
        &format!("{text}[signing]\nkey_file = \"{}\"\n", old_key.display()),
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let leaked_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // The attacker, with the leaked key and the bucket: a backup of another database.
    s.pg.create_db("evil");
    s.pg.psql("evil", "create table planted (id int);");
    let attacker = s.ws.write(
        "attacker.toml",
        &text.replace(&s.pg.url("app"), &s.pg.url("evil")),
    );
    assert_success(&s.ws.dr(&attacker, &["backup"]));
    let rows = |cfg: &Path| -> Vec<(String, String)> {
        let out =
            s.ws.dr_env(cfg, &["list", "--json"], &[("DR_SIGNING_KEY_FILE", "")]);
        assert_success(&out);
        let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
        v.as_array()
            .expect("array")
            .iter()
            .map(|r| {
                (
                    r["id"].as_str().expect("id").to_string(),
                    r["trust"].as_str().expect("trust").to_string(),
                )
            })
            .collect()
    };
    let before = rows(&cfg);
    assert_eq!(before.len(), 3);
    assert!(before.iter().all(|(_, t)| t == "trusted"), "{before:?}");
    let forged = before[0].0.clone();

    let new_key = s.ws.path().join("keys/signing-new.key");
    std::fs::create_dir_all(new_key.parent().expect("dir")).expect("mkdir");
    let out = run_script(
        &s.ws,
        "signing-key-leaked.sh",
        &script("signing-key-leaked.md", ""),
        &[
            ("DR_CONFIG", cfg.display().to_string()),
            ("DR_SIGNING_KEY_FILE", String::new()),
            ("TARGET", "app".into()),
            ("OLD_KEY", old_key.display().to_string()),
            ("NEW_KEY", new_key.display().to_string()),
            ("LEAKED_AT", leaked_at),
        ],
    );
    assert_success(&out);
    assert!(
        stdout(&out).contains(&format!("{forged}\tleft untrusted")),
        "{}",
        stdout(&out)
    );
    let after = rows(&cfg);
    assert_eq!(after.len(), 4, "{after:?}");
    for (id, trust) in &after {
        let want = if *id == forged {
            "unknown_key"
        } else {
            "trusted"
        };
        assert_eq!(trust, want, "{id}: {after:?}");
    }
    // `latest` on this host is the new backup, never the forgery.
    let other = Postgres::start();
    let out = s.ws.dr_env(
        &cfg,
        &["restore", &forged, "--to", &other.url("app"), "--yes"],
        &[("DR_SIGNING_KEY_FILE", "")],
    );
    assert_exit_code(&out, 4);
    let out = s.ws.dr_env(
        &cfg,
        &[
            "restore",
            "--to",
            &other.url("app"),
            "--yes",
            "--with-globals",
        ],
        &[("DR_SIGNING_KEY_FILE", "")],
    );
    assert_success(&out);
    assert_eq!(s.pg.table_digests("app"), other.table_digests("app"));
}
