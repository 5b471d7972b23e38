//! Whether a plan may run: `inventory/policy.yaml` (who approves which nodes, how many), the
//! pre-flight of `apply` (every refusal that needs no node), and the records that make a plan
//! run once: approvals appended beside the plan, rejections, the controller's apply record.
//!
//! Pre-flight is read-only: a refusal changes nothing anywhere. The time is passed in. Nothing
//! here reaches a node; per-node staleness and replay are `apply`'s, right before a node's
//! first write.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::sshsig::Message;
use super::{
    split_armored, AllowedSigners, Signer, VerifyError, APPROVE_NAMESPACE, PLAN_NAMESPACE,
};
use crate::model::{Homelab, NodeName, Policy};
use crate::node::records::{Applied, ApplyState, Rejection};
use crate::node::{ActionState, Layout};
use crate::plan::file::{self, LoadedPlan, ReadError, Summary};
use crate::plan::{Action, Plan};

/// An approvals file holds a few signatures of a few hundred bytes each; never read more.
pub const MAX_APPROVED_BYTES: u64 = 256 * 1024;
/// More approval blocks than any policy needs is an error, not work to do.
pub const MAX_APPROVAL_BLOCKS: usize = 64;

/// Why a plan may not be approved or applied. Nothing was changed when one is returned.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(transparent)]
    Plan(#[from] ReadError),

    #[error(
        "`{}` is not an approval: apply takes `plans/<id>.approved`, written by `homelab approve plans/<id>.plan`",
        .path.display()
    )]
    NotAnApproval { path: PathBuf },

    #[error(
        "no approval: `{}` does not exist; an approver runs `homelab approve {}`",
        .approved.display(), .plan.display()
    )]
    NoApprovalFile { approved: PathBuf, plan: PathBuf },

    #[error("`{}` holds no approval: approve with `homelab approve {}`", .approved.display(), .plan.display())]
    NoApproval { approved: PathBuf, plan: PathBuf },

    #[error("`{}`: {source}", .path.display())]
    MalformedApprovals { path: PathBuf, source: VerifyError },

    #[error(
        "`{}` holds {size} bytes, more than {MAX_APPROVED_BYTES} (a few approvals): it is not an approvals file",
        .path.display()
    )]
    ApprovalsTooLarge { path: PathBuf, size: u64 },

    #[error(
        "`{}` holds {blocks} signature blocks, more than {MAX_APPROVAL_BLOCKS}: approve with `homelab approve` once per approver",
        .path.display()
    )]
    TooManyApprovals { path: PathBuf, blocks: usize },

    #[error("`{}`: approval {index} of {of}: {source}", .path.display())]
    BadApproval { path: PathBuf, index: usize, of: usize, source: VerifyError },

    /// On a node: too few approvals once those by keys its pinned roots do not list are left
    /// out.
    #[error(
        "{counted}; not counted here: {} approval{} by key{} this node's pinned allowed_signers does not list ({}): a new key counts on a node once a plan approved under the keys it holds has brought it there",
        .unlisted.len(),
        if .unlisted.len() == 1 { "" } else { "s" },
        if .unlisted.len() == 1 { "" } else { "s" },
        .unlisted.join(", ")
    )]
    UnlistedNotCounted { counted: Box<Refusal>, unlisted: Vec<String> },

    #[error(transparent)]
    Commit(#[from] crate::git::GitError),

    #[error(
        "the plan's commit `{commit}` is not on the reviewed branch{} {} (`reviewed_branches` in inventory/policy.yaml): it was never merged there, so nobody reviewed it; merge it through a pull request, update the branch here (`git pull`), and plan again from it",
        if .branches.len() == 1 { "" } else { "es" },
        .branches.iter().map(|b| format!("`{b}`")).collect::<Vec<_>>().join(", ")
    )]
    NotReviewed { commit: String, branches: Vec<String> },

    #[error("the plan's commit `{commit}` is not a valid homelab: {problems}")]
    CommitInvalid { commit: String, problems: String },

    #[error(
        "plan `{id}` was made from uncommitted changes (commit `{commit}`): its artifacts cannot be checked against Git, and inventory/policy.yaml does not allow approving such plans (`allow_uncommitted`); commit, then plan again"
    )]
    Uncommitted { id: String, commit: String },

    #[error(
        "plan `{id}`: the trust roots it carries (allowed_signers, policy) are not those of commit `{commit}`: nodes would take roots nobody reviewed; plan again"
    )]
    TrustDiffers { id: String, commit: String },

    #[error(
        "`{instance}`: {what} differs from the render of commit `{commit}` (first difference: {detail}): the plan does not deploy what its commit says; plan again"
    )]
    Differs { instance: String, what: String, commit: String, detail: String },

    #[error(
        "node `{node}`: {detail}: a plan lists a node's whole change, as the render of its commit (`{commit}`) against the node's state bound in the plan (its fingerprint) gives it; plan again"
    )]
    NotTheChange { node: String, commit: String, detail: String },

    #[error(
        "node `{node}`: the plan was rendered for the runtime root {planned}, and this apply would write to `{here}`: its files name folders of the other root; apply with the `--transport`/`--root` the plan was made with, or plan again with these"
    )]
    RootDiffers { node: String, planned: String, here: String },

    #[error(
        "the plan claims it was made by `{claimed}`, but its signature was made by `{actual}`: the planner line is not the signer; plan again"
    )]
    PlannerMismatch { claimed: String, actual: String },

    #[error("cannot check signatures: {source}")]
    Signers { source: super::SignersError },

    #[error("the plan's signature is not valid: {source}")]
    BadPlanSignature { source: VerifyError },

    #[error("the plan's expiry time is unreadable")]
    ExpiryUnreadable,

    #[error("plan `{id}` expired at {expires} (it is now {now}): plan again")]
    Expired { id: String, expires: String, now: String },

    #[error(
        "plan `{id}` is valid for {lifetime} (created {created}, expires {expires}), longer than the `plan_ttl` of {ttl} in inventory/policy.yaml: a planner does not choose how long its plan lives; plan again"
    )]
    LivesTooLong { id: String, created: String, expires: String, lifetime: String, ttl: String },

    #[error(
        "plan `{id}` says it was created at {created}, later than now ({now}) by more than {skew}: a plan is never made in the future (check the planner's clock); plan again"
    )]
    CreatedInFuture { id: String, created: String, now: String, skew: String },

    #[error("plan `{id}` was rejected by {by} at {at}: {reason} ({})", .record.display())]
    Rejected { id: String, by: String, at: String, reason: String, record: PathBuf },

    #[error(
        "plan `{id}` was already applied (recorded in {}): a plan runs once; plan again for new changes",
        .record.display()
    )]
    AlreadyApplied { id: String, record: PathBuf },

    #[error(
        "an apply of plan `{id}` already started and did not finish (recorded in {}, state `{state}`): continue it with `homelab apply --resume`, which finishes what began and refuses nothing new",
        .record.display()
    )]
    StartedNotFinished { id: String, record: PathBuf, state: String },

    #[error("plan `{id}` was already applied completely ({})", .record.display())]
    AppliedCompletely { id: String, record: PathBuf },

    #[error(
        "node `{node}` needs {required} approval{} from distinct keys of {}; it has {have} (approvals by {}; two signatures by one key count once, and so do two keys of one principal)",
        if *.required == 1 { "" } else { "s" },
        list(.approvers),
        if .by.is_empty() { "nobody".to_owned() } else { list(.by) }
    )]
    NotEnoughApprovals {
        node: NodeName,
        required: u32,
        approvers: BTreeSet<String>,
        have: usize,
        by: BTreeSet<String>,
    },

    #[error(
        "node `{node}` needs {humans} approval{} by a human's key of {} (inventory/policy.yaml: `humans`); it has {have}: a bot's approval (`telegram:<id>`) never counts as the only one; approve with `homelab approve`",
        if *.humans == 1 { "" } else { "s" },
        list(.approvers)
    )]
    NeedsHuman { node: NodeName, humans: u32, approvers: BTreeSet<String>, have: usize },

    #[error(
        "`{principal}` may not approve {} on node `{node}`: inventory/policy.yaml grants it {} (telegram.users); a human approves this one with `homelab approve`",
        .kinds.join(", "),
        if .granted.is_empty() { "nothing there".to_owned() } else { .granted.join(", ") }
    )]
    BotNotGranted { principal: String, node: NodeName, kinds: Vec<String>, granted: Vec<String> },
}

