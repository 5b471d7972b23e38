//! The SSH transport: the openssh crate over the system `ssh`, one multiplexed connection
//! (ControlMaster) per node.
//!
//! - Host keys are checked strictly against `inventory/known_hosts` (or the file given).
//! - Keepalives every 2 s, three missed ones drop the link: a dead LTE link is noticed in
//!   about 6 s, and every remote step also has its own timeout.
//! - Commands are argument vectors quoted by `quote::argv`; nothing is built with `format!`.
//! - The Docker Engine API is reached with bollard through a forwarded unix socket.
//!
//! It carries commands; it never builds one from a string, nor knows what one does.

use std::path::{Path, PathBuf};
use std::time::Duration;

use openssh::{ForwardType, KnownHosts, Session, SessionBuilder, Socket, Stdio};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{quote, Container, DockerError, ExecError, NodeExec, Output, Transport};
use crate::model::Node;

/// How homelab connects to nodes over SSH.
#[derive(Debug, Clone)]
pub struct SshTransport {
    pub known_hosts: PathBuf,
    /// The private key to log in with (`-i`); `None` uses ssh's defaults and agent.
    pub identity: Option<PathBuf>,
    pub connect_timeout: Duration,
    /// Where control sockets and forwarded sockets live (short paths: unix sockets are limited
    /// to about 100 bytes).
    pub control_dir: PathBuf,
}

impl SshTransport {
    pub fn new(known_hosts: PathBuf, identity: Option<PathBuf>) -> Self {
        SshTransport {
            known_hosts,
            identity,
            connect_timeout: Duration::from_secs(20),
            control_dir: std::env::temp_dir(),
        }
    }
}

/// How many SSH handshakes run at once, in this process. Fifty at once on two loaded cores ran
/// past the connect timeout; eight made a 20-node plan over 150 ms links wait three turns of
/// ~2 s handshakes (3× the floor). A handshake over a slow link mostly waits, so sixteen.
const HANDSHAKES_AT_ONCE: usize = 16;

/// A turn to make a handshake (see [`HANDSHAKES_AT_ONCE`]), given back when dropped.
struct Handshakes;

static HANDSHAKING: (std::sync::Mutex<usize>, std::sync::Condvar) =
    (std::sync::Mutex::new(0), std::sync::Condvar::new());

impl Handshakes {
    fn take() -> Handshakes {
        let (count, turn) = &HANDSHAKING;
        let mut n = count.lock().unwrap_or_else(|e| e.into_inner());
        while *n >= HANDSHAKES_AT_ONCE {
            n = turn.wait(n).unwrap_or_else(|e| e.into_inner());
        }
        *n += 1;
        Handshakes
    }
}

impl Drop for Handshakes {
    fn drop(&mut self) {
        let (count, turn) = &HANDSHAKING;
        *count.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        turn.notify_one();
    }
}

impl Transport for SshTransport {
    fn connect(&self, node: &Node) -> Result<Box<dyn NodeExec>, ExecError> {
        Ok(Box::new(SshExec::connect(self, node)?))
    }
}

/// Removes `hl-ssh-*` folders left by controllers that were killed: older than ten minutes
/// (a connection being set up right now is never touched), owned by this user, and with no
/// live master behind their control socket. Once per process.
fn sweep_stale_control_dirs(dir: &std::path::Path) {
    use std::os::unix::fs::MetadataExt;
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        // SAFETY: getuid has no preconditions.
        let me = unsafe { libc::getuid() };
        for e in entries.flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
            let old = meta
                .modified()
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age > Duration::from_secs(600));
            if !name.starts_with("hl-ssh-") || !meta.is_dir() || meta.uid() != me || !old {
                continue;
            }
            let live = std::fs::read_dir(&path)
                .into_iter()
                .flatten()
                .flatten()
                .any(|f| std::os::unix::net::UnixStream::connect(f.path()).is_ok());
            if !live {
                let _ = std::fs::remove_dir_all(&path);
            }
        }
    });
}

pub struct SshExec {
    rt: tokio::runtime::Runtime,
    session: Option<Session>,
    root: String,
    docker_socket: String,
    /// The local end of the forwarded Docker socket, once requested.
    forwarded: std::sync::Mutex<Option<PathBuf>>,
    dir: tempfile::TempDir,
    label: String,
}

