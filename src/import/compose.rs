//! A published compose file made to follow homelab's rules, as line edits with their reasons:
//! container names (`model::validate::compose::container_name`), `restart` (the contract's
//! policy; one-shot containers as `validate` tells them), `env_file` (a hidden or secret-holding
//! file becomes the node's `{{ config_dir }}/.env`), bind mounts (host folders under a
//! variable, writable absolute folders and writable relative binds moved under
//! `{{ data_dir }}`, shipped config mounted read-only, host paths listed), literal secrets and
//! secret defaults replaced by `${NAME}`, `lan` ports published on an address written out, and
//! the top-level `name:`. It also collects what the contract needs (variables, data paths,
//! backup sets of the databases, dependencies, healthchecks).
//!
//! Pure: what the project folder holds comes in as `Input::exists` and `Input::env_values`;
//! no IO here, nothing written.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

use super::edit::{self, block_end, indent, is_blank, Edit, Op};
use super::shape::{
    at, is_database, locate, normalize, problem, quoted_if_needed, unquote, Ctx, Project, Svc,
};
pub use super::shape::{Container, Existing, Input, Output, Timing, Variable, RESTART};
use crate::model::load::parse_yaml;
use crate::model::validate::compose::{container_name, one_shot, reached_as, variables_used};
use crate::model::validate::{looks_secret, secret_looking_literal};
use crate::model::{Diagnostic, Exposure};

