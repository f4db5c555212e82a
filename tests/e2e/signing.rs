//! Signed manifests and verification records (issue 21): with only the bucket's credentials
//! and the public age recipient, nobody makes dr restore data dr did not back up.
//!
//! The attack: a second config with the same repository, the same recipient and the same
//! target name, pointed at another database, backed up with another signing key. The forgery
//! must be marked by `dr list`, skipped by `latest`, refused by restore and verify (exit 4)
//! before the target is touched, and named by `dr status` (exit 8).

use std::path::PathBuf;

use crate::support::*;

struct Setup {
    ws: Workspace,
    pg: Postgres,
    recipient: String,
    identity: PathBuf,
}

fn setup() -> Setup {
    let ws = Workspace::new();
    let pg = Postgres::start();
    pg.create_db("app");
    pg.psql(
        "app",
        "create table accounts (id int primary key, owner text); \
         insert into accounts select g, 'owner ' || g from generate_series(1, 500) g;",
    );
    // The attacker's database: what a forgery would restore.
    pg.create_db("evil");
    pg.psql(
        "evil",
        "create table planted (id int primary key); insert into planted values (1), (2);",
    );
    let (identity, recipient) = ws.keygen();
    Setup {
        ws,
        pg,
        recipient,
        identity,
    }
}

/// A config for target `app` in `repo` (`[repository]` body), at database `db`.
fn config(s: &Setup, name: &str, repo: &str, db: &str, identity: bool) -> PathBuf {
    let identity = if identity {
        format!("identity_file = \"{}\"\n", s.identity.display())
    } else {
        String::new()
    };
    s.ws.write(
        name,
        &format!(
            "[repository]\n{repo}\n[encryption]\nrecipients = [\"{}\"]\n{identity}[retention]\ndaily = 1\n[[targets]]\nname = \"app\"\nurl = \"{}\"\n",
            s.recipient,
            s.pg.url(db)
        ),
    )
}

fn list(s: &Setup, cfg: &std::path::Path) -> Vec<serde_json::Value> {
    let out = s.ws.dr(cfg, &["list", "--json"]);
    assert_success(&out);
    serde_json::from_str::<serde_json::Value>(&stdout(&out))
        .expect("json")
        .as_array()
        .expect("array")
        .clone()
}

fn tables(pg: &Postgres, db: &str) -> String {
    pg.psql(
        db,
        "select string_agg(tablename, ',' order by tablename) from pg_tables where schemaname = 'public'",
    )
}

fn forged_backup_is_refused(repo: &str) {
    let s = setup();
    let cfg = config(&s, "dr.toml", repo, "app", true);
    assert_success(&s.ws.dr(&cfg, &["backup"]));
    let genuine = list(&s, &cfg)[0]["id"].as_str().expect("id").to_string();
    std::thread::sleep(std::time::Duration::from_millis(1100));

    // The attacker: bucket credentials, the public recipient, a key of their own.
    let attacker = config(&s, "attacker.toml", repo, "evil", false);
    let (attacker_key, _) = s.ws.new_signing_key("attacker/signing.key");
    let key = attacker_key.display().to_string();
    assert_success(
        &s.ws
            .dr_env(&attacker, &["backup"], &[("DR_SIGNING_KEY_FILE", &key)]),
    );

    let rows = list(&s, &cfg);
    assert_eq!(rows.len(), 2, "{rows:?}");
    let forged = rows[0]["id"].as_str().expect("id").to_string();
    assert_ne!(forged, genuine);
    assert_eq!(rows[0]["state"], "untrusted", "{rows:?}");
    assert_eq!(rows[0]["trust"], "unknown_key", "{rows:?}");
    assert_eq!(rows[1]["trust"], "trusted", "{rows:?}");
    let human = s.ws.dr(&cfg, &["list"]);
    assert_success(&human);
    assert!(stdout(&human).contains("untrusted"), "{}", stdout(&human));

    // `latest` passes over it, and says so.
    let out =
        s.ws.dr(&cfg, &["restore", "--to", &s.pg.url("restored"), "--yes"]);
    assert_success(&out);
    assert!(stderr(&out).contains(&forged), "{}", stderr(&out));
    assert_eq!(tables(&s.pg, "restored"), "accounts");

    // By id: refused before the target is touched, flag or not.
    let before = s.pg.table_digests("app");
    let app_url = s.pg.url("app");
    for extra in [&[][..], &["--trust-unsigned"][..]] {
        let mut args = vec!["restore", &forged, "--to", &app_url, "--clean", "--yes"];
        args.extend_from_slice(extra);
        let out = s.ws.dr(&cfg, &args);
        assert_exit_code(&out, 4);
        assert!(stderr(&out).contains("untrusted"), "{}", stderr(&out));
    }
    let out = s.ws.dr(
        &cfg,
        &["restore", &forged, "--to", &s.pg.url("fresh"), "--yes"],
    );
    assert_exit_code(&out, 4);
    assert_eq!(s.pg.table_digests("app"), before);
    assert_eq!(tables(&s.pg, "app"), "accounts");
    assert_eq!(
        s.pg.psql(
            "postgres",
            "select count(*) from pg_database where datname = 'fresh'"
        ),
        "0"
    );
    let out = s.ws.dr(&cfg, &["verify", &forged, "--sandbox", "local"]);
    assert_exit_code(&out, 4);

    let out = s.ws.dr(&cfg, &["status"]);
    assert_exit_code(&out, 8);
    assert!(
        format!("{}{}", stdout(&out), stderr(&out)).contains(&forged),
        "{}",
        stdout(&out)
    );
    let out = s.ws.dr(&cfg, &["check"]);
    let text = stdout(&out);
    assert!(text.contains("would not trust"), "{text}");
    assert!(text.contains("signs with SHA256:"), "{text}");

    // Retention: the forgery holds no tier and makes the genuine backup go nowhere.
    let out = s.ws.dr(&cfg, &["prune", "--dry-run", "--json"]);
    assert_success(&out);
    assert!(!stdout(&out).contains(&forged), "{}", stdout(&out));
    assert!(stdout(&out).contains(&genuine), "{}", stdout(&out));
}

