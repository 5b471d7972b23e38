//! `homelab executor [--once | --watch]`: the guide's Executor. Each pass moves the actions
//! under `<controller root>/actions/` along: a `running` one left by a crash is resumed
//! (`apply --resume`), a `pending` one whose approvals verify goes to `approved`, an `approved`
//! one is claimed (renamed to `running`) and applied by the function `homelab apply` runs, then
//! moved to `completed` or `failed` with its summary. What may run is decided by the same
//! pre-flight as `apply` (`approve::policy::preflight`); a refused plan goes to `failed` with
//! the refusal and is never applied. Actions run one after another, so never two at once on a
//! node; an exclusive lock keeps a second executor off the same root.
//!
//! Killed at any point, a restart applies nothing twice: a claimed action is in `running/`
//! and is resumed, and apply's records (the controller's `applied`, each node's `consumed` and
//! journal) make a resume finish only what had not finished.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::apply::ApplyArgs;
use super::args::Target;
use crate::apply::Mode;
use crate::approve::policy::{self, Preflight};
use crate::error::{Error, Report};
use crate::executor::lock::ExecutorLock;
use crate::executor::{self, Found, From, Queue, QueueError, Step};
use crate::node::records::{ActionResult, ApplyState, NodeSummary};
use crate::node::ActionState;

#[derive(Debug, clap::Args)]
pub struct ExecutorArgs {
    #[command(flatten)]
    pub target: Target,
    /// One pass over the actions, then exit: the default.
    #[arg(long, conflicts_with = "watch")]
    pub once: bool,
    /// A pass every `--interval` seconds until stopped.
    #[arg(long)]
    pub watch: bool,
    /// Seconds between passes with `--watch`.
    #[arg(long, value_name = "SECONDS", default_value_t = 10, requires = "watch")]
    pub interval: u64,
    /// Where the plans are (default: the repository's `plans/`).
    #[arg(long, value_name = "DIR")]
    pub plans_dir: Option<PathBuf>,
    /// As for apply: wait up to this many seconds for a node locked by another apply.
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    pub lock_wait: u64,
    /// As for apply: how many nodes of one plan to apply at once.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub parallel: usize,
}

fn queue_error(e: QueueError) -> Error {
    match e {
        QueueError::Read { path, source } => Error::Read { path, source },
        QueueError::Write { path, source } => Error::Write { path, source },
    }
}

pub fn run(repo: &Path, args: &ExecutorArgs, out: &mut dyn Write) -> Result<Report, Error> {
    let root = args.target.controller.root(args.target.root.as_ref());
    let _lock = ExecutorLock::acquire(&root, &super::whoami())
        .map_err(|e| Error::Unsupported { message: e.to_string() })?;
    let queue = Queue::at(&root);
    loop {
        let result = pass(repo, args, &queue, out);
        out.flush().map_err(Error::stdout)?;
        if !args.watch {
            return result;
        }
        if let Err(e) = result {
            // The next pass tries again: the repository or the disk may be fixed by then.
            eprintln!("error: {e}");
        }
        std::thread::sleep(Duration::from_secs(args.interval.max(1)));
    }
}

/// Where an action's plan is: `plans/<id>.plan` of the repository (or `--plans-dir`), else
/// the path its record names. Its approvals are `<id>.approved` beside it.
fn approved_path(repo: &Path, args: &ExecutorArgs, found: &Found) -> PathBuf {
    let dir = super::plans_dir(repo, args.plans_dir.as_ref());
    let ours = dir.join(format!("{}.plan", found.id));
    let plan = match &found.record {
        Some(r) if !ours.exists() && Path::new(&r.plan).exists() => PathBuf::from(&r.plan),
        _ => ours,
    };
    plan.with_file_name(format!("{}.approved", found.id))
}