pub fn transform(i: &Input) -> Result<Output, Diagnostic> {
    let project: Project = parse_yaml(Path::new(i.file), i.text)?;
    // One empty line past the end: a location at the end of the file is a line too.
    let mut lines: Vec<&str> = i.text.lines().collect();
    lines.push("");
    let mut out = Output::default();
    let mut ops_of: Vec<Edit> = Vec::new();
    let svc = i.service;
    let file = i.file;
    let mut push = |line: Option<usize>, field: String, what: String, why: &str, ops: Vec<Op>| {
        ops_of.push(Edit { file: file.to_owned(), line, field, what, why: why.to_owned(), ops });
    };
    if project.services.is_empty() {
        return Err(problem(
            file,
            None,
            "services",
            "the project defines no compose service",
            "point import at the folder of a Compose project (one with `services:`)",
        ));
    }
    // Minijinja reads the compose file as a template: a literal `{{` (Docker's `{{.Name}}`)
    // must come out as written.
    for (n, l) in lines.iter().enumerate() {
        let escaped = escape_template(l);
        if escaped != *l {
            push(
                Some(n + 1),
                String::new(),
                "wrote `{{`, `{%`, `{#` as `{{ '{{' }}`, …".to_owned(),
                "the compose file is a template; this keeps the text Docker sees as it was",
                vec![Op::Replace { line: n + 1, old: (*l).to_owned(), new: escaped }],
            );
        }
    }
    if let Some(n) = project.name.as_ref().filter(|n| n.value != svc) {
        let l = at(n).unwrap_or(1);
        push(
            Some(l),
            "name".into(),
            format!("`{}` → `{svc}`", n.value),
            "homelab runs the project as `docker compose -p <service>`",
            vec![Op::Replace {
                line: l,
                old: lines[l - 1].to_owned(),
                new: format!("name: {svc}"),
            }],
        );
    }
    let services_line = lines
        .iter()
        .position(|l| l.trim_end() == "services:" || l.starts_with("services: #"))
        .map(|p| p + 1);
    let multi = project.services.len() > 1;
    let keys: BTreeSet<&str> = project.services.keys().map(String::as_str).collect();
    // The compose file and the files its `extends` name: a base may bring the `depends_on`
    // that makes a container one-shot.
    let mut texts =
        BTreeMap::from([("docker-compose.yml".to_owned(), (file.to_owned(), i.text.to_owned()))]);
    for s in project.services.values() {
        let Some(Value::Object(m)) = s.value.extends.as_ref().map(|e| &e.value) else { continue };
        let Some(rel) = m.get("file").and_then(Value::as_str).and_then(normalize) else { continue };
        if let Some(text) = (i.read)(&rel) {
            texts.insert(rel.clone(), (rel, text));
        }
    }
    let shots = one_shot(svc, &texts);
    // The text with its `container_name` lines blanked (lines kept, so numbers hold): a line
    // that gives a name, in a service or an anchor merged into one, reaches nothing.
    let reaching: String = i
        .text
        .lines()
        .map(|l| if l.trim_start().starts_with("container_name:") { "" } else { l })
        .collect::<Vec<_>>()
        .join("\n");
    // The containers another one waits for as running (`service_started`, `service_healthy`,
    // or the list form of `depends_on`): they are kept up.
    let running: BTreeSet<&str> = project
        .services
        .values()
        .flat_map(|s| match s.value.depends_on.as_ref().map(|d| &d.value) {
            Some(Value::Object(deps)) => deps
                .iter()
                .filter(|(_, v)| {
                    v.get("condition").and_then(Value::as_str)
                        != Some("service_completed_successfully")
                })
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>(),
            Some(Value::Array(deps)) => deps.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        })
        .collect();
    // The exposure: as given, or from what the project publishes.
    let publishes = project.services.values().any(|s| {
        s.value.network_mode.as_ref().map(|m| m.value.as_str()) != Some("host")
            && s.value.ports.iter().any(|p| published(&p.value))
    });
    let exposure = i.exposure.unwrap_or(if publishes { Exposure::Lan } else { Exposure::Internal });
    out.exposure = Some(exposure);

    // Every mount, gathered first: host folders under one variable share a layout.
    let mut mounts: Vec<super::mounts::Mount> = Vec::new();
    for (key, s) in &project.services {
        for (n, v) in s.value.volumes.iter().enumerate() {
            if let Some(m) = super::mounts::mount(key, n, v) {
                mounts.push(m);
            }
        }
    }
    let data_of = super::mounts::data_layout(i, &mounts);

    for (key, s) in &project.services {
        let cs = &s.value;
        let field = format!("services.{key}");
        let Some(key_line) = key_line(&lines, services_line, key) else {
            return Err(problem(
                file,
                at(s),
                field,
                "import edits compose services written in block style (`key:` on its own line, its settings indented below)",
                "write the service in block style",
            ));
        };
        let end = block_end(&lines, key_line);
        // A key of the service's own block: a merged one (`<<: *common`) is located at the
        // `<<:` line, which an edit must not replace.
        let own = |l: Option<usize>, key: &str| {
            l.is_some_and(|l| {
                l > key_line
                    && l <= end
                    && lines[l - 1].trim_start().trim_start_matches(['"', '\'']).starts_with(key)
            })
        };
        let child = lines[key_line..end]
            .iter()
            .find(|l| !is_blank(l))
            .map(|l| indent(l))
            .unwrap_or(indent(lines[key_line - 1]) + 2);
        let pad = " ".repeat(child);
        // Container name.
        let name = container_name(svc, key, multi);
        let shot = shots.contains(key);
        // A job the project runs once: no restart policy (Docker's default, `no`), not the main
        // container, and nothing waits for it as running or reaches it; no port, no
        // healthcheck, not a database. `unless-stopped` would start it again after every exit
        // (issue 21: the starter kit's model pull re-ran 7 times in 30 s); `restart: "no"`
        // keeps it a job, which `validate` and `plan` know as one-shot.
        let job = !shot
            && multi
            && key.as_str() != svc
            && cs.restart.is_none()
            && !running.contains(key.as_str())
            && cs.ports.is_empty()
            && cs.healthcheck.is_none()
            && !is_database(cs.image.as_ref())
            && reached_as(&reaching, key, None).is_none()
            && cs
                .container_name
                .as_ref()
                .is_none_or(|c| reached_as(&reaching, &c.value, None).is_none());
        // The name the project gives the container, on a line of its own block or merged in
        // (`<<: *ollama` with `container_name: ollama` in the anchor): what others reach it by.
        let mut aliases = Vec::new();
        let written = cs.container_name.as_ref();
        let own_line =
            written.filter(|c| own(at(c), "container_name")).map(|c| at(c).unwrap_or(key_line));
        match written.filter(|c| c.value != name) {
            None if own_line.is_some() => {}
            Some(c) => {
                let old = c.value.as_str();
                let mut why = if multi {
                    format!("in a multi-container service the container of the key `{svc}` is `{svc}`, one whose key already carries the service's name is named like its key, every other one is `{svc}-<key>`")
                } else {
                    "a one-container service's container is named like the service".to_owned()
                };
                // A merged name is replaced by one of the block's own, which wins over it.
                let (l, mut ops) = match own_line {
                    Some(l) => (
                        l,
                        vec![Op::Replace {
                            line: l,
                            old: lines[l - 1].to_owned(),
                            new: format!(
                                "{}container_name: {name}",
                                " ".repeat(indent(lines[l - 1]))
                            ),
                        }],
                    ),
                    None => (
                        key_line,
                        vec![Op::Insert {
                            after: key_line,
                            text: format!("{pad}container_name: {name}"),
                        }],
                    ),
                };
                if old != key.as_str() && reached_as(&reaching, old, None).is_some() {
                    match alias(&lines, (key_line, end, child), l, cs, old) {
                        Some(more) => {
                            ops.extend(more);
                            aliases.push(old.to_owned());
                            why.push_str(&format!("; `{old}` stays reachable as a network alias"));
                        }
                        None => why.push_str(&format!("; another line reaches it as `{old}`: add that name as a network alias or write `{key}` there")),
                    }
                }
                push(
                    Some(l),
                    format!("{field}.container_name"),
                    format!("`{old}` → `{name}`"),
                    &why,
                    ops,
                );
            }
            None => push(
                Some(key_line),
                format!("{field}.container_name"),
                format!("added `{name}`"),
                "container names follow the service, so two services never take one name",
                vec![Op::Insert { after: key_line, text: format!("{pad}container_name: {name}") }],
            ),
        }
        out.containers.push(Container {
            key: key.clone(),
            name,
            healthcheck: health_test(cs.healthcheck.as_ref().map(|h| &h.value)),
            one_shot: shot || job,
            aliases,
        });
        // Restart.
        if job {
            push(
                Some(key_line),
                format!("{field}.restart"),
                "added `restart: \"no\"`".to_owned(),
                "the project gives it no restart policy and no container waits for it as running or reaches it: a job that runs once, which `unless-stopped` would start again after every exit; make it `unless-stopped` if it serves",
                vec![Op::Insert { after: key_line, text: format!("{pad}restart: \"no\"") }],
            );
        } else if !shot {
            match cs.restart.as_ref().filter(|r| own(at(r), "restart")) {
                Some(r) if r.value == RESTART => {}
                Some(r) => {
                    let l = at(r).unwrap_or(key_line);
                    push(
                        Some(l),
                        format!("{field}.restart"),
                        format!("`{}` → `{RESTART}`", r.value),
                        "the guide's restart policy, which the contract states; `unless-stopped` keeps a container the operator stopped stopped",
                        vec![Op::Replace {
                            line: l,
                            old: lines[l - 1].to_owned(),
                            new: format!("{}restart: {RESTART}", " ".repeat(indent(lines[l - 1]))),
                        }],
                    );
                }
                None => push(
                    Some(key_line),
                    format!("{field}.restart"),
                    format!("added `{RESTART}`"),
                    "every long-running container restarts as the contract says",
                    vec![Op::Insert { after: key_line, text: format!("{pad}restart: {RESTART}") }],
                ),
            }
        }
        // Env files.
        if let Some(e) = &cs.env_file {
            let mut moved = false;
            for path in strings(&e.value, "path") {
                let rel = normalize(&path).ok_or_else(|| {
                    problem(
                        file,
                        at(e),
                        format!("{field}.env_file"),
                        format!("`{path}` leaves the project folder"),
                        "move the file into the project folder",
                    )
                })?;
                let hidden = rel.split('/').any(|p| p.starts_with('.'));
                let text = if hidden { None } else { (i.read)(&rel) };
                if !hidden && text.is_none() {
                    return Err(problem(
                        file,
                        at(e),
                        format!("{field}.env_file"),
                        format!("`{path}` does not exist in the project"),
                        "add the file to the project folder, or remove it from `env_file`",
                    ));
                }
                let secret = text
                    .as_deref()
                    .is_some_and(|t| t.lines().any(|l| secret_looking_literal(l, &[]).is_some()));
                if !hidden && !secret {
                    out.ship.insert(rel);
                    continue;
                }
                // A project publishes `.env.example` for the `.env` its users write: its
                // names stand in when there is no `.env` yet.
                let text = (i.read)(&rel).or_else(|| {
                    (rel == ".env")
                        .then(|| {
                            [".env.example", ".env.sample", "example.env", "env.example"]
                                .iter()
                                .find_map(|f| (i.read)(f))
                        })
                        .flatten()
                });
                let names = env_names(text.as_deref().unwrap_or(""));
                for n in names {
                    if !out.variables.iter().any(|v| v.name == n) {
                        out.variables.push(Variable {
                            secret: looks_secret(&n),
                            required: looks_secret(&n),
                            name: n,
                        });
                    }
                }
                let l = find_value(&lines, key_line, end, &path).ok_or_else(|| {
                    problem(
                        file,
                        at(e),
                        format!("{field}.env_file"),
                        format!("cannot find `{path}` written on one line"),
                        "write each env_file path on a line of its own",
                    )
                })?;
                let new = quoted_if_needed(lines[l - 1], &path, "{{ config_dir }}/.env");
                let op = value_op(l, lines[l - 1], &path, &new);
                let why = if hidden {
                    "a hidden file never ships; its values stay on the node, in the env file homelab reads (values not copied, names in env.example)"
                } else {
                    "it holds values that read like secrets: they stay on the node (values not copied, names in env.example)"
                };
                push(
                    Some(l),
                    format!("{field}.env_file"),
                    format!("`{path}` → `{{{{ config_dir }}}}/.env`"),
                    why,
                    vec![op],
                );
                moved = true;
            }
            out.uses_config |= moved;
        }
        // Ports.
        let host_net = cs.network_mode.as_ref().is_some_and(|m| m.value == "host");
        for (n, p) in cs.ports.iter().enumerate() {
            if host_net || !published(&p.value) {
                continue;
            }
            let l = at(p).unwrap_or(key_line);
            let pf = format!("{field}.ports[{n}]");
            match exposure {
                Exposure::Internal => {
                    return Err(problem(file, Some(l), pf, "publishes a host port, but the exposure is `internal`: an internal service publishes no port", "import with `--exposure lan` (or tailnet, public), or remove the published port from the project"));
                }
                Exposure::Lan => lan_port(&lines, l, child, &p.value, i.lan_ip, pf, &mut push),
                _ => {}
            }
        }
        // Build context, extends.
        if let Some(b) = &cs.build {
            let (context, dockerfile) = match &b.value {
                Value::String(s) => (s.clone(), None),
                Value::Object(m) => (
                    m.get("context").and_then(Value::as_str).unwrap_or(".").to_owned(),
                    m.get("dockerfile").and_then(Value::as_str).map(str::to_owned),
                ),
                _ => (".".to_owned(), None),
            };
            if !context.contains("://") && !context.starts_with("git@") {
                ship(i, &mut out, file, at(b), &format!("{field}.build.context"), &context)?;
                if let Some(d) = dockerfile.filter(|d| !d.starts_with('/')) {
                    let p = format!("{}/{d}", context.trim_end_matches('/'));
                    ship(i, &mut out, file, at(b), &format!("{field}.build.dockerfile"), &p)?;
                }
            }
        }
        if let Some(Value::Object(m)) = cs.extends.as_ref().map(|e| &e.value) {
            if let Some(f) = m.get("file").and_then(Value::as_str) {
                ship(
                    i,
                    &mut out,
                    file,
                    cs.extends.as_ref().and_then(at),
                    &format!("{field}.extends.file"),
                    f,
                )?;
            }
        }
        // Dependencies outside the project.
        if let Some(d) = &cs.depends_on {
            let deps: Vec<String> = match &d.value {
                Value::Array(a) => a.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
                Value::Object(m) => m.keys().cloned().collect(),
                _ => vec![],
            };
            let outside: Vec<String> =
                deps.iter().filter(|d| !keys.contains(d.as_str())).cloned().collect();
            if !outside.is_empty() && outside.len() == deps.len() {
                // Nothing left to wait for: `depends_on:` alone would be null.
                if let Some(l) = (key_line + 1..=end).find(|&k| {
                    indent(lines[k - 1]) == child
                        && lines[k - 1].trim_start().starts_with("depends_on:")
                }) {
                    push(
                        Some(l),
                        format!("{field}.depends_on"),
                        "removed".into(),
                        "every service it names is another homelab service",
                        vec![Op::Delete { line: l }],
                    );
                }
            }
            for dep in outside {
                if !i.homelab_services.contains(&dep) {
                    return Err(problem(
                        file,
                        at(d),
                        format!("{field}.depends_on"),
                        format!("`{dep}` is neither a service of the project nor of the homelab"),
                        format!("import `{dep}` first, or remove it from `depends_on`"),
                    ));
                }
                let Some(l) = find_key_or_item(&lines, key_line, end, &dep) else {
                    return Err(problem(
                        file,
                        at(d),
                        format!("{field}.depends_on"),
                        format!("cannot find `{dep}` on a line of its own"),
                        "write depends_on in block style",
                    ));
                };
                let ops = (l..=block_end(&lines, l)).map(|line| Op::Delete { line }).collect();
                push(Some(l), format!("{field}.depends_on"), format!("removed `{dep}`"), "another homelab service: Compose cannot wait for another project, the contract's `dependencies` order the deploys", ops);
                out.dependencies.insert(dep);
            }
        }
        let timing = cs.healthcheck.as_ref().map(|h| timing(&h.value));
        if let Some(t) = timing {
            let main = key == svc || !multi;
            if main || out.timing == Timing::default() {
                out.timing = t;
            }
        }
    }

    let mut c = Ctx { lines: lines.clone(), file, edits: std::mem::take(&mut ops_of), out };
    super::mounts::edit(&mut c, i, &project.services, &mounts, &data_of)?;
    top_level_files(&mut c, i, &project)?;
    secrets(&mut c);
    let Ctx { edits: mut ops_of, mut out, .. } = c;
    // Apply, then read the variables of the result.
    let mut all_ops: Vec<Op> = Vec::new();
    for e in &ops_of {
        // A line shared through an anchor is edited once for all its users.
        for op in &e.ops {
            if !all_ops.contains(op) {
                all_ops.push(op.clone());
            }
        }
    }
    out.text = edit::apply(i.text, &all_ops).map_err(|nf| {
        problem(
            file,
            Some(nf.line),
            "",
            format!(
                "cannot edit this line: `{}` is not written on it as the YAML parser read it",
                nf.old
            ),
            "write the value plainly on one line (no line continuation), then import again",
        )
    })?;
    let mut uses: BTreeMap<String, bool> = BTreeMap::new();
    for (name, default) in variables_used(&out.text) {
        let no_default = uses.entry(name).or_insert(false);
        *no_default |= default.is_none();
    }
    for (name, no_default) in uses {
        let secret = looks_secret(&name);
        match out.variables.iter_mut().find(|v| v.name == name) {
            Some(v) => v.required |= no_default,
            // A default that is not a secret's needs no declaration (validate's rule): the
            // variable stays the project's knob, set in the node's env file when wanted.
            None if !no_default && !secret => {}
            None => out.variables.push(Variable { secret, required: no_default, name }),
        }
    }
    // A name in `environment` with no value (`- POSTGRES_PASSWORD`) takes its value from the
    // env file Compose reads, on the node the service's `.env`: the owner must set it there.
    for name in project.services.values().flat_map(|s| bare_environment(&s.value)) {
        if !out.variables.iter().any(|v| v.name == name) {
            out.variables.push(Variable { secret: looks_secret(&name), required: true, name });
        }
    }
    out.variables.sort_by(|a, b| a.name.cmp(&b.name));
    ops_of.sort_by_key(|e| e.line);
    out.edits = ops_of;
    Ok(out)
}

