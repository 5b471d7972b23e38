//! The small JSON records kept under a runtime root, as serde types: who holds a node's lock,
//! which plans a node consumed, the controller's record of an apply, rejections and pending
//! actions. Records are read by parsing them, never by searching their text.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

fn pretty<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(v).expect("a record serializes");
    out.push(b'\n');
    out
}

/// `state/lock/holder.json`: who applies the node now, for which plan, since when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    /// `user@host pid N`, as shown to operators.
    pub holder: String,
    pub plan: String,
    pub since: String,
    /// The host and process of the holder: a holder on this host whose process is gone may be
    /// taken over by `--resume` of the same plan.
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub pid: u32,
}

impl LockHolder {
    pub fn to_bytes(&self) -> Vec<u8> {
        pretty(self)
    }

    /// Parses a holder as refresh or the lock step return it (newlines may have become spaces).
    pub fn parse(text: &str) -> Option<LockHolder> {
        serde_json::from_str(text.trim()).ok()
    }

    /// Whether this holder is an apply on `host` whose process no longer exists. A holder on
    /// another host is never presumed gone.
    pub fn is_gone_from(&self, host: &str) -> bool {
        !self.host.is_empty() && self.host == host && self.pid != 0 && !process_alive(self.pid)
    }

    /// One line for a message: `user@host pid N (plan P, since T)`.
    pub fn describe(&self) -> String {
        format!("{} (plan {}, since {})", self.holder, self.plan, self.since)
    }
}

/// Whether process `pid` runs on this machine: it exists and is not a zombie (a process that
/// ended and whose parent, or an init that does not reap, has not collected it; its locks and
/// files are released).
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // `pid (comm) S ...`: the state follows the last `)` (comm may hold one).
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// `state/consumed/<plan>.json` on a node: the plan was applied there; it never runs again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consumed {
    pub plan: String,
    pub node: String,
    pub applied_at: String,
    pub by: String,
}

impl Consumed {
    pub fn to_bytes(&self) -> Vec<u8> {
        pretty(self)
    }
}

/// Where the controller's record of an apply stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApplyState {
    /// Written before the first node is touched: from here on a plain second apply is a replay.
    Started,
    /// Some nodes or services are not at their new version; `--resume` continues.
    Partial,
    Completed,
}

/// One node's line in the controller's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSummary {
    pub outcome: String,
    pub detail: String,
}

/// `state/applied/<plan>.json` on the controller (and `actions/completed/<plan>.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub plan: String,
    pub state: ApplyState,
    pub updated: String,
    pub by: String,
    pub nodes: BTreeMap<String, NodeSummary>,
    /// The Git commit of the plan applied: what its nodes run from then on, so a later plan of
    /// an older commit is told as a downgrade. Absent from records written before it was kept.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub commit: String,
}

impl Applied {
    pub fn to_bytes(&self) -> Vec<u8> {
        pretty(self)
    }

    pub fn parse(bytes: &[u8]) -> Option<Applied> {
        serde_json::from_slice(bytes).ok()
    }
}

/// `state/rejected/<plan>.json` (and `<plan>.rejected` beside the plan): apply refuses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub id: String,
    /// Always `rejected`; kept so the file reads on its own.
    pub state: String,
    pub rejected_at: String,
    pub by: String,
    pub reason: String,
}

impl Rejection {
    pub fn new(id: &str, rejected_at: String, by: String, reason: String) -> Rejection {
        Rejection { id: id.to_owned(), state: "rejected".to_owned(), rejected_at, by, reason }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        pretty(self)
    }

    pub fn parse(bytes: &[u8]) -> Option<Rejection> {
        serde_json::from_slice(bytes).ok()
    }
}

/// `actions/pending/<plan>.json`: the guide's pending action for a plan. It points at the plan
/// and summarises it; it holds no artifact content and no secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingAction {
    pub id: String,
    pub kind: String,
    pub state: String,
    pub plan: String,
    pub created: String,
    pub expires: String,
    pub planner: String,
    pub commit: String,
    pub dirty: bool,
    pub summary: String,
    pub nodes: Vec<String>,
    pub approve: String,
    /// Why the plan was made, when a person did not make it: the supervisor's drift. Absent
    /// from `homelab plan`'s actions, so their bytes are what they always were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The supervisor's fingerprint of that drift (node fingerprints and the desired render of
    /// what differs): the same drift makes no second plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<String>,
    /// How the action left the flow (`completed`, `failed`, `superseded`), set when it moves
    /// to `completed/` or `failed/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<ActionResult>,
}

impl PendingAction {
    pub fn to_bytes(&self) -> Vec<u8> {
        pretty(self)
    }

    pub fn parse(bytes: &[u8]) -> Option<PendingAction> {
        serde_json::from_slice(bytes).ok()
    }
}

/// The end of an action: when, by whom (`executor user@host pid N`, `supervisor ...`), why,
/// and per node how its apply ended (empty when nothing was applied).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionResult {
    pub at: String,
    pub by: String,
    pub reason: String,
    #[serde(default)]
    pub nodes: BTreeMap<String, NodeSummary>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_holder_reads_back_even_flattened_to_one_line() {
        let h = LockHolder {
            holder: "root@saturn pid 42".into(),
            plan: "ab12".into(),
            since: "2026-11-30T01:00:00Z".into(),
            host: "saturn".into(),
            pid: 42,
        };
        let text = String::from_utf8(h.to_bytes()).unwrap().replace('\n', " ");
        assert_eq!(LockHolder::parse(&text), Some(h));
        assert_eq!(LockHolder::parse("{}"), None);
    }

    #[test]
    fn a_holder_on_another_host_is_never_gone() {
        let h = LockHolder {
            holder: "x".into(),
            plan: "p".into(),
            since: "t".into(),
            host: "elsewhere".into(),
            pid: u32::MAX,
        };
        assert!(!h.is_gone_from("here"));
        assert!(h.is_gone_from("elsewhere"));
    }
}
