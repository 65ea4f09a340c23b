"""DistributedDataParallel, with PyTorch's semantics.

At wrap time every parameter (and buffer) is broadcast from rank 0, so all ranks start equal. The
trainable parameters are put, in reverse order (the order backward finishes them), into buckets of
at most bucket_cap_mb. Each parameter's post-accumulate-grad hook copies its final gradient into its
bucket's flat buffer; when a bucket is full its all-reduce starts at once (MPI_Iallreduce, or NCCL
on a side stream) while backward goes on with the earlier layers. Buckets start strictly in index
order, so every rank issues the same collectives in the same order. At the end of backward (an
engine callback) the remaining buckets are waited for, divided by the world size, and copied back
into each .grad: every rank then holds the same averaged gradient and the optimizer takes the same
step everywhere.

no_sync(): backward inside it only accumulates locally (gradient accumulation); the first backward
outside it reduces the accumulated sum. Frozen parameters (requires_grad False at wrap time) are
left out. find_unused_parameters=True: after each forward the graph is walked and parameters it does
not reach count as ready with a zero gradient (otherwise a parameter that gets no gradient is an
error at the end of backward, naming it, rather than a hang).

`last_stats` after each synchronised backward: buckets, bytes, and `wait_s`, the time backward's end
spent waiting for all-reduces that had not finished: the communication not hidden behind backward.
"""
from __future__ import annotations

import contextlib
import time

from ... import distributed as dist
from ..._backend import array_module
from ...autograd import engine
from ..modules.module import Module


class _Bucket:
    def __init__(self, params, xp, dtype):
        self.params = params
        self.offsets, total = [], 0
        for p in params:
            self.offsets.append(total)
            total += p.data.size
        self.buffer = xp.empty(total, dtype)
        self.index = {id(p): i for i, p in enumerate(params)}
        self.pending = len(params)
        self.work = None

    def put(self, i, grad):
        off, n = self.offsets[i], self.params[i].data.size
        self.buffer[off:off + n] = grad.reshape(-1)

    def zero(self, i):
        off, n = self.offsets[i], self.params[i].data.size
        self.buffer[off:off + n] = 0


