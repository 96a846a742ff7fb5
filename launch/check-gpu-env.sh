#!/usr/bin/env bash
# check-gpu-env.sh: resolve the GPU environment (essa's core dependencies plus pyproject.toml's
# `gpu` and `grpo` extras) the way `pip install ".[gpu,grpo]"` would on a Linux x86_64 CUDA node,
# without installing anything, and print every package as name==version.
#
#   launch/check-gpu-env.sh            # print the resolved set
#   launch/check-gpu-env.sh --write    # ... and record it in launch/requirements-gpu.txt
#
# It makes a throwaway venv, upgrades its pip, and runs
#   pip install --dry-run --ignore-installed --report report.json <those requirements>
# against PyPI: pip reads the wheels' metadata only (PEP 658), so it needs network but no disk.
# Run it on (or for) Linux x86_64 with the Python the nodes use (PYTHON, default python3): the
# default PyPI vllm wheel is the CUDA build, and it pins its own torch.
#
# Local pip settings are switched off for a faithful resolve: a machine set up for the CPU stack
# may have a find-links folder with a torch +cpu wheel, a constraints file capping torch, or extra
# local indexes; any of these would change the answer.
set -euo pipefail
cd "$(dirname "$0")/.."

WRITE=0
case "${1:-}" in
    --write) WRITE=1 ;;
    "") ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: $0 [--write]" >&2; exit 2 ;;
esac

PYTHON=${PYTHON:-python3}
OUT=launch/requirements-gpu.txt
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# No config files, constraints, find-links or extra indexes: PyPI only.
export PIP_CONFIG_FILE=/dev/null PIP_CONSTRAINT= PIP_FIND_LINKS= PIP_EXTRA_INDEX_URL= \
       PIP_NO_INDEX= PIP_DISABLE_PIP_VERSION_CHECK=1
unset PIP_INDEX_URL
INDEX=(--index-url https://pypi.org/simple)

# Core dependencies + the gpu and grpo extras, read from pyproject.toml so this stays in step.
# Listed rather than `.[gpu,grpo]` so nothing is built, and essa itself stays out of the set.
mapfile -t REQS < <("$PYTHON" - <<'EOF'
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
extras = project["optional-dependencies"]
for req in project["dependencies"] + extras["gpu"] + extras["grpo"]:
    print(req)
EOF
)

"$PYTHON" -m venv "$TMP/venv"
PIP=("$TMP/venv/bin/python" -m pip)
"${PIP[@]}" install --quiet --upgrade "${INDEX[@]}" pip >&2
echo "[check-gpu-env] $("${PIP[@]}" --version | cut -d' ' -f1-2), $("$TMP/venv/bin/python" -V)," \
     "$(uname -sm); resolving: ${REQS[*]}" >&2
"${PIP[@]}" install --quiet --dry-run --ignore-installed "${INDEX[@]}" \
    --report "$TMP/report.json" "${REQS[@]}" >&2

# name==version for every package pip would install, sorted case-insensitively.
PINS=$("$TMP/venv/bin/python" - "$TMP/report.json" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
pins = {item["metadata"]["name"]: item["metadata"]["version"] for item in report["install"]}
for name in sorted(pins, key=str.lower):
    print(f"{name}=={pins[name]}")
EOF
)
echo "$PINS"

if [ "$WRITE" = 1 ]; then
    {
        echo "# The GPU environment (essa's dependencies + the gpu and grpo extras) as pip resolves it for"
        echo "# Linux x86_64 with CUDA ($(uname -m), $("$TMP/venv/bin/python" -V)), from PyPI."
        echo "# Produced by launch/check-gpu-env.sh --write on $(date +%F); re-run it to refresh."
        echo "# Install with: pip install -r launch/requirements-gpu.txt && pip install --no-deps -e ."
        echo "$PINS"
    } > "$OUT"
    echo "[check-gpu-env] wrote $OUT ($(echo "$PINS" | wc -l) packages)" >&2
fi
