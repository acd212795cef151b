#!/usr/bin/env bash
# Issue 21's GPU benchmark in ONE device call (<= 10 min): bench/bench_gpu.py in four parts, most important first,
# each under its own time limit so a slow part never costs the others' numbers. Every part prints as it goes and
# writes its JSON to $OUT (or bench/results) when it ends.
#
# Here, once (prepares bench/reference/, which git ignores and the device call carries):
#     bench/gpu_run.sh prepare        # NVIDIA's stylegan3 from /work/.mirror + open_clip wheels for the GPU image
# Then the device tool, one call:
#     run(command="PYTHONUNBUFFERED=1 bash bench/gpu_run.sh", carry=["bench/reference"], timeout_s=600)
set -u
cd "$(dirname "$0")/.."
REF=bench/reference
if [ "${1:-}" = "prepare" ]; then
    set -e
    MIRROR=${NVIDIA_MIRROR:-/work/.mirror/NVlabs+stylegan3/repo}
    rm -rf "$REF/stylegan3" && mkdir -p "$REF/stylegan3" "$REF/wheels"
    git -C "$MIRROR" archive HEAD | tar -x -C "$REF/stylegan3"
    # The GPU image has torch, timm, scipy, click, requests but not open_clip (CLIP, directions, weight shift).
    ${PYTHON:-python3} -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d "$REF/wheels" \
        open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.5
    du -sh "$REF"
    exit 0
fi

PY=${PYTHON:-python3}
RES=${OUT:-bench/results}
mkdir -p "$RES"
if ls "$REF"/wheels/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$REF"/wheels/*.whl \
        && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
[ -d "$REF/stylegan3" ] || echo "no $REF/stylegan3 (run 'bench/gpu_run.sh prepare' here first): NVIDIA columns skipped"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader 2>/dev/null || true
export MAX_JOBS=${MAX_JOBS:-16}            # NVIDIA's ops build with ninja: all cores
START=$SECONDS
part() {   # part <seconds> <name> <bench_gpu arguments...>
    local limit=$1 name=$2; shift 2
    echo; echo "######## part $name (limit ${limit} s, at ${SECONDS}s)"
    timeout --signal=INT --kill-after=10 "$limit" $PY bench/bench_gpu.py --device cuda --out "$RES/gpu_$name.json" "$@"
    echo "######## part $name: exit $? after $((SECONDS - START)) s"
}
# 1. Forward and forward+backward at 1024 px, batch 1 and 8: ours plain / fp32 / each eager switch vs NVIDIA's
#    compiled and pure-PyTorch ops (their plugins build here first), and filtered_lrelu's peak memory.
part 250 generator --sections generator,flrelu --switches nchw,tf32,bf16,fp16 --iters 3 --warmup 1
# 2. Inversion s/step and time to the projector's 1000-step LPIPS, CLIP Latent Optimize s/step (TF32 as the
#    accelerated setting: compiling these loops is part 4's question).
part 120 loops --sections inversion,clip --inv-accel tf32=true --inv-steps 10 --clip-steps 5
# 3. Global-direction precompute at 256 px (extrapolated), the editing methods' steps.
part 100 edits --sections directions,edits --gd-images 2 --edit-steps 3 --encoder-timeout 60
# 4. torch.compile with CUDA graphs (compiles take a minute each: one config, batch 1 and 8).
part $((580 - (SECONDS - START))) compiled --sections generator --configs sg2f-1024 --switches graphs \
    --iters 5 --warmup 3
echo "total $((SECONDS - START)) s"
