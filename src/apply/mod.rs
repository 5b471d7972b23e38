//! Executing an approved plan, per node, over a transport: the guide's staged pipeline
//! prepare → validate → deploy → verify → (diagnose, roll back on failure) → complete.
//!
//! - Nodes run in parallel (a concurrency limit); services within a node in the plan's
//!   dependency order; a dependency on another node waits for that node's service.
//! - Each node is locked while applied; every stage is journaled on the node before the next
//!   starts, so a dropped link or a killed apply is resumed with `--resume`.
//! - A service is switched by one atomic symlink rename; a failed deploy or healthcheck
//!   switches back to the previous release and brings it up again.
//! - It never re-renders: it uploads exactly the bytes of the reviewed plan.

pub mod remote;
pub mod sink;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::node::journal::{Entry, Journal, Stage};
use remote::StepError;
pub use sink::{Event, Sink};

use crate::model::{Homelab, Instance, Node, NodeName, ServiceName};
use crate::node::manifest::{Manifest, MANIFEST};
use crate::observe::{self, NodeStatus};
use crate::plan::{Action, Change, Plan, PlannedStatus};
use crate::transport::{NodeExec, Transport};

/// What the operator asked for beyond the plan itself.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub nodes: Option<Vec<NodeName>>,
    pub services: Option<Vec<ServiceName>>,
    /// Run only this stage (for services whose journal is right before it).
    pub stage: Option<Stage>,
    pub resume: bool,
    pub lock_wait: Duration,
    pub parallel: usize,
    /// Who applies, recorded in the lock (`user@host pid`).
    pub holder: String,
    /// `--stage diagnose`: status and logs of the selected services, nothing changed.
    pub diagnose: bool,
}

/// How a node's apply ended. The exit code comes from these (see `exit_code`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeOutcome {
    /// Every selected service is at its new version.
    Applied,
    /// The plan changes nothing on this node (for the selection).
    NoChanges,
    /// `--stage`: every selected service went through that stage; the rest is pending.
    Staged { stage: String },
    /// Applied on this node by an earlier run (resume found it complete).
    AlreadyApplied,
    /// Some services were rolled back to their previous version.
    RolledBack { services: Vec<String> },
    /// Some services failed or were skipped; the rest is applied. `--resume` continues.
    Partial { reason: String },
    /// The node changed since the plan: nothing was done on it.
    Stale { what: String },
    /// The plan was already applied on this node (replay), or the node is locked.
    Refused { reason: String },
    /// The link dropped or the node never answered; the journal says where it stopped.
    Unreachable { reason: String },
}

impl NodeOutcome {
    pub fn label(&self) -> &'static str {
        match self {
            NodeOutcome::Applied => "applied",
            NodeOutcome::NoChanges => "no changes",
            NodeOutcome::Staged { .. } => "stage done",
            NodeOutcome::AlreadyApplied => "applied earlier",
            NodeOutcome::RolledBack { .. } => "rolled back",
            NodeOutcome::Partial { .. } => "partial",
            NodeOutcome::Stale { .. } => "stale",
            NodeOutcome::Refused { .. } => "refused",
            NodeOutcome::Unreachable { .. } => "unreachable",
        }
    }

    pub fn detail(&self) -> String {
        match self {
            NodeOutcome::Applied | NodeOutcome::AlreadyApplied | NodeOutcome::NoChanges => {
                String::new()
            }
            NodeOutcome::RolledBack { services } => format!("rolled back: {}", services.join(", ")),
            NodeOutcome::Partial { reason }
            | NodeOutcome::Refused { reason }
            | NodeOutcome::Unreachable { reason } => reason.clone(),
            NodeOutcome::Stale { what } => what.clone(),
            NodeOutcome::Staged { stage } if stage == "diagnose" => {
                "diagnosed; nothing changed".to_owned()
            }
            NodeOutcome::Staged { stage } => {
                format!("through `{stage}`; the later stages are pending (`--resume`)")
            }
        }
    }

    /// Whether the node may have been changed by this run.
    pub fn touched(&self) -> bool {
        !matches!(
            self,
            NodeOutcome::Stale { .. }
                | NodeOutcome::Refused { .. }
                | NodeOutcome::AlreadyApplied
                | NodeOutcome::NoChanges
        )
    }
}

