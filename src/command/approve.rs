//! `approve`, `reject`, and the pre-flight of `apply`: everything that decides whether a plan
//! may run. Pre-flight is read-only: a refusal changes nothing anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::approve::{split_armored, AllowedSigners, Verified, APPROVE_NAMESPACE, PLAN_NAMESPACE};
use crate::error::Error;
use crate::model::Homelab;
use crate::plan::file::{self, plan_id};
use crate::plan::Plan;

/// A plan file is large only if something is wrong; never read more than this.
const MAX_PLAN_BYTES: u64 = 64 * 1024 * 1024;

/// A plan file as read from disk: its id (from its signed bytes), the signed bytes, the
/// planner's signature and the plan.
pub struct LoadedPlan {
    pub path: PathBuf,
    pub id: String,
    pub body: String,
    pub signature: String,
    pub plan: Plan,
}

fn refused(message: impl Into<String>) -> Error {
    Error::Refused { message: message.into() }
}

fn read_bounded(path: &Path) -> Result<String, Error> {
    let meta = fs::metadata(path)
        .map_err(|e| refused(format!("cannot read `{}`: {e}", path.display())))?;
    if meta.len() > MAX_PLAN_BYTES {
        return Err(refused(format!(
            "`{}` is {} bytes, more than a plan can be",
            path.display(),
            meta.len()
        )));
    }
    let bytes =
        fs::read(path).map_err(|e| refused(format!("cannot read `{}`: {e}", path.display())))?;
    String::from_utf8(bytes).map_err(|_| {
        refused(format!("`{}` is not UTF-8 text: it is not a homelab plan", path.display()))
    })
}

/// Reads a plan file and checks that its name is its id. Does not verify the signature.
pub fn read_plan(path: &Path) -> Result<LoadedPlan, Error> {
    let text = read_bounded(path)?;
    let shown = path.display().to_string();
    file::check_version(&text, &shown).map_err(|e| refused(e.to_string()))?;
    let (body, signature) =
        file::split_signed(&text, &shown).map_err(|e| refused(e.to_string()))?;
    let id = plan_id(body.as_bytes());
    let stem = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".plan"));
    if stem != Some(id.as_str()) {
        return Err(refused(format!(
            "`{shown}`: its signed bytes hash to id `{id}`, not the id in its name: the plan was changed after it was made; plan again"
        )));
    }
    let plan = file::decode(body, &shown).map_err(|e| refused(e.to_string()))?;
    Ok(LoadedPlan {
        path: path.to_path_buf(),
        id,
        body: body.to_owned(),
        signature: signature.to_owned(),
        plan,
    })
}

/// Verifies the planner's signature: made in `homelab-plan` by a key of allowed_signers.
pub fn verify_planner(
    loaded: &LoadedPlan,
    signers: &AllowedSigners,
    now: SystemTime,
) -> Result<Verified, Error> {
    signers
        .verify(PLAN_NAMESPACE, loaded.body.as_bytes(), &loaded.signature, now)
        .map_err(|e| refused(format!("the plan's signature is not valid: {e}")))
}

pub fn check_not_expired(loaded: &LoadedPlan, now: SystemTime) -> Result<(), Error> {
    let expires = humantime::parse_rfc3339(&loaded.plan.expires)
        .map_err(|_| refused("the plan's expiry time is unreadable"))?;
    if now >= expires {
        return Err(refused(format!(
            "plan `{}` expired at {} (it is now {}): plan again",
            loaded.id,
            loaded.plan.expires,
            humantime::format_rfc3339_seconds(now)
        )));
    }
    Ok(())
}

/// Controller-side records: `<controller root>/state/{applied,rejected}/<id>.json` and the
/// pending action.
pub struct Records {
    pub root: PathBuf,
}

impl Records {
    /// The controller's record of an apply (distinct from the nodes' `state/consumed/`: the
    /// controller may be a node itself, and applies on a node record there too).
    pub fn consumed(&self, id: &str) -> PathBuf {
        self.root.join("state/applied").join(format!("{id}.json"))
    }

    pub fn rejected(&self, id: &str) -> PathBuf {
        self.root.join("state/rejected").join(format!("{id}.json"))
    }

    pub fn pending(&self, id: &str) -> PathBuf {
        self.root.join("actions/pending").join(format!("{id}.json"))
    }
}

fn rejected_path(loaded: &LoadedPlan) -> PathBuf {
    loaded.path.with_file_name(format!("{}.rejected", loaded.id))
}

