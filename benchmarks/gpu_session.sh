#!/usr/bin/env bash
# One device call (the GPU machine of benchmarks/gpu_check.sh: Python 3.12, torch, no internet), from the repository
# root with wheels/gpu beside it (python benchmarks/gpu_wheels.py); writes into $OUT (the device tool's folder):
#
#   PROBE_S=260 CHECK_S=240 bash benchmarks/gpu_session.sh
#
# 1. World-model probes of the laptop preset (benchmarks/world_model_probe.py --random-rows 20000) on Krull and
#    Boxing, the preset and free-bits / KL-weight variants, eight processes side by side on the one GPU, each
#    PROBE_S seconds of updates (probes.tgz: one JSON and log per probe). Was measured so, 2026-12-04:
#    docs/decisions.md, "Version 4".
# 2. benchmarks/gpu_check.sh with a budget of CHECK_S seconds (gpu_check.tgz).
# About 530 s in all on an H200 with the defaults above.
set -u
export PYTHONUNBUFFERED=1 MALLOC_MMAP_MAX_=0
T0=$(date +%s)
PROBE_S=${PROBE_S:-200}
CHECK_S=${CHECK_S:-200}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
    --target /tmp/site wheels/gpu/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
mkdir -p /tmp/probes
probe() {  # probe NAME GAME [--set ...]
    local name=$1 game=$2; shift 2
    timeout $((PROBE_S + 150)) python3 benchmarks/world_model_probe.py --config laptop --random-rows 20000 \
        --set env.id=ALE/$game-v5 "$@" --device "${PROBE_DEVICE:-cuda}" --updates 50000 --every 500 --time-limit "$PROBE_S" \
        --out /tmp/probes/$name.json > /tmp/probes/$name.log 2>&1 &
}
FB1=(--set world_model.loss.free_bits=1)  # version 3's floor; laptop's own is 10 since version 4
probe krull_v3_free_bits1 Krull "${FB1[@]}"
probe krull_free_bits4 Krull --set world_model.loss.free_bits=4
probe krull_free_bits10 Krull --set world_model.loss.free_bits=10
probe krull_dynamics0.1 Krull "${FB1[@]}" --set world_model.loss.dynamics=0.1
probe krull_no_kl Krull --set world_model.loss.dynamics=0 --set world_model.loss.representation=0
probe boxing_v3_free_bits1 Boxing "${FB1[@]}"
probe boxing_free_bits4 Boxing --set world_model.loss.free_bits=4
probe boxing_free_bits10 Boxing --set world_model.loss.free_bits=10
sleep 20; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
wait
echo "probes done at $(( $(date +%s) - T0 )) s"
for f in /tmp/probes/*.log; do echo "== $f"; tail -n 2 "$f"; done
tar czf "$OUT/probes.tgz" -C /tmp probes
DRAMA_GPU_CHECK_BUDGET=$CHECK_S bash benchmarks/gpu_check.sh /tmp/gpu_check
tar czf "$OUT/gpu_check.tgz" -C /tmp gpu_check
echo "session done at $(( $(date +%s) - T0 )) s"
