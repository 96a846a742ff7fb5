"""Exact checkpoints of a strategy: header + checksum + pickle payload, written atomically.

File layout (all integers little-endian)::

    offset  size  field
    0       8     magic  b"ESSAPOP\\0"
    8       4     format version (uint32), currently 2
    12      8     body length in bytes (uint64)
    20      32    SHA-256 of the body
    52      n     body: uint32 buffer count k, uint64 payload length, the payload (a pickle,
                  protocol 5, of {"strategy": <Strategy>, "versions": {...}}), then k times:
                  uint64 length, zero padding to a file offset that is a multiple of 64,
                  the buffer's bytes

The buffers are the strategy's large arrays, pickled out of band so that taking a snapshot
copies nothing when the strategy promises to replace its arrays rather than change them
(``arrays_replaced_not_mutated``); other strategies' arrays are copied at snapshot time. This is
what lets a run write generation g's checkpoint in the background while generation g + 1 runs.
Version 1 files (no buffers, payload right after the header) are still read.

The whole strategy object is pickled, including its private random generators and, for the
pycma-backed strategies, the ``cma.CMAEvolutionStrategy`` instance: loading it in a fresh
process and continuing gives bit-identical candidates to an uninterrupted run.

Safety: the payload is a pickle. Loading goes through an unpickler that only resolves globals
from ``population``, ``cma``, a short list of numpy constructors and harmless builtins, which
stops accidents and the most common exploit shapes, but it is NOT a security boundary (pycma
and numpy objects can still be abused). Never load a checkpoint from an untrusted source.
The checksum detects truncation and corruption, not tampering.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import cma

MAGIC = b"ESSAPOP\x00"
FORMAT_VERSION = 2
_HEADER = struct.Struct("<8sIQ32s")  # magic, version, body length, sha256 of the body
_BODY_HEAD = struct.Struct("<IQ")  # buffer count, payload length
_LENGTH = struct.Struct("<Q")
_ALIGN = 64  # buffers start at file offsets divisible by 64, so loaded arrays are aligned


class CheckpointError(ValueError):
    """The file is not a readable population checkpoint (foreign, truncated, corrupt)."""


_ALLOWED_GLOBALS = {
    "builtins": {"set", "frozenset", "slice", "complex", "range", "bytearray", "dict", "list",
                 "tuple", "bool", "int", "float", "str", "bytes", "object"},
    "collections": {"OrderedDict", "defaultdict"},
    "copyreg": {"_reconstructor"},
    "numpy": {"dtype", "ndarray", "float64", "int64", "bool_"},
    "numpy._core.multiarray": {"_reconstruct", "scalar"},
    "numpy.core.multiarray": {"_reconstruct", "scalar"},
    "numpy._core.numeric": {"_frombuffer"},
    "numpy.core.numeric": {"_frombuffer"},
    "numpy.linalg": {"eigh"},
    "numpy.random._pickle": {"__bit_generator_ctor", "__randomstate_ctor", "__generator_ctor"},
    "numpy.random._mt19937": {"MT19937"},
    "numpy.random._pcg64": {"PCG64"},
    "numpy.random.bit_generator": {"__pyx_unpickle_SeedSequence", "SeedSequence"},
    "numpy.random.mtrand": {"RandomState"},
    "numpy.random._generator": {"Generator"},
}
_ALLOWED_PACKAGES = ("population", "cma")


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals a strategy checkpoint needs (see the module's safety note)."""

    def find_class(self, module: str, name: str):
        package = module.split(".", 1)[0]
        if package in _ALLOWED_PACKAGES or name in _ALLOWED_GLOBALS.get(module, ()):
            return super().find_class(module, name)
        raise CheckpointError(f"checkpoint refers to {module}.{name}, which is not allowed")


@dataclass
class Snapshot:
    """A strategy's state frozen at one moment, ready to be written by ``write_snapshot``
    (possibly in another thread, while the strategy goes on)."""

    payload: bytes
    buffers: list  # bytes-like, one per out-of-band array


