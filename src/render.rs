//! Rendering: the exact bytes each service instance will have on its node.
//!
//! Pure and deterministic: the same model gives the same bytes on any machine, whatever the
//! order of files on disk (the model holds sorted maps). Secrets are never rendered: compose
//! files point at `<root>/config/<svc>/` on the node, which homelab never reads.

use std::collections::BTreeMap;

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

use crate::model::{Homelab, Instance};
use crate::node::manifest::Manifest;
use crate::node::Layout;

pub const COMPOSE: &str = "docker-compose.yml";
pub const OVERRIDE: &str = "docker-compose.override.yml";
pub const HEALTHCHECK: &str = "healthcheck.sh";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// The path in the release (`docker-compose.yml`, `conf/mosquitto.conf`).
    pub name: String,
    pub bytes: Vec<u8>,
    pub mode: u32,
}

impl Artifact {
    pub fn sha256(&self) -> String {
        crate::digest::sha256_hex(&self.bytes)
    }
}

/// One instance's artifacts, sorted by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub instance: Instance,
    pub artifacts: Vec<Artifact>,
}

impl Rendered {
    pub fn manifest(&self) -> Manifest {
        Manifest::of(
            self.instance.service.as_str(),
            self.instance.node.as_str(),
            self.artifacts.iter().map(|a| (a.name.as_str(), a.bytes.as_slice(), a.mode)),
        )
    }

    pub fn manifest_bytes(&self) -> Vec<u8> {
        self.manifest().to_bytes()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("{file}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Template { file: String, line: Option<u64>, message: String },
}

#[derive(Serialize)]
struct Ctx<'a> {
    root: &'a str,
    node: NodeCtx<'a>,
    service: ServiceCtx<'a>,
    config_dir: String,
    data_dir: String,
    logs_dir: String,
    /// The node's LAN address (`lan_address` in the topology), what `lan` ports publish on;
    /// undefined on a node without one, so a template that needs it says so.
    #[serde(skip_serializing_if = "Option::is_none")]
    lan_ip: Option<String>,
    vars: BTreeMap<&'a str, &'a serde_json::Value>,
}

#[derive(Serialize)]
struct NodeCtx<'a> {
    id: &'a str,
    display_name: &'a str,
    site: &'a str,
    address: &'a str,
    roles: &'a [String],
}

#[derive(Serialize)]
struct ServiceCtx<'a> {
    name: &'a str,
    exposure: &'a str,
}

