#!/usr/bin/env bash
# GPU figures for docs/benchmarks.md, in one run on a CUDA machine:
#   prediction cost (cpu and paper presets), flow step, synthesis throughput with all cores,
#   MultiHands on the GPU, and paper-preset training throughput.
#
#   bash benchmarks/gpu_suite.sh [WORKDIR]      # handflow importable, python3 with CUDA torch
#
# Each step has its own time limit so that one slow step does not hide the others.
set -u
W=${1:-/tmp/hf_gpu}
PY=${PYTHON:-python3}
mkdir -p "$W"
step() { local limit=$1; shift; echo; echo "### $*"; local t0=$SECONDS
         timeout "$limit" "$@"; echo "### rc=$? wall=$((SECONDS - t0)) s"; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'cores', __import__('os').cpu_count())"
$PY -c "from handflow.render import gl; print('EGL available:', gl.egl_available())" 2>&1 | tail -1

step 60 $PY benchmarks/bench_predict.py --config cpu --device cuda --threads 4 --reps 20
step 90 $PY benchmarks/bench_predict.py --config paper --device cuda --threads 4 --reps 20
step 60 $PY benchmarks/bench_flow.py --device cuda
# synthesis with every core (one renderer per worker)
step 120 $PY -m handflow synth --out "$W/d128" --frames 500 --cameras 8 --image-size 128 --workers "$(nproc)" --no-progress
step 150 $PY -m handflow synth --out "$W/d256" --frames 500 --cameras 8 --image-size 256 --workers "$(nproc)" --no-progress
# MultiHands on the GPU (whole test split of the 128 px set, N = 100)
step 120 $PY -m handflow multihands --data "$W/d128" --split test --num 100 --out "$W/mh" --device cuda --batch-images 128 --no-progress
step 90 $PY benchmarks/bench_multihands.py --device cuda --images 256 --batch-images 128
# paper preset: ResNet-50, 224 px, batch 64, 16-mixed; steps/s after warm-up
step 240 $PY -m handflow train --config paper --data "$W/d256" --out "$W/paper" --resume no \
    train.max_steps=300 train.val_every=100000 train.ckpt_every=100000 data.num_workers=12
