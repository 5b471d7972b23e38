//! `homelab restore --node N --service S --snapshot ID`: a plan, like any other, whose one
//! change puts a service's data back from a snapshot (issue 18): a local one the node took
//! before a change, or `restic:ID`, a backup in the node's restic repository. Signed, reviewed
//! and approved under the policy as a change of kind `restore`, and applied by `apply` with a
//! deploy's stop, snapshot (of the data it replaces), restore, start, verify and journal: a
//! restore that does not come up healthy is rolled back to the data it replaced.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::args::Target;
use super::Selection;
use crate::approve::keys;
use crate::error::{Error, Report};
use crate::model::{Instance, ServiceName};
use crate::plan::{display, PlannedStatus, Restore, RestoreFrom};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  homelab backup list --node chelsty-infra\n  homelab restore --node chelsty-infra --service zigbee2mqtt --snapshot 1a2b3c4d5e6f7a8b\n  homelab restore --node chelsty-infra --service zigbee2mqtt --snapshot restic:4f2a9c1e\n\nThe plan is saved like any other: review it, `homelab approve` it, then `homelab apply` it."
)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub target: Target,
    /// The service whose data is put back.
    #[arg(long, value_name = "SERVICE")]
    pub service: String,
    /// A local snapshot's id, or `restic:ID` for a backup (as `homelab backup list` shows).
    #[arg(long, value_name = "ID")]
    pub snapshot: String,
    /// OpenSSH private key that signs the plan.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Folder for plan files (default: the repository's `plans/`).
    #[arg(long, value_name = "DIR")]
    pub plans_dir: Option<PathBuf>,
}

/// `--snapshot latest` / `restic:latest`: the newest snapshot of the service, resolved when the
/// plan is made (the plan names the id it took).
const LATEST: &str = "latest";

fn refused(message: String) -> Error {
    Error::Unsupported { message }
}

/// `--snapshot`: `(restic?, id)`; the id `latest` is resolved against the node's listing.
fn parse_snapshot(s: &str) -> Result<(bool, String), Error> {
    let (restic, id) = match s.strip_prefix("restic:") {
        Some(id) => (true, id),
        None => (false, s.strip_prefix("local:").unwrap_or(s)),
    };
    if id == LATEST {
        return Ok((restic, LATEST.to_owned()));
    }
    if !Restore::id_ok(id) {
        return Err(refused(format!(
            "`--snapshot {}`: expected a snapshot id (8 to 64 hex digits, as `homelab backup list` shows it), or `restic:ID`",
            crate::quote::cut(s)
        )));
    }
    Ok((restic, id.to_ascii_lowercase()))
}

