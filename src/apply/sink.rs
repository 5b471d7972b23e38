//! Where apply's progress goes: plain lines (not a TTY), JSON lines (`--format json`), or
//! progress bars per node (a TTY). Apply sends events; it never prints. A sink renders what
//! it is given and decides nothing; the time it stamps comes from the clock it was built with.

use std::io::Write;
use std::sync::Mutex;

use super::NodeOutcome;
use crate::clock::{rfc3339, Clock};
use crate::model::{NodeName, ServiceName};

/// Also what a node's engine streams to its controller (`apply::proto`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Step {
        node: NodeName,
        service: Option<ServiceName>,
        stage: String,
        message: String,
    },
    /// `round_trips`: the commands this run sent the node.
    NodeDone {
        node: NodeName,
        outcome: NodeOutcome,
        round_trips: usize,
    },
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
            Event::NodeDone { node, outcome, .. } => {
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

/// One JSON object per line, each with its time.
pub struct Json<W: Write + Send> {
    out: Mutex<W>,
    clock: Clock,
}

impl<W: Write + Send> Json<W> {
    pub fn new(out: W, clock: Clock) -> Self {
        Json { out: Mutex::new(out), clock }
    }
}

impl<W: Write + Send> Sink for Json<W> {
    fn event(&self, e: &Event) {
        let time = rfc3339((self.clock)());
        let v = match e {
            Event::Step { node, service, stage, message } => serde_json::json!({
                "event": "step", "node": node, "service": service, "stage": stage, "message": message,
                "time": time,
            }),
            Event::NodeDone { node, outcome, round_trips } => serde_json::json!({
                "event": "node-done", "node": node, "outcome": outcome.label(), "detail": outcome.detail(),
                "round_trips": round_trips, "time": time,
            }),
        };
        let _ = writeln!(self.out.lock().expect("sink"), "{v}");
    }
}

/// A spinner per node on a terminal (indicatif); the last step of each node stays visible.
pub struct Progress {
    multi: indicatif::MultiProgress,
    bars: Mutex<std::collections::BTreeMap<NodeName, indicatif::ProgressBar>>,
}

impl Progress {
    pub fn new() -> Self {
        Progress { multi: indicatif::MultiProgress::new(), bars: Mutex::new(Default::default()) }
    }

    fn bar(&self, node: &NodeName) -> indicatif::ProgressBar {
        let mut bars = self.bars.lock().expect("bars");
        bars.entry(node.clone())
            .or_insert_with(|| {
                let b = self.multi.add(indicatif::ProgressBar::new_spinner());
                b.set_style(
                    indicatif::ProgressStyle::with_template("{spinner} {prefix:16} {wide_msg}")
                        .expect("template"),
                );
                b.set_prefix(node.display_name());
                b.enable_steady_tick(std::time::Duration::from_millis(120));
                b
            })
            .clone()
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl Sink for Progress {
    fn event(&self, e: &Event) {
        match e {
            Event::Step { node, service, stage, message } => {
                let b = self.bar(node);
                match service {
                    Some(s) => b.set_message(format!("{s} {stage}: {message}")),
                    None => b.set_message(format!("{stage}: {message}")),
                }
            }
            Event::NodeDone { node, outcome, .. } => {
                let b = self.bar(node);
                let d = outcome.detail();
                b.finish_with_message(if d.is_empty() {
                    outcome.label().to_owned()
                } else {
                    format!("{}: {d}", outcome.label())
                });
            }
        }
    }
}
