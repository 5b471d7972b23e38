//! `homelab adopt NODE SERVICE [--branch NAME]`: drift resolved by changing the repository.
//! Refreshes the node, reads the service's deployed files, and prints the patch that makes the
//! repository render them (`crate::supervise::adopt` computes it), or commits it on a new
//! branch without touching the work tree or the current branch.
//!
//! The node's files are read as they are, hand edits included: this is the one command that
//! carries a node's edited text back, on the operator's request, to the operator's terminal
//! or branch. Review it before pushing: a secret pasted into a compose file by hand shows.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::args::Target;
use super::Selection;
use crate::error::{Error, Report};
use crate::model::Instance;
use crate::node::Layout;
use crate::observe::NodeStatus;

#[derive(Debug, clap::Args)]
pub struct AdoptArgs {
    /// The node (id or display name).
    #[arg(value_name = "NODE")]
    pub node: String,
    /// The service whose deployed files the repository should render.
    #[arg(value_name = "SERVICE")]
    pub service: String,
    /// Commit the patch on this new branch (from HEAD) instead of printing it; the work tree
    /// and the current branch are left as they are.
    #[arg(long, value_name = "NAME")]
    pub branch: Option<String>,
    #[command(flatten)]
    pub target: Target,
}

pub fn run(repo: &Path, args: &AdoptArgs, out: &mut dyn Write) -> Result<Report, Error> {
    let lab = super::load_for(repo, &args.target)?;
    let node_id = super::resolve_node(&lab, &args.node)?;
    let service = super::resolve_service(&lab, &args.service, Some(&node_id))?;
    let inst = Instance { service: service.clone(), node: node_id.clone() };
    let rendered = crate::render::render_instance(&lab, &inst)?;
    let sel = Selection::of(repo, &lab, &args.target)?;
    let node = &lab.nodes[&node_id];
    let fail = |message: String| Error::Unsupported { message: format!("{node_id}: {message}") };
    let exec = sel.transport.connect(node).map_err(|e| fail(e.to_string()))?;
    let actual = crate::observe::refresh(node, exec.as_ref());
    let state = match actual.status {
        NodeStatus::Reachable(state) => state,
        NodeStatus::Unreachable { reason } => {
            return Err(fail(format!("could not read: {reason}")))
        }
    };
    let Some(deployed) = state.services.get(service.as_str()) else {
        return Err(fail(format!("`{service}` is not deployed there: nothing to adopt")));
    };
    // The refresh keeps the text only of files homelab wrote; an edited one is read as it is.
    let layout = Layout::new(exec.root());
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (name, f) in &deployed.files {
        if let Some(text) = &f.content {
            files.insert(name.clone(), text.clone().into_bytes());
            continue;
        }
        let path = format!("{}/{name}", layout.live(service.as_str()));
        let read = exec
            .run(&["cat", "--", &path], b"", Duration::from_secs(60))
            .map_err(|e| fail(e.to_string()))?;
        if !read.success() {
            return Err(fail(format!("cannot read `{path}`: {}", read.stderr_text())));
        }
        files.insert(name.clone(), read.stdout);
    }
    let adoption = crate::supervise::adopt::adopt(&lab, &inst, &rendered, &files);
    let mut left = adoption.left.clone();
    for name in files.keys() {
        if !rendered.artifacts.iter().any(|a| &a.name == name) {
            left.push(format!(
                "{name}: on the node but not homelab's; add it to the service by hand"
            ));
        }
    }
    for l in &left {
        eprintln!("not adopted: {l}");
    }
    if adoption.files.is_empty() {
        eprintln!("{inst}: nothing to adopt: the repository renders what the node holds");
        return Ok(if left.is_empty() { Report::Success } else { Report::Failed });
    }
    let patch = adoption.patch();
    match args.branch.as_deref() {
        None => {
            out.write_all(patch.as_bytes()).map_err(Error::stdout)?;
            eprintln!("apply it with `git apply`, review, commit; then plan: the drift is gone");
        }
        Some(branch) => {
            let commit = commit_on_branch(repo, branch, &patch, &inst)?;
            writeln!(out, "branch {branch} at {commit}: {inst} adopted as deployed")
                .map_err(Error::stdout)?;
            for path in adoption.files.keys() {
                writeln!(out, "  {path}").map_err(Error::stdout)?;
            }
        }
    }
    Ok(if left.is_empty() { Report::Success } else { Report::Failed })
}

