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

/// Why a commit's tree could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("commit `{commit}` is not in the repository at `{}`: fetch it (`git fetch`), or plan again from a commit this repository has", .repo.display())]
    UnknownCommit { repo: std::path::PathBuf, commit: String },

    #[error("cannot read commit `{commit}` with git: {reason}")]
    Export { commit: String, reason: String },

    #[error(
        "branch `{branch}` is not in the repository at `{}`: it is where reviewed plans come from (`reviewed_branches` in inventory/policy.yaml); fetch it (`git fetch origin {branch}:{branch}`) or fix the policy",
        .repo.display()
    )]
    NoBranch { repo: std::path::PathBuf, branch: String },
}

/// Whether commit `older` is an ancestor of commit `newer` (both ids the repository has);
/// `None` when git cannot tell (an id it lacks, or no git).
pub fn is_ancestor(repo: &Path, older: &str, newer: &str) -> Option<bool> {
    let hex = |c: &str| c.len() >= 7 && c.len() <= 64 && c.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex(older) || !hex(newer) {
        return None;
    }
    let status = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["merge-base", "--is-ancestor", older, newer])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?;
    match status.code() {
        Some(0) => Some(true),
        Some(1) => Some(false),
        _ => None,
    }
}

/// Whether `commit` (a commit id the repository has, as [`export`] checked) is reachable from
/// the local branch `branch` (`refs/heads/<branch>`): merged into it, or on it. A branch the
/// repository lacks is an error, never "not reachable".
pub fn reachable_from(repo: &Path, commit: &str, branch: &str) -> Result<bool, GitError> {
    let reference = format!("refs/heads/{branch}");
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
    };
    let failed = |reason: String| GitError::Export { commit: commit.to_owned(), reason };
    let exists = git(&["rev-parse", "--verify", "--quiet", &format!("{reference}^{{commit}}")])
        .map_err(|e| failed(e.to_string()))?;
    if !exists.success() {
        return Err(GitError::NoBranch { repo: repo.to_path_buf(), branch: branch.to_owned() });
    }
    // 0: an ancestor (or the commit itself); 1: not; anything else: git could not tell.
    let status = git(&["merge-base", "--is-ancestor", commit, &reference])
        .map_err(|e| failed(e.to_string()))?;
    match status.code() {
        Some(0) => Ok(true),
        Some(1) => Ok(false),
        _ => Err(failed(format!("`git merge-base --is-ancestor` against `{reference}` failed"))),
    }
}

/// Writes the tree of `commit` into `dest` from Git's objects (`git archive`), never from the
/// work tree: what a plan says it was made from, whatever the checkout holds now.
pub fn export(repo: &Path, commit: &str, dest: &Path) -> Result<(), GitError> {
    let hex =
        commit.len() >= 7 && commit.len() <= 64 && commit.bytes().all(|b| b.is_ascii_hexdigit());
    let known = hex
        && Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(["cat-file", "-e", &format!("{commit}^{{commit}}")])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if !known {
        return Err(GitError::UnknownCommit {
            repo: repo.to_path_buf(),
            commit: commit.to_owned(),
        });
    }
    let failed = |reason: String| GitError::Export { commit: commit.to_owned(), reason };
    let archive = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["archive", "--format=tar", commit])
        .output()
        .map_err(|e| failed(e.to_string()))?;
    if !archive.status.success() {
        return Err(failed(String::from_utf8_lossy(&archive.stderr).trim().to_owned()));
    }
    let mut tar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(dest)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| failed(format!("tar: {e}")))?;
    {
        use std::io::Write;
        let mut stdin = tar.stdin.take().expect("piped");
        stdin.write_all(&archive.stdout).map_err(|e| failed(format!("tar: {e}")))?;
    }
    let out = tar.wait_with_output().map_err(|e| failed(format!("tar: {e}")))?;
    if !out.status.success() {
        return Err(failed(format!("tar: {}", String::from_utf8_lossy(&out.stderr).trim())));
    }
    Ok(())
}
