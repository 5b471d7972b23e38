//! Reading the repository safely: bounded sizes, UTF-8 only, no symlink out of the tree,
//! regular files only, YAML parsed under a budget (no alias bomb, no runaway nesting).
//!
//! Every failure is a `Diagnostic` naming the file, never a panic or a hang.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::diag::{slash_path, Diagnostic};

/// No file of a homelab definition is anywhere near this; a larger one is a mistake.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// The repository root, canonicalized, so "inside the repository" is a prefix test.
#[derive(Debug, Clone)]
pub struct Repo {
    root: PathBuf,
}

impl Repo {
    pub fn open(path: &Path) -> Result<Repo, Diagnostic> {
        let root = fs::canonicalize(path).map_err(|e| {
            Diagnostic::new(
                "layout",
                path,
                None,
                "",
                format!("cannot open the repository folder: {e}"),
                "pass the homelab repository with `--repo DIR` or run from its root",
            )
        })?;
        if !root.is_dir() {
            return Err(Diagnostic::new(
                "layout",
                path,
                None,
                "",
                "expected a folder holding inventory/, hosts/ and services/, found a file",
                "pass the homelab repository with `--repo DIR`",
            ));
        }
        Ok(Repo { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Resolves `rel` and refuses anything that leaves the repository through a symlink.
    fn resolve(&self, rel: &Path) -> Result<PathBuf, Diagnostic> {
        let full = self.root.join(rel);
        let real = fs::canonicalize(&full).map_err(|e| {
            Diagnostic::new(
                "file",
                rel,
                None,
                "",
                format!("cannot read: {e}"),
                "check that the file exists and is readable",
            )
        })?;
        if !real.starts_with(&self.root) {
            return Err(Diagnostic::new(
                "file",
                rel,
                None,
                "",
                format!("is a symlink to {}, outside the repository", real.display()),
                "replace the symlink with the file itself: everything homelab deploys is reviewed in Git",
            ));
        }
        Ok(real)
    }

    pub fn exists(&self, rel: &Path) -> bool {
        self.root.join(rel).symlink_metadata().is_ok()
    }

    pub fn is_dir(&self, rel: &Path) -> bool {
        self.resolve(rel).map(|p| p.is_dir()).unwrap_or(false)
    }

    /// The entries of a folder (hidden ones too), sorted by name, so results never depend on
    /// disk order.
    pub fn list_dir(&self, rel: &Path) -> Result<Vec<String>, Diagnostic> {
        let dir = self.resolve(rel)?;
        let read = fs::read_dir(&dir)
            .map_err(|e| Diagnostic::new("file", rel, None, "", format!("cannot list: {e}"), ""))?;
        let mut names = Vec::new();
        for entry in read {
            let entry = entry.map_err(|e| {
                Diagnostic::new("file", rel, None, "", format!("cannot list: {e}"), "")
            })?;
            match entry.file_name().into_string() {
                Ok(name) => names.push(name),
                Err(raw) => {
                    return Err(Diagnostic::new(
                        "file",
                        rel,
                        None,
                        raw.to_string_lossy(),
                        "expected a UTF-8 file name",
                        "rename the entry",
                    ))
                }
            }
        }
        names.sort();
        Ok(names)
    }

    pub fn read_bytes(&self, rel: &Path) -> Result<Vec<u8>, Diagnostic> {
        let real = self.resolve(rel)?;
        let meta = fs::metadata(&real)
            .map_err(|e| Diagnostic::new("file", rel, None, "", format!("cannot read: {e}"), ""))?;
        if !meta.is_file() {
            return Err(Diagnostic::new(
                "file",
                rel,
                None,
                "",
                "expected a regular file",
                "replace it with a regular file",
            ));
        }
        if meta.len() > MAX_FILE_BYTES {
            return Err(too_large(rel, meta.len()));
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        let file = fs::File::open(&real)
            .map_err(|e| Diagnostic::new("file", rel, None, "", format!("cannot read: {e}"), ""))?;
        // The size may change between stat and read; never read more than the limit.
        file.take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Diagnostic::new("file", rel, None, "", format!("cannot read: {e}"), ""))?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(too_large(rel, bytes.len() as u64));
        }
        Ok(bytes)
    }

    pub fn read_text(&self, rel: &Path) -> Result<String, Diagnostic> {
        let bytes = self.read_bytes(rel)?;
        String::from_utf8(bytes).map_err(|e| {
            let at = e.utf8_error().valid_up_to();
            let line = e.as_bytes()[..at].iter().filter(|b| **b == b'\n').count() as u64 + 1;
            Diagnostic::new(
                "file",
                rel,
                Some(line),
                "",
                format!("expected UTF-8 text, found an invalid byte at offset {at}"),
                "save the file as UTF-8",
            )
        })
    }

    /// Reads and parses a YAML file into `T`.
    pub fn read_yaml<T: DeserializeOwned>(&self, rel: &Path) -> Result<(T, String), Diagnostic> {
        let text = self.read_text(rel)?;
        let value = parse_yaml(rel, &text)?;
        Ok((value, text))
    }
}

fn too_large(rel: &Path, len: u64) -> Diagnostic {
    Diagnostic::new(
        "file",
        rel,
        None,
        "",
        format!("expected at most {MAX_FILE_BYTES} bytes, found {len}"),
        "a homelab definition file is small; check what was written here",
    )
}

/// Parses YAML text under serde-saphyr's budget (aliases, depth, node counts bounded).
pub fn parse_yaml<T: DeserializeOwned>(rel: &Path, text: &str) -> Result<T, Diagnostic> {
    let options = serde_saphyr::options! { with_snippet: false };
    serde_saphyr::from_str_with_options(text, options).map_err(|e| {
        let line = e.location().map(|l| l.line()).filter(|l| *l > 0);
        let mut message = e.to_string();
        // The crate appends its own location; ours is in the diagnostic already.
        if let Some(pos) = message.find(" at line ") {
            message.truncate(pos);
        }
        Diagnostic::new(
            "yaml",
            rel,
            line,
            "",
            message.trim().to_owned(),
            "fix the YAML at this line (see docs/schema.md for the expected fields)",
        )
    })
}

/// Renders `rel` as the repository-relative string diagnostics use.
pub fn shown(rel: &Path) -> String {
    slash_path(rel)
}
