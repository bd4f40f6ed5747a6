"""Reference strategies: what the policy is compared against, and how it moves."""

from lit_align.reference.adapter import AdapterDisabledReference
from lit_align.reference.base import ReferenceStrategy
from lit_align.reference.cached import CachedReference, DatasetColumnReference
from lit_align.reference.frozen import FrozenReference, NoReference
from lit_align.reference.moving import EMAReference, MovingReference, SyncReference
from lit_align.reference.multi import MRPOReference, MultiReference
from lit_align.reference.unconditional import UnconditionalReference

__all__ = [
    "AdapterDisabledReference",
    "CachedReference",
    "DatasetColumnReference",
    "EMAReference",
    "FrozenReference",
    "MRPOReference",
    "MovingReference",
    "MultiReference",
    "NoReference",
    "ReferenceStrategy",
    "SyncReference",
    "UnconditionalReference",
]