/// Principals of the policy or of allowed_signers, each quoted, none whole if huge.
fn list(names: &BTreeSet<String>) -> String {
    names.iter().map(|a| format!("`{}`", crate::quote::cut(a))).collect::<Vec<_>>().join(", ")
}

/// Where the controller keeps its records of plans: its runtime root.
#[derive(Debug, Clone)]
pub struct Records {
    layout: Layout,
}

impl Records {
    pub fn at(root: &Path) -> Records {
        Records { layout: Layout::local(root) }
    }

    pub fn applied(&self, id: &str) -> PathBuf {
        PathBuf::from(self.layout.applied(id))
    }

    pub fn rejected(&self, id: &str) -> PathBuf {
        PathBuf::from(self.layout.rejected(id))
    }

    pub fn action(&self, state: ActionState, id: &str) -> PathBuf {
        PathBuf::from(self.layout.action(state, id))
    }

    /// The controller's readable records of applies (`state/applied/*.json`), at most
    /// `MAX_RECORDS` of them, each of at most 1 MiB (a record is a few hundred bytes).
    pub fn applied_records(&self) -> Vec<Applied> {
        const MAX_RECORDS: usize = 10_000;
        let dir = self.applied("x");
        let Some(dir) = dir.parent() else { return Vec::new() };
        let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
        entries
            .filter_map(Result::ok)
            .take(MAX_RECORDS)
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter(|e| e.metadata().is_ok_and(|m| m.is_file() && m.len() <= 1 << 20))
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|b| Applied::parse(&b))
            .collect()
    }

    /// The controller's record of an apply of `id`, when there is a readable one.
    pub fn applied_record(&self, id: &str) -> Option<Applied> {
        std::fs::read(self.applied(id)).ok().and_then(|b| Applied::parse(&b))
    }
}

