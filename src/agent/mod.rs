//! The stability agent (`homelab agent`, the `stability-agent` service on every node; the
//! guide's per-node watchdog): watches containers (the Docker Engine's event stream), the disk
//! holding the runtime root, the Tailscale interface and, where the node has one, its MQTT
//! broker, and appends an event for each change it sees under `<root>/events/` with source
//! `stability-agent`. Every interval it writes a heartbeat, `<root>/state/agent/heartbeat.json`.
//! What it does and does not do: `docs/agent.md`.
//!
//! It must never change what it watches: no restart, no stop, no deploy (those go through a
//! plan and an approval). It never reads `<root>/config/` (secrets). It needs nothing off the
//! node: no controller, VPS or Forgejo, so an offline-first node keeps its record with every
//! link cut.
//!
//! The sources run as tasks on one thread and send [`Report`]s to one loop, which owns the
//! [`state::State`] (the pure step from observation to events) and is the only writer of events,
//! state and heartbeat.

pub mod docker;
pub mod mqtt;
pub mod node;
pub mod state;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::clock::{self, Clock};
use crate::events;
use crate::node::Layout;
use state::{Observation, State};

/// What the agent is told to watch.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's runtime root.
    pub root: PathBuf,
    /// This node's id (events are filed under it).
    pub node: String,
    /// The Docker Engine's unix socket.
    pub docker_socket: String,
    /// The broker, `HOST:PORT`, when the node has one to watch.
    pub mqtt: Option<String>,
    /// The Tailscale interface.
    pub interface: String,
    /// Disk use (percent) above which the runtime root's filesystem is reported.
    pub disk_threshold: f64,
    /// How often the interface and the disk are read and the heartbeat written.
    pub interval: Duration,
    /// One look at everything, a heartbeat, and exit.
    pub once: bool,
    pub clock: Clock,
}

/// What a source tells the loop.
#[derive(Debug)]
pub enum Report {
    /// A container, from the engine.
    Seen(Observation),
    /// The engine's connection (after its scan, when connected).
    Docker { connected: bool, error: Option<String> },
    /// The broker's link.
    Mqtt(Observation),
    /// Time to read the interface and the disk and write the heartbeat.
    Tick,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot start the agent's event loop: {source}")]
    Runtime { source: std::io::Error },
    #[error("the runtime root `{}` does not exist: create it (`homelab bootstrap NODE`) or pass `--root`", .path.display())]
    NoRoot { path: PathBuf },
    #[error("cannot read `{}`: {source}", .path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write `{}`: {source}", .path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error(
        "`{}` is agent state version {found}; this agent keeps version {}: move the file away to start afresh",
        .path.display(), state::VERSION
    )]
    StateVersion { path: PathBuf, found: u64 },
}

/// Runs the agent until SIGTERM or SIGINT (or, with `once`, after one look).
pub fn run(cfg: &Config) -> Result<(), AgentError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| AgentError::Runtime { source })?;
    rt.block_on(agent(cfg))
}

