//! How an apply ended: per node a [`NodeOutcome`] (with the label and detail users read), and
//! for the whole run one [`Verdict`]. This module only names and judges results; it does no IO
//! and does not know exit codes (the command maps a verdict to one).

use std::collections::BTreeMap;

use crate::model::NodeName;

/// How a node's apply ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeOutcome {
    /// Every selected service is at its new version.
    Applied,
    /// The plan changes nothing on this node (for the selection).
    NoChanges,
    /// `--stage`: every selected service went through that stage; the rest is pending.
    Staged { stage: String },
    /// Applied on this node by an earlier run (resume found it complete).
    AlreadyApplied,
    /// Some services were rolled back to their previous version. `problems` names every
    /// service that did not finish, the rolled-back ones included, each with its first cause.
    RolledBack { services: Vec<String>, problems: Vec<String> },
    /// A service's deploy failed and so did its rollback: the node runs neither version as
    /// planned. No resume redeploys it; it needs repair by hand and a new plan.
    RollbackFailed { services: Vec<String>, problems: Vec<String> },
    /// Some services failed or were skipped; the rest is applied. `--resume` continues.
    Partial { reason: String },
    /// The node changed since the plan: nothing was done on it.
    Stale { what: String },
    /// The plan was already applied on this node (replay), or the node is locked.
    Refused { reason: String },
    /// The link dropped or the node never answered; the journal says where it stopped.
    Unreachable { reason: String },
}

impl NodeOutcome {
    pub fn label(&self) -> &'static str {
        match self {
            NodeOutcome::Applied => "applied",
            NodeOutcome::NoChanges => "no changes",
            NodeOutcome::Staged { .. } => "stage done",
            NodeOutcome::AlreadyApplied => "applied earlier",
            NodeOutcome::RolledBack { .. } => "rolled back",
            NodeOutcome::RollbackFailed { .. } => "rollback failed",
            NodeOutcome::Partial { .. } => "partial",
            NodeOutcome::Stale { .. } => "stale",
            NodeOutcome::Refused { .. } => "refused",
            NodeOutcome::Unreachable { .. } => "unreachable",
        }
    }

    pub fn detail(&self) -> String {
        match self {
            NodeOutcome::Applied | NodeOutcome::AlreadyApplied | NodeOutcome::NoChanges => {
                String::new()
            }
            NodeOutcome::RolledBack { services, problems } if problems.is_empty() => {
                format!("rolled back: {}", services.join(", "))
            }
            NodeOutcome::RolledBack { services, problems } => {
                format!("rolled back: {}; {}", services.join(", "), problems.join("; "))
            }
            NodeOutcome::RollbackFailed { services, problems } => {
                format!("rollback failed: {}; {}", services.join(", "), problems.join("; "))
            }
            NodeOutcome::Partial { reason }
            | NodeOutcome::Refused { reason }
            | NodeOutcome::Unreachable { reason } => reason.clone(),
            NodeOutcome::Stale { what } => what.clone(),
            NodeOutcome::Staged { stage } if stage == "diagnose" => {
                "diagnosed; nothing changed".to_owned()
            }
            NodeOutcome::Staged { stage } => {
                format!("through `{stage}`; the later stages are pending (`--resume`)")
            }
        }
    }

    /// Whether the node may have been changed by this run.
    pub fn touched(&self) -> bool {
        !matches!(
            self,
            NodeOutcome::Stale { .. }
                | NodeOutcome::Refused { .. }
                | NodeOutcome::AlreadyApplied
                | NodeOutcome::NoChanges
        )
    }

    /// Whether the node is where the operator asked it to be.
    fn succeeded(&self) -> bool {
        matches!(
            self,
            NodeOutcome::Applied
                | NodeOutcome::AlreadyApplied
                | NodeOutcome::NoChanges
                | NodeOutcome::Staged { .. }
        )
    }
}

/// The judgement of a whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every node applied (or had nothing to do, or went through the asked stage).
    Success,
    /// Something was refused (stale, replay, locked) before it was touched, and nothing failed.
    Refused,
    /// Something failed, was rolled back or skipped, or a node was lost.
    Failed,
}

/// Never [`Verdict::Success`] when anything was rolled back or skipped: a run is a success
/// only when every selected node succeeded.
pub fn verdict(outcomes: &BTreeMap<NodeName, NodeOutcome>) -> Verdict {
    if outcomes.values().all(NodeOutcome::succeeded) {
        Verdict::Success
    } else if outcomes.values().all(|o| {
        o.succeeded() || matches!(o, NodeOutcome::Stale { .. } | NodeOutcome::Refused { .. })
    }) {
        Verdict::Refused
    } else {
        Verdict::Failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(outcomes: &[NodeOutcome]) -> Verdict {
        let map = outcomes
            .iter()
            .enumerate()
            .map(|(i, o)| (NodeName::parse(&format!("n{i}")).unwrap(), o.clone()))
            .collect();
        verdict(&map)
    }

    #[test]
    fn a_refusal_beside_success_is_refused_and_any_failure_wins() {
        let refused = NodeOutcome::Refused { reason: "locked".into() };
        let partial = NodeOutcome::Partial { reason: "x".into() };
        assert_eq!(run(&[NodeOutcome::Applied, NodeOutcome::NoChanges]), Verdict::Success);
        assert_eq!(run(&[NodeOutcome::Applied, refused.clone()]), Verdict::Refused);
        assert_eq!(run(&[refused, partial]), Verdict::Failed);
        assert_eq!(
            run(&[NodeOutcome::RolledBack { services: vec![], problems: vec![] }]),
            Verdict::Failed
        );
    }
}