/// The names a service's `environment` lists without a value (`- NAME`, or `NAME:` with
/// nothing after it): Compose passes them on from its environment and env file.
fn bare_environment(s: &super::shape::Svc) -> Vec<String> {
    let ok = |n: &str| {
        !n.is_empty()
            && !n.starts_with(|c: char| c.is_ascii_digit())
            && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    match s.environment.as_ref().map(|e| &e.value) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::trim)
            .filter(|i| !i.contains('=') && ok(i))
            .map(str::to_owned)
            .collect(),
        Some(Value::Object(m)) => {
            m.iter().filter(|(k, v)| v.is_null() && ok(k)).map(|(k, _)| k.clone()).collect()
        }
        _ => Vec::new(),
    }
}

/// Top-level files: `configs` ship, `secrets` stay on the node, `include` ships.
fn top_level_files(c: &mut Ctx, i: &Input, project: &Project) -> Result<(), Diagnostic> {
    let lines = c.lines.clone();
    let file = c.file;
    for (kind, entries) in [("configs", &project.configs), ("secrets", &project.secrets)] {
        for (name, v) in entries {
            let Some(f) = v.value.get("file").and_then(Value::as_str) else { continue };
            let field = format!("{kind}.{name}.file");
            if kind == "configs" {
                ship(i, &mut c.out, file, at(v), &field, f)?;
                continue;
            }
            let base = f.rsplit('/').next().unwrap_or(f).to_owned();
            let Some(l) = (1..=lines.len()).find(|&k| value_of(lines[k - 1], "file") == Some(f))
            else {
                return Err(problem(
                    file,
                    at(v),
                    field,
                    format!("cannot find `file: {f}` on a line of its own"),
                    "write `file:` on a line of its own",
                ));
            };
            let new = format!("{{{{ config_dir }}}}/{base}");
            c.push(
                Some(l),
                field,
                format!("`{f}` → `{new}`"),
                "a secret never ships from Git: put the file on the node (not copied)",
                vec![value_op(l, lines[l - 1], f, &quoted_if_needed(lines[l - 1], f, &new))],
            );
            c.out.uses_config = true;
            c.out.node_files.insert(base);
        }
    }
    for (key, n) in &project.networks {
        if n.value.get("external").is_some_and(|e| e.as_bool() == Some(true) || e.is_object()) {
            let name = n.value.get("name").and_then(Value::as_str).unwrap_or(key);
            c.out.external_networks.insert(name.to_owned());
        }
    }
    for (n, inc) in project.include.iter().enumerate() {
        for p in strings(&inc.value, "path") {
            ship(i, &mut c.out, file, at(inc), &format!("include[{n}]"), &p)?;
        }
    }

    Ok(())
}

