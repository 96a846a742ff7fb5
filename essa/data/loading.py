"""Load a task's splits as :class:`Example` lists: known benchmarks, local files, HF dataset ids.

Known datasets read ``../shared/data`` (or ``$ESSA_DATA_DIR``, or ``task.data_dir``). Any
GSM8K-style file (``question`` plus ``answer`` ending ``#### n``) works without code; other
fields are named in the config.
"""

from __future__ import annotations

import ast
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from essa.data import arithmetic
from essa.data.example import Example
from essa.data_dir import default_data_dir
from essa.rewards.boxed import last_boxed

GSM8K_INSTRUCTION = ("Solve the problem step by step. End your answer with a line of the form "
                     "'#### <number>'.")
BOXED_INSTRUCTION = "Solve the problem step by step. Put the final answer in \\boxed{}."


@dataclass(frozen=True)
class DatasetSpec:
    """How to read one known dataset: its folder, fields, gold-answer extraction and defaults."""

    folder: str
    question_field: str
    gold: Callable[[dict], str]
    solution: Callable[[dict], str]
    reward: str
    instruction: str
    splits: tuple[str, ...]
    files: dict[str, str] | None = None  # split -> file under the data dir; else <folder>/<split>.jsonl

    def path(self, data_dir: Path, split: str) -> Path:
        return data_dir / (self.files[split] if self.files else f"{self.folder}/{split}.jsonl")


def _gsm8k_gold(row: dict) -> str:
    return gsm8k_final_answer(row["answer"])


def gsm8k_final_answer(text: str) -> str:
    """The number after the last ``####`` of a GSM8K solution, commas removed."""
    if "####" not in text:
        return ""
    return text.rsplit("####", 1)[1].strip().replace(",", "")


def _number_text(value) -> str:
    """27.0 -> '27', 2.5 -> '2.5', '204' -> '204'."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _listish(text) -> list[str]:
    """OlympiadBench stores lists as their Python repr: parse them as literals, never evaluate."""
    if isinstance(text, list):
        return [str(t) for t in text]
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return [str(text)]
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]


def constraint_spec(row: dict) -> str:
    """An IFEval row's constraints as the JSON text the ifeval reward reads (answers stay strings)."""
    return json.dumps({"instruction_id_list": row["instruction_id_list"], "kwargs": row["kwargs"]},
                      sort_keys=True)


def _minerva_gold(row: dict) -> str:
    return last_boxed(row["solution"]) or ""


KNOWN_DATASETS: dict[str, DatasetSpec] = {
    "gsm8k": DatasetSpec("gsm8k", "question", _gsm8k_gold, lambda r: r["answer"], "gsm8k",
                         GSM8K_INSTRUCTION, ("train", "test")),
    "math500": DatasetSpec("math500", "problem", lambda r: str(r["answer"]), lambda r: r["solution"],
                           "math", BOXED_INSTRUCTION, ("test",)),
    "aime24": DatasetSpec("aime24", "problem", lambda r: _number_text(r["answer"]),
                          lambda r: r.get("solution", ""), "math", BOXED_INSTRUCTION, ("test",)),
    "amc23": DatasetSpec("amc23", "problem", lambda r: _number_text(r["answer"]), lambda r: "",
                         "math", BOXED_INSTRUCTION, ("test",)),
    "minerva_math": DatasetSpec("minerva_math", "problem", _minerva_gold, lambda r: r["solution"],
                                "math", BOXED_INSTRUCTION, ("test",)),
    "olympiadbench": DatasetSpec("olympiadbench", "question",
                                 lambda r: ", ".join(_listish(r["final_answer"])),
                                 lambda r: "\n".join(_listish(r["solution"])), "math",
                                 BOXED_INSTRUCTION, ("test",)),
    # Instruction following: the prompt carries its own constraints, so no instruction is added.
    # Train on the generated GSM8K-question set; test on IFEval's 541 prompts (evaluation only).
    "ifeval": DatasetSpec("ifeval", "prompt", constraint_spec, lambda r: "", "ifeval", "",
                          ("train", "test"),
                          files={"train": "ifeval_train/generated_gsm8k_train.jsonl",
                                 "test": "ifeval/test.jsonl"}),
}


