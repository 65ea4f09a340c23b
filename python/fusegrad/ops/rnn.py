"""Recurrent layers on raw arrays: one LSTM or GRU layer direction over a whole sequence in one
kernel call (cpp/rnn/ on the CPU, cuda/rnn/ on a CUDA device), and its backward through time in
another.

PyTorch's parameters, gate order and equations, so its state_dicts load unchanged:
  LSTM, gates (i, f, g, o) stacked in w_ih (4H, I), w_hh (4H, H), b_ih, b_hh (4H,):
      i, f, o = sigmoid(.), g = tanh(.) of x W_ih^T + b_ih + h W_hh^T + b_hh
      c' = f c + i g,   h' = o tanh(c')
  GRU, gates (r, z, n) stacked in w_ih (3H, I), w_hh (3H, H), b_ih, b_hh (3H,):
      r, z = sigmoid(x W_i{r,z}^T + b_i{r,z} + h W_h{r,z}^T + b_h{r,z})
      n = tanh(x W_in^T + b_in + r (h W_hn^T + b_hn)),   h' = (1 - z) n + z h

x is (T, B, I), or (B, T, I) with batch_first=True; y has x's order with H features. lengths (B,)
ints in [0, T] give each row's own length (steps past it are padding): y is zero there, h_n and c_n
are the states after the row's last step, and reverse=True runs each row from its last real step
back to its first, as PyTorch does for packed sequences. The kernels are float32. NumPy arrays run
on the CPU; CUDA arrays (CuPy, anything with __cuda_array_interface__ or DLPack, the emulated
device's) on their device, on the caller's current CuPy stream unless stream= is given, every time
step launched from C++ (the GEMMs of cuda/gemm and one fused pointwise kernel per step). lengths
are checked on the host (a CUDA lengths array is read back for that) and copied to the device.

    y, h_n, c_n, saved = rnn_forward("lstm", x, w_ih, w_hh, b_ih, b_hh)
    dx, dw_ih, dw_hh, db_ih, db_hh, dh0, dc0 = rnn_backward(saved, dy, dh_n, dc_n)
"""
from __future__ import annotations

import sys

import numpy as np

from .. import _backend, _cpu, _emulated
from .._backend import array_module, device_of, native, to_kind
from ._common import check_dtype, flag

_CELLS = {"lstm": (0, 4), "gru": (1, 3)}
_F32 = np.dtype(np.float32)


# Host activations saved for the backward pass, kept for the next forward once their RnnSaved is
# gone. Arrays of more than glibc's largest mmap threshold (32 MiB: the gates of an LSTM(512) over
# 128 steps of 64 rows are 64 MiB) are fresh pages on every np.empty, which the kernel faults in and
# zeroes: a tenth of that forward's time. A training loop frees one step's activations before the
# next step's forward, so it gets them back from here. At most _POOL_PER_SHAPE arrays of a shape
# are kept, and only large ones (small ones come back from malloc's own free lists).
_POOL_MIN_BYTES = 1 << 20
_POOL_PER_SHAPE = 4
_pool: dict = {}


def _host_activations(shape: tuple) -> np.ndarray:
    free = _pool.get(shape)
    return free.pop() if free else np.empty(shape, np.float32)


def _recycle(a) -> None:
    if type(a) is np.ndarray and a.nbytes >= _POOL_MIN_BYTES and a.base is None:
        free = _pool.setdefault(a.shape, [])
        if len(free) < _POOL_PER_SHAPE:
            free.append(a)


class RnnSaved:
    """What rnn_forward keeps for rnn_backward (the arrays it read and the activations it saved).
    lengths is on x's device; kind is the caller's kind of array, for the gradients. The saved
    activations of a CPU call go back to the pool above when this object is released."""

    __slots__ = ("cell", "x", "w_ih", "w_hh", "has_bias", "lengths", "reverse", "batch_first", "gates", "hs", "cs",
                 "kind", "pooled")

    def __init__(self, *values, pooled=False):
        for name, value in zip(self.__slots__, values):
            setattr(self, name, value)
        self.pooled = pooled

    def __del__(self):
        if self.pooled:
            for name in ("gates", "hs", "cs"):
                a = getattr(self, name)
                setattr(self, name, None)
                if sys.getrefcount(a) == 2:  # `a` and the call's argument: nobody else holds it
                    _recycle(a)


