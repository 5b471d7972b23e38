//! The lab: real nodes on this machine, started by the tests and torn down when the [`Lab`] is
//! dropped (DESIGN.md §9).
//!
//! Each node is a Linux network namespace (`hl-<slot>-<name>`) joined to the root namespace by a
//! veth pair (root side `hlv<slot>n<i>` with `10.<77+slot>.<i+1>.1/24`, node side `eth0` with
//! `10.<77+slot>.<i+1>.2/24`), running its own `sshd` (key-only, host key pinned in the lab's
//! `known_hosts`, login `root`) and its own Docker Engine (`dockerd` with its own socket,
//! data-root, exec-root and cgroup parent) with the test image [`IMAGE`] loaded. Sessions over
//! ssh have `DOCKER_HOST` set to the node's own engine, so `docker` and `docker compose` run on
//! a node act on that node's engine. All nodes share this machine's filesystem: give each node
//! its own folder (for example [`LabNode::dir`]) as its homelab root.
//!
//! A lab claims a slot (`/run/homelab-lab/<slot>`, holding the owner's pid) that makes its names
//! and addresses unique among the labs alive on this machine, in this process or another; when
//! a slot left behind by a dead process is claimed again, whatever that process left (processes,
//! mounts, namespaces, veths, cgroups, folders) is removed first.
//!
//! Everything here fails loudly: a part that cannot start panics with the command, its stderr
//! and the daemon's log tail. A test never skips for a missing part.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use homelab::transport::quote;

/// The test image loaded into every node's engine: `FROM scratch` with Debian's static busybox
/// and its applets (`sh`, `sleep`, `httpd`, `wget`, `nc`, ...) linked in `/bin`, `/sbin`,
/// `/usr/bin`, `/usr/sbin`. `CMD ["sh"]`, `STOPSIGNAL SIGKILL` (busybox as PID 1 ignores
/// SIGTERM, so a stop would otherwise always wait out the 10 s timeout).
pub const IMAGE: &str = "homelab-test/busybox:1";

/// How long a daemon may take to become ready before the lab gives up.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Where slots are claimed.
const SLOT_DIR: &str = "/run/homelab-lab";
/// Slots 0..MAX_SLOTS; slot `s` uses the addresses `10.<77+s>.0.0/16`.
const MAX_SLOTS: u32 = 150;

/// Serializes `ip netns add` (the first one on a machine sets up the shared `/run/netns` mount).
static NETNS_ADD: Mutex<()> = Mutex::new(());
/// Serializes the first dockerd start on a machine (each creates `/etc/docker/key.json`).
static DOCKERD_KEY: Mutex<()> = Mutex::new(());
/// Serializes slot claims within this process.
static CLAIM: Mutex<()> = Mutex::new(());
static COUNTER: AtomicU64 = AtomicU64::new(0);

pub struct Lab {
    nodes: Vec<LabNode>,
    image: PathBuf,
    slot_no: u32,
    // Dropped after `Drop::drop` has stopped everything, in this order: the folder, then the
    // slot claim.
    dir: tempfile::TempDir,
    slot: Slot,
}

pub struct LabNode {
    /// The name given to [`Lab::start`].
    pub name: String,
    /// The node's address (port 22 is its sshd).
    pub address: String,
    /// The root namespace's address on the node's link (the controller as the node sees it).
    pub gateway: String,
    /// The node's Docker Engine socket, reachable from the root namespace.
    pub docker_socket: PathBuf,
    /// The network namespace (`/var/run/netns/<ns>`).
    pub ns: String,
    /// The root side of the node's veth pair: cut it or shape it to cut or slow the node.
    pub veth: String,
    /// A folder private to this node (holds its daemons' state; free for a test's use under
    /// `root/`, created empty).
    pub dir: PathBuf,
    index: usize,
    cgroup: String,
    sshd: Option<Child>,
    dockerd: Option<Child>,
    state: Mutex<LinkState>,
}

#[derive(Default)]
struct LinkState {
    blackholed: bool,
    netem: bool,
    shaper: Option<Child>,
}

impl LabNode {
    /// `<dir>/root`: an empty folder for the test's use as this node's homelab root.
    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }
}

