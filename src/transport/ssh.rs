//! The SSH transport: the system `ssh`, one connection per node shared by a command's
//! sessions and kept for the next command.
//!
//! - Sessions with a node's homelab (`node serve`) ride one master per node (`ControlMaster`),
//!   in this user's own folder of control sockets, kept [`IDLE`] after its last session so that
//!   a `plan` and the `apply` after it make one handshake per node between them. The ssh
//!   clients are this process's children and die with it (`PR_SET_PDEATHSIG`); the master is a
//!   daemon whose sessions end with them, so a killed controller leaves nothing past the idle
//!   limit. The dead-man's confirmation is never a master's: a new connection of its own,
//!   which asks for a cheap key exchange first (it carries nothing secret; see
//!   [`confirmation_kex`]).
//! - Connections for commands and the Docker API (the openssh crate: bootstrap, backups) have
//!   a master of their own in the foreground, killed with this process (see [`spawn_tied`]):
//!   a forwarded Docker socket would keep a daemon busy forever.
//! - Host keys are checked strictly against `inventory/known_hosts` (or the file given).
//! - Keepalives every 2 s, three missed ones drop the link: a dead LTE link is noticed in
//!   about 6 s, and every remote step also has its own timeout.
//! - Commands are argument vectors quoted by `quote::argv`; nothing is built with `format!`.
//! - The Docker Engine API is reached with bollard through a forwarded unix socket.
//!
//! It carries commands; it never builds one from a string, nor knows what one does.

use std::path::{Path, PathBuf};
use std::time::Duration;

use openssh::{ForwardType, Session, Socket, Stdio};
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
    /// How long a node's session master stays up once its last session ended, for the next
    /// command (a `plan`, then its `apply`) to ride; zero: none is kept, each session is its own
    /// connection.
    pub idle: Duration,
}

/// The default of [`SshTransport::idle`]: a plan, its approval and its apply made in a row ride
/// one connection per node; a review that takes longer pays one more handshake.
pub const IDLE: Duration = Duration::from_secs(60);

impl SshTransport {
    pub fn new(known_hosts: PathBuf, identity: Option<PathBuf>) -> Self {
        SshTransport {
            known_hosts,
            identity,
            connect_timeout: Duration::from_secs(20),
            control_dir: std::env::temp_dir(),
            idle: IDLE,
        }
    }

