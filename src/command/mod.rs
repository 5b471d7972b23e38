//! One file per verb. Each turns parsed arguments (`args`) into built values (a [`Selection`]
//! of transport, nodes and records; a loaded homelab; a key) and calls the domain: `check`,
//! `graph`, `render`, `observe`, `plan`, `approve`, `apply`, `events`. Commands own the
//! terminal (prompts, colour, messages on stderr) and the clock: they pass `now` down.
//!
//! Nothing below this module imports it; `cli` is its only caller.

pub mod adopt;
pub mod agent;
pub mod apply;
pub mod approve;
pub mod args;
pub mod backup;
pub mod bootstrap;
pub mod events;
pub mod executor;
pub mod graph;
pub mod import;
pub mod node;
pub mod observe;
pub mod plan;
pub mod pr;
pub mod render;
pub mod restore;
pub mod show;
pub mod supervise;
pub mod telegram;
pub mod ui;
pub mod validate;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use crate::approve::policy::Records;
use crate::error::Error;
use crate::model::{Homelab, NodeName, ServiceName};
use crate::transport::Transport;

use args::{Target, TransportKind};

/// The homelab repository: `--repo`/`$HOMELAB_REPO` when given, else, like Git, the first
/// folder from the current one upwards that holds `inventory/topology.yaml` (the current folder
/// itself is `.`, so messages keep their short paths); else `.`, whose load says what is missing.
pub fn find_repo(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    let here = PathBuf::from(".");
    if here.join(TOPOLOGY).is_file() {
        return here;
    }
    std::env::current_dir()
        .ok()
        .and_then(|cwd| cwd.ancestors().find(|d| d.join(TOPOLOGY).is_file()).map(Path::to_path_buf))
        .unwrap_or(here)
}

/// The file that marks a homelab repository's root.
const TOPOLOGY: &str = "inventory/topology.yaml";

/// Loads and fully checks the homelab definition at `repo` (`check`: the model's rules, the
/// graph and every render).
pub fn load(repo: &Path) -> Result<Homelab, Error> {
    crate::check::homelab(repo).map_err(|diagnostics| Error::Invalid { diagnostics })
}

/// [`load`] for a command that reaches nodes through `target`: with `--transport local --root
/// DIR`, node `<id>`'s runtime root is `DIR/<id>` in the templates too (`{{ root }}`,
/// `{{ config_dir }}`, ...), as it is for the transport, so what is rendered names the folders
/// the node has. One meaning of `--root` everywhere.
pub fn load_for(repo: &Path, target: &Target) -> Result<Homelab, Error> {
    match (target.transport, &target.root) {
        (TransportKind::Local, Some(dir)) => load_under(repo, Some(dir)),
        _ => load_under(repo, None),
    }
}

/// [`load`] with node `<id>`'s runtime root at `DIR/<id>` (`DIR` made absolute, as the local
/// transport makes it) when `base` is `Some(DIR)`.
pub fn load_under(repo: &Path, base: Option<&PathBuf>) -> Result<Homelab, Error> {
    let base = base
        .and_then(|dir| crate::transport::local::LocalTransport::new(Some(dir.clone())).base_dir());
    crate::check::homelab_rooted(repo, &|id| rooted(base.as_deref(), id))
        .map_err(|diagnostics| Error::Invalid { diagnostics })
}

/// Node `id`'s root under `base` as text; `None` (the topology's) when there is no base or
/// the path is not UTF-8 (the local transport then refuses to connect, naming it).
fn rooted(base: Option<&Path>, id: &NodeName) -> Option<String> {
    base.map(|b| b.join(id.as_str())).and_then(|p| p.to_str().map(str::to_owned))
}

/// What a `Target` selects, built: how to reach nodes, which nodes, where the controller's
/// records are.
pub struct Selection {
    pub transport: Box<dyn Transport>,
    /// The nodes named with `--node`, sorted; all nodes when none was named.
    pub nodes: Vec<NodeName>,
    /// Whether `--node` named any (a part of the plan, not all of it).
    pub explicit_nodes: bool,
    pub records: Records,
}

impl Selection {
    pub fn of(repo: &Path, lab: &Homelab, target: &Target) -> Result<Selection, Error> {
        let transport = transport(repo, target);
        let mut nodes = Vec::new();
        for n in &target.nodes {
            let id = resolve_node(lab, n)?;
            if !nodes.contains(&id) {
                nodes.push(id);
            }
        }
        nodes.sort();
        let explicit_nodes = !nodes.is_empty();
        if !explicit_nodes {
            nodes = lab.nodes.keys().cloned().collect();
        }
        let records = Records::at(&target.controller.root(target.root.as_ref()));
        Ok(Selection { transport, nodes, explicit_nodes, records })
    }
}

/// The transport `--transport` names, built with its options. `Send` so a server (the
/// operator page) can keep it across requests.
pub fn transport(repo: &Path, target: &Target) -> Box<dyn Transport + Send> {
    match target.transport {
        TransportKind::Local => {
            Box::new(crate::transport::local::LocalTransport::new(target.root.clone()))
        }
        TransportKind::Ssh => {
            let known_hosts =
                target.known_hosts.clone().unwrap_or_else(|| repo.join("inventory/known_hosts"));
            let mut ssh =
                crate::transport::ssh::SshTransport::new(known_hosts, target.ssh_key.clone());
            ssh.idle = std::time::Duration::from_secs(target.ssh_idle);
            Box::new(ssh)
        }
    }
}

/// A node as the CLI accepts it (id or display name).
pub fn resolve_node(lab: &Homelab, name: &str) -> Result<NodeName, Error> {
    lab.node(name).map(|n| n.id.clone()).ok_or_else(|| Error::UnknownNode {
        name: name.to_owned(),
        known: lab.nodes.keys().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", "),
    })
}

/// A service, of the whole homelab or of one node.
pub fn resolve_service(
    lab: &Homelab,
    name: &str,
    node: Option<&NodeName>,
) -> Result<ServiceName, Error> {
    let candidates: Vec<&ServiceName> = match node {
        Some(n) => lab.nodes[n].services.keys().collect(),
        None => lab.services.keys().collect(),
    };
    candidates.iter().find(|s| s.as_str() == name).map(|s| (*s).clone()).ok_or_else(|| {
        Error::UnknownService {
            name: name.to_owned(),
            node: node.map(ToString::to_string),
            known: candidates.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", "),
        }
    })
}

/// Colour only on a terminal that can show it: never with `NO_COLOR` set
/// (https://no-color.org), nor with `TERM=dumb` (or no `TERM` at all).
pub fn use_color() -> bool {
    let term = std::env::var("TERM").unwrap_or_default();
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && !term.is_empty()
        && term != "dumb"
        && std::io::stdout().is_terminal()
}

/// The repository's `plans/` folder, or `--plans-dir DIR`.
pub fn plans_dir(repo: &Path, explicit: Option<&PathBuf>) -> PathBuf {
    explicit.cloned().unwrap_or_else(|| repo.join("plans"))
}

/// Writes a local file atomically, as an `Error` naming it.
pub fn write(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    crate::files::write_atomic(path, bytes)
        .map_err(|source| Error::Write { path: path.to_path_buf(), source })
}

/// As [`write`], readable by its owner only: a record that quotes a step's output.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    crate::files::write_private(path, bytes)
        .map_err(|source| Error::Write { path: path.to_path_buf(), source })
}

/// `user@host pid N`: who runs this command, for locks and records.
pub fn whoami() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".to_owned());
    format!("{user}@{} pid {}", hostname(), std::process::id())
}

/// This machine's host name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}