impl Lab {
    /// Starts one node per name (network namespace, sshd, dockerd, [`IMAGE`] loaded), in
    /// parallel. Panics with what failed (the command, its stderr, the daemon's log tail) if any
    /// part cannot start; whatever was started is torn down.
    pub fn start(names: &[&str]) -> Lab {
        let t0 = Instant::now();
        preflight();
        assert!(!names.is_empty() && names.len() < 250, "lab: 1 to 249 nodes, got {}", names.len());
        let mut seen = BTreeSet::new();
        for n in names {
            assert!(
                !n.is_empty()
                    && n.len() <= 40
                    && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "lab: node name {n:?} must be 1-40 characters of [A-Za-z0-9_-]"
            );
            assert!(seen.insert(*n), "lab: node name {n:?} given twice");
        }

        let slot = Slot::claim();
        let s = slot.n;
        let dir = tempfile::Builder::new()
            .prefix(&format!("hl-lab-{s}-"))
            .tempdir_in(std::env::temp_dir())
            .unwrap_or_else(|e| panic!("lab: cannot create the lab folder: {e}"));
        let _ = fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755));
        let nodes = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let ndir = dir.path().join(name);
                LabNode {
                    name: name.to_string(),
                    address: format!("10.{}.{}.2", 77 + s, i + 1),
                    gateway: format!("10.{}.{}.1", 77 + s, i + 1),
                    docker_socket: ndir.join("docker.sock"),
                    ns: format!("hl-{s}-{name}"),
                    veth: format!("hlv{s}n{i}"),
                    dir: ndir,
                    index: i,
                    cgroup: format!("hl-{s}-{i}"),
                    sshd: None,
                    dockerd: None,
                    state: Mutex::new(LinkState::default()),
                }
            })
            .collect();
        let image = dir.path().join("image.tar");
        let mut lab = Lab { nodes, image, slot_no: s, dir, slot };
        // From here on, a panic drops `lab`, which tears down whatever was started.

        let d = lab.dir.path().to_path_buf();
        must(
            Command::new(tool("ssh-keygen"))
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "homelab-lab-client", "-f"])
                .arg(d.join("client_key")),
        );
        fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).unwrap();
        // Leaks into the outside network are not wanted when a node's link is down: its
        // addresses become unreachable instead.
        must(Command::new(tool("ip")).args([
            "route",
            "replace",
            "unreachable",
            &format!("10.{}.0.0/16", 77 + s),
            "metric",
            "4000",
        ]));

        let image = lab.image.clone();
        let (img, nodes) = thread::scope(|sc| {
            let img = sc.spawn(|| build_image(&d, &image));
            let handles: Vec<_> = lab
                .nodes
                .iter_mut()
                .map(|node| {
                    let d = &d;
                    sc.spawn(move || {
                        start_node(d, node).map_err(|e| format!("node `{}`: {e}", node.name))
                    })
                })
                .collect();
            let nodes: Vec<_> = handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err("panicked".into())))
                .collect();
            (img.join().unwrap_or_else(|_| Err("image build panicked".into())), nodes)
        });
        let mut errors: Vec<String> = nodes.into_iter().filter_map(Result::err).collect();
        if let Err(e) = img {
            errors.push(format!("image {IMAGE}: {e}"));
        }
        if !errors.is_empty() {
            panic!("lab: cannot start:\n\n{}", errors.join("\n\n"));
        }

        // Known hosts: each node's own host key, pinned to its address.
        let mut known = String::new();
        for node in &lab.nodes {
            let pubkey = fs::read_to_string(node.dir.join("ssh_host_ed25519_key.pub")).unwrap();
            let mut parts = pubkey.split_whitespace();
            let (kind, key) = (parts.next().unwrap(), parts.next().unwrap());
            known.push_str(&format!("{} {kind} {key}\n", node.address));
        }
        fs::write(d.join("known_hosts"), known).unwrap();

        // Load the image into every engine, in parallel.
        let errors: Vec<String> = thread::scope(|sc| {
            let handles: Vec<_> = lab
                .nodes
                .iter()
                .map(|node| {
                    let image = &lab.image;
                    sc.spawn(move || {
                        run(docker_cmd(node).arg("load").arg("-i").arg(image)).map(|_| ()).map_err(
                            |e| {
                                format!(
                                    "node `{}`: loading {IMAGE}: {e}\n{}",
                                    node.name,
                                    log_tail(&node.dir.join("dockerd.log"))
                                )
                            },
                        )
                    })
                })
                .collect();
            handles
                .into_iter()
                .filter_map(|h| h.join().unwrap_or_else(|_| Err("panicked".into())).err())
                .collect()
        });
        if !errors.is_empty() {
            panic!("lab: cannot start:\n\n{}", errors.join("\n\n"));
        }
        eprintln!(
            "lab: {} node(s) {:?} up in {:.2}s (slot {s}, {})",
            lab.nodes.len(),
            names,
            t0.elapsed().as_secs_f64(),
            lab.dir.path().display()
        );
        lab
    }

    pub fn node(&self, name: &str) -> &LabNode {
        self.nodes.iter().find(|n| n.name == name).unwrap_or_else(|| {
            panic!(
                "lab: no node {name:?}; nodes: {:?}",
                self.nodes.iter().map(|n| &n.name).collect::<Vec<_>>()
            )
        })
    }

    pub fn nodes(&self) -> &[LabNode] {
        &self.nodes
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The private key every node accepts for `root`.
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client_key")
    }

    /// One line per node: its address and its own host key.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    /// The image archive (`docker load` format) loaded into every engine.
    pub fn image_archive(&self) -> &Path {
        &self.image
    }

    /// The options of the system `ssh` for this lab: no user config, the lab's key only, strict
    /// host key checking against the lab's known_hosts, batch mode, a 5 s connect timeout,
    /// keepalives. `ssh` keeps the first value it is given for an option, so put options of
    /// your own before these to override them.
    pub fn ssh_options(&self) -> Vec<String> {
        let mut o = vec!["-F".to_string(), "/dev/null".to_string(), "-i".to_string()];
        o.push(self.client_key().display().to_string());
        o.push("-o".into());
        o.push(format!("UserKnownHostsFile={}", self.known_hosts().display()));
        for opt in [
            "GlobalKnownHostsFile=/dev/null",
            "StrictHostKeyChecking=yes",
            "IdentitiesOnly=yes",
            "BatchMode=yes",
            "ConnectTimeout=5",
            "ServerAliveInterval=2",
            "ServerAliveCountMax=3",
            "LogLevel=ERROR",
        ] {
            o.push("-o".into());
            o.push(opt.into());
        }
        o
    }

    /// `ssh <ssh_options> root@<address>`, stdin from /dev/null; add `--` and the remote
    /// command.
    pub fn ssh_command(&self, node: &str) -> Command {
        let mut c = Command::new(tool("ssh"));
        c.args(self.ssh_options()).arg(format!("root@{}", self.node(node).address));
        c.stdin(Stdio::null());
        c
    }

    /// Runs `argv` on the node over real ssh. Each element is quoted for the remote shell, so
    /// it arrives as one argument, intact.
    pub fn ssh(&self, node: &str, argv: &[&str]) -> Output {
        let mut c = self.ssh_command(node);
        let line = quote::argv(argv).unwrap_or_else(|e| panic!("lab: {e}"));
        c.arg("--").arg(line);
        c.output().unwrap_or_else(|e| panic!("lab: cannot run ssh: {e}"))
    }

    /// `docker` (the CLI) against the node's engine, from this machine.
    pub fn docker_command(&self, node: &str) -> Command {
        docker_cmd(self.node(node))
    }

    pub fn docker(&self, node: &str, args: &[&str]) -> Output {
        let mut c = self.docker_command(node);
        c.args(args);
        c.output().unwrap_or_else(|e| panic!("lab: cannot run docker: {e}"))
    }

    /// `program` run on this machine inside the node's network namespace (as if on the node,
    /// without ssh: works while the node is cut off), with `DOCKER_HOST` set to the node's
    /// engine and `HOMELAB_LAB_NODE` to its name.
    pub fn node_command(&self, node: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let n = self.node(node);
        let mut c = Command::new(tool("nsenter"));
        c.arg(format!("--net=/var/run/netns/{}", n.ns))
            .arg("--")
            .arg(program)
            .env("DOCKER_HOST", format!("unix://{}", n.docker_socket.display()))
            .env("HOMELAB_LAB_NODE", &n.name)
            .env_remove("DOCKER_CONTEXT")
            .stdin(Stdio::null());
        c
    }

    /// Takes the node's link down: its address becomes unreachable (connects fail at once,
    /// established connections stall).
    pub fn cut(&self, node: &str) {
        let n = self.node(node);
        must(Command::new(tool("ip")).args(["link", "set", &n.veth, "down"]));
    }

    /// Silently drops every packet sent to the node (like `netem loss 100%`): connects and
    /// established connections time out, as on a dead LTE link. Undone by [`Lab::restore`].
    pub fn blackhole(&self, node: &str) {
        let n = self.node(node);
        let mut st = n.state.lock().unwrap_or_else(|e| e.into_inner());
        if !st.blackholed {
            must(iptables(n).args([
                "-t",
                "mangle",
                "-I",
                "PREROUTING",
                "1",
                "-i",
                "eth0",
                "-j",
                "DROP",
            ]));
            st.blackholed = true;
        }
    }

    /// Refuses new SSH connections to the node (their SYN is dropped) while connections already
    /// made go on: what a change that eats the SSH port does. [`Lab::accept_new`] undoes it.
    pub fn refuse_new(&self, node: &str) {
        let n = self.node(node);
        must(
            iptables(n)
                .args(["-I", "INPUT", "1", "-p", "tcp", "--dport", "22", "--syn", "-j", "DROP"]),
        );
    }

    pub fn accept_new(&self, node: &str) {
        let n = self.node(node);
        must(
            iptables(n).args(["-D", "INPUT", "-p", "tcp", "--dport", "22", "--syn", "-j", "DROP"]),
        );
    }

    /// Undoes [`Lab::cut`] and [`Lab::blackhole`].
    pub fn restore(&self, node: &str) {
        let n = self.node(node);
        let mut st = n.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.blackholed {
            must(iptables(n).args([
                "-t",
                "mangle",
                "-D",
                "PREROUTING",
                "-i",
                "eth0",
                "-j",
                "DROP",
            ]));
            st.blackholed = false;
        }
        drop(st);
        must(Command::new(tool("ip")).args(["link", "set", &n.veth, "up"]));
    }

    /// Shapes the traffic sent to the node with netem options, for example
    /// `"delay 200ms loss 5%"` (replacing any earlier shaping). Uses `tc qdisc ... netem` on the
    /// node's veth when the kernel has netem; otherwise (kernels built without
    /// CONFIG_NET_SCH_NETEM) an NFQUEUE stand-in in the node's namespace
    /// (`tests/lab/netem.py`), which understands `delay TIME [JITTER]` and `loss [random] P%`.
    pub fn slow(&self, node: &str, netem: &str) {
        self.unslow(node);
        let n = self.node(node);
        let mut st = n.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut tc = Command::new(tool("tc"));
        tc.args(["qdisc", "replace", "dev", &n.veth, "root", "netem"])
            .args(netem.split_whitespace());
        match run(&mut tc) {
            Ok(_) => {
                st.netem = true;
                return;
            }
            Err(e)
                if e.contains("Specified qdisc kind is unknown") || e.contains("No such file") => {}
            Err(e) => panic!("lab: slow({node:?}, {netem:?}): {e}"),
        }
        let (delay, jitter, loss) =
            parse_netem(netem).unwrap_or_else(|e| panic!("lab: slow({node:?}, {netem:?}): {e}"));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lab/netem.py");
        let log = n.dir.join("netem.log");
        let _ = fs::remove_file(&log);
        let mut c = Command::new(tool("ip"));
        c.args(["netns", "exec", &n.ns])
            .arg(tool("python3"))
            .arg(&script)
            .args(["0", &format!("{delay}"), &format!("{jitter}"), &format!("{loss}")])
            .stdin(Stdio::null())
            .stdout(Stdio::from(fs::File::create(&log).unwrap()))
            .stderr(Stdio::from(fs::File::create(n.dir.join("netem.err")).unwrap()));
        let line = cmd_line(&c);
        let mut child = c.spawn().unwrap_or_else(|e| panic!("lab: cannot run `{line}`: {e}"));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if fs::read_to_string(&log).unwrap_or_default().contains("bound") {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "lab: `{line}` exited ({status}):\n{}",
                    fs::read_to_string(n.dir.join("netem.err")).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "lab: `{line}` did not bind its queue in 20 s:\n{}",
                    fs::read_to_string(n.dir.join("netem.err")).unwrap_or_default()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
        st.shaper = Some(child);
        // The last rule of PREROUTING, so a blackhole (inserted first) still wins.
        must(iptables(n).args([
            "-t",
            "mangle",
            "-A",
            "PREROUTING",
            "-i",
            "eth0",
            "-j",
            "NFQUEUE",
            "--queue-num",
            "0",
            "--queue-bypass",
        ]));
    }

    /// Removes the shaping of [`Lab::slow`].
    pub fn unslow(&self, node: &str) {
        let n = self.node(node);
        let mut st = n.state.lock().unwrap_or_else(|e| e.into_inner());
        unslow_node(n, &mut st);
    }
}

