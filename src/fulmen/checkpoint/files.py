"""Checkpoint files: what the format allows, atomic and durable writes, safe loading, local paths and URLs.

A checkpoint holds only plain containers, numbers, strings and tensors (`check_plain`), so that it is
always read back with `torch.load(weights_only=True)`: loading a checkpoint never runs code. Files are
written atomically (temporary file in the same folder, fsync, rename). ModelCheckpoint's files are
finished on a background writer (see writer.py); every reader here waits for the writes in flight.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import secrets
import socket
import sys
import threading
from collections import Counter, OrderedDict
from typing import Any

import torch

from fulmen.utilities import MisconfigurationException
from fulmen.writer import BackgroundWriter

# finishes the checkpoints ModelCheckpoint writes during training (see writer.py and `atomic_save`)
_WRITER = BackgroundWriter("fulmen-checkpoint-writer")


class CheckpointError(MisconfigurationException):
    """A checkpoint file that cannot be used (missing, damaged, or unsafe to load)."""


class UnsafeCheckpointError(CheckpointError):
    """The file holds pickled objects that could run code; it is refused unless trusted explicitly."""


_PLAIN_LEAVES = (type(None), bool, int, float, complex, str, bytes, bytearray, torch.dtype, torch.device)
_PLAIN_MAPPINGS = (dict, OrderedDict, Counter)
_PLAIN_SEQUENCES = (list, tuple, torch.Size, set)


def check_plain(obj: Any, where: str = "checkpoint") -> None:
    """Raise when `obj` holds anything `torch.load(weights_only=True)` would refuse (naming the key)."""
    kind = type(obj)
    if kind in _PLAIN_LEAVES or isinstance(obj, torch.Tensor):
        return
    if kind in _PLAIN_MAPPINGS:
        for key, value in obj.items():
            if type(key) not in _PLAIN_LEAVES:
                raise MisconfigurationException(
                    f"{where} has a key of type {type(key).__name__} ({key!r}); checkpoints only hold plain "
                    "keys (str, int, float, bool) so that they load safely. Convert the key, e.g. to str."
                )
            check_plain(value, f"{where}[{key!r}]")
        return
    if kind in _PLAIN_SEQUENCES:
        for i, value in enumerate(obj):
            check_plain(value, f"{where}[{i}]")
        return
    raise MisconfigurationException(
        f"{where} is a {kind.__module__}.{kind.__qualname__}, which a checkpoint cannot hold: files are loaded "
        "with torch.load(weights_only=True), which refuses arbitrary objects because unpickling them can run "
        "code. Store plain values instead (numbers, strings, tensors, lists, dicts) and rebuild the object from "
        "them when loading."
    )


def _is_url(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def _fs_for(path: str) -> tuple[Any, str]:
    try:
        import fsspec
    except ImportError as err:
        raise MisconfigurationException(
            f"{path!r} is a URL; reading and writing URLs needs fsspec: `pip install fsspec` (plus the "
            "filesystem's package, e.g. s3fs)."
        ) from err
    fs, inner = fsspec.core.url_to_fs(path)
    return fs, inner


def exists(path: str | os.PathLike[str]) -> bool:
    """True when the local path or fsspec URL exists (once the writes in flight have landed)."""
    _WRITER.flush()
    path = os.fspath(path)
    if _is_url(path):
        fs, inner = _fs_for(path)
        return bool(fs.exists(inner))
    return os.path.exists(path.removeprefix("file://"))


# the folder beside a checkpoint file where a sharded strategy (FSDP) puts its shards
SHARDS_SUFFIX = ".shards"


def will_exist(path: str | os.PathLike[str]) -> bool:
    """True when `path` exists once the writes and removals in flight have landed (without waiting for them)."""
    path = os.fspath(path)
    expected = _WRITER.expected(path)
    if expected is not None:
        return expected
    if _is_url(path):
        return exists(path)
    return os.path.lexists(path.removeprefix("file://"))


def in_background(task: Any, what: str, path: str) -> None:
    """Queue a file operation that creates `path` behind the checkpoint writes in flight."""
    _WRITER.submit(task, what, path=path)


def raise_if_write_failed() -> None:
    """Raise now if a background checkpoint write has failed (one attribute read when none has)."""
    if _WRITER.error is not None:  # read inline: this runs at every training step
        _WRITER.raise_if_failed()


def remove(path: str | os.PathLike[str]) -> None:
    """Delete a checkpoint file (local or fsspec URL) if it exists; after the writes in flight, if any."""
    path = os.fspath(path)
    if _WRITER.pending():  # it may be the file a queued write replaces: delete it only once that write landed
        _WRITER.submit(lambda: _remove_now(path), f"the removal of {path!r}", path=path, creates=False)
    else:
        _WRITER.flush()  # raises if the last background write failed: then the file it replaces must stay
        _remove_now(path)


def _remove_now(path: str) -> None:
    if _is_url(path):
        fs, inner = _fs_for(path)
        if fs.exists(inner):
            fs.rm(inner)
    elif os.path.lexists(path):  # a symlink too (save_last="link"), even one whose target is gone
        os.unlink(path)
    if not _is_url(path) and os.path.isdir(path + SHARDS_SUFFIX):
        import shutil

        shutil.rmtree(path + SHARDS_SUFFIX, ignore_errors=True)


def finish_writes() -> None:
    """Wait for the checkpoint files still being written in the background (raises if one failed)."""
    _WRITER.flush()


def atomic_save(obj: dict[str, Any], path: str, wait: bool = True) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`.

    A process killed at any moment leaves either the previous file or the new one, never a partial one.
    With `wait=False` (local paths) `obj` is serialized now, and the write, fsyncs and rename happen on
    the background writer, in order with the other writes and removals handed to it.
    """
    if _is_url(path):
        _WRITER.flush()
        fs, inner = _fs_for(path)
        parent = inner.rsplit("/", 1)[0] if "/" in inner else ""
        if parent:
            fs.makedirs(parent, exist_ok=True)
        tmp = f"{parent}/.tmp-{os.getpid()}-{threading.get_ident()}.ckpt" if parent else ".tmp.ckpt"
        with fs.open(tmp, "wb") as f:
            torch.save(obj, f)
        fs.mv(tmp, inner)
        return
    path = path.removeprefix("file://")
    if wait:
        _WRITER.flush()  # a queued write of the same path must not land after this newer one
        _write_atomically(path, lambda f: torch.save(obj, f))
        return
    # the snapshot is taken here, on the calling thread: training changes the tensors right after
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getbuffer()
    _WRITER.submit(
        lambda: _write_atomically(path, lambda f: f.write(data)), f"checkpoint {path!r}", path=path
    )


