#!/usr/bin/env bash
# Every GPU measurement of docs/gpus.md in one run, on one GPU node (by hand or as a
# Slurm job); each part's output is printed and saved under LOGDIR:
#
#   scripts/bench_gpu.sh [LOGDIR]        # default out/bench-gpu
#   PARTS="cuda step" scripts/bench_gpu.sh   # only some parts; PYTHON=... to choose
#
#   cuda.log      the tests that need a CUDA device (pytest -m cuda)
#   step.log      ms per step by size and precision, and a 4x4 gallery's pairs per hour
#   quality.log   time to quality at 512 px: single-scale 500 steps against schedules
#   eager.log     steps without CUDA graphs, for the ratio with step.log
#   workers.log   one worker against two on the same GPU
#   cli.log       the sample 512 px gallery through the command, bf16
#   compile.log   the same gallery with compile: true
#
# A part that fails or overruns its time is reported and the next one still runs. If
# the CUDA tests fail, the later parts run without CUDA graphs.
set -uo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
logs=${1:-out/bench-gpu}
parts=${PARTS:-cuda step eager quality workers cli compile}
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
if ! part cuda 120 "$python" -m pytest -q -p no:cacheprovider -m cuda; then
    [[ " $parts " == *" cuda "* ]] && export NST_BATCH_CUDA_GRAPHS=0
fi
part step 180 "$python" scripts/bench_step.py --steps 100 --repeats 2 --gallery 4
part quality 180 "$python" scripts/bench_quality.py --size 512 \
    --schedule "scales=1 steps=166" \
    --schedule "scales=2 scale_steps=200 steps=150" \
    --schedule "scales=3 scale_steps=200 steps=120" \
    --schedule "scales=3 scale_steps=200 steps=150 precision=bf16"
NST_BATCH_CUDA_GRAPHS=0 part eager 90 "$python" scripts/bench_step.py --steps 100 --repeats 2 \
    --sizes 256 512 --precisions fp32 bf16
part workers 180 "$python" scripts/bench_workers.py --size 512 --steps 100 --devices cuda:0,cuda:0
part cli 180 "$python" -m nst_batch jobs/gallery-512.yaml --force --set params.precision=bf16
part compile 240 "$python" -m nst_batch jobs/gallery-512.yaml --force \
    --set params.precision=bf16 --set compile=true
exit $status
