//! Executing an approved plan, per node, over a transport: the guide's staged pipeline
//! prepare → validate → deploy → verify → (diagnose, roll back on failure) → complete.
//!
//! - [`schedule`]: nodes in parallel (a concurrency limit), a dependency on another node's
//!   service waits for it.
//! - [`node`]: one node: connect, the read-only checks, the lock, the journal, which is written
//!   durably on the node before the next stage starts, so `--resume` continues at any cut; its
//!   independent services in parallel, dependents after their dependencies; the commands of
//!   services in step travel together, one round trip per stage for the node ([`batch`]).
//! - [`service`]: the stages of one service, and its rollback: a service is switched by one
//!   atomic symlink rename; a failed deploy or healthcheck switches back.
//! - [`outcome`]: how a node ended, and the [`Verdict`] of a run.
//! - [`remote`]: the fixed scripts run on a node; [`sink`]: where progress goes.
//! - [`reject`]: a rejection written on the plan's nodes (for `reject`, the page, the bot).
//!
//! It never re-renders: it uploads exactly the bytes of the reviewed plan. It never prints
//! (events go to a [`Sink`]), never reads the system clock (an [`Options::clock`] is given),
//! and imports nothing of `command` or `cli`.

mod batch;
mod board;
pub mod deadman;
mod diagnose;
pub mod engine;
mod native;
mod node;
pub mod outcome;
pub mod reject;
pub mod remote;
pub(crate) mod restic;
mod schedule;
mod service;
pub mod sink;
mod stable;
pub mod switch;

use std::time::Duration;

pub use native::this_is_the_program;
pub use outcome::{verdict, NodeOutcome, Verdict};
pub use schedule::execute;
pub use sink::{Event, Sink};

use crate::clock::Clock;
use crate::model::{NodeName, ServiceName};
use crate::node::journal::Stage;

/// What the operator asked for beyond the plan itself.
#[derive(Debug, Clone)]
pub struct Options {
    pub nodes: Option<Vec<NodeName>>,
    pub services: Option<Vec<ServiceName>>,
    pub mode: Mode,
    pub resume: bool,
    pub lock_wait: Duration,
    pub parallel: usize,
    /// Who applies, as operators read it in the lock and the records (`user@host pid N`).
    pub holder: String,
    /// The host and process of this apply, recorded in the lock: only a lock of the same plan
    /// left on this host by a process that is gone may be taken over.
    pub host: String,
    pub pid: u32,
    /// Where the journal, the lock, events and progress read the time.
    pub clock: Clock,
    /// When the plan expires: a node or service that has not started by then never starts;
    /// only work already begun may be finished by `--resume`.
    pub expires: std::time::SystemTime,
    /// Releases and apply journals kept per service on a node (`policy.yaml`
    /// `keep_releases`); older ones are pruned after a completed apply.
    pub keep_releases: u32,
    /// The dead-man rollback: how long a node waits for the confirmation of a deploy over a
    /// fresh connection (after `compose up` and the healthcheck's own time) before it rolls
    /// the service back by itself; `None`: no dead-man.
    pub confirm_timeout: Option<Duration>,
    /// The plan's and approvals' signed texts, for nodes whose own engine runs their part
    /// (`homelab node serve`): each node checks them itself before it acts. `None`: every
    /// node's part runs here, over the transport's commands.
    pub signed: Option<engine::Signed>,
    /// Nodes whose part of this plan an earlier run finished (the controller's record says
    /// `applied` or `applied earlier`): their services are at the plan's version, so a
    /// dependency there is met though this run leaves the node out.
    pub finished_nodes: std::collections::BTreeSet<NodeName>,
}

/// Run the pipeline, or only look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Run the stages; with `only`, just that one (for services whose journal is right before
    /// it).
    Run { only: Option<Stage> },
    /// `--stage diagnose`: status and logs of the selected services, nothing changed.
    Diagnose,
}

impl Mode {
    /// The one stage to run, if the operator asked for one.
    pub fn only(self) -> Option<Stage> {
        match self {
            Mode::Run { only } => only,
            Mode::Diagnose => None,
        }
    }
}
