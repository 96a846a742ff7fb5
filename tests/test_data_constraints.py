"""Seeded IFEval-style constraints attached to any questions: reproducible, compatible, scorable."""

import json
import random

import pytest

from essa.data.constraints import DEFAULT_EXCLUDE, attach_constraints, write_constrained_jsonl
from essa.rewards.ifeval import ifeval_results

QUESTIONS = [f"Tom has {n} apples and buys {n + 3} more. How many apples does he have?" for n in range(300)]


@pytest.fixture(scope="module")
def rows():
    return attach_constraints(QUESTIONS, seed=0)


def registry_and_conflicts():
    from if_verifiable.ifeval import instructions_registry as registry

    return registry.INSTRUCTION_DICT, registry.INSTRUCTION_CONFLICTS


def answer(row: dict) -> str:
    return json.dumps({"instruction_id_list": row["instruction_id_list"], "kwargs": row["kwargs"]})


def test_same_seed_same_rows_other_seed_other_rows(rows):
    assert json.dumps(attach_constraints(QUESTIONS, seed=0)) == json.dumps(rows)
    assert json.dumps(attach_constraints(QUESTIONS, seed=1)) != json.dumps(rows)


def test_global_random_state_is_restored():
    random.seed(1234)
    state = random.getstate()
    attach_constraints(QUESTIONS[:20], seed=5)
    assert random.getstate() == state


def test_rows_have_ifevals_schema_and_the_question_first(rows):
    for question, row in zip(QUESTIONS, rows):
        assert set(row) == {"prompt", "instruction_id_list", "kwargs"}
        assert len(row["instruction_id_list"]) == len(row["kwargs"])
        assert row["prompt"].startswith(question + "\n\n")


def test_counts_within_bounds_and_all_counts_drawn():
    for low, high in [(1, 3), (2, 2), (2, 4)]:
        counts = {len(r["instruction_id_list"]) for r in attach_constraints(QUESTIONS, 3, low, high)}
        assert counts == set(range(low, high + 1))


def test_no_repeated_id_no_conflicting_pair_no_excluded_id(rows):
    registry, conflicts = registry_and_conflicts()
    drawn = set()
    for row in rows:
        ids = row["instruction_id_list"]
        drawn.update(ids)
        assert len(set(ids)) == len(ids)
        for i, first in enumerate(ids):
            for second in ids[i + 1:]:
                assert second not in conflicts.get(first, ()) and first not in conflicts.get(second, ())
    assert not drawn & DEFAULT_EXCLUDE
    assert drawn == set(registry) - DEFAULT_EXCLUDE  # 300 prompts reach every allowed id


def test_exclude_is_honoured_and_checked():
    rows = attach_constraints(QUESTIONS, exclude={"punctuation:no_comma", "startend:quotation"})
    ids = {i for row in rows for i in row["instruction_id_list"]}
    assert "punctuation:no_comma" not in ids and "startend:quotation" not in ids
    assert "detectable_format:constrained_response" in ids  # no longer excluded
    assert "combination:repeat_prompt" not in ids  # needs the prompt itself: never drawn
    with pytest.raises(ValueError, match="unknown"):
        attach_constraints(QUESTIONS[:1], exclude={"keywords:nope"})
    with pytest.raises(ValueError, match="min_constraints"):
        attach_constraints(QUESTIONS[:1], min_constraints=3, max_constraints=2)
    with pytest.raises(ValueError, match="ids can be drawn"):
        attach_constraints(QUESTIONS[:1], max_constraints=40)


def test_kwargs_rebuild_the_sentence_in_the_prompt(rows):
    """kwargs pin the constraint down: rebuilding from them gives the sentence the prompt states."""
    registry, _ = registry_and_conflicts()
    for row in rows:
        for instruction_id, kwargs in zip(row["instruction_id_list"], row["kwargs"]):
            checker = registry[instruction_id](instruction_id)
            assert checker.build_description(**kwargs) in row["prompt"]


def test_no_unsatisfiable_draws(rows):
    for row in rows:
        for instruction_id, kwargs in zip(row["instruction_id_list"], row["kwargs"]):
            if instruction_id == "length_constraints:nth_paragraph_first_word":
                assert kwargs["nth_paragraph"] <= kwargs["num_paragraphs"]
            if instruction_id == "length_constraints:number_sentences" and kwargs["relation"] == "less than":
                assert kwargs["num_sentences"] >= 2


def test_every_row_is_scored_by_the_ifeval_reward(rows):
    answers = [answer(row) for row in rows]
    completions = ["Tom has 7 apples.\n\nSECTION 1\n* He buys more. P.S. Done."] * len(rows)
    results = ifeval_results(completions, answers, [row["prompt"] for row in rows])
    assert [len(strict) for strict, _ in results] == [len(row["instruction_id_list"]) for row in rows]


def test_write_constrained_jsonl(tmp_path):
    source = tmp_path / "questions.jsonl"
    records = [{"question": q, "answer": "7"} for q in QUESTIONS[:5]]
    source.write_text("\n".join(json.dumps(r) for r in records[:3]) + "\n\n" +
                      "\n".join(json.dumps(r) for r in records[3:]) + "\n")
    out = tmp_path / "out" / "constrained.jsonl"
    out.parent.mkdir()
    assert write_constrained_jsonl(source, out, "question", seed=2) == 5
    written = [json.loads(line) for line in out.read_text().splitlines()]
    expected = attach_constraints(QUESTIONS[:5], seed=2)
    assert [w["key"] for w in written] == [f"questions-{i}" for i in range(5)]
    assert {w["source"] for w in written} == {"questions"}
    assert [{k: w[k] for k in ("prompt", "instruction_id_list", "kwargs")} for w in written] == expected
    first = out.read_bytes()
    write_constrained_jsonl(source, out, "question", seed=2, source="questions")
    assert out.read_bytes() == first

    source.write_text(json.dumps({"problem": "x"}) + "\n")
    with pytest.raises(ValueError, match="'question'"):
        write_constrained_jsonl(source, out, "question")
