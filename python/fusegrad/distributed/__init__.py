"""Data parallelism across processes and machines: process groups and collectives over MPI
(mpi4py, NumPy arrays) and NCCL (CuPy's bindings, CUDA arrays). Install with
`pip install "fusegrad[distributed]"` and launch with `mpirun -n N python script.py` (or srun).

    import fusegrad.distributed as dist
    dist.init()                      # reads the launcher's environment
    dist.all_reduce(grad, op="mean", out=grad)

nn.parallel.DistributedDataParallel, data.DistributedSampler and optim.ZeroRedundancyOptimizer are
built on these.
"""
from .collectives import all_gather, all_reduce, all_reduce_scalar, barrier, broadcast, broadcast_object
from .group import destroy, get_local_rank, get_rank, get_world_size, init, is_initialized, launcher_env
from .work import Work

__all__ = ["init", "destroy", "is_initialized", "get_rank", "get_world_size", "get_local_rank", "launcher_env",
           "barrier", "all_reduce", "broadcast", "all_gather", "broadcast_object", "all_reduce_scalar", "Work"]
