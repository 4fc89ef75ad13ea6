#!/usr/bin/env bash
# One command for a lent GPU: every GPU measurement, written under one folder.
#   bash benchmarks/gpu_suite.sh --device cuda --out benchmarks/results/gpu-$(date +%F)
#   bash benchmarks/gpu_suite.sh --device cpu --out /tmp/suite     # reduced run, exercised by the tests
# The logic is benchmarks/gpu_suite.py; this wrapper only picks the interpreter (PYTHON, else the
# checkout's .venv, else python3) and puts the checkout's src/ first on the import path.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
    if [[ -x "$root/.venv/bin/python" ]]; then python="$root/.venv/bin/python"; else python="python3"; fi
fi
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" "$here/gpu_suite.py" "$@"