/// Renders one instance: compose file, override (when the host has one), healthcheck.
pub fn render_instance(lab: &Homelab, inst: &Instance) -> Result<Rendered, RenderError> {
    let svc = &lab.services[&inst.service];
    let node = &lab.nodes[&inst.node];
    let host = &node.services[&inst.service];
    let root = node.runtime_root.as_str();
    let layout = Layout::new(root);
    let mut vars: BTreeMap<&str, &serde_json::Value> =
        svc.vars.iter().map(|(k, v)| (k.as_str(), v)).collect();
    vars.extend(host.vars.iter().map(|(k, v)| (k.as_str(), v)));
    let ctx = Ctx {
        root,
        node: NodeCtx {
            id: node.id.as_str(),
            display_name: &node.display_name,
            site: &node.site,
            address: &node.ssh.address,
            roles: &node.roles,
        },
        service: ServiceCtx { name: svc.name.as_str(), exposure: svc.exposure.as_str() },
        config_dir: layout.config(svc.name.as_str()),
        data_dir: layout.data(svc.name.as_str()),
        logs_dir: layout.logs(svc.name.as_str()),
        lan_ip: node.lan_address.map(|a| a.to_string()),
        vars,
    };

    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    for (name, text) in &lab.templates {
        env.add_template_owned(name.clone(), text.clone()).map_err(|e| template_error(&e, None))?;
    }
    // Which files are templates is explicit: `templates:` of the contract, else the compose
    // file and the host's override; a `*.j2` file always is. Any other file ships as written,
    // so `{{.Name}}` in a Docker option or `$${VAR}` never breaks it.
    let listed = |name: &str| match &svc.templates {
        Some(t) => t.iter().any(|n| n == name),
        None => name == COMPOSE || name == OVERRIDE,
    };
    // (name, source, template, mode, binary), later entries of the same name replacing earlier
    // ones: the host's files over the service's.
    type Entry<'a> = (String, &'a crate::model::Source, bool, u32, Option<&'a Vec<u8>>);
    // The compose file ships as `docker-compose.yml` whatever Compose name it has in the
    // repository (`compose.yaml`, ...): the node's scripts and the override name that file.
    let compose_name = svc.compose.path.rsplit('/').next().unwrap_or(COMPOSE);
    let compose_listed = listed(COMPOSE) || listed(compose_name);
    let mut sources: Vec<Entry> =
        vec![(COMPOSE.to_owned(), &svc.compose, compose_listed, 0o644, None)];
    sources.push((HEALTHCHECK.to_owned(), &svc.healthcheck_script, false, 0o755, None));
    fn file<'a>(f: &'a crate::model::ServiceFile, listed: bool) -> Entry<'a> {
        let template = f.binary.is_none() && (f.template || listed);
        (f.name.clone(), &f.source, template, f.mode, f.binary.as_ref())
    }
    for f in &svc.files {
        sources.push(file(f, listed(&f.name)));
    }
    if let Some(o) = node.overrides.get(&inst.service) {
        sources.push((OVERRIDE.to_owned(), o, listed(OVERRIDE), 0o644, None));
    }
    for f in node.runtime_files.get(&inst.service).into_iter().flatten() {
        sources.push(file(f, listed(&f.name)));
    }
    let mut artifacts: BTreeMap<String, Artifact> = BTreeMap::new();
    for (name, src, template, mode, binary) in sources {
        let bytes = if let Some(b) = binary {
            b.clone()
        } else if template {
            env.add_template_owned(src.path.clone(), src.text.clone())
                .map_err(|e| template_error(&e, Some(&src.path)))?;
            let tmpl =
                env.get_template(&src.path).map_err(|e| template_error(&e, Some(&src.path)))?;
            tmpl.render(&ctx).map_err(|e| template_error(&e, Some(&src.path)))?.into_bytes()
        } else {
            src.text.clone().into_bytes()
        };
        artifacts.insert(name.clone(), Artifact { name, bytes, mode });
    }
    Ok(Rendered { instance: inst.clone(), artifacts: artifacts.into_values().collect() })
}

fn template_error(e: &minijinja::Error, fallback: Option<&str>) -> RenderError {
    // An error inside an included template is wrapped: report the innermost one, which
    // names the fragment, its line and the cause.
    let mut e = e;
    while let Some(inner) =
        std::error::Error::source(e).and_then(|s| s.downcast_ref::<minijinja::Error>())
    {
        e = inner;
    }
    let file =
        e.name()
            .map(|n| {
                if fallback.is_some_and(|f| f == n) {
                    n.to_owned()
                } else {
                    format!("templates/{n}")
                }
            })
            .or_else(|| fallback.map(str::to_owned))
            .unwrap_or_else(|| "templates".to_owned());
    let message = match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    };
    RenderError::Template { file, line: e.line().map(|l| l as u64), message }
}

/// The compose files of `inst` whose name in the repository is not the one they ship under
/// (`services/web/compose.yaml` → `docker-compose.yml`, a host's `compose.override.yaml` →
/// `docker-compose.override.yml`), as (repository path, name on the node): `render` and `plan`
/// say so, since the file on the node is named otherwise than the one the operator edits.
pub fn renamed(lab: &Homelab, inst: &Instance) -> Vec<(String, &'static str)> {
    let mut out = Vec::new();
    let Some(svc) = lab.services.get(&inst.service) else { return out };
    let file_name = |p: &str| p.rsplit('/').next().unwrap_or(p).to_owned();
    if file_name(&svc.compose.path) != COMPOSE {
        out.push((svc.compose.path.clone(), COMPOSE));
    }
    if let Some(o) = lab.nodes.get(&inst.node).and_then(|n| n.overrides.get(&inst.service)) {
        if file_name(&o.path) != OVERRIDE {
            out.push((o.path.clone(), OVERRIDE));
        }
    }
    out
}

/// The line `render` and `plan` print for a file of [`renamed`].
pub fn renamed_note(path: &str, release: &str) -> String {
    format!("note: {path} ships to the node as {release} (the name the node's Compose commands use; the repository keeps its own)")
}

/// Renders the instances selected by `keep`, in name order.
pub fn render_all(
    lab: &Homelab,
    keep: impl Fn(&Instance) -> bool,
) -> Result<Vec<Rendered>, RenderError> {
    lab.instances.keys().filter(|i| keep(i)).map(|i| render_instance(lab, i)).collect()
}
