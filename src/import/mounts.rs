//! Bind mounts and volumes of a published compose file: where each source leads (shipped,
//! a host path, a host folder behind a variable, a named volume), where the data goes under
//! `{{ data_dir }}` (one layout per variable, so `…/app/db` and `…/app/html` stay side by side),
//! and the edit of each mount with its reason. Pure: no IO here.

use std::collections::BTreeMap;

use serde_json::Value;

use super::edit::{block_end, Op};
use super::shape::{
    at, is_database, locate, normalize, problem, quoted_if_needed, Ctx, Existing, Input, Svc,
};
use crate::model::raw::S;
use crate::model::validate::looks_secret;
use crate::model::Diagnostic;

/// Edits every mount of `mounts` (gathered from `services`, laid out by `data_of`).
pub(super) fn edit(
    c: &mut Ctx,
    i: &Input,
    services: &BTreeMap<String, S<Svc>>,
    mounts: &[Mount],
    data_of: &BTreeMap<String, String>,
) -> Result<(), Diagnostic> {
    let lines = c.lines.clone();
    let file = c.file;
    for m in mounts {
        let l = match m.short {
            Some(s) => locate(&lines, m.line, s),
            None => m.line,
        };
        let is_db = services.get(m.key).is_some_and(|s| is_database(s.value.image.as_ref()));
        let (new_source, ro, why): (String, bool, String) = if m.named {
            if !is_db || m.read_only {
                continue;
            }
            let dir = data_of.get(&m.source).cloned().unwrap_or_else(|| m.source.clone());
            c.out.backups.entry(m.key.to_owned()).or_default().insert(dir.clone());
            (format!("{{{{ data_dir }}}}/{dir}"), false, "a database's data goes in the service's data folder, snapshotted before every change and in the backup set".to_owned())
        } else {
            match classify(i, m)? {
                Source::Relative(rel) if m.read_only || has_files(i, &rel) => {
                    c.out.ship.insert(rel.clone());
                    if m.read_only {
                        continue;
                    }
                    (m.source.clone(), true, "shipped config is mounted read-only: the release folder is replaced on every update, so what a container wrote there would be lost".to_owned())
                }
                Source::Absolute(p) if m.read_only || system_path(&p) => {
                    c.out.host_paths.insert(p);
                    continue;
                }
                Source::Relative(_) | Source::Absolute(_) | Source::Variable => {
                    let dir = data_of.get(&m.source).cloned().unwrap_or_else(|| "data".to_owned());
                    if is_db {
                        c.out.backups.entry(m.key.to_owned()).or_default().insert(dir.clone());
                    }
                    let why = if m.source.contains('$') {
                        "a host folder under a variable is a folder nobody reviewed (it may even resolve inside the release folder, replaced on every update); the data folder is kept across updates, snapshotted and checked"
                    } else if m.source.starts_with(['/', '~']) {
                        "data goes in the service's data folder, kept across updates, snapshotted and checked, not in a host folder nobody reviewed"
                    } else {
                        "a writable relative bind lives in the release folder, replaced on every update; what a container writes belongs in the data folder"
                    };
                    (format!("{{{{ data_dir }}}}/{dir}"), m.read_only, why.to_owned())
                }
            }
        };
        if new_source.starts_with("{{ data_dir }}") {
            c.out.data.insert(new_source.trim_start_matches("{{ data_dir }}/").to_owned());
        }
        let ops = match m.short {
            Some(s) => {
                let mut parts: Vec<String> =
                    split_volume(s).into_iter().map(str::to_owned).collect();
                parts[0] = new_source.clone();
                if ro {
                    match parts.get_mut(2) {
                        Some(mode) => {
                            let kept: Vec<&str> = mode
                                .split(',')
                                .filter(|o| !matches!(*o, "rw" | "ro" | ""))
                                .collect();
                            *mode = std::iter::once("ro").chain(kept).collect::<Vec<_>>().join(",");
                        }
                        None => parts.push("ro".into()),
                    }
                }
                let new = parts.join(":");
                vec![Op::Replace {
                    line: l,
                    old: s.to_owned(),
                    new: quoted_if_needed(lines[l - 1], s, &new),
                }]
            }
            None => {
                let end = block_end(&lines, l);
                let Some(sl) = (l..=end).find(|&k| lines[k - 1].contains("source:")) else {
                    return Err(problem(
                        file,
                        Some(l),
                        m.field.clone(),
                        "cannot find `source:` of this mount",
                        "write the mount's `source:` on a line of its own",
                    ));
                };
                let mut ops = Vec::new();
                if new_source != m.source {
                    ops.push(Op::Replace {
                        line: sl,
                        old: m.source.clone(),
                        new: quoted_if_needed(lines[sl - 1], &m.source, &new_source),
                    });
                }
                if ro && !m.read_only {
                    let col = lines[sl - 1].find("source:").unwrap_or(0);
                    ops.push(Op::Insert {
                        after: sl,
                        text: format!("{}read_only: true", " ".repeat(col)),
                    });
                }
                ops
            }
        };
        let what = if new_source == m.source {
            "mounted read-only".to_owned()
        } else {
            format!("`{}` → `{new_source}`", m.source)
        };
        c.push(Some(l), m.field.clone(), what, &why, ops);
    }

    Ok(())
}

