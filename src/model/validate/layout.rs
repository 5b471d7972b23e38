//! The layout rule: the folders a homelab has, the five files of a service, a folder per node
//! under `hosts/`, and only overrides under `hosts/<node>/runtime/`.
//!
//! Reads what `load.rs` found on disk; no IO here.

use std::collections::BTreeSet;

use super::super::diag::Diagnostics;
use super::super::load::{RawRepo, COMPOSE_FILES, OVERRIDE_FILE, SERVICE_FILES};
use super::super::names::{NodeName, ServiceName};
use super::Input;

/// The top folders: without them nothing else was read, so this runs on its own.
pub(super) fn folders(raw: &RawRepo, d: &mut Diagnostics) {
    for dir in &raw.missing_folders {
        d.err(
            "layout",
            dir,
            None,
            "",
            format!("expected the folder `{dir}/` in the repository, found none"),
            "run homelab from the root of the homelab repository (or pass `--repo`); \
             a homelab needs `inventory/`, `hosts/` and `services/`",
        );
    }
}

pub(super) fn check(i: &Input, d: &mut Diagnostics) {
    for s in &i.raw.service_dirs {
        let base = format!("services/{}", s.name);
        if !s.is_dir {
            d.err(
                "layout",
                &base,
                None,
                "",
                "expected a service folder, found a file",
                "move it into a folder `services/<service>/`",
            );
        }
        if let [first, second, ..] = s.compose_files[..] {
            d.err(
                "layout",
                format!("{base}/{second}"),
                None,
                "",
                format!("expected one compose file, found `{first}` and `{second}`: Compose would take `{first}` and ignore `{second}`"),
                format!("keep one of them (any of {} works; it ships to the node as `docker-compose.yml`)", backticked(&COMPOSE_FILES)),
            );
        }
        for file in &s.missing_files {
            if *file == "docker-compose.yml" {
                d.err(
                    "layout",
                    format!("{base}/{file}"),
                    None,
                    "",
                    format!("expected the compose file ({}), found none", backticked(&COMPOSE_FILES)),
                    format!("every service has a compose file, service.yaml, README.md, env.example and healthcheck.sh; add `{file}`"),
                );
                continue;
            }
            d.err(
                "layout",
                format!("{base}/{file}"),
                None,
                "",
                format!("expected the service file `{file}`, found none"),
                format!("every service has {}; add `{file}`", SERVICE_FILES.join(", ")),
            );
        }
    }
    let nodes = &i.lab.nodes;
    for dir in &i.raw.host_dirs {
        if NodeName::parse(dir).map(|n| !nodes.contains_key(&n)).unwrap_or(true) {
            d.err("layout", format!("hosts/{dir}"), None, "", format!("expected a folder named after a node of inventory/topology.yaml, found `{dir}`"), "declare the node in inventory/topology.yaml or remove the folder");
        }
    }
    for id in nodes.keys() {
        if !i.raw.hosts.contains_key(id) {
            let base = format!("hosts/{id}");
            d.err(
                "layout",
                &base,
                None,
                "",
                format!("expected the folder `{base}/` for node `{id}`, found none"),
                format!("add {base}/capabilities.yaml and {base}/services.yaml"),
            );
        }
    }
    overrides(i, d);
}

/// `a`, `b` or `c`, each in backticks.
fn backticked(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => quoted.join(""),
    }
}

/// A shipped file's path in the release must be one a node can take as is.
fn file_name(d: &mut Diagnostics, source: &crate::model::Source, base: &str) {
    let rel = source.path.strip_prefix(base).unwrap_or(&source.path);
    let name = rel.strip_suffix(".j2").unwrap_or(rel);
    if !crate::node::manifest::is_artifact_name(name) || name == OVERRIDE_FILE && rel != name {
        d.err(
            "layout",
            &source.path,
            None,
            "",
            format!("expected a file name of letters, digits, `.`, `_` and `-` (parts not starting with `.`, not `manifest.json`), found `{name}`"),
            "rename the file: it is copied to the node under this name",
        );
    }
}

/// Every shipped file of a service folder has a name a node can take.
pub(super) fn service_files(i: &Input, d: &mut Diagnostics) {
    for (dir, svc) in i.raw.services() {
        let base = format!("services/{dir}/");
        for f in &svc.extra {
            file_name(d, &f.source, &base);
        }
    }
}

/// `hosts/<node>/runtime/<svc>/` holds the override and host-specific files of a service the
/// node lists.
fn overrides(i: &Input, d: &mut Diagnostics) {
    for (id, host) in &i.raw.hosts {
        let base = format!("hosts/{id}");
        // Every name the node's services.yaml lists, including services that failed to load.
        // A set, and the model's services looked up by name: scanning both per runtime
        // folder made a node with an override per service cost services².
        let listed_names: BTreeSet<&str> = host
            .services
            .iter()
            .flat_map(|hs| &hs.services)
            .map(|s| s.value.name.value.as_str())
            .collect();
        for dir in &host.runtime {
            let path = format!("{base}/runtime/{}", dir.name);
            let listed = ServiceName::parse(&dir.name)
                .is_ok_and(|s| i.lab.nodes[id].services.contains_key(&s));
            if !listed_names.contains(dir.name.as_str()) && host.services.is_some() {
                d.err("override", &path, None, "", format!("expected an override for a service listed in {base}/services.yaml, found `{}`", dir.name), "list the service on the node or remove the override");
            }
            // The folder of a service the node does not run is reported above as a whole;
            // what is inside it does not matter.
            if !listed {
                continue;
            }
            match &dir.files {
                Ok(files) => {
                    // Host-specific files ship with the service; hidden ones (`.env`) are
                    // secrets' place, which is the node, never Git.
                    for f in files.iter().filter(|f| f.starts_with('.')) {
                        d.err("override", format!("{path}/{f}"), None, "", format!("expected the host's files of the service here, found the hidden file `{f}`"), "host-local secrets live on the node under <root>/config/<svc>/, never in Git");
                    }
                }
                Err(e) => d.push(e.clone()),
            }
            for f in &dir.extra {
                match f {
                    Ok(f) => file_name(d, &f.source, &format!("{path}/")),
                    Err(e) => d.push(e.clone()),
                }
            }
            if let Some(Err(e)) = &dir.override_file {
                d.push(e.clone());
            }
        }
    }
}
