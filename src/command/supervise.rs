//! `homelab supervise [--once | --interval SECONDS] --key KEY`: the guide's Supervisor. Each
//! pass renders the repository at a commit (HEAD by default, from Git's objects, so the plan
//! is reviewable against that commit), refreshes the nodes, and diffs them with `plan`'s own
//! functions. Drift becomes a pending plan written exactly as `homelab plan` writes one,
//! signed by the supervisor's key, with the drift as the action's `reason`. It never approves
//! and never applies: its key must be one that `inventory/allowed_signers` lets plan and not
//! approve, or it refuses to run. Judging the drift is `crate::supervise`'s.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use super::args::Target;
use super::Selection;
use crate::approve::{keys, policy, Signer, APPROVE_NAMESPACE};
use crate::error::{Error, Report};
use crate::executor::{Queue, QueueError};
use crate::node::records::ActionResult;
use crate::node::ActionState;
use crate::supervise::{self, Earlier, Memory};

#[derive(Debug, clap::Args)]
pub struct SuperviseArgs {
    #[command(flatten)]
    pub target: Target,
    /// The supervisor's own signing key: allowed `namespaces="homelab-plan"` only in
    /// inventory/allowed_signers (default: $HOMELAB_SIGNING_KEY, else Git's user.signingkey).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// The revision whose render is the desired state (read from Git's objects).
    #[arg(long, value_name = "REV", default_value = "HEAD")]
    pub commit: String,
    /// Write plans here instead of the repository's `plans/`.
    #[arg(long, value_name = "DIR")]
    pub plans_dir: Option<PathBuf>,
    /// One pass, then exit: the default.
    #[arg(long, conflicts_with = "interval")]
    pub once: bool,
    /// A pass every SECONDS until stopped.
    #[arg(long, value_name = "SECONDS")]
    pub interval: Option<u64>,
}

fn queue_error(e: QueueError) -> Error {
    match e {
        QueueError::Read { path, source } => Error::Read { path, source },
        QueueError::Write { path, source } => Error::Write { path, source },
    }
}

pub fn run(repo: &Path, args: &SuperviseArgs, out: &mut dyn Write) -> Result<Report, Error> {
    let source = keys::find(repo, args.key.as_ref())
        .ok_or(keys::KeyError::Missing { action: "supervise" })?;
    let key = keys::load(&source)?;
    loop {
        let result = pass(repo, args, &key, out);
        out.flush().map_err(Error::stdout)?;
        let Some(interval) = args.interval else { return result };
        if let Err(e) = result {
            eprintln!("error: {e}");
        }
        std::thread::sleep(Duration::from_secs(interval.max(1)));
    }
}

/// `git rev-parse --verify <rev>^{commit}`: the commit a revision names.
fn resolve(repo: &Path, rev: &str) -> Result<String, Error> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args([
            "rev-parse",
            "--verify",
            "--quiet",
            "--end-of-options",
            &format!("{rev}^{{commit}}"),
        ])
        .output()
        .map_err(|e| Error::Unsupported { message: format!("cannot run git: {e}") })?;
    let commit = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || commit.is_empty() {
        return Err(Error::Usage {
            message: format!(
                "`{rev}` is not a commit of the repository at `{}`: the supervisor plans from a commit",
                repo.display()
            ),
        });
    }
    Ok(commit)
}

/// The supervisor plans and never approves: its key must not be allowed to approve.
fn check_key(lab: &crate::model::Homelab, key: &Signer, now: SystemTime) -> Result<String, Error> {
    let planner = super::plan::planner_of(lab, key, now)?;
    let signers = keys::allowed_signers(&lab.allowed_signers)?;
    if let Ok(v) = keys::principals_of(key, &signers, APPROVE_NAMESPACE, now) {
        return Err(Error::Usage {
            message: format!(
                "the supervisor's key {} may approve plans (as {}) per inventory/allowed_signers: give the supervisor a key of its own, allowed `namespaces=\"homelab-plan\"` only",
                key.fingerprint(),
                v.principals.join(", ")
            ),
        });
    }
    Ok(planner)
}

