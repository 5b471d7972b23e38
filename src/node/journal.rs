//! The apply journal of one node for one plan: `<root>/state/deploy/<plan-id>/journal.json`,
//! written durably after every stage so `--resume` (from the controller or from the node
//! itself) continues exactly where an apply stopped. The shape of the record and the stage
//! order live here; `apply` decides the transitions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where a service instance is in the pipeline. Order matters: a later stage implies every
/// earlier one is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    Pending,
    Prepared,
    Validated,
    /// The live link was (or is being) switched and `compose up` run; on resume, run it again.
    Deploying,
    Deployed,
    Verified,
    Completed,
    /// A step failed before anything live changed (prepare, validate).
    Failed,
    /// Deploy or verify failed; the previous version was restored (and verified: the entry's
    /// error says whether it is healthy).
    RolledBack,
    /// Not run: a dependency failed or was skipped.
    Skipped,
    /// Deploy or verify failed, and so did the rollback to the previous version: the node runs
    /// neither as planned. Final: a resume never deploys this plan's version again.
    RollbackFailed,
}

impl Stage {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Stage::Completed
                | Stage::Failed
                | Stage::RolledBack
                | Stage::Skipped
                | Stage::RollbackFailed
        )
    }

    /// The stage as `--stage` and progress lines name it.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Pending => "pending",
            Stage::Prepared => "prepare",
            Stage::Validated => "validate",
            Stage::Deploying | Stage::Deployed => "deploy",
            Stage::Verified => "verify",
            Stage::Completed => "complete",
            Stage::Failed => "failed",
            Stage::RolledBack => "rolled back",
            Stage::Skipped => "skipped",
            Stage::RollbackFailed => "rollback failed",
        }
    }

    /// Whether the service's live link was (or may have been) switched to the new release but
    /// the apply did not finish: its containers may not match its files.
    pub fn switched_unconfirmed(self) -> bool {
        matches!(self, Stage::Deploying | Stage::Deployed | Stage::Verified)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub action: String,
    pub stage: Stage,
    /// The release the live link pointed at before this apply (`None`: not deployed before).
    pub previous: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    pub format: u32,
    pub plan: String,
    pub node: String,
    pub updated: String,
    /// Set when every service of the node reached a final stage.
    pub finished: bool,
    /// Counts the journal's saves, across runs of the plan (a resume continues from the
    /// node's). Saves travel with the node's next command and several may be under way at
    /// once; the node keeps the highest, so the file never goes back to an older state.
    #[serde(default)]
    pub seq: u64,
    pub services: BTreeMap<String, Entry>,
}

impl Journal {
    pub fn new(plan: &str, node: &str, now: std::time::SystemTime) -> Journal {
        Journal {
            format: 1,
            plan: plan.to_owned(),
            node: node.to_owned(),
            updated: crate::clock::rfc3339(now),
            finished: false,
            seq: 0,
            services: BTreeMap::new(),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = serde_json::to_vec_pretty(self).expect("journal serializes");
        b.push(b'\n');
        b
    }
}