/// 0 only when every node applied; 3 when something was refused (stale, replay, locked) and
/// nothing failed; 1 otherwise. Never success when anything was rolled back or skipped.
pub fn exit_code(outcomes: &BTreeMap<NodeName, NodeOutcome>) -> u8 {
    let ok = |o: &NodeOutcome| {
        matches!(
            o,
            NodeOutcome::Applied
                | NodeOutcome::AlreadyApplied
                | NodeOutcome::NoChanges
                | NodeOutcome::Staged { .. }
        )
    };
    if outcomes.values().all(ok) {
        0
    } else if outcomes
        .values()
        .all(|o| ok(o) || matches!(o, NodeOutcome::Stale { .. } | NodeOutcome::Refused { .. }))
    {
        3
    } else {
        1
    }
}

/// The stage as `--stage` names it.
fn stage_name(s: Stage) -> &'static str {
    match s {
        Stage::Pending => "pending",
        Stage::Prepared => "prepare",
        Stage::Validated => "validate",
        Stage::Deploying | Stage::Deployed => "deploy",
        Stage::Verified => "verify",
        Stage::Completed => "complete",
        Stage::Failed => "failed",
        Stage::RolledBack => "rolled back",
        Stage::Skipped => "skipped",
    }
}

/// Whether the apply that holds a lock (`"holder": "user@host pid N"`) is gone: it ran on this
/// host and its process no longer exists. A holder on another host is never presumed gone.
fn holder_gone(lock: &str, me: &str) -> bool {
    let field = |s: &str| -> Option<(String, u32)> {
        let (who, pid) = s.rsplit_once(" pid ")?;
        let host = who.rsplit_once('@')?.1.to_owned();
        let pid: String = pid.chars().take_while(char::is_ascii_digit).collect();
        Some((host, pid.parse().ok()?))
    };
    let holder =
        lock.split("\"holder\": \"").nth(1).and_then(|r| r.split('"').next()).and_then(field);
    let mine = field(me);
    match (holder, mine) {
        (Some((host, pid)), Some((my_host, _))) => {
            host == my_host && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        }
        _ => false,
    }
}

/// Cross-node waiting: each service instance's final state, published as nodes progress.
#[derive(Default)]
struct Board {
    state: Mutex<BTreeMap<Instance, bool>>,
    changed: Condvar,
}

impl Board {
    fn publish(&self, inst: &Instance, ok: bool) {
        let mut s = self.state.lock().expect("board");
        s.insert(inst.clone(), ok);
        self.changed.notify_all();
    }

    /// Waits until `inst` is final; `true` when it is at its new version.
    fn wait(&self, inst: &Instance) -> bool {
        let mut s = self.state.lock().expect("board");
        loop {
            if let Some(ok) = s.get(inst) {
                return *ok;
            }
            s = self.changed.wait(s).expect("board");
        }
    }
}

/// A counting semaphore for the node concurrency limit.
struct Slots {
    free: Mutex<usize>,
    cv: Condvar,
}

impl Slots {
    fn take(&self) {
        let mut f = self.free.lock().expect("slots");
        while *f == 0 {
            f = self.cv.wait(f).expect("slots");
        }
        *f -= 1;
    }

    fn give(&self) {
        *self.free.lock().expect("slots") += 1;
        self.cv.notify_one();
    }
}