    /// The control socket of `node`'s shared master, in this user's folder of them
    /// (`<control_dir>/homelab-<uid>/`, mode 0700, made if missing): named by a digest of
    /// what the connection was made with — user, address, port, key, and the known_hosts
    /// file's content, so that a master checked against other host keys is never reused.
    /// `None` (every session its own connection) when no master is kept ([`SshTransport::idle`]
    /// zero) or the folder is not safely this user's alone.
    fn shared_master(&self, node: &Node) -> Option<PathBuf> {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt};
        if self.idle.is_zero() {
            return None;
        }
        // SAFETY: getuid has no preconditions.
        let me = unsafe { libc::getuid() };
        let folder = self.control_dir.join(format!("homelab-{me}"));
        let _ = std::fs::DirBuilder::new().mode(0o700).create(&folder);
        let meta = std::fs::symlink_metadata(&folder).ok()?;
        if !meta.is_dir() || meta.uid() != me || meta.mode() & 0o077 != 0 {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                tracing::warn!(
                    folder = %folder.display(),
                    "not this user's alone (a folder of mode 0700 owned by uid {me}): no ssh \
                     connection is kept between commands"
                )
            });
            return None;
        }
        let known_hosts = std::fs::read(&self.known_hosts).ok()?;
        let mut what = Vec::new();
        for part in [
            node.ssh.user.as_bytes(),
            node.ssh.address.as_bytes(),
            node.ssh.port.to_string().as_bytes(),
            self.identity.as_ref().map_or(&b""[..], |k| k.as_os_str().as_encoded_bytes()),
            &known_hosts,
        ] {
            what.extend_from_slice(part);
            what.push(0);
        }
        let digest = crate::digest::sha256_hex(&what);
        Some(folder.join(&digest[..24]))
    }

    /// A session with `node`'s homelab: through the node's shared master (started by the
    /// first, kept [`SshTransport::idle`] after the last) unless `fresh`, a connection of its
    /// own.
    fn open(&self, node: &Node, fresh: bool) -> Result<Option<super::Session>, ExecError> {
        if !self.known_hosts.exists() {
            return Err(ExecError::NoKnownHosts {
                known_hosts: self.known_hosts.clone(),
                port: node.ssh.port,
                address: node.ssh.address.clone(),
            });
        }
        let root = node.runtime_root.trim_end_matches('/');
        let binary = format!("{root}/bin/homelab");
        let line = quote::argv(&[binary.as_str(), "node", "serve", "--root", root])?;
        let mut known_hosts = std::ffi::OsString::from("UserKnownHostsFile=");
        known_hosts.push(&self.known_hosts);
        let errors = tempfile::tempfile().map_err(|source| ExecError::Setup {
            what: "create a file for ssh's errors",
            source,
        })?;
        let stderr = errors.try_clone().map_err(|source| ExecError::Setup {
            what: "create a file for ssh's errors",
            source,
        })?;
        let mut cmd = std::process::Command::new("ssh");
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .args(["-T", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
            .args(["-o", "LogLevel=ERROR", "-o", "ConnectionAttempts=1"])
            .args(["-o", "StrictHostKeyChecking=yes", "-o", "ServerAliveInterval=2"])
            .args(["-o", "ServerAliveCountMax=3"]);
        match (fresh, self.shared_master(node)) {
            // The master is a daemon (`ControlPersist`): this ssh forks it after the login and
            // goes on as its first client. A fork does not inherit the parent-death signal, so
            // the master outlives a killed controller, but only by the idle limit: its clients
            // (tied to this process) die with the controller, and their sessions with them.
            (false, Some(path)) => {
                let mut control = std::ffi::OsString::from("ControlPath=");
                control.push(&path);
                cmd.args(["-o", "ControlMaster=auto", "-o"])
                    .arg(control)
                    .arg("-o")
                    .arg(format!("ControlPersist={}s", self.idle.as_secs().max(1)));
            }
            _ => {
                cmd.args(["-o", "ControlMaster=no", "-o", "ControlPath=none"]);
            }
        }
        if let (true, Some(kex)) = (fresh, confirmation_kex()) {
            cmd.arg("-o").arg(format!("KexAlgorithms={kex}"));
        }
        cmd.arg("-o")
            .arg(format!("ConnectTimeout={}", self.connect_timeout.as_secs().max(1)))
            .arg("-p")
            .arg(node.ssh.port.to_string())
            .arg("-l")
            .arg(&node.ssh.user)
            .arg("-o")
            .arg(known_hosts);
        if let Some(key) = &self.identity {
            cmd.arg("-i").arg(key);
        }
        cmd.arg("--").arg(&node.ssh.address).arg(line);
        let label = format!("{}@{}:{}", node.ssh.user, node.ssh.address, node.ssh.port);
        let turn = Handshakes::take();
        let child =
            spawn_tied(cmd).map_err(|source| ExecError::Setup { what: "start ssh", source })?;
        let session = super::Session::new(child, errors, Some(Box::new(turn)), label)
            .map_err(|source| ExecError::Setup { what: "start ssh", source })?;
        Ok(Some(session))
    }
}

/// The key exchanges a confirmation's connection asks for first (ssh's `^`: at the head of
/// OpenSSH's own list, which follows in its order), the first this `ssh` takes
/// (`ssh -G`, once per process); `None`, OpenSSH's own list as is.
///
/// That connection proves the node still takes a new login after a deploy; it carries the
/// plan's id and the word `confirm`, nothing to keep secret from a recording of it. The default
/// of OpenSSH 9.0–9.8, sntrup761x25519, is there to keep recorded sessions secret from a future
/// quantum computer, and it costs the controller's `ssh` ~90 ms of CPU per handshake
/// (curve25519-sha256: ~15 ms; bench notes, 2026-12-06): at fifty nodes, seconds of an apply's
/// two cores spent guarding nothing. ML-KEM's hybrid (OpenSSH 9.9's default) is as cheap as
/// curve25519 and is asked first where this `ssh` has it. Authentication is unchanged: the
/// host key checked against known_hosts, the user's key. Every other connection keeps
/// OpenSSH's own list.
fn confirmation_kex() -> Option<&'static str> {
    const PREFERRED: [&str; 2] = [
        "^mlkem768x25519-sha256,curve25519-sha256,curve25519-sha256@libssh.org",
        "^curve25519-sha256,curve25519-sha256@libssh.org",
    ];
    static CHOSEN: std::sync::OnceLock<Option<&'static str>> = std::sync::OnceLock::new();
    *CHOSEN.get_or_init(|| {
        PREFERRED.into_iter().find(|kex| {
            std::process::Command::new("ssh")
                .args(["-F", "/dev/null", "-G", "-o"])
                .arg(format!("KexAlgorithms={kex}"))
                .arg("homelab-kex-probe")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
    })
}

/// How many SSH handshakes run at once, in this process. Fifty at once on two loaded cores ran
/// past the connect timeout (2026-11-30, the benchmark's fifty sshd nodes sharing those cores);
/// eight made a 20-node plan over 150 ms links wait three turns of ~2 s handshakes (3× the
/// floor), sixteen two turns (4.9 s against the floor's 2.7 s, 2026-12-05). A handshake over a
/// slow link mostly waits; with one connection per node (no longer four) fifty at once cost
/// the CPU 50 × ~0.12 s, a third of the connect timeout, and thirty-two made a 50-node plan
/// over 150 ms links take two turns (6.5 s against the floor's 4.8 s, 2026-12-06). So
/// sixty-four: a homelab of up to 64 nodes connects in one turn.
const HANDSHAKES_AT_ONCE: usize = 64;

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

    /// `ssh` running `<root>/bin/homelab node serve --root <root>` through the node's shared
    /// master (see [`SshTransport::open`]); with a deploy key restricted to that command, the
    /// node runs it whatever is asked. The ssh is tied to this process like a master
    /// ([`spawn_tied`]): a killed controller leaves no client behind, and the node's `serve`
    /// sees its stdin end (the engine it started goes on).
    fn session(&self, node: &Node) -> Result<Option<super::Session>, ExecError> {
        self.open(node, false)
    }

    /// A session over a new connection of its own, never a master's: the proof that the node
    /// still takes new connections after a deploy.
    fn fresh_session(&self, node: &Node) -> Result<Option<super::Session>, ExecError> {
        self.open(node, true)
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
    /// The `ssh -M` process: this process's child, reaped on drop.
    master: Option<std::process::Child>,
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
        // Options that never change; `-F` also keeps the user's and the system's ssh_config
        // (a `ControlPersist` there, say) out of it.
        std::fs::write(
            &config,
            "BatchMode yes\nServerAliveCountMax 3\nIdentitiesOnly yes\nLogLevel ERROR\nConnectionAttempts 1\n",
        )
        .map_err(|source| ExecError::Setup { what: "write ssh config", source })?;
        let ctl = dir.path().join("master");
        let log = dir.path().join("log");
        let mut known_hosts = std::ffi::OsString::from("UserKnownHostsFile=");
        known_hosts.push(&t.known_hosts);
        let mut cmd = std::process::Command::new("ssh");
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .arg("-E")
            .arg(&log)
            .arg("-S")
            .arg(&ctl)
            // A master in the foreground (no `-f`, no `ControlPersist`): see [`spawn_tied`].
            .args(["-M", "-N", "-o", "ControlPersist=no", "-o", "StrictHostKeyChecking=yes"])
            .arg("-o")
            .arg(format!("ConnectTimeout={}", t.connect_timeout.as_secs().max(1)))
            .args(["-o", "ServerAliveInterval=2", "-p"])
            .arg(node.ssh.port.to_string())
            .arg("-l")
            .arg(&node.ssh.user)
            .arg("-o")
            .arg(known_hosts)
            .arg("-F")
            .arg(&config);
        if let Some(key) = &t.identity {
            cmd.arg("-i").arg(key);
        }
        cmd.arg("--").arg(&node.ssh.address);
        let label = format!("{}@{}:{}", node.ssh.user, node.ssh.address, node.ssh.port);
        // A few handshakes at a time: fifty at once on a small controller starve each other
        // past the timeout, and nodes that would answer are called unreachable. The wait for a
        // turn is not counted against the timeout.
        let turn = Handshakes::take();
        let mut master =
            spawn_tied(cmd).map_err(|source| ExecError::Setup { what: "start ssh", source })?;
        if let Err(reason) = wait_for_master(&mut master, &ctl, &log, t.connect_timeout) {
            let _ = master.kill();
            let _ = master.wait();
            return Err(ExecError::Unreachable { node: label, reason });
        }
        drop(turn);
        let session = Session::resume(ctl.into_boxed_path(), Some(log.into_boxed_path()));
        Ok(SshExec {
            rt,
            session: Some(session),
            master: Some(master),
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

/// Starts `cmd` (an `ssh -M`) as a child that the kernel kills with SIGKILL when this process
/// ends, however it ends: a controller that is SIGKILLed leaves no master behind.
///
/// Why this and not an idle limit: openssh's own `launch_master` runs `ssh -M -f` with
/// `ControlPersist`, and such a master is a daemon (re-parented to init) that outlives us until
/// it is idle — and a forwarded Docker socket or a remote command left running by the dead
/// controller keeps it busy, so it may never be. Here the master stays in the foreground
/// (`ControlPersist=no`, no `-f`) as our child with `PR_SET_PDEATHSIG`, its mux clients die with
/// it (their control socket closes), and the forward goes with it. No watchdog, no timer.
///
/// The parent-death signal fires when the *thread* that forked the child ends, and connections
/// are made on short-lived per-node threads that end before their connections do; so every
/// master is forked by one thread that lives as long as the process.
fn spawn_tied(cmd: std::process::Command) -> std::io::Result<std::process::Child> {
    use std::sync::mpsc;
    type Request = (std::process::Command, mpsc::Sender<std::io::Result<std::process::Child>>);
    static KEEPER: std::sync::OnceLock<std::io::Result<mpsc::Sender<Request>>> =
        std::sync::OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new().name("ssh-masters".to_owned()).spawn(move || {
            for (mut cmd, reply) in rx {
                let _ = reply.send(spawn_with_parent_death_signal(&mut cmd));
            }
        })?;
        Ok(tx)
    });
    let keeper = keeper.as_ref().map_err(|e| std::io::Error::new(e.kind(), e.to_string()))?;
    let (reply, answer) = mpsc::channel();
    let gone = || std::io::Error::other("the thread that starts ssh masters has ended");
    keeper.send((cmd, reply)).map_err(|_| gone())?;
    answer.recv().map_err(|_| gone())?
}

#[cfg(target_os = "linux")]
fn spawn_with_parent_death_signal(
    cmd: &mut std::process::Command,
) -> std::io::Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id();
    // SAFETY: between fork and exec the closure only makes two async-signal-safe system calls
    // and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            // Died between fork and prctl: nobody would send the signal any more.
            if libc::getppid() as u32 != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Elsewhere there is no parent-death signal; a killed controller's master lives on there
/// until its link drops.
#[cfg(not(target_os = "linux"))]
fn spawn_with_parent_death_signal(
    cmd: &mut std::process::Command,
) -> std::io::Result<std::process::Child> {
    cmd.spawn()
}

/// Waits until the master listens on `ctl` (ssh makes the socket only once logged in, under
/// its final name only once it listens), or has exited (the reason is in `log`), or has not
/// answered for 5 s past its own `timeout`.
fn wait_for_master(
    master: &mut std::process::Child,
    ctl: &Path,
    log: &Path,
    timeout: Duration,
) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    let start = std::time::Instant::now();
    loop {
        if let Ok(Some(_)) = master.try_wait() {
            return Err(master_failure(&std::fs::read_to_string(log).unwrap_or_default()));
        }
        if std::fs::symlink_metadata(ctl).is_ok_and(|m| m.file_type().is_socket()) {
            return Ok(());
        }
        if start.elapsed() > timeout + Duration::from_secs(5) {
            return Err(format!("no answer within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What a master that exited wrote to its log, as one reason: without ssh's `ssh: ` prefix and
/// the notes that are not errors.
fn master_failure(log: &str) -> String {
    let lines: Vec<&str> = log
        .lines()
        .map(|l| l.trim().strip_prefix("ssh: ").unwrap_or(l.trim()))
        .filter(|l| !l.is_empty() && !l.starts_with("Warning: Permanently added "))
        .collect();
    if lines.is_empty() {
        "failed to connect to the remote host: ssh exited without saying why".to_owned()
    } else {
        format!("failed to connect to the remote host: {}", lines.join("; "))
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
            // `-O exit`: the master says goodbye to sshd and removes its socket.
            let _ = self
                .rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(3), s.close()).await });
        }
        if let Some(mut master) = self.master.take() {
            let start = std::time::Instant::now();
            while matches!(master.try_wait(), Ok(None)) && start.elapsed() < Duration::from_secs(1)
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            // One that did not go when asked is killed; either way it is reaped.
            let _ = master.kill();
            let _ = master.wait();
        }
    }
}
