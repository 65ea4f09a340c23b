// Bindings of the CUDA recurrent kernels (registered into _cuda by cuda/module.cu). Arrays arrive
// as device addresses (0 for None or an empty array); fusegrad.ops.rnn has checked dtypes, shapes,
// devices, layouts and the lengths, and allocated the outputs and the workspace. These checks are
// the last guard: sizes, the cell, and the pointers each call cannot do without.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "common/bind.cuh"
#include "rnn/rnn.cuh"

namespace py = pybind11;

namespace fusegrad {
namespace {

// A pointer the call needs when `used` (some element of it is read or written), else whatever came.
template <class T>
T* needed(uintptr_t address, const char* name, bool used) {
  return used ? device_ptr<T>(address, name) : reinterpret_cast<T*>(address);
}

template <class T>
T* optional(uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

RnnProblem problem(int cell, int64_t steps, int64_t batch, int64_t input, int64_t hidden, bool reverse,
                         bool batch_first, uintptr_t x, uintptr_t w_ih, uintptr_t w_hh, uintptr_t lengths) {
  if (cell != 0 && cell != 1) throw py::value_error("rnn: cell must be 0 (LSTM) or 1 (GRU)");
  if (steps < 0 || batch < 0 || input < 1 || hidden < 1)
    throw py::value_error("rnn: steps and batch must be >= 0, input and hidden sizes >= 1");
  RnnProblem p;
  p.cell = static_cast<RnnCell>(cell);
  p.steps = steps, p.batch = batch, p.input = input, p.hidden = hidden, p.reverse = reverse;
  p.x_ts = batch_first ? 1 : batch;
  p.x_bs = batch_first ? steps : 1;
  p.x = needed<const float>(x, "x", steps * batch > 0);
  p.w_ih = device_ptr<const float>(w_ih, "w_ih");
  p.w_hh = device_ptr<const float>(w_hh, "w_hh");
  p.lengths = optional<const int32_t>(lengths);
  return p;
}

}  // namespace

void register_rnn_cuda(py::module_& m) {
  m.def("rnn_forward", [](int cell, int64_t steps, int64_t batch, int64_t input, int64_t hidden, bool reverse,
                          bool batch_first, int64_t y_ts, int64_t y_bs, uintptr_t x, uintptr_t w_ih, uintptr_t w_hh,
                          uintptr_t b_ih, uintptr_t b_hh, uintptr_t h0, uintptr_t c0, uintptr_t lengths, uintptr_t y,
                          uintptr_t h_n, uintptr_t c_n, uintptr_t gates, uintptr_t hs, uintptr_t cs, uintptr_t xg,
                          uintptr_t hg, uintptr_t stream, int device) {
    RnnProblem p = problem(cell, steps, batch, input, hidden, reverse, batch_first, x, w_ih, w_hh, lengths);
    p.b_ih = optional<const float>(b_ih);
    p.b_hh = optional<const float>(b_hh);
    if (batch == 0) return;
    const bool lstm = cell == 0, run = steps > 0;
    RnnForwardOut o;
    o.h0 = optional<const float>(h0);
    o.c0 = lstm ? optional<const float>(c0) : nullptr;
    o.y = needed<float>(y, "y", run);
    o.y_ts = y_ts, o.y_bs = y_bs;
    o.h_n = device_ptr<float>(h_n, "h_n");
    o.gates = needed<float>(gates, "gates", run);
    o.hs = device_ptr<float>(hs, "hs");
    if (lstm) {
      o.c_n = device_ptr<float>(c_n, "c_n");
      o.cs = device_ptr<float>(cs, "cs");
    }
    float* xg_p = needed<float>(xg, "xg", run);
    float* hg_p = needed<float>(hg, "hg", run);
    py::gil_scoped_release release;
    cuda::rnn_forward(p, o, xg_p, hg_p, as_stream(stream), device);
  }, py::arg("cell"), py::arg("steps"), py::arg("batch"), py::arg("input"), py::arg("hidden"), py::arg("reverse"),
     py::arg("batch_first"), py::arg("y_ts"), py::arg("y_bs"), py::arg("x"), py::arg("w_ih"), py::arg("w_hh"),
     py::arg("b_ih"), py::arg("b_hh"), py::arg("h0"), py::arg("c0"), py::arg("lengths"), py::arg("y"), py::arg("h_n"),
     py::arg("c_n"), py::arg("gates"), py::arg("hs"), py::arg("cs"), py::arg("xg"), py::arg("hg"), py::arg("stream"),
     py::arg("device"),
     "One LSTM (cell 0) or GRU (cell 1) layer direction over a whole sequence on the device (cuda/rnn/rnn.cuh); "
     "fusegrad.ops.rnn checks the arguments and allocates the outputs and the workspace (xg, hg).");

  m.def("rnn_backward", [](int cell, int64_t steps, int64_t batch, int64_t input, int64_t hidden, bool reverse,
                           bool batch_first, int64_t dy_ts, int64_t dy_bs, uintptr_t x, uintptr_t w_ih,
                           uintptr_t w_hh, uintptr_t lengths, uintptr_t gates, uintptr_t hs, uintptr_t cs, uintptr_t dy,
                           uintptr_t dh_n, uintptr_t dc_n, uintptr_t dx, uintptr_t dw_ih, uintptr_t dw_hh,
                           uintptr_t db_ih, uintptr_t db_hh, uintptr_t dh0, uintptr_t dc0, uintptr_t dxg,
                           uintptr_t dhg, uintptr_t stream, int device) {
    const RnnProblem p = problem(cell, steps, batch, input, hidden, reverse, batch_first, x, w_ih, w_hh, lengths);
    const bool lstm = cell == 0, run = steps * batch > 0;
    RnnBackwardIo io;
    io.gates = needed<const float>(gates, "gates", run);
    io.hs = needed<const float>(hs, "hs", batch > 0);
    io.cs = lstm ? needed<const float>(cs, "cs", run) : nullptr;
    io.dy = optional<const float>(dy);
    io.dy_ts = dy_ts, io.dy_bs = dy_bs;
    io.dh_n = optional<const float>(dh_n);
    io.dc_n = lstm ? optional<const float>(dc_n) : nullptr;
    io.dx = optional<float>(dx);
    io.dw_ih = device_ptr<float>(dw_ih, "dw_ih");
    io.dw_hh = device_ptr<float>(dw_hh, "dw_hh");
    io.db_ih = optional<float>(db_ih);
    io.db_hh = optional<float>(db_hh);
    io.dh0 = needed<float>(dh0, "dh0", batch > 0);
    io.dc0 = lstm ? needed<float>(dc0, "dc0", batch > 0) : nullptr;
    float* dxg_p = needed<float>(dxg, "dxg", run);
    float* dhg_p = needed<float>(dhg, "dhg", run);
    py::gil_scoped_release release;
    cuda::rnn_backward(p, io, dxg_p, dhg_p, as_stream(stream), device);
  }, py::arg("cell"), py::arg("steps"), py::arg("batch"), py::arg("input"), py::arg("hidden"), py::arg("reverse"),
     py::arg("batch_first"), py::arg("dy_ts"), py::arg("dy_bs"), py::arg("x"), py::arg("w_ih"), py::arg("w_hh"),
     py::arg("lengths"), py::arg("gates"), py::arg("hs"), py::arg("cs"), py::arg("dy"), py::arg("dh_n"),
     py::arg("dc_n"), py::arg("dx"), py::arg("dw_ih"), py::arg("dw_hh"), py::arg("db_ih"), py::arg("db_hh"),
     py::arg("dh0"), py::arg("dc0"), py::arg("dxg"), py::arg("dhg"), py::arg("stream"), py::arg("device"),
     "Backward through time of rnn_forward on the device: writes dx (if given), dW_ih, dW_hh, the bias gradients "
     "(if given), dh0 and dc0; dxg and dhg are workspace (T * B, G * H).");
}

}  // namespace fusegrad