fn unslow_node(n: &LabNode, st: &mut LinkState) {
    if st.netem {
        let _ = run(Command::new(tool("tc")).args(["qdisc", "del", "dev", &n.veth, "root"]));
        st.netem = false;
    }
    if let Some(mut child) = st.shaper.take() {
        let _ = run(iptables(n).args([
            "-t",
            "mangle",
            "-D",
            "PREROUTING",
            "-i",
            "eth0",
            "-j",
            "NFQUEUE",
            "--queue-num",
            "0",
            "--queue-bypass",
        ]));
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// `delay TIME [JITTER]`, `loss [random] P%` → (delay ms, jitter ms, loss %).
fn parse_netem(spec: &str) -> Result<(f64, f64, f64), String> {
    fn ms(t: &str) -> Option<f64> {
        let (num, mul) = if let Some(v) = t.strip_suffix("ms") {
            (v, 1.0)
        } else if let Some(v) = t.strip_suffix("us") {
            (v, 0.001)
        } else if let Some(v) = t.strip_suffix('s') {
            (v, 1000.0)
        } else {
            (t, 1.0)
        };
        num.parse::<f64>().ok().map(|v| v * mul)
    }
    let words: Vec<&str> = spec.split_whitespace().collect();
    let (mut delay, mut jitter, mut loss) = (0.0, 0.0, 0.0);
    let mut i = 0;
    while i < words.len() {
        match words[i] {
            "delay" => {
                delay = words.get(i + 1).and_then(|t| ms(t)).ok_or("`delay` needs a time")?;
                i += 2;
                if let Some(j) = words.get(i).and_then(|t| ms(t)) {
                    jitter = j;
                    i += 1;
                }
            }
            "loss" => {
                i += 1;
                if words.get(i) == Some(&"random") {
                    i += 1;
                }
                loss = words
                    .get(i)
                    .and_then(|p| p.strip_suffix('%'))
                    .and_then(|p| p.parse::<f64>().ok())
                    .ok_or("`loss` needs a percentage like 5%")?;
                i += 1;
            }
            w => {
                return Err(format!(
                    "this kernel has no netem and the userspace stand-in does not know `{w}` \
                     (it knows `delay TIME [JITTER]` and `loss [random] P%`)"
                ))
            }
        }
    }
    Ok((delay, jitter, loss))
}

impl Drop for Lab {
    fn drop(&mut self) {
        let t0 = Instant::now();
        let dir = self.dir.path().to_path_buf();
        thread::scope(|sc| {
            for node in self.nodes.iter_mut() {
                sc.spawn(move || stop_node(node));
            }
        });
        unmount_under(&dir);
        let _ = run(Command::new(tool("ip")).args([
            "route",
            "del",
            "unreachable",
            &format!("10.{}.0.0/16", 77 + self.slot_no),
        ]));
        if std::env::var_os("HOMELAB_LAB_KEEP").is_some() {
            eprintln!("lab: HOMELAB_LAB_KEEP set: leaving {}", dir.display());
            let _ = fs::rename(&dir, dir.with_extension("kept"));
        }
        eprintln!("lab: torn down in {:.2}s", t0.elapsed().as_secs_f64());
    }
}

// ---------------------------------------------------------------------------------------------
// Starting a node

fn start_node(lab: &Path, node: &mut LabNode) -> Result<(), String> {
    let ip = tool("ip");
    let d = node.dir.clone();
    fs::create_dir_all(d.join("root")).map_err(|e| format!("creating {}: {e}", d.display()))?;
    {
        let _g = NETNS_ADD.lock().unwrap_or_else(|e| e.into_inner());
        run(Command::new(&ip).args(["netns", "add", &node.ns]))?;
    }
    let prefix = |a: &str| format!("{a}/24");
    run(Command::new(&ip).args([
        "link", "add", &node.veth, "type", "veth", "peer", "name", "eth0", "netns", &node.ns,
    ]))?;
    run(Command::new(&ip).args(["addr", "add", &prefix(&node.gateway), "dev", &node.veth]))?;
    run(Command::new(&ip).args(["link", "set", &node.veth, "up"]))?;
    run(Command::new(&ip).args(["-n", &node.ns, "link", "set", "lo", "up"]))?;
    run(Command::new(&ip).args([
        "-n",
        &node.ns,
        "addr",
        "add",
        &prefix(&node.address),
        "dev",
        "eth0",
    ]))?;
    run(Command::new(&ip).args(["-n", &node.ns, "link", "set", "eth0", "up"]))?;
    run(Command::new(&ip).args(["-n", &node.ns, "route", "add", "default", "via", &node.gateway]))?;

    // sshd
    let host_key = d.join("ssh_host_ed25519_key");
    run(Command::new(tool("ssh-keygen"))
        .args(["-q", "-t", "ed25519", "-N", "", "-C"])
        .arg(format!("homelab-lab-{}", node.name))
        .arg("-f")
        .arg(&host_key))?;
    fs::create_dir_all("/run/sshd").map_err(|e| format!("creating /run/sshd: {e}"))?;
    let sshd_config = format!(
        "# homelab lab node `{name}`\n\
         ListenAddress {addr}:22\n\
         HostKey {key}\n\
         PidFile {dir}/sshd.pid\n\
         AuthorizedKeysFile {lab}/authorized_keys {dir}/authorized_keys\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         PermitRootLogin prohibit-password\n\
         UsePAM no\n\
         StrictModes no\n\
         PrintMotd no\n\
         LogLevel VERBOSE\n\
         SetEnv DOCKER_HOST=unix://{sock} HOMELAB_LAB_NODE={name}\n\
         Subsystem sftp internal-sftp\n",
        name = node.name,
        addr = node.address,
        key = host_key.display(),
        dir = d.display(),
        lab = lab.display(),
        sock = node.docker_socket.display(),
    );
    fs::write(d.join("sshd_config"), sshd_config).map_err(|e| e.to_string())?;
    let sshd_log = d.join("sshd.log");
    let mut c = Command::new(&ip);
    c.args(["netns", "exec", &node.ns])
        .arg(tool("sshd"))
        .args(["-D", "-e", "-f"])
        .arg(d.join("sshd_config"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(fs::File::create(&sshd_log).map_err(|e| e.to_string())?));
    let sshd_line = cmd_line(&c);
    node.sshd = Some(c.spawn().map_err(|e| format!("cannot run `{sshd_line}`: {e}"))?);

    // dockerd
    let dk = d.join("docker");
    fs::create_dir_all(&dk).map_err(|e| e.to_string())?;
    fs::write(d.join("daemon.json"), "{}\n").map_err(|e| e.to_string())?;
    let dockerd_log = d.join("dockerd.log");
    let log = fs::File::create(&dockerd_log).map_err(|e| e.to_string())?;
    let mut c = Command::new(tool("nsenter"));
    c.arg(format!("--net=/var/run/netns/{}", node.ns))
        .arg(tool("dockerd"))
        .arg("--config-file")
        .arg(d.join("daemon.json"))
        .arg("--data-root")
        .arg(dk.join("data"))
        .arg("--exec-root")
        .arg(dk.join("exec"))
        .arg("--pidfile")
        .arg(dk.join("dockerd.pid"))
        .arg("-H")
        .arg(format!("unix://{}", node.docker_socket.display()))
        .args([
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
            "--ip-masq=false",
            "--shutdown-timeout=2",
        ])
        .arg(format!("--cgroup-parent=/{}", node.cgroup))
        .env_remove("DOCKER_HOST")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().map_err(|e| e.to_string())?))
        .stderr(Stdio::from(log));
    let dockerd_line = cmd_line(&c);
    // The first dockerd on a machine creates /etc/docker/key.json: let only one do that.
    let key = Path::new("/etc/docker/key.json");
    let key_guard = if key.exists() {
        None
    } else {
        let g = DOCKERD_KEY.lock().unwrap_or_else(|e| e.into_inner());
        (!key.exists()).then_some(g)
    };
    node.dockerd = Some(c.spawn().map_err(|e| format!("cannot run `{dockerd_line}`: {e}"))?);

    // Ready?
    let deadline = Instant::now() + READY_TIMEOUT;
    let addr: SocketAddr = format!("{}:22", node.address).parse().unwrap();
    let (mut sshd_up, mut dockerd_up) = (false, false);
    while !(sshd_up && dockerd_up) {
        if !sshd_up {
            if let Some(status) =
                node.sshd.as_mut().unwrap().try_wait().map_err(|e| e.to_string())?
            {
                return Err(format!(
                    "sshd exited ({status}): `{sshd_line}`\n{}",
                    log_tail(&sshd_log)
                ));
            }
            sshd_up = ssh_banner(addr);
        }
        if !dockerd_up {
            if let Some(status) =
                node.dockerd.as_mut().unwrap().try_wait().map_err(|e| e.to_string())?
            {
                return Err(format!(
                    "dockerd exited ({status}): `{dockerd_line}`\n{}",
                    log_tail(&dockerd_log)
                ));
            }
            dockerd_up = docker_ping(&node.docker_socket);
        }
        if Instant::now() > deadline {
            let mut e = String::new();
            if !sshd_up {
                e += &format!(
                    "sshd not listening on {addr} after {READY_TIMEOUT:?}: `{sshd_line}`\n{}\n",
                    log_tail(&sshd_log)
                );
            }
            if !dockerd_up {
                e += &format!(
                    "dockerd not answering on {} after {READY_TIMEOUT:?}: `{dockerd_line}`\n{}",
                    node.docker_socket.display(),
                    log_tail(&dockerd_log)
                );
            }
            return Err(e);
        }
        thread::sleep(Duration::from_millis(25));
    }
    drop(key_guard);
    Ok(())
}

fn ssh_banner(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 8];
    s.read_exact(&mut buf).is_ok() && buf.starts_with(b"SSH-")
}