/// Where a bind mount's source leads, once variables the project knows are resolved.
pub(super) enum Source {
    /// Relative, normalized (`""` is the project folder).
    Relative(String),
    /// Absolute (or `~`).
    Absolute(String),
    /// Written with a variable (a writable host folder nobody reviewed).
    Variable,
}

/// One bind mount or named volume of a service, as written.
pub(super) struct Mount<'a> {
    key: &'a str,
    line: usize,
    field: String,
    /// The short syntax string, or `None` for the long syntax.
    short: Option<&'a str>,
    source: String,
    target: String,
    read_only: bool,
    named: bool,
}

fn has_files(i: &Input, rel: &str) -> bool {
    matches!((i.exists)(rel), Existing::File | Existing::Folder { has_files: true })
}

/// A volume entry of `key`: a bind mount or a named volume.
pub(super) fn mount<'a>(key: &'a str, n: usize, v: &'a S<Value>) -> Option<Mount<'a>> {
    let field = format!("services.{key}.volumes[{n}]");
    let line = at(v)?;
    match &v.value {
        Value::String(s) => {
            let parts = split_volume(s);
            let source = *parts.first()?;
            let target = *parts.get(1)?;
            let mode = parts.get(2).copied().unwrap_or("");
            let named = !source.starts_with(['.', '/', '~', '$']);
            Some(Mount {
                key,
                line,
                field,
                short: Some(s),
                source: source.to_owned(),
                target: target.to_owned(),
                read_only: mode.split(',').any(|m| m == "ro"),
                named,
            })
        }
        Value::Object(m) => {
            let kind = m.get("type").and_then(Value::as_str).unwrap_or("volume");
            let source = m.get("source").and_then(Value::as_str)?;
            if kind != "bind" && kind != "volume" {
                return None;
            }
            Some(Mount {
                key,
                line,
                field,
                short: None,
                source: source.to_owned(),
                target: m.get("target").and_then(Value::as_str).unwrap_or("").to_owned(),
                read_only: m.get("read_only").and_then(Value::as_bool).unwrap_or(false),
                named: kind == "volume",
            })
        }
        _ => None,
    }
}

/// What a bind source names, the project's `.env` and defaults resolving a read-only one.
fn classify(i: &Input, m: &Mount) -> Result<Source, Diagnostic> {
    let s = m.source.as_str();
    if let Some((name, default, rest)) = leading_variable(s) {
        if !m.read_only {
            return Ok(Source::Variable);
        }
        let value = (!looks_secret(name))
            .then(|| i.env_values.get(name).cloned())
            .flatten()
            .or(default.map(str::to_owned));
        let Some(value) = value.filter(|v| !v.contains('$')) else {
            return Err(problem(i.file, Some(m.line), m.field.clone(), format!("`{s}` is mounted read-only from a variable whose value the project does not give"), "write the path out in the compose file"));
        };
        let resolved = format!("{value}{rest}");
        return literal(i, m, &resolved);
    }
    if s.contains('$') {
        return Ok(Source::Variable);
    }
    literal(i, m, s)
}

fn literal(i: &Input, m: &Mount, s: &str) -> Result<Source, Diagnostic> {
    if s.starts_with(['/', '~']) {
        return Ok(Source::Absolute(s.to_owned()));
    }
    let rel = normalize(s).ok_or_else(|| {
        problem(
            i.file,
            Some(m.line),
            m.field.clone(),
            format!("`{s}` leaves the project folder"),
            "move it into the project folder",
        )
    })?;
    if m.read_only {
        if rel.split('/').any(|p| p.starts_with('.')) {
            return Err(problem(
                i.file,
                Some(m.line),
                m.field.clone(),
                format!("`{s}` is a hidden file, and hidden files never ship"),
                "rename it without a leading `.`, or keep it on the node under `{{ config_dir }}`",
            ));
        }
        if (i.exists)(&rel) == Existing::Missing {
            return Err(problem(
                i.file,
                Some(m.line),
                m.field.clone(),
                format!("`{s}` is mounted read-only but does not exist in the project"),
                "add it to the project folder",
            ));
        }
    }
    Ok(Source::Relative(rel))
}

