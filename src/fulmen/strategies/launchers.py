"""Launchers: how the processes of a distributed run come to exist, and how a failure ends all of them.

- `ScriptLauncher` (strategy="ddp"): the user starts the script once per machine; the first `fit`
  re-runs the same command N-1 times with LOCAL_RANK/NODE_RANK/WORLD_SIZE/MASTER_* set, and runs rank
  `node_rank * N` itself. Under torchrun, SLURM or with LOCAL_RANK already set, it starts nothing.
- `SpawnLauncher` (strategy="ddp_spawn", "ddp_fork", "ddp_notebook"): `fit` starts N processes with
  torch.multiprocessing, waits for them, and copies rank 0's results (weights, metrics, the return
  value, the checkpoint callback's paths) back into the calling process's Trainer and module.

Failing fast. Every process runs the Trainer through `run_reporting_failures`: a process whose own code
raises writes "rank R: <error>" into the rendezvous store and exits (a launcher that started other local
processes stops them first). The others, blocked in a collective with it, get a connection error at once
(gloo) or at the collective timeout (NCCL); they look in the store and raise `ProcessFailedError` naming
the rank that failed and why. A process that dies without a word (SIGKILL, the OOM killer) is named by
the launcher that started it, from its exit code.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from fulmen.utilities import MisconfigurationException, set_global_rank

if TYPE_CHECKING:
    from fulmen.strategies.ddp import DDPStrategy
    from fulmen.trainer import Trainer

_FAILED_KEY = "fulmen/failed/"
_TIMED_OUT_KEY = (
    "fulmen/timed_out/"  # written by a process whose collective timed out: it is not the one stuck
)
_LOST_PEER_HINTS = (
    "Connection closed by peer",
    "Connection reset",
    "Broken pipe",
    "gloo",
    "NCCL",
    "timed out",
    "Timed out",
    "DistBackendError",
    "ProcessGroup",
    "TCPStore",
)
_REPORT_WAIT_S = 2.0  # how long a process that lost a peer waits for that peer's report
_GRACE_S = 10.0  # how long the main process may take to notice a dead child by itself


class ProcessFailedError(RuntimeError):
    """Another process of the distributed job failed, so this one stopped too (the message names it).

    `failed_rank` is the rank that failed, when it is known.
    """

    def __init__(self, message: str, failed_rank: int | None = None) -> None:
        super().__init__(message)
        self.failed_rank = failed_rank


# ---------------------------------------------------------------------------- failure reporting
def run_reporting_failures(strategy: DDPStrategy, fn: Callable[..., Any], *args: Any) -> Any:
    """Run `fn(*args)` in this process; on failure, tell the other processes or name the one that failed."""
    try:
        return fn(*args)
    except BaseException as exc:
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            raise  # a clean exit on every rank (e.g. after SIGTERM wrote its checkpoint) is not a failure
        explained = _explain_failure(strategy, exc)
        if explained is not exc:
            raise explained from exc
        raise


def _explain_failure(strategy: DDPStrategy, exc: BaseException) -> BaseException:
    store = strategy._store
    world, me = strategy.world_size, strategy.global_rank
    if store is None or world <= 1 or isinstance(exc, ProcessFailedError):
        return exc
    culprit = _find_report(store, world, me, wait_s=0.0)
    if culprit is None and _looks_like_lost_peer(exc):
        timed_out = "timed out" in str(exc).lower()
        if timed_out:
            with contextlib.suppress(Exception):
                store.set(f"{_TIMED_OUT_KEY}{me}", "1")
        culprit = _find_report(store, world, me, wait_s=_REPORT_WAIT_S)
        silent = _silent_ranks(store, world, me) if timed_out and culprit is None else []
        if silent:
            who = f"rank {silent[0]}" if len(silent) == 1 else f"ranks {', '.join(map(str, silent))}"
            return ProcessFailedError(
                f"rank {me}: a collective operation timed out after {strategy.timeout} because {who} did not "
                "answer: it is stuck outside the collective (a hang in its own code, data loading or I/O) or "
                "waits in a different one. The timeout is DDPStrategy(timeout=datetime.timedelta(...)) "
                f"(30 minutes by default). The error here was: {_describe(exc)}",
                silent[0],
            )
        if culprit is None:
            return ProcessFailedError(
                f"rank {me}: a collective operation failed because another process of the job went away without "
                "reporting an error (killed by a signal such as SIGKILL, out of memory, or a lost machine). Check "
                f"the other processes' logs. The error here was: {_describe(exc)}"
            )
    if culprit is not None:
        rank, reason = culprit
        return ProcessFailedError(f"rank {rank} failed with {reason}; rank {me} stopped because of it.", rank)
    # this process's own code failed: tell the others; they notice when this process exits
    with contextlib.suppress(Exception):
        store.set(f"{_FAILED_KEY}{me}", _describe(exc))
    return exc


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _looks_like_lost_peer(exc: BaseException) -> bool:
    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = f"{type(exc).__name__}: {exc}"
    return isinstance(exc, RuntimeError) and any(hint in text for hint in _LOST_PEER_HINTS)


def _find_report(store: Any, world: int, me: int, wait_s: float) -> tuple[int, str] | None:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            for rank in range(world):
                key = f"{_FAILED_KEY}{rank}"
                if rank != me and store.check([key]):
                    return rank, store.get(key).decode(errors="replace")
        except Exception:
            return None  # the store is gone with the process that hosted it
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.1)


def _silent_ranks(store: Any, world: int, me: int) -> list[int]:
    """The ranks that reported neither a failure nor a timeout of their own: the ones that stopped answering."""
    try:
        return [
            rank
            for rank in range(world)
            if rank != me
            and not store.check([f"{_FAILED_KEY}{rank}"])
            and not store.check([f"{_TIMED_OUT_KEY}{rank}"])
        ]
    except Exception:
        return []  # the store is gone with the process that hosted it


# ---------------------------------------------------------------------------- launchers
def make_launcher(strategy: DDPStrategy) -> Any:
    """The launcher for the strategy's start method."""
    if strategy.start_method == "popen":
        return ScriptLauncher(strategy)
    return SpawnLauncher(strategy)


