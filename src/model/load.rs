//! Reading the repository: the only module of `model` that touches the filesystem.
//!
//! It reads the tree into a `RawRepo` (raw serde values with their spans, and the text of
//! every other file) safely: bounded sizes, UTF-8 only, no symlink out of the tree, regular
//! files only, YAML parsed under a budget (no alias bomb, no runaway nesting). Every failure
//! is a `Diagnostic` naming the file, never a panic or a hang. It judges nothing beyond
//! "could the file be read and parsed": the rules live in `validate/`.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use serde::de::DeserializeOwned;

use super::diag::{slash_path, Diagnostic, Diagnostics};
use super::names::NodeName;
use super::{raw, Source};

/// The five files every service folder has (DESIGN.md §2).
pub const SERVICE_FILES: [&str; 5] =
    ["docker-compose.yml", "service.yaml", "README.md", "env.example", "healthcheck.sh"];
/// The names Compose looks for a project's file under, in its order of preference; a service
/// folder has exactly one of them. Whatever its name in the repository, it ships to the node
/// as `docker-compose.yml` (`render::COMPOSE`): the node's scripts and the override use that.
pub const COMPOSE_FILES: [&str; 4] =
    ["compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml"];
/// The host's override of a service, as it ships to the node (`render::OVERRIDE`).
pub const OVERRIDE_FILE: &str = "docker-compose.override.yml";
/// The names a `hosts/<node>/runtime/<svc>/` folder may give its override, in the order
/// Compose looks for them (`compose.override.yaml` beside a `compose.yaml`); a folder has at
/// most one of them. Whatever its name in the repository, it ships as `OVERRIDE_FILE`.
pub const OVERRIDE_FILES: [&str; 4] = [
    "compose.override.yaml",
    "compose.override.yml",
    "docker-compose.override.yaml",
    "docker-compose.override.yml",
];
/// The folders a homelab repository must have.
pub const TOP_FOLDERS: [&str; 3] = ["inventory", "hosts", "services"];

/// The repository as read from disk, before any rule is checked.
#[derive(Debug, Default)]
pub struct RawRepo {
    /// Folders of `TOP_FOLDERS` that are missing; when any is, nothing else is read.
    pub missing_folders: Vec<&'static str>,
    /// `inventory/topology.yaml`; when it cannot be read, neither `services/` nor `hosts/` is:
    /// every check there needs the nodes.
    pub topology: Option<raw::Topology>,
    pub policy: Option<raw::Policy>,
    pub allowed_signers: Option<Source>,
    /// Shared templates from `templates/`, by path relative to that folder.
    pub templates: BTreeMap<String, String>,
    /// Entries of `services/` (hidden ones left out), sorted.
    pub service_dirs: Vec<ServiceDir>,
    /// Entries of `hosts/` (hidden ones left out), sorted.
    pub host_dirs: Vec<String>,
    /// The folders of `hosts/` named after a (well-named) node of the topology.
    pub hosts: BTreeMap<NodeName, RawHost>,
}

/// One entry of `services/`.
#[derive(Debug)]
pub struct ServiceDir {
    pub name: String,
    /// False when the entry is a file: nothing under it is read.
    pub is_dir: bool,
    /// The `SERVICE_FILES` that do not exist (`docker-compose.yml` standing for any of
    /// `COMPOSE_FILES`).
    pub missing_files: Vec<&'static str>,
    /// The `COMPOSE_FILES` the folder holds, in Compose's order of preference: more than one is
    /// a problem (which one is meant?); the first is read.
    pub compose_files: Vec<&'static str>,
    /// The files, when all exist and could be read and parsed.
    pub files: Option<RawService>,
}

/// The files of a complete service folder.
#[derive(Debug)]
pub struct RawService {
    pub contract: raw::Contract,
    /// `service.yaml` as text, for the checks that read it line by line.
    pub contract_source: Source,
    pub compose: Source,
    pub healthcheck: Source,
    pub env_example: Source,
    /// Every other file under the folder (hidden ones aside): configuration that ships with the
    /// service.
    pub extra: Vec<ExtraFile>,
}

