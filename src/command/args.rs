//! Arguments shared by several commands, as clap parses them: plain values, no system calls.
//! `command::Selection` turns them into built values (a transport, nodes, records).

use std::path::PathBuf;

use clap::ValueEnum;

/// Which nodes, and how to reach them.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// How to reach nodes: `ssh`, or `local` (runtime roots on this machine).
    #[arg(long, value_enum, default_value_t = TransportKind::Ssh)]
    pub transport: TransportKind,
    /// With `--transport local`: node `<id>` lives at `DIR/<id>/` (default: its runtime root).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Only these nodes (repeatable; id or display name).
    #[arg(long = "node", value_name = "NODE")]
    pub nodes: Vec<String>,
    /// SSH: the known_hosts file host keys are checked against (default:
    /// inventory/known_hosts of the repository).
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
    /// SSH: the private key to log in to nodes with (default: ssh's own).
    #[arg(long, value_name = "FILE", env = "HOMELAB_SSH_KEY")]
    pub ssh_key: Option<PathBuf>,
    /// SSH: seconds a node's connection stays open after the command's last session, for the
    /// next command to reuse (a plan, then its apply); 0 closes it with the command.
    #[arg(long, value_name = "SECS", env = "HOMELAB_SSH_IDLE",
          default_value_t = crate::transport::ssh::IDLE.as_secs())]
    pub ssh_idle: u64,
    #[command(flatten)]
    pub controller: Controller,
}

#[derive(Debug, clap::Args)]
pub struct Controller {
    /// The controller's runtime root (pending actions, consumed and rejected plan records).
    /// Default: `--root DIR` with the local transport, else /opt/homelab.
    #[arg(long, value_name = "DIR", env = "HOMELAB_ROOT")]
    pub controller_root: Option<PathBuf>,
}

impl Controller {
    pub fn root(&self, local_root: Option<&PathBuf>) -> PathBuf {
        self.controller_root
            .clone()
            .or_else(|| local_root.cloned())
            .unwrap_or_else(|| PathBuf::from("/opt/homelab"))
    }
}

#[derive(Debug, clap::Args)]
pub struct EventsAt {
    /// As for plan and apply: node `<id>`'s runtime root is `DIR/<id>/`, its events under
    /// `DIR/<id>/events/` (default: this node's runtime root, $HOMELAB_ROOT else /opt/homelab).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// The node the events are about (default: $HOMELAB_NODE, else this host's name).
    #[arg(long, value_name = "NODE")]
    pub node: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StageArg {
    Prepare,
    Validate,
    Deploy,
    Verify,
    Complete,
    /// Status and recent logs of the selected services (logs stay on the node); changes nothing.
    Diagnose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TransportKind {
    Ssh,
    Local,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DataFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum GraphFormat {
    Text,
    Dot,
    Mermaid,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ShowFormat {
    Text,
    Markdown,
    Json,
}
