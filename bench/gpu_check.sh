#!/usr/bin/env bash
# The prepared GPU check: one command for a short spell on a GPU machine (Hopper, CUDA 13, PyTorch
# and CuPy installed, no package registry). In about 6-8 minutes it
#   1. builds fusegrad for the GPU it finds (the CPU and CUDA modules; not the emulated one);
#   2. runs every test marked `cuda`;
#   3. runs the CUDA benchmark cases against PyTorch (cuBLAS/cuDNN) and CuPy, writing
#      bench/results/cuda-<gpu>-<date>.json;
#   4. runs the emulator's self-test kernels on the hardware against the same references the
#      emulator is held to (PTX fragment layouts, shuffles, cp.async, launch errors);
#   5. runs compute-sanitizer memcheck and racecheck on one test per CUDA family;
#   6. checks and times the Hopper wgmma GEMM apart (its tests, then its bench cases into
#      bench/results/cuda-<gpu>-<date>-wgmma.json), after the rest: it has run only on the emulator
#      so far, and a kernel fault would spoil every later CUDA call of its process.
# Each step has its own time limit, so one hang cannot eat the spell; the summary at the end says
# which steps passed. Logs go to $OUT when set (the device tool's return folder), else to
# bench/results/gpu-check-logs/.
#
#   bash bench/gpu_check.sh                                    # everything
#   GPU_CHECK_STEPS="build tests" bash bench/gpu_check.sh      # a subset
set -uo pipefail
cd "$(dirname "$0")/.."

logs="${OUT:-bench/results/gpu-check-logs}"
mkdir -p "$logs"
steps="${GPU_CHECK_STEPS:-build emulator tests sanitizer bench wgmma}"
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

# A Hopper (9.0) gets sm_90a code, which the wgmma kernel needs.
archs="${cc:-90}"
[[ "$archs" == 90 ]] && archs=90a

build() {
  FUSEGRAD_CUDA_ARCHS="${FUSEGRAD_CUDA_ARCHS:-$archs}" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    "$py" -m pip install --no-build-isolation --no-deps --force-reinstall \
    -Ccmake.define.FUSEGRAD_CUDA_EMULATED=OFF . &&
  (cd /tmp && "$py" -m fusegrad info)
}

# The emulator's self-test kernels built with nvcc, checked on the GPU by tests/emulator.
emulator() {
  local build
  build="$(mktemp -d)"
  local target="-arch=sm_${cc:-90}"
  [[ "$archs" == 90a ]] && target="-gencode=arch=compute_90a,code=sm_90a -DFG_SM90A_BUILT"
  nvcc -O2 -std=c++17 $target --expt-relaxed-constexpr -Xcompiler -fPIC -shared -I cuda -I cpp \
    $("$py" -m pybind11 --includes) cuda/common/emulator/selftest.cu cuda/common/emulator/selftest_tensor_cores.cu cuda/common/cuda_check.cu \
    tests/emulator/selftest_gpu_module.cu -o "$build/fusegrad_selftest_gpu$("$py"-config --extension-suffix 2>/dev/null || echo .so)" &&
  PYTHONPATH="$build" FUSEGRAD_SELFTEST_MODULE=fusegrad_selftest_gpu \
    "$py" -m pytest -q -p no:cacheprovider --noconftest -rs tests/emulator
}

# One test per CUDA family under each compute-sanitizer tool: the scalar and vector paths, tails.
SANITIZED_TESTS=(
  "tests/activation/test_activation.py::test_cuda_strided_unaligned_and_out"
  "tests/optim/test_optim_kernels.py::test_cuda_many_tensors_and_misaligned_views"
  "tests/pool/test_pool_cuda.py::test_max_pool_misaligned_views_take_the_scalar_path"
  "tests/pool/test_pool_cuda.py::test_backward_cells[gpu-geo5-True-4]"
  "tests/softmax/test_softmax_cuda.py::test_cross_entropy_misaligned_long_rows"
  "tests/gemm/test_gemm_cuda.py::test_tails_of_each_kernel_and_tile"
  "tests/conv/test_conv_cuda.py::test_forward_and_backward_passes"
  "tests/rnn/test_rnn_kernels_cuda.py::test_partial_gradients_and_output_views"
  "tests/attention/test_attention_cuda.py::test_forward_and_backward_match_the_reference"
  "tests/gemm/test_quantized_matmul_cuda.py::test_exact_int32_on_edge_shapes"
  "tests/conv/test_quantized_conv_cuda.py::test_exact_int32"
  "tests/gemm/test_gemm_cuda.py::test_wgmma_tails"
)
sanitize() {
  local rc=0 tool
  for tool in memcheck racecheck; do
    compute-sanitizer --tool "$tool" --error-exitcode 99 --target-processes all \
      "$py" -m pytest -q -p no:cacheprovider -m cuda -x "${SANITIZED_TESTS[@]}" || rc=$?
  done
  return $rc
}

export -f build emulator sanitize
export py cc archs
export SANITIZED_TESTS_LIST="${SANITIZED_TESTS[*]}"
# Most valuable first: a spell may end early.
step build 300 build
step tests 240 '"$py" -m pytest -q -p no:cacheprovider -m cuda -rs --ignore=tests/emulator -k "not wgmma" tests'
step bench 300 "$py" -m fusegrad bench --device cuda --repeat "${BENCH_REPEAT:-10}" --json "$result"
[[ -f "$result" ]] && cp "$result" "$logs/"
export wgmma_result="${result%.json}-wgmma.json"
step wgmma 180 '"$py" -m pytest -q -p no:cacheprovider -m cuda -rs -k wgmma tests/gemm/test_gemm_cuda.py &&
  FUSEGRAD_BENCH_WGMMA=1 "$py" -m fusegrad bench --device cuda --filter wgmma --repeat "${BENCH_REPEAT:-10}" \
  --json "$wgmma_result"'
[[ -f "$wgmma_result" ]] && cp "$wgmma_result" "$logs/"
step emulator 120 emulator
step sanitizer 180 'SANITIZED_TESTS=($SANITIZED_TESTS_LIST); sanitize'

echo "== summary ($gpu, sm_${cc:-?})"
printf '%s\n' "${summary[@]}"