/// The repository's allowed signers, for a check that decides whether a plan may run: a file
/// that does not parse refuses (exit 3), like a bad signature would.
pub fn signers(text: &str) -> Result<AllowedSigners, Refusal> {
    AllowedSigners::parse(text, "inventory/allowed_signers")
        .map_err(|source| Refusal::Signers { source })
}

/// What the checks of a plan's trust need of it: its identity, times, planner, signature, the
/// message signed (itself, or its digests), and the nodes it changes with the kinds of change.
/// A whole [`LoadedPlan`] has all of it; so has a [`Summary`] read streaming, which lets the
/// operator page decide a large plan's state without holding it (issue 19).
pub trait PlanFacts {
    fn id(&self) -> &str;
    fn path(&self) -> &Path;
    fn created(&self) -> &str;
    fn expires(&self) -> &str;
    fn planner(&self) -> &str;
    fn signature(&self) -> &str;
    fn message(&self) -> Message<'_>;
    /// Each node the plan changes, with [`kinds_on`] it.
    fn changes(&self) -> Vec<(NodeName, Vec<&'static str>)>;
}

impl PlanFacts for LoadedPlan {
    fn id(&self) -> &str {
        &self.id
    }
    fn path(&self) -> &Path {
        &self.path
    }
    fn created(&self) -> &str {
        &self.plan.created
    }
    fn expires(&self) -> &str {
        &self.plan.expires
    }
    fn planner(&self) -> &str {
        &self.plan.planner
    }
    fn signature(&self) -> &str {
        &self.signature
    }
    fn message(&self) -> Message<'_> {
        Message::Digests(&self.digests)
    }
    fn changes(&self) -> Vec<(NodeName, Vec<&'static str>)> {
        changed_nodes(&self.plan).map(|n| (n.clone(), kinds_on(&self.plan, n))).collect()
    }
}

impl PlanFacts for Summary {
    fn id(&self) -> &str {
        &self.id
    }
    fn path(&self) -> &Path {
        &self.path
    }
    fn created(&self) -> &str {
        &self.created
    }
    fn expires(&self) -> &str {
        &self.expires
    }
    fn planner(&self) -> &str {
        &self.planner
    }
    fn signature(&self) -> &str {
        &self.signature
    }
    fn message(&self) -> Message<'_> {
        Message::Digests(&self.digests)
    }
    fn changes(&self) -> Vec<(NodeName, Vec<&'static str>)> {
        self.changes.clone()
    }
}

/// `<id>.rejected` beside the plan file.
pub fn rejected_beside(plan: &(impl PlanFacts + ?Sized)) -> PathBuf {
    plan.path().with_file_name(format!("{}.rejected", plan.id()))
}

/// `<id>.approved` beside the plan file.
pub fn approved_beside(plan: &(impl PlanFacts + ?Sized)) -> PathBuf {
    plan.path().with_file_name(format!("{}.approved", plan.id()))
}

/// Verifies the planner's signature: made in `homelab-plan` by a key of allowed_signers.
pub fn verify_planner(
    loaded: &(impl PlanFacts + ?Sized),
    signers: &AllowedSigners,
    now: SystemTime,
) -> Result<super::Verified, Refusal> {
    let v = signers
        .verify_message(PLAN_NAMESPACE, loaded.message(), loaded.signature(), now)
        .map_err(|source| Refusal::BadPlanSignature { source })?;
    // The planner a reviewer reads is the signer, never a claim: `principals fingerprint` as
    // `plan` writes it from the same verification.
    let actual = format!("{} {}", v.principals.join(","), v.fingerprint);
    if loaded.planner() != actual {
        return Err(Refusal::PlannerMismatch { claimed: loaded.planner().to_owned(), actual });
    }
    Ok(v)
}

