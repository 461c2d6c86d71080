#!/usr/bin/env bash
# Every GPU measurement of docs/gpus.md in one run, on one GPU node (by hand or as a
# Slurm job); each part's output is printed and saved under LOGDIR:
#
#   scripts/bench_gpu.sh [LOGDIR]        # default out/bench-gpu
#   PARTS="cuda step" scripts/bench_gpu.sh   # only some parts; PYTHON=... to choose
#
#   cuda.log      the tests that need a CUDA device (pytest -m cuda)
#   step.log      ms per step by size and precision; a 4x4 gallery's pairs per hour in
#                 bf16 with every failed task's reason, the same gallery in fp32, and
#                 each output's fp32-evaluated loss against the fp32 run's (within 2%?)
#   batches.log   ms per image-step against batch size 1 to 16, 512 and 1024 px, bf16
#                 and fp32, with peak memory
#   profile.log   the top operators of a 512 px bf16 step, batch 1 and batch 8, and the
#                 host-device synchronizations; Chrome traces in profile/
#   host.log      the host's work per task and evaluation, what the GPU waits for
#   largest.log   the largest size that runs, fp32, tf32, bf16 and fp16, and why the
#                 next one did not
#   quality.log   time to quality at 512 px: single-scale 500 steps against schedules
#   eager.log     steps without CUDA graphs, for the ratio with step.log
#   workers.log   one worker against two on the same GPU
#   cli.log       the sample 512 px gallery through the command, bf16
#   compile.log   the same gallery with compile: true
#
# Parts run most important first. A part that fails or overruns its time is reported
# and the next one still runs. If the CUDA tests fail, the later parts run without CUDA
# graphs. Estimated from docs/gpus.md's H200 numbers (512 px: 5.6 ms a step in bf16,
# 13 ms in fp32; 1024 px fp32: 43 ms), about 18 minutes in all on an H200 (each part's
# estimate beside it); the limits add up to 34 minutes, the most it can take.
set -uo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
logs=${1:-out/bench-gpu}
parts=${PARTS:-cuda step batches profile host largest quality eager workers cli compile}
mkdir -p "$logs"
status=0

part() {  # part NAME SECONDS COMMAND...: run COMMAND with a time limit, log to NAME.log
    local name=$1 limit=$2
    shift 2
    [[ " $parts " == *" $name "* ]] || return 0
    echo "== $name: $*"
    local start=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee "$logs/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc after $((SECONDS - start)) s"
    [ "$rc" -eq 0 ] || status=1
    return "$rc"
}

nvidia-smi -L
"$python" -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name())'
# ~1 min.
if ! part cuda 120 "$python" -m pytest -q -p no:cacheprovider -m cuda; then
    [[ " $parts " == *" cuda "* ]] && export NST_BATCH_CUDA_GRAPHS=0
fi
# ~3 min: the table, 12 rows of 205 steps (~40 s); the bf16 gallery, 16 x 300 steps at
# 5.6 ms (~30 s); the fp32 one at 13 ms (~65 s); start-up and set-ups.
part step 300 "$python" scripts/bench_step.py --steps 100 --repeats 2 \
    --gallery 4 --gallery-compare-fp32
# ~3.5 min: per size and precision, batches 1+2+4+8+16 of 5 warm-up and 50 timed steps
# (1705 image-steps): 512 px bf16 ~10 s, fp32 ~22 s; 1024 px bf16 ~35 s, fp32 ~75 s at
# batch 1's rates (batches can only be faster); a capture and autotuning per call.
part batches 360 "$python" scripts/bench_step.py --batches 1 2 4 8 16 --sizes 512 1024 \
    --precisions bf16 fp32 --steps 50 --repeats 1
# ~1 min: start-up, then a warm-up and 12 evaluations per batch size.
part profile 120 "$python" scripts/profile_step.py --size 512 --precision bf16 \
    --batch 1 8 --steps 10 --out "$logs/profile"
# ~10 s: 500 evaluations of a 192-value problem, so that the device's share is nil.
part host 60 "$python" scripts/bench_host.py --device cuda
# ~3 min: per precision 5 steps at 1024 to 8192 px until one fails (fp32 at 4096 px is
# ~0.7 s a step), plus cuDNN autotuning at each size. One process per precision, so that
# a CUDA error left by a failed size cannot spoil the next precision's tries.
part largest 420 bash -c 'rc=0
    for precision in fp32 tf32 bf16 fp16; do
        "$0" scripts/bench_step.py --largest --precisions "$precision" || rc=1
    done
    exit $rc' "$python"
# ~1.5 min: 3 pairs single-scale 500 steps at 13 ms (~20 s) and the 4 schedules (~45 s).
part quality 150 "$python" scripts/bench_quality.py --size 512 \
    --schedule "scales=1 steps=166" \
    --schedule "scales=2 scale_steps=200 steps=150" \
    --schedule "scales=3 scale_steps=200 steps=120" \
    --schedule "scales=3 scale_steps=200 steps=150 precision=bf16"
# ~30 s: 4 rows of 205 eager steps.
NST_BATCH_CUDA_GRAPHS=0 part eager 90 "$python" scripts/bench_step.py --steps 100 --repeats 2 \
    --sizes 256 512 --precisions fp32 bf16
# ~1 min: two 2x2 galleries of 100 steps through the command, three process start-ups.
part workers 120 "$python" scripts/bench_workers.py --size 512 --steps 100 --devices cuda:0,cuda:0
# ~30 s: 9 tasks of 300 steps at 5.6 ms and a start-up.
part cli 120 "$python" -m nst_batch jobs/gallery-512.yaml --force --set params.precision=bf16
# ~3 min: a compilation per content shape (3), then the same 9 tasks.
part compile 240 "$python" -m nst_batch jobs/gallery-512.yaml --force \
    --set params.precision=bf16 --set compile=true
exit $status
