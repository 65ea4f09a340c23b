#include <pybind11/pybind11.h>
namespace py = pybind11;
namespace fusegrad {
void register_conv_cuda(py::module_& m) {}
}