class _InPlace:
    """Base: run in this process only (when torchrun/SLURM/the user started every process)."""

    def __init__(self, strategy: DDPStrategy) -> None:
        self.strategy = strategy

    @property
    def is_interactive_compatible(self) -> bool:
        """Whether the launcher works in a notebook or a REPL."""
        return True

    def launch(self, fn: Callable[..., Any], *args: Any, trainer: Trainer) -> Any:
        """Run `fn(*args)` in this process, reporting failures to the others."""
        return run_reporting_failures(trainer.strategy, fn, *args)  # type: ignore[arg-type]


class ScriptLauncher(_InPlace):
    """strategy="ddp": start the other local processes by running the same command again."""

    def __init__(self, strategy: DDPStrategy) -> None:
        super().__init__(strategy)
        self._children: _Children | None = None

    @property
    def is_interactive_compatible(self) -> bool:  # noqa: D102
        return False

    def launch(self, fn: Callable[..., Any], *args: Any, trainer: Trainer) -> Any:
        """Start the other local processes on the first call, then run `fn` here as the local rank 0."""
        env = self.strategy.cluster_environment
        assert env is not None
        if (
            self._children is None
            and not env.creates_processes_externally
            and self.strategy.num_processes > 1
        ):
            self._children = self._start_children()
        children = self._children
        if children is not None:
            children.in_launch.set()
        try:
            return run_reporting_failures(trainer.strategy, fn, *args)  # type: ignore[arg-type]
        except BaseException as exc:
            if children is not None:
                reason = (
                    children.failure()
                )  # a child that ended by itself, before this process stops the rest
                named = isinstance(exc, ProcessFailedError) and exc.failed_rank is not None
                # the children wait in collectives with this process: once it failed, they can only be stopped
                children.stop(grace_s=_REPORT_WAIT_S if named else 0.0)
                if (
                    reason is not None
                    and not named
                    and (isinstance(exc, ProcessFailedError) or _looks_like_lost_peer(exc))
                ):
                    raise ProcessFailedError(
                        f"{reason} Rank {trainer.global_rank} stopped because of it."
                    ) from exc
            raise
        finally:
            if children is not None:
                children.in_launch.clear()

    def _start_children(self) -> _Children:
        strategy = self.strategy
        env = strategy.cluster_environment
        assert env is not None
        command = _script_command()
        env.export()  # picks a free MASTER_PORT on a single machine when none is set
        n, node = strategy.num_processes, strategy.node_rank
        started: list[tuple[int, subprocess.Popen[bytes]]] = []
        for local_rank in range(1, n):
            child_env = dict(os.environ)
            child_env.update(
                MASTER_ADDR=env.main_address,
                MASTER_PORT=str(env.main_port),
                NODE_RANK=str(node),
                LOCAL_RANK=str(local_rank),
                RANK=str(node * n + local_rank),
                WORLD_SIZE=str(strategy.world_size),
            )
            started.append((node * n + local_rank, subprocess.Popen(command, env=child_env, cwd=os.getcwd())))
        children = _Children(started)
        atexit.register(children.wait_at_exit)
        from fulmen.strategies.ddp import _ReleaseGroupsAtExit

        # the process may end in _ReleaseGroupsAtExit before atexit reaches wait_at_exit: run it from there too
        _ReleaseGroupsAtExit.before_exit.append(children.wait_at_exit)
        children.start_watching()
        return children


