"""Sweep files: a base config, a grid of ``section.field: [values]`` and fixed overrides.

    base: ../configs/qwen2.5-math-7b-gsm8k.yaml    # relative to the sweep file
    name: qwen7b-table7                            # optional; default: the base config's name
    grid:                                          # cartesian product, in this order
      adapter.rank: [8, 32]
      search.popsize: [24, 48]
    set:                                           # optional: the same for every cell
      search.generations: 40
    labels:                                        # optional: short names in run names
      adapter.rank: r
    slurm:                                         # optional: sbatch options of the array job
      nodes: 2

Cells are numbered 0..n-1 in ``itertools.product`` order over the grid keys as written: the last
key varies fastest. Cell i runs ``essa-train --config BASE --set <set...> --set <grid values...>
--set name=<name>-<label>``, so every cell writes its own run directory.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from essa.config import load_config

ALLOWED_KEYS = ("base", "name", "output_dir", "grid", "set", "labels", "slurm")
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


class SweepError(ValueError):
    """A problem with a sweep file or a cell index that the user can fix; the message says how."""


@dataclass(frozen=True)
class Cell:
    """One point of the grid: its index, values, run name and the overrides that make it."""

    index: int
    values: dict[str, Any]  # grid key -> value, in grid order
    label: str  # e.g. "c03-r8-pop48"
    run_name: str  # "<sweep name>-<label>"
    overrides: list[str]  # "section.field=value" for --set, fixed ones first, name last


@dataclass
class Sweep:
    """A parsed sweep file (paths resolved, grid checked) and its expansion into cells."""

    path: Path
    base: Path
    name: str
    grid: dict[str, list[Any]]
    fixed: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    slurm: dict[str, Any] = field(default_factory=dict)
    output_dir: str = ""

    @property
    def size(self) -> int:
        """Number of cells (product of the grid's list lengths)."""
        n = 1
        for values in self.grid.values():
            n *= len(values)
        return n

    def cells(self) -> list[Cell]:
        """All cells in their fixed order (the last grid key varies fastest)."""
        keys = list(self.grid)
        width = max(2, len(str(self.size - 1)))
        out = []
        for i, combo in enumerate(itertools.product(*(self.grid[k] for k in keys))):
            values = dict(zip(keys, combo))
            label = "-".join([f"c{i:0{width}d}"] + [f"{self.short(k)}{label_value(v)}"
                                                    for k, v in values.items()])
            run_name = f"{self.name}-{label}"
            overrides = [f"{k}={yaml_value(v)}" for k, v in self.fixed.items()]
            overrides += [f"{k}={yaml_value(v)}" for k, v in values.items()]
            if self.output_dir:
                overrides.append(f"output_dir={yaml_value(self.output_dir)}")
            overrides.append(f"name={yaml_value(run_name)}")
            out.append(Cell(i, values, label, run_name, overrides))
        return out

    def cell(self, index: int | None) -> Cell:
        """Cell ``index``; a missing or out-of-range index is an error naming the valid range."""
        if index is None:
            raise SweepError(f"no cell index: pass --index I or set SLURM_ARRAY_TASK_ID "
                             f"(valid: 0-{self.size - 1}, {self.size} cells in {self.path})")
        if not 0 <= index < self.size:
            raise SweepError(f"cell index {index} is out of range: {self.path} has {self.size} "
                             f"cells, valid indices are 0-{self.size - 1}")
        return self.cells()[index]

    def short(self, key: str) -> str:
        """The name of a grid key inside run names: its label, else its last component."""
        return self.labels.get(key, key.rsplit(".", 1)[-1])

    def base_overrides(self) -> list[str]:
        """The fixed overrides alone (the base config as every cell shares it)."""
        return [f"{k}={yaml_value(v)}" for k, v in self.fixed.items()]


def yaml_value(value: Any) -> str:
    """The text of a value for ``--set key=text`` that reads back (yaml.safe_load) as ``value``."""
    if isinstance(value, str):
        try:
            if yaml.safe_load(value) == value and "\n" not in value:
                return value
        except yaml.YAMLError:
            pass
    return json.dumps(value)  # JSON is YAML: quoted strings, numbers, true/false, [lists]


def label_value(value: Any) -> str:
    """A value as it appears in a run name: no '/', spaces or other characters shells dislike."""
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, (list, tuple)):
        text = "+".join(label_value(v) for v in value)
    else:
        text = str(value)
    return _UNSAFE.sub("_", text).strip("_") or "none"


def load_sweep(path: str | Path) -> Sweep:
    """Read and check a sweep file; errors name the file and the bad key."""
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"sweep file not found: {path}")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise SweepError(f"{path}: the top level must be a mapping with keys {', '.join(ALLOWED_KEYS)}")
    unknown = sorted(set(raw) - set(ALLOWED_KEYS))
    if unknown:
        raise SweepError(f"{path}: unknown keys {unknown}; allowed: {', '.join(ALLOWED_KEYS)}")
    if not raw.get("base"):
        raise SweepError(f"{path}: 'base' (the base config, relative to the sweep file) is required")
    base = (path.parent / str(raw["base"])).resolve()
    if not base.is_file():
        raise SweepError(f"{path}: base config not found: {base} (paths are relative to the sweep file)")
    grid = _mapping(raw.get("grid"), path, "grid")
    if not grid:
        raise SweepError(f"{path}: 'grid' must map at least one section.field to a list of values")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SweepError(f"{path}: grid.{key} must be a non-empty list of values, got {values!r}")
        if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
            raise SweepError(f"{path}: grid.{key} lists a value twice: {values}")
    fixed = _mapping(raw.get("set"), path, "set")
    both = sorted(set(grid) & set(fixed))
    if both:
        raise SweepError(f"{path}: {both} appear in both 'grid' and 'set'; keep each in one place")
    if "name" in grid or "name" in fixed:
        raise SweepError(f"{path}: the run name is set per cell; use the sweep's 'name' key instead")
    labels = {str(k): str(v) for k, v in _mapping(raw.get("labels"), path, "labels").items()}
    shorts = [labels.get(k, k.rsplit(".", 1)[-1]) for k in grid]
    if len(set(shorts)) != len(shorts):
        raise SweepError(f"{path}: grid keys share a short name {shorts}; give them 'labels'")
    name = str(raw.get("name") or _base_name(base))
    if "/" in name or not name:
        raise SweepError(f"{path}: name must be a non-empty folder name without '/', got {name!r}")
    return Sweep(path=path, base=base, name=name, grid=grid, fixed=fixed,
                 labels=labels,
                 slurm=_mapping(raw.get("slurm"), path, "slurm"),
                 output_dir=str(raw.get("output_dir") or ""))


def load_cell_config(sweep: Sweep, cell: Cell):
    """The validated RunConfig of one cell (raises essa.config.ConfigError naming the field)."""
    return load_config(sweep.base, cell.overrides)


def display_path(path: Path) -> str:
    """``path`` relative to the working directory when it is below it (shorter commands)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _mapping(value, path: Path, key: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SweepError(f"{path}: '{key}' must be a mapping, got {value!r}")
    return {str(k): v for k, v in value.items()}


def _base_name(base: Path) -> str:
    """The base config's ``name`` key, without validating the rest of it."""
    raw = yaml.safe_load(base.read_text()) or {}
    return str(raw.get("name") or "essa") if isinstance(raw, dict) else "essa"
