"""Training on the GPU: a whole step on CUDA arrays (forward, backward, optimizer) with no copy to
the host inside it, and equal to the CPU step. Runs on the emulated GPU on every run
(cuda_emulated), and on a real one where present (cuda)."""
import numpy as np
import pytest

import fusegrad as fg
from fusegrad import _emulated, models, nn, optim
from fusegrad.train import ProgressBar, Trainer


def _batch(n=8):
    rng = np.random.default_rng(0)
    return rng.random((n, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, n)


def _step(model, opt, x, y, device):
    opt.zero_grad()
    loss = nn.CrossEntropyLoss()(model(fg.tensor(x, device=device)), fg.tensor(y, device=device))
    loss.backward()
    opt.step()
    return loss


def _cpu_and_gpu_models():
    fg.manual_seed(0)
    cpu = models.mnist_cnn()
    fg.manual_seed(0)
    gpu = models.mnist_cnn().to("cuda")
    return cpu, gpu


def _assert_same_parameters(cpu, gpu):
    for (name, a), (_, b) in zip(cpu.named_parameters(), gpu.named_parameters()):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=2e-4, atol=2e-5, err_msg=name)


@pytest.mark.cuda_emulated
def test_mnist_cnn_step_on_the_emulated_gpu_equals_the_cpu_step(monkeypatch):
    # (The CPU step runs outside emulate(), where NumPy arrays take the CPU kernels.)
    x, y = _batch()
    fg.manual_seed(0)
    cpu = models.mnist_cnn()
    cpu_opt = optim.Adam(cpu.parameters(), 1e-3)
    for _ in range(2):
        cpu_loss = _step(cpu, cpu_opt, x, y, "cpu")
    with fg.cuda.emulate() as emu:
        fg.manual_seed(0)
        gpu = models.mnist_cnn().to("cuda")
        gpu_opt = optim.Adam(gpu.parameters(), 1e-3)
        copies = []
        monkeypatch.setattr(_emulated.DeviceArray, "get", lambda self: copies.append(self.shape) or
                            np.array(self.view(np.ndarray)))
        for _ in range(2):
            emu.clear()
            gpu_loss = _step(gpu, gpu_opt, x, y, "cuda")
            assert not copies, f"the step copied device arrays to the host: {copies}"
            assert any("multi_tensor_kernel" in k for k in emu.kernels())  # the fused Adam ran on the device
        monkeypatch.undo()
        assert gpu_loss.device == "cuda:0"
        np.testing.assert_allclose(gpu_loss.item(), cpu_loss.item(), rtol=1e-4)
    _assert_same_parameters(cpu, gpu)


def _fit(device):
    x, y = _batch(32)
    fg.manual_seed(0)
    model = models.mnist_cnn()
    trainer = Trainer(model, "cross_entropy", optim.Adam(model.parameters(), 1e-3), device=device, seed=0)
    history = trainer.fit(x, y, epochs=2, batch_size=16, verbose=0).history["loss"]
    return trainer, history


@pytest.mark.cuda_emulated
def test_trainer_fits_on_the_emulated_gpu_like_on_the_cpu():
    _, on_cpu = _fit("cpu")
    with fg.cuda.emulate():
        trainer, on_gpu = _fit("cuda")
    assert trainer.device == "cuda:0"
    np.testing.assert_allclose(on_gpu, on_cpu, rtol=1e-4)


@pytest.mark.cuda_emulated
def test_trainer_reads_the_loss_and_metrics_back_once_an_epoch(monkeypatch):
    """Without per-batch callbacks, the running loss and accuracy (training and validation) are
    added up on the device and read back at the epoch's end, so that no step waits for the GPU."""
    x, y = _batch(64)
    with fg.cuda.emulate():
        fg.manual_seed(0)
        model = models.mnist_cnn()
        trainer = Trainer(model, "cross_entropy", optim.Adam(model.parameters(), 1e-3), metrics=["accuracy"],
                          device="cuda", seed=0)
        reads = []
        monkeypatch.setattr(_emulated.DeviceArray, "get", lambda self: reads.append(self.shape) or
                            np.array(self.view(np.ndarray)))
        history = trainer.fit(x, y, epochs=2, batch_size=16, verbose=0).history  # 4 batches an epoch
        assert reads == [()] * 4, reads  # loss and accuracy, once an epoch
        reads.clear()
        trainer.fit(x, y, epochs=2, batch_size=16, validation_data=(x[:32], y[:32]), verbose=0)
        assert reads == [()] * 8, reads  # and the validation's, once an epoch too
        reads.clear()
        monkeypatch.setattr(ProgressBar, "refresh_s", 1e9)  # the bar: also after its first batch
        trainer.fit(x, y, epochs=2, batch_size=16, verbose=1)
        assert reads == [()] * 6, reads
        monkeypatch.undo()
    assert len(history["loss"]) == 2 and all(0.0 <= a <= 1.0 for a in history["accuracy"])


@pytest.mark.cuda
def test_mnist_cnn_step_on_the_gpu_equals_the_cpu_step():
    x, y = _batch()
    cpu, gpu = _cpu_and_gpu_models()
    cpu_opt, gpu_opt = optim.Adam(cpu.parameters(), 1e-3), optim.Adam(gpu.parameters(), 1e-3)
    for _ in range(2):
        gpu_loss = _step(gpu, gpu_opt, x, y, "cuda")
        cpu_loss = _step(cpu, cpu_opt, x, y, "cpu")
    np.testing.assert_allclose(gpu_loss.item(), cpu_loss.item(), rtol=1e-4)
    _assert_same_parameters(cpu, gpu)
