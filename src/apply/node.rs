//! One node of a run: connect, the read-only checks (lock, replay, staleness), the lock, and
//! the journal, read on resume and written durably on the node after every stage. Its
//! services run side by side, each deployed after its dependencies on the board, the commands
//! of services in step travelling together (`batch`); the journal is one record written by one
//! service at a time. The stages of a service are
//! `service`'s; how many nodes run at once is `schedule`'s.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::batch::{Batched, Batcher, Prelude};
use super::board::Board;
use super::outcome::Next;
use super::remote::{self, StepError};
use super::{Event, Mode, NodeOutcome, Options, Sink};
use crate::clock::{day, rfc3339};
use crate::model::{Instance, Node, ServiceName};
use crate::node::journal::{Entry, Journal, Stage};
use crate::node::records::{Consumed, LockHolder};
use crate::node::Layout;
use crate::observe::{self, ManifestState, NodeState, NodeStatus};
use crate::plan::{Action, Change, NodePlan, PlannedStatus};
use crate::transport::{NodeExec, Transport};

pub(super) struct NodeRun<'a> {
    pub(super) id: &'a str,
    pub(super) node: &'a Node,
    pub(super) np: &'a NodePlan,
    pub(super) opts: &'a Options,
    pub(super) sink: &'a dyn Sink,
    pub(super) board: &'a Board<'a>,
    pub(super) in_run: &'a BTreeSet<Instance>,
    /// The dependencies this run leaves out that are met, and what the plan lists.
    pub(super) outside: &'a Outside,
    /// Commands run on the node by this run: its round trips (issue 10: the number the program
    /// knows, reported with the node's outcome).
    pub(super) trips: Arc<std::sync::atomic::AtomicUsize>,
    /// Journal saves and events waiting for the node's next command.
    pub(super) outbox: Mutex<Outbox>,
}

/// What a run knows of the dependencies it leaves out.
pub(super) struct Outside {
    /// Shown by the plan at the version the render wants.
    pub(super) met: BTreeSet<Instance>,
    /// Every instance the plan lists a change for.
    pub(super) listed: BTreeSet<Instance>,
}

impl Outside {
    /// A dependency this run leaves out is met only where the plan shows it at the version the
    /// render wants: a no-op whose deployed artifacts match (its node read, its containers up), or
    /// a change of a node an earlier run of this plan finished. Anything else (a change left to
    /// another run, a node the plan did not read) is not known to be there.
    pub(super) fn of(plan: &crate::plan::Plan, opts: &Options) -> Outside {
        let mut met: BTreeSet<Instance> = BTreeSet::new();
        let mut listed: BTreeSet<Instance> = BTreeSet::new();
        for n in &plan.nodes {
            for c in &n.changes {
                listed.insert(c.instance.clone());
                let matches = c.action == Action::NoOp && c.reason == "deployed artifacts match";
                if matches || (opts.finished_nodes.contains(&n.node) && c.action != Action::Delete)
                {
                    met.insert(c.instance.clone());
                }
            }
        }
        Outside { met, listed }
    }
}

/// What the next command to the node carries (issue 10: records cost no round trip of their
/// own): the journal's latest save, and events not yet written.
#[derive(Default)]
pub(super) struct Outbox {
    journal: Option<(u64, String)>,
    events: Vec<(String, String)>,
}

/// A node's commands, counted: each `run` is one round trip to the node.
struct Counted {
    inner: Box<dyn NodeExec>,
    trips: Arc<std::sync::atomic::AtomicUsize>,
}

impl NodeExec for Counted {
    fn run(
        &self,
        argv: &[&str],
        stdin: &[u8],
        timeout: Duration,
    ) -> Result<crate::transport::Output, crate::transport::ExecError> {
        self.trips.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.run(argv, stdin, timeout)
    }

    fn run_streaming(
        &self,
        argv: &[&str],
        stdin: &[u8],
        idle: Duration,
    ) -> Result<crate::transport::Output, crate::transport::ExecError> {
        self.trips.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.run_streaming(argv, stdin, idle)
    }

    fn containers(
        &self,
    ) -> Result<Vec<crate::transport::Container>, crate::transport::DockerError> {
        self.trips.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.containers()
    }

    fn root(&self) -> &str {
        self.inner.root()
    }

    fn docker_host(&self) -> String {
        self.inner.docker_host()
    }

    fn on_this_machine(&self) -> bool {
        self.inner.on_this_machine()
    }

    fn run_native(
        &self,
        work: &mut dyn FnMut() -> crate::transport::Output,
    ) -> crate::transport::Output {
        self.trips.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.run_native(work)
    }

    fn proven(&self) -> Result<(), crate::transport::ExecError> {
        self.inner.proven()
    }
}

/// A connected node, and where things are on it.
pub(super) struct At<'e> {
    /// The run's connection; its commands go through `batcher`.
    pub(super) exec: &'e dyn NodeExec,
    pub(super) layout: Layout,
    /// For a fresh connection to the node (the confirmation of a deploy).
    pub(super) transport: &'e dyn Transport,
    /// Where the node's service threads meet so that their commands travel together.
    pub(super) batcher: &'e Batcher,
    /// The records (journal, events) each batch writes first.
    pub(super) prelude: &'e Prelude<'e>,
    /// The fresh connection made after the deploys of the batches up to the number it holds.
    fresh: Mutex<Option<(u64, Arc<dyn NodeExec>)>>,
}

