#!/usr/bin/env bash
# The GPU check: one command for a CUDA machine with Python 3.12 and torch preinstalled but none of our other
# dependencies and no internet. Run from the repository root:
#
#   benchmarks/gpu_check.sh OUT_DIR
#
# Before, on a machine with package access (drama's venv active):
#   python benchmarks/gpu_wheels.py            # ~8 MiB of cp312 wheels into wheels/gpu (git-ignored)
# and bring wheels/gpu along with the working tree.
#
# Steps (each with its own time limit, all within DRAMA_GPU_CHECK_BUDGET seconds, default 480):
#   install     pip install --no-index --no-deps --target <tmp> wheels/gpu/*.whl (nothing else is touched)
#   environment versions, CUDA device, which imports work (environment.json)
#   gpu_tests   pytest -m gpu: kernel parity (skips cleanly without mamba-ssm) and the GPU-resident replay
#   smoke       drama bench on conf/debug.yaml at tiny shapes: the whole loop on the device (bench_smoke.json)
#   bench       drama bench on conf/atari.yaml: eager fp32, bf16 (and bf16 + mamba-ssm kernels when mamba_ssm
#               imports), interleaved (bench_atari.json)
#   scaling     benchmarks/scaling.py on the device (scaling_*.json/md/png)
#   kernels     benchmarks/kernels.py when mamba_ssm imports (kernels_cuda.json)
# Every step's output goes to OUT_DIR/<step>.log; OUT_DIR/steps.txt has one line per step (rc, seconds). A failed
# step does not stop the later ones; the exit code is the number of failed steps.
#
# Environment: PYTHON (default python3), DRAMA_WHEELS (default wheels/gpu), DRAMA_GPU_CHECK_BUDGET (seconds),
# DRAMA_GPU_CHECK_SMOKE=1 (tiny shapes everywhere: how the CPU test of this script runs it).
set -uo pipefail

OUT=${1:?usage: benchmarks/gpu_check.sh OUT_DIR}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
WHEELS=${DRAMA_WHEELS:-$ROOT/wheels/gpu}
BUDGET=${DRAMA_GPU_CHECK_BUDGET:-480}
SMOKE=${DRAMA_GPU_CHECK_SMOKE:-0}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
: > "$OUT/steps.txt"
START=$(date +%s)
FAILED=0
TINY="env.max_episode_frames=200 train.prefill_steps=20 train.batch_size=2 train.batch_length=8 \
imagination.batch_size=8 imagination.context_length=4 imagination.horizon=4"

step() {  # step NAME LIMIT_S COMMAND... : run with min(limit, what is left of the budget)
    local name=$1 limit=$2
    shift 2
    local left=$(( BUDGET - ($(date +%s) - START) ))
    (( left < limit )) && limit=$left
    if (( limit <= 0 )); then
        echo "$name skipped: budget of ${BUDGET}s spent" | tee -a "$OUT/steps.txt"
        FAILED=$((FAILED + 1))
        return
    fi
    local t0 rc
    t0=$(date +%s)
    echo "== $name (limit ${limit}s)"
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    echo "$name rc=$rc $(( $(date +%s) - t0 ))s" | tee -a "$OUT/steps.txt"
    tail -n 3 "$OUT/$name.log"
    (( rc != 0 )) && FAILED=$((FAILED + 1))
}

SITE=$(mktemp -d)/site
step install 90 "$PY" -m pip install --quiet --no-index --no-deps --disable-pip-version-check --target "$SITE" \
    "$WHEELS"/*.whl
export PYTHONPATH="$SITE:$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
export MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736 MALLOC_TOP_PAD_=1073741824
cd "$ROOT" || exit 1

step environment 60 "$PY" - "$OUT/environment.json" <<'EOF'
import importlib, json, platform, sys
import torch
info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor(),
        "bf16_supported": torch.cuda.is_available() and torch.cuda.is_bf16_supported(), "imports": {}}
for name in ("tensordict", "torchrl", "omegaconf", "gymnasium", "ale_py", "cv2", "lightning", "rich", "drama",
             "drama.bench", "mamba_ssm"):
    try:
        module = importlib.import_module(name)
        info["imports"][name] = getattr(module, "__version__", "ok")
    except Exception as exc:  # noqa: BLE001 - report every failure, keep going
        info["imports"][name] = f"error: {type(exc).__name__}: {exc}"
from drama.nn.backbones.kernels import kernel_unavailable_reason
info["mamba_ssm_kernels"] = kernel_unavailable_reason("cuda") or "available"
print(json.dumps(info))
open(sys.argv[1], "w").write(json.dumps(info, indent=2) + "\n")
EOF
KERNELS=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['mamba_ssm_kernels'])" \
    "$OUT/environment.json" 2>/dev/null || echo unknown)

# -o addopts=-ra: the GPU machine has no pytest-xdist, which pyproject's addopts (-n auto) would need
step gpu_tests 120 "$PY" -m pytest -q -p no:cacheprovider -o addopts=-ra -m gpu tests/nn/backbones/test_kernels.py \
    tests/data/test_replay.py

if [[ $SMOKE == 1 ]]; then
    step smoke 120 "$PY" -m drama bench --config conf/debug.yaml $TINY --iterations 1 --warmup 1 --threads 1 \
        --out "$OUT/bench_smoke.json"
    step bench 120 "$PY" -m drama bench --config conf/debug.yaml $TINY runtime.precision=32-true --iterations 1 \
        --warmup 0 --threads 1 --compare "train.batch_length=6" --out "$OUT/bench_atari.json"
    step scaling 120 "$PY" benchmarks/scaling.py --config conf/debug.yaml --backbones mamba2 --lengths 8 \
        --batch 1 --repeats 1 --imagine-batch 4 --context 4 --horizon 3 --threads 1 --isolate inline \
        --out-dir "$OUT"
else
    step smoke 120 "$PY" -m drama bench --config conf/debug.yaml $TINY --iterations 2 --warmup 1 \
        --compare "runtime.precision=bf16-mixed" --out "$OUT/bench_smoke.json"
    VARIANTS=(--compare "runtime.precision=bf16-mixed")
    [[ $KERNELS == available ]] && VARIANTS+=(--compare "runtime.precision=bf16-mixed world_model.backbone.impl=kernel")
    step bench 240 "$PY" -m drama bench --config conf/atari.yaml runtime.precision=32-true world_model.backbone.impl=torch \
        --iterations 5 --warmup 2 "${VARIANTS[@]}" --out "$OUT/bench_atari.json"
    step scaling 180 "$PY" benchmarks/scaling.py --device cuda --out-dir "$OUT"
    [[ $KERNELS == available ]] && step kernels 90 "$PY" benchmarks/kernels.py --out "$OUT/kernels_cuda.json"
fi

echo "gpu_check: $FAILED failed step(s), $(( $(date +%s) - START ))s in all; results in $OUT" | tee -a "$OUT/steps.txt"
exit "$FAILED"
