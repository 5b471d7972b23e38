//! One executor per controller root: an exclusive `flock` on `<root>/state/executor/lock`,
//! held for the life of the process. The kernel releases it when the process ends, however it
//! ends (a SIGKILL included), so a lock never outlives its holder and never needs breaking.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::node::Layout;

/// The lock, held until dropped.
#[derive(Debug)]
pub struct ExecutorLock {
    _file: File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another executor works on `{}` ({holder}): one executor per controller root",
        .root.display()
    )]
    Held { root: PathBuf, holder: String },
    #[error("cannot lock `{}`: {source}", .path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

impl ExecutorLock {
    /// Takes the lock without waiting; `holder` (`user@host pid N`) is written into the file
    /// for the message another executor shows.
    pub fn acquire(root: &Path, holder: &str) -> Result<ExecutorLock, LockError> {
        let path = PathBuf::from(Layout::local(root).executor_lock());
        let io = |source| LockError::Io { path: path.clone(), source };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        // SAFETY: flock on a file descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::WouldBlock {
                let holder = std::fs::read_to_string(&path).unwrap_or_default().trim().to_owned();
                return Err(LockError::Held { root: root.to_path_buf(), holder });
            }
            return Err(io(err));
        }
        file.set_len(0).map_err(io)?;
        file.write_all(format!("{holder}\n").as_bytes()).map_err(io)?;
        Ok(ExecutorLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_executor_is_refused_until_the_first_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let first = ExecutorLock::acquire(dir.path(), "me pid 1").unwrap();
        let second = ExecutorLock::acquire(dir.path(), "me pid 2").unwrap_err();
        assert!(second.to_string().contains("me pid 1"), "{second}");
        drop(first);
        // Another test's child forked in this very moment holds a copy of the descriptor
        // until its exec closes it (close-on-exec): the lock is free once that copy is gone.
        let mut again = ExecutorLock::acquire(dir.path(), "me pid 2");
        for _ in 0..200 {
            if again.is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
            again = ExecutorLock::acquire(dir.path(), "me pid 2");
        }
        again.unwrap();
    }
}
