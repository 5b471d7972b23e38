//! `homelab show`: a plan file for a terminal, a PR comment, or a machine.

use std::io::Write;
use std::path::Path;
use std::time::SystemTime;

use super::args::ShowFormat;
use crate::approve::policy::{verify_planner, Refusal};
use crate::approve::AllowedSigners;
use crate::error::{Error, Report};
use crate::plan::display;
use crate::plan::file::{self, LoadedPlan};

/// The planner's signature checked against the repository's allowed_signers, in words.
fn signature(repo: &Path, loaded: &LoadedPlan, now: SystemTime) -> String {
    let file = repo.join("inventory/allowed_signers");
    if !file.exists() {
        return format!("not checked: no {}", file.display());
    }
    match AllowedSigners::load(&file) {
        Err(e) => format!("not checked: {e}"),
        Ok(signers) => match verify_planner(loaded, &signers, now) {
            Ok(v) => format!("valid: made by {} ({})", v.principals.join(", "), v.fingerprint),
            Err(Refusal::BadPlanSignature { source }) => format!("NOT VALID: {source}"),
            Err(e) => format!("NOT VALID: {e}"),
        },
    }
}

/// The plan's action under the controller root, in whichever folder it is: its state and,
/// for a plan the supervisor made, its reason.
fn action(controller: &Path, id: &str) -> Option<(String, Option<String>)> {
    use crate::node::ActionState as S;
    let records = crate::approve::policy::Records::at(controller);
    [S::Pending, S::Approved, S::Running, S::Completed, S::Failed].into_iter().find_map(|s| {
        let bytes = std::fs::read(records.action(s, id)).ok()?;
        let record = crate::node::records::PendingAction::parse(&bytes);
        Some((s.as_str().to_owned(), record.and_then(|r| r.reason)))
    })
}

pub fn run(
    repo: &Path,
    path: &Path,
    format: ShowFormat,
    controller: &Path,
    out: &mut dyn Write,
) -> Result<Report, Error> {
    let loaded = file::read(path).map_err(Refusal::from)?;
    // Why the plan was made, when its action says (a supervisor's plan); absent otherwise, so
    // the output of a person's plan is what it always was.
    let reason = action(controller, &loaded.id).and_then(|(_, r)| r);
    let mut sig = signature(repo, &loaded, SystemTime::now());
    // Whether the content is what the plan's commit renders, by this binary.
    // Whether its time window is the policy's (approve and apply refuse it otherwise).
    let now = SystemTime::now();
    let review = super::load(repo).map_err(|e| e.to_string()).and_then(|lab| {
        let provenance = crate::review::verify(repo, &lab, &loaded).map_err(|e| e.to_string())?;
        crate::approve::policy::check_lifetime(&loaded, &lab.policy, now)
            .map_err(|e| e.to_string())?;
        Ok(provenance)
    });
    let report = match &review {
        Ok(p) => {
            sig.push_str("; ");
            sig.push_str(&p.describe());
            // A plan that takes a node back to an older commit than it runs says so.
            let records = crate::approve::policy::Records::at(controller);
            for d in crate::review::downgrades(repo, &records, &loaded) {
                sig.push_str("; ");
                sig.push_str(&d);
            }
            Report::Success
        }
        Err(why) => {
            sig.push_str("; REFUSED: ");
            sig.push_str(why);
            Report::Refused
        }
    };
    match format {
        ShowFormat::Text => display::write_text_checked(
            out,
            &loaded.id,
            &loaded.plan,
            super::use_color(),
            Some(&sig),
        ),
        ShowFormat::Markdown => {
            display::write_markdown_checked(out, &loaded.id, &loaded.plan, Some(&sig))
        }
        ShowFormat::Json => {
            let mut doc = display::to_json(&loaded.id, &loaded.plan);
            doc["signature"] = serde_json::json!(sig);
            if let Some(r) = &reason {
                doc["reason"] = serde_json::json!(r);
            }
            writeln!(out, "{}", serde_json::to_string_pretty(&doc).expect("json"))
        }
    }
    .map_err(Error::stdout)?;
    match (&reason, format) {
        (Some(r), ShowFormat::Text) => {
            writeln!(out, "\nreason: {}", display::escape(r)).map_err(Error::stdout)?
        }
        (Some(r), ShowFormat::Markdown) => {
            writeln!(out, "\n**Reason:** {}", display::md_text(r)).map_err(Error::stdout)?
        }
        _ => {}
    }
    if let Err(why) = &review {
        eprintln!("error: refused: {}", display::escape(why));
    }
    Ok(report)
}
