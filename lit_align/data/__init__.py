"""Preference data: sources, formats, tokenisation with length budgets, collation."""

from lit_align.data.datamodule import PreferenceDataModule
from lit_align.data.mixing import DataSource
from lit_align.data.sources import DataError

__all__ = ["DataError", "DataSource", "PreferenceDataModule"]
