//! The compose rules, on the compose files as rendered for one instance: container names follow
//! the owner's naming rule, `restart` follows the contract's `restart_policy` (one-shot init
//! containers aside), the Zigbee serial port is the contract's, every path the files name is
//! shipped or in a runtime folder of the service (`paths`), every variable Compose interpolates
//! is declared (`variables`), and published ports fit the exposure. What the instance takes on
//! its node (ports, container names, writable data paths) is returned as a `Footprint` for the
//! node-wide `conflicts` check.
//!
//! Pure: it takes the rendered text and never renders itself (rendering is above `model`;
//! `crate::check` renders each instance and calls this). No IO here.

mod extends;
mod hosts;
mod paths;
mod resolved;
mod variables;

pub use paths::{normalize, strings};
pub use resolved::{on_node, OnNode, ResolvedService};
pub use variables::unquote;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

use super::super::diag::Diagnostics;
use super::super::load::{parse_yaml, OVERRIDE_FILE};
use super::super::raw::{self, line};
use super::super::{Exposure, Instance, Service};
use super::{is_tcp_endpoint, literal_assignment, Footprint, Located, Published, RESTART_POLICIES};

/// Which of an instance's compose files a rendered text is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComposeFile {
    /// `services/<svc>/docker-compose.yml`.
    Service,
    /// `hosts/<node>/runtime/<svc>/docker-compose.override.yml`.
    Override,
}

/// One compose file of an instance, as rendered.
pub struct Rendered<'a> {
    pub kind: ComposeFile,
    /// The template's path in the repository, as diagnostics show it.
    pub path: &'a str,
    pub text: &'a str,
}

/// What the node and the repository say about the instance, beyond its service.
pub struct Context<'a> {
    /// The node's runtime root: `{{ root }}` in the templates.
    pub root: &'a str,
    /// The exposure the node gives the service.
    pub exposure: Exposure,
    /// The node's LAN address, when the topology gives one: a `lan` service publishes on it.
    pub lan_ip: Option<std::net::IpAddr>,
    /// Every file and folder shipped with the service, relative to its folder with `/`
    /// separators: what is under `services/<svc>/` or `hosts/<node>/runtime/<svc>/`, except
    /// `README.md`, `env.example` and `service.yaml`.
    pub shipped: &'a BTreeSet<String>,
    /// The shipped text files as rendered, by path in the release: (path in the repository,
    /// text). `extends.file` is read from here.
    pub texts: &'a BTreeMap<String, (String, String)>,
    /// Names a container may reach that no container of the project answers to: the ids of
    /// the homelab's nodes and services (the tailnet and other projects answer them).
    pub known: &'a BTreeSet<String>,
}

/// The compose file's path in the release, whatever its name in the repository.
const RELEASE_COMPOSE: &str = "docker-compose.yml";

/// What the services of one file inherit through `extends`, by key.
type Inherited<'a> = BTreeMap<&'a str, Vec<extends::Ancestor<'a>>>;

