//! End-to-end: `dr backup` against real PostgreSQL and SeaweedFS (and the directory store),
//! checked with the real `age`, `zstd` and `pg_restore` CLIs.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

pub struct Setup {
    pub ws: Workspace,
    pub pg: Postgres,
    pub identity: PathBuf,
    pub recipient: String,
}

fn setup() -> Setup {
    let ws = Workspace::new();
    let pg = Postgres::start();
    pg.create_db("app");
    pg.load_hard_cases("app");
    let (identity, recipient) = ws.keygen();
    Setup {
        ws,
        pg,
        identity,
        recipient,
    }
}

fn config(s: &Setup, repo: &str, extra: &str) -> PathBuf {
    s.ws.write(
        "dr.toml",
        &format!(
            r#"
[repository]
url = "{repo}"
{extra}

[encryption]
recipients = ["{}"]
identity_file = "{}"

[[targets]]
name = "app"
url = "{}"
"#,
            s.recipient,
            s.identity.display(),
            s.pg.url("app")
        ),
    )
}

fn dir_repo(s: &Setup) -> (PathBuf, PathBuf) {
    let repo = s.ws.path().join("repo");
    let cfg = config(s, &format!("file://{}", repo.display()), "");
    (cfg, repo)
}

fn s3_config(s: &Setup, weed: &SeaweedFs, bucket: &str) -> PathBuf {
    weed.create_bucket(bucket);
    config(
        s,
        &format!("s3://{bucket}/backups"),
        &format!(
            "endpoint = \"{}\"\nregion = \"us-east-1\"\npath_style = true",
            weed.endpoint()
        ),
    )
}

/// `pg_restore -l` of one stored section, decoded with the CLIs (into a file: pg_restore -l
/// stops reading early).
fn cli_list(s: &Setup, object: &Path) -> String {
    let file = s.ws.path().join("section.dump");
    let pipeline = format!(
        "age -d -i {} {} | zstd -d > {} && pg_restore -l {}",
        s.identity.display(),
        object.display(),
        file.display(),
        file.display()
    );
    let out = Command::new("bash")
        .args(["-o", "pipefail", "-c", &pipeline])
        .output()
        .expect("bash");
    assert_success(&out);
    stdout(&out)
}

#[test]
fn directory_backup_restores_with_only_the_age_zstd_and_pg_restore_clis() {
    let s = setup();
    let (cfg, repo) = dir_repo(&s);
    let out = s.ws.dr(&cfg, &["backup", "--jobs", "3"]);
    assert_success(&out);
    let m = manifests(&repo);
    assert_eq!(m.len(), 1);
    let dir = m[0].parent().expect("backup dir").to_path_buf();
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&m[0]).expect("read")).expect("json");
    assert_eq!(manifest["format"], 2);
    let roles: Vec<(&str, u64)> = manifest["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .filter_map(|o| Some((o["role"].as_str()?, o["restore_step"].as_u64().unwrap_or(0))))
        .collect();
    assert_eq!(
        roles,
        [
            ("pre_data", 1),
            ("data", 2),
            ("data", 2),
            ("data", 2),
            ("post_data", 3),
            ("globals", 0),
            ("details", 0)
        ]
    );

    let pre = cli_list(&s, &dir.join("pre-data.zst.age"));
    assert!(
        pre.contains("TABLE \"Sales ü\" \"Straße Orders ✓\"") || pre.contains("Straße Orders ✓"),
        "{pre}"
    );
    assert!(!pre.contains("TABLE DATA"), "{pre}");
    let post = cli_list(&s, &dir.join("post-data.zst.age"));
    assert!(post.contains("CONSTRAINT public big big_pkey"), "{post}");
    assert!(!post.contains("TABLE DATA"), "{post}");
    // Every table's rows, every sequence value and the large objects are in exactly one
    // data stream.
    let mut seen: std::collections::BTreeMap<String, Vec<u32>> = Default::default();
    for k in 1..=3u32 {
        let list = cli_list(&s, &dir.join(format!("data-{k}.zst.age")));
        for line in list.lines().filter(|l| !l.starts_with(';')) {
            for kind in [
                "TABLE DATA ",
                "SEQUENCE SET ",
                "BLOBS ",
                "LARGE OBJECTS ",
                "BLOB DATA ",
            ] {
                if let Some(at) = line.find(kind) {
                    // "TABLE DATA public big postgres" -> without the owner.
                    let entry = line[at..].rsplit_once(' ').map_or(&line[at..], |(e, _)| e);
                    seen.entry(entry.to_string()).or_default().push(k);
                }
            }
        }
    }
    let twice: Vec<_> = seen.iter().filter(|(_, v)| v.len() > 1).collect();
    assert!(twice.is_empty(), "in more than one stream: {twice:?}");
    for needle in [
        "TABLE DATA public big",
        "TABLE DATA public zerocol",
        "TABLE DATA public capitals",
        "TABLE DATA public measurements_2025",
        "SEQUENCE SET public order_seq",
    ] {
        assert!(seen.contains_key(needle), "{needle} missing: {seen:?}");
    }
    assert!(
        seen.keys().any(|k| k.starts_with("BLOB")),
        "large objects missing: {seen:?}"
    );
    let streams: std::collections::BTreeSet<u32> = seen.values().flatten().copied().collect();
    assert_eq!(streams.len(), 3, "every stream carries something: {seen:?}");

    // The restore order of the README, with nothing but the CLIs.
    s.pg.create_db("copy");
    let url = s.pg.url("copy");
    let bin = s.pg.bin_dir().display().to_string();
    let id = s.identity.display();
    let d = dir.display();
    let mut script = format!(
        "set -euo pipefail\nage -d -i {id} {d}/pre-data.zst.age | zstd -d | {bin}/pg_restore --exit-on-error -d '{url}'\n"
    );
    for k in 1..=3 {
        script.push_str(&format!(
            "age -d -i {id} {d}/data-{k}.zst.age | zstd -d | {bin}/pg_restore --exit-on-error -d '{url}'\n"
        ));
    }
    script.push_str(&format!(
        "age -d -i {id} {d}/post-data.zst.age | zstd -d > {ws}/post.dump\n{bin}/pg_restore --exit-on-error -j 2 -d '{url}' {ws}/post.dump\n",
        ws = s.ws.path().display()
    ));
    let out = Command::new("bash")
        .args(["-c", &script])
        .output()
        .expect("bash");
    assert_success(&out);
    assert_eq!(s.pg.row_counts("copy"), s.pg.row_counts("app"));
    assert_eq!(
        s.pg.psql("copy", "select last_value from public.order_seq")
            .trim(),
        "4242"
    );
    // Nothing half-written is left behind.
    assert!(files_under(&repo)
        .iter()
        .all(|p| !p.to_string_lossy().contains(".tmp-")));
}