@dataclass
class TaskData:
    """A task ready to use: its splits, the reward name and the prompt instruction."""

    name: str
    splits: dict[str, list[Example]]
    reward: str
    instruction: str

    def split(self, name: str) -> list[Example]:
        if name not in self.splits:
            raise KeyError(f"task {self.name!r} has no split {name!r}; it has {sorted(self.splits)}")
        return self.splits[name]


def load_task(task_cfg) -> TaskData:
    """All splits of the configured task (``task_cfg`` is a TaskConfig)."""
    name = task_cfg.dataset
    if name == "arithmetic":
        splits = arithmetic.generate_splits(task_cfg.arithmetic, task_cfg.arithmetic.seed)
        return TaskData(name, splits, task_cfg.reward or "arithmetic",
                        task_cfg.instruction or arithmetic.INSTRUCTION)
    data_dir = Path(task_cfg.data_dir) if task_cfg.data_dir else default_data_dir()
    if name in KNOWN_DATASETS:
        spec = KNOWN_DATASETS[name]
        paths = {s: spec.path(data_dir, s) for s in spec.splits}
        if not any(p.is_file() for p in paths.values()):
            raise FileNotFoundError(f"dataset {name!r}: not found: {' or '.join(map(str, paths.values()))} "
                                    f"(set task.data_dir or ESSA_DATA_DIR)")
        splits = {s: _read_known(spec, p, name, s, task_cfg) for s, p in paths.items() if p.is_file()}
        reward, instruction = spec.reward, spec.instruction
    else:
        rows_by_split = _read_source(name, [task_cfg.train_split, task_cfg.validation_split,
                                            task_cfg.test_split])
        reward, instruction = "gsm8k", GSM8K_INSTRUCTION
        if _ifeval_schema(rows_by_split):  # prompts that carry their own constraints
            rows_by_split = {s: [_constrained_row(r) for r in rows] for s, rows in rows_by_split.items()}
            reward, instruction = "ifeval", ""
        splits = {s: _rows_to_examples(rows, name, s, task_cfg) for s, rows in rows_by_split.items()}
        if not any(e.answer for rows in splits.values() for e in rows):
            instruction = ""  # prompts only (a reward model judges them): nothing to ask for
    _carve_validation(splits, task_cfg)
    return TaskData(name, splits, task_cfg.reward or reward, task_cfg.instruction or instruction)


def _ifeval_schema(rows_by_split: dict[str, list[dict]]) -> bool:
    """True when a file's rows are IFEval-schema (prompt, instruction_id_list, kwargs)."""
    first = next((rows[0] for rows in rows_by_split.values() if rows), {})
    return {"prompt", "instruction_id_list", "kwargs"} <= set(first)


def _constrained_row(row: dict) -> dict:
    """An IFEval-schema row with ``question`` and ``answer`` (its constraints as JSON text) added."""
    return {"question": row["prompt"], **row, "answer": constraint_spec(row)}


def load_split(task_cfg, split: str) -> list[Example]:
    """One split of the configured task."""
    return load_task(task_cfg).split(split)


