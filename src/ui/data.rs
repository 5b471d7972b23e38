//! What the operator page reads, read-only: the observer's world files, the plan files and
//! their approvals, the controller's records, and event files. Each read answers with a value
//! or a reason in words; nothing here writes, and nothing reads `<root>/config/` (secrets).
//!
//! A plan's state is decided by the same checks `apply`'s pre-flight runs
//! (`approve::policy`), so the page never says "ready" where apply would refuse.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::approve::policy::{self, Records, Refusal};
use crate::approve::{split_armored, AllowedSigners, Verified, APPROVE_NAMESPACE};
use crate::model::Homelab;
use crate::node::records::PendingAction;
use crate::node::ActionState;
use crate::plan::file::{self, LoadedPlan, ReadError, Summary};

/// At most this many plans are listed (the newest files first).
pub const MAX_PLANS: usize = 50;
/// At most this many events are shown on one page.
pub const MAX_EVENTS: usize = 500;
/// The largest plan file a plan's own page (its signed bytes, an approval or rejection through
/// the page) reads whole: a reviewed change of a homelab is a few hundred KiB; past this the
/// page says to use `homelab show` and `homelab approve`, which read up to the plan limit
/// (`plan::file::MAX_PLAN_BYTES`). Listings never read a plan whole (see [`Summaries`]).
pub const PAGE_MAX_PLAN_BYTES: u64 = 4 * 1024 * 1024;

/// Where the page reads from.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The homelab repository (inventory, policy, allowed signers; the plans' commits).
    pub repo: PathBuf,
    /// The plan files: `plans/` of the repository or `--plans-dir`.
    pub plans: PathBuf,
    /// The controller's runtime root (`world/`, `actions/`, `state/`, its own `events/`).
    pub root: PathBuf,
    /// With nodes' runtime roots on this machine (`--root DIR`, as for the local transport):
    /// node `<id>`'s events under `DIR/<id>/events/`.
    pub node_roots: Option<PathBuf>,
}

impl Sources {
    pub fn records(&self) -> Records {
        Records::at(&self.root)
    }

    /// The homelab as `validate` checks it, or every problem in words.
    pub fn lab(&self) -> Result<Homelab, String> {
        crate::check::homelab(&self.repo).map_err(|d| {
            format!(
                "the homelab at `{}` does not validate ({} problem(s)); run `homelab validate`: {}",
                self.repo.display(),
                d.len(),
                d.first().map(ToString::to_string).unwrap_or_default()
            )
        })
    }

    /// The path of plan `id`, when `id` is a plan id (16 lowercase hex digits).
    pub fn plan_path(&self, id: &str) -> Option<PathBuf> {
        let is_id =
            id.len() == 16 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        is_id.then(|| self.plans.join(format!("{id}.plan")))
    }
}

/// Where a plan stands, as apply's pre-flight would say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Waiting for approvals (`why`: what is missing).
    Pending {
        why: String,
    },
    /// Its approvals satisfy the policy: the executor (or `homelab apply`) may run it.
    Approved,
    /// An apply started (`done`: and finished).
    Applied {
        done: bool,
    },
    Rejected {
        why: String,
    },
    Expired {
        why: String,
    },
    /// The plan or its approvals cannot be trusted or read.
    Invalid {
        why: String,
    },
}

impl State {
    /// One word for a badge.
    pub fn word(&self) -> &'static str {
        match self {
            State::Pending { .. } => "pending",
            State::Approved => "approved",
            State::Applied { done: true } => "applied",
            State::Applied { done: false } => "running",
            State::Rejected { .. } => "rejected",
            State::Expired { .. } => "expired",
            State::Invalid { .. } => "refused",
        }
    }

    /// Whether an approval may still be added (apply has not consumed or refused the plan).
    pub fn open(&self) -> bool {
        matches!(self, State::Pending { .. } | State::Approved)
    }

    pub fn why(&self) -> Option<&str> {
        match self {
            State::Pending { why }
            | State::Rejected { why }
            | State::Expired { why }
            | State::Invalid { why } => Some(why),
            State::Approved | State::Applied { .. } => None,
        }
    }
}

