"""Data parallelism on 2 ranks under mpirun, checked against one process on the whole batch.

Each test launches tests/distributed/worker.py with `mpirun -n 2` (mpi_launch.run), which saves
each rank's results; the test computes the one-process reference here and compares. Skipped only
when mpi4py (the `distributed` extra) is not installed.
"""
from __future__ import annotations

import numpy as np
import pytest

from fusegrad import nn, optim
from fusegrad.tensor import Tensor

import dist_common as common
from mpi_launch import check, needs_mpi, run

pytestmark = needs_mpi

# float32 gradients summed in a different order (two halves, then the all-reduce) than on the whole
# batch; Adam's first steps turn a relative gradient difference e into about lr * e.
RTOL, ATOL = 1e-4, 2e-6


def ranks(tmp_path, case, n=2):
    return [dict(np.load(tmp_path / f"{case}-rank{r}.npz")) for r in range(n)]


def reference(opt_class, **kw):
    model = common.make_model(seed=100)  # rank 0's initial weights, which DDP broadcasts
    opt = opt_class(model.parameters(), **kw)
    x, y = common.batches()
    for step in range(common.STEPS):
        opt.zero_grad()
        nn.functional.cross_entropy(model(Tensor(x[step])), y[step]).backward()
        opt.step()
    return {name: p.numpy() for name, p in model.named_parameters()}


def test_collectives(tmp_path):
    check(run(["collectives", tmp_path]))
    r0, r1 = ranks(tmp_path, "collectives")
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    for r in (r0, r1):
        np.testing.assert_array_equal(r["sum"], 3 * a)
        np.testing.assert_array_equal(r["mean"], 1.5 * a)
        np.testing.assert_array_equal(r["max"], 2 * a)
        np.testing.assert_array_equal(r["gather"], np.stack([a, 2 * a]))
        np.testing.assert_array_equal(r["bcast"], 2 * a)
        np.testing.assert_array_equal(r["inplace"], 3 * a)
        np.testing.assert_array_equal(r["async"], 3 * a)
        np.testing.assert_array_equal(r["strided"], 3 * a)
    assert r0["world"].tolist() == [2, 0] and r1["world"].tolist() == [2, 1]


def test_two_ranks_on_batch_halves_equal_one_process_on_the_whole_batch(tmp_path):
    check(run(["ddp_train", tmp_path]))
    r0, r1 = ranks(tmp_path, "ddp_train")
    assert int(r0["_buckets"]) > 1  # the overlapping path, several buckets, was taken
    want = reference(optim.AdamW, lr=1e-3)
    for name, value in want.items():
        np.testing.assert_array_equal(r0[name], r1[name], err_msg=f"ranks differ on {name}")
        np.testing.assert_allclose(r0[name], value, rtol=RTOL, atol=ATOL, err_msg=name)


def test_no_sync_accumulates_then_synchronises(tmp_path):
    check(run(["ddp_no_sync", tmp_path]))
    r0, r1 = ranks(tmp_path, "ddp_no_sync")
    # The sum of two micro-batch means per rank, averaged over ranks, is twice the mean over the
    # global batch's quarters: train the reference on the same accumulated gradient.
    model = common.make_model(seed=100)
    opt = optim.SGD(model.parameters(), lr=0.05)
    x, y = common.batches()
    local = None
    for step in range(common.STEPS):
        opt.zero_grad()
        quarters = np.split(np.arange(common.BATCH), 4)
        for q in quarters:
            nn.functional.cross_entropy(model(Tensor(x[step][q])), y[step][q]).backward()
            if q is quarters[0] and step == common.STEPS - 1:
                local = {n: p.grad.numpy().copy() for n, p in model.named_parameters()}
        for p in model.parameters():
            p.grad.data *= 0.5  # (sum over 4 quarters) / 2 ranks
        opt.step()
    for name, p in model.named_parameters():
        np.testing.assert_array_equal(r0[name], r1[name])
        np.testing.assert_allclose(r0[name], p.numpy(), rtol=RTOL, atol=ATOL, err_msg=name)
        # inside no_sync the gradient stayed rank 0's own (no all-reduce happened)
        np.testing.assert_allclose(r0["local/" + name], local[name], rtol=1e-5, atol=1e-7)


