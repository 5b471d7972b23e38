//! The plan: a pure diff of desired (rendered) against actual state, per node in dependency
//! order. No I/O here: `diff` is a function of values, so it is tested without any node.
//!
//! The plan file format lives in `file` (the only module that knows it); `display` renders a
//! plan for a terminal, a Forgejo comment, or a machine.

pub mod display;
pub mod file;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use similar::TextDiff;

use crate::graph::DeployGraph;
use crate::model::{Homelab, Instance, NodeName};
use crate::observe::{ActualNode, Container, DeployedService, Engine, ManifestState, NodeStatus};
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
    /// The trust roots of the commit (`Homelab::trust_roots`), by file name: a node whose
    /// pinned roots differ takes these once the plan is approved under its own.
    pub trust: Vec<(String, String)>,
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
    /// The runtime root the artifacts were rendered for, when `--root` placed it rather than
    /// the topology (`DIR/<id>`): the review renders with it, and apply refuses another.
    pub root: Option<String>,
    /// Whether the trust roots pinned on the node are the commit's (`None`: none pinned, or
    /// not read). `Some(false)` is kept in the plan file (`trust-rotate`): apply then takes the
    /// plan to the node even with no service to change, so the rotation reaches every node.
    pub pinned_match: Option<bool>,
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
    /// The service's data put back from a snapshot (`homelab restore`): an update that writes
    /// the artifacts the node already holds, with the data restored before the service starts.
    pub restore: Option<Restore>,
}

/// Where a restore takes the service's data from (issue 18): a snapshot the node took before
/// a change, or a restic snapshot of one of its backup sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restore {
    /// Local: the id of the plan whose change took it; restic: its id (8 to 64 hex digits).
    pub id: String,
    pub from: RestoreFrom,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreFrom {
    /// `<root>/state/snapshots/<svc>/<id>/` on the node.
    Local,
    /// The node's restic repository, as the commit's topology gives it.
    Restic { repository: String, options: Vec<String> },
}

impl Restore {
    /// The change's reason, to the byte (the review recomputes it).
    pub fn reason(&self) -> String {
        match &self.from {
            RestoreFrom::Local => {
                format!("restore data from local snapshot {} (taken before a change)", self.id)
            }
            RestoreFrom::Restic { .. } => {
                format!("restore data from restic snapshot {} (a backup)", self.id)
            }
        }
    }

    /// An id as the node's scripts may take it: hex digits only.
    pub fn id_ok(id: &str) -> bool {
        (8..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_hexdigit())
    }

    /// `local` or `restic`.
    pub fn kind(&self) -> &'static str {
        match self.from {
            RestoreFrom::Local => "local",
            RestoreFrom::Restic { .. } => "restic",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runtime {
    pub healthcheck: crate::model::Healthcheck,
    pub secrets: Vec<String>,
    /// The required variables that are not secret but that the compose file or the host's
    /// override interpolates with no default: the node's env file must give them a value, or
    /// Compose would run the service with an empty string.
    pub variables: Vec<Required>,
    /// The contract's `persistence.folders`: owners and modes the engine sets before the
    /// service comes up.
    pub folders: Vec<crate::model::Folder>,
    /// What is snapshotted on the node before the service changes, and restored when it is
    /// rolled back (`None`: a plan written before snapshots existed).
    pub snapshot: Option<Snapshot>,
    /// What the node checks the resolved configuration against at validate (`docker compose
    /// config` with its env file): `None` in a plan made before the node checked it.
    pub limits: Option<Limits>,
    /// The critical backup sets the node's stability agent watches from this deploy on, with
    /// their `max_age` in seconds: a set never backed up is reported too, counted from the
    /// deploy that first placed it.
    pub watched: Vec<(String, u64)>,
    /// The Docker networks its compose files mark `external: true`, which a service on the
    /// node declares: created on the node, when missing, before the service comes up.
    pub networks: Vec<String>,
}

/// The service's data as the engine snapshots it before a change (issue 18): its folders
/// under the runtime root (relative paths; those that exist on the node) and, found on the
/// node, the named volumes of its compose project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The containers are stopped while the copy is made (a set with `consistency: stop`).
    pub stop: bool,
    /// The share of the disk (percent) the snapshot must leave free.
    pub min_free: u8,
    pub paths: Vec<String>,
}

impl Snapshot {
    /// The service's own data and config folders, its backup sets and its persistence paths,
    /// except the node's logs and homelab's own state (a rollback must not erase the logs
    /// that say why it happened); a path inside another listed one is left out.
    pub fn of(svc: &crate::model::Service, node: Option<&crate::model::Node>) -> Snapshot {
        let name = svc.name.as_str();
        let mut paths: Vec<String> = [format!("data/{name}"), format!("config/{name}")]
            .into_iter()
            .chain(svc.backup_sets.iter().flat_map(|s| s.paths.iter().cloned()))
            .chain(svc.persistence_paths.iter().cloned())
            .map(|p| p.trim_end_matches('/').to_owned())
            .filter(|p| Snapshot::path_ok(p))
            .filter(|p| !crate::model::NOT_SNAPSHOTTED.iter().any(|o| crate::model::within(p, o)))
            .collect();
        paths.sort();
        paths.dedup();
        let all = paths.clone();
        paths.retain(|p| !all.iter().any(|q| q != p && crate::model::within(p, q)));
        Snapshot {
            stop: svc.backup_sets.iter().any(|s| s.stop),
            min_free: node.map_or(crate::model::DEFAULT_SNAPSHOT_MIN_FREE, |n| n.snapshot_min_free),
            paths,
        }
    }

