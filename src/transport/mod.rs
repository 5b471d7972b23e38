//! Transports: how homelab reaches a node. A transport opens a `NodeExec` per node; all node
//! work (refresh, upload, compose, journal) is argument vectors run through it, so the SSH
//! and local transports share one pipeline and differ only in how a command is carried.
//!
//! - `local`: commands run on this machine (homelab on the node itself, or `--root DIR`
//!   standing in for every node).
//! - `ssh`: the openssh crate over the system `ssh`, one multiplexed connection per node,
//!   host keys checked strictly, keepalives, a timeout on every step; the Docker Engine API
//!   through a forwarded socket.
//!
//! This layer carries commands and reads the engine; it knows nothing of plans, stages or the
//! runtime root's layout, and imports nothing above `model` (the nodes it connects to).

pub mod docker;
pub mod local;
pub mod quote;
pub mod ssh;

use std::time::Duration;

use crate::model::Node;
pub use docker::{Container, DockerError};

/// What a command printed and how it ended.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Output {
    /// The exit status; `None` when killed by a signal.
    pub status: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).trim().to_owned()
    }
}

/// Why a command did not run to an exit status. Only `Unreachable` and `Timeout` are about the
/// link; the others are about this machine or the command itself.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The node cannot be reached (or stopped answering): the link, not the command.
    #[error("{node}: {reason}")]
    Unreachable { node: String, reason: String },
    #[error("`{what}` did not finish within {after:?}")]
    Timeout { what: String, after: Duration },
    /// A long answer stopped coming: nothing for `idle`, `after` into the command. Carries what
    /// it printed until then (the caller says how far it got).
    #[error("`{what}` printed nothing for {idle:?}, {after:?} into its answer")]
    Stalled { what: String, idle: Duration, after: Duration, stdout: Vec<u8> },
    #[error("cannot run `{program}`: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("waiting for `{program}`: {source}")]
    Wait { program: String, source: std::io::Error },
    #[error("empty command")]
    EmptyCommand,
    #[error(transparent)]
    Quote(#[from] quote::QuoteError),
    #[error("runtime root {} is not UTF-8", root.display())]
    RootNotUtf8 { root: std::path::PathBuf },
    /// Host keys are checked strictly: without the file, no node is trusted.
    #[error(
        "no known_hosts file at {}: homelab checks host keys strictly; add the node's key with \
         `ssh-keyscan -p {port} {address} >> {}` after checking its fingerprint",
        known_hosts.display(),
        known_hosts.display()
    )]
    NoKnownHosts { known_hosts: std::path::PathBuf, port: u16, address: String },
    /// What a connection stands for was not proven ([`NodeExec::proven`]): why.
    #[error("{reason}")]
    Unproven { reason: String },
    /// Setting up the local side of a connection (runtime, control folder, ssh config).
    #[error("cannot {what}: {source}")]
    Setup { what: &'static str, source: std::io::Error },
}

/// Runs commands on one node.
pub trait NodeExec: Send + Sync {
    /// Runs `argv` with `stdin`, killing it after `timeout`.
    fn run(&self, argv: &[&str], stdin: &[u8], timeout: Duration) -> Result<Output, ExecError>;
    /// Runs `argv` like [`NodeExec::run`], for a command whose answer is long (a refresh of a
    /// node holding many services): it is given up only when it prints nothing for `idle`, so
    /// an answer that keeps coming is never cut short by a fixed total (`Stalled`).
    fn run_streaming(
        &self,
        argv: &[&str],
        stdin: &[u8],
        idle: Duration,
    ) -> Result<Output, ExecError>;
    /// The node's containers of compose projects, through the Docker Engine API.
    fn containers(&self) -> Result<Vec<Container>, DockerError>;
    /// The runtime root on the node.
    fn root(&self) -> &str;
    /// `DOCKER_HOST` for commands on the node.
    fn docker_host(&self) -> String;
    /// Whether the node's runtime root is on this machine (the local transport): what reads it
    /// may then read it in process rather than through a command.
    fn on_this_machine(&self) -> bool {
        false
    }
    /// Waits until what this connection stands for is proven, where that comes apart from
    /// making it: a node's engine is handed a fresh connection as the controller's
    /// confirmation, which may still be on its way while the engine checks the deploy. A
    /// connection made anew is its own proof.
    fn proven(&self) -> Result<(), ExecError> {
        Ok(())
    }
    /// Runs `work`, a step done in process where the node's root is on this machine, as one
    /// command of this connection: counted as one, and where the commands of a node's services
    /// travel together (`apply::batch`), taken with them (the records first, its batch's number
    /// known). Only for a connection [`NodeExec::on_this_machine`].
    fn run_native(&self, work: &mut dyn FnMut() -> Output) -> Output {
        work()
    }
}

/// Opens connections to nodes.
pub trait Transport: Sync {
    fn connect(&self, node: &Node) -> Result<Box<dyn NodeExec>, ExecError>;

    /// One session with the node's own homelab (`<root>/bin/homelab node serve`), its stdin
    /// and stdout the protocol's (`wire`); `None` where the node's engine runs in this process
    /// (the local transport).
    fn session(&self, _node: &Node) -> Result<Option<Session>, ExecError> {
        Ok(None)
    }

    /// A [`Transport::session`] over a connection made for it alone, never one kept or shared:
    /// what proves that the node still takes new connections.
    fn fresh_session(&self, node: &Node) -> Result<Option<Session>, ExecError> {
        self.session(node)
    }
}

/// A running `homelab node serve` on a node, as a child process of this one (`ssh`): write
/// requests to `input`, read replies from `output`. Dropping it ends the session.
pub struct Session {
    pub input: Option<std::process::ChildStdin>,
    pub output: std::process::ChildStdout,
    child: std::process::Child,
    /// What the carrier (`ssh`) said on stderr.
    errors: std::fs::File,
    /// Held until the node's first answer (a turn among the handshakes made at once).
    turn: Option<Box<dyn std::any::Any + Send>>,
    pub label: String,
}

impl Session {
    pub fn new(
        mut child: std::process::Child,
        errors: std::fs::File,
        turn: Option<Box<dyn std::any::Any + Send>>,
        label: String,
    ) -> std::io::Result<Session> {
        let (Some(input), Some(output)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::other("the session has no stdin or stdout"));
        };
        Ok(Session { input: Some(input), output, child, errors, turn, label })
    }

    /// The node answered: the handshake's turn goes to the next.
    pub fn answered(&mut self) {
        self.turn = None;
    }

    /// After the output ended: how the session ended (the carrier's exit status, `None` for a
    /// signal) and what the carrier said on stderr, trimmed.
    pub fn ended(&mut self) -> (Option<i32>, String) {
        use std::io::{Read, Seek};
        self.input = None;
        let status = self.child.wait().ok().and_then(|s| s.code());
        let mut said = String::new();
        let _ = self.errors.seek(std::io::SeekFrom::Start(0));
        let _ = (&self.errors).take(64 * 1024).read_to_string(&mut said);
        let said: Vec<&str> = said
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("Warning: Permanently added "))
            .collect();
        (status, said.join("; "))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.input = None;
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
