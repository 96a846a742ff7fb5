"""SVD-LoRA adapters: the map between a vector of singular values and a loadable LoRA adapter.

Start with `SvdSpace.from_folder(path, alpha_frac, parametrization)`; see docs/search_space.md.
"""

from essa.adapters.compat import check_compatible, expected_shapes
from essa.adapters.export import export_adapter, export_merged
from essa.adapters.init import write_fresh_adapter
from essa.adapters.layout import Slice, search_dim, searched_count
from essa.adapters.peft_io import (AdapterError, LoraAdapter, LoraCandidate, LoraModule, peft_tensors,
                                   read_adapter, write_adapter)
from essa.adapters.svd_space import SvdSpace

__all__ = [
    "AdapterError", "LoraAdapter", "LoraCandidate", "LoraModule", "Slice", "SvdSpace",
    "check_compatible", "expected_shapes", "export_adapter", "export_merged", "peft_tensors",
    "read_adapter", "search_dim", "searched_count", "write_adapter", "write_fresh_adapter",
]