/// Checks the rendered compose files of `inst` of `svc`; returns what the instance takes on
/// its node.
pub fn check(
    svc: &Service,
    inst: &Instance,
    ctx: &Context,
    files: &[Rendered],
    d: &mut Diagnostics,
) -> Footprint {
    let mut parsed = Vec::new();
    let mut resolved = Vec::new();
    for f in files {
        match parse_yaml::<raw::Compose>(Path::new(f.path), f.text) {
            Ok(c) => {
                // The rules judge the file as Compose will run it, as far as the repository
                // knows its variables; a resolved text that no longer parses (a value that is
                // not YAML-safe) is judged as written.
                let r = variables::resolve(svc, f.text);
                let binds = bind_source_lines(&c);
                // As written: the plan reads the network's name from the text the node gets,
                // which Compose resolves there, not from the repository's idea of a variable.
                let networks: Vec<_> = external_of(&c)
                    .into_iter()
                    .map(|(key, name, l)| {
                        let l = external_line(f.text, &key).or(l);
                        (key, name, l)
                    })
                    .collect();
                let c = if r.lines.is_empty() {
                    c
                } else {
                    parse_yaml::<raw::Compose>(Path::new(f.path), &r.text).unwrap_or(c)
                };
                parsed.push((f, c));
                resolved.push((r, binds, networks));
            }
            Err(mut e) => {
                e.message = format!("rendered for `{inst}`: {}", e.message);
                d.push(e);
            }
        }
    }
    project_name(svc, &parsed, d);
    hosts::check(svc, &parsed.iter().map(|(f, _)| *f).collect::<Vec<_>>(), ctx.known, d);
    let base = parsed.iter().find(|(f, _)| f.kind == ComposeFile::Service);
    let multi = base.is_some_and(|(_, c)| c.services.len() > 1);
    let release = |f: &Rendered| match f.kind {
        ComposeFile::Service => RELEASE_COMPOSE,
        ComposeFile::Override => OVERRIDE_FILE,
    };
    // Every compose file `extends` may reach: the instance's own, and the shipped files named
    // by `extends.file`.
    let mut docs: BTreeMap<String, extends::Doc> = parsed
        .iter()
        .map(|(f, c)| (release(f).to_owned(), extends::Doc { display: f.path, compose: c }))
        .collect();
    let loaded = extends::load(&docs, ctx.texts, d);
    for (r, (display, c)) in &loaded {
        docs.insert(r.clone(), extends::Doc { display, compose: c });
    }
    let inherited: Vec<Inherited> = parsed
        .iter()
        .map(|(f, c)| {
            let r = release(f);
            c.services.keys().map(|k| (k.as_str(), extends::ancestors(&docs, r, k, d))).collect()
        })
        .collect();
    let files: Vec<(&raw::Compose, &Inherited)> =
        parsed.iter().map(|(_, c)| c).zip(&inherited).collect();
    let inits = init_containers(svc.name.as_str(), &files);
    let host_network: BTreeSet<&str> = parsed
        .iter()
        .zip(&inherited)
        .flat_map(|((_, c), inh)| c.services.iter().map(move |(k, cs)| (k, cs, &inh[k.as_str()])))
        .filter(|(_, cs, anc)| {
            let mode = cs.value.network_mode.as_ref().map(|m| m.value.as_str());
            let mode = mode.or_else(|| {
                anc.iter().find_map(|a| a.service.network_mode.as_ref().map(|m| m.value.as_str()))
            });
            mode == Some("host")
        })
        .map(|(k, _, _)| k.as_str())
        .collect();
    let mut fp = Footprint::default();
    for (((f, c), inh), (r, binds, networks)) in parsed.iter().zip(&inherited).zip(&resolved) {
        // What is found on a line whose variables were resolved says which, and to what.
        let mut found = Diagnostics::default();
        let d_outer = &mut *d;
        let d = &mut found;
        names_and_restart(svc, f, c, multi, &inits, inh, d, &mut fp);
        paths::check(svc, inst, ctx, f.path, c, inh, d, &mut fp);
        // Declarations are judged on the text as written.
        variables::check(svc, f.path, f.text, binds, d_outer);
        zigbee(svc, f, d);
        for (key, name, l) in networks {
            let field = format!("networks.{key}.external");
            if crate::model::network_name_ok(name) {
                let at = Located { file: f.path.to_owned(), line: *l, field };
                fp.external_networks.push((name.clone(), at));
            } else {
                d.err(
                    "network",
                    f.path,
                    *l,
                    field,
                    format!(
                        "expected the name of the external network written out (a letter or digit, then letters, digits, `_`, `.` or `-`; at most 64), found `{}`",
                        crate::quote::cut(name)
                    ),
                    "write the name out: homelab creates the network on the node before the service comes up, and a service on the node declares it (`networks` in its service.yaml)",
                );
            }
        }
        for (key, cs) in &c.services {
            // Published ports are discarded on the host network: the container has no ports
            // of its own there.
            if host_network.contains(key.as_str()) {
                continue;
            }
            // Its own ports, then those it inherits (Compose appends them), each located in
            // the file that writes it.
            let own = cs.value.ports.iter().map(|p| (f.path, key.as_str(), p));
            let theirs = inh[key.as_str()]
                .iter()
                .flat_map(|a| a.service.ports.iter().map(|p| (a.display, a.key, p)));
            let mut n: BTreeMap<(&str, &str), usize> = BTreeMap::new();
            for (file, k, p) in own.chain(theirs) {
                let i = n.entry((file, k)).or_default();
                let at = Located {
                    file: file.to_owned(),
                    line: line(p),
                    field: format!("services.{k}.ports[{i}]"),
                };
                *i += 1;
                if let Some(p) = published(&p.value, at) {
                    exposure(inst, ctx.exposure, ctx.lan_ip, &p, d);
                    fp.ports.push(p);
                }
            }
        }
        for mut diag in found.into_sorted() {
            if diag.file == f.path {
                if let Some(note) = r.note(diag.line) {
                    diag.message.push_str(&note);
                }
            }
            d_outer.push(diag);
        }
    }
    fp
}