def test_frozen_parameters_skipped_and_unused_found(tmp_path):
    check(run(["ddp_frozen_unused", tmp_path]))
    r0, r1 = ranks(tmp_path, "ddp_frozen_unused")
    assert not r0["frozen_has_grad"] and not r1["frozen_has_grad"]
    total = sum(1 for _ in common.make_model().parameters()) + 2
    assert int(r0["n_params_in_buckets"]) == total - 1
    # used on rank 0 only: its gradient is rank 0's / 2 on both ranks
    np.testing.assert_array_equal(r0["extra_grad"], r1["extra_grad"])
    assert np.abs(r0["extra_grad"]).max() > 0


def test_a_rank_that_raises_ends_every_rank(tmp_path):
    proc = run(["raise_on_rank1", tmp_path], timeout=120)
    assert proc.returncode != 0
    assert "rank 1 fails on purpose" in proc.stderr + proc.stdout


def test_a_collective_that_others_never_join_times_out(tmp_path):
    proc = run(["timeout_on_rank1", tmp_path], timeout=120, env_extra={"WORKER_TIMEOUT": "3"})
    assert proc.returncode != 0
    assert "timed out after 3 s" in proc.stderr + proc.stdout


@pytest.mark.parametrize("n,drop_last", [(23, False), (23, True), (24, False)])
def test_sampler_partitions_the_data(tmp_path, n, drop_last):
    check(run(["sampler", tmp_path, n, int(drop_last)]))
    r0, r1 = ranks(tmp_path, "sampler")
    for epoch in ("epoch0", "epoch1"):
        both = np.concatenate([r0[epoch], r1[epoch]])
        assert len(r0[epoch]) == len(r1[epoch])
        if drop_last:
            assert len(both) == n - n % 2 and len(set(both.tolist())) == len(both)
        else:
            assert set(both.tolist()) == set(range(n)) and len(both) == n + (n % 2)
    assert not np.array_equal(r0["epoch0"], r0["epoch1"])  # set_epoch reshuffles
    # a DataLoader at its epoch 0 sets the sampler to epoch 0
    np.testing.assert_array_equal(r0["loader"], r0["epoch0"].astype(np.float32)[:len(r0["loader"])])


def test_cli_trains_on_two_processes_and_only_rank_0_reports(tmp_path):
    report, ckpt = tmp_path / "r.json", tmp_path / "ck.safetensors"
    proc = check(run(["train", "--distributed", "--epochs", "1", "--batch-size", "64", "--verbose", "2",
                      "--json", report, "--save", ckpt], module="fusegrad", timeout=300))
    assert proc.stdout.count("fusegrad train:") == 1 and "2 processes" in proc.stdout
    assert proc.stdout.count("Epoch 1/1") == 1
    import json
    result = json.loads(report.read_text())
    assert result["processes"] == 2 and result["epochs"] == 1 and result["test_accuracy"] > 0.2
    assert ckpt.exists()


def test_zero1_equals_plain_adamw_and_shards_its_state(tmp_path):
    check(run(["zero", tmp_path]))
    r0, r1 = ranks(tmp_path, "zero")
    model = common.make_model(seed=100)
    opt = optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    x, y = common.batches()
    for step in range(common.STEPS):
        opt.zero_grad()
        nn.functional.cross_entropy(model(Tensor(x[step])), y[step]).backward()
        opt.step()
    for name, p in model.named_parameters():
        np.testing.assert_array_equal(r0[name], r1[name])
        np.testing.assert_allclose(r0[name], p.numpy(), rtol=RTOL, atol=ATOL, err_msg=name)
    total = sum(p.data.size for p in model.parameters())
    assert int(r0["_local_state_elements"]) == 2 * (-(-total // 2))  # two moments of half the elements
    plain = opt.state_dict()["state"]
    for i, s in plain.items():
        np.testing.assert_allclose(r0[f"state/{i}/exp_avg"], s["exp_avg"], rtol=1e-4, atol=1e-7)
    # the gathered state resumes on another world size (here: one process)
    one = optim.ZeroRedundancyOptimizer(model.parameters(), optim.AdamW, lr=1e-3)
    one.load_state_dict({"state": {i: {"step": common.STEPS, "exp_avg": r0[f"state/{i}/exp_avg"],
                                       "exp_avg_sq": plain[i]["exp_avg_sq"]} for i in plain},
                         "param_groups": opt.state_dict()["param_groups"]})
    back = one.state_dict()["state"]
    for i in plain:
        np.testing.assert_array_equal(back[i]["exp_avg"], r0[f"state/{i}/exp_avg"])
        assert back[i]["step"] == common.STEPS