/// One approval block of `<id>.approved`, checked.
#[derive(Debug, Clone)]
pub struct ApprovalLine {
    pub verified: Result<Verified, String>,
}

/// A plan as the page shows it.
pub struct PlanView {
    pub loaded: LoadedPlan,
    pub state: State,
    /// The planner's signature in words (`valid: made by …` or why not).
    pub planner: Result<String, String>,
    /// The folder of its action under `actions/`, and the supervisor's reason.
    pub action: Option<(ActionState, Option<String>)>,
    pub approvals: Vec<ApprovalLine>,
    /// The controller's record of its apply, if one began: each node's outcome, and its detail,
    /// which quotes what failed steps printed (redacted on the nodes): shown only to a
    /// logged-in visitor.
    pub applied: Option<crate::node::records::Applied>,
}

/// A plan file's path, and its summary or why it could not be read.
pub type PlanFile = (PathBuf, Result<Arc<Summary>, String>);

/// The plans' summaries, each read once per version of its file (issue 19): a listing reads
/// the bounded summary of a plan (`plan::file::summarize`, one streaming pass) the first time it
/// sees the file, and from then on only its metadata. A file is the same version while its
/// device, inode, size, modification and change times are. One summary is read at a time, so
/// concurrent listings neither hash the same large file side by side nor stack their buffers.
#[derive(Default)]
pub struct Summaries {
    cache: Mutex<HashMap<PathBuf, Cached>>,
    reading: Mutex<()>,
}

/// A file's version and its summary (or why it has none).
type Cached = (Version, Result<Arc<Summary>, String>);

/// What identifies a version of a file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Version {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Version {
    fn of(m: &std::fs::Metadata) -> Version {
        use std::os::unix::fs::MetadataExt;
        Version {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// More cached summaries than this and the cache starts over (it holds a few KiB each).
const MAX_SUMMARIES: usize = 4 * MAX_PLANS;

impl Summaries {
    /// The summary of the plan file at `path`, from the cache when the file has not changed.
    pub fn get(&self, path: &Path) -> Result<Arc<Summary>, String> {
        let lock = |m: &Mutex<HashMap<PathBuf, Cached>>| {
            m.lock().unwrap_or_else(|e| e.into_inner()).get(path).cloned()
        };
        let version = |path: &Path| {
            std::fs::metadata(path)
                .map(|m| Version::of(&m))
                .map_err(|e| format!("cannot read `{}`: {e}", path.display()))
        };
        let now = version(path)?;
        if let Some((v, r)) = lock(&self.cache) {
            if v == now {
                return r;
            }
        }
        let _one = self.reading.lock().unwrap_or_else(|e| e.into_inner());
        // Another request may have read it while this one waited.
        if let Some((v, r)) = lock(&self.cache) {
            if v == now {
                return r;
            }
        }
        let read = file::summarize(path).map(Arc::new).map_err(|e| e.to_string());
        // Changed while it was read: answer, but do not keep what may be a mix of two versions.
        if version(path)? == now {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if cache.len() >= MAX_SUMMARIES {
                cache.clear();
            }
            cache.insert(path.to_path_buf(), (now, read.clone()));
        }
        read
    }
}

/// The plan files, newest first, at most [`MAX_PLANS`]: each one's summary, or why it cannot be
/// read.
pub fn plan_files(plans: &Path, summaries: &Summaries) -> Result<Vec<PlanFile>, String> {
    let dir = match std::fs::read_dir(plans) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read `{}`: {e}", plans.display())),
    };
    let mut files: Vec<(SystemTime, PathBuf)> = dir
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "plan"))
        .map(|p| {
            (std::fs::metadata(&p).and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH), p)
        })
        .collect();
    files.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    Ok(files
        .into_iter()
        .take(MAX_PLANS)
        .map(|(_, p)| {
            let r = summaries.get(&p);
            (p, r)
        })
        .collect())
}