def _cell(mode, fn: str):
    if mode not in _CELLS:
        raise ValueError(f"{fn}: mode must be 'lstm' or 'gru', got {mode!r}")
    return _CELLS[mode]


def _float32(x, name: str, fn: str, device=None):
    """(native array, caller kind) of a float32 input, on `device` when one is named."""
    if type(x) is np.ndarray and x.dtype == _F32 and device in (None, "cpu") and not _backend.emulating:
        return x, "numpy"  # the common case, checked in a few hundred ns
    arr, kind = native(x, name)
    check_dtype(arr, name)
    if device is not None and device_of(arr) != device:
        raise ValueError(f"{fn}: {name} is on {device_of(arr)} but x is on {device}")
    return arr, kind


def _matrix(a, name: str, shape: tuple, fn: str, device: str):
    if a is None:
        return None
    if type(a) is np.ndarray and a.dtype == _F32 and a.shape == shape and a.flags.c_contiguous and device == "cpu" \
            and not _backend.emulating:
        return a
    arr, _ = _float32(a, name, fn, device)
    if arr.shape != shape:
        raise ValueError(f"{fn}: {name} must have shape {shape}, got {arr.shape}")
    return arr if arr.flags.c_contiguous else array_module(arr).ascontiguousarray(arr)


def _lengths(lengths, batch: int, steps: int, fn: str):
    if lengths is None:
        return None
    arr = _backend.to_host(lengths) if isinstance(lengths, np.ndarray) or hasattr(lengths, "get") else \
        np.asarray(lengths)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{fn}: lengths must be integers, got dtype {arr.dtype}")
    if arr.shape != (batch,):
        raise ValueError(f"{fn}: lengths must have shape ({batch},) (one per batch row), got {arr.shape}")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) > steps):
        raise ValueError(f"{fn}: lengths must lie in [0, {steps}] (the sequence length), got {arr.min()}..{arr.max()}")
    return np.ascontiguousarray(arr, np.int32)


def _empty(like, shape: tuple):
    """A new float32 array on like's device."""
    with _backend.on_device(like):
        return array_module(like).empty(shape, np.float32)


def _steps_view(a):
    """Whether the CUDA kernels can read or write a (t, b, unit) view in place: unit stride along
    the units, whole-float non-negative strides, and (emulated) guarded memory; device_call would
    stage anything else as a C-contiguous copy, whose strides are not the view's."""
    if _backend.is_emulated(a) and not _emulated.is_guarded(a):
        return False
    return all(st >= 0 and st % 4 == 0 for st in a.strides) and (a.shape[2] <= 1 or a.strides[2] == 4)


