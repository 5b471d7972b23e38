//! The errors a command ends with, and the one place exit codes are decided (DESIGN.md §8):
//! 0 success, 1 error, 2 plan has changes (with `--detailed-exitcode`), 3 refused.
//!
//! Each layer has its own typed error (`KeyError`, `Refusal`, `RenderError`, ...); this enum
//! wraps them without flattening them to text, and [`exit_code`] maps an error or a command's
//! [`Report`] to the status the process exits with.

use std::path::PathBuf;

use crate::approve::keys::KeyError;
use crate::approve::policy::{ApproveError, Refusal};
use crate::bootstrap::hostkey::HostKeyError;
use crate::bootstrap::BootstrapError;
use crate::forge::ForgeError;
use crate::model::Diagnostic;
use crate::render::RenderError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}\n{} problem{} found in the homelab definition", list(.diagnostics), .diagnostics.len(), if .diagnostics.len() == 1 { "" } else { "s" })]
    Invalid { diagnostics: Vec<Diagnostic> },

    #[error("unknown node `{name}`: expected one of {known}")]
    UnknownNode { name: String, known: String },

    #[error("unknown service `{name}`{}: expected one of {known}", .node.as_ref().map(|n| format!(" on `{n}`")).unwrap_or_default())]
    UnknownService { name: String, node: Option<String>, known: String },

    #[error(transparent)]
    Render(#[from] RenderError),

    #[error("cannot write `{}`: {source}", .path.display())]
    Write { path: PathBuf, source: std::io::Error },

    #[error("{}", read_text(.path, .source))]
    Read { path: PathBuf, source: std::io::Error },

    #[error(transparent)]
    Key(#[from] KeyError),

    #[error("{message}")]
    Unsupported { message: String },

    /// The command line did not parse (clap printed why).
    #[error("{message}")]
    Usage { message: String },

    /// `plan`: nodes that could not be read; their state is unknown, so no plan claims them.
    #[error("could not read {}: {then}", names(.nodes))]
    Unreachable { nodes: Vec<String>, then: String },

    /// The operator declined (or could not be asked) to approve.
    #[error("{message}")]
    NotConfirmed { message: String },

    /// `bootstrap`: the node lacks what homelab needs, or a step on it failed (each variant
    /// names the node and the step).
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),

    /// `bootstrap`: the node's host key could not be looked up, fetched or written.
    #[error(transparent)]
    HostKey(#[from] HostKeyError),

    /// `pr`, and the commit status after apply: what Forgejo did not give, or its settings.
    #[error(transparent)]
    Forge(#[from] ForgeError),

    /// `telegram`: what the Bot API did not give, or the bot's settings.
    #[error(transparent)]
    Telegram(#[from] crate::telegram::TelegramError),

    /// `telegram`: the bot's state file (offset, messages, presses handled).
    #[error(transparent)]
    TelegramState(#[from] crate::telegram::StateError),

    /// `import`: the project, the name or the node; or the result would not validate.
    #[error(transparent)]
    Import(#[from] crate::import::ImportError),

    /// Apply (or approve) refused the plan: nothing was changed.
    #[error("refused: {0}\nnothing was changed")]
    Refused(#[from] Refusal),
}

impl From<ApproveError> for Error {
    fn from(e: ApproveError) -> Error {
        match e {
            ApproveError::Refused(r) => Error::Refused(r),
            ApproveError::Sign(s) => Error::Key(KeyError::Load(s)),
            ApproveError::Write { path, source } => Error::Write { path, source },
            e @ ApproveError::NotOneBlock { .. } => Error::Unsupported { message: e.to_string() },
        }
    }
}

fn read_text(path: &std::path::Path, source: &std::io::Error) -> String {
    match source.kind() {
        std::io::ErrorKind::NotFound => format!("`{}` does not exist", path.display()),
        _ => format!("cannot read `{}`: {source}", path.display()),
    }
}

fn names(nodes: &[String]) -> String {
    let quoted: Vec<String> = nodes.iter().map(|n| format!("`{n}`")).collect();
    format!("node{} {}", if nodes.len() == 1 { "" } else { "s" }, quoted.join(", "))
}

fn list(d: &[Diagnostic]) -> String {
    d.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}

/// The path an error writing to stdout names.
const STDOUT: &str = "<stdout>";

impl Error {
    /// Writing data to stdout failed.
    pub fn stdout(source: std::io::Error) -> Error {
        Error::Write { path: PathBuf::from(STDOUT), source }
    }

    /// Stdout's reader went away (`homelab show … | head`): the command ends quietly.
    pub fn is_closed_stdout(&self) -> bool {
        matches!(self, Error::Write { path, source }
            if path.as_os_str() == STDOUT && source.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

/// How a command that ran to its end went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// Done; nothing to report beyond the output.
    Success,
    /// `plan --detailed-exitcode` found changes.
    Changes,
    /// Some of the work was refused (stale, replay, locked), nothing failed.
    Refused,
    /// Some of the work failed, was rolled back or skipped.
    Failed,
}

/// The process exit status of a command's result: the only place exit codes are decided.
pub fn exit_code(result: &Result<Report, Error>) -> u8 {
    match result {
        Ok(Report::Success) => 0,
        Ok(Report::Changes) => 2,
        Ok(Report::Refused) => 3,
        Ok(Report::Failed) => 1,
        Err(Error::Refused(_)) => 3,
        Err(
            Error::Invalid { .. }
            | Error::UnknownNode { .. }
            | Error::UnknownService { .. }
            | Error::Render(_)
            | Error::Write { .. }
            | Error::Read { .. }
            | Error::Key(_)
            | Error::Unsupported { .. }
            | Error::Usage { .. }
            | Error::Unreachable { .. }
            | Error::NotConfirmed { .. }
            | Error::Bootstrap(_)
            | Error::HostKey(_)
            | Error::Forge(_)
            | Error::Telegram(_)
            | Error::TelegramState(_)
            | Error::Import(_),
        ) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bootstrap's failures stay typed to the edge: exit 1, with the node and the step named.
    #[test]
    fn bootstrap_errors_exit_1_and_name_the_node_and_the_step() {
        let step: Error = BootstrapError::Step {
            node: "alpha".into(),
            step: "installing the binary",
            status: Some(6),
            stderr: "the upload was cut short".into(),
        }
        .into();
        assert_eq!(
            step.to_string(),
            "alpha: installing the binary failed (exit 6): the upload was cut short"
        );
        assert_eq!(exit_code(&Err(step)), 1);
        let key: Result<Report, Error> =
            Err(HostKeyError::NoKey { host: "[10.0.0.2]:2222".into(), stderr: "timeout".into() }
                .into());
        assert_eq!(exit_code(&key), 1);
        assert!(matches!(key, Err(Error::HostKey(HostKeyError::NoKey { .. }))));
    }

    /// Forgejo's failures stay typed too, with their own text and exit 1.
    #[test]
    fn forge_errors_exit_1_with_their_own_text() {
        let e: Error =
            ForgeError::Conflict { call: "POST /api/v1/x".into(), message: "".into() }.into();
        assert!(e.to_string().starts_with("Forgejo reports a conflict on `POST /api/v1/x`"));
        assert_eq!(exit_code(&Err(e)), 1);
    }

    /// So do the Telegram bot's: the Bot API's, its settings' and its state file's.
    #[test]
    fn telegram_errors_exit_1_with_their_own_text() {
        let e: Error =
            crate::telegram::TelegramError::Unauthorized { method: "getUpdates".into() }.into();
        assert!(e.to_string().starts_with("Telegram refused the bot token on `getUpdates`"));
        assert_eq!(exit_code(&Err(e)), 1);
        let e: Error = crate::telegram::StateError::Invalid {
            path: "state.json".into(),
            reason: "not JSON".into(),
        }
        .into();
        assert!(e.to_string().starts_with("`state.json` is not the Telegram bot's state"));
        assert_eq!(exit_code(&Err(e)), 1);
    }
}
