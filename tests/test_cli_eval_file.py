"""``essa-eval`` on a dataset named by path: every row by default, safe output names, no lost work."""

import json

from essa.cli.eval import ALL_ROWS, completions_files, eval_split, load_examples, slug
from essa.config import TaskConfig
from tests.conftest import run_cli


def _write_problems(path, n, start=0):
    """n GSM8K-style rows (``question``, ``answer`` ending ``#### n``), the fields the loader reads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(start, start + n):
            f.write(json.dumps({"question": f"What is {i} + {i + 1}?",
                                "answer": f"{i} + {i + 1} = {2 * i + 1}\n#### {2 * i + 1}"}) + "\n")
    return path


def test_slug_is_a_safe_file_stem():
    assert slug("gsm8k") == "gsm8k"
    assert slug("/some/dir/file.jsonl") == "file"
    assert slug("/data/My Set (v2).parquet") == "My-Set-v2"
    assert slug("data/folder/") == "folder"
    assert slug("openai/gsm8k") == "gsm8k"
    assert slug("..") == "dataset" and slug("/") == "dataset"


def test_completions_files_are_unique_when_slugs_collide():
    files = completions_files(["/a/x.jsonl", "/b/x.jsonl", "x", "gsm8k"])
    assert files == {"/a/x.jsonl": "completions-x.jsonl", "/b/x.jsonl": "completions-x-2.jsonl",
                     "x": "completions-x-3.jsonl", "gsm8k": "completions-gsm8k.jsonl"}


def test_split_choice(tmp_path):
    path = str(_write_problems(tmp_path / "p.jsonl", 3))
    task = TaskConfig()
    assert eval_split(task, path, None) is None  # a file: every row
    assert eval_split(task, path, "train") == "train"  # asked for: as asked
    assert eval_split(task, "gsm8k", None) == "test"  # a benchmark: its test split
    assert eval_split(task, "arithmetic", None) == "test"
    assert eval_split(TaskConfig(test_split="heldout"), "gsm8k", None) == "heldout"
    assert eval_split(task, str(tmp_path), None) == "test"  # a folder of <split> files
    assert eval_split(task, str(tmp_path / "missing.jsonl"), None) == "test"  # load_task names it


def test_a_file_loads_every_row_in_order_unless_a_split_is_asked(tmp_path):
    path = str(_write_problems(tmp_path / "p.jsonl", 20))
    _, examples, split = load_examples(TaskConfig(), path, None)
    assert split == ALL_ROWS
    assert [e.answer for e in examples] == [str(2 * i + 1) for i in range(20)]
    # An explicit split is the loader's, as essa-train sees it: train without the carved validation.
    _, train, split = load_examples(TaskConfig(), path, "train")
    assert split == "train" and len(train) == 16


def test_benchmarks_keep_their_test_split():
    from essa.data import load_task
    _, examples, split = load_examples(TaskConfig(), "arithmetic", None)
    assert split == "test"
    assert examples == load_task(TaskConfig(dataset="arithmetic")).split("test")


def test_essa_eval_scores_every_row_of_files_named_by_path(tmp_path, demo_model):
    """One real engine start: a 20-row file by absolute path (every row, a safe output name) and a
    second file with the same stem whose completions file cannot be written (a folder is in the
    way): its scores still reach summary.json and the error names the file."""
    first = _write_problems(tmp_path / "some dir" / "my problems.jsonl", 20)
    second = _write_problems(tmp_path / "other" / "my problems.jsonl", 3, start=100)
    output = tmp_path / "out"
    (output / "completions-my-problems-2.jsonl").mkdir(parents=True)
    out = run_cli(["essa-eval", "--datasets", f"{first},{second}", "--output", str(output),
                   "--set", "engine.enforce_eager=true", "--set", "engine.kv_cache_gib=1",
                   "--set", "engine.max_model_len=512", "--max-tokens", "8"])
    assert (output / "summary.json").is_file(), out.stderr[-3000:]  # the engine ran
    assert out.returncode == 1, out.stderr[-3000:]
    assert f"could not write {output / 'completions-my-problems-2.jsonl'}" in out.stderr
    summary = json.loads((output / "summary.json").read_text())
    stats = summary["datasets"][str(first)]
    assert stats["items"] == 20 and stats["split"] == ALL_ROWS and 0 <= stats["greedy_accuracy"] <= 1
    assert stats["completions"] == "completions-my-problems.jsonl"
    rows = [json.loads(line) for line in (output / stats["completions"]).read_text().splitlines()]
    assert [r["gold"] for r in rows] == [str(2 * i + 1) for i in range(20)]
    assert all(len(r["completions"]) == 1 for r in rows)
    lost = summary["datasets"][str(second)]
    assert lost["items"] == 3 and lost["split"] == ALL_ROWS and lost["completions"] is None
    assert ALL_ROWS in out.stdout
