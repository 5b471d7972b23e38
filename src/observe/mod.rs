//! Actual state: what is really on a node, read through a `Transport`.
//!
//! For each node: the artifacts homelab last deployed and their manifest, the hashes of what
//! is really on disk (a hand edit is drift), and what the node has consumed (applied plan
//! ids). A node that cannot be read is *unreachable*; that is a value, not an error, so the
//! rest of a plan goes on. This module never reads `<root>/config/` (secrets).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::NodeName;
use crate::render::Manifest;

/// Layout of a runtime root on a node (DESIGN.md §6), relative to `<root>`.
pub mod paths {
    /// The live compose project of a service: its artifacts and `manifest.json`.
    pub const SERVICES: &str = "state/services";
    /// Applied plan ids, one file each (replay protection).
    pub const CONSUMED: &str = "state/consumed";
    /// Stage journal of an apply, per plan id.
    pub const DEPLOY: &str = "state/deploy";
    pub const ACTIONS: &str = "actions";
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActualNode {
    pub node: NodeName,
    pub status: NodeStatus,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeStatus {
    Reachable(NodeState),
    Unreachable { reason: String },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeState {
    /// Services homelab has deployed on the node, by service name as found on disk.
    pub services: BTreeMap<String, DeployedService>,
    /// Plan ids already applied on this node.
    pub consumed: BTreeSet<String>,
    pub engine: Engine,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Engine {
    Available { containers: Vec<Container> },
    Unavailable { reason: String },
}

impl Default for Engine {
    fn default() -> Self {
        Engine::Unavailable { reason: "not checked".to_owned() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    pub name: String,
    pub project: String,
    pub state: String,
    pub health: Option<String>,
    pub image: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployedService {
    pub manifest: ManifestState,
    /// Every file in the service's folder except the manifest.
    pub files: BTreeMap<String, FileState>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestState {
    Present { manifest: Manifest, sha256: String },
    Missing,
    Corrupt { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileState {
    /// SHA-256 of the bytes, or of `symlink:<target>` for a symlink.
    pub sha256: String,
    /// The text, kept only when it is exactly what the manifest says homelab wrote: a file
    /// edited by hand on a node may hold anything, a secret included, and never enters a plan.
    pub content: Option<String>,
}

impl DeployedService {
    /// Files whose bytes differ from the manifest, missing ones, and extra ones.
    pub fn drift(&self) -> Vec<String> {
        let ManifestState::Present { manifest, .. } = &self.manifest else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in &manifest.artifacts {
            match self.files.get(&entry.name) {
                None => out.push(format!("{} is missing", entry.name)),
                Some(f) if f.sha256 != entry.sha256 => {
                    out.push(format!("{} was edited on the node", entry.name))
                }
                Some(_) => {}
            }
        }
        for name in self.files.keys() {
            if !manifest.artifacts.iter().any(|a| &a.name == name) {
                out.push(format!("{name} is not homelab's"));
            }
        }
        out
    }
}

impl NodeState {
    /// A digest of everything a plan was computed against: per service the manifest and the
    /// hash of every file. Container states are left out on purpose: a restart or a health flap
    /// must not make every plan stale.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        for line in self.fingerprint_lines() {
            h.update(line.as_bytes());
            h.update(b"\n");
        }
        format!("sha256:{}", hex(&h.finalize()))
    }

    /// The lines the fingerprint is made of, also recorded in the plan so a stale plan can say
    /// what changed.
    pub fn fingerprint_lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, svc) in &self.services {
            let manifest = match &svc.manifest {
                ManifestState::Present { sha256, .. } => sha256.clone(),
                ManifestState::Missing => "none".to_owned(),
                ManifestState::Corrupt { .. } => "corrupt".to_owned(),
            };
            out.push(format!("{name} manifest {manifest}"));
            for (file, state) in &svc.files {
                out.push(format!("{name} file {file} {}", state.sha256));
            }
        }
        out
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads the actual state of nodes. Implementations: `transport::local` (a runtime root on
/// this machine) and `transport::ssh` (a node over SSH).
pub trait Transport: Sync {
    /// Reads one node. Never fails: a node that cannot be read is `Unreachable`.
    fn refresh(&self, node: &crate::model::Node) -> ActualNode;
}

/// Refreshes every node in parallel, one thread each (nodes are a handful).
pub fn refresh_all<'a>(
    transport: &dyn Transport,
    nodes: impl IntoIterator<Item = &'a crate::model::Node>,
) -> Vec<ActualNode> {
    let nodes: Vec<_> = nodes.into_iter().collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = nodes.iter().map(|n| s.spawn(move || transport.refresh(n))).collect();
        handles
            .into_iter()
            .zip(&nodes)
            .map(|(h, n)| {
                h.join().unwrap_or_else(|_| ActualNode {
                    node: n.id.clone(),
                    status: NodeStatus::Unreachable { reason: "refresh crashed".to_owned() },
                })
            })
            .collect()
    })
}
