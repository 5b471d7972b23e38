//! Test harness: a fixture homelab copied to a temporary folder, and a builder that runs the
//! real binary the way a user would.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Copies `from` into `to` (files and folders, modes kept).
pub fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    let mut entries: Vec<_> = fs::read_dir(from).unwrap().map(|e| e.unwrap()).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// A homelab tree in a temporary folder.
pub struct Tree {
    pub dir: tempfile::TempDir,
}

impl Tree {
    /// The small base fixture (3 nodes, 4 services).
    pub fn base() -> Tree {
        Tree::copy_of(&fixtures().join("base"))
    }

    pub fn copy_of(src: &Path) -> Tree {
        let dir = tempfile::tempdir().unwrap();
        copy_tree(src, dir.path());
        Tree { dir }
    }

    /// The base fixture with a broken overlay applied: the overlay's files replace the base's,
    /// and paths listed in its `REMOVE` file are deleted.
    pub fn broken(case: &str) -> Tree {
        let tree = Tree::base();
        let overlay = fixtures().join("broken").join(case);
        let remove = overlay.join("REMOVE");
        if remove.exists() {
            for line in
                fs::read_to_string(&remove).unwrap().lines().filter(|l| !l.trim().is_empty())
            {
                let p = tree.path().join(line.trim());
                if p.is_dir() {
                    fs::remove_dir_all(&p).unwrap();
                } else {
                    fs::remove_file(&p).unwrap();
                }
            }
        }
        copy_tree(&overlay, tree.path());
        let _ = fs::remove_file(tree.path().join("REMOVE"));
        tree
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, rel: &str, text: impl AsRef<[u8]>) {
        let p = self.path().join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    pub fn homelab(&self, args: &[&str]) -> Output {
        homelab_in(self.path(), args)
    }
}

pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `homelab --repo <repo> <args>`; paths of the repo in the output become `<repo>`.
pub fn homelab_in(repo: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_homelab"))
        .arg("--repo")
        .arg(repo)
        .args(args)
        .env_remove("HOMELAB_REPO")
        .env("NO_COLOR", "1")
        .output()
        .expect("run homelab");
    let clean =
        |b: &[u8]| String::from_utf8_lossy(b).replace(&repo.display().to_string(), "<repo>");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: clean(&out.stdout),
        stderr: clean(&out.stderr),
    }
}
