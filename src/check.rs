//! Full validation: the model's own checks (`model::load_partial`) plus the checks that need
//! more than the model, namely a dependency cycle (needs `graph`) and what only a render shows
//! (undefined template variables, bad templates, the compose rules applied to the rendered
//! compose files and overrides).
//!
//! It also looks across the instances of a node (`validate::conflicts`: ports, container names,
//! data paths two services both take).
//!
//! It sits above `model`, `graph` and `render` and below the commands, so `model` stays the
//! bottom layer: nothing under `model` may import this. It reads no file itself: what a service
//! ships is what its render holds (the artifacts of its release). Every
//! diagnostic is merged with the model's and sorted the same way. These checks run on the
//! model of the sound parts even when other parts have problems, so a broken env.example in
//! one service never hides a broken compose file in another.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::graph::DeployGraph;
use crate::model::load::RawRepo;
use crate::model::raw::line;
use crate::model::validate::compose::{self, ComposeFile};
use crate::model::validate::{conflicts, Footprint};
use crate::model::{Diagnostic, Diagnostics, Homelab, Instance, Loaded, NodeName};
use crate::render::{self, RenderError};

/// Loads and fully validates the homelab definition at `repo`: every problem, sorted, or the
/// model. What every command that acts on the homelab starts with.
pub fn homelab(repo: &Path) -> Result<Homelab, Vec<Diagnostic>> {
    checked(repo, false, &|_| None)
}

/// What `homelab validate` reports: [`homelab`]'s problems and an `inventory/allowed_signers`
/// that `approve` and `apply` could not read, parsed as they parse it. Only here: for the other
/// commands a broken file is a refusal of the plan at hand (exit 3), as a bad signature is.
pub fn validate(repo: &Path) -> Result<Homelab, Vec<Diagnostic>> {
    checked(repo, true, &|_| None)
}

/// [`homelab`], with the runtime root of each node for which `root_of` says one (`--transport
/// local --root DIR` gives `DIR/<id>`, a plan the roots it was rendered for) in place of the
/// topology's, before anything is rendered: `{{ root }}`, `{{ config_dir }}` and
/// `{{ data_dir }}` then name the folders the node really has, and the compose rules judge
/// paths against them.
pub fn homelab_rooted(
    repo: &Path,
    root_of: &dyn Fn(&NodeName) -> Option<String>,
) -> Result<Homelab, Vec<Diagnostic>> {
    checked(repo, false, root_of)
}

fn checked(
    repo: &Path,
    with_signers: bool,
    root_of: &dyn Fn(&NodeName) -> Option<String>,
) -> Result<Homelab, Vec<Diagnostic>> {
    let Loaded { raw, lab, mut diagnostics } = crate::model::load_partial(repo);
    if with_signers {
        if let Some(source) = raw.as_ref().and_then(|r| r.allowed_signers.as_ref()) {
            allowed_signers(&source.text, &mut diagnostics);
        }
    }
    let (Some(raw), Some(mut lab)) = (raw, lab) else { return Err(diagnostics.into_sorted()) };
    for node in lab.nodes.values_mut() {
        if let Some(root) = root_of(&node.id) {
            node.runtime_root = root;
            node.root_given = true;
        }
    }
    // Run on the sound parts even when other parts are broken: one run shows every problem.
    // The partial model leaves out what is broken, so nothing here repeats a model problem.
    cycles(&lab, &raw, &mut diagnostics);
    rendering(&lab, &mut diagnostics);
    lab.notes = diagnostics.take_notes();
    if diagnostics.is_empty() {
        Ok(lab)
    } else {
        Err(diagnostics.into_sorted())
    }
}

/// The allowed-signers file as `approve` and `apply` read it (`approve::policy::signers`).
fn allowed_signers(text: &str, d: &mut Diagnostics) {
    const FILE: &str = "inventory/allowed_signers";
    match crate::approve::AllowedSigners::parse(text, FILE) {
        Ok(_) => {}
        Err(crate::approve::SignersError::Parse { line, reason, .. }) => d.err(
            "allowed-signers",
            FILE,
            Some(line as u64),
            "signer",
            reason,
            "write the line as `man ssh-keygen` (ALLOWED SIGNERS) says; approve and apply refuse the whole file until it reads",
        ),
        Err(e) => d.err("allowed-signers", FILE, None, "", e.to_string(), ""),
    }
}

