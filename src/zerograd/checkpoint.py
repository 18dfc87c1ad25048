"""The import path `Checkpointer` and `ResumeFrom` had before the checkpoint callbacks moved to
`zerograd.callbacks` (kept so code written for it keeps working; the format is `checkpoint_format`)."""
from __future__ import annotations

from zerograd.callbacks.checkpointing import Checkpointer, ResumeFrom

__all__ = ["Checkpointer", "ResumeFrom"]
