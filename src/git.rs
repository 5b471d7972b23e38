//! The Git repository that holds the homelab definition: which commit a plan is made from and
//! whether the definition has uncommitted changes. Runs `git`; reads nothing else.

use std::path::Path;
use std::process::Command;

/// The commit of the work tree and whether the homelab definition differs from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeState {
    /// `HEAD`'s commit id, or `none` outside a repository or before the first commit.
    pub commit: String,
    /// Uncommitted changes outside `plans/` (plans are written there), or no commit at all.
    pub dirty: bool,
}

pub fn tree_state(repo: &Path) -> TreeState {
    let run = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match run(&["rev-parse", "HEAD"]) {
        Some(commit) if !commit.is_empty() => {
            let dirty = run(&["status", "--porcelain", "--", ".", ":(exclude)plans"])
                .map(|s| !s.is_empty())
                .unwrap_or(true);
            TreeState { commit, dirty }
        }
        _ => TreeState { commit: "none".to_owned(), dirty: true },
    }
}
