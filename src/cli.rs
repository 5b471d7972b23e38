//! The command line: clap types and dispatch. Commands parse into plain values here and call
//! into the library; nothing below this file prints to the terminal on its own.

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::command::show::ShowFormat;
use crate::error::Error;
use crate::graph::DeployGraph;
use crate::model::{self, Homelab, NodeName, ServiceName};
use crate::render;

const EXAMPLES: &str = "\
Examples:
  homelab validate                      check the homelab in the current folder
  homelab graph --format mermaid        the dependency graph, for a Forgejo PR
  homelab render --node chelsty-infra --out out/   what would be deployed on CHELSTY-INFRA
  homelab plan --key ~/.ssh/id_ed25519  plan every node over SSH; writes plans/<id>.plan
  homelab approve plans/<id>.plan       sign the plan as an approver
  homelab apply plans/<id>.approved     apply an approved plan";

#[derive(Debug, Parser)]
#[command(name = "homelab", version, about = "Plan/apply for a self-hosted homelab", after_help = EXAMPLES)]
pub struct Cli {
    /// The homelab repository (inventory/, hosts/, services/, templates/).
    #[arg(long, global = true, env = "HOMELAB_REPO", default_value = ".", value_name = "DIR")]
    pub repo: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load the homelab definition and report every problem, with file, line and field.
    #[command(after_help = "Example:\n  homelab validate --repo ~/homelab")]
    Validate {
        #[arg(long, value_enum, default_value_t = DataFormat::Text)]
        format: DataFormat,
    },
    /// Print the dependency graph of service instances and the deployment order.
    #[command(
        after_help = "Examples:\n  homelab graph --format dot | dot -Tsvg > graph.svg\n  homelab graph --format mermaid   (paste into a Forgejo comment inside ```mermaid)"
    )]
    Graph {
        #[arg(long, value_enum, default_value_t = GraphFormat::Text)]
        format: GraphFormat,
    },
    /// Render the exact artifacts each service instance will have on its node.
    #[command(
        after_help = "Example:\n  homelab render --node chelsty-infra --service mosquitto --out out/\n  (writes out/chelsty-infra/mosquitto/{docker-compose.yml,healthcheck.sh,manifest.json})"
    )]
    Render {
        /// Only this node (id or display name).
        #[arg(long, value_name = "NODE")]
        node: Option<String>,
        /// Only this service.
        #[arg(long, value_name = "SERVICE")]
        service: Option<String>,
        /// Where to write `<node>/<service>/...`.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Diff desired against actual state and write a signed plan: `plans/<id>.plan`.
    #[command(
        after_help = "Examples:\n  homelab plan --transport local --root /tmp/homelab-runtime\n  homelab plan --node chelsty-infra --key ~/.ssh/id_ed25519 --detailed-exitcode\n\nThe signing key is `--key`, else $HOMELAB_SIGNING_KEY, else Git's `user.signingkey`;\nan encrypted key takes its passphrase from $HOMELAB_KEY_PASSPHRASE."
    )]
    Plan {
        #[command(flatten)]
        target: Target,
        /// OpenSSH private key that signs the plan.
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
        /// Folder for plan files (default: the repository's `plans/`).
        #[arg(long, value_name = "DIR")]
        plans_dir: Option<PathBuf>,
        /// Exit 0 when nothing changes, 2 when the plan has changes (as Terraform).
        #[arg(long)]
        detailed_exitcode: bool,
    },
    /// Show a plan file: colour text, Markdown for a Forgejo comment, or JSON.
    #[command(
        after_help = "Examples:\n  homelab show plans/1a2b3c4d5e6f7a8b.plan\n  homelab show plans/1a2b3c4d5e6f7a8b.plan --format markdown > comment.md"
    )]
    Show {
        plan: PathBuf,
        #[arg(long, value_enum, default_value_t = ShowFormat::Text)]
        format: ShowFormat,
    },
    /// Approve a plan with your SSH key: writes `plans/<id>.approved`.
    #[command(
        after_help = "Example:\n  homelab approve plans/1a2b3c4d5e6f7a8b.plan --key ~/.ssh/id_ed25519 --yes"
    )]
    Approve {
        plan: PathBuf,
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
        /// Approve without asking (required when stdin is not a terminal).
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        controller: Controller,
    },
    /// Reject a plan: apply will refuse it.
    #[command(
        after_help = "Example:\n  homelab reject plans/1a2b3c4d5e6f7a8b.plan --reason \"mosquitto upgrade waits for the weekend\""
    )]
    Reject {
        plan: PathBuf,
        #[arg(long)]
        reason: String,
        /// Your key, to record who rejected (optional).
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
        #[command(flatten)]
        controller: Controller,
    },
    /// Apply an approved plan, per node.
    #[command(
        after_help = "Examples:\n  homelab apply plans/1a2b3c4d5e6f7a8b.approved\n  homelab apply --node chelsty-infra --transport local plans/1a2b3c4d5e6f7a8b.approved"
    )]
    Apply {
        approved: PathBuf,
        #[command(flatten)]
        target: Target,
        /// Only these services (repeatable); the rest of the plan stays pending.
        #[arg(long = "service", value_name = "SERVICE")]
        services: Vec<String>,
        /// Run only this stage of the pipeline.
        #[arg(long, value_enum)]
        stage: Option<StageArg>,
        /// Continue an apply that stopped (dropped link, killed process) where it stopped.
        #[arg(long)]
        resume: bool,
        /// Wait up to this many seconds for a node locked by another apply (default: refuse).
        #[arg(long, value_name = "SECONDS", default_value_t = 0)]
        lock_wait: u64,
        /// How many nodes to apply at once.
        #[arg(long, value_name = "N", default_value_t = 8)]
        parallel: usize,
        /// Progress as plain lines (default) or JSON lines.
        #[arg(long, value_enum, default_value_t = DataFormat::Text)]
        format: DataFormat,
    },
    /// Emit or read events (append-only JSON lines under <root>/events/).
    #[command(
        subcommand,
        after_help = "Examples:\n  homelab events emit deployment_started info my-script.sh mosquitto cid-123 '{}'\n  homelab events tail --node chelsty-infra"
    )]
    Events(EventsCommand),
    /// Remove a node's apply lock after showing who holds it (for a holder that is gone).
    #[command(after_help = "Example:\n  homelab unlock --node chelsty-infra")]
    Unlock {
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Append one event, with the guide's argument order (`emit_event` of scripts/lib/events.sh).
    #[command(
        after_help = "Example:\n  homelab events emit service_unhealthy error monitor.py ollama cid-123 '{\"error\": \"OOM\"}'"
    )]
    Emit {
        /// One of the normalized types (deployment_started, service_unhealthy, ...).
        kind: String,
        /// debug, info, warning, error or critical.
        severity: String,
        /// Who emits it (a script, an agent).
        source: String,
        /// The service it is about (`-` for none).
        service: String,
        /// Correlation id tying related events together.
        correlation_id: String,
        /// A JSON object with details (never a secret value).
        #[arg(default_value = "{}")]
        data: String,
        #[command(flatten)]
        at: EventsAt,
    },
    /// Print events, oldest first; `--follow` keeps printing new ones.
    #[command(after_help = "Example:\n  homelab events tail --node chelsty-infra --follow")]
    Tail {
        #[command(flatten)]
        at: EventsAt,
        #[arg(long)]
        follow: bool,
        #[arg(long, value_enum, default_value_t = DataFormat::Text)]
        format: DataFormat,
    },
}

