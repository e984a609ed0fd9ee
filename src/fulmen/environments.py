"""Cluster environments: where a distributed run learns its ranks, its world size and its rendezvous.

One class per way a job can be started; `detect_environment` picks the one that matches the
variables the process was started with:

| started by | detected by | who starts the processes |
|---|---|---|
| `torchrun` / torch elastic | `TORCHELASTIC_RUN_ID` | torchrun |
| SLURM `srun` | `SLURM_NTASKS` (not an interactive shell) | srun |
| plain `python train.py` | anything else | fulmen, unless `LOCAL_RANK` is already set |

The plain environment is the classic multi-machine recipe: on every machine set `MASTER_ADDR`,
`MASTER_PORT` and `NODE_RANK`, then start the script once; fulmen starts the other local processes.
"""

from __future__ import annotations

import os
import re
import socket

from fulmen.utilities import MisconfigurationException


def find_free_port() -> int:
    """A TCP port on this machine that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _int_env(name: str, default: int | None = None) -> int | None:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise MisconfigurationException(
            f"Environment variable {name}={value!r} must be an integer."
        ) from None


class ClusterEnvironment:
    """Ranks and rendezvous of one process; subclasses read them from their launcher's variables.

    `num_devices` is the number of processes per machine and `num_nodes` the number of machines, as
    given to the Trainer; environments that know better (torchrun, SLURM) check them against their own.
    """

    def __init__(self, num_devices: int = 1, num_nodes: int = 1) -> None:
        self.num_devices = num_devices
        self.num_nodes = num_nodes

    @staticmethod
    def detect() -> bool:
        """True when the current process was started by this environment's launcher."""
        return False

    @property
    def creates_processes_externally(self) -> bool:
        """True when something other than fulmen starts every process of the job."""
        return True

    @property
    def main_address(self) -> str:
        """Host name or address of the process of global rank 0."""
        return os.environ.get("MASTER_ADDR", "127.0.0.1")

    @property
    def main_port(self) -> int:
        """The port the rank-0 process listens on for the rendezvous."""
        port = _int_env("MASTER_PORT")
        if port is None:
            raise MisconfigurationException(
                "MASTER_PORT is not set; set it to a free port on the rank-0 machine."
            )
        return port

    def world_size(self) -> int:
        """Number of processes in the whole job."""
        return self.num_devices * self.num_nodes

    def global_rank(self) -> int:
        """This process's rank in the whole job."""
        return self.node_rank() * self.num_devices + self.local_rank()

    def local_rank(self) -> int:
        """This process's rank on its machine."""
        return 0

    def node_rank(self) -> int:
        """This machine's rank."""
        return 0

    def validate(self) -> None:
        """Raise a clear error when the Trainer's devices/num_nodes disagree with the launcher's settings."""

    def export(self) -> None:
        """Put MASTER_ADDR/MASTER_PORT in os.environ, where torch.distributed's `env://` reads them."""
        os.environ["MASTER_ADDR"] = self.main_address
        os.environ["MASTER_PORT"] = str(self.main_port)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_devices={self.num_devices}, num_nodes={self.num_nodes})"


class LightningEnvironment(ClusterEnvironment):
    """Plain variables: MASTER_ADDR, MASTER_PORT, NODE_RANK, LOCAL_RANK (and optionally RANK, WORLD_SIZE).

    A process started without `LOCAL_RANK` is local rank 0 of its machine, and fulmen starts the other
    `num_devices - 1` processes itself (they get `LOCAL_RANK` set). On one machine a free port is chosen
    when `MASTER_PORT` is unset; across machines both `MASTER_ADDR` and `MASTER_PORT` must be set.
    """

    @staticmethod
    def detect() -> bool:  # noqa: D102
        return True

    @property
    def creates_processes_externally(self) -> bool:  # noqa: D102
        return "LOCAL_RANK" in os.environ

    @property
    def main_port(self) -> int:  # noqa: D102
        port = _int_env("MASTER_PORT")
        if port is None:
            if self.num_nodes > 1:
                raise MisconfigurationException(
                    f"num_nodes={self.num_nodes} but MASTER_PORT is not set: set MASTER_ADDR (the address of the "
                    "NODE_RANK=0 machine), MASTER_PORT (a free port on it) and NODE_RANK on every machine."
                )
            port = find_free_port()
            os.environ["MASTER_PORT"] = str(port)  # the processes fulmen starts inherit it
        return port

    def world_size(self) -> int:  # noqa: D102
        return _int_env("WORLD_SIZE", self.num_devices * self.num_nodes) or 1

    def global_rank(self) -> int:  # noqa: D102
        rank = _int_env("RANK")
        return rank if rank is not None else self.node_rank() * self.num_devices + self.local_rank()

    def local_rank(self) -> int:  # noqa: D102
        return _int_env("LOCAL_RANK", 0) or 0

    def node_rank(self) -> int:  # noqa: D102
        for name in ("NODE_RANK", "GROUP_RANK"):
            value = _int_env(name)
            if value is not None:
                return value
        return 0

    def validate(self) -> None:  # noqa: D102
        node = self.node_rank()
        if not 0 <= node < self.num_nodes:
            raise MisconfigurationException(
                f"NODE_RANK={node} is out of range for num_nodes={self.num_nodes}; use 0 .. {self.num_nodes - 1}."
            )
        if self.num_nodes > 1 and "MASTER_ADDR" not in os.environ:
            raise MisconfigurationException(
                f"num_nodes={self.num_nodes} but MASTER_ADDR is not set: set it on every machine to the address of "
                "the NODE_RANK=0 machine (and MASTER_PORT to a free port on it)."
            )


