//! Events: append-only JSON lines at `<root>/events/YYYY-MM-DD/<node>/events.jsonl`, with the
//! guide's fields (type, severity, source, service, correlation id, data) plus time and node.
//! Schema, types, when each is emitted, and the guarantees: `docs/events.md`.
//!
//! This module owns what an event line may hold ([`Event::check`]: known type and severity,
//! fields of one line of text, data an object with no secret-named key, at most [`MAX_LINE`]
//! bytes) and how a line reaches the file ([`Appender`]: one locked `write(2)` that never glues
//! onto a torn line). Events never carry a secret: callers put names and states in `data`,
//! never values. Paths come from `node::Layout`; the time of an event is given by the caller
//! (this module reads no clock), and it imports nothing of `command` or `cli`.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::node::Layout;

/// The type of an event: the guide's normalized types, plus `remediation_failed` (a rollback
/// that failed) and `deployment_stage`, one per apply stage, which the guide does not name (its
/// data says which stage and how it went: [`stage_data`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    DeploymentStarted,
    DeploymentStage,
    DeploymentCompleted,
    DeploymentFailed,
    HealthcheckFailed,
    RemediationStarted,
    RemediationCompleted,
    RemediationFailed,
    ServiceUnhealthy,
    ServiceRecovered,
    NodeOffline,
    NodeOnline,
}

impl Kind {
    pub const ALL: [Kind; 12] = [
        Kind::DeploymentStarted,
        Kind::DeploymentStage,
        Kind::DeploymentCompleted,
        Kind::DeploymentFailed,
        Kind::HealthcheckFailed,
        Kind::RemediationStarted,
        Kind::RemediationCompleted,
        Kind::RemediationFailed,
        Kind::ServiceUnhealthy,
        Kind::ServiceRecovered,
        Kind::NodeOffline,
        Kind::NodeOnline,
    ];

    /// The name in an event line's `type`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::DeploymentStarted => "deployment_started",
            Kind::DeploymentStage => "deployment_stage",
            Kind::DeploymentCompleted => "deployment_completed",
            Kind::DeploymentFailed => "deployment_failed",
            Kind::HealthcheckFailed => "healthcheck_failed",
            Kind::RemediationStarted => "remediation_started",
            Kind::RemediationCompleted => "remediation_completed",
            Kind::RemediationFailed => "remediation_failed",
            Kind::ServiceUnhealthy => "service_unhealthy",
            Kind::ServiceRecovered => "service_recovered",
            Kind::NodeOffline => "node_offline",
            Kind::NodeOnline => "node_online",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Every type, as `Kind::ALL` names them (in that order).
pub const TYPES: [&str; 12] = {
    let mut names = [""; 12];
    let mut i = 0;
    while i < names.len() {
        names[i] = Kind::ALL[i].as_str();
        i += 1;
    }
    names
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Debug,
    Info,
    Warning,
    Error,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 5] =
        [Severity::Debug, Severity::Info, Severity::Warning, Severity::Error, Severity::Critical];

    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Debug => "debug",
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        Severity::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

pub const SEVERITIES: [&str; 5] = ["debug", "info", "warning", "error", "critical"];

/// A stage of the guide's deploy pipeline, as a `deployment_stage` event names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    Prepare,
    Validate,
    Deploy,
    Verify,
    Diagnose,
    Rollback,
    Complete,
}

impl Stage {
    pub const fn as_str(self) -> &'static str {
        match self {
            Stage::Prepare => "prepare",
            Stage::Validate => "validate",
            Stage::Deploy => "deploy",
            Stage::Verify => "verify",
            Stage::Diagnose => "diagnose",
            Stage::Rollback => "rollback",
            Stage::Complete => "complete",
        }
    }
}

/// How a stage went, in a `deployment_stage` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StageStatus {
    Started,
    Completed,
    Failed,
}

