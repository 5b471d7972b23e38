"""The fleet: N loopback SSH nodes, each a real `sshd` on its own port with its own host key,
key-only root login, a runtime root and the recording `docker` stand-in first on its PATH.

Everything runs inside the private network namespace `bench/run` made, so loopback, ports and
iptables rules are ours alone and vanish with the namespace. One fleet of the largest N is
started once; a smaller N uses its first nodes.

A delayed link (`latency(150)`) is the lab's NFQUEUE program (tests/lab/netem.py; this kernel has
no sch_netem) holding every packet *to* a node port for the delay: each request/answer pair
between the controller and a node then costs one extra delay, as on a slow uplink.
"""

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
NETEM = REPO / "tests" / "lab" / "netem.py"
BASE_PORT = 22000
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


class Node:
    def __init__(self, fleet, i):
        self.i = i
        self.name = f"n{i:02d}"
        self.port = BASE_PORT + i
        self.dir = fleet.work / "nodes" / self.name
        self.root = self.dir / "root"  # the runtime root every tool converges
        self.log = self.dir / "docker.log"  # what the stand-in was asked
        self.docker_socket = self.dir / "docker.sock"  # no engine behind it, on purpose
        self.proc = None

    def log_size(self):
        try:
            return self.log.stat().st_size
        except FileNotFoundError:
            return 0

    def log_since(self, offset):
        with open(self.log, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace").splitlines()


class Fleet:
    def __init__(self, work: Path, n: int, services, secrets):
        self.work = work
        self.services = services
        self.secrets = secrets  # service -> the .env bytes kept on every node (host-local secrets)
        self.client_key = work / "client_key"
        self.known_hosts = work / "known_hosts"
        self.ctl = work / "ctl"  # every control socket any tool makes lives below here
        self.nodes = [Node(self, i) for i in range(1, n + 1)]
        self.netem = None

    # -- setup -----------------------------------------------------------------------------

    def start(self):
        self.ctl.mkdir(parents=True, exist_ok=True)
        keygen(self.client_key, "bench-client")
        authorized = self.work / "authorized_keys"
        shutil.copy(self.client_key.with_suffix(".pub"), authorized)
        standin = (BENCH / "node" / "docker").read_text()
        lines = []
        for n in self.nodes:
            (n.dir / "bin").mkdir(parents=True, exist_ok=True)
            (n.dir / "home").mkdir(exist_ok=True)
            host_key = n.dir / "ssh_host_ed25519_key"
            keygen(host_key, f"bench-{n.name}")
            docker = n.dir / "bin" / "docker"
            docker.write_text(standin.replace("@LOG@", str(n.log)))
            docker.chmod(0o755)
            # HOME is the node's own, empty folder: a login shell then reads no .bashrc of this
            # machine's (pyenv set-up there costs ~0.3 s per command), and each node keeps its
            # own ~/.ansible. PATH puts the stand-in first.
            path = f"{n.dir}/bin:/usr/local/bin:/usr/bin:/bin"
            (n.dir / "sshd_config").write_text(
                f"# benchmark node {n.name}\n"
                f"ListenAddress 127.0.0.1:{n.port}\n"
                f"HostKey {host_key}\n"
                f"PidFile {n.dir}/sshd.pid\n"
                f"AuthorizedKeysFile {authorized}\n"
                "PubkeyAuthentication yes\nPasswordAuthentication no\n"
                "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
                "UsePAM no\nStrictModes no\nPrintMotd no\nPrintLastLog no\nUseDNS no\n"
                "MaxSessions 64\nMaxStartups 200\nLogLevel ERROR\n"
                f"SetEnv HOME={n.dir}/home PATH={path} DOCKER_HOST=unix://{n.docker_socket}\n"
                "Subsystem sftp internal-sftp\n"
            )
            pub = (n.dir / "ssh_host_ed25519_key.pub").read_text().split()[:2]
            lines.append(f"[127.0.0.1]:{n.port} {' '.join(pub)}\n")
        self.known_hosts.write_text("".join(lines))
        for n in self.nodes:
            n.proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(n.dir / "sshd_config")],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=open(n.dir / "sshd.log", "wb"),
            )
            record_pid(self.work, n.proc.pid)
        deadline = time.monotonic() + 20
        for n in self.nodes:
            while not port_open(n.port):
                if n.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"sshd of {n.name} did not start:\n{(n.dir / 'sshd.log').read_text()}"
                    )
                time.sleep(0.02)

    def stop(self):
        self.latency(0)
        for n in self.nodes:
            if n.proc and n.proc.poll() is None:
                n.proc.terminate()
                try:
                    n.proc.wait(5)
                except subprocess.TimeoutExpired:
                    n.proc.kill()

    # -- per run -----------------------------------------------------------------------------

    def reset(self, nodes):
        """Empties the runtime roots: a fresh node holds only its host-local secrets."""
        for n in nodes:
            if n.root.exists():
                shutil.rmtree(n.root)
            for svc in self.services:
                env = n.root / "config" / svc / ".env"
                env.parent.mkdir(parents=True, exist_ok=True)
                env.write_bytes(self.secrets[svc])
                env.chmod(0o600)

    def ssh_base(self, node, control=None):
        """The argument vector of a plain OpenSSH client to `node`: strict pinned host key."""
        opts = [
            "-i", str(self.client_key), "-p", str(node.port),
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
            "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "LogLevel=ERROR",
        ]
        if control:
            opts += ["-o", f"ControlPath={control}", "-o", "ControlMaster=no"]
        else:
            opts += ["-o", "ControlMaster=no", "-o", "ControlPath=none"]
        return ["ssh", *opts]

    def close_masters(self):
        """Closes every SSH master any tool left under `ctl/` (homelab's `hl-ssh-*`, ansible's
        ControlPersist, the warm floor's), then makes sure no client process of ours is left.
        Returns what had to be killed (a tool that leaks masters shows up here)."""
        for sock in self.ctl.rglob("*"):
            if sock.is_socket():
                subprocess.run(
                    ["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "bench-node"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10,
                )
        leftovers = []
        deadline = time.monotonic() + 5
        while True:
            leftovers = our_clients(self.ctl)
            if not leftovers or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        for pid, cmd in leftovers:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for d in self.ctl.iterdir():
            shutil.rmtree(d, ignore_errors=True) if d.is_dir() else d.unlink()
        return leftovers

    def latency(self, ms):
        """Delays every packet sent to a node port by `ms` (0: no delay)."""
        rule = [
            "OUTPUT", "-o", "lo", "-p", "tcp",
            "--dport", f"{BASE_PORT}:{BASE_PORT + len(self.nodes)}",
            "-j", "NFQUEUE", "--queue-num", "0", "--queue-bypass",
        ]
        if self.netem:
            subprocess.run(["iptables", "-t", "mangle", "-D", *rule], stderr=subprocess.DEVNULL)
            self.netem.terminate()
            self.netem.wait()
            self.netem = None
        if not ms:
            return
        log = self.work / "netem.log"
        self.netem = subprocess.Popen(
            [sys.executable, str(NETEM), "0", str(ms), "0", "0"],
            stdout=open(log, "w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        record_pid(self.work, self.netem.pid)
        deadline = time.monotonic() + 20
        while "bound" not in log.read_text():
            if self.netem.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"netem.py did not bind its queue: {log.read_text()}")
            time.sleep(0.02)
        subprocess.run(["iptables", "-t", "mangle", "-A", *rule], check=True)

    def handshake_cpu(self, node, kex=None, times=10):
        """Milliseconds of CPU the `ssh` client spends on one cold `ssh node true` (median of
        `times`), with OpenSSH's default key exchange or the one named: what a handshake costs
        the controller, apart from the wire."""
        argv = [*self.ssh_base(node), *(["-o", f"KexAlgorithms={kex}"] if kex else []),
                "root@127.0.0.1", "true"]
        spent = []
        for _ in range(times):
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
            _, status, ru = os.wait4(p.pid, 0)
            p.returncode = os.waitstatus_to_exitcode(status)
            if p.returncode != 0:
                raise RuntimeError(f"`{' '.join(argv)}` exited {p.returncode}")
            spent.append((ru.ru_utime + ru.ru_stime) * 1000)
        return sorted(spent)[len(spent) // 2]

    def kex(self, node):
        """The key exchange a plain OpenSSH client and the node agree on."""
        p = subprocess.run([*self.ssh_base(node), "-v", "root@127.0.0.1", "true"],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, check=True)
        said = [l for l in p.stderr.splitlines() if "kex: algorithm:" in l]
        return said[0].split("kex: algorithm:")[1].strip() if said else "unknown"

    def measure_rtt(self, node):
        """Seconds of one `ssh true` on a fresh connection (the handshake is ~3 round trips)."""
        t = time.monotonic()
        subprocess.run([*self.ssh_base(node), "root@127.0.0.1", "true"], check=True)
        return time.monotonic() - t


def keygen(path: Path, comment):
    if not path.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
            check=True,
        )


def port_open(port):
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def record_pid(work, pid):
    """Every long-lived process we start is listed, so bench/run's trap ends exactly those."""
    with open(work / "pids", "a") as f:
        f.write(f"{pid}\n")


def our_clients(ctl: Path):
    """SSH client processes (masters or muxes) whose command line names our control folder."""
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"ssh") and any(str(ctl).encode() in a for a in cmd):
            out.append((int(p.name), shlex.join(a.decode(errors="replace") for a in cmd if a)))
    return out
