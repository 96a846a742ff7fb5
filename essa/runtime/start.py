"""The starting point of a run: the source adapter folder, its search space, a new strategy."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger("essa")


def starting_adapter(config, run_dir: Path) -> Path:
    """adapter.init: 'sft' -> the cached warm start, 'fresh' -> a random adapter in the run
    directory, anything else -> an existing PEFT folder (a missing one is an error naming it)."""
    init = config.adapter.init
    if init == "sft":
        from essa.sft import ensure_warm_start
        return Path(ensure_warm_start(config))
    if init == "fresh":
        folder = run_dir / "start_adapter"
        if not (folder / "adapter_model.safetensors").is_file():
            from essa.adapters.init import write_fresh_adapter
            from essa.models import resolve_model_path
            write_fresh_adapter(resolve_model_path(config.model.path), folder, rank=config.adapter.rank,
                                alpha=config.adapter.alpha, target_modules=config.adapter.target_modules,
                                rel_norm=0.02, seed=config.seed)
        return folder
    folder = Path(init).expanduser()
    if not (folder / "adapter_config.json").is_file():
        raise FileNotFoundError(f"adapter.init: {folder} is not a PEFT adapter folder "
                                f"(no adapter_config.json); use 'sft', 'fresh' or an adapter folder")
    return folder


def initial_point(space, parametrization: str) -> np.ndarray:
    """z = 0 (relative: s = s0 * (1 + z)) or s0 itself (absolute), shape (d,)."""
    return np.zeros(space.dim) if parametrization == "relative" else space.initial_vector()


def singular_values(space, x: np.ndarray, parametrization: str) -> np.ndarray:
    """The adapter's singular values of search vector ``x``."""
    return space.vector_from_relative(x) if parametrization == "relative" else np.asarray(x)


def new_strategy(config, space):
    import population
    return population.make_strategy(config.search.strategy, initial_point(space, config.search.parametrization),
                                    sigma0=config.search.sigma0, popsize=config.search.popsize,
                                    seed=config.seed)