def _script_command() -> list[str]:
    """The command that started this process, to run once more for each extra local process."""
    import __main__

    main_file = getattr(__main__, "__file__", None)
    spec = getattr(__main__, "__spec__", None)
    module_name = spec.name if spec is not None else None
    if (module_name or "").startswith(("pytest", "_pytest")) or os.path.basename(main_file or "") in (
        "pytest",
        "py.test",
    ):
        raise MisconfigurationException(
            "strategy='ddp' starts its other processes by re-running the command that started this one, and here "
            "that is pytest (it would run the whole test session in each process). In tests use "
            "strategy='ddp_spawn', or run a script in a subprocess."
        )
    if module_name is not None and module_name != "__main__":
        if module_name.endswith(".__main__"):
            module_name = module_name[: -len(".__main__")]
        return [sys.executable, "-m", module_name, *sys.argv[1:]]
    if main_file is None:
        raise MisconfigurationException(
            "strategy='ddp' starts its other processes by re-running your script, but this process has no script "
            "(a notebook or an interactive shell). Use strategy='ddp_notebook' (fork) or 'ddp_spawn', or start "
            "the script with torchrun."
        )
    from fulmen.compat import script_prefix  # a script run by `fulmen exec` re-runs in zero-change mode

    return [sys.executable, *script_prefix(), os.path.abspath(main_file), *sys.argv[1:]]


