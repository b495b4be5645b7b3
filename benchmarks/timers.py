"""Wall-clock accounting for `benchmarks/iteration.py`: wraps functions in place (the
benchmark's process only) and sums their time into buckets.

A bucket counts only the outermost call per thread, so a commit inside a `write_stage`
is not counted twice. Names imported elsewhere (`from a2tgpo.data.stage import
read_stage`) are replaced in every loaded module that holds the original.
"""

from __future__ import annotations

import functools
import sys
import threading
import time
from collections import defaultdict

import psutil


class Buckets:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.depth = threading.local()

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()

    def timed(self, bucket: str, function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            depth = getattr(self.depth, bucket, 0)
            setattr(self.depth, bucket, depth + 1)
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                setattr(self.depth, bucket, depth)
                if depth == 0:
                    self.seconds[bucket] += time.perf_counter() - start
                    self.calls[bucket] += 1

        wrapper.__wrapped_original__ = function
        return wrapper

    def patch_function(self, bucket: str, module, name: str) -> None:
        """Replace `module.name` and every other module's reference to the same object."""
        original = getattr(module, name)
        wrapped = self.timed(bucket, original)
        for loaded in list(sys.modules.values()):
            if getattr(loaded, name, None) is original:
                setattr(loaded, name, wrapped)

    def patch_method(self, bucket: str, cls, name: str) -> None:
        setattr(cls, name, self.timed(bucket, getattr(cls, name)))


def tree_rss_mib(pids: list[int]) -> float:
    """Resident memory of the processes and all their descendants, MiB."""
    total = 0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for process in [root, *root.children(recursive=True)]:
                total += process.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / 2**20