    /// A path relative to the runtime root, as validation allows it: it reaches a script on
    /// the node.
    pub fn path_ok(p: &str) -> bool {
        crate::model::relative_path_ok(p)
    }
}

/// The contract's word on what the node's resolved configuration may publish and mount: the
/// service's exposure on the node and the host paths beyond its runtime folders that it
/// declares (`host_paths`, then `persistence.paths`, as written: absolute, or relative to the
/// runtime root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub exposure: crate::model::Exposure,
    /// The node's LAN address (`lan_address` in the topology): a `lan` service publishes on
    /// it, and no longer on every address. `None` when the node has none.
    pub lan_address: Option<std::net::IpAddr>,
    pub paths: Vec<String>,
}

/// A required variable, with the line of its `runtime.env_vars` entry (0: unknown), so the
/// node's refusal names where it is declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Required {
    pub name: String,
    pub line: u64,
}

impl Runtime {
    /// What apply needs from the contract of `inst`: its healthcheck, the names of the secrets
    /// that must be on the node, and the required variables its compose files take from there.
    /// The plan and the review both take it from here, with the instance as rendered (its
    /// compose files name the external networks).
    pub fn of(lab: &Homelab, inst: &Instance, rendered: &Rendered) -> Runtime {
        let svc = &lab.services[&inst.service];
        let mut texts = vec![svc.compose.text.as_str()];
        if let Some(o) = lab.nodes.get(&inst.node).and_then(|n| n.overrides.get(&inst.service)) {
            texts.push(&o.text);
        }
        let interpolated: BTreeSet<String> = texts
            .iter()
            .flat_map(|t| crate::model::validate::compose::interpolated_without_default(t))
            .collect();
        let compose: Vec<&str> = rendered
            .artifacts
            .iter()
            .filter(|a| a.name == crate::render::COMPOSE || a.name == crate::render::OVERRIDE)
            .filter_map(|a| std::str::from_utf8(&a.bytes).ok())
            .collect();
        Runtime {
            networks: crate::model::validate::compose::external_networks(&compose),
            healthcheck: svc.healthcheck,
            secrets: svc
                .env_vars
                .iter()
                .filter(|e| e.secret && e.required)
                .map(|e| e.name.clone())
                .collect(),
            variables: svc
                .env_vars
                .iter()
                .filter(|e| !e.secret && e.required && interpolated.contains(&e.name))
                .map(|e| Required { name: e.name.clone(), line: e.line.unwrap_or(0) })
                .collect(),
            folders: svc.folders.clone(),
            snapshot: Some(Snapshot::of(svc, lab.nodes.get(&inst.node))),
            watched: svc
                .backup_sets
                .iter()
                .filter(|s| s.critical)
                .map(|s| (s.name.clone(), s.max_age.as_secs()))
                .collect(),
            limits: Some(Limits {
                exposure: lab
                    .nodes
                    .get(&inst.node)
                    .and_then(|n| n.services.get(&inst.service))
                    .map(|s| s.exposure)
                    .unwrap_or(svc.exposure),
                lan_address: lab.nodes.get(&inst.node).and_then(|n| n.lan_address),
                paths: svc.host_paths.iter().chain(&svc.persistence_paths).fold(
                    Vec::new(),
                    |mut all, p| {
                        if !all.contains(p) {
                            all.push(p.clone());
                        }
                        all
                    },
                ),
            }),
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

impl NodePlan {
    /// The Docker networks the node gets before its services come up, each with the services
    /// whose compose files need it: a node-level change, shown once per node.
    pub fn networks(&self) -> Vec<(&str, Vec<&Instance>)> {
        let mut out: BTreeMap<&str, Vec<&Instance>> = BTreeMap::new();
        for c in &self.changes {
            for n in c.runtime.iter().flat_map(|rt| &rt.networks) {
                out.entry(n.as_str()).or_default().push(&c.instance);
            }
        }
        for users in out.values_mut() {
            users.sort();
        }
        out.into_iter().collect()
    }
}

impl Plan {
    pub fn count(&self, action: Action) -> usize {
        self.nodes.iter().flat_map(|n| &n.changes).filter(|c| c.action == action).count()
    }

    pub fn unreachable(&self) -> usize {
        self.nodes.iter().filter(|n| matches!(n.status, PlannedStatus::Unreachable { .. })).count()
    }

    /// A change to make: a service's, or new trust roots for a node that pins others.
    pub fn has_changes(&self) -> bool {
        self.nodes.iter().flat_map(|n| &n.changes).any(|c| c.action != Action::NoOp)
            || self.nodes.iter().any(|n| n.pinned_match == Some(false))
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
    // The desired instances and the deployment order split by node once, each keeping its
    // order: filtering both per node made a plan cost nodes × instances.
    let mut desired_on: BTreeMap<&NodeName, Vec<(&Instance, &Rendered)>> = BTreeMap::new();
    for (i, r) in &desired {
        desired_on.entry(&i.node).or_default().push((i, r));
    }
    let order = graph.order();
    let mut order_on: BTreeMap<&NodeName, Vec<&Instance>> = BTreeMap::new();
    for i in &order {
        order_on.entry(&i.node).or_default().push(i);
    }
    let root_of =
        |n: &NodeName| lab.nodes.get(n).filter(|n| n.root_given).map(|n| n.runtime_root.clone());
    // The commit's trust roots by hash, as the nodes' refresh reports theirs.
    let trust: Vec<(&str, String)> = lab
        .trust_roots()
        .into_iter()
        .map(|(file, text)| (file, crate::digest::sha256_hex(text.as_bytes())))
        .collect();
    let mut nodes = Vec::new();
    for a in actual {
        let state = match &a.status {
            NodeStatus::Unreachable { reason } => {
                nodes.push(NodePlan {
                    node: a.node.clone(),
                    status: PlannedStatus::Unreachable { reason: reason.clone() },
                    changes: Vec::new(),
                    engine: None,
                    root: root_of(&a.node),
                    pinned_match: None,
                });
                continue;
            }
            NodeStatus::Reachable(state) => state,
        };
        // The one-shot init containers of the services desired on the node, by compose
        // project: exited 0 is where they belong. Only an exited container is ever looked up
        // in it, so only the projects that have one are parsed for it: a YAML parse of every
        // compose file on every plan was a good part of planning a large homelab.
        let exited: BTreeSet<&str> = match &state.engine {
            Engine::Available { containers } => containers
                .iter()
                .filter(|c| c.state == "exited")
                .map(|c| c.project.as_str())
                .collect(),
            Engine::Unavailable { .. } => BTreeSet::new(),
        };
        let one_shot: BTreeMap<&str, BTreeSet<String>> = desired_on
            .get(&a.node)
            .into_iter()
            .flatten()
            .filter(|(i, _)| exited.contains(i.service.as_str()))
            .map(|(i, r)| (i.service.as_str(), one_shot_of(r)))
            .collect();
        let mut changes = Vec::new();
        for &inst in order_on.get(&a.node).into_iter().flatten() {
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
                    change.prior = deployed.map(prior_of).unwrap_or_default();
                } else if let Some(why) = containers_not_up(
                    &state.engine,
                    svc,
                    &one_shot.get(svc).cloned().unwrap_or_default(),
                ) {
                    change.action = Action::Update;
                    change.reason = format!("artifacts match, but {why}");
                    change.artifacts = rendered.artifacts.iter().map(planned).collect();
                    // The files on the node are homelab's, byte for byte: the reviewer is shown
                    // that nothing changes in them, not "edited by hand".
                    change.prior = deployed.map(prior_of).unwrap_or_default();
                }
            }
            if change.action != Action::NoOp {
                change.runtime = Some(Runtime::of(lab, inst, rendered));
            }
            changes.push(change);
        }
        // Deployed on the node but no longer desired there: delete, after everything else.
        for (name, svc) in &state.services {
            // A lookup, not a scan of the node's services per deployed one.
            let desired_here = lab.nodes.get(&a.node).is_some_and(|n| {
                crate::model::ServiceName::parse(name).is_ok_and(|s| n.services.contains_key(&s))
            });
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
                restore: None,
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
            engine: Some(engine_summary(&state.engine, &one_shot)),
            root: root_of(&a.node),
            pinned_match: (!state.pinned.is_empty())
                .then(|| trust.iter().all(|(file, sha)| state.pinned.get(*file) == Some(sha))),
        });
    }
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    Plan {
        created: header.created,
        expires: header.expires,
        planner: header.planner,
        commit: header.commit,
        dirty: header.dirty,
        trust: lab.trust_roots().into_iter().map(|(n, t)| (n.to_owned(), t)).collect(),
        nodes,
    }
}

/// Makes `inst`'s change in `plan` (a plan of its node, from [`diff`]) the restore of its data
/// from `restore`: an update that writes the artifacts the node already holds (the commit's
/// render, shown with no diff) and puts the data back before the service starts. Refused,
/// with the reason, unless the node was read, the service is deployed there as the commit
/// renders it, and nothing else on the node is waiting to be applied: a restore plan holds
/// the restore alone, so what is approved is only that.
pub fn make_restore(
    lab: &Homelab,
    plan: &mut Plan,
    desired: &[Rendered],
    inst: &Instance,
    restore: Restore,
) -> Result<(), String> {
    let Some(n) = plan.nodes.iter_mut().find(|n| n.node == inst.node) else {
        return Err(format!("node `{}` is not in the plan", inst.node));
    };
    let PlannedStatus::Reachable { actual, .. } = &n.status else {
        return Err(format!("node `{}` could not be read: its state is unknown", inst.node));
    };
    let actual = actual.clone();
    let pending: Vec<String> = n
        .changes
        .iter()
        .filter(|c| c.action != Action::NoOp && &c.instance != inst)
        .map(|c| format!("{} {}", c.action, c.instance))
        .collect();
    if !pending.is_empty() {
        return Err(format!(
            "node `{}` has changes waiting to be applied ({}): apply them first, so that a restore plan holds the restore alone",
            inst.node,
            pending.join(", ")
        ));
    }
    let Some(c) = n.changes.iter_mut().find(|c| &c.instance == inst) else {
        return Err(format!(
            "the commit does not place `{}` on node `{}`",
            inst.service, inst.node
        ));
    };
    let same_bytes =
        c.reason.starts_with("artifacts match, but ") || c.reason.starts_with("the apply of plan ");
    match c.action {
        Action::NoOp => {}
        Action::Update if same_bytes => {}
        Action::Create => {
            return Err(format!(
                "`{inst}` is not deployed on the node yet: apply a plan that creates it, then restore its data"
            ))
        }
        other => {
            return Err(format!(
                "`{inst}` has a change waiting ({other}: {}): apply it first; a restore writes no new artifact",
                crate::quote::cut(&c.reason)
            ))
        }
    }
    let Some(rendered) = desired.iter().find(|r| &r.instance == inst) else {
        return Err(format!("`{inst}` was not rendered"));
    };
    let runtime = Runtime::of(lab, inst, rendered);
    if runtime.snapshot.as_ref().is_none_or(|s| s.paths.is_empty()) {
        return Err(format!("`{}` has no data folders to restore", inst.service));
    }
    c.artifacts = rendered.artifacts.iter().map(planned).collect();
    // The node holds these very files (the diff found them matching): shown with no diff.
    c.prior = c.artifacts.clone();
    c.action = Action::Update;
    c.reason = restore.reason();
    c.runtime = Some(runtime);
    c.restore = Some(restore);
    c.diffs = diffs_of(c, &actual);
    Ok(())
}

/// The compose keys of the one-shot init containers of a rendered instance (see
/// `model::validate::compose::one_shot`).
fn one_shot_of(r: &Rendered) -> BTreeSet<String> {
    // Every text file of the release: `extends.file` may name any of them.
    let files: BTreeMap<String, (String, String)> = r
        .artifacts
        .iter()
        .filter_map(|a| {
            let text = std::str::from_utf8(&a.bytes).ok()?;
            Some((a.name.clone(), (a.name.clone(), text.to_owned())))
        })
        .collect();
    crate::model::validate::compose::one_shot(r.instance.service.as_str(), &files)
}

/// Whether `c` is a one-shot init container of its project (by `one_shot`, the keys per
/// project) that ran and exited 0: done, as it should be.
fn done(c: &Container, one_shot: &BTreeMap<&str, BTreeSet<String>>) -> bool {
    c.state == "exited"
        && c.exit_code == Some(0)
        && one_shot.get(c.project.as_str()).is_some_and(|keys| keys.contains(&c.service))
}

/// One line on the node's containers, for the reviewer.
fn engine_summary(engine: &Engine, one_shot: &BTreeMap<&str, BTreeSet<String>>) -> String {
    match engine {
        Engine::Unavailable { reason } => format!("unavailable: {reason}"),
        Engine::Available { containers } => {
            let running = containers.iter().filter(|c| c.state == "running").count();
            let mut s = format!("{} container(s), {running} running", containers.len());
            let finished: Vec<&str> =
                containers.iter().filter(|c| done(c, one_shot)).map(|c| c.name.as_str()).collect();
            if !finished.is_empty() {
                s.push_str(&format!("; one-shot, exited 0: {}", finished.join(", ")));
            }
            let odd: Vec<String> = containers
                .iter()
                .filter(|c| !done(c, one_shot))
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
/// project, or one that is not running or unhealthy. A one-shot init container (its compose
/// key in `one_shot`) that exited 0 is up as far as it goes; one that failed is not. `None`
/// when the engine could not be read.
fn containers_not_up(
    engine: &Engine,
    project: &str,
    one_shot: &BTreeSet<String>,
) -> Option<String> {
    let Engine::Available { containers } = engine else { return None };
    let mine: Vec<_> = containers.iter().filter(|c| c.project == project).collect();
    if mine.is_empty() {
        return Some(format!("no container of project `{project}` exists"));
    }
    let bad: Vec<String> = mine
        .iter()
        .filter_map(|c| {
            if one_shot.contains(&c.service) && c.state == "exited" {
                return match c.exit_code {
                    Some(0) => None,
                    Some(code) => Some(format!(
                        "`{}` (a one-shot init container) exited with code {code}",
                        c.name
                    )),
                    None => Some(format!("`{}` (a one-shot init container) is exited", c.name)),
                };
            }
            let unhealthy = c.health.as_deref() == Some("unhealthy");
            (c.state != "running" || unhealthy).then(|| {
                format!("`{}` is {}", c.name, if unhealthy { "unhealthy" } else { &c.state })
            })
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
        restore: None,
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
    // A file the node holds exactly as rendered is no change, whatever the node's manifest
    // says homelab wrote there: a hand edit the repository adopted (`homelab adopt`) is the
    // render now, and its drift is gone.
    let on_disk_is_render = |a: &PlannedArtifact| {
        deployed
            .files
            .get(&a.name)
            .is_some_and(|f| f.sha256 == a.sha256 && f.mode == format!("{:04o}", a.mode))
    };
    let adopted: Vec<&str> =
        all.iter().filter(|a| on_disk_is_render(a)).map(|a| a.name.as_str()).collect();
    let mut drift = deployed.drift();
    drift.retain(|d| {
        !adopted.iter().any(|n| {
            d.strip_prefix(n)
                .is_some_and(|r| r == " was edited on the node" || r.starts_with(" has mode "))
        })
    });
    let mut changed = Vec::new();
    for a in &all {
        if !on_disk_is_render(a) {
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
                // Built once per artifact, not once per line of the node's state it is tested
                // against (a node of many services has many lines).
                let prefix = format!("{svc} file {name} ");
                if let Some(line) = new.and_then(PlannedArtifact::binary_line) {
                    // A binary file is never diffed: its size and hash say what ships.
                    let on_node = actual
                        .iter()
                        .find_map(|l| l.strip_prefix(prefix.as_str())?.split(' ').next());
                    if on_node != new.map(|a| a.sha256.as_str()) {
                        out.push((name.to_owned(), line));
                    }
                    continue;
                }
                let before = c.prior.iter().find(|a| a.name == name).map(|a| a.text.as_str());
                let after = new.map(|a| a.text.as_str());
                let on_node = actual.iter().any(|l| l.starts_with(prefix.as_str()));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ServiceName;

    const TRACKER: &str = "services:\n  migrate:\n    image: x\n    restart: \"no\"\n  tracker:\n    image: x\n    depends_on:\n      migrate:\n        condition: service_completed_successfully\n";

    fn container(name: &str, service: &str, state: &str, exit_code: Option<i64>) -> Container {
        Container {
            name: name.into(),
            project: "tracker".into(),
            service: service.into(),
            state: state.into(),
            exit_code,
            health: None,
            image: "x".into(),
        }
    }

    fn tracker(exit_code: Option<i64>) -> Engine {
        Engine::Available {
            containers: vec![
                container("tracker", "tracker", "running", None),
                container("tracker-migrate", "migrate", "exited", exit_code),
            ],
        }
    }

    fn rendered(compose: &str) -> Rendered {
        let instance = Instance {
            service: ServiceName::parse("tracker").unwrap(),
            node: NodeName::parse("edge-a").unwrap(),
        };
        let artifacts = vec![Artifact {
            name: crate::render::COMPOSE.into(),
            bytes: compose.into(),
            mode: 0o644,
        }];
        Rendered { instance, artifacts }
    }

    /// Regression (found by the corpus): a one-shot init container that exited 0 is where it
    /// belongs; one that failed, or a long-running container that exited, is not up.
    #[test]
    fn an_exited_one_shot_init_container_is_up_only_when_it_exited_0() {
        let keys = one_shot_of(&rendered(TRACKER));
        assert_eq!(keys, BTreeSet::from(["migrate".to_owned()]));
        assert_eq!(containers_not_up(&tracker(Some(0)), "tracker", &keys), None);
        assert_eq!(
            containers_not_up(&tracker(Some(3)), "tracker", &keys).as_deref(),
            Some("`tracker-migrate` (a one-shot init container) exited with code 3")
        );
        // Not a one-shot container in this compose file: exited is down, whatever its code.
        let none = BTreeSet::new();
        assert_eq!(
            containers_not_up(&tracker(Some(0)), "tracker", &none).as_deref(),
            Some("`tracker-migrate` is exited")
        );
        let mut stopped = tracker(Some(0));
        let Engine::Available { containers } = &mut stopped else { unreachable!() };
        containers[0] = container("tracker", "tracker", "exited", Some(137));
        assert_eq!(
            containers_not_up(&stopped, "tracker", &keys).as_deref(),
            Some("`tracker` is exited")
        );
    }

    #[test]
    fn the_engine_line_tells_a_finished_one_shot_container_from_one_that_is_down() {
        let keys = BTreeMap::from([("tracker", one_shot_of(&rendered(TRACKER)))]);
        assert_eq!(
            engine_summary(&tracker(Some(0)), &keys),
            "2 container(s), 1 running; one-shot, exited 0: tracker-migrate"
        );
        assert_eq!(
            engine_summary(&tracker(Some(1)), &keys),
            "2 container(s), 1 running; not up: tracker-migrate exited"
        );
    }

    /// An update for containers that are not up carries the node's files as its prior: the
    /// reviewer sees no diff, never "edited by hand" for a file that matches.
    #[test]
    fn an_update_of_matching_files_shows_no_diff() {
        let r = rendered(TRACKER);
        let a = planned(&r.artifacts[0]);
        let mut c = Change {
            instance: r.instance.clone(),
            action: Action::Update,
            reason: "artifacts match, but `tracker` is exited".into(),
            after: vec![],
            artifacts: vec![a.clone()],
            prior: vec![a.clone()],
            diffs: vec![],
            runtime: None,
            restore: None,
        };
        let actual = vec![format!("tracker file docker-compose.yml {} 0644", a.sha256)];
        assert_eq!(diffs_of(&c, &actual), vec![]);
        // Without it, the same file is shown as if edited by hand (the bug).
        c.prior.clear();
        assert!(diffs_of(&c, &actual)[0].1.contains("edited by hand"));
    }
}
