"""The checkpoint file format: the one module that owns how a checkpoint is written, verified and read.

A checkpoint file is a 64-byte header (:data:`CHECKPOINT_HEADER`: magic ``DRAMACKP``, format version, payload length,
payload SHA-256), then the payload, one ``torch.save`` of a dict. It is written into a temporary file next to its
destination (hashed as it is written, fsynced), the old file becomes the ``previous`` one if it verifies (a damaged
one never replaces a good ``previous``), the new file is renamed over the destination and the directory is fsynced;
nothing is written anywhere else. Reading checks the header, the length and the SHA-256 before unpickling anything;
a damaged or foreign file raises :class:`~drama.errors.CheckpointError` (exit 5), a path with no file
:class:`NoCheckpoint` (a usage error, exit 2). What the dict holds (the training-state schema) and where the files
live (the run folder) are :mod:`drama.run`'s.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar

import torch

from drama.config import ConfigError, one_line
from drama.errors import CheckpointError


class NoCheckpoint(CheckpointError, ConfigError):
    """No file at a checkpoint path: a usage error (exit 2), and a checkpoint error for the loaders' fallback."""


CHECKPOINT_MAGIC = b"DRAMACKP"
CHECKPOINT_VERSION = 1
"""Version of the file format (the header and how the payload is serialised), checked on load."""
CHECKPOINT_HEADER = struct.Struct("<8sI4xQ32s8x")
"""The fixed 64-byte header, little endian: magic (8 bytes), format version (uint32), 4 zero bytes, payload length
in bytes (uint64), SHA-256 of the payload (32 bytes), 8 zero bytes. The payload follows it to the end of the file."""
_CHUNK = 16 << 20  # bytes hashed per read when verifying


class _HashingWriter:
    """The write end ``torch.save`` writes into: every chunk is hashed and counted on its way to ``file``, so the
    payload is never held in memory a second time."""

    def __init__(self, file: IO[bytes]) -> None:
        self.file, self.sha256, self.size = file, hashlib.sha256(), 0

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        self.sha256.update(view)
        self.size += view.nbytes
        self.file.write(view)
        return view.nbytes

    def flush(self) -> None:
        self.file.flush()


class _Payload(io.RawIOBase):
    """The payload of an open checkpoint file as a seekable file of its own (offsets past the header), for
    ``torch.load``."""

    def __init__(self, file: IO[bytes], offset: int, length: int) -> None:
        super().__init__()
        self.file, self.offset, self.length, self.position = file, offset, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, position: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.length}[whence]
        self.position = max(0, base + position)
        return self.position

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        n = max(0, min(view.nbytes, self.length - self.position))
        self.file.seek(self.offset + self.position)
        read = self.file.readinto(view[:n]) or 0
        self.position += read
        return read


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened; the renames are as durable as the OS makes them
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _intact(path: Path) -> bool:
    """Whether ``path`` is an intact checkpoint (:func:`verify_checkpoint`: header, length, SHA-256)."""
    try:
        verify_checkpoint(path)
    except CheckpointError:
        return False
    return True


def _replace_keeping_previous(new: Path, path: Path, previous: Path | None) -> None:
    """Rename ``new`` over ``path``; the old ``path`` becomes ``previous`` **only if it verifies**: a damaged
    ``path`` (e.g. the one a resume fell back from) is replaced without touching ``previous``, so the last good
    checkpoint survives this save and a kill at any moment inside it. With hard links ``path`` exists at every
    moment; without them (some file systems) there is a moment with only ``previous``."""
    if previous is not None and path.exists() and _intact(path):
        link = previous.with_name(previous.name + ".tmp")
        try:
            link.unlink(missing_ok=True)
            os.link(path, link)
        except OSError:
            os.replace(path, previous)
        else:
            os.replace(link, previous)
    os.replace(new, path)
    _fsync_directory(path.parent)


