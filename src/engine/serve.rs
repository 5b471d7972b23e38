//! `homelab node serve`: one session with a controller. Hello both ways (a peer of another
//! protocol or version gets this node's hello and nothing else), then one request:
//!
//! - `refresh`: the node's state, read here in process (`observe::here`, the engine's
//!   containers alongside);
//! - `apply`: the bundle checked against the node's trust roots before anything is written,
//!   then the engine started for it, detached (or, when one already runs the plan, followed),
//!   its progress streamed until its last line; `settled` messages read meanwhile;
//! - `attach`: the progress of the plan's latest engine run, from its first line;
//! - `confirm`: a fresh connection's proof for the engine's dead-man;
//! - `events`: the node's new event bytes past an observer's cursors;
//! - `diagnose`: the status of a plan's services, their logs kept here (`--stage diagnose`);
//! - `unlock`: the apply lock removed, unless an engine of this node runs (it holds it).
//!
//! A session that ends (the link, a killed controller) leaves the engine running.

use std::io::{BufRead, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use super::{trust, Folder};
use crate::node::Layout;
use crate::transport::local::LocalExec;
use crate::transport::NodeExec;
use crate::wire::{self, Hello, Reply, Request, WireError};

/// How long reading a node's new events may take: 120 s, or `HOMELAB_EVENTS_TIMEOUT` seconds
/// in `serve`'s environment. A read that hangs (a hung disk) is answered as refused then.
fn events_timeout() -> Duration {
    let secs = std::env::var("HOMELAB_EVENTS_TIMEOUT").ok().and_then(|s| s.trim().parse().ok());
    Duration::from_secs(secs.filter(|s| *s > 0).unwrap_or(120))
}

/// How long a new engine may take to begin its run before the session gives up on it.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves one session on `input`/`output` for the node whose runtime root is `root`.
pub fn serve(
    root: &Path,
    input: &mut (dyn Read + Send),
    output: &mut dyn Write,
) -> Result<(), WireError> {
    let layout = Layout::local(root);
    match wire::receive::<Request>(input)? {
        Some(Request::Hello(theirs)) => {
            wire::send(output, &Reply::Hello(Hello::ours()))?;
            if !theirs.matches() {
                return Ok(());
            }
        }
        Some(_) => {
            let reason = format!(
                "this is homelab {} (protocol {}): a session begins with hello",
                wire::VERSION,
                wire::PROTOCOL
            );
            return wire::send(output, &Reply::Refused { reason });
        }
        None => return Ok(()),
    }
    let Some(request) = wire::receive::<Request>(input)? else { return Ok(()) };
    match request {
        Request::Refresh => {
            let exec = LocalExec::new(layout.root().to_owned(), super::docker_socket());
            let idle = crate::observe::refresh_idle();
            let (out, containers) = std::thread::scope(|s| {
                let containers = s.spawn(|| exec.containers());
                let out = crate::observe::here::answer(Path::new(layout.root()), idle);
                (out, containers.join())
            });
            let containers = containers.unwrap_or_else(|p| std::panic::resume_unwind(p));
            let reply = match out {
                Ok(out) => Reply::refreshed(out, containers),
                // Said as the controller says a stalled refresh: the node answered, and how
                // far it got ("not read", never "unreachable").
                Err(crate::transport::ExecError::Stalled { idle, after, stdout, .. }) => {
                    Reply::Refused { reason: crate::observe::stalled(&stdout, idle, after) }
                }
                Err(e) => Reply::Refused { reason: format!("cannot read the runtime root: {e}") },
            };
            wire::send(output, &reply)
        }
        Request::Apply(bundle) => {
            let roots = match trust::load(&layout) {
                Ok(r) => r,
                Err(reason) => return wire::send(output, &Reply::Refused { reason }),
            };
            let loaded = match trust::check(&roots, &bundle, &layout, SystemTime::now()) {
                Ok(l) => l,
                Err(reason) => return wire::send(output, &Reply::Refused { reason }),
            };
            let id = loaded.id.clone();
            let folder = Folder::new(layout.engine(&id));
            let run = match start(&folder, root, super::run::Checked { bundle, loaded, roots }) {
                Ok(run) => run,
                Err(reason) => return wire::send(output, &Reply::Refused { reason }),
            };
            // `settled` messages while the engine runs; the reader ends with the session. The
            // controller keeps its side open until the run's last word: an end before it is a
            // controller gone (killed, its link dropped), and this session ends with it rather
            // than at its next write, so that the connection it rode (a master kept for an idle
            // limit) is idle from then on. The engine goes on.
            let gone = AtomicBool::new(false);
            std::thread::scope(|s| {
                let (folder, gone) = (&folder, &gone);
                s.spawn(move || {
                    settle(folder, input);
                    gone.store(true, Ordering::SeqCst);
                });
                stream(folder, run, &id, output, gone)
            })
        }
        Request::Attach { plan } => {
            let folder = Folder::new(layout.engine(&plan_name(&plan)?));
            match folder.latest() {
                0 => wire::send(
                    output,
                    &Reply::Refused {
                        reason: format!("no engine ran plan `{}` on this node", plan_name(&plan)?),
                    },
                ),
                n => stream(&folder, n, &plan, output, &AtomicBool::new(false)),
            }
        }
        Request::Confirm { plan, seq } => {
            let folder = Folder::new(layout.engine(&plan_name(&plan)?));
            let reply = match confirm(&folder, seq) {
                Ok(()) => Reply::Confirmed,
                Err(reason) => Reply::Refused { reason },
            };
            wire::send(output, &reply)
        }
        Request::Events { node, cursors, budget } => {
            let Ok(node) = crate::model::NodeName::parse(&node) else {
                return wire::send(
                    output,
                    &Reply::Refused { reason: "not a node name".to_owned() },
                );
            };
            let events = layout.events_root();
            // In a thread of its own, given up after as long as the shell's pull had: a read
            // that hangs (a hung disk) ends with this process.
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let out =
                    crate::world::pull::answer(Path::new(&events), node.as_str(), &cursors, budget);
                let _ = tx.send(out);
            });
            let timeout = events_timeout();
            let reply = match rx.recv_timeout(timeout) {
                Ok(out) if out.success() => {
                    Reply::Events { base64: crate::digest::base64_encode(&out.stdout) }
                }
                Ok(out) => Reply::Refused {
                    reason: format!("cannot read its events: {}", out.stderr_text()),
                },
                Err(_) => Reply::Refused {
                    reason: format!("cannot read its events: no answer within {timeout:?}"),
                },
            };
            wire::send(output, &reply)
        }
        Request::Diagnose { plan, services } => {
            let plan = plan_name(&plan)?;
            if Path::new(&layout.rejected(&plan)).exists() {
                let reason = format!(
                    "plan `{plan}` was rejected (recorded on this node by `homelab reject`): it never runs here"
                );
                return wire::send(output, &Reply::Refused { reason });
            }
            let exec = LocalExec::new(layout.root().to_owned(), super::docker_socket());
            let none = crate::apply::remote::Carry::default();
            let services = services
                .into_iter()
                .map(|service| {
                    let log = layout.diagnose_log(service.as_str(), &plan);
                    let status = crate::apply::remote::diagnose(
                        &exec,
                        &none,
                        &layout,
                        service.as_str(),
                        &log,
                        None,
                    )
                    .map(|d| d.status)
                    .map_err(|e| e.to_string());
                    wire::Diagnosed { service, status, log }
                })
                .collect();
            wire::send(output, &Reply::Diagnosed { services })
        }
        Request::Unlock => {
            let reply = match unlock(&layout) {
                Ok(holder) => Reply::Unlocked { holder },
                Err(reason) => Reply::Refused { reason },
            };
            wire::send(output, &reply)
        }
        Request::Hello(_) | Request::Settled { .. } => wire::send(
            output,
            &Reply::Refused {
                reason: "out of turn: hello is said once, settled only during an apply".to_owned(),
            },
        ),
    }
}

