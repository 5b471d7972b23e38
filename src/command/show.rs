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

pub fn run(
    repo: &Path,
    path: &Path,
    format: ShowFormat,
    out: &mut dyn Write,
) -> Result<Report, Error> {
    let loaded = file::read(path).map_err(Refusal::from)?;
    let mut sig = signature(repo, &loaded, SystemTime::now());
    // Whether the content is what the plan's commit renders, by this binary.
    let review = super::load(repo)
        .map_err(|e| e.to_string())
        .and_then(|lab| crate::review::verify(repo, &lab, &loaded).map_err(|e| e.to_string()));
    let report = match &review {
        Ok(p) => {
            sig.push_str("; ");
            sig.push_str(&p.describe());
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
            writeln!(out, "{}", serde_json::to_string_pretty(&doc).expect("json"))
        }
    }
    .map_err(Error::stdout)?;
    if let Err(why) = &review {
        eprintln!("error: refused: {}", display::escape(why));
    }
    Ok(report)
}