/// One pass over the queue. `Report::Failed` when an action failed in it.
fn pass(
    repo: &Path,
    args: &ExecutorArgs,
    queue: &Queue,
    out: &mut dyn Write,
) -> Result<Report, Error> {
    let lab = super::load(repo)?;
    let signers = policy::signers(&lab.allowed_signers)?;
    let records = queue.records();
    let mut report = Report::Success;
    let by = format!("executor {}", super::whoami());
    let result = |reason: String, nodes| ActionResult {
        at: crate::clock::rfc3339(SystemTime::now()),
        by: by.clone(),
        reason,
        nodes,
    };
    let say = |out: &mut dyn Write, id: &str, text: String| {
        writeln!(out, "{id}: {text}").map_err(Error::stdout)
    };

    // 1. Our own crash: an action claimed and not finished is resumed first.
    for found in queue.list(ActionState::Running).map_err(queue_error)? {
        let approved = approved_path(repo, args, &found);
        say(out, &found.id, "running when the executor stopped: resuming".to_owned())?;
        let (to, why, nodes) = apply(repo, args, &found.id, &approved, true, records, out);
        report = report.max_failed(to);
        let moved =
            queue.advance(&found.id, ActionState::Running, to, Some(result(why.clone(), nodes)));
        moved.map_err(queue_error)?;
        say(out, &found.id, format!("running → {}: {why}", to.as_str()))?;
    }

    // The pre-flight of `homelab apply`, now, for a fresh start.
    let preflight = |approved: &Path| {
        policy::preflight(&lab, &signers, approved, records, Preflight::Fresh, SystemTime::now())
    };

    // 2. Pending: approved enough, nothing to do, refused, or still waiting.
    for found in queue.list(ActionState::Pending).map_err(queue_error)? {
        let approved = approved_path(repo, args, &found);
        let checked = preflight(&approved);
        let mut step = executor::step(From::Pending, &checked);
        if matches!(step, Step::Wait { .. }) {
            // Waiting for approvals ends when the plan expires or is rejected (the pre-flight
            // stops at a missing approvals file before it looks); a plan that changes nothing
            // waits for no one.
            let plan = approved.with_extension("plan");
            if let Ok(loaded) = crate::plan::file::read(&plan) {
                let now = SystemTime::now();
                if let Err(r) = policy::check_not_expired(&loaded, now)
                    .and_then(|()| policy::check_not_rejected(&loaded, records))
                {
                    step = Step::Fail { why: r.to_string() };
                } else if !loaded.plan.has_changes() {
                    // A plan with nothing to apply needs no approval: it is done.
                    step = executor::step(From::Pending, &Ok(loaded));
                }
            }
        }
        let to = match step {
            Step::Wait { why } => {
                say(out, &found.id, format!("pending: {why}"))?;
                continue;
            }
            Step::Approve => (ActionState::Approved, "its approvals verify".to_owned()),
            Step::Complete { why } => (ActionState::Completed, why),
            Step::Fail { why } => (ActionState::Failed, format!("refused: {why}")),
        };
        let res = (to.0 != ActionState::Approved).then(|| result(to.1.clone(), Default::default()));
        if queue.advance(&found.id, ActionState::Pending, to.0, res).map_err(queue_error)? {
            report = report.max_failed(to.0);
            say(out, &found.id, format!("pending → {}: {}", to.0.as_str(), to.1))?;
        }
    }

    // 3. Approved: checked again (whoever put it there), claimed, applied.
    for found in queue.list(ActionState::Approved).map_err(queue_error)? {
        let approved = approved_path(repo, args, &found);
        let checked = preflight(&approved);
        let end = match executor::step(From::Approved, &checked) {
            Step::Approve => None,
            Step::Complete { why } => Some((ActionState::Completed, why)),
            Step::Fail { why } | Step::Wait { why } => {
                Some((ActionState::Failed, format!("refused: {why}")))
            }
        };
        if let Some((to, why)) = end {
            let res = Some(result(why.clone(), Default::default()));
            if queue.advance(&found.id, ActionState::Approved, to, res).map_err(queue_error)? {
                report = report.max_failed(to);
                say(out, &found.id, format!("approved → {}: {why}", to.as_str()))?;
            }
            continue;
        }
        // The claim: one rename; another executor that got there first leaves us nothing.
        if !queue
            .advance(&found.id, ActionState::Approved, ActionState::Running, None)
            .map_err(queue_error)?
        {
            continue;
        }
        say(out, &found.id, "approved → running".to_owned())?;
        let (to, why, nodes) = apply(repo, args, &found.id, &approved, false, records, out);
        report = report.max_failed(to);
        let moved =
            queue.advance(&found.id, ActionState::Running, to, Some(result(why.clone(), nodes)));
        moved.map_err(queue_error)?;
        say(out, &found.id, format!("running → {}: {why}", to.as_str()))?;
    }
    Ok(report)
}