#[test]
fn recorded_row_counts_equal_count_star_for_every_table() {
    let s = setup();
    let (cfg, _) = dir_repo(&s);
    assert_success(&s.ws.dr(&cfg, &["backup"]));
    let out = s.ws.dr(&cfg, &["show", "latest", "--json"]);
    assert_success(&out);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    let mut recorded = std::collections::BTreeMap::new();
    for t in v["details"]["tables"].as_array().expect("tables") {
        recorded.insert(
            format!(
                "{}.{}",
                t["schema"].as_str().unwrap_or(""),
                t["name"].as_str().unwrap_or("")
            ),
            t["rows"].as_i64().unwrap_or(-1),
        );
    }
    let actual = s.pg.row_counts("app");
    assert_eq!(recorded, actual);
    assert_eq!(recorded["public.zerocol"], 3);
    assert_eq!(recorded["public.cities"], 2, "counted FROM ONLY");
    assert_eq!(v["details"]["large_objects"], 1);
}

#[test]
fn s3_backup_holds_no_plaintext_and_lists_as_json() {
    let s = setup();
    s.pg.psql(
        "app",
        "create table canary_table_q7x (v text); insert into canary_table_q7x values ('secret-canary-value-42');",
    );
    let weed = SeaweedFs::start();
    let cfg = s3_config(&s, &weed, "plain");
    assert_success(&s.ws.dr(&cfg, &["backup"]));
    let keys = weed.object_keys("plain");
    assert!(
        keys.iter().any(|k| k.ends_with("manifest.json")),
        "{keys:?}"
    );
    for k in &keys {
        let body = weed.fetch("plain", k);
        let text = String::from_utf8_lossy(&body);
        for needle in [
            "secret-canary-value-42",
            "canary_table_q7x",
            "Straße",
            "zerocol",
            "PGDMP",
        ] {
            assert!(!text.contains(needle), "`{needle}` in plaintext in {k}");
        }
    }
    let out = s.ws.dr(&cfg, &["list", "--json"]);
    assert_success(&out);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    let first = &v.as_array().expect("array")[0];
    assert_eq!(first["target"], "app");
    assert!(first["id"].as_str().is_some_and(|id| id.ends_with('Z')));
    assert!(first["bytes"].as_u64().is_some_and(|b| b > 0));
    assert!(chrono_like(first["started_at"].as_str().unwrap_or("")));
    // The stored sections decrypt with the CLIs straight from the bucket.
    let dump_key = keys
        .iter()
        .find(|k| k.ends_with("data-1.zst.age"))
        .expect("data stream");
    let dump = s.ws.write("data-1.zst.age", "");
    std::fs::write(&dump, weed.fetch("plain", dump_key)).expect("write");
    let out = Command::new("bash")
        .args([
            "-o",
            "pipefail",
            "-c",
            &format!(
                "age -d -i {} {} | zstd -d > {}.dump && pg_restore -l {}.dump >/dev/null",
                s.identity.display(),
                dump.display(),
                dump.display(),
                dump.display()
            ),
        ])
        .output()
        .expect("bash");
    assert_success(&out);
}

