"""Data-parallel benchmark (issue 17): run under mpirun by bench/run_distributed.sh, or by hand:

    mpirun -n 2 python bench/distributed_bench.py --threads 1     # 2 ranks x 1 thread
    mpirun -n 1 python bench/distributed_bench.py --threads 2     # 1 rank  x 2 threads

MNIST CNN (models.mnist_cnn), global batch 256 split over the ranks, Adam, DistributedDataParallel
when more than one rank: samples/s (median over the timed steps) and, per step, the all-reduce time
that backward did not hide (DDP's wait at the end of backward, divided by the time the same buckets
take to all-reduce alone). With 2+ ranks also fusegrad.distributed.all_reduce on 100 MB against
mpi4py's Allreduce on the same buffers, interleaved. Rank 0 prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

import fusegrad
import fusegrad.distributed as dist
from fusegrad import models, nn, optim
from fusegrad.nn.parallel import DistributedDataParallel
from fusegrad.tensor import Tensor


def train_bench(args, rank, size):
    fusegrad.manual_seed(0)
    model = models.mnist_cnn()
    net = DistributedDataParallel(model, bucket_cap_mb=args.bucket_mb) if size > 1 else model
    opt = optim.Adam(model.parameters(), lr=1e-3)
    local = args.batch // size
    rng = np.random.default_rng(rank)
    x = rng.random((local, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, local)
    times, waits = [], []
    for step in range(args.warmup + args.steps):
        if size > 1:
            dist.barrier()
        t = time.perf_counter()
        opt.zero_grad()
        nn.functional.cross_entropy(net(Tensor(x)), y).backward()
        opt.step()
        dt = time.perf_counter() - t
        if step >= args.warmup:
            times.append(dt)
            if size > 1:
                waits.append(net.last_stats["wait_s"])
    result = {"ranks": size, "threads": args.threads, "global_batch": args.batch,
              "step_s_median": statistics.median(times), "step_s_min": min(times),
              "samples_per_s": args.batch / statistics.median(times)}
    if size > 1:
        # the same buckets all-reduced alone (nothing to overlap with)
        alone = []
        for _ in range(args.steps):
            dist.barrier()
            t = time.perf_counter()
            for bucket in net._buckets:
                dist.all_reduce(bucket.buffer, out=bucket.buffer)
            alone.append(time.perf_counter() - t)
        comm = statistics.median(alone)
        result.update(grad_bytes=int(sum(b.buffer.nbytes for b in net._buckets)), buckets=len(net._buckets),
                      allreduce_alone_s=comm, exposed_wait_s_median=statistics.median(waits),
                      not_overlapped_fraction_per_step=[round(min(w / comm, 1.0), 3) for w in waits],
                      not_overlapped_fraction_median=round(min(statistics.median(waits) / comm, 1.0), 3))
    return result


def allreduce_bench(args, rank, size):
    from mpi4py import MPI
    n = args.allreduce_mb * 2**20 // 4
    x = np.random.default_rng(rank).random(n, dtype=np.float32)
    out_fg, out_mpi = np.empty_like(x), np.empty_like(x)
    comm = MPI.COMM_WORLD
    fg, mp = [], []
    for r in range(args.allreduce_repeat + 1):
        for name, call, log in (("fg", lambda: dist.all_reduce(x, out=out_fg), fg),
                                ("mpi", lambda: comm.Allreduce(x, out_mpi), mp)):
            comm.Barrier()
            t = time.perf_counter()
            call()
            dt = time.perf_counter() - t
            if r:  # the first round warms up
                log.append(dt)
    assert np.array_equal(out_fg, out_mpi)
    mb = x.nbytes / 1e6
    return {"allreduce_MB": round(mb, 1), "fusegrad_s_min": min(fg), "fusegrad_s_median": statistics.median(fg),
            "mpi4py_s_min": min(mp), "mpi4py_s_median": statistics.median(mp),
            "fusegrad_GBps_median": mb / 1e3 / statistics.median(fg), "mpi4py_GBps_median": mb / 1e3 / statistics.median(mp),
            "ratio_median": statistics.median(mp) / statistics.median(fg), "ratio_min": min(mp) / min(fg)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--bucket-mb", type=float, default=0.125)
    ap.add_argument("--allreduce-mb", type=int, default=100)
    ap.add_argument("--allreduce-repeat", type=int, default=5)
    args = ap.parse_args()
    fusegrad.set_num_threads(args.threads)
    dist.init()
    rank, size = dist.get_rank(), dist.get_world_size()
    result = {"train": train_bench(args, rank, size)}
    if size > 1:
        result["allreduce"] = allreduce_bench(args, rank, size)
    if rank == 0:
        print(json.dumps(result))
    dist.destroy()


if __name__ == "__main__":
    main()
