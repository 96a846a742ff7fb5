"""Write a safetensors file straight from one flat buffer, with a header computed once.

A candidate adapter is materialized into one contiguous buffer whose tensor offsets never change
(the layout is fixed by the search space), so the file is just `len | header | buffer`: one write,
no per-tensor copies. The format (8-byte little-endian header length, JSON header with dtype, shape
and data_offsets relative to the data start, then raw little-endian data) is safetensors' own, so
safetensors, PEFT and vLLM read these files like any other.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch

from essa.atomic import atomic_write

_DTYPE_NAMES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}
# numpy has no bfloat16: expose 2-byte types as int16 to get at their raw bytes.
_RAW_VIEW = {torch.float32: torch.float32, torch.bfloat16: torch.int16,
             torch.float16: torch.float16}


def build_header(entries: list[tuple[str, tuple[int, ...]]], dtype: torch.dtype) -> bytes:
    """Length prefix + JSON header for tensors stored back to back in `entries` order."""
    if dtype not in _DTYPE_NAMES:
        raise ValueError(f"unsupported dtype {dtype}; use one of {list(_DTYPE_NAMES)}")
    itemsize = torch.empty((), dtype=dtype).element_size()
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for key, shape in entries:
        nbytes = itemsize
        for n in shape:
            nbytes *= n
        header[key] = {"dtype": _DTYPE_NAMES[dtype], "shape": list(shape),
                       "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # pad with spaces so the data starts 8-byte aligned
    return struct.pack("<Q", len(text)) + text


def write_flat(path: str | Path, header: bytes, buffer: torch.Tensor) -> None:
    """Write header then raw bytes; atomic (rename), so a reader never sees half a file."""
    if not buffer.is_contiguous() or buffer.device.type != "cpu":
        raise ValueError("buffer must be a contiguous CPU tensor")
    raw = buffer.view(_RAW_VIEW[buffer.dtype]).numpy()
    atomic_write(path, [header, memoryview(raw).cast("B")])
