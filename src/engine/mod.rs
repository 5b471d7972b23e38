//! The node's side of homelab: `homelab node serve`, the one thing a controller talks to on a
//! node (one SSH session per node per command, the `wire` protocol on stdin and stdout), and
//! the engine it starts, which runs a plan's part for the node as one process detached from
//! the session (docs/architecture.md, "The node engine").
//!
//! - [`serve`]: a session: hello, then one request (refresh, apply, attach, confirm).
//! - [`trust`]: the roots pinned on the node, and the check of a bundle against them before
//!   anything is written.
//! - [`run`]: the detached engine: the node's run (`apply::engine::here`) over the node's own
//!   commands, its progress in a file that every session following it streams.
//!
//! The engine's folder for a plan is `state/deploy/<plan>/engine/` (`Layout::engine`):
//!
//! - `bundle.json`: the bundle as checked; `lock`: held (`flock`) by the engine while it runs;
//!   `pid`: the latest engine's process id;
//! - `current`: the number of the latest run; `run-<n>.jsonl`: its progress lines;
//! - `confirm/<seq>`: confirmations handed in over fresh connections;
//! - `settled/<service>@<node>`: dependencies on other nodes, `ok` or `failed`;
//! - `engine.log`: what the engine printed (its own errors).

pub mod run;
pub mod serve;
pub mod trust;

use std::path::{Path, PathBuf};

/// The files of an engine's folder.
pub(crate) struct Folder {
    pub dir: PathBuf,
}

impl Folder {
    pub fn new(dir: impl Into<PathBuf>) -> Folder {
        Folder { dir: dir.into() }
    }

    pub fn bundle(&self) -> PathBuf {
        self.dir.join("bundle.json")
    }

    pub fn lock(&self) -> PathBuf {
        self.dir.join("lock")
    }

    pub fn current(&self) -> PathBuf {
        self.dir.join("current")
    }

    pub fn run(&self, n: u64) -> PathBuf {
        self.dir.join(format!("run-{n}.jsonl"))
    }

    pub fn confirm(&self, seq: u64) -> PathBuf {
        self.dir.join("confirm").join(seq.to_string())
    }

    pub fn settled(&self, instance: &crate::model::Instance) -> PathBuf {
        self.dir.join("settled").join(instance.to_string())
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("engine.log")
    }

    /// The latest run's number (0: none yet).
    pub fn latest(&self) -> u64 {
        std::fs::read_to_string(self.current())
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Whether an engine runs this plan now: it holds the lock file's `flock`.
    pub fn running(&self) -> bool {
        use std::os::fd::AsRawFd;
        let Ok(f) = std::fs::File::open(self.lock()) else { return false };
        // SAFETY: flock on a file descriptor we own; released when `f` is closed.
        let free = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
        !free
    }
}

/// The node's Docker Engine socket: the path of a `unix://` `$DOCKER_HOST`, else the default.
pub(crate) fn docker_socket() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(str::to_owned))
        .unwrap_or_else(|| "/var/run/docker.sock".to_owned())
}

/// This host's name, for the lock's holder.
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned())
}

/// Creates `dir` (and its parents) readable by its owner only.
pub(crate) fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}