def write_checkpoint(path: Path, state: dict[str, Any], previous: Path | None = None) -> Path:
    """``torch.save`` ``state`` into ``path`` in the checkpoint format, atomically: a temporary file next to it
    (header, payload hashed while it is written, fsync), the old ``path`` renamed to ``previous`` if it verifies
    (None: dropped; a damaged one is dropped and ``previous`` kept), then the rename and a directory fsync. Nothing
    is written outside ``path``'s directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as file:
            file.write(bytes(CHECKPOINT_HEADER.size))  # no magic until the payload is complete
            writer = _HashingWriter(file)
            torch.save(state, writer)
            file.seek(0)
            file.write(CHECKPOINT_HEADER.pack(CHECKPOINT_MAGIC, CHECKPOINT_VERSION, writer.size,
                                              writer.sha256.digest()))
            file.flush()
            os.fsync(file.fileno())
        _replace_keeping_previous(tmp, path, previous)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _verify(file: IO[bytes], path: Path) -> int:
    """Check the header, length and SHA-256 of the open checkpoint ``file``; returns the payload length."""
    size = os.fstat(file.fileno()).st_size
    head = file.read(CHECKPOINT_HEADER.size)
    magic = head[: len(CHECKPOINT_MAGIC)]
    if not head:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes)")
    if not CHECKPOINT_MAGIC.startswith(magic):
        hint = " (a plain torch.save file, from before the checkpoint format)" if head.startswith(b"PK\x03\x04") else ""
        raise CheckpointError(f"checkpoint {path} is not a drama checkpoint: it does not start with "
                              f"{CHECKPOINT_MAGIC.decode()}{hint}")
    if len(head) < CHECKPOINT_HEADER.size:
        raise CheckpointError(f"checkpoint {path} is truncated: {size} bytes, shorter than its "
                              f"{CHECKPOINT_HEADER.size}-byte header")
    _, version, length, digest = CHECKPOINT_HEADER.unpack(head)
    if version != CHECKPOINT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {version}; this drama reads version "
                              f"{CHECKPOINT_VERSION}")
    stored = size - CHECKPOINT_HEADER.size
    if stored < length:
        raise CheckpointError(f"checkpoint {path} is truncated: {stored} of its {length} payload bytes are there")
    if stored > length:
        raise CheckpointError(f"checkpoint {path} is damaged: {stored - length} unexpected bytes after its "
                              f"{length}-byte payload")
    sha256, buffer = hashlib.sha256(), bytearray(min(_CHUNK, max(length, 1)))
    view, left = memoryview(buffer), length
    while left:
        n = file.readinto(view[: min(left, len(buffer))])
        if not n:
            raise CheckpointError(f"checkpoint {path} is truncated: it shrank while being read")
        sha256.update(view[:n])
        left -= n
    if sha256.digest() != digest:
        raise CheckpointError(f"checkpoint {path} is damaged: the SHA-256 of its payload ({sha256.hexdigest()[:16]}…) "
                              f"is not the one in its header ({digest.hex()[:16]}…)")
    return length


@contextmanager
def _verified_payload(path: Path) -> Iterator[_Payload]:
    """The payload of checkpoint ``path`` once verified, read through the same open file (so it is the verified
    file even if ``path`` is replaced meanwhile)."""
    try:
        file = open(path, "rb")  # closed below, once the caller has read the payload
    except FileNotFoundError:
        raise NoCheckpoint(f"no checkpoint at {path}") from None
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path} cannot be opened: {exc.strerror or exc}") from None
    with file:
        length = _verify(file, path)
        yield _Payload(file, CHECKPOINT_HEADER.size, length)


def verify_checkpoint(path: Path) -> Path:
    """``path`` if it is an intact checkpoint (header, length, SHA-256; nothing is unpickled), else
    :class:`CheckpointError`."""
    with _verified_payload(Path(path)):
        return Path(path)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The dict saved in checkpoint ``path``, on the CPU, after verifying the file (:class:`CheckpointError` when it
    is missing or damaged).

    The file is read twice: once in 16 MiB chunks to check the SHA-256, then by ``torch.load`` from the same open
    file. That costs a second pass over the bytes (from the page cache, as a rule) but no second copy of a
    1.2 GB replay in memory, which reading the file into one verified buffer would.
    """
    path = Path(path)
    with _verified_payload(path) as payload:
        try:
            state = torch.load(payload, map_location="cpu", weights_only=False)  # RNG states hold numpy
        except Exception as exc:  # intact bytes that this torch cannot unpickle (e.g. written by a newer one)
            raise CheckpointError(f"checkpoint {path} is intact but cannot be loaded: {one_line(exc)}") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} does not hold a dict but a {type(state).__name__}")
    return state


_T = TypeVar("_T")


def first_good(candidates: list[Path], read: Callable[[Path], _T], warn: bool = True) -> tuple[Path, _T]:
    """``read`` of the first candidate that is good; one line on stderr (with ``warn``) when a later one is used,
    one :class:`CheckpointError` naming all of them when none is."""
    if not any(path.exists() for path in candidates):
        raise NoCheckpoint(f"no checkpoint at {candidates[0]}")
    errors: list[str] = []
    for path in candidates:
        try:
            value = read(path)
        except CheckpointError as exc:
            errors.append(str(exc))
            continue
        if errors and warn:
            print(f"drama: warning: {'; '.join(errors)}; using {path} instead", file=sys.stderr, flush=True)
        return path, value
    raise CheckpointError(f"no good checkpoint: {'; '.join(errors)}")


def mismatch_error(path: Path, config: Path | str, error: RuntimeError) -> ConfigError:
    """The one wording of "this checkpoint does not fit the models its run's config builds" (``load_state_dict``'s
    size or key error, e.g. after ``config.yaml`` was edited by hand to other model sizes): what both loaders
    raise."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    detail = lines[0].rstrip(":") if lines else type(error).__name__
    if len(lines) > 1:
        detail = f"{detail}: {lines[1][:160]}"
    return ConfigError(f"the checkpoint {path} does not fit the models of {config} ({detail})")
