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

/// Wakes a loop that waits for files in one folder: written, created, renamed into it or
/// removed (inotify), or at the loop's own timeout. A loop looks at its files, then waits: a
/// change made between the look and the wait is queued, so the wait returns at once.
///
/// Serve's stream of a run's lines and the engine's wait for a confirmation each used to look
/// every 10 ms: a hundred wake-ups a second per node for the whole of an apply, on cores
/// its children need. Where inotify cannot watch the folder, the wait is a 10 ms sleep.
pub(crate) struct Changes {
    fd: Option<std::os::fd::OwnedFd>,
}

impl Changes {
    /// Changes in `dir` from now on.
    pub fn in_dir(dir: &Path) -> Changes {
        use std::os::fd::FromRawFd;
        use std::os::unix::ffi::OsStrExt;
        let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
            return Changes { fd: None };
        };
        // SAFETY: inotify_init1 takes flags and returns a new descriptor or -1.
        let raw = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        if raw < 0 {
            return Changes { fd: None };
        }
        // SAFETY: a descriptor just opened, owned by nothing else.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        let mask = libc::IN_MODIFY
            | libc::IN_CLOSE_WRITE
            | libc::IN_CREATE
            | libc::IN_MOVED_TO
            | libc::IN_DELETE
            | libc::IN_ATTRIB;
        // SAFETY: a watch on a NUL-terminated path, on the descriptor above.
        let watch = unsafe { libc::inotify_add_watch(raw, path.as_ptr(), mask) };
        Changes { fd: (watch >= 0).then_some(fd) }
    }

    /// Returns once something changed in the folder since the last wait, or after `timeout`.
    pub fn wait(&self, timeout: std::time::Duration) {
        use std::os::fd::{AsFd, AsRawFd};
        let Some(fd) = &self.fd else {
            std::thread::sleep(timeout.min(std::time::Duration::from_millis(10)));
            return;
        };
        crate::files::wait_readable(fd.as_fd(), timeout);
        // What the kernel queued is read and dropped: the caller looks at the files.
        let mut buf = [0u8; 4096];
        // SAFETY: read(2) into a buffer of this length; the descriptor is non-blocking.
        while unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// A change made before the wait (between a loop's look and its wait) is not lost, a
    /// change made during it ends it, and a wait with no change lasts its timeout; changes
    /// elsewhere do not count.
    #[test]
    fn a_wait_ends_at_a_change_in_its_folder_and_only_there() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (watched, other) = (dir.path().join("engine"), dir.path().join("other"));
        private_dir(&watched).expect("mkdir");
        private_dir(&other).expect("mkdir");
        let changes = Changes::in_dir(&watched);
        assert!(changes.fd.is_some(), "inotify watches the folder");
        let long = Duration::from_secs(60);
        std::fs::write(watched.join("run-1.jsonl"), b"{}\n").expect("write");
        let began = Instant::now();
        changes.wait(long);
        assert!(began.elapsed() < long / 2, "a change already made ends the wait at once");

        let quiet = Duration::from_millis(200);
        let began = Instant::now();
        std::fs::write(other.join("x"), b"x").expect("write");
        changes.wait(quiet);
        assert!(began.elapsed() >= quiet, "a change elsewhere does not end the wait");

        let appended = watched.join("run-1.jsonl");
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            let mut f = std::fs::OpenOptions::new().append(true).open(appended).expect("open");
            std::io::Write::write_all(&mut f, b"{}\n").expect("append");
        });
        let began = Instant::now();
        changes.wait(long);
        assert!(began.elapsed() < long / 2, "a line appended during the wait ends it");
        writer.join().expect("writer");
        crate::files::write_atomic(&watched.join("confirm"), b"").expect("write");
        let began = Instant::now();
        changes.wait(long);
        assert!(began.elapsed() < long / 2, "a file renamed into the folder ends the wait");
    }
}
