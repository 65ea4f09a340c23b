"""Layers: Linear, Sequential (which fuses Linear + activation), activations, Flatten, Dropout."""
from __future__ import annotations

import math

import numpy as np


from ..tensor import Tensor
from . import functional as F
from . import init
from .conv import Conv2d, conv2d_max_pool2d
from .module import Module, Parameter


class Identity(Module):
    def forward(self, x):
        return x


class Linear(Module):
    """y = x @ weight.T + bias, weight of shape (out_features, in_features) as in PyTorch.

    activation= (one of "relu", "leaky_relu", "sigmoid", "tanh", "silu", "gelu") is applied in the
    GEMM's store where its derivative allows (see functional.FUSABLE_ACTIVATIONS).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str | None = None):
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ValueError(f"Linear: sizes must be >= 1, got in={in_features}, out={out_features}")
        self.in_features, self.out_features, self.activation = in_features, out_features, activation
        self.weight = Parameter(np.empty((out_features, in_features), np.float32))
        self.bias = Parameter(np.empty(out_features, np.float32)) if bias else None
        if not bias:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        # PyTorch's default: kaiming_uniform(a=sqrt 5) = U(-1/sqrt(in), 1/sqrt(in)); bias likewise.
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features)
            init.uniform_(self.bias, -bound, bound)

    def forward(self, x, activation: str | None = None, negative_slope: float = 0.01):
        return F.linear(x, self.weight, self.bias, activation or self.activation, negative_slope)

    def extra_repr(self):
        act = f", activation={self.activation!r}" if self.activation else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}{act}"


class _Activation(Module):
    name = ""

    def forward(self, x):
        return getattr(x, self.name)()


class ReLU(_Activation):
    name = "relu"


class Sigmoid(_Activation):
    name = "sigmoid"


class Tanh(_Activation):
    name = "tanh"


class SiLU(_Activation):
    name = "silu"


class LeakyReLU(Module):
    def __init__(self, negative_slope: float = 0.01):
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x):
        return x.leaky_relu(self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class GELU(Module):
    def __init__(self, approximate: str = "none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"approximate: expected 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x):
        return x.gelu(self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class Softmax(Module):
    def __init__(self, dim: int = -1):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return x.softmax(self.dim)


class LogSoftmax(Softmax):
    def forward(self, x):
        return x.log_softmax(self.dim)


class Flatten(Module):
    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        return x.flatten(self.start_dim, self.end_dim)


class Dropout(Module):
    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


def _fused_activation(module):
    """(name, slope) when `module` is an activation a preceding Linear can fuse, else None."""
    if type(module) in (ReLU, Sigmoid, Tanh):
        return module.name, 0.01
    if type(module) is LeakyReLU and module.negative_slope > 0:
        return "leaky_relu", module.negative_slope
    return None


def _poolable(items):
    """The pool size when items are Conv2d -> ReLU or LeakyReLU(slope > 0) -> MaxPool2d with
    non-overlapping square windows and no padding (what the fused conv + max-pool kernel runs),
    else None."""
    from .conv import MaxPool2d  # noqa: PLC0415 (nn.conv imports this module)
    if len(items) < 3 or type(items[0]) is not Conv2d or items[0].activation is not None:
        return None
    fused = _fused_activation(items[1])
    pool = items[2]
    if type(pool) is not MaxPool2d or fused is None or fused[0] not in ("relu", "leaky_relu"):
        return None
    k = pool.kernel_size if isinstance(pool.kernel_size, (int, np.integer)) else tuple(pool.kernel_size)
    if not isinstance(k, (int, np.integer)):
        if len(k) != 2 or k[0] != k[1]:
            return None
        k = k[0]
    stride = k if pool.stride is None else pool.stride
    if stride not in (k, (k, k), [k, k]) or pool.padding not in (0, (0, 0), [0, 0]):
        return None
    return int(k)


class Sequential(Module):
    """Runs its modules in order; a Linear or Conv2d followed by ReLU/Sigmoid/Tanh (or a Linear by
    LeakyReLU) runs as one op with the activation in its store (same result, one pass less over
    memory, and autograd keeps only the output); Conv2d -> ReLU/LeakyReLU -> MaxPool2d runs as the
    fused conv + max-pool kernel, with the activation applied to the pooled tensor."""

    def __init__(self, *modules: Module):
        super().__init__()
        for i, m in enumerate(modules):
            if not isinstance(m, Module):
                raise TypeError(f"Sequential: item {i} is a {type(m).__name__}, not a Module")
            self.add_module(str(i), m)

    def __getitem__(self, i):
        items = list(self._modules.values())
        return Sequential(*items[i]) if isinstance(i, slice) else items[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module: Module) -> Sequential:
        self.add_module(str(len(self)), module)
        return self

    def forward(self, x):
        items = list(self._modules.values())
        i = 0
        while i < len(items):
            m = items[i]
            fused = _fused_activation(items[i + 1]) if i + 1 < len(items) else None
            pool = _poolable(items[i:i + 3])
            if pool is not None:
                # Conv -> ReLU -> MaxPool: ReLU (and LeakyReLU with a positive slope) never
                # decrease, so they commute with max and can run after the pooling, on a quarter
                # of the data (ties are zeros, whose gradient is zero either way). On float32 CPU
                # tensors one kernel does all three without writing the conv output at all.
                act = items[i + 1]
                if isinstance(x, Tensor) and isinstance(x.data, np.ndarray) and x.dtype == np.float32:
                    x = conv2d_max_pool2d(x, m, pool, fused[0], fused[1])
                else:
                    x = act(items[i + 2](m(x)))
                i += 3
                continue
            if type(m) in (Linear, Conv2d) and m.activation is None and fused is not None and \
                    (fused[0] != "leaky_relu" or type(m) is Linear):
                x = m(x, activation=fused[0], **({"negative_slope": fused[1]} if type(m) is Linear else {}))
                i += 2
            else:
                x = m(x)
                i += 1
        return x


class Embedding(Module):
    """A lookup table: integer indices (any shape) -> rows of weight (num_embeddings, embedding_dim)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None):
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self.weight = Parameter(np.empty((num_embeddings, embedding_dim), np.float32))
        init.normal_(self.weight)
        if padding_idx is not None:
            self.weight.data[padding_idx] = 0

    def forward(self, indices):
        idx = indices.data if isinstance(indices, Tensor) else np.asarray(indices)
        if idx.dtype.kind not in "iu":
            raise TypeError(f"Embedding: indices must be integers, got dtype {idx.dtype}")
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= self.num_embeddings):
            raise ValueError(f"Embedding: indices must be in [0, {self.num_embeddings}), got values in "
                             f"[{int(idx.min())}, {int(idx.max())}]")
        out = self.weight[idx]
        if self.padding_idx is not None and self.weight.requires_grad:
            keep = (idx != self.padding_idx)[..., None].astype(np.float32)  # no gradient to the padding row
            out = out * Tensor(keep)
        return out

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}"


class ModuleList(Module):
    def __init__(self, modules=()):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module: Module):
        self.add_module(str(len(self._modules)), module)
        return self

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


__all__ = ["Embedding", "Identity", "Linear", "ReLU", "Sigmoid", "Tanh", "SiLU", "LeakyReLU", "GELU", "Softmax", "LogSoftmax",
           "Flatten", "Dropout", "Sequential", "ModuleList"]
