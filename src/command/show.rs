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

pub fn run(path: &Path, format: ShowFormat, out: &mut dyn Write) -> Result<(), Error> {
    let loaded = read_plan(path)?;
    let io = |e| Error::Write { path: "<stdout>".into(), source: e };
    match format {
        ShowFormat::Text => {
            display::write_text(out, &loaded.id, &loaded.plan, use_color()).map_err(io)
        }
        ShowFormat::Markdown => display::write_markdown(out, &loaded.id, &loaded.plan).map_err(io),
        ShowFormat::Json => {
            let doc = display::to_json(&loaded.id, &loaded.plan);
            writeln!(out, "{}", serde_json::to_string_pretty(&doc).expect("json")).map_err(io)
        }
    }
}
