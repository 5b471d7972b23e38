//! The Docker Engine API (bollard) over a unix socket: the node's own, or one forwarded over
//! SSH. State is read as typed values, never by parsing `docker ps` text.

use std::collections::HashMap;
use std::time::Duration;

use bollard::query_parameters::ListContainersOptions;
use bollard::Docker;

use crate::observe::Container;

pub const COMPOSE_PROJECT_LABEL: &str = "com.docker.compose.project";

/// Lists the containers of compose projects on the engine at `socket`.
pub fn containers(
    rt: &tokio::runtime::Runtime,
    socket: &str,
    timeout: Duration,
) -> Result<Vec<Container>, String> {
    rt.block_on(async {
        let docker = Docker::connect_with_unix(
            socket,
            timeout.as_secs().max(1),
            bollard::API_DEFAULT_VERSION,
        )
        .map_err(|e| format!("no Docker Engine at {socket}: {e}"))?;
        let docker = tokio::time::timeout(timeout, docker.negotiate_version())
            .await
            .map_err(|_| {
                format!("the Docker Engine at {socket} did not answer within {timeout:?}")
            })?
            .map_err(|e| format!("no Docker Engine at {socket}: {e}"))?;
        let mut filters = HashMap::new();
        filters.insert("label".to_owned(), vec![COMPOSE_PROJECT_LABEL.to_owned()]);
        let opts =
            ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
        let list = tokio::time::timeout(timeout, docker.list_containers(Some(opts)))
            .await
            .map_err(|_| {
                format!("the Docker Engine at {socket} did not answer within {timeout:?}")
            })?
            .map_err(|e| format!("cannot list containers: {e}"))?;
        let mut out: Vec<Container> = list
            .into_iter()
            .map(|c| {
                let status = c.status.clone().unwrap_or_default();
                let health = if status.contains("(unhealthy)") {
                    Some("unhealthy".to_owned())
                } else if status.contains("(healthy)") {
                    Some("healthy".to_owned())
                } else if status.contains("(health: starting)") {
                    Some("starting".to_owned())
                } else {
                    None
                };
                Container {
                    name: c
                        .names
                        .unwrap_or_default()
                        .first()
                        .map(|n| n.trim_start_matches('/').to_owned())
                        .unwrap_or_default(),
                    project: c
                        .labels
                        .unwrap_or_default()
                        .get(COMPOSE_PROJECT_LABEL)
                        .cloned()
                        .unwrap_or_default(),
                    state: c.state.map(|s| s.to_string()).unwrap_or_default(),
                    health,
                    image: c.image.unwrap_or_default(),
                }
            })
            .collect();
        out.sort_by(|a, b| (&a.project, &a.name).cmp(&(&b.project, &b.name)));
        Ok(out)
    })
}
