"""The benchmark driver (run by bench/run inside its private network namespace).

For each fleet size N and link (loopback, then every node link delayed), for each round, the
tools take turns in an order rotated by the round; each tool starts from empty nodes and runs
the four scenarios in sequence (fresh → no-op → one change → plan only), every SSH master
closed before each timed run, every run checked. Results go to the Markdown table (table.py)
and, raw, to a JSON file beside it.
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

import checks
import table
from fleet import Fleet
from tools import Ansible, Floor, Homelab, Pyinfra, ToolFailed
from workload import CHANGED, SERVICES, Workload, secret

# scenario -> (version the nodes must hold afterwards, services brought up on every node)
SCENARIOS = {
    "fresh": ("v1", SERVICES),
    "noop": ("v1", []),
    "change": ("v2", [CHANGED]),
    "plan": ("v2", []),  # desired is v3 (one more change pending); plan must change nothing
}
DESIRED = {"fresh": "v1", "noop": "v1", "change": "v2", "plan": "v3"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--homelab", type=Path, required=True)
    ap.add_argument("--venv", type=Path, required=True)
    ap.add_argument("--sizes", default="6,20,50")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--latency-rounds", type=int, default=1)
    ap.add_argument("--latency-ms", type=int, default=150)
    ap.add_argument("--no-latency", action="store_true")
    ap.add_argument("--peer-rounds", type=int, default=1,
                    help="rounds pyinfra and ansible take part in (they are slow and steady)")
    ap.add_argument("--budget", type=float, default=1800,
                    help="seconds; a peer round whose estimate would end past it is skipped")
    ap.add_argument("--tools", default=",".join(table.TOOLS))
    ap.add_argument("--skip", action="append", default=[],
                    help="TOOL@N[+lat]=reason: leave a slow peer out of one cell")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()

    sizes = [int(x) for x in a.sizes.split(",")]
    wanted = a.tools.split(",")
    skips = {}
    for s in a.skip:
        k, _, reason = s.partition("=")
        skips[k] = reason or "left out"
    links = [("loopback", 0, a.rounds)]
    if not a.no_latency:
        links.append((f"+{a.latency_ms} ms", a.latency_ms, a.latency_rounds))

    fleet = Fleet(a.work, max(sizes), SERVICES, {s: secret(s) for s in SERVICES})
    results, notes = [], []
    started = time.monotonic()
    meta = {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "about": about(a)}
    meta["about"]["load average at start"] = load()
    took = {}  # (tool, link) -> (N, seconds of its last whole round): for budget estimates
    try:
        fleet.start()
        for n in sizes:
            nodes = fleet.nodes[:n]
            wl = Workload(a.work, fleet, a.homelab)
            wl.generate(nodes)
            tools = [
                Floor(fleet, wl, nodes), Floor(fleet, wl, nodes, warm=True),
                Pyinfra(fleet, wl, nodes, a.venv, a.work), Ansible(fleet, wl, nodes, a.venv, a.work),
                Homelab(fleet, wl, nodes, a.homelab, a.work),
            ]
            tools = [t for t in tools if t.name in wanted]
            if not notes:
                # Why a cold connection costs what it does here: the client's share of a
                # handshake with OpenSSH's default key exchange, and with the one paramiko (pyinfra's
                # SSH) negotiates.
                kex = fleet.kex(nodes[0])
                own = fleet.handshake_cpu(nodes[0])
                c25519 = fleet.handshake_cpu(nodes[0], "curve25519-sha256")
                notes.append(f"one cold `ssh node true` costs the client {own:.0f} ms of CPU with "
                             f"OpenSSH's default key exchange ({kex}; the floor, ansible and "
                             f"homelab use it), {c25519:.0f} ms with curve25519-sha256 (what "
                             "paramiko, pyinfra's SSH, negotiates); median of 10 on loopback")
            for link, ms, rounds in links:
                fleet.latency(ms)
                if ms:
                    rtt = fleet.measure_rtt(nodes[0])
                    notes.append(f"N={n}, {link}: one cold `ssh node true` took {rtt:.2f} s "
                                 f"(a handshake is ~4 round trips)")
                for rnd in range(rounds):
                    order = tools[rnd % len(tools):] + tools[:rnd % len(tools)]
                    for tool in order:
                        key = f"{tool.name.replace(' ', '-')}@{n}" + ("+lat" if ms else "")
                        peer = tool.name in ("pyinfra", "ansible")
                        if peer and rnd >= a.peer_rounds:
                            continue
                        reason = skips.get(key)
                        if peer and not reason:
                            reason = over_budget(took, tool.name, link, n, started, a.budget)
                        if reason:
                            for sc in SCENARIOS:
                                results.append(record(n, link, sc, tool.name, rnd, skipped=reason))
                            continue
                        t0 = time.monotonic()
                        results += rounds_of(tool, fleet, wl, nodes, n, link, rnd, notes)
                        took[(tool.name, link)] = (n, time.monotonic() - t0)
                        log(f"[{time.monotonic() - started:6.0f} s] N={n} {link} round {rnd + 1}: "
                            f"{tool.name}: " + ", ".join(
                                f"{r['scenario']} {r['seconds']:.2f}" + ("" if r["ok"] else " FAILED")
                                for r in results[-4:]))
                fleet.latency(0)
            report(results, meta, notes, a.out)
    finally:
        fleet.stop()
        fleet.close_masters()
    meta["about"]["load average at end"] = load()
    meta["about"]["benchmark wall time"] = f"{time.monotonic() - started:.0f} s"
    text = report(results, meta, notes, a.out)
    print(text)
    return 1 if any(not r["ok"] and not r.get("skipped") for r in results) else 0


def over_budget(took, tool, link, n, started, budget):
    """Why a peer's round is skipped, or None: its estimate (its last round on this link, or
    on loopback, scaled by N: both peers' work grows with the fleet on 2 cores) would end
    past the budget."""
    last = took.get((tool, link)) or took.get((tool, "loopback"))
    if not last:
        return None
    est = last[1] * n / last[0]
    left = budget - (time.monotonic() - started)
    if est > left:
        return f"estimated {est:.0f} s (its N={last[0]} round scaled), {max(left, 0):.0f} s of the {budget:.0f} s budget left"
    return None


def load():
    return " ".join(f"{x:.1f}" for x in os.getloadavg()) + f" ({os.cpu_count()} cores)"


def rounds_of(tool, fleet, wl, nodes, n, link, rnd, notes):
    """One tool, from empty nodes, through the four scenarios."""
    out = []
    fleet.close_masters()
    fleet.reset(nodes)
    if isinstance(tool, Homelab):
        tool.reset()
    for scenario, (version, expect_up) in SCENARIOS.items():
        leftovers = fleet.close_masters()
        if leftovers:
            notes.append(f"{tool.name} left {len(leftovers)} ssh process(es) running before "
                         f"N={n} {link} {scenario}, e.g. `{leftovers[0][1][:160]}`")
        problems, run = [], None
        offsets = {x.name: x.log_size() for x in nodes}
        try:
            tool.before(scenario)
            run = tool.run(scenario, DESIRED[scenario])
        except ToolFailed as e:
            problems.append(str(e))
        except Exception as e:  # noqa: BLE001 - a crash of the harness is a failed run too
            problems.append(f"harness: {e}\n{traceback.format_exc()[-800:]}")
        problems += checks.check(fleet, wl, nodes, version, expect_up, offsets)
        out.append(record(n, link, scenario, tool.name, rnd, run=run, problems=problems))
    fleet.close_masters()
    return out


def record(n, link, scenario, tool, rnd, run=None, problems=(), skipped=None):
    r = {"N": n, "link": link, "scenario": scenario, "tool": tool, "round": rnd,
         "ok": run is not None and not problems and not skipped,
         "seconds": run.seconds if run else 0.0, "problems": list(problems)}
    if skipped:
        r["skipped"] = skipped
    if run:
        r.update(rss_plan_kb=run.rss_plan_kb, rss_apply_kb=run.rss_apply_kb,
                 round_trips=run.round_trips, note=run.note)
    else:
        r.update(rss_plan_kb=0, rss_apply_kb=0, round_trips={}, note="")
    return r


def report(results, meta, notes, out: Path):
    meta = dict(meta, notes=notes)
    text = table.render(results, meta)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    return text


def about(a):
    def ver(argv):
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=60)
            return (p.stdout or p.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "?"

    repo = Path(__file__).resolve().parent.parent
    return {
        "machine": f"{platform.node()}, {os.cpu_count()} cores, Linux {platform.release()}",
        "homelab": f"{ver([str(a.homelab), '--version'])} (git "
                   f"{ver(['git', '-C', str(repo), 'rev-parse', '--short', 'HEAD'])}, release build)",
        "pyinfra": ver([str(a.venv / 'bin' / 'pyinfra'), "--version"]),
        "ansible": ver([str(a.venv / 'bin' / 'ansible-playbook'), "--version"]),
        "OpenSSH": ver(["ssh", "-V"]),
        "fleet": f"N loopback sshd nodes (own port, host key, key-only root), 8 services each; "
                 f"a recording `docker` stand-in; no Docker Engine",
        "link delay": f"{a.latency_ms} ms on every packet to a node (tests/lab/netem.py, NFQUEUE; "
                      "no sch_netem in this kernel)" if not a.no_latency else "none",
        "rounds": f"{a.rounds} on loopback, {a.latency_rounds} with delay (tool order rotated)",
    }


def log(msg):
    print(msg, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
