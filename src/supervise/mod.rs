//! The supervisor's judgement: whether a plan (computed by `plan`, from a commit and a refresh)
//! is drift, what the drift is called (the reason a reviewer reads), its fingerprint (so the
//! same drift makes one plan, not one per interval), and what to do about earlier plans of the
//! supervisor that are still pending. [`adopt`] is the other way out of drift: the patch that
//! makes the repository match a node.
//!
//! Pure but for [`Memory`]'s file: no node, no clock, no signing. It never applies anything
//! and never approves: the command signs with the supervisor's own key and writes a pending
//! action, as `homelab plan` does. It imports nothing of `command` or `cli`.

pub mod adopt;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::node::Layout;
use crate::plan::{Action, Plan, PlannedStatus};
use crate::world::World;

/// Drift found by a pass: what differs, in words and as a fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// `sha256:<hex>` over the nodes that drifted (their fingerprints) and the desired render
    /// of every change (action, instance, artifact hashes). Container states and the world
    /// are left out, as in a node's fingerprint: a flapping container is one drift.
    pub fingerprint: String,
    /// One line for the pending action and `homelab show`.
    pub reason: String,
}

/// The drift in `plan`, or `None` when the reachable nodes match the desired state.
/// `world` (the observer's, when there is one) adds what it knows of the drifted services.
pub fn drift(plan: &Plan, world: Option<&World>) -> Option<Drift> {
    let mut lines = Vec::new();
    let mut parts = Vec::new();
    for n in &plan.nodes {
        let PlannedStatus::Reachable { fingerprint, .. } = &n.status else { continue };
        let changes: Vec<_> = n.changes.iter().filter(|c| c.action != Action::NoOp).collect();
        if changes.is_empty() {
            continue;
        }
        lines.push(format!("node {} {fingerprint}", n.node));
        for c in changes {
            let arts: Vec<String> =
                c.artifacts.iter().map(|a| format!("{}={}", a.name, a.sha256)).collect();
            lines.push(format!("change {} {} {}", c.action, c.instance, arts.join(" ")));
            let mut part = format!("{} {}: {}", c.instance, c.action, c.reason);
            if let Some(w) = world.and_then(|w| w.services.get(&c.instance.to_string())) {
                if let Some(h) = w.health.as_ref().filter(|h| h.state != "healthy") {
                    part.push_str(&format!(" (world: {} since {} by {}", h.state, h.since, h.by));
                    if let Some(r) = &h.reason {
                        part.push_str(&format!(": {r}"));
                    }
                    part.push(')');
                }
            }
            parts.push(part);
        }
    }
    if lines.is_empty() {
        return None;
    }
    let mut h = Sha256::new();
    for l in &lines {
        h.update(l.as_bytes());
        h.update(b"\n");
    }
    let unread: Vec<String> = plan
        .nodes
        .iter()
        .filter(|n| matches!(n.status, PlannedStatus::Unreachable { .. }))
        .map(|n| n.node.to_string())
        .collect();
    let mut reason = format!("drift: {}", parts.join("; "));
    if !unread.is_empty() {
        reason.push_str(&format!("; not read (unreachable): {}", unread.join(", ")));
    }
    Some(Drift { fingerprint: format!("sha256:{}", crate::digest::hex(&h.finalize())), reason })
}

/// An earlier supervisor plan still in `actions/pending/`: its id and drift fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Earlier {
    pub id: String,
    pub drift: String,
}

/// What a pass does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Write a new plan for the drift.
    pub plan: bool,
    /// Earlier pending plans to mark superseded (by the new plan, or because the drift is
    /// gone or changed), with why.
    pub supersede: Vec<(String, String)>,
    /// What the pass says when it writes nothing.
    pub note: String,
}

/// Decides a pass. `pending`: the supervisor's plans waiting in `actions/pending/`;
/// `memory`: its last plan; `rejected(id)`: whether an operator rejected a plan.
pub fn decide(
    drift: Option<&Drift>,
    pending: &[Earlier],
    memory: Option<&Memory>,
    rejected: impl Fn(&str) -> bool,
) -> Decision {
    let Some(d) = drift else {
        return Decision {
            plan: false,
            supersede: pending
                .iter()
                .map(|e| (e.id.clone(), "the drift is gone: nothing to apply".to_owned()))
                .collect(),
            note: "no drift".to_owned(),
        };
    };
    if let Some(same) = pending.iter().find(|e| e.drift == d.fingerprint) {
        return Decision {
            plan: false,
            supersede: pending
                .iter()
                .filter(|e| e.drift != d.fingerprint)
                .map(|e| {
                    (e.id.clone(), format!("superseded by plan {}: the drift changed", same.id))
                })
                .collect(),
            note: format!("drift unchanged: plan {} is pending", same.id),
        };
    }
    if let Some(m) = memory.filter(|m| m.drift == d.fingerprint && rejected(&m.plan)) {
        return Decision {
            plan: false,
            supersede: Vec::new(),
            note: format!(
                "drift unchanged: its plan {} was rejected; resolve it with `homelab adopt` or a change to the repository",
                m.plan
            ),
        };
    }
    Decision {
        plan: true,
        supersede: pending.iter().map(|e| (e.id.clone(), "the drift changed".to_owned())).collect(),
        note: String::new(),
    }
}

/// `<root>/state/supervisor/last.json`: the last drift planned for and its plan, so a drift
/// whose plan was rejected is not planned again. Losing it is safe: the pending actions
/// carry their drift too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    pub drift: String,
    pub plan: String,
    pub at: String,
}

impl Memory {
    pub fn path(root: &Path) -> PathBuf {
        PathBuf::from(Layout::local(root).supervisor_state())
    }

    /// The memory under `root`; `None` when there is none or it does not parse.
    pub fn load(root: &Path) -> Option<Memory> {
        std::fs::read(Memory::path(root)).ok().and_then(|b| serde_json::from_slice(&b).ok())
    }

    pub fn save(&self, root: &Path) -> std::io::Result<()> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("serializes");
        bytes.push(b'\n');
        crate::files::write_atomic(&Memory::path(root), &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(fp: &str) -> Drift {
        Drift { fingerprint: fp.into(), reason: "drift".into() }
    }

    fn e(id: &str, fp: &str) -> Earlier {
        Earlier { id: id.into(), drift: fp.into() }
    }

    #[test]
    fn the_same_drift_makes_no_second_plan_and_a_changed_one_supersedes() {
        let same = decide(Some(&d("a")), &[e("p1", "a")], None, |_| false);
        assert!(!same.plan);
        assert!(same.supersede.is_empty());
        let changed = decide(Some(&d("b")), &[e("p1", "a")], None, |_| false);
        assert!(changed.plan);
        assert_eq!(changed.supersede.len(), 1);
        let gone = decide(None, &[e("p1", "a")], None, |_| false);
        assert!(!gone.plan);
        assert_eq!(gone.supersede[0].0, "p1");
    }

    #[test]
    fn a_rejected_drift_is_not_planned_again_but_an_expired_one_is() {
        let m = Memory { drift: "a".into(), plan: "p1".into(), at: "t".into() };
        assert!(!decide(Some(&d("a")), &[], Some(&m), |id| id == "p1").plan);
        assert!(decide(Some(&d("a")), &[], Some(&m), |_| false).plan);
    }
}
