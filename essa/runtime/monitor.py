"""Optional metric sinks (runtime.report_to): TensorBoard and Weights & Biases, imported lazily."""

from __future__ import annotations

import importlib
from pathlib import Path

from essa.config import to_dict


class MonitorError(RuntimeError):
    """A listed sink cannot be used (its package is missing)."""


def _require(module: str, package: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MonitorError(f"runtime.report_to: {package} needs the '{package}' package "
                           f"(pip install {package}): {exc}") from None


def _scalars(record: dict) -> tuple[dict, int]:
    """The record's numbers keyed 'phase/name', and its generation (the step)."""
    phase = record.get("phase", "search")
    return ({f"{phase}/{k}": v for k, v in record.items()
             if isinstance(v, (int, float)) and k not in ("generation", "time")}, record.get("generation", 0))


class TensorBoardSink:
    def __init__(self, run_dir: Path):
        self.writer = _require("torch.utils.tensorboard", "tensorboard").SummaryWriter(str(run_dir / "tensorboard"))

    def log(self, record: dict) -> None:
        scalars, step = _scalars(record)
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    def __init__(self, run_dir: Path, config):
        self.run = _require("wandb", "wandb").init(name=config.name, dir=str(run_dir), config=to_dict(config))

    def log(self, record: dict) -> None:
        scalars, step = _scalars(record)
        self.run.log(scalars, step=step)

    def close(self) -> None:
        self.run.finish()


def make_sinks(config, run_dir: Path) -> list:
    """The sinks listed in runtime.report_to (fails at start-up, before any engine loads)."""
    return [TensorBoardSink(run_dir) if name == "tensorboard" else WandbSink(run_dir, config)
            for name in config.runtime.report_to]
