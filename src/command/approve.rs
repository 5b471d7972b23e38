//! `homelab approve` and `homelab reject`: show the plan, ask the operator, sign or record the
//! refusal. What may be approved is `crate::approve::policy`'s to decide.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::args::{Controller, Target};
use crate::approve::keys::{self, KeyError};
use crate::approve::policy::{self, Records, Refusal};
use crate::approve::APPROVE_NAMESPACE;
use crate::error::{Error, Report};
use crate::plan::{display, file};

pub fn approve(
    repo: &Path,
    plan_path: &Path,
    key_flag: Option<&PathBuf>,
    yes: bool,
    controller: &Controller,
    out: &mut dyn Write,
) -> Result<Report, Error> {
    let lab = super::load(repo)?;
    let loaded = file::read(plan_path).map_err(Refusal::from)?;
    let source = keys::find(repo, key_flag).ok_or(KeyError::Missing { action: "approve" })?;
    let key = keys::load(&source)?;
    let signers = policy::signers(&lab.allowed_signers)?;
    let now = SystemTime::now();
    let planner = policy::verify_planner(&loaded, &signers, now)?;
    // Recomputed by this binary from the plan's commit before anything is shown as approvable.
    let provenance = crate::review::verify(repo, &lab, &loaded)?;
    policy::check_lifetime(&loaded, &lab.policy, now)?;
    let records = Records::at(&controller.root(None));
    let downgrades = crate::review::downgrades(repo, &records, &loaded);
    let mut checked = format!(
        "valid: made by {} ({}); {}",
        planner.principals.join(", "),
        planner.fingerprint,
        provenance.describe()
    );
    for d in &downgrades {
        checked.push_str("; ");
        checked.push_str(d);
    }
    display::write_text_checked(out, &loaded.id, &loaded.plan, super::use_color(), Some(&checked))
        .map_err(Error::stdout)?;
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(Error::NotConfirmed {
                message: "not approved: pass `--yes` to approve without a terminal to confirm on"
                    .to_owned(),
            });
        }
        for d in &downgrades {
            eprintln!("\nwarning: {d}");
        }
        let downgrade = if downgrades.is_empty() { "" } else { "; a DOWNGRADE" };
        eprint!("\napprove plan {} ({}{downgrade})? [y/N] ", loaded.id, loaded.plan.summary());
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Err(Error::NotConfirmed { message: "not approved".to_owned() });
        }
    }
    policy::check_not_expired(&loaded, now)?;
    policy::check_not_consumed_or_rejected(&loaded, &records)?;
    let verified = keys::principals_of(&key, &signers, APPROVE_NAMESPACE, now)?;
    let principals = &verified.principals;
    let done = policy::approve(&loaded, &key, &signers, &lab.policy, &records, now)?;
    // Say so when this approval will not count for some node (inventory/policy.yaml).
    let not_counted: Vec<String> = policy::changed_nodes(&loaded.plan)
        .filter(|n| !lab.policy.rule_for(n).approvers.iter().any(|a| verified.allows(a)))
        .map(ToString::to_string)
        .collect();
    if !not_counted.is_empty() {
        eprintln!(
            "warning: {} may not approve {} per inventory/policy.yaml: this approval does not count there",
            principals.join(", "),
            not_counted.join(", ")
        );
    }
    if done.added {
        eprintln!(
            "approved by {} ({}): {}",
            principals.join(", "),
            key.fingerprint(),
            done.path.display()
        );
    } else {
        eprintln!("already approved by this key ({}): {}", key.fingerprint(), done.path.display());
    }
    Ok(Report::Success)
}

pub fn reject(
    repo: &Path,
    plan_path: &Path,
    reason: &str,
    key_flag: Option<&PathBuf>,
    target: &Target,
) -> Result<Report, Error> {
    let lab = super::load(repo)?;
    let loaded = file::read(plan_path).map_err(Refusal::from)?;
    let now = SystemTime::now();
    // Who rejects: the same key search as approve (`--key`, HOMELAB_SIGNING_KEY, Git's
    // user.signingkey); without one, the local user name.
    let by = match keys::find(repo, key_flag) {
        Some(source) => {
            let key = keys::load(&source)?;
            let signers = keys::allowed_signers(&lab.allowed_signers)?;
            let principals =
                keys::principals_of(&key, &signers, APPROVE_NAMESPACE, now)?.principals;
            format!("{} {}", principals.join(","), key.fingerprint())
        }
        None => std::env::var("USER").unwrap_or_else(|_| "unknown".to_owned()),
    };
    let records = Records::at(&target.controller.root(None));
    // One record, written beside the plan, on the controller and on every node.
    let record = crate::node::records::Rejection::new(
        &loaded.id,
        crate::clock::rfc3339(now),
        by,
        reason.to_owned(),
    );
    let path = policy::reject(&loaded, &record, &records)?;
    eprintln!("rejected plan {}: {}", loaded.id, path.display());
    // The rejection travels with the plan's id: recorded on its nodes, it refuses any
    // controller and any copy of the plan there.
    let sel = super::Selection::of(repo, &lab, target)?;
    let mut missed = Vec::new();
    let on_nodes = crate::apply::reject::record_on_nodes(
        &lab,
        &loaded,
        &record,
        sel.transport.as_ref(),
        &sel.nodes,
    );
    for n in on_nodes {
        match n.result {
            Ok(()) => eprintln!("  recorded on {}", n.display_name),
            Err(e) => {
                eprintln!("  NOT recorded on {}: {e}", n.display_name);
                missed.push(n.display_name);
            }
        }
    }
    if !missed.is_empty() {
        eprintln!(
            "warning: the rejection is not on {}: an apply from another controller could still reach them; run `homelab reject` again when they answer",
            missed.join(", ")
        );
        return Ok(Report::Failed);
    }
    Ok(Report::Success)
}
