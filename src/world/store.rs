//! The world and the cursors on the controller's disk: `<root>/world/{nodes,services,
//! deployments,incidents}.json` (docs/world.md) and `<root>/state/observer/cursors.json`.
//!
//! The world files are both what other agents read and the fold's state: every value in them
//! carries the key of its event, which is what makes a second fold of an event a no-op. Each
//! file is written atomically, and only when its bytes change. The cursors are written after
//! the world, so they are never ahead of it: after a crash the observer reads some events
//! again, which the fold ignores.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::fold::World;
use super::pull::NodeCursors;
use crate::node::Layout;

/// The format of the world files and the cursors; another is refused (read as none).
pub const VERSION: u32 = 1;

/// The names of the world's files, in the order they are written.
pub const FILES: [&str; 4] = ["nodes", "services", "deployments", "incidents"];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot read `{}`: {source}", .path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write `{}`: {source}", .path.display())]
    Write { path: PathBuf, source: std::io::Error },
}

#[derive(Serialize, Deserialize)]
struct Cursors {
    version: u32,
    nodes: BTreeMap<String, NodeCursors>,
}

/// The world's files as bytes: `{"version": 1, "<name>": {...}}`, pretty, one newline at the
/// end. Maps are sorted, so equal worlds give equal bytes.
pub fn encode(world: &World) -> [(&'static str, Vec<u8>); 4] {
    fn file<T: Serialize>(name: &str, value: &T) -> Vec<u8> {
        let mut m = serde_json::Map::new();
        m.insert("version".to_owned(), VERSION.into());
        m.insert(name.to_owned(), serde_json::to_value(value).expect("world records serialize"));
        let mut b = serde_json::to_vec_pretty(&m).expect("JSON serializes");
        b.push(b'\n');
        b
    }
    [
        ("nodes", file("nodes", &world.nodes)),
        ("services", file("services", &world.services)),
        ("deployments", file("deployments", &world.deployments)),
        ("incidents", file("incidents", &world.incidents)),
    ]
}

/// What was on disk: the world and the cursors, or why the observer starts over.
pub struct Loaded {
    pub world: World,
    pub cursors: BTreeMap<String, NodeCursors>,
    /// Why the world was started afresh (a file missing, of another version, or not
    /// parsing; `None` on the first pass too): every node's events are then read again from
    /// their start.
    pub fresh: Option<String>,
}

/// Reads the world and cursors under the controller root. A world file that is missing or
/// does not parse starts the world afresh, with no cursors, so it is folded again from every
/// event; a file that cannot be read is an error.
pub fn load(root: &Path) -> Result<Loaded, StoreError> {
    let layout = Layout::local(root);
    let read = |path: PathBuf| -> Result<Option<Vec<u8>>, StoreError> {
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Read { path, source }),
        }
    };
    let mut parts = serde_json::Map::new();
    let mut fresh = None;
    let mut any = false;
    for name in FILES {
        let path = PathBuf::from(layout.world(name));
        let bytes = read(path.clone())?;
        any |= bytes.is_some();
        let value = bytes
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .filter(|v| v["version"] == VERSION)
            .map(|mut v| v[name].take());
        match value {
            Some(v) => {
                parts.insert(name.to_owned(), v);
            }
            None => {
                fresh = Some(format!(
                    "`{}` is missing or not a version {VERSION} world file",
                    path.display()
                ));
                break;
            }
        }
    }
    let world = match fresh {
        None => match serde_json::from_value::<World>(serde_json::Value::Object(parts)) {
            Ok(w) => Some(w),
            Err(e) => {
                fresh = Some(format!("the world under `{}` does not parse: {e}", root.display()));
                None
            }
        },
        Some(_) => None,
    };
    let Some(world) = world else {
        // No world at all is the first pass, not news.
        let fresh = fresh.filter(|_| any);
        return Ok(Loaded { world: World::default(), cursors: BTreeMap::new(), fresh });
    };
    let cursors = read(PathBuf::from(layout.observer_cursors()))?
        .and_then(|b| serde_json::from_slice::<Cursors>(&b).ok())
        .filter(|c| c.version == VERSION)
        .map(|c| c.nodes)
        .unwrap_or_default();
    Ok(Loaded { world, cursors, fresh: None })
}

/// Writes the world's files whose bytes changed, then the cursors. Says whether any world
/// file changed.
pub fn save(
    root: &Path,
    world: &World,
    cursors: &BTreeMap<String, NodeCursors>,
) -> Result<bool, StoreError> {
    let layout = Layout::local(root);
    let mut changed = false;
    for (name, bytes) in encode(world) {
        changed |= write_if_changed(&PathBuf::from(layout.world(name)), &bytes)?;
    }
    let c = Cursors { version: VERSION, nodes: cursors.clone() };
    let mut bytes = serde_json::to_vec_pretty(&c).expect("cursors serialize");
    bytes.push(b'\n');
    write_if_changed(&PathBuf::from(layout.observer_cursors()), &bytes)?;
    Ok(changed)
}

fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<bool, StoreError> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(false);
    }
    crate::files::write_atomic(path, bytes)
        .map_err(|source| StoreError::Write { path: path.to_path_buf(), source })?;
    Ok(true)
}
