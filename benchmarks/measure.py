"""Per-step wall clock, loss and peak resident memory of one run (one process per run)."""

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

    step_ends: list[float] = field(default_factory=list)  # perf_counter at the end of each optimizer step
    losses: list[float] = field(default_factory=list)  # loss of each step
    rss_start_mib: float = 0.0  # peak RSS before the model was loaded (imports only)
    rss_peak_mib: float = 0.0  # peak RSS at the end
    cuda_peak_mib: float | None = None  # torch.cuda.max_memory_allocated when on a GPU


class Clock:
    """Collects a Result; ``start`` right before the framework loads anything."""

    def __init__(self) -> None:
        self.result_ = Result()

    def start(self) -> None:
        self.result_.rss_start_mib = max_rss_mib()

    def step(self, loss: float) -> None:
        self.result_.step_ends.append(time.perf_counter())
        self.result_.losses.append(loss)

    def result(self) -> Result:
        import torch

        self.result_.rss_peak_mib = max_rss_mib()
        if torch.cuda.is_available():
            self.result_.cuda_peak_mib = torch.cuda.max_memory_allocated() / 2**20
        return self.result_


def emit(result: Result) -> None:
    """The child's last stdout line: the result as JSON (the parent reads only that line)."""
    sys.stdout.write("\nRESULT " + json.dumps(asdict(result)) + "\n")
    sys.stdout.flush()
