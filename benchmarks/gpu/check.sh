#!/usr/bin/env bash
# archdsl's one-run GPU check, on the GPU machine, from the repository root (benchmarks/README.md):
#   bash benchmarks/gpu/check.sh                       # the main run: <= 8 minutes
#   bash benchmarks/gpu/check.sh --only torch-compile  # torch.compile(max-autotune): its own run
#   bash benchmarks/gpu/check.sh --only pytest-gpu     # the GPU test tier: its own run, <= 4 minutes
#   bash benchmarks/gpu/check.sh --only tune           # tune ResNet-50 into $OUT/tune.json: its own run
#   BUDGET_S=200 bash benchmarks/gpu/check.sh --stages stack,warm,correctness   # a short rerun
# No stage starts later than BUDGET_S seconds (default 450) after this script starts; Python is
# killed 60 s after that.  Everything lands in $OUT (default /tmp/out) as it is produced:
# results.jsonl, timeline.txt, env.json, log.txt, then <date>-<gpu>/results.{json,md,png}; the
# short table is printed last.  Needs .gpuready/ (benchmarks/gpu/prepare.sh) carried along.
set -uo pipefail
cd "$(dirname "$0")/../.."
START=$(date +%s)
BUDGET_S=${BUDGET_S:-450}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export OUT PYTHONUNBUFFERED=1 PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
export ARCHDSL_CACHE=${ARCHDSL_CACHE:-/tmp/archdsl-cache} TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-/tmp/triton-cache}
unset TRITON_INTERPRET
log() { echo "[$(( $(date +%s) - START ))s] $*" | tee -a "$OUT/log.txt"; }

# 1. the carried wheels, installed offline (the machine has no internet and no lark)
if ! python3 -c "import lark" 2>/dev/null; then
  if ! ls .gpuready/*.whl >/dev/null 2>&1 || ! python3 -m pip install -q --no-index --no-deps --no-compile \
      --no-cache-dir --target /tmp/site .gpuready/*.whl >>"$OUT/log.txt" 2>&1; then
    log "check: cannot install the carried wheels: run benchmarks/gpu/prepare.sh on the CPU machine, carry .gpuready"
    exit 2
  fi
fi
log "wheels: $(python3 -c 'import lark; print("lark", lark.__version__)' 2>&1)"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,temperature.gpu,power.draw \
  --format=csv >>"$OUT/log.txt" 2>&1 || log "nvidia-smi: not available"

# 2. the stages (check.py); a hang is cut 60 s after the last stage may start
LEFT=$(( BUDGET_S - ($(date +%s) - START) ))
timeout --kill-after=10 $(( LEFT + 60 )) python3 -m benchmarks.gpu.check --out "$OUT" --budget "$LEFT" \
  -j "$(nproc)" "$@" 2>&1 | tee -a "$OUT/log.txt" | cut -c1-300
rc=${PIPESTATUS[0]}
log "check.py exited with status $rc"

# 3. the results folder, drawn here (matplotlib is on the GPU machine), and the short table last
timeout 60 python3 -m benchmarks.gpu.collect "$OUT" --dest "$OUT" >>"$OUT/log.txt" 2>&1 || log "collect failed"
timeout 30 python3 -m benchmarks.gpu.collect "$OUT" --summary
exit "$rc"
