"""Optional metric sinks (runtime.report_to): TensorBoard and Weights & Biases, imported lazily."""

from __future__ import annotations

from pathlib import Path


class MonitorError(RuntimeError):
    """A listed sink cannot be used (its package is missing)."""


class TensorBoardSink:
    def __init__(self, run_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise MonitorError("runtime.report_to: tensorboard needs the 'tensorboard' package "
                               f"(pip install tensorboard): {exc}") from None
        self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def log(self, record: dict) -> None:
        step = record.get("generation", 0)
        for key, value in record.items():
            if isinstance(value, (int, float)) and key not in ("generation", "time"):
                self.writer.add_scalar(f"{record.get('phase', 'search')}/{key}", value, step)

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    def __init__(self, run_dir: Path, config_dict: dict, name: str):
        try:
            import wandb
        except ImportError:
            raise MonitorError("runtime.report_to: wandb needs the 'wandb' package "
                               "(pip install wandb)") from None
        self.run = wandb.init(name=name, dir=str(run_dir), config=config_dict)

    def log(self, record: dict) -> None:
        phase = record.get("phase", "search")
        self.run.log({f"{phase}/{k}": v for k, v in record.items() if isinstance(v, (int, float))},
                     step=record.get("generation", 0))

    def close(self) -> None:
        self.run.finish()


def make_sinks(config, run_dir: Path) -> list:
    """The sinks listed in runtime.report_to (fails at start-up, before any engine loads)."""
    from essa.config import to_dict
    sinks = []
    for name in config.runtime.report_to:
        sinks.append(TensorBoardSink(run_dir) if name == "tensorboard"
                     else WandbSink(run_dir, to_dict(config), config.name))
    return sinks
