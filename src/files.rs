//! Local files written so a crash never leaves half of one: the controller's records, plan
//! files, approvals, rendered trees; and `Flock`, the exclusive lock that writers of a shared
//! file (events, the apply journal) take; and `wait_readable`, the one sleep on a descriptor
//! (a pidfd, an inotify queue) that the node's waits share. Owns nothing else; remote writes
//! go through `apply`.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

/// Writes a file atomically: a temporary file in the same folder, fsync, rename, fsync the
/// folder. A crash leaves either the old file or the new one, never half of one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_mode(path, bytes, None)
}

/// As [`write_atomic`], readable by its owner only (0600) from its first byte: for records
/// that quote what a step printed on a node (issue 19), which may say more than a world-
/// readable file should.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_mode(path, bytes, Some(0o600))
}

fn write_atomic_mode(path: &Path, bytes: &[u8], mode: Option<u32>) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut open = fs::OpenOptions::new();
        open.write(true).create(true).truncate(true);
        if let Some(m) = mode {
            open.mode(m);
        }
        let mut f = open.open(&tmp)?;
        if let Some(m) = mode {
            // A temporary file left by a crash keeps its old mode: set it again.
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(fs::Permissions::from_mode(m))?;
        }
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// An exclusive `flock(2)` on an open file or folder, released when dropped (or when the
/// process dies). It interoperates with util-linux's `flock(1)` in the scripts a remote node
/// runs under the same locks.
pub struct Flock<'a>(&'a fs::File);

impl<'a> Flock<'a> {
    pub fn exclusive(file: &'a fs::File) -> io::Result<Flock<'a>> {
        use std::os::fd::AsRawFd;
        loop {
            // SAFETY: a valid open descriptor, borrowed for the lock's life.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(Flock(file));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl Drop for Flock<'_> {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: as above; unlocking a lock we hold cannot fail in a way we could act on.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// Sleeps until `fd` is readable (a pidfd: its process ended; an inotify queue: a change) or
/// `timeout` has passed. Interrupted, it returns early (the caller looks again); a `poll` that
/// cannot wait sleeps up to 5 ms instead, so that the caller's loop never spins.
pub fn wait_readable(fd: std::os::fd::BorrowedFd<'_>, timeout: std::time::Duration) {
    use std::os::fd::AsRawFd;
    let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // Rounded up, so that a wait never ends just short of a deadline and spins.
    let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
    // SAFETY: poll(2) on one pollfd owned for the call.
    let ready = unsafe { libc::poll(&mut pfd, 1, ms) };
    if ready < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
        std::thread::sleep(timeout.min(std::time::Duration::from_millis(5)));
    }
}
