//! Real sandboxes: a local PostgreSQL 15 cluster and docker containers from the local
//! `dr-test/postgres:15` image (built by `ci/pg-image.sh 15`).
//!
//! Tests run one at a time (`SERIAL`) so that `leftover_containers()` sees only their own
//! sandboxes.

use std::time::{Duration, Instant};

use dr_sandbox::{SandboxError, SandboxKind, SandboxSpec};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const MAJOR: u32 = 15;

fn spec(kind: SandboxKind, image: Option<&str>, ready_timeout: Duration) -> SandboxSpec {
    SandboxSpec {
        kind,
        major: MAJOR,
        image: image.map(str::to_string),
        pg_bin_dir: None,
        ready_timeout,
    }
}

async fn select_one(url: &str) {
    let client = dr_pg::ConnInfo::parse(url)
        .expect("sandbox url parses")
        .connect()
        .await
        .expect("connect to the sandbox");
    let row = client
        .query_one("select 1::int", &[])
        .await
        .expect("select 1");
    assert_eq!(row.get::<_, i32>(0), 1);
}

/// The test image, or None (with a message) when docker or the image is missing.
async fn docker_image() -> Option<String> {
    if !dr_sandbox::docker_available().await {
        eprintln!("SKIP: no Docker engine answers");
        return None;
    }
    let image = format!("dr-test/postgres:{MAJOR}");
    let present = std::process::Command::new("docker")
        .args(["image", "inspect", &image])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !present {
        eprintln!("SKIP: image {image} is missing; build it with `bash ci/pg-image.sh {MAJOR}`");
        return None;
    }
    Some("dr-test/postgres:{major}".to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_sandbox_starts_answers_and_is_destroyed() {
    let _serial = SERIAL.lock().await;
    let t = Instant::now();
    let mut sb = dr_sandbox::start(&spec(SandboxKind::Local, None, Duration::from_secs(60)))
        .await
        .expect("local sandbox starts");
    eprintln!(
        "local sandbox started in {:?}: {}",
        t.elapsed(),
        sb.describe()
    );
    assert_eq!(sb.kind(), SandboxKind::Local);
    assert_eq!(sb.major(), MAJOR);
    let url = sb.url();
    select_one(&url).await;

    let leftovers = dr_sandbox::leftover_containers().await;
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    let dir = std::path::PathBuf::from(&leftovers[0]);
    assert!(dir.join("data").is_dir(), "{dir:?}");
    let port = dr_pg::ConnInfo::parse(&url).expect("url").port();

    sb.destroy().await.expect("destroy");
    sb.destroy().await.expect("destroy is idempotent");
    assert!(!dir.exists(), "{dir:?} removed");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} closed"
    );
    assert!(dr_sandbox::leftover_containers().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_sandbox_dropped_without_destroy_is_cleaned_up() {
    let _serial = SERIAL.lock().await;
    let sb = dr_sandbox::start(&spec(SandboxKind::Local, None, Duration::from_secs(60)))
        .await
        .expect("local sandbox starts");
    let port = dr_pg::ConnInfo::parse(&sb.url()).expect("url").port();
    drop(sb);
    assert!(dr_sandbox::leftover_containers().await.is_empty());
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_sandbox_of_a_missing_major_is_a_clear_error() {
    let _serial = SERIAL.lock().await;
    let mut s = spec(SandboxKind::Local, None, Duration::from_secs(10));
    s.major = 99;
    let e = dr_sandbox::start(&s).await.err().expect("no PostgreSQL 99");
    let msg = e.to_string();
    assert!(
        msg.contains("initdb") && msg.contains("99") && e.hint().is_some(),
        "{msg}"
    );
    assert!(dr_sandbox::leftover_containers().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_sandbox_starts_answers_and_is_destroyed() {
    let _serial = SERIAL.lock().await;
    let Some(image) = docker_image().await else {
        return;
    };
    let t = Instant::now();
    let mut sb = dr_sandbox::start(&spec(
        SandboxKind::Docker,
        Some(&image),
        Duration::from_secs(120),
    ))
    .await
    .expect("docker sandbox starts");
    eprintln!(
        "docker sandbox started in {:?}: {}",
        t.elapsed(),
        sb.describe()
    );
    assert_eq!(sb.kind(), SandboxKind::Docker);
    assert_eq!(sb.major(), MAJOR);
    assert!(
        sb.describe().contains("dr-test/postgres:15"),
        "{}",
        sb.describe()
    );
    select_one(&sb.url()).await;
    assert_eq!(dr_sandbox::leftover_containers().await.len(), 1);

    sb.destroy().await.expect("destroy");
    sb.destroy().await.expect("destroy is idempotent");
    let left = dr_sandbox::leftover_containers().await;
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_sandbox_of_a_missing_image_fails_fast() {
    let _serial = SERIAL.lock().await;
    if docker_image().await.is_none() {
        return;
    }
    let t = Instant::now();
    let e = dr_sandbox::start(&spec(
        SandboxKind::Docker,
        Some("dr-test/nope:1"),
        Duration::from_secs(60),
    ))
    .await
    .err()
    .expect("no such image");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(matches!(e, SandboxError::ImageMissing { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("image `dr-test/nope:1` is not available locally") && e.hint().is_some(),
        "{msg}"
    );
    assert!(dr_sandbox::leftover_containers().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_sandbox_that_never_gets_ready_times_out_and_is_removed() {
    let _serial = SERIAL.lock().await;
    let Some(image) = docker_image().await else {
        return;
    };
    // initdb alone takes longer than this.
    let t = Instant::now();
    let e = dr_sandbox::start(&spec(
        SandboxKind::Docker,
        Some(&image),
        Duration::from_secs(1),
    ))
    .await
    .err()
    .expect("cannot be ready within 1s");
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    let msg = e.to_string();
    eprintln!("{msg}");
    assert!(
        msg.contains("sandbox did not accept connections within 1s"),
        "{msg}"
    );
    let left = dr_sandbox::leftover_containers().await;
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_sandbox_dropped_without_destroy_is_removed() {
    let _serial = SERIAL.lock().await;
    let Some(image) = docker_image().await else {
        return;
    };
    let sb = dr_sandbox::start(&spec(
        SandboxKind::Docker,
        Some(&image),
        Duration::from_secs(120),
    ))
    .await
    .expect("docker sandbox starts");
    drop(sb);
    let left = dr_sandbox::leftover_containers().await;
    assert!(left.is_empty(), "{left:?}");
}

/// `docker …` with `args`; its stdout (the test fails if docker does).
fn docker_cli(args: &[&str]) -> String {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Ids of the containers carrying this process's `dr.sandbox.pid` label, stopped ones too.
fn labelled_containers() -> Vec<String> {
    let filter = format!("label=dr.sandbox.pid={}", std::process::id());
    docker_cli(&["ps", "--all", "--quiet", "--no-trunc", "--filter", &filter])
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_sandbox_port_is_on_loopback_only_and_destroy_leaves_no_container() {
    let _serial = SERIAL.lock().await;
    let Some(image) = docker_image().await else {
        return;
    };
    let mut sb = dr_sandbox::start(&spec(
        SandboxKind::Docker,
        Some(&image),
        Duration::from_secs(120),
    ))
    .await
    .expect("docker sandbox starts");
    let ids = labelled_containers();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let id = &ids[0];
    assert_eq!(
        docker_cli(&[
            "inspect",
            "--format",
            "{{index .Config.Labels \"dr.sandbox\"}}",
            id
        ]),
        "1"
    );

    // `docker port` lists every host address the port is published on: only 127.0.0.1.
    let published = docker_cli(&["port", id, "5432/tcp"]);
    let addresses: Vec<&str> = published.lines().collect();
    assert_eq!(addresses.len(), 1, "{published}");
    let (host, port) = addresses[0].rsplit_once(':').expect("HOST:PORT");
    assert_eq!(host, "127.0.0.1", "{published}");
    let url = sb.url();
    assert_eq!(
        dr_pg::ConnInfo::parse(&url)
            .expect("url")
            .port()
            .to_string(),
        port
    );
    assert!(url.contains("@127.0.0.1:"), "sandbox url names loopback");
    select_one(&url).await;
    let described = sb.describe();
    assert!(described.contains(&id[..12]), "{described}");

    sb.destroy().await.expect("destroy");
    assert_eq!(sb.describe(), described, "still names the container");
    let left = labelled_containers();
    assert!(left.is_empty(), "{left:?}");
}

/// `dr-test/exits:15`: the test image with an entrypoint that fails at once (made with
/// `docker commit`, no registry needed).
fn exiting_image(base: &str) -> String {
    let image = "dr-test/exits:15";
    let container = docker_cli(&["create", base]);
    let made = docker_cli(&[
        "commit",
        "--change",
        r#"ENTRYPOINT ["sh", "-c", "echo 'FATAL: boom from the image' >&2; exit 3"]"#,
        &container,
        image,
    ]);
    assert!(!made.is_empty());
    docker_cli(&["rm", &container]);
    image.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_sandbox_whose_container_exits_fails_at_once_with_its_log() {
    let _serial = SERIAL.lock().await;
    let Some(image) = docker_image().await else {
        return;
    };
    let image = exiting_image(&image.replace("{major}", &MAJOR.to_string()));
    let t = Instant::now();
    let e = dr_sandbox::start(&spec(
        SandboxKind::Docker,
        Some(&image),
        Duration::from_secs(60),
    ))
    .await
    .err()
    .expect("the container exits");
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    assert!(matches!(e, SandboxError::Exited { .. }), "{e:?}");
    let msg = e.to_string();
    eprintln!("{msg}");
    assert!(
        msg.contains("exited before accepting connections") && msg.contains("FATAL: boom"),
        "{msg}"
    );
    let left = dr_sandbox::leftover_containers().await;
    assert!(left.is_empty(), "{left:?}");
    let _ = std::process::Command::new("docker")
        .args(["rmi", &image])
        .output();
}
