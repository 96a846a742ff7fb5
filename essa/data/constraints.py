"""Attach random IFEval-style constraints to any questions, seeded, to make a training set.

Each question gets a few constraints drawn from IFEval's own instruction classes
(``if_verifiable.ifeval``, Apache-2.0): ``build_description()`` with no arguments draws random
arguments and writes the English sentence, ``get_instruction_args()`` returns those arguments.
Rows use IFEval's schema (``prompt``, ``instruction_id_list``, ``kwargs``), so the ``ifeval``
reward scores them as it scores the benchmark. The constraint sentences use IFEval's wording:
a model trained on them sees the test set's surface forms (the test prompts are not used).

The same seed gives byte-identical rows for the same version of if-verifiable (its word lists
and draw order are part of the result).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from pathlib import Path

from essa.atomic import atomic_write

# Its argument is the prompt itself (build_description() without it raises), and the text to
# repeat must be fixed after the other constraints are written: never drawn, whatever ``exclude``.
_UNDRAWABLE = frozenset({"combination:repeat_prompt"})

DEFAULT_EXCLUDE = _UNDRAWABLE | frozenset({
    # "Answer with one of: My answer is yes / no / maybe" fits only yes-no questions, not a
    # derived prompt such as a word problem; IFEval marks it as conflicting with every other id.
    "detectable_format:constrained_response",
})

# Pairs IFEval's conflict table lets through that a response may be unable to satisfy: the
# section marker ("Section" or "SECTION", drawn at random) is matched case-sensitively, so an
# all-lower-case response can never mark its sections, and an all-capitals one not "Section 1".
_EXTRA_CONFLICTS = (
    ("change_case:english_lowercase", "detectable_format:multiple_sections"),
    ("change_case:english_capital", "detectable_format:multiple_sections"),
)

_MAX_ATTEMPTS = 1000


def attach_constraints(
    questions: Iterable[str],
    seed: int = 0,
    min_constraints: int = 1,
    max_constraints: int = 3,
    exclude: Iterable[str] = DEFAULT_EXCLUDE,
) -> list[dict]:
    """One IFEval-schema row per question: ``{"prompt", "instruction_id_list", "kwargs"}``.

    Each row has between ``min_constraints`` and ``max_constraints`` constraints (uniformly
    many), no id twice, no pair IFEval marks as conflicting. The prompt is the question, a blank
    line, then the constraints' sentences, one per line. ``exclude`` lists ids never drawn
    (default :data:`DEFAULT_EXCLUDE`: ``detectable_format:constrained_response``, which fits only
    yes-no questions, and ``combination:repeat_prompt``, which needs the prompt itself and is
    never drawn anyway).

    The library draws from Python's global ``random``: it is seeded with ``seed`` here and put
    back as it was afterwards, so the same seed gives the same rows.
    """
    registry, conflicts = _library()
    exclude = set(exclude)
    unknown = exclude - set(registry)
    if unknown:
        raise ValueError(f"unknown IFEval instruction ids in exclude: {sorted(unknown)}")
    ids = [instruction_id for instruction_id in registry if instruction_id not in exclude | _UNDRAWABLE]
    if not 1 <= min_constraints <= max_constraints:
        raise ValueError(f"need 1 <= min_constraints <= max_constraints, got {min_constraints}, {max_constraints}")
    if max_constraints > len(ids):
        raise ValueError(f"max_constraints={max_constraints} but only {len(ids)} ids can be drawn")
    state = random.getstate()
    random.seed(seed)
    try:
        return [_row(question, registry, ids, conflicts, min_constraints, max_constraints) for question in questions]
    finally:
        random.setstate(state)


def write_constrained_jsonl(
    in_path: Path | str,
    out_path: Path | str,
    question_field: str = "question",
    seed: int = 0,
    *,
    min_constraints: int = 1,
    max_constraints: int = 3,
    exclude: Iterable[str] = DEFAULT_EXCLUDE,
    source: str | None = None,
) -> int:
    """Read questions from a JSONL file, write IFEval-schema rows; returns the number of rows.

    Each output row is ``{"key", "prompt", "instruction_id_list", "kwargs", "source"}`` with
    ``key`` = ``"<source>-<record index>"`` and ``source`` the input file's stem unless given.
    Blank lines are skipped. The output is written atomically.
    """
    in_path = Path(in_path)
    source = source or in_path.stem
    questions = []
    with open(in_path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            record = json.loads(line)
            question = record.get(question_field) if isinstance(record, dict) else None
            if not isinstance(question, str):
                raise ValueError(f"{in_path}:{line_number}: no text field {question_field!r}")
            questions.append(question)
    rows = attach_constraints(questions, seed, min_constraints, max_constraints, exclude)
    lines = [
        json.dumps({"key": f"{source}-{index}", **row, "source": source}) + "\n"
        for index, row in enumerate(rows)
    ]
    atomic_write(out_path, "".join(lines))
    return len(rows)


def _library() -> tuple[dict, dict[str, set[str]]]:
    """IFEval's registry and its conflict table made symmetric (every id conflicts with itself).

    Imported on first use: if_verifiable's package import pulls in ``datasets``.
    """
    from if_verifiable.ifeval import instructions_registry as registry_module

    # conflict_make fills in the table in place: give it a copy, not the library's own.
    conflicts = registry_module.conflict_make(
        {key: set(value) for key, value in registry_module.INSTRUCTION_CONFLICTS.items()}
    )
    for first, second in _EXTRA_CONFLICTS:
        conflicts[first].add(second)
        conflicts[second].add(first)
    return registry_module.INSTRUCTION_DICT, conflicts


def _row(question: str, registry: dict, ids: list[str], conflicts: dict, low: int, high: int) -> dict:
    chosen = _draw_ids(ids, conflicts, random.randint(low, high))
    descriptions, kwargs = [], []
    for instruction_id in chosen:
        description, arguments = _draw_arguments(registry[instruction_id], instruction_id)
        descriptions.append(description)
        kwargs.append(arguments)
    return {
        "prompt": question.strip() + "\n\n" + "\n".join(descriptions),
        "instruction_id_list": chosen,
        "kwargs": kwargs,
    }


def _draw_ids(ids: list[str], conflicts: dict, count: int) -> list[str]:
    """``count`` distinct, pairwise compatible ids (drawn one by one among those still allowed)."""
    for _ in range(_MAX_ATTEMPTS):
        chosen: list[str] = []
        while len(chosen) < count:
            allowed = [i for i in ids if not any(i in conflicts[c] for c in chosen)]
            if not allowed:
                break  # e.g. json_format first leaves only two ids: start over
            chosen.append(random.choice(allowed))
        if len(chosen) == count:
            return chosen
    raise ValueError(f"could not draw {count} compatible constraints from {len(ids)} ids")


def _draw_arguments(checker_class, instruction_id: str) -> tuple[str, dict]:
    """(English sentence, kwargs) of one random instance of a constraint that can be met."""
    for _ in range(_MAX_ATTEMPTS):
        checker = checker_class(instruction_id)
        description = checker.build_description()
        arguments = dict(checker.get_instruction_args() or {})
        if _satisfiable(instruction_id, arguments):
            return description, arguments
    raise ValueError(f"could not draw satisfiable arguments for {instruction_id!r}")


def _satisfiable(instruction_id: str, arguments: dict) -> bool:
    """False for the draws of IFEval's classes that no response can meet."""
    if instruction_id == "length_constraints:number_sentences":
        # "less than 1 sentences": only an empty response, which IFEval scores as failing.
        return not (arguments["relation"] == "less than" and arguments["num_sentences"] < 2)
    if instruction_id == "length_constraints:nth_paragraph_first_word":
        # The class draws nth_paragraph up to num_paragraphs + 1: a paragraph that cannot exist
        # (and kwargs the checker would not keep when rebuilt).
        return arguments["nth_paragraph"] <= arguments["num_paragraphs"]
    return True