class _Children:
    """The local processes a ScriptLauncher started: watched, reported and reaped."""

    def __init__(self, procs: list[tuple[int, subprocess.Popen[bytes]]]) -> None:
        self.procs = procs
        self.in_launch = threading.Event()
        self._stopped = False

    def failure(self) -> str | None:
        """A sentence naming the first child that exited with an error, or None."""
        for rank, proc in self.procs:
            code = proc.poll()
            if code is None or code == 0:
                continue
            if code < 0:
                try:
                    name = signal.Signals(-code).name
                except ValueError:
                    name = f"signal {-code}"
                return f"rank {rank} (pid {proc.pid}) was killed by {name}."
            return f"rank {rank} (pid {proc.pid}) exited with code {code} (its error, if it raised one, is printed above)."
        return None

    def failure_status(self) -> int:
        """The exit status of the first child that failed (1 for one killed by a signal), or 0."""
        for _, proc in self.procs:
            code = proc.poll()
            if code:
                return code if code > 0 else 1
        return 0

    def start_watching(self) -> None:
        """Watch the children in a daemon thread (ends a main process stuck on a dead child)."""
        threading.Thread(target=self._watch, name="fulmen-ddp-watch", daemon=True).start()

    def _watch(self) -> None:
        while not self._stopped:
            reason = self.failure()
            if reason is not None and self.in_launch.is_set():
                deadline = time.monotonic() + _GRACE_S
                while self.in_launch.is_set() and time.monotonic() < deadline and not self._stopped:
                    time.sleep(0.2)
                if self.in_launch.is_set() and not self._stopped:
                    # the main process did not notice by itself (e.g. NCCL waits for its timeout): end the job
                    print(f"[fulmen] {reason} Stopping the job.", file=sys.stderr, flush=True)
                    self.kill()
                    os._exit(1)
                return
            if all(p.poll() is not None for _, p in self.procs):
                return
            time.sleep(0.2)

    def stop(self, grace_s: float) -> None:
        """After this process failed: give the children `grace_s` to end by themselves, then end them."""
        self._stopped = True
        self._wait(timeout_s=grace_s)
        self.kill()

    def kill(self) -> None:
        """Terminate children that are still running (SIGTERM, then SIGKILL)."""
        for _, proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(Exception):
                    proc.terminate()
        if not self._wait(timeout_s=5.0):
            for _, proc in self.procs:
                if proc.poll() is None:
                    with contextlib.suppress(Exception):
                        proc.kill()
            self._wait(timeout_s=5.0)

    def _wait(self, timeout_s: float | None) -> bool:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for _, proc in self.procs:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                proc.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                return False
        return True

    def wait_at_exit(self) -> None:
        """At the end of the main script: wait for the children; fail the job if one of them failed."""
        if self._stopped:
            return
        self._stopped = True
        if hasattr(sys, "last_value"):
            # this script died of an uncaught exception: its children would wait for it in their next collective
            self._wait(timeout_s=_REPORT_WAIT_S)
            self.kill()
            return
        self._wait(timeout_s=None)  # a child stuck in a collective ends at the process group's timeout
        reason = self.failure()
        if reason is not None:
            # this process's own status is not known here (see _ReleaseGroupsAtExit): the job takes the child's
            print(f"[fulmen] {reason}", file=sys.stderr, flush=True)
            sys.stdout.flush()
            os._exit(self.failure_status())


class SpawnLauncher(_InPlace):
    """strategy="ddp_spawn"/"ddp_fork": start every process from `fit`, bring rank 0's results back."""

    @property
    def is_interactive_compatible(self) -> bool:  # noqa: D102
        return self.strategy.start_method == "fork"

    def launch(self, fn: Callable[..., Any], *args: Any, trainer: Trainer) -> Any:
        """Start the processes, run `fn` in each, wait for all of them and return rank 0's result."""
        strategy = self.strategy
        env = strategy.cluster_environment
        assert env is not None
        if env.creates_processes_externally:
            return super().launch(fn, *args, trainer=trainer)
        import torch.multiprocessing as mp

        if strategy.start_method == "fork" and torch.cuda.is_initialized():
            raise MisconfigurationException(
                "strategy='ddp_fork'/'ddp_notebook' cannot start processes after CUDA was initialized in this process "
                "(a forked child cannot use it). Do not touch CUDA before trainer.fit (e.g. no model.cuda() or "
                "torch.cuda calls), restart the kernel, or use strategy='ddp_spawn'."
            )
        n = strategy.num_processes
        node = strategy.node_rank
        variables = {
            "MASTER_ADDR": env.main_address,
            "MASTER_PORT": str(env.main_port),
            "NODE_RANK": str(node),
            "WORLD_SIZE": str(strategy.world_size),
        }
        ctx = mp.get_context(strategy.start_method)
        reader, writer = ctx.Pipe(duplex=False)
        try:
            context = mp.start_processes(
                _spawned_worker,
                args=(fn, args, variables, n, node, writer),
                nprocs=n,
                join=False,
                start_method=strategy.start_method,
            )
        except (
            TypeError,
            AttributeError,
            pickle.PicklingError,
        ) as err:  # pickling the Trainer or module failed
            reader.close()
            raise MisconfigurationException(
                f"strategy='ddp_spawn' must pickle the Trainer and the model to start its processes, and that "
                f"failed: {err}. Define the model at module level, or use strategy='ddp' (re-runs the script) or "
                "'ddp_fork'."
            ) from err
        finally:
            # the children hold their own ends now: with ours closed, a rank 0 that dies mid-send gives EOFError
            writer.close()
        received: list[bytes] = []
        try:
            # read while waiting: rank 0 blocks in its send until results larger than a pipe buffer are read
            while not context.join(timeout=0.2):
                _receive(reader, received)
            _receive(reader, received)
        except mp.ProcessRaisedException as err:
            raise ProcessFailedError(
                f"rank {node * n + err.error_index} failed:\n{err}", node * n + err.error_index
            ) from None
        except mp.ProcessExitedException as err:
            how = (
                f"was killed by {err.signal_name}" if err.signal_name else f"exited with code {err.exit_code}"
            )
            rank = node * n + err.error_index
            raise ProcessFailedError(f"rank {rank} (pid {err.error_pid}) {how}.", rank) from None
        finally:
            reader.close()
        if not received:
            return None
        payload = torch.load(io.BytesIO(received[0]), weights_only=False)
        _restore_in_parent(trainer, payload)
        return payload["result"]


