//! `homelab apply plans/<id>.approved`: pre-flight (every refusal, nothing changed), then
//! execution per node, then the record of what happened.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::apply::{self, Mode, NodeOutcome, Options, Verdict};
use crate::error::Error;
use crate::model::Homelab;
use crate::node::records::{Applied, ApplyState, NodeSummary};
use crate::node::{ActionState, Layout};

use super::approve::{
    check_approvals, check_not_consumed_or_rejected, check_not_expired, read_plan, verify_planner,
    LoadedPlan, Records,
};

fn refused(message: impl Into<String>) -> Error {
    Error::Refused { message: message.into() }
}

/// Every check that does not need a node, before anything is written anywhere. Read-only.
/// Per node, staleness and replay are checked right before that node's first stage.
/// `inspect`: `--stage diagnose`, which changes nothing; an applied or expired plan may be
/// inspected, but only an approved one.
pub fn preflight(
    lab: &Homelab,
    approved: &Path,
    records: &Records,
    resume: bool,
    inspect: bool,
) -> Result<LoadedPlan, Error> {
    let name = approved.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let Some(id) = name.strip_suffix(".approved") else {
        return Err(refused(format!(
            "`{}` is not an approval: apply takes `plans/<id>.approved`, written by `homelab approve plans/<id>.plan`",
            approved.display()
        )));
    };
    let plan_path = approved.with_file_name(format!("{id}.plan"));
    let approved_text = match std::fs::read_to_string(approved) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(refused(format!(
                "no approval: `{}` does not exist; an approver runs `homelab approve {}`",
                approved.display(),
                plan_path.display()
            )))
        }
        Err(e) => return Err(refused(format!("cannot read `{}`: {e}", approved.display()))),
    };
    let loaded = read_plan(&plan_path)?;
    let now = SystemTime::now();
    let signers = super::plan::allowed_signers(lab)?;
    verify_planner(&loaded, &signers, now)?;
    let started = records.consumed(&loaded.id);
    if inspect {
        // Read-only: signatures and approvals below are all that matters.
    } else if resume && started.exists() {
        // Finishing an apply that already started is allowed past the plan's expiry: every
        // service is at its old or new version, and the approvals below still must hold.
        let record = std::fs::read_to_string(&started).unwrap_or_default();
        if record.contains("\"state\": \"completed\"") {
            return Err(refused(format!(
                "plan `{}` was already applied completely ({})",
                loaded.id,
                started.display()
            )));
        }
        for p in [
            loaded.path.with_file_name(format!("{}.rejected", loaded.id)),
            records.rejected(&loaded.id),
        ] {
            if p.exists() {
                return Err(refused(format!(
                    "plan `{}` was rejected ({})",
                    loaded.id,
                    p.display()
                )));
            }
        }
    } else {
        check_not_expired(&loaded, now)?;
        check_not_consumed_or_rejected(&loaded, records)?;
    }
    check_approvals(&loaded, &approved_text, approved, &signers, lab, now)?;
    Ok(loaded)
}

pub struct ApplyArgs<'a> {
    pub approved: &'a Path,
    pub target: &'a crate::cli::Target,
    pub services: &'a [String],
    /// The stages to run, or `--stage diagnose` (inspect only).
    pub mode: Mode,
    pub resume: bool,
    pub lock_wait: u64,
    pub parallel: usize,
    pub json: bool,
}

/// Writes one of the controller's records atomically.
fn write_record(path: &str, bytes: &[u8]) -> Result<(), Error> {
    let path = Path::new(path);
    crate::files::write_atomic(path, bytes)
        .map_err(|source| Error::Write { path: path.to_path_buf(), source })
}

