//! `homelab plan`: refresh, diff, sign, and write `plans/<id>.plan` plus the pending action.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use crate::approve::{AllowedSigners, Signer, PLAN_NAMESPACE};
use crate::error::Error;
use crate::graph::DeployGraph;
use crate::model::{Homelab, NodeName};
use crate::observe;
use crate::plan::{self, file, Header, Plan};
use crate::render;
use crate::transport::Transport;

/// Where a signing key comes from, in the order they are tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Flag(PathBuf),
    Env(PathBuf),
    GitConfig(PathBuf),
    /// Git's `user.signingkey = key::ssh-ed25519 AAAA…`: a key held by ssh-agent.
    GitConfigPublic(String),
}

/// `--key`, then `HOMELAB_SIGNING_KEY`, then Git's `user.signingkey` (a private key path).
pub fn find_key(repo: &Path, flag: Option<&PathBuf>) -> Result<Option<KeySource>, Error> {
    if let Some(p) = flag {
        return Ok(Some(KeySource::Flag(p.clone())));
    }
    if let Some(p) = std::env::var_os("HOMELAB_SIGNING_KEY").filter(|v| !v.is_empty()) {
        return Ok(Some(KeySource::Env(PathBuf::from(p))));
    }
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["config", "--get", "user.signingkey"])
        .output();
    let Ok(out) = out else { return Ok(None) };
    let value = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if value.is_empty() {
        return Ok(None);
    }
    if let Some(public) = value.strip_prefix("key::") {
        return Ok(Some(KeySource::GitConfigPublic(public.to_owned())));
    }
    if value.starts_with("ssh-") || value.starts_with("ecdsa-") {
        return Ok(Some(KeySource::GitConfigPublic(value)));
    }
    let path = match value.strip_prefix("~/") {
        Some(rest) => std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default().join(rest),
        None => PathBuf::from(value),
    };
    Ok(Some(KeySource::GitConfig(path)))
}

/// Loads a key: a private key file, or a public key whose private half ssh-agent holds.
pub fn load_key(source: &KeySource) -> Result<Signer, Error> {
    let passphrase = std::env::var("HOMELAB_KEY_PASSPHRASE").ok();
    match source {
        KeySource::Flag(p) | KeySource::Env(p) | KeySource::GitConfig(p) => {
            match Signer::load(p, passphrase.as_deref()) {
                // Encrypted and no passphrase given: ask on the terminal, if there is one.
                Err(crate::approve::SignError::Encrypted { .. }) if passphrase.is_none() => {
                    match ask_passphrase(p) {
                        Some(typed) => Signer::load(p, Some(&typed)),
                        None => Signer::load(p, None),
                    }
                }
                other => other,
            }
        }
        KeySource::GitConfigPublic(text) => Signer::from_public(text),
    }
    .map_err(|e| Error::Key { message: e.to_string() })
}

/// Reads a passphrase from the terminal with echo off; `None` without a terminal.
fn ask_passphrase(path: &Path) -> Option<String> {
    use std::io::{BufRead, IsTerminal, Write};
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return None;
    }
    // Echo goes off before the prompt appears, so nothing typed after it is ever echoed.
    // SAFETY: tcgetattr/tcsetattr on fd 0 with a termios we own; restored before returning.
    let saved = unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(0, &mut t) != 0 {
            return None;
        }
        let saved = t;
        t.c_lflag &= !libc::ECHO;
        libc::tcsetattr(0, libc::TCSANOW, &t);
        saved
    };
    eprint!("passphrase for {}: ", path.display());
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    // SAFETY: as above.
    unsafe {
        libc::tcsetattr(0, libc::TCSANOW, &saved);
    }
    eprintln!();
    read.ok()?;
    Some(line.trim_end_matches(['\n', '\r']).to_owned())
}

pub fn allowed_signers(lab: &Homelab) -> Result<AllowedSigners, Error> {
    AllowedSigners::parse(&lab.allowed_signers, "inventory/allowed_signers")
        .map_err(|e| Error::Key { message: e.to_string() })
}

/// The principals `key` may sign as in `namespace`: a probe signature verified like any other,
/// so planner identity and apply's checks can never disagree.
pub fn principals_of(
    key: &Signer,
    signers: &AllowedSigners,
    namespace: &str,
) -> Result<Vec<String>, Error> {
    let probe = b"homelab: which principals is this key?";
    let sig = key.sign(namespace, probe).map_err(|e| Error::Key { message: e.to_string() })?;
    match signers.verify(namespace, probe, &sig, SystemTime::now()) {
        Ok(v) => Ok(v.principals),
        Err(e) => Err(Error::Key {
            message: format!(
                "the key {} cannot sign in `{namespace}` per inventory/allowed_signers: {e}\n  \
                 add a line `<you>@<host> namespaces=\"homelab-plan,homelab-approve\" {}` to inventory/allowed_signers \
                 (reviewed like any change) and plan again",
                key.fingerprint(),
                key.public_key_openssh()
            ),
        }),
    }
}

/// The commit of the repository and whether its homelab definition has uncommitted changes
/// (`plans/` aside: plans are written there).
pub fn git_state(repo: &Path) -> (String, bool) {
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
            (commit, dirty)
        }
        _ => ("none".to_owned(), true),
    }
}