impl StageStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            StageStatus::Started => "started",
            StageStatus::Completed => "completed",
            StageStatus::Failed => "failed",
        }
    }
}

/// The data of a `deployment_stage` event: `{"stage": "verify", "status": "completed"}`.
pub fn stage_data(stage: Stage, status: StageStatus) -> Value {
    serde_json::json!({"stage": stage.as_str(), "status": status.as_str()})
}

/// The longest event line written, its newline included: 4096 bytes, `PIPE_BUF` on Linux. A
/// line of at most this size stays whole through every way homelab appends one (an `O_APPEND`
/// write here, a pipe into `cat >>` on a node), and an event is a fact, not a log: long output
/// stays in a log file on the node, which the event names.
pub const MAX_LINE: usize = 4096;

/// Why an event was refused; each names the field (an argument of `emit_event`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("argument `type`: unknown event type `{found}`: expected one of {}", TYPES.join(", "))]
    Type { found: String },
    #[error("argument `severity`: unknown severity `{found}`: expected one of {}", SEVERITIES.join(", "))]
    Severity { found: String },
    #[error("argument `{field}` is empty: expected {what}")]
    Empty { field: &'static str, what: &'static str },
    #[error(
        "argument `{field}` holds a control character ({code}) at character {at}: a field is one \
         line of text; put details in `data`"
    )]
    Control { field: &'static str, code: String, at: usize },
    #[error("argument `data` is not JSON ({reason}): expected a JSON object as data, such as '{{\"error\": \"OOM\"}}'")]
    DataNotJson { reason: String },
    #[error("argument `data`: expected a JSON object as data, found {found}")]
    DataNotObject { found: &'static str },
    #[error(
        "argument `data`: key `{key}` is named like a secret: events carry names, never values; \
         put the secret's name under a key such as `secret_name`"
    )]
    SecretKey { key: String },
    #[error(
        "the event is {size} bytes as a line, over the limit of {MAX_LINE}: put less in `data` \
         (keep long output in a log file and name the file)"
    )]
    TooLong { size: usize },
    #[error("field `{field}` is missing: expected {what}")]
    Missing { field: &'static str, what: &'static str },
    #[error("field `{field}` is not a string")]
    NotString { field: &'static str },
    #[error(
        "unknown field `{field}`: expected type, severity, source, service, correlation_id, data"
    )]
    UnknownField { field: String },
}

/// One event, before it has a time.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub kind: Kind,
    pub severity: Severity,
    /// Who emits it (a script, an agent, `homelab apply`).
    pub source: String,
    /// The service it is about (`-` or empty for none).
    pub service: String,
    /// Ties related events together (apply uses the plan id).
    pub correlation_id: String,
    /// The node it is about (its id).
    pub node: String,
    pub data: Map<String, Value>,
}

impl Event {
    /// An event with empty data, the guide's fields in `emit_event`'s order, then the node.
    pub fn new(
        kind: Kind,
        severity: Severity,
        source: &str,
        service: &str,
        correlation_id: &str,
        node: &str,
    ) -> Event {
        Event {
            kind,
            severity,
            source: source.to_owned(),
            service: service.to_owned(),
            correlation_id: correlation_id.to_owned(),
            node: node.to_owned(),
            data: Map::new(),
        }
    }

    /// A `deployment_stage` event (data [`stage_data`]): `info`, `error` when it failed.
    pub fn stage(
        stage: Stage,
        status: StageStatus,
        source: &str,
        service: &str,
        correlation_id: &str,
        node: &str,
    ) -> Event {
        let severity = match status {
            StageStatus::Failed => Severity::Error,
            StageStatus::Started | StageStatus::Completed => Severity::Info,
        };
        Event::new(Kind::DeploymentStage, severity, source, service, correlation_id, node)
            .with("stage", stage.as_str())
            .with("status", status.as_str())
    }