/// The lines of bind mounts whose source is written with a variable: there, the fix for an
/// undeclared variable is `{{ data_dir }}`, not a declaration.
fn bind_source_lines(c: &raw::Compose) -> BTreeSet<u64> {
    let mut out = BTreeSet::new();
    for cs in c.services.values() {
        for v in &cs.value.volumes {
            let source = match &v.value {
                Value::String(s) => s.split(':').next().map(str::to_owned),
                Value::Object(m) => m.get("source").and_then(Value::as_str).map(str::to_owned),
                _ => None,
            };
            if source.is_some_and(|s| s.contains('$')) {
                out.extend(line(v));
            }
        }
    }
    out
}

/// A top-level `name:` is replaced by `-p <svc>`: the project, and with it the names of its
/// volumes and networks (`<project>_<name>`), follow the service. Not a problem, but never
/// silent: a project started under its own name keeps its data in volumes of that name.
fn project_name(svc: &Service, parsed: &[(&Rendered, raw::Compose)], d: &mut Diagnostics) {
    let name = svc.name.as_str();
    for (f, c) in parsed {
        let Some(n) = c.name.as_ref().filter(|n| n.value != name) else { continue };
        d.note(
            "compose-name",
            f.path,
            line(n),
            "name",
            format!("the project is named `{name}` on the node, not `{}`: homelab runs `docker compose -p {name}`, which replaces `name:`, so named volumes and networks are `{name}_<key>`, not `{}_<key>`", n.value, n.value),
            format!("remove `name:` (or write `name: {name}`); data a project kept under `{}` stays in volumes `{}_<key>`: mount them with `external: true` and `name: {}_<key>` to keep it", n.value, n.value, n.value),
        );
    }
}

/// The variables `text` (a compose file) interpolates with no default (`${VAR}`, `$VAR`,
/// `${VAR:?message}`): Compose runs them with an empty string when the node's env file does not
/// set them.
pub fn interpolated_without_default(text: &str) -> BTreeSet<String> {
    variables::without_default(text)
}

/// The compose keys of the one-shot containers of an instance of `svc`, from the text files
/// of its release as rendered (path in the release → (path shown, text)): its compose file and
/// override, and the files their `extends` reach. A container that ran once and exited 0 is
/// their normal state, which `plan` must not take for drift. A text that does not parse adds
/// none (validation reports it).
pub fn one_shot(svc: &str, files: &BTreeMap<String, (String, String)>) -> BTreeSet<String> {
    let parsed: Vec<(&str, raw::Compose)> = [RELEASE_COMPOSE, OVERRIDE_FILE]
        .into_iter()
        .filter_map(|r| {
            let (display, text) = files.get(r)?;
            Some((r, parse_yaml::<raw::Compose>(Path::new(display), text).ok()?))
        })
        .collect();
    let mut docs: BTreeMap<String, extends::Doc> = parsed
        .iter()
        .map(|(r, c)| ((*r).to_owned(), extends::Doc { display: r, compose: c }))
        .collect();
    // Problems of the files `extends` reaches are validation's to report.
    let mut ignored = Diagnostics::default();
    let loaded = extends::load(&docs, files, &mut ignored);
    for (r, (display, c)) in &loaded {
        docs.insert(r.clone(), extends::Doc { display, compose: c });
    }
    let inherited: Vec<Inherited> = parsed
        .iter()
        .map(|(r, c)| {
            c.services
                .keys()
                .map(|k| (k.as_str(), extends::ancestors(&docs, r, k, &mut ignored)))
                .collect()
        })
        .collect();
    let files: Vec<(&raw::Compose, &Inherited)> =
        parsed.iter().map(|(_, c)| c).zip(&inherited).collect();
    init_containers(svc, &files)
}

/// The networks `c` marks `external: true` (or `external: {name: …}`, the older form), by
/// key: the name Docker knows it by (`name:`, else the older form's, else the key) and the line
/// of its entry.
fn external_of(c: &raw::Compose) -> Vec<(String, String, Option<u64>)> {
    let mut out = Vec::new();
    for (key, n) in &c.networks {
        let name = match n.value.get("external") {
            Some(Value::Bool(true)) => n.value.get("name").and_then(Value::as_str),
            Some(Value::Object(e)) => n
                .value
                .get("name")
                .and_then(Value::as_str)
                .or_else(|| e.get("name").and_then(Value::as_str)),
            _ => continue,
        };
        out.push((key.clone(), name.unwrap_or(key).to_owned(), line(n)));
    }
    out
}