async fn agent(cfg: &Config) -> Result<(), AgentError> {
    if !cfg.root.is_dir() {
        return Err(AgentError::NoRoot { path: cfg.root.clone() });
    }
    let layout = Layout::local(&cfg.root);
    let mut store = Store::open(layout.clone(), &cfg.node, cfg.clock)?;
    // The disk that matters is the one the events go to (in the container, `<root>` itself is
    // not mounted, only `events/` and `state/`).
    let disk_path = PathBuf::from(layout.events_root());
    std::fs::create_dir_all(&disk_path)
        .map_err(|source| AgentError::Write { path: disk_path.clone(), source })?;
    let mut beat = Heartbeat::new(cfg, &disk_path);

    let (tx, mut rx) = mpsc::unbounded_channel();
    let retry = cfg.interval.clamp(Duration::from_secs(1), Duration::from_secs(10));
    tokio::spawn(docker::watch(cfg.docker_socket.clone(), cfg.once, retry, tx.clone()));
    if let Some(broker) = &cfg.mqtt {
        let node = cfg.node.clone();
        tokio::spawn(mqtt::watch(broker.clone(), node, cfg.once, cfg.interval, tx.clone()));
    }
    let (interval, once, ticks) = (cfg.interval, cfg.once, tx);
    tokio::spawn(async move {
        let mut t = tokio::time::interval(interval);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            t.tick().await;
            if ticks.send(Report::Tick).is_err() || once {
                return;
            }
        }
    });

    use tokio::signal::unix::{signal, SignalKind};
    let mut term =
        signal(SignalKind::terminate()).map_err(|source| AgentError::Runtime { source })?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(|source| AgentError::Runtime { source })?;
    loop {
        let report = tokio::select! {
            r = rx.recv() => match r { Some(r) => r, None => break },
            _ = term.recv() => break,
            _ = int.recv() => break,
        };
        match report {
            Report::Seen(obs) => store.observe(&obs),
            Report::Docker { connected, error } => {
                beat.docker = if connected { "connected" } else { "unreachable" };
                beat.docker_error = error;
            }
            Report::Mqtt(obs) => {
                if let Observation::Link { up, .. } = &obs {
                    beat.mqtt = Some(if *up { "up" } else { "down" });
                }
                store.observe(&obs);
            }
            Report::Tick => {
                store.retry_pending();
                let link = node::interface(&cfg.interface);
                if let Observation::Link { up, .. } = &link {
                    beat.interface = Some(if *up { "up" } else { "down" });
                }
                store.observe(&link);
                match node::disk_used_percent(&disk_path) {
                    Ok(used) => {
                        beat.disk_used = Some(used);
                        store.observe(&Observation::Disk {
                            path: disk_path.display().to_string(),
                            used_percent: used,
                            threshold: cfg.disk_threshold,
                        });
                    }
                    Err(e) => tracing::warn!("disk use of {}: {e}", disk_path.display()),
                }
                for (service, set, (age_secs, limit_secs), never) in
                    crate::backup::overdue_candidates(&layout, (cfg.clock)())
                {
                    let seen = Observation::Backup { service, set, age_secs, limit_secs, never };
                    store.observe(&seen);
                }
                beat.write(&layout, &store, (cfg.clock)());
            }
        }
    }
    beat.write(&layout, &store, (cfg.clock)());
    Ok(())
}

/// The state, kept on disk, and the only way events are written.
struct Store {
    layout: Layout,
    node: String,
    clock: Clock,
    state: State,
}

impl Store {
    /// Reads `state.json` (none: a first start) and appends what a killed agent left pending.
    fn open(layout: Layout, node: &str, clock: Clock) -> Result<Store, AgentError> {
        let path = PathBuf::from(layout.agent_state());
        let state = match std::fs::read(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(source) => return Err(AgentError::Read { path, source }),
            Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
                Ok(v) if v["version"].as_u64() != Some(u64::from(state::VERSION)) => {
                    let found = v["version"].as_u64().unwrap_or(0);
                    return Err(AgentError::StateVersion { path, found });
                }
                Ok(v) => serde_json::from_value(v).map_err(|e| AgentError::Read {
                    path: path.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                })?,
                // Written atomically, so only a hand edit breaks it: say so, start afresh
                // (what was reported may be reported once more), rather than never start.
                Err(e) => {
                    tracing::error!("{}: {e}; starting with no state", path.display());
                    State::default()
                }
            },
        };
        let mut store = Store { layout, node: node.to_owned(), clock, state };
        store.retry_pending();
        Ok(store)
    }

    /// Applies one observation; its events (if any) are recorded as pending in the state file,
    /// appended, then cleared. An event that cannot be written (a full disk) stays pending and
    /// is retried every interval: the agent keeps running, which is when it is needed most.
    fn observe(&mut self, obs: &Observation) {
        let events = self.state.observe(&self.node, obs);
        if events.is_empty() {
            return;
        }
        let time = clock::rfc3339((self.clock)());
        for e in events {
            match e.to_line_shortened(&time) {
                Ok(line) => self.state.pending.push(line),
                Err(err) => tracing::error!("event {e:?} refused: {err}"),
            }
        }
        self.save();
        self.retry_pending();
    }

    /// Appends each pending line that the events file does not already hold, then clears them.
    fn retry_pending(&mut self) {
        if self.state.pending.is_empty() {
            return;
        }
        let mut left = Vec::new();
        for line in std::mem::take(&mut self.state.pending) {
            let day = serde_json::from_str::<Value>(&line)
                .ok()
                .and_then(|v| v["time"].as_str().map(|t| t.chars().take(10).collect::<String>()))
                .unwrap_or_else(|| clock::day((self.clock)()));
            let file = PathBuf::from(self.layout.events(&day, &self.node));
            if already_there(&file, &line) {
                continue;
            }
            if let Err(e) = events::append(&file, &line) {
                tracing::error!("cannot append to {}: {e}; retrying", file.display());
                left.push(line);
            }
        }
        self.state.pending = left;
        self.save();
    }

    fn save(&self) {
        let path = PathBuf::from(self.layout.agent_state());
        let mut bytes = serde_json::to_vec_pretty(&self.state).unwrap_or_default();
        bytes.push(b'\n');
        if let Err(e) = crate::files::write_atomic(&path, &bytes) {
            tracing::error!("cannot write {}: {e}", path.display());
        }
    }
}