def snapshot(strategy) -> Snapshot:
    """Freeze ``strategy`` now: pickle it, keeping its large arrays out of band (copied unless
    the strategy replaces arrays instead of changing them)."""
    buffers: list[pickle.PickleBuffer] = []
    payload = pickle.dumps({"strategy": strategy,
                            "versions": {"numpy": np.__version__, "cma": cma.__version__}},
                           protocol=5, buffer_callback=buffers.append)
    views = [b.raw() for b in buffers]
    if not getattr(strategy, "arrays_replaced_not_mutated", False):
        views = [bytes(v) for v in views]
    return Snapshot(payload, views)


def _body_parts(snap: Snapshot):
    """The body's pieces in file order."""
    yield _BODY_HEAD.pack(len(snap.buffers), len(snap.payload))
    yield snap.payload
    offset = _HEADER.size + _BODY_HEAD.size + len(snap.payload)  # file offset
    for buf in snap.buffers:
        offset += _LENGTH.size
        pad = -offset % _ALIGN
        yield _LENGTH.pack(len(buf)) + b"\0" * pad
        yield buf
        offset += pad + len(buf)


def write_snapshot(snap: Snapshot, path) -> None:
    """Write a snapshot to ``path`` atomically (temporary file, fsync, rename)."""
    path = Path(path)
    digest, length = hashlib.sha256(), 0
    for part in _body_parts(snap):
        digest.update(part)
        length += len(part)
    header = _HEADER.pack(MAGIC, FORMAT_VERSION, length, digest.digest())
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(header)
            for part in _body_parts(snap):
                f.write(part)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_directory(path.parent)


def save_checkpoint(strategy, path) -> None:
    """Write ``strategy`` to ``path`` atomically (temporary file, fsync, rename)."""
    write_snapshot(snapshot(strategy), path)


def load_checkpoint(path):
    """Read a strategy saved by ``save_checkpoint``; raise ``CheckpointError`` if the file is
    foreign, of another format version, truncated or corrupt. Trusted files only."""
    path = Path(path)
    data = bytearray(path.stat().st_size)  # writable: arrays loaded from it can be changed
    with open(path, "rb") as f:
        f.readinto(data)
    if len(data) < _HEADER.size or data[:len(MAGIC)] != MAGIC:
        raise CheckpointError(f"{path}: not a population checkpoint (bad magic)")
    magic, version, length, digest = _HEADER.unpack_from(data)
    if version not in (1, FORMAT_VERSION):
        raise CheckpointError(f"{path}: checkpoint format {version}, this code reads "
                              f"1 and {FORMAT_VERSION}")
    whole = memoryview(data)
    body = whole[_HEADER.size:]
    if len(body) != length:
        raise CheckpointError(f"{path}: truncated or padded checkpoint ({len(body)} body "
                              f"bytes, header says {length})")
    if hashlib.sha256(body).digest() != digest:
        raise CheckpointError(f"{path}: checksum mismatch (corrupt checkpoint)")
    if version == 1:
        return _RestrictedUnpickler(io.BytesIO(body)).load()["strategy"]
    count, payload_length = _BODY_HEAD.unpack_from(whole, _HEADER.size)
    offset = _HEADER.size + _BODY_HEAD.size  # file offsets from here on
    payload = whole[offset:offset + payload_length]
    offset += payload_length
    buffers = []
    for _ in range(count):
        (size,) = _LENGTH.unpack_from(whole, offset)
        offset += _LENGTH.size
        offset += -offset % _ALIGN
        buffers.append(whole[offset:offset + size])
        offset += size
    return _RestrictedUnpickler(io.BytesIO(payload), buffers=buffers).load()["strategy"]


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable; some filesystems do not support it, which is harmless."""
    try:
        fd = os.open(directory or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