pub fn check_not_consumed_or_rejected(loaded: &LoadedPlan, records: &Records) -> Result<(), Error> {
    for p in [rejected_path(loaded), records.rejected(&loaded.id)] {
        if p.exists() {
            let record: serde_json::Value =
                fs::read(&p).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
            let field = |k: &str| record[k].as_str().unwrap_or("?").to_owned();
            return Err(refused(format!(
                "plan `{}` was rejected by {} at {}: {} ({})",
                loaded.id,
                field("by"),
                field("rejected_at"),
                field("reason"),
                p.display()
            )));
        }
    }
    let consumed = records.consumed(&loaded.id);
    if consumed.exists() {
        return Err(refused(format!(
            "plan `{}` was already applied (recorded in {}): a plan runs once; plan again for new changes",
            loaded.id,
            consumed.display()
        )));
    }
    Ok(())
}

/// The outcome of checking the approvals against the policy.
#[derive(Debug)]
pub struct Approvals {
    /// Principals of each distinct approving key, by key fingerprint.
    pub by_key: BTreeMap<String, Vec<String>>,
}

/// Verifies every approval block and checks the policy for every node the plan changes.
pub fn check_approvals(
    loaded: &LoadedPlan,
    approved_text: &str,
    approved_path: &Path,
    signers: &AllowedSigners,
    lab: &Homelab,
    now: SystemTime,
) -> Result<Approvals, Error> {
    let shown = approved_path.display();
    let blocks = split_armored(approved_text).map_err(|e| refused(format!("`{shown}`: {e}")))?;
    if blocks.is_empty() {
        return Err(refused(format!(
            "`{shown}` holds no approval: approve with `homelab approve {}`",
            loaded.path.display()
        )));
    }
    let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (i, block) in blocks.iter().enumerate() {
        match signers.verify(APPROVE_NAMESPACE, loaded.body.as_bytes(), block, now) {
            Ok(v) => {
                by_key.entry(v.fingerprint).or_default().extend(v.principals);
            }
            Err(e) => {
                return Err(refused(format!(
                    "`{shown}`: approval {} of {}: {e}",
                    i + 1,
                    blocks.len()
                )))
            }
        }
    }
    for n in &loaded.plan.nodes {
        if !n.changes.iter().any(|c| c.action != crate::plan::Action::NoOp) {
            continue;
        }
        let rule = lab.policy.rule_for(&n.node);
        let approving: BTreeSet<&String> = by_key
            .iter()
            .filter(|(_, principals)| principals.iter().any(|p| rule.approvers.contains(p)))
            .map(|(fp, _)| fp)
            .collect();
        if (approving.len() as u32) < rule.required {
            let who: Vec<String> = by_key
                .values()
                .flatten()
                .map(|p| format!("`{p}`"))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            return Err(refused(format!(
                "node `{}` needs {} approval{} from distinct keys of {}; it has {} (approvals by {}; two signatures by one key count once)",
                n.node,
                rule.required,
                if rule.required == 1 { "" } else { "s" },
                rule.approvers.iter().map(|a| format!("`{a}`")).collect::<Vec<_>>().join(", "),
                approving.len(),
                if who.is_empty() { "nobody".to_owned() } else { who.join(", ") },
            )));
        }
    }
    Ok(Approvals { by_key })
}

/// `homelab approve`: verify, show, sign in `homelab-approve`, append to `<id>.approved`.
pub fn approve(
    lab: &Homelab,
    loaded: &LoadedPlan,
    key: &crate::approve::Signer,
    records: &Records,
) -> Result<(PathBuf, Vec<String>, bool), Error> {
    let now = SystemTime::now();
    let signers = super::plan::allowed_signers(lab)?;
    verify_planner(loaded, &signers, now)?;
    check_not_expired(loaded, now)?;
    check_not_consumed_or_rejected(loaded, records)?;
    let principals = super::plan::principals_of(key, &signers, APPROVE_NAMESPACE)?;
    let path = loaded.path.with_file_name(format!("{}.approved", loaded.id));
    let existing = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::Write { path, source: e }),
    };
    let blocks = if existing.trim().is_empty() {
        Vec::new()
    } else {
        split_armored(&existing).map_err(|e| refused(format!("`{}`: {e}", path.display())))?
    };
    for block in blocks {
        if let Ok(v) = signers.verify(APPROVE_NAMESPACE, loaded.body.as_bytes(), &block, now) {
            if v.fingerprint == key.fingerprint() {
                return Ok((path, principals, false));
            }
        }
    }
    let sig = key
        .sign(APPROVE_NAMESPACE, loaded.body.as_bytes())
        .map_err(|e| Error::Key { message: e.to_string() })?;
    let mut text = existing;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&sig);
    super::write_atomic(&path, text.as_bytes())?;
    Ok((path, principals, true))
}