fn docker_ping(sock: &Path) -> bool {
    let Ok(mut s) = UnixStream::connect(sock) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n").is_err() {
        return false;
    }
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp.starts_with("HTTP/1.0 200") || resp.starts_with("HTTP/1.1 200")
}

fn docker_cmd(node: &LabNode) -> Command {
    let mut c = Command::new(tool("docker"));
    c.env("DOCKER_HOST", format!("unix://{}", node.docker_socket.display()))
        .env_remove("DOCKER_CONTEXT")
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH")
        .stdin(Stdio::null());
    c
}

fn iptables(node: &LabNode) -> Command {
    let mut c = Command::new(tool("ip"));
    c.args(["netns", "exec", &node.ns]).arg(tool("iptables")).arg("-w");
    c
}

// ---------------------------------------------------------------------------------------------
// The image

/// Writes a `docker load` archive of [`IMAGE`]: one layer with /bin/busybox and its applet
/// links, made with `tar` (sorted, mtime 0, owner 0) so the same busybox gives the same image.
fn build_image(lab: &Path, out: &Path) -> Result<(), String> {
    let work = lab.join("image");
    let root = work.join("rootfs");
    let layers = work.join("archive");
    for sub in ["bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "tmp"] {
        fs::create_dir_all(root.join(sub)).map_err(|e| e.to_string())?;
        fs::set_permissions(root.join(sub), fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
    }
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777))
        .map_err(|e| e.to_string())?;
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
    let busybox = Path::new("/bin/busybox");
    fs::copy(busybox, root.join("bin/busybox"))
        .map_err(|e| format!("copying {}: {e}", busybox.display()))?;
    fs::set_permissions(root.join("bin/busybox"), fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    let list = run(Command::new(busybox).arg("--list-full"))?;
    for applet in String::from_utf8_lossy(&list.stdout).lines().map(str::trim) {
        if applet.is_empty() || applet == "bin/busybox" || applet.contains("..") {
            continue;
        }
        let link = root.join(applet);
        if let Some(parent) = link.parent() {
            fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        std::os::unix::fs::symlink("/bin/busybox", &link)
            .map_err(|e| format!("linking {applet}: {e}"))?;
    }
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .map_err(|e| e.to_string())?;
    fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")
        .map_err(|e| e.to_string())?;

    fs::create_dir_all(&layers).map_err(|e| e.to_string())?;
    let layer = work.join("layer.tar");
    run(Command::new(tool("tar"))
        .args(["--sort=name", "--mtime=@0", "--owner=0", "--group=0", "--numeric-owner", "-C"])
        .arg(&root)
        .arg("-cf")
        .arg(&layer)
        .arg("."))?;
    let diff_id = sha256_file(&layer)?;
    fs::create_dir_all(layers.join(&diff_id)).map_err(|e| e.to_string())?;
    fs::rename(&layer, layers.join(&diff_id).join("layer.tar")).map_err(|e| e.to_string())?;
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let config = serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["sh"],
            "StopSignal": "SIGKILL",
            "Labels": {"org.homelab.test": "busybox-static"},
        },
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "homelab lab: Debian busybox-static /bin/busybox and its applet links"}],
    });
    let config_path = work.join("config.json");
    fs::write(&config_path, serde_json::to_vec(&config).unwrap()).map_err(|e| e.to_string())?;
    let config_id = sha256_file(&config_path)?;
    fs::rename(&config_path, layers.join(format!("{config_id}.json")))
        .map_err(|e| e.to_string())?;
    let manifest = serde_json::json!([{
        "Config": format!("{config_id}.json"),
        "RepoTags": [IMAGE],
        "Layers": [format!("{diff_id}/layer.tar")],
    }]);
    fs::write(layers.join("manifest.json"), serde_json::to_vec(&manifest).unwrap())
        .map_err(|e| e.to_string())?;
    run(Command::new(tool("tar"))
        .args(["--sort=name", "--mtime=@0", "--owner=0", "--group=0", "--numeric-owner", "-C"])
        .arg(&layers)
        .arg("-cf")
        .arg(out)
        .arg("."))?;
    let _ = fs::remove_dir_all(&work);
    Ok(())
}

