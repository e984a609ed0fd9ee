"""Strategy: where the module runs and how processes cooperate, behind one small interface.

The loops never ask "is this DDP?": they call `strategy.training_step`, `strategy.backward`,
`strategy.optimizer_step`, `strategy.reduce`, `strategy.barrier`, and each strategy answers for its
own setting (one device; many processes with DistributedDataParallel; sharded with FSDP).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.optim import Optimizer

from fulmen.checkpoint.files import atomic_save
from fulmen.checkpoint_io import TorchCheckpointIO, writes_like_fulmen
from fulmen.layer_sync import LayerSync
from fulmen.optim import LightningOptimizer, LRSchedulerConfig, parse_optimizers
from fulmen.precision import Precision
from fulmen.utilities import MisconfigurationException

if TYPE_CHECKING:
    from fulmen.accelerators import Accelerator
    from fulmen.checkpoint_io import CheckpointIO
    from fulmen.environments import ClusterEnvironment
    from fulmen.module import LightningModule
    from fulmen.trainer import Trainer


class Strategy:
    """Single-process behaviour; distributed strategies override what differs."""

    launcher: Any = None  # an object with `launch(fn, *args)` when processes must be started
    # where ranks come from: detected by a distributed strategy, or `Trainer(plugins=[...])`'s (e.g. SLURM
    # auto-requeue on one device)
    cluster_environment: ClusterEnvironment | None = None
    layer_sync: LayerSync | None = None  # `plugins=[TorchSyncBatchNorm()]`, set by the Trainer

    def __init__(
        self,
        accelerator: Accelerator | None = None,
        device: torch.device | None = None,
        precision: Precision | None = None,
    ) -> None:
        self.accelerator = accelerator
        self._root_device = device or torch.device("cpu")
        self.precision_plugin = precision or Precision()
        self._module: LightningModule | None = None
        self.model: nn.Module | None = None  # the module as wrapped for training (e.g. by DDP)
        self.optimizers: list[Optimizer] = []
        self.lightning_optimizers: list[LightningOptimizer] = []
        self.lr_scheduler_configs: list[LRSchedulerConfig] = []
        self._trainer: Trainer | None = None
        self._checkpoint_io: CheckpointIO | None = None
        self._trusted_checkpoint = False  # the checkpoint being restored was loaded with weights_only=False

    # ------------------------------------------------------------------ identity
    @property
    def root_device(self) -> torch.device:
        """The device this process computes on."""
        return self._root_device

    @property
    def world_size(self) -> int:
        """Number of processes taking part."""
        return 1

    @property
    def global_rank(self) -> int:
        """This process's rank among all processes."""
        return 0

    @property
    def local_rank(self) -> int:
        """This process's rank on its machine."""
        return 0

    @property
    def node_rank(self) -> int:
        """This machine's rank."""
        return 0

    @property
    def is_global_zero(self) -> bool:
        """True on the process that writes logs and checkpoints."""
        return self.global_rank == 0

    @property
    def lightning_module(self) -> LightningModule | None:
        """The user's module, unwrapped."""
        return self._module

    # ------------------------------------------------------------------ lifecycle
    def connect(self, module: LightningModule) -> None:
        """Attach the user's module."""
        self._module = module
        self.model = module

    def setup_environment(self) -> None:
        """Prepare processes and devices (e.g. init the process group) before the module is set up."""
        if self.accelerator is not None:
            self.accelerator.setup_device(self.root_device)

    def setup(self, trainer: Trainer) -> None:
        """Move the module to the device, cast it for the precision, and wrap it if needed."""
        self._trainer = trainer
        assert self._module is not None
        module = self.precision_plugin.convert_module(self._module)
        module.to(self.root_device)
        self.model = self._wrap(module)

    def _wrap(self, module: nn.Module) -> nn.Module:
        return module

    def setup_optimizers(self, trainer: Trainer) -> None:
        """Call `configure_optimizers` and wrap the optimizers for `step()` hooks."""
        module = self._module
        assert module is not None
        module._current_fx_name = "configure_optimizers"
        try:
            out = module.configure_optimizers()
        finally:
            module._current_fx_name = None
        self.optimizers, self.lr_scheduler_configs = parse_optimizers(out, type(module).__name__)
        self.lightning_optimizers = [LightningOptimizer(o, trainer) for o in self.optimizers]

    def teardown(self) -> None:
        """Release resources after a run (and let the checkpoint I/O plugin finish)."""
        if self._checkpoint_io is not None:
            self._checkpoint_io.teardown()

    # ------------------------------------------------------------------ the step methods
    def training_step(self, *args: Any, **kwargs: Any) -> Any:
        """Run the module's training_step (through the wrapper, for strategies that wrap)."""
        assert self._module is not None
        with self.precision_plugin.forward_context():
            return self._module.training_step(*args, **kwargs)

    def validation_step(self, *args: Any, **kwargs: Any) -> Any:
        """Run the module's validation_step."""
        assert self._module is not None
        with self.precision_plugin.forward_context():
            return self._module.validation_step(*args, **kwargs)

    def test_step(self, *args: Any, **kwargs: Any) -> Any:
        """Run the module's test_step."""
        assert self._module is not None
        with self.precision_plugin.forward_context():
            return self._module.test_step(*args, **kwargs)

    def predict_step(self, *args: Any, **kwargs: Any) -> Any:
        """Run the module's predict_step."""
        assert self._module is not None
        with self.precision_plugin.forward_context():
            return self._module.predict_step(*args, **kwargs)

    def backward(self, loss: torch.Tensor, optimizer: Any, *args: Any, **kwargs: Any) -> None:
        """Compute gradients through the precision (which scales the loss if needed)."""
        assert self._module is not None
        self.precision_plugin.backward(loss, self._module, *args, **kwargs)

    def optimizer_step(
        self,
        optimizer: Optimizer,
        closure: Callable[[], Any] | None,
        before_step: Callable[[Optimizer], None] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Step `optimizer`: the closure first, then `before_step(optimizer)`, then the step.

        `before_step` is what runs between backward and the step (the trainer passes the
        `on_before_optimizer_step` hooks and gradient clipping, see plan.py).
        """
        module = self._module
        assert module is not None
        after_closure = _no_op if before_step is None else functools.partial(before_step, optimizer)
        return self.precision_plugin.optimizer_step(
            optimizer, module, closure or _no_op, after_closure, **kwargs
        )

    def batch_to_device(self, batch: Any, dataloader_idx: int = 0) -> Any:
        """Move a batch to this process's device through the module's transfer hook."""
        assert self._module is not None
        return self._module.transfer_batch_to_device(batch, self.root_device, dataloader_idx)

    def process_dataloader(self, dataloader: Any, shuffle: bool, training: bool = False) -> Any:
        """Adapt a user dataloader (distributed strategies give each process its share; `training`: the train loader)."""
        return dataloader

    # ------------------------------------------------------------------ collectives (identity here)
    def reduce(self, tensor: Any, reduce_op: str | None = "mean", group: Any = None) -> Any:
        """Reduce `tensor` across processes ("mean", "sum", "max", "min")."""
        return tensor

    def all_gather(self, data: Any, group: Any = None, sync_grads: bool = False) -> Any:
        """Gather `data` from every process (stacked on a new first dimension when world_size > 1)."""
        return data

    def barrier(self, name: str | None = None) -> None:
        """Wait until every process reaches this point."""

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        """Send `obj` from process `src` to every process."""
        return obj

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        """Agree on a boolean across processes (all must agree, or any)."""
        return decision

    # ------------------------------------------------------------------ checkpoints
    def lightning_module_state_dict(self) -> dict[str, Any]:
        """The module's weights as they go into a checkpoint."""
        assert self._module is not None
        return self._module.state_dict()

    def load_model_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> None:
        """Load checkpointed weights into the module."""
        assert self._module is not None
        if SHARDED_MARKER in state_dict:
            raise MisconfigurationException(
                "This checkpoint keeps its weights in per-process shards (saved with FSDPStrategy(state_dict_type="
                "'sharded')); resume it with that strategy, or save with state_dict_type='full' to load it elsewhere."
            )
        self._module.load_state_dict(state_dict, strict=strict)

    @property
    def checkpoint_io(self) -> CheckpointIO:
        """The plugin that writes, reads and deletes checkpoint files (default `TorchCheckpointIO`)."""
        if self._checkpoint_io is None:
            self._checkpoint_io = TorchCheckpointIO()
        return self._checkpoint_io

    @checkpoint_io.setter
    def checkpoint_io(self, io: CheckpointIO) -> None:
        self._checkpoint_io = io

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str, wait: bool = True) -> None:
        """Write the checkpoint dict to `path`: one file, written by rank 0 (`wait=False`: finished in the background)."""
        if not self.is_global_zero:
            return

        if self._checkpoint_io is None or writes_like_fulmen(self._checkpoint_io):
            atomic_save(checkpoint, path, wait=wait)
        else:  # the user's plugin decides how (and whether in the background) the file is written
            self._checkpoint_io.save_checkpoint(checkpoint, path)

    def load_checkpoint(self, path: str, weights_only: bool | None = None) -> dict[str, Any]:
        """Read a checkpoint through the I/O plugin (weights-only, i.e. safe, unless `weights_only=False`)."""
        self._trusted_checkpoint = weights_only is False  # also decides how FSDP reads the shard index
        return self.checkpoint_io.load_checkpoint(path, weights_only=weights_only)

    def remove_checkpoint(self, path: str) -> None:
        """Delete a checkpoint file through the I/O plugin, on rank 0."""
        if self.is_global_zero:
            self.checkpoint_io.remove_checkpoint(path)

    def optimizer_state(self, optimizer: Optimizer) -> dict[str, Any]:
        """The optimizer's state as it goes into a checkpoint (FSDP gathers its shards)."""
        return optimizer.state_dict()

    def load_optimizer_state_dict(self, optimizer: Optimizer, state: dict[str, Any]) -> None:
        """Load a checkpointed optimizer state (the mirror of `optimizer_state`)."""
        optimizer.load_state_dict(state)


