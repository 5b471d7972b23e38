//! A rejection carried to the plan's nodes: `Layout::rejected(id)` written durably on each, so
//! an apply of that plan is refused there by any controller and with any copy of the plan.
//! `homelab reject`, the operator page and the Telegram bot all call [`record_on_nodes`] after
//! the rejection is recorded beside the plan and on the controller (`approve::policy::reject`).
//!
//! It decides nothing and prints nothing: it reports, per node, whether the record is there;
//! what a miss means is the caller's to say.

use crate::model::{Homelab, NodeName};
use crate::node::records::Rejection;
use crate::node::Layout;
use crate::plan::file::LoadedPlan;
use crate::transport::{ExecError, Transport};

use super::remote::{self, StepError};

/// Why a node does not have the record.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The node could not be reached.
    #[error(transparent)]
    Connect(ExecError),
    /// The node answered, but the record could not be written.
    #[error(transparent)]
    Write(StepError),
}

/// One node of the plan, and whether the rejection is recorded on it.
#[derive(Debug)]
pub struct NodeRecord {
    pub node: NodeName,
    /// As the operator knows the node.
    pub display_name: String,
    pub result: Result<(), RecordError>,
}

/// Writes `record` on every node of `loaded`'s plan that is among `nodes` (and in `lab`), in
/// the plan's order. The nodes are reached at once, each in its own thread, so an unreachable
/// node costs one connect timeout, not one per node.
pub fn record_on_nodes(
    lab: &Homelab,
    loaded: &LoadedPlan,
    record: &Rejection,
    transport: &dyn Transport,
    nodes: &[NodeName],
) -> Vec<NodeRecord> {
    let bytes = record.to_bytes();
    let targets: Vec<_> = loaded
        .plan
        .nodes
        .iter()
        .filter(|np| nodes.contains(&np.node))
        .filter_map(|np| lab.nodes.get(&np.node))
        .collect();
    std::thread::scope(|s| {
        let running: Vec<_> = targets
            .iter()
            .map(|node| {
                let bytes = &bytes;
                s.spawn(move || {
                    let exec = transport.connect(node).map_err(RecordError::Connect)?;
                    let layout = Layout::new(exec.root());
                    remote::write_durable(
                        exec.as_ref(),
                        &layout.rejected(&loaded.id),
                        "0644",
                        bytes,
                    )
                    .map_err(RecordError::Write)
                })
            })
            .collect();
        targets
            .iter()
            .zip(running)
            .map(|(node, handle)| NodeRecord {
                node: node.id.clone(),
                display_name: node.display_name.clone(),
                result: handle.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            })
            .collect()
    })
}

/// The nodes in one line, for the page and the bot: `recorded on a, b; NOT recorded on c
/// (why)`; empty when the plan has no selected node.
pub fn describe(records: &[NodeRecord]) -> String {
    let on: Vec<&str> =
        records.iter().filter(|r| r.result.is_ok()).map(|r| r.display_name.as_str()).collect();
    let missed: Vec<String> = records
        .iter()
        .filter_map(|r| r.result.as_ref().err().map(|e| format!("{} ({e})", r.display_name)))
        .collect();
    let mut parts = Vec::new();
    if !on.is_empty() {
        parts.push(format!("recorded on {}", on.join(", ")));
    }
    if !missed.is_empty() {
        parts.push(format!("NOT recorded on {}", missed.join(", ")));
    }
    parts.join("; ")
}

/// Whether some node of the plan does not have the record.
pub fn missed_any(records: &[NodeRecord]) -> bool {
    records.iter().any(|r| r.result.is_err())
}
