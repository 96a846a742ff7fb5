"""Exact checkpoints of a strategy: header + checksum + pickle payload, written atomically.

File layout (all integers little-endian)::

    offset  size  field
    0       8     magic  b"ESSAPOP\\0"
    8       4     format version (uint32), currently 3
    12      8     body length in bytes (uint64)
    20      32    SHA-256 of the body
    52      n     body: uint32 buffer count k, uint64 payload length, the payload (a pickle,
                  protocol 5, of {"strategy": <Strategy>, "versions": {...}}), then k times
                  uint8 kind, uint64 length and
                  kind 0 (inline): zero padding to a file offset that is a multiple of 64,
                                   the buffer's bytes;
                  kind 1 (shared): the buffer's SHA-256; its bytes are the file
                                   ``arrays/<sha256 in hex>`` beside the checkpoint

The buffers are the strategy's large arrays, pickled out of band so that taking a snapshot
copies nothing when the strategy promises to replace its arrays rather than change them
(``arrays_replaced_not_mutated``); other strategies' arrays are copied at snapshot time. This is
what lets a run write generation g's checkpoint in the background while generation g + 1 runs.
Shared buffers (written with an :class:`ArrayFiles`) are written once and referenced by every
later checkpoint that holds the same array: at d = 7,168 the covariance and its factor (820 MB)
change only at a factor refresh, so most checkpoints add a few MB. Version 2 files (inline
buffers without the kind byte) and version 1 files (no buffers) are still read.

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
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import cma

MAGIC = b"ESSAPOP\x00"
FORMAT_VERSION = 3
_HEADER = struct.Struct("<8sIQ32s")  # magic, version, body length, sha256 of the body
_BODY_HEAD = struct.Struct("<IQ")  # buffer count, payload length
_LENGTH = struct.Struct("<Q")  # format 2's buffer entry
_ENTRY = struct.Struct("<BQ")  # kind (0 inline, 1 shared), length
_INLINE, _SHARED = 0, 1
ARRAY_DIR = "arrays"  # shared buffers, beside the checkpoint files
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


class ArrayFiles:
    """The shared buffers of the checkpoints in one folder: ``arrays/<sha256>``, each written
    once (temporary file, fsync, rename) and then referenced by digest.

    A buffer is known again without hashing when it comes from the same array object as before
    (kept as a weak reference): a snapshot of an ``arrays_replaced_not_mutated`` strategy shares
    the strategy's arrays, which never change. Other buffers are hashed, and written only if no
    file has that digest yet. ``retain`` deletes the files no kept checkpoint refers to.
    """

    def __init__(self, folder, min_bytes: int = 1 << 20):
        self.folder = Path(folder)
        self.min_bytes = min_bytes  # smaller buffers stay inline
        self.written = 0  # files written so far (a test's and a log's figure)
        self._known: dict[int, tuple] = {}  # id(array) -> (weakref to it, digest)

    def put(self, buf) -> bytes:
        """The digest of ``buf``, writing its file if there is none yet."""
        owner = buf.obj if isinstance(buf, memoryview) else None
        hit = self._known.get(id(owner)) if owner is not None else None
        if hit is not None and hit[0]() is owner:
            return hit[1]
        digest = hashlib.sha256(buf).digest()
        path = self.folder / digest.hex()
        if not path.is_file():
            self.folder.mkdir(parents=True, exist_ok=True)
            _write_atomic(path, [buf])
            self.written += 1
        try:
            self._known[id(owner)] = (weakref.ref(owner), digest)
        except TypeError:  # bytes (copied buffers) take no weak reference: hashed each time
            pass
        return digest

    def retain(self, digests: set) -> None:
        """Delete every file (and leftover temporary file) whose digest is not in ``digests``."""
        keep = {d.hex() for d in digests}
        self._known = {k: v for k, v in self._known.items() if v[0]() is not None}
        if not self.folder.is_dir():
            return
        for path in self.folder.iterdir():
            if path.name not in keep:
                path.unlink(missing_ok=True)


def _body_parts(snap: Snapshot, shared: dict):
    """The body's pieces in file order; ``shared`` maps buffer index -> digest of its file."""
    yield _BODY_HEAD.pack(len(snap.buffers), len(snap.payload))
    yield snap.payload
    offset = _HEADER.size + _BODY_HEAD.size + len(snap.payload)  # file offset
    for i, buf in enumerate(snap.buffers):
        if i in shared:
            yield _ENTRY.pack(_SHARED, len(buf)) + shared[i]
            offset += _ENTRY.size + len(shared[i])
            continue
        offset += _ENTRY.size
        pad = -offset % _ALIGN
        yield _ENTRY.pack(_INLINE, len(buf)) + b"\0" * pad
        yield buf
        offset += pad + len(buf)


