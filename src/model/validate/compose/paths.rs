//! Nothing silently left behind: every path a rendered compose file names (`env_file`,
//! `build.context` and its Dockerfile, `secrets.*.file`, `configs.*.file`, `include`,
//! `extends.file`, bind-mount sources) is shipped with the service, or sits in one of its
//! runtime folders (`<root>/config/<svc>/`, `<root>/data/<svc>/`, `<root>/logs/<svc>/`), or is a
//! host path its contract lists in `host_paths`. A relative bind mount lives in the release
//! folder, replaced on every update: read-only only.

use serde_json::Value;

use super::super::super::diag::Diagnostics;
use super::super::super::raw::{self, line};
use super::super::super::{Instance, Service};
use super::super::{Footprint, Located};
use super::Context;

/// Where a path the compose file names leads.
enum Place {
    /// Relative, and shipped with the service.
    Shipped,
    /// Relative, but no such file or folder is shipped: the path, normalized.
    Missing(String),
    /// Relative, and out of the service folder (`../x`).
    Escapes,
    /// Absolute, in a runtime folder of the service, or listed in `host_paths`.
    Allowed(String),
    /// Absolute (or `~`), elsewhere on the host.
    Outside,
}

struct Paths<'a> {
    svc: &'a Service,
    inst: &'a Instance,
    ctx: &'a Context<'a>,
    file: &'a str,
    /// The shipped paths named, for `Footprint::shipped_refs`.
    refs: std::cell::RefCell<std::collections::BTreeSet<String>>,
}

#[allow(clippy::too_many_arguments)]
pub(super) fn check(
    svc: &Service,
    inst: &Instance,
    ctx: &Context,
    file: &str,
    c: &raw::Compose,
    inherited: &super::Inherited,
    d: &mut Diagnostics,
    fp: &mut Footprint,
) {
    let p = Paths { svc, inst, ctx, file, refs: Default::default() };
    for (key, cs) in &c.services {
        let s = &cs.value;
        let field = format!("services.{key}");
        if let Some(e) = &s.env_file {
            for (i, path) in strings(&e.value, "path").into_iter().enumerate() {
                let f = if e.value.is_array() {
                    format!("{field}.env_file[{i}]")
                } else {
                    format!("{field}.env_file")
                };
                p.file_ref(&path, line(e), f, d);
            }
        }
        if let Some(b) = &s.build {
            build(&p, &b.value, line(b), &format!("{field}.build"), d);
        }
        if let Some(Value::Object(m)) = s.extends.as_ref().map(|e| &e.value) {
            if let Some(f) = m.get("file").and_then(Value::as_str) {
                p.file_ref(
                    f,
                    s.extends.as_ref().and_then(line),
                    format!("{field}.extends.file"),
                    d,
                );
            }
        }
        for (i, v) in s.volumes.iter().enumerate() {
            let Some((source, read_only)) = bind_mount(&v.value) else { continue };
            let at = Located {
                file: file.to_owned(),
                line: line(v),
                field: format!("{field}.volumes[{i}]"),
            };
            p.mount(&source, read_only, at, d, fp);
        }
        // Bind mounts it inherits through `extends` (Compose merges them by target: its own
        // win), each resolved against the folder of the file that writes it.
        let own: Vec<String> = s.volumes.iter().filter_map(|v| target(&v.value)).collect();
        for a in inherited.get(key.as_str()).into_iter().flatten() {
            for (i, v) in a.service.volumes.iter().enumerate() {
                if target(&v.value).is_some_and(|t| own.contains(&t)) {
                    continue;
                }
                let Some((source, read_only)) = bind_mount(&v.value) else { continue };
                let source = match (a.dir(), source.strip_prefix("./").unwrap_or(&source)) {
                    ("", _) => source.clone(),
                    (_, _) if source.starts_with(['/', '~']) => source.clone(),
                    (dir, rest) => format!("{dir}/{rest}"),
                };
                let at = Located {
                    file: a.display.to_owned(),
                    line: line(v),
                    field: format!("services.{}.volumes[{i}]", a.key),
                };
                p.mount(&source, read_only, at, d, fp);
            }
        }
    }
    for (kind, entries) in [("secrets", &c.secrets), ("configs", &c.configs)] {
        for (name, v) in entries {
            if let Some(f) = v.value.get("file").and_then(Value::as_str) {
                p.file_ref(f, line(v), format!("{kind}.{name}.file"), d);
            }
        }
    }
    for (i, inc) in c.include.iter().enumerate() {
        for path in strings(&inc.value, "path") {
            p.file_ref(&path, line(inc), format!("include[{i}]"), d);
        }
        if let Some(env) = inc.value.get("env_file") {
            for path in strings(env, "path") {
                p.file_ref(&path, line(inc), format!("include[{i}].env_file"), d);
            }
        }
    }
    fp.shipped_refs.extend(p.refs.into_inner());
}

