//! `homelab plan`: refresh the selected nodes, diff, sign, and write `plans/<id>.plan` plus the
//! pending action. The diff itself is `crate::plan::diff`, a pure function of values.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::args::Target;
use super::Selection;
use crate::approve::{keys, PLAN_NAMESPACE};
use crate::error::{Error, Report};
use crate::graph::DeployGraph;
use crate::model::Homelab;
use crate::node::records::PendingAction;
use crate::node::ActionState;
use crate::plan::{self, display, file, Header, Plan, PlannedStatus};

pub struct PlanArgs<'a> {
    pub target: &'a Target,
    pub key: Option<&'a PathBuf>,
    pub plans_dir: Option<&'a PathBuf>,
    pub detailed_exitcode: bool,
    pub allow_unreachable: bool,
    /// Open or update the plan's Forgejo pull request once it is saved (`homelab pr`).
    pub pr: bool,
}

/// Refresh and diff: the plan as a value (no signing, no writing). `tree` is the commit the
/// desired state `lab` was loaded from (the work tree's for `plan`, a commit's for
/// `supervise`). Shared with `supervise`, so its plans are `plan`'s to the byte.
pub fn compute(
    lab: &Homelab,
    sel: &Selection,
    tree: crate::git::TreeState,
    planner: String,
    now: SystemTime,
) -> Result<Plan, Error> {
    let graph = DeployGraph::build(lab).expect("validation rejects cycles");
    let rendered = crate::render::render_all(lab, |i| sel.nodes.contains(&i.node))?;
    let actual = crate::observe::refresh_all(
        sel.transport.as_ref(),
        sel.nodes.iter().map(|n| &lab.nodes[n]),
    );
    let header = Header {
        created: crate::clock::rfc3339(now),
        expires: crate::clock::rfc3339(now + lab.policy.plan_ttl),
        planner,
        commit: tree.commit,
        dirty: tree.dirty,
    };
    Ok(plan::diff(lab, &graph, &rendered, &actual, header))
}

/// The planner line of a plan signed by `key`: its principals (in `homelab-plan`) and its
/// fingerprint, as `approve::policy::verify_planner` expects it.
pub fn planner_of(
    lab: &Homelab,
    key: &crate::approve::Signer,
    now: SystemTime,
) -> Result<String, Error> {
    let signers = keys::allowed_signers(&lab.allowed_signers)?;
    let principals = keys::principals_of(key, &signers, PLAN_NAMESPACE, now)?.principals;
    Ok(format!("{} {}", principals.join(","), key.fingerprint()))
}

/// Where a saved plan went.
pub struct Saved {
    pub id: String,
    /// `plans/<id>.plan`.
    pub path: PathBuf,
    /// `<controller root>/actions/pending/<id>.json`.
    pub pending: PathBuf,
}

/// Signs `plan` and writes `plans/<id>.plan` and its pending action, which `annotate` may add
/// to (the supervisor's reason and drift).
pub fn save(
    plan: &Plan,
    key: &crate::approve::Signer,
    plans_dir: &Path,
    records: &crate::approve::policy::Records,
    annotate: impl FnOnce(&mut PendingAction),
) -> Result<Saved, Error> {
    let body = file::encode(plan);
    let signature = key.sign(PLAN_NAMESPACE, body.as_bytes()).map_err(keys::KeyError::from)?;
    let id = file::plan_id(body.as_bytes());
    let path = plans_dir.join(format!("{id}.plan"));
    super::write(&path, file::join(&body, &signature).as_bytes())?;
    announce(id, plan, path, records, annotate)
}

/// Writes the pending action of the plan file `path` (id `id`), which `annotate` may add to:
/// [`save`]'s second half, also how the supervisor finishes a save that a crash cut short
/// between the two files.
pub fn announce(
    id: String,
    plan: &Plan,
    path: PathBuf,
    records: &crate::approve::policy::Records,
    annotate: impl FnOnce(&mut PendingAction),
) -> Result<Saved, Error> {
    let pending = records.action(ActionState::Pending, &id);
    let mut action = pending_action(&id, plan, &path);
    annotate(&mut action);
    super::write(&pending, &action.to_bytes())?;
    Ok(Saved { id, path, pending })
}

