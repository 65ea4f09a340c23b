"""What each rank runs in the distributed tests (launched by mpi_launch.run under mpirun).

python worker.py CASE OUTDIR [args]: CASE is one of the functions below; results go to
OUTDIR/CASE-rank<r>.npz for the test to compare with a one-process run.
"""
from __future__ import annotations

import sys

import numpy as np

import fusegrad.distributed as dist
from fusegrad import nn, optim
from fusegrad.data import DataLoader, DistributedSampler, TensorDataset
from fusegrad.nn.parallel import DistributedDataParallel
from fusegrad.tensor import Tensor

import dist_common as common  # beside this file


def ddp_train(out, rank, size):
    """k Adam steps of the MNIST-style CNN, each rank on its half of every batch."""
    model = common.make_model(seed=rank + 100)  # different on purpose: DDP broadcasts rank 0's
    ddp = DistributedDataParallel(model, bucket_cap_mb=0.05)  # several buckets
    opt = optim.AdamW(model.parameters(), lr=1e-3)
    x, y = common.batches()
    for step in range(common.STEPS):
        xb, yb = common.shard(x[step], y[step], rank, size)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(ddp(Tensor(xb)), yb)
        loss.backward()
        opt.step()
    return {name: p.numpy() for name, p in model.named_parameters()} | {"_buckets": len(ddp._buckets)}


def ddp_no_sync(out, rank, size):
    """Two micro-batches per step: the first under no_sync, the second synchronises the sum."""
    model = common.make_model(seed=rank + 100)
    ddp = DistributedDataParallel(model, bucket_cap_mb=0.05)
    opt = optim.SGD(model.parameters(), lr=0.05)
    x, y = common.batches()
    for step in range(common.STEPS):
        xb, yb = common.shard(x[step], y[step], rank, size)
        half = len(xb) // 2
        opt.zero_grad()
        with ddp.no_sync():
            nn.functional.cross_entropy(ddp(Tensor(xb[:half])), yb[:half]).backward()
        grads_local = {n: p.grad.numpy().copy() for n, p in model.named_parameters()}
        nn.functional.cross_entropy(ddp(Tensor(xb[half:])), yb[half:]).backward()
        opt.step()
    result = {name: p.numpy() for name, p in model.named_parameters()}
    result.update({"local/" + n: g for n, g in grads_local.items()})
    return result


def ddp_frozen_unused(out, rank, size):
    """A frozen layer is skipped; a layer used only on rank 0 needs find_unused_parameters."""
    model = common.make_model(seed=rank + 100)
    extra = nn.Linear(10, 10)
    model.extra = extra
    model[0].weight.requires_grad = False
    ddp = DistributedDataParallel(model, find_unused_parameters=True)
    x, y = common.batches()
    xb, yb = common.shard(x[0], y[0], rank, size)
    logits = ddp(Tensor(xb))
    if rank == 0:
        logits = extra(logits)
    nn.functional.cross_entropy(logits, yb).backward()
    frozen_grad = model[0].weight.grad
    return {"frozen_has_grad": np.array(frozen_grad is not None),
            "extra_grad": extra.weight.grad.numpy(), "n_params_in_buckets":
            np.array(sum(len(b.params) for b in ddp._buckets))}


def raise_on_rank1(out, rank, size):
    """Rank 1 raises before a collective that rank 0 waits in: all must exit, none hang."""
    x = np.ones(4, np.float32)
    if rank == 1:
        raise ValueError("rank 1 fails on purpose")
    dist.all_reduce(x)
    dist.barrier()
    return {}


def timeout_on_rank1(out, rank, size):
    """Rank 1 skips a collective but does not raise: rank 0's collective times out."""
    if rank == 0:
        dist.all_reduce(np.ones(4, np.float32))
    else:
        import time
        time.sleep(60)
    return {}


def sampler(out, rank, size):
    n = int(sys.argv[3])
    drop_last = sys.argv[4] == "1"
    s = DistributedSampler(range(n), shuffle=True, seed=3, drop_last=drop_last)
    epochs = []
    for epoch in range(2):
        s.set_epoch(epoch)
        epochs.append(np.array(list(s)))
    loader = DataLoader(TensorDataset(np.arange(n, dtype=np.float32)), batch_size=4, sampler=s)
    seen = np.concatenate(list(loader)) if len(loader) else np.zeros(0, np.float32)
    return {"epoch0": epochs[0], "epoch1": epochs[1], "loader": seen}


def collectives(out, rank, size):
    a = np.arange(6, dtype=np.float32).reshape(2, 3) * (rank + 1)
    result = {"sum": dist.all_reduce(a), "mean": dist.all_reduce(a, "mean"), "max": dist.all_reduce(a, "max"),
              "gather": dist.all_gather(a), "bcast": dist.broadcast(a.copy(), 1)}
    inplace = a.copy()
    dist.all_reduce(inplace, out=inplace)
    result["inplace"] = inplace
    result["async"] = dist.all_reduce(a, async_op=True).wait()
    result["strided"] = dist.all_reduce(np.asfortranarray(a))
    result["world"] = np.array([dist.get_world_size(), dist.get_rank()])
    return result


def zero(out, rank, size):
    model = common.make_model(seed=rank + 100)
    ddp = DistributedDataParallel(model)
    opt = optim.ZeroRedundancyOptimizer(model.parameters(), optim.AdamW, lr=1e-3, weight_decay=0.01)
    x, y = common.batches()
    for step in range(common.STEPS):
        xb, yb = common.shard(x[step], y[step], rank, size)
        opt.zero_grad()
        nn.functional.cross_entropy(ddp(Tensor(xb)), yb).backward()
        opt.step()
    state = opt.state_dict()  # gathered: every rank holds it whole
    result = {name: p.numpy() for name, p in model.named_parameters()}
    result["_local_state_elements"] = np.array(opt.local_state_elements())
    for i, s in state["state"].items():
        result[f"state/{i}/exp_avg"] = s["exp_avg"]
    return result


def main():
    case, out = sys.argv[1], sys.argv[2]
    dist.init(timeout=float(__import__("os").environ.get("WORKER_TIMEOUT", "120")))
    rank, size = dist.get_rank(), dist.get_world_size()
    result = globals()[case](out, rank, size)
    np.savez(f"{out}/{case}-rank{rank}.npz", **{k: np.asarray(v) for k, v in result.items()})
    dist.destroy()


if __name__ == "__main__":
    main()
