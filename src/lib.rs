//! homelab: a Terraform-like plan/apply for a self-hosted homelab.
//!
//! The tree is the pipeline (docs/architecture.md tells it in full):
//!
//! ```text
//! cli ─ command/<verb>            parse, build a Selection, own the terminal and the clock
//!   │
//!   ├─ check ─ model              load (the only repository IO) → validate (pure rules) → build
//!   │          graph, render      pure: the dependency graph, the exact artifacts per instance
//!   ├─ observe ─ transport        actual state of each node, over ssh or locally
//!   ├─ plan (diff, display, file) pure diff of desired and actual; the plan file's one owner
//!   ├─ review                     the plan's artifacts against the render of its commit
//!   ├─ approve (sshsig, signers,  signatures, which key signs, who may approve, pre-flight
//!   │           keys, policy)
//!   ├─ apply (schedule, board,    per node over a transport: stages, journal, lock, rollback
//!   │         node, service, outcome)
//!   ├─ forge (client, pr)         the plan's Forgejo pull request, comment and commit status
//!   ├─ backup                     backup sets into restic on the node, snapshots listed
//!   ├─ bootstrap                  a bare node made ready: host key, tree, binary, agent image
//!   ├─ world                      the observer: every node's new events folded into world/
//!   ├─ agent                      the stability agent on a node: engine events, link, broker
//!   ├─ supervise                  drift as a pending plan (never applied), and adopt's patch
//!   ├─ executor                   the actions queue: approved plans moved through to their end
//!   ├─ import                     a published Compose project made a service that validates
//!   ├─ telegram (client, bot)     the bot: plans, results, incidents; presses signed as telegram:<id>
//!   ├─ ui                         the operator page: world, plans, events; approvals handed in
//!   ├─ forge                      Forgejo's REST API: the plan's pull request, comment, status
//!   └─ events                     append-only event lines
//! engine (serve, trust, run)      the node's side: `homelab node serve`, bundles checked against
//!                                 the node's trust roots, one detached engine per plan
//! wire                            the node protocol: frames, hello, requests and replies
//! node (Layout, records)          every path under a runtime root and every record kept there
//! clock, digest, files, git       time formatting, SHA-256 and HMAC, atomic writes, the Git tree
//! http                            what the forge and telegram clients share: agent, retries, scrub
//! error                           typed errors and the one place exit codes are decided
//! quote                           input quoted in a message, cut to a few hundred characters
//! ```
//!
//! The binary (`main.rs`) parses the command line and calls [`run`]; its exit code comes from
//! [`exit_code`]. Lower modules never import `command` or `cli` (tests/it/architecture.rs).

// Diagnostics are large on purpose (file, line, field, message, fix) and only on the cold
// error path; boxing them would buy nothing.
#![allow(clippy::result_large_err)]

pub mod agent;
pub mod apply;
pub mod approve;
pub mod backup;
pub mod bootstrap;
pub mod check;
pub mod cli;
pub mod clock;
pub mod command;
pub mod digest;
pub mod engine;
pub mod error;
pub mod events;
pub mod executor;
pub mod files;
pub mod forge;
pub mod git;
pub mod graph;
pub mod http;
pub mod import;
pub mod model;
pub mod node;
pub mod observe;
pub mod plan;
pub mod quote;
pub mod render;
pub mod review;
pub mod supervise;
pub mod telegram;
pub mod transport;
pub mod ui;
pub mod wire;
pub mod world;

pub use cli::Cli;
pub use error::{exit_code, Error, Report};

/// Runs one command, writing its data output to `out`.
/// `Ok` carries the exit code of a command that succeeded (2: `plan --detailed-exitcode` found
/// changes).
pub fn run(cli: Cli, out: &mut dyn std::io::Write) -> Result<Report, Error> {
    cli::run(cli, out)
}
