#!/bin/bash
# On a machine with an NVIDIA Hopper GPU (sm_90a): builds the emulator's self-test kernels with nvcc into
# a small module and runs tests/emulator against the GPU instead of the emulator. The tests that
# need the emulator itself skip; the rest hold the hardware to the same references as the
# emulator. Needs nvcc, pybind11, numpy and pytest; not the fusegrad package. About a minute.
#   bash tests/emulator/gpu_check.sh          (writes its log to $OUT or /tmp)
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${OUT:-/tmp}"
build="$(mktemp -d)"
nvcc -O2 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -DFG_SM90A_BUILT --expt-relaxed-constexpr -Xcompiler -fPIC -shared -I cuda -I cpp \
  $(python3 -m pybind11 --includes) cuda/common/emulator/selftest.cu cuda/common/emulator/selftest_tensor_cores.cu cuda/common/cuda_check.cu \
  tests/emulator/selftest_gpu_module.cu -o "$build/fusegrad_selftest_gpu$(python3-config --extension-suffix)"
PYTHONPATH="$build" FUSEGRAD_SELFTEST_MODULE=fusegrad_selftest_gpu PYTHONUNBUFFERED=1 \
  python3 -m pytest -q -p no:cacheprovider --noconftest -rs tests/emulator 2>&1 | tee "$out/emulator-gpu-check.log"