impl SshExec {
    pub fn connect(t: &SshTransport, node: &Node) -> Result<SshExec, ExecError> {
        if !t.known_hosts.exists() {
            return Err(ExecError::NoKnownHosts {
                known_hosts: t.known_hosts.clone(),
                port: node.ssh.port,
                address: node.ssh.address.clone(),
            });
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| ExecError::Setup { what: "start the async runtime", source })?;
        sweep_stale_control_dirs(&t.control_dir);
        let dir = tempfile::Builder::new()
            .prefix("hl-ssh-")
            .tempdir_in(&t.control_dir)
            .map_err(|source| ExecError::Setup { what: "create a control folder", source })?;
        let config = dir.path().join("config");
        // Options the builder has no method for; everything else goes through the builder.
        std::fs::write(
            &config,
            "BatchMode yes\nServerAliveCountMax 3\nIdentitiesOnly yes\nLogLevel ERROR\nConnectionAttempts 1\n",
        )
        .map_err(|source| ExecError::Setup { what: "write ssh config", source })?;
        let mut b = SessionBuilder::default();
        b.user(node.ssh.user.clone())
            .port(node.ssh.port)
            .known_hosts_check(KnownHosts::Strict)
            .user_known_hosts_file(&t.known_hosts)
            .connect_timeout(t.connect_timeout)
            .server_alive_interval(Duration::from_secs(2))
            .control_directory(dir.path())
            // A controller killed mid-apply must not leave a master running forever: idle
            // masters exit. Ten minutes is longer than any pause of an apply between commands.
            .control_persist(openssh::ControlPersist::IdleFor(
                std::num::NonZeroUsize::new(600).expect("nonzero"),
            ))
            .config_file(&config);
        if let Some(key) = &t.identity {
            b.keyfile(key);
        }
        let label = format!("{}@{}:{}", node.ssh.user, node.ssh.address, node.ssh.port);
        // A few handshakes at a time: fifty at once on a small controller starve each other
        // past the timeout, and nodes that would answer are called unreachable. The wait for a
        // turn is not counted against the timeout.
        let _turn = Handshakes::take();
        let session = rt
            .block_on(async {
                tokio::time::timeout(
                    t.connect_timeout + Duration::from_secs(5),
                    b.connect(&node.ssh.address),
                )
                .await
            })
            .map_err(|_| ExecError::Unreachable {
                node: label.clone(),
                reason: format!("no answer within {:?}", t.connect_timeout),
            })?
            .map_err(|e| ExecError::Unreachable { node: label.clone(), reason: error_text(&e) })?;
        Ok(SshExec {
            rt,
            session: Some(session),
            root: node.runtime_root.clone(),
            docker_socket: node.docker_socket.clone(),
            forwarded: std::sync::Mutex::new(None),
            dir,
            label,
        })
    }

    fn session(&self) -> &Session {
        self.session.as_ref().expect("open until drop")
    }

    fn forward_docker(&self) -> Result<PathBuf, DockerError> {
        let mut guard = self.forwarded.lock().map_err(|_| DockerError::Poisoned)?;
        if let Some(p) = guard.as_ref() {
            return Ok(p.clone());
        }
        let local = self.dir.path().join("docker.sock");
        let remote = Path::new(&self.docker_socket);
        self.rt
            .block_on(async {
                tokio::time::timeout(
                    Duration::from_secs(10),
                    self.session().request_port_forward(
                        ForwardType::Local,
                        Socket::from(local.as_path()),
                        Socket::from(remote),
                    ),
                )
                .await
            })
            .map_err(|_| DockerError::ForwardTimeout)?
            .map_err(|e| DockerError::Forward {
                socket: self.docker_socket.clone(),
                reason: error_text(&e),
            })?;
        *guard = Some(local.clone());
        Ok(local)
    }
}

fn error_text(e: &openssh::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s.trim().to_owned()
}

impl SshExec {
    /// `argv` as the one command line ssh sends, and its program's name for messages (traced
    /// as `ssh command` plus `kind`).
    fn command_line(&self, argv: &[&str], kind: &str) -> Result<(String, String), ExecError> {
        let line = quote::argv(argv)?;
        let what = argv.first().copied().unwrap_or_default().to_owned();
        tracing::debug!(target: "homelab::transport", node = %self.label, program = %what, args = argv.len() - 1, "ssh command{kind}");
        Ok((line, what))
    }

