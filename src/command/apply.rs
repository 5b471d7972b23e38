//! `homelab apply plans/<id>.approved`: pre-flight (every refusal, nothing changed), then
//! execution per node.

use std::io::Write;
use std::path::Path;
use std::time::SystemTime;

use crate::error::Error;
use crate::model::Homelab;

use super::approve::{
    check_approvals, check_fresh, check_not_consumed_or_rejected, check_not_expired, read_plan,
    verify_planner, LoadedPlan, Records,
};

fn refused(message: impl Into<String>) -> Error {
    Error::Refused { message: message.into() }
}

/// Every check that must pass before anything is written anywhere. Read-only.
pub fn preflight(
    lab: &Homelab,
    approved: &Path,
    target: &crate::cli::Target,
) -> Result<LoadedPlan, Error> {
    let name = approved.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let Some(id) = name.strip_suffix(".approved") else {
        return Err(refused(format!(
            "`{}` is not an approval: apply takes `plans/<id>.approved`, written by `homelab approve plans/<id>.plan`",
            approved.display()
        )));
    };
    let plan_path = approved.with_file_name(format!("{id}.plan"));
    let approved_text = match std::fs::read_to_string(approved) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(refused(format!(
                "no approval: `{}` does not exist; an approver runs `homelab approve {}`",
                approved.display(),
                plan_path.display()
            )))
        }
        Err(e) => return Err(refused(format!("cannot read `{}`: {e}", approved.display()))),
    };
    let loaded = read_plan(&plan_path)?;
    let now = SystemTime::now();
    let signers = super::plan::allowed_signers(lab)?;
    verify_planner(&loaded, &signers, now)?;
    check_not_expired(&loaded, now)?;
    let records = Records { root: target.controller.root(target.root.as_ref()) };
    check_not_consumed_or_rejected(&loaded, &records)?;
    check_approvals(&loaded, &approved_text, approved, &signers, lab, now)?;
    let transport = crate::cli::transport_for(target)?;
    let only = crate::cli::nodes_for(lab, target)?;
    let fresh = check_fresh(&loaded.id, &loaded.plan, lab, transport.as_ref(), Some(&only));
    let bad: Vec<String> = fresh
        .iter()
        .filter_map(|(n, r)| r.as_ref().err().map(|e| format!("node `{n}`: {e}")))
        .collect();
    if !bad.is_empty() {
        return Err(refused(bad.join("\n")));
    }
    Ok(loaded)
}

pub fn run(
    lab: &Homelab,
    approved: &Path,
    target: &crate::cli::Target,
    out: &mut dyn Write,
) -> Result<u8, Error> {
    let loaded = preflight(lab, approved, target)?;
    let _ = writeln!(out, "pre-flight passed for plan {}: {}", loaded.id, loaded.plan.summary());
    Err(Error::Unsupported { message: "execution of an approved plan is not built yet".to_owned() })
}
