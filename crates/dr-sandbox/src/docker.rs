//! The docker sandbox: a container from a local image, driven through the Docker Engine API
//! (`bollard`): create, start, wait until a connection works, stop, remove.
//!
//! The container's port 5432 is published on 127.0.0.1 only, on a port the engine picks; the
//! image is never pulled; every container carries the labels [`LABEL`], [`PID_LABEL`] and
//! [`IMAGE_LABEL`].

use std::collections::HashMap;
use std::time::Duration;

use bollard::container::{
    Config, CreateContainerOptions, InspectContainerOptions, ListContainersOptions, LogsOptions,
    RemoveContainerOptions, StartContainerOptions, StopContainerOptions,
};
use bollard::errors::Error as DockerError;
use bollard::models::{HostConfig, PortBinding};
use bollard::Docker;

use crate::{random_token, wait_for_connection, Sandbox, SandboxError, SandboxKind, SandboxSpec};

/// Every sandbox container: `dr.sandbox=1`.
pub(crate) const LABEL: &str = "dr.sandbox";
/// The process that created it: `dr.sandbox.pid=PID` (what [`leftovers`] lists).
pub(crate) const PID_LABEL: &str = "dr.sandbox.pid";
/// The image it runs (`{major}` replaced): `dr.sandbox.image=postgres:15`.
pub(crate) const IMAGE_LABEL: &str = "dr.sandbox.image";
const PG_PORT: &str = "5432/tcp";
const LOG_LINES: usize = 20;
/// How long one Docker API call may take before the engine counts as not answering.
const API_TIMEOUT: Duration = Duration::from_secs(30);
/// `docker stop` grace: the server holds nothing worth a checkpoint (fsync is off).
const STOP_GRACE_SECS: i64 = 5;

pub(crate) struct DockerSandbox {
    docker: Docker,
    /// Container id.
    id: String,
    /// Set once the container is gone: nothing left for `destroy` or `Drop` to do.
    removed: bool,
    /// Container name (`dr-sandbox-PID-xxxxxxxx`).
    name: String,
    image: String,
    url: String,
    major: u32,
}

fn client() -> Result<Docker, SandboxError> {
    Docker::connect_with_local_defaults().map_err(|e| SandboxError::DockerUnavailable {
        detail: e.to_string(),
    })
}

fn is_status(e: &DockerError, status: u16) -> bool {
    matches!(e, DockerError::DockerResponseServerError { status_code, .. } if *status_code == status)
}

/// Run one Docker API call, bounded by [`API_TIMEOUT`]; errors name `action`.
async fn call<T>(
    action: impl FnOnce() -> String,
    fut: impl std::future::Future<Output = Result<T, DockerError>>,
) -> Result<T, SandboxError> {
    match tokio::time::timeout(API_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(SandboxError::Docker {
            action: action(),
            detail: e.to_string(),
            hint: None,
        }),
        Err(_) => Err(SandboxError::Docker {
            action: action(),
            detail: format!(
                "no answer from the Docker engine within {}s",
                API_TIMEOUT.as_secs()
            ),
            hint: None,
        }),
    }
}

/// Does the engine answer a ping within 2s?
pub(crate) async fn available() -> bool {
    let Ok(docker) = Docker::connect_with_local_defaults() else {
        return false;
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), docker.ping()).await,
        Ok(Ok(_))
    )
}