def _write_atomically(path: str, write: Any) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f"{_tmp_prefix()}{os.getpid()}-{secrets.token_hex(6)}.ckpt")
    # mode 0o666 minus the umask, as torch.save's open() gives (mkstemp's 0o600 hid files from teammates)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    sink = _FileSink(fd)
    try:
        try:
            write(sink)
            sink.flush()
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        # torch.save turns a failed write into "unexpected pos"; the disk's own error says what happened
        cause = sink.error if sink.error is not None else err
        if isinstance(cause, OSError) and cause.errno is not None:
            raise OSError(
                cause.errno, f"{os.strerror(cause.errno)}: could not write checkpoint {path!r}"
            ) from err
        raise
    _fsync_folder(folder)
    _remove_stale_temporaries(folder)


class _FileSink:
    """The temporary file as torch.save sees it: writes go to the descriptor and keep their OSError.

    torch.save writes each record's small header separately, so small pieces are gathered into one
    buffer (one system call per MiB) while large tensor data goes straight through.
    """

    _GATHER = 1 << 20

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.error: OSError | None = None
        self._pending = bytearray()

    def write(self, data: Any) -> int:
        """Write all of `data`; remember an OSError (e.g. a full disk) before torch wraps it."""
        view = memoryview(data).cast("B")
        if len(view) < 1 << 16:
            self._pending += view
            if len(self._pending) >= self._GATHER:
                self.flush()
            return len(view)
        self.flush()
        self._write_all(view)
        return len(view)

    def flush(self) -> None:
        """Write out the gathered small pieces."""
        if self._pending:
            pending, self._pending = self._pending, bytearray()
            self._write_all(memoryview(pending))

    def _write_all(self, view: memoryview) -> None:
        done = 0
        try:
            while done < len(view):
                done += os.write(self.fd, view[done:])
        except OSError as err:
            self.error = err
            raise


def _tmp_prefix() -> str:
    return f".tmp-{socket.gethostname()}-"


def _remove_stale_temporaries(folder: str) -> None:
    """Delete half-written files left by processes of this host that were killed while saving."""
    prefix = _tmp_prefix()
    for name in os.listdir(folder):
        if not (name.startswith(prefix) and name.endswith(".ckpt")):
            continue
        pid = name[len(prefix) :].split("-", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(folder, name))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, but not ours to signal
        return True
    return True


