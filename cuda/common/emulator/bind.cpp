// The emulator's own functions in fusegrad._cuda_emulated (registered by cuda/module.cu).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>

#include "common/emulator/error.h"
#include "common/emulator/launch.h"
#include "common/emulator/memory.h"

namespace py = pybind11;

namespace fusegrad::cuda::emulator {

void register_emulator_selftests(py::module_& m);  // selftest.cu

void register_emulator(py::module_& m) {
  py::register_exception<EmulatorError>(m, "EmulatorError", PyExc_RuntimeError);
  m.attr("emulated") = true;

  m.def("launches", [] {
    py::list out;
    for (const LaunchRecord& r : launch_log()) {
      py::dict d;
      d["kernel"] = r.kernel;
      d["grid"] = py::make_tuple(r.grid.x, r.grid.y, r.grid.z);
      d["block"] = py::make_tuple(r.block.x, r.block.y, r.block.z);
      d["smem"] = r.smem_bytes;
      d["location"] = r.file;
      out.append(d);
    }
    return out;
  }, "Every launch since the last clear_launches(): dicts of kernel (as written at the launch site), grid, "
     "block, smem (dynamic shared memory bytes) and location (file:line of the launch)");
  m.def("clear_launches", &clear_launch_log);

  m.def("set_schedule_seed", &set_schedule_seed, py::arg("seed"),
        "Seed of the per-barrier-phase thread orders; the same seed replays the same schedule");
  m.def("schedule_seed", &schedule_seed);

  m.def("alloc", [](size_t nbytes, const std::string& placement) {
    const Placement p = placement_from_name(placement);
    py::gil_scoped_release release;
    return reinterpret_cast<uintptr_t>(allocate(nbytes, p));
  }, py::arg("nbytes"), py::arg("placement") = "end",
     "Guarded device memory: placement 'end' (last byte against a guard page), 'start' (first byte after "
     "one, page-aligned) or 'end_aligned' (256-byte aligned start, as cudaMalloc). Filled with 0xFF bytes.");
  m.def("free", [](uintptr_t address) {
    if (!release(reinterpret_cast<void*>(address)))
      throw py::value_error("free: " + std::to_string(address) + " is not the start of a live emulator allocation");
  }, py::arg("address"));
  m.def("allocation_of", [](uintptr_t address) -> py::object {
    AllocationInfo a{};
    if (!find_allocation(address, &a)) return py::none();
    py::dict d;
    d["id"] = a.id;
    d["address"] = a.user;
    d["nbytes"] = a.bytes;
    d["placement"] = placement_name(a.placement);
    d["offset"] = static_cast<long long>(address) - static_cast<long long>(a.user);
    d["live"] = a.live;
    return d;
  }, py::arg("address"), "The allocation whose guarded mapping holds address (None if none): id, address "
                          "(its first byte), nbytes, placement, offset of `address` from it, live");

  m.def("stats", [] {
    const EmulatorStats s = emulator_stats();
    py::dict d;
    d["launches"] = s.launches;
    d["blocks"] = s.blocks;
    d["fiber_switches"] = s.fiber_switches;
    return d;
  }, "Totals since import: launches run, blocks run, fiber context switches");

  register_emulator_selftests(m);
}

}  // namespace fusegrad::cuda::emulator
