"""The benchmarks' stopwatch: wall and process-CPU seconds of a block."""

from __future__ import annotations

import time


class Timer:
    """Wall and process-CPU seconds of a block."""

    def __enter__(self) -> "Timer":
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu
