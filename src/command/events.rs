//! `homelab events emit|tail`: the guide's event store from the shell, with `emit_event`'s
//! argument order so existing scripts keep working.

use std::io::Write;
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
    let file = events::path(&at.root, &crate::clock::day(now), &node);
    events::append(&file, &line).map_err(|e| Error::Write { path: file.clone(), source: e })?;
    Ok(Report::Success)
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
        let (all, torn) = events::read_all(&at.root, node.as_deref());
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
