"""Reference strategies: what the policy is compared against, and how it moves."""

from lit_align.reference.base import FrozenReference, NoReference, ReferenceStrategy

__all__ = ["FrozenReference", "NoReference", "ReferenceStrategy"]
