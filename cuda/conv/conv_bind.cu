// Bindings of the CUDA convolutions (registered into _cuda by cuda/module.cu). Arrays arrive as
// device addresses of C-contiguous float32 arrays; `dims` is (N, H, W, C_in, KH, KW, C_out, OH,
// OW, sh, sw, dh, dw, pad_top, pad_left), C_in and C_out those of one group of `groups` (conv.cuh).
// fusegrad.ops.conv has checked dtypes, shapes, devices and the geometry (ops.conv.conv_geometry);
// these checks are the last guard.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <string>

#include "common/bind.cuh"
#include "conv/conv.cuh"

namespace py = pybind11;

namespace fusegrad {
namespace {

using Dims = std::array<int64_t, 15>;

cuda::ConvDims dims_of(const Dims& v, int64_t groups = 1) {
  if (groups < 1) throw py::value_error("conv: groups must be >= 1");
  cuda::ConvDims d;
  d.groups = groups;
  d.n = v[0], d.h = v[1], d.w = v[2], d.ci = v[3], d.kh = v[4], d.kw = v[5], d.co = v[6], d.oh = v[7], d.ow = v[8];
  d.sh = v[9], d.sw = v[10], d.dh = v[11], d.dw = v[12], d.pt = v[13], d.pl = v[14];
  for (int i = 0; i < 9; ++i)
    if (v[i] < 0) throw py::value_error("conv: sizes must be >= 0");
  if (d.sh < 1 || d.sw < 1 || d.dh < 1 || d.dw < 1) throw py::value_error("conv: stride and dilation must be >= 1");
  if (d.pt < 0 || d.pl < 0) throw py::value_error("conv: padding must be >= 0");
  return d;
}

cuda::ConvTiles tiles_of(const std::string& name) {
  if (name == "auto") return cuda::ConvTiles::automatic;
  if (name == "large") return cuda::ConvTiles::large;
  if (name == "small") return cuda::ConvTiles::small;
  throw py::value_error("tiles must be 'auto', 'large' or 'small', got '" + name + "'");
}

// A pointer that may be null only when the array it names is empty.
template <class T>
T* ptr(uintptr_t address, int64_t elements, const char* name) {
  return elements > 0 ? device_ptr<T>(address, name) : reinterpret_cast<T*>(address);
}

}  // namespace

void register_conv_cuda(py::module_& m) {
  m.def("int8_im2col", [](uintptr_t x, uintptr_t cols, const Dims& dims, int zero_point, uintptr_t stream,
                          int device) {
    const cuda::ConvDims d = dims_of(dims);
    if (zero_point < 0 || zero_point > 255) throw py::value_error("int8_im2col: zero_point must be in [0, 255]");
    const int64_t rows = d.n * d.oh * d.ow, k = d.kh * d.kw * d.ci;
    if (rows * k == 0) return;
    const auto* xp = ptr<const uint8_t>(x, d.n * d.h * d.w * d.ci, "x");
    auto* cp = device_ptr<uint8_t>(cols, "cols");
    py::gil_scoped_release release;
    cuda::int8_im2col(d, xp, cp, static_cast<uint8_t>(zero_point), as_stream(stream), device);
  }, py::arg("x"), py::arg("cols"), py::arg("dims"), py::arg("zero_point"), py::arg("stream"), py::arg("device"),
     "the (N·OH·OW) × (KH·KW·C) patches of a uint8 NHWC image, padding = zero_point (dims as conv2d_forward's)");
  m.def("conv2d_forward", [](uintptr_t x, uintptr_t w, uintptr_t bias, uintptr_t y, const Dims& dims, int code,
                             float param, const std::string& tiles, uintptr_t stream, int device, int64_t groups) {
    const cuda::ConvDims d = dims_of(dims, groups);
    const Activation act = activation_from_code(code);
    const auto t = tiles_of(tiles);
    const int64_t ny = d.n * d.oh * d.ow * d.co * groups, k = d.kh * d.kw * d.ci;
    if (ny == 0) return;
    const float* xp = ptr<const float>(x, d.n * d.h * d.w * d.ci * groups, "x");
    const float* wp = ptr<const float>(w, k * d.co * groups, "w");
    float* yp = device_ptr<float>(y, "y");
    py::gil_scoped_release release;
    cuda::conv_forward(d, xp, wp, reinterpret_cast<const float*>(bias), yp, act, param, t, as_stream(stream), device);
  }, py::arg("x"), py::arg("w"), py::arg("bias"), py::arg("y"), py::arg("dims"), py::arg("activation"),
     py::arg("param"), py::arg("tiles"), py::arg("stream"), py::arg("device"), py::arg("groups") = 1,
     "y = act(conv(x, w) + bias), NHWC / HWIO (cuda/conv/conv.cuh)");

  m.def("conv2d_forward_max_pool", [](uintptr_t x, uintptr_t w, uintptr_t bias, uintptr_t y, uintptr_t indices,
                                      const Dims& dims, int64_t pool, int code, float param, uintptr_t stream,
                                      int device) {
    const cuda::ConvDims d = dims_of(dims);
    const Activation act = activation_from_code(code);
    if (pool < 1) throw py::value_error("pool must be >= 1");
    if (d.n * (d.oh / pool) * (d.ow / pool) * d.co == 0) return;
    const float* xp = ptr<const float>(x, d.n * d.h * d.w * d.ci, "x");
    const float* wp = ptr<const float>(w, d.kh * d.kw * d.ci * d.co, "w");
    float* yp = device_ptr<float>(y, "y");
    int32_t* ip = device_ptr<int32_t>(indices, "indices");
    const cudaStream_t s = as_stream(stream);
    py::gil_scoped_release release;
    cuda::DeviceGuard guard(device);
    float* conv = nullptr;  // the conv output, pooled and freed in stream order
    FG_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&conv), sizeof(float) * d.n * d.oh * d.ow * d.co, s));
    cuda::conv_forward(d, xp, wp, reinterpret_cast<const float*>(bias), conv, Activation::none, 0.0f,
                       cuda::ConvTiles::automatic, s, device);
    cuda::conv_max_pool(conv, yp, ip, d.n, d.oh, d.ow, d.co, pool, act, param, s, device);
    FG_CUDA_CHECK(cudaFreeAsync(conv, s));
  }, py::arg("x"), py::arg("w"), py::arg("bias"), py::arg("y"), py::arg("indices"), py::arg("dims"), py::arg("pool"),
     py::arg("activation"), py::arg("param"), py::arg("stream"), py::arg("device"),
     "y, indices = max_pool(conv(x, w) + bias, pool) with act applied after pooling");

  m.def("conv2d_backward_input", [](uintptr_t g, uintptr_t w, uintptr_t dx, const Dims& dims,
                                    const std::string& tiles, uintptr_t stream, int device, int64_t groups) {
    const cuda::ConvDims d = dims_of(dims, groups);
    const auto t = tiles_of(tiles);
    if (d.n * d.h * d.w * d.ci == 0) return;
    const float* gp = ptr<const float>(g, d.n * d.oh * d.ow * d.co * groups, "grad_out");
    const float* wp = ptr<const float>(w, d.kh * d.kw * d.ci * d.co * groups, "w");
    float* dxp = device_ptr<float>(dx, "dx");
    py::gil_scoped_release release;
    cuda::conv_backward_input(d, gp, wp, dxp, t, as_stream(stream), device);
  }, py::arg("grad_out"), py::arg("w"), py::arg("dx"), py::arg("dims"), py::arg("tiles"), py::arg("stream"),
     py::arg("device"), py::arg("groups") = 1, "dx = the gradient of conv2d with respect to x");

  m.def("conv2d_backward_weight", [](uintptr_t x, uintptr_t g, uintptr_t dw, const Dims& dims,
                                     const std::string& tiles, int64_t splits, uintptr_t stream, int device,
                                     int64_t groups) {
    const cuda::ConvDims d = dims_of(dims, groups);
    const auto t = tiles_of(tiles);
    if (d.kh * d.kw * d.ci * d.co == 0) return;
    const float* xp = ptr<const float>(x, d.n * d.h * d.w * d.ci * groups, "x");
    const float* gp = ptr<const float>(g, d.n * d.oh * d.ow * d.co * groups, "grad_out");
    float* dwp = device_ptr<float>(dw, "dw");
    py::gil_scoped_release release;
    cuda::conv_backward_weight(d, xp, gp, dwp, t, splits, as_stream(stream), device);
  }, py::arg("x"), py::arg("grad_out"), py::arg("dw"), py::arg("dims"), py::arg("tiles"), py::arg("splits"),
     py::arg("stream"), py::arg("device"), py::arg("groups") = 1,
     "dw = the gradient of conv2d with respect to w; splits: K splits (0: by size)");

  m.def("conv2d_backward_bias", [](uintptr_t g, uintptr_t db, int64_t rows, int64_t cols, uintptr_t stream,
                                   int device) {
    if (rows < 0 || cols < 0) throw py::value_error("conv2d_backward_bias: sizes must be >= 0");
    if (cols == 0) return;
    const float* gp = ptr<const float>(g, rows * cols, "grad_out");
    float* dbp = device_ptr<float>(db, "db");
    py::gil_scoped_release release;
    cuda::conv_backward_bias(gp, dbp, rows, cols, as_stream(stream), device);
  }, py::arg("grad_out"), py::arg("db"), py::arg("rows"), py::arg("cols"), py::arg("stream"), py::arg("device"),
     "db = grad_out (rows × cols) summed over its rows");
}

}  // namespace fusegrad
