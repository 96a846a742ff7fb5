#!/usr/bin/env bash
# Idempotent set-up of the CPU stack in .venv (fast when nothing changed):
# create the venv, install the project with its CPU, GRPO, IFEval and test extras, remove the
# torchvision/torchaudio/torchcodec wheels that fail against torch 2.13.0+cpu, prepare the demo model;
# then the quantize venv .venv-quantize (llmcompressor, whose pins clash with vLLM's: see
# launch/requirements-quantize.txt) and the demo model's int8 and int4 copies (`essa quantize`).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
PY="$VENV/bin/python"
STAMP="$VENV/.essa-setup"
want="$(cat pyproject.toml launch/setup.sh | sha256sum | cut -d' ' -f1)"

if [ ! -x "$PY" ]; then
    echo "[setup] creating $VENV"
    python3 -m venv "$VENV"
fi
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
    echo "[setup] installing the project and its CPU stack into $VENV (a few minutes the first time)"
    "$PY" -m pip install --quiet --upgrade pip
    "$PY" -m pip install --quiet -e ".[cpu,grpo,ifeval,test]"
    "$PY" -m pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
    echo "$want" > "$STAMP"
fi

QVENV=.venv-quantize
QSTAMP="$QVENV/.essa-setup"
qwant="$(sha256sum launch/requirements-quantize.txt | cut -d' ' -f1)"
if [ ! -x "$QVENV/bin/python" ]; then
    echo "[setup] creating $QVENV"
    python3 -m venv "$QVENV"
fi
if [ "$(cat "$QSTAMP" 2>/dev/null)" != "$qwant" ]; then
    echo "[setup] installing llmcompressor into $QVENV (a minute or two the first time)"
    "$QVENV/bin/python" -m pip install --quiet --upgrade pip
    "$QVENV/bin/python" -m pip install --quiet -r launch/requirements-quantize.txt
    echo "$qwant" > "$QSTAMP"
fi
# the demo model, then its round-to-nearest int8 and int4 copies (kept while current)
"$VENV/bin/essa" prepare-model --quantize int8 --quantize int4 >/dev/null
where="$("$PY" -c 'from essa.models.prepare import cache_dir, demo_model_dir; print(demo_model_dir(), "(int8/int4 copies in", cache_dir() / "quantized", end=")")')"
echo "[setup] ready: $VENV, $QVENV, demo model in $where"
