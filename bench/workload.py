"""The workload: a homelab repository for the fleet (8 services on every node), its versions,
and the desired trees every tool converges.

Versions are what the scenarios need: v1 (fresh, no-op), v2 = v1 with one service's compose
file changed (one change per node), v3 = v2 with another service changed (the change `plan
only` shows). `homelab render` of each version is the desired tree, byte for byte what homelab
ships; the peers and the floor ship those same files, so every tool converges the same bytes.
Secrets are not in the tree: `<root>/config/<svc>/.env` is kept on the node (fleet.reset), as
homelab's model has it.
"""

import shutil
import subprocess
from pathlib import Path

SERVICES = [
    "mosquitto", "nodered", "homeassistant", "grafana",
    "prometheus", "loki", "nginx", "postgres",
]
CHANGED = SERVICES[2]  # the service whose file changes on every node (v2)
PLANNED = SERVICES[5]  # the pending change `plan only` plans (v3)
VERSIONS = {
    "v1": {},
    "v2": {CHANGED: 2},
    "v3": {CHANGED: 2, PLANNED: 2},
}


def secret(svc):
    return f"{svc.upper()}_TOKEN=bench-secret-{svc}\n".encode()


def token(svc):
    return f"{svc.upper()}_TOKEN"


COMPOSE = """services:
  {svc}:
    image: "{{{{ vars.image }}}}"
    container_name: {svc}
    restart: unless-stopped
    env_file: "{{{{ config_dir }}}}/.env"
    environment:
      BENCH_RELEASE: "{release}"
    volumes:
      - "{{{{ data_dir }}}}:/data"
      - "./app.conf:/etc/{svc}/app.conf:ro"
"""

SERVICE_YAML = """name: {svc}
description: benchmark service {svc}
owner_node: all
exposure: internal
dependencies: []
restart_policy: unless-stopped
healthcheck:
  interval: 5s
  timeout: 5s
  retries: 3
  # The floor and the peers wait for nothing after `compose up`; homelab's stability window
  # (10 s by default) is a wait by design, not transport: off here, and said so in the results.
  stable_for: 0s
persistence:
  paths: [data/{svc}]
runtime:
  env_vars:
    - name: {token}
      secret: true
requires: [docker]
backup:
  sets: []
vars:
  image: busybox:1.36
"""

HEALTHCHECK = """#!/bin/sh
# Healthy when the container runs.
state=$(docker inspect -f '{{.State.Running}}' "$HOMELAB_SERVICE" 2>/dev/null) || exit 1
[ "$state" = "true" ] || exit 1
exit 0
"""

# About a kilobyte of configuration per service, shipped read-only beside the compose file.
APP_CONF = "".join(f"# setting {k}\nkey_{k} = value-{k}-{{svc}}\n" for k in range(30))


class Workload:
    def __init__(self, work: Path, fleet, homelab: Path):
        self.repo = work / "repo"
        self.desired = work / "desired"  # desired/<version>/<node>/<svc>/<file>
        self.fleet = fleet
        self.homelab = homelab
        self.operator_key = work / "operator_key"

    def generate(self, nodes):
        """A fresh repository for `nodes`, with every version rendered."""
        if self.repo.exists():
            shutil.rmtree(self.repo)
        if self.desired.exists():
            shutil.rmtree(self.desired)
        r = self.repo
        for d in ["inventory", "plans", "templates"]:
            (r / d).mkdir(parents=True)
        (r / "plans" / "README.md").write_text("Plans of the benchmark fleet.\n")
        topo = ["mesh: tailscale\nsites:\n  bench:\n    uplink: lte\n    offline_first: false\nnodes:\n"]
        for n in nodes:
            topo.append(
                f"  {n.name}:\n    display_name: {n.name.upper()}\n    roles: [edge]\n"
                f"    site: bench\n    ssh:\n      address: 127.0.0.1\n      user: root\n"
                f"      port: {n.port}\n    runtime_root: \"{n.root}\"\n"
                f"    docker_socket: \"{n.docker_socket}\"\n"
            )
            h = r / "hosts" / n.name
            h.mkdir(parents=True)
            (h / "capabilities.yaml").write_text(
                f"node: {n.name}\narch: x86_64\ncpu:\n  cores: 2\nmemory_mb: 2048\ngpu: null\n"
                "devices: []\ndocker:\n  engine: \"24.0\"\n  compose: v2\n"
                "capabilities: [docker, compose-v2]\n"
            )
            svcs = "".join(f"  - name: {s}\n    exposure: internal\n" for s in SERVICES)
            (h / "services.yaml").write_text(f"node: {n.name}\nservices:\n{svcs}")
        (r / "inventory" / "topology.yaml").write_text("".join(topo))
        shutil.copy(self.fleet.known_hosts, r / "inventory" / "known_hosts")
        if not self.operator_key.exists():
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "operator@bench",
                 "-f", str(self.operator_key)], check=True)
        pub = self.operator_key.with_suffix(".pub").read_text().split()[:2]
        (r / "inventory" / "allowed_signers").write_text(
            f'operator@bench namespaces="homelab-plan,homelab-approve" {" ".join(pub)}\n')
        # The bench repository is generated, never committed: plans from it need this.
        (r / "inventory" / "policy.yaml").write_text(
            "plan_ttl: 24h\nallow_uncommitted: true\napprovals:\n  default:\n"
            "    required: 1\n    approvers: [operator@bench]\n")
        for svc in SERVICES:
            s = r / "services" / svc
            s.mkdir(parents=True)
            (s / "service.yaml").write_text(SERVICE_YAML.format(svc=svc, token=token(svc)))
            (s / "README.md").write_text(f"# {svc}\n\nA benchmark service.\n")
            (s / "env.example").write_text(
                f"{token(svc)}=<set in /opt/homelab/config/{svc}/.env>\n")
            (s / "healthcheck.sh").write_text(HEALTHCHECK)
            (s / "healthcheck.sh").chmod(0o755)
            (s / "app.conf").write_text(APP_CONF.replace("{svc}", svc))
        for version in VERSIONS:
            self.use(version)
            out = self.desired / version
            run([str(self.homelab), "--repo", str(r), "render", "--out", str(out)])
        self.use("v1")
        check = subprocess.run([str(self.homelab), "--repo", str(r), "validate"],
                               capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"homelab validate failed:\n{check.stdout}{check.stderr}")

    def use(self, version):
        """Writes the compose files of `version` into the repository."""
        for svc in SERVICES:
            release = VERSIONS[version].get(svc, 1)
            (self.repo / "services" / svc / "docker-compose.yml").write_text(
                COMPOSE.format(svc=svc, release=release))

    def tree(self, version, node):
        """The desired files of `node` at `version`: {"svc/file": bytes}."""
        base = self.desired / version / node.name
        return {str(p.relative_to(base)): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}

    def changed_services(self, before, after):
        """Services whose desired files differ between two versions."""
        return sorted(s for s in SERVICES if VERSIONS[before].get(s, 1) != VERSIONS[after].get(s, 1))


def run(argv):
    p = subprocess.run(argv, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({p.returncode}):\n{p.stdout}{p.stderr}")
    return p
