//! The Docker Engine API (bollard) over a unix socket: the node's own, or one forwarded over
//! SSH. State is read as typed values, never by parsing `docker ps` text. It owns the
//! [`Container`] value refresh reports; what a container means for a plan is `observe`'s.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{ContainerSummary, ContainerSummaryStateEnum};
use bollard::query_parameters::ListContainersOptions;
use bollard::Docker;
use serde::{Deserialize, Serialize};

pub const COMPOSE_PROJECT_LABEL: &str = "com.docker.compose.project";
/// The compose key of a container (`migrate` of the project `tracker`).
pub const COMPOSE_SERVICE_LABEL: &str = "com.docker.compose.service";

/// A container of a compose project, as the engine reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    pub name: String,
    pub project: String,
    /// Its key in the compose file (the `com.docker.compose.service` label); empty when the
    /// engine does not say.
    #[serde(default)]
    pub service: String,
    pub state: String,
    /// The exit code of an exited container (the list's `Exited (0) …` is text: this is the
    /// engine's typed value, read by inspecting the container); `None` for any other state.
    #[serde(default)]
    pub exit_code: Option<i64>,
    pub health: Option<String>,
    pub image: String,
}

/// Why the engine's containers could not be listed. The node may still be reachable: refresh
/// reports the engine as unavailable and goes on.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("no Docker Engine at {socket}: {source}")]
    Connect { socket: String, source: bollard::errors::Error },
    #[error("the Docker Engine at {socket} did not answer within {after:?}")]
    NoAnswer { socket: String, after: Duration },
    #[error("cannot list containers: {source}")]
    List { source: bollard::errors::Error },
    /// The async runtime the client needs could not start on this machine.
    #[error("{source}")]
    Runtime { source: std::io::Error },
    #[error("cannot forward the Docker socket {socket}: {reason}")]
    Forward { socket: String, reason: String },
    #[error("forwarding the Docker socket timed out")]
    ForwardTimeout,
    #[error("poisoned")]
    Poisoned,
    #[error("socket path is not UTF-8")]
    SocketNotUtf8,
}

/// Lists the containers of compose projects on the engine at `socket`.
pub fn containers(
    rt: &tokio::runtime::Runtime,
    socket: &str,
    timeout: Duration,
) -> Result<Vec<Container>, DockerError> {
    rt.block_on(async {
        let docker = Docker::connect_with_unix(
            socket,
            timeout.as_secs().max(1),
            bollard::API_DEFAULT_VERSION,
        )
        .map_err(|source| DockerError::Connect { socket: socket.to_owned(), source })?;
        let no_answer = || DockerError::NoAnswer { socket: socket.to_owned(), after: timeout };
        let docker = tokio::time::timeout(timeout, docker.negotiate_version())
            .await
            .map_err(|_| no_answer())?
            .map_err(|source| DockerError::Connect { socket: socket.to_owned(), source })?;
        let mut filters = HashMap::new();
        filters.insert("label".to_owned(), vec![COMPOSE_PROJECT_LABEL.to_owned()]);
        let opts =
            ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
        let list = tokio::time::timeout(timeout, docker.list_containers(Some(opts)))
            .await
            .map_err(|_| no_answer())?
            .map_err(|source| DockerError::List { source })?;
        let mut out: Vec<Container> = Vec::with_capacity(list.len());
        for c in list {
            // The list reports an exit code only inside its `status` text ("Exited (0) 5
            // minutes ago"); an exited container (a one-shot init container, or one that
            // stopped) is inspected for the engine's typed value.
            let exit_code = match (&c.id, c.state) {
                (Some(id), Some(ContainerSummaryStateEnum::EXITED)) => {
                    tokio::time::timeout(timeout, docker.inspect_container(id, None))
                        .await
                        .map_err(|_| no_answer())?
                        .ok()
                        .and_then(|i| i.state?.exit_code)
                }
                _ => None,
            };
            out.push(container(c, exit_code));
        }
        out.sort_by(|a, b| (&a.project, &a.name).cmp(&(&b.project, &b.name)));
        Ok(out)
    })
}

/// A container of the engine's list as refresh reports it.
fn container(c: ContainerSummary, exit_code: Option<i64>) -> Container {
    let status = c.status.unwrap_or_default();
    let health = if status.contains("(unhealthy)") {
        Some("unhealthy".to_owned())
    } else if status.contains("(healthy)") {
        Some("healthy".to_owned())
    } else if status.contains("(health: starting)") {
        Some("starting".to_owned())
    } else {
        None
    };
    let labels = c.labels.unwrap_or_default();
    Container {
        name: c
            .names
            .unwrap_or_default()
            .first()
            .map(|n| n.trim_start_matches('/').to_owned())
            .unwrap_or_default(),
        project: labels.get(COMPOSE_PROJECT_LABEL).cloned().unwrap_or_default(),
        service: labels.get(COMPOSE_SERVICE_LABEL).cloned().unwrap_or_default(),
        state: c.state.map(|s| s.to_string()).unwrap_or_default(),
        exit_code,
        health,
        image: c.image.unwrap_or_default(),
    }
}