/// Literal secrets and secrets' defaults, on the lines as written.
fn secrets(c: &mut Ctx) {
    let lines = c.lines.clone();
    for (n, l) in lines.iter().enumerate() {
        let ln = n + 1;
        if let Some((name, _)) = secret_looking_literal(l, &[]) {
            let Some(new) = secret_line(l, &name) else { continue };
            c.push(Some(ln), name.clone(), format!("value → `${{{name}}}`"), "a literal secret in Git: the value goes in the node's env file (not copied), the name in env.example", vec![Op::Replace { line: ln, old: (*l).to_owned(), new }]);
            continue;
        }
        for (name, default) in variables_used(l) {
            let literal = default.is_some_and(|d| {
                !(d.is_empty() || d.starts_with('$') || (d.starts_with('<') && d.ends_with('>')))
            });
            if !literal {
                continue;
            }
            if !looks_secret(&name) {
                continue;
            }
            for op in [":-", "-"] {
                let start = format!("${{{name}{op}");
                let Some(s) = l.find(&start) else { continue };
                let Some(e) = l[s..].find('}') else { continue };
                c.push(Some(ln), name.clone(), format!("default removed from `${{{name}}}`"), "a secret's default is a literal secret in Git: the value goes in the node's env file", vec![Op::Replace { line: ln, old: l[s..s + e + 1].to_owned(), new: format!("${{{name}}}") }]);
                break;
            }
        }
    }
}

/// The edits that keep `old`, the name the project gave a container homelab renames,
/// reachable by the containers that use it: a network alias on every network the container
/// joins. Without `networks`, the default network's (`networks: {default: {aliases: [old]}}`);
/// with a `networks` of the block's own (a list or a map), that key written again as a map
/// with `old` among each network's aliases (the rest of each network's settings kept); with one
/// merged in (`<<: *anchor`), a key of the block's own, which wins over the merged one. `None`
/// for a container on another network mode, or networks this does not read. `child` is the
/// indentation of the block's keys; a new line goes after line `after`.
fn alias(
    lines: &[&str],
    (key_line, end, child): (usize, usize, usize),
    after: usize,
    cs: &Svc,
    old: &str,
) -> Option<Vec<Op>> {
    if cs.network_mode.is_some() {
        return None;
    }
    let pad = " ".repeat(child);
    let Some(networks) = cs.networks.as_ref() else {
        let text = format!("{pad}networks: {{default: {{aliases: [{old}]}}}}");
        return Some(vec![Op::Insert { after, text }]);
    };
    let mut map = serde_json::Map::new();
    match &networks.value {
        Value::Array(names) => {
            for n in names {
                map.insert(n.as_str()?.to_owned(), Value::Null);
            }
        }
        Value::Object(m) => map = m.clone(),
        _ => return None,
    }
    if map.is_empty() {
        return None;
    }
    for settings in map.values_mut() {
        if settings.is_null() {
            *settings = Value::Object(serde_json::Map::new());
        }
        let list = settings
            .as_object_mut()?
            .entry("aliases")
            .or_insert_with(|| Value::Array(Vec::new()))
            .as_array_mut()?;
        if !list.iter().any(|a| a.as_str() == Some(old)) {
            list.push(Value::String(old.to_owned()));
        }
    }
    let text = format!("{pad}networks: {}", flow(&Value::Object(map)));
    let own = (key_line + 1..=end).find(|&l| {
        indent(lines[l - 1]) == child && lines[l - 1].trim_start().starts_with("networks:")
    });
    Some(match own {
        Some(l) => {
            let mut ops = vec![Op::Replace { line: l, old: lines[l - 1].to_owned(), new: text }];
            ops.extend((l + 1..=block_end(lines, l)).map(|line| Op::Delete { line }));
            ops
        }
        None => vec![Op::Insert { after, text }],
    })
}