def _receive(reader: Any, received: list[bytes]) -> None:
    """Append rank 0's results to `received` once they are in the pipe (a no-op after that)."""
    if received:
        return
    try:
        if reader.poll():
            received.append(reader.recv_bytes())
    except EOFError:
        pass  # every sender is gone without sending: the join reports how rank 0 ended


def _spawned_worker(
    local_rank: int,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    variables: dict[str, str],
    n: int,
    node: int,
    results: Any,
) -> None:
    os.environ.update(variables)
    os.environ["LOCAL_RANK"] = str(local_rank)
    os.environ["RANK"] = str(node * n + local_rank)
    trainer: Trainer = fn.__self__  # type: ignore[attr-defined]
    strategy: DDPStrategy = trainer.strategy  # type: ignore[assignment]
    _own_copy(trainer.lightning_module)
    strategy._resolve_ranks()
    set_global_rank(strategy.global_rank)
    result = run_reporting_failures(strategy, fn, *args)
    weights = strategy.lightning_module_state_dict()  # every rank: FSDP gathers the full weights on rank 0
    if strategy.global_rank == 0:
        buffer = io.BytesIO()
        torch.save(_results_for_parent(trainer, result, weights), buffer)
        results.send_bytes(buffer.getvalue())
    results.close()
    # Done: wait for the others, then exit at once. A normal interpreter shutdown destroys the process group's
    # threads in an order that can abort the process (SIGABRT) after its work succeeded.
    strategy.barrier()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _own_copy(module: torch.nn.Module) -> None:
    """Give this process private weights: torch.multiprocessing sends tensors to spawned processes in shared
    memory, and every process stepping the same storage would apply each update once per process."""
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            if tensor.is_shared():
                tensor.data = tensor.data.clone()


def _to_cpu(value: Any) -> Any:
    return value.detach().cpu() if isinstance(value, torch.Tensor) else value


def _results_for_parent(trainer: Trainer, result: Any, weights: dict[str, Any]) -> dict[str, Any]:
    return {
        "result": result,
        "state_dict": {k: _to_cpu(v) for k, v in weights.items()},
        "progress": trainer.fit_loop.progress.state_dict(),
        "callback_metrics": {k: _to_cpu(v) for k, v in trainer.callback_metrics.items()},
        "logged_metrics": {k: _to_cpu(v) for k, v in trainer.logged_metrics.items()},
        "callbacks": {cb.state_key: cb.state_dict() for cb in trainer.callbacks},
    }


def _restore_in_parent(trainer: Trainer, payload: dict[str, Any]) -> None:
    """Make the calling process's Trainer and module look as if it had trained itself."""
    module = trainer.lightning_module
    module.load_state_dict(payload["state_dict"])
    loop = trainer.fit_loop
    loop.progress.load_state_dict(payload["progress"])
    loop.results.clear()
    loop.results.train.epoch_metrics = dict(payload["callback_metrics"])
    loop.results.logged = dict(payload["logged_metrics"])
    states = payload["callbacks"]
    for cb in trainer.callbacks:
        state = states.get(cb.state_key)
        if state:
            cb.load_state_dict(state)
