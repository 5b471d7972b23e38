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
    let Loaded { raw, lab, mut diagnostics } = crate::model::load_partial(repo);
    let (Some(raw), Some(lab)) = (raw, lab) else { return Err(diagnostics.into_sorted()) };
    // Run on the sound parts even when other parts are broken: one run shows every problem.
    // The partial model leaves out what is broken, so nothing here repeats a model problem.
    cycles(&lab, &raw, &mut diagnostics);
    rendering(&lab, &mut diagnostics);
    if diagnostics.is_empty() {
        Ok(lab)
    } else {
        Err(diagnostics.into_sorted())
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
                let undefined = message
                    .starts_with("undefined value")
                    .then(|| undefined_var(lab, inst, &file, line))
                    .flatten();
                match undefined {
                    Some(expr) => {
                        let svc = &inst.service;
                        let key = expr.trim_start_matches("vars.");
                        d.err(
                            "template",
                            &file,
                            line,
                            expr.clone(),
                            format!("undefined value: `{key}` is not among the `vars:` of services/{svc}/service.yaml or of the host"),
                            format!("define `{key}` under `vars:` in services/{svc}/service.yaml (or per node in hosts/<node>/services.yaml), or fix the name"),
                        )
                    }
                    None => d.err("template", file, line, "", message, "define the variable under `vars:` in service.yaml or the host's services.yaml, or fix the template"),
                }
            }
        }
    }
    for node in lab.nodes.keys() {
        let on_node: Vec<(&Instance, &Footprint)> =
            footprints.iter().filter(|(i, _)| i.node == *node).map(|(i, f)| (*i, f)).collect();
        conflicts::check(node, &on_node, d);
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
    let ctx = compose::Context { root: &node.runtime_root, exposure, shipped: &shipped };
    compose::check(svc, inst, &ctx, &files, d)
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

/// The first `{{ vars.<key> }}` on `line` of the template `file` whose key neither the contract
/// nor the host defines: what a strict "undefined value" render error is about.
fn undefined_var(lab: &Homelab, inst: &Instance, file: &str, line: Option<u64>) -> Option<String> {
    let svc = &lab.services[&inst.service];
    let node = &lab.nodes[&inst.node];
    let text = if file == svc.compose.path {
        &svc.compose.text
    } else if let Some(o) = node.overrides.get(&inst.service).filter(|o| o.path == file) {
        &o.text
    } else {
        lab.templates.get(file.strip_prefix("templates/")?)?
    };
    let src = text.lines().nth(usize::try_from(line?).ok()?.checked_sub(1)?)?;
    let host = &node.services.get(&inst.service)?.vars;
    src.split("{{")
        .skip(1)
        .filter_map(|s| s.split_once("}}").map(|(e, _)| e.split('|').next().unwrap_or("").trim()))
        .find(|e| {
            e.strip_prefix("vars.").is_some_and(|k| {
                !k.is_empty()
                    && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    && !svc.vars.contains_key(k)
                    && !host.contains_key(k)
            })
        })
        .map(str::to_owned)
}