pub fn check_not_expired(
    loaded: &(impl PlanFacts + ?Sized),
    now: SystemTime,
) -> Result<(), Refusal> {
    let expires =
        humantime::parse_rfc3339(loaded.expires()).map_err(|_| Refusal::ExpiryUnreadable)?;
    if now >= expires {
        return Err(Refusal::Expired {
            id: loaded.id().to_owned(),
            expires: loaded.expires().to_owned(),
            now: crate::clock::rfc3339(now),
        });
    }
    Ok(())
}

/// How far a plan's `created` may be ahead of the checker's clock: two machines' clocks differ
/// by a little, never by more.
pub const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// The plan's time window is the policy's, not the planner's: `expires - created` is at most
/// `plan_ttl`, and `created` is not later than `now` plus [`CLOCK_SKEW`]. A planner that writes
/// its own times (`expires 2099-…`, `created 2098-…`) would otherwise make a plan that never
/// expires. Whether the plan has expired is [`check_not_expired`]'s.
pub fn check_lifetime(
    loaded: &(impl PlanFacts + ?Sized),
    policy: &crate::model::Policy,
    now: SystemTime,
) -> Result<(), Refusal> {
    let created =
        humantime::parse_rfc3339(loaded.created()).map_err(|_| Refusal::ExpiryUnreadable)?;
    let expires =
        humantime::parse_rfc3339(loaded.expires()).map_err(|_| Refusal::ExpiryUnreadable)?;
    let rounded = |d: Duration| humantime::format_duration(Duration::from_secs(d.as_secs()));
    if let Ok(lifetime) = expires.duration_since(created) {
        if lifetime > policy.plan_ttl {
            return Err(Refusal::LivesTooLong {
                id: loaded.id().to_owned(),
                created: loaded.created().to_owned(),
                expires: loaded.expires().to_owned(),
                lifetime: rounded(lifetime).to_string(),
                ttl: rounded(policy.plan_ttl).to_string(),
            });
        }
    }
    if created > now + CLOCK_SKEW {
        return Err(Refusal::CreatedInFuture {
            id: loaded.id().to_owned(),
            created: loaded.created().to_owned(),
            now: crate::clock::rfc3339(now),
            skew: rounded(CLOCK_SKEW).to_string(),
        });
    }
    Ok(())
}

/// A rejection of the plan, beside it or on the controller.
pub fn check_not_rejected(
    loaded: &(impl PlanFacts + ?Sized),
    records: &Records,
) -> Result<(), Refusal> {
    for p in [rejected_beside(loaded), records.rejected(loaded.id())] {
        if p.exists() {
            let record = std::fs::read(&p).ok().and_then(|b| Rejection::parse(&b));
            let field = |f: fn(&Rejection) -> &String| {
                record.as_ref().map(f).cloned().unwrap_or_else(|| "?".to_owned())
            };
            return Err(Refusal::Rejected {
                id: loaded.id().to_owned(),
                by: field(|r| &r.by),
                at: field(|r| &r.rejected_at),
                reason: field(|r| &r.reason),
                record: p,
            });
        }
    }
    Ok(())
}

pub fn check_not_consumed_or_rejected(
    loaded: &LoadedPlan,
    records: &Records,
) -> Result<(), Refusal> {
    check_not_rejected(loaded, records)?;
    let consumed = records.applied(&loaded.id);
    if consumed.exists() {
        // A killed or cut apply is not a replay: say what continues it.
        if let Some(r) = records.applied_record(&loaded.id) {
            if r.state != ApplyState::Completed {
                let state = match r.state {
                    ApplyState::Started => "started",
                    ApplyState::Partial => "partial",
                    ApplyState::Completed => "completed",
                };
                return Err(Refusal::StartedNotFinished {
                    id: loaded.id.clone(),
                    record: consumed,
                    state: state.to_owned(),
                });
            }
        }
        return Err(Refusal::AlreadyApplied { id: loaded.id.clone(), record: consumed });
    }
    Ok(())
}