    /// Adds (or replaces) a key of `data`.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Event {
        self.data.insert(key.to_owned(), value.into());
        self
    }

    /// The event `homelab events emit` was given, as text (the type and severity by name, data
    /// as JSON), checked: the first problem, naming its argument.
    #[allow(clippy::too_many_arguments)] // `emit_event`'s arguments, then the node
    pub fn parse(
        kind: &str,
        severity: &str,
        source: &str,
        service: &str,
        correlation_id: &str,
        data: &str,
        node: &str,
    ) -> Result<Event, Invalid> {
        let kind = Kind::parse(kind).ok_or_else(|| Invalid::Type { found: kind.to_owned() })?;
        let severity = Severity::parse(severity)
            .ok_or_else(|| Invalid::Severity { found: severity.to_owned() })?;
        let data = match serde_json::from_str::<Value>(data) {
            Ok(Value::Object(m)) => m,
            Ok(other) => return Err(Invalid::DataNotObject { found: json_kind(&other) }),
            Err(e) => return Err(Invalid::DataNotJson { reason: e.to_string() }),
        };
        let e = Event {
            kind,
            severity,
            source: source.to_owned(),
            service: service.to_owned(),
            correlation_id: correlation_id.to_owned(),
            node: node.to_owned(),
            data,
        };
        e.check()?;
        Ok(e)
    }

    /// An event given as a JSON object (`homelab events emit --stdin`, one per line): the
    /// fields `type`, `severity`, `source`, `service`, `correlation_id` (strings) and `data`
    /// (an object, default `{}`); the node and time are the writer's.
    pub fn from_json(v: &Value, node: &str) -> Result<Event, Invalid> {
        let Value::Object(m) = v else {
            return Err(Invalid::DataNotObject { found: json_kind(v) });
        };
        const FIELDS: [(&str, &str); 5] = [
            ("type", "an event type"),
            ("severity", "a severity"),
            ("source", "who emits it"),
            ("service", "a service name, or \"-\""),
            ("correlation_id", "a correlation id"),
        ];
        if let Some(k) = m.keys().find(|k| *k != "data" && !FIELDS.iter().any(|(f, _)| f == k)) {
            return Err(Invalid::UnknownField { field: k.clone() });
        }
        let mut text = [""; 5];
        for (slot, (field, what)) in text.iter_mut().zip(FIELDS) {
            *slot = match m.get(field) {
                None => return Err(Invalid::Missing { field, what }),
                Some(Value::String(s)) => s,
                Some(_) => return Err(Invalid::NotString { field }),
            };
        }
        let data = match m.get("data") {
            None => "{}".to_owned(),
            Some(d) => d.to_string(),
        };
        Event::parse(text[0], text[1], text[2], text[3], text[4], &data, node)
    }

    /// Whether the event may be written: fields of one line of text (no control character),
    /// a source and a node, no data key named like a secret, and its line at most
    /// [`MAX_LINE`] bytes (checked by [`Event::to_line`], which knows the time).
    pub fn check(&self) -> Result<(), Invalid> {
        one_line("source", &self.source)?;
        one_line("service", &self.service)?;
        one_line("correlation_id", &self.correlation_id)?;
        one_line("node", &self.node)?;
        if self.source.trim().is_empty() {
            return Err(Invalid::Empty { field: "source", what: "who emits the event" });
        }
        if self.node.trim().is_empty() {
            return Err(Invalid::Empty { field: "node", what: "the node the event is about" });
        }
        no_secret_keys(&self.data)
    }

    /// The event's JSON line at `time` (RFC 3339), its newline included: checked, and at most
    /// [`MAX_LINE`] bytes.
    pub fn to_line(&self, time: &str) -> Result<String, Invalid> {
        self.check()?;
        one_line("time", time)?;
        let l = self.unchecked_line(time);
        if l.len() > MAX_LINE {
            return Err(Invalid::TooLong { size: l.len() });
        }
        Ok(l)
    }

    /// As [`Event::to_line`], but an event over [`MAX_LINE`] has its longest strings in
    /// `data` cut (ending in `…`) and `"truncated": true` added, rather than being refused:
    /// for a writer (apply) whose event must not be lost because a quoted output ran long.
    pub fn to_line_shortened(&self, time: &str) -> Result<String, Invalid> {
        match self.to_line(time) {
            Err(Invalid::TooLong { .. }) => {}
            r => return r,
        }
        let mut e = self.clone();
        e.data.insert("truncated".to_owned(), Value::Bool(true));
        for _ in 0..64 {
            let size = e.unchecked_line(time).len();
            if size <= MAX_LINE {
                return Ok(e.unchecked_line(time));
            }
            let Some(longest) = longest_string(&mut e.data) else { break };
            let chars = longest.chars().count();
            // JSON may spell a character in up to 6 bytes: cut at least enough of them.
            let cut = (size - MAX_LINE).div_ceil(6).max(chars / 2).max(1);
            let keep = chars.saturating_sub(cut + 1);
            *longest = longest.chars().take(keep).chain(['…']).collect();
        }
        // Nothing long left to cut (many short values): keep the fact, drop the details.
        e.data = Map::from_iter([("truncated".to_owned(), Value::Bool(true))]);
        e.to_line(time)
    }

    fn unchecked_line(&self, time: &str) -> String {
        line(
            time,
            self.kind.as_str(),
            self.severity.as_str(),
            &self.source,
            &self.service,
            &self.correlation_id,
            &self.node,
            Value::Object(self.data.clone()),
        )
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A field is one line of text: a newline in it would split the event's line in the file (JSON
/// escapes it, but readers of the file as text, `grep` and `tail -f`, deserve one-line fields).
fn one_line(field: &'static str, value: &str) -> Result<(), Invalid> {
    match value.chars().enumerate().find(|(_, c)| c.is_control()) {
        None => Ok(()),
        Some((at, c)) => Err(Invalid::Control { field, code: format!("U+{:04X}", c as u32), at }),
    }
}

/// Key names that hold a secret's value, not its name (compared lowercased, without `_-.`).
const SECRET_SUFFIXES: [&str; 11] = [
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "credential",
    "credentials",
    "apikey",
    "privatekey",
    "accesskey",
    "secretkey",
];

/// Whether a data key is named like a secret value (`password`, `api_token`, ...): refused in
/// new events, and hidden by readers that show events written by other means.
pub fn is_secret_key(key: &str) -> bool {
    let flat: String = key
        .chars()
        .filter(|c| !matches!(c, '_' | '-' | '.'))
        .flat_map(char::to_lowercase)
        .collect();
    SECRET_SUFFIXES.iter().any(|s| flat.ends_with(s))
}

/// A key named like a secret value, at any depth of `data`: the cheap guard against a caller
/// that forgot the rule (names, never values). `secret_name` or `missing_secrets` pass.
fn no_secret_keys(data: &Map<String, Value>) -> Result<(), Invalid> {
    for (k, v) in data {
        if is_secret_key(k) {
            return Err(Invalid::SecretKey { key: k.clone() });
        }
        let mut stack = vec![v];
        while let Some(v) = stack.pop() {
            match v {
                Value::Object(m) => no_secret_keys(m)?,
                Value::Array(a) => stack.extend(a),
                _ => {}
            }
        }
    }
    Ok(())
}

/// The longest string value in `data`, at any depth.
fn longest_string(data: &mut Map<String, Value>) -> Option<&mut String> {
    fn walk<'a>(v: &'a mut Value, best: &mut Option<&'a mut String>) {
        match v {
            Value::String(s) if best.as_ref().is_none_or(|b| s.len() > b.len()) => {
                *best = Some(s);
            }
            Value::Array(a) => a.iter_mut().for_each(|v| walk(v, best)),
            Value::Object(m) => m.values_mut().for_each(|v| walk(v, best)),
            _ => {}
        }
    }
    let mut best = None;
    data.values_mut().for_each(|v| walk(v, &mut best));
    best.filter(|s| s.chars().count() > 1)
}

