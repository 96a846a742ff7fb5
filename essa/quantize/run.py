"""``essa quantize``: a compressed-tensors copy of a local model, made by llmcompressor in its own venv.

    quantize_model("smollm2-135m-instruct", "int8")                 # round-to-nearest, seconds
    quantize_model("/models/Qwen2.5-32B", "int4", calibrate=True,
                   config="launch/configs/qwen2.5-32b-math-int4.yaml")   # GPTQ on the run's data

llmcompressor pins library versions that vLLM's venv cannot share, so the work is done by
``oneshot_script.py`` under the quantize venv's python (:func:`quantize_python`); this side checks
the request, draws the calibration texts, and publishes the result. The copy is written to a
temporary sibling folder with the child's log (``quantize.log``) and the manifest, then renamed
into place: a reader sees no folder or a finished one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from essa.models.resolve import resolve_model_path
from essa.quantize.paths import (MANIFEST, SCHEMES, checkpoint_quantization, is_current_copy,
                                 quantized_dir, source_fingerprint)
from essa.quantize.schemes import PER_CHANNEL, scheme_group_size

SCRIPT = Path(__file__).with_name("oneshot_script.py")
LOG = "quantize.log"
REQUIREMENTS = "launch/requirements-quantize.txt"
_LOG_TAIL_LINES = 25


class QuantizeError(RuntimeError):
    """The llmcompressor child failed (its log's tail is in the message)."""


def quantize_python() -> Path:
    """The quantize venv's python: ``$ESSA_QUANTIZE_PYTHON``, else ``.venv-quantize/bin/python``
    beside the running venv (``make setup`` creates it)."""
    configured = os.environ.get("ESSA_QUANTIZE_PYTHON")
    python = Path(configured) if configured else Path(sys.prefix).parent / ".venv-quantize" / "bin" / "python"
    if not python.is_file():
        where = f"ESSA_QUANTIZE_PYTHON={configured}" if configured else str(python)
        raise FileNotFoundError(
            f"no quantize venv: {where} does not exist. llmcompressor needs a venv of its own: run "
            f"`make setup`, or `python3 -m venv .venv-quantize && .venv-quantize/bin/pip install "
            f"-r {REQUIREMENTS}` and set ESSA_QUANTIZE_PYTHON to its bin/python")
    return python


def check_request(model_path: Path, scheme: str, output: Path, force: bool) -> None:
    """Refuse what cannot work, before anything slow starts."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown quantization scheme {scheme!r}; choose from {', '.join(SCHEMES)}")
    method = checkpoint_quantization(model_path)
    if method is not None:
        raise ValueError(f"{model_path} is already quantized ({method}); quantize the original "
                         f"unquantized checkpoint instead")
    if output.absolute() == model_path.absolute():
        raise ValueError(f"the output folder is the model folder itself ({output})")
    if output.exists() and not force:
        raise FileExistsError(f"{output} exists; pass --force to replace it")


def child_env() -> dict:
    """The environment of the child: nothing is downloaded at run time."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def log_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file ("" if there is none)."""
    if not path.is_file():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def run_child(python: Path, spec: dict, log_path: Path) -> dict:
    """Run ``oneshot_script.py`` on ``spec`` (its output to ``log_path``); returns its result line."""
    with tempfile.TemporaryDirectory(prefix="essa-quantize-") as work:
        spec_file = Path(work) / "spec.json"
        spec_file.write_text(json.dumps(spec))
        with open(log_path, "w", encoding="utf-8") as log:
            # cwd is a scratch folder: files the libraries drop in the cwd do not land anywhere kept
            proc = subprocess.run([str(python), str(SCRIPT), str(spec_file)], stdout=subprocess.PIPE,
                                  stderr=log, text=True, cwd=work, env=child_env())
    if proc.returncode != 0:
        raise QuantizeError(f"llmcompressor failed (exit {proc.returncode}); the end of its log:\n"
                            f"{log_tail(log_path)}")
    lines = proc.stdout.strip().splitlines()
    if not lines:
        raise QuantizeError(f"llmcompressor's child printed no result; the end of its log:\n"
                            f"{log_tail(log_path)}")
    return json.loads(lines[-1])


def calibration_spec(config, model_path: Path, scheme: str, samples: int, seed: int,
                     max_seq_len: int, work: Path) -> tuple[str, dict]:
    """Write the calibration texts to ``work``; returns (file, the manifest's calibration record)."""
    from essa.quantize.calibration import calibration_set
    texts, record = calibration_set(config, model_path, samples, seed)
    path = work / "calibration.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    print(f"calibration: {record['samples']} rows of {record['dataset']} ({record['split']} split, "
          f"seed {seed})", flush=True)
    config_file = str(Path(config).absolute()) if isinstance(config, (str, Path)) else None
    method = "smoothquant+gptq" if scheme == "int8" else "gptq"
    return str(path), {"method": method, **record, "max_seq_len": max_seq_len, "config": config_file}


def manifest(scheme: str, group_size, model_path: Path, calibration, result: dict) -> dict:
    """What the copy is and how it was made (:data:`MANIFEST`)."""
    weights = ("int8, one scale per output channel" if scheme == "int8" else
               f"int4, one scale per {'output channel' if group_size == PER_CHANNEL else f'{group_size} input columns'}")
    return {"scheme": scheme, "llmcompressor_scheme": SCHEMES[scheme], "group_size": group_size,
            "weights": weights,
            "activations": "int8, dynamic per token" if scheme == "int8" else "unquantized (16-bit)",
            "calibration": calibration, "source": str(model_path.absolute()),
            "source_fingerprint": source_fingerprint(model_path), "versions": result["versions"],
            "seconds": result["seconds"], "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def quantize_model(model, scheme: str, output=None, calibrate: bool = False, config=None,
                   samples: int = 64, seed: int = 0, group_size: int | None = None,
                   force: bool = False, max_seq_len: int = 512) -> Path:
    """Write a compressed-tensors ``scheme`` copy of ``model`` (a local folder or the demo alias)
    and return its folder.

    ``output`` defaults to :func:`essa.quantize.paths.quantized_dir`. Round-to-nearest unless
    ``calibrate``: then GPTQ (int8: SmoothQuant + GPTQ) on ``samples`` rows of ``config``'s
    train split drawn with ``seed``, each cut to ``max_seq_len`` tokens. ``group_size`` (int4
    only) must divide every layer's input size; by default the largest of 128/64/32 that does.
    An existing ``output`` is replaced only with ``force``.
    """
    if scheme not in SCHEMES:  # before the model is looked up: the cheaper mistake first
        raise ValueError(f"unknown quantization scheme {scheme!r}; choose from {', '.join(SCHEMES)}")
    if calibrate and (samples < 1 or max_seq_len < 1):
        raise ValueError(f"--samples and --max-seq-len must be >= 1 (got {samples}, {max_seq_len})")
    model_path = resolve_model_path(str(model)).absolute()
    output = Path(output).expanduser().absolute() if output else quantized_dir(model_path, scheme)
    check_request(model_path, scheme, output, force)
    group = scheme_group_size(model_path, scheme, group_size)
    python = quantize_python()
    label = "round-to-nearest" if not calibrate else f"calibrated on {samples} samples"
    print(f"quantizing {model_path} to {scheme} ({SCHEMES[scheme]}"
          f"{f', group size {group}' if group else ''}; {label}) -> {output}", flush=True)

    tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with tempfile.TemporaryDirectory(prefix="essa-calibration-") as work:
            calibration_file, calibration = None, "round-to-nearest"
            if calibrate:
                calibration_file, calibration = calibration_spec(config, model_path, scheme, samples,
                                                                 seed, max_seq_len, Path(work))
            spec = {"source": str(model_path), "output": str(tmp), "scheme": scheme, "group_size": group,
                    "calibrate": calibrate, "calibration_file": calibration_file,
                    "max_seq_len": max_seq_len}
            # the log is in the temporary folder while it runs, then in the output
            print(f"running llmcompressor under {python} (log: {tmp / LOG}) ...", flush=True)
            result = run_child(python, spec, tmp / LOG)
        if checkpoint_quantization(tmp) != "compressed-tensors":
            raise QuantizeError(f"llmcompressor wrote no compressed-tensors config in {tmp}")
        (tmp / MANIFEST).write_text(json.dumps(manifest(scheme, group, model_path, calibration, result),
                                               indent=2) + "\n")
    except BaseException:
        keep_log(tmp, output)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    from essa.sft.publish import publish_folder
    publish_folder(tmp, output, overwrite=force)
    print(f"quantized in {result['seconds']:.0f} s: {output}", flush=True)
    return output


def keep_log(tmp: Path, output: Path) -> None:
    """After a failure, keep the child's log beside the output as ``<name>.failed.log``."""
    if (tmp / LOG).is_file():
        failed = output.with_name(f"{output.name}.failed.log")
        shutil.move(str(tmp / LOG), failed)
        print(f"the full log: {failed}", file=sys.stderr, flush=True)


def ensure_quantized(model_path: Path, scheme: str) -> Path:
    """The round-to-nearest ``scheme`` copy of ``model_path`` in its default folder: kept when
    its manifest says it is a copy of the model as it is now, made (again) otherwise."""
    folder = quantized_dir(model_path, scheme)
    if is_current_copy(folder, model_path, scheme):
        return folder
    return quantize_model(model_path, scheme, force=True)
