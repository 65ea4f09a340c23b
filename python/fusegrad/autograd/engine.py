"""The autograd engine: grad mode, Function, and backward.

A Function is one differentiable op: forward(*arrays, **kw) on raw arrays (NumPy or CuPy) returns
the result array, and backward(grad) returns one gradient array (or None) per input. apply() runs
forward on the data of its tensor arguments and, when grad mode is on and an input requires a
gradient, records itself as the result's `_ctx`.

The engine sees tensors only through what they carry (`data`, `requires_grad`, `grad`, `_ctx`) and
makes new ones with the input's own `_wrap`, so it needs nothing from the Tensor floor above it.

backward() sorts the graph topologically without recursion (a 5,000-op chain is fine), sums the
gradients of every path, accumulates into `.grad` of leaves, and frees the graph unless
retain_graph=True.
"""
from __future__ import annotations

import functools
import sys

import numpy as np

# --- grad mode ----------------------------------------------------------------------------------

_grad_enabled = True


def is_grad_enabled() -> bool:
    return _grad_enabled


class no_grad:
    """Context manager and decorator: ops inside record no graph."""

    def __enter__(self):
        global _grad_enabled
        self._previous, _grad_enabled = _grad_enabled, False

    def __exit__(self, *exc):
        global _grad_enabled
        _grad_enabled = self._previous

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with no_grad():
                return fn(*args, **kwargs)

        return wrapper


class enable_grad(no_grad):
    def __enter__(self):
        global _grad_enabled
        self._previous, _grad_enabled = _grad_enabled, True


# --- Function ------------------------------------------------------------------------------------


class Function:
    """One differentiable op. Subclasses define forward(*arrays, **kw) and backward(grad)."""

    __slots__ = ("parents", "needs_grad", "saved", "freed")

    def __init__(self, *parents):
        self.parents = parents
        self.needs_grad = tuple(p.requires_grad for p in parents)
        self.saved = ()
        self.freed = False

    def save(self, *arrays):
        self.saved = arrays

    def forward(self, *arrays, **kwargs):
        raise NotImplementedError

    def backward(self, grad):
        raise NotImplementedError

    @classmethod
    def apply(cls, *parents, **kwargs):
        """The op on tensors: a new tensor holding forward's result, with this op recorded as its
        origin when a gradient is wanted."""
        ctx = cls(*parents)
        data = ctx.forward(*(p.data for p in parents), **kwargs)
        if isinstance(data, np.generic):  # NumPy turns 0-d results into scalars
            data = np.asarray(data)
        requires_grad = _grad_enabled and any(ctx.needs_grad)
        out = parents[0]._wrap(data, requires_grad)
        if requires_grad:
            out._ctx = ctx
        return out


# --- backward ------------------------------------------------------------------------------------


def topological_order(root) -> list:
    """Tensors reachable from root through requires-grad inputs, each after all of its inputs;
    iterative (no recursion limit)."""
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        if node._ctx is not None:
            for parent in node._ctx.parents:
                if parent.requires_grad and id(parent) not in visited:
                    stack.append((parent, False))
    return order


def backward(root, grad, retain_graph: bool = False) -> None:
    """Propagates `grad` (an array shaped like root) from root back to every leaf that requires a
    gradient, adding into the leaves' `.grad`."""
    grads = {id(root): grad}
    for node in reversed(topological_order(root)):
        g = grads.pop(id(node), None)
        if g is None:
            continue
        if isinstance(g, np.generic):  # NumPy turns 0-d results into scalars
            g = np.asarray(g)
        ctx = node._ctx
        if ctx is None:  # a leaf: accumulate
            if node.requires_grad:
                if node.grad is None:
                    # Adopt g when nothing else can see it (it owns its memory, and the only
                    # references are this loop's and getrefcount's); otherwise, e.g. the same
                    # array handed to two parents by an Add, the leaf gets its own copy.
                    private = g.base is None and sys.getrefcount(g) == 2
                    node.grad = node._wrap(g if private else g.copy(), False)
                else:
                    node.grad.data += g
            continue
        if ctx.freed:
            raise RuntimeError(
                "backward through a graph that has already been freed; call backward(retain_graph=True) "
                "the first time to go through it again")
        parent_grads = ctx.backward(g)
        for parent, needs, pg in zip(ctx.parents, ctx.needs_grad, parent_grads):
            if not needs or pg is None:
                continue
            key = id(parent)
            grads[key] = pg if key not in grads else grads[key] + pg
        parent_grads = pg = g = None  # `grads` holds the only references (see the leaf case)
        if not retain_graph:
            ctx.saved, ctx.freed = (), True