#[derive(Debug, clap::Args)]
pub struct EventsAt {
    /// The runtime root holding `events/`.
    #[arg(long, value_name = "DIR", env = "HOMELAB_ROOT", default_value = "/opt/homelab")]
    pub root: PathBuf,
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

impl StageArg {
    pub fn stage(self) -> crate::node::journal::Stage {
        use crate::node::journal::Stage;
        match self {
            StageArg::Prepare => Stage::Prepared,
            StageArg::Validate => Stage::Validated,
            StageArg::Deploy => Stage::Deployed,
            StageArg::Verify => Stage::Verified,
            StageArg::Complete | StageArg::Diagnose => Stage::Completed,
        }
    }
}

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

fn load(cli: &Cli) -> Result<Homelab, Error> {
    model::load(&cli.repo).map_err(|diagnostics| Error::Invalid { diagnostics })
}

pub fn run(cli: Cli, out: &mut dyn Write) -> Result<u8, Error> {
    let io = |e: std::io::Error| Error::Write { path: PathBuf::from("<stdout>"), source: e };
    match &cli.command {
        Command::Validate { format } => {
            let result = model::load(&cli.repo);
            match (format, result) {
                (DataFormat::Json, result) => {
                    let diags = result.as_ref().err().cloned().unwrap_or_default();
                    let doc = serde_json::json!({ "valid": result.is_ok(), "problems": diags });
                    writeln!(out, "{}", serde_json::to_string_pretty(&doc).expect("json"))
                        .map_err(io)?;
                    result.map(|_| 0).map_err(|diagnostics| Error::Invalid { diagnostics })
                }
                (DataFormat::Text, Ok(lab)) => writeln!(
                    out,
                    "homelab is valid: {} nodes, {} services, {} service instances",
                    lab.nodes.len(),
                    lab.services.len(),
                    lab.instances.len()
                )
                .map_err(io)
                .map(|()| 0),
                (DataFormat::Text, Err(diagnostics)) => Err(Error::Invalid { diagnostics }),
            }
        }
        Command::Graph { format } => {
            let lab = load(&cli)?;
            let graph = DeployGraph::build(&lab).expect("validation rejects cycles");
            match format {
                GraphFormat::Dot => graph.write_dot(out),
                GraphFormat::Mermaid => graph.write_mermaid(out),
                GraphFormat::Text => graph.write_text(out),
            }
            .map_err(io)
            .map(|()| 0)
        }
        Command::Render { node, service, out: dir } => {
            let lab = load(&cli)?;
            let node = node.as_deref().map(|n| resolve_node(&lab, n)).transpose()?;
            let service =
                service.as_deref().map(|s| resolve_service(&lab, s, node.as_ref())).transpose()?;
            let rendered = render::render_all(&lab, |i| {
                node.as_ref().is_none_or(|n| &i.node == n)
                    && service.as_ref().is_none_or(|s| &i.service == s)
            })
            .map_err(|e| Error::Render { message: e.to_string() })?;
            render::write_tree(dir, &rendered)
                .map_err(|e| Error::Write { path: dir.clone(), source: e })?;
            for r in &rendered {
                writeln!(
                    out,
                    "rendered {} -> {}",
                    r.instance,
                    dir.join(r.instance.node.as_str()).join(r.instance.service.as_str()).display()
                )
                .map_err(io)?;
            }
            Ok(0)
        }
        Command::Plan { target, key, plans_dir, detailed_exitcode } => {
            let lab = load(&cli)?;
            crate::command::plan::run(
                &cli.repo,
                &lab,
                target,
                key.as_ref(),
                plans_dir.as_ref(),
                *detailed_exitcode,
                out,
            )
        }
        Command::Show { plan, format } => {
            crate::command::show::run(&cli.repo, plan, *format, out).map(|()| 0)
        }
        Command::Approve { plan, key, yes, controller } => {
            let lab = load(&cli)?;
            crate::command::approve::run_approve(
                &cli.repo,
                &lab,
                plan,
                key.as_ref(),
                *yes,
                controller,
                out,
            )
        }
        Command::Reject { plan, reason, key, controller } => {
            let lab = load(&cli)?;
            crate::command::approve::run_reject(
                &cli.repo,
                &lab,
                plan,
                reason,
                key.as_ref(),
                controller,
                out,
            )
        }
        Command::Apply {
            approved,
            target,
            services,
            stage,
            resume,
            lock_wait,
            parallel,
            format,
        } => {
            let lab = load(&cli)?;
            let args = crate::command::apply::ApplyArgs {
                approved,
                target,
                services,
                mode: match stage {
                    Some(StageArg::Diagnose) => crate::apply::Mode::Diagnose,
                    _ => crate::apply::Mode::Run { only: stage.map(StageArg::stage) },
                },
                resume: *resume,
                lock_wait: *lock_wait,
                parallel: *parallel,
                json: matches!(format, DataFormat::Json),
            };
            crate::command::apply::run(&cli.repo, &lab, &args, out)
        }
        Command::Events(cmd) => crate::command::events::run(cmd, out),
        Command::Unlock { target } => {
            let lab = load(&cli)?;
            crate::command::apply::unlock(&cli.repo, &lab, target, out)
        }
    }
}

/// The transport a `Target` asks for.
pub fn transport_for(
    repo: &std::path::Path,
    target: &Target,
) -> Result<Box<dyn crate::transport::Transport>, Error> {
    match target.transport {
        TransportKind::Local => {
            Ok(Box::new(crate::transport::local::LocalTransport::new(target.root.clone())))
        }
        TransportKind::Ssh => {
            let known_hosts =
                target.known_hosts.clone().unwrap_or_else(|| repo.join("inventory/known_hosts"));
            Ok(Box::new(crate::transport::ssh::SshTransport::new(
                known_hosts,
                target.ssh_key.clone(),
            )))
        }
    }
}

/// The nodes a `Target` selects: all by default.
pub fn nodes_for(lab: &Homelab, target: &Target) -> Result<Vec<NodeName>, Error> {
    if target.nodes.is_empty() {
        return Ok(lab.nodes.keys().cloned().collect());
    }
    let mut out = Vec::new();
    for n in &target.nodes {
        let id = resolve_node(lab, n)?;
        if !out.contains(&id) {
            out.push(id);
        }
    }
    out.sort();
    Ok(out)
}

pub fn resolve_node(lab: &Homelab, name: &str) -> Result<NodeName, Error> {
    lab.node(name).map(|n| n.id.clone()).ok_or_else(|| Error::UnknownNode {
        name: name.to_owned(),
        known: lab.nodes.keys().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", "),
    })
}

pub fn resolve_service(
    lab: &Homelab,
    name: &str,
    node: Option<&NodeName>,
) -> Result<ServiceName, Error> {
    let candidates: Vec<&ServiceName> = match node {
        Some(n) => lab.nodes[n].services.keys().collect(),
        None => lab.services.keys().collect(),
    };
    candidates.iter().find(|s| s.as_str() == name).map(|s| (*s).clone()).ok_or_else(|| {
        Error::UnknownService {
            name: name.to_owned(),
            node: node.map(ToString::to_string),
            known: candidates.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", "),
        }
    })
}
