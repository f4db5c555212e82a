//! The docker sandbox: a container from a local image, through `testcontainers`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use testcontainers::bollard::container::{
    ListContainersOptions, LogsOptions, RemoveContainerOptions,
};
use testcontainers::bollard::Docker;
use testcontainers::core::error::WaitContainerError;
use testcontainers::core::logs::LogFrame;
use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt, TestcontainersError};

use crate::{random_token, wait_for_connection, Sandbox, SandboxError, SandboxKind, SandboxSpec};

const READY_LINE: &str = "database system is ready to accept connections";
const LABEL: &str = "dr.sandbox";
const PID_LABEL: &str = "dr.sandbox.pid";
const LOG_LINES: usize = 20;

pub(crate) struct DockerSandbox {
    container: Option<ContainerAsync<GenericImage>>,
    /// Container name (`dr-sandbox-PID-XXXX`), used for cleanup when the id is not at hand.
    name: String,
    id: String,
    image: String,
    url: String,
    major: u32,
}

fn client() -> Result<Docker, SandboxError> {
    Docker::connect_with_local_defaults().map_err(|e| SandboxError::DockerUnavailable {
        detail: e.to_string(),
    })
}

pub(crate) async fn available() -> bool {
    let Ok(docker) = Docker::connect_with_local_defaults() else {
        return false;
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), docker.ping()).await,
        Ok(Ok(_))
    )
}

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

/// `name:tag` → (name, tag); `registry:5000/pg` → (…, "latest").
fn split_image(image: &str) -> (String, String) {
    let slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[slash..].rfind(':') {
        Some(i) => (
            image[..slash + i].to_string(),
            image[slash + i + 1..].to_string(),
        ),
        None => (image.to_string(), "latest".to_string()),
    }
}

/// Remove a container by name or id, ignoring "no such container".
async fn remove(docker: &Docker, name: &str) {
    let opts = RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    };
    match docker.remove_container(name, Some(opts)).await {
        Ok(()) => tracing::debug!("removed container {name}"),
        Err(testcontainers::bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }) => {}
        Err(e) => tracing::warn!(
            "could not remove sandbox container {name}: {e}\nhint: docker rm -f {name}"
        ),
    }
}

/// The container's last log lines (both streams), if it still exists.
async fn container_logs(docker: &Docker, name: &str) -> Vec<String> {
    use futures::StreamExt;
    let opts = LogsOptions::<String> {
        stdout: true,
        stderr: true,
        tail: LOG_LINES.to_string(),
        ..Default::default()
    };
    let mut stream = docker.logs(name, Some(opts));
    let mut text = String::new();
    let collect = async {
        while let Some(Ok(chunk)) = stream.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), collect).await;
    crate::last_lines(&text, LOG_LINES)
}

type LogBuffer = Arc<Mutex<VecDeque<String>>>;

fn buffered(buf: &LogBuffer) -> Vec<String> {
    match buf.lock() {
        Ok(g) => g.iter().cloned().collect(),
        Err(p) => p.into_inner().iter().cloned().collect(),
    }
}

impl DockerSandbox {
    pub(crate) async fn start(spec: &SandboxSpec) -> Result<DockerSandbox, SandboxError> {
        let image = spec.image_name();
        let docker = client()?;
        // Fail fast on a missing image: testcontainers would try to pull it.
        match tokio::time::timeout(Duration::from_secs(10), docker.inspect_image(&image)).await {
            Ok(Ok(_)) => {}
            Ok(Err(testcontainers::bollard::errors::Error::DockerResponseServerError {
                status_code: 404,
                ..
            })) => return Err(SandboxError::ImageMissing { image }),
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

        let password = random_token(24);
        let name = format!(
            "dr-sandbox-{}-{}",
            std::process::id(),
            random_token(8).to_lowercase()
        );
        let logs: LogBuffer = Arc::new(Mutex::new(VecDeque::new()));
        let sink = logs.clone();
        let consumer = move |frame: &LogFrame| {
            let text = String::from_utf8_lossy(frame.bytes()).into_owned();
            let mut g = match sink.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                if g.len() == LOG_LINES {
                    g.pop_front();
                }
                g.push_back(line.trim_end().to_string());
            }
        };

        let (repo, tag) = split_image(&image);
        let request = GenericImage::new(repo, tag)
            .with_exposed_port(5432.tcp())
            .with_wait_for(WaitFor::message_on_stderr(READY_LINE))
            .with_env_var("POSTGRES_PASSWORD", password.as_str())
            .with_env_var("POSTGRES_USER", "postgres")
            .with_env_var("POSTGRES_DB", "postgres")
            .with_cmd([
                "postgres",
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "synchronous_commit=off",
            ])
            .with_label(LABEL, "1")
            .with_label(PID_LABEL, std::process::id().to_string())
            .with_container_name(name.as_str())
            .with_startup_timeout(spec.ready_timeout)
            .with_log_consumer(consumer);

        let deadline = tokio::time::Instant::now() + spec.ready_timeout;
        let secs = spec.ready_timeout.as_secs();
        let what = format!("docker image {image}, container {name}");
        // testcontainers bounds start + wait by the startup timeout; the outer bound covers the
        // rest (container creation) should the engine hang.
        let started = tokio::time::timeout(
            spec.ready_timeout + Duration::from_secs(30),
            request.start(),
        )
        .await;
        let container = match started {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                let mut log = buffered(&logs);
                if log.is_empty() {
                    log = container_logs(&docker, &name).await;
                }
                remove(&docker, &name).await;
                return Err(match e {
                    TestcontainersError::WaitContainer(WaitContainerError::StartupTimeout) => {
                        SandboxError::NotReady {
                            secs,
                            what,
                            log,
                            hint: "raise verify.ready_timeout, or check the image starts with `docker run -e POSTGRES_PASSWORD=x IMAGE`".into(),
                        }
                    }
                    TestcontainersError::WaitContainer(WaitContainerError::WaitLog(_)) => {
                        SandboxError::Exited {
                            what,
                            log,
                            hint: "the image must behave like the official postgres image (POSTGRES_PASSWORD, readiness line on stderr)".into(),
                        }
                    }
                    other => SandboxError::Docker {
                        action: format!("starting {what}"),
                        detail: other.to_string(),
                    },
                });
            }
            Err(_) => {
                let log = buffered(&logs);
                remove(&docker, &name).await;
                return Err(SandboxError::NotReady {
                    secs,
                    what,
                    log,
                    hint: "the Docker engine did not create the container in time; check `docker info`".into(),
                });
            }
        };