#[test]
fn a_forged_backup_in_a_directory_repository_is_refused_before_any_target_is_touched() {
    let ws_repo = tempfile::tempdir().expect("dir");
    forged_backup_is_refused(&format!("url = \"file://{}\"", ws_repo.path().display()));
}

#[test]
fn a_forged_backup_in_seaweedfs_is_refused_before_any_target_is_touched() {
    let weed = SeaweedFs::start();
    weed.create_bucket("forged");
    forged_backup_is_refused(&format!(
        "url = \"s3://forged/dr\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\npath_style = true",
        weed.endpoint()
    ));
}

#[test]
fn a_manifest_edited_by_one_byte_has_a_bad_signature_and_is_never_restored() {
    let s = setup();
    let repo = s.ws.path().join("repo");
    let cfg = config(
        &s,
        "dr.toml",
        &format!("url = \"file://{}\"", repo.display()),
        "app",
        true,
    );
    assert_success(&s.ws.dr(&cfg, &["backup"]));
    let manifest = manifests(&repo).pop().expect("manifest");
    let text = std::fs::read_to_string(&manifest).expect("read");
    // Still valid JSON, one byte different: the database size.
    let edited = text.replacen("\"database_bytes\": ", "\"database_bytes\": 1", 1);
    assert_eq!(edited.len(), text.len() + 1);
    std::fs::write(&manifest, edited).expect("write");
    let rows = list(&s, &cfg);
    assert_eq!(rows[0]["trust"], "bad_signature", "{rows:?}");
    let id = rows[0]["id"].as_str().expect("id").to_string();
    let out = s.ws.dr(
        &cfg,
        &[
            "restore",
            &id,
            "--to",
            &s.pg.url("copy"),
            "--yes",
            "--trust-unsigned",
        ],
    );
    assert_exit_code(&out, 4);
    assert!(stderr(&out).contains("bad signature"), "{}", stderr(&out));
    let out =
        s.ws.dr(&cfg, &["restore", "--to", &s.pg.url("copy"), "--yes"]);
    assert_exit_code(&out, 4);
    assert!(
        stderr(&out).contains("no trusted backup"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_forged_verification_record_does_not_count() {
    let s = setup();
    let repo = s.ws.path().join("repo");
    let cfg = config(
        &s,
        "dr.toml",
        &format!("url = \"file://{}\"", repo.display()),
        "app",
        true,
    );
    assert_success(&s.ws.dr(&cfg, &["backup"]));
    let id = list(&s, &cfg)[0]["id"].as_str().expect("id").to_string();
    let record = serde_json::json!({
        "format": 1, "backup_id": id, "target": "app",
        "verified_at": "2026-12-01T00:00:00Z", "result": "passed",
        "checks_total": 10, "checks_failed": 0, "timings": {},
        "sandbox": "forged", "dr_version": "0.1.0", "summary": null
    });
    s.ws.write(
        &format!("repo/app/{id}/verify/20261201T000000.000Z.json"),
        &record.to_string(),
    );
    let rows = list(&s, &cfg);
    assert_eq!(rows[0]["verification"]["result"], "untrusted", "{rows:?}");
    let out = s.ws.dr(&cfg, &["status", "--json"]);
    assert_exit_code(&out, 8);
    assert!(stdout(&out).contains("untrusted"), "{}", stdout(&out));
    assert!(
        !stdout(&out).contains("\"last_verification\":{"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn signing_keys_are_checked_when_the_config_is_loaded() {
    let s = setup();
    let repo = s.ws.path().join("repo");
    let cfg = config(
        &s,
        "dr.toml",
        &format!("url = \"file://{}\"", repo.display()),
        "app",
        true,
    );
    // keygen: mode 0600, public key on stdout, never over an existing file.
    let (key, public) = s.ws.new_signing_key("keys/signing.key");
    assert!(
        public.starts_with("ssh-ed25519 AAAA") && public.ends_with("dr-signing"),
        "{public}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key).expect("meta").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let before = std::fs::read(&key).expect("read");
    let out = s.ws.dr(
        &cfg,
        &[
            "keygen",
            "--signing",
            "--output",
            key.to_str().expect("utf-8"),
        ],
    );
    assert_exit_code(&out, 1);
    assert_eq!(std::fs::read(&key).expect("read"), before);

    // A key others can read is refused.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let k = key.display().to_string();
    let out = s.ws.dr_env(&cfg, &["list"], &[("DR_SIGNING_KEY_FILE", &k)]);
    assert_exit_code(&out, 2);
    assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));

    // A malformed trusted key.
    let text = std::fs::read_to_string(&cfg).expect("cfg");
    let bad = s.ws.write(
        "bad.toml",
        &format!("{text}[signing]\ntrusted = [\"ssh-ed25519 nope\"]\n"),
    );
    let out = s.ws.dr(&bad, &["list"]);
    assert_exit_code(&out, 2);
    assert!(stderr(&out).contains("signing.trusted"), "{}", stderr(&out));

    // No signing key: no backup, and the hint says how to make one.
    let mut c = s.ws.dr_command(&cfg, &["backup"]);
    c.env_remove("DR_SIGNING_KEY_FILE");
    let out = s.ws.run(&mut c);
    assert_exit_code(&out, 2);
    assert!(
        stderr(&out).contains("dr keygen --signing"),
        "{}",
        stderr(&out)
    );
    assert!(manifests(&repo).is_empty());
}

#[test]
fn a_restore_host_trusts_the_keys_it_lists_and_no_other() {
    let s = setup();
    let repo = s.ws.path().join("repo");
    let url = format!("url = \"file://{}\"", repo.display());
    let cfg = config(&s, "dr.toml", &url, "app", true);
    assert_success(&s.ws.dr(&cfg, &["backup"]));
    // The restore host: no key_file, trusts the backup host's public key (and a second one,
    // a rotation in progress).
    let backup_public = {
        let key = s.ws.signing_key();
        let (_, other) = s.ws.new_signing_key("next/signing.key");
        // The public half, as `ssh-keygen -y` derives it.
        let out = std::process::Command::new("ssh-keygen")
            .arg("-y")
            .arg("-f")
            .arg(&key)
            .output()
            .expect("ssh-keygen");
        assert!(out.status.success());
        (
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            other,
        )
    };
    let text = std::fs::read_to_string(&cfg).expect("cfg");
    let restore_host = s.ws.write(
        "restore-host.toml",
        &format!(
            "{text}[signing]\ntrusted = [\"{}\", \"{}\"]\n",
            backup_public.1, backup_public.0
        ),
    );
    let run = |cfg: &std::path::Path, args: &[&str]| {
        let mut c = s.ws.dr_command(cfg, args);
        c.env_remove("DR_SIGNING_KEY_FILE");
        s.ws.run(&mut c)
    };
    let out = run(
        &restore_host,
        &["restore", "--to", &s.pg.url("copy"), "--yes"],
    );
    assert_success(&out);
    assert_eq!(tables(&s.pg, "copy"), "accounts");
    // Revoked: only the other key is trusted now.
    let revoked = s.ws.write(
        "revoked.toml",
        &format!("{text}[signing]\ntrusted = [\"{}\"]\n", backup_public.1),
    );
    let out = run(&revoked, &["restore", "--to", &s.pg.url("copy2"), "--yes"]);
    assert_exit_code(&out, 4);
    // No [signing] at all: nothing is trusted, and the hint says what to add.
    let out = run(&cfg, &["restore", "--to", &s.pg.url("copy3"), "--yes"]);
    assert_exit_code(&out, 4);
    let out = run(&cfg, &["list"]);
    assert_success(&out);
    assert!(stderr(&out).contains("[signing]"), "{}", stderr(&out));
}
