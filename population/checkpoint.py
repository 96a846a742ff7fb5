"""Exact checkpoints of a strategy: header, checksum and pickle, written atomically.

Layout (format 4): docs/population.md, "Checkpoint format". The whole strategy is pickled, its
random generators and pycma's object included, so loading it in a fresh process and continuing
gives bit-identical candidates. The large arrays go out of band: ``snapshot`` freezes a strategy
without copying them when it replaces its arrays rather than changing them
(``arrays_replaced_not_mutated``), so a run can write generation g's checkpoint while g + 1
runs, and with an :class:`ArrayFiles` an array that many checkpoints hold is written once (at
d = 7,168 ``cmaes-numpy``'s covariance and factor, 616 MB, change only at a factorisation).

Safety: loading resolves only globals from ``population``, ``cma``, a few numpy constructors and
plain builtins. That stops accidents and the common exploit shapes, but it is NOT a security
boundary (pycma and numpy objects can still be abused): never load a checkpoint from an
untrusted source. The checksum detects truncation and corruption, not tampering.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pickle
import struct
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import cma

from population.atomic_file import write_atomic

MAGIC = b"ESSAPOP\x00"
# 4: the layout of 3, with the synchronous cmaes-numpy state (whose pickled attributes changed).
FORMAT_VERSION = 4
_HEADER = struct.Struct("<8sIQ32s")  # magic, version, body length, sha256 of the body
_BODY_HEAD = struct.Struct("<IQ")  # buffer count, payload length
_ENTRY = struct.Struct("<BQ")  # kind (0 inline, 1 shared), length
_INLINE, _SHARED = 0, 1
ARRAY_DIR = "arrays"  # shared buffers, beside the checkpoint files
_ALIGN = 64  # inline buffers start at file offsets divisible by 64, so loaded arrays are aligned

# Globals outside population and cma that a checkpoint may name (numpy < 2 says numpy.core).
_ALLOWED_GLOBALS = {
    "builtins": "set frozenset slice complex range bytearray dict list tuple bool int float str "
                "bytes object",
    "collections": "OrderedDict defaultdict",
    "copyreg": "_reconstructor",
    "numpy": "dtype ndarray float64 int64 bool_",
    "numpy._core.multiarray": "_reconstruct scalar",
    "numpy._core.numeric": "_frombuffer",
    "numpy.linalg": "eigh",
    "numpy.random._pickle": "__bit_generator_ctor __randomstate_ctor __generator_ctor",
    "numpy.random._mt19937": "MT19937", "numpy.random._pcg64": "PCG64",
    "numpy.random.bit_generator": "__pyx_unpickle_SeedSequence SeedSequence",
    "numpy.random.mtrand": "RandomState", "numpy.random._generator": "Generator",
}


class CheckpointError(ValueError):
    """The file is not a readable population checkpoint (foreign, truncated, corrupt)."""


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals a strategy checkpoint needs (see the module's safety note)."""

    def find_class(self, module: str, name: str):
        allowed = _ALLOWED_GLOBALS.get(module.replace("numpy.core.", "numpy._core."), "")
        if module.split(".", 1)[0] in ("population", "cma") or name in allowed.split():
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
    return Snapshot(payload, views if strategy.arrays_replaced_not_mutated
                    else [bytes(v) for v in views])


class ArrayFiles:
    """The shared buffers of the checkpoints in one folder: ``arrays/<sha256>``, each written
    once (atomically) and then referenced by digest.

    A buffer from the same array object as before (kept as a weak reference) is known again
    without hashing: an ``arrays_replaced_not_mutated`` strategy never changes such an array.
    ``retain`` deletes the files no kept checkpoint refers to.
    """

    def __init__(self, folder, min_bytes: int = 1 << 20):
        self.folder = Path(folder)
        self.min_bytes = min_bytes  # smaller buffers stay inline
        self.written = 0  # files written so far (a test's and a log's figure)
        self._known: dict[int, tuple] = {}  # id(array) -> (weakref to it, digest)

    def put(self, buf) -> bytes:
        """The digest of ``buf``, writing its file if there is none yet."""
        owner = getattr(buf, "obj", None)  # the array behind a zero-copy view, else None
        hit = self._known.get(id(owner))  # None is never known: it takes no weak reference
        if hit is not None and hit[0]() is owner:
            return hit[1]
        digest = hashlib.sha256(buf).digest()
        path = self.folder / digest.hex()
        if not path.is_file():
            self.folder.mkdir(parents=True, exist_ok=True)
            write_atomic(path, [buf])
            self.written += 1
        with contextlib.suppress(TypeError):  # copied buffers (bytes) take no weak reference
            self._known[id(owner)] = (weakref.ref(owner), digest)
        return digest

    def retain(self, digests: set) -> None:
        """Delete every file (and leftover temporary file) whose digest is not in ``digests``."""
        keep = {d.hex() for d in digests}
        self._known = {k: v for k, v in self._known.items() if v[0]() is not None}
        for path in self.folder.iterdir() if self.folder.is_dir() else ():
            if path.name not in keep:
                path.unlink(missing_ok=True)


