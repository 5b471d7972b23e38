//! The local transport: commands run on this machine.
//!
//! With `--root DIR`, node `<id>` has its runtime root at `DIR/<id>/` (one machine standing in
//! for the whole homelab); without it, at the node's own `runtime_root` (homelab running on
//! the node itself, e.g. `apply --node chelsty-infra` on CHELSTY-INFRA). It runs argument
//! vectors as given (no shell in between) and knows nothing of what they do.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{Container, DockerError, ExecError, NodeExec, Output, Transport};
use crate::model::Node;

#[derive(Debug, Clone)]
pub struct LocalTransport {
    base: Option<PathBuf>,
}

impl LocalTransport {
    /// `base`: `Some(DIR)` for `DIR/<node>/`, `None` for each node's own runtime root.
    pub fn new(base: Option<PathBuf>) -> Self {
        // Scripts `cd` and link by path: a relative root would point elsewhere from there.
        let base = base.map(|b| std::path::absolute(&b).unwrap_or(b));
        LocalTransport { base }
    }

    /// `DIR` of `--root DIR`, absolute; `None` without `--root`.
    pub fn base_dir(&self) -> Option<PathBuf> {
        self.base.clone()
    }

    pub fn root_of(&self, node: &Node) -> PathBuf {
        match &self.base {
            Some(dir) => dir.join(node.id.as_str()),
            None => PathBuf::from(&node.runtime_root),
        }
    }
}

impl Transport for LocalTransport {
    fn connect(&self, node: &Node) -> Result<Box<dyn NodeExec>, ExecError> {
        let root = self.root_of(node);
        let root = root.to_str().ok_or_else(|| ExecError::RootNotUtf8 { root: root.clone() })?;
        Ok(Box::new(LocalExec::new(root.to_owned(), node.docker_socket.clone())))
    }
}

pub struct LocalExec {
    root: String,
    docker_socket: String,
    /// Says it is not on this machine, so that what it runs goes through the scripts a remote
    /// node gets: the tests hold the in-process steps to them.
    as_remote: bool,
    /// What [`NodeExec::proven`] waits for (see [`LocalExec::awaiting`]).
    proof: Option<Proof>,
}

/// A wait for a proof that comes apart from the connection, run once: its outcome is shared
/// by every later call.
type Proof = (
    Box<dyn Fn() -> Result<(), String> + Send + Sync>,
    std::sync::Mutex<Option<Result<(), String>>>,
);

impl LocalExec {
    /// Commands on this machine for the node whose runtime root is `root`, its Docker Engine
    /// at `docker_socket` (the node's own engine, run on the node).
    pub fn new(root: String, docker_socket: String) -> LocalExec {
        LocalExec { root, docker_socket, as_remote: false, proof: None }
    }

    /// These commands, standing for a connection whose proof comes apart from them (a node's
    /// engine handed the controller's fresh connection): [`NodeExec::proven`] runs `wait` the
    /// first time, and gives its outcome from then on (`Err`: why it did not come).
    pub fn awaiting(
        self,
        wait: impl Fn() -> Result<(), String> + Send + Sync + 'static,
    ) -> LocalExec {
        LocalExec { proof: Some((Box::new(wait), std::sync::Mutex::new(None))), ..self }
    }

    /// A local node at `root` with the default Docker socket, for unit tests of what runs
    /// commands.
    #[cfg(test)]
    pub(crate) fn for_tests(root: &str) -> LocalExec {
        LocalExec {
            root: root.to_owned(),
            docker_socket: "/var/run/docker.sock".to_owned(),
            as_remote: false,
            proof: None,
        }
    }

    /// As [`LocalExec::for_tests`], taken for a remote node: every step runs its script.
    #[cfg(test)]
    pub(crate) fn for_tests_as_remote(root: &str) -> LocalExec {
        LocalExec { as_remote: true, ..LocalExec::for_tests(root) }
    }
}

impl NodeExec for LocalExec {
    fn run(&self, argv: &[&str], stdin: &[u8], timeout: Duration) -> Result<Output, ExecError> {
        run_local(argv, stdin, timeout)
    }

