"""FSDP: like DDP, but each process keeps only its shard of the weights, gradients and optimizer state.

Built on PyTorch's `fully_shard` (FSDP2): the modules chosen by `auto_wrap_policy` are sharded first,
then the LightningModule itself, which is the root. Processes, ranks, samplers and collectives are
DDP's (this class extends `DDPStrategy`); what differs is `_wrap` and how weights and optimizer state
go into and come out of a checkpoint:

- `state_dict_type="full"` (default): the checkpoint holds ordinary full tensors gathered on rank 0, so
  it loads into a single process or another number of processes;
- `state_dict_type="sharded"`: every process writes its own shards of the weights and optimizer state
  (torch.distributed.checkpoint) to a folder `<file>.shards/` beside the checkpoint file, which holds
  everything else; resuming needs FSDP again (any number of processes: DCP reshards on load).

The root's sharding hooks run in the module's `__call__`: compute through `self(x)` (or submodules the
policy sharded) in `training_step`, as in any FSDP training loop.
"""

from __future__ import annotations

import datetime
import os
import shutil
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.optim import Optimizer

from fulmen.checkpoint.files import SHARDS_SUFFIX, shard_reader
from fulmen.strategies.ddp import DEFAULT_TIMEOUT, DDPStrategy, _convert_sync_batchnorm
from fulmen.strategies.strategy import SHARDED_MARKER, check_passed_on
from fulmen.utilities import MisconfigurationException

if TYPE_CHECKING:
    from fulmen.accelerators import Accelerator
    from fulmen.environments import ClusterEnvironment
    from fulmen.precision import Precision

_SHARDING = ("FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD", "HYBRID_SHARD")
_STATE_DICT_TYPES = ("full", "sharded")


