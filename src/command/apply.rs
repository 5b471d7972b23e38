//! `homelab apply plans/<id>.approved`: pre-flight (every refusal, nothing changed), the
//! review of the plan against its commit, then execution per node, then the record of what
//! happened. `homelab unlock` lives here too: it is the operator's way out of a stuck apply.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::apply::{self, Mode, NodeOutcome, Options, Verdict};
use crate::approve::policy::{self, Preflight};
use crate::error::{Error, Report};
use crate::model::Homelab;
use crate::node::records::{Applied, ApplyState, NodeSummary};
use crate::node::{ActionState, Layout};

use super::Selection;

pub struct ApplyArgs<'a> {
    pub approved: &'a Path,
    pub target: &'a super::args::Target,
    pub services: &'a [String],
    /// The stages to run, or `--stage diagnose` (inspect only).
    pub mode: Mode,
    pub resume: bool,
    pub lock_wait: u64,
    pub confirm_timeout: u64,
    pub parallel: usize,
    pub json: bool,
}

/// How an apply went, for the exit code (`error::exit_code`).
fn report_of(verdict: Verdict) -> Report {
    match verdict {
        Verdict::Success => Report::Success,
        Verdict::Refused => Report::Refused,
        Verdict::Failed => Report::Failed,
    }
}

pub fn run(repo: &Path, args: &ApplyArgs<'_>, out: &mut dyn Write) -> Result<Report, Error> {
    let lab = &super::load_for(repo, args.target)?;
    let sel = Selection::of(repo, lab, args.target)?;
    let records = &sel.records;
    let signers = policy::signers(&lab.allowed_signers)?;
    let diagnose = args.mode == Mode::Diagnose;
    let kind = match (diagnose, args.resume) {
        (true, _) => Preflight::Inspect,
        (false, true) => Preflight::Resume,
        (false, false) => Preflight::Fresh,
    };
    let loaded = policy::preflight(lab, &signers, args.approved, records, kind, SystemTime::now())?;
    let provenance = crate::review::verify(repo, lab, &loaded)?;
    crate::review::check_roots(lab, &loaded.plan)?;
    eprintln!("pre-flight passed for plan {}: {}", loaded.id, loaded.plan.summary());
    eprintln!("review: {}", provenance.describe());
    let nodes = if sel.explicit_nodes { Some(sel.nodes.clone()) } else { None };
    let services = if args.services.is_empty() {
        None
    } else {
        let mut v = Vec::new();
        for s in args.services {
            v.push(super::resolve_service(lab, s, None)?);
        }
        Some(v)
    };
    let host = super::hostname();
    let pid = std::process::id();
    let clock: crate::clock::Clock = SystemTime::now;
    let opts = Options {
        nodes,
        services,
        mode: args.mode,
        resume: args.resume,
        lock_wait: Duration::from_secs(args.lock_wait),
        confirm_timeout: (args.confirm_timeout > 0)
            .then(|| Duration::from_secs(args.confirm_timeout)),
        parallel: args.parallel,
        holder: super::whoami(),
        host,
        pid,
        clock,
        expires: humantime::parse_rfc3339(&loaded.plan.expires)
            .map_err(|_| policy::Refusal::ExpiryUnreadable)?,
        keep_releases: lab.policy.keep_releases,
        // What each node's engine checks for itself: the files pre-flight just read.
        signed: Some(apply::engine::Signed {
            plan: crate::plan::file::read_bounded(&loaded.path)
                .map_err(policy::Refusal::from)?
                .into(),
            approved: crate::plan::file::read_bounded(args.approved)
                .map_err(policy::Refusal::from)?,
        }),
        finished_nodes: records
            .applied_record(&loaded.id)
            .map(|r| {
                r.nodes
                    .iter()
                    .filter(|(_, s)| s.outcome == "applied" || s.outcome == "applied earlier")
                    .filter_map(|(n, _)| crate::model::NodeName::parse(n).ok())
                    .collect()
            })
            .unwrap_or_default(),
    };
    // The controller's record: from here on, a plain second apply of this plan is a replay.
    let applied = records.applied(&loaded.id);
    let first = !applied.exists();
    let record = |state: ApplyState, nodes: BTreeMap<String, NodeSummary>| {
        Applied {
            plan: loaded.id.clone(),
            state,
            updated: crate::clock::rfc3339(clock()),
            by: opts.holder.clone(),
            nodes,
            commit: loaded.plan.commit.clone(),
        }
        .to_bytes()
    };
    // Diagnosing changes nothing, so it leaves no record either.
    let first = first && !diagnose;
    if first {
        super::write_private(&applied, &record(ApplyState::Started, BTreeMap::new()))?;
    }
    let transport = sel.transport.as_ref();
    let outcomes = if args.json {
        let sink = apply::sink::Json::new(std::io::stdout(), clock);
        apply::execute(lab, &loaded.id, &loaded.plan, transport, &opts, &sink)
    } else if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        let sink = apply::sink::Progress::new();
        apply::execute(lab, &loaded.id, &loaded.plan, transport, &opts, &sink)
    } else {
        let sink = apply::sink::Plain::new(std::io::stderr());
        apply::execute(lab, &loaded.id, &loaded.plan, transport, &opts, &sink)
    };
    let summary: BTreeMap<String, NodeSummary> = outcomes
        .iter()
        .map(|(n, o)| {
            (n.to_string(), NodeSummary { outcome: o.label().to_owned(), detail: o.detail() })
        })
        .collect();
    let report = report_of(apply::verdict(&outcomes));
    let whole = opts.nodes.is_none() && opts.services.is_none() && opts.mode.only().is_none();
    if diagnose {
        // Nothing to record.
    } else if first && !outcomes.values().any(NodeOutcome::recorded) {
        // Nothing was done anywhere, nor found applied: the plan is not consumed, and the
        // folders the record needed go too when nothing else is in them (a refusal leaves no
        // trace). A node found applied (by itself, say) is recorded: a plain apply from here
        // is a replay from now on.
        let _ = std::fs::remove_file(&applied);
        if let Some(dir) = applied.parent() {
            let _ = std::fs::remove_dir(dir).and_then(|()| match dir.parent() {
                Some(state) => std::fs::remove_dir(state),
                None => Ok(()),
            });
        }
    } else {
        let state = if report == Report::Success && whole {
            ApplyState::Completed
        } else {
            ApplyState::Partial
        };
        // 0600: each node's detail quotes what its failed steps printed (redacted on the node).
        super::write_private(&applied, &record(state, summary.clone()))?;
        let pending = records.action(ActionState::Pending, &loaded.id);
        if pending.exists() && state == ApplyState::Completed {
            let done = records.action(ActionState::Completed, &loaded.id);
            super::write_private(&done, &record(state, summary.clone()))?;
            let _ = std::fs::remove_file(pending);
        }
    }
    let io = Error::stdout;
    if !args.json {
        writeln!(out, "apply of plan {}:", loaded.id).map_err(io)?;
        for (n, o) in &outcomes {
            let d = o.detail();
            if d.is_empty() {
                writeln!(out, "  {:<16} {}", n.display_name(), o.label()).map_err(io)?;
            } else {
                writeln!(out, "  {:<16} {}: {d}", n.display_name(), o.label()).map_err(io)?;
            }
        }
        if report != Report::Success && !diagnose {
            // Only what can help: `--resume` where it can continue, a new plan where a resume
            // would only repeat the result.
            for hint in apply::outcome::hints(&outcomes, &args.approved.display().to_string()) {
                writeln!(out, "{hint}").map_err(io)?;
            }
        }
    } else {
        let code = crate::error::exit_code(&Ok(report));
        writeln!(out, "{}", serde_json::json!({"event": "summary", "plan": loaded.id, "exit_code": code, "nodes": summary})).map_err(io)?;
    }
    Ok(report)
}