impl RawService {
    /// The service's folder name, as its files' paths spell it (`services/<dir>/…`).
    pub fn compose_dir(&self) -> &str {
        self.compose
            .path
            .strip_prefix("services/")
            .and_then(|p| p.split('/').next())
            .unwrap_or_default()
    }
}

/// The files of `hosts/<node>/`.
#[derive(Debug, Default)]
pub struct RawHost {
    /// `capabilities.yaml`, when it could be read and parsed.
    pub capabilities: Option<raw::Capabilities>,
    /// `services.yaml`, when it could be read and parsed.
    pub services: Option<raw::HostServices>,
    /// The folders of `runtime/` (empty when there is none).
    pub runtime: Vec<RuntimeDir>,
}

/// `hosts/<node>/runtime/<name>/`. Its problems are kept, not reported: only the override of a
/// service the node lists is looked at, so validation decides whether they matter.
#[derive(Debug)]
pub struct RuntimeDir {
    pub name: String,
    /// Every entry of the folder, hidden ones too (a `.env` here is a problem).
    pub files: Result<Vec<String>, Diagnostic>,
    /// The override file, when it exists.
    pub override_file: Option<Result<Source, Diagnostic>>,
    /// Every other file under the folder (hidden ones aside, they are reported through
    /// `files`): host-specific configuration of the service.
    pub extra: Vec<Result<ExtraFile, Diagnostic>>,
}

/// A file that ships with a service as it is in the repository.
#[derive(Debug, Clone)]
pub struct ExtraFile {
    /// Its path; `text` is empty for a binary file.
    pub source: Source,
    pub executable: bool,
    /// The bytes of a file that is not UTF-8 text (an icon, a certificate in DER form).
    pub binary: Option<Vec<u8>>,
}

impl RawRepo {
    /// The complete service folders, by folder name.
    pub fn services(&self) -> impl Iterator<Item = (&str, &RawService)> {
        self.service_dirs.iter().filter_map(|s| Some((s.name.as_str(), s.files.as_ref()?)))
    }

    /// `service_dirs` is sorted by name (folders are listed sorted): a lookup is a binary
    /// search, so checks that look services up by name stay linear in the homelab's size.
    fn dir(&self, name: &str) -> Option<&ServiceDir> {
        let at = self.service_dirs.binary_search_by(|s| s.name.as_str().cmp(name)).ok()?;
        self.service_dirs.get(at)
    }

    pub fn service(&self, name: &str) -> Option<&RawService> {
        self.dir(name)?.files.as_ref()
    }

    /// Whether `services/<name>/` is a folder, loaded or not: a broken one is reported where it
    /// breaks, not again wherever its name is used.
    pub fn has_service_dir(&self, name: &str) -> bool {
        self.dir(name).is_some_and(|s| s.is_dir)
    }

    /// Whether the node's `capabilities.yaml` was read: checks against a file that failed to
    /// load would only repeat that failure.
    pub fn capabilities_loaded(&self, node: &NodeName) -> bool {
        self.hosts.get(node).is_some_and(|h| h.capabilities.is_some())
    }

    /// Whether the node's `services.yaml` was read (same reason).
    pub fn services_loaded(&self, node: &NodeName) -> bool {
        self.hosts.get(node).is_some_and(|h| h.services.is_some())
    }
}

/// Reads the repository at `path`. Problems reading it land in `diags`; `None` when the
/// repository folder itself cannot be opened.
pub fn read(path: &Path, diags: &mut Diagnostics) -> Option<RawRepo> {
    let repo = match Repo::open(path) {
        Ok(repo) => repo,
        Err(d) => {
            diags.push(d);
            return None;
        }
    };
    let mut r = Reader { repo, diags };
    Some(r.read())
}