/// A dependency cycle, printed, located at the dependency entry that starts it.
fn cycles(lab: &Homelab, raw: &RawRepo, d: &mut Diagnostics) {
    let Err(cycle) = DeployGraph::build(lab) else { return };
    let first = &cycle.path[0];
    let file = format!("services/{}/service.yaml", first.service);
    let shown: Vec<String> = cycle.path.iter().map(ToString::to_string).collect();
    // The dependency entry of the first instance that leads to the next one.
    let entry = cycle.path.get(1).and_then(|next| {
        raw.service(first.service.as_str())?.contract.dependencies.iter().enumerate().find(
            |(_, d)| {
                d.value.service.value == next.service.as_str()
                    && d.value.node.as_ref().is_none_or(|n| {
                        NodeName::from_cli(&n.value).ok().as_ref() == Some(&next.node)
                    })
            },
        )
    });
    let (l, field) = match entry {
        Some((i, d)) => (line(&d.value.service), format!("dependencies[{i}]")),
        None => (None, "dependencies".to_owned()),
    };
    d.err(
        "cycle",
        file,
        l,
        field,
        format!("dependency cycle: {}", shown.join(" -> ")),
        "break the cycle: one of these services must not depend on the next",
    );
}

/// Renders every instance: undefined variables, bad templates and compose files that break
/// the naming rules are found here, with the template's file and line; then what the instances
/// of each node take is checked for conflicts.
fn rendering(lab: &Homelab, d: &mut Diagnostics) {
    let mut footprints: BTreeMap<&Instance, Footprint> = BTreeMap::new();
    for inst in lab.instances.keys() {
        match render::render_instance(lab, inst) {
            Ok(rendered) => {
                let fp = compose_rules(lab, inst, &rendered, d);
                footprints.insert(inst, fp);
            }
            Err(RenderError::Template { file, line, message }) => {
                template_problem(lab, inst, &file, line, &message, d)
            }
        }
    }
    // Grouped in one pass, in instance order: filtering every footprint per node was
    // nodes × instances.
    let mut by_node: BTreeMap<&NodeName, Vec<(&Instance, &Footprint)>> =
        lab.nodes.keys().map(|n| (n, Vec::new())).collect();
    for (inst, fp) in &footprints {
        if let Some(on_node) = by_node.get_mut(&inst.node) {
            on_node.push((*inst, fp));
        }
    }
    for (node, on_node) in &by_node {
        conflicts::check(node, on_node, d);
        let declared: BTreeSet<&str> = lab
            .nodes
            .get(*node)
            .into_iter()
            .flat_map(|n| n.services.keys())
            .filter_map(|s| lab.services.get(s))
            .flat_map(|s| s.networks.iter().map(String::as_str))
            .collect();
        conflicts::networks(node, on_node, &declared, d);
    }
}

/// The compose rules on the rendered compose file and override of `inst`.
fn compose_rules(
    lab: &Homelab,
    inst: &Instance,
    rendered: &render::Rendered,
    d: &mut Diagnostics,
) -> Footprint {
    let svc = &lab.services[&inst.service];
    let node = &lab.nodes[&inst.node];
    let mut texts = Vec::new();
    for artifact in &rendered.artifacts {
        let (kind, source) = if artifact.name == render::COMPOSE {
            (ComposeFile::Service, &svc.compose)
        } else if artifact.name == render::OVERRIDE {
            (ComposeFile::Override, &node.overrides[&inst.service])
        } else {
            continue;
        };
        texts.push((kind, source.path.as_str(), String::from_utf8_lossy(&artifact.bytes)));
    }
    let files: Vec<compose::Rendered> = texts
        .iter()
        .map(|(kind, path, text)| compose::Rendered { kind: *kind, path, text })
        .collect();
    let shipped = shipped(rendered);
    let exposure = node.services.get(&inst.service).map(|s| s.exposure).unwrap_or(svc.exposure);
    let shipped_texts = shipped_texts(lab, inst, rendered);
    let known: BTreeSet<String> = lab
        .nodes
        .keys()
        .map(|n| n.as_str().to_owned())
        .chain(lab.services.keys().map(|s| s.as_str().to_owned()))
        .collect();
    let ctx = compose::Context {
        root: &node.runtime_root,
        exposure,
        lan_ip: node.lan_address,
        shipped: &shipped,
        texts: &shipped_texts,
        known: &known,
    };
    let fp = compose::check(svc, inst, &ctx, &files, d);
    unreferenced(lab, inst, rendered, &fp, d);
    fp
}