/// Applies `plan` (already through pre-flight) on the selected nodes.
pub fn execute(
    lab: &Homelab,
    id: &str,
    plan: &Plan,
    transport: &dyn Transport,
    opts: &Options,
    sink: &dyn Sink,
) -> BTreeMap<NodeName, NodeOutcome> {
    let selected: Vec<&crate::plan::NodePlan> = plan
        .nodes
        .iter()
        .filter(|n| opts.nodes.as_ref().is_none_or(|o| o.contains(&n.node)))
        .collect();
    let board = Board::default();
    // Instances that this run will settle; everything else is treated as satisfied.
    let mut in_run: BTreeSet<Instance> = BTreeSet::new();
    for n in &selected {
        for c in &n.changes {
            if c.action != Action::NoOp
                && opts.services.as_ref().is_none_or(|s| s.contains(&c.instance.service))
            {
                in_run.insert(c.instance.clone());
            }
        }
    }
    let slots = Slots { free: Mutex::new(opts.parallel.max(1)), cv: Condvar::new() };
    let mut outcomes = BTreeMap::new();
    std::thread::scope(|s| {
        let handles: Vec<_> = selected
            .iter()
            .map(|np| {
                let (board, slots, in_run) = (&board, &slots, &in_run);
                s.spawn(move || {
                    slots.take();
                    let outcome = match lab.nodes.get(&np.node) {
                        None => NodeOutcome::Refused {
                            reason: "the node is not in the inventory any more".to_owned(),
                        },
                        Some(node) => {
                            NodeRun { id, node, np, opts, sink, board, in_run }.run(transport)
                        }
                    };
                    // Whatever happened, nothing on this node will settle later in this run; a
                    // node applied by an earlier run has every service at its new version.
                    let done = outcome == NodeOutcome::AlreadyApplied;
                    for c in &np.changes {
                        if in_run.contains(&c.instance)
                            && !board.state.lock().expect("board").contains_key(&c.instance)
                        {
                            board.publish(&c.instance, done);
                        }
                    }
                    slots.give();
                    sink.event(&Event::NodeDone {
                        node: np.node.clone(),
                        outcome: outcome.clone(),
                    });
                    (np.node.clone(), outcome)
                })
            })
            .collect();
        for h in handles {
            if let Ok((n, o)) = h.join() {
                outcomes.insert(n, o);
            }
        }
    });
    outcomes
}

struct NodeRun<'a> {
    id: &'a str,
    node: &'a Node,
    np: &'a crate::plan::NodePlan,
    opts: &'a Options,
    sink: &'a dyn Sink,
    board: &'a Board,
    in_run: &'a BTreeSet<Instance>,
}

/// Paths on the node, all under its runtime root.
struct Paths {
    root: String,
}

impl Paths {
    fn deploy(&self, id: &str) -> String {
        format!("{}/state/deploy/{id}", self.root)
    }
    fn journal(&self, id: &str) -> String {
        format!("{}/journal.json", self.deploy(id))
    }
    fn lock(&self) -> String {
        format!("{}/state/lock", self.root)
    }
    fn consumed(&self, id: &str) -> String {
        format!("{}/state/consumed/{id}.json", self.root)
    }
    fn release(&self, svc: &str, id: &str) -> String {
        format!("{}/state/releases/{svc}/{id}", self.root)
    }
    fn staging(&self, svc: &str, id: &str) -> String {
        format!("{}/state/releases/{svc}/.staging-{id}", self.root)
    }
    fn live(&self, svc: &str) -> String {
        format!("{}/state/services/{svc}", self.root)
    }
    fn env_file(&self, svc: &str) -> String {
        format!("{}/config/{svc}/.env", self.root)
    }
    fn incident_log(&self, svc: &str, id: &str) -> String {
        format!("{}/logs/{svc}/incident-{id}.log", self.root)
    }
    fn events(&self, node: &str) -> String {
        let day = &crate::command::now_rfc3339()[..10];
        format!("{}/events/{day}/{node}/events.jsonl", self.root)
    }
}