/// The nodes a plan changes (a node with only no-ops needs no approval). A node that takes new
/// trust roots is changed, with or without a service to change: the roots say who approves
/// there, so taking them is approved as that node's rule says, never by default.
pub fn changed_nodes(plan: &Plan) -> impl Iterator<Item = &NodeName> {
    plan.nodes
        .iter()
        .filter(|n| {
            n.pinned_match == Some(false) || n.changes.iter().any(|c| c.action != Action::NoOp)
        })
        .map(|n| &n.node)
}

/// The kind of a change, as `policy.yaml` grants bots: the action's name, with an update that
/// writes no file (every artifact as the node already holds it: only containers brought back
/// up) told apart as `restart`. `None` for a no-op.
pub fn change_kind(c: &crate::plan::Change) -> Option<&'static str> {
    Some(match c.action {
        Action::NoOp => return None,
        Action::Create => "create",
        Action::Replace => "replace",
        Action::Delete => "delete",
        // Data put back: never a restart, whatever files it rewrites.
        Action::Update if c.restore.is_some() => "restore",
        Action::Update => {
            let same = c.artifacts.len() == c.prior.len()
                && c.artifacts.iter().all(|a| {
                    c.prior
                        .iter()
                        .any(|p| p.name == a.name && p.sha256 == a.sha256 && p.mode == a.mode)
                });
            if same {
                "restart"
            } else {
                "update"
            }
        }
    })
}

/// The kinds of change a plan makes on `node`, sorted, once each.
pub fn kinds_on(plan: &Plan, node: &NodeName) -> Vec<&'static str> {
    let mut kinds: BTreeSet<&'static str> = plan
        .nodes
        .iter()
        .filter(|n| &n.node == node)
        .flat_map(|n| n.changes.iter().filter_map(change_kind))
        .collect();
    if plan.nodes.iter().any(|n| &n.node == node && n.pinned_match == Some(false)) {
        kinds.insert(crate::model::TRUST_KIND);
    }
    kinds.into_iter().collect()
}

/// Whether a verified key is a bot's: a line that allows it names a `telegram:` principal. Such
/// a key never counts as a human's, whatever else its lines say.
pub fn is_bot_key(v: &super::Verified) -> bool {
    v.principals.iter().any(|p| crate::model::is_bot_principal(p))
}

/// Whether the Telegram user `principal` (`telegram:<id>`) is granted every change of the
/// plan: each changed node and each kind of change on it (inventory/policy.yaml).
pub fn check_bot_grant(lab: &Homelab, plan: &Plan, principal: &str) -> Result<(), Refusal> {
    for node in changed_nodes(plan) {
        let kinds = kinds_on(plan, node);
        if !lab.policy.bots_for(node, kinds.iter().copied()).contains(principal) {
            let id = principal
                .strip_prefix(crate::model::TELEGRAM_PRINCIPAL)
                .and_then(|i| i.parse::<u64>().ok());
            let granted = id
                .and_then(|id| lab.policy.telegram.get(&id))
                .filter(|g| g.nodes.contains(node))
                .map(|g| g.changes.iter().cloned().collect())
                .unwrap_or_default();
            return Err(Refusal::BotNotGranted {
                principal: principal.to_owned(),
                node: node.clone(),
                kinds: kinds.iter().map(|k| k.to_string()).collect(),
                granted,
            });
        }
    }
    Ok(())
}

/// The outcome of checking the approvals against the policy.
#[derive(Debug)]
pub struct Approvals {
    /// What each distinct approving key proved, by key fingerprint.
    pub by_key: BTreeMap<String, super::Verified>,
}

/// How many of `approvers` approved: each approver counts once, with a key of its own (a key
/// allowed as several principals, or as `*`, stands for one of them, never for all). The size
/// of a maximum matching between approvers and keys, by augmenting paths (both are a handful).
pub fn count_approvers(approvers: &BTreeSet<String>, keys: &[&super::Verified]) -> usize {
    let approvers: Vec<&String> = approvers.iter().collect();
    // owner[k] = the approver key k is matched to.
    let mut owner: Vec<Option<usize>> = vec![None; keys.len()];
    fn augment(
        a: usize,
        approvers: &[&String],
        keys: &[&super::Verified],
        owner: &mut Vec<Option<usize>>,
        seen: &mut Vec<bool>,
    ) -> bool {
        for k in 0..keys.len() {
            if seen[k] || !keys[k].allows(approvers[a]) {
                continue;
            }
            seen[k] = true;
            if owner[k].is_none_or(|b| augment(b, approvers, keys, owner, seen)) {
                owner[k] = Some(a);
                return true;
            }
        }
        false
    }
    (0..approvers.len())
        .filter(|&a| augment(a, &approvers, keys, &mut owner, &mut vec![false; keys.len()]))
        .count()
}

