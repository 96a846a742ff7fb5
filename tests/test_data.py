"""Data layer: the real benchmark files, local files, the demo task, prompts and the sampler."""

import json
import re

import numpy as np
import pytest

from essa.config import ArithmeticConfig, TaskConfig
from essa.data import BatchSampler, build_prompt, load_task
from essa.data.arithmetic import generate_splits
from essa.data.loading import default_data_dir

EXPECTED_ROWS = {("gsm8k", "train"): 7473, ("gsm8k", "test"): 1319, ("math500", "test"): 500,
                 ("aime24", "test"): 30, ("amc23", "test"): 40, ("minerva_math", "test"): 272,
                 ("olympiadbench", "test"): 675}


@pytest.mark.parametrize("name,split", sorted(EXPECTED_ROWS))
def test_known_dataset_rows_and_gold_answers(name, split):
    task = load_task(TaskConfig(dataset=name, validation_split=""))
    rows = task.split(split)
    assert len(rows) == EXPECTED_ROWS[(name, split)]
    assert all(r.answer.strip() for r in rows), "every row needs a gold answer"
    assert all(r.question.strip() for r in rows)
    assert len({r.id for r in rows}) == len(rows)


def test_gold_answer_extraction_matches_sources():
    gsm = load_task(TaskConfig(dataset="gsm8k")).split("test")
    raw = json.loads((default_data_dir() / "gsm8k/test.jsonl").open().readline())
    assert gsm[0].answer == raw["answer"].split("####")[-1].strip().replace(",", "")
    assert gsm[0].solution == raw["answer"]
    minerva = load_task(TaskConfig(dataset="minerva_math")).split("test")
    assert "\\boxed" not in minerva[0].answer and minerva[0].answer in minerva[0].solution
    amc = load_task(TaskConfig(dataset="amc23")).split("test")
    assert amc[0].answer == "27"  # stored as the JSON number 27.0
    olymp = load_task(TaskConfig(dataset="olympiadbench")).split("test")
    assert olymp[0].answer == "2" and not olymp[0].answer.startswith("[")


def test_gsm8k_gets_a_validation_split_carved_off_train():
    task = load_task(TaskConfig(dataset="gsm8k", validation_size=200))
    val, train = task.split("validation"), task.split("train")
    assert len(val) == 200 and len(train) == 7473 - 200
    assert not {e.question for e in val} & {e.question for e in train}


def test_local_jsonl_and_parquet_with_named_fields(tmp_path):
    rows = [{"q": f"What is {i} + 1?", "a": f"{i} + 1 = {i + 1}\n#### {i + 1}"} for i in range(50)]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    task = load_task(TaskConfig(dataset=str(path), question_field="q", answer_field="a",
                                validation_size=5))
    assert [e.answer for e in task.split("train")][:3] == ["1", "3", "4"] or len(task.split("train")) == 45
    assert sorted(int(e.answer) for e in task.split("train") + task.split("validation")) == list(range(1, 51))
    assert task.reward == "gsm8k"
    import pyarrow as pa
    import pyarrow.parquet as pq
    folder = tmp_path / "pq"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist([{"problem": "2+2?", "answer": 4.0}]), folder / "test.parquet")
    test = load_task(TaskConfig(dataset=str(folder))).split("test")
    assert test[0].question == "2+2?" and test[0].answer == "4"


def test_missing_dataset_file_and_field_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_task(TaskConfig(dataset=str(tmp_path / "nope.jsonl")))
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps({"question": "q", "answer": "1"}) + "\n")
    with pytest.raises(KeyError, match="'solution_text'"):
        load_task(TaskConfig(dataset=str(path), answer_field="solution_text"))
    with pytest.raises(FileNotFoundError, match=f"not found: {tmp_path}/gsm8k/train.jsonl or"):
        load_task(TaskConfig(dataset="gsm8k", data_dir=str(tmp_path)))


def test_ifeval_task_trains_on_generated_prompts_and_tests_on_ifeval():
    task = load_task(TaskConfig(dataset="ifeval"))
    assert task.reward == "ifeval" and task.instruction == ""
    assert len(task.split("test")) == 541
    assert len(task.split("train")) + len(task.split("validation")) == 7473
    test_questions = {e.question for e in task.split("test")}
    assert not test_questions & {e.question for e in task.split("train") + task.split("validation")}
    first = task.split("test")[0]
    spec = json.loads(first.answer)  # the constraints travel as a JSON string
    assert set(spec) == {"instruction_id_list", "kwargs"}
    assert len(spec["instruction_id_list"]) == len(spec["kwargs"]) >= 1
    assert first.solution == ""
    assert all(json.loads(e.answer)["instruction_id_list"] for e in task.split("train")[:50])


