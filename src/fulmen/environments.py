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

`KubeflowEnvironment`, `LSFEnvironment` and `MPIEnvironment` are never picked automatically; pass one
in `Trainer(plugins=[...])` (any environment can be passed that way, as in Lightning).

SLURM can also end a job early and put it back in the queue: with `SLURMEnvironment(auto_requeue=True)`
(the default) a fit that receives `requeue_signal` (SIGUSR1; ask SLURM for it with
`#SBATCH --signal=SIGUSR1@90`) stops after the current batch, writes `hpc_ckpt_<n>.ckpt` into
`default_root_dir`, and runs `scontrol requeue <job id>`; the requeued job's fit resumes from the
newest `hpc_ckpt_<n>.ckpt` when it is given no `ckpt_path`.
"""

from __future__ import annotations

import glob
import os
import re
import signal
import socket
import subprocess
from typing import TYPE_CHECKING, Any

from fulmen.out_of_scope import XLAEnvironment  # noqa: F401  # re-exported: Lightning's plugins.environments
from fulmen.utilities import MisconfigurationException, rank_zero_info, rank_zero_warn

if TYPE_CHECKING:
    from fulmen.trainer import Trainer


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

    def validate_settings(self, num_devices: int, num_nodes: int) -> None:
        """Lightning's spelling of `validate`, with the Trainer's devices and nodes."""
        self.num_devices, self.num_nodes = num_devices, num_nodes
        self.validate()

    def set_world_size(self, size: int) -> None:
        """Lightning's launchers tell an environment its world size; fulmen reads it from the variables."""

    def set_global_rank(self, rank: int) -> None:
        """Lightning's launchers tell an environment its rank; fulmen reads it from the variables."""

    def teardown(self) -> None:
        """Clean up after the run (nothing to do for the environments here)."""

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

    Args:
        auto_requeue: on `requeue_signal`, checkpoint and put the job back in SLURM's queue (see the
            module docstring).
        requeue_signal: the signal SLURM sends before the time limit; SIGUSR1 by default.
    """

    def __init__(
        self,
        auto_requeue: bool = True,
        requeue_signal: signal.Signals | None = None,
        num_devices: int = 1,
        num_nodes: int = 1,
    ) -> None:
        super().__init__(num_devices, num_nodes)
        self.auto_requeue = auto_requeue
        self.requeue_signal = requeue_signal if requeue_signal is not None else _default_requeue_signal()

    @staticmethod
    def job_id() -> str | None:
        """The job to requeue: `<array job>_<task>` for an array task, else SLURM_JOB_ID (None outside SLURM)."""
        array_job, array_task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
        if array_job and array_task:
            return f"{array_job}_{array_task}"
        return os.environ.get("SLURM_JOB_ID")

    def requeue(self) -> bool:
        """Run `scontrol requeue <job id>`; True when it succeeded."""
        job = self.job_id()
        if job is None:
            rank_zero_warn("SLURM auto-requeue: SLURM_JOB_ID is not set, so there is no job to requeue.")
            return False
        try:
            result = subprocess.call(["scontrol", "requeue", job])
        except OSError as err:
            rank_zero_warn(f"SLURM auto-requeue: could not run `scontrol requeue {job}`: {err}")
            return False
        if result != 0:
            rank_zero_warn(f"SLURM auto-requeue: `scontrol requeue {job}` failed with exit code {result}.")
            return False
        rank_zero_info(f"Requeued SLURM job: {job}")
        return True

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


class KubeflowEnvironment(ClusterEnvironment):
    """A Kubeflow PyTorchJob: one process per pod, ranks from MASTER_ADDR/MASTER_PORT/WORLD_SIZE/RANK."""

    @staticmethod
    def detect() -> bool:  # noqa: D102
        required = ("KUBERNETES_PORT", "MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK")
        return all(name in os.environ for name in required)

    @property
    def main_address(self) -> str:  # noqa: D102
        return os.environ["MASTER_ADDR"]

    def world_size(self) -> int:  # noqa: D102
        return _int_env("WORLD_SIZE", 1) or 1

    def global_rank(self) -> int:  # noqa: D102
        return _int_env("RANK", 0) or 0

    def local_rank(self) -> int:  # noqa: D102
        return 0  # one process per pod

    def node_rank(self) -> int:  # noqa: D102
        return self.global_rank()


class LSFEnvironment(ClusterEnvironment):
    """IBM Spectrum LSF with `jsrun`: ranks from JSM_NAMESPACE_*, hosts from the LSB_DJOB_RANKFILE file.

    The rank-0 address is the first compute host of the rank file (its first line is the launch node);
    the port is MASTER_PORT when set, else derived from LSB_JOBID.
    """

    @staticmethod
    def detect() -> bool:  # noqa: D102
        required = ("LSB_JOBID", "LSB_DJOB_RANKFILE", "JSM_NAMESPACE_LOCAL_RANK", "JSM_NAMESPACE_SIZE")
        return all(name in os.environ for name in required)

    def _hosts(self) -> list[str]:
        path = os.environ.get("LSB_DJOB_RANKFILE")
        if not path:
            raise MisconfigurationException(
                "LSFEnvironment needs LSB_DJOB_RANKFILE (set by LSF for the job)."
            )
        with open(path) as f:
            lines = [line.strip() for line in f if line.strip()]
        if len(lines) < 2:
            raise MisconfigurationException(f"The LSF rank file {path} lists no compute hosts.")
        return lines[1:]

    @property
    def main_address(self) -> str:  # noqa: D102
        return self._hosts()[0]

    @property
    def main_port(self) -> int:  # noqa: D102
        port = _int_env("MASTER_PORT")
        if port is not None:
            return port
        return 10000 + (_int_env("LSB_JOBID", 0) or 0) % 1000

    def world_size(self) -> int:  # noqa: D102
        return _int_env("JSM_NAMESPACE_SIZE", 1) or 1

    def global_rank(self) -> int:  # noqa: D102
        return _int_env("JSM_NAMESPACE_RANK", 0) or 0

    def local_rank(self) -> int:  # noqa: D102
        return _int_env("JSM_NAMESPACE_LOCAL_RANK", 0) or 0

    def node_rank(self) -> int:  # noqa: D102
        order: dict[str, int] = {}
        for host in self._hosts():
            order.setdefault(host, len(order))
        return order.get(socket.gethostname(), 0)


class MPIEnvironment(ClusterEnvironment):
    """Processes started by `mpirun`: ranks from MPI (needs the `mpi4py` package)."""

    def __init__(self, num_devices: int = 1, num_nodes: int = 1) -> None:
        super().__init__(num_devices, num_nodes)
        try:
            from mpi4py import MPI
        except ImportError:
            raise ModuleNotFoundError(
                "MPIEnvironment reads the ranks from MPI through `mpi4py`: `pip install mpi4py`."
            ) from None
        self._comm = MPI.COMM_WORLD
        self._address: str | None = None
        self._port: int | None = None

    @staticmethod
    def detect() -> bool:  # noqa: D102
        try:
            from mpi4py import MPI
        except ImportError:
            return False
        return bool(MPI.COMM_WORLD.Get_size() > 1)

    def _rendezvous(self) -> None:
        if self._address is None:  # rank 0 picks the address and a free port; every rank learns them
            mine = (socket.gethostname(), find_free_port()) if self._comm.Get_rank() == 0 else None
            self._address, self._port = self._comm.bcast(mine, root=0)

    @property
    def main_address(self) -> str:  # noqa: D102
        self._rendezvous()
        assert self._address is not None
        return self._address

    @property
    def main_port(self) -> int:  # noqa: D102
        self._rendezvous()
        assert self._port is not None
        return self._port

    def world_size(self) -> int:  # noqa: D102
        return int(self._comm.Get_size())

    def global_rank(self) -> int:  # noqa: D102
        return int(self._comm.Get_rank())

    def local_rank(self) -> int:  # noqa: D102
        return int(
            self._comm.Split_type(3).Get_rank()
        )  # 3 = MPI.COMM_TYPE_SHARED: the processes of this host

    def node_rank(self) -> int:  # noqa: D102
        hosts = self._comm.allgather(socket.gethostname())
        order: dict[str, int] = {}
        for host in hosts:
            order.setdefault(host, len(order))
        return order[socket.gethostname()]


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
            return cls(num_devices=num_devices, num_nodes=num_nodes)
    return LightningEnvironment(num_devices, num_nodes)


# ---------------------------------------------------------------------------- SLURM auto-requeue
def _default_requeue_signal() -> signal.Signals:
    return getattr(signal, "SIGUSR1", signal.SIGTERM)  # Windows has no SIGUSR1


HPC_CHECKPOINT_PATTERN = "hpc_ckpt_*.ckpt"


def hpc_checkpoint_path(folder: str) -> str | None:
    """The newest `hpc_ckpt_<n>.ckpt` in `folder` (written by a SLURM auto-requeue), or None."""
    best: tuple[int, str] | None = None
    for path in glob.glob(os.path.join(folder, HPC_CHECKPOINT_PATTERN)):
        number = re.fullmatch(r"hpc_ckpt_(\d+)\.ckpt", os.path.basename(path))
        if number is not None and (best is None or int(number.group(1)) > best[0]):
            best = (int(number.group(1)), path)
    return best[1] if best else None


def _next_hpc_checkpoint_path(folder: str) -> str:
    newest = hpc_checkpoint_path(folder)
    number = 0 if newest is None else int(re.findall(r"\d+", os.path.basename(newest))[-1])
    return os.path.join(folder, f"hpc_ckpt_{number + 1}.ckpt")


def requeue_environment(trainer: Trainer) -> SLURMEnvironment | None:
    """The SLURM environment whose auto-requeue this fit honours: passed in plugins=, or detected."""
    env = trainer.strategy.cluster_environment
    if env is None and SLURMEnvironment.detect():
        env = SLURMEnvironment()
    if isinstance(env, SLURMEnvironment) and env.auto_requeue:
        return env
    return None


REQUEUE_SYNC_EVERY = 8  # with several processes, ranks agree on a received requeue signal this often


class SlurmRequeue:
    """SLURM auto-requeue for one fit: catch the signal, stop at a batch boundary, checkpoint, requeue.

    The signal handler only records the signal. The fit loop `poll`s after each training batch: one
    process stops at once; several processes agree every `REQUEUE_SYNC_EVERY` batches (a signal reaches
    them at slightly different batches, and stopping alone would leave the others waiting in a
    collective). When the loop has ended, `__exit__` writes `hpc_ckpt_<n>.ckpt` and runs
    `scontrol requeue` on rank 0.
    """

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.env: SLURMEnvironment | None = None
        self.active = False
        self.received = False
        self.stopped = False
        self._previous: Any = None
        self._synced = False

    def __enter__(self) -> SlurmRequeue:
        self.env = requeue_environment(self.trainer)
        self.received = self.stopped = False
        if self.env is None:
            return self
        try:
            self._previous = signal.signal(self.env.requeue_signal, self._handler)
        except (ValueError, OSError):  # not the main thread, or the signal cannot be caught here
            return self
        self.active = True
        self._synced = self.trainer.world_size > 1  # read once: `poll` runs at every train batch
        return self

    def _handler(self, signum: int, frame: Any) -> None:
        self.received = True

    def poll(self, batch_idx: int) -> None:
        """At a train batch's end: stop the fit when the requeue signal arrived (on any process)."""
        trainer = self.trainer
        if self._synced:
            if batch_idx % REQUEUE_SYNC_EVERY != 0:
                return
            if not trainer.strategy.reduce_boolean_decision(self.received, all=False):
                return
        elif not self.received:
            return
        self.received = False
        self.stopped = True
        trainer.should_stop = True

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        if not self.active:
            return
        assert self.env is not None
        signal.signal(self.env.requeue_signal, self._previous)
        self.active = False
        if exc_type is not None or not self.stopped:
            return
        rank_zero_info(
            f"SLURM auto-requeue signal {self.env.requeue_signal}: checkpointing and requeueing the job."
        )
        self.trainer.save_checkpoint(_next_hpc_checkpoint_path(self.trainer.default_root_dir))
        if self.trainer.is_global_zero:
            self.env.requeue()