fn chrono_like(s: &str) -> bool {
    s.len() >= 20 && s.as_bytes()[4] == b'-' && s.contains('T')
}

#[test]
fn a_missing_database_fails_with_no_manifest_and_no_open_upload() {
    let s = setup();
    let weed = SeaweedFs::start();
    let cfg = s3_config(&s, &weed, "faildb");
    let text = std::fs::read_to_string(&cfg)
        .expect("cfg")
        .replace("/app\"", "/nope\"");
    std::fs::write(&cfg, text).expect("write");
    let out = s.ws.dr(&cfg, &["backup"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("nope") && err.contains("hint:"), "{err}");
    assert!(weed
        .object_keys("faildb")
        .iter()
        .all(|k| !k.ends_with("manifest.json")));
    let uploads = Command::new("curl")
        .args(["-s", &format!("{}/faildb?uploads", weed.endpoint())])
        .output()
        .expect("curl");
    assert!(
        !stdout(&uploads).contains("<UploadId>"),
        "{}",
        stdout(&uploads)
    );
}

/// Regression: without AWS credentials `dr check` printed the AWS SDK's Debug structs (its
/// credential providers' WARN lines: `ProviderError { source: … }`, `Some(…)`) and a hint that
/// did not say where credentials come from. Once with instance metadata disabled, once with
/// it unreachable (a host outside EC2).
#[test]
fn check_without_aws_credentials_says_so_readably() {
    let s = setup();
    let weed = SeaweedFs::start();
    let cfg = s3_config(&s, &weed, "nocreds");
    let imds = format!("http://127.0.0.1:{}", free_port());
    for (var, value) in [
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.as_str()),
    ] {
        let mut c = s.ws.dr_command(&cfg, &["check"]);
        c.env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_EC2_METADATA_DISABLED")
            .env(var, value);
        let out = s.ws.run(&mut c);
        assert_exit_code(&out, 3);
        let all = format!("{}\n{}", stdout(&out), stderr(&out));
        for debug in ["{ ", " }", "Some(", "ErrorMetadata", "source:"] {
            assert!(
                !all.contains(debug),
                "{var}: debug text `{debug}` in:\n{all}"
            );
        }
        assert!(
            all.contains("cannot load AWS credentials"),
            "{var}: the failure does not say what is missing:\n{all}"
        );
        assert!(
            all.contains("hint:")
                && all.contains("AWS_ACCESS_KEY_ID")
                && all.contains("--env-file")
                && all.contains("AWS_PROFILE"),
            "{var}: no hint naming where credentials come from:\n{all}"
        );
    }
}

