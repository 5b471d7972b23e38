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

/// An event refused before anything was written.
fn refused(e: events::Invalid, at: &str) -> Error {
    Error::Unsupported {
        message: format!(
            "{at}{e}
nothing was written"
        ),
    }
}

/// `homelab events emit TYPE SEVERITY SOURCE SERVICE CORRELATION_ID [DATA]`: checks the event
/// (nothing is written, not even a folder, when it is refused), then appends it.
pub fn emit(e: &Emit<'_>, at: &EventsAt) -> Result<Report, Error> {
    let node = node_of(at, true)?.unwrap_or_else(|| "unknown".to_owned());
    let event = events::Event::parse(
        e.kind,
        e.severity,
        e.source,
        e.service,
        e.correlation_id,
        e.data,
        &node,
    )
    .map_err(|e| refused(e, ""))?;
    let now = std::time::SystemTime::now();
    let line = event.to_line(&crate::clock::rfc3339(now)).map_err(|e| refused(e, ""))?;
    let file = events::path(&root_of(at, &node), &crate::clock::day(now), &node);
    events::append(&file, &line).map_err(|e| Error::Write { path: file.clone(), source: e })?;
    Ok(Report::Success)
}

/// `homelab events emit --stdin`: one event per line of `input`, each a JSON object with the
/// fields of `emit_event` (`type`, `severity`, `source`, `service`, `correlation_id`, `data`).
/// Every line is checked before any is written: one bad line (named by its number) and nothing
/// is written. Then each is appended on its own, as `emit` appends one, with its own time.
pub fn emit_stdin(at: &EventsAt, input: &mut dyn std::io::BufRead) -> Result<Report, Error> {
    let node = node_of(at, true)?.unwrap_or_else(|| "unknown".to_owned());
    let mut batch = Vec::new();
    let mut text = Vec::new();
    for n in 1.. {
        text.clear();
        let read = input
            .read_until(b'\n', &mut text)
            .map_err(|source| Error::Read { path: PathBuf::from("<stdin>"), source })?;
        if read == 0 {
            break;
        }
        if text.trim_ascii().is_empty() {
            continue;
        }
        let where_ = format!("line {n} of stdin: ");
        let v: serde_json::Value = serde_json::from_slice(&text).map_err(|e| {
            Error::Unsupported {
                message: format!(
                    "{where_}not a JSON object ({e}): expected one event per line, such as \
                     {{\"type\": \"node_online\", \"severity\": \"info\", \"source\": \"agent\", \
                     \"service\": \"-\", \"correlation_id\": \"c1\", \"data\": {{}}}}\nnothing was written"
                ),
            }
        })?;
        let event = events::Event::from_json(&v, &node).map_err(|e| refused(e, &where_))?;
        // The size, with a time as long as any: refused now rather than after other writes.
        event.to_line("0000-00-00T00:00:00Z").map_err(|e| refused(e, &where_))?;
        batch.push(event);
    }
    let mut open: Option<events::Appender> = None;
    for event in &batch {
        let now = std::time::SystemTime::now();
        let line = event.to_line(&crate::clock::rfc3339(now)).map_err(|e| refused(e, ""))?;
        let file = events::path(&root_of(at, &node), &crate::clock::day(now), &node);
        let write = |source| Error::Write { path: file.clone(), source };
        let appender = match open.take() {
            Some(a) if a.path() == file => a,
            _ => events::Appender::open(&file).map_err(write)?,
        };
        let appender = open.insert(appender);
        appender.append(&line).map_err(write)?;
    }
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