def _fsync_folder(folder: str) -> None:
    """Make the rename itself durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load(path: str | os.PathLike[str], map_location: Any = "cpu", trusted: bool = False) -> dict[str, Any]:
    """Read a checkpoint safely with `torch.load(weights_only=True)`; errors name the file.

    Args:
        path: a local path or an fsspec URL.
        map_location: as for `torch.load`.
        trusted: load with `weights_only=False`, which can run code stored in the file. Only for files
            you made yourself or trust completely.
    """
    path = os.fspath(path)
    if not exists(path):
        raise CheckpointError(f"Checkpoint file not found: {path!r}. Check the path.")
    try:
        if _is_url(path):
            fs, inner = _fs_for(path)
            with fs.open(inner, "rb") as f:
                ckpt = torch.load(f, map_location=map_location, weights_only=not trusted)
        else:
            local = path.removeprefix("file://")
            _verify_records(local)
            ckpt = torch.load(local, map_location=map_location, weights_only=not trusted)
    except pickle.UnpicklingError as err:
        if "weights_only" in str(err) or "Weights only" in str(err):
            raise UnsafeCheckpointError(
                f"Refusing to load checkpoint {path!r}: it holds pickled Python objects, and unpickling them can "
                f"run arbitrary code ({_first_line(err)}). If you made this file yourself or trust its source, "
                "either allow the named class with `torch.serialization.add_safe_globals([TheClass])`, or trust "
                "the whole file: `weights_only=False` in load_from_checkpoint(...) and fit/validate/test/predict(...), "
                "`fulmen.checkpoint.load(path, trusted=True)`."
            ) from err
        raise _damaged(path, err) from err
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError) as err:
        raise _damaged(path, err) from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(
            f"{path!r} is not a fulmen/Lightning checkpoint: it has no 'state_dict' entry. For a bare state dict "
            "use `module.load_state_dict(torch.load(path, weights_only=True))`."
        )
    return ckpt


# what a torch.distributed.checkpoint `.metadata` file may name: DCP's own record classes, dtypes, sizes,
# paths and torch's layout lookup; nothing that runs code when called with attacker-chosen arguments
_SHARD_METADATA_MODULES = ("torch.distributed.checkpoint.metadata", "torch.distributed.checkpoint.filesystem")
_SHARD_METADATA_GLOBALS = {
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),
    ("collections", "OrderedDict"),
    ("pathlib", "PosixPath"),
    ("pathlib", "WindowsPath"),
    ("pathlib", "PurePosixPath"),
    ("pathlib", "PureWindowsPath"),
    ("pathlib", "Path"),
}


class _ShardMetadataUnpickler(pickle.Unpickler):
    """Unpickles a DCP `.metadata` file, refusing any global outside the short list above."""

    def find_class(self, module: str, name: str) -> Any:
        """Resolve `module.name` only when it is a DCP record class, a dtype or one of the listed names."""
        found = super().find_class(module, name) if _shard_global_allowed(module, name) else None
        if found is None:
            raise pickle.UnpicklingError(f"{module}.{name}")
        return found


def _shard_global_allowed(module: str, name: str) -> bool:
    if (module, name) in _SHARD_METADATA_GLOBALS:
        return True
    if module == "torch":
        return isinstance(getattr(torch, name, None), torch.dtype)
    if module in _SHARD_METADATA_MODULES and not name.startswith("__"):
        obj = getattr(sys.modules.get(module), name, None)
        return isinstance(obj, type) and obj.__module__ == module  # a class defined there, not an import
    return False


def shard_reader(folder: str, trusted: bool = False) -> Any:
    """A torch.distributed.checkpoint reader for `folder` whose `.metadata` cannot run code unless `trusted`.

    torch's own reader unpickles `.metadata` without restriction; the shard files themselves are read
    with `torch.load(weights_only=True)` or as raw tensor bytes. The index is checked here, before
    torch's collective load starts, so a refusal reaches the caller as one clear error.
    """
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import StorageMeta

    if not trusted and os.path.exists(os.path.join(folder, ".metadata")):
        _read_shard_index(os.path.join(folder, ".metadata"))

    class SafeReader(FileSystemReader):
        def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
            if trusted:
                return super().read_metadata(*args, **kwargs)
            metadata = _read_shard_index(os.fspath(self._get_metadata_path(kwargs.get("rank"))))
            if getattr(metadata, "storage_meta", None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    return SafeReader(folder)


def _read_shard_index(path: str) -> Any:
    try:
        with open(path, "rb") as f:
            return _ShardMetadataUnpickler(f).load()
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(
            f"Refusing to load the shard index {path!r}: it asks to run {err}, which is not part of a sharded "
            "checkpoint, and unpickling it could run arbitrary code. If you made this checkpoint yourself and "
            "trust it, resume with weights_only=False (the same opt-in as for a checkpoint file holding pickled "
            "objects)."
        ) from None
    except (EOFError, OSError, ValueError, AttributeError, ImportError, TypeError) as err:
        raise _damaged(path, err) from err


def _verify_records(path: str) -> None:
    """Check each record of the zip archive against its stored CRC-32 (torch.load does not).

    Flipped bits in tensor data would otherwise load silently as wrong weights; in the pickle they
    would be misreported as an unsafe file. Records stored without a checksum (CRC 0) are skipped.
    """
    import zipfile

    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        return  # not a zip archive (torch's legacy format, or truncated): torch.load reads or rejects it
    with archive:
        for info in archive.infolist():
            if info.CRC == 0 and info.file_size > 0:
                continue
            try:
                with archive.open(info) as record:
                    while record.read(1 << 22):
                        pass
            except (zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
                raise CheckpointError(
                    f"Checkpoint {path!r} is damaged: its record {info.filename!r} does not match the checksum "
                    f"stored with it ({err}); the file changed after it was written (disk or copy errors). "
                    "Resume from an earlier checkpoint."
                ) from err


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    for line in text:
        if "GLOBAL" in line or "Unsupported" in line:
            return line.strip()
    return text[0] if text else type(err).__name__


def _damaged(path: str, err: BaseException) -> CheckpointError:
    return CheckpointError(
        f"Checkpoint {path!r} is damaged or truncated and cannot be read ({type(err).__name__}: "
        f"{_first_line(err)}). Resume from an earlier checkpoint."
    )