def _carve_validation(splits: dict[str, list[Example]], task_cfg) -> None:
    """Give a dataset without a validation split one, taken off its train split (fixed shuffle)."""
    val, train = task_cfg.validation_split, task_cfg.train_split
    if not val or val in splits or train not in splits:
        return
    rows = splits[train]
    n_val = min(task_cfg.validation_size, len(rows) // 5)
    order = np.random.default_rng(0).permutation(len(rows))
    splits[val] = [rows[i] for i in sorted(order[:n_val])]
    splits[train] = [rows[i] for i in sorted(order[n_val:])]


def _read_known(spec: DatasetSpec, path: Path, name: str, split: str, task_cfg) -> list[Example]:
    rows = read_jsonl(path)
    qf = task_cfg.question_field or spec.question_field
    out = []
    for i, row in enumerate(rows):
        gold = row[task_cfg.answer_field] if task_cfg.answer_field else spec.gold(row)
        out.append(Example(id=f"{name}-{split}-{i}", question=str(row[qf]), answer=str(gold),
                           solution=str(spec.solution(row) or "")))
    return out


def _rows_to_examples(rows: list[dict], name: str, split: str, task_cfg) -> list[Example]:
    """Generic rows: question/problem field, answer field (bare or ending ``#### n``). Rows with
    no answer field at all, when task.answer_field is not set, are prompts only (empty answers:
    for fitness.kind reward_model; a verifiable reward refuses them when scoring)."""
    if not rows:
        return []
    qf = task_cfg.question_field or ("question" if "question" in rows[0] else "problem")
    af = task_cfg.answer_field or "answer"
    required = (qf, af) if task_cfg.answer_field or af in rows[0] else (qf,)
    for field_name in required:
        if field_name not in rows[0]:
            raise KeyError(f"dataset {name!r} split {split!r}: no field {field_name!r}; fields are "
                           f"{sorted(rows[0])} (set task.question_field / task.answer_field)")
    out = []
    for i, row in enumerate(rows):
        raw = str(row.get(af, ""))
        gold = gsm8k_final_answer(raw) if "####" in raw else _number_text(row.get(af, ""))
        solution = raw if "####" in raw else str(row.get("solution", ""))
        out.append(Example(id=f"{Path(name).stem}-{split}-{i}", question=str(row[qf]), answer=gold,
                           solution=solution))
    return out


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSON-lines file; a bad line names the file and line number."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{n}: not valid JSON ({e.msg})") from None
    return rows


def _read_file(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        return read_jsonl(path)
    if path.suffix == ".json":
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, list) else data.get("data", [])
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq
        return pq.read_table(path).to_pylist()
    raise ValueError(f"{path}: unsupported file type {path.suffix!r}; use .jsonl, .json or .parquet")


def _read_source(source: str, splits: list[str]) -> dict[str, list[dict]]:
    """A file (all rows are the train split), a folder of ``<split>.<ext>`` files, or an HF id."""
    path = Path(source)
    if path.is_file():
        return {splits[0]: _read_file(path)}
    if path.is_dir():
        found = {}
        for split in splits:
            for ext in (".jsonl", ".json", ".parquet"):
                if (path / f"{split}{ext}").is_file():
                    found[split] = _read_file(path / f"{split}{ext}")
                    break
        if not found:
            raise FileNotFoundError(f"dataset folder {path} holds no {'/'.join(splits)} "
                                    f".jsonl/.json/.parquet file")
        return found
    if source.startswith((".", "/", "~")) or source.endswith((".jsonl", ".json", ".parquet")):
        raise FileNotFoundError(f"dataset file not found: {path}")
    return _read_hub_dataset(source, splits)


def _read_hub_dataset(dataset_id: str, splits: list[str]) -> dict[str, list[dict]]:
    """A Hugging Face dataset id, from the local cache only (no network at run time)."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    try:
        import datasets
    except ImportError:
        raise ValueError(f"dataset {dataset_id!r} is neither a known dataset ({', '.join(KNOWN_DATASETS)}, "
                         f"arithmetic) nor a local path, and the 'datasets' package is not installed "
                         f"to read it as a Hugging Face id") from None
    found = {}
    for split in splits:
        try:
            found[split] = datasets.load_dataset(dataset_id, split=split).to_list()
        except ValueError:
            continue  # that split does not exist
        except Exception as e:
            raise FileNotFoundError(f"dataset {dataset_id!r}: not a known dataset, not a local path, "
                                    f"and not in the local Hugging Face cache ({type(e).__name__}: {e})") from None
    if not found:
        raise FileNotFoundError(f"dataset {dataset_id!r}: none of the splits {splits} found")
    return found