pub struct PlanRequest<'a> {
    pub repo: &'a Path,
    pub lab: &'a Homelab,
    pub transport: &'a dyn Transport,
    pub nodes: Vec<NodeName>,
    pub planner: String,
}

/// Refresh and diff: the plan as a value (no signing, no writing).
pub fn compute(req: &PlanRequest<'_>) -> Result<Plan, Error> {
    let graph = DeployGraph::build(req.lab).expect("validation rejects cycles");
    let rendered = render::render_all(req.lab, |i| req.nodes.contains(&i.node))
        .map_err(|e| Error::Render { message: e.to_string() })?;
    let actual = observe::refresh_all(req.transport, req.nodes.iter().map(|n| &req.lab.nodes[n]));
    let now = SystemTime::now();
    let (commit, dirty) = git_state(req.repo);
    let header = Header {
        created: humantime::format_rfc3339_seconds(now).to_string(),
        expires: humantime::format_rfc3339_seconds(now + req.lab.policy.plan_ttl).to_string(),
        planner: req.planner.clone(),
        commit,
        dirty,
    };
    Ok(plan::diff(req.lab, &graph, &rendered, &actual, header))
}

/// A signed plan, ready to write.
pub struct SignedPlan {
    pub id: String,
    pub text: String,
}

pub fn sign(plan: &Plan, key: &Signer) -> Result<SignedPlan, Error> {
    let body = file::encode(plan);
    let sig = key
        .sign(PLAN_NAMESPACE, body.as_bytes())
        .map_err(|e| Error::Key { message: e.to_string() })?;
    Ok(SignedPlan { id: file::plan_id(body.as_bytes()), text: format!("{body}{sig}") })
}

/// The pending action for a plan (guide: `<root>/actions/pending/<id>.json`). It points at the
/// plan and summarises it; it holds no artifact content and no secret.
pub fn pending_action(id: &str, plan: &Plan, plan_path: &Path) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "kind": "apply-plan",
        "state": "pending",
        "plan": plan_path.display().to_string(),
        "created": plan.created,
        "expires": plan.expires,
        "planner": plan.planner,
        "commit": plan.commit,
        "dirty": plan.dirty,
        "summary": plan.summary(),
        "nodes": plan.nodes.iter().map(|n| n.node.to_string()).collect::<Vec<_>>(),
        "approve": format!("homelab approve {}", plan_path.display()),
    })
}

/// `homelab plan`.
pub fn run(
    repo: &Path,
    lab: &Homelab,
    target: &crate::cli::Target,
    key_flag: Option<&PathBuf>,
    plans_dir: Option<&PathBuf>,
    detailed_exitcode: bool,
    out: &mut dyn std::io::Write,
) -> Result<u8, Error> {
    let nodes = crate::cli::nodes_for(lab, target)?;
    let transport = crate::cli::transport_for(repo, target)?;
    let source = find_key(repo, key_flag)?;
    let key = source.as_ref().map(load_key).transpose()?;
    let planner = match &key {
        Some(k) => {
            let signers = allowed_signers(lab)?;
            let principals = principals_of(k, &signers, PLAN_NAMESPACE)?;
            format!("{} {}", principals.join(","), k.fingerprint())
        }
        None => "unsigned".to_owned(),
    };
    let plan = compute(&PlanRequest { repo, lab, transport: transport.as_ref(), nodes, planner })?;
    let io = |e| Error::Write { path: "<stdout>".into(), source: e };
    let color = crate::command::show::use_color();
    let Some(key) = key else {
        crate::plan::display::write_text(out, "(not saved)", &plan, color).map_err(io)?;
        eprintln!(
            "\nthis plan was NOT saved: homelab signs every plan and found no signing key.\n  \
             make one:  ssh-keygen -t ed25519 -f ~/.ssh/homelab_ed25519 -C \"$USER@$(hostname)\"\n  \
             name it:   --key ~/.ssh/homelab_ed25519, or HOMELAB_SIGNING_KEY=~/.ssh/homelab_ed25519,\n             \
             or `git config user.signingkey ~/.ssh/homelab_ed25519`\n  \
             allow it:  add `<you>@<host> namespaces=\"homelab-plan,homelab-approve\" <contents of the .pub>`\n             \
             to inventory/allowed_signers, then plan again"
        );
        return Ok(if detailed_exitcode && plan.has_changes() { 2 } else { 0 });
    };
    let signed = sign(&plan, &key)?;
    let dir = crate::command::plans_dir(repo, plans_dir);
    let path = dir.join(format!("{}.plan", signed.id));
    crate::command::write_atomic(&path, signed.text.as_bytes())?;
    let controller = target.controller.root(target.root.as_ref());
    let records = crate::command::approve::Records { root: controller };
    let action = pending_action(&signed.id, &plan, &path);
    let action_bytes = format!("{}\n", serde_json::to_string_pretty(&action).expect("json"));
    crate::command::write_atomic(&records.pending(&signed.id), action_bytes.as_bytes())?;
    crate::plan::display::write_text(out, &signed.id, &plan, color).map_err(io)?;
    eprintln!(
        "\nsaved {} (pending action {})",
        path.display(),
        records.pending(&signed.id).display()
    );
    eprintln!("review it in a pull request, then: homelab approve {}", path.display());
    Ok(if detailed_exitcode && plan.has_changes() { 2 } else { 0 })
}