/// `v` as YAML in flow style (`{back: {aliases: [ollama]}}`): a string plain where YAML reads
/// it back as that string, quoted elsewhere (JSON's quoting, which YAML reads too).
fn flow(v: &Value) -> String {
    let plain = |s: &str| {
        s.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && !matches!(
                s.to_ascii_lowercase().as_str(),
                "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n"
            )
    };
    match v {
        Value::Object(m) => {
            let items: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{}: {}", flow(&Value::String(k.clone())), flow(v)))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Array(a) => format!("[{}]", a.iter().map(flow).collect::<Vec<_>>().join(", ")),
        Value::String(s) if plain(s) => s.clone(),
        _ => v.to_string(),
    }
}

/// The line of the compose service `key` under `services:`.
fn key_line(lines: &[&str], services: Option<usize>, key: &str) -> Option<usize> {
    let start = services?;
    let end = block_end(lines, start);
    let child = lines[start..end].iter().find(|l| !is_blank(l)).map(|l| indent(l))?;
    (start + 1..=end).find(|&n| {
        let l = lines[n - 1];
        if indent(l) != child {
            return false;
        }
        let t = l.trim();
        let rest = [format!("{key}:"), format!("\"{key}\":"), format!("'{key}':")]
            .iter()
            .find_map(|k| t.strip_prefix(k.as_str()).map(str::to_owned));
        // Block style: nothing after the colon but an anchor or a comment.
        rest.is_some_and(|r| {
            let r = r.trim();
            r.is_empty() || r.starts_with('#') || (r.starts_with('&') && !r.contains(' '))
        })
    })
}

/// The first line in `(start, end]` whose YAML value (`key: v`, `- v`, quoted or not) is `v`.
fn find_value(lines: &[&str], start: usize, end: usize, v: &str) -> Option<usize> {
    (start + 1..=end).find(|&n| {
        let t = lines[n - 1].trim();
        let t = t.strip_prefix("- ").unwrap_or(t);
        let val = t.split_once(": ").map(|(_, v)| v).unwrap_or(t).trim();
        unquote(val) == v
    })
}

/// The line of `dep` in a `depends_on` list (`- dep`) or map (`dep:`) of a service.
fn find_key_or_item(lines: &[&str], start: usize, end: usize, dep: &str) -> Option<usize> {
    (start + 1..=end).find(|&n| {
        let t = lines[n - 1].trim();
        t.strip_prefix("- ").map(|v| unquote(v.trim()) == dep).unwrap_or(false)
            || t.strip_suffix(':').map(unquote) == Some(dep)
    })
}

/// `key: v` on a line: `v`, unquoted.
fn value_of<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let t = line.trim();
    let t = t.strip_prefix("- ").unwrap_or(t);
    t.strip_prefix(key)?.strip_prefix(':').map(|v| unquote(v.trim()))
}

