"""bf16 convolutions (ops.conv2d and its backward passes with precision="bf16"): an im2col of the
NHWC input, then the bf16 GEMM (ops.gemm: on the CPU cpp/gemm/bf16_gemm.h, which rounds the
columns and the HWIO weight to bf16 while packing them; on CUDA arrays cuda/gemm/gemm_bf16.cu's
tensor cores), summing in fp32. The input gradient is the GEMM of the output gradient with the
transposed weight, scattered back (col2im) in fp32. The same code serves both devices through the
array module of its inputs (NumPy, CuPy or the emulated device's).

A 1×1 convolution with stride 1 and no padding is a plain GEMM over the pixels: no im2col. Other
shapes gather the columns in fp32 (the GEMM's packing rounds them), a batch chunk of at most
_COLUMN_BYTES at a time, so the columns of a large batch never need memory of their own.
The geometry comes checked from ops.conv (conv_geometry).
"""
from __future__ import annotations

import numpy as np

from .._backend import array_module, on_device
from .gemm import matmul

# Columns of at most this many bytes exist at a time: the images of a batch are processed in
# chunks that fit, which bounds the extra memory and keeps a chunk's columns in L3 between the
# gather and the GEMM's packing.
_COLUMN_BYTES = 32 << 20


def _is_pointwise(w_shape, geo) -> bool:
    return (w_shape[0] == w_shape[1] == 1 and geo.sh == geo.sw == 1
            and geo.pt == geo.pb == geo.pl == geo.pr == 0)


def _padded(x, geo):
    if geo.pt or geo.pb or geo.pl or geo.pr:
        return array_module(x).pad(x, ((0, 0), (geo.pt, geo.pb), (geo.pl, geo.pr), (0, 0)))
    return x


def _taps(kh, kw, geo, oh, ow):
    """(i, j, rows, cols): each tap of the window and the slices of the padded image it reads."""
    for i in range(kh):
        for j in range(kw):
            yield (i, j, slice(i * geo.dh, i * geo.dh + geo.sh * (oh - 1) + 1, geo.sh),
                   slice(j * geo.dw, j * geo.dw + geo.sw * (ow - 1) + 1, geo.sw))


def _columns(xpad, kh, kw, geo, oh, ow):
    """(n * OH * OW, KH * KW * C) float32 columns of the padded images xpad (a copy): on the CPU one
    strided view copied at once, on a device one slice copy per tap."""
    n, _, _, c = xpad.shape
    xp = array_module(xpad)
    if xp is np:
        s = xpad.strides
        view = np.lib.stride_tricks.as_strided(
            xpad, shape=(n, oh, ow, kh, kw, c),
            strides=(s[0], s[1] * geo.sh, s[2] * geo.sw, s[1] * geo.dh, s[2] * geo.dw, s[3]), writeable=False)
        return np.ascontiguousarray(view).reshape(n * oh * ow, kh * kw * c)
    with on_device(xpad):
        cols = xp.empty((n, oh, ow, kh, kw, c), np.float32)
    for i, j, rows, columns in _taps(kh, kw, geo, oh, ow):
        cols[:, :, :, i, j, :] = xpad[:, rows, columns, :]
    return cols.reshape(n * oh * ow, kh * kw * c)


def _chunks(n, oh, ow, w_shape):
    """Image ranges whose columns fit in _COLUMN_BYTES."""
    per_image = max(oh * ow * w_shape[0] * w_shape[1] * w_shape[2] * 4, 1)
    step = max(1, _COLUMN_BYTES // per_image)
    return [(i, min(n, i + step)) for i in range(0, n, step)]


def forward(x, w, bias, geo, oh, ow, code_name, target, stream=None):
    """target (N, OH, OW, C_out), C-contiguous float32, = act(conv(x, w) + bias)."""
    kh, kw, ci, co = w.shape
    w2 = w.reshape(kh * kw * ci, co)
    if _is_pointwise(w.shape, geo):
        matmul(x.reshape(-1, ci), w2, bias=bias, activation=code_name, out=target.reshape(-1, co), precision="bf16",
               stream=stream)
        return target
    for i0, i1 in _chunks(x.shape[0], oh, ow, w.shape):
        cols = _columns(_padded(x[i0:i1], geo), kh, kw, geo, oh, ow)
        matmul(cols, w2, bias=bias, activation=code_name, out=target[i0:i1].reshape(-1, co), precision="bf16",
               stream=stream)
    return target


def backward_weight(x, g, w_shape, geo, oh, ow, target, stream=None):
    """target (KH, KW, C_in, C_out) = the gradient of conv2d with respect to w."""
    kh, kw, ci, co = w_shape
    if g.size == 0:  # no output pixels: nothing contributes
        target[...] = 0.0
        return target
    t2 = target.reshape(kh * kw * ci, co)
    if _is_pointwise(w_shape, geo):
        matmul(x.reshape(-1, ci).T, g.reshape(-1, co), out=t2, precision="bf16", stream=stream)
        return target
    for index, (i0, i1) in enumerate(_chunks(x.shape[0], oh, ow, w_shape)):
        cols = _columns(_padded(x[i0:i1], geo), kh, kw, geo, oh, ow)
        matmul(cols.T, g[i0:i1].reshape(-1, co), out=t2, accumulate=index > 0, precision="bf16", stream=stream)
    return target


def backward_input(g, w, x_shape, geo, oh, ow, target, stream=None):
    """target (N, H, W, C_in) = the gradient of conv2d with respect to x: the columns' gradient
    g @ w2.T from the bf16 GEMM, summed into the (padded) pixels each column came from in fp32."""
    kh, kw, ci, co = w.shape
    w2t = w.reshape(kh * kw * ci, co).T
    if _is_pointwise(w.shape, geo):
        matmul(g.reshape(-1, co), w2t, out=target.reshape(-1, ci), precision="bf16", stream=stream)
        return target
    xp = array_module(g)
    n, h, wd, _ = x_shape
    hp, wp = h + geo.pt + geo.pb, wd + geo.pl + geo.pr
    for i0, i1 in _chunks(n, oh, ow, w.shape):
        gcols = matmul(g[i0:i1].reshape(-1, co), w2t, precision="bf16", stream=stream).reshape(i1 - i0, oh, ow, kh,
                                                                                             kw, ci)
        with on_device(g):
            gpad = xp.zeros((i1 - i0, hp, wp, ci), np.float32)
        for i, j, rows, cols in _taps(kh, kw, geo, oh, ow):
            gpad[:, rows, cols, :] += gcols[:, :, :, i, j, :]
        target[i0:i1] = gpad[:, geo.pt:geo.pt + h, geo.pl:geo.pl + wd, :]
    return target