/// The guide's pending action for a plan (`<root>/actions/pending/<id>.json`).
fn pending_action(id: &str, plan: &Plan, plan_path: &Path) -> PendingAction {
    PendingAction {
        id: id.to_owned(),
        kind: "apply-plan".to_owned(),
        state: "pending".to_owned(),
        plan: plan_path.display().to_string(),
        created: plan.created.clone(),
        expires: plan.expires.clone(),
        planner: plan.planner.clone(),
        commit: plan.commit.clone(),
        dirty: plan.dirty,
        summary: plan.summary(),
        nodes: plan.nodes.iter().map(|n| n.node.to_string()).collect(),
        approve: format!("homelab approve {}", plan_path.display()),
        reason: None,
        drift: None,
        result: None,
    }
}

pub fn run(repo: &Path, args: &PlanArgs<'_>, out: &mut dyn Write) -> Result<Report, Error> {
    let lab = super::load_for(repo, args.target)?;
    let sel = Selection::of(repo, &lab, args.target)?;
    let now = SystemTime::now();
    let key = keys::find(repo, args.key).as_ref().map(keys::load).transpose()?;
    let planner = match &key {
        Some(k) => planner_of(&lab, k, now)?,
        None => "unsigned".to_owned(),
    };
    let plan = compute(&lab, &sel, crate::git::tree_state(repo), planner, now)?;
    let color = super::use_color();
    // A node that could not be read has an unknown state, not "no changes": the plan is not
    // saved unless asked, and the exit status says so either way (scripts must not go on).
    let unreachable: Vec<String> = plan
        .nodes
        .iter()
        .filter(|n| matches!(n.status, PlannedStatus::Unreachable { .. }))
        .map(|n| n.node.to_string())
        .collect();
    let unread = |then: &str| Error::Unreachable { nodes: unreachable.clone(), then: then.into() };
    // A change that writes a compose file named otherwise in the repository (`compose.yaml`)
    // says so: the reviewer reads `docker-compose.yml` in the plan.
    let renamed: std::collections::BTreeSet<(String, &str)> = plan
        .nodes
        .iter()
        .flat_map(|n| &n.changes)
        .filter(|c| c.artifacts.iter().any(|a| a.name == crate::render::COMPOSE))
        .flat_map(|c| crate::render::renamed(&lab, &c.instance))
        .collect();
    for (path, release) in &renamed {
        eprintln!("{}", crate::render::renamed_note(path, release));
    }
    let report = if args.detailed_exitcode && plan.has_changes() {
        Report::Changes
    } else {
        Report::Success
    };
    if !unreachable.is_empty() && !args.allow_unreachable {
        display::write_text(out, "(not saved)", &plan, color).map_err(Error::stdout)?;
        return Err(unread(
            "the plan was NOT saved; plan again when they answer, leave them out with `--node`, \
             or save a plan without them with `--allow-unreachable`",
        ));
    }
    let Some(key) = key else {
        display::write_text(out, "(not saved)", &plan, color).map_err(Error::stdout)?;
        eprintln!(
            "\nthis plan was NOT saved: homelab signs every plan and found no signing key.\n  \
             make one:  ssh-keygen -t ed25519 -f ~/.ssh/homelab_ed25519 -C \"$USER@$(hostname)\"\n  \
             name it:   --key ~/.ssh/homelab_ed25519, or HOMELAB_SIGNING_KEY=~/.ssh/homelab_ed25519,\n             \
             or `git config user.signingkey ~/.ssh/homelab_ed25519`\n  \
             allow it:  add `<you>@<host> namespaces=\"homelab-plan,homelab-approve\" <contents of the .pub>`\n             \
             to inventory/allowed_signers, then plan again"
        );
        if !unreachable.is_empty() {
            return Err(unread("their state is unknown"));
        }
        return Ok(report);
    };
    let plans = super::plans_dir(repo, args.plans_dir);
    let Saved { id, path, pending } = save(&plan, &key, &plans, &sel.records, |_| {})?;
    display::write_text(out, &id, &plan, color).map_err(Error::stdout)?;
    eprintln!("\nsaved {} (pending action {})", path.display(), pending.display());
    eprintln!("review it in a pull request, then: homelab approve {}", path.display());
    if args.pr {
        super::pr::after_plan(repo, &path, &mut std::io::stderr())?;
    }
    if !unreachable.is_empty() {
        return Err(unread(
            "saved anyway (--allow-unreachable); nothing is planned for them and apply leaves them out",
        ));
    }
    Ok(report)
}