/// A plan id as a folder name: 16 lowercase hex digits, nothing else.
fn plan_name(plan: &str) -> Result<String, WireError> {
    if plan.len() == 16 && plan.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        Ok(plan.to_owned())
    } else {
        Err(WireError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "a plan id is 16 lowercase hex digits",
        )))
    }
}

/// The run to follow: the one of the engine already running the plan, else the one of an
/// engine started now with the bundle this session checked.
///
/// The engine is this process forked (no second start of the program, no second check of a
/// bundle this very process checked), in a session of its own so that a dropped session's
/// hangup does not reach it, its output in the folder's log. This process is single-threaded
/// here: the session's threads start once the engine's run began.
fn start(folder: &Folder, root: &Path, checked: super::run::Checked) -> Result<u64, String> {
    use std::os::fd::AsRawFd;
    let failed =
        |what: &str, e: std::io::Error| format!("cannot {what} {}: {e}", folder.dir.display());
    super::private_dir(&folder.dir).map_err(|e| failed("create", e))?;
    if folder.running() {
        return Ok(folder.latest());
    }
    let before = folder.latest();
    let bytes = serde_json::to_vec(&checked.bundle).map_err(|e| e.to_string())?;
    crate::files::write_atomic(&folder.bundle(), &bytes)
        .map_err(|e| failed("write the bundle in", e))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(folder.log())
        .map_err(|e| failed("open the log in", e))?;
    let null = std::fs::File::open("/dev/null").map_err(|e| failed("open /dev/null for", e))?;
    // Whatever this session buffered is out before the fork, not written twice.
    let _ = std::io::stdout().flush();
    // SAFETY: one thread (see above); the child never returns from this block.
    let child = match unsafe { libc::fork() } {
        -1 => return Err(format!("cannot start the engine: {}", std::io::Error::last_os_error())),
        0 => {
            // SAFETY: plain system calls on this process's own descriptors.
            unsafe {
                libc::setsid();
                libc::dup2(null.as_raw_fd(), 0);
                libc::dup2(log.as_raw_fd(), 1);
                libc::dup2(log.as_raw_fd(), 2);
            }
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                super::run::engine_checked(root, checked)
            }));
            let code = match ran {
                Ok(Ok(())) => 0,
                Ok(Err(message)) => {
                    eprintln!("error: {message}");
                    1
                }
                Err(_) => 101,
            };
            let _ = std::io::stderr().flush();
            std::process::exit(code);
        }
        pid => pid,
    };
    drop((checked, null, log));
    let began = Instant::now();
    let ended = move |block: bool| {
        let mut status = 0;
        // SAFETY: waits for this process's own child.
        let got =
            unsafe { libc::waitpid(child, &mut status, if block { 0 } else { libc::WNOHANG }) };
        (got == child).then_some(status)
    };
    loop {
        let now = folder.latest();
        if now > before {
            // Reaped whenever it ends, while this session still runs.
            std::thread::spawn(move || ended(true));
            return Ok(now);
        }
        if let Some(status) = ended(false) {
            // Another session's engine took the plan first: follow it.
            if folder.latest() > before {
                return Ok(folder.latest());
            }
            let said = std::fs::read_to_string(folder.log()).unwrap_or_default();
            let last = said.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").to_owned();
            let status =
                <std::process::ExitStatus as std::os::unix::process::ExitStatusExt>::from_raw(
                    status,
                );
            return Err(format!("the engine ended before its run began ({status}): {last}"));
        }
        if began.elapsed() > START_TIMEOUT {
            return Err(format!("the engine did not begin its run within {START_TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Streams run `n`'s progress lines from the first until its `done` line; an engine that
/// stopped before it is said as interrupted. Ends quietly once `gone` is set (nobody listens).
fn stream(
    folder: &Folder,
    n: u64,
    id: &str,
    output: &mut dyn Write,
    gone: &AtomicBool,
) -> Result<(), WireError> {
    let path = folder.run(n);
    let changes = super::Changes::in_dir(&folder.dir);
    let file = std::fs::File::open(&path)?;
    let mut lines = std::io::BufReader::new(file);
    let mut partial = String::new();
    let mut quiet_and_stopped = 0;
    loop {
        let mut chunk = String::new();
        let got = lines.read_line(&mut chunk)?;
        if got > 0 {
            partial.push_str(&chunk);
            if !partial.ends_with('\n') {
                continue;
            }
            let line = std::mem::take(&mut partial);
            let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
            let done = value.get("progress").and_then(|p| p.as_str()) == Some("done");
            wire::send(output, &Reply::Progress { line: value })?;
            if done {
                return Ok(());
            }
            quiet_and_stopped = 0;
            continue;
        }
        if gone.load(Ordering::SeqCst) {
            return Ok(());
        }
        // Nothing new: an engine that has stopped writes nothing more (looked at twice, so a
        // last line written as it ended is not missed).
        if !folder.running() {
            quiet_and_stopped += 1;
            if quiet_and_stopped > 1 {
                let reason = format!(
                    "the node's engine for plan {id} stopped before its end (its log: {})",
                    folder.log().display()
                );
                return wire::send(output, &Reply::Interrupted { reason });
            }
        }
        // Woken by the engine's next line; the timeout bounds how late a stopped engine, or
        // a controller gone, is seen.
        changes.wait(Duration::from_millis(100));
    }
}

/// Reads `settled` messages until the session ends, each kept for the engine.
fn settle(folder: &Folder, input: &mut (dyn Read + Send)) {
    while let Ok(Some(request)) = wire::receive::<Request>(input) {
        if let Request::Settled { instance, ok } = request {
            let path = folder.settled(&instance);
            if let Some(dir) = path.parent() {
                let _ = super::private_dir(dir);
            }
            let _ = crate::files::write_atomic(&path, if ok { b"ok\n" } else { b"failed\n" });
        }
    }
}

fn confirm(folder: &Folder, seq: u64) -> Result<(), String> {
    if !folder.bundle().exists() {
        return Err("no engine runs that plan on this node".to_owned());
    }
    let path = folder.confirm(seq);
    if let Some(dir) = path.parent() {
        super::private_dir(dir).map_err(|e| e.to_string())?;
    }
    crate::files::write_atomic(&path, b"").map_err(|e| e.to_string())
}

/// Removes the node's apply lock and gives what its holder said; refuses while an engine of
/// this node runs a plan (the lock is its, and `apply --resume` follows it).
fn unlock(layout: &Layout) -> Result<Option<String>, String> {
    let deploys = std::path::PathBuf::from(layout.deploy_root());
    for plan in std::fs::read_dir(&deploys).into_iter().flatten().flatten() {
        let pid = plan.path().join("engine/pid");
        let alive = std::fs::read_to_string(&pid)
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
            .is_some_and(crate::node::records::process_alive);
        if alive {
            return Err(format!(
                "the node's engine runs plan `{}`: the lock is its; `homelab apply --resume plans/{}.approved` follows it",
                plan.file_name().to_string_lossy(),
                plan.file_name().to_string_lossy()
            ));
        }
    }
    let lock = std::path::PathBuf::from(layout.lock());
    if !lock.is_dir() {
        return Ok(None);
    }
    let holder = std::fs::read_to_string(layout.lock_holder()).unwrap_or_else(|_| "{}".to_owned());
    std::fs::remove_dir_all(&lock).map_err(|e| format!("removing {}: {e}", lock.display()))?;
    Ok(Some(crate::quote::cut(holder.trim())))
}
