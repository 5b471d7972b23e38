//! What a node trusts, and the check of a bundle against it before the engine writes anything.
//!
//! The roots are pinned on the node by `homelab bootstrap` under `<root>/trust/`:
//! `allowed_signers` (who may plan and approve, OpenSSH's format), `policy.json` (the approval
//! rules of `inventory/policy.yaml`, as the controller built them) and `node` (this node's id).
//! The controller's own pre-flight is not trusted here: whoever holds the deploy key can send
//! any bytes, and only a bundle that these roots accept runs.

use std::path::Path;
use std::time::SystemTime;

use crate::approve::policy;
use crate::approve::signers::AllowedSigners;
use crate::model::{NodeName, Policy};
use crate::node::Layout;
use crate::plan::file::{self, LoadedPlan};
use crate::wire::Bundle;

pub struct Roots {
    pub signers: AllowedSigners,
    pub policy: Policy,
    pub node: NodeName,
}

/// The files of the trust folder.
pub const SIGNERS: &str = crate::model::TRUST_SIGNERS;
pub const POLICY: &str = crate::model::TRUST_POLICY;
pub const NODE: &str = "node";

/// Reads the node's trust roots; a node without them refuses every bundle.
pub fn load(layout: &Layout) -> Result<Roots, String> {
    let dir = layout.trust();
    let read = |name: &str| {
        let path = Path::new(&dir).join(name);
        std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "this node holds no trust roots ({}: {e}): `homelab bootstrap NODE` pins the \
                 controller's allowed_signers and policy on it; until then it runs no plan",
                path.display()
            )
        })
    };
    let signers = policy::signers(&read(SIGNERS)?).map_err(|e| format!("{dir}/{SIGNERS}: {e}"))?;
    let policy: Policy = serde_json::from_str(&read(POLICY)?)
        .map_err(|e| format!("{dir}/{POLICY}: unreadable: {e}"))?;
    let node = read(NODE)?;
    let node = NodeName::parse(node.trim())
        .map_err(|problem| format!("{dir}/{NODE}: expected {problem}"))?;
    Ok(Roots { signers, policy, node })
}

/// The bundle's plan, checked by this node alone: it is for this node, signed by a planner of
/// the pinned allowed_signers, approved as the pinned policy requires, not rejected here, and
/// not expired unless this node already began it (`resume` with its journal here).
pub fn check(
    roots: &Roots,
    bundle: &Bundle,
    layout: &Layout,
    now: SystemTime,
) -> Result<LoadedPlan, String> {
    if bundle.node != roots.node.as_str() {
        return Err(format!(
            "this node is `{}`; the bundle is for `{}`: nothing was done",
            roots.node,
            crate::http::bounded(&bundle.node)
        ));
    }
    let loaded =
        file::from_text_with(&bundle.plan, Path::new("bundle"), false, file::Diffs::NotShown)
            .map_err(|e| format!("the bundle's plan: {e}"))?;
    const PINNED: &str = "(this node's pinned trust roots: a new key reaches it in a plan approved under them, or by `homelab bootstrap NODE --replace-trust`)";
    policy::verify_planner(&loaded, &roots.signers, now)
        .map_err(|e| format!("the bundle's plan: {e} {PINNED}"))?;
    if !loaded.plan.nodes.iter().any(|n| n.node == roots.node) {
        return Err(format!("plan {} holds nothing for node `{}`", loaded.id, roots.node));
    }
    if Path::new(&layout.rejected(&loaded.id)).exists() {
        return Err(format!(
            "plan `{}` was rejected (recorded on this node by `homelab reject`): it never runs here",
            loaded.id
        ));
    }
    // The plan's time window is the pinned policy's, not the planner's.
    policy::check_lifetime(&loaded, &roots.policy, now).map_err(|e| e.to_string())?;
    let begun = Path::new(&layout.journal(&loaded.id)).exists();
    if !(bundle.resume && begun) {
        policy::check_not_expired(&loaded, now).map_err(|e| e.to_string())?;
    }
    let approved = Path::new("bundle").join(format!("{}.approved", loaded.id));
    policy::count_approvals(
        &loaded,
        &bundle.approved,
        &approved,
        &roots.signers,
        &roots.policy,
        now,
        policy::Unknown::NotCounted,
    )
    .map_err(|e| e.to_string())?;
    Ok(loaded)
}

/// The roots `loaded` carries, taken in place of the pinned ones where they differ: called
/// only once the plan checked out under the pinned roots, so new roots reach the node only
/// through a plan approved under the old (as TUF rotates its root). Roots that would not load
/// are refused and nothing is replaced. Returns the files replaced.
pub fn take_roots(layout: &Layout, loaded: &LoadedPlan) -> Result<Vec<String>, String> {
    let dir = Path::new(&layout.trust()).to_path_buf();
    let mut replace = Vec::new();
    for (name, text) in &loaded.plan.trust {
        match name.as_str() {
            SIGNERS => {
                policy::signers(text).map_err(|e| format!("the plan's {SIGNERS}: {e}"))?;
            }
            POLICY => {
                serde_json::from_str::<Policy>(text)
                    .map_err(|e| format!("the plan's {POLICY}: unreadable: {e}"))?;
            }
            other => return Err(format!("the plan carries an unknown trust root `{other}`")),
        }
        let pinned = std::fs::read(dir.join(name)).unwrap_or_default();
        if pinned != text.as_bytes() {
            replace.push((name.clone(), text));
        }
    }
    for (name, text) in &replace {
        crate::files::write_atomic(&dir.join(name), text.as_bytes())
            .map_err(|e| format!("cannot replace {}/{name}: {e}", dir.display()))?;
    }
    Ok(replace.into_iter().map(|(n, _)| n).collect())
}