/// Why a plan's own page does not show it.
pub enum PlanRead {
    /// Larger than [`PAGE_MAX_PLAN_BYTES`]: what to run instead.
    TooLarge(String),
    /// It cannot be read as a plan.
    Refused(String),
}

/// Reads a plan whole for its own page, when it is no larger than [`PAGE_MAX_PLAN_BYTES`]
/// (its size is looked at before any of it is read).
pub fn read_plan(path: &Path) -> Result<LoadedPlan, PlanRead> {
    let size = std::fs::metadata(path)
        .map_err(|e| PlanRead::Refused(format!("cannot read `{}`: {e}", path.display())))?
        .len();
    if size > PAGE_MAX_PLAN_BYTES {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        return Err(PlanRead::TooLarge(format!(
            "this plan is {size} bytes, more than this page reads ({PAGE_MAX_PLAN_BYTES} bytes): read it with `homelab show plans/{name}` and approve it with `homelab approve plans/{name}`"
        )));
    }
    file::read(path).map_err(|e| PlanRead::Refused(e.to_string()))
}

/// The action of plan `id` under the controller root, in whichever folder it is.
pub fn action(records: &Records, id: &str) -> Option<(ActionState, Option<String>)> {
    use ActionState as S;
    [S::Pending, S::Approved, S::Running, S::Completed, S::Failed].into_iter().find_map(|s| {
        let bytes = std::fs::read(records.action(s, id)).ok()?;
        Some((s, PendingAction::parse(&bytes).and_then(|r| r.reason)))
    })
}

/// Where `loaded` stands, by the checks of apply's pre-flight, in its order.
pub fn state(
    loaded: &(impl policy::PlanFacts + ?Sized),
    signers: &AllowedSigners,
    lab: &Homelab,
    records: &Records,
    now: SystemTime,
) -> State {
    if let Err(e) = policy::verify_planner(loaded, signers, now) {
        return State::Invalid { why: e.to_string() };
    }
    if let Err(e) = policy::check_not_rejected(loaded, records) {
        return State::Rejected { why: e.to_string() };
    }
    if records.applied(loaded.id()).exists() {
        let done = records
            .applied_record(loaded.id())
            .is_some_and(|r| r.state == crate::node::records::ApplyState::Completed);
        return State::Applied { done };
    }
    if let Err(e) = policy::check_lifetime(loaded, &lab.policy, now) {
        return State::Invalid { why: e.to_string() };
    }
    if let Err(e) = policy::check_not_expired(loaded, now) {
        return State::Expired { why: e.to_string() };
    }
    let approved = policy::approved_beside(loaded);
    // Its size first: an approvals file is a few KiB, and a huge one is not read.
    match std::fs::metadata(&approved) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return State::Pending { why: "no approval yet".to_owned() };
        }
        Ok(m) if m.len() > policy::MAX_APPROVED_BYTES => {
            return State::Invalid {
                why: format!("`{}` is larger than an approvals file can be", approved.display()),
            };
        }
        _ => {}
    }
    let text = match file::read_bounded(&approved) {
        Ok(t) => t,
        Err(ReadError::Unreadable { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            return State::Pending { why: "no approval yet".to_owned() };
        }
        Err(e) => return State::Invalid { why: e.to_string() },
    };
    if text.len() as u64 > policy::MAX_APPROVED_BYTES {
        return State::Invalid {
            why: format!("`{}` is larger than an approvals file can be", approved.display()),
        };
    }
    match policy::count_approvals(
        loaded,
        &text,
        &approved,
        signers,
        &lab.policy,
        now,
        policy::Unknown::Refused,
    ) {
        Ok(_) => State::Approved,
        Err(e @ (Refusal::NoApproval { .. } | Refusal::NotEnoughApprovals { .. })) => {
            State::Pending { why: e.to_string() }
        }
        Err(e) => State::Invalid { why: e.to_string() },
    }
}

