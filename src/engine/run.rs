//! The node's engine: the `serve` that checked a bundle, forked and detached
//! ([`engine_checked`]), or `homelab node engine --plan ID`, which checks its folder's bundle
//! against the trust roots first. It holds the plan's engine lock while it runs (one engine per
//! plan), numbers its run, and runs the node's part
//! (`apply::engine::here`) over the node's own commands. Every step, each request for a
//! confirmation, and the end are lines of its run's progress file, which sessions stream.
//!
//! The dead-man is the engine's: after a deploy it asks for a confirmation over a fresh
//! connection and waits for it (the contract's budget); none in time, it waits for the
//! node's watchdog to take the deploy's one decision and records the node's rollback.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use super::{trust, Folder};
use crate::apply::engine::Progress;
use crate::apply::{self, Event, Mode, NodeOutcome, Options, Sink};
use crate::model::{Instance, Node};
use crate::node::Layout;
use crate::transport::local::LocalExec;
use crate::transport::{ExecError, NodeExec, Transport};
use crate::wire::Bundle;

/// Longest wait for the node's own watchdogs after no confirmation came.
const DECISION_WAIT: Duration = Duration::from_secs(3600);

/// Runs the engine for `plan` on the node whose runtime root is `root`, its bundle read from
/// the plan's engine folder and checked here.
pub fn engine(root: &Path, plan: &str) -> Result<(), String> {
    engine_with(root, plan, None)
}

/// A bundle `serve` checked against the node's roots, in the process the engine runs in.
pub(super) struct Checked {
    pub bundle: Bundle,
    pub loaded: crate::plan::file::LoadedPlan,
    pub roots: trust::Roots,
}

/// The engine in the process of the `serve` that checked its bundle (forked from it once the
/// bundle checked out): the same run, the check not made twice.
pub(super) fn engine_checked(root: &Path, checked: Checked) -> Result<(), String> {
    let plan = checked.loaded.id.clone();
    engine_with(root, &plan, Some(checked))
}

fn engine_with(root: &Path, plan: &str, checked: Option<Checked>) -> Result<(), String> {
    let layout = Layout::local(root);
    let folder = Folder::new(layout.engine(plan));
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(folder.lock())
        .map_err(|e| format!("cannot open {}: {e}", folder.lock().display()))?;
    // SAFETY: flock on a descriptor we own, held until this process ends.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(format!("another engine runs plan {plan} on this node"));
    }
    // For the operator (and the tests) who look for the engine: its pid, while it runs.
    let _ = crate::files::write_atomic(
        &folder.dir.join("pid"),
        format!("{}\n", std::process::id()).as_bytes(),
    );
    let n = folder.latest() + 1;
    // 0600: its steps quote what failed steps printed (redacted, but the node's own).
    let progress = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(folder.run(n))
        .map_err(|e| format!("cannot create {}: {e}", folder.run(n).display()))?;
    crate::files::write_atomic(&folder.current(), format!("{n}\n").as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", folder.current().display()))?;
    let sink = FileSink { out: Mutex::new(progress) };
    let ready = match checked {
        Some(c) => take_roots(&layout, c),
        None => prepare(&layout, &folder),
    };
    let outcome = match ready {
        Ok(ready) => ready.run(&layout, &folder, &sink),
        Err(reason) => (NodeOutcome::Refused { reason }, 0),
    };
    sink.write(&Progress::Done { outcome: outcome.0, round_trips: outcome.1 });
    drop(lock);
    Ok(())
}

struct Ready {
    bundle: Bundle,
    loaded: crate::plan::file::LoadedPlan,
    roots: trust::Roots,
    /// The trust roots this plan replaced.
    rotated: Vec<String>,
}

/// The folder's bundle, checked here: the engine trusts no file it did not check itself.
fn prepare(layout: &Layout, folder: &Folder) -> Result<Ready, String> {
    let bytes = std::fs::read(folder.bundle())
        .map_err(|e| format!("cannot read {}: {e}", folder.bundle().display()))?;
    let bundle: Bundle = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{}: unreadable: {e}", folder.bundle().display()))?;
    let roots = trust::load(layout)?;
    let loaded = trust::check(&roots, &bundle, layout, SystemTime::now())?;
    take_roots(layout, Checked { bundle, loaded, roots })
}

/// Approved under the roots the node holds: the plan's roots may now replace them.
fn take_roots(layout: &Layout, checked: Checked) -> Result<Ready, String> {
    let Checked { bundle, loaded, roots } = checked;
    let rotated = trust::take_roots(layout, &loaded)?;
    Ok(Ready { bundle, loaded, roots, rotated })
}