class TorchElasticEnvironment(ClusterEnvironment):
    """Processes started by `torchrun` (torch elastic): RANK, LOCAL_RANK, WORLD_SIZE, GROUP_RANK are set."""

    @staticmethod
    def detect() -> bool:  # noqa: D102
        return "TORCHELASTIC_RUN_ID" in os.environ

    def world_size(self) -> int:  # noqa: D102
        return _int_env("WORLD_SIZE", 1) or 1

    def global_rank(self) -> int:  # noqa: D102
        return _int_env("RANK", 0) or 0

    def local_rank(self) -> int:  # noqa: D102
        return _int_env("LOCAL_RANK", 0) or 0

    def node_rank(self) -> int:  # noqa: D102
        return _int_env("GROUP_RANK", 0) or 0

    def validate(self) -> None:  # noqa: D102
        expected = self.num_devices * self.num_nodes
        if self.world_size() != expected:
            raise MisconfigurationException(
                f"torchrun started {self.world_size()} processes in all, but the Trainer asks for devices="
                f"{self.num_devices} x num_nodes={self.num_nodes} = {expected}. Make --nproc-per-node match "
                "`devices` and --nnodes match `num_nodes`."
            )


class SLURMEnvironment(ClusterEnvironment):
    """Tasks started by SLURM's `srun`: one task per device, ranks from SLURM_PROCID/LOCALID/NODEID.

    The rank-0 address is the first host of SLURM_NODELIST; the port is MASTER_PORT when set, else
    derived from the job id so every task computes the same one.
    """

    @staticmethod
    def detect() -> bool:  # noqa: D102
        if "SLURM_NTASKS" not in os.environ:
            return False
        # `salloc` / `srun --pty bash` shells: the user launches python by hand, treat it as plain
        return os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive")

    @property
    def main_address(self) -> str:  # noqa: D102
        if "MASTER_ADDR" in os.environ:
            return os.environ["MASTER_ADDR"]
        nodelist = os.environ.get("SLURM_NODELIST") or os.environ.get("SLURM_JOB_NODELIST") or "127.0.0.1"
        return first_slurm_host(nodelist)

    @property
    def main_port(self) -> int:  # noqa: D102
        port = _int_env("MASTER_PORT")
        if port is not None:
            return port
        job_id = _int_env("SLURM_JOB_ID", 0) or 0
        return 15000 + job_id % 20000

    def world_size(self) -> int:  # noqa: D102
        return _int_env("SLURM_NTASKS", 1) or 1

    def global_rank(self) -> int:  # noqa: D102
        return _int_env("SLURM_PROCID", 0) or 0

    def local_rank(self) -> int:  # noqa: D102
        return _int_env("SLURM_LOCALID", 0) or 0

    def node_rank(self) -> int:  # noqa: D102
        return _int_env("SLURM_NODEID", 0) or 0

    def validate(self) -> None:  # noqa: D102
        per_node = os.environ.get("SLURM_NTASKS_PER_NODE")
        if per_node is not None:
            first = re.match(r"\d+", per_node)
            if first is not None and int(first.group()) != self.num_devices:
                raise MisconfigurationException(
                    f"SLURM starts {first.group()} tasks per node (--ntasks-per-node) but the Trainer has devices="
                    f"{self.num_devices}; make them equal."
                )
        nnodes = _int_env("SLURM_NNODES") or _int_env("SLURM_JOB_NUM_NODES")
        if nnodes is not None and nnodes != self.num_nodes:
            raise MisconfigurationException(
                f"SLURM allocated {nnodes} nodes (--nodes) but the Trainer has num_nodes={self.num_nodes}; make "
                "them equal."
            )


def first_slurm_host(nodelist: str) -> str:
    """The first host name of a SLURM node list such as "gpu[003-005,010],cpu01" (here "gpu003")."""
    first = re.match(r"([^,\[]+)(\[([^\]]*)\])?", nodelist.strip())
    if first is None:
        raise MisconfigurationException(f"Could not read a host name from SLURM_NODELIST={nodelist!r}.")
    prefix, ranges = first.group(1), first.group(3)
    if ranges is None:
        return prefix
    start = ranges.split(",")[0].split("-")[0]
    return prefix + start


_ENVIRONMENTS: tuple[type[ClusterEnvironment], ...] = (TorchElasticEnvironment, SLURMEnvironment)


def detect_environment(num_devices: int, num_nodes: int) -> ClusterEnvironment:
    """The environment this process was started in: torchrun, SLURM, else plain variables."""
    for cls in _ENVIRONMENTS:
        if cls.detect():
            return cls(num_devices, num_nodes)
    return LightningEnvironment(num_devices, num_nodes)
