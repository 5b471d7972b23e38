//! Events: append-only JSON lines at `<root>/events/YYYY-MM-DD/<node>/events.jsonl`, with the
//! guide's fields (type, severity, source, service, correlation id, data) plus time and node.
//! Events never carry a secret: callers put names and states in `data`, never values.
//! Paths come from `node::Layout`; the time of an event is given by the caller (this module
//! reads no clock), and it imports nothing of `command` or `cli`.

use crate::node::Layout;

/// The guide's normalized event types.
pub const TYPES: [&str; 11] = [
    "deployment_started",
    "deployment_completed",
    "deployment_failed",
    "service_unhealthy",
    "service_recovered",
    "node_offline",
    "node_online",
    "healthcheck_failed",
    "remediation_started",
    "remediation_completed",
    "remediation_failed",
];

pub const SEVERITIES: [&str; 5] = ["debug", "info", "warning", "error", "critical"];

/// One event as a JSON line (with the trailing newline), at `time` (RFC 3339).
#[allow(clippy::too_many_arguments)] // the guide's fields, in `emit_event`'s order
pub fn line(
    time: &str,
    kind: &str,
    severity: &str,
    source: &str,
    service: &str,
    correlation_id: &str,
    node: &str,
    data: serde_json::Value,
) -> String {
    let v = serde_json::json!({
        "time": time,
        "node": node,
        "type": kind,
        "severity": severity,
        "source": source,
        "service": service,
        "correlation_id": correlation_id,
        "data": data,
    });
    format!("{v}\n")
}

/// Where a node's events of a day are.
pub fn path(root: &std::path::Path, day: &str, node: &str) -> std::path::PathBuf {
    Layout::local(root).events(day, node).into()
}

/// Appends one line in one `write(2)` with `O_APPEND`, then fsyncs: concurrent writers never
/// interleave inside a line, and a crash can only tear the last line.
pub fn append(file: &std::path::Path, line: &str) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(file)?;
    f.write_all(line.as_bytes())?;
    f.sync_data()
}

/// Every event under `<root>/events/` (`root` is one node's runtime root), oldest day first,
/// optionally of one node. Lines that do not parse (a torn last line after a crash or a full
/// disk) are skipped and counted. A root without `events/` has none; one that cannot be read is
/// an error, never an empty answer.
pub fn read_all(
    root: &std::path::Path,
    node: Option<&str>,
) -> std::io::Result<(Vec<serde_json::Value>, usize)> {
    let mut events = Vec::new();
    let mut torn = 0;
    let events_root = std::path::PathBuf::from(Layout::local(root).events_root());
    let days = match list(&events_root) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        r => r?,
    };
    for day in days {
        for dir in list(&day)? {
            let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if node.is_some_and(|n| n != name) {
                continue;
            }
            let text = match std::fs::read_to_string(dir.join("events.jsonl")) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                r => r?,
            };
            for l in text.lines().filter(|l| !l.trim().is_empty()) {
                match serde_json::from_str::<serde_json::Value>(l) {
                    Ok(v) if v.is_object() => events.push(v),
                    _ => torn += 1,
                }
            }
        }
    }
    events.sort_by(|a, b| a["time"].as_str().cmp(&b["time"].as_str()));
    Ok((events, torn))
}

/// The nodes with events under `<root>/events/` (any day).
pub fn nodes(root: &std::path::Path) -> std::io::Result<std::collections::BTreeSet<String>> {
    let events_root = std::path::PathBuf::from(Layout::local(root).events_root());
    let days = match list(&events_root) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        r => r?,
    };
    let mut out = std::collections::BTreeSet::new();
    for day in days {
        for dir in list(&day)? {
            out.extend(dir.file_name().and_then(|n| n.to_str()).map(str::to_owned));
        }
    }
    Ok(out)
}

/// The entries of a folder, sorted.
fn list(p: &std::path::Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut v =
        std::fs::read_dir(p)?.map(|e| e.map(|e| e.path())).collect::<Result<Vec<_>, _>>()?;
    v.sort();
    Ok(v)
}
