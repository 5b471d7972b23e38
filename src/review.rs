//! What the approver sees is what the node gets. A plan carries the full content of every
//! artifact it will write; this module recomputes those artifacts with the reviewer's own
//! binary from the commit the plan names — read from Git's objects, never from the work tree —
//! and refuses a plan whose artifacts, runtime contract or dependency waits differ by one byte,
//! or whose commit the repository does not have. `show`, `approve` and `apply` all run it
//! (that the planner named is the signer is `approve::policy::verify_planner`'s check).
//!
//! A plan made from uncommitted changes cannot be checked this way; it passes only where
//! `inventory/policy.yaml` says `allow_uncommitted: true`, and says so.

use std::path::Path;

use crate::approve::policy::Refusal;
use crate::graph::DeployGraph;
use crate::model::Homelab;
use crate::plan::file::LoadedPlan;
use crate::plan::{Action, Change};

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
    for c in plan.nodes.iter().flat_map(|n| &n.changes) {
        compare(&at_commit, &graph, c, &plan.commit)?;
    }
    Ok(Provenance::Commit(plan.commit.clone()))
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
    let want = crate::plan::Runtime::of(lab, &c.instance);
    match &c.runtime {
        Some(rt) if *rt == want => {}
        _ => {
            return Err(differs(
                "the healthcheck, secrets or required variables",
                "the contract says otherwise".into(),
            ))
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