/// The line (1-based) of `external:` in the top-level network `key` of a compose text in block
/// style: what a problem with it points at (the parser locates the whole entry).
fn external_line(text: &str, key: &str) -> Option<u64> {
    let indent = |l: &str| l.len() - l.trim_start().len();
    let bare = |l: &str| l.split(" #").next().unwrap_or(l).trim_end().to_owned();
    let lines: Vec<&str> = text.lines().collect();
    let top = lines.iter().position(|l| bare(l) == "networks:")?;
    let mut entry: Option<usize> = None;
    for (i, l) in lines.iter().enumerate().skip(top + 1) {
        if l.trim().is_empty() || l.trim_start().starts_with('#') {
            continue;
        }
        if indent(l) == 0 {
            break;
        }
        let t = l.trim_start();
        match entry {
            None => {
                let name = t.strip_suffix(':').or_else(|| t.split_once(": ").map(|(k, _)| k));
                let name = name.map(|k| k.trim_matches(|c| c == '"' || c == '\''));
                if name == Some(key) {
                    entry = Some(indent(l));
                }
            }
            Some(at) if indent(l) <= at => break,
            Some(_) if t.starts_with("external:") => return Some(i as u64 + 1),
            Some(_) => {}
        }
    }
    None
}

/// The names of the external networks of an instance's rendered compose file and override
/// that Docker accepts as written (the others are refused by validation): what the node must
/// have before the service comes up. Sorted, once each; a text that does not parse adds none.
pub fn external_networks(texts: &[&str]) -> Vec<String> {
    let mut out = BTreeSet::new();
    // Parsed only when it may have one: the plan asks this of every change it makes.
    for t in texts.iter().filter(|t| t.contains("external")) {
        let Ok(c) = parse_yaml::<raw::Compose>(Path::new("docker-compose.yml"), t) else {
            continue;
        };
        for (_, name, _) in external_of(&c) {
            if crate::model::network_name_ok(&name) {
                out.insert(name);
            }
        }
    }
    out.into_iter().collect()
}

/// Whether a restart policy lets a container stay stopped once its job is done.
fn stops_when_done(restart: &str) -> bool {
    restart == "no" || restart == "on-failure" || restart.starts_with("on-failure:")
}

/// The one-shot containers of a project, which run once and stop, so the contract's restart
/// policy is not theirs: a compose service another one waits for with
/// `condition: service_completed_successfully` (an init container), and one whose own
/// `restart` is `no` or `on-failure` that is not the service's main container (named like it,
/// or the only one) and that no container waits for as running (`service_started`,
/// `service_healthy`, or the list form of `depends_on`): a job nobody keeps up, such as an
/// import run after the others. Forcing `unless-stopped` on it would run the job again after
/// every successful exit.
fn init_containers(svc: &str, files: &[(&raw::Compose, &Inherited)]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut running: BTreeSet<&str> = BTreeSet::new();
    let mut restart: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut keys: BTreeSet<&str> = BTreeSet::new();
    for (c, inherited) in files {
        for (key, cs) in &c.services {
            keys.insert(key);
            let anc = inherited.get(key.as_str()).map(Vec::as_slice).unwrap_or_default();
            // Its own `restart`, else the nearest one it inherits through `extends`.
            let policy = cs
                .value
                .restart
                .as_ref()
                .or_else(|| anc.iter().find_map(|a| a.service.restart.as_ref()));
            if let Some(r) = policy {
                restart.entry(key).or_default().push(&r.value);
            }
            // Compose merges the `depends_on` of the bases into the service's, farthest first,
            // its own entries last (they win): whether each is waited for as completed.
            let mut deps: BTreeMap<&str, bool> = BTreeMap::new();
            let written = anc
                .iter()
                .rev()
                .map(|a| a.service.depends_on.as_ref())
                .chain([cs.value.depends_on.as_ref()])
                .flatten();
            for d in written {
                match &d.value {
                    Value::Object(m) => {
                        for (dep, v) in m {
                            let condition = v.get("condition").and_then(Value::as_str);
                            deps.insert(dep, condition == Some("service_completed_successfully"));
                        }
                    }
                    // The list form: `service_started`.
                    Value::Array(list) => {
                        deps.extend(list.iter().filter_map(Value::as_str).map(|dep| (dep, false)))
                    }
                    _ => {}
                }
            }
            for (dep, completed) in deps {
                if !completed {
                    // `service_started` (also the default) or `service_healthy`.
                    running.insert(dep);
                } else if dep != key.as_str() {
                    out.insert(dep.to_owned());
                }
            }
        }
    }
    for (key, policies) in &restart {
        let main = *key == svc || keys.len() == 1;
        if !main && !running.contains(key) && policies.iter().all(|p| stops_when_done(p)) {
            out.insert((*key).to_owned());
        }
    }
    out
}