/// Commits `patch` on HEAD as a new branch `branch`, through a temporary index: the work tree,
/// the index and the current branch stay as they are.
fn commit_on_branch(
    repo: &Path,
    branch: &str,
    patch: &str,
    inst: &Instance,
) -> Result<String, Error> {
    let index = tempfile::tempdir().map_err(|e| Error::Unsupported {
        message: format!("no temporary folder for a Git index: {e}"),
    })?;
    let index = index.path().join("index");
    let git = |args: &[&str], stdin: Option<&str>| -> Result<String, Error> {
        let mut cmd = Command::new("git");
        cmd.arg("-C").arg(repo).args(args).env("GIT_INDEX_FILE", &index);
        cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let failed = |why: String| Error::Unsupported {
            message: format!("git {}: {why}", args.first().copied().unwrap_or_default()),
        };
        let mut child = cmd.spawn().map_err(|e| failed(e.to_string()))?;
        if let Some(text) = stdin {
            let mut pipe = child.stdin.take().expect("piped");
            pipe.write_all(text.as_bytes()).map_err(|e| failed(e.to_string()))?;
        }
        let out = child.wait_with_output().map_err(|e| failed(e.to_string()))?;
        if !out.status.success() {
            return Err(failed(String::from_utf8_lossy(&out.stderr).trim().to_owned()));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    git(&["check-ref-format", "--branch", branch], None)?;
    if git(&["rev-parse", "--verify", "--quiet", &format!("refs/heads/{branch}")], None).is_ok() {
        return Err(Error::Usage {
            message: format!("branch `{branch}` exists already: name a new one"),
        });
    }
    // The homelab may be a folder of a larger Git repository: its paths start there.
    let prefix = git(&["rev-parse", "--show-prefix"], None)?;
    git(&["read-tree", "HEAD"], None)?;
    let mut apply = vec!["apply", "--cached"];
    let directory = format!("--directory={prefix}");
    if !prefix.is_empty() {
        apply.push(&directory);
    }
    git(&apply, Some(patch))?;
    let tree = git(&["write-tree"], None)?;
    let message = format!(
        "Adopt {inst} as deployed\n\n`homelab adopt {} {}`: the repository now renders what the node holds.\n",
        inst.node, inst.service
    );
    let mut commit_tree = Command::new("git");
    commit_tree.arg("-C").arg(repo).args(["commit-tree", &tree, "-p", "HEAD", "-F", "-"]);
    // Without a configured identity, the commit says who made it.
    let ident =
        Command::new("git").arg("-C").arg(repo).args(["var", "GIT_COMMITTER_IDENT"]).output();
    if !ident.is_ok_and(|o| o.status.success()) {
        let email = format!("homelab@{}", super::hostname());
        for (k, v) in [
            ("GIT_AUTHOR_NAME", "homelab adopt"),
            ("GIT_COMMITTER_NAME", "homelab adopt"),
            ("GIT_AUTHOR_EMAIL", email.as_str()),
            ("GIT_COMMITTER_EMAIL", email.as_str()),
        ] {
            commit_tree.env(k, v);
        }
    }
    let mut child = commit_tree
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Unsupported { message: format!("git commit-tree: {e}") })?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(message.as_bytes())
        .map_err(|e| Error::Unsupported { message: format!("git commit-tree: {e}") })?;
    let done = child
        .wait_with_output()
        .map_err(|e| Error::Unsupported { message: format!("git commit-tree: {e}") })?;
    if !done.status.success() {
        return Err(Error::Unsupported {
            message: format!("git commit-tree: {}", String::from_utf8_lossy(&done.stderr).trim()),
        });
    }
    let commit = String::from_utf8_lossy(&done.stdout).trim().to_owned();
    git(&["branch", branch, &commit], None)?;
    Ok(commit)
}
