#!/usr/bin/env bash
# One short GPU session (issue #17): synthesize -> pack -> throughput (cpu and paper presets,
# packed store on the device, channels-last, bf16 autocast) -> train for a fixed wall time ->
# evaluate; weights (float16, pieces <= 16 MiB) and metrics.json under $OUT.
#
#   OUT=gpu_out bash benchmarks/gpu_train.sh [--minutes 6] [--train-config cpu|paper] [...]
#   bash benchmarks/gpu_train.sh --cpu-smoke       # the same stages, tiny, on the CPU (minutes)
#
# Runs in the repository root. Python: $PYTHON, else .venv/bin/python (`make` installs it),
# else python3; handflow from ./src when it is not installed. No network is needed.
# Options are those of benchmarks/gpu_train.py (--help).
set -euo pipefail
cd "$(dirname "$0")/.."
export OUT=${OUT:-./gpu_out}
mkdir -p "$OUT"
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3
fi
if ! "$PY" -c "import handflow" 2>/dev/null; then
    export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! "$PY" -c "import handflow, lightning, torch" 2>/dev/null; then
    echo "handflow's dependencies are missing for $PY: trying make (needs a network or a package cache)" >&2
    make .venv/.installed && PY=.venv/bin/python
fi
# one log next to the metrics; the device named once more for the record
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi") \
    | tee "$OUT/device.txt"
"$PY" -c "import torch, sys, os; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', \
torch.cuda.is_available(), 'cores', os.cpu_count())" | tee -a "$OUT/device.txt"
"$PY" benchmarks/gpu_train.py --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_train.log"