/// What an approval by a key that `allowed_signers` does not list is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unknown {
    /// An error: the controller's own roots are the commit's, which list every approver.
    Refused,
    /// Not counted: a node checks under the roots it pinned, and a plan that rotates them is
    /// approved by the approvers of the new roots too (as TUF signs a new root with the old
    /// keys and the new), whose keys the node learns from that very plan. A block by a listed
    /// key that does not verify is still refused.
    NotCounted,
}

/// Verifies every approval block and checks the policy for every node the plan changes;
/// approvals by keys `allowed_signers` does not list are as `unknown` says.
pub fn count_approvals(
    loaded: &(impl PlanFacts + ?Sized),
    approved_text: &str,
    approved_path: &Path,
    signers: &AllowedSigners,
    policy: &Policy,
    now: SystemTime,
    unknown: Unknown,
) -> Result<Approvals, Refusal> {
    let blocks = split_armored(approved_text).map_err(|source| Refusal::MalformedApprovals {
        path: approved_path.to_path_buf(),
        source,
    })?;
    if blocks.is_empty() {
        return Err(Refusal::NoApproval {
            approved: approved_path.to_path_buf(),
            plan: loaded.path().to_path_buf(),
        });
    }
    if blocks.len() > MAX_APPROVAL_BLOCKS {
        return Err(Refusal::TooManyApprovals {
            path: approved_path.to_path_buf(),
            blocks: blocks.len(),
        });
    }
    // A block copied twice is verified once.
    let mut seen = BTreeSet::new();
    let mut unlisted = Vec::new();
    let mut by_key: BTreeMap<String, super::Verified> = BTreeMap::new();
    for (i, block) in blocks.iter().enumerate() {
        if !seen.insert(block.as_str()) {
            continue;
        }
        let v = match signers.verify_message(APPROVE_NAMESPACE, loaded.message(), block, now) {
            Err(VerifyError::NotAllowed { fingerprint, .. }) if unknown == Unknown::NotCounted => {
                unlisted.push(fingerprint);
                continue;
            }
            r => r.map_err(|source| Refusal::BadApproval {
                path: approved_path.to_path_buf(),
                index: i + 1,
                of: blocks.len(),
                source,
            })?,
        };
        by_key.insert(v.fingerprint.clone(), v);
    }
    let keys: Vec<&super::Verified> = by_key.values().collect();
    check_counts(policy, &loaded.changes(), &keys).map_err(|counted| {
        match unlisted.is_empty() {
            true => counted,
            false => Refusal::UnlistedNotCounted { counted: Box::new(counted), unlisted },
        }
    })?;
    Ok(Approvals { by_key })
}

