//! How an apply ended: per node a [`NodeOutcome`] (with the label and detail users read), and
//! for the whole run one [`Verdict`]. This module only names and judges results; it does no IO
//! and does not know exit codes (the command maps a verdict to one).

use std::collections::BTreeMap;

use crate::model::NodeName;

/// How a node's apply ended.
/// Serialized on the node engine's wire (`apply::proto`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum NodeOutcome {
    /// Every selected service is at its new version.
    Applied,
    /// The plan changes nothing on this node (for the selection).
    NoChanges,
    /// `--stage`: every selected service went through that stage; the rest is pending.
    Staged { stage: String },
    /// Applied on this node by an earlier run (from this controller, another one, or the node
    /// itself), and the node is still at the plan's state (or `--resume` found its part done):
    /// who applied it and when, as the node's record says (empty when it does not).
    AlreadyApplied { by: String, at: String },
    /// Some services were rolled back to their previous version. `problems` names every
    /// service that did not finish, the rolled-back ones included, each with its first cause.
    RolledBack { services: Vec<String>, problems: Vec<String> },
    /// A service's deploy failed and so did its rollback: the node runs neither version as
    /// planned. No resume redeploys it; it needs repair by hand and a new plan.
    RollbackFailed { services: Vec<String>, problems: Vec<String> },
    /// Some services failed or were skipped; the rest is applied. `next` says whether
    /// `--resume` can continue.
    Partial { reason: String, next: Next },
    /// The node changed since the plan: nothing was done on it.
    Stale { what: String },
    /// The plan was already applied on this node (replay), the node is locked, or another
    /// plan is undecided there.
    Refused { reason: String },
    /// The link dropped or the node never answered; the journal says where it stopped (`next`
    /// is [`Next::Resume`]), or the plan holds nothing for the node because it could not be
    /// read when planned ([`Next::Replan`]).
    Unreachable { reason: String, next: Next },
}

/// What can move a node on from where its run left it. The summary suggests only a command
/// that can make progress: a resume that would only repeat the result is never suggested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Next {
    /// `homelab apply --resume` continues (after fixing the cause, when something failed).
    Resume,
    /// Only a new plan changes it (stale, rolled back, left out after expiry, never read).
    Replan,
    /// A failed rollback left a service running neither version: only a repair by hand on the
    /// node, then a new plan.
    Repair,
    /// It follows from another service's result in this run (a dependency that did not reach
    /// its new version): what helps that one helps this one.
    Follows,
}

impl NodeOutcome {
    pub fn label(&self) -> &'static str {
        match self {
            NodeOutcome::Applied => "applied",
            NodeOutcome::NoChanges => "no changes",
            NodeOutcome::Staged { .. } => "stage done",
            NodeOutcome::AlreadyApplied { .. } => "applied earlier",
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
            NodeOutcome::Applied | NodeOutcome::NoChanges => String::new(),
            NodeOutcome::AlreadyApplied { by, at } => already_applied(by, at),
            NodeOutcome::RolledBack { services, problems } if problems.is_empty() => {
                format!("rolled back: {}", services.join(", "))
            }
            NodeOutcome::RolledBack { services, problems } => {
                format!("rolled back: {}; {}", services.join(", "), problems.join("; "))
            }
            NodeOutcome::RollbackFailed { services, problems } => {
                format!("rollback failed: {}; {}", services.join(", "), problems.join("; "))
            }
            NodeOutcome::Partial { reason, .. }
            | NodeOutcome::Refused { reason }
            | NodeOutcome::Unreachable { reason, .. } => reason.clone(),
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
                | NodeOutcome::AlreadyApplied { .. }
                | NodeOutcome::NoChanges
        )
    }

    /// Whether the controller keeps its record of the run for this node: the node may have
    /// been changed, or it was found applied (by the node itself, or another controller), so a
    /// plain apply of the plan from here is a replay from now on.
    pub fn recorded(&self) -> bool {
        self.touched() || matches!(self, NodeOutcome::AlreadyApplied { .. })
    }

    /// What moves the node on, when its result is not where the operator asked it to be and
    /// something can change it.
    pub fn next(&self) -> Option<Next> {
        match self {
            NodeOutcome::Partial { next, .. } | NodeOutcome::Unreachable { next, .. } => {
                Some(*next)
            }
            NodeOutcome::Stale { .. } | NodeOutcome::RolledBack { .. } => Some(Next::Replan),
            NodeOutcome::RollbackFailed { .. } => Some(Next::Repair),
            _ => None,
        }
    }

    /// Whether the node is where the operator asked it to be.
    fn succeeded(&self) -> bool {
        matches!(
            self,
            NodeOutcome::Applied
                | NodeOutcome::AlreadyApplied { .. }
                | NodeOutcome::NoChanges
                | NodeOutcome::Staged { .. }
        )
    }
}

