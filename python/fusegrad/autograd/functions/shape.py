"""Reshapes, permutations, indexing, concatenation and moves between devices."""
from __future__ import annotations

import numpy as np

from ..._backend import array_module, device_of, to_device
from ..engine import Function


class Reshape(Function):
    def forward(self, a, shape=()):
        self.save(a.shape)
        return a.reshape(shape)

    def backward(self, g):
        return (g.reshape(self.saved[0]),)


class Permute(Function):
    def forward(self, a, axes=()):
        self.save(axes)
        return a.transpose(axes)

    def backward(self, g):
        return (g.transpose(np.argsort(self.saved[0])),)


class Index(Function):
    def forward(self, a, index=None):
        self.save(a.shape, index)
        return a[index]

    def backward(self, g):
        shape, index = self.saved
        xp = array_module(g)
        out = xp.zeros(shape, dtype=g.dtype)
        xp.add.at(out, index, g)  # repeated indices accumulate
        return (out,)


class Concatenate(Function):
    def forward(self, *arrays, axis=0):
        self.save([a.shape[axis] for a in arrays], axis)
        return array_module(arrays[0]).concatenate(arrays, axis=axis)

    def backward(self, g):
        sizes, axis = self.saved
        cuts = np.cumsum(sizes)[:-1].tolist()
        return tuple(array_module(g).split(g, cuts, axis=axis))


class ToDevice(Function):
    def forward(self, a, device="cpu"):
        self.save(device_of(a))
        return to_device(a, device)

    def backward(self, g):
        return (to_device(g, self.saved[0]),)
