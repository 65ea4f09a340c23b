#!/usr/bin/env bash
# The prepared GPU check: one command for a short spell on a GPU machine (Hopper, CUDA 13, PyTorch
# and CuPy installed, no package registry). It builds fusegrad for the GPU it finds, runs the tests
# marked `cuda`, runs compute-sanitizer (memcheck, racecheck) on one test per CUDA family, and runs
# the CUDA benchmark cases against PyTorch and CuPy, writing bench/results/cuda-<gpu>-<date>.json.
# Every step has its own time limit so that one hang cannot eat the spell; the summary at the end
# says which steps passed. Logs go to $OUT when set (the device tool's return folder), else to
# bench/results/gpu-check-logs/.
#
#   bash bench/gpu_check.sh            # everything, about 5-8 minutes on an H200
#   GPU_CHECK_STEPS="build tests" bash bench/gpu_check.sh   # a subset
set -uo pipefail
cd "$(dirname "$0")/.."

logs="${OUT:-bench/results/gpu-check-logs}"
mkdir -p "$logs"
steps="${GPU_CHECK_STEPS:-build tests sanitizer bench}"
py="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1 PIP_NO_INDEX=1
summary=()

step() {  # step NAME LIMIT_SECONDS COMMAND...: runs COMMAND with a limit, logs it, records the outcome
  local name="$1" limit="$2"; shift 2
  [[ " $steps " == *" $name "* ]] || return 0
  local start=$SECONDS
  echo "== $name (limit ${limit}s): $*"
  timeout --kill-after=10 "$limit" bash -c "$*" > >(tee "$logs/$name.log") 2>&1
  local rc=$?
  summary+=("$(printf '%-10s rc=%-3s %4ss' "$name" "$rc" "$((SECONDS - start))")")
  return $rc
}

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv || true
gpu="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | awk '{print tolower($NF)}')"
gpu="${gpu:-gpu}"
cc="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d .)"
result="bench/results/cuda-${gpu}-$(date +%Y-%m-%d).json"

build() {
  FUSEGRAD_CUDA_ARCHS="${FUSEGRAD_CUDA_ARCHS:-${cc:-90}}" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    "$py" -m pip install --no-build-isolation --no-deps --force-reinstall . &&
  (cd /tmp && "$py" -m fusegrad info)
}

# One small test per CUDA family under each compute-sanitizer tool.
sanitize() {
  local rc=0 tool
  local tests="tests/test_activation.py::test_cuda_strided_unaligned_and_out"
  tests+=" tests/test_optim_kernels.py::test_cuda_many_tensors_and_misaligned_views"
  for tool in memcheck racecheck; do
    compute-sanitizer --tool "$tool" --error-exitcode 99 --target-processes all \
      "$py" -m pytest -q -p no:cacheprovider -m cuda -x $tests || rc=$?
  done
  return $rc
}

export -f build sanitize
export py cc
step build 240 build
step tests 150 "$py" -m pytest -q -p no:cacheprovider -m cuda -rs tests
step sanitizer 150 sanitize
step bench 200 "$py" -m fusegrad bench --device cuda --json "$result"
[[ -f "$result" ]] && cp "$result" "$logs/"

echo "== summary ($gpu, sm_${cc:-?})"
printf '%s\n' "${summary[@]}"
