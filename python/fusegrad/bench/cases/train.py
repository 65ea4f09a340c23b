"""Whole training steps (forward, loss, backward, Adam step) against PyTorch eager with the same
model, data and optimizer. Unit: samples per second."""
from __future__ import annotations

import numpy as np

from ... import models, nn, optim, tensor
from ...random import manual_seed
from ..case import Case, optional_import


def _fusegrad_step(model, x, y):
    opt = optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()

    def step():
        opt.zero_grad()
        loss = loss_fn(model(tensor(x)), y)
        loss.backward()
        opt.step()

    return step


def _torch_mlp(torch):
    n = torch.nn
    return n.Sequential(n.Flatten(), n.Linear(784, 500), n.ReLU(), n.Linear(500, 300), n.ReLU(), n.Linear(300, 10))


def _torch_cnn(torch):
    n = torch.nn
    return n.Sequential(n.Conv2d(1, 32, 3), n.ReLU(), n.MaxPool2d(2), n.Conv2d(32, 64, 3), n.ReLU(), n.MaxPool2d(2),
                        n.Flatten(), n.Linear(1600, 64), n.ReLU(), n.Linear(64, 10))


def _torch_step(torch, model, x, y):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def step():
        opt.zero_grad()
        loss = loss_fn(model(tx), ty)
        loss.backward()
        opt.step()

    return step


def _case(kind: str, batch: int) -> Case:
    def setup():
        rng = np.random.default_rng(0)
        x = rng.random((batch, 28, 28, 1), dtype=np.float32)
        y = rng.integers(0, 10, batch)
        manual_seed(0)
        ours = _fusegrad_step(models.mlp() if kind == "mlp" else models.mnist_cnn(), x, y)
        baselines = {}
        torch = optional_import("torch")
        if torch is not None:
            torch.manual_seed(0)
            if kind == "mlp":
                baselines["torch"] = _torch_step(torch, _torch_mlp(torch), x, y)
            else:
                nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
                baselines["torch"] = _torch_step(torch, _torch_cnn(torch), nchw, y)
                last = _torch_cnn(torch).to(memory_format=torch.channels_last)
                cl = torch.from_numpy(nchw).contiguous(memory_format=torch.channels_last).numpy()
                baselines["torch_channels_last"] = _torch_step(torch, last, cl, y)
        return ours, baselines

    name = "784-500-300-10" if kind == "mlp" else "cnn32-64"
    return Case(f"train/{kind}_adam_step/{name}/batch{batch}", "train", "cpu", "samples/s", batch, setup)



def _cuda_case(batch: int) -> Case:
    """The MNIST CNN step on the GPU: inputs, labels, parameters and optimizer state on the device,
    against PyTorch eager on the same GPU (cuDNN with TF32 off, set in the call, as fusegrad's fp32
    kernels compute in true fp32)."""
    def setup():
        import cupy as cp

        rng = np.random.default_rng(0)
        x = rng.random((batch, 28, 28, 1), dtype=np.float32)
        y = rng.integers(0, 10, batch)
        manual_seed(0)
        ours = _fusegrad_step(models.mnist_cnn().to("cuda"), cp.asarray(x), cp.asarray(y))
        baselines = {}
        torch = optional_import("torch")
        if torch is not None and torch.cuda.is_available():
            torch.manual_seed(0)
            nchw = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).cuda()
            ty = torch.from_numpy(y).cuda()
            for name, fmt in (("torch", torch.contiguous_format), ("torch_channels_last", torch.channels_last)):
                model = _torch_cnn(torch).cuda().to(memory_format=fmt)
                baselines[name] = _torch_cuda_step(torch, model, nchw.contiguous(memory_format=fmt), ty)
        return ours, baselines

    return Case(f"train/cnn_adam_step/cnn32-64/batch{batch}/cuda", "train", "cuda", "samples/s", batch, setup)


def _torch_cuda_step(torch, model, x, y):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        torch.backends.cudnn.allow_tf32 = False
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()

    return step


# --- the Trainer's overhead ---------------------------------------------------------------------


def _hand_loop(model, x, y, batch, seed):
    """One epoch written by hand, doing what Trainer.fit does: shuffle, step, track loss and accuracy."""
    opt = optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    rng = np.random.default_rng(seed)

    def epoch():
        model.train()
        order = rng.permutation(len(x))
        loss_sum, correct = 0.0, 0
        for i in range(0, len(x), batch):
            idx = order[i:i + batch]
            xb, yb = x[idx], y[idx]
            opt.zero_grad()
            out = model(tensor(xb))
            loss = loss_fn(out, yb)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(idx)
            correct += int((out.data.argmax(1) == yb).sum())
        return loss_sum / len(x), correct / len(x)

    return epoch


def _trainer_case(kind: str, samples: int, batch: int) -> Case:
    from ...train import Trainer

    def setup():
        rng = np.random.default_rng(0)
        shape = {"digits_cnn": (8, 8, 1), "cifar_cnn": (32, 32, 3)}.get(kind, (28, 28, 1))
        x = rng.random((samples, *shape), dtype=np.float32)
        y = rng.integers(0, 10, samples)
        build_model = {"digits_cnn": models.digits_cnn, "cifar_cnn": models.cifar_cnn, "mnist_cnn": models.mnist_cnn,
                       "mlp": models.mlp}[kind]

        def build():
            manual_seed(0)
            return build_model()

        model = build()
        trainer = Trainer(model, "cross_entropy", optim.Adam(model.parameters(), lr=1e-3), device="cpu", seed=0)

        def fit():
            trainer.fit(x, y, epochs=1, batch_size=batch, verbose=0)

        return fit, {"hand_loop": _hand_loop(build(), x, y, batch, 0)}

    name = f"train/trainer_vs_hand_loop/{kind}/batch{batch}"
    return Case(name, "train", "cpu", "samples/s", samples, setup,
                note="one epoch of Trainer.fit vs the same loop by hand; speedup = hand time / Trainer time")


def cases():
    return [_case("mlp", 128), _case("mlp", 32), _case("cnn", 128), _cuda_case(128), _cuda_case(512),
            _trainer_case("digits_cnn", 512, 32), _trainer_case("mlp", 1024, 128),
            _trainer_case("mnist_cnn", 1024, 64), _trainer_case("cifar_cnn", 1024, 64)]