/// `homelab reject`: record the refusal beside the plan and on the controller; the pending
/// action moves to `actions/failed/`. Apply refuses a rejected plan.
pub fn reject(
    loaded: &LoadedPlan,
    reason: &str,
    by: &str,
    records: &Records,
) -> Result<PathBuf, Error> {
    let record = serde_json::json!({
        "id": loaded.id,
        "state": "rejected",
        "rejected_at": super::now_rfc3339(),
        "by": by,
        "reason": reason,
    });
    let bytes = format!("{}\n", serde_json::to_string_pretty(&record).expect("json"));
    let beside = rejected_path(loaded);
    super::write_atomic(&beside, bytes.as_bytes())?;
    super::write_atomic(&records.rejected(&loaded.id), bytes.as_bytes())?;
    let pending = records.pending(&loaded.id);
    if pending.exists() {
        let failed = records.root.join("actions/failed").join(format!("{}.json", loaded.id));
        super::write_atomic(&failed, bytes.as_bytes())?;
        let _ = fs::remove_file(&pending);
    }
    Ok(beside)
}

/// `homelab approve` from the command line.
pub fn run_approve(
    repo: &Path,
    lab: &Homelab,
    plan_path: &Path,
    key_flag: Option<&PathBuf>,
    yes: bool,
    controller: &crate::cli::Controller,
    out: &mut dyn std::io::Write,
) -> Result<u8, Error> {
    use std::io::IsTerminal;
    let loaded = read_plan(plan_path)?;
    let source = super::plan::find_key(repo, key_flag)?.ok_or_else(|| Error::Key {
        message:
            "no key to approve with: pass `--key ~/.ssh/id_ed25519`, or set HOMELAB_SIGNING_KEY"
                .to_owned(),
    })?;
    let key = super::plan::load_key(&source)?;
    let io = |e| Error::Write { path: "<stdout>".into(), source: e };
    crate::plan::display::write_text(out, &loaded.id, &loaded.plan, super::show::use_color())
        .map_err(io)?;
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(Error::Key {
                message: "not approved: pass `--yes` to approve without a terminal to confirm on"
                    .to_owned(),
            });
        }
        eprint!("\napprove plan {} ({})? [y/N] ", loaded.id, loaded.plan.summary());
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Err(Error::Key { message: "not approved".to_owned() });
        }
    }
    let records = Records { root: controller.root(None) };
    let (path, principals, added) = approve(lab, &loaded, &key, &records)?;
    // Say so when this approval will not count for some node (inventory/policy.yaml).
    let not_counted: Vec<String> = loaded
        .plan
        .nodes
        .iter()
        .filter(|n| n.changes.iter().any(|c| c.action != crate::plan::Action::NoOp))
        .filter(|n| !principals.iter().any(|p| lab.policy.rule_for(&n.node).approvers.contains(p)))
        .map(|n| n.node.to_string())
        .collect();
    if !not_counted.is_empty() {
        eprintln!(
            "warning: {} may not approve {} per inventory/policy.yaml: this approval does not count there",
            principals.join(", "),
            not_counted.join(", ")
        );
    }
    if added {
        eprintln!(
            "approved by {} ({}): {}",
            principals.join(", "),
            key.fingerprint(),
            path.display()
        );
    } else {
        eprintln!("already approved by this key ({}): {}", key.fingerprint(), path.display());
    }
    Ok(0)
}

/// `homelab reject` from the command line.
pub fn run_reject(
    repo: &Path,
    lab: &Homelab,
    plan_path: &Path,
    reason: &str,
    key_flag: Option<&PathBuf>,
    controller: &crate::cli::Controller,
    _out: &mut dyn std::io::Write,
) -> Result<u8, Error> {
    let loaded = read_plan(plan_path)?;
    // Who rejects: the same key search as approve (`--key`, HOMELAB_SIGNING_KEY, Git's
    // user.signingkey); without one, the local user name.
    let by = match super::plan::find_key(repo, key_flag)? {
        Some(source) => {
            let key = super::plan::load_key(&source)?;
            let signers = super::plan::allowed_signers(lab)?;
            let principals = super::plan::principals_of(&key, &signers, APPROVE_NAMESPACE)?;
            format!("{} {}", principals.join(","), key.fingerprint())
        }
        None => std::env::var("USER").unwrap_or_else(|_| "unknown".to_owned()),
    };
    let records = Records { root: controller.root(None) };
    let path = reject(&loaded, reason, &by, &records)?;
    eprintln!("rejected plan {}: {}", loaded.id, path.display());
    Ok(0)
}