pub fn run(
    repo: &Path,
    lab: &Homelab,
    args: &ApplyArgs<'_>,
    out: &mut dyn Write,
) -> Result<u8, Error> {
    let target = args.target;
    let records = Records { root: target.controller.root(target.root.as_ref()) };
    let diagnose = args.mode == Mode::Diagnose;
    let loaded = preflight(lab, args.approved, &records, args.resume, diagnose)?;
    eprintln!("pre-flight passed for plan {}: {}", loaded.id, loaded.plan.summary());
    let transport = crate::cli::transport_for(repo, target)?;
    let nodes =
        if target.nodes.is_empty() { None } else { Some(crate::cli::nodes_for(lab, target)?) };
    let services = if args.services.is_empty() {
        None
    } else {
        let mut v = Vec::new();
        for s in args.services {
            v.push(crate::cli::resolve_service(lab, s, None)?);
        }
        Some(v)
    };
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".to_owned());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let pid = std::process::id();
    let clock: crate::clock::Clock = SystemTime::now;
    let opts = Options {
        nodes,
        services,
        mode: args.mode,
        resume: args.resume,
        lock_wait: Duration::from_secs(args.lock_wait),
        parallel: args.parallel,
        holder: format!("{user}@{host} pid {pid}"),
        host,
        pid,
        clock,
    };
    // The controller's record: from here on, a plain second apply of this plan is a replay.
    let controller = Layout::local(&records.root);
    let applied = controller.applied(&loaded.id);
    let first = !Path::new(&applied).exists();
    let record = |state: ApplyState, nodes: BTreeMap<String, NodeSummary>| {
        Applied {
            plan: loaded.id.clone(),
            state,
            updated: crate::clock::rfc3339(clock()),
            by: opts.holder.clone(),
            nodes,
        }
        .to_bytes()
    };
    // Diagnosing changes nothing, so it leaves no record either.
    let first = first && !diagnose;
    if first {
        write_record(&applied, &record(ApplyState::Started, BTreeMap::new()))?;
    }
    let outcomes = if args.json {
        let sink = apply::sink::Json::new(std::io::stdout(), clock);
        apply::execute(lab, &loaded.id, &loaded.plan, transport.as_ref(), &opts, &sink)
    } else if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        let sink = apply::sink::Progress::new();
        apply::execute(lab, &loaded.id, &loaded.plan, transport.as_ref(), &opts, &sink)
    } else {
        let sink = apply::sink::Plain::new(std::io::stderr());
        apply::execute(lab, &loaded.id, &loaded.plan, transport.as_ref(), &opts, &sink)
    };
    let summary: BTreeMap<String, NodeSummary> = outcomes
        .iter()
        .map(|(n, o)| {
            (n.to_string(), NodeSummary { outcome: o.label().to_owned(), detail: o.detail() })
        })
        .collect();
    // Until the lead moves it to the one place exit codes are decided.
    let code = match apply::verdict(&outcomes) {
        Verdict::Success => 0,
        Verdict::Refused => 3,
        Verdict::Failed => 1,
    };
    let whole = opts.nodes.is_none() && opts.services.is_none() && opts.mode.only().is_none();
    if diagnose {
        // Nothing to record.
    } else if first && !outcomes.values().any(NodeOutcome::touched) {
        // Nothing was done anywhere: the plan is not consumed.
        let _ = std::fs::remove_file(&applied);
    } else {
        let state = if code == 0 && whole { ApplyState::Completed } else { ApplyState::Partial };
        write_record(&applied, &record(state, summary.clone()))?;
        let pending = controller.action(ActionState::Pending, &loaded.id);
        if Path::new(&pending).exists() && state == ApplyState::Completed {
            let done = controller.action(ActionState::Completed, &loaded.id);
            write_record(&done, &record(state, summary.clone()))?;
            let _ = std::fs::remove_file(pending);
        }
    }
    let io = |e| Error::Write { path: "<stdout>".into(), source: e };
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
        if code != 0 {
            writeln!(
                out,
                "not everything was applied; after fixing the cause: homelab apply --resume {}",
                args.approved.display()
            )
            .map_err(io)?;
        }
    } else {
        writeln!(out, "{}", serde_json::json!({"event": "summary", "plan": loaded.id, "exit_code": code, "nodes": summary})).map_err(io)?;
    }
    Ok(code)
}

/// `homelab unlock --node N`: shows the holder, then removes the lock. Explicit on purpose:
/// a lock is never broken silently.
pub fn unlock(
    repo: &Path,
    lab: &Homelab,
    target: &crate::cli::Target,
    out: &mut dyn Write,
) -> Result<u8, Error> {
    let transport = crate::cli::transport_for(repo, target)?;
    let io = |e| Error::Write { path: "<stdout>".into(), source: e };
    for n in crate::cli::nodes_for(lab, target)? {
        let node = &lab.nodes[&n];
        let exec = transport
            .connect(node)
            .map_err(|e| Error::Unsupported { message: format!("{n}: {e}") })?;
        let holder = apply::remote::break_lock(exec.as_ref(), &Layout::new(exec.root()))
            .map_err(|e| Error::Unsupported { message: format!("{n}: {e}") })?;
        writeln!(
            out,
            "{n}: removed the lock held by {}",
            holder.split_whitespace().collect::<Vec<_>>().join(" ")
        )
        .map_err(io)?;
    }
    Ok(0)
}
