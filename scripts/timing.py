"""The one timer the benchmark scripts share: a call's seconds with the GPU's queue drained on both sides."""

from __future__ import annotations

import time

import torch


def timed(fn, device, clock: str = "wall") -> tuple[float, object]:
    """Seconds that `fn()` took on `device` (a torch.device or its name), and what it returned. clock "cpu" counts
    this process's CPU time (robust to other jobs on a shared CPU), "wall" the elapsed time; CUDA work is
    asynchronous, so the device is synchronized before starting and before stopping the clock."""
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    now = time.process_time if clock == "cpu" else time.perf_counter
    sync()
    start = now()
    found = fn()
    sync()
    return now() - start, found