fn sha256_file(path: &Path) -> Result<String, String> {
    let out = run(Command::new(tool("sha256sum")).arg(path))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text.split_whitespace().next().unwrap_or_default();
    if hex.len() == 64 {
        Ok(hex.to_string())
    } else {
        Err(format!("unexpected sha256sum output: {text}"))
    }
}

// ---------------------------------------------------------------------------------------------
// Stopping, and cleaning up after a crashed run

fn stop_node(node: &mut LabNode) {
    let st = node.state.get_mut().unwrap_or_else(|e| e.into_inner());
    if let Some(mut child) = st.shaper.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
    if let Some(mut dockerd) = node.dockerd.take() {
        // A clean shutdown stops the containers (at most --shutdown-timeout) and unmounts.
        if dockerd.try_wait().ok().flatten().is_none() {
            let _ = Command::new(tool("busybox"))
                .args(["kill", "-TERM", &dockerd.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while dockerd.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(25));
            }
            let _ = dockerd.kill();
        }
        let _ = dockerd.wait();
    }
    if let Some(mut sshd) = node.sshd.take() {
        let _ = sshd.kill();
        let _ = sshd.wait();
    }
    kill_netns(&node.ns);
    kill_cgroup(&node.cgroup);
    let _ = run(Command::new(tool("ip")).args(["netns", "del", &node.ns]));
    let _ = run(Command::new(tool("ip")).args(["link", "del", &node.veth]));
}

