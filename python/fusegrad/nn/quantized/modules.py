"""int8 inference modules: Linear and Conv2d on the int8 GEMM/conv kernels, and the max-pool that
keeps their uint8 outputs quantized.

Weights are int8, symmetric per output channel (zero point 0: scale = max|w| / 127); activations
uint8 with a scale and zero point (QuantizedTensor). A layer takes a QuantizedTensor as it is, or
quantizes a float input with its calibrated input (scale, zero point); the kernel subtracts the
activation zero point through the weight column sums, multiplies by the two scales, adds the
float32 bias and applies ReLU in its store, and writes float32 or, when the next layer is int8 too
(`quantized_output`), uint8 requantized to the calibrated output scale. Modules built by
fusegrad.quantization.convert / quantize_dynamic; inference only (no gradients). `model.to("cuda")`
moves the int8 weights and quantization parameters, and the layers then run the CUDA int8 kernels
(the weight is packed again for the device on first use).
"""
from __future__ import annotations

import numpy as np

from ... import ops
from ..._backend import as_array, to_host
from ...tensor import Tensor
from .. import functional as F
from ..modules.module import Module
from .tensor import QuantizedTensor, choose_qparams, quantize

WEIGHT_QMAX = 127  # symmetric int8 weights: -128 is left unused so that w and -w both exist


def quantize_weight(w: np.ndarray, channel_axis: int) -> tuple[np.ndarray, np.ndarray]:
    """(int8 weight, float32 scale per output channel) with scale = max|w| / 127 over each channel."""
    w = np.asarray(w, np.float32)
    other = tuple(a for a in range(w.ndim) if a != channel_axis % w.ndim)
    scale = np.abs(w).max(axis=other) / WEIGHT_QMAX
    scale[scale == 0] = 1.0  # an all-zero channel: any scale represents it
    shape = [1] * w.ndim
    shape[channel_axis] = -1
    q = np.clip(np.rint(w / scale.reshape(shape)), -WEIGHT_QMAX, WEIGHT_QMAX).astype(np.int8)
    return q, scale.astype(np.float32)


def _scalar(value, dtype) -> np.ndarray:
    return np.array([value], dtype)


class _PackedWeightLayer(Module):
    """A module with int8 `weight`, per-channel `weight_scale` and `bias` buffers and the kernel's
    packed copy of them (the scales and bias checked once and, on a GPU, kept there), made on
    first use and dropped when the buffers change (load_state_dict, set_quantization), the module
    moves (to) or is copied or pickled (the packed panels are a compiled object: they are rebuilt
    from the buffers)."""

    _packed = None
    pack_layout = "kn"

    def packed_weight(self):
        if self._packed is None:
            self._packed = ops.pack_quantized_weight(self.weight.data, layout=self.pack_layout,
                                                     scale=self.weight_scale.data,
                                                     bias=None if self.bias is None else self.bias.data)
        return self._packed

    def _reset_derived_state(self) -> None:
        self._packed = None

    def __getstate__(self):
        state = dict(self.__dict__)
        for derived in ("_packed", "_qparams"):
            state.pop(derived, None)
        return state


class _QuantizedLayer(_PackedWeightLayer):
    """What Linear and Conv2d share: int8 weight + per-channel scales, float bias, the calibrated
    input and output quantization, and the packed weight derived from them."""

    def __init__(self, weight_shape, out_channels: int, bias: bool, activation, quantized_output: bool):
        super().__init__()
        if activation not in (None, "relu"):
            raise ValueError(f"{type(self).__name__}: the int8 store applies activation None or 'relu', "
                             f"got {activation!r}")
        self.activation, self.quantized_output = activation, bool(quantized_output)
        self.register_buffer("weight", np.zeros(weight_shape, np.int8))
        self.register_buffer("weight_scale", np.ones(out_channels, np.float32))
        self.register_buffer("bias", np.zeros(out_channels, np.float32) if bias else None)
        self.register_buffer("input_scale", _scalar(1.0, np.float32))
        self.register_buffer("input_zero_point", _scalar(0, np.int32))
        self.register_buffer("output_scale", _scalar(1.0, np.float32))
        self.register_buffer("output_zero_point", _scalar(0, np.int32))

    _qparams = None

    def qparams(self) -> tuple:
        """(input scale, input zero point, output scale, output zero point) as Python numbers, read
        from their buffers once (on a GPU each read would wait for the device)."""
        if self._qparams is None:
            buffers = (self.input_scale, self.input_zero_point, self.output_scale, self.output_zero_point)
            host = [to_host(b.data) for b in buffers]
            self._qparams = (float(host[0][0]), int(host[1][0]), float(host[2][0]), int(host[3][0]))
        return self._qparams

    def _reset_derived_state(self) -> None:
        super()._reset_derived_state()
        self._qparams = None

    def set_quantization(self, weight_q, weight_scale, bias, input_qparams, output_qparams) -> None:
        self.weight.data[...] = weight_q
        self.weight_scale.data[...] = weight_scale
        if self.bias is not None:
            self.bias.data[...] = bias
        self.input_scale.data[0], self.input_zero_point.data[0] = input_qparams
        self.output_scale.data[0], self.output_zero_point.data[0] = output_qparams
        self._reset_derived_state()

    def _operand(self, x) -> QuantizedTensor:
        if isinstance(x, QuantizedTensor):
            return x
        if not isinstance(x, Tensor):
            x = Tensor(as_array(x, np.float32))
        scale, zero_point = self.qparams()[:2]
        return QuantizedTensor(quantize(x, scale, zero_point), scale, zero_point)

    def _epilogue(self) -> dict:
        """The store's arguments beside the scales and bias, which the packed weight carries."""
        if not self.quantized_output:
            return dict(activation=self.activation)
        out_scale, out_zero_point = self.qparams()[2:]
        return dict(activation=self.activation, out_dtype=np.uint8, out_scale=out_scale, out_zero_point=out_zero_point)

    def _result(self, y):
        if self.quantized_output:
            return QuantizedTensor(y, *self.qparams()[2:])
        return Tensor(y)