/// Every changed node's rule against the approving keys: `required` approvals from its
/// approvers and the bots granted its kinds of change, `humans` of them by keys not a bot's.
pub fn check_counts(
    policy: &Policy,
    changes: &[(NodeName, Vec<&'static str>)],
    keys: &[&super::Verified],
) -> Result<(), Refusal> {
    let humans: Vec<&super::Verified> = keys.iter().copied().filter(|v| !is_bot_key(v)).collect();
    for (node, kinds) in changes {
        let rule = policy.rule_for(node);
        let mut approvers = rule.approvers.clone();
        approvers.extend(policy.bots_for(node, kinds.iter().copied()));
        let have = count_approvers(&approvers, keys);
        if (have as u32) < rule.required {
            return Err(Refusal::NotEnoughApprovals {
                node: node.clone(),
                required: rule.required,
                approvers,
                have,
                by: keys.iter().flat_map(|v| v.principals.iter().cloned()).collect(),
            });
        }
        let human = count_approvers(&rule.approvers, &humans);
        if (human as u32) < rule.humans {
            return Err(Refusal::NeedsHuman {
                node: node.clone(),
                humans: rule.humans,
                approvers: rule.approvers.clone(),
                have: human,
            });
        }
    }
    Ok(())
}

/// Before a bot signs: its user is granted every change, and every node that asks for a
/// human's approval has it already (a bot's approval never stands alone). Read-only.
pub fn check_bot_approval(
    lab: &Homelab,
    loaded: &LoadedPlan,
    signers: &AllowedSigners,
    principal: &str,
    now: SystemTime,
) -> Result<(), Refusal> {
    check_bot_grant(lab, &loaded.plan, principal)?;
    let path = approved_beside(loaded);
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let blocks = if text.trim().is_empty() {
        Vec::new()
    } else {
        split_armored(&text)
            .map_err(|source| Refusal::MalformedApprovals { path: path.clone(), source })?
    };
    let verified: Vec<super::Verified> = blocks
        .iter()
        .filter_map(|b| signers.verify(APPROVE_NAMESPACE, loaded.body.as_bytes(), b, now).ok())
        .filter(|v| !is_bot_key(v))
        .collect();
    let humans: Vec<&super::Verified> = verified.iter().collect();
    for node in changed_nodes(&loaded.plan) {
        let rule = lab.policy.rule_for(node);
        let have = count_approvers(&rule.approvers, &humans);
        if (have as u32) < rule.humans {
            return Err(Refusal::NeedsHuman {
                node: node.clone(),
                humans: rule.humans,
                approvers: rule.approvers.clone(),
                have,
            });
        }
    }
    Ok(())
}

/// How `apply` treats the plan's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preflight {
    /// A first apply: not expired, not applied, not rejected.
    Fresh,
    /// `--resume`: an apply that already started may finish past expiry.
    Resume,
    /// `--stage diagnose`: read-only; only signatures and approvals matter.
    Inspect,
}

/// Every check of `apply` that does not need a node, before anything is written anywhere.
pub fn preflight(
    lab: &Homelab,
    signers: &AllowedSigners,
    approved: &Path,
    records: &Records,
    kind: Preflight,
    now: SystemTime,
) -> Result<LoadedPlan, Refusal> {
    let name = approved.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let Some(id) = name.strip_suffix(".approved") else {
        return Err(Refusal::NotAnApproval { path: approved.to_path_buf() });
    };
    let plan_path = approved.with_file_name(format!("{id}.plan"));
    let size = std::fs::metadata(approved).map(|m| m.len()).unwrap_or(0);
    if size > MAX_APPROVED_BYTES {
        return Err(Refusal::ApprovalsTooLarge { path: approved.to_path_buf(), size });
    }
    let approved_text = match file::read_bounded(approved) {
        Ok(t) => t,
        Err(ReadError::Unreadable { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            return Err(Refusal::NoApprovalFile {
                approved: approved.to_path_buf(),
                plan: plan_path,
            })
        }
        Err(e) => return Err(e.into()),
    };
    let loaded = file::read(&plan_path)?;
    verify_planner(&loaded, signers, now)?;
    let started = records.applied(&loaded.id);
    match kind {
        Preflight::Inspect => {}
        Preflight::Resume if started.exists() => {
            // Finishing an apply that already started is allowed past the plan's expiry: every
            // service is at its old or new version, and the approvals below still must hold.
            if records.applied_record(&loaded.id).is_some_and(|r| r.state == ApplyState::Completed)
            {
                return Err(Refusal::AppliedCompletely { id: loaded.id.clone(), record: started });
            }
            check_not_rejected(&loaded, records)?;
        }
        Preflight::Resume | Preflight::Fresh => {
            check_lifetime(&loaded, &lab.policy, now)?;
            check_not_expired(&loaded, now)?;
            check_not_consumed_or_rejected(&loaded, records)?;
        }
    }
    count_approvals(
        &loaded,
        &approved_text,
        approved,
        signers,
        &lab.policy,
        now,
        Unknown::Refused,
    )?;
    Ok(loaded)
}

/// What `approve` did.
#[derive(Debug)]
pub struct Approval {
    pub path: PathBuf,
    /// Whether a signature was added (`false`: this key had approved already).
    pub added: bool,
}

/// Signs the plan in `homelab-approve` and appends the block to `<id>.approved`, unless this
/// key approved it already. The caller has verified the plan and shown it.
pub fn approve(
    loaded: &LoadedPlan,
    key: &Signer,
    signers: &AllowedSigners,
    policy: &crate::model::Policy,
    records: &Records,
    now: SystemTime,
) -> Result<Approval, ApproveError> {
    let file = approvals_for(loaded, signers, policy, records, now)?;
    if file.approved_by(&key.fingerprint()) {
        return Ok(Approval { path: file.path, added: false });
    }
    let sig = key.sign(APPROVE_NAMESPACE, loaded.body.as_bytes())?;
    file.append(&sig)
}

/// Appends a signature made elsewhere (`ssh-keygen -Y sign`, pasted into the operator page)
/// to `<id>.approved`, after the same checks as [`approve`] and after verifying it: one
/// armored block, in `homelab-approve`, over the plan's signed bytes, by a key of
/// allowed_signers allowed to approve. Nothing is written when it is refused. Returns what
/// the signature proved with the outcome (`added: false`: this key had approved already).
pub fn add_signature(
    loaded: &LoadedPlan,
    signature: &str,
    signers: &AllowedSigners,
    policy: &crate::model::Policy,
    records: &Records,
    now: SystemTime,
) -> Result<(Approval, super::Verified), ApproveError> {
    let file = approvals_for(loaded, signers, policy, records, now)?;
    let path = file.path.clone();
    let blocks = split_armored(signature).map_err(|source| Refusal::BadApproval {
        path: path.clone(),
        index: 1,
        of: 1,
        source,
    })?;
    let [block] = blocks.as_slice() else {
        return Err(ApproveError::NotOneBlock { blocks: blocks.len() });
    };
    let verified = signers
        .verify(APPROVE_NAMESPACE, loaded.body.as_bytes(), block, now)
        .map_err(|source| Refusal::BadApproval { path, index: 1, of: 1, source })?;
    if file.approved_by(&verified.fingerprint) {
        return Ok((Approval { path: file.path, added: false }, verified));
    }
    Ok((file.append(block)?, verified))
}

/// The approvals file of a plan that may still be approved, as read before adding to it.
struct ApprovalsFile {
    path: PathBuf,
    text: String,
    /// Fingerprints of the keys whose blocks verify.
    by: BTreeSet<String>,
}

impl ApprovalsFile {
    fn approved_by(&self, fingerprint: &str) -> bool {
        self.by.contains(fingerprint)
    }

    /// Writes the file with `block` appended (atomically: a reader sees the old or the new).
    fn append(self, block: &str) -> Result<Approval, ApproveError> {
        let mut text = self.text;
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(block);
        if !text.ends_with('\n') {
            text.push('\n');
        }
        crate::files::write_atomic(&self.path, text.as_bytes())
            .map_err(|source| ApproveError::Write { path: self.path.clone(), source })?;
        Ok(Approval { path: self.path, added: true })
    }
}

/// The checks every new approval passes (planner, lifetime, expiry, not applied, not
/// rejected), then `<id>.approved` as it is now.
fn approvals_for(
    loaded: &LoadedPlan,
    signers: &AllowedSigners,
    policy: &crate::model::Policy,
    records: &Records,
    now: SystemTime,
) -> Result<ApprovalsFile, ApproveError> {
    verify_planner(loaded, signers, now)?;
    check_lifetime(loaded, policy, now)?;
    check_not_expired(loaded, now)?;
    check_not_consumed_or_rejected(loaded, records)?;
    let path = approved_beside(loaded);
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    if size > MAX_APPROVED_BYTES {
        return Err(Refusal::ApprovalsTooLarge { path, size }.into());
    }
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => return Err(ApproveError::Write { path, source }),
    };
    let blocks = if text.trim().is_empty() {
        Vec::new()
    } else {
        split_armored(&text)
            .map_err(|source| Refusal::MalformedApprovals { path: path.clone(), source })?
    };
    let by = blocks
        .iter()
        .filter_map(|b| signers.verify(APPROVE_NAMESPACE, loaded.body.as_bytes(), b, now).ok())
        .map(|v| v.fingerprint)
        .collect();
    Ok(ApprovalsFile { path, text, by })
}

/// Why `approve` or `reject` did not record anything.
#[derive(Debug, thiserror::Error)]
pub enum ApproveError {
    #[error(transparent)]
    Refused(#[from] Refusal),

    #[error(transparent)]
    Sign(#[from] super::SignError),

    #[error("cannot write `{}`: {source}", .path.display())]
    Write { path: PathBuf, source: std::io::Error },

    #[error(
        "expected one signature block (`-----BEGIN SSH SIGNATURE-----` … `-----END SSH SIGNATURE-----`), found {blocks}: paste the output of one `ssh-keygen -Y sign`"
    )]
    NotOneBlock { blocks: usize },
}

/// Records a refusal beside the plan and on the controller; the pending action moves to
/// `actions/failed/`. Apply refuses a rejected plan.
pub fn reject(
    loaded: &LoadedPlan,
    record: &Rejection,
    records: &Records,
) -> Result<PathBuf, ApproveError> {
    let bytes = record.to_bytes();
    let write = |path: &Path| {
        crate::files::write_atomic(path, &bytes)
            .map_err(|source| ApproveError::Write { path: path.to_path_buf(), source })
    };
    let beside = rejected_beside(loaded);
    write(&beside)?;
    write(&records.rejected(&loaded.id))?;
    let pending = records.action(ActionState::Pending, &loaded.id);
    if pending.exists() {
        write(&records.action(ActionState::Failed, &loaded.id))?;
        let _ = std::fs::remove_file(&pending);
    }
    Ok(beside)
}
