//! Containers, through the Docker Engine's event stream (bollard's `Docker::events`), never by
//! polling. On each (re)connection it subscribes from the moment before a scan of the compose
//! containers, so what happened while the agent was away shows up in the scan and nothing
//! between the scan and the stream is missed (an event replayed after the scan only confirms
//! it). It reads; it never starts, stops or restarts a container.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::models::{EventMessage, EventMessageTypeEnum};
use bollard::query_parameters::{EventsOptions, InspectContainerOptions, ListContainersOptions};
use bollard::Docker;
use futures_util::StreamExt;
use tokio::sync::mpsc::UnboundedSender;

use super::state::{Observation, Status};
use super::Report;
use crate::transport::docker::COMPOSE_PROJECT_LABEL;

/// How long a connection attempt or a scan may take before the engine counts as unreachable.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Watches the engine at `socket` until `tx` closes; with `once`, one scan and no stream.
pub async fn watch(socket: String, once: bool, retry: Duration, tx: UnboundedSender<Report>) {
    loop {
        match session(&socket, once, &tx).await {
            Ok(()) if once => return,
            Ok(()) => tracing::warn!("the Docker event stream at {socket} ended; reconnecting"),
            Err(e) => {
                tracing::warn!("Docker Engine at {socket}: {e}");
                if tx.send(Report::Docker { connected: false, error: Some(e) }).is_err() || once {
                    return;
                }
            }
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(retry).await;
    }
}

/// One connection: subscribe, scan, then follow the stream until it ends.
async fn session(socket: &str, once: bool, tx: &UnboundedSender<Report>) -> Result<(), String> {
    let docker = Docker::connect_with_unix(socket, 120, bollard::API_DEFAULT_VERSION)
        .map_err(|e| e.to_string())?;
    let docker = tokio::time::timeout(TIMEOUT, docker.negotiate_version())
        .await
        .map_err(|_| format!("no answer within {TIMEOUT:?}"))?
        .map_err(|e| e.to_string())?;
    // From just before the scan: the engine replays what happens between the two.
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut filters = HashMap::new();
    filters.insert("type".to_owned(), vec!["container".to_owned()]);
    filters.insert("label".to_owned(), vec![COMPOSE_PROJECT_LABEL.to_owned()]);
    let opts = EventsOptions {
        since: Some(format!("{}.{:09}", since.as_secs(), since.subsec_nanos())),
        until: None,
        filters: Some(filters.clone()),
    };
    let mut stream = docker.events(Some(opts));

    let list = ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([(
            "label".to_owned(),
            vec![COMPOSE_PROJECT_LABEL.to_owned()],
        )])),
        ..Default::default()
    };
    let containers = tokio::time::timeout(TIMEOUT, docker.list_containers(Some(list)))
        .await
        .map_err(|_| format!("listing containers took over {TIMEOUT:?}"))?
        .map_err(|e| e.to_string())?;
    for c in containers {
        let labels = c.labels.unwrap_or_default();
        let Some(service) = labels.get(COMPOSE_PROJECT_LABEL) else { continue };
        let name =
            c.names.unwrap_or_default().first().map(|n| n.trim_start_matches('/').to_owned());
        let Some(container) = name else { continue };
        let state = c.state.map(|s| s.to_string()).unwrap_or_default();
        let status = c.status.unwrap_or_default();
        if let Some(status) = scanned(&state, &status) {
            let obs = Observation::Container { service: service.clone(), container, status };
            if tx.send(Report::Seen(obs)).is_err() {
                return Ok(());
            }
        }
    }
    if tx.send(Report::Docker { connected: true, error: None }).is_err() || once {
        return Ok(());
    }

    while let Some(ev) = stream.next().await {
        let ev = ev.map_err(|e| format!("event stream: {e}"))?;
        if let Some(obs) = from_event(&docker, &ev).await {
            if tx.send(Report::Seen(obs)).is_err() {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// A container's condition from the scan's `State` and `Status` (`Up 3 minutes (unhealthy)`,
/// `Exited (137) 5 seconds ago`); `None` when it says nothing yet (starting, created, paused).
pub fn scanned(state: &str, status: &str) -> Option<Status> {
    let health = if status.contains("(unhealthy)") {
        "unhealthy"
    } else if status.contains("(healthy)") {
        "healthy"
    } else if status.contains("(health: starting)") {
        "starting"
    } else {
        "none"
    };
    match state {
        "running" if health == "unhealthy" => Some(Status::Bad {
            error: "healthcheck failing".into(),
            state: state.into(),
            health: health.into(),
        }),
        "running" if health == "starting" => None,
        "running" => Some(Status::Good { state: state.into(), health: health.into() }),
        "exited" | "dead" | "restarting" => {
            let code = status
                .strip_prefix("Exited (")
                .and_then(|s| s.split(')').next())
                .map(|c| format!("exited with code {c}"));
            Some(Status::Bad {
                error: code.unwrap_or_else(|| format!("container is {state}")),
                state: state.into(),
                health: health.into(),
            })
        }
        _ => None,
    }
}

/// What one engine event says about a container: `die`, `oom` and `health_status: unhealthy`
/// make it bad; `health_status: healthy` makes it good, and so does `start` of a container
/// without a healthcheck (one with a healthcheck is good only once it reports healthy).
async fn from_event(docker: &Docker, ev: &EventMessage) -> Option<Observation> {
    if ev.typ != Some(EventMessageTypeEnum::CONTAINER) {
        return None;
    }
    let actor = ev.actor.as_ref()?;
    let attrs = actor.attributes.as_ref()?;
    let service = attrs.get(COMPOSE_PROJECT_LABEL)?.clone();
    let container = attrs.get("name")?.clone();
    let action = ev.action.as_deref()?;
    let bad = |error: String, state: &str, health: &str| Status::Bad {
        error,
        state: state.into(),
        health: health.into(),
    };
    let status = match action {
        "die" => {
            let code = attrs.get("exitCode").map_or("?", String::as_str);
            bad(format!("exited with code {code}"), "exited", "none")
        }
        "oom" => bad("out of memory".into(), "running", "none"),
        "health_status: unhealthy" => bad("healthcheck failing".into(), "running", "unhealthy"),
        "health_status: healthy" => {
            Status::Good { state: "running".into(), health: "healthy".into() }
        }
        "start" => {
            let id = actor.id.as_deref()?;
            let inspect =
                docker.inspect_container(id, None::<InspectContainerOptions>).await.ok()?;
            let test = inspect.config.and_then(|c| c.healthcheck).and_then(|h| h.test);
            let has_check = test.is_some_and(|t| t.first().is_some_and(|f| f != "NONE"));
            if has_check {
                return None;
            }
            Status::Good { state: "running".into(), health: "none".into() }
        }
        _ => return None,
    };
    Some(Observation::Container { service, container, status })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scan_reads_state_and_status() {
        assert!(matches!(scanned("running", "Up 2 minutes"), Some(Status::Good { .. })));
        assert!(matches!(scanned("running", "Up 2 minutes (healthy)"), Some(Status::Good { .. })));
        assert_eq!(scanned("running", "Up 1 second (health: starting)"), None);
        assert_eq!(scanned("created", "Created"), None);
        let Some(Status::Bad { error, .. }) = scanned("exited", "Exited (137) 5 seconds ago")
        else {
            panic!("an exited container is bad")
        };
        assert_eq!(error, "exited with code 137");
        let Some(Status::Bad { health, .. }) = scanned("running", "Up 1 minute (unhealthy)") else {
            panic!("an unhealthy container is bad")
        };
        assert_eq!(health, "unhealthy");
    }
}
