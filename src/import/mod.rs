//! `homelab import DIR --as SVC --node NODE`: a Compose project folder as published becomes
//! `services/SVC/` that validates, and `hosts/NODE/services.yaml` lists it.
//!
//! `project` reads the folder (bounded, no symlink followed), `compose` edits the compose file
//! line by line with a reason for each edit (pure; `mounts` is its pass over volumes, `shape`
//! what its passes share, `edit` the line operations), `contract` writes the contract,
//! env.example, healthcheck and README (pure), `write` puts it all in the repository at once
//! and takes it back out when the result does not validate. It never overwrites a service,
//! never writes outside `services/SVC/` and the node's `services.yaml`, and never copies a
//! value of the project's `.env` (names only). It does not reach a node.

pub mod compose;
pub mod contract;
pub mod edit;
mod mounts;
pub mod project;
mod shape;
pub mod write;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::model::{Diagnostic, Exposure, ServiceName};

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("`{name}` is not a service name: expected {problem}")]
    BadName { name: String, problem: &'static str },

    #[error("unknown node `{name}`: expected one of {known}")]
    UnknownNode { name: String, known: String },

    #[error("the homelab at `{}` cannot be read (no inventory/topology.yaml?); run `homelab validate` there", .repo.display())]
    NoHomelab { repo: PathBuf },

    #[error("`services/{service}` exists already: import never overwrites a service; remove it, or import under another name with `--as`")]
    Exists { service: String },

    #[error("`{service}` is listed in `hosts/{node}/services.yaml` already: import adds a new service only; remove the entry or import under another name with `--as`")]
    Listed { service: String, node: String },

    #[error("`{}` {why}: import takes the folder of a Compose project", .path.display())]
    NotAFolder { path: PathBuf, why: &'static str },

    #[error("no compose file in `{}`: expected one of compose.yaml, compose.yml, docker-compose.yaml, docker-compose.yml", .path.display())]
    NoCompose { path: PathBuf },

    #[error("two compose files in `{}`: `{a}` and `{b}`; Compose would take `{a}`: remove the other one", .path.display())]
    TwoCompose { path: PathBuf, a: String, b: String },

    #[error("cannot read `{}`: {source}", .path.display())]
    Read { path: PathBuf, source: std::io::Error },

    #[error("`{}` is not UTF-8 text", .path.display())]
    NotText { path: PathBuf },

    #[error("`{}` is larger than {limit} bytes", .path.display())]
    TooLarge { path: PathBuf, limit: u64 },

    #[error("`{}` is too big to import: {why}", .path.display())]
    TooBig { path: PathBuf, why: String },

    /// A problem in the project, with its file, line and field.
    #[error("{0}")]
    Project(Diagnostic),

    #[error("cannot write `{}`: {source}\nnothing was imported", .path.display())]
    Write { path: PathBuf, source: std::io::Error },

    /// The result did not validate; it was taken back out.
    #[error("{}\nthe imported service would not validate ({} problem{}); nothing was written", .diagnostics.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"), .diagnostics.len(), if .diagnostics.len() == 1 { "" } else { "s" })]
    Invalid { diagnostics: Vec<Diagnostic> },
}

/// What the command line asks for.
pub struct Request<'a> {
    pub dir: &'a Path,
    pub service: &'a str,
    pub node: &'a str,
    pub exposure: Option<Exposure>,
}

/// What was imported, for the command to print.
pub struct Imported {
    pub service: String,
    pub node: String,
    pub exposure: Exposure,
    /// Every edit of the compose file, then the others (copied files, the host's listing).
    pub edits: Vec<String>,
    pub copied: Vec<String>,
    pub secrets: Vec<String>,
    /// Variables that are not secret but have no default: the node's env file must set them.
    pub required: Vec<String>,
    pub node_files: Vec<String>,
    /// Docker networks the project expects on the node (`external: true`).
    pub networks: Vec<String>,
    pub root: String,
    /// What `validate` notes about the result (not problems).
    pub notes: Vec<Diagnostic>,
}

/// Imports the project `req.dir` into the homelab at `repo`.
pub fn run(repo: &Path, req: &Request) -> Result<Imported, ImportError> {
    let service = ServiceName::parse(req.service)
        .map_err(|problem| ImportError::BadName { name: req.service.to_owned(), problem })?;
    let svc = service.as_str();
    let loaded = crate::model::load_partial(repo);
    let lab = loaded.lab.ok_or_else(|| ImportError::NoHomelab { repo: repo.to_path_buf() })?;
    let node = lab.node(req.node).ok_or_else(|| ImportError::UnknownNode {
        name: req.node.to_owned(),
        known: lab.nodes.keys().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", "),
    })?;
    let dest = repo.join("services").join(svc);
    if std::fs::symlink_metadata(&dest).is_ok() || lab.services.contains_key(&service) {
        return Err(ImportError::Exists { service: svc.to_owned() });
    }
    let host_file = repo.join("hosts").join(node.id.as_str()).join("services.yaml");
    let host_text = match std::fs::read_to_string(&host_file) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => return Err(ImportError::Read { path: host_file, source }),
    };
    if host_text.as_deref().is_some_and(|t| write::lists(t, svc)) {
        return Err(ImportError::Listed { service: svc.to_owned(), node: node.id.to_string() });
    }
    let p = project::read(req.dir)?;
    let source = req
        .dir
        .canonicalize()
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "project".to_owned());
    let shown = format!("{source}/{}", p.compose);
    let homelab_services: BTreeSet<String> =
        lab.services.keys().map(|s| s.as_str().to_owned()).collect();
    let read = |rel: &str| project::text_of(&p.dir.join(rel)).ok();
    let exists = |rel: &str| p.exists(rel);
    let input = compose::Input {
        service: svc,
        file: &shown,
        text: &p.text,
        exposure: req.exposure,
        lan_ip: node.lan_address,
        exists: &exists,
        read: &read,
        env_values: &p.env_values,
        homelab_services: &homelab_services,
    };
    let out = compose::transform(&input).map_err(ImportError::Project)?;
    let copied = write::shipped(&p, &out.ship, &shown)?;
    let about = contract::About {
        service: svc,
        node: node.id.as_str(),
        root: &node.runtime_root,
        source: &source,
    };
    let exposure = out.exposure.unwrap_or(Exposure::Internal);
    let files = write::Files {
        compose: out.text.clone(),
        contract: contract::service_yaml(&about, &out),
        env_example: contract::env_example(&about, &out),
        healthcheck: contract::healthcheck_sh(&about, &out),
        readme: contract::readme(&about, &out, &copied),
    };
    let listing = write::add_to_host(host_text.as_deref(), node.id.as_str(), svc, exposure);
    let notes =
        write::commit(repo, &p, svc, &files, &copied, &host_file, host_text.as_deref(), &listing)?;
    let mut edits: Vec<String> = out.edits.iter().map(|e| e.shown()).collect();
    edits.push(format!(
        "hosts/{}/services.yaml: added `{svc}` with exposure `{}` (the node runs it)",
        node.id,
        exposure.as_str()
    ));
    Ok(Imported {
        service: svc.to_owned(),
        node: node.id.to_string(),
        exposure,
        edits,
        copied,
        secrets: out.variables.iter().filter(|v| v.secret).map(|v| v.name.clone()).collect(),
        required: out
            .variables
            .iter()
            .filter(|v| !v.secret && v.required)
            .map(|v| v.name.clone())
            .collect(),
        node_files: out.node_files.iter().cloned().collect(),
        networks: out.external_networks.iter().cloned().collect(),
        root: node.runtime_root.clone(),
        notes,
    })
}
