//! What the passes over a published compose file share: the project's compose file as import
//! reads it (`Project`, `Svc`), what it may ask of the folder (`Input`), what it finds
//! (`Output`), the edits so far (`Ctx`), and the small readers of values and lines they all
//! use. Pure: no IO here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use super::edit::{Edit, Op};
use crate::model::raw::{line, S};
use crate::model::{Diagnostic, Exposure};

/// What a relative path of the project folder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    Missing,
    File,
    /// A folder, and whether it holds a file that would ship (hidden ones never do).
    Folder {
        has_files: bool,
    },
}

pub struct Input<'a> {
    pub service: &'a str,
    /// The compose file's name in the project (`compose.yaml`), as edits and errors show it.
    pub file: &'a str,
    pub text: &'a str,
    /// `--exposure`; `None`: `lan` when a port is published, else `internal`.
    pub exposure: Option<Exposure>,
    /// The node's LAN address: `lan` ports are published on `{{ lan_ip }}` when it has one.
    pub lan_ip: Option<std::net::IpAddr>,
    /// What the project folder has at a normalized relative path (`""` is the folder).
    pub exists: &'a dyn Fn(&str) -> Existing,
    /// The text of a file of the project (env files), `None` when unreadable.
    pub read: &'a dyn Fn(&str) -> Option<String>,
    /// The project's `.env`, name → value: only read to resolve a read-only path, never
    /// written anywhere.
    pub env_values: &'a BTreeMap<String, String>,
    /// Services the homelab has already: what `depends_on` may name outside the project.
    pub homelab_services: &'a BTreeSet<String>,
}

/// One container of the project, as the healthcheck script and the contract see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub key: String,
    pub name: String,
    /// It has a compose healthcheck (not `NONE`, not disabled).
    pub healthcheck: bool,
    /// It runs once and stops (not expected to be running).
    pub one_shot: bool,
    /// The names the project gave it that others reach it by, kept as network aliases when
    /// homelab renamed it: its healthcheck checks that it answers to them.
    pub aliases: Vec<String>,
}

/// A compose healthcheck's timings, as written (`30s`, `1m30s`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timing {
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub retries: Option<u32>,
    pub start_period: Option<String>,
}

/// A variable the compose file (or an env file moved to the node) uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    pub name: String,
    pub secret: bool,
    pub required: bool,
}

#[derive(Debug, Default)]
pub struct Output {
    pub edits: Vec<Edit>,
    /// The compose file, edited.
    pub text: String,
    pub exposure: Option<Exposure>,
    /// Relative paths (files or folders) of the project that ship with the service.
    pub ship: BTreeSet<String>,
    pub host_paths: BTreeSet<String>,
    /// Folders under `{{ data_dir }}` the compose file now mounts (relative to it).
    pub data: BTreeSet<String>,
    pub uses_config: bool,
    /// Files the operator puts under `{{ config_dir }}` on the node.
    pub node_files: BTreeSet<String>,
    /// Networks the project expects to exist already (`external: true`), by their name.
    pub external_networks: BTreeSet<String>,
    pub variables: Vec<Variable>,
    pub dependencies: BTreeSet<String>,
    /// Backup sets of the databases: compose key → folders under `{{ data_dir }}`.
    pub backups: BTreeMap<String, BTreeSet<String>>,
    pub containers: Vec<Container>,
    pub timing: Timing,
}

