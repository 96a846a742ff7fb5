"""The master's run: start or resume, the generation loop (ask -> round -> tell -> metrics line
-> checkpoint; validation every runtime.eval_every generations, with an optional early stop),
final outputs (the best-validated mean is the adapter the run returns)."""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

import population
from essa.adapters.export import export_adapter
from essa.adapters.init import write_fresh_adapter
from essa.adapters.svd_space import SvdSpace
from essa.atomic import atomic_write
from essa.data import BatchSampler, load_task
from essa.data.informative import InformativeSampler, informative_items
from essa.fitness import fitness_vector
from essa.models import resolve_model_path
from essa.reporting.report import write_report
from essa.rundir import MetricsWriter
from essa.runtime import EXIT_FAILURE, EXIT_OK, EXIT_REQUEUE
from essa.runtime.master import Interrupted, Master, WorkerFailure
from essa.runtime.messages import BASE, Setup
from essa.runtime.monitor import make_sinks
from essa.runtime.state import CheckpointWriter, load_run_state, trim_metrics
from essa.runtime.transport import world
from essa.sft import ensure_warm_start, warm_start_dir
from essa.sft.cache import is_complete

log = logging.getLogger("essa")
TIMING_KEYS = ("time", "gen_seconds", "evals_per_s", "wall_time")  # differ between identical runs


def starting_adapter(config, run_dir: Path) -> Path:
    """adapter.init: 'sft' -> the cached warm start, 'fresh' -> a random adapter in the run
    directory, anything else -> an existing PEFT folder (a missing one is an error naming it)."""
    init, folder = config.adapter.init, run_dir / "start_adapter"
    if init == "sft":
        if (config.sft.source == "self" and config.runtime.master_evaluates and world()[1] > 1
                and not is_complete(warm_start_dir(config))):
            # sampling would start a second vLLM engine beside the one rank 0 starts to evaluate
            raise ValueError("sft.source self with runtime.master_evaluates: train the warm start "
                             "first (essa-sft --config ...), then start the run")
        return Path(ensure_warm_start(config))
    if init == "fresh":
        if not (folder / "adapter_model.safetensors").is_file():
            write_fresh_adapter(resolve_model_path(config.model.path), folder, rank=config.adapter.rank,
                                alpha=config.adapter.alpha, target_modules=config.adapter.target_modules,
                                rel_norm=0.02, seed=config.seed)
        return folder
    folder = Path(init).expanduser()
    if not (folder / "adapter_config.json").is_file():
        raise FileNotFoundError(f"adapter.init: {folder} is not a PEFT adapter folder "
                                f"(no adapter_config.json); use 'sft', 'fresh' or an adapter folder")
    return folder


