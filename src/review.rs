//! What the approver sees is what the node gets. A plan carries the full content of every
//! artifact it will write; this module recomputes those artifacts with the reviewer's own
//! binary from the commit the plan names — read from Git's objects, never from the work tree —
//! and refuses a plan whose artifacts, runtime contract or dependency waits differ by one byte,
//! or whose commit the repository does not have, or whose commit is on no branch the policy
//! names as reviewed (`reviewed_branches`, default `main`), or whose list of changes is not a
//! node's whole change set as the render against the node's bound state gives it
//! (`complete`). `show`, `approve` and `apply` all run it (that the planner named is the
//! signer is `approve::policy::verify_planner`'s check).
//!
//! A plan made from uncommitted changes cannot be checked this way; it passes only where
//! `inventory/policy.yaml` says `allow_uncommitted: true`, and says so.

use std::collections::BTreeMap;
use std::path::Path;

use crate::approve::policy::Refusal;
use crate::graph::DeployGraph;
use crate::model::{Homelab, Instance};
use crate::plan::file::LoadedPlan;
use crate::plan::{Action, Change, NodePlan, PlannedStatus};
use crate::render::Rendered;

/// How far a plan's content was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provenance {
    /// Every artifact is the render of this commit.
    Commit(String),
    /// Made from uncommitted changes; allowed by the policy, not checked.
    Uncommitted,
}

impl Provenance {
    /// One line for a reviewer.
    pub fn describe(&self) -> String {
        match self {
            Provenance::Commit(c) => format!("verified: every artifact is the render of commit {c}"),
            Provenance::Uncommitted => "NOT VERIFIED: the plan was made from uncommitted changes (allowed by inventory/policy.yaml); its content is the planner's word".to_owned(),
        }
    }
}

/// Re-renders the plan's commit and compares. `lab` is the reviewer's own homelab (its policy
/// decides about uncommitted plans).
pub fn verify(repo: &Path, lab: &Homelab, loaded: &LoadedPlan) -> Result<Provenance, Refusal> {
    let plan = &loaded.plan;
    if plan.dirty || plan.commit == "none" {
        if lab.policy.allow_uncommitted {
            return Ok(Provenance::Uncommitted);
        }
        return Err(Refusal::Uncommitted { id: loaded.id.clone(), commit: plan.commit.clone() });
    }
    let dir = tempfile::tempdir().map_err(|e| crate::git::GitError::Export {
        commit: plan.commit.clone(),
        reason: format!("no temporary folder: {e}"),
    })?;
    crate::git::export(repo, &plan.commit, dir.path())?;
    on_reviewed_branch(repo, lab, loaded)?;
    // Rendered for the roots the plan was made for (`--root`), else the topology's.
    let root_of = |id: &crate::model::NodeName| {
        plan.nodes.iter().find(|n| &n.node == id).and_then(|n| n.root.clone())
    };
    let at_commit =
        crate::check::homelab_rooted(dir.path(), &root_of).map_err(|d| Refusal::CommitInvalid {
            commit: plan.commit.clone(),
            problems: d.iter().take(3).map(ToString::to_string).collect::<Vec<_>>().join("; "),
        })?;
    let graph = DeployGraph::build(&at_commit).expect("check rejects cycles");
    // The trust roots a node takes from this plan are the commit's, byte for byte.
    let roots: Vec<(String, String)> =
        at_commit.trust_roots().into_iter().map(|(n, t)| (n.to_owned(), t)).collect();
    if plan.trust != roots {
        return Err(Refusal::TrustDiffers { id: loaded.id.clone(), commit: plan.commit.clone() });
    }
    for c in plan.nodes.iter().flat_map(|n| &n.changes) {
        compare(&at_commit, &graph, c, &plan.commit)?;
    }
    for n in &plan.nodes {
        complete(&at_commit, &graph, n, &plan.commit)?;
    }
    Ok(Provenance::Commit(plan.commit.clone()))
}