/// Every block of `<id>.approved`, each verified on its own.
pub fn approvals(
    loaded: &LoadedPlan,
    signers: &AllowedSigners,
    now: SystemTime,
) -> Vec<ApprovalLine> {
    let approved = policy::approved_beside(loaded);
    if std::fs::metadata(&approved).is_ok_and(|m| m.len() > policy::MAX_APPROVED_BYTES) {
        let why = format!("`{}` is larger than an approvals file can be", approved.display());
        return vec![ApprovalLine { verified: Err(why) }];
    }
    let Ok(text) = file::read_bounded(&approved) else { return Vec::new() };
    match split_armored(&text) {
        Err(e) => vec![ApprovalLine { verified: Err(e.to_string()) }],
        Ok(blocks) => blocks
            .iter()
            .take(policy::MAX_APPROVAL_BLOCKS)
            .map(|b| ApprovalLine {
                verified: signers
                    .verify(APPROVE_NAMESPACE, loaded.body.as_bytes(), b, now)
                    .map_err(|e| e.to_string()),
            })
            .collect(),
    }
}

/// A plan with its state, signature and approvals (review of its content is the caller's).
pub fn plan_view(
    loaded: LoadedPlan,
    lab: &Homelab,
    records: &Records,
    now: SystemTime,
) -> PlanView {
    let signers = match policy::signers(&lab.allowed_signers) {
        Ok(s) => s,
        Err(e) => {
            let why = e.to_string();
            return PlanView {
                applied: records.applied_record(&loaded.id),
                action: action(records, &loaded.id),
                loaded,
                state: State::Invalid { why: why.clone() },
                planner: Err(why),
                approvals: Vec::new(),
            };
        }
    };
    let planner = policy::verify_planner(&loaded, &signers, now)
        .map(|v| format!("valid: made by {} ({})", v.principals.join(", "), v.fingerprint))
        .map_err(|e| e.to_string());
    let state = state(&loaded, &signers, lab, records, now);
    let approvals = approvals(&loaded, &signers, now);
    PlanView {
        applied: records.applied_record(&loaded.id),
        action: action(records, &loaded.id),
        loaded,
        state,
        planner,
        approvals,
    }
}

/// The event filters of the timeline (query parameters; empty means any).
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct EventFilter {
    #[serde(default)]
    pub node: String,
    #[serde(default)]
    pub service: String,
    /// The event type (`kind`: `type` is a keyword of the page's forms).
    #[serde(default)]
    pub kind: String,
    /// At least this severity.
    #[serde(default)]
    pub severity: String,
    /// A plan id or other correlation id.
    #[serde(default)]
    pub correlation: String,
}

impl EventFilter {
    /// Why the filter cannot be applied (an unknown type or severity), if so.
    pub fn problem(&self) -> Option<String> {
        if !self.kind.is_empty() && crate::events::Kind::parse(&self.kind).is_none() {
            return Some(format!(
                "unknown event type `{}`: expected one of {}",
                self.kind,
                crate::events::TYPES.join(", ")
            ));
        }
        if !self.severity.is_empty() && crate::events::Severity::parse(&self.severity).is_none() {
            return Some(format!(
                "unknown severity `{}`: expected one of {}",
                self.severity,
                crate::events::SEVERITIES.join(", ")
            ));
        }
        None
    }

    /// Whether `e` passes the filter.
    pub fn passes(&self, e: &serde_json::Value) -> bool {
        let field = |k: &str| e[k].as_str().unwrap_or_default();
        let rank = |s: &str| crate::events::SEVERITIES.iter().position(|x| *x == s);
        (self.node.is_empty() || field("node") == self.node)
            && (self.service.is_empty() || field("service") == self.service)
            && (self.kind.is_empty() || field("type") == self.kind)
            && (self.correlation.is_empty() || field("correlation_id") == self.correlation)
            && (self.severity.is_empty()
                || rank(field("severity")).zip(rank(&self.severity)).is_some_and(|(a, b)| a >= b))
    }
}

