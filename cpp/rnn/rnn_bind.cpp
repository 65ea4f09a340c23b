// Bindings of the recurrent sequence kernels (registered into _cpu by cpp/module.cpp): convert,
// check, release the GIL, call. fusegrad.ops.rnn has checked everything with friendlier messages and
// allocated the outputs; these checks are the last guard against out-of-bounds reads and writes.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "common/array_check.h"
#include "rnn/rnn.h"

namespace py = pybind11;

namespace fusegrad {
namespace {

// A C-contiguous float32 array of exactly `shape`, or null for None.
const float* c_array(const py::object& h, std::initializer_list<int64_t> shape, const char* name, bool write = false) {
  if (h.is_none()) return nullptr;
  auto a = py::reinterpret_borrow<py::array>(h);
  if (!py::isinstance<py::array>(h)) throw py::type_error(std::string(name) + ": expected a NumPy array");
  const float* p = c_float_input(a, name);
  require_shape(a, shape, name);
  if (write) require_writeable(a, name);
  return p;
}

float* c_output(const py::object& h, std::initializer_list<int64_t> shape, const char* name) {
  if (h.is_none()) throw py::value_error(std::string(name) + ": required");
  return const_cast<float*>(c_array(h, shape, name, true));
}

// A (T, B, H) float32 view with unit stride along H and non-negative whole-float strides: its
// pointer and the element strides of t and b.
const float* steps_view(const py::object& h, int64_t T, int64_t B, int64_t H, const char* name, int64_t& ts,
                        int64_t& bs, bool write) {
  if (h.is_none()) return nullptr;
  if (!py::isinstance<py::array>(h)) throw py::type_error(std::string(name) + ": expected a NumPy array");
  auto a = py::reinterpret_borrow<py::array>(h);
  require_float32(a, name);
  require_shape(a, {T, B, H}, name);
  if (write) require_writeable(a, name);
  ts = bs = 0;
  if (a.size() == 0) return static_cast<const float*>(a.data());  // nothing is read or written
  for (int d = 0; d < 3; ++d)
    if (a.strides(d) < 0 || a.strides(d) % 4 != 0) throw py::value_error(std::string(name) + ": unsupported strides");
  if (H > 1 && a.strides(2) != 4) throw py::value_error(std::string(name) + ": its last axis must be contiguous");
  ts = a.strides(0) / 4;
  bs = a.strides(1) / 4;
  return static_cast<const float*>(a.data());
}

RnnProblem problem(int cell, const py::array& x, const py::array& w_ih, const py::array& w_hh, const py::object& b_ih,
                   const py::object& b_hh, const py::object& lengths, bool reverse, bool batch_first) {
  if (cell != 0 && cell != 1) throw py::value_error("rnn: cell must be 0 (LSTM) or 1 (GRU)");
  RnnProblem p;
  p.cell = static_cast<RnnCell>(cell);
  p.x = c_float_input(x, "x");
  if (x.ndim() != 3) throw py::value_error("x: must be 3-D");
  p.steps = x.shape(batch_first ? 1 : 0);
  p.batch = x.shape(batch_first ? 0 : 1);
  p.input = x.shape(2);
  if (w_hh.ndim() != 2) throw py::value_error("w_hh: must be 2-D");
  p.hidden = w_hh.shape(1);
  const int64_t GH = rnn_gates(p.cell) * p.hidden;
  if (p.input < 1 || p.hidden < 1) throw py::value_error("rnn: input and hidden sizes must be >= 1");
  p.w_ih = c_float_input(w_ih, "w_ih");
  require_shape(w_ih, {GH, p.input}, "w_ih");
  p.w_hh = c_float_input(w_hh, "w_hh");
  require_shape(w_hh, {GH, p.hidden}, "w_hh");
  p.b_ih = c_array(b_ih, {GH}, "b_ih");
  p.b_hh = c_array(b_hh, {GH}, "b_hh");
  p.reverse = reverse;
  p.x_ts = batch_first ? 1 : p.batch;
  p.x_bs = batch_first ? p.steps : 1;
  if (!lengths.is_none()) {
    auto l = py::reinterpret_borrow<py::array>(lengths);
    require_int32(l, "lengths");
    if (!is_c_contiguous(l) || l.ndim() != 1 || l.shape(0) != p.batch) throw py::value_error("lengths: must be (B,) contiguous");
    p.lengths = static_cast<const int32_t*>(l.data());
    for (int64_t b = 0; b < p.batch; ++b)
      if (p.lengths[b] < 0 || p.lengths[b] > p.steps) throw py::value_error("lengths: must lie in [0, T]");
  }
  return p;
}

void rnn_forward(int cell, const py::array& x, const py::array& w_ih, const py::array& w_hh, const py::object& b_ih,
                 const py::object& b_hh, const py::object& h0, const py::object& c0, const py::object& lengths,
                 bool reverse, bool batch_first, const py::object& y, const py::object& h_n, const py::object& c_n,
                 const py::object& gates, const py::object& hs, const py::object& cs) {
  const RnnProblem p = problem(cell, x, w_ih, w_hh, b_ih, b_hh, lengths, reverse, batch_first);
  const int64_t T = p.steps, B = p.batch, H = p.hidden;
  const bool lstm = p.cell == RnnCell::lstm;
  RnnForwardOut o;
  o.h0 = c_array(h0, {B, H}, "h0");
  o.c0 = lstm ? c_array(c0, {B, H}, "c0") : nullptr;
  o.y = const_cast<float*>(steps_view(y, T, B, H, "y", o.y_ts, o.y_bs, true));
  if (!o.y) throw py::value_error("y: required");
  o.h_n = c_output(h_n, {B, H}, "h_n");
  o.gates = c_output(gates, {T, B, 4 * H}, "gates");
  o.hs = c_output(hs, {T + 1, B, H}, "hs");
  if (lstm) {
    o.c_n = c_output(c_n, {B, H}, "c_n");
    o.cs = c_output(cs, {T + 1, B, H}, "cs");
  }
  const KernelCall kernel_call;
  active_rnn_kernels().forward(p, o);
}

void rnn_backward(int cell, const py::array& x, const py::array& w_ih, const py::array& w_hh, const py::object& lengths,
                  bool reverse, bool batch_first, const py::object& gates, const py::object& hs, const py::object& cs,
                  const py::object& dy, const py::object& dh_n, const py::object& dc_n, const py::object& dx,
                  const py::object& dw_ih, const py::object& dw_hh, const py::object& db_ih, const py::object& db_hh,
                  const py::object& dh0, const py::object& dc0) {
  const RnnProblem p = problem(cell, x, w_ih, w_hh, py::none(), py::none(), lengths, reverse, batch_first);
  const int64_t T = p.steps, B = p.batch, H = p.hidden, I = p.input, GH = rnn_gates(p.cell) * H;
  const bool lstm = p.cell == RnnCell::lstm;
  RnnBackwardIo io;
  io.gates = c_array(gates, {T, B, 4 * H}, "gates");
  io.hs = c_array(hs, {T + 1, B, H}, "hs");
  if (!io.gates || !io.hs) throw py::value_error("rnn_backward: gates and hs are required");
  if (lstm) {
    io.cs = c_array(cs, {T + 1, B, H}, "cs");
    if (!io.cs) throw py::value_error("rnn_backward: cs is required for the LSTM");
  }
  io.dy = steps_view(dy, T, B, H, "dy", io.dy_ts, io.dy_bs, false);
  io.dh_n = c_array(dh_n, {B, H}, "dh_n");
  io.dc_n = lstm ? c_array(dc_n, {B, H}, "dc_n") : nullptr;
  if (!dx.is_none()) {
    auto a = py::reinterpret_borrow<py::array>(dx);
    io.dx = c_float_output(a, "dx");
    require_shape(a, {x.shape(0), x.shape(1), I}, "dx");
  }
  io.dw_ih = c_output(dw_ih, {GH, I}, "dw_ih");
  io.dw_hh = c_output(dw_hh, {GH, H}, "dw_hh");
  io.db_ih = db_ih.is_none() ? nullptr : c_output(db_ih, {GH}, "db_ih");
  io.db_hh = db_hh.is_none() ? nullptr : c_output(db_hh, {GH}, "db_hh");
  io.dh0 = c_output(dh0, {B, H}, "dh0");
  if (lstm) io.dc0 = c_output(dc0, {B, H}, "dc0");
  const KernelCall kernel_call;
  active_rnn_kernels().backward(p, io);
}

}  // namespace

void register_rnn(py::module_& m) {
  m.def("rnn_forward", &rnn_forward, py::arg("cell"), py::arg("x"), py::arg("w_ih"), py::arg("w_hh"), py::arg("b_ih"),
        py::arg("b_hh"), py::arg("h0"), py::arg("c0"), py::arg("lengths"), py::arg("reverse"), py::arg("batch_first"),
        py::arg("y"), py::arg("h_n"), py::arg("c_n"), py::arg("gates"), py::arg("hs"), py::arg("cs"),
        "One LSTM (cell 0) or GRU (cell 1) layer direction over a whole sequence; writes y, h_n, c_n and what "
        "backward needs (gates, hs, cs). fusegrad.ops.rnn checks the arguments and allocates the outputs.");
  m.def("rnn_backward", &rnn_backward, py::arg("cell"), py::arg("x"), py::arg("w_ih"), py::arg("w_hh"),
        py::arg("lengths"), py::arg("reverse"), py::arg("batch_first"), py::arg("gates"), py::arg("hs"), py::arg("cs"),
        py::arg("dy"), py::arg("dh_n"), py::arg("dc_n"), py::arg("dx"), py::arg("dw_ih"), py::arg("dw_hh"),
        py::arg("db_ih"), py::arg("db_hh"), py::arg("dh0"), py::arg("dc0"),
        "Backward through time of rnn_forward: writes dx (if given), dW_ih, dW_hh, the bias gradients (if given), "
        "dh0 and dc0.");
}

}  // namespace fusegrad
