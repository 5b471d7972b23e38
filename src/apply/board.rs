//! The cross-node board: each service instance's final state (at its new version or not),
//! published as nodes progress, so a service waits for its dependencies on other nodes. Shared
//! by the scheduler (which settles what a node left undone) and the node runs (which publish
//! and wait); it knows nothing of either.

use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex};

use crate::model::Instance;

/// Cross-node waiting: each service instance's final state, published as nodes progress.
#[derive(Default)]
pub(super) struct Board {
    state: Mutex<BTreeMap<Instance, bool>>,
    changed: Condvar,
}

impl Board {
    pub(super) fn publish(&self, inst: &Instance, ok: bool) {
        let mut s = self.state.lock().expect("board");
        s.insert(inst.clone(), ok);
        self.changed.notify_all();
    }

    /// Publishes `inst` unless it is already final.
    pub(super) fn settle(&self, inst: &Instance, ok: bool) {
        let mut s = self.state.lock().expect("board");
        if !s.contains_key(inst) {
            s.insert(inst.clone(), ok);
            self.changed.notify_all();
        }
    }

    /// Waits until `inst` is final; `true` when it is at its new version.
    pub(super) fn wait(&self, inst: &Instance) -> bool {
        let mut s = self.state.lock().expect("board");
        loop {
            if let Some(ok) = s.get(inst) {
                return *ok;
            }
            s = self.changed.wait(s).expect("board");
        }
    }
}
