//! `--stack testcontainers`: LocalStack's own container, started through the
//! `testcontainers` crate (Docker), waited on, and removed when the stack
//! drops. The image tag is a setting (`COURIER_LOCALSTACK_TAG`, default
//! [`DEFAULT_TAG`]); `LOCALSTACK_AUTH_TOKEN` is passed through for Pro images.
//!
//! Where no Docker engine answers, it fails at once with a message that says
//! so and names the Docker-free default target, `local`.

use std::path::Path;
use std::time::Duration;

use testcontainers::core::ContainerPort;
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, ImageExt};
use testcontainers_modules::localstack::LocalStack;

use crate::StackError;

/// The LocalStack image tag used unless `COURIER_LOCALSTACK_TAG` names another
/// (the same release the `local` target installs in host mode).
pub const DEFAULT_TAG: &str = "4.13.1";

/// LocalStack's single edge port inside the container.
const EDGE_PORT: u16 = 4566;

/// A running LocalStack container and the URL that reaches it.
pub struct StartedContainer {
    pub url: String,
    pub tag: String,
    /// Removing the container is its `Drop`.
    pub container: ContainerAsync<LocalStack>,
}

impl std::fmt::Debug for StartedContainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartedContainer")
            .field("url", &self.url)
            .field("tag", &self.tag)
            .finish()
    }
}

fn no_docker(reason: &str) -> StackError {
    StackError::Config(format!(
        "the testcontainers target needs a Docker engine, and none answered ({reason}); \
         the default target `local` (--stack local) runs the same services as host processes without Docker"
    ))
}

/// Whether a Docker engine could be reached at all: `DOCKER_HOST`, else the
/// usual socket. Checked first so that a machine without Docker fails at once.
fn docker_reachable() -> Result<(), StackError> {
    if let Ok(host) = std::env::var("DOCKER_HOST") {
        if !host.trim().is_empty() {
            return Ok(());
        }
    }
    let socket = Path::new("/var/run/docker.sock");
    if !socket.exists() {
        return Err(no_docker("no DOCKER_HOST and no /var/run/docker.sock"));
    }
    #[cfg(unix)]
    std::os::unix::net::UnixStream::connect(socket).map_err(|e| no_docker(&format!("/var/run/docker.sock: {e}")))?;
    Ok(())
}

/// Starts LocalStack's container and waits until it is ready.
pub async fn start(timeout: Duration) -> Result<StartedContainer, StackError> {
    docker_reachable()?;
    let tag = std::env::var("COURIER_LOCALSTACK_TAG")
        .ok()
        .filter(|t| !t.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_TAG.to_string());
    let mut request = LocalStack::default()
        .with_tag(tag.clone())
        .with_env_var("SERVICES", "sqs,s3,ses,dynamodb")
        .with_startup_timeout(timeout);
    if let Ok(token) = std::env::var("LOCALSTACK_AUTH_TOKEN") {
        request = request.with_env_var("LOCALSTACK_AUTH_TOKEN", token);
    }
    let container = request
        .start()
        .await
        .map_err(|e| no_docker(&format!("starting localstack/localstack:{tag}: {e}")))?;
    let port = container
        .get_host_port_ipv4(ContainerPort::Tcp(EDGE_PORT))
        .await
        .map_err(|e| StackError::Config(format!("reading the container's port {EDGE_PORT}: {e}")))?;
    let host = container
        .get_host()
        .await
        .map_err(|e| StackError::Config(format!("reading the container's host: {e}")))?;
    Ok(StartedContainer {
        url: format!("http://{host}:{port}"),
        tag,
        container,
    })
}
