"""Callbacks observe training and write artifacts; they never change gradients or reference weights."""

from callbacks.hf_export import HFExport
from callbacks.progress import StepProgressBar
from callbacks.run_summary import RunSummary
from callbacks.training_monitor import TrainingMonitor

__all__ = ["HFExport", "RunSummary", "StepProgressBar", "TrainingMonitor"]
