"""Every run is checked against what its scenario must leave behind; a run that does not match
counts as FAILED in the table, whatever the tool's exit status said.

- the node tree: `<root>/state/services/<svc>/` (a symlink to a release for homelab, a folder
  for the others) holds exactly the desired files of the expected version, byte for byte;
- the host-local secrets (`<root>/config/<svc>/.env`) are untouched;
- the stand-in's log: during the run, `docker compose ... up` was called exactly once for each
  service the scenario changes on the node, and for no other.
"""

from workload import SERVICES


def node_tree(node):
    base = node.root / "state" / "services"
    out = {}
    if not base.exists():
        return out
    for svc in sorted(p for p in base.iterdir() if p.name in SERVICES):
        for f in sorted(svc.rglob("*")):  # rglob below a symlinked folder follows it
            if f.is_file():
                out[f"{svc.name}/{f.relative_to(svc)}"] = f.read_bytes()
    return out


def ups(lines):
    """Services brought up, from the stand-in's `cwd|args` lines."""
    out = []
    for line in lines:
        _, _, args = line.partition("|")
        a = args.split()
        if "compose" in a and "up" in a:
            out.append(a[a.index("-p") + 1] if "-p" in a else "?")
    return out


def check(fleet, workload, nodes, version, expect_up, offsets):
    """Problems with the nodes after a run (empty: the run is good). `version`: the desired
    tree the nodes must hold; `expect_up`: the services that must have been brought up."""
    problems = []
    for n in nodes:
        want = workload.tree(version, n)
        have = node_tree(n)
        missing = sorted(set(want) - set(have))
        extra = sorted(set(have) - set(want))
        wrong = sorted(k for k in set(want) & set(have) if want[k] != have[k])
        for what, names in (("missing", missing), ("extra", extra), ("wrong bytes", wrong)):
            if names:
                problems.append(f"{n.name}: {what}: {', '.join(names[:4])}"
                                + (f" (+{len(names) - 4})" if len(names) > 4 else ""))
        for svc in SERVICES:
            env = n.root / "config" / svc / ".env"
            if not env.exists() or env.read_bytes() != fleet.secrets[svc]:
                problems.append(f"{n.name}: config/{svc}/.env changed or gone")
        got = sorted(ups(n.log_since(offsets[n.name])))
        if got != sorted(expect_up):
            problems.append(f"{n.name}: compose up for {got or 'nothing'}, expected "
                            f"{sorted(expect_up) or 'nothing'}")
    return problems
