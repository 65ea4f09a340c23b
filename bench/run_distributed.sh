#!/usr/bin/env bash
# Runs bench/distributed_bench.py as 2 ranks x 1 thread and 1 rank x 2 threads and records both,
# with the machine, in bench/results/distributed-cpu-<date>.json. Needs ".[distributed]".
set -euo pipefail
cd "$(dirname "$0")/.."
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpirun="$(python -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/mpirun"
[ -x "$mpirun" ] || mpirun=mpirun
out="bench/results/distributed-cpu-$(date +%F).json"
two=$(OMP_NUM_THREADS=1 "$mpirun" -n 2 --oversubscribe --bind-to none python bench/distributed_bench.py --threads 1 "$@")
one=$(OMP_NUM_THREADS=2 "$mpirun" -n 1 --bind-to none python bench/distributed_bench.py --threads 2 "$@")
python - "$out" "$two" "$one" <<'PY'
import json, subprocess, sys
out, two, one = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
model = next((l.split(":", 1)[1].strip() for l in lscpu.splitlines() if l.startswith("Model name")), "?")
cpus = next((l.split(":", 1)[1].strip() for l in lscpu.splitlines() if l.startswith("CPU(s)")), "?")
record = {"machine": {"cpu_model": model, "cpus": cpus}, "two_ranks_one_thread": two, "one_rank_two_threads": one,
          "samples_per_s_ratio_2x1_over_1x2": two["train"]["samples_per_s"] / one["train"]["samples_per_s"]}
json.dump(record, open(out, "w"), indent=1)
print(json.dumps(record, indent=1))
PY
echo "recorded in $out"