struct Reader<'a> {
    repo: Repo,
    diags: &'a mut Diagnostics,
}

impl Reader<'_> {
    fn keep<T>(&mut self, result: Result<T, Diagnostic>) -> Option<T> {
        result.map_err(|d| self.diags.push(d)).ok()
    }

    fn yaml<T: DeserializeOwned>(&mut self, rel: &str) -> Option<(T, String)> {
        let result = self.repo.read_yaml::<T>(Path::new(rel));
        self.keep(result)
    }

    fn source(&mut self, rel: String) -> Option<Source> {
        let result = self.repo.read_text(Path::new(&rel)).map(|text| Source { path: rel, text });
        self.keep(result)
    }

    /// Every file under a folder, as paths relative to it (`conf/a.conf`), hidden entries left
    /// out, sorted; bounded in depth and count so a huge tree is a problem, not a hang.
    fn walk(&mut self, rel: &str) -> Vec<String> {
        const MAX_DEPTH: usize = 8;
        const MAX_FILES: usize = 500;
        let mut out = Vec::new();
        let mut todo = vec![(String::new(), 0)];
        while let Some((sub, depth)) = todo.pop() {
            let dir = if sub.is_empty() { rel.to_owned() } else { format!("{rel}/{sub}") };
            for name in self.list(&dir) {
                let child = if sub.is_empty() { name } else { format!("{sub}/{name}") };
                if self.repo.is_dir(Path::new(&format!("{rel}/{child}"))) {
                    if depth + 1 >= MAX_DEPTH {
                        self.diags.err(
                            "layout",
                            format!("{rel}/{child}"),
                            None,
                            "",
                            format!("expected at most {MAX_DEPTH} levels of folders in a service"),
                            "flatten the folder",
                        );
                        continue;
                    }
                    todo.push((child, depth + 1));
                } else {
                    out.push(child);
                }
            }
            if out.len() > MAX_FILES {
                self.diags.err(
                    "layout",
                    rel,
                    None,
                    "",
                    format!("expected at most {MAX_FILES} files in a service, found more"),
                    "ship generated or bulky data another way (a volume under `{ data_dir }` stays on the node)",
                );
                out.truncate(MAX_FILES);
                break;
            }
        }
        out.sort();
        out
    }

    /// Entries of a folder, hidden ones (`.gitkeep`, editor files) left out.
    fn list(&mut self, rel: &str) -> Vec<String> {
        let result = self.repo.list_dir(Path::new(rel));
        let mut names = self.keep(result).unwrap_or_default();
        names.retain(|n| !n.starts_with('.'));
        names
    }

    fn read(&mut self) -> RawRepo {
        let mut out = RawRepo::default();
        for dir in TOP_FOLDERS {
            if !self.repo.is_dir(Path::new(dir)) {
                out.missing_folders.push(dir);
            }
        }
        if !out.missing_folders.is_empty() {
            return out;
        }
        out.topology = self.yaml::<raw::Topology>("inventory/topology.yaml").map(|(t, _)| t);
        out.policy = self.yaml::<raw::Policy>("inventory/policy.yaml").map(|(p, _)| p);
        out.allowed_signers = self.source("inventory/allowed_signers".into());
        out.templates = self.templates();
        let Some(topology) = &out.topology else { return out };
        out.service_dirs = self.service_dirs();
        out.host_dirs = self.list("hosts");
        let ids: Vec<NodeName> =
            topology.nodes.keys().filter_map(|id| NodeName::parse(id).ok()).collect();
        for id in ids {
            // `host_dirs` is sorted (folders are listed sorted): a binary search per node.
            if out.host_dirs.binary_search_by(|h| h.as_str().cmp(id.as_str())).is_ok() {
                let host = self.host(&id);
                out.hosts.insert(id, host);
            }
        }
        out
    }

    fn templates(&mut self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if !self.repo.exists(Path::new("templates")) {
            return out;
        }
        let mut stack = vec![PathBuf::from("templates")];
        while let Some(dir) = stack.pop() {
            for name in self.list(&slash_path(&dir)) {
                let rel = dir.join(&name);
                if self.repo.is_dir(&rel) {
                    stack.push(rel);
                } else if name != "README.md" {
                    if let Some(src) = self.source(slash_path(&rel)) {
                        let key = slash_path(rel.strip_prefix("templates").unwrap_or(&rel));
                        out.insert(key, src.text);
                    }
                }
            }
        }
        out
    }

    fn service_dirs(&mut self) -> Vec<ServiceDir> {
        let mut out = Vec::new();
        for name in self.list("services") {
            let base = format!("services/{name}");
            if !self.repo.is_dir(Path::new(&base)) {
                out.push(ServiceDir {
                    name,
                    is_dir: false,
                    missing_files: vec![],
                    compose_files: vec![],
                    files: None,
                });
                continue;
            }
            let compose_files: Vec<&'static str> = COMPOSE_FILES
                .into_iter()
                .filter(|f| self.repo.exists(Path::new(&format!("{base}/{f}"))))
                .collect();
            // `docker-compose.yml` of the five stands for any name Compose accepts.
            let missing_files: Vec<&'static str> = SERVICE_FILES
                .into_iter()
                .filter(|f| match *f {
                    "docker-compose.yml" => compose_files.is_empty(),
                    f => !self.repo.exists(Path::new(&format!("{base}/{f}"))),
                })
                .collect();
            let files = match (missing_files.is_empty(), compose_files.first()) {
                (true, Some(compose)) => self.service_files(&base, compose),
                _ => None,
            };
            out.push(ServiceDir { name, is_dir: true, missing_files, compose_files, files });
        }
        out
    }

    fn service_files(&mut self, base: &str, compose: &str) -> Option<RawService> {
        let contract_path = format!("{base}/service.yaml");
        let contract = self.yaml::<raw::Contract>(&contract_path);
        let compose = self.source(format!("{base}/{compose}"));
        let healthcheck = self.source(format!("{base}/healthcheck.sh"));
        let env_example = self.source(format!("{base}/env.example"));
        // README.md only has to exist and be readable text: its problem is reported, but the
        // service is still checked.
        let _ = self.source(format!("{base}/README.md"));
        let mut extra = Vec::new();
        for rel in self.walk(base) {
            if SERVICE_FILES.contains(&rel.as_str()) || COMPOSE_FILES.contains(&rel.as_str()) {
                continue;
            }
            let path = format!("{base}/{rel}");
            let read = self.repo.read_extra(&path);
            if let Some(file) = self.keep(read) {
                extra.push(file);
            }
        }
        let ((contract, text), compose, healthcheck, env_example) =
            (contract?, compose?, healthcheck?, env_example?);
        Some(RawService {
            contract,
            contract_source: Source { path: contract_path, text },
            compose,
            healthcheck,
            env_example,
            extra,
        })
    }

    fn host(&mut self, id: &NodeName) -> RawHost {
        let base = format!("hosts/{id}");
        let capabilities =
            self.yaml::<raw::Capabilities>(&format!("{base}/capabilities.yaml")).map(|(c, _)| c);
        let services =
            self.yaml::<raw::HostServices>(&format!("{base}/services.yaml")).map(|(s, _)| s);
        let runtime_path = format!("{base}/runtime");
        let mut runtime = Vec::new();
        if self.repo.exists(Path::new(&runtime_path)) {
            for name in self.list(&runtime_path) {
                let path = format!("{runtime_path}/{name}");
                let files = self.repo.list_dir(Path::new(&path));
                let present: Vec<&str> = OVERRIDE_FILES
                    .into_iter()
                    .filter(|f| self.repo.exists(Path::new(&format!("{path}/{f}"))))
                    .collect();
                let override_file = match present[..] {
                    [] => None,
                    [one] => {
                        let file = format!("{path}/{one}");
                        Some(
                            self.repo
                                .read_text(Path::new(&file))
                                .map(|text| Source { path: file, text }),
                        )
                    }
                    [a, b, ..] => Some(Err(Diagnostic::new(
                        "layout",
                        format!("{path}/{b}"),
                        None,
                        "",
                        format!("expected one override file, found `{a}` and `{b}`: both would ship to the node as `{OVERRIDE_FILE}`"),
                        "keep one of them (any of `compose.override.yaml`, `compose.override.yml`, `docker-compose.override.yaml` or `docker-compose.override.yml` works)",
                    ))),
                };
                let mut extra = Vec::new();
                for rel in
                    self.walk(&path).into_iter().filter(|r| !OVERRIDE_FILES.contains(&r.as_str()))
                {
                    extra.push(self.repo.read_extra(&format!("{path}/{rel}")));
                }
                runtime.push(RuntimeDir { name, files, override_file, extra });
            }
        }
        RawHost { capabilities, services, runtime }
    }
}