/// The plan's nodes that it would move back to an older commit than the one they run, as
/// this controller's records of applies say they run (`records`): one line each, for `show`,
/// the pull-request comment and the approval prompt. Words for the reviewer, never a
/// refusal: an operator may mean to go back. A node whose last apply this controller did not
/// record (or recorded before it kept commits) is not judged.
pub fn downgrades(
    repo: &Path,
    records: &crate::approve::policy::Records,
    loaded: &LoadedPlan,
) -> Vec<String> {
    let plan = &loaded.plan;
    if plan.dirty || plan.commit == "none" {
        return Vec::new();
    }
    let applied = records.applied_records();
    let mut out = Vec::new();
    for n in plan.nodes.iter().filter(|n| n.changes.iter().any(|c| c.action != Action::NoOp)) {
        let node = n.node.as_str();
        // The newest record in which this node took its plan's changes.
        let last = applied
            .iter()
            .filter(|r| r.plan != loaded.id && !r.commit.is_empty())
            .filter(|r| {
                r.nodes
                    .get(node)
                    .is_some_and(|s| s.outcome == "applied" || s.outcome == "applied earlier")
            })
            .max_by(|a, b| a.updated.cmp(&b.updated));
        let Some(last) = last else { continue };
        if last.commit == plan.commit {
            continue;
        }
        if crate::git::is_ancestor(repo, &plan.commit, &last.commit) == Some(true) {
            out.push(format!(
                "DOWNGRADE: node `{node}` runs commit `{}` (plan `{}`, applied {}); this plan's commit `{}` is older: it moves the node back",
                crate::quote::cut(&last.commit),
                crate::quote::cut(&last.plan),
                crate::quote::cut(&last.updated),
                plan.commit
            ));
        }
    }
    out
}

/// What the render of the commit against a node's bound state calls for, for one instance.
struct Expected {
    action: Action,
    /// The reason, when the plan's inputs fix it to the byte.
    reason: Reason,
}

