//! The local transport: a node's runtime root is a folder on this machine.
//!
//! With `--root DIR`, node `<id>` lives at `DIR/<id>/` (one machine standing in for the whole
//! homelab); without it, at the node's own `runtime_root` (homelab running on the node).
//! Reads are bounded and never follow a symlink out of a service folder.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::model::Node;
use crate::observe::{
    paths, ActualNode, DeployedService, Engine, FileState, ManifestState, NodeState, NodeStatus,
    Transport,
};
use crate::render::{Manifest, MANIFEST};

/// Files larger than this in a service folder are not homelab's; hash them, never keep them.
const MAX_READ: u64 = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct LocalTransport {
    base: Option<PathBuf>,
}

impl LocalTransport {
    /// `base`: `Some(DIR)` for `DIR/<node>/`, `None` for each node's own runtime root.
    pub fn new(base: Option<PathBuf>) -> Self {
        LocalTransport { base }
    }

    pub fn root_of(&self, node: &Node) -> PathBuf {
        match &self.base {
            Some(dir) => dir.join(node.id.as_str()),
            None => PathBuf::from(&node.runtime_root),
        }
    }
}

impl Transport for LocalTransport {
    fn refresh(&self, node: &Node) -> ActualNode {
        let root = self.root_of(node);
        let status = match read_state(&root) {
            Ok(state) => NodeStatus::Reachable(state),
            Err(reason) => NodeStatus::Unreachable { reason },
        };
        ActualNode { node: node.id.clone(), status }
    }
}

/// Reads a runtime root. A root that does not exist yet is a fresh node with nothing deployed.
pub fn read_state(root: &Path) -> Result<NodeState, String> {
    let mut state = NodeState {
        engine: Engine::Unavailable {
            reason: "the local transport does not read containers yet".to_owned(),
        },
        ..NodeState::default()
    };
    match fs::metadata(root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(format!("runtime root {} is not a folder", root.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(state),
        Err(e) => return Err(format!("cannot read runtime root {}: {e}", root.display())),
    }
    let services = root.join(paths::SERVICES);
    for name in list(&services)? {
        let dir = services.join(&name);
        if !fs::symlink_metadata(&dir).map(|m| m.is_dir()).unwrap_or(false) {
            continue;
        }
        state.services.insert(name, read_service(&dir)?);
    }
    state.consumed = list(&root.join(paths::CONSUMED))?
        .into_iter()
        .filter_map(|n| n.strip_suffix(".json").map(str::to_owned))
        .collect::<BTreeSet<_>>();
    Ok(state)
}

fn list(dir: &Path) -> Result<Vec<String>, String> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot list {}: {e}", dir.display())),
    };
    let mut names = Vec::new();
    for e in rd {
        let e = e.map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
        names.push(e.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

fn read_service(dir: &Path) -> Result<DeployedService, String> {
    let mut files = BTreeMap::new();
    let mut manifest_bytes = None;
    for name in list(dir)? {
        let path = dir.join(&name);
        let meta = fs::symlink_metadata(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&path).map(|t| t.display().to_string()).unwrap_or_default();
            files.insert(
                name,
                FileState {
                    sha256: crate::render::sha256_hex(format!("symlink:{target}").as_bytes()),
                    content: None,
                },
            );
            continue;
        }
        if !meta.is_file() {
            continue;
        }
        let bytes = read_bounded(&path)?;
        if name == MANIFEST {
            manifest_bytes = Some(bytes);
            continue;
        }
        let sha256 = crate::render::sha256_hex(&bytes);
        files.insert(name, FileState { sha256, content: String::from_utf8(bytes).ok() });
    }
    let manifest = match manifest_bytes {
        None => ManifestState::Missing,
        Some(bytes) => match serde_json::from_slice::<Manifest>(&bytes) {
            Ok(manifest) => {
                ManifestState::Present { manifest, sha256: crate::render::sha256_hex(&bytes) }
            }
            Err(e) => ManifestState::Corrupt { reason: format!("manifest.json: {e}") },
        },
    };
    // Keep content only where it is what homelab wrote (see `FileState::content`).
    for (name, f) in files.iter_mut() {
        let ours = match &manifest {
            ManifestState::Present { manifest, .. } => {
                manifest.artifacts.iter().any(|a| &a.name == name && a.sha256 == f.sha256)
            }
            _ => false,
        };
        if !ours {
            f.content = None;
        }
    }
    Ok(DeployedService { manifest, files })
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    let f = fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    f.take(MAX_READ + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_READ {
        // Too large to be an artifact: hash what was read plus a marker so it is drift.
        let digest = crate::render::sha256_hex(&bytes);
        return Ok(format!("<file larger than {MAX_READ} bytes: {digest}>").into_bytes());
    }
    Ok(bytes)
}
