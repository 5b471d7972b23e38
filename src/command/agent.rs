//! `homelab agent`: the stability agent of this node (`crate::agent`). This file turns the flags
//! (and the environment the `stability-agent` compose file sets) into an `agent::Config` and
//! owns the clock and the one start line on stderr. It needs no homelab repository.

use std::path::PathBuf;
use std::time::Duration;

use crate::agent::{self, AgentError};
use crate::error::{Error, Report};

#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// This node's runtime root (its own, not a folder of roots as for `events --root`).
    #[arg(long, value_name = "DIR", env = "HOMELAB_ROOT", default_value = "/opt/homelab")]
    pub root: PathBuf,
    /// This node's id (default: $HOMELAB_NODE, else this host's name).
    #[arg(long, value_name = "NAME", env = "HOMELAB_NODE")]
    pub node: Option<String>,
    /// Look once at everything, write the heartbeat and exit.
    #[arg(long)]
    pub once: bool,
    /// The Docker Engine's socket (default: the path of a `unix://` $DOCKER_HOST, else
    /// /var/run/docker.sock).
    #[arg(long, value_name = "PATH")]
    pub docker_socket: Option<PathBuf>,
    /// The node's MQTT broker to watch, `HOST:PORT` (none by default).
    #[arg(long, value_name = "HOST:PORT", env = "HOMELAB_MQTT")]
    pub mqtt: Option<String>,
    /// The Tailscale interface.
    #[arg(long, value_name = "NAME", default_value = "tailscale0")]
    pub interface: String,
    /// Report the disk holding the runtime root above this use, in percent.
    #[arg(long, value_name = "PCT", default_value_t = 90.0)]
    pub disk_threshold: f64,
    /// Seconds between reads of the interface and the disk, and heartbeats.
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    pub interval: f64,
}

fn usage(message: String) -> Error {
    Error::Unsupported { message }
}

pub fn run(args: &AgentArgs) -> Result<Report, Error> {
    let node = match args.node.clone().filter(|n| !n.is_empty()) {
        Some(n) => n,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .map_err(|source| Error::Read {
            path: "/proc/sys/kernel/hostname".into(),
            source,
        })?,
    };
    let node = crate::model::NodeName::from_cli(&node)
        .map_err(|p| usage(format!("expected a node name in {p}, found `{node}`: pass `--node`")))?
        .to_string();
    if !(0.0..=100.0).contains(&args.disk_threshold) {
        return Err(usage(format!(
            "`--disk-threshold` is a percentage from 0 to 100, found {}",
            args.disk_threshold
        )));
    }
    if !(args.interval.is_finite() && (0.1..=3600.0).contains(&args.interval)) {
        return Err(usage(format!(
            "`--interval` is from 0.1 to 3600 seconds, found {}",
            args.interval
        )));
    }
    let mqtt = args.mqtt.clone().filter(|m| !m.is_empty());
    if let Some(m) = &mqtt {
        let ok = m.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !ok {
            return Err(usage(format!(
                "`--mqtt` is HOST:PORT, such as 127.0.0.1:1883, found `{m}`"
            )));
        }
    }
    let docker_socket = match &args.docker_socket {
        Some(p) => p.display().to_string(),
        None => std::env::var("DOCKER_HOST")
            .ok()
            .and_then(|h| h.strip_prefix("unix://").map(str::to_owned))
            .unwrap_or_else(|| "/var/run/docker.sock".to_owned()),
    };
    let cfg = agent::Config {
        root: args.root.clone(),
        node,
        docker_socket,
        mqtt,
        interface: args.interface.clone(),
        disk_threshold: args.disk_threshold,
        interval: Duration::from_secs_f64(args.interval),
        once: args.once,
        clock: std::time::SystemTime::now,
    };
    eprintln!(
        "homelab agent {}: node `{}`, root `{}`, docker `{}`, interface `{}`, mqtt {}, disk over {}%",
        env!("CARGO_PKG_VERSION"),
        cfg.node,
        cfg.root.display(),
        cfg.docker_socket,
        cfg.interface,
        cfg.mqtt.as_deref().map_or("none".to_owned(), |m| format!("`{m}`")),
        cfg.disk_threshold
    );
    agent::run(&cfg).map_err(|e| match e {
        AgentError::Read { path, source } => Error::Read { path, source },
        AgentError::Write { path, source } => Error::Write { path, source },
        e => Error::Unsupported { message: e.to_string() },
    })?;
    Ok(Report::Success)
}
