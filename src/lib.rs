//! homelab: a Terraform-like plan/apply for a self-hosted homelab.
//!
//! The tree follows the pipeline: `model` (load, validate) → `graph` → `render`; `check` is
//! the full validation on top of them. The binary (`main.rs`) parses the command line and
//! calls [`run`]; exit codes come from [`Error::code`].

// Diagnostics are large on purpose (file, line, field, message, fix) and only on the cold
// error path; boxing them would buy nothing.
#![allow(clippy::result_large_err)]

pub mod apply;
pub mod approve;
pub mod check;
pub mod cli;
pub mod command;
pub mod error;
pub mod events;
pub mod graph;
pub mod model;
pub mod observe;
pub mod plan;
pub mod render;
pub mod transport;

pub use cli::Cli;
pub use error::Error;

/// Runs one command, writing its data output to `out`.
/// `Ok` carries the exit code of a command that succeeded (2: `plan --detailed-exitcode` found
/// changes).
pub fn run(cli: Cli, out: &mut dyn std::io::Write) -> Result<u8, Error> {
    cli::run(cli, out)
}