/// SIGKILLs every process in the namespace until none is left.
fn kill_netns(ns: &str) {
    for _ in 0..50 {
        let Ok(out) =
            Command::new(tool("ip")).args(["netns", "pids", ns]).stderr(Stdio::null()).output()
        else {
            return;
        };
        let pids: Vec<String> =
            String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_string).collect();
        if pids.is_empty() {
            return;
        }
        let _ = Command::new(tool("busybox"))
            .args(["kill", "-KILL"])
            .args(&pids)
            .stderr(Stdio::null())
            .status();
        thread::sleep(Duration::from_millis(20));
    }
}

/// The cgroup v1 hierarchies (and the v2 one) this machine has mounted.
fn cgroup_roots() -> Vec<PathBuf> {
    let mut roots = BTreeSet::new();
    for line in fs::read_to_string("/proc/self/mountinfo").unwrap_or_default().lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else { continue };
        if matches!(fields.get(sep + 1), Some(&"cgroup") | Some(&"cgroup2")) {
            roots.insert(PathBuf::from(unescape_mount(fields[4])));
        }
    }
    roots.into_iter().collect()
}

/// SIGKILLs every process in the cgroup `/<name>` (all hierarchies, thawed first) and removes
/// the cgroups.
fn kill_cgroup(name: &str) {
    let dirs: Vec<PathBuf> =
        cgroup_roots().into_iter().map(|r| r.join(name)).filter(|d| d.is_dir()).collect();
    if dirs.is_empty() {
        return;
    }
    fn walk(d: &Path, out: &mut Vec<PathBuf>) {
        if let Ok(rd) = fs::read_dir(d) {
            for e in rd.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    walk(&e.path(), out);
                }
            }
        }
        out.push(d.to_path_buf());
    }
    let mut all = Vec::new();
    for d in &dirs {
        walk(d, &mut all);
    }
    for d in &all {
        let _ = fs::write(d.join("freezer.state"), "THAWED");
    }
    for _ in 0..50 {
        let mut pids = BTreeSet::new();
        for d in &all {
            for p in
                fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default().split_whitespace()
            {
                pids.insert(p.to_string());
            }
        }
        if pids.is_empty() {
            break;
        }
        let _ = Command::new(tool("busybox"))
            .args(["kill", "-KILL"])
            .args(&pids)
            .stderr(Stdio::null())
            .status();
        thread::sleep(Duration::from_millis(20));
    }
    // Children first (walk pushes a folder after its subfolders).
    for d in &all {
        let _ = fs::remove_dir(d);
    }
}

fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount points at or under `prefix` (a path prefix, not necessarily a whole folder name),
/// deepest first.
fn mounts_with_prefix(prefix: &str) -> Vec<String> {
    let mut m: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mount)
        .filter(|p| p.starts_with(prefix))
        .collect();
    m.sort_by_key(|p| std::cmp::Reverse(p.len()));
    m.dedup();
    m
}

fn unmount_prefix(prefix: &str) {
    for _ in 0..10 {
        let m = mounts_with_prefix(prefix);
        if m.is_empty() {
            return;
        }
        let _ = Command::new(tool("umount")).arg("-l").args(&m).stderr(Stdio::null()).status();
    }
}

fn unmount_under(dir: &Path) {
    let d = dir.display().to_string();
    for _ in 0..10 {
        let m: Vec<String> = mounts_with_prefix(&d)
            .into_iter()
            .filter(|p| *p == d || p.starts_with(&format!("{d}/")))
            .collect();
        if m.is_empty() {
            return;
        }
        let _ = Command::new(tool("umount")).arg("-l").args(&m).stderr(Stdio::null()).status();
    }
}

/// Removes what a dead lab on slot `s` left behind.
fn sweep_slot(s: u32) {
    let ip = tool("ip");
    let ns_prefix = format!("hl-{s}-");
    if let Ok(out) = Command::new(&ip).args(["netns", "list"]).output() {
        for ns in
            String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.split_whitespace().next())
        {
            if ns.starts_with(&ns_prefix) {
                kill_netns(ns);
                let _ = Command::new(&ip).args(["netns", "del", ns]).stderr(Stdio::null()).status();
            }
        }
    }
    for root in cgroup_roots() {
        if let Ok(rd) = fs::read_dir(&root) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(&ns_prefix) {
                    kill_cgroup(&name);
                }
            }
        }
    }
    let veth_prefix = format!("hlv{s}n");
    if let Ok(out) = Command::new(&ip).args(["-o", "link", "show"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split(':').nth(1).unwrap_or("").trim();
            let name = name.split('@').next().unwrap_or("");
            if name.starts_with(&veth_prefix)
                && name[veth_prefix.len()..].bytes().all(|b| b.is_ascii_digit())
            {
                let _ =
                    Command::new(&ip).args(["link", "del", name]).stderr(Stdio::null()).status();
            }
        }
    }
    let _ = Command::new(&ip)
        .args(["route", "del", "unreachable", &format!("10.{}.0.0/16", 77 + s)])
        .stderr(Stdio::null())
        .status();
    let tmp = std::env::temp_dir();
    let dir_prefix = format!("hl-lab-{s}-");
    unmount_prefix(&tmp.join(&dir_prefix).display().to_string());
    if let Ok(rd) = fs::read_dir(&tmp) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(&dir_prefix) {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Slots

/// A claim on a slot: `/run/homelab-lab/<n>` holds "<pid> <start time>" of its owner.
struct Slot {
    n: u32,
    file: PathBuf,
    me: String,
}

fn process_identity(pid: &str) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22 (start time), counted after the parenthesized command name.
    let after = &stat[stat.rfind(')')? + 2..];
    let start = after.split_whitespace().nth(19)?;
    Some(format!("{pid} {start}"))
}

