#!/usr/bin/env bash
# GPU check (issue 6), under 5 minutes: the transformers backends (policy and hf-prm) on the GPU
# with random-weight models built from configs (the GPU machine has torch and transformers but
# no model weights and no package registry), measuring best-of-N and beam-search throughput at
# equal N and their ratio. Figures go to stdout and, when $OUT is set, to $OUT/gpu_check.json.
#
#   benchmarks/gpu_check.sh prepare   # on the development machine: fetch the pure-Python wheels
#                                     # the GPU image lacks (math-verify and its two deps) into .whl/
#   benchmarks/gpu_check.sh           # on the GPU machine (device tool: run with carry [".whl"])
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "prepare" ]]; then
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl math-verify==0.9.0 latex2sympy2_extended==1.11.0 antlr4-python3-runtime==4.13.2
  ls -la .whl
  exit 0
fi
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1 && ! python3 -c "import math_verify" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
DEVICE=${DEVICE:-cuda}
JSON=${OUT:-/tmp}/gpu_check.json
# N=16, M=4 on 64 questions; a 0.5B policy and a 0.1B PRM (random weights), bfloat16 on the GPU.
timeout 280 python3 benchmarks/backend_throughput.py --backends transformers --random-models "${SIZE:-0.5b}" \
  --random-prm 0.1b --device "$DEVICE" --dtype "${DTYPE:-bfloat16}" --questions "${QUESTIONS:-64}" --n 16 --m 4 \
  --batch-size 256 --json-out "$JSON"
echo "figures written to $JSON"
