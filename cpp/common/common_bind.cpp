// Bindings of the machine-wide controls (registered into _cpu by cpp/module.cpp): the ISA level,
// threads, the allocator setting, and the FMA probe the benchmark suite measures the peak with.
#include <pybind11/pybind11.h>

#include <string>

#include "common/array_check.h"
#include "common/host_memory.h"
#include "common/isa.h"
#include "common/probe.h"
#include "common/threads.h"

namespace py = pybind11;

namespace fusegrad {

void register_common(py::module_& m) {
  m.def("isa", [] { return std::string(isa_name(active_isa())); }, "The active ISA level.");
  m.def("best_isa", [] { return std::string(isa_name(best_supported_isa())); });
  m.def("set_isa", [](const std::string& name) { set_active_isa(isa_from_name(name)); }, py::arg("name"));
  m.def("cpu_features", [] {
    py::dict features;
    for (int i = 0; i < kCpuFeatureCount; ++i)
      features[cpu_feature_name(CpuFeature(i))] = cpu_feature_usable(CpuFeature(i));
    return features;
  }, "The low-precision CPU features: name -> usable now (supported, enabled, avx512 level active).");
  m.def("supported_cpu_features", [] {
    py::list names;
    for (int i = 0; i < kCpuFeatureCount; ++i)
      if (cpu_feature_supported(CpuFeature(i))) names.append(cpu_feature_name(CpuFeature(i)));
    return names;
  });
  m.def("set_cpu_feature", [](const std::string& name, bool enabled) {
    set_cpu_feature_enabled(cpu_feature_from_name(name), enabled);
  }, py::arg("name"), py::arg("enabled"));
  m.def("set_num_threads", [](int n) {
    if (n < 1) throw py::value_error("set_num_threads: n must be >= 1, got " + std::to_string(n));
    set_num_threads(n);
  }, py::arg("n"));
  m.def("get_num_threads", &get_num_threads);
  m.def("keep_freed_memory_for_reuse", &keep_freed_memory_for_reuse,
        "Tune the C library's allocator to reuse freed large blocks (see cpp/common/host_memory.h).");
  m.def("set_flush_denormals", &set_flush_denormals, py::arg("on"),
        "Whether kernels flush subnormal floats to zero (default on; see cpp/common/threads.h).");
  m.def("flush_denormals", &flush_denormals);
  m.def("probe_fma_peak", [](int64_t iterations) {
    if (iterations < 0) throw py::value_error("iterations must be >= 0");
    const KernelCall kernel_call;
    return active_probe_kernels().fma_peak(iterations);
  }, py::arg("iterations"));
}

}  // namespace fusegrad