/// How an earlier apply is described: `already applied on this node (by …, at …)`.
fn already_applied(by: &str, at: &str) -> String {
    match (by.is_empty(), at.is_empty()) {
        (true, true) => "already applied on this node".to_owned(),
        (false, true) => format!("already applied on this node (by {by})"),
        (true, false) => format!("already applied on this node (at {at})"),
        (false, false) => format!("already applied on this node (by {by}, at {at})"),
    }
}

/// The lines a run's summary ends with when it did not succeed: a command only where it can
/// make progress (`--resume` of `approved`, the path the operator gave, or a new plan), never
/// a resume that would repeat the result.
pub fn hints(outcomes: &BTreeMap<NodeName, NodeOutcome>, approved: &str) -> Vec<String> {
    let next: Vec<Next> = outcomes.values().filter_map(NodeOutcome::next).collect();
    let mut out = Vec::new();
    if next.contains(&Next::Resume) {
        out.push(format!(
            "not everything was applied; after fixing the cause: homelab apply --resume {approved}"
        ));
    }
    if next.contains(&Next::Repair) {
        out.push(
            "a failed rollback left a service running neither version: repair it on the node (its incident log and `homelab apply --stage diagnose` show why), then plan again"
                .to_owned(),
        );
    }
    if next.contains(&Next::Replan) {
        out.push(
            "what a resume cannot change (a stale node, a rolled-back service, work the plan left out) needs a new plan: homelab plan, review, approve, apply"
                .to_owned(),
        );
    }
    out
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

    fn run(list: &[NodeOutcome]) -> Verdict {
        verdict(&outcomes(list))
    }

    #[test]
    fn a_refusal_beside_success_is_refused_and_any_failure_wins() {
        let refused = NodeOutcome::Refused { reason: "locked".into() };
        let partial = NodeOutcome::Partial { reason: "x".into(), next: Next::Resume };
        assert_eq!(run(&[NodeOutcome::Applied, NodeOutcome::NoChanges]), Verdict::Success);
        assert_eq!(run(&[NodeOutcome::Applied, refused.clone()]), Verdict::Refused);
        assert_eq!(run(&[refused, partial]), Verdict::Failed);
        assert_eq!(
            run(&[NodeOutcome::RolledBack { services: vec![], problems: vec![] }]),
            Verdict::Failed
        );
    }

    fn outcomes(list: &[NodeOutcome]) -> BTreeMap<NodeName, NodeOutcome> {
        list.iter()
            .enumerate()
            .map(|(i, o)| (NodeName::parse(&format!("n{i}")).unwrap(), o.clone()))
            .collect()
    }

    const RESUME: &str =
        "not everything was applied; after fixing the cause: homelab apply --resume plans/p.approved";
    const REPLAN: &str = "what a resume cannot change (a stale node, a rolled-back service, work the plan left out) needs a new plan: homelab plan, review, approve, apply";

    /// A resume is suggested only where it can make progress: never for a rolled-back
    /// service, a stale node, a node not read when planned, work left out after expiry, nor
    /// for a service that only waited on one of those.
    #[test]
    fn hints_name_only_commands_that_make_progress() {
        let hints = |list: &[NodeOutcome]| hints(&outcomes(list), "plans/p.approved");
        let rolled = NodeOutcome::RolledBack { services: vec!["web".into()], problems: vec![] };
        let follows = NodeOutcome::Partial { reason: "skipped".into(), next: Next::Follows };
        assert_eq!(hints(&[rolled.clone(), follows.clone()]), [REPLAN]);
        let planned_unread =
            NodeOutcome::Unreachable { reason: "plan again".into(), next: Next::Replan };
        assert_eq!(hints(&[planned_unread]), [REPLAN]);
        let lost = NodeOutcome::Unreachable { reason: "link".into(), next: Next::Resume };
        assert_eq!(hints(&[lost, follows.clone()]), [RESUME]);
        let failed = NodeOutcome::Partial { reason: "validate".into(), next: Next::Resume };
        assert_eq!(hints(&[failed, rolled]), [RESUME, REPLAN]);
        let refused = NodeOutcome::Refused { reason: "locked".into() };
        assert_eq!(hints(&[refused, follows]), Vec::<String>::new());
    }

    #[test]
    fn an_earlier_apply_says_who_and_when_as_the_node_recorded_it() {
        let at = |by: &str, at: &str| {
            NodeOutcome::AlreadyApplied { by: by.into(), at: at.into() }.detail()
        };
        assert_eq!(
            at("root@n pid 1", "2026-12-01T10:00:00Z"),
            "already applied on this node (by root@n pid 1, at 2026-12-01T10:00:00Z)"
        );
        assert_eq!(at("", ""), "already applied on this node");
        let found = NodeOutcome::AlreadyApplied { by: String::new(), at: String::new() };
        assert!(found.recorded() && !found.touched() && found.succeeded());
    }
}
