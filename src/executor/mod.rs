//! The executor's queue: the guide's `<controller root>/actions/{pending,approved,running,
//! completed,failed}/<id>.json`, and what may happen to an action in each.
//!
//! The folder an action's file is in is its state; the record's `state` field only repeats it
//! for a reader. An action moves by one `rename(2)` from one folder to the next (atomic, and
//! it fails when another process took the file first), and is then rewritten in place with
//! its new state and result. So a crash leaves every action in exactly one folder.
//!
//! What decides whether a plan may run is `approve::policy` (the same pre-flight as `apply`);
//! this module turns its answer into a move ([`Step`]). Applying is the command's: it calls
//! the same function `homelab apply` runs. Nothing here reaches a node or imports `command`.

pub mod lock;

use std::path::{Path, PathBuf};

use crate::approve::policy::{Records, Refusal};
use crate::node::records::{ActionResult, PendingAction};
use crate::node::ActionState;
use crate::plan::file::LoadedPlan;

/// What to do with an action, given what the pre-flight said about its plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Leave it where it is (not approved enough yet, or an apply by hand in progress).
    Wait { why: String },
    /// Its approvals verify: on to `approved/` (and then `running/`).
    Approve,
    /// Nothing to apply, or applied already: straight to `completed/`.
    Complete { why: String },
    /// Refused: to `failed/`, never applied.
    Fail { why: String },
}

/// Where the action is when the pre-flight is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    /// Waiting for approvals: missing ones are waited for, until the plan expires.
    Pending,
    /// In `approved/`: whoever put it there, only signatures count; a missing approval fails.
    Approved,
}

/// Turns the pre-flight's answer about an action's plan into a move.
pub fn step(from: From, preflight: &Result<LoadedPlan, Refusal>) -> Step {
    match preflight {
        Ok(loaded) if !loaded.plan.has_changes() => {
            Step::Complete { why: "the plan changes nothing: nothing to apply".to_owned() }
        }
        Ok(_) => Step::Approve,
        Err(r) => {
            let why = r.to_string();
            match (from, r) {
                // Approvals may still come; expiry ends the wait (`Expired` is checked first).
                (
                    From::Pending,
                    Refusal::NoApprovalFile { .. }
                    | Refusal::NoApproval { .. }
                    | Refusal::NotEnoughApprovals { .. }
                    | Refusal::NeedsHuman { .. },
                ) => Step::Wait { why },
                // Applied by hand, completely: the record says so.
                (_, Refusal::AlreadyApplied { .. } | Refusal::AppliedCompletely { .. }) => {
                    Step::Complete { why: format!("applied already: {why}") }
                }
                // An apply by hand that has only started may still be running.
                (From::Pending, Refusal::StartedNotFinished { state, .. })
                    if state == "started" =>
                {
                    Step::Wait { why }
                }
                _ => Step::Fail { why },
            }
        }
    }
}

/// The queue under a controller root.
#[derive(Debug, Clone)]
pub struct Queue {
    records: Records,
}

/// Why the queue could not be read or moved.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("cannot read `{}`: {source}", .path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write `{}`: {source}", .path.display())]
    Write { path: PathBuf, source: std::io::Error },
}

/// One action as found in a folder. `record` is `None` for a file that is not an action
/// record (a rejection or an apply record written by an older homelab, a torn file).
#[derive(Debug, Clone)]
pub struct Found {
    pub id: String,
    pub path: PathBuf,
    pub record: Option<PendingAction>,
}

