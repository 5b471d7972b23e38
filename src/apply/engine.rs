//! A node's part of a run carried out by the node's own engine (`homelab node serve`, one SSH
//! session per node per command), both ends of it that belong to apply:
//!
//! - [`Progress`]: the lines an engine writes as it runs, which its sessions stream to the
//!   controllers following it (`wire::Reply::Progress`).
//! - [`remote`]: the controller's side: hello, the bundle, the progress shown through the sink
//!   as if the run were here, the fresh confirmation connections the engine asks for, the
//!   dependencies on other nodes relayed as they settle.
//! - [`here`]: the engine's side: the node's run in this process, over a transport the engine
//!   gives (its local commands, and the confirmations that arrive over fresh connections).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::board::Board;
use super::node::NodeRun;
use super::outcome::Next;
use super::{Event, NodeOutcome, Options, Sink};
use crate::model::{Instance, Node};
use crate::plan::{NodePlan, Plan};
use crate::transport::Transport;
use crate::wire::{self, Bundle, Opened, Reply, Request};

/// One line of an engine's progress file, and of its stream to a controller.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "progress", rename_all = "snake_case")]
pub enum Progress {
    /// A step, as the sink shows it.
    Step { event: Event },
    /// The engine deployed and asks for proof that the controller can still reach the node
    /// anew: a `confirm` with this number over a fresh connection.
    AwaitConfirm { seq: u64 },
    /// A service of the node ended its run (`ok`: at its new version): its dependents on
    /// other nodes may go on.
    Settled { instance: Instance, ok: bool },
    /// The node's run ended.
    Done { outcome: NodeOutcome, round_trips: usize },
}

/// The signed texts an engine checks, for [`Options::signed`].
#[derive(Debug, Clone)]
pub struct Signed {
    /// Packed once for every node's bundle.
    pub plan: wire::Packed,
    pub approved: String,
}

/// The node's run in this process (the engine): `settled` answers, without blocking, whether
/// a dependency on another node's instance settled (`Some(true)`: at its new version). Returns
/// the outcome and the commands run.
#[allow(clippy::too_many_arguments)] // one run's parts, as `schedule::execute` holds them
pub fn here(
    node: &Node,
    id: &str,
    plan: &Plan,
    np: &NodePlan,
    transport: &dyn Transport,
    opts: &Options,
    sink: &dyn Sink,
    in_run: &BTreeSet<Instance>,
    settled: &(dyn Fn(&Instance) -> Option<bool> + Sync),
    on_settle: &(dyn Fn(&Instance, bool) + Sync),
) -> (NodeOutcome, usize) {
    let board = Board::observed(on_settle);
    let outside = super::node::Outside::of(plan, opts);
    let trips = Arc::new(AtomicUsize::new(0));
    let done = AtomicBool::new(false);
    let external: BTreeSet<&Instance> = np
        .changes
        .iter()
        .flat_map(|c| c.after.iter())
        .filter(|d| d.node != np.node && in_run.contains(*d))
        .collect();
    let outcome = std::thread::scope(|s| {
        for inst in external {
            let (board, done) = (&board, &done);
            s.spawn(move || loop {
                if let Some(ok) = settled(inst) {
                    board.publish(inst, ok);
                    return;
                }
                if done.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            });
        }
        let outcome = NodeRun {
            id,
            node,
            np,
            opts,
            sink,
            board: &board,
            in_run,
            outside: &outside,
            trips: trips.clone(),
            outbox: Default::default(),
        }
        .run(transport);
        done.store(true, Ordering::Relaxed);
        outcome
    });
    (outcome, trips.load(Ordering::Relaxed))
}

/// How [`remote`] ended when it did not give the node's outcome.
pub(super) enum NotRun {
    /// The transport runs nodes in this process (the local transport).
    Here,
    /// The node has no homelab binary (`bootstrap` not run): the run goes on over the shell
    /// steps.
    NotInstalled(String),
}

