//! `homelab graph`: the dependency graph of service instances as text, DOT or Mermaid.

use std::io::Write;
use std::path::Path;

use super::args::GraphFormat;
use crate::error::{Error, Report};
use crate::graph::DeployGraph;

pub fn run(repo: &Path, format: GraphFormat, out: &mut dyn Write) -> Result<Report, Error> {
    let lab = super::load(repo)?;
    let graph = DeployGraph::build(&lab).expect("validation rejects cycles");
    match format {
        GraphFormat::Dot => graph.write_dot(out),
        GraphFormat::Mermaid => graph.write_mermaid(out),
        GraphFormat::Text => graph.write_text(out),
    }
    .map_err(Error::stdout)?;
    Ok(Report::Success)
}