/// Runs `dr backup --jobs 3` and kill -9s the pg_dump of data stream 2 (the one dumping
/// `public.filler_b`) once it runs; returns dr's output.
fn backup_killing_one_stream(s: &Setup, cfg: &Path) -> std::process::Output {
    let mut cmd = s.ws.dr_command(cfg, &["backup", "--jobs", "3"]);
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().expect("spawn dr");
    let pid = child.id();
    let mut killed = false;
    for _ in 0..800 {
        let kids = Command::new("pgrep")
            .args(["-P", &pid.to_string()])
            .output()
            .expect("pgrep");
        for kid in stdout(&kids).split_whitespace() {
            let cmdline = std::fs::read(format!("/proc/{kid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains("pg_dump --format=custom")
                && cmdline.contains("--table=\"public\".\"filler_b\"")
            {
                killed = Command::new("kill")
                    .args(["-9", kid])
                    .status()
                    .is_ok_and(|s| s.success());
            }
        }
        if killed {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let out = child.wait_with_output().expect("wait");
    assert!(killed, "pg_dump of data-2 was never seen running");
    assert!(
        !out.status.success(),
        "dr reported success after pg_dump was killed"
    );
    let err = stderr(&out);
    assert!(err.contains("pg_dump (data-2 of 3) failed"), "{err}");
    out
}

/// Two tables big enough that their pg_dumps run for a while, one per data stream.
fn add_filler(s: &Setup) {
    s.pg.psql(
        "app",
        "create table filler_a as select g, repeat(md5(g::text), 20) as t from generate_series(1, 400000) g;
         create table filler_b as select g, repeat(md5(g::text), 20) as t from generate_series(1, 390000) g;",
    );
}

#[test]
fn pg_dump_killed_mid_stream_leaves_no_manifest_and_no_upload() {
    let s = setup();
    add_filler(&s);
    let (cfg, repo) = dir_repo(&s);
    backup_killing_one_stream(&s, &cfg);
    assert!(manifests(&repo).is_empty());
    let uploads: Vec<PathBuf> = files_under(&repo.join(".dr-uploads"));
    assert!(uploads.is_empty(), "{uploads:?}");
    // The sections that did complete (pre-data, post-data, globals) are removed too.
    let left: Vec<PathBuf> = files_under(&repo.join("app"));
    assert!(left.is_empty(), "{left:?}");
    let out = s.ws.dr(&cfg, &["list", "--json"]);
    assert_eq!(stdout(&out).trim(), "[]");
}

#[test]
fn pg_dump_killed_in_one_of_three_s3_streams_aborts_every_upload() {
    let s = setup();
    add_filler(&s);
    let weed = SeaweedFs::start();
    let cfg = s3_config(&s, &weed, "killed");
    backup_killing_one_stream(&s, &cfg);
    let open = weed.open_uploads("killed");
    assert!(open.is_empty(), "multipart uploads left open: {open:?}");
    let keys: Vec<String> = weed
        .object_keys("killed")
        .into_iter()
        .filter(|k| !k.starts_with("backups/locks/"))
        .collect();
    assert!(keys.is_empty(), "objects left: {keys:?}");
}

#[test]
fn a_server_newer_than_every_pg_dump_is_a_clear_error_and_its_own_pg_dump_works() {
    let Some(bin18) = pg_bin_dir(18) else {
        eprintln!("skipped: no PostgreSQL 18 binaries (ci/setup.sh installs them)");
        return;
    };
    let ws = Workspace::new();
    let pg = Postgres::start_with_bin_dir(&bin18);
    pg.create_db("app");
    pg.psql(
        "app",
        "create table t (id int); insert into t select generate_series(1, 1000);",
    );
    let (identity, recipient) = ws.keygen();
    let s = Setup {
        ws,
        pg,
        identity,
        recipient,
    };
    let (cfg, repo) = dir_repo(&s);
    let out = s.ws.dr(&cfg, &["backup"]);
    assert_exit_code(&out, 3);
    let err = stderr(&out);
    assert!(
        err.contains("PostgreSQL 18") && err.contains("pg_bin_dir"),
        "{err}"
    );
    assert!(manifests(&repo).is_empty());
    // With the matching client binaries configured, the backup works.
    let text = std::fs::read_to_string(&cfg).expect("cfg")
        + &format!("\n[backup]\npg_bin_dir = \"{}\"\n", bin18.display());
    std::fs::write(&cfg, text).expect("write");
    assert_success(&s.ws.dr(&cfg, &["backup"]));
    let out = s.ws.dr(&cfg, &["show", "latest", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(v["server_major"], 18);
    assert_eq!(v["details"]["tables"][0]["rows"], 1000);
}

#[test]
fn bad_config_is_named_and_exits_2() {
    let s = setup();
    let (cfg, _) = dir_repo(&s);
    let good = std::fs::read_to_string(&cfg).expect("cfg");
    let cases: Vec<(String, &str)> = vec![
        (
            good.replace("[repository]\nurl", "[repository]\nurll"),
            "url",
        ),
        (
            good.replace(&s.recipient, "age1notarecipient"),
            "age1notarecipient",
        ),
        (good.replace("postgres@", "postgres:hunter2@"), "PGPASSWORD"),
        (good.replace("file://", "ftp://"), "ftp://"),
        ("this is not toml".to_string(), "invalid config"),
    ];
    for (text, needle) in cases {
        std::fs::write(&cfg, &text).expect("write");
        let out = s.ws.dr(&cfg, &["backup"]);
        assert_exit_code(&out, 2);
        let err = stderr(&out);
        assert!(err.contains(needle), "expected `{needle}` in: {err}");
        assert!(!err.contains("hunter2"), "password echoed: {err}");
    }
    let out = s.ws.dr(&s.ws.path().join("missing.toml"), &["list"]);
    assert_exit_code(&out, 2);
    assert!(stderr(&out).contains("missing.toml"));
}

#[test]
fn unreachable_database_and_bucket_exit_3_with_hints() {
    let s = setup();
    let (cfg, _) = dir_repo(&s);
    let port = free_port();
    let text = std::fs::read_to_string(&cfg)
        .expect("cfg")
        .replace(&format!(":{}/", s.pg.port()), &format!(":{port}/"));
    std::fs::write(&cfg, text).expect("write");
    let out = s.ws.dr(&cfg, &["backup"]);
    assert_exit_code(&out, 3);
    assert!(stderr(&out).contains("hint:"), "{}", stderr(&out));

    let weed_port = free_port();
    let cfg2 = config(
        &s,
        "s3://nobucket/x",
        &format!("endpoint = \"http://127.0.0.1:{weed_port}\"\npath_style = true"),
    );
    let out = s.ws.dr(&cfg2, &["list"]);
    assert_exit_code(&out, 3);
    assert!(stderr(&out).contains("endpoint"), "{}", stderr(&out));
}

#[test]
fn a_held_lock_refuses_a_second_run_and_an_expired_one_is_taken_over() {
    let s = setup();
    let (cfg, repo) = dir_repo(&s);
    std::fs::create_dir_all(repo.join("locks")).expect("mkdir");
    let lock = |expires: &str| {
        format!(
            r#"{{"target":"app","holder":"otherhost pid 1","operation":"backup","acquired_at":"2026-01-01T00:00:00Z","expires_at":"{expires}","token":"x"}}"#
        )
    };
    std::fs::write(repo.join("locks/app.json"), lock("2999-01-01T00:00:00Z")).expect("lock");
    let out = s.ws.dr(&cfg, &["backup"]);
    assert_exit_code(&out, 6);
    assert!(stderr(&out).contains("otherhost"), "{}", stderr(&out));
    assert!(manifests(&repo).is_empty());

    std::fs::write(repo.join("locks/app.json"), lock("2020-01-01T00:00:00Z")).expect("lock");
    assert_success(&s.ws.dr(&cfg, &["backup"]));
    assert_eq!(manifests(&repo).len(), 1);
    assert!(!repo.join("locks/app.json").exists(), "lock released");
}

#[test]
fn two_concurrent_backups_never_overlap() {
    let s = setup();
    let (cfg, repo) = dir_repo(&s);
    let spawn = || {
        let mut c = s.ws.dr_command(&cfg, &["backup"]);
        c.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c.spawn().expect("spawn")
    };
    let a = spawn();
    let b = spawn();
    let a = a.wait_with_output().expect("a");
    let b = b.wait_with_output().expect("b");
    let ok = [&a, &b].iter().filter(|o| o.status.success()).count();
    assert!(ok >= 1, "{}\n{}", stderr(&a), stderr(&b));
    for o in [&a, &b] {
        if !o.status.success() {
            assert_eq!(o.status.code(), Some(6), "{}", stderr(o));
        }
    }
    assert_eq!(manifests(&repo).len(), ok);
}

#[test]
fn check_reports_every_part() {
    let s = setup();
    let (cfg, _) = dir_repo(&s);
    let out = s.ws.dr(&cfg, &["check"]);
    assert_success(&out);
    let o = stdout(&out);
    assert!(
        o.contains("writable") && o.contains("pg_dump") && o.contains("matches"),
        "{o}"
    );
}

#[test]
fn keygen_writes_a_private_file_and_prints_the_recipient() {
    let ws = Workspace::new();
    let cfg = ws.write("unused.toml", "");
    let path = ws.path().join("id.txt");
    let out = ws.dr(
        &cfg,
        &["keygen", "--output", path.to_str().unwrap_or_default()],
    );
    assert_success(&out);
    assert!(stdout(&out).trim().starts_with("age1"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // Never overwrite an identity by accident.
    let again = ws.dr(
        &cfg,
        &["keygen", "--output", path.to_str().unwrap_or_default()],
    );
    assert!(!again.status.success());
}

fn openssl(ws: &Workspace, args: &str) {
    let out = Command::new("bash")
        .args([
            "-c",
            &format!("cd {} && openssl {args}", ws.path().display()),
        ])
        .output()
        .expect("openssl");
    assert_success(&out);
}

#[test]
fn tls_verify_full_is_enforced_for_dr_and_pg_dump() {
    let s = setup();
    let ws = &s.ws;
    openssl(ws, "req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=dr-test-ca 2>/dev/null");
    openssl(ws, "req -x509 -newkey rsa:2048 -nodes -keyout other.key -out other.crt -days 2 -subj /CN=other-ca 2>/dev/null");
    openssl(ws, "req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost 2>/dev/null");
    ws.write("san.ext", "subjectAltName=DNS:localhost\n");
    openssl(ws, "x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile san.ext 2>/dev/null");
    let data = s.pg.psql("postgres", "show data_directory");
    for f in ["server.crt", "server.key"] {
        std::fs::copy(ws.path().join(f), Path::new(&data).join(f)).expect("copy");
    }
    let out = Command::new("bash")
        .args([
            "-c",
            &format!(
                "chown postgres {data}/server.crt {data}/server.key && chmod 600 {data}/server.key"
            ),
        ])
        .output()
        .expect("chown");
    assert_success(&out);
    s.pg.psql("postgres", "alter system set ssl = on");
    s.pg.psql("postgres", "select pg_reload_conf()");
    std::thread::sleep(std::time::Duration::from_millis(500));

    let (cfg, repo) = dir_repo(&s);
    let plain = std::fs::read_to_string(&cfg).expect("cfg");
    let with = |mode: &str, ca: &str| {
        let url = format!(
            "postgres://postgres@localhost:{}/app?sslmode={mode}&sslrootcert={}",
            s.pg.port(),
            ws.path().join(ca).display()
        );
        std::fs::write(&cfg, plain.replace(&s.pg.url("app"), &url)).expect("write");
    };
    with("verify-full", "ca.crt");
    let out = ws.dr(&cfg, &["backup"]);
    assert_success(&out);
    assert_eq!(manifests(&repo).len(), 1);

    // The wrong root: refused, before any data moves.
    with("verify-full", "other.crt");
    let out = ws.dr(&cfg, &["backup"]);
    assert_exit_code(&out, 3);
    assert!(
        stderr(&out).to_lowercase().contains("certificate"),
        "{}",
        stderr(&out)
    );
    assert_eq!(manifests(&repo).len(), 1);

    // `require` encrypts without checking identity, like libpq.
    // `require` without a root file encrypts without checking identity, like libpq.
    let url = format!(
        "postgres://postgres@localhost:{}/app?sslmode=require",
        s.pg.port()
    );
    std::fs::write(&cfg, plain.replace(&s.pg.url("app"), &url)).expect("write");
    assert_success(&ws.dr(&cfg, &["backup"]));
    assert_eq!(manifests(&repo).len(), 2);
}

#[test]
fn json_logs_on_stderr_data_on_stdout_and_no_secret_anywhere() {
    let s = setup();
    let (cfg, repo) = dir_repo(&s);
    let out = s.ws.dr_env(
        &cfg,
        &["--log-format", "json", "-vv", "backup"],
        &[
            ("PGPASSWORD", "hunter2-secret"),
            ("AWS_SECRET_ACCESS_KEY", "aws-secret-xyz"),
        ],
    );
    assert_success(&out);
    let id = stdout(&out);
    assert!(id.starts_with("app\t"), "{id}");
    let err = stderr(&out);
    let mut json_lines = 0;
    for line in err.lines().filter(|l| l.starts_with('{')) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v.get("level").is_some(), "{line}");
        json_lines += 1;
    }
    assert!(json_lines > 2, "{err}");
    for secret in ["hunter2-secret", "aws-secret-xyz"] {
        assert!(
            !err.contains(secret) && !id.contains(secret),
            "secret in output"
        );
        for f in files_under(&repo) {
            let bytes = std::fs::read(&f).unwrap_or_default();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(secret),
                "secret in {}",
                f.display()
            );
        }
    }
}

/// Regression: the README's cron line mailed every night (output on success) and its
/// `DR_CONFIG=` reached only the first command. Run that exact line under cron's empty
/// environment: both commands find the config and the env file, and success prints nothing.
#[test]
fn readme_cron_line_runs_under_an_empty_environment_and_prints_nothing_on_success() {
    use std::os::unix::fs::PermissionsExt;
    let s = setup();
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("read README.md");
    let line = readme
        .lines()
        .find_map(|l| l.strip_prefix("0 3 * * * "))
        .expect("README has a `0 3 * * *` cron line");
    let repo = s.ws.path().join("repo");
    // The file's url is wrong on purpose: DR_REPOSITORY_URL in the env file must win.
    let cfg = config(
        &s,
        "file:///nonexistent/dr-cron-test",
        "\n[retention]\ndaily = 7",
    );
    let env_file = s.ws.write(
        "dr.env",
        &format!(
            "# loaded by dr itself\nexport DR_REPOSITORY_URL=\"file://{}\"\nDR_PG_BIN_DIR='{}'\nDR_SIGNING_KEY_FILE={}\n",
            repo.display(),
            s.pg.bin_dir().display(),
            s.ws.signing_key().display()
        ),
    );
    std::fs::set_permissions(&env_file, std::fs::Permissions::from_mode(0o600))
        .expect("chmod the env file");
    let command = line
        .replace("/etc/dr/dr.env", &env_file.display().to_string())
        .replace("/etc/dr/dr.toml", &cfg.display().to_string())
        .replace("/usr/local/bin/dr", &dr_bin().display().to_string());
    let cron = |command: &str| {
        let mut c = Command::new("env");
        c.args(["-i", "PATH=/usr/bin:/bin", "SHELL=/bin/sh"])
            .arg(format!("HOME={}", s.ws.path().display()))
            .args(["/bin/sh", "-c", command])
            .current_dir(s.ws.path());
        s.ws.run(&mut c)
    };
    let out = cron(&command);
    assert_success(&out);
    assert_eq!(stdout(&out), "", "stdout on success: cron would mail it");
    assert_eq!(stderr(&out), "", "stderr on success: cron would mail it");
    assert_eq!(
        manifests(&repo).len(),
        1,
        "the backup went to the env file's repository"
    );

    // A failure still prints (and exits non-zero): here the env file is unreadable garbage.
    std::fs::write(&env_file, "not a variable line\n").expect("rewrite the env file");
    let out = cron(&command);
    assert_exit_code(&out, 2);
    assert!(stderr(&out).contains("line 1"), "{}", stderr(&out));
}

/// Regression: with `--log-format json` the completion lines ("backup … complete", the
/// restore summary) were plain text among the JSON events. Every stderr line is one object.
#[test]
fn log_format_json_makes_every_stderr_line_a_json_object() {
    let s = setup();
    let (cfg, _repo) = dir_repo(&s);
    let json_lines = |out: &std::process::Output, what: &str| -> Vec<serde_json::Value> {
        stderr(out)
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("{what}: stderr line is not JSON ({e}): {l}"));
                assert!(v.is_object(), "{what}: not an object: {l}");
                assert!(v["level"].is_string(), "{what}: no level: {l}");
                v
            })
            .collect()
    };
    let messages = |v: &[serde_json::Value]| {
        v.iter()
            .filter_map(|e| e["fields"]["message"].as_str().map(str::to_string))
            .collect::<Vec<_>>()
            .join("\n")
    };
    fn with<'a>(args: &[&'a str]) -> Vec<&'a str> {
        [&["--log-format", "json"][..], args].concat()
    }

    let out = s.ws.dr(&cfg, &with(&["backup"]));
    assert_success(&out);
    let events = json_lines(&out, "backup");
    assert!(messages(&events).contains("complete"), "{}", stderr(&out));

    let out = s.ws.dr(&cfg, &with(&["list"]));
    assert_success(&out);
    json_lines(&out, "list");

    let out = s.ws.dr(
        &cfg,
        &with(&["restore", "--to", &s.pg.url("copy"), "--yes"]),
    );
    assert_success(&out);
    let events = json_lines(&out, "restore");
    assert!(
        messages(&events).contains("restored backup"),
        "{}",
        stderr(&out)
    );

    let out = s.ws.dr(
        &cfg,
        &with(&[
            "restore",
            "20000101T000000Z",
            "--to",
            &s.pg.url("copy2"),
            "--yes",
        ]),
    );
    assert!(!out.status.success());
    let events = json_lines(&out, "failing restore");
    assert!(
        events
            .iter()
            .any(|e| e["level"] == "ERROR" && e["exit_code"].is_number()),
        "{}",
        stderr(&out)
    );

    // A usage error, found before the log format is known to clap, is JSON too.
    let out = s.ws.dr(
        &cfg,
        &with(&["restore", "--jobs", "0", "--to", &s.pg.url("x")]),
    );
    assert_exit_code(&out, 2);
    let events = json_lines(&out, "usage error");
    assert!(
        events
            .iter()
            .any(|e| e["error"]["kind"] == "config" && e["exit_code"] == 2),
        "{}",
        stderr(&out)
    );
}

