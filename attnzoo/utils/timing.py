"""Timing for benchmarks: the median of timed calls after warm-up (CUDA events on a GPU)."""
import statistics
import time
from typing import Callable

import torch


def median_ms(fn: Callable[[], object], steps: int, warmup: int, device: torch.device) -> float:
    """Median milliseconds of ``steps`` calls of ``fn`` after ``warmup`` untimed calls. On CUDA each call is timed
    with events and synchronised; on the CPU with ``time.perf_counter``."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        if device.type == 'cuda':
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)