/// Names of the containers this process created that still exist.
pub(crate) async fn leftovers() -> Vec<String> {
    let Ok(docker) = Docker::connect_with_local_defaults() else {
        return Vec::new();
    };
    let pid_filter = format!("{PID_LABEL}={}", std::process::id());
    let filters = HashMap::from([("label", vec![pid_filter.as_str()])]);
    let opts = ListContainersOptions {
        all: true,
        filters,
        ..Default::default()
    };
    match tokio::time::timeout(Duration::from_secs(10), docker.list_containers(Some(opts))).await {
        Ok(Ok(list)) => list
            .into_iter()
            .map(|c| {
                c.names
                    .and_then(|n| n.into_iter().next())
                    .map(|n| n.trim_start_matches('/').to_string())
                    .or(c.id)
                    .unwrap_or_default()
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Remove a container (killing it if it runs, with its anonymous volumes). "No such
/// container" counts as removed.
async fn remove(docker: &Docker, id: &str) -> Result<(), DockerError> {
    let opts = RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    };
    match docker.remove_container(id, Some(opts)).await {
        Ok(()) => Ok(()),
        Err(e) if is_status(&e, 404) => Ok(()),
        Err(e) => Err(e),
    }
}

/// [`remove`], bounded and logged: for the failure paths of `start`, where the first error is
/// the one to report.
async fn remove_quietly(docker: &Docker, id: &str) {
    match tokio::time::timeout(API_TIMEOUT, remove(docker, id)).await {
        Ok(Ok(())) => tracing::debug!("removed container {id}"),
        Ok(Err(e)) => {
            tracing::warn!("could not remove sandbox container {id}: {e}\nhint: docker rm -f {id}");
        }
        Err(_) => tracing::warn!(
            "could not remove sandbox container {id}: no answer from the Docker engine\nhint: docker rm -f {id}"
        ),
    }
}

/// Synchronous best-effort removal, for `Drop`.
///
/// It runs on a new OS thread with its own current-thread runtime and its own Docker client,
/// and the caller joins that thread. This cannot deadlock: nothing it does waits on the
/// caller's runtime, which may be a current-thread runtime (where `block_in_place` panics and
/// a task spawned on it would never run while we block), may be shutting down (drops during
/// runtime teardown), or may not exist at all. The removal is bounded by [`API_TIMEOUT`], so
/// a hung engine delays the drop but never blocks it forever.
fn remove_blocking(id: &str) -> Result<(), String> {
    let id = id.to_string();
    let worker = std::thread::Builder::new()
        .name("dr-sandbox-drop".into())
        .spawn(move || -> Result<(), String> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start a runtime: {e}"))?;
            rt.block_on(async {
                let docker = Docker::connect_with_local_defaults().map_err(|e| e.to_string())?;
                match tokio::time::timeout(API_TIMEOUT, remove(&docker, &id)).await {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(_) => Err("no answer from the Docker engine".into()),
                }
            })
        })
        .map_err(|e| format!("cannot start a thread: {e}"))?;
    worker
        .join()
        .unwrap_or_else(|_| Err("the removal thread panicked".into()))
}

/// The container's last log lines (both streams), if it still exists.
async fn container_logs(docker: &Docker, id: &str) -> Vec<String> {
    use futures::StreamExt;
    let opts = LogsOptions::<String> {
        stdout: true,
        stderr: true,
        tail: LOG_LINES.to_string(),
        ..Default::default()
    };
    let mut stream = docker.logs(id, Some(opts));
    let mut text = String::new();
    let collect = async {
        while let Some(Ok(chunk)) = stream.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), collect).await;
    crate::last_lines(&text, LOG_LINES)
}

/// The host port the engine published the container's 5432 on, on 127.0.0.1.
async fn published_port(docker: &Docker, id: &str, name: &str) -> Result<u16, SandboxError> {
    let action = || format!("finding the published port of container {name}");
    let info = call(
        action,
        docker.inspect_container(id, None::<InspectContainerOptions>),
    )
    .await?;
    let bindings = info
        .network_settings
        .and_then(|n| n.ports)
        .and_then(|mut p| p.remove(PG_PORT).flatten())
        .unwrap_or_default();
    bindings
        .iter()
        .filter(|b| b.host_ip.as_deref() == Some("127.0.0.1"))
        .find_map(|b| b.host_port.as_deref()?.parse::<u16>().ok())
        .ok_or_else(|| SandboxError::Docker {
            action: action(),
            detail: format!("no 127.0.0.1 binding for {PG_PORT} (bindings: {bindings:?})"),
            hint: None,
        })
}

/// Is the container still running? `None` when the engine does not say.
async fn running(docker: &Docker, id: &str) -> Option<bool> {
    let info = tokio::time::timeout(
        Duration::from_secs(5),
        docker.inspect_container(id, None::<InspectContainerOptions>),
    )
    .await
    .ok()?
    .ok()?;
    info.state?.running
}

/// The container definition: the official postgres image's conventions, port 5432 published
/// on 127.0.0.1 only (host port chosen by the engine), labelled as dr's.
fn container_config(image: &str, password: &str) -> Config<String> {
    let port_bindings = HashMap::from([(
        PG_PORT.to_string(),
        Some(vec![PortBinding {
            host_ip: Some("127.0.0.1".into()),
            host_port: Some(String::new()),
        }]),
    )]);
    let cmd = [
        "postgres",
        "-c",
        "fsync=off",
        "-c",
        "full_page_writes=off",
        "-c",
        "synchronous_commit=off",
    ];
    Config {
        image: Some(image.to_string()),
        env: Some(vec![
            format!("POSTGRES_PASSWORD={password}"),
            "POSTGRES_USER=postgres".into(),
            "POSTGRES_DB=postgres".into(),
        ]),
        cmd: Some(cmd.iter().map(|s| (*s).to_string()).collect()),
        labels: Some(HashMap::from([
            (LABEL.to_string(), "1".to_string()),
            (PID_LABEL.to_string(), std::process::id().to_string()),
            (IMAGE_LABEL.to_string(), image.to_string()),
        ])),
        exposed_ports: Some(HashMap::from([(PG_PORT.to_string(), HashMap::new())])),
        host_config: Some(HostConfig {
            port_bindings: Some(port_bindings),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl DockerSandbox {
    pub(crate) async fn start(spec: &SandboxSpec) -> Result<DockerSandbox, SandboxError> {
        let image = spec.image_name();
        let docker = client()?;
        // Never pull: a missing image is the operator's to build or load.
        match tokio::time::timeout(Duration::from_secs(10), docker.inspect_image(&image)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if is_status(&e, 404) => return Err(SandboxError::ImageMissing { image }),
            Ok(Err(e)) => {
                return Err(SandboxError::DockerUnavailable {
                    detail: e.to_string(),
                })
            }
            Err(_) => {
                return Err(SandboxError::DockerUnavailable {
                    detail: "no answer within 10s".into(),
                })
            }
        }

        let deadline = tokio::time::Instant::now() + spec.ready_timeout;
        let password = random_token(24);
        let name = format!(
            "dr-sandbox-{}-{}",
            std::process::id(),
            random_token(8).to_lowercase()
        );
        let created = call(
            || format!("creating container {name} from image {image}"),
            docker.create_container(
                Some(CreateContainerOptions {
                    name: name.as_str(),
                    platform: None,
                }),
                container_config(&image, &password),
            ),
        )
        .await;
        let id = match created {
            Ok(c) => c.id,
            Err(e) => {
                // A create that timed out may still have happened.
                remove_quietly(&docker, &name).await;
                return Err(e);
            }
        };
        let mut sandbox = DockerSandbox {
            docker,
            id,
            removed: false,
            name,
            image,
            url: String::new(),
            major: spec.major,
        };
        match sandbox.run(spec, &password, deadline).await {
            Ok(()) => Ok(sandbox),
            Err(e) => {
                remove_quietly(&sandbox.docker, &sandbox.id).await;
                sandbox.removed = true;
                Err(e)
            }
        }
    }

    /// Start the created container, learn its port, and wait until a real connection works
    /// (the official image runs a temporary server during initdb, listening on no TCP port);
    /// check the server is new enough.
    async fn run(
        &mut self,
        spec: &SandboxSpec,
        password: &str,
        deadline: tokio::time::Instant,
    ) -> Result<(), SandboxError> {
        let id = self.id.clone();
        let what = format!("docker image {}, container {}", self.image, self.name);
        call(
            || format!("starting {what}"),
            self.docker
                .start_container(&id, None::<StartContainerOptions<String>>),
        )
        .await?;
        let exited_error = |log| {
            SandboxError::Exited {
            what: what.clone(),
            log,
            hint: "the image must behave like the official postgres image (POSTGRES_PASSWORD, `postgres -c …` as its command)".into(),
        }
        };
        let port = match published_port(&self.docker, &id, &self.name).await {
            Ok(p) => p,
            // A container that already exited has no bindings: say that it exited, not that
            // its port is missing.
            Err(e) => {
                if running(&self.docker, &id).await == Some(false) {
                    return Err(exited_error(container_logs(&self.docker, &id).await));
                }
                return Err(e);
            }
        };
        self.url = format!("postgres://postgres:{password}@127.0.0.1:{port}/postgres");

        // Connect until the deadline; meanwhile watch the container, so that one that exits
        // (a bad image, a crash in initdb) fails at once with its log instead of timing out.
        let exited = async {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if running(&self.docker, &id).await == Some(false) {
                    return;
                }
            }
        };
        let connected = tokio::select! {
            r = wait_for_connection(&self.url, deadline) => r,
            () = exited => {
                return Err(exited_error(container_logs(&self.docker, &id).await));
            }
        };
        let major = match connected {
            Ok(major) => major,
            Err(last) => {
                return Err(SandboxError::NotReady {
                    secs: spec.ready_timeout.as_secs(),
                    what: format!("{what}; last error: {last}"),
                    log: container_logs(&self.docker, &id).await,
                    hint: "raise verify.ready_timeout, or check the image starts with `docker run -e POSTGRES_PASSWORD=x IMAGE`".into(),
                });
            }
        };
        if major < spec.major {
            return Err(SandboxError::ImageTooOld {
                image: self.image.clone(),
                found: major,
                wanted: spec.major,
            });
        }
        self.major = major;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Sandbox for DockerSandbox {
    fn url(&self) -> String {
        self.url.clone()
    }

    fn kind(&self) -> SandboxKind {
        SandboxKind::Docker
    }

    fn describe(&self) -> String {
        let short: String = self.id.chars().take(12).collect();
        format!("docker image {} (container {short})", self.image)
    }

    fn major(&self) -> u32 {
        self.major
    }

    async fn destroy(&mut self) -> Result<(), SandboxError> {
        if self.removed {
            return Ok(());
        }
        let id = self.id.clone();
        // Stop first so the server shuts down cleanly; a failed stop is not fatal, the forced
        // removal below kills it anyway.
        let stop = self
            .docker
            .stop_container(&id, Some(StopContainerOptions { t: STOP_GRACE_SECS }));
        let grace = Duration::from_secs(STOP_GRACE_SECS.unsigned_abs() + 10);
        match tokio::time::timeout(grace, stop).await {
            Ok(Ok(())) => {}
            // 304: already stopped; 404: already gone.
            Ok(Err(e)) if is_status(&e, 304) || is_status(&e, 404) => {}
            Ok(Err(e)) => tracing::debug!("stopping sandbox container {}: {e}", self.name),
            Err(_) => tracing::debug!("stopping sandbox container {}: timed out", self.name),
        }
        call(
            || format!("removing sandbox container {}", self.name),
            remove(&self.docker, &id),
        )
        .await
        .map_err(|e| match e {
            SandboxError::Docker { action, detail, .. } => SandboxError::Docker {
                action,
                detail,
                hint: Some(format!("docker rm -f {id}")),
            },
            other => other,
        })?;
        self.removed = true;
        Ok(())
    }
}

impl Drop for DockerSandbox {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        self.removed = true;
        let id = self.id.clone();
        tracing::warn!(
            "sandbox container {} was not destroyed; removing it now",
            self.name
        );
        if let Err(e) = remove_blocking(&id) {
            tracing::warn!(
                "could not remove sandbox container {}: {e}\nhint: docker rm -f {id}",
                self.name
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_is_published_on_loopback_only() {
        let config = container_config("postgres:15", "secret");
        let bindings = config
            .host_config
            .and_then(|h| h.port_bindings)
            .and_then(|mut p| p.remove(PG_PORT).flatten())
            .unwrap_or_default();
        assert_eq!(
            bindings,
            vec![PortBinding {
                host_ip: Some("127.0.0.1".into()),
                host_port: Some(String::new()),
            }]
        );
        let labels = config.labels.unwrap_or_default();
        assert_eq!(labels.get(LABEL).map(String::as_str), Some("1"));
        assert_eq!(labels.get(PID_LABEL), Some(&std::process::id().to_string()));
    }
}
