"""DDP: one process per device, each with a full copy of the model, gradients averaged by PyTorch's DDP.

What this strategy adds to the single-device one:

- `setup_environment` joins the process group (gloo on CPU, NCCL on CUDA) through `env://`, with the
  ranks of the cluster environment (environments.py) and a collective timeout;
- `_wrap` puts the module in `torch.nn.parallel.DistributedDataParallel`; `training_step` goes through
  the wrapper (its forward is pointed at `training_step` for that one call) so DDP's reducer sees the
  forward and averages the gradients during backward;
- `process_dataloader` gives each rank its own part of the data (a DistributedSampler for training;
  an unpadded shard for evaluation so no sample is counted twice);
- the collectives (`reduce`, `all_gather`, `barrier`, `broadcast`, `reduce_boolean_decision`).

How the processes come to exist is the launcher's business (launchers.py).
"""

from __future__ import annotations

import atexit
import datetime
import gc
import math
import os
import sys
import threading
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, RandomSampler, Sampler, SequentialSampler
from torch.utils.data.distributed import DistributedSampler

from fulmen import data
from fulmen.checkpoint_io import CheckpointIO
from fulmen.environments import ClusterEnvironment, detect_environment
from fulmen.layer_sync import TorchSyncBatchNorm
from fulmen.precision import Precision
from fulmen.strategies.launchers import make_launcher
from fulmen.strategies.strategy import ParallelStrategy, check_passed_on
from fulmen.utilities import MisconfigurationException, apply_to_collection, rank_zero_warn

if TYPE_CHECKING:
    from fulmen.accelerators import Accelerator

DEFAULT_TIMEOUT = datetime.timedelta(minutes=30)
_START_METHODS = ("popen", "spawn", "fork", "forkserver")
_REDUCE_OPS = {
    "sum": dist.ReduceOp.SUM,
    "mean": dist.ReduceOp.SUM,  # summed, then divided by the world size
    "avg": dist.ReduceOp.SUM,
    "max": dist.ReduceOp.MAX,
    "min": dist.ReduceOp.MIN,
}