impl Ready {
    fn run(self, layout: &Layout, folder: &Folder, sink: &FileSink) -> (NodeOutcome, usize) {
        let Ready { bundle, loaded, roots, rotated } = self;
        if !rotated.is_empty() {
            sink.write(&Progress::Step {
                event: Event::Step {
                    node: roots.node.clone(),
                    service: None,
                    stage: "trust".to_owned(),
                    message: format!(
                        "the node's trust roots replaced by the plan's ({}), approved under the old ones",
                        rotated.join(", ")
                    ),
                },
            });
        }
        let Some(np) = loaded.plan.nodes.iter().find(|n| n.node == roots.node) else {
            return (
                NodeOutcome::Refused { reason: "the plan holds nothing for this node".to_owned() },
                0,
            );
        };
        let Ok(expires) = humantime::parse_rfc3339(&loaded.plan.expires) else {
            return (
                NodeOutcome::Refused { reason: "the plan's expiry is unreadable".to_owned() },
                0,
            );
        };
        let node = Node::bare(roots.node.clone(), layout.root().to_owned(), super::docker_socket());
        let confirm_timeout = bundle.confirm_timeout_secs.map(Duration::from_secs);
        let opts = Options {
            nodes: None,
            services: bundle.services.clone(),
            mode: Mode::Run { only: bundle.stage },
            resume: bundle.resume,
            lock_wait: Duration::from_secs(bundle.lock_wait_secs),
            parallel: 1,
            holder: format!("{} (the node's engine)", bundle.holder),
            host: super::hostname(),
            pid: std::process::id(),
            clock: SystemTime::now,
            expires,
            keep_releases: roots.policy.keep_releases,
            confirm_timeout,
            signed: None,
            finished_nodes: bundle.finished_nodes.iter().cloned().collect(),
        };
        let in_run = bundle.in_run.iter().cloned().collect();
        let settled = |inst: &Instance| -> Option<bool> {
            let said = std::fs::read_to_string(folder.settled(inst)).ok()?;
            Some(said.trim() == "ok")
        };
        let transport = EngineTransport {
            root: layout.root().to_owned(),
            docker_socket: node.docker_socket.clone(),
            folder,
            jobs: PathBuf::from(layout.deploy(&loaded.id)).join("jobs"),
            sink,
            connections: AtomicU64::new(0),
            confirm_timeout: confirm_timeout.unwrap_or(Duration::from_secs(30)),
        };
        // The node's own services, as they end: its controllers relay them to dependents
        // elsewhere.
        let on_settle = |inst: &Instance, ok: bool| {
            if inst.node == roots.node {
                sink.write(&Progress::Settled { instance: inst.clone(), ok });
            }
        };
        apply::engine::here(
            &node,
            &loaded.id,
            &loaded.plan,
            np,
            &transport,
            &opts,
            sink,
            &in_run,
            &settled,
            &on_settle,
        )
    }
}

/// Progress lines appended to the run's file, one write each.
struct FileSink {
    out: Mutex<std::fs::File>,
}

impl FileSink {
    fn write(&self, p: &Progress) {
        let Ok(mut line) = serde_json::to_vec(p) else { return };
        line.push(b'\n');
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = out.write_all(&line);
        let _ = out.flush();
    }
}

impl Sink for FileSink {
    fn event(&self, e: &Event) {
        if let Event::Step { .. } = e {
            self.write(&Progress::Step { event: e.clone() });
        }
    }
}

/// The node's commands for the engine's run. Its first connection is the run's; each later
/// one is the fresh connection a deploy's confirmation needs: the engine asks the controller
/// for it and goes on checking the deploy (the healthcheck, the stability window) while the
/// `confirm` comes over a new session; the deploy is confirmed only once it has
/// ([`NodeExec::proven`], [`confirmation`]).
struct EngineTransport<'a> {
    root: String,
    docker_socket: String,
    folder: &'a Folder,
    /// `state/deploy/<plan>/jobs`: the deploys' dead-man folders.
    jobs: PathBuf,
    sink: &'a FileSink,
    connections: AtomicU64,
    confirm_timeout: Duration,
}

impl Transport for EngineTransport<'_> {
    fn connect(&self, _node: &Node) -> Result<Box<dyn NodeExec>, ExecError> {
        let exec = LocalExec::new(self.root.clone(), self.docker_socket.clone());
        let seq = self.connections.fetch_add(1, Ordering::SeqCst);
        if seq == 0 {
            return Ok(Box::new(exec));
        }
        self.sink.write(&Progress::AwaitConfirm { seq });
        let (proof, jobs, timeout) =
            (self.folder.confirm(seq), self.jobs.clone(), self.confirm_timeout);
        let asked = Instant::now();
        Ok(Box::new(exec.awaiting(move || confirmation(&proof, &jobs, asked, timeout))))
    }
}

/// The controller's confirmation at `proof`, or the dead-man's decisions without it: it may
/// come until `timeout` after it was `asked` for; after that the watchdogs under `jobs`
/// decide, and roll back, and once they are done the healthcheck that waited reads their
/// decision (the node's rollback) instead of confirming.
fn confirmation(
    proof: &Path,
    jobs: &Path,
    asked: Instant,
    timeout: Duration,
) -> Result<(), String> {
    let changes = proof.parent().map(|dir| {
        let _ = super::private_dir(dir);
        super::Changes::in_dir(dir)
    });
    while asked.elapsed() < timeout {
        if proof.exists() {
            return Ok(());
        }
        // Woken when the confirmation is handed in (the apply waits on it).
        let left = timeout.saturating_sub(asked.elapsed());
        match &changes {
            Some(changes) => changes.wait(left.min(Duration::from_millis(500))),
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    if proof.exists() {
        return Ok(());
    }
    let began = Instant::now();
    while began.elapsed() < DECISION_WAIT {
        if undecided(jobs).is_empty() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Err(format!(
        "the controller's confirmation did not come within {timeout:?}, and the node's dead-man has not decided: {}",
        undecided(jobs).join(", ")
    ))
}

/// The deploys under `jobs` whose dead-man watchdog still runs: waiting for its deadline, or
/// rolling back (it decides first, then rolls back and verifies the old version, then ends).
fn undecided(jobs: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(jobs) else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| {
            let dm = e.path().join("deadman");
            let pid: u32 = std::fs::read_to_string(dm.join("pid")).ok()?.trim().parse().ok()?;
            crate::node::records::process_alive(pid)
                .then(|| e.file_name().to_string_lossy().into_owned())
        })
        .collect()
}
