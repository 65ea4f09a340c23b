// Bindings of the CUDA pooling kernels (registered into _cuda by cuda/module.cu). Arrays arrive as
// device addresses of C-contiguous NHWC arrays; fusegrad.ops.pool has checked dtypes, shapes and
// devices and taken the output size from the one geometry function. These checks are the last
// guard: sizes that no pooling could produce are refused before any kernel runs.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "common/bind.cuh"
#include "pool/pool.cuh"
#include "pool/pool_size.h"

namespace py = pybind11;

namespace fusegrad {
namespace {

std::string pair(int64_t a, int64_t b) { return "(" + std::to_string(a) + ", " + std::to_string(b) + ")"; }

// input (n, h, w, c, oh, ow); window (kh, kw, sh, sw, ph, pw, dh, dw, ceil_mode).
cuda::PoolGeometry geometry(const py::tuple& input, const py::tuple& window) {
  if (input.size() != 6 || window.size() != 9)
    throw py::value_error("pooling geometry: expected (n, h, w, c, oh, ow) and (kh, kw, sh, sw, ph, pw, dh, dw, "
                          "ceil_mode)");
  cuda::PoolGeometry g{};
  g.n = input[0].cast<int64_t>(), g.h = input[1].cast<int64_t>(), g.w = input[2].cast<int64_t>();
  g.c = input[3].cast<int64_t>(), g.oh = input[4].cast<int64_t>(), g.ow = input[5].cast<int64_t>();
  g.kh = window[0].cast<int64_t>(), g.kw = window[1].cast<int64_t>(), g.sh = window[2].cast<int64_t>();
  g.sw = window[3].cast<int64_t>(), g.ph = window[4].cast<int64_t>(), g.pw = window[5].cast<int64_t>();
  g.dh = window[6].cast<int64_t>(), g.dw = window[7].cast<int64_t>();
  const bool ceil_mode = window[8].cast<bool>();
  if (g.n < 0 || g.h < 0 || g.w < 0 || g.c < 0) throw py::value_error("pooling: input sizes must be >= 0");
  const int64_t limit = int64_t(1) << 61;  // the dilated extent stays far from int64 overflow
  const bool dilation_ok = g.dh >= 1 && g.dw >= 1 && g.kh >= 1 && g.kw >= 1 && g.kh - 1 < limit / g.dh &&
                           g.kw - 1 < limit / g.dw;
  if (!dilation_ok || g.sh < 1 || g.sw < 1 || g.ph < 0 || g.pw < 0 || 2 * g.ph > g.kh || 2 * g.pw > g.kw ||
      g.h + 2 * g.ph < g.dh * (g.kh - 1) + 1 || g.w + 2 * g.pw < g.dw * (g.kw - 1) + 1)
    throw py::value_error("pooling: window " + pair(g.kh, g.kw) + ", stride " + pair(g.sh, g.sw) + ", padding " +
                          pair(g.ph, g.pw) + ", dilation " + pair(g.dh, g.dw) + " do not fit the input " +
                          pair(g.h, g.w));
  if (g.h * g.w > INT32_MAX) throw py::value_error("pooling: H * W does not fit the int32 indices");
  if (g.oh != pooled_size(g.h, g.kh, g.sh, g.ph, g.dh, ceil_mode) ||
      g.ow != pooled_size(g.w, g.kw, g.sw, g.pw, g.dw, ceil_mode))
    throw py::value_error("pooling: output size " + pair(g.oh, g.ow) + " does not match the geometry");
  return g;
}

// Average pooling has no dilation.
cuda::PoolGeometry avg_geometry(const py::tuple& input, const py::tuple& window) {
  const cuda::PoolGeometry g = geometry(input, window);
  if (g.dh != 1 || g.dw != 1) throw py::value_error("average pooling: dilation must be 1");
  return g;
}

// A forward pass has work whenever the output is not empty (oh, ow >= 1 always; with padding a
// window may hold no pixel, and an H or W of 0 is possible: the kernels handle it as the CPU does).
bool output_empty(const cuda::PoolGeometry& g) { return g.n == 0 || g.c == 0; }
bool input_empty(const cuda::PoolGeometry& g) { return g.n == 0 || g.h == 0 || g.w == 0 || g.c == 0; }

// The input's address, which may be 0 only when the input is empty.
const float* input_ptr(uintptr_t x, const cuda::PoolGeometry& g) {
  return input_empty(g) ? reinterpret_cast<const float*>(x) : device_ptr<const float>(x, "x");
}

}  // namespace

void register_pool_cuda(py::module_& m) {
  m.def("max_pool2d_forward", [](uintptr_t x, uintptr_t y, uintptr_t indices, const py::tuple& input,
                                 const py::tuple& window, uintptr_t stream, int device) {
    const cuda::PoolGeometry g = geometry(input, window);
    if (output_empty(g)) return;
    auto* ind = indices ? device_ptr<int32_t>(indices, "indices") : nullptr;
    py::gil_scoped_release release;
    cuda::max_pool2d_forward(g, input_ptr(x, g), device_ptr<float>(y, "y"), ind, as_stream(stream),
                             device);
  }, py::arg("x"), py::arg("y"), py::arg("indices"), py::arg("input"), py::arg("window"), py::arg("stream"),
     py::arg("device"), "input: (n, h, w, c, oh, ow); window: (kh, kw, sh, sw, ph, pw, dh, dw, ceil_mode); "
     "indices may be 0");

  m.def("max_pool2d_int8_forward", [](uintptr_t x, uintptr_t y, const py::tuple& input, const py::tuple& window,
                                      bool is_signed, uintptr_t stream, int device) {
    const cuda::PoolGeometry g = avg_geometry(input, window);  // no dilation either
    if (output_empty(g)) return;
    const auto* xp = input_empty(g) ? reinterpret_cast<const uint8_t*>(x) : device_ptr<const uint8_t>(x, "x");
    auto* yp = device_ptr<uint8_t>(y, "y");
    py::gil_scoped_release release;
    cuda::max_pool2d_int8_forward(g, xp, yp, is_signed, as_stream(stream), device);
  }, py::arg("x"), py::arg("y"), py::arg("input"), py::arg("window"), py::arg("is_signed"), py::arg("stream"),
     py::arg("device"), "max pooling of a uint8 (is_signed: int8) NHWC image; window as max_pool2d_forward's, dilation 1");

  m.def("max_pool2d_backward", [](uintptr_t grad_out, uintptr_t indices, uintptr_t grad_input, uintptr_t bad,
                                  const py::tuple& input, const py::tuple& window, uintptr_t stream, int device) {
    const cuda::PoolGeometry g = geometry(input, window);
    if (input_empty(g)) return;
    auto* bad_count = bad ? device_ptr<unsigned long long>(bad, "bad") : nullptr;
    py::gil_scoped_release release;
    cuda::max_pool2d_backward(g, device_ptr<const float>(grad_out, "grad_out"),
                              device_ptr<const int32_t>(indices, "indices"),
                              device_ptr<float>(grad_input, "grad_input"), bad_count, as_stream(stream), device);
  }, py::arg("grad_out"), py::arg("indices"), py::arg("grad_input"), py::arg("bad"), py::arg("input"),
     py::arg("window"), py::arg("stream"), py::arg("device"),
     "bad: 0, or a uint64 counter the kernel adds the indices outside their window to");

  m.def("avg_pool2d_forward", [](uintptr_t x, uintptr_t y, const py::tuple& input, const py::tuple& window,
                                 bool count_include_pad, uintptr_t stream, int device) {
    const cuda::PoolGeometry g = avg_geometry(input, window);
    if (output_empty(g)) return;
    py::gil_scoped_release release;
    cuda::avg_pool2d_forward(g, input_ptr(x, g), device_ptr<float>(y, "y"), count_include_pad,
                             as_stream(stream), device);
  }, py::arg("x"), py::arg("y"), py::arg("input"), py::arg("window"), py::arg("count_include_pad"),
     py::arg("stream"), py::arg("device"));

  m.def("avg_pool2d_backward", [](uintptr_t grad_out, uintptr_t grad_input, const py::tuple& input,
                                  const py::tuple& window, bool count_include_pad, uintptr_t stream, int device) {
    const cuda::PoolGeometry g = avg_geometry(input, window);
    if (input_empty(g)) return;
    py::gil_scoped_release release;
    cuda::avg_pool2d_backward(g, device_ptr<const float>(grad_out, "grad_out"),
                              device_ptr<float>(grad_input, "grad_input"), count_include_pad, as_stream(stream),
                              device);
  }, py::arg("grad_out"), py::arg("grad_input"), py::arg("input"), py::arg("window"), py::arg("count_include_pad"),
     py::arg("stream"), py::arg("device"));

  m.def("global_avg_pool2d_workspace_size", [](int64_t n, int64_t hw, int64_t c, int device) {
    if (n < 0 || hw < 0 || c < 0) throw py::value_error("sizes must be >= 0");
    return cuda::global_avg_pool2d_workspace_size(n, hw, c, device);
  }, py::arg("n"), py::arg("hw"), py::arg("c"), py::arg("device"),
     "float64 elements of workspace global_avg_pool2d_forward needs (0: none)");

  m.def("global_avg_pool2d_forward", [](uintptr_t x, uintptr_t y, uintptr_t workspace, int64_t n, int64_t hw,
                                        int64_t c, uintptr_t stream, int device) {
    if (n < 0 || hw < 0 || c < 0) throw py::value_error("sizes must be >= 0");
    if (n == 0 || c == 0) return;
    if (cuda::global_avg_pool2d_workspace_size(n, hw, c, device) > 0 && workspace == 0)
      throw py::value_error("global_avg_pool2d_forward: workspace required");
    const float* xp = hw > 0 ? device_ptr<const float>(x, "x") : nullptr;
    py::gil_scoped_release release;
    cuda::global_avg_pool2d_forward(xp, device_ptr<float>(y, "y"), reinterpret_cast<double*>(workspace), n, hw, c,
                                    as_stream(stream), device);
  }, py::arg("x"), py::arg("y"), py::arg("workspace"), py::arg("n"), py::arg("hw"), py::arg("c"),
     py::arg("stream"), py::arg("device"));

  m.def("global_avg_pool2d_backward", [](uintptr_t grad_out, uintptr_t grad_input, int64_t n, int64_t hw,
                                         int64_t c, uintptr_t stream, int device) {
    if (n < 0 || hw < 0 || c < 0) throw py::value_error("sizes must be >= 0");
    if (n == 0 || hw == 0 || c == 0) return;
    py::gil_scoped_release release;
    cuda::global_avg_pool2d_backward(device_ptr<const float>(grad_out, "grad_out"),
                                     device_ptr<float>(grad_input, "grad_input"), n, hw, c, as_stream(stream), device);
  }, py::arg("grad_out"), py::arg("grad_input"), py::arg("n"), py::arg("hw"), py::arg("c"), py::arg("stream"),
     py::arg("device"));
}

}  // namespace fusegrad
