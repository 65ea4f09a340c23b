"""The kernel API: plain functions on raw arrays (NumPy in, NumPy out; CuPy in, CuPy out)."""
from .gemm import matmul
from .gemm_int8 import QuantizedWeight, pack_quantized_weight, quantize_uint8, quantized_matmul
from .attention import attention, attention_backward, embedding_backward, layer_norm, layer_norm_backward
from .attention import draw_seed as attention_draw_seed
from .activation import (
    gelu,
    gelu_backward,
    leaky_relu,
    leaky_relu_backward,
    relu,
    relu_backward,
    sigmoid,
    sigmoid_backward,
    silu,
    silu_backward,
    tanh,
    tanh_backward,
)
from .conv import (conv2d, conv2d_backward, conv2d_backward_bias, conv2d_backward_input, conv2d_backward_weight,
                   conv2d_max_pool2d, quantized_conv2d)
from .layout import to_nchw, to_nhwc, weight_to_hwio, weight_to_oihw
from .optim import adam_step, clip_grad_norm, flatten_params, grad_norm, group_by_dtype_device, sgd_step
from .pool import (
    avg_pool2d,
    avg_pool2d_backward,
    global_avg_pool2d,
    global_avg_pool2d_backward,
    max_pool2d,
    max_pool2d_backward,
    quantized_max_pool2d,
)
from .rnn import gru, lstm, rnn_backward, rnn_forward
from .softmax import (
    bce_with_logits,
    log_softmax,
    log_softmax_backward,
    softmax,
    softmax_backward,
    softmax_cross_entropy,
)

__all__ = [
    "matmul", "quantized_matmul", "pack_quantized_weight", "QuantizedWeight", "quantize_uint8",
    "attention", "attention_backward", "attention_draw_seed", "layer_norm", "layer_norm_backward",
    "embedding_backward",
    "relu", "leaky_relu", "sigmoid", "tanh", "silu", "gelu",
    "relu_backward", "leaky_relu_backward", "sigmoid_backward", "tanh_backward", "silu_backward",
    "gelu_backward",
    "conv2d", "conv2d_backward", "conv2d_backward_input", "conv2d_backward_weight", "conv2d_backward_bias", "conv2d_max_pool2d",
    "quantized_conv2d",
    "adam_step", "sgd_step", "clip_grad_norm", "grad_norm", "flatten_params", "group_by_dtype_device",
    "max_pool2d", "max_pool2d_backward", "quantized_max_pool2d", "avg_pool2d", "avg_pool2d_backward", "global_avg_pool2d",
    "global_avg_pool2d_backward",
    "softmax", "log_softmax", "softmax_backward", "log_softmax_backward", "softmax_cross_entropy",
    "bce_with_logits",
    "lstm", "gru", "rnn_forward", "rnn_backward",
    "to_nhwc", "to_nchw", "weight_to_hwio", "weight_to_oihw",
]
