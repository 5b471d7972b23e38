"""The tools under test, each converging the fleet to a version of the desired tree.

`run(scenario, version)` does one timed run and returns a `Run`; a tool that errs raises
`ToolFailed` with what it printed. Set-up that is not the tool's work (starting warm masters,
signing and approving a homelab plan) is done outside the timed part, as the issue prescribes.
Scenarios: fresh, noop, change (apply) and plan (read and diff only, change nothing).
"""

import io
import json
import os
import shlex
import subprocess
import tarfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
FLOOR_SCRIPT = (BENCH / "node" / "floor.sh").read_text()


class ToolFailed(Exception):
    pass


@dataclass
class Run:
    seconds: float
    rss_plan_kb: int = 0
    rss_apply_kb: int = 0
    round_trips: dict = field(default_factory=dict)  # node -> commands sent (homelab apply)
    note: str = ""


def tail(text, n=15):
    return "\n".join(text.strip().splitlines()[-n:])


def parallel(fn, items):
    """fn(item) for every item at once, one thread each; results in order, first error raised."""
    out = [None] * len(items)
    errs = []

    def one(k, it):
        try:
            out[k] = fn(it)
        except Exception as e:  # noqa: BLE001 - reported below, per node
            errs.append(e)

    threads = [threading.Thread(target=one, args=(k, it)) for k, it in enumerate(items)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errs:
        raise errs[0]
    return out


class Floor:
    """Per node ONE ssh round trip: stream the desired tree as a tar, replace what differs,
    call the stand-in once per replaced service. `warm`: the connection is already up (a
    ControlMaster started before the timer), so only the command's own round trip is timed."""

    def __init__(self, fleet, workload, nodes, warm=False):
        self.fleet, self.workload, self.nodes, self.warm = fleet, workload, nodes, warm
        self.name = "floor warm" if warm else "floor"
        self.ctl = fleet.ctl / "floor"

    def before(self, scenario):
        if not self.warm:
            return
        self.ctl.mkdir(parents=True, exist_ok=True)

        def master(n):
            subprocess.run(
                [*self.fleet.ssh_base(n)[:-4], "-o", "ControlMaster=yes", "-o",
                 f"ControlPath={self.ctl / n.name}", "-o", "ControlPersist=yes", "-f", "-N",
                 "root@127.0.0.1"], check=True, timeout=60)

        parallel(master, self.nodes)

    def run(self, scenario, version):
        mode = "plan" if scenario == "plan" else "apply"
        t0 = time.monotonic()

        def one(n):
            stdin = b"" if mode == "plan" else tar_of(self.workload.desired / version / n.name)
            control = self.ctl / n.name if self.warm else None
            cmd = shlex.join(["sh", "-c", FLOOR_SCRIPT, "floor", str(n.root), mode])
            p = subprocess.run([*self.fleet.ssh_base(n, control), "root@127.0.0.1", cmd],
                               input=stdin, capture_output=True, timeout=600)
            if p.returncode != 0:
                raise ToolFailed(f"{n.name}: exit {p.returncode}: {p.stderr.decode()[-500:]}")
            if mode == "plan":  # the diff a planner shows: which services differ from desired
                return diff_tar(p.stdout, self.workload.tree(version, n))

        parallel(one, self.nodes)
        return Run(time.monotonic() - t0)


def tar_of(folder: Path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for p in sorted(folder.rglob("*")):
            t.add(p, arcname=str(p.relative_to(folder)), recursive=False)
    return buf.getvalue()


def diff_tar(data, want):
    have = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        for m in t.getmembers():
            if m.isfile():
                have[m.name.removeprefix("./")] = t.extractfile(m).read()
    return sorted({k.split("/")[0] for k in set(have) | set(want) if have.get(k) != want.get(k)})


class Pyinfra:
    name = "pyinfra"

    def __init__(self, fleet, workload, nodes, venv: Path, work: Path):
        self.fleet, self.workload, self.nodes = fleet, workload, nodes
        self.bin = venv / "bin" / "pyinfra"
        self.dir = work / "pyinfra"
        self.dir.mkdir(parents=True, exist_ok=True)
        hosts = [
            (n.name, {
                "ssh_hostname": "127.0.0.1", "ssh_port": n.port, "ssh_user": "root",
                "ssh_key": str(fleet.client_key),
                "ssh_known_hosts_file": str(fleet.known_hosts),
                "ssh_strict_host_key_checking": "yes", "root": str(n.root),
            })
            for n in nodes
        ]
        (self.dir / "inventory.py").write_text(f"bench = {hosts!r}\n")

    def before(self, scenario):
        pass

    def run(self, scenario, version):
        from workload import SERVICES

        argv = [str(self.bin), "inventory.py", str(BENCH / "peers" / "pyinfra_deploy.py"),
                "-y", "--parallel", str(len(self.nodes)), "--no-wait"]
        if scenario == "plan":
            argv.append("--dry")
        env = dict(os.environ, BENCH_DESIRED=str(self.workload.desired / version),
                   BENCH_SERVICES=" ".join(SERVICES))
        t0 = time.monotonic()
        p = subprocess.run(argv, cwd=self.dir, env=env, capture_output=True, text=True,
                           timeout=1800)
        secs = time.monotonic() - t0
        if p.returncode != 0:
            raise ToolFailed(f"pyinfra exit {p.returncode}:\n{tail(p.stdout + p.stderr)}")
        return Run(secs)


class Ansible:
    name = "ansible"

    def __init__(self, fleet, workload, nodes, venv: Path, work: Path):
        self.fleet, self.workload, self.nodes = fleet, workload, nodes
        self.bin = venv / "bin" / "ansible-playbook"
        self.dir = work / "ansible"
        (self.dir / "tmp").mkdir(parents=True, exist_ok=True)
        cp = fleet.ctl / "ansible"
        (self.dir / "ansible.cfg").write_text(
            "[defaults]\n"
            f"inventory = {self.dir / 'hosts.ini'}\nforks = {len(nodes)}\n"
            "host_key_checking = True\ninterpreter_python = /usr/bin/python3\n"
            "gathering = explicit\nretry_files_enabled = False\n"
            f"local_tmp = {self.dir / 'tmp'}\n"
            "[ssh_connection]\npipelining = True\n"
            f"ssh_args = -o ControlMaster=auto -o ControlPersist=60s -o IdentitiesOnly=yes "
            f"-o UserKnownHostsFile={fleet.known_hosts} -o StrictHostKeyChecking=yes\n"
            f"control_path_dir = {cp}\n"
        )
        lines = ["[bench]\n"] + [
            f"{n.name} ansible_host=127.0.0.1 ansible_port={n.port} root={n.root}\n" for n in nodes
        ]
        lines.append(f"[bench:vars]\nansible_user=root\nansible_ssh_private_key_file={fleet.client_key}\n")
        (self.dir / "hosts.ini").write_text("".join(lines))

    def before(self, scenario):
        (self.fleet.ctl / "ansible").mkdir(parents=True, exist_ok=True)

    def run(self, scenario, version):
        from workload import SERVICES

        extra = json.dumps({"desired": str(self.workload.desired / version), "services": SERVICES})
        argv = [str(self.bin), str(BENCH / "peers" / "playbook.yml"), "-e", extra]
        if scenario == "plan":
            argv.append("--check")
        env = dict(os.environ, ANSIBLE_CONFIG=str(self.dir / "ansible.cfg"),
                   ANSIBLE_HOME=str(self.dir / "home"), ANSIBLE_NOCOLOR="1")
        t0 = time.monotonic()
        p = subprocess.run(argv, cwd=self.dir, env=env, capture_output=True, text=True,
                           timeout=1800)
        secs = time.monotonic() - t0
        if p.returncode != 0:
            raise ToolFailed(f"ansible-playbook exit {p.returncode}:\n{tail(p.stdout + p.stderr)}")
        return Run(secs)


class Homelab:
    """`homelab plan --key K` (timed; `fleet.close_masters` has closed the connections homelab
    keeps between commands, so it connects cold as the floor does), `homelab approve` (untimed),
    `homelab apply` of the approved plan (timed; it rides the connections the plan kept, as a
    plan and its apply made in a row do). Peak RSS of plan and apply via /usr/bin/time; round
    trips per node from apply's JSON `node-done` events."""

    name = "homelab"

    def __init__(self, fleet, workload, nodes, binary: Path, work: Path):
        self.fleet, self.workload, self.nodes, self.bin = fleet, workload, nodes, binary
        self.work = work
        self.ctl = fleet.ctl / "homelab"  # TMPDIR: homelab's hl-ssh-* control folders
        self.records = work / "controller"  # HOMELAB_ROOT: the controller's records
        self.log = work / "homelab.log"

    def env(self):
        self.ctl.mkdir(parents=True, exist_ok=True)
        return dict(os.environ, HOMELAB_SSH_KEY=str(self.fleet.client_key),
                    HOMELAB_ROOT=str(self.records), TMPDIR=str(self.ctl), NO_COLOR="1",
                    HOMELAB_REPO=str(self.workload.repo))

    def reset(self):
        import shutil

        shutil.rmtree(self.records, ignore_errors=True)
        for p in (self.workload.repo / "plans").glob("*.plan*"):
            p.unlink()
        for p in (self.workload.repo / "plans").glob("*.approved"):
            p.unlink()
        # What bootstrap leaves on a node: this binary at <root>/bin/homelab and the trust
        # roots, so that plan and apply go through each node's engine (`homelab node serve`).
        for n in self.nodes:
            (n.root / "bin").mkdir(parents=True, exist_ok=True)
            (n.root / "bin" / "homelab").symlink_to(self.bin.resolve())
            p = subprocess.run([str(self.bin), "node", "pin", n.name, "--into", str(n.root)],
                               env=self.env(), capture_output=True, text=True)
            if p.returncode != 0:
                raise ToolFailed(f"homelab node pin exit {p.returncode}:\n{tail(p.stdout + p.stderr)}")

    def before(self, scenario):
        pass

    def cmd(self, argv, timed=True):
        """Runs homelab; (seconds, peak RSS in KB, stdout, stderr, exit code)."""
        rss = self.work / "rss"
        full = ["/usr/bin/time", "-f", "%M", "-o", str(rss), str(self.bin), *argv]
        t0 = time.monotonic()
        p = subprocess.run(full, env=self.env(), capture_output=True, text=True, timeout=1800)
        secs = time.monotonic() - t0
        with open(self.log, "a") as f:
            f.write(f"$ homelab {shlex.join(argv)}  # exit {p.returncode}, {secs:.2f} s\n"
                    f"{p.stdout}{p.stderr}\n")
        try:
            kb = int(rss.read_text().strip().splitlines()[-1])
        except (OSError, ValueError, IndexError):
            kb = 0
        return secs, kb, p.stdout, p.stderr, p.returncode

    def run(self, scenario, version):
        self.workload.use(version)
        key = str(self.workload.operator_key)
        secs, rss_plan, out, err, code = self.cmd(["plan", "--key", key])
        if code != 0:
            raise ToolFailed(f"homelab plan exit {code}:\n{tail(out + err)}")
        first = out.splitlines()[0] if out else ""
        plan_id = first.removeprefix("plan ").strip() if first.startswith("plan ") else None
        if scenario == "plan":
            return Run(secs, rss_plan_kb=rss_plan)
        if plan_id is None or not (self.workload.repo / "plans" / f"{plan_id}.plan").exists():
            # No plan file: homelab found nothing to do (the no-op case); nothing to apply.
            return Run(secs, rss_plan_kb=rss_plan, note="no plan saved")
        plan = self.workload.repo / "plans" / f"{plan_id}.plan"
        _, _, aout, aerr, acode = self.cmd(["approve", str(plan), "--key", key, "--yes"])
        if acode != 0:
            raise ToolFailed(f"homelab approve exit {acode}:\n{tail(aout + aerr)}")
        approved = self.workload.repo / "plans" / f"{plan_id}.approved"
        asecs, rss_apply, out, err, code = self.cmd(
            ["apply", "--format", "json", "--parallel", str(len(self.nodes)), str(approved)])
        trips = {}
        for line in out.splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("event") == "node-done":
                trips[ev["node"]] = ev.get("round_trips")
        if code != 0:
            raise ToolFailed(f"homelab apply exit {code}:\n{tail(out + err)}")
        return Run(secs + asecs, rss_plan_kb=rss_plan, rss_apply_kb=rss_apply, round_trips=trips)
