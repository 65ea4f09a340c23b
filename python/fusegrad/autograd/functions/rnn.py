"""Recurrent layers: one layer of an LSTM or GRU (every direction) as one op over the whole sequence,
forward and backward each one kernel call per direction (ops.rnn), on the CPU or a CUDA device
(the arrays are allocated on x's device).

The engine's ops have one output, and a layer has three (y, h_n, c_n). RNNLayer's output is y; h_n
and c_n are RNNState ops on y that hand their gradients to the layer: the engine runs an op's
backward before those of its inputs, so RNNState.backward, which leaves its gradient in the layer's
`state_grads` and passes y a zero broadcast (no memory, and no work when nothing else reached y),
always runs before RNNLayer.backward, which takes all three gradients to one kernel call.
"""
from __future__ import annotations

import numpy as np

from ... import ops
from ..._backend import array_module, on_device
from ..engine import Function


class RNNLayer(Function):
    """Parents: x, then per direction w_ih, w_hh (and b_ih, b_hh with bias), then h0 and c0 (D, B, H)
    when given. Returns y (x's order, D·H features); h_n, c_n (D, B, H) are left in `sink`."""

    def forward(self, x, *arrays, mode="lstm", directions=1, bias=True, has_h0=False, has_c0=False, lengths=None,
                batch_first=False, sink=None):
        per = 4 if bias else 2
        params, states = arrays[:directions * per], list(arrays[directions * per:])
        h0 = states.pop(0) if has_h0 else None
        c0 = states.pop(0) if has_c0 else None
        hidden = params[1].shape[1]
        xp = array_module(x)
        with on_device(x):
            y = xp.empty((*x.shape[:2], directions * hidden), np.float32)
            h_n = xp.empty((directions, y.shape[1 - batch_first], hidden), np.float32)
            c_n = xp.empty_like(h_n) if mode == "lstm" else None
        saved = []
        for d in range(directions):
            w_ih, w_hh, b_ih, b_hh = (*params[d * per:(d + 1) * per], None, None)[:4]
            _, h_n[d], c, s = ops.rnn_forward(
                mode, x, w_ih, w_hh, b_ih, b_hh, None if h0 is None else h0[d], None if c0 is None else c0[d],
                lengths=lengths, reverse=d == 1, batch_first=batch_first,
                y=y if directions == 1 else y[..., d * hidden:(d + 1) * hidden])
            if c_n is not None:
                c_n[d] = c
            saved.append(s)
        self.save(saved, per, has_h0, has_c0)
        self.state_grads = [None, None]
        sink["h_n"], sink["c_n"] = h_n, c_n
        return y

    def backward(self, g):
        saved, per, has_h0, has_c0 = self.saved
        dh_n, dc_n = self.state_grads
        self.state_grads = [None, None]
        directions = len(saved)
        hidden = saved[0].w_hh.shape[1]
        dx, grads, dh0, dc0 = None, [], [], []
        for d, s in enumerate(saved):
            dy = g if directions == 1 else g[..., d * hidden:(d + 1) * hidden]
            gx, gw_ih, gw_hh, gb_ih, gb_hh, gh0, gc0 = ops.rnn_backward(
                s, dy, None if dh_n is None else dh_n[d], None if dc_n is None else dc_n[d],
                need_dx=self.needs_grad[0])
            dx = gx if dx is None else dx + gx
            grads += [gw_ih, gw_hh, gb_ih, gb_hh][:per]
            dh0.append(gh0)
            dc0.append(gc0)
        out = [dx, *grads]
        xp = array_module(dh0[0])
        if has_h0:
            out.append(xp.stack(dh0))
        if has_c0:
            out.append(xp.stack(dc0))
        return tuple(out)


class RNNState(Function):
    """h_n (which=0) or c_n (which=1) of the RNNLayer whose output y is the parent: see the module
    docstring."""

    def forward(self, y, layer=None, which=0, state=None):
        self.save(layer, which, y.shape, array_module(y))
        return state

    def backward(self, g):
        layer, which, shape, xp = self.saved
        if layer is not None:
            held = layer.state_grads[which]
            layer.state_grads[which] = g if held is None else held + g
        return (xp.broadcast_to(xp.zeros((), np.float32), shape),)
