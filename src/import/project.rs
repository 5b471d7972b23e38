//! Reading a published Compose project folder: its compose file, what files and folders it
//! holds, and the names (and, for resolving a read-only path only, the values) of its `.env`.
//! Bounded (files, depth, sizes) and never following a symlink. The only IO of reading.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use super::compose::Existing;
use super::ImportError;

/// The names Compose looks for, in its order.
pub const COMPOSE_FILES: [&str; 4] =
    ["compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml"];

/// Files and folders a project may hold at most, and how deep.
const MAX_ENTRIES: usize = 2000;
const MAX_DEPTH: usize = 10;
/// The largest file import reads or copies.
pub const MAX_FILE: u64 = 16 * 1024 * 1024;

pub struct Project {
    pub dir: PathBuf,
    /// The compose file's name (`compose.yaml`).
    pub compose: String,
    pub text: String,
    /// Relative path → file (false) or folder (true); symlinks in `links`.
    pub entries: BTreeMap<String, bool>,
    pub links: BTreeSet<String>,
    /// The project's `.env`, name → value.
    pub env_values: BTreeMap<String, String>,
}

pub fn read(dir: &Path) -> Result<Project, ImportError> {
    let meta = fs::metadata(dir).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => {
            ImportError::NotAFolder { path: dir.into(), why: "does not exist" }
        }
        _ => ImportError::Read { path: dir.into(), source },
    })?;
    if !meta.is_dir() {
        return Err(ImportError::NotAFolder { path: dir.into(), why: "is not a folder" });
    }
    let found: Vec<&str> =
        COMPOSE_FILES.iter().copied().filter(|f| dir.join(f).is_file()).collect();
    let compose = match found.as_slice() {
        [] => return Err(ImportError::NoCompose { path: dir.into() }),
        [one] => (*one).to_owned(),
        [a, b, ..] => {
            return Err(ImportError::TwoCompose {
                path: dir.into(),
                a: (*a).into(),
                b: (*b).into(),
            })
        }
    };
    let text = text_of(&dir.join(&compose))?;
    let mut p = Project {
        dir: dir.to_path_buf(),
        compose,
        text,
        entries: BTreeMap::new(),
        links: BTreeSet::new(),
        env_values: BTreeMap::new(),
    };
    walk(dir, "", 0, &mut p)?;
    if let Some(false) = p.entries.get(".env") {
        for l in text_of(&dir.join(".env"))?.lines() {
            let l = l.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let l = l.strip_prefix("export ").unwrap_or(l);
            if let Some((k, v)) = l.split_once('=') {
                let v = v.trim();
                let v = crate::model::validate::compose::unquote(v);
                p.env_values.insert(k.trim().to_owned(), v.to_owned());
            }
        }
    }
    Ok(p)
}

/// A text file of the project, bounded and UTF-8.
pub fn text_of(path: &Path) -> Result<String, ImportError> {
    let bytes = bytes_of(path)?;
    String::from_utf8(bytes).map_err(|_| ImportError::NotText { path: path.into() })
}

pub fn bytes_of(path: &Path) -> Result<Vec<u8>, ImportError> {
    let read = |source| ImportError::Read { path: path.into(), source };
    let meta = fs::symlink_metadata(path).map_err(read)?;
    if meta.len() > MAX_FILE {
        return Err(ImportError::TooLarge { path: path.into(), limit: MAX_FILE });
    }
    fs::read(path).map_err(read)
}

fn walk(dir: &Path, rel: &str, depth: usize, p: &mut Project) -> Result<(), ImportError> {
    if depth > MAX_DEPTH {
        return Err(ImportError::TooBig {
            path: dir.into(),
            why: format!("deeper than {MAX_DEPTH} levels"),
        });
    }
    let mut names = Vec::new();
    for e in fs::read_dir(dir).map_err(|source| ImportError::Read { path: dir.into(), source })? {
        let e = e.map_err(|source| ImportError::Read { path: dir.into(), source })?;
        names.push(e.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    for name in names {
        let r = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
        let path = dir.join(&name);
        let meta = fs::symlink_metadata(&path)
            .map_err(|source| ImportError::Read { path: path.clone(), source })?;
        if p.entries.len() + p.links.len() >= MAX_ENTRIES {
            return Err(ImportError::TooBig {
                path: p.dir.clone(),
                why: format!("more than {MAX_ENTRIES} files and folders"),
            });
        }
        if meta.file_type().is_symlink() {
            p.links.insert(r);
        } else if meta.is_dir() {
            p.entries.insert(r.clone(), true);
            walk(&path, &r, depth + 1, p)?;
        } else if meta.is_file() {
            p.entries.insert(r, false);
        }
    }
    Ok(())
}

impl Project {
    pub fn exists(&self, rel: &str) -> Existing {
        if rel.is_empty() {
            return Existing::Folder { has_files: self.files_under("").next().is_some() };
        }
        match self.entries.get(rel) {
            None if self.links.contains(rel) => Existing::File,
            None => Existing::Missing,
            Some(false) => Existing::File,
            Some(true) => Existing::Folder { has_files: self.files_under(rel).next().is_some() },
        }
    }

    /// The files at or under `rel` that would ship (no path part hidden), sorted.
    pub fn files_under<'a>(&'a self, rel: &'a str) -> impl Iterator<Item = &'a String> + 'a {
        self.entries.iter().filter_map(move |(p, is_dir)| {
            let inside = rel.is_empty()
                || p == rel
                || p.strip_prefix(rel).is_some_and(|r| r.starts_with('/'));
            let hidden = p.split('/').any(|part| part.starts_with('.'));
            (inside && !is_dir && !hidden).then_some(p)
        })
    }

    /// The symlinks at or under `rel`.
    pub fn links_under<'a>(&'a self, rel: &'a str) -> impl Iterator<Item = &'a String> + 'a {
        self.links.iter().filter(move |p| {
            rel.is_empty() || *p == rel || p.strip_prefix(rel).is_some_and(|r| r.starts_with('/'))
        })
    }
}