fn pass(
    repo: &Path,
    args: &SuperviseArgs,
    key: &Signer,
    out: &mut dyn Write,
) -> Result<Report, Error> {
    let now = SystemTime::now();
    let commit = resolve(repo, &args.commit)?;
    let tree = tempfile::tempdir().map_err(|e| Error::Unsupported {
        message: format!("no temporary folder for the commit's tree: {e}"),
    })?;
    crate::git::export(repo, &commit, tree.path())
        .map_err(|e| Error::Unsupported { message: e.to_string() })?;
    let lab = super::load_for(tree.path(), &args.target)?;
    let planner = check_key(&lab, key, now)?;
    let sel = Selection::of(repo, &lab, &args.target)?;
    let root = args.target.controller.root(args.target.root.as_ref());
    let queue = Queue::at(&root);
    // While the executor works, the nodes are mid-change: the next pass looks again.
    for state in [ActionState::Approved, ActionState::Running] {
        if let Some(busy) = queue.list(state).map_err(queue_error)?.first() {
            writeln!(
                out,
                "waiting: plan {} is {} (the executor is at work)",
                busy.id,
                state.as_str()
            )
            .map_err(Error::stdout)?;
            return Ok(Report::Success);
        }
    }
    let tree_state = crate::git::TreeState { commit: commit.clone(), dirty: false };
    let plan = super::plan::compute(&lab, &sel, tree_state, planner, now)?;
    // The observer's world, when there is one, says more about what drifted.
    let world = crate::world::store::load(&root).ok().map(|l| l.world);
    let drift = supervise::drift(&plan, world.as_ref());
    let pending: Vec<Earlier> = queue
        .list(ActionState::Pending)
        .map_err(queue_error)?
        .into_iter()
        .filter_map(|f| f.record.and_then(|r| r.drift).map(|drift| Earlier { id: f.id, drift }))
        .collect();
    let memory = Memory::load(&root);
    let records = queue.records().clone();
    let mut decision = supervise::decide(drift.as_ref(), &pending, memory.as_ref(), |id| {
        records.rejected(id).exists()
    });
    if drift.is_none() && plan.unreachable() > 0 {
        // Unknown is not gone: a node not read may still drift as its pending plan says.
        decision.supersede.clear();
        decision.note = format!("no drift on the nodes read; not read: {}", plan.summary());
    }
    let mut new_id = None;
    if let (true, Some(d)) = (decision.plan, &drift) {
        let plans = super::plans_dir(repo, args.plans_dir.as_ref());
        let annotate = |a: &mut crate::node::records::PendingAction| {
            a.reason = Some(d.reason.clone());
            a.drift = Some(d.fingerprint.clone());
        };
        // A pass killed between the plan file and its action left a plan for this very drift
        // that nobody was told of: announce that one rather than plan the same drift twice.
        let saved = match unannounced(&plans, &queue, &lab, &plan.planner, d, now) {
            Some(loaded) => {
                writeln!(
                    out,
                    "plan {} was written for this drift by a pass that stopped before its action: announcing it",
                    loaded.id
                )
                .map_err(Error::stdout)?;
                let (id, path) = (loaded.id.clone(), loaded.path.clone());
                super::plan::announce(id, &loaded.plan, path, queue.records(), annotate)?
            }
            None => super::plan::save(&plan, key, &plans, queue.records(), annotate)?,
        };
        let memory = Memory {
            drift: d.fingerprint.clone(),
            plan: saved.id.clone(),
            at: crate::clock::rfc3339(now),
        };
        memory.save(&root).map_err(|source| Error::Write { path: Memory::path(&root), source })?;
        writeln!(out, "{}", d.reason).map_err(Error::stdout)?;
        writeln!(
            out,
            "plan {} pending: {} ({}); approve with `homelab approve {}`",
            saved.id,
            saved.path.display(),
            plan.summary(),
            saved.path.display()
        )
        .map_err(Error::stdout)?;
        new_id = Some(saved.id);
    } else {
        writeln!(out, "{}", decision.note).map_err(Error::stdout)?;
        // A pass killed after the action and before the memory: the drift's pending plan is
        // the one to remember (so its rejection is honoured), whatever the memory says.
        let planned =
            drift.as_ref().and_then(|d| pending.iter().find(|e| e.drift == d.fingerprint));
        if let Some(e) = planned.filter(|e| memory.as_ref().is_none_or(|m| m.plan != e.id)) {
            let memory = Memory {
                drift: e.drift.clone(),
                plan: e.id.clone(),
                at: crate::clock::rfc3339(now),
            };
            memory
                .save(&root)
                .map_err(|source| Error::Write { path: Memory::path(&root), source })?;
        }
    }
    for (id, why) in &decision.supersede {
        let why = match &new_id {
            Some(new) => format!("superseded by plan {new}: {why}"),
            // `decide` named the plan that supersedes it already.
            None if why.starts_with("superseded") => why.clone(),
            None => format!("superseded: {why}"),
        };
        let result = ActionResult {
            at: crate::clock::rfc3339(now),
            by: format!("supervisor {}", super::whoami()),
            reason: why.clone(),
            nodes: Default::default(),
        };
        let moved = queue
            .advance_as(id, ActionState::Pending, ActionState::Failed, "superseded", Some(result))
            .map_err(queue_error)?;
        if moved {
            writeln!(out, "plan {id} {why}").map_err(Error::stdout)?;
        }
    }
    Ok(Report::Success)
}

/// A plan of this supervisor's for `drift` that an earlier pass wrote and never announced (it
/// was killed between the plan file and its pending action): no record of its id anywhere (no
/// action in any state, no apply, no rejection, no approval beside it), signed by this
/// planner's key, not expired, and made for the same drift. `None` when there is none.
fn unannounced(
    plans: &Path,
    queue: &Queue,
    lab: &crate::model::Homelab,
    planner: &str,
    drift: &supervise::Drift,
    now: SystemTime,
) -> Option<crate::plan::file::LoadedPlan> {
    let signers = keys::allowed_signers(&lab.allowed_signers).ok()?;
    let records = queue.records();
    for entry in std::fs::read_dir(plans).ok()?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(id) = name.strip_suffix(".plan").filter(|id| crate::executor::is_plan_id(id))
        else {
            continue;
        };
        let known = ActionState::ALL.iter().any(|s| records.action(*s, id).exists())
            || records.applied(id).exists()
            || records.rejected(id).exists()
            || ["approved", "rejected"].iter().any(|x| plans.join(format!("{id}.{x}")).exists());
        if known {
            continue;
        }
        let Ok(loaded) = crate::plan::file::read(&entry.path()) else { continue };
        let ours = loaded.plan.planner == planner
            && policy::verify_planner(&loaded, &signers, now).is_ok()
            && policy::check_not_expired(&loaded, now).is_ok();
        if ours
            && supervise::drift(&loaded.plan, None)
                .is_some_and(|d| d.fingerprint == drift.fingerprint)
        {
            return Some(loaded);
        }
    }
    None
}