def _element_strides(a) -> tuple:
    """(t, b) element strides of a (t, b, unit) view (any value for an empty one: nothing is read)."""
    return (a.strides[0] // 4, a.strides[1] // 4) if a.size else (0, 0)


def rnn_forward(mode, x, w_ih, w_hh, b_ih=None, b_hh=None, h0=None, c0=None, *, lengths=None, reverse=False,
                batch_first=False, y=None, stream=None):
    """One layer direction over the whole sequence: (y, h_n, c_n, saved). c_n is None for the GRU;
    `saved` is for rnn_backward. y=: an array to write y into, in x's order with H features; any view
    whose last axis is contiguous (one direction's half of a bidirectional output, say)."""
    fn = f"rnn_forward({mode!r})"
    cell, gates = _cell(mode, fn)
    x, kind = _float32(x, "x", fn)
    device = device_of(x)
    if x.ndim != 3:
        order = "(B, T, I)" if batch_first else "(T, B, I)"
        raise ValueError(f"{fn}: x must be 3-D {order}, got shape {x.shape}")
    batch_first, reverse = flag(batch_first, "batch_first", fn), flag(reverse, "reverse", fn)
    steps, batch = (x.shape[1], x.shape[0]) if batch_first else x.shape[:2]
    w_hh_arr, _ = _float32(w_hh, "w_hh", fn, device)
    if w_hh_arr.ndim != 2 or w_hh_arr.shape[0] != gates * w_hh_arr.shape[1] or w_hh_arr.shape[1] < 1:
        raise ValueError(f"{fn}: w_hh must have shape ({gates}*H, H), got {w_hh_arr.shape}")
    hidden, inp = w_hh_arr.shape[1], x.shape[2]
    rows = gates * hidden
    w_ih = _matrix(w_ih, "w_ih", (rows, inp), fn, device)
    w_hh = _matrix(w_hh_arr, "w_hh", (rows, hidden), fn, device)
    b_ih, b_hh = _matrix(b_ih, "b_ih", (rows,), fn, device), _matrix(b_hh, "b_hh", (rows,), fn, device)
    h0 = _matrix(h0, "h0", (batch, hidden), fn, device)
    c0 = _matrix(c0, "c0", (batch, hidden), fn, device) if cell == 0 else None
    lengths = _lengths(lengths, batch, steps, fn)
    xp = array_module(x)
    if not x.flags.c_contiguous:
        x = xp.ascontiguousarray(x)
    shape = (batch, steps, hidden) if batch_first else (steps, batch, hidden)
    out = None
    if y is not None:
        out, _ = _float32(y, "y", fn, device)
        if out.shape != shape:
            raise ValueError(f"{fn}: y must have shape {shape}, got {out.shape}")
        if isinstance(out, np.ndarray) and not out.flags.writeable:
            raise ValueError(f"{fn}: y is read-only")
        if any(xp.may_share_memory(out, a) for a in (x, w_ih, w_hh, h0, c0) if a is not None):
            raise ValueError(f"{fn}: y overlaps an input")
    if device == "cpu":
        y = np.empty(shape, np.float32) if out is None else out
        h_n = np.empty((batch, hidden), np.float32)
        c_n = np.empty((batch, hidden), np.float32) if cell == 0 else None
        saved_gates = _host_activations((steps, batch, 4 * hidden))
        hs = _host_activations((steps + 1, batch, hidden))
        cs = _host_activations((steps + 1, batch, hidden)) if cell == 0 else None
        _cpu.rnn_forward(cell, x, w_ih, w_hh, b_ih, b_hh, h0, c0, lengths, reverse, batch_first,
                         y.transpose(1, 0, 2) if batch_first else y, h_n, c_n, saved_gates, hs, cs)
    else:
        y = out if out is not None and _steps_view(out) else _empty(x, shape)
        h_n = _empty(x, (batch, hidden))
        c_n = _empty(x, (batch, hidden)) if cell == 0 else None
        saved_gates = _empty(x, (steps, batch, 4 * hidden))
        hs = _empty(x, (steps + 1, batch, hidden))
        cs = _empty(x, (steps + 1, batch, hidden)) if cell == 0 else None
        if lengths is not None:
            lengths = _backend.to_device(lengths, device)
        workspace = [_empty(x, (steps * batch, rows)), _empty(x, (batch, rows))]  # xg, hg
        view = y.transpose(1, 0, 2) if batch_first else y
        arrays = [x, w_ih, w_hh, b_ih, b_hh, h0, c0, lengths, y, h_n, c_n, saved_gates, hs, cs, *workspace]
        with _backend.device_call(arrays, written=tuple(range(8, 16)), stream=stream) as call:
            call.module.rnn_forward(cell, steps, batch, inp, hidden, reverse, batch_first, *_element_strides(view),
                                    *call.pointers, call.stream, call.device)
        if out is not None and y is not out:
            out[...] = y
            y = out
    saved = RnnSaved(cell, x, w_ih, w_hh, b_ih is not None, lengths, reverse, batch_first, saved_gates, hs, cs, kind,
                     pooled=device == "cpu")
    return to_kind(y, kind), to_kind(h_n, kind), (to_kind(c_n, kind) if c_n is not None else None), saved


def _grad(g, shape: tuple, name: str, device: str):
    """A float32 gradient of `shape`, or None when none reached it (None, or a zero broadcast)."""
    if g is None:
        return None
    g, _ = _float32(g, name, "rnn_backward", device)
    if g.shape != shape:
        raise ValueError(f"rnn_backward: {name} must have shape {shape}, got {g.shape}")
    if g.size and not any(g.strides):  # a broadcast scalar: only zero-filled gradients are made so
        return None if not float(g[(0,) * g.ndim]) else array_module(g).ascontiguousarray(g)
    return g


def rnn_backward(saved: RnnSaved, dy=None, dh_n=None, dc_n=None, *, need_dx=True, stream=None):
    """Backward through time of rnn_forward: (dx, dw_ih, dw_hh, db_ih, db_hh, dh0, dc0) from the
    gradients of y, h_n and c_n (each may be None: no gradient), as the kind of array forward was
    given. dx is None unless need_dx; the bias gradients are None when forward had no biases, dc0
    for the GRU."""
    if not isinstance(saved, RnnSaved):
        raise TypeError("rnn_backward: saved must be the last value rnn_forward returned")
    s = saved
    device = device_of(s.x)
    steps, batch = (s.x.shape[1], s.x.shape[0]) if s.batch_first else s.x.shape[:2]
    hidden = s.w_hh.shape[1]
    rows = s.w_hh.shape[0]
    shape = (batch, steps, hidden) if s.batch_first else (steps, batch, hidden)
    dy = _grad(dy, shape, "dy", device)
    if dy is not None and s.batch_first:
        dy = dy.transpose(1, 0, 2)
    xp = array_module(s.x)
    if dy is not None and (dy.strides[2] != 4 if device == "cpu" else not _steps_view(dy)):
        dy = xp.ascontiguousarray(dy)
    dh_n = _grad(dh_n, (batch, hidden), "dh_n", device)
    dc_n = _grad(dc_n, (batch, hidden), "dc_n", device) if s.cell == 0 else None
    dh_n = None if dh_n is None else xp.ascontiguousarray(dh_n)
    dc_n = None if dc_n is None else xp.ascontiguousarray(dc_n)
    new = (lambda shp: np.empty(shp, np.float32)) if device == "cpu" else (lambda shp: _empty(s.x, shp))
    dx = new(s.x.shape) if flag(need_dx, "need_dx", "rnn_backward") else None
    dw_ih, dw_hh = new(s.w_ih.shape), new(s.w_hh.shape)
    db_ih = new((rows,)) if s.has_bias else None
    db_hh = new((rows,)) if s.has_bias else None
    dh0 = new((batch, hidden))
    dc0 = new((batch, hidden)) if s.cell == 0 else None
    if device == "cpu":
        _cpu.rnn_backward(s.cell, s.x, s.w_ih, s.w_hh, s.lengths, s.reverse, s.batch_first, s.gates, s.hs, s.cs, dy,
                          dh_n, dc_n, dx, dw_ih, dw_hh, db_ih, db_hh, dh0, dc0)
    else:
        workspace = [new((steps * batch, rows)), new((steps * batch, rows))]  # dxg, dhg
        arrays = [s.x, s.w_ih, s.w_hh, s.lengths, s.gates, s.hs, s.cs, dy, dh_n, dc_n, dx, dw_ih, dw_hh, db_ih,
                  db_hh, dh0, dc0, *workspace]
        with _backend.device_call(arrays, written=tuple(range(10, 19)), stream=stream) as call:
            call.module.rnn_backward(s.cell, steps, batch, s.x.shape[2], hidden, s.reverse, s.batch_first,
                                     *(_element_strides(dy) if dy is not None else (0, 0)), *call.pointers,
                                     call.stream, call.device)
    grads = (dx, dw_ih, dw_hh, db_ih, db_hh, dh0, dc0)
    if s.kind == "numpy" and device == "cpu":
        return grads
    return tuple(None if a is None else to_kind(a, s.kind) for a in grads)


def lstm(x, w_ih, w_hh, b_ih=None, b_hh=None, h0=None, c0=None, *, lengths=None, reverse=False, batch_first=False,
         stream=None):
    """One LSTM layer direction: (y, h_n, c_n). See the module docstring."""
    y, h_n, c_n, _ = rnn_forward("lstm", x, w_ih, w_hh, b_ih, b_hh, h0, c0, lengths=lengths, reverse=reverse,
                                 batch_first=batch_first, stream=stream)
    return y, h_n, c_n


def gru(x, w_ih, w_hh, b_ih=None, b_hh=None, h0=None, *, lengths=None, reverse=False, batch_first=False,
        stream=None):
    """One GRU layer direction: (y, h_n). See the module docstring."""
    y, h_n, _, _ = rnn_forward("gru", x, w_ih, w_hh, b_ih, b_hh, h0, lengths=lengths, reverse=reverse,
                               batch_first=batch_first, stream=stream)
    return y, h_n