/// The strings of a field Compose lets be a string, a list of strings, or a list (or map) of
/// objects naming the path in `key`.
pub fn strings(v: &Value, key: &str) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items.iter().flat_map(|i| strings(i, key)).collect(),
        Value::Object(m) => m.get(key).map(|p| strings(p, key)).unwrap_or_default(),
        _ => vec![],
    }
}

/// `build: <context>` or `build: {context, dockerfile}`: the context and its Dockerfile ship.
fn build(p: &Paths, v: &Value, l: Option<u64>, field: &str, d: &mut Diagnostics) {
    let (context, dockerfile) = match v {
        Value::String(s) => (s.as_str(), Some("Dockerfile")),
        Value::Object(m) => {
            let context = m.get("context").and_then(Value::as_str).unwrap_or(".");
            let dockerfile = if m.contains_key("dockerfile_inline") {
                None
            } else {
                Some(m.get("dockerfile").and_then(Value::as_str).unwrap_or("Dockerfile"))
            };
            (context, dockerfile)
        }
        _ => return,
    };
    // A Git URL is fetched by the builder, not shipped.
    if context.contains("://") || context.starts_with("git@") {
        return;
    }
    p.file_ref(context, l, format!("{field}.context"), d);
    let Some(dockerfile) = dockerfile else { return };
    let path = if dockerfile.starts_with('/') || context.starts_with('/') {
        dockerfile.to_owned()
    } else {
        format!("{}/{dockerfile}", context.trim_end_matches('/'))
    };
    // The context is reported already when it is not shipped.
    if matches!(p.place(context), Place::Shipped) || dockerfile.starts_with('/') {
        p.file_ref(&path, l, format!("{field}.dockerfile"), d);
    }
}

/// The host source of a bind mount and whether it is read-only; `None` for a named or anonymous
/// volume, a tmpfs or anything else that is not a host path.
pub(super) fn bind_mount(v: &Value) -> Option<(String, bool)> {
    match v {
        Value::String(s) => {
            let mut parts = s.splitn(3, ':');
            let source = parts.next()?;
            let _target = parts.next()?;
            let mode = parts.next().unwrap_or("");
            let is_path = source.starts_with(['.', '/', '~']);
            is_path.then(|| (source.to_owned(), mode.split(',').any(|m| m == "ro")))
        }
        Value::Object(m) => {
            (m.get("type").and_then(Value::as_str) == Some("bind")).then_some(())?;
            let source = m.get("source").and_then(Value::as_str)?;
            let ro = m.get("read_only").and_then(Value::as_bool).unwrap_or(false);
            Some((source.to_owned(), ro))
        }
        _ => None,
    }
}