/// The container name the owner's rule gives the compose service `key`: `<svc>` for the only
/// one, or for the one named like the service; the key itself for one that already carries the
/// service's name (`<svc>-db`, `<svc>_db`: `<svc>-<svc>-db` would say it twice); `<svc>-<key>`
/// for the others.
pub fn container_name(svc: &str, key: &str, multi: bool) -> String {
    let carries = key.strip_prefix(svc).is_some_and(|r| r.len() > 1 && r.starts_with(['-', '_']));
    if !multi || key == svc {
        svc.to_owned()
    } else if carries {
        key.to_owned()
    } else {
        format!("{svc}-{key}")
    }
}

/// Every variable `text` (a compose file) interpolates, in order, with the default of
/// `${VAR:-default}` / `${VAR-default}` where it has one; comments and `$$` left out.
pub fn variables_used(text: &str) -> Vec<(String, Option<String>)> {
    variables::used(text)
}

fn naming_fix(svc: &str, expected: &str, multi: bool, keys: &BTreeSet<&str>) -> String {
    if multi && keys.contains(svc) {
        format!("set `container_name: {expected}`: in a multi-container service the compose service `{svc}` is the container `{svc}` and every other one `{svc}-<key>`; the compose keys stay as written (containers find each other by them)")
    } else if multi {
        // No compose key is the service's name: saying "the compose service `<svc>`" would
        // name one that does not exist.
        format!("set `container_name: {expected}`: in a multi-container service every container is `{svc}-<key>`, except one whose compose key is `{svc}`, which is `{svc}` (no compose service here is named `{svc}`); the compose keys stay as written (containers find each other by them)")
    } else {
        format!("set `container_name: {expected}`: a one-container service's container is named like the service, whatever its compose key")
    }
}

/// A key of a compose service as found: its own, or inherited through `extends` (then located
/// in the file and service that write it).
struct Found<'a> {
    value: &'a raw::S<String>,
    file: &'a str,
    field: String,
    /// `Some(key)` when inherited from the service `key`.
    from: Option<&'a str>,
}

impl<'a> Found<'a> {
    /// `pick` of the service's own keys, else of the nearest ancestor that has it.
    fn of(
        own: &'a raw::ComposeService,
        file: &'a str,
        key: &str,
        anc: &'a [extends::Ancestor<'a>],
        name: &str,
        pick: impl Fn(&'a raw::ComposeService) -> Option<&'a raw::S<String>>,
    ) -> Option<Found<'a>> {
        if let Some(value) = pick(own) {
            return Some(Found {
                value,
                file,
                field: format!("services.{key}.{name}"),
                from: None,
            });
        }
        anc.iter().find_map(|a| {
            let value = pick(a.service)?;
            Some(Found {
                value,
                file: a.display,
                field: format!("services.{}.{name}", a.key),
                from: Some(a.key),
            })
        })
    }

    /// What a message adds when the key is inherited.
    fn via(&self, key: &str) -> String {
        self.from
            .map(|_| format!(" (inherited by `services.{key}` through `extends`)"))
            .unwrap_or_default()
    }
}