enum Reason {
    Exact(String),
    /// The manifest on the node is not the render's, and the plan binds only its hash: which
    /// artifacts it lists differently is the planner's word, the kind of change is not.
    /// `files_match`: every file on the node is the render's, so the manifest may differ in
    /// what no change looks at (an older manifest format), and a no-op is possible too.
    ChangedOrDrift {
        files_match: bool,
    },
    /// The node's manifest is unreadable; why is the node's word, carried by the planner.
    Prefix(&'static str),
}

/// One service as a node's `actual` lines (bound to its fingerprint) say it is deployed.
#[derive(Default)]
struct Deployed {
    manifest: String,
    /// By file name: `(sha256, mode)`.
    files: BTreeMap<String, (String, String)>,
}

/// The node's services from its `actual` lines (`<svc> manifest <sha>|none|corrupt`,
/// `<svc> file <name> <sha> <mode>`).
fn deployed_on(actual: &[String]) -> BTreeMap<String, Deployed> {
    let mut out: BTreeMap<String, Deployed> = BTreeMap::new();
    for l in actual {
        // A service name holds no space; a file's name may (one put there by hand): its hash
        // and mode are the last two words.
        let Some((svc, rest)) = l.split_once(' ') else { continue };
        if let Some(m) = rest.strip_prefix("manifest ") {
            out.entry(svc.to_owned()).or_default().manifest = m.to_owned();
        } else if let Some(rest) = rest.strip_prefix("file ") {
            let mut words = rest.rsplitn(3, ' ');
            if let (Some(mode), Some(sha), Some(name)) = (words.next(), words.next(), words.next())
            {
                out.entry(svc.to_owned())
                    .or_default()
                    .files
                    .insert(name.to_owned(), (sha.to_owned(), mode.to_owned()));
            }
        }
    }
    out
}

/// As `plan::diff` decides it, from what the plan binds: the render of the commit and the
/// node's deployed files and manifest by hash. Container states and interrupted applies are
/// not bound (they are not in the fingerprint), so a service whose files match may be planned
/// as a no-op or as an update that rewrites the same bytes, never as anything else.
fn expected(rendered: &Rendered, deployed: Option<&Deployed>) -> Expected {
    let exact =
        |action, reason: &str| Expected { action, reason: Reason::Exact(reason.to_owned()) };
    let Some(d) = deployed else { return exact(Action::Create, "not deployed on the node yet") };
    match d.manifest.as_str() {
        "none" => {
            return exact(
                Action::Replace,
                "files on the node without a manifest: homelab cannot tell what is deployed",
            )
        }
        "corrupt" => {
            return Expected {
                action: Action::Replace,
                reason: Reason::Prefix("the manifest on the node is unreadable ("),
            }
        }
        _ => {}
    }
    let mode = |m: u32| format!("{m:04o}");
    let on_disk_differs = |a: &crate::render::Artifact| {
        d.files.get(&a.name).is_none_or(|(sha, m)| *sha != a.sha256() || *m != mode(a.mode))
    };
    if d.manifest != crate::digest::sha256_hex(&rendered.manifest_bytes()) {
        // Which entries of the node's manifest differ is not bound; that something does is.
        let files_match = !rendered.artifacts.iter().any(on_disk_differs)
            && d.files.keys().all(|f| rendered.artifacts.iter().any(|a| &a.name == f));
        return Expected { action: Action::Update, reason: Reason::ChangedOrDrift { files_match } };
    }
    // The node's manifest is the render's: `changed` and `drift` are both known.
    let changed: Vec<&str> =
        rendered.artifacts.iter().filter(|a| on_disk_differs(a)).map(|a| a.name.as_str()).collect();
    let mut drift = Vec::new();
    for a in &rendered.artifacts {
        match d.files.get(&a.name) {
            None => drift.push(format!("{} is missing", a.name)),
            Some((sha, m)) if *sha == a.sha256() && *m != mode(a.mode) => {
                drift.push(format!("{} has mode {m} on the node, not {}", a.name, mode(a.mode)))
            }
            Some((sha, _)) if *sha != a.sha256() => {
                drift.push(format!("{} was edited on the node", a.name))
            }
            Some(_) => {}
        }
    }
    for name in d.files.keys() {
        if !rendered.artifacts.iter().any(|a| &a.name == name) {
            drift.push(format!("{name} is not homelab's"));
        }
    }
    if changed.is_empty() && drift.is_empty() {
        return exact(Action::NoOp, "deployed artifacts match");
    }
    let mut reason = Vec::new();
    if !changed.is_empty() {
        reason.push(format!("changed: {}", changed.join(", ")));
    }
    if !drift.is_empty() {
        reason.push(format!("drift on the node: {}", drift.join("; ")));
    }
    exact(Action::Update, &reason.join("; "))
}

/// Whether the planned change is what `want` calls for.
fn fits(c: &Change, want: &Expected) -> bool {
    // A restore (`homelab restore`) rewrites the files the node holds: only where they are the
    // render's (its data source and reason are checked by `compare`).
    if let Some(r) = &c.restore {
        let files_match = match &want.reason {
            Reason::Exact(_) => want.action == Action::NoOp,
            Reason::ChangedOrDrift { files_match } => *files_match,
            Reason::Prefix(_) => false,
        };
        return files_match && c.action == Action::Update && c.reason == r.reason();
    }
    match &want.reason {
        Reason::Exact(_) if want.action == Action::NoOp && c.action == Action::Update => {
            // Files match, but the planner saw containers down or an apply cut short: it
            // rewrites the same bytes (compared with the render above).
            c.reason.starts_with("artifacts match, but ")
                || c.reason.starts_with("the apply of plan ")
        }
        Reason::Exact(r) => c.action == want.action && c.reason == *r,
        Reason::Prefix(p) => c.action == want.action && c.reason.starts_with(p),
        Reason::ChangedOrDrift { files_match } => {
            let listed =
                c.reason.starts_with("changed: ") || c.reason.starts_with("drift on the node: ");
            let same_bytes = c.reason.starts_with("artifacts match, but ")
                || c.reason.starts_with("the apply of plan ");
            match c.action {
                Action::Update => listed || (*files_match && same_bytes),
                Action::NoOp => *files_match && c.reason == "deployed artifacts match",
                _ => false,
            }
        }
    }
}

/// Words for what the render calls for.
fn described(want: &Expected) -> String {
    match &want.reason {
        Reason::Exact(r) if want.action == Action::NoOp => format!("`no-op` ({r})"),
        Reason::Exact(r) => format!("`{}` ({r})", want.action),
        Reason::Prefix(p) => format!("`{}` ({p}…)", want.action),
        Reason::ChangedOrDrift { .. } => format!(
            "`{}` (the node's manifest is not the render's: `changed: …` or `drift on the node: …`)",
            want.action
        ),
    }
}

/// The node's whole change set, recomputed: every service the commit places on the node has
/// its change (a no-op too), every service deployed there that the commit does not place has
/// its delete, nothing else is listed, and each has the kind and reason the render against
/// the node's bound state gives. A plan that leaves out a change (a dependency's `create`, a
/// `delete`), adds one, or relabels one (`update` as `replace`, a delete's reason as "deployed
/// artifacts match") is refused.
fn complete(lab: &Homelab, graph: &DeployGraph, n: &NodePlan, commit: &str) -> Result<(), Refusal> {
    let PlannedStatus::Reachable { actual, .. } = &n.status else { return Ok(()) };
    let refuse = |detail: String| Refusal::NotTheChange {
        node: n.node.to_string(),
        commit: commit.to_owned(),
        detail,
    };
    let Some(node) = lab.nodes.get(&n.node) else {
        return Err(refuse("the commit has no such node".to_owned()));
    };
    let deployed = deployed_on(actual);
    let mut want: BTreeMap<Instance, Expected> = BTreeMap::new();
    for inst in graph.order().into_iter().filter(|i| i.node == n.node) {
        if !lab.instances.contains_key(&inst) {
            continue;
        }
        let rendered = crate::render::render_instance(lab, &inst)
            .map_err(|e| refuse(format!("`{inst}` does not render: {e}")))?;
        let e = expected(&rendered, deployed.get(inst.service.as_str()));
        want.insert(inst, e);
    }
    for (name, d) in &deployed {
        let placed =
            crate::model::ServiceName::parse(name).is_ok_and(|s| node.services.contains_key(&s));
        if placed {
            continue;
        }
        let Ok(service) = crate::model::ServiceName::parse(name) else { continue };
        let files: Vec<&str> = d.files.keys().map(String::as_str).collect();
        want.insert(
            Instance { service, node: n.node.clone() },
            Expected {
                action: Action::Delete,
                reason: Reason::Exact(format!(
                    "no longer desired on this node (deployed files: {})",
                    files.join(", ")
                )),
            },
        );
    }
    let quoted =
        |c: &Change| format!("`{} {}` ({})", c.action, c.instance, crate::quote::cut(&c.reason));
    for c in &n.changes {
        match want.get(&c.instance) {
            None => {
                return Err(refuse(format!(
                    "the plan has {}, which the commit and the node's state do not call for",
                    quoted(c)
                )))
            }
            Some(w) if !fits(c, w) => {
                return Err(refuse(format!(
                    "the plan has {}, where the commit and the node's state call for {}",
                    quoted(c),
                    described(w)
                )))
            }
            Some(_) => {}
        }
    }
    for (inst, w) in &want {
        if !n.changes.iter().any(|c| &c.instance == inst) {
            return Err(refuse(format!(
                "the plan lacks `{inst}`: the commit and the node's state call for {}",
                described(w)
            )));
        }
    }
    Ok(())
}

/// The plan's commit is on a branch the policy names (a commit of a side branch was never
/// reviewed, whatever it renders). The reviewer's policy decides which, never the commit's.
fn on_reviewed_branch(repo: &Path, lab: &Homelab, loaded: &LoadedPlan) -> Result<(), Refusal> {
    let branches = &lab.policy.reviewed_branches;
    for branch in branches {
        if crate::git::reachable_from(repo, &loaded.plan.commit, branch)? {
            return Ok(());
        }
    }
    Err(Refusal::NotReviewed { commit: loaded.plan.commit.clone(), branches: branches.clone() })
}

fn compare(lab: &Homelab, graph: &DeployGraph, c: &Change, commit: &str) -> Result<(), Refusal> {
    let differs = |what: &str, detail: String| Refusal::Differs {
        instance: c.instance.to_string(),
        what: what.to_owned(),
        commit: commit.to_owned(),
        detail,
    };
    let placed = lab.instances.contains_key(&c.instance);
    match c.action {
        Action::NoOp => return Ok(()),
        Action::Delete if placed => {
            return Err(differs("the delete", "the commit still places it on this node".into()))
        }
        Action::Delete => return Ok(()),
        Action::Create | Action::Update | Action::Replace if !placed => {
            return Err(differs("the service", "the commit does not place it on this node".into()))
        }
        Action::Create | Action::Update | Action::Replace => {}
    }
    let rendered = crate::render::render_instance(lab, &c.instance)
        .map_err(|e| differs("the render", e.to_string()))?;
    let want: Vec<&str> = rendered.artifacts.iter().map(|a| a.name.as_str()).collect();
    let have: Vec<&str> = c.artifacts.iter().map(|a| a.name.as_str()).collect();
    if want != have {
        return Err(differs(
            "the list of artifacts",
            format!("the commit renders {}, the plan has {}", want.join(", "), have.join(", ")),
        ));
    }
    for (r, p) in rendered.artifacts.iter().zip(&c.artifacts) {
        if r.mode != p.mode {
            return Err(differs(&r.name, format!("mode {:04o}, not {:04o}", p.mode, r.mode)));
        }
        if r.bytes != p.bytes() {
            let line = first_differing_line(&r.bytes, p.bytes());
            return Err(differs(&r.name, format!("line {line}")));
        }
    }
    let want = crate::plan::Runtime::of(lab, &c.instance, &rendered);
    match &c.runtime {
        Some(rt) if *rt == want => {}
        _ => {
            return Err(differs(
                "the healthcheck, secrets, required variables, exposure, host paths or networks",
                "the contract says otherwise".into(),
            ))
        }
    }
    if let Some(r) = &c.restore {
        if c.action != Action::Update || c.reason != r.reason() {
            return Err(differs("the restore", format!("its reason is `{}`", r.reason())));
        }
        if let crate::plan::RestoreFrom::Restic { repository, options } = &r.from {
            let node = lab.nodes.get(&c.instance.node);
            let same = node
                .and_then(|n| n.backup.as_ref())
                .is_some_and(|t| t.repository == *repository && t.options == *options);
            if !same {
                return Err(differs(
                    "the restore's restic repository",
                    "the commit's inventory/topology.yaml gives the node another (or none)".into(),
                ));
            }
        }
    }
    let after: Vec<_> = graph.dependencies(&c.instance).into_iter().cloned().collect();
    if c.after != after {
        return Err(differs("the dependency waits (`after`)", "the graph says otherwise".into()));
    }
    Ok(())
}

fn first_differing_line(a: &[u8], b: &[u8]) -> usize {
    let at = a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()));
    a[..at].iter().filter(|&&c| c == b'\n').count() + 1
}

