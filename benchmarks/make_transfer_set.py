"""Write benchmarks/data/arithmetic_transfer.jsonl: arithmetic word problems in other words.

The demo trains and tests on the generator of essa/data/arithmetic.py. A gain that shows only on
that generator's sentence templates could be a gain in template matching. This set asks the same
kind of question (1-2 operations among add, sub, mul on the demo's number ranges) in hand-written
wordings that the generator never uses: other names, other things, other sentence shapes, the
question sometimes first. Score it with essa-eval (the command is in benchmarks/RESULTS.md).

    python benchmarks/make_transfer_set.py            # 200 problems, seed 7
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

PEOPLE = ["Priya", "Carlos", "Hana", "Dmitri", "Aisha", "Kofi", "Greta", "Mateo", "Yuki", "Farah"]
THINGS = [("tomatoes", "basket"), ("nails", "jar"), ("tickets", "envelope"), ("bricks", "pallet"),
          ("eggs", "carton"), ("bottles", "crate"), ("candles", "drawer"), ("buttons", "tin")]

# Openings: (text, how the starting amount is built): plain amount or a product of groups.
OPEN_PLAIN = ["At the start of the day, {p}'s {c} holds {a} {t}.",
              "{p} counted {a} {t} in the {c} this morning.",
              "The {c} on {p}'s table contains exactly {a} {t}."]
OPEN_GROUPS = ["{p} fills {a} {c}s, putting {k} {t} into every one of them, and tips them all "
               "into one pile.",
               "There are {a} rows of {t} on {p}'s shelf, and each row has {k} {t}."]
ADD = ["Later, a neighbour drops off another {b} {t}.", "{p} then picks up {b} extra {t} at the market.",
       "After lunch the pile grows by {b} {t}."]
SUB = ["Then {b} of the {t} are sold.", "{p} hands {b} {t} to a cousin.", "Sadly, {b} {t} break."]
MUL = ["By evening the pile is {k} times as large as it was.", "{p} then makes the amount {k}-fold."]
ASK = ["What is the number of {t} {p} ends up with?", "How many {t} are there in the end?",
       "Find the final count of {t}."]
ASK_FIRST = "Question: how many {t} does {p} end up with? "


def problem(rng: np.random.Generator) -> dict:
    p, (t, c) = str(rng.choice(PEOPLE)), THINGS[int(rng.integers(len(THINGS)))]
    steps = int(rng.integers(1, 3))
    ops = [str(rng.choice(["add", "sub", "mul"])) for _ in range(steps)]
    if ops[0] == "mul":
        a, k = int(rng.integers(2, 13)), int(rng.integers(2, 13))
        parts, value, ops = [str(rng.choice(OPEN_GROUPS)).format(p=p, a=a, k=k, t=t, c=c)], a * k, ops[1:]
    else:
        value = int(rng.integers(2, 31))
        parts = [str(rng.choice(OPEN_PLAIN)).format(p=p, a=value, t=t, c=c)]
    if not ops:
        ops = ["add"]
    for op in ops:
        if op == "add":
            b = int(rng.integers(2, 31))
            parts.append(str(rng.choice(ADD)).format(p=p, b=b, t=t))
            value += b
        elif op == "sub":
            b = int(rng.integers(min(2, value), min(30, value) + 1))
            parts.append(str(rng.choice(SUB)).format(p=p, b=b, t=t))
            value -= b
        else:
            k = int(rng.integers(2, 13))
            parts.append(str(rng.choice(MUL)).format(p=p, k=k))
            value *= k
    if rng.random() < 0.3:
        text = ASK_FIRST.format(p=p, t=t) + " ".join(parts)
    else:
        text = " ".join(parts + [str(rng.choice(ASK)).format(p=p, t=t)])
    return {"question": text, "answer": str(value)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default=str(Path(__file__).parent / "data/arithmetic_transfer.jsonl"))
    args = ap.parse_args()
    rng, rows, seen = np.random.default_rng(args.seed), [], set()
    while len(rows) < args.n:
        row = problem(rng)
        if row["question"] not in seen:
            seen.add(row["question"])
            rows.append(row)
    Path(args.out).write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {len(rows)} problems to {args.out}")


if __name__ == "__main__":
    main()