/// `homelab unlock --node N`: shows the holder, then removes the lock. Explicit on purpose:
/// a lock is never broken silently. A node that is not locked is said so, and is not an error
/// (exit 0): what the operator asked for, an unlocked node, holds, so a script may unlock as
/// its clean-up step whether or not the apply before it left a lock.
pub fn unlock(
    repo: &Path,
    target: &super::args::Target,
    out: &mut dyn Write,
) -> Result<Report, Error> {
    let lab: &Homelab = &super::load(repo)?;
    let sel = Selection::of(repo, lab, target)?;
    for n in sel.nodes {
        let node = &lab.nodes[&n];
        // Through the node's homelab where it has one (a deploy key restricted to `homelab
        // node serve` can unlock too); over shell steps where it has none.
        use crate::wire::{Opened, Reply, Request};
        let holder = match crate::wire::ask(sel.transport.as_ref(), node, &Request::Unlock) {
            Ok(Reply::Unlocked { holder }) => holder,
            Ok(Reply::Refused { reason }) => {
                return Err(Error::Unsupported { message: format!("{n}: refused: {reason}") })
            }
            Ok(other) => {
                return Err(Error::Unsupported {
                    message: format!("{n}: the node's homelab answered out of turn: {other:?}"),
                })
            }
            Err(Opened::Mismatch(r) | Opened::Refused(r) | Opened::Unreachable(r)) => {
                return Err(Error::Unsupported { message: format!("{n}: {r}") })
            }
            Err(Opened::Here | Opened::NotInstalled(_)) => {
                let exec = sel
                    .transport
                    .connect(node)
                    .map_err(|e| Error::Unsupported { message: format!("{n}: {e}") })?;
                apply::remote::break_lock(exec.as_ref(), &Layout::new(exec.root()))
                    .map_err(|e| Error::Unsupported { message: format!("{n}: {e}") })?
            }
        };
        match holder {
            Some(holder) => writeln!(
                out,
                "{n}: removed the lock held by {}",
                holder.split_whitespace().collect::<Vec<_>>().join(" ")
            ),
            None => writeln!(out, "{n}: not locked; nothing to remove"),
        }
        .map_err(Error::stdout)?;
    }
    Ok(Report::Success)
}
