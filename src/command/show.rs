//! `homelab show`: a plan file for a terminal, a PR comment, or a machine.

use std::io::{IsTerminal, Write};
use std::path::Path;

use crate::error::Error;
use crate::plan::display;

use super::approve::read_plan;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ShowFormat {
    Text,
    Markdown,
    Json,
}

/// Colour only on a terminal, and never with `NO_COLOR` set (https://no-color.org).
pub fn use_color() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stdout().is_terminal()
}

/// The planner's signature checked against the repository's allowed_signers, in words.
fn signature(repo: &Path, loaded: &super::approve::LoadedPlan) -> String {
    let file = repo.join("inventory/allowed_signers");
    if !file.exists() {
        return format!("not checked: no {}", file.display());
    }
    match crate::approve::AllowedSigners::load(&file) {
        Err(e) => format!("not checked: {e}"),
        Ok(signers) => match signers.verify(
            crate::approve::PLAN_NAMESPACE,
            loaded.body.as_bytes(),
            &loaded.signature,
            std::time::SystemTime::now(),
        ) {
            Ok(v) => format!("valid: made by {} ({})", v.principals.join(", "), v.fingerprint),
            Err(e) => format!("NOT VALID: {e}"),
        },
    }
}

pub fn run(repo: &Path, path: &Path, format: ShowFormat, out: &mut dyn Write) -> Result<(), Error> {
    let loaded = read_plan(path)?;
    let sig = signature(repo, &loaded);
    let io = |e| Error::Write { path: "<stdout>".into(), source: e };
    match format {
        ShowFormat::Text => {
            display::write_text_checked(out, &loaded.id, &loaded.plan, use_color(), Some(&sig))
                .map_err(io)
        }
        ShowFormat::Markdown => {
            display::write_markdown_checked(out, &loaded.id, &loaded.plan, Some(&sig)).map_err(io)
        }
        ShowFormat::Json => {
            let mut doc = display::to_json(&loaded.id, &loaded.plan);
            doc["signature"] = serde_json::json!(sig);
            writeln!(out, "{}", serde_json::to_string_pretty(&doc).expect("json")).map_err(io)
        }
    }
}