SHARDED_MARKER = "__fulmen_sharded__"  # stands in for weights/optimizer state kept in a shard folder


def _no_op() -> None:
    return None


class SingleDeviceStrategy(Strategy):
    """One process, one device: the default."""

    def __init__(
        self,
        device: str | torch.device = "cpu",
        accelerator: Accelerator | None = None,
        precision: Precision | None = None,
    ) -> None:
        # Lightning's argument order (`SingleDeviceStrategy("cuda:0")`), and a device given as a string
        super().__init__(accelerator, torch.device(device), precision)


class ParallelStrategy(Strategy):
    """The base of strategies with one process per device (DDP, FSDP): devices, cluster environment, ranks.

    `isinstance(trainer.strategy, ParallelStrategy)` tells whether a run is distributed. Subclasses
    implement the collectives (`reduce`, `all_gather`, `barrier`, `broadcast`) and the process setup.
    """

    def __init__(
        self,
        accelerator: Accelerator | None = None,
        parallel_devices: list[torch.device] | None = None,
        cluster_environment: ClusterEnvironment | None = None,
        checkpoint_io: Any = None,
        precision: Precision | None = None,
    ) -> None:
        super().__init__(accelerator, None, precision)
        self.parallel_devices = parallel_devices
        self.cluster_environment = cluster_environment
        if checkpoint_io is not None:
            self.checkpoint_io = checkpoint_io

    @property
    def num_processes(self) -> int:
        """Processes on each machine (one per device)."""
        return len(self.parallel_devices or [None])

    @property
    def distributed_sampler_kwargs(self) -> dict[str, int]:
        """How this process's DistributedSampler is built."""
        return {"num_replicas": self.world_size, "rank": self.global_rank}

    @contextlib.contextmanager
    def block_backward_sync(self) -> Generator[None, None, None]:
        """Skip the gradient all-reduce of backward passes inside this block (gradient accumulation)."""
        no_sync = getattr(self.model, "no_sync", None)
        if no_sync is None:
            yield
            return
        with no_sync():
            yield


def check_passed_on(owner: str, kwargs: dict[str, Any], target: Callable[..., Any]) -> None:
    """Refuse, at construction, keyword arguments that `target` (which receives `owner`'s `**kwargs`) lacks."""
    accepted = set(inspect.signature(target).parameters) - {"self", "module"}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        name = getattr(target, "__qualname__", repr(target)).removesuffix(".__init__")
        raise MisconfigurationException(
            f"{owner}({unknown[0]}=...) is not an argument of {owner}, nor of {name}, which receives its other "
            f"keyword arguments ({', '.join(sorted(accepted))}). Check the spelling, or remove it."
        )