        let id = container.id().to_string();
        let mut sandbox = DockerSandbox {
            container: Some(container),
            name,
            id,
            image,
            url: String::new(),
            major: spec.major,
        };
        match sandbox.connect(spec, &password, deadline, &logs).await {
            Ok(()) => Ok(sandbox),
            Err(e) => {
                if let Err(d) = sandbox.destroy().await {
                    tracing::warn!("{d}");
                }
                Err(e)
            }
        }
    }

    /// Work out the URL and wait until a real connection works (the log line can precede the
    /// TCP listener); check the server is new enough.
    async fn connect(
        &mut self,
        spec: &SandboxSpec,
        password: &str,
        deadline: tokio::time::Instant,
        logs: &LogBuffer,
    ) -> Result<(), SandboxError> {
        let Some(container) = self.container.as_ref() else {
            return Err(SandboxError::Docker {
                action: "starting the sandbox".into(),
                detail: "container vanished".into(),
            });
        };
        let port = container
            .get_host_port_ipv4(5432)
            .await
            .map_err(|e| SandboxError::Docker {
                action: format!("finding the published port of container {}", self.name),
                detail: e.to_string(),
            })?;
        let host = match container.get_host().await {
            Ok(h) if h.to_string() != "localhost" => h.to_string(),
            _ => "127.0.0.1".to_string(),
        };
        self.url = format!("postgres://postgres:{password}@{host}:{port}/postgres");
        let major = wait_for_connection(&self.url, deadline)
            .await
            .map_err(|last| SandboxError::NotReady {
                secs: spec.ready_timeout.as_secs(),
                what: format!(
                    "docker image {}, container {}; last error: {last}",
                    self.image, self.name
                ),
                log: buffered(logs),
                hint:
                    "raise verify.ready_timeout, or check the published port is reachable from here"
                        .into(),
            })?;
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
        let Some(container) = self.container.take() else {
            return Ok(());
        };
        let id = self.id.clone();
        container.rm().await.map_err(|e| SandboxError::Docker {
            action: format!("removing sandbox container {}", self.name),
            detail: format!("{e}\nhint: docker rm -f {id}"),
        })
    }
}

impl Drop for DockerSandbox {
    fn drop(&mut self) {
        let Some(container) = self.container.take() else {
            return;
        };
        tracing::warn!(
            "sandbox container {} was not destroyed; removing it now",
            self.name
        );
        let removed = std::process::Command::new("docker")
            .args(["rm", "-f", "-v", &self.id])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if removed || tokio::runtime::Handle::try_current().is_err() {
            // Gone already (or no runtime for testcontainers' async drop, which would panic):
            // skip its drop, which would only repeat the removal.
            std::mem::forget(container);
        } else {
            drop(container); // testcontainers removes it on drop
        }
    }
}

#[cfg(test)]
mod tests {
    use super::split_image;

    #[test]
    fn image_names_split() {
        let s = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(split_image("postgres:15"), s("postgres", "15"));
        assert_eq!(
            split_image("dr-test/postgres:15"),
            s("dr-test/postgres", "15")
        );
        assert_eq!(split_image("postgres"), s("postgres", "latest"));
        assert_eq!(split_image("reg:5000/pg"), s("reg:5000/pg", "latest"));
        assert_eq!(
            split_image("reg:5000/pg:16-alpine"),
            s("reg:5000/pg", "16-alpine")
        );
    }
}
