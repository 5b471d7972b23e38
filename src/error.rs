//! The errors the CLI reports, and the one place exit codes are decided (DESIGN.md §8):
//! 0 success, 1 error, 2 plan has changes (with `--detailed-exitcode`), 3 refused.

use std::path::PathBuf;

use crate::model::Diagnostic;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}\n{} problem{} found in the homelab definition", list(.diagnostics), .diagnostics.len(), if .diagnostics.len() == 1 { "" } else { "s" })]
    Invalid { diagnostics: Vec<Diagnostic> },

    #[error("unknown node `{name}`: expected one of {known}")]
    UnknownNode { name: String, known: String },

    #[error("unknown service `{name}`{}: expected one of {known}", .node.as_ref().map(|n| format!(" on `{n}`")).unwrap_or_default())]
    UnknownService { name: String, node: Option<String>, known: String },

    #[error("{message}")]
    Render { message: String },

    #[error("cannot write `{}`: {source}", .path.display())]
    Write { path: PathBuf, source: std::io::Error },

    #[error("{message}")]
    Key { message: String },

    #[error("{message}")]
    Unsupported { message: String },

    /// Apply (or approve) refused the plan: nothing was changed.
    #[error("refused: {message}\nnothing was changed")]
    Refused { message: String },
}

fn list(d: &[Diagnostic]) -> String {
    d.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}

impl Error {
    pub fn code(&self) -> i32 {
        match self {
            Error::Invalid { .. }
            | Error::UnknownNode { .. }
            | Error::UnknownService { .. }
            | Error::Render { .. }
            | Error::Write { .. }
            | Error::Key { .. }
            | Error::Unsupported { .. } => 1,
            Error::Refused { .. } => 3,
        }
    }
}