/// Whether `id` can name a plan: its id is 16 hex digits (`plan::file::plan_id`). Anything
/// else in an actions folder is not ours and is left alone.
pub fn is_plan_id(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

impl Queue {
    pub fn at(root: &Path) -> Queue {
        Queue { records: Records::at(root) }
    }

    pub fn records(&self) -> &Records {
        &self.records
    }

    pub fn path(&self, state: ActionState, id: &str) -> PathBuf {
        self.records.action(state, id)
    }

    /// The actions in a folder, oldest first (by the record's `created`, then id).
    pub fn list(&self, state: ActionState) -> Result<Vec<Found>, QueueError> {
        let dir = self.path(state, "x");
        let dir = dir.parent().expect("an action file is in a folder").to_path_buf();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(QueueError::Read { path: dir, source }),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| QueueError::Read { path: dir.clone(), source })?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".json").filter(|id| is_plan_id(id)) else {
                continue;
            };
            let path = entry.path();
            // Bounded: a record is a few hundred bytes.
            let record = match std::fs::metadata(&path) {
                Ok(m) if m.len() <= 1024 * 1024 => {
                    std::fs::read(&path).ok().and_then(|b| PendingAction::parse(&b))
                }
                _ => None,
            };
            out.push(Found { id: id.to_owned(), path, record });
        }
        out.sort_by(|a, b| {
            let created = |f: &Found| f.record.as_ref().map(|r| r.created.clone());
            created(a).cmp(&created(b)).then_with(|| a.id.cmp(&b.id))
        });
        Ok(out)
    }

    /// Moves `id` from `from` to `to` with one rename, then rewrites it with `state` and
    /// `result`. `Ok(false)`: the file was no longer in `from` (another process moved it).
    pub fn advance(
        &self,
        id: &str,
        from: ActionState,
        to: ActionState,
        result: Option<ActionResult>,
    ) -> Result<bool, QueueError> {
        self.advance_as(id, from, to, to.as_str(), result)
    }

    /// [`Queue::advance`], with the record's `state` saying more than its folder
    /// (`superseded`, in `failed/`).
    pub fn advance_as(
        &self,
        id: &str,
        from: ActionState,
        to: ActionState,
        label: &str,
        result: Option<ActionResult>,
    ) -> Result<bool, QueueError> {
        let src = self.path(from, id);
        let dst = self.path(to, id);
        if let Some(dir) = dst.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|source| QueueError::Write { path: dir.to_path_buf(), source })?;
        }
        match std::fs::rename(&src, &dst) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(source) => return Err(QueueError::Write { path: dst, source }),
        }
        // The move is done; the rewrite only says so inside the file. A record that is not
        // ours (or torn) keeps its bytes: the folder is what counts.
        let Some(mut record) = std::fs::read(&dst).ok().and_then(|b| PendingAction::parse(&b))
        else {
            return Ok(true);
        };
        record.state = label.to_owned();
        if result.is_some() {
            record.result = result;
        }
        // A result quotes the apply's outcome per node (failed steps' output): owner only.
        let write = if record.result.is_some() {
            crate::files::write_private
        } else {
            crate::files::write_atomic
        };
        write(&dst, &record.to_bytes())
            .map_err(|source| QueueError::Write { path: dst.clone(), source })?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(id: &str, created: &str) -> PendingAction {
        PendingAction {
            id: id.into(),
            kind: "apply-plan".into(),
            state: "pending".into(),
            plan: format!("plans/{id}.plan"),
            created: created.into(),
            expires: "2099-01-01T00:00:00Z".into(),
            planner: "p SHA256:x".into(),
            commit: "c".into(),
            dirty: false,
            summary: "1 create".into(),
            nodes: vec!["alpha".into()],
            approve: "homelab approve".into(),
            reason: None,
            drift: None,
            result: None,
        }
    }

    #[test]
    fn a_move_is_one_rename_and_a_second_mover_finds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::at(dir.path());
        let id = "0123456789abcdef";
        let pending = q.path(ActionState::Pending, id);
        std::fs::create_dir_all(pending.parent().unwrap()).unwrap();
        std::fs::write(&pending, action(id, "2026-01-01T00:00:00Z").to_bytes()).unwrap();
        assert!(q.advance(id, ActionState::Pending, ActionState::Approved, None).unwrap());
        assert!(!pending.exists());
        assert!(!q.advance(id, ActionState::Pending, ActionState::Approved, None).unwrap());
        let result = ActionResult {
            at: "t".into(),
            by: "executor".into(),
            reason: "refused".into(),
            nodes: Default::default(),
        };
        assert!(q.advance(id, ActionState::Approved, ActionState::Failed, Some(result)).unwrap());
        let back =
            PendingAction::parse(&std::fs::read(q.path(ActionState::Failed, id)).unwrap()).unwrap();
        assert_eq!(back.state, "failed");
        assert_eq!(back.result.unwrap().reason, "refused");
    }

    #[test]
    fn listing_is_oldest_first_and_skips_what_is_not_an_action() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::at(dir.path());
        let (a, b) = ("bbbbbbbbbbbbbbbb", "aaaaaaaaaaaaaaaa");
        for (id, created) in [(a, "2026-01-01T00:00:00Z"), (b, "2026-01-02T00:00:00Z")] {
            let p = q.path(ActionState::Pending, id);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, action(id, created).to_bytes()).unwrap();
        }
        let pending = q.path(ActionState::Pending, a);
        let dir = pending.parent().unwrap();
        std::fs::write(dir.join("notes.json"), "{}").unwrap();
        std::fs::write(dir.join("../pending/.tmp"), "").unwrap();
        let ids: Vec<String> =
            q.list(ActionState::Pending).unwrap().into_iter().map(|f| f.id).collect();
        assert_eq!(ids, [a, b]);
        assert!(q.list(ActionState::Running).unwrap().is_empty());
    }

    #[test]
    fn a_missing_approval_is_waited_for_in_pending_and_fails_in_approved() {
        let none = || {
            Err(Refusal::NoApprovalFile {
                approved: "p/x.approved".into(),
                plan: "p/x.plan".into(),
            })
        };
        assert!(matches!(step(From::Pending, &none()), Step::Wait { .. }));
        assert!(matches!(step(From::Approved, &none()), Step::Fail { .. }));
        let expired =
            Err(Refusal::Expired { id: "x".into(), expires: "t".into(), now: "u".into() });
        assert!(matches!(step(From::Pending, &expired), Step::Fail { .. }));
        let done = Err(Refusal::AlreadyApplied { id: "x".into(), record: "r".into() });
        assert!(matches!(step(From::Approved, &done), Step::Complete { .. }));
        let started = |state: &str| {
            Err(Refusal::StartedNotFinished {
                id: "x".into(),
                record: "r".into(),
                state: state.into(),
            })
        };
        assert!(matches!(step(From::Pending, &started("started")), Step::Wait { .. }));
        assert!(matches!(step(From::Pending, &started("partial")), Step::Fail { .. }));
    }

    #[test]
    fn the_records_of_homelab_plan_keep_their_bytes() {
        // No supervisor fields: nothing new in the file.
        let text = String::from_utf8(action("0123456789abcdef", "t").to_bytes()).unwrap();
        assert!(!text.contains("reason") && !text.contains("drift") && !text.contains("result"));
    }
}
