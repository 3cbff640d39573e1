#!/usr/bin/env bash
# Build the 400-prompt evidence table (configs/cpu-evidence.yaml, issue 16) on a 2-core CPU:
# two `--shard i/2` profiles side by side, one core and one thread each (two jobs on 2 cores
# with torch's default threads slow each other far more than 2x), then merge, train the
# prompt estimators, and write the held-out report and the learning curve.
#
# Hours of work (see the table's metadata `profiling_cost`); every step resumes: rerun the
# script after an interruption and only what is missing is computed. It writes under OUT
# (default runs/cpu-evidence), never into tables/; to ship the result:
#   rm -rf tables/smollm2-135m__arith-check__arithmetic-400 && cp -r OUT tables/smollm2-135m__arith-check__arithmetic-400
# Usage: scripts/build_evidence_table.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-runs/cpu-evidence}"
CONFIG=configs/cpu-evidence.yaml
export OMP_NUM_THREADS=1 TTS_SELECTOR_THREADS=1
pids=()
for i in 0 1; do
  # pin each slice to its own core when taskset exists (util-linux)
  pin=(); command -v taskset >/dev/null && pin=(taskset -c "$i")
  "${pin[@]}" tts-selector profile "$CONFIG" --shard "$i/2" --out "$OUT-part$i" >> "$OUT-part$i.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
tts-selector merge "$OUT-part0" "$OUT-part1" --out "$OUT"
tts-selector train-estimator "$OUT" --features tfidf minilm
tts-selector evaluate --tables "$OUT" --save
tts-selector evaluate --tables "$OUT" --learning-curve --quiet --save
tts-selector inspect "$OUT" --plot "$OUT-plots/table.png"
