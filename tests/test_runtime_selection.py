"""What a run returns: adapter_selected is the best-validated mean, the early stop, the presets."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from essa.config import ConfigError, load_config
from essa.rundir import read_metrics
from essa.runtime.loop import Run
from tests.runtime_helpers import fake_args, launch, tiny_adapter, train_cmd


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    return tiny_adapter(tmp_path_factory.mktemp("tiny") / "adapter")


def _run(args, timeout=120):
    proc = launch(train_cmd(None, args))
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def test_adapter_selected_is_the_mean_with_the_best_validation(tmp_path, adapter):
    # sigma 1 on the fake quality landscape: the mean wanders, so the last mean is not the best
    code, err = _run(fake_args(tmp_path, adapter, "--set", "runtime.eval_every=1", "--set",
                               "search.generations=6", "--set", "search.sigma0=1.0", name="sel"))
    assert code == 0, err[-3000:]
    run = tmp_path / "sel"
    records = read_metrics(run / "metrics.jsonl")
    val = {r["generation"]: r["val_accuracy"] for r in records if r["phase"] == "validation"}
    best_g = max((g for g in val if g >= 0), key=lambda g: val[g])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["reported"] == "selected"
    assert summary["selected"] == {"generation": best_g, "val_score": val[best_g]}
    final = summary["validation"]["accuracy"]
    # the final validation reuses what the run measured on the same items; only the base is new
    assert summary["validation"]["from_validations"] == ["mean", "selected", "start"]
    assert "Validation scores of mean, selected, start are the ones measured during" in (run / "report.md").read_text()
    assert final["selected"] == val[best_g] and final["mean"] == val[5] and final["start"] == val[-1]
    assert final["base"] is not None and "base" not in summary["validation"]["from_validations"]
    assert final["selected"] >= max(v for g, v in val.items() if g >= 0) - 1e-12
    assert (run / "adapter_selected/adapter_model.safetensors").is_file()
    report = (run / "report.md").read_text()
    assert f"ESSA, selected: mean of generation {best_g}" in report
    assert f"The run returns adapter_selected, the mean of generation {best_g}" in report


def test_the_final_validation_scores_what_no_in_run_validation_did(tmp_path, adapter):
    """5 generations, a validation every 2: the last mean (generation 4) was never validated, so
    the final evaluation scores it beside the base; its score matches a re-scoring of the exported
    mean on the fake engine (deterministic), checked through the metrics record."""
    code, err = _run(fake_args(tmp_path, adapter, "--set", "runtime.eval_every=2", "--set",
                               "search.generations=5", "--set", "search.sigma0=1.0", name="odd"))
    assert code == 0, err[-3000:]
    summary = json.loads((tmp_path / "odd" / "summary.json").read_text())
    assert summary["validation"]["from_validations"] == ["selected", "start"]
    records = read_metrics(tmp_path / "odd" / "metrics.jsonl")
    final = next(r for r in records if r["phase"] == "final_validation")
    val = {r["generation"]: r["val_accuracy"] for r in records if r["phase"] == "validation"}
    assert sorted(val) == [-1, 1, 3]
    assert final["final_validation_accuracy_mean"] == summary["validation"]["accuracy"]["mean"]
    assert final["final_validation_accuracy_start"] == val[-1]


def test_patience_stops_the_search_and_a_resume_does_not_restart_it(tmp_path, adapter):
    args = fake_args(tmp_path, adapter, "--set", "runtime.eval_every=1", "--set", "search.generations=30",
                     "--set", "search.sigma0=2.0", "--set", "runtime.patience=2", name="pat")
    code, err = _run(args)
    assert code == 0, err[-3000:]
    run = tmp_path / "pat"
    records = read_metrics(run / "metrics.jsonl")
    val = [r["val_accuracy"] for r in records if r["phase"] == "validation"]
    searched = [r["generation"] for r in records if r["phase"] == "search"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stopped_early"] and len(searched) < 30
    # stopped exactly when the last two validations did not beat the best before them
    assert max(val[-2:]) <= max(val[:-2]) and all(max(val[:k - 2]) < max(val[k - 2:k])
                                                   for k in range(3, len(val)))
    assert "early stop after generation" in err
    assert "The search stopped early" in (run / "report.md").read_text()
    (run / "summary.json").unlink()  # resume from the checkpoint: no generation runs again
    code, err = _run(["--resume", str(run)])
    assert code == 0, err[-3000:]
    again = [r["generation"] for r in read_metrics(run / "metrics.jsonl") if r["phase"] == "search"]
    assert again == searched


def test_track_selection_keeps_the_best_generation_and_counts_validations_without_gain():
    means = iter([np.full(3, k, dtype=float) for k in range(10)])
    run = SimpleNamespace(state={}, strategy=SimpleNamespace(), config=SimpleNamespace(
        runtime=SimpleNamespace(patience=2, select_adapter=True)))
    for g, score in [(-1, 0.5), (4, 0.4), (9, 0.6), (14, 0.6), (19, float("nan")), (24, 0.55)]:
        run.strategy.mean = next(means)
        Run.track_selection(run, g, score)
    assert run.state["selected"]["generation"] == 9 and run.state["selected"]["vector"] == [2.0] * 3
    assert run.state["best_validation"] == 0.6 and run.state["validations_without_gain"] == 2
    assert Run.out_of_patience(run)
    run.config.runtime.patience = 0
    assert not Run.out_of_patience(run)


def test_paper_preset_sets_the_papers_method_and_explicit_fields_win():
    c = load_config(overrides=["search.preset=paper"])
    assert (c.search.mirrored, c.search.mean_lr, c.fitness.prompt_sampling,
            c.engine.stop_at_answer, c.runtime.select_adapter) == (False, 1.0, "uniform", False, False)
    c = load_config(overrides=["search.preset=paper", "fitness.prompt_sampling=informative"])
    assert c.fitness.prompt_sampling == "informative" and not c.search.mirrored
    d = load_config()
    assert d.search.mirrored and d.fitness.prompt_sampling == "informative" and d.engine.stop_at_answer
    assert d.runtime.select_adapter
    with pytest.raises(ConfigError, match="'paper'"):
        load_config(overrides=["search.preset=papr"])


def test_evaluation_budget_sets_popsize_and_prompts_and_refuses_both():
    c = load_config(overrides=["search.evaluations_per_generation=384"])
    assert c.search.popsize * c.fitness.prompts_per_candidate <= 384
    assert c.search.popsize % 2 == 0 and c.search.popsize >= 4
    with pytest.raises(ConfigError, match="search.popsize"):
        load_config(overrides=["search.evaluations_per_generation=384", "search.popsize=8"])
    with pytest.raises(ConfigError, match="even search.popsize"):
        load_config(overrides=["search.popsize=7"])
    assert load_config(overrides=["search.popsize=7", "search.mirrored=false"]).search.popsize == 7


def test_without_selection_the_run_returns_the_last_mean(tmp_path, adapter):
    code, err = _run(fake_args(tmp_path, adapter, "--set", "runtime.eval_every=1", "--set",
                               "runtime.select_adapter=false", name="last"))
    assert code == 0, err[-3000:]
    summary = json.loads((tmp_path / "last/summary.json").read_text())
    assert summary["reported"] == "mean" and summary["selected"] is None
    assert "selected" not in summary["test"]["accuracy"]
    assert not (tmp_path / "last/adapter_selected").exists()
    assert "The run returns adapter_mean, the last mean" in (tmp_path / "last/report.md").read_text()