class DDPStrategy(ParallelStrategy):
    """DistributedDataParallel over `devices` x `num_nodes` processes.

    Args:
        accelerator: the device kind (filled in by the Trainer when omitted).
        parallel_devices: one torch device per local process (filled in by the Trainer).
        cluster_environment: where ranks come from; detected (torchrun, SLURM, plain) when omitted.
        checkpoint_io: how checkpoint files are written and read (`TorchCheckpointIO` when omitted).
        precision: the precision plugin (filled in by the Trainer); `precision_plugin=` is the same.
        process_group_backend: "gloo", "nccl", ...; gloo on CPU and NCCL on CUDA when omitted.
        timeout: how long a collective waits for the other processes before failing.
        start_method: "popen" re-runs the script once per extra local process; "spawn", "fork" and
            "forkserver" start them with torch.multiprocessing from inside `fit`.
        num_nodes: number of machines (filled in by the Trainer).
        **kwargs: passed to `DistributedDataParallel` (e.g. `find_unused_parameters=True`, `static_graph`).
    """

    strategy_name = "ddp"

    def __init__(
        self,
        accelerator: Accelerator | None = None,
        parallel_devices: list[torch.device] | None = None,
        cluster_environment: ClusterEnvironment | None = None,
        checkpoint_io: CheckpointIO | None = None,
        precision: Precision | None = None,
        process_group_backend: str | None = None,
        timeout: datetime.timedelta | None = DEFAULT_TIMEOUT,
        start_method: str = "popen",
        num_nodes: int = 1,
        precision_plugin: Precision | None = None,
        **kwargs: Any,
    ) -> None:
        check_passed_on(type(self).__name__, kwargs, nn.parallel.DistributedDataParallel.__init__)
        precision = precision or precision_plugin  # `precision_plugin=` is Lightning's name
        super().__init__(accelerator, parallel_devices, cluster_environment, checkpoint_io, precision)
        if start_method not in _START_METHODS:
            raise MisconfigurationException(
                f"DDPStrategy(start_method={start_method!r}) is not valid; use one of {list(_START_METHODS)}."
            )
        self.num_nodes = num_nodes
        self.process_group_backend = process_group_backend
        self.timeout = timeout or DEFAULT_TIMEOUT
        self.start_method = start_method
        self._ddp_kwargs = kwargs
        self._global_rank = 0
        self._local_rank = 0
        self._node_rank = 0
        self._world_size = 1
        self._store: Any = None  # the rendezvous store, kept to report failures across processes
        if parallel_devices is not None:
            self._configure()

    # ------------------------------------------------------------------ identity
    @property
    def world_size(self) -> int:  # noqa: D102
        return self._world_size

    @property
    def global_rank(self) -> int:  # noqa: D102
        return self._global_rank

    @property
    def local_rank(self) -> int:  # noqa: D102
        return self._local_rank

    @property
    def node_rank(self) -> int:  # noqa: D102
        return self._node_rank

    def connect_flags(self, accelerator: Accelerator, devices: list[torch.device], num_nodes: int) -> None:
        """Fill in what the Trainer's flags decide (called by `select_strategy`)."""
        self.accelerator = self.accelerator or accelerator
        if self.parallel_devices is None:
            self.parallel_devices = devices
        self.num_nodes = num_nodes
        self._configure()

    def _configure(self) -> None:
        n = self.num_processes
        env = self.cluster_environment
        if env is None:
            env = detect_environment(n, self.num_nodes)
        else:
            env.num_devices, env.num_nodes = n, self.num_nodes
        env.validate()
        self.cluster_environment = env
        self._resolve_ranks()

        self.launcher = make_launcher(self)

    def _resolve_ranks(self) -> None:
        """Read this process's ranks from the environment (again in processes started by a launcher)."""
        env = self.cluster_environment
        assert env is not None and self.parallel_devices is not None
        self._world_size = env.world_size()
        self._global_rank = env.global_rank()
        self._local_rank = env.local_rank()
        self._node_rank = env.node_rank()
        if self._local_rank >= len(self.parallel_devices):
            raise MisconfigurationException(
                f"This process has LOCAL_RANK={self._local_rank} but the Trainer uses {len(self.parallel_devices)} "
                "device(s) per machine; make `devices` match the processes started per machine."
            )
        self._root_device = self.parallel_devices[self._local_rank]

    # ------------------------------------------------------------------ lifecycle
    def setup_environment(self) -> None:
        """Select this process's device and join the process group (once per process)."""
        self._resolve_ranks()
        super().setup_environment()
        self._init_process_group()

    def _init_process_group(self) -> None:
        if dist.is_initialized():
            if dist.get_world_size() != self.world_size:
                raise MisconfigurationException(
                    f"A process group of {dist.get_world_size()} processes already exists, but this Trainer needs "
                    f"{self.world_size}; use the same devices x num_nodes in every Trainer of the script."
                )
        else:
            env = self.cluster_environment
            assert env is not None
            env.export()
            backend = self.process_group_backend or ("nccl" if self.root_device.type == "cuda" else "gloo")
            # imported before the group exists: its functions take `group.WORLD` as a default argument when
            # defined, which would keep the group, with its worker threads, alive until interpreter shutdown
            import torch.distributed.nn.functional  # noqa: F401

            dist.init_process_group(
                backend,
                init_method="env://",
                rank=self.global_rank,
                world_size=self.world_size,
                timeout=self.timeout,
            )
            _ReleaseGroupsAtExit.install()
        self._store = _default_store()

    def _wrap(self, module: nn.Module) -> nn.Module:
        trainer = self._trainer
        if trainer is not None and trainer.sync_batchnorm:
            module = _convert_sync_batchnorm(module, self.root_device, self.layer_sync)
        device_ids = [self.root_device.index] if self.root_device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=device_ids, **self._ddp_kwargs)

    def teardown(self) -> None:
        """Unwrap the module; the process group stays up for the next `fit`/`test` of the script."""
        self.model = self._module
        super().teardown()

    # ------------------------------------------------------------------ the step
    def training_step(self, *args: Any, **kwargs: Any) -> Any:
        """Run training_step through the DDP wrapper so its reducer prepares the gradient all-reduce."""
        module = self._module
        wrapper = self.model
        assert module is not None and wrapper is not None
        with self.precision_plugin.forward_context():
            if wrapper is module:
                return module.training_step(*args, **kwargs)
            if self._accumulating(args):
                # a batch that only accumulates: skip the all-reduce, the stepping batch averages the sum
                with wrapper.no_sync():  # type: ignore[operator]
                    return _call_through_wrapper(wrapper, module, module.training_step, args, kwargs)
            return _call_through_wrapper(wrapper, module, module.training_step, args, kwargs)

    def _accumulating(self, args: tuple[Any, ...]) -> bool:
        """True for a training batch of automatic optimization that is not the last of its accumulation window."""
        trainer = self._trainer
        if trainer is None or trainer.accumulate_grad_batches == 1 or len(args) < 2:
            return False
        if not isinstance(args[1], int) or not self._module.automatic_optimization:  # type: ignore[union-attr]
            return False
        return not trainer.fit_loop.ends_accumulation_window(args[1])

    # ------------------------------------------------------------------ data
    def process_dataloader(self, dataloader: Any, shuffle: bool, training: bool = False) -> Any:
        """Give this rank its part of the data (unless `use_distributed_sampler=False`)."""
        trainer = self._trainer
        if trainer is not None and not trainer.use_distributed_sampler:
            return dataloader
        if not isinstance(dataloader, DataLoader) or isinstance(dataloader.dataset, IterableDataset):
            return dataloader
        if self.world_size == 1:
            return dataloader
        sampler = dataloader.sampler
        if isinstance(sampler, (DistributedSampler, _EvenShard, _UnevenShard)):
            return dataloader
        if (
            dataloader.batch_sampler is not None
            and type(dataloader.batch_sampler) is not torch.utils.data.BatchSampler
        ):
            rank_zero_warn(
                f"The dataloader uses a custom batch sampler ({type(dataloader.batch_sampler).__name__}), which "
                "fulmen cannot split across processes: every process will read all of it. Shard it yourself "
                "(by `trainer.global_rank`) and pass use_distributed_sampler=False."
            )
            return dataloader
        rank, replicas = self.global_rank, self.world_size
        new_sampler: Sampler[Any]
        if training:
            if isinstance(sampler, (RandomSampler, SequentialSampler)):
                new_sampler = DistributedSampler(
                    dataloader.dataset,  # type: ignore[arg-type]
                    num_replicas=replicas,
                    rank=rank,
                    shuffle=shuffle,
                    seed=int(os.environ.get("PL_GLOBAL_SEED", 0)),
                    drop_last=dataloader.drop_last,
                )
            else:
                new_sampler = _EvenShard(sampler, replicas, rank)
        elif len(sampler) < replicas:  # type: ignore[arg-type]
            # unpadded, some rank would get no batch at all and wait forever in the epoch-end reduction
            rank_zero_warn(
                f"An evaluation dataloader has {len(sampler)} samples for {replicas} processes; samples are "  # type: ignore[arg-type]
                "repeated so every process gets one, and sync_dist metrics count the repeats."
            )
            new_sampler = _EvenShard(sampler, replicas, rank)
        else:
            new_sampler = _UnevenShard(sampler, replicas, rank)
        return data.rebuild_dataloader(dataloader, new_sampler)

    # ------------------------------------------------------------------ collectives
    def reduce(self, tensor: Any, reduce_op: str | None = "mean", group: Any = None) -> Any:
        """Reduce `tensor` across processes: "mean" (default), "sum", "max", "min" or a `dist.ReduceOp`."""
        if not isinstance(tensor, torch.Tensor) or not dist.is_initialized():
            return tensor
        op_name = (reduce_op or "mean").lower() if isinstance(reduce_op, str) or reduce_op is None else None
        if op_name is None:
            op: Any = reduce_op  # a torch.distributed.ReduceOp
        elif op_name in _REDUCE_OPS:
            op = _REDUCE_OPS[op_name]
        else:
            raise ValueError(f"reduce_op={reduce_op!r} is not supported; use 'mean', 'sum', 'max' or 'min'.")
        mean = op_name in ("mean", "avg")
        out = self._collective_ready(tensor.detach(), group).clone()
        if mean and not out.is_floating_point():
            out = out.float()
        dist.all_reduce(out, op=op, group=group)
        if mean:
            out = out / dist.get_world_size(group)
        return out

    def all_gather(self, data: Any, group: Any = None, sync_grads: bool = False) -> Any:
        """Gather tensors from every process, stacked on a new first dimension (any nesting of tensors)."""
        if not dist.is_initialized():
            return data

        def gather(t: torch.Tensor) -> torch.Tensor:
            return _all_gather_tensor(self._collective_ready(t, group), group, sync_grads)

        return apply_to_collection(data, gather)

    def _collective_ready(self, tensor: torch.Tensor, group: Any) -> torch.Tensor:
        """`tensor` where the process group's backend can reach it: NCCL only moves CUDA tensors."""
        if tensor.device.type != "cuda" and dist.get_backend(group) == "nccl":
            return tensor.to(self.root_device)
        return tensor

    def barrier(self, name: str | None = None) -> None:
        """Wait until every process reaches this point."""
        if not dist.is_initialized() or dist.get_world_size() == 1:
            return
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[self.root_device.index])
        else:
            dist.barrier()

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        """Send any picklable `obj` from rank `src` to every process."""
        if not dist.is_initialized() or dist.get_world_size() == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(
            box, src=src, device=self.root_device if self.root_device.type == "cuda" else None
        )
        return box[0]

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        """True when every process (all=True) or at least one process (all=False) decided True."""
        if not dist.is_initialized() or dist.get_world_size() == 1:
            return decision
        votes = torch.tensor(int(bool(decision)), device=self.root_device)
        dist.all_reduce(votes, op=dist.ReduceOp.SUM)
        count = int(votes.item())
        return count == dist.get_world_size() if all else count > 0


