"""Per-step wall clock, loss and peak memory of one run (one process per run)."""

from __future__ import annotations

import json
import resource
import sys
import time
from dataclasses import asdict, dataclass, field


def max_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class Result:
    """What a child process reports: per-step end times and losses, and memory."""

    step_ends: list[float] = field(default_factory=list)
    """perf_counter at the end of each optimizer step (after the device finished it)."""
    losses: list[float] = field(default_factory=list)
    """Loss of each step."""
    rss_start_mib: float = 0.0
    """Peak RSS before the model was loaded (imports only)."""
    rss_peak_mib: float = 0.0
    """Peak RSS at the end."""
    cuda_peak_mib: float | None = None
    """torch.cuda.max_memory_allocated since ``Clock.start`` (on a GPU)."""
    cuda_reserved_mib: float | None = None
    """torch.cuda.max_memory_reserved since ``Clock.start``: allocated plus the caching allocator's slack."""


class Clock:
    """Collects a Result; ``start`` right before the framework loads anything."""

    def __init__(self) -> None:
        import torch

        self.cuda = torch.cuda.is_available()
        """On a GPU: peak statistics are reset at start, and every step end waits for the device."""
        self.result_ = Result()

    def start(self) -> None:
        import torch

        self.result_.rss_start_mib = max_rss_mib()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def step(self, loss) -> None:
        """Called at each optimizer step's end; ``loss`` a float or a (device) tensor.

        CUDA kernels run asynchronously: without a synchronize the clock would read when the step's
        work was queued, not when it was done.
        """
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        self.result_.step_ends.append(time.perf_counter())
        self.result_.losses.append(float(loss))

    def result(self) -> Result:
        import torch

        self.result_.rss_peak_mib = max_rss_mib()
        if self.cuda:
            self.result_.cuda_peak_mib = torch.cuda.max_memory_allocated() / 2**20
            self.result_.cuda_reserved_mib = torch.cuda.max_memory_reserved() / 2**20
        return self.result_


def emit(result: Result) -> None:
    """The child's last stdout line: the result as JSON (the parent reads only that line)."""
    sys.stdout.write("\nRESULT " + json.dumps(asdict(result)) + "\n")
    sys.stdout.flush()