class FSDPStrategy(DDPStrategy):
    """Fully sharded data parallel over `devices` x `num_nodes` processes.

    Args:
        auto_wrap_policy: which submodules become their own shard unit: a set of module classes
            (e.g. `{nn.TransformerEncoderLayer}`), a callable `module -> bool`, or None (only the root).
        sharding_strategy: "FULL_SHARD" (weights resharded after forward), "SHARD_GRAD_OP" (kept gathered
            between forward and backward), "HYBRID_SHARD" (sharded within a machine, replicated across
            machines) or "NO_SHARD" (replicated everywhere, like DDP).
        cpu_offload: keep the shards and the optimizer step on the CPU.
        mixed_precision: a `torch.distributed.fsdp.MixedPrecisionPolicy`; by default derived from the
            Trainer's precision ("bf16-mixed" / "16-mixed": compute in that dtype, reduce in fp32).
        state_dict_type: "full" or "sharded" (see the module docstring).
        **kwargs: passed to `fully_shard`.

    The other arguments are DDPStrategy's.
    """

    strategy_name = "fsdp"

    def __init__(
        self,
        accelerator: Accelerator | None = None,
        parallel_devices: list[torch.device] | None = None,
        cluster_environment: ClusterEnvironment | None = None,
        precision: Precision | None = None,
        process_group_backend: str | None = None,
        timeout: datetime.timedelta | None = DEFAULT_TIMEOUT,
        auto_wrap_policy: Iterable[type[nn.Module]] | Callable[[nn.Module], bool] | None = None,
        sharding_strategy: Any = "FULL_SHARD",
        cpu_offload: bool | Any = False,
        mixed_precision: Any = None,
        state_dict_type: str = "full",
        start_method: str = "popen",
        num_nodes: int = 1,
        **kwargs: Any,
    ) -> None:
        sharding = str(getattr(sharding_strategy, "name", sharding_strategy)).upper()
        if sharding not in _SHARDING:
            raise MisconfigurationException(
                f"FSDPStrategy(sharding_strategy={sharding_strategy!r}) is not valid; use one of {list(_SHARDING)}."
            )
        if state_dict_type not in _STATE_DICT_TYPES:
            raise MisconfigurationException(
                f"FSDPStrategy(state_dict_type={state_dict_type!r}) is not valid; use 'full' or 'sharded'."
            )
        self.sharding_strategy = sharding
        self.auto_wrap_policy = auto_wrap_policy
        self._should_wrap = _policy_function(auto_wrap_policy)  # checked now, where the user passed it
        self.cpu_offload = bool(getattr(cpu_offload, "offload_params", cpu_offload))
        self.mixed_precision = mixed_precision
        self.state_dict_type = state_dict_type
        from torch.distributed.fsdp import fully_shard

        check_passed_on(type(self).__name__, kwargs, fully_shard)
        self._fsdp_kwargs = kwargs
        super().__init__(
            accelerator=accelerator,
            parallel_devices=parallel_devices,
            cluster_environment=cluster_environment,
            precision=precision,
            process_group_backend=process_group_backend,
            timeout=timeout,
            start_method=start_method,
            num_nodes=num_nodes,
        )

    # ------------------------------------------------------------------ sharding
    def _wrap(self, module: nn.Module) -> nn.Module:
        from torch.distributed.fsdp import CPUOffloadPolicy, fully_shard

        if self.cpu_offload and self.root_device.type == "cpu":
            raise MisconfigurationException(
                "FSDPStrategy(cpu_offload=True) moves shards from the GPU to the CPU, but this run already trains on "
                "the CPU; remove cpu_offload=True (or train with accelerator='gpu')."
            )
        trainer = self._trainer
        if trainer is not None and trainer.sync_batchnorm:
            module = _convert_sync_batchnorm(module, self.root_device, self.layer_sync)
        options: dict[str, Any] = {
            "mesh": self._device_mesh(),
            "reshard_after_forward": self.sharding_strategy != "SHARD_GRAD_OP",
            **self._fsdp_kwargs,
        }
        if self.cpu_offload:
            options["offload_policy"] = CPUOffloadPolicy()
        policy = self._mixed_precision_policy()
        if policy is not None:
            options["mp_policy"] = policy
        for sub in reversed(list(module.modules())):  # innermost first, as fully_shard requires
            if sub is not module and self._should_wrap(sub):
                fully_shard(sub, **options)
        fully_shard(module, **options)
        return module

    def _device_mesh(self) -> Any:
        from torch.distributed.device_mesh import init_device_mesh

        kind = self.root_device.type
        if self.sharding_strategy == "HYBRID_SHARD":
            return init_device_mesh(
                kind, (self.num_nodes, self.num_processes), mesh_dim_names=("replicate", "shard")
            )
        if self.sharding_strategy == "NO_SHARD":  # a shard group of one: every process holds everything
            return init_device_mesh(kind, (self.world_size, 1), mesh_dim_names=("replicate", "shard"))
        return init_device_mesh(kind, (self.world_size,))

    def _mixed_precision_policy(self) -> Any:
        if self.mixed_precision is not None:
            return self.mixed_precision
        dtype = self.precision_plugin.autocast_dtype
        if dtype is None:
            return None
        from torch.distributed.fsdp import MixedPrecisionPolicy

        return MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)

    # ------------------------------------------------------------------ checkpoints
    def _sharded(self) -> bool:
        return self.state_dict_type == "sharded" and self._module is not None and _is_sharded(self._module)

    def lightning_module_state_dict(self) -> dict[str, Any]:
        """Full weights gathered on rank 0 (other ranks get {}); "sharded": a marker, the shards go to a folder."""
        module = self._module
        assert module is not None
        if self._sharded():
            return {SHARDED_MARKER: True}
        if not _is_sharded(module):
            return module.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def optimizer_state(self, optimizer: Optimizer) -> dict[str, Any]:
        """The optimizer's state gathered to full tensors on rank 0; "sharded": a marker (see save_checkpoint)."""
        module = self._module
        if self._sharded():
            return {SHARDED_MARKER: True}
        if module is None or not _is_sharded(module):
            return optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(
            module, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str, wait: bool = True) -> None:
        """Rank 0 writes the file; "sharded" also writes every process's shards to `<path>.shards/` (DCP)."""
        if self._sharded():
            import torch.distributed.checkpoint as dcp

            folder = path + SHARDS_SUFFIX
            if self.is_global_zero and os.path.isdir(folder):
                shutil.rmtree(folder)  # a checkpoint saved again under the same name
            self.barrier("fsdp_shards")
            dcp.save(self._shard_state(), checkpoint_id=folder)
        super().save_checkpoint(checkpoint, path, wait=wait)

    def _shard_state(self) -> dict[str, Any]:
        """Weights and optimizer states as this process's shards, keyed for torch.distributed.checkpoint."""
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

        module = self._module
        assert module is not None
        state: dict[str, Any] = {"model": get_model_state_dict(module)}
        for i, optimizer in enumerate(self.optimizers):
            state[f"optimizer_{i}"] = get_optimizer_state_dict(module, optimizer)
        return state

    def _load_shards(self, keys: tuple[str, ...]) -> dict[str, Any]:
        import torch.distributed.checkpoint as dcp

        trainer = self._trainer
        assert trainer is not None and trainer.ckpt_path is not None
        folder = os.path.realpath(trainer.ckpt_path) + SHARDS_SUFFIX
        if not os.path.isdir(folder):
            raise MisconfigurationException(
                f"{trainer.ckpt_path!r} was saved with sharded weights, but their folder {folder!r} is missing; "
                "copy it along with the checkpoint file."
            )
        state = {k: v for k, v in self._shard_state().items() if k in keys}
        # fills the shards in place, resharding if the job changed shape; `.metadata` read safely
        dcp.load(state, storage_reader=shard_reader(folder, trusted=self._trusted_checkpoint))
        return state

    def load_model_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> None:
        """Load full weights (or, for a sharded checkpoint, this process's shards) into the sharded module."""
        module = self._module
        assert module is not None
        if not _is_sharded(module):
            super().load_model_state_dict(state_dict, strict=strict)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        if SHARDED_MARKER in state_dict:
            state = self._load_shards(("model",))["model"]
            set_model_state_dict(module, state, options=StateDictOptions(strict=strict))
            return
        set_model_state_dict(
            module, state_dict, options=StateDictOptions(full_state_dict=True, strict=strict)
        )

    def load_optimizer_state_dict(self, optimizer: Optimizer, state: dict[str, Any]) -> None:
        """Load an optimizer state saved by `optimizer_state` (full, or this process's shards)."""
        module = self._module
        if module is None or not _is_sharded(module):
            optimizer.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        if SHARDED_MARKER in state:
            key = f"optimizer_{self.optimizers.index(optimizer)}"
            set_optimizer_state_dict(module, optimizer, self._load_shards((key,))[key])
            return
        if not state.get("state"):
            # nothing per parameter (e.g. plain SGD): only the group settings (torch's loader rejects this case)
            for saved, current in zip(state.get("param_groups", []), optimizer.param_groups):
                current.update({k: v for k, v in saved.items() if k != "params"})
            return
        state = _keyed_by_name(module, optimizer, state)
        set_optimizer_state_dict(module, optimizer, state, options=StateDictOptions(full_state_dict=True))


