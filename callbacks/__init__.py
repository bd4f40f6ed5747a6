"""Callbacks observe training and write artifacts; they never change gradients or reference weights."""

from callbacks.hf_export import HFExport
from callbacks.run_summary import RunSummary

__all__ = ["HFExport", "RunSummary"]