/// The path inside the container a volume entry mounts at, short or long syntax.
fn target(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => s.split(':').nth(1).map(str::to_owned),
        Value::Object(m) => m.get("target").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

/// `path` with `.` and `..` resolved lexically; `None` when `..` climbs above the start.
pub fn normalize(path: &str) -> Option<Vec<&str>> {
    let mut out: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            p => out.push(p),
        }
    }
    Some(out)
}

/// An absolute `path` with `.` and `..` resolved lexically; `None` when `..` climbs above `/`.
pub(super) fn absolute(path: &str) -> Option<String> {
    normalize(path).map(|parts| format!("/{}", parts.join("/")))
}

/// Whether the absolute, normalized `abs` lies in a runtime folder of `svc` under `root`
/// (`config/<svc>`, `data/<svc>`, `logs/<svc>`) or under a path the contract declares in
/// `listed` (absolute, or relative to `root`). The repository's check and the node's one.
pub(super) fn declared(abs: &str, root: &str, svc: &str, listed: &[String]) -> bool {
    let root = root.trim_end_matches('/');
    let own =
        ["config", "data", "logs"].iter().any(|dir| under(abs, &format!("{root}/{dir}/{svc}")));
    own || listed.iter().any(|h| {
        let h = if h.starts_with('/') { h.clone() } else { format!("{root}/{h}") };
        absolute(&h).is_some_and(|p| under(abs, &p))
    })
}