/// The controller's side of a node run by its engine. `board`: where the run's other nodes
/// publish, relayed to the engine for the services that wait on them. `trips`: the sessions
/// opened (the round trips this node cost).
#[allow(clippy::too_many_arguments)] // one run's parts, as `schedule::execute` holds them
pub(super) fn remote(
    node: &Node,
    id: &str,
    np: &NodePlan,
    transport: &dyn Transport,
    opts: &Options,
    signed: &Signed,
    sink: &dyn Sink,
    board: &Board,
    in_run: &BTreeSet<Instance>,
    trips: &AtomicUsize,
) -> Result<NodeOutcome, NotRun> {
    let say = |stage: &str, message: String| {
        sink.event(&Event::Step {
            node: node.id.clone(),
            service: None,
            stage: stage.to_owned(),
            message,
        })
    };
    let bundle = Bundle {
        node: node.id.to_string(),
        plan: signed.plan.clone(),
        approved: signed.approved.clone(),
        services: opts.services.clone(),
        resume: opts.resume,
        lock_wait_secs: opts.lock_wait.as_secs(),
        confirm_timeout_secs: opts.confirm_timeout.map(|t| t.as_secs()),
        holder: opts.holder.clone(),
        in_run: in_run.iter().cloned().collect(),
        finished_nodes: opts.finished_nodes.iter().cloned().collect(),
        stage: opts.mode.only(),
    };
    trips.fetch_add(1, Ordering::Relaxed);
    // The bundle rides behind the hello (`wire::open`): one round trip less.
    let apply = Request::Apply(bundle);
    let mut session = match wire::open(wire::Link::Shared, transport, node, &apply) {
        Ok(s) => s,
        Err(Opened::Here) => {
            trips.fetch_sub(1, Ordering::Relaxed);
            return Err(NotRun::Here);
        }
        Err(Opened::NotInstalled(why)) => return Err(NotRun::NotInstalled(why)),
        Err(Opened::Mismatch(reason) | Opened::Refused(reason)) => {
            return Ok(NodeOutcome::Refused { reason })
        }
        Err(Opened::Unreachable(reason)) => {
            return Ok(NodeOutcome::Unreachable { reason, next: Next::Resume })
        }
    };
    say("connect", format!("the node's engine answered (homelab {})", wire::VERSION));
    let input = Arc::new(Mutex::new(session.input.take()));
    // The dependencies of this node's services on other nodes, told to the engine as they
    // settle. Each relay ends when its instance settles (the scheduler settles every instance
    // of the run when its node ends) or the session is gone.
    let external: BTreeSet<Instance> = np
        .changes
        .iter()
        .flat_map(|c| c.after.iter())
        .filter(|d| d.node != np.node && in_run.contains(*d))
        .cloned()
        .collect();
    Ok(std::thread::scope(|s| {
        for inst in external {
            let input = input.clone();
            s.spawn(move || {
                let ok = board.wait(&inst);
                let _ = send(&input, &Request::Settled { instance: inst, ok });
            });
        }
        let outcome = follow(node, id, transport, sink, board, &mut session, trips);
        // Whatever happened, the relays may end: their instances settle when this returns.
        drop(input.lock().unwrap_or_else(|e| e.into_inner()).take());
        outcome
    }))
}

/// Reads an engine's replies until its run ends or the link does.
fn follow(
    node: &Node,
    id: &str,
    transport: &dyn Transport,
    sink: &dyn Sink,
    board: &Board,
    session: &mut crate::transport::Session,
    trips: &AtomicUsize,
) -> NodeOutcome {
    loop {
        let reply: Option<Reply> = wire::receive(&mut session.output).unwrap_or_default();
        match reply {
            None => return lost(session, id),
            Some(Reply::Refused { reason }) => return NodeOutcome::Refused { reason },
            Some(Reply::Interrupted { reason }) => {
                return NodeOutcome::Unreachable {
                    reason: format!(
                        "{reason}; `homelab apply --resume plans/{id}.approved` continues it"
                    ),
                    next: Next::Resume,
                }
            }
            Some(Reply::Progress { line }) => match serde_json::from_value::<Progress>(line) {
                Ok(Progress::Step { event }) => sink.event(&event),
                Ok(Progress::AwaitConfirm { seq }) => {
                    let said = match confirm(node, id, seq, transport, trips) {
                        Ok(()) => "confirmed over a fresh connection".to_owned(),
                        Err(why) => format!("no fresh connection to confirm the deploy: {why}"),
                    };
                    sink.event(&Event::Step {
                        node: node.id.clone(),
                        service: None,
                        stage: "confirm".to_owned(),
                        message: said,
                    });
                }
                Ok(Progress::Settled { instance, ok }) => board.publish(&instance, ok),
                Ok(Progress::Done { outcome, .. }) => return outcome,
                Err(e) => {
                    return NodeOutcome::Unreachable {
                        reason: format!("the node's engine said something unreadable: {e}"),
                        next: Next::Resume,
                    }
                }
            },
            Some(other) => {
                return NodeOutcome::Unreachable {
                    reason: format!("the node's engine answered out of turn: {other:?}"),
                    next: Next::Resume,
                }
            }
        }
    }
}

/// The proof the dead-man waits for: a session over a new connection (never the shared one),
/// then `confirm`.
fn confirm(
    node: &Node,
    id: &str,
    seq: u64,
    transport: &dyn Transport,
    trips: &AtomicUsize,
) -> Result<(), String> {
    trips.fetch_add(1, Ordering::Relaxed);
    let request = Request::Confirm { plan: id.to_owned(), seq };
    match wire::ask_on(wire::Link::Fresh, transport, node, &request) {
        Err(Opened::Here) => Ok(()),
        Err(
            Opened::NotInstalled(why)
            | Opened::Mismatch(why)
            | Opened::Refused(why)
            | Opened::Unreachable(why),
        ) => Err(why),
        Ok(Reply::Confirmed) => Ok(()),
        Ok(Reply::Refused { reason }) => Err(reason),
        Ok(other) => Err(format!("an answer out of turn: {other:?}")),
    }
}

fn send(input: &Mutex<Option<std::process::ChildStdin>>, req: &Request) -> Result<(), ()> {
    let mut guard = input.lock().unwrap_or_else(|e| e.into_inner());
    match guard.as_mut() {
        Some(i) => wire::send(i, req).map_err(|_| ()),
        None => Err(()),
    }
}

/// The session ended before the engine's last word: the engine goes on, detached; a resume
/// follows it.
fn lost(session: &mut crate::transport::Session, id: &str) -> NodeOutcome {
    let (_, said) = session.ended();
    let said = if said.is_empty() { "the link dropped".to_owned() } else { said };
    NodeOutcome::Unreachable {
        reason: format!(
            "{said}; the node's engine goes on by itself: `homelab apply --resume plans/{id}.approved` follows it and records how it ended"
        ),
        next: Next::Resume,
    }
}
