//! The command line: clap types and dispatch. Commands parse into plain values here and call
//! into the library; nothing below this file prints to the terminal on its own.

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::error::Error;
use crate::graph::DeployGraph;
use crate::model::{self, Homelab, NodeName, ServiceName};
use crate::render;

const EXAMPLES: &str = "\
Examples:
  homelab validate                      check the homelab in the current folder
  homelab graph --format mermaid        the dependency graph, for a Forgejo PR
  homelab render --node chelsty-infra --out out/   what would be deployed on CHELSTY-INFRA";

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

pub fn run(cli: Cli, out: &mut dyn Write) -> Result<(), Error> {
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
                    result.map(|_| ()).map_err(|diagnostics| Error::Invalid { diagnostics })
                }
                (DataFormat::Text, Ok(lab)) => writeln!(
                    out,
                    "homelab is valid: {} nodes, {} services, {} service instances",
                    lab.nodes.len(),
                    lab.services.len(),
                    lab.instances.len()
                )
                .map_err(io),
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
            Ok(())
        }
    }
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