    /// `line` started on the node with every stream piped, `stdin` written to it and closed.
    async fn spawn(
        &self,
        line: &str,
        stdin: &[u8],
    ) -> Result<openssh::Child<&Session>, openssh::Error> {
        let mut cmd = self.session().raw_command(line);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().await?;
        if let Some(mut input) = child.stdin().take() {
            // A node that hangs up early is seen in the exit status.
            let _ = input.write_all(stdin).await;
            let _ = input.shutdown().await;
        }
        Ok(child)
    }

    /// The command's output, unless the connection failed under it: an ssh error, or ssh's
    /// own exit status 255 with the master no longer answering.
    fn finished(&self, out: Result<Output, openssh::Error>) -> Result<Output, ExecError> {
        match out {
            Err(e) => {
                Err(ExecError::Unreachable { node: self.label.clone(), reason: error_text(&e) })
            }
            Ok(out)
                if out.status == Some(255) && self.rt.block_on(self.session().check()).is_err() =>
            {
                Err(ExecError::Unreachable {
                    node: self.label.clone(),
                    reason: "the connection dropped".to_owned(),
                })
            }
            Ok(out) => Ok(out),
        }
    }
}

impl NodeExec for SshExec {
    fn run(&self, argv: &[&str], stdin: &[u8], timeout: Duration) -> Result<Output, ExecError> {
        let (line, what) = self.command_line(argv, "")?;
        let result = self.rt.block_on(async {
            tokio::time::timeout(timeout, async {
                self.spawn(&line, stdin).await?.wait_with_output().await
            })
            .await
        });
        match result {
            Err(_) => Err(ExecError::Timeout { what, after: timeout }),
            Ok(out) => self.finished(out.map(|out| Output {
                status: out.status.code(),
                stdout: out.stdout,
                stderr: out.stderr,
            })),
        }
    }

    fn run_streaming(
        &self,
        argv: &[&str],
        stdin: &[u8],
        idle: Duration,
    ) -> Result<Output, ExecError> {
        let (line, what) = self.command_line(argv, " (streaming)")?;
        let start = std::time::Instant::now();
        let mut got = Vec::new();
        let result: Result<Option<Output>, openssh::Error> = self.rt.block_on(async {
            let mut child = self.spawn(&line, stdin).await?;
            // Stdout as it comes; a pause of `idle` gives up (`None`).
            if let Some(mut out) = child.stdout().take() {
                let mut chunk = vec![0u8; 65536];
                loop {
                    match tokio::time::timeout(idle, out.read(&mut chunk)).await {
                        Err(_) => return Ok(None),
                        Ok(Ok(0)) | Ok(Err(_)) => break,
                        Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
                    }
                }
            }
            let mut stderr = Vec::new();
            if let Some(mut err) = child.stderr().take() {
                if tokio::time::timeout(idle, err.read_to_end(&mut stderr)).await.is_err() {
                    return Ok(None);
                }
            }
            match tokio::time::timeout(idle, child.wait()).await {
                Err(_) => Ok(None),
                Ok(status) => {
                    Ok(Some(Output { status: status?.code(), stdout: Vec::new(), stderr }))
                }
            }
        });
        match result {
            Ok(None) => Err(ExecError::Stalled { what, idle, after: start.elapsed(), stdout: got }),
            Ok(Some(out)) => self.finished(Ok(Output { stdout: got, ..out })),
            Err(e) => self.finished(Err(e)),
        }
    }

    fn containers(&self) -> Result<Vec<Container>, DockerError> {
        let local = self.forward_docker()?;
        let path = local.to_str().ok_or(DockerError::SocketNotUtf8)?;
        // Errors name the node's socket, not the local end of the forward.
        let theirs = || format!("{} (on {}, forwarded over SSH)", self.docker_socket, self.label);
        super::docker::containers(&self.rt, path, Duration::from_secs(10)).map_err(|e| match e {
            DockerError::Connect { source, .. } => {
                DockerError::Connect { socket: theirs(), source }
            }
            DockerError::NoAnswer { after, .. } => {
                DockerError::NoAnswer { socket: theirs(), after }
            }
            e => e,
        })
    }

    fn root(&self) -> &str {
        &self.root
    }

    fn docker_host(&self) -> String {
        format!("unix://{}", self.docker_socket)
    }
}

impl Drop for SshExec {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            let _ = self
                .rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(3), s.close()).await });
        }
    }
}
