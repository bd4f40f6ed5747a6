"""Evaluation: a model (HF directory, checkpoint or in-memory) in, scores out.

This package never imports Lightning: it is usable without training at all. ``run_suite`` is the
single entry point used by ``cli.py evaluate`` and by the post-fit callback.
"""

from evals.base import EvalTask, run_suite

__all__ = ["EvalTask", "run_suite"]