#[allow(clippy::too_many_arguments)]
fn names_and_restart(
    svc: &Service,
    f: &Rendered,
    c: &raw::Compose,
    multi: bool,
    inits: &BTreeSet<String>,
    inherited: &Inherited,
    d: &mut Diagnostics,
    fp: &mut Footprint,
) {
    let name = svc.name.as_str();
    let path = f.path;
    let is_override = f.kind == ComposeFile::Override;
    let keys: BTreeSet<&str> = c.services.keys().map(String::as_str).collect();
    // A restart policy the contract gets wrong is reported on the contract; comparing the
    // compose file with it would only repeat that problem.
    let restart_known = RESTART_POLICIES.contains(&svc.restart_policy.as_str());
    if !is_override && c.services.is_empty() {
        d.err(
            "container-name",
            path,
            None,
            "services",
            "expected at least one compose service, found none",
            format!("define the compose service `{name}`"),
        );
    }
    for (key, cs) in &c.services {
        let field = format!("services.{key}");
        let expected = container_name(name, key, multi);
        let anc = inherited.get(key.as_str()).map(Vec::as_slice).unwrap_or_default();
        let container =
            Found::of(&cs.value, path, key, anc, "container_name", |s| s.container_name.as_ref());
        match container {
            Some(c) => {
                fp.containers.push((
                    c.value.value.clone(),
                    Located {
                        file: c.file.to_owned(),
                        line: line(c.value),
                        field: c.field.clone(),
                    },
                ));
                if c.value.value != expected {
                    let fix = if is_override {
                        format!("an override may not rename the container: remove `container_name` or set it to `{expected}`")
                    } else {
                        let mut fix = naming_fix(name, &expected, multi, &keys);
                        // Renaming it would cut off whoever reaches it by the old name, unless
                        // that name stays an alias (the compose key already is one).
                        let old = c.value.value.as_str();
                        if old != key.as_str() {
                            if let Some(n) = reached_as(f.text, old, line(c.value)) {
                                let networks = cs.value.networks.as_ref().map(|n| &n.value);
                                let alias = alias_snippet(networks, old);
                                fix.push_str(&format!("; line {n} reaches this container as `{old}`: keep that name reachable by adding `{alias}` under `services.{key}` (on each network it joins), or write `{key}` there"));
                            }
                        }
                        fix
                    };
                    d.err(
                        "container-name",
                        c.file,
                        line(c.value),
                        c.field.clone(),
                        format!("expected `{expected}`, found `{}`{}", c.value.value, c.via(key)),
                        fix,
                    );
                }
            }
            None if !is_override => d.err(
                "container-name",
                path,
                line(cs),
                format!("{field}.container_name"),
                format!("expected `container_name: {expected}`, found none"),
                naming_fix(name, &expected, multi, &keys).replacen("set", "add", 1),
            ),
            None => {}
        }
        if !restart_known {
            continue;
        }
        let init = inits.contains(key);
        let policy = &svc.restart_policy;
        match Found::of(&cs.value, path, key, anc, "restart", |s| s.restart.as_ref()) {
            Some(r) if r.value.value == *policy || (init && stops_when_done(&r.value.value)) => {}
            None if is_override || init => {}
            Some(r) => d.err(
                "restart",
                r.file,
                line(r.value),
                r.field.clone(),
                format!(
                    "expected `{policy}` (the contract's restart_policy), found `{}`{}",
                    r.value.value,
                    r.via(key)
                ),
                if is_override {
                    "change restart_policy in service.yaml instead".to_owned()
                } else if stops_when_done(&r.value.value) {
                    format!("set `restart: {policy}`; only a one-shot container may stop for good: one that another container waits for with `depends_on: {{{key}: {{condition: service_completed_successfully}}}}`, or one with `restart: \"no\"` or `on-failure` that is not the service's main container and that no container waits for as started or healthy")
                } else {
                    format!("set `restart: {policy}` or change restart_policy in service.yaml")
                },
            ),
            None => d.err(
                "restart",
                path,
                line(cs),
                format!("{field}.restart"),
                format!("expected `restart: {policy}`, found none"),
                format!("add `restart: {policy}`"),
            ),
        }
    }
}

/// What a compose service writes to keep `old` reachable as a network alias on the networks
/// `networks` names (its `networks:`, a list or a map): `networks: {back: {aliases: [old]}}`,
/// or the default network's when it names none. A snippet with `default` alone would take a
/// container off the networks it joins, where its users reach it.
fn alias_snippet(networks: Option<&Value>, old: &str) -> String {
    let mut nets: Vec<&str> = match networks {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        Some(Value::Object(m)) => m.keys().map(String::as_str).collect(),
        _ => Vec::new(),
    };
    if nets.is_empty() {
        nets.push("default");
    }
    let items: Vec<String> = nets.iter().map(|n| format!("{n}: {{aliases: [{old}]}}")).collect();
    format!("networks: {{{}}}", items.join(", "))
}

/// The first line (1-based) of `text` other than `skip` that names `host` as a host name: in a
/// URL (`//host:`, `@host:`), an assignment (`HOST=host`) or a YAML value (`HOST: host`),
/// followed by a port, a path, a quote or the end.
pub fn reached_as(text: &str, host: &str, skip: Option<u64>) -> Option<u64> {
    for (n, l) in text.lines().enumerate() {
        let n = n as u64 + 1;
        let t = l.trim_start();
        // An image reference (`image: ollama/ollama`) names a repository, not a host.
        if Some(n) == skip || t.starts_with('#') || t.starts_with("image:") {
            continue;
        }
        for (at, _) in l.match_indices(host) {
            let before = &l[..at];
            let after = l[at + host.len()..].chars().next();
            let led = before.ends_with("//")
                || before.ends_with('@')
                || before.ends_with('=')
                || before.ends_with(": ")
                || before.ends_with(": \"");
            let ends = matches!(after, None | Some(':' | '/' | '"' | '\'' | ' ' | ','));
            if led && ends {
                return Some(n);
            }
        }
    }
    None
}

