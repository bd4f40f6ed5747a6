"""lit-align: preference optimisation of causal language models on PyTorch Lightning.

Importing the package is cheap: heavy pieces (Lightning, transformers) load with the submodules
that need them, e.g. ``from lit_align.module import PreferenceModule``.
"""

__version__ = "0.1.0"
