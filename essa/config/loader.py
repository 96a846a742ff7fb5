"""YAML + ``--set`` overrides -> a validated :class:`RunConfig`, and back to YAML.

Unknown keys are errors that name the key and suggest close matches; a value of the wrong type or
outside its allowed set names the field and what is allowed. Values are parsed as YAML scalars
(never evaluated as code).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from essa.config.schema import ConfigError, RunConfig
from population.budget import split_budget


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config (or start from defaults), apply ``a.b=value`` overrides, validate."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        with open(path) as f:
            loaded = yaml.safe_load(f)
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections, got "
                              f"{type(loaded).__name__}")
        raw = loaded
    for item in overrides or []:
        apply_override(raw, item)
    apply_preset(raw)
    apply_budget(raw)
    config = from_dict(RunConfig, raw)
    config.validate()
    return config


PAPER_PRESET = {("search", "mirrored"): False, ("search", "mean_lr"): 1.0,
                ("fitness", "prompt_sampling"): "uniform", ("engine", "stop_at_answer"): False,
                ("runtime", "select_adapter"): False}
"""What ``search.preset: paper`` sets: the paper's method (fields set explicitly win)."""


def apply_preset(raw: dict) -> None:
    """Fill the fields of ``search.preset`` that the config and overrides left unset."""
    preset = (raw.get("search") or {}).get("preset", "essa")
    if preset != "paper":
        return  # "essa" is the schema's defaults; a wrong name is reported by from_dict
    for (section, key), value in PAPER_PRESET.items():
        node = raw.setdefault(section, {})
        if isinstance(node, dict):
            node.setdefault(key, value)


def apply_budget(raw: dict) -> None:
    """``search.evaluations_per_generation`` > 0: derive popsize and prompts per candidate."""
    search, fitness = raw.get("search") or {}, raw.get("fitness") or {}
    budget = search.get("evaluations_per_generation", 0) if isinstance(search, dict) else 0
    if not isinstance(budget, int) or isinstance(budget, bool) or budget <= 0:
        return  # 0, or a wrong type that from_dict reports
    taken = [name for name, node, key in (("search.popsize", search, "popsize"),
                                          ("fitness.prompts_per_candidate", fitness, "prompts_per_candidate"))
             if isinstance(node, dict) and key in node]
    if taken:
        raise ConfigError(f"search.evaluations_per_generation sets {' and '.join(taken)}: set either "
                          f"the budget or {' and '.join(taken)}, not both")
    mirrored = search.get("mirrored", True) is not False
    popsize, per_candidate = split_budget(budget, mirrored)
    raw.setdefault("search", {})["popsize"] = popsize
    raw.setdefault("fitness", {})["prompts_per_candidate"] = per_candidate


def apply_override(raw: dict, item: str) -> None:
    """Set ``section.field=value`` in a raw (not yet typed) config mapping."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r}: expected the form section.field=value")
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {part} is not a section")
    node[parts[-1]] = yaml.safe_load(text) if text.strip() else ""


def from_dict(cls: type, raw: dict, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, checking every key and value type."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in raw.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=3)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigError(f"unknown config key '{prefix}{key}'{hint} Allowed keys in "
                              f"{prefix.rstrip('.') or 'the top level'}: {', '.join(sorted(fields))}")
        kwargs[key] = _coerce(hints[key], value, f"{prefix}{key}")
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, name: str) -> Any:
    """Check (and gently convert) one value against its annotated type."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value if value is not None else {}, name + ".")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{name}: {value!r} is not allowed{hint}; choose one of "
                              f"{', '.join(repr(a) for a in allowed)}")
        return value
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, name)
            except ConfigError:
                continue
        raise ConfigError(f"{name}: {value!r} does not match {tp}")
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a mapping, got {value!r}")
        return {str(k): v for k, v in value.items()}  # values stay YAML scalars
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, str):  # `--set x=a,b` style convenience
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{name}: expected a list, got {value!r}")
        return [_coerce(item_tp, v, f"{name}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{name}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "5e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{name}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{name}: expected a string, got {value!r}")
    return value


def to_dict(config: Any) -> dict:
    """A plain mapping of a config dataclass (for YAML, JSON, checkpoints)."""
    return dataclasses.asdict(config)


def to_yaml(config: Any) -> str:
    """The resolved config as YAML text, readable back by :func:`load_config`."""
    return yaml.safe_dump(to_dict(config), sort_keys=False, default_flow_style=False)


def describe_fields(cls: type = RunConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted name, default, help) for every leaf field: the reference table in the docs."""
    rows = []
    defaults = cls()
    for f in dataclasses.fields(cls):
        value = getattr(defaults, f.name)
        if dataclasses.is_dataclass(value):
            rows += describe_fields(type(value), f"{prefix}{f.name}.")
        else:
            rows.append((f"{prefix}{f.name}", repr(value), f.metadata.get("help", "")))
    return rows