pub fn run(repo: &Path, args: &RestoreArgs, out: &mut dyn Write) -> Result<Report, Error> {
    let (restic, id) = parse_snapshot(&args.snapshot)?;
    if args.target.nodes.len() != 1 {
        return Err(refused("`restore` takes exactly one `--node`".to_owned()));
    }
    let lab = super::load_for(repo, &args.target)?;
    let sel = Selection::of(repo, &lab, &args.target)?;
    let node_id = sel.nodes[0].clone();
    let node = &lab.nodes[&node_id];
    let service = ServiceName::parse(&args.service)
        .ok()
        .filter(|s| node.services.contains_key(s))
        .ok_or_else(|| {
            refused(format!(
                "`--service {}`: the repository places no such service on node `{node_id}`",
                crate::quote::cut(&args.service)
            ))
        })?;
    let inst = Instance { service: service.clone(), node: node_id.clone() };
    let now = SystemTime::now();
    let Some(key) = keys::find(repo, args.key.as_ref()).as_ref().map(keys::load).transpose()?
    else {
        return Err(refused(
            "a restore is a plan, and homelab signs every plan: give a key with `--key`, \
             $HOMELAB_SIGNING_KEY or Git's `user.signingkey` (see `homelab plan --help`)"
                .to_owned(),
        ));
    };
    let planner = super::plan::planner_of(&lab, &key, now)?;

    // The snapshot must be on the node (or in its repository) and be this service's.
    let exec = sel.transport.connect(node).map_err(|e| refused(format!("{node_id}: {e}")))?;
    let target = node.backup.as_ref();
    if restic && target.is_none() {
        return Err(refused(format!(
            "node `{node_id}` has no restic repository (`backup:` in inventory/topology.yaml)"
        )));
    }
    let (listed, restic_error) =
        crate::backup::list(exec.as_ref(), node_id.as_str(), target.filter(|_| restic))
            .map_err(|e| refused(format!("{node_id}: {e}")))?;
    drop(exec);
    let kind = if restic { "restic" } else { "local" };
    // A restic snapshot fetched for an earlier restore is kept among the local ones as
    // `restic-<id>`: not a snapshot a plan names.
    let theirs = |l: &&crate::backup::Listed| {
        l.kind == kind && l.service == service.as_str() && Restore::id_ok(&l.id)
    };
    let found = if id == LATEST {
        // The newest; of a service whose backups are of several sets, only when one is named
        // by its id (a restore puts back one snapshot).
        let sets: std::collections::BTreeSet<&str> =
            listed.iter().filter(theirs).map(|l| l.set.as_str()).collect();
        if sets.len() > 1 {
            return Err(refused(format!(
                "`{service}` has {kind} snapshots of several backup sets ({}): name the one to restore by its id (`homelab backup list --node {node_id}`)",
                sets.into_iter().collect::<Vec<_>>().join(", ")
            )));
        }
        listed.iter().filter(theirs).max_by(|a, b| a.time.cmp(&b.time))
    } else {
        listed.iter().find(|l| l.kind == kind && Restore::id_ok(&l.id) && id_matches(&l.id, &id))
    };
    let Some(found) = found else {
        let theirs: Vec<String> = listed
            .iter()
            .filter(theirs)
            .map(|l| format!("{}{} ({})", if restic { "restic:" } else { "" }, l.id, l.time))
            .collect();
        let mut message = format!(
            "node `{node_id}` has no {kind} snapshot `{id}`; {service}'s: {}",
            if theirs.is_empty() { "none".to_owned() } else { theirs.join(", ") }
        );
        if let Some(why) = restic_error {
            message.push_str(&format!(" (restic: {why})"));
        }
        return Err(refused(message));
    };
    if found.service != service.as_str() {
        return Err(refused(format!(
            "snapshot `{id}` on node `{node_id}` holds the data of `{}`, not of `{service}`",
            found.service
        )));
    }
    let from = match target.filter(|_| restic) {
        Some(t) => {
            RestoreFrom::Restic { repository: t.repository.clone(), options: t.options.clone() }
        }
        None => RestoreFrom::Local,
    };
    let restore = Restore { id: found.id.clone(), from };

    let mut plan = super::plan::compute(&lab, &sel, crate::git::tree_state(repo), planner, now)?;
    if let Some(n) = plan.nodes.iter().find(|n| n.node == node_id) {
        if let PlannedStatus::Unreachable { reason } = &n.status {
            return Err(refused(format!("node `{node_id}` could not be read: {reason}")));
        }
    }
    let rendered = crate::render::render_all(&lab, |i| i == &inst)?;
    crate::plan::make_restore(&lab, &mut plan, &rendered, &inst, restore).map_err(refused)?;
    let plans = super::plans_dir(repo, args.plans_dir.as_ref());
    let saved = super::plan::save(&plan, &key, &plans, &sel.records, |_| {})?;
    display::write_text(out, &saved.id, &plan, super::use_color()).map_err(Error::stdout)?;
    eprintln!("\nsaved {} (pending action {})", saved.path.display(), saved.pending.display());
    eprintln!("review it in a pull request, then: homelab approve {}", saved.path.display());
    Ok(Report::Success)
}

/// A restic id as given may be the short one (8 digits) of a listing, or the whole one.
fn id_matches(listed: &str, given: &str) -> bool {
    listed == given || given.starts_with(listed) || listed.starts_with(given)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_argument_is_hex_local_or_restic_and_nothing_else() {
        assert_eq!(parse_snapshot("1A2b3c4d5e6f7a8b").unwrap(), (false, "1a2b3c4d5e6f7a8b".into()));
        assert_eq!(parse_snapshot("restic:4f2a9c1e").unwrap(), (true, "4f2a9c1e".into()));
        assert_eq!(parse_snapshot("local:4f2a9c1e").unwrap(), (false, "4f2a9c1e".into()));
        assert_eq!(parse_snapshot("restic:latest").unwrap(), (true, "latest".into()));
        for bad in ["", "restic:", "4f2a", "4f2a9c1e; rm -rf /", "../4f2a9c1e", "restic:$(id)xx"] {
            assert!(parse_snapshot(bad).is_err(), "{bad}");
        }
    }
}