/// One event as a JSON line (with the trailing newline), at `time` (RFC 3339), unchecked:
/// [`Event::to_line`] is the checked way.
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

/// An events file open for appending. Each [`Appender::append`] takes an exclusive `flock` on
/// the file, starts a new line if the file does not end with one (a torn line left by a crash
/// stays alone, and is skipped by readers), writes the line in one `write(2)` with `O_APPEND`,
/// unlocks and `fdatasync`s. Concurrent writers, threads or processes, never interleave inside
/// a line and never glue onto another's torn one.
pub struct Appender {
    file: std::fs::File,
    path: PathBuf,
}

impl Appender {
    /// Opens (creates) `path` and its folders.
    pub fn open(path: &Path) -> std::io::Result<Appender> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new().read(true).create(true).append(true).open(path)?;
        Ok(Appender { file, path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line: it must end in its only newline (as [`line`] makes it).
    pub fn append(&mut self, line: &str) -> std::io::Result<()> {
        if !line.ends_with('\n') || line[..line.len() - 1].contains('\n') {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "an event line ends in its only newline",
            ));
        }
        append_whole(&self.file, line.as_bytes())?;
        self.file.sync_data()
    }
}

/// Appends whole lines (`bytes` ends in a newline) to `file`, opened for appending, under its
/// exclusive `flock` (`files::Flock`), after a newline when the file ends in a torn line: the
/// append every writer of an events file makes (`Appender`, the apply's records written in
/// process), never interleaved with another's nor glued onto one.
pub(crate) fn append_whole(file: &std::fs::File, bytes: &[u8]) -> std::io::Result<()> {
    let _lock = crate::files::Flock::exclusive(file)?;
    let size = file.metadata()?.len();
    let mut last = [b'\n'];
    if size > 0 {
        file.read_exact_at(&mut last, size - 1)?;
    }
    let mut buf = Vec::with_capacity(bytes.len() + 1);
    if last[0] != b'\n' {
        buf.push(b'\n');
    }
    buf.extend_from_slice(bytes);
    (&*file).write_all(&buf)
}