class DistributedDataParallel(Module):
    """Wraps `module` for data-parallel training over fusegrad.distributed (init() first). Call it
    as the module; backward() then averages gradients across ranks."""

    def __init__(self, module: Module, bucket_cap_mb: float = 25, find_unused_parameters: bool = False,
                 broadcast_buffers: bool = True):
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"DistributedDataParallel wraps an nn.Module, got {type(module).__name__}")
        if not bucket_cap_mb > 0:
            raise ValueError(f"bucket_cap_mb must be > 0, got {bucket_cap_mb}")
        if not dist.is_initialized():
            raise RuntimeError("DistributedDataParallel: call fusegrad.distributed.init() first")
        self.module = module
        self.world_size = dist.get_world_size()
        self.find_unused_parameters = bool(find_unused_parameters)
        self.broadcast_buffers = bool(broadcast_buffers)
        self.require_backward_grad_sync = True
        self.last_stats = None
        self._sync_state()
        trainable = [p for p in module.parameters() if p.requires_grad]
        seen, unique = set(), []
        for p in trainable:  # a parameter shared by two layers is reduced once
            if id(p) not in seen:
                seen.add(id(p))
                unique.append(p)
        self._buckets = self._make_buckets(unique[::-1], int(bucket_cap_mb * 2**20))
        self._where = {id(p): (b, bucket.index[id(p)]) for b, bucket in enumerate(self._buckets)
                       for p in bucket.params}
        self._active = False
        self._unused = ()
        self._handles = [p.register_post_accumulate_grad_hook(self._on_grad) for p in unique]

    # -- set-up --------------------------------------------------------------------------------
    def _sync_state(self):
        for t in list(self.module.parameters()) + [b for b in self.module.buffers() if b is not None]:
            self._broadcast_into(t)

    @staticmethod
    def _broadcast_into(t):
        data = t.data
        if data.flags.c_contiguous and getattr(data.flags, "writeable", True):
            dist.broadcast(data, 0)
        else:
            t.data = dist.broadcast(array_module(data).ascontiguousarray(data), 0)

    @staticmethod
    def _make_buckets(params, cap_bytes):
        buckets, current, size, key = [], [], 0, None
        for p in params:
            k = (p.dtype, p.device)
            nbytes = p.data.size * p.data.itemsize
            if current and (k != key or size + nbytes > cap_bytes):
                buckets.append(current)
                current, size = [], 0
            current.append(p)
            size += nbytes
            key = k
        if current:
            buckets.append(current)
        return [_Bucket(ps, array_module(ps[0].data), ps[0].dtype) for ps in buckets]

    # -- forward ---------------------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        if self.broadcast_buffers and self.training and self.world_size > 1:
            for b in self.module.buffers():
                if b is not None:
                    self._broadcast_into(b)
        out = self.module(*args, **kwargs)
        if self.find_unused_parameters and engine.is_grad_enabled():
            self._unused = self._unreached(out)
        return out

    def _unreached(self, out):
        roots = out if isinstance(out, (tuple, list)) else (out,)
        reached = set()
        for r in roots:
            if getattr(r, "_ctx", None) is not None:
                reached.update(id(t) for t in engine.topological_order(r))
        return tuple(p for b in self._buckets for p in b.params if id(p) not in reached)

    @contextlib.contextmanager
    def no_sync(self):
        """Backward passes inside only accumulate gradients locally; the next one outside reduces."""
        previous, self.require_backward_grad_sync = self.require_backward_grad_sync, False
        try:
            yield
        finally:
            self.require_backward_grad_sync = previous

    # -- during backward ---------------------------------------------------------------------------
    def _begin(self):
        self._active = True
        self._next_launch = 0
        self._wait_s = 0.0
        for bucket in self._buckets:
            bucket.pending, bucket.work = len(bucket.params), None
        engine.queue_callback(self._finish)
        for p in self._unused:  # counted as ready now, with a zero gradient
            b, i = self._where[id(p)]
            self._buckets[b].zero(i)
            self._buckets[b].pending -= 1
        self._unused = ()

    def _on_grad(self, p):
        if not self.require_backward_grad_sync:
            return
        if not self._active:
            self._begin()
        b, i = self._where[id(p)]
        bucket = self._buckets[b]
        bucket.put(i, p.grad.data)
        bucket.pending -= 1
        self._launch_ready()

    def _launch_ready(self):
        buckets = self._buckets
        while self._next_launch < len(buckets) and buckets[self._next_launch].pending <= 0:
            bucket = buckets[self._next_launch]
            bucket.work = dist.all_reduce(bucket.buffer, "sum", out=bucket.buffer, async_op=True)
            self._next_launch += 1
        for bucket in buckets[:self._next_launch]:  # drive MPI's progress engine
            if bucket.work is not None and not bucket.work.done:
                bucket.work.is_completed()

    def _finish(self):
        self._active = False
        missing = [p for bucket in self._buckets[self._next_launch:] if bucket.pending > 0
                   for p in bucket.params if p.grad is None]
        if any(bucket.pending > 0 for bucket in self._buckets):
            names = {id(p): n for n, p in self.module.named_parameters()}
            listed = ", ".join(names.get(id(p), f"shape {p.shape}") for p in missing[:8]) or "(some parameters)"
            raise RuntimeError(
                f"DistributedDataParallel: parameters got no gradient in this backward: {listed}; pass "
                "find_unused_parameters=True if some parameters are not used in every forward")
        self._launch_ready()
        scale = 1.0 / self.world_size
        nbytes, waited = 0, 0.0
        for bucket in self._buckets:
            start = time.perf_counter()
            bucket.work.wait()
            waited += time.perf_counter() - start
            if self.world_size > 1:
                bucket.buffer *= bucket.buffer.dtype.type(scale)
            nbytes += bucket.buffer.nbytes
            for p, off in zip(bucket.params, bucket.offsets):
                view = bucket.buffer[off:off + p.data.size].reshape(p.shape)
                if p.grad is None:
                    p.grad = p._wrap(view.copy(), False)
                else:
                    p.grad.data[...] = view
        self.last_stats = {"buckets": len(self._buckets), "bytes": nbytes,
                           "wait_s": waited}

    def extra_repr(self) -> str:
        return f"world_size={self.world_size}, buckets={len(self._buckets)}"
