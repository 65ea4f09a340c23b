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

    def recording(self) -> bool:
        """Whether apply() will record this op for backward, i.e. whether forward must keep what
        backward needs (false under no_grad or when no input requires a gradient)."""
        return _grad_enabled and any(self.needs_grad)

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
        requires_grad = ctx.recording()
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


# Called at the end of the running (or next) backward(), then forgotten: queue_callback(fn).
_queued_callbacks: list = []


def queue_callback(fn) -> None:
    """Runs fn() once, when the backward() now running (or the next one) has finished with every
    leaf, as PyTorch's engine.queue_callback. DistributedDataParallel waits for its gradient
    all-reduces here."""
    _queued_callbacks.append(fn)


def _accumulate(node, g) -> None:
    """Adds g into leaf node's .grad, then calls the leaf's post-accumulate hooks (its gradient
    for this backward is final: every path to it has been summed)."""
    if isinstance(g, np.generic):  # NumPy turns 0-d results into scalars
        g = np.asarray(g)
    if node.grad is None:
        # Adopt g when nothing else can see it (it owns its memory, and the only references are
        # this function's and getrefcount's); otherwise, e.g. the same array handed to two
        # parents by an Add, the leaf gets its own copy.
        private = g.base is None and sys.getrefcount(g) == 3  # + the caller's popped reference
        node.grad = node._wrap(g if private else g.copy(), False)
    else:
        node.grad.data += g
    g = None
    hooks = getattr(node, "_grad_hooks", None)
    if hooks:
        for hook in tuple(hooks.values()):
            hook(node)


def backward(root, grad, retain_graph: bool = False) -> None:
    """Propagates `grad` (an array shaped like root) from root back to every leaf that requires a
    gradient, adding into the leaves' `.grad`.

    A leaf is accumulated as soon as the last op that feeds it has run (its gradient is then
    final), not at the end: its post-accumulate hooks (Tensor.register_post_accumulate_grad_hook)
    fire in the middle of backward, which is when DistributedDataParallel starts an all-reduce."""
    try:
        if root._ctx is None:  # backward of a leaf itself
            _accumulate(root, grad)
            return
        order = topological_order(root)
        # Per leaf, the number of op inputs still to deliver a gradient to it (None or not).
        pending: dict = {}
        for node in order:
            if node._ctx is not None:
                for parent, needs in zip(node._ctx.parents, node._ctx.needs_grad):
                    if needs and parent._ctx is None and parent.requires_grad:
                        pending[id(parent)] = pending.get(id(parent), 0) + 1
        grads = {id(root): grad}
        leaf_grads: dict = {}
        for node in reversed(order):
            ctx = node._ctx
            if ctx is None:
                continue  # leaves are accumulated when their last input arrives (below)
            g = grads.pop(id(node), None)
            if g is not None and isinstance(g, np.generic):
                g = np.asarray(g)
            if g is not None and ctx.freed:
                raise RuntimeError(
                    "backward through a graph that has already been freed; call backward(retain_graph=True) "
                    "the first time to go through it again")
            parent_grads = ctx.backward(g) if g is not None else (None,) * len(ctx.parents)
            ready = []
            for parent, needs, pg in zip(ctx.parents, ctx.needs_grad, parent_grads):
                if not needs:
                    continue
                key = id(parent)
                leaf = key in pending
                table = leaf_grads if leaf else grads
                if pg is not None:
                    table[key] = pg if key not in table else table[key] + pg
                if leaf:
                    pending[key] -= 1
                    if pending[key] == 0:
                        ready.append(parent)
            flowed, parent_grads, pg, g = g is not None, None, None, None  # the tables hold the only references
            if flowed and not retain_graph:
                ctx.saved, ctx.freed = (), True
            for leaf in ready:
                lg = leaf_grads.pop(id(leaf), None)
                if lg is not None:
                    _accumulate(leaf, lg)
                lg = None
    except BaseException:
        _queued_callbacks.clear()  # a failed backward finishes nothing
        raise
    while _queued_callbacks:
        _queued_callbacks.pop(0)()
