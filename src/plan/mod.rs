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
    /// What homelab deployed before (update), for every artifact whose bytes on the node are
    /// still what its manifest says: bound by hash to the node's `actual` lines. A file edited
    /// by hand on the node is never carried (it may hold a secret).
    pub prior: Vec<PlannedArtifact>,
    /// Unified diffs by artifact name, computed from `prior` and `artifacts` by [`diffs_of`]
    /// (never read from a plan file): what a reviewer is shown.
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

impl Runtime {
    /// What apply needs from a service's contract: its healthcheck and the names of the
    /// secrets that must be on the node. The plan and the review both take it from here.
    pub fn of(svc: &crate::model::Service) -> Runtime {
        Runtime {
            healthcheck: svc.healthcheck,
            secrets: svc
                .env_vars
                .iter()
                .filter(|e| e.secret && e.required)
                .map(|e| e.name.clone())
                .collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedArtifact {
    pub name: String,
    pub mode: u32,
    pub sha256: String,
    /// The content of a text file (empty for a binary one).
    pub text: String,
    /// The content of a file that is not UTF-8 text: shown by size and hash, never as lines.
    pub binary: Option<Vec<u8>>,
}

impl PlannedArtifact {
    /// The bytes that go to the node.
    pub fn bytes(&self) -> &[u8] {
        self.binary.as_deref().unwrap_or(self.text.as_bytes())
    }

    /// The line a reviewer reads for a binary file.
    fn binary_line(&self) -> Option<String> {
        self.binary.as_ref().map(|b| {
            format!("Binary file {}: {} bytes, sha256 {}\n", self.name, b.len(), self.sha256)
        })
    }
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
        // A node that answered and then stalled was not read, but it is not unreachable.
        let stalled = self
            .nodes
            .iter()
            .filter(|n| {
                matches!(&n.status, PlannedStatus::Unreachable { reason }
                    if reason.starts_with(crate::observe::STALLED))
            })
            .count();
        let plural = |n: usize| if n == 1 { "" } else { "s" };
        let u = self.unreachable() - stalled;
        if u > 0 {
            parts.push(format!("{u} node{} unreachable", plural(u)));
        }
        if stalled > 0 {
            parts.push(format!("{stalled} node{} not read (stalled)", plural(stalled)));
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
                change.runtime = Some(Runtime::of(svc));
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
                prior: Vec::new(),
                diffs: Vec::new(),
                runtime: None,
            });
        }
        let actual = state.fingerprint_lines();
        for c in &mut changes {
            c.diffs = diffs_of(c, &actual);
        }
        nodes.push(NodePlan {
            node: a.node.clone(),
            status: PlannedStatus::Reachable { fingerprint: state.fingerprint(), actual },
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
    let (text, binary) = match String::from_utf8(a.bytes.clone()) {
        Ok(text) => (text, None),
        Err(e) => (String::new(), Some(e.into_bytes())),
    };
    PlannedArtifact { name: a.name.to_owned(), mode: a.mode, sha256: a.sha256(), text, binary }
}

fn change_for(
    inst: &Instance,
    rendered: &Rendered,
    deployed: Option<&DeployedService>,
    after: Vec<Instance>,
) -> Change {
    let all: Vec<PlannedArtifact> = rendered.artifacts.iter().map(planned).collect();
    let mk = |action, reason: String, artifacts, prior| Change {
        instance: inst.clone(),
        action,
        reason,
        after: after.clone(),
        artifacts,
        prior,
        diffs: Vec::new(),
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
    for a in &all {
        let before = manifest.artifacts.iter().find(|m| m.name == a.name);
        let on_disk = deployed.files.get(&a.name);
        let same = before
            .is_some_and(|m| m.sha256 == a.sha256 && format!("{:04o}", a.mode) == m.mode)
            && on_disk.is_some_and(|f| f.sha256 == a.sha256 && f.mode == format!("{:04o}", a.mode));
        if !same {
            changed.push(a.name.clone());
        }
    }
    for m in &manifest.artifacts {
        if !all.iter().any(|a| a.name == m.name) {
            changed.push(m.name.clone());
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
    mk(Action::Update, reason.join("; "), all, prior_of(deployed))
}

/// The node's copies of homelab's artifacts whose content is known (exactly what the manifest
/// says homelab wrote) and whose mode a plan can carry.
fn prior_of(deployed: &DeployedService) -> Vec<PlannedArtifact> {
    deployed
        .files
        .iter()
        .filter_map(|(name, f)| {
            let text = f.content.clone()?;
            let mode = match f.mode.as_str() {
                "0644" => 0o644,
                "0755" => 0o755,
                _ => return None,
            };
            Some(PlannedArtifact {
                name: name.clone(),
                mode,
                sha256: f.sha256.clone(),
                text,
                binary: None,
            })
        })
        .collect()
}

/// What a reviewer is shown for a change, computed from content the plan binds: a create or
/// replace shows every artifact whole; an update diffs the prior content (what the node holds,
/// by hash) against the new; a file on the node whose content homelab does not know (edited by
/// hand) is said to be so, and its new content shown whole.
pub fn diffs_of(c: &Change, actual: &[String]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    match c.action {
        Action::NoOp | Action::Delete => {}
        Action::Create | Action::Replace => {
            for a in &c.artifacts {
                let shown = a.binary_line().unwrap_or_else(|| unified(&a.name, "", &a.text));
                out.push((a.name.clone(), shown));
            }
        }
        Action::Update => {
            let names: std::collections::BTreeSet<&str> =
                c.artifacts.iter().chain(&c.prior).map(|a| a.name.as_str()).collect();
            let svc = c.instance.service.as_str();
            for name in names {
                let new = c.artifacts.iter().find(|a| a.name == name);
                if let Some(line) = new.and_then(PlannedArtifact::binary_line) {
                    // A binary file is never diffed: its size and hash say what ships.
                    let on_node = actual.iter().find_map(|l| {
                        l.strip_prefix(&format!("{svc} file {name} "))?.split(' ').next()
                    });
                    if on_node != new.map(|a| a.sha256.as_str()) {
                        out.push((name.to_owned(), line));
                    }
                    continue;
                }
                let before = c.prior.iter().find(|a| a.name == name).map(|a| a.text.as_str());
                let after = new.map(|a| a.text.as_str());
                let on_node = actual.iter().any(|l| l.starts_with(&format!("{svc} file {name} ")));
                match (before, after) {
                    (Some(b), Some(a)) if b != a => {
                        out.push((name.to_owned(), unified(name, b, a)))
                    }
                    (Some(b), None) => out.push((name.to_owned(), unified(name, b, ""))),
                    (None, Some(a)) if on_node => out.push((
                        name.to_owned(),
                        TextDiff::from_lines("", a)
                            .unified_diff()
                            .context_radius(3)
                            .header(
                                &format!("a/{name} (on the node, edited by hand: not shown)"),
                                &format!("b/{name}"),
                            )
                            .to_string(),
                    )),
                    (None, Some(a)) => out.push((name.to_owned(), unified(name, "", a))),
                    _ => {}
                }
            }
        }
    }
    out
}

/// A unified diff with three lines of context, `a/` and `b/` headers as Git writes them.
pub fn unified(name: &str, old: &str, new: &str) -> String {
    TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{name}"), &format!("b/{name}"))
        .to_string()
}
