"""LSTM and GRU with PyTorch's parameters, gate order and return values (batch_first=True by
default). The input projection of every time step is one GEMM up front; the recurrence runs one
small GEMM per step."""
from __future__ import annotations

import math

import numpy as np

from ...tensor import Tensor, stack, zeros
from .. import functional as F
from .. import init
from .module import Module, Parameter


class _RNNBase(Module):
    gates = 1

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = True):
        super().__init__()
        if input_size < 1 or hidden_size < 1 or num_layers < 1:
            raise ValueError("input_size, hidden_size and num_layers must be >= 1")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first = bias, batch_first
        bound = 1 / math.sqrt(hidden_size)
        rows = self.gates * hidden_size
        for layer in range(num_layers):
            width = input_size if layer == 0 else hidden_size
            names = [(f"weight_ih_l{layer}", (rows, width)), (f"weight_hh_l{layer}", (rows, hidden_size))]
            if bias:
                names += [(f"bias_ih_l{layer}", (rows,)), (f"bias_hh_l{layer}", (rows,))]
            for name, shape in names:
                p = Parameter(np.empty(shape, np.float32))
                init.uniform_(p, -bound, bound)
                setattr(self, name, p)

    def _layer_params(self, layer):
        get = lambda n: getattr(self, f"{n}_l{layer}") if self.bias or n.startswith("weight") else None  # noqa: E731
        return get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh")

    def _check_input(self, x: Tensor):
        if x.ndim != 3 or x.shape[2] != self.input_size:
            order = "(N, T, input_size)" if self.batch_first else "(T, N, input_size)"
            raise ValueError(f"{type(self).__name__}: expected input {order} with input_size={self.input_size}, "
                             f"got {x.shape}")
        return x if self.batch_first else x.transpose(0, 1)

    def _initial(self, state, batch: int, name: str, device: str) -> Tensor:
        expected = (self.num_layers, batch, self.hidden_size)
        if state is None:
            return zeros(expected, device=device)  # on the input's device
        if state.shape != expected:
            raise ValueError(f"{type(self).__name__}: {name} must have shape {expected}, got {state.shape}")
        return state

    def extra_repr(self):
        return f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, batch_first={self.batch_first}"


class LSTM(_RNNBase):
    """Gates i, f, g, o stacked in that order in weight_ih/weight_hh, as PyTorch.
    forward(x, (h0, c0)=None) -> (output, (h_n, c_n))."""

    gates = 4

    def forward(self, x: Tensor, state=None):
        x = self._check_input(x)
        n, steps, _ = x.shape
        h0, c0 = state if state is not None else (None, None)
        h0, c0 = self._initial(h0, n, "h0", x.device), self._initial(c0, n, "c0", x.device)
        hidden = self.hidden_size
        layer_input, h_last, c_last = x, [], []
        for layer in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh = self._layer_params(layer)
            projected = F.linear(layer_input, w_ih, b_ih)  # (N, T, 4H): all steps at once
            h, c = h0[layer], c0[layer]
            outputs = []
            for t in range(steps):
                gates = projected[:, t] + F.linear(h, w_hh, b_hh)
                i = gates[:, :hidden].sigmoid()
                f = gates[:, hidden:2 * hidden].sigmoid()
                g = gates[:, 2 * hidden:3 * hidden].tanh()
                o = gates[:, 3 * hidden:].sigmoid()
                c = f * c + i * g
                h = o * c.tanh()
                outputs.append(h)
            layer_input = stack(outputs, axis=1)
            h_last.append(h)
            c_last.append(c)
        out = layer_input if self.batch_first else layer_input.transpose(0, 1)
        return out, (stack(h_last), stack(c_last))


class GRU(_RNNBase):
    """Gates r, z, n in that order, as PyTorch: n = tanh(W_in x + b_in + r * (W_hn h + b_hn)),
    h' = (1 - z) * n + z * h. forward(x, h0=None) -> (output, h_n)."""

    gates = 3

    def forward(self, x: Tensor, h0=None):
        x = self._check_input(x)
        n, steps, _ = x.shape
        h0 = self._initial(h0, n, "h0", x.device)
        hidden = self.hidden_size
        layer_input, h_last = x, []
        for layer in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh = self._layer_params(layer)
            projected = F.linear(layer_input, w_ih, b_ih)
            h = h0[layer]
            outputs = []
            for t in range(steps):
                xi = projected[:, t]
                hh = F.linear(h, w_hh, b_hh)
                r = (xi[:, :hidden] + hh[:, :hidden]).sigmoid()
                z = (xi[:, hidden:2 * hidden] + hh[:, hidden:2 * hidden]).sigmoid()
                cand = (xi[:, 2 * hidden:] + r * hh[:, 2 * hidden:]).tanh()
                h = (1 - z) * cand + z * h
                outputs.append(h)
            layer_input = stack(outputs, axis=1)
            h_last.append(h)
        out = layer_input if self.batch_first else layer_input.transpose(0, 1)
        return out, stack(h_last)
