"""The NCCL backend on a real GPU, as a world of one process (no launcher): collectives on CuPy
arrays, and a DistributedDataParallel step on a model on the GPU equal to the plain step. Runs in a
subprocess so that init()/destroy() leave the test process alone. Marked cuda: only where a GPU is."""
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("mpi4py")

SCRIPT = textwrap.dedent("""
    import numpy as np, cupy as cp
    import fusegrad as fg
    from fusegrad import distributed as dist, models, nn, optim

    dist.init(backend="nccl", timeout=60)
    assert dist.get_world_size() == 1 and dist.get_rank() == 0
    x = cp.arange(1000, dtype=cp.float32)
    assert cp.array_equal(dist.all_reduce(x, "sum"), x)
    assert cp.array_equal(dist.all_reduce(x, "mean"), x)
    assert cp.array_equal(dist.all_reduce(x, "max", async_op=True).wait(), x)
    y = x.copy(); dist.broadcast(y, 0); assert cp.array_equal(y, x)

    rng = np.random.default_rng(0)
    xb, yb = rng.random((16, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, 16)
    def step(wrap):
        fg.manual_seed(0)
        model = models.mnist_cnn().to("cuda")
        net = nn.parallel.DistributedDataParallel(model, bucket_cap_mb=0.1) if wrap else model
        opt = optim.Adam(model.parameters(), 1e-3)
        for _ in range(2):
            opt.zero_grad()
            nn.functional.cross_entropy(net(cp.asarray(xb)), cp.asarray(yb)).backward()
            opt.step()
        return [p.numpy() for p in model.parameters()]
    for a, b in zip(step(True), step(False)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    dist.destroy()
    print("nccl ok")
""")


@pytest.mark.cuda
def test_nccl_world_of_one_collectives_and_ddp_step():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0 and "nccl ok" in proc.stdout, proc.stdout + proc.stderr