def write_snapshot(snap: Snapshot, path, arrays: ArrayFiles | None = None) -> None:
    """Write a snapshot to ``path`` atomically (temporary file, fsync, rename). With ``arrays``
    (an :class:`ArrayFiles` of the folder ``arrays`` beside ``path``), buffers of at least
    ``arrays.min_bytes`` go to shared files, written first, and the checkpoint refers to them."""
    path = Path(path)
    shared = {}
    if arrays is not None:
        if arrays.folder != path.parent / ARRAY_DIR:
            raise ValueError(f"shared arrays of {path} must be in {path.parent / ARRAY_DIR}")
        shared = {i: arrays.put(buf) for i, buf in enumerate(snap.buffers)
                  if len(buf) >= arrays.min_bytes}
    digest, length = hashlib.sha256(), 0
    for part in _body_parts(snap, shared):
        digest.update(part)
        length += len(part)
    header = _HEADER.pack(MAGIC, FORMAT_VERSION, length, digest.digest())
    _write_atomic(path, [header, *_body_parts(snap, shared)])


def _write_atomic(path: Path, parts) -> None:
    """Write ``parts`` to ``path``: temporary file, fsync, rename, fsync of the folder."""
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            for part in parts:
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


def shared_digests(path) -> set:
    """The digests of the shared buffers a checkpoint file refers to (reads its entry table)."""
    with open(path, "rb") as f:
        head = f.read(_HEADER.size + _BODY_HEAD.size)
        if len(head) < _HEADER.size + _BODY_HEAD.size or head[:len(MAGIC)] != MAGIC:
            raise CheckpointError(f"{path}: not a population checkpoint (bad magic)")
        if _HEADER.unpack_from(head)[1] != FORMAT_VERSION:
            return set()  # older formats hold every buffer inline
        count, payload_length = _BODY_HEAD.unpack_from(head, _HEADER.size)
        offset = f.seek(payload_length, os.SEEK_CUR)
        digests = set()
        for _ in range(count):
            kind, size = _ENTRY.unpack(f.read(_ENTRY.size))
            offset += _ENTRY.size
            if kind == _SHARED:
                digests.add(f.read(32))
                offset += 32
            else:
                offset += -offset % _ALIGN + size
                f.seek(offset)
        return digests


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
    if version not in (1, 2, FORMAT_VERSION):
        raise CheckpointError(f"{path}: checkpoint format {version}, this code reads "
                              f"1 to {FORMAT_VERSION}")
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
        if version == 2:
            kind, (size,) = _INLINE, _LENGTH.unpack_from(whole, offset)
            offset += _LENGTH.size
        else:
            kind, size = _ENTRY.unpack_from(whole, offset)
            offset += _ENTRY.size
        if kind == _SHARED:
            buffers.append(_read_shared(path, bytes(whole[offset:offset + 32]), size))
            offset += 32
            continue
        offset += -offset % _ALIGN
        buffers.append(whole[offset:offset + size])
        offset += size
    return _RestrictedUnpickler(io.BytesIO(payload), buffers=buffers).load()["strategy"]


def _read_shared(path: Path, digest: bytes, size: int) -> bytearray:
    """A shared buffer of checkpoint ``path``, checked against its length and digest."""
    file = path.parent / ARRAY_DIR / digest.hex()
    if not file.is_file():
        raise CheckpointError(f"{path}: its array file {file} is missing")
    data = bytearray(file.stat().st_size)  # writable, like the inline buffers
    with open(file, "rb") as f:
        f.readinto(data)
    if len(data) != size or hashlib.sha256(data).digest() != digest:
        raise CheckpointError(f"{file}: corrupt array file (length or checksum mismatch, "
                              f"needed by {path})")
    return data


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