#[derive(Debug, Deserialize)]
pub(super) struct Project {
    #[serde(default)]
    pub(super) name: Option<S<String>>,
    #[serde(default)]
    pub(super) services: BTreeMap<String, S<Svc>>,
    #[serde(default)]
    pub(super) secrets: BTreeMap<String, S<Value>>,
    #[serde(default)]
    pub(super) configs: BTreeMap<String, S<Value>>,
    #[serde(default)]
    pub(super) include: Vec<S<Value>>,
    #[serde(default)]
    pub(super) networks: BTreeMap<String, S<Value>>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Svc {
    #[serde(default)]
    pub image: Option<S<Value>>,
    #[serde(default)]
    pub(super) container_name: Option<S<String>>,
    #[serde(default)]
    pub(super) restart: Option<S<String>>,
    #[serde(default)]
    pub(super) network_mode: Option<S<String>>,
    #[serde(default)]
    pub(super) networks: Option<S<Value>>,
    #[serde(default)]
    pub volumes: Vec<S<Value>>,
    #[serde(default)]
    pub(super) ports: Vec<S<Value>>,
    #[serde(default)]
    pub(super) env_file: Option<S<Value>>,
    #[serde(default)]
    pub(super) build: Option<S<Value>>,
    #[serde(default)]
    pub(super) extends: Option<S<Value>>,
    #[serde(default)]
    pub(super) depends_on: Option<S<Value>>,
    #[serde(default)]
    pub(super) healthcheck: Option<S<Value>>,
    #[serde(default)]
    pub(super) environment: Option<S<Value>>,
}

/// The restart policy every long-running container gets (the guide's default).
pub const RESTART: &str = "unless-stopped";

/// A project problem: the file, line and field, what is wrong and how to fix it.
pub(super) fn problem(
    file: &str,
    line: Option<usize>,
    field: impl Into<String>,
    message: impl Into<String>,
    fix: impl Into<String>,
) -> Diagnostic {
    Diagnostic::new("import", Path::new(file), line.map(|l| l as u64), field, message, fix)
}

pub(super) fn at<T>(s: &S<T>) -> Option<usize> {
    line(s).map(|l| l as usize)
}

/// What the passes over one compose file share: its lines, its name, the edits so far and what
/// the contract will need.
pub(super) struct Ctx<'a> {
    pub lines: Vec<&'a str>,
    pub file: &'a str,
    pub edits: Vec<Edit>,
    pub out: Output,
}

impl Ctx<'_> {
    pub fn push(
        &mut self,
        line: Option<usize>,
        field: String,
        what: String,
        why: &str,
        ops: Vec<Op>,
    ) {
        let file = self.file.to_owned();
        self.edits.push(Edit { file, line, field, what, why: why.to_owned(), ops });
    }
}

/// The line of a list item `s`: `at` as the parser located it, or, for an item merged in
/// from an anchor (located where it is merged), the first `- s` of the file.
pub(super) fn locate(lines: &[&str], at: usize, s: &str) -> usize {
    if lines.get(at.wrapping_sub(1)).is_some_and(|l| l.contains(s)) {
        return at;
    }
    lines
        .iter()
        .position(|l| {
            let t = l.trim_start();
            t.starts_with("- ") && unquote(t[2..].trim()) == s
        })
        .map(|p| p + 1)
        .unwrap_or(at)
}

pub(super) fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
        .unwrap_or(v)
}

/// `new`, in double quotes when it starts with `{` and `old` is not quoted on `line` (a plain
/// YAML scalar may not start with `{`).
pub(super) fn quoted_if_needed(line: &str, old: &str, new: &str) -> String {
    let quoted =
        line.find(old).is_some_and(|at| at > 0 && matches!(line.as_bytes()[at - 1], b'"' | b'\''));
    if new.starts_with('{') && !quoted {
        format!("\"{new}\"")
    } else {
        new.to_owned()
    }
}

/// `path` with `.` and `..` resolved; `None` when it climbs out (validate's own reading).
pub fn normalize(path: &str) -> Option<String> {
    crate::model::validate::compose::normalize(path).map(|parts| parts.join("/"))
}

/// Whether an image is a database's (its data gets a backup set).
pub(super) fn is_database(image: Option<&S<Value>>) -> bool {
    let Some(image) = image.and_then(|i| i.value.as_str()) else { return false };
    let repo = image.rsplit('/').next().unwrap_or(image);
    let repo = repo.split([':', '@']).next().unwrap_or(repo).to_ascii_lowercase();
    [
        "postgres",
        "postgis",
        "pgvecto",
        "mysql",
        "mariadb",
        "mongo",
        "redis",
        "valkey",
        "influxdb",
        "couchdb",
        "clickhouse",
        "timescale",
    ]
    .iter()
    .any(|db| repo.contains(db))
}
