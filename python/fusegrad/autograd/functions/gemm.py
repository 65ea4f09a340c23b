"""Matrix products: `@` on tensors, and the linear layer y = act(x @ W.T + b) as one GEMM with its
bias and activation in the store."""
from __future__ import annotations

import numpy as np

from ... import ops
from ..._backend import array_module, device_of
from ...ops.activation import DERIVATIVE_FROM_OUTPUT, EPILOGUE
from ..autocast import gemm_precision
from ..engine import Function
from .elementwise import unbroadcast


def matmul_arrays(a, b, out=None, accumulate=False, precision="fp32"):
    """a @ b on raw arrays: the fusegrad GEMM (CPU or CUDA) for float32 matrices and batches of
    them on one device, in `precision` (autocast's choice), the array module's matmul for
    everything else (float64, vectors, broadcast batches)."""
    if (a.dtype == np.float32 and b.dtype == np.float32 and device_of(a) == device_of(b)
            and a.ndim in (2, 3) and b.ndim in (2, 3)
            and (b.ndim == 2 or (a.ndim == 3 and a.shape[0] == b.shape[0]))):
        return ops.matmul(a, b, out=out, accumulate=accumulate, precision=precision)
    result = array_module(a).matmul(a, b)
    if out is None:
        return result
    if accumulate:
        out += result
    else:
        out[...] = result
    return out


class MatMul(Function):
    """a @ b, in autocast's precision for the operands' device (decided in forward, kept for
    backward)."""

    def forward(self, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError("matmul: both operands must have at least one dimension")
        precision = gemm_precision(device_of(a))
        self.save(a, b, precision)
        return matmul_arrays(a, b, precision=precision)

    def backward(self, g):
        a, b, precision = self.saved
        xp = array_module(g)
        if a.ndim == 1 and b.ndim == 1:  # a dot product: g is 0-d
            return (g * b if self.needs_grad[0] else None), (g * a if self.needs_grad[1] else None)
        a2 = a.reshape(1, -1) if a.ndim == 1 else a
        b2 = b.reshape(-1, 1) if b.ndim == 1 else b
        g2 = g
        if a.ndim == 1:
            g2 = xp.expand_dims(g2, -2)
        if b.ndim == 1:
            g2 = xp.expand_dims(g2, -1)
        ga = gb = None
        if self.needs_grad[0]:
            ga = unbroadcast(matmul_arrays(g2, xp.swapaxes(b2, -1, -2), precision=precision),
                             a2.shape if a.ndim > 1 else (1, a.shape[0]))
            ga = ga.reshape(a.shape)
        if self.needs_grad[1]:
            gb = unbroadcast(matmul_arrays(xp.swapaxes(a2, -1, -2), g2, precision=precision),
                             b2.shape if b.ndim > 1 else (b.shape[0], 1))
            gb = gb.reshape(b.shape)
        return ga, gb


class Linear(Function):
    """y = act(x @ weight.T + bias) for x (..., in), weight (out, in), bias (out,). The activation,
    one whose derivative comes from its output (ops.activation.DERIVATIVE_FROM_OUTPUT), is applied
    in the GEMM's store when the epilogue offers it, else (leaky_relu, which needs its slope) as a
    pass over the output; autograd keeps only y either way. The three products run in autocast's
    precision (decided in forward, kept for backward)."""

    def forward(self, x, weight, bias=None, activation=None, param=0.01):
        if activation is not None and activation not in DERIVATIVE_FROM_OUTPUT:
            raise ValueError(f"Linear: activation {activation!r} cannot be fused (its derivative needs the input)")
        lead = x.shape[:-1]
        x2 = x.reshape(-1, x.shape[-1])
        precision = gemm_precision(device_of(x))
        if activation is None or activation in EPILOGUE:
            y = ops.matmul(x2, weight.T, bias=bias, activation=activation, precision=precision)
        else:
            y = ops.activation.forward(activation, ops.matmul(x2, weight.T, bias=bias, precision=precision),
                                       param=param)
        self.save(x2, weight, y if activation else None, activation, param, lead, precision)
        return y.reshape(*lead, weight.shape[0])

    def backward(self, g):
        x2, weight, y, activation, param, lead, precision = self.saved
        g2 = g.reshape(-1, weight.shape[0])
        if activation is not None:
            g2 = ops.activation.backward(activation, g2, y, param=param)
        gx = (matmul_arrays(g2, weight, precision=precision).reshape(*lead, weight.shape[1])
              if self.needs_grad[0] else None)
        gw = matmul_arrays(g2.T, x2, precision=precision) if self.needs_grad[1] else None
        gb = g2.sum(axis=0) if len(self.needs_grad) > 2 and self.needs_grad[2] else None
        return gx, gw, gb


class Einsum(Function):
    """The array module's einsum on explicit subscripts ("ij,jk->ik": no ellipsis, which the
    caller expands). Backward: each operand's gradient is the einsum of the output gradient with
    the other operands, broadcast over the subscripts only that operand has."""

    def forward(self, *arrays, inputs=(), output=""):
        self.save(arrays, inputs, output)
        return array_module(arrays[0]).asarray(array_module(arrays[0]).einsum(",".join(inputs) + "->" + output, *arrays))

    def backward(self, g):
        arrays, inputs, output = self.saved
        xp = array_module(g)
        grads = []
        for i, (a, subs) in enumerate(zip(arrays, inputs)):
            if not self.needs_grad[i]:
                grads.append(None)
                continue
            if len(set(subs)) != len(subs):
                raise RuntimeError(f"einsum: the gradient through repeated subscripts ({subs!r}) is not supported")
            others = [(s, x) for j, (s, x) in enumerate(zip(inputs, arrays)) if j != i]
            seen = set(output).union(*(set(s) for s, _ in others))
            kept = "".join(c for c in subs if c in seen)
            spec = ",".join([output] + [s for s, _ in others]) + "->" + kept
            gi = xp.einsum(spec, g, *(x for _, x in others))
            shape = [a.shape[k] if c in seen else 1 for k, c in enumerate(subs)]
            grads.append(xp.broadcast_to(xp.asarray(gi).reshape(shape), a.shape).astype(g.dtype, copy=False))
        return tuple(grads)
