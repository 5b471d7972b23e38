//! Diagnostics: one problem with the homelab definition, located by file, line and field.
//!
//! Loading and validation collect diagnostics instead of stopping at the first, so one run
//! shows every problem. This module owns how a diagnostic reads; it decides nothing.

use std::fmt;
use std::path::{Path, PathBuf};

/// The most characters of a diagnostic's message: several quoted values and the words around
/// them, never a file.
const MAX_MESSAGE: usize = 1000;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Diagnostic {
    /// Path relative to the repository root, with `/` separators.
    pub file: String,
    /// 1-based line, when the problem sits on one.
    pub line: Option<u64>,
    /// The field (dotted path) or element the problem is about.
    pub field: String,
    /// Which rule was broken (stable, used in tests and docs).
    pub rule: &'static str,
    /// What is wrong: "expected ..., found ...".
    pub message: String,
    /// How to fix it.
    pub fix: String,
}

impl Diagnostic {
    pub fn new(
        rule: &'static str,
        file: impl AsRef<Path>,
        line: Option<u64>,
        field: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Diagnostic {
            file: slash_path(file.as_ref()),
            line,
            // Whatever a check quotes, no diagnostic grows past a screenful (crate::quote).
            field: crate::quote::cut(&field.into()),
            rule,
            message: crate::quote::cut_to(&message.into(), MAX_MESSAGE),
            fix: fix.into(),
        }
    }
}

pub fn slash_path(path: &Path) -> String {
    path.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/")
}

impl Diagnostic {
    /// How a note reads: as a problem does, under `note[rule]` instead of `error[rule]`.
    pub fn as_note(&self) -> String {
        let mut s = String::new();
        let _ = self.write_as(&mut s, "note");
        s
    }

    fn write_as(&self, f: &mut dyn fmt::Write, kind: &str) -> fmt::Result {
        write!(f, "{kind}[{}]: {}", self.rule, self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.field.is_empty() {
            write!(f, ": `{}`", self.field)?;
        }
        write!(f, ": {}", self.message)?;
        if !self.fix.is_empty() {
            write!(f, "\n  fix: {}", self.fix)?;
        }
        Ok(())
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_as(f, "error")
    }
}

/// A sorted, de-duplicated collection of diagnostics, and of notes: what a user should know
/// about a definition that is not a problem (homelab changes what a file says), said by
/// `validate` without failing it.
#[derive(Debug, Default, Clone)]
pub struct Diagnostics(Vec<Diagnostic>, Vec<Diagnostic>);

impl Diagnostics {
    /// Records a note (not a problem: it does not make the homelab invalid).
    pub fn note(
        &mut self,
        rule: &'static str,
        file: impl AsRef<Path>,
        line: Option<u64>,
        field: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.1.push(Diagnostic::new(rule, file, line, field, message, fix));
    }

    /// The notes, sorted and de-duplicated, taken out.
    pub fn take_notes(&mut self) -> Vec<Diagnostic> {
        let mut notes = std::mem::take(&mut self.1);
        notes.sort();
        notes.dedup();
        notes
    }

    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    /// Pushes a new diagnostic: the checks' shorthand for `push(Diagnostic::new(..))`.
    pub fn err(
        &mut self,
        rule: &'static str,
        file: impl AsRef<Path>,
        line: Option<u64>,
        field: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.0.push(Diagnostic::new(rule, file, line, field, message, fix));
    }

    pub fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0);
        self.1.extend(other.1);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn into_sorted(mut self) -> Vec<Diagnostic> {
        self.0.sort();
        self.0.dedup();
        self.0
    }
}

/// Paths are shown relative to the repository; `rel` does that for a path under `root`.
pub fn rel(root: &Path, path: &Path) -> PathBuf {
    path.strip_prefix(root).map(Path::to_path_buf).unwrap_or_else(|_| path.to_path_buf())
}