/// The events the page can see: the controller root's own, and with `node_roots` those of
/// each of `nodes` there. Oldest first; how many lines were torn.
pub fn events(
    sources: &Sources,
    nodes: &[String],
) -> Result<(Vec<serde_json::Value>, usize), String> {
    let mut roots = vec![sources.root.clone()];
    if let Some(dir) = &sources.node_roots {
        roots
            .extend(nodes.iter().map(|n| dir.join(n)).filter(|p| p.is_dir() && *p != sources.root));
    }
    let mut all = Vec::new();
    let mut torn = 0;
    for r in roots {
        let (e, t) = crate::events::read_all(&r, None).map_err(|e| {
            format!("cannot read the events under `{}`: {e}", r.join("events").display())
        })?;
        all.extend(e);
        torn += t;
    }
    all.sort_by(|a, b| a["time"].as_str().cmp(&b["time"].as_str()));
    Ok((all, torn))
}

/// `data` with the value of every key named like a secret replaced, at any depth: events
/// written by other means than `homelab events emit` are not checked, and the page shows no
/// secret whatever a file holds.
pub fn hide_secrets(data: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match data {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let v = if crate::events::is_secret_key(k) {
                        Value::String("(hidden)".to_owned())
                    } else {
                        hide_secrets(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(hide_secrets).collect()),
        v => v.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A summary is kept per version of its file: asked again, the file unchanged, it is the
    /// same summary; the file rewritten in place with as many bytes (same inode, same size,
    /// within the same second), it is read again, never served stale.
    #[test]
    fn a_summary_is_read_again_when_its_file_is_rewritten_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0123456789abcdef.plan");
        let text = |v: u32| format!("homelab-plan {v}\ncreated 2026-12-05T00:00:00Z\n");
        std::fs::write(&path, text(97)).unwrap();
        let summaries = Summaries::default();
        let first = summaries.get(&path).unwrap_err();
        assert!(first.contains("format version 97"), "{first}");
        assert_eq!(summaries.get(&path).unwrap_err(), first);
        use std::io::{Seek, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.seek(std::io::SeekFrom::Start(0)).unwrap();
        f.write_all(text(98).as_bytes()).unwrap();
        drop(f);
        let again = summaries.get(&path).unwrap_err();
        assert!(again.contains("format version 98"), "{again}");
    }

    #[test]
    fn only_plan_ids_name_plan_files() {
        let s = Sources {
            repo: "r".into(),
            plans: "r/plans".into(),
            root: "rt".into(),
            node_roots: None,
        };
        assert_eq!(
            s.plan_path("0123456789abcdef"),
            Some(PathBuf::from("r/plans/0123456789abcdef.plan"))
        );
        for bad in [
            "",
            "0123456789ABCDEF",
            "../../etc/passwd",
            "0123456789abcde",
            "0123456789abcdef0",
            "0123456789abcde/",
        ] {
            assert_eq!(s.plan_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn filters_match_fields_and_severity_is_a_minimum() {
        let e = json!({"node": "alpha", "service": "web", "type": "service_unhealthy", "severity": "error", "correlation_id": "c1"});
        let f = |node: &str, kind: &str, severity: &str| EventFilter {
            node: node.into(),
            kind: kind.into(),
            severity: severity.into(),
            ..EventFilter::default()
        };
        assert!(f("", "", "").passes(&e));
        assert!(f("alpha", "service_unhealthy", "warning").passes(&e));
        assert!(f("", "", "error").passes(&e));
        assert!(!f("", "", "critical").passes(&e));
        assert!(!f("beta", "", "").passes(&e));
        assert!(!f("", "node_online", "").passes(&e));
        assert!(f("", "deployment_exploded", "").problem().unwrap().contains("unknown event type"));
        assert!(f("", "", "loud").problem().unwrap().contains("unknown severity"));
        assert_eq!(f("", "node_online", "info").problem(), None);
    }

    #[test]
    fn secret_named_keys_are_hidden_at_any_depth() {
        let d = json!({"error": "OOM", "api_token": "s3cret", "nested": [{"Password": "s3cret", "secret_name": "X"}]});
        let shown = hide_secrets(&d).to_string();
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("OOM") && shown.contains("secret_name"), "{shown}");
    }
}
