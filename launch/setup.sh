#!/usr/bin/env bash
# Idempotent set-up of the CPU stack in .venv (fast when nothing changed):
# create the venv, install the project with its CPU, GRPO, IFEval and test extras, remove the
# torchvision/torchaudio/torchcodec wheels that fail against torch 2.13.0+cpu, prepare the demo model.
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
"$VENV/bin/essa" prepare-model >/dev/null
echo "[setup] ready: $VENV, demo model in $("$PY" -c 'from essa.models import demo_model_dir; print(demo_model_dir())')"
