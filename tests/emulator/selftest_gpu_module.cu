// fusegrad_selftest_gpu: the emulator's self-test kernels (cuda/common/emulator/selftest.cu) built
// with nvcc, so that gpu_check.sh can run tests/emulator against a real GPU with the same
// references: the fragment tables, shuffle semantics, cp.async and launch errors the emulator
// implements are then checked against the hardware.
#include <pybind11/pybind11.h>

namespace fusegrad::cuda::emulator {
void register_emulator_selftests(pybind11::module_& m);
}

PYBIND11_MODULE(fusegrad_selftest_gpu, m) {
  m.attr("emulated") = false;
  fusegrad::cuda::emulator::register_emulator_selftests(m);
}
