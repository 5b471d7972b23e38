//! Waiting, for the scheduler and the node runs alike. The board: each service instance's final
//! state (at its new version or not), published as services progress, so a service waits for
//! its dependencies, on its own node or another. Shared by the scheduler (which settles what a
//! node left undone) and the node runs (which publish and wait); it knows nothing of either.
//! [`Slots`]: how many nodes run at once, and how many services of one node.

use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex};

use crate::model::Instance;

/// Cross-node waiting: each service instance's final state, published as nodes progress.
/// Told of each instance as it is published.
pub type Observer<'o> = &'o (dyn Fn(&Instance, bool) + Sync);

#[derive(Default)]
pub(super) struct Board<'o> {
    state: Mutex<BTreeMap<Instance, bool>>,
    changed: Condvar,
    /// Told of every publication (a node's engine tells its controllers).
    observer: Option<Observer<'o>>,
}

impl<'o> Board<'o> {
    pub(super) fn observed(observer: Observer<'o>) -> Board<'o> {
        Board { observer: Some(observer), ..Board::default() }
    }

    pub(super) fn publish(&self, inst: &Instance, ok: bool) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.insert(inst.clone(), ok);
        self.changed.notify_all();
        drop(s);
        if let Some(tell) = self.observer {
            tell(inst, ok);
        }
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

/// A counting semaphore: nodes at once in a run, services at once on a node.
pub(super) struct Slots {
    free: Mutex<usize>,
    cv: Condvar,
}

impl Slots {
    /// At most `n` at once (at least one).
    pub(super) fn new(n: usize) -> Slots {
        Slots { free: Mutex::new(n.max(1)), cv: Condvar::new() }
    }

    pub(super) fn take(&self) {
        let mut f = self.free.lock().expect("slots");
        while *f == 0 {
            f = self.cv.wait(f).expect("slots");
        }
        *f -= 1;
    }

    pub(super) fn give(&self) {
        *self.free.lock().expect("slots") += 1;
        self.cv.notify_one();
    }
}