/// A plan's artifacts name the runtime root they were rendered for (`{{ root }}`,
/// `{{ config_dir }}`, ...): applying them under another root would deploy files pointing at
/// folders that are not that node's. `lab` holds the roots of this apply (`--transport local
/// --root DIR`: `DIR/<id>`; else the topology's).
pub fn check_roots(lab: &Homelab, plan: &crate::plan::Plan) -> Result<(), Refusal> {
    for n in &plan.nodes {
        let Some(node) = lab.nodes.get(&n.node) else { continue };
        let here = &node.runtime_root;
        let planned = match (&n.root, node.root_given) {
            // Without `--root` on either side both are the topology's (the plan's commit may
            // have moved it: the review and the node's own checks judge that).
            (None, false) => continue,
            (Some(root), _) if root == here => continue,
            (Some(root), _) => format!("`{root}`"),
            (None, true) => "of the topology (it was planned without `--root`)".to_owned(),
        };
        return Err(Refusal::RootDiffers { node: n.node.to_string(), planned, here: here.clone() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::Artifact;

    fn rendered() -> Rendered {
        let a = |name: &str, text: &str, mode| Artifact {
            name: name.to_owned(),
            bytes: text.as_bytes().to_vec(),
            mode,
        };
        Rendered {
            instance: Instance {
                service: crate::model::ServiceName::parse("web").unwrap(),
                node: crate::model::NodeName::parse("alpha").unwrap(),
            },
            artifacts: vec![
                a("docker-compose.yml", "services: {}\n", 0o644),
                a("healthcheck.sh", "exit 0\n", 0o755),
            ],
        }
    }

    /// The `actual` lines of `r` deployed as rendered, with `edit` applied to the file lines.
    fn actual(r: &Rendered, extra: &[&str]) -> Vec<String> {
        let mut out =
            vec![format!("web manifest {}", crate::digest::sha256_hex(&r.manifest_bytes()))];
        for a in &r.artifacts {
            out.push(format!("web file {} {} {:04o}", a.name, a.sha256(), a.mode));
        }
        out.extend(extra.iter().map(|s| (*s).to_owned()));
        out
    }

    fn reason(e: &Expected) -> (Action, &str) {
        match &e.reason {
            Reason::Exact(r) => (e.action, r.as_str()),
            _ => (e.action, "not exact"),
        }
    }

    #[test]
    fn the_change_is_recomputed_from_the_bound_state_as_plan_diff_makes_it() {
        let r = rendered();
        let d = deployed_on(&actual(&r, &[]));
        assert_eq!(reason(&expected(&r, d.get("web"))), (Action::NoOp, "deployed artifacts match"));
        assert_eq!(reason(&expected(&r, None)), (Action::Create, "not deployed on the node yet"));
        // A file put there by hand, its name holding a space; and the healthcheck edited.
        let mut lines = actual(&r, &["web file my notes.txt abc 0644"]);
        lines[2] = format!("web file healthcheck.sh {} 0755", "0".repeat(64));
        let d = deployed_on(&lines);
        assert!(d["web"].files.contains_key("my notes.txt"));
        assert_eq!(
            reason(&expected(&r, d.get("web"))),
            (
                Action::Update,
                "changed: healthcheck.sh; drift on the node: healthcheck.sh was edited on the node; my notes.txt is not homelab's"
            )
        );
        // A mode changed on the node, and a file missing.
        let lines: Vec<String> = actual(&r, &[])
            .into_iter()
            .filter(|l| !l.contains("docker-compose.yml"))
            .map(|l| l.replace(" 0755", " 0644"))
            .collect();
        let d = deployed_on(&lines);
        assert_eq!(
            reason(&expected(&r, d.get("web"))),
            (
                Action::Update,
                "changed: docker-compose.yml, healthcheck.sh; drift on the node: docker-compose.yml is missing; healthcheck.sh has mode 0644 on the node, not 0755"
            )
        );
        // Another manifest: only the kind is bound.
        let d = deployed_on(&["web manifest 1234".to_owned()]);
        let e = expected(&r, d.get("web"));
        assert_eq!(e.action, Action::Update);
        assert!(matches!(e.reason, Reason::ChangedOrDrift { files_match: false }));
        let d = deployed_on(&["web manifest none".to_owned()]);
        assert_eq!(expected(&r, d.get("web")).action, Action::Replace);
    }

    /// A restore fits only where the node's files are the render's, with its own reason; a
    /// restore line on a change that needs new files, or a reason that names another
    /// snapshot, does not; and the policy counts it as a `restore`, never a `restart`.
    #[test]
    fn a_restore_fits_only_on_matching_files_with_its_own_reason() {
        let r = rendered();
        let planned: Vec<crate::plan::PlannedArtifact> = r
            .artifacts
            .iter()
            .map(|a| crate::plan::PlannedArtifact {
                name: a.name.clone(),
                mode: a.mode,
                sha256: a.sha256(),
                text: String::from_utf8(a.bytes.clone()).unwrap(),
                binary: None,
            })
            .collect();
        let restore = crate::plan::Restore {
            id: "1a2b3c4d5e6f7a8b".into(),
            from: crate::plan::RestoreFrom::Local,
        };
        let c = Change {
            instance: r.instance.clone(),
            action: Action::Update,
            reason: restore.reason(),
            after: vec![],
            artifacts: planned.clone(),
            prior: planned,
            diffs: vec![],
            runtime: None,
            restore: Some(restore),
        };
        assert_eq!(crate::approve::policy::change_kind(&c), Some("restore"));
        let same = deployed_on(&actual(&r, &[]));
        assert!(fits(&c, &expected(&r, same.get("web"))));
        // Files that differ call for an update: not a restore.
        let mut lines = actual(&r, &[]);
        lines[2] = format!("web file healthcheck.sh {} 0755", "0".repeat(64));
        let edited = deployed_on(&lines);
        assert!(!fits(&c, &expected(&r, edited.get("web"))));
        assert!(!fits(&c, &expected(&r, None)));
        // The reason must be the restore's own.
        let mut other = c.clone();
        other.reason =
            "restore data from local snapshot ffffffffffffffff (taken before a change)".into();
        assert!(!fits(&other, &expected(&r, same.get("web"))));
        // Without its restore line it is a restart of matching files, which the render does
        // not call for with that reason.
        let mut bare = c.clone();
        bare.restore = None;
        assert!(!fits(&bare, &expected(&r, same.get("web"))));
        assert_eq!(crate::approve::policy::change_kind(&bare), Some("restart"));
    }
}
