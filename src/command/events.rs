//! `homelab events emit|tail`: the guide's event store from the shell, with `emit_event`'s
//! argument order so existing scripts keep working.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::args::{DataFormat, EventsAt};
use crate::error::{Error, Report};
use crate::events;

fn node_of(at: &EventsAt, emitting: bool) -> Result<Option<String>, Error> {
    let node =
        at.node.clone().or_else(|| std::env::var("HOMELAB_NODE").ok().filter(|s| !s.is_empty()));
    let node = match node {
        Some(n) => Some(n),
        None if emitting => {
            std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_owned())
        }
        None => None,
    };
    match node {
        None => Ok(None),
        Some(n) => crate::model::NodeName::from_cli(&n).map(|n| Some(n.to_string())).map_err(|p| {
            Error::Unsupported {
                message: format!("expected a node name in {p}, found `{n}`: pass `--node`"),
            }
        }),
    }
}

fn show(out: &mut dyn Write, e: &serde_json::Value, json: bool) -> std::io::Result<()> {
    if json {
        return writeln!(out, "{e}");
    }
    let s = |k: &str| e[k].as_str().unwrap_or("-").to_owned();
    writeln!(
        out,
        "{} {:<14} {:<8} {:<22} {:<16} {} {}",
        s("time"),
        s("node"),
        s("severity"),
        s("type"),
        s("service"),
        s("correlation_id"),
        e["data"]
    )
}

/// The arguments of `homelab events emit`, in `emit_event`'s order.
pub struct Emit<'a> {
    pub kind: &'a str,
    pub severity: &'a str,
    pub source: &'a str,
    pub service: &'a str,
    pub correlation_id: &'a str,
    pub data: &'a str,
}

pub fn emit(e: &Emit<'_>, at: &EventsAt) -> Result<Report, Error> {
    let Emit { kind, severity, source, service, correlation_id, data } = *e;
    if !events::TYPES.contains(&kind) {
        return Err(Error::Unsupported {
            message: format!(
                "unknown event type `{kind}`: expected one of {}",
                events::TYPES.join(", ")
            ),
        });
    }
    if !events::SEVERITIES.contains(&severity) {
        return Err(Error::Unsupported {
            message: format!(
                "unknown severity `{severity}`: expected one of {}",
                events::SEVERITIES.join(", ")
            ),
        });
    }
    let data: serde_json::Value = serde_json::from_str(data)
        .ok()
        .filter(serde_json::Value::is_object)
        .ok_or_else(|| Error::Unsupported {
            message: format!("expected a JSON object as data, found `{data}`"),
        })?;
    let node = node_of(at, true)?.unwrap_or_else(|| "unknown".to_owned());
    let now = std::time::SystemTime::now();
    let time = crate::clock::rfc3339(now);
    let line = events::line(&time, kind, severity, source, service, correlation_id, &node, data);
    let file = events::path(&root_of(at, &node), &crate::clock::day(now), &node);
    events::append(&file, &line).map_err(|e| Error::Write { path: file.clone(), source: e })?;
    Ok(Report::Success)
}

/// This node's runtime root: $HOMELAB_ROOT, else /opt/homelab.
fn own_root() -> PathBuf {
    std::env::var_os("HOMELAB_ROOT")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("/opt/homelab"), PathBuf::from)
}

/// The runtime root of `node`, as for plan and apply: `--root DIR` gives `DIR/<node>/`, else
/// this node's own root.
fn root_of(at: &EventsAt, node: &str) -> PathBuf {
    match &at.root {
        Some(dir) => dir.join(node),
        None => own_root(),
    }
}

/// The sub-folders of `dir`, sorted; an error names the folder.
fn folders(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let read = |source| Error::Read { path: dir.to_path_buf(), source };
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).map_err(read)? {
        let p = e.map_err(read)?.path();
        if p.is_dir() {
            v.push(p);
        }
    }
    v.sort();
    Ok(v)
}

/// The runtime roots `tail` reads. A root that is missing or cannot be read, or a `--node`
/// with no root and no events there, is an error naming it: never an empty answer that looks
/// like "no events".
fn roots(at: &EventsAt, node: Option<&str>) -> Result<Vec<PathBuf>, Error> {
    let base = at.root.clone().unwrap_or_else(own_root);
    let all = folders(&base)?;
    let roots = match &at.root {
        Some(_) => all,
        None => vec![base.clone()],
    };
    let Some(node) = node else { return Ok(roots) };
    let mut known = std::collections::BTreeSet::new();
    for r in &roots {
        known.extend(
            events::nodes(r).map_err(|source| Error::Read { path: r.join("events"), source })?,
        );
        if at.root.is_some() {
            known.extend(r.file_name().and_then(|n| n.to_str()).map(str::to_owned));
        }
    }
    if !known.contains(node) {
        let list: Vec<String> = known.iter().map(|n| format!("`{n}`")).collect();
        return Err(Error::Unsupported {
            message: format!(
                "unknown node `{node}`: no runtime root and no events of it under `{}` (nodes there: {})",
                base.display(),
                if list.is_empty() { "none".to_owned() } else { list.join(", ") }
            ),
        });
    }
    Ok(match &at.root {
        Some(dir) => vec![dir.join(node)],
        None => roots,
    })
}

pub fn tail(
    at: &EventsAt,
    follow: bool,
    format: DataFormat,
    out: &mut dyn Write,
) -> Result<Report, Error> {
    let node = node_of(at, false)?;
    let json = matches!(format, DataFormat::Json);
    let mut shown = 0;
    loop {
        let mut all = Vec::new();
        let mut torn = 0;
        for root in roots(at, node.as_deref())? {
            let (e, t) = events::read_all(&root, node.as_deref())
                .map_err(|source| Error::Read { path: root.join("events"), source })?;
            all.extend(e);
            torn += t;
        }
        all.sort_by(|a, b| a["time"].as_str().cmp(&b["time"].as_str()));
        for e in all.iter().skip(shown) {
            show(out, e, json).map_err(Error::stdout)?;
        }
        if shown == 0 && torn > 0 {
            eprintln!("skipped {torn} torn line(s) (a write cut by a crash or a full disk)");
        }
        shown = all.len();
        if !follow {
            return Ok(Report::Success);
        }
        out.flush().map_err(Error::stdout)?;
        std::thread::sleep(Duration::from_secs(1));
    }
}
