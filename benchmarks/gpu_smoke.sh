#!/usr/bin/env bash
# One prepared GPU check: a few bf16 training steps of the Qwen2-0.5B p = 4 recipe with random
# weights and synthetic data, with each attention path (dense, flex), then a batch of generated
# images; tokens/s, MFU, peak memory, images/s -> $OUT/gpu_smoke.json (and the log beside it).
# Under 5 minutes on one H100-class GPU (the time limit below stops it otherwise; the JSON keeps
# every phase done). No network, no data files. See benchmarks/gpu_smoke.py for what is measured.
#
#   benchmarks/gpu_smoke.sh                 # CUDA
#   benchmarks/gpu_smoke.sh --tiny          # the plumbing on a CPU (or SMOKE_TINY=1)
#   OUT=/tmp/smoke PYTHON=/path/python benchmarks/gpu_smoke.sh --steps 4   # any gpu_smoke.py flag
#
# Needs mmar's dependencies (torch>=2.13, transformers>=5.24, ...; `pip install -e .`, or this
# checkout's src/ on PYTHONPATH, which this script adds).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-runs/gpu_smoke}"
mkdir -p "$OUT"
export OUT HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
args=("$@")
if [[ "${SMOKE_TINY:-0}" == 1 ]]; then args=(--tiny "${args[@]}"); fi
timeout "${SMOKE_TIMEOUT_S:-290}" "${PYTHON:-python3}" benchmarks/gpu_smoke.py --out "$OUT" \
    "${args[@]}" 2>&1 | tee "$OUT/gpu_smoke.log"
