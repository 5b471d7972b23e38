//! `homelab apply plans/<id>.approved`: pre-flight (every refusal, nothing changed), then
//! execution per node, then the record of what happened.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::apply::{self, NodeOutcome, Options};
use crate::approve::policy::{self, Preflight};
use crate::error::{Error, Report};
use crate::model::Homelab;
use crate::node::journal::Stage;
use crate::node::ActionState;

use super::Selection;

pub struct ApplyArgs<'a> {
    pub approved: &'a Path,
    pub target: &'a super::args::Target,
    pub services: &'a [String],
    pub stage: Option<Stage>,
    /// `--stage diagnose`: inspect only.
    pub diagnose: bool,
    pub resume: bool,
    pub lock_wait: u64,
    pub parallel: usize,
    pub json: bool,
}

pub fn run(repo: &Path, args: &ApplyArgs<'_>, out: &mut dyn Write) -> Result<Report, Error> {
    let lab = &super::load(repo)?;
    let sel = Selection::of(repo, lab, args.target)?;
    let records = &sel.records;
    let signers = policy::signers(&lab.allowed_signers)?;
    let kind = match (args.diagnose, args.resume) {
        (true, _) => Preflight::Inspect,
        (false, true) => Preflight::Resume,
        (false, false) => Preflight::Fresh,
    };
    let loaded = policy::preflight(lab, &signers, args.approved, records, kind, SystemTime::now())?;
    let provenance = crate::review::verify(repo, lab, &loaded)?;
    eprintln!("pre-flight passed for plan {}: {}", loaded.id, loaded.plan.summary());
    eprintln!("review: {}", provenance.describe());
    let transport = &sel.transport;
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
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".to_owned());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let opts = Options {
        nodes,
        services,
        stage: args.stage,
        resume: args.resume,
        lock_wait: Duration::from_secs(args.lock_wait),
        parallel: args.parallel,
        holder: format!("{user}@{host} pid {}", std::process::id()),
        diagnose: args.diagnose,
    };
    // The controller's record: from here on, a plain second apply of this plan is a replay.
    let consumed = records.applied(&loaded.id);
    let first = !consumed.exists();
    let record = |state: &str, outcomes: &serde_json::Value| {
        let v = serde_json::json!({"plan": loaded.id, "state": state, "updated": super::now_rfc3339(), "by": opts.holder, "nodes": outcomes});
        format!("{}\n", serde_json::to_string_pretty(&v).expect("json"))
    };
    // Diagnosing changes nothing, so it leaves no record either.
    let first = first && !args.diagnose;
    if first {
        super::write(&consumed, record("started", &serde_json::json!({})).as_bytes())?;
    }
    let outcomes = if args.json {
        let sink = apply::sink::Json::new(std::io::stdout());
        apply::execute(lab, &loaded.id, &loaded.plan, transport.as_ref(), &opts, &sink)
    } else if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        let sink = apply::sink::Progress::new();
        apply::execute(lab, &loaded.id, &loaded.plan, transport.as_ref(), &opts, &sink)
    } else {
        let sink = apply::sink::Plain::new(std::io::stderr());
        apply::execute(lab, &loaded.id, &loaded.plan, transport.as_ref(), &opts, &sink)
    };
    let summary: serde_json::Map<String, serde_json::Value> = outcomes
        .iter()
        .map(|(n, o)| {
            (n.to_string(), serde_json::json!({"outcome": o.label(), "detail": o.detail()}))
        })
        .collect();
    let summary = serde_json::Value::Object(summary);
    let code = apply::exit_code(&outcomes);
    let whole = opts.nodes.is_none() && opts.services.is_none() && opts.stage.is_none();
    if args.diagnose {
        // Nothing to record.
    } else if first && !outcomes.values().any(NodeOutcome::touched) {
        // Nothing was done anywhere: the plan is not consumed.
        let _ = std::fs::remove_file(&consumed);
    } else {
        let state = if code == 0 && whole { "completed" } else { "partial" };
        super::write(&consumed, record(state, &summary).as_bytes())?;
        let pending = records.action(ActionState::Pending, &loaded.id);
        if pending.exists() && state == "completed" {
            let done = records.action(ActionState::Completed, &loaded.id);
            super::write(&done, record(state, &summary).as_bytes())?;
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
    Ok(match code {
        0 => Report::Success,
        3 => Report::Refused,
        _ => Report::Failed,
    })
}

/// `homelab unlock --node N`: shows the holder, then removes the lock. Explicit on purpose:
/// a lock is never broken silently.
pub fn unlock(
    repo: &Path,
    target: &super::args::Target,
    out: &mut dyn Write,
) -> Result<Report, Error> {
    let lab: &Homelab = &super::load(repo)?;
    let sel = Selection::of(repo, lab, target)?;
    let io = Error::stdout;
    for n in sel.nodes {
        let node = &lab.nodes[&n];
        let exec = sel
            .transport
            .connect(node)
            .map_err(|e| Error::Unsupported { message: format!("{n}: {e}") })?;
        let lock = format!("{}/state/lock", exec.root());
        let holder = apply::remote::break_lock(exec.as_ref(), &lock)
            .map_err(|e| Error::Unsupported { message: format!("{n}: {e}") })?;
        writeln!(
            out,
            "{n}: removed the lock held by {}",
            holder.split_whitespace().collect::<Vec<_>>().join(" ")
        )
        .map_err(io)?;
    }
    Ok(Report::Success)
}