/// No file of a homelab definition is anywhere near this; a larger one is a mistake.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// The repository root, canonicalized, so "inside the repository" is a prefix test.
#[derive(Debug, Clone)]
pub struct Repo {
    root: PathBuf,
    /// Folders already resolved, by path relative to the root. A path's real path is its
    /// folder's plus its name unless the name itself is a symlink, so with the folder known a
    /// file costs one `lstat` where `realpath` costs a `readlink` per component of its
    /// absolute path: that was most of the time spent loading a large homelab.
    folders: RefCell<HashMap<PathBuf, PathBuf>>,
}

/// A path of the repository resolved: where it really is and, when it is not itself a
/// symlink, its metadata (its `lstat`, which is then its `stat`).
struct Resolved {
    real: PathBuf,
    meta: Option<fs::Metadata>,
}

impl Resolved {
    fn metadata(self) -> io::Result<(PathBuf, fs::Metadata)> {
        let meta = match self.meta {
            Some(meta) => meta,
            None => fs::metadata(&self.real)?,
        };
        Ok((self.real, meta))
    }
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
        Ok(Repo { root, folders: RefCell::default() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Resolves `rel` and refuses anything that leaves the repository through a symlink.
    fn resolve(&self, rel: &Path) -> Result<Resolved, Diagnostic> {
        let resolved = self.real(rel).map_err(|e| {
            Diagnostic::new(
                "file",
                rel,
                None,
                "",
                format!("cannot read: {e}"),
                "check that the file exists and is readable",
            )
        })?;
        if !resolved.real.starts_with(&self.root) {
            return Err(Diagnostic::new(
                "file",
                rel,
                None,
                "",
                format!("is a symlink to {}, outside the repository", resolved.real.display()),
                "replace the symlink with the file itself: everything homelab deploys is reviewed in Git",
            ));
        }
        Ok(resolved)
    }

    /// What `fs::canonicalize(root/rel)` says, built from the real path of the folder of `rel`
    /// (resolved once, kept in `folders`) and an `lstat` of its last component: only a
    /// symlink is canonicalized, from its real folder, as `realpath` would.
    fn real(&self, rel: &Path) -> io::Result<Resolved> {
        let mut parts = rel.components();
        let Some(Component::Normal(name)) = parts.next_back() else {
            // The root itself, or a path ending in `..` or `.`: rare, so the slow way.
            return Ok(Resolved { real: fs::canonicalize(self.root.join(rel))?, meta: None });
        };
        let folder = self.folder(parts.as_path())?;
        let path = folder.join(name);
        let meta = fs::symlink_metadata(&path)?;
        if meta.file_type().is_symlink() {
            return Ok(Resolved { real: fs::canonicalize(&path)?, meta: None });
        }
        Ok(Resolved { real: path, meta: Some(meta) })
    }

    /// The real path of the folder `rel` (which may still turn out not to be one: then what is
    /// looked up under it fails as `realpath` would).
    fn folder(&self, rel: &Path) -> io::Result<PathBuf> {
        if rel.as_os_str().is_empty() {
            return Ok(self.root.clone());
        }
        if let Some(real) = self.folders.borrow().get(rel) {
            return Ok(real.clone());
        }
        let real = self.real(rel)?.real;
        self.folders.borrow_mut().insert(rel.to_owned(), real.clone());
        Ok(real)
    }

    pub fn exists(&self, rel: &Path) -> bool {
        self.root.join(rel).symlink_metadata().is_ok()
    }

    pub fn is_dir(&self, rel: &Path) -> bool {
        self.resolve(rel).ok().and_then(|r| r.metadata().ok()).is_some_and(|(_, m)| m.is_dir())
    }

    /// A file that ships with a service: text when it is UTF-8, else its bytes.
    pub fn read_extra(&self, path: &str) -> Result<ExtraFile, Diagnostic> {
        let bytes = self.read_bytes(Path::new(path))?;
        let executable = self.is_executable(Path::new(path));
        let source = |text: String| Source { path: path.to_owned(), text };
        Ok(match String::from_utf8(bytes) {
            Ok(text) => ExtraFile { source: source(text), executable, binary: None },
            Err(e) => ExtraFile {
                source: source(String::new()),
                executable,
                binary: Some(e.into_bytes()),
            },
        })
    }

    /// Whether a file has an execute bit (Git keeps it): it ships as 0755, else 0644.
    pub fn is_executable(&self, rel: &Path) -> bool {
        use std::os::unix::fs::PermissionsExt;
        self.resolve(rel)
            .ok()
            .and_then(|r| r.metadata().ok())
            .is_some_and(|(_, m)| m.permissions().mode() & 0o111 != 0)
    }

    /// The entries of a folder (hidden ones too), sorted by name, so results never depend on
    /// disk order.
    pub fn list_dir(&self, rel: &Path) -> Result<Vec<String>, Diagnostic> {
        let dir = self.resolve(rel)?.real;
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
        let (real, meta) = self
            .resolve(rel)?
            .metadata()
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

/// The most YAML nodes (scalars, sequences, mappings) a file may expand to, aliases replayed.
/// The budget is on the expanded size, not on how many anchors or aliases a file uses: real
/// compose files share `x-` blocks through hundreds of aliases, while an alias bomb ("billion
/// laughs") is a few lines that expand to billions of nodes. No homelab file comes near this.
pub const MAX_YAML_NODES: usize = 250_000;
/// The deepest nesting a file may have (sequences and mappings).
pub const MAX_YAML_DEPTH: usize = 64;

/// Parses YAML text under serde-saphyr's budget (expanded size and depth bounded).
pub fn parse_yaml<T: DeserializeOwned>(rel: &Path, text: &str) -> Result<T, Diagnostic> {
    let mut alias_limits = serde_saphyr::options::AliasLimits::default();
    alias_limits.max_total_replayed_events = 4 * MAX_YAML_NODES;
    let options = serde_saphyr::options! {
        with_snippet: false,
        // The alias/anchor ratio heuristic refuses ordinary files (150 aliases of 7 anchors);
        // the expanded size below is what stops a bomb.
        budget: serde_saphyr::budget! {
            enforce_alias_anchor_ratio: false,
            max_nodes: MAX_YAML_NODES,
            max_aliases: MAX_YAML_NODES,
            max_events: 4 * MAX_YAML_NODES,
            max_depth: MAX_YAML_DEPTH,
        },
        alias_limits: alias_limits,
    };
    serde_saphyr::from_str_with_options(text, options).map_err(|e| {
        if let Some(message) = budget_message(&e) {
            // Where the parser stopped says nothing useful about a bomb (and may lie past the
            // end of the file): the file is named, no line.
            return Diagnostic::new(
                "yaml",
                rel,
                None,
                "",
                message,
                "write the repeated parts out or share fewer, smaller anchors",
            );
        }
        let lines = text.lines().count().max(1) as u64;
        let line = e.location().map(|l| l.line()).filter(|l| *l > 0).map(|l| l.min(lines));
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

/// What a breached budget means, in words: the limit and why it is there.
fn budget_message(mut e: &serde_saphyr::Error) -> Option<String> {
    use serde_saphyr::budget::BudgetBreach;
    // The breach may be wrapped in where the alias was used, or in a snippet.
    while let serde_saphyr::Error::AliasError { error, .. }
    | serde_saphyr::Error::WithSnippet { error, .. } = e
    {
        e = error;
    }
    let expanded = format!(
        "expands to more than {MAX_YAML_NODES} YAML nodes once its aliases are replayed; the \
         limit is on the expanded size, not on the number of anchors or aliases, and stops \
         alias bombs (\"billion laughs\")"
    );
    match e {
        serde_saphyr::Error::Budget { breach: BudgetBreach::Depth { .. }, .. }
        | serde_saphyr::Error::AliasReplayStackDepthExceeded { .. } => Some(format!(
            "nests deeper than {MAX_YAML_DEPTH} levels; the limit keeps the parser's stack bounded"
        )),
        serde_saphyr::Error::Budget { .. }
        | serde_saphyr::Error::AliasReplayLimitExceeded { .. }
        | serde_saphyr::Error::AliasReplayCounterOverflow { .. }
        | serde_saphyr::Error::AliasExpansionLimitExceeded { .. } => Some(expanded),
        _ => None,
    }
}

/// Renders `rel` as the repository-relative string diagnostics use.
pub fn shown(rel: &Path) -> String {
    slash_path(rel)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    /// The loader resolves a path from its folder's real path and one `lstat` instead of
    /// calling `realpath`: it must say what `realpath` says, for files, folders, symlinks
    /// (relative, chained, to folders, out of the tree) and paths that do not resolve.
    #[test]
    fn resolving_through_known_folders_agrees_with_realpath() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(outside.path().join("far")).unwrap();
        std::fs::write(outside.path().join("far/f"), "x").unwrap();
        let tree = tempfile::tempdir().unwrap();
        let t = tree.path();
        std::fs::create_dir_all(t.join("a/b")).unwrap();
        std::fs::write(t.join("a/b/file"), "x").unwrap();
        symlink("b", t.join("a/to-b")).unwrap();
        symlink("../a/b/file", t.join("a/rel-file")).unwrap();
        symlink("rel-file", t.join("a/chain")).unwrap();
        symlink(outside.path().join("far"), t.join("a/out")).unwrap();
        symlink("missing", t.join("a/dangling")).unwrap();
        let repo = Repo::open(t).unwrap();
        let paths = [
            "a",
            "a/b",
            "a/b/file",
            "a/to-b",
            "a/to-b/file",
            "a/rel-file",
            "a/chain",
            "a/out",
            "a/out/f",
            "a/dangling",
            "a/missing",
            "a/b/file/under-a-file",
            "a/to-b/../b/file",
            "a/./b/file",
            "",
        ];
        // Twice: the second time every folder comes from what the first one learned.
        for _ in 0..2 {
            for rel in paths {
                let ours = repo.real(Path::new(rel)).map(|r| r.real).map_err(|e| e.kind());
                let theirs = fs::canonicalize(t.join(rel)).map_err(|e| e.kind());
                assert_eq!(ours, theirs, "{rel}");
            }
        }
        assert!(repo.resolve(Path::new("a/out/f")).is_err(), "a path out of the tree is refused");
        assert!(repo.is_dir(Path::new("a/to-b")));
        assert!(!repo.is_dir(Path::new("a/out")), "a folder out of the tree is none of ours");
        assert_eq!(repo.read_text(Path::new("a/chain")).unwrap(), "x");
    }
}
