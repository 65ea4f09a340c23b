"""python -m fusegrad bench and info: machine limits that survive a busy machine, a missing GPU,
a closed pipe, and help that explains itself. No test here depends on how fast anything runs: the
limits are fake probes, and the timings of whole runs are fake Timings."""
import json
import os
import subprocess
import sys

import pytest

import fusegrad
import fusegrad.bench as bench
from fusegrad.__main__ import main
from fusegrad.bench.case import Case
from fusegrad.bench.limits import REPROBES, Limits
from fusegrad.bench.timer import Timing


class FakeProbe:
    """Returns the given values in turn (the last one forever) and counts its calls."""

    def __init__(self, *values):
        self.values, self.calls = list(values), 0

    def __call__(self):
        self.calls += 1
        return self.values[min(self.calls, len(self.values)) - 1]


def test_limits_take_the_best_of_several_probes():
    copy, fma = FakeProbe(9.0, 14.0, 11.0), FakeProbe(100.0, 90.0, 80.0)
    limits = Limits({"copy_GBps": copy, "fma_GFLOPs": fma}, probes_at_start=3)
    assert limits.values == {"copy_GBps": 14.0, "fma_GFLOPs": 100.0} and copy.calls == fma.calls == 3


def test_a_case_below_the_limit_does_not_reprobe():
    probe = FakeProbe(10.0)
    limits = Limits({"copy_GBps": probe}, probes_at_start=2)
    assert limits.fraction("copy_GBps", 7.5) == (0.75, False)
    assert probe.calls == 2 and limits.reprobed == []


def test_a_case_faster_than_the_limit_reprobes_it():
    # Measured on a busy machine at start-up (10), quiet again later (40, 50).
    probe = FakeProbe(10.0, 10.0, 40.0, 50.0)
    limits = Limits({"copy_GBps": probe}, probes_at_start=2)
    assert limits.fraction("copy_GBps", 30.0) == (0.75, False)  # 30 / 40: one re-probe was enough
    assert probe.calls == 3 and limits.values["copy_GBps"] == 40.0
    assert limits.reprobed == [{"limit": "copy_GBps", "before": 10.0, "after": 40.0}]


def test_a_case_that_stays_faster_than_the_limit_is_capped():
    probe = FakeProbe(10.0)
    limits = Limits({"copy_GBps": probe}, probes_at_start=1)
    assert limits.fraction("copy_GBps", 25.0) == (1.0, True)
    assert probe.calls == 1 + REPROBES and limits.reprobed == []
    assert limits.fraction("copy_GBps", 25.0, reprobe=False) == (1.0, True) and probe.calls == 1 + REPROBES


def fake_case(name, work, limit="copy_GBps", unit="GB/s", threads=None):
    return Case(name, "activation", "cpu", unit, work, setup=lambda: (lambda: None, {}), limit=limit,
                threads=threads)


@pytest.fixture
def fixed_timings(monkeypatch):
    """measure() answers 1 ms for every call: a case's throughput is then its work / 1 ms."""
    def measure(candidates, **kw):
        return {name: Timing(1e-3, 1e-3, 1) for name in candidates}

    monkeypatch.setattr(bench, "measure", measure)


def test_run_case_reprobes_and_recomputes(fixed_timings):
    probe = FakeProbe(1.0, 100.0)  # 1 GB/s at start-up, 100 GB/s once measured again
    limits = Limits({"copy_GBps": probe}, probes_at_start=1)
    r = bench.run_case(fake_case("fake/copy", work=50e6), limits)  # 50 MB in 1 ms: 50 GB/s
    assert r["fusegrad"]["throughput"] == 50.0
    assert r["fraction_of_limit"] == 0.5 and "fraction_capped" not in r and probe.calls == 2


def test_run_case_caps_what_stays_above_the_limit(fixed_timings):
    limits = Limits({"copy_GBps": FakeProbe(1.0)}, probes_at_start=1)
    r = bench.run_case(fake_case("fake/copy", work=50e6), limits)
    assert r["fraction_of_limit"] == 1.0 and r["fraction_capped"] is True
    assert bench.format_row(r).split("GB/s")[1].split()[0] == "100.0%*"


def test_one_thread_cases_are_held_to_one_cores_share(fixed_timings):
    limits = Limits({"fma_GFLOPs": FakeProbe(400.0)}, probes_at_start=1)
    case = fake_case("fake/fma", work=100e6, limit="fma_GFLOPs", unit="GFLOP/s", threads=1)  # 100 GFLOP/s
    assert bench.run_case(case, limits, threads_at_limit=2)["fraction_of_limit"] == 0.5  # of 200 per core


def test_run_reports_every_fraction_against_the_final_limits(fixed_timings, monkeypatch, tmp_path):
    cases = [fake_case("fake/slow", work=20e6), fake_case("fake/fast", work=60e6)]  # 20 and 60 GB/s
    monkeypatch.setattr(bench, "all_cases", lambda: cases)
    monkeypatch.setattr(bench, "cpu_probes", lambda: {"copy_GBps": FakeProbe(40.0, 40.0, 40.0, 80.0)})
    out = tmp_path / "table.txt"
    with open(out, "w") as f:
        report = bench.run("fake", str(tmp_path / "b.json"), "cpu", out=f)
    slow, fast = report["cases"]
    assert report["limits"]["copy_GBps"] == 80.0
    assert (slow["fraction_of_limit"], fast["fraction_of_limit"]) == (0.25, 0.75)  # both against 80
    assert report["limits_measured_again"] == [{"limit": "copy_GBps", "before": 40.0, "after": 80.0}]
    assert json.loads((tmp_path / "b.json").read_text())["cases"][0]["fraction_of_limit"] == 0.25
    table = out.read_text()
    assert "50.0%" in table  # the slow row as printed, against the start-up limit
    assert "copy_GBps measured again after this case: 40.00 -> 80.00" in table


@pytest.mark.skipif(fusegrad.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_bench_cuda_without_a_gpu_fails_and_says_so():
    r = subprocess.run([sys.executable, "-m", "fusegrad", "bench", "--device", "cuda"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and r.stdout == ""
    assert r.stderr.startswith("bench --device cuda: no usable GPU here")


def test_a_closed_pipe_ends_quietly():
    # The reader is gone before the first line, as with `bench --list | head -0`: every write fails.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        r = subprocess.run([sys.executable, "-m", "fusegrad", "bench", "--list"], stdout=write_end,
                           stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert (r.returncode, r.stderr) == (141, "")


@pytest.mark.parametrize("command, fragments", [
    ("info", ["Show this installation"]),
    ("bench", ["Time every kernel", "(default: all;", "default: all cases", "5 to 30"]),
    ("train", ["Train a model", "(default: cnn)", "(default: 32)", "(default: 0.002)", "exits with status 130"]),
])
def test_help_describes_the_command_and_its_defaults(command, fragments, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines at the terminal width
    for fragment in fragments:
        assert fragment in text