    fn run_streaming(
        &self,
        argv: &[&str],
        stdin: &[u8],
        idle: Duration,
    ) -> Result<Output, ExecError> {
        run_local_limited(argv, stdin, Limit::Idle(idle))
    }

    fn containers(&self) -> Result<Vec<Container>, DockerError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| DockerError::Runtime { source })?;
        super::docker::containers(&rt, &self.docker_socket, Duration::from_secs(10))
    }

    fn root(&self) -> &str {
        &self.root
    }

    fn docker_host(&self) -> String {
        format!("unix://{}", self.docker_socket)
    }

    fn on_this_machine(&self) -> bool {
        !self.as_remote
    }

    fn proven(&self) -> Result<(), ExecError> {
        let Some((wait, outcome)) = &self.proof else { return Ok(()) };
        let mut outcome = outcome.lock().unwrap_or_else(|e| e.into_inner());
        let outcome = outcome.get_or_insert_with(wait);
        outcome.clone().map_err(|reason| ExecError::Unproven { reason })
    }
}

/// Runs a process in its own process group; on timeout the whole group is killed, so a hung
/// `docker compose` takes its children with it.
pub fn run_local(argv: &[&str], stdin: &[u8], timeout: Duration) -> Result<Output, ExecError> {
    run_local_limited(argv, stdin, Limit::Total(timeout))
}

/// How long a command may take: in all, or without printing anything.
#[derive(Clone, Copy)]
enum Limit {
    Total(Duration),
    Idle(Duration),
}

fn run_local_limited(argv: &[&str], stdin: &[u8], limit: Limit) -> Result<Output, ExecError> {
    let (program, args) = argv.split_first().ok_or(ExecError::EmptyCommand)?;
    // The program and its argument count, never stdin (artifact bytes) nor argument values.
    tracing::debug!(target: "homelab::transport", program, args = args.len(), "local command");
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|source| ExecError::Spawn { program: program.to_string(), source })?;
    let mut input = child.stdin.take().expect("piped");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let mut out_pipe = child.stdout.take().expect("piped");
    let mut err_pipe = child.stderr.take().expect("piped");
    // Stdout as it comes, and when it last came (for `Limit::Idle`).
    let progress = std::sync::Arc::new(std::sync::Mutex::new((Vec::new(), Instant::now())));
    let shared = progress.clone();
    let out_reader = std::thread::spawn(move || {
        let mut chunk = [0u8; 16384];
        loop {
            match out_pipe.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut p = shared.lock().unwrap_or_else(|e| e.into_inner());
                    p.0.extend_from_slice(&chunk[..n]);
                    p.1 = Instant::now();
                }
            }
        }
    });
    let err_reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err_pipe.read_to_end(&mut b);
        b
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if over(limit, start, &progress) => {
                // SAFETY: kill(2) on our own child's process group id; no memory is touched.
                unsafe {
                    libc::kill(-(child.id() as i32), libc::SIGKILL);
                }
                let _ = child.wait();
                let what = program.to_string();
                return Err(match limit {
                    Limit::Total(after) => ExecError::Timeout { what, after },
                    Limit::Idle(idle) => {
                        let _ = out_reader.join();
                        let stdout = std::mem::take(
                            &mut progress.lock().unwrap_or_else(|e| e.into_inner()).0,
                        );
                        ExecError::Stalled { what, idle, after: start.elapsed(), stdout }
                    }
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(source) => return Err(ExecError::Wait { program: program.to_string(), source }),
        }
    };
    let _ = writer.join();
    let _ = out_reader.join();
    let stdout = std::mem::take(&mut progress.lock().unwrap_or_else(|e| e.into_inner()).0);
    let stderr = err_reader.join().unwrap_or_default();
    Ok(Output { status: status.code(), stdout, stderr })
}

/// Whether a running command is past its limit.
fn over(limit: Limit, start: Instant, progress: &std::sync::Mutex<(Vec<u8>, Instant)>) -> bool {
    match limit {
        Limit::Total(t) => start.elapsed() >= t,
        Limit::Idle(t) => progress.lock().unwrap_or_else(|e| e.into_inner()).1.elapsed() >= t,
    }
}
