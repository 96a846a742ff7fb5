"""Exact checkpoints of a strategy: header + checksum + pickle payload, written atomically.

File layout (all integers little-endian)::

    offset  size  field
    0       8     magic  b"ESSAPOP\\0"
    8       4     format version (uint32), currently 1
    12      8     payload length in bytes (uint64)
    20      32    SHA-256 of the payload
    52      n     payload: pickle (protocol 5) of {"strategy": <Strategy>, "versions": {...}}

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
from pathlib import Path

import numpy as np
import cma

MAGIC = b"ESSAPOP\x00"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<8sIQ32s")  # magic, version, payload length, sha256


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


def save_checkpoint(strategy, path) -> None:
    """Write ``strategy`` to ``path`` atomically (temporary file, fsync, rename)."""
    path = Path(path)
    payload = pickle.dumps({"strategy": strategy,
                            "versions": {"numpy": np.__version__, "cma": cma.__version__}},
                           protocol=5)
    header = _HEADER.pack(MAGIC, FORMAT_VERSION, len(payload), hashlib.sha256(payload).digest())
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(header)
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_directory(path.parent)


def load_checkpoint(path):
    """Read a strategy saved by ``save_checkpoint``; raise ``CheckpointError`` if the file is
    foreign, of another format version, truncated or corrupt. Trusted files only."""
    data = Path(path).read_bytes()
    if len(data) < _HEADER.size or data[:len(MAGIC)] != MAGIC:
        raise CheckpointError(f"{path}: not a population checkpoint (bad magic)")
    magic, version, length, digest = _HEADER.unpack_from(data)
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {version}, this code reads "
                              f"{FORMAT_VERSION}")
    payload = data[_HEADER.size:]
    if len(payload) != length:
        raise CheckpointError(f"{path}: truncated or padded checkpoint ({len(payload)} payload "
                              f"bytes, header says {length})")
    if hashlib.sha256(payload).digest() != digest:
        raise CheckpointError(f"{path}: checksum mismatch (corrupt checkpoint)")
    return _RestrictedUnpickler(io.BytesIO(payload)).load()["strategy"]


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
