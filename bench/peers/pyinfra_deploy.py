# pyinfra 3.x deploy of the benchmark: per service, sync the desired folder to the node and run
# `docker compose up` only when the sync changed something (idempotent: a no-op run changes
# nothing and calls nothing). BENCH_DESIRED is the desired tree of this version
# (<dir>/<node>/<svc>/...), the node's runtime root is host data (`root`).
import os

from pyinfra import host
from pyinfra.operations import files, server

desired = os.environ["BENCH_DESIRED"]
root = host.data.root
for svc in os.environ["BENCH_SERVICES"].split():
    dest = f"{root}/state/services/{svc}"
    synced = files.sync(
        name=f"ship {svc}",
        src=f"{desired}/{host.name}/{svc}",
        dest=dest,
        delete=True,
        add_deploy_dir=False,
    )
    server.shell(
        name=f"up {svc}",
        commands=[f"cd {dest} && docker compose -p {svc} -f docker-compose.yml up -d --remove-orphans"],
        _if=synced.did_change,
    )
