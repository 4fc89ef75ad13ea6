"""How damp times and sizes a step: synchronised clocks, round-robin samples, per-round paired ratios
and peak memory. `damp bench` (:mod:`damp.speed`) and the benchmarks/ scripts all measure through it.

Every ratio is measured within one run on one device: the functions are timed in turn, round after
round, and a ratio is the median over rounds of the two times of one round (:func:`paired_ratios`).
Timings synchronise CUDA before reading the clock.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import threading
import time
from collections.abc import Callable

import torch


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); a no-op on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn: Callable[[], None], repeats: int, device: torch.device) -> float:
    """Median seconds of ``repeats`` calls of ``fn``, after one warm-up call, each timed between syncs."""
    fn()  # warm-up (allocations, kernel selection)
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _trim_heap() -> None:
    """Give freed heap memory back to the OS (glibc), so a step's resident peak is its own."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def retain_freed_heap() -> bool:
    """Keep freed heap memory in the process (glibc): allocations up to 32 MiB come from the heap, not
    a fresh ``mmap``, and freed memory is not trimmed, so a step stops faulting its pages in anew.

    Process-wide and irreversible; returns whether glibc accepted both settings (False elsewhere).
    """
    try:
        import ctypes
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's mallopt parameter numbers (malloc.h)
    # 32 MiB is the largest mmap threshold glibc accepts on 64-bit (half its heap size).
    return bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 1 << 30))


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_memory_mib(step: Callable[[], None], device: torch.device) -> float | None:
    """Peak memory of one call of ``step`` above the memory held before it, in MiB.

    CUDA: ``max_memory_allocated``. CPU: the resident set sampled every millisecond by a thread
    (Linux only; None elsewhere), after returning freed heap memory to the OS.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    if not os.path.exists("/proc/self/statm"):
        return None
    _trim_heap()
    before, peak, done = _resident_bytes(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _resident_bytes())
            time.sleep(0.001)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        step()
    finally:
        done.set()
        sampler.join()
    return max(peak[0] - before, 0) / 2**20


def time_steps(step: Callable[[], None], steps: int, device: torch.device) -> float:
    """Seconds per call over ``steps`` back-to-back calls: one sync at each end, so the host may run ahead."""
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return (time.perf_counter() - start) / steps


def round_robin_samples(steps: dict[str, Callable[[], None]], device: torch.device, *, warmup: int,
                        samples: int, steps_per_sample: int) -> dict[str, list[float]]:
    """Seconds per call of each step function, one sample per round, the functions timed in turn."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(samples):
        for name, step in steps.items():
            times[name].append(time_steps(step, steps_per_sample, device))
    return times


def paired_ratios(times: dict[str, list[float]], baseline: str) -> dict[str, float]:
    """The median over rounds of each function's time over the baseline's in the same round.

    A machine that speeds up or slows down between rounds moves both times of a round alike, so
    the per-round ratio cancels it where a ratio of medians would not.
    """
    return {name: statistics.median(t / b for t, b in zip(values, times[baseline]))
            for name, values in times.items() if name != baseline}