/// A shipped file that neither the compose files name (as itself or in a folder they mount,
/// build or include) nor any other artifact mentions by name ships with every release for
/// nothing, or was meant to be mounted: said as a note, as validation cannot see every way a
/// program finds a file.
fn unreferenced(
    lab: &Homelab,
    inst: &Instance,
    rendered: &render::Rendered,
    fp: &Footprint,
    d: &mut Diagnostics,
) {
    let svc = &lab.services[&inst.service];
    let host = lab.nodes[&inst.node].runtime_files.get(&inst.service);
    let mut sources: BTreeMap<&str, &str> =
        svc.files.iter().map(|f| (f.name.as_str(), f.source.path.as_str())).collect();
    sources.extend(host.into_iter().flatten().map(|f| (f.name.as_str(), f.source.path.as_str())));
    let named = |name: &str| {
        fp.shipped_refs.iter().any(|r| {
            r.is_empty()
                || name == r
                || name.strip_prefix(r.as_str()).is_some_and(|s| s.starts_with('/'))
        })
    };
    for a in &rendered.artifacts {
        let own = [render::COMPOSE, render::OVERRIDE, render::HEALTHCHECK];
        if own.contains(&a.name.as_str()) || named(&a.name) {
            continue;
        }
        let base = a.name.rsplit('/').next().unwrap_or(&a.name);
        let mentioned = rendered.artifacts.iter().any(|o| {
            o.name != a.name && std::str::from_utf8(&o.bytes).is_ok_and(|t| t.contains(base))
        });
        if mentioned {
            continue;
        }
        let Some(path) = sources.get(a.name.as_str()) else { continue };
        d.note(
            "unreferenced",
            *path,
            None,
            "",
            format!("`{}` ships with every release of `{}`, but no compose file mounts, builds or includes it and no other shipped file names it", a.name, inst.service),
            format!("mount it read-only (`./{}:<path in the container>:ro`), or remove it from the service's folder", a.name),
        );
    }
}

/// The text artifacts of an instance's release, by path in the release: the path of their
/// source in the repository (as diagnostics show it) and their rendered text.
fn shipped_texts(
    lab: &Homelab,
    inst: &Instance,
    rendered: &render::Rendered,
) -> BTreeMap<String, (String, String)> {
    let svc = &lab.services[&inst.service];
    let host = lab.nodes[&inst.node].runtime_files.get(&inst.service);
    // The host's files replace the service's of the same name, as in the render.
    let mut sources: BTreeMap<&str, &str> =
        svc.files.iter().map(|f| (f.name.as_str(), f.source.path.as_str())).collect();
    sources.extend(host.into_iter().flatten().map(|f| (f.name.as_str(), f.source.path.as_str())));
    rendered
        .artifacts
        .iter()
        .filter_map(|a| {
            let text = std::str::from_utf8(&a.bytes).ok()?;
            let path = sources.get(a.name.as_str())?;
            Some((a.name.clone(), (path.to_string(), text.to_owned())))
        })
        .collect()
}

/// What is shipped with an instance: exactly the artifacts of its release (as rendered, so a
/// `.j2` file counts under its shipped name), and every folder holding one (a folder may be
/// mounted whole).
fn shipped(rendered: &render::Rendered) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for a in &rendered.artifacts {
        let mut path = String::new();
        for part in a.name.split('/') {
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(part);
            out.insert(path.clone());
        }
    }
    out
}