/// The Zigbee serial port is the contract's.
fn zigbee(svc: &Service, f: &Rendered, d: &mut Diagnostics) {
    // A Zigbee port the contract gets wrong is reported on the contract.
    let Some(z) = svc.zigbee.as_ref().filter(|z| is_tcp_endpoint(&z.port)) else { return };
    for (n, l) in f.text.lines().enumerate() {
        if let Some(v) = literal_assignment(l, "ZIGBEE2MQTT_CONFIG_SERIAL_PORT") {
            if v != z.port {
                d.err(
                    "zigbee",
                    f.path,
                    Some(n as u64 + 1),
                    "ZIGBEE2MQTT_CONFIG_SERIAL_PORT",
                    format!("expected `{}` (zigbee.port in service.yaml), found `{v}`", z.port),
                    "take the port from the contract",
                );
            }
        }
    }
}

/// A published port of `ports:`, short (`8080:80`, `127.0.0.1:53:53/udp`, `8000-8010:8000-8010`,
/// `[::1]:80:80`) or long (`{target, published, host_ip, protocol}`); `None` when the entry
/// publishes no fixed host port.
fn published(v: &Value, at: Located) -> Option<Published> {
    let (ip, host, protocol) = match v {
        Value::String(s) => {
            let (spec, protocol) = match s.rsplit_once('/') {
                Some((spec, p)) => (spec, p.to_owned()),
                None => (s.as_str(), "tcp".to_owned()),
            };
            let (ip, rest) = match spec.strip_prefix('[') {
                Some(r) => {
                    let (ip, rest) = r.split_once("]:")?;
                    (Some(ip.to_owned()), rest)
                }
                None => match spec.matches(':').count() {
                    2 => {
                        let (ip, rest) = spec.split_once(':')?;
                        (Some(ip.to_owned()), rest)
                    }
                    _ => (None, spec),
                },
            };
            let (host, _container) = rest.split_once(':')?;
            (ip, host.to_owned(), protocol)
        }
        Value::Object(m) => {
            let host = match m.get("published")? {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => return None,
            };
            let ip = m.get("host_ip").and_then(Value::as_str).map(str::to_owned);
            let protocol = m.get("protocol").and_then(Value::as_str).unwrap_or("tcp").to_owned();
            (ip, host, protocol)
        }
        _ => return None,
    };
    let (start, end) = match host.split_once('-') {
        Some((a, b)) => (a.parse().ok()?, b.parse().ok()?),
        None => {
            let p: u16 = host.parse().ok()?;
            (p, p)
        }
    };
    let host_ip = ip.filter(|ip| !ip.is_empty());
    Some(Published { host_ip, start, end, protocol: protocol.to_ascii_lowercase(), at })
}