/// Whether `path` is `dir` or inside it.
pub(super) fn under(path: &str, dir: &str) -> bool {
    let dir = dir.trim_end_matches('/');
    path == dir || path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

impl Paths<'_> {
    fn place(&self, path: &str) -> Place {
        let svc = self.svc.name.as_str();
        let root = self.ctx.root.trim_end_matches('/');
        if path.starts_with('~') {
            let listed = self.svc.host_paths.iter().any(|h| under(path, h));
            return if listed { Place::Allowed(path.to_owned()) } else { Place::Outside };
        }
        if path.starts_with('/') {
            let Some(abs) = absolute(path) else { return Place::Outside };
            let ok = declared(&abs, root, svc, &self.svc.host_paths);
            return if ok { Place::Allowed(abs) } else { Place::Outside };
        }
        match normalize(path) {
            None => Place::Escapes,
            Some(parts) if parts.is_empty() => Place::Shipped,
            Some(parts) => {
                let rel = parts.join("/");
                if self.ctx.shipped.contains(&rel) {
                    Place::Shipped
                } else {
                    Place::Missing(rel)
                }
            }
        }
    }

    /// Records `path` as named, when it is a shipped one.
    fn named(&self, path: &str) {
        if matches!(self.place(path), Place::Shipped) {
            if let Some(parts) = normalize(path) {
                self.refs.borrow_mut().insert(parts.join("/"));
            }
        }
    }

    /// A file or folder the compose file reads: it must reach the node.
    fn file_ref(&self, path: &str, l: Option<u64>, field: String, d: &mut Diagnostics) {
        self.named(path);
        let svc = self.svc.name.as_str();
        let node = &self.inst.node;
        let root = self.ctx.root.trim_end_matches('/');
        let (message, fix) = match self.place(path) {
            Place::Shipped | Place::Allowed(_) => return,
            // A variable validate could not resolve (no default, no value in env.example): the
            // path is only known on the node, so "not shipped" would name a file that cannot be.
            _ if path.contains('$') => (
                format!("`{path}` holds a variable whose value the repository does not know (no default, and no value in env.example), so what it names cannot be checked: only the node knows"),
                format!("write the path out: a file shipped under services/{svc}/, or `{{{{ config_dir }}}}/…` ({root}/config/{svc}/) for one kept on the node; or give the variable a value in env.example (or a default), which validate then checks"),
            ),
            // Hidden files never ship, whether or not the repository has one there.
            Place::Missing(rel) if rel.split('/').any(|p| p.starts_with('.')) => (
                format!("`{path}` is a hidden file (a path part starting with `.`), and hidden files never ship: services/{svc}/{rel} is left out of every release, whether or not it exists"),
                format!("keep host-local values in `{{{{ config_dir }}}}/{}` ({root}/config/{svc}/ on the node, where homelab reads the env file) and write `{{{{ config_dir }}}}/{}` here; or ship it under a name without a leading `.`", rel.rsplit('/').next().unwrap_or(&rel), rel.rsplit('/').next().unwrap_or(&rel)),
            ),
            Place::Missing(rel) => (
                format!("`{path}` is not shipped with the service: neither services/{svc}/{rel} nor hosts/{node}/runtime/{svc}/{rel} exists"),
                format!("add it to services/{svc}/ so it is reviewed and shipped with every release, or keep host-local files under `{{{{ config_dir }}}}` ({root}/config/{svc}/) and data under `{{{{ data_dir }}}}` ({root}/data/{svc}/)"),
            ),
            Place::Escapes => (
                format!("`{path}` leaves the service folder: only what is under services/{svc}/ and hosts/{node}/runtime/{svc}/ is shipped"),
                format!("move it into services/{svc}/ and name it relative to that folder"),
            ),
            Place::Outside => (
                format!("`{path}` is a host path outside {root}/config/{svc}/, {root}/data/{svc}/ and {root}/logs/{svc}/, and services/{svc}/service.yaml does not list it in `host_paths`"),
                format!("list `{path}` under `host_paths` in services/{svc}/service.yaml so the host path is reviewed, or use `{{{{ config_dir }}}}` / `{{{{ data_dir }}}}`"),
            ),
        };
        d.err("compose-path", self.file, l, field, message, fix);
    }

    fn mount(&self, source: &str, ro: bool, at: Located, d: &mut Diagnostics, fp: &mut Footprint) {
        let relative = !source.starts_with(['/', '~']);
        self.named(source);
        if relative && !ro {
            // One problem, one fix: a writable folder is data, which belongs in the data
            // folder, never shipped (a second error saying "add it to services/<svc>/" would
            // contradict this one).
            d.err(
                "release-mount",
                &at.file,
                at.line,
                at.field.clone(),
                format!("`{source}` is mounted writable from the release folder, which is replaced on every update: what the container writes there stays behind in the old release"),
                "use `{{ data_dir }}` for what the container writes, or mount the file read-only (`:ro`, `read_only: true`)",
            );
            return;
        }
        if !ro {
            if let Place::Allowed(abs) = self.place(source) {
                if under(&abs, self.ctx.root) {
                    fp.writable_binds.push((abs, at.clone()));
                }
            }
        }
        self.file_ref(source, at.line, at.field, d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_mounts() {
        let s = |x: &str| bind_mount(&Value::String(x.into()));
        assert_eq!(s("./nginx.conf:/etc/nginx/nginx.conf:ro"), Some(("./nginx.conf".into(), true)));
        assert_eq!(s("/data:/data"), Some(("/data".into(), false)));
        assert_eq!(s("/data:/data:rw,z"), Some(("/data".into(), false)));
        assert_eq!(s("db-data:/var/lib/postgresql/data"), None);
        assert_eq!(s("/anonymous"), None);
        let long = serde_json::json!({"type": "bind", "source": "./conf", "target": "/c", "read_only": true});
        assert_eq!(bind_mount(&long), Some(("./conf".into(), true)));
        let vol = serde_json::json!({"type": "volume", "source": "db", "target": "/d"});
        assert_eq!(bind_mount(&vol), None);
    }

    #[test]
    fn normalizing() {
        assert_eq!(normalize("./a/../b/./c"), Some(vec!["b", "c"]));
        assert_eq!(normalize("../x"), None);
        assert_eq!(normalize("."), Some(vec![]));
        assert!(under("/opt/homelab/data/x/y", "/opt/homelab/data/x"));
        assert!(!under("/opt/homelab/data/xy", "/opt/homelab/data/x"));
    }
}