/// `line` with every `{{`, `{%` and `{#` written so that minijinja renders it as it was.
fn escape_template(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = rest.find('{') {
        out.push_str(&rest[..at]);
        let token = rest.get(at..at + 2).filter(|t| matches!(*t, "{{" | "{%" | "{#"));
        match token {
            Some(t) => {
                out.push_str(&format!("{{{{ '{t}' }}}}"));
                rest = &rest[at + 2..];
            }
            None => {
                out.push('{');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The line with its last `value` (the YAML value, at the end of it) replaced by `new`.
fn value_op(line: usize, text: &str, value: &str, new: &str) -> Op {
    match text.rfind(value) {
        Some(at) => Op::Replace {
            line,
            old: text.to_owned(),
            new: format!("{}{new}{}", &text[..at], &text[at + value.len()..]),
        },
        None => Op::Replace { line, old: value.to_owned(), new: new.to_owned() },
    }
}

/// A line that sets the secret-looking `name` to a literal, rewritten to `${name}`.
fn secret_line(line: &str, name: &str) -> Option<String> {
    let at = line.find(name)?;
    let after = at + name.len();
    let sep = after + line[after..].find([':', '='])?;
    let head = &line[..=sep];
    let t = line.trim_start();
    let t = t.strip_prefix("- ").map(str::trim_start).unwrap_or(t);
    let quote = match t.as_bytes().first() {
        Some(b'"') if line.as_bytes()[sep] == b'=' => "\"",
        Some(b'\'') if line.as_bytes()[sep] == b'=' => "'",
        _ => "",
    };
    let space = if line.as_bytes()[sep] == b':' { " " } else { "" };
    Some(format!("{head}{space}${{{name}}}{quote}"))
}

/// The names a `.env`-style text sets.
pub fn env_names(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let l = l.strip_prefix("export ").unwrap_or(l);
            let name = l.split('=').next()?.trim();
            let ok = !name.is_empty()
                && !name.as_bytes()[0].is_ascii_digit()
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            ok.then(|| name.to_owned())
        })
        .collect()
}

// The strings of a field Compose lets be a string, a list, or objects naming it in `key`: as
// validate reads them.
use crate::model::validate::compose::strings;

/// A relative path of the project that must ship: it must exist there.
fn ship(
    i: &Input,
    out: &mut Output,
    file: &str,
    line: Option<usize>,
    field: &str,
    path: &str,
) -> Result<(), Diagnostic> {
    if path.starts_with(['/', '~']) || path.contains('$') {
        return Err(problem(
            file,
            line,
            field,
            format!("`{path}` is not a path inside the project"),
            "write it relative to the project folder",
        ));
    }
    let rel = normalize(path).ok_or_else(|| {
        problem(
            file,
            line,
            field,
            format!("`{path}` leaves the project folder"),
            "move it into the project folder",
        )
    })?;
    if (i.exists)(&rel) == Existing::Missing {
        return Err(problem(
            file,
            line,
            field,
            format!("`{path}` does not exist in the project"),
            "add it to the project folder",
        ));
    }
    out.ship.insert(rel);
    Ok(())
}

/// Whether a `ports:` entry publishes a fixed host port.
fn published(v: &Value) -> bool {
    match v {
        Value::String(s) => {
            let spec = s.rsplit_once('/').map(|(a, _)| a).unwrap_or(s);
            colons(spec) >= 1
        }
        Value::Object(m) => m.get("published").is_some(),
        _ => false,
    }
}

/// Whether a published port names its host address.
fn has_ip(v: &Value) -> bool {
    match v {
        Value::String(s) => {
            let spec = s.rsplit_once('/').map(|(a, _)| a).unwrap_or(s);
            spec.starts_with('[') || colons(spec) >= 2
        }
        Value::Object(m) => m.get("host_ip").and_then(Value::as_str).is_some_and(|s| !s.is_empty()),
        _ => true,
    }
}

/// A `lan` port published on an address written out: the node's LAN address
/// (`{{ lan_ip }}`) when the topology gives one (in place of no address, `0.0.0.0` or `[::]`),
/// else `0.0.0.0` in place of no address. `push` records the edit.
fn lan_port(
    lines: &[&str],
    l: usize,
    child: usize,
    v: &Value,
    lan_ip: Option<std::net::IpAddr>,
    field: String,
    push: &mut impl FnMut(Option<usize>, String, String, &str, Vec<Op>),
) {
    let why = match lan_ip {
        Some(_) => "a `lan` service publishes on the node's LAN address (`lan_address` in inventory/topology.yaml), which `{{ lan_ip }}` renders",
        None => "a `lan` service publishes only on an address written out; `0.0.0.0` (every address) until the node has a `lan_address` in inventory/topology.yaml",
    };
    match v {
        Value::String(s) => {
            let prefix = match lan_ip {
                Some(std::net::IpAddr::V4(_)) => "{{ lan_ip }}",
                Some(std::net::IpAddr::V6(_)) => "[{{ lan_ip }}]",
                None => "0.0.0.0",
            };
            let rest = if !has_ip(v) {
                s.as_str()
            } else if lan_ip.is_some() {
                let Some(rest) = ["0.0.0.0:", "[::]:"].iter().find_map(|p| s.strip_prefix(p))
                else {
                    return;
                };
                rest
            } else {
                return;
            };
            let l = locate(lines, l, s);
            let new = format!("{prefix}:{rest}");
            // A plain YAML scalar may not start with `{` or `[`.
            let new = if lan_ip.is_some() { quoted(lines[l - 1], s, &new) } else { new };
            push(
                Some(l),
                field,
                format!("`{s}` → `{new}`"),
                why,
                vec![Op::Replace { line: l, old: s.clone(), new }],
            );
        }
        Value::Object(m) => {
            let end = block_end(lines, l);
            let written = m.get("host_ip").and_then(Value::as_str).filter(|ip| !ip.is_empty());
            let host_ip = if lan_ip.is_some() { "\"{{ lan_ip }}\"" } else { "0.0.0.0" };
            match written {
                None => {
                    let pl = (l..=end).find(|&k| lines[k - 1].contains("published:")).unwrap_or(l);
                    let col = lines[pl - 1].find("published:").unwrap_or(child);
                    push(
                        Some(pl),
                        field,
                        format!("added `host_ip: {host_ip}`"),
                        why,
                        vec![Op::Insert {
                            after: pl,
                            text: format!("{}host_ip: {host_ip}", " ".repeat(col)),
                        }],
                    );
                }
                Some(ip) if lan_ip.is_some() && matches!(ip, "0.0.0.0" | "::" | "[::]") => {
                    let Some(hl) = (l..=end).find(|&k| lines[k - 1].contains("host_ip:")) else {
                        return;
                    };
                    let line = lines[hl - 1];
                    let at = line.find("host_ip:").unwrap_or(0);
                    let old = line[at..].trim_end().to_owned();
                    push(
                        Some(hl),
                        field,
                        format!("`host_ip: {ip}` → `host_ip: {host_ip}`"),
                        why,
                        vec![Op::Replace { line: hl, old, new: format!("host_ip: {host_ip}") }],
                    );
                }
                Some(_) => {}
            }
        }
        _ => {}
    }
}

/// `new` in double quotes unless `old` is written quoted on `line`.
fn quoted(line: &str, old: &str, new: &str) -> String {
    let is_quoted =
        line.find(old).is_some_and(|at| at > 0 && matches!(line.as_bytes()[at - 1], b'"' | b'\''));
    if is_quoted {
        new.to_owned()
    } else {
        format!("\"{new}\"")
    }
}

/// Colons outside `${…}`.
fn colons(s: &str) -> usize {
    let mut depth = 0;
    let mut n = 0;
    let b = s.as_bytes();
    for (k, &c) in b.iter().enumerate() {
        match c {
            b'{' if k > 0 && b[k - 1] == b'$' => depth += 1,
            b'}' if depth > 0 => depth -= 1,
            b':' if depth == 0 => n += 1,
            _ => {}
        }
    }
    n
}

/// Whether a compose healthcheck checks anything.
fn health_test(h: Option<&Value>) -> bool {
    let Some(Value::Object(m)) = h else { return false };
    if m.get("disable").and_then(Value::as_bool) == Some(true) {
        return false;
    }
    match m.get("test") {
        Some(Value::Array(a)) => a.first().and_then(Value::as_str) != Some("NONE"),
        Some(Value::String(s)) => !s.is_empty(),
        _ => false,
    }
}

fn timing(h: &Value) -> Timing {
    let s = |k: &str| h.get(k).and_then(Value::as_str).map(str::to_owned);
    Timing {
        interval: s("interval"),
        timeout: s("timeout"),
        retries: h.get("retries").and_then(Value::as_u64).map(|r| r as u32),
        start_period: s("start_period"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::mounts::{leading_variable, split_volume};
    use super::*;

    /// `transform` of `text` as service `svc`, the project holding `files`.
    fn run(
        svc: &str,
        text: &str,
        files: &[(&str, Existing)],
        exposure: Option<Exposure>,
    ) -> Result<Output, Diagnostic> {
        run_on(svc, text, files, exposure, None)
    }

    /// `run` on a node with the LAN address `lan_ip`.
    fn run_on(
        svc: &str,
        text: &str,
        files: &[(&str, Existing)],
        exposure: Option<Exposure>,
        lan_ip: Option<std::net::IpAddr>,
    ) -> Result<Output, Diagnostic> {
        let files: BTreeMap<String, Existing> =
            files.iter().map(|(p, e)| ((*p).to_owned(), *e)).collect();
        let exists = |rel: &str| files.get(rel).copied().unwrap_or(Existing::Missing);
        let read = |_: &str| None;
        let env = BTreeMap::from([("LIB".to_owned(), "./library".to_owned())]);
        let homelab = BTreeSet::from(["broker".to_owned()]);
        transform(&Input {
            service: svc,
            file: "p/compose.yaml",
            text,
            exposure,
            lan_ip,
            exists: &exists,
            read: &read,
            env_values: &env,
            homelab_services: &homelab,
        })
    }

    #[test]
    fn host_folders_under_one_variable_keep_their_layout_below_what_they_share() {
        let text = "services:\n  app:\n    image: x\n    volumes:\n      - ${V:-/mnt/v}/app/db:/db\n      - ${V:-/mnt/v}/app/files/up:/up\n      - ${LIB}:/library\n      - ${W}:/var/www\n      - /srv/big/media:/media\n";
        let out = run("app", text, &[], None).unwrap();
        assert_eq!(
            out.data,
            BTreeSet::from(["db", "files/up", "library", "www", "media"].map(String::from))
        );
        assert!(out.text.contains("      - \"{{ data_dir }}/files/up:/up\"\n"), "{}", out.text);
        assert!(out.variables.is_empty(), "{:?}", out.variables);
        let lone = run(
            "app",
            "services:\n  app:\n    image: x\n    volumes:\n      - ${V:-/mnt/v}/app/db:/db\n",
            &[],
            None,
        )
        .unwrap();
        assert_eq!(lone.data, BTreeSet::from(["db".to_owned()]));
    }

    #[test]
    fn a_writable_relative_bind_is_data_unless_it_ships_config() {
        let text = "services:\n  app:\n    image: x\n    volumes:\n      - ./data/db:/d\n      - ./conf:/c\n      - ./app.ini:/app.ini:z\n      - ./ro:/ro:ro\n      - named:/n\n";
        let files = [
            ("conf", Existing::Folder { has_files: true }),
            ("app.ini", Existing::File),
            ("ro", Existing::Folder { has_files: false }),
            ("data/db", Existing::Folder { has_files: false }),
        ];
        let out = run("app", text, &files, None).unwrap();
        for line in [
            "      - \"{{ data_dir }}/data/db:/d\"\n",
            "      - ./conf:/c:ro\n",
            "      - ./app.ini:/app.ini:ro,z\n",
            "      - ./ro:/ro:ro\n",
            "      - named:/n\n",
        ] {
            assert!(out.text.contains(line), "no {line:?} in\n{}", out.text);
        }
        assert_eq!(out.ship, BTreeSet::from(["conf", "app.ini", "ro"].map(String::from)));
        let missing = run(
            "app",
            "services:\n  app:\n    image: x\n    volumes:\n      - ./gone:/g:ro\n",
            &[],
            None,
        )
        .unwrap_err();
        assert_eq!((missing.line, missing.field.as_str()), (Some(5), "services.app.volumes[0]"));
    }

    #[test]
    fn names_and_restart_follow_the_rules_and_one_shots_keep_theirs() {
        let text = "services:\n  app:\n    image: x\n    container_name: my-app\n    restart: always\n    depends_on:\n      init:\n        condition: service_completed_successfully\n  init:\n    image: x\n    restart: \"no\"\n  app_db:\n    image: postgres:16\n    volumes:\n      - pg:/var/lib/postgresql/data\n";
        let out = run("app", text, &[], None).unwrap();
        for line in [
            "    container_name: app\n    restart: unless-stopped\n",
            "  init:\n    container_name: app-init\n    image: x\n    restart: \"no\"\n",
            "  app_db:\n    container_name: app_db\n    restart: unless-stopped\n",
            "      - \"{{ data_dir }}/pg:/var/lib/postgresql/data\"\n",
        ] {
            assert!(out.text.contains(line), "no {line:?} in\n{}", out.text);
        }
        assert_eq!(
            out.backups,
            BTreeMap::from([("app_db".to_owned(), BTreeSet::from(["pg".to_owned()]))])
        );
        assert!(out.containers.iter().any(|c| c.key == "init" && c.one_shot));
        assert_eq!(out.exposure, Some(Exposure::Internal));
    }

    /// Regression (found by the import corpus): n8n's `- POSTGRES_PASSWORD` takes its value
    /// from the env file, yet import neither declared it nor said to set it on the node, so
    /// the database ran with no password.
    #[test]
    fn names_the_environment_lists_without_a_value_are_declared() {
        let text = "services:\n  db:\n    image: postgres:16\n    environment:\n      - POSTGRES_USER\n      - POSTGRES_PASSWORD\n      - POSTGRES_DB=n8n\n  app:\n    image: x\n    environment:\n      TZ:\n      LEVEL: info\n";
        let out = run("n8n", text, &[], None).unwrap();
        let vars: Vec<(&str, bool, bool)> =
            out.variables.iter().map(|v| (v.name.as_str(), v.secret, v.required)).collect();
        assert_eq!(
            vars,
            [
                ("POSTGRES_PASSWORD", true, true),
                ("POSTGRES_USER", false, true),
                ("TZ", false, true)
            ]
        );
    }

    #[test]
    fn secrets_are_replaced_by_their_variable_and_declared() {
        let text = "services:\n  app:\n    image: x\n    environment:\n      DB_PASSWORD: hunter2\n      API_KEY: ${API_KEY:-abc}\n      PLAIN: ${PLAIN:-x}\n      NEEDED: ${NEEDED}\n";
        let out = run("app", text, &[], None).unwrap();
        assert!(
            out.text.contains("      DB_PASSWORD: ${DB_PASSWORD}\n      API_KEY: ${API_KEY}\n"),
            "{}",
            out.text
        );
        let vars: Vec<(&str, bool, bool)> =
            out.variables.iter().map(|v| (v.name.as_str(), v.secret, v.required)).collect();
        assert_eq!(
            vars,
            [("API_KEY", true, true), ("DB_PASSWORD", true, true), ("NEEDED", false, true),]
        );
        // Issue 20: `${PLAIN:-x}` needs no declaration; its default stays as written.
        assert!(out.text.contains("      PLAIN: ${PLAIN:-x}\n"), "{}", out.text);
        assert!(!out.text.contains("hunter2") && !out.text.contains("abc"));
    }

    #[test]
    fn lan_ports_get_an_address_and_internal_ones_are_refused() {
        let text = "services:\n  app:\n    image: x\n    ports:\n      - 8080:80\n      - \"127.0.0.1:53:53/udp\"\n      - 9000\n      - target: 443\n        published: 8443\n";
        let out = run("app", text, &[], None).unwrap();
        assert_eq!(out.exposure, Some(Exposure::Lan));
        assert!(
            out.text.contains(
                "      - 0.0.0.0:8080:80\n      - \"127.0.0.1:53:53/udp\"\n      - 9000\n"
            ),
            "{}",
            out.text
        );
        assert!(
            out.text.contains("        published: 8443\n        host_ip: 0.0.0.0\n"),
            "{}",
            out.text
        );
        let tailnet = run("app", text, &[], Some(Exposure::Tailnet)).unwrap();
        assert!(tailnet.text.contains("      - 8080:80\n"));
        let e = run("app", text, &[], Some(Exposure::Internal)).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (Some(5), "services.app.ports[0]"));
    }

    /// Issue 20: with the node's LAN address known, `lan` ports publish on `{{ lan_ip }}`, and
    /// a published `0.0.0.0` (which validate refuses there) is rewritten too.
    #[test]
    fn lan_ports_publish_on_the_nodes_lan_address_when_it_has_one() {
        let text = "services:\n  app:\n    image: x\n    ports:\n      - 8080:80\n      - \"0.0.0.0:8443:443\"\n      - \"127.0.0.1:53:53/udp\"\n      - target: 9000\n        published: 9000\n      - target: 9001\n        published: 9001\n        host_ip: 0.0.0.0\n";
        let v4 = run_on("app", text, &[], None, Some("192.168.1.20".parse().unwrap())).unwrap();
        for line in [
            "      - \"{{ lan_ip }}:8080:80\"\n",
            "      - \"{{ lan_ip }}:8443:443\"\n",
            "      - \"127.0.0.1:53:53/udp\"\n",
            "        published: 9000\n        host_ip: \"{{ lan_ip }}\"\n",
            "        published: 9001\n        host_ip: \"{{ lan_ip }}\"\n",
        ] {
            assert!(v4.text.contains(line), "no {line:?} in\n{}", v4.text);
        }
        assert!(!v4.text.contains("0.0.0.0"), "{}", v4.text);
        assert!(v4.edits.iter().all(|e| !e.why.contains("until")), "{:?}", v4.edits);
        let v6 = run_on("app", text, &[], None, Some("fd00::20".parse().unwrap())).unwrap();
        assert!(v6.text.contains("      - \"[{{ lan_ip }}]:8080:80\"\n"), "{}", v6.text);
        // Without a LAN address, an explicit `0.0.0.0` stays as written.
        let none = run("app", text, &[], None).unwrap();
        assert!(none.text.contains("      - \"0.0.0.0:8443:443\"\n"), "{}", none.text);
        assert!(none.text.contains("      - 0.0.0.0:8080:80\n"), "{}", none.text);
    }

    #[test]
    fn keys_shared_through_an_anchor_are_edited_once_and_overridden_per_service() {
        let text = "x-common: &common\n  image: x\n  restart: always\n  volumes:\n    - ./data:/data\nservices:\n  a:\n    <<: *common\n  b:\n    <<: *common\n";
        let out = run("app", text, &[], None).unwrap();
        assert!(
            out.text
                .contains("  restart: always\n  volumes:\n    - \"{{ data_dir }}/data:/data\"\n"),
            "{}",
            out.text
        );
        assert!(
            out.text.contains(
                "  a:\n    container_name: app-a\n    restart: unless-stopped\n    <<: *common\n"
            ),
            "{}",
            out.text
        );
        assert!(
            out.text.contains(
                "  b:\n    container_name: app-b\n    restart: unless-stopped\n    <<: *common\n"
            ),
            "{}",
            out.text
        );
    }

    #[test]
    fn depends_on_another_homelab_service_moves_to_the_contract() {
        let text =
            "services:\n  app:\n    image: x\n    depends_on:\n      - broker\n    ports: []\n";
        let out = run("app", text, &[], None).unwrap();
        assert_eq!(out.dependencies, BTreeSet::from(["broker".to_owned()]));
        assert!(
            !out.text.contains("depends_on") && out.text.contains("    ports: []\n"),
            "{}",
            out.text
        );
        let e =
            run("app", "services:\n  app:\n    image: x\n    depends_on: [nowhere]\n", &[], None)
                .unwrap_err();
        assert!(
            e.message.contains("`nowhere` is neither a service of the project nor of the homelab"),
            "{e}"
        );
    }

    /// Whatever the file, import answers with an output or a located problem, never a panic.
    #[test]
    fn mutated_compose_files_never_panic() {
        let texts = [
            include_str!("../../tests/fixtures/import/stack/docker-compose.yml"),
            include_str!("../../tests/fixtures/import/gallery/compose.yaml"),
            include_str!("../../tests/fixtures/import/proxy/docker-compose.yml"),
        ];
        let files = [
            ("conf", Existing::Folder { has_files: true }),
            ("html", Existing::Folder { has_files: true }),
            ("nginx.conf", Existing::File),
        ];
        for text in texts {
            let lines: Vec<&str> = text.lines().collect();
            for skip in 0..lines.len() {
                let mut l = lines.clone();
                l.remove(skip);
                let _ = run("app", &l.join("\n"), &files, None);
                let mut l = lines.clone();
                l[skip] = "    x: {";
                let _ = run("app", &l.join("\n"), &files, None);
            }
            for cut in (0..text.len()).filter(|c| text.is_char_boundary(*c)).step_by(3) {
                let _ = run("app", &text[..cut], &files, None);
                let _ =
                    run("app", &text.replace("\n", "\r\n")[..cut], &files, Some(Exposure::Public));
            }
        }
    }

    #[test]
    fn template_tokens_are_escaped_each_once() {
        assert_eq!(
            escape_template("tag: \"{{.Name}}/{{.ID}}\""),
            "tag: \"{{ '{{' }}.Name}}/{{ '{{' }}.ID}}\""
        );
        assert_eq!(escape_template("a: {%x {#y {z}"), "a: {{ '{%' }}x {{ '{#' }}y {z}");
        assert_eq!(escape_template("plain { and }"), "plain { and }");
        let env = minijinja::Environment::new();
        let line = "tag: \"{{.Name}}/{{.ID}} {% raw %} {# c #}\"";
        assert_eq!(env.render_str(&escape_template(line), ()).unwrap(), line);
    }

    #[test]
    fn volumes_split_outside_variables() {
        assert_eq!(
            split_volume("${X:-/mnt/v}/app/db:/var/lib/db"),
            ["${X:-/mnt/v}/app/db", "/var/lib/db"]
        );
        assert_eq!(split_volume("./a:/b:ro,z"), ["./a", "/b", "ro,z"]);
        assert_eq!(split_volume("/a:/b:c:d"), ["/a", "/b", "c:d"]);
        assert_eq!(colons("${P:-80}:80"), 1);
        assert_eq!(colons("0.0.0.0:${P:-80}:80"), 2);
    }

    #[test]
    fn leading_variables_and_their_defaults() {
        assert_eq!(leading_variable("${A:-/mnt/x}/app/db"), Some(("A", Some("/mnt/x"), "/app/db")));
        assert_eq!(leading_variable("${A}"), Some(("A", None, "")));
        assert_eq!(leading_variable("$A/x"), Some(("A", None, "/x")));
        assert_eq!(leading_variable("./x"), None);
    }

    #[test]
    fn secret_lines_keep_their_spelling() {
        assert_eq!(
            secret_line("      DB_PASSWORD: example", "DB_PASSWORD").as_deref(),
            Some("      DB_PASSWORD: ${DB_PASSWORD}")
        );
        assert_eq!(
            secret_line("  - API_TOKEN=abc", "API_TOKEN").as_deref(),
            Some("  - API_TOKEN=${API_TOKEN}")
        );
        assert_eq!(
            secret_line("  - \"API_TOKEN=abc\"", "API_TOKEN").as_deref(),
            Some("  - \"API_TOKEN=${API_TOKEN}\"")
        );
    }
}
