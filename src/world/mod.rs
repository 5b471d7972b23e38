//! The world: what the observer knows of the homelab, folded from every node's events into
//! `<root>/world/{nodes,services,deployments,incidents}.json` on the controller (the guide's
//! Observer; schema in docs/world.md).
//!
//! - `event`: one event line as the fold sees it, and its key (time, then where it was read).
//! - `fold`: the pure fold of events into the world's records, idempotent by key.
//! - `pull`: one fixed script per node per pass reads the new bytes of its day files from a
//!   cursor; the pure half keeps whole lines only.
//! - `store`: the world files and cursors on the controller's disk, written atomically.
//!
//! [`pass`] is one round: read every node (in parallel, one command each), fold, save. A node
//! that cannot be read is a value in the report, never an error: the others are folded. This
//! module reads no clock (the command passes `now`) and never writes to a node. It is not
//! `observe`, which reads the *deployed* state of nodes for a plan.

pub mod event;
pub mod fold;
pub mod pull;
pub mod store;

use std::collections::BTreeMap;
use std::path::Path;

use crate::model::Node;
use crate::node::Layout;
use crate::transport::Transport;
pub use fold::World;
pub use store::StoreError;

/// What one pass read from a node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeRead {
    /// Events read (some may have been folded before, after a lost cursor).
    pub events: usize,
    /// Lines that were not events (torn by a crash, or without a type or a time).
    pub skipped: usize,
    /// Bytes of a last line not yet whole, held back for the next pass.
    pub held: u64,
    /// Day files read again from their start: replaced or shortened since the last pass.
    pub rewritten: Vec<String>,
    /// More bytes wait than one pass reads.
    pub more: bool,
}

/// How a pass went for one node: what was read, or why the node could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReport {
    pub node: String,
    pub read: Result<NodeRead, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassReport {
    pub nodes: Vec<NodeReport>,
    /// Whether any world file changed.
    pub changed: bool,
    /// Why the world was started afresh, when it was.
    pub fresh: Option<String>,
}

impl PassReport {
    /// Whether a node has bytes left that this pass did not read.
    pub fn more(&self) -> bool {
        self.nodes.iter().any(|n| n.read.as_ref().is_ok_and(|r| r.more))
    }

    /// The nodes that could not be read.
    pub fn unread(&self) -> Vec<&NodeReport> {
        self.nodes.iter().filter(|n| n.read.is_err()).collect()
    }
}

/// One pass: reads each of `nodes`' new events through `transport`, folds them into the world
/// under the controller root `root`, and saves it. `now` (RFC 3339) is when the observer
/// found each node reachable or not.
pub fn pass(
    transport: &dyn Transport,
    nodes: &[&Node],
    root: &Path,
    now: &str,
    budget: u64,
) -> Result<PassReport, StoreError> {
    let store::Loaded { mut world, mut cursors, fresh } = store::load(root)?;
    let empty = BTreeMap::new();
    let pulled: Vec<Result<Vec<pull::FileRead>, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = nodes
            .iter()
            .map(|n| {
                let c = cursors.get(n.id.as_str()).unwrap_or(&empty);
                s.spawn(move || {
                    if let Some(read) = pull::pull_by_session(transport, n, c, budget) {
                        return read;
                    }
                    let exec = transport.connect(n).map_err(|e| e.to_string())?;
                    let events_root = Layout::new(exec.root()).events_root();
                    pull::pull(exec.as_ref(), &events_root, n.id.as_str(), c, budget)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("reading its events crashed".to_owned())))
            .collect()
    });
    let mut events = Vec::new();
    let mut reports = Vec::new();
    for (n, pulled) in nodes.iter().zip(pulled) {
        let id = n.id.to_string();
        world.inventory(n);
        let read = pulled.map(|files| {
            let before = cursors.remove(&id).unwrap_or_default();
            let mut after = pull::NodeCursors::new();
            let mut read = NodeRead::default();
            // Only the files the node has now keep a cursor: one archived away is forgotten,
            // and read from its start (and its events folded to no effect) if it comes back.
            for f in &files {
                let t = pull::take(&id, f, before.get(&f.day));
                read.events += t.events.len();
                read.skipped += t.skipped;
                read.held += t.held;
                read.more |= t.more;
                if t.rewritten {
                    read.rewritten.push(f.day.clone());
                }
                after.insert(f.day.clone(), t.cursor);
                events.extend(t.events);
            }
            cursors.insert(id.clone(), after);
            read
        });
        world.reach(&id, read.as_ref().map(|_| ()).map_err(Clone::clone), now);
        reports.push(NodeReport { node: id, read });
    }
    world.fold(&events);
    let changed = store::save(root, &world, &cursors)?;
    Ok(PassReport { nodes: reports, changed, fresh })
}