impl Slot {
    fn claim() -> Slot {
        let _g = CLAIM.lock().unwrap_or_else(|e| e.into_inner());
        let dir = Path::new(SLOT_DIR);
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("lab: cannot create {SLOT_DIR}: {e}"));
        let pid = std::process::id();
        let me = process_identity(&pid.to_string()).expect("lab: cannot read /proc/self/stat");
        let tmp = dir.join(format!(".claim-{pid}-{}", COUNTER.fetch_add(1, Ordering::Relaxed)));
        fs::write(&tmp, &me).unwrap_or_else(|e| panic!("lab: cannot write {}: {e}", tmp.display()));
        let mut result = None;
        'slots: for n in 0..MAX_SLOTS {
            let file = dir.join(n.to_string());
            for _ in 0..3 {
                match fs::hard_link(&tmp, &file) {
                    Ok(()) => {
                        result = Some(Slot { n, file, me: me.clone() });
                        break 'slots;
                    }
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                    Err(e) => panic!("lab: cannot claim {}: {e}", file.display()),
                }
                let owner = fs::read_to_string(&file).unwrap_or_default();
                let owner_pid = owner.split_whitespace().next().unwrap_or("");
                if owner.is_empty() || process_identity(owner_pid).as_deref() == Some(owner.trim())
                {
                    continue 'slots; // alive (or being written)
                }
                // Stale: take it over, unless someone else just did.
                let stale = dir.join(format!(".stale-{pid}-{n}"));
                if fs::rename(&file, &stale).is_err() {
                    continue;
                }
                if fs::read_to_string(&stale).unwrap_or_default() != owner {
                    let _ = fs::hard_link(&stale, &file);
                    let _ = fs::remove_file(&stale);
                    continue 'slots;
                }
                let _ = fs::remove_file(&stale);
            }
        }
        let _ = fs::remove_file(&tmp);
        let slot = result.unwrap_or_else(|| {
            panic!("lab: all {MAX_SLOTS} slots in {SLOT_DIR} are held by live processes")
        });
        sweep_slot(slot.n);
        slot
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if fs::read_to_string(&self.file).map(|c| c == self.me).unwrap_or(false) {
            let _ = fs::remove_file(&self.file);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Small helpers

/// The tools the lab needs, with the package that brings each.
const TOOLS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("tc", "iproute2"),
    ("nsenter", "util-linux"),
    ("umount", "mount"),
    ("busybox", "busybox-static"),
    ("tar", "tar"),
    ("sha256sum", "coreutils"),
    ("ssh", "openssh-client"),
    ("ssh-keygen", "openssh-client"),
    ("sshd", "openssh-server"),
    ("dockerd", "docker.io"),
    ("docker", "docker.io"),
    ("iptables", "iptables"),
];

fn which(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Path::new(name).is_file().then(|| PathBuf::from(name));
    }
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"])
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file());
    found
}

fn tool(name: &str) -> PathBuf {
    which(name).unwrap_or_else(|| panic!("lab: `{name}` not found (run .ci/install)"))
}

fn preflight() {
    let uid = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2).unwrap_or("").to_string())
        })
        .unwrap_or_default();
    assert!(
        uid == "0",
        "lab: the lab needs root (network namespaces, dockerd); effective uid is {uid:?}"
    );
    let mut missing: Vec<String> = TOOLS
        .iter()
        .filter(|(t, _)| which(t).is_none())
        .map(|(t, p)| format!("`{t}` (Debian package {p})"))
        .collect();
    if !Path::new("/bin/busybox").is_file() {
        missing.push("/bin/busybox (Debian package busybox-static)".into());
    }
    assert!(
        missing.is_empty(),
        "lab: missing on this machine (run .ci/install): {}",
        missing.join(", ")
    );
}

/// The command as a shell would read it, for error messages (quoted by the crate's one
/// quoting function, like every command line in the tree).
fn cmd_line(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&quote::word(&a.to_string_lossy()));
    }
    s
}

/// Runs `cmd` to completion; an error names the command and carries its output.
fn run(cmd: &mut Command) -> Result<Output, String> {
    let line = cmd_line(cmd);
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| format!("cannot run `{line}`: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "`{line}` failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ))
    }
}

fn must(cmd: &mut Command) -> Output {
    run(cmd).unwrap_or_else(|e| panic!("lab: {e}"))
}

fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_else(|e| format!("(cannot read: {e})"));
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(30);
    format!("--- last lines of {} ---\n{}", path.display(), lines[from..].join("\n"))
}