/// Whether `file` holds `line` (with its newline) as one of its lines.
fn already_there(file: &Path, line: &str) -> bool {
    let Ok(bytes) = std::fs::read(file) else { return false };
    let want = line.trim_end_matches('\n').as_bytes();
    bytes.split(|b| *b == b'\n').any(|l| l == want)
}

/// The heartbeat's contents between writes.
struct Heartbeat {
    started: SystemTime,
    watching: Value,
    interval: Duration,
    docker: &'static str,
    docker_error: Option<String>,
    mqtt: Option<&'static str>,
    interface: Option<&'static str>,
    disk_used: Option<f64>,
    node: String,
}

impl Heartbeat {
    fn new(cfg: &Config, disk_path: &Path) -> Heartbeat {
        Heartbeat {
            started: (cfg.clock)(),
            watching: json!({
                "docker": cfg.docker_socket,
                "disk": {"path": disk_path.display().to_string(), "threshold_percent": cfg.disk_threshold},
                "interface": cfg.interface,
                "mqtt": cfg.mqtt,
            }),
            interval: cfg.interval,
            docker: "connecting",
            docker_error: None,
            mqtt: cfg.mqtt.as_ref().map(|_| "connecting"),
            interface: None,
            disk_used: None,
            node: cfg.node.clone(),
        }
    }

    /// Writes `heartbeat.json` atomically; a failure is logged, never fatal.
    fn write(&self, layout: &Layout, store: &Store, now: SystemTime) {
        let v = json!({
            "time": clock::rfc3339(now),
            "node": self.node,
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "started": clock::rfc3339(self.started),
            "interval_seconds": self.interval.as_secs_f64(),
            "watching": self.watching,
            "status": {
                "docker": self.docker,
                "docker_error": self.docker_error,
                "interface": self.interface,
                "mqtt": self.mqtt,
                "disk_used_percent": self.disk_used.map(|d| (d * 10.0).round() / 10.0),
                "unhealthy_services": store.state.services.keys().collect::<Vec<_>>(),
                "pending_events": store.state.pending.len(),
            },
        });
        let path = PathBuf::from(layout.agent_heartbeat());
        let mut bytes = serde_json::to_vec_pretty(&v).unwrap_or_default();
        bytes.push(b'\n');
        if let Err(e) = crate::files::write_atomic(&path, &bytes) {
            tracing::error!("cannot write {}: {e}", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_000_000)
    }

    #[test]
    fn a_pending_event_is_appended_once_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::local(dir.path());
        let mut s = Store::open(layout.clone(), "alpha", now).unwrap();
        let down =
            Observation::Link { link: "tailscale0".into(), up: false, data: Default::default() };
        s.observe(&down);
        let file = PathBuf::from(layout.events("2026-11-30", "alpha"));
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(text.lines().count(), 1);
        // A crash after the append, before the pending list was cleared.
        let line = format!("{}\n", text.lines().next().unwrap());
        s.state.pending.push(line.clone());
        s.save();
        let s = Store::open(layout.clone(), "alpha", now).unwrap();
        assert!(s.state.pending.is_empty());
        assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 1);
        // A crash before the append: the line is written at the next start.
        std::fs::remove_file(&file).unwrap();
        let mut st = s.state.clone();
        st.pending.push(line);
        crate::files::write_atomic(
            Path::new(&layout.agent_state()),
            &serde_json::to_vec(&st).unwrap(),
        )
        .unwrap();
        let mut s = Store::open(layout.clone(), "alpha", now).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 1);
        s.observe(&down);
        assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 1, "no repeat");
    }

    #[test]
    fn another_state_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::local(dir.path());
        crate::files::write_atomic(Path::new(&layout.agent_state()), b"{\"version\": 9}").unwrap();
        assert!(matches!(
            Store::open(layout, "alpha", now),
            Err(AgentError::StateVersion { found: 9, .. })
        ));
    }
}