/// `${NAME…}` or `$NAME` at the start of `s`: the name, its default, and the rest of `s`.
pub(super) fn leading_variable(s: &str) -> Option<(&str, Option<&str>, &str)> {
    if let Some(body) = s.strip_prefix("${") {
        let close = body.find('}')?;
        let inner = &body[..close];
        let end =
            inner.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(inner.len());
        let name = &inner[..end];
        let op = &inner[end..];
        let default = op.strip_prefix(":-").or_else(|| op.strip_prefix('-'));
        return Some((name, default, &body[close + 1..]));
    }
    let body = s.strip_prefix('$')?;
    let end = body.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(body.len());
    Some((&body[..end], None, &body[end..]))
}

/// Host paths that are the host's own (sockets, devices, the clock, the kernel's): listed in
/// `host_paths`, never moved.
fn system_path(p: &str) -> bool {
    ["/var/run", "/run", "/dev", "/sys", "/proc", "/etc", "/lib", "/usr", "/var/lib/docker"]
        .iter()
        .any(|s| p == *s || p.starts_with(&format!("{s}/")))
}

/// Where under `{{ data_dir }}` each moved source goes, by source as written: relative binds
/// keep their path; sources under one variable (or absolute ones) keep their layout below
/// what they share (`${X:-/mnt}/app/db` and `…/app/html` → `db`, `html`; a lone `…/app/db`
/// → `db`); a variable alone takes the mount's target folder's name; a named volume its name.
pub(super) fn data_layout(i: &Input, mounts: &[Mount]) -> BTreeMap<String, String> {
    let mut groups: BTreeMap<String, Vec<(&str, Vec<String>)>> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for m in mounts {
        if m.named {
            out.insert(m.source.clone(), m.source.clone());
            continue;
        }
        let target_name =
            m.target.trim_end_matches('/').rsplit('/').next().unwrap_or("data").to_owned();
        let (group, rest) = match leading_variable(&m.source) {
            // A variable alone names the folder by what the project gives it (`./library`).
            Some((name, default, "")) => {
                let given = (!looks_secret(name))
                    .then(|| i.env_values.get(name).map(String::as_str))
                    .flatten()
                    .or(default)
                    .filter(|v| !v.contains('$'))
                    .and_then(|v| v.trim_end_matches('/').rsplit('/').next())
                    .filter(|v| !v.is_empty() && !v.starts_with('.'));
                (name.to_owned(), given.unwrap_or(&target_name).to_owned())
            }
            Some((name, _, rest)) => (name.to_owned(), rest.to_owned()),
            None if m.source.contains('$') => (String::new(), String::new()),
            None if m.source.starts_with(['/', '~']) => ("/".to_owned(), m.source.clone()),
            None => {
                out.insert(m.source.clone(), normalize(&m.source).unwrap_or_default());
                continue;
            }
        };
        let mut parts: Vec<String> = normalize(rest.trim_start_matches('~'))
            .unwrap_or_default()
            .split('/')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect();
        if parts.is_empty() {
            parts.push(target_name);
        }
        groups.entry(group).or_default().push((&m.source, parts));
    }
    for items in groups.values() {
        // Strip what every source of the group shares, each keeping at least one part.
        let mut common = 0;
        while items.iter().all(|(_, p)| p.len() > common + 1 && p[common] == items[0].1[common]) {
            common += 1;
        }
        // A lone source, or sources sharing their whole path, keep their last part.
        for (source, parts) in items {
            out.insert((*source).to_owned(), parts[common..].join("/"));
        }
    }
    // Two different sources never share a folder.
    let mut taken: BTreeMap<String, String> = BTreeMap::new();
    let mut sources: Vec<&String> = out.keys().collect();
    sources.sort();
    let mut fixed = BTreeMap::new();
    for s in sources {
        let mut dir = out[s].clone();
        let mut n = 2;
        while taken.get(&dir).is_some_and(|o| o != s) {
            dir = format!("{}-{n}", out[s]);
            n += 1;
        }
        taken.insert(dir.clone(), s.clone());
        fixed.insert(s.clone(), dir);
    }
    fixed
}

/// A short volume entry's `source:target:mode`, split at colons outside `${…}` (a default
/// such as `${X:-/mnt}` holds one).
pub(super) fn split_volume(s: &str) -> Vec<&str> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (k, &c) in b.iter().enumerate() {
        match c {
            b'{' if k > 0 && b[k - 1] == b'$' => depth += 1,
            b'}' if depth > 0 => depth -= 1,
            b':' if depth == 0 && out.len() < 2 => {
                out.push(&s[start..k]);
                start = k + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}