impl NodeRun<'_> {
    pub(super) fn say(&self, service: Option<&ServiceName>, stage: &str, message: String) {
        tracing::info!(node = %self.node.id, service = service.map(|s| s.as_str()).unwrap_or("-"), stage, %message);
        self.sink.event(&Event::Step {
            node: self.node.id.clone(),
            service: service.cloned(),
            stage: stage.to_owned(),
            message,
        });
    }

    pub(super) fn now(&self) -> std::time::SystemTime {
        (self.opts.clock)()
    }

    pub(super) fn run(&self, transport: &dyn Transport) -> NodeOutcome {
        if self.opts.mode == Mode::Diagnose {
            return self.diagnose(transport);
        }
        if let PlannedStatus::Unreachable { reason } = &self.np.status {
            return NodeOutcome::Unreachable {
                reason: format!("unreachable when planned ({reason}): plan again"),
                next: Next::Replan,
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
            Err(e) => return unreachable(e.to_string()),
        };
        let exec: Arc<dyn NodeExec> = Arc::new(Counted { inner: exec, trips: self.trips.clone() });
        let records = Layout::new(exec.root());
        let prelude = || Some(self.take_carry(&records)).filter(|c| !c.is_empty());
        let batcher = Batcher::default();
        let batched = Batched { batcher: &batcher, exec: exec.clone(), prelude: &prelude };
        let at = At {
            exec: &batched,
            layout: Layout::new(exec.root()),
            transport,
            batcher: &batcher,
            prelude: &prelude,
            fresh: Mutex::new(None),
        };
        // After expiry only work already begun may finish: a node without this plan's journal
        // is left out before anything is written there, not even the lock.
        if self.expired() {
            match observe::refresh(self.node, at.exec).status {
                NodeStatus::Unreachable { reason } => return unreachable(reason),
                NodeStatus::Reachable(state) if !state.journals.contains(self.id) => {
                    return NodeOutcome::Refused { reason: self.left_out() };
                }
                NodeStatus::Reachable(_) => {}
            }
        }
        let holder = LockHolder {
            holder: self.opts.holder.clone(),
            plan: self.id.to_owned(),
            since: rfc3339(self.now()),
            host: self.opts.host.clone(),
            pid: self.opts.pid,
        }
        .to_bytes();
        // The lock and the node's state in one round trip: everything checked below was read
        // under the lock.
        let state = match self.lock(&at, &holder) {
            Ok(state) => state,
            Err(outcome) => return outcome,
        };
        let (outcome, released) = match self.check(&at, &state) {
            Ok(resuming) => self.locked(&at, &changes, resuming, &holder),
            Err(outcome) => (outcome, false),
        };
        // Release the lock unless the link is gone (then `--resume` takes it over). Only our
        // own: the holder on the node must be byte for byte the one this run wrote.
        if !released && !matches!(outcome, NodeOutcome::Unreachable { .. }) {
            let _ = remote::unlock(at.exec, &at.layout, &holder);
        }
        outcome
    }

    /// The guide's `--stage diagnose`: for each selected service of the node, its containers'
    /// status, and recent logs kept in `<root>/logs/<svc>/` on the node (they may hold secrets).
    fn diagnose(&self, transport: &dyn Transport) -> NodeOutcome {
        let asked: Vec<&Change> = self
            .np
            .changes
            .iter()
            .filter(|c| self.opts.services.as_ref().is_none_or(|s| s.contains(&c.instance.service)))
            .collect();
        // Through the node's homelab where it has one (a deploy key restricted to `node serve`
        // diagnoses too); over shell steps where it has none.
        use crate::wire::{Opened, Reply, Request};
        let request = Request::Diagnose {
            plan: self.id.to_owned(),
            services: asked.iter().map(|c| c.instance.service.clone()).collect(),
        };
        self.trips.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match crate::wire::ask(transport, self.node, &request) {
            Ok(Reply::Diagnosed { services }) => {
                for d in services {
                    match d.status {
                        Ok(status) => self.diagnosed(&d.service, &status, &d.log),
                        Err(e) => {
                            return NodeOutcome::Partial {
                                reason: format!("{}: {e}", d.service),
                                next: Next::Resume,
                            }
                        }
                    }
                }
                return NodeOutcome::Staged { stage: "diagnose".to_owned() };
            }
            Ok(Reply::Refused { reason }) => return NodeOutcome::Refused { reason },
            Ok(other) => {
                return unreachable(format!("the node's homelab answered out of turn: {other:?}"))
            }
            Err(Opened::Mismatch(r) | Opened::Refused(r) | Opened::Unreachable(r)) => {
                return unreachable(r)
            }
            Err(Opened::Here) => {}
            Err(Opened::NotInstalled(_)) => {}
        }
        let exec = match transport.connect(self.node) {
            Ok(e) => e,
            Err(e) => return unreachable(e.to_string()),
        };
        let layout = Layout::new(exec.root());
        // A rejected plan is not looked at through its approval either.
        if let NodeStatus::Reachable(state) = observe::refresh(self.node, exec.as_ref()).status {
            if state.rejected.contains(self.id) {
                return self.rejected_here();
            }
        }
        for c in asked {
            let svc = c.instance.service.as_str();
            let log = layout.diagnose_log(svc, self.id);
            let none = remote::Carry::default();
            match remote::diagnose(exec.as_ref(), &none, &layout, svc, &log, None).map(|d| d.status)
            {
                Ok(status) => self.diagnosed(&c.instance.service, &status, &log),
                Err(e) => return step_error(e),
            }
        }
        NodeOutcome::Staged { stage: "diagnose".to_owned() }
    }

    /// A service's diagnosis, as the run says it.
    fn diagnosed(&self, service: &ServiceName, status: &str, log: &str) {
        let status =
            if status.is_empty() { "no containers".to_owned() } else { status.replace('\n', "; ") };
        self.say(Some(service), "diagnose", format!("{status} (logs: {log})"));
    }

    fn rejected_here(&self) -> NodeOutcome {
        NodeOutcome::Refused {
            reason: format!(
                "plan `{}` was rejected (recorded on this node by `homelab reject`): it never runs here",
                self.id
            ),
        }
    }

    fn left_out(&self) -> String {
        format!(
            "left out: plan `{}` expired at {} before this node started; plan again",
            self.id,
            rfc3339(self.opts.expires)
        )
    }

    /// Who recorded the plan as applied on this node, and when (empty when the record does not
    /// say): one read, only for a plan the node consumed.
    fn consumed_by(&self, at: &At) -> (String, String) {
        match remote::read_file(at.exec, &at.layout.consumed(self.id)) {
            Ok(Some(bytes)) => match serde_json::from_slice::<Consumed>(&bytes) {
                Ok(c) => (c.by, c.applied_at),
                Err(_) => Default::default(),
            },
            _ => Default::default(),
        }
    }

    /// Whether the plan expired (by the run's clock).
    fn expired(&self) -> bool {
        self.now() >= self.opts.expires
    }

    /// Whether a lock is held by an apply of this plan (on any host: not ours to take yet).
    fn same_plan(&self, holder: &LockHolder) -> bool {
        holder.plan == self.id
    }

    /// Takes the node lock for `holder` (the exact bytes that alone release it), waiting up to
    /// `--lock-wait`; `Ok` carries the node's state, read under the lock in the same command.
    fn lock(&self, at: &At, holder: &[u8]) -> Result<NodeState, NodeOutcome> {
        let deadline = Instant::now() + self.opts.lock_wait;
        loop {
            let (lock, answer) =
                remote::lock_and_refresh(at.exec, &at.layout, holder, observe::refresh_idle())
                    .map_err(step_error)?;
            match lock {
                remote::Lock::Acquired => {
                    return match observe::answer(self.node, at.exec, answer).status {
                        NodeStatus::Reachable(state) => Ok(state),
                        NodeStatus::Unreachable { reason } => {
                            let _ = remote::unlock(at.exec, &at.layout, holder);
                            Err(unreachable(reason))
                        }
                    };
                }
                remote::Lock::Held(by) => {
                    if self.same_plan(&by) && self.opts.resume && by.is_gone_from(&self.opts.host) {
                        // Our own plan's lock, left by a run whose link dropped or that was killed.
                        self.say(
                            None,
                            "lock",
                            "taking over the lock of the interrupted run of this plan".to_owned(),
                        );
                        remote::break_lock(at.exec, &at.layout).map_err(step_error)?;
                        continue;
                    }
                    if self.same_plan(&by) && by.is_gone_from(&self.opts.host) {
                        // Killed or cut off mid-apply: the lock is its, and so is the answer.
                        return Err(NodeOutcome::Refused {
                            reason: format!(
                                "an apply of plan `{}` was interrupted on this node (its run, {}, is gone): continue it with `--resume`",
                                self.id, by.holder
                            ),
                        });
                    }
                    if !by.plan.is_empty() && by.is_gone_from(&self.opts.host) {
                        // Another plan's run that is gone: waiting cannot help, deciding that
                        // plan does (its resume takes the lock over).
                        return Err(NodeOutcome::Refused {
                            reason: interrupted_other(&by, self.node.id.as_str()),
                        });
                    }
                    if Instant::now() >= deadline {
                        return Err(self.locked_by(&by));
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
    }

    fn locked_by(&self, holder: &LockHolder) -> NodeOutcome {
        // What `holder.json` says, on one line; an unknown holder is its text as found.
        let by = if holder.plan.is_empty() && holder.host.is_empty() {
            holder.holder.clone()
        } else {
            String::from_utf8_lossy(&holder.to_bytes())
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        NodeOutcome::Refused { reason: locked(&by, holder, self.node.id.as_str()) }
    }

    /// Where this node stands, as read under the lock: `Ok(true)` when an apply of this plan
    /// already started here (resume), `Ok(false)` for a fresh start; `Err` refuses the node
    /// (stale, replay, ...).
    fn check(&self, at: &At, state: &NodeState) -> Result<bool, NodeOutcome> {
        if state.rejected.contains(self.id) {
            return Err(self.rejected_here());
        }
        if state.consumed.contains(self.id) {
            // Applied here before (by this controller, another, or the node itself): done if
            // the node is still where the plan took it (or a resume finds its part done); a
            // replay if the node has moved on since.
            let moved = moved_on(&self.np.changes, state);
            let (by, when) = self.consumed_by(at);
            return Err(if moved.is_empty() || self.opts.resume {
                NodeOutcome::AlreadyApplied { by, at: when }
            } else {
                NodeOutcome::Refused { reason: replay(self.id, &by, &when, &moved) }
            });
        }
        if state.journals.contains(self.id) {
            if self.opts.resume {
                return Ok(true);
            }
            let ended =
                state.parsed_journals.get(self.id).and_then(|j| decided(&self.np.changes, j));
            return Err(NodeOutcome::Refused {
                reason: match ended {
                    // A resume would only say it again.
                    Some(ended) => format!(
                        "plan `{}` already ran on this node and ended ({ended}); a resume cannot change that: plan again",
                        self.id
                    ),
                    None => format!(
                        "an apply of plan `{}` already started on this node: continue it with `{}`",
                        self.id,
                        resume_command(self.id)
                    ),
                },
            });
        }
        // One plan at a time per node: a plan whose apply started here and did not finish is
        // decided first (its services may stand between versions, its dead-man may still act).
        let undecided: Vec<&str> = state
            .parsed_journals
            .iter()
            .filter(|(id, j)| {
                !j.finished
                    && id.as_str() != self.id
                    && !state.consumed.contains(*id)
                    && !state.rejected.contains(*id)
            })
            .map(|(id, _)| id.as_str())
            .collect();
        if !undecided.is_empty() {
            return Err(NodeOutcome::Refused { reason: undecided_here(&undecided) });
        }
        // Expiry binds every start: a node that had not started when the plan expired is left
        // out (`--resume` may only finish work already begun).
        if self.expired() {
            return Err(NodeOutcome::Refused { reason: self.left_out() });
        }
        // The staleness check, right before the first prepare on this node.
        let PlannedStatus::Reachable { fingerprint, actual: lines } = &self.np.status else {
            return Err(NodeOutcome::Unreachable {
                reason: "unreachable when planned: plan again".to_owned(),
                next: Next::Replan,
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

    /// The journal to continue: the node's on resume, else a new one.
    fn open_journal(&self, at: &At, resuming: bool) -> Result<Journal, NodeOutcome> {
        let fresh = || Journal::new(self.id, self.node.id.as_str(), self.now());
        if !resuming {
            return Ok(fresh());
        }
        let mut journal = match remote::read_file(at.exec, &at.layout.journal(self.id)) {
            Ok(Some(bytes)) => match serde_json::from_slice::<Journal>(&bytes) {
                Ok(j) => {
                    self.say(None, "resume", "continuing from the journal on the node".to_owned());
                    j
                }
                Err(e) => {
                    // A resume would only read it again; a new plan is not held up by it.
                    return Err(NodeOutcome::Partial {
                        reason: format!("the journal on the node is unreadable: {e}"),
                        next: Next::Replan,
                    });
                }
            },
            Ok(None) => fresh(),
            Err(e) => return Err(step_error(e)),
        };
        // A service skipped for a dependency, or stopped before anything live changed (prepare,
        // validate), is tried again; a rolled-back one needs a new plan.
        for e in journal.services.values_mut() {
            if matches!(e.stage, Stage::Skipped | Stage::Failed) {
                e.stage = Stage::Pending;
                e.error = None;
            }
        }
        Ok(journal)
    }

    /// The node's run under its lock; the outcome, and whether the lock was released with the
    /// run's last records (else the caller releases it).
    fn locked(
        &self,
        at: &At,
        changes: &[&Change],
        resuming: bool,
        holder: &[u8],
    ) -> (NodeOutcome, bool) {
        let mut journal = match self.open_journal(at, resuming) {
            Ok(j) => j,
            Err(outcome) => return (outcome, false),
        };
        for c in changes {
            journal.services.entry(c.instance.service.to_string()).or_insert(Entry {
                action: c.action.to_string(),
                stage: Stage::Pending,
                previous: None,
                error: None,
            });
        }
        // Travels with the node's first stage command.
        self.save(&mut journal);
        let only = self.opts.mode.only();
        let journal = Mutex::new(journal);
        let tally = Tally::default();
        // One thread per service still to run: it prepares, waits for its dependencies on the
        // board, then runs its other stages; the commands of threads in step travel together
        // (`batch`). Whatever happens, it publishes its instance, so its dependents here and
        // on other nodes never wait for nothing.
        let mut todo = Vec::new();
        for (i, c) in changes.iter().enumerate() {
            let entry =
                journal.lock().expect("journal").services[c.instance.service.as_str()].clone();
            if entry.stage.is_final() {
                self.board.publish(&c.instance, entry.stage == Stage::Completed);
                // Decided by an earlier run of this plan (a resume that follows it): told as
                // that run told it.
                let svc = c.instance.service.as_str();
                let why = entry.error.clone().unwrap_or_else(|| "rolled back".to_owned());
                match entry.stage {
                    Stage::RolledBack => {
                        tally.rolled_back(i, svc);
                        tally.problem(i, format!("{svc}: {why}"), Next::Replan);
                    }
                    Stage::RollbackFailed => {
                        tally.problem(i, format!("{svc}: {why}"), Next::Repair);
                    }
                    _ => {}
                }
            } else {
                todo.push((i, *c));
            }
        }
        // Counted before any starts: none sends alone while the others are still starting.
        at.batcher.activate(todo.len());
        std::thread::scope(|s| {
            for (i, c) in todo {
                let (journal, tally) = (&journal, &tally);
                s.spawn(move || {
                    let mut end = Ended {
                        board: self.board,
                        batcher: at.batcher,
                        inst: &c.instance,
                        ok: false,
                    };
                    end.ok = self.one(at, (i, c), journal, tally);
                });
            }
        });
        let Tally { rolled_back, problems, nexts, stop } = tally;
        match stop.into_inner().expect("tally") {
            Some(Stop::Link(reason)) => {
                return (unreachable(format!("{reason}; the journal on the node says where it stopped: `homelab apply --resume`")), false)
            }
            Some(Stop::Failed(e)) => return (step_error(e), false),
            None => {}
        }
        // In the order of the plan, as a run one service after another would list them.
        let in_order = |m: Mutex<Vec<(usize, String)>>| {
            let mut v = m.into_inner().expect("tally");
            v.sort();
            v.into_iter().map(|(_, s)| s).collect::<Vec<_>>()
        };
        let (rolled_back, problems) = (in_order(rolled_back), in_order(problems));
        let next = node_next(&nexts.into_inner().expect("tally"));
        let mut journal = journal.into_inner().expect("journal");
        let finished = journal.services.values().all(|e| e.stage.is_final());
        let all_done = journal.services.values().all(|e| e.stage == Stage::Completed);
        journal.finished = finished;
        self.save(&mut journal);
        // The last records, the plan recorded as consumed, and the lock released: one command.
        let consumed = (all_done && self.opts.services.is_none() && only.is_none()).then(|| {
            let record = Consumed {
                plan: self.id.to_owned(),
                node: self.node.id.to_string(),
                applied_at: rfc3339(self.now()),
                by: self.opts.holder.clone(),
            }
            .to_bytes();
            (at.layout.consumed(self.id), String::from_utf8_lossy(&record).into_owned())
        });
        let consumed = consumed.as_ref().map(|(p, r)| (p.as_str(), r.as_str()));
        // Housekeeping for the services this run brought to their new version.
        let completed: Vec<String> = journal
            .services
            .iter()
            .filter(|(_, e)| e.stage == Stage::Completed && e.action != Action::Delete.to_string())
            .map(|(s, _)| s.clone())
            .collect();
        let prune =
            remote::Prune { keep: self.opts.keep_releases, plan: self.id, services: &completed };
        let carry = self.carry(at);
        if let Err(e) = remote::finish(at.exec, &carry, &at.layout, consumed, &prune, holder) {
            return (step_error(e), false);
        }
        let unrecovered: Vec<String> = journal
            .services
            .iter()
            .filter(|(_, e)| e.stage == Stage::RollbackFailed)
            .map(|(s, _)| s.clone())
            .collect();
        let outcome = if !unrecovered.is_empty() {
            NodeOutcome::RollbackFailed { services: unrecovered, problems }
        } else if !rolled_back.is_empty() {
            NodeOutcome::RolledBack { services: rolled_back, problems }
        } else if !problems.is_empty() {
            NodeOutcome::Partial { reason: problems.join("; "), next }
        } else if let (false, Some(only)) = (all_done, only) {
            NodeOutcome::Staged { stage: only.name().to_owned() }
        } else if !all_done {
            NodeOutcome::Partial {
                reason: "not every service finished".to_owned(),
                next: Next::Resume,
            }
        } else {
            NodeOutcome::Applied
        };
        (outcome, true)
    }

    /// One service of the node, on its own thread, from where its journal stands: the expiry
    /// rule, prepare and validate (nothing live changes, so they need not wait: the node's
    /// uploads travel together), its dependencies, its other stages. `true` when it reached its
    /// new version. Once the node is lost (or its journal cannot be written), nothing new
    /// starts.
    fn one(
        &self,
        at: &At,
        (i, c): (usize, &Change),
        journal: &Mutex<Journal>,
        tally: &Tally,
    ) -> bool {
        let svc = c.instance.service.as_str();
        // Skips a service (expired, or a dependency did not make it), in the journal too.
        let skip = |reason: String, next: Next| {
            self.say(Some(&c.instance.service), "skip", reason.clone());
            self.set(journal, svc, Stage::Skipped, Some(reason.clone()));
            tally.problem(i, format!("{svc}: {reason}"), next);
            false
        };
        // A service that had not begun when the plan expired never begins: checked before it
        // starts and again after it waited for its dependencies.
        let expired = || {
            journal.lock().expect("journal").services[svc].stage == Stage::Pending && self.expired()
        };
        let left_out = || {
            format!(
                "left out: the plan expired at {} before it started",
                rfc3339(self.opts.expires)
            )
        };
        if expired() {
            // A resume leaves it out again: only a new plan brings it.
            return skip(left_out(), Next::Replan);
        }
        if tally.stopped() {
            return false;
        }
        if c.action != Action::Delete && self.opts.mode.only().is_none() {
            if let Some(ok) = self.stages(at, i, c, journal, tally, Stage::Validated) {
                return ok;
            }
        }
        // A dependency this run leaves out must be shown at its version by the plan (a no-op, or
        // a node an earlier run finished): one a planner left out, or a change left to another
        // run, is not there yet.
        // A run that only prepares or validates changes nothing live: it needs none.
        let live = !matches!(self.opts.mode.only(), Some(Stage::Prepared | Stage::Validated));
        let unmet: Vec<&Instance> = c
            .after
            .iter()
            .filter(|d| live && !self.in_run.contains(*d) && !self.outside.met.contains(*d))
            .collect();
        if !unmet.is_empty() {
            let names: Vec<String> = unmet.iter().map(ToString::to_string).collect();
            let listed = unmet.iter().all(|d| self.outside.listed.contains(*d));
            let reason = format!(
                "skipped: {} {} not in this run, and the plan does not show {} at the version the render wants ({})",
                names.join(", "),
                if names.len() == 1 { "is" } else { "are" },
                if names.len() == 1 { "it" } else { "them" },
                if listed {
                    "apply its node and service too"
                } else {
                    "plan its node too"
                }
            );
            return skip(reason, if listed { Next::Resume } else { Next::Replan });
        }
        // Dependencies next, on this node or another; waiting, this thread sends nothing. A
        // service with none in the run never steps aside: stepping aside even for a moment let
        // the others' commands go without it, and its prepare and deploy then travelled in
        // batches of their own (a deploy per batch is a confirmation per batch).
        let waits: Vec<&Instance> = c.after.iter().filter(|d| self.in_run.contains(*d)).collect();
        let blocked: Vec<&Instance> = if waits.is_empty() {
            Vec::new()
        } else {
            at.batcher.aside(|| waits.into_iter().filter(|d| !self.board.wait(d)).collect())
        };
        if tally.stopped() {
            return false;
        }
        if !blocked.is_empty() {
            let names: Vec<String> = blocked.iter().map(ToString::to_string).collect();
            let reason = format!("skipped: {} did not reach its new version", names.join(", "));
            // What helps the dependency (a resume, a new plan) helps this one.
            return skip(reason, Next::Follows);
        }
        if expired() {
            // A resume leaves it out again: only a new plan brings it.
            return skip(left_out(), Next::Replan);
        }
        self.stages(at, i, c, journal, tally, Stage::Completed).unwrap_or(false)
    }

    /// The stages of one service up to `until`, and what its end means for the node's
    /// outcome: `None` when it stands at `until` (short of the end) and goes on.
    fn stages(
        &self,
        at: &At,
        i: usize,
        c: &Change,
        journal: &Mutex<Journal>,
        tally: &Tally,
        until: Stage,
    ) -> Option<bool> {
        let svc = c.instance.service.as_str();
        let only = self.opts.mode.only();
        Some(match self.service(at, c, journal, until) {
            Ok(Stage::Completed) => true,
            // Short of the end and not ended (a resumed service may stand past `until`).
            Ok(stage) if until != Stage::Completed && !stage.is_final() && stage >= until => {
                return None
            }
            Ok(stage) => {
                let e = journal.lock().expect("journal").services[svc].error.clone();
                let e = e.unwrap_or_default();
                if stage == Stage::RolledBack {
                    tally.rolled_back(i, svc);
                    // Its previous version is live and the journal says so for good.
                    tally.problem(i, format!("{svc}: {e}"), Next::Replan);
                } else if stage == Stage::RollbackFailed {
                    // Final: no resume redeploys it; the node needs a hand first.
                    tally.problem(i, format!("{svc}: {e}"), Next::Repair);
                } else if let Some(only) = only {
                    if stage < only {
                        // `--stage X` runs X alone, for a service whose journal is right
                        // before it: say which call comes first, and that later calls of the
                        // same plan take `--resume`.
                        let next = match stage {
                            Stage::Pending => "prepare",
                            Stage::Prepared => "validate",
                            Stage::Validated | Stage::Deploying => "deploy",
                            Stage::Deployed => "verify",
                            _ => "complete",
                        };
                        tally.problem(
                            i,
                            format!(
                                "{svc}: at `{}`: `--stage {}` runs that one stage, once the stages before it are done; run `--stage {next}` first, and every later `--stage` of this plan with `--resume`",
                                stage.name(),
                                only.name()
                            ),
                            Next::Resume,
                        );
                    } else if stage != only {
                        tally.problem(i, format!("{svc}: {e}"), Next::Resume);
                    }
                } else {
                    // Failed before anything live changed: a resume tries it again.
                    tally.problem(i, format!("{svc}: {e}"), Next::Resume);
                }
                // `--stage` stops a service on purpose: it is not final, dependents wait for a
                // later run.
                false
            }
            Err(StepError::Link { reason }) => {
                self.say(Some(&c.instance.service), "link", format!("lost the node: {reason}"));
                tally.stop(StepError::Link { reason });
                false
            }
            Err(e) => {
                // A step that could not run (not the link): this service failed, the
                // others still get their turn, and the journal says why.
                let reason = e.to_string();
                self.say(Some(&c.instance.service), "failed", reason.clone());
                self.set(journal, svc, Stage::Failed, Some(reason.clone()));
                tally.problem(i, format!("{svc}: {reason}"), Next::Resume);
                false
            }
        })
    }

    /// Saves the journal: the save travels with the node's next command, written on the node
    /// before that command's step runs (so a stage recorded as begun, like `deploying`, is on
    /// the node before the stage does anything).
    pub(super) fn save(&self, journal: &mut Journal) {
        journal.updated = rfc3339(self.now());
        journal.seq += 1;
        let text = String::from_utf8_lossy(&journal.to_bytes()).into_owned();
        self.outbox.lock().expect("outbox").journal = Some((journal.seq, text));
    }

    /// The records the node's next command carries, taken out of the outbox: the journal's
    /// latest save and the events of one day.
    pub(super) fn carry(&self, at: &At) -> remote::Carry {
        self.take_carry(&at.layout)
    }

    fn take_carry(&self, layout: &Layout) -> remote::Carry {
        let mut outbox = self.outbox.lock().expect("outbox");
        let journal = outbox.journal.take().map(|(seq, text)| (layout.journal(self.id), seq, text));
        let events = match outbox.events.first() {
            None => None,
            Some((file, _)) => {
                let file = file.clone();
                let (now, later): (Vec<_>, Vec<_>) =
                    outbox.events.drain(..).partition(|(f, _)| *f == file);
                outbox.events = later;
                Some((file, now.into_iter().map(|(_, l)| l).collect::<String>()))
            }
        };
        remote::Carry { journal, events }
    }

    /// Writes what the outbox holds now, in a command of its own: for records that must not
    /// wait (a rollback's outcome).
    pub(super) fn flush(&self, at: &At) -> Result<(), StepError> {
        let waiting = {
            let outbox = self.outbox.lock().expect("outbox");
            outbox.journal.is_some() || !outbox.events.is_empty()
        };
        if !waiting {
            return Ok(());
        }
        // The records go in the prelude of the command's batch.
        remote::flush(at.exec, &remote::Carry::default())
    }

    /// Moves a service to `stage` in the journal, and saves it.
    pub(super) fn set(
        &self,
        journal: &Mutex<Journal>,
        svc: &str,
        stage: Stage,
        error: Option<String>,
    ) {
        self.update(journal, svc, |e| {
            e.stage = stage;
            e.error = error;
        })
    }

    /// Changes a service's entry in the journal and saves it. The journal is one record for
    /// the node: services running side by side each change their entry and save the whole,
    /// numbered, so the node keeps the latest.
    pub(super) fn update(&self, journal: &Mutex<Journal>, svc: &str, f: impl FnOnce(&mut Entry)) {
        let mut journal = journal.lock().expect("journal");
        if let Some(e) = journal.services.get_mut(svc) {
            f(e);
        }
        self.save(&mut journal)
    }

    /// A fresh connection to the node (not the run's multiplexed one), made after the deploy
    /// that the batch numbered `deployed_in` carried: proof the node can still be reached anew
    /// after the change. Services deployed together share one; its commands are counted with
    /// the run's and go through the batcher.
    pub(super) fn fresh<'e>(
        &self,
        at: &'e At<'_>,
        deployed_in: u64,
    ) -> Result<Batched<'e>, StepError> {
        let mut fresh = at.fresh.lock().expect("fresh connection");
        let exec = match &*fresh {
            Some((after, exec)) if *after >= deployed_in => exec.clone(),
            _ => {
                // Every batch answered so far was answered before this connection began.
                let after = at.batcher.sent();
                let exec = at.transport.connect(self.node).map_err(|e| StepError::Link {
                    reason: format!("no new connection to the node after the deploy: {e}"),
                })?;
                let exec: Arc<dyn NodeExec> =
                    Arc::new(Counted { inner: exec, trips: self.trips.clone() });
                *fresh = Some((after, exec.clone()));
                exec
            }
        };
        Ok(Batched { batcher: at.batcher, exec, prelude: at.prelude })
    }

    /// Queues an event for the node's event log; it travels with the node's next command.
    pub(super) fn event(
        &self,
        at: &At,
        kind: &str,
        severity: &str,
        svc: &str,
        data: serde_json::Value,
    ) {
        let now = self.now();
        let line = crate::events::line(
            &rfc3339(now),
            kind,
            severity,
            "homelab apply",
            svc,
            self.id,
            self.node.id.as_str(),
            data,
        );
        let path = at.layout.events(&day(now), self.node.id.as_str());
        self.outbox.lock().expect("outbox").events.push((path, line));
    }
}

/// The end of a service's thread, whatever it is (a panic included): its instance is published
/// (at its new version only when it got there) and the thread stops counting as one that may
/// send, so neither the node's other services nor its dependents elsewhere wait for it forever.
struct Ended<'r> {
    board: &'r Board<'r>,
    batcher: &'r Batcher,
    inst: &'r Instance,
    ok: bool,
}

impl Drop for Ended<'_> {
    fn drop(&mut self) {
        self.board.publish(self.inst, self.ok);
        self.batcher.deactivate();
    }
}

/// Why a node stops starting services: the link dropped (the first reason), or the journal
/// could not be written.
enum Stop {
    Link(String),
    Failed(StepError),
}

/// What the services of a node ended with, collected from their threads; each entry carries
/// the service's place in the plan, so the outcome lists them in the plan's order.
#[derive(Default)]
struct Tally {
    rolled_back: Mutex<Vec<(usize, String)>>,
    problems: Mutex<Vec<(usize, String)>>,
    /// What can move each problem on: the node's outcome suggests a resume only when one
    /// of them can be resumed.
    nexts: Mutex<Vec<Next>>,
    stop: Mutex<Option<Stop>>,
}

impl Tally {
    fn problem(&self, i: usize, text: String, next: Next) {
        self.problems.lock().expect("tally").push((i, text));
        self.nexts.lock().expect("tally").push(next);
    }

    fn rolled_back(&self, i: usize, svc: &str) {
        self.rolled_back.lock().expect("tally").push((i, svc.to_owned()));
    }

    /// Stops the node: the first link error wins over anything else (it decides the outcome).
    fn stop(&self, e: StepError) {
        let mut stop = self.stop.lock().expect("tally");
        match (e, &*stop) {
            (_, Some(Stop::Link(_))) => {}
            (StepError::Link { reason }, _) => *stop = Some(Stop::Link(reason)),
            (e, None) => *stop = Some(Stop::Failed(e)),
            (_, Some(Stop::Failed(_))) => {}
        }
    }

    fn stopped(&self) -> bool {
        self.stop.lock().expect("tally").is_some()
    }
}

/// The command that decides plan `id` on a node: it finishes that apply, or records how it
/// ended (a rollback, the node's own included).
fn resume_command(id: &str) -> String {
    format!("homelab apply --resume plans/{id}.approved")
}

/// The node's lock, left by an apply of another plan whose run is gone (killed, or its link
/// dropped): that plan's resume takes it over; breaking it decides nothing.
fn interrupted_other(by: &LockHolder, node: &str) -> String {
    format!(
        "the node is locked by an apply of plan `{}` that was interrupted (its run, {}, is gone): \
         finish it or record how it ended with `{}`, which takes the lock over; \
         `homelab unlock --node {node}` is the last resort, for a lock that no apply takes over",
        by.plan,
        by.holder,
        resume_command(&by.plan)
    )
}

/// The node's lock, held by `holder` (`by`: as found, on one line) that is not known to be
/// gone.
fn locked(by: &str, holder: &LockHolder, node: &str) -> String {
    let unlock = format!("`homelab unlock --node {node}` (it shows the holder first)");
    if holder.plan.is_empty() {
        return format!(
            "the node is locked by {by}; wait with `--lock-wait SECONDS`, or if that holder is gone, {unlock}"
        );
    }
    format!(
        "the node is locked by {by}; wait with `--lock-wait SECONDS`; if that run is gone, \
         `{}` on its host ({}) takes the lock over and finishes plan `{}` or records how it ended; \
         {unlock} is the last resort, for a holder that is not homelab's",
        resume_command(&holder.plan),
        if holder.host.is_empty() { "unknown" } else { holder.host.as_str() },
        holder.plan
    )
}

/// Plans whose apply started on the node and did not finish: each is decided first.
fn undecided_here(ids: &[&str]) -> String {
    let commands: Vec<String> = ids.iter().map(|id| format!("`{}`", resume_command(id))).collect();
    let (plans, verb) = match ids {
        [one] => (format!("plan `{one}`"), "is"),
        _ => {
            let named: Vec<String> = ids.iter().map(|id| format!("`{id}`")).collect();
            (format!("plans {}", named.join(", ")), "are")
        }
    };
    format!(
        "{plans} {verb} undecided on this node (an apply started and did not finish): finish it or record how it ended with {}, then apply this plan",
        commands.join(" and ")
    )
}

/// A plan applied on the node before (`by`, `when`: its record), whose state the node has left
/// since (`moved`: how).
fn replay(id: &str, by: &str, when: &str, moved: &[String]) -> String {
    let record = match (by.is_empty(), when.is_empty()) {
        (false, false) => format!(" (by {by}, at {when})"),
        (false, true) => format!(" (by {by})"),
        (true, false) => format!(" (at {when})"),
        (true, true) => String::new(),
    };
    format!(
        "plan `{id}` was already applied on this node{record} and the node has moved on since ({}): applying it again would be a replay (refused); plan again for new changes",
        moved.join("; ")
    )
}

/// How the node differs from where plan's `changes` took it, as refresh reads it: for each
/// created, updated or replaced service, its manifest holds the plan's artifacts (names,
/// hashes, modes) and its files match that manifest; a deleted service is absent. Empty when
/// the node is at the plan's state. Containers are not compared: the plan's fingerprint does
/// not hold them either.
fn moved_on(changes: &[Change], state: &NodeState) -> Vec<String> {
    let mut out = Vec::new();
    for c in changes.iter().filter(|c| c.action != Action::NoOp) {
        let svc = c.instance.service.as_str();
        match (c.action, state.services.get(svc)) {
            (Action::Delete, None) => {}
            (Action::Delete, Some(_)) => {
                out.push(format!("{svc} is deployed; the plan deleted it"))
            }
            (_, None) => out.push(format!("{svc} is not deployed")),
            (_, Some(deployed)) => {
                let ManifestState::Present { manifest, .. } = &deployed.manifest else {
                    out.push(format!("{svc} has no readable manifest"));
                    continue;
                };
                let mut names: Vec<&str> = c
                    .artifacts
                    .iter()
                    .filter(|a| {
                        let mode = format!("{:04o}", a.mode);
                        !manifest
                            .artifacts
                            .iter()
                            .any(|m| m.name == a.name && m.sha256 == a.sha256 && m.mode == mode)
                    })
                    .map(|a| a.name.as_str())
                    .collect();
                names.extend(
                    manifest
                        .artifacts
                        .iter()
                        .filter(|m| !c.artifacts.iter().any(|a| a.name == m.name))
                        .map(|m| m.name.as_str()),
                );
                if !names.is_empty() {
                    out.push(format!("{svc}: {} not as the plan made it", names.join(", ")));
                }
                out.extend(deployed.drift().into_iter().map(|d| format!("{svc}: {d}")));
            }
        }
    }
    out
}

/// How this node's apply of the plan ended, when its journal decided it for good: every
/// change of the node ran and ended, and what did not complete was rolled back (a resume
/// tries failed and skipped services again, runs what is not in the journal, and records a
/// completed apply; none of that is left to do). `None` when a resume can still do something.
fn decided(changes: &[Change], journal: &Journal) -> Option<String> {
    let all_ran = changes
        .iter()
        .filter(|c| c.action != Action::NoOp)
        .all(|c| journal.services.contains_key(c.instance.service.as_str()));
    let ended = journal
        .services
        .values()
        .all(|e| matches!(e.stage, Stage::Completed | Stage::RolledBack | Stage::RollbackFailed));
    let rolled_back: Vec<&str> = journal
        .services
        .iter()
        .filter(|(_, e)| matches!(e.stage, Stage::RolledBack | Stage::RollbackFailed))
        .map(|(s, _)| s.as_str())
        .collect();
    (journal.finished && all_ran && ended && !rolled_back.is_empty())
        .then(|| format!("rolled back: {}", rolled_back.join(", ")))
}

/// What moves a node on from its services' problems: a resume when one of them can be
/// resumed, else a new plan when one needs it, else what helps the services they follow.
fn node_next(nexts: &[Next]) -> Next {
    if nexts.contains(&Next::Resume) {
        Next::Resume
    } else if nexts.contains(&Next::Repair) {
        Next::Repair
    } else if nexts.contains(&Next::Replan) {
        Next::Replan
    } else {
        Next::Follows
    }
}

/// A step error as the node's outcome: a lost link, or a failure the operator reads.
pub(super) fn step_error(e: StepError) -> NodeOutcome {
    match e {
        StepError::Link { reason } => unreachable(reason),
        e => NodeOutcome::Partial { reason: e.to_string(), next: Next::Resume },
    }
}

/// A node lost (or never reached) by this run: the journal on it says where it stopped, and
/// `--resume` continues from there.
fn unreachable(reason: String) -> NodeOutcome {
    NodeOutcome::Unreachable { reason, next: Next::Resume }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NodeName;
    use crate::node::journal::Entry;
    use crate::node::manifest::Manifest;
    use crate::observe::{DeployedService, FileState};
    use crate::plan::PlannedArtifact;

    fn change(svc: &str, action: Action, files: &[(&str, &str)]) -> Change {
        Change {
            instance: Instance {
                service: ServiceName::parse(svc).unwrap(),
                node: NodeName::parse("edge-a").unwrap(),
            },
            action,
            reason: String::new(),
            after: Vec::new(),
            artifacts: files
                .iter()
                .map(|(name, text)| PlannedArtifact {
                    name: (*name).to_owned(),
                    mode: 0o644,
                    sha256: crate::digest::sha256_hex(text.as_bytes()),
                    text: (*text).to_owned(),
                    binary: None,
                })
                .collect(),
            prior: Vec::new(),
            diffs: Vec::new(),
            runtime: None,
            restore: None,
        }
    }

    /// A node where `svc` holds `files`, written by homelab (manifest and disk agree).
    fn deployed(state: &mut NodeState, svc: &str, files: &[(&str, &str)]) {
        let manifest =
            Manifest::of(svc, "edge-a", files.iter().map(|(n, t)| (*n, t.as_bytes(), 0o644)));
        let files = files
            .iter()
            .map(|(n, t)| {
                let f = FileState {
                    sha256: crate::digest::sha256_hex(t.as_bytes()),
                    mode: "0644".to_owned(),
                    content: Some((*t).to_owned()),
                };
                ((*n).to_owned(), f)
            })
            .collect();
        let manifest = ManifestState::Present { manifest, sha256: "m".to_owned() };
        state.services.insert(svc.to_owned(), DeployedService { manifest, release: None, files });
    }

    #[test]
    fn a_node_where_the_plan_left_it_has_not_moved_on() {
        let changes = [
            change("broker", Action::Update, &[("docker-compose.yml", "v2\n")]),
            change("old", Action::Delete, &[]),
            change("agent", Action::NoOp, &[]),
        ];
        let mut state = NodeState::default();
        deployed(&mut state, "broker", &[("docker-compose.yml", "v2\n")]);
        assert_eq!(moved_on(&changes, &state), Vec::<String>::new());

        // Another plan changed broker, and brought `old` back.
        deployed(&mut state, "broker", &[("docker-compose.yml", "v3\n"), ("extra.conf", "x")]);
        deployed(&mut state, "old", &[("docker-compose.yml", "old\n")]);
        assert_eq!(
            moved_on(&changes, &state),
            [
                "broker: docker-compose.yml, extra.conf not as the plan made it",
                "old is deployed; the plan deleted it"
            ]
        );
        // Deleted since, or edited by hand.
        state.services.remove("broker");
        assert_eq!(moved_on(&changes[..1], &state), ["broker is not deployed"]);
        deployed(&mut state, "broker", &[("docker-compose.yml", "v2\n")]);
        state
            .services
            .get_mut("broker")
            .unwrap()
            .files
            .get_mut("docker-compose.yml")
            .unwrap()
            .sha256 = "edited".to_owned();
        assert_eq!(
            moved_on(&changes[..1], &state),
            ["broker: docker-compose.yml was edited on the node"]
        );
    }

    fn journal(finished: bool, stages: &[(&str, Stage)]) -> Journal {
        let mut j = Journal::new("p1", "edge-a", std::time::UNIX_EPOCH);
        j.finished = finished;
        for (svc, stage) in stages {
            let e = Entry { action: "update".into(), stage: *stage, previous: None, error: None };
            j.services.insert((*svc).to_owned(), e);
        }
        j
    }

    /// A finished apply whose only loose ends are rollbacks is decided: a resume would say
    /// the same again. Anything a resume can still do (a failed or skipped service, a service
    /// not run yet, an unfinished journal) is not.
    #[test]
    fn only_rollbacks_left_is_decided_for_good() {
        let changes = [
            change("broker", Action::Update, &[("a", "a")]),
            change("agent", Action::Update, &[("a", "a")]),
        ];
        let rolled = [("broker", Stage::RolledBack), ("agent", Stage::Completed)];
        assert_eq!(
            decided(&changes, &journal(true, &rolled)).as_deref(),
            Some("rolled back: broker")
        );
        assert_eq!(decided(&changes, &journal(false, &rolled)), None);
        let failed = [("broker", Stage::RolledBack), ("agent", Stage::Failed)];
        assert_eq!(decided(&changes, &journal(true, &failed)), None);
        assert_eq!(decided(&changes, &journal(true, &rolled[..1])), None, "agent not run yet");
        let done = [("broker", Stage::Completed), ("agent", Stage::Completed)];
        assert_eq!(decided(&changes, &journal(true, &done)), None, "a resume records it");
    }

    #[test]
    fn refusals_name_the_plan_to_decide_and_its_command() {
        let gone = LockHolder {
            holder: "root@ctl pid 42".into(),
            plan: "0123abcd".into(),
            since: "2026-12-01T10:00:00Z".into(),
            host: "ctl".into(),
            pid: 42,
        };
        assert_eq!(
            interrupted_other(&gone, "edge-a"),
            "the node is locked by an apply of plan `0123abcd` that was interrupted (its run, \
             root@ctl pid 42, is gone): finish it or record how it ended with `homelab apply \
             --resume plans/0123abcd.approved`, which takes the lock over; `homelab unlock --node \
             edge-a` is the last resort, for a lock that no apply takes over"
        );
        assert_eq!(
            undecided_here(&["0123abcd"]),
            "plan `0123abcd` is undecided on this node (an apply started and did not finish): \
             finish it or record how it ended with `homelab apply --resume \
             plans/0123abcd.approved`, then apply this plan"
        );
        assert!(undecided_here(&["a1", "b2"]).starts_with("plans `a1`, `b2` are undecided"));
        // A live holder: wait; a run that is gone is resumed on its host; unlock comes last.
        let text = locked("{ holder }", &gone, "edge-a");
        let resume = text.find("homelab apply --resume plans/0123abcd.approved").unwrap();
        assert!(text.find("--lock-wait").unwrap() < resume, "{text}");
        assert!(resume < text.find("homelab unlock --node edge-a").unwrap(), "{text}");
        // A holder that is not homelab's: nothing to resume.
        let unknown = LockHolder { plan: String::new(), host: String::new(), ..gone };
        let text = locked("{ x }", &unknown, "edge-a");
        assert!(!text.contains("--resume") && text.contains("homelab unlock --node edge-a"));
        assert_eq!(
            replay("p1", "root@n pid 1", "2026-12-01T10:00:00Z", &["broker is not deployed".into()]),
            "plan `p1` was already applied on this node (by root@n pid 1, at 2026-12-01T10:00:00Z) \
             and the node has moved on since (broker is not deployed): applying it again would be \
             a replay (refused); plan again for new changes"
        );
    }

    #[test]
    fn a_node_suggests_a_resume_only_when_one_of_its_problems_can_be_resumed() {
        assert_eq!(node_next(&[Next::Follows, Next::Replan, Next::Resume]), Next::Resume);
        assert_eq!(node_next(&[Next::Follows, Next::Replan]), Next::Replan);
        assert_eq!(node_next(&[Next::Follows]), Next::Follows);
    }
}
