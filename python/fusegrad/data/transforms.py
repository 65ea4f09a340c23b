"""Augmentations for batches of NHWC images, on either device.

Each transform is called as t(batch, rng=None) on a whole (N, H, W, C) batch and returns a new
batch of the same shape and dtype. The random parameters (one per image) come from `rng`: the
DataLoader passes its per-epoch generator, so augmentation is reproducible and resumes exactly;
called on its own, a transform uses its own generator, seeded by `seed` (or from fusegrad's
generator when seed is None). The parameters are drawn on the host; the pixels move with the
array module of the batch (NumPy or CuPy), one vectorised gather per batch, no per-image loop.
"""
from __future__ import annotations

import math

import numpy as np

from .._backend import array_module
from ..random import default_generator
from ..tensor import Tensor


def _batch(x, name):
    if isinstance(x, Tensor):
        x = x.data
    if x.ndim != 4:
        raise ValueError(f"{name}: expected an NHWC batch (N, H, W, C), got shape {tuple(x.shape)}")
    return x


class _Random:
    def __init__(self, seed):
        self._rng = np.random.default_rng(int(default_generator().integers(2**63)) if seed is None else seed)

    def _generator(self, rng):
        return self._rng if rng is None else rng


class RandomShift(_Random):
    """Moves each image by a whole number of pixels, up to max_shift (an int, or (rows, cols)) each
    way; vacated pixels take `fill`."""

    def __init__(self, max_shift=2, fill: float = 0.0, seed: int | None = None):
        super().__init__(seed)
        sy, sx = (max_shift, max_shift) if np.isscalar(max_shift) else tuple(max_shift)
        if sy < 0 or sx < 0 or int(sy) != sy or int(sx) != sx:
            raise ValueError(f"RandomShift: max_shift must be whole numbers >= 0, got {max_shift!r}")
        self.max_shift, self.fill = (int(sy), int(sx)), fill

    def __call__(self, x, rng=None):
        x = _batch(x, "RandomShift")
        rng = self._generator(rng)
        n, h, w, _ = x.shape
        sy, sx = self.max_shift
        dy = rng.integers(-sy, sy + 1, n)
        dx = rng.integers(-sx, sx + 1, n)
        xp = array_module(x)
        padded = xp.pad(x, ((0, 0), (sy, sy), (sx, sx), (0, 0)), constant_values=self.fill)
        # Output pixel (i, j) of image k reads padded pixel (i + sy - dy[k], j + sx - dx[k]).
        rows = xp.asarray(sy - dy)[:, None] + xp.arange(h)[None, :]
        cols = xp.asarray(sx - dx)[:, None] + xp.arange(w)[None, :]
        return padded[xp.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]

    def __repr__(self):
        return f"RandomShift(max_shift={self.max_shift}, fill={self.fill})"


class RandomFlip(_Random):
    """Mirrors each image left-right (horizontal) and/or upside down (vertical) with probability p."""

    def __init__(self, horizontal: bool = True, vertical: bool = False, p: float = 0.5, seed: int | None = None):
        super().__init__(seed)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomFlip: p must be in [0, 1], got {p}")
        if not (horizontal or vertical):
            raise ValueError("RandomFlip: choose horizontal and/or vertical")
        self.horizontal, self.vertical, self.p = horizontal, vertical, p

    def __call__(self, x, rng=None):
        x = _batch(x, "RandomFlip")
        rng = self._generator(rng)
        xp = array_module(x)
        out = x
        for axis, on in ((2, self.horizontal), (1, self.vertical)):
            if on:
                mask = xp.asarray(rng.random(x.shape[0]) < self.p)[:, None, None, None]
                out = xp.where(mask, xp.flip(out, axis=axis), out)
        return out

    def __repr__(self):
        return f"RandomFlip(horizontal={self.horizontal}, vertical={self.vertical}, p={self.p})"