def _replay(solution: str) -> int:
    """Check a reference solution line by line by parsing it (never evaluating text)."""
    value = None
    for line in solution.splitlines()[:-1]:
        a, op, b, c = re.fullmatch(r"(-?\d+) ([+\-*]) (\d+) = (-?\d+)", line).groups()
        a, b, c = int(a), int(b), int(c)
        assert value is None or a == value
        assert c == {"+": a + b, "-": a - b, "*": a * b}[op]
        value = c
    return value


def test_arithmetic_task_is_deterministic_disjoint_and_correct():
    cfg = ArithmeticConfig(train_size=400, validation_size=100, test_size=100)
    a, b = generate_splits(cfg, 7), generate_splits(cfg, 7)
    assert a == b
    assert generate_splits(cfg, 8)["test"] != a["test"]
    questions = [{e.question for e in a[s]} for s in ("train", "validation", "test")]
    assert not (questions[0] & questions[1] or questions[0] & questions[2] or questions[1] & questions[2])
    for e in a["train"] + a["test"]:
        assert e.solution.endswith(f"#### {e.answer}")
        assert _replay(e.solution) == int(e.answer)
    # Test and validation do not move when the train split grows.
    bigger = generate_splits(ArithmeticConfig(train_size=800, validation_size=100, test_size=100), 7)
    assert bigger["test"] == a["test"] and bigger["validation"] == a["validation"]


def test_arithmetic_difficulty_knobs_are_obeyed():
    cfg = ArithmeticConfig(operations=["add"], min_steps=3, max_steps=3, max_operand=9,
                           train_size=50, validation_size=10, test_size=10)
    for e in generate_splits(cfg, 0)["train"]:
        lines = e.solution.splitlines()
        assert len(lines) == 4 and all("+" in line for line in lines[:-1])
        assert all(int(n) <= 9 for n in re.findall(r"(\d+) =", e.solution))


def test_sampler_is_reproducible_and_never_repeats_within_an_epoch():
    s = BatchSampler(n=103, batch_size=10, seed=3)
    assert np.array_equal(s.batch(4), BatchSampler(103, 10, 3).batch(4))
    assert not np.array_equal(s.batch(4), BatchSampler(103, 10, 4).batch(4))
    first_epoch = np.concatenate([s.batch(g) for g in range(10)])  # 100 of 103 items
    assert len(set(first_epoch.tolist())) == 100
    stream = np.concatenate([s.batch(g) for g in range(30)])
    epochs = [stream[i:i + 103] for i in range(0, 206, 103)]
    assert all(sorted(e.tolist()) == list(range(103)) for e in epochs)


def test_prompt_uses_chat_template_and_instruction(demo_model):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(demo_model)
    prompt = build_prompt(tok, "What is 2 + 2?", "End with '#### <number>'.")
    assert prompt.startswith("<|im_start|>") and prompt.rstrip().endswith("<|im_start|>assistant")
    assert "What is 2 + 2?\nEnd with '#### <number>'." in prompt
    plain = build_prompt(tok, "What is 2 + 2?", "", chat_template=False)
    assert plain == "What is 2 + 2?\n"


def test_a_file_of_ifeval_schema_rows_is_an_ifeval_task(tmp_path):
    from essa.data.constraints import write_constrained_jsonl

    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps({"question": f"Describe the number {i}."}) + "\n" for i in range(10)))
    write_constrained_jsonl(questions, tmp_path / "train.jsonl", seed=1)
    task = load_task(TaskConfig(dataset=str(tmp_path / "train.jsonl"), validation_size=2))
    assert task.reward == "ifeval" and task.instruction == ""
    rows = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    examples = task.split("train") + task.split("validation")
    assert len(examples) == 10
    by_question = {e.question: e for e in examples}
    for row in rows:
        example = by_question[row["prompt"]]
        assert json.loads(example.answer) == {"instruction_id_list": row["instruction_id_list"],
                                              "kwargs": row["kwargs"]}