/// The same append as [`Appender::append`], as a POSIX shell script for a node reached over a
/// transport: `sh -c APPEND_SH sh FILE` with the line on stdin. It takes the same `flock` (when
/// the node has `flock(1)`; Rust's and util-linux's interoperate) and starts a new line after a
/// torn one, so `homelab events emit` on the node and a remote apply never glue or interleave.
pub const APPEND_SH: &str = r#"set -eu
f=$1
mkdir -p -- "$(dirname -- "$f")"
exec 9>>"$f"
if command -v flock >/dev/null 2>&1; then flock 9; fi
if [ -s "$f" ] && [ "$(tail -c 1 -- "$f" | od -An -tx1 | tr -d ' \n')" != 0a ]; then
  printf '\n' >&9
fi
cat >&9
"#;

/// Appends one line to `file` (see [`Appender`]), creating it and its folders.
pub fn append(file: &std::path::Path, line: &str) -> std::io::Result<()> {
    Appender::open(file)?.append(line)
}

/// Every event under `<root>/events/` (`root` is one node's runtime root), oldest day first,
/// optionally of one node. Lines that do not parse (a torn last line after a crash or a full
/// disk, even one cut inside a UTF-8 character) are skipped and counted. A root without
/// `events/` has none; one that cannot be read is an error, never an empty answer.
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
            // Bytes, not a String: one torn line must not make the whole file unreadable.
            let bytes = match std::fs::read(dir.join("events.jsonl")) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                r => r?,
            };
            let (e, t) = parse_lines(&bytes);
            events.extend(e);
            torn += t;
        }
    }
    events.sort_by(|a, b| a["time"].as_str().cmp(&b["time"].as_str()));
    Ok((events, torn))
}

