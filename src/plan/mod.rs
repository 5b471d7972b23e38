//! The plan: a pure diff of desired (rendered) against actual state, per node in dependency
//! order. No I/O here: `diff` is a function of values, so it is tested without any node.
//!
//! The plan file format lives in `file` (the only module that knows it); `display` renders a
//! plan for a terminal, a Forgejo comment, or a machine.

pub mod display;
pub mod file;

use std::collections::BTreeMap;
use std::fmt;

use similar::TextDiff;

use crate::graph::DeployGraph;
use crate::model::{Homelab, Instance, NodeName};
use crate::observe::{ActualNode, DeployedService, Engine, ManifestState, NodeStatus};
use crate::render::{Artifact, Rendered};

/// What happens to one service instance. The glyphs users see come from `symbol` only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Create,
    Update,
    /// Take the deployed project down and bring the new one up (its on-node state is unusable).
    Replace,
    Delete,
    NoOp,
}

impl Action {
    pub const ALL: [Action; 5] =
        [Action::Create, Action::Update, Action::Replace, Action::Delete, Action::NoOp];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Replace => "replace",
            Action::Delete => "delete",
            Action::NoOp => "no-op",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }

    pub fn symbol(self) -> &'static str {
        match self {
            Action::Create => "+",
            Action::Update => "~",
            Action::Replace => "-/+",
            Action::Delete => "-",
            Action::NoOp => " ",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A plan as a plain value: what `plan` computed and what `apply` executes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub created: String,
    pub expires: String,
    /// Who planned: principal (from allowed_signers) and key fingerprint.
    pub planner: String,
    /// Git commit of the repository, and whether the tree had uncommitted changes.
    pub commit: String,
    pub dirty: bool,
    pub nodes: Vec<NodePlan>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePlan {
    pub node: NodeName,
    pub status: PlannedStatus,
    pub changes: Vec<Change>,
    /// What the node's Docker Engine said (containers and their state), for the reviewer; not
    /// part of the fingerprint.
    pub engine: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlannedStatus {
    /// The node was read; `fingerprint` digests `actual` (see `NodeState::fingerprint`).
    Reachable {
        fingerprint: String,
        actual: Vec<String>,
    },
    Unreachable {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub instance: Instance,
    pub action: Action,
    pub reason: String,
    /// Instances this one waits for (dependencies, possibly on other nodes).
    pub after: Vec<Instance>,
    /// The full new content of every artifact to write (create, update, replace).
    pub artifacts: Vec<PlannedArtifact>,
    /// Unified diffs against what homelab deployed before (update), by artifact name.
    pub diffs: Vec<(String, String)>,
    /// What apply needs from the contract (create, update, replace): healthcheck and the
    /// names of the secrets that must be on the node. Part of what is reviewed and signed.
    pub runtime: Option<Runtime>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runtime {
    pub healthcheck: crate::model::Healthcheck,
    pub secrets: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedArtifact {
    pub name: String,
    pub mode: u32,
    pub sha256: String,
    pub text: String,
}

impl Plan {
    pub fn count(&self, action: Action) -> usize {
        self.nodes.iter().flat_map(|n| &n.changes).filter(|c| c.action == action).count()
    }

    pub fn unreachable(&self) -> usize {
        self.nodes.iter().filter(|n| matches!(n.status, PlannedStatus::Unreachable { .. })).count()
    }

    pub fn has_changes(&self) -> bool {
        self.nodes.iter().flat_map(|n| &n.changes).any(|c| c.action != Action::NoOp)
    }

    pub fn summary(&self) -> String {
        let mut parts: Vec<String> =
            Action::ALL.iter().map(|a| format!("{} {}", self.count(*a), a)).collect();
        let u = self.unreachable();
        if u > 0 {
            parts.push(format!("{u} node{} unreachable", if u == 1 { "" } else { "s" }));
        }
        parts.join(", ")
    }
}

/// The metadata of a plan that does not come from the diff.
pub struct Header {
    pub created: String,
    pub expires: String,
    pub planner: String,
    pub commit: String,
    pub dirty: bool,
}

/// Diffs desired against actual, for the nodes in `actual`, in dependency order.
pub fn diff(
    lab: &Homelab,
    graph: &DeployGraph,
    desired: &[Rendered],
    actual: &[ActualNode],
    header: Header,
) -> Plan {
    let desired: BTreeMap<&Instance, &Rendered> =
        desired.iter().map(|r| (&r.instance, r)).collect();
    let order = graph.order();
    let mut nodes = Vec::new();
    for a in actual {
        let state = match &a.status {
            NodeStatus::Unreachable { reason } => {
                nodes.push(NodePlan {
                    node: a.node.clone(),
                    status: PlannedStatus::Unreachable { reason: reason.clone() },
                    changes: Vec::new(),
                    engine: None,
                });
                continue;
            }
            NodeStatus::Reachable(state) => state,
        };
        let mut changes = Vec::new();
        for inst in order.iter().filter(|i| i.node == a.node) {
            let Some(rendered) = desired.get(inst) else { continue };
            let after = graph.dependencies(inst).into_iter().cloned().collect();
            let deployed = state.services.get(inst.service.as_str());
            let mut change = change_for(inst, rendered, deployed, after);
            if change.action == Action::NoOp {
                let svc = inst.service.as_str();
                let interrupted = state.interrupted.get(svc).filter(|(id, _)| {
                    // Only while the live link still points at that apply's release.
                    deployed
                        .and_then(|d| d.release.as_deref())
                        .is_some_and(|r| r.ends_with(&format!("/{id}")))
                });
                if let Some((id, stage)) = interrupted {
                    change.action = Action::Update;
                    change.reason = format!(
                        "the apply of plan {id} stopped at `{stage}`: the containers may not match the files (or resume that plan)"
                    );
                    change.artifacts = rendered.artifacts.iter().map(planned).collect();
                } else if let Some(why) = containers_not_up(&state.engine, svc) {
                    change.action = Action::Update;
                    change.reason = format!("artifacts match, but {why}");
                    change.artifacts = rendered.artifacts.iter().map(planned).collect();
                }
            }
            if change.action != Action::NoOp {
                let svc = &lab.services[&inst.service];
                change.runtime = Some(Runtime {
                    healthcheck: svc.healthcheck,
                    secrets: svc
                        .env_vars
                        .iter()
                        .filter(|e| e.secret && e.required)
                        .map(|e| e.name.clone())
                        .collect(),
                });
            }
            changes.push(change);
        }
        // Deployed on the node but no longer desired there: delete, after everything else.
        for (name, svc) in &state.services {
            let desired_here = lab
                .nodes
                .get(&a.node)
                .map(|n| n.services.keys().any(|s| s.as_str() == name))
                .unwrap_or(false);
            if desired_here {
                continue;
            }
            let Ok(service) = crate::model::ServiceName::parse(name) else { continue };
            let inst = Instance { service, node: a.node.clone() };
            let files: Vec<String> = svc.files.keys().cloned().collect();
            changes.push(Change {
                instance: inst,
                action: Action::Delete,
                reason: format!(
                    "no longer desired on this node (deployed files: {})",
                    files.join(", ")
                ),
                after: Vec::new(),
                artifacts: Vec::new(),
                diffs: Vec::new(),
                runtime: None,
            });
        }
        nodes.push(NodePlan {
            node: a.node.clone(),
            status: PlannedStatus::Reachable {
                fingerprint: state.fingerprint(),
                actual: state.fingerprint_lines(),
            },
            changes,
            engine: Some(engine_summary(&state.engine)),
        });
    }
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    Plan {
        created: header.created,
        expires: header.expires,
        planner: header.planner,
        commit: header.commit,
        dirty: header.dirty,
        nodes,
    }
}

/// One line on the node's containers, for the reviewer.
fn engine_summary(engine: &Engine) -> String {
    match engine {
        Engine::Unavailable { reason } => format!("unavailable: {reason}"),
        Engine::Available { containers } => {
            let running = containers.iter().filter(|c| c.state == "running").count();
            let mut s = format!("{} container(s), {running} running", containers.len());
            let odd: Vec<String> = containers
                .iter()
                .filter(|c| c.state != "running" || c.health.as_deref() == Some("unhealthy"))
                .map(|c| format!("{} {}", c.name, c.health.as_deref().unwrap_or(&c.state)))
                .collect();
            if !odd.is_empty() {
                s.push_str(&format!("; not up: {}", odd.join(", ")));
            }
            s
        }
    }
}

/// Why a deployed service whose files match is still not up: no container of its compose
/// project, or one that is not running or unhealthy. `None` when the engine could not be read.
fn containers_not_up(engine: &Engine, project: &str) -> Option<String> {
    let Engine::Available { containers } = engine else { return None };
    let mine: Vec<_> = containers.iter().filter(|c| c.project == project).collect();
    if mine.is_empty() {
        return Some(format!("no container of project `{project}` exists"));
    }
    let bad: Vec<String> = mine
        .iter()
        .filter(|c| c.state != "running" || c.health.as_deref() == Some("unhealthy"))
        .map(|c| {
            format!(
                "`{}` is {}",
                c.name,
                c.health.as_deref().filter(|h| *h == "unhealthy").unwrap_or(&c.state)
            )
        })
        .collect();
    (!bad.is_empty()).then(|| bad.join(", "))
}

fn planned(a: &Artifact) -> PlannedArtifact {
    PlannedArtifact {
        name: a.name.to_owned(),
        mode: a.mode,
        sha256: a.sha256(),
        text: String::from_utf8_lossy(&a.bytes).into_owned(),
    }
}

fn change_for(
    inst: &Instance,
    rendered: &Rendered,
    deployed: Option<&DeployedService>,
    after: Vec<Instance>,
) -> Change {
    let all: Vec<PlannedArtifact> = rendered.artifacts.iter().map(planned).collect();
    let mk = |action, reason: String, artifacts, diffs| Change {
        instance: inst.clone(),
        action,
        reason,
        after: after.clone(),
        artifacts,
        diffs,
        runtime: None,
    };
    let Some(deployed) = deployed else {
        return mk(Action::Create, "not deployed on the node yet".to_owned(), all, Vec::new());
    };
    let manifest = match &deployed.manifest {
        ManifestState::Present { manifest, .. } => manifest,
        ManifestState::Missing => {
            return mk(
                Action::Replace,
                "files on the node without a manifest: homelab cannot tell what is deployed"
                    .to_owned(),
                all,
                Vec::new(),
            );
        }
        ManifestState::Corrupt { reason } => {
            return mk(
                Action::Replace,
                format!("the manifest on the node is unreadable ({reason})"),
                all,
                Vec::new(),
            );
        }
    };
    let drift = deployed.drift();
    let mut changed = Vec::new();
    let mut diffs = Vec::new();
    for a in &all {
        let before = manifest.artifacts.iter().find(|m| m.name == a.name);
        let on_disk = deployed.files.get(&a.name);
        let same = before
            .is_some_and(|m| m.sha256 == a.sha256 && format!("{:04o}", a.mode) == m.mode)
            && on_disk.is_some_and(|f| f.sha256 == a.sha256 && f.mode == format!("{:04o}", a.mode));
        if same {
            continue;
        }
        changed.push(a.name.clone());
        let old = on_disk.and_then(|f| f.content.as_deref());
        match old {
            Some(old) if old != a.text => {
                diffs.push((a.name.clone(), unified(&a.name, old, &a.text)))
            }
            Some(_) => {}
            None if before.is_none() => diffs.push((a.name.clone(), unified(&a.name, "", &a.text))),
            // Edited by hand on the node: its content may hold anything and is not shown.
            None => {}
        }
    }
    for m in &manifest.artifacts {
        if !all.iter().any(|a| a.name == m.name) {
            changed.push(m.name.clone());
            let old = deployed.files.get(&m.name).and_then(|f| f.content.as_deref());
            if let Some(old) = old {
                diffs.push((m.name.clone(), unified(&m.name, old, "")));
            }
        }
    }
    if changed.is_empty() && drift.is_empty() {
        return mk(Action::NoOp, "deployed artifacts match".to_owned(), Vec::new(), Vec::new());
    }
    let mut reason = Vec::new();
    if !changed.is_empty() {
        reason.push(format!("changed: {}", changed.join(", ")));
    }
    if !drift.is_empty() {
        reason.push(format!("drift on the node: {}", drift.join("; ")));
    }
    mk(Action::Update, reason.join("; "), all, diffs)
}

/// A unified diff with three lines of context, `a/` and `b/` headers as Git writes them.
pub fn unified(name: &str, old: &str, new: &str) -> String {
    TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{name}"), &format!("b/{name}"))
        .to_string()
}