class RandomRotation(_Random):
    """Rotates each image about its centre by an angle uniform in [-degrees, degrees] (positive:
    counter-clockwise), with bilinear
    interpolation; pixels from outside the image take `fill`."""

    def __init__(self, degrees: float = 10.0, fill: float = 0.0, seed: int | None = None):
        super().__init__(seed)
        if degrees < 0:
            raise ValueError(f"RandomRotation: degrees must be >= 0, got {degrees}")
        self.degrees, self.fill = float(degrees), fill

    def __call__(self, x, rng=None):
        x = _batch(x, "RandomRotation")
        rng = self._generator(rng)
        n, h, w, c = x.shape
        xp = array_module(x)
        # Positive angles turn counter-clockwise as displayed (row 0 at the top), as np.rot90 does.
        theta = xp.asarray(rng.uniform(-self.degrees, self.degrees, n) * (-math.pi / 180.0))
        cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
        yy = xp.arange(h, dtype=np.float64)[None, :, None] - cy
        xx = xp.arange(w, dtype=np.float64)[None, None, :] - cx
        cos, sin = xp.cos(theta)[:, None, None], xp.sin(theta)[:, None, None]
        # Inverse mapping: the source of output pixel p is R(-theta) p, so every output pixel is set.
        src_y = cos * yy - sin * xx + cy
        src_x = sin * yy + cos * xx + cx
        y0, x0 = xp.floor(src_y).astype(np.int64), xp.floor(src_x).astype(np.int64)
        fy, fx = (src_y - y0)[..., None].astype(x.dtype), (src_x - x0)[..., None].astype(x.dtype)
        # Pad by one pixel of `fill` so neighbours just outside the image interpolate towards fill.
        padded = xp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=self.fill)
        k = xp.arange(n)[:, None, None]

        def tap(yi, xi):
            inside = (yi >= -1) & (yi <= h) & (xi >= -1) & (xi <= w)
            v = padded[k, xp.clip(yi + 1, 0, h + 1), xp.clip(xi + 1, 0, w + 1)]
            return xp.where(inside[..., None], v, xp.asarray(self.fill, dtype=x.dtype))

        top = tap(y0, x0) * (1 - fx) + tap(y0, x0 + 1) * fx
        bottom = tap(y0 + 1, x0) * (1 - fx) + tap(y0 + 1, x0 + 1) * fx
        return (top * (1 - fy) + bottom * fy).astype(x.dtype, copy=False)

    def __repr__(self):
        return f"RandomRotation(degrees={self.degrees}, fill={self.fill})"


class Normalize:
    """(x - mean) / std per channel (the last axis); mean and std are scalars or one per channel."""

    def __init__(self, mean, std):
        self.mean = np.asarray(mean, np.float32).reshape(-1)
        self.std = np.asarray(std, np.float32).reshape(-1)
        if np.any(self.std <= 0):
            raise ValueError(f"Normalize: std must be > 0, got {std}")

    def __call__(self, x, rng=None):
        x = _batch(x, "Normalize")
        c = x.shape[-1]
        for name, v in (("mean", self.mean), ("std", self.std)):
            if v.size not in (1, c):
                raise ValueError(f"Normalize: {name} has {v.size} values for {c} channels")
        xp = array_module(x)
        return ((x - xp.asarray(self.mean)) / xp.asarray(self.std)).astype(x.dtype, copy=False)

    def __repr__(self):
        return f"Normalize(mean={self.mean.tolist()}, std={self.std.tolist()})"


class Compose:
    """Applies transforms in order, passing each the same generator."""

    def __init__(self, transforms):
        self.transforms = list(transforms)
        for t in self.transforms:
            if not callable(t):
                raise TypeError(f"Compose: {t!r} is not callable")

    def __call__(self, x, rng=None):
        for t in self.transforms:
            x = t(x, rng)
        return x

    def __repr__(self):
        return "Compose([" + ", ".join(map(repr, self.transforms)) + "])"
