"""Compressed models at inference: the MNIST CNN in int8 (static post-training quantization)
against the same model in float32 (ours and PyTorch's) and PyTorch's own int8 model (eager-mode
static quantization, conv+ReLU and linear+ReLU fused, its default x86 engine). Unit: images per
second over a batch; every model is calibrated on the same random images, so only speed is
compared here (accuracy is examples/compress.py's table)."""
from __future__ import annotations

import numpy as np

from ... import models, no_grad, quantization, tensor
from ...random import manual_seed
from ..case import SPINNING_BASELINE_SETTLE_S, Case, optional_import
from .train import _torch_cnn


def _torch_int8_cnn(torch, calibration_nchw):
    q = torch.ao.quantization
    model = _torch_cnn(torch).eval()
    model = q.fuse_modules(model, [["0", "1"], ["3", "4"], ["7", "8"]])
    wrapped = q.QuantWrapper(model).eval()
    wrapped.qconfig = q.get_default_qconfig("x86")
    prepared = q.prepare(wrapped)
    with torch.no_grad():
        prepared(torch.from_numpy(calibration_nchw))
    return q.convert(prepared)


def _mnist_int8_case(batch: int) -> Case:
    def setup():
        rng = np.random.default_rng(0)
        x = rng.random((batch, 28, 28, 1), dtype=np.float32)
        calibration = rng.random((256, 28, 28, 1), dtype=np.float32)
        manual_seed(0)
        model = models.mnist_cnn().eval()
        prepared = quantization.prepare(model)
        prepared(calibration)
        qmodel = quantization.convert(prepared)
        tx = tensor(x)

        def float_inference():
            with no_grad():
                model(tx)

        baselines = {"fusegrad_fp32": float_inference}
        torch = optional_import("torch")
        if torch is not None:
            nchw = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
            torch_model = _torch_cnn(torch).eval()

            def torch_inference(m):
                def run():
                    with torch.no_grad():
                        m(nchw)
                return run

            baselines["torch"] = torch_inference(torch_model)
            torch_q = _torch_int8_cnn(torch, np.ascontiguousarray(calibration.transpose(0, 3, 1, 2)))
            baselines["torch_int8"] = torch_inference(torch_q)
        def int8_inference():
            with no_grad():
                qmodel(x)
        return int8_inference, baselines

    return Case(f"quantization/mnist_cnn_int8_inference/batch{batch}", "quantization", "cpu", "samples/s", batch,
                setup, note="static int8 (uint8 between layers) vs float32 and torch eager int8 (x86 engine)",
                settle_s=SPINNING_BASELINE_SETTLE_S)


def cases():
    return [_mnist_int8_case(batch) for batch in (64, 512)]