def _keyed_by_name(module: nn.Module, optimizer: Optimizer, state: dict[str, Any]) -> dict[str, Any]:
    """A plain optimizer state (parameters numbered 0, 1, ...) re-keyed by parameter name, as FSDP expects."""
    groups = state.get("param_groups", [])
    if not groups or not all(isinstance(i, int) for g in groups for i in g["params"]):
        return state
    names = {id(p): name for name, p in module.named_parameters()}
    rename: dict[int, str] = {}
    for saved, current in zip(groups, optimizer.param_groups):
        for index, param in zip(saved["params"], current["params"]):
            rename[index] = names[id(param)]
    return {
        "state": {rename[i]: v for i, v in state.get("state", {}).items()},
        "param_groups": [{**g, "params": [rename[i] for i in g["params"]]} for g in groups],
    }


def _policy_function(policy: Any) -> Callable[[nn.Module], bool]:
    if policy is None:
        return lambda module: False
    classes = getattr(policy, "_module_classes", None)  # torch's ModuleWrapPolicy
    if classes is not None:
        policy = classes
    if isinstance(policy, (set, frozenset, list, tuple)):
        kinds = tuple(policy)
        if not all(isinstance(k, type) and issubclass(k, nn.Module) for k in kinds):
            raise MisconfigurationException(
                f"FSDPStrategy(auto_wrap_policy={policy!r}) must hold nn.Module classes, e.g. "
                "{nn.TransformerEncoderLayer}."
            )
        return lambda module: isinstance(module, kinds)
    if callable(policy):
        return lambda module: bool(policy(module))
    raise MisconfigurationException(
        f"FSDPStrategy(auto_wrap_policy={policy!r}) is not valid; give a set of module classes or a function "
        "module -> bool."
    )


def _is_sharded(module: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)
