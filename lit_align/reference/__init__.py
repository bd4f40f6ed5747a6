"""Reference strategies: what the policy is compared against, and how it moves."""

from lit_align.reference.base import ReferenceStrategy
from lit_align.reference.frozen import FrozenReference, NoReference
from lit_align.reference.moving import EMAReference, MovingReference, SyncReference

__all__ = ["EMAReference", "FrozenReference", "MovingReference", "NoReference", "ReferenceStrategy", "SyncReference"]