/// Regression: with a database down `dr check` printed only an error, hiding every line that
/// passed (and the other targets). Now every line is printed, then exit 3.
#[test]
fn check_with_a_database_down_prints_every_line_then_fails() {
    let s = setup();
    let repo = s.ws.path().join("repo");
    let extra_target = format!(
        "\n[[targets]]\nname = \"gone\"\nurl = \"postgres://postgres@127.0.0.1:{}/app?connect_timeout=3\"\n",
        free_port()
    );
    let cfg_path = config(&s, &format!("file://{}", repo.display()), "");
    let text = std::fs::read_to_string(&cfg_path).expect("read config") + &extra_target;
    let cfg = s.ws.write("dr.toml", &text);

    let out = s.ws.dr(&cfg, &["check"]);
    assert_exit_code(&out, 3);
    let o = stdout(&out);
    for (status, check) in [
        ("ok", "config"),
        ("ok", "recipients"),
        ("ok", "identity"),
        ("ok", "repository"),
        ("ok", "backups app"),
        ("ok", "target app"),
        ("ok", "tools app"),
        ("ok", "locks app"),
        ("FAIL", "target gone"),
        ("FAIL", "tools gone"),
    ] {
        assert!(
            o.lines()
                .any(|l| l.starts_with(status) && l[4..].trim_start().starts_with(check)),
            "no `{status} {check}` line:\n{o}"
        );
    }
    assert!(stderr(&out).contains("target gone"), "{}", stderr(&out));

    let out = s.ws.dr(&cfg, &["check", "--json"]);
    assert_exit_code(&out, 3);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    let lines = v.as_array().expect("array");
    assert_eq!(lines.len(), 13, "{v}");
    let failed: Vec<_> = lines
        .iter()
        .filter(|l| l["ok"] == false)
        .map(|l| l["check"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(failed, ["target gone", "tools gone"], "{v}");
}

/// More tables than a quarter of the server's lock table holds at ~4 locks per table (the
/// default 64 x 100 slots: > 400 tables): pre-data and post-data are dumped first, then the
/// data streams, and the backup is complete and exact.
#[test]
fn many_tables_dump_the_schema_first_and_restore_exactly() {
    let s = setup();
    s.pg.psql(
        "app",
        "do $$ begin for i in 1..450 loop
           execute format('create table public.many_%s (id int primary key, v text)', i);
           execute format('insert into public.many_%s select g, md5(g::text) from generate_series(1, %s) g', i, i);
         end loop; end $$;",
    );
    let (cfg, _) = dir_repo(&s);
    let out = s.ws.dr(&cfg, &["backup", "--jobs", "3"]);
    assert_success(&out);
    assert!(
        stderr(&out).contains("pre-data and post-data first"),
        "{}",
        stderr(&out)
    );
    let out = s.ws.dr(
        &cfg,
        &["restore", "--to", &s.pg.url("copy"), "--jobs", "3", "--yes"],
    );
    assert_success(&out);
    assert_eq!(s.pg.row_counts("copy"), s.pg.row_counts("app"));
}

/// A server whose lock table cannot hold a lock on every table (max_locks_per_transaction
/// 10 × max_connections 10 = 100 slots, 3000 tables): `dr check` says so before a backup
/// does, and the backup's "out of shared memory" keeps the server's hint instead of
/// dropping it.
#[test]
fn too_many_tables_for_the_lock_table_are_named_by_check_and_the_backup_keeps_the_servers_hint() {
    let s = setup();
    // Made while the lock table is the default size: one transaction creating them locks each.
    s.pg.psql(
        "app",
        "do $$ begin for i in 1..3000 loop
           execute format('create table public.many_%s (id int)', i);
         end loop; end $$;",
    );
    s.pg.psql(
        "postgres",
        "alter system set max_locks_per_transaction = 10; alter system set max_connections = 10;",
    );
    s.pg.restart();
    let (cfg, repo) = dir_repo(&s);

    let out = s.ws.dr(&cfg, &["check"]);
    assert_exit_code(&out, 3);
    let text = stdout(&out);
    let line = text
        .lines()
        .find(|l| l.contains("locks app"))
        .unwrap_or_else(|| panic!("no locks line:\n{text}"));
    assert!(line.starts_with("FAIL"), "{line}");
    assert!(line.contains("tables in `app`"), "{line}");
    assert!(
        line.contains("max_locks_per_transaction 10 × (max_connections 10"),
        "{line}"
    );
    assert!(
        stderr(&out).contains("raise max_locks_per_transaction"),
        "{}",
        stderr(&out)
    );

    let out = s.ws.dr(&cfg, &["backup"]);
    assert_exit_code(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("out of shared memory"), "{err}");
    assert!(
        err.contains("You might need to increase"),
        "the server's hint is lost:\n{err}"
    );
    // Whichever locked last (the row counting or a pg_dump), dr says what to do.
    assert!(
        err.contains("hint: ")
            && err.contains("`dr check` says whether the lock table is big enough"),
        "{err}"
    );
    assert!(manifests(&repo).is_empty(), "a manifest was written");
}
