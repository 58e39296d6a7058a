"""What every container of a topology runs, whichever engine runs it (docker compose, Kubernetes).

Pure: the command lines of the node containers, the bootstrap step and Locust, from the topology and a
few options. ``cluster.compose`` and ``cluster.k8s`` wrap them in their own documents, so both engines
run exactly the same processes:

- a node: ``python -m idresolve.cluster.worker ... --node NAME --host NAME --bind 0.0.0.0 --dial-hosts
  names``, listening at the ports ``plan.make_plan`` assigns and reaching the other nodes by name (a
  compose service, a Kubernetes Service), its store in ``/data``;
- the bootstrap: ``idresolve bootstrap --dial-hosts names --seed N``: waits for every node, allocates the
  prefixes, then registers N identifiers for the load test (idempotent, so it may run again);
- Locust: ``loadtests/locustfile.py`` (copied into the image), told where the nodes are by the topology
  file in the image (``--idr-topology``, by name, like the nodes) and how many identifiers the bootstrap
  seeded (``--idr-identifiers N``). Nothing is shared through a volume, so Locust workers may run on any
  machine. The users only read: writes need admin secrets, and no secret is handed to Locust.

The cluster secret is never part of a command: each engine places it in the container as the file
``/data/cluster-secret``, where the worker and the bootstrap read it.

Rules: no I/O, no clock, no environment.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.topology import Topology
from .credentials import CLUSTER_SECRET_FILE
from .plan import DEFAULT_BASE_PORT, ClusterPlan, NodePlan, make_plan

APP_DIR = "/app"  # the Dockerfile's WORKDIR: config/ is copied to /app/config, loadtests/ to /app/loadtests
DATA_DIR = "/data"  # the Dockerfile's VOLUME
APP_UID = 10001  # the Dockerfile's user; the injected secret file belongs to it
SECRET_ENV = "IDRESOLVE_CLUSTER_SECRET"
SECRET_TARGET = f"{DATA_DIR}/{CLUSTER_SECRET_FILE}"
LOCUSTFILE = f"{APP_DIR}/loadtests/locustfile.py"
LOCUST_USERS = ("RestResolver", "BinaryResolver")  # read-only users: Locust holds no admin secret
LOCUST_MASTER_PORT = 5557  # Locust's default, written out so that master and workers name the same one
DEFAULT_IMAGE = "idresolve:latest"
DEFAULT_LOAD_IMAGE = "idresolve-load:latest"
DEFAULT_SEED = 1000  # identifiers the bootstrap registers for Locust: a second or two of batch writes
SEED_TAG = "SEED"  # `idresolve seed`'s default tag, and the load test's: no knob needed on either side


@dataclass(frozen=True, slots=True)
class ContainerOptions:
    config_name: str  # the topology's file name; the image holds it as /app/config/<config_name>
    latency: str = "on"
    base_port: int = DEFAULT_BASE_PORT
    image: str = DEFAULT_IMAGE
    load_image: str = DEFAULT_LOAD_IMAGE
    seed_identifiers: int = DEFAULT_SEED
    locust_users: int = 50
    locust_spawn_rate: int = 10
    locust_run_time: str = "60s"

    def __post_init__(self) -> None:
        if self.latency not in ("on", "off"):
            raise ValueError(f"latency must be 'on' or 'off', not {self.latency!r}")
        if not self.config_name or "/" in self.config_name or self.config_name.startswith("."):
            raise ValueError(f"config_name must be a plain file name, not {self.config_name!r}")
        if self.seed_identifiers < 0:
            raise ValueError("the number of identifiers to seed cannot be negative")
        if self.locust_users < 1 or self.locust_spawn_rate < 1:
            raise ValueError("Locust needs at least one user and a spawn rate of at least 1")

    @property
    def container_config(self) -> str:
        return f"{APP_DIR}/config/{self.config_name}"


def container_plan(topology: Topology, opts: ContainerOptions, reserved: tuple[str, ...]) -> ClusterPlan:
    """The plan the containers run: the ports of ``make_plan``, every node dialled by its name.
    ``reserved``: names the engine gives to other things of its own (a node may not take them)."""
    names = {n.name: n.name for n in topology.running_nodes()}
    for name in reserved:
        if name in names:
            raise ValueError(f"a node is named {name!r}, a name the container files use for something else: rename it")
    return make_plan(topology, base_port=opts.base_port, workers=1, host="0.0.0.0", dial_hosts=names)


def node_command(n: NodePlan, opts: ContainerOptions) -> list[str]:
    return ["python", "-m", "idresolve.cluster.worker", "--config", opts.container_config, "--data-dir", DATA_DIR,
            "--base-port", str(opts.base_port), "--workers", "1", "--node", n.name, "--host", n.name,
            "--bind", "0.0.0.0", "--dial-hosts", "names", "--latency", opts.latency,
            # The container network is private (only recursive nodes are reachable from outside, and they
            # take no writes), so nodes take credentials and writes over it in plain text: bootstrap and
            # replication need it.
            "--plain-writes"]


def bootstrap_command(opts: ContainerOptions, *, wait_s: int | None = None) -> list[str]:
    argv = ["idresolve", "bootstrap", "--config", opts.container_config, "--data-dir", DATA_DIR,
            "--dial-hosts", "names", "--base-port", str(opts.base_port)]
    if wait_s is not None:
        argv += ["--wait", str(wait_s)]
    if opts.seed_identifiers:
        argv += ["--seed", str(opts.seed_identifiers)]
    return argv


def has_load_test(plan: ClusterPlan, opts: ContainerOptions) -> bool:
    """Locust needs a recursive node to drive and seeded identifiers to ask for."""
    return bool(plan.by_role("recursive")) and opts.seed_identifiers > 0


def _locust_cluster(opts: ContainerOptions) -> list[str]:
    return ["--idr-topology", opts.container_config, "--idr-base-port", str(opts.base_port),
            "--idr-dial-hosts", "names", "--idr-identifiers", str(opts.seed_identifiers)]


def _locust_run(opts: ContainerOptions) -> list[str]:
    return ["--users", str(opts.locust_users), "--spawn-rate", str(opts.locust_spawn_rate),
            "--run-time", opts.locust_run_time]


def locust_command(opts: ContainerOptions, *, csv: str | None = None) -> list[str]:
    """A headless run in one process (the compose service)."""
    argv = ["locust", "-f", LOCUSTFILE, "--headless", *_locust_run(opts)]
    if csv:
        argv += ["--csv", csv]
    return [*argv, *_locust_cluster(opts), *LOCUST_USERS]


def locust_master_command(opts: ContainerOptions, workers: int, *, wait_s: int) -> list[str]:
    """A headless master that waits for its workers, and up to ``wait_s`` for the seeded cluster (nothing
    orders it after the bootstrap); it hands the ``--idr-*`` knobs to the workers."""
    return ["locust", "-f", LOCUSTFILE, "--master", "--master-bind-port", str(LOCUST_MASTER_PORT), "--headless",
            "--expect-workers", str(workers), "--expect-workers-max-wait", str(wait_s), *_locust_run(opts),
            *_locust_cluster(opts), "--idr-wait", str(wait_s), *LOCUST_USERS]


def locust_worker_command(master_host: str) -> list[str]:
    return ["locust", "-f", LOCUSTFILE, "--worker", "--master-host", master_host,
            "--master-port", str(LOCUST_MASTER_PORT)]
