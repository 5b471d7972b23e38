//! `homelab backup [--node N] [--service S]`: the backup sets of the selected services copied
//! into each node's restic repository (`crate::backup`); `homelab backup list`: the local
//! snapshots taken before changes and the restic snapshots, per node.

use std::io::Write;
use std::path::Path;

use super::args::Target;
use super::Selection;
use crate::error::{Error, Report};
use crate::model::{Homelab, ServiceName};

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
#[command(
    after_help = "Examples:\n  homelab backup\n  homelab backup --node chelsty-infra --service zigbee2mqtt\n  homelab backup list --node chelsty-infra"
)]
pub struct BackupArgs {
    #[command(subcommand)]
    pub list: Option<BackupCommand>,
    #[command(flatten)]
    pub sel: BackupSelection,
}

#[derive(Debug, clap::Subcommand)]
pub enum BackupCommand {
    /// The snapshots of each node: local ones (taken before changes) and restic's.
    List(BackupSelection),
}

#[derive(Debug, clap::Args)]
pub struct BackupSelection {
    /// Only these services (repeatable).
    #[arg(long = "service", value_name = "SERVICE")]
    pub services: Vec<String>,
    #[command(flatten)]
    pub target: Target,
}

pub fn run(repo: &Path, args: &BackupArgs, out: &mut dyn Write) -> Result<Report, Error> {
    match &args.list {
        Some(BackupCommand::List(sel)) => list(repo, sel, out),
        None => back_up(repo, &args.sel, out),
    }
}

/// The services named with `--service`, checked against the homelab.
fn services(lab: &Homelab, names: &[String]) -> Result<Vec<ServiceName>, Error> {
    names
        .iter()
        .map(|n| {
            ServiceName::parse(n).ok().filter(|s| lab.services.contains_key(s)).ok_or_else(|| {
                Error::Unsupported {
                    message: format!(
                        "`--service {}`: no such service in services/",
                        crate::quote::cut(n)
                    ),
                }
            })
        })
        .collect()
}

fn back_up(repo: &Path, sel: &BackupSelection, out: &mut dyn Write) -> Result<Report, Error> {
    let lab = super::load_for(repo, &sel.target)?;
    let only = services(&lab, &sel.services)?;
    let selection = Selection::of(repo, &lab, &sel.target)?;
    let mut failed = 0usize;
    let mut say = |line: String| writeln!(out, "{line}").map_err(Error::stdout);
    for n in &selection.nodes {
        let node = &lab.nodes[n];
        let sets: Vec<(&ServiceName, &crate::model::BackupSet)> = node
            .services
            .keys()
            .filter(|s| only.is_empty() || only.contains(s))
            .filter_map(|s| lab.services.get(s).map(|svc| (s, svc)))
            .flat_map(|(s, svc)| svc.backup_sets.iter().map(move |b| (s, b)))
            .collect();
        if sets.is_empty() {
            continue;
        }
        let Some(target) = &node.backup else {
            failed += sets.len();
            say(format!(
                "{n}: no restic repository: set `backup: {{repository: …}}` in inventory/topology.yaml (for all nodes, or under the node)"
            ))?;
            continue;
        };
        let exec = match selection.transport.connect(node) {
            Ok(e) => e,
            Err(e) => {
                failed += sets.len();
                say(format!("{n}: unreachable: {e}"))?;
                continue;
            }
        };
        for (svc, set) in sets {
            let name = format!("{n} {svc}/{}", set.name);
            match crate::backup::back_up(exec.as_ref(), n.as_str(), svc.as_str(), set, target) {
                Ok(crate::backup::Backed::Snapshot { id, files, added }) => say(format!(
                    "{name}: restic snapshot {id}, {files} file(s), {added} byte(s) added; the last {} kept",
                    set.retain
                ))?,
                Ok(crate::backup::Backed::Empty) => {
                    say(format!("{name}: nothing to back up (no path of the set on the node)"))?
                }
                Err(e) => {
                    failed += 1;
                    say(format!("{name}: failed: {e}"))?;
                }
            }
        }
    }
    Ok(if failed == 0 { Report::Success } else { Report::Failed })
}

fn list(repo: &Path, sel: &BackupSelection, out: &mut dyn Write) -> Result<Report, Error> {
    let lab = super::load_for(repo, &sel.target)?;
    let only = services(&lab, &sel.services)?;
    let selection = Selection::of(repo, &lab, &sel.target)?;
    let mut failed = false;
    let mut say = |line: String| writeln!(out, "{line}").map_err(Error::stdout);
    for n in &selection.nodes {
        let node = &lab.nodes[n];
        let listed =
            selection.transport.connect(node).map_err(|e| e.to_string()).and_then(|exec| {
                crate::backup::list(exec.as_ref(), n.as_str(), node.backup.as_ref())
                    .map_err(|e| e.to_string())
            });
        match listed {
            Err(e) => {
                failed = true;
                say(format!("{n}: {e}"))?;
            }
            Ok((found, restic_error)) => {
                say(format!("{n}:"))?;
                let shown: Vec<_> = found
                    .iter()
                    .filter(|l| only.is_empty() || only.iter().any(|s| s.as_str() == l.service))
                    .collect();
                if shown.is_empty() {
                    say("  no snapshots".to_owned())?;
                }
                for l in shown {
                    let size = l.kib.map(|k| format!(" {k} KiB")).unwrap_or_default();
                    say(format!(
                        "  {:<6} {} {} {} {}{size}",
                        l.kind, l.service, l.set, l.id, l.time
                    ))?;
                }
                if let Some(why) = restic_error {
                    failed = true;
                    say(format!("  restic: {why}"))?;
                }
            }
        }
    }
    Ok(if failed { Report::Failed } else { Report::Success })
}
