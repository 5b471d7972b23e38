//! `homelab validate`: every problem of the homelab definition, or a one-line summary.

use std::io::Write;
use std::path::Path;

use super::args::DataFormat;
use crate::error::{Error, Report};

pub fn run(repo: &Path, format: DataFormat, out: &mut dyn Write) -> Result<Report, Error> {
    // Stricter than the other commands' `load`: a broken allowed_signers is a problem here.
    let result = crate::check::validate(repo).map_err(|diagnostics| Error::Invalid { diagnostics });
    match (format, result) {
        (DataFormat::Json, result) => {
            let problems = match &result {
                Err(Error::Invalid { diagnostics }) => diagnostics.clone(),
                Err(_) => Vec::new(),
                Ok(_) => Vec::new(),
            };
            let notes = result.as_ref().map(|lab| lab.notes.clone()).unwrap_or_default();
            let doc = serde_json::json!({ "valid": result.is_ok(), "problems": problems, "notes": notes });
            writeln!(out, "{}", serde_json::to_string_pretty(&doc).expect("json"))
                .map_err(Error::stdout)?;
            result.map(|_| Report::Success)
        }
        (DataFormat::Text, Ok(lab)) => {
            // Notes go with the errors, to stderr: they are about the definition, not data.
            for n in &lab.notes {
                eprintln!("{}", n.as_note());
            }
            writeln!(
                out,
                "homelab is valid: {} nodes, {} services, {} service instances",
                lab.nodes.len(),
                lab.services.len(),
                lab.instances.len()
            )
            .map_err(Error::stdout)?;
            Ok(Report::Success)
        }
        (DataFormat::Text, Err(e)) => Err(e),
    }
}