/// The events of one file's bytes, and how many non-blank lines were not events.
pub fn parse_lines(bytes: &[u8]) -> (Vec<serde_json::Value>, usize) {
    let mut events = Vec::new();
    let mut torn = 0;
    for l in bytes.split(|b| *b == b'\n').filter(|l| !l.trim_ascii().is_empty()) {
        match serde_json::from_slice::<serde_json::Value>(l) {
            Ok(v) if v.is_object() => events.push(v),
            _ => torn += 1,
        }
    }
    (events, torn)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ev() -> Event {
        Event::new(Kind::DeploymentFailed, Severity::Error, "homelab apply", "web", "p1", "alpha")
    }

    #[test]
    fn types_are_the_kinds_and_parse_back() {
        for (k, name) in Kind::ALL.iter().zip(TYPES) {
            assert_eq!(k.as_str(), name);
            assert_eq!(Kind::parse(name), Some(*k));
        }
        for (s, name) in Severity::ALL.iter().zip(SEVERITIES) {
            assert_eq!(Severity::parse(name), Some(*s));
        }
        assert_eq!(Kind::parse("deployment_exploded"), None);
    }

    #[test]
    fn a_stage_event_carries_stage_and_status() {
        let e = Event::stage(Stage::Verify, StageStatus::Failed, "homelab apply", "web", "p1", "a");
        let v: Value = serde_json::from_str(&e.to_line("2026-11-30T00:00:00Z").unwrap()).unwrap();
        assert_eq!(v["type"], "deployment_stage");
        assert_eq!(v["severity"], "error");
        assert_eq!(v["data"], stage_data(Stage::Verify, StageStatus::Failed));
    }

    #[test]
    fn control_characters_secret_keys_and_size_are_refused() {
        let mut e = ev();
        e.service = "web\nx".into();
        assert!(matches!(e.check(), Err(Invalid::Control { field: "service", at: 3, .. })));
        assert!(matches!(
            ev().with("db", serde_json::json!({"DB_PASSWORD": "x"})).check(),
            Err(Invalid::SecretKey { .. })
        ));
        ev().with("secret_name", "DB_PASSWORD").with("missing_secrets", "x").check().unwrap();
        let big = ev().with("reason", "é".repeat(MAX_LINE));
        assert!(matches!(big.to_line("t"), Err(Invalid::TooLong { .. })));
        let l = big.to_line_shortened("t").unwrap();
        assert!(l.len() <= MAX_LINE, "{}", l.len());
        let v: Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["data"]["truncated"], true);
        assert!(v["data"]["reason"].as_str().unwrap().ends_with('…'));
    }

    #[test]
    fn an_append_after_a_torn_line_starts_a_new_line() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("e.jsonl");
        std::fs::write(&f, "{\"a\":1}\n{\"time\": \"20").unwrap();
        append(&f, "{\"b\":2}\n").unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "{\"a\":1}\n{\"time\": \"20\n{\"b\":2}\n");
        assert!(append(&f, "{\"c\":\n3}\n").is_err());
        // The node-side script does the same.
        std::fs::write(&f, "{\"a\":1}\n{\"time\": \"20").unwrap();
        for _ in 0..2 {
            let mut sh = std::process::Command::new("sh")
                .args(["-c", APPEND_SH, "sh"])
                .arg(dir.path().join("e.jsonl"))
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            sh.stdin.take().unwrap().write_all(b"{\"b\":2}\n").unwrap();
            assert!(sh.wait().unwrap().success());
        }
        assert_eq!(
            std::fs::read_to_string(&f).unwrap(),
            "{\"a\":1}\n{\"time\": \"20\n{\"b\":2}\n{\"b\":2}\n"
        );
        assert!(append(&f, "{\"c\":3}").is_err());
    }
}
