//! Where apply's progress goes: plain lines (not a TTY), JSON lines (`--format json`), or
//! progress bars per node (a TTY). Apply sends events; it never prints.

use std::io::Write;
use std::sync::Mutex;

use super::NodeOutcome;
use crate::model::{NodeName, ServiceName};

#[derive(Debug, Clone)]
pub enum Event {
    Step { node: NodeName, service: Option<ServiceName>, stage: String, message: String },
    NodeDone { node: NodeName, outcome: NodeOutcome },
}

pub trait Sink: Sync {
    fn event(&self, e: &Event);
}

/// `[node] service stage: message` on stderr.
pub struct Plain<W: Write + Send> {
    out: Mutex<W>,
}

impl<W: Write + Send> Plain<W> {
    pub fn new(out: W) -> Self {
        Plain { out: Mutex::new(out) }
    }
}

impl<W: Write + Send> Sink for Plain<W> {
    fn event(&self, e: &Event) {
        let mut out = self.out.lock().expect("sink");
        let _ = match e {
            Event::Step { node, service, stage, message } => match service {
                Some(s) => writeln!(out, "[{node}] {s} {stage}: {message}"),
                None => writeln!(out, "[{node}] {stage}: {message}"),
            },
            Event::NodeDone { node, outcome } => {
                let d = outcome.detail();
                if d.is_empty() {
                    writeln!(out, "[{node}] {}", outcome.label())
                } else {
                    writeln!(out, "[{node}] {}: {d}", outcome.label())
                }
            }
        };
    }
}

/// One JSON object per line.
pub struct Json<W: Write + Send> {
    out: Mutex<W>,
}

impl<W: Write + Send> Json<W> {
    pub fn new(out: W) -> Self {
        Json { out: Mutex::new(out) }
    }
}

impl<W: Write + Send> Sink for Json<W> {
    fn event(&self, e: &Event) {
        let v = match e {
            Event::Step { node, service, stage, message } => serde_json::json!({
                "event": "step", "node": node, "service": service, "stage": stage, "message": message,
                "time": crate::command::now_rfc3339(),
            }),
            Event::NodeDone { node, outcome } => serde_json::json!({
                "event": "node-done", "node": node, "outcome": outcome.label(), "detail": outcome.detail(),
                "time": crate::command::now_rfc3339(),
            }),
        };
        let _ = writeln!(self.out.lock().expect("sink"), "{v}");
    }
}