/// An `internal` service publishes nothing; a `lan` one only on an address written out, so
/// publishing on every address of the node (tailnet and public interfaces too) is never the
/// unnoticed default: an explicit `0.0.0.0:` is a reviewed choice, unless the node has a LAN
/// address (`lan_ip`), which is then the one a `lan` service publishes on.
fn exposure(
    inst: &Instance,
    exposure: Exposure,
    lan_ip: Option<std::net::IpAddr>,
    p: &Published,
    d: &mut Diagnostics,
) {
    let (message, fix) = match (exposure, &p.host_ip, lan_ip) {
        (Exposure::Internal, _, _) => (
            format!("publishes host port {}, but `{}` has exposure `internal` on `{}`: an internal service publishes no port", p.shown(), inst.service, inst.node),
            "remove the published port (containers reach the service over a Docker network), or change the exposure in service.yaml and the host's services.yaml".to_owned(),
        ),
        (Exposure::Lan, None, None) => (
            format!("publishes host port {} on every address of the node (0.0.0.0), but `{}` has exposure `lan` on `{}`: a lan service publishes only on an explicit address", p.shown(), inst.service, inst.node),
            format!("give the node its `lan_address` in inventory/topology.yaml and write `\"{{{{ lan_ip }}}}:{}:<container port>\"`, or write `0.0.0.0:{}:<container port>` to publish on every address on purpose", p.range(), p.range()),
        ),
        (Exposure::Lan, ip, Some(lan)) if p.specific_ip().is_none() => {
            let written = match ip {
                Some(_) => "every address of the node",
                None => "every address of the node (no address written)",
            };
            let lan_ip = match lan {
                std::net::IpAddr::V4(_) => "{{ lan_ip }}",
                std::net::IpAddr::V6(_) => "[{{ lan_ip }}]",
            };
            (
                format!("publishes host port {} on {written}, but `{}` has exposure `lan` on `{}`, whose LAN address is {lan} (inventory/topology.yaml): a lan service publishes on the node's LAN address only", p.shown(), inst.service, inst.node),
                format!("write `\"{lan_ip}:{}:<container port>\"` (`host_ip: \"{{{{ lan_ip }}}}\"` in the long syntax): `lan_ip` renders as {lan} on `{}`", p.range(), inst.node),
            )
        }
        _ => return,
    };
    d.err("exposure-port", &p.at.file, p.at.line, p.at.field.clone(), message, fix);
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_external_network_is_located_at_its_external_key() {
        let text = "services:\n  a:\n    networks: [edge]\nnetworks:\n  other:\n    external: true\n  \"edge\":\n    name: proxy\n    external: true\nvolumes:\n  edge:\n    external: true\n";
        assert_eq!(super::external_line(text, "edge"), Some(9));
        assert_eq!(super::external_line(text, "other"), Some(6));
        assert_eq!(super::external_line(text, "missing"), None);
    }

    use super::{container_name, reached_as};

    /// Issue 20: on a node with a LAN address, a `lan` port on every address is refused with
    /// the fix `{{ lan_ip }}` (in brackets for an IPv6 address in the short syntax); an address
    /// written out passes, and without a LAN address `0.0.0.0` stays a choice.
    #[test]
    fn a_lan_port_on_every_address_is_refused_where_the_node_has_a_lan_address() {
        use super::super::super::{Exposure, Instance, NodeName, ServiceName};
        use super::super::{Located, Published};
        use super::Diagnostics;
        let inst = Instance {
            service: ServiceName::parse("web").unwrap(),
            node: NodeName::parse("alpha").unwrap(),
        };
        let port = |ip: Option<&str>| Published {
            host_ip: ip.map(str::to_owned),
            start: 80,
            end: 80,
            protocol: "tcp".to_owned(),
            at: Located { file: "f".to_owned(), line: Some(1), field: "p".to_owned() },
        };
        let judged = |ip: Option<&str>, lan: Option<&str>| {
            let mut d = Diagnostics::default();
            let lan = lan.map(|a| a.parse().unwrap());
            super::exposure(&inst, Exposure::Lan, lan, &port(ip), &mut d);
            d.into_sorted().into_iter().map(|d| d.fix).collect::<Vec<_>>()
        };
        let v4 = judged(Some("0.0.0.0"), Some("192.168.1.20"));
        assert_eq!(v4.len(), 1);
        assert!(v4[0].starts_with("write `\"{{ lan_ip }}:80:<container port>\"`"), "{}", v4[0]);
        let v6 = judged(None, Some("fd00::20"));
        assert!(v6[0].starts_with("write `\"[{{ lan_ip }}]:80:<container port>\"`"), "{}", v6[0]);
        assert_eq!(judged(Some("::"), Some("fd00::20")).len(), 1);
        assert!(judged(Some("192.168.1.20"), Some("192.168.1.20")).is_empty());
        assert!(judged(Some("127.0.0.1"), Some("192.168.1.20")).is_empty());
        assert!(judged(Some("0.0.0.0"), None).is_empty());
        assert_eq!(judged(None, None).len(), 1);
    }

    /// Issue 20: `n8n-n8n-db` and `matomo-matomo_db` said the service's name twice.
    #[test]
    fn a_key_that_carries_the_service_name_is_its_own_container_name() {
        assert_eq!(container_name("n8n", "n8n-db", true), "n8n-db");
        assert_eq!(container_name("matomo", "matomo_db", true), "matomo_db");
        assert_eq!(container_name("n8n", "n8n", true), "n8n");
        assert_eq!(container_name("n8n", "db", true), "n8n-db");
        assert_eq!(container_name("n8n", "n8nx", true), "n8n-n8nx", "a prefix, not a word");
        assert_eq!(container_name("n8n", "n8n-", true), "n8n-n8n-");
        assert_eq!(container_name("n8n", "n8n-db", false), "n8n");
    }

    #[test]
    fn a_container_is_reached_by_its_name_in_urls_and_values_not_in_images_or_keys() {
        let text = "services:\n  ollama:\n    image: ollama/ollama\n    container_name: ollama\n  webui:\n    environment:\n      OLLAMA_BASE_URL: http://ollama:11434\n";
        assert_eq!(reached_as(text, "ollama", Some(4)), Some(7));
        assert_eq!(reached_as("a: ollama-x\nb: x-ollama\n", "ollama", None), None);
        assert_eq!(reached_as("- DB_HOST=db\n", "db", None), Some(1));
        assert_eq!(reached_as("url: \"postgres://u@db:5432/x\"\n", "db", None), Some(1));
    }
}