class Linear(_QuantizedLayer):
    """int8 y = x @ W.T + b (weight (out_features, in_features) int8, as the float Linear's)."""

    pack_layout = "nk"

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation=None,
                 quantized_output: bool = False):
        super().__init__((out_features, in_features), out_features, bias, activation, quantized_output)
        self.in_features, self.out_features = in_features, out_features

    @classmethod
    def from_float(cls, linear, input_qparams, output_qparams=(1.0, 0), activation=None, quantized_output=False):
        q = cls(linear.in_features, linear.out_features, linear.bias is not None, activation, quantized_output)
        w, scale = quantize_weight(linear.weight.data, channel_axis=0)
        q.set_quantization(w, scale, None if linear.bias is None else linear.bias.data, input_qparams,
                           output_qparams)
        return q

    def forward(self, x):
        a = self._operand(x)
        lead = a.shape[:-1]
        y = ops.quantized_matmul(a.data.reshape(-1, a.shape[-1]), self.packed_weight(), a_scale=a.scale,
                                 a_zero_point=a.zero_point, **self._epilogue())
        return self._result(y.reshape(*lead, self.out_features))

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}"
                + (f", activation={self.activation!r}" if self.activation else "")
                + (", quantized_output=True" if self.quantized_output else ""))


class Conv2d(_QuantizedLayer):
    """int8 NHWC convolution, weight (KH, KW, C_in, C_out) int8 with one scale per output channel."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 bias: bool = True, activation=None, quantized_output: bool = False):
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        super().__init__((kh, kw, in_channels, out_channels), out_channels, bias, activation, quantized_output)
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, (kh, kw)
        self.stride, self.padding, self.dilation = stride, padding, dilation

    @classmethod
    def from_float(cls, conv, input_qparams, output_qparams=(1.0, 0), activation=None, quantized_output=False):
        q = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                conv.bias is not None, activation, quantized_output)
        w, scale = quantize_weight(conv.weight.data, channel_axis=3)
        q.set_quantization(w, scale, None if conv.bias is None else conv.bias.data, input_qparams, output_qparams)
        return q

    def forward(self, x):
        a = self._operand(x)
        y = ops.quantized_conv2d(a.data, self.packed_weight(), stride=self.stride, padding=self.padding,
                                 dilation=self.dilation, x_scale=a.scale, x_zero_point=a.zero_point,
                                 **self._epilogue())
        return self._result(y)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}" + (f", activation={self.activation!r}" if self.activation else "")
                + (", quantized_output=True" if self.quantized_output else ""))


class MaxPool2d(Module):
    """Max pooling of a QuantizedTensor on its uint8 values (the float mapping is monotone, so this is
    the pool of the real values); float tensors are pooled as nn.MaxPool2d does."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    @classmethod
    def from_float(cls, pool):
        if getattr(pool, "ceil_mode", False):
            raise ValueError("quantized MaxPool2d: ceil_mode=True is not supported")
        return cls(pool.kernel_size, pool.stride, pool.padding)

    def forward(self, x):
        if isinstance(x, QuantizedTensor):
            y = ops.quantized_max_pool2d(x.data, self.kernel_size, self.stride, self.padding)
            return QuantizedTensor(y, x.scale, x.zero_point)
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class DynamicLinear(_PackedWeightLayer):
    """Linear with int8 weights whose float input is quantized per call from its own range (PyTorch's
    dynamic quantization): no calibration, float32 output."""

    pack_layout = "nk"

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation=None):
        super().__init__()
        if activation not in (None, "relu"):
            raise ValueError(f"DynamicLinear: activation must be None or 'relu', got {activation!r}")
        self.in_features, self.out_features, self.activation = in_features, out_features, activation
        self.register_buffer("weight", np.zeros((out_features, in_features), np.int8))
        self.register_buffer("weight_scale", np.ones(out_features, np.float32))
        self.register_buffer("bias", np.zeros(out_features, np.float32) if bias else None)

    @classmethod
    def from_float(cls, linear):
        activation = getattr(linear, "activation", None)
        q = cls(linear.in_features, linear.out_features, linear.bias is not None, activation)
        q.weight.data[...], q.weight_scale.data[...] = quantize_weight(linear.weight.data, channel_axis=0)
        if linear.bias is not None:
            q.bias.data[...] = linear.bias.data
        return q

    def forward(self, x):
        data = x.data if isinstance(x, Tensor) else as_array(x, np.float32)
        low, high = (float(data.min()), float(data.max())) if data.size else (0.0, 0.0)
        scale, zero_point = choose_qparams(low, high)
        lead = data.shape[:-1]
        y = ops.quantized_matmul(quantize(data, scale, zero_point).reshape(-1, data.shape[-1]), self.packed_weight(),
                                 a_scale=scale, a_zero_point=zero_point, activation=self.activation)
        return Tensor(y.reshape(*lead, self.out_features))

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, dtype=int8"
