//! Scheduling a run: which nodes, how many at once, and settling the cross-node [`Board`]
//! through which a service waits for its dependencies on other nodes. It owns no node work (that is
//! `node`'s) and never talks to a node itself.

use super::board::{Board, Slots};
use super::engine::{self, NotRun};
use super::node::{NodeRun, Outside};
use super::{Event, NodeOutcome, Options, Sink};
use crate::model::{Homelab, Instance, NodeName};
use crate::plan::{Action, NodePlan, Plan};
use crate::transport::Transport;
use std::collections::{BTreeMap, BTreeSet};

/// Applies `plan` (already through pre-flight) on the selected nodes.
pub fn execute(
    lab: &Homelab,
    id: &str,
    plan: &Plan,
    transport: &dyn Transport,
    opts: &Options,
    sink: &dyn Sink,
) -> BTreeMap<NodeName, NodeOutcome> {
    let selected: Vec<&NodePlan> = plan
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
    let outside = Outside::of(plan, opts);
    let slots = Slots::new(opts.parallel);
    let mut outcomes = BTreeMap::new();
    std::thread::scope(|s| {
        let handles: Vec<_> = selected
            .iter()
            .map(|np| {
                let (board, slots, in_run, outside) = (&board, &slots, &in_run, &outside);
                s.spawn(move || {
                    slots.take();
                    let trips = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
                    let outcome = match lab.nodes.get(&np.node) {
                        None => NodeOutcome::Refused {
                            reason: "the node is not in the inventory any more".to_owned(),
                        },
                        Some(node) => {
                            let trips = trips.clone();
                            // A node with nothing to do, or unread when planned, is not
                            // contacted: its run says so without a session.
                            // New trust roots are work too: they reach a node only
                            // through its engine, in the plan.
                            let work = !matches!(np.status, crate::plan::PlannedStatus::Unreachable { .. })
                                && (np.changes.iter().any(|c| in_run.contains(&c.instance))
                                    || np.pinned_match == Some(false));
                            let engine = match (&opts.signed, opts.mode) {
                                (Some(signed), super::Mode::Run { .. }) if work => {
                                    engine::remote(
                                        node, id, np, transport, opts, signed, sink, board,
                                        in_run, &trips,
                                    )
                                }
                                _ => Err(NotRun::Here),
                            };
                            match engine {
                                Ok(outcome) => Some(outcome),
                                Err(NotRun::Here) => None,
                                Err(NotRun::NotInstalled(why)) => {
                                    sink.event(&Event::Step {
                                        node: node.id.clone(),
                                        service: None,
                                        stage: "connect".to_owned(),
                                        message: format!(
                                            "no homelab engine on the node ({why}): its part runs over shell steps; `homelab bootstrap {}` installs the engine",
                                            node.id
                                        ),
                                    });
                                    None
                                }
                            }
                            .unwrap_or_else(|| NodeRun {
                                id,
                                node,
                                np,
                                opts,
                                sink,
                                board,
                                in_run,
                                outside,
                                trips,
                                outbox: Default::default(),
                            }
                            .run(transport))
                        }
                    };
                    // Whatever happened, nothing on this node will settle later in this run; a
                    // node applied by an earlier run has every service at its new version.
                    let done = matches!(outcome, NodeOutcome::AlreadyApplied { .. });
                    for c in &np.changes {
                        if in_run.contains(&c.instance) {
                            board.settle(&c.instance, done);
                        }
                    }
                    slots.give();
                    let round_trips = trips.load(std::sync::atomic::Ordering::Relaxed);
                    tracing::debug!(node = %np.node, round_trips, "node done");
                    sink.event(&Event::NodeDone {
                        node: np.node.clone(),
                        outcome: outcome.clone(),
                        round_trips,
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