class Run:
    """What the master holds for one run."""

    def __init__(self, config, run_dir: Path, transport, stop, resume: bool):
        self.config, self.run_dir, self.stop_flag = config, run_dir, stop
        self.sinks = make_sinks(config, run_dir)
        self.task = load_task(config.task)  # split sizes only; workers load their own copy
        self.start_adapter = adapter = starting_adapter(config, run_dir)
        self.space = SvdSpace.from_folder(adapter, config.adapter.alpha_frac,
                                          config.search.parametrization)
        if resume:
            self.strategy, self.state = load_run_state(run_dir)
            if self.state["space_sha256"] != self.space.checksum:
                raise ValueError(f"--resume: the starting adapter {adapter} is not the one the run "
                                 "was checkpointed with (sha256 differs)")
            trim_metrics(run_dir / "metrics.jsonl", self.state["generation"])
        else:
            trim_metrics(run_dir / "metrics.jsonl", 0)  # lines of a run that never checkpointed
            self.strategy = population.make_strategy(config.search.strategy, self.space.start_vector(),
                                                     sigma0=config.search.sigma0,
                                                     popsize=config.search.popsize, seed=config.seed,
                                                     mirrored=config.search.mirrored,
                                                     mean_lr=config.search.mean_lr)
            self.state = {"generation": 0, "tokens": 0, "wall_time": 0.0, "best_fitness": None,
                          "best_generation": None, "space_sha256": self.space.checksum,
                          "source_adapter": str(adapter)}
        self.metrics = MetricsWriter(run_dir / "metrics.jsonl")
        self.checkpoints = CheckpointWriter(run_dir)
        n_train, fit = len(self.task.split(config.task.train_split)), config.fitness
        if fit.prompt_sampling == "informative":
            self.sampler = InformativeSampler(n_train, fit.prompts_per_candidate, config.seed, fit.fresh_share)
            if "sampler" in self.state:
                self.sampler.load_state(self.state["sampler"])
        else:
            self.sampler = BatchSampler(n_train, fit.prompts_per_candidate, config.seed)
        self._val_item_seconds = 0.0  # seconds per validation item, once one validation was timed
        self.master = Master(transport, self.space.checksum, config.runtime.task_timeout_s,
                             should_abandon=lambda: stop.abandon,
                             min_task_items=config.runtime.min_task_items)

    def record(self, rec: dict) -> None:
        self.metrics.write(rec)
        for sink in self.sinks:
            sink.log(rec)

    def generation(self, g: int) -> float:
        """Run generation g; returns its seconds."""
        t0 = time.time()
        X = self.strategy.ask()  # (lambda, d)
        ids = self.sampler.batch(g)
        # The strategy draws the next generation's samples while the workers evaluate; it must
        # be done before the tell (population/ itself starts no threads).
        with ThreadPoolExecutor(1, thread_name_prefix="essa-prefetch") as ahead:
            prefetch = ahead.submit(self.strategy.prefetch)
            scores = self.master.run_round(g, X, [f"c{i}" for i in range(len(X))],
                                           self.config.task.train_split, ids,
                                           self.config.fitness.kind)
            prefetch.result()
        fitness = fitness_vector(scores)
        self.strategy.tell(X, fitness)
        rewards = reward_matrix(scores, len(ids))
        informative = int(informative_items(rewards).sum())
        reused = 0
        if isinstance(self.sampler, InformativeSampler):
            reused = self.sampler.last_batch["reused"]
            self.sampler.update(g, ids, rewards)
            self.state["sampler"] = self.sampler.state()
        seconds = time.time() - t0
        f = fitness[~population.sanitize_fitness(fitness, len(fitness))[1]]  # the finite ones
        tokens, state = sum(s.tokens for s in scores), self.state
        state["tokens"] += tokens
        state["wall_time"] = round(state["wall_time"] + seconds, 3)
        if f.size and (state["best_fitness"] is None or f.max() > state["best_fitness"]):
            state["best_fitness"], state["best_generation"] = float(f.max()), g
        rec = {"generation": g, "phase": "search", "fitness_kind": self.config.fitness.kind,
               **{f"fitness_{k}": _num(fn(f)) if f.size else None
                  for k, fn in (("max", np.max), ("mean", np.mean), ("median", np.median))},
               "failed": int(len(fitness) - f.size), "sigma": float(self.strategy.sigma),
               "best_fitness": self.state["best_fitness"], "tokens": tokens,
               "gen_seconds": round(seconds, 3), "evals_per_s": round(len(X) / seconds, 3),
               "wall_time": self.state["wall_time"], "stale_results": self.master.round.stale,
               "informative_prompts": informative, "reused_prompts": reused, "prompts": len(ids)}
        self.record(rec)
        log.info("gen %d  fitness max %.4f mean %.4f  sigma %.4f  failed %d  informative %d/%d  "
                 "%d tokens  %.1f s  (%.2f eval/s)", g, _or_nan(rec["fitness_max"]),
                 _or_nan(rec["fitness_mean"]), rec["sigma"], rec["failed"], informative, len(ids),
                 tokens, seconds, rec["evals_per_s"])
        return seconds

    def remaining_seconds(self, g: int, gen_seconds: float) -> float:
        """Time left after generation g: the generations at this one's pace, the validations and
        the final evaluation (3 or 4 vectors on validation and test items) at the pace of the first
        validation, or of this generation's candidate-prompt pairs when none was timed."""
        cfg, s, rt = self.config, self.config.search, self.config.runtime
        per_item = self._val_item_seconds or gen_seconds / (s.popsize * cfg.fitness.prompts_per_candidate)
        left = s.generations - g - 1
        validations = s.generations // rt.eval_every - (g + 1) // rt.eval_every if rt.eval_every else 0
        # final evaluation: base, start, mean and (with validations) the selected mean on test;
        # on validation only what no in-run validation scored (the base, and the last mean unless
        # the last generation was validated)
        rows = 4 if rt.eval_every and rt.select_adapter else 3  # as planned_tokens_per_engine counts
        val_rows = (1 + (s.generations % rt.eval_every != 0)) if rt.eval_every else 3
        items = (validations * rt.eval_items + val_rows * rt.eval_items + rows * rt.test_items
                 if cfg.task.validation_split else 3 * rt.test_items)
        return left * gen_seconds + items * per_item

    def validate_mean(self, g: int) -> None:
        """Score the mean vector on validation (g = -1: the starting adapter); the record carries
        the search's wall time and tokens so far, the axes of `essa compare`."""
        split = self.config.task.validation_split
        if not split:
            return
        n = min(self.config.runtime.eval_items, len(self.task.split(split)))
        t0 = time.time()
        accuracy = self.master.run_round(g, self.strategy.mean[None, :], ["mean"], split,
                                         np.arange(n), "accuracy", split_rows=True)[0].fitness
        # The first validation may have waited for the engines to start: time it from the first
        # worker's Hello.
        self._val_item_seconds = (time.time() - max(t0, self.master.first_ready_at or t0)) / n
        self.record({"generation": g, "phase": "validation", "val_accuracy": _num(accuracy),
                     "val_items": n, "wall_time": self.state["wall_time"],
                     "tokens_total": self.state["tokens"]})
        who = "start" if g < 0 else "mean"
        if self.config.fitness.kind == "reward_model":  # a score, not a share of right answers
            log.info("gen %d  validation reward-model score of the %s: %.4f (%d items)", g, who, accuracy, n)
        else:
            log.info("gen %d  validation accuracy of the %s: %.2f%% (%d items)", g, who, 100 * accuracy, n)
        self.track_selection(g, accuracy)

    def track_selection(self, g: int, score: float) -> None:
        """Keep the best-validated mean (adapter_selected; the start, g = -1, is only the bar
        the patience counts against) and count validations without improvement."""
        if not np.isfinite(score):
            return
        state = self.state
        # The final evaluation reuses these (same items, same greedy decoding) instead of scoring
        # the start and the last validated mean on validation again.
        if g < 0:
            state["start_validation"] = float(score)
        else:
            state["last_validation"] = {"generation": g, "val_score": float(score)}
        best = state.get("best_validation")
        if best is None or score > best:
            state["best_validation"], state["validations_without_gain"] = float(score), 0
        else:
            state["validations_without_gain"] = state.get("validations_without_gain", 0) + 1
        selected = state.get("selected")
        if not self.config.runtime.select_adapter:
            return  # the run returns the last mean (the paper's)
        if g >= 0 and (selected is None or score > selected["val_score"]):
            state["selected"] = {"generation": g, "val_score": float(score),
                                 "vector": self.strategy.mean.tolist()}

    def out_of_patience(self) -> bool:
        """runtime.patience validations in a row did not beat the best validation so far."""
        patience = self.config.runtime.patience
        return bool(patience) and self.state.get("validations_without_gain", 0) >= patience

    def checkpoint(self, g: int) -> None:
        """Freeze the run after generation g; the files are written while g + 1 runs."""
        self.state["generation"] = g + 1
        self.checkpoints.save(self.strategy, self.state)

    def run(self) -> int:
        cfg = self.config
        self.master.setup(Setup(self.space.record()))
        log.info("search space: %s; strategy %s, popsize %d; starting at generation %d of %d",
                 self.space.summary, type(self.strategy).__name__, cfg.search.popsize,
                 self.state["generation"], cfg.search.generations)
        try:
            if self.state["generation"] == 0 and cfg.runtime.eval_every:
                self.validate_mean(-1)  # the starting point of the validation curve
            first = self.state["generation"]
            last = first - 1 if self.state.get("stopped_early") else cfg.search.generations - 1
            for g in range(first, last + 1):
                seconds = self.generation(g)
                if g == first:  # an honest figure needs one real generation of this process
                    log.info("estimate: about %s more for the remaining %d generations, validations "
                             "and the final evaluation (from this generation's time)",
                             _duration(self.remaining_seconds(g, seconds)), cfg.search.generations - g - 1)
                if cfg.runtime.eval_every and (g + 1) % cfg.runtime.eval_every == 0:
                    self.validate_mean(g)
                if self.out_of_patience() and g + 1 < cfg.search.generations:
                    self.state["stopped_early"] = True
                    log.info("early stop after generation %d: validation has not improved for %d "
                             "validations (runtime.patience)", g, cfg.runtime.patience)
                self.checkpoint(g)
                if self.state.get("stopped_early"):
                    break
                if self.stop_flag.requested:
                    raise Interrupted(f"after generation {g}")
            self.finish()
        except Interrupted as why:
            log.warning("%s received: stopping %s; checkpoint at generation %d in %s; exit %d "
                        "(resume with --resume %s)", self.stop_flag.signal_name or "stop", why,
                        self.state["generation"], self.run_dir / "checkpoint", EXIT_REQUEUE, self.run_dir)
            self.master.stop("interrupted")
            return EXIT_REQUEUE
        except WorkerFailure as why:
            log.error("stopping the job: %s", why)
            self.master.stop("failure")
            return EXIT_FAILURE
        finally:
            self.checkpoints.wait()  # the last checkpoint is committed before any exit
            if self.checkpoints.skipped:
                log.info("%d checkpoint(s) skipped: a newer generation's state arrived while the "
                         "previous one was still being written", self.checkpoints.skipped)
            for sink in self.sinks:
                sink.close()
        self.master.stop("done")
        return EXIT_OK

    def finish(self) -> None:
        """Export best and mean adapters; score base/start/mean on validation and test; write
        summary.json and the report (report.md + fitness.png)."""
        cfg, s = self.config, self.strategy
        best = s.best_x if s.best_x is not None else s.mean
        selected = self.state.get("selected")
        vectors = {"best": best, "mean": s.mean}
        if selected is not None:
            vectors["selected"] = np.asarray(selected["vector"], dtype=np.float64)
        exported = {}
        for label, x in vectors.items():
            folder = self.run_dir / f"adapter_{label}"
            export_adapter(self.space, x, folder, base_model_name_or_path=cfg.model.path)
            exported[label] = str(folder)
        rt = cfg.runtime
        validation = self.final_eval("final_validation", cfg.task.validation_split, rt.eval_items)
        test = self.final_eval("test", cfg.task.test_split, rt.test_items)
        reported = "selected" if selected is not None else "mean"
        summary = {"method": "essa", "generations": s.generation, "evaluations": s.evaluations,
                   "reported": reported, "stopped_early": bool(self.state.get("stopped_early")),
                   "selected": None if selected is None else
                   {"generation": selected["generation"], "val_score": selected["val_score"]},
                   "best_fitness": self.state["best_fitness"],
                   "best_generation": self.state["best_generation"], "fitness_kind": cfg.fitness.kind,
                   "strategy": type(s).__name__, "search_dimension": self.space.dim,
                   "popsize": cfg.search.popsize, "sigma": float(s.sigma),
                   "tokens": self.state["tokens"], "wall_time": self.state["wall_time"],
                   "adapters": exported, "start_adapter": str(self.start_adapter),
                   "validation": validation, "test": test,
                   "engines": {str(rank): what for rank, what in sorted(self.master.engines.items())}}
        atomic_write(self.run_dir / "summary.json", json.dumps(summary, indent=1))
        log.info("summary: %d generations, best fitness %s, returned adapter_%s%s, test accuracy %s; "
                 "adapters in %s", s.generation, self.state["best_fitness"], reported,
                 f" (mean of generation {selected['generation']}, best validation)" if selected else "",
                 ", ".join(f"{k} {v:.3f}" for k, v in test.get("accuracy", {}).items()) or "skipped",
                 self.run_dir)
        log.info("report: %s", write_report(self.run_dir))

    def final_eval(self, phase: str, split: str, n: int) -> dict:
        """Greedy accuracy of the base model, the starting adapter, the last mean and the
        selected (best-validated) mean on n items."""
        if not n or not split or not self.task.splits.get(split):
            return {}
        n = min(n, len(self.task.split(split)))
        x0 = self.space.start_vector()
        mean = self.strategy.mean
        selected = self.state.get("selected")
        vectors = {"base": x0, "start": x0, "mean": mean}  # base: row 0, run without the adapter
        if selected is not None:
            vectors["selected"] = np.asarray(selected["vector"], dtype=np.float64)
        known = self._known_validation_scores(n) if phase == "final_validation" else {}
        same = selected is not None and np.array_equal(vectors["selected"], mean)
        if same and "mean" not in known:  # the last validated mean is the last mean: scored once
            vectors.pop("selected")
        to_score = [label for label in vectors if label not in known]
        scored = fitness_vector(self.master.run_round(
            self.strategy.generation, np.stack([vectors[label] for label in to_score]),
            [BASE if label == "base" else label for label in to_score], split, np.arange(n),
            "accuracy", split_rows=True))
        accuracy = {**known, **dict(zip(to_score, map(float, scored)))}
        if same:
            accuracy["selected"] = accuracy["mean"]
        labels = [label for label in ("base", "start", "mean", "selected") if label in accuracy]
        self.record({"generation": self.strategy.generation, "phase": phase, f"{phase}_items": n,
                     **{f"{phase}_accuracy_{k}": _num(accuracy[k]) for k in labels}})
        result = {"items": n, "accuracy": {k: accuracy[k] for k in labels}}
        if known:
            result["from_validations"] = sorted(known)
        return result

    def _known_validation_scores(self, n: int) -> dict:
        """Scores the in-run validations already measured on these n items: the start's (at
        generation -1), the selected mean's, and the last mean's when the last generation was
        validated. Runs resumed from an older checkpoint may lack them (then they are scored)."""
        if n != min(self.config.runtime.eval_items, len(self.task.split(self.config.task.validation_split))):
            return {}
        state, known = self.state, {}
        if state.get("start_validation") is not None:
            known["start"] = state["start_validation"]
        selected, last = state.get("selected"), state.get("last_validation")
        if selected is not None:
            known["selected"] = selected["val_score"]
        if last is not None and last["generation"] == self.strategy.generation - 1:
            known["mean"] = last["val_score"]
        return known


def reward_matrix(scores, n_items: int) -> np.ndarray:
    """(candidates, items) rewards of a generation (the fitness per item where a kind has no
    separate reward); NaN rows for failed candidates."""
    out = np.full((len(scores), n_items), np.nan)
    for row, score in enumerate(scores):
        values = score.rewards if score.rewards is not None else score.items
        if values is not None and len(values) == n_items:
            out[row] = values
    return out


def _duration(seconds: float) -> str:
    """'42 s', '13 min' or '2.5 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def _or_nan(value: float | None) -> float:
    """For the console line: a missing value prints as nan (0.0 stays 0.0)."""
    return float("nan") if value is None else value


def _num(value) -> float | None:
    """A JSON-safe float (None for missing or non-finite)."""
    if value is None or not np.isfinite(value):
        return None
    return float(value)