trait MaxFailed {
    fn max_failed(self, to: ActionState) -> Self;
}

impl MaxFailed for Report {
    /// A pass that failed an action says so in its exit status.
    fn max_failed(self, to: ActionState) -> Report {
        if to == ActionState::Failed {
            Report::Failed
        } else {
            self
        }
    }
}

/// Applies the plan with `homelab apply`'s own function; where the action goes, why, and how
/// each node ended (from the controller's record of the apply).
fn apply(
    repo: &Path,
    args: &ExecutorArgs,
    id: &str,
    approved: &Path,
    resume: bool,
    records: &policy::Records,
    out: &mut dyn Write,
) -> (ActionState, String, std::collections::BTreeMap<String, NodeSummary>) {
    // Finished before a crash let us say so: nothing to run again.
    if let Some(r) = records.applied_record(id).filter(|r| r.state == ApplyState::Completed) {
        return (ActionState::Completed, "applied".to_owned(), r.nodes);
    }
    let apply_args = ApplyArgs {
        approved,
        target: &args.target,
        services: &[],
        mode: Mode::Run { only: None },
        resume,
        lock_wait: args.lock_wait,
        // The dead-man rollback as `homelab apply` has it by default.
        confirm_timeout: 30,
        parallel: args.parallel,
        json: false,
    };
    let ran = super::apply::run(repo, &apply_args, out);
    // The pull request's commit status says how the apply ended (when the repository names a
    // forge in inventory/forge.yaml). A forge that cannot be told never fails the apply.
    let state = match &ran {
        Ok(Report::Success) => crate::forge::State::Success,
        Ok(_) => crate::forge::State::Failure,
        Err(_) => crate::forge::State::Error,
    };
    if let Err(e) = super::pr::report_apply(repo, id, state) {
        let _ = writeln!(out, "{id}: could not set the pull request's status: {e}");
    }
    let record = records.applied_record(id);
    let nodes = record.as_ref().map(|r| r.nodes.clone()).unwrap_or_default();
    match ran {
        Ok(Report::Success) => (ActionState::Completed, "applied".to_owned(), nodes),
        Ok(_) => {
            let mut why: Vec<String> = nodes
                .iter()
                .filter(|(_, s)| {
                    !matches!(s.outcome.as_str(), "applied" | "no changes" | "applied earlier")
                })
                .map(|(n, s)| {
                    if s.detail.is_empty() {
                        format!("{n} {}", s.outcome)
                    } else {
                        format!("{n} {}: {}", s.outcome, s.detail)
                    }
                })
                .collect();
            if why.is_empty() {
                why.push("the apply did not complete".to_owned());
            }
            let mut why = format!("not applied everywhere: {}", why.join("; "));
            if record.is_some_and(|r| r.state != ApplyState::Completed) {
                why.push_str(&format!(
                    "; after fixing the cause: homelab apply --resume {}",
                    approved.display()
                ));
            }
            (ActionState::Failed, why, nodes)
        }
        Err(e) => (ActionState::Failed, e.to_string().replace('\n', "; "), nodes),
    }
}