/// A template that does not render, said with what the line holds: an undefined `vars.` key
/// names the key and where to define it; text that only looks like a template (Docker's Go
/// templates such as `{{.Name}}`, a `{{username}}` placeholder in a comment) names the text,
/// its line and the fix `{% raw %}`.
fn template_problem(
    lab: &Homelab,
    inst: &Instance,
    file: &str,
    line: Option<u64>,
    message: &str,
    d: &mut Diagnostics,
) {
    let svc = &inst.service;
    let src = template_text(lab, inst, file).and_then(|text| source_line(text, line));
    let exprs = src.map(expressions).unwrap_or_default();
    let raw_fix = |text: &str| {
        format!("to ship `{text}` as written, wrap it in `{{% raw %}}{text}{{% endraw %}}` (or, when the file needs no template at all, drop its `.j2` suffix or leave it out of `templates:`)")
    };
    if message.starts_with("undefined value") {
        let host = lab.nodes[&inst.node].services.get(&inst.service).map(|h| &h.vars);
        let defined = |k: &str| {
            lab.services[&inst.service].vars.contains_key(k)
                || host.is_some_and(|h| h.contains_key(k))
        };
        let undefined_var = exprs.iter().find_map(|(_, e)| {
            let k = e.strip_prefix("vars.")?;
            (!k.is_empty()
                && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !defined(k))
            .then_some((e, k))
        });
        if let Some((expr, key)) = undefined_var {
            return d.err(
                "template",
                file,
                line,
                expr.clone(),
                format!("undefined value: `{key}` is not among the `vars:` of services/{svc}/service.yaml or of the host"),
                format!("define `{key}` under `vars:` in services/{svc}/service.yaml (or per node in hosts/<node>/services.yaml), or fix the name"),
            );
        }
        // `lan_ip` is in the context only for a node the topology gives a LAN address.
        let node = &lab.nodes[&inst.node];
        let lan_ip =
            exprs.iter().find(|(_, e)| e.split(['.', '[', '(', ' ', '|']).next() == Some("lan_ip"));
        if let (Some((text, _)), None) = (lan_ip, node.lan_address) {
            return d.err(
                "template",
                file,
                line,
                text.clone(),
                format!("undefined value: `lan_ip` is the node's LAN address, and `{}` has none in inventory/topology.yaml", inst.node),
                format!("set `lan_address` under `nodes.{}` in inventory/topology.yaml (`lan_address: 192.168.1.20`)", inst.node),
            );
        }
        // A name the template context does not have at all (`{{ username }}`): most often text
        // meant for another program.
        let unknown = exprs.iter().find(|(_, e)| {
            let root = e.split(['.', '[', '(', ' ']).next().unwrap_or("");
            !root.is_empty() && !CONTEXT.contains(&root)
        });
        if let Some((text, expr)) = unknown {
            let root = expr.split(['.', '[', '(', ' ']).next().unwrap_or("");
            return d.err(
                "template",
                file,
                line,
                text.clone(),
                format!("undefined value: `{root}` is not a template variable (the context has {})", CONTEXT.join(", ")),
                format!("{}; to fill it in per service or node, define `{root}` under `vars:` and write `{{{{ vars.{root} }}}}`", raw_fix(text)),
            );
        }
    } else if message.starts_with("syntax error") {
        // Go template text (`{{.Name}}`, `{{ json . }}`) is the common case: minijinja cannot
        // parse an expression that starts with `.`.
        let go = exprs.iter().find(|(_, e)| e.starts_with('.') || e.contains(" ."));
        if let Some((text, _)) = go {
            return d.err(
                "template",
                file,
                line,
                text.clone(),
                format!("{message}: `{text}` is Go template text (as Docker and Compose options write it), not a minijinja expression"),
                raw_fix(text),
            );
        }
        return d.err(
            "template",
            file,
            line,
            "",
            message,
            "fix the template syntax on this line; text meant literally (`{{ … }}`, `{% … %}`, `{# … #}`) goes inside `{% raw %}…{% endraw %}`",
        );
    }
    d.err("template", file, line, "", message, "define the variable under `vars:` in service.yaml or the host's services.yaml, or fix the template")
}

/// The names a template can use at the top level (see `render`'s context).
const CONTEXT: [&str; 8] =
    ["root", "node", "service", "config_dir", "data_dir", "logs_dir", "lan_ip", "vars"];

/// The source of the template `file` rendered for `inst`: its compose file, override, a
/// shipped file (service or host), or a shared fragment of `templates/`.
fn template_text<'a>(lab: &'a Homelab, inst: &Instance, file: &str) -> Option<&'a str> {
    let svc = &lab.services[&inst.service];
    let node = &lab.nodes[&inst.node];
    let sources = std::iter::once(&svc.compose)
        .chain(node.overrides.get(&inst.service))
        .chain(svc.files.iter().map(|f| &f.source))
        .chain(node.runtime_files.get(&inst.service).into_iter().flatten().map(|f| &f.source));
    for s in sources {
        if s.path == file {
            return Some(&s.text);
        }
    }
    lab.templates.get(file.strip_prefix("templates/")?).map(String::as_str)
}

/// Line `line` (1-based) of `text`.
fn source_line(text: &str, line: Option<u64>) -> Option<&str> {
    text.lines().nth(usize::try_from(line?).ok()?.checked_sub(1)?)
}

/// The `{{ … }}` expressions of a line: the text as written, and the expression inside,
/// trimmed, up to its first filter.
fn expressions(line: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start..].find("}}") else { break };
        let text = &rest[start..start + len + 2];
        let inner = text[2..text.len() - 2].trim_matches(|c: char| c == '-' || c.is_whitespace());
        let expr = inner.split('|').next().unwrap_or("").trim();
        out.push((text.to_owned(), expr.to_owned()));
        rest = &rest[start + len + 2..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::expressions;

    #[test]
    fn the_expressions_of_a_line() {
        let e = |l: &str| expressions(l).into_iter().map(|(_, e)| e).collect::<Vec<_>>();
        assert_eq!(e("tag: \"{{.Name}}\" {{ vars.a | upper }}"), [".Name", "vars.a"]);
        assert_eq!(e("{{- json . -}} and {{ unclosed"), ["json ."]);
        assert!(e("no template").is_empty());
    }
}