impl NodeRun<'_> {
    fn say(&self, service: Option<&ServiceName>, stage: &str, message: String) {
        tracing::info!(node = %self.node.id, service = service.map(|s| s.as_str()).unwrap_or("-"), stage, %message);
        self.sink.event(&Event::Step {
            node: self.node.id.clone(),
            service: service.cloned(),
            stage: stage.to_owned(),
            message,
        });
    }

    fn run(&self, transport: &dyn Transport) -> NodeOutcome {
        if self.opts.diagnose {
            return self.diagnose(transport);
        }
        if let PlannedStatus::Unreachable { reason } = &self.np.status {
            return NodeOutcome::Unreachable {
                reason: format!("unreachable when planned ({reason}): plan again"),
            };
        }
        let changes: Vec<&Change> = self
            .np
            .changes
            .iter()
            .filter(|c| {
                c.action != Action::NoOp
                    && self.opts.services.as_ref().is_none_or(|s| s.contains(&c.instance.service))
            })
            .collect();
        if changes.is_empty() {
            self.say(None, "complete", "nothing to do".to_owned());
            return NodeOutcome::NoChanges;
        }
        self.say(None, "connect", format!("{} change(s)", changes.len()));
        let exec = match transport.connect(self.node) {
            Ok(e) => e,
            Err(e) => return NodeOutcome::Unreachable { reason: e.to_string() },
        };
        let exec = exec.as_ref();
        let paths = Paths { root: exec.root().to_owned() };
        // Read-only checks first, so a stale or replayed node is refused without a single write;
        // they are repeated under the lock below.
        if let Err(outcome) = self.check(exec, false) {
            return outcome;
        }
        match self.lock(exec, &paths) {
            Ok(()) => {}
            Err(outcome) => return outcome,
        }
        let outcome = self.locked(exec, &paths, &changes);
        // Release the lock unless the link is gone (then `--resume` takes it over).
        if !matches!(outcome, NodeOutcome::Unreachable { .. }) {
            // Only our own lock: the token names this process, not just the plan.
            let token = format!("\"holder\": \"{}\"", self.opts.holder);
            let _ = remote::unlock(exec, &paths.lock(), &token);
        }
        outcome
    }

    /// The guide's `--stage diagnose`: for each selected service of the node, its containers'
    /// status, and recent logs kept in `<root>/logs/<svc>/` on the node (they may hold secrets).
    fn diagnose(&self, transport: &dyn Transport) -> NodeOutcome {
        let exec = match transport.connect(self.node) {
            Ok(e) => e,
            Err(e) => return NodeOutcome::Unreachable { reason: e.to_string() },
        };
        let exec = exec.as_ref();
        let paths = Paths { root: exec.root().to_owned() };
        for c in
            self.np.changes.iter().filter(|c| {
                self.opts.services.as_ref().is_none_or(|s| s.contains(&c.instance.service))
            })
        {
            let svc = c.instance.service.as_str();
            let log = format!("{}/logs/{svc}/diagnose-{}.log", paths.root, self.id);
            match remote::diagnose(exec, &paths.root, svc, &log) {
                Ok(status) => {
                    let status = if status.is_empty() {
                        "no containers".to_owned()
                    } else {
                        status.replace('\n', "; ")
                    };
                    self.say(
                        Some(&c.instance.service),
                        "diagnose",
                        format!("{status} (logs: {log})"),
                    );
                }
                Err(e) => return self.step_error(e),
            }
        }
        NodeOutcome::Staged { stage: "diagnose".to_owned() }
    }

    fn lock_token(&self) -> String {
        format!("\"plan\": \"{}\"", self.id)
    }

    fn lock(&self, exec: &dyn NodeExec, paths: &Paths) -> Result<(), NodeOutcome> {
        let holder = serde_json::json!({
            "holder": self.opts.holder,
            "plan": self.id,
            "since": crate::command::now_rfc3339(),
        });
        let holder = serde_json::to_string_pretty(&holder).expect("json");
        let deadline = Instant::now() + self.opts.lock_wait;
        loop {
            match remote::lock(exec, &paths.lock(), holder.as_bytes()) {
                Ok(remote::Lock::Acquired) => return Ok(()),
                Ok(remote::Lock::Held(by)) => {
                    let ours = by.contains(&self.lock_token());
                    if ours && self.opts.resume && holder_gone(&by, &self.opts.holder) {
                        // Our own plan's lock, left by a run whose link dropped or that was killed.
                        self.say(
                            None,
                            "lock",
                            "taking over the lock of the interrupted run of this plan".to_owned(),
                        );
                        if let Err(e) = remote::break_lock(exec, &paths.lock()) {
                            return Err(self.step_error(e));
                        }
                        continue;
                    }
                    if Instant::now() >= deadline {
                        return Err(self.locked_by(&by));
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => return Err(self.step_error(e)),
            }
        }
    }

    fn locked_by(&self, holder: &str) -> NodeOutcome {
        let by = holder.split_whitespace().collect::<Vec<_>>().join(" ");
        NodeOutcome::Refused {
            reason: format!(
                "the node is locked by {by}; wait with `--lock-wait SECONDS`, or if that holder is gone, \
                 `homelab unlock --node {}` (it shows the holder first)",
                self.node.id
            ),
        }
    }

    fn step_error(&self, e: StepError) -> NodeOutcome {
        match e {
            StepError::Link(s) => NodeOutcome::Unreachable { reason: s },
            StepError::Failed(s) => NodeOutcome::Partial { reason: s },
        }
    }

    /// Where this node stands: `Ok(true)` when an apply of this plan already started here
    /// (resume), `Ok(false)` for a fresh start; `Err` refuses the node (stale, replay, ...).
    fn check(&self, exec: &dyn NodeExec, under_lock: bool) -> Result<bool, NodeOutcome> {
        let actual = observe::refresh(self.node, exec);
        let state = match actual.status {
            NodeStatus::Unreachable { reason } => return Err(NodeOutcome::Unreachable { reason }),
            NodeStatus::Reachable(s) => s,
        };
        if let Some(holder) = &state.lock {
            let ours = holder.contains(&self.lock_token());
            let taking_over = ours && self.opts.resume;
            if !taking_over && !under_lock {
                if self.opts.lock_wait.is_zero() {
                    return Err(self.locked_by(holder));
                }
                // Wait for the lock; every check runs again once it is ours.
                return Ok(false);
            }
        }
        if state.consumed.contains(self.id) {
            return Err(if self.opts.resume {
                NodeOutcome::AlreadyApplied
            } else {
                NodeOutcome::Refused {
                    reason: format!(
                        "plan `{}` was already applied on this node (replay refused)",
                        self.id
                    ),
                }
            });
        }
        if state.journals.contains(self.id) {
            if !self.opts.resume {
                return Err(NodeOutcome::Refused {
                    reason: format!("an apply of plan `{}` already started on this node: continue it with `--resume`", self.id),
                });
            }
            return Ok(true);
        }
        // The staleness check, right before the first prepare on this node.
        let PlannedStatus::Reachable { fingerprint, actual: lines } = &self.np.status else {
            return Err(NodeOutcome::Unreachable {
                reason: "unreachable when planned: plan again".to_owned(),
            });
        };
        if state.fingerprint() != *fingerprint {
            let now: BTreeSet<String> = state.fingerprint_lines().into_iter().collect();
            let then: BTreeSet<&String> = lines.iter().collect();
            let mut what: Vec<String> =
                then.iter().filter(|l| !now.contains(**l)).map(|l| format!("was: {l}")).collect();
            what.extend(now.iter().filter(|l| !then.contains(l)).map(|l| format!("now: {l}")));
            return Err(NodeOutcome::Stale {
                what: format!(
                    "the node changed since the plan was made ({}); plan again",
                    what.join("; ")
                ),
            });
        }
        Ok(false)
    }

    fn locked(&self, exec: &dyn NodeExec, paths: &Paths, changes: &[&Change]) -> NodeOutcome {
        let resuming = match self.check(exec, true) {
            Ok(r) => r,
            Err(outcome) => return outcome,
        };
        let mut journal = if resuming {
            match remote::read_file(exec, &paths.journal(self.id)) {
                Ok(Some(bytes)) => match serde_json::from_slice::<Journal>(&bytes) {
                    Ok(j) => {
                        self.say(
                            None,
                            "resume",
                            "continuing from the journal on the node".to_owned(),
                        );
                        j
                    }
                    Err(e) => {
                        return NodeOutcome::Partial {
                            reason: format!("the journal on the node is unreadable: {e}"),
                        }
                    }
                },
                Ok(None) => {
                    Journal::new(self.id, self.node.id.as_str(), std::time::SystemTime::now())
                }
                Err(e) => return self.step_error(e),
            }
        } else {
            Journal::new(self.id, self.node.id.as_str(), std::time::SystemTime::now())
        };
        if resuming {
            // A service skipped for a dependency, or stopped before anything live changed
            // (prepare, validate), is tried again; a rolled-back one needs a new plan.
            for e in journal.services.values_mut() {
                if matches!(e.stage, Stage::Skipped | Stage::Failed) {
                    e.stage = Stage::Pending;
                    e.error = None;
                }
            }
        }
        for c in changes {
            journal.services.entry(c.instance.service.to_string()).or_insert(Entry {
                action: c.action.to_string(),
                stage: Stage::Pending,
                previous: None,
                error: None,
            });
        }
        if let Err(e) = self.save(exec, paths, &mut journal) {
            return self.step_error(e);
        }
        let mut rolled_back = Vec::new();
        let mut problems = Vec::new();
        for c in changes {
            let svc = c.instance.service.as_str();
            let entry = journal.services[svc].clone();
            if entry.stage.is_final() {
                self.board.publish(&c.instance, entry.stage == Stage::Completed);
                continue;
            }
            // Dependencies first, on this node or another.
            let blocked: Vec<&Instance> = c
                .after
                .iter()
                .filter(|d| self.in_run.contains(*d) && !self.board.wait(d))
                .collect();
            if !blocked.is_empty() {
                let names: Vec<String> = blocked.iter().map(ToString::to_string).collect();
                let reason = format!("skipped: {} did not reach its new version", names.join(", "));
                self.say(Some(&c.instance.service), "skip", reason.clone());
                if let Some(e) = journal.services.get_mut(svc) {
                    e.stage = Stage::Skipped;
                    e.error = Some(reason.clone());
                }
                if let Err(e) = self.save(exec, paths, &mut journal) {
                    return self.step_error(e);
                }
                problems.push(format!("{svc}: {reason}"));
                self.board.publish(&c.instance, false);
                continue;
            }
            match self.service(exec, paths, c, &mut journal) {
                Ok(Stage::Completed) => self.board.publish(&c.instance, true),
                Ok(stage) => {
                    let e = journal.services[svc].error.clone().unwrap_or_default();
                    if stage == Stage::RolledBack {
                        rolled_back.push(svc.to_owned());
                    } else if let Some(only) = self.opts.stage {
                        if stage < only {
                            problems.push(format!(
                                "{svc}: at `{}`, the stages before `{}` come first",
                                stage_name(stage),
                                stage_name(only)
                            ));
                        } else if stage != only {
                            problems.push(format!("{svc}: {e}"));
                        }
                    } else {
                        problems.push(format!("{svc}: {e}"));
                    }
                    // `--stage` stops a service on purpose: it is not final, dependents wait for a
                    // later run.
                    self.board.publish(&c.instance, false);
                }
                Err(StepError::Link(reason)) => {
                    self.say(Some(&c.instance.service), "link", format!("lost the node: {reason}"));
                    return NodeOutcome::Unreachable { reason: format!("{reason}; the journal on the node says where it stopped: `homelab apply --resume`") };
                }
                Err(StepError::Failed(reason)) => return NodeOutcome::Partial { reason },
            }
        }
        let finished = journal.services.values().all(|e| e.stage.is_final());
        let all_done = journal.services.values().all(|e| e.stage == Stage::Completed);
        journal.finished = finished;
        if let Err(e) = self.save(exec, paths, &mut journal) {
            return self.step_error(e);
        }
        if all_done && self.opts.services.is_none() && self.opts.stage.is_none() {
            let record = serde_json::json!({"plan": self.id, "node": self.node.id, "applied_at": crate::command::now_rfc3339(), "by": self.opts.holder});
            let bytes = format!("{}\n", serde_json::to_string_pretty(&record).expect("json"));
            if let Err(e) =
                remote::write_durable(exec, &paths.consumed(self.id), "0644", bytes.as_bytes())
            {
                return self.step_error(e);
            }
        }
        if !rolled_back.is_empty() {
            NodeOutcome::RolledBack { services: rolled_back }
        } else if !problems.is_empty() {
            NodeOutcome::Partial { reason: problems.join("; ") }
        } else if let (false, Some(only)) = (all_done, self.opts.stage) {
            NodeOutcome::Staged { stage: stage_name(only).to_owned() }
        } else if !all_done {
            NodeOutcome::Partial { reason: "not every service finished".to_owned() }
        } else {
            NodeOutcome::Applied
        }
    }

    fn save(
        &self,
        exec: &dyn NodeExec,
        paths: &Paths,
        journal: &mut Journal,
    ) -> Result<(), StepError> {
        journal.updated = crate::command::now_rfc3339();
        remote::write_durable(exec, &paths.journal(self.id), "0644", &journal.to_bytes())
    }

    fn set(
        &self,
        exec: &dyn NodeExec,
        paths: &Paths,
        journal: &mut Journal,
        svc: &str,
        stage: Stage,
        error: Option<String>,
    ) -> Result<(), StepError> {
        if let Some(e) = journal.services.get_mut(svc) {
            e.stage = stage;
            e.error = error;
        }
        self.save(exec, paths, journal)
    }

    fn event(
        &self,
        exec: &dyn NodeExec,
        paths: &Paths,
        kind: &str,
        severity: &str,
        svc: &str,
        data: serde_json::Value,
    ) {
        let line = crate::events::line(
            kind,
            severity,
            "homelab apply",
            svc,
            self.id,
            self.node.id.as_str(),
            data,
        );
        // An event that cannot be written never stops a deploy; the journal is the record.
        let _ = remote::append_event(exec, &paths.events(self.node.id.as_str()), line.as_bytes());
    }

    /// Runs the stages of one service from where its journal stands. `Ok` carries the stage it
    /// ended in; `Err(Link)` means the node was lost mid-way (resume continues).
    fn service(
        &self,
        exec: &dyn NodeExec,
        paths: &Paths,
        c: &Change,
        journal: &mut Journal,
    ) -> Result<Stage, StepError> {
        let svc = c.instance.service.as_str();
        let only = self.opts.stage;
        let runs = |s: Stage| only.is_none_or(|o| o == s);
        let mut stage = journal.services[svc].stage;
        let release = paths.release(svc, self.id);
        let say = |st: &str, m: String| self.say(Some(&c.instance.service), st, m);

        if c.action == Action::Delete {
            if !runs(Stage::Deployed) {
                return Ok(stage);
            }
            say("deploy", "docker compose down".to_owned());
            self.event(
                exec,
                paths,
                "deployment_started",
                "info",
                svc,
                serde_json::json!({"action": "delete"}),
            );
            remote::down_and_unlink(exec, &paths.root, svc)?;
            return self.complete(
                exec,
                paths,
                journal,
                c,
                serde_json::json!({"action": "delete"}),
                "removed",
            );
        }
        let Some(rt) = &c.runtime else {
            self.set(
                exec,
                paths,
                journal,
                svc,
                Stage::Failed,
                Some("the plan lacks the healthcheck and secrets of this service".into()),
            )?;
            return Ok(Stage::Failed);
        };

        if stage == Stage::Pending {
            if !runs(Stage::Prepared) {
                return Ok(stage);
            }
            say("prepare", format!("uploading {} artifact(s)", c.artifacts.len()));
            self.event(
                exec,
                paths,
                "deployment_started",
                "info",
                svc,
                serde_json::json!({"action": c.action.as_str()}),
            );
            let staging = paths.staging(svc, self.id);
            let mut hashes = Vec::new();
            for a in &c.artifacts {
                remote::write_durable(
                    exec,
                    &format!("{staging}/{}", a.name),
                    &format!("{:04o}", a.mode),
                    a.text.as_bytes(),
                )?;
                hashes.push((a.name.clone(), a.sha256.clone()));
            }
            let manifest = Manifest::of(
                svc,
                self.node.id.as_str(),
                c.artifacts.iter().map(|a| (a.name.as_str(), a.text.as_bytes(), a.mode)),
            );
            let mbytes = manifest.to_bytes();
            remote::write_durable(exec, &format!("{staging}/{MANIFEST}"), "0644", &mbytes)?;
            hashes.push((MANIFEST.to_owned(), crate::digest::sha256_hex(&mbytes)));
            if let Err(e) = remote::seal_release(exec, &staging, &release, &hashes) {
                return self.fail_early(exec, paths, journal, svc, e);
            }
            let previous = remote::readlink(exec, &paths.live(svc))?;
            if let Some(entry) = journal.services.get_mut(svc) {
                entry.previous = previous.filter(|p| *p != release);
            }
            self.set(exec, paths, journal, svc, Stage::Prepared, None)?;
            stage = Stage::Prepared;
        }
        if stage == Stage::Prepared {
            if !runs(Stage::Validated) {
                return Ok(stage);
            }
            say("validate", "docker compose config, secrets present".to_owned());
            if let Err(e) = remote::validate(exec, &release, svc, &paths.env_file(svc), &rt.secrets)
            {
                return self.fail_early(exec, paths, journal, svc, e);
            }
            self.set(exec, paths, journal, svc, Stage::Validated, None)?;
            stage = Stage::Validated;
        }
        if stage == Stage::Validated || stage == Stage::Deploying {
            if !runs(Stage::Deployed) {
                return Ok(stage);
            }
            say("deploy", "switching to the new release, docker compose up -d".to_owned());
            self.set(exec, paths, journal, svc, Stage::Deploying, None)?;
            match remote::switch_and_up(exec, &paths.root, svc, &release) {
                Ok(()) => {}
                Err(StepError::Failed(e)) => return self.roll_back(exec, paths, journal, c, e),
                Err(link) => return Err(link),
            }
            self.set(exec, paths, journal, svc, Stage::Deployed, None)?;
            stage = Stage::Deployed;
        }
        if stage == Stage::Deployed {
            if !runs(Stage::Verified) {
                return Ok(stage);
            }
            let h = rt.healthcheck;
            say(
                "verify",
                format!(
                    "healthcheck: {} tries, every {:?}, timeout {:?}",
                    h.retries, h.interval, h.timeout
                ),
            );
            std::thread::sleep(h.start_period);
            let mut healthy = false;
            for attempt in 1..=h.retries {
                if remote::healthcheck(exec, &paths.root, self.node.id.as_str(), svc, h.timeout)? {
                    healthy = true;
                    break;
                }
                self.event(
                    exec,
                    paths,
                    "healthcheck_failed",
                    "warning",
                    svc,
                    serde_json::json!({"attempt": attempt, "of": h.retries}),
                );
                if attempt < h.retries {
                    std::thread::sleep(h.interval);
                }
            }
            if !healthy {
                return self.roll_back(
                    exec,
                    paths,
                    journal,
                    c,
                    format!("healthcheck failed {} time(s)", h.retries),
                );
            }
            self.set(exec, paths, journal, svc, Stage::Verified, None)?;
            stage = Stage::Verified;
        }
        if stage == Stage::Verified {
            if !runs(Stage::Completed) {
                return Ok(stage);
            }
            let data = serde_json::json!({"release": release});
            stage = self.complete(exec, paths, journal, c, data, "at the new version")?;
        }
        Ok(stage)
    }

    /// The last stage of a service: journal, event, progress.
    fn complete(
        &self,
        exec: &dyn NodeExec,
        paths: &Paths,
        journal: &mut Journal,
        c: &Change,
        data: serde_json::Value,
        message: &str,
    ) -> Result<Stage, StepError> {
        let svc = c.instance.service.as_str();
        self.set(exec, paths, journal, svc, Stage::Completed, None)?;
        self.event(exec, paths, "deployment_completed", "info", svc, data);
        self.say(Some(&c.instance.service), "complete", message.to_owned());
        Ok(Stage::Completed)
    }

    /// Prepare or validate failed: nothing live changed.
    fn fail_early(
        &self,
        exec: &dyn NodeExec,
        paths: &Paths,
        journal: &mut Journal,
        svc: &str,
        e: StepError,
    ) -> Result<Stage, StepError> {
        let StepError::Failed(reason) = e else { return Err(e) };
        self.say(ServiceName::parse(svc).ok().as_ref(), "failed", reason.clone());
        self.set(exec, paths, journal, svc, Stage::Failed, Some(reason.clone()))?;
        self.event(
            exec,
            paths,
            "deployment_failed",
            "error",
            svc,
            serde_json::json!({"reason": reason}),
        );
        Ok(Stage::Failed)
    }

    /// Diagnose (status, logs kept on the node, an incident event), then switch back to the
    /// previous release and bring it up; a first deploy is taken down instead.
    fn roll_back(
        &self,
        exec: &dyn NodeExec,
        paths: &Paths,
        journal: &mut Journal,
        c: &Change,
        reason: String,
    ) -> Result<Stage, StepError> {
        let svc = c.instance.service.as_str();
        let say = |st: &str, m: String| self.say(Some(&c.instance.service), st, m);
        say("diagnose", reason.clone());
        let log = paths.incident_log(svc, self.id);
        let status = remote::diagnose(exec, &paths.root, svc, &log).unwrap_or_default();
        self.event(
            exec,
            paths,
            "deployment_failed",
            "error",
            svc,
            serde_json::json!({"reason": reason, "containers": status, "log": log}),
        );
        self.event(
            exec,
            paths,
            "remediation_started",
            "warning",
            svc,
            serde_json::json!({"action": "rollback"}),
        );
        let previous = journal.services[svc].previous.clone();
        match &previous {
            Some(prev) => {
                say("rollback", format!("back to {prev}"));
                remote::switch_and_up(exec, &paths.root, svc, prev)?;
            }
            None => {
                say("rollback", "first deploy: taking it down".to_owned());
                remote::down_and_unlink(exec, &paths.root, svc)?;
            }
        }
        let error = format!(
            "{reason}; rolled back to {}",
            previous.as_deref().unwrap_or("nothing (first deploy)")
        );
        self.set(exec, paths, journal, svc, Stage::RolledBack, Some(error))?;
        self.event(
            exec,
            paths,
            "remediation_completed",
            "info",
            svc,
            serde_json::json!({"action": "rollback"}),
        );
        Ok(Stage::RolledBack)
    }
}
