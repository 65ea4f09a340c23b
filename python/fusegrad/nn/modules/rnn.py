"""LSTM and GRU with PyTorch's parameters, gate order, equations and return values, so PyTorch
state_dicts load unchanged; each layer runs as one kernel call over the whole sequence per direction
(ops.rnn: cpp/rnn/ on the CPU, cuda/rnn/ on a CUDA device), forward and backward. batch_first=True
by default (as before in fusegrad; give batch_first=False for PyTorch's (T, B, I)).

Variable-length batches: forward(x, state, lengths=...) with one length per batch row, on the padded
batch itself (rather than PyTorch's PackedSequence): x and y keep one layout the kernels read and
write in place, nothing is sorted or repacked, and no extra type travels through autograd. The
results are those of PyTorch on pack_padded_sequence(x, lengths): y zero past each row's length,
h_n and c_n the states after its last real step, the reverse direction starting from that step.
"""
from __future__ import annotations

import math

import numpy as np

from ...autograd.functions.rnn import RNNLayer, RNNState
from ...tensor import Tensor, cat
from .. import functional as F
from .. import init
from .module import Module, Parameter


def _uniform(shape, bound):
    p = Parameter(np.empty(shape, np.float32))
    init.uniform_(p, -bound, bound)
    return p


def _lengths(lengths, batch: int, steps: int, name: str):
    if lengths is None:
        return None
    arr = np.asarray(lengths.numpy() if isinstance(lengths, Tensor) else lengths)
    if arr.dtype.kind not in "iu" or arr.shape != (batch,):
        raise ValueError(f"{name}: lengths must be {batch} integers (one per batch row), got {arr.dtype} {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() > steps):
        raise ValueError(f"{name}: lengths must lie in [0, {steps}], got {arr.min()}..{arr.max()}")
    return arr.astype(np.int32)


class _RNNBase(Module):
    mode = "lstm"
    gates = 4

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = True, dropout: float = 0.0, bidirectional: bool = False):
        super().__init__()
        if input_size < 1 or hidden_size < 1 or num_layers < 1:
            raise ValueError("input_size, hidden_size and num_layers must be >= 1")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bidirectional = bool(bidirectional)
        self.directions = 2 if bidirectional else 1
        bound = 1 / math.sqrt(hidden_size)
        rows = self.gates * hidden_size
        for layer in range(num_layers):
            width = input_size if layer == 0 else hidden_size * self.directions
            for suffix in ("", "_reverse")[:self.directions]:
                setattr(self, f"weight_ih_l{layer}{suffix}", _uniform((rows, width), bound))
                setattr(self, f"weight_hh_l{layer}{suffix}", _uniform((rows, hidden_size), bound))
                if bias:
                    setattr(self, f"bias_ih_l{layer}{suffix}", _uniform((rows,), bound))
                    setattr(self, f"bias_hh_l{layer}{suffix}", _uniform((rows,), bound))

    def _layer_params(self, layer):
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")[:4 if self.bias else 2]
        return [getattr(self, f"{n}_l{layer}{s}") for s in ("", "_reverse")[:self.directions] for n in names]

    def _check_state(self, state, batch: int, name: str):
        if state is None:
            return None
        expected = (self.num_layers * self.directions, batch, self.hidden_size)
        if not isinstance(state, Tensor):
            raise TypeError(f"{type(self).__name__}: {name} must be a Tensor, got {type(state).__name__}")
        if state.shape != expected:
            raise ValueError(f"{type(self).__name__}: {name} must have shape {expected}, got {state.shape}")
        return state

    def _run(self, x: Tensor, h0, c0, lengths):
        name = type(self).__name__
        if not isinstance(x, Tensor) or x.ndim != 3 or x.shape[2] != self.input_size:
            order = "(N, T, input_size)" if self.batch_first else "(T, N, input_size)"
            raise ValueError(f"{name}: expected input {order} with input_size={self.input_size}, "
                             f"got {getattr(x, 'shape', x)}")
        batch, steps = (x.shape[0], x.shape[1]) if self.batch_first else (x.shape[1], x.shape[0])
        h0, c0 = self._check_state(h0, batch, "h0"), self._check_state(c0, batch, "c0")
        lengths = _lengths(lengths, batch, steps, name)
        D, hs, cs = self.directions, [], []
        for layer in range(self.num_layers):
            if layer and self.dropout and self.training:
                x = F.dropout(x, self.dropout, True)
            states = [s if self.num_layers == 1 else s[layer * D:(layer + 1) * D] for s in (h0, c0) if s is not None]
            sink = {}
            x = RNNLayer.apply(x, *self._layer_params(layer), *states, mode=self.mode, directions=D, bias=self.bias,
                               has_h0=h0 is not None, has_c0=c0 is not None, lengths=lengths,
                               batch_first=self.batch_first, sink=sink)
            hs.append(RNNState.apply(x, layer=x._ctx, which=0, state=sink["h_n"]))
            if self.mode == "lstm":
                cs.append(RNNState.apply(x, layer=x._ctx, which=1, state=sink["c_n"]))
        h_n = hs[0] if len(hs) == 1 else cat(hs)
        c_n = (cs[0] if len(cs) == 1 else cat(cs)) if cs else None
        return x, h_n, c_n

    def extra_repr(self):
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, batch_first={self.batch_first}"
                + (f", dropout={self.dropout}" if self.dropout else "") + (", bidirectional=True" if self.bidirectional else ""))


