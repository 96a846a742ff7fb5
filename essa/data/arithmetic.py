"""The synthetic demo task: arithmetic word problems generated from a seed.

Each problem starts from a quantity and applies 1-4 operations (add, sub, mul), each written as a
sentence. Its reference solution shows one line per operation and ends with ``#### <answer>``,
the format the ``arithmetic`` reward checks. Splits are carved from one deduplicated stream in a
fixed order (test, then validation, then train), so they never share a question, and the test and
validation sets do not change when the train size does.
"""

from __future__ import annotations

import numpy as np

from essa.data.example import Example

NAMES = ["Mia", "Tom", "Ava", "Leo", "Zoe", "Sam", "Ivy", "Max", "Eva", "Ben", "Lily", "Noah",
         "Emma", "Jack", "Ella", "Liam", "Ruby", "Omar", "Nina", "Alex"]
ITEMS = ["apples", "marbles", "stickers", "books", "coins", "pencils", "cards", "shells", "stamps",
         "cookies", "balloons", "beads"]
INSTRUCTION = ("Solve the problem. Show the calculation, then give the final answer on the last "
               "line in the form '#### <number>'.")

_START = ["{name} has {a} {item}.", "{name} starts with {a} {item}.", "There are {a} {item} in {name}'s bag."]
_START_MUL = ["{name} has {a} boxes with {k} {item} in each box.",
              "{name} buys {a} packs of {item}, and each pack holds {k} {item}."]
_ADD = ["{name} gets {b} more {item}.", "{name} finds {b} more {item}.", "A friend gives {name} {b} more {item}."]
_SUB = ["{name} gives away {b} {item}.", "{name} loses {b} {item}.", "{name} uses {b} of the {item}."]
_MUL = ["Then the number of {item} {name} has is multiplied by {k}."]
_QUESTION = "How many {item} does {name} have now?"
_SYMBOL = {"add": "+", "sub": "-", "mul": "*"}


def make_problem(rng: np.random.Generator, cfg) -> tuple[str, str, int]:
    """One problem: (question, reference solution, integer answer); ``cfg`` is an ArithmeticConfig."""
    name, item = str(rng.choice(NAMES)), str(rng.choice(ITEMS))
    steps = int(rng.integers(cfg.min_steps, cfg.max_steps + 1))
    ops = [str(rng.choice(cfg.operations)) for _ in range(steps)]
    lines, sentences = [], []
    if ops[0] == "mul":  # a product reads best as "a boxes of k items"
        a, k = (int(rng.integers(2, cfg.max_factor + 1)) for _ in range(2))
        sentences.append(str(rng.choice(_START_MUL)).format(name=name, a=a, k=k, item=item))
        value = a * k
        lines.append(f"{a} * {k} = {value}")
        ops = ops[1:]
    else:
        value = int(rng.integers(cfg.min_operand, cfg.max_operand + 1))
        sentences.append(str(rng.choice(_START)).format(name=name, a=value, item=item))
    for op in ops:
        if op == "mul":
            b = int(rng.integers(2, cfg.max_factor + 1))
            new = value * b
            sentences.append(str(rng.choice(_MUL)).format(name=name, k=b, item=item))
        elif op == "add":
            b = int(rng.integers(cfg.min_operand, cfg.max_operand + 1))
            new = value + b
            sentences.append(str(rng.choice(_ADD)).format(name=name, b=b, item=item))
        else:  # keep counts of things non-negative: subtract at most what there is
            b = int(rng.integers(min(cfg.min_operand, value), min(cfg.max_operand, value) + 1))
            new = value - b
            sentences.append(str(rng.choice(_SUB)).format(name=name, b=b, item=item))
        lines.append(f"{value} {_SYMBOL[op]} {b} = {new}")
        value = new
    if not lines:  # a lone starting quantity is no problem: add one step
        b = int(rng.integers(cfg.min_operand, cfg.max_operand + 1))
        sentences.append(str(rng.choice(_ADD)).format(name=name, b=b, item=item))
        lines.append(f"{value} + {b} = {value + b}")
        value += b
    question = " ".join(sentences + [_QUESTION.format(name=name, item=item)])
    solution = "\n".join(lines + [f"#### {value}"])
    return question, solution, value


def generate_splits(cfg, seed: int) -> dict[str, list[Example]]:
    """Deterministic, disjoint test / validation / train splits of the arithmetic task."""
    rng = np.random.default_rng([seed, 0xA417])
    sizes = [("test", cfg.test_size), ("validation", cfg.validation_size), ("train", cfg.train_size)]
    total = sum(n for _, n in sizes)
    seen: set[str] = set()
    stream: list[Example] = []
    attempts = 0
    while len(stream) < total:
        attempts += 1
        if attempts > 50 * total:
            raise ValueError(f"task.arithmetic: only {len(stream)} distinct problems found for "
                             f"{total} requested; widen the operand range or lower the split sizes")
        question, solution, value = make_problem(rng, cfg)
        if question in seen:
            continue
        seen.add(question)
        stream.append(Example(id="", question=question, answer=str(value), solution=solution))
    splits, start = {}, 0
    for split, n in sizes:
        splits[split] = [Example(id=f"arithmetic-{split}-{i}", question=e.question, answer=e.answer,
                                 solution=e.solution) for i, e in enumerate(stream[start:start + n])]
        start += n
    return splits