def _body_parts(snap: Snapshot, shared: dict) -> list:
    """The body's pieces in file order; ``shared`` maps buffer index -> digest of its file."""
    parts = [_BODY_HEAD.pack(len(snap.buffers), len(snap.payload)), snap.payload]
    offset = _HEADER.size + _BODY_HEAD.size + len(snap.payload)  # file offset
    for i, buf in enumerate(snap.buffers):
        if i in shared:
            parts.append(_ENTRY.pack(_SHARED, len(buf)) + shared[i])
            offset += len(parts[-1])
        else:
            pad = -(offset + _ENTRY.size) % _ALIGN
            parts += [_ENTRY.pack(_INLINE, len(buf)) + b"\0" * pad, buf]
            offset += _ENTRY.size + pad + len(buf)
    return parts


def write_snapshot(snap: Snapshot, path, arrays: ArrayFiles | None = None) -> None:
    """Write a snapshot to ``path`` atomically. With ``arrays`` (an :class:`ArrayFiles` of the
    folder ``arrays`` beside ``path``), buffers of at least ``arrays.min_bytes`` go to shared
    files, written first, and the checkpoint refers to them."""
    path = Path(path)
    shared = {}
    if arrays is not None:
        if arrays.folder != path.parent / ARRAY_DIR:
            raise ValueError(f"shared arrays of {path} must be in {path.parent / ARRAY_DIR}")
        shared = {i: arrays.put(buf) for i, buf in enumerate(snap.buffers)
                  if len(buf) >= arrays.min_bytes}
    parts, digest = _body_parts(snap, shared), hashlib.sha256()
    for part in parts:
        digest.update(part)
    length = sum(len(part) for part in parts)
    write_atomic(path, [_HEADER.pack(MAGIC, FORMAT_VERSION, length, digest.digest()), *parts])


def save_checkpoint(strategy, path) -> None:
    """Write ``strategy`` to ``path`` atomically (temporary file, fsync, rename)."""
    write_snapshot(snapshot(strategy), path)


def _entries(read_at, count: int, offset: int):
    """(length, digest, file offset) of each buffer: digest for a shared one, offset of the
    bytes for an inline one, else None; ``read_at(offset, n)`` reads the checkpoint file and
    ``offset`` is that of the first entry."""
    for _ in range(count):
        kind, size = _ENTRY.unpack(read_at(offset, _ENTRY.size))
        offset += _ENTRY.size
        if kind == _SHARED:
            yield size, bytes(read_at(offset, 32)), None
            offset += 32
        else:
            offset += -offset % _ALIGN
            yield size, None, offset
            offset += size


def shared_digests(path) -> set:
    """The digests of the shared buffers a checkpoint file refers to (reads its entry table)."""
    with open(path, "rb") as f:
        def read_at(offset: int, n: int) -> bytes:
            f.seek(offset)
            return f.read(n)

        head = read_at(0, _HEADER.size + _BODY_HEAD.size)
        _check_header(path, head)
        count, payload_length = _BODY_HEAD.unpack_from(head, _HEADER.size)
        return {digest for _, digest, _ in _entries(read_at, count, len(head) + payload_length)
                if digest is not None}


def load_checkpoint(path):
    """Read a strategy saved by ``save_checkpoint``; raise ``CheckpointError`` if the file is
    foreign, of another format version, truncated or corrupt. Trusted files only."""
    path = Path(path)
    whole = memoryview(_read_writable(path))  # writable: arrays loaded from it can be changed
    _check_header(path, whole)
    _, _, length, digest = _HEADER.unpack_from(whole)
    body = whole[_HEADER.size:]
    if len(body) != length:
        raise CheckpointError(f"{path}: truncated or padded checkpoint ({len(body)} body "
                              f"bytes, header says {length})")
    if hashlib.sha256(body).digest() != digest:
        raise CheckpointError(f"{path}: checksum mismatch (corrupt checkpoint)")
    count, payload_length = _BODY_HEAD.unpack_from(whole, _HEADER.size)
    start = _HEADER.size + _BODY_HEAD.size
    entries = _entries(lambda at, n: whole[at:at + n], count, start + payload_length)
    buffers = [whole[at:at + size] if digest is None else _read_shared(path, digest, size)
               for size, digest, at in entries]
    payload = io.BytesIO(whole[start:start + payload_length])
    return _RestrictedUnpickler(payload, buffers=buffers).load()["strategy"]


def _check_header(path, head) -> None:
    """Refuse a file that does not start with a format-3 header (``head``: its first bytes)."""
    if len(head) < _HEADER.size or head[:len(MAGIC)] != MAGIC:
        raise CheckpointError(f"{path}: not a population checkpoint (bad magic)")
    version = _HEADER.unpack_from(head)[1]
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {version}, this code reads only "
                              f"format {FORMAT_VERSION} (resume it with the version that wrote it)")


def _read_writable(path) -> bytearray:
    data = bytearray(os.path.getsize(path))
    with open(path, "rb") as f:
        f.readinto(data)
    return data


def _read_shared(path: Path, digest: bytes, size: int) -> bytearray:
    """A shared buffer of checkpoint ``path``, checked against its length and digest."""
    file = path.parent / ARRAY_DIR / digest.hex()
    if not file.is_file():
        raise CheckpointError(f"{path}: its array file {file} is missing")
    data = _read_writable(file)
    if len(data) != size or hashlib.sha256(data).digest() != digest:
        raise CheckpointError(f"{file}: corrupt array file (length or checksum mismatch, "
                              f"needed by {path})")
    return data