class LSTM(_RNNBase):
    """Gates i, f, g, o stacked in that order in weight_ih/weight_hh, as PyTorch.
    forward(x, (h0, c0)=None, lengths=None) -> (output, (h_n, c_n)); states (num_layers * D, N, H)."""

    mode, gates = "lstm", 4

    def forward(self, x: Tensor, state=None, lengths=None):
        h0, c0 = state if state is not None else (None, None)
        y, h_n, c_n = self._run(x, h0, c0, lengths)
        return y, (h_n, c_n)


class GRU(_RNNBase):
    """Gates r, z, n in that order, as PyTorch: n = tanh(W_in x + b_in + r * (W_hn h + b_hn)),
    h' = (1 - z) * n + z * h. forward(x, h0=None, lengths=None) -> (output, h_n)."""

    mode, gates = "gru", 3

    def forward(self, x: Tensor, h0=None, lengths=None):
        y, h_n, _ = self._run(x, h0, None, lengths)
        return y, h_n


class _CellBase(Module):
    mode, gates = "lstm", 4

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True):
        super().__init__()
        if input_size < 1 or hidden_size < 1:
            raise ValueError("input_size and hidden_size must be >= 1")
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        bound, rows = 1 / math.sqrt(hidden_size), self.gates * hidden_size
        self.weight_ih = _uniform((rows, input_size), bound)
        self.weight_hh = _uniform((rows, hidden_size), bound)
        if bias:
            self.bias_ih, self.bias_hh = _uniform((rows,), bound), _uniform((rows,), bound)

    def _step(self, x: Tensor, h, c):
        name = type(self).__name__
        if not isinstance(x, Tensor) or x.ndim not in (1, 2) or x.shape[-1] != self.input_size:
            raise ValueError(f"{name}: expected input (N, input_size) or (input_size,) with "
                             f"input_size={self.input_size}, got {getattr(x, 'shape', x)}")
        single = x.ndim == 1
        batch = 1 if single else x.shape[0]
        expected = (self.hidden_size,) if single else (batch, self.hidden_size)
        for s, n in ((h, "h"), (c, "c")):
            if s is not None and (not isinstance(s, Tensor) or s.shape != expected):
                raise ValueError(f"{name}: {n} must have shape {expected}, got {getattr(s, 'shape', s)}")
        params = [self.weight_ih, self.weight_hh] + ([self.bias_ih, self.bias_hh] if self.bias else [])
        states = [s.reshape(1, batch, self.hidden_size) for s in (h, c) if s is not None]
        sink = {}
        y = RNNLayer.apply(x.reshape(1, batch, self.input_size), *params, *states, mode=self.mode, directions=1,
                           bias=self.bias, has_h0=h is not None, has_c0=c is not None, batch_first=False, sink=sink)
        h1 = y.reshape(*expected)
        c1 = RNNState.apply(y, layer=y._ctx, which=1, state=sink["c_n"]).reshape(*expected) if self.mode == "lstm" else None
        return h1, c1

    def extra_repr(self):
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias}"


class LSTMCell(_CellBase):
    """One LSTM step: forward(x, (h, c)=None) -> (h', c'), PyTorch's parameters and equations."""

    mode, gates = "lstm", 4

    def forward(self, x: Tensor, state=None):
        h, c = state if state is not None else (None, None)
        return self._step(x, h, c)


class GRUCell(_CellBase):
    """One GRU step: forward(x, h=None) -> h', PyTorch's parameters and equations."""

    mode, gates = "gru", 3

    def forward(self, x: Tensor, h=None):
        return self._step(x, h, None)[0]
