#!/usr/bin/env bash
# Everything a session with a lent GPU runs, in one go (about 6 minutes on one H100):
# the GPU tests, the mixed-precision checks and throughput table, then the whole suite with CUDA present.
# Usage, from the repository root: bash benchmarks/gpu_run.sh [OUT_DIR]   (results land in OUT_DIR)
set -u -o pipefail
out=${1:-${OUT:-gpu-out}}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src
{ nvidia-smi -L; python3 -c "import sys, torch; print(sys.version.split()[0], torch.__version__, torch.version.cuda)"; } \
    2>&1 | tee "$out/device.txt"
timeout 150 python3 -m pytest -p no:cacheprovider -rs tests/test_gpu.py tests/test_accelerators.py tests/test_precision.py \
    2>&1 | tee "$out/gpu_tests.txt"
timeout 300 python3 benchmarks/gpu_check.py 2>&1 | tee "$out/gpu_check.md"
# the CPU suite on a machine where accelerator="auto" finds a GPU: nothing may assume there is none
timeout 240 python3 -m pytest -p no:cacheprovider -n 8 tests 2>&1 | tail -60 | tee "$out/full_suite.txt"