def _convert_sync_batchnorm(module: nn.Module, device: torch.device, layer_sync: Any = None) -> nn.Module:
    """BatchNorm layers that average their statistics over every process (torch supports this on GPUs).

    `layer_sync` is the LayerSync plugin from `Trainer(plugins=...)`; a custom one converts as it likes.
    """

    if layer_sync is not None and type(layer_sync) is not TorchSyncBatchNorm:
        return layer_sync.apply(module)
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())
    if has_bn and device.type == "cpu":
        raise MisconfigurationException(
            "Trainer(sync_batchnorm=True) needs GPUs: torch's SyncBatchNorm does not run on the CPU. Remove "
            "sync_batchnorm=True, or train with accelerator='gpu'."
        )
    return nn.SyncBatchNorm.convert_sync_batchnorm(module)


def _call_through_wrapper(
    wrapper: nn.Module, module: nn.Module, method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Call `wrapper(*args)` with `module.forward` pointing at `method` for this one call.

    The redirect undoes itself as soon as it is entered, so `self(x)` inside the step reaches the real forward.
    """
    had_own = "forward" in module.__dict__
    own = module.__dict__.get("forward")

    def restore() -> None:
        if had_own:
            module.__dict__["forward"] = own
        else:
            module.__dict__.pop("forward", None)

    def redirected(*a: Any, **kw: Any) -> Any:
        restore()
        return method(*a, **kw)

    module.__dict__["forward"] = redirected
    try:
        return wrapper(*args, **kwargs)
    finally:
        restore()


def _all_gather_tensor(tensor: torch.Tensor, group: Any, sync_grads: bool) -> torch.Tensor:
    world = dist.get_world_size(group)
    tensor = tensor.contiguous()
    if sync_grads:
        from torch.distributed.nn.functional import all_gather as differentiable_all_gather

        return torch.stack(differentiable_all_gather(tensor, group=group))
    # shapes may differ between processes (e.g. a last, smaller batch): pad to the largest, then trim
    shape = torch.tensor(tensor.shape, dtype=torch.long, device=tensor.device)
    shapes = [torch.zeros_like(shape) for _ in range(world)]
    dist.all_gather(shapes, shape, group=group)
    if all(bool((s == shape).all()) for s in shapes):
        out = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(out, tensor, group=group)
        return torch.stack(out)
    largest = torch.stack(shapes).max(dim=0).values.tolist()
    padded = tensor.new_zeros(largest)
    padded[tuple(slice(0, d) for d in tensor.shape)] = tensor
    out = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(out, padded, group=group)
    return [o[tuple(slice(0, int(d)) for d in s.tolist())] for o, s in zip(out, shapes)]  # type: ignore[return-value]


class _EvenShard(Sampler[Any]):
    """Rank `rank`'s share of a user sampler's indices, padded so every rank gets as many (for training)."""

    def __init__(self, sampler: Any, num_replicas: int, rank: int) -> None:
        self.sampler = sampler
        self.num_replicas = num_replicas
        self.rank = rank

    def set_epoch(self, epoch: int) -> None:
        """Forward the epoch to the wrapped sampler, if it shuffles by epoch."""
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[Any]:
        indices = list(self.sampler)
        total = len(self) * self.num_replicas
        if indices and len(indices) < total:
            indices += (indices * math.ceil(total / len(indices)))[: total - len(indices)]
        return iter(indices[self.rank : total : self.num_replicas])

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.num_replicas)


class _UnevenShard(_EvenShard):
    """Every `num_replicas`-th index starting at `rank`, without padding (for evaluation: no sample twice)."""

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self.sampler)[self.rank :: self.num_replicas])

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.num_replicas + (1 if self.rank < n % self.num_replicas else 0)


class _ReleaseGroupsAtExit:
    """Release a process's process groups at exit, before the interpreter shuts down.

    A gloo process group runs C++ worker threads that free each finished collective themselves; when the
    collective's tensors were made in Python, that needs the GIL. Once the interpreter has begun to shut
    down, a thread that asks for the GIL is ended with `pthread_exit`, which aborts the process from inside
    that C++ destructor ("terminate called without an active exception", SIGABRT) although the script
    succeeded, and a launcher (fulmen's, torchrun, SLURM) reports a failed rank. So an atexit handler,
    registered when the group is created (atexit work registered later runs before it), runs `before_exit`,
    flushes logs and output and destroys the process groups while the interpreter is whole; their C++
    objects go with their last reference, which joins the worker threads. Python then ends as usual, with
    its own status: 0 at the end of the script, `n` after `sys.exit(n)` or `raise SystemExit(n)`.

    After an uncaught exception, or when the groups are not gone within `release_timeout_s` (a collective
    still waiting on a peer, or a user's object that keeps a group alive), the process ends with
    `os._exit` instead: 1 after an uncaught exception, else the code given to `sys.exit` (recorded when it
    is called), else 0.
    """

    installed = False
    code: Any = None
    called_exit = False
    before_exit: list[Any] = []
    release_timeout_s = 10.0

    @classmethod
    def install(cls) -> None:
        if cls.installed:
            return
        cls.installed = True
        original_exit = sys.exit

        def recording_exit(code: Any = None) -> None:
            cls.code, cls.called_exit = code, True
            original_exit(code)

        sys.exit = recording_exit  # type: ignore[assignment]
        atexit.register(cls._exit)

    @classmethod
    def _status(cls) -> int:
        """The status Python would end with, as far as an atexit handler can know it."""
        if cls.called_exit:
            code = cls.code
            if code is None or isinstance(code, bool):
                return int(bool(code))
            if isinstance(code, int):
                return code
            print(code, file=sys.stderr)
            return 1
        return 1 if hasattr(sys, "last_value") else 0

    @classmethod
    def _exit(cls) -> None:
        for fn in list(cls.before_exit):
            try:
                fn()
            except Exception:
                pass
        import logging

        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        # after an uncaught exception a collective may still wait on a peer: end now, the status is known
        if hasattr(sys, "last_value") or not _release_process_groups(cls.release_timeout_s):
            os._exit(cls._status())


def _release_process_groups(timeout_s: float) -> bool:
    """Destroy every process group; True when their C++ objects (and worker threads) are gone in time."""
    try:
        groups = [weakref.ref(pg) for pg in dist.distributed_c10d._world.pg_map]
    except Exception:
        return False
    released = threading.Event()

    def release() -> None:
        try:
            if dist.is_initialized():
                dist.destroy_process_group()
            gc.collect()
        except Exception:
            pass  # a group still referenced below ends the process by the fallback
        finally:
            released.set()

    try:
        # a thread of its own, so that a destructor waiting on a stuck collective cannot hang the exit
        threading.Thread(target=release, name="fulmen-release-groups", daemon=True).start()
    except RuntimeError:  # no new threads this late in some Python versions
        return False
    return released.wait(timeout_s) and all(ref() is None for ref in groups)


def _default_store() -> Any:
    """The store the process group rendezvoused through (a private torch API: None when it moves)."""
    try:
        return dist.distributed_c10d._get_default_store()
    except Exception:
        return None


class DDPSpawnStrategy(DDPStrategy):
    """DDP whose processes are started from inside `fit` by torch.multiprocessing (spawn, or fork)."""

    strategy_name = "ddp_spawn"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("start_method", "spawn")
        super().__init__(*args, **kwargs)
