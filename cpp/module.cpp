// The _cpu module: registers each family's bindings (cpp/<family>/<family>_bind.cpp) and nothing
// else.
#include <pybind11/pybind11.h>

namespace py = pybind11;

namespace fusegrad {
void register_common(py::module_& m);      // common/common_bind.cpp
void register_activation(py::module_& m);  // activation/activation_bind.cpp
void register_softmax(py::module_& m);     // softmax/softmax_bind.cpp
void register_pool(py::module_& m);        // pool/pool_bind.cpp
void register_gemm(py::module_& m);        // gemm/gemm_bind.cpp
void register_gemm_bf16(py::module_& m);   // gemm/bf16_bind.cpp
void register_int8_gemm(py::module_& m);   // gemm/int8_bind.cpp
void register_conv(py::module_& m);        // conv/conv_bind.cpp
void register_optim(py::module_& m);       // optim/optim_bind.cpp
void register_rnn(py::module_& m);         // rnn/rnn_bind.cpp
void register_attention(py::module_& m);   // attention/attention_bind.cpp
}  // namespace fusegrad

PYBIND11_MODULE(_cpu, m) {
  m.doc() = "fusegrad CPU kernels";
  m.attr("__version__") = FUSEGRAD_VERSION;
  fusegrad::register_common(m);
  fusegrad::register_activation(m);
  fusegrad::register_softmax(m);
  fusegrad::register_pool(m);
  fusegrad::register_gemm(m);
  fusegrad::register_gemm_bf16(m);
  fusegrad::register_int8_gemm(m);
  fusegrad::register_conv(m);
  fusegrad::register_optim(m);
  fusegrad::register_rnn(m);
  fusegrad::register_attention(m);
}
